//! Crash recovery across real processes: `vitals broker` and `vitals run`
//! run as separate processes; `vitals run` is killed with SIGKILL twice
//! while it works through a stream and restarted each time. Afterwards
//! every input record is in `vitals.sequenced` exactly once and every
//! output topic holds exactly what `vitals replay` derives from that log:
//! nothing lost, nothing duplicated.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const P: i32 = 4;
const INPUTS: [&str; 4] = ["usage", "tickets", "payments", "surveys"];

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn vitals() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vitals"))
}

fn start_run(config: &std::path::Path, log: &std::path::Path) -> Proc {
    let err = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Proc(
        vitals()
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawn vitals run"),
    )
}

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sigkill_mid_stream_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = vitals()
        .args(["broker", "--partitions", &P.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn vitals broker");
    let mut line = String::new();
    BufReader::new(broker.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _broker = Proc(broker);
    let addr = line.trim().to_string();

    let config = dir.path().join("vitals.toml");
    let mut f = std::fs::File::create(&config).unwrap();
    writeln!(
        f,
        "[kafka]\nbrokers = \"{addr}\"\ngroup_id = \"crash-test\"\n\
         [kafka.client]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n\
         [sequencer]\ntick_every_ms = 300\nmax_wait_ms = 100\n\
         [snapshot]\ndir = \"{}\"\ninterval_secs = 1\nevery_records = 500\n\
         [http]\nlisten = \"127.0.0.1:0\"",
        dir.path().join("snapshots").display()
    )
    .unwrap();
    let log = dir.path().join("run.log");

    let sim = vitals()
        .args([
            "simulate",
            "--accounts",
            "100",
            "--days",
            "60",
            "--seed",
            "5",
        ])
        .args(["--rate", "5000", "--brokers", &addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn simulate");
    let mut sim = Proc(sim);

    let wm = Watermarks::new(&addr);
    let expected_events = vitals::simulate::generate(&vitals::simulate::SimOptions {
        accounts: 100,
        days: 60,
        seed: 5,
        ..Default::default()
    })
    .len() as i64;
    let mut run = start_run(&config, &log);
    let mut kills = Vec::new();
    for fraction in [0.25, 0.6] {
        // Kill once that much of the stream (published at a steady rate
        // while the service runs) has been sequenced.
        wait_until("progress", 120, || {
            wm.total(&["vitals.sequenced"], P) as f64 >= fraction * expected_events as f64
        });
        run.0.kill().expect("SIGKILL");
        run.0.wait().unwrap();
        kills.push(wm.total(&["vitals.sequenced"], P));
        if fraction > 0.5 {
            // Corrupt partition 0's newest snapshot: it must be detected
            // and an older one (or the log) used instead.
            let d = dir.path().join("snapshots").join("p0");
            let mut files: Vec<_> = std::fs::read_dir(&d)
                .unwrap_or_else(|e| {
                    let t = std::fs::read_to_string(&log).unwrap_or_default();
                    panic!("snapshots of partition 0: {e}\n{t}")
                })
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "snap"))
                .collect();
            files.sort();
            let newest = files.last().expect("a snapshot of partition 0");
            let mut bytes = std::fs::read(newest).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x40;
            std::fs::write(newest, bytes).unwrap();
        }
        run = start_run(&config, &log);
    }
    assert!(sim.0.wait().unwrap().success(), "simulate failed");
    let total = wm.total(&INPUTS, P);
    assert_eq!(total, expected_events);
    assert!(
        kills.iter().all(|&k| k < total),
        "the kills happened mid-stream: {kills:?} of {total}"
    );
    wait_until("everything sequenced", 180, || all_sequenced(&addr, P));
    // Let the fold finish, then stop gracefully (SIGTERM → exit 0).
    std::thread::sleep(Duration::from_secs(1));
    let pid = run.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let exit = run.0.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        exit.success(),
        "vitals run exits 0 on SIGTERM: {exit:?}\n{text}"
    );

    let mut input_records = 0;
    let mut outputs = 0;
    for p in 0..P {
        let seq = read_all(&addr, "vitals.sequenced", p);
        // Every input record of partition p, sequenced exactly once.
        let mut src: Vec<(String, i64)> = seq
            .iter()
            .filter_map(|r| {
                Some((
                    r.header("vitals.source.topic")?,
                    r.header("vitals.source.offset")?.parse().ok()?,
                ))
            })
            .collect();
        let n = src.len();
        src.sort();
        src.dedup();
        assert_eq!(src.len(), n, "a record sequenced twice on partition {p}");
        let expected: i64 = INPUTS
            .iter()
            .map(|t| high_watermark(&addr, t, p))
            .sum::<i64>()
            + high_watermark(&addr, "vitals.repartition", p);
        assert_eq!(
            n as i64, expected,
            "every input record of partition {p} sequenced"
        );
        input_records += n;

        let r = replay(dir.path(), p, &seq);
        let health = read_all(&addr, "vitals.health", p);
        assert_eq!(texts(&health), r.health_log, "vitals.health[{p}]");
        let at_risk = read_all(&addr, "vitals.alerts.at-risk", p);
        assert_eq!(texts(&at_risk), r.at_risk, "vitals.alerts.at-risk[{p}]");
        let upsell = read_all(&addr, "vitals.alerts.upsell", p);
        assert_eq!(texts(&upsell), r.upsell, "vitals.alerts.upsell[{p}]");
        outputs += health.len() + at_risk.len() + upsell.len();
    }
    assert!(input_records > 20_000, "{input_records}");
    assert!(outputs > 300, "{outputs}");
    assert_eq!(
        text.matches("vitals run: subscribed").count(),
        3,
        "three lives:\n{text}"
    );
    assert!(
        text.matches("partition restored").count() > P as usize,
        "{text}"
    );
}
