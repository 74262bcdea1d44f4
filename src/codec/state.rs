//! Partition state ⇄ Protobuf (`vitals.v1.PartitionState`). Encoding then
//! decoding gives an equal state (a property test checks it).

use std::sync::Arc;

use prost::Message;

use thin_vec::ThinVec;

use crate::core::account::{
    Account, AlertState, Decayed, Extras, LimitHits, Override, OverrideAudit, OverrideEnd,
    Published, Support, Surveys, Ticket, Unpaid, WeekCell, WeekRing, NEVER, NO_DAY, SCORE_DAYS,
    WEEKS,
};
use crate::core::event::{Band, Priority};
use crate::core::interventions::{
    Arm, HorizonOutcome, InterventionOutcomes, Interventions, KindOutcome, Observation,
};
use crate::core::monitor::{Cohort, Monitor};
use crate::core::partition::{
    Dedup, Labels, Model, Partition, PortfolioMonths, ScorecardChange, Stats,
    SCORECARD_CHANGES_KEPT,
};
use crate::core::portfolio::MonthFlows;

use super::pb;

/// Current state format version. 2 added the portfolio's monthly flows
/// and the intervention observations: a format-1 snapshot lacks that
/// history, so it is refused (and the partition restored from an older
/// snapshot or replayed) rather than restored with silently empty analytics.
/// 3 added the live model monitor's cohorts and tally, refused likewise.
pub const FORMAT: u32 = 3;

/// Why a state record could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state is not valid protobuf: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("state format {found} is not supported (this build reads format {FORMAT})")]
    Format { found: u32 },
    #[error("state field {0} is malformed")]
    Malformed(&'static str),
}

fn dec(d: &Decayed) -> pb::Decayed {
    pb::Decayed {
        sum: d.sum,
        weight: d.weight,
        day: d.day,
        count: d.count,
    }
}

fn undec(d: Option<pb::Decayed>, f: &'static str) -> Result<Decayed, StateError> {
    Ok(match d {
        Some(d) => Decayed {
            sum: finite(d.sum, f)?,
            weight: finite(d.weight, f)?,
            day: day(d.day, f)?,
            count: d.count,
        },
        None => Decayed::default(),
    })
}

fn ov(o: &Override) -> pb::OverrideState {
    pb::OverrideState {
        band: o.band.map(|b| b.as_str().into()),
        score: o.score.map(u32::from),
        reason: o.reason.to_string(),
        by: o.by.as_ref().map(|b| b.to_string()),
        set_at: o.set_at,
        expires_at: o.expires_at,
        event_id: o.event_id.to_string(),
    }
}

fn unov(o: pb::OverrideState) -> Result<Override, StateError> {
    Ok(Override {
        band: match o.band {
            None => None,
            Some(b) => Some(Band::parse(&b).ok_or(StateError::Malformed("override.band"))?),
        },
        score: o.score.map(|s| s.min(100) as u8),
        reason: o.reason.into(),
        by: o.by.map(Into::into),
        set_at: ts(o.set_at, "override.set_at")?,
        expires_at: ts(o.expires_at, "override.expires_at")?,
        event_id: o.event_id.into(),
    })
}

fn account_to(a: &Account) -> pb::AccountState {
    let w = &a.weeks;
    let ex = a.extras.as_deref();
    let sup = a.support.as_deref();
    let sv = a.surveys();
    let p = a.alert.published;
    pb::AccountState {
        id: a.id.to_string(),
        segment: a.segment.into(),
        tier: a.tier.into(),
        owner: a.owner.into(),
        plan: a.plan.into(),
        scorecard: a.scorecard.into(),
        first_seen: a.first_seen,
        subscribed_at: a.subscribed_at,
        cancelled_at: a.cancelled_at,
        last_eval: a.last_eval,
        last_activity: a.last_activity,
        users: a.users.to_vec(),
        feature_hash: a.features.iter().map(|f| f.0).collect(),
        feature_day: a.features.iter().map(|f| f.1).collect(),
        feature_count: a.features.iter().map(|f| f.2).collect(),
        weeks_head: a.weeks.head,
        week_activity: w.activity.to_vec(),
        week_wau: w.wau.iter().map(|&v| v.into()).collect(),
        week_tickets: w.tickets.iter().map(|&v| v.into()).collect(),
        week_escalations: w.escalations.iter().map(|&v| v.into()).collect(),
        week_reopens: w.reopens.iter().map(|&v| v.into()).collect(),
        seats_licensed: a.seats_licensed,
        tickets_total: a.tickets_total,
        ticket_hash: a.open_tickets().iter().map(|t| t.hash).collect(),
        ticket_opened_min: a.open_tickets().iter().map(|t| t.opened_min).collect(),
        ticket_priority: a.open_tickets().iter().map(|t| t.priority as u32).collect(),
        ticket_escalated: a.open_tickets().iter().map(|t| t.escalated).collect(),
        resolve_hours: sup.map_or(0.0, |s| s.resolve_hours),
        resolved: sup.map_or(0, |s| s.resolved),
        ticket_csat: sup.map(|s| dec(&s.ticket_csat)),
        mrr_cents: a.mrr_cents,
        mrr_day: a.mrr_history.iter().map(|m| m.0).collect(),
        mrr_value: a.mrr_history.iter().map(|m| m.1).collect(),
        unpaid_hash: a.unpaid.iter().map(|u| u.hash).collect(),
        unpaid_failures: a.unpaid.iter().map(|u| u.failures.into()).collect(),
        unpaid_days_overdue: a.unpaid.iter().map(|u| u.days_overdue.into()).collect(),
        unpaid_overdue_day: a.unpaid.iter().map(|u| u.overdue_day).collect(),
        unpaid_amount: a.unpaid.iter().map(|u| u.amount_cents).collect(),
        payments_failed_total: a.payments_failed_total,
        renews_at: a.renews_at,
        nps: Some(dec(&sv.nps)),
        last_nps_score: sv.last_nps.map(|n| n.0.into()),
        last_nps_day: sv.last_nps.map_or(0, |n| n.1),
        csat: Some(dec(&sv.csat)),
        ces: Some(dec(&sv.ces)),
        onboarding: a.onboarding.into(),
        touchpoints: a.touchpoints,
        last_touchpoint: a.last_touchpoint,
        active_override: ex.and_then(|e| e.active_override.as_ref()).map(ov),
        override_audit: ex
            .map(|e| {
                e.audit
                    .iter()
                    .map(|x| pb::OverrideAudit {
                        entry: Some(ov(&x.entry)),
                        end: match x.end {
                            OverrideEnd::Active => "active",
                            OverrideEnd::Expired => "expired",
                            OverrideEnd::Replaced => "replaced",
                        }
                        .into(),
                        ended_at: x.ended_at,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        band: a.alert.band.to_u8().into(),
        at_risk_open: a.alert.at_risk_open,
        last_at_risk_alert: a.alert.last_at_risk_alert,
        upsell_active: a.alert.upsell_active,
        last_upsell_alert: a.alert.last_upsell_alert,
        has_published: p.is_some(),
        published_score: p.map_or(0.0, |p| p.score),
        published_band: p.map_or(0, |p| p.band.to_u8().into()),
        published_override_set_at: p.map_or(0, |p| p.override_set_at),
        published_cancelled: p.is_some_and(|p| p.cancelled),
        published_scorecard: p.map_or(0, |p| p.scorecard.into()),
        score_days: a.alert.score_days.to_vec(),
        score_head: a.alert.score_head,
        timer_due: a.timer_due,
        has_extras: ex.is_some(),
        has_support: sup.is_some(),
        has_surveys: a.surveys.is_some(),
        at_risk_pending: a.alert.at_risk_pending,
        upsell_pending: a.alert.upsell_pending,
        last_csat_score: sv.last_csat.map(|n| n.0.into()),
        last_csat_day: sv.last_csat.map_or(0, |n| n.1),
        last_ces_score: sv.last_ces.map(|n| n.0.into()),
        last_ces_day: sv.last_ces.map_or(0, |n| n.1),
    }
}

fn u16f(v: u32, f: &'static str) -> Result<u16, StateError> {
    u16::try_from(v).map_err(|_| StateError::Malformed(f))
}

fn u8f(v: u32, f: &'static str) -> Result<u8, StateError> {
    u8::try_from(v).map_err(|_| StateError::Malformed(f))
}

// Bounds on restored numbers. A snapshot is checksummed, but what it
// restores must still be something a fold could have produced: event times
// lie in 1970..2200 (SPEC §1), so every time, day and counter the fold
// derives stays far inside these bounds, and the fold's arithmetic on them
// (differences, `day * MS_PER_DAY`, `+= 1`) cannot overflow. A value
// outside them is a malformed snapshot, rejected like any other, and
// recovery falls back to an older snapshot or the log.

/// Times (ms): within ±2^45 ms (±1115 years) of 1970 (some may be the
/// sentinel [`NEVER`]).
const TIME_LIMIT: u64 = 1 << 45;
/// Day, week and month numbers: within ±2^20 (some may be the sentinel
/// [`NO_DAY`], which equals `NO_MONTH`).
const DAY_LIMIT: u32 = 1 << 20;
/// Counters and sums.
const COUNT_LIMIT: u64 = 1 << 62;

/// A time that is set.
fn ts(v: i64, f: &'static str) -> Result<i64, StateError> {
    if v.unsigned_abs() <= TIME_LIMIT {
        Ok(v)
    } else {
        Err(StateError::Malformed(f))
    }
}

/// A time that may be the sentinel [`NEVER`] (not yet happened).
fn ts_or_never(v: i64, f: &'static str) -> Result<i64, StateError> {
    if v == NEVER {
        Ok(v)
    } else {
        ts(v, f)
    }
}

/// A day (or week, or month) that is set.
fn day(v: i32, f: &'static str) -> Result<i32, StateError> {
    if v.unsigned_abs() <= DAY_LIMIT {
        Ok(v)
    } else {
        Err(StateError::Malformed(f))
    }
}

/// A day that may be the sentinel [`NO_DAY`] (not yet set).
fn day_or_none(v: i32, f: &'static str) -> Result<i32, StateError> {
    if v == NO_DAY {
        Ok(v)
    } else {
        day(v, f)
    }
}

fn all_days(v: &[i32], f: &'static str) -> Result<(), StateError> {
    v.iter().try_for_each(|&d| day(d, f).map(drop))
}

fn finite(v: f64, f: &'static str) -> Result<f64, StateError> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(StateError::Malformed(f))
    }
}

fn counts(v: &[u64], f: &'static str) -> Result<(), StateError> {
    if v.iter().all(|&c| c <= COUNT_LIMIT) {
        Ok(())
    } else {
        Err(StateError::Malformed(f))
    }
}

fn same_len(lens: &[usize], f: &'static str) -> Result<(), StateError> {
    if lens.windows(2).all(|w| w[0] == w[1]) {
        Ok(())
    } else {
        Err(StateError::Malformed(f))
    }
}

/// `cards`: the model's scorecards (an account's index must name one).
fn account_from(s: pb::AccountState, cards: usize) -> Result<Account, StateError> {
    if s.scorecard as usize >= cards {
        return Err(StateError::Malformed("scorecard"));
    }
    same_len(
        &[
            s.feature_hash.len(),
            s.feature_day.len(),
            s.feature_count.len(),
        ],
        "features",
    )?;
    same_len(
        &[
            WEEKS,
            s.week_activity.len(),
            s.week_wau.len(),
            s.week_tickets.len(),
            s.week_escalations.len(),
            s.week_reopens.len(),
        ],
        "weeks",
    )?;
    same_len(
        &[
            s.ticket_hash.len(),
            s.ticket_opened_min.len(),
            s.ticket_priority.len(),
            s.ticket_escalated.len(),
        ],
        "tickets",
    )?;
    same_len(&[s.mrr_day.len(), s.mrr_value.len()], "mrr_history")?;
    same_len(
        &[
            s.unpaid_hash.len(),
            s.unpaid_failures.len(),
            s.unpaid_days_overdue.len(),
            s.unpaid_overdue_day.len(),
            s.unpaid_amount.len(),
        ],
        "unpaid",
    )?;
    all_days(&s.feature_day, "feature_day")?;
    // Users and features are looked up by binary search on their hash.
    let user_days: Vec<i32> = s.users.iter().map(|&u| u as u32 as i32).collect();
    all_days(&user_days, "users")?;
    if !s.users.windows(2).all(|w| w[0] >> 32 < w[1] >> 32) {
        return Err(StateError::Malformed("users"));
    }
    if !s.feature_hash.windows(2).all(|w| w[0] < w[1]) {
        return Err(StateError::Malformed("feature_hash"));
    }
    all_days(&s.mrr_day, "mrr_day")?;
    s.unpaid_overdue_day
        .iter()
        .try_for_each(|&d| day_or_none(d, "unpaid_overdue_day").map(drop))?;
    let score_days: [u8; SCORE_DAYS] = s
        .score_days
        .as_slice()
        .try_into()
        .map_err(|_| StateError::Malformed("score_days"))?;
    let mut weeks = WeekRing {
        head: day_or_none(s.weeks_head, "weeks_head")?,
        ..WeekRing::default()
    };
    for i in 0..WEEKS {
        weeks.set_at(
            i,
            WeekCell {
                activity: s.week_activity[i],
                wau: u16f(s.week_wau[i], "week_wau")?,
                tickets: u8f(s.week_tickets[i], "week_tickets")?,
                escalations: u8f(s.week_escalations[i], "week_escalations")?,
                reopens: u8f(s.week_reopens[i], "week_reopens")?,
            },
        );
    }
    let mut open_tickets = ThinVec::with_capacity(s.ticket_hash.len());
    for i in 0..s.ticket_hash.len() {
        open_tickets.push(Ticket {
            hash: s.ticket_hash[i],
            opened_min: s.ticket_opened_min[i],
            priority: Priority::from_u8(u8f(s.ticket_priority[i], "ticket_priority")?),
            escalated: s.ticket_escalated[i],
        });
    }
    let mut unpaid = ThinVec::with_capacity(s.unpaid_hash.len());
    for i in 0..s.unpaid_hash.len() {
        unpaid.push(Unpaid {
            hash: s.unpaid_hash[i],
            failures: u16f(s.unpaid_failures[i], "unpaid_failures")?,
            days_overdue: u16f(s.unpaid_days_overdue[i], "unpaid_days_overdue")?,
            overdue_day: s.unpaid_overdue_day[i],
            amount_cents: s.unpaid_amount[i],
        });
    }
    let extras = if s.has_extras {
        let mut audit = Vec::new();
        for x in s.override_audit {
            audit.push(OverrideAudit {
                entry: unov(
                    x.entry
                        .ok_or(StateError::Malformed("override_audit.entry"))?,
                )?,
                end: match x.end.as_str() {
                    "active" => OverrideEnd::Active,
                    "expired" => OverrideEnd::Expired,
                    "replaced" => OverrideEnd::Replaced,
                    _ => return Err(StateError::Malformed("override_audit.end")),
                },
                ended_at: ts_or_never(x.ended_at, "override_audit.ended_at")?,
            });
        }
        Some(Box::new(Extras {
            active_override: s.active_override.map(unov).transpose()?,
            audit,
        }))
    } else {
        None
    };
    Ok(Account {
        id: s.id.into(),
        segment: u16f(s.segment, "segment")?,
        tier: u16f(s.tier, "tier")?,
        owner: u16f(s.owner, "owner")?,
        plan: u16f(s.plan, "plan")?,
        scorecard: u16f(s.scorecard, "scorecard")?,
        first_seen: ts(s.first_seen, "first_seen")?,
        subscribed_at: ts_or_never(s.subscribed_at, "subscribed_at")?,
        cancelled_at: ts_or_never(s.cancelled_at, "cancelled_at")?,
        last_eval: ts_or_never(s.last_eval, "last_eval")?,
        last_activity: ts_or_never(s.last_activity, "last_activity")?,
        users: s.users.into_iter().collect(),
        features: s
            .feature_hash
            .into_iter()
            .zip(s.feature_day)
            .zip(s.feature_count)
            .map(|((h, d), c)| (h, d, c))
            .collect(),
        weeks,
        seats_licensed: s.seats_licensed,
        tickets_total: s.tickets_total,
        support: if s.has_support {
            Some(Box::new(Support {
                open_tickets,
                resolve_hours: finite(s.resolve_hours, "resolve_hours")?,
                resolved: s.resolved,
                ticket_csat: undec(s.ticket_csat, "ticket_csat")?,
            }))
        } else {
            None
        },
        mrr_cents: s.mrr_cents,
        mrr_history: s.mrr_day.into_iter().zip(s.mrr_value).collect(),
        unpaid,
        payments_failed_total: s.payments_failed_total,
        renews_at: ts_or_never(s.renews_at, "renews_at")?,
        surveys: if s.has_surveys {
            Some(Box::new(Surveys {
                nps: undec(s.nps, "nps")?,
                last_nps: match s.last_nps_score {
                    Some(n) => Some((
                        u8f(n, "last_nps_score")?,
                        day(s.last_nps_day, "last_nps_day")?,
                    )),
                    None => None,
                },
                csat: undec(s.csat, "csat")?,
                last_csat: match s.last_csat_score {
                    Some(n) => Some((
                        u8f(n, "last_csat_score")?,
                        day(s.last_csat_day, "last_csat_day")?,
                    )),
                    None => None,
                },
                ces: undec(s.ces, "ces")?,
                last_ces: match s.last_ces_score {
                    Some(n) => Some((
                        u8f(n, "last_ces_score")?,
                        day(s.last_ces_day, "last_ces_day")?,
                    )),
                    None => None,
                },
            }))
        } else {
            None
        },
        onboarding: u8f(s.onboarding, "onboarding")?,
        touchpoints: s.touchpoints,
        last_touchpoint: ts_or_never(s.last_touchpoint, "last_touchpoint")?,
        extras,
        alert: AlertState {
            band: Band::from_u8(u8f(s.band, "band")?),
            at_risk_open: s.at_risk_open,
            at_risk_pending: s.at_risk_pending,
            last_at_risk_alert: ts_or_never(s.last_at_risk_alert, "last_at_risk_alert")?,
            upsell_active: s.upsell_active,
            upsell_pending: s.upsell_pending,
            last_upsell_alert: ts_or_never(s.last_upsell_alert, "last_upsell_alert")?,
            published: if s.has_published {
                Some(Published {
                    score: finite(s.published_score, "published_score")?,
                    band: Band::from_u8(u8f(s.published_band, "published_band")?),
                    override_set_at: ts_or_never(
                        s.published_override_set_at,
                        "published_override_set_at",
                    )?,
                    cancelled: s.published_cancelled,
                    scorecard: u16f(s.published_scorecard, "published_scorecard")?,
                })
            } else {
                None
            },
            score_days,
            score_head: day_or_none(s.score_head, "score_head")?,
        },
        timer_due: ts_or_never(s.timer_due, "timer_due")?,
    })
}

/// Encodes a partition's whole state.
pub fn encode(p: &Partition) -> Vec<u8> {
    let st = &p.stats;
    let iv = &p.interventions;
    let l = st.limits;
    pb::PartitionState {
        format: FORMAT,
        model: p.model.id.to_string(),
        max_time: p.max_time,
        labels: p.labels.names.iter().map(|n| n.to_string()).collect(),
        dedup_key: p.dedup.order.iter().map(|d| d.0).collect(),
        dedup_time: p.dedup.order.iter().map(|d| d.1).collect(),
        accounts: p.accounts.iter().map(account_to).collect(),
        stat_events: st.events.iter().flatten().copied().collect(),
        stat_alerts: st.alerts.to_vec(),
        stat_feedback: st.feedback.iter().flatten().copied().collect(),
        stat_misc: vec![
            st.health_published,
            st.timers_fired,
            l.users_evicted,
            l.features_evicted,
            l.tickets_evicted,
            l.invoices_evicted,
            l.labels_ignored,
            l.too_old_for_window,
            st.dedup_forgotten_early,
            st.at_risk_suppressed_by_cooldown,
            st.rescore_skipped,
        ],
        portfolio_month: p.portfolio.month,
        portfolio_months: p
            .portfolio_months()
            .rows
            .into_iter()
            .map(|(segment, month, f)| pb::PortfolioMonth {
                segment: segment.into(),
                month,
                start_accounts: f.start_accounts,
                start_mrr_cents: f.start_mrr_cents,
                new_accounts: f.new_accounts,
                new_mrr_cents: f.new_mrr_cents,
                churned_accounts: f.churned_accounts,
                churned_mrr_cents: f.churned_mrr_cents,
                expansion_mrr_cents: f.expansion_mrr_cents,
                contraction_mrr_cents: f.contraction_mrr_cents,
            })
            .collect(),
        touchpoint_kinds: iv.kinds.iter().map(|k| k.to_string()).collect(),
        pending_30d: iv.pending[0].iter().map(obs_to).collect(),
        pending_90d: iv.pending[1].iter().map(obs_to).collect(),
        intervention_kinds: iv
            .outcomes
            .kinds
            .iter()
            .map(|(k, o)| pb::InterventionKind {
                kind: k.to_string(),
                values: kind_values(o),
            })
            .collect(),
        observations_dropped: iv.outcomes.dropped,
        kinds_ignored: iv.outcomes.kinds_ignored,
        monitor_next: p.monitor.next_at,
        monitor_cohorts: p
            .monitor
            .cohorts
            .iter()
            .map(|c| pb::MonitorCohort {
                at: c.at,
                accounts: c.accounts.to_vec(),
                scores: c.scores.to_vec(),
                bands: c.bands.to_vec(),
            })
            .collect(),
        monitor_churned: p.monitor.tally.churned.to_vec(),
        monitor_retained: p.monitor.tally.retained.to_vec(),
        monitor_at_risk: p.monitor.tally.at_risk.to_vec(),
        scorecard_changes: p.scorecard_changes.iter().map(change_to).collect(),
    }
    .encode_to_vec()
}

fn change_to(c: &ScorecardChange) -> pb::ScorecardChange {
    pb::ScorecardChange {
        at: c.at,
        from: c.from.to_string(),
        to: c.to.to_string(),
    }
}

fn changes_from(v: Vec<pb::ScorecardChange>) -> Result<Vec<ScorecardChange>, StateError> {
    if v.len() > SCORECARD_CHANGES_KEPT {
        return Err(StateError::Malformed("scorecard_changes"));
    }
    Ok(v.into_iter()
        .map(|c| ScorecardChange {
            at: c.at,
            from: c.from.into(),
            to: c.to.into(),
        })
        .collect())
}

/// The scorecard changes recorded in a state, whatever model folded it
/// (the rest of the state is skipped, not decoded): a partition rebuilt
/// with a new config keeps the marks of earlier changes.
pub fn scorecard_changes(bytes: &[u8]) -> Result<Vec<ScorecardChange>, StateError> {
    changes_from(pb::ScorecardChangesOnly::decode(bytes)?.scorecard_changes)
}

fn obs_to(o: &Observation) -> pb::Observation {
    pb::Observation {
        account: o.account,
        kind: o.kind.into(),
        treated: o.treated,
        weight: o.weight.into(),
        start: o.start,
        start_score: o.start_score.into(),
    }
}

fn obs_from(o: pb::Observation, accounts: usize, kinds: usize) -> Result<Observation, StateError> {
    if o.account as usize >= accounts || o.kind as usize >= kinds {
        return Err(StateError::Malformed("observation"));
    }
    Ok(Observation {
        account: o.account,
        kind: u16f(o.kind, "observation.kind")?,
        treated: o.treated,
        weight: u8f(o.weight, "observation.weight")?,
        start: ts(o.start, "observation.start")?,
        start_score: u8f(o.start_score, "observation.start_score")?,
    })
}

/// Values of a kind's results per horizon, in `pb::InterventionKind` order.
const HORIZON_VALUES: usize = 10;
const KIND_VALUES: usize = 5 + 2 * HORIZON_VALUES;

fn kind_values(o: &KindOutcome) -> Vec<i64> {
    let mut v = vec![
        o.touchpoints as i64,
        o.skipped as i64,
        o.unmatched as i64,
        o.matched as i64,
        o.controls as i64,
    ];
    for h in &o.horizons {
        for a in [&h.treated, &h.control] {
            v.extend([
                a.n as i64,
                a.weight as i64,
                a.score_change,
                a.churned as i64,
            ]);
        }
        v.extend([h.controls_excluded as i64, h.unresolved as i64]);
    }
    v
}

fn kind_from(v: &[i64]) -> Result<KindOutcome, StateError> {
    if v.len() != KIND_VALUES
        || v.iter()
            .enumerate()
            .any(|(i, &x)| (x < 0 && !is_score(i)) || x.unsigned_abs() > COUNT_LIMIT)
    {
        return Err(StateError::Malformed("intervention_kinds.values"));
    }
    // Score-change sums are the only signed values.
    fn is_score(i: usize) -> bool {
        i >= 5 && matches!((i - 5) % HORIZON_VALUES, 2 | 6)
    }
    let u = |i: usize| v[i] as u64;
    let arm = |i: usize| Arm {
        n: u(i),
        weight: u(i + 1),
        score_change: v[i + 2],
        churned: u(i + 3),
    };
    let horizon = |b: usize| HorizonOutcome {
        treated: arm(b),
        control: arm(b + 4),
        controls_excluded: u(b + 8),
        unresolved: u(b + 9),
    };
    Ok(KindOutcome {
        touchpoints: u(0),
        skipped: u(1),
        unmatched: u(2),
        matched: u(3),
        controls: u(4),
        horizons: [horizon(5), horizon(5 + HORIZON_VALUES)],
    })
}

/// Decodes a partition's state, to be folded on with `model`.
pub fn decode(bytes: &[u8], model: Arc<Model>) -> Result<Partition, StateError> {
    let s = pb::PartitionState::decode(bytes)?;
    if s.format != FORMAT {
        return Err(StateError::Format { found: s.format });
    }
    same_len(&[s.dedup_key.len(), s.dedup_time.len()], "dedup")?;
    ts_or_never(s.max_time, "max_time")?;
    s.dedup_time
        .iter()
        .try_for_each(|&t| ts(t, "dedup_time").map(drop))?;
    day_or_none(s.portfolio_month, "portfolio_month")?;
    for (v, f) in [
        (&s.stat_events, "stat_events"),
        (&s.stat_alerts, "stat_alerts"),
        (&s.stat_feedback, "stat_feedback"),
        (&s.stat_misc, "stat_misc"),
    ] {
        counts(v, f)?;
    }
    counts(
        &[s.observations_dropped, s.kinds_ignored],
        "intervention counters",
    )?;
    let mut stats = Stats::default();
    let ev: &mut [u64] = stats.events.as_flattened_mut();
    if s.stat_events.len() != ev.len() {
        return Err(StateError::Malformed("stat_events"));
    }
    ev.copy_from_slice(&s.stat_events);
    if s.stat_alerts.len() != 3 {
        return Err(StateError::Malformed("stat_alerts"));
    }
    stats.alerts.copy_from_slice(&s.stat_alerts);
    let fb: &mut [u64] = stats.feedback.as_flattened_mut();
    if s.stat_feedback.len() != fb.len() {
        return Err(StateError::Malformed("stat_feedback"));
    }
    fb.copy_from_slice(&s.stat_feedback);
    let m = &s.stat_misc;
    if m.len() != 11 {
        return Err(StateError::Malformed("stat_misc"));
    }
    stats.health_published = m[0];
    stats.timers_fired = m[1];
    stats.limits = LimitHits {
        users_evicted: m[2],
        features_evicted: m[3],
        tickets_evicted: m[4],
        invoices_evicted: m[5],
        labels_ignored: m[6],
        too_old_for_window: m[7],
    };
    stats.dedup_forgotten_early = m[8];
    stats.at_risk_suppressed_by_cooldown = m[9];
    stats.rescore_skipped = m[10];
    let dedup = Dedup::from_order(s.dedup_key.into_iter().zip(s.dedup_time).collect());
    let accounts = s
        .accounts
        .into_iter()
        .map(|a| account_from(a, model.cards.len()))
        .collect::<Result<Vec<_>, _>>()?;
    for r in &s.portfolio_months {
        day(r.month, "portfolio_months.month")?;
        counts(
            &[
                r.start_accounts,
                r.start_mrr_cents,
                r.new_accounts,
                r.new_mrr_cents,
                r.churned_accounts,
                r.churned_mrr_cents,
                r.expansion_mrr_cents,
                r.contraction_mrr_cents,
            ],
            "portfolio_months",
        )?;
    }
    let months = PortfolioMonths {
        month: s.portfolio_month,
        rows: s
            .portfolio_months
            .into_iter()
            .map(|r| {
                (
                    r.segment.into(),
                    r.month,
                    MonthFlows {
                        start_accounts: r.start_accounts,
                        start_mrr_cents: r.start_mrr_cents,
                        new_accounts: r.new_accounts,
                        new_mrr_cents: r.new_mrr_cents,
                        churned_accounts: r.churned_accounts,
                        churned_mrr_cents: r.churned_mrr_cents,
                        expansion_mrr_cents: r.expansion_mrr_cents,
                        contraction_mrr_cents: r.contraction_mrr_cents,
                    },
                )
            })
            .collect(),
    };
    let kinds: Vec<Box<str>> = s.touchpoint_kinds.into_iter().map(Into::into).collect();
    let n = accounts.len();
    let pending = [
        s.pending_30d
            .into_iter()
            .map(|o| obs_from(o, n, kinds.len()))
            .collect::<Result<_, _>>()?,
        s.pending_90d
            .into_iter()
            .map(|o| obs_from(o, n, kinds.len()))
            .collect::<Result<_, _>>()?,
    ];
    let mut outcomes = InterventionOutcomes {
        dropped: s.observations_dropped,
        kinds_ignored: s.kinds_ignored,
        ..Default::default()
    };
    for k in s.intervention_kinds {
        outcomes.kinds.insert(k.kind.into(), kind_from(&k.values)?);
    }
    let mut monitor = Monitor::new();
    monitor.next_at = s.monitor_next;
    let (t, mc) = (&mut monitor.tally, "monitor tally");
    if s.monitor_churned.len() != t.churned.len()
        || s.monitor_retained.len() != t.retained.len()
        || s.monitor_at_risk.len() != t.at_risk.len()
    {
        return Err(StateError::Malformed(mc));
    }
    t.churned.copy_from_slice(&s.monitor_churned);
    t.retained.copy_from_slice(&s.monitor_retained);
    t.at_risk.copy_from_slice(&s.monitor_at_risk);
    for c in s.monitor_cohorts {
        let ok = c.scores.len() == c.accounts.len()
            && c.bands.len() == c.accounts.len()
            && c.accounts.windows(2).all(|w| w[0] < w[1])
            && c.accounts.last().is_none_or(|&a| (a as usize) < n)
            && c.scores.iter().all(|&x| x <= 100 || x == u8::MAX)
            && c.bands.iter().all(|&b| b <= 2);
        if !ok {
            return Err(StateError::Malformed("monitor cohort"));
        }
        monitor.cohorts.push_back(Cohort {
            at: c.at,
            accounts: c.accounts.into(),
            scores: Arc::new(c.scores),
            bands: c.bands.into(),
        });
    }
    let scorecard_changes = changes_from(s.scorecard_changes)?;
    let mut part = Partition::from_parts(
        model,
        accounts,
        Labels::from_names(s.labels.into_iter().map(Into::into).collect()),
        dedup,
        s.max_time,
        stats,
        months,
        Interventions::from_parts(kinds, pending, outcomes),
        monitor,
    );
    part.scorecard_changes = scorecard_changes;
    Ok(part)
}
