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
"#;

#[test]
fn config_mistakes_exit_2_with_the_place() {
    let dir = workdir("badcfg");
    let cases: &[(&str, &str, &[&str])] = &[
        ("unknown key", "[source]\nurl = \"mysql://a@b\"\nserver_id = 1\nname = \"x\"\nhartbeat = \"1s\"\n[[sinks.file]]\nname=\"o\"\npath=\"-\"\n", &["hartbeat", "c.toml"]),
        ("syntax", "[source\nurl = 1\n", &["line 1", "c.toml"]),
        ("wrong type", &GOOD.replace("4343", "\"many\""), &["server_id"]),
        ("bad duration", &GOOD.replace("name = \"t\"", "name = \"t\"\nheartbeat = \"soon\""), &["invalid duration", "soon"]),
        ("bad url", &GOOD.replace("URL", "postgres://x:secretpw@h"), &["mysql://", "source.url"]),
        ("empty include", &GOOD.replace("name = \"t\"", "name = \"t\"\ninclude = []"), &["include", "empty"]),
        ("duplicate sinks", &format!("{GOOD}\n[[sinks.file]]\nname = \"out\"\npath = \"/tmp/x\"\n"), &["out", "unique"]),
        ("bad start", &GOOD.replace("name = \"t\"", "name = \"t\"\nstart = \"tomorrow\""), &["source.start", "earliest"]),
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

#[test]
fn wrong_password_mariadb() {
    wrong_password(Flavor::MariaDb);
}
#[test]
fn wrong_password_mysql() {
    wrong_password(Flavor::MySql);
}

fn check_ok(f: Flavor) {
    let dir = workdir(&format!("checkok_{}", f.tag()));
    let p = write_cfg(&dir, &GOOD.replace("URL", &f.cdc_url()));
    let (code, out) = run_binlogd(&["check", "-c", &p]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("check: ok"), "{out}");
}

#[test]
fn check_ok_mariadb() {
    check_ok(Flavor::MariaDb);
}
#[test]
fn check_ok_mysql() {
    check_ok(Flavor::MySql);
}

/// A session writing with binlog_format=STATEMENT: the daemon stops with an error naming it
/// instead of silently missing the rows.
fn statement_session(f: Flavor) {
    let rt = rt();
    let name = format!("stmt_{}", f.tag());
    let dir = workdir(&name);
    let mut c = rt.block_on(root(f));
    rt.block_on(async {
        fresh_db(&mut c, &name).await;
        c.query_drop(format!("CREATE TABLE `{name}`.t (id INT PRIMARY KEY)"))
            .await
            .unwrap();
    });
    let start = rt.block_on(binlog_end(&mut c, f));
    let mut d = Daemon::start(&dir, &config(f, &name, &name, &start, &dir, ""));
    rt.block_on(async {
        c.query_drop(format!("INSERT INTO `{name}`.t VALUES (1)"))
            .await
            .unwrap();
        c.query_drop("SET SESSION binlog_format = 'STATEMENT'")
            .await
            .unwrap();
        c.query_drop(format!("INSERT INTO `{name}`.t VALUES (2)"))
            .await
            .unwrap();
        c.query_drop("SET SESSION binlog_format = 'ROW'")
            .await
            .unwrap();
    });
    let t0 = Instant::now();
    let code = loop {
        if let Some(st) = d.child.try_wait().unwrap() {
            break st.code();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "daemon kept running; log:\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(1));
    let log = std::fs::read_to_string(&d.log).unwrap();
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

#[test]
fn statement_session_mariadb() {
    statement_session(Flavor::MariaDb);
}
#[test]
fn statement_session_mysql() {
    statement_session(Flavor::MySql);
}

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

#[test]
fn server_id_clash_mariadb() {
    server_id_clash(Flavor::MariaDb);
}
#[test]
fn server_id_clash_mysql() {
    server_id_clash(Flavor::MySql);
}
