//! Decode + fold throughput on simulated events, JSON and Protobuf.
//!
//! `cargo bench --bench fold`; results and the machine are in BENCHMARKS.md.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vitals::codec::{json, pb, proto};
use vitals::core::{Model, ModelConfig, Partition};
use vitals::simulate::{generate, SimOptions};

fn events() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let evs = generate(&SimOptions {
        accounts: 2000,
        days: 30,
        seed: 1,
        ..Default::default()
    });
    let js = evs.iter().map(json::encode).collect();
    let pbs = evs.iter().map(proto::encode).collect();
    (js, pbs)
}

fn bench(c: &mut Criterion) {
    let (js, pbs) = events();
    let model = Arc::new(Model::new(ModelConfig::default()));
    let mut g = c.benchmark_group("decode_fold");
    g.sample_size(10);
    g.throughput(Throughput::Elements(js.len() as u64));
    g.bench_function("json_decode", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for r in &js {
                n += json::decode(r).map_or(0, |e| e.id.len());
            }
            n
        })
    });
    g.bench_function("json_decode_fold", |b| {
        b.iter(|| {
            let mut p = Partition::new(Arc::clone(&model));
            let mut out = Vec::new();
            for r in &js {
                if let Ok(e) = json::decode(r) {
                    p.apply(&e, &mut out);
                }
                out.clear();
            }
            p.accounts.len()
        })
    });
    g.bench_function("protobuf_decode_fold", |b| {
        b.iter(|| {
            let mut p = Partition::new(Arc::clone(&model));
            let mut out = Vec::new();
            let mut buf = pb::Event::default();
            for r in &pbs {
                let _ = proto::decode_with(r, &mut buf, |e| p.apply(&e, &mut out));
                out.clear();
            }
            p.accounts.len()
        })
    });
    g.bench_function("fold_only", |b| {
        let evs: Vec<_> = js.iter().filter_map(|r| json::decode(r).ok()).collect();
        b.iter(|| {
            let mut p = Partition::new(Arc::clone(&model));
            let mut out = Vec::new();
            for e in &evs {
                p.apply(e, &mut out);
                out.clear();
            }
            p.accounts.len()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
