//! The offline commands as a user runs them: `vitals simulate`,
//! `vitals replay` and `vitals backtest`, as separate processes.

use std::path::Path;
use std::process::Command;

fn vitals() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vitals"))
}

fn run_ok(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().expect("run vitals");
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn simulate(dir: &Path, name: &str, seed: u64) -> (std::path::PathBuf, std::path::PathBuf) {
    let ev = dir.join(format!("{name}.jsonl"));
    let truth = dir.join(format!("{name}.truth.jsonl"));
    run_ok(vitals().args([
        "simulate",
        "--accounts",
        "40",
        "--days",
        "120",
        "--seed",
        &seed.to_string(),
        "--out",
        ev.to_str().unwrap(),
        "--truth",
        truth.to_str().unwrap(),
    ]));
    (ev, truth)
}

#[test]
fn simulate_is_deterministic_sorted_and_spec_conformant() {
    let dir = tempfile::tempdir().unwrap();
    let (a, ta) = simulate(dir.path(), "a", 5);
    let (b, tb) = simulate(dir.path(), "b", 5);
    let (c, _) = simulate(dir.path(), "c", 6);
    let text = std::fs::read_to_string(&a).unwrap();
    assert_eq!(text, std::fs::read_to_string(&b).unwrap());
    assert_eq!(std::fs::read(&ta).unwrap(), std::fs::read(&tb).unwrap());
    assert_ne!(text, std::fs::read_to_string(&c).unwrap());
    let mut last = i64::MIN;
    let mut n = 0;
    for line in text.lines() {
        let ev =
            vitals::codec::json::decode(line.as_bytes()).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(ev.time >= last, "sorted by time");
        last = ev.time;
        n += 1;
    }
    assert!(n > 5000, "{n} events");
    let truth = std::fs::read_to_string(&ta).unwrap();
    assert_eq!(truth.lines().count(), 40);
    let t: serde_json::Value = serde_json::from_str(truth.lines().next().unwrap()).unwrap();
    for k in [
        "account_id",
        "persona",
        "churns_at",
        "expands_at",
        "trouble_from",
    ] {
        assert!(t.get(k).is_some(), "truth has {k}");
    }
}

#[test]
fn replay_writes_outputs_rejects_bad_lines_and_never_aborts() {
    let dir = tempfile::tempdir().unwrap();
    let (ev, _) = simulate(dir.path(), "s", 9);
    // Insert bad lines at known places: line 3 bad JSON, line 6 unknown
    // type, line 10 out of range, and a blank line (skipped, not rejected).
    let mut lines: Vec<String> = std::fs::read_to_string(&ev)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    lines.insert(2, "{not json".into());
    lines.insert(
        5,
        r#"{"id":"x","account_id":"a","type":"foo.bar","time":"2025-01-06T00:00:00Z"}"#.into(),
    );
    lines.insert(9, r#"{"id":"y","account_id":"a","type":"survey.nps","time":"2025-01-06T00:00:00Z","score":11}"#.into());
    lines.insert(12, String::new());
    let input = dir.path().join("in.jsonl");
    let mut bytes = (lines.join("\n") + "\n").into_bytes();
    // Line 14 is not UTF-8 at all.
    let bad_utf8: &[u8] = b"{\"id\":\"\xff\xfe\"}";
    let pos = {
        let mut nl = 0;
        let mut i = 0;
        while nl < 13 {
            if bytes[i] == b'\n' {
                nl += 1;
            }
            i += 1;
        }
        i
    };
    let mut line = bad_utf8.to_vec();
    line.push(b'\n');
    bytes.splice(pos..pos, line);
    std::fs::write(&input, &bytes).unwrap();
    let out = dir.path().join("out");
    let o = run_ok(vitals().args([
        "replay",
        "--input",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("4 invalid"), "{stderr}");

    let rejected = std::fs::read_to_string(out.join("rejected.jsonl")).unwrap();
    let rej: Vec<serde_json::Value> = rejected
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rej.len(), 4);
    assert_eq!(rej[0]["line"], 3);
    assert!(rej[0]["reason"]
        .as_str()
        .unwrap()
        .starts_with("invalid JSON"));
    assert_eq!(rej[0]["record"], "{not json");
    assert_eq!(rej[1]["line"], 6);
    assert_eq!(rej[1]["reason"], "unknown type `foo.bar`");
    assert_eq!(rej[2]["line"], 10);
    assert_eq!(rej[2]["reason"], "survey.nps: score 11 out of range 0..=10");
    assert!(rej[2].get("record_base64").is_none());
    assert_eq!(rej[3]["line"], 14);
    assert!(rej[3]["reason"].as_str().unwrap().contains("UTF-8"));
    use base64::Engine;
    let exact = base64::engine::general_purpose::STANDARD
        .decode(rej[3]["record_base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(exact, bad_utf8, "the exact bytes are kept");

    // health.jsonl: one record per account, sorted by id, equal to the
    // last record of that account in health_log.jsonl.
    let health = std::fs::read_to_string(out.join("health.jsonl")).unwrap();
    let ids: Vec<String> = health
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["account_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(ids, sorted);
    assert_eq!(ids.len(), 40);
    let log = std::fs::read_to_string(out.join("health_log.jsonl")).unwrap();
    let mut last = std::collections::BTreeMap::new();
    for l in log.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        last.insert(v["account_id"].as_str().unwrap().to_string(), l.to_string());
    }
    let compacted: Vec<String> = last.into_values().collect();
    assert_eq!(health.lines().collect::<Vec<_>>(), compacted);

    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["invalid"], 4);
    assert!(out.join("alerts.jsonl").exists());

    // Replaying again gives byte-identical outputs.
    let out2 = dir.path().join("out2");
    run_ok(vitals().args([
        "replay",
        "--input",
        input.to_str().unwrap(),
        "--out",
        out2.to_str().unwrap(),
        "--quiet",
    ]));
    for f in [
        "health.jsonl",
        "health_log.jsonl",
        "alerts.jsonl",
        "rejected.jsonl",
    ] {
        assert_eq!(
            std::fs::read(out.join(f)).unwrap(),
            std::fs::read(out2.join(f)).unwrap(),
            "{f}"
        );
    }
}

#[test]
fn replay_what_if_config_and_bad_config() {
    let dir = tempfile::tempdir().unwrap();
    let (ev, _) = simulate(dir.path(), "s", 11);
    let strict = dir.path().join("strict.toml");
    std::fs::write(
        &strict,
        "[model]\nversion = \"strict\"\n[model.scorecard.bands]\nat_risk_below = 75.0\nhealthy_at = 90.0\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    run_ok(vitals().args([
        "replay",
        "--input",
        ev.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--config",
        strict.to_str().unwrap(),
        "--quiet",
    ]));
    let h = std::fs::read_to_string(out.join("health.jsonl")).unwrap();
    assert!(
        h.contains(r#""scorecard":"strict+"#),
        "outputs name the scorecard"
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[model.alerts]\ncooldown = 3\n").unwrap();
    let o = vitals()
        .args([
            "replay",
            "--input",
            ev.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--config",
            bad.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("cooldown"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one-line reason: {err}");
}

#[test]
fn backtest_reports_auc_and_alert_quality() {
    let dir = tempfile::tempdir().unwrap();
    let (ev, _) = simulate(dir.path(), "s", 13);
    let o = run_ok(vitals().args([
        "backtest",
        "--input",
        ev.to_str().unwrap(),
        "--at-day",
        "60,90",
        "--horizon-days",
        "30",
        "--json",
    ]));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["evaluations"].as_array().unwrap().len(), 2);
    assert_eq!(r["horizon_days"], 30);
}

#[test]
fn impossible_arguments_fail_with_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    for args in [
        &["simulate", "--days", "0"][..],
        &["simulate", "--accounts", "0"],
        &["demo", "--days", "0"],
    ] {
        let out = vitals().args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("invalid value '0'"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    // A missing input: named once, and no output directory left behind.
    let out_dir = tmp.path().join("out");
    let out = vitals()
        .args(["replay", "--input"])
        .arg(tmp.path().join("missing.jsonl"))
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("missing.jsonl: No such file"), "{err}");
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
    assert!(!out_dir.exists());
}
