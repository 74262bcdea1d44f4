//! An account's `AccountState` message written straight from the account:
//! byte for byte what prost writes for the message [`super::account_into`]
//! fills (a test checks both ways on folded partitions), without filling
//! that message's twenty-odd vectors first or measuring it before writing
//! it. Perf of a 1M-account snapshot write put half of the encoder's time
//! in those two passes and in prost's byte-at-a-time varints.
//!
//! Fields go in tag order, as prost writes them; a proto3 scalar at its
//! default and an empty repeated field are left out, an `optional` one is
//! written whenever it is set. The rare parts (override, audit trail) and
//! the small `Decayed` messages are built and written by prost itself.

use prost::encoding::message;

use crate::core::account::{Account, SupportWeeks, WEEKS};

use super::{audit, dec, happened, ov, pb, StateError};

/// Wire types.
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;

#[inline(always)]
fn varint(b: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        b.push(v as u8 | 0x80);
        v >>= 7;
    }
    b.push(v as u8);
}

#[inline(always)]
fn key(b: &mut Vec<u8>, tag: u32, wire: u32) {
    varint(b, u64::from(tag << 3 | wire));
}

#[inline(always)]
fn zigzag32(v: i32) -> u64 {
    u64::from(((v << 1) ^ (v >> 31)) as u32)
}

#[inline(always)]
fn zigzag64(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// `uint32`/`uint64`/`bool` (as 0/1): left out at 0.
#[inline(always)]
fn uint(b: &mut Vec<u8>, tag: u32, v: u64) {
    if v != 0 {
        key(b, tag, VARINT);
        varint(b, v);
    }
}

/// `optional uint32`: written when set, 0 included.
#[inline(always)]
fn opt_uint(b: &mut Vec<u8>, tag: u32, v: Option<u64>) {
    if let Some(v) = v {
        key(b, tag, VARINT);
        varint(b, v);
    }
}

#[inline(always)]
fn sint32(b: &mut Vec<u8>, tag: u32, v: i32) {
    uint(b, tag, zigzag32(v));
}

#[inline(always)]
fn sint64(b: &mut Vec<u8>, tag: u32, v: i64) {
    uint(b, tag, zigzag64(v));
}

/// `optional sint64` holding a time: written when it has happened.
#[inline(always)]
fn time(b: &mut Vec<u8>, tag: u32, t: i64) {
    opt_uint(b, tag, happened(t).map(zigzag64));
}

fn double(b: &mut Vec<u8>, tag: u32, v: f64) {
    if v != 0.0 {
        key(b, tag, FIXED64);
        b.extend_from_slice(&v.to_le_bytes());
    }
}

/// A packed `fixed32` field.
fn packed_fixed32(b: &mut Vec<u8>, tag: u32, vs: impl ExactSizeIterator<Item = u32>) {
    if vs.len() == 0 {
        return;
    }
    key(b, tag, LEN);
    varint(b, 4 * vs.len() as u64);
    for v in vs {
        b.extend_from_slice(&v.to_le_bytes());
    }
}

/// A length-delimited field of `bytes`.
pub(super) fn bytes_field(b: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    key(b, tag, LEN);
    varint(b, bytes.len() as u64);
    b.extend_from_slice(bytes);
}

/// A length-delimited field whose contents `write` appends, and their
/// length. The length goes in `guess` bytes before them and is moved
/// over when it needs more or fewer: no pass to measure the contents
/// first and, in the common case, no copy.
fn delimited_field(
    b: &mut Vec<u8>,
    tag: u32,
    guess: usize,
    write: impl FnOnce(&mut Vec<u8>),
) -> usize {
    key(b, tag, LEN);
    let at = b.len();
    b.resize(at + guess, 0);
    write(b);
    let len = b.len() - at - guess;
    // The length as a varint, on the stack.
    let (mut prefix, mut n, mut v) = ([0u8; 10], 0, len as u64);
    while v >= 0x80 {
        prefix[n] = v as u8 | 0x80;
        v >>= 7;
        n += 1;
    }
    prefix[n] = v as u8;
    let prefix = &prefix[..=n];
    if prefix.len() == guess {
        b[at..at + guess].copy_from_slice(prefix);
    } else {
        b.splice(at..at + guess, prefix.iter().copied());
    }
    len
}

/// An account as a length-delimited field `tag` (`PartitionState.accounts`).
pub(super) fn account_field(b: &mut Vec<u8>, tag: u32, a: &Account) {
    // A simulated account's message is 128 bytes to 16 KB: two bytes.
    delimited_field(b, tag, 2, |b| account(a, b));
}

/// A packed varint field (`uint32`, `uint64`, `sint32` zigzagged by the
/// caller, `bool`); left out when empty.
fn packed(b: &mut Vec<u8>, tag: u32, vs: impl Iterator<Item = u64>) {
    let start = b.len();
    let len = delimited_field(b, tag, 1, |b| {
        for v in vs {
            varint(b, v);
        }
    });
    if len == 0 {
        b.truncate(start);
    }
}

/// A week column: left out when all its cells are 0 (as `fill_week`).
fn week<T: Copy + Default + PartialEq + Into<u64>>(b: &mut Vec<u8>, tag: u32, cells: &[T; WEEKS]) {
    if cells.iter().any(|c| *c != T::default()) {
        packed(b, tag, cells.iter().map(|&c| c.into()));
    }
}

/// `days` as their newest (field `base_tag`) and each one's distance back
/// from it (field `base_tag + 1`), as `days_back` fills them.
fn days_back(b: &mut Vec<u8>, base_tag: u32, days: impl Iterator<Item = i32> + Clone) {
    let base = days.clone().max().unwrap_or(0);
    sint32(b, base_tag, base);
    packed(b, base_tag + 1, days.map(|d| u64::from(base.abs_diff(d))));
}

/// Appends `a`'s `AccountState` message (without key or length).
pub(super) fn account(a: &Account, b: &mut Vec<u8>) {
    let w = &a.weeks;
    let ex = a.extras.as_deref();
    let sup = a.support.as_deref();
    let sv = a.surveys();
    let p = a.alert.published;
    let tickets = a.open_tickets();
    let has_surveys = a.surveys.is_some();
    if !a.id.is_empty() {
        bytes_field(b, 1, a.id.as_bytes());
    }
    uint(b, 2, a.segment.into());
    uint(b, 3, a.tier.into());
    uint(b, 4, a.owner.into());
    uint(b, 5, a.plan.into());
    uint(b, 6, a.scorecard.into());
    sint64(b, 7, a.first_seen);
    time(b, 8, a.subscribed_at);
    time(b, 9, a.cancelled_at);
    time(b, 10, a.last_eval);
    time(b, 11, a.last_activity);
    // 12 (users, format 4) is not written.
    packed_fixed32(b, 13, a.features.iter().map(|f| f.0));
    // 14 (feature days, format 4) is not written.
    packed(b, 15, a.features.iter().map(|f| u64::from(f.2)));
    sint32(b, 16, w.head);
    week(b, 17, &w.activity);
    week(b, 18, &w.wau);
    let sw = sup.map_or(SupportWeeks::default(), |s| s.weeks);
    week(b, 19, &sw.tickets);
    week(b, 20, &sw.escalations);
    week(b, 21, &sw.reopens);
    uint(b, 22, a.seats_licensed.into());
    uint(b, 23, a.tickets_total.into());
    packed_fixed32(b, 24, tickets.iter().map(|t| t.hash));
    packed(b, 25, tickets.iter().map(|t| u64::from(t.opened_min)));
    packed(b, 26, tickets.iter().map(|t| t.priority as u64));
    packed(b, 27, tickets.iter().map(|t| u64::from(t.escalated)));
    double(b, 28, sup.map_or(0.0, |s| s.resolve_hours));
    uint(b, 29, sup.map_or(0, |s| s.resolved).into());
    if let Some(s) = sup {
        message::encode(30, &dec(&s.ticket_csat), b);
    }
    uint(b, 31, a.mrr_cents());
    packed(b, 32, a.mrr_history.iter().map(|m| zigzag32(m.0)));
    packed(b, 33, a.mrr_history.iter().map(|m| m.1));
    packed_fixed32(b, 34, a.unpaid.iter().map(|u| u.hash));
    packed(b, 35, a.unpaid.iter().map(|u| u64::from(u.failures)));
    packed(b, 36, a.unpaid.iter().map(|u| u64::from(u.days_overdue)));
    packed(b, 37, a.unpaid.iter().map(|u| zigzag32(u.overdue_day)));
    packed(b, 38, a.unpaid.iter().map(|u| u.amount_cents));
    uint(b, 39, a.payments_failed_total.into());
    time(b, 40, a.renews_at);
    if has_surveys {
        message::encode(41, &dec(&sv.nps), b);
    }
    opt_uint(b, 42, sv.last_nps.map(|n| n.0.into()));
    sint32(b, 43, sv.last_nps.map_or(0, |n| n.1));
    if has_surveys {
        message::encode(44, &dec(&sv.csat), b);
        message::encode(45, &dec(&sv.ces), b);
    }
    uint(b, 46, a.onboarding.into());
    uint(b, 47, a.touchpoints.into());
    time(b, 48, a.last_touchpoint);
    if let Some(e) = ex {
        if let Some(o) = &e.active_override {
            message::encode(49, &ov(o), b);
        }
        for x in &e.audit {
            message::encode(50, &audit(x), b);
        }
    }
    uint(b, 51, a.alert.band.to_u8().into());
    uint(b, 52, a.alert.at_risk_open.into());
    time(b, 53, a.alert.last_at_risk_alert);
    uint(b, 54, a.alert.upsell_active.into());
    time(b, 55, a.alert.last_upsell_alert);
    uint(b, 56, p.is_some().into());
    // 57 (the published score as a double, format 4) is not written.
    uint(b, 58, p.map_or(0, |p| p.band.to_u8()).into());
    opt_uint(
        b,
        59,
        p.and_then(|p| happened(p.override_set_at)).map(zigzag64),
    );
    uint(b, 60, p.is_some_and(|p| p.cancelled).into());
    uint(b, 61, p.map_or(0, |p| p.scorecard).into());
    if !a.alert.score_days.is_empty() {
        bytes_field(b, 62, &a.alert.score_days);
    }
    sint32(b, 63, a.alert.score_head);
    time(b, 64, a.timer_due);
    uint(b, 65, ex.is_some().into());
    uint(b, 66, sup.is_some().into());
    uint(b, 67, has_surveys.into());
    uint(b, 68, a.alert.at_risk_pending.into());
    uint(b, 69, a.alert.upsell_pending.into());
    opt_uint(b, 70, sv.last_csat.map(|n| n.0.into()));
    sint32(b, 71, sv.last_csat.map_or(0, |n| n.1));
    opt_uint(b, 72, sv.last_ces.map(|n| n.0.into()));
    sint32(b, 73, sv.last_ces.map_or(0, |n| n.1));
    packed_fixed32(b, 74, a.users.iter().map(|u| (u >> 32) as u32));
    days_back(b, 75, a.users.iter().map(|&u| u as u32 as i32));
    days_back(b, 77, a.features.iter().map(|f| f.1));
    opt_uint(b, 79, p.map(|p| p.score_tenths.into()));
}

/// Reads an `AccountState` message into `s` (cleared by the caller): what
/// `s.merge(bytes)` does, field for field, with the fields a snapshot
/// writes read here — scalars and packed columns straight into place —
/// and every other field, wire type or shape (strings, messages, unpacked
/// repeated values, unknown fields) handed to prost's own `merge_field`.
/// A test holds the two to the same result on damaged messages too.
/// Perf of a 1M-account restore put a third of its time in prost's merge.
pub(super) fn read_account(mut buf: &[u8], s: &mut pb::AccountState) -> Result<(), StateError> {
    while !buf.is_empty() {
        let at = buf;
        let key = read_key(&mut buf);
        let b = &mut buf;
        match key {
            Some(k) if k & 7 == VARINT => match k >> 3 {
                2 => s.segment = read_varint(b)? as u32,
                3 => s.tier = read_varint(b)? as u32,
                4 => s.owner = read_varint(b)? as u32,
                5 => s.plan = read_varint(b)? as u32,
                6 => s.scorecard = read_varint(b)? as u32,
                7 => s.first_seen = unzigzag64(read_varint(b)?),
                8 => s.subscribed_at = Some(unzigzag64(read_varint(b)?)),
                9 => s.cancelled_at = Some(unzigzag64(read_varint(b)?)),
                10 => s.last_eval = Some(unzigzag64(read_varint(b)?)),
                11 => s.last_activity = Some(unzigzag64(read_varint(b)?)),
                16 => s.weeks_head = unzigzag32(read_varint(b)?),
                22 => s.seats_licensed = read_varint(b)? as u32,
                23 => s.tickets_total = read_varint(b)? as u32,
                29 => s.resolved = read_varint(b)? as u32,
                31 => s.mrr_cents = read_varint(b)?,
                39 => s.payments_failed_total = read_varint(b)? as u32,
                40 => s.renews_at = Some(unzigzag64(read_varint(b)?)),
                42 => s.last_nps_score = Some(read_varint(b)? as u32),
                43 => s.last_nps_day = unzigzag32(read_varint(b)?),
                46 => s.onboarding = read_varint(b)? as u32,
                47 => s.touchpoints = read_varint(b)? as u32,
                48 => s.last_touchpoint = Some(unzigzag64(read_varint(b)?)),
                51 => s.band = read_varint(b)? as u32,
                52 => s.at_risk_open = read_varint(b)? != 0,
                53 => s.last_at_risk_alert = Some(unzigzag64(read_varint(b)?)),
                54 => s.upsell_active = read_varint(b)? != 0,
                55 => s.last_upsell_alert = Some(unzigzag64(read_varint(b)?)),
                56 => s.has_published = read_varint(b)? != 0,
                58 => s.published_band = read_varint(b)? as u32,
                59 => s.published_override_set_at = Some(unzigzag64(read_varint(b)?)),
                60 => s.published_cancelled = read_varint(b)? != 0,
                61 => s.published_scorecard = read_varint(b)? as u32,
                63 => s.score_head = unzigzag32(read_varint(b)?),
                64 => s.timer_due = Some(unzigzag64(read_varint(b)?)),
                65 => s.has_extras = read_varint(b)? != 0,
                66 => s.has_support = read_varint(b)? != 0,
                67 => s.has_surveys = read_varint(b)? != 0,
                68 => s.at_risk_pending = read_varint(b)? != 0,
                69 => s.upsell_pending = read_varint(b)? != 0,
                70 => s.last_csat_score = Some(read_varint(b)? as u32),
                71 => s.last_csat_day = unzigzag32(read_varint(b)?),
                72 => s.last_ces_score = Some(read_varint(b)? as u32),
                73 => s.last_ces_day = unzigzag32(read_varint(b)?),
                75 => s.user_day_base = unzigzag32(read_varint(b)?),
                77 => s.feature_day_base = unzigzag32(read_varint(b)?),
                79 => s.published_tenths = Some(read_varint(b)? as u32),
                _ => other(at, b, s)?,
            },
            Some(k) if k & 7 == LEN => match k >> 3 {
                1 => {
                    let id = std::str::from_utf8(delimited(b, "account field")?)
                        .map_err(|_| StateError::Malformed("account id"))?;
                    s.id.clear();
                    s.id.push_str(id);
                }
                62 => {
                    let days = delimited(b, "account field")?;
                    s.score_days.clear();
                    s.score_days.extend_from_slice(days);
                }
                13 => fixed32s(b, &mut s.feature_hash)?,
                15 => varints(b, &mut s.feature_count, |v| v as u32)?,
                17 => varints(b, &mut s.week_activity, |v| v as u32)?,
                18 => varints(b, &mut s.week_wau, |v| v as u32)?,
                19 => varints(b, &mut s.week_tickets, |v| v as u32)?,
                20 => varints(b, &mut s.week_escalations, |v| v as u32)?,
                21 => varints(b, &mut s.week_reopens, |v| v as u32)?,
                24 => fixed32s(b, &mut s.ticket_hash)?,
                25 => varints(b, &mut s.ticket_opened_min, |v| v as u32)?,
                26 => varints(b, &mut s.ticket_priority, |v| v as u32)?,
                27 => varints(b, &mut s.ticket_escalated, |v| v != 0)?,
                32 => varints(b, &mut s.mrr_day, unzigzag32)?,
                33 => varints(b, &mut s.mrr_value, |v| v)?,
                34 => fixed32s(b, &mut s.unpaid_hash)?,
                35 => varints(b, &mut s.unpaid_failures, |v| v as u32)?,
                36 => varints(b, &mut s.unpaid_days_overdue, |v| v as u32)?,
                37 => varints(b, &mut s.unpaid_overdue_day, unzigzag32)?,
                38 => varints(b, &mut s.unpaid_amount, |v| v)?,
                74 => fixed32s(b, &mut s.user_hash)?,
                76 => varints(b, &mut s.user_day_back, |v| v as u32)?,
                78 => varints(b, &mut s.feature_day_back, |v| v as u32)?,
                _ => other(at, b, s)?,
            },
            _ => other(at, b, s)?,
        }
    }
    Ok(())
}

/// A field's key, when it takes one or two bytes (every key of an
/// `AccountState` does); `None` leaves the key to [`other`].
#[inline(always)]
fn read_key(buf: &mut &[u8]) -> Option<u32> {
    match **buf {
        [k, ..] if k < 0x80 => {
            *buf = &buf[1..];
            Some(u32::from(k))
        }
        [k0, k1, ..] if k1 < 0x80 => {
            *buf = &buf[2..];
            Some(u32::from(k0 & 0x7f) | u32::from(k1) << 7)
        }
        _ => None,
    }
}

/// The field whose key starts `at` (where `buf` is rewound to), read by
/// prost — key checks included — into `s`.
fn other<'a>(at: &'a [u8], buf: &mut &'a [u8], s: &mut pb::AccountState) -> Result<(), StateError> {
    use prost::Message;
    *buf = at;
    let (tag, wire) = prost::encoding::decode_key(buf)?;
    s.merge_field(tag, wire, buf, prost::encoding::DecodeContext::default())?;
    Ok(())
}

#[inline(always)]
fn read_varint(buf: &mut &[u8]) -> Result<u64, prost::DecodeError> {
    // One byte is the common case: a small count, a day back, a flag.
    match buf.first() {
        Some(&v) if v < 0x80 => {
            *buf = &buf[1..];
            Ok(u64::from(v))
        }
        _ => prost::encoding::decode_varint(buf),
    }
}

#[inline(always)]
fn unzigzag32(v: u64) -> i32 {
    let v = v as u32;
    ((v >> 1) as i32) ^ (-((v & 1) as i32))
}

#[inline(always)]
fn unzigzag64(v: u64) -> i64 {
    ((v >> 1) as i64) ^ (-((v & 1) as i64))
}

/// The bytes of a length-delimited field (`buf` is past its key); a
/// length past the end is a malformed `what`.
pub(super) fn delimited<'a>(
    buf: &mut &'a [u8],
    what: &'static str,
) -> Result<&'a [u8], StateError> {
    let len = prost::encoding::decode_varint(buf)?;
    if len > buf.len() as u64 {
        return Err(StateError::Malformed(what));
    }
    let (field, rest) = buf.split_at(len as usize);
    *buf = rest;
    Ok(field)
}

/// A packed varint column, appended (as prost appends repeated fields).
fn varints<T>(buf: &mut &[u8], out: &mut Vec<T>, f: impl Fn(u64) -> T) -> Result<(), StateError> {
    let mut field = delimited(buf, "account field")?;
    while !field.is_empty() {
        out.push(f(read_varint(&mut field)?));
    }
    Ok(())
}

/// A packed `fixed32` column, appended.
fn fixed32s(buf: &mut &[u8], out: &mut Vec<u32>) -> Result<(), StateError> {
    let field = delimited(buf, "account field")?;
    let words = field.chunks_exact(4);
    if !words.remainder().is_empty() {
        return Err(StateError::Malformed("account field"));
    }
    out.extend(words.map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]])));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Packed fields of every length, a length of one varint byte or more,
    /// come out as prost writes them.
    #[test]
    fn packed_fields_are_written_as_prost_writes_them() {
        for n in [0usize, 1, 5, 42, 127, 128, 200, 20_000] {
            let vs: Vec<u64> = (0..n as u64).map(|i| i * i * 977).collect();
            let mut ours = vec![7];
            packed(&mut ours, 33, vs.iter().copied());
            let mut theirs = vec![7];
            prost::encoding::uint64::encode_packed(33, &vs, &mut theirs);
            assert_eq!(ours, theirs, "{n} values");
        }
        // Zigzag as prost writes `sint32`/`sint64`: the varint after the key.
        let after_key = |b: Vec<u8>| prost::encoding::decode_varint(&mut &b[1..]).expect("varint");
        for v in [0i32, 1, -1, 63, -64, i32::MAX, i32::MIN] {
            let mut b = Vec::new();
            prost::encoding::sint32::encode(1, &v, &mut b);
            assert_eq!(zigzag32(v), after_key(b), "{v}");
        }
        for v in [0i64, 1, -1, i64::from(i32::MIN) - 1, i64::MAX, i64::MIN] {
            let mut b = Vec::new();
            prost::encoding::sint64::encode(1, &v, &mut b);
            assert_eq!(zigzag64(v), after_key(b), "{v}");
        }
    }
}
