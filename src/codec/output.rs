//! Output records: signals → JSON (default) or Protobuf. Field names and
//! order follow SPEC §2.

use prost::Message;
use serde::Serialize;

use crate::core::score::COMPONENTS;
use crate::core::signal::{Alert, AlertKind, CausedBy, Driver, Health, OverrideView, UpsellSignal};

use super::pb;
use super::timefmt::format as ts;

#[derive(Serialize)]
struct DriverOut<'a> {
    factor: &'a str,
    impact: f64,
    detail: &'a str,
}

#[derive(Serialize)]
struct OverrideOut<'a> {
    band: Option<&'a str>,
    score: Option<u8>,
    reason: &'a str,
    by: Option<&'a str>,
    set_at: String,
    expires_at: String,
}

#[derive(Serialize)]
struct Components {
    usage: f64,
    adoption: f64,
    support: f64,
    financial: f64,
    sentiment: f64,
    lifecycle: f64,
}

#[derive(Serialize)]
struct HealthOut<'a> {
    account_id: &'a str,
    time: String,
    score: f64,
    band: &'a str,
    components: Components,
    trend_30d: f64,
    segment: Option<&'a str>,
    drivers: Vec<DriverOut<'a>>,
    #[serde(rename = "override")]
    override_: Option<OverrideOut<'a>>,
    scorecard: &'a str,
    status: &'a str,
    caused_by: String,
}

#[derive(Serialize)]
struct SignalOut<'a> {
    signal: &'a str,
    value: f64,
    detail: &'a str,
}

#[derive(Serialize)]
struct AtRiskOut<'a> {
    alert_id: &'a str,
    kind: &'a str,
    account_id: &'a str,
    time: String,
    score: f64,
    previous_band: &'a str,
    band: &'a str,
    reason: &'a str,
    drivers: Vec<DriverOut<'a>>,
    caused_by: String,
    scorecard: &'a str,
}

#[derive(Serialize)]
struct UpsellOut<'a> {
    alert_id: &'a str,
    kind: &'a str,
    account_id: &'a str,
    time: String,
    score: f64,
    band: &'a str,
    signals: Vec<SignalOut<'a>>,
    caused_by: String,
    scorecard: &'a str,
}

fn drivers(d: &[Driver]) -> Vec<DriverOut<'_>> {
    d.iter()
        .map(|d| DriverOut {
            factor: d.factor,
            impact: d.impact,
            detail: &d.detail,
        })
        .collect()
}

fn signals(s: &[UpsellSignal]) -> Vec<SignalOut<'_>> {
    s.iter()
        .map(|s| SignalOut {
            signal: s.signal,
            value: s.value,
            detail: &s.detail,
        })
        .collect()
}

/// `caused_by` as text: the event id, or `timer:<time>` for event-time timers.
pub fn caused_by(c: &CausedBy) -> String {
    match c {
        CausedBy::Event(id) => id.clone(),
        CausedBy::Timer(t) => format!("timer:{}", ts(*t)),
    }
}

fn override_out(o: &OverrideView) -> OverrideOut<'_> {
    OverrideOut {
        band: o.band.map(|b| b.as_str()),
        score: o.score,
        reason: &o.reason,
        by: o.by.as_deref(),
        set_at: ts(o.set_at),
        expires_at: ts(o.expires_at),
    }
}

/// A health record as one line of JSON (no trailing newline).
pub fn health_json(h: &Health) -> Vec<u8> {
    let c = h.components;
    let out = HealthOut {
        account_id: &h.account_id,
        time: ts(h.time),
        score: h.score,
        band: h.band.as_str(),
        components: Components {
            usage: c[0],
            adoption: c[1],
            support: c[2],
            financial: c[3],
            sentiment: c[4],
            lifecycle: c[5],
        },
        trend_30d: h.trend_30d,
        segment: h.segment.as_deref(),
        drivers: drivers(&h.drivers),
        override_: h.override_.as_ref().map(override_out),
        scorecard: &h.scorecard,
        status: if h.cancelled { "cancelled" } else { "active" },
        caused_by: caused_by(&h.caused_by),
    };
    serde_json::to_vec(&out).expect("health records always serialize")
}

/// An alert as one line of JSON (no trailing newline).
pub fn alert_json(a: &Alert) -> Vec<u8> {
    let r = match a.kind {
        AlertKind::UpsellOpportunity => serde_json::to_vec(&UpsellOut {
            alert_id: &a.alert_id,
            kind: a.kind.as_str(),
            account_id: &a.account_id,
            time: ts(a.time),
            score: a.score,
            band: a.band.as_str(),
            signals: signals(&a.signals),
            caused_by: caused_by(&a.caused_by),
            scorecard: &a.scorecard,
        }),
        _ => serde_json::to_vec(&AtRiskOut {
            alert_id: &a.alert_id,
            kind: a.kind.as_str(),
            account_id: &a.account_id,
            time: ts(a.time),
            score: a.score,
            previous_band: a.previous_band.as_str(),
            band: a.band.as_str(),
            reason: a.reason,
            drivers: drivers(&a.drivers),
            caused_by: caused_by(&a.caused_by),
            scorecard: &a.scorecard,
        }),
    };
    r.expect("alerts always serialize")
}

fn pb_drivers(d: &[Driver]) -> Vec<pb::Driver> {
    d.iter()
        .map(|d| pb::Driver {
            factor: d.factor.to_string(),
            impact: d.impact,
            detail: d.detail.clone(),
        })
        .collect()
}

/// A health record as Protobuf (`vitals.v1.Health`).
pub fn health_proto(h: &Health) -> Vec<u8> {
    let c = h.components;
    debug_assert_eq!(COMPONENTS.len(), c.len());
    pb::Health {
        account_id: h.account_id.clone(),
        time: ts(h.time),
        score: h.score,
        band: h.band.as_str().into(),
        components: Some(pb::Components {
            usage: c[0],
            adoption: c[1],
            support: c[2],
            financial: c[3],
            sentiment: c[4],
            lifecycle: c[5],
        }),
        trend_30d: h.trend_30d,
        segment: h.segment.clone().unwrap_or_default(),
        drivers: pb_drivers(&h.drivers),
        r#override: h.override_.as_ref().map(|o| pb::Override {
            band: o.band.map(|b| b.as_str().into()),
            score: o.score.map(|s| s as f64),
            reason: o.reason.clone(),
            by: o.by.clone(),
            set_at: ts(o.set_at),
            expires_at: ts(o.expires_at),
        }),
        scorecard: h.scorecard.to_string(),
        status: if h.cancelled { "cancelled" } else { "active" }.into(),
    }
    .encode_to_vec()
}

/// An alert as Protobuf (`vitals.v1.Alert`).
pub fn alert_proto(a: &Alert) -> Vec<u8> {
    pb::Alert {
        alert_id: a.alert_id.clone(),
        kind: a.kind.as_str().into(),
        account_id: a.account_id.clone(),
        time: ts(a.time),
        score: a.score,
        previous_band: a.previous_band.as_str().into(),
        band: a.band.as_str().into(),
        drivers: pb_drivers(&a.drivers),
        signals: a
            .signals
            .iter()
            .map(|s| pb::Signal {
                signal: s.signal.into(),
                value: s.value,
                detail: s.detail.clone(),
            })
            .collect(),
        caused_by: caused_by(&a.caused_by),
        reason: a.reason.into(),
        scorecard: a.scorecard.to_string(),
    }
    .encode_to_vec()
}
