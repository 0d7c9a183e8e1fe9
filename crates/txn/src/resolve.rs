//! The coordinator's side of a cluster's two-phase commit (the sites' side,
//! and why it is needed, is in `crate::participant`): preparing the
//! partitions that were sent a write, sending the outcome and *settling*
//! the partitions that did not confirm it, and — on a host that has just
//! become the coordinator — resolving what the previous coordinator left in
//! doubt.
//!
//! **Settling.** A partition whose leader failed after it prepared has a
//! new leader holding the writes (the repair step brought every surviving
//! copy to the same last batch), waiting for the outcome. The coordinator
//! sends it the outcome ([`ClusterLink::settle`]) until it is confirmed:
//! for up to [`PATIENCE`] before it answers the client (success only if
//! every partition that wrote confirmed the commit; `OutcomeUnknown`
//! otherwise), then every [`RETRY_EVERY`] for as long as this host
//! coordinates, refusing new transactions as `Unavailable` meanwhile (the
//! partition in doubt could not take part in them).
//!
//! **Resolving.** A new coordinator asks every partition's leader what it
//! holds in doubt and how it ended its last prepared transactions
//! ([`ClusterLink::doubt`]). A transaction some copy committed is committed
//! everywhere it is in doubt; any other is rolled back — once every
//! partition has answered, since one not heard from may have committed it:
//! its old coordinator decided to commit only after every partition
//! prepared, and a copy that committed says so. Nothing else runs before
//! this is done; it is tried again until it is. The answers also carry the
//! highest transaction id each partition knows of, and the new
//! coordinator's ids continue above them all: every host's coordinator
//! counts its own ids, and an id that named a transaction of the previous
//! coordinator as well would let that one's outcome decide this one.

use crate::coordinator::Coordinator;
use crate::messages::MpWork;
use crate::remote::DoubtReport;
use joule_common::{bail, err, Error, ErrorCode, Result};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How long the coordinator keeps trying to settle a partition, or to ask
/// one what it holds in doubt, before it answers its client and goes back
/// to its inbox (trying again every [`RETRY_EVERY`], and refusing new
/// transactions until it is done).
const PATIENCE: Duration = Duration::from_secs(10);
/// Between attempts.
const RETRY: Duration = Duration::from_millis(100);
/// Between attempts while the coordinator waits for work.
pub(crate) const RETRY_EVERY: Duration = Duration::from_millis(500);

impl Coordinator {
    /// Ask every partition that was sent a write to prepare (a cluster's
    /// transaction, after its rounds), unless it was told already behind
    /// its last round ([`Self::round_then_prepare`]), and gather every
    /// answer: per partition, whether it may be in doubt (it wrote, or it
    /// failed to answer and may have prepared), or the first failure.
    pub(crate) fn prepare_all(&mut self) -> (Vec<bool>, Option<Error>) {
        let n = self.sites.len();
        let mut waits = Vec::with_capacity(n);
        let early: Vec<usize> = self.early_prepared.iter().map(|(p, _)| *p).collect();
        for p in (0..n).filter(|p| self.wrote[*p] && !early.contains(p)) {
            let (done, prepared) = std::sync::mpsc::channel();
            let work = self.work_target(p).clone();
            let _ = work.send(MpWork::Prepare { work: work.clone(), done });
            waits.push((p, prepared));
            if waits.len() == 1 && joule_common::failpoint::armed("coordinator-after-first-prepare") {
                // One partition in doubt, the others never asked.
                let _ = waits[0].1.recv();
                joule_common::failpoint::crash("coordinator-after-first-prepare");
            }
        }
        waits.append(&mut self.early_prepared);
        let mut in_doubt = vec![false; n];
        let mut failure = None;
        for (p, prepared) in waits {
            let e = match prepared.recv() {
                Ok(Ok(wrote)) => {
                    in_doubt[p] = wrote;
                    continue;
                }
                Ok(Err(e)) => e,
                Err(_) => err!(Unavailable, "partition {p}'s site stopped"),
            };
            in_doubt[p] = true;
            failure.get_or_insert_with(|| {
                let code = match e.code() {
                    ErrorCode::OutcomeUnknown => ErrorCode::Unavailable,
                    c => c,
                };
                Error::new(code, format!("partition {p} could not prepare, and the transaction was rolled back: {e}"))
            });
        }
        // Fault injection: every partition prepared, the outcome not yet
        // sent (`crates/cli/tests/cluster_commit.rs`).
        joule_common::failpoint::pause_while_armed("coordinator-paused-after-prepare", Duration::from_secs(60));
        (in_doubt, failure)
    }

    /// Settle the partitions in doubt that did not confirm the outcome
    /// `commit` of `ids`: whether every one of them confirmed it.
    pub(crate) fn settle_unconfirmed(
        &mut self,
        ids: crate::TxnIds,
        commit: bool,
        confirmed: &[bool],
        in_doubt: &[bool],
    ) -> bool {
        let mut all = true;
        for p in 0..in_doubt.len() {
            if in_doubt[p] && !confirmed[p] {
                all &= self.settle(p as u32, ids.txn_id.0, commit);
            }
        }
        all
    }

    /// Roll back on every partition; wait for those in doubt to confirm
    /// (settling them if they do not).
    pub(crate) fn rollback_prepared(&mut self, ids: crate::TxnIds, in_doubt: &[bool]) {
        self.rollback_schema();
        let mut waits = Vec::with_capacity(in_doubt.len());
        for p in (0..in_doubt.len()).filter(|p| !self.released[*p]) {
            let (done, confirmed) = std::sync::mpsc::channel();
            let _ = self.work_target(p).send(MpWork::Rollback { done: Some(done) });
            waits.push((p, confirmed));
        }
        // Released partitions (never in doubt) took their outcome already.
        let mut confirmed = vec![true; in_doubt.len()];
        for (p, c) in waits {
            confirmed[p] = c.recv().is_ok();
        }
        self.settle_unconfirmed(ids, false, &confirmed, in_doubt);
    }

    /// Roll back a transaction no partition prepared: every site not
    /// released is told, and nothing is waited for.
    pub(crate) fn rollback(&mut self) {
        self.rollback_schema();
        for p in (0..self.sites.len()).filter(|p| !self.released[*p]) {
            let _ = self.work_target(p).send(MpWork::Rollback { done: None });
        }
    }

    /// Undo what the transaction did to the coordinator's copy of the schema.
    pub(crate) fn rollback_schema(&mut self) {
        if self.schema_db.in_transaction() {
            if let Err(e) = self.schema_db.rollback() {
                eprintln!("joule: coordinator: schema rollback failed: {e}");
            }
        }
    }

    /// Tell partition `p` to prepare now, behind the round just sent to it
    /// (see [`Self::round_then_prepare`]).
    pub(crate) fn prepare_early(&mut self, p: usize) {
        let (done, prepared) = std::sync::mpsc::channel();
        let work = self.work_target(p).clone();
        let _ = work.send(MpWork::Prepare { work: work.clone(), done });
        self.early_prepared.push((p, prepared));
    }

    /// A transaction that failed before [`Self::prepare_all`]: per
    /// partition, whether one told to prepare early may be in doubt (it
    /// prepared writes — shipped ahead of a round that then failed, too —
    /// or refused, or did not answer).
    pub(crate) fn early_in_doubt(&mut self) -> Vec<bool> {
        let mut in_doubt = vec![false; self.sites.len()];
        for (p, prepared) in self.early_prepared.drain(..) {
            in_doubt[p] = !matches!(prepared.recv(), Ok(Ok(false)));
        }
        in_doubt
    }

    /// Have partition `p`'s leader end `txn` as `commit` says, trying for
    /// [`PATIENCE`]: whether it confirmed. One not confirmed by then is
    /// owed (tried again before anything else runs); one this host no
    /// longer coordinates is left to the next coordinator.
    fn settle(&mut self, p: u32, txn: u64, commit: bool) -> bool {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self.try_settle(p, txn, commit) {
                Settled::Yes => return true,
                Settled::Never => return false,
                Settled::NotYet if Instant::now() > deadline => {
                    self.unsettled.push((p, txn, commit));
                    return false;
                }
                Settled::NotYet => std::thread::sleep(RETRY),
            }
        }
    }

    fn try_settle(&self, p: u32, txn: u64, commit: bool) -> Settled {
        let Some(link) = &self.shared.link else { return Settled::Never };
        let outcome = if commit { "commit" } else { "rollback" };
        if !link.coordinates() || !self.shared.running.load(Ordering::SeqCst) {
            eprintln!(
                "joule: coordinator: partition {p}: the {outcome} of transaction {txn} is left to the next \
                 coordinator (this host no longer coordinates)"
            );
            return Settled::Never;
        }
        match link.settle(p, txn, commit) {
            Ok(()) => {
                eprintln!("joule: coordinator: partition {p}: transaction {txn} settled ({outcome}) with its leader");
                Settled::Yes
            }
            Err(e) if e.code() == ErrorCode::Internal => {
                eprintln!("joule: coordinator: partition {p}: cannot settle transaction {txn} ({outcome}): {e}");
                Settled::Never
            }
            Err(_) => Settled::NotYet,
        }
    }

    /// Whether this coordinator owes partitions a resolution or an outcome.
    pub(crate) fn owes(&self) -> bool {
        !self.unsettled.is_empty() || self.shared.resolve.load(Ordering::SeqCst)
    }

    /// Resolve (if this host has just become the coordinator) and settle
    /// what is owed; an error says what is still owed — no new transaction
    /// runs meanwhile (the partitions in doubt could not take part).
    pub(crate) fn catch_up(&mut self) -> Result<()> {
        if self.shared.resolve.swap(false, Ordering::SeqCst) && !self.resolve_in_doubt() {
            self.shared.resolve.store(true, Ordering::SeqCst);
        }
        let owed = std::mem::take(&mut self.unsettled);
        for (p, txn, commit) in owed {
            if let Settled::NotYet = self.try_settle(p, txn, commit) {
                self.unsettled.push((p, txn, commit));
            }
        }
        if let Some((p, txn, _)) = self.unsettled.first() {
            bail!(
                Unavailable,
                "the coordinator is still settling transaction {txn} on partition {p} after a failure; try again"
            );
        }
        if self.shared.resolve.load(Ordering::SeqCst) {
            bail!(Unavailable, "the new coordinator is still resolving what the previous one left in doubt; try again");
        }
        Ok(())
    }

    /// This host has just become the coordinator: settle what the previous
    /// one left in doubt (see the module doc). Whether that is done (it is
    /// tried again otherwise).
    fn resolve_in_doubt(&mut self) -> bool {
        let Some(link) = self.shared.link.clone() else { return true };
        // Told just before this host routes by the metadata that names it.
        let named = Instant::now() + Duration::from_secs(5);
        while !link.coordinates() && Instant::now() < named {
            std::thread::sleep(Duration::from_millis(10));
        }
        // Joining partitions too: a join transaction prepared there (see
        // `crate::partitions`) is decided like any other.
        self.follow_partitions();
        let n = self.shared.known_partitions() as u32;
        let mut reports: Vec<(u32, DoubtReport)> = Vec::with_capacity(n as usize);
        let mut unasked = Vec::new();
        for p in 0..n {
            let deadline = Instant::now() + PATIENCE;
            loop {
                if !link.coordinates() || !self.shared.running.load(Ordering::SeqCst) {
                    // The next coordinator resolves.
                    return true;
                }
                match link.doubt(p) {
                    Ok(r) => {
                        reports.push((p, r));
                        break;
                    }
                    Err(e) if Instant::now() > deadline => {
                        eprintln!("joule: coordinator: partition {p} did not say what it holds in doubt: {e}");
                        unasked.push(p);
                        break;
                    }
                    Err(_) => std::thread::sleep(RETRY),
                }
            }
        }
        // This coordinator's ids continue above every id a partition knows
        // of. Each coordinator counts its own, and a reused id would name
        // two transactions: the outcome the old one left in a partition's
        // memory would decide the new one (the fault run found a
        // transaction committed on one partition that way, and never
        // prepared on the other).
        // The metadata's record of the last ring moved names an id too (it
        // outlives every partition's memory: a whole cluster restarted
        // without its data).
        let ring_txn = link.ring_txn().unwrap_or(0);
        if let Some(highest) = reports.iter().map(|(_, r)| r.highest).chain([ring_txn]).max() {
            self.ids.continue_after(crate::ids::TxnId(highest));
        }
        let pending: std::collections::BTreeSet<u64> = reports.iter().filter_map(|(_, r)| r.pending).collect();
        let done = unasked.is_empty();
        for txn in pending {
            let committed_on: Vec<u32> =
                reports.iter().filter(|(_, r)| r.decided.contains(&(txn, true))).map(|(p, _)| *p).collect();
            // A move of ranges committed once the metadata took its ring.
            let in_metadata = link.ring_txn() == Some(txn);
            let commit = !committed_on.is_empty() || in_metadata;
            if !commit && !unasked.is_empty() {
                // A partition not heard from may have committed it.
                eprintln!(
                    "joule: coordinator: transaction {txn} is in doubt, and partitions {unasked:?} did not say how \
                     it ended there: asking again"
                );
                continue;
            }
            let waiting: Vec<u32> = reports.iter().filter(|(_, r)| r.pending == Some(txn)).map(|(p, _)| *p).collect();
            let why = if in_metadata {
                "the cluster metadata holds the ring it moved to".to_string()
            } else if commit {
                format!("partitions {committed_on:?} committed it")
            } else {
                "no partition committed it".into()
            };
            eprintln!(
                "joule: coordinator: transaction {txn} was left in doubt on partitions {waiting:?} by the previous \
                 coordinator: {} it ({why})",
                if commit { "committing" } else { "rolling back" }
            );
            for p in waiting {
                self.settle(p, txn, commit);
            }
        }
        done
    }
}

/// How one attempt to settle a partition went.
enum Settled {
    Yes,
    /// Tried again later.
    NotYet,
    /// Not this coordinator's to settle (any more), or impossible.
    Never,
}

impl crate::Host {
    /// This host has just become its cluster's coordinator: before its
    /// coordinator runs anything, it settles what the previous one left in
    /// doubt. Call before routing multi-partition work here.
    pub fn take_over_coordination(&self) {
        let shared = self.shared();
        shared.resolve.store(true, Ordering::SeqCst);
        let _ = shared.coordinator.send(crate::messages::CoordMsg::Resolve);
    }
}

/// A failure for a transaction whose outcome is not known everywhere.
pub(crate) fn unconfirmed() -> Error {
    err!(
        OutcomeUnknown,
        "a host failed while this transaction committed, and not every partition confirmed it (the coordinator \
         keeps settling it, or the next coordinator does)"
    )
}
