//! # Vitals
//!
//! Live, explainable customer-health scores from an event stream.
//!
//! ## Layout
//!
//! Where does an event become a score? In [`core::partition::Partition::apply`].
//!
//! - [`core`]: the pure, deterministic scoring core — events, account
//!   state, the health model, alert rules, the fold. No I/O, no clock.
//! - [`codec`]: bytes ⇄ core types — JSON and Protobuf input validation,
//!   output records, state encoding for snapshots.
//! - [`config`]: the service's TOML configuration, with validation that
//!   reports every problem at once.
//! - [`replay`]: `vitals replay` — fold a JSONL log offline.
//! - [`simulate`]: `vitals simulate` — synthetic customers with personas.
//! - [`backtest`]: how well scores and alerts predict churn on a log.
//! - [`bench`]: `vitals bench` measurements (memory per account).
//!
//! Dependencies point one way: `core` ← `codec` ← everything else.

pub mod backtest;
pub mod bench;
pub mod codec;
pub mod config;
pub mod core;
pub mod replay;
pub mod simulate;
