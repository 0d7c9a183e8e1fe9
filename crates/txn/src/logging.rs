//! What the transaction layer hands to the command log.
//!
//! The log (crate `joule-durability`) records *invocations*, not their
//! effects: a committed transaction that changed something is logged with
//! the procedure it ran, its parameters and the ids it ran with, so that
//! running it again on the same prior state reproduces the same effects
//! (execution is deterministic; see [`crate::ids`]). Read-only and failed
//! transactions change nothing and are not logged.
//!
//! Who logs, and when:
//!
//! * a **site** logs a single-partition transaction right after committing
//!   it, before it starts the next one. Its records reach the log in its
//!   execution order; each carries the id of the last multi-partition
//!   transaction the site had started ([`LoggedTxn::after_mp`]), which is
//!   all replay needs to put it back between the same multi-partition
//!   transactions;
//! * the **coordinator** logs a multi-partition transaction (DDL included)
//!   once every site has done its part, *before* telling them to commit, so
//!   that no later transaction on any site can be answered before it is in
//!   the log.
//!
//! In synchronous mode ([`CommandLog::holds_answers`]) every answer a site
//! or the coordinator gives — also for reads and failures, which may have
//! seen state not yet durable — goes to the log and is delivered once
//! everything logged before it is on disk. In asynchronous mode answers go
//! out at once and the log catches up within its window.
//!
//! Replayed transactions (those carrying recorded ids) are not logged again.

use crate::ids::TxnIds;
use crate::response::{Response, ResponseSink};
use joule_common::Value;
use std::sync::Arc;

/// One committed transaction that changed state, as the log records it.
#[derive(Clone, Copy, Debug)]
pub struct LoggedTxn<'a> {
    pub ids: TxnIds,
    /// The partition of a single-partition transaction; `None`:
    /// multi-partition.
    pub partition: Option<u32>,
    /// The transaction id of the last multi-partition transaction the
    /// partition had started before this one (0: none). Multi-partition
    /// records leave it 0: their own id orders them.
    pub after_mp: u64,
    /// The session database ad hoc SQL was planned in.
    pub database: &'a str,
    pub procedure: &'a str,
    /// For `@AdHoc`: the SQL text, logged as the first parameter.
    pub sql: Option<&'a str>,
    pub params: &'a [Value],
}

/// An answer held back until the log has made its transaction durable.
pub struct Answer {
    pub sink: Arc<dyn ResponseSink>,
    pub handle: u64,
    pub response: Response,
}

impl Answer {
    pub fn deliver(self) {
        self.sink.deliver(self.handle, self.response)
    }
}

/// The command log as the transaction layer sees it.
///
/// Sites batch: they encode each transaction into a buffer of their own
/// and [`CommandLog::submit`] the frames (with the answers waiting on them)
/// whenever their inbox runs empty, the buffer grows large, or a
/// multi-partition transaction begins — one hand-over per burst instead of
/// one per transaction.
pub trait CommandLog: Send + Sync {
    /// Synchronous mode: answers wait until what came before them is
    /// durable.
    fn holds_answers(&self) -> bool;

    /// Append `txn`'s frame to `out`.
    fn encode(&self, txn: &LoggedTxn<'_>, out: &mut Vec<u8>);

    /// Hand over whole frames, in order, and the answers to deliver once
    /// they (and everything submitted before) are durable — or, if the log
    /// fails, to replace by an error.
    fn submit(&self, frames: Vec<u8>, answers: Vec<Answer>);

    /// Log `txn`; in synchronous mode `answer` is delivered once it is
    /// durable.
    fn append(&self, txn: &LoggedTxn<'_>, answer: Option<Answer>) {
        let mut frames = Vec::with_capacity(128);
        self.encode(txn, &mut frames);
        self.submit(frames, answer.into_iter().collect());
    }

    /// Deliver `answer` once everything appended before it is durable.
    fn after_durable(&self, answer: Answer) {
        self.submit(Vec::new(), vec![answer]);
    }

    /// The number of the segment being written now (0 when nothing is
    /// logged). Read at a snapshot's point: every record submitted after
    /// it lands in this segment or a later one, so the segments before it
    /// hold only records the snapshot covers.
    fn current_segment(&self) -> u64 {
        0
    }
}

/// Deliver `answer` the way `log` wants: at once, or after what is logged
/// before it is durable; logging `txn` first if there is one.
pub(crate) fn answer(log: Option<&Arc<dyn CommandLog>>, txn: Option<&LoggedTxn<'_>>, answer: Answer) {
    match (log, txn) {
        (None, _) => answer.deliver(),
        (Some(log), Some(txn)) if log.holds_answers() => log.append(txn, Some(answer)),
        (Some(log), Some(txn)) => {
            log.append(txn, None);
            answer.deliver()
        }
        (Some(log), None) if log.holds_answers() => log.after_durable(answer),
        (Some(_), None) => answer.deliver(),
    }
}
