//! Scale-out across processes: two `vitals run` instances in one consumer
//! group share the partitions; one is SIGKILLed mid-stream and the
//! survivor takes its partitions over; a third joins mid-stream and the
//! group rebalances. Afterwards the outputs are exactly what a single
//! instance gives — the replay of `vitals.sequenced` — record for record.

mod common;

use std::process::{Command, Stdio};

use common::*;

const P: i32 = 6;

#[test]
fn instances_share_fail_over_and_rebalance_with_the_same_result() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, addr) = start_broker(P);
    let config = write_config(dir.path(), &addr, "scale-test");
    let logs: Vec<_> = (0..3)
        .map(|i| dir.path().join(format!("run-{i}.log")))
        .collect();
    let text = |i: usize| std::fs::read_to_string(&logs[i]).unwrap_or_default();

    let mut a = start_run(&config, &logs[0]);
    let b = start_run(&config, &logs[1]);
    // Both own partitions before the stream starts.
    wait_until("both instances assigned", 60, || {
        text(0).contains("partition restored") && text(1).contains("partition restored")
    });
    let expected_events = vitals::simulate::generate(&vitals::simulate::SimOptions {
        accounts: 100,
        days: 60,
        seed: 9,
        ..Default::default()
    })
    .len() as i64;
    let mut sim = Proc(
        vitals()
            .args([
                "simulate",
                "--accounts",
                "100",
                "--days",
                "60",
                "--seed",
                "9",
            ])
            .args(["--rate", "3000", "--brokers", &addr])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn simulate"),
    );
    let wm = Watermarks::new(&addr);
    wait_until("a third of the stream", 120, || {
        wm.total(&["vitals.sequenced"], P) as f64 >= 0.3 * expected_events as f64
    });
    a.0.kill().expect("SIGKILL");
    a.0.wait().unwrap();
    // The survivor takes over every partition (after the session timeout).
    wait_until("the survivor to own everything", 60, || {
        text(1).matches("partition restored").count() > P as usize
    });
    let c = start_run(&config, &logs[2]);
    wait_until("the third instance to join", 60, || {
        text(2).contains("partition restored")
    });
    assert!(sim.0.wait().unwrap().success(), "simulate failed");
    assert_eq!(
        wm.total(&["usage", "tickets", "payments", "surveys"], P),
        expected_events
    );
    wait_until("everything sequenced", 180, || all_sequenced(&addr, P));
    std::thread::sleep(std::time::Duration::from_secs(1));
    for proc in [&b, &c] {
        let pid = proc.0.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
    }
    for mut proc in [b, c] {
        let exit = proc.0.wait().unwrap();
        assert!(exit.success(), "exit 0 on SIGTERM: {exit:?}");
    }
    let (inputs, outputs) = assert_exactly_once(&addr, P, dir.path());
    assert_eq!(inputs as i64, expected_events);
    assert!(outputs > 300, "{outputs}");
    // The partitions really moved: released by b on the rebalance.
    assert!(text(1).contains("partition released"), "{}", text(1));
}
