//! Protobuf input records (`proto/vitals/v1/events.proto`): the flat
//! message maps field for field onto the JSON shape, so validation is
//! shared.

use std::borrow::Cow;

use prost::Message;

use crate::core::Event;

use super::pb;
use super::raw::{DecodeError, RawEvent, Val};
use super::MAX_RECORD_BYTES;

fn s(v: &Option<String>) -> Option<Val<'_>> {
    v.as_deref().map(|s| Val::Str(Cow::Borrowed(s)))
}

fn i(v: Option<i64>) -> Option<Val<'static>> {
    v.map(Val::Int)
}

/// Required proto3 strings are empty when absent.
fn req(v: &str) -> Option<Val<'_>> {
    (!v.is_empty()).then_some(Val::Str(Cow::Borrowed(v)))
}

/// The JSON-shaped view of a decoded message.
pub fn raw_of(m: &pb::Event) -> RawEvent<'_> {
    let (time, time_ms) = match &m.when {
        Some(pb::event::When::Time(t)) => (req(t), None),
        Some(pb::event::When::TimeUnixMs(ms)) => (None, Some(*ms)),
        None => (None, None),
    };
    RawEvent {
        id: req(&m.id),
        account_id: req(&m.account_id),
        type_: req(&m.r#type),
        time,
        time_ms,
        user_id: s(&m.user_id),
        feature: s(&m.feature),
        count: i(m.count),
        ticket_id: s(&m.ticket_id),
        priority: s(&m.priority),
        csat: i(m.csat),
        plan: s(&m.plan),
        mrr_cents: i(m.mrr_cents),
        seats: i(m.seats),
        renews_at: s(&m.renews_at),
        currency: s(&m.currency),
        reason: s(&m.reason),
        invoice_id: s(&m.invoice_id),
        amount_cents: i(m.amount_cents),
        days_overdue: i(m.days_overdue),
        score: i(m.score),
        comment: s(&m.comment),
        name: s(&m.name),
        segment: s(&m.segment),
        tier: s(&m.tier),
        owner: s(&m.owner),
        seats_licensed: i(m.seats_licensed),
        kind: s(&m.kind),
        note: s(&m.note),
        band: s(&m.band),
        expires_at: s(&m.expires_at),
        by: s(&m.by),
        alert_id: s(&m.alert_id),
        verdict: s(&m.verdict),
    }
}

/// Decodes and validates one Protobuf record.
pub fn decode(bytes: &[u8]) -> Result<Event<'static>, DecodeError> {
    decode_borrowed(bytes).map(Event::into_owned)
}

/// Decodes and validates one Protobuf record, borrowing strings from
/// `bytes` (no allocation for an event without escapes — Protobuf has none).
///
/// This reads the wire format directly instead of building prost's owned
/// message first; a property test checks it accepts and rejects exactly
/// what `prost` + [`raw_of`] do.
pub fn decode_borrowed(bytes: &[u8]) -> Result<Event<'_>, DecodeError> {
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(DecodeError::TooLarge {
            size: bytes.len(),
            limit: MAX_RECORD_BYTES,
        });
    }
    // Filled in place: `RawEvent` is ~0.7 KB, and returning it by value
    // cost two copies per event (memcpy ~6% of protobuf decode + fold).
    let mut raw = RawEvent::default();
    read_raw(bytes, &mut raw).map_err(DecodeError::Protobuf)?;
    raw.validate()
}

/// The prost path: decode the owned message, then validate. Kept as the
/// reference the direct reader is tested against.
pub fn decode_via_prost(bytes: &[u8]) -> Result<Event<'static>, DecodeError> {
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(DecodeError::TooLarge {
            size: bytes.len(),
            limit: MAX_RECORD_BYTES,
        });
    }
    let m = pb::Event::decode(bytes).map_err(|e| DecodeError::Protobuf(e.to_string()))?;
    raw_of(&m).validate().map(Event::into_owned)
}

/// Decodes and calls `f` with the event, which borrows from `bytes`.
/// (`_buf` is no longer needed and kept for callers.)
pub fn decode_with<R>(
    bytes: &[u8],
    _buf: &mut pb::Event,
    f: impl FnOnce(Event<'_>) -> R,
) -> Result<R, DecodeError> {
    Ok(f(decode_borrowed(bytes)?))
}

/// Reads the flat `vitals.v1.Event` message into the JSON-shaped view `r`
/// (a default one).
fn read_raw<'a>(mut buf: &'a [u8], r: &mut RawEvent<'a>) -> Result<(), String> {
    use prost::encoding::{decode_key, decode_varint, WireType};
    let err = |e: prost::DecodeError| e.to_string();
    while !buf.is_empty() {
        let (tag, wt) = decode_key(&mut buf).map_err(err)?;
        let want = |w: WireType| -> Result<(), String> {
            if wt == w {
                Ok(())
            } else {
                Err(format!(
                    "field {tag}: invalid wire type {wt:?}, expected {w:?}"
                ))
            }
        };
        // Known fields: strings are length-delimited, integers varints.
        let string_slot: Option<&mut Option<Val<'_>>> = match tag {
            1 => Some(&mut r.id),
            2 => Some(&mut r.account_id),
            3 => Some(&mut r.type_),
            4 => Some(&mut r.time),
            10 => Some(&mut r.user_id),
            11 => Some(&mut r.feature),
            20 => Some(&mut r.ticket_id),
            21 => Some(&mut r.priority),
            30 => Some(&mut r.plan),
            33 => Some(&mut r.renews_at),
            34 => Some(&mut r.currency),
            35 => Some(&mut r.reason),
            40 => Some(&mut r.invoice_id),
            51 => Some(&mut r.comment),
            60 => Some(&mut r.name),
            61 => Some(&mut r.segment),
            62 => Some(&mut r.tier),
            63 => Some(&mut r.owner),
            70 => Some(&mut r.kind),
            71 => Some(&mut r.note),
            80 => Some(&mut r.band),
            81 => Some(&mut r.expires_at),
            82 => Some(&mut r.by),
            90 => Some(&mut r.alert_id),
            91 => Some(&mut r.verdict),
            _ => None,
        };
        if let Some(slot) = string_slot {
            want(WireType::LengthDelimited)?;
            let s = take_len(&mut buf)?;
            let s = utf8(s).ok_or_else(|| format!("field {tag}: string is not UTF-8"))?;
            // proto3 singular strings: empty means unset, as prost reads them
            // and as `raw_of` maps them; optional strings keep "".
            let required = matches!(tag, 1..=4);
            *slot = if required && s.is_empty() {
                None
            } else {
                Some(Val::Str(Cow::Borrowed(s)))
            };
            if tag == 4 {
                r.time_ms = None;
                if s.is_empty() {
                    // An empty `time` still selects the oneof case.
                    r.time = None;
                }
            }
            continue;
        }
        let int_slot: Option<&mut Option<Val<'_>>> = match tag {
            12 => Some(&mut r.count),
            22 => Some(&mut r.csat),
            31 => Some(&mut r.mrr_cents),
            32 => Some(&mut r.seats),
            41 => Some(&mut r.amount_cents),
            42 => Some(&mut r.days_overdue),
            50 => Some(&mut r.score),
            64 => Some(&mut r.seats_licensed),
            _ => None,
        };
        if let Some(slot) = int_slot {
            want(WireType::Varint)?;
            let v = decode_varint(&mut buf).map_err(err)? as i64;
            *slot = Some(Val::Int(v));
            continue;
        }
        if tag == 5 {
            want(WireType::Varint)?;
            r.time_ms = Some(decode_varint(&mut buf).map_err(err)? as i64);
            r.time = None;
            continue;
        }
        skip(&mut buf, tag, wt, 0)?;
    }
    Ok(())
}

/// `s` as a `str`, if it is UTF-8. Event strings are short and nearly
/// always ASCII (ids, names, enums), which `is_ascii` checks word by word
/// where `from_utf8` decodes its way through: 7% of Protobuf decode + fold
/// went to `from_utf8`.
fn utf8(s: &[u8]) -> Option<&str> {
    if s.is_ascii() {
        // SAFETY: every ASCII byte sequence is valid UTF-8.
        Some(unsafe { std::str::from_utf8_unchecked(s) })
    } else {
        std::str::from_utf8(s).ok()
    }
}

fn take_len<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], String> {
    let len = prost::encoding::decode_varint(buf).map_err(|e| e.to_string())?;
    if len > buf.len() as u64 {
        return Err("buffer underflow".into());
    }
    let (head, tail) = buf.split_at(len as usize);
    *buf = tail;
    Ok(head)
}

/// Skips an unknown field (groups included, nested at most 100 deep).
fn skip(
    buf: &mut &[u8],
    tag: u32,
    wt: prost::encoding::WireType,
    depth: u32,
) -> Result<(), String> {
    use prost::encoding::{decode_key, decode_varint, WireType};
    match wt {
        WireType::Varint => {
            decode_varint(buf).map_err(|e| e.to_string())?;
        }
        WireType::SixtyFourBit | WireType::ThirtyTwoBit => {
            let n = if wt == WireType::SixtyFourBit { 8 } else { 4 };
            if buf.len() < n {
                return Err("buffer underflow".into());
            }
            *buf = &buf[n..];
        }
        WireType::LengthDelimited => {
            take_len(buf)?;
        }
        WireType::StartGroup => {
            if depth >= 100 {
                return Err("recursion limit reached".into());
            }
            loop {
                if buf.is_empty() {
                    return Err("buffer underflow".into());
                }
                let (t, w) = decode_key(buf).map_err(|e| e.to_string())?;
                if w == WireType::EndGroup {
                    if t != tag {
                        return Err("unexpected end group tag".into());
                    }
                    break;
                }
                skip(buf, t, w, depth + 1)?;
            }
        }
        WireType::EndGroup => return Err("unexpected end group tag".into()),
    }
    Ok(())
}

/// Encodes an event as the Protobuf message (for producers and tests).
pub fn encode(ev: &Event<'_>) -> Vec<u8> {
    to_message(ev).encode_to_vec()
}

/// The Protobuf message for an event.
pub fn to_message(ev: &Event<'_>) -> pb::Event {
    use crate::core::EventKind as K;
    let mut m = pb::Event {
        id: ev.id.to_string(),
        account_id: ev.account_id.to_string(),
        r#type: ev.type_name().to_string(),
        when: Some(pb::event::When::TimeUnixMs(ev.time)),
        ..Default::default()
    };
    let o = |c: &Option<Cow<'_, str>>| c.as_ref().map(|c| c.to_string());
    match &ev.kind {
        K::Login { user_id } => m.user_id = Some(user_id.to_string()),
        K::Feature {
            user_id,
            feature,
            count,
        } => {
            m.user_id = Some(user_id.to_string());
            m.feature = Some(feature.to_string());
            m.count = Some(*count as i64);
        }
        K::TicketOpened {
            ticket_id,
            priority,
        } => {
            m.ticket_id = Some(ticket_id.to_string());
            m.priority = Some(priority.as_str().to_string());
        }
        K::TicketEscalated { ticket_id } | K::TicketReopened { ticket_id } => {
            m.ticket_id = Some(ticket_id.to_string())
        }
        K::TicketResolved { ticket_id, csat } => {
            m.ticket_id = Some(ticket_id.to_string());
            m.csat = csat.map(|c| c as i64);
        }
        K::SubscriptionStarted {
            plan,
            mrr_cents,
            seats,
            renews_at,
            currency,
        } => {
            m.plan = Some(plan.to_string());
            m.mrr_cents = Some(*mrr_cents as i64);
            m.seats = Some(*seats as i64);
            m.renews_at = renews_at.map(super::timefmt::format);
            m.currency = Some(currency.to_string());
        }
        K::SubscriptionChanged {
            plan,
            mrr_cents,
            seats,
        } => {
            m.plan = Some(plan.to_string());
            m.mrr_cents = Some(*mrr_cents as i64);
            m.seats = Some(*seats as i64);
        }
        K::SubscriptionRenewed {
            renews_at,
            mrr_cents,
        } => {
            m.renews_at = renews_at.map(super::timefmt::format);
            m.mrr_cents = mrr_cents.map(|v| v as i64);
        }
        K::SubscriptionCancelled { reason } => m.reason = o(reason),
        K::InvoicePaid {
            invoice_id,
            amount_cents,
        } => {
            m.invoice_id = Some(invoice_id.to_string());
            m.amount_cents = Some(*amount_cents as i64);
        }
        K::InvoicePaymentFailed {
            invoice_id,
            amount_cents,
            reason,
        } => {
            m.invoice_id = Some(invoice_id.to_string());
            m.amount_cents = Some(*amount_cents as i64);
            m.reason = o(reason);
        }
        K::InvoiceOverdue {
            invoice_id,
            amount_cents,
            days_overdue,
        } => {
            m.invoice_id = Some(invoice_id.to_string());
            m.amount_cents = Some(*amount_cents as i64);
            m.days_overdue = Some(*days_overdue as i64);
        }
        K::SurveyNps {
            score,
            user_id,
            comment,
        } => {
            m.score = Some(*score as i64);
            m.user_id = o(user_id);
            m.comment = o(comment);
        }
        K::SurveyCsat { score, user_id } | K::SurveyCes { score, user_id } => {
            m.score = Some(*score as i64);
            m.user_id = o(user_id);
        }
        K::AccountUpdated {
            name,
            segment,
            tier,
            owner,
            seats_licensed,
        } => {
            m.name = o(name);
            m.segment = o(segment);
            m.tier = o(tier);
            m.owner = o(owner);
            m.seats_licensed = seats_licensed.map(|v| v as i64);
        }
        K::Touchpoint { kind, note } => {
            m.kind = Some(kind.to_string());
            m.note = o(note);
        }
        K::HealthOverride {
            band,
            score,
            reason,
            expires_at,
            by,
        } => {
            m.band = band.map(|b| b.as_str().to_string());
            m.score = score.map(|s| s as i64);
            m.reason = Some(reason.to_string());
            m.expires_at = Some(super::timefmt::format(*expires_at));
            m.by = o(by);
        }
        K::AlertFeedback {
            alert_id,
            verdict,
            by,
        } => {
            m.alert_id = Some(alert_id.to_string());
            m.verdict = Some(verdict.as_str().to_string());
            m.by = o(by);
        }
    }
    m
}
