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
    let dt = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    let ms = (dt.unix_timestamp_nanos().div_euclid(1_000_000)) as i64;
    (MIN_TS..MAX_TS).contains(&ms).then_some(ms)
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
    }
}
