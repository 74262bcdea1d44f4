//! `vitals bench …`: measurements that are not criterion micro-benchmarks.
//!
//! - `memory`: resident memory per account of the fold's state, measured as
//!   RSS growth while folding a simulation (Linux `/proc/self/statm`).

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::core::{Model, ModelConfig, Partition};
use crate::simulate::{SimOptions, Simulation};

/// Resident set size of this process in bytes (Linux), if readable.
pub fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    // The page size is 4 KiB on the machines this runs on.
    Some(pages * 4096)
}

#[derive(Debug, Serialize)]
pub struct MemoryReport {
    pub accounts: u64,
    pub days: u32,
    pub events: u64,
    pub rss_before_bytes: u64,
    pub rss_after_bytes: u64,
    pub bytes_per_account: f64,
    pub dedup_ids: u64,
    pub elapsed_secs: f64,
}

/// Folds `accounts` simulated accounts over `days`, day by day (accounts
/// in order within a day, so allowed lateness is set to a day), and
/// reports RSS growth per account. The simulator's own memory and one
/// day's event buffer are allocated before the first measurement.
pub fn memory(accounts: u32, days: u32, seed: u64) -> MemoryReport {
    let start = Instant::now();
    let o = SimOptions {
        accounts,
        days,
        seed,
        ..Default::default()
    };
    let mut sim = Simulation::new(&o);
    let cfg = ModelConfig {
        allowed_lateness_secs: 86_400,
        ..ModelConfig::default()
    };
    let mut part = Partition::new(Arc::new(Model::new(cfg)));
    let mut buf = Vec::with_capacity(256);
    let mut out = Vec::new();
    // Warm the buffers so they are not counted as fold state.
    sim.account_day(0, 0, &mut buf);
    buf.clear();
    let before = rss_bytes().unwrap_or(0);
    let mut events = 0u64;
    for day in 0..days {
        for i in 0..sim.accounts() {
            sim.account_day(i, day, &mut buf);
            for e in buf.drain(..) {
                part.apply(&e, &mut out);
                events += 1;
            }
            out.clear();
        }
    }
    let after = rss_bytes().unwrap_or(0);
    MemoryReport {
        accounts: part.accounts.len() as u64,
        days,
        events,
        rss_before_bytes: before,
        rss_after_bytes: after,
        bytes_per_account: after.saturating_sub(before) as f64 / part.accounts.len().max(1) as f64,
        dedup_ids: part.dedup.order.len() as u64,
        elapsed_secs: start.elapsed().as_secs_f64(),
    }
}
