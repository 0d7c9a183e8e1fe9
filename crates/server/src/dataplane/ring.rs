//! Recording a move of ranges in the cluster metadata.
//!
//! A multi-partition transaction that moves hashinator ranges (`joule_txn`'s
//! `moverange` module) prepares on every partition and then records its
//! next ring in the metadata ([`Command::SetRing`]). That record is the
//! transaction's commit point: every host routes by the metadata's ring, and
//! a coordinator that takes over after a failure commits a transaction left
//! in doubt if the metadata holds its ring, rolls it back otherwise. The
//! state machine refuses the record from a host that no longer coordinates,
//! so a proposal that applies late cannot contradict what the new
//! coordinator decided.

use super::Link;
use joule_cluster::{Command, CommandResult};
use joule_common::hashinator::Hashinator;
use joule_common::{bail, err, Result};
use std::time::Duration;

/// How long one attempt waits for the metadata group.
const ATTEMPT: Duration = Duration::from_secs(5);
/// Between attempts.
const RETRY: Duration = Duration::from_millis(100);

impl Link {
    /// Record `ring` as the ring transaction `txn` moves to (see the module
    /// doc). Tries for as long as this host coordinates; `OutcomeUnknown`
    /// once it does not and no attempt was answered.
    pub(super) fn record_ring_in_metadata(&self, ring: &Hashinator, txn: u64) -> Result<()> {
        let handle = self.metadata.get().ok_or_else(|| err!(Internal, "the data plane has no metadata member"))?;
        let mut last = String::from("no attempt was answered");
        loop {
            let now = handle.metadata();
            if now.ring_txn == Some(txn) {
                // An earlier attempt applied.
                return Ok(());
            }
            let incarnation = now.hosts.get(&self.me).map(|h| h.incarnation);
            let running = self.host.get().and_then(|h| h.upgrade()).is_some_and(|h| h.is_running());
            let (Some(incarnation), true) = (incarnation, now.mp_coordinator == Some(self.me) && running) else {
                bail!(
                    OutcomeUnknown,
                    "host {} stopped coordinating (or is stopping) while it recorded the move of ranges ({last}); \
                     the coordinator named next commits it if the cluster metadata holds its ring, and rolls it \
                     back otherwise",
                    self.me
                );
            };
            // A ring over more partitions brings joining ones in, one over
            // fewer takes the last ones out (see `joule_txn`'s
            // `partitions`); otherwise ranges moved.
            let command = if ring.partition_count() as usize > now.active_partitions() {
                Command::PartitionsJoined { coordinator: self.me, incarnation, ring: ring.clone(), txn }
            } else if (ring.partition_count() as usize) < now.partitions.len() {
                Command::PartitionsLeft { coordinator: self.me, incarnation, ring: ring.clone(), txn }
            } else {
                Command::SetRing { coordinator: self.me, incarnation, ring: ring.clone(), txn }
            };
            match self.runtime.block_on(handle.propose_within(command, ATTEMPT)) {
                Ok(CommandResult::Applied) => return Ok(()),
                Ok(CommandResult::Refused(why)) if handle.metadata().ring_txn != Some(txn) => {
                    bail!(Unavailable, "the cluster metadata refused the move of ranges, which is rolled back: {why}")
                }
                Ok(CommandResult::Refused(_)) => return Ok(()),
                Err(e) => {
                    last = e.to_string();
                    std::thread::sleep(RETRY);
                }
            }
        }
    }

    /// This host's member of the metadata group, for recording moves.
    pub(crate) fn attach_metadata(&self, handle: joule_cluster::MetadataHandle) {
        let _ = self.metadata.set(handle);
    }
}
