//! Admitting new hosts to a running cluster: the first step of elastic
//! scaling (the metadata's side is `elastic.rs`).
//!
//! A host started with `--add` and `--join HOST...` asks to be admitted in
//! two rounds, each answered by the metadata group's leader (any other
//! member answers with the leader's address, and the host asks there):
//!
//! 1. **Reserve**: the leader checks that the host's settings fit the
//!    cluster (k-factor, sites per host) and that hosts may be added now
//!    (formed, nothing joining, every host up), and reserves the next host
//!    id for it (a retried request from the same address gets the same
//!    one). The host starts its member of the group with that id.
//! 2. **Ready**: the leader adds the member as a learner and waits until
//!    it has caught up with the group's log. Hosts are added k+1 at a time
//!    (each new partition has a copy on every one of them): once k+1 are
//!    caught up, the leader makes them voters (all but one when the hosts
//!    would be an even number, see `voters.rs`) and proposes
//!    `Command::AddHosts`. Every ready host's answer waits until the
//!    metadata names it.
//!
//! Reservations live in the leader's memory only. If the leader changes
//! meanwhile, the new one knows none of them: a host's Ready is refused and
//! it stops, saying to start it again with an empty directory (its member
//! may hold the group's log under an id another host will be given).
//! A host that stops after it was reserved and before it is admitted
//! leaves a reservation behind, which is harmless: ids are never reused
//! while a reservation holds them, and nothing else refers to it.

use crate::metadata::{ClusterMetadata, Command, CommandResult, HostId, HostInfo, HostState};
use crate::network::{Peer, Reply, Request};
use crate::{MetadataNode, TypeConfig};
use joule_common::{bail, err, Result};
use openraft::{BasicNode, ChangeMembers, Raft};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long a ready host waits for the others of its k+1 (and for its
/// member to catch up with the group's log).
pub const ADMISSION_PATIENCE: Duration = Duration::from_secs(600);

/// A new host's request to be admitted.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AdmitRequest {
    pub internal_port: u16,
    pub client_port: u16,
    pub advertise: Option<String>,
    pub kfactor: u32,
    pub sites_per_host: u32,
    /// `None`: reserve an id; `Some`: the member runs with this id.
    pub id: Option<HostId>,
    /// The data-plane protocol the new host speaks (0: a build from before
    /// protocol versions, which does not send it).
    #[serde(default)]
    pub protocol: u16,
}

/// The answer to an [`AdmitRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdmitReply {
    /// Ask the group's leader, at this address.
    AskLeader(String),
    /// Start the member with this id, then say it is ready.
    Reserved(HostId),
    /// The metadata names the host: it is a member.
    Admitted,
}

/// The leader's admissions under way.
#[derive(Default)]
pub(crate) struct Admissions {
    pending: tokio::sync::Mutex<Pending>,
}

#[derive(Default)]
pub(crate) struct Pending {
    /// Reserved ids and what the hosts will be recorded as.
    reserved: BTreeMap<HostId, HostInfo>,
    /// Reserved hosts whose members caught up as learners.
    ready: BTreeSet<HostId>,
}

impl Admissions {
    /// No admission under way: held, none starts (see `crate::voters`).
    pub(crate) fn quiet(&self) -> Option<tokio::sync::MutexGuard<'_, Pending>> {
        self.pending.try_lock().ok()
    }

    /// Answer `request` from `peer` on this member (see the module doc).
    pub(crate) async fn answer(
        &self,
        raft: &Raft<TypeConfig>,
        metadata: &tokio::sync::watch::Receiver<ClusterMetadata>,
        request: AdmitRequest,
        peer: SocketAddr,
    ) -> std::result::Result<AdmitReply, String> {
        let metrics = raft.metrics().borrow().clone();
        if metrics.current_leader != Some(metrics.id) {
            let leader = metrics
                .current_leader
                .and_then(|l| metrics.membership_config.membership().get_node(&l).map(|n| n.addr.clone()));
            return leader.map(AdmitReply::AskLeader).ok_or_else(|| "the metadata group has no leader now".into());
        }
        let m = metadata.borrow().clone();
        if let Some(why) = unfit(&m, &request) {
            return Err(why);
        }
        let host = request.advertise.clone().unwrap_or_else(|| peer.ip().to_string());
        let info = HostInfo {
            internal_address: crate::formation::address(&host, request.internal_port),
            client_address: crate::formation::address(&host, request.client_port),
            state: HostState::Up,
            incarnation: 0,
        };
        let Some(id) = request.id else {
            let mut pending = self.pending.lock().await;
            if let Some((id, _)) = pending.reserved.iter().find(|(_, h)| h.internal_address == info.internal_address) {
                return Ok(AdmitReply::Reserved(*id));
            }
            let id = m.hosts.keys().chain(&m.retired).chain(pending.reserved.keys()).max().map_or(0, |h| h + 1);
            pending.reserved.insert(id, info);
            return Ok(AdmitReply::Reserved(id));
        };
        if m.hosts.contains_key(&id) {
            return Ok(AdmitReply::Admitted);
        }
        {
            let mut pending = self.pending.lock().await;
            match pending.reserved.get(&id) {
                Some(h) if h.internal_address == info.internal_address => {}
                _ => {
                    return Err(format!(
                        "host id {id} is not reserved for {} here (the metadata group's leader changed?): start \
                         this host again with an empty directory",
                        info.internal_address
                    ))
                }
            }
            let node = BasicNode { addr: info.internal_address.clone() };
            match tokio::time::timeout(ADMISSION_PATIENCE, raft.add_learner(id, node, true)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(format!("host {id} could not be added to the metadata group: {e}")),
                Err(_) => return Err(format!("host {id} did not catch up with the metadata group in time")),
            }
            pending.ready.insert(id);
            let copies = m.kfactor as usize + 1;
            if pending.ready.len() >= copies {
                let ids: BTreeSet<HostId> = pending.ready.iter().copied().take(copies).collect();
                let hosts: BTreeMap<HostId, HostInfo> =
                    ids.iter().filter_map(|id| pending.reserved.get(id).map(|h| (*id, h.clone()))).collect();
                // Voters as `crate::voters` has them: an odd number.
                let (members, down) = {
                    let m = metadata.borrow();
                    let members: BTreeSet<HostId> = m.hosts.keys().chain(&ids).copied().collect();
                    (members, crate::voters::down_hosts(&m))
                };
                let current: BTreeSet<HostId> =
                    raft.metrics().borrow().membership_config.membership().voter_ids().collect();
                let voters = crate::voters::voters_for(&members, metrics.id, &down, &current);
                if let Err(e) = raft.change_membership(ChangeMembers::ReplaceAllVoters(voters), true).await {
                    return Err(format!("hosts {ids:?} could not join the metadata group's members: {e}"));
                }
                let proposal = crate::node::proposal(metrics.id, Command::AddHosts { hosts });
                match crate::node::propose_here(raft, proposal).await {
                    Ok((CommandResult::Applied, _)) => {}
                    Ok((CommandResult::Refused(why), _)) => {
                        return Err(format!("the cluster refused the hosts: {why}"))
                    }
                    Err(e) => return Err(format!("the hosts could not be recorded: {e}")),
                }
                for id in &ids {
                    pending.ready.remove(id);
                    pending.reserved.remove(id);
                }
            }
        }
        // Wait for the rest of this host's k+1 (or the metadata to apply).
        let mut watch = metadata.clone();
        let named = tokio::time::timeout(ADMISSION_PATIENCE, watch.wait_for(|m| m.hosts.contains_key(&id))).await;
        match named {
            Ok(Ok(_)) => Ok(AdmitReply::Admitted),
            _ => Err(format!("host {id} was not admitted in time: the other hosts of its k+1 did not come")),
        }
    }
}

/// Why `request` cannot be admitted to the cluster `m` describes now.
fn unfit(m: &ClusterMetadata, request: &AdmitRequest) -> Option<String> {
    if !m.formed {
        return Some("the cluster has not formed yet".into());
    }
    let mut wrong = Vec::new();
    if request.kfactor != m.kfactor {
        wrong.push(format!("k-factor {} (this cluster: {})", request.kfactor, m.kfactor));
    }
    if request.sites_per_host != m.sites_per_host {
        wrong.push(format!("sites per host {} (this cluster: {})", request.sites_per_host, m.sites_per_host));
    }
    if !wrong.is_empty() {
        return Some(format!("the new host was started with {}", wrong.join(", ")));
    }
    if let Some(why) = crate::network::protocol_mismatch(request.protocol) {
        return Some(format!("the new host cannot be added: {why}"));
    }
    if m.joining() {
        return Some("hosts added before are still joining: add more once they have".into());
    }
    if m.removing.is_some() {
        return Some("hosts are being removed: add more once they have left".into());
    }
    if let Some((h, info)) = m.hosts.iter().find(|(_, i)| i.state != HostState::Up) {
        return Some(format!("host {h} is {:?}: every host must be up to add hosts", info.state));
    }
    None
}

/// This host is added to the running cluster one of `join` belongs to:
/// reserve an id, start the member, say it is ready, and return once the
/// metadata names it. `progress` is told what is being waited for.
pub(crate) async fn add_this_host(
    settings: &crate::FormationSettings,
    listener: tokio::net::TcpListener,
    progress: &(dyn Fn(String) + Send + Sync),
) -> Result<MetadataNode> {
    let internal_port = listener.local_addr().map_err(|e| err!(Internal, "no internal address: {e}"))?.port();
    let mut request = AdmitRequest {
        internal_port,
        client_port: settings.client_port,
        advertise: settings.advertise.clone(),
        kfactor: settings.kfactor,
        sites_per_host: settings.sites_per_host,
        id: None,
        protocol: crate::network::data_protocol(),
    };
    let Some(AdmitReply::Reserved(id)) = ask(settings, &request, progress).await? else {
        bail!(Internal, "the cluster answered a reservation with something else");
    };
    progress(format!("reserved host id {id}: starting this host's member of the metadata group"));
    let node = MetadataNode::start_routed(id, &settings.dir, listener, settings.routes.clone()).await?;
    request.id = Some(id);
    progress(format!(
        "host {id} is catching up with the metadata group and waits for the cluster to admit it ({} new hosts are \
         added at a time)",
        settings.kfactor + 1
    ));
    match ask(settings, &request, progress).await? {
        Some(AdmitReply::Admitted) => {}
        _ => bail!(Internal, "the cluster answered host {id}'s admission with something else"),
    }
    node.wait_for(Duration::from_secs(60), |m| m.hosts.contains_key(&id)).await?;
    progress(format!("admitted to the cluster as host {id}"));
    Ok(node)
}

/// Send `request` to the join targets (and on to the group's leader) until
/// one answers; `Ok(None)` never happens but keeps the call sites plain.
async fn ask(
    settings: &crate::FormationSettings,
    request: &AdmitRequest,
    progress: &(dyn Fn(String) + Send + Sync),
) -> Result<Option<AdmitReply>> {
    let mut said = Instant::now();
    let mut leader: Option<String> = None;
    loop {
        let targets: Vec<String> = leader.take().into_iter().chain(settings.join.iter().cloned()).collect();
        for target in &targets {
            let limit = if request.id.is_some() { ADMISSION_PATIENCE } else { Duration::from_secs(5) };
            match Peer::new(HostId::MAX, settings.routes.dial(target))
                .call(&Request::Admit(request.clone()), limit)
                .await
            {
                Ok(Reply::Admit(Ok(AdmitReply::AskLeader(address)))) => {
                    leader = Some(address);
                    break;
                }
                Ok(Reply::Admit(Ok(reply))) => return Ok(Some(reply)),
                Ok(Reply::Admit(Err(why))) => bail!(InvalidArgument, "{target} did not admit this host: {why}"),
                Ok(_) => bail!(InvalidArgument, "{target} answered the admission request with something else"),
                // Not reachable now: keep trying.
                Err(_) => {}
            }
        }
        if leader.is_some() {
            // A leader just elected may not know yet that it leads.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        if said.elapsed() >= Duration::from_secs(5) {
            progress(format!("waiting for {} to answer", settings.join.join(", ")));
            said = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
