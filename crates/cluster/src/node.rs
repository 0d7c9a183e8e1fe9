//! [`MetadataNode`]: one host's member of the metadata group.
//!
//! Starting one opens the host's stores (`store.rs`), starts openraft and
//! answers the group's RPCs on the given listener (`network.rs`). One host
//! forms the group with [`MetadataNode::initialize`] once it knows every
//! member; after that any member may [`propose`](MetadataNode::propose) a
//! command — a member that does not lead forwards it to the one that does —
//! and every member sees the applied metadata through
//! [`metadata`](MetadataNode::metadata) and
//! [`wait_for`](MetadataNode::wait_for).
//!
//! A proposal retries while the group has no leader (an election takes a
//! few hundred milliseconds) until its deadline. Commands are written to be
//! safe to apply twice (a second `HostFailed` is refused, versions are
//! compare-and-set), since a forwarded proposal whose reply is lost is
//! retried.

use crate::metadata::{ClusterMetadata, Command, CommandResult, Proposal};
use crate::network::{serve, Forwarded, Network, Peer, ReadRefused, Reply, Request, Routes};
use crate::store::{LogStore, StateMachineStore};
use crate::{HostId, TypeConfig};
use joule_common::{err, Error, Result};
use openraft::error::{CheckIsLeaderError, ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, Raft};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long a proposal keeps trying to reach a leader.
const PROPOSE_DEADLINE: Duration = Duration::from_secs(10);

/// One host's member of the metadata group.
pub struct MetadataNode {
    id: HostId,
    address: String,
    raft: Raft<TypeConfig>,
    metadata: watch::Receiver<ClusterMetadata>,
    server: tokio::task::JoinHandle<()>,
    routes: Routes,
    /// When this member last heard from a leader it follows.
    contact: crate::network::LastContact,
    detector: Option<tokio::task::JoinHandle<()>>,
    /// The admissions this member answers while it leads.
    admissions: std::sync::Arc<crate::admission::Admissions>,
    /// Data-plane connections arriving on the internal port, until taken.
    data: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<tokio::net::TcpStream>>>,
}

/// Why a proposal made on this host did not apply.
pub(crate) enum NotHere {
    /// Another member leads (its id and address, when known).
    NotLeader(Option<(HostId, String)>),
    Failed(Error),
}

/// `command` as a proposal from `host` with a new id: the host, and a
/// sequence that starts from the clock when the process starts, so ids do
/// not repeat across restarts either.
pub(crate) fn proposal(host: HostId, command: Command) -> Proposal {
    static NEXT: std::sync::OnceLock<std::sync::atomic::AtomicU64> = std::sync::OnceLock::new();
    let next = NEXT.get_or_init(|| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        std::sync::atomic::AtomicU64::new(now.as_nanos() as u64)
    });
    Proposal { id: (host, next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)), command }
}

/// Propose on this host's raft, which must lead: what applying it did, and
/// its index in the log.
pub(crate) async fn propose_here(
    raft: &Raft<TypeConfig>,
    proposal: Proposal,
) -> std::result::Result<(CommandResult, u64), NotHere> {
    match raft.client_write(proposal).await {
        Ok(r) => Ok((r.data, r.log_id.index)),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            Err(NotHere::NotLeader(f.leader_id.zip(f.leader_node.map(|n| n.addr))))
        }
        Err(e) => Err(NotHere::Failed(err!(Unavailable, "the metadata group cannot take the change: {e}"))),
    }
}

/// A linearizable read on this host's raft, which must lead: confirm with
/// a quorum that it still leads, wait until everything committed before
/// the read is applied, then read.
pub(crate) async fn read_here(
    raft: &Raft<TypeConfig>,
    metadata: &watch::Receiver<ClusterMetadata>,
    limit: Duration,
) -> std::result::Result<ClusterMetadata, NotHere> {
    let confirmed = tokio::time::timeout(limit, raft.ensure_linearizable()).await;
    match confirmed {
        Ok(Ok(_)) => Ok(metadata.borrow().clone()),
        Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
            Err(NotHere::NotLeader(f.leader_id.zip(f.leader_node.map(|n| n.addr))))
        }
        Ok(Err(e)) => Err(NotHere::Failed(err!(Unavailable, "cannot confirm the metadata: {e}"))),
        Err(_) => Err(NotHere::Failed(err!(Unavailable, "no quorum confirmed this host still leads"))),
    }
}

impl std::fmt::Display for NotHere {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotHere::NotLeader(Some((id, _))) => write!(f, "host {id} leads the metadata group"),
            NotHere::NotLeader(None) => write!(f, "the metadata group has no leader"),
            NotHere::Failed(e) => write!(f, "{e}"),
        }
    }
}

impl MetadataNode {
    /// Start host `id`'s member with its files in `dir`, answering the
    /// group on `listener`.
    pub async fn start(id: HostId, dir: &Path, listener: tokio::net::TcpListener) -> Result<MetadataNode> {
        Self::start_inner(id, dir, listener, Routes::default(), None).await
    }

    /// [`start`](Self::start), reaching the members named in `routes` at
    /// the given addresses instead of the ones the membership records.
    pub async fn start_with_routes(
        id: HostId,
        dir: &Path,
        listener: tokio::net::TcpListener,
        routes: BTreeMap<HostId, String>,
    ) -> Result<MetadataNode> {
        Self::start_inner(id, dir, listener, Routes::by_host(routes), None).await
    }

    /// [`start`](Self::start), dialling other members through `routes`.
    pub async fn start_routed(
        id: HostId,
        dir: &Path,
        listener: tokio::net::TcpListener,
        routes: Routes,
    ) -> Result<MetadataNode> {
        Self::start_inner(id, dir, listener, routes, None).await
    }

    /// [`start`](Self::start), also taking join requests (the forming host).
    pub(crate) async fn start_inner(
        id: HostId,
        dir: &Path,
        listener: tokio::net::TcpListener,
        routes: Routes,
        joins: Option<crate::formation::Joins>,
    ) -> Result<MetadataNode> {
        let address = listener.local_addr().map_err(|e| err!(Internal, "the internal listener has no address: {e}"))?;
        let log =
            LogStore::open(dir).map_err(|e| err!(IoError, "cannot open the metadata log in {}: {e}", dir.display()))?;
        let (state_machine, metadata) = StateMachineStore::open(dir)
            .map_err(|e| err!(IoError, "cannot open the metadata snapshot in {}: {e}", dir.display()))?;
        let config = openraft::Config {
            cluster_name: "jouledb".into(),
            heartbeat_interval: 100,
            election_timeout_min: 400,
            election_timeout_max: 800,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(500),
            max_in_snapshot_log_to_keep: 100,
            ..Default::default()
        }
        .validate()
        .map_err(|e| err!(InvalidArgument, "metadata group settings: {e}"))?;
        let raft = Raft::new(id, Arc::new(config), Network(routes.clone()), log, state_machine)
            .await
            .map_err(|e| err!(Internal, "cannot start the metadata group: {e}"))?;
        let (data_tx, data_rx) = tokio::sync::mpsc::unbounded_channel();
        let contact: crate::network::LastContact =
            std::sync::Arc::new(std::sync::Mutex::new(tokio::time::Instant::now()));
        let admissions: std::sync::Arc<crate::admission::Admissions> = std::sync::Arc::default();
        let server = tokio::spawn(serve(
            listener,
            raft.clone(),
            metadata.clone(),
            joins,
            data_tx,
            contact.clone(),
            admissions.clone(),
        ));
        Ok(MetadataNode {
            id,
            address: address.to_string(),
            raft,
            metadata,
            server,
            routes,
            contact,
            detector: None,
            admissions,
            data: std::sync::Mutex::new(Some(data_rx)),
        })
    }

    pub fn id(&self) -> HostId {
        self.id
    }

    /// Where the group reaches this member.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Form the group from `members` (id → internal address). Safe to call
    /// on several hosts with the same members, and on a group already
    /// formed (nothing changes).
    pub async fn initialize(&self, members: BTreeMap<HostId, String>) -> Result<()> {
        let nodes: BTreeMap<HostId, BasicNode> =
            members.into_iter().map(|(id, addr)| (id, BasicNode { addr })).collect();
        match self.raft.initialize(nodes).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(err!(InvalidArgument, "cannot form the metadata group: {e}")),
        }
    }

    /// Apply `command` through the group (forwarded to its leader if this
    /// host does not lead) and return what applying it did. On return this
    /// host's [`metadata`](Self::metadata) normally includes the change (it
    /// may trail if this host is far behind when the deadline comes).
    pub async fn propose(&self, command: Command) -> Result<CommandResult> {
        self.propose_within(command, PROPOSE_DEADLINE).await
    }

    /// [`propose`](Self::propose), giving up after `limit`: `Unavailable`
    /// if the proposal never went out, `OutcomeUnknown` if it did and was
    /// not confirmed (it may still apply).
    pub async fn propose_within(&self, command: Command, limit: Duration) -> Result<CommandResult> {
        self.proposer().propose_within(command, limit).await
    }

    pub(crate) fn proposer(&self) -> Proposer {
        Proposer { id: self.id, raft: self.raft.clone(), routes: self.routes.clone() }
    }

    /// The metadata as of a moment between this call and its return — a
    /// linearizable read, confirmed by the group's leader with a quorum
    /// (forwarded to it from other hosts). Retried within `limit` while the
    /// group has no leader; `Unavailable` after that.
    pub async fn read_within(&self, limit: Duration) -> Result<ClusterMetadata> {
        let deadline = Instant::now() + limit;
        let mut last = String::from("no attempt");
        while Instant::now() < deadline {
            match read_here(&self.raft, &self.metadata, deadline.saturating_duration_since(Instant::now())).await {
                Ok(m) => return Ok(m),
                Err(NotHere::NotLeader(Some((leader, address)))) if leader != self.id => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let address = self.routes.address(leader, &address);
                    // A read changes nothing: whatever happened to an attempt, retry.
                    match Peer::new(leader, address).call(&Request::Read, left).await {
                        Ok(Reply::Read(Ok(m))) => return Ok(m),
                        Ok(Reply::Read(Err(ReadRefused::NotLeader))) => last = format!("host {leader} no longer leads"),
                        Ok(Reply::Read(Err(ReadRefused::Failed(e)))) => last = e,
                        Ok(_) => last = format!("host {leader} answered another request"),
                        Err(e) => last = format!("host {leader} did not answer: {e}"),
                    }
                }
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(err!(Unavailable, "no linearizable read of the metadata within {limit:?}: {last}"))
    }

    /// The metadata as this host last applied it (may trail the group).
    pub fn metadata(&self) -> ClusterMetadata {
        self.metadata.borrow().clone()
    }

    /// Connections to the internal port that opened with
    /// [`DATA_MAGIC`](crate::network::DATA_MAGIC) (the magic read): the
    /// data plane's, for the server to serve. Once only.
    pub fn data_connections(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<tokio::net::TcpStream>> {
        self.data.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// A receiver that sees every metadata change this host applies.
    pub fn watch(&self) -> watch::Receiver<ClusterMetadata> {
        self.metadata.clone()
    }

    /// A handle for proposing through this member and reading what it
    /// applied, for parts of the server that hold no reference to the node
    /// (the data plane, which records moves of ranges).
    pub fn handle(&self) -> MetadataHandle {
        MetadataHandle { proposer: self.proposer(), metadata: self.metadata.clone() }
    }

    /// Wait until this host's metadata satisfies `done`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&ClusterMetadata) -> bool,
    ) -> Result<ClusterMetadata> {
        let mut rx = self.metadata.clone();
        let wait = async { rx.wait_for(|m| done(m)).await.map(|m| m.clone()) };
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(m)) => Ok(m),
            Ok(Err(_)) => Err(err!(Unavailable, "the metadata group stopped")),
            Err(_) => Err(err!(Unavailable, "the metadata did not reach the expected state within {timeout:?}")),
        }
    }

    /// Snapshot the metadata now and drop the log entries it covers; a
    /// member that is further behind is then sent the snapshot instead.
    pub async fn compact(&self) -> Result<()> {
        let applied = self.raft.metrics().borrow().last_applied;
        let Some(applied) = applied else { return Ok(()) };
        let stopped = |e| err!(Unavailable, "the metadata group stopped: {e}");
        self.raft.trigger().snapshot().await.map_err(stopped)?;
        let mut metrics = self.raft.metrics();
        let built = async { metrics.wait_for(|m| m.snapshot.is_some_and(|s| s.index >= applied.index)).await.is_ok() };
        if !tokio::time::timeout(Duration::from_secs(10), built).await.unwrap_or(false) {
            return Err(err!(Unavailable, "the metadata snapshot was not built within 10 s"));
        }
        self.raft.trigger().purge_log(applied.index).await.map_err(stopped)
    }

    /// The last log index this member's snapshot covers, if it has one.
    pub fn snapshot_index(&self) -> Option<u64> {
        self.raft.metrics().borrow().snapshot.map(|id| id.index)
    }

    /// Whether this member is in touch with a quorum of the group: as its
    /// leader, a quorum acknowledged it within `within`; as a follower, a
    /// leader's entries or heartbeat came within `within`. A host that is
    /// not has been cut off (its peers may have declared it failed without
    /// it hearing so): it must not keep clients waiting on it.
    pub fn in_contact(&self, within: Duration) -> bool {
        let (leading, acked) = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            (m.current_leader == Some(self.id), m.millis_since_quorum_ack)
        };
        match acked {
            Some(ms) if leading => Duration::from_millis(ms) <= within,
            // A follower, or a leader just elected (no quorum round yet):
            // when a leader was last heard from.
            _ => self.contact.lock().unwrap_or_else(|p| p.into_inner()).elapsed() <= within,
        }
    }

    /// Whether this host still votes in the group as far as it knows: the
    /// newest voter set it has seen names it. A removed host waits to be
    /// out before it stops (it may never hear the change that follows:
    /// the leader stops sending to it once it is out).
    pub fn in_group(&self) -> bool {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        m.membership_config.membership().get_joint_config().last().is_some_and(|voters| voters.contains(&self.id))
    }

    /// The group's voting members, as this member knows them.
    pub fn voters(&self) -> Vec<HostId> {
        self.raft.metrics().borrow().membership_config.membership().voter_ids().collect()
    }

    /// The group's members, voting or not (learners), as this member
    /// knows them.
    pub fn members(&self) -> Vec<HostId> {
        self.raft.metrics().borrow().membership_config.membership().nodes().map(|(id, _)| *id).collect()
    }

    /// The member this host believes leads the group.
    pub fn leader(&self) -> Option<HostId> {
        self.raft.metrics().borrow().current_leader
    }

    /// Run failure detection on this host (it acts while this host leads
    /// the group; see `detector.rs`), and take removed hosts out of the
    /// group and keep its voters an odd number while it leads
    /// (`voters.rs`).
    pub fn detect_failures(&mut self, settings: crate::DetectorSettings) {
        if let Some(old) = self.detector.take() {
            old.abort();
        }
        let task = crate::detector::run(
            self.id,
            self.raft.clone(),
            self.metadata.clone(),
            self.routes.clone(),
            self.proposer(),
            settings,
        );
        let settle =
            crate::voters::settle_members(self.id, self.raft.clone(), self.metadata.clone(), self.admissions.clone());
        self.detector = Some(tokio::spawn(async move {
            tokio::join!(task, settle);
        }));
    }

    /// Stop detecting failures and answering the group (a node shutting
    /// down, which cannot give up ownership of its member); the other hosts
    /// see it go silent.
    pub async fn stop_serving(&self) {
        if let Some(d) = &self.detector {
            d.abort();
        }
        self.server.abort();
        // A leader that stays alive would keep the others from electing.
        let _ = tokio::time::timeout(Duration::from_secs(2), self.raft.shutdown()).await;
    }

    /// Stop this member (its files stay; starting again resumes from them).
    pub async fn shutdown(self) {
        if let Some(d) = &self.detector {
            d.abort();
        }
        self.server.abort();
        let _ = self.raft.shutdown().await;
        // The listener goes with the serve task: wait for it to be dropped,
        // so that the address can be bound again as soon as this returns.
        let _ = self.server.await;
    }
}

/// See [`MetadataNode::handle`].
#[derive(Clone)]
pub struct MetadataHandle {
    proposer: Proposer,
    metadata: watch::Receiver<ClusterMetadata>,
}

impl MetadataHandle {
    /// See [`MetadataNode::propose_within`].
    pub async fn propose_within(&self, command: Command, limit: Duration) -> Result<CommandResult> {
        self.proposer.propose_within(command, limit).await
    }

    /// This host's applied copy of the metadata.
    pub fn metadata(&self) -> ClusterMetadata {
        self.metadata.borrow().clone()
    }
}

/// Proposes commands through the group on behalf of one host, forwarding
/// them to the leader when this host does not lead (shared by
/// [`MetadataNode`] and failure detection).
#[derive(Clone)]
pub(crate) struct Proposer {
    id: HostId,
    raft: Raft<TypeConfig>,
    routes: Routes,
}

impl Proposer {
    /// See [`MetadataNode::propose_within`].
    pub(crate) async fn propose_within(&self, command: Command, limit: Duration) -> Result<CommandResult> {
        let deadline = Instant::now() + limit;
        let proposal = proposal(self.id, command);
        let mut last = String::from("no attempt");
        let mut maybe_sent = false;
        // Every attempt carries the same id, so retrying after a lost or
        // late answer cannot apply the command twice.
        while Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, propose_here(&self.raft, proposal.clone())).await {
                // A leader without a quorum waits for one indefinitely: bounded above.
                Err(_) => {
                    maybe_sent = true;
                    last = "no quorum confirmed it".into();
                    break;
                }
                Ok(Ok((result, index))) => return Ok(applied_here(&self.raft, result, index, deadline).await),
                Ok(Err(NotHere::NotLeader(Some((leader, address))))) if leader != self.id => {
                    let address = self.routes.address(leader, &address);
                    match Peer::new(leader, address).exchange(&Request::Propose(proposal.clone()), left).await {
                        Ok(Reply::Propose(Forwarded::Done(result, index))) => {
                            return Ok(applied_here(&self.raft, result, index, deadline).await)
                        }
                        Ok(Reply::Propose(Forwarded::NotLeader)) => last = format!("host {leader} no longer leads"),
                        Ok(Reply::Propose(Forwarded::Unknown(why))) => {
                            maybe_sent = true;
                            last = why;
                        }
                        Ok(_) => {
                            maybe_sent = true;
                            last = format!("host {leader} answered another request");
                        }
                        Err((sent, e)) => {
                            maybe_sent |= sent;
                            last = format!("host {leader}: {e}");
                        }
                    }
                }
                Ok(Err(NotHere::NotLeader(_))) => last = "the metadata group has no leader".into(),
                Ok(Err(NotHere::Failed(e))) => {
                    // It may have reached the log before the failure.
                    maybe_sent = true;
                    last = e.to_string();
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if maybe_sent {
            Err(err!(OutcomeUnknown, "the metadata change may or may not have applied within {limit:?}: {last}"))
        } else {
            Err(err!(Unavailable, "the metadata change did not apply within {limit:?}: {last}"))
        }
    }
}

/// Wait (within the deadline) until this host has applied `index` too.
async fn applied_here(raft: &Raft<TypeConfig>, result: CommandResult, index: u64, deadline: Instant) -> CommandResult {
    let mut metrics = raft.metrics();
    let here = metrics.wait_for(|m| m.last_applied.is_some_and(|id| id.index >= index));
    let _ = tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), here).await;
    result
}
