//! Reading Kafka topics back: every partition assigned from the beginning (consumer groups are
//! slow with the test broker).

use super::daemon::Daemon;
use serde_json::Value;
use std::time::{Duration, Instant};

/// One consumed Kafka message.
#[derive(Debug, Clone)]
pub struct KMsg {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: std::collections::BTreeMap<String, String>,
    /// The message timestamp (ms), if any.
    pub timestamp: Option<i64>,
}

impl KMsg {
    pub fn json(&self) -> Option<Value> {
        self.value
            .as_ref()
            .map(|v| serde_json::from_slice(v).unwrap())
    }
    /// `(file, pos, row, tombstone)` from the headers.
    pub fn coord(&self) -> (String, u64, u64, bool) {
        (
            self.headers["binlogd.file"].clone(),
            self.headers["binlogd.pos"].parse().unwrap(),
            self.headers["binlogd.row"].parse().unwrap(),
            self.headers.contains_key("binlogd.tombstone"),
        )
    }
}

/// Every message of `topic` now: all partitions assigned from the beginning (consumer groups
/// are slow with the test broker), read until every partition reported its end and nothing
/// came for a second (tansu 0.6 reports high watermarks per record batch, so the end is not
/// trusted alone). An unknown topic yields nothing.
pub fn consume_all(brokers: &str, topic: &str) -> Vec<KMsg> {
    consume_all_with(brokers, topic, &[])
}

/// As [`consume_all`], with extra client properties (e.g. TLS).
pub fn consume_all_with(brokers: &str, topic: &str, props: &[(&str, &str)]) -> Vec<KMsg> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    let mut cc = rdkafka::ClientConfig::new();
    cc.set("bootstrap.servers", brokers)
        .set("group.id", "binlogd-tests")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true");
    for (k, v) in props {
        cc.set(*k, *v);
    }
    let c: BaseConsumer = cc.create().unwrap();
    let md = match c.fetch_metadata(Some(topic), Duration::from_secs(10)) {
        Ok(m) => m,
        Err(_) => return Vec::new(),
    };
    let parts: Vec<i32> = md
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut out = Vec::new();
    if parts.is_empty() {
        return out;
    }
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in &parts {
        tpl.add_partition_offset(topic, *p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let t0 = Instant::now();
    let mut eof = std::collections::HashSet::new();
    let mut quiet = Instant::now();
    while eof.len() < parts.len() || quiet.elapsed() < Duration::from_secs(1) {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "consuming {topic} timed out"
        );
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                quiet = Instant::now();
                let mut headers = std::collections::BTreeMap::new();
                if let Some(h) = m.headers() {
                    for x in h.iter() {
                        headers.insert(
                            x.key.to_string(),
                            String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                        );
                    }
                }
                out.push(KMsg {
                    topic: m.topic().to_string(),
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(|k| k.to_vec()),
                    value: m.payload().map(|v| v.to_vec()),
                    headers,
                    timestamp: m.timestamp().to_millis(),
                });
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                eof.insert(p);
            }
            Some(Err(e)) => panic!("consuming {topic}: {e}"),
            None => {}
        }
    }
    out
}

/// Consumes until `topics` hold at least `n` messages in total (panics with the daemon's log
/// if it exits or after 60 s).
pub fn consume_until(brokers: &str, topics: &[String], n: usize, d: &mut Daemon) -> Vec<KMsg> {
    let t0 = Instant::now();
    loop {
        let all: Vec<KMsg> = topics
            .iter()
            .flat_map(|t| consume_all(brokers, t))
            .collect();
        if all.len() >= n {
            return all;
        }
        if let Ok(Some(st)) = d.child.try_wait() {
            panic!("binlogd exited ({st}); log:\n{}", d.log_text());
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{} of {n} messages ({:?}); log:\n{}",
            all.len(),
            topics
                .iter()
                .map(|t| (
                    t,
                    all.iter()
                        .filter(|m| &m.topic == t)
                        .map(|m| (m.partition, m.offset))
                        .collect::<Vec<_>>()
                ))
                .collect::<Vec<_>>(),
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}
