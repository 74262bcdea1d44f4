//! What each fuzz target checks on one input. Shared with the main
//! crate's `tests/fuzz_regressions.rs` (included there by path), so the
//! regression test runs exactly what the fuzzer ran.
//!
//! Every check returns normally for any input: a decoder answers `Ok` or
//! `Err`, and a panic (or an abort, an out-of-memory, a hang) is a bug.
#![allow(dead_code)]

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use vitals::codec::{json, proto, state, DecodeError};
use vitals::core::{Event, EventKind, Model, ModelConfig, Partition};
use vitals::snapshot;

/// The default model, built once.
pub fn model() -> Arc<Model> {
    static M: OnceLock<Arc<Model>> = OnceLock::new();
    M.get_or_init(|| Arc::new(Model::new(ModelConfig::default())))
        .clone()
}

/// `json_event`: a JSON record decodes or is rejected. A decoded record
/// encodes and decodes to itself, and folds into a fresh partition.
pub fn json_event(data: &[u8]) {
    let Ok(ev) = json::decode(data) else {
        return;
    };
    let text = json::encode(&ev);
    let again = json::decode(&text).expect("an encoded event decodes");
    assert_eq!(again, ev, "JSON round trip");
    fold_event(&ev);
}

/// `proto_event`: the direct wire reader (`decode`, `decode_borrowed`)
/// and the prost reference (`decode_via_prost`) agree, as
/// src/codec/proto.rs documents: the same events, the same rejections
/// (malformed wire data may be worded differently).
pub fn proto_event(data: &[u8]) {
    let owned = proto::decode(data);
    let borrowed = proto::decode_borrowed(data).map(Event::into_owned);
    let reference = proto::decode_via_prost(data);
    match (&owned, &borrowed) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(a), Err(b)) => assert_eq!(a, b),
        _ => panic!("decode {owned:?} but decode_borrowed {borrowed:?}"),
    }
    match (&borrowed, &reference) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "direct and prost readers disagree"),
        (Err(DecodeError::Protobuf(_)), Err(DecodeError::Protobuf(_))) => {}
        (Err(a), Err(b)) => assert_eq!(a, b),
        _ => panic!("direct {borrowed:?} but prost {reference:?}"),
    }
    if let Ok(ev) = &borrowed {
        let again = proto::decode(&proto::encode(ev)).expect("an encoded event decodes");
        assert_eq!(&again, ev, "protobuf round trip");
        fold_event(ev);
    }
}

/// `snapshot`: `snapshot::decode` on the bytes as they are (magic,
/// checksum, truncation), then with the last 8 bytes replaced by the
/// checksum of the rest — arbitrary bytes almost never carry a valid
/// xxh3, and this takes the header parser and the state decoder behind
/// it. A restored partition is folded on, as recovery would.
pub fn snapshot(data: &[u8]) {
    let _ = snapshot::decode(data, model());
    let _ = snapshot::parse(data);
    if data.len() < 16 {
        return;
    }
    let mut b = data.to_vec();
    let body = b.len() - 8;
    let sum = xxhash_rust::xxh3::xxh3_64(&b[..body]);
    b[body..].copy_from_slice(&sum.to_le_bytes());
    if let Ok((_, mut part)) = snapshot::decode(&b, model()) {
        fold_on(&mut part);
    }
}

/// `state`: the partition state inside a snapshot, without header and
/// checksum (`codec::state::decode`). A restored partition encodes again
/// and is folded on, as recovery would.
pub fn state(data: &[u8]) {
    let Ok(mut part) = state::decode(data, model()) else {
        return;
    };
    let _ = state::encode(&part);
    fold_on(&mut part);
}

fn fold_event(ev: &Event<'_>) {
    let mut part = Partition::new(model());
    let mut out = Vec::new();
    part.apply(ev, &mut out);
    part.apply(ev, &mut out); // a duplicate
    part.advance(ev.time.saturating_add(400 * 86_400_000), &mut out);
}

/// A clock tick, a login for a few of the restored accounts, then a tick
/// a year later.
fn fold_on(part: &mut Partition) {
    let mut out = Vec::new();
    // Restored times are whatever the bytes said; the new ones stay
    // within 1970..2100 so only the restored state is extreme.
    let t = part.max_time.clamp(0, 4_102_444_800_000);
    part.advance(t + 3_600_000, &mut out);
    let ids: Vec<String> = part
        .accounts
        .iter()
        .take(4)
        .map(|a| a.id.to_string())
        .collect();
    for (i, id) in ids.into_iter().enumerate() {
        let ev = Event {
            id: Cow::Owned(format!("fuzz-{i}")),
            account_id: Cow::Owned(id),
            time: t + 7_200_000,
            kind: EventKind::Login {
                user_id: Cow::Borrowed("u"),
            },
        };
        part.apply(&ev, &mut out);
    }
    part.advance(t + 400 * 86_400_000, &mut out);
    let _ = part.portfolio_report();
    let _ = part.interventions_report();
}
