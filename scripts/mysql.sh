#!/usr/bin/env bash
# mysql.sh - binlogd's test/dev helper: run a real Oracle MySQL (Debian sid's mysql-server-core, 9.7.x today)
# on a Debian 12 (bookworm) host WITHOUT touching the system.
#
# How: a private apt state (own sources.list/lists/cache, empty dpkg status) that points at
# suite "sid" of the same Debian archive the host already uses (read at run time from
# /etc/apt/sources.list.d); `apt-get download` of mysql-server-core + mysql-client-core and
# their whole shared-library closure (libc6, libstdc++6, libicu, protobuf, openssl, ...);
# `dpkg-deb -x` of every .deb into one private root DIR; the programs are then started
# through sid's own dynamic loader:
#     DIR/usr/lib64/ld-linux-x86-64.so.2 --library-path DIR/usr/lib/x86_64-linux-gnu PROG ...
# so they never see the host's older glibc/libstdc++.  Nothing is installed into the system.
#
# Usage:
#   mysql.sh install DIR                        download + extract into DIR (idempotent)
#   mysql.sh start   DIR DATADIR PORT [-- MYSQLD_OPTS...]
#                     initialise DATADIR (--initialize-insecure) if empty, start mysqld on
#                     127.0.0.1:PORT, socket DATADIR/mysqld.sock, wait until it answers,
#                     create users root@127.0.0.1/::1 (no password) and cdc/cdc.
#   mysql.sh stop    DATADIR                    clean shutdown (SIGTERM to the pid in
#                                                    DATADIR/mysqld.pid), waits for exit
#   mysql.sh exec    DIR PROG [ARGS...]         run DIR/usr/{bin,sbin}/PROG through the
#                                                    private loader (mysql, mysqlbinlog, ...)
#                     Pass --no-defaults (first) to clients: the host's /etc/mysql/my.cnf
#                     belongs to MariaDB.
#
# Environment (all optional):
#   MYSQL_SID_SUITE     suite to take packages from (default: sid)
#   MYSQL_SID_MIRROR    archive URI to use instead of the one found in /etc/apt/sources.list.d
#   MYSQL_SID_PACKAGES  top-level packages (default: "mysql-server-core mysql-client-core")
#   MYSQL_SID_DEBS      directory of previously downloaded .debs (e.g. a saved copy of
#                       DIR/.mysql-sid/debs): install from them, no network (CI cache/offline)
#   MYSQL_START_TIMEOUT seconds to wait for the server to answer (default 120)
#   MYSQL_STOP_TIMEOUT  seconds to wait for a clean shutdown (default 180)
set -euo pipefail

PROG_NAME=$(basename "$0")
MULTIARCH=x86_64-linux-gnu

die() { echo "$PROG_NAME: error: $*" >&2; exit 1; }
log() { echo "$PROG_NAME: $*" >&2; }

abspath() { realpath -m -- "$1"; }

# ---------------------------------------------------------------------------------------------
# apt archive discovery (never hard-codes a host name)
# ---------------------------------------------------------------------------------------------
host_codename() {
    local c=""
    # shellcheck disable=SC1091
    [ -r /etc/os-release ] && c=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    echo "${c:-bookworm}"
}

# Prints "URI<TAB>KEYRING" of the first enabled 'deb' source for the host's main suite.
find_archive() {
    local codename; codename=$(host_codename)
    local f
    shopt -s nullglob
    # deb822 *.sources files
    for f in /etc/apt/sources.list.d/*.sources; do
        awk -v want="$codename" '
            function flush() {
                if (uris != "" && types ~ /(^| )deb( |$)/ && enabled !~ /^[Nn]o/ &&
                    (" " suites " ") ~ (" " want " ")) {
                    split(uris, u, " "); print u[1] "\t" signed; found = 1; exit
                }
                uris = ""; suites = ""; types = ""; signed = ""; enabled = ""
            }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            {
                key = $1; sub(/:$/, "", key); val = $0; sub(/^[^:]*:[ \t]*/, "", val)
                k = tolower(key)
                if (k == "uris") uris = val
                else if (k == "suites") suites = val
                else if (k == "types") types = val
                else if (k == "signed-by") signed = val
                else if (k == "enabled") enabled = val
            }
            END { if (!found) flush() }
        ' "$f" | head -n1 | grep . && return 0
    done
    # one-line *.list files (and the classic sources.list)
    for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list; do
        [ -r "$f" ] || continue
        awk -v want="$codename" '
            /^[ \t]*deb[ \t]/ {
                line = $0; signed = ""
                if (match(line, /\[[^]]*\]/)) {
                    opts = substr(line, RSTART + 1, RLENGTH - 2)
                    line = substr(line, 1, RSTART - 1) substr(line, RSTART + RLENGTH)
                    n = split(opts, o, " ")
                    for (i = 1; i <= n; i++) if (o[i] ~ /^signed-by=/) { signed = o[i]; sub(/^signed-by=/, "", signed) }
                }
                split(line, w, " ")
                if (w[3] == want) { print w[2] "\t" signed; exit }
            }' "$f" | head -n1 | grep . && return 0
    done
    return 1
}

# ---------------------------------------------------------------------------------------------
# private apt
# ---------------------------------------------------------------------------------------------
APT_OPTS=()
setup_apt_opts() {
    local S=$1
    # The host's apt.conf.d stays in force (proxy settings etc.), but its update/dpkg hooks
    # (cache cleaners, PackageKit/appstream refreshes of the *host* state) are switched off.
    printf '%s\n' '#clear APT::Update::Pre-Invoke;' '#clear APT::Update::Post-Invoke;' \
        '#clear APT::Update::Post-Invoke-Success;' '#clear DPkg::Pre-Invoke;' '#clear DPkg::Post-Invoke;' \
        > "$S/apt.conf"
    APT_OPTS=(
        -c "$S/apt.conf"
        -o "Dir::Etc::sourcelist=$S/sources.list"
        -o "Dir::Etc::sourceparts=-"
        -o "Dir::Etc::preferences=$S/preferences"
        -o "Dir::Etc::preferencesparts=$S/preferences.d"
        -o "Dir::State::Lists=$S/lists"
        -o "Dir::State::status=$S/dpkg-status"
        -o "Dir::State::extended_states=$S/extended_states"
        -o "Dir::Cache=$S/cache"
        -o "Dir::Cache::archives=$S/cache/archives"
        -o "Acquire::Languages=none"
        -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
        -o "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false"
        -o "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false"
        -o "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false"
        -o "APT::Sandbox::User=root"
        -q
    )
}

loader_of() {
    local DIR=$1 c
    for c in "$DIR/usr/lib64/ld-linux-x86-64.so.2" "$DIR/lib64/ld-linux-x86-64.so.2" \
             "$DIR/usr/lib/$MULTIARCH/ld-linux-x86-64.so.2" "$DIR/lib/$MULTIARCH/ld-linux-x86-64.so.2"; do
        [ -e "$c" ] && { echo "$c"; return 0; }
    done
    return 1
}

libpath_of() {
    local DIR=$1
    echo "$DIR/usr/lib/$MULTIARCH:$DIR/lib/$MULTIARCH"
}

# run_in DIR PROGPATH ARGS... : run a program of the private root with a clean environment
run_in() {
    local DIR=$1; shift
    local ld; ld=$(loader_of "$DIR") || die "no dynamic loader in $DIR (run: $PROG_NAME install $DIR)"
    # LIBMYSQL_PLUGIN_DIR: client-side auth plugins (e.g. mysql_native_password.so, needed to
    # log in to MariaDB) are loadable .so files in 9.x; the compiled-in dir is the host's.
    local envv=(PATH=/usr/bin:/bin LC_ALL=C "GCONV_PATH=$DIR/usr/lib/$MULTIARCH/gconv"
                "LIBMYSQL_PLUGIN_DIR=$DIR/usr/lib/mysql/plugin")
    [ -n "${TZ:-}" ] && envv+=("TZ=$TZ")
    [ -n "${HOME:-}" ] && envv+=("HOME=$HOME")
    env -i "${envv[@]}" "$ld" --library-path "$(libpath_of "$DIR")" "$@"
}

is_installed() {
    local DIR=$1
    [ -f "$DIR/.mysql-sid/installed" ] && [ -x "$DIR/usr/sbin/mysqld" ] && loader_of "$DIR" >/dev/null
}

cmd_install() {
    [ $# -eq 1 ] || die "usage: $PROG_NAME install DIR"
    local DIR; DIR=$(abspath "$1")
    local t0; t0=$(date +%s.%N)
    if is_installed "$DIR"; then
        log "already installed in $DIR: $(run_in "$DIR" "$DIR/usr/sbin/mysqld" --no-defaults --version 2>&1 | sed 's/^.*Ver /Ver /')"
        log "install took $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')s (nothing to do)"
        return 0
    fi
    command -v apt-get >/dev/null || die "apt-get not found"
    command -v dpkg-deb >/dev/null || die "dpkg-deb not found"

    local suite=${MYSQL_SID_SUITE:-sid}
    local pkgs=${MYSQL_SID_PACKAGES:-"mysql-server-core mysql-client-core"}
    local S="$DIR/.mysql-sid" uri fetched
    mkdir -p "$DIR"

    if [ -n "${MYSQL_SID_DEBS:-}" ]; then
        # offline / cached: extract a saved set of .debs (e.g. a copy of an earlier DIR/.mysql-sid/debs)
        local src; src=$(abspath "$MYSQL_SID_DEBS")
        compgen -G "$src/*.deb" >/dev/null || die "MYSQL_SID_DEBS=$src holds no .deb files"
        if [ "$src" != "$(abspath "$S/debs")" ]; then
            rm -rf "$S/debs"; mkdir -p "$S/debs"; cp -- "$src"/*.deb "$S/debs/"
        fi
        (cd "$S/debs" && ls -- *.deb) | sed 's/_.*//' > "$S/closure.txt"
        suite="(local .debs)"; uri=$src; fetched="nothing (MYSQL_SID_DEBS)"
        log "[1-3/4] using $(wc -l < "$S/closure.txt") local .debs from $src"
    else
        local keyring found
        if [ -n "${MYSQL_SID_MIRROR:-}" ]; then
            uri=$MYSQL_SID_MIRROR; keyring=""
        else
            found=$(find_archive) || die "could not find a deb source for $(host_codename) in /etc/apt/sources.list.d (set MYSQL_SID_MIRROR)"
            uri=${found%%$'\t'*}; keyring=${found#*$'\t'}
        fi
        [ -z "$keyring" ] && [ -r /usr/share/keyrings/debian-archive-keyring.gpg ] && keyring=/usr/share/keyrings/debian-archive-keyring.gpg

        rm -rf "$S/debs" "$S/lists" "$S/cache"
        mkdir -p "$S/lists/partial" "$S/cache/archives/partial" "$S/preferences.d" "$S/debs"
        : > "$S/dpkg-status"; : > "$S/preferences"
        if [ -n "$keyring" ]; then
            echo "deb [signed-by=$keyring] $uri $suite main" > "$S/sources.list"
        else
            echo "deb $uri $suite main" > "$S/sources.list"
        fi
        setup_apt_opts "$S"

        log "[1/4] apt-get update (private state in $S, suite $suite)"
        apt-get "${APT_OPTS[@]}" update >"$S/apt-update.log" 2>&1 || { cat "$S/apt-update.log" >&2; die "apt-get update failed"; }

        log "[2/4] resolving dependency closure of: $pkgs"
        # Every package reachable through Depends/Pre-Depends, minus the perl interpreter stack
        # (only needed by helper scripts such as mysqldumpslow/mysqld_multi, never by mysqld).
        # shellcheck disable=SC2086
        apt-cache "${APT_OPTS[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts \
            --no-breaks --no-replaces --no-enhances $pkgs 2>/dev/null \
            | grep -v '^[ <]' | sed 's/:amd64$//' | sort -u \
            | grep -vxE 'perl|perl-base|perl-modules-[0-9.]+|libperl[0-9.]+' > "$S/closure.txt" || true
        [ -s "$S/closure.txt" ] || die "empty dependency closure (is '$pkgs' in $suite?)"
        for p in $pkgs; do grep -qx "$p" "$S/closure.txt" || die "package $p not found in $suite"; done

        log "[3/4] downloading $(wc -l < "$S/closure.txt") packages"
        # shellcheck disable=SC2046
        (cd "$S/debs" && apt-get "${APT_OPTS[@]}" download $(cat "$S/closure.txt")) >"$S/apt-download.log" 2>&1 \
            || { cat "$S/apt-download.log" >&2; die "apt-get download failed"; }
        fetched="index $(sed -n 's/^Fetched \([^ ]* [kMG]*B\).*/\1/p' "$S/apt-update.log" | tail -n1), packages $(sed -n 's/^Fetched \([^ ]* [kMG]*B\).*/\1/p' "$S/apt-download.log" | tail -n1)"
    fi
    local deb_bytes; deb_bytes=$(du -cb "$S"/debs/*.deb | tail -n1 | cut -f1)

    log "[4/4] extracting into $DIR"
    local d
    for d in "$S"/debs/*.deb; do dpkg-deb -x "$d" "$DIR"; done

    # sanity: the loader must resolve every ELF we care about from the private root alone
    local ld lp missing=""
    ld=$(loader_of "$DIR") || die "no ld-linux-x86-64.so.2 after extraction"
    lp=$(libpath_of "$DIR")
    for f in "$DIR"/usr/sbin/mysqld "$DIR"/usr/bin/mysql "$DIR"/usr/bin/mysqlbinlog "$DIR"/usr/bin/mysqladmin \
             "$DIR"/usr/lib/mysql/plugin/*.so; do
        [ -f "$f" ] || continue
        if env -i "$ld" --library-path "$lp" --list "$f" 2>&1 | grep -q 'not found'; then
            missing+="$f: $(env -i "$ld" --library-path "$lp" --list "$f" 2>&1 | grep 'not found' | tr '\n' ' ')"$'\n'
        fi
    done
    [ -z "$missing" ] || die "unresolved libraries:"$'\n'"$missing"
    local ver; ver=$(run_in "$DIR" "$DIR/usr/sbin/mysqld" --no-defaults --version 2>&1) || die "mysqld --version failed: $ver"

    { echo "suite=$suite"; echo "uri=$uri"; echo "date=$(date -u +%FT%TZ)"; echo "mysqld=$ver";
      (cd "$S/debs" && ls -- *.deb); } > "$S/installed"
    rm -rf "$S/cache" "$S/lists"   # apt caches; the .debs stay in $S/debs (CI cache candidates)
    local t1; t1=$(date +%s.%N)
    log "installed: $ver"
    log "fetched from the archive: $fetched; $(wc -l < "$S/closure.txt") .debs = $((deb_bytes / 1024 / 1024)) MiB ($deb_bytes bytes); extracted root: $(du -sm --exclude=.mysql-sid "$DIR" | cut -f1) MiB"
    log "install took $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')s"
}

# ---------------------------------------------------------------------------------------------
# server
# ---------------------------------------------------------------------------------------------
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pid_alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

running_pid() {   # prints the pid of the mysqld owning DATADIR, if alive
    local DATADIR=$1 pid
    [ -s "$DATADIR/mysqld.pid" ] || return 1
    pid=$(tr -dc '0-9' < "$DATADIR/mysqld.pid")
    pid_alive "$pid" || return 1
    tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q 'mysqld' || return 1
    echo "$pid"
}

mysql_root() {  # mysql_root DIR DATADIR ARGS... (root over the unix socket, no password)
    local DIR=$1 DATADIR=$2; shift 2
    run_in "$DIR" "$DIR/usr/bin/mysql" --no-defaults --user=root "--socket=$DATADIR/mysqld.sock" "$@"
}

write_cnf() {
    local DIR=$1 DATADIR=$2 PORT=$3
    local userline=""
    [ "$(id -u)" -eq 0 ] && userline="user=root"
    cat > "$DATADIR/my.cnf" <<EOF
# generated by $PROG_NAME - rewritten at every start
[mysqld]
$userline
basedir=$DIR/usr
datadir=$DATADIR
lc_messages_dir=$DIR/usr/share/mysql
character_sets_dir=$DIR/usr/share/mysql/charsets
plugin_dir=$DIR/usr/lib/mysql/plugin
socket=$DATADIR/mysqld.sock
pid_file=$DATADIR/mysqld.pid
log_error=$DATADIR/mysqld.err
port=$PORT
bind_address=127.0.0.1
mysqlx=OFF
skip_name_resolve=ON
secure_file_priv=
# --- CDC ---
server_id=1
log_bin=binlog
binlog_format=ROW
binlog_row_image=FULL
binlog_row_metadata=FULL
gtid_mode=ON
enforce_gtid_consistency=ON
# --- test speed ---
max_allowed_packet=256M
innodb_flush_log_at_trx_commit=2
sync_binlog=0
innodb_buffer_pool_size=128M
performance_schema=OFF
default_time_zone='+00:00'

[client]
socket=$DATADIR/mysqld.sock
port=$PORT
user=root
EOF
}

cmd_start() {
    [ $# -ge 3 ] || die "usage: $PROG_NAME start DIR DATADIR PORT [-- MYSQLD_OPTS...]"
    local DIR DATADIR PORT=$3
    DIR=$(abspath "$1"); DATADIR=$(abspath "$2"); shift 3
    [ "${1:-}" = "--" ] && shift
    local extra=("$@")
    [[ "$PORT" =~ ^[0-9]+$ ]] || die "bad port: $PORT"
    is_installed "$DIR" || die "MySQL not installed in $DIR (run: $PROG_NAME install $DIR)"
    [ ${#DATADIR} -le 90 ] || die "DATADIR path too long for a unix socket (<= 90 chars): $DATADIR"

    local pid
    if pid=$(running_pid "$DATADIR"); then
        log "already running (pid $pid) on $DATADIR"
    else
        port_in_use "$PORT" && die "port $PORT on 127.0.0.1 is already in use"
        local userarg=()
        [ "$(id -u)" -eq 0 ] && userarg=(--user=root)
        if [ ! -e "$DATADIR/mysql.ibd" ]; then
            if [ -d "$DATADIR" ] && [ -n "$(ls -A "$DATADIR")" ]; then
                die "$DATADIR is neither empty nor a MySQL data directory"
            fi
            mkdir -p "$DATADIR"; chmod 750 "$DATADIR"
            log "initialising $DATADIR (--initialize-insecure)"
            local t0=$SECONDS
            # binlog off while bootstrapping, so the first binlog (binlog.000001) starts clean
            run_in "$DIR" "$DIR/usr/sbin/mysqld" --no-defaults "${userarg[@]}" --initialize-insecure \
                "--basedir=$DIR/usr" "--datadir=$DATADIR" "--lc-messages-dir=$DIR/usr/share/mysql" \
                "--character-sets-dir=$DIR/usr/share/mysql/charsets" "--plugin-dir=$DIR/usr/lib/mysql/plugin" \
                "--log-error=$DATADIR/mysqld-init.err" --skip-log-bin --server-id=1 \
                --gtid-mode=ON --enforce-gtid-consistency=ON --secure-file-priv= </dev/null \
                || { tail -n 30 "$DATADIR/mysqld-init.err" >&2; die "mysqld --initialize-insecure failed"; }
            log "initialised in $((SECONDS - t0))s"
        fi
        write_cnf "$DIR" "$DATADIR" "$PORT"
        log "starting mysqld on 127.0.0.1:$PORT (datadir $DATADIR)"
        setsid env -i PATH=/usr/bin:/bin LC_ALL=C "GCONV_PATH=$DIR/usr/lib/$MULTIARCH/gconv" ${TZ:+"TZ=$TZ"} \
            "$(loader_of "$DIR")" --library-path "$(libpath_of "$DIR")" "$DIR/usr/sbin/mysqld" \
            "--defaults-file=$DATADIR/my.cnf" "${extra[@]}" \
            </dev/null >>"$DATADIR/mysqld.stdout" 2>&1 &
        local bgpid=$!
        local deadline=$((SECONDS + ${MYSQL_START_TIMEOUT:-120}))
        until mysql_root "$DIR" "$DATADIR" -N -e 'SELECT 1' >/dev/null 2>&1; do
            if ! pid_alive "$bgpid" && ! running_pid "$DATADIR" >/dev/null; then
                tail -n 40 "$DATADIR/mysqld.err" "$DATADIR/mysqld.stdout" >&2 2>/dev/null || true
                die "mysqld exited during startup (see $DATADIR/mysqld.err)"
            fi
            [ $SECONDS -lt $deadline ] || die "mysqld did not answer within ${MYSQL_START_TIMEOUT:-120}s (see $DATADIR/mysqld.err)"
            sleep 0.3
        done
    fi
    # accounts: idempotent, kept out of the binlog
    mysql_root "$DIR" "$DATADIR" <<'SQL'
SET sql_log_bin = 0;
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
CREATE USER IF NOT EXISTS 'root'@'::1' IDENTIFIED BY '';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'::1' WITH GRANT OPTION;
CREATE USER IF NOT EXISTS 'cdc'@'%' IDENTIFIED BY 'cdc';
GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO 'cdc'@'%';
-- binlogd's checkpoint table (default: schema binlogd on the source server)
GRANT CREATE, SELECT, INSERT, UPDATE, DELETE ON binlogd.* TO 'cdc'@'%';
SQL
    pid=$(running_pid "$DATADIR") || die "mysqld is not running"
    log "ready: pid $pid, $(mysql_root "$DIR" "$DATADIR" -N -e 'SELECT CONCAT("version ", VERSION(), ", port ", @@port, ", server_uuid ", @@server_uuid)')"
    log "socket $DATADIR/mysqld.sock; binlog: $(mysql_root "$DIR" "$DATADIR" -N -e 'SHOW BINARY LOG STATUS' | tr '\t' ' ')"
}

cmd_stop() {
    [ $# -eq 1 ] || die "usage: $PROG_NAME stop DATADIR"
    local DATADIR; DATADIR=$(abspath "$1")
    local pid
    if ! pid=$(running_pid "$DATADIR"); then
        log "not running ($DATADIR)"
        return 0
    fi
    log "stopping mysqld pid $pid (SIGTERM)"
    kill -TERM "$pid"
    local deadline=$((SECONDS + ${MYSQL_STOP_TIMEOUT:-180}))
    while pid_alive "$pid"; do
        [ $SECONDS -lt $deadline ] || die "mysqld pid $pid still running after ${MYSQL_STOP_TIMEOUT:-180}s"
        sleep 0.2
    done
    log "stopped"
}

cmd_exec() {
    [ $# -ge 2 ] || die "usage: $PROG_NAME exec DIR PROG [ARGS...]"
    local DIR; DIR=$(abspath "$1"); local prog=$2; shift 2
    local p
    for p in "$DIR/usr/bin/$prog" "$DIR/usr/sbin/$prog"; do
        [ -x "$p" ] && { run_in "$DIR" "$p" "$@"; return $?; }
    done
    die "no program $prog in $DIR/usr/bin or $DIR/usr/sbin"
}

case "${1:-}" in
    install) shift; cmd_install "$@" ;;
    start)   shift; cmd_start "$@" ;;
    stop)    shift; cmd_stop "$@" ;;
    exec)    shift; cmd_exec "$@" ;;
    *) sed -n '/^# Usage:/,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
