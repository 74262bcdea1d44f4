//! The fuzz targets' checks (fuzz/fuzz_targets/checks.rs) over every file
//! kept for them: the seed corpora (fuzz/seeds/TARGET/) and every input a
//! fuzzer found to crash, hang or exhaust memory
//! (tests/fuzz_regressions/TARGET/: `crash-*` from the fuzzers, `len-*` and
//! `long-*` written by hand). Each decoder must answer Ok or Err;
//! a panic here means a fixed bug is back. docs/FUZZING.md says how to
//! run the fuzzers and add a finding.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};

#[path = "../fuzz/fuzz_targets/checks.rs"]
mod checks;

/// The fuzzers run with a 2 GiB allocation limit; here any single
/// allocation above 256 MiB fails, which aborts the test binary: a length
/// prefix claiming 4 GiB must never be believed (the `len-*` inputs). No
/// kept input needs more than a few MiB.
struct Bounded;

const MAX_ALLOCATION: usize = 256 << 20;

// SAFETY: forwards to the system allocator, refusing (null, which the
// caller turns into an allocation error) only requests above the bound.
unsafe impl GlobalAlloc for Bounded {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOCATION {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOCATION {
            return std::ptr::null_mut();
        }
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through this allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > MAX_ALLOCATION {
            return std::ptr::null_mut();
        }
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Bounded = Bounded;

/// One input's check.
type Check = fn(&[u8]);

const TARGETS: [(&str, Check); 4] = [
    ("json_event", checks::json_event),
    ("proto_event", checks::proto_event),
    ("snapshot", checks::snapshot),
    ("state", checks::state),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.expect("directory entry").path())
            .filter(|p| p.is_file())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("{}: {e}", dir.display()),
    };
    v.sort();
    v
}

/// Runs `check` over every file in `dir`; returns (files, failures).
fn run_dir(check: Check, dir: &Path) -> (usize, Vec<String>) {
    let mut failures = Vec::new();
    let all = files(dir);
    for f in &all {
        let bytes = std::fs::read(f).expect("read input");
        if let Err(p) = std::panic::catch_unwind(|| check(&bytes)) {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("{}: {msg}", f.display()));
        }
    }
    (all.len(), failures)
}

#[test]
fn every_kept_input_is_answered_without_a_panic() {
    let mut failures = Vec::new();
    for (target, check) in TARGETS {
        let (seeds, f) = run_dir(check, &root().join("fuzz/seeds").join(target));
        assert!(
            seeds > 0,
            "no seeds for {target}: the harness checks nothing"
        );
        failures.extend(f);
        let (_, f) = run_dir(check, &root().join("tests/fuzz_regressions").join(target));
        failures.extend(f);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The seeds are inputs this build accepts, so the fuzzers start from
/// deep inside the decoders. After a format change, regenerate them:
/// `cargo test --test fuzz_regressions -- --ignored write_fuzz_seeds`.
#[test]
fn seeds_decode_with_this_build() {
    let seeds = |t: &str| files(&root().join("fuzz/seeds").join(t));
    let model = checks::model();
    for f in seeds("json_event") {
        let b = std::fs::read(&f).expect("read");
        vitals::codec::json::decode(&b).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    }
    for f in seeds("proto_event") {
        let b = std::fs::read(&f).expect("read");
        vitals::codec::proto::decode(&b).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    }
    for f in seeds("snapshot") {
        let b = std::fs::read(&f).expect("read");
        vitals::snapshot::decode(&b, model.clone())
            .unwrap_or_else(|e| panic!("{}: {e} (regenerate the seeds)", f.display()));
    }
    for f in seeds("state") {
        let b = std::fs::read(&f).expect("read");
        vitals::codec::state::decode(&b, model.clone())
            .unwrap_or_else(|e| panic!("{}: {e} (regenerate the seeds)", f.display()));
    }
}

/// Writes the seed corpora from real data: events of every type (from
/// the simulator, plus the types it never emits), their Protobuf
/// encodings, and small snapshots written by `snapshot::encode`.
#[test]
#[ignore = "writes fuzz/seeds/; run by hand after a format change"]
fn write_fuzz_seeds() {
    use prost::Message;
    use vitals::codec::{json, pb, proto, state};
    use vitals::core::{Event, Partition};
    use vitals::simulate::{generate, SimOptions};

    let dir = |t: &str| {
        let d = root().join("fuzz/seeds").join(t);
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    };
    let sim = |accounts, days, seed| {
        generate(&SimOptions {
            accounts,
            days,
            seed,
            ..Default::default()
        })
    };
    // One event of each type the simulator emits, then the rest by hand.
    let mut events: Vec<Event<'static>> = Vec::new();
    for ev in sim(30, 90, 3) {
        if !events.iter().any(|e| e.type_name() == ev.type_name()) {
            events.push(ev);
        }
    }
    let by_hand: [&[u8]; 5] = [
        br#"{"id":"h1","account_id":"acme","type":"subscription.renewed","time":"2025-03-01T00:00:00Z","renews_at":"2026-03-01T00:00:00Z","mrr_cents":12000}"#,
        br#"{"id":"h2","account_id":"acme","type":"subscription.cancelled","time":"2025-03-02T00:00:00.250Z","reason":"budget \u00e9t\u00e9"}"#,
        br#"{"id":"h3","account_id":"acme","type":"health.override","time":"2025-03-03T00:00:00Z","band":"at_risk","score":20,"reason":"exec sponsor left","expires_at":"2025-04-03T00:00:00Z","by":"csm@example.com"}"#,
        br#"{"id":"h4","account_id":"acme","type":"alert.feedback","time":"2025-03-04T00:00:00Z","alert_id":"at_risk:acme:1","verdict":"false_positive","by":"csm"}"#,
        br#"{"id":"h5","account_id":"acme","type":"cs.touchpoint","time":"2025-03-05T00:00:00Z","kind":"qbr","note":"went well"}"#,
    ];
    for line in by_hand {
        events.push(json::decode(line).expect("hand-written seed").into_owned());
    }
    let (jd, pd) = (dir("json_event"), dir("proto_event"));
    for (i, ev) in events.iter().enumerate() {
        let name = format!("{i:02}-{}", ev.type_name());
        std::fs::write(jd.join(&name), json::encode(ev)).expect("write");
        std::fs::write(pd.join(&name), proto::encode(ev)).expect("write");
    }
    // The oneof's other case: `time` as an RFC 3339 string.
    let mut m = proto::to_message(&events[0]);
    m.when = Some(pb::event::When::Time("2025-01-06T10:00:00.5+02:00".into()));
    std::fs::write(pd.join("time-string"), m.encode_to_vec()).expect("write");

    let (sd, td) = (dir("snapshot"), dir("state"));
    let write = |name: &str, part: &Partition| {
        let snap = vitals::snapshot::encode(part, 1, 4242, "10,20,-1,3,7;1;", 1_750_000_000_000);
        std::fs::write(sd.join(name), &snap).expect("write");
        std::fs::write(td.join(name), state::encode(part)).expect("write");
    };
    let mut out = Vec::new();
    write("empty", &Partition::new(checks::model()));
    for (name, accounts, days, seed) in [("small", 3, 45, 11), ("medium", 12, 150, 12)] {
        let mut part = Partition::new(checks::model());
        for ev in sim(accounts, days, seed) {
            part.apply(&ev, &mut out);
        }
        // Overrides, feedback, cancellations: the state the simulator
        // does not reach, on its first account.
        let id = part.accounts[0].id.to_string();
        for line in by_hand {
            let text = String::from_utf8_lossy(line)
                .replace("\"acme\"", &format!("{id:?}"))
                .replace("2025-", "2026-");
            let ev = json::decode(text.as_bytes()).expect("seed event");
            part.apply(&ev, &mut out);
        }
        write(name, &part);
    }
}
