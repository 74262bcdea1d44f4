//! The shape both encodings decode into before validation, and the
//! validation itself: SPEC §1 rules, one typed error naming the field and
//! the rule for every way a record can break them.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::core::event::{Band, Event, EventKind, Priority, Verdict};
use crate::core::Ts;

use super::timefmt;

/// Longest `id` / `account_id` (characters).
pub const MAX_ID_CHARS: usize = 128;
/// Longest other identifier or label (user, feature, ticket, plan, …).
pub const MAX_LABEL_CHARS: usize = 256;
/// Longest free text (comment, note, reason).
pub const MAX_TEXT_CHARS: usize = 4096;

/// Why a record is invalid. The `Display` text is the DLQ reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {size} bytes exceeds the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("invalid protobuf: {0}")]
    Protobuf(String),
    #[error("unknown type `{0}`")]
    UnknownType(String),
    /// A field breaks a rule: `context` is the event type (or `event` for
    /// the envelope).
    #[error("{context}: {field} {problem}")]
    Field {
        context: String,
        field: &'static str,
        problem: String,
    },
}

/// Any JSON value, kept only as far as validation needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Val<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    /// Integers above `i64::MAX`.
    Big,
    Float(f64),
    Bool(bool),
    Null,
    Array,
    Object,
}

impl Val<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Val::Str(_) => "a string",
            Val::Int(_) | Val::Big => "an integer",
            Val::Float(_) => "a number with a fraction",
            Val::Bool(_) => "a boolean",
            Val::Null => "null",
            Val::Array => "an array",
            Val::Object => "an object",
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Val<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Val<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Val::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Val::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Val::Str(Cow::Owned(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Val::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(i64::try_from(v).map_or(Val::Big, Val::Int))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Val::Float(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Val::Bool(v))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Val::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Val::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                Val::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Val::Array)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Val::Object)
            }
        }
        d.deserialize_any(V)
    }
}

/// An input record's fields before validation. Unknown fields are ignored.
#[derive(Debug, Default, Deserialize)]
pub struct RawEvent<'a> {
    #[serde(borrow)]
    pub id: Option<Val<'a>>,
    #[serde(borrow)]
    pub account_id: Option<Val<'a>>,
    #[serde(borrow, rename = "type")]
    pub type_: Option<Val<'a>>,
    #[serde(borrow)]
    pub time: Option<Val<'a>>,
    /// Protobuf only: the time as epoch milliseconds.
    #[serde(skip)]
    pub time_ms: Option<i64>,
    #[serde(borrow)]
    pub user_id: Option<Val<'a>>,
    #[serde(borrow)]
    pub feature: Option<Val<'a>>,
    #[serde(borrow)]
    pub count: Option<Val<'a>>,
    #[serde(borrow)]
    pub ticket_id: Option<Val<'a>>,
    #[serde(borrow)]
    pub priority: Option<Val<'a>>,
    #[serde(borrow)]
    pub csat: Option<Val<'a>>,
    #[serde(borrow)]
    pub plan: Option<Val<'a>>,
    #[serde(borrow)]
    pub mrr_cents: Option<Val<'a>>,
    #[serde(borrow)]
    pub seats: Option<Val<'a>>,
    #[serde(borrow)]
    pub renews_at: Option<Val<'a>>,
    #[serde(borrow)]
    pub currency: Option<Val<'a>>,
    #[serde(borrow)]
    pub reason: Option<Val<'a>>,
    #[serde(borrow)]
    pub invoice_id: Option<Val<'a>>,
    #[serde(borrow)]
    pub amount_cents: Option<Val<'a>>,
    #[serde(borrow)]
    pub days_overdue: Option<Val<'a>>,
    #[serde(borrow)]
    pub score: Option<Val<'a>>,
    #[serde(borrow)]
    pub comment: Option<Val<'a>>,
    #[serde(borrow)]
    pub name: Option<Val<'a>>,
    #[serde(borrow)]
    pub segment: Option<Val<'a>>,
    #[serde(borrow)]
    pub tier: Option<Val<'a>>,
    #[serde(borrow)]
    pub owner: Option<Val<'a>>,
    #[serde(borrow)]
    pub seats_licensed: Option<Val<'a>>,
    #[serde(borrow)]
    pub kind: Option<Val<'a>>,
    #[serde(borrow)]
    pub note: Option<Val<'a>>,
    #[serde(borrow)]
    pub band: Option<Val<'a>>,
    #[serde(borrow)]
    pub expires_at: Option<Val<'a>>,
    #[serde(borrow)]
    pub by: Option<Val<'a>>,
    #[serde(borrow)]
    pub alert_id: Option<Val<'a>>,
    #[serde(borrow)]
    pub verdict: Option<Val<'a>>,
}

struct Ctx<'c> {
    context: &'c str,
}

impl Ctx<'_> {
    fn err(&self, field: &'static str, problem: impl Into<String>) -> DecodeError {
        DecodeError::Field {
            context: self.context.to_string(),
            field,
            problem: problem.into(),
        }
    }

    /// Optional free text: absent, null or empty → None.
    fn opt_text<'a>(
        &self,
        field: &'static str,
        v: Option<Val<'a>>,
    ) -> Result<Option<Cow<'a, str>>, DecodeError> {
        match v {
            Some(Val::Str(s)) if s.is_empty() => Ok(None),
            v => self.opt_str(field, v, MAX_TEXT_CHARS),
        }
    }

    /// An optional string: absent or null → None.
    fn opt_str<'a>(
        &self,
        field: &'static str,
        v: Option<Val<'a>>,
        max: usize,
    ) -> Result<Option<Cow<'a, str>>, DecodeError> {
        match v {
            None | Some(Val::Null) => Ok(None),
            Some(Val::Str(s)) => {
                if s.is_empty() {
                    return Err(self.err(field, "must not be empty"));
                }
                if s.len() > max {
                    let n = s.chars().count();
                    if n > max {
                        return Err(
                            self.err(field, format!("is {n} characters, over the limit of {max}"))
                        );
                    }
                }
                Ok(Some(s))
            }
            Some(other) => Err(self.err(field, format!("must be a string, got {}", other.kind()))),
        }
    }

    fn req_str<'a>(
        &self,
        field: &'static str,
        v: Option<Val<'a>>,
        max: usize,
    ) -> Result<Cow<'a, str>, DecodeError> {
        self.opt_str(field, v, max)?
            .ok_or_else(|| self.err(field, "is required"))
    }

    fn opt_int(
        &self,
        field: &'static str,
        v: Option<Val<'_>>,
        min: i64,
        max: i64,
    ) -> Result<Option<i64>, DecodeError> {
        match v {
            None | Some(Val::Null) => Ok(None),
            Some(Val::Int(i)) => {
                if i < min || i > max {
                    Err(self.err(field, format!("{i} out of range {min}..={max}")))
                } else {
                    Ok(Some(i))
                }
            }
            Some(Val::Big) => Err(self.err(field, format!("out of range {min}..={max}"))),
            Some(other) => {
                Err(self.err(field, format!("must be an integer, got {}", other.kind())))
            }
        }
    }

    fn req_int(
        &self,
        field: &'static str,
        v: Option<Val<'_>>,
        min: i64,
        max: i64,
    ) -> Result<i64, DecodeError> {
        self.opt_int(field, v, min, max)?
            .ok_or_else(|| self.err(field, "is required"))
    }

    fn opt_time(&self, field: &'static str, v: Option<Val<'_>>) -> Result<Option<Ts>, DecodeError> {
        match self.opt_str(field, v, 64)? {
            None => Ok(None),
            Some(s) => timefmt::parse(&s).map(Some).ok_or_else(|| {
                self.err(
                    field,
                    format!("{s:?} is not an RFC 3339 timestamp between 1970 and 2200"),
                )
            }),
        }
    }

    fn enum_of<T>(
        &self,
        field: &'static str,
        s: Option<Cow<'_, str>>,
        parse: impl Fn(&str) -> Option<T>,
        allowed: &str,
    ) -> Result<Option<T>, DecodeError> {
        match s {
            None => Ok(None),
            Some(s) => parse(&s)
                .map(Some)
                .ok_or_else(|| self.err(field, format!("{s:?} is not one of {allowed}"))),
        }
    }
}

const MAX_MONEY: i64 = i64::MAX / 4;

impl<'a> RawEvent<'a> {
    /// Validates the record against SPEC §1, taking the fields out of
    /// `self` (no copy of this large struct).
    pub fn validate(&mut self) -> Result<Event<'a>, DecodeError> {
        let env = Ctx { context: "event" };
        let ty = env.req_str("type", self.type_.take(), 64)?;
        let id = env.req_str("id", self.id.take(), MAX_ID_CHARS)?;
        let account_id = env.req_str("account_id", self.account_id.take(), MAX_ID_CHARS)?;
        let time = match (self.time.take(), self.time_ms) {
            (_, Some(ms)) => {
                if (timefmt::MIN_TS..timefmt::MAX_TS).contains(&ms) {
                    ms
                } else {
                    return Err(env.err("time_unix_ms", format!("{ms} is outside 1970..2200")));
                }
            }
            (t, None) => env
                .opt_time("time", t)?
                .ok_or_else(|| env.err("time", "is required"))?,
        };
        let c = Ctx { context: &ty };
        let l = MAX_LABEL_CHARS;
        let t = MAX_TEXT_CHARS;
        let kind = match ty.as_ref() {
            "usage.login" => EventKind::Login {
                user_id: c.req_str("user_id", self.user_id.take(), l)?,
            },
            "usage.feature" => EventKind::Feature {
                user_id: c.req_str("user_id", self.user_id.take(), l)?,
                feature: c.req_str("feature", self.feature.take(), l)?,
                count: c
                    .opt_int("count", self.count.take(), 1, u32::MAX as i64)?
                    .unwrap_or(1) as u32,
            },
            "ticket.opened" => {
                let p = c.req_str("priority", self.priority.take(), 16)?;
                EventKind::TicketOpened {
                    ticket_id: c.req_str("ticket_id", self.ticket_id.take(), l)?,
                    priority: c
                        .enum_of(
                            "priority",
                            Some(p),
                            Priority::parse,
                            "low, normal, high, urgent",
                        )?
                        .expect("present"),
                }
            }
            "ticket.escalated" => EventKind::TicketEscalated {
                ticket_id: c.req_str("ticket_id", self.ticket_id.take(), l)?,
            },
            "ticket.resolved" => EventKind::TicketResolved {
                ticket_id: c.req_str("ticket_id", self.ticket_id.take(), l)?,
                csat: c.opt_int("csat", self.csat.take(), 1, 5)?.map(|v| v as u8),
            },
            "ticket.reopened" => EventKind::TicketReopened {
                ticket_id: c.req_str("ticket_id", self.ticket_id.take(), l)?,
            },
            "subscription.started" => {
                let currency = c.opt_str("currency", self.currency.take(), 3)?;
                if let Some(cur) = &currency {
                    if cur.len() != 3 || !cur.bytes().all(|b| b.is_ascii_uppercase()) {
                        return Err(c.err(
                            "currency",
                            format!("{cur:?} is not an ISO 4217 code (three capital letters)"),
                        ));
                    }
                }
                EventKind::SubscriptionStarted {
                    plan: c.req_str("plan", self.plan.take(), l)?,
                    mrr_cents: c.req_int("mrr_cents", self.mrr_cents.take(), 0, MAX_MONEY)? as u64,
                    seats: c.req_int("seats", self.seats.take(), 0, u32::MAX as i64)? as u32,
                    renews_at: c.opt_time("renews_at", self.renews_at.take())?,
                    currency: currency.unwrap_or(Cow::Borrowed("USD")),
                }
            }
            "subscription.changed" => EventKind::SubscriptionChanged {
                plan: c.req_str("plan", self.plan.take(), l)?,
                mrr_cents: c.req_int("mrr_cents", self.mrr_cents.take(), 0, MAX_MONEY)? as u64,
                seats: c.req_int("seats", self.seats.take(), 0, u32::MAX as i64)? as u32,
            },
            "subscription.renewed" => EventKind::SubscriptionRenewed {
                renews_at: c.opt_time("renews_at", self.renews_at.take())?,
                mrr_cents: c
                    .opt_int("mrr_cents", self.mrr_cents.take(), 0, MAX_MONEY)?
                    .map(|v| v as u64),
            },
            "subscription.cancelled" => EventKind::SubscriptionCancelled {
                reason: c.opt_text("reason", self.reason.take())?,
            },
            "invoice.paid" => EventKind::InvoicePaid {
                invoice_id: c.req_str("invoice_id", self.invoice_id.take(), l)?,
                amount_cents: c.req_int("amount_cents", self.amount_cents.take(), 0, MAX_MONEY)?
                    as u64,
            },
            "invoice.payment_failed" => EventKind::InvoicePaymentFailed {
                invoice_id: c.req_str("invoice_id", self.invoice_id.take(), l)?,
                amount_cents: c.req_int("amount_cents", self.amount_cents.take(), 0, MAX_MONEY)?
                    as u64,
                reason: c.opt_text("reason", self.reason.take())?,
            },
            "invoice.overdue" => EventKind::InvoiceOverdue {
                invoice_id: c.req_str("invoice_id", self.invoice_id.take(), l)?,
                amount_cents: c.req_int("amount_cents", self.amount_cents.take(), 0, MAX_MONEY)?
                    as u64,
                days_overdue: c.req_int("days_overdue", self.days_overdue.take(), 0, 36_500)?
                    as u32,
            },
            "survey.nps" => EventKind::SurveyNps {
                score: c.req_int("score", self.score.take(), 0, 10)? as u8,
                user_id: c.opt_str("user_id", self.user_id.take(), l)?,
                comment: c.opt_text("comment", self.comment.take())?,
            },
            "survey.csat" => EventKind::SurveyCsat {
                score: c.req_int("score", self.score.take(), 1, 5)? as u8,
                user_id: c.opt_str("user_id", self.user_id.take(), l)?,
            },
            "survey.ces" => EventKind::SurveyCes {
                score: c.req_int("score", self.score.take(), 1, 7)? as u8,
                user_id: c.opt_str("user_id", self.user_id.take(), l)?,
            },
            "account.updated" => EventKind::AccountUpdated {
                name: c.opt_str("name", self.name.take(), l)?,
                segment: c.opt_str("segment", self.segment.take(), l)?,
                tier: c.opt_str("tier", self.tier.take(), l)?,
                owner: c.opt_str("owner", self.owner.take(), l)?,
                seats_licensed: c
                    .opt_int(
                        "seats_licensed",
                        self.seats_licensed.take(),
                        0,
                        u32::MAX as i64,
                    )?
                    .map(|v| v as u32),
            },
            "cs.touchpoint" => EventKind::Touchpoint {
                kind: c.req_str("kind", self.kind.take(), l)?,
                note: c.opt_text("note", self.note.take())?,
            },
            "health.override" => {
                let band = c.enum_of(
                    "band",
                    c.opt_str("band", self.band.take(), 16)?,
                    Band::parse,
                    "healthy, neutral, at_risk",
                )?;
                let score = c
                    .opt_int("score", self.score.take(), 0, 100)?
                    .map(|v| v as u8);
                if band.is_none() && score.is_none() {
                    return Err(c.err("band", "or score is required"));
                }
                let expires_at = c
                    .opt_time("expires_at", self.expires_at.take())?
                    .ok_or_else(|| c.err("expires_at", "is required"))?;
                if expires_at <= time {
                    return Err(c.err("expires_at", "must be after time"));
                }
                EventKind::HealthOverride {
                    band,
                    score,
                    reason: c.req_str("reason", self.reason.take(), t)?,
                    expires_at,
                    by: c.opt_str("by", self.by.take(), l)?,
                }
            }
            "alert.feedback" => {
                let v = c.req_str("verdict", self.verdict.take(), 32)?;
                EventKind::AlertFeedback {
                    alert_id: c.req_str("alert_id", self.alert_id.take(), l)?,
                    verdict: c
                        .enum_of(
                            "verdict",
                            Some(v),
                            Verdict::parse,
                            "useful, false_positive, already_known",
                        )?
                        .expect("present"),
                    by: c.opt_str("by", self.by.take(), l)?,
                }
            }
            other => return Err(DecodeError::UnknownType(truncate(other, 64))),
        };
        Ok(Event {
            id,
            account_id,
            time,
            kind,
        })
    }
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}
