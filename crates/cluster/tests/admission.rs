//! New hosts admitted to a running cluster (in one process, over real TCP
//! on loopback, each member with its own directory): k+1 at a time, as
//! voters of the metadata group, with partitions of their own marked
//! joining; hosts whose settings do not fit are refused. Removed hosts
//! leave the group, and their ids are not given again.

use joule_cluster::{form_or_join, DetectorSettings, FormationSettings, MetadataNode, Routes};
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
    Dir(std::env::temp_dir().join(format!("joule-admit-{name}-{}-{nanos}", std::process::id())))
}

fn settings(
    root: &Dir,
    name: &str,
    hosts: usize,
    k: u32,
    sites: u32,
    join: Vec<String>,
    add: bool,
) -> FormationSettings {
    FormationSettings {
        host_count: hosts,
        kfactor: k,
        sites_per_host: sites,
        join,
        add,
        advertise: Some("127.0.0.1".into()),
        client_port: 1,
        dir: root.0.join(name),
        detector: DetectorSettings::default(),
        routes: Routes::default(),
        logged: Default::default(),
    }
}

async fn listener() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// A cluster of `hosts` formed in this process: its members, and the
/// forming host's internal address.
async fn formed(root: &Dir, hosts: usize, k: u32, sites: u32) -> (Vec<MetadataNode>, String) {
    let first = listener().await;
    let address = first.local_addr().unwrap().to_string();
    let mut tasks = Vec::new();
    let s = settings(root, "host-0", hosts, k, sites, vec![], false);
    tasks.push(tokio::spawn(async move { form_or_join(&s, first, &|_| {}).await.unwrap() }));
    for i in 1..hosts {
        let s = settings(root, &format!("host-{i}"), hosts, k, sites, vec![address.clone()], false);
        let l = listener().await;
        tasks.push(tokio::spawn(async move { form_or_join(&s, l, &|_| {}).await.unwrap() }));
    }
    let mut nodes = Vec::new();
    for t in tasks {
        nodes.push(t.await.unwrap());
    }
    (nodes, address)
}

async fn add(root: &Dir, name: &str, k: u32, sites: u32, join: &str) -> joule_common::Result<MetadataNode> {
    let s = settings(root, name, 0, k, sites, vec![join.to_string()], true);
    form_or_join(&s, listener().await, &|_| {}).await
}

/// Why adding a host was refused.
async fn refused(root: &Dir, name: &str, k: u32, sites: u32, join: &str) -> String {
    match add(root, name, k, sites, join).await {
        Ok(node) => panic!("host {} was admitted", node.id()),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_added_to_a_k0_cluster_becomes_a_voter_with_partitions_joining() {
    let root = dir("k0");
    let (nodes, address) = formed(&root, 2, 0, 2).await;
    let new = add(&root, "host-new", 0, 2, &address).await.unwrap();
    assert_eq!(new.id(), 2);
    let m = new.metadata();
    assert_eq!(m.hosts.len(), 3);
    assert_eq!(m.partitions.len(), 6);
    assert_eq!(m.active_partitions(), 4);
    for p in &m.partitions[4..] {
        assert!(p.joining);
        assert_eq!((p.replicas.clone(), p.leader), (vec![2], Some(2)));
    }
    let mut voters = nodes[0].voters();
    voters.sort_unstable();
    assert_eq!(voters, vec![0, 1, 2]);
    // Every member applies what follows, the new one included.
    let change = joule_cluster::Command::SetCatalogVersion { expected: 0, version: 5 };
    assert_eq!(new.propose(change).await.unwrap(), joule_cluster::CommandResult::Applied);
    for n in nodes.iter().chain([&new]) {
        n.wait_for(Duration::from_secs(10), |m| m.catalog_version == 5).await.unwrap();
    }
    // While its partitions join, no further host is admitted.
    let why = refused(&root, "host-more", 0, 2, &address).await;
    assert!(why.contains("still joining"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_k1_hosts_are_admitted_two_at_a_time_and_misfits_are_refused() {
    let root = dir("k1");
    let (nodes, address) = formed(&root, 2, 1, 2).await;
    let why = refused(&root, "host-odd", 1, 3, &address).await;
    assert!(why.contains("sites per host 3 (this cluster: 2)"), "{why}");
    let why = refused(&root, "host-k0", 0, 2, &address).await;
    assert!(why.contains("k-factor 0 (this cluster: 1)"), "{why}");
    // Asking a member that does not lead works as well as asking the leader.
    let follower = nodes.iter().find(|n| nodes[0].leader() != Some(n.id())).unwrap().address().to_string();
    let (root_a, root_b) = (&root, &root);
    let first = add(root_a, "host-a", 1, 2, &address);
    let second = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        add(root_b, "host-b", 1, 2, &follower).await
    };
    let (a, b) = tokio::join!(first, second);
    let (a, b) = (a.unwrap(), b.unwrap());
    let m = a.metadata();
    assert_eq!(m.hosts.len(), 4);
    assert_eq!(m.partitions.len(), 4, "2 sites on 2 new hosts, 2 copies each: 2 new partitions");
    let mut ids = vec![a.id(), b.id()];
    ids.sort_unstable();
    assert_eq!(ids, vec![2, 3]);
    for p in &m.partitions[2..] {
        let mut replicas = p.replicas.clone();
        replicas.sort_unstable();
        assert_eq!(replicas, vec![2, 3]);
    }
    assert_ne!(m.partitions[2].leader, m.partitions[3].leader, "the new hosts lead one each");
    // Four hosts, three voters: the highest id that does not lead (the
    // group's leader is one of the first two) follows as a learner.
    let mut voters = nodes[0].voters();
    voters.sort_unstable();
    assert_eq!(voters, vec![0, 1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_host_group_rides_out_the_loss_of_the_host_that_does_not_lead() {
    // Two voters would both be needed for every change, failover included;
    // with one voter and one learner, the leader fails the other host over
    // on its own.
    let root = dir("two");
    let (mut nodes, _) = formed(&root, 2, 1, 2).await;
    for n in &mut nodes {
        n.detect_failures(DetectorSettings::default());
    }
    let leader = nodes[0].leader().expect("the group has a leader");
    until("one voter, the leader", || nodes[0].voters() == vec![leader] && nodes[1].voters() == vec![leader]).await;
    let (stays, goes) = if leader == 0 { (0, 1) } else { (1, 0) };
    let other = nodes.remove(goes);
    assert!(!other.in_group(), "the other host follows as a learner");
    other.stop_serving().await;
    let m = nodes[0]
        .wait_for(Duration::from_secs(20), |m| m.hosts[&(goes as u64)].state == joule_cluster::HostState::Failed)
        .await
        .expect("the leader declares the silent host failed on its own");
    assert!(m.partitions.iter().all(|p| p.leader == Some(stays as u64)), "{:?}", m.partitions);
    let change = joule_cluster::Command::SetCatalogVersion { expected: 0, version: 7 };
    assert_eq!(nodes[0].propose(change).await.unwrap(), joule_cluster::CommandResult::Applied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_voter_hands_its_vote_to_the_learner() {
    // Four hosts: three voters and a learner. When a voter fails, the
    // learner votes in its place, so the group rides out the loss of a
    // second voter (with the votes left where they were, two of the three
    // voters would be gone and nothing could be recorded any more).
    use joule_cluster::HostState::Failed;
    let root = dir("handover");
    let (mut nodes, _) = formed(&root, 4, 1, 2).await;
    for n in &mut nodes {
        n.detect_failures(DetectorSettings::default());
    }
    nodes.sort_by_key(|n| n.id());
    let leader = nodes[0].leader().expect("the group has a leader");
    until("three voters", || nodes.iter().all(|n| n.voters().len() == 3)).await;
    let voters = nodes[0].voters();
    let learner = (0..4u64).find(|h| !voters.contains(h)).unwrap();
    let mut others = voters.iter().copied().filter(|h| *h != leader);
    let (first, second) = (others.next().unwrap(), others.next().unwrap());
    let mut stopped = Vec::new();
    for (goes, voters_after) in [(first, 3), (second, 3)] {
        nodes[goes as usize].stop_serving().await;
        stopped.push(goes);
        let m = nodes[leader as usize]
            .wait_for(Duration::from_secs(20), |m| m.hosts[&goes].state == Failed)
            .await
            .unwrap_or_else(|e| panic!("host {goes} was not declared failed: {e}"));
        assert_eq!(m.hosts.values().filter(|h| h.state == Failed).count(), stopped.len());
        if goes == first {
            until("the learner votes in the failed voter's place", || {
                let v = nodes[leader as usize].voters();
                v.len() == voters_after && v.contains(&learner) && !v.contains(&first)
            })
            .await;
        }
    }
    let change = joule_cluster::Command::SetCatalogVersion { expected: 0, version: 5 };
    assert_eq!(nodes[leader as usize].propose(change).await.unwrap(), joule_cluster::CommandResult::Applied);
}

/// Wait until `done` holds (10 s at most).
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "not within 10 s: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_hosts_leave_the_metadata_group_and_their_ids_are_not_given_again() {
    use joule_cluster::{Command, CommandResult};
    use joule_common::hashinator::Hashinator;
    let root = dir("remove");
    let (mut nodes, address) = formed(&root, 2, 1, 2).await;
    let (a, b) = tokio::join!(add(&root, "host-a", 1, 2, &address), add(&root, "host-b", 1, 2, &address));
    nodes.extend([a.unwrap(), b.unwrap()]);
    for n in &mut nodes {
        n.detect_failures(DetectorSettings::default());
    }
    // The join and the drain as the coordinator records them.
    let m = nodes[0].metadata();
    let (coordinator, incarnation) = (m.mp_coordinator.unwrap(), 0);
    let even = Hashinator::even(2, 1).unwrap();
    let ring = |version, count| Hashinator::over(version, even.ring().to_vec(), count).unwrap();
    let joined = Command::PartitionsJoined { coordinator, incarnation, ring: ring(2, 4), txn: 1 };
    assert_eq!(nodes[0].propose(joined).await.unwrap(), CommandResult::Applied);
    let remove = Command::RemoveHosts { hosts: [2, 3].into() };
    assert_eq!(nodes[1].propose(remove).await.unwrap(), CommandResult::Applied);
    let left = Command::PartitionsLeft { coordinator, incarnation, ring: ring(3, 2), txn: 2 };
    assert_eq!(nodes[0].propose(left).await.unwrap(), CommandResult::Applied);

    // Two hosts of four leave: the quorum of those that stay must not
    // count them, or the group would stall once they stop; of the two that
    // stay, the leader votes and the other follows (an odd number of
    // voters).
    let leader = nodes[0].leader().expect("the group has a leader");
    until("the removed hosts are out of the group", || {
        let members: Vec<u64> = nodes[0].members();
        nodes[0].voters() == vec![leader] && members == vec![0, 1]
    })
    .await;
    until("each removed host knows", || !nodes[2].in_group() && !nodes[3].in_group()).await;
    assert!(nodes[leader as usize].in_group() && !nodes[1 - leader as usize].in_group());
    for n in nodes.drain(2..) {
        n.shutdown().await;
    }
    let change = Command::SetCatalogVersion { expected: 0, version: 3 };
    assert_eq!(nodes[1].propose(change).await.unwrap(), CommandResult::Applied);
    let m = nodes[0].metadata();
    assert_eq!((m.hosts.len(), m.partitions.len(), m.retired.len()), (2, 2, 2));
    // The cluster grows again, past the retired ids.
    let (c, d) = tokio::join!(add(&root, "host-c", 1, 2, &address), add(&root, "host-d", 1, 2, &address));
    let mut ids = vec![c.unwrap().id(), d.unwrap().id()];
    ids.sort_unstable();
    assert_eq!(ids, vec![4, 5]);
}
