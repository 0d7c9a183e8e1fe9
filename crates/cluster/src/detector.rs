//! Failure detection: the metadata group's leader pings every host the
//! metadata says is up, and declares dead (`Command::HostFailed`) a host
//! that has not answered for the configured timeout — a crashed process,
//! a stopped one (`SIGSTOP`: its socket accepts, nothing answers), or a
//! host cut off from the leader.
//!
//! Only the leader decides, so hosts do not race to fail each other; a new
//! leader starts every host's clock afresh (a grace period of one timeout).
//! The decision goes through the group like any change, so it needs a
//! quorum: a leader cut off from the majority cannot fail anyone (its
//! proposal never commits), while the majority's new leader fails it.
//! What happens to the failed host's partitions is `metadata.rs`'s
//! failover rule.

use crate::metadata::{Command, CommandResult, HostState};
use crate::network::{Peer, Reply, Request, Routes};
use crate::{ClusterMetadata, HostId, TypeConfig};
use openraft::Raft;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// How often hosts are pinged and how long one may stay silent.
#[derive(Clone, Copy, Debug)]
pub struct DetectorSettings {
    pub interval: Duration,
    pub timeout: Duration,
}

impl Default for DetectorSettings {
    /// Pings every 200 ms; silent for 1 s means dead — with an election
    /// (0.4–0.8 s) when the dead host led the group, failover stays within
    /// about 2 s.
    fn default() -> Self {
        DetectorSettings { interval: Duration::from_millis(200), timeout: Duration::from_secs(1) }
    }
}

/// Run failure detection for host `me` until the task is aborted.
pub(crate) async fn run(
    me: HostId,
    raft: Raft<TypeConfig>,
    metadata: watch::Receiver<ClusterMetadata>,
    routes: Routes,
    settings: DetectorSettings,
) {
    // Per host: when it last answered, and a connection to ping it on.
    let mut heard: BTreeMap<HostId, Instant> = BTreeMap::new();
    let mut peers: BTreeMap<HostId, Peer> = BTreeMap::new();
    let mut was_leader = false;
    let mut tick = tokio::time::interval(settings.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let leading = raft.metrics().borrow().current_leader == Some(me);
        if !leading {
            was_leader = false;
            continue;
        }
        if !was_leader {
            // Newly leading: everyone gets a full timeout from now.
            heard.clear();
            was_leader = true;
        }
        let m = metadata.borrow().clone();
        let up: Vec<(HostId, String)> = m
            .hosts
            .iter()
            .filter(|(id, h)| **id != me && h.state == HostState::Up)
            .map(|(id, h)| (*id, routes.address(*id, &h.internal_address)))
            .collect();
        let now = Instant::now();
        // Ping every up host at once; each waits at most one interval.
        let pings = up.iter().map(|(id, address)| {
            let mut peer = peers.remove(id).unwrap_or_else(|| Peer::new(*id, address.clone()));
            let id = *id;
            async move {
                let answered = matches!(peer.call(&Request::Ping, settings.interval).await, Ok(Reply::Pong));
                (id, peer, answered)
            }
        });
        for (id, peer, answered) in futures::future::join_all(pings).await {
            peers.insert(id, peer);
            let last = heard.entry(id).or_insert(now);
            if answered {
                *last = Instant::now();
            }
        }
        for (id, _) in &up {
            if heard.get(id).is_some_and(|t| t.elapsed() >= settings.timeout) {
                heard.remove(id);
                peers.remove(id);
                // Through the group: it commits only with a quorum.
                let proposed =
                    tokio::time::timeout(settings.timeout, raft.client_write(Command::HostFailed { host: *id }));
                if let Ok(Ok(r)) = proposed.await {
                    if r.data == CommandResult::Applied {
                        eprintln!("joule: host {id} did not answer for {:?}: declared failed", settings.timeout);
                    }
                }
            }
        }
    }
}
