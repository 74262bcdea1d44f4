//! Intervention impact: does a kind of `cs.touchpoint` (a QBR, a training,
//! a chatbot conversation…) change what happens to accounts afterwards?
//!
//! For each touchpoint the fold opens a *treated* observation of the
//! account and up to [`CONTROLS_PER_TOUCHPOINT`] *control* observations of
//! comparable accounts that had none: same partition, same segment and
//! same band at that moment, scored, not cancelled, and without any
//! touchpoint in the [`CONTROL_CLEAN_DAYS`] before. Controls are taken
//! deterministically: probing the partition's accounts in arrival order
//! from a position given by a hash of the touchpoint's event id, at most
//! [`MAX_PROBES`] probes. A touchpoint with no control is counted as
//! unmatched and not observed.
//!
//! When the watermark passes `touchpoint + h` days (h in [`HORIZONS`]),
//! each observation's outcome is read from the account's state: score
//! change = the score in effect at day `touchpoint + h` (the daily score
//! ring; scores carry forward) − the latest daily score before the
//! touchpoint; churned = cancelled in `(touchpoint, touchpoint + h]`. A
//! control that received a touchpoint meanwhile is excluded (counted).
//! Each touchpoint weighs as much as its controls together (a control's
//! weight is 1/k of the treated one for k controls), so the effect is the
//! mean over touchpoints of (treated − mean of its controls).
//!
//! Memory: at most [`MAX_OPEN`] open observations per partition (more are
//! dropped and counted) and [`MAX_KINDS`] kinds; results are sums per
//! kind and horizon. Integer sums, so the result does not depend on the
//! order observations close, and results of partitions merge by addition.
//! Pure and deterministic, like the rest of the core.
//!
//! Formulas: docs/MODEL.md, "Intervention impact".

use std::collections::BTreeMap;

use serde::Serialize;

use super::account::NEVER;
use super::accounts::Accounts;
use super::cow_deque::CowDeque;
use super::time::{day_of, Ts, MS_PER_DAY};

/// Outcome horizons, in days after the touchpoint.
pub const HORIZONS: [i32; 2] = [30, 90];
/// Controls sought per touchpoint.
pub const CONTROLS_PER_TOUCHPOINT: usize = 3;
/// Accounts probed per touchpoint when looking for controls.
pub const MAX_PROBES: usize = 256;
/// A control must have had no touchpoint for this many days.
pub const CONTROL_CLEAN_DAYS: i64 = 90;
/// Open observations kept per partition.
pub const MAX_OPEN: usize = 65_536;
/// Distinct touchpoint kinds tracked per partition.
pub const MAX_KINDS: usize = 32;
/// A treated observation's weight; its controls share it (divisible by
/// 1, 2 and 3 = any number of controls up to [`CONTROLS_PER_TOUCHPOINT`]).
pub const WEIGHT: u8 = 6;

/// One account followed after a touchpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// Index of the account in its partition (arrival order).
    pub account: u32,
    /// Index into [`Interventions::kinds`].
    pub kind: u16,
    pub treated: bool,
    /// [`WEIGHT`] for the treated account, `WEIGHT / k` for each of k controls.
    pub weight: u8,
    /// Time of the touchpoint.
    pub start: Ts,
    /// The account's latest daily score before the touchpoint.
    pub start_score: u8,
}

/// Weighted sums of one arm (treated or control) at one horizon.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Arm {
    /// Observations resolved.
    pub n: u64,
    /// Σ weight.
    pub weight: u64,
    /// Σ weight · score change (points).
    pub score_change: i64,
    /// Σ weight over observations that churned.
    pub churned: u64,
}

impl Arm {
    fn add(&mut self, o: &Arm) {
        self.n += o.n;
        self.weight += o.weight;
        self.score_change += o.score_change;
        self.churned += o.churned;
    }
}

/// Results of one kind at one horizon.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HorizonOutcome {
    pub treated: Arm,
    pub control: Arm,
    /// Controls that received a touchpoint before the horizon.
    pub controls_excluded: u64,
    /// Observations whose end score was no longer held.
    pub unresolved: u64,
}

impl HorizonOutcome {
    fn add(&mut self, o: &HorizonOutcome) {
        self.treated.add(&o.treated);
        self.control.add(&o.control);
        self.controls_excluded += o.controls_excluded;
        self.unresolved += o.unresolved;
    }
}

/// Results of one touchpoint kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KindOutcome {
    /// Touchpoints of this kind seen.
    pub touchpoints: u64,
    /// Touchpoints on accounts not yet scored or cancelled (no baseline).
    pub skipped: u64,
    /// Touchpoints for which no control was found.
    pub unmatched: u64,
    /// Touchpoints observed (treated observations opened).
    pub matched: u64,
    /// Control observations opened.
    pub controls: u64,
    /// By horizon, in [`HORIZONS`] order.
    pub horizons: [HorizonOutcome; 2],
}

impl KindOutcome {
    fn add(&mut self, o: &KindOutcome) {
        self.touchpoints += o.touchpoints;
        self.skipped += o.skipped;
        self.unmatched += o.unmatched;
        self.matched += o.matched;
        self.controls += o.controls;
        for (h, oh) in self.horizons.iter_mut().zip(&o.horizons) {
            h.add(oh);
        }
    }
}

/// The results: mergeable across partitions by addition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterventionOutcomes {
    pub kinds: BTreeMap<Box<str>, KindOutcome>,
    /// Observations still waiting for a horizon.
    pub open: u64,
    /// Observations not opened because [`MAX_OPEN`] were open.
    pub dropped: u64,
    /// Touchpoints of kinds beyond [`MAX_KINDS`], not tracked.
    pub kinds_ignored: u64,
}

impl InterventionOutcomes {
    /// Adds another partition's results.
    pub fn merge(&mut self, other: &InterventionOutcomes) {
        for (k, o) in &other.kinds {
            match self.kinds.get_mut(k) {
                Some(mine) => mine.add(o),
                None => {
                    self.kinds.insert(k.clone(), *o);
                }
            }
        }
        self.open += other.open;
        self.dropped += other.dropped;
        self.kinds_ignored += other.kinds_ignored;
    }

    /// The report (what `interventions.json` and `GET /v1/interventions`
    /// show).
    pub fn report(&self) -> InterventionReport {
        InterventionReport {
            kinds: self
                .kinds
                .iter()
                .map(|(k, o)| KindReport {
                    kind: k.to_string(),
                    touchpoints: o.touchpoints,
                    matched: o.matched,
                    unmatched: o.unmatched,
                    skipped: o.skipped,
                    controls: o.controls,
                    horizons: HORIZONS
                        .iter()
                        .zip(&o.horizons)
                        .map(|(&days, h)| horizon_report(days, h))
                        .collect(),
                })
                .collect(),
            open_observations: self.open,
            dropped_observations: self.dropped,
            kinds_ignored: self.kinds_ignored,
        }
    }
}

/// One partition's tracker: open observations and results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interventions {
    /// Kinds seen, in first-seen order (observations refer to them by index).
    pub kinds: Vec<Box<str>>,
    /// Observations waiting for each horizon, in the order they entered it.
    /// Shared in chunks, so a snapshot's copy costs microseconds.
    pub pending: [CowDeque<Observation>; 2],
    pub outcomes: InterventionOutcomes,
    /// When the earliest pending observation is due (derived).
    next_due: Ts,
}

impl Default for Interventions {
    fn default() -> Self {
        Interventions {
            kinds: Vec::new(),
            pending: [CowDeque::new(), CowDeque::new()],
            outcomes: InterventionOutcomes::default(),
            next_due: Ts::MAX,
        }
    }
}

fn horizon_ms(h: usize) -> Ts {
    HORIZONS[h] as Ts * MS_PER_DAY
}

impl Interventions {
    /// Rebuilds a tracker from its parts (snapshot restore).
    pub fn from_parts(
        kinds: Vec<Box<str>>,
        pending: [CowDeque<Observation>; 2],
        mut outcomes: InterventionOutcomes,
    ) -> Self {
        outcomes.open = (pending[0].len() + pending[1].len()) as u64;
        let mut t = Interventions {
            kinds,
            pending,
            outcomes,
            next_due: Ts::MAX,
        };
        t.update_due();
        t
    }

    /// The report of this partition alone.
    pub fn report(&self) -> InterventionReport {
        self.outcomes.report()
    }

    fn open_count(&self) -> usize {
        self.pending[0].len() + self.pending[1].len()
    }

    fn update_due(&mut self) {
        self.next_due = (0..2)
            .filter_map(|h| self.pending[h].front().map(|o| o.start + horizon_ms(h)))
            .min()
            .unwrap_or(Ts::MAX);
    }

    /// A touchpoint of `kind` on account `idx` at `time`, seen *before* it
    /// is applied to the account. `seed` (a hash of the event) picks where
    /// the search for controls starts.
    pub fn touchpoint(&mut self, kind: &str, idx: usize, time: Ts, seed: u64, accounts: &Accounts) {
        let k = match self.kinds.iter().position(|n| &**n == kind) {
            Some(k) => k,
            None if self.kinds.len() < MAX_KINDS => {
                self.kinds.push(kind.into());
                self.kinds.len() - 1
            }
            None => {
                self.outcomes.kinds_ignored += 1;
                return;
            }
        };
        let open = self.open_count();
        let acc = &accounts[idx];
        let start_score = acc
            .alert
            .latest_score()
            .filter(|_| acc.last_eval != NEVER && !acc.is_cancelled());
        // Controls: same segment and band, scored, not cancelled, no
        // touchpoint for CONTROL_CLEAN_DAYS.
        let mut found = [(0u32, 0u8); CONTROLS_PER_TOUCHPOINT];
        let mut k_found = 0;
        if start_score.is_some() {
            let n = accounts.len();
            let clean_since = time.saturating_sub(CONTROL_CLEAN_DAYS * MS_PER_DAY);
            let from = (seed % n as u64) as usize;
            for p in 0..n.min(MAX_PROBES) {
                let j = (from + p) % n;
                let c = &accounts[j];
                if j == idx
                    || c.segment != acc.segment
                    || c.alert.band != acc.alert.band
                    || c.last_eval == NEVER
                    || c.is_cancelled()
                    || (c.last_touchpoint != NEVER && c.last_touchpoint >= clean_since)
                {
                    continue;
                }
                if let Some(s) = c.alert.latest_score() {
                    found[k_found] = (j as u32, s);
                    k_found += 1;
                    if k_found == CONTROLS_PER_TOUCHPOINT {
                        break;
                    }
                }
            }
        }
        let too_many = open + 1 + k_found > MAX_OPEN;
        if too_many && k_found > 0 {
            self.outcomes.dropped += 1 + k_found as u64;
        }
        let out = match self.outcomes.kinds.get_mut(kind) {
            Some(o) => o,
            None => self.outcomes.kinds.entry(kind.into()).or_default(),
        };
        out.touchpoints += 1;
        let Some(start_score) = start_score else {
            out.skipped += 1;
            return;
        };
        if k_found == 0 {
            out.unmatched += 1;
            return;
        }
        if too_many {
            return;
        }
        out.matched += 1;
        out.controls += k_found as u64;
        let kind = k as u16;
        let q = &mut self.pending[0];
        q.push_back(Observation {
            account: idx as u32,
            kind,
            treated: true,
            weight: WEIGHT,
            start: time,
            start_score,
        });
        for &(j, s) in &found[..k_found] {
            q.push_back(Observation {
                account: j,
                kind,
                treated: false,
                weight: WEIGHT / k_found as u8,
                start: time,
                start_score: s,
            });
        }
        self.outcomes.open += 1 + k_found as u64;
        self.update_due();
    }

    /// Resolves every observation whose horizon the watermark `wm` has
    /// passed. One comparison when none is due.
    #[inline]
    pub fn close_due(&mut self, wm: Ts, accounts: &Accounts) {
        if wm >= self.next_due {
            self.close(wm, accounts);
        }
    }

    fn close(&mut self, wm: Ts, accounts: &Accounts) {
        for h in 0..2 {
            while let Some(&o) = self.pending[h].front() {
                if o.start + horizon_ms(h) > wm {
                    break;
                }
                self.pending[h].pop_front();
                self.resolve(&o, h, accounts);
                if h == 0 {
                    self.pending[1].push_back(o);
                } else {
                    self.outcomes.open -= 1;
                }
            }
        }
        self.update_due();
    }

    fn resolve(&mut self, o: &Observation, h: usize, accounts: &Accounts) {
        let Some(name) = self.kinds.get(o.kind as usize) else {
            return;
        };
        let Some(out) = self.outcomes.kinds.get_mut(&**name) else {
            return;
        };
        let ho = &mut out.horizons[h];
        let Some(acc) = accounts.get(o.account as usize) else {
            ho.unresolved += 1;
            return;
        };
        let end = o.start + horizon_ms(h);
        if !o.treated && acc.last_touchpoint != NEVER && acc.last_touchpoint > o.start {
            ho.controls_excluded += 1;
            return;
        }
        let Some(s) = acc.alert.score_as_of(day_of(end)) else {
            ho.unresolved += 1;
            return;
        };
        let change = s as i64 - o.start_score as i64;
        let churned =
            acc.cancelled_at != NEVER && acc.cancelled_at > o.start && acc.cancelled_at <= end;
        let arm = if o.treated {
            &mut ho.treated
        } else {
            &mut ho.control
        };
        let w = o.weight as u64;
        arm.n += 1;
        arm.weight += w;
        arm.score_change += change * w as i64;
        if churned {
            arm.churned += w;
        }
    }
}

// ---------------------------------------------------------------------------
// The report.

/// Intervention impact by touchpoint kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InterventionReport {
    /// By kind name.
    pub kinds: Vec<KindReport>,
    pub open_observations: u64,
    pub dropped_observations: u64,
    pub kinds_ignored: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KindReport {
    pub kind: String,
    pub touchpoints: u64,
    /// Touchpoints observed with at least one control.
    pub matched: u64,
    /// Touchpoints for which no comparable account was found.
    pub unmatched: u64,
    /// Touchpoints on accounts not yet scored, or cancelled.
    pub skipped: u64,
    /// Control observations opened.
    pub controls: u64,
    /// One per horizon (30 and 90 days).
    pub horizons: Vec<HorizonReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HorizonReport {
    pub days: i32,
    /// Observations resolved (treated n, control n).
    pub treated_n: u64,
    pub control_n: u64,
    pub controls_excluded: u64,
    pub unresolved: u64,
    /// Weighted mean score change, points (2 decimals).
    pub treated_score_change: Option<f64>,
    pub control_score_change: Option<f64>,
    /// treated − control score change: > 0 means the touchpoint helped.
    pub score_effect: Option<f64>,
    /// Weighted share churned within the horizon (4 decimals).
    pub treated_churn_rate: Option<f64>,
    pub control_churn_rate: Option<f64>,
    /// treated − control churn rate: < 0 means fewer churned.
    pub churn_effect: Option<f64>,
}

fn round_to(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

fn horizon_report(days: i32, h: &HorizonOutcome) -> HorizonReport {
    let mean = |a: &Arm| (a.weight > 0).then(|| a.score_change as f64 / a.weight as f64);
    let rate = |a: &Arm| (a.weight > 0).then(|| a.churned as f64 / a.weight as f64);
    let (tm, cm) = (mean(&h.treated), mean(&h.control));
    let (tr, cr) = (rate(&h.treated), rate(&h.control));
    HorizonReport {
        days,
        treated_n: h.treated.n,
        control_n: h.control.n,
        controls_excluded: h.controls_excluded,
        unresolved: h.unresolved,
        treated_score_change: tm.map(|x| round_to(x, 2)),
        control_score_change: cm.map(|x| round_to(x, 2)),
        score_effect: tm.zip(cm).map(|(t, c)| round_to(t - c, 2)),
        treated_churn_rate: tr.map(|x| round_to(x, 4)),
        control_churn_rate: cr.map(|x| round_to(x, 4)),
        churn_effect: tr.zip(cr).map(|(t, c)| round_to(t - c, 4)),
    }
}
