//! Running it as a sidecar: /metrics under load (counters move, lag rises while a sink is
//! blocked and falls after), /readyz (active, sink down, standby), /healthz, SIGTERM under load,
//! SIGHUP reload, and no secret in logs, check output or metrics.

mod common;

use common::*;
use mysql_async::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Inserts into `db.t` every few ms until `stop`.
fn writer(f: Flavor, db: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        rt_small().block_on(async {
            let mut c = root(f).await;
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                c.query_drop(format!("INSERT INTO `{db}`.t VALUES ({i}, {i})"))
                    .await
                    .unwrap();
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            i
        })
    })
}

#[test]
fn metrics_lag_and_readiness_under_load() {
    let f = Flavor::MariaDb;
    let rt = rt();
    let name = "opsmetrics";
    let dir = workdir(name);
    let mut redis = PrivateRedis::start(&dir, 6404);
    let mut c = rt.block_on(root(f));
    let start = rt.block_on(fresh_table(
        &mut c,
        f,
        name,
        &["t (id INT PRIMARY KEY, v INT)"],
    ));
    let cfg = config(f, name, name, &start, &dir, "").replace(
        "[admin]\n",
        "[admin]\nlag_interval = \"500ms\"\nprogress_threshold = \"1s\"\n",
    ) + &format!(
        "[[sinks.redis]]\nname = \"cache\"\nurl = \"{}\"\ntimeout = \"300ms\"\nretry_backoff_max = \"300ms\"\n[[sinks.redis.rules]]\ntable = \"{name}.t\"\nkeys = [\"t:{{id}}\"]\n",
        redis.url()
    );
    let mut d = Daemon::start(&dir, &cfg);
    let addr = d.admin_addr();
    assert_eq!(http_get(&addr, "/healthz"), (200, "ok\n".into()));
    wait_until("ready", Duration::from_secs(20), || {
        http_get(&addr, "/readyz").0 == 200
    });
    let (_, body) = http_get(&addr, "/readyz");
    assert!(body.contains("\"active\":true"), "{body}");

    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(f, name.to_string(), stop.clone());
    let rows = format!("binlogd_rows_total{{db=\"{name}\",table=\"t\",op=\"c\"}}");
    wait_until("rows counted", Duration::from_secs(20), || {
        metric(&http_get(&addr, "/metrics").1, &rows).unwrap_or(0.0) > 50.0
    });
    let (_, m1) = http_get(&addr, "/metrics");
    std::thread::sleep(Duration::from_secs(1));
    let (code, m2) = http_get(&addr, "/metrics");
    assert_eq!(code, 200);
    assert!(
        metric(&m2, &rows).unwrap() > metric(&m1, &rows).unwrap(),
        "rows counter moves"
    );
    for prefix in [
        "binlogd_source_connected 1",
        "binlogd_active 1",
        "binlogd_acked_position{file=\"",
        "binlogd_binlog_events_total ",
        "binlogd_binlog_bytes_total ",
        "binlogd_lag_seconds ",
        "binlogd_lag_bytes ",
        "binlogd_checkpoint_age_seconds ",
        "binlogd_sink_rows_acked_total{sink=\"cache\"} ",
        "binlogd_sink_rows_acked_total{sink=\"out\"} ",
        "binlogd_sink_batch_seconds_bucket{",
        "binlogd_redis_keys_deleted_total{sink=\"cache\"} ",
        "binlogd_sink_ready{sink=\"cache\"} 1",
    ] {
        assert!(
            m2.lines().any(|l| l.starts_with(prefix)),
            "{prefix} missing:\n{m2}"
        );
    }
    let lag0 = metric(&m2, "binlogd_lag_seconds ").unwrap();
    assert!(lag0 < 3.0, "lag while keeping up: {lag0}");

    // Redis down: the Redis sink retries, nothing is acknowledged, lag grows, unready
    redis.kill();
    wait_until(
        "lag above 3 s while Redis is down",
        Duration::from_secs(20),
        || metric(&http_get(&addr, "/metrics").1, "binlogd_lag_seconds ").unwrap_or(0.0) > 3.0,
    );
    let (code, body) = http_get(&addr, "/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("cache"), "{body}");
    let (_, m3) = http_get(&addr, "/metrics");
    assert!(metric(&m3, "binlogd_sink_retries_total{sink=\"cache\"}").unwrap_or(0.0) > 0.0);
    assert!(
        metric(&m3, "binlogd_lag_bytes ").unwrap_or(0.0) > 0.0,
        "{m3}"
    );
    redis.restart();
    wait_until("lag back down", Duration::from_secs(30), || {
        metric(&http_get(&addr, "/metrics").1, "binlogd_lag_seconds ").unwrap_or(99.0) < 2.5
    });
    wait_until("ready again", Duration::from_secs(20), || {
        http_get(&addr, "/readyz").0 == 200
    });
    let log = d.log_all();
    assert!(log.contains("catching up"), "catch-up progress logged");

    // a standby for the same pipeline says so
    let sdir = dir.join("standby");
    std::fs::create_dir_all(&sdir).unwrap();
    let mut standby = Daemon::start_with_env(&sdir, &cfg, &[]);
    let saddr = standby.admin_addr();
    wait_until("standby reports standby", Duration::from_secs(20), || {
        let (code, body) = http_get(&saddr, "/readyz");
        code == 503 && body.contains("standby")
    });
    assert!(http_get(&saddr, "/metrics").1.contains("binlogd_active 0"));
    assert_eq!(http_get(&saddr, "/healthz").0, 200);
    assert_eq!(standby.stop(), Some(0));

    // SIGTERM under load: drains, stores, exits 0 quickly
    let t0 = Instant::now();
    assert_eq!(d.stop(), Some(0));
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "stopped in {:?}",
        t0.elapsed()
    );
    stop.store(true, Ordering::Relaxed);
    w.join().unwrap();
}

/// SIGHUP re-reads the config: a new include list applies from the next transaction, a new
/// log level applies, and a changed sink is reported as needing a restart.
#[test]
fn sighup_reloads_filters_and_level() {
    let f = Flavor::MySql;
    let name = "opshup";
    let Scenario {
        rt,
        dir,
        mut c,
        start,
        ..
    } = Scenario::new(
        f,
        name,
        &["a (id INT PRIMARY KEY)", "b (id INT PRIMARY KEY)"],
    );
    let cfg = config(f, name, name, &start, &dir, "")
        .replace(
            &format!("include = [\"{name}.*\"]"),
            &format!("include = [\"{name}.a\"]"),
        )
        .replace("[log]\n", "[log]\nlevel = \"info\"\n");
    let mut d = Daemon::start_with_env(&dir, &cfg, &[("RUST_LOG", "")]);
    let _ = d.admin_addr();
    rt.block_on(async {
        exec_all(
            &mut c,
            &[
                format!("INSERT INTO `{name}`.a VALUES (1)"),
                format!("INSERT INTO `{name}`.b VALUES (1)"),
                format!("INSERT INTO `{name}`.a VALUES (2)"),
            ],
        )
        .await;
    });
    let ev = d.wait_events(2, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(d.events().len(), 2, "b is filtered out");
    assert!(ev.iter().all(|e| e["source"]["table"] == "a"));
    // widen the filter, lower the level to debug, and change a sink (restart needed)
    let new = cfg
        .replace(
            &format!("include = [\"{name}.a\"]"),
            &format!("include = [\"{name}.*\"]"),
        )
        .replace("level = \"info\"", "level = \"binlogd=debug\"")
        .replace("name = \"out\"", "name = \"out\"\nfsync = true");
    std::fs::write(&d.config, new).unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-HUP", &d.child.id().to_string()])
        .status();
    wait_until("reload logged", Duration::from_secs(10), || {
        std::fs::read_to_string(&d.log)
            .unwrap()
            .contains("configuration reloaded")
    });
    rt.block_on(async {
        c.query_drop(format!("INSERT INTO `{name}`.b VALUES (2)"))
            .await
            .unwrap();
    });
    let ev = d.wait_events(3, Duration::from_secs(20));
    assert_eq!(ev[2]["source"]["table"], "b", "b streams after the reload");
    assert_eq!(ev[2]["after"]["id"], 2);
    let log = d.log_all();
    assert!(
        log.contains("take effect only after a restart") && log.contains("sinks"),
        "{}",
        d.log_text()
    );
    assert!(
        log.contains("\"level\":\"DEBUG\""),
        "debug logging after the reload"
    );
    assert_eq!(d.stop(), Some(0));
}

/// Passwords from the config file, the environment and a Redis URL never appear in logs (at
/// debug level), in `binlogd check` output, or in /metrics — also when authentication fails.
#[test]
fn no_secret_in_logs_check_or_metrics() {
    let f = Flavor::MariaDb;
    let rt = rt();
    let name = "opssecret";
    let dir = workdir(name);
    let mysql_pw = "Zq8-MySQL-S3cret-pw";
    let redis_pw = "Rq7-Redis-S3cret-pw";
    let wrong_pw = "Wq6-Wrong-S3cret-pw";
    let redis = PrivateRedis::start_with_password(&dir, 6405, Some(redis_pw));
    let mut c = rt.block_on(root(f));
    rt.block_on(async {
        fresh_tables(&mut c, name, &["t (id INT PRIMARY KEY, v INT)"]).await;
        exec_all(
            &mut c,
            &[
                "DROP USER IF EXISTS 'secretuser'@'%'".to_string(),
                format!("CREATE USER 'secretuser'@'%' IDENTIFIED BY '{mysql_pw}'"),
                "GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO 'secretuser'@'%'"
                    .to_string(),
                "GRANT CREATE, SELECT, INSERT, UPDATE, DELETE ON binlogd.* TO 'secretuser'@'%'"
                    .to_string(),
            ],
        )
        .await;
    });
    let start = rt.block_on(binlog_end(&mut c, f));
    let port = f.port();
    let base = config_for(
        &format!("mysql://secretuser@127.0.0.1:{port}"),
        f,
        name,
        name,
        &start,
        &dir,
        "",
    ) + &format!(
        "[[sinks.redis]]\nname = \"cache\"\nurl = \"{}\"\n[[sinks.redis.rules]]\ntable = \"{name}.t\"\nkeys = [\"t:{{id}}\"]\n",
        redis.url()
    );
    // the password in the environment
    let path = dir.join("binlogd.toml");
    std::fs::write(&path, &base).unwrap();
    let (code, check_out) = run_binlogd_env(
        &["check", "-c", path.to_str().unwrap()],
        &[("BINLOGD__SOURCE__PASSWORD", mysql_pw)],
    );
    assert_eq!(code, 0, "{check_out}");
    let mut d = Daemon::start_with_env(
        &dir,
        &base,
        &[
            ("BINLOGD__SOURCE__PASSWORD", mysql_pw),
            ("RUST_LOG", "debug"),
        ],
    );
    let addr = d.admin_addr();
    rt.block_on(async {
        for i in 0..20 {
            c.query_drop(format!("INSERT INTO `{name}`.t VALUES ({i}, 0)"))
                .await
                .unwrap();
        }
    });
    d.wait_events(20, Duration::from_secs(30));
    let metrics = http_get(&addr, "/metrics").1;
    assert_eq!(d.stop(), Some(0));
    // the password in the config file, and a wrong one
    let in_file = base.replace(
        &format!("mysql://secretuser@127.0.0.1:{port}"),
        &format!("mysql://secretuser:{wrong_pw}@127.0.0.1:{port}"),
    );
    std::fs::write(&path, &in_file).unwrap();
    let (code, wrong_out) = run_binlogd(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{wrong_out}");
    assert!(
        wrong_out.contains("***"),
        "the URL is shown redacted: {wrong_out}"
    );
    // the password in a file (`password_file`, e.g. a mounted Kubernetes secret)
    let pw_file = dir.join("mysql.pw");
    std::fs::write(&pw_file, format!("{mysql_pw}\n")).unwrap();
    let with_file = base.replacen(
        "[source]\n",
        &format!("[source]\npassword_file = \"{}\"\n", pw_file.display()),
        1,
    );
    assert!(with_file.contains("password_file"));
    std::fs::write(&path, &with_file).unwrap();
    let (code, file_out) = run_binlogd(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 0, "check with password_file: {file_out}");
    // a missing password file is named, with the fix
    std::fs::write(&path, with_file.replace("mysql.pw", "missing.pw")).unwrap();
    let (code, missing_out) = run_binlogd(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{missing_out}");
    assert!(missing_out.contains("missing.pw"), "{missing_out}");
    let log = d.log_all();
    assert!(
        log.len() > 1000 && log.contains("DEBUG"),
        "a debug log was captured"
    );
    for (what, text) in [
        ("log", &log),
        ("check", &check_out),
        ("check with a wrong password", &wrong_out),
        ("check with password_file", &file_out),
        ("metrics", &metrics),
    ] {
        for pw in [mysql_pw, redis_pw, wrong_pw] {
            assert!(!text.contains(pw), "{pw} appears in the {what}");
        }
    }
}
