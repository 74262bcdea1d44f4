//! `vitals bench …`: measurements that are not criterion micro-benchmarks.
//!
//! - `memory`: resident memory per account of the fold's state, measured as
//!   RSS growth while folding a simulation (Linux `/proc/self/statm`).

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::core::{Model, ModelConfig, Partition};
use crate::simulate::{SimOptions, Simulation};

/// Resident set size of this process in bytes (Linux), if readable.
pub fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    // The page size is 4 KiB on the machines this runs on.
    Some(pages * 4096)
}

#[derive(Debug, Serialize)]
pub struct MemoryReport {
    pub accounts: u64,
    pub days: u32,
    pub events: u64,
    pub rss_before_bytes: u64,
    pub rss_after_bytes: u64,
    pub bytes_per_account: f64,
    pub dedup_ids: u64,
    pub timer_queue_entries: u64,
    /// Where the bytes are, estimated from sizes and capacities (before
    /// allocator overhead): the account struct itself, then per-account
    /// heap parts, as means over accounts.
    pub account_struct_bytes: u64,
    pub mean_users: f64,
    pub mean_heap_users_bytes: f64,
    pub mean_heap_features_bytes: f64,
    pub mean_heap_other_bytes: f64,
    pub elapsed_secs: f64,
}

/// Folds `accounts` simulated accounts over `days`, day by day (accounts
/// in order within a day, so allowed lateness is set to a day), and
/// reports RSS growth per account. The simulator's own memory and one
/// day's event buffer are allocated before the first measurement.
pub fn memory(accounts: u32, days: u32, seed: u64) -> MemoryReport {
    let start = Instant::now();
    let o = SimOptions {
        accounts,
        days,
        seed,
        ..Default::default()
    };
    let mut sim = Simulation::new(&o);
    let cfg = ModelConfig {
        allowed_lateness_secs: 86_400,
        ..ModelConfig::default()
    };
    let mut part = Partition::new(Arc::new(Model::new(cfg)));
    let mut buf = Vec::with_capacity(256);
    let mut out = Vec::new();
    // Warm the buffers so they are not counted as fold state.
    sim.account_day(0, 0, &mut buf);
    buf.clear();
    let before = rss_bytes().unwrap_or(0);
    let mut events = 0u64;
    for day in 0..days {
        for i in 0..sim.accounts() {
            sim.account_day(i, day, &mut buf);
            for e in buf.drain(..) {
                part.apply(&e, &mut out);
                events += 1;
            }
            out.clear();
        }
    }
    let after = rss_bytes().unwrap_or(0);
    let n = part.accounts.len().max(1) as f64;
    let thin = |cap: usize, elem: usize| if cap == 0 { 0 } else { 16 + cap * elem };
    let mut users = 0usize;
    let mut heap_users = 0usize;
    let mut heap_features = 0usize;
    let mut heap_other = 0usize;
    for a in &part.accounts {
        users += a.users.len();
        heap_users += thin(a.users.capacity(), 8);
        heap_features += thin(a.features.capacity(), 12);
        heap_other += a.id.heap_bytes()
            + thin(a.mrr_history.capacity(), 16)
            + thin(
                a.unpaid.capacity(),
                std::mem::size_of::<crate::core::account::Unpaid>(),
            )
            + a.support.as_ref().map_or(0, |s| {
                std::mem::size_of::<crate::core::account::Support>()
                    + thin(
                        s.open_tickets.capacity(),
                        std::mem::size_of::<crate::core::account::Ticket>(),
                    )
            })
            + a.surveys
                .as_ref()
                .map_or(0, |_| std::mem::size_of::<crate::core::account::Surveys>())
            + a.extras
                .as_ref()
                .map_or(0, |_| std::mem::size_of::<crate::core::account::Extras>());
    }
    MemoryReport {
        account_struct_bytes: std::mem::size_of::<crate::core::account::Account>() as u64,
        mean_users: users as f64 / n,
        mean_heap_users_bytes: heap_users as f64 / n,
        mean_heap_features_bytes: heap_features as f64 / n,
        mean_heap_other_bytes: heap_other as f64 / n,
        accounts: part.accounts.len() as u64,
        days,
        events,
        rss_before_bytes: before,
        rss_after_bytes: after,
        bytes_per_account: after.saturating_sub(before) as f64 / part.accounts.len().max(1) as f64,
        dedup_ids: part.dedup.order.len() as u64,
        timer_queue_entries: part.timer_queue_len() as u64,
        elapsed_secs: start.elapsed().as_secs_f64(),
    }
}

/// `vitals bench snapshot`: one partition's snapshot at `accounts`.
#[derive(Debug, Serialize)]
pub struct SnapshotReport {
    pub accounts: u64,
    pub days: u32,
    pub events: u64,
    /// Folding the whole log from nothing (what recovery costs without a
    /// snapshot).
    pub full_replay_secs: f64,
    /// Copying the state on the partition's thread (the service then
    /// encodes and writes the copy on another thread): the partition
    /// stalls this long.
    pub stall_secs: f64,
    /// The longest single event the partition folded while the first
    /// snapshot was being encoded and written (copy-on-write of account
    /// chunks makes some events slower).
    pub longest_event_secs: f64,
    /// The longest single event of the day before the snapshot (no copy
    /// alive): what the fold's own timers and re-scores cost at most.
    pub longest_event_before_secs: f64,
    /// Tail events folded before the writer finished.
    pub events_during_write: u64,
    /// Events per second the partition folded while the snapshot was
    /// written (compare with `tail_events / tail_secs`, the same tail
    /// folded with no write going on): a snapshot that slows the fold
    /// stalls the partition as surely as a long copy.
    pub fold_rate_during_write: f64,
    /// The snapshot encoded and streamed into the file (temp file, fsync,
    /// rename), off the partition's thread.
    pub snapshot_secs: f64,
    /// The second snapshot, taken as soon as the first was written (the
    /// tail permitting): what every snapshot of a running service after
    /// its first costs. The first one's copy-on-write copies land in
    /// memory the process never touched, which the kernel backs page by
    /// page; the second's may reuse what the first one's copies gave back
    /// (on 2026-12-08 that made little difference: BENCHMARKS.md).
    pub second: Option<WriteReport>,
    pub size_bytes: u64,
    /// Reading, checking and decoding the newest snapshot (streamed: read
    /// as it is decoded).
    pub load_secs: f64,
    /// The same load in a fresh process (`vitals bench snapshot` runs
    /// itself again for it), as after a crash: the state's memory is
    /// touched for the first time. Filled in by the command, not here.
    pub load_fresh_process_secs: Option<f64>,
    /// Folding the tail after the snapshot (`tail_days` of events).
    pub tail_events: u64,
    /// The tail's order: `time` (event time, as the service's sequenced
    /// log) or `account` (account by account, as the simulator makes it).
    pub tail_order: &'static str,
    pub tail_secs: f64,
    pub restore_secs: f64,
    /// `load_fresh_process_secs + tail_secs`.
    pub restore_fresh_process_secs: Option<f64>,
    /// The snapshot file written.
    pub file: std::path::PathBuf,
}

/// The model `vitals bench snapshot` folds with (the default scorecard,
/// a day of allowed lateness: the simulation is generated day by day).
pub fn snapshot_model() -> Arc<Model> {
    Arc::new(Model::new(ModelConfig {
        allowed_lateness_secs: 86_400,
        ..ModelConfig::default()
    }))
}

/// Seconds to read, check and decode the snapshot file at `path` written
/// by [`snapshot`] (streamed, as [`crate::snapshot::DirStore`] reads it).
pub fn load(path: &std::path::Path) -> Result<f64, crate::snapshot::SnapshotError> {
    let model = snapshot_model();
    let t = Instant::now();
    let (_, part) = read_snapshot(path, model)?;
    let secs = t.elapsed().as_secs_f64();
    drop(part);
    Ok(secs)
}

/// Reads the snapshot file at `path` (streamed, as
/// [`crate::snapshot::DirStore`] reads it).
fn read_snapshot(
    path: &std::path::Path,
    model: Arc<Model>,
) -> Result<(crate::snapshot::Meta, Partition), crate::snapshot::SnapshotError> {
    let io = |source| crate::snapshot::SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    };
    let f = std::fs::File::open(path).map_err(io)?;
    let size = f.metadata().map_err(io)?.len();
    let r = std::io::BufReader::with_capacity(1 << 20, f);
    let (meta, part, _) = crate::snapshot::read_from(r, size, model, None)?;
    Ok((meta, part))
}

/// Loads the snapshot file at `path`, then times writing that state
/// again into `dir` as the service does (encode, write, fsync, rename) —
/// the write alone, with nothing folding beside it. Seconds per write.
/// The file written is the one read, byte for byte, for a snapshot
/// without a shadow state (a shadow state is not written again).
pub fn write(
    path: &std::path::Path,
    dir: &std::path::Path,
    times: u32,
) -> Result<Vec<f64>, crate::snapshot::SnapshotError> {
    use crate::snapshot::{DirStore, SnapshotStore};
    let (meta, part) = read_snapshot(path, snapshot_model())?;
    let store = DirStore::new(dir);
    let name = format!("{:020}.snap", meta.next_offset);
    let target = store.path(meta.partition, &name);
    if std::fs::canonicalize(&target).ok() == std::fs::canonicalize(path).ok() && target.exists() {
        return Err(crate::snapshot::SnapshotError::Io {
            path: target,
            source: std::io::Error::other(
                "would overwrite the snapshot being read; give another --dir",
            ),
        });
    }
    let mut secs = Vec::new();
    for _ in 0..times {
        let t = Instant::now();
        let snap = crate::snapshot::Writer::new(
            &part,
            None,
            meta.partition,
            meta.next_offset,
            &meta.cursor,
            meta.created_ms,
        );
        store.put_from(meta.partition, meta.next_offset, &snap)?;
        secs.push(t.elapsed().as_secs_f64());
    }
    Ok(secs)
}

/// One snapshot written while the partition folds on.
#[derive(Debug, Serialize)]
pub struct WriteReport {
    /// Copying the state on the partition's thread.
    pub stall_secs: f64,
    /// Encoding and streaming it into the file, off the partition's thread.
    pub snapshot_secs: f64,
    /// Events folded before the writer finished, the longest of them, and
    /// their rate.
    pub events_during_write: u64,
    pub longest_event_secs: f64,
    pub fold_rate_during_write: f64,
}

/// A snapshot's file name and size, or why it could not be written.
type Stored = Result<(String, u64), crate::snapshot::SnapshotError>;

/// A snapshot being written by [`snapshot`]'s writer thread.
struct Write {
    /// Seconds taken, and the file written.
    writer: std::thread::JoinHandle<(f64, Stored)>,
    stall_secs: f64,
    folding: Instant,
    /// Set when the fold saw the writer finished.
    folding_secs: Option<f64>,
    events: u64,
    longest_event_secs: f64,
}

/// A finished [`Write`]: its numbers and the file written.
struct Written {
    report: WriteReport,
    stored: (String, u64),
}

impl Write {
    /// Writes `copy` into `dir` on a new thread, as the service does:
    /// streamed to the file (encoding and writing overlap, so they are
    /// timed together).
    fn start(copy: Partition, dir: &std::path::Path, next: u64, stall_secs: f64) -> Self {
        use crate::snapshot::SnapshotStore;
        let store = crate::snapshot::DirStore::new(dir);
        let writer = std::thread::spawn(move || {
            let t = Instant::now();
            let snap = crate::snapshot::Writer::new(&copy, None, 0, next as i64, "", 0);
            let stored = store.put_from(0, next as i64, &snap);
            let secs = t.elapsed().as_secs_f64();
            drop(snap);
            drop(copy);
            (secs, stored)
        });
        Write {
            writer,
            stall_secs,
            folding: Instant::now(),
            folding_secs: None,
            events: 0,
            longest_event_secs: 0.0,
        }
    }

    fn finish(self, dir: &std::path::Path) -> Result<Written, crate::snapshot::SnapshotError> {
        let folding_secs = self
            .folding_secs
            .unwrap_or_else(|| self.folding.elapsed().as_secs_f64());
        let (snapshot_secs, stored) =
            self.writer
                .join()
                .map_err(|_| crate::snapshot::SnapshotError::Io {
                    path: dir.to_path_buf(),
                    source: std::io::Error::other("snapshot writer panicked"),
                })?;
        Ok(Written {
            report: WriteReport {
                stall_secs: self.stall_secs,
                snapshot_secs,
                events_during_write: self.events,
                longest_event_secs: self.longest_event_secs,
                fold_rate_during_write: self.events as f64 / folding_secs.max(1e-9),
            },
            stored: stored?,
        })
    }
}

/// `vitals bench snapshot` settings.
#[derive(Debug, Clone)]
pub struct SnapshotOptions {
    pub accounts: u32,
    pub days: u32,
    /// Days of events after the snapshot (the tail to replay).
    pub tail_days: u32,
    /// Cut the snapshot this many events before the end of the log instead
    /// (at most the tail days' events).
    pub tail_events: Option<u64>,
    /// Fold the tail account by account, as the simulator makes it,
    /// instead of in event-time order.
    pub account_major_tail: bool,
    pub seed: u64,
}

/// Folds `accounts` accounts over `days` days, snapshots the state before
/// the last `tail_days`, and measures stall, write, load and tail replay
/// against a full replay; the snapshots go to `dir`.
pub fn snapshot(
    opts: &SnapshotOptions,
    dir: &std::path::Path,
) -> Result<SnapshotReport, crate::snapshot::SnapshotError> {
    use crate::snapshot::{DirStore, SnapshotStore};
    let SnapshotOptions {
        accounts,
        days,
        tail_days,
        tail_events,
        account_major_tail,
        seed,
    } = *opts;
    let o = SimOptions {
        accounts,
        days,
        seed,
        ..Default::default()
    };
    let model = snapshot_model();
    // The log, day by day, folded as it is generated (it does not fit in
    // memory at 1M accounts); only the tail is kept for the replay after
    // the snapshot. `head_secs` counts folding time only.
    let mut sim = Simulation::new(&o);
    let mut part = Partition::new(model.clone());
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut tail = Vec::new();
    let mut head_events = 0u64;
    let mut head_secs = 0.0;
    // The longest event of the day before the snapshot: the baseline.
    let mut longest_event_before_secs = 0f64;
    for day in 0..days {
        for i in 0..sim.accounts() {
            if day + tail_days >= days {
                sim.account_day(i, day, &mut tail);
                continue;
            }
            sim.account_day(i, day, &mut buf);
            for e in buf.drain(..) {
                let t = Instant::now();
                part.apply(&e, &mut out);
                out.clear();
                head_events += 1;
                let took = t.elapsed().as_secs_f64();
                head_secs += took;
                if day + tail_days + 1 >= days {
                    longest_event_before_secs = longest_event_before_secs.max(took);
                }
            }
        }
    }
    // The tail in event-time order, as the sequencer hands a partition's
    // records to the fold (stable: same-time events keep the simulator's
    // order). Account by account, as the simulator makes it (and as the
    // head is folded), a day's first event lets all of the previous day's
    // timers fire at once, and consecutive events find their account in
    // the cache.
    if !account_major_tail {
        tail.sort_by_key(|e| e.time);
        // Each event's strings copied again in the new order: where the
        // simulator left them, every event's id and account id were a
        // cache miss of their own (14% of the tail's time), which a
        // record just read from Kafka never is.
        tail = tail.to_vec();
    }
    // With `tail_events`, the snapshot is cut that many events before the
    // end of the log: the rest of the tail days is folded before it.
    if let Some(n) = tail_events {
        let keep = tail.len().min(n as usize);
        let t = Instant::now();
        for e in tail.drain(..tail.len() - keep) {
            part.apply(&e, &mut out);
            out.clear();
            head_events += 1;
        }
        head_secs += t.elapsed().as_secs_f64();
    }
    // The cut: what the service does on the partition's thread.
    let store = DirStore::new(dir);
    let t = Instant::now();
    let copy = part.snapshot_copy();
    let stall_secs = t.elapsed().as_secs_f64();
    // Encoding and writing happen on another thread, as in the service,
    // while the partition folds on (the tail): each event's time is the
    // partition's stall, copy-on-write of the accounts included. When the
    // first snapshot is written, a second is taken at once, as a running
    // service takes them: one after the first, whose copies were made in
    // memory the process had never touched.
    let mut writes = vec![Write::start(copy, dir, head_events, stall_secs)];
    for (i, e) in tail.iter().enumerate() {
        let t = Instant::now();
        part.apply(e, &mut out);
        out.clear();
        let took = t.elapsed().as_secs_f64();
        if let Some(w) = writes.last_mut().filter(|w| w.folding_secs.is_none()) {
            w.longest_event_secs = w.longest_event_secs.max(took);
            if w.writer.is_finished() {
                w.folding_secs = Some(w.folding.elapsed().as_secs_f64());
                if writes.len() == 1 {
                    let t = Instant::now();
                    let copy = part.snapshot_copy();
                    let stall = t.elapsed().as_secs_f64();
                    let next = head_events + i as u64 + 1;
                    writes.push(Write::start(copy, dir, next, stall));
                }
            } else {
                w.events += 1;
            }
        }
    }
    let mut reports = Vec::new();
    for w in writes {
        reports.push(w.finish(dir)?);
    }
    let first = reports.remove(0);
    let (name, size) = first.stored;
    drop(part);
    let t = Instant::now();
    let (r, file_size) = store.open(0, &name)?;
    let (_, mut restored, _) = crate::snapshot::read_from(r, file_size, model.clone(), None)?;
    let load_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for e in &tail {
        restored.apply(e, &mut out);
        out.clear();
    }
    let tail_secs = t.elapsed().as_secs_f64();
    Ok(SnapshotReport {
        accounts: restored.accounts.len() as u64,
        days,
        events: head_events + tail.len() as u64,
        full_replay_secs: head_secs + tail_secs,
        stall_secs,
        longest_event_secs: first.report.longest_event_secs,
        longest_event_before_secs,
        events_during_write: first.report.events_during_write,
        fold_rate_during_write: first.report.fold_rate_during_write,
        snapshot_secs: first.report.snapshot_secs,
        second: reports.pop().map(|r| r.report),
        size_bytes: size,
        load_secs,
        tail_events: tail.len() as u64,
        tail_order: if account_major_tail {
            "account"
        } else {
            "time"
        },
        tail_secs,
        restore_secs: load_secs + tail_secs,
        restore_fresh_process_secs: None,
        load_fresh_process_secs: None,
        file: store.path(0, &name),
    })
}

/// `vitals bench limits`: the state bounds under hostile input, at the
/// sizes of issue 7 — one account flooded with distinct ids, and many
/// accounts with one event each.
#[derive(Debug, Serialize)]
pub struct LimitsReport {
    /// Distinct user ids, feature names and ticket ids sent to one account.
    pub flood_ids: u64,
    pub flood_events: u64,
    /// What the account keeps (the configured caps).
    pub flood_users_kept: u64,
    pub flood_features_kept: u64,
    pub flood_open_tickets_kept: u64,
    pub flood_users_evicted: u64,
    pub flood_features_evicted: u64,
    pub flood_tickets_evicted: u64,
    /// The account's heap parts after the flood (users, features, tickets;
    /// from capacities, before allocator overhead).
    pub flood_account_heap_bytes: u64,
    /// RSS growth over the whole flood (the duplicate memory, capped at
    /// `limits.dedup_max_ids`, is most of it).
    pub flood_rss_growth_bytes: u64,
    pub flood_dedup_ids: u64,
    pub flood_secs: f64,
    /// Distinct accounts, one `usage.login` each.
    pub accounts: u64,
    pub accounts_rss_growth_bytes: u64,
    pub bytes_per_account: f64,
    pub accounts_dedup_ids: u64,
    pub accounts_secs: f64,
    /// The most one account's state can hold under the default limits
    /// (see [`worst_case_account_bytes`]).
    pub worst_case_account_bytes: u64,
}

/// An upper bound of one account's state in bytes under `limits`, before
/// allocator overhead: the account struct; its id (≤ `MAX_ID_CHARS`
/// characters, 4 bytes each in UTF-8); `max_users` user entries (8 B),
/// `max_features` feature entries (12 B), `max_open_tickets` tickets and
/// `max_unpaid_invoices` invoices; MRR history (one entry per day for 92
/// days); the support and survey parts; the active override and
/// `AUDIT_KEEP` ended ones, each with a reason (≤ `MAX_TEXT_CHARS`), an
/// author (≤ `MAX_LABEL_CHARS`) and an event id (≤ `MAX_ID_CHARS`); and
/// the live model monitor's open cohort entries (6 B each). Vector
/// headers of 16 B each are included. Partition-wide structures (the
/// account index, timer queue, duplicate memory, labels) are not: they are
/// bounded per partition by `max_labels` and `dedup_max_ids`, and per
/// account by a few words.
pub fn worst_case_account_bytes(cfg: &ModelConfig) -> u64 {
    use crate::codec::raw::{MAX_ID_CHARS, MAX_LABEL_CHARS, MAX_TEXT_CHARS};
    use crate::core::account::{
        Account, Extras, OverrideAudit, Support, Surveys, Ticket, Unpaid, AUDIT_KEEP,
    };
    use std::mem::size_of;
    let l = &cfg.limits;
    let m = &cfg.monitor;
    let text = |chars: usize| 4 * chars;
    let override_strings = text(MAX_TEXT_CHARS) + text(MAX_LABEL_CHARS) + text(MAX_ID_CHARS);
    let cohorts = (m.horizon_days / m.every_days.max(1) + 1) as usize;
    let b = size_of::<Account>()
        + text(MAX_ID_CHARS)
        + 16
        + l.max_users as usize * 8
        + 16
        + l.max_features as usize * 12
        + size_of::<Support>()
        + 16
        + l.max_open_tickets as usize * size_of::<Ticket>()
        + 16
        + l.max_unpaid_invoices as usize * size_of::<Unpaid>()
        + 16
        + 92 * 16
        + size_of::<Surveys>()
        + size_of::<Extras>()
        + AUDIT_KEEP * size_of::<OverrideAudit>()
        + (AUDIT_KEEP + 1) * override_strings
        + cohorts * 6;
    b as u64
}

/// Runs both floods with the default limits.
pub fn limits(flood_ids: u64, accounts: u64) -> LimitsReport {
    let start = Instant::now();
    let model = Arc::new(Model::new(ModelConfig::default()));
    let mut part = Partition::new(model.clone());
    let mut out = Vec::new();
    let t0: i64 = 1_767_225_600_000; // 2026-01-01
    let mut line = String::with_capacity(256);
    let mut apply = |part: &mut Partition, line: &str| {
        // The lines are built here, so they decode.
        if let Ok(e) = crate::codec::json::decode(line.as_bytes()) {
            part.apply(&e, &mut out);
            out.clear();
        }
    };
    use std::fmt::Write as _;
    let before = rss_bytes().unwrap_or(0);
    let mut events = 0u64;
    for i in 0..flood_ids {
        // 100 events a second of event time: the flood spans days, so the
        // duplicate memory's time window does not hide the id cap.
        let t = crate::codec::timefmt::format(t0 + i as i64 * 10);
        line.clear();
        let _ = write!(
            line,
            r#"{{"id":"u{i}","account_id":"victim","type":"usage.feature","time":"{t}","user_id":"user-{i}","feature":"feature-{i}"}}"#
        );
        apply(&mut part, &line);
        line.clear();
        let _ = write!(
            line,
            r#"{{"id":"t{i}","account_id":"victim","type":"ticket.opened","time":"{t}","ticket_id":"ticket-{i}","priority":"low"}}"#
        );
        apply(&mut part, &line);
        events += 2;
    }
    let after = rss_bytes().unwrap_or(0);
    let flood_secs = start.elapsed().as_secs_f64();
    let (users, features, tickets, heap) = part.account("victim").map_or((0, 0, 0, 0), |a| {
        let tickets = a.support.as_ref().map_or(0, |s| s.open_tickets.len());
        let heap = a.users.capacity() * 8
            + a.features.capacity() * 12
            + a.support.as_ref().map_or(0, |s| {
                s.open_tickets.capacity() * std::mem::size_of::<crate::core::account::Ticket>()
            });
        (a.users.len(), a.features.len(), tickets, heap)
    });
    let l = part.stats.limits;
    let flood_dedup_ids = part.dedup.order.len() as u64;
    drop(part);

    let start2 = Instant::now();
    let mut part = Partition::new(model);
    let before2 = rss_bytes().unwrap_or(0);
    for i in 0..accounts {
        let t = crate::codec::timefmt::format(t0 + (i / 1000) as i64);
        line.clear();
        let _ = write!(
            line,
            r#"{{"id":"l{i}","account_id":"acct-{i}","type":"usage.login","time":"{t}","user_id":"u"}}"#
        );
        apply(&mut part, &line);
    }
    let after2 = rss_bytes().unwrap_or(0);
    LimitsReport {
        flood_ids,
        flood_events: events,
        flood_users_kept: users as u64,
        flood_features_kept: features as u64,
        flood_open_tickets_kept: tickets as u64,
        flood_users_evicted: l.users_evicted,
        flood_features_evicted: l.features_evicted,
        flood_tickets_evicted: l.tickets_evicted,
        flood_account_heap_bytes: heap as u64,
        flood_rss_growth_bytes: after.saturating_sub(before),
        flood_dedup_ids,
        flood_secs,
        accounts,
        accounts_rss_growth_bytes: after2.saturating_sub(before2),
        bytes_per_account: after2.saturating_sub(before2) as f64 / accounts.max(1) as f64,
        accounts_dedup_ids: part.dedup.order.len() as u64,
        accounts_secs: start2.elapsed().as_secs_f64(),
        worst_case_account_bytes: worst_case_account_bytes(&ModelConfig::default()),
    }
}
