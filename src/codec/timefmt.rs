//! RFC 3339 timestamps ⇄ milliseconds since the epoch.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::core::Ts;

/// Earliest accepted event time: 1970-01-01T00:00:00Z.
pub const MIN_TS: Ts = 0;
/// Latest accepted event time: 2200-01-01T00:00:00Z.
pub const MAX_TS: Ts = 7_258_118_400_000;

/// Parses an RFC 3339 timestamp to milliseconds (sub-millisecond digits are
/// truncated). `None` if it is not RFC 3339 or is outside 1970..2200.
pub fn parse(s: &str) -> Option<Ts> {
    if let Some(ms) = parse_utc_fast(s.as_bytes()) {
        return (MIN_TS..MAX_TS).contains(&ms).then_some(ms);
    }
    let dt = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    let ms = (dt.unix_timestamp_nanos().div_euclid(1_000_000)) as i64;
    (MIN_TS..MAX_TS).contains(&ms).then_some(ms)
}

/// The common case, `YYYY-MM-DDTHH:MM:SS[.f…]Z`, without the general
/// parser (it is a hot path: every event has a time). Anything else —
/// offsets, lowercase `t`/`z`, leap seconds, impossible dates — returns
/// `None` and goes to the full RFC 3339 parser, which decides.
fn parse_utc_fast(b: &[u8]) -> Option<Ts> {
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let mut v = 0i64;
        for &c in &b[r] {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + (c - b'0') as i64;
        }
        Some(v)
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut ms = 0i64;
    let rest = &b[19..];
    let tail = if rest[0] == b'.' {
        let digits = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        for k in 0..3 {
            ms = ms * 10
                + rest
                    .get(1 + k)
                    .filter(|_| k < digits)
                    .map_or(0, |c| (c - b'0') as i64);
        }
        &rest[1 + digits..]
    } else {
        rest
    };
    if tail != b"Z" || !(1..=12).contains(&mo) || h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let mdays = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if d < 1 || d > mdays[(mo - 1) as usize] {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let yy = if mo <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + mi) * 60_000 + sec * 1000 + ms)
}

/// Formats milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format(ts: Ts) -> String {
    let Ok(dt) = OffsetDateTime::from_unix_timestamp_nanos(ts as i128 * 1_000_000) else {
        return ts.to_string();
    };
    let (h, mi, s, ms) = dt.to_hms_milli();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        dt.year(),
        dt.month() as u8,
        dt.day(),
        h,
        mi,
        s,
        ms
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let t = parse("2026-03-01T12:34:56.789Z").unwrap();
        assert_eq!(format(t), "2026-03-01T12:34:56.789Z");
        assert_eq!(parse("2026-03-01T14:34:56.789+02:00"), Some(t));
        assert_eq!(parse("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse("1969-12-31T23:59:59Z"), None);
        assert_eq!(parse("2026-03-01"), None);
        assert_eq!(parse("yesterday"), None);
        assert_eq!(parse("2024-02-29T00:00:00Z"), Some(1_709_164_800_000));
        assert_eq!(parse("2025-02-29T00:00:00Z"), None);
        assert_eq!(parse("2026-03-01T12:34:56.7899999Z"), Some(t));
        assert_eq!(parse("2026-03-01T12:34:56Z"), Some(t - 789));
    }

    #[test]
    fn fast_path_agrees_with_the_library() {
        for s in [
            "1970-01-01T00:00:00Z",
            "2000-02-29T23:59:59.999Z",
            "2026-12-31T12:00:00.5Z",
            "2100-03-01T00:00:00.123456Z",
            "2199-12-31T23:59:59Z",
        ] {
            let lib = OffsetDateTime::parse(s, &Rfc3339).unwrap();
            let ms = (lib.unix_timestamp_nanos().div_euclid(1_000_000)) as i64;
            assert_eq!(parse_utc_fast(s.as_bytes()), Some(ms), "{s}");
        }
    }
}
