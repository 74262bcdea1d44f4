//! Per-partition snapshots (DESIGN.md, "Durability"): a consistent cut of
//! one partition's fold — every account, timers (derived from accounts),
//! dedup memory, alert state, watermark, statistics — at a sequenced
//! offset, so recovery loads it and replays only the tail of
//! `vitals.sequenced` after it.
//!
//! File layout (little endian), written atomically (temp file, fsync,
//! rename, fsync of the directory):
//!
//! ```text
//! magic "VITALSNP" | version u32 | partition u32 | next_offset i64
//! | created_ms i64 | accounts u64 | watermark i64 (i64::MIN: none)
//! | cursor_len u32 | cursor (UTF-8, the sequencer's cursor then)
//! | model_len u32 | model id (UTF-8)
//! | state_len u64 | state (prost `PartitionState`, proto/vitals/v1/state.proto)
//! [ | shadow_model_len u32 | shadow model id | shadow_len u64 | shadow state ]
//! | checksum u64 (xxh3-64 of every byte before it)
//! ```
//!
//! The bracketed part is there only when a shadow scorecard runs
//! (`[shadow]`): its fold's state at the same cut. Readers that do not
//! know it ignore it; a service with a shadow scorecard uses a snapshot
//! only if it holds the shadow state of that scorecard.
//!
//! Format evolution: a file whose `version` is not [`VERSION`], or whose
//! state format or model id differs from this build's, is *rejected with a
//! message* and recovery falls back to an older snapshot, then to a full
//! replay of the log — never to empty state. The log is the source of
//! truth; a snapshot is only a shortcut, so rejecting one costs time, not
//! correctness.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::codec::state;
use crate::core::{Model, Partition, ScorecardChange, Ts};

/// Snapshot file format version.
pub const VERSION: u32 = 1;
const MAGIC: &[u8; 8] = b"VITALSNP";

/// Why a snapshot could not be written or used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("not a Vitals snapshot (bad magic)")]
    Magic,
    #[error("truncated snapshot ({0})")]
    Truncated(&'static str),
    #[error("checksum mismatch: the file is corrupt")]
    Checksum,
    #[error("snapshot format version {found} is not supported (this build reads {VERSION}); the partition is rebuilt from the log")]
    Version { found: u32 },
    #[error("snapshot was folded with model {found}, the config now gives {expected}; the partition is rebuilt from the log")]
    Model { found: String, expected: String },
    #[error("snapshot holds shadow scorecard {found:?}, the config now gives {expected}; the partition is rebuilt from the log")]
    Shadow {
        found: Option<String>,
        expected: String,
    },
    #[error("snapshot state: {0}")]
    State(#[from] state::StateError),
    #[error("snapshot store {topic}{}: {source}", partition.map(|p| format!("[{p}]")).unwrap_or_default())]
    Kafka {
        topic: String,
        partition: Option<u32>,
        source: rdkafka::error::KafkaError,
    },
    #[error("snapshot store {topic}[{partition}]: no record for {secs} s while reading at offset {offset}")]
    ReadTimeout {
        topic: String,
        partition: u32,
        offset: i64,
        secs: u64,
    },
    #[error("snapshot {name} is not in the store")]
    NotFound { name: String },
    #[error("snapshot {name} is incomplete or corrupt in the store: {reason}")]
    Incomplete { name: String, reason: String },
}

fn io<T>(path: &Path, r: std::io::Result<T>) -> Result<T, SnapshotError> {
    r.map_err(|source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// What a snapshot says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Meta {
    pub version: u32,
    pub partition: u32,
    /// The next `vitals.sequenced` offset to fold after loading it.
    pub next_offset: i64,
    pub created_ms: i64,
    pub accounts: u64,
    pub watermark: Option<Ts>,
    /// The sequencer's cursor (input positions) when it was taken.
    pub cursor: String,
    pub model: String,
    /// The shadow scorecard's model id, when the snapshot holds its state.
    pub shadow_model: Option<String>,
}

/// Encodes a snapshot of `part` at `next_offset`.
pub fn encode(
    part: &Partition,
    partition: u32,
    next_offset: i64,
    cursor: &str,
    created_ms: i64,
) -> Vec<u8> {
    encode_with_shadow(part, None, partition, next_offset, cursor, created_ms)
}

/// Encodes a snapshot of `part` and, if one runs, the shadow scorecard's
/// fold at the same cut.
pub fn encode_with_shadow(
    part: &Partition,
    shadow: Option<&Partition>,
    partition: u32,
    next_offset: i64,
    cursor: &str,
    created_ms: i64,
) -> Vec<u8> {
    Writer::new(part, shadow, partition, next_offset, cursor, created_ms).to_vec()
}

/// A snapshot measured and ready to be streamed (to a file, say) without
/// being held whole in memory: [`encode_with_shadow`]'s bytes, written in
/// pieces.
pub struct Writer<'a> {
    /// Everything before the state.
    head: Vec<u8>,
    state: state::StateWriter<'a>,
    shadow: Option<(&'a str, state::StateWriter<'a>)>,
}

impl<'a> Writer<'a> {
    pub fn new(
        part: &'a Partition,
        shadow: Option<&'a Partition>,
        partition: u32,
        next_offset: i64,
        cursor: &str,
        created_ms: i64,
    ) -> Self {
        let model = part.model.id.as_bytes();
        let state = state::StateWriter::new(part);
        let mut b = Vec::with_capacity(128 + cursor.len());
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.extend_from_slice(&partition.to_le_bytes());
        b.extend_from_slice(&next_offset.to_le_bytes());
        b.extend_from_slice(&created_ms.to_le_bytes());
        b.extend_from_slice(&(part.accounts.len() as u64).to_le_bytes());
        let wm = if part.max_time == Ts::MIN {
            Ts::MIN
        } else {
            part.watermark()
        };
        b.extend_from_slice(&wm.to_le_bytes());
        b.extend_from_slice(&(cursor.len() as u32).to_le_bytes());
        b.extend_from_slice(cursor.as_bytes());
        b.extend_from_slice(&(model.len() as u32).to_le_bytes());
        b.extend_from_slice(model);
        b.extend_from_slice(&(state.len() as u64).to_le_bytes());
        Writer {
            head: b,
            state,
            shadow: shadow.map(|sh| (&*sh.model.id, state::StateWriter::new(sh))),
        }
    }

    /// Bytes [`Writer::write_to`] writes.
    pub fn len(&self) -> usize {
        let shadow = self
            .shadow
            .as_ref()
            .map_or(0, |(id, st)| 4 + id.len() + 8 + st.len());
        self.head.len() + self.state.len() + shadow + 8
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The whole snapshot in memory.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(self.len());
        // Writing to a `Vec` cannot fail.
        let _ = self.write_to(&mut b);
        b
    }

    /// Streams the snapshot to `w`, checksumming as it goes.
    pub fn write_to(&self, w: &mut impl Write) -> std::io::Result<()> {
        let mut w = Summed {
            inner: w,
            sum: xxhash_rust::xxh3::Xxh3Default::new(),
            written: 0,
        };
        w.write_all(&self.head)?;
        self.state.write_to(&mut w)?;
        if let Some((id, st)) = &self.shadow {
            w.write_all(&(id.len() as u32).to_le_bytes())?;
            w.write_all(id.as_bytes())?;
            w.write_all(&(st.len() as u64).to_le_bytes())?;
            st.write_to(&mut w)?;
        }
        // The lengths in the file were measured before the states were
        // written: a difference would be a bug in the encoder, and such a
        // file must not get a valid checksum.
        if w.written + 8 != self.len() as u64 {
            return Err(std::io::Error::other(format!(
                "snapshot encoder wrote {} bytes where it measured {}",
                w.written + 8,
                self.len()
            )));
        }
        let sum = w.sum.digest();
        w.inner.write_all(&sum.to_le_bytes())
    }
}

/// A writer that checksums (xxh3-64) and counts what passes through it.
struct Summed<'w, W: Write> {
    inner: &'w mut W,
    sum: xxhash_rust::xxh3::Xxh3Default,
    written: u64,
}

impl<W: Write> Write for Summed<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sum.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

struct Rd<'a>(&'a [u8]);

impl<'a> Rd<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], SnapshotError> {
        if self.0.len() < n {
            return Err(SnapshotError::Truncated(what));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, SnapshotError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, SnapshotError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn i64(&mut self, what: &'static str) -> Result<i64, SnapshotError> {
        Ok(self.u64(what)? as i64)
    }
    fn str(&mut self, what: &'static str) -> Result<String, SnapshotError> {
        let n = self.u32(what)? as usize;
        Ok(String::from_utf8_lossy(self.take(n, what)?).into_owned())
    }
}

/// Checks magic, checksum and version; returns the metadata and the state
/// bytes.
pub fn parse(bytes: &[u8]) -> Result<(Meta, &[u8]), SnapshotError> {
    parse_all(bytes).map(|(m, st, _)| (m, st))
}

/// [`parse`], plus the shadow state's bytes when there are any.
#[allow(clippy::type_complexity)]
fn parse_all(bytes: &[u8]) -> Result<(Meta, &[u8], Option<&[u8]>), SnapshotError> {
    if bytes.len() < 16 || &bytes[..8] != MAGIC {
        return Err(SnapshotError::Magic);
    }
    let (body, sum) = bytes.split_at(bytes.len() - 8);
    let mut s = [0u8; 8];
    s.copy_from_slice(sum);
    if xxhash_rust::xxh3::xxh3_64(body) != u64::from_le_bytes(s) {
        return Err(SnapshotError::Checksum);
    }
    let mut r = Rd(&body[8..]);
    let version = r.u32("version")?;
    if version != VERSION {
        return Err(SnapshotError::Version { found: version });
    }
    let partition = r.u32("partition")?;
    let next_offset = r.i64("next_offset")?;
    let created_ms = r.i64("created_ms")?;
    let accounts = r.u64("accounts")?;
    let wm = r.i64("watermark")?;
    let cursor = r.str("cursor")?;
    let model = r.str("model")?;
    let n = usize::try_from(r.u64("state_len")?).map_err(|_| SnapshotError::Truncated("state"))?;
    let st = r.take(n, "state")?;
    let (shadow_model, shadow) = if r.0.is_empty() {
        (None, None)
    } else {
        let id = r.str("shadow_model")?;
        let n = usize::try_from(r.u64("shadow_len")?)
            .map_err(|_| SnapshotError::Truncated("shadow"))?;
        (Some(id), Some(r.take(n, "shadow")?))
    };
    Ok((
        Meta {
            version,
            partition,
            next_offset,
            created_ms,
            accounts,
            watermark: (wm != Ts::MIN).then_some(wm),
            cursor,
            model,
            shadow_model,
        },
        st,
        shadow,
    ))
}

/// Decodes a snapshot into the partition state to fold on with `model`.
pub fn decode(bytes: &[u8], model: Arc<Model>) -> Result<(Meta, Partition), SnapshotError> {
    decode_with_shadow(bytes, model, None).map(|(m, p, _)| (m, p))
}

/// [`decode`], and with `shadow` (the shadow scorecard's model) also the
/// shadow fold's state, which the snapshot must then hold for that model.
pub fn decode_with_shadow(
    bytes: &[u8],
    model: Arc<Model>,
    shadow: Option<Arc<Model>>,
) -> Result<(Meta, Partition, Option<Partition>), SnapshotError> {
    let (meta, st, shadow_st) = parse_all(bytes)?;
    if meta.model != *model.id {
        return Err(SnapshotError::Model {
            found: meta.model,
            expected: model.id.to_string(),
        });
    }
    let shadow = match (shadow, shadow_st) {
        (None, _) => None,
        (Some(m), Some(st)) if meta.shadow_model.as_deref() == Some(&*m.id) => {
            Some(state::decode(st, m)?)
        }
        (Some(m), _) => {
            return Err(SnapshotError::Shadow {
                found: meta.shadow_model.clone(),
                expected: m.id.to_string(),
            })
        }
    };
    let part = state::decode(st, model)?;
    Ok((meta, part, shadow))
}

/// The scorecard changes recorded in a valid snapshot, whatever model it
/// was folded with: a partition rebuilt from the log after a config change
/// keeps the marks of the changes before it.
pub fn scorecard_changes(bytes: &[u8]) -> Result<Vec<ScorecardChange>, SnapshotError> {
    let (_, st, _) = parse_all(bytes)?;
    Ok(state::scorecard_changes(st)?)
}

/// Where snapshots live. One small interface: the directory store below
/// and the Kafka-topic store ([`crate::kafka::snapstore::KafkaStore`]).
pub trait SnapshotStore: Send + Sync {
    /// Stores a snapshot of `partition` taken at `next_offset`.
    fn put(&self, partition: u32, next_offset: i64, bytes: &[u8]) -> Result<String, SnapshotError>;
    /// Stores the snapshot `snap` streams; its name and size. A store that
    /// can writes it without holding it whole in memory (the directory
    /// store does); the default collects it and calls [`SnapshotStore::put`].
    fn put_from(
        &self,
        partition: u32,
        next_offset: i64,
        snap: &Writer<'_>,
    ) -> Result<(String, u64), SnapshotError> {
        let b = snap.to_vec();
        Ok((self.put(partition, next_offset, &b)?, b.len() as u64))
    }
    /// The partition's snapshots, newest (highest offset) first.
    fn list(&self, partition: u32) -> Result<Vec<String>, SnapshotError>;
    fn get(&self, partition: u32, name: &str) -> Result<Vec<u8>, SnapshotError>;
    /// Deletes all but the newest `keep`.
    fn retain(&self, partition: u32, keep: usize) -> Result<(), SnapshotError>;
}

/// Snapshots as files: `DIR/p<partition>/<next_offset, 20 digits>.snap`.
pub struct DirStore {
    dir: PathBuf,
}

impl DirStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DirStore { dir: dir.into() }
    }

    fn part_dir(&self, partition: u32) -> PathBuf {
        self.dir.join(format!("p{partition}"))
    }

    /// Writes a snapshot file atomically: a temporary file, fsync, rename,
    /// fsync of the directory.
    fn write_file(
        &self,
        partition: u32,
        next_offset: i64,
        write: impl FnOnce(&mut File) -> std::io::Result<()>,
    ) -> Result<String, SnapshotError> {
        let d = self.part_dir(partition);
        io(&d, fs::create_dir_all(&d))?;
        let name = format!("{next_offset:020}.snap");
        let tmp = d.join(format!(".{name}.tmp"));
        let mut f = io(&tmp, File::create(&tmp))?;
        if let Err(e) = write(&mut f).and_then(|()| f.sync_all()) {
            // A partial file (a full disk, say) would stay forever: `list`
            // and `retain` pass over temporary files.
            drop(f);
            let _ = fs::remove_file(&tmp);
            return io(&tmp, Err(e));
        }
        drop(f);
        let path = d.join(&name);
        io(&path, fs::rename(&tmp, &path))?;
        // The rename itself is durable once the directory is synced.
        io(&d, File::open(&d).and_then(|f| f.sync_all()))?;
        Ok(name)
    }
}

impl SnapshotStore for DirStore {
    fn put(&self, partition: u32, next_offset: i64, bytes: &[u8]) -> Result<String, SnapshotError> {
        self.write_file(partition, next_offset, |f| f.write_all(bytes))
    }

    fn put_from(
        &self,
        partition: u32,
        next_offset: i64,
        snap: &Writer<'_>,
    ) -> Result<(String, u64), SnapshotError> {
        let name = self.write_file(partition, next_offset, |f| {
            let mut w = std::io::BufWriter::with_capacity(1 << 16, f);
            snap.write_to(&mut w)?;
            w.flush()
        })?;
        Ok((name, snap.len() as u64))
    }

    fn list(&self, partition: u32) -> Result<Vec<String>, SnapshotError> {
        let d = self.part_dir(partition);
        let rd = match fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return io(&d, Err(e)),
        };
        let mut names: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.ends_with(".snap") && !n.starts_with('.'))
            .collect();
        names.sort_unstable_by(|a, b| b.cmp(a));
        Ok(names)
    }

    fn get(&self, partition: u32, name: &str) -> Result<Vec<u8>, SnapshotError> {
        let p = self.part_dir(partition).join(name);
        io(&p, fs::read(&p))
    }

    fn retain(&self, partition: u32, keep: usize) -> Result<(), SnapshotError> {
        for name in self.list(partition)?.into_iter().skip(keep.max(1)) {
            let p = self.part_dir(partition).join(name);
            io(&p, fs::remove_file(&p))?;
        }
        Ok(())
    }
}

/// What `vitals snapshot inspect` prints.
#[derive(Debug, Serialize)]
pub struct Inspection {
    pub path: String,
    pub size_bytes: u64,
    pub checksum_ok: bool,
    pub error: Option<String>,
    #[serde(flatten)]
    pub meta: Option<Meta>,
}

/// Reads a snapshot file's metadata and checks it.
pub fn inspect(path: &Path) -> Result<Inspection, SnapshotError> {
    let bytes = io(path, fs::read(path))?;
    Ok(inspect_bytes(path.display().to_string(), &bytes))
}

/// A snapshot's metadata and checks, from its bytes (`path` names it:
/// a file, or a store's snapshot).
pub fn inspect_bytes(path: String, bytes: &[u8]) -> Inspection {
    let (meta, error) = match parse(bytes) {
        Ok((m, _)) => (Some(m), None),
        Err(e) => (None, Some(e.to_string())),
    };
    Inspection {
        path,
        size_bytes: bytes.len() as u64,
        checksum_ok: !matches!(error.as_deref(), Some(e) if e.starts_with("checksum")),
        error,
        meta,
    }
}
