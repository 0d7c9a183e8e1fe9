//! What changed between two versions of the cluster metadata, as lines
//! for the operator: each host follows the metadata (`cluster.rs`'s
//! `follow`) and prints these on standard error and in the console's
//! event log — hosts added, failed, stopped, removed; partitions created,
//! joined or gone; leaders and the coordinator moved; the ring's version.

use joule_cluster::{ClusterMetadata, HostId, HostState};

/// What changed between two versions of the metadata, one line each.
pub(crate) fn changes(before: &ClusterMetadata, after: &ClusterMetadata) -> Vec<String> {
    let mut out = Vec::new();
    if !before.formed && after.formed {
        out.push(format!(
            "cluster formed: {} hosts, k-factor {}, {} partitions",
            after.hosts.len(),
            after.kfactor,
            after.partitions.len()
        ));
    }
    for (id, h) in &after.hosts {
        if before.formed && !before.hosts.contains_key(id) {
            out.push(format!("host {id} ({}) was added to the cluster", h.internal_address));
        }
        let was = before.hosts.get(id).map(|b| b.state);
        if was.is_some() && was != Some(h.state) {
            let what = match h.state {
                HostState::Up => "is up again",
                HostState::Failed => "failed (failure detection)",
                HostState::Stopped => "was stopped (@StopNode)",
                HostState::Recovering => "restarted with its copy logs: recovering until no host runs on",
            };
            out.push(format!("host {id} ({}) {what}", h.internal_address));
        }
    }
    for (id, h) in before.hosts.iter().filter(|(id, _)| after.retired.contains(id)) {
        out.push(format!("host {id} ({}) was removed from the cluster", h.internal_address));
    }
    let (had, has) = (before.partitions.len(), after.partitions.len());
    if before.formed && has > had {
        out.push(format!(
            "partitions {had}..{} were created on the added hosts; they join the transaction order next",
            has - 1
        ));
    }
    if has < had {
        out.push(format!("partitions {has}..{} left the transaction order with the removed hosts", had - 1));
    }
    match (&before.removing, &after.removing) {
        (None, Some(r)) if r.copies => out.push(format!(
            "hosts {:?} are being removed: their copies are made again on the hosts that stay, then they leave",
            r.hosts
        )),
        (None, Some(r)) => out.push(format!(
            "hosts {:?} are being removed: ranges move off partitions {}..{}, then those partitions leave",
            r.hosts,
            r.keep,
            after.partitions.len() - 1
        )),
        (Some(r), None) if r.hosts.iter().all(|h| after.hosts.contains_key(h)) => {
            out.push(format!("the removal of hosts {:?} was cancelled", r.hosts))
        }
        (Some(then), Some(r)) if r.draining && !then.draining => out.push(format!(
            "hosts {:?} hand the partitions they lead over: they run no new calls on them until every copy holds \
             what they ran",
            r.hosts
        )),
        (Some(then), Some(r)) if then.draining && !r.draining => {
            out.push(format!("hosts {:?} run their calls again until a copy is made again", r.hosts))
        }
        _ => {}
    }
    for (p, placement) in after.partitions.iter().enumerate().take(had) {
        let then = &before.partitions[p];
        for h in placement.adding.iter().filter(|h| !then.adding.contains(h)) {
            out.push(format!("partition {p}: host {h} takes a copy of it"));
        }
        for h in placement.replicas.iter().filter(|h| !then.replicas.contains(h)) {
            out.push(format!("partition {p}: host {h} holds a copy of it"));
        }
        let old = then.leader;
        if before.formed && old != placement.leader {
            match placement.leader {
                Some(l) => out.push(format!("partition {p}: leader moved from {} to host {l}", host_or_none(old))),
                None => out.push(format!(
                    "partition {p}: no running copy left (replicas on hosts {:?}); it cannot be served",
                    placement.replicas
                )),
            }
        }
    }
    if before.formed && before.mp_coordinator != after.mp_coordinator {
        out.push(format!(
            "multi-partition coordinator moved from {} to {}",
            host_or_none(before.mp_coordinator),
            host_or_none(after.mp_coordinator)
        ));
    }
    if before.ring_version() != after.ring_version() {
        out.push(format!(
            "hashinator ring moved to version {} (transaction {})",
            after.ring_version(),
            after.ring_txn.map_or_else(|| "none".to_string(), |t| t.to_string())
        ));
    }
    out
}

fn host_or_none(h: Option<HostId>) -> String {
    h.map_or_else(|| "none".to_string(), |h| format!("host {h}"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use joule_cluster::{Command, CommandResult, HostInfo};
    use joule_common::hashinator::Hashinator;
    use std::collections::BTreeMap;

    pub(crate) fn hosts(n: u64) -> BTreeMap<HostId, HostInfo> {
        (0..n)
            .map(|i| {
                let info = HostInfo {
                    internal_address: format!("10.0.0.{i}:3021"),
                    client_address: format!("10.0.0.{i}:21212"),
                    state: HostState::Up,
                    incarnation: 0,
                };
                (i, info)
            })
            .collect()
    }

    #[test]
    fn changes_name_hosts_leaders_and_the_coordinator() {
        let mut before = ClusterMetadata::default();
        let form = Command::Form { kfactor: 1, sites_per_host: 2, hosts: hosts(3) };
        let mut formed = before.clone();
        assert_eq!(formed.apply(&form), CommandResult::Applied);
        assert_eq!(changes(&before, &formed), vec!["cluster formed: 3 hosts, k-factor 1, 3 partitions".to_string()]);
        before = formed.clone();
        let led_by_0: Vec<usize> = (0..3).filter(|p| formed.partitions[*p].leader == Some(0)).collect();
        assert_eq!(formed.apply(&Command::HostFailed { host: 0, incarnation: None }), CommandResult::Applied);
        let lines = changes(&before, &formed);
        assert_eq!(lines[0], "host 0 (10.0.0.0:3021) failed (failure detection)");
        for p in &led_by_0 {
            assert!(lines.iter().any(|l| l.starts_with(&format!("partition {p}: leader moved from host 0 to host "))));
        }
        assert_eq!(lines.last().unwrap(), "multi-partition coordinator moved from host 0 to host 1");
        assert!(changes(&formed, &formed).is_empty());
    }

    #[test]
    fn changes_name_added_hosts_and_their_partitions() {
        let mut before = ClusterMetadata::default();
        assert_eq!(
            before.apply(&Command::Form { kfactor: 0, sites_per_host: 2, hosts: hosts(2) }),
            CommandResult::Applied
        );
        let mut after = before.clone();
        let added: BTreeMap<HostId, HostInfo> = hosts(3).into_iter().filter(|(id, _)| *id == 2).collect();
        assert_eq!(after.apply(&Command::AddHosts { hosts: added }), CommandResult::Applied);
        assert_eq!(
            changes(&before, &after),
            vec![
                "host 2 (10.0.0.2:3021) was added to the cluster".to_string(),
                "partitions 4..5 were created on the added hosts; they join the transaction order next".to_string(),
            ]
        );
        // And back: the removal starts, then the partitions and the host go.
        let ring = after.current_ring().unwrap();
        let (coordinator, incarnation) = (0, 0);
        let joined = Hashinator::over(2, ring.ring().to_vec(), 6).unwrap();
        let joined = Command::PartitionsJoined { coordinator, incarnation, ring: joined, txn: 1 };
        assert_eq!(after.apply(&joined), CommandResult::Applied);
        let mut removing = after.clone();
        assert_eq!(removing.apply(&Command::RemoveHosts { hosts: [2].into() }), CommandResult::Applied);
        let line = "hosts {2} are being removed: ranges move off partitions 4..5, then those partitions leave";
        assert_eq!(changes(&after, &removing), vec![line.to_string()]);
        let mut removed = removing.clone();
        let left = Command::PartitionsLeft {
            coordinator,
            incarnation,
            ring: Hashinator::over(3, ring.ring().to_vec(), 4).unwrap(),
            txn: 2,
        };
        assert_eq!(removed.apply(&left), CommandResult::Applied);
        assert_eq!(
            changes(&removing, &removed),
            vec![
                "host 2 (10.0.0.2:3021) was removed from the cluster".to_string(),
                "partitions 4..5 left the transaction order with the removed hosts".to_string(),
                "hashinator ring moved to version 3 (transaction 2)".to_string(),
            ]
        );
        let mut cancelled = removing.clone();
        assert_eq!(cancelled.apply(&Command::CancelRemove), CommandResult::Applied);
        assert_eq!(changes(&removing, &cancelled), vec!["the removal of hosts {2} was cancelled".to_string()]);
    }
}
