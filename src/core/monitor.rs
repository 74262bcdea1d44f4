//! Live model monitoring: how well is the scorecard predicting churn,
//! measured continuously from the outcomes the log brings — no backtest
//! needed to see a scorecard drift.
//!
//! Every [`MonitorConfig::every_days`] of event time (cohort times are
//! multiples of that period since the Unix epoch), when the watermark
//! passes cohort time `T`, the fold records a *cohort*: every subscribed,
//! not cancelled account that has a published score, with that score
//! (rounded) and its band. Each entry is then labelled:
//!
//! - **churned** as soon as the account's `subscription.cancelled` arrives
//!   with a time in `(T, T + horizon]` — the cancellation is attributed to
//!   the score and band the account had at the cohort time(s) up to one
//!   horizon before it;
//! - **retained** when the watermark passes `T + horizon` without one.
//!
//! Labelled entries go into a [`Tally`]: score histograms of churned and
//! retained entries (101 buckets, so ROC AUC is exact for the rounded
//! scores, ties counting ½ as in `vitals backtest`), and how many of each
//! were in the `at_risk` band — giving precision (churned among entries
//! flagged at risk) and recall (flagged among churned). Tallies of
//! partitions (and instances) merge by addition.
//!
//! Memory: at most `horizon / every + 1` open cohorts of 6 bytes per
//! account each (3 cohorts, 18 bytes per account, with the defaults).
//! Pure and deterministic like the rest of the core: replay and the live
//! service compute the same tally.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::account::NEVER;
use super::accounts::Accounts;
use super::event::Band;
use super::time::{Ts, MS_PER_DAY};

/// `[model.monitor]`: the live model monitor's horizon and cohort period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorConfig {
    /// A cohort entry counts as churned when the account cancels within
    /// this many days after the cohort time.
    pub horizon_days: u32,
    /// Days between cohorts.
    pub every_days: u32,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            horizon_days: 60,
            every_days: 30,
        }
    }
}

/// Score slot of an entry that has been labelled.
const RESOLVED: u8 = u8::MAX;

/// The accounts scored at one cohort time, sorted by account index.
///
/// Shared, so a snapshot copy of the partition takes no copy of them:
/// only a cancellation writes to a cohort (one entry's score), and the
/// first such write after a copy clones that cohort's scores alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cohort {
    pub at: Ts,
    /// Account indexes (arrival order in the partition), ascending.
    pub accounts: Arc<[u32]>,
    /// Rounded score 0..=100 per entry; [`RESOLVED`] once labelled.
    pub scores: Arc<Vec<u8>>,
    /// `Band::to_u8` per entry.
    pub bands: Arc<[u8]>,
}

/// Labelled cohort entries, summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Entries that churned within the horizon, by rounded score.
    pub churned: [u64; 101],
    /// Entries that did not, by rounded score.
    pub retained: [u64; 101],
    /// Of those, how many were in the `at_risk` band: `[retained, churned]`.
    pub at_risk: [u64; 2],
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            churned: [0; 101],
            retained: [0; 101],
            at_risk: [0; 2],
        }
    }
}

impl Tally {
    pub fn merge(&mut self, o: &Tally) {
        for (a, b) in self.churned.iter_mut().zip(&o.churned) {
            *a += b;
        }
        for (a, b) in self.retained.iter_mut().zip(&o.retained) {
            *a += b;
        }
        self.at_risk[0] += o.at_risk[0];
        self.at_risk[1] += o.at_risk[1];
    }

    pub fn churned_total(&self) -> u64 {
        self.churned.iter().sum()
    }

    pub fn retained_total(&self) -> u64 {
        self.retained.iter().sum()
    }

    /// ROC AUC, lower score = more risk: the probability that a churned
    /// entry scored below a retained one (ties ½). `None` without both.
    pub fn auc(&self) -> Option<f64> {
        let (pos, neg) = (self.churned_total(), self.retained_total());
        if pos == 0 || neg == 0 {
            return None;
        }
        // For each score, churned entries there beat every retained entry
        // above and tie with the retained entries at the same score.
        let mut above: u64 = neg;
        let mut twice_wins: u128 = 0;
        for s in 0..=100 {
            above -= self.retained[s];
            twice_wins += self.churned[s] as u128 * (2 * above as u128 + self.retained[s] as u128);
        }
        Some(twice_wins as f64 / (2.0 * pos as f64 * neg as f64))
    }

    /// Churned share of the entries flagged `at_risk`.
    pub fn precision(&self) -> Option<f64> {
        let flagged = self.at_risk[0] + self.at_risk[1];
        (flagged > 0).then(|| self.at_risk[1] as f64 / flagged as f64)
    }

    /// Share of churned entries that were flagged `at_risk`.
    pub fn recall(&self) -> Option<f64> {
        let pos = self.churned_total();
        (pos > 0).then(|| self.at_risk[1] as f64 / pos as f64)
    }
}

/// The tally in numbers (`vitals replay`'s summary, the HTTP API).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MonitorReport {
    pub churned: u64,
    pub retained: u64,
    pub auc: Option<f64>,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
}

impl Tally {
    pub fn report(&self) -> MonitorReport {
        MonitorReport {
            churned: self.churned_total(),
            retained: self.retained_total(),
            auc: self.auc(),
            precision: self.precision(),
            recall: self.recall(),
        }
    }
}

/// Open cohorts and the tally of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Monitor {
    /// The next cohort time (`NEVER` until the first watermark).
    pub next_at: Ts,
    /// Open cohorts, oldest first.
    pub cohorts: VecDeque<Cohort>,
    pub tally: Tally,
}

impl Monitor {
    pub fn new() -> Self {
        Monitor {
            next_at: NEVER,
            ..Default::default()
        }
    }

    /// Takes the cohorts the watermark `wm` has passed and labels the
    /// entries whose horizon it has passed.
    pub fn roll(&mut self, wm: Ts, accounts: &Accounts, cfg: &MonitorConfig) {
        if wm == NEVER {
            return;
        }
        let every = cfg.every_days.max(1) as i64 * MS_PER_DAY;
        let horizon = cfg.horizon_days as i64 * MS_PER_DAY;
        if self.next_at == NEVER {
            // The first cohort time after the first watermark.
            self.next_at = (wm.div_euclid(every) + 1) * every;
        }
        while let Some(c) = self.cohorts.front() {
            if c.at + horizon > wm {
                break;
            }
            if let Some(c) = self.cohorts.pop_front() {
                self.retain_unresolved(&c);
            }
        }
        while wm >= self.next_at {
            let at = self.next_at;
            self.next_at += every;
            // A cohort whose horizon has passed too (the watermark jumped)
            // would only label every entry retained without evidence.
            if at + horizon > wm {
                self.cohorts.push_back(take(at, accounts));
            }
        }
    }

    fn retain_unresolved(&mut self, c: &Cohort) {
        for (&s, &b) in c.scores.iter().zip(c.bands.iter()) {
            if s != RESOLVED {
                self.tally.retained[s as usize] += 1;
                if b == Band::AtRisk.to_u8() {
                    self.tally.at_risk[0] += 1;
                }
            }
        }
    }

    /// Account `idx` cancelled at `time`: its open entries from cohorts
    /// before `time` are churned; entries of cohorts at or after it (a late
    /// cancellation) are dropped unlabelled.
    pub fn cancelled(&mut self, idx: usize, time: Ts) {
        let Ok(idx) = u32::try_from(idx) else {
            return;
        };
        for c in &mut self.cohorts {
            let Ok(i) = c.accounts.binary_search(&idx) else {
                continue;
            };
            let s = c.scores[i];
            if s == RESOLVED {
                continue;
            }
            Arc::make_mut(&mut c.scores)[i] = RESOLVED;
            if c.at < time {
                self.tally.churned[s as usize] += 1;
                if c.bands[i] == Band::AtRisk.to_u8() {
                    self.tally.at_risk[1] += 1;
                }
            }
        }
    }

    /// Entries in open cohorts (memory accounting).
    pub fn open_entries(&self) -> usize {
        self.cohorts.iter().map(|c| c.accounts.len()).sum()
    }
}

fn take(at: Ts, accounts: &Accounts) -> Cohort {
    let (mut ids, mut scores, mut bands) = (Vec::new(), Vec::new(), Vec::new());
    for (i, acc) in accounts.iter().enumerate() {
        let Some(p) = &acc.alert.published else {
            continue;
        };
        if acc.subscribed_at == NEVER || acc.is_cancelled() || p.cancelled {
            continue;
        }
        let Ok(i) = u32::try_from(i) else {
            break;
        };
        ids.push(i);
        scores.push(p.score().round().clamp(0.0, 100.0) as u8);
        bands.push(acc.alert.band.to_u8());
    }
    Cohort {
        at,
        accounts: ids.into(),
        scores: Arc::new(scores),
        bands: bands.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute force over all (churned, retained) pairs.
    fn brute(t: &Tally) -> f64 {
        let mut num = 0.0;
        let mut den = 0.0;
        for (p, &np) in t.churned.iter().enumerate() {
            for (n, &nn) in t.retained.iter().enumerate() {
                let pairs = (np * nn) as f64;
                den += pairs;
                if p < n {
                    num += pairs;
                } else if p == n {
                    num += pairs / 2.0;
                }
            }
        }
        num / den
    }

    #[test]
    fn auc_matches_brute_force() {
        let mut t = Tally::default();
        assert_eq!(t.auc(), None);
        for (s, n) in [(10, 3), (40, 1), (55, 2), (90, 1)] {
            t.churned[s] = n;
        }
        for (s, n) in [(40, 2), (55, 5), (70, 9), (100, 4), (0, 1)] {
            t.retained[s] = n;
        }
        assert_eq!(t.auc(), Some(brute(&t)));
        t.at_risk = [4, 3];
        assert_eq!(t.precision(), Some(3.0 / 7.0));
        assert_eq!(t.recall(), Some(3.0 / 7.0));
        let mut u = t;
        u.merge(&t);
        assert_eq!(u.churned_total(), 14);
        assert_eq!(u.auc(), t.auc());
    }
}
