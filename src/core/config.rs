//! The model's configuration: scorecards (weights and band thresholds, per
//! segment), alert rules, time rules and state limits. Plain data; the
//! service config (`crate::config`) embeds it under `[model]`.
//!
//! Every default here is documented in `docs/MODEL.md`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Component weights. They need not sum to 1: the score divides by the sum.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Weights {
    pub usage: f64,
    pub adoption: f64,
    pub support: f64,
    pub financial: f64,
    pub sentiment: f64,
    pub lifecycle: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            usage: 0.40,
            adoption: 0.15,
            support: 0.15,
            financial: 0.15,
            sentiment: 0.10,
            lifecycle: 0.05,
        }
    }
}

impl Weights {
    pub fn as_array(&self) -> [f64; 6] {
        [
            self.usage,
            self.adoption,
            self.support,
            self.financial,
            self.sentiment,
            self.lifecycle,
        ]
    }
    pub fn sum(&self) -> f64 {
        self.as_array().iter().sum()
    }
}

/// Band thresholds with hysteresis: enter `at_risk` below `at_risk_below`,
/// leave it at `at_risk_below + hysteresis`; enter `healthy` at
/// `healthy_at`, leave it below `healthy_at - hysteresis`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Bands {
    pub at_risk_below: f64,
    pub healthy_at: f64,
    pub hysteresis: f64,
}

impl Default for Bands {
    fn default() -> Self {
        Bands {
            at_risk_below: 59.0,
            healthy_at: 70.0,
            hysteresis: 5.0,
        }
    }
}

/// A scorecard: what one segment's score is made of.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Scorecard {
    pub weights: Weights,
    pub bands: Bands,
}

/// A segment's changes to the default scorecard: any field left out keeps
/// the default's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ScorecardPatch {
    #[serde(default)]
    pub weights: WeightsPatch,
    #[serde(default)]
    pub bands: BandsPatch,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WeightsPatch {
    pub usage: Option<f64>,
    pub adoption: Option<f64>,
    pub support: Option<f64>,
    pub financial: Option<f64>,
    pub sentiment: Option<f64>,
    pub lifecycle: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BandsPatch {
    pub at_risk_below: Option<f64>,
    pub healthy_at: Option<f64>,
    pub hysteresis: Option<f64>,
}

impl ScorecardPatch {
    pub fn apply(&self, base: &Scorecard) -> Scorecard {
        let w = &self.weights;
        let b = &self.bands;
        Scorecard {
            weights: Weights {
                usage: w.usage.unwrap_or(base.weights.usage),
                adoption: w.adoption.unwrap_or(base.weights.adoption),
                support: w.support.unwrap_or(base.weights.support),
                financial: w.financial.unwrap_or(base.weights.financial),
                sentiment: w.sentiment.unwrap_or(base.weights.sentiment),
                lifecycle: w.lifecycle.unwrap_or(base.weights.lifecycle),
            },
            bands: Bands {
                at_risk_below: b.at_risk_below.unwrap_or(base.bands.at_risk_below),
                healthy_at: b.healthy_at.unwrap_or(base.bands.healthy_at),
                hysteresis: b.hysteresis.unwrap_or(base.bands.hysteresis),
            },
        }
    }
}

/// Parameters of the factor formulas (docs/MODEL.md, "Factors").
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Factors {
    /// Distinct features an account is expected to use in 28 days.
    pub expected_features: f64,
    /// Seat utilisation (28-day active users / licensed seats) that scores 100.
    pub target_seat_utilisation: f64,
    /// Days without usage that bring `usage_recency` to 0.
    pub inactivity_days: u32,
    /// Half-life of survey answers, in days.
    pub survey_half_life_days: f64,
    /// Weight of the prior in the decayed survey means (in answers).
    pub survey_prior_weight: f64,
    /// Activity added to each week of both windows before `usage_trend`
    /// and `usage_momentum` compare them: a small account's weekly counts
    /// are noisy, so its ratios are shrunk toward flat.
    pub activity_trend_prior: f64,
}

impl Default for Factors {
    fn default() -> Self {
        Factors {
            expected_features: 8.0,
            target_seat_utilisation: 0.8,
            inactivity_days: 21,
            survey_half_life_days: 90.0,
            survey_prior_weight: 1.0,
            activity_trend_prior: 10.0,
        }
    }
}

/// Alert rules (docs/MODEL.md, "Signals").
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertRules {
    pub at_risk_cooldown_days: u32,
    pub upsell_cooldown_days: u32,
    /// A fall of this many points below the highest score of the last
    /// `sharp_drop_days` raises `at_risk` even before the band is entered.
    pub sharp_drop_points: f64,
    pub sharp_drop_days: u32,
    /// Unpaid failed payments that force `at_risk`.
    pub failed_payments: u32,
    /// Days overdue that force `at_risk`.
    pub overdue_days: u32,
    /// Days of silence (no usage) that force `at_risk`.
    pub silent_days: u32,
    /// A renewal this close with a score below `at_risk_below + 2 ×
    /// hysteresis` forces `at_risk`.
    /// 0 turns the rule off.
    pub renewal_warning_days: u32,
    pub upsell_seat_utilisation: f64,
    pub upsell_usage_growth: f64,
    pub upsell_promoter_nps: u8,
    pub upsell_feature_breadth: f64,
    pub upsell_min_signals: u32,
    /// Every account is re-scored at least this often (event time), so
    /// windows and decay move for accounts that send nothing.
    pub reevaluate_every_hours: u32,
    /// Publish a health record when the score moved at least this much
    /// since the last one (a band, override or status change always
    /// publishes).
    pub publish_min_delta: f64,
}

impl Default for AlertRules {
    fn default() -> Self {
        AlertRules {
            at_risk_cooldown_days: 30,
            upsell_cooldown_days: 90,
            sharp_drop_points: 20.0,
            sharp_drop_days: 7,
            failed_payments: 2,
            overdue_days: 30,
            silent_days: 14,
            renewal_warning_days: 30,
            upsell_seat_utilisation: 0.9,
            upsell_usage_growth: 0.5,
            upsell_promoter_nps: 9,
            upsell_feature_breadth: 0.8,
            upsell_min_signals: 2,
            reevaluate_every_hours: 72,
            publish_min_delta: 2.0,
        }
    }
}

/// Bounds on what the fold keeps, so memory per account is bounded
/// whatever arrives.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Distinct users tracked per account (least recently seen evicted).
    pub max_users: u32,
    /// Distinct features tracked per account (least recently used evicted).
    pub max_features: u32,
    /// Open tickets tracked per account (oldest evicted).
    pub max_open_tickets: u32,
    /// Unpaid invoices tracked per account (oldest evicted).
    pub max_unpaid_invoices: u32,
    /// Distinct labels (segment, tier, owner, plan, touchpoint kind) per
    /// partition; further new labels are ignored and counted.
    pub max_labels: u32,
    /// How long (event time) an event id is remembered for duplicate detection.
    pub dedup_window_hours: u32,
    /// Most event ids remembered per partition (oldest forgotten first).
    pub dedup_max_ids: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_users: 1000,
            max_features: 64,
            max_open_tickets: 64,
            max_unpaid_invoices: 16,
            max_labels: 4096,
            dedup_window_hours: 72,
            dedup_max_ids: 1_000_000,
        }
    }
}

/// Everything the fold needs to know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Name of this scorecard version; outputs carry it with a hash of the
    /// whole model config.
    pub version: String,
    /// How far behind the newest event time an event may arrive before it
    /// counts as late; timers fire when this watermark passes them.
    pub allowed_lateness_secs: u64,
    pub scorecard: Scorecard,
    /// Per segment (or tier) scorecards: `[model.segments.enterprise]`.
    pub segments: BTreeMap<String, ScorecardPatch>,
    pub factors: Factors,
    pub alerts: AlertRules,
    pub limits: Limits,
    /// Live model monitoring (`vitals_model_*`).
    pub monitor: super::monitor::MonitorConfig,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            version: "default-2".into(),
            allowed_lateness_secs: 3600,
            scorecard: Scorecard::default(),
            segments: BTreeMap::new(),
            factors: Factors::default(),
            alerts: AlertRules::default(),
            limits: Limits::default(),
            monitor: Default::default(),
        }
    }
}

impl ModelConfig {
    /// Every problem with the values, each naming its key. Empty = valid.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let mut check_card = |name: &str, sc: &Scorecard| {
            let w = sc.weights.as_array();
            if w.iter().any(|x| !x.is_finite() || *x < 0.0) {
                p.push(format!("{name}.weights: every weight must be a number ≥ 0"));
            } else if sc.weights.sum() <= 0.0 {
                p.push(format!("{name}.weights: at least one weight must be > 0"));
            }
            let b = sc.bands;
            if !(0.0..=100.0).contains(&b.at_risk_below) {
                p.push(format!(
                    "{name}.bands.at_risk_below: must be within 0..=100"
                ));
            }
            if !(0.0..=100.0).contains(&b.healthy_at) {
                p.push(format!("{name}.bands.healthy_at: must be within 0..=100"));
            }
            if b.healthy_at <= b.at_risk_below {
                p.push(format!(
                    "{name}.bands.healthy_at: must be above at_risk_below ({} ≤ {})",
                    b.healthy_at, b.at_risk_below
                ));
            }
            if !(0.0..=50.0).contains(&b.hysteresis) {
                p.push(format!("{name}.bands.hysteresis: must be within 0..=50"));
            }
        };
        check_card("model.scorecard", &self.scorecard);
        for (seg, patch) in &self.segments {
            check_card(
                &format!("model.segments.{seg}"),
                &patch.apply(&self.scorecard),
            );
        }
        let f = &self.factors;
        if f.expected_features.is_nan() || f.expected_features < 1.0 {
            p.push("model.factors.expected_features: must be ≥ 1".into());
        }
        if f.target_seat_utilisation.is_nan() || f.target_seat_utilisation <= 0.0 {
            p.push("model.factors.target_seat_utilisation: must be > 0".into());
        }
        if f.inactivity_days < 3 {
            p.push("model.factors.inactivity_days: must be ≥ 3".into());
        }
        if f.survey_half_life_days.is_nan() || f.survey_half_life_days <= 0.0 {
            p.push("model.factors.survey_half_life_days: must be > 0".into());
        }
        if f.survey_prior_weight.is_nan() || f.survey_prior_weight <= 0.0 {
            p.push("model.factors.survey_prior_weight: must be > 0".into());
        }
        if f.activity_trend_prior.is_nan() || f.activity_trend_prior < 0.0 {
            p.push("model.factors.activity_trend_prior: must be ≥ 0".into());
        }
        if self.monitor.horizon_days == 0 {
            p.push("model.monitor.horizon_days: must be ≥ 1".into());
        }
        if self.monitor.every_days == 0 {
            p.push("model.monitor.every_days: must be ≥ 1".into());
        }
        let a = &self.alerts;
        if a.reevaluate_every_hours == 0 {
            p.push("model.alerts.reevaluate_every_hours: must be ≥ 1".into());
        }
        if a.sharp_drop_days == 0 || a.sharp_drop_days > 30 {
            p.push("model.alerts.sharp_drop_days: must be within 1..=30".into());
        }
        if a.publish_min_delta.is_nan() || a.publish_min_delta < 0.0 {
            p.push("model.alerts.publish_min_delta: must be ≥ 0".into());
        }
        if a.upsell_min_signals == 0 {
            p.push("model.alerts.upsell_min_signals: must be ≥ 1".into());
        }
        let l = &self.limits;
        for (k, v) in [
            ("max_users", l.max_users),
            ("max_features", l.max_features),
            ("max_open_tickets", l.max_open_tickets),
            ("max_unpaid_invoices", l.max_unpaid_invoices),
            ("max_labels", l.max_labels),
            ("dedup_max_ids", l.dedup_max_ids),
        ] {
            if v == 0 {
                p.push(format!("model.limits.{k}: must be ≥ 1"));
            }
        }
        if l.max_labels > u16::MAX as u32 - 1 {
            p.push("model.limits.max_labels: must be ≤ 65534".into());
        }
        p
    }
}
