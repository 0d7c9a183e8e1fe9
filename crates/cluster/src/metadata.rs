//! The cluster's metadata and the commands that change it: the state the
//! metadata group (openraft, see `node.rs`) replicates to every host.
//!
//! What it holds: the hosts and whether each is up, the k-safety factor,
//! every partition's replica hosts and leader, the hashinator and catalog
//! versions, and which host coordinates multi-partition transactions. What
//! changes it: [`Command`]s, applied by [`ClusterMetadata::apply`] in log
//! order on every host. `apply` is a pure function of the state and the
//! command — no clocks, no randomness, only ordered maps — so every host that
//! applies the same log reaches the same metadata, which is what makes it
//! safe to replicate.
//!
//! Placement follows VoltDB's rule: `hosts × sites_per_host / (k+1)`
//! partitions, each with k+1 replicas on distinct hosts, leaders spread as
//! evenly as the replicas allow. When a host fails, each partition it led is
//! given the surviving replica with the fewest leaderships (lowest host id on
//! a tie); a partition whose replicas are all gone has no leader, and the
//! cluster cannot serve it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Bounds on a cluster's shape (a command past them is refused, never
/// applied: a huge layout would exhaust every member's memory on replay).
pub const MAX_SITES_PER_HOST: u32 = 256;
pub const MAX_HOSTS: usize = 1024;
/// The most partitions a cluster has (as many as a host's transaction
/// layer routes to).
pub const MAX_PARTITIONS: usize = 1024;

/// A host's id: also its id in the metadata group.
pub type HostId = u64;

/// What the metadata says of one host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    /// Where other hosts reach it (the internal port).
    pub internal_address: String,
    /// Where clients reach it (the client port).
    pub client_address: String,
    pub state: HostState,
    /// How many times it has rejoined (see `Command::HostFailed`).
    #[serde(default)]
    pub incarnation: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostState {
    Up,
    /// Declared dead by failure detection; its partitions are led elsewhere.
    Failed,
    /// Removed on purpose (`@StopNode`).
    Stopped,
    /// Restarted while still up here, with every copy it holds in its copy
    /// logs: it waits for the rest of the cluster. Not up (it leads
    /// nothing), but its copies still count: a leader waits for them to
    /// acknowledge, as for an up replica, until they are failed. When no
    /// host is up any more, every recovering host is up again at once (the
    /// whole cluster restarted) and serves the copies its logs hold.
    Recovering,
}

/// One partition's replicas and leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionPlacement {
    /// k+1 distinct hosts.
    pub replicas: Vec<HostId>,
    /// The replica that orders the partition's transactions; `None` when
    /// every replica is down.
    pub leader: Option<HostId>,
    /// Replicas whose copies lack transactions acknowledged since they went
    /// down: the partition had a leader while they were neither up nor
    /// recovering. A replica not in it that comes back with its copy in its
    /// copy logs may bring the partition back while it has no leader
    /// (`HostRejoined::revived`); a stale one needs a copy from a leader.
    #[serde(default)]
    pub stale: std::collections::BTreeSet<HostId>,
    /// Added with new hosts and not yet in the order of multi-partition
    /// transactions: the ring gives it no token (see `crate::elastic`).
    #[serde(default)]
    pub joining: bool,
    /// Up hosts taking a copy of the partition from its leader, not yet
    /// replicas: nothing counts on their copies until the copy is whole
    /// (see `crate::copies`).
    #[serde(default)]
    pub adding: Vec<HostId>,
    /// Counts the additions to `adding` that were given up (cancelled, or
    /// the host taken down): a host that sees it change while it is still
    /// adding was dropped and added again, and takes a new copy.
    #[serde(default)]
    pub copy_round: u64,
}

/// The replicated cluster metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMetadata {
    /// Set once, when the cluster forms.
    pub formed: bool,
    pub kfactor: u32,
    pub sites_per_host: u32,
    pub hosts: BTreeMap<HostId, HostInfo>,
    /// Indexed by partition id.
    pub partitions: Vec<PartitionPlacement>,
    /// The hashinator ring, once a move of ranges changed it (`None`: the
    /// even ring of version 1 every host starts with).
    #[serde(default)]
    pub ring: Option<joule_common::hashinator::Hashinator>,
    /// The multi-partition transaction that moved the ring to `ring`: it
    /// committed (see [`Command::SetRing`]).
    #[serde(default)]
    pub ring_txn: Option<u64>,
    pub catalog_version: u64,
    /// The host that coordinates multi-partition transactions.
    pub mp_coordinator: Option<HostId>,
    /// Hosts being removed, with the partitions that leave with them (see
    /// `crate::removal`).
    #[serde(default)]
    pub removing: Option<Removal>,
    /// Hosts removed from the cluster: the metadata group's leader takes
    /// them out of the group, and their ids are never given again.
    #[serde(default)]
    pub retired: std::collections::BTreeSet<HostId>,
    /// Commands applied so far: of two hosts, the one whose metadata has
    /// the higher version has seen more of it (a call forwarded by a host
    /// that knows newer metadata waits for it rather than bounce back).
    #[serde(default)]
    pub version: u64,
}

/// A removal under way: `hosts` hold every copy of the partitions from
/// `keep` on, and nothing else — or, with `copies`, they leave by having
/// their copies made again elsewhere and `keep` is every partition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removal {
    pub hosts: std::collections::BTreeSet<HostId>,
    /// The partitions that stay: `0..keep`.
    pub keep: usize,
    /// The hosts hold copies of partitions that stay (they are not the
    /// last added): rather than partitions leaving, their copies are made
    /// again on the hosts that stay, and then the hosts go (see
    /// `crate::copies`). Every partition stays.
    #[serde(default)]
    pub copies: bool,
    /// A removal by copies whose copies are all made: the leaving hosts
    /// that lead partitions stop running new calls on them and hand them
    /// over once everything they ran reached every copy (`LeaderDrained`;
    /// see `crate::copies`).
    #[serde(default)]
    pub draining: bool,
    /// The metadata version at which `draining` last turned on: a host's
    /// `LeaderDrained` names it, so a confirmation from before the
    /// hand-over was called off and on again does not count.
    #[serde(default)]
    pub draining_since: u64,
    /// The leaving hosts that said they have drained.
    #[serde(default)]
    pub drained: std::collections::BTreeSet<HostId>,
}

/// A change to the metadata, as replicated in the metadata group's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Form the cluster from the hosts that joined: lay out the partitions.
    Form { kfactor: u32, sites_per_host: u32, hosts: BTreeMap<HostId, HostInfo> },
    /// Failure detection declared `host` dead — the incarnation it
    /// watched, if given: a host that restarted and rejoined since is a new
    /// incarnation, and a verdict on the old one is refused.
    HostFailed {
        host: HostId,
        #[serde(default)]
        incarnation: Option<u64>,
    },
    /// Host `reporter` (at incarnation `reporter_incarnation`) cannot reach
    /// `host` (at `incarnation`) though both are up: the network between
    /// the two is cut while both still reach the group. One of them must
    /// go, or replication between them stalls; the first report applied
    /// fails `host`, and the other's report, whose reporter is then down,
    /// is refused. A report that would leave a partition with no running
    /// copy is refused too: the cluster waits for the cut to heal.
    HostUnreachable { reporter: HostId, reporter_incarnation: u64, host: HostId, incarnation: u64 },
    /// An operator removed `host` on purpose.
    StopHost { host: HostId },
    /// `host` came back (rejoin finished): it serves its replicas again —
    /// those in `revived` from its own copy logs, brought back while the
    /// partition had no leader. Refused while any host is recovering (the
    /// cluster restarts: wait), or if a revived partition has a leader
    /// again or this host's copy of it is stale.
    HostRejoined {
        host: HostId,
        #[serde(default)]
        revived: Vec<u32>,
        /// The partitions it took a copy of, each with the leader (and that
        /// leader's incarnation) that sent it: refused if one is led by
        /// another host or incarnation now (the copy may miss what the new
        /// leader had, or the old one released without it).
        #[serde(default)]
        copied: Vec<(u32, HostId, u64)>,
    },
    /// `host` (at `incarnation`, still up here) restarted with its copies
    /// in its copy logs: it is recovering (see [`HostState::Recovering`]).
    /// Refused unless the host is up at that incarnation.
    HostRecovering { host: HostId, incarnation: u64 },
    /// A new catalog (schema) version, if the current one is `expected`.
    SetCatalogVersion { expected: u64, version: u64 },
    /// The coordinator `coordinator` (at `incarnation`) moves the ring to
    /// `ring` (the next version) in transaction `txn`, prepared on every
    /// partition: this record is the transaction's commit point. Refused
    /// unless that host still coordinates at that incarnation — so a
    /// proposal applied after a new coordinator took over, which decides
    /// by what it finds here, cannot commit what it rolled back — and
    /// unless the ring is the one after the current one, over the same
    /// partitions.
    SetRing { coordinator: HostId, incarnation: u64, ring: joule_common::hashinator::Hashinator, txn: u64 },
    /// k+1 new hosts join the running cluster with `sites_per_host` new
    /// partitions, joining (see `crate::elastic`).
    AddHosts { hosts: BTreeMap<HostId, HostInfo> },
    /// The coordinator's transaction that brought the joining partitions
    /// into the transaction order commits: `ring` is the current one, one
    /// version on, over every partition. Refused as `SetRing` is.
    PartitionsJoined { coordinator: HostId, incarnation: u64, ring: joule_common::hashinator::Hashinator, txn: u64 },
    /// Give up the join under way: the joining partitions and the hosts
    /// added with them are removed.
    AbandonJoin,
    /// Start removing `hosts`, which must hold every copy of the last
    /// partitions and nothing else (see `crate::removal`): ranges move off
    /// those partitions, then they leave the transaction order.
    RemoveHosts { hosts: std::collections::BTreeSet<HostId> },
    /// The coordinator's transaction that took the leaving partitions out
    /// of the transaction order commits: `ring` is the current one, one
    /// version on, over the partitions that stay. The partitions and hosts
    /// are removed. Refused as `SetRing` is.
    PartitionsLeft { coordinator: HostId, incarnation: u64, ring: joule_common::hashinator::Hashinator, txn: u64 },
    /// Give up the removal under way (before its partitions left).
    CancelRemove,
    /// Give `partition` one more copy, on `host` (up, holding none): the
    /// host takes a copy from the leader (see `crate::copies`).
    AddCopy { partition: u32, host: HostId },
    /// `host`'s copy of `partition`, taken from `leader` at `incarnation`
    /// (which must still lead it), is whole and follows the stream: the
    /// host is a replica from now on. Proposed by the host.
    CopyAdded { partition: u32, host: HostId, leader: HostId, incarnation: u64 },
    /// Give up adding `host`'s copy of `partition`.
    CancelCopy { partition: u32, host: HostId },
    /// Leaving host `host` (at `incarnation`) runs no new calls on the
    /// partitions it leads and everything it ran reached every copy since
    /// the hand-over began (at metadata version `since`): they may move.
    /// Proposed by the host.
    LeaderDrained { host: HostId, incarnation: u64, since: u64 },
}

/// A command as proposed: with an id its proposer chose, so that a retried
/// proposal (its answer was lost) is applied once — the state machine
/// answers a repeated id with the first result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// (proposing host, that host's sequence number).
    pub id: (HostId, u64),
    pub command: Command,
}

/// What applying a command did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    Applied,
    /// Nothing changed, and why (a refused command is still in the log,
    /// refused the same way on every host).
    Refused(String),
}

impl ClusterMetadata {
    /// Apply one command.
    pub fn apply(&mut self, command: &Command) -> CommandResult {
        let result = self.apply_one(command);
        if result == CommandResult::Applied {
            self.version += 1;
            self.resume_if_all_restarted();
            self.move_copies_off_leaving_hosts();
            self.mark_stale();
        }
        result
    }

    fn apply_one(&mut self, command: &Command) -> CommandResult {
        match command {
            Command::Form { kfactor, sites_per_host, hosts } => self.form(*kfactor, *sites_per_host, hosts),
            Command::HostFailed { host, incarnation } => {
                let now = self.hosts.get(host).map(|h| h.incarnation);
                match (incarnation, now) {
                    (Some(watched), Some(now)) if *watched != now => {
                        refused(format!("host {host} has rejoined since (incarnation {now}, not {watched})"))
                    }
                    _ => self.take_down(*host, HostState::Failed),
                }
            }
            Command::HostUnreachable { reporter, reporter_incarnation, host, incarnation } => {
                let up_as = |h: &HostId, i: &u64| {
                    self.hosts.get(h).is_some_and(|h| h.state == HostState::Up && h.incarnation == *i)
                };
                if !up_as(reporter, reporter_incarnation) {
                    return refused(format!(
                        "host {reporter} (incarnation {reporter_incarnation}) is no longer up: its report is stale"
                    ));
                }
                if !up_as(host, incarnation) {
                    return refused(format!("host {host} (incarnation {incarnation}) is no longer up"));
                }
                let lost = self.only_copies_on(*host);
                if !lost.is_empty() {
                    return refused(format!(
                        "host {reporter} cannot reach host {host}, but failing it would leave partitions {lost:?} \
                         without a running copy: waiting for the network to heal"
                    ));
                }
                self.take_down(*host, HostState::Failed)
            }
            Command::StopHost { host } => {
                // Stopping on purpose must not leave a partition without a copy.
                let lost = self.only_copies_on(*host);
                if !lost.is_empty() && self.hosts.get(host).is_some_and(|h| h.state == HostState::Up) {
                    return refused(format!(
                        "stopping host {host} would leave partitions {lost:?} without a running copy (k-safety)"
                    ));
                }
                self.take_down(*host, HostState::Stopped)
            }
            Command::HostRejoined { host, revived, copied } => match self.hosts.get(host).map(|h| h.state) {
                None => refused(format!("host {host} is not a member")),
                Some(HostState::Up) => refused(format!("host {host} is already up")),
                Some(_) if self.hosts.values().any(|h| h.state == HostState::Recovering) => {
                    refused("the cluster is restarting (hosts are recovering from their copy logs): wait".into())
                }
                Some(_) => {
                    for (p, leader, incarnation) in copied {
                        let now = self.partitions.get(*p as usize).and_then(|p| p.leader);
                        let at = now.and_then(|l| self.hosts.get(&l)).map(|h| h.incarnation);
                        if now != Some(*leader) || at != Some(*incarnation) {
                            return refused(format!(
                                "partition {p}'s copy came from host {leader} (incarnation {incarnation}), which no \
                                 longer leads it as such: take a copy again"
                            ));
                        }
                    }
                    for p in revived {
                        let Some(placement) = self.partitions.get(*p as usize) else {
                            return refused(format!("there is no partition {p}"));
                        };
                        if let Some(l) = placement.leader {
                            return refused(format!("partition {p} was brought back meanwhile (host {l} leads it)"));
                        }
                        if !placement.replicas.contains(host) || placement.stale.contains(host) {
                            return refused(format!("host {host}'s copy of partition {p} is not a current one"));
                        }
                    }
                    if let Some(h) = self.hosts.get_mut(host) {
                        h.state = HostState::Up;
                        h.incarnation += 1;
                    }
                    // Its copies are whole again: taken from the leaders, or
                    // (revived) current already.
                    for p in &mut self.partitions {
                        p.stale.remove(host);
                    }
                    // Partitions left without any leader get one back.
                    for p in 0..self.partitions.len() {
                        if self.partitions[p].leader.is_none() {
                            self.partitions[p].leader = self.least_loaded_live_replica(p);
                        }
                    }
                    if self.mp_coordinator.is_none() {
                        self.mp_coordinator = Some(*host);
                    }
                    CommandResult::Applied
                }
            },
            Command::HostRecovering { host, incarnation } => {
                match self.hosts.get(host).map(|h| (h.state, h.incarnation)) {
                    None => refused(format!("host {host} is not a member")),
                    Some((HostState::Up, now)) if now == *incarnation => self.take_down(*host, HostState::Recovering),
                    Some((state, now)) => refused(format!(
                        "host {host} is {state:?} at incarnation {now}, not up at {incarnation}: it rejoins by copy"
                    )),
                }
            }
            Command::SetCatalogVersion { expected, version } => {
                set_version(&mut self.catalog_version, *expected, *version, "catalog")
            }
            Command::SetRing { coordinator, incarnation, ring, txn } => {
                self.set_ring(*coordinator, *incarnation, ring, *txn)
            }
            Command::AddHosts { hosts } => self.add_hosts(hosts),
            Command::PartitionsJoined { coordinator, incarnation, ring, txn } => {
                self.partitions_joined(*coordinator, *incarnation, ring, *txn)
            }
            Command::AbandonJoin => self.abandon_join(),
            Command::RemoveHosts { hosts } => self.remove_hosts(hosts),
            Command::PartitionsLeft { coordinator, incarnation, ring, txn } => {
                self.partitions_left(*coordinator, *incarnation, ring, *txn)
            }
            Command::CancelRemove => match self.removing.take() {
                Some(_) => CommandResult::Applied,
                None => refused("no hosts are being removed".into()),
            },
            Command::AddCopy { partition, host } => self.add_copy(*partition, *host),
            Command::CopyAdded { partition, host, leader, incarnation } => {
                self.copy_added(*partition, *host, *leader, *incarnation)
            }
            Command::CancelCopy { partition, host } => self.cancel_copy(*partition, *host),
            Command::LeaderDrained { host, incarnation, since } => self.leader_drained(*host, *incarnation, *since),
        }
    }

    fn form(&mut self, kfactor: u32, sites_per_host: u32, hosts: &BTreeMap<HostId, HostInfo>) -> CommandResult {
        if self.formed {
            return refused("the cluster is already formed".into());
        }
        let copies = kfactor as usize + 1;
        if hosts.len() < copies {
            return refused(format!("k-factor {kfactor} needs at least {copies} hosts, {} joined", hosts.len()));
        }
        if sites_per_host == 0 || sites_per_host > MAX_SITES_PER_HOST {
            return refused(format!("sites per host must be between 1 and {MAX_SITES_PER_HOST}"));
        }
        if hosts.len() > MAX_HOSTS {
            return refused(format!("at most {MAX_HOSTS} hosts, not {}", hosts.len()));
        }
        let ids: Vec<HostId> = hosts.keys().copied().collect();
        let partition_count = ids.len() * sites_per_host as usize / copies;
        if partition_count > MAX_PARTITIONS {
            return refused(format!("at most {MAX_PARTITIONS} partitions, not {partition_count}"));
        }
        // Slots ordered site-major (site 0 of every host, then site 1, ...):
        // any k+1 consecutive slots are on k+1 distinct hosts.
        let mut partitions = Vec::with_capacity(partition_count);
        for p in 0..partition_count {
            let replicas = (0..copies).map(|r| ids[(p * copies + r) % ids.len()]).collect();
            partitions.push(PartitionPlacement {
                replicas,
                leader: None,
                stale: Default::default(),
                joining: false,
                adding: Vec::new(),
                copy_round: 0,
            });
        }
        self.formed = true;
        self.kfactor = kfactor;
        self.sites_per_host = sites_per_host;
        self.hosts =
            hosts.iter().map(|(id, h)| (*id, HostInfo { state: HostState::Up, incarnation: 0, ..h.clone() })).collect();
        self.partitions = partitions;
        for p in 0..self.partitions.len() {
            self.partitions[p].leader = self.least_loaded_live_replica(p);
        }
        self.balance_leaders();
        self.mp_coordinator = ids.first().copied();
        CommandResult::Applied
    }

    /// Move leaderships from the busiest hosts to replicas that lead at
    /// least two fewer, until no such move is left: leaders end at most one
    /// apart wherever the replicas allow it. Each move lowers the sum of
    /// squared leaderships, so this ends.
    fn balance_leaders(&mut self) {
        loop {
            let leads = self.leaderships();
            let count = |h: &HostId| leads.get(h).copied().unwrap_or(0);
            let moved = (0..self.partitions.len()).find_map(|p| {
                let leader = self.partitions[p].leader?;
                let target = self.partitions[p]
                    .replicas
                    .iter()
                    .filter(|h| self.is_up(**h) && count(h) + 2 <= count(&leader))
                    .min_by_key(|h| (count(h), **h))?;
                Some((p, *target))
            });
            match moved {
                Some((p, target)) => self.partitions[p].leader = Some(target),
                None => return,
            }
        }
    }

    pub(crate) fn take_down(&mut self, host: HostId, state: HostState) -> CommandResult {
        match self.hosts.get_mut(&host) {
            None => return refused(format!("host {host} is not a member")),
            // A recovering host may still be failed or stopped: the cluster
            // went on without it.
            Some(h) if h.state == HostState::Recovering && state != HostState::Recovering => h.state = state,
            Some(h) if h.state != HostState::Up => return refused(format!("host {host} is already down")),
            Some(h) => h.state = state,
        }
        // A copy it was taking is void (it takes one again once back up).
        for p in self.partitions.iter_mut().filter(|p| p.adding.contains(&host)) {
            p.adding.retain(|h| *h != host);
            p.copy_round += 1;
        }
        for p in 0..self.partitions.len() {
            if self.partitions[p].leader == Some(host) {
                self.partitions[p].leader = None;
                self.partitions[p].leader = self.least_loaded_live_replica(p);
            }
        }
        if self.mp_coordinator == Some(host) {
            self.mp_coordinator = self.hosts.iter().find(|(_, h)| h.state == HostState::Up).map(|(id, _)| *id);
        }
        CommandResult::Applied
    }

    /// No host is up and some are recovering: every host that was up
    /// restarted (or was failed since), so the recovering ones hold every
    /// acknowledged transaction between them — a leader acknowledges only
    /// what every up or recovering replica applied. They are up again, as a
    /// new incarnation each, and lead what they hold.
    fn resume_if_all_restarted(&mut self) {
        let any = |state| self.hosts.values().any(|h| h.state == state);
        if any(HostState::Up) || !any(HostState::Recovering) {
            return;
        }
        for h in self.hosts.values_mut().filter(|h| h.state == HostState::Recovering) {
            h.state = HostState::Up;
            h.incarnation += 1;
        }
        for p in 0..self.partitions.len() {
            if self.partitions[p].leader.is_none() {
                self.partitions[p].leader = self.least_loaded_live_replica(p);
            }
        }
        self.balance_leaders();
        if !self.mp_coordinator.is_some_and(|c| self.is_up(c)) {
            self.mp_coordinator = self.hosts.iter().find(|(_, h)| h.state == HostState::Up).map(|(id, _)| *id);
        }
    }

    /// Whether `host` is recovering (see [`HostState::Recovering`]).
    pub fn is_recovering(&self, host: HostId) -> bool {
        self.hosts.get(&host).is_some_and(|h| h.state == HostState::Recovering)
    }

    /// A partition that has a leader goes on without its replicas that are
    /// neither up nor recovering: their copies are stale from now on.
    fn mark_stale(&mut self) {
        let hosts = &self.hosts;
        let away = |h: &HostId| hosts.get(h).is_none_or(|i| !matches!(i.state, HostState::Up | HostState::Recovering));
        for p in self.partitions.iter_mut().filter(|p| p.leader.is_some()) {
            let gone: Vec<HostId> = p.replicas.iter().copied().filter(|h| away(h)).collect();
            p.stale.extend(gone);
        }
    }

    /// Partitions whose only running copy is on `host`.
    fn only_copies_on(&self, host: HostId) -> Vec<usize> {
        (0..self.partitions.len())
            .filter(|p| {
                let r = &self.partitions[*p].replicas;
                r.contains(&host) && !r.iter().any(|h| *h != host && self.is_up(*h))
            })
            .collect()
    }

    /// Among partition `p`'s replicas that are up, the one leading the
    /// fewest partitions (lowest id on a tie).
    pub(crate) fn least_loaded_live_replica(&self, p: usize) -> Option<HostId> {
        let leads = self.leaderships();
        self.partitions[p]
            .replicas
            .iter()
            .filter(|h| self.is_up(**h))
            .min_by_key(|h| (leads.get(h).copied().unwrap_or(0), **h))
            .copied()
    }

    /// How many partitions each host leads.
    pub fn leaderships(&self) -> BTreeMap<HostId, usize> {
        let mut leads = BTreeMap::new();
        for p in &self.partitions {
            if let Some(l) = p.leader {
                *leads.entry(l).or_default() += 1;
            }
        }
        leads
    }

    pub fn is_up(&self, host: HostId) -> bool {
        self.hosts.get(&host).is_some_and(|h| h.state == HostState::Up)
    }

    /// Partitions with no live replica: the cluster cannot serve them.
    pub fn unavailable_partitions(&self) -> Vec<usize> {
        (0..self.partitions.len()).filter(|p| self.partitions[*p].leader.is_none()).collect()
    }
}

pub(crate) fn refused(why: String) -> CommandResult {
    CommandResult::Refused(why)
}

impl ClusterMetadata {
    /// The version of the ring the hosts route by.
    pub fn ring_version(&self) -> u64 {
        self.ring.as_ref().map_or(1, |r| r.version())
    }

    fn set_ring(
        &mut self,
        coordinator: HostId,
        incarnation: u64,
        ring: &joule_common::hashinator::Hashinator,
        txn: u64,
    ) -> CommandResult {
        if let CommandResult::Refused(why) = self.coordinates(coordinator, incarnation) {
            return refused(why);
        }
        if self.joining() {
            return refused("partitions are joining: ranges move once they joined".into());
        }
        if ring.version() != self.ring_version() + 1 {
            return refused(format!("the ring is at version {}, not {}", self.ring_version(), ring.version() - 1));
        }
        if ring.partition_count() as usize != self.partitions.len() {
            return refused(format!(
                "a ring over {} partitions, but the cluster has {}",
                ring.partition_count(),
                self.partitions.len()
            ));
        }
        self.ring = Some(ring.clone());
        self.ring_txn = Some(txn);
        CommandResult::Applied
    }
}

impl ClusterMetadata {
    /// Applied if `coordinator` coordinates at `incarnation`: only then may
    /// it commit a transaction by a record here.
    pub(crate) fn coordinates(&self, coordinator: HostId, incarnation: u64) -> CommandResult {
        let at = self.hosts.get(&coordinator).filter(|h| h.state == HostState::Up).map(|h| h.incarnation);
        if self.mp_coordinator != Some(coordinator) || at != Some(incarnation) {
            return refused(format!(
                "host {coordinator} (incarnation {incarnation}) no longer coordinates: its transaction is decided \
                 by the coordinator now named"
            ));
        }
        CommandResult::Applied
    }
}

fn set_version(current: &mut u64, expected: u64, version: u64, what: &str) -> CommandResult {
    if *current != expected {
        return refused(format!("the {what} version is {current}, not {expected}"));
    }
    if version <= expected {
        return refused(format!("a new {what} version must be above {expected}"));
    }
    *current = version;
    CommandResult::Applied
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    pub(crate) fn hosts(n: u64) -> BTreeMap<HostId, HostInfo> {
        (1..=n)
            .map(|i| {
                let info = HostInfo {
                    internal_address: format!("127.0.0.1:{}", 3000 + i),
                    client_address: format!("127.0.0.1:{}", 21000 + i),
                    state: HostState::Up,
                    incarnation: 0,
                };
                (i, info)
            })
            .collect()
    }

    pub(crate) fn formed(n: u64, sites: u32, k: u32) -> ClusterMetadata {
        let mut m = ClusterMetadata::default();
        assert_eq!(
            m.apply(&Command::Form { kfactor: k, sites_per_host: sites, hosts: hosts(n) }),
            CommandResult::Applied
        );
        m
    }

    /// The invariants of any placement: k+1 distinct replicas per partition,
    /// no host over its sites, a live leader wherever a replica lives.
    pub(crate) fn check(m: &ClusterMetadata) {
        let mut per_host: BTreeMap<HostId, u32> = BTreeMap::new();
        for p in &m.partitions {
            assert!(p.replicas.len() > m.kfactor as usize, "{p:?}");
            assert!(p.adding.iter().all(|h| !p.replicas.contains(h) && m.is_up(*h)), "{p:?}");
            assert_eq!(p.replicas.iter().collect::<BTreeSet<_>>().len(), p.replicas.len(), "{p:?}");
            for h in &p.replicas {
                *per_host.entry(*h).or_default() += 1;
            }
            match p.leader {
                Some(l) => assert!(p.replicas.contains(&l) && m.is_up(l), "{p:?}"),
                None => assert!(p.replicas.iter().all(|h| !m.is_up(*h)), "{p:?}"),
            }
        }
        // Copies added on purpose (`crate::copies`) may take a host past its
        // share, and so may a removal that moved copies; placements make
        // none.
        let added = m.partitions.iter().any(|p| p.replicas.len() > m.kfactor as usize + 1);
        let moved = m.partitions.len() > m.hosts.len() * m.sites_per_host as usize / (m.kfactor as usize + 1);
        assert!(added || moved || per_host.values().all(|n| *n <= m.sites_per_host), "{per_host:?}");
        if let Some(c) = m.mp_coordinator {
            assert!(m.is_up(c));
        }
    }

    #[test]
    fn three_hosts_k1_two_sites_each() {
        let m = formed(3, 2, 1);
        assert_eq!(m.partitions.len(), 3);
        check(&m);
        // Every host leads exactly one partition.
        assert_eq!(m.leaderships().values().copied().collect::<Vec<_>>(), vec![1, 1, 1]);
        assert_eq!(m.mp_coordinator, Some(1));
    }

    #[test]
    fn a_whole_cluster_restart_resumes_once_no_host_is_up() {
        let mut m = formed(3, 2, 1);
        let recovering = |host, incarnation| Command::HostRecovering { host, incarnation };
        // A host restarting while others still run is down, and stays so.
        assert_eq!(m.apply(&recovering(1, 0)), CommandResult::Applied);
        check(&m);
        assert!(m.is_recovering(1) && !m.is_up(1));
        assert!(m.partitions.iter().all(|p| p.leader != Some(1)), "a recovering host leads nothing");
        assert_ne!(m.mp_coordinator, Some(1));
        // Refused when not up at that incarnation: it rejoins by copy.
        assert!(matches!(m.apply(&recovering(1, 0)), CommandResult::Refused(_)));
        assert!(matches!(m.apply(&recovering(2, 7)), CommandResult::Refused(_)));
        assert_eq!(m.apply(&recovering(2, 0)), CommandResult::Applied);
        assert!(m.is_up(3) && m.is_recovering(2));
        // Host 3 never comes back: failing it leaves no host up, and the
        // recovering ones are up again, leading what they hold.
        assert_eq!(m.apply(&Command::HostFailed { host: 3, incarnation: Some(0) }), CommandResult::Applied);
        check(&m);
        assert!(m.is_up(1) && m.is_up(2) && !m.is_up(3));
        assert_eq!((m.hosts[&1].incarnation, m.hosts[&2].incarnation), (1, 1));
        assert!(m.unavailable_partitions().is_empty(), "k = 1: every partition has a copy on 1 or 2");
        assert!(m.mp_coordinator.is_some_and(|c| m.is_up(c)));

        // A host not back yet is failed like any other; its copies stay
        // current where no leader went on without them.
        let mut m = formed(3, 2, 1);
        assert_eq!(m.apply(&recovering(1, 0)), CommandResult::Applied);
        assert_eq!(m.apply(&Command::HostFailed { host: 2, incarnation: None }), CommandResult::Applied);
        assert_eq!(m.apply(&Command::HostFailed { host: 3, incarnation: None }), CommandResult::Applied);
        check(&m);
        assert!(m.is_up(1), "no host up: host 1 resumes alone");
        let orphan = m.partitions.iter().position(|p| p.leader.is_none()).unwrap();
        for (i, p) in m.partitions.iter().enumerate() {
            let others: Vec<HostId> = p.replicas.iter().copied().filter(|h| *h != 1).collect();
            if i == orphan {
                // Hosts 2 and 3 hold it: host 3 led it on after host 2
                // failed (it was not known dead yet), so host 2's copy is
                // stale; host 3 failed with no one to go on without it.
                assert_eq!(p.replicas, vec![2, 3]);
                assert_eq!(p.stale.iter().copied().collect::<Vec<_>>(), vec![2], "{p:?}");
            } else {
                // Led by host 1 from now on: the others' copies fall behind.
                assert_eq!(p.leader, Some(1));
                assert_eq!(p.stale.iter().copied().collect::<Vec<_>>(), others, "{p:?}");
            }
        }
        // Host 3 may bring it back from its logs; host 2 may not.
        let orphan = orphan as u32;
        let rejoined = |host, revived: Vec<u32>| Command::HostRejoined { host, revived, copied: vec![] };
        assert!(matches!(m.apply(&rejoined(2, vec![orphan])), CommandResult::Refused(_)));
        assert_eq!(m.apply(&rejoined(3, vec![orphan])), CommandResult::Applied);
        check(&m);
        assert_eq!(m.partitions[orphan as usize].leader, Some(3));
        assert!(matches!(m.apply(&rejoined(2, vec![orphan])), CommandResult::Refused(_)), "led again");
        assert_eq!(m.apply(&rejoined(2, vec![])), CommandResult::Applied, "by copy it may");
        assert!(m.partitions.iter().all(|p| p.stale.is_empty()), "every copy whole again");
        // A copy counts only while the leader that sent it still leads, as
        // the same incarnation.
        let mut m = formed(3, 2, 1);
        assert_eq!(m.apply(&Command::HostFailed { host: 3, incarnation: None }), CommandResult::Applied);
        let p = m.partitions.iter().position(|p| p.replicas.contains(&3)).unwrap() as u32;
        let leader = m.partitions[p as usize].leader.unwrap();
        let with_copy = |copied| Command::HostRejoined { host: 3, revived: vec![], copied };
        assert!(matches!(m.apply(&with_copy(vec![(p, leader, 7)])), CommandResult::Refused(_)));
        let other = if leader == 1 { 2 } else { 1 };
        assert!(matches!(m.apply(&with_copy(vec![(p, other, 0)])), CommandResult::Refused(_)));
        assert_eq!(m.apply(&with_copy(vec![(p, leader, 0)])), CommandResult::Applied);
        // No rejoin while the cluster restarts.
        let mut m = formed(3, 2, 1);
        assert_eq!(m.apply(&Command::HostFailed { host: 3, incarnation: None }), CommandResult::Applied);
        assert_eq!(m.apply(&recovering(1, 0)), CommandResult::Applied);
        assert!(matches!(m.apply(&rejoined(3, vec![])), CommandResult::Refused(_)));

        // A recovering host the running ones fail rejoins by copy.
        let mut m = formed(3, 2, 1);
        assert_eq!(m.apply(&recovering(2, 0)), CommandResult::Applied);
        assert_eq!(m.apply(&Command::HostFailed { host: 2, incarnation: Some(0) }), CommandResult::Applied);
        assert_eq!(m.hosts[&2].state, HostState::Failed);
        check(&m);

        // Every host restarting: up again once the last one recovers.
        let mut m = formed(3, 2, 1);
        for h in 1..=3 {
            assert_eq!(m.apply(&recovering(h, 0)), CommandResult::Applied);
        }
        check(&m);
        assert!((1..=3).all(|h| m.is_up(h)));
        assert_eq!(m.leaderships().values().copied().collect::<Vec<_>>(), vec![1, 1, 1], "leaders balanced again");
    }

    #[test]
    fn failure_promotes_replicas_and_moves_the_coordinator() {
        let mut m = formed(3, 2, 1);
        let led_by_1: Vec<usize> = (0..3).filter(|p| m.partitions[*p].leader == Some(1)).collect();
        assert_eq!(m.apply(&Command::HostFailed { host: 1, incarnation: None }), CommandResult::Applied);
        check(&m);
        for p in led_by_1 {
            assert_ne!(m.partitions[p].leader, Some(1));
        }
        assert_eq!(m.mp_coordinator, Some(2));
        assert!(m.unavailable_partitions().is_empty());
        // Twice is refused, and changes nothing.
        let before = m.clone();
        assert!(matches!(m.apply(&Command::HostFailed { host: 1, incarnation: None }), CommandResult::Refused(_)));
        assert_eq!(m, before);
        // k=1 survives one failure, not two that share a partition.
        m.apply(&Command::HostFailed { host: 2, incarnation: None });
        check(&m);
        assert!(!m.unavailable_partitions().is_empty());
        // The host comes back: the orphaned partitions get a leader again.
        assert_eq!(
            m.apply(&Command::HostRejoined { host: 1, revived: vec![], copied: vec![] }),
            CommandResult::Applied
        );
        check(&m);
        assert!(m.unavailable_partitions().is_empty());
    }

    #[test]
    fn a_cut_between_two_hosts_fails_one_of_them_once() {
        let mut m = formed(3, 2, 1);
        let report =
            |reporter, host| Command::HostUnreachable { reporter, reporter_incarnation: 0, host, incarnation: 0 };
        // Both ends report; the first applied wins, the other is stale.
        assert_eq!(m.apply(&report(1, 2)), CommandResult::Applied);
        check(&m);
        assert!(!m.is_up(2) && m.unavailable_partitions().is_empty());
        match m.apply(&report(2, 1)) {
            CommandResult::Refused(why) => assert!(why.contains("stale"), "{why}"),
            r => panic!("{r:?}"),
        }
        assert!(m.is_up(1));
        // With host 2 down, failing host 3 would leave partitions shared
        // by 2 and 3 without a copy: the cluster waits instead.
        match m.apply(&report(1, 3)) {
            CommandResult::Refused(why) => assert!(why.contains("without a running copy"), "{why}"),
            r => panic!("{r:?}"),
        }
        assert!(m.is_up(3));
        // A report about an incarnation that has since rejoined is refused.
        assert_eq!(
            m.apply(&Command::HostRejoined { host: 2, revived: vec![], copied: vec![] }),
            CommandResult::Applied
        );
        assert!(matches!(m.apply(&report(3, 2)), CommandResult::Refused(_)));
        // So is one from a reporter that has since restarted.
        assert!(matches!(m.apply(&report(2, 3)), CommandResult::Refused(_)));
        let fresh = Command::HostUnreachable { reporter: 3, reporter_incarnation: 0, host: 2, incarnation: 1 };
        assert_eq!(m.apply(&fresh), CommandResult::Applied);
        check(&m);
    }

    #[test]
    fn refusals() {
        let mut m = ClusterMetadata::default();
        assert!(matches!(
            m.apply(&Command::Form { kfactor: 2, sites_per_host: 2, hosts: hosts(2) }),
            CommandResult::Refused(_)
        ));
        assert!(!m.formed);
        let mut m = formed(2, 1, 0);
        assert!(matches!(
            m.apply(&Command::Form { kfactor: 0, sites_per_host: 1, hosts: hosts(2) }),
            CommandResult::Refused(_)
        ));
        assert!(matches!(m.apply(&Command::StopHost { host: 9 }), CommandResult::Refused(_)));
        // With k = 0 every partition has one copy: stopping its host is refused...
        match m.apply(&Command::StopHost { host: 1 }) {
            CommandResult::Refused(why) => assert!(why.contains("k-safety"), "{why}"),
            r => panic!("{r:?}"),
        }
        assert!(m.is_up(1));
        // ...while a failure is recorded: it happened whatever the rules say.
        assert_eq!(m.apply(&Command::HostFailed { host: 1, incarnation: None }), CommandResult::Applied);
        assert_eq!(m.unavailable_partitions(), vec![0]);
        let mut m = formed(2, 1, 0);
        // Shapes past the bounds are refused, not laid out.
        let mut huge = ClusterMetadata::default();
        let form = Command::Form { kfactor: 0, sites_per_host: u32::MAX, hosts: hosts(3) };
        assert!(matches!(huge.apply(&form), CommandResult::Refused(_)));
        assert!(!huge.formed);
        assert_eq!(m.apply(&Command::SetCatalogVersion { expected: 0, version: 1 }), CommandResult::Applied);
        assert!(matches!(m.apply(&Command::SetCatalogVersion { expected: 0, version: 2 }), CommandResult::Refused(_)));
        assert_eq!(m.catalog_version, 1);
    }

    #[test]
    fn only_the_coordinator_moves_the_ring_one_version_at_a_time() {
        use joule_common::hashinator::Hashinator;
        let mut m = formed(3, 2, 1);
        let partitions = m.partitions.len() as u32;
        let coordinator = m.mp_coordinator.unwrap();
        let next = Hashinator::even(partitions, 1).unwrap().with_range_moved(0, 99, 1).unwrap();
        let set = |host, incarnation, ring: &Hashinator, txn| Command::SetRing {
            coordinator: host,
            incarnation,
            ring: ring.clone(),
            txn,
        };
        let other = m.hosts.keys().copied().find(|h| *h != coordinator).unwrap();
        assert!(matches!(m.apply(&set(other, 0, &next, 7)), CommandResult::Refused(_)));
        assert!(matches!(m.apply(&set(coordinator, 1, &next, 7)), CommandResult::Refused(_)));
        let skipped = next.with_range_moved(5, 6, 0).unwrap();
        assert!(matches!(m.apply(&set(coordinator, 0, &skipped, 7)), CommandResult::Refused(_)));
        let fewer = Hashinator::even(partitions - 1, 2).unwrap();
        assert!(matches!(m.apply(&set(coordinator, 0, &fewer, 7)), CommandResult::Refused(_)));
        assert_eq!((m.ring_version(), m.ring_txn), (1, None));
        assert_eq!(m.apply(&set(coordinator, 0, &next, 7)), CommandResult::Applied);
        assert_eq!((m.ring_version(), m.ring_txn), (2, Some(7)));
        assert_eq!(m.ring.as_ref(), Some(&next));
        // A coordinator replaced since cannot commit a move any more.
        assert_eq!(m.apply(&Command::HostFailed { host: coordinator, incarnation: None }), CommandResult::Applied);
        assert!(matches!(m.apply(&set(coordinator, 0, &skipped, 8)), CommandResult::Refused(_)));
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<ClusterMetadata>(&json).unwrap(), m);
    }

    #[test]
    fn a_verdict_on_an_earlier_incarnation_is_refused() {
        let mut m = formed(3, 2, 1);
        assert_eq!(m.apply(&Command::HostFailed { host: 2, incarnation: Some(0) }), CommandResult::Applied);
        assert_eq!(
            m.apply(&Command::HostRejoined { host: 2, revived: vec![], copied: vec![] }),
            CommandResult::Applied
        );
        assert_eq!(m.hosts[&2].incarnation, 1);
        // Failure detection watched the host before it restarted: refused.
        match m.apply(&Command::HostFailed { host: 2, incarnation: Some(0) }) {
            CommandResult::Refused(why) => assert!(why.contains("rejoined since"), "{why}"),
            r => panic!("{r:?}"),
        }
        assert!(m.is_up(2));
        assert_eq!(m.apply(&Command::HostFailed { host: 2, incarnation: Some(1) }), CommandResult::Applied);
    }

    proptest! {
        /// Any cluster shape, then any sequence of failures, stops and
        /// rejoins: the placement invariants hold after every step, and a
        /// partition loses its leader only when every replica is down.
        #[test]
        fn placement_invariants_hold(
            n in 1u64..8, sites in 1u32..5, k in 0u32..3,
            steps in proptest::collection::vec((0u8..3, 1u64..8), 0..20),
        ) {
            prop_assume!((k as u64) < n);
            let m0 = formed(n, sites, k);
            prop_assert_eq!(m0.partitions.len(), (n as usize * sites as usize) / (k as usize + 1));
            check(&m0);
            // Leaders as even as can be: at most one apart when every host is up.
            let leads = m0.leaderships();
            let (lo, hi) = (leads.values().min().copied().unwrap_or(0), leads.values().max().copied().unwrap_or(0));
            let leaderless_hosts = n as usize - leads.len();
            prop_assert!(hi - if leaderless_hosts > 0 { 0 } else { lo } <= 1, "{:?}", leads);
            let mut m = m0;
            for (op, host) in steps {
                let command = match op {
                    0 => Command::HostFailed { host, incarnation: None },
                    1 => Command::StopHost { host },
                    _ => Command::HostRejoined { host, revived: vec![], copied: vec![] },
                };
                let before = m.clone();
                if let CommandResult::Refused(_) = m.apply(&command) {
                    prop_assert_eq!(&m, &before);
                }
                check(&m);
            }
        }
    }
}
