//! `[[sinks.kafka]]` configuration.

use serde::Deserialize;
use std::collections::BTreeMap;

use crate::filter::TablePattern;
use crate::units::HumanDuration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    pub name: String,
    /// `host:port[,host:port…]`
    pub brokers: String,
    /// Topic template: `{server}` (source.name), `{db}`, `{table}`; or a fixed topic.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// `primary_key` (JSON object of the PK columns) or `none` (null key).
    #[serde(default)]
    pub key: KeyMode,
    /// Key columns for tables without a primary key: `"db.table glob" = ["col", …]`.
    /// Tables with neither get a null key (all their changes go to one partition).
    #[serde(default)]
    pub key_columns: BTreeMap<String, Vec<String>>,
    /// No row change twice in Kafka, even after a crash (see README, Guarantees).
    #[serde(default)]
    pub exactly_once: bool,
    /// After a delete, also send a tombstone (null value) with the same key.
    #[serde(default)]
    pub tombstones: bool,
    /// Publish truncate events (op "t": TRUNCATE, DROP TABLE, partition operations, RENAME),
    /// with a null key, to every partition of the table's topic. `false` skips them.
    #[serde(default = "default_true")]
    pub truncate_events: bool,
    /// Put binlogd's headers (`binlogd.file`, `.pos`, `.row`, `.gtid`, …) on every message.
    /// `false`: value and key only, 17–26% less CPU and ~150 fewer bytes per message in the
    /// sysbench bench (README, Kafka sink); not with `exactly_once`, which reads them back.
    #[serde(default = "default_true")]
    pub headers: bool,
    /// Create missing topics (else: error naming the topic).
    #[serde(default)]
    pub create_topics: bool,
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    #[serde(default = "default_replication")]
    pub replication_factor: i32,
    /// Timeout of metadata requests, topic creation and the exactly-once probe.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: HumanDuration,
    /// While Kafka does not acknowledge, log the backlog this often.
    #[serde(default = "default_backlog_log")]
    pub backlog_log_interval: HumanDuration,
    /// librdkafka properties, passed through (e.g. `"compression.type" = "lz4"`,
    /// `"security.protocol" = "ssl"`). Settings that would break idempotence are refused.
    #[serde(default)]
    pub producer: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyMode {
    #[default]
    PrimaryKey,
    None,
}

fn default_true() -> bool {
    true
}

fn default_topic() -> String {
    "{server}.{db}.{table}".into()
}
fn default_partitions() -> i32 {
    3
}
fn default_replication() -> i32 {
    1
}
fn default_request_timeout() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(10))
}
fn default_backlog_log() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(10))
}

/// Properties binlogd sets itself; a user override that changes them breaks a guarantee.
const FORCED: &[(&str, &[&str], &str)] = &[
    (
        "enable.idempotence",
        &["true"],
        "the producer must be idempotent (no duplicates or reordering on retries)",
    ),
    (
        "acks",
        &["all", "-1"],
        "acks=all is required so an acknowledged message survives a broker failure",
    ),
    (
        "request.required.acks",
        &["all", "-1"],
        "acks=all is required so an acknowledged message survives a broker failure",
    ),
];

const REFUSED: &[(&str, &str)] = &[
    ("bootstrap.servers", "set brokers instead"),
    ("metadata.broker.list", "set brokers instead"),
    (
        "transactional.id",
        "binlogd does not use Kafka transactions; exactly_once = true gives no-duplicate delivery without them",
    ),
    (
        "partitioner",
        "binlogd picks partitions itself (murmur2 of the key, like the Java client) so it knows where each row change goes",
    ),
];

impl KafkaSinkConfig {
    pub fn validate(&self) -> Result<Vec<(TablePattern, Vec<String>)>, String> {
        let at = |m: String| format!("sinks.kafka {:?}: {m}", self.name);
        if self.brokers.trim().is_empty() {
            return Err(at("brokers is empty; give host:port[,host:port]".into()));
        }
        if self.topic.trim().is_empty() {
            return Err(at("topic is empty".into()));
        }
        let mut rest = self.topic.as_str();
        while let Some(i) = rest.find('{') {
            let Some(j) = rest[i..].find('}') else {
                return Err(at(format!("topic {:?}: unclosed '{{'", self.topic)));
            };
            let name = &rest[i + 1..i + j];
            if !matches!(name, "server" | "db" | "table") {
                return Err(at(format!(
                    "topic {:?}: unknown placeholder {{{name}}}; use {{server}}, {{db}}, {{table}}",
                    self.topic
                )));
            }
            rest = &rest[i + j + 1..];
        }
        if self.exactly_once && !self.headers {
            return Err(at(
                "exactly_once = true needs headers = true: after a restart it reads \
                 each partition's last binlogd.* headers to know what Kafka already holds; \
                 set headers = true or exactly_once = false"
                    .into(),
            ));
        }
        if self.partitions < 1 || self.replication_factor < 1 {
            return Err(at(
                "partitions and replication_factor must be at least 1".into()
            ));
        }
        for (k, v) in &self.producer {
            if let Some((_, ok, why)) = FORCED.iter().find(|(n, _, _)| n == k) {
                if !ok.contains(&v.trim()) {
                    return Err(at(format!(
                        "producer.\"{k}\" = {v:?} is not allowed: {why}; remove it"
                    )));
                }
            }
            if let Some((_, why)) = REFUSED.iter().find(|(n, _)| n == k) {
                return Err(at(format!("producer.\"{k}\" is not allowed: {why}")));
            }
            if matches!(
                k.as_str(),
                "max.in.flight.requests.per.connection" | "max.in.flight"
            ) && v.trim().parse::<u32>().map_or(true, |n| n > 5)
            {
                return Err(at(format!(
                    "producer.\"{k}\" = {v:?}: an idempotent producer allows at most 5 in-flight requests"
                )));
            }
            if matches!(k.as_str(), "retries" | "message.send.max.retries") && v.trim() == "0" {
                return Err(at(format!(
                    "producer.\"{k}\" = 0 would drop messages on transient errors; remove it"
                )));
            }
            if k == "enable.gapless.guarantee" && v.trim() != "true" {
                return Err(at(format!(
                    "producer.\"{k}\" = {v:?}: binlogd needs gapless delivery (a gap is turned into a producer reset and a resend); remove it"
                )));
            }
        }
        let mut kc = Vec::new();
        for (t, cols) in &self.key_columns {
            let p = TablePattern::parse(t).map_err(|e| at(format!("key_columns: {e}")))?;
            if cols.is_empty() {
                return Err(at(format!("key_columns.\"{t}\" is empty")));
            }
            kc.push((p, cols.clone()));
        }
        Ok(kc)
    }

    /// The full librdkafka producer configuration: binlogd's settings, then the user's.
    pub fn producer_properties(&self, pipeline: &str) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = [
            ("bootstrap.servers", self.brokers.as_str()),
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("enable.gapless.guarantee", "true"),
            // never drop a message for taking long: the daemon waits (backpressure)
            ("message.timeout.ms", "0"),
            ("linger.ms", "1"),
            ("queue.buffering.max.kbytes", "65536"),
            ("reconnect.backoff.max.ms", "1000"),
            // a missing topic is created only with create_topics = true, never by a metadata
            // request (the producer default asks the broker to auto-create)
            ("allow.auto.create.topics", "false"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        v.push(("client.id".into(), format!("binlogd-{pipeline}")));
        for (k, val) in &self.producer {
            v.retain(|(x, _)| x != k);
            v.push((k.clone(), val.clone()));
        }
        v
    }

    /// Properties for the metadata/probe consumer: brokers plus the user's connection
    /// security settings.
    pub fn consumer_properties(&self, pipeline: &str) -> Vec<(String, String)> {
        let mut v = vec![
            ("bootstrap.servers".to_string(), self.brokers.clone()),
            ("group.id".to_string(), format!("binlogd-probe-{pipeline}")),
            ("enable.auto.commit".to_string(), "false".to_string()),
            ("enable.partition.eof".to_string(), "true".to_string()),
            // answer fetches soon: the probe's read-back ends a range on a silence
            ("fetch.wait.max.ms".to_string(), "50".to_string()),
        ];
        for (k, val) in &self.producer {
            if is_connection_property(k) {
                v.push((k.clone(), val.clone()));
            }
        }
        v
    }
}

/// librdkafka properties about reaching and authenticating to the brokers (TLS, SASL, sockets):
/// every client binlogd creates (producer, probe consumer, admin client) needs the same ones.
fn is_connection_property(k: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "security.",
        "ssl.",
        "ssl_",
        "sasl.",
        "enable.ssl.",
        "enable.sasl.",
        "https.",
        "socket.",
        "broker.address.",
    ];
    PREFIXES.iter().any(|p| k.starts_with(p))
        || matches!(
            k,
            "client.dns.lookup" | "resolve.canonical.bootstrap.servers.only"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &[(&str, &str)]) -> KafkaSinkConfig {
        KafkaSinkConfig {
            name: "events".into(),
            brokers: "127.0.0.1:9092".into(),
            topic: default_topic(),
            key: KeyMode::PrimaryKey,
            key_columns: Default::default(),
            exactly_once: true,
            tombstones: false,
            truncate_events: true,
            headers: true,
            create_topics: false,
            partitions: 3,
            replication_factor: 1,
            request_timeout: default_request_timeout(),
            backlog_log_interval: default_backlog_log(),
            producer: extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn probe_and_admin_clients_get_the_connection_settings() {
        let c = cfg(&[
            ("security.protocol", "sasl_ssl"),
            ("ssl.ca.location", "/ca.pem"),
            ("enable.ssl.certificate.verification", "false"),
            ("sasl.mechanism", "PLAIN"),
            ("sasl.password", "pw"),
            ("broker.address.family", "v4"),
            ("compression.type", "lz4"),
        ]);
        let props: std::collections::HashMap<_, _> =
            c.consumer_properties("p").into_iter().collect();
        for k in [
            "security.protocol",
            "ssl.ca.location",
            "enable.ssl.certificate.verification",
            "sasl.mechanism",
            "sasl.password",
            "broker.address.family",
        ] {
            assert!(props.contains_key(k), "{k} missing");
        }
        assert!(!props.contains_key("compression.type"));
    }

    #[test]
    fn refuses_settings_that_break_idempotence() {
        assert!(cfg(&[("compression.type", "lz4")]).validate().is_ok());
        assert!(cfg(&[("acks", "all")]).validate().is_ok());
        for bad in [
            ("enable.idempotence", "false"),
            ("acks", "1"),
            ("max.in.flight.requests.per.connection", "10"),
            ("retries", "0"),
            ("transactional.id", "x"),
            ("bootstrap.servers", "h:1"),
            ("enable.gapless.guarantee", "false"),
        ] {
            let e = cfg(&[bad]).validate().unwrap_err();
            assert!(e.contains(bad.0), "{e}");
        }
        let mut c = cfg(&[]);
        c.topic = "{server}.{schema}".into();
        assert!(c.validate().unwrap_err().contains("{schema}"));
        let props = cfg(&[("linger.ms", "20")]).producer_properties("p");
        assert!(props.contains(&("linger.ms".into(), "20".into())));
        assert_eq!(props.iter().filter(|(k, _)| k == "linger.ms").count(), 1);
    }

    #[test]
    fn headers_off_only_without_exactly_once() {
        let mut c = cfg(&[]);
        c.headers = false;
        let e = c.validate().unwrap_err();
        assert!(
            e.contains("exactly_once = true needs headers = true"),
            "{e}"
        );
        c.exactly_once = false;
        assert!(c.validate().is_ok());
        // the default when the key is not given
        let t: KafkaSinkConfig = toml::from_str("name = \"k\"\nbrokers = \"h:1\"").unwrap();
        assert!(t.headers);
    }
}
