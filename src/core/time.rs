//! Event time. Every window, decay and timer in the core runs on these
//! values, never on a clock.

/// Milliseconds since the Unix epoch, UTC.
pub type Ts = i64;

pub const MS_PER_MIN: Ts = 60_000;
pub const MS_PER_HOUR: Ts = 3_600_000;
pub const MS_PER_DAY: Ts = 86_400_000;
pub const MS_PER_WEEK: Ts = 7 * MS_PER_DAY;

/// Days since the epoch (floor), for day-granular state.
pub fn day_of(ts: Ts) -> i32 {
    ts.div_euclid(MS_PER_DAY) as i32
}

/// Weeks since the epoch (floor). Epoch weeks start on Thursdays; that is
/// fine, only differences between weeks are used.
pub fn week_of(ts: Ts) -> i32 {
    ts.div_euclid(MS_PER_WEEK) as i32
}

/// Start of the day `d` in milliseconds.
pub fn day_start(d: i32) -> Ts {
    d as Ts * MS_PER_DAY
}
