//! Portfolio analytics and intervention impact on hand-built event logs,
//! with exact expected values. The arithmetic is written next to each
//! assertion; the formulas are in docs/MODEL.md ("Portfolio analytics",
//! "Intervention impact").

use std::sync::Arc;

use serde_json::{json, Value};
use vitals::codec::{json as codec_json, state, timefmt};
use vitals::core::time::MS_PER_DAY;
use vitals::core::{Band, Model, ModelConfig, Partition, Portfolio};

fn t(s: &str) -> i64 {
    timefmt::parse(s).expect("test timestamp")
}

/// A JSONL log under construction: events sorted by time at the end
/// (stable), as the sequencer delivers several accounts' events.
#[derive(Default)]
struct Log {
    n: u32,
    events: Vec<(i64, String)>,
}

impl Log {
    fn ev(&mut self, time: i64, account: &str, ty: &str, extra: &str) {
        self.n += 1;
        let line = format!(
            r#"{{"id":"e{}","account_id":"{account}","type":"{ty}","time":"{}"{extra}}}"#,
            self.n,
            timefmt::format(time)
        );
        self.events.push((time, line));
    }

    fn at(&mut self, time: &str, account: &str, ty: &str, extra: &str) {
        self.ev(t(time), account, ty, extra);
    }

    fn lines(&self) -> Vec<String> {
        let mut e = self.events.clone();
        e.sort_by_key(|x| x.0);
        e.into_iter().map(|x| x.1).collect()
    }
}

fn model() -> Arc<Model> {
    Arc::new(Model::new(ModelConfig::default()))
}

fn fold(p: &mut Partition, lines: &[String]) {
    let mut out = Vec::new();
    for l in lines {
        let ev = codec_json::decode(l.as_bytes()).unwrap_or_else(|e| panic!("{l}: {e}"));
        p.apply(&ev, &mut out);
        out.clear();
    }
}

/// Six accounts over January–April 2025 (see the expected values below).
fn portfolio_log() -> Log {
    let mut l = Log::default();
    let sub = |mrr: u64| format!(r#","plan":"team","mrr_cents":{mrr},"seats":5"#);
    let seg = |s: &str| format!(r#","segment":"{s}""#);
    // January: five new accounts, 200,000 cents of MRR.
    l.at("2025-01-02T00:10:00Z", "a1", "account.updated", &seg("smb"));
    l.at(
        "2025-01-02T00:20:00Z",
        "a1",
        "subscription.started",
        &sub(10_000),
    );
    l.at(
        "2025-01-02T01:00:00Z",
        "a5",
        "subscription.started",
        &sub(20_000),
    );
    l.at("2025-01-02T13:00:00Z", "a5", "survey.nps", r#","score":10"#);
    l.at("2025-01-03T00:10:00Z", "a2", "account.updated", &seg("smb"));
    l.at(
        "2025-01-03T00:20:00Z",
        "a2",
        "subscription.started",
        &sub(20_000),
    );
    l.at(
        "2025-01-04T00:10:00Z",
        "a3",
        "account.updated",
        &seg("enterprise"),
    );
    l.at(
        "2025-01-04T00:20:00Z",
        "a3",
        "subscription.started",
        &sub(100_000),
    );
    l.at(
        "2025-01-05T00:10:00Z",
        "a4",
        "account.updated",
        &seg("enterprise"),
    );
    l.at(
        "2025-01-05T00:20:00Z",
        "a4",
        "subscription.started",
        &sub(50_000),
    );
    // February.
    l.at("2025-02-01T12:00:00Z", "a1", "survey.nps", r#","score":10"#);
    l.at("2025-02-03T12:00:00Z", "a4", "survey.nps", r#","score":10"#);
    l.at(
        "2025-02-10T12:00:00Z",
        "a1",
        "subscription.changed",
        &sub(15_000),
    );
    l.at(
        "2025-02-12T12:00:00Z",
        "a3",
        "subscription.changed",
        &sub(80_000),
    );
    l.at("2025-02-15T10:00:00Z", "a6", "account.updated", &seg("smb"));
    l.at(
        "2025-02-15T11:00:00Z",
        "a6",
        "subscription.started",
        &sub(30_000),
    );
    l.at("2025-02-20T12:00:00Z", "a2", "subscription.cancelled", "");
    l.at(
        "2025-02-25T12:00:00Z",
        "a6",
        "subscription.changed",
        &sub(35_000),
    );
    // March.
    l.at("2025-03-01T12:00:00Z", "a1", "survey.csat", r#","score":4"#);
    l.at("2025-03-05T12:00:00Z", "a4", "subscription.cancelled", "");
    l.at("2025-03-06T12:00:00Z", "a4", "survey.csat", r#","score":1"#);
    l.at(
        "2025-03-10T12:00:00Z",
        "a2",
        "subscription.started",
        &sub(10_000),
    );
    l.at(
        "2025-03-20T12:00:00Z",
        "a5",
        "subscription.renewed",
        r#","mrr_cents":25000"#,
    );
    // April (the current, incomplete month).
    l.at("2025-04-01T12:00:00Z", "a1", "survey.csat", r#","score":5"#);
    l.at("2025-04-02T12:00:00Z", "a3", "survey.csat", r#","score":2"#);
    l.at("2025-04-03T12:00:00Z", "a2", "survey.ces", r#","score":6"#);
    l.at("2025-04-03T12:00:00Z", "a6", "survey.ces", r#","score":3"#);
    l.at("2025-04-04T12:00:00Z", "a5", "survey.ces", r#","score":7"#);
    l.at("2025-04-05T12:00:00Z", "a1", "survey.nps", r#","score":9"#);
    l.at("2025-04-05T12:00:00Z", "a2", "survey.nps", r#","score":3"#);
    l.at("2025-04-06T12:00:00Z", "a3", "survey.nps", r#","score":8"#);
    l.at("2025-04-07T12:00:00Z", "a6", "survey.nps", r#","score":6"#);
    // Daily use by three users of a1, a3 and a6; a2 and a5 never use the
    // product (silent: at risk).
    let last = t("2025-04-10T12:00:00Z");
    for (acc, from) in [
        ("a1", "2025-01-02"),
        ("a3", "2025-01-04"),
        ("a6", "2025-02-15"),
    ] {
        let mut day = t(&format!("{from}T09:00:00Z"));
        while day < last {
            for u in 0..3 {
                l.ev(
                    day + u * 60_000,
                    acc,
                    "usage.login",
                    &format!(r#","user_id":"u{u}""#),
                );
            }
            day += MS_PER_DAY;
        }
    }
    l.ev(last, "a1", "usage.login", r#","user_id":"u0""#);
    l
}

/// The bands of the accounts not cancelled, counted directly from the
/// account states: (healthy, neutral, at_risk).
fn bands_of(p: &Partition, segment: Option<&str>) -> [u64; 3] {
    let mut b = [0u64; 3];
    for a in &p.accounts {
        if a.is_cancelled() || p.label(a.segment) != segment && segment != Some("*") {
            continue;
        }
        let i = match a.alert.band {
            Band::Healthy => 0,
            Band::Neutral => 1,
            Band::AtRisk => 2,
        };
        b[i] += 1;
    }
    b
}

fn month(
    m: &str,
    start: (u64, u64),
    new: (u64, u64),
    churn: (u64, u64),
    exp: u64,
    con: u64,
    rates: [Value; 4],
) -> Value {
    let [logo, mrr, grr, nrr] = rates;
    json!({
        "month": m,
        "start_accounts": start.0, "start_mrr_cents": start.1,
        "new_accounts": new.0, "new_mrr_cents": new.1,
        "churned_accounts": churn.0, "churned_mrr_cents": churn.1,
        "expansion_mrr_cents": exp, "contraction_mrr_cents": con,
        "logo_churn_rate": logo, "mrr_churn_rate": mrr, "grr": grr, "nrr": nrr,
    })
}

#[test]
fn portfolio_exact_values_in_replay_output() {
    let log = portfolio_log();
    let lines = log.lines();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let out = dir.path().join("out");
    vitals::replay::replay(&vitals::replay::Options {
        input,
        out: out.clone(),
        model: ModelConfig::default(),
        progress: false,
    })
    .unwrap();
    let text = std::fs::read_to_string(out.join("portfolio.json")).unwrap();
    let got: Value = serde_json::from_str(&text).unwrap();

    // The same fold in memory: the report equals the file.
    let mut p = Partition::new(model());
    fold(&mut p, &lines);
    assert_eq!(serde_json::to_value(p.portfolio_report()).unwrap(), got);

    assert_eq!(got["month"], "2025-04");
    let all = &got["overall"];
    // Not cancelled: a1 a2 a3 a5 a6 (a4 cancelled in March; a2 came back).
    assert_eq!(all["accounts"], 5);
    assert_eq!(all["active_accounts"], 5);
    // 15,000 + 10,000 + 80,000 + 25,000 + 35,000.
    assert_eq!(all["mrr_cents"], 165_000);
    assert_eq!(all["arpa_cents"], 33_000.0);

    // NPS over each account's latest answer within 90 days: a1 9
    // (promoter), a2 3 and a6 6 (detractors), a3 8 (passive); a4 is
    // cancelled and a5's answer (2 January) is older than 90 days.
    // (1 − 2) / 4 = −25%.
    assert_eq!(
        all["nps"],
        json!({"score": -25.0, "responses": 4, "promoters": 1, "passives": 1, "detractors": 2})
    );
    // CSAT: a1's latest 5, a3's 2 (a4 cancelled) → 3.5. CES: 6, 3, 7 → 5.33.
    assert_eq!(all["csat"], json!({"mean": 3.5, "responses": 2}));
    assert_eq!(all["ces"], json!({"mean": 5.33, "responses": 3}));

    // Months. February: cohort a1..a5 (200,000); a1 +5,000, a3 −20,000,
    // a2 churns (20,000); a6 is new. Logo churn 1/5, MRR churn
    // 20,000/200,000, GRR (200,000 − 20,000 − 20,000)/200,000,
    // NRR (200,000 + 5,000 − 40,000)/200,000.
    // March: cohort a1 15,000 a3 80,000 a4 50,000 a5 20,000 a6 35,000 =
    // 200,000; a4 churns (50,000), a5 +5,000, a2 reactivates (new).
    // April: cohort a1 a2 a3 a5 a6 = 165,000, nothing happens yet.
    let null = Value::Null;
    assert_eq!(
        all["months"],
        json!([
            month(
                "2025-01",
                (0, 0),
                (5, 200_000),
                (0, 0),
                0,
                0,
                [null.clone(), null.clone(), null.clone(), null.clone()]
            ),
            month(
                "2025-02",
                (5, 200_000),
                (1, 30_000),
                (1, 20_000),
                5_000,
                20_000,
                [json!(0.2), json!(0.1), json!(0.8), json!(0.825)]
            ),
            month(
                "2025-03",
                (5, 200_000),
                (1, 10_000),
                (1, 50_000),
                5_000,
                0,
                [json!(0.2), json!(0.25), json!(0.75), json!(0.775)]
            ),
            month(
                "2025-04",
                (5, 165_000),
                (0, 0),
                (0, 0),
                0,
                0,
                [json!(0.0), json!(0.0), json!(1.0), json!(1.0)]
            ),
        ])
    );
    // CLV: complete months January–March with a cohort: February (1 of 5)
    // and March (1 of 5) → 2/10 = 0.2 a month; ARPA 33,000 / 0.2.
    assert_eq!(
        all["clv"],
        json!({"monthly_churn_rate": 0.2, "churn_months": ["2025-02", "2025-03"], "clv_cents": 165_000.0})
    );

    // Segments: no segment (a5), enterprise (a3, a4), smb (a1, a2, a6).
    let segs = got["segments"].as_array().unwrap();
    let names: Vec<&Value> = segs.iter().map(|s| &s["segment"]).collect();
    assert_eq!(names, [&Value::Null, &json!("enterprise"), &json!("smb")]);
    let (none, ent, smb) = (&segs[0], &segs[1], &segs[2]);

    // smb: February cohort a1 10,000 + a2 20,000; a1 +5,000, a2 churns:
    // logo 1/2, MRR churn 20,000/30,000, GRR 10,000/30,000,
    // NRR 15,000/30,000. March cohort a1 15,000 + a6 35,000.
    assert_eq!(
        smb["months"],
        json!([
            month(
                "2025-01",
                (0, 0),
                (2, 30_000),
                (0, 0),
                0,
                0,
                [null.clone(), null.clone(), null.clone(), null.clone()]
            ),
            month(
                "2025-02",
                (2, 30_000),
                (1, 30_000),
                (1, 20_000),
                5_000,
                0,
                [json!(0.5), json!(0.6667), json!(0.3333), json!(0.5)]
            ),
            month(
                "2025-03",
                (2, 50_000),
                (1, 10_000),
                (0, 0),
                0,
                0,
                [json!(0.0), json!(0.0), json!(1.0), json!(1.0)]
            ),
            month(
                "2025-04",
                (3, 60_000),
                (0, 0),
                (0, 0),
                0,
                0,
                [json!(0.0), json!(0.0), json!(1.0), json!(1.0)]
            ),
        ])
    );
    // smb NPS: a1 promoter, a2 and a6 detractors → (1 − 2)/3 = −33.3%.
    assert_eq!(smb["nps"]["score"], -33.3);
    assert_eq!(smb["csat"], json!({"mean": 5.0, "responses": 1}));
    assert_eq!(smb["ces"], json!({"mean": 4.5, "responses": 2}));
    // smb CLV: (1 + 0)/(2 + 2) = 0.25 a month; ARPA 60,000/3 = 20,000.
    assert_eq!(smb["arpa_cents"], 20_000.0);
    assert_eq!(smb["clv"]["monthly_churn_rate"], 0.25);
    assert_eq!(smb["clv"]["clv_cents"], 80_000.0);

    // enterprise: February cohort 150,000, a3 −20,000: GRR = NRR =
    // 130,000/150,000. March cohort 130,000, a4 churns with 50,000:
    // logo 1/2, MRR churn and 1 − GRR = 50,000/130,000.
    assert_eq!(ent["months"][1]["grr"], 0.8667);
    assert_eq!(ent["months"][1]["nrr"], 0.8667);
    assert_eq!(ent["months"][2]["logo_churn_rate"], 0.5);
    assert_eq!(ent["months"][2]["mrr_churn_rate"], 0.3846);
    assert_eq!(ent["months"][2]["grr"], 0.6154);
    assert_eq!(ent["accounts"], 1);
    assert_eq!(ent["nps"]["score"], 0.0);
    // CLV: (0 + 1)/(2 + 2) = 0.25; ARPA 80,000 → 320,000.
    assert_eq!(ent["clv"]["clv_cents"], 320_000.0);

    // No segment (a5): March expansion 5,000 on 20,000 → NRR 1.25; it
    // never churned, so CLV is undefined.
    assert_eq!(none["months"][2]["nrr"], 1.25);
    assert_eq!(none["months"][2]["grr"], 1.0);
    assert_eq!(none["nps"]["responses"], 0);
    assert_eq!(none["nps"]["score"], Value::Null);
    assert_eq!(none["clv"]["monthly_churn_rate"], 0.0);
    assert_eq!(none["clv"]["clv_cents"], Value::Null);

    // Bands: a1, a3 and a6 use the product daily (healthy); a2 and a5
    // never do (silent ≥ 14 days: at risk). Counted from the accounts
    // independently, too.
    assert_eq!(
        all["bands"],
        json!({"healthy": 3, "neutral": 0, "at_risk": 2})
    );
    let b = bands_of(&p, Some("*"));
    assert_eq!(
        all["bands"],
        json!({"healthy": b[0], "neutral": b[1], "at_risk": b[2]})
    );
    let b = bands_of(&p, Some("smb"));
    assert_eq!(
        smb["bands"],
        json!({"healthy": b[0], "neutral": b[1], "at_risk": b[2]})
    );
    assert_eq!(
        smb["bands"],
        json!({"healthy": 2, "neutral": 0, "at_risk": 1})
    );
}

#[test]
fn portfolio_survives_snapshots_and_merges_across_partitions() {
    let lines = portfolio_log().lines();
    let m = model();
    let mut whole = Partition::new(Arc::clone(&m));
    fold(&mut whole, &lines);

    // Snapshot mid-March, restore, fold on: the same report.
    let cut = lines.iter().position(|l| l.contains("2025-03-15")).unwrap();
    let mut live = Partition::new(Arc::clone(&m));
    fold(&mut live, &lines[..cut]);
    let mut restored = state::decode(&state::encode(&live), Arc::clone(&m)).unwrap();
    assert!(restored == live);
    fold(&mut restored, &lines[cut..]);
    assert_eq!(restored.portfolio_report(), whole.portfolio_report());

    // Two partitions (a1 a3 a5 | a2 a4 a6) moved to the same final time
    // merge into the single partition's portfolio.
    let (odd, even): (Vec<String>, Vec<String>) = lines
        .iter()
        .cloned()
        .partition(|l| ["\"a1\"", "\"a3\"", "\"a5\""].iter().any(|a| l.contains(a)));
    let last = t("2025-04-10T12:00:00Z");
    let mut parts = Vec::new();
    for half in [&odd, &even] {
        let mut p = Partition::new(Arc::clone(&m));
        fold(&mut p, half);
        p.advance(last, &mut Vec::new());
        parts.push(p);
    }
    let mut merged = Portfolio::default();
    for p in &parts {
        merged.merge(&p.portfolio);
    }
    assert_eq!(merged.report(), whole.portfolio_report());
    // Merging in the other order gives the same.
    let mut merged2 = Portfolio::default();
    for p in parts.iter().rev() {
        merged2.merge(&p.portfolio);
    }
    assert_eq!(merged2.report(), merged.report());
}

// ---------------------------------------------------------------------------
// Intervention impact.

/// 60 accounts of one segment. All use the product fully for 35 days, then
/// decline to one user every other day. On day 60, accounts `i % 3 == 0`
/// get a `training` and recover full use; accounts `i % 3 == 1` get a
/// `chatbot` conversation and carry on declining, like the untouched
/// `i % 3 == 2`. From day 100 a quarter of the accounts that did not get
/// training cancel (`i % 4 == 0`), in both other groups alike.
fn intervention_log() -> Log {
    let mut l = Log::default();
    let day0 = t("2025-01-01T00:00:00Z");
    let n = 60;
    let days = 160;
    for i in 0..n {
        let acc = format!("c{i:02}");
        let users = 4 + (i / 3) % 3;
        l.ev(
            day0 + i as i64 * 1000,
            &acc,
            "account.updated",
            r#","segment":"smb""#,
        );
        l.ev(
            day0 + i as i64 * 1000 + 1,
            &acc,
            "subscription.started",
            &format!(r#","plan":"team","mrr_cents":10000,"seats":{users}"#),
        );
        let group = i % 3;
        let cancels = group != 0 && i % 4 == 0;
        for d in 0..days {
            let at = day0 + d as i64 * MS_PER_DAY + 8 * 3_600_000 + i as i64 * 1000;
            if cancels && d == 100 {
                l.ev(at, &acc, "subscription.cancelled", "");
            }
            if cancels && d >= 100 {
                continue;
            }
            if d == 60 && group != 2 {
                let kind = if group == 0 { "training" } else { "chatbot" };
                l.ev(
                    at + 3_600_000,
                    &acc,
                    "cs.touchpoint",
                    &format!(r#","kind":"{kind}""#),
                );
            }
            let full = d < 35 || (group == 0 && d > 60);
            let active_users = if full {
                users
            } else if d % 2 == 0 {
                1
            } else {
                0
            };
            for u in 0..active_users {
                l.ev(
                    at + u as i64 * 60_000,
                    &acc,
                    "usage.feature",
                    &format!(
                        r#","user_id":"u{u}","feature":"f{}","count":3"#,
                        (d + u) % 5
                    ),
                );
            }
        }
    }
    l
}

#[test]
fn interventions_find_the_training_effect_and_not_the_chatbot() {
    let lines = intervention_log().lines();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let out = dir.path().join("out");
    vitals::replay::replay(&vitals::replay::Options {
        input,
        out: out.clone(),
        model: ModelConfig::default(),
        progress: false,
    })
    .unwrap();
    let text = std::fs::read_to_string(out.join("interventions.json")).unwrap();
    let got: Value = serde_json::from_str(&text).unwrap();
    eprintln!("{text}");

    let mut p = Partition::new(model());
    fold(&mut p, &lines);
    assert_eq!(serde_json::to_value(p.interventions_report()).unwrap(), got);

    let kinds = got["kinds"].as_array().unwrap();
    assert_eq!(kinds.len(), 2);
    let (chatbot, training) = (&kinds[0], &kinds[1]);
    assert_eq!(chatbot["kind"], "chatbot");
    assert_eq!(training["kind"], "training");
    for k in [chatbot, training] {
        assert_eq!(k["touchpoints"], 20);
        assert_eq!(k["matched"], 20, "{k}");
        for h in k["horizons"].as_array().unwrap() {
            assert_eq!(h["treated_n"], 20, "{h}");
            assert!(h["control_n"].as_u64().unwrap() >= 20, "{h}");
        }
    }
    assert_eq!(got["open_observations"], 0);
    assert_eq!(got["dropped_observations"], 0);

    let f = |v: &Value| v.as_f64().unwrap();
    // Training: usage recovers, so the score rises against the controls
    // within 30 days, and nobody who got it cancels.
    let t30 = &training["horizons"][0];
    let t90 = &training["horizons"][1];
    assert_eq!(t30["days"], 30);
    assert!(f(&t30["score_effect"]) > 10.0, "{t30}");
    assert!(f(&t90["score_effect"]) > 5.0, "{t90}");
    assert_eq!(t90["treated_churn_rate"], 0.0);
    assert!(f(&t90["churn_effect"]) < -0.1, "{t90}");
    // Chatbot: the accounts behave like their controls.
    for h in chatbot["horizons"].as_array().unwrap() {
        assert!(f(&h["score_effect"]).abs() < 3.0, "{h}");
        assert!(f(&h["churn_effect"]).abs() <= 0.15, "{h}");
    }

    // Snapshot and restore keep the open observations: folding the second
    // half from a snapshot gives the same report.
    let m = model();
    // Mid-March: between the touchpoints and their 30-day horizon.
    let cut = lines.iter().position(|l| l.contains("2025-03-15")).unwrap();
    let mut live = Partition::new(Arc::clone(&m));
    fold(&mut live, &lines[..cut]);
    let mut restored = state::decode(&state::encode(&live), Arc::clone(&m)).unwrap();
    assert!(restored == live);
    fold(&mut restored, &lines[cut..]);
    assert_eq!(restored.interventions_report(), p.interventions_report());
}

#[test]
fn simulated_partitions_merge_into_the_single_partition_portfolio() {
    use vitals::simulate::{generate, SimOptions};
    let evs = generate(&SimOptions {
        accounts: 60,
        days: 150,
        seed: 7,
        ..Default::default()
    });
    let last = evs.iter().map(|e| e.time).max().unwrap();
    let m = model();
    let mut whole = Partition::new(Arc::clone(&m));
    let mut parts: Vec<Partition> = (0..3).map(|_| Partition::new(Arc::clone(&m))).collect();
    let mut out = Vec::new();
    for e in &evs {
        whole.apply(e, &mut out);
        let k = e.account_id.bytes().map(|b| b as usize).sum::<usize>() % 3;
        parts[k].apply(e, &mut out);
        out.clear();
    }
    let mut merged = Portfolio::default();
    for p in &mut parts {
        p.advance(last, &mut out);
        merged.merge(&p.portfolio);
    }
    let report = whole.portfolio_report();
    assert!(report.overall.months.len() >= 5);
    assert!(report.overall.active_accounts > 0);
    assert_eq!(merged.report(), report);
}

/// The same known log through the read side: `/metrics` carries the exact
/// portfolio values, merged over partitions, with no account label.
#[test]
fn portfolio_exact_values_in_metrics_text() {
    let lines = portfolio_log().lines();
    // Two partitions: accounts split by parity of their line's account id
    // hash would be arbitrary; split the log by account instead.
    let mut parts = [Partition::new(model()), Partition::new(model())];
    let mut accounts: Vec<String> = Vec::new();
    for l in &lines {
        let v: Value = serde_json::from_str(l).unwrap();
        let a = v["account_id"].as_str().unwrap().to_string();
        if !accounts.contains(&a) {
            accounts.push(a.clone());
        }
        let i = accounts.iter().position(|x| *x == a).unwrap() % 2;
        fold(&mut parts[i], std::slice::from_ref(l));
    }
    let mut one = Partition::new(model());
    fold(&mut one, &lines);
    let expected = serde_json::to_value(one.portfolio_report()).unwrap();

    let read = vitals::readside::ReadSide::new();
    read.set_analytics(0, &parts[0]);
    read.set_analytics(1, &parts[1]);
    // Merged over the partitions = the single fold.
    assert_eq!(
        serde_json::to_value(read.portfolio_report().unwrap()).unwrap(),
        expected
    );
    let text = vitals::readside::render_metrics(&vitals::readside::install_recorder(), &read);
    let metric = |name: &str, seg: &str| -> Option<f64> {
        let prefix = format!("{name}{{segment=\"{seg}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(|v| v.parse().unwrap())
    };
    assert_eq!(metric("vitals_portfolio_nps", "smb"), Some(-33.3));
    assert_eq!(metric("vitals_portfolio_clv_cents", "smb"), Some(80_000.0));
    assert_eq!(
        metric("vitals_portfolio_mrr_cents", "__all__"),
        Some(165_000.0)
    );
    assert_eq!(
        metric("vitals_portfolio_active_accounts", "__all__"),
        Some(5.0)
    );
    assert_eq!(metric("vitals_portfolio_csat", "__all__"), Some(3.5));
    assert_eq!(metric("vitals_portfolio_ces", "__all__"), Some(5.33));
    // Rates of the latest month, as in portfolio.json.
    let last = |seg: &Value, k: &str| -> Option<f64> {
        seg["months"]
            .as_array()
            .and_then(|m| m.last())
            .and_then(|m| m[k].as_f64())
    };
    let all = &expected["overall"];
    assert_eq!(metric("vitals_portfolio_nrr", "__all__"), last(all, "nrr"));
    assert_eq!(metric("vitals_portfolio_grr", "__all__"), last(all, "grr"));
    assert_eq!(
        metric("vitals_portfolio_gross_churn_rate", "__all__"),
        last(all, "logo_churn_rate")
    );
    assert!(last(all, "nrr").is_some());
    assert!(!text.contains("account_id="), "no account label");
}

#[test]
fn alert_precision_from_feedback_in_metrics_text() {
    let lines: Vec<String> = [
        ("f1", "at_risk-00000000000000a1", "useful"),
        ("f2", "at_risk-00000000000000a2", "false_positive"),
        ("f3", "at_risk-00000000000000a3", "already_known"),
        ("f4", "at_risk-00000000000000a4", "false_positive"),
        ("f5", "upsell_opportunity-00000000000000b1", "useful"),
    ]
    .iter()
    .map(|(id, alert, verdict)| {
        format!(
            r#"{{"id":"{id}","account_id":"acme","type":"alert.feedback","time":"2025-03-01T00:00:00Z","alert_id":"{alert}","verdict":"{verdict}"}}"#
        )
    })
    .collect();
    let mut p = Partition::new(model());
    fold(&mut p, &lines);
    let read = vitals::readside::ReadSide::new();
    read.set_analytics(0, &p);
    let text = vitals::readside::render_metrics(&vitals::readside::install_recorder(), &read);
    assert!(
        text.contains("vitals_alert_precision{kind=\"at_risk\"} 0.5\n"),
        "{text}"
    );
    assert!(
        text.contains("vitals_alert_feedback{kind=\"at_risk\"} 4\n"),
        "{text}"
    );
    assert!(
        text.contains("vitals_alert_precision{kind=\"upsell_opportunity\"} 1\n"),
        "{text}"
    );
    assert!(
        !text.contains("vitals_alert_precision{kind=\"recovered\"}"),
        "{text}"
    );
}
