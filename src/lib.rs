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
//! - [`kafka`]: Kafka adapters — the embedded broker, the partitioner.
//! - [`snapshot`]: the snapshot format and the store interface with its
//!   directory store; the Kafka-topic store is [`kafka::snapstore`].
//! - [`readside`]: the current health of every owned account, published
//!   per batch by the partition workers for the API and `/metrics`.
//! - [`http`]: the HTTP listener — `/metrics`, `/healthz`, `/readyz` and
//!   the account API (`/v1/accounts`).
//! - [`replay`]: `vitals replay` — fold a JSONL log offline.
//! - [`simulate`]: `vitals simulate` — synthetic customers with personas.
//! - [`backtest`]: how well scores and alerts predict churn on a log
//!   (`vitals backtest`; one or two scorecards in one pass).
//! - [`calibrate`]: `vitals calibrate` — fit weights and band thresholds
//!   to a log's outcomes, write a loadable config, compare on held-out data.
//! - [`bench`]: `vitals bench` measurements (memory per account).
//!
//! Dependencies point one way: `core` ← `codec` ← everything else.
//!
//! ## Folding events
//!
//! ```
//! use std::sync::Arc;
//! use vitals::codec::json;
//! use vitals::core::{Model, ModelConfig, Partition, Signal};
//!
//! let mut part = Partition::new(Arc::new(Model::new(ModelConfig::default())));
//! let mut signals = Vec::new();
//! let line = br#"{"id":"e1","account_id":"acme","type":"subscription.started",
//!     "time":"2026-01-05T00:00:00Z","plan":"team","mrr_cents":10000,"seats":10}"#;
//! let event = json::decode(line)?;
//! part.apply(&event, &mut signals);
//! let Signal::Health(h) = &signals[0] else { panic!("a health record") };
//! assert_eq!((h.account_id.as_str(), h.score), ("acme", 68.6));
//! assert_eq!(h.band.as_str(), "neutral");
//! # Ok::<(), vitals::codec::DecodeError>(())
//! ```

pub mod backtest;
pub mod bench;
pub mod calibrate;
pub mod codec;
pub mod config;
pub mod core;
pub mod http;
pub mod kafka;
pub mod readside;
pub mod replay;
pub mod simulate;
pub mod snapshot;
