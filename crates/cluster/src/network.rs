//! The metadata group's messages between hosts: openraft's three RPCs
//! (append entries, install snapshot, vote), forwarded proposals and
//! failure detection's pings, over TCP on the internal port.
//!
//! Each message is a frame — `length (u32 LE) | JSON` — and each request
//! gets one reply frame on the same connection. A sender keeps one
//! connection per peer, opens it on first use, and drops it on any error or
//! timeout (the next RPC reconnects); openraft treats a failed RPC as the
//! peer being unreachable and retries with backoff. JSON keeps the format
//! readable and is cheap at the metadata's size and rate.

use crate::metadata::{ClusterMetadata, CommandResult, Proposal};
use crate::{HostId, TypeConfig};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::{BasicNode, Raft};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest frame accepted.
const MAX_FRAME: usize = 64 << 20;

/// What a connection to the internal port opens with to carry data-plane
/// traffic (forwarded calls, replication, remote sites) instead of the
/// metadata group's frames: read as a frame length it would be past
/// [`MAX_FRAME`], so it cannot be mistaken for one. The data plane's
/// opening that follows carries its protocol version (`joule-server`'s
/// `dataplane/hello.rs`).
pub const DATA_MAGIC: [u8; 4] = [0xff, b'J', b'D', b'Q'];

/// The version of the data plane's messages this build speaks (see
/// `joule-server`'s `dataplane/hello.rs`, which checks it on every
/// connection). Raise it with every change a host of the build before
/// could not read. A host asking to join or be added to a cluster says it
/// too, so that a host of another build is refused before it becomes a
/// member (`formation.rs`, `admission.rs`).
pub const DATA_PROTOCOL: u16 = 1;

/// The version this host speaks: [`DATA_PROTOCOL`], or the one after it
/// with the failpoint `data-protocol-next` armed (a host of a newer build,
/// in the tests).
pub fn data_protocol() -> u16 {
    if joule_common::failpoint::armed("data-protocol-next") {
        DATA_PROTOCOL + 1
    } else {
        DATA_PROTOCOL
    }
}

/// Why a host speaking data-plane protocol `theirs` cannot be in a cluster
/// with this one, if it cannot.
pub(crate) fn protocol_mismatch(theirs: u16) -> Option<String> {
    let ours = data_protocol();
    (theirs != ours).then(|| {
        format!(
            "it speaks data-plane protocol {theirs} and this cluster {ours} (a build from before protocol versions \
             says 0): every host of a cluster must run the same JouleDB build"
        )
    })
}

/// The magic of builds whose data plane carried no protocol version: such
/// a host is refused (said once), as a build of another version is.
const UNVERSIONED_DATA_MAGIC: [u8; 4] = [0xff, b'J', b'D', b'P'];

/// Where the internal port hands data-plane connections (see
/// [`crate::MetadataNode::data_connections`]).
pub(crate) type DataConnections = tokio::sync::mpsc::UnboundedSender<TcpStream>;
/// How long a forwarded proposal may wait for the group to commit it.
const PROPOSE_WAIT: Duration = Duration::from_secs(10);

#[derive(Serialize, Deserialize)]
pub(crate) enum Request {
    Append(AppendEntriesRequest<TypeConfig>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    Vote(VoteRequest<HostId>),
    /// A proposal forwarded to the host believed to lead the group.
    Propose(Proposal),
    /// Failure detection: are you there?
    Ping,
    /// A host asks to join the cluster being formed (see `formation.rs`).
    Join(crate::formation::JoinRequest),
    /// A linearizable read of the metadata, forwarded to the leader.
    Read,
    /// A new host asks to be admitted to the running cluster (see
    /// `admission.rs`).
    Admit(crate::admission::AdmitRequest),
}

/// What became of a forwarded proposal.
#[derive(Serialize, Deserialize)]
pub(crate) enum Forwarded {
    /// Applied: the result and the log index.
    Done(CommandResult, u64),
    /// The receiver does not lead.
    NotLeader,
    /// Proposed, and not confirmed (no quorum in time, or the group
    /// stopped): it may still commit.
    Unknown(String),
}

#[derive(Serialize, Deserialize)]
pub(crate) enum Reply {
    Append(Result<AppendEntriesResponse<HostId>, RaftError<HostId>>),
    Snapshot(Result<InstallSnapshotResponse<HostId>, RaftError<HostId, InstallSnapshotError>>),
    Vote(Result<VoteResponse<HostId>, RaftError<HostId>>),
    Propose(Forwarded),
    Pong,
    Read(Result<ClusterMetadata, ReadRefused>),
    /// The joining host's id, or why it may not join.
    Join(Result<HostId, String>),
    /// How an admission goes, or why the host may not be admitted.
    Admit(Result<crate::admission::AdmitReply, String>),
}

/// Why a forwarded read was not answered.
#[derive(Serialize, Deserialize)]
pub(crate) enum ReadRefused {
    NotLeader,
    Failed(String),
}

async fn write_frame<T: Serialize>(s: &mut TcpStream, message: &T) -> std::io::Result<()> {
    let payload = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    let mut buf = Vec::with_capacity(4 + payload.len());
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&payload);
    s.write_all(&buf).await
}

async fn read_frame<T: for<'de> Deserialize<'de>>(s: &mut TcpStream) -> std::io::Result<T> {
    let mut header = [0u8; 4];
    s.read_exact(&mut header).await?;
    read_body(s, header).await
}

async fn read_body<T: for<'de> Deserialize<'de>>(s: &mut TcpStream, header: [u8; 4]) -> std::io::Result<T> {
    let len = u32::from_le_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("frame of {len} bytes")));
    }
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await?;
    serde_json::from_slice(&payload).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// A connection to one peer, opened when first needed.
pub(crate) struct Peer {
    target: HostId,
    address: String,
    connection: Option<TcpStream>,
}

impl Peer {
    pub(crate) fn new(target: HostId, address: String) -> Peer {
        Peer { target, address, connection: None }
    }

    /// Send `request` and wait up to `ttl` for its reply; any failure drops
    /// the connection.
    pub(crate) async fn call(&mut self, request: &Request, ttl: Duration) -> std::io::Result<Reply> {
        self.exchange(request, ttl).await.map_err(|(_, e)| e)
    }

    /// As [`call`](Self::call), saying on failure whether the request may
    /// have reached the peer (`true`) or certainly did not (`false`: the
    /// connection could not be opened).
    pub(crate) async fn exchange(&mut self, request: &Request, ttl: Duration) -> Result<Reply, (bool, std::io::Error)> {
        let deadline = tokio::time::Instant::now() + ttl;
        let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no reply within {ttl:?}"));
        if self.connection.is_none() {
            let connect = async {
                let s = TcpStream::connect(&self.address).await?;
                s.set_nodelay(true)?;
                Ok::<_, std::io::Error>(s)
            };
            match tokio::time::timeout_at(deadline, connect).await {
                Ok(Ok(s)) => self.connection = Some(s),
                Ok(Err(e)) => return Err((false, e)),
                Err(_) => return Err((false, timed_out())),
            }
        }
        let Some(s) = self.connection.as_mut() else { unreachable!("connected above") };
        let result = match tokio::time::timeout_at(deadline, async {
            write_frame(s, request).await?;
            read_frame(s).await
        })
        .await
        {
            Ok(r) => r,
            Err(_) => Err(timed_out()),
        };
        result.map_err(|e| {
            self.connection = None;
            (true, e)
        })
    }

    async fn rpc<E: std::error::Error>(
        &mut self,
        request: Request,
        option: RPCOption,
    ) -> Result<Reply, RPCError<HostId, BasicNode, RaftError<HostId, E>>> {
        self.call(&request, option.hard_ttl()).await.map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
    }

    fn unexpected<E: std::error::Error>(&self) -> RPCError<HostId, BasicNode, RaftError<HostId, E>> {
        let e =
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("host {} answered another RPC", self.target));
        RPCError::Network(NetworkError::new(&e))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<HostId>, RPCError<HostId, BasicNode, RaftError<HostId>>> {
        match self.rpc(Request::Append(rpc), option).await? {
            Reply::Append(r) => r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e))),
            _ => Err(self.unexpected()),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<HostId>, RPCError<HostId, BasicNode, RaftError<HostId, InstallSnapshotError>>>
    {
        match self.rpc(Request::Snapshot(rpc), option).await? {
            Reply::Snapshot(r) => r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e))),
            _ => Err(self.unexpected()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<HostId>,
        option: RPCOption,
    ) -> Result<VoteResponse<HostId>, RPCError<HostId, BasicNode, RaftError<HostId>>> {
        match self.rpc(Request::Vote(rpc), option).await? {
            Reply::Vote(r) => r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e))),
            _ => Err(self.unexpected()),
        }
    }
}

/// Where this member reaches each other member: the address the
/// membership records, unless a route overrides it — by the address
/// recorded (`--route RECORDED=VIA`: a host that reaches its peers through
/// a NAT, another interface or a relay; tests putting a fault-injecting
/// proxy on each link between real processes) or by member id (in-process
/// tests).
#[derive(Clone, Debug, Default)]
pub struct Routes {
    by_host: std::sync::Arc<std::collections::BTreeMap<HostId, String>>,
    by_address: std::sync::Arc<std::collections::BTreeMap<String, String>>,
}

impl Routes {
    /// Routes by the address the membership records (recorded → dial).
    pub fn by_address(routes: std::collections::BTreeMap<String, String>) -> Routes {
        Routes { by_address: std::sync::Arc::new(routes), ..Routes::default() }
    }

    pub(crate) fn by_host(routes: std::collections::BTreeMap<HostId, String>) -> Routes {
        Routes { by_host: std::sync::Arc::new(routes), ..Routes::default() }
    }

    /// The address to dial for member `target`, recorded at `recorded`.
    pub fn address(&self, target: HostId, recorded: &str) -> String {
        match self.by_host.get(&target) {
            Some(a) => a.clone(),
            None => self.dial(recorded),
        }
    }

    /// The address to dial for a host recorded (or given) as `recorded`.
    pub fn dial(&self, recorded: &str) -> String {
        self.by_address.get(recorded).cloned().unwrap_or_else(|| recorded.to_string())
    }
}

/// Makes a [`Peer`] for each member openraft talks to.
pub(crate) struct Network(pub Routes);

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: HostId, node: &BasicNode) -> Peer {
        Peer::new(target, self.0.address(target, &node.addr))
    }
}

/// Answer the group's messages arriving on `listener` until the task is
/// aborted; aborting it also ends every connection it accepted (they live
/// in its `JoinSet`), so a stopped member answers nothing.
/// When this member last took entries (or a heartbeat) from a leader it
/// follows: a follower that has not for a while is cut off from the group.
pub(crate) type LastContact = std::sync::Arc<std::sync::Mutex<tokio::time::Instant>>;

pub(crate) async fn serve(
    listener: TcpListener,
    raft: Raft<TypeConfig>,
    metadata: tokio::sync::watch::Receiver<ClusterMetadata>,
    joins: Option<crate::formation::Joins>,
    data: DataConnections,
    contact: LastContact,
    admissions: std::sync::Arc<crate::admission::Admissions>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            // Reap finished connections as they end.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let Ok((mut s, peer)) = accepted else {
            // Out of descriptors or similar: try again shortly.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = s.set_nodelay(true);
        let (raft, metadata, joins, data) = (raft.clone(), metadata.clone(), joins.clone(), data.clone());
        let (contact, admissions) = (contact.clone(), admissions.clone());
        connections.spawn(async move {
            let mut header = [0u8; 4];
            if s.read_exact(&mut header).await.is_err() {
                return;
            }
            if header == DATA_MAGIC {
                let _ = data.send(s);
                return;
            }
            if header == UNVERSIONED_DATA_MAGIC {
                static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
                if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    eprintln!(
                        "joule: cluster: refused a data-plane connection from {peer}: it is a JouleDB build from \
                         before data-plane protocol versions; every host of a cluster must run the same build (said \
                         once)"
                    );
                }
                return;
            }
            let mut first = Some(header);
            // A malformed frame or a closed connection ends the connection.
            loop {
                let request = match first.take() {
                    Some(h) => read_body::<Request>(&mut s, h).await,
                    None => read_frame::<Request>(&mut s).await,
                };
                let Ok(request) = request else { break };
                let reply = match request {
                    Request::Append(r) => {
                        let answer = raft.append_entries(r).await;
                        if matches!(&answer, Ok(a) if !matches!(a, AppendEntriesResponse::HigherVote(_))) {
                            *contact.lock().unwrap_or_else(|p| p.into_inner()) = tokio::time::Instant::now();
                        }
                        Reply::Append(answer)
                    }
                    Request::Snapshot(r) => Reply::Snapshot(raft.install_snapshot(r).await),
                    Request::Vote(r) => Reply::Vote(raft.vote(r).await),
                    Request::Ping => Reply::Pong,
                    Request::Join(j) => Reply::Join(crate::formation::ask(joins.as_ref(), j, peer).await),
                    Request::Admit(a) => Reply::Admit(admissions.answer(&raft, &metadata, a, peer).await),
                    Request::Read => Reply::Read(match crate::node::read_here(&raft, &metadata, PROPOSE_WAIT).await {
                        Ok(m) => Ok(m),
                        Err(crate::node::NotHere::NotLeader(_)) => Err(ReadRefused::NotLeader),
                        Err(e) => Err(ReadRefused::Failed(e.to_string())),
                    }),
                    Request::Propose(c) => {
                        // A leader that lost its quorum would wait for it indefinitely.
                        let proposed = tokio::time::timeout(PROPOSE_WAIT, crate::node::propose_here(&raft, c)).await;
                        Reply::Propose(match proposed {
                            Ok(Ok((result, index))) => Forwarded::Done(result, index),
                            Ok(Err(crate::node::NotHere::NotLeader(_))) => Forwarded::NotLeader,
                            Ok(Err(e)) => Forwarded::Unknown(e.to_string()),
                            Err(_) => Forwarded::Unknown(format!("no quorum confirmed it within {PROPOSE_WAIT:?}")),
                        })
                    }
                };
                if write_frame(&mut s, &reply).await.is_err() {
                    break;
                }
            }
        });
    }
}
