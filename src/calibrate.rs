//! `vitals calibrate`: fit a scorecard to the outcomes in an event log.
//!
//! 1. **One pass** with the base config: at every evaluation time (every
//!    `every`, from one interval after the first event's day), each
//!    subscribed, not-cancelled account's six component scores, labelled by
//!    whether it cancels within the horizon; and the base model's alerts.
//! 2. **Time-based split**: the log's span is cut at `split` (0.7 = the
//!    first 70%). Training observations are the evaluation times whose
//!    horizon ends before the cut (no outcome from the held-out part leaks
//!    in); held-out ones start at or after the cut.
//! 3. **Weights**: L2-regularised logistic regression of "churns" on the
//!    standardised components, by Newton's method with step halving
//!    (deterministic: sums in a fixed order). A lower score must mean more
//!    risk and weights must be ≥ 0 (`ModelConfig` validation), so a
//!    component whose coefficient comes out ≥ 0 (not protective) is
//!    dropped, the one with the largest first, and the rest refitted.
//!    Weight `c` = −β_c / σ_c, normalised to sum 1 and rounded to 4
//!    decimals. The default scorecard is fitted on all training
//!    observations. A segment with at least `min_churners` churning
//!    accounts in training gets its own scorecard only if that wins on an
//!    inner validation inside the training part (`choose_segments`):
//!    scores from different weights are on different scales, so a segment
//!    scorecard can rank its own accounts a little better and still spoil
//!    the ranking across segments.
//! 4. **Thresholds**: for each scorecard, `at_risk_below` is chosen so that
//!    its at_risk alert load over the training part is closest to the
//!    target, *measured by replaying* the training part with candidate
//!    thresholds (all scorecards' candidates in the same lanes): a grid
//!    10, 25, …, 85, then three rounds of 3 points evenly inside the
//!    bracket of the target (each round cuts it to a quarter: from 15
//!    points wide to under 0.25). The load is not linear in the threshold
//!    (it climbs steeply where many accounts' scores sit), so bisection,
//!    not interpolation. The gap `healthy_at − at_risk_below` and
//!    `hysteresis` stay as in the base scorecard (healthy_at capped at
//!    100). The target defaults to the base model's own load over the
//!    training part: the same work for the team, better aimed. A default
//!    scorecard no account of the log uses (every segment has its own) is
//!    calibrated on all accounts, in lanes without the segment scorecards.
//! 5. **Held-out report**: the calibrated model replayed over the whole log;
//!    both models measured on the held-out part only (evaluation times
//!    after the cut; alerts raised after it; cancellations after it).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::backtest::fold::{self, LaneResult, Log, Schedule};
use crate::backtest::{
    self, BacktestError, Difference, Measure, ModelReport, Period, MS_PER_DAY_F,
};
use crate::core::config::{BandsPatch, Scorecard, ScorecardPatch, Weights, WeightsPatch};
use crate::core::score::COMPONENTS;
use crate::core::time::{Ts, MS_PER_DAY};
use crate::core::ModelConfig;

/// L2 penalty on the standardised coefficients (the intercept is free).
pub const L2: f64 = 1.0;

/// Calibration parameters.
#[derive(Debug, Clone)]
pub struct Options {
    pub horizon: Ts,
    /// Interval between evaluation times.
    pub every: Ts,
    pub alert_window: Ts,
    /// Share of the log's span used for fitting (0 < split < 1).
    pub split: f64,
    /// At-risk alerts per 100 accounts per month wanted; `None` = the base
    /// model's load over the training part.
    pub target_alerts: Option<f64>,
    /// A segment gets its own scorecard with at least this many distinct
    /// accounts churning in the training observations.
    pub min_churners: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            horizon: 60 * MS_PER_DAY,
            every: 7 * MS_PER_DAY,
            alert_window: 90 * MS_PER_DAY,
            split: 0.7,
            target_alerts: None,
            min_churners: 50,
        }
    }
}

/// One scorecard's fit.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CardFit {
    /// `default` or the segment's name.
    pub card: String,
    /// Training observations / distinct churning accounts it was fitted on
    /// (all accounts for `default`).
    pub observations: u64,
    pub churning_accounts: u64,
    /// Components left out because their coefficient was not protective.
    pub dropped: Vec<&'static str>,
    pub weights: Weights,
    pub at_risk_below: f64,
    pub healthy_at: f64,
    pub hysteresis: f64,
    /// Accounts using this scorecard in the calibrated config.
    pub accounts: u64,
    /// Its at_risk alert load over the training part, replayed.
    pub training_alerts_per_100_accounts_per_month: Option<f64>,
    /// ... and the base model's over the same accounts.
    pub base_training_alerts_per_100_accounts_per_month: Option<f64>,
    /// Every `at_risk_below` tried and its training load, ascending.
    pub search: Vec<(f64, Option<f64>)>,
}

/// Observations in one part of the split.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Part {
    pub from: String,
    pub to: String,
    pub evaluation_times: u64,
    pub observations: u64,
    pub churners: u64,
}

/// What `calibrate` did and how the result compares on held-out data.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CalibrationReport {
    pub events: u64,
    pub invalid_lines: u64,
    pub accounts: u64,
    pub horizon_days: f64,
    pub every_days: f64,
    pub alert_window_days: f64,
    pub split: f64,
    pub training: Part,
    pub held_out: Part,
    pub target_alerts_per_100_accounts_per_month: f64,
    /// `flag` or `base model's training load`.
    pub target_from: &'static str,
    pub l2: f64,
    pub min_churners: u32,
    pub cards: Vec<CardFit>,
    /// Which segments got a scorecard of their own, and why.
    pub segments: Vec<SegmentChoice>,
    /// Segment patches of the base config not carried over (no fit for
    /// them: their accounts use the calibrated default).
    pub dropped_segment_patches: Vec<String>,
    /// The calibrated config's `version`.
    pub version: String,
    /// Both models on the held-out part.
    pub base: ModelReport,
    pub calibrated: ModelReport,
    pub difference: Difference,
}

/// A calibrated config and its report.
#[derive(Debug, Clone)]
pub struct Calibration {
    pub model: ModelConfig,
    /// The `[model]` section as TOML, loadable with `--config`.
    pub toml: String,
    pub report: CalibrationReport,
}

// ------------------------------------------------------------ regression

/// Penalised log-likelihood of `beta`, with its gradient and the negated
/// Hessian when `derivs`.
struct Logit<'a> {
    x: &'a [[f64; 6]],
    y: &'a [bool],
    active: &'a [usize],
    mu: &'a [f64; 6],
    sd: &'a [f64; 6],
}

impl Logit<'_> {
    // Matrix code reads best with indices.
    #[allow(clippy::needless_range_loop)]
    fn eval(&self, beta: &[f64], derivs: bool) -> (f64, Vec<f64>, Vec<Vec<f64>>) {
        let d = beta.len();
        let mut ll = 0.0;
        let mut g = vec![0.0; if derivs { d } else { 0 }];
        let mut h = vec![vec![0.0; d]; if derivs { d } else { 0 }];
        let mut z = vec![0.0; d];
        for (xi, &yi) in self.x.iter().zip(self.y) {
            z[0] = 1.0;
            for (k, &c) in self.active.iter().enumerate() {
                z[k + 1] = (xi[c] - self.mu[c]) / self.sd[c];
            }
            let eta: f64 = z.iter().zip(beta).map(|(a, b)| a * b).sum();
            // log(1 + e^η), stably.
            let softplus = if eta > 0.0 {
                eta + (-eta).exp().ln_1p()
            } else {
                eta.exp().ln_1p()
            };
            let yv = f64::from(u8::from(yi));
            ll += yv * eta - softplus;
            if derivs {
                let p = 1.0 / (1.0 + (-eta).exp());
                let w = p * (1.0 - p);
                for a in 0..d {
                    g[a] += (yv - p) * z[a];
                    for b in 0..=a {
                        h[a][b] += w * z[a] * z[b];
                    }
                }
            }
        }
        ll -= 0.5 * L2 * beta[1..].iter().map(|b| b * b).sum::<f64>();
        if derivs {
            for a in 0..d {
                for b in 0..a {
                    h[b][a] = h[a][b];
                }
            }
            for k in 1..d {
                g[k] -= L2 * beta[k];
                h[k][k] += L2;
            }
        }
        (ll, g, h)
    }
}

/// Logistic model `P(churn) = σ(b₀ + Σ βⱼ·(xⱼ − μⱼ)/σⱼ)` over the active
/// components, fitted by Newton's method with step halving (the penalised
/// log-likelihood never decreases); returns `(b₀, β…)` in `active` order.
fn newton(x: &[[f64; 6]], y: &[bool], active: &[usize], mu: &[f64; 6], sd: &[f64; 6]) -> Vec<f64> {
    let f = Logit {
        x,
        y,
        active,
        mu,
        sd,
    };
    let n = x.len() as f64;
    let pos = y.iter().filter(|&&c| c).count() as f64;
    let rate = ((pos + 0.5) / (n + 1.0)).clamp(1e-9, 1.0 - 1e-9);
    let mut beta = vec![0.0; active.len() + 1];
    beta[0] = (rate / (1.0 - rate)).ln();
    for _ in 0..100 {
        let (ll, g, h) = f.eval(&beta, true);
        let Some(step) = solve(h, g) else { break };
        let mut t = 1.0;
        let mut moved = false;
        for _ in 0..40 {
            let cand: Vec<f64> = beta.iter().zip(&step).map(|(b, s)| b + t * s).collect();
            if f.eval(&cand, false).0 >= ll {
                beta = cand;
                moved = true;
                break;
            }
            t /= 2.0;
        }
        let size = step.iter().fold(0.0f64, |m, s| m.max((t * s).abs()));
        if !moved || size < 1e-10 {
            break;
        }
    }
    beta
}

/// Solves `a·x = b` by Gaussian elimination with partial pivoting.
#[allow(clippy::needless_range_loop)]
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for col in 0..n {
        let piv = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[piv][col].abs() < 1e-300 {
            return None;
        }
        a.swap(col, piv);
        b.swap(col, piv);
        for row in col + 1..n {
            let f = a[row][col] / a[col][col];
            if f != 0.0 {
                for k in col..n {
                    a[row][k] -= f * a[col][k];
                }
                b[row] -= f * b[col];
            }
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

/// Fitted component weights (sum 1, 4 decimals) and the components
/// dropped; `None` when nothing protective is left.
pub fn fit_weights(x: &[[f64; 6]], y: &[bool]) -> Option<([f64; 6], Vec<usize>)> {
    if x.is_empty() || y.iter().all(|&c| c) || !y.iter().any(|&c| c) {
        return None;
    }
    let n = x.len() as f64;
    let mut mu = [0.0; 6];
    let mut sd = [0.0; 6];
    for c in 0..6 {
        mu[c] = x.iter().map(|r| r[c]).sum::<f64>() / n;
        sd[c] = (x.iter().map(|r| (r[c] - mu[c]).powi(2)).sum::<f64>() / n).sqrt();
    }
    let mut active: Vec<usize> = (0..6).filter(|&c| sd[c] > 1e-9).collect();
    let mut dropped: Vec<usize> = (0..6).filter(|&c| sd[c] <= 1e-9).collect();
    while !active.is_empty() {
        let beta = newton(x, y, &active, &mu, &sd);
        // The least protective component, if any is not protective.
        let worst = active
            .iter()
            .enumerate()
            .filter(|(k, _)| beta[k + 1] >= 0.0)
            .max_by(|a, b| beta[a.0 + 1].total_cmp(&beta[b.0 + 1]))
            .map(|(k, _)| k);
        if let Some(k) = worst {
            dropped.push(active.remove(k));
            continue;
        }
        let mut w = [0.0; 6];
        for (k, &c) in active.iter().enumerate() {
            w[c] = -beta[k + 1] / sd[c];
        }
        let sum: f64 = w.iter().sum();
        if !(sum > 0.0 && sum.is_finite()) {
            return None;
        }
        for v in &mut w {
            *v = (*v / sum * 10_000.0).round() / 10_000.0;
        }
        if w.iter().sum::<f64>() <= 0.0 {
            return None;
        }
        dropped.sort_unstable();
        return Some((w, dropped));
    }
    None
}

fn weights(w: [f64; 6]) -> Weights {
    Weights {
        usage: w[0],
        adoption: w[1],
        support: w[2],
        financial: w[3],
        sentiment: w[4],
        lifecycle: w[5],
    }
}

// ------------------------------------------------------------ thresholds

/// A training observation.
struct TrainObs<'a> {
    x: [f64; 6],
    y: bool,
    group: &'a str,
    account: u32,
    /// Index among the training evaluation times.
    date: usize,
}

/// A segment's own scorecard must beat the default's ROC AUC on the
/// segment's inner-validation observations by this much.
pub const MIN_SEGMENT_GAIN: f64 = 0.005;

/// Whether a segment gets its own scorecard, and why.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SegmentChoice {
    pub segment: String,
    /// Distinct accounts churning in its training observations.
    pub churning_accounts: u64,
    pub own_scorecard: bool,
    /// ROC AUC on the segment's inner-validation observations with weights
    /// fitted on the earlier training dates: the default scorecard's fit
    /// (on all segments) and the segment's own ...
    pub inner_auc_default: Option<f64>,
    pub inner_auc_own: Option<f64>,
    /// ... and over all segments' inner-validation observations, with the
    /// segment's own weights for its accounts.
    pub inner_auc_all_default: Option<f64>,
    pub inner_auc_all_own: Option<f64>,
    pub reason: &'static str,
}

fn score_with(x: &[f64; 6], w: &[f64; 6]) -> f64 {
    x.iter().zip(w).map(|(a, b)| a * b).sum::<f64>() / w.iter().sum::<f64>()
}

/// Segment scorecards are worth it only when they rank the segment's
/// accounts better *and* do not spoil the ranking across segments (scores
/// from different weights are on different scales). Decided without the
/// held-out part: the training dates are split again, the last 30% of them
/// being the inner validation; weights are fitted on the earlier dates
/// whose horizon ends before the first inner-validation date. A segment
/// with at least `min_churners` churning accounts gets its own scorecard
/// when its own fit beats the default fit by [`MIN_SEGMENT_GAIN`] on its
/// inner-validation observations and the ROC AUC over all of them does
/// not drop.
fn choose_segments(
    obs: &[TrainObs<'_>],
    train: &[usize],
    log: &Log,
    o: &Options,
) -> Vec<SegmentChoice> {
    let n = train.len();
    let first_val = n - (n * 3 / 10).max(1);
    let cut = log.times[train[first_val]];
    let inner_train =
        |ob: &TrainObs<'_>| ob.date < first_val && log.times[train[ob.date]] + o.horizon <= cut;
    let fit = |keep: &dyn Fn(&TrainObs<'_>) -> bool| {
        let (x, y): (Vec<[f64; 6]>, Vec<bool>) = obs
            .iter()
            .filter(|ob| keep(ob))
            .map(|ob| (ob.x, ob.y))
            .unzip();
        fit_weights(&x, &y).map(|f| f.0)
    };
    let global = fit(&inner_train);
    let val: Vec<&TrainObs<'_>> = obs.iter().filter(|ob| ob.date >= first_val).collect();
    let mut groups: BTreeMap<&str, std::collections::BTreeSet<u32>> = BTreeMap::new();
    for ob in obs {
        let g = groups.entry(ob.group).or_default();
        if ob.y {
            g.insert(ob.account);
        }
    }
    groups
        .into_iter()
        .map(|(g, churning)| {
            let mut c = SegmentChoice {
                segment: g.to_string(),
                churning_accounts: churning.len() as u64,
                own_scorecard: false,
                inner_auc_default: None,
                inner_auc_own: None,
                inner_auc_all_default: None,
                inner_auc_all_own: None,
                reason: "",
            };
            if g == "-" {
                c.reason = "accounts without a segment use the default";
                return c;
            }
            if c.churning_accounts < o.min_churners as u64 {
                c.reason = "too few churning accounts";
                return c;
            }
            let (Some(gw), Some(own)) = (global, fit(&|ob| inner_train(ob) && ob.group == g))
            else {
                c.reason = "no fit";
                return c;
            };
            let seg = |w: &[f64; 6]| -> Vec<(f64, bool)> {
                val.iter()
                    .filter(|ob| ob.group == g)
                    .map(|ob| (score_with(&ob.x, w), ob.y))
                    .collect()
            };
            let all = |w: &[f64; 6]| -> Vec<(f64, bool)> {
                val.iter()
                    .map(|ob| (score_with(&ob.x, if ob.group == g { w } else { &gw }), ob.y))
                    .collect()
            };
            c.inner_auc_default = backtest::auc(&seg(&gw));
            c.inner_auc_own = backtest::auc(&seg(&own));
            c.inner_auc_all_default = backtest::auc(&all(&gw));
            c.inner_auc_all_own = backtest::auc(&all(&own));
            let gain = match (c.inner_auc_default, c.inner_auc_own) {
                (Some(d), Some(s)) => s - d,
                _ => f64::NEG_INFINITY,
            };
            let overall = match (c.inner_auc_all_default, c.inner_auc_all_own) {
                (Some(d), Some(s)) => s - d,
                _ => f64::NEG_INFINITY,
            };
            (c.own_scorecard, c.reason) = if gain < MIN_SEGMENT_GAIN {
                (false, "its own weights do not rank its accounts better")
            } else if overall < 0.0 {
                (false, "its own weights spoil the ranking across segments")
            } else {
                (true, "better for the segment and overall")
            };
            c
        })
        .collect()
}

/// A scorecard being calibrated.
struct Card {
    name: String,
    /// Its base version (the base config's card for this name).
    base: Scorecard,
    weights: Weights,
    /// Evaluated thresholds and their training load.
    tried: Vec<(f64, Option<f64>)>,
}

impl Card {
    fn bands(&self, at_risk_below: f64) -> (f64, f64) {
        let gap = (self.base.bands.healthy_at - self.base.bands.at_risk_below).max(1.0);
        (at_risk_below, (at_risk_below + gap).min(100.0))
    }

    /// Thresholds to try in search round `round`, not tried yet: a grid,
    /// then 3 points evenly inside the bracket of the target load (the
    /// highest threshold tried at or under it and the next one above),
    /// so each round cuts the bracket to a quarter. Outside every load
    /// tried, the points go between the last one tried and the limit.
    fn candidates(&self, round: u32, target: f64) -> Vec<f64> {
        let (lo_limit, hi_limit) = (1.0, 95.0);
        let (t0, t1) = if round == 0 {
            return vec![10.0, 25.0, 40.0, 55.0, 70.0, 85.0];
        } else {
            let mut known: Vec<(f64, f64)> = self
                .tried
                .iter()
                .filter_map(|&(t, l)| Some((t, l?)))
                .collect();
            known.sort_by(|a, b| a.0.total_cmp(&b.0));
            let (Some(first), Some(last)) = (known.first(), known.last()) else {
                return Vec::new();
            };
            match known.iter().rposition(|k| k.1 <= target) {
                None => (lo_limit, first.0),
                Some(i) => known
                    .get(i + 1)
                    .map_or((last.0, hi_limit), |k| (known[i].0, k.0)),
            }
        };
        let mut c: Vec<f64> = (1..=3)
            .map(|k| ((t0 + (t1 - t0) * k as f64 / 4.0) * 100.0).round() / 100.0)
            .collect();
        c.dedup();
        c.retain(|t| !self.tried.iter().any(|x| x.0 == *t));
        c
    }

    fn best(&self, target: f64) -> f64 {
        let miss = |l: Option<f64>| l.map_or(f64::INFINITY, |l| (l - target).abs());
        self.tried
            .iter()
            .min_by(|a, b| miss(a.1).total_cmp(&miss(b.1)).then(a.0.total_cmp(&b.0)))
            .map_or(self.base.bands.at_risk_below, |t| t.0)
    }
}

/// The config with each card at the given thresholds.
fn config(base: &ModelConfig, cards: &[Card], thresholds: &[f64]) -> ModelConfig {
    let mut m = base.clone();
    m.segments.clear();
    for (card, &t) in cards.iter().zip(thresholds) {
        let (at_risk_below, healthy_at) = card.bands(t);
        if card.name == "default" {
            m.scorecard.weights = card.weights;
            m.scorecard.bands.at_risk_below = at_risk_below;
            m.scorecard.bands.healthy_at = healthy_at;
            m.scorecard.bands.hysteresis = card.base.bands.hysteresis;
        } else {
            let w = card.weights;
            m.segments.insert(
                card.name.clone(),
                ScorecardPatch {
                    weights: WeightsPatch {
                        usage: Some(w.usage),
                        adoption: Some(w.adoption),
                        support: Some(w.support),
                        financial: Some(w.financial),
                        sentiment: Some(w.sentiment),
                        lifecycle: Some(w.lifecycle),
                    },
                    bands: BandsPatch {
                        at_risk_below: Some(at_risk_below),
                        healthy_at: Some(healthy_at),
                        hysteresis: Some(card.base.bands.hysteresis),
                    },
                },
            );
        }
    }
    m
}

/// The `[model]` section as TOML.
fn to_toml(m: &ModelConfig) -> Result<String, BacktestError> {
    #[derive(Serialize)]
    struct Doc<'a> {
        model: &'a ModelConfig,
    }
    toml::to_string(&Doc { model: m })
        .map_err(|e| BacktestError::Invalid(format!("cannot write the config as TOML: {e}")))
}

/// Calibrates a scorecard on the log at `path`, starting from `base`.
pub fn calibrate(
    path: &Path,
    base: ModelConfig,
    o: &Options,
) -> Result<Calibration, BacktestError> {
    if !(o.split > 0.0 && o.split < 1.0) {
        return Err(BacktestError::Invalid(
            "--split must be within (0, 1)".into(),
        ));
    }
    if o.horizon <= 0 || o.every <= 0 || o.alert_window <= 0 {
        return Err(BacktestError::Invalid(
            "the horizon, the interval and the alert window must be > 0".into(),
        ));
    }
    if let Some(t) = o.target_alerts {
        if !(t.is_finite() && t >= 0.0) {
            return Err(BacktestError::Invalid("--target-alerts must be ≥ 0".into()));
        }
    }
    let threads = backtest::threads();
    // 1. One pass with the base model.
    let schedule = Schedule {
        every: Some(o.every),
        keep_within: o.horizon,
        ..Default::default()
    };
    let (log, mut lanes, invalid) =
        fold::run_lanes(path, vec![base.clone()], &schedule, None, threads)?;
    if log.events == 0 {
        return Err(BacktestError::NoEvents {
            path: path.to_path_buf(),
            invalid,
        });
    }
    let base_lane = lanes.remove(0);
    // 2. The split.
    let split_at = log.first + ((log.last - log.first) as f64 * o.split).round() as Ts;
    let train: Vec<usize> = (0..log.times.len())
        .filter(|&i| log.times[i] + o.horizon <= split_at)
        .collect();
    let held: Vec<usize> = (0..log.times.len())
        .filter(|&i| log.times[i] >= split_at)
        .collect();
    if train.is_empty() || held.is_empty() {
        return Err(BacktestError::Invalid(format!(
            "the log ({} … {}) is too short for a {}-day horizon with --split {}: \
             no evaluation time on one side of the cut",
            crate::codec::timefmt::format(log.first),
            crate::codec::timefmt::format(log.last),
            o.horizon as f64 / MS_PER_DAY_F,
            o.split
        )));
    }
    let train_measure = Measure {
        log: &log,
        times: &train,
        horizon: o.horizon,
        alert_window: o.alert_window,
        period: Period {
            from: log.first,
            to: split_at,
            cancels_from: log.first + o.alert_window,
        },
    };
    // Training observations, in time then arrival order, with the index of
    // their evaluation time among the training times.
    let mut obs: Vec<TrainObs<'_>> = Vec::new();
    for (di, &ti) in train.iter().enumerate() {
        let t = log.times[ti];
        for ob in &base_lane.snaps[ti] {
            let acc = &log.accounts[ob.account as usize];
            obs.push(TrainObs {
                x: ob.components,
                y: acc.cancel_after(t).is_some_and(|c| c <= t + o.horizon),
                group: &acc.group,
                account: ob.account,
                date: di,
            });
        }
    }
    let fit_where = |keep: &dyn Fn(&TrainObs<'_>) -> bool| {
        let (x, y): (Vec<[f64; 6]>, Vec<bool>) = obs
            .iter()
            .filter(|ob| keep(ob))
            .map(|ob| (ob.x, ob.y))
            .unzip();
        (fit_weights(&x, &y), x.len() as u64)
    };
    let churning = |keep: &dyn Fn(&TrainObs<'_>) -> bool| {
        obs.iter()
            .filter(|ob| ob.y && keep(ob))
            .map(|ob| ob.account)
            .collect::<std::collections::BTreeSet<u32>>()
            .len() as u64
    };
    // 3. Weights: the default scorecard from every training observation.
    let base_model = crate::core::Model::new(base.clone());
    let base_card = |name: &str| -> Scorecard {
        base_model
            .cards
            .iter()
            .find(|c| c.0 == name)
            .map_or(base.scorecard, |c| c.1)
    };
    let mut cards = Vec::new();
    let mut fits = Vec::new();
    let (default_fit, n_all) = fit_where(&|_| true);
    cards.push(Card {
        name: "default".into(),
        base: base.scorecard,
        weights: default_fit
            .as_ref()
            .map_or(base.scorecard.weights, |f| weights(f.0)),
        tried: Vec::new(),
    });
    fits.push((
        n_all,
        churning(&|_| true),
        default_fit.map(|f| f.1).unwrap_or_default(),
    ));
    // Segment scorecards: only where they earn their place on the later
    // training dates (inner validation), fitted on the earlier ones.
    let segments = choose_segments(&obs, &train, &log, o);
    for choice in segments.iter().filter(|c| c.own_scorecard) {
        let g = choice.segment.as_str();
        if let (Some((w, dropped)), n) = fit_where(&|ob| ob.group == g) {
            cards.push(Card {
                name: g.to_string(),
                base: base_card(g),
                weights: weights(w),
                tried: Vec::new(),
            });
            fits.push((n, choice.churning_accounts, dropped));
        }
    }
    // Which card each account uses (by its group).
    let card_of = |acc: &fold::AccountInfo| -> usize {
        cards.iter().position(|c| c.name == acc.group).unwrap_or(0)
    };
    let members: Vec<usize> = log.accounts.iter().map(card_of).collect();
    // Without members of its own, the default scorecard (for segments not
    // in this log) is calibrated on every account, in lanes of its own.
    let default_alone = !members.contains(&0);
    let everyone = vec![0usize; members.len()];
    let load = |lane: &LaneResult, card: usize| -> Option<f64> {
        let m = if card == 0 && default_alone {
            &everyone
        } else {
            &members
        };
        training_load(&log, lane, m, card, log.first, split_at)
    };
    let base_loads: Vec<Option<f64>> = (0..cards.len()).map(|c| load(&base_lane, c)).collect();
    let (target, target_from) = match o.target_alerts {
        Some(t) => (t, "flag"),
        None => {
            let q = train_measure.alert_quality(&base_lane, None);
            (
                q.alerts_per_100_accounts_per_month.unwrap_or(0.0),
                "base model's training load",
            )
        }
    };
    // 4. Thresholds, by replaying the training part: a coarse grid, then
    // twice around the linear interpolation of the load between the
    // thresholds that bracket the target.
    for round in 0..4 {
        let cand: Vec<Vec<f64>> = cards.iter().map(|c| c.candidates(round, target)).collect();
        let n = cand.iter().map(Vec::len).max().unwrap_or(0);
        let pick = |ci: usize, k: usize| -> Option<f64> {
            let c = &cand[ci];
            c.get(k.min(c.len().checked_sub(1)?)).copied()
        };
        let th = |k: usize| -> Vec<f64> {
            (0..cards.len())
                .map(|ci| pick(ci, k).unwrap_or(cards[ci].base.bands.at_risk_below))
                .collect()
        };
        let mut models: Vec<ModelConfig> = (0..n).map(|k| config(&base, &cards, &th(k))).collect();
        if default_alone {
            models.extend((0..n).map(|k| config(&base, &cards[..1], &th(k)[..1])));
        }
        let quiet = Schedule::default();
        let (_, lanes, _) = fold::run_lanes(path, models, &quiet, Some(split_at), threads)?;
        for (li, lane) in lanes.iter().enumerate() {
            let (k, alone) = (li % n.max(1), li >= n);
            for (ci, card) in cards.iter_mut().enumerate() {
                // The default card alone is measured in its own lanes.
                if default_alone && (ci == 0) != alone {
                    continue;
                }
                let Some(t) = pick(ci, k) else { continue };
                if !card.tried.iter().any(|x| x.0 == t) {
                    card.tried.push((t, load(lane, ci)));
                }
            }
        }
    }
    let chosen: Vec<f64> = cards.iter().map(|c| c.best(target)).collect();
    let mut model = config(&base, &cards, &chosen);
    // A version naming the content.
    model.version = "calibrated".into();
    let h = crate::core::account::hash64(&to_toml(&model)?);
    model.version = format!("calibrated-{:08x}", (h >> 32) as u32);
    let problems = model.problems();
    if !problems.is_empty() {
        return Err(BacktestError::Invalid(format!(
            "the calibrated config is invalid: {}",
            problems.join("; ")
        )));
    }
    // 5. Held-out comparison: the calibrated model over the whole log, at
    // the same evaluation times.
    let at = Schedule {
        at: log.times.clone(),
        ..Default::default()
    };
    let (cal_log, mut cal_lanes, _) = fold::run_lanes(path, vec![model.clone()], &at, None, 1)?;
    let cal_lane = cal_lanes.remove(0);
    let period = Period {
        from: split_at,
        to: log.last,
        cancels_from: split_at,
    };
    let held_base = Measure {
        log: &log,
        times: &held,
        horizon: o.horizon,
        alert_window: o.alert_window,
        period,
    };
    let held_cal = Measure {
        log: &cal_log,
        ..held_base
    };
    let base_report = held_base.model_report(&base_lane);
    let cal_report = held_cal.model_report(&cal_lane);

    let part = |times: &[usize], m: &Measure<'_>, from: Ts, to: Ts| {
        let l = m.labelled(&base_lane, None, |ob| ob.score);
        Part {
            from: crate::codec::timefmt::format(from),
            to: crate::codec::timefmt::format(to),
            evaluation_times: times.len() as u64,
            observations: l.len() as u64,
            churners: l.iter().filter(|x| x.1).count() as u64,
        }
    };
    let text = to_toml(&model)?;
    let toml = format!(
        "# Calibrated by `vitals calibrate` from an event log ({} events, {} … {}):\n\
         # component weights by L2-regularised logistic regression on the first {:.0}% of\n\
         # the log, at_risk thresholds for {:.2} at_risk alerts per 100 accounts per month\n\
         # (horizon {} days). Load it with --config; sections other than [model] keep\n\
         # their defaults.\n\n{text}",
        log.events,
        crate::codec::timefmt::format(log.first),
        crate::codec::timefmt::format(log.last),
        o.split * 100.0,
        target,
        o.horizon as f64 / MS_PER_DAY_F,
    );
    // The written text must load as it is.
    crate::config::Config::from_toml(&toml, "calibrated config")
        .and_then(|c| c.validate("calibrated config").map(|_| c))
        .map_err(|e| BacktestError::Invalid(format!("the calibrated config does not load: {e}")))?;

    // Each card's training load at its chosen threshold, as replayed.
    let cal_loads: Vec<Option<f64>> = cards
        .iter()
        .zip(&chosen)
        .map(|(c, t)| c.tried.iter().find(|x| x.0 == *t).and_then(|x| x.1))
        .collect();
    let report = CalibrationReport {
        events: log.events,
        invalid_lines: invalid,
        accounts: log.accounts.len() as u64,
        horizon_days: o.horizon as f64 / MS_PER_DAY_F,
        every_days: o.every as f64 / MS_PER_DAY_F,
        alert_window_days: o.alert_window as f64 / MS_PER_DAY_F,
        split: o.split,
        training: part(&train, &train_measure, log.first, split_at),
        held_out: part(&held, &held_base, split_at, log.last),
        target_alerts_per_100_accounts_per_month: target,
        target_from,
        l2: L2,
        min_churners: o.min_churners,
        cards: cards
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let (at_risk_below, healthy_at) = c.bands(chosen[i]);
                CardFit {
                    card: c.name.clone(),
                    observations: fits[i].0,
                    churning_accounts: fits[i].1,
                    dropped: fits[i].2.iter().map(|&k| COMPONENTS[k]).collect(),
                    weights: c.weights,
                    at_risk_below,
                    healthy_at,
                    hysteresis: c.base.bands.hysteresis,
                    accounts: members.iter().filter(|&&m| m == i).count() as u64,
                    training_alerts_per_100_accounts_per_month: cal_loads[i],
                    base_training_alerts_per_100_accounts_per_month: base_loads[i],
                    search: {
                        let mut t = c.tried.clone();
                        t.sort_by(|a, b| a.0.total_cmp(&b.0));
                        t
                    },
                }
            })
            .collect(),
        segments,
        dropped_segment_patches: base
            .segments
            .keys()
            .filter(|k| !cards.iter().any(|c| &c.name == *k))
            .cloned()
            .collect(),
        version: model.version.clone(),
        difference: Difference::between(&base_report, &cal_report),
        base: base_report,
        calibrated: cal_report,
    };
    Ok(Calibration {
        model,
        toml,
        report,
    })
}

/// At-risk alerts per 100 account-months over `[from, to]` of the
/// accounts using `card`.
fn training_load(
    log: &Log,
    lane: &LaneResult,
    members: &[usize],
    card: usize,
    from: Ts,
    to: Ts,
) -> Option<f64> {
    let alerts = lane
        .alerts
        .iter()
        .filter(|a| a.time >= from && a.time <= to && members[a.account as usize] == card)
        .count();
    let exposure: i64 = log
        .accounts
        .iter()
        .zip(members)
        .filter(|(_, &m)| m == card)
        .map(|(a, _)| a.exposure(from, to))
        .sum();
    let months = exposure as f64 / (30.0 * MS_PER_DAY_F);
    (months > 0.0).then(|| alerts as f64 * 100.0 / months)
}

/// The report as a readable table.
pub fn render(r: &CalibrationReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} events, {} accounts; horizon {} days, evaluated every {} days",
        backtest::thousands(r.events),
        backtest::thousands(r.accounts),
        r.horizon_days,
        r.every_days
    );
    for (name, p) in [("training", &r.training), ("held out", &r.held_out)] {
        let _ = writeln!(
            out,
            "{name:<9} {} … {}: {} evaluation times, {} observations, {} churners",
            p.from,
            p.to,
            p.evaluation_times,
            backtest::thousands(p.observations),
            backtest::thousands(p.churners)
        );
    }
    let _ = writeln!(
        out,
        "target: {:.2} at_risk alerts / 100 accounts / month ({})\n",
        r.target_alerts_per_100_accounts_per_month, r.target_from
    );
    let _ = writeln!(
        out,
        "{:<12} {:>7} {:>7} {:>8} {:>9} {:>9} {:>9} {:>9}  {:>7} {:>7}  {:>12}",
        "scorecard",
        "usage",
        "adopt.",
        "support",
        "financial",
        "sentiment",
        "lifecycle",
        "churners",
        "at_risk",
        "healthy",
        "train. load"
    );
    for c in &r.cards {
        let w = c.weights;
        let _ = writeln!(
            out,
            "{:<12} {:>7.4} {:>7.4} {:>8.4} {:>9.4} {:>9.4} {:>9.4} {:>9}  {:>7.2} {:>7.2}  {:>12}{}",
            c.card,
            w.usage,
            w.adoption,
            w.support,
            w.financial,
            w.sentiment,
            w.lifecycle,
            c.churning_accounts,
            c.at_risk_below,
            c.healthy_at,
            c.training_alerts_per_100_accounts_per_month
                .map_or("n/a".into(), |l| format!("{l:.2}")),
            if c.dropped.is_empty() {
                String::new()
            } else {
                format!("  (dropped: {})", c.dropped.join(", "))
            }
        );
    }
    for c in &r.segments {
        let _ = writeln!(
            out,
            "segment {}: {} churning accounts; {}{}",
            c.segment,
            c.churning_accounts,
            if c.own_scorecard {
                "own scorecard: "
            } else {
                "default scorecard: "
            },
            c.reason
        );
        if let (Some(d), Some(s)) = (c.inner_auc_default, c.inner_auc_own) {
            let _ = writeln!(
                out,
                "  inner validation ROC AUC, segment {d:.3} → {s:.3}, all accounts {} → {}",
                c.inner_auc_all_default
                    .map_or("n/a".into(), |v| format!("{v:.3}")),
                c.inner_auc_all_own
                    .map_or("n/a".into(), |v| format!("{v:.3}")),
            );
        }
    }
    if !r.dropped_segment_patches.is_empty() {
        let _ = writeln!(
            out,
            "segment patches of the base config not carried over: {}",
            r.dropped_segment_patches.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "\nheld-out comparison (first = base, second = calibrated):"
    );
    backtest::render_models(&mut out, &r.base, Some(&r.calibrated));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic sample where churn depends on components 0 and 2
    /// (lower = more risk, component 2 twice as strongly per point),
    /// component 1 is noise and component 3 *rises* with churn.
    fn sample() -> (Vec<[f64; 6]>, Vec<bool>) {
        let mut x = Vec::new();
        let mut y = Vec::new();
        let mut s: u64 = 12345;
        let mut next = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        for _ in 0..4000 {
            let a = 100.0 * next();
            let b = 100.0 * next();
            let c = 100.0 * next();
            let eta = 2.0 - 0.04 * a - 0.08 * c;
            let churn = next() < 1.0 / (1.0 + (-eta).exp());
            let d = if churn { 60.0 } else { 40.0 } + 20.0 * next();
            x.push([a, b, c, d, 50.0, 100.0 * next()]);
            y.push(churn);
        }
        (x, y)
    }

    #[test]
    fn logistic_fit_finds_the_protective_components() {
        let (x, y) = sample();
        let (w, dropped) = fit_weights(&x, &y).unwrap();
        // Component 3 is not protective and component 4 is constant.
        assert!(dropped.contains(&3) && dropped.contains(&4), "{dropped:?}");
        assert_eq!((w[3], w[4]), (0.0, 0.0));
        // Component 2 weighs about twice component 0; noise gets little.
        assert!((w[2] / w[0] - 2.0).abs() < 0.4, "{w:?}");
        assert!(w[1] < 0.1 && w[5] < 0.1, "{w:?}");
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-3);
        // Deterministic.
        assert_eq!(fit_weights(&x, &y), Some((w, dropped)));
        // Nothing to learn from one class.
        assert_eq!(fit_weights(&x, &vec![false; x.len()]), None);
    }

    #[test]
    fn threshold_search_bisects_the_bracket_of_the_target() {
        let card = |tried: Vec<(f64, Option<f64>)>| Card {
            name: "default".into(),
            base: Scorecard::default(),
            weights: Weights::default(),
            tried,
        };
        assert_eq!(card(vec![]).candidates(0, 2.0).len(), 6);
        // Loads 1 at 55, 8 at 70: the target 2 lies between.
        let c = card(vec![
            (40.0, Some(0.5)),
            (55.0, Some(1.0)),
            (70.0, Some(8.0)),
        ]);
        assert_eq!(c.candidates(1, 2.0), [58.75, 62.5, 66.25]);
        // Below every load tried: between the lower limit and the first.
        let c = card(vec![(10.0, Some(3.0)), (25.0, Some(4.0))]);
        assert_eq!(c.candidates(1, 2.0), [3.25, 5.5, 7.75]);
        // Above every load tried: up to the upper limit.
        let c = card(vec![(85.0, Some(1.0))]);
        assert_eq!(c.candidates(1, 2.0), [87.5, 90.0, 92.5]);
        // No load known (no account time): nothing to try.
        assert!(card(vec![(10.0, None)]).candidates(1, 2.0).is_empty());
        // The closest load wins; ties go to the lower threshold.
        let c = card(vec![
            (50.0, Some(1.5)),
            (60.0, Some(2.5)),
            (55.0, Some(2.1)),
        ]);
        assert_eq!(c.best(2.0), 55.0);
        assert_eq!(
            card(vec![(50.0, Some(1.0)), (60.0, Some(3.0))]).best(2.0),
            50.0
        );
    }

    /// Segment `a` churns on component 0, segment `b` on component 2,
    /// segment `c` like the mixture: `a` and `b` gain from their own
    /// weights, `c` does not; `d` has too few churners.
    #[test]
    fn segments_get_their_own_scorecard_only_when_it_helps() {
        let mut s: u64 = 7;
        let mut next = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        let days = 20usize;
        let log = Log {
            times: (0..days as i64).map(|d| d * 7 * MS_PER_DAY).collect(),
            ..Default::default()
        };
        let train: Vec<usize> = (0..days).collect();
        let mut obs = Vec::new();
        for date in 0..days {
            for i in 0..600u32 {
                let g = ["a", "b", "c", "d"][(i % 4) as usize];
                let x = [
                    100.0 * next(),
                    100.0 * next(),
                    100.0 * next(),
                    50.0,
                    50.0,
                    50.0,
                ];
                let eta = match g {
                    "a" => 3.0 - 0.12 * x[0],
                    "b" => 3.0 - 0.12 * x[2],
                    _ => 3.0 - 0.06 * x[0] - 0.06 * x[2],
                };
                let y = next() < 1.0 / (1.0 + (-eta).exp()) && (g != "d" || i < 40);
                obs.push(TrainObs {
                    x,
                    y,
                    group: g,
                    account: i,
                    date,
                });
            }
        }
        let o = Options {
            min_churners: 12,
            ..Options::default()
        };
        let c = choose_segments(&obs, &train, &log, &o);
        let own: Vec<(&str, bool, &str)> = c
            .iter()
            .map(|c| (c.segment.as_str(), c.own_scorecard, c.reason))
            .collect();
        assert_eq!(
            own,
            [
                ("a", true, "better for the segment and overall"),
                ("b", true, "better for the segment and overall"),
                (
                    "c",
                    false,
                    "its own weights do not rank its accounts better"
                ),
                ("d", false, "too few churning accounts"),
            ]
        );
    }

    #[test]
    fn linear_solver() {
        let a = vec![vec![2.0, 1.0], vec![1.0, 3.0]];
        let x = solve(a, vec![3.0, 5.0]).unwrap();
        assert!((x[0] - 0.8).abs() < 1e-12 && (x[1] - 1.4).abs() < 1e-12);
        assert_eq!(solve(vec![vec![0.0]], vec![1.0]), None);
    }
}
