//! The fold: one partition's accounts, event-time timers, duplicate memory
//! and alert rules. `Partition::apply` takes an event and returns (into
//! `out`) the signals it caused; `Partition::advance` moves time for a
//! clock tick. Pure and deterministic: the same sequence of calls gives the
//! same signals and state, byte for byte.
//!
//! The fold also keeps the partition's portfolio analytics
//! ([`Portfolio`], by each account's change of contribution and the
//! subscription events' monthly flows) and intervention observations
//! ([`Interventions`], opened at `cs.touchpoint`, resolved as the watermark
//! passes their horizons).
//!
//! Ordering rules (docs/MODEL.md, "Time"):
//! - An account is scored at `max(event time, its last scoring time)`.
//! - The partition's watermark is the newest event time minus the allowed
//!   lateness. An event older than the watermark is *late*: still applied
//!   (its facts land in the windows that still hold its time) and counted.
//! - Each account has one pending timer. It fires when the watermark passes
//!   it, or just before that account's next event if that is later than
//!   the timer — so an account's outputs do not depend on how other
//!   accounts' events interleave with its own, unless events are late.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use hashbrown::{HashMap, HashTable};

use super::account::{hash64, Account, AppliedLabels, LimitHits, Override, Published, NEVER};
use super::accounts::Accounts;
use super::config::{ModelConfig, Scorecard};
use super::cow_deque::CowDeque;
use super::event::{Band, Event, EventKind, Verdict, TYPE_NAMES};
use super::interventions::Interventions;
use super::monitor::Monitor;
use super::portfolio::{Contribution, Portfolio, SegmentSums};
use super::score::{self, evaluate, next_band, round1, Evaluation, Factor};
use super::signal::{Alert, AlertKind, CausedBy, Health, OverrideView, Signal, UpsellSignal};
use super::time::{day_of, Ts, MS_PER_DAY, MS_PER_HOUR};

/// What happened to an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    Applied,
    /// Applied, but older than the watermark.
    Late,
    /// A repeated id for the same account: ignored.
    Duplicate,
}

impl Outcome {
    pub const ALL: [Outcome; 3] = [Outcome::Applied, Outcome::Late, Outcome::Duplicate];
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Late => "late",
            Outcome::Duplicate => "duplicate",
        }
    }
}

/// Counters kept by the fold, for metrics and summaries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events by type (index into `TYPE_NAMES`) and outcome.
    pub events: [[u64; 3]; TYPE_NAMES.len()],
    pub alerts: [u64; 3],
    /// Feedback by alert kind (`AlertKind` order, then unknown) and verdict.
    pub feedback: [[u64; 3]; 4],
    pub health_published: u64,
    pub timers_fired: u64,
    pub limits: LimitHits,
    pub dedup_forgotten_early: u64,
    pub at_risk_suppressed_by_cooldown: u64,
    /// Usage events applied without re-scoring (they could not change it).
    pub rescore_skipped: u64,
}

impl Stats {
    /// Measured precision of an alert kind from feedback: verdicts `useful`
    /// and `already_known` count as correct, `false_positive` as wrong.
    pub fn precision(&self, kind: AlertKind) -> Option<f64> {
        let f = self.feedback[kind as usize];
        let total = f[0] + f[1] + f[2];
        (total > 0).then(|| (f[0] + f[2]) as f64 / total as f64)
    }
}

/// Interned short strings (segment, tier, owner, plan). Index 0 = none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels {
    pub names: Vec<Box<str>>,
    index: HashMap<Box<str>, u16>,
}

impl Labels {
    pub fn get(&self, i: u16) -> Option<&str> {
        if i == 0 {
            None
        } else {
            self.names.get(i as usize - 1).map(|s| &**s)
        }
    }

    pub fn intern(&mut self, s: &str, max: u32) -> Option<u16> {
        if let Some(&i) = self.index.get(s) {
            return Some(i);
        }
        if self.names.len() >= max as usize {
            return None;
        }
        self.names.push(s.into());
        let i = self.names.len() as u16;
        self.index.insert(s.into(), i);
        Some(i)
    }

    pub fn from_names(names: Vec<Box<str>>) -> Self {
        let index = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), (i + 1) as u16))
            .collect();
        Labels { names, index }
    }
}

/// Remembered event ids: `(hash of account id and event id)` with event
/// time, forgotten when the watermark passes `time + window`, or oldest
/// first beyond the cap.
///
/// `order` is the memory (what a snapshot holds); `index` finds a key in
/// it. The index is a hash table of positions, not of keys: each entry is
/// the key's sequence number (keys forgotten before it plus its place in
/// `order`) modulo 2³², hashed by the key itself (already an xxh3 hash).
/// Four bytes a slot instead of eight: the fold's most randomly accessed
/// table shrinks (0.64 MB instead of 1.15 MB for the fold benchmark's 42k
/// ids), and cache misses are most of the fold's time. A lookup reads
/// `order` only on a 7-bit tag match.
///
/// Forgetting the oldest key does not look it up in `index` (that was a
/// cache miss per event, ~4% of the fold): its entry goes *stale* — its
/// sequence number is no longer in `order`, so no lookup matches it — and
/// stale entries are removed together by one sequential sweep of the
/// table once they reach half the keys (at least 4,096), and before the
/// table would grow (growing rehashes every entry, and a stale one has no
/// key to be rehashed by). The table so holds at most 1.5× the keys plus
/// 4,096, which at the default cap of 1M ids is the same table size (2²¹
/// slots) as removing each entry at once.
#[derive(Debug, Clone, Default)]
pub struct Dedup {
    /// Shared in chunks, so a snapshot's copy costs microseconds.
    pub order: CowDeque<(u64, Ts)>,
    index: HashTable<u32>,
    /// Keys forgotten so far, modulo 2³²: the sequence number of
    /// `order[0]`. `order` never holds more than 2³² keys (the cap is a
    /// `u32`, and it is enforced right after each insertion), so the
    /// sequence numbers in it are distinct modulo 2³².
    forgotten: u32,
    /// Entries of `index` whose key was forgotten and that no sweep has
    /// removed yet. Swept long before `forgotten` could wrap around to
    /// them.
    stale: u32,
    /// Sweeps so far (for tests).
    sweeps: u64,
}

impl PartialEq for Dedup {
    fn eq(&self, other: &Self) -> bool {
        self.order == other.order
    }
}

impl Dedup {
    /// The memory restored from a snapshot's `(key, time)` list, oldest
    /// first.
    pub fn from_order(order: CowDeque<(u64, Ts)>) -> Self {
        let mut d = Dedup {
            order,
            index: HashTable::new(),
            forgotten: 0,
            stale: 0,
            sweeps: 0,
        };
        d.index.reserve(d.order.len(), |_| 0);
        let order = &d.order;
        for (i, &(k, _)) in order.iter().enumerate() {
            d.index
                .insert_unique(k, i as u32, |&s| Self::at(order, 0, s).unwrap_or(0));
        }
        d
    }

    /// The memory as it is, without its index: for encoding only (see
    /// [`Partition::snapshot_copy`]).
    fn copy_for_snapshot(&self) -> Self {
        Dedup {
            order: self.order.clone(),
            index: HashTable::new(),
            forgotten: 0,
            stale: 0,
            sweeps: 0,
        }
    }

    /// The key with sequence number `seq` (0 if none: never the case
    /// while `order` and `index` agree, and no reason to panic if not).
    fn at(order: &CowDeque<(u64, Ts)>, forgotten: u32, seq: u32) -> Option<u64> {
        order.get(seq.wrapping_sub(forgotten) as usize).map(|e| e.0)
    }

    /// Remembers `key` at the back; false (and nothing changes) if it is
    /// already remembered.
    fn insert(&mut self, key: u64, time: Ts) -> bool {
        if self.stale > 0 && self.index.len() >= self.index.capacity() {
            self.sweep();
            // The sweep may leave tombstones that give no room back: make
            // room for as many stale entries as the next sweep allows, so
            // the table is rehashed (or grown) now, with only live
            // entries, instead of swept again a few keys later.
            let (order, forgotten) = (&self.order, self.forgotten);
            self.index.reserve((order.len() / 2).max(4096) + 1, |&s| {
                Self::at(order, forgotten, s).unwrap_or(0)
            });
        }
        let (order, forgotten) = (&self.order, self.forgotten);
        let entry = self.index.entry(
            key,
            |&s| Self::at(order, forgotten, s) == Some(key),
            |&s| Self::at(order, forgotten, s).unwrap_or(0),
        );
        match entry {
            hashbrown::hash_table::Entry::Occupied(_) => false,
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert(forgotten.wrapping_add(order.len() as u32));
                self.order.push_back((key, time));
                true
            }
        }
    }

    /// Forgets the oldest key (its index entry goes stale).
    fn pop_front(&mut self) {
        if self.order.is_empty() {
            return;
        }
        self.order.pop_front();
        self.forgotten = self.forgotten.wrapping_add(1);
        self.stale += 1;
        if self.stale as usize > (self.order.len() / 2).max(4096) {
            self.sweep();
        }
    }

    /// Removes the stale entries from the index: those whose sequence
    /// number is no longer in `order`.
    fn sweep(&mut self) {
        let (live, forgotten) = (self.order.len(), self.forgotten);
        self.index
            .retain(|s| (s.wrapping_sub(forgotten) as usize) < live);
        self.stale = 0;
        self.sweeps += 1;
    }
}

/// The resolved model: scorecards by index and the version string.
#[derive(Debug, Clone)]
pub struct Model {
    pub cfg: ModelConfig,
    /// 0 = default, then `cfg.segments` in name order.
    pub cards: Vec<(String, Scorecard)>,
    /// `version+hash` of the whole model config.
    pub id: Arc<str>,
}

impl Model {
    pub fn new(cfg: ModelConfig) -> Self {
        let mut cards = vec![("default".to_string(), cfg.scorecard)];
        for (name, patch) in &cfg.segments {
            cards.push((name.clone(), patch.apply(&cfg.scorecard)));
        }
        // Debug output of the config is deterministic (ordered maps, fixed
        // float formatting), so its hash identifies the scoring config.
        let h = hash64(&format!("{cfg:?}"));
        let id = format!("{}+{:08x}", cfg.version, (h >> 32) as u32).into();
        Model { cfg, cards, id }
    }

    fn card_for(&self, segment: Option<&str>, tier: Option<&str>) -> u16 {
        let find = |n: Option<&str>| {
            n.and_then(|n| self.cards.iter().skip(1).position(|(c, _)| c == n))
                .map(|i| (i + 1) as u16)
        };
        find(segment).or_else(|| find(tier)).unwrap_or(0)
    }
}

/// A change of the scoring config the fold saw: records up to `at` (the
/// watermark then) were scored by `from`, later ones by `to` (model ids,
/// `version+hash`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScorecardChange {
    pub at: Ts,
    pub from: Arc<str>,
    pub to: Arc<str>,
}

/// How many scorecard changes a partition remembers (newest kept).
pub const SCORECARD_CHANGES_KEPT: usize = 16;

/// One partition's state: everything the fold depends on.
#[derive(Debug, Clone)]
pub struct Partition {
    pub model: Arc<Model>,
    pub accounts: Accounts,
    index: HashTable<u32>,
    pub labels: Labels,
    pub dedup: Dedup,
    timers: BinaryHeap<Reverse<(Ts, u32)>>,
    queued: Vec<Ts>,
    /// Newest event time seen (or ticked to).
    pub max_time: Ts,
    pub stats: Stats,
    /// Portfolio analytics, kept as events are applied.
    pub portfolio: Portfolio,
    /// Touchpoint observations and their outcomes.
    pub interventions: Interventions,
    /// Live model monitoring: cohorts and their churn labels.
    pub monitor: Monitor,
    /// Scoring-config changes seen by this partition's fold, oldest first
    /// (at most [`SCORECARD_CHANGES_KEPT`]): the marks in every account's
    /// score history.
    pub scorecard_changes: Vec<ScorecardChange>,
    /// Score on every event, even usage that cannot change the score
    /// (for tests that check skipping changes nothing).
    pub rescore_every_event: bool,
}

impl PartialEq for Partition {
    /// Two partitions are equal when everything that affects future outputs
    /// is (timer queues are derived from `Account::timer_due`).
    fn eq(&self, o: &Self) -> bool {
        self.model.id == o.model.id
            && self.accounts == o.accounts
            && self.labels == o.labels
            && self.dedup == o.dedup
            && self.max_time == o.max_time
            && self.stats == o.stats
            && self.portfolio == o.portfolio
            && self.interventions == o.interventions
            && self.monitor == o.monitor
            && self.scorecard_changes == o.scorecard_changes
    }
}

/// The hash of an account id in the partition's index.
pub(crate) fn account_hash(id: &str) -> u64 {
    hash64(id)
}

impl Partition {
    pub fn new(model: Arc<Model>) -> Self {
        Partition {
            model,
            accounts: Accounts::new(),
            index: HashTable::new(),
            labels: Labels::default(),
            dedup: Dedup::default(),
            timers: BinaryHeap::new(),
            queued: Vec::new(),
            max_time: NEVER,
            stats: Stats::default(),
            portfolio: Portfolio::default(),
            interventions: Interventions::default(),
            monitor: Monitor::new(),
            scorecard_changes: Vec::new(),
            rescore_every_event: false,
        }
    }

    /// Marks that records folded so far were scored (and published) by
    /// scorecard `from`, and later ones are by this partition's model: the
    /// shell calls it where a restart with a changed config takes effect.
    /// Nothing happens when `from` is this model, or nothing was folded.
    pub fn note_scorecard_change(&mut self, from: &str) {
        if from == &*self.model.id || self.max_time == NEVER {
            return;
        }
        if self.scorecard_changes.len() >= SCORECARD_CHANGES_KEPT {
            self.scorecard_changes.remove(0);
        }
        self.scorecard_changes.push(ScorecardChange {
            at: self.max_time,
            from: from.into(),
            to: Arc::clone(&self.model.id),
        });
    }

    /// Rebuilds a partition from restored parts (snapshot restore). The
    /// portfolio's current aggregates are rebuilt from the accounts (they
    /// are a function of them); its monthly flows and the interventions
    /// come from the snapshot. `hashes[i]` is [`account_hash`] of account
    /// `i`'s id, `timers` the accounts' `(timer_due, index)` and `sums`
    /// their portfolio contributions: computed where the accounts were
    /// decoded, so that this touches no account.
    #[allow(clippy::too_many_arguments)]
    pub fn from_parts(
        model: Arc<Model>,
        accounts: Accounts,
        hashes: &[u64],
        timers: Vec<(Ts, u32)>,
        sums: SegmentSums,
        labels: Labels,
        dedup: Dedup,
        max_time: Ts,
        stats: Stats,
        portfolio_months: PortfolioMonths,
        interventions: Interventions,
        monitor: Monitor,
    ) -> Self {
        let mut p = Partition::new(model);
        p.monitor = monitor;
        p.portfolio = Portfolio::restore(
            portfolio_months.month,
            portfolio_months
                .rows
                .iter()
                .map(|(seg, m, f)| (&**seg, *m, *f)),
            sums,
            |i| labels.get(i).unwrap_or(""),
        );
        p.interventions = interventions;
        p.labels = labels;
        p.dedup = dedup;
        p.max_time = max_time;
        p.stats = stats;
        p.accounts = accounts;
        let n = p.accounts.len();
        debug_assert_eq!(hashes.len(), n);
        // The index sized once (growing it would rehash every id again),
        // and the timer queue built in one pass.
        let accs = &p.accounts;
        let rehash = |&i: &u32| account_hash(&accs[i as usize].id);
        p.index.reserve(n, rehash);
        for (idx, &h) in hashes.iter().enumerate().take(n) {
            p.index.insert_unique(h, idx as u32, rehash);
        }
        p.queued = vec![Ts::MAX; n];
        let timers: Vec<_> = timers
            .into_iter()
            .filter(|&(due, idx)| (idx as usize) < n && due != NEVER && due < Ts::MAX)
            .map(|(due, idx)| {
                p.queued[idx as usize] = due;
                Reverse((due, idx))
            })
            .collect();
        p.timers = BinaryHeap::from(timers);
        p
    }

    /// A copy of everything a snapshot encodes ([`crate::codec::state`]),
    /// taken in microseconds: the accounts are shared copy-on-write (see
    /// [`Accounts`]); the account index, timer queue and duplicate set are
    /// left out (they are rebuilt on restore). Encode it; do not fold it.
    pub fn snapshot_copy(&mut self) -> Partition {
        Partition {
            model: Arc::clone(&self.model),
            accounts: self.accounts.copy(),
            index: HashTable::new(),
            labels: self.labels.clone(),
            dedup: self.dedup.copy_for_snapshot(),
            timers: BinaryHeap::new(),
            queued: Vec::new(),
            max_time: self.max_time,
            stats: self.stats.clone(),
            portfolio: self.portfolio.clone(),
            interventions: self.interventions.clone(),
            monitor: self.monitor.clone(),
            scorecard_changes: self.scorecard_changes.clone(),
            rescore_every_event: self.rescore_every_event,
        }
    }

    pub fn watermark(&self) -> Ts {
        self.max_time
            .saturating_sub(self.model.cfg.allowed_lateness_secs as i64 * 1000)
    }

    pub fn account(&self, id: &str) -> Option<&Account> {
        let h = account_hash(id);
        self.index
            .find(h, |&i| {
                self.accounts[i as usize].id.as_bytes() == id.as_bytes()
            })
            .map(|&i| &self.accounts[i as usize])
    }

    /// Entries in the timer queue (superseded ones included), for memory
    /// accounting.
    pub fn timer_queue_len(&self) -> usize {
        self.timers.len()
    }

    /// The index of an account in `accounts` (arrival order).
    pub fn account_index(&self, id: &str) -> Option<usize> {
        let h = account_hash(id);
        self.index
            .find(h, |&i| {
                self.accounts[i as usize].id.as_bytes() == id.as_bytes()
            })
            .map(|&i| i as usize)
    }

    pub fn label(&self, i: u16) -> Option<&str> {
        self.labels.get(i)
    }

    /// This partition's portfolio analytics (merge several partitions'
    /// [`Partition::portfolio`] with [`Portfolio::merge`] for a total).
    pub fn portfolio_report(&self) -> super::portfolio::PortfolioReport {
        self.portfolio.report()
    }

    /// This partition's intervention impact (merge several partitions'
    /// `interventions.outcomes` with `InterventionOutcomes::merge`).
    pub fn interventions_report(&self) -> super::interventions::InterventionReport {
        self.interventions.report()
    }

    /// The monthly flows of the portfolio, for snapshots.
    pub fn portfolio_months(&self) -> PortfolioMonths {
        PortfolioMonths {
            month: self.portfolio.month,
            rows: self
                .portfolio
                .segments
                .iter()
                .flat_map(|(seg, s)| s.months.iter().map(move |(&m, f)| (seg.clone(), m, *f)))
                .collect(),
        }
    }

    /// Moves account `idx`'s part of the portfolio from `before` to its
    /// current contribution, if that changed.
    fn contribution_changed(&mut self, idx: usize, before: &Contribution) {
        let after = Contribution::of(&self.accounts[idx]);
        if after != *before {
            let name = |i: u16| self.labels.get(i).unwrap_or("");
            self.portfolio
                .shift(name(before.segment), before, name(after.segment), &after);
        }
    }

    /// The index of the account `id` (hashed `h`), if it exists.
    fn find(&self, id: &str, h: u64) -> Option<usize> {
        let accs = &self.accounts;
        self.index
            .find(h, |&i| accs[i as usize].id.as_bytes() == id.as_bytes())
            .map(|&i| i as usize)
    }

    /// Appends a new account `id` (hashed `h`, not in the index).
    fn create(&mut self, id: &str, h: u64, time: Ts) -> usize {
        let idx = self.accounts.len() as u32;
        let acc = Account::new(id, time);
        self.portfolio.add("", &Contribution::of(&acc));
        self.accounts.push(acc);
        self.queued.push(Ts::MAX);
        let accs = &self.accounts;
        self.index
            .insert_unique(h, idx, |&i| account_hash(&accs[i as usize].id));
        idx as usize
    }

    /// Remembers `key`; false if it was already there.
    fn remember(&mut self, key: u64, time: Ts) -> bool {
        if !self.dedup.insert(key, time) {
            return false;
        }
        let window = self.model.cfg.limits.dedup_window_hours as i64 * MS_PER_HOUR;
        let horizon = self.watermark().saturating_sub(window);
        let cap = self.model.cfg.limits.dedup_max_ids as usize;
        while let Some(&(_, t)) = self.dedup.order.front() {
            let over = self.dedup.order.len() > cap;
            if t < horizon || over {
                if over && t >= horizon {
                    self.stats.dedup_forgotten_early += 1;
                }
                self.dedup.pop_front();
            } else {
                break;
            }
        }
        true
    }

    fn schedule(&mut self, idx: usize) {
        let due = self.accounts[idx].timer_due;
        if due != NEVER && due < self.queued[idx] {
            self.timers.push(Reverse((due, idx as u32)));
            self.queued[idx] = due;
        }
    }

    /// Fires every timer due at or before `upto`, in (time, account) order.
    fn fire_due(&mut self, upto: Ts, out: &mut Vec<Signal>) {
        while let Some(&Reverse((t, idx))) = self.timers.peek() {
            if t > upto {
                break;
            }
            self.timers.pop();
            let idx = idx as usize;
            if self.queued[idx] != t {
                continue; // superseded entry
            }
            self.queued[idx] = Ts::MAX;
            let due = self.accounts[idx].timer_due;
            if due != NEVER && due <= t {
                self.stats.timers_fired += 1;
                self.score(idx, t, Cause::Timer(t), out);
            } else {
                self.schedule(idx);
            }
        }
    }

    /// Fires the account's own timers that fall before `time`.
    fn fire_own(&mut self, idx: usize, time: Ts, out: &mut Vec<Signal>) {
        loop {
            let due = self.accounts[idx].timer_due;
            if due == NEVER || due > time {
                break;
            }
            self.stats.timers_fired += 1;
            self.score(idx, due, Cause::Timer(due), out);
        }
    }

    /// Moves time to `now` (a clock tick): fires timers the watermark passes.
    pub fn advance(&mut self, now: Ts, out: &mut Vec<Signal>) {
        if now > self.max_time {
            self.max_time = now;
            self.portfolio.roll_to_time(now);
        }
        let wm = self.watermark();
        self.fire_due(wm, out);
        self.interventions.close_due(wm, &self.accounts);
        self.monitor
            .roll(wm, &self.accounts, &self.model.cfg.monitor);
    }

    /// Folds one event. Signals it caused (and timers it let fire) are
    /// appended to `out`.
    pub fn apply(&mut self, ev: &Event<'_>, out: &mut Vec<Signal>) -> Outcome {
        let h = account_hash(&ev.account_id);
        let key = xxhash_rust::xxh3::xxh3_64_with_seed(ev.id.as_bytes(), h);
        let ti = ev.kind.type_index();
        // The account is found (not created) before the duplicate check,
        // and the rest of it is fetched into the cache while the duplicate
        // memory is probed: the two misses overlap instead of following
        // each other (a lookup changes nothing, so a duplicate still
        // leaves no trace).
        let found = self.find(&ev.account_id, h);
        if let Some(i) = found {
            self.accounts.prefetch(i);
        }
        if !self.remember(key, ev.time) {
            self.stats.events[ti][Outcome::Duplicate as usize] += 1;
            return Outcome::Duplicate;
        }
        let usage = matches!(ev.kind, EventKind::Login { .. } | EventKind::Feature { .. });
        if let (Some(i), true) = (found, usage) {
            self.accounts.prefetch_usage(i);
        }
        let outcome = if self.max_time != NEVER && ev.time < self.watermark() {
            Outcome::Late
        } else {
            Outcome::Applied
        };
        self.stats.events[ti][outcome as usize] += 1;
        if ev.time > self.max_time {
            self.max_time = ev.time;
            self.portfolio.roll_to_time(ev.time);
        }
        let idx = match found {
            Some(i) => i,
            None => self.create(&ev.account_id, h, ev.time),
        };
        self.fire_own(idx, ev.time, out);
        // Usage changes nothing the portfolio reads except through the
        // score (handled in `score`).
        let before = (!usage).then(|| Contribution::of(&self.accounts[idx]));

        let max_labels = self.model.cfg.limits.max_labels;
        let mut labels = AppliedLabels::default();
        let mut rescore = true;
        match &ev.kind {
            EventKind::AccountUpdated {
                segment,
                tier,
                owner,
                ..
            } => {
                let mut intern = |s: &Option<std::borrow::Cow<'_, str>>| {
                    s.as_ref().and_then(|s| {
                        let r = self.labels.intern(s, max_labels);
                        if r.is_none() {
                            self.stats.limits.labels_ignored += 1;
                        }
                        r
                    })
                };
                labels.segment = intern(segment);
                labels.tier = intern(tier);
                labels.owner = intern(owner);
            }
            EventKind::SubscriptionStarted { plan, .. }
            | EventKind::SubscriptionChanged { plan, .. } => {
                labels.plan = self.labels.intern(plan, max_labels);
                if labels.plan.is_none() {
                    self.stats.limits.labels_ignored += 1;
                }
            }
            EventKind::HealthOverride {
                band,
                score,
                reason,
                expires_at,
                by,
            } => {
                self.accounts[idx].set_override(Override {
                    band: *band,
                    score: *score,
                    reason: reason.as_ref().into(),
                    by: by.as_ref().map(|b| b.as_ref().into()),
                    set_at: ev.time,
                    expires_at: *expires_at,
                    event_id: ev.id.as_ref().into(),
                });
            }
            EventKind::AlertFeedback {
                alert_id, verdict, ..
            } => {
                let k = AlertKind::of_alert_id(alert_id).map_or(3, |k| k as usize);
                let v = match verdict {
                    Verdict::Useful => 0,
                    Verdict::FalsePositive => 1,
                    Verdict::AlreadyKnown => 2,
                };
                self.stats.feedback[k][v] += 1;
                rescore = false;
            }
            EventKind::Touchpoint { kind, .. } => {
                self.interventions
                    .touchpoint(kind, idx, ev.time, key, &self.accounts);
            }
            _ => {}
        }
        if matches!(
            ev.kind,
            EventKind::SubscriptionStarted { .. }
                | EventKind::SubscriptionChanged { .. }
                | EventKind::SubscriptionRenewed { .. }
                | EventKind::SubscriptionCancelled { .. }
        ) {
            if let EventKind::SubscriptionCancelled { .. } = ev.kind {
                self.monitor.cancelled(idx, ev.time);
            }
            // Monthly flows, judged from the account before the event.
            let acc = &self.accounts[idx];
            let seg = self.labels.get(acc.segment).unwrap_or("");
            self.portfolio
                .record_subscription(seg, acc, ev.time, &ev.kind);
        }
        let cfg = &self.model.cfg;
        let acc = &mut self.accounts[idx];
        match &ev.kind {
            EventKind::Login { user_id } => {
                labels.user_hash = Some(super::account::hash32(user_id));
            }
            EventKind::Feature {
                user_id, feature, ..
            } => {
                labels.user_hash = Some(super::account::hash32(user_id));
                labels.feature_hash = Some(super::account::hash32(feature));
            }
            _ => {}
        }
        let skip = !self.rescore_every_event
            && rescore
            && usage_cannot_change_score(acc, ev, &labels, &self.model);
        acc.apply(ev.time, &ev.kind, &labels, cfg, &mut self.stats.limits);
        if matches!(ev.kind, EventKind::AccountUpdated { .. }) {
            let seg = self.labels.get(acc.segment);
            let tier = self.labels.get(acc.tier);
            acc.scorecard = self.model.card_for(seg, tier);
        }
        if skip {
            // Nothing the score reads changed: keep the bookkeeping that
            // scoring would have done, and emit nothing (it would not). A
            // usage event, so no portfolio contribution moved. Done through
            // `acc`: each `&mut self.accounts[i]` costs two atomic
            // read-modify-writes (the copy-on-write checks).
            let now = ev.time.max(acc.last_eval);
            acc.last_eval = now;
            acc.timer_due = next_timer(acc, now, &cfg.alerts);
            self.stats.rescore_skipped += 1;
            self.schedule(idx);
        } else {
            if let Some(b) = before {
                self.contribution_changed(idx, &b);
            }
            if rescore {
                let now = ev.time.max(self.accounts[idx].last_eval);
                self.score(idx, now, Cause::Event(&ev.id), out);
            }
        }
        let wm = self.watermark();
        self.fire_due(wm, out);
        self.interventions.close_due(wm, &self.accounts);
        self.monitor
            .roll(wm, &self.accounts, &self.model.cfg.monitor);
        outcome
    }

    /// Scores account `idx` at `now`, applies the alert rules, publishes
    /// health if it changed materially, and sets the next timer.
    fn score(&mut self, idx: usize, now: Ts, cause: Cause<'_>, out: &mut Vec<Signal>) {
        let before = Contribution::of(&self.accounts[idx]);
        let model = Arc::clone(&self.model);
        let cfg = &model.cfg;
        let rules = &cfg.alerts;
        let acc = &mut self.accounts[idx];
        acc.expire_override(now);
        let day = day_of(now);
        if matches!(cause, Cause::Timer(_)) {
            // Timers come at least every `reevaluate_every_hours`.
            acc.prune(day);
        }
        let sc = &model.cards[acc.scorecard as usize].1;
        let ev = evaluate(acc, now, sc, cfg);
        let first = acc.last_eval == NEVER;
        let old_band = acc.alert.band;
        let band = next_band(
            (!first).then_some(old_band),
            ev.score,
            ev.hard.is_some(),
            sc,
        );

        // Highest score of the last `sharp_drop_days` days (today included).
        let peak = (day - rules.sharp_drop_days as i32..=day)
            .filter_map(|d| acc.alert.score_on(d))
            .max();
        let trend_30d = acc
            .alert
            .score_on(day - 30)
            .map_or(0.0, |s| round1(ev.score - s as f64));
        acc.alert.record_score(day, ev.score);

        let score_out = round1(ev.score);
        let mut alerts: Vec<(AlertKind, &'static str, Vec<UpsellSignal>)> = Vec::new();
        if !acc.is_cancelled() {
            let cooldown = rules.at_risk_cooldown_days as i64 * MS_PER_DAY;
            let cooled = acc.alert.last_at_risk_alert == NEVER
                || now - acc.alert.last_at_risk_alert >= cooldown;
            let entered = band == Band::AtRisk && (first || old_band != Band::AtRisk);
            let dropped = band != Band::AtRisk
                && peak.is_some_and(|p| p as f64 - ev.score >= rules.sharp_drop_points);
            if (entered || dropped) && !acc.alert.at_risk_open {
                if cooled {
                    let reason = if entered {
                        ev.hard.map_or("entered_band", |h| h.name())
                    } else {
                        "sharp_drop"
                    };
                    alerts.push((AlertKind::AtRisk, reason, Vec::new()));
                    acc.alert.at_risk_open = true;
                    acc.alert.last_at_risk_alert = now;
                } else if entered {
                    // Held back by the cooldown: raised at its expiry (a
                    // timer) if the account is still at risk then.
                    self.stats.at_risk_suppressed_by_cooldown += 1;
                    acc.alert.at_risk_pending = true;
                }
            } else if acc.alert.at_risk_pending
                && band == Band::AtRisk
                && cooled
                && !acc.alert.at_risk_open
            {
                alerts.push((
                    AlertKind::AtRisk,
                    "still_at_risk_after_cooldown",
                    Vec::new(),
                ));
                acc.alert.at_risk_open = true;
                acc.alert.at_risk_pending = false;
                acc.alert.last_at_risk_alert = now;
            } else if acc.alert.at_risk_open
                && !dropped
                && (band == Band::Healthy || (band == Band::Neutral && old_band == Band::AtRisk))
            {
                // A sharp drop inside the healthy band is over only when it
                // no longer shows against the recent peak; otherwise the
                // next evaluation would "recover" it at once.
                alerts.push((AlertKind::Recovered, "left_band", Vec::new()));
                acc.alert.at_risk_open = false;
            }
            // At least `upsell_min_signals` signals, one of them a sign of
            // outgrowing the plan (seats or usage growth), not only of
            // liking it (NPS, breadth).
            let (mut n_sig, mut expansion) = (0u32, false);
            each_upsell_signal(&ev, acc, day, cfg, false, |s| {
                n_sig += 1;
                expansion |= matches!(
                    s.signal,
                    "seat_utilisation" | "plan_limit_pressure" | "usage_growth"
                );
            });
            let cond = band == Band::Healthy && expansion && n_sig >= rules.upsell_min_signals;
            let up_cool = rules.upsell_cooldown_days as i64 * MS_PER_DAY;
            let up_cooled = acc.alert.last_upsell_alert == NEVER
                || now - acc.alert.last_upsell_alert >= up_cool;
            let rising = cond && !acc.alert.upsell_active;
            if (rising || (cond && acc.alert.upsell_pending)) && up_cooled {
                let signals = upsell_signals(&ev, acc, day, cfg);
                alerts.push((AlertKind::UpsellOpportunity, "expansion_signals", signals));
                acc.alert.last_upsell_alert = now;
                acc.alert.upsell_pending = false;
            } else if rising {
                // Held back by the cooldown: raised at its expiry if the
                // signals still hold then.
                acc.alert.upsell_pending = true;
            }
            if !cond {
                acc.alert.upsell_pending = false;
            }
            if band != Band::AtRisk {
                acc.alert.at_risk_pending = false;
            }
            acc.alert.upsell_active = cond;
        } else {
            acc.alert.at_risk_open = false;
            acc.alert.at_risk_pending = false;
            acc.alert.upsell_active = false;
            acc.alert.upsell_pending = false;
        }
        acc.alert.band = band;
        acc.last_eval = now;

        let ov = acc.active_override().map(|o| OverrideView {
            band: o.band,
            score: o.score,
            reason: o.reason.to_string(),
            by: o.by.as_ref().map(|b| b.to_string()),
            set_at: o.set_at,
            expires_at: o.expires_at,
        });
        let ov_set = ov.as_ref().map_or(NEVER, |o| o.set_at);
        let cancelled = acc.is_cancelled();
        let material = match acc.alert.published {
            None => true,
            Some(p) => {
                p.band != band
                    || (p.score() - score_out).abs() >= rules.publish_min_delta
                    || p.override_set_at != ov_set
                    || p.cancelled != cancelled
                    || p.scorecard != acc.scorecard
            }
        };
        let need_drivers = material || !alerts.is_empty();
        let cause = match cause {
            Cause::Event(id) if need_drivers => CausedBy::Event(id.to_string()),
            Cause::Event(_) => CausedBy::Event(String::new()),
            Cause::Timer(t) => CausedBy::Timer(t),
        };
        let drivers = if need_drivers {
            score::drivers(&ev, 5)
        } else {
            Vec::new()
        };
        for (kind, reason, signals) in alerts {
            let alert_id = alert_id(kind, &acc.id, now, &cause);
            self.stats.alerts[kind as usize] += 1;
            out.push(Signal::Alert(Alert {
                alert_id,
                kind,
                account_id: acc.id.to_string(),
                time: now,
                score: score_out,
                previous_band: old_band,
                band,
                drivers: match (kind, ev.hard) {
                    (AlertKind::UpsellOpportunity, _) => Vec::new(),
                    (AlertKind::AtRisk, Some(h)) if reason == h.name() => {
                        score::trigger_drivers(&ev, 5, h)
                    }
                    _ => drivers.clone(),
                },
                signals,
                caused_by: cause.clone(),
                reason,
                scorecard: Arc::clone(&model.id),
            }));
        }
        if material {
            acc.alert.published = Some(Published {
                score_tenths: Published::tenths(score_out),
                band,
                override_set_at: ov_set,
                cancelled,
                scorecard: acc.scorecard,
            });
            self.stats.health_published += 1;
            let mut components = ev.components;
            for c in &mut components {
                *c = round1(*c);
            }
            out.push(Signal::Health(Health {
                account_id: acc.id.to_string(),
                time: now,
                score: score_out,
                band,
                components,
                trend_30d,
                segment: self.labels.get(acc.segment).map(str::to_string),
                drivers,
                override_: ov,
                scorecard: Arc::clone(&model.id),
                cancelled,
                caused_by: cause,
            }));
        }

        acc.timer_due = next_timer(acc, now, rules);
        self.schedule(idx);
        self.contribution_changed(idx, &before);
    }
}

/// The portfolio's monthly flows as a snapshot holds them: the current
/// month and `(segment, month, flows)` rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortfolioMonths {
    pub month: i32,
    pub rows: Vec<(Box<str>, i32, super::portfolio::MonthFlows)>,
}

/// The account's next timer after scoring at `now`: periodic re-scoring,
/// the moment silence becomes a trigger, the renewal warning, override
/// expiry. None for a cancelled account.
fn next_timer(acc: &Account, now: Ts, rules: &super::config::AlertRules) -> Ts {
    if acc.is_cancelled() {
        return NEVER;
    }
    let mut due = now + rules.reevaluate_every_hours as i64 * MS_PER_HOUR;
    let mut consider = |t: Ts| {
        if t > now && t < due {
            due = t;
        }
    };
    if rules.silent_days > 0 {
        let since = if acc.last_activity == NEVER {
            acc.first_seen
        } else {
            acc.last_activity
        };
        consider(since + rules.silent_days as i64 * MS_PER_DAY);
    }
    if acc.renews_at != NEVER && rules.renewal_warning_days > 0 {
        consider(acc.renews_at - rules.renewal_warning_days as i64 * MS_PER_DAY);
    }
    if let Some(o) = acc.active_override() {
        consider(o.expires_at);
    }
    if acc.alert.at_risk_pending {
        consider(acc.alert.last_at_risk_alert + rules.at_risk_cooldown_days as i64 * MS_PER_DAY);
    }
    if acc.alert.upsell_pending {
        consider(acc.alert.last_upsell_alert + rules.upsell_cooldown_days as i64 * MS_PER_DAY);
    }
    due
}

/// True when applying this usage event and scoring at `max(time,
/// last_eval)` would give exactly the score, band, alerts and publication
/// that the last scoring gave — so the fold can skip scoring. Every
/// quantity the score reads is checked: same day (decay, windows, overdue),
/// recent activity both before and after (recency stays 100, no silence),
/// a user already counted in the 7- and 28-day windows, a feature already
/// counted in the 28-day window, and no
/// age-, renewal-, override- or cooldown-boundary in between. A property
/// test checks the outputs are identical with and without skipping.
fn usage_cannot_change_score(
    acc: &Account,
    ev: &Event<'_>,
    pre: &AppliedLabels,
    model: &Model,
) -> bool {
    let Some(uh) = pre.user_hash else {
        return false;
    };
    let last = acc.last_eval;
    if last == NEVER || acc.is_cancelled() || acc.last_activity == NEVER {
        return false;
    }
    let now = ev.time.max(last);
    let day = day_of(now);
    if day != day_of(last) || now - acc.last_activity > 2 * MS_PER_DAY {
        return false;
    }
    let age = |t: Ts| t - acc.first_seen;
    if age(last) < 28 * MS_PER_DAY
        || age(last) / (7 * MS_PER_DAY) != age(now) / (7 * MS_PER_DAY)
        || (age(last) >= 90 * MS_PER_DAY) != (age(now) >= 90 * MS_PER_DAY)
    {
        return false;
    }
    if acc.renews_at != NEVER
        && (acc.renews_at - last) / MS_PER_DAY != (acc.renews_at - now) / MS_PER_DAY
    {
        return false;
    }
    if acc.active_override().is_some_and(|o| o.expires_at <= now) {
        return false;
    }
    let rules = &model.cfg.alerts;
    let cooldown = rules.at_risk_cooldown_days as i64 * MS_PER_DAY;
    let la = acc.alert.last_at_risk_alert;
    if la != NEVER && (last - la >= cooldown) != (now - la >= cooldown) {
        return false;
    }
    let up = acc.alert.last_upsell_alert;
    let up_cool = rules.upsell_cooldown_days as i64 * MS_PER_DAY;
    if up != NEVER && (last - up >= up_cool) != (now - up >= up_cool) {
        return false;
    }
    // The user must already count in both user windows (7 and 28 days),
    // the feature in the 28-day breadth window.
    let since = day - 27;
    let uh = uh as u64;
    let user_counted = acc
        .users
        .binary_search_by(|&u| (u >> 32).cmp(&uh))
        .is_ok_and(|i| (acc.users[i] as u32 as i32) >= day - 6);
    if !user_counted {
        return false;
    }
    if let Some(fh) = pre.feature_hash {
        let counted = acc
            .features
            .binary_search_by(|x| x.0.cmp(&fh))
            .is_ok_and(|i| acc.features[i].1 >= since);
        if !counted {
            return false;
        }
    }
    true
}

/// Deterministic alert id: the kind, then a hash of account, time and cause.
pub fn alert_id(kind: AlertKind, account: &str, time: Ts, cause: &CausedBy) -> String {
    let cause = match cause {
        CausedBy::Event(id) => format!("e:{id}"),
        CausedBy::Timer(t) => format!("t:{t}"),
    };
    let h = hash64(&format!(
        "{}\x1f{account}\x1f{time}\x1f{cause}",
        kind.as_str()
    ));
    format!("{}-{h:016x}", kind.as_str())
}

/// What caused a re-score, borrowed (the owned `CausedBy` is built only
/// when something is emitted).
#[derive(Debug, Clone, Copy)]
enum Cause<'a> {
    Event(&'a str),
    Timer(Ts),
}

/// The upsell signals that hold, explained.
fn upsell_signals(
    ev: &Evaluation,
    acc: &Account,
    day: i32,
    cfg: &ModelConfig,
) -> Vec<UpsellSignal> {
    let mut v = Vec::new();
    each_upsell_signal(ev, acc, day, cfg, true, |s| v.push(s));
    v
}

/// A share rounded to 0.1 percent, as the nearest double to a whole
/// number of thousandths (`round1(x * 100) / 100` printed 133.3 / 100 as
/// 1.3330000000000002).
fn thousandths(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Calls `push` with each upsell signal that holds, in output order. With
/// `explain` false the details are left empty: a cheap count, with no
/// allocation, for the common case where nothing fires.
fn each_upsell_signal(
    ev: &Evaluation,
    acc: &Account,
    day: i32,
    cfg: &ModelConfig,
    explain: bool,
    push: impl FnMut(UpsellSignal),
) {
    let r = &cfg.alerts;
    let m = &ev.measures;
    let mut s = Push(push);
    // Seat pressure is judged on the last 7 days: nearly every user shows
    // up at least once in 28 days, so 28-day counts flatter utilisation.
    if m.seats > 0 {
        let u = m.active_users_7d as f64 / m.seats as f64;
        if u >= r.upsell_seat_utilisation {
            s.push(UpsellSignal {
                signal: "seat_utilisation",
                value: thousandths(u),
                detail: explain_then(explain, || {
                    format!(
                        "{} of {} licensed seats active in the last 7 days",
                        m.active_users_7d, m.seats
                    )
                }),
            });
        }
        if m.active_users_7d > m.seats {
            s.push(UpsellSignal {
                signal: "plan_limit_pressure",
                value: (m.active_users_7d - m.seats) as f64,
                detail: explain_then(explain, || {
                    let n = m.active_users_7d - m.seats;
                    format!(
                        "{n} more user{} active in 7 days than licensed seats",
                        score::plural(n as u64)
                    )
                }),
            });
        }
    }
    if m.activity_prior > 0 && ev.values[Factor::UsageTrend as usize] > 50.0 {
        let g = m.activity_recent as f64 / m.activity_prior as f64 - 1.0;
        if g >= r.upsell_usage_growth {
            s.push(UpsellSignal {
                signal: "usage_growth",
                value: thousandths(g),
                detail: explain_then(explain, || {
                    format!("product usage up {:.0}% vs the prior 4 weeks", g * 100.0)
                }),
            });
        }
    }
    if let Some((nps, d)) = acc.surveys().last_nps {
        if nps >= r.upsell_promoter_nps && day - d <= 90 {
            s.push(UpsellSignal {
                signal: "promoter_nps",
                value: nps as f64,
                detail: explain_then(explain, || format!("latest NPS answer {nps}")),
            });
        }
    }
    let breadth = m.features_28d as f64 / cfg.factors.expected_features;
    if breadth >= r.upsell_feature_breadth {
        s.push(UpsellSignal {
            signal: "feature_breadth",
            value: thousandths(breadth),
            detail: explain_then(explain, || {
                format!("{} distinct features used in 28 days", m.features_28d)
            }),
        });
    }
}

/// Adapts a closure to the `s.push(x)` calls of [`each_upsell_signal`].
struct Push<F>(F);

impl<F: FnMut(UpsellSignal)> Push<F> {
    fn push(&mut self, x: UpsellSignal) {
        (self.0)(x)
    }
}

fn explain_then(explain: bool, f: impl FnOnce() -> String) -> String {
    if explain {
        f()
    } else {
        String::new()
    }
}

#[cfg(test)]
mod dedup_tests {
    use std::collections::{HashSet, VecDeque};

    use super::Dedup;

    /// The position index agrees with a plain set of keys through
    /// insertions, repeats, forgetting (also of keys remembered again
    /// later), sequence numbers wrapping past 2³², and restoring.
    #[test]
    fn dedup_index_matches_a_set_of_keys() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        // Start just below the wrap of the 32-bit sequence numbers.
        let mut d = Dedup {
            forgotten: u32::MAX - 300,
            ..Default::default()
        };
        let mut set = HashSet::new();
        let mut order = VecDeque::new();
        for step in 0..20_000i64 {
            // Few distinct keys (so repeats and re-remembering happen), some
            // equal in their low and high bits (same bucket, same tag).
            let k = match rnd() % 4 {
                0 => (rnd() % 64) << 40,
                _ => rnd() % 600,
            };
            let new = set.insert(k);
            assert_eq!(d.insert(k, step), new, "key {k} at step {step}");
            if new {
                order.push_back((k, step));
            }
            while order.len() > (rnd() % 400) as usize {
                let (k, _) = order.pop_front().unwrap();
                set.remove(&k);
                d.pop_front();
            }
            assert!(d.order.iter().eq(order.iter()));
            assert!(d.index.len() <= set.len() + 4097, "stale entries are swept");
            if step % 5000 == 4999 {
                d = Dedup::from_order(d.order.clone());
            }
        }
        d.sweep();
        assert_eq!(d.index.len(), set.len());
    }

    /// A sliding window of 40,000 distinct keys over 300,000: forgotten
    /// keys are swept in batches (half the window), never found again,
    /// and can be remembered anew; the table stays at most 1.5× the
    /// window.
    #[test]
    fn stale_entries_are_swept_in_batches() {
        let key = |i: u64| i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let window = 40_000u64;
        let mut d = Dedup::default();
        let mut most = 0;
        for i in 0..300_000u64 {
            assert!(d.insert(key(i), i as i64));
            if i >= window {
                d.pop_front();
                // The key just forgotten is new again; the oldest kept is not.
                assert!(!d.insert(key(i - window + 1), 0));
            }
            most = most.max(d.index.len());
        }
        assert_eq!(d.order.len() as u64, window);
        assert!(most <= 60_001, "index held {most} entries");
        assert!(d.insert(key(300_000 - window - 1), 0), "forgotten, so new");
    }

    /// Whatever the window — below the 4,096 floor, or filling the table
    /// nearly to its capacity — a sweep happens at most once per half a
    /// window of forgotten keys (plus the few a growing table causes):
    /// a sweep that frees no room is followed by a rehash, not by another
    /// sweep a few keys later.
    #[test]
    fn sweeps_stay_rare_at_any_window() {
        let key = |i: u64| i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5555;
        for window in [100u64, 3_000, 3_500, 6_000, 7_000, 14_000, 28_000, 29_000] {
            let mut d = Dedup::default();
            let n = 200_000u64;
            for i in 0..n {
                assert!(d.insert(key(i), 0));
                if i >= window {
                    d.pop_front();
                }
            }
            let per = (window / 2).max(4096);
            let bound = (n - window) / per + 12;
            assert!(
                d.sweeps <= bound,
                "window {window}: {} sweeps, at most {bound}",
                d.sweeps
            );
        }
    }
}
