//! # The scoring core
//!
//! Pure types and decision logic: events in, state and signals out. This
//! module performs no I/O and depends on nothing else in the crate, and on
//! no async runtime, Kafka client, clock, metrics or randomness. Time is the
//! events' time. Iteration order never depends on hashing: the account
//! table is indexed by arrival order, and every map whose order reaches an
//! output is ordered.
//!
//! - [`event`]: the validated event type every decoder produces.
//! - [`account`]: per-account state and how each event changes it.
//! - [`score`]: factors, components, score, bands, drivers.
//! - [`partition`]: the fold — accounts, timers, dedup, alert rules.
//! - [`accounts`], [`cow_deque`]: the partition's accounts and duplicate
//!   memory, shared copy-on-write so a snapshot's copy takes microseconds.
//! - [`signal`]: what the fold emits (health records and alerts).
//! - [`portfolio`]: portfolio analytics (NPS, churn, revenue retention,
//!   CLV, bands) kept by the fold, by segment, mergeable across partitions.
//! - [`interventions`]: the effect of CS touchpoints on score and churn
//!   against matched accounts without one.
//! - [`config`]: the model's configuration (scorecards, rules, limits).

pub mod account;
pub mod accounts;
pub mod config;
pub mod cow_deque;
pub mod event;
pub mod interventions;
pub mod monitor;
pub mod partition;
pub mod portfolio;
pub mod score;
pub mod signal;
pub mod time;

pub use config::ModelConfig;
pub use event::{Band, Event, EventKind};
pub use interventions::{InterventionOutcomes, InterventionReport, Interventions};
pub use partition::{Model, Outcome, Partition, ScorecardChange};
pub use portfolio::{Portfolio, PortfolioReport};
pub use signal::{Alert, AlertKind, Health, Signal};
pub use time::Ts;
