//! `vitals simulate`: synthetic customers with personas, as a SPEC event
//! log sorted by time, plus the ground truth (who churns or expands, when).
//!
//! Personas (share of accounts by default):
//! - `steady` (29%): stable usage, a ticket now and then, pays on time;
//! - `silent_churner` (12%): usage and active users decay for 5–10 weeks,
//!   then the subscription is cancelled;
//! - `support_heavy` (12%): many tickets, escalations and reopens; 45%
//!   of them churn after their support experience worsens;
//! - `payment_trouble` (8%): failed payments and overdue invoices; half
//!   recover, half churn;
//! - `expanding` (13%): adds users until it presses on its seats, then
//!   buys more seats (the expansion in the ground truth);
//! - `promoter` (13%): high NPS, broad usage;
//! - `detractor` (13%): low NPS and sagging usage; 35% churn.
//!
//! Noise, so the task is not trivial: healthy accounts take two-week
//! holidays with little usage, some churn comes with no warning at all
//! (3% of steady accounts cancel out of the blue), and each account has its
//! own size, habits and feature set.
//!
//! Everything is drawn from a ChaCha8 stream seeded by `--seed` and the
//! account number, so the same flags give the same file byte for byte.

use std::borrow::Cow;
use std::io::Write;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::codec::json;
use crate::codec::timefmt;
use crate::core::event::{Event, EventKind, Priority};
use crate::core::time::{Ts, MS_PER_DAY};

/// Simulation parameters.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub accounts: u32,
    pub days: u32,
    pub seed: u64,
    /// Event time of day 0 (ms).
    pub start: Ts,
    /// Persona weights, in [`Persona::ALL`] order.
    pub mix: [f64; 7],
    /// Share of accounts that join during the first 60% of the period;
    /// the others exist from the first week. 0 keeps the population fixed
    /// (a soak that should show flat memory).
    pub joining: f64,
}

/// 2025-01-06T00:00:00Z, a Monday.
pub const DEFAULT_START: Ts = 1_736_121_600_000;

pub const DEFAULT_MIX: [f64; 7] = [0.29, 0.12, 0.12, 0.08, 0.13, 0.13, 0.13];

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            accounts: 1000,
            days: 365,
            seed: 42,
            start: DEFAULT_START,
            mix: DEFAULT_MIX,
            joining: 0.3,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Persona {
    Steady,
    SilentChurner,
    SupportHeavy,
    PaymentTrouble,
    Expanding,
    Promoter,
    Detractor,
}

impl Persona {
    pub const ALL: [Persona; 7] = [
        Persona::Steady,
        Persona::SilentChurner,
        Persona::SupportHeavy,
        Persona::PaymentTrouble,
        Persona::Expanding,
        Persona::Promoter,
        Persona::Detractor,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Persona::Steady => "steady",
            Persona::SilentChurner => "silent_churner",
            Persona::SupportHeavy => "support_heavy",
            Persona::PaymentTrouble => "payment_trouble",
            Persona::Expanding => "expanding",
            Persona::Promoter => "promoter",
            Persona::Detractor => "detractor",
        }
    }
}

/// One account's ground truth.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Truth {
    pub account_id: String,
    pub persona: Persona,
    pub segment: &'static str,
    pub seats: u32,
    pub started_at: String,
    /// When the subscription is cancelled, if it is within the simulation.
    pub churns_at: Option<String>,
    /// When trouble (decay, support pain, payment failures) begins.
    pub trouble_from: Option<String>,
    /// When the account buys more seats.
    pub expands_at: Option<String>,
    /// Churn without any warning sign.
    pub sudden: bool,
}

struct Acct {
    id: String,
    persona: Persona,
    segment: &'static str,
    seats: u32,
    users: u32,
    start: u32,
    churn: Option<u32>,
    trouble: Option<u32>,
    expand: Option<u32>,
    sudden: bool,
    features: Vec<&'static str>,
    activity: f64,
    holiday: Option<u32>,
    mrr: u64,
    churner: bool,
    rng: ChaCha8Rng,
    seq: u64,
    tickets: u32,
    invoices: u32,
    open: Vec<(u32, String)>,
    failing: Option<String>,
    renews: u32,
}

const FEATURES: [&str; 14] = [
    "dashboards",
    "reports",
    "exports",
    "alerts",
    "api",
    "integrations",
    "sso",
    "automation",
    "workflows",
    "comments",
    "search",
    "mobile",
    "billing",
    "audit_log",
];

const OWNERS: [&str; 6] = ["ana", "ben", "chloe", "dev", "emma", "farid"];

fn pick_persona(r: f64, mix: &[f64; 7]) -> Persona {
    let total: f64 = mix.iter().sum();
    let mut acc = 0.0;
    for (p, w) in Persona::ALL.iter().zip(mix) {
        acc += w / total;
        if r < acc {
            return *p;
        }
    }
    Persona::Steady
}

impl Acct {
    fn new(i: u32, o: &SimOptions) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(
            o.seed ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(i as u64 + 1)),
        );
        let persona = pick_persona(rng.random::<f64>(), &o.mix);
        let (segment, seats) = match rng.random::<f64>() {
            x if x < 0.6 => ("smb", rng.random_range(3..=10)),
            x if x < 0.9 => ("mid_market", rng.random_range(10..=25)),
            _ => ("enterprise", rng.random_range(25..=60)),
        };
        let days = o.days;
        // Most accounts exist from the start; the rest join over the first 60%.
        let start = if rng.random::<f64>() < 1.0 - o.joining {
            rng.random_range(0..7u32.min(days).max(1))
        } else {
            rng.random_range(0..((days * 6 / 10).max(1)))
        };
        let life_start = start + 60;
        let churn_window = |rng: &mut ChaCha8Rng| {
            (life_start + 30 < days).then(|| rng.random_range(life_start + 30..days + 60))
        };
        let mut churner = false;
        let mut sudden = false;
        let mut trouble = None;
        let mut expand = None;
        let churn = match persona {
            Persona::SilentChurner => {
                churner = true;
                churn_window(&mut rng)
            }
            Persona::SupportHeavy => {
                churner = rng.random::<f64>() < 0.45;
                if churner {
                    churn_window(&mut rng)
                } else {
                    None
                }
            }
            Persona::PaymentTrouble => {
                churner = rng.random::<f64>() < 0.5;
                if churner {
                    churn_window(&mut rng)
                } else {
                    None
                }
            }
            Persona::Detractor => {
                churner = rng.random::<f64>() < 0.35;
                if churner {
                    churn_window(&mut rng)
                } else {
                    None
                }
            }
            Persona::Steady => {
                if rng.random::<f64>() < 0.03 {
                    churner = true;
                    sudden = true;
                    churn_window(&mut rng)
                } else {
                    None
                }
            }
            _ => None,
        };
        let churn = churn.filter(|&c| c < days);
        if let Some(c) = churn {
            if !sudden {
                let lead = match persona {
                    Persona::SilentChurner => rng.random_range(45..=90),
                    Persona::SupportHeavy => rng.random_range(40..=80),
                    Persona::PaymentTrouble => rng.random_range(35..=60),
                    _ => rng.random_range(50..=90),
                };
                trouble = Some(c.saturating_sub(lead).max(start + 14));
            }
        } else if persona == Persona::PaymentTrouble && start + 60 < days {
            // Recovering payment trouble: one episode that ends well.
            trouble = Some(rng.random_range(start + 40..days.max(start + 41)));
        } else if persona == Persona::SupportHeavy || persona == Persona::Detractor {
            trouble = None;
        }
        let users = match persona {
            Persona::Expanding => (seats * 6 / 10).max(2),
            Persona::Promoter => (seats * 9 / 10).max(2),
            _ => (seats * rng.random_range(55..=85) / 100).max(2),
        };
        if persona == Persona::Expanding && start + 40 < days {
            expand = Some(rng.random_range(start + 40..days.max(start + 41)));
        }
        let breadth = match persona {
            Persona::Promoter | Persona::Expanding => rng.random_range(8..=12),
            Persona::Detractor | Persona::SupportHeavy => rng.random_range(3..=7),
            _ => rng.random_range(5..=10),
        };
        let mut features: Vec<&'static str> = FEATURES.to_vec();
        for k in 0..features.len() {
            let j = rng.random_range(k..features.len());
            features.swap(k, j);
        }
        features.truncate(breadth);
        let holiday = (persona != Persona::SilentChurner && rng.random::<f64>() < 0.35)
            .then(|| rng.random_range(start + 30..(start + 31).max(days)));
        let per_seat = match segment {
            "smb" => 3_000,
            "mid_market" => 4_500,
            _ => 6_000,
        };
        Acct {
            id: format!("acct-{i:06}"),
            persona,
            segment,
            seats,
            users,
            start,
            churn,
            trouble,
            expand,
            sudden,
            features,
            activity: rng.random_range(0.35..0.6),
            holiday,
            mrr: seats as u64 * per_seat,
            churner,
            rng,
            seq: 0,
            tickets: 0,
            invoices: 0,
            open: Vec::new(),
            failing: None,
            renews: start + 365,
        }
    }

    fn truth(&self, o: &SimOptions) -> Truth {
        let t = |d: u32| timefmt::format(o.start + d as Ts * MS_PER_DAY);
        Truth {
            account_id: self.id.clone(),
            persona: self.persona,
            segment: self.segment,
            seats: self.seats,
            started_at: t(self.start),
            churns_at: self.churn.map(t),
            trouble_from: self.trouble.map(t),
            expands_at: self.expand.map(t),
            sudden: self.sudden,
        }
    }

    /// Progress (0..1) of the trouble leading to churn on `day`.
    fn decline(&self, day: u32) -> f64 {
        match (self.trouble, self.churn) {
            (Some(t), Some(c)) if day >= t && c > t => ((day - t) as f64 / (c - t) as f64).min(1.0),
            _ => 0.0,
        }
    }

    fn ev(&mut self, day_start: Ts, kind: EventKind<'static>, out: &mut Vec<(Ts, Event<'static>)>) {
        let ms = self.rng.random_range(8 * 3_600_000..20 * 3_600_000);
        self.push_at(day_start + ms, kind, out);
    }

    fn push_at(&mut self, time: Ts, kind: EventKind<'static>, out: &mut Vec<(Ts, Event<'static>)>) {
        self.seq += 1;
        out.push((
            time,
            Event {
                id: Cow::Owned(format!("{}-{}", self.id, self.seq)),
                account_id: Cow::Owned(self.id.clone()),
                time,
                kind,
            },
        ));
    }

    /// The account's events for `day`.
    fn day(&mut self, day: u32, o: &SimOptions, out: &mut Vec<(Ts, Event<'static>)>) {
        if day < self.start || self.churn.is_some_and(|c| day > c) {
            return;
        }
        let t0 = o.start + day as Ts * MS_PER_DAY;
        let c = |s: &str| Cow::Owned(s.to_string());
        if day == self.start {
            self.ev(
                t0,
                EventKind::SubscriptionStarted {
                    plan: c(match self.segment {
                        "smb" => "team",
                        "mid_market" => "business",
                        _ => "enterprise",
                    }),
                    mrr_cents: self.mrr,
                    seats: self.seats,
                    renews_at: Some(o.start + self.renews as Ts * MS_PER_DAY),
                    currency: c("USD"),
                },
                out,
            );
            let owner = OWNERS[self.rng.random_range(0..OWNERS.len())];
            self.ev(
                t0,
                EventKind::AccountUpdated {
                    name: Some(c(&format!("Customer {}", self.id))),
                    segment: Some(c(self.segment)),
                    tier: Some(c(if self.segment == "enterprise" {
                        "gold"
                    } else {
                        "standard"
                    })),
                    owner: Some(c(owner)),
                    seats_licensed: Some(self.seats),
                },
                out,
            );
        }
        let age = day - self.start;
        if age == 3 && self.rng.random::<f64>() < 0.75 {
            self.ev(
                t0,
                EventKind::Touchpoint {
                    kind: c("onboarding_call"),
                    note: None,
                },
                out,
            );
        }
        if Some(day) == self.churn {
            self.ev(
                t0,
                EventKind::SubscriptionCancelled {
                    reason: Some(c(if self.sudden { "budget" } else { "not_using" })),
                },
                out,
            );
            return;
        }
        let decline = self.decline(day);
        let wd = day % 7; // day 0 is a Monday
        let weekday = wd < 5;

        // --- usage ---
        let mut level = self.activity * if weekday { 1.0 } else { 0.15 };
        match self.persona {
            Persona::SilentChurner => level *= (1.0 - decline).powi(2),
            Persona::Detractor if self.churner => level *= 1.0 - 0.7 * decline,
            Persona::SupportHeavy if self.churner => level *= 1.0 - 0.5 * decline,
            Persona::PaymentTrouble if self.churner => level *= 1.0 - 0.4 * decline,
            Persona::Detractor => level *= 0.85,
            _ => {}
        }
        if let Some(h) = self.holiday {
            if day >= h && day < h + 14 {
                level *= 0.25;
            }
        }
        // Onboarding ramp.
        if age < 21 {
            level *= 0.4 + 0.6 * age as f64 / 21.0;
        }
        if self.persona == Persona::Expanding && age % 9 == 0 && age > 0 {
            let cap = if self.expand.is_some_and(|e| day >= e) {
                self.seats * 2
            } else {
                self.seats + 2
            };
            if self.users < cap {
                self.users += 1;
            }
        }
        let active_users = if self.persona == Persona::SilentChurner {
            ((self.users as f64) * (1.0 - 0.8 * decline)).ceil() as u32
        } else {
            self.users
        };
        for u in 0..active_users.max(1) {
            if self.rng.random::<f64>() < level {
                let uid = format!("u{u}");
                self.ev(t0, EventKind::Login { user_id: c(&uid) }, out);
                if self.rng.random::<f64>() < 0.6 {
                    let nf = (self.features.len() as f64 * (1.0 - 0.6 * decline))
                        .ceil()
                        .max(1.0) as usize;
                    let f = self.features[self.rng.random_range(0..nf)];
                    let count = self.rng.random_range(1..=5);
                    self.ev(
                        t0,
                        EventKind::Feature {
                            user_id: c(&uid),
                            feature: c(f),
                            count,
                        },
                        out,
                    );
                }
            }
        }

        // --- support ---
        let mut rate = match self.persona {
            Persona::SupportHeavy => 0.12,
            Persona::Detractor => 0.05,
            _ => 0.025,
        } * (self.seats as f64 / 15.0).sqrt();
        if self.persona == Persona::SupportHeavy && self.churner {
            rate *= 1.0 + 2.5 * decline;
        }
        if self.rng.random::<f64>() < rate {
            self.tickets += 1;
            let tid = format!("{}-t{}", self.id, self.tickets);
            let urgent_p = if decline > 0.0 { 0.2 } else { 0.05 };
            let r = self.rng.random::<f64>();
            let priority = if r < urgent_p {
                Priority::Urgent
            } else if r < urgent_p + 0.2 {
                Priority::High
            } else if r < 0.85 {
                Priority::Normal
            } else {
                Priority::Low
            };
            self.ev(
                t0,
                EventKind::TicketOpened {
                    ticket_id: c(&tid),
                    priority,
                },
                out,
            );
            let slow = if self.persona == Persona::SupportHeavy {
                3
            } else {
                1
            };
            let close = day + self.rng.random_range(1..=3) * slow;
            self.open.push((close, tid.clone()));
            let esc_p = if self.persona == Persona::SupportHeavy {
                0.15 + 0.3 * decline
            } else {
                0.05
            };
            if self.rng.random::<f64>() < esc_p {
                self.ev(t0, EventKind::TicketEscalated { ticket_id: c(&tid) }, out);
            }
        }
        let mut still = Vec::new();
        for (close, tid) in std::mem::take(&mut self.open) {
            if close == day {
                let unhappy =
                    self.persona == Persona::SupportHeavy || self.persona == Persona::Detractor;
                let csat = if self.rng.random::<f64>() < 0.5 {
                    Some(if unhappy {
                        self.rng.random_range(1..=4)
                    } else {
                        self.rng.random_range(3..=5)
                    })
                } else {
                    None
                };
                self.ev(
                    t0,
                    EventKind::TicketResolved {
                        ticket_id: c(&tid),
                        csat,
                    },
                    out,
                );
                let reopen_p = if self.persona == Persona::SupportHeavy {
                    0.1 + 0.3 * decline
                } else {
                    0.03
                };
                if self.rng.random::<f64>() < reopen_p {
                    self.ev(
                        t0 + 12 * 3_600_000,
                        EventKind::TicketReopened { ticket_id: c(&tid) },
                        out,
                    );
                    still.push((day + self.rng.random_range(2..=5), tid));
                }
            } else {
                still.push((close, tid));
            }
        }
        self.open = still;

        // --- billing: monthly invoices ---
        if age % 30 == 0 {
            self.invoices += 1;
            let inv = format!("{}-i{}", self.id, self.invoices);
            // Churners fail every invoice from the trouble on; the others
            // have one failed invoice that the retry recovers.
            let troubled = self.persona == Persona::PaymentTrouble
                && self.trouble.is_some_and(|t| day >= t)
                && (self.churner || self.trouble.is_some_and(|t| day < t + 30));
            if troubled {
                self.ev(
                    t0,
                    EventKind::InvoicePaymentFailed {
                        invoice_id: c(&inv),
                        amount_cents: self.mrr,
                        reason: Some(c("card_declined")),
                    },
                    out,
                );
                self.failing = Some(inv);
            } else {
                if let Some(f) = self.failing.take() {
                    self.ev(
                        t0,
                        EventKind::InvoicePaid {
                            invoice_id: c(&f),
                            amount_cents: self.mrr,
                        },
                        out,
                    );
                }
                self.ev(
                    t0,
                    EventKind::InvoicePaid {
                        invoice_id: c(&inv),
                        amount_cents: self.mrr,
                    },
                    out,
                );
            }
        } else if let Some(f) = self.failing.clone() {
            if age % 30 == 4 && !self.churner {
                // Dunning works: the retry goes through.
                self.ev(
                    t0,
                    EventKind::InvoicePaid {
                        invoice_id: c(&f),
                        amount_cents: self.mrr,
                    },
                    out,
                );
                self.failing = None;
            } else if age % 30 == 4 {
                self.ev(
                    t0,
                    EventKind::InvoicePaymentFailed {
                        invoice_id: c(&f),
                        amount_cents: self.mrr,
                        reason: Some(c("retry_declined")),
                    },
                    out,
                );
            }
            if age % 30 == 15 {
                self.ev(
                    t0,
                    EventKind::InvoiceOverdue {
                        invoice_id: c(&f),
                        amount_cents: self.mrr,
                        days_overdue: 15,
                    },
                    out,
                );
            }
        }

        // --- expansion ---
        if Some(day) == self.expand {
            self.seats = self.seats * 3 / 2 + 1;
            self.mrr = self.mrr * 3 / 2;
            self.ev(
                t0,
                EventKind::SubscriptionChanged {
                    plan: c("business_plus"),
                    mrr_cents: self.mrr,
                    seats: self.seats,
                },
                out,
            );
        }
        if day == self.renews {
            self.renews += 365;
            self.ev(
                t0,
                EventKind::SubscriptionRenewed {
                    renews_at: Some(o.start + self.renews as Ts * MS_PER_DAY),
                    mrr_cents: Some(self.mrr),
                },
                out,
            );
        }

        // --- surveys: NPS about every 90 days, CSAT/CES now and then ---
        if age % 90 == 45 && self.rng.random::<f64>() < 0.6 {
            let base: f64 = match self.persona {
                Persona::Promoter => 9.3,
                Persona::Detractor => 4.5,
                Persona::SupportHeavy => 6.0,
                Persona::Expanding => 8.5,
                _ => 7.8,
            };
            let s = base - 4.0 * decline + self.rng.random_range(-1.5..1.5);
            let score = s.round().clamp(0.0, 10.0) as u8;
            self.ev(
                t0,
                EventKind::SurveyNps {
                    score,
                    user_id: Some(c("u0")),
                    comment: None,
                },
                out,
            );
        }
        if age % 60 == 20 && self.rng.random::<f64>() < 0.4 {
            let base = if matches!(self.persona, Persona::Detractor | Persona::SupportHeavy) {
                2.8
            } else {
                4.2
            };
            let s = (base - 1.5 * decline + self.rng.random_range(-1.0..1.0))
                .round()
                .clamp(1.0, 5.0) as u8;
            self.ev(
                t0,
                EventKind::SurveyCsat {
                    score: s,
                    user_id: None,
                },
                out,
            );
        }
        if age % 60 == 40 && self.rng.random::<f64>() < 0.3 {
            let base = if self.persona == Persona::SupportHeavy {
                3.5
            } else {
                5.5
            };
            let s = (base - 2.0 * decline + self.rng.random_range(-1.0..1.0))
                .round()
                .clamp(1.0, 7.0) as u8;
            self.ev(
                t0,
                EventKind::SurveyCes {
                    score: s,
                    user_id: None,
                },
                out,
            );
        }
        // --- CS touchpoints ---
        if self.segment == "enterprise" && age % 90 == 80 {
            self.ev(
                t0,
                EventKind::Touchpoint {
                    kind: c("qbr"),
                    note: None,
                },
                out,
            );
        } else if self.rng.random::<f64>() < 0.004 {
            self.ev(
                t0,
                EventKind::Touchpoint {
                    kind: c("outreach"),
                    note: None,
                },
                out,
            );
        }
    }
}

/// Writes the simulated log to `events` (JSONL sorted by time) and the
/// truth to `truth` (JSONL, one account per line). Returns the event count.
pub fn simulate(
    o: &SimOptions,
    events: &mut dyn Write,
    truth: Option<&mut dyn Write>,
) -> std::io::Result<u64> {
    let mut accts: Vec<Acct> = (0..o.accounts).map(|i| Acct::new(i, o)).collect();
    if let Some(t) = truth {
        for a in &accts {
            serde_json::to_writer(&mut *t, &a.truth(o))?;
            t.write_all(b"\n")?;
        }
    }
    let mut n = 0u64;
    let mut day_events: Vec<(Ts, Event<'static>)> = Vec::new();
    for day in 0..o.days {
        day_events.clear();
        for a in &mut accts {
            a.day(day, o, &mut day_events);
        }
        // Sort by time; ties keep generation order (stable sort).
        day_events.sort_by_key(|e| e.0);
        for (_, ev) in &day_events {
            events.write_all(&json::encode(ev))?;
            events.write_all(b"\n")?;
            n += 1;
        }
    }
    Ok(n)
}

/// Generates the events in memory (for tests and benchmarks).
pub fn generate(o: &SimOptions) -> Vec<Event<'static>> {
    stream(o).collect()
}

/// The same events as [`generate`], lazily: one day of events is in
/// memory at a time, so a long simulation can be published (the load
/// generator, the soak test) without holding it all.
pub fn stream(o: &SimOptions) -> impl Iterator<Item = Event<'static>> + Send + 'static {
    let o = o.clone();
    let mut accts: Vec<Acct> = (0..o.accounts).map(|i| Acct::new(i, &o)).collect();
    let mut day = 0;
    let mut today = Vec::new().into_iter();
    std::iter::from_fn(move || loop {
        if let Some(e) = today.next() {
            return Some(e);
        }
        if day >= o.days {
            return None;
        }
        let mut day_events = Vec::new();
        for a in &mut accts {
            a.day(day, &o, &mut day_events);
        }
        day_events.sort_by_key(|e| e.0);
        today = day_events
            .into_iter()
            .map(|e| e.1)
            .collect::<Vec<_>>()
            .into_iter();
        day += 1;
    })
}

/// The ground truth without generating events.
pub fn truth(o: &SimOptions) -> Vec<Truth> {
    (0..o.accounts).map(|i| Acct::new(i, o).truth(o)).collect()
}

/// A running simulation, for callers that fold as they generate (the
/// memory benchmark): `day` appends one day of one account's events.
pub struct Simulation {
    opts: SimOptions,
    accts: Vec<Acct>,
}

impl Simulation {
    pub fn new(o: &SimOptions) -> Self {
        Simulation {
            opts: o.clone(),
            accts: (0..o.accounts).map(|i| Acct::new(i, o)).collect(),
        }
    }

    pub fn accounts(&self) -> usize {
        self.accts.len()
    }

    /// Appends account `i`'s events of `day` to `out` (in generation order).
    pub fn account_day(&mut self, i: usize, day: u32, out: &mut Vec<Event<'static>>) {
        let mut tmp = Vec::new();
        let o = self.opts.clone();
        self.accts[i].day(day, &o, &mut tmp);
        tmp.sort_by_key(|e| e.0);
        out.extend(tmp.into_iter().map(|e| e.1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `joining` is the share of accounts that start after the first week;
    /// 0 gives a fixed population (every account there in week one).
    #[test]
    fn joining_sets_the_share_of_late_accounts() {
        let week = timefmt::format(DEFAULT_START + 7 * MS_PER_DAY);
        let late = |joining: f64| {
            truth(&SimOptions {
                accounts: 2000,
                joining,
                ..Default::default()
            })
            .iter()
            .filter(|t| t.started_at >= week)
            .count()
        };
        assert_eq!(late(0.0), 0);
        // ~30% of 2,000 join over 219 days; a few of them in week one.
        let default = late(0.3);
        assert!((500..700).contains(&default), "{default}");
        assert!(late(1.0) > 1900);
    }
}
