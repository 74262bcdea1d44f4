//! JSON input records (the default encoding).

use crate::core::Event;

use super::raw::{DecodeError, RawEvent};
use super::MAX_RECORD_BYTES;

/// Decodes and validates one JSON record. Strings borrow from `bytes`
/// where they have no escapes.
pub fn decode(bytes: &[u8]) -> Result<Event<'_>, DecodeError> {
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(DecodeError::TooLarge {
            size: bytes.len(),
            limit: MAX_RECORD_BYTES,
        });
    }
    // An event is a JSON object (serde would also read a positional array),
    // and all of it must be UTF-8, ignored fields included.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(DecodeError::Json("an event must be a JSON object".into()));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|e| DecodeError::Json(format!("invalid UTF-8 at byte {}", e.valid_up_to())))?;
    // From `&str`, serde_json skips its own UTF-8 checks (done above, once).
    let mut raw: RawEvent<'_> =
        serde_json::from_str(text).map_err(|e| DecodeError::Json(e.to_string()))?;
    raw.validate()
}

/// An event as the SPEC JSON object (the same shape `decode` reads).
#[derive(serde::Serialize, Default)]
struct Out<'a> {
    id: &'a str,
    account_id: &'a str,
    #[serde(rename = "type")]
    type_: &'a str,
    time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    feature: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ticket_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    csat: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    plan: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mrr_cents: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seats: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    renews_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    currency: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    invoice_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    amount_cents: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    days_overdue: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    score: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    comment: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    segment: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tier: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seats_licensed: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    band: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    by: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    alert_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    verdict: Option<&'a str>,
}

/// Encodes an event as one line of SPEC JSON (no trailing newline).
pub fn encode(ev: &Event<'_>) -> Vec<u8> {
    use super::timefmt::format as ts;
    use crate::core::EventKind as K;
    let mut o = Out {
        id: &ev.id,
        account_id: &ev.account_id,
        type_: ev.type_name(),
        time: ts(ev.time),
        ..Default::default()
    };
    match &ev.kind {
        K::Login { user_id } => o.user_id = Some(user_id),
        K::Feature {
            user_id,
            feature,
            count,
        } => {
            o.user_id = Some(user_id);
            o.feature = Some(feature);
            o.count = Some(*count);
        }
        K::TicketOpened {
            ticket_id,
            priority,
        } => {
            o.ticket_id = Some(ticket_id);
            o.priority = Some(priority.as_str());
        }
        K::TicketEscalated { ticket_id } | K::TicketReopened { ticket_id } => {
            o.ticket_id = Some(ticket_id)
        }
        K::TicketResolved { ticket_id, csat } => {
            o.ticket_id = Some(ticket_id);
            o.csat = *csat;
        }
        K::SubscriptionStarted {
            plan,
            mrr_cents,
            seats,
            renews_at,
            currency,
        } => {
            o.plan = Some(plan);
            o.mrr_cents = Some(*mrr_cents);
            o.seats = Some(*seats);
            o.renews_at = renews_at.map(ts);
            o.currency = Some(currency);
        }
        K::SubscriptionChanged {
            plan,
            mrr_cents,
            seats,
        } => {
            o.plan = Some(plan);
            o.mrr_cents = Some(*mrr_cents);
            o.seats = Some(*seats);
        }
        K::SubscriptionRenewed {
            renews_at,
            mrr_cents,
        } => {
            o.renews_at = renews_at.map(ts);
            o.mrr_cents = *mrr_cents;
        }
        K::SubscriptionCancelled { reason } => o.reason = reason.as_deref(),
        K::InvoicePaid {
            invoice_id,
            amount_cents,
        } => {
            o.invoice_id = Some(invoice_id);
            o.amount_cents = Some(*amount_cents);
        }
        K::InvoicePaymentFailed {
            invoice_id,
            amount_cents,
            reason,
        } => {
            o.invoice_id = Some(invoice_id);
            o.amount_cents = Some(*amount_cents);
            o.reason = reason.as_deref();
        }
        K::InvoiceOverdue {
            invoice_id,
            amount_cents,
            days_overdue,
        } => {
            o.invoice_id = Some(invoice_id);
            o.amount_cents = Some(*amount_cents);
            o.days_overdue = Some(*days_overdue);
        }
        K::SurveyNps {
            score,
            user_id,
            comment,
        } => {
            o.score = Some(*score);
            o.user_id = user_id.as_deref();
            o.comment = comment.as_deref();
        }
        K::SurveyCsat { score, user_id } | K::SurveyCes { score, user_id } => {
            o.score = Some(*score);
            o.user_id = user_id.as_deref();
        }
        K::AccountUpdated {
            name,
            segment,
            tier,
            owner,
            seats_licensed,
        } => {
            o.name = name.as_deref();
            o.segment = segment.as_deref();
            o.tier = tier.as_deref();
            o.owner = owner.as_deref();
            o.seats_licensed = *seats_licensed;
        }
        K::Touchpoint { kind, note } => {
            o.kind = Some(kind);
            o.note = note.as_deref();
        }
        K::HealthOverride {
            band,
            score,
            reason,
            expires_at,
            by,
        } => {
            o.band = band.map(|b| b.as_str());
            o.score = *score;
            o.reason = Some(reason);
            o.expires_at = Some(ts(*expires_at));
            o.by = by.as_deref();
        }
        K::AlertFeedback {
            alert_id,
            verdict,
            by,
        } => {
            o.alert_id = Some(alert_id);
            o.verdict = Some(verdict.as_str());
            o.by = by.as_deref();
        }
    }
    serde_json::to_vec(&o).expect("events always serialize")
}
