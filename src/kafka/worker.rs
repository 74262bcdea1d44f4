//! The fold worker's decisions, as pure logic: it reads `vitals.sequenced[p]`
//! strictly in offset order, folds each record through the same
//! [`Partition`] as `vitals replay`, and turns signals into output records
//! that carry their provenance (partition, sequenced offset). On recovery
//! it is told the highest provenance offset already published on its
//! output partitions and suppresses everything at or below it — exactly
//! what was published before, because the fold is deterministic
//! (DESIGN.md, "Exactly-once without trusting broker transactions").
//!
//! The Kafka shell (consumer, idempotent producer, reading output tails)
//! drives it; this module does no I/O.

use crate::codec::{self, output, Format};
use crate::core::{AlertKind, Partition, Signal, Ts};

use super::topics;

/// Header names on `vitals.sequenced` and output records (SPEC §2).
pub mod headers {
    pub const FORMAT: &str = "vitals.format";
    pub const TICK: &str = "vitals.tick";
    pub const SOURCE_TOPIC: &str = "vitals.source.topic";
    pub const SOURCE_PARTITION: &str = "vitals.source.partition";
    pub const SOURCE_OFFSET: &str = "vitals.source.offset";
    pub const PROVENANCE_PARTITION: &str = "vitals.provenance.partition";
    pub const PROVENANCE_OFFSET: &str = "vitals.provenance.offset";
    pub const ERROR: &str = "vitals.error";
}

/// One record of `vitals.sequenced[p]`: an event (its original bytes and
/// format) or a clock tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sequenced {
    Event { format: Format, value: Vec<u8> },
    Tick { time: Ts },
}

/// An output record to produce, in order, to partition `p` of `topic`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRecord {
    pub topic: &'static str,
    pub key: String,
    pub value: Vec<u8>,
    /// Offset in `vitals.sequenced[p]` of the record that caused it.
    pub provenance: i64,
    /// For DLQ records: the reason (header `vitals.error`).
    pub error: Option<String>,
}

/// Folds one partition's sequenced log into output records.
pub struct FoldWorker {
    pub partition: u32,
    pub part: Partition,
    /// Highest provenance offset already published (outputs at or below
    /// it are suppressed), learned from the output topics' tails.
    published_up_to: Option<i64>,
    /// Next sequenced offset expected.
    next_offset: Option<i64>,
    signals: Vec<Signal>,
    pub suppressed: u64,
}

/// A sequenced record arrived out of order: the shell must seek.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sequenced offset {got} arrived, {expected} expected")]
pub struct OffsetGap {
    pub expected: i64,
    pub got: i64,
}

impl FoldWorker {
    pub fn new(partition: u32, part: Partition, published_up_to: Option<i64>) -> Self {
        FoldWorker {
            partition,
            part,
            published_up_to,
            next_offset: None,
            signals: Vec::new(),
            suppressed: 0,
        }
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
        let suppress = self.published_up_to.is_some_and(|m| offset <= m);
        let mut produced = Vec::new();
        match rec {
            Sequenced::Tick { time } => self.part.advance(*time, &mut self.signals),
            Sequenced::Event { format, value } => match codec::decode(*format, value) {
                Ok(ev) => {
                    self.part.apply(&ev, &mut self.signals);
                }
                Err(e) => produced.push(OutputRecord {
                    topic: topics::DLQ,
                    key: String::new(),
                    value: value.clone(),
                    provenance: offset,
                    error: Some(e.to_string()),
                }),
            },
        }
        for s in self.signals.drain(..) {
            let (topic, key, value) = match &s {
                Signal::Health(h) => (topics::HEALTH, h.account_id.clone(), output::health_json(h)),
                Signal::Alert(a) => (
                    match a.kind {
                        AlertKind::UpsellOpportunity => topics::ALERTS_UPSELL,
                        _ => topics::ALERTS_AT_RISK,
                    },
                    a.account_id.clone(),
                    output::alert_json(a),
                ),
            };
            produced.push(OutputRecord {
                topic,
                key,
                value,
                provenance: offset,
                error: None,
            });
        }
        if suppress {
            self.suppressed += produced.len() as u64;
        } else {
            out.extend(produced);
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
            })
            .collect();
        // A tick after the last event lets silent accounts' timers fire,
        // and one bad record goes to the DLQ.
        let last = evs.last().unwrap().time;
        v.insert(
            10,
            Sequenced::Event {
                format: Format::Json,
                value: b"{bad".to_vec(),
            },
        );
        v.push(Sequenced::Tick {
            time: last + 30 * 86_400_000,
        });
        v
    }

    fn worker(mark: Option<i64>) -> FoldWorker {
        FoldWorker::new(
            0,
            Partition::new(Arc::new(Model::new(ModelConfig::default()))),
            mark,
        )
    }

    fn run(w: &mut FoldWorker, log: &[Sequenced], from: usize) -> Vec<OutputRecord> {
        let mut out = Vec::new();
        for (i, r) in log.iter().enumerate().skip(from) {
            w.on_record(i as i64, r, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn outputs_equal_the_replay_fold_with_provenance() {
        let log = log();
        let out = run(&mut worker(None), &log, 0);
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
            }
            for s in sig.drain(..) {
                expected.push(match s {
                    Signal::Health(h) => output::health_json(&h),
                    Signal::Alert(a) => output::alert_json(&a),
                });
            }
        }
        let got: Vec<Vec<u8>> = out
            .iter()
            .filter(|o| o.topic != topics::DLQ)
            .map(|o| o.value.clone())
            .collect();
        assert_eq!(got, expected);
        let dlq: Vec<_> = out.iter().filter(|o| o.topic == topics::DLQ).collect();
        assert_eq!(dlq.len(), 1);
        assert_eq!(dlq[0].provenance, 10);
        assert!(dlq[0].error.as_deref().unwrap().starts_with("invalid JSON"));
        // Provenance never decreases.
        assert!(out.windows(2).all(|w| w[0].provenance <= w[1].provenance));
    }

    #[test]
    fn recovery_suppresses_exactly_what_was_published() {
        let log = log();
        let all = run(&mut worker(None), &log, 0);
        for crash_after in [0usize, 7, 500, log.len() / 2, log.len() - 1] {
            // Published before the crash: outputs of records ≤ crash_after.
            let mark = crash_after as i64;
            let published: Vec<_> = all
                .iter()
                .filter(|o| o.provenance <= mark)
                .cloned()
                .collect();
            // The restarted worker folds from the start (no snapshot yet)
            // and suppresses up to the mark.
            let mut w = worker(Some(mark));
            let rest = run(&mut w, &log, 0);
            let mut combined = published.clone();
            combined.extend(rest);
            assert_eq!(combined, all, "crash after {crash_after}");
            assert_eq!(w.suppressed as usize, published.len());
        }
    }

    #[test]
    fn an_offset_gap_is_refused() {
        let log = log();
        let mut w = worker(None);
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
