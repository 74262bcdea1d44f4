//! The internal event type every decoder produces (SPEC §1), already
//! validated: a value of [`Event`] always satisfies the contract.

use std::borrow::Cow;

use super::time::Ts;

/// One validated input event. Strings borrow from the decoded record where
/// they can, so decoding allocates little.
#[derive(Debug, Clone, PartialEq)]
pub struct Event<'a> {
    pub id: Cow<'a, str>,
    pub account_id: Cow<'a, str>,
    pub time: Ts,
    pub kind: EventKind<'a>,
}

impl Event<'_> {
    /// The SPEC name of the event's type, e.g. `usage.login`.
    pub fn type_name(&self) -> &'static str {
        self.kind.type_name()
    }

    pub fn into_owned(self) -> Event<'static> {
        Event {
            id: Cow::Owned(self.id.into_owned()),
            account_id: Cow::Owned(self.account_id.into_owned()),
            time: self.time,
            kind: self.kind.into_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    Low,
    Normal,
    High,
    Urgent,
}

impl Priority {
    pub const ALL: [Priority; 4] = [
        Priority::Low,
        Priority::Normal,
        Priority::High,
        Priority::Urgent,
    ];
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "low" => Priority::Low,
            "normal" => Priority::Normal,
            "high" => Priority::High,
            "urgent" => Priority::Urgent,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Urgent => "urgent",
        }
    }
    pub fn from_u8(v: u8) -> Self {
        match v {
            0 => Priority::Low,
            2 => Priority::High,
            3 => Priority::Urgent,
            _ => Priority::Normal,
        }
    }
}

/// Health band. Order is worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Band {
    AtRisk,
    #[default]
    Neutral,
    Healthy,
}

impl Band {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "healthy" => Band::Healthy,
            "neutral" => Band::Neutral,
            "at_risk" => Band::AtRisk,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Band::Healthy => "healthy",
            Band::Neutral => "neutral",
            Band::AtRisk => "at_risk",
        }
    }
    pub fn to_u8(self) -> u8 {
        match self {
            Band::AtRisk => 0,
            Band::Neutral => 1,
            Band::Healthy => 2,
        }
    }
    pub fn from_u8(v: u8) -> Self {
        match v {
            0 => Band::AtRisk,
            2 => Band::Healthy,
            _ => Band::Neutral,
        }
    }
}

/// A CSM's verdict on an alert (`alert.feedback`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    Useful,
    FalsePositive,
    AlreadyKnown,
}

impl Verdict {
    pub const ALL: [Verdict; 3] = [
        Verdict::Useful,
        Verdict::FalsePositive,
        Verdict::AlreadyKnown,
    ];
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "useful" => Verdict::Useful,
            "false_positive" => Verdict::FalsePositive,
            "already_known" => Verdict::AlreadyKnown,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Useful => "useful",
            Verdict::FalsePositive => "false_positive",
            Verdict::AlreadyKnown => "already_known",
        }
    }
}

/// What happened, with the fields of its type (SPEC §1).
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind<'a> {
    Login {
        user_id: Cow<'a, str>,
    },
    Feature {
        user_id: Cow<'a, str>,
        feature: Cow<'a, str>,
        count: u32,
    },
    TicketOpened {
        ticket_id: Cow<'a, str>,
        priority: Priority,
    },
    TicketEscalated {
        ticket_id: Cow<'a, str>,
    },
    TicketResolved {
        ticket_id: Cow<'a, str>,
        csat: Option<u8>,
    },
    TicketReopened {
        ticket_id: Cow<'a, str>,
    },
    SubscriptionStarted {
        plan: Cow<'a, str>,
        mrr_cents: u64,
        seats: u32,
        renews_at: Option<Ts>,
        currency: Cow<'a, str>,
    },
    SubscriptionChanged {
        plan: Cow<'a, str>,
        mrr_cents: u64,
        seats: u32,
    },
    SubscriptionRenewed {
        renews_at: Option<Ts>,
        mrr_cents: Option<u64>,
    },
    SubscriptionCancelled {
        reason: Option<Cow<'a, str>>,
    },
    InvoicePaid {
        invoice_id: Cow<'a, str>,
        amount_cents: u64,
    },
    InvoicePaymentFailed {
        invoice_id: Cow<'a, str>,
        amount_cents: u64,
        reason: Option<Cow<'a, str>>,
    },
    InvoiceOverdue {
        invoice_id: Cow<'a, str>,
        amount_cents: u64,
        days_overdue: u32,
    },
    SurveyNps {
        score: u8,
        user_id: Option<Cow<'a, str>>,
        comment: Option<Cow<'a, str>>,
    },
    SurveyCsat {
        score: u8,
        user_id: Option<Cow<'a, str>>,
    },
    SurveyCes {
        score: u8,
        user_id: Option<Cow<'a, str>>,
    },
    AccountUpdated {
        name: Option<Cow<'a, str>>,
        segment: Option<Cow<'a, str>>,
        tier: Option<Cow<'a, str>>,
        owner: Option<Cow<'a, str>>,
        seats_licensed: Option<u32>,
    },
    Touchpoint {
        kind: Cow<'a, str>,
        note: Option<Cow<'a, str>>,
    },
    HealthOverride {
        band: Option<Band>,
        score: Option<u8>,
        reason: Cow<'a, str>,
        expires_at: Ts,
        by: Option<Cow<'a, str>>,
    },
    AlertFeedback {
        alert_id: Cow<'a, str>,
        verdict: Verdict,
        by: Option<Cow<'a, str>>,
    },
}

/// Every SPEC event type name, in SPEC order.
pub const TYPE_NAMES: [&str; 20] = [
    "usage.login",
    "usage.feature",
    "ticket.opened",
    "ticket.escalated",
    "ticket.resolved",
    "ticket.reopened",
    "subscription.started",
    "subscription.changed",
    "subscription.renewed",
    "subscription.cancelled",
    "invoice.paid",
    "invoice.payment_failed",
    "invoice.overdue",
    "survey.nps",
    "survey.csat",
    "survey.ces",
    "account.updated",
    "cs.touchpoint",
    "health.override",
    "alert.feedback",
];

fn own(c: Cow<'_, str>) -> Cow<'static, str> {
    Cow::Owned(c.into_owned())
}

fn own_opt(c: Option<Cow<'_, str>>) -> Option<Cow<'static, str>> {
    c.map(own)
}

impl EventKind<'_> {
    /// Index into [`TYPE_NAMES`].
    pub fn type_index(&self) -> usize {
        use EventKind::*;
        match self {
            Login { .. } => 0,
            Feature { .. } => 1,
            TicketOpened { .. } => 2,
            TicketEscalated { .. } => 3,
            TicketResolved { .. } => 4,
            TicketReopened { .. } => 5,
            SubscriptionStarted { .. } => 6,
            SubscriptionChanged { .. } => 7,
            SubscriptionRenewed { .. } => 8,
            SubscriptionCancelled { .. } => 9,
            InvoicePaid { .. } => 10,
            InvoicePaymentFailed { .. } => 11,
            InvoiceOverdue { .. } => 12,
            SurveyNps { .. } => 13,
            SurveyCsat { .. } => 14,
            SurveyCes { .. } => 15,
            AccountUpdated { .. } => 16,
            Touchpoint { .. } => 17,
            HealthOverride { .. } => 18,
            AlertFeedback { .. } => 19,
        }
    }

    pub fn type_name(&self) -> &'static str {
        TYPE_NAMES[self.type_index()]
    }

    pub fn into_owned(self) -> EventKind<'static> {
        use EventKind::*;
        match self {
            Login { user_id } => Login {
                user_id: own(user_id),
            },
            Feature {
                user_id,
                feature,
                count,
            } => Feature {
                user_id: own(user_id),
                feature: own(feature),
                count,
            },
            TicketOpened {
                ticket_id,
                priority,
            } => TicketOpened {
                ticket_id: own(ticket_id),
                priority,
            },
            TicketEscalated { ticket_id } => TicketEscalated {
                ticket_id: own(ticket_id),
            },
            TicketResolved { ticket_id, csat } => TicketResolved {
                ticket_id: own(ticket_id),
                csat,
            },
            TicketReopened { ticket_id } => TicketReopened {
                ticket_id: own(ticket_id),
            },
            SubscriptionStarted {
                plan,
                mrr_cents,
                seats,
                renews_at,
                currency,
            } => SubscriptionStarted {
                plan: own(plan),
                mrr_cents,
                seats,
                renews_at,
                currency: own(currency),
            },
            SubscriptionChanged {
                plan,
                mrr_cents,
                seats,
            } => SubscriptionChanged {
                plan: own(plan),
                mrr_cents,
                seats,
            },
            SubscriptionRenewed {
                renews_at,
                mrr_cents,
            } => SubscriptionRenewed {
                renews_at,
                mrr_cents,
            },
            SubscriptionCancelled { reason } => SubscriptionCancelled {
                reason: own_opt(reason),
            },
            InvoicePaid {
                invoice_id,
                amount_cents,
            } => InvoicePaid {
                invoice_id: own(invoice_id),
                amount_cents,
            },
            InvoicePaymentFailed {
                invoice_id,
                amount_cents,
                reason,
            } => InvoicePaymentFailed {
                invoice_id: own(invoice_id),
                amount_cents,
                reason: own_opt(reason),
            },
            InvoiceOverdue {
                invoice_id,
                amount_cents,
                days_overdue,
            } => InvoiceOverdue {
                invoice_id: own(invoice_id),
                amount_cents,
                days_overdue,
            },
            SurveyNps {
                score,
                user_id,
                comment,
            } => SurveyNps {
                score,
                user_id: own_opt(user_id),
                comment: own_opt(comment),
            },
            SurveyCsat { score, user_id } => SurveyCsat {
                score,
                user_id: own_opt(user_id),
            },
            SurveyCes { score, user_id } => SurveyCes {
                score,
                user_id: own_opt(user_id),
            },
            AccountUpdated {
                name,
                segment,
                tier,
                owner,
                seats_licensed,
            } => AccountUpdated {
                name: own_opt(name),
                segment: own_opt(segment),
                tier: own_opt(tier),
                owner: own_opt(owner),
                seats_licensed,
            },
            Touchpoint { kind, note } => Touchpoint {
                kind: own(kind),
                note: own_opt(note),
            },
            HealthOverride {
                band,
                score,
                reason,
                expires_at,
                by,
            } => HealthOverride {
                band,
                score,
                reason: own(reason),
                expires_at,
                by: own_opt(by),
            },
            AlertFeedback {
                alert_id,
                verdict,
                by,
            } => AlertFeedback {
                alert_id: own(alert_id),
                verdict,
                by: own_opt(by),
            },
        }
    }
}
