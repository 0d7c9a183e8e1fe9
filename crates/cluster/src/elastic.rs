//! Elastic scaling in the metadata: hosts added to a running cluster with
//! partitions of their own.
//!
//! Adding hosts takes two commands, because new partitions must enter the
//! order of multi-partition transactions at one point before the metadata
//! may count them:
//!
//! 1. [`Command::AddHosts`] admits k+1 new hosts at once — so that each new
//!    partition has its k+1 copies on distinct hosts, all of them new, and
//!    no existing host takes on more than its sites. It appends
//!    `sites_per_host` partitions, each with a copy on every new host,
//!    leaders spread over them, marked *joining*
//!    ([`PartitionPlacement::joining`]): hosts may reach them (their
//!    leaders are named) but no multi-partition transaction includes them
//!    and the ring gives them no token.
//! 2. The coordinator runs the transaction that brings them in (their
//!    sites take the schema and the replicated tables' rows, see the
//!    transaction layer's `partitions.rs`), prepares it everywhere, and
//!    commits it by recording [`Command::PartitionsJoined`]: the same ring,
//!    one version on, over every partition. Like [`Command::SetRing`] it is
//!    refused unless its proposer still coordinates at that incarnation,
//!    and it names the transaction (`ring_txn`), so a coordinator that
//!    takes over decides a transaction left in doubt by what it finds here.
//!
//! A join that cannot finish (every new host failed first) is undone by
//! [`Command::AbandonJoin`], which the coordinator host proposes (the
//! server's `elastic.rs`): the joining partitions and the hosts added with
//! them are removed, and those hosts' ids retired. Whichever of
//! `PartitionsJoined` and `AbandonJoin` applies first wins; the other is
//! refused.
//!
//! One join at a time: `AddHosts` is refused while partitions are joining,
//! while any host is not up (a k-safe copy of every new partition needs
//! every host it names, and a restarting cluster must settle first) and
//! past the bounds. Moving ranges waits while partitions join.
//!
//! `admission.rs` proposes `AddHosts` once k+1 new hosts have caught up
//! with the group; the hosts' side of a join (proxies for the new
//! partitions, the coordinator's join transaction that proposes
//! `PartitionsJoined`) is the server's `elastic.rs`. Removing hosts is
//! `removal.rs`: the reverse (the hosts added last leave with their
//! partitions; others by having their copies made again, `copies.rs`).

use crate::metadata::{
    refused, ClusterMetadata, CommandResult, HostId, HostInfo, HostState, PartitionPlacement, MAX_HOSTS, MAX_PARTITIONS,
};
use joule_common::hashinator::Hashinator;
use std::collections::BTreeMap;

impl ClusterMetadata {
    /// Partitions that are in the transaction order (every partition but
    /// those still joining, which come last).
    pub fn active_partitions(&self) -> usize {
        self.partitions.iter().take_while(|p| !p.joining).count()
    }

    /// Whether hosts added by [`Command::AddHosts`] have partitions still
    /// joining.
    ///
    /// [`Command::AddHosts`]: crate::metadata::Command::AddHosts
    pub fn joining(&self) -> bool {
        self.partitions.iter().any(|p| p.joining)
    }

    /// The ring the hosts route by: the recorded one, or the even ring of
    /// version 1 over the partitions the cluster formed with.
    pub fn current_ring(&self) -> Result<Hashinator, joule_common::Error> {
        match &self.ring {
            Some(ring) => Ok(ring.clone()),
            None => Hashinator::even(self.active_partitions().max(1) as u32, 1),
        }
    }

    pub(crate) fn add_hosts(&mut self, hosts: &BTreeMap<HostId, HostInfo>) -> CommandResult {
        let copies = self.kfactor as usize + 1;
        if !self.formed {
            return refused("the cluster is not formed yet".into());
        }
        if hosts.len() != copies {
            return refused(format!(
                "hosts are added k+1 at a time: {copies} with k-factor {}, not {}",
                self.kfactor,
                hosts.len()
            ));
        }
        if let Some(h) = hosts.keys().find(|h| self.hosts.contains_key(h)) {
            return refused(format!("host {h} is a member already"));
        }
        if self.joining() {
            return refused("hosts added before are still joining: one addition at a time".into());
        }
        if self.removing.is_some() {
            return refused("hosts are being removed: add hosts once they have left".into());
        }
        if let Some((h, info)) = self.hosts.iter().find(|(_, i)| i.state != HostState::Up) {
            return refused(format!(
                "host {h} is {:?}: every host must be up to add hosts (bring it back first)",
                info.state
            ));
        }
        if self.hosts.len() + hosts.len() > MAX_HOSTS {
            return refused(format!("at most {MAX_HOSTS} hosts, not {}", self.hosts.len() + hosts.len()));
        }
        let new = self.sites_per_host as usize;
        if self.partitions.len() + new > MAX_PARTITIONS {
            return refused(format!("at most {MAX_PARTITIONS} partitions, not {}", self.partitions.len() + new));
        }
        let ids: Vec<HostId> = hosts.keys().copied().collect();
        for (id, h) in hosts {
            self.hosts.insert(*id, HostInfo { state: HostState::Up, incarnation: 0, ..h.clone() });
        }
        let first = self.partitions.len();
        for i in 0..new {
            // Rotated, so that the first replicas (and so the leaders) take
            // turns over the new hosts.
            let replicas = (0..copies).map(|r| ids[(i + r) % copies]).collect();
            self.partitions.push(PartitionPlacement {
                replicas,
                leader: None,
                stale: Default::default(),
                joining: true,
                adding: Vec::new(),
                copy_round: 0,
            });
        }
        for p in first..self.partitions.len() {
            self.partitions[p].leader = self.least_loaded_live_replica(p);
        }
        CommandResult::Applied
    }

    pub(crate) fn partitions_joined(
        &mut self,
        coordinator: HostId,
        incarnation: u64,
        ring: &Hashinator,
        txn: u64,
    ) -> CommandResult {
        if !self.joining() {
            return refused("no partitions are joining".into());
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
        if ring.partition_count() as usize != self.partitions.len() || ring.ring() != current.ring() {
            return refused(format!(
                "the joined partitions' ring must be the current one over all {} partitions",
                self.partitions.len()
            ));
        }
        for p in &mut self.partitions {
            p.joining = false;
        }
        self.ring = Some(ring.clone());
        self.ring_txn = Some(txn);
        CommandResult::Applied
    }

    pub(crate) fn abandon_join(&mut self) -> CommandResult {
        if !self.joining() {
            return refused("no partitions are joining".into());
        }
        let active = self.active_partitions();
        let added: Vec<HostId> = self.partitions[active..].iter().flat_map(|p| p.replicas.iter().copied()).collect();
        self.partitions.truncate(active);
        for h in added {
            // Only hosts that hold nothing else: the ones added with them.
            // Their ids are retired like removed hosts' (never given again,
            // out of the metadata group's voters, and a host that comes
            // back finds itself retired and stops).
            if !self.partitions.iter().any(|p| p.replicas.contains(&h)) {
                self.hosts.remove(&h);
                self.retired.insert(h);
            }
        }
        if self.mp_coordinator.is_some_and(|c| !self.hosts.contains_key(&c)) {
            self.mp_coordinator = self.hosts.iter().find(|(_, h)| h.state == HostState::Up).map(|(id, _)| *id);
        }
        CommandResult::Applied
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::metadata::tests::{check, formed, hosts};
    use crate::metadata::{ClusterMetadata, Command, CommandResult, HostId, HostInfo};
    use joule_common::hashinator::Hashinator;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// Hosts `from..from+n`, as `AddHosts` takes them.
    pub(crate) fn new_hosts(from: u64, n: u64) -> BTreeMap<HostId, HostInfo> {
        let mut all = hosts(from + n - 1);
        all.retain(|id, _| *id >= from);
        all
    }

    pub(crate) fn joined(m: &ClusterMetadata, txn: u64) -> Command {
        let ring = m.current_ring().unwrap();
        let next = Hashinator::over(ring.version() + 1, ring.ring().to_vec(), m.partitions.len() as u32).unwrap();
        Command::PartitionsJoined {
            coordinator: m.mp_coordinator.unwrap(),
            incarnation: m.hosts[&m.mp_coordinator.unwrap()].incarnation,
            ring: next,
            txn,
        }
    }

    /// Why `c` was refused (it must be), checking it changed nothing.
    pub(crate) fn refused(m: &mut ClusterMetadata, c: &Command) -> String {
        let before = m.clone();
        match m.apply(c) {
            CommandResult::Refused(why) => {
                assert_eq!(*m, before, "a refused command changes nothing");
                why
            }
            r => panic!("{c:?} was not refused: {r:?}"),
        }
    }

    #[test]
    fn hosts_join_k_plus_one_at_a_time_with_partitions_of_their_own() {
        let mut m = formed(3, 2, 1);
        let ring = m.current_ring().unwrap();
        assert!(refused(&mut m, &Command::AddHosts { hosts: new_hosts(4, 1) }).contains("k+1 at a time"));
        assert!(refused(&mut m, &Command::AddHosts { hosts: new_hosts(3, 2) }).contains("member already"));
        assert_eq!(m.apply(&Command::AddHosts { hosts: new_hosts(4, 2) }), CommandResult::Applied);
        check(&m);
        assert_eq!(m.partitions.len(), 5);
        assert_eq!(m.active_partitions(), 3);
        assert!(m.joining());
        for p in &m.partitions[3..] {
            assert!(p.joining);
            assert_eq!(p.replicas.iter().copied().collect::<std::collections::BTreeSet<_>>(), [4, 5].into());
        }
        // Each new host leads one of the two new partitions.
        assert_ne!(m.partitions[3].leader, m.partitions[4].leader);
        assert_eq!(m.current_ring().unwrap(), ring, "the ring waits for the join");
        // One addition at a time; and no move of ranges meanwhile.
        assert!(refused(&mut m, &Command::AddHosts { hosts: new_hosts(6, 2) }).contains("still joining"));
        let coordinator = m.mp_coordinator.unwrap();
        let moved = ring.with_range_moved(0, 9, 1).unwrap();
        let set = Command::SetRing { coordinator, incarnation: 0, ring: moved, txn: 3 };
        assert!(refused(&mut m, &set).contains("joining"));
        // Only the coordinator, with the current ring one version on over
        // every partition.
        let mut other = joined(&m, 7);
        if let Command::PartitionsJoined { coordinator, .. } = &mut other {
            *coordinator = 4;
        }
        assert!(refused(&mut m, &other).contains("no longer coordinates"));
        let short = Command::PartitionsJoined {
            coordinator,
            incarnation: 0,
            ring: Hashinator::over(2, ring.ring().to_vec(), 4).unwrap(),
            txn: 7,
        };
        refused(&mut m, &short);
        let changed = Command::PartitionsJoined {
            coordinator,
            incarnation: 0,
            ring: Hashinator::over(2, ring.with_range_moved(i32::MIN, i32::MIN + 9, 1).unwrap().ring().to_vec(), 5)
                .unwrap(),
            txn: 7,
        };
        refused(&mut m, &changed);
        assert_eq!(m.apply(&joined(&m, 7)), CommandResult::Applied);
        check(&m);
        assert!(!m.joining());
        assert_eq!(m.active_partitions(), 5);
        assert_eq!((m.ring_version(), m.ring_txn), (2, Some(7)));
        assert_eq!(m.current_ring().unwrap().partition_count(), 5);
        // Ranges move to the new partitions with the ordinary command.
        let to_new = m.current_ring().unwrap().with_range_moved(0, 99, 4).unwrap();
        assert_eq!(
            m.apply(&Command::SetRing { coordinator, incarnation: 0, ring: to_new, txn: 8 }),
            CommandResult::Applied
        );
        // Next addition.
        assert_eq!(m.apply(&Command::AddHosts { hosts: new_hosts(6, 2) }), CommandResult::Applied);
        assert_eq!(m.partitions.len(), 7);
        check(&m);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<ClusterMetadata>(&json).unwrap(), m);
    }

    #[test]
    fn a_join_that_cannot_finish_is_abandoned() {
        let mut m = formed(2, 2, 0);
        let before = m.clone();
        assert!(refused(&mut m, &Command::AbandonJoin).contains("no partitions"));
        assert_eq!(m.apply(&Command::AddHosts { hosts: new_hosts(3, 1) }), CommandResult::Applied);
        // The new host dies before the join commits: its partitions have no
        // copy left, and the join is given up.
        assert_eq!(m.apply(&Command::HostFailed { host: 3, incarnation: Some(0) }), CommandResult::Applied);
        check(&m);
        let join = joined(&m, 4);
        assert_eq!(m.apply(&Command::AbandonJoin), CommandResult::Applied);
        assert_eq!(m.retired, [3].into(), "the host added is retired");
        m.retired.clear();
        let version = m.version;
        m.version = before.version;
        assert_eq!(m, before, "otherwise as before the addition (but for the commands counted)");
        m.version = version;
        m.retired.insert(3);
        // The coordinator's record of the join now comes too late.
        assert!(refused(&mut m, &join).contains("no partitions"));
        // While a host is down, nothing is added.
        assert_eq!(m.apply(&Command::HostFailed { host: 2, incarnation: Some(0) }), CommandResult::Applied);
        assert!(refused(&mut m, &Command::AddHosts { hosts: new_hosts(3, 1) }).contains("every host must be up"));
    }

    #[test]
    fn additions_stay_within_the_bounds() {
        let mut m = formed(1, 200, 0);
        for i in 0..4 {
            assert_eq!(m.apply(&Command::AddHosts { hosts: new_hosts(2 + i, 1) }), CommandResult::Applied);
            assert_eq!(m.apply(&joined(&m, i)), CommandResult::Applied);
        }
        assert_eq!(m.partitions.len(), 1000);
        assert!(refused(&mut m, &Command::AddHosts { hosts: new_hosts(6, 1) }).contains("at most 1024 partitions"));
    }

    proptest! {
        /// Any cluster, then additions, joins, abandons and failures in any
        /// order: the placement invariants hold; the joining partitions are
        /// always the last ones and held by the hosts added with them only;
        /// the ring counts exactly the partitions that joined.
        #[test]
        fn additions_keep_the_placement_invariants(
            n in 1u64..6, sites in 1u32..4, k in 0u32..3,
            steps in proptest::collection::vec((0u8..4, 1u64..12), 0..24),
        ) {
            prop_assume!((k as u64) < n);
            let mut m = formed(n, sites, k);
            let mut next_host = n + 1;
            let mut txn = 0;
            for (op, host) in steps {
                let command = match op {
                    0 => {
                        let c = Command::AddHosts { hosts: new_hosts(next_host, k as u64 + 1) };
                        next_host += k as u64 + 1;
                        c
                    }
                    1 if m.joining() && m.mp_coordinator.is_some() => {
                        txn += 1;
                        joined(&m, txn)
                    }
                    1 => Command::HostRejoined { host, revived: vec![], copied: vec![] },
                    2 => Command::AbandonJoin,
                    _ => Command::HostFailed { host, incarnation: None },
                };
                let before = m.clone();
                if let CommandResult::Refused(_) = m.apply(&command) {
                    prop_assert_eq!(&m, &before);
                }
                check(&m);
                let active = m.active_partitions();
                prop_assert!(m.partitions[active..].iter().all(|p| p.joining));
                let joining_hosts: std::collections::BTreeSet<HostId> =
                    m.partitions[active..].iter().flat_map(|p| p.replicas.iter().copied()).collect();
                prop_assert!(m.partitions[..active].iter().all(|p| p.replicas.iter().all(|h| !joining_hosts.contains(h))));
                prop_assert_eq!(m.current_ring().unwrap().partition_count() as usize, active);
            }
        }
    }
}
