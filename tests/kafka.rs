//! Kafka adapters over a real Kafka-protocol broker (librdkafka's mock
//! cluster): the embedded broker and its topics, the partitioner against
//! librdkafka's own murmur2, and `vitals broker` as a separate process.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use vitals::kafka::broker::EmbeddedBroker;
use vitals::kafka::partitioner::partition_for;
use vitals::kafka::publish::topic_for;
use vitals::kafka::topics;

fn consumer(bootstrap: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "vitals-test")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer")
}

#[test]
fn embedded_broker_has_every_spec_topic_co_partitioned() {
    let b = EmbeddedBroker::start(1, 3).expect("broker");
    let c = consumer(&b.bootstrap_servers());
    let md = c
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("metadata");
    for t in topics::all() {
        let topic = md
            .topics()
            .iter()
            .find(|x| x.name() == t)
            .unwrap_or_else(|| panic!("topic {t} missing"));
        assert_eq!(topic.partitions().len(), 3, "{t}");
    }
    assert!(EmbeddedBroker::start(1, 0).is_err());
}

#[tokio::test]
async fn partitioner_agrees_with_librdkafka_murmur2() {
    let b = EmbeddedBroker::start(1, 1).expect("broker");
    b.create_topic("keys", 7).expect("topic");
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap_servers())
        .set("partitioner", "murmur2_random")
        .create()
        .expect("producer");
    for i in 0..200 {
        let key = format!("acct-{i:06}");
        let d = p
            .send(
                FutureRecord::to("keys").key(&key).payload("x"),
                Duration::from_secs(10),
            )
            .await
            .expect("delivered");
        assert_eq!(
            d.partition as u32,
            partition_for(key.as_bytes(), 7),
            "key {key}"
        );
    }
}

#[tokio::test]
async fn vitals_broker_runs_as_a_process_and_stops_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vitals"))
        .args(["broker", "--partitions", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn vitals broker");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("address line");
    let addr = line.trim().to_string();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");

    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .create()
        .expect("producer");
    let d = p
        .send(
            FutureRecord::to("usage")
                .key("acct-1")
                .payload("{}")
                .partition(1),
            Duration::from_secs(10),
        )
        .await
        .expect("delivered");
    assert_eq!((d.partition, d.offset), (1, 0));

    let c = consumer(&addr);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("usage", 1, Offset::Beginning)
        .expect("tpl");
    c.assign(&tpl).expect("assign");
    let msg = match c.poll(Duration::from_secs(10)) {
        Some(Ok(m)) => m.detach(),
        Some(Err(e)) => panic!("consume: {e}"),
        None => panic!("no record within 10 s"),
    };
    assert_eq!(msg.key(), Some(&b"acct-1"[..]));
    assert_eq!(msg.payload(), Some(&b"{}"[..]));

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = child.wait().expect("wait");
    assert!(exit.success(), "vitals broker exits 0 on SIGTERM: {exit:?}");
}

#[test]
fn simulate_publishes_every_event_to_its_topic_keyed_and_partitioned() {
    let b = EmbeddedBroker::start(1, 3).expect("broker");
    let addr = b.bootstrap_servers();
    let args = ["--accounts", "6", "--days", "20", "--seed", "4"];
    let out = Command::new(env!("CARGO_BIN_EXE_vitals"))
        .arg("simulate")
        .args(args)
        .args(["--brokers", &addr])
        .output()
        .expect("run simulate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The same simulation as a file, for the expected records.
    let file = Command::new(env!("CARGO_BIN_EXE_vitals"))
        .arg("simulate")
        .args(args)
        .output()
        .expect("run simulate");
    let expected: Vec<String> = String::from_utf8(file.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert!(expected.len() > 100, "{}", expected.len());

    let c = consumer(&addr);
    let mut tpl = TopicPartitionList::new();
    for t in topics::INPUTS {
        for p in 0..3 {
            tpl.add_partition_offset(t, p, Offset::Beginning).unwrap();
        }
    }
    c.assign(&tpl).expect("assign");
    let mut got: Vec<(String, i32, String, String)> = Vec::new();
    // Poll until everything came, or nothing more did for a long while (a
    // loaded machine's first fetch can be slow).
    let mut idle_until = std::time::Instant::now() + Duration::from_secs(60);
    while got.len() < expected.len() {
        match c.poll(Duration::from_secs(1)) {
            Some(Ok(m)) => got.push((
                m.topic().to_string(),
                m.partition(),
                String::from_utf8(m.key().unwrap().to_vec()).unwrap(),
                String::from_utf8(m.payload().unwrap().to_vec()).unwrap(),
            )),
            Some(Err(e)) => panic!("consume: {e}"),
            None if std::time::Instant::now() < idle_until => continue,
            None => break,
        }
        idle_until = std::time::Instant::now() + Duration::from_secs(60);
    }
    assert_eq!(got.len(), expected.len(), "every event published once");
    for (topic, partition, key, payload) in &got {
        let ev = vitals::codec::json::decode(payload.as_bytes()).expect("valid event");
        assert_eq!(key, ev.account_id.as_ref());
        assert_eq!(topic, topic_for(ev.type_name()));
        assert_eq!(*partition as u32, partition_for(key.as_bytes(), 3));
    }
    let mut a: Vec<&String> = got.iter().map(|g| &g.3).collect();
    let mut e: Vec<&String> = expected.iter().collect();
    a.sort();
    e.sort();
    assert_eq!(a, e, "the same records as the file");
}
