//! # The read side
//!
//! The current health of every account this process owns, for the HTTP API
//! and the Prometheus export to read concurrently. DESIGN.md, "State
//! ownership and scale": the fold's state is a plain map owned by its
//! partition worker; this [`DashMap`] is a copy that the worker *publishes*
//! once per batch, so readers never take a lock the fold needs.
//!
//! ## How a partition worker uses it
//!
//! ```text
//! on assignment     set_status(p, {restoring: true, ..})
//! after restore     refresh_all(p, &part); set_status(p, {restoring: false, ..})
//! after each batch  refresh(p, &part, &ids); set_status(p, {watermark, offsets, ..})
//! on revocation     drop_partition(p)
//! ```
//!
//! `ids` are the accounts the batch touched: those its events named and
//! those its signals named (timers that fired). A timer that re-scored an
//! account without publishing anything moved the score by less than
//! `publish_min_delta` and left the band alone, so a view may lag by that
//! much until the account's next event or published change.
//!
//! Views are published before the status, so `as_of` is a lower bound: a
//! view reflects *at least* the offsets its partition's status names.
//!
//! ## What a view holds
//!
//! The latest evaluation of the account, recomputed from the partition
//! state with the core's own scoring functions ([`evaluate`],
//! [`score::drivers`]): it is the score the fold computed at the account's
//! last scoring, so when that scoring published a health record the view
//! and the record are equal field for field. When it did not (a change
//! smaller than `publish_min_delta`), the view shows the newer score;
//! the band is always the same as the last published one.
//!
//! The core keeps 32 days of daily scores; the read side keeps 90, by
//! merging each refresh into the previous view's history. After a restore
//! (`refresh_all` on a fresh `ReadSide`) the history starts with the 32
//! days the snapshot holds and grows back to 90.
//!
//! ## Distribution counts
//!
//! Each partition keeps the number of accounts per (segment, band) and per
//! (segment, score bucket of 10 points), updated by the difference
//! between the old and the new view of each refreshed account, so
//! rendering `/metrics` costs O(segments × buckets), never O(accounts).
//! Cancelled accounts are counted apart (`vitals_accounts_cancelled`) and
//! left out of the band and score counts: a churned account is not "at
//! risk".

use std::collections::{BTreeMap, BinaryHeap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use dashmap::DashMap;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::core::account::{Account, AlertState, NEVER, NO_DAY, NO_SCORE};
use crate::core::event::Priority;
use crate::core::score::{self, evaluate, round1};
use crate::core::signal::{CausedBy, Health, OverrideView};
use crate::core::time::{day_of, Ts};
use crate::core::{Band, Partition, ScorecardChange};

/// Daily score points a view keeps.
pub const HISTORY_DAYS: usize = 90;
/// Score buckets of 10 points: `[0,10]`, `(10,20]`, …, `(90,100]`.
pub const SCORE_BUCKETS: usize = 10;
/// At most this many segments get their own series in `/metrics`; the
/// rest (fewest accounts first) are summed into [`OTHER_SEGMENT`].
pub const MAX_METRIC_SEGMENTS: usize = 100;
/// Segment label value for the segments beyond [`MAX_METRIC_SEGMENTS`].
pub const OTHER_SEGMENT: &str = "_other";

/// Metric names this module renders (SPEC §6). Kept here, with their help
/// text, until the crate has one metrics module.
pub mod names {
    /// Gauge: accounts by `band` and `segment` (cancelled accounts excluded).
    pub const ACCOUNTS: &str = "vitals_accounts";
    /// Gauge: cancelled accounts by `segment`.
    pub const ACCOUNTS_CANCELLED: &str = "vitals_accounts_cancelled";
    /// Gauge: accounts whose current score is ≤ `le`, by `segment`
    /// (cumulative, like a Prometheus histogram's buckets).
    pub const ACCOUNT_SCORE_BUCKET: &str = "vitals_account_score_bucket";
    /// Gauge: 1 while a partition this process owns is restoring.
    pub const PARTITION_RESTORING: &str = "vitals_partition_restoring";
    /// Histogram name the fold shell should use for every score it
    /// evaluates; [`super::install_recorder`] gives it 10-point buckets.
    pub const EVALUATED_SCORE: &str = "vitals_evaluated_score";
    // The service's own metrics, recorded through the `metrics` facade;
    // their kinds and help texts are in [`FACADE`].
    pub const EVENTS_TOTAL: &str = "vitals_events_total";
    pub const SEQUENCED_TOTAL: &str = "vitals_sequenced_total";
    pub const BATCH_SECONDS: &str = "vitals_batch_seconds";
    pub const HEALTH_PUBLISHED_TOTAL: &str = "vitals_health_published_total";
    pub const ALERTS_TOTAL: &str = "vitals_alerts_total";
    pub const EVENT_TO_ALERT_SECONDS: &str = "vitals_event_to_alert_seconds";
    pub const DLQ_TOTAL: &str = "vitals_dlq_total";
    pub const SHADOW_PUBLISHED_TOTAL: &str = "vitals_shadow_published_total";
    pub const REPARTITIONED_TOTAL: &str = "vitals_repartitioned_total";
    pub const CONSUMER_LAG: &str = "vitals_consumer_lag";
    pub const COMMIT_SECONDS: &str = "vitals_commit_seconds";
    pub const TRANSACTION_RETRIES_TOTAL: &str = "vitals_transaction_retries_total";
    pub const RESTORE_SECONDS: &str = "vitals_restore_seconds";
    pub const SEQUENCER_DEADLINE_RELEASES_TOTAL: &str = "vitals_sequencer_deadline_releases_total";
    pub const RECORDS_LOST_TO_RETENTION_TOTAL: &str = "vitals_records_lost_to_retention_total";
    pub const SNAPSHOT_SECONDS: &str = "vitals_snapshot_seconds";
    pub const SNAPSHOT_STALL_SECONDS: &str = "vitals_snapshot_stall_seconds";
    pub const SNAPSHOT_BYTES: &str = "vitals_snapshot_bytes";
    pub const SNAPSHOT_LAST_SUCCESS: &str = "vitals_snapshot_last_success_timestamp_seconds";
    pub const SNAPSHOT_FAILURES_TOTAL: &str = "vitals_snapshot_failures_total";

    /// The service's own metrics (recorded through the `metrics` facade),
    /// with their kind and help text.
    pub const FACADE: &[(&str, Kind, &str)] = &[
        (EVENTS_TOTAL, Kind::Counter, "Events by input topic, type and outcome (applied, duplicate, late, invalid)"),
        (SEQUENCED_TOTAL, Kind::Counter, "Records of vitals.sequenced folded"),
        (BATCH_SECONDS, Kind::Histogram, "Time to fold one batch of sequenced records and hand its outputs to the producer"),
        (HEALTH_PUBLISHED_TOTAL, Kind::Counter, "Health records published to vitals.health"),
        (ALERTS_TOTAL, Kind::Counter, "Alerts published, by kind"),
        (EVENT_TO_ALERT_SECONDS, Kind::Histogram, "From the causing input record's Kafka timestamp to its alert being handed to the producer"),
        (DLQ_TOTAL, Kind::Counter, "Invalid records sent to the dead-letter topic, by source topic"),
        (SHADOW_PUBLISHED_TOTAL, Kind::Counter, "Records published by the shadow scorecard"),
        (REPARTITIONED_TOTAL, Kind::Counter, "Records that arrived on the wrong input partition, re-routed to their owner"),
        (CONSUMER_LAG, Kind::Gauge, "Records of the input topics not yet sequenced, by partition"),
        (COMMIT_SECONDS, Kind::Histogram, "Time to commit input offsets (and the transaction, when enabled)"),
        (TRANSACTION_RETRIES_TOTAL, Kind::Counter, "Kafka transaction operations retried"),
        (RESTORE_SECONDS, Kind::Histogram, "Time to restore a partition (snapshot load and tail replay)"),
        (SEQUENCER_DEADLINE_RELEASES_TOTAL, Kind::Counter, "Records the sequencer released at sequencer.max_wait_ms without the other inputs, by topic"),
        (RECORDS_LOST_TO_RETENTION_TOTAL, Kind::Counter, "Input records deleted by the broker's retention before they were sequenced"),
        (SNAPSHOT_SECONDS, Kind::Histogram, "Time to encode and store a partition snapshot"),
        (SNAPSHOT_STALL_SECONDS, Kind::Histogram, "Time a partition's fold stopped to take a snapshot's copy"),
        (SNAPSHOT_BYTES, Kind::Gauge, "Size of the partition's last snapshot"),
        (SNAPSHOT_LAST_SUCCESS, Kind::Gauge, "Unix time of the partition's last stored snapshot"),
        (SNAPSHOT_FAILURES_TOTAL, Kind::Counter, "Snapshots that could not be taken or stored"),
    ];

    /// A facade metric's kind.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Kind {
        Counter,
        Gauge,
        Histogram,
    }
}

/// How current a partition's views are, as its worker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionStatus {
    /// The partition's watermark (event time), once it has seen an event.
    pub watermark: Option<Ts>,
    /// Next offset of `vitals.sequenced` to fold (everything before it is
    /// reflected); -1 when unknown.
    pub sequenced_offset: i64,
    /// Positions of the input topics (same partition number) the folded
    /// records came from, as `(topic, next offset)`.
    pub input_offsets: Vec<(String, i64)>,
    /// The worker is restoring (snapshot load and tail replay): views may
    /// be missing or old.
    pub restoring: bool,
    /// Scoring-config changes the partition's fold saw (oldest first): the
    /// API marks those inside each account's score history.
    pub scorecard_changes: Vec<ScorecardChange>,
}

impl Default for PartitionStatus {
    /// A partition known only by name: restoring, nothing reflected yet.
    fn default() -> Self {
        PartitionStatus {
            watermark: None,
            sequenced_offset: -1,
            input_offsets: Vec::new(),
            restoring: true,
            scorecard_changes: Vec::new(),
        }
    }
}

/// Counts of one segment's accounts (within one partition, or summed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegmentCounts {
    /// By band, in [`Band::to_u8`] order (at_risk, neutral, healthy).
    pub bands: [i64; 3],
    /// Non-cumulative, by [`bucket_of`].
    pub buckets: [i64; SCORE_BUCKETS],
    pub cancelled: i64,
}

impl SegmentCounts {
    fn add(&mut self, o: &SegmentCounts) {
        for i in 0..3 {
            self.bands[i] += o.bands[i];
        }
        for i in 0..SCORE_BUCKETS {
            self.buckets[i] += o.buckets[i];
        }
        self.cancelled += o.cancelled;
    }

    fn accounts(&self) -> i64 {
        self.bands.iter().sum::<i64>() + self.cancelled
    }
}

/// The bucket of a score: upper bounds are inclusive (a score of exactly
/// 70 counts in `le="70"`), and 0 goes with the first bucket.
pub fn bucket_of(score: f64) -> usize {
    if score.is_nan() || score <= 0.0 {
        return 0;
    }
    ((score / 10.0).ceil() as usize).clamp(1, SCORE_BUCKETS) - 1
}

/// 90 daily scores (the score at the end of each day, carried forward over
/// days without an evaluation), indexed by day modulo [`HISTORY_DAYS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScoreHistory {
    head: i32,
    days: [u8; HISTORY_DAYS],
}

impl Default for ScoreHistory {
    fn default() -> Self {
        ScoreHistory {
            head: NO_DAY,
            days: [NO_SCORE; HISTORY_DAYS],
        }
    }
}

impl ScoreHistory {
    fn slot(day: i32) -> usize {
        day.rem_euclid(HISTORY_DAYS as i32) as usize
    }

    /// The score of `day`, if held.
    pub fn get(&self, day: i32) -> Option<u8> {
        if self.head == NO_DAY || day > self.head || day <= self.head - HISTORY_DAYS as i32 {
            return None;
        }
        match self.days[Self::slot(day)] {
            NO_SCORE => None,
            s => Some(s),
        }
    }

    /// `(day, score)` for every held day, oldest first.
    pub fn points(&self) -> Vec<(i32, u8)> {
        if self.head == NO_DAY {
            return Vec::new();
        }
        (self.head - HISTORY_DAYS as i32 + 1..=self.head)
            .filter_map(|d| self.get(d).map(|s| (d, s)))
            .collect()
    }

    /// The previous history brought up to date with the core's 32 days.
    /// Days the core still holds come from the core; older ones from
    /// `prev`; days between `prev`'s last day and the core's window carry
    /// `prev`'s last score forward (as the core does over a gap).
    fn merge(prev: Option<&ScoreHistory>, core: &AlertState) -> ScoreHistory {
        let head = core.score_head;
        if head == NO_DAY {
            return prev.cloned().unwrap_or_default();
        }
        // A history newer than the core's (the partition was restored from
        // an older snapshot) is discarded: the core is the truth.
        let prev = prev.filter(|p| p.head != NO_DAY && p.head <= head);
        let core_from = head - crate::core::account::SCORE_DAYS as i32 + 1;
        let mut out = ScoreHistory {
            head,
            days: [NO_SCORE; HISTORY_DAYS],
        };
        for d in head - HISTORY_DAYS as i32 + 1..=head {
            let v = if d >= core_from {
                core.score_on(d)
            } else if let Some(p) = prev {
                p.get(d.min(p.head))
            } else {
                None
            };
            if let Some(s) = v {
                out.days[Self::slot(d)] = s;
            }
        }
        out
    }
}

/// The latest NPS answer of an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NpsAnswer {
    pub score: u8,
    /// Day (since the epoch) of the answer.
    pub day: i32,
}

/// What the API shows about one account.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountView {
    pub partition: u32,
    /// As a `vitals.health` record would carry it. `time` is the account's
    /// last evaluation: the last record's time, or later when later usage
    /// events provably left the score unchanged (the fold skips re-scoring
    /// them and publishes nothing). `caused_by` is not known here and is
    /// set to `CausedBy::Timer(time)`; the API leaves it out.
    pub health: Health,
    pub history: ScoreHistory,
    /// Open tickets by priority, in [`Priority::ALL`] order.
    pub open_tickets: [u32; 4],
    pub mrr_cents: u64,
    pub latest_nps: Option<NpsAnswer>,
}

impl AccountView {
    /// Builds the view of `acc` from its partition's state, `None` if it was
    /// never scored (an account only ever named by `alert.feedback`).
    pub fn build(
        partition: u32,
        part: &Partition,
        acc: &Account,
        prev: Option<&ScoreHistory>,
    ) -> Option<AccountView> {
        let now = acc.last_eval;
        if now == NEVER {
            return None;
        }
        let model = &part.model;
        let sc = &model.cards.get(acc.scorecard as usize)?.1;
        let ev = evaluate(acc, now, sc, &model.cfg);
        let day = day_of(now);
        let trend_30d = acc
            .alert
            .score_on(day - 30)
            .map_or(0.0, |s| round1(ev.score - s as f64));
        let mut components = ev.components;
        for c in &mut components {
            *c = round1(*c);
        }
        let override_ = acc.active_override().map(|o| OverrideView {
            band: o.band,
            score: o.score,
            reason: o.reason.to_string(),
            by: o.by.as_ref().map(|b| b.to_string()),
            set_at: o.set_at,
            expires_at: o.expires_at,
        });
        let health = Health {
            account_id: acc.id.to_string(),
            time: now,
            score: round1(ev.score),
            band: acc.alert.band,
            components,
            trend_30d,
            segment: part.label(acc.segment).map(str::to_string),
            drivers: score::drivers(&ev, 5),
            override_,
            scorecard: Arc::clone(&model.id),
            cancelled: acc.is_cancelled(),
            caused_by: CausedBy::Timer(now),
        };
        let mut open_tickets = [0u32; 4];
        for t in acc.open_tickets() {
            open_tickets[priority_index(t.priority)] += 1;
        }
        Some(AccountView {
            partition,
            health,
            history: ScoreHistory::merge(prev, &acc.alert),
            open_tickets,
            mrr_cents: acc.mrr_cents(),
            latest_nps: acc
                .surveys()
                .last_nps
                .map(|(score, day)| NpsAnswer { score, day }),
        })
    }

    /// Listing order: worst score first, then account id.
    pub fn sort_key(&self) -> (f64, &str) {
        (self.health.score, &self.health.account_id)
    }

    fn counts(&self) -> SegmentCounts {
        let mut c = SegmentCounts::default();
        if self.health.cancelled {
            c.cancelled = 1;
        } else {
            c.bands[self.health.band.to_u8() as usize] = 1;
            c.buckets[bucket_of(self.health.score)] = 1;
        }
        c
    }
}

fn priority_index(p: Priority) -> usize {
    Priority::ALL.iter().position(|&q| q == p).unwrap_or(0)
}

/// Why the process is or is not ready to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// No partition is known and the service has not said that an empty
    /// assignment is final ([`ReadSide::set_joined`]).
    NoAssignment,
    /// These partitions are restoring.
    Restoring(Vec<u32>),
}

#[derive(Debug, Default)]
struct PartitionEntry {
    status: PartitionStatus,
    segments: BTreeMap<Option<String>, SegmentCounts>,
}

/// Count changes of one refresh, applied under the lock in one go.
#[derive(Default)]
struct Deltas(BTreeMap<(u32, Option<String>), SegmentCounts>);

impl Deltas {
    fn add(&mut self, v: &AccountView, sign: i64) {
        let c = v.counts();
        let e = self
            .0
            .entry((v.partition, v.health.segment.clone()))
            .or_default();
        for i in 0..3 {
            e.bands[i] += sign * c.bands[i];
        }
        for i in 0..SCORE_BUCKETS {
            e.buckets[i] += sign * c.buckets[i];
        }
        e.cancelled += sign * c.cancelled;
    }
}

/// Filters for [`ReadSide::list`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListFilter {
    pub band: Option<Band>,
    /// `Some(None)` selects accounts without a segment.
    pub segment: Option<Option<String>>,
    /// `Some(true)`: cancelled only; `Some(false)`: active only.
    pub cancelled: Option<bool>,
}

impl ListFilter {
    fn matches(&self, v: &AccountView) -> bool {
        self.band.is_none_or(|b| v.health.band == b)
            && self
                .segment
                .as_ref()
                .is_none_or(|s| v.health.segment.as_deref() == s.as_deref())
            && self.cancelled.is_none_or(|c| v.health.cancelled == c)
    }
}

/// A position in the listing order: the page continues after it.
#[derive(Debug, Clone, PartialEq)]
pub struct ListCursor {
    pub score: f64,
    pub account_id: String,
}

/// Heap entry ordered by listing order (the heap keeps the `limit` first).
struct Ranked(AccountView);

impl PartialEq for Ranked {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == std::cmp::Ordering::Equal
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Ranked {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        let (a, b) = (self.0.sort_key(), o.0.sort_key());
        a.0.total_cmp(&b.0).then_with(|| a.1.cmp(b.1))
    }
}

/// The read side: account views and partition status. Share it as
/// `Arc<ReadSide>`.
#[derive(Debug, Default)]
pub struct ReadSide {
    accounts: DashMap<String, AccountView>,
    partitions: RwLock<BTreeMap<u32, PartitionEntry>>,
    joined: AtomicBool,
    /// Per partition, a copy of its portfolio analytics and intervention
    /// outcomes (merged across partitions when read).
    analytics: std::sync::Mutex<BTreeMap<u32, Analytics>>,
}

/// One partition's analytics, as last published.
#[derive(Debug, Clone)]
struct Analytics {
    portfolio: crate::core::portfolio::Portfolio,
    outcomes: crate::core::interventions::InterventionOutcomes,
    /// `alert.feedback` verdicts by alert kind (`Stats::feedback`).
    feedback: [[u64; 3]; 4],
    /// The live model monitor's tally, and the scorecard it measures.
    monitor: (Arc<str>, crate::core::monitor::Tally),
    /// The same for the shadow scorecard, when one runs.
    shadow: Option<(Arc<str>, crate::core::monitor::Tally)>,
}

/// One scorecard's live monitoring over every partition of this instance.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelMonitor {
    /// `live` or `shadow`.
    pub role: &'static str,
    /// The scorecard id (`version+hash`).
    pub scorecard: String,
    pub tally: crate::core::monitor::Tally,
}

impl ReadSide {
    pub fn new() -> Self {
        Self::default()
    }

    /// Republishes the views of `account_ids` (duplicates allowed) from
    /// partition `partition`'s state. An id the partition does not know
    /// (or never scored) loses its view. Call once per batch.
    pub fn refresh(&self, partition: u32, part: &Partition, account_ids: &[&str]) {
        let mut ids = account_ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let mut deltas = Deltas::default();
        for id in ids {
            self.republish(partition, part, id, &mut deltas);
        }
        self.apply(partition, deltas);
    }

    /// Republishes every account of the partition and drops views of this
    /// partition's accounts it no longer holds (after a restore).
    pub fn refresh_all(&self, partition: u32, part: &Partition) {
        let mut deltas = Deltas::default();
        self.accounts.retain(|id, v| {
            let keep = v.partition != partition || part.account(id).is_some();
            if !keep {
                deltas.add(v, -1);
            }
            keep
        });
        for acc in &part.accounts {
            self.republish(partition, part, &acc.id, &mut deltas);
        }
        self.apply(partition, deltas);
    }

    fn republish(&self, partition: u32, part: &Partition, id: &str, deltas: &mut Deltas) {
        // Read the old history under a short read lock, build without any
        // lock, then swap (never hold a guard while taking another).
        let prev = self.accounts.get(id).map(|v| v.history.clone());
        let view = part
            .account(id)
            .and_then(|acc| AccountView::build(partition, part, acc, prev.as_ref()));
        let old = match view {
            Some(v) => {
                deltas.add(&v, 1);
                match self.accounts.get_mut(id) {
                    Some(mut slot) => Some(std::mem::replace(&mut *slot, v)),
                    None => self.accounts.insert(id.to_string(), v),
                }
            }
            None => self.accounts.remove(id).map(|(_, v)| v),
        };
        if let Some(old) = old {
            deltas.add(&old, -1);
        }
    }

    fn apply(&self, partition: u32, deltas: Deltas) {
        let mut parts = self.write();
        parts.entry(partition).or_default();
        for ((p, seg), d) in deltas.0 {
            parts
                .entry(p)
                .or_default()
                .segments
                .entry(seg)
                .or_default()
                .add(&d);
        }
    }

    /// Sets what the partition's views reflect (once per batch, after
    /// [`refresh`](Self::refresh)). Makes the partition known.
    pub fn set_status(&self, partition: u32, st: PartitionStatus) {
        self.write().entry(partition).or_default().status = st;
    }

    /// Forgets a revoked partition: its accounts, counts and status.
    pub fn drop_partition(&self, partition: u32) {
        self.accounts.retain(|_, v| v.partition != partition);
        self.write().remove(&partition);
        self.analytics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&partition);
    }

    /// Publishes partition `partition`'s portfolio analytics and
    /// intervention outcomes (a copy; the service does this at most about
    /// once a second per partition).
    pub fn set_analytics(&self, partition: u32, part: &Partition) {
        let mut a = self.analytics.lock().unwrap_or_else(|p| p.into_inner());
        let shadow = a.get(&partition).and_then(|x| x.shadow.clone());
        a.insert(
            partition,
            Analytics {
                portfolio: part.portfolio.clone(),
                outcomes: part.interventions.outcomes.clone(),
                feedback: part.stats.feedback,
                monitor: (Arc::clone(&part.model.id), part.monitor.tally),
                shadow,
            },
        );
    }

    /// Publishes the shadow scorecard's monitor tally of partition
    /// `partition` (after [`set_analytics`](Self::set_analytics)).
    pub fn set_shadow(&self, partition: u32, shadow: &Partition) {
        let mut a = self.analytics.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(x) = a.get_mut(&partition) {
            x.shadow = Some((Arc::clone(&shadow.model.id), shadow.monitor.tally));
        }
    }

    /// Live model monitoring per scorecard (live first, then shadow),
    /// summed over partitions.
    pub fn model_monitors(&self) -> Vec<ModelMonitor> {
        let a = self.analytics.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<ModelMonitor> = Vec::new();
        let all = a.values().map(|x| ("live", &x.monitor)).chain(
            a.values()
                .filter_map(|x| x.shadow.as_ref().map(|s| ("shadow", s))),
        );
        for (role, (id, t)) in all {
            match out
                .iter_mut()
                .find(|m| m.role == role && *m.scorecard == **id)
            {
                Some(m) => m.tally.merge(t),
                None => out.push(ModelMonitor {
                    role,
                    scorecard: id.to_string(),
                    tally: *t,
                }),
            }
        }
        out
    }

    /// The portfolio over every partition this instance owns.
    pub fn portfolio_report(&self) -> Option<crate::core::portfolio::PortfolioReport> {
        let a = self.analytics.lock().unwrap_or_else(|p| p.into_inner());
        let mut it = a.values();
        let mut total = it.next()?.portfolio.clone();
        for x in it {
            total.merge(&x.portfolio);
        }
        Some(total.report())
    }

    /// Measured precision per alert kind from `alert.feedback` over every
    /// partition (useful and already_known count as correct), with the
    /// number of verdicts; `None` for a kind without feedback.
    pub fn alert_precision(&self) -> Vec<(crate::core::AlertKind, Option<f64>, u64)> {
        let a = self.analytics.lock().unwrap_or_else(|p| p.into_inner());
        crate::core::AlertKind::ALL
            .iter()
            .map(|&k| {
                let mut f = [0u64; 3];
                for x in a.values() {
                    for (t, v) in f.iter_mut().zip(x.feedback[k as usize]) {
                        *t += v;
                    }
                }
                let n = f[0] + f[1] + f[2];
                (k, (n > 0).then(|| (f[0] + f[2]) as f64 / n as f64), n)
            })
            .collect()
    }

    /// Intervention impact over every partition this instance owns.
    pub fn interventions_report(&self) -> crate::core::interventions::InterventionReport {
        let a = self.analytics.lock().unwrap_or_else(|p| p.into_inner());
        let mut total = crate::core::interventions::InterventionOutcomes::default();
        for x in a.values() {
            total.merge(&x.outcomes);
        }
        total.report()
    }

    /// The service calls this with `true` once it has joined its consumer
    /// group and received an assignment, even an empty one (more instances
    /// than partitions): an instance with nothing to serve is still ready.
    pub fn set_joined(&self, joined: bool) {
        self.joined.store(joined, Ordering::Release);
    }

    /// Ready when no known partition is restoring and either some partition
    /// is known or the service has joined its group ([`set_joined`]).
    /// Before either, the process has not received its assignment yet.
    ///
    /// [`set_joined`]: Self::set_joined
    pub fn readiness(&self) -> Readiness {
        let parts = self.read();
        let restoring: Vec<u32> = parts
            .iter()
            .filter(|(_, e)| e.status.restoring)
            .map(|(&p, _)| p)
            .collect();
        if !restoring.is_empty() {
            Readiness::Restoring(restoring)
        } else if parts.is_empty() && !self.joined.load(Ordering::Acquire) {
            Readiness::NoAssignment
        } else {
            Readiness::Ready
        }
    }

    pub fn ready(&self) -> bool {
        self.readiness() == Readiness::Ready
    }

    /// A copy of an account's view.
    pub fn get(&self, account_id: &str) -> Option<AccountView> {
        self.accounts.get(account_id).map(|v| v.clone())
    }

    /// Number of account views.
    pub fn len(&self) -> usize {
        self.accounts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }

    pub fn status(&self, partition: u32) -> Option<PartitionStatus> {
        self.read().get(&partition).map(|e| e.status.clone())
    }

    /// Every known partition's status, by partition.
    pub fn statuses(&self) -> BTreeMap<u32, PartitionStatus> {
        self.read()
            .iter()
            .map(|(&p, e)| (p, e.status.clone()))
            .collect()
    }

    /// Up to `limit` views matching `filter`, worst score first, ties by
    /// account id, starting after `after`. O(accounts · log limit); each
    /// view is consistent, the page is not a snapshot across accounts.
    /// The scan holds one map shard's read lock at a time, so a worker
    /// publishing into that shard waits at most one shard's scan (a
    /// 1000-account page over 50k accounts took 11 ms in a dev build).
    /// `/metrics` never scans.
    pub fn list(
        &self,
        filter: &ListFilter,
        after: Option<&ListCursor>,
        limit: usize,
    ) -> Vec<AccountView> {
        if limit == 0 {
            return Vec::new();
        }
        let mut heap: BinaryHeap<Ranked> = BinaryHeap::with_capacity(limit.min(4096) + 1);
        for r in self.accounts.iter() {
            let v = r.value();
            if !filter.matches(v) {
                continue;
            }
            let (score, id) = v.sort_key();
            if let Some(c) = after {
                let past = score
                    .total_cmp(&c.score)
                    .then_with(|| id.cmp(c.account_id.as_str()))
                    .is_gt();
                if !past {
                    continue;
                }
            }
            if heap.len() == limit {
                let worst_kept = heap.peek().map(|top| {
                    let (s, i) = top.0.sort_key();
                    score.total_cmp(&s).then_with(|| id.cmp(i)).is_lt()
                });
                if worst_kept != Some(true) {
                    continue;
                }
                heap.pop();
            }
            heap.push(Ranked(v.clone()));
        }
        heap.into_sorted_vec().into_iter().map(|r| r.0).collect()
    }

    /// Counts by segment summed over partitions (`None` = no segment).
    pub fn distribution(&self) -> BTreeMap<Option<String>, SegmentCounts> {
        let mut out: BTreeMap<Option<String>, SegmentCounts> = BTreeMap::new();
        for e in self.read().values() {
            for (seg, c) in &e.segments {
                out.entry(seg.clone()).or_default().add(c);
            }
        }
        out
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<u32, PartitionEntry>> {
        self.partitions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<u32, PartitionEntry>> {
        self.partitions
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Installs the process-wide Prometheus recorder for the `metrics` facade
/// and returns its handle. Idempotent: later calls return the same handle.
/// If some other recorder was installed first, the handle still renders
/// (without the facade's metrics) and a warning is logged.
///
/// Histograms whose names end in `_seconds` get latency buckets, `_bytes`
/// size buckets, and [`names::EVALUATED_SCORE`] 10-point buckets; other
/// histograms render as summaries.
pub fn install_recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".into()),
                    &[
                        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                        60.0,
                    ],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Suffix("_bytes".into()),
                        &[1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10],
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(names::EVALUATED_SCORE.into()),
                        &[10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0],
                    )
                })
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "histogram buckets rejected, using summaries");
                    PrometheusBuilder::new()
                });
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if let Err(e) = metrics::set_global_recorder(recorder) {
                tracing::warn!(error = %e, "a metrics recorder was already installed; facade metrics will not be exported");
            }
            metrics::describe_histogram!(
                names::EVALUATED_SCORE,
                "Scores computed by the fold (every evaluation)"
            );
            for &(name, kind, help) in names::FACADE {
                match kind {
                    names::Kind::Counter => metrics::describe_counter!(name, help),
                    names::Kind::Gauge => metrics::describe_gauge!(name, help),
                    names::Kind::Histogram => metrics::describe_histogram!(name, help),
                }
            }
            handle
        })
        .clone()
}

/// Escapes a label value for the Prometheus text format.
fn escape_label(s: &str, out: &mut String) {
    for ch in s.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// The distribution, with segments beyond [`MAX_METRIC_SEGMENTS`] (those
/// with the fewest accounts, then by name) summed into [`OTHER_SEGMENT`].
/// Segment `None` is rendered as the empty label value, which Prometheus
/// reads as "no segment".
fn capped_distribution(read: &ReadSide) -> Vec<(String, SegmentCounts)> {
    let dist = read.distribution();
    let mut segs: Vec<(String, SegmentCounts)> = dist
        .into_iter()
        .map(|(s, c)| (s.unwrap_or_default(), c))
        .collect();
    if segs.len() > MAX_METRIC_SEGMENTS {
        segs.sort_by(|a, b| {
            b.1.accounts()
                .cmp(&a.1.accounts())
                .then_with(|| a.0.cmp(&b.0))
        });
        let mut other = SegmentCounts::default();
        for (_, c) in segs.drain(MAX_METRIC_SEGMENTS - 1..) {
            other.add(&c);
        }
        segs.push((OTHER_SEGMENT.to_string(), other));
        segs.sort_by(|a, b| a.0.cmp(&b.0));
    }
    segs
}

/// The recorder's metrics followed by the read side's gauges:
///
/// - `vitals_accounts{band,segment}`: every band for every segment seen;
/// - `vitals_accounts_cancelled{segment}`;
/// - `vitals_account_score_bucket{segment,le}`: *cumulative* counts (score
///   ≤ `le`, `le` = 10…100 and `+Inf`), as a Prometheus histogram's
///   buckets are, so Grafana's histogram and heatmap panels and
///   `histogram_quantile` work on it directly. It is a gauge (the current
///   distribution, which goes up and down), not a counter;
/// - `vitals_partition_restoring{partition}`.
///
/// No series carries an account id.
pub fn render_metrics(handle: &PrometheusHandle, read: &ReadSide) -> String {
    let mut out = handle.render();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    let segs = capped_distribution(read);
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "# HELP {0} Accounts by current band and segment (cancelled excluded)\n# TYPE {0} gauge",
        names::ACCOUNTS
    );
    for (seg, c) in &segs {
        for band in [Band::AtRisk, Band::Neutral, Band::Healthy] {
            out.push_str(names::ACCOUNTS);
            out.push_str("{band=\"");
            out.push_str(band.as_str());
            out.push_str("\",segment=\"");
            escape_label(seg, &mut out);
            let _ = writeln!(out, "\"}} {}", c.bands[band.to_u8() as usize].max(0));
        }
    }
    let _ = writeln!(
        out,
        "# HELP {0} Cancelled accounts by segment\n# TYPE {0} gauge",
        names::ACCOUNTS_CANCELLED
    );
    for (seg, c) in &segs {
        out.push_str(names::ACCOUNTS_CANCELLED);
        out.push_str("{segment=\"");
        escape_label(seg, &mut out);
        let _ = writeln!(out, "\"}} {}", c.cancelled.max(0));
    }
    let _ = writeln!(
        out,
        "# HELP {0} Accounts whose current score is at most le, by segment (cumulative; cancelled excluded)\n# TYPE {0} gauge",
        names::ACCOUNT_SCORE_BUCKET
    );
    for (seg, c) in &segs {
        let mut cum = 0i64;
        for (i, n) in c.buckets.iter().enumerate() {
            cum += n.max(&0);
            out.push_str(names::ACCOUNT_SCORE_BUCKET);
            out.push_str("{segment=\"");
            escape_label(seg, &mut out);
            let _ = writeln!(out, "\",le=\"{}\"}} {cum}", (i + 1) * 10);
        }
        out.push_str(names::ACCOUNT_SCORE_BUCKET);
        out.push_str("{segment=\"");
        escape_label(seg, &mut out);
        let _ = writeln!(out, "\",le=\"+Inf\"}} {cum}");
    }
    let _ = writeln!(
        out,
        "# HELP {0} 1 while the partition is restoring (snapshot and tail replay)\n# TYPE {0} gauge",
        names::PARTITION_RESTORING
    );
    for (p, st) in read.statuses() {
        let _ = writeln!(
            out,
            "{}{{partition=\"{p}\"}} {}",
            names::PARTITION_RESTORING,
            u8::from(st.restoring)
        );
    }
    render_portfolio(read, &mut out);
    out
}

/// Portfolio gauges by segment (`segment="__all__"`: every account of this
/// instance; `segment=""`: accounts without one). Rates are fractions
/// (0.05 = 5%), of the latest calendar month with data.
fn render_portfolio(read: &ReadSide, out: &mut String) {
    let _ = writeln!(
        out,
        "# HELP vitals_alert_precision Measured precision of each alert kind from alert.feedback\n# TYPE vitals_alert_precision gauge\n\
         # HELP vitals_alert_feedback Feedback verdicts received per alert kind\n# TYPE vitals_alert_feedback gauge"
    );
    for (k, p, n) in read.alert_precision() {
        if let Some(p) = p {
            let _ = writeln!(out, "vitals_alert_precision{{kind=\"{}\"}} {p}", k.as_str());
        }
        let _ = writeln!(out, "vitals_alert_feedback{{kind=\"{}\"}} {n}", k.as_str());
    }
    render_model_monitors(read, out);
    let Some(r) = read.portfolio_report() else {
        return;
    };
    let mut rows: Vec<(String, &crate::core::portfolio::PortfolioSummary)> =
        vec![("__all__".to_string(), &r.overall)];
    for s in r.segments.iter().take(MAX_METRIC_SEGMENTS) {
        rows.push((s.segment.clone().unwrap_or_default(), &s.summary));
    }
    type Get = fn(&crate::core::portfolio::PortfolioSummary) -> Option<f64>;
    let gauges: [(&str, &str, Get); 10] = [
        (
            "vitals_portfolio_nps",
            "Net promoter score (percent)",
            |s| s.nps.score,
        ),
        ("vitals_portfolio_csat", "Mean CSAT (1..5)", |s| s.csat.mean),
        ("vitals_portfolio_ces", "Mean CES (1..7)", |s| s.ces.mean),
        (
            "vitals_portfolio_mrr_cents",
            "Monthly recurring revenue (cents)",
            |s| Some(s.mrr_cents as f64),
        ),
        (
            "vitals_portfolio_active_accounts",
            "Active (not cancelled) accounts",
            |s| Some(s.active_accounts as f64),
        ),
        (
            "vitals_portfolio_clv_cents",
            "Estimated customer lifetime value (cents)",
            |s| s.clv.clv_cents,
        ),
        (
            "vitals_portfolio_gross_churn_rate",
            "Logo churn rate of the latest month",
            |s| s.months.last().and_then(|m| m.logo_churn_rate),
        ),
        (
            "vitals_portfolio_mrr_churn_rate",
            "MRR churn rate of the latest month",
            |s| s.months.last().and_then(|m| m.mrr_churn_rate),
        ),
        (
            "vitals_portfolio_nrr",
            "Net revenue retention of the latest month",
            |s| s.months.last().and_then(|m| m.nrr),
        ),
        (
            "vitals_portfolio_grr",
            "Gross revenue retention of the latest month",
            |s| s.months.last().and_then(|m| m.grr),
        ),
    ];
    for (name, help, get) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (seg, s) in &rows {
            if let Some(v) = get(s).filter(|v| v.is_finite()) {
                out.push_str(name);
                out.push_str("{segment=\"");
                escape_label(seg, out);
                let _ = writeln!(out, "\"}} {v}");
            }
        }
    }
}

/// `vitals_model_*`: the live model monitor (docs/MODEL.md, "Live model
/// monitoring") per scorecard, `role` = `live` or `shadow`.
fn render_model_monitors(read: &ReadSide, out: &mut String) {
    let monitors = read.model_monitors();
    type Get = fn(&crate::core::monitor::Tally) -> Option<f64>;
    let gauges: [(&str, &str, Get); 5] = [
        (
            "vitals_model_auc",
            "ROC AUC of cohort scores for churn within the monitor horizon",
            |t| t.auc(),
        ),
        (
            "vitals_model_precision",
            "Churned share of cohort entries in the at_risk band",
            |t| t.precision(),
        ),
        (
            "vitals_model_recall",
            "Share of churned cohort entries that were in the at_risk band",
            |t| t.recall(),
        ),
        (
            "vitals_model_churned",
            "Cohort entries labelled churned",
            |t| Some(t.churned_total() as f64),
        ),
        (
            "vitals_model_retained",
            "Cohort entries labelled retained",
            |t| Some(t.retained_total() as f64),
        ),
    ];
    for (name, help, get) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for m in &monitors {
            if let Some(v) = get(&m.tally).filter(|v| v.is_finite()) {
                let _ = write!(out, "{name}{{role=\"{}\",scorecard=\"", m.role);
                escape_label(&m.scorecard, out);
                let _ = writeln!(out, "\"}} {v}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_facade_metric_is_exported_with_its_help() {
        let handle = install_recorder();
        for &(name, kind, _) in names::FACADE {
            match kind {
                names::Kind::Counter => metrics::counter!(name).increment(1),
                names::Kind::Gauge => metrics::gauge!(name).set(1.0),
                names::Kind::Histogram => metrics::histogram!(name).record(0.5),
            }
        }
        let text = handle.render();
        for &(name, _, help) in names::FACADE {
            assert!(
                text.contains(&format!("# HELP {name} {help}\n")),
                "{name} has no HELP line:\n{text}"
            );
        }
    }
    use crate::codec::json;
    use crate::core::{Model, ModelConfig};

    fn fold(lines: &[&str]) -> Partition {
        let mut p = Partition::new(Arc::new(Model::new(ModelConfig::default())));
        let mut out = Vec::new();
        for l in lines {
            let ev = json::decode(l.as_bytes()).expect("test event");
            p.apply(&ev, &mut out);
        }
        p
    }

    const START: &str = r#"{"id":"e1","account_id":"acme","type":"subscription.started","time":"2026-01-05T00:00:00Z","plan":"team","mrr_cents":10000,"seats":10}"#;
    const SEG: &str = r#"{"id":"e2","account_id":"acme","type":"account.updated","time":"2026-01-05T01:00:00Z","segment":"smb"}"#;

    #[test]
    fn buckets_are_upper_inclusive() {
        assert_eq!(bucket_of(0.0), 0);
        assert_eq!(bucket_of(10.0), 0);
        assert_eq!(bucket_of(10.1), 1);
        assert_eq!(bucket_of(68.6), 6);
        assert_eq!(bucket_of(70.0), 6);
        assert_eq!(bucket_of(100.0), 9);
        assert_eq!(bucket_of(f64::NAN), 0);
    }

    #[test]
    fn counts_follow_replaced_views() {
        let rs = ReadSide::new();
        let p = fold(&[START]);
        rs.refresh(0, &p, &["acme", "acme"]);
        let d = rs.distribution();
        assert_eq!(d[&None].bands, [0, 1, 0]);
        assert_eq!(d[&None].buckets[6], 1);
        // Moving to a segment moves the count; the total stays one.
        let p = fold(&[START, SEG]);
        rs.refresh(0, &p, &["acme"]);
        let d = rs.distribution();
        assert_eq!(d[&None], SegmentCounts::default());
        assert_eq!(d[&Some("smb".into())].bands.iter().sum::<i64>(), 1);
        // Unknown to the partition: the view and its count go.
        let empty = fold(&[]);
        rs.refresh(0, &empty, &["acme"]);
        assert!(rs.get("acme").is_none());
        assert_eq!(
            rs.distribution()[&Some("smb".into())],
            SegmentCounts::default()
        );
        rs.refresh_all(0, &p);
        assert_eq!(rs.len(), 1);
        rs.drop_partition(0);
        assert!(rs.is_empty() && rs.distribution().is_empty());
    }

    #[test]
    fn readiness() {
        let rs = ReadSide::new();
        assert_eq!(rs.readiness(), Readiness::NoAssignment);
        rs.set_joined(true);
        assert!(rs.ready());
        rs.set_status(3, PartitionStatus::default());
        assert_eq!(rs.readiness(), Readiness::Restoring(vec![3]));
        rs.set_status(
            3,
            PartitionStatus {
                restoring: false,
                ..PartitionStatus::default()
            },
        );
        assert!(rs.ready());
    }

    #[test]
    fn history_merges_and_carries_forward() {
        let mut core = AlertState::default();
        core.record_score(100, 50.0);
        let h1 = ScoreHistory::merge(None, &core);
        assert_eq!(h1.points(), vec![(100, 50)]);
        // 60 days later: the core's ring holds 32 days (carried forward),
        // the days before come from h1, carried forward from day 100.
        core.record_score(160, 70.0);
        let h2 = ScoreHistory::merge(Some(&h1), &core);
        let pts = h2.points();
        assert_eq!(pts.len(), 61);
        assert_eq!(pts.first(), Some(&(100, 50)));
        assert!(pts[..60].iter().all(|&(_, s)| s == 50));
        assert_eq!(pts.last(), Some(&(160, 70)));
        // Without the old history only the core's 32 days are known.
        assert_eq!(ScoreHistory::merge(None, &core).points().len(), 32);
        // A gap longer than the window (a cancelled account has no timers):
        // the last known score is carried over the whole window.
        let mut core = AlertState::default();
        core.record_score(100, 50.0);
        let h1 = ScoreHistory::merge(None, &core);
        core.record_score(250, 20.0);
        let pts = ScoreHistory::merge(Some(&h1), &core).points();
        assert_eq!(pts.len(), 90);
        assert!(pts[..89].iter().all(|&(_, s)| s == 50));
        assert_eq!(pts[89], (250, 20));
    }

    /// Two workers publish their partitions batch by batch while a reader
    /// renders: afterwards the incremental counts equal a recount of the
    /// views.
    #[test]
    fn counts_equal_a_recount_after_concurrent_refreshes() {
        let rs = ReadSide::new();
        let segs = ["a", "b", "c"];
        std::thread::scope(|s| {
            for p in 0..2u32 {
                let rs = &rs;
                s.spawn(move || {
                    let mut part = Partition::new(Arc::new(Model::new(ModelConfig::default())));
                    for day in 0..40 {
                        let mut out = Vec::new();
                        let mut ids = Vec::new();
                        for i in 0..20 {
                            let id = format!("p{p}-{i}");
                            let seg = segs[(i + day) % 3];
                            let time = format!("2026-01-{:02}T{:02}:00:00Z", 1 + day % 28, i);
                            let kind = if day % 7 == 3 && i % 5 == 0 {
                                format!(r#""type":"invoice.payment_failed","invoice_id":"x{day}","amount_cents":100"#)
                            } else {
                                format!(r#""type":"account.updated","segment":"{seg}""#)
                            };
                            let l = format!(
                                r#"{{"id":"{id}-{day}","account_id":"{id}","time":"{time}",{kind}}}"#
                            );
                            let ev = json::decode(l.as_bytes()).expect("test event");
                            part.apply(&ev, &mut out);
                            ids.push(id);
                        }
                        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
                        rs.refresh(p, &part, &refs);
                    }
                });
            }
            s.spawn(|| {
                for _ in 0..50 {
                    let _ = rs.distribution();
                    let _ = rs.list(&ListFilter::default(), None, 10);
                }
            });
        });
        let all = rs.list(&ListFilter::default(), None, usize::MAX);
        assert_eq!(all.len(), 40);
        let mut recount: BTreeMap<Option<String>, SegmentCounts> = BTreeMap::new();
        for v in &all {
            recount
                .entry(v.health.segment.clone())
                .or_default()
                .add(&v.counts());
        }
        let mut got = rs.distribution();
        got.retain(|_, c| *c != SegmentCounts::default());
        assert_eq!(got, recount);
    }

    #[test]
    fn segments_beyond_the_cap_are_summed() {
        let rs = ReadSide::new();
        let mut p = Partition::new(Arc::new(Model::new(ModelConfig::default())));
        let mut out = Vec::new();
        let mut ids = Vec::new();
        for i in 0..MAX_METRIC_SEGMENTS + 5 {
            let l = format!(
                r#"{{"id":"u{i}","account_id":"a{i}","type":"account.updated","time":"2026-01-05T00:00:00Z","segment":"s{i:03}"}}"#
            );
            let ev = json::decode(l.as_bytes()).expect("test event");
            p.apply(&ev, &mut out);
            ids.push(format!("a{i}"));
        }
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        rs.refresh(0, &p, &refs);
        let segs = capped_distribution(&rs);
        assert_eq!(segs.len(), MAX_METRIC_SEGMENTS);
        let other = segs
            .iter()
            .find(|(s, _)| s == OTHER_SEGMENT)
            .expect("other");
        assert_eq!(other.1.accounts(), 6);
        let total: i64 = segs.iter().map(|(_, c)| c.accounts()).sum();
        assert_eq!(total, (MAX_METRIC_SEGMENTS + 5) as i64);
    }
}
