//! Partition state ⇄ Protobuf (`vitals.v1.PartitionState`). Encoding then
//! decoding gives an equal state (a property test checks it).

use std::io::Write;
use std::ops::Range;
use std::sync::{mpsc, Arc};

use prost::Message;

use thin_vec::ThinVec;

use crate::core::account::{
    Account, AlertState, Decayed, Extras, LimitHits, Override, OverrideAudit, OverrideEnd,
    Published, Support, SupportWeeks, Surveys, Ticket, Unpaid, WeekRing, NEVER, NO_DAY, SCORE_DAYS,
    WEEKS,
};
use crate::core::accounts::Accounts;
use crate::core::event::{Band, Priority};
use crate::core::interventions::{
    Arm, HorizonOutcome, InterventionOutcomes, Interventions, KindOutcome, Observation,
};
use crate::core::monitor::{Cohort, Monitor};
use crate::core::partition::{
    account_hash, Dedup, Labels, Model, Partition, PortfolioMonths, ScorecardChange, Stats,
    SCORECARD_CHANGES_KEPT,
};
use crate::core::portfolio::{MonthFlows, SegmentSums};
use crate::core::Ts;

use super::pb;

mod wire;

/// Current state format version. 2 added the portfolio's monthly flows
/// and the intervention observations: a format-1 snapshot lacks that
/// history, so it is refused (and the partition restored from an older
/// snapshot or replayed) rather than restored with silently empty analytics.
/// 3 added the live model monitor's cohorts and tally, refused likewise.
/// 4 leaves an account's times that have not happened out (they were
/// written as `i64::MIN`, ten bytes each: 12% of a simulated account's
/// bytes); a format-3 state would read its absent times, which meant 0,
/// as never, so it is refused like the others.
/// 5 writes the same state in fewer bytes (17% fewer for a simulated
/// account): users' and features' days as differences from their newest,
/// week columns that are all 0 and the survey part of an account without
/// one left out, the published score in tenths, the dedup times as
/// differences. Nothing is added or lost, so format 4 is still read: a
/// service upgraded from it restores from its snapshots, no replay.
pub const FORMAT: u32 = 5;
/// The oldest state format this build reads.
pub const OLDEST_FORMAT: u32 = 4;

/// Why a state record could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state is not valid protobuf: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("state format {found} is not supported (this build reads formats {OLDEST_FORMAT} to {FORMAT})")]
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

fn audit(x: &OverrideAudit) -> pb::OverrideAudit {
    pb::OverrideAudit {
        entry: Some(ov(&x.entry)),
        end: match x.end {
            OverrideEnd::Active => "active",
            OverrideEnd::Expired => "expired",
            OverrideEnd::Replaced => "replaced",
        }
        .into(),
        ended_at: x.ended_at,
    }
}

fn unov(o: &pb::OverrideState) -> Result<Override, StateError> {
    Ok(Override {
        band: match &o.band {
            None => None,
            Some(b) => Some(Band::parse(b).ok_or(StateError::Malformed("override.band"))?),
        },
        score: o.score.map(|s| s.min(100) as u8),
        reason: o.reason.as_str().into(),
        by: o.by.as_deref().map(Into::into),
        set_at: ts(o.set_at, "override.set_at")?,
        expires_at: ts(o.expires_at, "override.expires_at")?,
        event_id: o.event_id.as_str().into(),
    })
}

/// Replaces `v`'s contents with `it`, keeping its allocation.
#[cfg(test)]
fn fill<T>(v: &mut Vec<T>, it: impl IntoIterator<Item = T>) {
    v.clear();
    v.extend(it);
}

/// [`fill`] with a week column, left empty when all its cells are 0.
#[cfg(test)]
fn fill_week<T: Copy + Default + PartialEq + Into<u32>>(v: &mut Vec<u32>, cells: [T; WEEKS]) {
    v.clear();
    if cells.iter().any(|c| *c != T::default()) {
        v.extend(cells.map(Into::into));
    }
}

/// Writes `days` as their newest (returned) and each one's distance back
/// from it into `back`: a day number takes three bytes as a varint, a
/// distance of under 128 days one.
#[cfg(test)]
fn days_back(days: impl Iterator<Item = i32> + Clone, back: &mut Vec<u32>) -> i32 {
    let base = days.clone().max().unwrap_or(0);
    fill(back, days.map(|d| base.abs_diff(d)));
    base
}

/// Writes `a` into `s`: the message prost encodes, the reference the
/// tests hold [`wire::account`] (what snapshots write) to, byte for byte.
#[cfg(test)]
fn account_into(a: &Account, s: &mut pb::AccountState) {
    let w = &a.weeks;
    let ex = a.extras.as_deref();
    let sup = a.support.as_deref();
    let sv = a.surveys();
    let p = a.alert.published;
    let tickets = a.open_tickets();
    s.id.clear();
    s.id.push_str(&a.id);
    s.segment = a.segment.into();
    s.tier = a.tier.into();
    s.owner = a.owner.into();
    s.plan = a.plan.into();
    s.scorecard = a.scorecard.into();
    s.first_seen = a.first_seen;
    s.subscribed_at = happened(a.subscribed_at);
    s.cancelled_at = happened(a.cancelled_at);
    s.last_eval = happened(a.last_eval);
    s.last_activity = happened(a.last_activity);
    s.users.clear();
    fill(&mut s.user_hash, a.users.iter().map(|u| (u >> 32) as u32));
    s.user_day_base = days_back(
        a.users.iter().map(|&u| u as u32 as i32),
        &mut s.user_day_back,
    );
    fill(&mut s.feature_hash, a.features.iter().map(|f| f.0));
    s.feature_day.clear();
    s.feature_day_base = days_back(a.features.iter().map(|f| f.1), &mut s.feature_day_back);
    fill(&mut s.feature_count, a.features.iter().map(|f| f.2));
    s.weeks_head = w.head;
    fill_week(&mut s.week_activity, w.activity);
    fill_week(&mut s.week_wau, w.wau);
    let sw = sup.map_or(SupportWeeks::default(), |s| s.weeks);
    fill_week(&mut s.week_tickets, sw.tickets);
    fill_week(&mut s.week_escalations, sw.escalations);
    fill_week(&mut s.week_reopens, sw.reopens);
    s.seats_licensed = a.seats_licensed;
    s.tickets_total = a.tickets_total;
    fill(&mut s.ticket_hash, tickets.iter().map(|t| t.hash));
    fill(
        &mut s.ticket_opened_min,
        tickets.iter().map(|t| t.opened_min),
    );
    fill(
        &mut s.ticket_priority,
        tickets.iter().map(|t| t.priority as u32),
    );
    fill(&mut s.ticket_escalated, tickets.iter().map(|t| t.escalated));
    s.resolve_hours = sup.map_or(0.0, |s| s.resolve_hours);
    s.resolved = sup.map_or(0, |s| s.resolved);
    s.ticket_csat = sup.map(|s| dec(&s.ticket_csat));
    s.mrr_cents = a.mrr_cents();
    fill(&mut s.mrr_day, a.mrr_history.iter().map(|m| m.0));
    fill(&mut s.mrr_value, a.mrr_history.iter().map(|m| m.1));
    fill(&mut s.unpaid_hash, a.unpaid.iter().map(|u| u.hash));
    fill(
        &mut s.unpaid_failures,
        a.unpaid.iter().map(|u| u.failures.into()),
    );
    fill(
        &mut s.unpaid_days_overdue,
        a.unpaid.iter().map(|u| u.days_overdue.into()),
    );
    fill(
        &mut s.unpaid_overdue_day,
        a.unpaid.iter().map(|u| u.overdue_day),
    );
    fill(
        &mut s.unpaid_amount,
        a.unpaid.iter().map(|u| u.amount_cents),
    );
    s.payments_failed_total = a.payments_failed_total;
    s.renews_at = happened(a.renews_at);
    let has_surveys = a.surveys.is_some();
    s.nps = has_surveys.then(|| dec(&sv.nps));
    s.last_nps_score = sv.last_nps.map(|n| n.0.into());
    s.last_nps_day = sv.last_nps.map_or(0, |n| n.1);
    s.csat = has_surveys.then(|| dec(&sv.csat));
    s.ces = has_surveys.then(|| dec(&sv.ces));
    s.onboarding = a.onboarding.into();
    s.touchpoints = a.touchpoints;
    s.last_touchpoint = happened(a.last_touchpoint);
    // Overrides are rare: these allocate, as before.
    s.active_override = ex.and_then(|e| e.active_override.as_ref()).map(ov);
    fill(
        &mut s.override_audit,
        ex.into_iter().flat_map(|e| &e.audit).map(audit),
    );
    s.band = a.alert.band.to_u8().into();
    s.at_risk_open = a.alert.at_risk_open;
    s.last_at_risk_alert = happened(a.alert.last_at_risk_alert);
    s.upsell_active = a.alert.upsell_active;
    s.last_upsell_alert = happened(a.alert.last_upsell_alert);
    s.has_published = p.is_some();
    s.published_tenths = p.map(|p| p.score_tenths.into());
    s.published_score = 0.0;
    s.published_band = p.map_or(0, |p| p.band.to_u8().into());
    s.published_override_set_at = p.and_then(|p| happened(p.override_set_at));
    s.published_cancelled = p.is_some_and(|p| p.cancelled);
    s.published_scorecard = p.map_or(0, |p| p.scorecard.into());
    fill(&mut s.score_days, a.alert.score_days);
    s.score_head = a.alert.score_head;
    s.timer_due = happened(a.timer_due);
    s.has_extras = ex.is_some();
    s.has_support = sup.is_some();
    s.has_surveys = has_surveys;
    s.at_risk_pending = a.alert.at_risk_pending;
    s.upsell_pending = a.alert.upsell_pending;
    s.last_csat_score = sv.last_csat.map(|n| n.0.into());
    s.last_csat_day = sv.last_csat.map_or(0, |n| n.1);
    s.last_ces_score = sv.last_ces.map(|n| n.0.into());
    s.last_ces_day = sv.last_ces.map_or(0, |n| n.1);
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

/// A time as an optional field: absent when it has not happened.
fn happened(t: i64) -> Option<i64> {
    (t != NEVER).then_some(t)
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

/// A published score: a score rounded to one decimal, in tenths.
fn tenths(v: f64) -> Result<u16, StateError> {
    let t = Published::tenths(v);
    if (0.0..=100.0).contains(&v) && t as f64 / 10.0 == v {
        Ok(t)
    } else {
        Err(StateError::Malformed("published_score"))
    }
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

/// Days as format 5 writes them (`base - back`, see `wire::days_back`), or as
/// format 4 did (`whole`); `n` of them, checked, then read without an
/// allocation. A state holds one form or the other.
fn days_of<'s>(
    whole: &'s [i32],
    base: i32,
    back: &'s [u32],
    n: usize,
    f: &'static str,
) -> Result<impl Iterator<Item = i32> + 's, StateError> {
    let from_back = move |b: u32| i32::try_from(i64::from(base) - i64::from(b)).ok();
    if whole.is_empty() && back.len() == n {
        back.iter().try_for_each(|&b| {
            let d = from_back(b).ok_or(StateError::Malformed(f))?;
            day(d, f).map(drop)
        })?;
    } else if back.is_empty() && whole.len() == n {
        all_days(whole, f)?;
    } else {
        return Err(StateError::Malformed(f));
    }
    Ok((0..n).map(move |k| match whole.get(k) {
        Some(&d) => d,
        None => from_back(back[k]).unwrap_or_default(),
    }))
}

/// A week column: nine cells, or none when all are 0 (format 5).
fn week<T: Default + Copy + TryFrom<u32>>(
    v: &[u32],
    f: &'static str,
) -> Result<[T; WEEKS], StateError> {
    let mut cells = [T::default(); WEEKS];
    match v.len() {
        0 => {}
        WEEKS => {
            for (c, &x) in cells.iter_mut().zip(v) {
                *c = T::try_from(x).map_err(|_| StateError::Malformed(f))?;
            }
        }
        _ => return Err(StateError::Malformed(f)),
    }
    Ok(cells)
}

/// `cards`: the model's scorecards (an account's index must name one).
fn account_from(s: &pb::AccountState, cards: usize) -> Result<Account, StateError> {
    if s.scorecard as usize >= cards {
        return Err(StateError::Malformed("scorecard"));
    }
    same_len(&[s.feature_hash.len(), s.feature_count.len()], "features")?;
    let feature_days = days_of(
        &s.feature_day,
        s.feature_day_base,
        &s.feature_day_back,
        s.feature_hash.len(),
        "feature_day",
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
    let users: ThinVec<u64> = if s.users.is_empty() {
        let days = days_of(
            &[],
            s.user_day_base,
            &s.user_day_back,
            s.user_hash.len(),
            "user_day",
        )?;
        s.user_hash
            .iter()
            .zip(days)
            .map(|(&h, d)| (u64::from(h) << 32) | u64::from(d as u32))
            .collect()
    } else if s.user_hash.is_empty() && s.user_day_back.is_empty() {
        s.users
            .iter()
            .try_for_each(|&u| day(u as u32 as i32, "users").map(drop))?;
        s.users.iter().copied().collect()
    } else {
        return Err(StateError::Malformed("users"));
    };
    // Users and features are looked up by binary search on their hash.
    if !users.windows(2).all(|w| w[0] >> 32 < w[1] >> 32) {
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
    let weeks = WeekRing {
        head: day_or_none(s.weeks_head, "weeks_head")?,
        activity: week(&s.week_activity, "week_activity")?,
        wau: week(&s.week_wau, "week_wau")?,
    };
    let support_weeks = SupportWeeks {
        tickets: week(&s.week_tickets, "week_tickets")?,
        escalations: week(&s.week_escalations, "week_escalations")?,
        reopens: week(&s.week_reopens, "week_reopens")?,
    };
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
        for x in &s.override_audit {
            audit.push(OverrideAudit {
                entry: unov(
                    x.entry
                        .as_ref()
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
            active_override: s.active_override.as_ref().map(unov).transpose()?,
            audit,
        }))
    } else {
        None
    };
    // The current MRR is not kept apart from its history (the newest
    // change); the state still carries it, and it must agree.
    if s.mrr_cents != s.mrr_value.last().copied().unwrap_or(0) {
        return Err(StateError::Malformed("mrr_cents"));
    }
    Ok(Account {
        id: s.id.as_str().into(),
        segment: u16f(s.segment, "segment")?,
        tier: u16f(s.tier, "tier")?,
        owner: u16f(s.owner, "owner")?,
        plan: u16f(s.plan, "plan")?,
        scorecard: u16f(s.scorecard, "scorecard")?,
        first_seen: ts(s.first_seen, "first_seen")?,
        subscribed_at: ts_or_never(s.subscribed_at.unwrap_or(NEVER), "subscribed_at")?,
        cancelled_at: ts_or_never(s.cancelled_at.unwrap_or(NEVER), "cancelled_at")?,
        last_eval: ts_or_never(s.last_eval.unwrap_or(NEVER), "last_eval")?,
        last_activity: ts_or_never(s.last_activity.unwrap_or(NEVER), "last_activity")?,
        users,
        features: s
            .feature_hash
            .iter()
            .zip(feature_days)
            .zip(&s.feature_count)
            .map(|((&h, d), &c)| (h, d, c))
            .collect(),
        weeks,
        seats_licensed: s.seats_licensed,
        tickets_total: s.tickets_total,
        // Support counts live in the support part (a state written before
        // they did may count escalations of an account without one).
        support: if s.has_support || support_weeks != SupportWeeks::default() {
            Some(Box::new(Support {
                weeks: support_weeks,
                open_tickets,
                resolve_hours: finite(s.resolve_hours, "resolve_hours")?,
                resolved: s.resolved,
                ticket_csat: undec(s.ticket_csat, "ticket_csat")?,
            }))
        } else {
            None
        },
        mrr_history: s
            .mrr_day
            .iter()
            .copied()
            .zip(s.mrr_value.iter().copied())
            .collect(),
        unpaid,
        payments_failed_total: s.payments_failed_total,
        renews_at: ts_or_never(s.renews_at.unwrap_or(NEVER), "renews_at")?,
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
        last_touchpoint: ts_or_never(s.last_touchpoint.unwrap_or(NEVER), "last_touchpoint")?,
        extras,
        alert: AlertState {
            band: Band::from_u8(u8f(s.band, "band")?),
            at_risk_open: s.at_risk_open,
            at_risk_pending: s.at_risk_pending,
            last_at_risk_alert: ts_or_never(
                s.last_at_risk_alert.unwrap_or(NEVER),
                "last_at_risk_alert",
            )?,
            upsell_active: s.upsell_active,
            upsell_pending: s.upsell_pending,
            last_upsell_alert: ts_or_never(
                s.last_upsell_alert.unwrap_or(NEVER),
                "last_upsell_alert",
            )?,
            published: if s.has_published {
                Some(Published {
                    score_tenths: match s.published_tenths {
                        Some(t) if t <= 1000 => t as u16,
                        Some(_) => return Err(StateError::Malformed("published_tenths")),
                        None => tenths(s.published_score)?,
                    },
                    band: Band::from_u8(u8f(s.published_band, "published_band")?),
                    override_set_at: ts_or_never(
                        s.published_override_set_at.unwrap_or(NEVER),
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
        timer_due: ts_or_never(s.timer_due.unwrap_or(NEVER), "timer_due")?,
    })
}

/// Encodes a partition's whole state.
pub fn encode(p: &Partition) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing to a `Vec` cannot fail.
    let _ = StateWriter::new(p).write_to(&mut out);
    out
}

/// The state format a state's first frame (its header, or a whole
/// unframed state) names; `None` if it is not a state.
pub fn format_of(header: &[u8]) -> Option<u32> {
    pb::PartitionState::decode(header).ok().map(|s| s.format)
}

/// Field number of `PartitionState.accounts`.
const ACCOUNTS_FIELD: u32 = 7;

/// Partitions with at least this many accounts are encoded and decoded on
/// several threads (below it a thread costs more than it saves).
const PARALLEL_ACCOUNTS: usize = 50_000;

/// How many threads a state of `accounts` accounts is encoded or decoded
/// on: all cores for a large state, one otherwise.
fn threads_for(accounts: usize) -> usize {
    if accounts < PARALLEL_ACCOUNTS {
        1
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
    }
}

/// Accounts per block of a streamed state (about 2 MB of encoded accounts).
const BLOCK: usize = 4096;
// Whole blocks fill whole chunks of accounts, so a restore joins the
// blocks decoded on several threads by moving chunks (`Accounts::append`).
const _: () = assert!(BLOCK % crate::core::accounts::CHUNK == 0);

/// A partition's state, ready to be streamed to a file in pieces: first
/// every field but the accounts, then the accounts in blocks of [`BLOCK`].
/// Each piece is itself an encoded `PartitionState` (Protobuf merges
/// concatenated messages, repeated fields appended), so the pieces one
/// after the other are the state ([`StateWriter::write_to`]), and a framed
/// stream of them ([`StateWriter::write_framed_to`]) can be decoded a
/// block at a time, on several threads ([`decode_framed`]). The bytes are
/// the same for the same state, whatever the thread count.
///
/// Accounts are written straight from the accounts (`wire::account`)
/// instead of a million `AccountState` values built first; a large
/// partition's blocks are encoded on all cores and written in order
/// through reused buffers, so the state is never held whole in memory.
/// Fresh memory is expensive to touch the first time (about 3 ms per MB
/// on this project's VMs, BENCHMARKS.md "Snapshots"), and a 1M-account
/// state is 350 MB.
pub struct StateWriter<'a> {
    p: &'a Partition,
    threads: usize,
    /// Accounts per block ([`BLOCK`]; smaller in tests).
    block: usize,
}

impl<'a> StateWriter<'a> {
    pub fn new(p: &'a Partition) -> Self {
        Self::on(p, threads_for(p.accounts.len()), BLOCK)
    }

    fn on(p: &'a Partition, threads: usize, block: usize) -> Self {
        StateWriter {
            p,
            threads: threads.max(1),
            block: block.max(1),
        }
    }

    /// Streams the state, its pieces back to back: one `PartitionState`.
    pub fn write_to(&self, w: &mut impl Write) -> std::io::Result<()> {
        self.pieces(|piece| w.write_all(piece))
    }

    /// Streams the state as frames: each piece as `length u32 (little
    /// endian) | piece`, the header first, then a frame of length 0.
    pub fn write_framed_to(&self, w: &mut impl Write) -> std::io::Result<()> {
        self.pieces(|piece| {
            let n = u32::try_from(piece.len())
                .map_err(|_| std::io::Error::other("a state block exceeds 4 GiB"))?;
            w.write_all(&n.to_le_bytes())?;
            w.write_all(piece)
        })?;
        w.write_all(&0u32.to_le_bytes())
    }

    /// Hands the state's pieces to `sink` in order: the header, then the
    /// blocks of accounts (none when there are no accounts).
    fn pieces(&self, mut sink: impl FnMut(&[u8]) -> std::io::Result<()>) -> std::io::Result<()> {
        let p = self.p;
        sink(&header(p).encode_to_vec())?;
        let n = p.accounts.len();
        let size = self.block;
        let blocks = n.div_ceil(size);
        let block = |b: usize| b * size..((b + 1) * size).min(n);
        let threads = self.threads.min(blocks);
        if threads <= 1 {
            let mut buf = Vec::new();
            for b in 0..blocks {
                buf.clear();
                encode_accounts(p, block(b), &mut buf);
                sink(&buf)?;
            }
            return Ok(());
        }
        // Thread t encodes blocks t, t + threads, …; the writer takes them
        // in order and hands each buffer back to be reused. At most four
        // buffers per thread exist at once.
        std::thread::scope(|sc| {
            let mut encoded = Vec::with_capacity(threads);
            let mut spare = Vec::with_capacity(threads);
            for t in 0..threads {
                let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(2);
                let (back, reuse) = mpsc::channel::<Vec<u8>>();
                sc.spawn(move || {
                    for b in (t..blocks).step_by(threads) {
                        let mut buf = reuse.try_recv().unwrap_or_default();
                        buf.clear();
                        encode_accounts(p, block(b), &mut buf);
                        if tx.send(buf).is_err() {
                            return; // the writer stopped (a write failed)
                        }
                    }
                });
                encoded.push(rx);
                spare.push(back);
            }
            for b in 0..blocks {
                let t = b % threads;
                // A closed channel means the encoder panicked; the scope
                // re-raises that panic when it ends.
                let buf = encoded[t]
                    .recv()
                    .map_err(|_| std::io::Error::other("a state encoder thread failed"))?;
                sink(&buf)?;
                let _ = spare[t].send(buf);
            }
            Ok(())
        })
    }
}

/// Appends the accounts of `range` as `accounts` fields.
fn encode_accounts(p: &Partition, range: Range<usize>, out: &mut Vec<u8>) {
    // How many accounts ahead their parts are asked for: a cache miss
    // outlasts encoding an account or two.
    const AHEAD: usize = 8;
    for i in range {
        p.accounts.prefetch_parts(i + AHEAD);
        p.accounts.prefetch_tickets(i + AHEAD / 2);
        wire::account_field(out, ACCOUNTS_FIELD, &p.accounts[i]);
    }
}

/// Everything of a partition's state but its accounts.
fn header(p: &Partition) -> pb::PartitionState {
    let st = &p.stats;
    let iv = &p.interventions;
    let l = st.limits;
    pb::PartitionState {
        format: FORMAT,
        model: p.model.id.to_string(),
        max_time: p.max_time,
        labels: p.labels.names.iter().map(|n| n.to_string()).collect(),
        dedup_key: p.dedup.order.iter().map(|d| d.0).collect(),
        dedup_time: Vec::new(),
        dedup_time_delta: p
            .dedup
            .order
            .iter()
            .scan(0i64, |prev, d| {
                // Times are within ±2^45 ms (SPEC §1): no overflow.
                let delta = d.1.wrapping_sub(*prev);
                *prev = d.1;
                Some(delta)
            })
            .collect(),
        accounts: Vec::new(),
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

/// Splits an encoded `PartitionState` into its accounts' messages (in
/// order) and every other field (re-assembled, still a `PartitionState`),
/// so that the accounts can be decoded one scratch message at a time, on
/// several threads.
fn split_accounts(bytes: &[u8]) -> Result<(Vec<u8>, Vec<&[u8]>), StateError> {
    use prost::encoding::{decode_key, skip_field, DecodeContext, WireType};
    let mut header = Vec::new();
    let mut accounts = Vec::new();
    let mut buf = bytes;
    while !buf.is_empty() {
        let start = bytes.len() - buf.len();
        let (tag, wire) = decode_key(&mut buf)?;
        if tag == ACCOUNTS_FIELD && wire == WireType::LengthDelimited {
            accounts.push(wire::delimited(&mut buf, "accounts")?);
        } else {
            skip_field(wire, tag, &mut buf, DecodeContext::default())?;
            header.extend_from_slice(&bytes[start..bytes.len() - buf.len()]);
        }
    }
    Ok((header, accounts))
}

/// Accounts decoded in order, with the hashes of their ids (the
/// partition's index is built from them without touching each account
/// again).
#[derive(Default)]
struct Decoded {
    accounts: Accounts,
    hashes: Vec<u64>,
    /// `(timer_due, index)` of the accounts with a timer.
    timers: Vec<(Ts, u32)>,
    sums: SegmentSums,
}

impl Decoded {
    /// Decodes one account's message (into the reused scratch `s`).
    fn push(
        &mut self,
        message: &[u8],
        s: &mut pb::AccountState,
        cards: usize,
    ) -> Result<(), StateError> {
        s.clear();
        wire::read_account(message, s)?;
        let a = account_from(s, cards)?;
        self.hashes.push(account_hash(&a.id));
        if a.timer_due != NEVER {
            self.timers.push((a.timer_due, self.accounts.len() as u32));
        }
        self.sums.add(&a);
        self.accounts.push(a);
        Ok(())
    }

    /// Appends the accounts decoded after these.
    fn append(&mut self, mut o: Decoded) {
        let base = self.accounts.len() as u32;
        self.timers
            .extend(o.timers.iter().map(|&(t, i)| (t, i.wrapping_add(base))));
        self.accounts.append(o.accounts);
        self.hashes.append(&mut o.hashes);
        self.sums.merge(o.sums);
    }
}

/// Decodes one block of a framed state: `accounts` fields and nothing else.
fn decode_block(
    mut buf: &[u8],
    s: &mut pb::AccountState,
    cards: usize,
    out: &mut Decoded,
) -> Result<(), StateError> {
    use prost::encoding::{decode_key, WireType};
    while !buf.is_empty() {
        let (tag, wire) = decode_key(&mut buf)?;
        if tag != ACCOUNTS_FIELD || wire != WireType::LengthDelimited {
            return Err(StateError::Malformed("accounts block"));
        }
        out.push(wire::delimited(&mut buf, "accounts")?, s, cards)?;
    }
    Ok(())
}

/// Decodes a partition's state, to be folded on with `model`.
pub fn decode(bytes: &[u8], model: Arc<Model>) -> Result<Partition, StateError> {
    decode_on(bytes, model, None)
}

/// [`decode`] on `threads` threads (default: as many as the state's size
/// calls for).
fn decode_on(
    bytes: &[u8],
    model: Arc<Model>,
    threads: Option<usize>,
) -> Result<Partition, StateError> {
    let (header, accounts) = split_accounts(bytes)?;
    let threads = threads.unwrap_or_else(|| threads_for(accounts.len()));
    // Decoded as the frames a snapshot holds: the header, then blocks of
    // [`BLOCK`] `accounts` fields.
    let block = |messages: &[&[u8]]| {
        let mut b = Vec::new();
        for m in messages {
            wire::bytes_field(&mut b, ACCOUNTS_FIELD, m);
        }
        b
    };
    let mut frames = std::iter::once(header).chain(accounts.chunks(BLOCK).map(block));
    decode_framed_on(model, threads, |buf: &mut Vec<u8>| {
        Ok::<_, StateError>(frames.next().map(|f| *buf = f).is_some())
    })
}

/// Decodes a state written by [`StateWriter::write_framed_to`] as it is
/// read: `next` fills its buffer with the next frame and returns `false`
/// at the frame of length 0. A large state's blocks (`accounts` is the
/// count the snapshot announces) are decoded on all cores while `next`
/// reads on, into reused buffers: the state is never held whole in memory.
pub fn decode_framed<E: From<StateError>>(
    model: Arc<Model>,
    accounts: u64,
    next: impl FnMut(&mut Vec<u8>) -> Result<bool, E>,
) -> Result<Partition, E> {
    let accounts = usize::try_from(accounts).unwrap_or(usize::MAX);
    decode_framed_on(model, threads_for(accounts), next)
}

fn decode_framed_on<E: From<StateError>>(
    model: Arc<Model>,
    threads: usize,
    mut next: impl FnMut(&mut Vec<u8>) -> Result<bool, E>,
) -> Result<Partition, E> {
    let mut header = Vec::new();
    if !next(&mut header)? {
        return Err(StateError::Malformed("state header").into());
    }
    let header = || pb::PartitionState::decode(&header[..]).map_err(StateError::from);
    let cards = model.cards.len();
    if threads <= 1 {
        let mut s = pb::AccountState::default();
        let mut all = Decoded::default();
        let mut buf = Vec::new();
        while next(&mut buf)? {
            decode_block(&buf, &mut s, cards, &mut all)?;
        }
        return Ok(assemble(header()?, all, model)?);
    }
    // Block b goes to thread b % threads; the results are joined in
    // order. Buffers come back to be reused; at most three per thread are
    // in flight.
    let (s, all) = std::thread::scope(|sc| -> Result<_, E> {
        let (spare, reuse) = mpsc::channel::<Vec<u8>>();
        let mut work = Vec::with_capacity(threads);
        let mut done = Vec::with_capacity(threads);
        for _ in 0..threads {
            let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(2);
            let (dtx, drx) = mpsc::channel::<Result<Decoded, StateError>>();
            let spare = spare.clone();
            sc.spawn(move || {
                let mut s = pb::AccountState::default();
                for buf in rx {
                    let mut d = Decoded {
                        hashes: Vec::with_capacity(BLOCK),
                        ..Decoded::default()
                    };
                    let r = decode_block(&buf, &mut s, cards, &mut d).map(|()| d);
                    let failed = r.is_err();
                    let _ = spare.send(buf);
                    if dtx.send(r).is_err() || failed {
                        return;
                    }
                }
            });
            work.push(tx);
            done.push(drx);
        }
        let mut blocks = 0;
        loop {
            let mut buf = reuse.try_recv().unwrap_or_default();
            if !next(&mut buf)? {
                break;
            }
            // A thread that stopped has sent the error it stopped on,
            // which the join below returns.
            if work[blocks % threads].send(buf).is_err() {
                break;
            }
            blocks += 1;
        }
        drop(work);
        let s = header()?;
        let mut all = Decoded::default();
        for b in 0..blocks {
            // A closed channel: the thread failed on an earlier block of
            // its own (returned above) or panicked (re-raised by the scope).
            let d = done[b % threads]
                .recv()
                .map_err(|_| StateError::Malformed("accounts"))??;
            all.append(d);
        }
        Ok((s, all))
    })?;
    Ok(assemble(s, all, model)?)
}

/// The partition of a decoded header (every field but the accounts) and
/// its decoded accounts.
fn assemble(
    mut s: pb::PartitionState,
    decoded: Decoded,
    model: Arc<Model>,
) -> Result<Partition, StateError> {
    if !(OLDEST_FORMAT..=FORMAT).contains(&s.format) {
        return Err(StateError::Format { found: s.format });
    }
    if !s.accounts.is_empty() {
        return Err(StateError::Malformed("accounts"));
    }
    let dedup_time = if s.dedup_time.is_empty() {
        let mut t = 0i64;
        s.dedup_time_delta
            .iter()
            .map(|&d| {
                t = t
                    .checked_add(d)
                    .ok_or(StateError::Malformed("dedup_time"))?;
                ts(t, "dedup_time")
            })
            .collect::<Result<Vec<_>, _>>()?
    } else if s.dedup_time_delta.is_empty() {
        s.dedup_time
            .iter()
            .try_for_each(|&t| ts(t, "dedup_time").map(drop))?;
        std::mem::take(&mut s.dedup_time)
    } else {
        return Err(StateError::Malformed("dedup_time"));
    };
    same_len(&[s.dedup_key.len(), dedup_time.len()], "dedup")?;
    ts_or_never(s.max_time, "max_time")?;
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
    let dedup = Dedup::from_order(s.dedup_key.into_iter().zip(dedup_time).collect());
    let Decoded {
        accounts,
        hashes,
        timers,
        sums,
    } = decoded;
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
        &hashes,
        timers,
        sums,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ModelConfig;
    use crate::simulate::{generate, SimOptions};

    /// Large partitions are encoded and decoded on several threads: the
    /// bytes and the restored state are those of one thread, and a state
    /// whose accounts are interleaved with its other fields (any field
    /// order is valid Protobuf) decodes the same.
    #[test]
    fn threads_and_field_order_change_nothing() {
        let p = folded(300, 40, 5);
        let model = Arc::clone(&p.model);
        let streamed = |threads: usize, framed: bool| {
            let w = StateWriter::on(&p, threads, 7);
            let mut out = Vec::new();
            if framed {
                w.write_framed_to(&mut out).expect("writes");
            } else {
                w.write_to(&mut out).expect("writes");
            }
            out
        };
        let one = streamed(1, false);
        assert_eq!(encode(&p), one);
        let framed = streamed(1, true);
        // Frames of blocks of 7 accounts, the header first, then a 0.
        let mut frames = Vec::new();
        let mut rest = &framed[..];
        loop {
            let n = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
            rest = &rest[4..];
            if n == 0 {
                break;
            }
            frames.push(&rest[..n]);
            rest = &rest[n..];
        }
        assert!(rest.is_empty());
        assert_eq!(frames.len(), 1 + 300usize.div_ceil(7));
        assert_eq!(frames.concat(), one, "the frames are the state's pieces");
        for threads in [1, 2, 3, 7] {
            assert_eq!(streamed(threads, false), one, "{threads} threads");
            assert_eq!(streamed(threads, true), framed, "{threads} threads, framed");
            let back = decode_on(&one, Arc::clone(&model), Some(threads)).expect("decodes");
            assert!(back == p, "decoded on {threads} threads");
            let mut next = frames.iter();
            let back = decode_framed_on(Arc::clone(&model), threads, |buf: &mut Vec<u8>| {
                Ok::<_, StateError>(next.next().map(|f| *buf = f.to_vec()).is_some())
            })
            .expect("decodes framed");
            assert!(back == p, "framed, decoded on {threads} threads");
        }
        // A block holding anything but accounts is refused, on any thread.
        for threads in [1, 2] {
            let mut next = frames.iter().enumerate();
            let err = decode_framed_on(Arc::clone(&model), threads, |buf: &mut Vec<u8>| {
                Ok::<_, StateError>(
                    next.next()
                        .map(|(i, f)| {
                            *buf = if i == 20 {
                                frames[0].to_vec()
                            } else {
                                f.to_vec()
                            }
                        })
                        .is_some(),
                )
            })
            .map(drop)
            .expect_err("a header where a block belongs");
            assert!(
                matches!(err, StateError::Malformed("accounts block")),
                "{err}"
            );
        }
        // The accounts first, then the other fields: as an older encoder
        // might have written them.
        let (header, accounts) = split_accounts(&one).expect("splits");
        assert_eq!(accounts.len(), 300);
        let mut reordered = Vec::new();
        for a in &accounts {
            wire::bytes_field(&mut reordered, ACCOUNTS_FIELD, a);
        }
        reordered.extend_from_slice(&header);
        let back = decode(&reordered, Arc::clone(&model)).expect("decodes");
        assert!(back == p);
        assert_eq!(encode(&back), one);
    }

    /// The direct writer ([`wire::account`]) writes, for every account,
    /// the bytes prost writes for the message [`account_into`] fills —
    /// accounts with overrides and their audit trail, open tickets,
    /// unpaid invoices and surveys included.
    #[test]
    fn the_direct_account_writer_writes_what_prost_writes() {
        let mut p = with_overrides(folded(400, 120, 11));
        // Parts a simulated log rarely or never sets, on a few accounts.
        for i in 0..3 {
            let a = &mut p.accounts[i];
            a.cancelled_at = a.first_seen + 1;
            a.timer_due = -7;
            a.weeks.head = i32::MIN;
            a.mrr_history.push((-5, u64::MAX));
            a.alert.published = Some(Published {
                score_tenths: 555,
                band: Band::AtRisk,
                override_set_at: i64::MIN + 1,
                cancelled: true,
                scorecard: u16::MAX,
            });
            a.alert.at_risk_pending = true;
            a.alert.upsell_pending = true;
            a.surveys = Some(Box::new(Surveys {
                last_nps: Some((0, -1)),
                last_csat: Some((5, i32::MAX)),
                last_ces: Some((7, i32::MIN)),
                ..Surveys::default()
            }));
        }
        let mut s = pb::AccountState::default();
        let mut seen = [0usize; 5];
        for a in p.accounts.iter() {
            account_into(a, &mut s);
            let mut direct = Vec::new();
            wire::account(a, &mut direct);
            assert_eq!(direct, s.encode_to_vec(), "account {}", a.id);
            let ex = a.extras.as_deref();
            for (i, has) in [
                ex.is_some_and(|e| e.active_override.is_some()),
                ex.is_some_and(|e| !e.audit.is_empty()),
                !a.open_tickets().is_empty(),
                !a.unpaid.is_empty(),
                a.surveys.is_some(),
            ]
            .into_iter()
            .enumerate()
            {
                seen[i] += usize::from(has);
            }
        }
        assert!(
            seen.iter().all(|&n| n > 0),
            "every part was written: {seen:?}"
        );
    }

    /// The direct reader ([`wire::read_account`]) reads every account as
    /// prost's `merge` does, and damaged messages — bytes changed, cut
    /// short, fields repeated — to the same message or to an error both.
    #[test]
    fn the_direct_account_reader_reads_what_prost_reads() {
        let p = with_overrides(folded(200, 90, 12));
        let messages: Vec<Vec<u8>> = p
            .accounts
            .iter()
            .map(|a| {
                let mut b = Vec::new();
                wire::account(a, &mut b);
                b
            })
            .collect();
        let read = |m: &[u8]| {
            let mut ours = pb::AccountState::default();
            let mut theirs = pb::AccountState::default();
            let r = wire::read_account(m, &mut ours).map(|()| ours);
            let t = theirs.merge(m).map(|()| theirs);
            (r, t)
        };
        for m in &messages {
            let (r, t) = read(m);
            assert_eq!(r.expect("reads"), t.expect("prost reads"));
        }
        // Damaged: a byte changed, the message cut, or two messages run
        // together (every field twice: scalars replaced, columns appended).
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        let (mut ok, mut err) = (0, 0);
        for k in 0..20_000 {
            let m = &messages[rand(messages.len())];
            let mut d = m.clone();
            match k % 4 {
                0 | 1 => {
                    let i = rand(d.len());
                    d[i] = rand(256) as u8;
                }
                2 => d.truncate(rand(d.len())),
                _ => d.extend_from_slice(&messages[rand(messages.len())]),
            }
            match read(&d) {
                (Ok(r), Ok(t)) => {
                    // As bytes: a damaged double may be NaN, never equal.
                    assert_eq!(r.encode_to_vec(), t.encode_to_vec(), "damaged message {k}");
                    ok += 1;
                }
                (Err(_), Err(_)) => err += 1,
                (r, t) => panic!("damaged message {k}: ours {r:?}, prost {t:?}"),
            }
        }
        assert!(ok > 1000 && err > 1000, "{ok} read, {err} refused");
    }

    /// Every field of an `AccountState` set to a value of its own, at the
    /// ends of its type's range, read as prost reads it — also with the
    /// repeated fields unpacked, scalars out of a `uint32`'s range, and
    /// fields repeated (the later scalar wins, columns append).
    #[test]
    fn the_direct_account_reader_reads_every_field_as_prost() {
        let dec = |k: u32| pb::Decayed {
            sum: -1.5 * k as f64,
            weight: f64::MAX,
            day: -(k as i32),
            count: u32::MAX - k,
        };
        let over = pb::OverrideState {
            band: Some("at_risk".into()),
            score: Some(0),
            reason: "r".into(),
            by: Some("b".into()),
            set_at: i64::MIN,
            expires_at: i64::MAX,
            event_id: "e".into(),
        };
        let s = pb::AccountState {
            id: "acct-é".into(),
            segment: 1,
            tier: 2,
            owner: 3,
            plan: u32::MAX,
            scorecard: 5,
            first_seen: i64::MIN,
            subscribed_at: Some(0),
            cancelled_at: Some(-1),
            last_eval: Some(i64::MAX),
            last_activity: Some(1 << 40),
            users: vec![u64::MAX, 0, 9],
            user_hash: vec![u32::MAX, 0, 7],
            user_day_base: i32::MIN,
            user_day_back: vec![u32::MAX, 0, 128],
            feature_hash: vec![11, 12],
            feature_day: vec![i32::MIN, -1, i32::MAX],
            feature_day_base: i32::MAX,
            feature_day_back: vec![300, 1],
            feature_count: vec![u32::MAX, 16_384],
            weeks_head: -9,
            week_activity: vec![1; WEEKS],
            week_wau: vec![2; WEEKS],
            week_tickets: vec![3; WEEKS],
            week_escalations: vec![4; WEEKS],
            week_reopens: vec![5; WEEKS],
            seats_licensed: 6,
            tickets_total: 7,
            ticket_hash: vec![8, 9],
            ticket_opened_min: vec![10, u32::MAX],
            ticket_priority: vec![0, 3],
            ticket_escalated: vec![true, false],
            resolve_hours: -0.25,
            resolved: 12,
            ticket_csat: Some(dec(1)),
            mrr_cents: u64::MAX,
            mrr_day: vec![-3, i32::MIN],
            mrr_value: vec![u64::MAX, 1],
            unpaid_hash: vec![13],
            unpaid_failures: vec![14],
            unpaid_days_overdue: vec![15],
            unpaid_overdue_day: vec![-16],
            unpaid_amount: vec![17],
            payments_failed_total: 18,
            renews_at: Some(-19),
            nps: Some(dec(2)),
            last_nps_score: Some(0),
            last_nps_day: -20,
            csat: Some(dec(3)),
            ces: Some(dec(4)),
            onboarding: 21,
            touchpoints: 22,
            last_touchpoint: Some(23),
            active_override: Some(over.clone()),
            override_audit: vec![pb::OverrideAudit {
                entry: Some(over),
                end: "expired".into(),
                ended_at: -24,
            }],
            band: 25,
            at_risk_open: true,
            last_at_risk_alert: Some(26),
            upsell_active: true,
            last_upsell_alert: Some(27),
            has_published: true,
            published_tenths: Some(0),
            published_score: 28.5,
            published_band: 29,
            published_override_set_at: Some(-30),
            published_cancelled: true,
            published_scorecard: 31,
            score_days: vec![32, 0, 255],
            score_head: i32::MAX,
            timer_due: Some(i64::MIN),
            has_extras: true,
            has_support: true,
            has_surveys: true,
            at_risk_pending: true,
            upsell_pending: true,
            last_csat_score: Some(33),
            last_csat_day: 34,
            last_ces_score: Some(u32::MAX),
            last_ces_day: i32::MIN,
        };
        let whole = s.encode_to_vec();
        let mut odd = Vec::new();
        // Repeated fields unpacked, one value each.
        for tag in [13u32, 15, 17, 24, 25, 27, 32, 33, 34, 37, 74, 76, 78] {
            use prost::encoding::WireType::{ThirtyTwoBit, Varint};
            if matches!(tag, 13 | 24 | 34 | 74) {
                prost::encoding::encode_key(tag, ThirtyTwoBit, &mut odd);
                odd.extend_from_slice(&7u32.to_le_bytes());
            } else {
                prost::encoding::encode_key(tag, Varint, &mut odd);
                prost::encoding::encode_varint(1, &mut odd);
            }
        }
        // Varints wider than the field: a `uint32` keeps the low 32 bits.
        for tag in [2u32, 22, 46, 51, 79, 16, 75] {
            prost::encoding::encode_key(tag, prost::encoding::WireType::Varint, &mut odd);
            prost::encoding::encode_varint((1 << 40) + 5, &mut odd);
        }
        for bytes in [
            whole.clone(),
            odd.clone(),
            [whole.clone(), odd.clone(), whole.clone()].concat(),
        ] {
            let mut ours = pb::AccountState::default();
            let mut theirs = pb::AccountState::default();
            wire::read_account(&bytes, &mut ours).expect("reads");
            theirs.merge(&bytes[..]).expect("prost reads");
            assert_eq!(ours, theirs);
        }
        let mut back = pb::AccountState::default();
        wire::read_account(&whole, &mut back).expect("reads");
        assert_eq!(back, s, "every field read back");
    }

    /// `p` with overrides set, replaced and expired on some accounts.
    fn with_overrides(mut p: Partition) -> Partition {
        let ids: Vec<String> = p
            .accounts
            .iter()
            .take(5)
            .map(|a| a.id.to_string())
            .collect();
        let mut out = Vec::new();
        let t = p.max_time;
        for (n, id) in ids.iter().enumerate() {
            for (k, extra) in [
                r#""band":"at_risk","score":35,"reason":"Champion left","by":"csm-anna""#,
                r#""score":0,"reason":"Renewal signed""#,
            ]
            .iter()
            .enumerate()
            {
                let line = format!(
                    r#"{{"id":"ov-{n}-{k}","account_id":"{id}","type":"health.override","time":"{}","expires_at":"2099-01-01T00:00:00Z",{extra}}}"#,
                    crate::codec::timefmt::format(t + k as i64)
                );
                let ev = crate::codec::json::decode(line.as_bytes()).expect("a valid override");
                p.apply(&ev, &mut out);
            }
        }
        p
    }

    /// A partition folded from a simulated log.
    fn folded(accounts: u32, days: u32, seed: u64) -> Partition {
        let model = Arc::new(Model::new(ModelConfig::default()));
        let mut p = Partition::new(model);
        let mut out = Vec::new();
        for ev in generate(&SimOptions {
            accounts,
            days,
            seed,
            ..Default::default()
        }) {
            p.apply(&ev, &mut out);
        }
        p
    }

    /// `s` (format 5) as format 4 wrote it.
    fn as_format_4(s: &mut pb::AccountState) {
        let day = |base: i32, back: &u32| base - *back as i32;
        s.users = s
            .user_hash
            .iter()
            .zip(&s.user_day_back)
            .map(|(&h, b)| (u64::from(h) << 32) | u64::from(day(s.user_day_base, b) as u32))
            .collect();
        s.feature_day = s
            .feature_day_back
            .iter()
            .map(|b| day(s.feature_day_base, b))
            .collect();
        (s.user_hash, s.user_day_back, s.feature_day_back) = Default::default();
        (s.user_day_base, s.feature_day_base) = (0, 0);
        for c in [
            &mut s.week_activity,
            &mut s.week_wau,
            &mut s.week_tickets,
            &mut s.week_escalations,
            &mut s.week_reopens,
        ] {
            c.resize(WEEKS, 0);
        }
        if let Some(t) = s.published_tenths.take() {
            s.published_score = f64::from(t) / 10.0;
        }
        for d in [&mut s.nps, &mut s.csat, &mut s.ces] {
            d.get_or_insert_with(Default::default);
        }
    }

    /// Format 5 writes the same state as format 4 in fewer bytes; a
    /// format-4 state (a snapshot taken before the upgrade) restores the
    /// same partition. Formats before 4 are refused with a message naming
    /// what this build reads.
    #[test]
    fn format_4_states_still_load_and_older_ones_are_refused() {
        use prost::Message;
        let p = folded(300, 60, 9);
        assert!(p.accounts.iter().any(|a| a.support.is_some()));
        assert!(p.accounts.iter().any(|a| a.surveys.is_some()));
        assert!(p.dedup.order.len() > 1000);
        let five = encode(&p);
        let mut s = pb::PartitionState::decode(&five[..]).expect("decodes");
        assert_eq!(s.format, 5);
        s.format = 4;
        s.dedup_time = s
            .dedup_time_delta
            .iter()
            .scan(0i64, |t, d| {
                *t += d;
                Some(*t)
            })
            .collect();
        s.dedup_time_delta.clear();
        s.accounts.iter_mut().for_each(as_format_4);
        let four = s.encode_to_vec();
        assert!(
            five.len() * 100 < four.len() * 90,
            "format 5: {} bytes, format 4: {}",
            five.len(),
            four.len()
        );
        let back = decode(&four, Arc::clone(&p.model)).expect("a format-4 state loads");
        assert!(back == p, "a format-4 state restores the same partition");
        for old in [0, 3, 6] {
            s.format = old;
            let err = decode(&s.encode_to_vec(), Arc::clone(&p.model)).map(drop);
            let err = err.expect_err("refused");
            assert!(matches!(err, StateError::Format { found } if found == old));
            assert_eq!(
                err.to_string(),
                format!("state format {old} is not supported (this build reads formats 4 to 5)")
            );
        }
        // One state holds one form or the other.
        let mut mixed = pb::PartitionState::decode(&five[..]).expect("decodes");
        let a = mixed
            .accounts
            .iter_mut()
            .find(|a| !a.user_hash.is_empty())
            .expect("an account with users");
        a.users.push(1);
        let err = decode(&mixed.encode_to_vec(), Arc::clone(&p.model)).map(drop);
        assert!(
            matches!(err, Err(StateError::Malformed("users"))),
            "{err:?}"
        );
    }
}
