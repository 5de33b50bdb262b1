//! A phone's small disk: on a 2 MiB volume the WAL fills the disk. A write that finds no
//! room is STORAGE_FULL and changes nothing, and writes resume once there is space.
//!
//! The volume is a real tmpfs of 2 MiB, so this test needs to mount one (root, as in CI);
//! it fails rather than skips when it cannot.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use billing_engine::{Billing, BillingError};

/// A 2 MiB tmpfs mounted for the test's life.
struct SmallVolume {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl SmallVolume {
    fn mount() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let status = Command::new("mount").args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"]).arg(&path).status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "cannot mount a 2 MiB tmpfs at {}: this test needs root (CI runs as root)",
            path.display()
        );
        Self { _dir: dir, path }
    }
}

impl Drop for SmallVolume {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn fill(path: &Path, bytes: usize) {
    std::fs::write(path, vec![7u8; bytes]).unwrap();
}

#[test]
fn a_full_disk_is_storage_full_and_writes_resume_once_there_is_room() {
    let volume = SmallVolume::mount();
    let ballast = volume.path.join("ballast");
    fill(&ballast, 1024 * 1024);
    let billing = Billing::open(volume.path.join("billing.sqlite3"), common::catalog()).unwrap();
    billing.import_user("u", "1000000".parse().unwrap(), u32::MAX, None).unwrap();
    let metadata = serde_json::json!({ "note": "x".repeat(2000) });

    let mut charged = 0;
    let full = loop {
        match billing.charge("u", "generation", &format!("k{charged}"), Some(metadata.clone())) {
            Ok(_) => charged += 1,
            Err(error) => break error,
        }
        assert!(charged < 10_000, "a 2 MiB volume must fill up");
    };
    assert_eq!(full, BillingError::StorageFull, "after {charged} charges");
    let balance = billing.state("u").unwrap().credits;

    // Space is freed. The WAL alone would outgrow the volume again before SQLite's own
    // checkpoint (at 4 MiB of WAL); the store now checkpoints and truncates it after
    // every write instead, so 300 charges of ~16 KiB of WAL each all fit.
    std::fs::remove_file(&ballast).unwrap();
    for i in 0..300 {
        billing.charge("u", "generation", &format!("after-{i}"), Some(metadata.clone())).unwrap();
    }
    let wal = std::fs::metadata(volume.path.join("billing.sqlite3-wal")).map_or(0, |m| m.len());
    assert!(wal < 256 * 1024, "the WAL is kept small: {wal} bytes");
    let state = billing.state("u").unwrap();
    assert_eq!(state.credits, balance - rust_decimal::Decimal::from(600), "the refused charge wrote nothing");
    assert!(billing.verify_integrity().unwrap().ok);
}
