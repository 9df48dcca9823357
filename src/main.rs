//! The `binlogd` binary: command line, logging, signals, exit codes. anyhow lives only here.

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use tokio::sync::watch;
use tracing::{error, info, warn};

use binlogd::binlog::position::BinlogCoord;
use binlogd::cmd;
use binlogd::config::{Config, LogFormat};

/// jemalloc for the whole process, librdkafka's C allocations included (the feature
/// `unprefixed_malloc_on_supported_platforms` makes it `malloc`): glibc's arena locks were the
/// Kafka sink's main cost, because messages are allocated on one thread and freed on another.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Two arenas (binlogd is busy on about two threads) and prompt return of freed pages keep the
/// resident set small; `MALLOC_CONF` in the environment still overrides this.
#[export_name = "malloc_conf"]
static MALLOC_CONF: ConfPtr = ConfPtr(c"narenas:2,dirty_decay_ms:500,muzzy_decay_ms:0".as_ptr());

/// A C `const char *` jemalloc reads at startup.
#[repr(transparent)]
struct ConfPtr(*const std::ffi::c_char);
// SAFETY: points at an immutable static byte string.
unsafe impl Sync for ConfPtr {}

const EXAMPLES: &str = "\
Examples:
  binlogd check -c config/binlogd.toml           config, connection, server settings, grants, sinks
  binlogd run -c config/binlogd.toml             stream until SIGTERM/SIGINT (SIGHUP reloads)
  binlogd position show -c config/binlogd.toml   the stored position and how far behind it is
  binlogd replay -c config/binlogd.toml --from-time 2026-01-02T03:04:05Z --sink cache

Every config key: config/binlogd.example.toml; BINLOGD__SECTION__KEY environment variables
override keys. Exit codes: 0 ok, 1 runtime failure, 2 bad configuration.
Try it on one machine (source tree): bash scripts/quickstart.sh";

#[derive(Parser)]
#[command(
    name = "binlogd",
    version,
    long_version = long_version(),
    about = "MySQL/MariaDB change-data-capture daemon",
    long_about = "MySQL/MariaDB change-data-capture daemon: reads the binlog as a replica and hands\n\
                  every row change to its sinks: Redis (deletes the cache keys the change made\n\
                  stale), Kafka (one message per row change) and JSON-lines files. The position\n\
                  is stored once every sink has acknowledged, so a restart resumes where it stopped.",
    after_help = EXAMPLES
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Stream row changes to the configured sinks until SIGTERM/SIGINT.
    #[command(
        long_about = "Stream row changes to the configured sinks until SIGTERM/SIGINT.\n\n\
        Starts at the stored position (else at source.start) and stores the position once every\n\
        sink has acknowledged. SIGTERM/SIGINT: drain the sinks, store the position, exit 0.\n\
        SIGHUP: re-read log.level and source.include/exclude from the config file."
    )]
    #[command(after_help = "Examples:\n  \
        binlogd run -c config/binlogd.toml\n  \
        RUST_LOG=binlogd=debug binlogd run -c config/binlogd.toml\n  \
        binlogd run -c config/binlogd.toml --stop-at binlog.000042:1234\n  \
        binlogd run -c config/binlogd.toml --accept-divergence   (after a failover, see README)")]
    Run {
        /// Config file (TOML; BINLOGD__SECTION__KEY environment variables override keys).
        #[arg(short, long, default_value = "config/binlogd.toml")]
        config: PathBuf,
        /// Exit (0) after handing on every transaction up to this FILE:POS (bounded runs,
        /// benchmarks).
        #[arg(long, value_name = "FILE:POS")]
        stop_at: Option<BinlogCoord>,
        /// Resume although the source server lacks transactions already handed to the sinks
        /// (a failover to a replica that was behind): stream its history after the last
        /// transaction both share. Logged loudly; the accepted position is stored at once.
        #[arg(long)]
        accept_divergence: bool,
    },
    /// Validate the config, connect, and check server settings and privileges.
    #[command(
        long_about = "Validate the config, connect, and check server settings and privileges.\n\n\
        Also checks the sinks (Redis key templates against the tables, Kafka brokers and topics)\n\
        and the stored position. Prints each problem with its fix. Exit code 0 when all is well,\n\
        2 when only the config is at fault, 1 otherwise."
    )]
    #[command(after_help = "Example:\n  binlogd check -c config/binlogd.toml")]
    Check {
        /// Config file (TOML; BINLOGD__SECTION__KEY environment variables override keys).
        #[arg(short, long, default_value = "config/binlogd.toml")]
        config: PathBuf,
    },
    /// Create or upgrade the checkpoint table (also done at every start).
    #[command(after_help = "Example:\n  binlogd migrate -c config/binlogd.toml")]
    Migrate {
        /// Config file (TOML; BINLOGD__SECTION__KEY environment variables override keys).
        #[arg(short, long, default_value = "config/binlogd.toml")]
        config: PathBuf,
    },
    /// Show or move the stored position (checkpoint).
    #[command(after_help = "Examples:\n  \
        binlogd position show -c config/binlogd.toml\n  \
        binlogd position set -c config/binlogd.toml --latest\n  \
        binlogd position reset -c config/binlogd.toml")]
    Position {
        #[command(subcommand)]
        cmd: PositionCmd,
    },
    /// Re-send a range of the binlog to chosen sinks without moving the stored position.
    #[command(
        long_about = "Re-send a range of the binlog to chosen sinks without moving the stored position.\n\n\
        From the server: give one start (--from, --from-gtid or --from-time); without an end it\n\
        stops at the server's position when the replay starts. It uses its own replica id, so a\n\
        running daemon is not disturbed. With --binlog-file it reads binlog files from disk."
    )]
    #[command(after_help = "Examples:\n  \
        binlogd replay -c config/binlogd.toml --from-time 2026-01-02T03:04:05Z --sink cache\n  \
        binlogd replay -c config/binlogd.toml --from binlog.000042:4 --to binlog.000042:98765\n  \
        binlogd replay -c config/binlogd.toml --binlog-file /archive/binlog.000041 /archive/binlog.000042")]
    Replay(ReplayArgs),
    /// Read the rows that already exist (while streaming): start, status, cancel.
    #[command(
        long_about = "Read the rows that already exist, in key-ordered chunks, while streaming.\n\n\
        Requests go through the checkpoint schema to whichever daemon holds the pipeline lock (HA)\n\
        and wait there across restarts. Read rows reach the sinks as op \"r\" events; the progress is\n\
        stored with the position, so a restart continues with the next chunk."
    )]
    #[command(after_help = "Examples:\n  \
        binlogd snapshot start -c config/binlogd.toml --table shop.orders --table shop.customers\n  \
        binlogd snapshot start -c config/binlogd.toml --table shop.orders --where \"created_at >= '2026-01-01'\"\n  \
        binlogd snapshot status -c config/binlogd.toml\n  \
        binlogd snapshot cancel -c config/binlogd.toml")]
    Snapshot {
        #[command(subcommand)]
        cmd: SnapshotCmd,
    },
}

#[derive(Subcommand)]
enum SnapshotCmd {
    /// Snapshot tables (again, from their first row) in the running daemon.
    Start {
        /// Config file (TOML; BINLOGD__SECTION__KEY environment variables override keys).
        #[arg(short, long, default_value = "config/binlogd.toml")]
        config: PathBuf,
        /// db.table to read (repeatable).
        #[arg(long = "table", value_name = "DB.TABLE", required = true)]
        tables: Vec<String>,
        /// Only rows matching this SQL condition.
        #[arg(long = "where", value_name = "SQL")]
        where_sql: Option<String>,
    },
    /// The stored progress of the snapshot and the latest requests.
    Status {
        /// Config file (TOML; BINLOGD__SECTION__KEY environment variables override keys).
        #[arg(short, long, default_value = "config/binlogd.toml")]
        config: PathBuf,
    },
    /// End the snapshot: tables not done yet are not read further.
    Cancel {
        /// Config file (TOML; BINLOGD__SECTION__KEY environment variables override keys).
        #[arg(short, long, default_value = "config/binlogd.toml")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum PositionCmd {
    /// The stored position, its age, and how far behind the server it is.
    #[command(after_help = "Example:\n  binlogd position show -c config/binlogd.toml")]
    Show {
        /// Config file (TOML; BINLOGD__SECTION__KEY environment variables override keys).
        #[arg(short, long, default_value = "config/binlogd.toml")]
        config: PathBuf,
    },
    /// Move the stored position (refused while a daemon for the pipeline runs).
    #[command(after_help = "Examples:\n  \
        binlogd position set -c config/binlogd.toml --file binlog.000042 --pos 4\n  \
        binlogd position set -c config/binlogd.toml --gtid 0-1-1000\n  \
        binlogd position set -c config/binlogd.toml --latest")]
    Set {
        /// Config file (TOML; BINLOGD__SECTION__KEY environment variables override keys).
        #[arg(short, long, default_value = "config/binlogd.toml")]
        config: PathBuf,
        /// Binlog file name (with --pos).
        #[arg(long, requires = "pos", conflicts_with_all = ["gtid", "latest"])]
        file: Option<String>,
        /// Offset in --file: the start of an event (4 = the file's first event).
        #[arg(long, requires = "file")]
        pos: Option<u64>,
        /// GTID set of the transactions already seen (MySQL uuid:1-5, MariaDB 0-1-42).
        #[arg(long, conflicts_with = "latest")]
        gtid: Option<String>,
        /// The server's current end of binlog.
        #[arg(long)]
        latest: bool,
    },
    /// Forget the stored position: the next run starts at source.start.
    #[command(after_help = "Example:\n  binlogd position reset -c config/binlogd.toml")]
    Reset {
        /// Config file (TOML; BINLOGD__SECTION__KEY environment variables override keys).
        #[arg(short, long, default_value = "config/binlogd.toml")]
        config: PathBuf,
    },
}

#[derive(clap::Args)]
struct ReplayArgs {
    /// Config file (TOML; BINLOGD__SECTION__KEY environment variables override keys).
    #[arg(short, long, default_value = "config/binlogd.toml")]
    config: PathBuf,
    /// Start at FILE:POS.
    #[arg(long, value_name = "FILE:POS")]
    from: Option<BinlogCoord>,
    /// Start after this GTID set (the transactions already seen).
    #[arg(long, value_name = "GTID_SET")]
    from_gtid: Option<String>,
    /// Start at the first transaction at or after this time (RFC 3339, UTC: 2026-01-02T03:04:05Z).
    #[arg(long, value_name = "TIME")]
    from_time: Option<String>,
    /// End at FILE:POS (default: the server's position when the replay starts).
    #[arg(long, value_name = "FILE:POS")]
    to: Option<BinlogCoord>,
    /// End once this GTID set is covered.
    #[arg(long, value_name = "GTID_SET")]
    to_gtid: Option<String>,
    /// End before the first transaction after this time (a time without a fraction includes its whole second).
    #[arg(long, value_name = "TIME")]
    to_time: Option<String>,
    /// Only these sinks (repeatable; default all).
    #[arg(long = "sink", value_name = "NAME")]
    sinks: Vec<String>,
    /// Replica id for the replay stream (default: source.server_id with bit 30 flipped).
    #[arg(long)]
    server_id: Option<u32>,
    /// Read these binlog files from disk instead of the server (e.g. after the server purged them).
    #[arg(long = "binlog-file", value_name = "PATH", num_args = 1..)]
    binlog_files: Vec<PathBuf>,
}

/// `binlogd --version`: the version and what this build contains (`-V`: the version only).
fn long_version() -> &'static str {
    let (_, librdkafka) = rdkafka::util::get_rdkafka_version();
    let kafka_features = rdkafka::ClientConfig::new()
        .create_native_config()
        .and_then(|c| c.get("builtin.features"))
        .unwrap_or_default();
    let text = format!(
        "{version}\n\
         sources: MySQL 8.0-9.x, MariaDB 10.6+ (binlog replication, TLS)\n\
         sinks:   file (JSON lines), redis (single node and cluster, TLS), kafka\n\
         kafka:   librdkafka {librdkafka} ({kafka_features})\n\
         tls:     {openssl} (MySQL, Redis and Kafka connections)\n\
         build:   {profile}, {arch}-{os}, jemalloc allocator",
        version = env!("CARGO_PKG_VERSION"),
        openssl = openssl_version(),
        profile = if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        arch = std::env::consts::ARCH,
        os = std::env::consts::OS,
    );
    // once per process, for clap's &'static str
    Box::leak(text.into_boxed_str())
}

/// The OpenSSL library native-tls and librdkafka use (linked dynamically).
fn openssl_version() -> String {
    extern "C" {
        fn OpenSSL_version(t: std::ffi::c_int) -> *const std::ffi::c_char;
    }
    // SAFETY: OpenSSL_version(OPENSSL_VERSION = 0) returns a static NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(OpenSSL_version(0)) }
        .to_string_lossy()
        .into_owned()
}

fn parse_time(s: &Option<String>) -> Result<Option<u64>, String> {
    match s {
        None => Ok(None),
        Some(t) => humantime::parse_rfc3339_weak(t)
            .map_err(|e| format!("{t:?} is not a time like 2026-01-02T03:04:05Z ({e})"))
            .map(|st| {
                st.duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .ok()
            }),
    }
}

/// Exit codes: 0 ok, 1 runtime failure, 2 bad configuration.
const EXIT_RUNTIME: u8 = 1;
const EXIT_CONFIG: u8 = 2;

fn rust_log() -> Option<String> {
    std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
}

/// Changes the log filter at run time (SIGHUP).
type LogReload = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

fn init_logging(cfg: Option<&Config>, quiet: bool) -> Option<LogReload> {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let level = cfg.map(|c| c.log.level.clone()).unwrap_or_else(|| {
        if quiet {
            "warn".into()
        } else {
            "info".into()
        }
    });
    // RUST_LOG wins over log.level; an empty RUST_LOG counts as unset
    let filter = match rust_log() {
        Some(v) => EnvFilter::try_new(v).unwrap_or_else(|_| EnvFilter::new(level)),
        None => EnvFilter::new(level),
    };
    let format = cfg.map(|c| c.log.format).unwrap_or_default();
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Human => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    fn reloader<S: Send + Sync + 'static>(
        h: tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, S>,
    ) -> LogReload {
        Box::new(move |level: &str| {
            let f = tracing_subscriber::EnvFilter::try_new(level).map_err(|e| e.to_string())?;
            h.reload(f).map_err(|e| e.to_string())
        })
    }
    if json {
        let b = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_filter_reloading();
        let h = b.reload_handle();
        b.try_init().ok().map(|_| reloader(h))
    } else {
        let b = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_filter_reloading();
        let h = b.reload_handle();
        b.try_init().ok().map(|_| reloader(h))
    }
}

/// SIGHUP: re-reads the config file; applies `log.level` and `source.include/exclude`, and
/// says which other changes need a restart.
fn spawn_reload_handler(
    path: PathBuf,
    running: Config,
    filters: watch::Sender<binlogd::source::FilterUpdate>,
    log: Option<LogReload>,
) -> tokio::task::JoinHandle<()> {
    use tokio::signal::unix::{signal, SignalKind};
    tokio::spawn(async move {
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        let mut running = running;
        let mut generation = 0u64;
        while hup.recv().await.is_some() {
            let new = match Config::load(&path) {
                Ok(c) => c,
                Err(e) => {
                    error!("SIGHUP: {e}; keeping the running configuration");
                    continue;
                }
            };
            let mut applied = Vec::new();
            if new.log.level != running.log.level {
                if rust_log().is_some() {
                    warn!("SIGHUP: log.level changed, but RUST_LOG is set and takes precedence");
                } else if let Some(l) = &log {
                    match l(&new.log.level) {
                        Ok(()) => applied.push(format!("log.level = {:?}", new.log.level)),
                        Err(e) => error!("SIGHUP: log.level {:?}: {e}", new.log.level),
                    }
                }
            }
            if new.source.include != running.source.include
                || new.source.exclude != running.source.exclude
            {
                match binlogd::filter::TableFilter::new(
                    new.source.include.as_deref(),
                    &new.source.exclude,
                ) {
                    Ok(f) => {
                        generation += 1;
                        let _ = filters.send((generation, Some(f)));
                        applied.push("source.include/exclude (from the next transaction)".into());
                    }
                    Err(e) => error!("SIGHUP: {e}"),
                }
            }
            let restart = new.restart_needed(&running);
            if !restart.is_empty() {
                warn!(
                    changed = %restart.join(", "),
                    "SIGHUP: these settings changed and take effect only after a restart"
                );
            }
            info!(applied = %applied.join(", "), "SIGHUP: configuration reloaded");
            running = new;
        }
    })
}

fn load_config(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("binlogd: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("binlogd: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    rt.block_on(async {
        let config_path = match &cli.cmd {
            Cmd::Run { config, .. } | Cmd::Check { config } | Cmd::Migrate { config } => config.clone(),
            Cmd::Position { cmd: PositionCmd::Show { config } | PositionCmd::Reset { config } | PositionCmd::Set { config, .. } } => {
                config.clone()
            }
            Cmd::Replay(a) => a.config.clone(),
            Cmd::Snapshot { cmd: SnapshotCmd::Start { config, .. } | SnapshotCmd::Status { config } | SnapshotCmd::Cancel { config } } => {
                config.clone()
            }
        };
        let cfg = match load_config(&config_path) {
            Ok(c) => c,
            Err(code) => return code,
        };
        let quiet = matches!(cli.cmd, Cmd::Check { .. } | Cmd::Position { .. } | Cmd::Snapshot { .. });
        let log_reload = init_logging(if quiet { None } else { Some(&cfg) }, quiet);
        let result: Result<()> = match cli.cmd {
            Cmd::Check { .. } => return check(cfg).await,
            Cmd::Run { stop_at, accept_divergence, .. } => {
                let (stop_tx, stop_rx) = watch::channel(false);
                let (filter_tx, filter_rx) = watch::channel((0u64, None));
                let signals = spawn_signal_handler(stop_tx);
                let reload = spawn_reload_handler(config_path.clone(), cfg.clone(), filter_tx, log_reload);
                let deadline = cfg.pipeline.shutdown_timeout.0;
                let mut stopping = stop_rx.clone();
                let opts = cmd::RunOptions { stop_at, accept_divergence };
                let run = cmd::run(cfg, opts, stop_rx, Some(filter_rx));
                tokio::pin!(run);
                let r = tokio::select! {
                    r = &mut run => r.map_err(anyhow::Error::from),
                    _ = async {
                        while !*stopping.borrow() {
                            if stopping.changed().await.is_err() {
                                std::future::pending::<()>().await;
                            }
                        }
                        tokio::time::sleep(deadline).await;
                    } => Err(anyhow::anyhow!(
                        "the sinks did not drain within pipeline.shutdown_timeout ({deadline:?}); exiting anyway: \
                         the stored position is the last one every sink acknowledged, the rest is sent again at the next start"
                    )),
                };
                signals.abort();
                reload.abort();
                r
            }
            Cmd::Snapshot { cmd } => {
                use binlogd::snapshot::requests::{parse_table, RequestKind};
                let wait = std::time::Duration::from_secs(10);
                let r = match cmd {
                    SnapshotCmd::Status { .. } => cmd::snapshot::snapshot_status(&cfg).await,
                    SnapshotCmd::Cancel { .. } => cmd::snapshot::snapshot_request(&cfg, RequestKind::Cancel, wait).await,
                    SnapshotCmd::Start { tables, where_sql, .. } => {
                        let parsed: Result<Vec<_>, _> = tables.iter().map(|t| parse_table(t)).collect();
                        match parsed {
                            Err(e) => {
                                eprintln!("binlogd: --table {e}");
                                return ExitCode::from(EXIT_CONFIG);
                            }
                            Ok(tables) => {
                                let filter = where_sql.filter(|w| !w.trim().is_empty());
                                cmd::snapshot::snapshot_request(&cfg, RequestKind::Start { tables, filter }, wait).await
                            }
                        }
                    }
                };
                r.map(|s| println!("{}", s.trim_end())).map_err(Into::into)
            }
            Cmd::Migrate { .. } => cmd::migrate(&cfg).await.map(|n| println!("migrations applied: {n}")).map_err(Into::into),
            Cmd::Position { cmd } => match cmd {
                PositionCmd::Show { .. } => cmd::position_show(&cfg).await.map(|s| print!("{s}")).map_err(Into::into),
                PositionCmd::Reset { .. } => cmd::position_reset(&cfg)
                    .await
                    .map(|had| println!("{}", if had { "stored position removed" } else { "no stored position" }))
                    .map_err(Into::into),
                PositionCmd::Set { file, pos, gtid, latest, .. } => {
                    let target = match (file, pos, gtid, latest) {
                        (Some(f), Some(p), None, false) => Some(cmd::SetTarget::File(BinlogCoord { file: f, pos: p })),
                        (None, None, Some(g), false) => Some(cmd::SetTarget::Gtid(g)),
                        (None, None, None, true) => Some(cmd::SetTarget::Latest),
                        _ => None,
                    };
                    match target {
                        None => {
                            eprintln!("binlogd: position set needs --file F --pos P, --gtid SET or --latest");
                            return ExitCode::from(EXIT_CONFIG);
                        }
                        Some(t) => cmd::position_set(&cfg, t)
                            .await
                            .map(|p| {
                                println!(
                                    "stored position: {} gtid: {}",
                                    p.coord,
                                    p.gtid.map(|g| g.to_string()).unwrap_or_else(|| "-".into())
                                )
                            })
                            .map_err(Into::into),
                    }
                }
            },
            Cmd::Replay(a) => {
                // --to-time without a fraction covers its whole second
                let to_time = parse_time(&a.to_time).map(|t| {
                    t.map(|ms| if a.to_time.as_deref().is_some_and(|s| !s.contains('.')) { ms + 999 } else { ms })
                });
                let range = match (parse_time(&a.from_time), to_time) {
                    (Ok(ft), Ok(tt)) => cmd::ReplayRange {
                        from: a.from,
                        from_gtid: a.from_gtid,
                        from_time_ms: ft,
                        to: a.to,
                        to_gtid: a.to_gtid,
                        to_time_ms: tt,
                        sinks: a.sinks,
                        server_id: a.server_id,
                    },
                    (Err(e), _) | (_, Err(e)) => {
                        eprintln!("binlogd: {e}");
                        return ExitCode::from(EXIT_CONFIG);
                    }
                };
                let (stop_tx, stop_rx) = watch::channel(false);
                let signals = spawn_signal_handler(stop_tx);
                let r = if a.binlog_files.is_empty() {
                    cmd::replay(cfg, range, stop_rx).await
                } else {
                    cmd::replay_files(cfg, a.binlog_files, range).await
                };
                signals.abort();
                r.map(|rows| info!(rows, "replay done")).map_err(Into::into)
            }
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                error!("{e:#}");
                eprintln!("binlogd: {e:#}");
                if matches!(e.downcast_ref::<cmd::DaemonError>(), Some(cmd::DaemonError::Config(_))) {
                    ExitCode::from(EXIT_CONFIG)
                } else {
                    ExitCode::from(EXIT_RUNTIME)
                }
            }
        }
    })
}

fn spawn_signal_handler(stop_tx: watch::Sender<bool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutting down: draining sinks");
        let _ = stop_tx.send(true);
        std::future::pending::<()>().await;
    })
}

async fn check(cfg: Config) -> ExitCode {
    match cmd::check::check(cfg).await {
        cmd::check::Outcome::Ok => ExitCode::SUCCESS,
        cmd::check::Outcome::ConfigProblems => ExitCode::from(EXIT_CONFIG),
        cmd::check::Outcome::Problems => ExitCode::from(EXIT_RUNTIME),
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
