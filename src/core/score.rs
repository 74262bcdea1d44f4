//! The health model: factors → components → score, hard triggers and
//! upsell signals, and the drivers that explain a score. Every formula and
//! default is written out in `docs/MODEL.md`; keep the two in step.
//!
//! Each component is linear in its factors: a *positive* component is
//! `Σ aᵢ·xᵢ` (factor values `xᵢ` in 0..=100, shares `aᵢ` summing to 1); a
//! *penalty* component is `100 − Σ pᵢ`. A factor's **impact** is its
//! effect on the final score relative to its reference value (what an
//! unremarkable account has): `wᶜ/Σw · aᵢ · (xᵢ − refᵢ)`, or `−wᶜ/Σw · pᵢ`.
//! So `score = base + Σ impacts` (before clamping), where `base` is the score
//! of an account at every reference value.

use super::account::{Account, NEVER, WEEKS};
use super::config::{ModelConfig, Scorecard};
use super::event::{Band, Priority};
use super::time::{day_of, week_of, Ts, MS_PER_DAY};

/// The components, in output order.
pub const COMPONENTS: [&str; 6] = [
    "usage",
    "adoption",
    "support",
    "financial",
    "sentiment",
    "lifecycle",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Component {
    Usage = 0,
    Adoption = 1,
    Support = 2,
    Financial = 3,
    Sentiment = 4,
    Lifecycle = 5,
}

/// Every factor, with its component and how it counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Factor {
    UsageRecency,
    UsageTrend,
    UsageMomentum,
    ActiveUsersTrend,
    UserStickiness,
    SeatUtilisation,
    FeatureBreadth,
    OpenTickets,
    Escalations,
    Reopens,
    TicketVolume,
    ResolutionTime,
    TicketCsat,
    FailedPayments,
    Overdue,
    MrrChange,
    Cancelled,
    Nps,
    Csat,
    Ces,
    Onboarding,
}

pub const FACTORS: usize = 21;

/// How a factor enters its component.
#[derive(Debug, Clone, Copy)]
pub enum Form {
    /// Positive factor: share of the component, and its reference value.
    Share(f64, f64),
    /// Penalty points subtracted from 100.
    Penalty,
}

impl Factor {
    pub const ALL: [Factor; FACTORS] = [
        Factor::UsageRecency,
        Factor::UsageTrend,
        Factor::UsageMomentum,
        Factor::ActiveUsersTrend,
        Factor::UserStickiness,
        Factor::SeatUtilisation,
        Factor::FeatureBreadth,
        Factor::OpenTickets,
        Factor::Escalations,
        Factor::Reopens,
        Factor::TicketVolume,
        Factor::ResolutionTime,
        Factor::TicketCsat,
        Factor::FailedPayments,
        Factor::Overdue,
        Factor::MrrChange,
        Factor::Cancelled,
        Factor::Nps,
        Factor::Csat,
        Factor::Ces,
        Factor::Onboarding,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Factor::UsageRecency => "usage_recency",
            Factor::UsageTrend => "usage_trend",
            Factor::UsageMomentum => "usage_momentum",
            Factor::ActiveUsersTrend => "active_users_trend",
            Factor::UserStickiness => "user_stickiness",
            Factor::SeatUtilisation => "seat_utilisation",
            Factor::FeatureBreadth => "feature_breadth",
            Factor::OpenTickets => "open_tickets",
            Factor::Escalations => "escalations",
            Factor::Reopens => "reopens",
            Factor::TicketVolume => "ticket_volume",
            Factor::ResolutionTime => "resolution_time",
            Factor::TicketCsat => "ticket_csat",
            Factor::FailedPayments => "failed_payments",
            Factor::Overdue => "overdue",
            Factor::MrrChange => "mrr_change",
            Factor::Cancelled => "cancelled",
            Factor::Nps => "nps",
            Factor::Csat => "csat",
            Factor::Ces => "ces",
            Factor::Onboarding => "onboarding",
        }
    }

    pub fn component(self) -> Component {
        use Factor::*;
        match self {
            UsageRecency | UsageTrend | UsageMomentum | ActiveUsersTrend | UserStickiness => {
                Component::Usage
            }
            SeatUtilisation | FeatureBreadth => Component::Adoption,
            OpenTickets | Escalations | Reopens | TicketVolume | ResolutionTime | TicketCsat => {
                Component::Support
            }
            FailedPayments | Overdue | MrrChange | Cancelled => Component::Financial,
            Nps | Csat | Ces => Component::Sentiment,
            Onboarding => Component::Lifecycle,
        }
    }

    pub fn form(self) -> Form {
        use Factor::*;
        match self {
            UsageRecency => Form::Share(0.2, 100.0),
            UsageTrend => Form::Share(0.2, 50.0),
            UsageMomentum => Form::Share(0.2, 50.0),
            ActiveUsersTrend => Form::Share(0.2, 50.0),
            UserStickiness => Form::Share(0.2, 50.0),
            SeatUtilisation => Form::Share(0.6, 50.0),
            FeatureBreadth => Form::Share(0.4, 50.0),
            Nps => Form::Share(0.5, 70.0),
            Csat => Form::Share(0.3, 75.0),
            Ces => Form::Share(0.2, 200.0 / 3.0),
            Onboarding => Form::Share(1.0, 100.0),
            _ => Form::Penalty,
        }
    }
}

/// What the factors measured, for the drivers' sentences.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Measures {
    pub days_since_activity: Option<f64>,
    pub activity_recent: u32,
    pub activity_prior: u32,
    /// Weekly means: last 2 complete weeks, and the 4 weeks before them.
    pub momentum_recent: f64,
    pub momentum_prior: f64,
    pub wau_recent: f64,
    pub wau_prior: f64,
    pub active_users_28d: u32,
    pub active_users_7d: u32,
    pub seats: u32,
    pub features_28d: u32,
    pub open_weighted: f64,
    pub open_tickets: u32,
    pub urgent_open: bool,
    pub escalations_4w: u32,
    pub reopens_4w: u32,
    pub tickets_4w: u32,
    pub ticket_baseline_4w: Option<f64>,
    pub resolve_hours: f64,
    pub ticket_csat: f64,
    pub unpaid_failures: u32,
    pub days_overdue: u32,
    pub mrr_now: u64,
    pub mrr_90d: u64,
    pub nps_mean: f64,
    pub nps_answers: u32,
    pub last_nps: Option<u8>,
    pub csat_mean: f64,
    pub ces_mean: f64,
    pub onboarding_done: u32,
    pub days_to_renewal: Option<i64>,
}

/// Why the band was forced to `at_risk` regardless of the score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HardTrigger {
    PaymentFailures,
    Overdue,
    DetractorUrgent,
    Silent,
    RenewalAtRisk,
}

impl HardTrigger {
    pub fn name(self) -> &'static str {
        match self {
            HardTrigger::PaymentFailures => "payment_failures",
            HardTrigger::Overdue => "overdue",
            HardTrigger::DetractorUrgent => "detractor_with_urgent_ticket",
            HardTrigger::Silent => "silent",
            HardTrigger::RenewalAtRisk => "renewal_at_risk",
        }
    }

    /// The factors that say why the trigger fired (an alert it raises
    /// shows them among its drivers).
    pub fn factors(self) -> &'static [Factor] {
        match self {
            HardTrigger::PaymentFailures => &[Factor::FailedPayments],
            HardTrigger::Overdue => &[Factor::Overdue],
            HardTrigger::DetractorUrgent => &[Factor::Nps, Factor::OpenTickets],
            HardTrigger::Silent => &[Factor::UsageRecency],
            HardTrigger::RenewalAtRisk => &[],
        }
    }
}

/// A score with everything needed to explain it.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub score: f64,
    pub components: [f64; 6],
    /// Factor values (0..=100 for shares, penalty points for penalties).
    pub values: [f64; FACTORS],
    pub impacts: [f64; FACTORS],
    pub measures: Measures,
    pub hard: Option<HardTrigger>,
}

fn clamp100(x: f64) -> f64 {
    x.clamp(0.0, 100.0)
}

/// Maps a ratio `recent/prior` to 0..=100: 1.0 ↦ 50, −50% ↦ 0, +50% ↦ 100.
pub fn trend_value(recent: f64, prior: f64) -> f64 {
    if prior <= 0.0 {
        // No history to compare with: neutral.
        return 50.0;
    }
    clamp100(50.0 + 100.0 * (recent / prior - 1.0))
}

/// [`trend_value`] with `k` added to both sides once there is a prior to
/// compare with: small counts are noisy (4 logins against 8 is as likely
/// chance as a halving), so their ratio is shrunk toward flat.
pub fn smoothed_trend(recent: f64, prior: f64, k: f64) -> f64 {
    if prior <= 0.0 {
        return 50.0;
    }
    trend_value(recent + k, prior + k)
}

/// Scores `acc` as of `now` with scorecard `sc`. Pure.
pub fn evaluate(acc: &Account, now: Ts, sc: &Scorecard, cfg: &ModelConfig) -> Evaluation {
    let f = &cfg.factors;
    let day = day_of(now);
    let week = week_of(now);
    let mut m = Measures::default();
    let mut v = [0.0f64; FACTORS];

    // --- usage ---
    let inactivity = f.inactivity_days as f64;
    // A new account's silence is counted from when it was first seen.
    let since = if acc.last_activity == NEVER {
        acc.first_seen
    } else {
        acc.last_activity
    };
    let silent_days = ((now - since).max(0) as f64) / MS_PER_DAY as f64;
    m.days_since_activity = (acc.last_activity != NEVER).then_some(silent_days);
    v[Factor::UsageRecency as usize] =
        clamp100(100.0 * (inactivity - silent_days) / (inactivity - 2.0));
    let age_days = ((now - acc.first_seen).max(0) as f64) / MS_PER_DAY as f64;
    // The prior window must lie wholly inside the account's life.
    let history = acc.first_seen <= (week - 8) as i64 * 7 * MS_PER_DAY;
    // The weeks read below, w-8..=w, looked up once: `wk(a, b, f)` sums
    // `f` over weeks w-a..=w-b (the same integers as summing `acc.week`).
    let cells = acc.last_weeks(week);
    let wk = |a: usize, b: usize, f: fn(&super::account::WeekCell) -> u32| -> u32 {
        cells[WEEKS - 1 - a..=WEEKS - 1 - b].iter().map(f).sum()
    };
    // Complete weeks only: recent = weeks w-4..w-1, prior = w-8..w-5.
    m.activity_recent = wk(4, 1, |c| c.activity);
    m.activity_prior = wk(8, 5, |c| c.activity);
    // Smoothed by `activity_trend_prior` per week (4 weeks a window).
    let k = f.activity_trend_prior;
    v[Factor::UsageTrend as usize] = if history {
        smoothed_trend(m.activity_recent as f64, m.activity_prior as f64, 4.0 * k)
    } else {
        50.0
    };
    m.momentum_recent = wk(2, 1, |c| c.activity) as f64 / 2.0;
    m.momentum_prior = wk(6, 3, |c| c.activity) as f64 / 4.0;
    let momentum_history = acc.first_seen <= (week - 6) as i64 * 7 * MS_PER_DAY;
    v[Factor::UsageMomentum as usize] = if momentum_history {
        smoothed_trend(m.momentum_recent, m.momentum_prior, k)
    } else {
        50.0
    };
    m.wau_recent = wk(4, 1, |c| c.wau as u32) as f64 / 4.0;
    m.wau_prior = wk(8, 5, |c| c.wau as u32) as f64 / 4.0;
    v[Factor::ActiveUsersTrend as usize] = if history {
        trend_value(m.wau_recent, m.wau_prior)
    } else {
        50.0
    };

    // The month's active users still active this week: 50 when all are,
    // 0 when half or fewer are (users drifting away before usage falls).
    (m.active_users_28d, m.active_users_7d) = acc.active_users_since2(day - 27, day - 6);
    v[Factor::UserStickiness as usize] =
        trend_value(m.active_users_7d as f64, m.active_users_28d as f64);

    // --- adoption ---
    m.seats = acc.seats_licensed;
    v[Factor::SeatUtilisation as usize] = if acc.seats_licensed == 0 {
        50.0
    } else {
        let u = m.active_users_28d as f64 / acc.seats_licensed as f64;
        clamp100(100.0 * u / f.target_seat_utilisation)
    };
    m.features_28d = acc.features_since(day - 27);
    v[Factor::FeatureBreadth as usize] =
        clamp100(100.0 * m.features_28d as f64 / f.expected_features);
    // Adoption is still ramping up in an account's first 28 days: blend
    // toward the neutral 50 in proportion to age.
    if age_days < 28.0 {
        for fac in [Factor::SeatUtilisation, Factor::FeatureBreadth] {
            let x = &mut v[fac as usize];
            *x = 50.0 + (*x - 50.0) * age_days / 28.0;
        }
    }

    // --- support (penalties) ---
    let open = acc.open_tickets();
    m.open_tickets = open.len() as u32;
    m.open_weighted = open
        .iter()
        .map(|t| match t.priority {
            Priority::Low => 2.0,
            Priority::Normal => 4.0,
            Priority::High => 8.0,
            Priority::Urgent => 15.0,
        })
        .sum();
    m.urgent_open = open.iter().any(|t| t.priority == Priority::Urgent);
    v[Factor::OpenTickets as usize] = m.open_weighted.min(40.0);
    // Last four weeks including the current one.
    m.escalations_4w = wk(3, 0, |c| c.escalations as u32);
    v[Factor::Escalations as usize] = (10.0 * m.escalations_4w as f64).min(30.0);
    m.reopens_4w = wk(3, 0, |c| c.reopens as u32);
    v[Factor::Reopens as usize] = (5.0 * m.reopens_4w as f64).min(15.0);
    m.tickets_4w = wk(3, 0, |c| c.tickets as u32);
    let age_weeks = ((now - acc.first_seen).max(0) / (7 * MS_PER_DAY)) as f64;
    m.ticket_baseline_4w = if age_weeks >= 8.0 {
        let older = acc.tickets_total.saturating_sub(m.tickets_4w) as f64;
        Some(4.0 * older / (age_weeks - 4.0))
    } else {
        None
    };
    v[Factor::TicketVolume as usize] = match m.ticket_baseline_4w {
        Some(b) => {
            let r = m.tickets_4w as f64 / (b + 1.0);
            (10.0 * (r - 1.5)).clamp(0.0, 20.0)
        }
        None => 0.0,
    };
    let (resolve_hours, resolved, ticket_csat) = acc
        .support
        .as_deref()
        .map_or((0.0, 0, super::account::Decayed::ZERO), |s| {
            (s.resolve_hours, s.resolved, s.ticket_csat)
        });
    m.resolve_hours = resolve_hours;
    v[Factor::ResolutionTime as usize] = if resolved > 0 {
        ((resolve_hours - 72.0) / 12.0).clamp(0.0, 10.0)
    } else {
        0.0
    };
    m.ticket_csat = ticket_csat.mean(day, f.survey_half_life_days, 4.0, f.survey_prior_weight);
    v[Factor::TicketCsat as usize] = ((3.5 - m.ticket_csat) * 8.0).clamp(0.0, 15.0);

    // --- financial (penalties) ---
    m.unpaid_failures = acc.unpaid_failures();
    v[Factor::FailedPayments as usize] = (20.0 * m.unpaid_failures as f64).min(60.0);
    m.days_overdue = acc.days_overdue(day);
    v[Factor::Overdue as usize] = (m.days_overdue as f64).min(40.0);
    m.mrr_now = acc.mrr_cents();
    m.mrr_90d = acc.mrr_on(day - 90);
    v[Factor::MrrChange as usize] = if m.mrr_90d > 0 && m.mrr_now < m.mrr_90d {
        let c = (m.mrr_90d - m.mrr_now) as f64 / m.mrr_90d as f64;
        (60.0 * c).min(30.0)
    } else {
        0.0
    };
    v[Factor::Cancelled as usize] = if acc.is_cancelled() { 100.0 } else { 0.0 };

    // --- sentiment ---
    let hl = f.survey_half_life_days;
    let pw = f.survey_prior_weight;
    let sv = acc.surveys();
    m.nps_mean = sv.nps.mean(day, hl, 7.0, pw);
    m.nps_answers = sv.nps.count;
    m.last_nps = sv.last_nps.map(|(s, _)| s);
    v[Factor::Nps as usize] = clamp100(10.0 * m.nps_mean);
    m.csat_mean = sv.csat.mean(day, hl, 4.0, pw);
    v[Factor::Csat as usize] = clamp100((m.csat_mean - 1.0) * 25.0);
    m.ces_mean = sv.ces.mean(day, hl, 5.0, pw);
    v[Factor::Ces as usize] = clamp100((m.ces_mean - 1.0) * 100.0 / 6.0);

    // --- lifecycle ---
    let mut bits = acc.onboarding;
    if acc.first_seen != NEVER && now - acc.first_seen >= 90 * MS_PER_DAY {
        bits |= super::account::milestone::ONBOARDED;
    }
    m.onboarding_done = bits.count_ones();
    v[Factor::Onboarding as usize] = 25.0 * m.onboarding_done as f64;

    m.days_to_renewal = if acc.renews_at != NEVER && acc.renews_at >= now {
        Some((acc.renews_at - now) / MS_PER_DAY)
    } else {
        None
    };

    // --- combine ---
    let w = sc.weights.as_array();
    let wsum: f64 = w.iter().sum();
    let mut comp = [0.0f64; 6];
    let mut penalty = [0.0f64; 6];
    let mut impacts = [0.0f64; FACTORS];
    // Each component's share, divided once (not once per factor).
    let shares = w.map(|wc| wc / wsum);
    for fac in Factor::ALL {
        let c = fac.component() as usize;
        let x = v[fac as usize];
        let share = shares[c];
        match fac.form() {
            Form::Share(a, reference) => {
                comp[c] += a * x;
                impacts[fac as usize] = share * a * (x - reference);
            }
            Form::Penalty => {
                penalty[c] += x;
                impacts[fac as usize] = -share * x;
            }
        }
    }
    for c in [Component::Support, Component::Financial] {
        comp[c as usize] = clamp100(100.0 - penalty[c as usize]);
    }
    let score = clamp100(comp.iter().zip(w.iter()).map(|(c, w)| c * w).sum::<f64>() / wsum);

    // --- hard triggers ---
    let a = &cfg.alerts;
    let hard = if acc.is_cancelled() {
        None
    } else if a.failed_payments > 0 && m.unpaid_failures >= a.failed_payments {
        Some(HardTrigger::PaymentFailures)
    } else if a.overdue_days > 0 && m.days_overdue >= a.overdue_days {
        Some(HardTrigger::Overdue)
    } else if m.urgent_open
        && score < sc.bands.healthy_at
        && sv.last_nps.is_some_and(|(s, d)| s <= 6 && day - d <= 90)
    {
        Some(HardTrigger::DetractorUrgent)
    } else if a.silent_days > 0 && silent_days >= a.silent_days as f64 {
        Some(HardTrigger::Silent)
    } else if a.renewal_warning_days > 0
        && m.days_to_renewal
            .is_some_and(|d| d <= a.renewal_warning_days as i64)
        && score < sc.bands.at_risk_below + 2.0 * sc.bands.hysteresis
    {
        Some(HardTrigger::RenewalAtRisk)
    } else {
        None
    };

    Evaluation {
        score,
        components: comp,
        values: v,
        impacts,
        measures: m,
        hard,
    }
}

/// The score of an account at every reference value, for a scorecard.
pub fn base_score(sc: &Scorecard) -> f64 {
    let w = sc.weights.as_array();
    let wsum: f64 = w.iter().sum();
    let mut comp = [0.0f64; 6];
    comp[Component::Support as usize] = 100.0;
    comp[Component::Financial as usize] = 100.0;
    for fac in Factor::ALL {
        if let Form::Share(a, r) = fac.form() {
            comp[fac.component() as usize] += a * r;
        }
    }
    comp.iter().zip(w.iter()).map(|(c, w)| c * w).sum::<f64>() / wsum
}

/// The next band, with hysteresis (docs/MODEL.md, "Bands").
pub fn next_band(prev: Option<Band>, score: f64, hard: bool, sc: &Scorecard) -> Band {
    if hard {
        return Band::AtRisk;
    }
    let b = sc.bands;
    match prev {
        None => {
            if score < b.at_risk_below {
                Band::AtRisk
            } else if score >= b.healthy_at {
                Band::Healthy
            } else {
                Band::Neutral
            }
        }
        Some(Band::AtRisk) => {
            if score < b.at_risk_below + b.hysteresis {
                Band::AtRisk
            } else if score >= b.healthy_at {
                Band::Healthy
            } else {
                Band::Neutral
            }
        }
        Some(Band::Neutral) => {
            if score < b.at_risk_below {
                Band::AtRisk
            } else if score >= b.healthy_at {
                Band::Healthy
            } else {
                Band::Neutral
            }
        }
        Some(Band::Healthy) => {
            if score < b.at_risk_below {
                Band::AtRisk
            } else if score < b.healthy_at - b.hysteresis {
                Band::Neutral
            } else {
                Band::Healthy
            }
        }
    }
}

fn pct_change(recent: f64, prior: f64) -> f64 {
    100.0 * (recent / prior - 1.0)
}

fn updown(p: f64) -> &'static str {
    if p < 0.0 {
        "down"
    } else {
        "up"
    }
}

/// "s" unless `n` is 1 (for "1 ticket", "2 tickets").
pub fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The plain sentence for a factor.
pub fn detail(fac: Factor, m: &Measures) -> String {
    match fac {
        Factor::UsageRecency => match m.days_since_activity {
            None => "no product usage seen yet".into(),
            Some(d) => format!("last product usage {:.0} days ago", d.floor()),
        },
        Factor::UsageTrend => {
            if m.activity_prior == 0 {
                "no usage in the prior 4 weeks to compare with".into()
            } else {
                let p = pct_change(m.activity_recent as f64, m.activity_prior as f64);
                format!(
                    "product usage {} {:.0}% vs the prior 4 weeks ({} vs {})",
                    updown(p),
                    p.abs(),
                    m.activity_recent,
                    m.activity_prior
                )
            }
        }
        Factor::UsageMomentum => {
            if m.momentum_prior <= 0.0 {
                "no usage in weeks 3–6 back to compare with".into()
            } else {
                let p = pct_change(m.momentum_recent, m.momentum_prior);
                format!(
                    "product usage in the last 2 weeks {} {:.0}% vs the 4 weeks before",
                    updown(p),
                    p.abs()
                )
            }
        }
        Factor::ActiveUsersTrend => {
            if m.wau_prior <= 0.0 {
                "no active users in the prior 4 weeks to compare with".into()
            } else {
                let p = pct_change(m.wau_recent, m.wau_prior);
                format!(
                    "active users {} {:.0}% vs the prior 4 weeks ({:.1} vs {:.1} per week)",
                    updown(p),
                    p.abs(),
                    m.wau_recent,
                    m.wau_prior
                )
            }
        }
        Factor::UserStickiness => {
            if m.active_users_28d == 0 {
                "no active users in 28 days".into()
            } else {
                format!(
                    "{} of {} user{} active in the last 28 days {} also active in the last 7",
                    m.active_users_7d,
                    m.active_users_28d,
                    plural(m.active_users_28d as u64),
                    if m.active_users_7d == 1 {
                        "was"
                    } else {
                        "were"
                    }
                )
            }
        }
        Factor::SeatUtilisation => {
            if m.seats == 0 {
                "no licensed seats known".into()
            } else {
                format!(
                    "{} of {} licensed seats active in 28 days ({:.0}%)",
                    m.active_users_28d,
                    m.seats,
                    100.0 * m.active_users_28d as f64 / m.seats as f64
                )
            }
        }
        Factor::FeatureBreadth => format!("{} distinct features used in 28 days", m.features_28d),
        Factor::OpenTickets => format!(
            "{} open ticket{}{}",
            m.open_tickets,
            if m.open_tickets == 1 { "" } else { "s" },
            if m.urgent_open {
                ", one or more urgent"
            } else {
                ""
            }
        ),
        Factor::Escalations => format!(
            "{} escalation{} in 4 weeks",
            m.escalations_4w,
            plural(m.escalations_4w as u64)
        ),
        Factor::Reopens => format!(
            "{} reopened ticket{} in 4 weeks",
            m.reopens_4w,
            plural(m.reopens_4w as u64)
        ),
        Factor::TicketVolume => match m.ticket_baseline_4w {
            Some(b) => format!(
                "{} ticket{} in 4 weeks vs a usual {:.1}",
                m.tickets_4w,
                plural(m.tickets_4w as u64),
                b
            ),
            None => "ticket baseline not yet established".into(),
        },
        Factor::ResolutionTime => format!(
            "tickets take {:.0} hours to resolve on average",
            m.resolve_hours
        ),
        Factor::TicketCsat => format!("ticket CSAT averages {:.1} of 5", m.ticket_csat),
        Factor::FailedPayments => {
            format!(
                "{} failed payment{} not yet recovered",
                m.unpaid_failures,
                plural(m.unpaid_failures as u64)
            )
        }
        Factor::Overdue => format!("invoice {} days overdue", m.days_overdue),
        Factor::MrrChange => {
            let p = pct_change(m.mrr_now as f64, m.mrr_90d.max(1) as f64);
            format!("MRR {} {:.0}% in 90 days", updown(p), p.abs())
        }
        Factor::Cancelled => "subscription cancelled".into(),
        Factor::Nps => match m.last_nps {
            Some(s) => format!(
                "latest NPS {}; weighted score {:.1} from {} answer{}",
                s,
                m.nps_mean,
                m.nps_answers,
                plural(m.nps_answers as u64)
            ),
            None => "no NPS answers yet".into(),
        },
        Factor::Csat => format!("survey CSAT averages {:.1} of 5", m.csat_mean),
        Factor::Ces => format!(
            "customer effort averages {:.1} of 7 (7 = easiest)",
            m.ces_mean
        ),
        Factor::Onboarding => format!("{} of 4 onboarding milestones reached", m.onboarding_done),
    }
}

/// The top drivers: factors with |impact| ≥ 0.5 points, largest first
/// (ties by factor order), at most `max`.
pub fn drivers(ev: &Evaluation, max: usize) -> Vec<super::signal::Driver> {
    let mut idx: Vec<usize> = (0..FACTORS)
        .filter(|&i| ev.impacts[i].abs() >= 0.5)
        .collect();
    by_impact(ev, &mut idx);
    idx.truncate(max);
    idx.into_iter().map(|i| driver(ev, i)).collect()
}

/// Sorts factor indices largest |impact| first, ties by factor order.
fn by_impact(ev: &Evaluation, idx: &mut [usize]) {
    idx.sort_by(|&a, &b| {
        ev.impacts[b]
            .abs()
            .total_cmp(&ev.impacts[a].abs())
            .then(a.cmp(&b))
    });
}

/// Factor `i` of `ev` as a driver: its impact and its sentence.
fn driver(ev: &Evaluation, i: usize) -> super::signal::Driver {
    let fac = Factor::ALL[i];
    super::signal::Driver {
        factor: fac.name(),
        impact: round1(ev.impacts[i]),
        detail: detail(fac, &ev.measures),
    }
}

/// [`drivers`] of an alert raised by the hard trigger `hard`: the
/// trigger's own factors ([`HardTrigger::factors`]) are added after the
/// top `max` when those leave them out — with a smaller impact than every
/// driver before them, so the list stays largest first — so that an alert
/// always says why it was raised ("detractor_with_urgent_ticket" with the
/// NPS answer and the open tickets, even when usage moved the score more).
pub fn trigger_drivers(
    ev: &Evaluation,
    max: usize,
    hard: HardTrigger,
) -> Vec<super::signal::Driver> {
    let mut out = drivers(ev, max);
    let mut missing: Vec<usize> = hard
        .factors()
        .iter()
        .filter(|f| out.iter().all(|d| d.factor != f.name()))
        .map(|&f| f as usize)
        .collect();
    by_impact(ev, &mut missing);
    out.extend(missing.into_iter().map(|i| driver(ev, i)));
    out
}

/// Rounds to one decimal (outputs carry one decimal).
pub fn round1(x: f64) -> f64 {
    let r = (x * 10.0).round() / 10.0;
    if r == 0.0 {
        0.0
    } else {
        r
    }
}
