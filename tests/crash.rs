//! Crash recovery across real processes: `vitals broker` and `vitals run`
//! run as separate processes; `vitals run` is killed with SIGKILL twice
//! while it works through a stream and restarted each time. Afterwards
//! every input record is in `vitals.sequenced` exactly once and every
//! output topic holds exactly what `vitals replay` derives from that log:
//! nothing lost, nothing duplicated.

mod common;

use std::process::{Command, Stdio};

use common::*;

const P: i32 = 4;
const INPUTS: [&str; 4] = ["usage", "tickets", "payments", "surveys"];

#[test]
fn sigkill_mid_stream_loses_and_duplicates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    eprintln!("test directory: {}", root.display());
    if std::env::var_os("VITALS_KEEP_TEST_DIR").is_some() {
        std::mem::forget(tmp); // keep the logs and snapshots for a look
    }
    let (_broker, addr) = start_broker(P);
    let config = write_config(root.as_path(), &addr, "crash-test");
    let log = root.as_path().join("run.log");

    // The first life joins the group (the mock holds a new group's first
    // join for 3 s) before the stream starts, so the first kill is
    // mid-stream however slow the machine.
    let mut run = start_run(&config, &log);
    wait_until("the first life to restore", 120, || {
        life_has_restored(&log, 0)
    });
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
        .args(["--rate", "4000", "--brokers", &addr])
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
    let mut kills = Vec::new();
    let mut last_start = 0;
    let mut corrupted = false;
    let mut snapshots_at_last_start = 0;
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
            // Corrupt the newest snapshot of a partition: it must be
            // detected and an older one (or the log) used instead.
            let mut files: Vec<_> = (0..P)
                .filter_map(|p| {
                    std::fs::read_dir(root.join("snapshots").join(format!("p{p}"))).ok()
                })
                .flat_map(|d| d.map(|e| e.unwrap().path()))
                .filter(|p| p.extension().is_some_and(|x| x == "snap"))
                .collect();
            files.sort_by_key(|p| p.file_name().map(|n| n.to_os_string()));
            if let Some(newest) = files.last() {
                let mut bytes = std::fs::read(newest).unwrap();
                let mid = bytes.len() / 2;
                bytes[mid] ^= 0x40;
                std::fs::write(newest, bytes).unwrap();
                corrupted = true;
            }
        }
        snapshots_at_last_start = count_snapshots(&root.join("snapshots"));
        last_start = log_len(&log);
        run = start_run(&config, &log);
    }
    assert!(sim.0.wait().unwrap().success(), "simulate failed");
    let total = wm.total(&INPUTS, P);
    assert_eq!(total, expected_events);
    // The first kill is early in the stream; the second may land after
    // its end on a loaded machine (then it tests a crash while idle).
    assert!(
        kills[0] < total,
        "a kill happened mid-stream: {kills:?} of {total}"
    );
    wait_until("everything sequenced", 180, || all_sequenced(&addr, P));
    // The last life has restored every partition (it may join after the
    // stream ended: the mock makes a rejoining member wait out the killed
    // one's session). Only its own lines count: the earlier lives'
    // "partition restored" must not satisfy this before it has even
    // joined. Then stop gracefully (SIGTERM → the partitions drain and
    // the process exits 0).
    wait_until("the last life to restore", 120, || {
        life_has_restored(&log, last_start)
    });
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

    let (input_records, outputs) = assert_exactly_once(&addr, P, root.as_path());
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
    // With an intact snapshot on disk, the restart loaded it and replayed
    // only the log's tail. (The corrupted file may have been the only one:
    // a loaded machine can reach the second kill before any other
    // partition wrote a snapshot; then every partition replays its log.)
    if snapshots_at_last_start > usize::from(corrupted) {
        assert!(text.contains("restored from snapshot"), "{text}");
    }
    if corrupted {
        assert!(
            text.contains("checksum mismatch"),
            "the corrupt snapshot was detected:\n{text}"
        );
    }
}

fn log_len(log: &std::path::Path) -> usize {
    std::fs::metadata(log).map_or(0, |m| m.len() as usize)
}

/// The life whose log starts at byte `from` has subscribed and restored
/// every partition.
fn life_has_restored(log: &std::path::Path, from: usize) -> bool {
    let t = std::fs::read(log).unwrap_or_default();
    let t = String::from_utf8_lossy(t.get(from..).unwrap_or_default());
    t.contains("vitals run: subscribed") && t.matches("partition restored").count() >= P as usize
}

fn count_snapshots(dir: &std::path::Path) -> usize {
    (0..P)
        .filter_map(|p| std::fs::read_dir(dir.join(format!("p{p}"))).ok())
        .flat_map(|d| d.filter_map(|e| e.ok()))
        .filter(|e| e.path().extension().is_some_and(|x| x == "snap"))
        .count()
}
