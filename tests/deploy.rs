//! The deploy files parse and say what the README promises: a multi-stage Dockerfile with a
//! non-root runtime user; a compose file wiring MySQL 8.4, Redis, Kafka and binlogd; a
//! Kubernetes sidecar with liveness/readiness probes, ConfigMap config and Secret password;
//! and every binlogd config embedded in them loads. Also: the README's configuration
//! reference names every key of config/binlogd.example.toml.

use binlogd::config::Config;
use serde_yaml::Value;
use std::path::{Path, PathBuf};

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn load_config(text: &str, what: &str) -> Config {
    Config::from_toml_str(text, Path::new(what), std::iter::empty())
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

#[test]
fn dockerfile_is_multi_stage_and_non_root() {
    let d = std::fs::read_to_string(repo("deploy/docker/Dockerfile")).unwrap();
    let froms = d.lines().filter(|l| l.starts_with("FROM ")).count();
    assert!(froms >= 2, "multi-stage");
    let user = d
        .lines()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back()
        .expect("a USER line");
    assert!(
        !user.starts_with("root") && !user.starts_with('0'),
        "non-root: {user}"
    );
    assert!(d.contains("cmake") && d.contains("libcurl4-openssl-dev"));
    for copied in ["Cargo.toml", "Cargo.lock", "src", "migrations", "benches"] {
        assert!(
            repo(copied).exists(),
            "{copied} (copied by the Dockerfile) exists"
        );
    }
}

#[test]
fn compose_wires_mysql_redis_kafka_and_binlogd() {
    let y: Value =
        serde_yaml::from_str(&std::fs::read_to_string(repo("deploy/docker-compose.yml")).unwrap())
            .unwrap();
    let s = &y["services"];
    assert_eq!(s["mysql"]["image"].as_str(), Some("mysql:8.4"));
    let args: Vec<&str> = s["mysql"]["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    for a in [
        "--binlog-format=ROW",
        "--binlog-row-image=FULL",
        "--binlog-row-metadata=FULL",
        "--gtid-mode=ON",
    ] {
        assert!(args.contains(&a), "{a}");
    }
    assert!(s["redis"]["image"].as_str().unwrap().starts_with("redis:7"));
    assert!(s["kafka"]["image"].as_str().unwrap().contains("kafka"));
    let b = &s["binlogd"];
    assert_eq!(
        b["build"]["dockerfile"].as_str(),
        Some("deploy/docker/Dockerfile")
    );
    assert!(b["environment"]["BINLOGD__SOURCE__PASSWORD"]
        .as_str()
        .is_some());
    let cfg = load_config(
        &std::fs::read_to_string(repo("deploy/compose/binlogd.toml")).unwrap(),
        "deploy/compose/binlogd.toml",
    );
    assert_eq!(cfg.sinks.redis.len(), 1);
    assert_eq!(cfg.sinks.kafka[0].brokers, "kafka:9092");
    assert!(cfg.source.url.expose().contains("@mysql:3306"));
    let init = std::fs::read_to_string(repo("deploy/compose/init.sql")).unwrap();
    assert!(init.contains("GRANT REPLICATION SLAVE, REPLICATION CLIENT"));
}

#[test]
fn k8s_sidecar_has_probes_configmap_and_secret() {
    let text = std::fs::read_to_string(repo("deploy/k8s/binlogd-sidecar.yaml")).unwrap();
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .collect();
    use serde::Deserialize;
    let kind = |k: &str| docs.iter().find(|d| d["kind"].as_str() == Some(k)).unwrap();
    let cm = kind("ConfigMap");
    let cfg = load_config(
        cm["data"]["binlogd.toml"].as_str().unwrap(),
        "ConfigMap binlogd.toml",
    );
    // no password in the ConfigMap: it comes from the Secret
    let userinfo = cfg.source.url.expose()["mysql://".len()..]
        .split('@')
        .next()
        .unwrap();
    assert!(
        !userinfo.contains(':') && cfg.source.password.is_none(),
        "{userinfo}"
    );
    assert_eq!(cfg.admin.listen, "0.0.0.0:9187");
    let secret = kind("Secret");
    assert!(secret["stringData"]["mysql-password"].as_str().is_some());
    let sts = kind("StatefulSet");
    let containers = sts["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap();
    assert!(containers
        .iter()
        .any(|c| c["name"].as_str() == Some("mysql")));
    let b = containers
        .iter()
        .find(|c| c["name"].as_str() == Some("binlogd"))
        .expect("binlogd sidecar");
    assert_eq!(
        b["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    assert_eq!(
        b["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    let env = b["env"].as_sequence().unwrap();
    let pw = env
        .iter()
        .find(|e| e["name"].as_str() == Some("BINLOGD__SOURCE__PASSWORD"))
        .unwrap();
    assert_eq!(
        pw["valueFrom"]["secretKeyRef"]["name"].as_str(),
        Some("binlogd")
    );
    assert_eq!(b["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    let mounts = b["volumeMounts"].as_sequence().unwrap();
    assert!(mounts
        .iter()
        .any(|m| m["mountPath"].as_str() == Some("/etc/binlogd")));
}

#[test]
fn systemd_unit_is_hardened() {
    let u = std::fs::read_to_string(repo("deploy/systemd/binlogd.service")).unwrap();
    for k in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "DynamicUser=yes",
        "RestartPreventExitStatus=2",
    ] {
        assert!(u.contains(k), "{k}");
    }
}

/// Every key of the example config (tables and leaves, array tables included) appears in the
/// README's configuration reference, so the two cannot drift apart silently.
#[test]
fn readme_config_reference_covers_the_example_config() {
    let example = std::fs::read_to_string(repo("config/binlogd.example.toml")).unwrap();
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    let reference = readme
        .split("## Configuration reference")
        .nth(1)
        .and_then(|r| r.split("\n## ").next())
        .expect("a Configuration reference section");
    let t: toml::Table = example.parse().unwrap();
    let mut keys = Vec::new();
    fn walk(prefix: &str, v: &toml::Value, out: &mut Vec<String>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&p, v, out);
                }
            }
            toml::Value::Array(a) if a.iter().all(|x| x.is_table()) && !a.is_empty() => {
                for x in a {
                    walk(prefix, x, out);
                }
            }
            _ => out.push(prefix.to_string()),
        }
    }
    walk("", &toml::Value::Table(t), &mut keys);
    keys.sort();
    keys.dedup();
    let mut missing = Vec::new();
    for k in &keys {
        // free-form maps: the map is documented, not its user-chosen keys
        if k.starts_with("sinks.kafka.producer.") || k.starts_with("sinks.kafka.key_columns.") {
            continue;
        }
        let leaf = k.rsplit('.').next().unwrap();
        let section = k.split('.').next().unwrap();
        let documented = reference.contains(&format!("`{k}`"))
            || (reference.contains(&format!("`{leaf}`")) && reference.contains(section));
        if !documented {
            missing.push(k.clone());
        }
    }
    assert!(missing.is_empty(), "keys of config/binlogd.example.toml missing from the README's configuration reference: {missing:?}");
}
