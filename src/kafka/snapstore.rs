//! Snapshots in a Kafka topic (`snapshot.store = "kafka"`), so any
//! instance can restore any partition: the [`SnapshotStore`] beside the
//! local [`DirStore`](crate::snapshot::DirStore).
//!
//! # Layout
//!
//! - **One topic** (`snapshot.topic`, default `vitals.snapshots`) with the
//!   same partition count as the inputs; the snapshot of partition `p` is
//!   stored in partition `p`, so the owner of `p` reads and writes only
//!   its own partition (ownership lines up, as for the output topics).
//! - **A snapshot is N chunk records** of at most `snapshot.chunk_bytes`
//!   (default 512 KiB: well under Kafka's default 1 MB `message.max.bytes`
//!   and the embedded broker's 5 MiB per partition), produced in order by
//!   one idempotent producer. `put` returns only once every chunk is
//!   acknowledged: a snapshot is usable only when it is complete.
//! - **Key** of chunk `i`: `p<partition>/<next_offset, 20 digits>/<id>/<i,
//!   6 digits>`; the snapshot id (16 hex digits, unique per `put`) is in
//!   the key so that compaction can never mix the chunks of two snapshots
//!   taken at the same offset (a hand-off snapshot after a periodic one,
//!   or two instances during a rebalance).
//! - **Headers** of every chunk: `vitals.snapshot.id`,
//!   `vitals.snapshot.next_offset`, `vitals.snapshot.chunk` (index),
//!   `vitals.snapshot.chunks` (count), `vitals.snapshot.length` (bytes of
//!   the whole snapshot) and `vitals.snapshot.xxh3` (xxh3-64 of the whole,
//!   16 hex digits) — ASCII, like the service's other headers.
//!
//! # Reading
//!
//! There is no directory to list: a reader scans the partition with its
//! own consumer (assigned, never subscribed; no group, no commits) and
//! keeps an index per partition that later scans extend from where the
//! last one stopped (the topic is append-only). A snapshot is listed only
//! when it is **complete**: chunks `0..N` seen in order, their lengths
//! summing to the announced length, and the xxh3 of their concatenation
//! equal to the announced one (hashed while scanning; payloads are not
//! kept). A snapshot with a missing chunk (a writer that died mid-`put`,
//! or retention that deleted its first chunks), a corrupt chunk or a
//! tombstone is skipped, and recovery falls back to an older snapshot or
//! to the log, as with the directory store. `get` reads the chunk records
//! again and checks the assembled bytes once more.
//!
//! Newest first means the highest `next_offset`; among snapshots at the
//! same offset, the one written last.
//!
//! # Retention: the last K
//!
//! Kafka cannot delete single records. `retain` writes **tombstones**
//! (null values) for every chunk key of the snapshots beyond the newest K,
//! and of incomplete ones older than the oldest kept; readers treat a
//! tombstoned snapshot as gone. On a topic with `cleanup.policy=compact`
//! the broker then drops those chunks (and, after `delete.retention.ms`,
//! the tombstones), so the topic holds about K snapshots per partition.
//! Compaction never touches the active segment: a `segment.ms` of an hour
//! (deploy/README.md) bounds how long deleted snapshots stay on disk. The
//! embedded broker does not compact; it keeps at most 5 MiB per partition
//! and drops the oldest records beyond that, which the scan notices (a
//! snapshot whose first chunk is gone is incomplete).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use tracing::{debug, info, warn};
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use crate::snapshot::{SnapshotError, SnapshotStore};

/// Header names of a chunk record.
pub mod headers {
    pub const ID: &str = "vitals.snapshot.id";
    pub const NEXT_OFFSET: &str = "vitals.snapshot.next_offset";
    pub const CHUNK: &str = "vitals.snapshot.chunk";
    pub const CHUNKS: &str = "vitals.snapshot.chunks";
    pub const LENGTH: &str = "vitals.snapshot.length";
    pub const XXH3: &str = "vitals.snapshot.xxh3";
}

/// The default chunk size (512 KiB).
pub const DEFAULT_CHUNK_BYTES: usize = 512 * 1024;
/// Longest a chunk may wait for its acknowledgement before `put` fails.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a scan may go without a record before it fails.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The key of chunk `chunk` of snapshot `id`.
pub fn chunk_key(partition: u32, next_offset: i64, id: &str, chunk: u32) -> String {
    format!("p{partition}/{next_offset:020}/{id}/{chunk:06}")
}

/// (partition, next_offset, id, chunk) of a chunk key.
fn parse_key(key: &[u8]) -> Option<(u32, i64, &str, u32)> {
    let key = std::str::from_utf8(key).ok()?;
    let mut it = key.split('/');
    let p = it.next()?.strip_prefix('p')?.parse().ok()?;
    let off = it.next()?.parse().ok()?;
    let id = it.next()?;
    let chunk = it.next()?.parse().ok()?;
    if it.next().is_some() || id.is_empty() {
        return None;
    }
    Some((p, off, id, chunk))
}

/// The store's name of a snapshot: `<next_offset, 20 digits>-<id>`, so
/// names sort like the directory store's.
fn name_of(next_offset: i64, id: &str) -> String {
    format!("{next_offset:020}-{id}")
}

fn parse_name(name: &str) -> Option<(i64, &str)> {
    let (off, id) = name.split_once('-')?;
    Some((off.parse().ok()?, id))
}

/// What a chunk record's headers announce.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ChunkHeader {
    id: String,
    next_offset: i64,
    chunk: u32,
    chunks: u32,
    length: u64,
    xxh3: u64,
}

impl ChunkHeader {
    fn parse(m: &BorrowedMessage<'_>) -> Option<Self> {
        let h = m.headers()?;
        let get = |name: &str| {
            h.iter()
                .find(|x| x.key == name)
                .and_then(|x| x.value)
                .and_then(|v| std::str::from_utf8(v).ok())
        };
        Some(ChunkHeader {
            id: get(headers::ID)?.to_string(),
            next_offset: get(headers::NEXT_OFFSET)?.parse().ok()?,
            chunk: get(headers::CHUNK)?.parse().ok()?,
            chunks: get(headers::CHUNKS)?.parse().ok()?,
            length: get(headers::LENGTH)?.parse().ok()?,
            xxh3: u64::from_str_radix(get(headers::XXH3)?, 16).ok()?,
        })
    }
}

/// Where a snapshot stands, as far as the scan has seen.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Chunks `0..offsets.len()` seen in order; more to come.
    Partial,
    /// Every chunk seen, length and checksum right.
    Complete,
    /// Unusable, with the reason.
    Broken(String),
}

/// One snapshot in the index.
struct Entry {
    next_offset: i64,
    chunks: u32,
    length: u64,
    xxh3: u64,
    /// The offset of chunk `i` at index `i`.
    offsets: Vec<i64>,
    seen_bytes: u64,
    /// Hash of the chunks so far, while `Partial`.
    hasher: Option<Box<Xxh3>>,
    state: State,
    /// A tombstone was seen (or written) for it.
    deleted: bool,
}

impl Entry {
    fn usable(&self) -> bool {
        self.state == State::Complete && !self.deleted
    }

    fn last_offset(&self) -> i64 {
        self.offsets.last().copied().unwrap_or(-1)
    }

    /// Takes in chunk `h.chunk` (at `offset`); `Err` says why the snapshot
    /// cannot be complete. Completing it sets the final state.
    fn take_chunk(&mut self, h: &ChunkHeader, offset: i64, payload: &[u8]) -> Result<(), String> {
        match self.state {
            State::Partial => {}
            State::Complete => return Err("a chunk after the last one".into()),
            // Already reported.
            State::Broken(_) => return Ok(()),
        }
        if (self.chunks, self.length, self.xxh3) != (h.chunks, h.length, h.xxh3) {
            return Err("chunks announce different sizes or checksums".into());
        }
        if h.chunk as usize != self.offsets.len() {
            return Err(format!(
                "chunk {} where chunk {} was expected (missing or out of order)",
                h.chunk,
                self.offsets.len()
            ));
        }
        if self.seen_bytes + payload.len() as u64 > self.length {
            return Err("chunks longer than the announced length".into());
        }
        self.offsets.push(offset);
        self.seen_bytes += payload.len() as u64;
        if let Some(hs) = self.hasher.as_mut() {
            hs.update(payload);
        }
        if self.offsets.len() as u32 == self.chunks {
            let sum = self.hasher.take().map(|h| h.digest());
            self.state = if self.seen_bytes != self.length {
                State::Broken(format!(
                    "{} bytes in its chunks, {} announced",
                    self.seen_bytes, self.length
                ))
            } else if sum != Some(self.xxh3) {
                State::Broken("checksum mismatch: a chunk is corrupt".into())
            } else {
                State::Complete
            };
        }
        Ok(())
    }
}

/// The snapshots of one partition, from scanning `[.., next)`.
#[derive(Default)]
struct PartIndex {
    /// Offsets below this one are scanned.
    next: i64,
    entries: HashMap<String, Entry>,
}

impl PartIndex {
    /// The usable snapshots, newest first: (name, id).
    fn newest_first(&self) -> Vec<(String, &str)> {
        let mut v: Vec<(&String, &Entry)> =
            self.entries.iter().filter(|(_, e)| e.usable()).collect();
        v.sort_by_key(|(_, e)| std::cmp::Reverse((e.next_offset, e.last_offset())));
        v.into_iter()
            .map(|(id, e)| (name_of(e.next_offset, id), id.as_str()))
            .collect()
    }

    /// Takes in one record of the partition.
    fn apply(&mut self, topic: &str, partition: u32, m: &BorrowedMessage<'_>) {
        let Some((p, off, id, chunk)) = m.key().and_then(parse_key) else {
            debug!(
                topic,
                partition,
                offset = m.offset(),
                "not a snapshot chunk (key); ignored"
            );
            return;
        };
        if p != partition {
            warn!(
                topic,
                partition,
                offset = m.offset(),
                key_partition = p,
                "snapshot chunk of another partition; ignored"
            );
            return;
        }
        let Some(payload) = m.payload() else {
            // A tombstone: the snapshot was retired by `retain`.
            if let Some(e) = self.entries.get_mut(id) {
                e.deleted = true;
                e.hasher = None;
            }
            return;
        };
        let h = match ChunkHeader::parse(m) {
            Some(h) if h.id == id && h.next_offset == off && h.chunk == chunk => h,
            _ => {
                self.break_entry(
                    topic,
                    partition,
                    id,
                    "a chunk's headers are missing or disagree with its key",
                );
                return;
            }
        };
        let e = self.entries.entry(h.id.clone()).or_insert_with(|| Entry {
            next_offset: h.next_offset,
            chunks: h.chunks,
            length: h.length,
            xxh3: h.xxh3,
            offsets: Vec::new(),
            seen_bytes: 0,
            hasher: Some(Box::new(Xxh3::new())),
            state: State::Partial,
            deleted: false,
        });
        if let Err(reason) = e.take_chunk(&h, m.offset(), payload) {
            self.break_entry(topic, partition, id, &reason);
            return;
        }
        if let State::Broken(r) = &e.state {
            warn!(topic, partition, snapshot = %name_of(e.next_offset, id), reason = %r, "unusable snapshot in the store; it is skipped");
        }
    }

    fn break_entry(&mut self, topic: &str, partition: u32, id: &str, reason: &str) {
        if let Some(e) = self.entries.get_mut(id) {
            if !matches!(e.state, State::Broken(_)) {
                warn!(topic, partition, snapshot = %name_of(e.next_offset, id), reason, "unusable snapshot in the store; it is skipped");
                e.state = State::Broken(reason.to_string());
                e.hasher = None;
            }
        } else {
            warn!(
                topic,
                partition, id, reason, "stray snapshot chunk; ignored"
            );
        }
    }
}

/// Snapshots as chunked records of a Kafka topic (see the module doc).
pub struct KafkaStore {
    topic: String,
    chunk_bytes: usize,
    producer: FutureProducer,
    consumer_config: ClientConfig,
    /// Idle reading consumers (one per concurrent scan).
    consumers: Mutex<Vec<BaseConsumer>>,
    index: Mutex<HashMap<u32, Arc<Mutex<PartIndex>>>>,
}

impl KafkaStore {
    /// A store over `topic`, with the brokers (and security settings) of
    /// `client`. Chunks hold at most `chunk_bytes` (at least 1).
    pub fn new(
        client: &ClientConfig,
        topic: impl Into<String>,
        chunk_bytes: usize,
    ) -> Result<Self, SnapshotError> {
        Self::with_clients(client, client, topic, chunk_bytes)
    }

    /// [`KafkaStore::new`] with one set of settings for its consumers and
    /// another for its producer.
    pub fn with_clients(
        consumer: &ClientConfig,
        producer: &ClientConfig,
        topic: impl Into<String>,
        chunk_bytes: usize,
    ) -> Result<Self, SnapshotError> {
        let topic = topic.into();
        let kafka = |source| SnapshotError::Kafka {
            topic: topic.clone(),
            partition: None,
            source,
        };
        let mut pc = producer.clone();
        pc.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set(
                "message.timeout.ms",
                DELIVERY_TIMEOUT.as_millis().to_string(),
            );
        let producer: FutureProducer = pc.create().map_err(kafka)?;
        let mut cc = consumer.clone();
        // librdkafka wants a group id to assign partitions; this consumer
        // never joins the group nor commits.
        cc.set("group.id", format!("{topic}.reader"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            // Retention may move the log start while a scan begins: read
            // from what is left rather than jump to the end.
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "10")
            .set("fetch.max.bytes", "52428800")
            .set("max.partition.fetch.bytes", "10485760");
        Ok(KafkaStore {
            topic,
            chunk_bytes: chunk_bytes.max(1),
            producer,
            consumer_config: cc,
            consumers: Mutex::new(Vec::new()),
            index: Mutex::new(HashMap::new()),
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    fn err(&self, partition: u32, source: KafkaError) -> SnapshotError {
        SnapshotError::Kafka {
            topic: self.topic.clone(),
            partition: Some(partition),
            source,
        }
    }

    fn part_index(&self, partition: u32) -> Arc<Mutex<PartIndex>> {
        self.index
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(partition)
            .or_default()
            .clone()
    }

    /// Runs `f` with an idle reading consumer (created when none is).
    fn with_consumer<T>(
        &self,
        partition: u32,
        f: impl FnOnce(&BaseConsumer) -> Result<T, SnapshotError>,
    ) -> Result<T, SnapshotError> {
        let idle = self
            .consumers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        let c = match idle {
            Some(c) => c,
            None => self
                .consumer_config
                .create()
                .map_err(|e| self.err(partition, e))?,
        };
        let r = f(&c);
        if c.unassign().is_ok() {
            self.consumers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(c);
        }
        r
    }

    /// Calls `f` on every record of the partition in `[from, to)` (fewer
    /// when compaction or retention removed some).
    fn read(
        &self,
        c: &BaseConsumer,
        partition: u32,
        from: i64,
        to: i64,
        mut f: impl FnMut(&BorrowedMessage<'_>),
    ) -> Result<(), SnapshotError> {
        if from >= to {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, partition as i32, Offset::Offset(from))
            .map_err(|e| self.err(partition, e))?;
        c.assign(&tpl).map_err(|e| self.err(partition, e))?;
        let mut next = from;
        let mut progress = Instant::now();
        while next < to {
            match c.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    next = m.offset() + 1;
                    progress = Instant::now();
                    f(&m);
                }
                // The end of the partition: what was removed below `to`
                // is not coming.
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => {
                    warn!(topic = %self.topic, partition, error = %e, "snapshot read error; retrying")
                }
                None => {}
            }
            if progress.elapsed() > READ_TIMEOUT {
                return Err(SnapshotError::ReadTimeout {
                    topic: self.topic.clone(),
                    partition,
                    offset: next,
                    secs: READ_TIMEOUT.as_secs(),
                });
            }
        }
        Ok(())
    }

    /// Extends the partition's index with what was appended since the
    /// last scan.
    fn refresh(&self, partition: u32, idx: &mut PartIndex) -> Result<(), SnapshotError> {
        self.with_consumer(partition, |c| {
            let (low, high) = c
                .fetch_watermarks(&self.topic, partition as i32, Duration::from_secs(10))
                .map_err(|e| self.err(partition, e))?;
            if high < idx.next {
                // The topic was recreated: start over.
                warn!(topic = %self.topic, partition, high, scanned = idx.next, "snapshot topic is shorter than scanned before; rescanning");
                *idx = PartIndex::default();
            }
            // Retention removed records below `low`: a snapshot with a
            // chunk there is incomplete for good.
            idx.entries.retain(|id, e| {
                let gone = e.offsets.first().is_some_and(|&o| o < low);
                if gone {
                    debug!(topic = %self.topic, partition, snapshot = %name_of(e.next_offset, id), "snapshot deleted by retention");
                }
                !gone
            });
            let from = idx.next.max(low);
            let scanned = Instant::now();
            let mut records = 0u64;
            self.read(c, partition, from, high, |m| {
                records += 1;
                idx.apply(&self.topic, partition, m);
            })?;
            idx.next = high;
            if records > 0 {
                debug!(topic = %self.topic, partition, from, to = high, records, ms = scanned.elapsed().as_millis() as u64, "scanned the snapshot topic");
            }
            Ok(())
        })
    }

    /// Sends `records` (key, payload, headers) to the partition and waits
    /// for every acknowledgement; returns their offsets.
    fn send_all(
        &self,
        partition: u32,
        records: Vec<(String, Option<&[u8]>, OwnedHeaders)>,
    ) -> Result<Vec<i64>, SnapshotError> {
        let mut pending: Vec<DeliveryFuture> = Vec::with_capacity(records.len());
        for (key, payload, h) in records {
            let mut fr = FutureRecord::<str, [u8]>::to(&self.topic)
                .partition(partition as i32)
                .key(key.as_str())
                .headers(h);
            if let Some(p) = payload {
                fr = fr.payload(p);
            }
            loop {
                match self.producer.send_result(fr) {
                    Ok(d) => {
                        pending.push(d);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        self.producer.poll(Duration::from_millis(10));
                        fr = back;
                    }
                    Err((e, _)) => return Err(self.err(partition, e)),
                }
            }
        }
        let mut offsets = Vec::with_capacity(pending.len());
        for d in pending {
            match futures::executor::block_on(d) {
                Ok(Ok(d)) => offsets.push(d.offset),
                Ok(Err((e, _))) => return Err(self.err(partition, e)),
                Err(_) => return Err(self.err(partition, KafkaError::Canceled)),
            }
        }
        Ok(offsets)
    }
}

/// Offsets that follow each other without a gap.
fn consecutive(offsets: &[i64]) -> bool {
    offsets.windows(2).all(|w| w[1] == w[0] + 1)
}

/// A snapshot id: unique per `put` (time, process, a counter and the
/// content), 16 hex digits.
fn new_id(bytes_sum: u64) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut seed = Vec::with_capacity(40);
    seed.extend_from_slice(&nanos.to_le_bytes());
    seed.extend_from_slice(&std::process::id().to_le_bytes());
    seed.extend_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    seed.extend_from_slice(&bytes_sum.to_le_bytes());
    format!("{:016x}", xxh3_64(&seed))
}

fn owned(h: &[(&str, String)]) -> OwnedHeaders {
    h.iter()
        .fold(OwnedHeaders::new_with_capacity(h.len()), |acc, (k, v)| {
            acc.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            })
        })
}

impl SnapshotStore for KafkaStore {
    fn put(&self, partition: u32, next_offset: i64, bytes: &[u8]) -> Result<String, SnapshotError> {
        if bytes.is_empty() {
            return Err(SnapshotError::Truncated("an empty snapshot"));
        }
        let started = Instant::now();
        let sum = xxh3_64(bytes);
        let id = new_id(sum);
        let pieces: Vec<&[u8]> = bytes.chunks(self.chunk_bytes).collect();
        let n = pieces.len() as u32;
        let records = pieces
            .iter()
            .enumerate()
            .map(|(i, piece)| {
                let h = owned(&[
                    (headers::ID, id.clone()),
                    (headers::NEXT_OFFSET, next_offset.to_string()),
                    (headers::CHUNK, i.to_string()),
                    (headers::CHUNKS, n.to_string()),
                    (headers::LENGTH, bytes.len().to_string()),
                    (headers::XXH3, format!("{sum:016x}")),
                ]);
                (
                    chunk_key(partition, next_offset, &id, i as u32),
                    Some(*piece),
                    h,
                )
            })
            .collect();
        let offsets = self.send_all(partition, records)?;
        let name = name_of(next_offset, &id);
        // What this process wrote need not be read back: when nothing else
        // was appended in between, the index takes it in directly.
        let idx = self.part_index(partition);
        let mut idx = idx.lock().unwrap_or_else(|p| p.into_inner());
        if offsets.first() == Some(&idx.next) && consecutive(&offsets) {
            idx.next = offsets.last().map_or(idx.next, |o| o + 1);
            idx.entries.insert(
                id,
                Entry {
                    next_offset,
                    chunks: n,
                    length: bytes.len() as u64,
                    xxh3: sum,
                    offsets,
                    seen_bytes: bytes.len() as u64,
                    hasher: None,
                    state: State::Complete,
                    deleted: false,
                },
            );
        }
        debug!(topic = %self.topic, partition, snapshot = %name, chunks = n, bytes = bytes.len(), ms = started.elapsed().as_millis() as u64, "snapshot stored in kafka");
        Ok(name)
    }

    fn list(&self, partition: u32) -> Result<Vec<String>, SnapshotError> {
        let idx = self.part_index(partition);
        let mut idx = idx.lock().unwrap_or_else(|p| p.into_inner());
        self.refresh(partition, &mut idx)?;
        Ok(idx.newest_first().into_iter().map(|(n, _)| n).collect())
    }

    fn get(&self, partition: u32, name: &str) -> Result<Vec<u8>, SnapshotError> {
        let not_found = || SnapshotError::NotFound {
            name: name.to_string(),
        };
        let (next_offset, id) = parse_name(name).ok_or_else(not_found)?;
        let idx = self.part_index(partition);
        let mut idx = idx.lock().unwrap_or_else(|p| p.into_inner());
        if !idx.entries.contains_key(id) {
            self.refresh(partition, &mut idx)?;
        }
        let e = idx.entries.get(id).ok_or_else(not_found)?;
        if e.next_offset != next_offset {
            return Err(not_found());
        }
        match &e.state {
            _ if e.deleted => return Err(not_found()),
            State::Broken(r) => {
                return Err(SnapshotError::Incomplete {
                    name: name.to_string(),
                    reason: r.clone(),
                })
            }
            State::Partial => {
                return Err(SnapshotError::Incomplete {
                    name: name.to_string(),
                    reason: format!("{} of {} chunks", e.offsets.len(), e.chunks),
                })
            }
            State::Complete => {}
        }
        let (first, last, length, chunks, want) =
            (e.offsets[0], e.last_offset(), e.length, e.chunks, e.xxh3);
        drop(idx);
        let mut out = Vec::with_capacity(usize::try_from(length).unwrap_or(0));
        let mut got = 0u32;
        self.with_consumer(partition, |c| {
            self.read(c, partition, first, last + 1, |m| {
                let Some((_, _, kid, chunk)) = m.key().and_then(parse_key) else {
                    return;
                };
                if kid == id && chunk == got {
                    if let Some(p) = m.payload() {
                        out.extend_from_slice(p);
                        got += 1;
                    }
                }
            })
        })?;
        if got != chunks || out.len() as u64 != length {
            return Err(SnapshotError::Incomplete {
                name: name.to_string(),
                reason: format!(
                    "read {got} of {chunks} chunks, {} of {length} bytes",
                    out.len()
                ),
            });
        }
        if xxh3_64(&out) != want {
            return Err(SnapshotError::Checksum);
        }
        Ok(out)
    }

    fn retain(&self, partition: u32, keep: usize) -> Result<(), SnapshotError> {
        let idx = self.part_index(partition);
        let mut idx = idx.lock().unwrap_or_else(|p| p.into_inner());
        self.refresh(partition, &mut idx)?;
        let kept = idx.newest_first();
        let kept = &kept[..keep.max(1).min(kept.len())];
        let oldest_kept = kept
            .last()
            .and_then(|(_, id)| idx.entries.get(*id))
            .map_or(i64::MIN, |e| e.next_offset);
        let kept_ids: Vec<String> = kept.iter().map(|(_, id)| id.to_string()).collect();
        let retire: Vec<(String, i64, u32)> = idx
            .entries
            .iter()
            .filter(|(id, e)| {
                !e.deleted && !kept_ids.contains(id) && (e.usable() || e.next_offset < oldest_kept)
            })
            .map(|(id, e)| {
                let n = match e.state {
                    State::Broken(_) => e.chunks.max(e.offsets.len() as u32),
                    _ => e.chunks,
                };
                (id.clone(), e.next_offset, n)
            })
            .collect();
        if retire.is_empty() {
            return Ok(());
        }
        let mut records = Vec::new();
        for (id, off, n) in &retire {
            for i in 0..*n {
                let h = owned(&[(headers::ID, id.clone())]);
                records.push((chunk_key(partition, *off, id, i), None, h));
            }
        }
        let offsets = self.send_all(partition, records)?;
        for (id, off, _) in &retire {
            if let Some(e) = idx.entries.get_mut(id) {
                e.deleted = true;
                e.hasher = None;
            }
            info!(topic = %self.topic, partition, snapshot = %name_of(*off, id), "snapshot retired (tombstones written)");
        }
        if offsets.first() == Some(&idx.next) && consecutive(&offsets) {
            idx.next = offsets.last().map_or(idx.next, |o| o + 1);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_names_round_trip() {
        let k = chunk_key(3, 12_345, "00ff00ff00ff00ff", 7);
        assert_eq!(k, "p3/00000000000000012345/00ff00ff00ff00ff/000007");
        assert_eq!(
            parse_key(k.as_bytes()),
            Some((3, 12_345, "00ff00ff00ff00ff", 7))
        );
        assert_eq!(parse_key(b"p3/12/x"), None);
        assert_eq!(parse_key(b"p3/12//1"), None);
        assert_eq!(parse_key(b"p3/12/x/1/2"), None);
        assert_eq!(parse_key(b"\xff"), None);
        let n = name_of(12_345, "00ff00ff00ff00ff");
        assert_eq!(parse_name(&n), Some((12_345, "00ff00ff00ff00ff")));
        assert!(name_of(9, "b") < name_of(10, "a"), "names sort by offset");
        assert_ne!(new_id(1), new_id(1), "ids are unique per put");
    }
}
