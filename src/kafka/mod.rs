//! Kafka adapters: the embedded Kafka-protocol broker for tests, the demo
//! and local development, and the key → partition mapping that ownership
//! and re-routing rest on. Depends on `core` and `codec`, never the
//! other way round.
//!
//! The service itself (`vitals run`: sequencer, fold workers, exactly-once
//! outputs) is the next step of this module; see the Kafka issue.

pub mod bench;
pub mod broker;
pub mod partitioner;
pub mod publish;
pub mod sequencer;
pub mod service;
pub mod snapstore;
pub mod topics;
pub mod worker;
