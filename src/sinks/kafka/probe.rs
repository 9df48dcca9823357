//! Exactly-once without Kafka transactions: what each partition already holds.
//!
//! Every message carries its binlog coordinates in headers. Messages of one partition are in
//! binlog order and, with an idempotent producer that turns any gap into a fatal error
//! (`enable.gapless.guarantee`), a partition always holds a gap-free prefix of the row changes
//! routed to it. So the last message of a partition says exactly which row changes for it are
//! already there: those at or before its position. After a restart (resuming from the stored
//! checkpoint, which may be behind what reached Kafka) or a producer reset, the sink skips
//! those. Preconditions: one writer (pipeline) per topic, partition count unchanged, the same
//! source server (binlog coordinates are per server); violations are logged at startup.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::config::KafkaSinkConfig;

/// A row change's place in the binlog of one server, comparable within a binlog base name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct MsgPos {
    pub file_seq: u64,
    pub pos: u64,
    pub row: u64,
    /// A tombstone follows its delete at the same coordinates.
    pub tombstone: bool,
}

/// What the last message of a partition says.
#[derive(Debug, Clone, Default)]
pub struct Probed {
    pub server: String,
    pub pipeline: String,
    pub base: String,
    pub pos: MsgPos,
    pub partitions: i32,
    /// The row change's transaction GTID (`binlogd.gtid`), empty when the server had none.
    pub gtid: String,
}

pub use crate::binlog::position::file_seq;

/// Kafka's murmur2 (the Java client's default partitioner hash).
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rem = chunks.remainder();
    if rem.len() >= 3 {
        h ^= (rem[2] as u32) << 16;
    }
    if rem.len() >= 2 {
        h ^= (rem[1] as u32) << 8;
    }
    if !rem.is_empty() {
        h ^= rem[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

pub struct Prober {
    consumer: BaseConsumer,
    timeout: Duration,
}

impl Prober {
    pub fn new(cfg: &KafkaSinkConfig, pipeline: &str) -> Result<Prober, String> {
        let mut cc = ClientConfig::new();
        for (k, v) in cfg.consumer_properties(pipeline) {
            cc.set(k, v);
        }
        // an offset gone since the watermarks were read (retention) is an error, not a silent
        // jump to the end (which would read nothing and call it complete)
        cc.set("auto.offset.reset", "error");
        let consumer: BaseConsumer = cc
            .create()
            .map_err(|e| format!("creating the exactly-once probe consumer: {e}"))?;
        Ok(Prober {
            consumer,
            timeout: cfg.request_timeout.0,
        })
    }

    /// Reads the last message of every partition of `topic` (blocking). All non-empty
    /// partitions are read at once, so a restart costs one round of reads, not one per partition.
    pub fn probe(&mut self, topic: &str, partitions: i32) -> Result<Vec<(i32, Probed)>, String> {
        let mut tpl = TopicPartitionList::new();
        let mut pending: Vec<(i32, i64)> = Vec::new();
        for p in 0..partitions {
            let (lo, hi) = self
                .consumer
                .fetch_watermarks(topic, p, self.timeout)
                .map_err(|e| format!("exactly_once: reading the end of {topic}/{p}: {e}"))?;
            if hi > lo {
                tpl.add_partition_offset(topic, p, Offset::Offset(hi - 1))
                    .map_err(|e| e.to_string())?;
                pending.push((p, hi - 1));
            }
        }
        if pending.is_empty() {
            return Ok(Vec::new());
        }
        self.consumer
            .assign(&tpl)
            .map_err(|e| format!("exactly_once: assigning {topic}: {e}"))?;
        // Real Kafka: hi-1 is the last record and a partition-EOF follows it. Some
        // Kafka-protocol brokers (tansu 0.6) report the high watermark per record batch, so
        // read on from there until EOF or a short silence and keep the last record.
        let deadline = Instant::now() + self.timeout;
        let mut last: HashMap<i32, (i64, Probed)> = HashMap::new();
        let mut at_end: HashSet<i32> = HashSet::new();
        let mut quiet_since = Instant::now();
        let all_read =
            |last: &HashMap<i32, (i64, Probed)>| pending.iter().all(|(p, _)| last.contains_key(p));
        loop {
            if pending.iter().all(|(p, _)| at_end.contains(p)) {
                break;
            }
            if Instant::now() > deadline {
                if all_read(&last) {
                    break;
                }
                let (p, off) = pending
                    .iter()
                    .find(|(p, _)| !last.contains_key(p))
                    .copied()
                    .unwrap_or_default();
                let _ = self.consumer.unassign();
                return Err(format!(
                    "exactly_once: the last message of {topic}/{p} (offset {off}) could not be read within {:?}",
                    self.timeout
                ));
            }
            match self.consumer.poll(Duration::from_millis(50)) {
                Some(Ok(m)) if m.topic() == topic => {
                    let p = m.partition();
                    if last.get(&p).is_none_or(|(o, _)| m.offset() > *o) {
                        last.insert(p, (m.offset(), parse(&m)));
                    }
                    quiet_since = Instant::now();
                }
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                    if last.contains_key(&p) {
                        at_end.insert(p);
                    }
                }
                Some(Ok(_)) => {}
                None => {
                    if all_read(&last) && quiet_since.elapsed() > Duration::from_millis(300) {
                        break;
                    }
                }
                Some(Err(e)) => {
                    let _ = self.consumer.unassign();
                    return Err(format!("exactly_once: reading {topic}: {e}"));
                }
            }
        }
        let _ = self.consumer.unassign();
        let mut out: Vec<(i32, Probed)> = last.into_iter().map(|(p, (_, pr))| (p, pr)).collect();
        out.sort_by_key(|(p, _)| *p);
        Ok(out)
    }
}

/// Snapshot read events already in a topic after a stored position: per snapshot run tag
/// (`db.table#run`) and partition, the keys they were read by (`binlogd.snapshot_key`, else the
/// message key). By tag first: a read event looks its tag up as `&str`, no allocation per row.
pub type ReadsPresent = HashMap<String, HashMap<i32, HashSet<Vec<u8>>>>;

impl Prober {
    /// The message keys of snapshot read events (header `binlogd.snapshot`) in each partition
    /// of `topic` at or after the binlog coordinate `since` (the position a restart resumes
    /// from): reads back from each partition's end, in growing steps, until a message before
    /// `since` (or the partition's start). After a crash at most one chunk per table was
    /// published but not stored; its rows found here are not published again.
    pub fn reads_since(
        &mut self,
        topic: &str,
        partitions: i32,
        since: &crate::binlog::position::BinlogCoord,
    ) -> Result<ReadsPresent, String> {
        let (since_base, since_seq) = file_seq(&since.file);
        let mut out: ReadsPresent = HashMap::new();
        for p in 0..partitions {
            let (lo, hi) = self
                .consumer
                .fetch_watermarks(topic, p, self.timeout)
                .map_err(|e| format!("exactly_once: reading the end of {topic}/{p}: {e}"))?;
            if hi <= lo {
                continue;
            }
            let mut step = 4096i64;
            loop {
                let start = (hi - step).max(lo);
                let msgs = self.read_to_end(topic, p, start, hi)?;
                let before_since = |m: &(Probed, Option<String>, Option<Vec<u8>>)| {
                    m.0.base == since_base
                        && (m.0.pos.file_seq, m.0.pos.pos) < (since_seq, since.pos)
                };
                let complete = start <= lo || msgs.first().is_none_or(before_since);
                if complete {
                    for m in msgs {
                        if before_since(&m) {
                            continue;
                        }
                        if let (_, Some(tag), Some(key)) = m {
                            out.entry(tag)
                                .or_default()
                                .entry(p)
                                .or_default()
                                .insert(key);
                        }
                    }
                    break;
                }
                step *= 4;
            }
        }
        Ok(out)
    }

    /// The assigned consumer's next offset in `topic`/`p` (-1 when unknown).
    fn position(&self, topic: &str, p: i32) -> i64 {
        let Ok(tpl) = self.consumer.position() else {
            return -1;
        };
        match tpl.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => -1,
        }
    }

    /// Messages of `topic`/`p` from offset `from` to the partition's end: their coordinates,
    /// snapshot tag and read key (`binlogd.snapshot_key`, else the message key). The end is
    /// where the consumer reports end of partition at or past `hi` (the high watermark read
    /// before), not `hi` itself: a Kafka-protocol broker may report the watermark as the first
    /// offset of the last record batch + 1 (tansu 0.6 does), and the rest of that batch is
    /// exactly what a crash left unstored (a chunk's reads go out as one batch). Stopping at
    /// the watermark published those reads again after a kill -9.
    #[allow(clippy::type_complexity)]
    fn read_to_end(
        &mut self,
        topic: &str,
        p: i32,
        from: i64,
        hi: i64,
    ) -> Result<Vec<(Probed, Option<String>, Option<Vec<u8>>)>, String> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, p, Offset::Offset(from))
            .map_err(|e| e.to_string())?;
        self.consumer
            .assign(&tpl)
            .map_err(|e| format!("exactly_once: assigning {topic}: {e}"))?;
        let deadline = Instant::now() + self.timeout;
        let mut out = Vec::new();
        let mut last = from - 1;
        let mut quiet_since = Instant::now();
        loop {
            if Instant::now() > deadline {
                let _ = self.consumer.unassign();
                return Err(format!(
                    "exactly_once: {topic}/{p} from offset {from} to its end could not be read within {:?}",
                    self.timeout
                ));
            }
            match self.consumer.poll(Duration::from_millis(50)) {
                Some(Ok(m)) if m.topic() == topic && m.partition() == p => {
                    if m.offset() > last {
                        last = m.offset();
                        let header = |name: &str| {
                            m.headers().and_then(|h| {
                                h.iter().find(|x| x.key == name).and_then(|x| x.value)
                            })
                        };
                        let tag = header("binlogd.snapshot")
                            .map(|v| String::from_utf8_lossy(v).into_owned());
                        // a read whose message key is not the key it was read by names
                        // that key in a header
                        let id = header("binlogd.snapshot_key").or_else(|| m.key());
                        out.push((parse(&m), tag, id.map(|k| k.to_vec())));
                        quiet_since = Instant::now();
                    }
                }
                // the end of the partition, once the record below the watermark read before
                // was reached (the records up to it are there to read: an end reported
                // earlier, or a silence, would publish the reads after it again) — or the
                // consumer's position passed it (an offset that is no message: a
                // transaction marker of another writer)
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(q)))
                    if q == p && (last >= hi - 1 || self.position(topic, p) >= hi) =>
                {
                    break
                }
                Some(Ok(_)) | Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => {}
                None => {
                    // a silence past it also ends it (a broker that sends no end of
                    // partition); a silence before it is waited out to the deadline. 20 fetch
                    // waits long (`fetch.wait.max.ms` is 50 for this consumer)
                    if last >= hi - 1 && quiet_since.elapsed() > Duration::from_millis(1000) {
                        break;
                    }
                }
                Some(Err(e)) => {
                    let _ = self.consumer.unassign();
                    return Err(format!("exactly_once: reading {topic}: {e}"));
                }
            }
        }
        let _ = self.consumer.unassign();
        Ok(out)
    }
}

/// `true` when `topic` can be a name the topic template `template` renders (`{server}` already
/// replaced): `{db}` and `{table}` stand for any non-empty text.
pub fn template_matches(template: &str, topic: &str) -> bool {
    let pattern = template.replace("{table}", "{db}");
    let parts: Vec<&str> = pattern.split("{db}").collect();
    if parts.len() == 1 {
        return topic == template;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !topic.starts_with(first) || topic.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &topic[first.len()..];
    if !rest.ends_with(last) {
        return false;
    }
    rest = &rest[..rest.len() - last.len()];
    // each placeholder takes at least one character; the literals between come in order
    for lit in &parts[1..parts.len() - 1] {
        let Some(i) = rest.get(1..).and_then(|r| r.find(lit)) else {
            return false;
        };
        rest = &rest[1 + i + lit.len()..];
    }
    !rest.is_empty()
}

/// `exactly_once`, before streaming: the GTIDs of the last messages `pipeline` wrote to each
/// partition of every topic the sink's template can name (blocking).
pub fn tail_gtids(
    cfg: &KafkaSinkConfig,
    pipeline: &str,
    source_name: &str,
) -> Result<Vec<crate::binlog::Tail>, String> {
    let mut prober = Prober::new(cfg, pipeline)?;
    let template = cfg.topic.replace("{server}", source_name);
    let md = prober
        .consumer
        .fetch_metadata(None, prober.timeout)
        .map_err(|e| format!("exactly_once: listing the topics: {e}"))?;
    let topics: Vec<(String, i32)> = md
        .topics()
        .iter()
        .filter(|t| t.error().is_none() && template_matches(&template, t.name()))
        .map(|t| (t.name().to_string(), t.partitions().len() as i32))
        .collect();
    let mut out = Vec::new();
    for (topic, n) in topics {
        for (p, pr) in prober.probe(&topic, n)? {
            if pr.pipeline == pipeline && !pr.gtid.is_empty() {
                out.push(crate::binlog::Tail {
                    topic: topic.clone(),
                    partition: p,
                    gtid: pr.gtid,
                    server: pr.server,
                });
            }
        }
    }
    Ok(out)
}

fn parse<M: Message>(m: &M) -> Probed {
    let mut pr = Probed::default();
    let mut file = String::new();
    if let Some(h) = m.headers() {
        for x in h.iter() {
            let v = x
                .value
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            match x.key {
                "binlogd.file" => file = v,
                "binlogd.pos" => pr.pos.pos = v.parse().unwrap_or(0),
                "binlogd.row" => pr.pos.row = v.parse().unwrap_or(0),
                "binlogd.server" => pr.server = v,
                "binlogd.pipeline" => pr.pipeline = v,
                "binlogd.partitions" => pr.partitions = v.parse().unwrap_or(0),
                "binlogd.tombstone" => pr.pos.tombstone = v == "1",
                "binlogd.gtid" => pr.gtid = v,
                _ => {}
            }
        }
    }
    let (base, seq) = file_seq(&file);
    pr.base = base.to_string();
    pr.pos.file_seq = seq;
    pr
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_the_java_client() {
        // test vectors of org.apache.kafka.common.utils.UtilsTest
        for (s, want) in [
            ("21", -973932308i32),
            ("foobar", -790332482),
            ("a-little-bit-long-string", -985981536),
            ("a-little-bit-longer-string", -1486304829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            ("abc", 479470107),
        ] {
            assert_eq!(murmur2(s.as_bytes()) as i32, want, "{s}");
        }
    }

    #[test]
    fn topic_templates() {
        assert!(template_matches("shop.{db}.{table}", "shop.app.users"));
        assert!(template_matches("shop.{db}.{table}", "shop.app.a.b"));
        assert!(!template_matches("shop.{db}.{table}", "shop.app."));
        assert!(!template_matches("shop.{db}.{table}", "other.app.users"));
        assert!(template_matches("events", "events"));
        assert!(!template_matches("events", "events2"));
        assert!(template_matches("cdc-{table}", "cdc-t"));
        assert!(!template_matches("cdc-{table}", "cdc-"));
        assert!(template_matches("{db}_{table}_v1", "a_b_v1"));
        assert!(!template_matches("{db}_{table}_v1", "ab_v1"));
    }

    #[test]
    fn positions_order() {
        assert_eq!(file_seq("binlog.000042"), ("binlog", 42));
        let a = MsgPos {
            file_seq: 1,
            pos: 500,
            row: 3,
            tombstone: false,
        };
        let b = MsgPos {
            tombstone: true,
            ..a
        };
        let c = MsgPos {
            file_seq: 2,
            pos: 4,
            row: 0,
            tombstone: false,
        };
        assert!(a < b && b < c);
    }
}
