//! Hostile input cannot grow one account's state without bound: a single
//! account flooded with distinct users, features, tickets, unpaid invoices
//! and segment labels keeps at most the configured number of each, counts
//! what it evicted, and the duplicate memory stays within its cap. These
//! tests fail if a limit is removed.

use std::sync::Arc;

use vitals::codec::json;
use vitals::core::{Model, ModelConfig, Partition};

const N: usize = 60_000;

fn fold(p: &mut Partition, line: String) {
    let ev = json::decode(line.as_bytes()).expect("valid event");
    let mut out = Vec::new();
    p.apply(&ev, &mut out);
}

fn time(i: usize) -> String {
    // One event a second from 2026-01-01.
    vitals::codec::timefmt::format(1_767_225_600_000 + i as i64 * 1000)
}

#[test]
fn one_account_flooded_with_distinct_ids_stays_bounded() {
    let cfg = ModelConfig::default();
    let lim = cfg.limits;
    let mut p = Partition::new(Arc::new(Model::new(cfg)));
    for i in 0..N {
        let t = time(i);
        fold(
            &mut p,
            format!(
                r#"{{"id":"u{i}","account_id":"victim","type":"usage.feature","time":"{t}","user_id":"user-{i}","feature":"feature-{i}"}}"#
            ),
        );
        if i % 4 == 0 {
            fold(
                &mut p,
                format!(
                    r#"{{"id":"t{i}","account_id":"victim","type":"ticket.opened","time":"{t}","ticket_id":"ticket-{i}","priority":"low"}}"#
                ),
            );
            fold(
                &mut p,
                format!(
                    r#"{{"id":"f{i}","account_id":"victim","type":"invoice.payment_failed","time":"{t}","invoice_id":"inv-{i}","amount_cents":100}}"#
                ),
            );
        }
        if i % 2 == 0 {
            fold(
                &mut p,
                format!(
                    r#"{{"id":"s{i}","account_id":"victim","type":"account.updated","time":"{t}","segment":"seg-{i}"}}"#
                ),
            );
        }
    }
    let a = p.account("victim").expect("the account");
    assert!(
        a.users.len() <= lim.max_users as usize,
        "{} users",
        a.users.len()
    );
    assert!(
        a.features.len() <= lim.max_features as usize,
        "{} features",
        a.features.len()
    );
    let open = a.support.as_ref().map_or(0, |s| s.open_tickets.len());
    assert!(open <= lim.max_open_tickets as usize, "{open} open tickets");
    assert!(
        a.unpaid.len() <= lim.max_unpaid_invoices as usize,
        "{} unpaid",
        a.unpaid.len()
    );
    assert!(
        p.labels.names.len() <= lim.max_labels as usize + 1,
        "{} labels",
        p.labels.names.len()
    );
    assert!(p.dedup.order.len() <= lim.dedup_max_ids as usize);
    let hits = &p.stats.limits;
    assert!(
        hits.users_evicted > 0 && hits.features_evicted > 0,
        "{hits:?}"
    );
    assert!(
        hits.tickets_evicted > 0 && hits.invoices_evicted > 0,
        "{hits:?}"
    );
    assert!(hits.labels_ignored > 0, "{hits:?}");
}

#[test]
fn oversize_and_deeply_nested_records_are_rejected_with_a_reason() {
    let big = format!(
        r#"{{"id":"x","account_id":"a","type":"usage.login","time":"2026-01-01T00:00:00Z","user_id":"u","pad":"{}"}}"#,
        "x".repeat(vitals::codec::MAX_RECORD_BYTES)
    );
    let err = json::decode(big.as_bytes()).unwrap_err().to_string();
    assert!(
        err.contains("1048576") || err.to_lowercase().contains("size"),
        "{err}"
    );
    let nested = "[".repeat(100_000) + &"]".repeat(100_000);
    let err = json::decode(nested.as_bytes()).unwrap_err().to_string();
    assert!(!err.is_empty());
    let bad_key = b"{\"id\":\"x\",\"\xff\xfe\":1}";
    assert!(json::decode(bad_key).is_err());
}
