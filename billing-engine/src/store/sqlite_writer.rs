//! The SQLite store's one writer connection, and the commits its writers share.
//!
//! A commit is what a write costs on SQLite: a WAL append and, at `synchronous = FULL`,
//! an fsync. So when several threads of a process write at once, one commit carries all
//! of their transactions. This is group commit done by flat combining:
//!
//! - A writer puts a ticket for its work in the queue, then tries to take the connection.
//!   The one that gets it is the combiner: it takes every queued ticket (at most
//!   [`MAX_GROUP`]), runs their work one after another in one transaction, each in a
//!   savepoint of its own, commits once, and tells each writer how it went. The others
//!   sleep until then: no writer waits for another to wake up before the commit.
//! - A writer's own error (a refusal) undoes its savepoint only, and is its result alone.
//!   A storage failure in any work, or in the commit, rolls the group back and is the
//!   error of every writer in it; none of them was acknowledged.
//! - No writer returns before the commit that holds its writes, so a crash loses only
//!   writes that were never acknowledged.
//! - A writer alone is the combiner of a group of one: it is never delayed.
//! - With sharing off, every group holds one writer: one commit per write.
//!
//! The combiner runs other threads' closures. They are `Send`, and each waits for its
//! ticket to be done before its stack frame (which holds the closure) ends: see
//! [`Ticket`].

use std::any::Any;
use std::collections::VecDeque;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};
use rusqlite::Connection;

use super::sqlite::{execute, roll_back, SqliteTx, BEGIN_WRITE};
use super::sqlite_error::SqliteError;
use super::Transaction;
use crate::error::{BillingError, Result};

/// At most this many writers share one commit, so that the last of a group never waits
/// for more than this many others' work.
const MAX_GROUP: usize = 64;
/// Groups a combiner runs for others after its own write is done, while writers are
/// queued: a bound on how much longer its own call takes.
const EXTRA_GROUPS: usize = 2;
/// How long a queued writer sleeps before it looks again on its own, in case the wake-up
/// it waits for was missed (a combiner that finished just as it queued).
const RECHECK: Duration = Duration::from_millis(5);

pub(super) struct Writer {
    /// The connection, held by the combiner while it runs a group.
    slot: Mutex<Connection>,
    /// Tickets of writers waiting for a combiner, oldest first.
    queue: Mutex<VecDeque<TicketRef>>,
    /// Writers per group: [`MAX_GROUP`], or 1 with sharing off.
    group_size: usize,
    stats: Mutex<CommitStats>,
    /// Set once a write found the disk full. From then on every commit checkpoints and
    /// truncates the WAL after it: SQLite's own checkpoint comes only at 4 MiB of WAL,
    /// more than a small disk may have, and a checkpoint needs room to copy pages into.
    short_of_space: AtomicBool,
}

/// Counts of commits and of the writes they carried, for tests and monitoring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    pub commits: u64,
    pub writes: u64,
}

/// A writer's work, type-erased: runs the closure, keeps its result for the writer, and
/// says how it went.
type Job<'a> = dyn FnMut(&mut dyn Transaction) -> Ran + Send + 'a;

/// How a job went, as the combiner needs to know it.
#[derive(Debug, Clone, PartialEq)]
enum Ran {
    /// It succeeded: its writes wait for the commit.
    Wrote,
    /// It failed on its own grounds: its savepoint is undone.
    Refused,
    /// A storage failure: the group ends with it.
    Failed(BillingError),
}

/// One writer's place in the queue. It lives on the writer's stack; the writer does not
/// return (so the ticket and the job it points to stay alive) until `done` is set, and the
/// combiner does not touch the ticket after setting it.
struct Ticket {
    /// The writer's job, with its lifetime erased (see the type's docs).
    job: *mut Job<'static>,
    deadline: Instant,
    state: Mutex<State>,
    woken: Condvar,
}

#[derive(Default)]
struct State {
    /// The combiner took the ticket: from then on the writer must wait for `done`.
    taken: bool,
    done: Option<Done>,
}

/// What the combiner tells a writer.
struct Done {
    /// The group's commit, or the failure that ended the group.
    commit: Result<()>,
    /// The writer's job panicked: the payload, to resume in the writer's thread.
    panic: Option<Box<dyn Any + Send>>,
}

/// A ticket in the queue.
#[derive(Clone, Copy)]
struct TicketRef(*const Ticket);

// SAFETY: a ticket is shared between its writer and one combiner; its mutable parts are
// behind its mutex, and the job is run by the combiner alone while the writer waits.
unsafe impl Send for TicketRef {}

impl Writer {
    pub(super) fn new(conn: Connection, shares_commits: bool) -> Self {
        Self {
            slot: Mutex::new(conn),
            queue: Mutex::new(VecDeque::new()),
            group_size: if shares_commits { MAX_GROUP } else { 1 },
            stats: Mutex::new(CommitStats::default()),
            short_of_space: AtomicBool::new(false),
        }
    }

    pub(super) fn stats(&self) -> CommitStats {
        *self.stats.lock()
    }

    /// How many writers wait in the queue, for tests that line writers up.
    #[cfg(test)]
    pub(super) fn queued(&self) -> usize {
        self.queue.lock().len()
    }

    /// The connection for a read of `:memory:`, once no group runs, or BUSY at `deadline`.
    pub(super) fn lock(&self, deadline: Instant) -> Result<MutexGuard<'_, Connection>> {
        self.slot.try_lock_until(deadline).ok_or(BillingError::Busy { waited_ms: 0 })
    }

    /// Runs `work` as one write, in a group's transaction, and returns once the commit
    /// that holds it is done; BUSY if no combiner took it before `deadline`.
    pub(super) fn write<T: Send>(
        &self,
        deadline: Instant,
        work: impl FnOnce(&mut dyn Transaction) -> Result<T> + Send,
    ) -> Result<T> {
        let mut work = Some(work);
        let mut result: Option<Result<T>> = None;
        let mut job = |tx: &mut dyn Transaction| -> Ran {
            let Some(work) = work.take() else { return Ran::Refused };
            let outcome = work(tx);
            let ran = match &outcome {
                Ok(_) => Ran::Wrote,
                Err(failure) if failure.is_storage_failure() => Ran::Failed(failure.clone()),
                Err(_) => Ran::Refused,
            };
            result = Some(outcome);
            ran
        };
        let job: &mut Job<'_> = &mut job;
        // SAFETY: the erased job is used only until the ticket is done, and this frame
        // waits for that below before `job` goes out of scope (see `Ticket`).
        let job: *mut Job<'static> = unsafe { std::mem::transmute::<*mut Job<'_>, *mut Job<'static>>(job) };
        let ticket = Ticket { job, deadline, state: Mutex::new(State::default()), woken: Condvar::new() };
        self.queue.lock().push_back(TicketRef(&ticket));
        let done = self.wait_done(&ticket)?;
        if let Some(panic) = done.panic {
            resume_unwind(panic);
        }
        match result {
            None => Err(done.commit.err().unwrap_or(BillingError::Busy { waited_ms: 0 })),
            Some(Ok(value)) => done.commit.map(|()| value),
            Some(Err(own)) => Err(own),
        }
    }

    /// Waits until the ticket is done, combining when the connection is free. BUSY when
    /// the deadline passes before a combiner took the ticket (which then never runs).
    fn wait_done(&self, ticket: &Ticket) -> Result<Done> {
        loop {
            if let Some(conn) = self.slot.try_lock() {
                self.combine(conn, ticket);
            }
            let mut state = ticket.state.lock();
            if let Some(done) = state.done.take() {
                return Ok(done);
            }
            if !state.taken && Instant::now() >= ticket.deadline {
                let mut queue = self.queue.lock();
                if let Some(at) = queue.iter().position(|t| std::ptr::eq(t.0, ticket)) {
                    queue.remove(at);
                    return Err(BillingError::Busy { waited_ms: 0 });
                }
            }
            let until_deadline = ticket.deadline.saturating_duration_since(Instant::now());
            let wait = if state.taken || until_deadline.is_zero() { RECHECK } else { RECHECK.min(until_deadline) };
            ticket.woken.wait_for(&mut state, wait);
            if let Some(done) = state.done.take() {
                return Ok(done);
            }
        }
    }

    /// Runs groups until `mine` is done and then, while writers are queued, up to
    /// [`EXTRA_GROUPS`] more (waking one of them to combine would put its wake-up between
    /// two commits); then hands the connection on: the oldest writer still queued is
    /// woken to combine next.
    fn combine(&self, conn: MutexGuard<'_, Connection>, mine: &Ticket) {
        let mut extra = 0;
        while extra <= EXTRA_GROUPS {
            let group: Vec<TicketRef> = {
                let mut queue = self.queue.lock();
                let take = queue.len().min(self.group_size);
                queue.drain(..take).collect()
            };
            if group.is_empty() {
                break;
            }
            self.run_group(&conn, &group);
            if mine.state.lock().done.is_some() {
                extra += 1;
            }
        }
        drop(conn);
        if let Some(next) = self.queue.lock().front().copied() {
            // SAFETY: a queued ticket is alive: its writer waits for it to be done.
            unsafe { &*next.0 }.woken.notify_one();
        }
    }

    /// One group: one transaction, a savepoint per job (when there are several), one
    /// commit, and every writer told.
    fn run_group(&self, conn: &Connection, group: &[TicketRef]) {
        // SAFETY: the tickets are alive until they are done (see `Ticket`), and a taken
        // ticket is this combiner's alone.
        let tickets: Vec<&Ticket> = group.iter().map(|t| unsafe { &*t.0 }).collect();
        for ticket in &tickets {
            ticket.state.lock().taken = true;
        }
        let deadline = tickets.iter().map(|t| t.deadline).min().expect("a group has a ticket");
        if let Err(failure) = begin(conn, deadline) {
            return self.finish(conn, &tickets, Err(failure), Vec::new());
        }
        let alone = tickets.len() == 1;
        let mut panics = Vec::new();
        let mut wrote = 0u64;
        for (i, ticket) in tickets.iter().enumerate() {
            // SAFETY: the job is alive while its ticket is not done, and only the
            // combiner that took the ticket runs it.
            let job = unsafe { &mut *ticket.job };
            match run_job(conn, job, alone) {
                Ok(JobEnd::Ran(Ran::Wrote)) => wrote += 1,
                Ok(JobEnd::Ran(Ran::Refused)) => {}
                Ok(JobEnd::Panicked(payload)) => panics.push((i, payload)),
                Ok(JobEnd::Ran(Ran::Failed(failure))) | Err(failure) => {
                    roll_back(conn);
                    return self.finish(conn, &tickets, Err(failure), panics);
                }
            }
        }
        // A group of one whose job wrote nothing to keep was rolled back already.
        let commit = if conn.is_autocommit() { Ok(()) } else { commit(conn) };
        if commit.is_ok() && wrote > 0 {
            let mut stats = self.stats.lock();
            stats.commits += 1;
            stats.writes += wrote;
        }
        self.finish(conn, &tickets, commit, panics);
    }

    /// Tells every writer of the group how it went, and keeps a full disk from staying
    /// full (see `short_of_space`).
    fn finish(
        &self,
        conn: &Connection,
        tickets: &[&Ticket],
        commit: Result<()>,
        mut panics: Vec<(usize, Box<dyn Any + Send>)>,
    ) {
        if commit.as_ref().err() == Some(&BillingError::StorageFull) {
            self.short_of_space.store(true, Ordering::Relaxed);
        }
        if self.short_of_space.load(Ordering::Relaxed) {
            make_room(conn);
        }
        for (i, ticket) in tickets.iter().enumerate() {
            let panic = panics.iter().position(|(at, _)| *at == i).map(|at| panics.swap_remove(at).1);
            let mut state = ticket.state.lock();
            state.done = Some(Done { commit: commit.clone(), panic });
            ticket.woken.notify_one();
        }
    }
}

/// How a job of a group ended.
enum JobEnd {
    Ran(Ran),
    Panicked(Box<dyn Any + Send>),
}

/// Runs one job: in a savepoint when others share the transaction, so that its refusal
/// or panic undoes its own writes only; alone, a refusal or panic rolls back the whole
/// transaction, which holds nothing else. `Err` is a failure of the savepoint itself.
fn run_job(conn: &Connection, job: &mut Job<'_>, alone: bool) -> Result<JobEnd> {
    let tx = SqliteTx::new(conn);
    if !alone {
        tx.savepoint()?;
    }
    let ended = match catch_unwind(AssertUnwindSafe(|| job(&mut SqliteTx::new(conn)))) {
        Ok(ran) => JobEnd::Ran(ran),
        Err(payload) => JobEnd::Panicked(payload),
    };
    let keep = matches!(ended, JobEnd::Ran(Ran::Wrote));
    match (&ended, alone) {
        (JobEnd::Ran(Ran::Failed(_)), _) => {}
        (_, false) => tx.end_savepoint(keep)?,
        (_, true) if !keep => roll_back(conn),
        (_, true) => {}
    }
    Ok(ended)
}

/// Opens a group's transaction, waiting for other processes' writes until `deadline`.
fn begin(conn: &Connection, deadline: Instant) -> Result<()> {
    // SQLite counts whole milliseconds; round up so that it never gives up early.
    let left = deadline.saturating_duration_since(Instant::now()).as_micros().div_ceil(1000);
    conn.busy_timeout(Duration::from_millis(u64::try_from(left).unwrap_or(u64::MAX))).map_err(SqliteError::from)?;
    Ok(execute(conn, BEGIN_WRITE)?)
}

/// Commits, rolling back if the commit fails.
fn commit(conn: &Connection) -> Result<()> {
    let result = execute(conn, "COMMIT").map_err(BillingError::from);
    if result.is_err() {
        roll_back(conn);
    }
    result
}

/// Moves the WAL's pages into the database and truncates the WAL, which is what fills a
/// small disk. Best effort: it fails too while the disk has no room at all, and succeeds
/// after the first write that finds room once space is freed.
fn make_room(conn: &Connection) {
    let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
}
