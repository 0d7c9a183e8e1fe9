//! Who votes in the metadata group.
//!
//! Every host of the cluster is a member of the metadata group, but not
//! every member votes: the voters are always an odd number. An even
//! number of voters survives no more failures than one voter fewer — two
//! survive none, four survive one, as three do — and costs a larger
//! quorum on every write. So when the cluster has an even number of hosts,
//! one of them is kept a learner: it follows the group's log (and takes
//! over nothing but its vote), and its failure is one the others ride out.
//! The one kept out ([`voters_for`]) is never the leader; it is a member
//! that is down (failed or stopped) if there is one, so a voter's failure
//! hands its vote to the learner and the group rides out one more —
//! with voters {0, 1, 2} and learner 3, the failure of 2 makes 3 a voter,
//! and the failure of 1 after it leaves two of three voting. Otherwise it
//! is the member kept out already (a host coming back does not move the
//! votes again), and failing that the one with the highest id: after a
//! host is added to a one-host cluster, the first host keeps the group
//! going alone when the second one fails — where two voters would both
//! have been needed for every change, failover included. (The first
//! host's own failure still stops the group until it is back: one voter
//! is no more than that.)
//!
//! The rule is applied where membership changes: the admission of new
//! hosts (`admission.rs`) makes exactly the voters [`voters_for`] names;
//! and [`settle_members`], a task on every member that acts while it
//! leads, brings the group there after the cluster formed (formation makes
//! every host a voter) and after a removal, and takes retired hosts out of
//! the group (see `removal.rs`). It changes membership only while no
//! admission is under way, so the two never race.

use crate::metadata::{ClusterMetadata, HostId, HostState};
use crate::TypeConfig;
use openraft::{ChangeMembers, Raft};
use std::collections::BTreeSet;
use std::time::Duration;

/// How long one change of membership may take before the task lets go
/// (and tries again on its next round).
const CHANGE_PATIENCE: Duration = Duration::from_secs(10);

/// The voters for a group of `members` led by `leader`: all of them, or —
/// when they are an even number — all but one other than the leader. The
/// one kept out is, first choice, a member that is `down` (failed or
/// stopped: its vote would count toward nothing); else the one kept out
/// now (a member not among the `current` voters), so a host coming back
/// does not move the votes again; else the one with the highest id.
pub(crate) fn voters_for(
    members: &BTreeSet<HostId>,
    leader: HostId,
    down: &BTreeSet<HostId>,
    current: &BTreeSet<HostId>,
) -> BTreeSet<HostId> {
    let mut voters = members.clone();
    if voters.len().is_multiple_of(2) {
        let others = || voters.iter().rev().filter(|h| **h != leader);
        let out = others()
            .find(|h| down.contains(h))
            .or_else(|| others().find(|h| !current.contains(h)))
            .or_else(|| others().next())
            .copied();
        if let Some(out) = out {
            voters.remove(&out);
        }
    }
    voters
}

/// The hosts of `metadata` that are failed or stopped.
pub(crate) fn down_hosts(metadata: &ClusterMetadata) -> BTreeSet<HostId> {
    let down = |s: &HostState| matches!(s, HostState::Failed | HostState::Stopped);
    metadata.hosts.iter().filter(|(_, i)| down(&i.state)).map(|(h, _)| *h).collect()
}

/// While host `me` leads the metadata group: take the hosts the metadata
/// retired out of the group (voters and learners), so that its quorum no
/// longer counts them, and make the voters those [`voters_for`] names
/// among the hosts that stay (demoted ones stay members, as learners).
/// Acts on each change of the metadata, and each second; runs until the
/// metadata's sender goes (the member stopped).
pub(crate) async fn settle_members(
    me: HostId,
    raft: Raft<TypeConfig>,
    mut metadata: tokio::sync::watch::Receiver<ClusterMetadata>,
    admissions: std::sync::Arc<crate::admission::Admissions>,
) {
    loop {
        if let Ok(Err(_)) = tokio::time::timeout(Duration::from_secs(1), metadata.changed()).await {
            return;
        }
        if !metadata.borrow().formed {
            continue;
        }
        // Not while hosts are being admitted: they change membership too
        // (and membership is read under this, so none changes meanwhile).
        let Some(_quiet) = admissions.quiet() else { continue };
        let (leading, members, voters) = {
            let metrics = raft.metrics();
            let m = metrics.borrow();
            let membership = m.membership_config.membership();
            let members: BTreeSet<HostId> = membership.nodes().map(|(id, _)| *id).collect();
            let voters: BTreeSet<HostId> = membership.voter_ids().collect();
            (m.current_leader == Some(me), members, voters)
        };
        if !leading {
            continue;
        }
        let (retired, staying, down) = {
            let m = metadata.borrow();
            let retired: BTreeSet<HostId> = m.retired.intersection(&members).copied().collect();
            let staying: BTreeSet<HostId> = m.hosts.keys().filter(|h| members.contains(h)).copied().collect();
            (retired, staying, down_hosts(&m))
        };
        let wanted = voters_for(&staying, me, &down, &voters);
        // Each change within a bound: one that cannot commit (the group
        // lost its quorum meanwhile) must not hold admissions off for good.
        let change = |members| tokio::time::timeout(CHANGE_PATIENCE, raft.change_membership(members, true));
        if !wanted.is_empty() && wanted != voters {
            // `true`: a voter no longer wanted stays a member, as a learner.
            match change(ChangeMembers::ReplaceAllVoters(wanted.clone())).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    eprintln!("joule: the metadata group's voters could not become {wanted:?} yet: {e}");
                    continue;
                }
                Err(_) => {
                    eprintln!(
                        "joule: the metadata group's voters did not become {wanted:?} within {CHANGE_PATIENCE:?}"
                    );
                    continue;
                }
            }
        }
        if !retired.is_empty() {
            match change(ChangeMembers::RemoveNodes(retired.clone())).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    eprintln!("joule: the removed hosts {retired:?} could not leave the metadata group yet: {e}")
                }
                Err(_) => eprintln!(
                    "joule: the removed hosts {retired:?} did not leave the metadata group within {CHANGE_PATIENCE:?}"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[HostId]) -> BTreeSet<HostId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn the_voters_are_always_an_odd_number_and_include_the_leader() {
        let none = set(&[]);
        let all = |ids: &[HostId]| set(ids);
        assert_eq!(voters_for(&set(&[0]), 0, &none, &all(&[0])), set(&[0]));
        assert_eq!(voters_for(&set(&[0, 1]), 0, &none, &all(&[0, 1])), set(&[0]));
        assert_eq!(voters_for(&set(&[0, 1]), 1, &none, &all(&[0, 1])), set(&[1]), "the leader keeps its vote");
        assert_eq!(voters_for(&set(&[0, 1, 2]), 1, &none, &all(&[0, 1])), set(&[0, 1, 2]));
        assert_eq!(voters_for(&set(&[0, 1, 2, 3]), 0, &none, &all(&[0, 1, 2, 3])), set(&[0, 1, 2]));
        assert_eq!(voters_for(&set(&[0, 1, 2, 3]), 3, &none, &all(&[0, 1, 2, 3])), set(&[0, 1, 3]));
        assert_eq!(voters_for(&set(&[2, 5, 7, 9]), 9, &none, &all(&[2, 5, 7, 9])), set(&[2, 5, 9]));
        for n in 1..10u64 {
            let members: BTreeSet<HostId> = (0..n).collect();
            for leader in 0..n {
                for down in 0..n {
                    let v = voters_for(&members, leader, &set(&[down]), &members);
                    assert_eq!(v.len() % 2, 1, "{n} members");
                    assert!(v.contains(&leader) && v.is_subset(&members) && v.len() + 1 >= members.len());
                }
            }
        }
    }

    #[test]
    fn a_host_that_is_down_gives_its_vote_to_one_that_is_up() {
        let members = set(&[0, 1, 2, 3]);
        // Voters {0, 1, 2}, 3 a learner: voter 2 fails, so 3 votes instead —
        // and a second failure among the voters is one the group survives.
        assert_eq!(voters_for(&members, 0, &set(&[2]), &set(&[0, 1, 2])), set(&[0, 1, 3]));
        // Host 2 back up: the votes stay where they are.
        assert_eq!(voters_for(&members, 0, &set(&[]), &set(&[0, 1, 3])), set(&[0, 1, 3]));
        // The learner failing changes nothing.
        assert_eq!(voters_for(&members, 0, &set(&[3]), &set(&[0, 1, 2])), set(&[0, 1, 2]));
        // Two down of four: one of them is kept out, the other still votes
        // (any three of the four would include one of them).
        assert_eq!(voters_for(&members, 0, &set(&[1, 2]), &set(&[0, 1, 2])), set(&[0, 1, 3]));
        // Odd: everyone votes, down or not.
        assert_eq!(voters_for(&set(&[0, 1, 2]), 0, &set(&[2]), &set(&[0, 1, 2])), set(&[0, 1, 2]));
    }
}
