//! Snapshot files: exact round trip of the fold's state, metadata,
//! corruption and old-format detection, the directory store, and
//! `vitals snapshot inspect`.

use std::process::Command;
use std::sync::Arc;

use vitals::core::{Model, ModelConfig, Partition};
use vitals::simulate::{generate, SimOptions};
use vitals::snapshot::{self, DirStore, SnapshotError, SnapshotStore, VERSION};

fn folded() -> Partition {
    let mut p = Partition::new(Arc::new(Model::new(ModelConfig::default())));
    let mut out = Vec::new();
    for ev in generate(&SimOptions {
        accounts: 40,
        days: 60,
        seed: 8,
        ..Default::default()
    }) {
        p.apply(&ev, &mut out);
    }
    p
}

#[test]
fn round_trip_is_exact_and_metadata_is_kept() {
    let p = folded();
    let bytes = snapshot::encode(&p, 3, 12_345, "1,2,3,4,-1;99;", 1_700_000_000_000);
    let (meta, back) = snapshot::decode(&bytes, p.model.clone()).expect("decodes");
    assert_eq!(back, p);
    assert_eq!(meta.version, VERSION);
    assert_eq!(meta.partition, 3);
    assert_eq!(meta.next_offset, 12_345);
    assert_eq!(meta.accounts, 40);
    assert_eq!(meta.watermark, Some(p.watermark()));
    assert_eq!(meta.cursor, "1,2,3,4,-1;99;");
    assert_eq!(meta.model, p.model.id.to_string());
}

/// The partition's copy for a snapshot shares its accounts, duplicate
/// memory and monitor cohorts copy-on-write: folding on (new accounts,
/// cancellations that label cohort entries, duplicates aged out) must not
/// change the copy — it still encodes to the state of the cut.
#[test]
fn snapshot_copy_is_unchanged_by_folding_on() {
    let model = Arc::new(Model::new(ModelConfig {
        monitor: vitals::core::monitor::MonitorConfig {
            horizon_days: 30,
            every_days: 7,
        },
        ..Default::default()
    }));
    let events = generate(&SimOptions {
        accounts: 300,
        days: 240,
        seed: 3,
        ..Default::default()
    });
    let (before, after) = events.split_at(events.len() / 2);
    let mut p = Partition::new(Arc::clone(&model));
    let mut out = Vec::new();
    for ev in before {
        p.apply(ev, &mut out);
    }
    assert!(!p.monitor.cohorts.is_empty(), "cohorts open at the cut");
    let copy = p.snapshot_copy();
    let at_cut = vitals::codec::state::encode(&copy);
    let open_before = p.monitor.open_entries();
    let cancelled_before = p.accounts.iter().filter(|a| a.is_cancelled()).count();
    for ev in after {
        p.apply(ev, &mut out);
    }
    assert!(p.accounts.iter().filter(|a| a.is_cancelled()).count() > cancelled_before);
    assert_ne!(p.monitor.open_entries(), open_before);
    assert_eq!(vitals::codec::state::encode(&copy), at_cut);
}

#[test]
fn a_flipped_byte_anywhere_is_detected() {
    let p = folded();
    let bytes = snapshot::encode(&p, 0, 10, "", 0);
    for at in [8, 20, bytes.len() / 2, bytes.len() - 9, bytes.len() - 1] {
        let mut b = bytes.clone();
        b[at] ^= 0x01;
        let err = snapshot::decode(&b, p.model.clone()).expect_err("corrupt");
        assert!(matches!(err, SnapshotError::Checksum), "byte {at}: {err}");
    }
    assert!(matches!(
        snapshot::decode(&bytes[..bytes.len() - 3], p.model.clone()),
        Err(SnapshotError::Checksum)
    ));
    assert!(matches!(
        snapshot::decode(b"not a snapshot at all", p.model.clone()),
        Err(SnapshotError::Magic)
    ));
}

/// Rewrites the version field and the checksum, as an older build would
/// have written the file.
fn with_version(bytes: &[u8], v: u32) -> Vec<u8> {
    let mut b = bytes[..bytes.len() - 8].to_vec();
    b[8..12].copy_from_slice(&v.to_le_bytes());
    let sum = xxhash_rust::xxh3::xxh3_64(&b);
    b.extend_from_slice(&sum.to_le_bytes());
    b
}

#[test]
fn another_format_version_or_model_is_rejected_with_a_clear_message() {
    let mut p = folded();
    p.scorecard_changes.push(vitals::core::ScorecardChange {
        at: 1_700_000_000_000,
        from: "default-0+0".into(),
        to: p.model.id.clone(),
    });
    let bytes = snapshot::encode(&p, 0, 10, "", 0);
    // Version 1 (the state unframed) is refused like any other version.
    for v in [0, 1, VERSION + 1] {
        let err = snapshot::decode(&with_version(&bytes, v), p.model.clone()).unwrap_err();
        assert!(matches!(err, SnapshotError::Version { found } if found == v));
        assert!(err.to_string().contains("rebuilt from the log"), "{err}");
    }
    let other = ModelConfig {
        version: "other".into(),
        ..Default::default()
    };
    let err = snapshot::decode(&bytes, Arc::new(Model::new(other))).unwrap_err();
    // The refusal carries the snapshot's scorecard changes (a partition
    // rebuilt with the new config keeps them).
    match &err {
        SnapshotError::Model { changes, .. } => {
            assert_eq!(changes.as_ref(), Some(&p.scorecard_changes))
        }
        _ => panic!("{err}"),
    }
}

/// The service streams snapshots to the directory store (never holding a
/// whole one in memory): the file is byte for byte what `encode` gives, with
/// and without a shadow scorecard's state, and the stated size is its size.
#[test]
fn a_streamed_snapshot_is_the_encoded_one() {
    let p = folded();
    let dir = tempfile::tempdir().unwrap();
    let store = DirStore::new(dir.path());
    for shadow in [None, Some(&p)] {
        let w = snapshot::Writer::new(&p, shadow, 4, 900, "5;;", 1_700_000_000_000);
        let (name, size) = store.put_from(4, 900, &w).expect("stored");
        let file = store.get(4, &name).unwrap();
        let encoded = snapshot::encode_with_shadow(&p, shadow, 4, 900, "5;;", 1_700_000_000_000);
        assert_eq!(file, encoded);
        assert_eq!(size as usize, file.len());
        let (meta, back) = snapshot::decode(&file, p.model.clone()).expect("decodes");
        assert_eq!(back, p);
        assert_eq!(meta.shadow_model.is_some(), shadow.is_some());
        // Read from the file as it is decoded, the shadow state too.
        let (r, n) = store.open(4, &name).expect("opens");
        assert_eq!(n as usize, file.len());
        let (meta, back, sh) =
            snapshot::read_from(r, n, p.model.clone(), shadow.map(|s| s.model.clone()))
                .expect("reads");
        assert_eq!(back, p);
        assert_eq!(sh.as_ref(), shadow);
        assert_eq!(meta.accounts, 40);
        assert_eq!(snapshot::parse(&file).expect("parses"), meta);
    }
}

/// Bytes after the last state, under a valid checksum, are refused; so
/// is a shadow state for another scorecard than the one configured.
#[test]
fn trailing_bytes_and_a_foreign_shadow_are_refused() {
    let p = folded();
    let bytes = snapshot::encode(&p, 0, 10, "", 0);
    let mut b = bytes[..bytes.len() - 8].to_vec();
    b.extend_from_slice(b"xyz");
    let sum = xxhash_rust::xxh3::xxh3_64(&b);
    b.extend_from_slice(&sum.to_le_bytes());
    let err = snapshot::decode(&b, p.model.clone()).unwrap_err();
    assert!(matches!(err, SnapshotError::Trailing(3)), "{err}");
    let other = Arc::new(Model::new(ModelConfig {
        version: "other".into(),
        ..Default::default()
    }));
    let err = snapshot::decode_with_shadow(&bytes, p.model.clone(), Some(other)).unwrap_err();
    assert!(
        matches!(err, SnapshotError::Shadow { found: None, .. }),
        "{err}"
    );
}

#[test]
fn directory_store_keeps_the_newest_k() {
    let dir = tempfile::tempdir().unwrap();
    let store = DirStore::new(dir.path());
    assert!(store.list(1).unwrap().is_empty());
    for off in [5i64, 50, 500, 7] {
        store.put(1, off, format!("s{off}").as_bytes()).unwrap();
    }
    assert_eq!(
        store.list(1).unwrap(),
        vec![
            format!("{:020}.snap", 500),
            format!("{:020}.snap", 50),
            format!("{:020}.snap", 7),
            format!("{:020}.snap", 5)
        ]
    );
    store.retain(1, 2).unwrap();
    let left = store.list(1).unwrap();
    assert_eq!(left.len(), 2);
    assert_eq!(store.get(1, &left[0]).unwrap(), b"s500");
    // Nothing half-written is ever listed.
    assert!(std::fs::read_dir(dir.path().join("p1")).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".tmp")));
}

#[test]
fn inspect_prints_metadata_and_flags_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let p = folded();
    let path = dir.path().join("s.snap");
    std::fs::write(&path, snapshot::encode(&p, 2, 77, "0;;", 5)).unwrap();
    let out = inspect(&path);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["partition"], 2);
    assert_eq!(v["next_offset"], 77);
    assert_eq!(v["accounts"], 40);
    assert_eq!(v["version"], VERSION);
    assert_eq!(v["state_format"], vitals::codec::state::FORMAT);
    assert_eq!(v["checksum_ok"], true);
    assert_eq!(v["size_bytes"], std::fs::metadata(&path).unwrap().len());
    let mut b = std::fs::read(&path).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0xff;
    std::fs::write(&path, b).unwrap();
    let out = inspect(&path);
    assert!(!out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["checksum_ok"], false);
    assert!(String::from_utf8_lossy(&out.stderr).contains("checksum mismatch"));
    // A file that is no snapshot: its checksum was never checked.
    let other = dir.path().join("events.jsonl");
    std::fs::write(&other, "{\"id\":\"e1\"}\n").unwrap();
    let out = inspect(&other);
    assert!(!out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["checksum_ok"], serde_json::Value::Null, "{v}");
    assert!(v["error"]
        .as_str()
        .unwrap()
        .contains("not a Vitals snapshot"));
    // A missing file: one line naming it, the OS's reason once.
    let out = inspect(dir.path().join("missing.snap"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing.snap: No such file"), "{err}");
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
}

/// `vitals snapshot inspect PATH`, run as a user would.
fn inspect(path: impl AsRef<std::path::Path>) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vitals"))
        .args(["snapshot", "inspect"])
        .arg(path.as_ref())
        .output()
        .unwrap()
}
