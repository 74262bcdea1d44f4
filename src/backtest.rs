//! How well do scores and alerts predict churn on a log? Replays the log
//! through the fold and measures, against the log's own cancellations:
//!
//! - **ROC AUC** of the score at an evaluation time `T` for "cancels within
//!   the horizon after `T`", over accounts subscribed and not cancelled at
//!   `T` (a lower score should mean more risk; ties count one half);
//! - **at_risk alert precision**: the share of `at_risk` alerts followed by
//!   the account's cancellation within `alert_window_days` (alerts too close
//!   to the end of the log to know are left out);
//! - **recall**: the share of cancellations preceded by an `at_risk` alert
//!   within `alert_window_days` (cancellations in the first
//!   `alert_window_days` of the log are left out);
//! - **lead time**: days from the first such alert to the cancellation.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::core::score::evaluate;
use crate::core::time::{Ts, MS_PER_DAY};
use crate::core::{AlertKind, Event, EventKind, Model, ModelConfig, Partition, Signal};

/// Backtest parameters.
#[derive(Debug, Clone)]
pub struct Options {
    /// Evaluation times.
    pub at: Vec<Ts>,
    pub horizon_days: u32,
    pub alert_window_days: u32,
}

/// Results at one evaluation time.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AtResult {
    pub at: String,
    pub accounts: u64,
    pub churners: u64,
    pub auc: Option<f64>,
    /// AUC of each component alone (lower component = more risk), in
    /// `score::COMPONENTS` order: which parts of the scorecard carry the
    /// prediction.
    pub component_auc: Vec<(String, Option<f64>)>,
}

/// Backtest results.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub model: String,
    pub horizon_days: u32,
    pub evaluations: Vec<AtResult>,
    pub alert_window_days: u32,
    pub at_risk_alerts: u64,
    pub at_risk_alerts_judged: u64,
    pub precision: Option<f64>,
    pub cancellations_judged: u64,
    pub recall: Option<f64>,
    pub median_lead_days: Option<f64>,
    pub alerts_per_100_accounts_per_month: Option<f64>,
}

/// ROC AUC where a *lower* score means *more* risk: the probability that
/// a random churner scores below a random non-churner (ties count ½).
/// `None` when either class is empty.
pub fn auc(scores: &[(f64, bool)]) -> Option<f64> {
    let pos = scores.iter().filter(|s| s.1).count();
    let neg = scores.len() - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    let mut v: Vec<(f64, bool)> = scores.to_vec();
    // Ascending score: rank-sum of negatives (the ones that should score high).
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum_neg = 0.0;
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j < v.len() && v[j].0 == v[i].0 {
            j += 1;
        }
        // Ranks i+1..=j share their average.
        let avg = (i + 1 + j) as f64 / 2.0;
        rank_sum_neg += avg * v[i..j].iter().filter(|s| !s.1).count() as f64;
        i = j;
    }
    let u = rank_sum_neg - (neg * (neg + 1)) as f64 / 2.0;
    Some(u / (pos as f64 * neg as f64))
}

/// Runs the backtest over `events` (in log order).
pub fn run<'a>(
    events: impl IntoIterator<Item = Event<'a>>,
    model: ModelConfig,
    o: &Options,
) -> Report {
    let model = Arc::new(Model::new(model));
    let mut part = Partition::new(Arc::clone(&model));
    let mut out = Vec::new();
    let mut at: Vec<Ts> = o.at.clone();
    at.sort_unstable();
    let mut next_at = 0;
    // Scores at each evaluation time: account → (score, components).
    let mut snaps: Vec<Vec<(String, f64, [f64; 6])>> = Vec::new();
    let mut cancels: BTreeMap<String, Vec<Ts>> = BTreeMap::new();
    let mut alerts: Vec<(String, Ts)> = Vec::new();
    let mut first: Option<Ts> = None;
    let mut last: Ts = Ts::MIN;
    let snapshot = |part: &Partition, t: Ts| -> Vec<(String, f64, [f64; 6])> {
        part.accounts
            .iter()
            .filter(|a| {
                a.subscribed_at != crate::core::account::NEVER
                    && !a.is_cancelled()
                    && a.first_seen <= t
            })
            .map(|a| {
                let sc = &part.model.cards[a.scorecard as usize].1;
                let e = evaluate(a, t.max(a.last_eval), sc, &part.model.cfg);
                (a.id.to_string(), e.score, e.components)
            })
            .collect()
    };
    for ev in events {
        while next_at < at.len() && ev.time >= at[next_at] {
            snaps.push(snapshot(&part, at[next_at]));
            next_at += 1;
        }
        first.get_or_insert(ev.time);
        last = last.max(ev.time);
        if let EventKind::SubscriptionCancelled { .. } = ev.kind {
            cancels
                .entry(ev.account_id.to_string())
                .or_default()
                .push(ev.time);
        }
        part.apply(&ev, &mut out);
        for s in out.drain(..) {
            if let Signal::Alert(a) = s {
                if a.kind == AlertKind::AtRisk {
                    alerts.push((a.account_id, a.time));
                }
            }
        }
    }
    while next_at < at.len() {
        snaps.push(snapshot(&part, at[next_at]));
        next_at += 1;
    }
    let horizon = o.horizon_days as i64 * MS_PER_DAY;
    let window = o.alert_window_days as i64 * MS_PER_DAY;
    let cancel_after = |acc: &str, t: Ts| -> Option<Ts> {
        cancels
            .get(acc)
            .and_then(|v| v.iter().copied().find(|&c| c > t))
    };
    let evaluations = at
        .iter()
        .zip(&snaps)
        .map(|(&t, snap)| {
            let churns: Vec<bool> = snap
                .iter()
                .map(|(id, _, _)| cancel_after(id, t).is_some_and(|c| c <= t + horizon))
                .collect();
            let labelled: Vec<(f64, bool)> =
                snap.iter().zip(&churns).map(|(s, &c)| (s.1, c)).collect();
            let component_auc = crate::core::score::COMPONENTS
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let l: Vec<(f64, bool)> = snap
                        .iter()
                        .zip(&churns)
                        .map(|(s, &c)| (s.2[i], c))
                        .collect();
                    (name.to_string(), auc(&l))
                })
                .collect();
            AtResult {
                at: crate::codec::timefmt::format(t),
                accounts: labelled.len() as u64,
                churners: labelled.iter().filter(|l| l.1).count() as u64,
                auc: auc(&labelled),
                component_auc,
            }
        })
        .collect();

    // Alerts: precision over alerts whose window ends inside the log.
    let judged: Vec<&(String, Ts)> = alerts.iter().filter(|a| a.1 + window <= last).collect();
    let tp = judged
        .iter()
        .filter(|(id, t)| cancel_after(id, *t).is_some_and(|c| c <= t + window))
        .count();
    let precision = (!judged.is_empty()).then(|| tp as f64 / judged.len() as f64);
    // Recall and lead time over cancellations after the first window.
    let start = first.unwrap_or(0);
    let mut by_acc: BTreeMap<&str, Vec<Ts>> = BTreeMap::new();
    for (id, t) in &alerts {
        by_acc.entry(id).or_default().push(*t);
    }
    let mut judged_cancels = 0u64;
    let mut caught = 0u64;
    let mut leads = Vec::new();
    for (id, cs) in &cancels {
        for &c in cs {
            if c < start + window {
                continue;
            }
            judged_cancels += 1;
            if let Some(first_alert) = by_acc.get(id.as_str()).and_then(|v| {
                v.iter()
                    .copied()
                    .filter(|&t| t <= c && t >= c - window)
                    .min()
            }) {
                caught += 1;
                leads.push((c - first_alert) as f64 / MS_PER_DAY as f64);
            }
        }
    }
    leads.sort_by(f64::total_cmp);
    let median = (!leads.is_empty()).then(|| {
        let n = leads.len();
        if n % 2 == 1 {
            leads[n / 2]
        } else {
            (leads[n / 2 - 1] + leads[n / 2]) / 2.0
        }
    });
    let months = (last - start).max(0) as f64 / (30.0 * MS_PER_DAY as f64);
    let accounts = part.accounts.len() as f64;
    Report {
        model: model.id.to_string(),
        horizon_days: o.horizon_days,
        evaluations,
        alert_window_days: o.alert_window_days,
        at_risk_alerts: alerts.len() as u64,
        at_risk_alerts_judged: judged.len() as u64,
        precision,
        cancellations_judged: judged_cancels,
        recall: (judged_cancels > 0).then(|| caught as f64 / judged_cancels as f64),
        median_lead_days: median,
        alerts_per_100_accounts_per_month: (months > 0.0 && accounts > 0.0)
            .then(|| alerts.len() as f64 / accounts * 100.0 / months),
    }
}

#[cfg(test)]
mod tests {
    use super::auc;

    /// Brute force over all (churner, non-churner) pairs.
    fn brute(s: &[(f64, bool)]) -> f64 {
        let mut num = 0.0;
        let mut den = 0.0;
        for p in s.iter().filter(|x| x.1) {
            for n in s.iter().filter(|x| !x.1) {
                den += 1.0;
                if p.0 < n.0 {
                    num += 1.0;
                } else if p.0 == n.0 {
                    num += 0.5;
                }
            }
        }
        num / den
    }

    #[test]
    fn auc_matches_brute_force_with_ties() {
        let s = [
            (10.0, true),
            (20.0, false),
            (20.0, true),
            (35.5, false),
            (5.0, true),
            (70.0, false),
            (20.0, false),
            (90.0, true),
        ];
        assert_eq!(auc(&s), Some(brute(&s)));
        assert_eq!(auc(&[(1.0, true)]), None);
        assert_eq!(auc(&[(1.0, true), (2.0, false)]), Some(1.0));
        assert_eq!(auc(&[(3.0, true), (2.0, false)]), Some(0.0));
    }
}
