//! Input validation (SPEC §1): what a JSON or Protobuf record must look like
//! to become an [`Event`], and exactly how every other record is refused.
//!
//! Timestamps used below, in milliseconds since the epoch (checked by hand:
//! 2026-03-01 is day 20 513 after 1970-01-01, 20 513 × 86 400 = 1 772 323 200 s):
//!
//! - 2026-03-01T12:00:00Z = 1 772 366 400 000
//! - 2026-04-01T00:00:00Z = 1 775 001 600 000
//! - 2027-03-01T00:00:00Z = 1 803 859 200 000

use std::borrow::Cow;

use prost::Message;
use serde_json::{json, Value};

use vitals::codec::{self, json, pb, proto, DecodeError, Format, MAX_RECORD_BYTES};
use vitals::core::event::{Band, Priority, Verdict, TYPE_NAMES};
use vitals::core::{Event, EventKind};

/// 2026-03-01T12:00:00Z.
const T0: i64 = 1_772_366_400_000;
const TIME: &str = "2026-03-01T12:00:00Z";
/// 2026-04-01T00:00:00Z.
const APR1: i64 = 1_775_001_600_000;
const APR1_STR: &str = "2026-04-01T00:00:00Z";
/// 2027-03-01T00:00:00Z.
const RENEW: i64 = 1_803_859_200_000;
const RENEW_STR: &str = "2027-03-01T00:00:00Z";

// ---------------------------------------------------------------- helpers

/// A record of type `ty` with the standard envelope and `extra` fields.
fn rec(ty: &str, extra: Value) -> Value {
    let mut v = json!({
        "id": "ev-1",
        "account_id": "acme",
        "type": ty,
        "time": TIME,
    });
    let obj = v.as_object_mut().expect("object");
    for (k, x) in extra.as_object().expect("extra fields are an object") {
        obj.insert(k.clone(), x.clone());
    }
    v
}

/// `v` with `key` set to `val`.
fn set(v: &Value, key: &str, val: Value) -> Value {
    let mut v = v.clone();
    v.as_object_mut()
        .expect("object")
        .insert(key.to_string(), val);
    v
}

/// `v` without `key`.
fn without(v: &Value, key: &str) -> Value {
    let mut v = v.clone();
    v.as_object_mut().expect("object").remove(key);
    v
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("serialize")
}

fn decode_ok(v: &Value) -> Event<'static> {
    let b = bytes(v);
    match json::decode(&b) {
        Ok(ev) => ev.into_owned(),
        Err(e) => panic!("expected {v} to decode, got error: {e}"),
    }
}

fn decode_err_bytes(b: &[u8]) -> DecodeError {
    match json::decode(b) {
        Ok(ev) => panic!(
            "expected {:?} to be rejected, got {ev:?}",
            String::from_utf8_lossy(&b[..b.len().min(200)])
        ),
        Err(e) => e,
    }
}

fn decode_err(v: &Value) -> DecodeError {
    decode_err_bytes(&bytes(v))
}

/// The DLQ reason for `v`.
fn reason(v: &Value) -> String {
    decode_err(v).to_string()
}

/// Asserts `v` is rejected with a field error naming `context` and `field`.
#[track_caller]
fn assert_field_err(v: &Value, context: &str, field: &str) {
    match decode_err(v) {
        DecodeError::Field {
            context: c,
            field: f,
            ..
        } => assert_eq!(
            (c.as_str(), f),
            (context, field),
            "wrong field error for {v}"
        ),
        other => panic!("expected a field error on {context}.{field} for {v}, got {other:?}"),
    }
}

#[track_caller]
fn assert_json_err(b: &[u8]) {
    match decode_err_bytes(b) {
        DecodeError::Json(_) => {}
        other => panic!(
            "expected a JSON error for {:?}, got {other:?}",
            String::from_utf8_lossy(&b[..b.len().min(200)])
        ),
    }
}

fn s(x: &'static str) -> Cow<'static, str> {
    Cow::Borrowed(x)
}

/// The expected event with the standard envelope.
fn ev(kind: EventKind<'static>) -> Event<'static> {
    Event {
        id: s("ev-1"),
        account_id: s("acme"),
        time: T0,
        kind,
    }
}

/// Valid records with the event each must decode to: for every SPEC type a
/// full one (every optional field) and a minimal one (required fields only).
fn examples() -> Vec<(Value, Event<'static>)> {
    use EventKind as K;
    vec![
        // usage.login: no optional fields, so full = minimal.
        (
            rec("usage.login", json!({"user_id": "u-1"})),
            ev(K::Login { user_id: s("u-1") }),
        ),
        (
            rec(
                "usage.feature",
                json!({"user_id": "u-1", "feature": "reports.export", "count": 3}),
            ),
            ev(K::Feature {
                user_id: s("u-1"),
                feature: s("reports.export"),
                count: 3,
            }),
        ),
        (
            rec(
                "usage.feature",
                json!({"user_id": "u-1", "feature": "reports.export"}),
            ),
            ev(K::Feature {
                user_id: s("u-1"),
                feature: s("reports.export"),
                count: 1,
            }),
        ),
        (
            rec(
                "ticket.opened",
                json!({"ticket_id": "T-100", "priority": "urgent"}),
            ),
            ev(K::TicketOpened {
                ticket_id: s("T-100"),
                priority: Priority::Urgent,
            }),
        ),
        (
            rec("ticket.escalated", json!({"ticket_id": "T-100"})),
            ev(K::TicketEscalated {
                ticket_id: s("T-100"),
            }),
        ),
        (
            rec("ticket.resolved", json!({"ticket_id": "T-100", "csat": 4})),
            ev(K::TicketResolved {
                ticket_id: s("T-100"),
                csat: Some(4),
            }),
        ),
        (
            rec("ticket.resolved", json!({"ticket_id": "T-100"})),
            ev(K::TicketResolved {
                ticket_id: s("T-100"),
                csat: None,
            }),
        ),
        (
            rec("ticket.reopened", json!({"ticket_id": "T-100"})),
            ev(K::TicketReopened {
                ticket_id: s("T-100"),
            }),
        ),
        (
            rec(
                "subscription.started",
                json!({
                    "plan": "pro",
                    "mrr_cents": 49_900,
                    "seats": 25,
                    "renews_at": RENEW_STR,
                    "currency": "EUR",
                }),
            ),
            ev(K::SubscriptionStarted {
                plan: s("pro"),
                mrr_cents: 49_900,
                seats: 25,
                renews_at: Some(RENEW),
                currency: s("EUR"),
            }),
        ),
        (
            rec(
                "subscription.started",
                json!({"plan": "free", "mrr_cents": 0, "seats": 0}),
            ),
            ev(K::SubscriptionStarted {
                plan: s("free"),
                mrr_cents: 0,
                seats: 0,
                renews_at: None,
                currency: s("USD"),
            }),
        ),
        (
            rec(
                "subscription.changed",
                json!({"plan": "enterprise", "mrr_cents": 120_000, "seats": 60}),
            ),
            ev(K::SubscriptionChanged {
                plan: s("enterprise"),
                mrr_cents: 120_000,
                seats: 60,
            }),
        ),
        (
            rec(
                "subscription.renewed",
                json!({"renews_at": RENEW_STR, "mrr_cents": 49_900}),
            ),
            ev(K::SubscriptionRenewed {
                renews_at: Some(RENEW),
                mrr_cents: Some(49_900),
            }),
        ),
        (
            rec("subscription.renewed", json!({})),
            ev(K::SubscriptionRenewed {
                renews_at: None,
                mrr_cents: None,
            }),
        ),
        (
            rec("subscription.cancelled", json!({"reason": "budget cuts"})),
            ev(K::SubscriptionCancelled {
                reason: Some(s("budget cuts")),
            }),
        ),
        (
            rec("subscription.cancelled", json!({})),
            ev(K::SubscriptionCancelled { reason: None }),
        ),
        (
            rec(
                "invoice.paid",
                json!({"invoice_id": "INV-1", "amount_cents": 49_900}),
            ),
            ev(K::InvoicePaid {
                invoice_id: s("INV-1"),
                amount_cents: 49_900,
            }),
        ),
        (
            rec(
                "invoice.payment_failed",
                json!({"invoice_id": "INV-2", "amount_cents": 49_900, "reason": "card_declined"}),
            ),
            ev(K::InvoicePaymentFailed {
                invoice_id: s("INV-2"),
                amount_cents: 49_900,
                reason: Some(s("card_declined")),
            }),
        ),
        (
            rec(
                "invoice.payment_failed",
                json!({"invoice_id": "INV-2", "amount_cents": 0}),
            ),
            ev(K::InvoicePaymentFailed {
                invoice_id: s("INV-2"),
                amount_cents: 0,
                reason: None,
            }),
        ),
        (
            rec(
                "invoice.overdue",
                json!({"invoice_id": "INV-3", "amount_cents": 9_900, "days_overdue": 14}),
            ),
            ev(K::InvoiceOverdue {
                invoice_id: s("INV-3"),
                amount_cents: 9_900,
                days_overdue: 14,
            }),
        ),
        (
            rec(
                "invoice.overdue",
                json!({"invoice_id": "INV-3", "amount_cents": 0, "days_overdue": 0}),
            ),
            ev(K::InvoiceOverdue {
                invoice_id: s("INV-3"),
                amount_cents: 0,
                days_overdue: 0,
            }),
        ),
        (
            rec(
                "survey.nps",
                json!({"score": 9, "user_id": "u-2", "comment": "Great — thanks! \"quoted\"\n"}),
            ),
            ev(K::SurveyNps {
                score: 9,
                user_id: Some(s("u-2")),
                comment: Some(s("Great — thanks! \"quoted\"\n")),
            }),
        ),
        (
            rec("survey.nps", json!({"score": 0})),
            ev(K::SurveyNps {
                score: 0,
                user_id: None,
                comment: None,
            }),
        ),
        (
            rec("survey.csat", json!({"score": 5, "user_id": "u-2"})),
            ev(K::SurveyCsat {
                score: 5,
                user_id: Some(s("u-2")),
            }),
        ),
        (
            rec("survey.csat", json!({"score": 1})),
            ev(K::SurveyCsat {
                score: 1,
                user_id: None,
            }),
        ),
        (
            rec("survey.ces", json!({"score": 7, "user_id": "u-2"})),
            ev(K::SurveyCes {
                score: 7,
                user_id: Some(s("u-2")),
            }),
        ),
        (
            rec("survey.ces", json!({"score": 1})),
            ev(K::SurveyCes {
                score: 1,
                user_id: None,
            }),
        ),
        (
            rec(
                "account.updated",
                json!({
                    "name": "Acme Corp",
                    "segment": "enterprise",
                    "tier": "gold",
                    "owner": "csm-anna",
                    "seats_licensed": 100,
                }),
            ),
            ev(K::AccountUpdated {
                name: Some(s("Acme Corp")),
                segment: Some(s("enterprise")),
                tier: Some(s("gold")),
                owner: Some(s("csm-anna")),
                seats_licensed: Some(100),
            }),
        ),
        (
            rec("account.updated", json!({})),
            ev(K::AccountUpdated {
                name: None,
                segment: None,
                tier: None,
                owner: None,
                seats_licensed: None,
            }),
        ),
        (
            rec(
                "cs.touchpoint",
                json!({"kind": "qbr", "note": "Quarterly review"}),
            ),
            ev(K::Touchpoint {
                kind: s("qbr"),
                note: Some(s("Quarterly review")),
            }),
        ),
        (
            rec("cs.touchpoint", json!({"kind": "chatbot"})),
            ev(K::Touchpoint {
                kind: s("chatbot"),
                note: None,
            }),
        ),
        (
            rec(
                "health.override",
                json!({
                    "band": "at_risk",
                    "score": 35,
                    "reason": "Champion left",
                    "expires_at": APR1_STR,
                    "by": "csm-anna",
                }),
            ),
            ev(K::HealthOverride {
                band: Some(Band::AtRisk),
                score: Some(35),
                reason: s("Champion left"),
                expires_at: APR1,
                by: Some(s("csm-anna")),
            }),
        ),
        // Minimal with a band only …
        (
            rec(
                "health.override",
                json!({"band": "healthy", "reason": "Renewal signed", "expires_at": APR1_STR}),
            ),
            ev(K::HealthOverride {
                band: Some(Band::Healthy),
                score: None,
                reason: s("Renewal signed"),
                expires_at: APR1,
                by: None,
            }),
        ),
        // … and with a score only.
        (
            rec(
                "health.override",
                json!({"score": 80, "reason": "Renewal signed", "expires_at": APR1_STR}),
            ),
            ev(K::HealthOverride {
                band: None,
                score: Some(80),
                reason: s("Renewal signed"),
                expires_at: APR1,
                by: None,
            }),
        ),
        (
            rec(
                "alert.feedback",
                json!({"alert_id": "al-1", "verdict": "false_positive", "by": "csm-anna"}),
            ),
            ev(K::AlertFeedback {
                alert_id: s("al-1"),
                verdict: Verdict::FalsePositive,
                by: Some(s("csm-anna")),
            }),
        ),
        (
            rec(
                "alert.feedback",
                json!({"alert_id": "al-1", "verdict": "useful"}),
            ),
            ev(K::AlertFeedback {
                alert_id: s("al-1"),
                verdict: Verdict::Useful,
                by: None,
            }),
        ),
    ]
}

/// The examples of one type; at least a full and (if different) a minimal.
#[track_caller]
fn check_type(ty: &str) {
    let mut n = 0;
    for (v, want) in examples() {
        if v["type"] == ty {
            assert_eq!(decode_ok(&v), want, "decoding {v}");
            assert_eq!(want.type_name(), ty);
            n += 1;
        }
    }
    assert!(n >= 1, "no example for {ty}");
}

/// A minimal valid record of type `ty` (for rejection tests to break).
fn minimal(ty: &str) -> Value {
    examples()
        .into_iter()
        .map(|(v, _)| v)
        .filter(|v| v["type"] == ty)
        .min_by_key(|v| v.as_object().map_or(0, |o| o.len()))
        .unwrap_or_else(|| panic!("no example for {ty}"))
}

/// A full valid record of type `ty`.
fn full(ty: &str) -> Value {
    examples()
        .into_iter()
        .map(|(v, _)| v)
        .filter(|v| v["type"] == ty)
        .max_by_key(|v| v.as_object().map_or(0, |o| o.len()))
        .unwrap_or_else(|| panic!("no example for {ty}"))
}

// ------------------------------------------------- 1. valid, every type

#[test]
fn examples_cover_all_twenty_types() {
    let ex = examples();
    assert_eq!(TYPE_NAMES.len(), 20);
    for ty in TYPE_NAMES {
        let n = ex.iter().filter(|(v, _)| v["type"] == ty).count();
        assert!(n >= 1, "no example for {ty}");
    }
    for (v, _) in &ex {
        let ty = v["type"].as_str().expect("type");
        assert!(TYPE_NAMES.contains(&ty), "example of unknown type {ty}");
    }
}

#[test]
fn valid_usage_login() {
    check_type("usage.login");
}

#[test]
fn valid_usage_feature_count_defaults_to_1() {
    check_type("usage.feature");
    let ev = decode_ok(&minimal("usage.feature"));
    assert!(matches!(ev.kind, EventKind::Feature { count: 1, .. }));
}

#[test]
fn valid_ticket_opened_every_priority() {
    check_type("ticket.opened");
    for (name, p) in [
        ("low", Priority::Low),
        ("normal", Priority::Normal),
        ("high", Priority::High),
        ("urgent", Priority::Urgent),
    ] {
        let v = rec(
            "ticket.opened",
            json!({"ticket_id": "T-1", "priority": name}),
        );
        assert_eq!(
            decode_ok(&v).kind,
            EventKind::TicketOpened {
                ticket_id: s("T-1"),
                priority: p
            }
        );
    }
}

#[test]
fn valid_ticket_escalated() {
    check_type("ticket.escalated");
}

#[test]
fn valid_ticket_resolved() {
    check_type("ticket.resolved");
}

#[test]
fn valid_ticket_reopened() {
    check_type("ticket.reopened");
}

#[test]
fn valid_subscription_started_currency_defaults_to_usd() {
    check_type("subscription.started");
    match decode_ok(&minimal("subscription.started")).kind {
        EventKind::SubscriptionStarted { currency, .. } => assert_eq!(currency, "USD"),
        other => panic!("wrong kind {other:?}"),
    }
}

#[test]
fn valid_subscription_changed() {
    check_type("subscription.changed");
}

#[test]
fn valid_subscription_renewed() {
    check_type("subscription.renewed");
}

#[test]
fn valid_subscription_cancelled() {
    check_type("subscription.cancelled");
}

#[test]
fn valid_invoice_paid() {
    check_type("invoice.paid");
}

#[test]
fn valid_invoice_payment_failed() {
    check_type("invoice.payment_failed");
}

#[test]
fn valid_invoice_overdue() {
    check_type("invoice.overdue");
}

#[test]
fn valid_survey_nps() {
    check_type("survey.nps");
}

#[test]
fn valid_survey_csat() {
    check_type("survey.csat");
}

#[test]
fn valid_survey_ces() {
    check_type("survey.ces");
}

#[test]
fn valid_account_updated() {
    check_type("account.updated");
}

#[test]
fn valid_cs_touchpoint_kinds() {
    check_type("cs.touchpoint");
    for kind in ["qbr", "training", "onboarding_call", "outreach", "chatbot"] {
        let v = rec("cs.touchpoint", json!({ "kind": kind }));
        match decode_ok(&v).kind {
            EventKind::Touchpoint {
                kind: k,
                note: None,
            } => assert_eq!(k, kind),
            other => panic!("wrong kind {other:?}"),
        }
    }
}

#[test]
fn valid_health_override() {
    check_type("health.override");
    // Every band; score at both ends of 0..=100.
    for (name, b) in [
        ("healthy", Band::Healthy),
        ("neutral", Band::Neutral),
        ("at_risk", Band::AtRisk),
    ] {
        let v = set(&minimal("health.override"), "band", json!(name));
        assert!(matches!(
            decode_ok(&v).kind,
            EventKind::HealthOverride { band: Some(x), .. } if x == b
        ));
    }
    for score in [0, 100] {
        let v = rec(
            "health.override",
            json!({"score": score, "reason": "r", "expires_at": APR1_STR}),
        );
        assert!(matches!(
            decode_ok(&v).kind,
            EventKind::HealthOverride { score: Some(x), band: None, .. } if i64::from(x) == score
        ));
    }
}

#[test]
fn valid_alert_feedback_every_verdict() {
    check_type("alert.feedback");
    for (name, want) in [
        ("useful", Verdict::Useful),
        ("false_positive", Verdict::FalsePositive),
        ("already_known", Verdict::AlreadyKnown),
    ] {
        let v = rec(
            "alert.feedback",
            json!({"alert_id": "al-9", "verdict": name}),
        );
        assert!(matches!(
            decode_ok(&v).kind,
            EventKind::AlertFeedback { verdict, .. } if verdict == want
        ));
    }
}

#[test]
fn envelope_fields_decode_exactly() {
    let v = json!({
        "id": "évt-ü-1",
        "account_id": "account/ä 42",
        "type": "usage.login",
        "time": TIME,
        "user_id": "u",
    });
    let ev = decode_ok(&v);
    assert_eq!(ev.id, "évt-ü-1");
    assert_eq!(ev.account_id, "account/ä 42");
    assert_eq!(ev.time, T0);
    assert_eq!(ev.type_name(), "usage.login");
}

#[test]
fn timestamps_parse_to_epoch_ms() {
    let cases: [(&str, i64); 7] = [
        ("2026-03-01T12:00:00Z", 1_772_366_400_000),
        ("2026-03-01T12:00:00.001Z", 1_772_366_400_001),
        // Sub-millisecond digits are truncated.
        ("2026-03-01T12:00:00.123999Z", 1_772_366_400_123),
        // Offsets are applied.
        ("2026-03-01T14:00:00+02:00", 1_772_366_400_000),
        ("2026-03-01T07:30:00-04:30", 1_772_366_400_000),
        // The range is 1970..2200.
        ("1970-01-01T00:00:00Z", 0),
        ("2199-12-31T23:59:59.999Z", 7_258_118_399_999),
    ];
    for (text, ms) in cases {
        let v = set(&minimal("usage.login"), "time", json!(text));
        assert_eq!(decode_ok(&v).time, ms, "time {text}");
    }
}

#[test]
fn json_with_whitespace_and_trailing_newline_is_accepted() {
    let text = " {\n  \"id\" : \"ev-1\",\r\n \"account_id\":\"acme\", \"type\":\"usage.login\",\t\"time\":\"2026-03-01T12:00:00Z\", \"user_id\":\"u-1\" }\r\n";
    let ev = json::decode(text.as_bytes()).expect("valid");
    assert_eq!(ev, ev_login());
}

fn ev_login() -> Event<'static> {
    ev(EventKind::Login { user_id: s("u-1") })
}

#[test]
fn escaped_strings_are_unescaped() {
    let text = br#"{"id":"ev\u002d1","account_id":"ac\u006De","type":"usage\u002elogin","time":"2026-03-01T12:00:00Z","user_id":"u\u002d1"}"#;
    assert_eq!(json::decode(text).expect("valid"), ev_login());
}

// --------------------------------------------- 2. rejections: exact text

#[test]
fn reason_nps_score_out_of_range() {
    let v = rec("survey.nps", json!({"score": 11}));
    assert_eq!(reason(&v), "survey.nps: score 11 out of range 0..=10");
}

#[test]
fn reason_missing_user_id() {
    let v = rec("usage.login", json!({}));
    assert_eq!(reason(&v), "usage.login: user_id is required");
}

#[test]
fn reason_unknown_type() {
    let v = rec("foo.bar", json!({}));
    assert_eq!(decode_err(&v), DecodeError::UnknownType("foo.bar".into()));
    assert_eq!(reason(&v), "unknown type `foo.bar`");
}

#[test]
fn reason_unknown_type_is_case_sensitive() {
    let v = rec("Usage.Login", json!({"user_id": "u"}));
    assert_eq!(reason(&v), "unknown type `Usage.Login`");
}

#[test]
fn reason_texts() {
    let login = minimal("usage.login");
    let cases: Vec<(Value, &str)> = vec![
        (without(&login, "id"), "event: id is required"),
        (without(&login, "time"), "event: time is required"),
        (without(&login, "type"), "event: type is required"),
        (without(&login, "account_id"), "event: account_id is required"),
        (
            set(&login, "account_id", json!("")),
            "event: account_id must not be empty",
        ),
        (
            set(&login, "id", json!("x".repeat(129))),
            "event: id is 129 characters, over the limit of 128",
        ),
        (
            set(&login, "id", json!(123)),
            "event: id must be a string, got an integer",
        ),
        (
            set(&login, "time", json!("yesterday")),
            "event: time \"yesterday\" is not an RFC 3339 timestamp between 1970 and 2200",
        ),
        (
            set(&login, "user_id", json!(["u"])),
            "usage.login: user_id must be a string, got an array",
        ),
        (
            set(&login, "user_id", json!({"a": 1})),
            "usage.login: user_id must be a string, got an object",
        ),
        (
            set(&login, "user_id", json!(true)),
            "usage.login: user_id must be a string, got a boolean",
        ),
        (
            set(&login, "user_id", Value::Null),
            "usage.login: user_id is required",
        ),
        (
            set(&minimal("usage.feature"), "count", json!("3")),
            "usage.feature: count must be an integer, got a string",
        ),
        (
            set(&minimal("usage.feature"), "count", json!(1.5)),
            "usage.feature: count must be an integer, got a number with a fraction",
        ),
        (
            set(&minimal("usage.feature"), "count", json!(0)),
            "usage.feature: count 0 out of range 1..=4294967295",
        ),
        (
            set(&minimal("ticket.opened"), "priority", json!("critical")),
            "ticket.opened: priority \"critical\" is not one of low, normal, high, urgent",
        ),
        (
            set(&minimal("subscription.started"), "currency", json!("usd")),
            "subscription.started: currency \"usd\" is not an ISO 4217 code (three capital letters)",
        ),
        (
            set(&minimal("subscription.started"), "seats", json!(-1)),
            "subscription.started: seats -1 out of range 0..=4294967295",
        ),
        (
            rec("health.override", json!({"reason": "r", "expires_at": APR1_STR})),
            "health.override: band or score is required",
        ),
        (
            set(&minimal("health.override"), "expires_at", json!(TIME)),
            "health.override: expires_at must be after time",
        ),
        (
            set(&minimal("alert.feedback"), "verdict", json!("meh")),
            "alert.feedback: verdict \"meh\" is not one of useful, false_positive, already_known",
        ),
    ];
    for (v, want) in cases {
        assert_eq!(reason(&v), want, "record {v}");
    }
}

// ------------------------------------------ 2. rejections: envelope

#[test]
fn missing_envelope_fields() {
    for ty in TYPE_NAMES {
        let v = full(ty);
        for field in ["id", "account_id", "type", "time"] {
            assert_field_err(&without(&v, field), "event", field);
            assert_field_err(&set(&v, field, Value::Null), "event", field);
            assert_field_err(&set(&v, field, json!("")), "event", field);
        }
    }
}

#[test]
fn id_length_counts_characters() {
    let login = minimal("usage.login");
    for field in ["id", "account_id"] {
        // 128 characters: accepted, whatever their byte length.
        for text in ["x".repeat(128), "é".repeat(128), "🦀".repeat(128)] {
            let ev = decode_ok(&set(&login, field, json!(text)));
            let got = if field == "id" {
                &ev.id
            } else {
                &ev.account_id
            };
            assert_eq!(got.chars().count(), 128);
            assert_eq!(got.as_ref(), text);
        }
        assert_eq!("é".repeat(128).len(), 256);
        // 129 characters: rejected.
        for text in ["x".repeat(129), "é".repeat(129)] {
            assert_field_err(&set(&login, field, json!(text)), "event", field);
        }
        // 1 character is the minimum.
        decode_ok(&set(&login, field, json!("x")));
    }
}

#[test]
fn envelope_wrong_json_types() {
    let login = minimal("usage.login");
    for field in ["id", "account_id", "type", "time"] {
        for bad in [
            json!(1),
            json!(1.5),
            json!(true),
            json!(["x"]),
            json!({"x": 1}),
        ] {
            assert_field_err(&set(&login, field, bad), "event", field);
        }
    }
    // Epoch milliseconds are not an RFC 3339 string (JSON has no numeric time).
    assert_field_err(&set(&login, "time", json!(T0)), "event", "time");
}

#[test]
fn bad_timestamps() {
    let bad = [
        "2026-13-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "2026-03-01T24:00:00Z",
        "yesterday",
        "1969-12-31T23:59:59Z",
        "1969-12-31T23:59:59.999Z",
        "2200-01-01T00:00:00Z",
        "2026-03-01",
        "2026-03-01T12:00:00",
        "2026-03-01 12:00:00",
        "1772366400000",
        " 2026-03-01T12:00:00Z",
    ];
    let login = minimal("usage.login");
    let started = full("subscription.started");
    let renewed = full("subscription.renewed");
    let over = full("health.override");
    for text in bad {
        assert_field_err(&set(&login, "time", json!(text)), "event", "time");
        assert_field_err(
            &set(&started, "renews_at", json!(text)),
            "subscription.started",
            "renews_at",
        );
        assert_field_err(
            &set(&renewed, "renews_at", json!(text)),
            "subscription.renewed",
            "renews_at",
        );
        assert_field_err(
            &set(&over, "expires_at", json!(text)),
            "health.override",
            "expires_at",
        );
    }
}

#[test]
fn unknown_types() {
    for ty in [
        "foo.bar",
        "usage",
        "usage.login ",
        "USAGE.LOGIN",
        "ticket.closed",
    ] {
        let v = rec(ty, json!({"user_id": "u", "ticket_id": "t"}));
        assert_eq!(decode_err(&v), DecodeError::UnknownType(ty.to_string()));
    }
}

// ------------------------------------ 2. rejections: per-type fields

#[test]
fn missing_required_fields() {
    let required: [(&str, &[&str]); 20] = [
        ("usage.login", &["user_id"]),
        ("usage.feature", &["user_id", "feature"]),
        ("ticket.opened", &["ticket_id", "priority"]),
        ("ticket.escalated", &["ticket_id"]),
        ("ticket.resolved", &["ticket_id"]),
        ("ticket.reopened", &["ticket_id"]),
        ("subscription.started", &["plan", "mrr_cents", "seats"]),
        ("subscription.changed", &["plan", "mrr_cents", "seats"]),
        ("subscription.renewed", &[]),
        ("subscription.cancelled", &[]),
        ("invoice.paid", &["invoice_id", "amount_cents"]),
        ("invoice.payment_failed", &["invoice_id", "amount_cents"]),
        (
            "invoice.overdue",
            &["invoice_id", "amount_cents", "days_overdue"],
        ),
        ("survey.nps", &["score"]),
        ("survey.csat", &["score"]),
        ("survey.ces", &["score"]),
        ("account.updated", &[]),
        ("cs.touchpoint", &["kind"]),
        ("health.override", &["reason", "expires_at"]),
        ("alert.feedback", &["alert_id", "verdict"]),
    ];
    for (ty, fields) in required {
        let v = full(ty);
        for &field in fields {
            let msg = reason(&without(&v, field));
            assert_eq!(msg, format!("{ty}: {field} is required"));
            let msg = reason(&set(&v, field, Value::Null));
            assert_eq!(msg, format!("{ty}: {field} is required"));
        }
    }
}

#[test]
fn empty_required_strings_are_rejected() {
    let cases: [(&str, &str); 13] = [
        ("usage.login", "user_id"),
        ("usage.feature", "user_id"),
        ("usage.feature", "feature"),
        ("ticket.opened", "ticket_id"),
        ("ticket.opened", "priority"),
        ("ticket.resolved", "ticket_id"),
        ("subscription.started", "plan"),
        ("subscription.changed", "plan"),
        ("invoice.paid", "invoice_id"),
        ("cs.touchpoint", "kind"),
        ("health.override", "reason"),
        ("alert.feedback", "alert_id"),
        ("alert.feedback", "verdict"),
    ];
    for (ty, field) in cases {
        assert_field_err(&set(&full(ty), field, json!("")), ty, field);
    }
}

/// An empty optional identifier or label is refused (an empty user id or
/// name is a producer bug); empty optional free text (comment, note,
/// reason) is accepted as "no text".
#[test]
fn empty_optional_strings() {
    let cases: [(&str, &str); 3] = [
        ("survey.nps", "user_id"),
        ("account.updated", "name"),
        ("alert.feedback", "by"),
    ];
    for (ty, field) in cases {
        assert_field_err(&set(&full(ty), field, json!("")), ty, field);
    }
    for (ty, field) in [
        ("survey.nps", "comment"),
        ("subscription.cancelled", "reason"),
        ("cs.touchpoint", "note"),
    ] {
        let v = set(&full(ty), field, json!(""));
        let bytes = serde_json::to_vec(&v).unwrap();
        let ev = json::decode(&bytes).unwrap_or_else(|e| panic!("{ty}.{field}: {e}"));
        let none = match ev.kind {
            EventKind::SurveyNps { comment, .. } => comment.is_none(),
            EventKind::SubscriptionCancelled { reason } => reason.is_none(),
            EventKind::Touchpoint { note, .. } => note.is_none(),
            _ => false,
        };
        assert!(none, "{ty}.{field}: empty text is no text");
    }
}

#[test]
fn wrong_json_types_for_fields() {
    // (type, field, a wrong value)
    let cases: Vec<(&str, &str, Value)> = vec![
        ("usage.feature", "count", json!("3")),
        ("usage.feature", "count", json!(3.0)),
        ("usage.feature", "count", json!(3.5)),
        ("usage.feature", "count", json!(true)),
        ("usage.feature", "count", json!([3])),
        ("usage.feature", "user_id", json!(7)),
        ("usage.feature", "feature", json!({"name": "x"})),
        ("ticket.opened", "priority", json!(3)),
        ("ticket.opened", "ticket_id", json!(["T-1"])),
        ("ticket.resolved", "csat", json!("4")),
        ("ticket.resolved", "csat", json!(4.0)),
        ("subscription.started", "mrr_cents", json!("49900")),
        ("subscription.started", "mrr_cents", json!(499.00)),
        ("subscription.started", "seats", json!(2.5)),
        ("subscription.started", "currency", json!(978)),
        ("subscription.started", "plan", json!({})),
        ("subscription.renewed", "mrr_cents", json!("1")),
        ("subscription.renewed", "renews_at", json!(RENEW)),
        ("invoice.paid", "amount_cents", json!(1e3)),
        ("invoice.overdue", "days_overdue", json!("14")),
        ("survey.nps", "score", json!("9")),
        ("survey.nps", "score", json!(9.0)),
        ("survey.nps", "comment", json!(["x"])),
        ("survey.csat", "score", json!([5])),
        ("survey.ces", "score", json!({"value": 3})),
        ("account.updated", "seats_licensed", json!("100")),
        ("account.updated", "name", json!(false)),
        ("cs.touchpoint", "kind", json!(1)),
        ("health.override", "score", json!(50.5)),
        ("health.override", "band", json!(2)),
        ("health.override", "expires_at", json!(APR1)),
        ("alert.feedback", "verdict", json!(true)),
    ];
    for (ty, field, bad) in cases {
        assert_field_err(&set(&full(ty), field, bad), ty, field);
    }
}

#[test]
fn out_of_range_values() {
    // (type, field, rejected values, accepted values)
    let cases: Vec<(&str, &str, Vec<i64>, Vec<i64>)> = vec![
        ("ticket.resolved", "csat", vec![0, 6, -1], vec![1, 5]),
        ("survey.csat", "score", vec![0, 6], vec![1, 5]),
        ("survey.ces", "score", vec![0, 8], vec![1, 7]),
        ("survey.nps", "score", vec![-1, 11], vec![0, 10]),
        ("usage.feature", "count", vec![0, -1], vec![1, 1_000]),
        ("subscription.started", "seats", vec![-1], vec![0]),
        ("subscription.started", "mrr_cents", vec![-1], vec![0]),
        ("subscription.changed", "seats", vec![-1], vec![0]),
        ("subscription.changed", "mrr_cents", vec![-1], vec![0]),
        ("subscription.renewed", "mrr_cents", vec![-1], vec![0]),
        ("invoice.paid", "amount_cents", vec![-1], vec![0]),
        ("invoice.payment_failed", "amount_cents", vec![-1], vec![0]),
        ("invoice.overdue", "amount_cents", vec![-1], vec![0]),
        ("invoice.overdue", "days_overdue", vec![-1], vec![0]),
        ("account.updated", "seats_licensed", vec![-1], vec![0]),
        ("health.override", "score", vec![-1, 101], vec![0, 100]),
    ];
    for (ty, field, bad, good) in cases {
        let v = full(ty);
        for x in bad {
            assert_field_err(&set(&v, field, json!(x)), ty, field);
        }
        for x in good {
            decode_ok(&set(&v, field, json!(x)));
        }
    }
}

#[test]
fn integers_beyond_i64_are_out_of_range() {
    let v = set(&full("subscription.started"), "mrr_cents", json!(u64::MAX));
    assert_field_err(&v, "subscription.started", "mrr_cents");
    let v = set(&full("survey.nps"), "score", json!(i64::MIN));
    assert_field_err(&v, "survey.nps", "score");
    // A number too large even for f64 is not JSON serde_json accepts.
    let text = String::from_utf8(bytes(&full("survey.nps")))
        .expect("utf8")
        .replacen("\"score\":9", "\"score\":1e400", 1);
    assert!(text.contains("1e400"));
    assert!(json::decode(text.as_bytes()).is_err());
}

#[test]
fn bad_enum_values() {
    for p in ["critical", "URGENT", "Low", " low", "medium"] {
        assert_field_err(
            &set(&full("ticket.opened"), "priority", json!(p)),
            "ticket.opened",
            "priority",
        );
    }
    for vd in [
        "Useful",
        "false-positive",
        "falsepositive",
        "wrong",
        "known",
    ] {
        assert_field_err(
            &set(&full("alert.feedback"), "verdict", json!(vd)),
            "alert.feedback",
            "verdict",
        );
    }
    for b in ["at-risk", "AtRisk", "red", "unhealthy", "HEALTHY"] {
        assert_field_err(
            &set(&full("health.override"), "band", json!(b)),
            "health.override",
            "band",
        );
    }
}

#[test]
fn bad_currency() {
    for cur in ["usd", "US", "USDX", "Usd", "U$D", "€", "12A", ""] {
        assert_field_err(
            &set(&full("subscription.started"), "currency", json!(cur)),
            "subscription.started",
            "currency",
        );
    }
    for cur in ["USD", "EUR", "GBP", "JPY"] {
        let ev = decode_ok(&set(&full("subscription.started"), "currency", json!(cur)));
        assert!(matches!(
            ev.kind,
            EventKind::SubscriptionStarted { currency, .. } if currency == cur
        ));
    }
}

#[test]
fn health_override_needs_band_or_score() {
    let v = without(&without(&full("health.override"), "band"), "score");
    assert_field_err(&v, "health.override", "band");
    let v = set(
        &set(&full("health.override"), "band", Value::Null),
        "score",
        Value::Null,
    );
    assert_eq!(reason(&v), "health.override: band or score is required");
}

#[test]
fn health_override_expires_at_must_be_after_time() {
    let v = full("health.override");
    for not_after in [
        TIME,
        "2026-03-01T11:59:59.999Z",
        "2026-02-01T00:00:00Z",
        // Same instant, written with an offset.
        "2026-03-01T13:00:00+01:00",
    ] {
        assert_field_err(
            &set(&v, "expires_at", json!(not_after)),
            "health.override",
            "expires_at",
        );
    }
    // One millisecond later is enough.
    let ev = decode_ok(&set(&v, "expires_at", json!("2026-03-01T12:00:00.001Z")));
    assert!(matches!(
        ev.kind,
        EventKind::HealthOverride { expires_at, .. } if expires_at == T0 + 1
    ));
}

#[test]
fn overlong_labels_and_texts_are_rejected() {
    let login = minimal("usage.login");
    decode_ok(&set(&login, "user_id", json!("u".repeat(256))));
    assert_field_err(
        &set(&login, "user_id", json!("u".repeat(257))),
        "usage.login",
        "user_id",
    );
    let nps = full("survey.nps");
    decode_ok(&set(&nps, "comment", json!("ü".repeat(4096))));
    assert_field_err(
        &set(&nps, "comment", json!("c".repeat(4097))),
        "survey.nps",
        "comment",
    );
}

// -------------------------------------- 2. rejections: the record itself

/// The bytes of a valid record padded (with an unknown field) to `len`.
fn padded_record(len: usize) -> Vec<u8> {
    let base = bytes(&minimal("usage.login"));
    let head = &base[..base.len() - 1]; // without the closing brace
    let frame = head.len() + r#","pad":""}"#.len();
    assert!(len >= frame);
    let mut out = head.to_vec();
    out.extend_from_slice(br#","pad":""#);
    out.extend(std::iter::repeat_n(b'x', len - frame));
    out.extend_from_slice(br#""}"#);
    assert_eq!(out.len(), len);
    out
}

#[test]
fn record_size_limit() {
    assert_eq!(MAX_RECORD_BYTES, 1 << 20);
    // Exactly 1 MiB is accepted …
    let at = padded_record(MAX_RECORD_BYTES);
    assert_eq!(json::decode(&at).expect("1 MiB is allowed"), ev_login());
    // … one byte more is not.
    let over = padded_record(MAX_RECORD_BYTES + 1);
    let e = json::decode(&over).expect_err("over 1 MiB");
    assert_eq!(
        e,
        DecodeError::TooLarge {
            size: MAX_RECORD_BYTES + 1,
            limit: MAX_RECORD_BYTES
        }
    );
    assert_eq!(
        e.to_string(),
        "record of 1048577 bytes exceeds the 1048576-byte limit"
    );
    // The size is checked before parsing: an oversize non-JSON record too.
    let junk = vec![b'{'; 2 * MAX_RECORD_BYTES];
    assert!(matches!(
        json::decode(&junk),
        Err(DecodeError::TooLarge { size, .. }) if size == 2 * MAX_RECORD_BYTES
    ));
}

#[test]
fn invalid_json() {
    let cases: [&[u8]; 12] = [
        b"",
        b" ",
        b"{",
        b"{\"id\": \"ev-1\",",
        b"{'id': 'ev-1'}",
        b"{id: \"ev-1\"}",
        b"{\"id\": \"ev-1\",}",
        b"{\"id\" \"ev-1\"}",
        b"\xef\xbb\xbf{}",
        b"not json",
        b"{\"user_id\": \"u\\x\"}",
        b"{\"user_id\": \"tab\there\"}",
    ];
    for b in cases {
        assert_json_err(b);
    }
}

#[test]
fn trailing_data_after_the_object() {
    let mut two = bytes(&minimal("usage.login"));
    two.extend_from_slice(&bytes(&minimal("usage.login")));
    assert_json_err(&two);
    let mut junk = bytes(&minimal("usage.login"));
    junk.extend_from_slice(b" x");
    assert_json_err(&junk);
}

#[test]
fn non_object_json() {
    let cases: [&[u8]; 9] = [
        b"[1,2]",
        b"[]",
        b"\"x\"",
        b"null",
        b"42",
        b"-1.5",
        b"true",
        b"[{\"id\":\"ev-1\"}]",
        b"[\"ev-1\",\"acme\",\"usage.login\",\"2026-03-01T12:00:00Z\",\"u-1\"]",
    ];
    for b in cases {
        assert_json_err(b);
    }
    // An empty object is valid JSON but misses the envelope.
    assert!(matches!(
        json::decode(b"{}"),
        Err(DecodeError::Field { field: "type", .. })
    ));
}

/// SPEC §1 events are JSON *objects*; a JSON array whose elements happen to
/// line up with the decoder's internal field order must not become an event.
#[test]
fn positional_json_array_is_not_an_event() {
    for n in 4..=40 {
        let mut arr = vec![
            json!("ev-1"),
            json!("acme"),
            json!("usage.login"),
            json!(TIME),
            json!("u-1"),
        ];
        arr.resize(n.max(5), Value::Null);
        arr.truncate(n);
        let b = bytes(&Value::Array(arr));
        if let Ok(ev) = json::decode(&b) {
            panic!(
                "a {n}-element JSON array was accepted as {ev:?}: {}",
                String::from_utf8_lossy(&b)
            );
        }
    }
}

#[test]
fn duplicate_keys_are_rejected() {
    let cases: [&[u8]; 4] = [
        br#"{"id":"ev-1","id":"ev-2","account_id":"acme","type":"usage.login","time":"2026-03-01T12:00:00Z","user_id":"u-1"}"#,
        br#"{"id":"ev-1","account_id":"acme","account_id":"other","type":"usage.login","time":"2026-03-01T12:00:00Z","user_id":"u-1"}"#,
        br#"{"id":"ev-1","account_id":"acme","type":"usage.login","type":"usage.login","time":"2026-03-01T12:00:00Z","user_id":"u-1"}"#,
        br#"{"id":"ev-1","account_id":"acme","type":"survey.nps","time":"2026-03-01T12:00:00Z","score":9,"score":0}"#,
    ];
    for b in cases {
        assert_json_err(b);
    }
    // The same key spelled with an escape is still the same key.
    assert_json_err(
        br#"{"id":"ev-1","\u0069d":"ev-2","account_id":"acme","type":"usage.login","time":"2026-03-01T12:00:00Z","user_id":"u-1"}"#,
    );
}

/// `depth` nested arrays (or objects) around `1`.
fn nested(depth: usize, objects: bool) -> String {
    let (open, close) = if objects {
        (r#"{"a":"#, "}")
    } else {
        ("[", "]")
    };
    let mut s = open.repeat(depth);
    s.push('1');
    s.push_str(&close.repeat(depth));
    s
}

/// `v` serialized with `"field": <raw>` appended.
fn with_raw(v: &Value, field: &str, raw: &str) -> Vec<u8> {
    let base = bytes(v);
    let mut out = base[..base.len() - 1].to_vec();
    out.extend_from_slice(format!(r#","{field}":{raw}}}"#).as_bytes());
    out
}

/// A valid login with `"field": <raw>` added.
fn login_with_raw(field: &str, raw: &str) -> Vec<u8> {
    with_raw(&minimal("usage.login"), field, raw)
}

/// Runs `f` on a thread with a deliberately small stack, so that unbounded
/// recursion would show up as a crash rather than pass by luck.
fn on_small_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(f)
        .expect("spawn")
        .join()
        .expect("no panic");
}

#[test]
fn deep_nesting_never_panics() {
    on_small_stack(|| {
        for objects in [false, true] {
            let deep = nested(10_000, objects);
            // In an unknown field, in fields that are read, and as the
            // whole record: an error or Ok, never a crash.
            let no_user = rec("usage.login", json!({}));
            for b in [
                login_with_raw("extra", &deep),
                with_raw(&no_user, "user_id", &deep),
                login_with_raw("score", &deep),
                deep.clone().into_bytes(),
            ] {
                match json::decode(&b) {
                    Ok(_) | Err(DecodeError::Json(_)) | Err(DecodeError::Field { .. }) => {}
                    Err(other) => panic!("unexpected error {other:?}"),
                }
            }
            // Read as a field, it is the wrong type.
            assert_field_err_bytes(
                &with_raw(&no_user, "user_id", &deep),
                "usage.login",
                "user_id",
            );
            // Moderate nesting in an unknown field is simply ignored.
            let ok = login_with_raw("extra", &nested(100, objects));
            assert_eq!(json::decode(&ok).expect("100 levels"), ev_login());
        }
    });
}

#[track_caller]
fn assert_field_err_bytes(b: &[u8], context: &str, field: &str) {
    match decode_err_bytes(b) {
        DecodeError::Field {
            context: c,
            field: f,
            ..
        } => assert_eq!((c.as_str(), f), (context, field)),
        other => panic!("expected a field error on {context}.{field}, got {other:?}"),
    }
}

#[test]
fn invalid_utf8_in_a_field_is_rejected() {
    // In a value that is decoded.
    let mut b = bytes(&rec("usage.login", json!({"user_id": "u-XX"})));
    let at = find(&b, b"XX");
    b[at] = 0xff;
    b[at + 1] = 0xfe;
    assert_json_err(&b);
    // A truncated multi-byte sequence in the id.
    let mut b = bytes(&minimal("usage.login"));
    let at = find(&b, b"ev-1");
    b[at + 3] = 0xc3;
    assert_json_err(&b);
    // In a key.
    let mut b = login_with_raw("KK", "1");
    let at = find(&b, b"KK");
    b[at] = 0xff;
    assert_json_err(&b);
    // A lone surrogate escape.
    let text = String::from_utf8(bytes(&rec("usage.login", json!({"user_id": "XX"}))))
        .expect("utf8")
        .replace("XX", r"\ud800");
    assert_json_err(text.as_bytes());
}

/// Invalid UTF-8 makes the record not JSON at all (RFC 8259 §8.1), so it
/// should be invalid even where it sits in a field the decoder ignores.
#[test]
fn invalid_utf8_in_an_unknown_field_is_rejected() {
    let mut b = login_with_raw("extra", "\"XX\"");
    let at = find(&b, b"XX");
    b[at] = 0xff;
    b[at + 1] = 0xfe;
    assert_json_err(&b);
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("needle present")
}

// --------------------------------- 3. unknown fields and null optionals

#[test]
fn unknown_fields_are_ignored() {
    let extras = json!({
        "source": "web",
        "version": 3,
        "ratio": 0.5,
        "flag": true,
        "nothing": null,
        "tags": ["a", {"b": [1, 2, {"c": null}]}],
        "meta": {"nested": {"deeper": {"x": [1, 2, 3], "y": "z"}}, "n": -1},
        "TIME": "not a time",
        "Id": 7,
        "": "empty key",
    });
    for (v, want) in examples() {
        let mut with = v.clone();
        for (k, x) in extras.as_object().expect("object") {
            with = set(&with, k, x.clone());
        }
        assert_eq!(decode_ok(&with), want, "with extras: {with}");
    }
}

#[test]
fn fields_of_other_types_are_ignored() {
    // `score`, `priority` and `currency` mean nothing to usage.login, even
    // when their values would be invalid for the types that use them.
    let v = set(
        &set(
            &set(&minimal("usage.login"), "score", json!(999)),
            "priority",
            json!("nope"),
        ),
        "currency",
        json!("usd"),
    );
    assert_eq!(decode_ok(&v), ev_login());
}

#[test]
fn null_optional_fields_are_absent() {
    use EventKind as K;
    let cases: Vec<(Value, EventKind<'static>)> = vec![
        (
            rec(
                "usage.feature",
                json!({"user_id": "u", "feature": "f", "count": null}),
            ),
            K::Feature {
                user_id: s("u"),
                feature: s("f"),
                count: 1,
            },
        ),
        (
            rec("ticket.resolved", json!({"ticket_id": "t", "csat": null})),
            K::TicketResolved {
                ticket_id: s("t"),
                csat: None,
            },
        ),
        (
            rec(
                "subscription.started",
                json!({"plan": "p", "mrr_cents": 1, "seats": 1, "renews_at": null, "currency": null}),
            ),
            K::SubscriptionStarted {
                plan: s("p"),
                mrr_cents: 1,
                seats: 1,
                renews_at: None,
                currency: s("USD"),
            },
        ),
        (
            rec(
                "subscription.renewed",
                json!({"renews_at": null, "mrr_cents": null}),
            ),
            K::SubscriptionRenewed {
                renews_at: None,
                mrr_cents: None,
            },
        ),
        (
            rec("subscription.cancelled", json!({"reason": null})),
            K::SubscriptionCancelled { reason: None },
        ),
        (
            rec(
                "invoice.payment_failed",
                json!({"invoice_id": "i", "amount_cents": 1, "reason": null}),
            ),
            K::InvoicePaymentFailed {
                invoice_id: s("i"),
                amount_cents: 1,
                reason: None,
            },
        ),
        (
            rec(
                "survey.nps",
                json!({"score": 10, "user_id": null, "comment": null}),
            ),
            K::SurveyNps {
                score: 10,
                user_id: None,
                comment: None,
            },
        ),
        (
            rec("survey.csat", json!({"score": 3, "user_id": null})),
            K::SurveyCsat {
                score: 3,
                user_id: None,
            },
        ),
        (
            rec("survey.ces", json!({"score": 3, "user_id": null})),
            K::SurveyCes {
                score: 3,
                user_id: None,
            },
        ),
        (
            rec(
                "account.updated",
                json!({"name": null, "segment": null, "tier": null, "owner": null, "seats_licensed": null}),
            ),
            K::AccountUpdated {
                name: None,
                segment: None,
                tier: None,
                owner: None,
                seats_licensed: None,
            },
        ),
        (
            rec("cs.touchpoint", json!({"kind": "qbr", "note": null})),
            K::Touchpoint {
                kind: s("qbr"),
                note: None,
            },
        ),
        (
            rec(
                "health.override",
                json!({"band": null, "score": 10, "reason": "r", "expires_at": APR1_STR, "by": null}),
            ),
            K::HealthOverride {
                band: None,
                score: Some(10),
                reason: s("r"),
                expires_at: APR1,
                by: None,
            },
        ),
        (
            rec(
                "health.override",
                json!({"band": "neutral", "score": null, "reason": "r", "expires_at": APR1_STR}),
            ),
            K::HealthOverride {
                band: Some(Band::Neutral),
                score: None,
                reason: s("r"),
                expires_at: APR1,
                by: None,
            },
        ),
        (
            rec(
                "alert.feedback",
                json!({"alert_id": "a", "verdict": "already_known", "by": null}),
            ),
            K::AlertFeedback {
                alert_id: s("a"),
                verdict: Verdict::AlreadyKnown,
                by: None,
            },
        ),
    ];
    for (v, kind) in cases {
        assert_eq!(decode_ok(&v), ev(kind), "record {v}");
    }
}

// --------------------------------------------------------- 4. round trips

#[test]
fn json_round_trip() {
    for (v, want) in examples() {
        let decoded = decode_ok(&v);
        assert_eq!(decoded, want);
        let text = json::encode(&decoded);
        let again = json::decode(&text)
            .unwrap_or_else(|e| panic!("re-decoding {}: {e}", String::from_utf8_lossy(&text)));
        assert_eq!(again, want, "json round trip of {v}");
        // Encoding is stable: a second round gives the same bytes.
        assert_eq!(json::encode(&again), text);
    }
}

#[test]
fn proto_round_trip() {
    for (v, want) in examples() {
        let decoded = decode_ok(&v);
        let bin = proto::encode(&decoded);
        let again = proto::decode(&bin).unwrap_or_else(|e| panic!("proto of {v}: {e}"));
        assert_eq!(again, want, "proto round trip of {v}");
        // The bulk path agrees, and so does the format dispatcher.
        let mut buf = pb::Event::default();
        let bulk = proto::decode_with(&bin, &mut buf, |e| e.into_owned()).expect("decode_with");
        assert_eq!(bulk, want);
        assert_eq!(
            codec::decode(Format::Protobuf, &bin).expect("dispatch"),
            want
        );
        assert_eq!(
            codec::decode(Format::Json, &bytes(&v)).expect("dispatch"),
            want
        );
    }
}

#[test]
fn proto_and_json_round_trips_with_unicode_and_escapes() {
    let v = json!({
        "id": "é".repeat(128),
        "account_id": "🦀/\"acct\"\\",
        "type": "survey.nps",
        "time": "2026-03-01T12:00:00.123Z",
        "score": 10,
        "comment": "line1\nline2\t\u{7f}\u{1}",
    });
    let want = decode_ok(&v);
    assert_eq!(want.time, T0 + 123);
    assert_eq!(json::decode(&json::encode(&want)).expect("json"), want);
    assert_eq!(proto::decode(&proto::encode(&want)).expect("proto"), want);
}

// -------------------------------------------------- 4. Protobuf specifics

fn message(ty: &str) -> pb::Event {
    let (v, _) = examples()
        .into_iter()
        .find(|(v, _)| v["type"] == ty)
        .expect("example");
    proto::to_message(&decode_ok(&v))
}

#[test]
fn proto_without_time_is_rejected_naming_time() {
    let mut m = message("usage.login");
    m.when = None;
    let e = proto::decode(&m.encode_to_vec()).expect_err("no time");
    assert!(matches!(e, DecodeError::Field { field: "time", .. }));
    assert_eq!(e.to_string(), "event: time is required");
    // An empty `time` string is absent too.
    m.when = Some(pb::event::When::Time(String::new()));
    let e = proto::decode(&m.encode_to_vec()).expect_err("empty time");
    assert_eq!(e.to_string(), "event: time is required");
}

#[test]
fn proto_time_as_text_or_ms() {
    let mut m = message("usage.login");
    m.when = Some(pb::event::When::Time("2026-03-01T14:00:00+02:00".into()));
    assert_eq!(
        proto::decode(&m.encode_to_vec()).expect("text time").time,
        T0
    );
    m.when = Some(pb::event::When::TimeUnixMs(T0 + 5));
    assert_eq!(
        proto::decode(&m.encode_to_vec()).expect("ms time").time,
        T0 + 5
    );
    m.when = Some(pb::event::When::Time("yesterday".into()));
    assert!(matches!(
        proto::decode(&m.encode_to_vec()),
        Err(DecodeError::Field { field: "time", .. })
    ));
    for ms in [-1, 7_258_118_400_000, i64::MIN, i64::MAX] {
        m.when = Some(pb::event::When::TimeUnixMs(ms));
        assert!(
            matches!(
                proto::decode(&m.encode_to_vec()),
                Err(DecodeError::Field {
                    field: "time_unix_ms",
                    ..
                })
            ),
            "time_unix_ms {ms}"
        );
    }
    m.when = Some(pb::event::When::TimeUnixMs(0));
    assert_eq!(proto::decode(&m.encode_to_vec()).expect("epoch").time, 0);
}

#[test]
fn proto_garbage_is_a_protobuf_error() {
    let cases: [&[u8]; 5] = [
        &[0xff, 0xff, 0xff],
        // Field 1 with the invalid wire type 7.
        &[0x0f],
        // Field 1 (string) claiming 10 bytes but holding 1.
        &[0x0a, 0x0a, b'x'],
        // Field 1 (string) that is not UTF-8.
        &[0x0a, 0x02, 0xff, 0xfe],
        b"{\"id\":\"ev-1\"}",
    ];
    for b in cases {
        match proto::decode(b) {
            Err(DecodeError::Protobuf(_)) => {}
            other => panic!("expected a protobuf error for {b:?}, got {other:?}"),
        }
    }
}

#[test]
fn proto_validation_matches_json() {
    // Empty message: every field absent.
    assert_eq!(
        proto::decode(&[]).expect_err("empty").to_string(),
        "event: type is required"
    );
    let mut m = message("survey.nps");
    m.score = Some(11);
    assert_eq!(
        proto::decode(&m.encode_to_vec())
            .expect_err("nps 11")
            .to_string(),
        "survey.nps: score 11 out of range 0..=10"
    );
    let mut m = message("usage.login");
    m.user_id = None;
    assert_eq!(
        proto::decode(&m.encode_to_vec())
            .expect_err("no user")
            .to_string(),
        "usage.login: user_id is required"
    );
    let mut m = message("usage.login");
    m.r#type = "foo.bar".into();
    assert_eq!(
        proto::decode(&m.encode_to_vec())
            .expect_err("type")
            .to_string(),
        "unknown type `foo.bar`"
    );
    let mut m = message("usage.login");
    m.id = "x".repeat(129);
    assert!(matches!(
        proto::decode(&m.encode_to_vec()),
        Err(DecodeError::Field { field: "id", .. })
    ));
    m.id = "é".repeat(128);
    assert!(proto::decode(&m.encode_to_vec()).is_ok());
    let mut m = message("usage.feature");
    m.count = Some(0);
    assert!(matches!(
        proto::decode(&m.encode_to_vec()),
        Err(DecodeError::Field { field: "count", .. })
    ));
    m.count = None;
    assert!(matches!(
        proto::decode(&m.encode_to_vec())
            .expect("default count")
            .kind,
        EventKind::Feature { count: 1, .. }
    ));
    let mut m = message("subscription.started");
    m.currency = None;
    assert!(matches!(
        proto::decode(&m.encode_to_vec()).expect("default currency").kind,
        EventKind::SubscriptionStarted { currency, .. } if currency == "USD"
    ));
    m.currency = Some("usd".into());
    assert!(matches!(
        proto::decode(&m.encode_to_vec()),
        Err(DecodeError::Field {
            field: "currency",
            ..
        })
    ));
}

#[test]
fn proto_size_limit() {
    let mut m = message("cs.touchpoint");
    m.note = Some("n".repeat(MAX_RECORD_BYTES));
    let bin = m.encode_to_vec();
    assert!(bin.len() > MAX_RECORD_BYTES);
    assert_eq!(
        proto::decode(&bin),
        Err(DecodeError::TooLarge {
            size: bin.len(),
            limit: MAX_RECORD_BYTES
        })
    );
}
