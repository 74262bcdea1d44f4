//! One pass over a log through several scorecards at once: each *lane* is
//! a `Partition` with its own model, fed the same decoded events, so
//! comparing models (or trying candidate thresholds) costs one decode.
//! Accounts are independent in the fold, so every lane sees each account
//! exactly as the service would.
//!
//! What a pass keeps: per lane, every `at_risk` alert and, at each
//! evaluation time, the score and components of every subscribed,
//! not-cancelled account; shared by all lanes (it does not depend on the
//! model), the log's subscription starts and cancellations, `alert.feedback`
//! verdicts and each account's segment.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::core::account::NEVER;
use crate::core::event::Verdict;
use crate::core::score::evaluate;
use crate::core::time::{Ts, MS_PER_DAY};
use crate::core::{AlertKind, Event, EventKind, Model, ModelConfig, Outcome, Partition, Signal};

/// An `at_risk` alert.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRec {
    /// The account's index (arrival order, the same in every lane).
    pub account: u32,
    pub time: Ts,
    pub alert_id: String,
}

/// An account's score at an evaluation time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Obs {
    pub account: u32,
    pub score: f64,
    pub components: [f64; 6],
}

/// What one model did over the log.
#[derive(Debug, Clone)]
pub struct LaneResult {
    pub model: String,
    pub alerts: Vec<AlertRec>,
    /// Per evaluation time (`Log::times` order).
    pub snaps: Vec<Vec<Obs>>,
}

/// An account as the log shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountInfo {
    pub id: Box<str>,
    /// Its segment at the end of the log, else its tier (what a segment
    /// scorecard is looked up by), else `"-"`.
    pub group: String,
    pub first_seen: Ts,
    /// `subscription.started` (true) and `subscription.cancelled` (false),
    /// in log order.
    pub subs: Vec<(Ts, bool)>,
}

impl AccountInfo {
    /// Cancellation times.
    pub fn cancels(&self) -> impl Iterator<Item = Ts> + '_ {
        self.subs.iter().filter(|s| !s.1).map(|s| s.0)
    }

    /// The first cancellation after `t`.
    pub fn cancel_after(&self, t: Ts) -> Option<Ts> {
        self.cancels().find(|&c| c > t)
    }

    /// Milliseconds of `[from, to]` during which the account existed and
    /// was not cancelled (from its first event; a cancellation ends a
    /// stretch, a later `subscription.started` opens the next).
    pub fn exposure(&self, from: Ts, to: Ts) -> i64 {
        let mut total = 0;
        let mut open = Some(self.first_seen);
        let mut add = |a: Ts, b: Ts| {
            let (a, b) = (a.max(from), b.min(to));
            if b > a {
                total += b - a;
            }
        };
        for &(t, started) in &self.subs {
            match (open, started) {
                (Some(s), false) => {
                    add(s, t);
                    open = None;
                }
                (None, true) => open = Some(t),
                _ => {}
            }
        }
        if let Some(s) = open {
            add(s, to);
        }
        total
    }
}

/// What a pass saw of the log itself (the same for every model).
#[derive(Debug, Clone, Default)]
pub struct Log {
    pub events: u64,
    pub first: Ts,
    pub last: Ts,
    /// Evaluation times snapshotted, ascending.
    pub times: Vec<Ts>,
    /// By arrival order.
    pub accounts: Vec<AccountInfo>,
    /// `at_risk` alert id → the latest verdict given on it.
    pub feedback: BTreeMap<String, Verdict>,
    /// Feedback events on `at_risk` alerts (all verdicts, repeats included).
    pub feedback_events: u64,
}

/// When to snapshot scores.
#[derive(Debug, Clone, Default)]
pub struct Schedule {
    /// Fixed times.
    pub at: Vec<Ts>,
    /// Days after the first event's day (UTC midnight).
    pub at_day: Vec<u32>,
    /// Every this long after the first event's day (UTC midnight); a time
    /// is kept when `time + keep_within` is not after the last event.
    pub every: Option<Ts>,
    pub keep_within: Ts,
}

struct Lane {
    part: Partition,
    alerts: Vec<AlertRec>,
    snaps: Vec<Vec<Obs>>,
}

impl Lane {
    /// Keeps the `at_risk` alerts among `out` (drained).
    fn collect(&mut self, out: &mut Vec<Signal>) {
        for s in out.drain(..) {
            if let Signal::Alert(a) = s {
                if a.kind == AlertKind::AtRisk {
                    if let Some(i) = self.part.account_index(&a.account_id) {
                        self.alerts.push(AlertRec {
                            account: i as u32,
                            time: a.time,
                            alert_id: a.alert_id,
                        });
                    }
                }
            }
        }
    }
}

/// A pass in progress: feed it events in log order with [`Pass::apply`],
/// then [`Pass::finish`].
pub struct Pass {
    lanes: Vec<Lane>,
    out: Vec<Signal>,
    schedule: Schedule,
    /// Resolved fixed times, ascending, and the next one due.
    fixed: Vec<Ts>,
    next_fixed: usize,
    next_every: Option<Ts>,
    every_taken: Vec<bool>,
    /// Events at or after this time are not folded.
    stop_at: Ts,
    log: Log,
    subs: BTreeMap<u32, Vec<(Ts, bool)>>,
    started: bool,
}

impl Pass {
    pub fn new(models: Vec<ModelConfig>, schedule: Schedule, stop_at: Option<Ts>) -> Self {
        Pass {
            lanes: models
                .into_iter()
                .map(|m| Lane {
                    part: Partition::new(Arc::new(Model::new(m))),
                    alerts: Vec::new(),
                    snaps: Vec::new(),
                })
                .collect(),
            out: Vec::new(),
            schedule,
            fixed: Vec::new(),
            next_fixed: 0,
            next_every: None,
            every_taken: Vec::new(),
            stop_at: stop_at.unwrap_or(Ts::MAX),
            log: Log::default(),
            subs: BTreeMap::new(),
            started: false,
        }
    }

    fn snapshot(&mut self, t: Ts, from_every: bool) {
        for lane in &mut self.lanes {
            let part = &lane.part;
            let obs = part
                .accounts
                .iter()
                .enumerate()
                .filter(|(_, a)| a.subscribed_at != NEVER && !a.is_cancelled() && a.first_seen <= t)
                .map(|(i, a)| {
                    let sc = &part.model.cards[a.scorecard as usize].1;
                    let e = evaluate(a, t.max(a.last_eval), sc, &part.model.cfg);
                    Obs {
                        account: i as u32,
                        score: e.score,
                        components: e.components,
                    }
                })
                .collect();
            lane.snaps.push(obs);
        }
        self.log.times.push(t);
        self.every_taken.push(from_every);
    }

    /// Snapshots every evaluation time not after `upto`.
    fn snapshots_until(&mut self, upto: Ts) {
        loop {
            let f = self.fixed.get(self.next_fixed).copied();
            let e = self.next_every;
            let (t, from_every) = match (f, e) {
                (Some(f), Some(e)) if e < f => (e, true),
                (Some(f), _) => (f, false),
                (None, Some(e)) => (e, true),
                (None, None) => return,
            };
            if t > upto {
                return;
            }
            if from_every {
                self.next_every = self.schedule.every.map(|d| t + d);
            } else {
                self.next_fixed += 1;
                if e == Some(t) {
                    // The same time from both: one snapshot.
                    self.next_every = self.schedule.every.map(|d| t + d);
                }
            }
            self.snapshot(t, from_every);
        }
    }

    /// Folds a line of the log.
    pub fn feed(&mut self, l: super::Line<'_, '_>) {
        match l {
            super::Line::Event(ev) => self.apply(ev),
            super::Line::Tick(t) => self.tick(t),
        }
    }

    /// Folds one event into every lane.
    pub fn apply(&mut self, ev: &Event<'_>) {
        if ev.time >= self.stop_at {
            return;
        }
        if !self.started {
            self.started = true;
            self.log.first = ev.time;
            self.log.last = ev.time;
            let day0 = ev.time.div_euclid(MS_PER_DAY) * MS_PER_DAY;
            let mut fixed = self.schedule.at.clone();
            fixed.extend(
                self.schedule
                    .at_day
                    .iter()
                    .map(|&d| day0 + d as Ts * MS_PER_DAY),
            );
            fixed.sort_unstable();
            fixed.dedup();
            self.fixed = fixed;
            self.next_every = self.schedule.every.filter(|&d| d > 0).map(|d| day0 + d);
            if self.next_every.is_none() {
                self.schedule.every = None;
            }
        }
        // Scores at T are taken before the first event at or after T.
        self.snapshots_until(ev.time);
        self.log.events += 1;
        self.log.last = self.log.last.max(ev.time);
        let mut outcome = Outcome::Duplicate;
        for lane in &mut self.lanes {
            outcome = lane.part.apply(ev, &mut self.out);
            lane.collect(&mut self.out);
        }
        if outcome == Outcome::Duplicate {
            return;
        }
        let sub = match ev.kind {
            EventKind::SubscriptionStarted { .. } => Some(true),
            EventKind::SubscriptionCancelled { .. } => Some(false),
            _ => None,
        };
        if let Some(started) = sub {
            let i = self
                .lanes
                .first()
                .and_then(|l| l.part.account_index(&ev.account_id));
            if let Some(i) = i {
                self.subs
                    .entry(i as u32)
                    .or_default()
                    .push((ev.time, started));
            }
        }
        if let EventKind::AlertFeedback {
            alert_id, verdict, ..
        } = &ev.kind
        {
            if AlertKind::of_alert_id(alert_id) == Some(AlertKind::AtRisk) {
                self.log.feedback_events += 1;
                self.log.feedback.insert(alert_id.to_string(), *verdict);
            }
        }
    }

    /// A clock tick (`{"tick": …}` line): time moves to `t`, timers fire.
    pub fn tick(&mut self, t: Ts) {
        if !self.started || t >= self.stop_at {
            return;
        }
        self.snapshots_until(t);
        for lane in &mut self.lanes {
            lane.part.advance(t, &mut self.out);
            lane.collect(&mut self.out);
        }
    }

    /// Ends the pass: fixed evaluation times after the last event are
    /// snapshotted with the state at the end; periodic ones whose horizon
    /// passes the last event are dropped.
    pub fn finish(mut self) -> (Log, Vec<LaneResult>) {
        if self.started {
            self.next_every = None;
            self.snapshots_until(Ts::MAX);
            let limit = self.log.last - self.schedule.keep_within;
            let keep: Vec<bool> = self
                .log
                .times
                .iter()
                .zip(&self.every_taken)
                .map(|(&t, &every)| !every || t <= limit)
                .collect();
            let mut k = keep.iter();
            self.log.times.retain(|_| *k.next().unwrap_or(&true));
            for lane in &mut self.lanes {
                let mut k = keep.iter();
                lane.snaps.retain(|_| *k.next().unwrap_or(&true));
            }
        }
        let mut subs = std::mem::take(&mut self.subs);
        if let Some(lane) = self.lanes.first() {
            let part = &lane.part;
            self.log.accounts = part
                .accounts
                .iter()
                .enumerate()
                .map(|(i, a)| AccountInfo {
                    id: (*a.id).into(),
                    group: part
                        .label(a.segment)
                        .or_else(|| part.label(a.tier))
                        .unwrap_or("-")
                        .to_string(),
                    first_seen: a.first_seen,
                    subs: subs.remove(&(i as u32)).unwrap_or_default(),
                })
                .collect();
        }
        let lanes = self
            .lanes
            .into_iter()
            .map(|l| LaneResult {
                model: l.part.model.id.to_string(),
                alerts: l.alerts,
                snaps: l.snaps,
            })
            .collect();
        (self.log, lanes)
    }
}

/// A finished pass: the log, the lanes, the count of invalid lines.
pub type PassResult = (Log, Vec<LaneResult>, u64);

/// Runs `models` over the log at `path` in one pass per thread: the models
/// are dealt to up to `threads` threads, each reading and decoding the log
/// itself (decoding is cheap next to folding several models). Lanes are
/// independent, so the results do not depend on the thread count. Returns
/// the log, the lanes in `models` order and the count of invalid lines.
pub fn run_lanes(
    path: &std::path::Path,
    models: Vec<ModelConfig>,
    schedule: &Schedule,
    stop_at: Option<Ts>,
    threads: usize,
) -> Result<PassResult, super::BacktestError> {
    let threads = threads.clamp(1, models.len().max(1));
    let per = models.len().div_ceil(threads).max(1);
    let mut chunks: Vec<Vec<ModelConfig>> = Vec::new();
    let mut models = models.into_iter().peekable();
    while models.peek().is_some() {
        chunks.push(models.by_ref().take(per).collect());
    }
    let one = |ms: Vec<ModelConfig>| {
        let mut pass = Pass::new(ms, schedule.clone(), stop_at);
        let invalid = super::read_log(path, |l| pass.feed(l))?;
        let (log, lanes) = pass.finish();
        Ok::<_, super::BacktestError>((log, lanes, invalid))
    };
    let results: Vec<Result<PassResult, super::BacktestError>> = if chunks.len() <= 1 {
        chunks.into_iter().map(one).collect()
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = chunks
                .into_iter()
                .map(|c| s.spawn(move || one(c)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(super::BacktestError::Invalid(
                            "a backtest thread panicked".into(),
                        ))
                    })
                })
                .collect()
        })
    };
    let mut log = None;
    let mut lanes = Vec::new();
    let mut invalid = 0;
    for r in results {
        let (l, ls, inv) = r?;
        if log.is_none() {
            log = Some(l);
            invalid = inv;
        }
        lanes.extend(ls);
    }
    Ok((log.unwrap_or_default(), lanes, invalid))
}
