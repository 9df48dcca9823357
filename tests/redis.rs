//! Redis sink against real Redis 7 and real MariaDB / MySQL 9.7: rule shapes, startup errors,
//! Redis restarts under load, second deletes, and cache consistency with a lagging replica.

mod common;

use common::*;
use mysql_async::prelude::*;
use redis::Commands;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Waits until `key` is gone (the daemon processed everything before the write that
/// invalidates it); panics with the daemon log otherwise.
fn wait_gone(r: &mut redis::Connection, key: &str, d: &mut Daemon, timeout: Duration) {
    let t0 = Instant::now();
    while redis_exists(r, key) {
        if let Ok(Some(st)) = d.child.try_wait() {
            panic!("binlogd exited ({st}); log:\n{}", d.log_text());
        }
        assert!(
            t0.elapsed() < timeout,
            "{key} still in Redis after {timeout:?}; log:\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes sentinel row `n` (its rule deletes `{p}:sentinel:{n}`) and waits for the key to go:
/// every change before it has been handled by the Redis sink.
fn barrier(
    rt: &tokio::runtime::Runtime,
    c: &mut mysql_async::Conn,
    r: &mut redis::Connection,
    d: &mut Daemon,
    db: &str,
    p: &str,
    n: u32,
) {
    let key = format!("{p}:sentinel:{n}");
    let _: () = r.set(&key, 1).unwrap();
    rt.block_on(c.query_drop(format!("INSERT INTO `{db}`.sentinel VALUES ({n})")))
        .unwrap();
    wait_gone(r, &key, d, Duration::from_secs(30));
}

fn sentinel_rule(db: &str, p: &str) -> String {
    format!("[[sinks.redis.rules]]\ntable = \"{db}.sentinel\"\nkeys = [\"{p}:sentinel:{{id}}\"]\n")
}

fn rule_shapes(f: Flavor) {
    let rt = rt();
    let name = format!("rshapes_{}", f.tag());
    let p = name.as_str();
    let dir = workdir(&name);
    let mut c = rt.block_on(root(f));
    let start = rt.block_on(fresh_table(
        &mut c,
        f,
        &name,
        &[
            "users (id INT PRIMARY KEY, email VARCHAR(100) NULL, name VARCHAR(50))",
            "orders (tenant VARCHAR(10), id INT, note VARCHAR(10), PRIMARY KEY (tenant, id))",
            "items_a (id INT PRIMARY KEY)",
            "items_b (id INT PRIMARY KEY)",
            "other (id INT PRIMARY KEY)",
            "prices (id INT PRIMARY KEY, amount DECIMAL(10,2), code VARBINARY(8))",
            "sentinel (id INT PRIMARY KEY)",
        ],
    ));
    let url = redis_url();
    let cfg = config(f, &name, &name, &start, &dir, "")
        + &format!(
            r#"
[[sinks.redis]]
name = "cache"
url = "{url}"
[[sinks.redis.rules]]
table = "{db}.users"
keys = ["{p}:user:{{id}}", "{p}:user:email:{{email}}", "{p}:users:list"]
[[sinks.redis.rules]]
table = "{db}.orders"
keys = ["{p}:order:{{tenant}}:{{id}}"]
[[sinks.redis.rules]]
table = "{db}.items_*"
keys = ["{p}:item:{{id}}"]
[[sinks.redis.rules]]
table = "{db}.prices"
keys = ["{p}:price:{{amount}}", "{p}:code:{{code}}"]
{sentinel}"#,
            db = name,
            sentinel = sentinel_rule(&name, p)
        );
    let mut d = Daemon::start(&dir, &cfg);
    let mut r = redis_conn(&url);
    rt.block_on(async {
        exec_all(
            &mut c,
            &[
                format!("USE `{name}`"),
                "INSERT INTO users VALUES (1, 'a@x', 'n1'), (3, NULL, 'n3')".to_string(),
                "INSERT INTO orders VALUES ('t1', 5, 'x')".to_string(),
            ],
        )
        .await;
    });
    barrier(&rt, &mut c, &mut r, &mut d, &name, p, 1);

    let gone = [
        "user:1",
        "user:email:a@x",
        "user:email:b@x",
        "users:list",
        "user:3",
        "order:t1:5",
        "item:7",
        "item:8",
        "price:12.50",
        "code:AQI=",
    ];
    let kept = [
        "user:999",
        "other:1",
        "user:email:",
        "user:email:null",
        "order:t1:6",
    ];
    for k in gone.iter().chain(kept.iter()) {
        let _: () = r.set(format!("{p}:{k}"), "cached").unwrap();
    }
    rt.block_on(async {
        // key column changed: the old and the new key go
        c.query_drop("UPDATE users SET email = 'b@x' WHERE id = 1")
            .await
            .unwrap();
        // NULL in a key column: that key is skipped, the others go
        c.query_drop("UPDATE users SET name = 'z' WHERE id = 3")
            .await
            .unwrap();
        // composite key, delete: from the before image
        c.query_drop("DELETE FROM orders WHERE tenant = 't1' AND id = 5")
            .await
            .unwrap();
        // glob table pattern
        exec_all(
            &mut c,
            &[
                "INSERT INTO items_a VALUES (7)".to_string(),
                "INSERT INTO items_b VALUES (8)".to_string(),
            ],
        )
        .await;
        // rendering as in the event format: exact DECIMAL, binary as base64
        c.query_drop("INSERT INTO prices VALUES (1, 12.50, 0x0102)")
            .await
            .unwrap();
        // a table without a rule
        c.query_drop("INSERT INTO other VALUES (1)").await.unwrap();
    });
    barrier(&rt, &mut c, &mut r, &mut d, &name, p, 2);
    for k in gone {
        assert!(
            !redis_exists(&mut r, &format!("{p}:{k}")),
            "{k} should be gone"
        );
    }
    for k in kept {
        assert!(
            redis_exists(&mut r, &format!("{p}:{k}")),
            "{k} should be kept"
        );
    }
    // the file sink saw the same changes
    let ev = d.events();
    assert!(ev.iter().any(|e| e["source"]["table"] == "other"));
    assert_eq!(d.stop(), Some(0));
}

both_flavors!(rule_shapes: rule_shapes_mariadb(), rule_shapes_mysql());

fn unlink_calls(r: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(r).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_unlink:calls="))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A table without a rule causes no Redis traffic at all (private Redis: exact command counts).
#[test]
fn no_rule_no_traffic() {
    let f = Flavor::MariaDb;
    let rt = rt();
    let name = "rnotraffic";
    let dir = workdir(name);
    let redis = PrivateRedis::start(&dir, 6401);
    let mut c = rt.block_on(root(f));
    let start = rt.block_on(fresh_table(
        &mut c,
        f,
        name,
        &[
            "other (id INT PRIMARY KEY)",
            "sentinel (id INT PRIMARY KEY)",
        ],
    ));
    let cfg = config(f, name, name, &start, &dir, "")
        + &format!(
            "[[sinks.redis]]\nname = \"cache\"\nurl = \"{}\"\n{}",
            redis.url(),
            sentinel_rule(name, name)
        );
    let mut d = Daemon::start(&dir, &cfg);
    let mut r = redis.conn();
    rt.block_on(async {
        for i in 0..200 {
            c.query_drop(format!("INSERT INTO `{name}`.other VALUES ({i})"))
                .await
                .unwrap();
        }
    });
    d.wait_events(200, Duration::from_secs(30));
    let before = unlink_calls(&mut r);
    barrier(&rt, &mut c, &mut r, &mut d, name, name, 1);
    assert_eq!(before, 0, "no UNLINK for a table without a rule");
    assert_eq!(
        unlink_calls(&mut r),
        1,
        "exactly one UNLINK for the sentinel row"
    );
    assert_eq!(d.stop(), Some(0));
}

/// A template naming a column the table does not have: `run` refuses to start and `check`
/// reports it, naming template, table and column.
#[test]
fn unknown_template_column() {
    let f = Flavor::MariaDb;
    let name = "rbadcol";
    let Scenario { dir, start, .. } =
        Scenario::new(f, name, &["users (id INT PRIMARY KEY, email VARCHAR(50))"]);
    let cfg = config(f, name, name, &start, &dir, "")
        + &format!(
            "[[sinks.redis]]\nname = \"cache\"\nurl = \"{}\"\n[[sinks.redis.rules]]\ntable = \"{name}.users\"\nkeys = [\"user:{{id}}\", \"user:mail:{{mail}}\"]\n",
            redis_url()
        );
    let path = dir.join("binlogd.toml");
    std::fs::write(&path, &cfg).unwrap();
    let p = path.to_str().unwrap();
    for verb in ["check", "run"] {
        let (code, out) = run_binlogd(&[verb, "-c", p]);
        assert_eq!(code, 2, "{verb}: a config mistake: {out}");
        assert!(
            out.contains("\"user:mail:{mail}\"")
                && out.contains("\"mail\"")
                && out.contains(&format!("{name}.users"))
                && out.contains("columns: id, email"),
            "{verb}: {out}"
        );
    }
    // a bad template syntax is a config error (exit 2)
    std::fs::write(&path, cfg.replace("user:{id}", "user:{id")).unwrap();
    let (code, out) = run_binlogd(&["check", "-c", p]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("unclosed '{'"), "{out}");
}

/// Redis killed (-9) and restarted under a steady write load: the sink retries, nothing is
/// acknowledged while Redis is down (the stored position does not move), and afterwards every
/// key that should be gone is gone.
fn redis_restart(f: Flavor, port: u16) {
    let rt = rt();
    let name = format!("rrestart_{}", f.tag());
    let p = name.clone();
    let dir = workdir(&name);
    let mut redis = PrivateRedis::start(&dir, port);
    let mut c = rt.block_on(root(f));
    let start = rt.block_on(fresh_table(
        &mut c,
        f,
        &name,
        &[
            "users (id INT PRIMARY KEY, v INT)",
            "sentinel (id INT PRIMARY KEY)",
        ],
    ));
    let cfg = config(f, &name, &name, &start, &dir, "")
        + &format!(
            "[[sinks.redis]]\nname = \"cache\"\nurl = \"{url}\"\ntimeout = \"500ms\"\nretry_backoff_max = \"500ms\"\n[[sinks.redis.rules]]\ntable = \"{name}.users\"\nkeys = [\"{p}:user:{{id}}\"]\n{s}",
            url = redis.url(),
            s = sentinel_rule(&name, &p)
        );
    const N: u32 = 3000;
    {
        let mut r = redis.conn();
        let mut pipe = redis::pipe();
        for i in 0..N {
            pipe.set(format!("{p}:user:{i}"), "cached").ignore();
        }
        let _: () = pipe.query(&mut r).unwrap();
    }
    let mut d = Daemon::start(&dir, &cfg);
    let pipeline = format!("{name}_{}", f.tag());
    let stored = |c: &mut mysql_async::Conn| -> Option<(String, u64)> {
        rt.block_on(c.exec_first(
            "SELECT binlog_file, binlog_pos FROM binlogd.checkpoint WHERE pipeline = ?",
            (pipeline.as_str(),),
        ))
        .unwrap()
    };
    // writer: N single-row transactions, ~2 ms apart
    let done = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (done, written, name) = (done.clone(), written.clone(), name.clone());
        std::thread::spawn(move || {
            rt_small().block_on(async {
                let mut c = root(f).await;
                for i in 0..N {
                    c.query_drop(format!("INSERT INTO `{name}`.users VALUES ({i}, {i})"))
                        .await
                        .unwrap();
                    written.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            });
            done.store(true, Ordering::Relaxed);
        })
    };
    while written.load(Ordering::Relaxed) < (N / 4) as u64 {
        std::thread::sleep(Duration::from_millis(10));
    }
    redis.kill();
    let killed_at = written.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(1)); // acks from before the kill get stored
    let p1 = stored(&mut c);
    std::thread::sleep(Duration::from_secs(2));
    let p2 = stored(&mut c);
    let during = written.load(Ordering::Relaxed) - killed_at;
    assert!(during > 100, "the writer kept writing while Redis was down");
    assert_eq!(
        p1, p2,
        "the stored position moved while Redis was down ({during} rows written meanwhile)"
    );
    assert!(d.child.try_wait().unwrap().is_none(), "binlogd stays up");
    redis.restart();
    writer.join().unwrap();
    assert!(done.load(Ordering::Relaxed));
    let mut r = redis.conn();
    barrier(&rt, &mut c, &mut r, &mut d, &name, &p, 1);
    let left: Vec<u32> = (0..N)
        .filter(|i| redis_exists(&mut r, &format!("{p}:user:{i}")))
        .collect();
    assert!(
        left.is_empty(),
        "keys still cached after catch-up: {left:?}"
    );
    assert_ne!(
        stored(&mut c),
        p2,
        "position moves again after Redis is back"
    );
    let log = d.log_all();
    assert!(log.contains("retrying"), "retries are logged");
    assert_eq!(d.stop(), Some(0));
}

both_flavors!(redis_restart: redis_restart_mariadb(6402), redis_restart_mysql(6403));

/// `second_delete = "300ms"`: a key re-filled right after the first delete (the stale-read
/// race) is deleted again; one filled well after the second delete stays.
#[test]
fn second_delete_fixed_delay() {
    let f = Flavor::MySql;
    let name = "rsecond";
    let Scenario {
        rt,
        dir,
        mut c,
        start,
        ..
    } = Scenario::new(
        f,
        name,
        &[
            "users (id INT PRIMARY KEY, v INT)",
            "sentinel (id INT PRIMARY KEY)",
        ],
    );
    let url = redis_url();
    let cfg = config(f, name, name, &start, &dir, "")
        + &format!(
            "[[sinks.redis]]\nname = \"cache\"\nurl = \"{url}\"\n[[sinks.redis.rules]]\ntable = \"{name}.users\"\nkeys = [\"{name}:user:{{id}}\"]\nsecond_delete = \"300ms\"\n{}",
            sentinel_rule(name, name)
        );
    let mut d = Daemon::start(&dir, &cfg);
    let mut r = redis_conn(&url);
    let key = format!("{name}:user:1");
    let _: () = r.set(&key, "old").unwrap();
    rt.block_on(c.query_drop(format!("INSERT INTO `{name}`.users VALUES (1, 1)")))
        .unwrap();
    wait_gone(&mut r, &key, &mut d, Duration::from_secs(30));
    let t_first = Instant::now();
    let _: () = r.set(&key, "stale").unwrap(); // a reader re-filled from a lagging replica
    wait_gone(&mut r, &key, &mut d, Duration::from_secs(5));
    let gap = t_first.elapsed();
    assert!(
        gap >= Duration::from_millis(250),
        "second delete came after the delay, not at once ({gap:?})"
    );
    std::thread::sleep(Duration::from_millis(600));
    let _: () = r.set(&key, "fresh").unwrap();
    std::thread::sleep(Duration::from_millis(600));
    assert!(redis_exists(&mut r, &key), "no third delete");
    assert_eq!(d.stop(), Some(0));
}

/// The cache-consistency test from the seeds: a primary and a real replica with replication
/// delay; writers update rows on the primary; readers do read-through caching from the
/// replica. After the writers stop and everything settles, count cache entries that differ
/// from the primary, for: no second delete, a fixed 300 ms delay, and `after-replicas`.
fn cache_consistency(f: Flavor, ports: (u16, u16)) {
    let rt = rt();
    let name = format!("rconsist_{}", f.tag());
    let dir = workdir(&name);
    let primary = PrivateServer::start(f, &dir.join("primary"), ports.0, &["--server-id=1"]);
    let replica = PrivateServer::start(f, &dir.join("replica"), ports.1, &["--server-id=2"]);
    let mut pc = rt.block_on(root_at(&primary.root_url()));
    let mut rc = rt.block_on(root_at(&replica.root_url()));
    const ROWS: u32 = 50;
    rt.block_on(async {
        pc.query_drop("CREATE DATABASE shop").await.unwrap();
        pc.query_drop("CREATE TABLE shop.items (id INT PRIMARY KEY, v BIGINT NOT NULL)")
            .await
            .unwrap();
        pc.query_drop("CREATE TABLE shop.sentinel (id INT PRIMARY KEY)")
            .await
            .unwrap();
        let values: Vec<String> = (0..ROWS).map(|i| format!("({i}, 0)")).collect();
        pc.query_drop(format!("INSERT INTO shop.items VALUES {}", values.join(",")))
            .await
            .unwrap();
        let setup = match f {
            Flavor::MariaDb => format!(
                "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='root', \
                 MASTER_USE_GTID=slave_pos, MASTER_DELAY=1",
                ports.0
            ),
            Flavor::MySql => format!(
                "CHANGE REPLICATION SOURCE TO SOURCE_HOST='127.0.0.1', SOURCE_PORT={}, \
                 SOURCE_USER='root', SOURCE_AUTO_POSITION=1, SOURCE_DELAY=1, GET_SOURCE_PUBLIC_KEY=1",
                ports.0
            ),
        };
        rc.query_drop(setup).await.unwrap();
        rc.query_drop(match f {
            Flavor::MariaDb => "START SLAVE",
            Flavor::MySql => "START REPLICA",
        })
        .await
        .unwrap();
        // wait until the replica has the table and rows
        let t0 = Instant::now();
        loop {
            let n: Option<u64> = rc
                .query_first("SELECT COUNT(*) FROM shop.items")
                .await
                .unwrap_or(None);
            if n == Some(ROWS as u64) {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(60), "replica never caught up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let url = redis_url();
    let mut results = Vec::new();
    for (n, (mode, second)) in [
        ("none", ""),
        ("fixed_300ms", "second_delete = \"300ms\"\n"),
        ("after_replicas", "second_delete = \"after-replicas\"\n"),
    ]
    .into_iter()
    .enumerate()
    {
        let p = format!("{name}:{mode}");
        let start = rt.block_on(binlog_end(&mut pc, f));
        let mdir = dir.join(mode);
        std::fs::create_dir_all(&mdir).unwrap();
        let cfg = config_for(&primary.cdc_url(), f, &format!("{name}_{mode}"), "shop", &start, &mdir, "")
            + &format!(
                "[[sinks.redis]]\nname = \"cache\"\nurl = \"{url}\"\nreplicas = [\"{rep}\"]\n\
                 [[sinks.redis.rules]]\ntable = \"shop.items\"\nkeys = [\"{p}:item:{{id}}\"]\n{second}{s}",
                rep = replica.root_url(),
                s = sentinel_rule("shop", &p)
            );
        let mut d = Daemon::start(&mdir, &cfg);
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        // writer: updates random rows on the primary
        {
            let purl = primary.root_url();
            handles.push(std::thread::spawn(move || {
                rt_small().block_on(async {
                    let mut c = root_at(&purl).await;
                    let mut x: u64 = 0x9e3779b97f4a7c15;
                    let t0 = Instant::now();
                    while t0.elapsed() < Duration::from_secs(4) {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let id = x % ROWS as u64;
                        c.exec_drop("UPDATE shop.items SET v = v + 1 WHERE id = ?", (id,))
                            .await
                            .unwrap();
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                });
            }));
        }
        // readers: read-through cache from the replica
        for t in 0..4u64 {
            let (stop, rurl, url, p) = (stop.clone(), replica.root_url(), url.clone(), p.clone());
            handles.push(std::thread::spawn(move || {
                rt_small().block_on(async {
                    let mut c = root_at(&rurl).await;
                    let mut r = redis_conn(&url);
                    let mut i = t;
                    while !stop.load(Ordering::Relaxed) {
                        i = (i + 7) % ROWS as u64;
                        let key = format!("{p}:item:{i}");
                        let cached: Option<i64> = r.get(&key).unwrap();
                        if cached.is_none() {
                            let v: Option<i64> = c
                                .exec_first("SELECT v FROM shop.items WHERE id = ?", (i,))
                                .await
                                .unwrap();
                            if let Some(v) = v {
                                let _: () = r.set(&key, v).unwrap();
                            }
                        }
                        tokio::time::sleep(Duration::from_micros(200)).await;
                    }
                });
            }));
        }
        handles.remove(0).join().unwrap(); // the writer ran 4 s
                                           // readers go on while the replica catches up (delay 1 s), then stop
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            h.join().unwrap();
        }
        let mut r = redis_conn(&url);
        barrier(&rt, &mut pc, &mut r, &mut d, "shop", &p, n as u32 + 1);
        std::thread::sleep(Duration::from_millis(1500)); // second deletes still queued
        let truth: Vec<(u32, i64)> = rt
            .block_on(pc.query("SELECT id, v FROM shop.items ORDER BY id"))
            .unwrap();
        let stale = truth
            .iter()
            .filter(|(id, v)| {
                let cached: Option<i64> = r.get(format!("{p}:item:{id}")).unwrap();
                cached.is_some_and(|c| c != *v)
            })
            .count();
        println!("cache consistency ({f:?}, replica delay 1 s): second_delete={mode}: {stale} stale key(s) of {ROWS}");
        results.push((mode, stale));
        if mode == "after_replicas" {
            // the waits really succeeded (a timed-out wait also deletes, later)
            let log = d.log_all();
            assert!(log.contains("replicas caught up"), "{}", d.log_text());
            assert!(!log.contains("deleting anyway"), "{}", d.log_text());
        }
        assert_eq!(d.stop(), Some(0));
    }
    let none = results[0].1;
    let after = results[2].1;
    assert_eq!(after, 0, "after-replicas leaves no stale key: {results:?}");
    assert!(
        none > 0,
        "without a second delete the race must show (else the test proves nothing): {results:?}"
    );
}

both_flavors!(cache_consistency: cache_consistency_mariadb((3350, 3351)), cache_consistency_mysql((3352, 3353)));

/// A 3-master Redis Cluster (private processes): keys spread over all slots are grouped by
/// slot (hash tags respected), so every command goes to one node and all keys go.
#[test]
fn redis_cluster() {
    let f = Flavor::MariaDb;
    let rt = rt();
    let name = "rcluster";
    let dir = workdir(name);
    let ports = [7101u16, 7102, 7103];
    let mut nodes = Vec::new();
    for port in ports {
        let d = dir.join(format!("node{port}"));
        std::fs::create_dir_all(&d).unwrap();
        nodes.push(ChildGuard(
            std::process::Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .arg("--dir")
                .arg(&d)
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        ));
    }
    for port in ports {
        let _ = redis_conn(&format!("redis://127.0.0.1:{port}/"));
    }
    let st = std::process::Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(ports.map(|p| format!("127.0.0.1:{p}")))
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "redis-cli --cluster create");
    let urls: Vec<String> = ports
        .iter()
        .map(|p| format!("\"redis://127.0.0.1:{p}/\""))
        .collect();
    let cluster = redis::cluster::ClusterClient::new(
        ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}/"))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let t0 = Instant::now();
    let mut rc = loop {
        let ok = ports.iter().all(|p| {
            let mut c = redis_conn(&format!("redis://127.0.0.1:{p}/"));
            let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut c).unwrap();
            info.contains("cluster_state:ok")
        });
        if ok {
            if let Ok(c) = cluster.get_connection() {
                break c;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "cluster never became ok"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut c = rt.block_on(root(f));
    let start = rt.block_on(fresh_table(
        &mut c,
        f,
        name,
        &["users (id INT PRIMARY KEY, tenant INT)"],
    ));
    let cfg = config(f, name, name, &start, &dir, "")
        + &format!(
            "[[sinks.redis]]\nname = \"cache\"\nurl = [{}]\n[[sinks.redis.rules]]\ntable = \"{name}.users\"\nkeys = [\"user:{{id}}\", \"t:{{{{{{tenant}}}}}}:user:{{id}}\"]\n",
            urls.join(", ")
        );
    const N: u32 = 2000;
    let mut slots = std::collections::HashSet::new();
    for i in 0..N {
        let k1 = format!("user:{i}");
        let k2 = format!("t:{{{}}}:user:{i}", i % 10);
        let _: () = rc.set(&k1, 1).unwrap();
        let _: () = rc.set(&k2, 1).unwrap();
        slots.insert(binlogd::sinks::redis::client::slot(k1.as_bytes()));
    }
    assert!(slots.len() > 1000, "keys spread over many slots");
    let mut d = Daemon::start(&dir, &cfg);
    rt.block_on(async {
        let values: Vec<String> = (0..N).map(|i| format!("({i}, {})", i % 10)).collect();
        c.query_drop(format!(
            "INSERT INTO `{name}`.users VALUES {}",
            values.join(",")
        ))
        .await
        .unwrap();
    });
    let t0 = Instant::now();
    loop {
        let left = (0..N)
            .filter(|i| {
                let a: bool = rc.exists(format!("user:{i}")).unwrap();
                let b: bool = rc.exists(format!("t:{{{}}}:user:{i}", i % 10)).unwrap();
                a || b
            })
            .count();
        if left == 0 {
            break;
        }
        if let Ok(Some(st)) = d.child.try_wait() {
            panic!("binlogd exited ({st}); log:\n{}", d.log_text());
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{left} keys left; log:\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = d.log_all();
    assert!(!log.contains("CROSSSLOT"), "{}", d.log_text());
    assert!(
        !log.contains("retrying"),
        "no failed command: {}",
        d.log_text()
    );
    assert_eq!(d.stop(), Some(0));
}

struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
