//! Failure detection: every host pings every host the metadata says is
//! up. The metadata group's leader declares dead (`Command::HostFailed`) a
//! host that has not answered it for the configured timeout — a crashed
//! process, a stopped one (`SIGSTOP`: its socket accepts, nothing
//! answers), or a host cut off from the leader. Any other host that
//! cannot reach a host for as long reports it (`Command::HostUnreachable`):
//! the network between two hosts can be cut while both still reach the
//! leader, and replication between them would stall for as long as the
//! cut lasts. The group fails the host reported, unless the reporter is
//! down by then (the other end's report came first: exactly one of the
//! two goes) or failing it would leave a partition without a running copy.
//! A refused report (or a refused failure, on the leader) is not made again
//! at once: it waits twice the timeout, then twice as long each time (up to
//! 30 s), until the host answers or any host's state changes — a cut that
//! lasts does not put a proposal through the group every second.
//!
//! A host whose internal port refuses connections twice in a row (its
//! process is gone) is failed without waiting for the timeout. The leader
//! decides alone, so hosts do not race to fail each other for silence it
//! sees too; a new leader starts every host's clock afresh (a grace period
//! of one timeout), except the previous leader's, which has been silent
//! for an election timeout already. The leader, like a reporter, also needs
//! several missed pings in a row, so that a pause of its own (a stall
//! longer than the timeout: its runtime busy, its process starved of CPU)
//! is not taken for the silence of everyone else — a whole-cluster restart,
//! every host replaying its copy logs on the same cores, once had the
//! leader ping each host once in a second and fail two that were only slow.
//! The decision goes through the group like any change, so it needs a
//! quorum: a leader cut off from the majority cannot fail anyone (its
//! proposal never commits), while the majority's new leader fails it.
//! What happens to the failed host's partitions is `metadata.rs`'s
//! failover rule.

use crate::metadata::{Command, CommandResult, HostState};
use crate::network::{Peer, Reply, Request, Routes};
use crate::node::Proposer;
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

/// Pings in a row a host must miss before it is failed (by the leader) or
/// reported unreachable (by another host) for its silence.
const MISSED_TO_REPORT: u32 = 3;
/// A report the group refused (failing the host would leave a partition
/// without a running copy, say) is not made again for twice the timeout,
/// then twice as long each time, up to this — unless the host answers
/// meanwhile, or any host's state changes (a copy may have come back).
const MAX_HOLD_BACK: Duration = Duration::from_secs(30);

/// Run failure detection for host `me` until the task is aborted.
pub(crate) async fn run(
    me: HostId,
    raft: Raft<TypeConfig>,
    metadata: watch::Receiver<ClusterMetadata>,
    routes: Routes,
    proposer: Proposer,
    settings: DetectorSettings,
) {
    // Per host: when it last answered, pings missed and refusals in a row,
    // and a connection to ping it on.
    let mut heard: BTreeMap<HostId, Instant> = BTreeMap::new();
    let mut incarnations: BTreeMap<HostId, u64> = BTreeMap::new();
    let mut refused: BTreeMap<HostId, u32> = BTreeMap::new();
    let mut missed: BTreeMap<HostId, u32> = BTreeMap::new();
    let mut peers: BTreeMap<HostId, Peer> = BTreeMap::new();
    // Reports in flight, by the host reported (each ends with the group's
    // refusal, if it refused).
    let mut reports: BTreeMap<HostId, tokio::task::JoinHandle<Option<String>>> = BTreeMap::new();
    // Hosts whose report was refused: not reported again until then, and
    // the wait after the next refusal.
    let mut held_back: BTreeMap<HostId, (Instant, Duration)> = BTreeMap::new();
    // The hosts' states when last looked at: a change may make a refused
    // report acceptable (a copy came back), so it ends every hold.
    let mut states_before: Vec<(HostId, HostState, u64)> = Vec::new();
    let mut was_leader = false;
    let mut previous_leader = None;
    let mut tick = tokio::time::interval(settings.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let current = raft.metrics().borrow().current_leader;
        let leading = current == Some(me);
        let now = Instant::now();
        if leading && !was_leader {
            // Newly leading: everyone gets a full timeout from now — except
            // the previous leader, silent for at least an election timeout
            // already, or there would have been no election.
            heard.clear();
            refused.clear();
            missed.clear();
            if let Some(p) = previous_leader.filter(|p| *p != me) {
                heard.insert(p, now.checked_sub(ELECTION_SILENCE).unwrap_or(now));
            }
        }
        was_leader = leading;
        if !leading {
            previous_leader = current.or(previous_leader);
        }
        let m = metadata.borrow().clone();
        let my_incarnation = match m.hosts.get(&me) {
            Some(h) if h.state == HostState::Up => h.incarnation,
            // Down (or rejoining): the others watch this host, not it them.
            _ if !leading => continue,
            _ => 0,
        };
        let states: Vec<(HostId, HostState, u64)> =
            m.hosts.iter().map(|(id, h)| (*id, h.state, h.incarnation)).collect();
        if states != states_before {
            held_back.clear();
            states_before = states;
        }
        // A host that rejoined is a new incarnation: its clock starts afresh.
        for (id, h) in &m.hosts {
            if incarnations.insert(*id, h.incarnation).is_some_and(|before| before != h.incarnation) {
                heard.remove(id);
                refused.remove(id);
                missed.remove(id);
                held_back.remove(id);
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
            let misses = missed.entry(id).or_default();
            if answered {
                *last = Instant::now();
                *misses = 0;
                held_back.remove(&id);
            } else {
                *misses += 1;
            }
            let count = refused.entry(id).or_default();
            *count = if was_refused { *count + 1 } else { 0 };
        }
        let finished: Vec<HostId> = reports.iter().filter(|(_, r)| r.is_finished()).map(|(id, _)| *id).collect();
        for id in finished {
            let refusal = reports.remove(&id).and_then(futures::FutureExt::now_or_never).and_then(Result::ok);
            if let Some(why) = refusal.flatten() {
                let wait = hold_back(&mut held_back, id, settings.timeout);
                eprintln!("joule: report on host {id} refused: {why}; not reported again for {wait:?}");
            }
        }
        for (id, _) in &up {
            let silent = heard.get(id).is_some_and(|t| t.elapsed() >= settings.timeout);
            let refusals = refused.get(id).copied().unwrap_or(0);
            let gone = refusals >= REFUSALS;
            let waiting = held_back.get(id).is_some_and(|(until, _)| *until > now);
            let misses = missed.get(id).copied().unwrap_or(0);
            if !failed_by_what_was_seen(silent, refusals, misses) || reports.contains_key(id) || waiting {
                continue;
            }
            heard.remove(id);
            refused.remove(id);
            missed.remove(id);
            peers.remove(id);
            let incarnation = m.hosts.get(id).map_or(0, |h| h.incarnation);
            let why =
                if gone { "refused connections".to_string() } else { format!("was silent for {:?}", settings.timeout) };
            if leading {
                // Through the group: it commits only with a quorum.
                let proposed = tokio::time::timeout(
                    settings.timeout,
                    raft.client_write(crate::node::proposal(
                        me,
                        Command::HostFailed { host: *id, incarnation: Some(incarnation) },
                    )),
                );
                if let Ok(Ok(r)) = proposed.await {
                    match r.data {
                        CommandResult::Applied => eprintln!("joule: host {id} {why}: declared failed"),
                        CommandResult::Refused(refusal) => {
                            let wait = hold_back(&mut held_back, *id, settings.timeout);
                            eprintln!(
                                "joule: host {id} {why}, but failing it was refused: {refusal}; not tried again \
                                       for {wait:?}"
                            );
                        }
                    }
                }
            } else {
                let command = Command::HostUnreachable {
                    reporter: me,
                    reporter_incarnation: my_incarnation,
                    host: *id,
                    incarnation,
                };
                let (proposer, id) = (proposer.clone(), *id);
                reports.insert(
                    id,
                    tokio::spawn(async move {
                        match proposer.propose_within(command, settings.timeout).await {
                            Ok(CommandResult::Applied) => {
                                eprintln!("joule: host {id} {why} (unreachable from host {me}): declared failed");
                                None
                            }
                            Ok(CommandResult::Refused(reason)) => Some(reason),
                            // No answer from the group: the next round tries again.
                            Err(_) => None,
                        }
                    }),
                );
            }
        }
    }
}

/// Whether what was seen of a host fails it (the leader) or gets it
/// reported (another host): its process gone (`refusals` in a row), or
/// `silent` for the timeout with at least [`MISSED_TO_REPORT`] pings in a
/// row unanswered — silence alone may be the watcher's own stall.
fn failed_by_what_was_seen(silent: bool, refusals: u32, misses: u32) -> bool {
    refusals >= REFUSALS || (silent && misses >= MISSED_TO_REPORT)
}

/// `id`'s report was refused: hold the next one back (twice the timeout,
/// then twice the last wait, up to [`MAX_HOLD_BACK`]); how long.
fn hold_back(held_back: &mut BTreeMap<HostId, (Instant, Duration)>, id: HostId, timeout: Duration) -> Duration {
    let wait = held_back.get(&id).map_or(2 * timeout, |(_, last)| (*last * 2).min(MAX_HOLD_BACK));
    held_back.insert(id, (Instant::now() + wait, wait));
    wait
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_fails_a_host_only_with_pings_missed_in_a_row() {
        // The watcher pinged once in its timeout (it was stalled itself).
        assert!(!failed_by_what_was_seen(true, 0, 1));
        assert!(!failed_by_what_was_seen(true, 0, MISSED_TO_REPORT - 1));
        assert!(failed_by_what_was_seen(true, 0, MISSED_TO_REPORT));
        // Missed pings without the timeout's silence (a slow answer since).
        assert!(!failed_by_what_was_seen(false, 0, MISSED_TO_REPORT));
        // Nothing listens on its port: failed before the timeout.
        assert!(failed_by_what_was_seen(false, REFUSALS, 0));
        assert!(!failed_by_what_was_seen(false, REFUSALS - 1, 0));
    }

    #[test]
    fn a_refused_report_waits_longer_each_time_up_to_a_bound() {
        let mut held = BTreeMap::new();
        let timeout = Duration::from_secs(1);
        let waits: Vec<Duration> = (0..8).map(|_| hold_back(&mut held, 4, timeout)).collect();
        assert_eq!(waits[..4], [2, 4, 8, 16].map(Duration::from_secs));
        assert!(waits[4..].iter().all(|w| *w == MAX_HOLD_BACK));
        assert!(held[&4].0 > Instant::now() + Duration::from_secs(29));
        // Another host's reports are their own.
        assert_eq!(hold_back(&mut held, 5, timeout), Duration::from_secs(2));
    }
}
