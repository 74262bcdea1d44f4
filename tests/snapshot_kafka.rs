//! The Kafka-topic snapshot store over the embedded broker: chunked puts,
//! newest-first listing of complete snapshots only (a missing chunk, a
//! corrupt chunk and tombstones are skipped), exact gets, retention by
//! tombstones, a second store (another instance) seeing the same, and
//! `vitals snapshot list`. Then the service: an instance with an empty
//! disk restores what another instance left in the topic.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use vitals::core::{Model, ModelConfig, Partition};
use vitals::kafka::broker::EmbeddedBroker;
use vitals::kafka::snapstore::{chunk_key, headers, KafkaStore};
use vitals::kafka::topics;
use vitals::simulate::{generate, SimOptions};
use vitals::snapshot::{self, SnapshotError, SnapshotStore};

const CHUNK: usize = 1024;

fn folded() -> Partition {
    let mut p = Partition::new(Arc::new(Model::new(ModelConfig::default())));
    let mut out = Vec::new();
    for ev in generate(&SimOptions {
        accounts: 20,
        days: 30,
        seed: 3,
        ..Default::default()
    }) {
        p.apply(&ev, &mut out);
    }
    p
}

fn client(addr: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", addr);
    c
}

/// Writes the chunk records of a snapshot by hand, as a writer would,
/// with `chunks` (indices) of `bytes` sent and `tamper` applied to the
/// payloads: a writer that died mid-put, or a corrupted chunk.
fn forge(
    addr: &str,
    partition: u32,
    next_offset: i64,
    bytes: &[u8],
    send: impl Fn(usize) -> bool,
    tamper: impl Fn(usize, &mut Vec<u8>),
) {
    let p: FutureProducer = client(addr).create().unwrap();
    let id = format!("{:016x}", next_offset * 7919);
    let pieces: Vec<&[u8]> = bytes.chunks(CHUNK).collect();
    let sum = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(bytes));
    let n = pieces.len().to_string();
    let len = bytes.len().to_string();
    for (i, piece) in pieces.iter().enumerate() {
        if !send(i) {
            continue;
        }
        let mut payload = piece.to_vec();
        tamper(i, &mut payload);
        let off = next_offset.to_string();
        let idx = i.to_string();
        let h = [
            (headers::ID, id.as_str()),
            (headers::NEXT_OFFSET, off.as_str()),
            (headers::CHUNK, idx.as_str()),
            (headers::CHUNKS, n.as_str()),
            (headers::LENGTH, len.as_str()),
            (headers::XXH3, sum.as_str()),
        ]
        .iter()
        .fold(OwnedHeaders::new(), |acc, (k, v)| {
            acc.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            })
        });
        let key = chunk_key(partition, next_offset, &id, i as u32);
        futures::executor::block_on(
            p.send(
                FutureRecord::to(topics::SNAPSHOTS)
                    .partition(partition as i32)
                    .key(&key)
                    .payload(&payload)
                    .headers(h),
                Duration::from_secs(10),
            ),
        )
        .expect("forged chunk delivered");
    }
}

/// (null-payload records, all records) of the store's partition.
fn tombstones(addr: &str, partition: i32) -> (usize, usize) {
    let c: BaseConsumer = client(addr)
        .set("group.id", "vitals-test-reader")
        .create()
        .unwrap();
    let (_, high) = c
        .fetch_watermarks(topics::SNAPSHOTS, partition, Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topics::SNAPSHOTS, partition, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    let (mut null, mut all) = (0, 0);
    while all < high as usize {
        let m = c
            .poll(Duration::from_secs(10))
            .expect("a record")
            .expect("no error");
        all += 1;
        null += usize::from(m.payload().is_none());
    }
    (null, all)
}

fn offset_of(name: &str) -> i64 {
    name.split('-').next().unwrap().parse().unwrap()
}

#[test]
fn kafka_store_lists_complete_snapshots_newest_first_and_retains_k() {
    let broker = EmbeddedBroker::start(1, 2).expect("broker");
    let addr = broker.bootstrap_servers();
    let store = KafkaStore::new(&client(&addr), topics::SNAPSHOTS, CHUNK).unwrap();
    assert!(store.list(1).unwrap().is_empty());

    let part = folded();
    let snap = |off: i64| snapshot::encode(&part, 1, off, "", off);
    let big = snap(500);
    assert!(big.len() > 3 * CHUNK, "{} bytes: several chunks", big.len());
    let mut names = Vec::new();
    for (off, bytes) in [
        (5i64, snap(5)),
        (50, snap(50)),
        (500, big.clone()),
        (3, b"tiny".to_vec()),
        (7, snap(7)),
    ] {
        names.push((off, store.put(1, off, &bytes).unwrap(), bytes));
    }
    // Partition 0 is another owner's: not listed for partition 1.
    store.put(0, 1_000, &snap(1_000)).unwrap();

    // A writer that died before its last chunk, and a snapshot with a
    // corrupted chunk, both at higher offsets: skipped.
    let newer = snap(900);
    let last = newer.len().div_ceil(CHUNK) - 1;
    forge(&addr, 1, 900, &newer, |i| i != last, |_, _| {});
    let corrupt = snap(800);
    forge(
        &addr,
        1,
        800,
        &corrupt,
        |_| true,
        |i, b| {
            if i == 1 {
                b[0] ^= 0x20
            }
        },
    );
    // The same snapshot intact is listed (the forging is right).
    forge(&addr, 1, 600, &snap(600), |_| true, |_, _| {});

    let listed = store.list(1).unwrap();
    let offsets: Vec<i64> = listed.iter().map(|n| offset_of(n)).collect();
    assert_eq!(offsets, vec![600, 500, 50, 7, 5, 3]);
    assert_eq!(store.list(0).unwrap().len(), 1);
    for (_, name, bytes) in &names {
        assert_eq!(&store.get(1, name).unwrap(), bytes, "{name}");
    }
    let (meta, back) =
        snapshot::decode(&store.get(1, &listed[1]).unwrap(), part.model.clone()).expect("decodes");
    assert_eq!((meta.next_offset, back), (500, part.clone()));

    // Another instance (an empty index) sees the same.
    let other = KafkaStore::new(&client(&addr), topics::SNAPSHOTS, CHUNK).unwrap();
    assert_eq!(other.list(1).unwrap(), listed);
    assert_eq!(other.get(1, &listed[1]).unwrap(), big);
    let missing = format!("{:020}-{:016x}", 900, 900 * 7919);
    assert!(matches!(
        other.get(1, &missing),
        Err(SnapshotError::Incomplete { .. })
    ));
    let bad = format!("{:020}-{:016x}", 800, 800 * 7919);
    let e = other.get(1, &bad).unwrap_err();
    assert!(e.to_string().contains("checksum mismatch"), "{e}");

    // Keep 2: the others are tombstoned, for both stores.
    let (null_before, _) = tombstones(&addr, 1);
    assert_eq!(null_before, 0);
    store.retain(1, 2).unwrap();
    assert_eq!(store.list(1).unwrap(), listed[..2].to_vec());
    assert_eq!(other.list(1).unwrap(), listed[..2].to_vec());
    let fresh = KafkaStore::new(&client(&addr), topics::SNAPSHOTS, CHUNK).unwrap();
    assert_eq!(fresh.list(1).unwrap(), listed[..2].to_vec());
    assert!(matches!(
        fresh.get(1, &listed[2]),
        Err(SnapshotError::NotFound { .. })
    ));
    // Every chunk of the retired snapshots (and of the broken ones below
    // the oldest kept: 0 of them here, they are newer) got a tombstone.
    let retired_chunks: usize = [50i64, 7, 5]
        .iter()
        .map(|&o| snap(o).len().div_ceil(CHUNK))
        .sum::<usize>()
        + 1;
    let (null, _) = tombstones(&addr, 1);
    assert_eq!(null, retired_chunks);

    // A newer put, then keep 2 again: the oldest goes.
    let n700 = store.put(1, 700, &snap(700)).unwrap();
    store.retain(1, 2).unwrap();
    assert_eq!(
        fresh.list(1).unwrap(),
        vec![n700.clone(), listed[0].clone()]
    );

    // `vitals snapshot list` shows them, inspected.
    let out = Command::new(env!("CARGO_BIN_EXE_vitals"))
        .args(["snapshot", "list", "--brokers", &addr, "--partition", "1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let v = v.as_array().unwrap();
    assert_eq!(v.len(), 2);
    assert_eq!(v[0]["next_offset"], 700);
    assert_eq!(v[0]["partition"], 1);
    assert_eq!(v[0]["accounts"], 20);
    assert_eq!(v[0]["checksum_ok"], true);
    assert_eq!(v[1]["next_offset"], 600);
    assert!(v[0]["path"]
        .as_str()
        .unwrap()
        .starts_with("kafka://vitals.snapshots/1/"));
}

/// A `vitals run` config with snapshots in the Kafka store (small chunks,
/// so a snapshot spans many records) and `dir` as the unused local dir.
fn kafka_store_config(root: &Path, name: &str, addr: &str, dir: &Path) -> PathBuf {
    let config = root.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = \"{addr}\"\ngroup_id = \"snap-kafka\"\n\
             [kafka.consumer]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n\
             [sequencer]\ntick_every_ms = 300\nmax_wait_ms = 100\n\
             [snapshot]\nstore = \"kafka\"\nchunk_bytes = 4096\nkeep = 2\ndir = \"{}\"\n\
             interval_secs = 1\nevery_records = 500\n\
             [http]\nlisten = \"127.0.0.1:0\"",
            dir.display()
        ),
    )
    .unwrap();
    config
}

fn simulate(addr: &str, accounts: u32, days: u32, seed: u64, start: &str) {
    let ok = common::vitals()
        .args(["simulate", "--brokers", addr, "--start", start])
        .args([
            "--accounts",
            &accounts.to_string(),
            "--days",
            &days.to_string(),
        ])
        .args(["--seed", &seed.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success(), "simulate");
}

/// SIGTERM, then the exit status must be 0.
fn stop(mut run: common::Proc, log: &Path) -> String {
    let pid = run.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let exit = run.0.wait().unwrap();
    let text = plain(&std::fs::read_to_string(log).unwrap_or_default());
    assert!(
        exit.success(),
        "vitals run exits 0 on SIGTERM: {exit:?}\n{text}"
    );
    text
}

/// The log without its ANSI colours.
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut it = log.chars();
    while let Some(c) = it.next() {
        if c == '\x1b' {
            for d in it.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn an_instance_with_an_empty_disk_restores_from_the_kafka_store() {
    const P: i32 = 2;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (_broker, addr) = common::start_broker(P);
    simulate(&addr, 30, 30, 11, "2025-01-06T00:00:00Z");

    // Instance A folds everything, then hands off: its last snapshot of
    // each partition goes to the topic, nothing to its local directory.
    let dir_a = root.join("a-snapshots");
    let log_a = root.join("a.log");
    let run_a = common::start_run(&kafka_store_config(root, "a", &addr, &dir_a), &log_a);
    common::wait_until("A sequenced everything", 60, || {
        common::all_sequenced(&addr, P)
    });
    common::wait_until("A restored both partitions", 60, || {
        let t = std::fs::read_to_string(&log_a).unwrap_or_default();
        t.matches("partition restored").count() >= P as usize
    });
    let text_a = stop(run_a, &log_a);
    // Up to its first snapshot: a rebalance later in A's life (a starved
    // machine missing heartbeats) may rightly restore from its own.
    let first_life = text_a.split("snapshot written").next().unwrap_or("");
    assert!(
        !first_life.contains("restored from snapshot"),
        "A started with an empty store:\n{text_a}"
    );
    assert!(
        text_a.matches("snapshot written").count() >= P as usize,
        "{text_a}"
    );
    assert!(!dir_a.exists(), "the local directory is not used");
    let store = KafkaStore::new(&client(&addr), topics::SNAPSHOTS, 4096).unwrap();
    let mut handed_off = Vec::new();
    for p in 0..P as u32 {
        let names = store.list(p).unwrap();
        assert!(
            !names.is_empty() && names.len() <= 2,
            "p{p}: keep = 2: {names:?}"
        );
        let meta = snapshot::parse(&store.get(p, &names[0]).unwrap()).unwrap();
        assert_eq!(meta.partition, p);
        assert_eq!(
            meta.next_offset,
            common::high_watermark(&addr, "vitals.sequenced", p as i32),
            "the hand-off snapshot of p{p} is at the end of its log"
        );
        assert!(meta.accounts > 0);
        handed_off.push(meta.next_offset);
    }

    // More events arrive while no instance runs.
    simulate(&addr, 30, 10, 12, "2025-03-01T00:00:00Z");

    // Instance B, another empty directory: restores both partitions from
    // the topic and replays only the tail.
    let dir_b = root.join("b-snapshots");
    let log_b = root.join("b.log");
    let run_b = common::start_run(&kafka_store_config(root, "b", &addr, &dir_b), &log_b);
    common::wait_until("B restored both partitions", 60, || {
        let t = std::fs::read_to_string(&log_b).unwrap_or_default();
        t.matches("partition restored").count() >= P as usize
    });
    common::wait_until("B sequenced everything", 60, || {
        common::all_sequenced(&addr, P)
    });
    std::thread::sleep(Duration::from_millis(500));
    let text_b = stop(run_b, &log_b);
    // Every partition restored from the store (the loop below: from A's
    // hand-off); a rebalance within B's life may add restores of its own.
    assert!(
        text_b.matches("restored from snapshot").count() >= P as usize,
        "B restored every partition from the Kafka store:\n{text_b}"
    );
    for (p, next) in handed_off.iter().enumerate() {
        let needle = format!("next_offset={next}");
        assert!(
            text_b.lines().any(|l| l.contains("restored from snapshot")
                && l.contains(&format!("partition={p}"))
                && l.contains(&needle)),
            "p{p} restored from A's hand-off at {next}:\n{text_b}"
        );
    }
    assert!(!dir_b.exists(), "the local directory is not used");

    // And the outputs are what a replay of the log gives: nothing lost or
    // published twice across the hand-off.
    let (inputs, outputs) = common::assert_exactly_once(&addr, P, root);
    assert!(inputs > 1_000 && outputs > 100, "{inputs} {outputs}");
}
