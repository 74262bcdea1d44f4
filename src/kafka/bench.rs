//! `vitals bench e2e`: simulated events through the embedded broker and the
//! whole service (sequencer, `vitals.sequenced`, fold, outputs, with
//! exactly-once by provenance as always), in one process.
//!
//! 1. Throughput: `events` records are produced to the input topics while
//!    the service consumes them (the producer stays at most `window`
//!    records ahead of the fold, so the mock broker's 5 MiB per partition
//!    never drops an unread record); events/s is measured from the first
//!    record folded to the last.
//! 2. Latency: a steady load at half that rate for `latency_secs`; a
//!    subscriber of the alert topics measures, for every alert caused by
//!    an event, the time from handing the event to the producer to
//!    receiving the alert (p50, p99, max).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::Message;
use serde::Serialize;

use crate::codec::json;
use crate::config::Config;
use crate::core::Partition;
use crate::simulate::{SimOptions, Simulation};

use super::broker::EmbeddedBroker;
use super::publish::topic_for;
use super::service::{self, Observer, Status};

/// `vitals bench e2e` settings.
#[derive(Debug, Clone)]
pub struct E2eOptions {
    pub events: u64,
    pub partitions: u32,
    pub latency_secs: u64,
    pub seed: u64,
    /// Most records the producer may be ahead of the fold.
    pub window: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct E2eReport {
    pub events: u64,
    pub partitions: u32,
    pub throughput_secs: f64,
    pub events_per_sec: f64,
    pub latency_rate_per_sec: f64,
    pub latency_events: u64,
    pub alerts_measured: u64,
    pub alert_latency_p50_ms: Option<f64>,
    pub alert_latency_p99_ms: Option<f64>,
    pub alert_latency_max_ms: Option<f64>,
    /// The fold kept up: events folded during the latency phase.
    pub latency_phase_folded: u64,
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Broker(#[from] super::broker::BrokerError),
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Service(#[from] service::ServiceError),
    #[error("{0}")]
    Other(String),
}

/// `kafka.fetch_wait_max_ms` for the service on the embedded broker.
const EMBEDDED_FETCH_WAIT_MS: u64 = 2;

/// Counts records folded per partition.
#[derive(Default)]
struct Progress {
    folded: Mutex<HashMap<u32, i64>>,
    total: AtomicI64,
    first: Mutex<Option<Instant>>,
    assigned: AtomicU64,
}

impl Observer for Progress {
    fn assigned(&self, partitions: &[u32]) {
        self.assigned
            .fetch_add(partitions.len() as u64, Ordering::SeqCst);
    }
    fn batch(&self, partition: u32, _part: &Partition, _touched: &[&str], st: &Status) {
        let mut m = self.folded.lock().unwrap_or_else(|p| p.into_inner());
        let prev = m.insert(partition, st.sequenced_offset).unwrap_or(0);
        let delta = st.sequenced_offset - prev;
        if delta > 0 {
            self.total.fetch_add(delta, Ordering::SeqCst);
            let mut f = self.first.lock().unwrap_or_else(|p| p.into_inner());
            f.get_or_insert_with(Instant::now);
        }
    }
}

/// Events to publish: (topic, key, value, id).
type Prepared = Vec<(&'static str, String, Vec<u8>, String)>;

fn prepare(n: u64, seed: u64) -> Prepared {
    // About 5 events per account-day: enough accounts that one day of all
    // of them is a small slice of the stream.
    let days = 120u32;
    let accounts = ((n / (5 * days as u64)).max(50)) as u32;
    let mut sim = Simulation::new(&SimOptions {
        accounts,
        days,
        seed,
        ..Default::default()
    });
    let mut out = Vec::with_capacity(n as usize);
    let mut buf = Vec::new();
    'days: for day in 0.. {
        for i in 0..sim.accounts() {
            buf.clear();
            sim.account_day(i, day, &mut buf);
            for ev in buf.drain(..) {
                out.push((
                    topic_for(ev.type_name()),
                    ev.account_id.to_string(),
                    json::encode(&ev),
                    ev.id.to_string(),
                ));
                if out.len() as u64 >= n {
                    break 'days;
                }
            }
        }
    }
    out
}

/// Produces one record; `i` counts them. Delivery reports are served every
/// 256 records, not after each: a poll per record cost the load generator
/// (which shares the two cores with the broker and the service) a clock
/// read, a lock and a queue check each time.
fn send(
    p: &BaseProducer,
    topic: &str,
    key: &str,
    value: &[u8],
    i: usize,
) -> Result<(), BenchError> {
    let mut rec = Some(BaseRecord::<str, [u8]>::to(topic).key(key).payload(value));
    while let Some(r) = rec.take() {
        match p.send(r) {
            Ok(()) => {}
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                p.poll(Duration::from_millis(1));
                rec = Some(back);
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
    if i % 256 == 0 {
        p.poll(Duration::ZERO);
    }
    Ok(())
}

/// Runs the benchmark.
pub fn e2e(o: &E2eOptions) -> Result<E2eReport, BenchError> {
    let broker = EmbeddedBroker::start(1, o.partitions)?;
    let addr = broker.bootstrap_servers();
    let mut cfg = Config::default();
    cfg.kafka.brokers = addr.clone();
    cfg.kafka.group_id = "vitals-bench".into();
    // The mock holds every empty fetch for the whole wait (see
    // kafka.fetch_wait_max_ms); a real broker answers when records arrive.
    cfg.kafka.fetch_wait_max_ms = EMBEDDED_FETCH_WAIT_MS;
    // Snapshots as in production, but in a fresh directory: one left in the
    // working directory by an earlier run belongs to another broker's log.
    let snapshots = tempfile::tempdir().map_err(|e| BenchError::Other(e.to_string()))?;
    cfg.snapshot.dir = snapshots.path().to_string_lossy().into_owned();
    let progress = Arc::new(Progress::default());
    let stop = Arc::new(AtomicBool::new(false));
    let svc = {
        let (cfg, progress, stop) = (cfg.clone(), progress.clone(), stop.clone());
        std::thread::spawn(move || service::run(&cfg, progress, stop))
    };
    // The alert subscriber, joined before anything is produced.
    let sent_at: Arc<Mutex<HashMap<String, Instant>>> = Default::default();
    let latencies: Arc<Mutex<Vec<f64>>> = Default::default();
    let measuring = Arc::new(AtomicBool::new(false));
    let sub_ready = Arc::new(AtomicBool::new(false));
    let subscriber = {
        let (addr, sent_at, latencies, stop, measuring, ready) = (
            addr.clone(),
            sent_at.clone(),
            latencies.clone(),
            stop.clone(),
            measuring.clone(),
            sub_ready.clone(),
        );
        let topics = [
            cfg.kafka.topics.at_risk.clone(),
            cfg.kafka.topics.upsell.clone(),
        ];
        std::thread::spawn(move || -> Result<(), BenchError> {
            let c: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &addr)
                .set("group.id", "vitals-bench-alerts")
                .set("auto.offset.reset", "latest")
                // The alert topics are empty most of the time, and the mock
                // holds an empty fetch for the whole wait: a real broker
                // would answer as soon as an alert arrives.
                .set("fetch.wait.max.ms", "1")
                .create()?;
            let t: Vec<&str> = topics.iter().map(String::as_str).collect();
            c.subscribe(&t)?;
            while !stop.load(Ordering::SeqCst) {
                match c.poll(Duration::from_millis(50)) {
                    None => {
                        if c.assignment().is_ok_and(|a| a.count() > 0) {
                            ready.store(true, Ordering::SeqCst);
                        }
                    }
                    Some(Ok(m)) => {
                        let now = Instant::now();
                        if !measuring.load(Ordering::SeqCst) {
                            continue;
                        }
                        let v: serde_json::Value =
                            match serde_json::from_slice(m.payload().unwrap_or_default()) {
                                Ok(v) => v,
                                Err(_) => continue,
                            };
                        if let Some(id) = v.get("caused_by").and_then(|c| c.as_str()) {
                            let sent = sent_at
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .get(id)
                                .copied();
                            if let Some(s) = sent {
                                latencies
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .push(now.duration_since(s).as_secs_f64() * 1000.0);
                            }
                        }
                    }
                    Some(Err(_)) => {}
                }
            }
            Ok(())
        })
    };

    let wait_for = |what: &str, secs: u64, f: &dyn Fn() -> bool| -> Result<(), BenchError> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !f() {
            if Instant::now() > deadline {
                return Err(BenchError::Other(format!("timed out waiting for {what}")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    };
    wait_for("the service's partitions", 60, &|| {
        progress.assigned.load(Ordering::SeqCst) >= o.partitions as u64
            && progress.folded.lock().map(|m| m.len()).unwrap_or(0) >= o.partitions as usize
    })?;
    wait_for("the alert subscriber", 60, &|| {
        sub_ready.load(Ordering::SeqCst)
    })?;

    let latency_guess = 200_000u64 * o.latency_secs;
    eprintln!("preparing {} events", o.events + latency_guess);
    let events = prepare(o.events + latency_guess, o.seed);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .set("enable.idempotence", "true")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "2")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;

    // 1. Throughput.
    eprintln!("throughput: {} events", o.events);
    let n = o.events as usize;
    for (i, (topic, key, value, _)) in events[..n].iter().enumerate() {
        if i % 1000 == 0 {
            while i as i64 - progress.total.load(Ordering::SeqCst) > o.window as i64 {
                producer.poll(Duration::from_millis(1));
            }
        }
        send(&producer, topic, key, value, i)?;
    }
    producer.flush(Duration::from_secs(60))?;
    wait_for("the fold to finish", 600, &|| {
        progress.total.load(Ordering::SeqCst) >= o.events as i64
    })?;
    let end = Instant::now();
    let first = progress
        .first
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .unwrap_or(end);
    let secs = end.duration_since(first).as_secs_f64();
    let eps = o.events as f64 / secs.max(1e-9);
    eprintln!("throughput: {eps:.0} events/s over {secs:.2}s");

    // 2. Latency at half that rate.
    let rate = (eps / 2.0).max(1.0);
    let m = ((rate * o.latency_secs as f64) as usize).min(events.len() - n);
    eprintln!("latency: {m} events at {rate:.0} events/s");
    let before = progress.total.load(Ordering::SeqCst);
    // Sized up front: growing a map of a million entries would stall the
    // load generator mid-measurement.
    sent_at.lock().unwrap_or_else(|p| p.into_inner()).reserve(m);
    measuring.store(true, Ordering::SeqCst);
    let start = Instant::now();
    for (i, (topic, key, value, id)) in events[n..n + m].iter().enumerate() {
        if i % 50 == 0 {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        sent_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), Instant::now());
        send(&producer, topic, key, value, i)?;
    }
    producer.flush(Duration::from_secs(60))?;
    wait_for("the fold to finish the steady load", 600, &|| {
        progress.total.load(Ordering::SeqCst) >= before + m as i64
    })?;
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    let _ = subscriber.join();
    svc.join()
        .map_err(|_| BenchError::Other("service thread panicked".into()))??;
    let mut l = latencies.lock().unwrap_or_else(|p| p.into_inner()).clone();
    l.sort_by(f64::total_cmp);
    let q = |f: f64| -> Option<f64> {
        (!l.is_empty()).then(|| l[((l.len() as f64 * f).ceil() as usize).clamp(1, l.len()) - 1])
    };
    drop(broker);
    Ok(E2eReport {
        events: o.events,
        partitions: o.partitions,
        throughput_secs: secs,
        events_per_sec: eps,
        latency_rate_per_sec: rate,
        latency_events: m as u64,
        alerts_measured: l.len() as u64,
        alert_latency_p50_ms: q(0.5),
        alert_latency_p99_ms: q(0.99),
        alert_latency_max_ms: l.last().copied(),
        latency_phase_folded: (progress.total.load(Ordering::SeqCst) - before) as u64,
    })
}

/// `vitals bench snapshot-kafka`: what the Kafka snapshot store costs.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotStoreReport {
    pub accounts: u64,
    pub days: u32,
    pub partitions: u32,
    pub chunk_bytes: u64,
    /// Every partition's snapshot together.
    pub total_bytes: u64,
    pub largest_bytes: u64,
    pub chunks: u64,
    /// `put` of every partition's snapshot, one after another (each
    /// returns once all its chunks are acknowledged).
    pub put_secs: f64,
    pub put_mb_per_sec: f64,
    /// Another instance (a fresh store, empty index): `list` (a scan of
    /// the partition, checksums included) then `get` of the newest, for
    /// every partition, one after another.
    pub list_get_secs: f64,
    pub list_get_mb_per_sec: f64,
    /// `retain` right after a `put` (this instance's index is current).
    pub retain_secs: f64,
}

/// Folds `accounts` simulated accounts over `days` into `partitions`
/// partitions (murmur2 of the account id, as the service owns them),
/// then puts every partition's snapshot into the Kafka store of an
/// embedded broker and reads them back from a fresh store.
///
/// The embedded broker keeps at most 5 MiB per partition: choose enough
/// partitions that one snapshot fits (about 800 bytes per account), or the
/// read-back finds it incomplete and fails.
pub fn snapshot_store(
    accounts: u32,
    days: u32,
    partitions: u32,
    seed: u64,
    chunk_bytes: usize,
) -> Result<SnapshotStoreReport, BenchError> {
    use crate::core::{Model, ModelConfig};
    use crate::snapshot::{self, SnapshotStore};

    let model = Arc::new(Model::new(ModelConfig {
        allowed_lateness_secs: 86_400,
        ..ModelConfig::default()
    }));
    let mut parts: Vec<Partition> = (0..partitions)
        .map(|_| Partition::new(model.clone()))
        .collect();
    let mut sim = Simulation::new(&SimOptions {
        accounts,
        days,
        seed,
        ..Default::default()
    });
    let (mut buf, mut out) = (Vec::new(), Vec::new());
    for day in 0..days {
        for i in 0..sim.accounts() {
            sim.account_day(i, day, &mut buf);
            for e in buf.drain(..) {
                let p = super::partitioner::partition_for(e.account_id.as_bytes(), partitions);
                parts[p as usize].apply(&e, &mut out);
                out.clear();
            }
        }
    }
    let snaps: Vec<Vec<u8>> = parts
        .iter()
        .enumerate()
        .map(|(p, part)| snapshot::encode(part, p as u32, 1_000, "", 0))
        .collect();
    drop(parts);
    let total: u64 = snaps.iter().map(|s| s.len() as u64).sum();
    let largest = snaps.iter().map(|s| s.len() as u64).max().unwrap_or(0);
    let chunks: u64 = snaps
        .iter()
        .map(|s| s.len().div_ceil(chunk_bytes.max(1)) as u64)
        .sum();

    let broker = EmbeddedBroker::start(1, partitions)?;
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", broker.bootstrap_servers());
    let store = super::snapstore::KafkaStore::new(&client, super::topics::SNAPSHOTS, chunk_bytes)
        .map_err(|e| BenchError::Other(e.to_string()))?;
    let t = Instant::now();
    for (p, s) in snaps.iter().enumerate() {
        store
            .put(p as u32, 1_000, s)
            .map_err(|e| BenchError::Other(e.to_string()))?;
    }
    let put_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for p in 0..partitions {
        store
            .retain(p, 3)
            .map_err(|e| BenchError::Other(e.to_string()))?;
    }
    let retain_secs = t.elapsed().as_secs_f64();

    let fresh = super::snapstore::KafkaStore::new(&client, super::topics::SNAPSHOTS, chunk_bytes)
        .map_err(|e| BenchError::Other(e.to_string()))?;
    let t = Instant::now();
    for (p, s) in snaps.iter().enumerate() {
        let names = fresh
            .list(p as u32)
            .map_err(|e| BenchError::Other(e.to_string()))?;
        let newest = names.first().ok_or_else(|| {
            BenchError::Other(format!(
                "partition {p}: no complete snapshot read back ({} bytes; the embedded broker keeps 5 MiB per partition: use more partitions)",
                s.len()
            ))
        })?;
        let got = fresh
            .get(p as u32, newest)
            .map_err(|e| BenchError::Other(e.to_string()))?;
        if got != *s {
            return Err(BenchError::Other(format!(
                "partition {p}: read back other bytes"
            )));
        }
    }
    let list_get_secs = t.elapsed().as_secs_f64();
    let mb = total as f64 / 1e6;
    Ok(SnapshotStoreReport {
        accounts: accounts as u64,
        days,
        partitions,
        chunk_bytes: chunk_bytes as u64,
        total_bytes: total,
        largest_bytes: largest,
        chunks,
        put_secs,
        put_mb_per_sec: mb / put_secs.max(1e-9),
        list_get_secs,
        list_get_mb_per_sec: mb / list_get_secs.max(1e-9),
        retain_secs,
    })
}
