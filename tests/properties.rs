//! Property tests for the invariants the design rests on:
//! - the same log always yields byte-identical outputs and state;
//! - interleaving *different* accounts' events differently does not change
//!   any account's outputs (when no event is late);
//! - state → Protobuf → state is the identity, and folding on from a
//!   restored state gives the same outputs as never stopping;
//! - skipping the re-score of usage events changes no output;
//! - no input of any shape makes the decoders or the fold panic.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use vitals::codec::{json, output, proto, state};
use vitals::core::{Event, Model, ModelConfig, Partition, Signal};
use vitals::simulate::{generate, SimOptions};

fn encode(s: &Signal) -> Vec<u8> {
    match s {
        Signal::Health(h) => output::health_json(h),
        Signal::Alert(a) => output::alert_json(a),
    }
}

fn fold_all(p: &mut Partition, evs: &[Event<'_>]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for e in evs {
        p.apply(e, &mut out);
    }
    out.iter().map(encode).collect()
}

fn model(cfg: ModelConfig) -> Arc<Model> {
    Arc::new(Model::new(cfg))
}

fn sim(seed: u64, accounts: u32, days: u32) -> Vec<Event<'static>> {
    generate(&SimOptions {
        accounts,
        days,
        seed,
        ..Default::default()
    })
}

fn by_account(p: &Partition, signals: &[Signal]) -> BTreeMap<String, Vec<Vec<u8>>> {
    let _ = p;
    let mut m: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for s in signals {
        m.entry(s.account_id().to_string())
            .or_default()
            .push(encode(s));
    }
    m
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, .. ProptestConfig::default() })]

    #[test]
    fn same_log_same_bytes(seed in any::<u64>(), accounts in 1u32..25, days in 20u32..120) {
        let evs = sim(seed, accounts, days);
        let m = model(ModelConfig::default());
        let mut a = Partition::new(Arc::clone(&m));
        let mut b = Partition::new(Arc::clone(&m));
        let oa = fold_all(&mut a, &evs);
        let ob = fold_all(&mut b, &evs);
        prop_assert_eq!(oa, ob);
        prop_assert_eq!(state::encode(&a), state::encode(&b));
    }

    #[test]
    fn interleaving_other_accounts_changes_nothing(
        seed in any::<u64>(),
        accounts in 2u32..12,
        days in 30u32..120,
        choices in proptest::collection::vec(any::<u16>(), 0..4096),
    ) {
        let evs = sim(seed, accounts, days);
        // No event may be late, so that only the account's own events and
        // timers decide its outputs: allow lateness beyond the log's span.
        let cfg = ModelConfig {
            allowed_lateness_secs: 10 * 365 * 86_400,
            ..ModelConfig::default()
        };
        let m = model(cfg);
        // Per-account queues in log order, merged in an arbitrary order.
        let mut queues: BTreeMap<String, std::collections::VecDeque<Event<'static>>> = BTreeMap::new();
        for e in &evs {
            queues.entry(e.account_id.to_string()).or_default().push_back(e.clone());
        }
        let mut keys: Vec<String> = queues.keys().cloned().collect();
        let mut mixed = Vec::with_capacity(evs.len());
        let mut k = 0usize;
        while !keys.is_empty() {
            let c = choices.get(k % choices.len().max(1)).copied().unwrap_or(0) as usize;
            k += 1;
            let i = (c + k) % keys.len();
            let q = queues.get_mut(&keys[i]).unwrap();
            mixed.push(q.pop_front().unwrap());
            if q.is_empty() {
                keys.remove(i);
            }
        }
        let mut a = Partition::new(Arc::clone(&m));
        let mut b = Partition::new(Arc::clone(&m));
        let mut oa = Vec::new();
        let mut ob = Vec::new();
        for e in &evs { a.apply(e, &mut oa); }
        for e in &mixed { b.apply(e, &mut ob); }
        prop_assert_eq!(by_account(&a, &oa), by_account(&b, &ob));
    }

    #[test]
    fn state_round_trips_and_folding_on_is_the_same(
        seed in any::<u64>(),
        accounts in 1u32..20,
        days in 20u32..100,
        cut in 0.0f64..1.0,
    ) {
        let evs = sim(seed, accounts, days);
        let m = model(ModelConfig::default());
        let cut = (evs.len() as f64 * cut) as usize;
        let mut live = Partition::new(Arc::clone(&m));
        let mut first = fold_all(&mut live, &evs[..cut]);
        let bytes = state::encode(&live);
        let mut restored = state::decode(&bytes, Arc::clone(&m)).expect("decodes");
        prop_assert!(restored == live, "restored state differs");
        prop_assert_eq!(state::encode(&restored), bytes);
        let rest_live = fold_all(&mut live, &evs[cut..]);
        let rest_restored = fold_all(&mut restored, &evs[cut..]);
        prop_assert_eq!(&rest_live, &rest_restored);
        prop_assert_eq!(state::encode(&live), state::encode(&restored));
        first.extend(rest_live);
        let mut whole = Partition::new(Arc::clone(&m));
        prop_assert_eq!(fold_all(&mut whole, &evs), first);
    }

    #[test]
    fn skipping_usage_rescoring_changes_no_output(seed in any::<u64>(), accounts in 1u32..15, days in 30u32..120) {
        let evs = sim(seed, accounts, days);
        let m = model(ModelConfig::default());
        let mut fast = Partition::new(Arc::clone(&m));
        let mut slow = Partition::new(Arc::clone(&m));
        slow.rescore_every_event = true;
        prop_assert_eq!(fold_all(&mut fast, &evs), fold_all(&mut slow, &evs));
    }
}

/// The skip above is not vacuous: on established accounts most usage
/// events are applied without re-scoring.
#[test]
fn skipping_happens_on_established_accounts() {
    let evs = sim(3, 10, 120);
    let mut p = Partition::new(model(ModelConfig::default()));
    fold_all(&mut p, &evs);
    let usage: u64 = p.stats.events[0].iter().chain(&p.stats.events[1]).sum();
    assert!(
        p.stats.rescore_skipped * 2 > usage,
        "{} of {usage} usage events skipped",
        p.stats.rescore_skipped
    );
}

/// JSON values of any shape, biased toward the fields events use.
fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-20i64..120).prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("2026-03-01T12:00:00Z"),
            Just("2026-03-01T12:00:00.123+02:00"),
            Just("1969-12-31T23:59:59Z"),
            Just("9999-12-31T23:59:59Z"),
            Just("usage.login"),
            Just("usage.feature"),
            Just("ticket.opened"),
            Just("survey.nps"),
            Just("health.override"),
            Just("invoice.overdue"),
            Just("subscription.started"),
            Just("urgent"),
            Just("at_risk"),
            Just("useful"),
            Just("USD"),
        ]
        .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("id".to_string()),
                    Just("account_id".to_string()),
                    Just("type".to_string()),
                    Just("time".to_string()),
                    Just("user_id".to_string()),
                    Just("score".to_string()),
                    Just("count".to_string()),
                    Just("priority".to_string()),
                    Just("expires_at".to_string()),
                    Just("band".to_string()),
                    "[a-z_]{1,10}",
                ],
                inner,
                0..8,
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An event-shaped object: the envelope is usually right, the rest random.
fn arb_eventish() -> impl Strategy<Value = serde_json::Value> {
    (
        0usize..20,
        proptest::collection::btree_map("[a-z_]{2,14}", arb_json(), 0..8),
        0u8..4,
    )
        .prop_map(|(ty, extra, id)| {
            let mut m = serde_json::Map::new();
            m.insert("id".into(), format!("e{id}").into());
            m.insert("account_id".into(), "acct".into());
            m.insert("type".into(), vitals::core::event::TYPE_NAMES[ty].into());
            m.insert("time".into(), "2026-03-01T12:00:00Z".into());
            for (k, v) in extra {
                m.insert(k, v);
            }
            serde_json::Value::Object(m)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = json::decode(&bytes);
        let _ = proto::decode(&bytes);
    }

    #[test]
    fn arbitrary_json_never_panics_and_valid_events_fold(v in prop_oneof![arb_json(), arb_eventish()]) {
        let bytes = serde_json::to_vec(&v).unwrap();
        if let Ok(ev) = json::decode(&bytes) {
            // Whatever validates must round-trip and fold without panicking.
            let again = json::encode(&ev);
            prop_assert_eq!(json::decode(&again).unwrap(), ev.clone());
            prop_assert_eq!(proto::decode(&proto::encode(&ev)).unwrap(), ev.clone().into_owned());
            let mut p = Partition::new(model(ModelConfig::default()));
            let mut out = Vec::new();
            p.apply(&ev, &mut out);
            p.advance(ev.time + 400 * 86_400_000, &mut out);
        }
    }
}

fn same_outcome(
    a: &Result<Event<'static>, vitals::codec::DecodeError>,
    b: &Result<Event<'static>, vitals::codec::DecodeError>,
) -> bool {
    use vitals::codec::DecodeError as E;
    match (a, b) {
        (Ok(x), Ok(y)) => x == y,
        (Err(E::Protobuf(_)), Err(E::Protobuf(_))) => true,
        (Err(x), Err(y)) => x == y,
        _ => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, .. ProptestConfig::default() })]

    /// The direct Protobuf reader accepts and rejects exactly what prost's
    /// decoder followed by the shared validation does.
    #[test]
    fn direct_protobuf_reader_agrees_with_prost(
        v in arb_eventish(),
        cut in any::<u16>(),
        flip in any::<(u16, u8)>(),
        tail in proptest::collection::vec(any::<u8>(), 0..16),
        mode in 0u8..4,
    ) {
        let bytes = serde_json::to_vec(&v).unwrap();
        let Ok(ev) = json::decode(&bytes) else { return Ok(()) };
        let mut pb = proto::encode(&ev);
        match mode {
            0 => {}
            1 => { let n = pb.len(); pb.truncate(cut as usize % (n + 1)); }
            2 => { if !pb.is_empty() { let i = flip.0 as usize % pb.len(); pb[i] ^= flip.1 | 1; } }
            _ => pb.extend_from_slice(&tail),
        }
        let direct = proto::decode(&pb);
        let reference = proto::decode_via_prost(&pb);
        prop_assert!(same_outcome(&direct, &reference), "direct {:?}\nprost {:?}", direct, reference);
    }

    #[test]
    fn direct_protobuf_reader_agrees_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let direct = proto::decode(&bytes);
        let reference = proto::decode_via_prost(&bytes);
        prop_assert!(same_outcome(&direct, &reference), "direct {:?}\nprost {:?}", direct, reference);
    }
}
