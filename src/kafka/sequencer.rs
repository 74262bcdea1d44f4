//! The sequencer's decisions, as pure logic (DESIGN.md, "One ordered log
//! per partition"). The Kafka shell feeds it the records it fetched from
//! partition `p` of every input topic (and of `vitals.repartition`) and
//! the wall-clock time, and carries out what it decides:
//!
//! - [`Decision::Sequence`]: append the record to `vitals.sequenced[p]`
//!   (merged by event time, then source, then offset, with a bounded wait);
//! - [`Decision::Reroute`]: the record's key belongs to another partition
//!   (it was produced with another partitioner): send it to
//!   `vitals.repartition[owner]`, never score it here;
//! - [`Decision::Dead`]: invalid — to the DLQ with the reason;
//! - [`Decision::Tick`]: the partition is idle; append a clock tick so time
//!   moves for silent accounts (the tick is part of the log, so replay sees
//!   it too).
//!
//! Wall-clock time only *triggers* emission and ticks; the tick's event
//! time advances from the newest event time at the wall clock's pace, so
//! it never runs ahead of a lagging producer by more than the idle time.
//! No I/O, no clock of its own: same inputs and times, same decisions.
//!
//! Exactly-once for `vitals.sequenced`: every sequenced record carries the
//! per-source positions sequenced so far, so a restarted sequencer resumes
//! from the last record's header and drops what is at or below them. The
//! shell must have each re-route and dead-letter delivered before it
//! appends any later record of the same source, so that a position never
//! covers an undelivered decision.

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
}

/// What to do with what came in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Append to `vitals.sequenced[p]`; `time` is the event time.
    /// `positions` (per source, the highest offset sequenced so far, this
    /// record included; −1 for none) goes in the record's
    /// `vitals.positions` header, so the last sequenced record alone tells
    /// a restarted sequencer what not to append again.
    Sequence {
        time: Ts,
        record: SourceRecord,
        positions: Vec<i64>,
    },
    /// Send to `vitals.repartition[to]`.
    Reroute { to: u32, record: SourceRecord },
    /// Send to the DLQ with this reason.
    Dead {
        reason: String,
        record: SourceRecord,
    },
    /// Append a clock tick with this event time.
    Tick { time: Ts },
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
    time: Ts,
    arrived: Ts,
    record: SourceRecord,
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
    /// Newest event time sequenced (or ticked), and the wall time then.
    max_time: Option<(Ts, Ts)>,
    last_activity_wall: Option<Ts>,
    /// Per source, the highest offset in `vitals.sequenced` (−1: none).
    positions: Vec<i64>,
    /// Records dropped because they were sequenced before a restart.
    pub suppressed: u64,
}

impl Sequencer {
    pub fn new(partition: u32, cfg: SequencerConfig) -> Self {
        Sequencer {
            cfg,
            partition,
            queues: vec![VecDeque::new(); cfg.sources as usize],
            caught_up: vec![false; cfg.sources as usize],
            max_time: None,
            last_activity_wall: None,
            positions: vec![-1; cfg.sources as usize],
            suppressed: 0,
        }
    }

    /// A sequencer restarting after `positions` (from the last sequenced
    /// record's header) and the newest event time already sequenced:
    /// records at or below a source's position are dropped, not appended
    /// again.
    pub fn resume(
        partition: u32,
        cfg: SequencerConfig,
        positions: Vec<i64>,
        max_time: Option<Ts>,
    ) -> Self {
        let mut s = Sequencer::new(partition, cfg);
        if positions.len() == s.positions.len() {
            s.positions = positions;
        }
        s.max_time = max_time.map(|t| (t, Ts::MIN));
        s
    }

    /// The current positions (see [`Decision::Sequence`]).
    pub fn positions(&self) -> &[i64] {
        &self.positions
    }

    fn is_repartition(&self, source: u16) -> bool {
        source + 1 == self.cfg.sources
    }

    /// Takes in one fetched record at wall time `wall`. Invalid and
    /// misrouted records are decided at once; valid ones wait in their
    /// source's queue for [`Sequencer::poll`].
    pub fn push(&mut self, record: SourceRecord, wall: Ts, out: &mut Vec<Decision>) {
        self.last_activity_wall = Some(wall);
        if record.offset <= self.positions[record.source as usize] {
            self.suppressed += 1;
            return;
        }
        let ev = match codec::decode(record.format, &record.value) {
            Ok(ev) => ev,
            Err(e) => {
                out.push(Decision::Dead {
                    reason: e.to_string(),
                    record,
                });
                return;
            }
        };
        if record.key.as_deref() != Some(ev.account_id.as_bytes()) {
            out.push(Decision::Dead {
                reason: format!(
                    "record key does not match account_id {:?} (input topics are keyed by account_id)",
                    ev.account_id
                ),
                record,
            });
            return;
        }
        let owner = partition_for(ev.account_id.as_bytes(), self.cfg.partitions);
        if owner != self.partition {
            if self.is_repartition(record.source) {
                out.push(Decision::Dead {
                    reason: format!(
                        "re-routed record for partition {owner} reached partition {}",
                        self.partition
                    ),
                    record,
                });
            } else {
                out.push(Decision::Reroute { to: owner, record });
            }
            return;
        }
        self.caught_up[record.source as usize] = false;
        let q = &mut self.queues[record.source as usize];
        q.push_back(Pending {
            time: ev.time,
            arrived: wall,
            record,
        });
    }

    /// The shell says whether `source` has been read up to its high
    /// watermark (nothing more to fetch now). A fetch that returns records
    /// makes it not caught up again.
    pub fn set_caught_up(&mut self, source: u16, caught_up: bool) {
        self.caught_up[source as usize] = caught_up;
    }

    /// Sequences what can be: the head with the smallest (event time,
    /// source, offset) while every source that is not caught up has a
    /// head, or while the oldest waiting record has waited `max_wait_ms`.
    /// Then, if nothing came in or went out for `tick_every_ms`, a tick.
    pub fn poll(&mut self, wall: Ts, out: &mut Vec<Decision>) {
        let mut emitted = false;
        loop {
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
            let Some(i) = self
                .queues
                .iter()
                .enumerate()
                .filter_map(|(i, q)| q.front().map(|p| (p.time, i, p.record.offset)))
                .min()
                .map(|(_, i, _)| i)
            else {
                break;
            };
            let p = self.queues[i].pop_front().expect("a head was found");
            let newest = self.max_time.map_or(p.time, |(t, _)| t.max(p.time));
            if self.max_time.is_none_or(|(t, _)| p.time >= t) {
                self.max_time = Some((newest, wall));
            }
            self.positions[p.record.source as usize] = p.record.offset;
            out.push(Decision::Sequence {
                time: p.time,
                record: p.record,
                positions: self.positions.clone(),
            });
            emitted = true;
        }
        if emitted {
            self.last_activity_wall = Some(wall);
            return;
        }
        let idle_since = self.last_activity_wall.unwrap_or(wall);
        let waiting = self.queues.iter().any(|q| !q.is_empty());
        if !waiting && wall - idle_since >= self.cfg.tick_every_ms {
            if let Some((t, seen_wall)) = self.max_time {
                // After a restart the wall time of `t` is unknown: tick
                // from `t` itself first.
                let seen_wall = if seen_wall == Ts::MIN {
                    wall
                } else {
                    seen_wall
                };
                let time = t + (wall - seen_wall).max(0);
                self.max_time = Some((time, wall));
                out.push(Decision::Tick { time });
            }
            self.last_activity_wall = Some(wall);
        }
    }

    /// Records waiting for the other sources.
    pub fn pending(&self) -> usize {
        self.queues.iter().map(VecDeque::len).sum()
    }
}

/// Encodes positions for the `vitals.positions` header: `12,40,-1`.
pub fn encode_positions(p: &[i64]) -> String {
    p.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
}

/// Decodes a `vitals.positions` header.
pub fn decode_positions(s: &str) -> Option<Vec<i64>> {
    s.split(',').map(|x| x.trim().parse().ok()).collect()
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
        }
    }

    fn seq() -> Sequencer {
        Sequencer::new(
            1,
            SequencerConfig {
                partitions: P,
                sources: 3,
                max_wait_ms: 500,
                tick_every_ms: 1000,
            },
        )
    }

    fn offsets(out: &[Decision]) -> Vec<(u16, i64)> {
        out.iter()
            .filter_map(|d| match d {
                Decision::Sequence { record, .. } => Some((record.source, record.offset)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn merges_by_event_time_while_sources_that_may_have_data_have_some() {
        let a = acct_on(1);
        let mut s = seq();
        let mut out = Vec::new();
        s.push(rec(0, 10, &a, "2026-01-01T00:00:03Z"), 0, &mut out);
        s.push(rec(0, 11, &a, "2026-01-01T00:00:05Z"), 0, &mut out);
        s.push(rec(1, 7, &a, "2026-01-01T00:00:04Z"), 0, &mut out);
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
        s.push(rec(2, 0, &a, "2026-01-01T00:00:04.5Z"), 20, &mut out);
        s.set_caught_up(1, true);
        s.poll(20, &mut out);
        assert_eq!(offsets(&out), vec![(2, 0)]);
        out.clear();
        // Source 2 may have more: the bounded wait releases 05.
        s.poll(499, &mut out);
        assert!(out.is_empty());
        s.poll(500, &mut out);
        assert_eq!(offsets(&out), vec![(0, 11)]);
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn a_restarted_sequencer_appends_nothing_twice() {
        // Run once, "crash" after some records were sequenced, resume from
        // the last sequenced record's positions and re-read everything:
        // the union of both runs is each record exactly once.
        let a = acct_on(1);
        let recs: Vec<SourceRecord> = (0..30)
            .map(|i| {
                let src = (i % 3) as u16;
                let t = format!("2026-01-01T00:00:{:02}Z", i);
                rec(src, i as i64 / 3, &a, &t)
            })
            .collect();
        let mut first = seq();
        let mut out = Vec::new();
        for r in &recs[..17] {
            first.push(r.clone(), 0, &mut out);
        }
        first.poll(1000, &mut out);
        let (last_positions, last_time) = match out.last().unwrap() {
            Decision::Sequence {
                positions, time, ..
            } => (positions.clone(), *time),
            d => panic!("{d:?}"),
        };
        let header = encode_positions(&last_positions);
        assert_eq!(decode_positions(&header), Some(last_positions.clone()));
        let mut second = Sequencer::resume(
            1,
            SequencerConfig {
                partitions: P,
                sources: 3,
                max_wait_ms: 500,
                tick_every_ms: 1000,
            },
            decode_positions(&header).unwrap(),
            Some(last_time),
        );
        let mut out2 = Vec::new();
        for r in &recs {
            second.push(r.clone(), 2000, &mut out2);
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
        s.push(rec(1, 5, &a, t), 0, &mut out);
        s.push(rec(0, 8, &a, t), 0, &mut out);
        s.push(rec(0, 9, &a, t), 0, &mut out);
        s.poll(1000, &mut out);
        assert_eq!(offsets(&out), vec![(0, 8), (0, 9), (1, 5)]);
    }

    #[test]
    fn invalid_misrouted_and_mis_keyed_records() {
        let mut s = seq();
        let mut out = Vec::new();
        let mut bad = rec(0, 1, &acct_on(1), "2026-01-01T00:00:00Z");
        bad.value = b"{oops".to_vec();
        s.push(bad.clone(), 0, &mut out);
        let other = acct_on(3);
        s.push(rec(0, 2, &other, "2026-01-01T00:00:00Z"), 0, &mut out);
        s.push(rec(2, 3, &other, "2026-01-01T00:00:00Z"), 0, &mut out);
        let mut wrong_key = rec(0, 4, &acct_on(1), "2026-01-01T00:00:00Z");
        wrong_key.key = Some(b"someone-else".to_vec());
        s.push(wrong_key, 0, &mut out);
        assert!(
            matches!(&out[0], Decision::Dead { reason, record } if reason.starts_with("invalid JSON") && *record == bad)
        );
        assert!(matches!(&out[1], Decision::Reroute { to: 3, record } if record.offset == 2));
        assert!(
            matches!(&out[2], Decision::Dead { reason, .. } if reason.contains("re-routed record for partition 3"))
        );
        assert!(
            matches!(&out[3], Decision::Dead { reason, .. } if reason.contains("does not match account_id"))
        );
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn idle_partition_ticks_at_wall_clock_pace_from_the_newest_event() {
        let a = acct_on(1);
        let mut s = seq();
        let mut out = Vec::new();
        // No event yet: nothing to tick from.
        s.poll(5000, &mut out);
        assert!(out.is_empty());
        s.push(rec(0, 1, &a, "2026-01-01T00:00:00Z"), 10_000, &mut out);
        s.poll(10_500, &mut out);
        assert_eq!(out.len(), 1);
        out.clear();
        s.poll(11_000, &mut out);
        assert!(out.is_empty(), "not idle long enough");
        s.poll(11_500, &mut out);
        let t0 = crate::codec::timefmt::parse("2026-01-01T00:00:00Z").unwrap();
        assert_eq!(out, vec![Decision::Tick { time: t0 + 1000 }]);
        out.clear();
        s.poll(12_500, &mut out);
        assert_eq!(out, vec![Decision::Tick { time: t0 + 2000 }]);
    }
}
