//! Live model monitoring (`core::monitor`): cohorts are taken when the
//! watermark passes multiples of `every_days`, entries are labelled
//! churned when the cancellation arrives and retained when the horizon
//! passes — checked by hand on a small log, and through a snapshot.

use std::sync::Arc;

use vitals::codec::json;
use vitals::core::{Model, ModelConfig, Partition};

fn ev(id: &str, acct: &str, ty: &str, time: &str, extra: &str) -> String {
    format!(r#"{{"id":"{id}","account_id":"{acct}","type":"{ty}","time":"{time}"{extra}}}"#)
}

fn fold(p: &mut Partition, lines: &[String]) {
    let mut out = Vec::new();
    for l in lines {
        let e = json::decode(l.as_bytes()).expect("test event");
        p.apply(&e, &mut out);
    }
}

fn score_of(p: &Partition, id: &str) -> u8 {
    let a = p.account(id).expect("account");
    let s = a.alert.published.as_ref().expect("published").score();
    s.round() as u8
}

#[test]
fn cohorts_label_churned_on_cancellation_and_retained_at_the_horizon() {
    // Defaults: horizon 60 days, a cohort every 30 days since the epoch:
    // 2026-01-07, 2026-02-06, 2026-03-08 … (day 20460 = 682 × 30).
    let cfg = ModelConfig::default();
    assert_eq!((cfg.monitor.horizon_days, cfg.monitor.every_days), (60, 30));
    let mut p = Partition::new(Arc::new(Model::new(cfg)));
    let start = r#","plan":"team","mrr_cents":10000,"seats":10"#;
    fold(
        &mut p,
        &[
            ev(
                "1",
                "a",
                "subscription.started",
                "2026-01-05T00:00:00Z",
                start,
            ),
            ev(
                "2",
                "b",
                "subscription.started",
                "2026-01-05T00:00:00Z",
                start,
            ),
            // Not subscribed: never in a cohort.
            ev(
                "3",
                "c",
                "usage.login",
                "2026-01-05T01:00:00Z",
                r#","user_id":"u""#,
            ),
        ],
    );
    assert!(p.monitor.cohorts.is_empty());
    // The watermark (1 h behind) passes 2026-01-07: the first cohort.
    fold(
        &mut p,
        &[ev(
            "4",
            "b",
            "usage.login",
            "2026-01-08T00:00:00Z",
            r#","user_id":"u1""#,
        )],
    );
    assert_eq!(p.monitor.cohorts.len(), 1);
    let c = &p.monitor.cohorts[0];
    assert_eq!(c.at, 20460 * 86_400_000);
    assert_eq!(c.accounts.len(), 2, "a and b, not c");
    let (sa, sb) = (c.scores[0], c.scores[1]);
    assert_eq!(sa, score_of(&p, "a"));
    // a cancels within 60 days of the cohort: churned at once, with the
    // score it had then.
    fold(
        &mut p,
        &[ev(
            "5",
            "a",
            "subscription.cancelled",
            "2026-02-10T00:00:00Z",
            "",
        )],
    );
    let t = p.monitor.tally;
    assert_eq!((t.churned_total(), t.retained_total()), (1, 0));
    assert_eq!(t.churned[sa as usize], 1);
    // The second cohort (2026-02-06) was taken after: a is cancelled.
    assert_eq!(p.monitor.cohorts.len(), 2);
    assert_eq!(p.monitor.cohorts[1].accounts.len(), 1);
    // 2026-03-08 passes: the first cohort's horizon ends, b is retained;
    // a third cohort opens.
    fold(
        &mut p,
        &[ev(
            "6",
            "b",
            "usage.login",
            "2026-03-09T00:00:00Z",
            r#","user_id":"u1""#,
        )],
    );
    let t = p.monitor.tally;
    assert_eq!((t.churned_total(), t.retained_total()), (1, 1));
    assert_eq!(t.retained[sb as usize], 1);
    assert_eq!(p.monitor.cohorts.len(), 2);
    let expected_auc = match sa.cmp(&sb) {
        std::cmp::Ordering::Less => 1.0,
        std::cmp::Ordering::Equal => 0.5,
        std::cmp::Ordering::Greater => 0.0,
    };
    assert_eq!(t.auc(), Some(expected_auc));

    // The monitor survives a snapshot exactly.
    let bytes = vitals::snapshot::encode(&p, 0, 7, "", 0);
    let (_, back) = vitals::snapshot::decode(&bytes, p.model.clone()).expect("decodes");
    assert_eq!(back.monitor, p.monitor);
}

#[test]
fn a_late_cancellation_before_the_cohort_is_not_counted() {
    let mut p = Partition::new(Arc::new(Model::new(ModelConfig::default())));
    let start = r#","plan":"team","mrr_cents":10000,"seats":10"#;
    fold(
        &mut p,
        &[
            ev(
                "1",
                "a",
                "subscription.started",
                "2026-01-05T00:00:00Z",
                start,
            ),
            ev(
                "2",
                "b",
                "usage.login",
                "2026-01-07T00:30:00Z",
                r#","user_id":"u""#,
            ),
            ev(
                "3",
                "b",
                "usage.login",
                "2026-01-07T01:30:00Z",
                r#","user_id":"u""#,
            ),
        ],
    );
    assert_eq!(p.monitor.cohorts.len(), 1);
    // Late (within the allowed hour) and before the cohort time.
    fold(
        &mut p,
        &[ev(
            "4",
            "a",
            "subscription.cancelled",
            "2026-01-06T23:59:00Z",
            "",
        )],
    );
    let t = p.monitor.tally;
    assert_eq!((t.churned_total(), t.retained_total()), (0, 0));
}

#[test]
fn metrics_sum_partitions_per_scorecard_and_role() {
    let mut p = Partition::new(Arc::new(Model::new(ModelConfig::default())));
    p.monitor.tally.churned[20] = 2;
    p.monitor.tally.retained[80] = 3;
    p.monitor.tally.retained[20] = 2;
    p.monitor.tally.at_risk = [1, 2];
    let shadow_cfg = ModelConfig {
        version: "shadow-1".into(),
        ..Default::default()
    };
    let mut sh = Partition::new(Arc::new(Model::new(shadow_cfg)));
    sh.monitor.tally.churned[10] = 1;
    sh.monitor.tally.retained[90] = 1;
    let read = vitals::readside::ReadSide::new();
    for part in 0..2 {
        read.set_analytics(part, &p);
        read.set_shadow(part, &sh);
    }
    let m = read.model_monitors();
    assert_eq!(m.len(), 2);
    assert_eq!((m[0].role, m[1].role), ("live", "shadow"));
    assert_eq!(m[0].tally.churned_total(), 4);
    // Churned at 20 vs retained at 80 (wins) and at 20 (ties): (6·4 +
    // 4·4·½) / (4 · 10).
    assert_eq!(m[0].tally.auc(), Some((24.0 + 8.0) / 40.0));
    assert_eq!(m[0].tally.precision(), Some(4.0 / 6.0));
    assert_eq!(m[0].tally.recall(), Some(1.0));
    let text = vitals::readside::render_metrics(&vitals::readside::install_recorder(), &read);
    let live = format!("role=\"live\",scorecard=\"{}\"", p.model.id);
    let shadow = format!("role=\"shadow\",scorecard=\"{}\"", sh.model.id);
    for line in [
        format!("vitals_model_auc{{{live}}} 0.8"),
        format!("vitals_model_precision{{{live}}} {}", 4.0 / 6.0),
        format!("vitals_model_recall{{{live}}} 1"),
        format!("vitals_model_churned{{{live}}} 4"),
        format!("vitals_model_retained{{{live}}} 10"),
        format!("vitals_model_auc{{{shadow}}} 1"),
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
}
