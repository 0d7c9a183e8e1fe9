//! Failure detection: the metadata group's leader pings every host the
//! metadata says is up, and declares dead (`Command::HostFailed`) a host
//! that has not answered for the configured timeout — a crashed process,
//! a stopped one (`SIGSTOP`: its socket accepts, nothing answers), or a
//! host cut off from the leader.
//!
//! A host whose internal port refuses connections twice in a row (its
//! process is gone) is failed without waiting for the timeout. Only the
//! leader decides, so hosts do not race to fail each other; a new leader
//! starts every host's clock afresh (a grace period of one timeout), except
//! the previous leader's, which has been silent for an election timeout
//! already.
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

/// How long followers heard nothing from a leader before electing another
/// (the metadata group's shortest election timeout).
const ELECTION_SILENCE: Duration = Duration::from_millis(400);
/// Refused connections in a row (nothing listens on the host's internal
/// port: its process is gone) that fail a host before the timeout.
const REFUSALS: u32 = 2;

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
    // Per host: when it last answered, refusals in a row, and a
    // connection to ping it on.
    let mut heard: BTreeMap<HostId, Instant> = BTreeMap::new();
    let mut incarnations: BTreeMap<HostId, u64> = BTreeMap::new();
    let mut refused: BTreeMap<HostId, u32> = BTreeMap::new();
    let mut peers: BTreeMap<HostId, Peer> = BTreeMap::new();
    let mut was_leader = false;
    let mut previous_leader = None;
    let mut tick = tokio::time::interval(settings.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let current = raft.metrics().borrow().current_leader;
        if current != Some(me) {
            was_leader = false;
            previous_leader = current.or(previous_leader);
            continue;
        }
        let now = Instant::now();
        if !was_leader {
            // Newly leading: everyone gets a full timeout from now — except
            // the previous leader, silent for at least an election timeout
            // already, or there would have been no election.
            heard.clear();
            refused.clear();
            if let Some(p) = previous_leader.filter(|p| *p != me) {
                heard.insert(p, now.checked_sub(ELECTION_SILENCE).unwrap_or(now));
            }
            was_leader = true;
        }
        let m = metadata.borrow().clone();
        // A host that rejoined is a new incarnation: its clock starts afresh.
        for (id, h) in &m.hosts {
            if incarnations.insert(*id, h.incarnation).is_some_and(|before| before != h.incarnation) {
                heard.remove(id);
                refused.remove(id);
            }
        }
        let up: Vec<(HostId, String)> = m
            .hosts
            .iter()
            .filter(|(id, h)| **id != me && h.state == HostState::Up)
            .map(|(id, h)| (*id, routes.address(*id, &h.internal_address)))
            .collect();
        // Ping every up host at once; each waits at most one interval.
        let pings = up.iter().map(|(id, address)| {
            let mut peer = peers.remove(id).unwrap_or_else(|| Peer::new(*id, address.clone()));
            let id = *id;
            async move {
                let answer = peer.exchange(&Request::Ping, settings.interval).await;
                let answered = matches!(answer, Ok(Reply::Pong));
                // Nothing listens there: the process is gone.
                let was_refused =
                    matches!(&answer, Err((false, e)) if e.kind() == std::io::ErrorKind::ConnectionRefused);
                (id, peer, answered, was_refused)
            }
        });
        for (id, peer, answered, was_refused) in futures::future::join_all(pings).await {
            peers.insert(id, peer);
            let last = heard.entry(id).or_insert(now);
            if answered {
                *last = Instant::now();
            }
            let count = refused.entry(id).or_default();
            *count = if was_refused { *count + 1 } else { 0 };
        }
        for (id, _) in &up {
            let silent = heard.get(id).is_some_and(|t| t.elapsed() >= settings.timeout);
            let gone = refused.get(id).is_some_and(|n| *n >= REFUSALS);
            if silent || gone {
                heard.remove(id);
                refused.remove(id);
                peers.remove(id);
                // Through the group: it commits only with a quorum.
                let proposed = tokio::time::timeout(
                    settings.timeout,
                    raft.client_write(crate::node::proposal(
                        me,
                        Command::HostFailed { host: *id, incarnation: m.hosts.get(id).map(|h| h.incarnation) },
                    )),
                );
                if let Ok(Ok(r)) = proposed.await {
                    if r.data == CommandResult::Applied {
                        let why = if gone {
                            "refused connections".to_string()
                        } else {
                            format!("was silent for {:?}", settings.timeout)
                        };
                        eprintln!("joule: host {id} {why}: declared failed");
                    }
                }
            }
        }
    }
}
