//! Elastic scaling in the metadata: hosts removed from a running cluster,
//! with their partitions.
//!
//! Partition ids are dense (every layer indexes by them: the ring, the
//! initiators' routes, the coordinator's vectors), so a partition can only
//! leave from the end. Hosts that hold every copy of the last partitions
//! and nothing else — for hosts added together by [`Command::AddHosts`],
//! exactly the k+1 of them — leave the way they came, with their
//! partitions (below). Any other hosts leave without taking a partition
//! with them: their copies are made again on the hosts that stay, and
//! then they go (`Removal::copies`, see `crate::copies`); that needs k+1
//! hosts to stay.
//!
//! With their partitions, it takes two commands around a transaction:
//!
//! 1. [`Command::RemoveHosts`] records the removal ([`Removal`]): the hosts
//!    and the partitions that stay (`0..keep`). Nothing moves yet; hosts
//!    cannot be added meanwhile. The server's driver then moves every range
//!    off the leaving partitions (ordinary moves of ranges, `SetRing`).
//! 2. The coordinator runs the transaction that takes the leaving
//!    partitions out of the order (the transaction layer's
//!    `RemovePartitions`: they must own no token and hold no partitioned
//!    row), prepares it everywhere, and commits it by recording
//!    [`Command::PartitionsLeft`]: the same ring, one version on, over the
//!    partitions that stay. The partitions go, the hosts go, and their ids
//!    are kept in [`ClusterMetadata::retired`], never given again. The
//!    metadata group's leader takes retired hosts out of the group
//!    (`voters.rs`); each removed host stops once it no longer votes.
//!
//! [`Command::CancelRemove`] gives up a removal whose partitions have not
//! left yet (the ranges moved off stay where they went; `@Rebalance()`
//! spreads them again).
//!
//! [`Command::RemoveHosts`]: crate::metadata::Command::RemoveHosts
//! [`Command::PartitionsLeft`]: crate::metadata::Command::PartitionsLeft
//! [`Command::CancelRemove`]: crate::metadata::Command::CancelRemove
//! [`Command::AddHosts`]: crate::metadata::Command::AddHosts
//! [`Removal`]: crate::metadata::Removal

use crate::metadata::{refused, ClusterMetadata, CommandResult, HostId, HostState, Removal};
use joule_common::hashinator::Hashinator;
use std::collections::BTreeSet;

impl ClusterMetadata {
    /// The hosts that can be removed now: those holding the copies of the
    /// last partition, if they hold nothing outside the last partitions.
    pub fn removable_hosts(&self) -> Option<BTreeSet<HostId>> {
        let last: BTreeSet<HostId> = self.partitions.last()?.replicas.iter().copied().collect();
        self.kept_without(&last).ok().map(|_| last)
    }

    fn kept_without(&self, hosts: &BTreeSet<HostId>) -> Result<usize, Refusal> {
        if hosts.is_empty() {
            return Err(Refusal::NoHost);
        }
        if let Some(h) = hosts.iter().find(|h| !self.hosts.contains_key(h)) {
            return Err(Refusal::NotMember(*h));
        }
        let only_theirs = |p: &crate::metadata::PartitionPlacement| p.replicas.iter().all(|h| hosts.contains(h));
        let keep = self.partitions.len() - self.partitions.iter().rev().take_while(|p| only_theirs(p)).count();
        let mixed = self.partitions[..keep].iter().any(|p| p.replicas.iter().any(|h| hosts.contains(h)));
        let held: BTreeSet<HostId> = self.partitions[keep..].iter().flat_map(|p| p.replicas.iter().copied()).collect();
        if mixed || held != *hosts {
            return Err(Refusal::NotLast);
        }
        if keep == 0 {
            return Err(Refusal::Everything);
        }
        Ok(keep)
    }
}

/// Why hosts cannot be removed.
enum Refusal {
    NoHost,
    NotMember(HostId),
    NotLast,
    Everything,
}

impl Refusal {
    fn say(&self) -> String {
        match self {
            Refusal::NoHost => "name at least one host to remove".into(),
            Refusal::NotMember(h) => format!("host {h} is not a member"),
            Refusal::NotLast => "the hosts do not hold every copy of the last partitions and nothing else (they \
                                 leave by moving their copies instead)"
                .into(),
            Refusal::Everything => "the cluster cannot remove every host".into(),
        }
    }
}

impl ClusterMetadata {
    pub(crate) fn remove_hosts(&mut self, hosts: &BTreeSet<HostId>) -> CommandResult {
        if !self.formed {
            return refused("the cluster is not formed yet".into());
        }
        if let Some(r) = &self.removing {
            return refused(format!("hosts {:?} are being removed already: one removal at a time", r.hosts));
        }
        if self.joining() {
            return refused("hosts added before are still joining: remove hosts once they have".into());
        }
        if let Some((h, info)) = self.hosts.iter().find(|(_, i)| i.state != HostState::Up) {
            return refused(format!(
                "host {h} is {:?}: every host must be up to remove hosts (their ranges move to the others)",
                info.state
            ));
        }
        match self.kept_without(hosts) {
            Ok(keep) => {
                self.removing = Some(Removal { hosts: hosts.clone(), keep, copies: false, ..Default::default() });
                CommandResult::Applied
            }
            // Not the last added: their copies are made again elsewhere.
            Err(Refusal::NotLast) => match self.copies_can_leave(hosts) {
                Ok(()) => {
                    self.removing = Some(Removal {
                        hosts: hosts.clone(),
                        keep: self.partitions.len(),
                        copies: true,
                        ..Default::default()
                    });
                    CommandResult::Applied
                }
                Err(why) => refused(why),
            },
            Err(why) => refused(why.say()),
        }
    }

    pub(crate) fn partitions_left(
        &mut self,
        coordinator: HostId,
        incarnation: u64,
        ring: &Hashinator,
        txn: u64,
    ) -> CommandResult {
        let Some(removal) = self.removing.clone() else {
            return refused("no hosts are being removed".into());
        };
        if removal.copies {
            return refused(format!("hosts {:?} leave by moving their copies: no partition leaves", removal.hosts));
        }
        if let CommandResult::Refused(why) = self.coordinates(coordinator, incarnation) {
            return refused(why);
        }
        let current = match self.current_ring() {
            Ok(r) => r,
            Err(e) => return refused(format!("the current ring is not valid: {e}")),
        };
        if ring.version() != current.version() + 1 {
            return refused(format!("the ring is at version {}, not {}", current.version(), ring.version() - 1));
        }
        if ring.partition_count() as usize != removal.keep || ring.ring() != current.ring() {
            return refused(format!(
                "the ring after the removal must be the current one over the {} partitions that stay",
                removal.keep
            ));
        }
        if let Some((_, p)) = current.ring().iter().find(|(_, p)| *p as usize >= removal.keep) {
            return refused(format!("partition {p} still owns ranges: they move off before it leaves"));
        }
        self.partitions.truncate(removal.keep);
        for h in &removal.hosts {
            self.hosts.remove(h);
            self.retired.insert(*h);
        }
        self.removing = None;
        self.ring = Some(ring.clone());
        self.ring_txn = Some(txn);
        if self.mp_coordinator.is_some_and(|c| !self.hosts.contains_key(&c)) {
            self.mp_coordinator = self.hosts.iter().find(|(_, h)| h.state == HostState::Up).map(|(id, _)| *id);
        }
        CommandResult::Applied
    }
}

#[cfg(test)]
mod tests {
    use crate::elastic::tests::{joined, new_hosts, refused};
    use crate::metadata::tests::{check, formed, hosts};
    use crate::metadata::{ClusterMetadata, Command, CommandResult, HostId};
    use joule_common::hashinator::Hashinator;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// Hosts `from..from+n` added, and their partitions joined.
    fn add(m: &mut ClusterMetadata, from: u64, n: u64, txn: u64) {
        assert_eq!(m.apply(&Command::AddHosts { hosts: new_hosts(from, n) }), CommandResult::Applied);
        assert_eq!(m.apply(&joined(m, txn)), CommandResult::Applied);
    }

    /// The ring over `keep` partitions' worth of tokens, as a driver moves
    /// it before the partitions leave: one version on, the same count.
    fn drained(m: &ClusterMetadata, keep: usize) -> Hashinator {
        let current = m.current_ring().unwrap();
        let even = Hashinator::even(keep as u32, 1).unwrap();
        Hashinator::over(current.version() + 1, even.ring().to_vec(), m.partitions.len() as u32).unwrap()
    }

    fn set_ring(m: &ClusterMetadata, ring: Hashinator, txn: u64) -> Command {
        let coordinator = m.mp_coordinator.unwrap();
        Command::SetRing { coordinator, incarnation: m.hosts[&coordinator].incarnation, ring, txn }
    }

    fn left(m: &ClusterMetadata, keep: usize, txn: u64) -> Command {
        let current = m.current_ring().unwrap();
        let coordinator = m.mp_coordinator.unwrap();
        Command::PartitionsLeft {
            coordinator,
            incarnation: m.hosts[&coordinator].incarnation,
            ring: Hashinator::over(current.version() + 1, current.ring().to_vec(), keep as u32).unwrap(),
            txn,
        }
    }

    #[test]
    fn the_hosts_added_last_leave_with_their_partitions() {
        let mut m = formed(2, 2, 0);
        add(&mut m, 3, 1, 1);
        let grown = m.clone();
        assert_eq!(m.removable_hosts(), Some([3].into()));
        // Hosts of the formation hold partitions among the ones that stay:
        // they leave by moving their copies instead (`crate::copies`).
        for hosts in [[2].into(), [2, 3].into()] {
            let mut other = m.clone();
            assert_eq!(other.apply(&Command::RemoveHosts { hosts }), CommandResult::Applied);
            assert!(other.removing.as_ref().is_some_and(|r| r.copies && r.keep == other.partitions.len()));
        }
        assert!(refused(&mut m, &Command::RemoveHosts { hosts: [9].into() }).contains("not a member"));
        assert!(refused(&mut m, &Command::RemoveHosts { hosts: [].into() }).contains("at least one"));
        let c = left(&m, 4, 5);
        assert!(refused(&mut m, &c).contains("no hosts"));
        assert_eq!(m.apply(&Command::RemoveHosts { hosts: [3].into() }), CommandResult::Applied);
        assert_eq!(m.removing.as_ref().map(|r| r.keep), Some(4));
        assert!(refused(&mut m, &Command::RemoveHosts { hosts: [3].into() }).contains("one removal at a time"));
        let mut more = hosts(4);
        more.retain(|id, _| *id == 4);
        assert!(refused(&mut m, &Command::AddHosts { hosts: more }).contains("being removed"));
        // A range moved to the leaving partition: no ring over the
        // partitions that stay can name it, so it must move off first.
        let moved = m.current_ring().unwrap().with_range_moved(0, 99, 4).unwrap();
        assert_eq!(m.apply(&set_ring(&m, moved, 4)), CommandResult::Applied);
        let current = m.current_ring().unwrap();
        assert!(Hashinator::over(current.version() + 1, current.ring().to_vec(), 4).is_err());
        assert_eq!(m.apply(&set_ring(&m, drained(&m, 4), 5)), CommandResult::Applied);
        // Only the coordinator; only the current ring over what stays.
        let mut other = left(&m, 4, 6);
        if let Command::PartitionsLeft { coordinator, .. } = &mut other {
            *coordinator = 3;
        }
        assert!(refused(&mut m, &other).contains("no longer coordinates"));
        let c = left(&m, 5, 6);
        assert!(refused(&mut m, &c).contains("partitions that stay"));
        assert_eq!(m.apply(&left(&m, 4, 6)), CommandResult::Applied);
        check(&m);
        assert_eq!(m.partitions.len(), 4);
        assert_eq!(m.hosts.keys().copied().collect::<Vec<HostId>>(), vec![1, 2]);
        assert_eq!(m.retired, [3].into());
        assert_eq!((m.removing.clone(), m.ring_txn, m.current_ring().unwrap().partition_count()), (None, Some(6), 4));
        // The cluster grows again; the retired id is not given again (the
        // admission picks past `retired`), and the new host can leave too.
        add(&mut m, 4, 1, 7);
        assert_eq!(m.partitions.len(), grown.partitions.len());
        assert_eq!(m.removable_hosts(), Some([4].into()));
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<ClusterMetadata>(&json).unwrap(), m);
    }

    #[test]
    fn k_plus_one_hosts_leave_together_and_a_removal_can_be_given_up() {
        let mut m = formed(2, 2, 1);
        add(&mut m, 3, 2, 1);
        // One of the two hosts added last: its copies move instead.
        let mut one = m.clone();
        assert_eq!(one.apply(&Command::RemoveHosts { hosts: [3].into() }), CommandResult::Applied);
        assert!(one.removing.as_ref().is_some_and(|r| r.copies));
        assert!(refused(&mut m, &Command::CancelRemove).contains("no hosts"));
        assert_eq!(m.apply(&Command::HostFailed { host: 1, incarnation: None }), CommandResult::Applied);
        assert!(refused(&mut m, &Command::RemoveHosts { hosts: [3, 4].into() }).contains("every host must be up"));
        let mut fresh = formed(2, 2, 1);
        add(&mut fresh, 3, 2, 1);
        let before = fresh.clone();
        assert_eq!(fresh.apply(&Command::RemoveHosts { hosts: [3, 4].into() }), CommandResult::Applied);
        assert_eq!(fresh.apply(&Command::CancelRemove), CommandResult::Applied);
        assert_eq!(fresh.version, before.version + 2, "two commands applied");
        fresh.version = before.version;
        assert_eq!(fresh, before);
        // The formation's hosts alone can never all go.
        let mut single = formed(1, 2, 0);
        assert!(refused(&mut single, &Command::RemoveHosts { hosts: [1].into() }).contains("every host"));
    }

    proptest! {
        /// Additions then removals, last added first, with the drain in
        /// between: every step keeps the placement invariants, and the
        /// cluster ends as it formed but for the ring's version and the
        /// retired ids.
        #[test]
        fn additions_and_removals_undo_each_other(
            n in 1u64..5, sites in 1u32..4, k in 0u32..3, additions in 1u64..4,
        ) {
            prop_assume!((k as u64) < n);
            let mut m = formed(n, sites, k);
            let start = m.clone();
            let copies = k as u64 + 1;
            let mut txn = 0;
            for a in 0..additions {
                txn += 1;
                add(&mut m, n + 1 + a * copies, copies, txn);
                check(&m);
            }
            for a in (0..additions).rev() {
                let leaving: BTreeSet<HostId> = (n + 1 + a * copies..n + 1 + (a + 1) * copies).collect();
                prop_assert_eq!(m.removable_hosts(), Some(leaving.clone()));
                prop_assert_eq!(m.apply(&Command::RemoveHosts { hosts: leaving }), CommandResult::Applied);
                let keep = m.removing.as_ref().unwrap().keep;
                txn += 1;
                prop_assert_eq!(m.apply(&set_ring(&m, drained(&m, keep), txn)), CommandResult::Applied);
                txn += 1;
                prop_assert_eq!(m.apply(&left(&m, keep, txn)), CommandResult::Applied);
                check(&m);
            }
            prop_assert_eq!(&m.hosts, &start.hosts);
            prop_assert_eq!(&m.partitions, &start.partitions);
            prop_assert_eq!(m.retired.len() as u64, additions * copies);
        }
    }
}
