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

/// A read-only view of `dir`, mounted for the value's life.
struct ReadOnlyView {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl ReadOnlyView {
    fn of(dir: &Path) -> Self {
        let view = tempfile::tempdir().unwrap();
        let path = view.path().to_path_buf();
        for args in [vec!["--bind"], vec!["-o", "remount,bind,ro"]] {
            let source = if args[0] == "--bind" { dir } else { path.as_path() };
            let status = Command::new("mount").args(&args).arg(source).arg(&path).status();
            assert!(status.is_ok_and(|s| s.success()), "cannot mount a read-only view: this test needs root");
        }
        Self { _dir: view, path }
    }
}

impl Drop for ReadOnlyView {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// A database that cannot be written (a read-only volume) is a clean STORAGE_ERROR, no
/// panic, and the file is left exactly as it was.
#[test]
fn a_database_on_a_read_only_volume_is_a_storage_error_and_is_left_as_it_was() {
    let volume = SmallVolume::mount();
    let path = volume.path.join("billing.sqlite3");
    let billing = Billing::open(&path, common::catalog()).unwrap();
    billing.import_user("u", "100".parse().unwrap(), u32::MAX, None).unwrap();
    drop(billing);
    let before = std::fs::read(&path).unwrap();

    let view = ReadOnlyView::of(&volume.path);
    let refused = Billing::open(view.path.join("billing.sqlite3"), common::catalog()).map(drop).unwrap_err();
    assert_eq!(refused.code(), "STORAGE_ERROR", "{refused}");
    drop(view);

    assert_eq!(std::fs::read(&path).unwrap(), before, "nothing was written");
    let billing = Billing::open(&path, common::catalog()).unwrap();
    assert_eq!(billing.state("u").unwrap().credits, "100".parse().unwrap());
    assert!(billing.verify_integrity().unwrap().ok);
}
