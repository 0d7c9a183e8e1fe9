//! A site's part in a multi-partition transaction: the rounds, the prepare
//! (in a cluster), and the outcome — including the outcome of a prepared
//! transaction whose coordinator or leader failed.
//!
//! On one host the coordinator's commit cannot be half done: every site is a
//! thread of the same process. In a cluster it can. The coordinator commits
//! partition by partition, over the network, and a host that dies in the
//! middle would leave some partitions with the transaction's writes and
//! others without. So a cluster's transaction commits in two phases:
//!
//! 1. **Prepare.** Once every round ran, the coordinator sends `Prepare`
//!    to each partition it sent a write (a transaction that wrote on one
//!    partition only cannot be partial, and commits in one phase). A
//!    leading site that wrote ships the writes to its replicas as a
//!    [`Replicated::MpPrepare`] record; the replicas run them and *hold*
//!    them (the transaction open, not committed), and the site answers once
//!    every live replica has them. From then on the partition is **in
//!    doubt**: whichever of its copies survives has the writes and waits for
//!    the outcome. A site that wrote nothing after all answers at once and
//!    is not in doubt (its outcome changes nothing).
//!
//!    **Ahead of the last round.** A range move sends the prepare right
//!    behind each site's last round instead (`Coordinator::round_then_prepare`),
//!    and marks that round (`MpWork::Round`'s `ahead`): the leading site
//!    ships the writes recorded so far, that round's included, *before* it
//!    runs them, so its replicas evict or insert the rows beside it rather
//!    than after it. It is in doubt from then on, whatever the round does.
//!    Such writes travel as [`Replicated::MpPrepareAhead`]. If the round
//!    fails on the leader, it most likely fails on the replicas too (the
//!    same items on the same data), and a replica holds a failed round of
//!    such a record like any prepared writes: the site refuses the prepare
//!    with the round's error, and the rollback that follows undoes it on
//!    every copy. A copy told to *commit* writes that failed on it has
//!    diverged from its leader: it does not confirm the commit, and its host
//!    stops — told on the stream (the replica's apply fails), or told by a
//!    coordinator's settle once it leads (refused, `Host::failed_in_doubt`).
//!    (Without `ahead`, a site whose round failed refuses the prepare and
//!    ships nothing, and a replica that fails an `MpPrepare` record's writes
//!    stops at once, as it does for any record.)
//! 2. **Outcome.** The coordinator commits only if every partition prepared.
//!    The site commits (or rolls back) and ships a
//!    [`Replicated::MpDecide`] record; the replicas finish the same way.
//!
//! Every copy remembers, in its [`InDoubt`] entry, the prepared transaction
//! it waits on and the last few outcomes. A prepared site takes its outcome
//! only from its *decider*, checked under that entry's lock: its host's
//! coordinator while this host coordinates, another host's coordinator
//! while the metadata names it, its leader's stream for a replica. A
//! session that ends (the coordinator's host went away) does not roll a
//! prepared transaction back. The outcome then comes as a `Settle`, from
//!
//! * the coordinator that ran it, when a partition's leader failed: it
//!   settles the partition with its new leader (which holds the writes,
//!   from its replication stream, after the repair step);
//! * a new coordinator, when the old one's host failed: before it runs
//!   anything it asks every partition's leader for its entry and commits
//!   the in-doubt transaction if any copy committed it, rolls it back
//!   otherwise (see `crate::resolve`). The leader answers only once its
//!   metadata names the new coordinator and it has applied everything its
//!   stream brought, so the old one can no longer decide anything there
//!   (a settle is checked like any outcome: it must come from the
//!   coordinator the metadata names): the answer cannot change afterwards.
//!
//! The coordinator commits only after every partition prepared, so "some
//! copy committed" and "some copy rolled back" never both hold, and a
//! transaction rolled back by a new coordinator was never committed
//! anywhere that survived. Its client was answered success by nobody: the
//! old coordinator answers only after every partition confirmed.

use crate::ids::TxnIds;
use crate::messages::{recv_soon, CoordMsg, Decider, InDoubt, MpReply, MpWork, WorkItem, IN_TRANSACTION};
use crate::recorded::{RecordKind, RecordedWrites};
use crate::remote::{frame_record, Replicated};
use crate::site::Site;
use joule_sql::functions::FunctionContext;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};

/// How a multi-partition transaction ended on this site (when it did).
enum Ended {
    /// Committed or rolled back: the site goes back to its inbox.
    Done,
    /// Not yet: keep reading this transaction's work.
    Waiting,
}

impl Site {
    pub(crate) fn run_mp(&mut self, ids: TxnIds, own: Option<Receiver<MpWork>>, by: Decider) {
        // What this site logged before comes before the transaction.
        self.flush_log();
        self.ids.observe(ids);
        self.last_mp = ids.txn_id.0;
        if self.link.is_some() {
            // What a new coordinator reads to issue its ids above (see
            // `crate::resolve`).
            if let Some(shared) = self.shared.upgrade() {
                let mut doubt = lock(&shared.in_doubt[self.partition as usize]);
                doubt.last_begun = doubt.last_begun.max(ids.txn_id.0);
            }
        }
        self.db.set_function_context(FunctionContext {
            now_micros: ids.unique_id.timestamp_micros(),
            random_seed: ids.random_seed(),
        });
        self.db.begin();
        self.next_ring = None;
        // Leading in a cluster: the writes are recorded for the replicas.
        let mut writes: Option<RecordedWrites> =
            self.link.as_ref().is_some_and(|l| l.leads(self.partition)).then(RecordedWrites::default);
        let mut ddl: Vec<Arc<joule_sql::planner::Planned>> = Vec::new();
        let mut prepared = false;
        // A prepare shipped ahead of the last round (see `MpWork::Round`).
        let mut ahead: Option<Ahead> = None;
        // A round that failed here. A leader refuses the prepare sent behind
        // it (`Coordinator::round_then_prepare`) with its error (having
        // shipped nothing, or the writes ahead of the round). A replica
        // holds a failed round of writes shipped ahead of its leader's run
        // (its leader most likely failed them too), and stops its host if
        // told to commit them (see the module doc).
        let mut round_failed: Option<joule_common::Error> = None;
        loop {
            let Ok(work) = recv_soon(own.as_ref().unwrap_or(&self.mp_inbox), IN_TRANSACTION) else {
                // The coordinator is gone and nothing else can reach this
                // transaction (a prepared one is reachable until this host
                // stops): nothing can commit it here.
                let _ = self.db.rollback();
                if prepared {
                    self.forget_doubt(ids.txn_id.0);
                }
                return;
            };
            let ended = match work {
                MpWork::Round { items, reply, ahead: prepare_ahead } => {
                    let results = if prepared {
                        Err(joule_common::err!(ProtocolError, "a round after the transaction was prepared"))
                    } else {
                        for item in &items {
                            note_write(item, &mut writes, &mut ddl);
                        }
                        if let Some(work) = prepare_ahead {
                            ahead = self.ship_ahead(ids, by, &mut writes, work);
                            prepared = matches!(ahead, Some(Ahead::Shipped(_)));
                        }
                        if by == Decider::Leader && joule_common::failpoint::armed("replica-round-fails") {
                            // Fault injection: this copy runs its leader's
                            // writes differently (`crates/cli/tests/cluster_commit.rs`).
                            Err(joule_common::err!(Internal, "failpoint replica-round-fails is armed"))
                        } else {
                            self.run_round(items)
                        }
                    };
                    if let Err(e) = &results {
                        round_failed.get_or_insert_with(|| e.clone());
                    }
                    let _ =
                        reply.as_ref().unwrap_or(&self.mp_reply).send(MpReply { partition: self.partition, results });
                    Ended::Waiting
                }
                MpWork::Prepare { work, done } => {
                    match (ahead.take(), &round_failed) {
                        (Some(Ahead::Refused(e)), _) => drop(done.send(Err(e))),
                        // Only a rollback can follow (shipped ahead, the
                        // replicas hold the failed round until it comes).
                        (_, Some(e)) if by != Decider::Leader => drop(done.send(Err(e.clone()))),
                        (Some(Ahead::Shipped(held)), _) => {
                            let held = held.recv().map(|()| true).map_err(|_| {
                                let p = self.partition;
                                joule_common::err!(Unavailable, "partition {p}: the replicas did not take the writes")
                            });
                            drop(done.send(held))
                        }
                        (None, failed) => prepared = self.prepare(ids, by, &mut writes, work, done, failed.is_some()),
                    }
                    Ended::Waiting
                }
                MpWork::Commit { done, .. } if by == Decider::Leader && prepared && round_failed.is_some() => {
                    // Left unconfirmed: the replica's host stops.
                    eprintln!(
                        "joule: partition {}: told to commit transaction {}, whose writes failed on this copy: it no \
                         longer follows its leader",
                        self.partition, ids.txn_id.0
                    );
                    drop(done);
                    let _ = self.db.rollback();
                    self.forget_doubt(ids.txn_id.0);
                    Ended::Done
                }
                MpWork::Commit { schema, hashinator, install, done } => {
                    let outcome = Outcome { commit: true, schema, hashinator, install, done };
                    if prepared {
                        self.decide(ids, by, outcome, &ddl)
                    } else {
                        self.commit_unprepared(ids, outcome, &ddl, writes.take());
                        Ended::Done
                    }
                }
                MpWork::Rollback { done } if !prepared => {
                    if let Err(e) = self.db.rollback() {
                        eprintln!("joule: partition {}: rollback failed: {e}", self.partition);
                    }
                    if let Some(d) = done {
                        let _ = d.send(());
                    }
                    Ended::Done
                }
                MpWork::Rollback { done } => {
                    let outcome = Outcome { commit: false, schema: None, hashinator: None, install: false, done };
                    self.decide(ids, by, outcome, &ddl)
                }
                MpWork::Abandon if !prepared => {
                    let _ = self.db.rollback();
                    Ended::Done
                }
                // Prepared: the outcome comes from whoever resolves it,
                // unless this host stops.
                MpWork::Abandon if self.host_stops() => {
                    let _ = self.db.rollback();
                    Ended::Done
                }
                MpWork::Abandon => Ended::Waiting,
                MpWork::Settle { txn, commit: true, done, .. }
                    if prepared && txn == ids.txn_id.0 && round_failed.is_some() =>
                {
                    // Refused (its asker stops this host, see
                    // `crate::Host::failed_in_doubt`).
                    eprintln!(
                        "joule: partition {}: a commit of transaction {txn}, whose writes failed on this copy, is \
                         refused: this copy no longer follows its leader's",
                        self.partition
                    );
                    drop(done);
                    Ended::Waiting
                }
                MpWork::Settle { txn, commit, by: settler, done } if prepared && txn == ids.txn_id.0 => {
                    let outcome = Outcome { commit, schema: None, hashinator: None, install: true, done: Some(done) };
                    self.decide(ids, settler, outcome, &ddl)
                }
                MpWork::Settle { txn, .. } => {
                    eprintln!(
                        "joule: partition {}: an outcome for transaction {txn}, which is not the one prepared here \
                         ({}), is ignored",
                        self.partition, ids.txn_id.0
                    );
                    Ended::Waiting
                }
            };
            if let Ended::Done = ended {
                return;
            }
        }
    }

    /// Hold the writes until the outcome (see the module doc): whether this
    /// site is now in doubt.
    fn prepare(
        &mut self,
        ids: TxnIds,
        by: Decider,
        writes: &mut Option<RecordedWrites>,
        work: Sender<MpWork>,
        done: Sender<joule_common::Result<bool>>,
        failed: bool,
    ) -> bool {
        let p = self.partition;
        // A replica prepares what its leader prepared; a leader, if it wrote.
        let wrote = by == Decider::Leader || writes.as_ref().is_some_and(|w| !w.is_empty());
        let (Some(shared), true) = (self.shared.upgrade(), wrote) else {
            let _ = done.send(Ok(false));
            return false;
        };
        let mut records = Vec::new();
        let ship = {
            // Checked under the entry's lock, as outcomes are: a coordinator
            // the metadata replaced must not leave this copy in doubt after
            // the new one has read the entry; nor may a host that stops. A
            // refused prepare keeps the writes (only a rollback follows).
            let mut doubt = lock(&shared.in_doubt[p as usize]);
            if let Some(e) = self.refusal(&doubt, by) {
                let _ = done.send(Err(e));
                return false;
            }
            // What a leader ships its replicas.
            let ship = match (&self.link, writes.take()) {
                (Some(link), Some(items)) if by != Decider::Leader && !items.is_empty() => {
                    if let Err(e) = items.frame(ids, RecordKind::MpPrepare, &mut records) {
                        let _ = done.send(Err(e));
                        return false;
                    }
                    Some(link.clone())
                }
                _ => None,
            };
            doubt.pending = Some((ids.txn_id.0, work));
            doubt.failed = failed.then_some(ids.txn_id.0);
            ship
        };
        match ship {
            Some(link) => {
                link.replicate(
                    p,
                    records,
                    Box::new(move || {
                        // The replicas hold the writes; the coordinator does
                        // not know it.
                        joule_common::failpoint::crash_if_armed("leader-after-prepare");
                        drop(done.send(Ok(true)))
                    }),
                );
            }
            None => drop(done.send(Ok(true))),
        }
        true
    }

    /// Why this site may not prepare for `by` now (checked under its
    /// in-doubt entry's lock, `doubt`), if it may not.
    fn refusal(&self, doubt: &InDoubt, by: Decider) -> Option<joule_common::Error> {
        let p = self.partition;
        if doubt.stopped {
            Some(joule_common::err!(Unavailable, "partition {p}: this host is stopping"))
        } else if !self.may_decide(by) {
            Some(joule_common::err!(
                Unavailable,
                "partition {p}: {by:?} no longer coordinates multi-partition transactions (the metadata moved it)"
            ))
        } else {
            None
        }
    }

    /// Prepare ahead of the last round (see `MpWork::Round`'s `ahead`): a
    /// leading site ships the writes recorded so far — the round's
    /// included, not run yet — to its replicas, which run them beside it,
    /// and is in doubt from then on, as [`Self::prepare`] would make it.
    /// `None` when there is nothing to ship (one host, or no writes): the
    /// prepare that follows is then taken as usual.
    fn ship_ahead(
        &mut self,
        ids: TxnIds,
        by: Decider,
        writes: &mut Option<RecordedWrites>,
        work: Sender<MpWork>,
    ) -> Option<Ahead> {
        let p = self.partition;
        let link = self.link.clone()?;
        if by == Decider::Leader || writes.as_ref().is_none_or(RecordedWrites::is_empty) {
            return None;
        }
        let shared = self.shared.upgrade()?;
        let mut records = Vec::new();
        {
            // As in `prepare`: under the entry's lock.
            let mut doubt = lock(&shared.in_doubt[p as usize]);
            if let Some(e) = self.refusal(&doubt, by) {
                return Some(Ahead::Refused(e));
            }
            if let Err(e) = writes.take()?.frame(ids, RecordKind::MpPrepareAhead, &mut records) {
                return Some(Ahead::Refused(e));
            }
            doubt.pending = Some((ids.txn_id.0, work));
            doubt.failed = None;
        }
        let (held, holds) = std::sync::mpsc::channel();
        link.replicate(
            p,
            records,
            Box::new(move || {
                joule_common::failpoint::crash_if_armed("leader-after-prepare");
                let _ = held.send(());
            }),
        );
        Some(Ahead::Shipped(holds))
    }

    /// Whether `by` may decide a prepared transaction here now.
    fn may_decide(&self, by: Decider) -> bool {
        match (by, &self.link) {
            (Decider::Leader, _) | (_, None) => true,
            (Decider::Coordinator, Some(link)) => link.coordinates(),
            (Decider::RemoteCoordinator(host), Some(link)) => link.coordinator() == Some(host),
        }
    }

    /// End the prepared transaction `ids` as `outcome` says, if `by` may
    /// decide it; the outcome reaches the replicas as a
    /// [`Replicated::MpDecide`] record.
    fn decide(
        &mut self,
        ids: TxnIds,
        by: Decider,
        outcome: Outcome,
        ddl: &[Arc<joule_sql::planner::Planned>],
    ) -> Ended {
        let Some(shared) = self.shared.upgrade() else {
            // The host is gone.
            let _ = self.db.rollback();
            return Ended::Done;
        };
        let p = self.partition;
        let txn = ids.txn_id.0;
        {
            // Checked and recorded under the entry's lock: a new coordinator
            // reading the entry sees this outcome, or this decider refused.
            let mut doubt = lock(&shared.in_doubt[p as usize]);
            if !self.may_decide(by) {
                eprintln!(
                    "joule: partition {p}: transaction {txn} is prepared here; its outcome from {by:?}, which no \
                     longer decides it, is refused (the coordinator now named settles it)"
                );
                return Ended::Waiting;
            }
            doubt.decide(txn, outcome.commit);
            if outcome.commit {
                self.db.commit();
            } else if let Err(e) = self.db.rollback() {
                eprintln!("joule: partition {p}: rollback failed: {e}");
            }
        }
        let leads = self.link.as_ref().is_some_and(|l| l.leads(p));
        if outcome.commit && leads {
            // Committed here, and the replicas do not know it.
            joule_common::failpoint::crash_if_armed("leader-after-commit");
        }
        if outcome.commit {
            self.install(outcome.schema, outcome.hashinator, outcome.install, ddl);
        }
        let done = move || {
            if let Some(d) = outcome.done {
                let _ = d.send(());
            }
        };
        match &self.link {
            Some(link) if leads => {
                let mut records = Vec::new();
                if let Err(e) = frame_record(&Replicated::MpDecide { txn, commit: outcome.commit }, &mut records) {
                    eprintln!("joule: partition {p}: {e}");
                }
                link.replicate(p, records, Box::new(done));
            }
            // A leader deposed since it prepared: its replicas (the new
            // leader among them) hold the writes and will not take this
            // outcome from it. Confirming would tell the coordinator that
            // every copy has it; unconfirmed, the coordinator settles the
            // new leader instead.
            Some(_) if by != Decider::Leader => {
                eprintln!(
                    "joule: partition {p}: transaction {txn} ended here after this host stopped leading the \
                     partition; its new leader learns the outcome from the coordinator"
                );
                drop(done);
            }
            // A replica, or one host: nothing to pass on.
            _ => done(),
        }
        Ended::Done
    }

    /// Commit a transaction that was not prepared (one host; or a cluster
    /// host's site the coordinator did not ask to prepare).
    fn commit_unprepared(
        &mut self,
        ids: TxnIds,
        outcome: Outcome,
        ddl: &[Arc<joule_sql::planner::Planned>],
        writes: Option<RecordedWrites>,
    ) {
        self.db.commit();
        self.install(outcome.schema, outcome.hashinator, outcome.install, ddl);
        let done = move || {
            if let Some(d) = outcome.done {
                let _ = d.send(());
            }
        };
        match (&self.link, writes) {
            (Some(link), Some(items)) => {
                let mut records = Vec::new();
                if !items.is_empty() {
                    // Committed here, and the replicas do not know it.
                    joule_common::failpoint::crash_if_armed("leader-after-commit");
                    if let Err(e) = items.frame(ids, RecordKind::Mp, &mut records) {
                        eprintln!("joule: partition {}: {e}", self.partition);
                    }
                }
                link.replicate(self.partition, records, Box::new(done));
            }
            _ => done(),
        }
    }

    /// Take what a committed transaction changed besides data.
    fn install(
        &mut self,
        schema: Option<Arc<crate::compile::Schema>>,
        hashinator: Option<Arc<crate::hashinator::Hashinator>>,
        install: bool,
        ddl: &[Arc<joule_sql::planner::Planned>],
    ) {
        if let Some(s) = schema {
            self.schema = s;
        }
        if let Some(h) = hashinator.or_else(|| self.next_ring.take()) {
            self.install_ring(h);
        }
        if install && !ddl.is_empty() {
            // Published before the commit is confirmed: what the leader
            // sends next may already use it.
            self.publish_schema();
            let _ = self.coordinator.send(CoordMsg::Install(ddl.to_vec()));
        }
    }

    /// Whether this host stops (nothing will decide what is prepared here).
    fn host_stops(&self) -> bool {
        self.shared.upgrade().is_none_or(|shared| lock(&shared.in_doubt[self.partition as usize]).stopped)
    }

    /// This host stops with `txn` prepared and undecided here.
    fn forget_doubt(&self, txn: u64) {
        if let Some(shared) = self.shared.upgrade() {
            let mut doubt = lock(&shared.in_doubt[self.partition as usize]);
            if doubt.pending.as_ref().is_some_and(|(t, _)| *t == txn) {
                doubt.pending = None;
                doubt.failed = None;
            }
        }
    }
}

/// A leading site's prepare, sent ahead of its last round.
enum Ahead {
    /// The writes are on their way to the replicas: told once every live
    /// replica holds them (dropped if that fails).
    Shipped(Receiver<()>),
    /// Refused before anything was shipped: so is the prepare that follows.
    Refused(joule_common::Error),
}

/// A prepared transaction's outcome, as a site takes it.
struct Outcome {
    commit: bool,
    schema: Option<Arc<crate::compile::Schema>>,
    hashinator: Option<Arc<crate::hashinator::Hashinator>>,
    install: bool,
    done: Option<Sender<()>>,
}

pub(crate) fn lock(m: &Mutex<InDoubt>) -> std::sync::MutexGuard<'_, InDoubt> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Record `item` for the replicas if it writes (`writes` is `None` when
/// nothing is recorded), and keep DDL plans for installing the schema.
fn note_write(item: &WorkItem, writes: &mut Option<RecordedWrites>, ddl: &mut Vec<Arc<joule_sql::planner::Planned>>) {
    let (planned, writing) = match item {
        WorkItem::Execute { planned, .. } => (Some(planned), planned.writes),
        WorkItem::InsertRows { planned, .. } => (Some(planned), true),
        WorkItem::Evict { .. }
        | WorkItem::Admit { .. }
        | WorkItem::NextRing(_)
        | WorkItem::ForgetTokens
        | WorkItem::IndexTokens { .. }
        | WorkItem::JoinPartition { .. } => (None, true),
        _ => (None, false),
    };
    if let Some(p) = planned {
        if matches!(p.kind, joule_sql::planner::PlannedKind::Ddl(_)) {
            ddl.push(p.clone());
        }
    }
    if let (true, Some(w)) = (writing, writes.as_mut()) {
        if let Err(e) = w.push(item) {
            eprintln!("joule: {e}");
        }
    }
}
