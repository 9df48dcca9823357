//! The quick start (`bash scripts/quickstart.sh`, the README's first command) run as a user
//! runs it, servers included, on its own ports and data directory (MariaDB :3317, Redis :6317,
//! tansu :19017, admin :9317, target/quickstart-test) so it never meets the shared test servers.
//!
//! First run with `--keep`: its output must show the keys of the changed rows deleted, the
//! others still cached, the three row changes read back from Kafka; then Redis and Kafka are
//! checked directly. A second run on the instances the first one left running must show the
//! same and stop everything.

mod common;

use common::*;
use redis::Commands;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const PORTS: [(&str, u16); 4] = [
    ("QUICKSTART_PORT", 3317),
    ("QUICKSTART_REDIS_PORT", 6317),
    ("QUICKSTART_KAFKA_PORT", 19017),
    ("QUICKSTART_ADMIN_PORT", 9317),
];
const TOPIC: &str = "quickstart.shop.users";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn dir() -> PathBuf {
    repo().join("target/quickstart-test")
}

fn script(args: &[&str]) -> Command {
    let mut c = Command::new("bash");
    c.arg(repo().join("scripts/quickstart.sh"))
        .args(args)
        .env("QUICKSTART_DIR", dir())
        // the binary this test run built: no cargo build inside the test
        .env("BINLOGD_BIN", env!("CARGO_BIN_EXE_binlogd"))
        .env_remove("QUICKSTART_KEEP")
        .env_remove("RUST_LOG");
    for (k, v) in PORTS {
        c.env(k, v.to_string());
    }
    c
}

/// Stops whatever the quick start left running, also when an assertion fails.
struct StopOnDrop;
impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = script(&["stop"]).output();
    }
}

/// Runs the quick start; its stdout (panics with both outputs when it fails).
fn quickstart(args: &[&str]) -> String {
    let t0 = Instant::now();
    let out = script(args)
        .output()
        .expect("run bash scripts/quickstart.sh");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "quickstart.sh {args:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    eprintln!(
        "quickstart.sh {args:?}: {:.1}s\n{stdout}",
        t0.elapsed().as_secs_f64()
    );
    stdout
}

/// The value after `label` on the output line that contains it.
fn field<'a>(out: &'a str, label: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.split_once(label).map(|(_, v)| v.trim()))
        .unwrap_or_else(|| panic!("no line with {label:?} in:\n{out}"))
}

/// Checks everything the quick start prints about the outcome.
fn check_output(out: &str) {
    let cached = "user:1 user:email:ada@example.com user:2 user:email:bob@example.com user:3 user:email:cy@example.com";
    assert!(out.contains(cached), "cached keys not shown:\n{out}");
    // the events, in binlog order
    let events: Vec<&str> = out
        .lines()
        .map(str::trim)
        .filter(|l| {
            ["update ", "delete ", "insert "]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .collect();
    assert_eq!(events.len(), 3, "events:\n{out}");
    assert!(
        events[0].starts_with("update shop.users id=1  email: ada@example.com -> ada@example.org")
            && events[0].contains(r#"(op "u""#),
        "{}",
        events[0]
    );
    assert!(
        events[1].starts_with("delete shop.users id=2  email=bob@example.com, name=Bob"),
        "{}",
        events[1]
    );
    assert!(
        events[2].starts_with("insert shop.users id=4  email=dan@example.com, name=Dan"),
        "{}",
        events[2]
    );
    // the cache: keys of the old and the new values deleted, rows not changed left alone
    assert_eq!(
        field(out, "UNLINKed by binlogd:"),
        "user:1 user:2 user:4 user:email:ada@example.com user:email:ada@example.org \
         user:email:bob@example.com user:email:dan@example.com"
    );
    assert_eq!(
        field(out, "cached, now deleted:"),
        "user:1 user:email:ada@example.com user:2 user:email:bob@example.com"
    );
    assert_eq!(
        field(out, "cached, still there:"),
        "user:3 user:email:cy@example.com   (rows not changed)"
    );
    // Kafka: one message per row change, keyed by the primary key, in binlog order
    let msgs: Vec<(&str, &str)> = out
        .lines()
        .filter_map(|l| l.trim().strip_prefix(&format!("{TOPIC}/")))
        .map(|l| {
            let (_, rest) = l.split_once(" key ").expect(l);
            rest.split_once(" value ").expect(l)
        })
        .collect();
    let want = [
        (
            r#"{"id":1}"#,
            r#"{"op":"u","after":{"id":1,"email":"ada@example.org","name":"Ada"},…}"#,
        ),
        (
            r#"{"id":2}"#,
            r#"{"op":"d","before":{"id":2,"email":"bob@example.com","name":"Bob"},…}"#,
        ),
        (
            r#"{"id":4}"#,
            r#"{"op":"c","after":{"id":4,"email":"dan@example.com","name":"Dan"},…}"#,
        ),
    ];
    assert_eq!(msgs.len(), want.len(), "Kafka messages:\n{out}");
    for ((key, value), (wkey, wvalue)) in msgs.iter().zip(want) {
        assert_eq!(*key, wkey, "{out}");
        assert!(value.starts_with(wvalue), "{value} is not {wvalue}…");
    }
}

#[test]
fn quickstart_runs_end_to_end_and_again() {
    let _stop = StopOnDrop;
    // a clean start: whatever an earlier, interrupted run of this test left
    let _ = script(&["stop"]).output();
    let _ = std::fs::remove_dir_all(dir());

    let out = quickstart(&["--keep"]);
    check_output(&out);
    assert!(
        out.contains("bash scripts/quickstart.sh stop"),
        "--keep tells how to stop:\n{out}"
    );

    // what --keep left running, checked directly
    let mut r = redis_conn("redis://127.0.0.1:6317/");
    for k in [
        "user:1",
        "user:email:ada@example.com",
        "user:2",
        "user:email:bob@example.com",
    ] {
        assert!(!r.exists::<_, bool>(k).unwrap(), "{k} still cached");
    }
    let v: String = r.get("user:3").unwrap();
    assert!(v.contains(r#""name": "Cy""#), "user:3 = {v}");
    let id: String = r.get("user:email:cy@example.com").unwrap();
    assert_eq!(id, "3");
    let msgs = consume_all("127.0.0.1:19017", TOPIC);
    let got: Vec<(String, String, Value)> = msgs
        .iter()
        .map(|m| {
            let v = m.json().expect("a value");
            let row = if v["op"] == "d" {
                v["before"].clone()
            } else {
                v["after"].clone()
            };
            (
                String::from_utf8(m.key.clone().unwrap()).unwrap(),
                v["op"].as_str().unwrap().to_string(),
                row,
            )
        })
        .collect();
    let mut got = got;
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        vec![
            (
                r#"{"id":1}"#.to_string(),
                "u".to_string(),
                serde_json::json!({"id": 1, "email": "ada@example.org", "name": "Ada"})
            ),
            (
                r#"{"id":2}"#.to_string(),
                "d".to_string(),
                serde_json::json!({"id": 2, "email": "bob@example.com", "name": "Bob"})
            ),
            (
                r#"{"id":4}"#.to_string(),
                "c".to_string(),
                serde_json::json!({"id": 4, "email": "dan@example.com", "name": "Dan"})
            ),
        ]
    );
    drop(r);

    // again, on the instances the first run left running; this time everything stops
    let out = quickstart(&[]);
    check_output(&out);
    for (name, port) in PORTS {
        assert!(
            !port_open(port),
            "{name} {port} still open after the quick start"
        );
    }
    assert!(!dir().join("binlogd.pid").exists(), "binlogd pid file left");
}
