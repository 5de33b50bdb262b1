//! The SQLite store's one writer connection, and the commits its writers share.
//!
//! A commit is what a write costs on SQLite: a WAL append and, at `synchronous = FULL`,
//! an fsync. So when several threads of a process write at once, one commit carries all
//! of their transactions:
//!
//! - A writer takes the connection (a mutex). If no transaction is open, it opens one
//!   (`BEGIN IMMEDIATE`) and runs its work in it. If one is open, another writer left it
//!   open for it: it joins, and runs its work in a savepoint, so that an error of its own
//!   undoes its own writes only.
//! - Then, if another writer is queued for the connection (and the group is not full),
//!   it leaves the transaction open to that writer and waits for the commit; else it
//!   commits for the whole group and tells the others how the commit went.
//! - No writer returns before the commit that holds its writes, so a crash loses only
//!   writes that were never acknowledged. A storage failure in any writer's work, or in
//!   the commit, rolls the group back and is every member's error; none was acknowledged.
//! - A writer alone commits at once, as it would without sharing: it is never delayed.
//!
//! This is group commit (PostgreSQL's, a database's log writer's) done by the writers
//! themselves: the one that finds no one behind it commits.

use std::collections::HashMap;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};
use rusqlite::Connection;

use super::sqlite::SqliteTx;
use super::sqlite_error::SqliteError;
use super::Transaction;
use crate::error::{BillingError, Result};

/// At most this many writers share one commit, so that the first of a group never waits
/// for more than this many others' work.
const MAX_GROUP: usize = 64;
/// How long a member waits for its group's commit before checking that the group is not
/// stranded (left open for a writer that then gave up waiting for the connection).
const STRANDED_CHECK: Duration = Duration::from_millis(20);

/// Takes the write lock before the first read: see the store's module docs.
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

pub(super) struct Writer {
    /// The connection and the group whose transaction is open on it. Timed, so that the
    /// wait for it counts against the same deadline as SQLite's own.
    slot: Mutex<Slot>,
    /// Writers waiting for `slot`: while there are any, a writer done with its work
    /// leaves the transaction open to them.
    queued: AtomicUsize,
    shares_commits: bool,
    /// How each recent group's commit went, until every member waiting for it has read it.
    outcomes: Mutex<HashMap<u64, Outcome>>,
    committed: Condvar,
    stats: Mutex<CommitStats>,
    /// Set once a write found the disk full. From then on every commit checkpoints and
    /// truncates the WAL after it: SQLite's own checkpoint comes only at 4 MiB of WAL,
    /// more than a small disk may have, and a checkpoint needs room to copy pages into.
    short_of_space: AtomicBool,
}

pub(super) struct Slot {
    pub(super) conn: Connection,
    group: Option<Group>,
    groups_opened: u64,
}

/// Counts of commits and of the writes they carried, for tests and monitoring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    pub commits: u64,
    pub writes: u64,
}

#[derive(Debug, Clone, Copy)]
struct Group {
    id: u64,
    /// Writers whose work ran in the open transaction, the opener included.
    members: usize,
    /// Members waiting for the commit: those whose work succeeded.
    waiting: usize,
}

struct Outcome {
    result: Result<()>,
    /// Members that have not read it yet.
    unread: usize,
}

/// What a writer does after its work: commits, or leaves the group open and waits.
enum Next {
    Committed(Result<()>),
    HandedOff(u64),
}

impl Writer {
    pub(super) fn new(conn: Connection, shares_commits: bool) -> Self {
        Self {
            slot: Mutex::new(Slot { conn, group: None, groups_opened: 0 }),
            queued: AtomicUsize::new(0),
            shares_commits,
            outcomes: Mutex::new(HashMap::new()),
            committed: Condvar::new(),
            stats: Mutex::new(CommitStats::default()),
            short_of_space: AtomicBool::new(false),
        }
    }

    pub(super) fn stats(&self) -> CommitStats {
        *self.stats.lock()
    }

    /// The count of queued writers, for tests that line writers up.
    #[cfg(test)]
    pub(super) fn queued(&self) -> &AtomicUsize {
        &self.queued
    }

    /// The connection, once this process's writers ahead are done, or BUSY at
    /// `deadline`; no transaction is open on it unless a group is. Waiting, a thread
    /// counts as queued.
    pub(super) fn lock(&self, deadline: Instant) -> Result<MutexGuard<'_, Slot>> {
        if let Some(slot) = self.slot.try_lock() {
            return Ok(slot);
        }
        self.queued.fetch_add(1, Ordering::SeqCst);
        let slot = self.slot.try_lock_until(deadline);
        self.queued.fetch_sub(1, Ordering::SeqCst);
        slot.ok_or(BillingError::Busy { waited_ms: 0 })
    }

    /// Runs `work` as one write, in the open group's transaction or a new one, and
    /// returns once the commit that holds it is done.
    pub(super) fn write<T>(
        &self,
        deadline: Instant,
        work: impl FnOnce(&mut dyn Transaction) -> Result<T>,
    ) -> Result<T> {
        let mut slot = self.lock(deadline)?;
        let joined = slot.group.is_some();
        if !joined {
            slot.begin(deadline)?;
        }
        let ran = catch_unwind(AssertUnwindSafe(|| {
            let mut tx = SqliteTx { conn: &slot.conn };
            if joined {
                in_savepoint(&mut tx, work)
            } else {
                match work(&mut tx) {
                    Err(error) if !error.is_storage_failure() => Ok(Err(error)),
                    other => other.map(Ok),
                }
            }
        }));
        match ran {
            Err(panic) => {
                // The panicking writer's part is undone; the group goes on without it.
                if !joined {
                    slot.abandon();
                } else if (SqliteTx { conn: &slot.conn }).end_savepoint(false).is_ok() {
                    drop(self.finish(slot, false));
                } else {
                    self.roll_back(&mut slot, BillingError::Storage { message: "a write panicked".into() });
                }
                resume_unwind(panic)
            }
            Ok(Err(failure)) => {
                self.roll_back(&mut slot, failure.clone());
                Err(failure)
            }
            Ok(Ok(Err(own))) => {
                if joined {
                    drop(self.finish(slot, false));
                } else {
                    // The opener's own error: nothing else is in the transaction.
                    slot.abandon();
                }
                Err(own)
            }
            Ok(Ok(Ok(value))) => {
                let committed = match self.finish(slot, true) {
                    Next::Committed(result) => result,
                    Next::HandedOff(group) => self.await_commit(group),
                };
                committed.map(|()| value)
            }
        }
    }

    /// After a member's work: leaves the group open to the next queued writer, or
    /// commits it. `waits`: the member's work succeeded, so it waits for the commit.
    fn finish(&self, mut slot: MutexGuard<'_, Slot>, waits: bool) -> Next {
        let group = slot.group.as_mut().expect("a member finishes an open group");
        group.members += 1;
        group.waiting += usize::from(waits);
        if self.shares_commits && self.queued.load(Ordering::SeqCst) > 0 && group.members < MAX_GROUP {
            return Next::HandedOff(group.id);
        }
        // The committer has the result at hand; the others read it.
        Next::Committed(self.commit(&mut slot, usize::from(waits)))
    }

    /// Commits the open group (rolling back if the commit fails) and publishes the
    /// outcome to its waiting members but `readers_at_hand`.
    fn commit(&self, slot: &mut Slot, readers_at_hand: usize) -> Result<()> {
        let group = slot.group.take().expect("a group to commit");
        let result = execute(&slot.conn, "COMMIT");
        if result.is_err() && !slot.conn.is_autocommit() {
            let _ = execute(&slot.conn, "ROLLBACK");
        }
        if result.is_ok() {
            let mut stats = self.stats.lock();
            stats.commits += 1;
            stats.writes += group.waiting as u64;
        }
        self.settle(&slot.conn, &result);
        self.publish(group.id, group.waiting - readers_at_hand, result.clone());
        result
    }

    /// Rolls the open group back after a storage failure: it is every waiting member's
    /// error too.
    fn roll_back(&self, slot: &mut Slot, failure: BillingError) {
        let failed = Err(failure);
        self.settle(&slot.conn, &failed);
        let group = slot.group.expect("a group to roll back");
        slot.abandon();
        self.publish(group.id, group.waiting, failed);
    }

    /// Keeps a full disk from staying full: see `short_of_space`.
    fn settle(&self, conn: &Connection, result: &Result<()>) {
        if result.as_ref().err() == Some(&BillingError::StorageFull) {
            self.short_of_space.store(true, Ordering::Relaxed);
        }
        if self.short_of_space.load(Ordering::Relaxed) && conn.is_autocommit() {
            make_room(conn);
        }
    }

    fn publish(&self, group: u64, readers: usize, result: Result<()>) {
        if readers > 0 {
            self.outcomes.lock().insert(group, Outcome { result, unread: readers });
            self.committed.notify_all();
        }
    }

    /// Waits for the outcome of `group`'s commit. If the group was left open for a writer
    /// that then gave up waiting, nobody else will commit it: then this member does.
    fn await_commit(&self, group: u64) -> Result<()> {
        let mut outcomes = self.outcomes.lock();
        loop {
            if let Some(outcome) = outcomes.get_mut(&group) {
                outcome.unread -= 1;
                let result = outcome.result.clone();
                if outcome.unread == 0 {
                    outcomes.remove(&group);
                }
                return result;
            }
            if self.committed.wait_for(&mut outcomes, STRANDED_CHECK).timed_out() {
                drop(outcomes);
                self.commit_if_stranded(group);
                outcomes = self.outcomes.lock();
            }
        }
    }

    fn commit_if_stranded(&self, group: u64) {
        let Some(mut slot) = self.slot.try_lock() else { return };
        if slot.group.is_some_and(|open| open.id == group) {
            // This member reads the outcome like the others.
            let _ = self.commit(&mut slot, 0);
        }
    }
}

impl Slot {
    /// Opens a transaction for a new group, waiting for other processes' writes until
    /// `deadline` at most.
    fn begin(&mut self, deadline: Instant) -> Result<()> {
        // SQLite counts whole milliseconds; round up so that it never gives up early.
        let left = deadline.saturating_duration_since(Instant::now()).as_micros().div_ceil(1000);
        let left = Duration::from_millis(u64::try_from(left).unwrap_or(u64::MAX));
        self.conn.busy_timeout(left).map_err(SqliteError::from)?;
        execute(&self.conn, BEGIN_WRITE)?;
        self.groups_opened += 1;
        self.group = Some(Group { id: self.groups_opened, members: 0, waiting: 0 });
        Ok(())
    }

    /// Rolls the open transaction back, with whatever it held.
    fn abandon(&mut self) {
        if !self.conn.is_autocommit() {
            let _ = execute(&self.conn, "ROLLBACK");
        }
        self.group = None;
    }
}

/// Runs `work` in a savepoint of `tx`. An error of `work`'s own undoes what it wrote and
/// is returned inside `Ok`; a storage failure is returned as it is, for the group to
/// end with (SQLite may have rolled the transaction back already).
fn in_savepoint<T>(tx: &mut SqliteTx<'_>, work: impl FnOnce(&mut dyn Transaction) -> Result<T>) -> Result<Result<T>> {
    tx.savepoint()?;
    match work(tx) {
        Ok(value) => {
            tx.end_savepoint(true)?;
            Ok(Ok(value))
        }
        Err(error) if error.is_storage_failure() => Err(error),
        Err(error) => {
            tx.end_savepoint(false)?;
            Ok(Err(error))
        }
    }
}

fn execute(conn: &Connection, sql: &'static str) -> Result<()> {
    conn.prepare_cached(sql).and_then(|mut stmt| stmt.execute([])).map_err(SqliteError::from)?;
    Ok(())
}

/// Moves the WAL's pages into the database and truncates the WAL, which is what fills a
/// small disk. Best effort: it fails too while the disk has no room at all, and succeeds
/// after the first write that finds room once space is freed.
fn make_room(conn: &Connection) {
    let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
}
