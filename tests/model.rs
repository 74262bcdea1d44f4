//! Hand-computed cases: each component, the composite, bands and
//! hysteresis, each signal and each timer, with exact expected values.
//! The arithmetic for each case is written next to it; formulas are in
//! docs/MODEL.md.

use std::sync::Arc;

use vitals::codec::{json, output, timefmt};
use vitals::core::config::Scorecard;
use vitals::core::score::{base_score, evaluate, next_band, Factor};
use vitals::core::signal::CausedBy;
use vitals::core::{AlertKind, Band, Model, ModelConfig, Partition, Signal};

fn t(s: &str) -> i64 {
    timefmt::parse(s).expect("test timestamp")
}

/// A partition with the default model.
fn part() -> Partition {
    Partition::new(Arc::new(Model::new(ModelConfig::default())))
}

fn part_with(f: impl FnOnce(&mut ModelConfig)) -> Partition {
    let mut cfg = ModelConfig::default();
    f(&mut cfg);
    Partition::new(Arc::new(Model::new(cfg)))
}

/// Folds JSON events, returning every signal.
fn fold(p: &mut Partition, lines: &[String]) -> Vec<Signal> {
    let mut out = Vec::new();
    for l in lines {
        let ev = json::decode(l.as_bytes()).unwrap_or_else(|e| panic!("{l}: {e}"));
        p.apply(&ev, &mut out);
    }
    out
}

/// Folds JSON events sorted by event time (stable), as the sequencer
/// delivers events of several accounts.
fn fold_in_time_order(p: &mut Partition, lines: &[String]) -> Vec<Signal> {
    let mut evs: Vec<_> = lines
        .iter()
        .map(|l| json::decode(l.as_bytes()).unwrap().into_owned())
        .collect();
    evs.sort_by_key(|e| e.time);
    let mut out = Vec::new();
    for e in &evs {
        p.apply(e, &mut out);
    }
    out
}

fn alerts(s: &[Signal]) -> Vec<&vitals::core::Alert> {
    s.iter()
        .filter_map(|s| match s {
            Signal::Alert(a) => Some(a),
            _ => None,
        })
        .collect()
}

fn healths(s: &[Signal]) -> Vec<&vitals::core::Health> {
    s.iter()
        .filter_map(|s| match s {
            Signal::Health(h) => Some(h),
            _ => None,
        })
        .collect()
}

fn close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-9, "{a} != {b}");
}

struct Log {
    n: u32,
    lines: Vec<String>,
}

impl Log {
    fn new() -> Self {
        Log {
            n: 0,
            lines: Vec::new(),
        }
    }
    fn add(&mut self, acct: &str, ty: &str, time: &str, extra: &str) -> String {
        self.n += 1;
        let id = format!("e{}", self.n);
        let sep = if extra.is_empty() { "" } else { "," };
        self.lines.push(format!(
            r#"{{"id":"{id}","account_id":"{acct}","type":"{ty}","time":"{time}"{sep}{extra}}}"#
        ));
        id
    }
}

const T0: &str = "2026-01-05T00:00:00Z"; // a Monday

#[test]
fn new_account_scores_exactly() {
    // subscription.started only. Factors (docs/MODEL.md):
    //   usage: recency 100 (0 days since first seen), trend/momentum/users 50
    //          (no history), stickiness 50 (no users in 28 days)
    //          → 0.2·100 + 0.2·50 + 0.2·50 + 0.2·50 + 0.2·50 = 60
    //   adoption: day 0 blends fully to the neutral 50 → 50
    //   support 100, financial 100 (no MRR 90 days ago to compare)
    //   sentiment: priors NPS 7 → 70, CSAT 4 → 75, CES 5 → 66.67:
    //          0.5·70 + 0.3·75 + 0.2·66.667 = 70.8333
    //   lifecycle: 0 of 4 milestones → 0
    //   score = 0.4·60 + 0.15·50 + 0.15·100 + 0.15·100 + 0.1·70.8333 + 0.05·0
    //         = 68.5833 → neutral (58 ≤ s < 70)
    let mut p = part();
    let mut log = Log::new();
    log.add(
        "a",
        "subscription.started",
        T0,
        r#""plan":"team","mrr_cents":10000,"seats":10"#,
    );
    let out = fold(&mut p, &log.lines);
    let h = healths(&out);
    assert_eq!(h.len(), 1);
    let json = String::from_utf8(output::health_json(h[0])).unwrap();
    let model_id = p.model.id.clone();
    assert_eq!(
        json,
        format!(
            r#"{{"account_id":"a","time":"2026-01-05T00:00:00.000Z","score":68.6,"band":"neutral","components":{{"usage":60.0,"adoption":50.0,"support":100.0,"financial":100.0,"sentiment":70.8,"lifecycle":0.0}},"trend_30d":0.0,"segment":null,"drivers":[{{"factor":"onboarding","impact":-5.0,"detail":"0 of 4 onboarding milestones reached"}}],"override":null,"scorecard":"{model_id}","status":"active","caused_by":"e1"}}"#
        )
    );
    let acc = p.account("a").unwrap();
    let ev = evaluate(acc, t(T0), &Scorecard::default(), &p.model.cfg);
    close(ev.score, 68.583_333_333_333_33);
    // score = base + Σ impacts
    let sum: f64 = ev.impacts.iter().sum();
    close(ev.score, base_score(&Scorecard::default()) + sum);
    close(base_score(&Scorecard::default()), 73.583_333_333_333_33);
    assert!(alerts(&out).is_empty());
}

#[test]
fn usage_trend_momentum_and_active_users() {
    // Weeks are epoch weeks (Thursday-based). First seen in week W-9, then
    // per week: W-8..W-5: 10 activity (one user); W-4..W-3: 5; W-2..W-1: 2.
    // Evaluated at the start of week W, with activity_trend_prior k = 10 a
    // week added to both sides (4k = 40 for the 4-week sums):
    //   trend    = (5+5+2+2 + 40)/(10·4 + 40) = 54/80 = 0.675
    //              → 50 + 100·(0.675 − 1) = 17.5   (unsmoothed: 0.35 → 0)
    //   momentum = (mean(2,2) + 10)/(mean(10,10,5,5) + 10) = 12/17.5
    //              → 50 + 100·(12/17.5 − 1) = 18.571  (unsmoothed: 0)
    //   users    = 1 per week both windows → 50
    //   stickiness: u1 was last active 7 days before now's day, outside the
    //              7-day window (days d−6..d): 0 of 1 → 50 + 100·(0/1 − 1) → 0
    let mut p = part();
    let mut log = Log::new();
    let week = 7 * 86_400_000i64;
    let w = t("2026-03-05T00:00:00Z") / week; // a week boundary (Thursday)
    let at = |k: i64, hour: i64| timefmt::format((w - k) * week + hour * 3_600_000);
    log.add(
        "a",
        "subscription.started",
        &at(9, 1),
        r#""plan":"team","mrr_cents":10000,"seats":1"#,
    );
    for k in 1..=8 {
        let n = match k {
            5..=8 => 10,
            3..=4 => 5,
            _ => 2,
        };
        log.add(
            "a",
            "usage.feature",
            &at(k, 2),
            &format!(r#""user_id":"u1","feature":"f","count":{n}"#),
        );
    }
    fold(&mut p, &log.lines);
    let acc = p.account("a").unwrap();
    let now = w * week;
    let ev = evaluate(acc, now, &Scorecard::default(), &p.model.cfg);
    close(ev.values[Factor::UsageTrend as usize], 17.5);
    close(
        ev.values[Factor::UsageMomentum as usize],
        50.0 + 100.0 * (12.0 / 17.5 - 1.0),
    );
    close(ev.values[Factor::ActiveUsersTrend as usize], 50.0);
    close(ev.values[Factor::UserStickiness as usize], 0.0);
    assert_eq!(ev.measures.active_users_7d, 0);
    assert_eq!(ev.measures.active_users_28d, 1);
    assert_eq!(ev.measures.activity_recent, 14);
    assert_eq!(ev.measures.activity_prior, 40);
    // Recency: last use 6 days 22 hours before now → (21 − 6.9167)/19·100.
    close(
        ev.values[Factor::UsageRecency as usize],
        100.0 * (21.0 - (6.0 + 22.0 / 24.0)) / 19.0,
    );
    // A smaller drop: W-4..W-1 at 8 → trend (32 + 40)/(40 + 40) = 0.9 → 40
    // (unsmoothed 32/40 = 0.8 → 30).
    let mut p2 = part();
    let mut log2 = Log::new();
    log2.add(
        "a",
        "subscription.started",
        &at(9, 1),
        r#""plan":"team","mrr_cents":10000,"seats":1"#,
    );
    for k in 1..=8 {
        let n = if k >= 5 { 10 } else { 8 };
        log2.add(
            "a",
            "usage.feature",
            &at(k, 2),
            &format!(r#""user_id":"u1","feature":"f","count":{n}"#),
        );
    }
    fold(&mut p2, &log2.lines);
    let ev2 = evaluate(
        p2.account("a").unwrap(),
        now,
        &Scorecard::default(),
        &p2.model.cfg,
    );
    close(ev2.values[Factor::UsageTrend as usize], 40.0);
    // momentum: (8 + 10) vs (mean(10,10,8,8) + 10) = 18/19
    //   → 50 + 100·(18/19 − 1) = 44.737
    close(
        ev2.values[Factor::UsageMomentum as usize],
        50.0 + 100.0 * (18.0 / 19.0 - 1.0),
    );
    // With the prior turned off the raw ratios come back: 0.8 → 30 and
    // 8 vs 9 → 38.889.
    let mut raw = p2.model.cfg.clone();
    raw.factors.activity_trend_prior = 0.0;
    let ev3 = evaluate(p2.account("a").unwrap(), now, &Scorecard::default(), &raw);
    close(ev3.values[Factor::UsageTrend as usize], 30.0);
    close(
        ev3.values[Factor::UsageMomentum as usize],
        50.0 + 100.0 * (8.0 / 9.0 - 1.0),
    );
}

#[test]
fn user_stickiness_counts_the_months_users_seen_this_week() {
    // Four users, each last seen on a different day before `now` (day d):
    // u1 on d, u2 on d−6 (both inside the 7-day window d−6..d), u3 on d−7,
    // u4 on d−27 (inside 28 days only), u5 on d−28 (outside both).
    //   stickiness = trend(7-day users, 28-day users) = trend(2, 4)
    //              = 50 + 100·(2/4 − 1) = 0; with u3 on d−6 instead:
    //              trend(3, 4) = 50 + 100·(3/4 − 1) = 25.
    let now = t("2026-03-01T12:00:00Z");
    let day = 86_400_000i64;
    for (u3_days_ago, expected) in [(7, 0.0), (6, 25.0)] {
        let mut p = part();
        let mut log = Log::new();
        for (u, ago) in [
            ("u5", 28),
            ("u4", 27),
            ("u3", u3_days_ago),
            ("u2", 6),
            ("u1", 0),
        ] {
            log.add(
                "a",
                "usage.login",
                &timefmt::format(now - ago * day),
                &format!(r#""user_id":"{u}""#),
            );
        }
        fold_in_time_order(&mut p, &log.lines);
        let ev = evaluate(
            p.account("a").unwrap(),
            now,
            &Scorecard::default(),
            &p.model.cfg,
        );
        assert_eq!(ev.measures.active_users_28d, 4);
        close(ev.values[Factor::UserStickiness as usize], expected);
    }
}

#[test]
fn support_and_financial_penalties() {
    // Account seen 10 weeks. Open tickets: urgent (15) + normal (4) = 19.
    // One escalation this week (10), one reopen (5).
    // Two failed payments on one invoice (2 × 20 = 40) → hard trigger.
    // Overdue 12 days reported today → 12.
    let mut p = part();
    let mut log = Log::new();
    // Active daily from Jan 1 to Mar 11.
    healthy_history(&mut log, "a", 0, 70);
    let day = "2026-03-12T10:00:00Z";
    log.add(
        "a",
        "ticket.opened",
        day,
        r#""ticket_id":"t1","priority":"urgent""#,
    );
    log.add(
        "a",
        "ticket.opened",
        day,
        r#""ticket_id":"t2","priority":"normal""#,
    );
    log.add(
        "a",
        "ticket.opened",
        day,
        r#""ticket_id":"t3","priority":"low""#,
    );
    log.add("a", "ticket.resolved", day, r#""ticket_id":"t3""#);
    log.add("a", "ticket.reopened", day, r#""ticket_id":"t3""#);
    log.add("a", "ticket.resolved", day, r#""ticket_id":"t3""#);
    log.add("a", "ticket.escalated", day, r#""ticket_id":"t2""#);
    let out = fold(&mut p, &log.lines);
    let risk: Vec<_> = alerts(&out)
        .into_iter()
        .filter(|a| a.kind != AlertKind::UpsellOpportunity)
        .collect();
    assert!(risk.is_empty(), "{risk:?}");
    let acc = p.account("a").unwrap();
    let now = t(day);
    let ev = evaluate(acc, now, &Scorecard::default(), &p.model.cfg);
    // t2 escalated → counts as high (8): 15 + 8 = 23
    close(ev.values[Factor::OpenTickets as usize], 23.0);
    close(ev.values[Factor::Escalations as usize], 10.0);
    close(ev.values[Factor::Reopens as usize], 5.0);
    // Ticket volume: 3 tickets this month; baseline: none before → 0 per
    // 4 weeks over 10 − 4 = 6 weeks → r = 3/(0+1) = 3 → 10·(3 − 1.5) = 15.
    close(ev.values[Factor::TicketVolume as usize], 15.0);
    close(ev.components[2], 100.0 - 23.0 - 10.0 - 5.0 - 15.0);

    let mut log2 = Log::new();
    log2.n = 100;
    log2.add(
        "a",
        "invoice.overdue",
        day,
        r#""invoice_id":"i1","amount_cents":10000,"days_overdue":12"#,
    );
    log2.add(
        "a",
        "invoice.payment_failed",
        day,
        r#""invoice_id":"i1","amount_cents":10000"#,
    );
    let out = fold(&mut p, &log2.lines);
    assert!(alerts(&out).is_empty(), "one failure is not a trigger");
    let mut log3 = Log::new();
    log3.n = 200;
    let second = log3.add(
        "a",
        "invoice.payment_failed",
        "2026-03-13T10:00:00Z",
        r#""invoice_id":"i1","amount_cents":10000"#,
    );
    let out = fold(&mut p, &log3.lines);
    let a = alerts(&out);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].kind, AlertKind::AtRisk);
    assert_eq!(a[0].reason, "payment_failures");
    assert_eq!(a[0].caused_by, CausedBy::Event(second));
    assert_eq!(a[0].band, Band::AtRisk);
    let ev = evaluate(
        p.account("a").unwrap(),
        t("2026-03-13T10:00:00Z"),
        &Scorecard::default(),
        &p.model.cfg,
    );
    close(ev.values[Factor::FailedPayments as usize], 40.0);
    // Overdue grows by one a day: 12 reported yesterday → 13.
    close(ev.values[Factor::Overdue as usize], 13.0);
    // Paying the invoice clears both.
    let mut log4 = Log::new();
    log4.n = 300;
    log4.add(
        "a",
        "invoice.paid",
        "2026-03-14T10:00:00Z",
        r#""invoice_id":"i1","amount_cents":10000"#,
    );
    fold(&mut p, &log4.lines);
    let ev = evaluate(
        p.account("a").unwrap(),
        t("2026-03-14T10:00:00Z"),
        &Scorecard::default(),
        &p.model.cfg,
    );
    close(ev.values[Factor::FailedPayments as usize], 0.0);
    close(ev.values[Factor::Overdue as usize], 0.0);
}

#[test]
fn mrr_contraction_and_cancellation() {
    // MRR 10000 → 6000: −40% → 60 · 0.4 = 24 points of penalty.
    let mut p = part();
    let mut log = Log::new();
    log.add(
        "a",
        "subscription.started",
        "2026-01-01T00:00:00Z",
        r#""plan":"team","mrr_cents":10000,"seats":5"#,
    );
    log.add(
        "a",
        "subscription.changed",
        "2026-02-01T00:00:00Z",
        r#""plan":"lite","mrr_cents":6000,"seats":5"#,
    );
    fold(&mut p, &log.lines);
    let acc = p.account("a").unwrap();
    let ev = evaluate(
        acc,
        t("2026-02-01T00:00:00Z"),
        &Scorecard::default(),
        &p.model.cfg,
    );
    // 90 days before Feb 1 the account did not exist yet: it is compared
    // with the first MRR known (10000), so a month-old contraction counts.
    close(ev.values[Factor::MrrChange as usize], 24.0);
    let ev = evaluate(
        acc,
        t("2026-04-15T00:00:00Z"),
        &Scorecard::default(),
        &p.model.cfg,
    );
    // 90 days before Apr 15 is Jan 15: 10000 → now 6000.
    close(ev.values[Factor::MrrChange as usize], 24.0);
    let mut log2 = Log::new();
    log2.n = 10;
    log2.add("a", "subscription.cancelled", "2026-04-15T00:00:00Z", "");
    let out = fold(&mut p, &log2.lines);
    let h = healths(&out);
    let last = h.last().expect("a health record for the cancellation");
    assert!(last.cancelled);
    assert_eq!(last.caused_by, CausedBy::Event("e11".into()));
    close(last.components[3], 0.0);
    assert!(alerts(&out).is_empty(), "no alerts for a cancelled account");
    assert_eq!(
        p.account("a").unwrap().timer_due,
        i64::MIN,
        "no timers after cancelling"
    );
}

#[test]
fn sentiment_decays_toward_the_prior() {
    // One NPS 2 answer. Mean with prior 7 (weight 1): (2·w + 7)/(w + 1).
    // Same day: w = 1 → 4.5 → 45. After 90 days (one half-life): w = 0.5
    // → (1 + 7)/1.5 = 5.333 → 53.33.
    let mut p = part();
    let mut log = Log::new();
    log.add("a", "survey.nps", "2026-01-01T00:00:00Z", r#""score":2"#);
    fold(&mut p, &log.lines);
    let acc = p.account("a").unwrap();
    let ev = evaluate(
        acc,
        t("2026-01-01T00:00:00Z"),
        &Scorecard::default(),
        &p.model.cfg,
    );
    close(ev.values[Factor::Nps as usize], 45.0);
    let ev = evaluate(
        acc,
        t("2026-04-01T00:00:00Z"),
        &Scorecard::default(),
        &p.model.cfg,
    );
    close(ev.values[Factor::Nps as usize], 10.0 * 8.0 / 1.5);
    // CSAT 5 and CES 7 answered today: (5+4)/2 = 4.5 → 87.5; (7+5)/2 = 6 → 83.33.
    let mut log2 = Log::new();
    log2.n = 5;
    log2.add("a", "survey.csat", "2026-04-01T00:00:00Z", r#""score":5"#);
    log2.add("a", "survey.ces", "2026-04-01T00:00:00Z", r#""score":7"#);
    fold(&mut p, &log2.lines);
    let ev = evaluate(
        p.account("a").unwrap(),
        t("2026-04-01T00:00:00Z"),
        &Scorecard::default(),
        &p.model.cfg,
    );
    close(ev.values[Factor::Csat as usize], 87.5);
    close(ev.values[Factor::Ces as usize], 500.0 / 6.0);
}

#[test]
fn bands_have_hysteresis() {
    let sc = Scorecard::default(); // at_risk < 59, healthy ≥ 70, hysteresis 5
    assert_eq!(next_band(None, 58.9, false, &sc), Band::AtRisk);
    assert_eq!(next_band(None, 59.0, false, &sc), Band::Neutral);
    assert_eq!(next_band(None, 70.0, false, &sc), Band::Healthy);
    // Leaving at_risk needs 64.
    assert_eq!(
        next_band(Some(Band::AtRisk), 63.9, false, &sc),
        Band::AtRisk
    );
    assert_eq!(
        next_band(Some(Band::AtRisk), 64.0, false, &sc),
        Band::Neutral
    );
    assert_eq!(
        next_band(Some(Band::AtRisk), 75.0, false, &sc),
        Band::Healthy
    );
    // Leaving healthy needs < 65.
    assert_eq!(
        next_band(Some(Band::Healthy), 65.0, false, &sc),
        Band::Healthy
    );
    assert_eq!(
        next_band(Some(Band::Healthy), 64.9, false, &sc),
        Band::Neutral
    );
    assert_eq!(
        next_band(Some(Band::Healthy), 58.9, false, &sc),
        Band::AtRisk
    );
    assert_eq!(
        next_band(Some(Band::Neutral), 69.9, false, &sc),
        Band::Neutral
    );
    // A hard trigger wins over any score.
    assert_eq!(
        next_band(Some(Band::Healthy), 99.0, true, &sc),
        Band::AtRisk
    );
}

/// An account that used the product daily for 10 weeks (5 users, 8
/// features, 5 seats) — healthy — as JSON lines, starting at `start`.
fn healthy_history(log: &mut Log, acct: &str, start_day: i64, days: i64) {
    let base = t("2026-01-01T00:00:00Z") + start_day * 86_400_000;
    log.add(
        acct,
        "subscription.started",
        &timefmt::format(base),
        r#""plan":"team","mrr_cents":10000,"seats":5"#,
    );
    for d in 0..days {
        for u in 0..5 {
            let time = timefmt::format(base + d * 86_400_000 + 3_600_000 * (9 + u));
            log.add(
                acct,
                "usage.feature",
                &time,
                &format!(r#""user_id":"u{u}","feature":"f{}","count":2"#, (d + u) % 8),
            );
        }
    }
}

#[test]
fn silence_is_flagged_by_a_timer_without_any_event_of_its_own() {
    // Account "quiet" is active 70 days, then says nothing. Account "busy"
    // keeps sending, which moves the partition's watermark. "quiet" must
    // get an at_risk alert (silent, 14 days after its last use) caused by
    // a timer, at exactly that event time.
    let mut p = part();
    let mut log = Log::new();
    healthy_history(&mut log, "quiet", 0, 70);
    healthy_history(&mut log, "busy", 0, 100);
    let out = fold_in_time_order(&mut p, &log.lines);
    let quiet: Vec<_> = alerts(&out)
        .into_iter()
        .filter(|a| a.account_id == "quiet")
        .collect();
    // Last use: day 69, 13:00 (user 4) → silent at day 83, 13:00.
    let last_use = t("2026-01-01T00:00:00Z") + 69 * 86_400_000 + 13 * 3_600_000;
    let due = last_use + 14 * 86_400_000;
    let first_risk = quiet
        .iter()
        .find(|a| a.kind == AlertKind::AtRisk)
        .expect("at_risk for quiet");
    assert_eq!(first_risk.reason, "silent");
    assert_eq!(first_risk.time, due);
    assert_eq!(first_risk.caused_by, CausedBy::Timer(due));
    // Before the trigger the score has slid from healthy to neutral. Other
    // components are constant: adoption 100 (5 of 5 seats, 8 features),
    // support 100, financial 100, sentiment 70.833 (priors), lifecycle 75
    // (3 milestones, < 90 days) → 45 + 7.0833 + 3.75 = 55.8333 + 0.4·usage.
    // In week W = days 77..83 (weeks start on day 0, a Thursday): activity
    // 70 a week through day 69, WAU 5; recent 4 weeks 210 vs prior 280,
    // smoothed (210+40)/(280+40) → 28.125; momentum (35+10)/(70+10) → 6.25;
    // WAU 3.75 vs 5 → 25; stickiness 0 of 5 users in 7 days → 0.
    // Day 78 13:00 (9 days silent): recency 100·12/19 = 63.158 → usage
    // 12.632 + 0.2·(28.125 + 6.25 + 25 + 0) = 24.507 → score 65.636, healthy.
    // Day 81 13:00 (12 days): recency 100·9/19 → usage 21.349 → 64.373
    // < 65 → neutral; any re-score in the 3 days before the trigger (a
    // timer every 72 h) is ≤ 64.79 (11 days).
    let quiet_acc = p.account("quiet").unwrap();
    let score_at = |d: i64| {
        let now = t("2026-01-01T00:00:00Z") + d * 86_400_000 + 13 * 3_600_000;
        evaluate(quiet_acc, now, &Scorecard::default(), &p.model.cfg).score
    };
    close(
        score_at(78),
        55.0 + 5.0 / 6.0 + 0.4 * (0.2 * 1200.0 / 19.0 + 11.875),
    );
    close(
        score_at(81),
        55.0 + 5.0 / 6.0 + 0.4 * (0.2 * 900.0 / 19.0 + 11.875),
    );
    assert!(score_at(81) < 65.0 && score_at(78) >= 65.0);
    assert_eq!(first_risk.previous_band, Band::Neutral);
    assert!(first_risk.alert_id.starts_with("at_risk-"));
    // One slide into risk is one alert: nothing more for "quiet".
    assert_eq!(
        quiet.iter().filter(|a| a.kind == AlertKind::AtRisk).count(),
        1
    );
    // "busy" never alerts at_risk.
    assert!(alerts(&out)
        .iter()
        .all(|a| a.account_id != "busy" || a.kind != AlertKind::AtRisk));
}

#[test]
fn recovered_follows_at_risk_and_cooldown_holds() {
    let mut p = part();
    let mut log = Log::new();
    healthy_history(&mut log, "a", 0, 60);
    // Two failed payments → at_risk; paid → recovered; two more failures
    // within 30 days → no second at_risk (cooldown), so no second recovered.
    let d = |n: i64, h: i64| {
        timefmt::format(t("2026-01-01T00:00:00Z") + n * 86_400_000 + h * 3_600_000)
    };
    log.add(
        "a",
        "invoice.payment_failed",
        &d(60, 1),
        r#""invoice_id":"i1","amount_cents":1"#,
    );
    log.add(
        "a",
        "invoice.payment_failed",
        &d(60, 2),
        r#""invoice_id":"i1","amount_cents":1"#,
    );
    let paid = log.add(
        "a",
        "invoice.paid",
        &d(61, 1),
        r#""invoice_id":"i1","amount_cents":1"#,
    );
    log.add(
        "a",
        "invoice.payment_failed",
        &d(70, 1),
        r#""invoice_id":"i2","amount_cents":1"#,
    );
    log.add(
        "a",
        "invoice.payment_failed",
        &d(70, 2),
        r#""invoice_id":"i2","amount_cents":1"#,
    );
    let out = fold(&mut p, &log.lines);
    let a = alerts(&out);
    let kinds: Vec<_> = a
        .iter()
        .filter(|a| a.kind != AlertKind::UpsellOpportunity)
        .map(|a| (a.kind, a.reason))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (AlertKind::AtRisk, "payment_failures"),
            (AlertKind::Recovered, "left_band")
        ]
    );
    let rec = a.iter().find(|a| a.kind == AlertKind::Recovered).unwrap();
    assert_eq!(rec.caused_by, CausedBy::Event(paid));
    assert_eq!(rec.previous_band, Band::AtRisk);
    assert_eq!(p.stats.at_risk_suppressed_by_cooldown, 1);
}

#[test]
fn upsell_needs_healthy_and_two_signals() {
    // 5 of 5 seats active (100% ≥ 90%) and 8 of 8 features (≥ 80%): two
    // signals while healthy → one upsell_opportunity, then none for 30 days.
    let mut p = part();
    let mut log = Log::new();
    healthy_history(&mut log, "a", 0, 40);
    let out = fold(&mut p, &log.lines);
    let up: Vec<_> = alerts(&out)
        .into_iter()
        .filter(|a| a.kind == AlertKind::UpsellOpportunity)
        .collect();
    assert_eq!(
        up.len(),
        1,
        "edge-triggered: one alert while the condition holds"
    );
    let names: Vec<_> = up[0].signals.iter().map(|s| s.signal).collect();
    assert!(names.contains(&"seat_utilisation"), "{names:?}");
    assert!(names.contains(&"feature_breadth"), "{names:?}");
    assert_eq!(up[0].band, Band::Healthy);
    assert!(up[0].score >= 70.0);
}

#[test]
fn override_is_shown_audited_and_expires() {
    let mut p = part();
    let mut log = Log::new();
    healthy_history(&mut log, "a", 0, 10);
    healthy_history(&mut log, "b", 0, 30);
    let day = |n: i64| timefmt::format(t("2026-01-01T00:00:00Z") + n * 86_400_000);
    log.add(
        "a",
        "health.override",
        &day(10),
        &format!(
            r#""band":"at_risk","reason":"champion left","expires_at":"{}","by":"ana""#,
            day(15)
        ),
    );
    let out = fold_in_time_order(&mut p, &log.lines);
    let ha: Vec<_> = healths(&out)
        .into_iter()
        .filter(|h| h.account_id == "a")
        .collect();
    let with = ha
        .iter()
        .position(|h| h.override_.is_some())
        .expect("override shown");
    let o = ha[with].override_.as_ref().unwrap();
    assert_eq!(o.band, Some(Band::AtRisk));
    assert_eq!(o.reason, "champion left");
    // The computed score and band are not overwritten.
    assert_ne!(ha[with].band, Band::AtRisk);
    // At expiry (a timer) a record without the override is published.
    let gone = &ha[with + 1..]
        .iter()
        .find(|h| h.override_.is_none())
        .expect("override expired");
    assert_eq!(gone.time, t(&day(15)));
    assert_eq!(gone.caused_by, CausedBy::Timer(t(&day(15))));
    let audit = &p.account("a").unwrap().extras.as_ref().unwrap().audit;
    assert_eq!(audit.len(), 1);
    assert_eq!(&*audit[0].entry.reason, "champion left");
}

#[test]
fn duplicates_are_ignored_and_counted() {
    let mut p = part();
    let line = r#"{"id":"x1","account_id":"a","type":"usage.login","time":"2026-01-01T00:00:00Z","user_id":"u"}"#;
    let ev = json::decode(line.as_bytes()).unwrap();
    let mut out = Vec::new();
    assert_eq!(p.apply(&ev, &mut out), vitals::core::Outcome::Applied);
    let n = out.len();
    assert_eq!(p.apply(&ev, &mut out), vitals::core::Outcome::Duplicate);
    assert_eq!(out.len(), n, "a duplicate emits nothing");
    // The same id on another account is not a duplicate.
    let other = line.replace(r#""account_id":"a""#, r#""account_id":"b""#);
    let ev2 = json::decode(other.as_bytes()).unwrap();
    assert_eq!(p.apply(&ev2, &mut out), vitals::core::Outcome::Applied);
    assert_eq!(p.stats.events[0], [2, 0, 1]);
}

#[test]
fn late_events_are_applied_and_counted() {
    let mut p = part(); // allowed lateness 1 hour
    let mut log = Log::new();
    log.add(
        "a",
        "usage.login",
        "2026-01-01T10:00:00Z",
        r#""user_id":"u1""#,
    );
    log.add(
        "b",
        "usage.login",
        "2026-01-01T08:59:59Z",
        r#""user_id":"u1""#,
    );
    log.add(
        "b",
        "usage.login",
        "2026-01-01T09:00:00Z",
        r#""user_id":"u2""#,
    );
    fold(&mut p, &log.lines);
    assert_eq!(p.stats.events[0], [2, 1, 0]);
    assert_eq!(p.account("b").unwrap().users.len(), 2);
}

#[test]
fn sharp_drop_alerts_before_the_band() {
    // A healthy account loses its usage-related standing fast: with the
    // sharp-drop threshold lowered to 5 points, an urgent ticket and an
    // escalation (−15 open, −10 escalation → −0.15·25 = −3.75) plus a
    // failed payment (−20 → −0.15·20 = −3) drop the score ≥ 5 in a day.
    let mut p = part_with(|c| c.alerts.sharp_drop_points = 5.0);
    let mut log = Log::new();
    healthy_history(&mut log, "a", 0, 60);
    let d = |h: i64| timefmt::format(t("2026-01-01T00:00:00Z") + 60 * 86_400_000 + h * 3_600_000);
    log.add(
        "a",
        "ticket.opened",
        &d(1),
        r#""ticket_id":"t1","priority":"urgent""#,
    );
    log.add("a", "ticket.escalated", &d(2), r#""ticket_id":"t1""#);
    let fail = log.add(
        "a",
        "invoice.payment_failed",
        &d(3),
        r#""invoice_id":"i1","amount_cents":1"#,
    );
    let out = fold(&mut p, &log.lines);
    let risk: Vec<_> = alerts(&out)
        .into_iter()
        .filter(|a| a.kind == AlertKind::AtRisk)
        .collect();
    assert_eq!(risk.len(), 1);
    assert_eq!(risk[0].reason, "sharp_drop");
    assert_eq!(risk[0].caused_by, CausedBy::Event(fail));
    assert_ne!(risk[0].band, Band::AtRisk);
    let factors: Vec<_> = risk[0].drivers.iter().map(|d| d.factor).collect();
    assert!(factors.contains(&"open_tickets"), "{factors:?}");
    assert!(factors.contains(&"failed_payments"), "{factors:?}");
}

#[test]
fn segment_scorecards_apply() {
    let mut p = part_with(|c| {
        c.segments.insert(
            "enterprise".into(),
            toml::from_str("[bands]\nhealthy_at = 90.0\nat_risk_below = 80.0\n").unwrap(),
        );
    });
    let mut log = Log::new();
    log.add(
        "a",
        "subscription.started",
        T0,
        r#""plan":"team","mrr_cents":10000,"seats":10"#,
    );
    log.add("a", "account.updated", T0, r#""segment":"enterprise""#);
    let out = fold(&mut p, &log.lines);
    let h = healths(&out);
    let last = h.last().unwrap();
    assert_eq!(last.segment.as_deref(), Some("enterprise"));
    // 68.6 < 80 under the enterprise card → at_risk.
    assert_eq!(last.band, Band::AtRisk);
}

#[test]
fn cooldown_expiry_raises_a_held_back_alert() {
    // at_risk at day 60 (two failed payments), recovered at day 61 (paid),
    // at_risk again at day 70 — inside the 30-day cooldown, so held back.
    // Still at risk when the cooldown ends (day 90, 02:00): a timer raises
    // it then, caused by the timer, not by any event.
    let mut p = part();
    let mut log = Log::new();
    healthy_history(&mut log, "a", 0, 100);
    let d = |n: i64, h: i64| {
        timefmt::format(t("2026-01-01T00:00:00Z") + n * 86_400_000 + h * 3_600_000)
    };
    log.add(
        "a",
        "invoice.payment_failed",
        &d(60, 1),
        r#""invoice_id":"i1","amount_cents":1"#,
    );
    log.add(
        "a",
        "invoice.payment_failed",
        &d(60, 2),
        r#""invoice_id":"i1","amount_cents":1"#,
    );
    log.add(
        "a",
        "invoice.paid",
        &d(61, 1),
        r#""invoice_id":"i1","amount_cents":1"#,
    );
    log.add(
        "a",
        "invoice.payment_failed",
        &d(70, 1),
        r#""invoice_id":"i2","amount_cents":1"#,
    );
    log.add(
        "a",
        "invoice.payment_failed",
        &d(70, 2),
        r#""invoice_id":"i2","amount_cents":1"#,
    );
    let out = fold_in_time_order(&mut p, &log.lines);
    let risk: Vec<_> = alerts(&out)
        .into_iter()
        .filter(|a| a.kind != AlertKind::UpsellOpportunity)
        .map(|a| (a.kind, a.reason, a.time, a.caused_by.clone()))
        .collect();
    let expiry = t(&d(90, 2));
    assert_eq!(risk.len(), 3, "{risk:?}");
    assert_eq!(
        (risk[0].0, risk[0].1),
        (AlertKind::AtRisk, "payment_failures")
    );
    assert_eq!(risk[1].0, AlertKind::Recovered);
    assert_eq!(
        risk[2],
        (
            AlertKind::AtRisk,
            "still_at_risk_after_cooldown",
            expiry,
            CausedBy::Timer(expiry)
        )
    );
}

#[test]
fn a_hard_trigger_alert_names_its_cause_among_the_drivers() {
    // A detractor answer and an urgent ticket on an otherwise busy account:
    // the alert's reason is the trigger, and its drivers say both facts
    // (after the score's top five, when usage moved the score more),
    // largest impact first.
    let mut p = part_with(|c| c.scorecard.bands.healthy_at = 99.0);
    let mut log = Log::new();
    healthy_history(&mut log, "a", 0, 40);
    // Then three weeks of one user logging in: usage factors lead.
    for day in 40..61 {
        let time = timefmt::format(t("2026-01-01T09:00:00Z") + day * 86_400_000);
        log.add("a", "usage.login", &time, r#""user_id":"u0""#);
    }
    let d = |h: i64| timefmt::format(t("2026-01-01T00:00:00Z") + 61 * 86_400_000 + h * 3_600_000);
    log.add("a", "survey.nps", &d(1), r#""score":6"#);
    let urgent = log.add(
        "a",
        "ticket.opened",
        &d(2),
        r#""ticket_id":"t1","priority":"urgent""#,
    );
    let out = fold(&mut p, &log.lines);
    let risk: Vec<_> = alerts(&out)
        .into_iter()
        .filter(|a| a.kind == AlertKind::AtRisk)
        .collect();
    assert_eq!(risk.len(), 1, "{risk:?}");
    assert_eq!(risk[0].reason, "detractor_with_urgent_ticket");
    assert_eq!(risk[0].caused_by, CausedBy::Event(urgent));
    let factors: Vec<_> = risk[0].drivers.iter().map(|d| d.factor).collect();
    assert!(factors.contains(&"nps"), "{factors:?}");
    assert!(factors.contains(&"open_tickets"), "{factors:?}");
    let nps = risk[0].drivers.iter().find(|d| d.factor == "nps").unwrap();
    assert!(nps.detail.starts_with("latest NPS 6; "), "{}", nps.detail);
    let impacts: Vec<f64> = risk[0].drivers.iter().map(|d| d.impact.abs()).collect();
    assert!(impacts.windows(2).all(|w| w[0] >= w[1]), "{impacts:?}");
}
