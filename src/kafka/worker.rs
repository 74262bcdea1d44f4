//! The fold worker's decisions, as pure logic: it reads `vitals.sequenced[p]`
//! strictly in offset order, folds each event through the same
//! [`Partition`] as `vitals replay`, and turns signals — and the
//! sequencer's invalid and misrouted records — into output records that
//! carry their provenance (partition, sequenced offset, and the index among
//! that offset's outputs to the same topic).
//!
//! On recovery it is told, per output topic, the provenance of the last
//! record already there, and suppresses everything at or below it: exactly
//! what was published before, because the fold is deterministic and an
//! idempotent producer writes each partition's records in order without
//! gaps (DESIGN.md, "Exactly-once without trusting broker transactions").
//! Re-routed records are the exception: `vitals.repartition[q]` has many
//! writers, so the fold sends them again and the owning sequencer drops
//! what it already has by the origin mark ([`super::sequencer::Cursor`]).
//!
//! The Kafka shell drives it; this module does no I/O.

use crate::codec::{self, output, Format};
use crate::core::{AlertKind, Partition, Signal, Ts};

use super::sequencer::{Decision, Entry, SourceRecord};

/// Header names on `vitals.sequenced`, `vitals.repartition` and output
/// records (SPEC §2 for the provenance, source and error headers).
pub mod headers {
    pub const CURSOR: &str = "vitals.cursor";
    pub const FORMAT: &str = "vitals.format";
    pub const TICK: &str = "vitals.tick";
    pub const REROUTE: &str = "vitals.reroute";
    pub const SOURCE_TOPIC: &str = "vitals.source.topic";
    pub const SOURCE_PARTITION: &str = "vitals.source.partition";
    pub const SOURCE_OFFSET: &str = "vitals.source.offset";
    pub const PROVENANCE_PARTITION: &str = "vitals.provenance.partition";
    pub const PROVENANCE_OFFSET: &str = "vitals.provenance.offset";
    pub const PROVENANCE_INDEX: &str = "vitals.provenance.index";
    pub const SCORECARD: &str = "vitals.scorecard";
    pub const ERROR: &str = "vitals.error";
    /// Per-record input format (SPEC §1).
    pub const CONTENT_TYPE: &str = "content-type";
    pub const PROTOBUF: &str = "application/x-protobuf";
}

fn format_name(f: Format) -> &'static str {
    match f {
        Format::Json => "json",
        Format::Protobuf => "protobuf",
    }
}

fn parse_format(s: &str) -> Option<Format> {
    match s {
        "json" => Some(Format::Json),
        "protobuf" => Some(Format::Protobuf),
        _ => None,
    }
}

/// Where a record of `vitals.sequenced` came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRef {
    pub topic: String,
    pub partition: u32,
    pub offset: i64,
}

/// One record of `vitals.sequenced[p]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sequenced {
    /// An event owned by this partition (its original bytes and format).
    Event {
        format: Format,
        value: Vec<u8>,
        source: Option<SourceRef>,
    },
    /// Owned by partition `to`: forward to `vitals.repartition[to]`.
    Reroute {
        to: u32,
        format: Format,
        key: Option<Vec<u8>>,
        value: Vec<u8>,
        source: Option<SourceRef>,
    },
    /// Invalid: to the DLQ with the reason.
    Dead {
        reason: String,
        key: Option<Vec<u8>>,
        value: Vec<u8>,
        source: Option<SourceRef>,
    },
    /// A clock tick.
    Tick { time: Ts },
}

/// A `vitals.sequenced` record as the sequencer appends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequencedRecord {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

impl Sequenced {
    /// The sequenced entry for a sequencer decision; `source_topics` names
    /// the sources by index.
    pub fn from_decision(d: Decision, source_topics: &[String]) -> (Sequenced, String) {
        let source_of = |r: &SourceRecord| {
            Some(SourceRef {
                topic: source_topics
                    .get(r.source as usize)
                    .cloned()
                    .unwrap_or_default(),
                partition: r.partition,
                offset: r.offset,
            })
        };
        match d {
            Decision::Tick { time, cursor } => (Sequenced::Tick { time }, cursor.encode()),
            Decision::Append {
                entry,
                record,
                cursor,
            } => {
                let source = source_of(&record);
                let s = match entry {
                    Entry::Event { .. } => Sequenced::Event {
                        format: record.format,
                        value: record.value,
                        source,
                    },
                    Entry::Reroute { to } => Sequenced::Reroute {
                        to,
                        format: record.format,
                        key: record.key,
                        value: record.value,
                        source,
                    },
                    Entry::Dead { reason } => Sequenced::Dead {
                        reason,
                        key: record.key,
                        value: record.value,
                        source,
                    },
                };
                (s, cursor.encode())
            }
        }
    }

    /// The record to append to `vitals.sequenced`, with `cursor` (the
    /// encoded [`super::sequencer::Cursor`]) in its headers.
    pub fn to_record(&self, cursor: String) -> SequencedRecord {
        let mut headers = vec![(headers::CURSOR, cursor)];
        let source_headers = |s: &Option<SourceRef>, h: &mut Vec<(&'static str, String)>| {
            if let Some(s) = s {
                h.push((headers::SOURCE_TOPIC, s.topic.clone()));
                h.push((headers::SOURCE_PARTITION, s.partition.to_string()));
                h.push((headers::SOURCE_OFFSET, s.offset.to_string()));
            }
        };
        let (key, value) = match self {
            Sequenced::Tick { time } => {
                headers.push((headers::TICK, time.to_string()));
                (None, Vec::new())
            }
            Sequenced::Event {
                format,
                value,
                source,
            } => {
                headers.push((headers::FORMAT, format_name(*format).into()));
                source_headers(source, &mut headers);
                (None, value.clone())
            }
            Sequenced::Reroute {
                to,
                format,
                key,
                value,
                source,
            } => {
                headers.push((headers::FORMAT, format_name(*format).into()));
                headers.push((headers::REROUTE, to.to_string()));
                source_headers(source, &mut headers);
                (key.clone(), value.clone())
            }
            Sequenced::Dead {
                reason,
                key,
                value,
                source,
            } => {
                headers.push((headers::ERROR, reason.clone()));
                source_headers(source, &mut headers);
                (key.clone(), value.clone())
            }
        };
        SequencedRecord {
            key,
            value,
            headers,
        }
    }

    /// Reads a `vitals.sequenced` record back: its entry and cursor.
    pub fn parse(
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[(&str, &[u8])],
    ) -> Result<(Sequenced, Option<String>), String> {
        let get = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        let num = |name: &str| -> Result<Option<i64>, String> {
            get(name)
                .map(|v| {
                    v.parse()
                        .map_err(|_| format!("header {name}: bad number {v:?}"))
                })
                .transpose()
        };
        let cursor = get(headers::CURSOR);
        if let Some(t) = num(headers::TICK)? {
            return Ok((Sequenced::Tick { time: t }, cursor));
        }
        let source = match (
            get(headers::SOURCE_TOPIC),
            num(headers::SOURCE_PARTITION)?,
            num(headers::SOURCE_OFFSET)?,
        ) {
            (Some(topic), Some(p), Some(o)) => Some(SourceRef {
                topic,
                partition: u32::try_from(p)
                    .map_err(|_| format!("header {}: {p}", headers::SOURCE_PARTITION))?,
                offset: o,
            }),
            _ => None,
        };
        let key = key.map(<[u8]>::to_vec);
        if let Some(reason) = get(headers::ERROR) {
            return Ok((
                Sequenced::Dead {
                    reason,
                    key,
                    value: value.to_vec(),
                    source,
                },
                cursor,
            ));
        }
        let format = match get(headers::FORMAT) {
            None => Format::Json,
            Some(f) => {
                parse_format(&f).ok_or_else(|| format!("header {}: {f:?}", headers::FORMAT))?
            }
        };
        if let Some(to) = num(headers::REROUTE)? {
            let to = u32::try_from(to).map_err(|_| format!("header {}: {to}", headers::REROUTE))?;
            return Ok((
                Sequenced::Reroute {
                    to,
                    format,
                    key,
                    value: value.to_vec(),
                    source,
                },
                cursor,
            ));
        }
        Ok((
            Sequenced::Event {
                format,
                value: value.to_vec(),
                source,
            },
            cursor,
        ))
    }
}

/// The topics a fold writes (names come from config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OutTopic {
    Health = 0,
    AtRisk = 1,
    Upsell = 2,
    Dlq = 3,
    Repartition = 4,
    /// The shadow scorecard's health records and alerts.
    Shadow = 5,
}

impl OutTopic {
    /// The topics whose tails tell what is already published.
    pub const TRACKED: [OutTopic; 5] = [
        OutTopic::Health,
        OutTopic::AtRisk,
        OutTopic::Upsell,
        OutTopic::Dlq,
        OutTopic::Shadow,
    ];
}

/// Per tracked topic (in [`OutTopic::TRACKED`] order), the provenance of
/// the last record already published.
pub type Marks = [Option<(i64, u32)>; 5];

/// Output encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutFormat {
    #[default]
    Json,
    Protobuf,
}

/// The topic a signal is published to.
fn topic_of(s: &Signal) -> OutTopic {
    match s {
        Signal::Health(_) => OutTopic::Health,
        Signal::Alert(a) => match a.kind {
            AlertKind::UpsellOpportunity => OutTopic::Upsell,
            _ => OutTopic::AtRisk,
        },
    }
}

impl OutFormat {
    /// A signal's key and encoded value.
    fn encode(self, s: &Signal) -> (&str, Vec<u8>) {
        match (s, self) {
            (Signal::Health(h), OutFormat::Json) => (&h.account_id, output::health_json(h)),
            (Signal::Health(h), OutFormat::Protobuf) => (&h.account_id, output::health_proto(h)),
            (Signal::Alert(a), OutFormat::Json) => (&a.account_id, output::alert_json(a)),
            (Signal::Alert(a), OutFormat::Protobuf) => (&a.account_id, output::alert_proto(a)),
        }
    }
}

/// An output record to produce, in order, to `partition` of `topic`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRecord {
    pub topic: OutTopic,
    pub partition: u32,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    /// Offset in `vitals.sequenced[p]` of the record that caused it.
    pub provenance: i64,
    /// Index among the outputs of that offset to the same topic.
    pub index: u32,
    /// Headers besides provenance (DLQ: error and source; re-route:
    /// format).
    pub headers: Vec<(&'static str, String)>,
}

impl OutputRecord {
    /// Every header of the record, provenance included.
    pub fn all_headers(&self, partition: u32) -> Vec<(&'static str, String)> {
        let mut h = vec![
            (headers::PROVENANCE_PARTITION, partition.to_string()),
            (headers::PROVENANCE_OFFSET, self.provenance.to_string()),
            (headers::PROVENANCE_INDEX, self.index.to_string()),
        ];
        h.extend(self.headers.iter().cloned());
        h
    }
}

/// The provenance of the last record on an output partition, from its
/// headers (`None` when it has none: not written by a fold).
pub fn provenance_of(headers: &[(&str, &[u8])]) -> Option<(i64, u32)> {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    };
    let offset = get(headers::PROVENANCE_OFFSET)?.parse().ok()?;
    let index = get(headers::PROVENANCE_INDEX).map_or(Some(0), |s| s.parse().ok())?;
    Some((offset, index))
}

/// Folds one partition's sequenced log into output records.
pub struct FoldWorker {
    pub partition: u32,
    pub part: Partition,
    pub format: OutFormat,
    /// A shadow scorecard folding the same records: its health and alerts
    /// go to [`OutTopic::Shadow`] only.
    pub shadow: Option<Partition>,
    /// Per topic (`OutTopic as usize`), the provenance of the last record
    /// already published (outputs at or below it are suppressed).
    published: [Option<(i64, u32)>; 6],
    /// Next sequenced offset expected.
    next_offset: Option<i64>,
    /// Live, then shadow: the scorecard of the last published health
    /// record when it is not this worker's, and that record's provenance
    /// offset — the change is noted in the partition once the fold passes
    /// that offset (see [`FoldWorker::published_scorecards`]).
    pending_changes: [Option<(String, i64)>; 2],
    signals: Vec<Signal>,
    pub suppressed: u64,
    /// Accounts that events touched since the shell last took them.
    pub touched: Vec<String>,
    /// Scores of the health records derived since the shell last took
    /// them (the histogram of score evaluations).
    pub scores: Vec<f64>,
    /// Events by source topic, then (type, outcome), since the shell last
    /// took them (for metrics).
    pub tally: std::collections::HashMap<
        String,
        std::collections::HashMap<(&'static str, &'static str), u64>,
    >,
}

/// A sequenced record arrived out of order: the shell must seek.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sequenced offset {got} arrived, {expected} expected")]
pub struct OffsetGap {
    pub expected: i64,
    pub got: i64,
}

impl FoldWorker {
    /// `published[t]`: the provenance of the last record on tracked topic
    /// `OutTopic::TRACKED[t]`, partition `partition`.
    pub fn new(partition: u32, part: Partition, marks: Marks) -> Self {
        let mut published = [None; 6];
        for (t, m) in OutTopic::TRACKED.iter().zip(marks) {
            published[*t as usize] = m;
        }
        FoldWorker {
            partition,
            part,
            format: OutFormat::Json,
            shadow: None,
            published,
            next_offset: None,
            pending_changes: [None, None],
            signals: Vec::new(),
            suppressed: 0,
            touched: Vec::new(),
            scores: Vec::new(),
            tally: Default::default(),
        }
    }

    /// A worker continuing from a snapshot of its state taken before
    /// sequenced offset `next_offset`.
    pub fn resume_at(partition: u32, part: Partition, published: Marks, next_offset: i64) -> Self {
        let mut w = FoldWorker::new(partition, part, published);
        w.next_offset = Some(next_offset);
        w
    }

    /// Tells the worker which scorecards made the last records already
    /// published on the health topic (`live`) and the shadow topic, from
    /// their `vitals.scorecard` header. When one differs from the model
    /// now folding (the config changed since), the partition notes the
    /// change at the watermark of the first record after it
    /// ([`Partition::note_scorecard_change`]): before it, what downstream
    /// has was scored by the old scorecard; from it, by the new one.
    pub fn published_scorecards(&mut self, live: Option<String>, shadow: Option<String>) {
        let mark = |t: OutTopic| self.published[t as usize].map(|m| m.0);
        self.pending_changes = [
            live.zip(mark(OutTopic::Health)),
            shadow.zip(mark(OutTopic::Shadow)),
        ];
    }

    fn note_scorecard_changes(&mut self, offset: i64) {
        for (i, pending) in self.pending_changes.iter_mut().enumerate() {
            let Some((from, _)) = pending.take_if(|(_, last)| offset > *last) else {
                continue;
            };
            match i {
                0 => self.part.note_scorecard_change(&from),
                _ => {
                    if let Some(sh) = &mut self.shadow {
                        sh.note_scorecard_change(&from);
                    }
                }
            }
        }
    }

    /// The next sequenced offset this worker expects.
    pub fn next_offset(&self) -> Option<i64> {
        self.next_offset
    }

    /// Folds the record at `offset` and appends the outputs to publish.
    pub fn on_record(
        &mut self,
        offset: i64,
        rec: &Sequenced,
        out: &mut Vec<OutputRecord>,
    ) -> Result<(), OffsetGap> {
        if let Some(expected) = self.next_offset {
            if offset != expected {
                return Err(OffsetGap {
                    expected,
                    got: offset,
                });
            }
        }
        self.next_offset = Some(offset + 1);
        self.note_scorecard_changes(offset);
        let start = out.len();
        let p = self.partition;
        let dead =
            |reason: &str, key: &Option<Vec<u8>>, value: &[u8], source: &Option<SourceRef>| {
                let mut headers = vec![(headers::ERROR, reason.to_string())];
                if let Some(s) = source {
                    headers.push((headers::SOURCE_TOPIC, s.topic.clone()));
                    headers.push((headers::SOURCE_PARTITION, s.partition.to_string()));
                    headers.push((headers::SOURCE_OFFSET, s.offset.to_string()));
                }
                OutputRecord {
                    topic: OutTopic::Dlq,
                    partition: p,
                    key: key.clone(),
                    value: value.to_vec(),
                    provenance: offset,
                    index: 0,
                    headers,
                }
            };
        let mut shadow_signals = Vec::new();
        match rec {
            Sequenced::Tick { time } => {
                self.part.advance(*time, &mut self.signals);
                if let Some(sh) = &mut self.shadow {
                    sh.advance(*time, &mut shadow_signals);
                }
            }
            Sequenced::Event {
                format,
                value,
                source,
            } => match codec::decode(*format, value) {
                Ok(ev) => {
                    let outcome = self.part.apply(&ev, &mut self.signals);
                    if let Some(sh) = &mut self.shadow {
                        sh.apply(&ev, &mut shadow_signals);
                    }
                    let topic = source.as_ref().map_or("", |s| s.topic.as_str());
                    // The topic is copied only the first time it is seen.
                    let kind = (ev.type_name(), outcome.as_str());
                    if let Some(kinds) = self.tally.get_mut(topic) {
                        *kinds.entry(kind).or_default() += 1;
                    } else {
                        self.tally.insert(topic.to_string(), [(kind, 1)].into());
                    }
                    if self.touched.last().map(String::as_str) != Some(&*ev.account_id) {
                        self.touched.push(ev.account_id.to_string());
                    }
                }
                // The sequencer validated it; a record that fails now was
                // written by something else.
                Err(e) => out.push(dead(&e.to_string(), &None, value, source)),
            },
            Sequenced::Dead {
                reason,
                key,
                value,
                source,
            } => out.push(dead(reason, key, value, source)),
            Sequenced::Reroute {
                to,
                format,
                key,
                value,
                ..
            } => out.push(OutputRecord {
                topic: OutTopic::Repartition,
                partition: *to,
                key: key.clone(),
                value: value.clone(),
                provenance: offset,
                index: 0,
                headers: vec![(headers::FORMAT, format_name(*format).into())],
            }),
        }
        // Each output is numbered per topic; one at or below the topic's
        // mark was published before (recovery) and is dropped — before it
        // is encoded, so catching up does not serialize what it discards.
        let mut next_index = [0u32; 6];
        let (published, suppressed) = (&self.published, &mut self.suppressed);
        let mut admit = |t: OutTopic| {
            let index = next_index[t as usize];
            next_index[t as usize] += 1;
            let done = published
                .get(t as usize)
                .copied()
                .flatten()
                .is_some_and(|mark| (offset, index) <= mark);
            *suppressed += u64::from(done);
            (!done).then_some(index)
        };
        // The record the match above added, if any (DLQ or re-route).
        let mut kept = start;
        for i in start..out.len() {
            if let Some(index) = admit(out[i].topic) {
                out[i].index = index;
                out.swap(kept, i);
                kept += 1;
            }
        }
        out.truncate(kept);
        let record = |topic, index, key: &str, value, scorecard: &str| OutputRecord {
            topic,
            partition: p,
            key: Some(key.as_bytes().to_vec()),
            value,
            provenance: offset,
            index,
            headers: vec![(headers::SCORECARD, scorecard.to_string())],
        };
        let scorecard = &*self.part.model.id;
        for s in self.signals.drain(..) {
            if let Signal::Health(h) = &s {
                self.scores.push(h.score);
            }
            let topic = topic_of(&s);
            if let Some(index) = admit(topic) {
                let (key, value) = self.format.encode(&s);
                out.push(record(topic, index, key, value, scorecard));
            }
        }
        if let Some(sh) = &self.shadow {
            for s in shadow_signals {
                if let Some(index) = admit(OutTopic::Shadow) {
                    let (key, value) = self.format.encode(&s);
                    out.push(record(OutTopic::Shadow, index, key, value, &sh.model.id));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::core::{Model, ModelConfig};
    use crate::simulate::{generate, SimOptions};

    fn log() -> Vec<Sequenced> {
        let evs = generate(&SimOptions {
            accounts: 8,
            days: 90,
            seed: 21,
            ..Default::default()
        });
        let mut v: Vec<Sequenced> = evs
            .iter()
            .map(|e| Sequenced::Event {
                format: Format::Json,
                value: crate::codec::json::encode(e),
                source: None,
            })
            .collect();
        // A tick after the last event lets silent accounts' timers fire;
        // one bad record goes to the DLQ and one to another partition.
        let last = evs.last().unwrap().time;
        v.insert(
            10,
            Sequenced::Dead {
                reason: "invalid JSON: oops".into(),
                key: Some(b"k".to_vec()),
                value: b"{bad".to_vec(),
                source: Some(SourceRef {
                    topic: "usage".into(),
                    partition: 0,
                    offset: 77,
                }),
            },
        );
        v.insert(
            20,
            Sequenced::Reroute {
                to: 3,
                format: Format::Json,
                key: Some(b"k".to_vec()),
                value: b"{}".to_vec(),
                source: None,
            },
        );
        v.push(Sequenced::Tick {
            time: last + 30 * 86_400_000,
        });
        v
    }

    fn worker(marks: Marks) -> FoldWorker {
        FoldWorker::new(
            0,
            Partition::new(Arc::new(Model::new(ModelConfig::default()))),
            marks,
        )
    }

    fn run(w: &mut FoldWorker, log: &[Sequenced], from: usize) -> Vec<OutputRecord> {
        let mut out = Vec::new();
        for (i, r) in log.iter().enumerate().skip(from) {
            w.on_record(i as i64, r, &mut out).unwrap();
        }
        out
    }

    /// A restart with a changed config rebuilds the fold with the new
    /// scorecard; the change is marked at the watermark of the last record
    /// whose health output downstream already has (scored by the old one),
    /// and the state round trip keeps the mark.
    #[test]
    fn a_config_change_is_marked_where_published_outputs_end() {
        let log = log();
        let old = run(&mut worker([None; 5]), &log, 0);
        let old_id = Model::new(ModelConfig::default()).id.to_string();
        let health: Vec<_> = old.iter().filter(|o| o.topic == OutTopic::Health).collect();
        let last = health[health.len() / 2];
        let mut marks = [None; 5];
        marks[0] = Some((last.provenance, last.index));
        let new_model = Arc::new(Model::new(ModelConfig {
            version: "v2".into(),
            ..Default::default()
        }));
        let mut w = FoldWorker::new(0, Partition::new(Arc::clone(&new_model)), marks);
        w.published_scorecards(Some(old_id.clone()), None);
        // The watermark after the last record already published.
        let mut expected_at = None;
        let mut out = Vec::new();
        for (i, r) in log.iter().enumerate() {
            w.on_record(i as i64, r, &mut out).unwrap();
            if i as i64 == last.provenance {
                expected_at = Some(w.part.max_time);
                assert!(
                    w.part.scorecard_changes.is_empty(),
                    "not before it is passed"
                );
            }
        }
        assert_eq!(
            w.part.scorecard_changes,
            vec![crate::core::ScorecardChange {
                at: expected_at.unwrap(),
                from: old_id.as_str().into(),
                to: Arc::clone(&new_model.id),
            }]
        );
        // Published by the new scorecard: everything after the mark.
        assert!(out
            .iter()
            .filter(|o| o.topic == OutTopic::Health)
            .all(|o| o.provenance > last.provenance
                || (o.provenance, o.index) > (last.provenance, last.index)));
        let bytes = crate::codec::state::encode(&w.part);
        let back = crate::codec::state::decode(&bytes, Arc::clone(&new_model)).unwrap();
        assert_eq!(back.scorecard_changes, w.part.scorecard_changes);
        // Readable whatever model folded it (a refused snapshot's marks).
        assert_eq!(
            crate::codec::state::scorecard_changes(&bytes).unwrap(),
            w.part.scorecard_changes
        );
        // The same scorecard again: nothing to mark.
        let mut same = worker(marks);
        same.published_scorecards(Some(old_id), None);
        run(&mut same, &log, 0);
        assert!(same.part.scorecard_changes.is_empty());
    }

    #[test]
    fn outputs_equal_the_replay_fold_with_provenance() {
        let log = log();
        let out = run(&mut worker([None; 5]), &log, 0);
        // The same fold as replay: health and alerts in order.
        let mut p = Partition::new(Arc::new(Model::new(ModelConfig::default())));
        let mut sig = Vec::new();
        let mut expected = Vec::new();
        for r in &log {
            match r {
                Sequenced::Tick { time } => p.advance(*time, &mut sig),
                Sequenced::Event { value, .. } => {
                    if let Ok(e) = crate::codec::json::decode(value) {
                        p.apply(&e, &mut sig);
                    }
                }
                _ => {}
            }
            for s in sig.drain(..) {
                expected.push(match s {
                    Signal::Health(h) => output::health_json(&h),
                    Signal::Alert(a) => output::alert_json(&a),
                });
            }
        }
        let side = |t: OutTopic| out.iter().filter(move |o| o.topic == t);
        let got: Vec<Vec<u8>> = out
            .iter()
            .filter(|o| o.topic < OutTopic::Dlq)
            .map(|o| o.value.clone())
            .collect();
        assert_eq!(got, expected);
        let dlq: Vec<_> = side(OutTopic::Dlq).collect();
        assert_eq!(dlq.len(), 1);
        assert_eq!(dlq[0].provenance, 10);
        assert_eq!(dlq[0].value, b"{bad");
        assert_eq!(
            dlq[0].all_headers(0),
            vec![
                (headers::PROVENANCE_PARTITION, "0".to_string()),
                (headers::PROVENANCE_OFFSET, "10".into()),
                (headers::PROVENANCE_INDEX, "0".into()),
                (headers::ERROR, "invalid JSON: oops".into()),
                (headers::SOURCE_TOPIC, "usage".into()),
                (headers::SOURCE_PARTITION, "0".into()),
                (headers::SOURCE_OFFSET, "77".into()),
            ]
        );
        let rr: Vec<_> = side(OutTopic::Repartition).collect();
        assert_eq!((rr.len(), rr[0].partition, rr[0].provenance), (1, 3, 20));
        // Provenance never decreases; indexes count per topic and offset.
        assert!(out.windows(2).all(|w| w[0].provenance <= w[1].provenance));
        let last_tick: Vec<_> = out
            .iter()
            .filter(|o| o.provenance == log.len() as i64 - 1 && o.topic == OutTopic::Health)
            .map(|o| o.index)
            .collect();
        assert!(
            last_tick.len() > 1,
            "the final tick re-scores several accounts"
        );
        assert_eq!(last_tick, (0..last_tick.len() as u32).collect::<Vec<_>>());
    }

    #[test]
    fn recovery_suppresses_exactly_what_was_published() {
        let log = log();
        let all = run(&mut worker([None; 5]), &log, 0);
        // A crash after any prefix of each topic's records (topics are
        // delivered independently), including in the middle of one
        // offset's outputs.
        let n = all.len();
        for cut in [0usize, 1, 7, n / 3, n / 2, n - 2, n - 1] {
            let mut marks = [None; 5];
            let mut published = Vec::new();
            for (t, topic) in OutTopic::TRACKED.iter().enumerate() {
                let mine: Vec<_> = all.iter().filter(|o| o.topic == *topic).collect();
                let k = (cut * (t + 1)).min(mine.len());
                if k > 0 {
                    marks[t] = Some((mine[k - 1].provenance, mine[k - 1].index));
                }
                published.extend(mine[..k].iter().map(|o| (*o).clone()));
            }
            let mut w = worker(marks);
            let rest = run(&mut w, &log, 0);
            for topic in OutTopic::TRACKED {
                let combined: Vec<_> = published
                    .iter()
                    .chain(&rest)
                    .filter(|o| o.topic == topic)
                    .collect();
                let want: Vec<_> = all.iter().filter(|o| o.topic == topic).collect();
                assert_eq!(combined, want, "cut {cut}, {topic:?}");
            }
            // Re-routes are always sent again (the owner drops them).
            assert_eq!(
                rest.iter()
                    .filter(|o| o.topic == OutTopic::Repartition)
                    .count(),
                1
            );
            assert_eq!(w.suppressed as usize, published.len());
        }
    }

    #[test]
    fn sequenced_records_round_trip_through_headers() {
        for s in log()
            .into_iter()
            .take(25)
            .chain([Sequenced::Tick { time: 5 }])
        {
            let r = s.to_record("1,2;3;".into());
            let h: Vec<(&str, &[u8])> = r.headers.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
            let (back, cursor) = Sequenced::parse(r.key.as_deref(), &r.value, &h).unwrap();
            assert_eq!(back, s);
            assert_eq!(cursor.as_deref(), Some("1,2;3;"));
        }
        let bad: Vec<(&str, &[u8])> = vec![(headers::TICK, b"x")];
        assert!(Sequenced::parse(None, b"", &bad).is_err());
    }

    #[test]
    fn an_offset_gap_is_refused() {
        let log = log();
        let mut w = worker([None; 5]);
        let mut out = Vec::new();
        w.on_record(5, &log[0], &mut out).unwrap();
        assert_eq!(
            w.on_record(7, &log[1], &mut out),
            Err(OffsetGap {
                expected: 6,
                got: 7
            })
        );
    }
}
