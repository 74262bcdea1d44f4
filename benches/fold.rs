//! Decode + fold throughput on simulated events, JSON and Protobuf.
//!
//! 2,000 simulated accounts over 90 days; the first 60 days warm the
//! partition up (untimed), the last 30 days are measured — so the numbers
//! are for established accounts, not for an empty table filling up.
//!
//! `cargo bench --bench fold`; results are in BENCHMARKS.md.

use std::sync::Arc;

// The allocator the `vitals` binary runs with (src/main.rs), so that the
// fold is measured as it runs in the service and in `vitals replay`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use vitals::codec::{json, pb, proto};
use vitals::core::time::MS_PER_DAY;
use vitals::core::{Model, ModelConfig, Partition};
use vitals::simulate::{generate, SimOptions};

fn bench(c: &mut Criterion) {
    let o = SimOptions {
        accounts: 2000,
        days: 90,
        seed: 1,
        ..Default::default()
    };
    let evs = generate(&o);
    let split = o.start + 60 * MS_PER_DAY;
    let (warm, timed): (Vec<_>, Vec<_>) = evs.into_iter().partition(|e| e.time < split);
    let model = Arc::new(Model::new(ModelConfig::default()));
    let mut warmed = Partition::new(Arc::clone(&model));
    let mut out = Vec::new();
    for e in &warm {
        warmed.apply(e, &mut out);
        out.clear();
    }
    let js = Records::new(timed.iter().map(json::encode));
    let pbs = Records::new(timed.iter().map(proto::encode));

    let mut g = c.benchmark_group("decode_fold");
    g.sample_size(10);
    g.throughput(Throughput::Elements(timed.len() as u64));
    g.bench_function("json_decode", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for r in js.iter() {
                n += json::decode(r).map_or(0, |e| e.id.len());
            }
            n
        })
    });
    g.bench_function("protobuf_decode", |b| {
        let mut buf = pb::Event::default();
        b.iter(|| {
            let mut n = 0usize;
            for r in pbs.iter() {
                n += proto::decode_with(r, &mut buf, |e| e.id.len()).unwrap_or(0);
            }
            n
        })
    });
    g.bench_function("fold", |b| {
        b.iter_batched(
            || warmed.clone(),
            |mut p| {
                let mut out = Vec::new();
                for e in &timed {
                    p.apply(e, &mut out);
                    out.clear();
                }
                p
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("json_decode_fold", |b| {
        b.iter_batched(
            || warmed.clone(),
            |mut p| {
                let mut out = Vec::new();
                for r in js.iter() {
                    if let Ok(e) = json::decode(r) {
                        p.apply(&e, &mut out);
                    }
                    out.clear();
                }
                p
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("protobuf_decode_fold", |b| {
        b.iter_batched(
            || warmed.clone(),
            |mut p| {
                let mut out = Vec::new();
                let mut buf = pb::Event::default();
                for r in pbs.iter() {
                    let _ = proto::decode_with(r, &mut buf, |e| p.apply(&e, &mut out));
                    out.clear();
                }
                p
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// Encoded records back to back in one buffer, as a Kafka fetch response
/// or a JSONL file holds them. (Each in its own `Vec` — as before
/// 2026-12-07 — scattered them over the heap by size class, and the miss
/// on each record's first byte was ~9% of `protobuf_decode_fold`: a cost
/// of the benchmark's layout, not of decoding.)
struct Records {
    buf: Vec<u8>,
    ends: Vec<usize>,
}

impl Records {
    fn new(records: impl Iterator<Item = Vec<u8>>) -> Self {
        let mut r = Records {
            buf: Vec::new(),
            ends: Vec::new(),
        };
        for rec in records {
            r.buf.extend_from_slice(&rec);
            r.ends.push(r.buf.len());
        }
        r
    }

    fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(&self.ends).map(|(a, &b)| &self.buf[a..b])
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
