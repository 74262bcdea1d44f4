//! What the fold emits: decisions as data. The shell encodes and publishes
//! them; the core never sends anything.

use std::sync::Arc;

use super::event::Band;
use super::time::Ts;

/// A factor's effect on a score, with a sentence a person can read.
#[derive(Debug, Clone, PartialEq)]
pub struct Driver {
    pub factor: &'static str,
    /// Signed effect on the score, in points.
    pub impact: f64,
    pub detail: String,
}

/// What caused an output: an event (by id) or an event-time timer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CausedBy {
    Event(String),
    /// A timer that fired at this event time (inactivity, renewal,
    /// override expiry, periodic re-scoring).
    Timer(Ts),
}

/// A manual override as shown beside the computed score.
#[derive(Debug, Clone, PartialEq)]
pub struct OverrideView {
    pub band: Option<Band>,
    pub score: Option<u8>,
    pub reason: String,
    pub by: Option<String>,
    pub set_at: Ts,
    pub expires_at: Ts,
}

/// An account's current health (`vitals.health`).
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub account_id: String,
    pub time: Ts,
    pub score: f64,
    pub band: Band,
    /// Component scores in [`super::score::COMPONENTS`] order.
    pub components: [f64; 6],
    pub trend_30d: f64,
    pub segment: Option<String>,
    pub drivers: Vec<Driver>,
    pub override_: Option<OverrideView>,
    pub scorecard: Arc<str>,
    pub cancelled: bool,
    pub caused_by: CausedBy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlertKind {
    AtRisk,
    Recovered,
    UpsellOpportunity,
}

impl AlertKind {
    pub const ALL: [AlertKind; 3] = [
        AlertKind::AtRisk,
        AlertKind::Recovered,
        AlertKind::UpsellOpportunity,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::AtRisk => "at_risk",
            AlertKind::Recovered => "recovered",
            AlertKind::UpsellOpportunity => "upsell_opportunity",
        }
    }
    /// The kind an `alert_id` names (ids start with the kind).
    pub fn of_alert_id(id: &str) -> Option<Self> {
        let (kind, _) = id.rsplit_once('-')?;
        AlertKind::ALL.into_iter().find(|k| k.as_str() == kind)
    }
}

/// One reason an account looks ready to expand.
#[derive(Debug, Clone, PartialEq)]
pub struct UpsellSignal {
    pub signal: &'static str,
    pub value: f64,
    pub detail: String,
}

/// An alert (`vitals.alerts.at-risk` or `vitals.alerts.upsell`).
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub alert_id: String,
    pub kind: AlertKind,
    pub account_id: String,
    pub time: Ts,
    pub score: f64,
    pub previous_band: Band,
    pub band: Band,
    pub drivers: Vec<Driver>,
    pub signals: Vec<UpsellSignal>,
    pub caused_by: CausedBy,
    /// Why it fired: `entered_band`, `sharp_drop`, a hard trigger's name,
    /// `left_band` or `expansion_signals`.
    pub reason: &'static str,
    pub scorecard: Arc<str>,
}

/// Everything the fold emits, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    Health(Health),
    Alert(Alert),
}

impl Signal {
    pub fn account_id(&self) -> &str {
        match self {
            Signal::Health(h) => &h.account_id,
            Signal::Alert(a) => &a.account_id,
        }
    }
}
