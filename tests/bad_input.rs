//! Bad input gets a clear error naming the problem and the fix, and a non-zero exit.

mod common;

use common::*;
use mysql_async::prelude::*;
use std::process::Command;
use std::time::{Duration, Instant};

fn write_cfg(dir: &std::path::Path, text: &str) -> String {
    let p = dir.join("c.toml");
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

const GOOD: &str = r#"
[source]
url = "URL"
server_id = 4343
name = "t"

[[sinks.file]]
name = "out"
path = "-"

[admin]
listen = "127.0.0.1:0"
"#;

#[test]
fn config_mistakes_exit_2_with_the_place() {
    let dir = workdir("badcfg");
    let cases: &[(&str, &str, &[&str])] = &[
        // (what, config, [the place…, the fix…])
        ("unknown key", "[source]\nurl = \"mysql://a@b\"\nserver_id = 1\nname = \"x\"\nhartbeat = \"1s\"\n[[sinks.file]]\nname=\"o\"\npath=\"-\"\n", &["c.toml", "`hartbeat`", "key `source`", "remove or correct the key", "`heartbeat`"]),
        ("syntax", "[source\nurl = 1\n", &["c.toml", "line 1, column 8", "expected `.`, `]`"]),
        ("syntax in a value", &GOOD.replace("server_id = 4343", "server_id = = 4343"), &["c.toml", "line 4, column 13", "server_id = = 4343"]),
        ("wrong type", &GOOD.replace("4343", "\"many\""), &["source.server_id", "expected an integer", "write the value as the expected type"]),
        ("bad duration", &GOOD.replace("name = \"t\"", "name = \"t\"\nheartbeat = \"soon\""), &["source.heartbeat", "invalid duration \"soon\"", "e.g. \"500ms\""]),
        ("bad url", &GOOD.replace("URL", "postgres://x:secretpw@h"), &["source.url", "expected mysql://user:password@host:port"]),
        ("bad redis url", &format!("{GOOD}\n[[sinks.redis]]\nname = \"c\"\nurl = \"http://h:6379\"\n[[sinks.redis.rules]]\ntable = \"d.t\"\nkeys = [\"k:{{id}}\"]\n"), &["sinks.redis \"c\"", "must start with redis:// or rediss://"]),
        ("bad key template", &format!("{GOOD}\n[[sinks.redis]]\nname = \"c\"\nurl = \"redis://h:6379\"\n[[sinks.redis.rules]]\ntable = \"d.t\"\nkeys = [\"k:{{id\"]\n"), &["sinks.redis \"c\"", "rules[0]", "\"k:{id\"", "unclosed '{'", "write {column}"]),
        ("empty include", &GOOD.replace("name = \"t\"", "name = \"t\"\ninclude = []"), &["source.include", "empty list", "remove it to stream every table"]),
        ("duplicate sinks", &format!("{GOOD}\n[[sinks.file]]\nname = \"out\"\npath = \"/tmp/x\"\n"), &["\"out\"", "unique", "rename one"]),
        ("bad start", &GOOD.replace("name = \"t\"", "name = \"t\"\nstart = \"tomorrow\""), &["source.start", "earliest"]),
        ("missing password file", &GOOD.replace("name = \"t\"", "name = \"t\"\npassword_file = \"/nonexistent/pw\""), &["source.password_file", "/nonexistent/pw", "fix the path"]),
    ];
    for (what, text, needles) in cases {
        let text = text.replace("URL", "mysql://cdc:secretpw@127.0.0.1:1");
        let p = write_cfg(&dir, &text);
        for verb in ["run", "check"] {
            let (code, out) = run_binlogd(&[verb, "-c", &p]);
            assert_eq!(code, 2, "{what} ({verb}): exit code 2; output: {out}");
            for n in *needles {
                assert!(
                    out.contains(n),
                    "{what} ({verb}): message names {n:?}: {out}"
                );
            }
            assert!(
                !out.contains("secretpw"),
                "{what}: the password is never printed: {out}"
            );
        }
    }
}

fn wrong_password(f: Flavor) {
    let dir = workdir(&format!("badpw_{}", f.tag()));
    let url = format!("mysql://cdc:wrong@127.0.0.1:{}", f.port());
    let p = write_cfg(&dir, &GOOD.replace("URL", &url));
    let (code, out) = run_binlogd(&["run", "-c", &p]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("cannot log in") && out.contains("password"),
        "{out}"
    );
    assert!(!out.contains(":wrong@"), "{out}");
    let (code, out) = run_binlogd(&["check", "-c", &p]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("cannot log in"), "{out}");
}

both_flavors!(wrong_password: wrong_password_mariadb(), wrong_password_mysql());

fn check_ok(f: Flavor) {
    let dir = workdir(&format!("checkok_{}", f.tag()));
    let p = write_cfg(&dir, &GOOD.replace("URL", &f.cdc_url()));
    let (code, out) = run_binlogd(&["check", "-c", &p]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("check: ok"), "{out}");
}

both_flavors!(check_ok: check_ok_mariadb(), check_ok_mysql());

/// A session writing with binlog_format=STATEMENT: the daemon stops with an error naming it
/// instead of silently missing the rows.
fn statement_session(f: Flavor) {
    let name = format!("stmt_{}", f.tag());
    let Scenario {
        rt,
        dir,
        mut c,
        start,
        ..
    } = Scenario::new(f, &name, &["t (id INT PRIMARY KEY)"]);
    let mut d = Daemon::start(&dir, &config(f, &name, &name, &start, &dir, ""));
    rt.block_on(async {
        exec_all(
            &mut c,
            &[
                format!("INSERT INTO `{name}`.t VALUES (1)"),
                "SET SESSION binlog_format = 'STATEMENT'".to_string(),
                format!("INSERT INTO `{name}`.t VALUES (2)"),
                "SET SESSION binlog_format = 'ROW'".to_string(),
            ],
        )
        .await;
    });
    let code = d.wait_exit(Duration::from_secs(30), "a statement-based change");
    assert_eq!(code, Some(1));
    let log = d.log_all();
    assert!(
        log.contains("statement-based change") && log.contains("binlog_format=ROW"),
        "{}",
        d.log_text()
    );
    assert_eq!(
        d.events().len(),
        1,
        "the row-based insert before it was delivered"
    );
}

both_flavors!(statement_session: statement_session_mariadb(), statement_session_mysql());

/// A server started with binlog_format=STATEMENT and MINIMAL row image: `check` names each
/// setting and its fix, `run` refuses to start.
#[test]
fn statement_server_mariadb() {
    let scripts = std::env::var("BINLOGD_TEST_SCRIPTS")
        .expect("BINLOGD_TEST_SCRIPTS (run via scripts/test.sh)");
    let dir = workdir("stmtsrv");
    let data = dir.join("data");
    let port = 3336;
    let st = Command::new("bash")
        .arg(format!("{scripts}/mariadb.sh"))
        .args(["start"])
        .arg(&data)
        .arg(port.to_string())
        .args([
            "--",
            "--binlog-format=STATEMENT",
            "--binlog-row-image=MINIMAL",
            "--server-id=7",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let url = format!("mysql://cdc:cdc@127.0.0.1:{port}");
    let p = write_cfg(&dir, &GOOD.replace("URL", &url));
    let (ccode, cout) = run_binlogd(&["check", "-c", &p]);
    let (rcode, rout) = run_binlogd(&["run", "-c", &p]);
    let _ = Command::new("bash")
        .arg(format!("{scripts}/mariadb.sh"))
        .arg("stop")
        .arg(&data)
        .status();
    assert_eq!(ccode, 1, "{cout}");
    assert!(
        cout.contains("binlog_format is STATEMENT; set binlog_format=ROW"),
        "{cout}"
    );
    assert!(
        cout.contains("binlog_row_image is MINIMAL; set binlog_row_image=FULL"),
        "{cout}"
    );
    assert_eq!(rcode, 1, "{rout}");
    assert!(rout.contains("binlog_format=ROW"), "{rout}");
}

/// Two daemons with the same replica id: the clash is reported as such.
fn server_id_clash(f: Flavor) {
    let rt = rt();
    let name = format!("clash_{}", f.tag());
    let dir = workdir(&name);
    let dir2 = workdir(&format!("{name}_2"));
    let mut c = rt.block_on(root(f));
    rt.block_on(fresh_db(&mut c, &name));
    let start = rt.block_on(binlog_end(&mut c, f));
    let mut a = Daemon::start(&dir, &config(f, &name, &name, &start, &dir, ""));
    std::thread::sleep(Duration::from_millis(1500));
    // another pipeline (its own lock), same replica id
    let cfg_b = config(f, &name, &name, &start, &dir2, "").replace(
        &format!("name = \"{name}_{}\"", f.tag()),
        &format!("name = \"{name}_b_{}\"", f.tag()),
    );
    let mut b = Daemon::start(&dir2, &cfg_b);
    let t0 = Instant::now();
    let (code, log) = loop {
        if let Some(st) = a.child.try_wait().unwrap() {
            break (st.code(), std::fs::read_to_string(&a.log).unwrap());
        }
        if let Some(st) = b.child.try_wait().unwrap() {
            break (st.code(), std::fs::read_to_string(&b.log).unwrap());
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "neither daemon reported the clash:\n{}\n{}",
            a.log_text(),
            b.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(1));
    assert!(
        log.contains("replica id clash") && log.contains("server_id"),
        "{log}"
    );
}

both_flavors!(server_id_clash: server_id_clash_mariadb(), server_id_clash_mysql());

/// `check` and `run` both exit 1 naming the problem (`needles`).
fn both_name(what: &str, cfg: &str, needles: &[&str]) {
    for verb in ["check", "run"] {
        let (code, out) = run_binlogd_for(&[verb, "-c", cfg], 30);
        assert_eq!(code, 1, "{what} ({verb}): exit code 1; output:\n{out}");
        let named: Vec<&str> = out
            .lines()
            .filter(|l| needles.iter().any(|n| l.contains(n)))
            .collect();
        eprintln!("{what} ({verb}): {}", named.join(" | "));
        for n in needles {
            assert!(
                out.contains(n),
                "{what} ({verb}): the message names {n:?}:\n{out}"
            );
        }
    }
}

/// Every server setting binlogd cannot work with, on a private server of each flavor: each is
/// named precisely, with the fix, by `binlogd check` and at startup (`binlogd run` exits 1).
fn server_settings(f: Flavor, port: u16) {
    let rt = rt();
    let name = format!("settings_{}", f.tag());
    let dir = workdir(&name);
    let _ = std::fs::remove_dir_all(dir.join("data"));
    let srv = PrivateServer::start(f, &dir, port, &[]);
    let p = write_cfg(&dir, &GOOD.replace("URL", &srv.cdc_url()));
    let (code, out) = run_binlogd_for(&["check", "-c", &p], 30);
    assert_eq!(code, 0, "baseline: {out}");
    let mut c = rt.block_on(root_at(&srv.root_url()));
    let q = |c: &mut mysql_async::Conn, sql: &str| {
        rt.block_on(c.query_drop(sql))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    };
    // binlog format and row image (global settings: new sessions, binlogd's, see them)
    for (set, undo, needle) in [
        (
            "SET GLOBAL binlog_format = 'STATEMENT'",
            "SET GLOBAL binlog_format = 'ROW'",
            "binlog_format is STATEMENT; set binlog_format=ROW",
        ),
        (
            "SET GLOBAL binlog_format = 'MIXED'",
            "SET GLOBAL binlog_format = 'ROW'",
            "binlog_format is MIXED; set binlog_format=ROW",
        ),
        (
            "SET GLOBAL binlog_row_image = 'MINIMAL'",
            "SET GLOBAL binlog_row_image = 'FULL'",
            "binlog_row_image is MINIMAL; set binlog_row_image=FULL",
        ),
        (
            "SET GLOBAL binlog_row_image = 'NOBLOB'",
            "SET GLOBAL binlog_row_image = 'FULL'",
            "binlog_row_image is NOBLOB; set binlog_row_image=FULL",
        ),
    ] {
        q(&mut c, set);
        both_name(set, &p, &[needle]);
        q(&mut c, undo);
    }
    // missing privileges: a user with SELECT only
    q(&mut c, "DROP USER IF EXISTS 'lowpriv'@'%'");
    q(&mut c, "CREATE USER 'lowpriv'@'%' IDENTIFIED BY 'pw'");
    q(&mut c, "GRANT SELECT ON *.* TO 'lowpriv'@'%'");
    q(
        &mut c,
        "GRANT CREATE, SELECT, INSERT, UPDATE, DELETE ON binlogd.* TO 'lowpriv'@'%'",
    );
    let low = write_cfg(
        &dir,
        &GOOD.replace("URL", &format!("mysql://lowpriv:pw@127.0.0.1:{port}")),
    );
    both_name(
        "missing privileges",
        &low,
        &[
            "the user lacks REPLICATION SLAVE",
            "the user lacks REPLICATION CLIENT",
            "GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.*",
        ],
    );
    // GTID mode mismatch with a stored GTID position
    let p = write_cfg(&dir, &GOOD.replace("URL", &srv.cdc_url()));
    let (code, out) = run_binlogd_for(&["position", "set", "--latest", "-c", &p], 30);
    assert_eq!(code, 0, "position set: {out}");
    assert!(
        out.contains("gtid: ") && !out.contains("gtid: -"),
        "a GTID position was stored: {out}"
    );
    match f {
        Flavor::MySql => {
            for m in ["ON_PERMISSIVE", "OFF_PERMISSIVE", "OFF"] {
                q(&mut c, &format!("SET GLOBAL gtid_mode = {m}"));
            }
            both_name(
                "gtid_mode OFF with a stored GTID set",
                &p,
                &["GTID mode mismatch", "set gtid_mode=ON"],
            );
            for m in ["OFF_PERMISSIVE", "ON_PERMISSIVE", "ON"] {
                q(&mut c, &format!("SET GLOBAL gtid_mode = {m}"));
            }
        }
        Flavor::MariaDb => {
            // the stored position came from a MySQL server (a pipeline moved between flavors)
            q(
                &mut c,
                "UPDATE binlogd.checkpoint SET gtid_set = '3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5', \
                 gtid_flavor = 'mysql'",
            );
            both_name(
                "a MySQL GTID set stored for a MariaDB server",
                &p,
                &["GTID mode mismatch", "binlogd position set"],
            );
        }
    }
    let (code, out) = run_binlogd_for(&["position", "reset", "-c", &p], 30);
    assert_eq!(code, 0, "position reset: {out}");
    // binary logging off
    drop(c);
    srv.stop();
    srv.start_again(&["--skip-log-bin"]);
    both_name(
        "binary logging off",
        &p,
        &["binary logging is off", "log_bin"],
    );
}

both_flavors!(server_settings: server_settings_mariadb(3393), server_settings_mysql(3394));

/// A TCP proxy to `upstream` that flips one bit in the first server→client chunk containing
/// `marker` (once, in the byte after it). Returns the local port and whether it flipped yet.
fn corrupting_proxy(
    upstream: u16,
    marker: Vec<u8>,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let flipped = Arc::new(AtomicBool::new(false));
    let f = flipped.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            let Ok(mut server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
                return;
            };
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c2, &mut s2);
                let _ = s2.shutdown(std::net::Shutdown::Both);
            });
            let f = f.clone();
            let marker = marker.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match server.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let chunk = &mut buf[..n];
                    if !f.load(Ordering::SeqCst) {
                        if let Some(i) = chunk
                            .windows(marker.len())
                            .position(|w| w == marker)
                            .filter(|i| i + marker.len() < n)
                        {
                            chunk[i + marker.len()] ^= 0x01;
                            f.store(true, Ordering::SeqCst);
                        }
                    }
                    if client.write_all(chunk).is_err() {
                        break;
                    }
                }
                let _ = client.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    (port, flipped)
}

/// A bit flipped on the wire inside a row event of the live stream: the CRC32 check catches it,
/// binlogd stops (exit 1) naming the checksum and the event's position, delivers nothing from
/// that transaction on, and does not store a position past it; restarted on a clean path it
/// resumes there and loses nothing.
#[test]
fn corrupt_event_on_the_wire_mariadb() {
    let f = Flavor::MariaDb;
    let name = "corrupt_wire";
    let Scenario {
        rt,
        dir,
        mut c,
        start,
        ..
    } = Scenario::new(f, name, &["t (id INT PRIMARY KEY, s VARCHAR(200))"]);
    // unique to this run: earlier runs' rows are still in the server's binlog
    let marker = format!(
        "CORRUPT-{}-",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    let (port, flipped) = corrupting_proxy(f.port(), marker.clone().into_bytes());
    let cfg = config_for(
        &format!("mysql://cdc:cdc@127.0.0.1:{port}"),
        f,
        name,
        name,
        &start,
        &dir,
        "",
    );
    let mut d = Daemon::start(&dir, &cfg);
    rt.block_on(async {
        for i in 0..5 {
            c.query_drop(format!("INSERT INTO `{name}`.t VALUES ({i}, 'fine')"))
                .await
                .unwrap();
        }
    });
    d.wait_events(5, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500)); // the position after them is stored
    rt.block_on(async {
        exec_all(
            &mut c,
            &[
                format!("INSERT INTO `{name}`.t VALUES (5, '{marker}xxxxxxxxxxxxxxxxxxxxxxxx')"),
                format!("INSERT INTO `{name}`.t VALUES (6, 'after')"),
            ],
        )
        .await;
    });
    let code = d.wait_exit(Duration::from_secs(30), "after a corrupt event");
    assert!(
        flipped.load(std::sync::atomic::Ordering::SeqCst),
        "the proxy flipped a bit"
    );
    assert_eq!(code, Some(1), "{}", d.log_text());
    let log = d.log_all();
    let line = log
        .lines()
        .find(|l| l.contains("CRC32 checksum mismatch"))
        .unwrap_or_else(|| panic!("the checksum error is logged:\n{}", d.log_text()));
    assert!(
        line.contains(&format!("{}:", start.0)) && line.contains("the event is corrupt"),
        "the error names the event's position: {line}"
    );
    let ids: Vec<i64> = d
        .events()
        .iter()
        .filter_map(|e| e["after"]["id"].as_i64())
        .collect();
    assert_eq!(
        ids,
        vec![0, 1, 2, 3, 4],
        "nothing from the corrupt event on"
    );
    // restarted on a clean path: resumes before the corrupt event, nothing lost
    let clean = cfg.replace(
        &format!("127.0.0.1:{port}"),
        &format!("127.0.0.1:{}", f.port()),
    );
    std::fs::write(&d.config, clean).unwrap();
    d.restart();
    let ev = d.wait_events(7, Duration::from_secs(30));
    let ids: Vec<i64> = ev
        .iter()
        .filter_map(|e| e["after"]["id"].as_i64())
        .collect();
    assert_eq!(ids, vec![0, 1, 2, 3, 4, 5, 6], "resumed where it stopped");
    assert_eq!(
        ev[5]["after"]["s"].as_str(),
        Some(format!("{marker}xxxxxxxxxxxxxxxxxxxxxxxx").as_str()),
        "the row as written"
    );
    assert_eq!(d.stop(), Some(0));
}
