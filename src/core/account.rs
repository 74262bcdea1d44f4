//! Per-account state and how each event changes it. Memory is bounded by
//! [`Limits`]: every collection here has a cap and an eviction rule.

use thin_vec::ThinVec;

use super::config::Limits;
use super::event::{Band, EventKind, Priority};
use super::time::{day_of, week_of, Ts, MS_PER_DAY, MS_PER_HOUR, MS_PER_MIN};

/// No day (state not set).
pub const NO_DAY: i32 = i32::MIN;
/// No timestamp.
pub const NEVER: Ts = i64::MIN;
/// Weeks kept in the ring: the current week plus two complete 4-week windows.
pub const WEEKS: usize = 9;
/// Days of score history kept (for the 30-day trend and sharp drops).
pub const SCORE_DAYS: usize = 32;
/// "No score recorded" in the daily score ring.
pub const NO_SCORE: u8 = u8::MAX;

/// Stable 64-bit hash of a string (xxh3); stable across builds and
/// platforms, so it may be stored in snapshots.
pub fn hash64(s: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(s.as_bytes())
}

/// Stable 32-bit hash (the high half of xxh3), for per-account sets where
/// a rare collision only merges two users/features/tickets.
pub fn hash32(s: &str) -> u32 {
    (hash64(s) >> 32) as u32
}

/// Makes room for one more element in `v` without the doubling a vector
/// grows by. The state is a million small vectors that mostly stop growing
/// after a few elements (9 users, 7 features, one MRR change per account
/// in a 30-day simulation): doubling left a third of their capacity empty,
/// ~110 bytes an account. The allocator (mimalloc) grows a block in place
/// while its size class has room, so growing by one is not a copy each
/// time.
fn room_for_one<T>(v: &mut ThinVec<T>) {
    if v.len() == v.capacity() {
        v.reserve_exact(1);
    }
}

/// Counts for one week of event time (read from [`WeekRing`] and
/// [`SupportWeeks`] by [`Account::week`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WeekCell {
    /// Logins plus feature uses (with their `count`).
    pub activity: u32,
    /// Distinct active users that week.
    pub wau: u16,
    pub tickets: u8,
    pub escalations: u8,
    pub reopens: u8,
}

/// The last [`WEEKS`] weeks of usage, indexed by week number modulo
/// [`WEEKS`]. `head` is the newest week written; cells older than
/// `head - WEEKS + 1` are zero. Stored column-wise (no padding). The
/// support counts of the same weeks, in the same slots, live in
/// [`Support::weeks`] (most accounts have no ticket); [`Account::week`]
/// reads both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeekRing {
    pub head: i32,
    pub activity: [u32; WEEKS],
    pub wau: [u16; WEEKS],
}

/// Tickets opened, escalations and reopens per week, in the slots of the
/// account's [`WeekRing`] (its `head`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SupportWeeks {
    pub tickets: [u8; WEEKS],
    pub escalations: [u8; WEEKS],
    pub reopens: [u8; WEEKS],
}

impl Default for WeekRing {
    fn default() -> Self {
        WeekRing {
            head: NO_DAY,
            activity: [0; WEEKS],
            wau: [0; WEEKS],
        }
    }
}

impl WeekRing {
    /// The ring index of `week`.
    pub fn slot(week: i32) -> usize {
        week.rem_euclid(WEEKS as i32) as usize
    }

    /// The slot for `week`, rolling the ring forward if needed (clearing
    /// the weeks it passes, in `support` too). `None` when the week is
    /// older than the ring holds.
    fn roll(&mut self, week: i32, mut support: Option<&mut SupportWeeks>) -> Option<usize> {
        if self.head == NO_DAY {
            self.head = week;
        } else if week > self.head {
            let gap = (week - self.head).min(WEEKS as i32);
            for k in 1..=gap {
                let i = Self::slot(self.head + k);
                self.activity[i] = 0;
                self.wau[i] = 0;
                if let Some(s) = support.as_deref_mut() {
                    s.tickets[i] = 0;
                    s.escalations[i] = 0;
                    s.reopens[i] = 0;
                }
            }
            self.head = week;
        } else if week <= self.head - WEEKS as i32 {
            return None;
        }
        Some(Self::slot(week))
    }

    /// The slot holding `week`, if the ring holds it (as seen from `head`).
    pub fn held(&self, week: i32) -> Option<usize> {
        if self.head == NO_DAY || week > self.head || week <= self.head - WEEKS as i32 {
            None
        } else {
            Some(Self::slot(week))
        }
    }
}

/// A decayed mean of survey answers (exponential weights by event time).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Decayed {
    /// Σ wᵢ·xᵢ as of `day`.
    pub sum: f64,
    /// Σ wᵢ as of `day`.
    pub weight: f64,
    pub day: i32,
    pub count: u32,
}

impl Decayed {
    pub const ZERO: Decayed = Decayed {
        sum: 0.0,
        weight: 0.0,
        day: 0,
        count: 0,
    };

    fn factor(from: i32, to: i32, half_life: f64) -> f64 {
        if to <= from {
            1.0
        } else {
            (-((to - from) as f64) / half_life).exp2()
        }
    }

    pub fn add(&mut self, day: i32, x: f64, half_life: f64) {
        if self.count == 0 {
            self.day = day;
        }
        if day >= self.day {
            let f = Self::factor(self.day, day, half_life);
            self.sum = self.sum * f + x;
            self.weight = self.weight * f + 1.0;
            self.day = day;
        } else {
            // A late answer: add it with its own decay relative to `day`.
            let f = Self::factor(day, self.day, half_life);
            self.sum += x * f;
            self.weight += f;
        }
        self.count = self.count.saturating_add(1);
    }

    /// The mean at `day`, shrunk toward `prior` with `prior_weight`.
    pub fn mean(&self, day: i32, half_life: f64, prior: f64, prior_weight: f64) -> f64 {
        if self.count == 0 {
            return prior;
        }
        let f = Self::factor(self.day, day, half_life);
        (self.sum * f + prior * prior_weight) / (self.weight * f + prior_weight)
    }
}

/// Survey state (boxed: many accounts never answer a survey).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Surveys {
    pub nps: Decayed,
    /// Latest answers `(score, day)`, for the portfolio's survey means.
    pub last_nps: Option<(u8, i32)>,
    pub csat: Decayed,
    pub last_csat: Option<(u8, i32)>,
    pub ces: Decayed,
    pub last_ces: Option<(u8, i32)>,
}

/// Support state beyond the weekly counts (boxed: allocated on the first
/// ticket).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Support {
    pub weeks: SupportWeeks,
    pub open_tickets: ThinVec<Ticket>,
    /// Mean hours to resolve, and how many resolutions it averages.
    pub resolve_hours: f64,
    pub resolved: u32,
    pub ticket_csat: Decayed,
}

static NO_SURVEYS: Surveys = Surveys {
    nps: Decayed::ZERO,
    last_nps: None,
    csat: Decayed::ZERO,
    last_csat: None,
    ces: Decayed::ZERO,
    last_ces: None,
};

/// An open support ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    pub hash: u32,
    /// Minutes since the epoch when it was opened (or reopened).
    pub opened_min: u32,
    pub priority: Priority,
    pub escalated: bool,
}

/// An invoice that failed or is overdue and not yet paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unpaid {
    pub hash: u32,
    pub failures: u16,
    /// Days overdue as reported at `overdue_day` (0 if never reported).
    pub days_overdue: u16,
    pub overdue_day: i32,
    pub amount_cents: u64,
}

/// A manual health override (`health.override`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub band: Option<Band>,
    pub score: Option<u8>,
    pub reason: Box<str>,
    pub by: Option<Box<str>>,
    pub set_at: Ts,
    pub expires_at: Ts,
    /// Id of the event that set it.
    pub event_id: Box<str>,
}

/// How an override ended, for the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverrideEnd {
    Active,
    Expired,
    Replaced,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverrideAudit {
    pub entry: Override,
    pub end: OverrideEnd,
    pub ended_at: Ts,
}

/// Rarely present parts of an account, boxed to keep the common account small.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extras {
    pub active_override: Option<Override>,
    /// The last [`AUDIT_KEEP`] overrides that ended, oldest first.
    pub audit: Vec<OverrideAudit>,
}

pub const AUDIT_KEEP: usize = 8;

/// Onboarding milestones (bits of [`Account::onboarding`]).
pub mod milestone {
    pub const FIRST_USE: u8 = 1;
    pub const THREE_USERS: u8 = 2;
    pub const THREE_FEATURES: u8 = 4;
    pub const ONBOARDED: u8 = 8;
}

/// Alert and publication state of an account.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertState {
    pub band: Band,
    /// An `at_risk` alert was raised and `recovered` has not followed yet.
    pub at_risk_open: bool,
    pub last_at_risk_alert: Ts,
    /// Entering `at_risk` was held back by the cooldown; re-checked when it
    /// expires.
    pub at_risk_pending: bool,
    /// The upsell condition held at the last evaluation.
    pub upsell_active: bool,
    /// An upsell was held back by the cooldown; re-checked when it expires.
    pub upsell_pending: bool,
    pub last_upsell_alert: Ts,
    /// Last published health: score (rounded), band, override and status.
    pub published: Option<Published>,
    /// Score at the end of each of the last [`SCORE_DAYS`] days, by day modulo.
    pub score_days: [u8; SCORE_DAYS],
    pub score_head: i32,
}

impl Default for AlertState {
    fn default() -> Self {
        AlertState {
            band: Band::Neutral,
            at_risk_open: false,
            at_risk_pending: false,
            last_at_risk_alert: NEVER,
            upsell_active: false,
            upsell_pending: false,
            last_upsell_alert: NEVER,
            published: None,
            score_days: [NO_SCORE; SCORE_DAYS],
            score_head: NO_DAY,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Published {
    /// The score published, in tenths (scores are published rounded to
    /// one decimal: 2 bytes instead of an `f64`'s 8).
    pub score_tenths: u16,
    pub band: Band,
    /// `set_at` of the override shown, or `NEVER`.
    pub override_set_at: Ts,
    pub cancelled: bool,
    pub scorecard: u16,
}

impl Published {
    /// The published score, exactly the `f64` that was published
    /// ([`crate::core::score::round1`] of the computed score).
    pub fn score(&self) -> f64 {
        self.score_tenths as f64 / 10.0
    }

    /// Tenths of a score already rounded to one decimal (0..=100).
    pub fn tenths(score: f64) -> u16 {
        (score * 10.0).round().clamp(0.0, 1000.0) as u16
    }
}

impl AlertState {
    fn slot(day: i32) -> usize {
        day.rem_euclid(SCORE_DAYS as i32) as usize
    }

    /// Records the score for `day`, carrying the previous score forward
    /// over days with no evaluation.
    pub fn record_score(&mut self, day: i32, score: f64) {
        let s = score.round().clamp(0.0, 100.0) as u8;
        if self.score_head != NO_DAY && day > self.score_head {
            let prev = self.score_days[Self::slot(self.score_head)];
            let gap = (day - self.score_head).min(SCORE_DAYS as i32);
            for k in 1..gap {
                self.score_days[Self::slot(day - gap + k)] = prev;
            }
        }
        if self.score_head == NO_DAY || day >= self.score_head {
            self.score_days[Self::slot(day)] = s;
            self.score_head = day;
        }
    }

    /// The newest recorded daily score, if any.
    pub fn latest_score(&self) -> Option<u8> {
        if self.score_head == NO_DAY {
            return None;
        }
        match self.score_days[Self::slot(self.score_head)] {
            NO_SCORE => None,
            s => Some(s),
        }
    }

    /// The score in effect at the end of `day`: the recorded score of that
    /// day, or the newest one when `day` is after the last recorded day
    /// (scores carry forward). None before the ring's oldest day.
    pub fn score_as_of(&self, day: i32) -> Option<u8> {
        if self.score_head != NO_DAY && day > self.score_head {
            self.latest_score()
        } else {
            self.score_on(day)
        }
    }

    /// The recorded score of `day`, if held.
    pub fn score_on(&self, day: i32) -> Option<u8> {
        if self.score_head == NO_DAY
            || day > self.score_head
            || day <= self.score_head - SCORE_DAYS as i32
        {
            return None;
        }
        match self.score_days[Self::slot(day)] {
            NO_SCORE => None,
            s => Some(s),
        }
    }
}

/// Longest account id kept inline in [`AccountId`].
pub const INLINE_ID: usize = 22;

/// An account id. Ids of up to [`INLINE_ID`] bytes (the usual kind) live
/// inside the account, in its first cache line: the fold compares the id on
/// every event (account lookup), and a separate allocation was one more
/// cache miss per event and 32 more bytes per account. Longer ids are
/// boxed. Behaves as a `str` (`Deref`, equality, order, `Debug`, `Display`).
#[derive(Clone)]
pub enum AccountId {
    Inline { len: u8, bytes: [u8; INLINE_ID] },
    Boxed(Box<str>),
}

impl AccountId {
    pub fn new(id: &str) -> Self {
        if id.len() <= INLINE_ID {
            let mut bytes = [0; INLINE_ID];
            bytes[..id.len()].copy_from_slice(id.as_bytes());
            AccountId::Inline {
                len: id.len() as u8,
                bytes,
            }
        } else {
            AccountId::Boxed(id.into())
        }
    }

    /// The id's bytes (no UTF-8 check: for comparing).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            AccountId::Inline { len, bytes } => &bytes[..*len as usize],
            AccountId::Boxed(b) => b.as_bytes(),
        }
    }

    /// Bytes allocated outside the account (memory accounting).
    pub fn heap_bytes(&self) -> usize {
        match self {
            AccountId::Inline { .. } => 0,
            AccountId::Boxed(b) => b.len(),
        }
    }
}

impl std::ops::Deref for AccountId {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            // Always valid: the bytes were copied whole from a `str`.
            AccountId::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..*len as usize]).unwrap_or_default()
            }
            AccountId::Boxed(b) => b,
        }
    }
}

impl AsRef<str> for AccountId {
    fn as_ref(&self) -> &str {
        self
    }
}

impl From<&str> for AccountId {
    fn from(s: &str) -> Self {
        AccountId::new(s)
    }
}

impl From<String> for AccountId {
    fn from(s: String) -> Self {
        AccountId::new(&s)
    }
}

impl PartialEq for AccountId {
    fn eq(&self, o: &Self) -> bool {
        self.as_bytes() == o.as_bytes()
    }
}

impl Eq for AccountId {}

impl PartialOrd for AccountId {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for AccountId {
    /// As `str` orders (byte-wise).
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.as_bytes().cmp(o.as_bytes())
    }
}

impl std::fmt::Debug for AccountId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

impl std::fmt::Display for AccountId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

/// Everything the fold knows about one account.
#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    pub id: AccountId,
    /// Interned labels (0 = none); see `Labels`.
    pub segment: u16,
    pub tier: u16,
    pub owner: u16,
    pub plan: u16,
    /// Index of the scorecard in use (0 = default).
    pub scorecard: u16,
    pub first_seen: Ts,
    pub subscribed_at: Ts,
    pub cancelled_at: Ts,
    pub last_eval: Ts,
    pub last_activity: Ts,
    /// Users seen: `(hash << 32) | last active day`, sorted by hash.
    pub users: ThinVec<u64>,
    /// Features used: `(hash, last day, count)`, sorted by hash.
    pub features: ThinVec<(u32, i32, u32)>,
    pub weeks: WeekRing,
    pub seats_licensed: u32,
    pub tickets_total: u32,
    pub support: Option<Box<Support>>,
    /// MRR changes `(day, mrr after)` of the last 90 days, plus the last one
    /// before them, oldest first: the last is the current MRR
    /// ([`Account::mrr_cents`]).
    pub mrr_history: ThinVec<(i32, u64)>,
    pub unpaid: ThinVec<Unpaid>,
    pub payments_failed_total: u32,
    pub renews_at: Ts,
    pub surveys: Option<Box<Surveys>>,
    pub onboarding: u8,
    pub touchpoints: u32,
    pub last_touchpoint: Ts,
    pub extras: Option<Box<Extras>>,
    pub alert: AlertState,
    /// The next time this account must be re-scored without new events.
    pub timer_due: Ts,
}

/// Counters the shell turns into metrics: limits that dropped data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitHits {
    pub users_evicted: u64,
    pub features_evicted: u64,
    pub tickets_evicted: u64,
    pub invoices_evicted: u64,
    pub labels_ignored: u64,
    pub too_old_for_window: u64,
}

impl Account {
    pub fn new(id: &str, time: Ts) -> Self {
        Account {
            id: id.into(),
            segment: 0,
            tier: 0,
            owner: 0,
            plan: 0,
            scorecard: 0,
            first_seen: time,
            subscribed_at: NEVER,
            cancelled_at: NEVER,
            last_eval: NEVER,
            last_activity: NEVER,
            users: ThinVec::new(),
            features: ThinVec::new(),
            weeks: WeekRing::default(),
            seats_licensed: 0,
            tickets_total: 0,
            support: None,
            mrr_history: ThinVec::new(),
            unpaid: ThinVec::new(),
            payments_failed_total: 0,
            renews_at: NEVER,
            surveys: None,
            onboarding: 0,
            touchpoints: 0,
            last_touchpoint: NEVER,
            extras: None,
            alert: AlertState::default(),
            timer_due: NEVER,
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled_at != NEVER
    }

    /// Survey state (all-empty if the account never answered).
    pub fn surveys(&self) -> &Surveys {
        self.surveys.as_deref().unwrap_or(&NO_SURVEYS)
    }

    fn surveys_mut(&mut self) -> &mut Surveys {
        self.surveys.get_or_insert_with(Default::default)
    }

    /// Open tickets (empty if none was ever opened).
    pub fn open_tickets(&self) -> &[Ticket] {
        self.support.as_deref().map_or(&[], |s| &s.open_tickets[..])
    }

    fn support_mut(&mut self) -> &mut Support {
        self.support.get_or_insert_with(Default::default)
    }

    pub fn active_override(&self) -> Option<&Override> {
        self.extras
            .as_ref()
            .and_then(|e| e.active_override.as_ref())
    }

    /// Distinct users active on or after `since_day`.
    pub fn active_users_since(&self, since_day: i32) -> u32 {
        self.users
            .iter()
            .filter(|&&u| (u as u32 as i32) >= since_day)
            .count() as u32
    }

    /// Distinct users active on or after each of two days, in one pass.
    pub fn active_users_since2(&self, a: i32, b: i32) -> (u32, u32) {
        self.users.iter().fold((0, 0), |(na, nb), &u| {
            let d = u as u32 as i32;
            (na + (d >= a) as u32, nb + (d >= b) as u32)
        })
    }

    /// Distinct features used on or after `since_day`.
    pub fn features_since(&self, since_day: i32) -> u32 {
        self.features.iter().filter(|f| f.1 >= since_day).count() as u32
    }

    /// The MRR in effect on `day` (from the change history).
    pub fn mrr_on(&self, day: i32) -> u64 {
        let mut v = None;
        for &(d, m) in &self.mrr_history {
            if d <= day {
                v = Some(m);
            } else {
                break;
            }
        }
        // Before the first known change: the first value known.
        v.or_else(|| self.mrr_history.first().map(|h| h.1))
            .unwrap_or(0)
    }

    /// The current MRR (0 before any is known): the newest change.
    pub fn mrr_cents(&self) -> u64 {
        self.mrr_history.last().map_or(0, |h| h.1)
    }

    /// Current days overdue at `day` (worst unpaid invoice).
    pub fn days_overdue(&self, day: i32) -> u32 {
        self.unpaid
            .iter()
            .filter(|u| u.overdue_day != NO_DAY)
            .map(|u| u.days_overdue as u32 + (day - u.overdue_day).max(0) as u32)
            .max()
            .unwrap_or(0)
    }

    pub fn unpaid_failures(&self) -> u32 {
        self.unpaid.iter().map(|u| u.failures as u32).sum()
    }

    fn touch_user(&mut self, user_hash: u32, day: i32, limits: &Limits, hits: &mut LimitHits) {
        let h = user_hash as u64;
        let week = week_of(day as Ts * MS_PER_DAY);
        let pos = self.users.binary_search_by(|&u| (u >> 32).cmp(&h));
        let newly_active_this_week = match pos {
            Ok(i) => {
                let last = self.users[i] as u32 as i32;
                if day > last {
                    self.users[i] = (h << 32) | (day as u32 as u64);
                }
                week_of(last as Ts * MS_PER_DAY) < week && day > last
            }
            Err(i) => {
                if self.users.len() >= limits.max_users as usize {
                    // Evict the least recently seen user (lowest hash on ties).
                    let (victim, _) = self
                        .users
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, &u)| (u as u32 as i32, u >> 32))
                        .expect("users is not empty at the cap");
                    self.users.remove(victim);
                    hits.users_evicted += 1;
                    let i = self
                        .users
                        .binary_search_by(|&u| (u >> 32).cmp(&h))
                        .unwrap_err();
                    self.users.insert(i, (h << 32) | (day as u32 as u64));
                } else {
                    room_for_one(&mut self.users);
                    self.users.insert(i, (h << 32) | (day as u32 as u64));
                }
                true
            }
        };
        if newly_active_this_week {
            if let Some(i) = self.roll_weeks(week) {
                self.weeks.wau[i] = self.weeks.wau[i].saturating_add(1);
            }
        }
    }

    fn touch_feature(
        &mut self,
        h: u32,
        day: i32,
        count: u32,
        limits: &Limits,
        hits: &mut LimitHits,
    ) {
        match self.features.binary_search_by(|f| f.0.cmp(&h)) {
            Ok(i) => {
                let f = &mut self.features[i];
                f.1 = f.1.max(day);
                f.2 = f.2.saturating_add(count);
            }
            Err(i) => {
                if self.features.len() >= limits.max_features as usize {
                    let (victim, _) = self
                        .features
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, f)| (f.1, f.0))
                        .expect("features is not empty at the cap");
                    self.features.remove(victim);
                    hits.features_evicted += 1;
                    let i = self.features.binary_search_by(|f| f.0.cmp(&h)).unwrap_err();
                    self.features.insert(i, (h, day, count));
                } else {
                    room_for_one(&mut self.features);
                    self.features.insert(i, (h, day, count));
                }
            }
        }
    }

    fn add_activity(&mut self, time: Ts, n: u32, hits: &mut LimitHits) {
        if let Some(i) = self.week_slot(time, hits) {
            self.weeks.activity[i] = self.weeks.activity[i].saturating_add(n);
        }
        if time > self.last_activity {
            self.last_activity = time;
        }
        self.onboarding |= milestone::FIRST_USE;
    }

    /// The week ring's slot for `week`, the ring rolled forward first.
    fn roll_weeks(&mut self, week: i32) -> Option<usize> {
        let support = self.support.as_deref_mut().map(|s| &mut s.weeks);
        self.weeks.roll(week, support)
    }

    /// [`Account::roll_weeks`] for the week of `time`, counting an event
    /// too old for the ring.
    fn week_slot(&mut self, time: Ts, hits: &mut LimitHits) -> Option<usize> {
        let i = self.roll_weeks(week_of(time));
        if i.is_none() {
            hits.too_old_for_window += 1;
        }
        i
    }

    /// Adds one to a support count of the week of `time` (`count` picks
    /// it from the support part, created if need be).
    fn count_support(
        &mut self,
        time: Ts,
        hits: &mut LimitHits,
        count: fn(&mut SupportWeeks) -> &mut [u8; WEEKS],
    ) {
        if let Some(i) = self.week_slot(time, hits) {
            let c = &mut count(&mut self.support_mut().weeks)[i];
            *c = c.saturating_add(1);
        }
    }

    /// The counts of `week` (zero if the ring does not hold it).
    pub fn week(&self, week: i32) -> WeekCell {
        let Some(i) = self.weeks.held(week) else {
            return WeekCell::default();
        };
        let s = self.support.as_deref().map(|s| &s.weeks);
        WeekCell {
            activity: self.weeks.activity[i],
            wau: self.weeks.wau[i],
            tickets: s.map_or(0, |s| s.tickets[i]),
            escalations: s.map_or(0, |s| s.escalations[i]),
            reopens: s.map_or(0, |s| s.reopens[i]),
        }
    }

    /// The [`WEEKS`] weeks ending with `week`, oldest first: element `k`
    /// is [`Account::week`]`(week - WEEKS + 1 + k)`. For reading several
    /// windows of the same weeks without looking each week up again.
    pub fn last_weeks(&self, week: i32) -> [WeekCell; WEEKS] {
        let first = week - WEEKS as i32 + 1;
        std::array::from_fn(|k| self.week(first + k as i32))
    }

    fn set_mrr(&mut self, day: i32, mrr: u64) {
        match self.mrr_history.last_mut() {
            Some(last) if last.0 == day => last.1 = mrr,
            _ => {
                room_for_one(&mut self.mrr_history);
                self.mrr_history.push((day, mrr));
            }
        }
        // Keep 90 days plus the last change before them.
        let cutoff = day - 90;
        while self.mrr_history.len() >= 2 && self.mrr_history[1].0 <= cutoff {
            self.mrr_history.remove(0);
        }
    }

    fn unpaid_mut(
        &mut self,
        invoice: &str,
        amount_cents: u64,
        limits: &Limits,
        hits: &mut LimitHits,
    ) -> &mut Unpaid {
        let h = hash32(invoice);
        let i = match self.unpaid.iter().position(|u| u.hash == h) {
            Some(i) => i,
            None => {
                if self.unpaid.len() >= limits.max_unpaid_invoices as usize {
                    self.unpaid.remove(0);
                    hits.invoices_evicted += 1;
                }
                room_for_one(&mut self.unpaid);
                self.unpaid.push(Unpaid {
                    hash: h,
                    failures: 0,
                    days_overdue: 0,
                    overdue_day: NO_DAY,
                    amount_cents,
                });
                self.unpaid.len() - 1
            }
        };
        &mut self.unpaid[i]
    }

    fn open_ticket(
        &mut self,
        ticket: &str,
        time: Ts,
        priority: Priority,
        limits: &Limits,
        hits: &mut LimitHits,
    ) {
        let h = hash32(ticket);
        let sup = self.support_mut();
        if sup.open_tickets.iter().any(|t| t.hash == h) {
            return;
        }
        if sup.open_tickets.len() >= limits.max_open_tickets as usize {
            sup.open_tickets.remove(0);
            hits.tickets_evicted += 1;
        }
        room_for_one(&mut sup.open_tickets);
        sup.open_tickets.push(Ticket {
            hash: h,
            opened_min: (time.max(0) / MS_PER_MIN).min(u32::MAX as i64) as u32,
            priority,
            escalated: false,
        });
    }

    /// Applies an event's facts to the state. Labels (segment, plan, …) are
    /// interned by the caller and passed in `labels`.
    pub fn apply(
        &mut self,
        time: Ts,
        kind: &EventKind<'_>,
        labels: &AppliedLabels,
        cfg: &super::config::ModelConfig,
        hits: &mut LimitHits,
    ) {
        let limits = &cfg.limits;
        let day = day_of(time);
        let half_life = cfg.factors.survey_half_life_days;
        match kind {
            EventKind::Login { user_id } => {
                let uh = labels.user_hash.unwrap_or_else(|| hash32(user_id));
                self.touch_user(uh, day, limits, hits);
                self.add_activity(time, 1, hits);
                self.update_onboarding(day);
            }
            EventKind::Feature {
                user_id,
                feature,
                count,
            } => {
                let uh = labels.user_hash.unwrap_or_else(|| hash32(user_id));
                let fh = labels.feature_hash.unwrap_or_else(|| hash32(feature));
                self.touch_user(uh, day, limits, hits);
                self.touch_feature(fh, day, *count, limits, hits);
                self.add_activity(time, *count, hits);
                self.update_onboarding(day);
            }
            EventKind::TicketOpened {
                ticket_id,
                priority,
            } => {
                self.tickets_total = self.tickets_total.saturating_add(1);
                self.count_support(time, hits, |s| &mut s.tickets);
                self.open_ticket(ticket_id, time, *priority, limits, hits);
            }
            EventKind::TicketEscalated { ticket_id } => {
                self.count_support(time, hits, |s| &mut s.escalations);
                let h = hash32(ticket_id);
                let open = self.support.as_mut().map(|s| &mut s.open_tickets);
                if let Some(t) = open.and_then(|o| o.iter_mut().find(|t| t.hash == h)) {
                    t.escalated = true;
                    // An escalated ticket counts at least as high priority.
                    t.priority = t.priority.max(Priority::High);
                }
            }
            EventKind::TicketResolved { ticket_id, csat } => {
                let h = hash32(ticket_id);
                let sup = self.support_mut();
                if let Some(i) = sup.open_tickets.iter().position(|t| t.hash == h) {
                    let t = sup.open_tickets.remove(i);
                    let opened = t.opened_min as Ts * MS_PER_MIN;
                    let hours = ((time - opened).max(0) as f64) / MS_PER_HOUR as f64;
                    sup.resolved = sup.resolved.saturating_add(1);
                    // Running mean over the last ~20 resolutions.
                    let n = sup.resolved.min(20) as f64;
                    sup.resolve_hours += (hours - sup.resolve_hours) / n;
                }
                if let Some(c) = csat {
                    sup.ticket_csat.add(day, *c as f64, half_life);
                }
            }
            EventKind::TicketReopened { ticket_id } => {
                self.count_support(time, hits, |s| &mut s.reopens);
                // The priority of a resolved ticket is not kept: a reopened
                // ticket counts as normal unless it is still open.
                self.open_ticket(ticket_id, time, Priority::Normal, limits, hits);
            }
            EventKind::SubscriptionStarted {
                mrr_cents,
                seats,
                renews_at,
                ..
            } => {
                self.subscribed_at = time;
                self.cancelled_at = NEVER;
                self.set_mrr(day, *mrr_cents);
                self.seats_licensed = *seats;
                self.renews_at = renews_at.unwrap_or(NEVER);
                self.plan = labels.plan.unwrap_or(self.plan);
            }
            EventKind::SubscriptionChanged {
                mrr_cents, seats, ..
            } => {
                self.set_mrr(day, *mrr_cents);
                self.seats_licensed = *seats;
                self.plan = labels.plan.unwrap_or(self.plan);
            }
            EventKind::SubscriptionRenewed {
                renews_at,
                mrr_cents,
            } => {
                if let Some(m) = mrr_cents {
                    self.set_mrr(day, *m);
                }
                self.renews_at = renews_at.unwrap_or(NEVER);
            }
            EventKind::SubscriptionCancelled { .. } => {
                self.cancelled_at = time;
            }
            EventKind::InvoicePaid { invoice_id, .. } => {
                let h = hash32(invoice_id);
                self.unpaid.retain(|u| u.hash != h);
            }
            EventKind::InvoicePaymentFailed {
                invoice_id,
                amount_cents,
                ..
            } => {
                self.payments_failed_total = self.payments_failed_total.saturating_add(1);
                let u = self.unpaid_mut(invoice_id, *amount_cents, limits, hits);
                u.failures = u.failures.saturating_add(1);
            }
            EventKind::InvoiceOverdue {
                invoice_id,
                amount_cents,
                days_overdue,
            } => {
                let u = self.unpaid_mut(invoice_id, *amount_cents, limits, hits);
                u.days_overdue = (*days_overdue).min(u16::MAX as u32) as u16;
                u.overdue_day = day;
            }
            EventKind::SurveyNps { score, .. } => {
                let sv = self.surveys_mut();
                sv.nps.add(day, *score as f64, half_life);
                if sv.last_nps.is_none_or(|(_, d)| day >= d) {
                    sv.last_nps = Some((*score, day));
                }
            }
            EventKind::SurveyCsat { score, .. } => {
                let sv = self.surveys_mut();
                sv.csat.add(day, *score as f64, half_life);
                if sv.last_csat.is_none_or(|(_, d)| day >= d) {
                    sv.last_csat = Some((*score, day));
                }
            }
            EventKind::SurveyCes { score, .. } => {
                let sv = self.surveys_mut();
                sv.ces.add(day, *score as f64, half_life);
                if sv.last_ces.is_none_or(|(_, d)| day >= d) {
                    sv.last_ces = Some((*score, day));
                }
            }
            EventKind::AccountUpdated { seats_licensed, .. } => {
                if let Some(s) = labels.segment {
                    self.segment = s;
                }
                if let Some(t) = labels.tier {
                    self.tier = t;
                }
                if let Some(o) = labels.owner {
                    self.owner = o;
                }
                if let Some(n) = seats_licensed {
                    self.seats_licensed = *n;
                }
            }
            EventKind::Touchpoint { kind, .. } => {
                self.touchpoints = self.touchpoints.saturating_add(1);
                self.last_touchpoint = self.last_touchpoint.max(time);
                if matches!(kind.as_ref(), "onboarding_call" | "training" | "onboarding") {
                    self.onboarding |= milestone::ONBOARDED;
                }
            }
            EventKind::HealthOverride { .. } | EventKind::AlertFeedback { .. } => {
                // Handled by the partition (they need the event id / stats).
            }
        }
    }

    fn update_onboarding(&mut self, day: i32) {
        if self.onboarding & milestone::THREE_USERS == 0 && self.active_users_since(day - 27) >= 3 {
            self.onboarding |= milestone::THREE_USERS;
        }
        if self.onboarding & milestone::THREE_FEATURES == 0 && self.features_since(day - 27) >= 3 {
            self.onboarding |= milestone::THREE_FEATURES;
        }
    }

    /// Sets a new override, moving any active one to the audit trail.
    pub fn set_override(&mut self, o: Override) {
        let ex = self.extras.get_or_insert_with(Default::default);
        if let Some(prev) = ex.active_override.take() {
            push_audit(ex, prev, OverrideEnd::Replaced, o.set_at);
        }
        ex.active_override = Some(o);
    }

    /// Drops an override whose time has come. Returns whether one expired.
    pub fn expire_override(&mut self, now: Ts) -> bool {
        let Some(ex) = self.extras.as_mut() else {
            return false;
        };
        match &ex.active_override {
            Some(o) if o.expires_at <= now => {
                let o = ex.active_override.take().expect("checked above");
                let at = o.expires_at;
                push_audit(ex, o, OverrideEnd::Expired, at);
                true
            }
            _ => false,
        }
    }

    /// Forgets users and features not seen for 28 days (they no longer
    /// count anywhere), so state shrinks back when activity stops.
    pub fn prune(&mut self, day: i32) {
        let cutoff = day - 35;
        self.users.retain(|&u| (u as u32 as i32) >= cutoff);
        self.features.retain(|f| f.1 >= cutoff);
        // Give back growth slack (allocations double as they grow).
        if self.users.capacity() > self.users.len() + self.users.len() / 4 + 2 {
            self.users.shrink_to_fit();
        }
        if self.features.capacity() > self.features.len() + self.features.len() / 4 + 2 {
            self.features.shrink_to_fit();
        }
    }
}

fn push_audit(ex: &mut Extras, entry: Override, end: OverrideEnd, ended_at: Ts) {
    if ex.audit.len() >= AUDIT_KEEP {
        ex.audit.remove(0);
    }
    ex.audit.push(OverrideAudit {
        entry,
        end,
        ended_at,
    });
}

/// What the partition prepared from an event: labels interned (None = not
/// in the event, or ignored at the label limit) and the user/feature hashes
/// if it already computed them.
#[derive(Debug, Clone, Copy, Default)]
pub struct AppliedLabels {
    pub segment: Option<u16>,
    pub tier: Option<u16>,
    pub owner: Option<u16>,
    pub plan: Option<u16>,
    pub user_hash: Option<u32>,
    pub feature_hash: Option<u32>,
}

#[cfg(test)]
mod size_tests {
    use super::*;

    #[test]
    fn account_ids_behave_as_strings_inline_or_boxed() {
        let long = "x".repeat(INLINE_ID + 1);
        let ids = ["", "acct-000001", "ü€𝄞", &"y".repeat(INLINE_ID), &long];
        for s in ids {
            let id = AccountId::new(s);
            assert_eq!(&*id, s);
            assert_eq!(id.as_bytes(), s.as_bytes());
            assert_eq!(format!("{id:?}"), format!("{s:?}"));
            assert_eq!(id.to_string(), s);
            assert_eq!(
                id.heap_bytes(),
                if s.len() > INLINE_ID { s.len() } else { 0 }
            );
            assert_eq!(AccountId::from(s.to_string()), id);
            for t in ids {
                assert_eq!(id.cmp(&AccountId::new(t)), s.cmp(t), "{s:?} vs {t:?}");
            }
        }
        assert!(std::mem::size_of::<AccountId>() <= 24);
    }

    #[test]
    fn an_account_fits_its_size_budget() {
        // Every account pays for every byte of the struct (a megabyte per
        // byte at a million accounts): 360 bytes until support counts,
        // the current MRR and the published score's f64 went (BENCHMARKS.md,
        // "Memory per account"). Growing it should be a decision.
        let size = std::mem::size_of::<Account>();
        assert!(
            size <= 312,
            "Account is {size} bytes, over its 312-byte budget"
        );
        assert_eq!(std::mem::size_of::<Option<Published>>(), 16);
    }
}
