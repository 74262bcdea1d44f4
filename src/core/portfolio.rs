//! Portfolio analytics: the numbers customer-success strategy is measured
//! by — NPS, CSAT, CES, logo and MRR churn per calendar month, gross and
//! net revenue retention, expansion and contraction, customer lifetime
//! value, active accounts and accounts per band — overall and by segment.
//!
//! Maintained incrementally by the fold (`Partition`), so `vitals replay`
//! and the live service report the same. Pure and deterministic: no I/O,
//! no clock, every map ordered, every sum an integer (so the order in
//! which accounts or partitions are added never changes a result).
//!
//! Two kinds of state:
//! - **Current** aggregates per segment (accounts, active accounts, MRR,
//!   bands, latest survey answers). They are the sum of each account's
//!   [`Contribution`], a pure function of the account's state, so the fold
//!   keeps them by difference (remove the old contribution, add the new
//!   one) and a restored partition rebuilds them from its accounts.
//! - **Monthly flows** per segment ([`MonthFlows`]): opening balances,
//!   new business, churn, expansion, contraction. These are history, kept
//!   for [`MONTHS_KEPT`] months and carried in snapshots.
//!
//! Memory is per segment and per month, never per account. Segments are
//! keyed by name (not by the partition's interned label), so portfolios of
//! different partitions [`merge`](Portfolio::merge) into one.
//!
//! Formulas: docs/MODEL.md, "Portfolio analytics".

use std::collections::BTreeMap;

use serde::Serialize;

use super::account::{Account, NEVER};
use super::event::{Band, EventKind};
use super::time::{day_of, day_start, Ts};

/// Months of flows kept (the current month and the 23 before it).
pub const MONTHS_KEPT: i32 = 24;
/// A survey answer counts in the portfolio for this many days.
pub const SURVEY_WINDOW_DAYS: i32 = 90;
/// Complete months pooled for the churn rate behind CLV.
pub const CLV_CHURN_MONTHS: i32 = 3;
/// No month yet (nothing folded).
pub const NO_MONTH: i32 = i32::MIN;

// ---------------------------------------------------------------------------
// Calendar months (UTC), by event time.

/// `(year, month 1..=12, day 1..=31)` of a day since the epoch
/// (H. Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i32) -> (i32, u32, u32) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y as i32, m, d)
}

/// Days since the epoch of a civil date (H. Hinnant's `days_from_civil`).
pub fn days_from_civil(y: i32, m: u32, d: u32) -> i32 {
    let y = y as i64 - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe - 719_468) as i32
}

/// The calendar month (UTC) of a time, as `year·12 + (month − 1)`.
pub fn month_of(t: Ts) -> i32 {
    let (y, m, _) = civil_from_days(day_of(t));
    y * 12 + m as i32 - 1
}

/// The first millisecond of a month index.
pub fn month_start(month: i32) -> Ts {
    let y = month.div_euclid(12);
    let m = month.rem_euclid(12) as u32 + 1;
    day_start(days_from_civil(y, m, 1))
}

/// `YYYY-MM` of a month index.
pub fn month_name(month: i32) -> String {
    format!(
        "{:04}-{:02}",
        month.div_euclid(12),
        month.rem_euclid(12) + 1
    )
}

// ---------------------------------------------------------------------------
// One account's part in the current aggregates.

/// NPS answer classes, in [`Current::nps`] order.
const DETRACTOR: usize = 0;
const PASSIVE: usize = 1;
const PROMOTER: usize = 2;

fn nps_class(score: u8) -> usize {
    match score {
        0..=6 => DETRACTOR,
        7..=8 => PASSIVE,
        _ => PROMOTER,
    }
}

/// What one account adds to its segment's current aggregates: a pure
/// function of the account's state ([`Contribution::of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Contribution {
    /// The account's segment label (partition-local index, 0 = none).
    pub segment: u16,
    /// Not cancelled: counts in `accounts`, bands and surveys.
    pub present: bool,
    /// The current band, once scored (present accounts only).
    pub band: Option<Band>,
    /// Subscribed and not cancelled: counts in `active_accounts` and MRR.
    pub active: bool,
    pub mrr_cents: u64,
    /// Latest answers within [`SURVEY_WINDOW_DAYS`] of the account's last
    /// scoring (present accounts only).
    pub nps: Option<u8>,
    pub csat: Option<u8>,
    pub ces: Option<u8>,
}

impl Contribution {
    pub fn of(acc: &Account) -> Self {
        let present = !acc.is_cancelled();
        let active = present && acc.subscribed_at != NEVER;
        let scored = acc.last_eval != NEVER;
        let sv = acc.surveys();
        let recent = |x: Option<(u8, i32)>| {
            x.filter(|&(_, d)| {
                present && (!scored || day_of(acc.last_eval) - d <= SURVEY_WINDOW_DAYS)
            })
            .map(|x| x.0)
        };
        Contribution {
            segment: acc.segment,
            present,
            band: (present && scored).then_some(acc.alert.band),
            active,
            mrr_cents: if active { acc.mrr_cents() } else { 0 },
            nps: recent(sv.last_nps),
            csat: recent(sv.last_csat),
            ces: recent(sv.last_ces),
        }
    }
}

// ---------------------------------------------------------------------------
// Aggregates.

/// A segment's current aggregates: sums of its accounts' contributions.
/// Integer sums, so adding in any order gives the same value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Current {
    /// Accounts not cancelled.
    pub accounts: u64,
    /// Accounts subscribed and not cancelled.
    pub active_accounts: u64,
    /// Σ MRR of active accounts.
    pub mrr_cents: u64,
    /// Present, scored accounts by band ([`Band::to_u8`] order).
    pub bands: [u64; 3],
    /// Latest NPS answers: detractors (0–6), passives (7–8), promoters (9–10).
    pub nps: [u64; 3],
    pub csat_sum: u64,
    pub csat_n: u64,
    pub ces_sum: u64,
    pub ces_n: u64,
}

impl Current {
    /// Adds (`sign` true) or removes a contribution. Wrapping arithmetic:
    /// removal always follows the matching addition, so no value wraps in
    /// a consistent state, and the fold can never panic here.
    fn apply(&mut self, c: &Contribution, sign: bool) {
        let d = |x: &mut u64, v: u64| {
            *x = if sign {
                x.wrapping_add(v)
            } else {
                x.wrapping_sub(v)
            }
        };
        d(&mut self.accounts, c.present as u64);
        d(&mut self.active_accounts, c.active as u64);
        d(&mut self.mrr_cents, c.mrr_cents);
        if let Some(b) = c.band {
            d(&mut self.bands[b.to_u8() as usize], 1);
        }
        if let Some(s) = c.nps {
            d(&mut self.nps[nps_class(s)], 1);
        }
        if let Some(s) = c.csat {
            d(&mut self.csat_sum, s as u64);
            d(&mut self.csat_n, 1);
        }
        if let Some(s) = c.ces {
            d(&mut self.ces_sum, s as u64);
            d(&mut self.ces_n, 1);
        }
    }

    /// Adds `o` (wrapping, like [`Current::apply`]).
    fn add(&mut self, o: &Current) {
        let d = |x: &mut u64, v: u64| *x = x.wrapping_add(v);
        d(&mut self.accounts, o.accounts);
        d(&mut self.active_accounts, o.active_accounts);
        d(&mut self.mrr_cents, o.mrr_cents);
        for i in 0..3 {
            d(&mut self.bands[i], o.bands[i]);
            d(&mut self.nps[i], o.nps[i]);
        }
        d(&mut self.csat_sum, o.csat_sum);
        d(&mut self.csat_n, o.csat_n);
        d(&mut self.ces_sum, o.ces_sum);
        d(&mut self.ces_n, o.ces_n);
    }

    fn is_empty(&self) -> bool {
        *self == Current::default()
    }
}

/// One calendar month of one segment. The *cohort* of a month is the set
/// of accounts active (subscribed, not cancelled) at its first instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MonthFlows {
    /// Cohort size and its MRR at the month's start.
    pub start_accounts: u64,
    pub start_mrr_cents: u64,
    /// Subscriptions started in the month by accounts not active before
    /// (new logos and reactivations), and their starting MRR.
    pub new_accounts: u64,
    pub new_mrr_cents: u64,
    /// Cohort accounts cancelled in the month, and their MRR when cancelled.
    pub churned_accounts: u64,
    pub churned_mrr_cents: u64,
    /// MRR increases / decreases of cohort accounts in the month.
    pub expansion_mrr_cents: u64,
    pub contraction_mrr_cents: u64,
}

impl MonthFlows {
    fn add(&mut self, o: &MonthFlows) {
        self.start_accounts += o.start_accounts;
        self.start_mrr_cents += o.start_mrr_cents;
        self.new_accounts += o.new_accounts;
        self.new_mrr_cents += o.new_mrr_cents;
        self.churned_accounts += o.churned_accounts;
        self.churned_mrr_cents += o.churned_mrr_cents;
        self.expansion_mrr_cents += o.expansion_mrr_cents;
        self.contraction_mrr_cents += o.contraction_mrr_cents;
    }
}

/// One segment: current aggregates and monthly flows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentPortfolio {
    pub current: Current,
    /// By month index; at most [`MONTHS_KEPT`] months.
    pub months: BTreeMap<i32, MonthFlows>,
}

/// The portfolio of one partition, or of several merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Portfolio {
    /// The newest month the portfolio has rolled into (that of the newest
    /// event time seen), or [`NO_MONTH`].
    pub month: i32,
    /// By segment name; `""` holds accounts without a segment. Segments
    /// with nothing current and no flows are dropped.
    pub segments: BTreeMap<Box<str>, SegmentPortfolio>,
    /// Start of the month after `month` (derived; makes the per-event
    /// roll check one comparison).
    next_start: Ts,
}

impl Default for Portfolio {
    fn default() -> Self {
        Portfolio {
            month: NO_MONTH,
            segments: BTreeMap::new(),
            next_start: Ts::MIN,
        }
    }
}

/// Accounts' contributions summed by segment label (its partition-local
/// index): a restore sums them where it decodes the accounts, on several
/// threads, and merges the sums.
#[derive(Debug, Clone, Default)]
pub struct SegmentSums(hashbrown::HashMap<u16, Current>);

impl SegmentSums {
    pub fn add(&mut self, acc: &Account) {
        let c = Contribution::of(acc);
        self.0.entry(c.segment).or_default().apply(&c, true);
    }

    /// Adds `o`'s sums (wrapping, like [`SegmentSums::add`]).
    pub fn merge(&mut self, o: SegmentSums) {
        for (seg, c) in o.0 {
            self.0.entry(seg).or_default().add(&c);
        }
    }
}

impl Portfolio {
    /// Rebuilds a portfolio from its monthly flows (from a snapshot) and
    /// the accounts' contributions (`sums`).
    pub fn restore<'a>(
        month: i32,
        months: impl IntoIterator<Item = (&'a str, i32, MonthFlows)>,
        sums: SegmentSums,
        segment_name: impl Fn(u16) -> &'a str,
    ) -> Self {
        let mut p = Portfolio::default();
        p.set_month(month);
        for (seg, m, f) in months {
            p.seg_mut(seg).months.insert(m, f);
        }
        // In label order, so that the result does not depend on the map's.
        let mut sums: Vec<(u16, Current)> = sums.0.into_iter().collect();
        sums.sort_unstable_by_key(|&(seg, _)| seg);
        for (seg, c) in sums {
            p.seg_mut(segment_name(seg)).current.add(&c);
        }
        p.segments
            .retain(|_, s| !s.current.is_empty() || !s.months.is_empty());
        p
    }

    fn set_month(&mut self, month: i32) {
        self.month = month;
        self.next_start = if month == NO_MONTH {
            Ts::MIN
        } else {
            month_start(month + 1)
        };
    }

    fn seg_mut(&mut self, name: &str) -> &mut SegmentPortfolio {
        if !self.segments.contains_key(name) {
            self.segments
                .insert(name.into(), SegmentPortfolio::default());
        }
        self.segments.get_mut(name).expect("inserted above")
    }

    /// Adds an account's contribution (a new account) to segment `seg`.
    pub fn add(&mut self, seg: &str, c: &Contribution) {
        self.seg_mut(seg).current.apply(c, true);
    }

    /// Moves an account from contribution `before` (in segment `seg_before`)
    /// to `after` (in `seg_after`).
    pub fn shift(
        &mut self,
        seg_before: &str,
        before: &Contribution,
        seg_after: &str,
        after: &Contribution,
    ) {
        self.seg_mut(seg_after).current.apply(after, true);
        let s = self.seg_mut(seg_before);
        s.current.apply(before, false);
        if s.current.is_empty() && s.months.is_empty() {
            self.segments.remove(seg_before);
        }
    }

    /// Rolls into the month of `t` if it is newer than the current one.
    #[inline]
    pub fn roll_to_time(&mut self, t: Ts) {
        if t >= self.next_start {
            self.roll_to(month_of(t));
        }
    }

    /// Rolls forward to `month`: each month entered opens with the
    /// segment's current active accounts and MRR as its cohort. Months
    /// older than [`MONTHS_KEPT`] are dropped.
    pub fn roll_to(&mut self, month: i32) {
        if self.month == NO_MONTH {
            self.set_month(month);
            return;
        }
        if month <= self.month {
            return;
        }
        let first = (self.month + 1).max(month - MONTHS_KEPT + 1);
        for s in self.segments.values_mut() {
            let c = &s.current;
            if c.active_accounts > 0 || c.mrr_cents > 0 {
                for m in first..=month {
                    let row = s.months.entry(m).or_default();
                    row.start_accounts += c.active_accounts;
                    row.start_mrr_cents += c.mrr_cents;
                }
            }
        }
        self.set_month(month);
        self.prune();
    }

    fn oldest_kept(&self) -> i32 {
        self.month.saturating_sub(MONTHS_KEPT - 1)
    }

    fn prune(&mut self) {
        let oldest = self.oldest_kept();
        for s in self.segments.values_mut() {
            while let Some((&m, _)) = s.months.first_key_value() {
                if m >= oldest {
                    break;
                }
                s.months.pop_first();
            }
        }
        self.segments
            .retain(|_, s| !s.current.is_empty() || !s.months.is_empty());
    }

    /// Records the monthly flows a subscription event causes, from the
    /// account's state *before* the event is applied. Events of months no
    /// longer kept are not recorded.
    pub fn record_subscription(
        &mut self,
        seg: &str,
        acc: &Account,
        time: Ts,
        kind: &EventKind<'_>,
    ) {
        let month = month_of(time);
        if self.month == NO_MONTH || month < self.oldest_kept() || month > self.month {
            return;
        }
        let active = acc.subscribed_at != NEVER && !acc.is_cancelled();
        let cohort = active && acc.subscribed_at < month_start(month);
        let old = acc.mrr_cents();
        let change = |f: &mut MonthFlows, new: u64| {
            if new > old {
                f.expansion_mrr_cents += new - old;
            } else {
                f.contraction_mrr_cents += old - new;
            }
        };
        fn row<'p>(p: &'p mut Portfolio, seg: &str, month: i32) -> &'p mut MonthFlows {
            p.seg_mut(seg).months.entry(month).or_default()
        }
        match kind {
            EventKind::SubscriptionStarted { mrr_cents, .. } => {
                if !active {
                    let f = row(self, seg, month);
                    f.new_accounts += 1;
                    f.new_mrr_cents += mrr_cents;
                } else if cohort && *mrr_cents != old {
                    change(row(self, seg, month), *mrr_cents);
                }
            }
            EventKind::SubscriptionChanged { mrr_cents, .. }
            | EventKind::SubscriptionRenewed {
                mrr_cents: Some(mrr_cents),
                ..
            } if cohort && *mrr_cents != old => {
                change(row(self, seg, month), *mrr_cents);
            }
            EventKind::SubscriptionCancelled { .. } if cohort => {
                let f = row(self, seg, month);
                f.churned_accounts += 1;
                f.churned_mrr_cents += old;
            }
            _ => {}
        }
    }

    /// Adds another portfolio (another partition's) into this one. Each is
    /// first rolled to the newer of the two months, so opening balances
    /// cover both; the result equals one partition having folded both
    /// partitions' accounts.
    pub fn merge(&mut self, other: &Portfolio) {
        if other.month == NO_MONTH {
            return;
        }
        let target = self.month.max(other.month);
        self.roll_to(target);
        let oldest = self.oldest_kept();
        for (name, seg) in &other.segments {
            let mine = self.seg_mut(name);
            mine.current.add(&seg.current);
            for (&m, f) in seg.months.range(oldest..) {
                mine.months.entry(m).or_default().add(f);
            }
            // `other` has not rolled past its own month: its cohort for
            // each later month is its current active accounts.
            let c = &seg.current;
            if c.active_accounts > 0 || c.mrr_cents > 0 {
                for m in (other.month + 1).max(oldest)..=target {
                    let row = mine.months.entry(m).or_default();
                    row.start_accounts += c.active_accounts;
                    row.start_mrr_cents += c.mrr_cents;
                }
            }
        }
    }

    /// The report: overall (all segments summed) and per segment.
    pub fn report(&self) -> PortfolioReport {
        let mut overall = SegmentPortfolio::default();
        for s in self.segments.values() {
            overall.current.add(&s.current);
            for (&m, f) in &s.months {
                overall.months.entry(m).or_default().add(f);
            }
        }
        PortfolioReport {
            month: (self.month != NO_MONTH).then(|| month_name(self.month)),
            overall: summarize(&overall, self.month),
            segments: self
                .segments
                .iter()
                .map(|(name, s)| SegmentReport {
                    segment: (!name.is_empty()).then(|| name.to_string()),
                    summary: summarize(s, self.month),
                })
                .collect(),
        }
    }
}

// ---------------------------------------------------------------------------
// The report (what `portfolio.json` holds).

/// Portfolio analytics, overall and by segment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PortfolioReport {
    /// The current (newest, possibly incomplete) month, `YYYY-MM`.
    pub month: Option<String>,
    pub overall: PortfolioSummary,
    /// By segment name; accounts without a segment have `segment: null`.
    pub segments: Vec<SegmentReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SegmentReport {
    pub segment: Option<String>,
    #[serde(flatten)]
    pub summary: PortfolioSummary,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PortfolioSummary {
    /// Accounts not cancelled.
    pub accounts: u64,
    /// Accounts subscribed and not cancelled.
    pub active_accounts: u64,
    pub mrr_cents: u64,
    /// Average MRR per active account (cents, 2 decimals).
    pub arpa_cents: Option<f64>,
    pub bands: BandCounts,
    pub nps: NpsReport,
    pub csat: SurveyMean,
    pub ces: SurveyMean,
    pub clv: ClvReport,
    /// Oldest first; the last is the current, incomplete month.
    pub months: Vec<MonthReport>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BandCounts {
    pub healthy: u64,
    pub neutral: u64,
    pub at_risk: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NpsReport {
    /// % promoters − % detractors, −100..100 (1 decimal); None without answers.
    pub score: Option<f64>,
    pub responses: u64,
    pub promoters: u64,
    pub passives: u64,
    pub detractors: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SurveyMean {
    /// Mean of the latest answers (2 decimals); None without answers.
    pub mean: Option<f64>,
    pub responses: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClvReport {
    /// Pooled logo churn rate of the last complete months (4 decimals).
    pub monthly_churn_rate: Option<f64>,
    /// The complete months pooled (`YYYY-MM`, oldest first).
    pub churn_months: Vec<String>,
    /// ARPA ÷ monthly churn rate, in cents (rounded); None when the churn
    /// rate is 0 or unknown, or there are no active accounts.
    pub clv_cents: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MonthReport {
    pub month: String,
    #[serde(flatten)]
    pub flows: MonthFlows,
    /// churned accounts ÷ start accounts (4 decimals).
    pub logo_churn_rate: Option<f64>,
    /// churned MRR ÷ start MRR.
    pub mrr_churn_rate: Option<f64>,
    /// (start MRR − contraction − churned MRR) ÷ start MRR.
    pub grr: Option<f64>,
    /// (start MRR + expansion − contraction − churned MRR) ÷ start MRR.
    pub nrr: Option<f64>,
}

fn round_to(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

fn ratio(num: f64, den: u64, places: i32) -> Option<f64> {
    (den > 0).then(|| round_to(num / den as f64, places))
}

fn summarize(s: &SegmentPortfolio, current_month: i32) -> PortfolioSummary {
    let c = &s.current;
    let responses = c.nps.iter().sum::<u64>();
    let nps = ratio(
        100.0 * (c.nps[PROMOTER] as f64 - c.nps[DETRACTOR] as f64),
        responses,
        1,
    );
    let arpa = ratio(c.mrr_cents as f64, c.active_accounts, 2);
    // CLV: churn pooled over the last complete months with a cohort.
    let mut churned = 0u64;
    let mut start = 0u64;
    let mut churn_months = Vec::new();
    if current_month != NO_MONTH {
        for (&m, f) in s
            .months
            .range(current_month - CLV_CHURN_MONTHS..current_month)
        {
            if f.start_accounts > 0 {
                churned += f.churned_accounts;
                start += f.start_accounts;
                churn_months.push(month_name(m));
            }
        }
    }
    let churn_rate = ratio(churned as f64, start, 4);
    let clv = match (arpa, start > 0 && churned > 0) {
        // Unrounded rate, so the CLV does not carry the rate's rounding.
        (Some(_), true) => Some(
            (c.mrr_cents as f64 / c.active_accounts as f64 / (churned as f64 / start as f64))
                .round(),
        ),
        _ => None,
    };
    PortfolioSummary {
        accounts: c.accounts,
        active_accounts: c.active_accounts,
        mrr_cents: c.mrr_cents,
        arpa_cents: arpa,
        bands: BandCounts {
            healthy: c.bands[Band::Healthy.to_u8() as usize],
            neutral: c.bands[Band::Neutral.to_u8() as usize],
            at_risk: c.bands[Band::AtRisk.to_u8() as usize],
        },
        nps: NpsReport {
            score: nps,
            responses,
            promoters: c.nps[PROMOTER],
            passives: c.nps[PASSIVE],
            detractors: c.nps[DETRACTOR],
        },
        csat: SurveyMean {
            mean: ratio(c.csat_sum as f64, c.csat_n, 2),
            responses: c.csat_n,
        },
        ces: SurveyMean {
            mean: ratio(c.ces_sum as f64, c.ces_n, 2),
            responses: c.ces_n,
        },
        clv: ClvReport {
            monthly_churn_rate: churn_rate,
            churn_months,
            clv_cents: clv,
        },
        months: s
            .months
            .iter()
            .map(|(&m, f)| {
                let start_mrr = f.start_mrr_cents as f64;
                let lost = f.contraction_mrr_cents as f64 + f.churned_mrr_cents as f64;
                MonthReport {
                    month: month_name(m),
                    flows: *f,
                    logo_churn_rate: ratio(f.churned_accounts as f64, f.start_accounts, 4),
                    mrr_churn_rate: ratio(f.churned_mrr_cents as f64, f.start_mrr_cents, 4),
                    grr: ratio(start_mrr - lost, f.start_mrr_cents, 4),
                    nrr: ratio(
                        start_mrr + f.expansion_mrr_cents as f64 - lost,
                        f.start_mrr_cents,
                        4,
                    ),
                }
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_round_trip_through_civil_dates() {
        // 2024-02-29 is day 19782; 1970-01-01 is day 0.
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        for d in (-800_000..800_000).step_by(997) {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
        let m = month_of(day_start(19_782) + 5);
        assert_eq!(month_name(m), "2024-02");
        assert_eq!(month_start(m), day_start(days_from_civil(2024, 2, 1)));
        assert_eq!(month_name(m + 11), "2025-01");
        assert_eq!(month_of(month_start(m + 1) - 1), m);
        assert_eq!(month_of(month_start(m + 1)), m + 1);
    }
}
