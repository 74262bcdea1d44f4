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
//! | state: frames, each len u32 | a piece of a prost `PartitionState`
//!   (proto/vitals/v1/state.proto): every field but the accounts first,
//!   then the accounts in blocks of 4,096; a frame of length 0 ends it
//! | shadow_model_len u32 (0: none) [ | shadow model id | shadow state (frames) ]
//! | checksum u64 (xxh3-64 of every byte before it)
//! ```
//!
//! The pieces of a state, concatenated, are one `PartitionState`
//! (Protobuf merges concatenated messages); framed, they are written as
//! they are encoded and decoded as they are read, a block per core,
//! without a pass to measure the state first or a buffer the size of the
//! file ([`crate::codec::state::StateWriter`]). The checksum is verified
//! when the last byte has been read, before the state is used.
//!
//! The shadow state is there only when a shadow scorecard runs
//! (`[shadow]`): its fold's state at the same cut. A service with a
//! shadow scorecard uses a snapshot only if it holds the shadow state of
//! that scorecard; one without skips it.
//!
//! Format evolution (version 1 held the state unframed, after its length;
//! version 2 frames it): a file whose `version` is not [`VERSION`], whose
//! state format this build does not read (it reads formats
//! [`state::OLDEST_FORMAT`] to [`state::FORMAT`]: 5 is 4 in fewer bytes),
//! or whose model id differs from this build's, is *rejected with a
//! message* and recovery falls back to an older snapshot, then to a full
//! replay of the log — never to empty state. The log is the source of
//! truth; a snapshot is only a shortcut, so rejecting one costs time, not
//! correctness.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::codec::state;
use crate::core::{Model, Partition, ScorecardChange, Ts};

/// Snapshot file format version (2: the states framed).
pub const VERSION: u32 = 2;
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
    #[error("checksum mismatch: the file is corrupt or truncated")]
    Checksum,
    #[error("snapshot format version {found} is not supported (this build reads {VERSION}); the partition is rebuilt from the log")]
    Version { found: u32 },
    #[error("snapshot was folded with model {found}, the config now gives {expected}; the partition is rebuilt from the log")]
    Model {
        found: String,
        expected: String,
        /// The scorecard changes the snapshot records (a partition rebuilt
        /// after a config change keeps them), when they could be read.
        changes: Option<Vec<ScorecardChange>>,
    },
    #[error("snapshot holds shadow scorecard {found:?}, the config now gives {expected}; the partition is rebuilt from the log")]
    Shadow {
        found: Option<String>,
        expected: String,
    },
    #[error("snapshot state: {0}")]
    State(#[from] state::StateError),
    #[error("snapshot has {0} bytes after its last state")]
    Trailing(u64),
    #[error("reading the snapshot: {0}")]
    Read(std::io::Error),
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

/// A snapshot ready to be streamed (to a file, say) without being held
/// whole in memory: [`encode_with_shadow`]'s bytes, written in pieces.
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
        Writer {
            head: b,
            state: state::StateWriter::new(part),
            shadow: shadow.map(|sh| (&*sh.model.id, state::StateWriter::new(sh))),
        }
    }

    /// The whole snapshot in memory.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut b = Vec::new();
        // Writing to a `Vec` cannot fail.
        let _ = self.write_to(&mut b);
        b
    }

    /// Streams the snapshot to `w`, checksumming as it goes; the bytes
    /// written.
    pub fn write_to(&self, w: &mut impl Write) -> std::io::Result<u64> {
        let mut w = Summed {
            inner: w,
            sum: xxhash_rust::xxh3::Xxh3Default::new(),
            written: 0,
        };
        w.write_all(&self.head)?;
        self.state.write_framed_to(&mut w)?;
        match &self.shadow {
            Some((id, st)) => {
                w.write_all(&(id.len() as u32).to_le_bytes())?;
                w.write_all(id.as_bytes())?;
                st.write_framed_to(&mut w)?;
            }
            None => w.write_all(&0u32.to_le_bytes())?,
        }
        let sum = w.sum.digest();
        w.inner.write_all(&sum.to_le_bytes())?;
        Ok(w.written + 8)
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

/// A snapshot being read: its body (all but the checksum) passes through
/// the checksum as it is read.
struct Src<R: Read> {
    r: R,
    sum: xxhash_rust::xxh3::Xxh3Default,
    /// Bytes of the body not read yet.
    left: u64,
}

impl<R: Read> Src<R> {
    fn exact<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], SnapshotError> {
        let mut b = [0u8; N];
        if (N as u64) > self.left {
            return Err(SnapshotError::Truncated(what));
        }
        self.r.read_exact(&mut b).map_err(|e| read_error(e, what))?;
        self.sum.update(&b);
        self.left -= N as u64;
        Ok(b)
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, SnapshotError> {
        self.exact(what).map(u32::from_le_bytes)
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, SnapshotError> {
        self.exact(what).map(u64::from_le_bytes)
    }
    fn i64(&mut self, what: &'static str) -> Result<i64, SnapshotError> {
        self.exact(what).map(i64::from_le_bytes)
    }
    /// `n` bytes into `buf` (cleared first).
    fn bytes(
        &mut self,
        n: u64,
        buf: &mut Vec<u8>,
        what: &'static str,
    ) -> Result<(), SnapshotError> {
        buf.clear();
        if n > self.left {
            return Err(SnapshotError::Truncated(what));
        }
        // `take` grows the buffer with what arrives, never to a length
        // the file claims but does not hold.
        (&mut self.r)
            .take(n)
            .read_to_end(buf)
            .map_err(|e| read_error(e, what))?;
        if buf.len() as u64 != n {
            return Err(SnapshotError::Truncated(what));
        }
        self.sum.update(buf);
        self.left -= n;
        Ok(())
    }
    fn str(&mut self, what: &'static str) -> Result<String, SnapshotError> {
        let n = self.u32(what)?;
        let mut b = Vec::new();
        self.bytes(n.into(), &mut b, what)?;
        Ok(String::from_utf8_lossy(&b).into_owned())
    }
    /// The next frame of a state into `buf`; `false` at its end.
    fn frame(&mut self, buf: &mut Vec<u8>) -> Result<bool, SnapshotError> {
        let n = self.u32("state frame")?;
        if n == 0 {
            return Ok(false);
        }
        self.bytes(n.into(), buf, "state frame")?;
        Ok(true)
    }
    /// Passes over a state's frames.
    fn skip_state(&mut self) -> Result<(), SnapshotError> {
        let mut buf = Vec::new();
        while self.frame(&mut buf)? {}
        Ok(())
    }
    /// Reads the rest of the body and the checksum: whether it matches.
    fn checksum_matches(&mut self) -> Result<bool, SnapshotError> {
        let mut buf = vec![0u8; 1 << 16];
        while self.left > 0 {
            let n = buf
                .len()
                .min(usize::try_from(self.left).unwrap_or(usize::MAX));
            self.r
                .read_exact(&mut buf[..n])
                .map_err(|e| read_error(e, "body"))?;
            self.sum.update(&buf[..n]);
            self.left -= n as u64;
        }
        let mut s = [0u8; 8];
        self.r
            .read_exact(&mut s)
            .map_err(|e| read_error(e, "checksum"))?;
        Ok(self.sum.digest() == u64::from_le_bytes(s))
    }
}

fn read_error(e: std::io::Error, what: &'static str) -> SnapshotError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        SnapshotError::Truncated(what)
    } else {
        SnapshotError::Read(e)
    }
}

/// Reads a snapshot of `size` bytes from `r`: the head, then `states`
/// reads the states (and the shadow model id between them). The checksum
/// is verified whatever happens: a file that does not match it is
/// reported corrupt ([`SnapshotError::Checksum`]), whatever else is wrong
/// with it.
fn read<R: Read, T>(
    r: R,
    size: u64,
    states: impl FnOnce(&mut Src<R>, &mut Meta) -> Result<T, SnapshotError>,
) -> Result<(Meta, T), SnapshotError> {
    let mut src = Src {
        r,
        sum: xxhash_rust::xxh3::Xxh3Default::new(),
        left: size.saturating_sub(8),
    };
    if size < 16 || src.exact::<8>("magic").ok().as_ref() != Some(MAGIC) {
        return Err(SnapshotError::Magic);
    }
    let got = head(&mut src).and_then(|mut meta| {
        let t = states(&mut src, &mut meta)?;
        Ok((meta, t))
    });
    let unread = src.left;
    match (got, src.checksum_matches()) {
        (_, Ok(false)) | (Err(SnapshotError::Truncated(_)), Err(_)) => Err(SnapshotError::Checksum),
        (_, Err(e)) | (Err(e), Ok(true)) => Err(e),
        (Ok(_), Ok(true)) if unread > 0 => Err(SnapshotError::Trailing(unread)),
        (Ok(got), Ok(true)) => Ok(got),
    }
}

/// The fields before the state.
fn head<R: Read>(src: &mut Src<R>) -> Result<Meta, SnapshotError> {
    let version = src.u32("version")?;
    if version != VERSION {
        return Err(SnapshotError::Version { found: version });
    }
    let partition = src.u32("partition")?;
    let next_offset = src.i64("next_offset")?;
    let created_ms = src.i64("created_ms")?;
    let accounts = src.u64("accounts")?;
    let wm = src.i64("watermark")?;
    Ok(Meta {
        version,
        partition,
        next_offset,
        created_ms,
        accounts,
        watermark: (wm != Ts::MIN).then_some(wm),
        cursor: src.str("cursor")?,
        model: src.str("model")?,
        shadow_model: None,
    })
}

/// Reads the shadow model id that follows the live state into `meta`.
fn shadow_id<R: Read>(src: &mut Src<R>, meta: &mut Meta) -> Result<(), SnapshotError> {
    let id = src.str("shadow_model")?;
    meta.shadow_model = (!id.is_empty()).then_some(id);
    Ok(())
}

/// Checks a snapshot (magic, version, framing, checksum) and returns its
/// metadata, decoding nothing.
pub fn parse(bytes: &[u8]) -> Result<Meta, SnapshotError> {
    parse_from(bytes, bytes.len() as u64)
}

/// [`parse`] of a snapshot of `size` bytes read from `r`.
pub fn parse_from(r: impl Read, size: u64) -> Result<Meta, SnapshotError> {
    parse_with_format(r, size).map(|(m, _)| m)
}

/// [`parse_from`], and the state format of the live state (read from the
/// state's first frame; `None` if that frame does not say).
fn parse_with_format(r: impl Read, size: u64) -> Result<(Meta, Option<u32>), SnapshotError> {
    read(r, size, |src, meta| {
        let mut header = Vec::new();
        let format = if src.frame(&mut header)? {
            src.skip_state()?;
            state::format_of(&header)
        } else {
            None
        };
        shadow_id(src, meta)?;
        if meta.shadow_model.is_some() {
            src.skip_state()?;
        }
        Ok(format)
    })
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
    read_from(bytes, bytes.len() as u64, model, shadow)
}

/// [`decode_with_shadow`] of a snapshot of `size` bytes read from `r`,
/// decoded as it is read (a store's [`SnapshotStore::open`]).
pub fn read_from(
    r: impl Read,
    size: u64,
    model: Arc<Model>,
    shadow: Option<Arc<Model>>,
) -> Result<(Meta, Partition, Option<Partition>), SnapshotError> {
    read(r, size, |src, meta| {
        if meta.model != *model.id {
            // Only the state's first frame is read for its scorecard
            // changes; they count only if the checksum then matches.
            let mut header = Vec::new();
            let changes = match src.frame(&mut header) {
                Ok(true) => state::scorecard_changes(&header).ok(),
                _ => None,
            };
            return Err(SnapshotError::Model {
                found: meta.model.clone(),
                expected: model.id.to_string(),
                changes,
            });
        }
        let part = state::decode_framed(model, meta.accounts, |b| src.frame(b))?;
        shadow_id(src, meta)?;
        let shadow = match shadow {
            Some(m) if meta.shadow_model.as_deref() == Some(&*m.id) => {
                Some(state::decode_framed(m, meta.accounts, |b| src.frame(b))?)
            }
            Some(m) => {
                return Err(SnapshotError::Shadow {
                    found: meta.shadow_model.clone(),
                    expected: m.id.to_string(),
                })
            }
            None => {
                if meta.shadow_model.is_some() {
                    src.skip_state()?;
                }
                None
            }
        };
        Ok((part, shadow))
    })
    .map(|(m, (p, sh))| (m, p, sh))
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
    /// A snapshot to be read as a stream ([`read_from`]), and its size. A
    /// store that can streams it (the directory store does); the default
    /// reads it whole with [`SnapshotStore::get`].
    fn open(&self, partition: u32, name: &str) -> Result<(Box<dyn Read + '_>, u64), SnapshotError> {
        let b = self.get(partition, name)?;
        let n = b.len() as u64;
        Ok((Box::new(std::io::Cursor::new(b)), n))
    }
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

    /// The file of the snapshot `name` of `partition`.
    pub fn path(&self, partition: u32, name: &str) -> PathBuf {
        self.part_dir(partition).join(name)
    }

    /// Writes a snapshot file atomically: a temporary file, fsync, rename,
    /// fsync of the directory. Its name, and what `write` returned.
    fn write_file<T>(
        &self,
        partition: u32,
        next_offset: i64,
        write: impl FnOnce(&mut File) -> std::io::Result<T>,
    ) -> Result<(String, T), SnapshotError> {
        let d = self.part_dir(partition);
        io(&d, fs::create_dir_all(&d))?;
        let name = format!("{next_offset:020}.snap");
        let tmp = d.join(format!(".{name}.tmp"));
        let mut f = io(&tmp, File::create(&tmp))?;
        let t = match write(&mut f).and_then(|t| f.sync_all().map(|()| t)) {
            Ok(t) => t,
            Err(e) => {
                // A partial file (a full disk, say) would stay forever:
                // `list` and `retain` pass over temporary files.
                drop(f);
                let _ = fs::remove_file(&tmp);
                return io(&tmp, Err(e));
            }
        };
        drop(f);
        let path = d.join(&name);
        io(&path, fs::rename(&tmp, &path))?;
        // The rename itself is durable once the directory is synced.
        io(&d, File::open(&d).and_then(|f| f.sync_all()))?;
        Ok((name, t))
    }
}

impl SnapshotStore for DirStore {
    fn put(&self, partition: u32, next_offset: i64, bytes: &[u8]) -> Result<String, SnapshotError> {
        self.write_file(partition, next_offset, |f| f.write_all(bytes))
            .map(|(name, ())| name)
    }

    fn put_from(
        &self,
        partition: u32,
        next_offset: i64,
        snap: &Writer<'_>,
    ) -> Result<(String, u64), SnapshotError> {
        self.write_file(partition, next_offset, |f| {
            let mut w = std::io::BufWriter::with_capacity(1 << 16, Flushing::new(f));
            let n = snap.write_to(&mut w)?;
            w.flush()?;
            Ok(n)
        })
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
        let p = self.path(partition, name);
        io(&p, fs::read(&p))
    }

    fn open(&self, partition: u32, name: &str) -> Result<(Box<dyn Read + '_>, u64), SnapshotError> {
        let p = self.path(partition, name);
        let f = io(&p, File::open(&p))?;
        let size = io(&p, f.metadata())?.len();
        Ok((
            Box::new(std::io::BufReader::with_capacity(1 << 20, f)),
            size,
        ))
    }

    fn retain(&self, partition: u32, keep: usize) -> Result<(), SnapshotError> {
        for name in self.list(partition)?.into_iter().skip(keep.max(1)) {
            let p = self.part_dir(partition).join(name);
            io(&p, fs::remove_file(&p))?;
        }
        Ok(())
    }
}

/// A file being written whose pages are handed to the disk as they fill,
/// so that the fsync at the end waits for the last few megabytes instead
/// of the whole file: writing back 470 MB takes 0.2–1.3 s on this
/// project's VMs, and overlapped with encoding it mostly disappears.
struct Flushing<'f> {
    f: &'f mut File,
    /// Bytes written and not yet handed over, from offset `at`.
    pending: u64,
    at: u64,
}

impl<'f> Flushing<'f> {
    /// Bytes gathered before they are handed to the disk.
    const EVERY: u64 = 8 << 20;

    fn new(f: &'f mut File) -> Self {
        Flushing {
            f,
            pending: 0,
            at: 0,
        }
    }
}

impl Write for Flushing<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.f.write(buf)?;
        self.pending += n as u64;
        if self.pending >= Self::EVERY {
            start_writeback(self.f, self.at, self.pending);
            self.at += self.pending;
            self.pending = 0;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.f.flush()
    }
}

/// Starts writing `len` bytes of `f` from `offset` back to the disk,
/// without waiting for them. Errors are left to the fsync that follows.
#[cfg(target_os = "linux")]
fn start_writeback(f: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: a valid open descriptor for the call's duration; the call
    // reads no memory of ours.
    unsafe {
        libc::sync_file_range(f.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_: &File, _: u64, _: u64) {}

/// What `vitals snapshot inspect` prints.
#[derive(Debug, Serialize)]
pub struct Inspection {
    pub path: String,
    pub size_bytes: u64,
    /// `true` when the checksum matched, `false` when it did not, `null`
    /// when the file could not be read that far (see `error`).
    pub checksum_ok: Option<bool>,
    pub error: Option<String>,
    #[serde(flatten)]
    pub meta: Option<Meta>,
    /// The live state's format ([`state::FORMAT`] when this build wrote
    /// it; [`state::OLDEST_FORMAT`] and up are read).
    pub state_format: Option<u32>,
}

/// Reads a snapshot file's metadata and checks it.
pub fn inspect(path: &Path) -> Result<Inspection, SnapshotError> {
    let f = io(path, File::open(path))?;
    let meta = io(path, f.metadata())?;
    if meta.is_dir() {
        return Err(SnapshotError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::IsADirectory,
                "a directory, not a snapshot file (they are in <snapshot.dir>/p<partition>/)",
            ),
        });
    }
    let size = meta.len();
    let r = parse_with_format(std::io::BufReader::with_capacity(1 << 20, f), size);
    Ok(inspection_with(path.display().to_string(), size, r))
}

/// A snapshot's metadata and checks, from its bytes (`path` names it:
/// a file, or a store's snapshot).
pub fn inspect_bytes(path: String, bytes: &[u8]) -> Inspection {
    inspection_with(
        path,
        bytes.len() as u64,
        parse_with_format(bytes, bytes.len() as u64),
    )
}

/// What `vitals snapshot inspect` prints of a snapshot that could not be
/// read or parsed.
pub fn inspection(path: String, size_bytes: u64, r: Result<Meta, SnapshotError>) -> Inspection {
    inspection_with(path, size_bytes, r.map(|m| (m, None)))
}

fn inspection_with(
    path: String,
    size_bytes: u64,
    r: Result<(Meta, Option<u32>), SnapshotError>,
) -> Inspection {
    let (meta, state_format, error) = match r {
        Ok((m, f)) => (Some(m), f, None),
        Err(e) => (None, None, Some(e)),
    };
    Inspection {
        path,
        size_bytes,
        checksum_ok: match &error {
            None => Some(true),
            Some(SnapshotError::Checksum) => Some(false),
            Some(_) => None,
        },
        error: error.map(|e| e.to_string()),
        meta,
        state_format,
    }
}
