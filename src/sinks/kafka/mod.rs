//! Kafka sink: one message per row change, idempotent producer, per-key order.
//!
//! - value: the event JSON (as the file sink writes it); key: the primary key as a JSON object
//!   (or configured columns, or null); headers `binlogd.file/pos/row/gtid/server/pipeline/
//!   partitions` (none with `headers = false`). Deletes may be followed by a tombstone
//!   (`tombstones = true`).
//! - Partitions are chosen here (murmur2 of the key, as the Java client does), so the sink
//!   knows where each row change goes: all changes of a row land in one partition in binlog
//!   order.
//! - A batch is acknowledged when every message of it has a successful delivery report. A fatal
//!   producer error (e.g. the broker lost the producer's state) drops the producer, creates a
//!   new one and resends the batch — the work after the last acknowledged position.
//! - `exactly_once` ([`probe`]): the first time a run (or a new producer) writes to a topic,
//!   the last message of each of its partitions is read; a row change at or before the
//!   position found there is already in that partition and is skipped.

pub mod config;
pub mod probe;

use futures_util::future::BoxFuture;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tracing::{debug, error, info, warn};

use self::config::{KafkaSinkConfig, KeyMode};
use self::probe::{MsgPos, Probed, Prober};
use super::{Sink, SinkError};
use crate::decode::event::{Batch, SourceInfo};
use crate::decode::table::TableSchema;
use crate::filter::TablePattern;
use crate::finding::{Finding, Severity};
use crate::metrics::now_ms;

/// Counters of one Kafka sink: handles into the process metrics (`binlogd_kafka_*`).
#[derive(Debug)]
pub struct KafkaStats {
    pub sink: String,
    pub messages_acked: Counter,
    /// Row changes not sent because their partition already held them (exactly-once).
    pub skipped_present: Counter,
    pub producer_resets: Counter,
    pub delivery_errors: Counter,
    pub delivery_seconds: Histogram,
}

impl KafkaStats {
    pub fn for_sink(name: &str) -> KafkaStats {
        let m = crate::metrics::get();
        let l = m.sink(name);
        KafkaStats {
            sink: name.to_string(),
            messages_acked: m.kafka_messages.get_or_create(&l).clone(),
            skipped_present: m.kafka_skipped_present.get_or_create(&l).clone(),
            producer_resets: m.kafka_producer_resets.get_or_create(&l).clone(),
            delivery_errors: m.sink_errors.get_or_create(&l).clone(),
            delivery_seconds: m.kafka_delivery_seconds.get_or_create(&l).clone(),
        }
    }

    fn ready(&self, ok: bool) {
        crate::metrics::get().set_sink_ready(&self.sink, ok);
    }
}

/// Delivery bookkeeping of one batch attempt.
#[derive(Default)]
pub struct BatchAck {
    remaining: AtomicUsize,
    error: Mutex<Option<KafkaError>>,
    notify: Notify,
    /// `remaining` at or below which a delivery wakes the waiter (0 is below any: the end of
    /// the batch; a batch that paused at [`MAX_QUEUED`] sets the low-water mark).
    wake_at: AtomicUsize,
}

impl BatchAck {
    fn done(&self) {
        let now = self.remaining.fetch_sub(1, Ordering::AcqRel) - 1;
        if now == 0 || now <= self.wake_at.load(Ordering::Acquire) {
            self.notify.notify_one();
        }
    }
}

/// A wait for delivery reports: since when, and when it last logged / looked for its topics.
struct DeliveryWait {
    t0: Instant,
    last_log: Instant,
    last_topic_check: Instant,
}

impl DeliveryWait {
    fn new() -> Self {
        let t0 = Instant::now();
        DeliveryWait {
            t0,
            last_log: t0,
            last_topic_check: t0,
        }
    }
}

/// Messages of a batch queued and not yet delivered at most: past it the batch waits until
/// half of them are delivered (librdkafka keeps ~2 KB per queued message besides its payload,
/// and a snapshot chunk of 16k rows queued at once took the daemon to 73–82 MiB RSS,
/// benches/snapshot.rs; waiting for all of them each time cost a quarter of the rate).
const MAX_QUEUED: usize = 4096;

#[derive(Default)]
pub struct Ctx {
    /// The latest client-level error (e.g. a failed TLS handshake or SASL authentication): a
    /// metadata timeout alone does not say why the brokers did not answer.
    last_error: std::sync::Mutex<Option<String>>,
}

impl Ctx {
    fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|g| g.clone())
    }
}

/// The message for brokers that could not be used, with the fix that fits the cause: a refused
/// SASL login, a failed TLS handshake, or no answer at all.
fn brokers_failed(brokers: &str, within: &str, detail: &str) -> String {
    let within = if within.is_empty() {
        String::new()
    } else {
        format!(" {within}")
    };
    if detail.contains("SASL authentication error") || detail.contains("SASL authentication failed")
    {
        format!(
            "Kafka brokers {brokers} refused the SASL login ({detail}); fix sasl.mechanism, \
             sasl.username and sasl.password in [sinks.kafka.producer], or create the user on the brokers"
        )
    } else if detail.contains("SSL handshake failed")
        || detail.contains("certificate verify failed")
    {
        format!(
            "Kafka brokers {brokers}: TLS handshake failed ({detail}); fix ssl.ca.location (the CA that \
             signed the brokers' certificates) or the broker address in [sinks.kafka.producer]"
        )
    } else {
        format!(
            "Kafka brokers {brokers} do not answer{within} ({detail}); start them or fix brokers \
             (and the TLS/SASL properties in [sinks.kafka.producer])"
        )
    }
}

/// Why the brokers did not answer: the metadata error, plus the client's last error if any.
fn unreachable(e: &KafkaError, ctx: &Ctx) -> String {
    match ctx.last_error() {
        Some(last) => format!("{e}; last client error: {last}"),
        None => e.to_string(),
    }
}

impl ClientContext for Ctx {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, msg: &str) {
        use rdkafka::config::RDKafkaLogLevel::*;
        // binlogd sets enable.gapless.guarantee on purpose (see probe.rs); not worth a warning
        if fac == "CONFWARN" && msg.contains("enable.gapless.guarantee") {
            debug!(target: "librdkafka", "{fac} {msg}");
            return;
        }
        match level {
            Emerg | Alert | Critical | Error => error!(target: "librdkafka", "{fac} {msg}"),
            Warning => warn!(target: "librdkafka", "{fac} {msg}"),
            Notice | Info => info!(target: "librdkafka", "{fac} {msg}"),
            Debug => debug!(target: "librdkafka", "{fac} {msg}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // transport errors repeat while a broker is down; the sink logs the backlog instead
        debug!(%error, reason, "librdkafka");
        if let Ok(mut g) = self.last_error.lock() {
            *g = Some(reason.to_string());
        }
    }
}

impl ProducerContext for Ctx {
    type DeliveryOpaque = Arc<BatchAck>;
    fn delivery(&self, r: &DeliveryResult<'_>, ack: Arc<BatchAck>) {
        if let Err((e, _)) = r {
            if let Ok(mut g) = ack.error.lock() {
                g.get_or_insert_with(|| e.clone());
            }
        }
        ack.done();
    }
}

/// Where a table's row changes go.
struct Route {
    topic: String,
    key_cols: Option<Vec<usize>>,
    /// Partitioning input for a null key: `db.table`.
    table_key: Vec<u8>,
}

pub struct KafkaSink {
    name: String,
    cfg: KafkaSinkConfig,
    info: SourceInfo,
    key_columns: Vec<(TablePattern, Vec<String>)>,
    producer: ThreadedProducer<Ctx>,
    prober: Option<Prober>,
    /// Partition count per topic (known and checked in this producer's lifetime).
    topics: HashMap<String, i32>,
    /// Exactly-once: the last position each (topic, partition) held when first written.
    probes: HashMap<(String, i32), Probed>,
    /// Snapshot read events already published after the resume position (exactly_once).
    reads_present: HashMap<String, probe::ReadsPresent>,
    routes: HashMap<usize, (Arc<TableSchema>, Arc<Route>)>,
    stats: Arc<KafkaStats>,
    value: Vec<u8>,
    key: Vec<u8>,
    /// A read event's row key when the message key is not it (header `binlogd.snapshot_key`).
    read_id: Vec<u8>,
    /// Groups queued ([`Sink::queue_group`]) and not yet acknowledged, oldest first.
    queued: VecDeque<Queued>,
}

/// A group handed to the producer (or not, after a failure before it) and not yet
/// acknowledged.
struct Queued {
    batches: Vec<Arc<Batch>>,
    /// `Ok`: every message queued in the producer; `Err`: not (fully) queued, with the error
    /// (`None`: a group after a failed one, never sent), to be sent again.
    state: Result<Produced, Option<KafkaError>>,
}

/// A group's messages, queued in the producer.
#[derive(Clone)]
struct Produced {
    /// When the last message was handed to the producer (the delivery wait is timed from it).
    at: Instant,
    ack: Arc<BatchAck>,
    topics: Vec<String>,
    sent: usize,
    bytes: usize,
}

fn fatal(sink: &str, message: String) -> SinkError {
    SinkError::Fatal {
        sink: sink.to_string(),
        message,
    }
}

impl KafkaSink {
    /// Creates the producer and checks the brokers answer (a clear error at startup if not).
    pub fn open(
        cfg: &KafkaSinkConfig,
        info: SourceInfo,
        stats: Arc<KafkaStats>,
    ) -> Result<KafkaSink, SinkError> {
        let key_columns = cfg.validate().map_err(|m| fatal(&cfg.name, m))?;
        let producer = create_producer(cfg, &info.pipeline)?;
        let t = cfg.request_timeout.0;
        tokio::task::block_in_place(|| producer.client().fetch_metadata(None, t)).map_err(|e| {
            fatal(
                &cfg.name,
                brokers_failed(
                    &cfg.brokers,
                    &format!("within {t:?}"),
                    &unreachable(&e, producer.context()),
                ),
            )
        })?;
        let prober = if cfg.exactly_once && !info.replay {
            Some(Prober::new(cfg, &info.pipeline).map_err(|m| fatal(&cfg.name, m))?)
        } else {
            None
        };
        Ok(KafkaSink {
            name: cfg.name.clone(),
            cfg: cfg.clone(),
            info,
            key_columns,
            producer,
            prober,
            topics: HashMap::new(),
            probes: HashMap::new(),
            reads_present: HashMap::new(),
            routes: HashMap::new(),
            stats,
            value: Vec::with_capacity(1024),
            key: Vec::with_capacity(64),
            read_id: Vec::with_capacity(64),
            queued: VecDeque::new(),
        })
    }

    fn route(&mut self, table: &Arc<TableSchema>) -> Result<Arc<Route>, SinkError> {
        let id = Arc::as_ptr(table) as usize;
        if let Some((_, r)) = self.routes.get(&id) {
            return Ok(r.clone());
        }
        let topic = self
            .cfg
            .topic
            .replace("{server}", &self.info.name)
            .replace("{db}", &table.db)
            .replace("{table}", &table.table);
        let key_cols = match self.cfg.key {
            KeyMode::None => None,
            // a table known only by name (a truncate event): no key
            KeyMode::PrimaryKey if table.columns.is_empty() => None,
            KeyMode::PrimaryKey if !table.primary_key.is_empty() => Some(table.primary_key.clone()),
            KeyMode::PrimaryKey => match self
                .key_columns
                .iter()
                .find(|(p, _)| p.matches(&table.db, &table.table))
            {
                Some((_, cols)) => Some(
                    cols.iter()
                        .map(|c| {
                            table.columns.iter().position(|x| x.name == *c).ok_or_else(|| {
                                fatal(
                                    &self.name,
                                    format!(
                                        "key_columns names column {c:?}, which table {}.{} does not have",
                                        table.db, table.table
                                    ),
                                )
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                ),
                None => None,
            },
        };
        let r = Arc::new(Route {
            topic,
            key_cols,
            table_key: format!("{}.{}", table.db, table.table).into_bytes(),
        });
        if self.routes.len() >= 4096 {
            self.routes.clear();
        }
        self.routes.insert(id, (table.clone(), r.clone()));
        Ok(r)
    }

    /// Partition count of `topic`, creating it when allowed; probes its partitions in
    /// exactly-once mode. Once per topic per producer.
    async fn ensure_topic(&mut self, topic: &str) -> Result<i32, SinkError> {
        if let Some(&n) = self.topics.get(topic) {
            return Ok(n);
        }
        let t = self.cfg.request_timeout.0;
        let mut backoff = Duration::from_millis(200);
        let n = loop {
            let md = tokio::task::block_in_place(|| {
                self.producer.client().fetch_metadata(Some(topic), t)
            });
            match md {
                Ok(md) => {
                    let parts = md
                        .topics()
                        .iter()
                        .find(|x| x.name() == topic)
                        .filter(|x| x.error().is_none())
                        .map(|x| x.partitions().len() as i32)
                        .unwrap_or(0);
                    if parts > 0 {
                        break parts;
                    }
                    if !self.cfg.create_topics {
                        return Err(fatal(
                            &self.name,
                            format!(
                                "topic {topic:?} does not exist; create it (e.g. {} partitions) or set create_topics = true",
                                self.cfg.partitions
                            ),
                        ));
                    }
                    self.create_topic(topic).await?;
                }
                Err(e) => {
                    warn!(sink = %self.name, topic, error = %e, retry_in = ?backoff, "cannot read topic metadata; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        };
        if let Some(prober) = &mut self.prober {
            let found = tokio::task::block_in_place(|| prober.probe(topic, n))
                .map_err(|m| fatal(&self.name, m))?;
            for (p, pr) in found {
                if !pr.pipeline.is_empty() && pr.pipeline != self.info.pipeline {
                    warn!(sink = %self.name, topic, partition = p, writer = %pr.pipeline, "exactly_once precondition violated: the partition's last message was written by another pipeline; duplicates are possible");
                }
                if pr.partitions != 0 && pr.partitions != n {
                    warn!(sink = %self.name, topic, was = pr.partitions, now = n, "exactly_once precondition violated: the topic's partition count changed, keys moved partitions; duplicates are possible in the replay window");
                }
                if pr.server != self.info.server {
                    warn!(sink = %self.name, topic, partition = p, was = %pr.server, now = %self.info.server, "exactly_once: the partition was last written from another source server (failover?); positions are not comparable, nothing is skipped (duplicates possible in the replay window)");
                }
                debug!(sink = %self.name, topic, partition = p, file = %pr.base, pos = ?pr.pos, "partition already holds up to");
                self.probes.insert((topic.to_string(), p), pr);
            }
            if let Some(since) = &self.info.snapshot_resume {
                let found = tokio::task::block_in_place(|| prober.reads_since(topic, n, since))
                    .map_err(|m| fatal(&self.name, m))?;
                let keys: usize = found.values().map(|s| s.len()).sum();
                if keys > 0 {
                    info!(sink = %self.name, topic, read_events = keys, "exactly_once: snapshot read events already published after the resume position are not published again");
                }
                if !found.is_empty() {
                    self.reads_present.insert(topic.to_string(), found);
                }
            }
        }
        self.topics.insert(topic.to_string(), n);
        Ok(n)
    }

    async fn create_topic(&self, topic: &str) -> Result<(), SinkError> {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let mut cc = ClientConfig::new();
        for (k, v) in self.cfg.consumer_properties(&self.info.pipeline) {
            if k != "group.id" && k != "enable.auto.commit" && k != "enable.partition.eof" {
                cc.set(k, v);
            }
        }
        let admin: AdminClient<rdkafka::client::DefaultClientContext> = cc
            .create()
            .map_err(|e| fatal(&self.name, format!("admin client: {e}")))?;
        let nt = NewTopic::new(
            topic,
            self.cfg.partitions,
            TopicReplication::Fixed(self.cfg.replication_factor),
        );
        let opts = AdminOptions::new().operation_timeout(Some(self.cfg.request_timeout.0));
        let res = admin
            .create_topics([&nt], &opts)
            .await
            .map_err(|e| fatal(&self.name, format!("creating topic {topic:?}: {e}")))?;
        for r in res {
            match r {
                Ok(_) => {
                    info!(sink = %self.name, topic, partitions = self.cfg.partitions, "created topic")
                }
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, e)) => {
                    return Err(fatal(&self.name, format!("creating topic {t:?}: {e}")));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok(())
    }

    /// Sends `batches` until every message is acknowledged, retrying on a new producer.
    async fn deliver(&mut self, batches: Vec<&Batch>) -> Result<(), SinkError> {
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.send_batches(&batches).await? {
                Ok(()) => return Ok(()),
                Err(e) => self.recover(e, &mut backoff).await?,
            }
        }
    }

    /// After a failed delivery: a permanent error stops the sink; any other drops the
    /// producer and creates a new one (after `backoff`), to resend from the last acknowledged
    /// position.
    async fn recover(&mut self, e: KafkaError, backoff: &mut Duration) -> Result<(), SinkError> {
        if permanent(&e) {
            return Err(fatal(
                &self.name,
                format!("Kafka refused a message: {e}; the position was not advanced past it"),
            ));
        }
        self.stats.delivery_errors.inc();
        self.stats.ready(false);
        let fatal_err = self.producer.client().fatal_error();
        warn!(
            sink = %self.name, error = %e, fatal = ?fatal_err, retry_in = ?*backoff,
            "delivery failed: dropping the producer, creating a new one and resending from the last acknowledged position"
        );
        tokio::time::sleep(*backoff).await;
        *backoff = (*backoff * 2).min(Duration::from_secs(5));
        self.reset_producer()
    }

    /// Produces every row change of the batches, in order, and waits for all delivery reports.
    async fn send_batches(
        &mut self,
        batches: &[&Batch],
    ) -> Result<Result<(), KafkaError>, SinkError> {
        match self.produce(batches, None).await? {
            Ok(p) => self.complete(&p).await,
            Err(e) => Ok(Err(e)),
        }
    }

    /// Queues every row change of the batches in the producer, in order (pausing while more
    /// than [`MAX_QUEUED`] of them wait for delivery, counting those of `prior`, the group
    /// queued before and still waiting for its delivery reports).
    async fn produce(
        &mut self,
        batches: &[&Batch],
        mut prior: Option<Produced>,
    ) -> Result<Result<Produced, KafkaError>, SinkError> {
        let ack = Arc::new(BatchAck::default());
        ack.remaining.store(1, Ordering::Release); // held until everything is queued
        let now = now_ms();
        let mut sent = 0usize;
        let mut bytes = 0usize;
        let mut batch_topics: Vec<String> = Vec::new();
        // the envelope parts shared by a rows event's changes, rendered once per rows event
        let mut env = crate::decode::event::Envelope::default();
        let mut env_chunk: Option<&crate::decode::rows::RowsChunk> = None;
        let mut route_chunk: Option<&crate::decode::rows::RowsChunk> = None;
        let mut cur: Option<(Arc<Route>, i32, String, u64)> = None;
        for ch in batches.iter().flat_map(|b| b.changes()) {
            if !env_chunk.is_some_and(|c| std::ptr::eq(c, ch.chunk)) {
                env.set(&ch, &self.info);
                env_chunk = Some(ch.chunk);
            }
            let truncate = ch.op() == crate::decode::event::Op::Truncate;
            if truncate && !self.cfg.truncate_events {
                continue;
            }
            // the route, the topic's partition count and the binlog file's number, looked up
            // once per rows event (issue 16: per message they were hash look-ups and a parse)
            if !route_chunk.is_some_and(|c| std::ptr::eq(c, ch.chunk)) {
                let route = self.route(&ch.chunk.table)?;
                let n = self.ensure_topic(&route.topic).await?;
                if !batch_topics.contains(&route.topic) {
                    batch_topics.push(route.topic.clone());
                }
                let (base, seq) = probe::file_seq(&ch.txn.file);
                cur = Some((route, n, base.to_string(), seq));
                route_chunk = Some(ch.chunk);
            }
            let Some((route, n, file_base, file_seq)) = &cur else {
                continue; // (set just above)
            };
            let (n, file_seq) = (*n, *file_seq);
            self.key.clear();
            let has_key = match &route.key_cols {
                // a truncate has no row: null key, one message per partition (below)
                _ if truncate => false,
                Some(cols) => {
                    ch.write_key(&mut self.key, cols)
                        .map_err(|e| fatal(&self.name, e.to_string()))?;
                    true
                }
                None => false,
            };
            let part_input: &[u8] = if has_key { &self.key } else { &route.table_key };
            let partition = ((probe::murmur2(part_input) & 0x7fff_ffff) % n as u32) as i32;
            let pos = MsgPos {
                file_seq,
                pos: ch.chunk.pos,
                row: ch.row_index(),
                tombstone: false,
            };
            let tombstone = self.cfg.tombstones && ch.op() == crate::decode::event::Op::Delete;
            // snapshot reads are not skipped by position: a chunk read again after a restart is
            // handed on at a later stream position than the first time, with other rows
            let read = matches!(ch.op(), crate::decode::event::Op::Read { .. });
            // a read is known by the key it was read by (unique): when the message key is not
            // that key (`key = "none"`, or `key_columns`, which need not be unique) the read
            // names it in a header, and a restart's read-back matches on that (no headers: no
            // read-back either, exactly_once needs them)
            self.read_id.clear();
            let read_key = &ch.chunk.table.read_key;
            let read_id_header = self.cfg.headers
                && read
                && !read_key.is_empty()
                && !(has_key && route.key_cols.as_deref() == Some(&read_key[..]));
            if read_id_header {
                ch.write_key(&mut self.read_id, read_key)
                    .map_err(|e| fatal(&self.name, e.to_string()))?;
            }
            let read_present = read
                && (has_key || read_id_header)
                && ch.txn.snapshot.as_deref().is_some_and(|tag| {
                    let id = if read_id_header {
                        &self.read_id
                    } else {
                        &self.key
                    };
                    self.reads_present
                        .get(&route.topic)
                        .and_then(|m| m.get(tag))
                        .and_then(|m| m.get(&partition))
                        .is_some_and(|s| s.contains(id))
                });
            let skip = |partition: i32, tomb: bool| -> bool {
                !read
                    && !self.probes.is_empty()
                    && self
                        .probes
                        .get(&(route.topic.clone(), partition))
                        .is_some_and(|pr| {
                            pr.server == self.info.server
                                && !self.info.server.is_empty()
                                && pr.base == file_base.as_str()
                                && MsgPos {
                                    tombstone: tomb,
                                    ..pos
                                } <= pr.pos
                        })
            };
            // a truncate goes to every partition, so a consumer of any partition sees it
            let partitions = if truncate {
                0..n
            } else {
                partition..partition + 1
            };
            let tombs = if tombstone { 2 } else { 1 };
            for (partition, tomb) in partitions.flat_map(|p| (0..tombs).map(move |t| (p, t == 1))) {
                if read_present || skip(partition, tomb) {
                    self.stats.skipped_present.inc();
                    continue;
                }
                self.value.clear();
                if !tomb {
                    ch.write_json_env(&mut self.value, &env, now)
                        .map_err(|e| fatal(&self.name, e.to_string()))?;
                }
                let mut rec: BaseRecord<'_, [u8], [u8], Arc<BatchAck>> =
                    BaseRecord::with_opaque_to(&route.topic, ack.clone())
                        .partition(partition)
                        // the value's `ts_ms` (and no clock read per message in librdkafka)
                        .timestamp(now as i64);
                // (`headers = false`: none; config refuses it with exactly_once, which reads
                // them back)
                if self.cfg.headers {
                    let mut h = OwnedHeaders::new_with_capacity(8)
                        .insert(Header {
                            key: "binlogd.file",
                            value: Some(ch.txn.file.as_bytes()),
                        })
                        .insert(Header {
                            key: "binlogd.pos",
                            value: Some(itoa::Buffer::new().format(pos.pos).as_bytes()),
                        })
                        .insert(Header {
                            key: "binlogd.row",
                            value: Some(itoa::Buffer::new().format(pos.row).as_bytes()),
                        })
                        .insert(Header {
                            key: "binlogd.server",
                            value: Some(self.info.server.as_bytes()),
                        })
                        .insert(Header {
                            key: "binlogd.pipeline",
                            value: Some(self.info.pipeline.as_bytes()),
                        })
                        .insert(Header {
                            key: "binlogd.partitions",
                            value: Some(itoa::Buffer::new().format(n).as_bytes()),
                        });
                    if let Some(g) = &ch.txn.gtid {
                        h = h.insert(Header {
                            key: "binlogd.gtid",
                            value: Some(g.as_bytes()),
                        });
                    }
                    if let (true, Some(s)) = (read, &ch.txn.snapshot) {
                        h = h.insert(Header {
                            key: "binlogd.snapshot",
                            value: Some(s.as_bytes()),
                        });
                        if read_id_header {
                            h = h.insert(Header {
                                key: "binlogd.snapshot_key",
                                value: Some(&self.read_id[..]),
                            });
                        }
                    }
                    if tomb {
                        h = h.insert(Header {
                            key: "binlogd.tombstone",
                            value: Some(b"1"),
                        });
                    }
                    rec = rec.headers(h);
                }
                if has_key {
                    rec = rec.key(&self.key[..]);
                }
                if !tomb {
                    rec = rec.payload(&self.value[..]);
                }
                ack.remaining.fetch_add(1, Ordering::AcqRel);
                bytes += self.value.len() + self.key.len();
                sent += 1;
                loop {
                    match self.producer.send(rec) {
                        Ok(()) => break,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                            rec = r;
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        Err((e, _)) => {
                            ack.done();
                            return Ok(Err(e));
                        }
                    }
                }
            }
            // the group before first: its messages are older, and go first anyway
            if let Some(p) = prior.as_ref().filter(|p| {
                p.ack.remaining.load(Ordering::Acquire) + ack.remaining.load(Ordering::Acquire)
                    > MAX_QUEUED + 1
            }) {
                let mut w = DeliveryWait::new();
                let gone = self
                    .await_deliveries(&p.ack, 0, &p.topics, p.sent, p.bytes, &mut w)
                    .await;
                if let Some(e) = gone {
                    ack.done();
                    return Ok(Err(e));
                }
                prior = None;
            }
            // (+ 1: the batch's own token, held until everything is queued)
            if ack.remaining.load(Ordering::Acquire) > MAX_QUEUED + 1 {
                let low = MAX_QUEUED / 2 + 1;
                ack.wake_at.store(low, Ordering::Release);
                let mut w = DeliveryWait::new();
                let gone = self
                    .await_deliveries(&ack, low, &batch_topics, sent, bytes, &mut w)
                    .await;
                ack.wake_at.store(0, Ordering::Release);
                if let Some(e) = gone {
                    ack.done();
                    return Ok(Err(e));
                }
                let failed = ack.error.lock().map(|g| g.is_some()).unwrap_or(false);
                if failed || self.producer.client().fatal_error().is_some() {
                    break; // the error is returned below, once the rest is delivered
                }
            }
        }
        ack.done(); // everything queued
        Ok(Ok(Produced {
            at: Instant::now(),
            ack,
            topics: batch_topics,
            sent,
            bytes,
        }))
    }

    /// Waits for every delivery report of a produced group: `Ok` when all were delivered.
    async fn complete(&mut self, p: &Produced) -> Result<Result<(), KafkaError>, SinkError> {
        let Produced {
            at,
            ack,
            topics,
            sent,
            bytes,
        } = p;
        let (sent, bytes) = (*sent, *bytes);
        let mut wait = DeliveryWait::new();
        if let Some(e) = self
            .await_deliveries(ack, 0, topics, sent, bytes, &mut wait)
            .await
        {
            return Ok(Err(e));
        }
        let err = ack.error.lock().ok().and_then(|g| g.clone());
        if let Some(e) = err {
            return Ok(Err(e));
        }
        if let Some((code, msg)) = self.producer.client().fatal_error() {
            warn!(sink = %self.name, %msg, "fatal producer error");
            return Ok(Err(KafkaError::MessageProduction(code)));
        }
        self.stats.messages_acked.inc_by(sent as u64);
        // from the last message handed over (the wait may have begun later: pipelined)
        self.stats
            .delivery_seconds
            .observe(at.elapsed().as_secs_f64());
        self.stats.ready(true);
        debug!(sink = %self.name, messages = sent, ack_wait = ?wait.t0.elapsed(), since_produced = ?at.elapsed(), "batch acknowledged");
        Ok(Ok(()))
    }

    /// Waits until `ack.remaining` is at most `until` (0: the whole batch delivered; more: a
    /// pause while queueing, see [`MAX_QUEUED`]), watching for what
    /// would otherwise hang the wait: a fatal producer error (returns; the caller looks), a
    /// topic deleted under the messages (its error), and logging the backlog meanwhile.
    async fn await_deliveries(
        &mut self,
        ack: &BatchAck,
        until: usize,
        batch_topics: &[String],
        sent: usize,
        bytes: usize,
        w: &mut DeliveryWait,
    ) -> Option<KafkaError> {
        loop {
            let notified = ack.notify.notified();
            if ack.remaining.load(Ordering::Acquire) <= until {
                break;
            }
            let every = self.cfg.backlog_log_interval.0;
            // wake up now and then to notice a fatal producer error
            if tokio::time::timeout(Duration::from_millis(200), notified)
                .await
                .is_err()
                && w.last_log.elapsed() >= every
            {
                w.last_log = Instant::now();
                self.stats.ready(false);
                warn!(
                    sink = %self.name,
                    unacknowledged = ack.remaining.load(Ordering::Acquire),
                    of = sent,
                    bytes,
                    waiting = ?w.t0.elapsed(),
                    "Kafka has not acknowledged these messages yet; waiting (reading from the binlog is paused)"
                );
            }
            if self.producer.client().fatal_error().is_some() {
                break;
            }
            // A topic deleted under us (e.g. a broker that lost its state) makes librdkafka
            // hold the messages forever (message.timeout.ms=0) without any error: look.
            if w.t0.elapsed() > Duration::from_secs(3)
                && w.last_topic_check.elapsed() > Duration::from_secs(2)
            {
                w.last_topic_check = Instant::now();
                for topic in batch_topics {
                    let md = tokio::task::block_in_place(|| {
                        self.producer
                            .client()
                            .fetch_metadata(Some(topic), Duration::from_secs(2))
                    });
                    if let Ok(md) = md {
                        let present = md.topics().iter().any(|t| {
                            t.name() == topic && t.error().is_none() && !t.partitions().is_empty()
                        });
                        if !present {
                            warn!(sink = %self.name, topic, "the topic disappeared while messages were waiting for it");
                            return Some(KafkaError::MessageProduction(
                                RDKafkaErrorCode::UnknownTopicOrPartition,
                            ));
                        }
                    }
                }
            }
        }
        None
    }

    /// Drops the producer and creates a new one; topics are looked up (and probed) again.
    fn reset_producer(&mut self) -> Result<(), SinkError> {
        self.producer = create_producer(&self.cfg, &self.info.pipeline)?;
        self.topics.clear();
        self.probes.clear();
        self.stats.producer_resets.inc();
        Ok(())
    }
}

fn create_producer(
    cfg: &KafkaSinkConfig,
    pipeline: &str,
) -> Result<ThreadedProducer<Ctx>, SinkError> {
    let mut cc = ClientConfig::new();
    for (k, v) in cfg.producer_properties(pipeline) {
        cc.set(k, v);
    }
    cc.create_with_context(Ctx::default())
        .map_err(|e| fatal(&cfg.name, format!("creating the Kafka producer: {e}")))
}

/// Errors a resend cannot fix: the configuration or the data must change.
fn permanent(e: &KafkaError) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        e.rdkafka_error_code(),
        Some(
            MessageSizeTooLarge
                | InvalidMessageSize
                | TopicAuthorizationFailed
                | ClusterAuthorizationFailed
                | InvalidRecord
        )
    )
}

impl Sink for KafkaSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn write<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(self.deliver(vec![batch]))
    }

    /// A group's batches are all produced, then waited for once: a backlog of small
    /// transactions drains in one round trip to the brokers instead of one per batch
    /// (issue 16: after a 0.35 s stall of the server's commits, 36 one-transaction batches took
    /// 3.4 ms each and made the p99 commit → acknowledged latency 30 ms).
    fn max_group(&self) -> usize {
        // 4: the backlog after a stall drains in a few round trips; 8 or 16 raised the RSS on
        // the sysbench range into Kafka from 54–64 MiB to 70–86 MiB (more of the in-flight
        // budget queued at the sink, and larger message sets in librdkafka) for no faster rate
        4
    }

    fn pipelined(&self) -> bool {
        true
    }

    /// Produces the group's messages while the group before is still waiting for its
    /// delivery reports (after a failure, only notes the group: it is sent again with the
    /// failed one).
    fn queue_group(&mut self, batches: Vec<Arc<Batch>>) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            let state = if self.queued.iter().any(|q| q.state.is_err()) {
                Err(None)
            } else {
                let prior = self
                    .queued
                    .back()
                    .and_then(|q| q.state.as_ref().ok())
                    .cloned();
                let refs: Vec<&Batch> = batches.iter().map(|b| &**b).collect();
                self.produce(&refs, prior).await?.map_err(Some)
            };
            self.queued.push_back(Queued { batches, state });
            Ok(())
        })
    }

    /// Waits for the oldest queued group's delivery reports. After a failure, every queued
    /// group (the failed one first, the later ones whether delivered or not) is sent again on
    /// a new producer, in order, until delivered: the same promise as a failed `write`.
    fn settle(&mut self) -> BoxFuture<'_, Result<usize, SinkError>> {
        Box::pin(async move {
            let Some(oldest) = self.queued.pop_front() else {
                return Ok(0);
            };
            let failed = match &oldest.state {
                Ok(p) => match self.complete(p).await? {
                    Ok(()) => return Ok(1),
                    Err(e) => e,
                },
                Err(Some(e)) => e.clone(),
                // (a group after a failed one is never the oldest: the failed one is resent
                // with it)
                Err(None) => KafkaError::Canceled,
            };
            self.queued.push_front(oldest);
            self.recover(failed, &mut Duration::from_millis(200))
                .await?;
            let all: Vec<Arc<Batch>> = self
                .queued
                .iter()
                .flat_map(|q| q.batches.iter().cloned())
                .collect();
            let n = self.queued.len();
            self.deliver(all.iter().map(|b| &**b).collect()).await?;
            info!(sink = %self.name, groups = n, batches = all.len(), "resent and delivered every queued group");
            self.queued.clear();
            Ok(n)
        })
    }

    fn close(&mut self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            // the pipeline settles every queued group before it closes the sink
            if self.queued.is_empty() {
                Ok(())
            } else {
                Err(fatal(
                    &self.name,
                    format!("closed with {} groups not acknowledged", self.queued.len()),
                ))
            }
        })
    }
}

/// `binlogd check`: brokers answer, and fixed topics exist (or may be created).
pub async fn check(cfg: &KafkaSinkConfig, pipeline: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    if cfg.validate().is_err() {
        return out;
    }
    let producer = match create_producer(cfg, pipeline) {
        Ok(p) => p,
        Err(e) => {
            out.push(Finding {
                severity: Severity::Error,
                message: e.to_string(),
            });
            return out;
        }
    };
    let t = cfg.request_timeout.0;
    let fixed = !cfg.topic.contains('{');
    let topic = cfg.topic.clone();
    let md = tokio::task::spawn_blocking(move || {
        producer
            .client()
            .fetch_metadata(if fixed { Some(topic.as_str()) } else { None }, t)
            .map(|md| {
                md.topics()
                    .iter()
                    .find(|x| x.name() == topic)
                    .is_some_and(|x| x.error().is_none() && !x.partitions().is_empty())
            })
            .map_err(|e| unreachable(&e, producer.context()))
    })
    .await;
    match md {
        Ok(Ok(exists)) => {
            if fixed && !exists && !cfg.create_topics {
                out.push(Finding {
                    severity: Severity::Error,
                    message: format!(
                        "sinks.kafka {:?}: topic {:?} does not exist; create it or set create_topics = true",
                        cfg.name, cfg.topic
                    ),
                });
            }
        }
        Ok(Err(e)) => out.push(Finding {
            severity: Severity::Error,
            message: format!(
                "sinks.kafka {:?}: {}",
                cfg.name,
                brokers_failed(&cfg.brokers, "", &e)
            ),
        }),
        Err(e) => out.push(Finding {
            severity: Severity::Error,
            message: format!("sinks.kafka {:?}: {e}", cfg.name),
        }),
    }
    out
}
