//! Helpers for the tests that run the service over a Kafka-protocol broker:
//! producing, reading whole partitions back, turning a partition of
//! `vitals.sequenced` into the JSONL that `vitals replay` folds, and
//! comparing the service's output topics with the replay's files.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use std::time::Instant;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use vitals::codec::timefmt;
use vitals::config::Config;
use vitals::kafka::worker::Sequenced;

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Rec {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
    pub fn text(&self) -> String {
        String::from_utf8(self.value.clone()).expect("UTF-8 value")
    }
}

/// A config for a test service on `brokers` (fast ticks, short waits).
pub fn config(brokers: &str, group: &str) -> Config {
    let mut c = Config::default();
    c.kafka.brokers = brokers.to_string();
    c.kafka.group_id = group.to_string();
    c.sequencer.tick_every_ms = 200;
    c.sequencer.max_wait_ms = 100;
    c.snapshot.dir = std::env::temp_dir()
        .join(format!(
            "vitals-test-snapshots-{group}-{}",
            std::process::id()
        ))
        .display()
        .to_string();
    let _ = std::fs::remove_dir_all(&c.snapshot.dir);
    c
}

pub fn producer(brokers: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .create()
        .expect("producer")
}

/// Sends and waits for delivery of everything sent.
pub fn send(p: &BaseProducer, topic: &str, partition: Option<i32>, key: &str, value: &[u8]) {
    let mut r = BaseRecord::<str, [u8]>::to(topic).key(key).payload(value);
    if let Some(part) = partition {
        r = r.partition(part);
    }
    let mut r = Some(r);
    while let Some(rec) = r.take() {
        if let Err((e, back)) = p.send(rec) {
            assert!(
                matches!(
                    e,
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull
                    )
                ),
                "{e}"
            );
            p.poll(Duration::from_millis(10));
            r = Some(back);
        }
    }
    p.poll(Duration::ZERO);
}

pub fn flush(p: &BaseProducer) {
    p.flush(Duration::from_secs(30)).expect("flush");
}

/// Every record of `topic[partition]`, in offset order.
pub fn read_all(brokers: &str, topic: &str, partition: i32) -> Vec<Rec> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "vitals-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let (low, high) = c
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .expect("watermarks");
    let mut out = Vec::new();
    if high <= low {
        return out;
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(low))
        .unwrap();
    c.assign(&tpl).expect("assign");
    // A busy mock broker (other tests' clients, a loaded CI machine) can
    // be slow to answer; only a long silence is a failure.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while out.last().map_or(low, |r: &Rec| r.offset + 1) < high {
        match c.poll(Duration::from_secs(1)) {
            Some(Ok(m)) => out.push(Rec {
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().unwrap_or_default().to_vec(),
                headers: m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|x| (x.key.to_string(), x.value.unwrap_or_default().to_vec()))
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
            Some(Err(e)) => panic!("read {topic}[{partition}]: {e}"),
            None => assert!(
                std::time::Instant::now() < deadline,
                "read {topic}[{partition}]: stuck at {} of {high} for 60 s",
                out.len()
            ),
        }
    }
    assert_eq!(low, 0, "{topic}[{partition}] lost records to retention");
    out
}

/// Reads high watermarks with one long-lived client (cheap to poll).
pub struct Watermarks(BaseConsumer);

impl Watermarks {
    pub fn new(brokers: &str) -> Self {
        Watermarks(
            ClientConfig::new()
                .set("bootstrap.servers", brokers)
                .create()
                .expect("consumer"),
        )
    }
    pub fn high(&self, topic: &str, partition: i32) -> i64 {
        self.0
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .expect("watermarks")
            .1
    }
    pub fn total(&self, topics: &[&str], partitions: i32) -> i64 {
        topics
            .iter()
            .map(|t| (0..partitions).map(|p| self.high(t, p)).sum::<i64>())
            .sum()
    }
}

pub fn high_watermark(brokers: &str, topic: &str, partition: i32) -> i64 {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("consumer");
    c.fetch_watermarks(topic, partition, Duration::from_secs(10))
        .expect("watermarks")
        .1
}

/// Parses a `vitals.sequenced` record.
pub fn sequenced(r: &Rec) -> Sequenced {
    let h: Vec<(&str, &[u8])> = r
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    Sequenced::parse(r.key.as_deref(), &r.value, &h)
        .expect("a valid sequenced record")
        .0
}

/// The JSONL `vitals replay` folds for a partition of `vitals.sequenced`:
/// events and ticks in offset order (invalid and re-routed records are not
/// the partition's events).
pub fn replay_input(log: &[Rec]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in log {
        match sequenced(r) {
            Sequenced::Event { value, .. } => {
                out.extend_from_slice(&value);
                out.push(b'\n');
            }
            Sequenced::Tick { time } => {
                out.extend_from_slice(
                    format!("{{\"tick\":\"{}\"}}\n", timefmt::format(time)).as_bytes(),
                );
            }
            _ => {}
        }
    }
    out
}

/// What `vitals replay` wrote for one partition's log.
pub struct Replayed {
    pub health_log: Vec<String>,
    pub health: Vec<String>,
    pub at_risk: Vec<String>,
    pub upsell: Vec<String>,
    pub summary: vitals::replay::Summary,
}

pub fn replay(dir: &Path, p: i32, log: &[Rec]) -> Replayed {
    replay_with(dir, p, log, Config::default().model, "replay")
}

/// [`replay`] with another model config, into `dir/<name>-<p>`.
pub fn replay_with(
    dir: &Path,
    p: i32,
    log: &[Rec],
    model: vitals::core::ModelConfig,
    name: &str,
) -> Replayed {
    let input = dir.join(format!("sequenced-{p}.jsonl"));
    std::fs::write(&input, replay_input(log)).unwrap();
    let out = dir.join(format!("{name}-{p}"));
    let summary = vitals::replay::replay(&vitals::replay::Options {
        input,
        out: out.clone(),
        model,
        progress: false,
    })
    .expect("replay");
    let lines = |f: &str| -> Vec<String> {
        std::fs::read_to_string(out.join(f))
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    };
    let alerts = lines("alerts.jsonl");
    let (upsell, at_risk): (Vec<String>, Vec<String>) = alerts
        .into_iter()
        .partition(|l| l.contains("\"kind\":\"upsell_opportunity\""));
    Replayed {
        health_log: lines("health_log.jsonl"),
        health: lines("health.jsonl"),
        at_risk,
        upsell,
        summary,
    }
}

/// The last value per key, sorted by key: a compacted read.
pub fn compacted(recs: &[Rec]) -> Vec<String> {
    let mut m = BTreeMap::new();
    for r in recs {
        m.insert(r.key.clone().unwrap_or_default(), r.text());
    }
    m.into_values().collect()
}

pub fn texts(recs: &[Rec]) -> Vec<String> {
    recs.iter().map(Rec::text).collect()
}

/// The next offset the sequencer of `partition` will take from each
/// source, from the last `vitals.sequenced` record's cursor.
pub fn cursor(brokers: &str, partition: i32) -> Option<vitals::kafka::sequencer::Cursor> {
    let high = high_watermark(brokers, "vitals.sequenced", partition);
    if high == 0 {
        return None;
    }
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "vitals-test-reader")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("vitals.sequenced", partition, Offset::Offset(high - 1))
        .unwrap();
    c.assign(&tpl).unwrap();
    match c.poll(Duration::from_secs(10)) {
        Some(Ok(m)) => m
            .headers()
            .and_then(|h| h.iter().find(|x| x.key == "vitals.cursor"))
            .and_then(|x| std::str::from_utf8(x.value?).ok())
            .and_then(vitals::kafka::sequencer::Cursor::decode),
        _ => None,
    }
}

/// True when every input partition has been sequenced to its end.
pub fn all_sequenced(brokers: &str, partitions: i32) -> bool {
    let inputs = ["usage", "tickets", "payments", "surveys"];
    (0..partitions).all(|p| {
        let Some(c) = cursor(brokers, p) else {
            return inputs.iter().all(|t| high_watermark(brokers, t, p) == 0);
        };
        inputs.iter().enumerate().all(|(i, t)| {
            c.positions.get(i).copied().unwrap_or(-1) + 1 >= high_watermark(brokers, t, p)
        })
    })
}

/// A child process killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn vitals() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vitals"))
}

pub fn start_run(config: &std::path::Path, log: &std::path::Path) -> Proc {
    let err = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Proc(
        vitals()
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawn vitals run"),
    )
}

pub fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts `vitals broker` with `partitions` and returns it with its address.
pub fn start_broker(partitions: i32) -> (Proc, String) {
    use std::io::BufRead;
    let mut broker = vitals()
        .args(["broker", "--partitions", &partitions.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn vitals broker");
    let mut line = String::new();
    std::io::BufReader::new(broker.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (Proc(broker), line.trim().to_string())
}

/// A config file for `vitals run` processes on `addr` (fast group
/// failure detection, frequent snapshots in `dir/snapshots`).
pub fn write_config(dir: &Path, addr: &str, group: &str) -> std::path::PathBuf {
    use std::io::Write;
    let config = dir.join("vitals.toml");
    let mut f = std::fs::File::create(&config).unwrap();
    writeln!(
        f,
        "[kafka]\nbrokers = \"{addr}\"\ngroup_id = \"{group}\"\n\
         [kafka.consumer]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n\
         [sequencer]\ntick_every_ms = 300\nmax_wait_ms = 100\n\
         [snapshot]\ndir = \"{}\"\ninterval_secs = 1\nevery_records = 500\n\
         [http]\nlisten = \"127.0.0.1:0\"",
        dir.join("snapshots").display()
    )
    .unwrap();
    config
}

/// Checks, per partition, that every input record was sequenced exactly
/// once and that every output topic equals the replay of the log.
/// Returns (input records, output records).
pub fn assert_exactly_once(addr: &str, partitions: i32, dir: &Path) -> (usize, usize) {
    let inputs = ["usage", "tickets", "payments", "surveys"];
    let mut input_records = 0;
    let mut outputs = 0;
    for p in 0..partitions {
        let seq = read_all(addr, "vitals.sequenced", p);
        let mut src: Vec<(String, i64)> = seq
            .iter()
            .filter_map(|r| {
                Some((
                    r.header("vitals.source.topic")?,
                    r.header("vitals.source.offset")?.parse().ok()?,
                ))
            })
            .collect();
        let n = src.len();
        src.sort();
        src.dedup();
        assert_eq!(src.len(), n, "a record sequenced twice on partition {p}");
        let expected: i64 = inputs
            .iter()
            .map(|t| high_watermark(addr, t, p))
            .sum::<i64>()
            + high_watermark(addr, "vitals.repartition", p);
        assert_eq!(
            n as i64, expected,
            "every input record of partition {p} sequenced"
        );
        input_records += n;
        let r = replay(dir, p, &seq);
        let health = read_all(addr, "vitals.health", p);
        assert_eq!(texts(&health), r.health_log, "vitals.health[{p}]");
        let at_risk = read_all(addr, "vitals.alerts.at-risk", p);
        assert_eq!(texts(&at_risk), r.at_risk, "vitals.alerts.at-risk[{p}]");
        let upsell = read_all(addr, "vitals.alerts.upsell", p);
        assert_eq!(texts(&upsell), r.upsell, "vitals.alerts.upsell[{p}]");
        outputs += health.len() + at_risk.len() + upsell.len();
    }
    (input_records, outputs)
}
