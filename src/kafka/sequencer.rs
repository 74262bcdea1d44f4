//! The sequencer's decisions, as pure logic (DESIGN.md, "One ordered log
//! per partition"). The Kafka shell feeds it the records it fetched from
//! partition `p` of every input topic (and of `vitals.repartition`) and
//! the wall-clock time, and appends what it decides to
//! `vitals.sequenced[p]`, in order:
//!
//! - [`Entry::Event`]: a valid record owned by `p`, merged by (event time,
//!   source, offset) with a bounded wait;
//! - [`Entry::Reroute`]: the record's key belongs to another partition (it
//!   was produced with another partitioner); the fold of `p` forwards it to
//!   `vitals.repartition[owner]` and never scores it;
//! - [`Entry::Dead`]: invalid; the fold of `p` sends it to the DLQ with the
//!   reason;
//! - [`Decision::Tick`]: the partition is idle; a clock tick so time moves
//!   for silent accounts (part of the log, so replay sees it too).
//!
//! Everything the sequencer decides goes through the one log it owns, so
//! the log is the complete history of partition `p`'s inputs, and the
//! side outputs (DLQ, re-routes) are produced by the fold with provenance
//! like any other output: exactly once by the same mechanism.
//!
//! Wall-clock time only *triggers* emission and ticks; the tick's event
//! time advances from the newest event time at the wall clock's pace, so
//! it never runs ahead of a lagging producer by more than the idle time.
//! No I/O, no clock of its own: same inputs and times, same decisions.
//!
//! Exactly-once for `vitals.sequenced`: every appended record carries the
//! sequencer's [`Cursor`] (per-source positions, newest event time, and
//! per-origin marks of re-routed records), so a restarted sequencer resumes
//! from the last record's header and drops what is at or below it.
//! Re-routed records carry their origin's provenance (partition, sequenced
//! offset); one that arrives again (its origin replayed after a crash) is
//! dropped by the origin mark.

use std::collections::VecDeque;

use crate::codec::{self, Format};
use crate::core::Ts;

use super::partitioner::partition_for;

/// A record fetched from an input (or the repartition) topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRecord {
    /// Index of the source topic; the repartition topic is the last one.
    pub source: u16,
    pub partition: u32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub format: Format,
    /// For re-routed records: the (partition, sequenced offset) of the
    /// fold that forwarded it (its provenance headers).
    pub origin: Option<(u32, i64)>,
    /// The record's Kafka timestamp (ms), for latency metrics only.
    pub timestamp: Option<i64>,
}

/// What an appended record is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A valid event owned by this partition, with its event time.
    Event { time: Ts },
    /// Owned by partition `to`: forward, do not score.
    Reroute { to: u32 },
    /// Invalid, for this reason.
    Dead { reason: String },
}

/// The sequencer's resumable position, carried by every appended record
/// (header `vitals.cursor`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cursor {
    /// Per source, the highest offset appended so far (−1: none).
    pub positions: Vec<i64>,
    /// Newest event time appended (or ticked to).
    pub time: Option<Ts>,
    /// Per origin partition, the highest provenance offset of re-routed
    /// records appended; sorted by partition.
    pub origins: Vec<(u32, i64)>,
}

impl Cursor {
    /// `12,40,-1;1767225600000;3:17,5:2` (time and origins may be empty).
    pub fn encode(&self) -> String {
        let pos = self
            .positions
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let time = self.time.map(|t| t.to_string()).unwrap_or_default();
        let origins = self
            .origins
            .iter()
            .map(|(p, o)| format!("{p}:{o}"))
            .collect::<Vec<_>>()
            .join(",");
        format!("{pos};{time};{origins}")
    }

    /// Parses [`Cursor::encode`]'s form; `None` when malformed.
    pub fn decode(s: &str) -> Option<Cursor> {
        let mut parts = s.split(';');
        let pos = parts.next()?;
        let time = parts.next()?;
        let origins = parts.next()?;
        if parts.next().is_some() {
            return None;
        }
        let positions = pos
            .split(',')
            .map(|x| x.parse().ok())
            .collect::<Option<Vec<i64>>>()?;
        let time = if time.is_empty() {
            None
        } else {
            Some(time.parse().ok()?)
        };
        let origins = if origins.is_empty() {
            Vec::new()
        } else {
            origins
                .split(',')
                .map(|x| {
                    let (p, o) = x.split_once(':')?;
                    Some((p.parse().ok()?, o.parse().ok()?))
                })
                .collect::<Option<Vec<(u32, i64)>>>()?
        };
        Some(Cursor {
            positions,
            time,
            origins,
        })
    }

    fn origin(&self, p: u32) -> i64 {
        self.origins
            .binary_search_by_key(&p, |&(q, _)| q)
            .map_or(-1, |i| self.origins[i].1)
    }

    fn set_origin(&mut self, p: u32, o: i64) {
        match self.origins.binary_search_by_key(&p, |&(q, _)| q) {
            Ok(i) => self.origins[i].1 = self.origins[i].1.max(o),
            Err(i) => self.origins.insert(i, (p, o)),
        }
    }
}

/// What to append to `vitals.sequenced[p]`, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Append the source record as `entry`; `cursor` goes in its header.
    Append {
        entry: Entry,
        record: SourceRecord,
        cursor: Cursor,
    },
    /// Append a clock tick with this event time.
    Tick { time: Ts, cursor: Cursor },
}

/// Sequencer settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequencerConfig {
    /// Partitions of every input topic (co-partitioned).
    pub partitions: u32,
    /// Input sources, the repartition topic included (the last index).
    pub sources: u16,
    /// Longest a record waits (wall clock) for the other sources before it
    /// is sequenced anyway.
    pub max_wait_ms: i64,
    /// Idle time (wall clock) after which a tick is appended, and between
    /// ticks.
    pub tick_every_ms: i64,
}

#[derive(Debug, Clone)]
struct Pending {
    entry: Entry,
    arrived: Ts,
    record: SourceRecord,
}

impl Pending {
    fn time(&self) -> Option<Ts> {
        match self.entry {
            Entry::Event { time } => Some(time),
            _ => None,
        }
    }
}

/// The sequencer of one partition.
#[derive(Debug, Clone)]
pub struct Sequencer {
    cfg: SequencerConfig,
    partition: u32,
    queues: Vec<VecDeque<Pending>>,
    /// Sources known to have nothing more to fetch right now (at their
    /// high watermark): an empty caught-up source does not hold back the
    /// merge.
    caught_up: Vec<bool>,
    cursor: Cursor,
    /// Wall time when `cursor.time` was reached (`None` after a restart).
    time_wall: Option<Ts>,
    last_activity_wall: Option<Ts>,
    /// Origin marks including re-routed records still queued.
    origins_seen: Cursor,
    /// Records dropped because they were appended before (a restart, or a
    /// re-routed record forwarded twice).
    pub suppressed: u64,
    /// Per source: records released by `max_wait_ms` while that source
    /// (neither caught up nor with a record waiting) held back the merge.
    /// Taken with [`Sequencer::take_deadline_waits`].
    deadline_waits: Vec<u64>,
}

impl Sequencer {
    pub fn new(partition: u32, cfg: SequencerConfig) -> Self {
        Sequencer::resume(partition, cfg, Cursor::default())
    }

    /// A sequencer restarting after `cursor` (from the last appended
    /// record's header): records at or below a source's position, and
    /// re-routed records at or below their origin's mark, are dropped.
    /// A cursor for another number of sources is ignored (fresh start).
    pub fn resume(partition: u32, cfg: SequencerConfig, mut cursor: Cursor) -> Self {
        if cursor.positions.len() != cfg.sources as usize {
            cursor = Cursor {
                positions: vec![-1; cfg.sources as usize],
                ..cursor
            };
        }
        Sequencer {
            cfg,
            partition,
            queues: vec![VecDeque::new(); cfg.sources as usize],
            caught_up: vec![false; cfg.sources as usize],
            origins_seen: cursor.clone(),
            cursor,
            time_wall: None,
            last_activity_wall: None,
            suppressed: 0,
            deadline_waits: vec![0; cfg.sources as usize],
        }
    }

    /// Per source, the records released by the deadline while that source
    /// held back the merge, since the last call (then zeroed). A source that
    /// keeps showing here is read too slowly or announced caught up too
    /// late: each such record waited the whole `max_wait_ms`.
    pub fn take_deadline_waits(&mut self) -> impl Iterator<Item = (u16, u64)> + '_ {
        self.deadline_waits
            .iter_mut()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, n)| (i as u16, std::mem::take(n)))
    }

    /// The current cursor (see [`Decision::Append`]).
    pub fn cursor(&self) -> &Cursor {
        &self.cursor
    }

    fn is_repartition(&self, source: u16) -> bool {
        source + 1 == self.cfg.sources
    }

    /// Takes in one fetched record at wall time `wall`. It waits in its
    /// source's queue for [`Sequencer::poll`]; invalid and misrouted
    /// records pass as soon as they reach the head of their queue.
    pub fn push(&mut self, record: SourceRecord, wall: Ts) {
        self.last_activity_wall = Some(wall);
        let src = record.source as usize;
        if src >= self.queues.len() || record.offset <= self.cursor.positions[src] {
            self.suppressed += 1;
            return;
        }
        if let (true, Some((q, o))) = (self.is_repartition(record.source), record.origin) {
            if o <= self.origins_seen.origin(q) {
                self.suppressed += 1;
                return;
            }
            self.origins_seen.set_origin(q, o);
        }
        let entry = self.classify(&record);
        self.caught_up[src] = false;
        self.queues[src].push_back(Pending {
            entry,
            arrived: wall,
            record,
        });
    }

    fn classify(&self, record: &SourceRecord) -> Entry {
        let ev = match codec::decode(record.format, &record.value) {
            Ok(ev) => ev,
            Err(e) => {
                return Entry::Dead {
                    reason: e.to_string(),
                }
            }
        };
        if record.key.as_deref() != Some(ev.account_id.as_bytes()) {
            return Entry::Dead {
                reason: format!(
                    "record key does not match account_id {:?} (input topics are keyed by account_id)",
                    ev.account_id
                ),
            };
        }
        let owner = partition_for(ev.account_id.as_bytes(), self.cfg.partitions);
        if owner == self.partition {
            Entry::Event { time: ev.time }
        } else if self.is_repartition(record.source) {
            Entry::Dead {
                reason: format!(
                    "re-routed record for partition {owner} reached partition {}",
                    self.partition
                ),
            }
        } else {
            Entry::Reroute { to: owner }
        }
    }

    /// The shell says whether `source` has been read up to its high
    /// watermark (nothing more to fetch now). A fetch that returns records
    /// makes it not caught up again.
    pub fn set_caught_up(&mut self, source: u16, caught_up: bool) {
        if let Some(c) = self.caught_up.get_mut(source as usize) {
            *c = caught_up;
        }
    }

    fn append(&mut self, p: Pending, wall: Ts, out: &mut Vec<Decision>) {
        if let Some(t) = p.time() {
            if self.cursor.time.is_none_or(|m| t >= m) {
                self.cursor.time = Some(t);
                self.time_wall = Some(wall);
            }
        }
        self.cursor.positions[p.record.source as usize] = p.record.offset;
        if let (true, Some((q, o))) = (self.is_repartition(p.record.source), p.record.origin) {
            self.cursor.set_origin(q, o);
        }
        out.push(Decision::Append {
            entry: p.entry,
            record: p.record,
            cursor: self.cursor.clone(),
        });
    }

    /// Appends what can be: records that are not events as soon as they
    /// head their queue; then the event head with the smallest (event
    /// time, source, offset) while every source that is not caught up has
    /// a head, or while the oldest waiting record has waited
    /// `max_wait_ms`. Then, if nothing came in or went out for
    /// `tick_every_ms`, a tick.
    pub fn poll(&mut self, wall: Ts, out: &mut Vec<Decision>) {
        let mut emitted = false;
        loop {
            for i in 0..self.queues.len() {
                while self.queues[i].front().is_some_and(|p| p.time().is_none()) {
                    let p = self.queues[i].pop_front().expect("a head was found");
                    self.append(p, wall, out);
                    emitted = true;
                }
            }
            let all_present = self
                .queues
                .iter()
                .zip(&self.caught_up)
                .all(|(q, &done)| !q.is_empty() || done)
                && self.queues.iter().any(|q| !q.is_empty());
            let oldest_wait = self
                .queues
                .iter()
                .filter_map(|q| q.front().map(|p| p.arrived))
                .min();
            let expired = oldest_wait.is_some_and(|a| wall - a >= self.cfg.max_wait_ms);
            if !(all_present || expired) {
                break;
            }
            if !all_present {
                for (i, q) in self.queues.iter().enumerate() {
                    if q.is_empty() && !self.caught_up[i] {
                        self.deadline_waits[i] += 1;
                    }
                }
            }
            let Some(i) = self
                .queues
                .iter()
                .enumerate()
                .filter_map(|(i, q)| {
                    q.front()
                        .and_then(|p| Some((p.time()?, i, p.record.offset)))
                })
                .min()
                .map(|(_, i, _)| i)
            else {
                break;
            };
            let p = self.queues[i].pop_front().expect("a head was found");
            self.append(p, wall, out);
            emitted = true;
        }
        if emitted {
            self.last_activity_wall = Some(wall);
            return;
        }
        let idle_since = self.last_activity_wall.unwrap_or(wall);
        let waiting = self.queues.iter().any(|q| !q.is_empty());
        if !waiting && wall - idle_since >= self.cfg.tick_every_ms {
            if let Some(t) = self.cursor.time {
                // After a restart the wall time of `t` is unknown: tick
                // from `t` itself first.
                let seen_wall = self.time_wall.unwrap_or(wall);
                let time = t + (wall - seen_wall).max(0);
                self.cursor.time = Some(time);
                self.time_wall = Some(wall);
                out.push(Decision::Tick {
                    time,
                    cursor: self.cursor.clone(),
                });
            }
            self.last_activity_wall = Some(wall);
        }
    }

    /// The wall time at which [`Sequencer::poll`] will have something to
    /// do even if nothing more arrives: the oldest waiting record's
    /// `max_wait_ms` expiry, or else the next idle tick. `None`: only new
    /// input can change anything. The shell sleeps until then (or until
    /// input arrives) instead of polling at a fixed pace.
    pub fn next_deadline(&self) -> Option<Ts> {
        let oldest = self
            .queues
            .iter()
            .filter_map(|q| q.front().map(|p| p.arrived))
            .min();
        match oldest {
            Some(a) => Some(a + self.cfg.max_wait_ms),
            None => self
                .cursor
                .time
                .and(self.last_activity_wall)
                .map(|w| w + self.cfg.tick_every_ms),
        }
    }

    /// Records waiting for the other sources.
    pub fn pending(&self) -> usize {
        self.queues.iter().map(VecDeque::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u32 = 4;

    /// An account id owned by partition `p` among `P`.
    fn acct_on(p: u32) -> String {
        (0..)
            .map(|i| format!("acct-{i}"))
            .find(|a| partition_for(a.as_bytes(), P) == p)
            .unwrap()
    }

    fn rec(source: u16, offset: i64, acct: &str, time: &str) -> SourceRecord {
        let v = format!(
            r#"{{"id":"e{source}-{offset}","account_id":"{acct}","type":"usage.login","time":"{time}","user_id":"u"}}"#
        );
        SourceRecord {
            source,
            partition: 1,
            offset,
            key: Some(acct.as_bytes().to_vec()),
            value: v.into_bytes(),
            format: Format::Json,
            origin: None,
            timestamp: None,
        }
    }

    fn cfg() -> SequencerConfig {
        SequencerConfig {
            partitions: P,
            sources: 3,
            max_wait_ms: 500,
            tick_every_ms: 1000,
        }
    }

    fn seq() -> Sequencer {
        Sequencer::new(1, cfg())
    }

    fn offsets(out: &[Decision]) -> Vec<(u16, i64)> {
        out.iter()
            .filter_map(|d| match d {
                Decision::Append { record, .. } => Some((record.source, record.offset)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn merges_by_event_time_while_sources_that_may_have_data_have_some() {
        let a = acct_on(1);
        let mut s = seq();
        let mut out = Vec::new();
        s.push(rec(0, 10, &a, "2026-01-01T00:00:03Z"), 0);
        s.push(rec(0, 11, &a, "2026-01-01T00:00:05Z"), 0);
        s.push(rec(1, 7, &a, "2026-01-01T00:00:04Z"), 0);
        s.poll(0, &mut out);
        // Source 2 (repartition) is empty and not known to be caught up.
        assert!(out.is_empty());
        s.set_caught_up(2, true);
        s.poll(10, &mut out);
        // 03 (src 0), 04 (src 1); then source 1 is empty and may still
        // have data in flight, so 05 waits.
        assert_eq!(offsets(&out), vec![(0, 10), (1, 7)]);
        out.clear();
        // An earlier record from the repartition topic is merged in first.
        s.push(rec(2, 0, &a, "2026-01-01T00:00:04.5Z"), 20);
        s.set_caught_up(1, true);
        s.poll(20, &mut out);
        assert_eq!(offsets(&out), vec![(2, 0)]);
        out.clear();
        // Nothing so far was released by the deadline.
        assert_eq!(s.take_deadline_waits().count(), 0);
        // Source 2 may have more: the bounded wait releases 05.
        s.poll(499, &mut out);
        assert!(out.is_empty());
        s.poll(500, &mut out);
        assert_eq!(offsets(&out), vec![(0, 11)]);
        assert_eq!(s.pending(), 0);
        // ... and counts source 2 as what held it back, once.
        assert_eq!(s.take_deadline_waits().collect::<Vec<_>>(), vec![(2, 1)]);
        assert_eq!(s.take_deadline_waits().count(), 0);
    }

    #[test]
    fn a_restarted_sequencer_appends_nothing_twice() {
        // Run once, "crash" after some records were appended, resume from
        // the last appended record's cursor and re-read everything: the
        // union of both runs is each record exactly once.
        let a = acct_on(1);
        let recs: Vec<SourceRecord> = (0..30)
            .map(|i| {
                let src = (i % 3) as u16;
                let t = format!("2026-01-01T00:00:{:02}Z", i);
                let mut r = rec(src, i as i64 / 3, &a, &t);
                if i == 7 {
                    r.value = b"{broken".to_vec();
                }
                r
            })
            .collect();
        let mut first = seq();
        let mut out = Vec::new();
        for r in &recs[..17] {
            first.push(r.clone(), 0);
        }
        first.poll(1000, &mut out);
        let header = match out.last().unwrap() {
            Decision::Append { cursor, .. } => cursor.encode(),
            d => panic!("{d:?}"),
        };
        let cursor = Cursor::decode(&header).unwrap();
        assert_eq!(cursor.encode(), header);
        let mut second = Sequencer::resume(1, cfg(), cursor);
        let mut out2 = Vec::new();
        for r in &recs {
            second.push(r.clone(), 2000);
        }
        second.poll(3000, &mut out2);
        let mut all = offsets(&out);
        all.extend(offsets(&out2));
        all.sort();
        let mut want: Vec<(u16, i64)> = recs.iter().map(|r| (r.source, r.offset)).collect();
        want.sort();
        assert_eq!(all, want);
        assert_eq!(second.suppressed, 17);
    }

    #[test]
    fn ties_break_by_source_then_offset() {
        let a = acct_on(1);
        let mut s = seq();
        let mut out = Vec::new();
        let t = "2026-01-01T00:00:00Z";
        s.push(rec(1, 5, &a, t), 0);
        s.push(rec(0, 8, &a, t), 0);
        s.push(rec(0, 9, &a, t), 0);
        s.poll(1000, &mut out);
        assert_eq!(offsets(&out), vec![(0, 8), (0, 9), (1, 5)]);
    }

    #[test]
    fn invalid_misrouted_and_mis_keyed_records_keep_their_source_order() {
        let mut s = seq();
        let mut out = Vec::new();
        let mine = acct_on(1);
        // A valid record waits for the other sources ...
        s.push(rec(0, 0, &mine, "2026-01-01T00:00:00Z"), 0);
        let mut bad = rec(0, 1, &mine, "2026-01-01T00:00:00Z");
        bad.value = b"{oops".to_vec();
        s.push(bad.clone(), 0);
        let other = acct_on(3);
        s.push(rec(1, 2, &other, "2026-01-01T00:00:00Z"), 0);
        let mut via = rec(2, 3, &other, "2026-01-01T00:00:00Z");
        via.origin = Some((0, 9));
        s.push(via, 0);
        let mut wrong_key = rec(1, 4, &mine, "2026-01-01T00:00:00Z");
        wrong_key.key = Some(b"someone-else".to_vec());
        s.push(wrong_key, 0);
        s.poll(0, &mut out);
        // ... so source 0's invalid record behind it waits too; source
        // 1's and 2's pass at once.
        let entries: Vec<(u16, i64, Entry)> = out
            .iter()
            .map(|d| match d {
                Decision::Append { entry, record, .. } => {
                    (record.source, record.offset, entry.clone())
                }
                d => panic!("{d:?}"),
            })
            .collect();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].2, Entry::Reroute { to: 3 });
        assert!(
            matches!(&entries[1].2, Entry::Dead { reason } if reason.contains("does not match account_id"))
        );
        assert!(
            matches!(&entries[2].2, Entry::Dead { reason } if reason.contains("re-routed record for partition 3"))
        );
        out.clear();
        s.poll(500, &mut out);
        assert_eq!(offsets(&out), vec![(0, 0), (0, 1)]);
        assert!(
            matches!(&out[1], Decision::Append { entry: Entry::Dead { reason }, record, .. } if reason.starts_with("invalid JSON") && *record == bad)
        );
        match &out[1] {
            Decision::Append { cursor, .. } => {
                assert_eq!(cursor.positions, vec![1, 4, 3]);
                assert_eq!(cursor.origins, vec![(0, 9)]);
            }
            d => panic!("{d:?}"),
        }
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn a_re_routed_record_forwarded_twice_is_appended_once() {
        let mine = acct_on(1);
        let mut s = seq();
        s.set_caught_up(0, true);
        s.set_caught_up(1, true);
        let mut out = Vec::new();
        let mut r = rec(2, 0, &mine, "2026-01-01T00:00:00Z");
        r.origin = Some((3, 40));
        s.push(r.clone(), 0);
        // Its origin crashed and forwarded it again (a later offset here).
        let mut again = r.clone();
        again.offset = 1;
        s.push(again.clone(), 0);
        s.poll(0, &mut out);
        assert_eq!(offsets(&out), vec![(2, 0)]);
        let Decision::Append { cursor, .. } = out.last().unwrap() else {
            panic!()
        };
        // After a restart too.
        let mut s2 = Sequencer::resume(1, cfg(), cursor.clone());
        again.offset = 2;
        s2.push(again, 10);
        assert_eq!(s2.pending(), 0);
        assert_eq!(s2.suppressed, 1);
        assert_eq!(s.suppressed, 1);
    }

    #[test]
    fn cursor_header_round_trip_and_rejects() {
        let c = Cursor {
            positions: vec![3, -1, 7],
            time: Some(1_767_225_600_000),
            origins: vec![(0, 4), (5, 99)],
        };
        assert_eq!(c.encode(), "3,-1,7;1767225600000;0:4,5:99");
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        let empty = Cursor {
            positions: vec![-1],
            time: None,
            origins: vec![],
        };
        assert_eq!(Cursor::decode(&empty.encode()), Some(empty));
        for bad in ["", "1,x;;", "1;;;", "1;t;", "1;;3", "1;;3:"] {
            assert_eq!(Cursor::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn next_deadline_is_when_poll_would_act_without_new_input() {
        let a = acct_on(1);
        let mut s = seq();
        let mut out = Vec::new();
        // Nothing yet, nothing to tick from: only input can change things.
        assert_eq!(s.next_deadline(), None);
        s.push(rec(0, 1, &a, "2026-01-01T00:00:00Z"), 100);
        s.push(rec(1, 1, &a, "2026-01-01T00:00:01Z"), 130);
        s.poll(130, &mut out);
        assert!(out.is_empty(), "source 2 may still have records");
        // The oldest waiting record's bounded wait.
        assert_eq!(s.next_deadline(), Some(100 + 500));
        s.poll(599, &mut out);
        assert!(out.is_empty());
        s.poll(600, &mut out);
        assert_eq!(offsets(&out), vec![(0, 1)]);
        out.clear();
        assert_eq!(s.next_deadline(), Some(130 + 500));
        s.poll(630, &mut out);
        assert_eq!(offsets(&out), vec![(1, 1)]);
        out.clear();
        // Idle: the next tick.
        assert_eq!(s.next_deadline(), Some(630 + 1000));
        s.poll(1629, &mut out);
        assert!(out.is_empty());
        s.poll(1630, &mut out);
        assert!(matches!(out[..], [Decision::Tick { .. }]));
        assert_eq!(s.next_deadline(), Some(1630 + 1000));
    }

    #[test]
    fn idle_partition_ticks_at_wall_clock_pace_from_the_newest_event() {
        let a = acct_on(1);
        let mut s = seq();
        let mut out = Vec::new();
        // No event yet: nothing to tick from.
        s.poll(5000, &mut out);
        assert!(out.is_empty());
        s.push(rec(0, 1, &a, "2026-01-01T00:00:00Z"), 10_000);
        s.poll(10_500, &mut out);
        assert_eq!(out.len(), 1);
        out.clear();
        s.poll(11_000, &mut out);
        assert!(out.is_empty(), "not idle long enough");
        s.poll(11_500, &mut out);
        let t0 = crate::codec::timefmt::parse("2026-01-01T00:00:00Z").unwrap();
        assert!(matches!(out[..], [Decision::Tick { time, .. }] if time == t0 + 1000));
        out.clear();
        s.poll(12_500, &mut out);
        assert!(
            matches!(out[..], [Decision::Tick { time, ref cursor }] if time == t0 + 2000 && cursor.time == Some(time))
        );
    }
}
