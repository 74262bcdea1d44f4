//! `vitals run`: the Kafka shell around the sequencer and the fold
//! (DESIGN.md). One consumer group over the input topics and
//! `vitals.repartition`; for every assigned partition `p` a worker thread
//! owns the sequencer of `p` (appending to `vitals.sequenced[p]`) and the
//! fold of `p` (publishing to partition `p` of the output topics). Workers
//! run in parallel across cores; the fold's state is a plain value owned
//! by its thread.
//!
//! Flow per partition:
//! 1. On assignment, the last record of `vitals.sequenced[p]` gives the
//!    sequencer's [`Cursor`]; the input partitions are assigned at the
//!    cursor's positions + 1 (committed offsets are kept for lag only).
//! 2. The worker learns, from the last record of each output partition,
//!    the provenance already published, rebuilds the fold by reading
//!    `vitals.sequenced[p]` from its start (snapshots will shorten this),
//!    and suppresses outputs at or below the marks.
//! 3. Live: records go through the sequencer; each decision is appended
//!    to `vitals.sequenced[p]` by the idempotent producer and, once its
//!    offset is acknowledged, folded exactly as a read of that log would
//!    fold it (offsets are checked to be consecutive), so the live fold
//!    and a replay of the log are the same computation.
//! 4. On revocation or shutdown the worker drains: every appended record is
//!    folded, every output delivered, input offsets committed; then the
//!    partition is released.
//!
//! The producer never gives up on a record (`message.timeout.ms = 0`):
//! a lost broker is retried with librdkafka's backoff and logged, never
//! skipped, so the log never has a hole.

use std::collections::{HashMap, VecDeque};
use std::ffi::{CStr, CString};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use tracing::{debug, error, info, warn};

use crate::codec::Format;
use crate::config::Config;
use crate::core::{Model, Partition, Ts};
use crate::readside::names;
use crate::snapshot::{self, DirStore, SnapshotStore};

use super::sequencer::{Cursor, Decision, Sequencer, SequencerConfig, SourceRecord};
use super::snapstore::KafkaStore;
use super::topics::check_co_partitioned;
use super::worker::{
    headers, provenance_of, FoldWorker, OutFormat, OutTopic, OutputRecord, Sequenced,
};

/// Why the service stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Built with `From`, which redacts secrets (see [`redact`]).
    #[error("kafka: {0}")]
    Kafka(#[source] KafkaError),
    #[error("{0}")]
    Topics(String),
    #[error("partition {partition}: {message}")]
    Partition { partition: u32, message: String },
    #[error("{0}")]
    Snapshot(#[from] snapshot::SnapshotError),
}

impl From<KafkaError> for ServiceError {
    fn from(e: KafkaError) -> Self {
        ServiceError::Kafka(redact(e))
    }
}

/// librdkafka's "invalid client property" error carries the property's
/// value (rdkafka prints it: `Client config error: {desc} {key} {value}`),
/// and a rejected `sasl.password` would go to the log and the exit
/// message. The value of a secret property is replaced, wherever it
/// appears in the error.
pub fn redact(e: KafkaError) -> KafkaError {
    match e {
        KafkaError::ClientConfig(res, desc, key, value)
            if crate::config::is_secret_client_key(&key) && !value.is_empty() =>
        {
            KafkaError::ClientConfig(res, desc.replace(&value, REDACTED), key, REDACTED.into())
        }
        e => e,
    }
}

const REDACTED: &str = "[redacted]";

/// What a worker tells the rest of the process (read side, metrics, demo).
pub trait Observer: Send + Sync {
    /// The group gave this instance these partitions (maybe none).
    fn assigned(&self, _partitions: &[u32]) {}
    /// The partition was assigned and is being restored.
    fn restoring(&self, _partition: u32) {}
    /// A batch was folded; `touched` are accounts whose health was
    /// published in it (all accounts after a restore).
    fn batch(&self, _partition: u32, _part: &Partition, _touched: &[&str], _status: &Status) {}
    /// After [`batch`](Self::batch), the shadow scorecard's fold, when one
    /// runs.
    fn shadow(&self, _partition: u32, _shadow: &Partition) {}
    /// The partition was released.
    fn revoked(&self, _partition: u32) {}
}

/// An observer that does nothing.
pub struct NoObserver;
impl Observer for NoObserver {}

/// How current a partition's state is.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub restoring: bool,
    pub watermark: Option<Ts>,
    /// Next offset of `vitals.sequenced[p]` to fold.
    pub sequenced_offset: i64,
    /// Per input topic (and repartition), the next offset to sequence.
    pub input_offsets: Vec<(String, i64)>,
}

/// Settings derived from the config, shared by all workers.
struct Shared {
    cfg: Config,
    model: Arc<Model>,
    /// The shadow scorecard, when one runs.
    shadow: Option<Arc<Model>>,
    /// Input topics then the repartition topic: the sequencer's sources.
    sources: Vec<String>,
    formats: Vec<Format>,
    partitions: u32,
    producer: FutureProducer,
    observer: Arc<dyn Observer>,
    out_format: OutFormat,
    snapshots: Option<Arc<dyn SnapshotStore>>,
}

impl Shared {
    fn out_topic(&self, t: OutTopic) -> &str {
        let n = &self.cfg.kafka.topics;
        match t {
            OutTopic::Health => &n.health,
            OutTopic::AtRisk => &n.at_risk,
            OutTopic::Upsell => &n.upsell,
            OutTopic::Dlq => &n.dlq,
            OutTopic::Repartition => &n.repartition,
            OutTopic::Shadow => &n.shadow,
        }
    }

    fn consumer_client(&self) -> ClientConfig {
        consumer_config(&self.cfg)
    }
}

/// The common librdkafka settings: brokers and the pass-through
/// (security) properties of `[kafka.client]`.
pub fn client_config(cfg: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.kafka.brokers);
    for (k, v) in &cfg.kafka.client {
        c.set(k, v);
    }
    c
}

/// [`client_config`] with `[kafka.consumer]` over it: for consumers.
pub fn consumer_config(cfg: &Config) -> ClientConfig {
    let mut c = client_config(cfg);
    for (k, v) in &cfg.kafka.consumer {
        c.set(k, v);
    }
    c
}

/// [`client_config`] with `[kafka.producer]` over it: for producers.
pub fn producer_config(cfg: &Config) -> ClientConfig {
    let mut c = client_config(cfg);
    for (k, v) in &cfg.kafka.producer {
        c.set(k, v);
    }
    c
}

/// What the group consumer hands a worker.
enum Input {
    Record(SourceRecord),
    /// The source has been read to its end for now.
    CaughtUp(u16),
    /// An appended record's delivery completed (sent by the delivery
    /// future's waker): the worker wakes to fold it.
    Wake,
}

struct WorkerHandle {
    tx: SyncSender<Input>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<(), ServiceError>>,
}

struct Ctx {
    shared: OnceLock<Arc<Shared>>,
    consumer: OnceLock<Weak<BaseConsumer<Ctx>>>,
    workers: Mutex<HashMap<u32, WorkerHandle>>,
    /// Bumped on every rebalance, so the poll loop refreshes its routes.
    generation: std::sync::atomic::AtomicU64,
    /// (partition, source) → the offset its assignment starts at (−1: the
    /// log's start), for the poll loop's caught-up test before the first
    /// record arrives.
    starts: Mutex<HashMap<(u32, u16), i64>>,
    failed: Mutex<Option<ServiceError>>,
}

impl ClientContext for Ctx {
    fn error(&self, error: KafkaError, reason: &str) {
        // End of partition is how the merge learns a source is caught up,
        // not a fault.
        if matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        ) {
            return;
        }
        warn!(error = %error, reason, "kafka client error (librdkafka retries with backoff)");
    }
}

impl ConsumerContext for Ctx {
    fn rebalance(
        &self,
        base: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let Some(shared) = self.shared.get() else {
            return;
        };
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                if let Err(e) = self.assign(shared, base, tpl) {
                    error!(error = %e, "cannot take the assigned partitions");
                    *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let parts: Vec<u32> = tpl
                    .elements()
                    .iter()
                    .map(|e| e.partition() as u32)
                    .collect();
                self.release(shared, &parts);
                if let Err(e) = base.unassign() {
                    warn!(error = %e, "unassign failed");
                }
            }
            e => {
                warn!(error = ?e, "rebalance error; releasing everything");
                let parts: Vec<u32> = self.workers_keys();
                self.release(shared, &parts);
                let _ = base.unassign();
            }
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

impl Ctx {
    fn workers_keys(&self) -> Vec<u32> {
        self.workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect()
    }

    fn assign(
        &self,
        shared: &Arc<Shared>,
        base: &BaseConsumer<Self>,
        tpl: &mut TopicPartitionList,
    ) -> Result<(), ServiceError> {
        let mut parts: Vec<u32> = tpl
            .elements()
            .iter()
            .map(|e| e.partition() as u32)
            .collect();
        parts.sort_unstable();
        parts.dedup();
        shared.observer.assigned(&parts);
        let reader = Reader::new(shared)?;
        let mut cursors = HashMap::new();
        for &p in &parts {
            let cursor = reader.last_cursor(&shared.cfg.kafka.topics.sequenced, p)?;
            if cursor.positions.iter().all(|&o| o < 0) {
                info!(
                    partition = p,
                    "partition assigned; nothing sequenced yet, the sequencer starts at the inputs' first records"
                );
            } else {
                // `usage:3671 tickets:53 …`: the last offset taken from each.
                let taken = shared
                    .sources
                    .iter()
                    .zip(&cursor.positions)
                    .filter(|(_, &o)| o >= 0)
                    .map(|(t, o)| format!("{t}:{o}"))
                    .collect::<Vec<_>>()
                    .join(" ");
                let event_time = cursor
                    .time
                    .map_or_else(|| "none".to_string(), crate::codec::timefmt::format);
                info!(partition = p, sequenced_up_to = %taken, %event_time, "partition assigned; the sequencer resumes after the records it sequenced");
            }
            cursors.insert(p, cursor);
        }
        let mut elems = Vec::new();
        for e in tpl.elements() {
            elems.push((e.topic().to_string(), e.partition()));
        }
        for (topic, p) in elems {
            let src = shared.sources.iter().position(|s| *s == topic);
            let pos = src
                .and_then(|i| cursors.get(&(p as u32)).and_then(|c| c.positions.get(i)))
                .copied()
                .unwrap_or(-1);
            // Records deleted by retention before they were sequenced are
            // lost to Vitals: say so loudly (DESIGN.md, the mock's 5 MiB).
            if let Ok((low, _)) = reader.watermarks(&topic, p as u32) {
                if pos + 1 < low {
                    error!(
                        topic = %topic, partition = p, next = pos + 1, log_start = low,
                        lost = low - (pos + 1),
                        "records were deleted by retention before Vitals sequenced them; they are lost (raise the topic's retention)"
                    );
                    metrics::counter!(names::RECORDS_LOST_TO_RETENTION_TOTAL)
                        .increment((low - (pos + 1)) as u64);
                }
            }
            let off = if pos >= 0 {
                Offset::Offset(pos + 1)
            } else {
                Offset::Beginning
            };
            if let Some(i) = src {
                self.starts
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert((p as u32, i as u16), if pos >= 0 { pos + 1 } else { -1 });
            }
            tpl.set_partition_offset(&topic, p, off)?;
        }
        base.assign(tpl)?;
        let consumer = self
            .consumer
            .get()
            .and_then(Weak::upgrade)
            .ok_or_else(|| ServiceError::Topics("consumer gone during rebalance".into()))?;
        let mut workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
        for p in parts {
            if workers.contains_key(&p) {
                continue;
            }
            let cursor = cursors.remove(&p).unwrap_or_default();
            let (tx, rx) = mpsc::sync_channel(QUEUE);
            let stop = Arc::new(AtomicBool::new(false));
            let w = Worker {
                p,
                wake: tx.clone(),
                shared: shared.clone(),
                consumer: consumer.clone(),
                stop: stop.clone(),
                txn: None,
                last_sent: Default::default(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("vitals-p{p}"))
                .spawn(move || w.run(cursor, rx))
                .map_err(|e| ServiceError::Partition {
                    partition: p,
                    message: format!("cannot start worker thread: {e}"),
                })?;
            workers.insert(p, WorkerHandle { tx, stop, thread });
        }
        Ok(())
    }

    /// Joins the workers whose threads ended without being released (an
    /// error) and records the failure.
    fn reap_failed_workers(&self) {
        let ended: Vec<(u32, WorkerHandle)> = {
            let mut w = self.workers.lock().unwrap_or_else(|p| p.into_inner());
            let done: Vec<u32> = w
                .iter()
                .filter(|(_, h)| h.thread.is_finished())
                .map(|(p, _)| *p)
                .collect();
            done.into_iter()
                .filter_map(|p| w.remove(&p).map(|h| (p, h)))
                .collect()
        };
        for (p, h) in ended {
            let e = match h.thread.join() {
                Ok(Err(e)) => e,
                Ok(Ok(())) => ServiceError::Partition {
                    partition: p,
                    message: "worker stopped unexpectedly".into(),
                },
                Err(_) => ServiceError::Partition {
                    partition: p,
                    message: "worker panicked".into(),
                },
            };
            error!(partition = p, error = %e, "partition worker failed; stopping the service");
            *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
        }
    }

    /// Stops the workers of `parts`: each drains (folds what it appended,
    /// delivers every output, commits) before this returns.
    fn release(&self, shared: &Arc<Shared>, parts: &[u32]) {
        let handles: Vec<(u32, WorkerHandle)> = {
            let mut w = self.workers.lock().unwrap_or_else(|p| p.into_inner());
            parts
                .iter()
                .filter_map(|p| w.remove(p).map(|h| (*p, h)))
                .collect()
        };
        for (_, h) in &handles {
            h.stop.store(true, Ordering::SeqCst);
        }
        for (p, h) in handles {
            drop(h.tx);
            match h.thread.join() {
                Ok(Ok(())) => info!(partition = p, "partition released"),
                Ok(Err(e)) => {
                    error!(partition = p, error = %e, "partition worker failed");
                    *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                }
                Err(_) => error!(partition = p, "partition worker panicked"),
            }
            shared.observer.revoked(p);
            // The new owner reports it now; this instance's last value
            // would linger in `max by (partition)` views.
            metrics::gauge!(names::CONSUMER_LAG, "partition" => p.to_string()).set(0.0);
        }
    }
}

/// The producers' `linger.ms`. Every event is produced twice on its way to
/// an alert (appended to `vitals.sequenced`, folded once acknowledged, then
/// its outputs), so the linger is paid twice per event: kept well under a
/// millisecond. Batches still form while requests are in flight (at most
/// five per broker with idempotence) and stay bounded by librdkafka's
/// `batch.num.messages` / `batch.size`.
const LINGER_MS: &str = "0.5";

/// Longest a worker sleeps with nothing to do (it then re-checks its stop
/// flag and commits).
const IDLE_WAIT_MS: Ts = 50;

/// Wakes a worker blocked on its input channel (see [`Input::Wake`]).
struct WakeWorker(SyncSender<Input>);

impl futures::task::ArcWake for WakeWorker {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        // A full channel wakes the worker anyway.
        let _ = arc_self.0.try_send(Input::Wake);
    }
}

/// Records queued per partition between the group consumer and a worker.
const QUEUE: usize = 8192;
/// Appended records awaiting their offset before a worker blocks.
const MAX_IN_FLIGHT: usize = 20_000;

/// Runs the service until `stop` is set (SIGTERM/SIGINT) or a worker
/// fails. Returns after every partition has drained and committed.
pub fn run(
    cfg: &Config,
    observer: Arc<dyn Observer>,
    stop: Arc<AtomicBool>,
) -> Result<(), ServiceError> {
    let topics = &cfg.kafka.topics;
    let mut sources: Vec<String> = topics.inputs().iter().map(|s| s.to_string()).collect();
    sources.push(topics.repartition.clone());
    let formats = sources
        .iter()
        .map(|t| match cfg.kafka.formats.get(t).map(String::as_str) {
            Some("protobuf") => Format::Protobuf,
            _ => Format::Json,
        })
        .collect();
    let Some(partitions) = check_topics(cfg, &stop)? else {
        info!("stopped before the brokers were reached");
        return Ok(());
    };
    if cfg.kafka.transactions {
        // Fail at start, naming the setting, when the broker lacks them.
        let probe = format!("{}-probe-{}", cfg.kafka.group_id, std::process::id());
        drop(transactional_producer(cfg, &probe)?);
        info!("kafka.transactions: each batch's outputs and input offsets commit atomically");
    }
    let mut pc = producer_config(cfg);
    pc.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", LINGER_MS)
        .set("message.timeout.ms", "0")
        .set("queue.buffering.max.messages", "1000000");
    let producer: FutureProducer = pc.create()?;
    if let Some(sh) = &cfg.shadow {
        let id = Model::new(sh.clone()).id;
        info!(shadow = %id, topic = %topics.shadow, "shadow scorecard: scored beside the live one, published only to its topic and metrics");
    }
    let shared = Arc::new(Shared {
        model: Arc::new(Model::new(cfg.model.clone())),
        shadow: cfg.shadow.clone().map(|m| Arc::new(Model::new(m))),
        sources,
        formats,
        partitions,
        producer,
        observer,
        out_format: if cfg.kafka.output_format == "protobuf" {
            OutFormat::Protobuf
        } else {
            OutFormat::Json
        },
        snapshots: snapshot_store(cfg)?,
        cfg: cfg.clone(),
    });
    let ctx = Ctx {
        shared: OnceLock::new(),
        consumer: OnceLock::new(),
        workers: Mutex::new(HashMap::new()),
        generation: Default::default(),
        starts: Mutex::new(HashMap::new()),
        failed: Mutex::new(None),
    };
    let _ = ctx.shared.set(shared.clone());
    let mut cc = consumer_config(cfg);
    cc.set("group.id", &cfg.kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "true")
        .set("partition.assignment.strategy", "range")
        // A record's end-to-end latency includes the wait for its fetch;
        // a real broker answers as soon as records arrive, the embedded
        // mock only after this (see kafka.fetch_wait_max_ms).
        .set("fetch.wait.max.ms", cfg.kafka.fetch_wait_max_ms.to_string())
        .set("isolation.level", "read_committed");
    let consumer: Arc<BaseConsumer<Ctx>> = Arc::new(cc.create_with_context(ctx)?);
    let _ = consumer.context().consumer.set(Arc::downgrade(&consumer));
    let subs: Vec<&str> = shared.sources.iter().map(String::as_str).collect();
    consumer.subscribe(&subs)?;
    info!(brokers = %cfg.kafka.brokers, group = %cfg.kafka.group_id, partitions, "vitals run: subscribed to {}", subs.join(", "));

    let mut routes: HashMap<u32, SyncSender<Input>> = HashMap::new();
    let mut seen_generation = u64::MAX;
    let mut last_poll_error: Option<Instant> = None;
    let mut last_check = Instant::now();
    let mut last_lag = Instant::now();
    let mut tracked: HashMap<(u32, u16), Tracked> = HashMap::new();
    let source_names: Vec<CString> = shared
        .sources
        .iter()
        .map(|t| CString::new(t.as_str()))
        .collect::<Result<_, _>>()
        .map_err(|e| ServiceError::Topics(format!("topic name: {e}")))?;
    while !stop.load(Ordering::SeqCst) {
        // Returns at once on a record or an end-of-partition event, which
        // is all the merge waits on; the timeout only paces the idle
        // checks below.
        let msg = consumer.poll(Duration::from_millis(50));
        // Tell the workers which sources are read to their end (a
        // fallback: records and end-of-partition events tell them at
        // once, below), and export the lag.
        if msg.is_none() || last_check.elapsed() > Duration::from_millis(5) {
            last_check = Instant::now();
            let lag = last_lag.elapsed() > Duration::from_secs(1);
            if lag {
                last_lag = Instant::now();
                // A worker that stopped by itself failed: the service stops
                // (non-zero exit; a restart recovers exactly once) rather
                // than run on with a partition nobody folds.
                consumer.context().reap_failed_workers();
            }
            report_positions(&consumer, &source_names, &routes, &mut tracked, lag);
        }
        let generation = consumer.context().generation.load(Ordering::SeqCst);
        if generation != seen_generation {
            seen_generation = generation;
            for (k, start) in consumer
                .context()
                .starts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .drain()
            {
                tracked.insert(
                    k,
                    Tracked {
                        next: start,
                        announced: false,
                    },
                );
            }
            routes = consumer
                .context()
                .workers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|(p, h)| (*p, h.tx.clone()))
                .collect();
        }
        if let Some(e) = consumer
            .context()
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            shutdown(&consumer, &shared);
            return Err(e);
        }
        let (p, input) = match msg {
            None => continue,
            Some(Ok(m)) => match source_record(&shared, &m) {
                Some(r) => (m.partition() as u32, Input::Record(r)),
                None => continue,
            },
            Some(Err(KafkaError::PartitionEOF(p))) => {
                // Some source of `p` was read to its end (the event does not
                // say which): check them all now, from what was routed.
                let p = p as u32;
                if let Some(tx) = routes.get(&p) {
                    for (i, name) in source_names.iter().enumerate() {
                        let Some(t) = tracked.get_mut(&(p, i as u16)) else {
                            continue;
                        };
                        if t.announced {
                            continue;
                        }
                        let Some((low, high)) = cached_watermarks(&consumer, name, p as i32) else {
                            continue;
                        };
                        if t.next(low) >= high {
                            t.announced = true;
                            send_blocking(tx, Input::CaughtUp(i as u16), &stop);
                        }
                    }
                }
                continue;
            }
            Some(Err(e)) => {
                if last_poll_error.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                    warn!(error = %e, "consumer error (librdkafka retries with backoff)");
                    last_poll_error = Some(Instant::now());
                }
                continue;
            }
        };
        if let Some(tx) = routes.get(&p) {
            let Input::Record(r) = &input else {
                continue;
            };
            let (source, next) = (r.source, r.offset + 1);
            // The record's fetch updated the cached high watermark: when
            // the record is the last one below it, its source is read to
            // the end right after it, and the merge need not wait for that
            // source — say so at once, in order behind the record.
            let at_end = cached_watermarks(&consumer, &source_names[source as usize], p as i32)
                .is_some_and(|(_, high)| next >= high);
            tracked.insert(
                (p, source),
                Tracked {
                    next,
                    announced: at_end,
                },
            );
            send_blocking(tx, input, &stop);
            if at_end {
                send_blocking(tx, Input::CaughtUp(source), &stop);
            }
        }
    }
    info!("stopping: draining every partition");
    shutdown(&consumer, &shared);
    let failed = consumer
        .context()
        .failed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// What the poll loop knows of a routed (partition, source).
struct Tracked {
    /// The offset of the next record to come: after the last one routed,
    /// or where the assignment starts (−1: the log's start).
    next: i64,
    /// Its worker was told the source is read to its end, since its last
    /// record.
    announced: bool,
}

impl Tracked {
    /// The next offset, the log's start (`low`) standing for −1.
    fn next(&self, low: i64) -> i64 {
        if self.next < 0 {
            low
        } else {
            self.next
        }
    }
}

/// For every routed partition: tells its worker which sources are read to
/// their (cached) high watermark, and with `lag`, exports the consumer lag
/// per partition. Uses librdkafka's local state only, no request.
fn report_positions(
    consumer: &BaseConsumer<Ctx>,
    sources: &[CString],
    routes: &HashMap<u32, SyncSender<Input>>,
    tracked: &mut HashMap<(u32, u16), Tracked>,
    lag: bool,
) {
    if routes.is_empty() {
        return;
    }
    let Ok(pos) = consumer.position() else {
        return;
    };
    for (&p, tx) in routes {
        let mut behind = 0i64;
        for (i, t) in sources.iter().enumerate() {
            let Some((low, high)) = cached_watermarks(consumer, t, p as i32) else {
                continue;
            };
            let track = tracked.entry((p, i as u16)).or_insert(Tracked {
                next: -1,
                announced: false,
            });
            // The consumer's position also moves past records the poll loop
            // never sees (transaction markers).
            let position = t
                .to_str()
                .ok()
                .and_then(|t| pos.find_partition(t, p as i32))
                .and_then(|e| match e.offset() {
                    Offset::Offset(n) => Some(n),
                    _ => None,
                });
            let next = track.next(low);
            let next = position.map_or(next, |n| n.max(next));
            behind += (high - next).max(0);
            if next >= high && !track.announced && tx.try_send(Input::CaughtUp(i as u16)).is_ok() {
                track.announced = true;
            }
        }
        if lag {
            metrics::gauge!(names::CONSUMER_LAG, "partition" => p.to_string()).set(behind as f64);
        }
    }
}

/// librdkafka's locally cached low/high watermarks of a partition (updated
/// by every fetch); rust-rdkafka has no wrapper for this call.
fn cached_watermarks(consumer: &BaseConsumer<Ctx>, topic: &CStr, p: i32) -> Option<(i64, i64)> {
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid while `consumer` lives; the
    // topic is a NUL-terminated string that outlives the call; the out
    // pointers are valid i64s. The call only reads librdkafka's state.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            p,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some((low, high))
}

fn send_blocking(tx: &SyncSender<Input>, mut input: Input, stop: &AtomicBool) {
    loop {
        match tx.try_send(input) {
            Ok(()) => return,
            Err(TrySendError::Disconnected(_)) => return,
            Err(TrySendError::Full(back)) => {
                // Back-pressure: the worker is behind.
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                input = back;
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }
}

fn shutdown(consumer: &Arc<BaseConsumer<Ctx>>, shared: &Arc<Shared>) {
    let parts = consumer.context().workers_keys();
    consumer.context().release(shared, &parts);
    consumer.unsubscribe();
}

/// A transactional producer with `id`, its transactions initialised (which
/// fences an earlier producer with the same id).
fn transactional_producer(cfg: &Config, id: &str) -> Result<FutureProducer, ServiceError> {
    let mut pc = producer_config(cfg);
    pc.set("transactional.id", id)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", LINGER_MS)
        .set("transaction.timeout.ms", "60000");
    let p: FutureProducer = pc.create()?;
    p.init_transactions(Duration::from_secs(30)).map_err(|e| {
        ServiceError::Topics(format!(
            "kafka.transactions = true, but the brokers at {} do not support transactions ({e}); \
             set kafka.transactions = false (exactly-once does not depend on it)",
            cfg.kafka.brokers
        ))
    })?;
    Ok(p)
}

/// The snapshot store `[snapshot]` asks for, if snapshots are enabled.
pub fn snapshot_store(cfg: &Config) -> Result<Option<Arc<dyn SnapshotStore>>, ServiceError> {
    let s = &cfg.snapshot;
    if !s.enabled {
        return Ok(None);
    }
    Ok(Some(if s.store == "kafka" {
        info!(topic = %s.topic, chunk_bytes = s.chunk_bytes, keep = s.keep, "snapshots in a kafka topic");
        Arc::new(KafkaStore::with_clients(
            &consumer_config(cfg),
            &producer_config(cfg),
            &s.topic,
            usize::try_from(s.chunk_bytes).unwrap_or(usize::MAX),
        )?)
    } else {
        info!(dir = %s.dir, keep = s.keep, "snapshots in a local directory");
        Arc::new(DirStore::new(&s.dir))
    }))
}

/// How long `vitals run` retries unreachable brokers at start before it
/// gives up with an error naming them.
const START_WAIT: Duration = Duration::from_secs(30);

/// Verifies every topic exists and all are co-partitioned; returns the
/// partition count (`None`: `stop` was raised while the brokers could not
/// be reached yet). Unreachable brokers are retried for
/// [`START_WAIT`], with a warning naming them every few seconds.
pub fn check_topics(cfg: &Config, stop: &AtomicBool) -> Result<Option<u32>, ServiceError> {
    let c: BaseConsumer = consumer_config(cfg).create()?;
    let started = Instant::now();
    let mut warned: Option<Instant> = None;
    let md = loop {
        // Short attempts, so that SIGTERM/Ctrl-C is honoured at once.
        match c.fetch_metadata(None, Duration::from_secs(1)) {
            Ok(md) => break md,
            Err(e) => {
                let e = redact(e);
                if stop.load(Ordering::SeqCst) {
                    return Ok(None);
                }
                if started.elapsed() >= START_WAIT {
                    return Err(ServiceError::Topics(format!(
                        "cannot reach the Kafka brokers at {} (kafka.brokers, --brokers, VITALS_BROKERS) within {} s: {e}",
                        cfg.kafka.brokers,
                        START_WAIT.as_secs()
                    )));
                }
                if warned.is_none_or(|w| w.elapsed() >= Duration::from_secs(5)) {
                    warn!(brokers = %cfg.kafka.brokers, error = %e, "cannot reach the Kafka brokers yet; retrying");
                    warned = Some(Instant::now());
                }
            }
        }
    };
    let t = &cfg.kafka.topics;
    let mut names: Vec<&str> = t.inputs().to_vec();
    names.extend([
        t.sequenced.as_str(),
        t.repartition.as_str(),
        t.health.as_str(),
        t.at_risk.as_str(),
        t.upsell.as_str(),
        t.dlq.as_str(),
    ]);
    if cfg.shadow.is_some() {
        names.push(t.shadow.as_str());
    }
    // Snapshots of partition p live in partition p of the store's topic.
    if cfg.snapshot.enabled && cfg.snapshot.store == "kafka" {
        names.push(cfg.snapshot.topic.as_str());
    }
    let mut counts = Vec::new();
    let mut missing = Vec::new();
    for n in names {
        match md.topics().iter().find(|x| x.name() == n) {
            Some(x) if x.error().is_none() && !x.partitions().is_empty() => {
                counts.push((n.to_string(), x.partitions().len() as u32))
            }
            _ => missing.push(n),
        }
    }
    if !missing.is_empty() {
        return Err(ServiceError::Topics(format!(
            "missing topics on {}: {} (create them with the inputs' partition count; see kafka.topics)",
            cfg.kafka.brokers,
            missing.join(", ")
        )));
    }
    check_co_partitioned(&counts)
        .map(Some)
        .map_err(|e| ServiceError::Topics(e.to_string()))
}

fn header<'a>(m: &'a BorrowedMessage<'_>, name: &str) -> Option<&'a [u8]> {
    m.headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
}

fn source_record(shared: &Shared, m: &BorrowedMessage<'_>) -> Option<SourceRecord> {
    let source = shared.sources.iter().position(|s| s == m.topic())? as u16;
    let is_repartition = source as usize + 1 == shared.sources.len();
    let format = match header(m, headers::CONTENT_TYPE) {
        Some(v) if v == headers::PROTOBUF.as_bytes() => Format::Protobuf,
        _ if is_repartition => match header(m, headers::FORMAT) {
            Some(b"protobuf") => Format::Protobuf,
            _ => Format::Json,
        },
        _ => shared.formats[source as usize],
    };
    let origin = if is_repartition {
        let num = |n| {
            header(m, n)
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|s| s.parse::<i64>().ok())
        };
        match (
            num(headers::PROVENANCE_PARTITION),
            num(headers::PROVENANCE_OFFSET),
        ) {
            (Some(p), Some(o)) => Some((p as u32, o)),
            _ => None,
        }
    } else {
        None
    };
    Some(SourceRecord {
        source,
        partition: m.partition() as u32,
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        value: m.payload().unwrap_or_default().to_vec(),
        format,
        origin,
        timestamp: m.timestamp().to_millis(),
    })
}

/// Reads single records and ranges with its own (group-less) consumer.
struct Reader {
    c: BaseConsumer,
}

impl Reader {
    fn new(shared: &Shared) -> Result<Self, ServiceError> {
        let mut cc = shared.consumer_client();
        cc.set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("group.id", format!("{}.reader", shared.cfg.kafka.group_id))
            .set("enable.partition.eof", "false")
            .set("isolation.level", "read_committed")
            .set("fetch.wait.max.ms", "10")
            .set("fetch.max.bytes", "52428800")
            .set("max.partition.fetch.bytes", "10485760");
        Ok(Reader { c: cc.create()? })
    }

    fn watermarks(&self, topic: &str, p: u32) -> Result<(i64, i64), ServiceError> {
        // Retried: at start the broker may still be coming up.
        let mut wait = Duration::from_millis(100);
        loop {
            match self
                .c
                .fetch_watermarks(topic, p as i32, Duration::from_secs(10))
            {
                Ok(w) => return Ok(w),
                Err(e) if wait < Duration::from_secs(10) => {
                    warn!(topic, partition = p, error = %e, "cannot read watermarks; retrying");
                    std::thread::sleep(wait);
                    wait *= 2;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Calls `f` on every record of `topic[p]` in `[from, to)`.
    fn read(
        &self,
        topic: &str,
        p: u32,
        from: i64,
        to: i64,
        mut f: impl FnMut(&BorrowedMessage<'_>) -> Result<(), ServiceError>,
    ) -> Result<(), ServiceError> {
        if from >= to {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, p as i32, Offset::Offset(from))?;
        self.c.assign(&tpl)?;
        let mut next = from;
        while next < to {
            match self.c.poll(Duration::from_secs(1)) {
                Some(Ok(m)) => {
                    next = m.offset() + 1;
                    f(&m)?;
                }
                Some(Err(e)) => warn!(topic, partition = p, error = %e, "read error; retrying"),
                None => debug!(topic, partition = p, next, to, "waiting for records"),
            }
        }
        self.c.unassign()?;
        Ok(())
    }

    /// The last record's headers of `topic[p]`, if any.
    fn last<T>(
        &self,
        topic: &str,
        p: u32,
        f: impl Fn(&[(&str, &[u8])]) -> T,
    ) -> Result<Option<T>, ServiceError> {
        let (low, high) = self.watermarks(topic, p)?;
        if high <= low {
            return Ok(None);
        }
        let mut out = None;
        self.read(topic, p, high - 1, high, |m| {
            let h = all_headers(m);
            out = Some(f(&h));
            Ok(())
        })?;
        Ok(out)
    }

    fn last_cursor(&self, topic: &str, p: u32) -> Result<Cursor, ServiceError> {
        let c = self.last(topic, p, |h| {
            h.iter()
                .find(|(k, _)| *k == headers::CURSOR)
                .and_then(|(_, v)| std::str::from_utf8(v).ok())
                .and_then(Cursor::decode)
        })?;
        match c {
            None => Ok(Cursor::default()),
            Some(Some(c)) => Ok(c),
            Some(None) => Err(ServiceError::Partition {
                partition: p,
                message: format!(
                    "the last record of {topic}[{p}] has no valid {} header: was it written by something other than Vitals?",
                    headers::CURSOR
                ),
            }),
        }
    }
}

/// The `vitals.scorecard` header of an output record.
fn scorecard_of(headers: &[(&str, &[u8])]) -> Option<String> {
    headers
        .iter()
        .find(|(k, _)| *k == headers::SCORECARD)
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
        .map(str::to_string)
}

fn all_headers<'a>(m: &'a BorrowedMessage<'_>) -> Vec<(&'a str, &'a [u8])> {
    m.headers()
        .map(|h| {
            h.iter()
                .map(|x| (x.key, x.value.unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default()
}

fn owned_headers(h: &[(&'static str, String)]) -> OwnedHeaders {
    h.iter()
        .fold(OwnedHeaders::new_with_capacity(h.len()), |acc, (k, v)| {
            acc.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            })
        })
}

struct Worker {
    p: u32,
    /// The worker's own input channel, for [`Input::Wake`].
    wake: SyncSender<Input>,
    shared: Arc<Shared>,
    consumer: Arc<BaseConsumer<Ctx>>,
    stop: Arc<AtomicBool>,
    /// With `kafka.transactions`: this partition's transactional producer
    /// (`transactional.id` = `<group>-p<partition>`, so a zombie owner of
    /// the partition is fenced).
    txn: Option<FutureProducer>,
    /// The last output sent to each (topic, partition), not yet awaited.
    last_sent: std::cell::RefCell<HashMap<(OutTopic, u32), DeliveryFuture>>,
}

/// An appended record awaiting its offset.
struct InFlight {
    entry: Sequenced,
    /// The record's cursor header.
    cursor: String,
    delivery: DeliveryFuture,
    /// Kafka timestamp of the source record (event-to-alert latency).
    timestamp: Option<i64>,
}

impl Worker {
    fn err(&self, message: impl Into<String>) -> ServiceError {
        ServiceError::Partition {
            partition: self.p,
            message: message.into(),
        }
    }

    fn producer(&self) -> &FutureProducer {
        self.txn.as_ref().unwrap_or(&self.shared.producer)
    }

    /// With transactions: commits the open transaction (records produced
    /// since the last commit, plus the input offsets sequenced) and opens
    /// the next.
    fn commit_transaction(&self, seq: &Sequencer) -> Result<(), ServiceError> {
        let Some(t) = &self.txn else { return Ok(()) };
        let mut tpl = TopicPartitionList::new();
        for (topic, &o) in self.shared.sources.iter().zip(&seq.cursor().positions) {
            if o >= 0 {
                tpl.add_partition_offset(topic, self.p as i32, Offset::Offset(o + 1))?;
            }
        }
        let timeout = Duration::from_secs(30);
        if tpl.count() > 0 {
            if let Some(meta) = self.consumer.group_metadata() {
                self.txn_retry("send offsets", || {
                    t.send_offsets_to_transaction(&tpl, &meta, timeout)
                })?;
            }
        }
        let start = Instant::now();
        self.txn_retry("commit", || t.commit_transaction(timeout))?;
        metrics::histogram!(names::COMMIT_SECONDS).record(start.elapsed().as_secs_f64());
        t.begin_transaction()
            .map_err(|e| self.err(format!("kafka.transactions: begin failed: {e}")))
    }

    /// Runs a transaction call, retrying it (with backoff, up to about a
    /// minute) while the error is retriable — a broker or coordinator
    /// briefly unavailable. Other errors fail the partition: an abortable
    /// or fatal transaction error leaves outputs that only a restart's
    /// provenance check can reconcile.
    fn txn_retry(
        &self,
        what: &str,
        mut call: impl FnMut() -> rdkafka::error::KafkaResult<()>,
    ) -> Result<(), ServiceError> {
        let mut backoff = Duration::from_millis(50);
        for attempt in 1.. {
            match call() {
                Ok(()) => return Ok(()),
                Err(KafkaError::Transaction(e)) if e.is_retriable() && attempt < 30 => {
                    metrics::counter!(names::TRANSACTION_RETRIES_TOTAL).increment(1);
                    warn!(partition = self.p, attempt, error = %e, "kafka.transactions: {what} failed with a retriable error; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(self.err(format!("kafka.transactions: {what} failed: {e}"))),
            }
        }
        Ok(())
    }

    fn run(mut self, cursor: Cursor, rx: Receiver<Input>) -> Result<(), ServiceError> {
        let p = self.p;
        let shared = self.shared.clone();
        shared.observer.restoring(p);
        if shared.cfg.kafka.transactions {
            let t = transactional_producer(
                &shared.cfg,
                &format!("{}-p{p}", shared.cfg.kafka.group_id),
            )?;
            t.begin_transaction()?;
            self.txn = Some(t);
        }
        let started = Instant::now();
        let (mut fold, mut last_cursor) = self.restore()?;
        let restored_in = started.elapsed();
        metrics::histogram!(names::RESTORE_SECONDS).record(restored_in.as_secs_f64());
        if let Some(t) = &self.txn {
            self.txn_retry("commit", || t.commit_transaction(Duration::from_secs(30)))?;
            t.begin_transaction()
                .map_err(|e| self.err(format!("kafka.transactions: begin failed: {e}")))?;
        }
        let n = shared.partitions;
        let mut seq = Sequencer::resume(
            p,
            SequencerConfig {
                partitions: n,
                sources: shared.sources.len() as u16,
                max_wait_ms: shared.cfg.sequencer.max_wait_ms as i64,
                tick_every_ms: shared.cfg.sequencer.tick_every_ms as i64,
            },
            cursor,
        );
        info!(
            partition = p,
            accounts = fold.part.accounts.len(),
            next_offset = fold.next_offset().unwrap_or(0),
            suppressing = fold.suppressed,
            restore_ms = restored_in.as_millis() as u64,
            "partition restored; folding live"
        );
        {
            let ids: Vec<&str> = fold.part.accounts.iter().map(|a| &*a.id).collect();
            shared
                .observer
                .batch(p, &fold.part, &ids, &self.status(&fold, &seq, false));
            if let Some(sh) = &fold.shadow {
                shared.observer.shadow(p, sh);
            }
        }
        let epoch = Instant::now();
        let wall = || epoch.elapsed().as_millis() as Ts;
        let mut decisions = Vec::new();
        let mut in_flight: VecDeque<InFlight> = VecDeque::new();
        let mut outputs = Vec::new();
        let mut last_commit = Instant::now();
        let mut committed: Vec<i64> = Vec::new();
        let mut disconnected = false;
        let mut since_snapshot = 0u64;
        let mut last_snapshot = Instant::now();
        let mut snap_writer: Option<JoinHandle<()>> = None;
        // The head delivery is polled with this waker: its completion sends
        // `Input::Wake`, so the worker sleeps until input arrives, the log
        // acknowledges a record, or the sequencer's next deadline — no
        // fixed polling pace between appending a record and folding it.
        let waker = futures::task::waker(Arc::new(WakeWorker(self.wake.clone())));
        let mut cx = std::task::Context::from_waker(&waker);
        loop {
            // Take in what arrived.
            let wait = seq
                .next_deadline()
                .map_or(IDLE_WAIT_MS, |d| (d - wall()).clamp(0, IDLE_WAIT_MS));
            let wait = Duration::from_millis(wait as u64);
            let mut got = 0usize;
            match rx.recv_timeout(wait) {
                Ok(i) => {
                    self.take(&mut seq, i, wall());
                    got += 1;
                    while got < 4096 {
                        match rx.try_recv() {
                            Ok(i) => {
                                self.take(&mut seq, i, wall());
                                got += 1;
                            }
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => disconnected = true,
            }
            if !disconnected {
                seq.poll(wall(), &mut decisions);
                for (source, n) in seq.take_deadline_waits() {
                    let topic = shared
                        .sources
                        .get(source as usize)
                        .cloned()
                        .unwrap_or_default();
                    metrics::counter!(names::SEQUENCER_DEADLINE_RELEASES_TOTAL, "topic" => topic)
                        .increment(n);
                }
            }
            for d in decisions.drain(..) {
                let f = self.append(d)?;
                in_flight.push_back(f);
            }
            // Fold what the log acknowledged, in offset order.
            let must_drain = disconnected || self.stop.load(Ordering::SeqCst) || self.txn.is_some();
            let mut folded = 0u64;
            let batch_start = Instant::now();
            loop {
                let full = in_flight.len() > MAX_IN_FLIGHT;
                let Some(head) = in_flight.front_mut() else {
                    break;
                };
                let ready = if must_drain || full {
                    Some(futures::executor::block_on(&mut head.delivery))
                } else {
                    match std::pin::Pin::new(&mut head.delivery).poll(&mut cx) {
                        std::task::Poll::Ready(r) => Some(r),
                        std::task::Poll::Pending => None,
                    }
                };
                let Some(res) = ready else { break };
                let f = in_flight.pop_front().expect("head exists");
                let offset = match res {
                    Ok(Ok(d)) => d.offset,
                    Ok(Err((e, _))) => {
                        return Err(self.err(format!("append to the sequenced log failed: {e}")))
                    }
                    Err(_) => return Err(self.err("producer dropped a delivery")),
                };
                fold.on_record(offset, &f.entry, &mut outputs)
                    .map_err(|e| self.err(format!("{e}: another writer on the sequenced log?")))?;
                for o in outputs.drain(..) {
                    self.count(&o, f.timestamp);
                    self.publish(&o)?;
                }
                folded += 1;
                last_cursor = f.cursor;
            }
            if folded > 0 {
                let mut touched = std::mem::take(&mut fold.touched);
                touched.sort_unstable();
                touched.dedup();
                let ids: Vec<&str> = touched.iter().map(String::as_str).collect();
                shared
                    .observer
                    .batch(p, &fold.part, &ids, &self.status(&fold, &seq, false));
                if let Some(sh) = &fold.shadow {
                    shared.observer.shadow(p, sh);
                }
                for s in fold.scores.drain(..) {
                    metrics::histogram!(names::EVALUATED_SCORE).record(s);
                }
                for (topic, kinds) in fold.tally.drain() {
                    for ((ty, outcome), n) in kinds {
                        metrics::counter!(names::EVENTS_TOTAL, "topic" => topic.clone(), "type" => ty, "outcome" => outcome)
                            .increment(n);
                    }
                }
                metrics::histogram!(names::BATCH_SECONDS)
                    .record(batch_start.elapsed().as_secs_f64());
                metrics::counter!(names::SEQUENCED_TOTAL).increment(folded);
                self.commit_transaction(&seq)?;
                since_snapshot += folded;
                let snap = &shared.cfg.snapshot;
                let due_time = snap.interval_secs > 0
                    && last_snapshot.elapsed() >= Duration::from_secs(snap.interval_secs);
                let due_count = snap.every_records > 0 && since_snapshot >= snap.every_records;
                if due_time || due_count {
                    self.snapshot(&mut fold, &last_cursor, false, &mut snap_writer);
                    since_snapshot = 0;
                    last_snapshot = Instant::now();
                }
            }
            let stopping = disconnected || self.stop.load(Ordering::SeqCst);
            if stopping && in_flight.is_empty() {
                break;
            }
            if last_commit.elapsed() > Duration::from_secs(1) {
                self.commit(&seq, &mut committed, CommitMode::Async);
                last_commit = Instant::now();
            }
        }
        // Deliver every output before the partition is released.
        if let Some(t) = &self.txn {
            self.commit_transaction(&seq)?;
            let _ = t.abort_transaction(Duration::from_secs(10));
        }
        if let Err(e) = self.producer().flush(Duration::from_secs(60)) {
            warn!(partition = p, error = %e, "flush did not finish; outputs not yet delivered are re-derived by the next owner");
        }
        self.commit(&seq, &mut committed, CommitMode::Sync);
        // Hand-off: the next owner restores from here, replaying nothing.
        self.snapshot(&mut fold, &last_cursor, true, &mut snap_writer);
        Ok(())
    }

    /// Metrics for one output record.
    fn count(&self, o: &OutputRecord, source_timestamp: Option<i64>) {
        match o.topic {
            OutTopic::Health => metrics::counter!(names::HEALTH_PUBLISHED_TOTAL).increment(1),
            OutTopic::AtRisk | OutTopic::Upsell => {
                let kind = if o.topic == OutTopic::Upsell {
                    "upsell_opportunity"
                } else if o.value.windows(18).any(|w| w == b"\"kind\":\"recovered\"") {
                    "recovered"
                } else {
                    "at_risk"
                };
                metrics::counter!(names::ALERTS_TOTAL, "kind" => kind).increment(1);
                if let Some(ts) = source_timestamp {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as i64);
                    metrics::histogram!(names::EVENT_TO_ALERT_SECONDS)
                        .record((now - ts).max(0) as f64 / 1000.0);
                }
            }
            OutTopic::Dlq => {
                let topic = o
                    .headers
                    .iter()
                    .find(|(k, _)| *k == headers::SOURCE_TOPIC)
                    .map_or(String::new(), |(_, v)| v.clone());
                metrics::counter!(names::EVENTS_TOTAL, "topic" => topic.clone(), "type" => "", "outcome" => "invalid").increment(1);
                metrics::counter!(names::DLQ_TOTAL, "topic" => topic).increment(1);
            }
            OutTopic::Shadow => metrics::counter!(names::SHADOW_PUBLISHED_TOTAL).increment(1),
            OutTopic::Repartition => {
                metrics::counter!(names::REPARTITIONED_TOTAL).increment(1);
                warn!(partition = self.p, to = o.partition, "record on the wrong input partition (producer partitioner is not murmur2?); re-routed to its owner");
            }
        }
    }

    fn status(&self, fold: &FoldWorker, seq: &Sequencer, restoring: bool) -> Status {
        Status {
            restoring,
            watermark: (fold.part.max_time != Ts::MIN).then(|| fold.part.watermark()),
            sequenced_offset: fold.next_offset().unwrap_or(0),
            input_offsets: self
                .shared
                .sources
                .iter()
                .zip(&seq.cursor().positions)
                .map(|(t, &o)| (t.clone(), o + 1))
                .collect(),
        }
    }

    fn take(&self, seq: &mut Sequencer, i: Input, wall: Ts) {
        match i {
            Input::Record(r) => seq.push(r, wall),
            Input::CaughtUp(s) => seq.set_caught_up(s, true),
            Input::Wake => {}
        }
    }

    fn append(&self, d: Decision) -> Result<InFlight, ServiceError> {
        let timestamp = match &d {
            Decision::Append { record, .. } => record.timestamp,
            Decision::Tick { .. } => None,
        };
        let (entry, cursor) = Sequenced::from_decision(d, &self.shared.sources);
        let rec = entry.to_record(cursor.clone());
        let topic = &self.shared.cfg.kafka.topics.sequenced;
        let mut fr = FutureRecord::<[u8], [u8]>::to(topic)
            .partition(self.p as i32)
            .payload(&rec.value)
            .headers(owned_headers(&rec.headers));
        if let Some(k) = &rec.key {
            fr = fr.key(k);
        }
        let delivery = self.send(fr)?;
        Ok(InFlight {
            entry,
            cursor,
            delivery,
            timestamp,
        })
    }

    fn send(&self, mut fr: FutureRecord<'_, [u8], [u8]>) -> Result<DeliveryFuture, ServiceError> {
        loop {
            match self.producer().send_result(fr) {
                Ok(d) => return Ok(d),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // The local queue is full: wait for deliveries.
                    self.producer().poll(Duration::from_millis(10));
                    fr = back;
                }
                Err((e, _)) => return Err(self.err(format!("produce failed: {e}"))),
            }
        }
    }

    fn publish(&self, o: &OutputRecord) -> Result<(), ServiceError> {
        let topic = self.shared.out_topic(o.topic);
        let partition = if o.topic == OutTopic::Repartition {
            o.partition
        } else {
            self.p
        };
        let mut fr = FutureRecord::<[u8], [u8]>::to(topic)
            .partition(partition as i32)
            .payload(&o.value)
            .headers(owned_headers(&o.all_headers(self.p)));
        if let Some(k) = &o.key {
            fr = fr.key(k);
        }
        // Delivery is not awaited per record: the idempotent producer
        // keeps order, and the tails tell a successor what arrived. The
        // last delivery per output partition is kept: a snapshot is written
        // only once everything before it was delivered (its successor will
        // not derive those outputs again).
        let d = self.send(fr)?;
        self.last_sent.borrow_mut().insert((o.topic, partition), d);
        Ok(())
    }

    fn commit(&self, seq: &Sequencer, committed: &mut Vec<i64>, mode: CommitMode) {
        let pos = &seq.cursor().positions;
        if pos == committed {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (t, &o) in self.shared.sources.iter().zip(pos) {
            if o >= 0 {
                let _ = tpl.add_partition_offset(t, self.p as i32, Offset::Offset(o + 1));
            }
        }
        if tpl.count() == 0 {
            return;
        }
        let start = Instant::now();
        let r = self.consumer.commit(&tpl, mode);
        metrics::histogram!(names::COMMIT_SECONDS).record(start.elapsed().as_secs_f64());
        match r {
            Ok(()) => *committed = pos.clone(),
            Err(e) => {
                debug!(partition = self.p, error = %e, "offset commit failed (offsets are for lag only)")
            }
        }
    }

    /// Rebuilds the fold from `vitals.sequenced[p]` and learns what is
    /// already published.
    /// The cursor header of `vitals.sequenced[p]` at `offset` ("" before
    /// the log's start).
    fn cursor_at(&self, reader: &Reader, offset: i64, low: i64) -> Result<String, ServiceError> {
        if offset < low {
            return Ok(String::new());
        }
        let topic = &self.shared.cfg.kafka.topics.sequenced;
        let mut out = String::new();
        reader.read(topic, self.p, offset, offset + 1, |m| {
            out = header(m, headers::CURSOR)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            Ok(())
        })?;
        Ok(out)
    }

    /// Writes a snapshot of the fold (state at `fold.next_offset()`):
    /// encoded here (the partition's only stall), stored on a background
    /// thread unless `wait`.
    fn snapshot(
        &self,
        fold: &mut FoldWorker,
        cursor: &str,
        wait: bool,
        writer: &mut Option<JoinHandle<()>>,
    ) {
        let (Some(store), Some(next)) = (self.shared.snapshots.clone(), fold.next_offset()) else {
            return;
        };
        if let Some(w) = writer.take() {
            if !w.is_finished() && !wait {
                *writer = Some(w);
                return; // the previous one is still being written
            }
            if w.join().is_err() {
                metrics::counter!(names::SNAPSHOT_FAILURES_TOTAL).increment(1);
                warn!(
                    partition = self.p,
                    "the snapshot writer panicked; that snapshot was not written (recovery replays more of the log)"
                );
            }
        }
        let p = self.p;
        let start = Instant::now();
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        // The partition stalls only for the copy; encoding and writing
        // happen on the writer thread.
        let copy = fold.part.snapshot_copy();
        let shadow = fold.shadow.as_mut().map(Partition::snapshot_copy);
        let stall = start.elapsed();
        metrics::histogram!(names::SNAPSHOT_STALL_SECONDS).record(stall.as_secs_f64());
        let cursor = cursor.to_string();
        let outputs_before: Vec<DeliveryFuture> = self
            .last_sent
            .borrow_mut()
            .drain()
            .map(|(_, d)| d)
            .collect();
        let keep = self.shared.cfg.snapshot.keep as usize;
        let accounts = fold.part.accounts.len();
        let write = move || {
            // Every output derived before `next` must be delivered first:
            // the snapshot's successor will not derive them again.
            for d in outputs_before {
                if !matches!(futures::executor::block_on(d), Ok(Ok(_))) {
                    warn!(
                        partition = p,
                        "an output before the snapshot was not delivered; snapshot skipped"
                    );
                    return;
                }
            }
            // Streamed to the store: a directory store never holds the
            // whole snapshot in memory.
            let snap = snapshot::Writer::new(&copy, shadow.as_ref(), p, next, &cursor, created);
            let stored = store.put_from(p, next, &snap).and_then(|stored| {
                store.retain(p, keep)?;
                Ok(stored)
            });
            match stored {
                Ok((name, size)) => {
                    let took = start.elapsed();
                    metrics::histogram!(names::SNAPSHOT_SECONDS).record(took.as_secs_f64());
                    metrics::gauge!(names::SNAPSHOT_BYTES, "partition" => p.to_string())
                        .set(size as f64);
                    metrics::gauge!(names::SNAPSHOT_LAST_SUCCESS, "partition" => p.to_string())
                        .set(created as f64 / 1000.0);
                    info!(partition = p, snapshot = %name, bytes = size, accounts, stall_ms = stall.as_millis() as u64, total_ms = took.as_millis() as u64, "snapshot written");
                }
                Err(e) => {
                    metrics::counter!(names::SNAPSHOT_FAILURES_TOTAL).increment(1);
                    warn!(partition = p, error = %e, "snapshot failed (recovery replays more of the log)");
                }
            }
        };
        if wait {
            write();
        } else {
            match std::thread::Builder::new()
                .name(format!("vitals-snap-p{p}"))
                .spawn(write)
            {
                Ok(h) => *writer = Some(h),
                Err(e) => warn!(partition = p, error = %e, "cannot start the snapshot writer"),
            }
        }
    }

    fn restore(&self) -> Result<(FoldWorker, String), ServiceError> {
        let shared = &self.shared;
        let p = self.p;
        let reader = Reader::new(shared)?;
        let mut marks = [None; 5];
        // The scorecards of the last published health and shadow records.
        let mut scorecards = [None, None];
        for (i, t) in OutTopic::TRACKED.iter().enumerate() {
            if *t == OutTopic::Shadow && shared.shadow.is_none() {
                continue;
            }
            let topic = shared.out_topic(*t);
            let last = reader.last(topic, p, |h| (provenance_of(h), scorecard_of(h)))?;
            let (mark, scorecard) = last.unwrap_or_default();
            marks[i] = mark;
            match t {
                OutTopic::Health => scorecards[0] = scorecard,
                OutTopic::Shadow => scorecards[1] = scorecard,
                _ => {}
            }
        }
        let topic = &shared.cfg.kafka.topics.sequenced;
        let (low, high) = reader.watermarks(topic, p)?;
        let mut fold = None;
        let mut last_cursor = String::new();
        // The scorecard changes of the newest snapshot refused for its
        // model: a partition rebuilt after a config change keeps them.
        let mut earlier_changes = None;
        if let Some(store) = &shared.snapshots {
            for name in store.list(p).unwrap_or_else(|e| {
                warn!(partition = p, error = %e, "cannot list snapshots; rebuilding from the log");
                Vec::new()
            }) {
                // Read as it is decoded, a block per core.
                let loaded = store.open(p, &name).and_then(|(r, size)| {
                    snapshot::read_from(r, size, shared.model.clone(), shared.shadow.clone())
                });
                if let Err(snapshot::SnapshotError::Model { changes, .. }) = &loaded {
                    if earlier_changes.is_none() {
                        earlier_changes.clone_from(changes);
                    }
                }
                match loaded {
                    Ok((meta, part, shadow))
                        if meta.partition == p
                            && meta.next_offset >= low
                            && meta.next_offset <= high
                            && self.cursor_at(&reader, meta.next_offset - 1, low)?
                                == meta.cursor =>
                    {
                        info!(partition = p, snapshot = %name, next_offset = meta.next_offset, accounts = meta.accounts, "restored from snapshot; replaying the log's tail");
                        let mut f = FoldWorker::resume_at(p, part, marks, meta.next_offset);
                        f.shadow = shadow;
                        fold = Some(f);
                        last_cursor = meta.cursor;
                        break;
                    }
                    Ok((meta, _, _)) => warn!(
                        partition = p, snapshot = %name, next_offset = meta.next_offset, log_start = low, log_end = high,
                        "snapshot does not match {topic}[{p}] (another cluster's log, or history deleted by retention); trying an older one"
                    ),
                    Err(e) => {
                        warn!(partition = p, snapshot = %name, error = %e, "unusable snapshot; trying an older one")
                    }
                }
            }
        }
        let mut fold = fold.unwrap_or_else(|| {
            let mut part = Partition::new(shared.model.clone());
            part.scorecard_changes = earlier_changes.unwrap_or_default();
            let mut f = FoldWorker::new(p, part, marks);
            f.shadow = shared.shadow.clone().map(Partition::new);
            f
        });
        fold.format = shared.out_format;
        let [live, shadow] = scorecards;
        fold.published_scorecards(live, shadow);
        let low = fold.next_offset().unwrap_or(low);
        if low == 0 || fold.next_offset().is_some() {
            // From the start of the log, or from a snapshot.
        } else {
            warn!(
                partition = p,
                log_start = low,
                "{topic}[{p}] starts at offset {low}: older history was deleted by retention and no snapshot covers it; the fold is rebuilt from what remains"
            );
        }
        let mut outputs = Vec::new();
        reader.read(topic, p, low, high, |m| {
            let h = all_headers(m);
            let (entry, cursor) = Sequenced::parse(m.key(), m.payload().unwrap_or_default(), &h)
                .map_err(|e| self.err(format!("{topic}[{p}]@{}: {e}", m.offset())))?;
            last_cursor = cursor.unwrap_or_default();
            fold.on_record(m.offset(), &entry, &mut outputs)
                .map_err(|e| self.err(e.to_string()))?;
            // Replayed history is not live activity: the read side is
            // refreshed for every account after the restore instead.
            fold.touched.clear();
            fold.scores.clear();
            for o in outputs.drain(..) {
                self.publish(&o)?;
            }
            Ok(())
        })?;
        if high > low {
            debug!(
                partition = p,
                records = high - low,
                "replayed the sequenced log"
            );
        }
        Ok((fold, last_cursor))
    }
}
