//! `kafka_tail`: prints the messages of a Kafka topic, one readable line each. The quick start
//! (`scripts/quickstart.sh`) reads binlogd's messages back with it; it is also a handy check by
//! hand.
//!
//! ```text
//! cargo build --release --example kafka_tail
//! ./target/release/examples/kafka_tail 127.0.0.1:19016 quickstart.shop.users
//! ./target/release/examples/kafka_tail 127.0.0.1:19016 quickstart.shop.users --expect 3 --full
//! ```
//!
//! It assigns every partition of the topic from the beginning (no consumer group: nothing is
//! committed, and groups are slow to form on small test brokers), reads until every partition
//! reported its end and nothing came for a second (with `--expect N`: until at least N messages
//! came), and prints them in binlog order (the `binlogd.file`/`pos`/`row` headers), else in
//! partition/offset order, as `topic/partition@offset key … value …`. A value that is a binlogd
//! event is shortened to its op and row image (`--full`: the whole value):
//!
//! ```text
//! quickstart.shop.users/0@0 key {"id":1} value {"op":"u","after":{"id":1,"email":"ada@example.org","name":"Ada"},…} (338 bytes)
//! ```
//!
//! Exit status: 0, or 1 when the topic or the expected messages did not show up in time.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: kafka_tail BROKERS TOPIC [--expect N] [--timeout SECS] [--full]
  BROKERS   host:port[,host:port]
  --expect  wait until at least N messages were read (default: read what is there)
  --timeout give up after SECS seconds (default 30)
  --full    print whole values (default: binlogd events as op and row image, other
            values as their first 60 characters)";

struct Msg {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    /// (binlogd.file, binlogd.pos, binlogd.row) when binlogd wrote the message.
    coord: Option<(String, u64, u64)>,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kafka_tail: {e}");
            ExitCode::from(1)
        }
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let mut pos = Vec::new();
    let (mut expect, mut timeout, mut full) = (0usize, 30u64, false);
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> Result<u64, String> {
            args.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{name} needs a number\n{USAGE}"))
        };
        match a.as_str() {
            "--expect" => expect = num("--expect")? as usize,
            "--timeout" => timeout = num("--timeout")?,
            "--full" => full = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            _ if a.starts_with('-') => return Err(format!("unknown option {a}\n{USAGE}")),
            _ => pos.push(a),
        }
    }
    let [brokers, topic] = <[String; 2]>::try_from(pos).map_err(|_| USAGE.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(timeout);

    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "kafka_tail")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("log_level", "3")
        .create()
        .map_err(|e| format!("{brokers}: {e}"))?;

    // the topic may not exist yet (binlogd creates it with the first message)
    let parts = loop {
        let parts: Vec<i32> = match c.fetch_metadata(Some(&topic), Duration::from_secs(5)) {
            Ok(md) => md
                .topics()
                .iter()
                .filter(|t| t.name() == topic && t.error().is_none())
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                .collect(),
            Err(_) => Vec::new(),
        };
        if !parts.is_empty() {
            break parts;
        }
        if expect == 0 || Instant::now() >= deadline {
            return Err(format!("topic {topic} not found on {brokers}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in &parts {
        tpl.add_partition_offset(&topic, *p, rdkafka::Offset::Beginning)
            .map_err(|e| e.to_string())?;
    }
    c.assign(&tpl).map_err(|e| e.to_string())?;

    let mut msgs = Vec::new();
    let mut eof = std::collections::HashSet::new();
    let mut last = Instant::now();
    // A partition's end is not trusted alone (some brokers report high watermarks per record
    // batch): also wait for a quiet second, or for the expected count.
    let quiet = if expect > 0 {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(1)
    };
    while msgs.len() < expect || eof.len() < parts.len() || last.elapsed() < quiet {
        if Instant::now() >= deadline {
            if msgs.len() < expect {
                let n = msgs.len();
                print_all(&topic, msgs, full);
                return Err(format!(
                    "read {n} of the {expect} expected messages of {topic} within {timeout}s"
                ));
            }
            break;
        }
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                last = Instant::now();
                eof.remove(&m.partition());
                let header = |name: &str| {
                    m.headers().and_then(|h| {
                        h.iter()
                            .find(|x| x.key == name)
                            .and_then(|x| x.value)
                            .map(|v| String::from_utf8_lossy(v).into_owned())
                    })
                };
                let coord = match (
                    header("binlogd.file"),
                    header("binlogd.pos").and_then(|p| p.parse().ok()),
                    header("binlogd.row").and_then(|r| r.parse().ok()),
                ) {
                    (Some(f), Some(p), Some(r)) => Some((f, p, r)),
                    _ => None,
                };
                msgs.push(Msg {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().map(<[u8]>::to_vec),
                    coord,
                });
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                eof.insert(p);
            }
            Some(Err(e)) => return Err(format!("reading {topic}: {e}")),
            None => {}
        }
    }
    print_all(&topic, msgs, full);
    Ok(())
}

fn print_all(topic: &str, mut msgs: Vec<Msg>, full: bool) {
    msgs.sort_by(|a, b| (&a.coord, a.partition, a.offset).cmp(&(&b.coord, b.partition, b.offset)));
    for m in msgs {
        let key = m
            .key
            .as_deref()
            .map_or("null".into(), String::from_utf8_lossy);
        let value = match m.value.as_deref() {
            None => "null (tombstone)".to_string(),
            Some(v) if full => String::from_utf8_lossy(v).into_owned(),
            Some(v) => short(v),
        };
        println!(
            "{topic}/{}@{} key {key} value {value}",
            m.partition, m.offset
        );
    }
}

/// A binlogd event as `{"op":…,"after":…,…}` (deletes: `"before"`), anything else as its first
/// 60 characters; then the value's size.
fn short(v: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Event<'a> {
        op: &'a str,
        #[serde(borrow)]
        before: Option<&'a serde_json::value::RawValue>,
        #[serde(borrow)]
        after: Option<&'a serde_json::value::RawValue>,
    }
    let text = String::from_utf8_lossy(v);
    let s = match serde_json::from_str::<Event>(&text) {
        Ok(e) => match (e.op, e.before, e.after) {
            ("d", Some(row), _) => format!(r#"{{"op":"d","before":{},…}}"#, row.get()),
            (op, _, Some(row)) => format!(r#"{{"op":"{op}","after":{},…}}"#, row.get()),
            _ => cut(&text),
        },
        Err(_) => cut(&text),
    };
    format!("{s} ({} bytes)", v.len())
}

fn cut(text: &str) -> String {
    match text.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}
