//! The metadata group over real TCP on loopback (ports chosen by the OS),
//! each member with its own directory: forming, forwarding proposals,
//! losing the leader, losing quorum, and a member restarting from its
//! files.

use joule_cluster::{ClusterMetadata, Command, CommandResult, HostInfo, HostState, MetadataNode};
use joule_common::ErrorCode;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dir(name: &str) -> Dir {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let d = std::env::temp_dir().join(format!("joule-group-{name}-{}-{nanos}", std::process::id()));
    Dir(d)
}

async fn start(id: u64, root: &Dir, address: Option<&str>) -> MetadataNode {
    // Members restart on their old addresses, so not on ephemeral ports.
    let fresh;
    let address = match address {
        Some(a) => a,
        None => {
            fresh = format!("127.0.0.1:{}", joule_common::testing::stable_port(seed(id)));
            &fresh
        }
    };
    let listener = tokio::net::TcpListener::bind(address).await.unwrap();
    MetadataNode::start(id, &root.0.join(format!("host-{id}")), listener).await.unwrap()
}

fn host_infos(nodes: &[&MetadataNode]) -> BTreeMap<u64, HostInfo> {
    nodes
        .iter()
        .map(|n| {
            let info = HostInfo {
                internal_address: n.address().to_string(),
                client_address: format!("127.0.0.1:{}", 21000 + n.id()),
                state: HostState::Up,
                incarnation: 0,
            };
            (n.id(), info)
        })
        .collect()
}

fn seed(id: u64) -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    nanos ^ (u64::from(std::process::id()) << 32) ^ id
}

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_form_fail_over_and_restart() {
    let root = dir("three");
    let mut nodes = vec![start(1, &root, None).await, start(2, &root, None).await, start(3, &root, None).await];
    let members: BTreeMap<u64, String> = nodes.iter().map(|n| (n.id(), n.address().to_string())).collect();
    nodes[0].initialize(members.clone()).await.unwrap();
    // Initializing again (or on another member) with the same members is harmless.
    nodes[1].initialize(members).await.unwrap();

    // Proposed on member 3: forwarded to whichever member leads.
    let hosts = host_infos(&nodes.iter().collect::<Vec<_>>());
    let form = Command::Form { kfactor: 1, sites_per_host: 2, hosts };
    assert_eq!(nodes[2].propose(form.clone()).await.unwrap(), CommandResult::Applied);
    let mut seen = Vec::new();
    for n in &nodes {
        seen.push(n.wait_for(WAIT, |m| m.formed).await.unwrap());
    }
    assert!(seen.iter().all(|m| *m == seen[0]), "every member applied the same metadata");
    assert_eq!(seen[0].partitions.len(), 3);
    // Forming twice is refused the same way everywhere.
    assert!(matches!(nodes[0].propose(form).await.unwrap(), CommandResult::Refused(_)));

    // The leader goes away; the other two elect a leader and carry on.
    let leader = nodes[0].leader().expect("a leader after forming");
    let at = nodes.iter().position(|n| n.id() == leader).unwrap();
    let gone = nodes.remove(at);
    let (gone_id, gone_address) = (gone.id(), gone.address().to_string());
    gone.shutdown().await;
    let failed = Command::HostFailed { host: gone_id, incarnation: None };
    assert_eq!(nodes[0].propose(failed).await.unwrap(), CommandResult::Applied);
    for n in &nodes {
        let m = n.wait_for(WAIT, |m| !m.is_up(gone_id)).await.unwrap();
        assert!(m.partitions.iter().all(|p| p.leader.is_some() && p.leader != Some(gone_id)), "{m:?}");
        assert_ne!(m.mp_coordinator, Some(gone_id));
    }
    let survivor_leader = nodes[0].leader().unwrap();
    assert_ne!(survivor_leader, gone_id);

    // Changes made while it was away reach it when it restarts from its files.
    let bump = Command::SetCatalogVersion { expected: 0, version: 7 };
    assert_eq!(nodes[1].propose(bump).await.unwrap(), CommandResult::Applied);
    let back = start(gone_id, &root, Some(&gone_address)).await;
    let m = back.wait_for(WAIT, |m| m.catalog_version == 7).await.unwrap();
    assert_eq!(m.hosts[&gone_id].state, HostState::Failed);
    assert_eq!(
        back.propose(Command::HostRejoined { host: gone_id, revived: vec![], copied: vec![] }).await.unwrap(),
        CommandResult::Applied
    );
    nodes.push(back);
    let mut seen: Vec<ClusterMetadata> = Vec::new();
    for n in &nodes {
        seen.push(n.wait_for(WAIT, |m| m.is_up(gone_id)).await.unwrap());
    }
    assert!(seen.iter().all(|m| *m == seen[0]), "{seen:?}");

    // Two of three gone: the last member cannot change anything alone.
    let last = nodes.pop().unwrap();
    for n in nodes {
        n.shutdown().await;
    }
    let e = last
        .propose_within(Command::SetCatalogVersion { expected: 7, version: 8 }, Duration::from_millis(1500))
        .await
        .unwrap_err();
    assert!(matches!(e.code(), ErrorCode::Unavailable | ErrorCode::OutcomeUnknown), "{e}");
    assert_eq!(last.metadata().catalog_version, 7);
    last.shutdown().await;
}

/// A member that was away while the others snapshotted and dropped their
/// logs gets the snapshot; a member restarting from its own snapshot
/// file recovers the same metadata.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_catch_up_a_member_and_survive_restarts() {
    let root = dir("snapshots");
    let mut nodes = vec![start(1, &root, None).await, start(2, &root, None).await, start(3, &root, None).await];
    let members: BTreeMap<u64, String> = nodes.iter().map(|n| (n.id(), n.address().to_string())).collect();
    nodes[0].initialize(members).await.unwrap();
    let hosts = host_infos(&nodes.iter().collect::<Vec<_>>());
    nodes[0].propose(Command::Form { kfactor: 1, sites_per_host: 1, hosts }).await.unwrap();
    for n in &nodes {
        n.wait_for(WAIT, |m| m.formed).await.unwrap();
    }
    // Member 3 goes away (not the leader, so no election is needed).
    let leader = nodes[0].leader().unwrap();
    let away_at = nodes.iter().position(|n| n.id() != leader).unwrap();
    let away = nodes.remove(away_at);
    let (away_id, away_address) = (away.id(), away.address().to_string());
    away.shutdown().await;
    for v in 0..40u64 {
        let r = nodes[0].propose(Command::SetCatalogVersion { expected: v, version: v + 1 }).await.unwrap();
        assert_eq!(r, CommandResult::Applied);
    }
    for n in &nodes {
        n.wait_for(WAIT, |m| m.catalog_version == 40).await.unwrap();
        n.compact().await.unwrap();
    }
    let back = start(away_id, &root, Some(&away_address)).await;
    let m = back.wait_for(WAIT, |m| m.catalog_version == 40).await.unwrap();
    assert_eq!(m, nodes[0].metadata());
    // It caught up from the snapshot: the log it lacked is gone everywhere.
    // (openraft's metrics follow the state machine by a moment.)
    let mut waited = 0;
    while back.snapshot_index().is_none() && waited < 100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    assert!(back.snapshot_index() >= nodes[0].snapshot_index() && back.snapshot_index().is_some());
    nodes.push(back);
    // Every member restarts from its files: the same metadata, and the
    // group still takes changes.
    let mut addresses = Vec::new();
    for n in nodes.drain(..) {
        addresses.push((n.id(), n.address().to_string()));
        n.shutdown().await;
    }
    for (id, address) in &addresses {
        nodes.push(start(*id, &root, Some(address)).await);
    }
    let r = nodes[1].propose(Command::SetCatalogVersion { expected: 40, version: 41 }).await.unwrap();
    assert_eq!(r, CommandResult::Applied);
    let mut seen = Vec::new();
    for n in &nodes {
        seen.push(n.wait_for(WAIT, |m| m.catalog_version == 41).await.unwrap());
    }
    assert!(seen.iter().all(|m| *m == seen[0] && m.formed));
    for n in nodes {
        n.shutdown().await;
    }
}
