//! `vitals backtest`: how well do scores and alerts predict churn on a log?
//! Replays the log through the fold (one or two scorecards in the same
//! pass, [`fold`]) and measures, against the log's own
//! `subscription.cancelled` events (definitions in [`metrics`] and
//! docs/MODEL.md, "How good is it"):
//!
//! - at each evaluation time `T`, every account subscribed and not
//!   cancelled at `T` is one *observation*: its score at `T`, labelled
//!   *churner* when it cancels within the horizon after `T`;
//! - **ROC AUC** and **PR AUC** (average precision) of the score (lower =
//!   more risk) per evaluation time, and pooled over all of them;
//! - **calibration**: the churn rate by score decile, pooled;
//! - **at_risk alerts**: precision (share followed by a cancellation within
//!   the alert window; alerts too close to the end of the log to know are
//!   left out), recall (share of cancellations preceded by an alert within
//!   the window; cancellations in the log's first window are left out),
//!   median lead time (cancellation − the first such alert), load (alerts
//!   per 100 account-months of accounts not cancelled), and, where the log
//!   has `alert.feedback`, precision by verdict;
//! - all of it overall and by segment (an account's segment at the end of
//!   the log, else its tier — what a segment scorecard is looked up by).
//!
//! With a second scorecard, both side by side and the difference.

pub mod fold;
pub mod metrics;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use serde::{Serialize, Serializer};

use crate::codec::{json, timefmt};
use crate::core::event::Verdict;
use crate::core::time::{Ts, MS_PER_DAY, MS_PER_HOUR};
use crate::core::{Event, ModelConfig};

pub use fold::{Log, Pass, Schedule};

/// Milliseconds per day, as a float.
pub const MS_PER_DAY_F: f64 = MS_PER_DAY as f64;
pub use metrics::{auc, average_precision};

/// What stops a backtest or a calibration (bad lines never do: they are
/// counted and skipped).
#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no valid events ({invalid} invalid lines)")]
    NoEvents { path: PathBuf, invalid: u64 },
    #[error("no evaluation time: give --at, --at-day or --every (periodic times stop where the horizon would pass the log's end)")]
    NoEvaluations,
    #[error("{0}")]
    Invalid(String),
}

fn io<T>(path: &Path, r: std::io::Result<T>) -> Result<T, BacktestError> {
    r.map_err(|source| BacktestError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// A duration such as `60d`, `12w` or `720h` (a whole number with unit
/// `h`, `d` or `w`), in milliseconds.
pub fn parse_duration(s: &str) -> Result<Ts, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let per = match unit {
        "h" => MS_PER_HOUR,
        "d" => MS_PER_DAY,
        "w" => 7 * MS_PER_DAY,
        _ => {
            return Err(format!(
                "{s:?}: a duration is a whole number and a unit h, d or w (e.g. 60d, 12w, 720h)"
            ))
        }
    };
    let n: i64 = num
        .parse()
        .map_err(|_| format!("{s:?}: a duration starts with a whole number (e.g. 60d)"))?;
    if n <= 0 || n > 100 * 366 * 24 {
        return Err(format!("{s:?}: must be > 0 and at most 100 years"));
    }
    Ok(n * per)
}

/// Backtest parameters.
#[derive(Debug, Clone)]
pub struct Options {
    /// Evaluation times.
    pub at: Vec<Ts>,
    /// Evaluation days, counted from the first event's day (UTC).
    pub at_day: Vec<u32>,
    /// Evaluate every this long, starting one interval after the first
    /// event, while `time + horizon` is not after the last event.
    pub every: Option<Ts>,
    /// Milliseconds after an evaluation time in which a cancellation makes
    /// the observation a churner.
    pub horizon: Ts,
    /// Milliseconds an `at_risk` alert has to be followed by a
    /// cancellation to count as correct (and a cancellation preceded by an
    /// alert to count as caught).
    pub alert_window: Ts,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            at: Vec::new(),
            at_day: Vec::new(),
            every: None,
            horizon: 60 * MS_PER_DAY,
            alert_window: 90 * MS_PER_DAY,
        }
    }
}

/// Days, written as an integer when whole (`60`, not `60.0`).
fn days<S: Serializer>(ms: &Ts, s: S) -> Result<S::Ok, S::Error> {
    if ms % MS_PER_DAY == 0 {
        s.serialize_i64(ms / MS_PER_DAY)
    } else {
        s.serialize_f64(*ms as f64 / MS_PER_DAY as f64)
    }
}

fn day_str(ms: Ts) -> String {
    if ms % MS_PER_DAY == 0 {
        format!("{}", ms / MS_PER_DAY)
    } else {
        format!("{:.2}", ms as f64 / MS_PER_DAY as f64)
    }
}

/// Results at one evaluation time.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AtResult {
    pub at: String,
    pub accounts: u64,
    pub churners: u64,
    /// ROC AUC.
    pub auc: Option<f64>,
    /// PR AUC (average precision).
    pub pr_auc: Option<f64>,
    /// ROC AUC of each component alone (lower component = more risk), in
    /// `score::COMPONENTS` order: which parts of the scorecard carry the
    /// prediction.
    pub component_auc: Vec<(String, Option<f64>)>,
    /// False when the horizon passes the end of the log (a fixed `--at`
    /// time too late to know every outcome).
    pub horizon_complete: bool,
}

/// Precision of alerts that got one `alert.feedback` verdict.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VerdictQuality {
    /// `useful`, `false_positive`, `already_known` or `none` (no feedback).
    pub verdict: &'static str,
    pub alerts: u64,
    pub judged: u64,
    /// Share of the judged ones followed by a cancellation in the window.
    pub precision: Option<f64>,
}

/// `at_risk` alert quality over a period.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AlertQuality {
    pub at_risk_alerts: u64,
    /// Alerts whose window ends inside the log.
    pub judged: u64,
    pub precision: Option<f64>,
    /// Cancellations judged (after the first window of the period).
    pub cancellations: u64,
    /// ... preceded by an alert within the window.
    pub caught: u64,
    pub recall: Option<f64>,
    pub median_lead_days: Option<f64>,
    /// Σ time accounts existed and were not cancelled, in 30-day months.
    pub account_months: f64,
    pub alerts_per_100_accounts_per_month: Option<f64>,
    /// Precision measured by the team's verdicts: (useful + already_known)
    /// / all verdicts on these alerts. `None` without feedback.
    pub feedback_precision: Option<f64>,
    /// Outcome precision by verdict (empty without feedback).
    pub by_verdict: Vec<VerdictQuality>,
}

/// Everything measured for one model over one population.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Quality {
    /// (account, evaluation time) pairs.
    pub observations: u64,
    pub churners: u64,
    pub roc_auc: Option<f64>,
    pub pr_auc: Option<f64>,
    /// Churn rate by score decile (calibration).
    pub deciles: Vec<metrics::Decile>,
    pub alerts: AlertQuality,
}

/// One model's results.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModelReport {
    /// `version+hash` of the scorecard.
    pub model: String,
    pub evaluations: Vec<AtResult>,
    /// All accounts, all evaluation times pooled.
    pub overall: Quality,
    pub segments: BTreeMap<String, Quality>,
}

/// `compare − base` for the headline numbers.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct DiffRow {
    pub roc_auc: Option<f64>,
    pub pr_auc: Option<f64>,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub median_lead_days: Option<f64>,
    pub alerts_per_100_accounts_per_month: Option<f64>,
}

impl DiffRow {
    pub fn between(a: &Quality, b: &Quality) -> Self {
        let d = |x: Option<f64>, y: Option<f64>| Some(y? - x?);
        DiffRow {
            roc_auc: d(a.roc_auc, b.roc_auc),
            pr_auc: d(a.pr_auc, b.pr_auc),
            precision: d(a.alerts.precision, b.alerts.precision),
            recall: d(a.alerts.recall, b.alerts.recall),
            median_lead_days: d(a.alerts.median_lead_days, b.alerts.median_lead_days),
            alerts_per_100_accounts_per_month: d(
                a.alerts.alerts_per_100_accounts_per_month,
                b.alerts.alerts_per_100_accounts_per_month,
            ),
        }
    }
}

/// The difference between two model reports.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Difference {
    pub overall: DiffRow,
    pub segments: BTreeMap<String, DiffRow>,
}

impl Difference {
    pub fn between(a: &ModelReport, b: &ModelReport) -> Self {
        Difference {
            overall: DiffRow::between(&a.overall, &b.overall),
            segments: a
                .segments
                .iter()
                .filter_map(|(k, qa)| Some((k.clone(), DiffRow::between(qa, b.segments.get(k)?))))
                .collect(),
        }
    }
}

/// Backtest results.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub events: u64,
    pub invalid_lines: u64,
    pub accounts: u64,
    pub first_event: String,
    pub last_event: String,
    #[serde(serialize_with = "days")]
    pub horizon_days: Ts,
    #[serde(serialize_with = "days")]
    pub alert_window_days: Ts,
    /// The (first) scorecard's results.
    #[serde(flatten)]
    pub base: ModelReport,
    /// `--compare`: the second scorecard's results ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compare: Option<ModelReport>,
    /// ... and `compare − base`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub difference: Option<Difference>,
}

/// The part of the log alert quality is measured over.
#[derive(Debug, Clone, Copy)]
pub struct Period {
    /// Alerts at or after `from` and not after `to` count.
    pub from: Ts,
    pub to: Ts,
    /// Cancellations at or after this (and not after `to`) are judged for
    /// recall.
    pub cancels_from: Ts,
}

/// What to measure from a pass: which evaluation times, which period.
pub struct Measure<'a> {
    pub log: &'a Log,
    /// Indexes into `log.times`.
    pub times: &'a [usize],
    pub horizon: Ts,
    pub alert_window: Ts,
    pub period: Period,
}

impl Measure<'_> {
    fn churns(&self, account: u32, t: Ts) -> bool {
        self.log.accounts[account as usize]
            .cancel_after(t)
            .is_some_and(|c| c <= t + self.horizon)
    }

    fn group(&self, account: u32) -> &str {
        &self.log.accounts[account as usize].group
    }

    /// Labelled scores of the evaluation times `times`, in a deterministic
    /// order (time, then account arrival), for accounts of `group` (all
    /// when `None`).
    pub fn labelled(
        &self,
        lane: &fold::LaneResult,
        group: Option<&str>,
        value: impl Fn(&fold::Obs) -> f64,
    ) -> Vec<(f64, bool)> {
        let mut v = Vec::new();
        for &ti in self.times {
            let t = self.log.times[ti];
            for o in &lane.snaps[ti] {
                if group.is_none_or(|g| self.group(o.account) == g) {
                    v.push((value(o), self.churns(o.account, t)));
                }
            }
        }
        v
    }

    pub fn at_result(&self, lane: &fold::LaneResult, ti: usize) -> AtResult {
        let t = self.log.times[ti];
        let snap = &lane.snaps[ti];
        let labels: Vec<bool> = snap.iter().map(|o| self.churns(o.account, t)).collect();
        let l: Vec<(f64, bool)> = snap
            .iter()
            .zip(&labels)
            .map(|(o, &c)| (o.score, c))
            .collect();
        AtResult {
            at: timefmt::format(t),
            accounts: l.len() as u64,
            churners: labels.iter().filter(|&&c| c).count() as u64,
            auc: auc(&l),
            pr_auc: average_precision(&l),
            component_auc: crate::core::score::COMPONENTS
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let l: Vec<(f64, bool)> = snap
                        .iter()
                        .zip(&labels)
                        .map(|(o, &c)| (o.components[i], c))
                        .collect();
                    (name.to_string(), auc(&l))
                })
                .collect(),
            horizon_complete: t + self.horizon <= self.log.last,
        }
    }

    pub fn alert_quality(&self, lane: &fold::LaneResult, group: Option<&str>) -> AlertQuality {
        let p = self.period;
        let w = self.alert_window;
        let in_group = |a: u32| group.is_none_or(|g| self.group(a) == g);
        let alerts: Vec<&fold::AlertRec> = lane
            .alerts
            .iter()
            .filter(|a| a.time >= p.from && a.time <= p.to && in_group(a.account))
            .collect();
        let correct = |a: &fold::AlertRec| {
            self.log.accounts[a.account as usize]
                .cancel_after(a.time)
                .is_some_and(|c| c <= a.time + w)
        };
        let judged: Vec<&&fold::AlertRec> = alerts.iter().filter(|a| a.time + w <= p.to).collect();
        let tp = judged.iter().filter(|a| correct(a)).count();
        // Recall and lead time: alerts of the whole pass may precede a
        // cancellation of the period.
        let mut by_acc: BTreeMap<u32, Vec<Ts>> = BTreeMap::new();
        for a in &lane.alerts {
            by_acc.entry(a.account).or_default().push(a.time);
        }
        let (mut cancellations, mut caught) = (0u64, 0u64);
        let mut leads = Vec::new();
        let mut exposure = 0i64;
        for (i, acc) in self.log.accounts.iter().enumerate() {
            if !in_group(i as u32) {
                continue;
            }
            exposure += acc.exposure(p.from, p.to);
            for c in acc.cancels() {
                if c < p.cancels_from || c > p.to {
                    continue;
                }
                cancellations += 1;
                let first = by_acc
                    .get(&(i as u32))
                    .and_then(|v| v.iter().copied().filter(|&t| t <= c && t >= c - w).min());
                if let Some(f) = first {
                    caught += 1;
                    leads.push((c - f) as f64 / MS_PER_DAY as f64);
                }
            }
        }
        let months = exposure as f64 / (30 * MS_PER_DAY) as f64;
        // Feedback.
        let verdict = |a: &fold::AlertRec| self.log.feedback.get(&a.alert_id).copied();
        let with_feedback: Vec<Verdict> = alerts.iter().filter_map(|a| verdict(a)).collect();
        let (feedback_precision, by_verdict) = if self.log.feedback.is_empty() {
            (None, Vec::new())
        } else {
            let fp = (!with_feedback.is_empty()).then(|| {
                with_feedback
                    .iter()
                    .filter(|v| **v != Verdict::FalsePositive)
                    .count() as f64
                    / with_feedback.len() as f64
            });
            let rows = Verdict::ALL
                .iter()
                .map(|v| (v.as_str(), Some(*v)))
                .chain([("none", None)])
                .map(|(name, v)| {
                    let all = alerts.iter().filter(|a| verdict(a) == v).count() as u64;
                    let j: Vec<_> = judged.iter().filter(|a| verdict(a) == v).collect();
                    let ok = j.iter().filter(|a| correct(a)).count();
                    VerdictQuality {
                        verdict: name,
                        alerts: all,
                        judged: j.len() as u64,
                        precision: (!j.is_empty()).then(|| ok as f64 / j.len() as f64),
                    }
                })
                .collect();
            (fp, rows)
        };
        AlertQuality {
            at_risk_alerts: alerts.len() as u64,
            judged: judged.len() as u64,
            precision: (!judged.is_empty()).then(|| tp as f64 / judged.len() as f64),
            cancellations,
            caught,
            recall: (cancellations > 0).then(|| caught as f64 / cancellations as f64),
            median_lead_days: metrics::median(&mut leads),
            account_months: months,
            alerts_per_100_accounts_per_month: (months > 0.0)
                .then(|| alerts.len() as f64 * 100.0 / months),
            feedback_precision,
            by_verdict,
        }
    }

    pub fn quality(&self, lane: &fold::LaneResult, group: Option<&str>) -> Quality {
        let l = self.labelled(lane, group, |o| o.score);
        Quality {
            observations: l.len() as u64,
            churners: l.iter().filter(|x| x.1).count() as u64,
            roc_auc: auc(&l),
            pr_auc: average_precision(&l),
            deciles: metrics::deciles(&l),
            alerts: self.alert_quality(lane, group),
        }
    }

    /// The groups (segments) present in the log, sorted.
    pub fn groups(&self) -> Vec<String> {
        let mut g: Vec<String> = self.log.accounts.iter().map(|a| a.group.clone()).collect();
        g.sort();
        g.dedup();
        g
    }

    pub fn model_report(&self, lane: &fold::LaneResult) -> ModelReport {
        ModelReport {
            model: lane.model.clone(),
            evaluations: self
                .times
                .iter()
                .map(|&ti| self.at_result(lane, ti))
                .collect(),
            overall: self.quality(lane, None),
            segments: self
                .groups()
                .into_iter()
                .map(|g| {
                    let q = self.quality(lane, Some(&g));
                    (g, q)
                })
                .collect(),
        }
    }
}

/// A line of a log.
pub enum Line<'a, 'b> {
    Event(&'b Event<'a>),
    /// `{"tick": …}`: the service's clock tick.
    Tick(Ts),
}

/// Reads a JSONL event log, calling `f` with every valid event and tick in
/// file order. Returns the count of invalid lines (skipped).
pub fn read_log(path: &Path, mut f: impl FnMut(Line<'_, '_>)) -> Result<u64, BacktestError> {
    let file = io(path, File::open(path))?;
    let mut lines = crate::replay::LogLines::new(BufReader::with_capacity(1 << 20, file));
    let mut invalid = 0u64;
    while let Some(crate::replay::LogLine { body, oversize, .. }) = io(path, lines.next_line())? {
        if oversize {
            invalid += 1;
            continue;
        }
        if body.is_empty() {
            continue;
        }
        if let Some(t) = crate::replay::tick(body) {
            f(Line::Tick(t));
            continue;
        }
        match json::decode(body) {
            Ok(ev) => f(Line::Event(&ev)),
            Err(_) => invalid += 1,
        }
    }
    Ok(invalid)
}

fn schedule(o: &Options) -> Schedule {
    Schedule {
        at: o.at.clone(),
        at_day: o.at_day.clone(),
        every: o.every,
        keep_within: o.horizon,
    }
}

fn check(o: &Options) -> Result<(), BacktestError> {
    if o.at.is_empty() && o.at_day.is_empty() && o.every.is_none() {
        return Err(BacktestError::NoEvaluations);
    }
    if o.horizon <= 0 || o.alert_window <= 0 {
        return Err(BacktestError::Invalid(
            "the horizon and the alert window must be > 0".into(),
        ));
    }
    Ok(())
}

/// Builds the report from a finished pass.
fn report(
    log: &Log,
    lanes: &[fold::LaneResult],
    invalid: u64,
    o: &Options,
) -> Result<Report, BacktestError> {
    let (Some(base), compare) = (lanes.first(), lanes.get(1)) else {
        return Err(BacktestError::Invalid("no model".into()));
    };
    if log.times.is_empty() {
        return Err(BacktestError::NoEvaluations);
    }
    let times: Vec<usize> = (0..log.times.len()).collect();
    let m = Measure {
        log,
        times: &times,
        horizon: o.horizon,
        alert_window: o.alert_window,
        period: Period {
            from: log.first,
            to: log.last,
            cancels_from: log.first + o.alert_window,
        },
    };
    let base = m.model_report(base);
    let compare = compare.map(|c| m.model_report(c));
    Ok(Report {
        events: log.events,
        invalid_lines: invalid,
        accounts: log.accounts.len() as u64,
        first_event: timefmt::format(log.first),
        last_event: timefmt::format(log.last),
        horizon_days: o.horizon,
        alert_window_days: o.alert_window,
        difference: compare.as_ref().map(|c| Difference::between(&base, c)),
        base,
        compare,
    })
}

/// Runs the backtest over `events` (in log order) with `model`, and
/// `compare` beside it in the same pass.
pub fn run<'a>(
    events: impl IntoIterator<Item = Event<'a>>,
    model: ModelConfig,
    compare: Option<ModelConfig>,
    o: &Options,
) -> Result<Report, BacktestError> {
    check(o)?;
    let mut models = vec![model];
    models.extend(compare);
    let mut pass = Pass::new(models, schedule(o), None);
    for ev in events {
        pass.apply(&ev);
    }
    let (log, lanes) = pass.finish();
    if log.events == 0 {
        return Err(BacktestError::NoEvents {
            path: PathBuf::from("-"),
            invalid: 0,
        });
    }
    report(&log, &lanes, 0, o)
}

/// Threads for folding several models: one per core, at most one per model.
pub fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs the backtest over a JSONL log file, streaming it (with
/// `compare`, the two models fold on two threads when there are two cores).
pub fn run_file(
    path: &Path,
    model: ModelConfig,
    compare: Option<ModelConfig>,
    o: &Options,
) -> Result<Report, BacktestError> {
    check(o)?;
    let mut models = vec![model];
    models.extend(compare);
    let (log, lanes, invalid) = fold::run_lanes(path, models, &schedule(o), None, threads())?;
    if log.events == 0 {
        return Err(BacktestError::NoEvents {
            path: path.to_path_buf(),
            invalid,
        });
    }
    report(&log, &lanes, invalid, o)
}

// ---------------------------------------------------------------- tables

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.digits$}"))
}

fn signed(v: Option<f64>, digits: usize) -> String {
    v.map_or("".into(), |v| format!("{v:+.digits$}"))
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The headline rows of one population for one or two models.
pub fn render_quality(out: &mut String, title: &str, a: &Quality, b: Option<&Quality>) {
    let _ = writeln!(
        out,
        "\n{title}: {} observations, {} churners ({})",
        thousands(a.observations),
        thousands(a.churners),
        if a.observations > 0 {
            format!("{:.1}%", 100.0 * a.churners as f64 / a.observations as f64)
        } else {
            "n/a".into()
        }
    );
    type Get = fn(&Quality) -> Option<f64>;
    let rows: [(&str, Get, usize); 6] = [
        ("ROC AUC", |q| q.roc_auc, 3),
        ("PR AUC (average precision)", |q| q.pr_auc, 3),
        ("at_risk precision", |q| q.alerts.precision, 3),
        ("at_risk recall", |q| q.alerts.recall, 3),
        ("median lead (days)", |q| q.alerts.median_lead_days, 1),
        (
            "alerts / 100 accounts / month",
            |q| q.alerts.alerts_per_100_accounts_per_month,
            2,
        ),
    ];
    for (name, get, d) in rows {
        match b {
            None => {
                let _ = writeln!(out, "  {name:<30} {:>9}", opt(get(a), d));
            }
            Some(b) => {
                let diff = get(a).and_then(|x| Some(get(b)? - x));
                let _ = writeln!(
                    out,
                    "  {name:<30} {:>9} {:>9} {:>9}",
                    opt(get(a), d),
                    opt(get(b), d),
                    signed(diff, d)
                );
            }
        }
    }
    let al = |q: &Quality| {
        format!(
            "{} alerts ({} judged), {}/{} cancellations caught",
            thousands(q.alerts.at_risk_alerts),
            thousands(q.alerts.judged),
            thousands(q.alerts.caught),
            thousands(q.alerts.cancellations)
        )
    };
    let _ = writeln!(out, "  {:<30} {}", "", al(a));
    if let Some(b) = b {
        let _ = writeln!(out, "  {:<30} {} (second)", "", al(b));
    }
}

fn render_deciles(out: &mut String, model: &str, q: &Quality) {
    if q.deciles.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\nchurn rate by score decile, {model} (1 = lowest scores):"
    );
    let _ = write!(out, "  {:<8}", "decile");
    for d in &q.deciles {
        let _ = write!(out, " {:>11}", d.decile);
    }
    let _ = write!(out, "\n  {:<8}", "score");
    for d in &q.deciles {
        let _ = write!(
            out,
            " {:>11}",
            format!("{:.0}–{:.0}", d.min_score, d.max_score)
        );
    }
    let _ = write!(out, "\n  {:<8}", "churn");
    for d in &q.deciles {
        let _ = write!(out, " {:>11}", format!("{:.1}%", 100.0 * d.churn_rate));
    }
    out.push('\n');
}

fn render_feedback(out: &mut String, model: &str, q: &Quality) {
    if q.alerts.by_verdict.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\nalert.feedback, {model}: precision by the team's verdicts {}; outcome precision by verdict:",
        opt(q.alerts.feedback_precision, 3)
    );
    for v in &q.alerts.by_verdict {
        let _ = writeln!(
            out,
            "  {:<16} {:>7} alerts {:>7} judged  precision {}",
            v.verdict,
            thousands(v.alerts),
            thousands(v.judged),
            opt(v.precision, 3)
        );
    }
}

fn render_evaluations(out: &mut String, r: &ModelReport) {
    let _ = writeln!(out, "\n{}", r.model);
    let _ = writeln!(
        out,
        "  {:<26} {:>9} {:>9} {:>8} {:>8}   ROC AUC by component",
        "evaluated at", "accounts", "churners", "ROC AUC", "PR AUC"
    );
    for e in &r.evaluations {
        let _ = writeln!(
            out,
            "  {:<26} {:>9} {:>9} {:>8} {:>8}   {}{}",
            e.at,
            thousands(e.accounts),
            thousands(e.churners),
            opt(e.auc, 3),
            opt(e.pr_auc, 3),
            e.component_auc
                .iter()
                .map(|(n, a)| format!("{n} {}", opt(*a, 2)))
                .collect::<Vec<_>>()
                .join(", "),
            if e.horizon_complete {
                ""
            } else {
                "  (horizon passes the log's end)"
            }
        );
    }
}

/// Overall and per-segment blocks, one or two models side by side.
pub fn render_models(out: &mut String, a: &ModelReport, b: Option<&ModelReport>) {
    if let Some(b) = b {
        let _ = writeln!(
            out,
            "\n  {:<30} {:>9} {:>9} {:>9}\n  {:<30} {:>9} {:>9} {:>9}",
            "", "first", "second", "second −", "", "", "", "first"
        );
        let _ = writeln!(out, "  first = {}, second = {}", a.model, b.model);
    }
    render_quality(out, "all accounts", &a.overall, b.map(|b| &b.overall));
    for (seg, q) in &a.segments {
        render_quality(
            out,
            &format!("segment {seg}"),
            q,
            b.and_then(|b| b.segments.get(seg)),
        );
    }
    render_deciles(out, &a.model, &a.overall);
    if let Some(b) = b {
        render_deciles(out, &b.model, &b.overall);
    }
    render_feedback(out, &a.model, &a.overall);
    if let Some(b) = b {
        render_feedback(out, &b.model, &b.overall);
    }
}

/// The report as a readable table.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} events ({} invalid lines skipped), {} accounts, {} … {}; horizon {} days, alert window {} days",
        thousands(r.events),
        thousands(r.invalid_lines),
        thousands(r.accounts),
        r.first_event,
        r.last_event,
        day_str(r.horizon_days),
        day_str(r.alert_window_days)
    );
    render_evaluations(&mut out, &r.base);
    if let Some(c) = &r.compare {
        render_evaluations(&mut out, c);
    }
    render_models(&mut out, &r.base, r.compare.as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60d"), Ok(60 * MS_PER_DAY));
        assert_eq!(parse_duration("12w"), Ok(84 * MS_PER_DAY));
        assert_eq!(parse_duration("720h"), Ok(30 * MS_PER_DAY));
        for bad in [
            "60",
            "d",
            "-3d",
            "0d",
            "1.5d",
            "3m",
            "",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(8_907_469), "8,907,469");
    }
}
