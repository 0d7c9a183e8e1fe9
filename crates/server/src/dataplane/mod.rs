//! The data plane between a cluster's hosts: the [`ClusterLink`] the
//! transaction layer uses, over connections to the other hosts' internal
//! ports, and the serving of such connections here.
//!
//! A data-plane connection opens with
//! [`DATA_MAGIC`](joule_cluster::network::DATA_MAGIC) (the internal port's
//! server hands it over; see `joule-cluster`), one byte saying what it
//! carries and the protocol version the connecting host speaks, which the
//! serving host answers with its own; hosts of different versions go no
//! further (`hello.rs`). Then frames — `length (u32 LE) | postcard` — each
//! way:
//!
//! * `F`, **forwarded calls**: `(id, WireCall)` requests, `(id,
//!   WireResponse)` answers in any order. One connection per target host,
//!   shared by every call forwarded there, opened once the host answers
//!   `F` itself (so a relay or a dying process that accepts and closes
//!   sends nothing unknown). A call on a connection that breaks fails as
//!   `OutcomeUnknown` if it was written, `Unavailable` if not; one not
//!   written when its host left the cluster or was declared failed is
//!   routed again (`forward.rs`; one that finds the host's process gone
//!   waits for that, 5 s at most), and a write blocked on a hung host ends
//!   when the host is declared failed.
//! * `S`, **a remote site session**: the coordinator here drives partition
//!   `p`'s leader there: `Begin`, `Round`, `Finish` requests, one answer
//!   each. Sessions are pooled per (partition, host) between transactions.
//!   While waiting — for an answer, or for a request of megabytes to be
//!   taken — a session checks the metadata: a target declared failed ends
//!   the wait; on the leader's side, a coordinator the metadata replaced
//!   ends its wait for the next request or for its answer to be taken.
//! * `R`, **replication**: batches (partition, the sender's stream and the
//!   batch's position on it, records), one
//!   acknowledgement each once the replica has applied them. A shipper
//!   thread per partition sends each batch to every live replica and waits
//!   for all acknowledgements before running the batch's callbacks (which
//!   release the answers). A batch sent again after a broken connection is
//!   recognised by its position and not applied twice; a position skipped
//!   means batches were lost, and the replica stops (its copy would
//!   silently differ). A rejoining replica's copy pieces carry the position
//!   the copy was taken at; they go on a connection of their own beside
//!   the stream, and a copy piece with no records tells the host that its
//!   copy is level with the stream (`beside.rs`). Each batch also carries
//!   its stream's term (one above every term the leader had seen), which
//!   orders streams for the repair step.
//! * `J`, **a rejoin request**: a restarted host asks a partition's leader
//!   for a copy, which then arrives on the replication connection.
//! * `P`, **the repair step** (`repair.rs`): a new leader asks another copy
//!   for its last batch (`Last`) or has it apply one (`Apply`).
//! * `D`, **prepared transactions** (`doubt.rs`): the coordinator asks a
//!   partition's leader what it holds in doubt, or settles it.
//! * `L`, **load figures** (`load.rs`): the auto-scaler's deciding host
//!   asks another for its calls' latencies and its sites' busy time.
//!
//! Leadership is read on every transaction, so it is kept precomputed
//! ([`Routing`]) and swapped whole when the metadata changes.
//!
//! The pieces: `forward.rs` (forwarded calls, both ends), `session.rs`
//! (remote site sessions, both ends), `replication.rs` (shipping batches
//! to replicas and applying them), `beside.rs` (a copy sent beside the
//! stream and brought level with it), `fence.rs` (calls through this host
//! keeping their order when a leader moves), `repair.rs` (a new leader bringing the
//! surviving copies to the same last batch), `doubt.rs` (prepared
//! transactions), `copylog.rs` (each copy's replication stream on disk, for
//! a whole-cluster restart).

use arc_swap::ArcSwap;
use joule_cluster::{ClusterMetadata, HostId, Routes};
use joule_common::{bail, err, Error, ErrorCode, Result};
use joule_txn::remote::{append_frame, decode, ClusterLink, Destination, RemoteSite, WireCall, WireItem, WireResponse};
use joule_txn::remote::{SessionDriver, SpDisposition, WireResult};
use joule_txn::{Host, Response, ResponseSink, TxnIds};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};

mod beside;
#[cfg(test)]
mod codec_tests;
mod copylog;
mod doubt;
mod fence;
mod forward;
mod hello;
mod load;
mod parking;
mod repair;
mod replication;
mod ring;
mod session;

use forward::{serve_forwarded, Forward};
use replication::{serve_replication, ship, Shipment};
pub(crate) use replication::{OnDivergence, ReplicaProgress};
use session::{serve_session, Session};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest data-plane frame accepted.
const MAX_FRAME: usize = 256 << 20;
const FORWARD: u8 = b'F';
const SESSION: u8 = b'S';
const REPLICATION: u8 = b'R';
const REJOIN: u8 = b'J';
const REPAIR: u8 = b'P';
const DOUBT: u8 = b'D';
const LOAD: u8 = b'L';
/// How long opening a connection to another host may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a rejoining host may take to acknowledge a batch before it is
/// dropped (it then starts its rejoin again).
const JOINER_PATIENCE: Duration = Duration::from_secs(10);
/// Replication batches merged from queued ones stop growing past this.
const MAX_BATCH_BYTES: usize = 8 << 20;
/// What a host replaying its copy logs answers requests it cannot take yet
/// with (the repair step waits for it as long as it says so).
const REPLAYING: &str = "is replaying its copy logs";
/// How often a blocked wait on another host looks at the metadata.
const CHECK_EVERY: Duration = Duration::from_millis(200);

/// Who leads what, from the metadata (precomputed: read per transaction).
#[derive(Default)]
pub(crate) struct Routing {
    /// This host.
    me: HostId,
    leaders: Vec<Option<HostId>>,
    coordinator: Option<HostId>,
    /// Internal addresses of the hosts that are up.
    up: BTreeMap<HostId, String>,
    /// Per partition: its replicas.
    replicas: Vec<Vec<HostId>>,
    /// Per partition: the hosts taking a copy of it (not replicas yet; see
    /// `joule_cluster`'s `copies`): a leader sends them its stream once
    /// their copy went out, and waits for them as for replicas.
    adding: Vec<Vec<HostId>>,
    /// Internal addresses of every host, up or not.
    all: BTreeMap<HostId, String>,
    /// Internal addresses of the hosts recovering from their copy logs:
    /// not up, but a leader still waits for their acknowledgements.
    recovering: BTreeMap<HostId, String>,
    /// This host is leaving the cluster and hands the partitions it leads
    /// over: it runs no new single-partition call on them (see
    /// `joule_txn`'s `handover` module).
    handing_over: bool,
    /// The metadata's version this routing follows.
    version: u64,
    /// Hosts removed from the cluster (they answer what they took, then
    /// stop).
    retired: std::collections::BTreeSet<HostId>,
}

impl Routing {
    fn from(me: HostId, m: &ClusterMetadata, routes: &Routes) -> Routing {
        // The internal addresses of the hosts `keep` takes.
        let addresses = |keep: &dyn Fn(HostId) -> bool| -> BTreeMap<HostId, String> {
            m.hosts.iter().filter(|(id, _)| keep(**id)).map(|(id, h)| (*id, routes.dial(&h.internal_address))).collect()
        };
        Routing {
            me,
            leaders: m.partitions.iter().map(|p| p.leader).collect(),
            coordinator: m.mp_coordinator,
            up: addresses(&|h| m.is_up(h)),
            replicas: m.partitions.iter().map(|p| p.replicas.clone()).collect(),
            adding: m.partitions.iter().map(|p| p.adding.clone()).collect(),
            all: addresses(&|_| true),
            recovering: addresses(&|h| m.is_recovering(h)),
            handing_over: m.removing.as_ref().is_some_and(|r| r.draining && r.hosts.contains(&me)),
            version: m.version,
            retired: m.retired.clone(),
        }
    }

    /// Where replica `host` takes batches if a leader must wait for it:
    /// it is up, or recovering (its copy logs must hold every batch a
    /// client was answered for; see `copylog.rs`).
    fn must_acknowledge(&self, host: HostId) -> Option<&String> {
        self.up.get(&host).or_else(|| self.recovering.get(&host))
    }

    /// Whether `host` is a replica of `partition` or taking a copy of it.
    fn holds_or_takes(&self, partition: u32, host: HostId) -> bool {
        let has = |lists: &Vec<Vec<HostId>>| lists.get(partition as usize).is_some_and(|r| r.contains(&host));
        has(&self.replicas) || has(&self.adding)
    }

    /// The hosts taking a copy of `partition`.
    fn adding(&self, partition: u32) -> &[HostId] {
        self.adding.get(partition as usize).map_or(&[], Vec::as_slice)
    }
}

type Shared<T> = Arc<ArcSwap<T>>;

/// This host's link to the rest of its cluster.
pub(crate) struct Link {
    me: HostId,
    /// Other hosts' addresses dialled elsewhere (`--route`).
    routes: Routes,
    routing: Shared<Routing>,
    runtime: tokio::runtime::Handle,
    /// Per target host: the queue of its forwarding connection's task. Read
    /// without a lock on every forwarded call; `spawning` serializes adding one.
    forwarders: ArcSwap<BTreeMap<HostId, tokio::sync::mpsc::UnboundedSender<Forward>>>,
    spawning: Mutex<()>,
    shippers: Mutex<BTreeMap<u32, std::sync::mpsc::Sender<Shipment>>>,
    /// Idle remote-site sessions, by (partition, host).
    sessions: SessionPool,
    /// Calls this host forwarded: to a partition's leader, to the coordinator.
    pub forwarded: [std::sync::atomic::AtomicU64; 2],
    /// The next forwarded call's `Forward::seq`.
    forward_seq: std::sync::atomic::AtomicU64,
    /// Calls waiting while their partition's new leader takes over.
    parking: Arc<parking::Parking>,
    /// Calls other hosts forwarded here and not answered yet (a host
    /// leaving the cluster answers them before it stops).
    serving: Arc<std::sync::atomic::AtomicUsize>,
    /// What this host's copies have applied (see `replication.rs`).
    progress: Arc<ReplicaProgress>,
    /// This link (for what must reach it later: a fence's last answer).
    me_weak: std::sync::Weak<Link>,
    /// Each partition's leader as the newest metadata names it — ahead of
    /// `routing` while a new leader repairs (`repair.rs`): replicas follow
    /// only this leader.
    latest: ArcSwap<Vec<Option<HostId>>>,
    /// This host's copy logs (`None`: off).
    pub(crate) logs: Option<Arc<copylog::CopyLogs>>,
    /// Stops this host (a copy log that cannot be written); set when the
    /// data plane starts serving.
    stop: Arc<std::sync::OnceLock<OnDivergence>>,
    /// Set while this host replays its copy logs: its copies are not what
    /// they will be, so it takes no batch and answers no repair or doubt
    /// question (the asker tries again).
    replaying: std::sync::atomic::AtomicBool,
    /// This host (set when the data plane starts serving): a shipper asks
    /// its site for a copy to compact the copy log to.
    host: Arc<std::sync::OnceLock<std::sync::Weak<Host>>>,
    /// This host's member of the metadata group (set once it runs): the
    /// coordinator records moves of ranges through it (`ring.rs`).
    metadata: std::sync::OnceLock<joule_cluster::MetadataHandle>,
}

/// Idle remote-site sessions, by (partition, host).
type SessionPool = Arc<Mutex<HashMap<(u32, HostId), Vec<std::net::TcpStream>>>>;

impl Link {
    /// The runtime the data plane's tasks run on: a thread of this
    /// process's own (a rebalance job, say) waits on a request to other
    /// hosts through it.
    pub(crate) fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }

    pub fn new(
        me: HostId,
        metadata: &ClusterMetadata,
        routes: Routes,
        runtime: tokio::runtime::Handle,
        logs: Option<Arc<copylog::CopyLogs>>,
        replaying: bool,
    ) -> Arc<Link> {
        Arc::new_cyclic(|me_weak| Link {
            me_weak: me_weak.clone(),
            logs,
            replaying: std::sync::atomic::AtomicBool::new(replaying),
            host: Arc::default(),
            metadata: std::sync::OnceLock::new(),
            stop: Arc::default(),
            me,
            latest: ArcSwap::from_pointee(metadata.partitions.iter().map(|p| p.leader).collect()),
            progress: Arc::default(),
            routing: Arc::new(ArcSwap::from_pointee(Routing::from(me, metadata, &routes))),
            routes,
            runtime,
            forwarders: ArcSwap::default(),
            spawning: Mutex::default(),
            shippers: Mutex::default(),
            sessions: Arc::default(),
            forwarded: Default::default(),
            forward_seq: Default::default(),
            parking: Arc::default(),
            serving: Arc::default(),
        })
    }

    /// The metadata changed: route by `metadata` from now on (`newest`
    /// itself, or it with the leaders of partitions being repaired here
    /// left out), the newest leaders being `newest`'s. A partition this
    /// host no longer leads loses its shipper (leading it again starts a
    /// new stream).
    pub fn update(&self, metadata: &ClusterMetadata, newest: &ClusterMetadata) {
        let leaders = Arc::new(newest.partitions.iter().map(|p| p.leader).collect());
        self.progress.exclusive(|| self.latest.store(leaders));
        let routing = Routing::from(self.me, metadata, &self.routes);
        self.shippers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|p, _| routing.leaders.get(*p as usize).copied().flatten() == Some(self.me));
        self.routing.store(Arc::new(routing));
        self.unpark();
        // Calls held while this host handed partitions over go on.
        if let Some(host) = self.host.get().and_then(std::sync::Weak::upgrade) {
            host.review_held();
        }
    }

    /// Calls other hosts forwarded here that are not answered yet, if this
    /// host was removed from the cluster (0 otherwise): it answers them
    /// before it stops, since the hosts that sent them wait for it (a host
    /// stopping otherwise is declared down, and its callers learn that).
    pub(crate) fn unanswered_forwarded(&self) -> usize {
        if !self.routing.load().retired.contains(&self.me) {
            return 0;
        }
        self.serving.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// This host has replayed its copy logs (or had none to replay).
    pub(crate) fn replayed(&self) {
        self.replaying.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// `Unavailable` while this host replays its copy logs.
    fn refuse_while_replaying(&self) -> Option<Error> {
        self.replaying
            .load(std::sync::atomic::Ordering::SeqCst)
            .then(|| err!(Unavailable, "host {} {REPLAYING}", self.me))
    }

    /// Partition `partition`'s leader as the newest metadata names it.
    pub(crate) fn latest_leader(&self, partition: u32) -> Option<HostId> {
        self.latest.load().get(partition as usize).copied().flatten()
    }

    /// Whether the copy of `partition` this host asked `leader` for is
    /// level with that leader's stream: loaded, with every batch the leader
    /// released since it was taken (`beside.rs`). Only then may it count
    /// as a copy.
    pub(crate) fn copy_level(&self, partition: u32, leader: HostId) -> bool {
        self.progress.is_level(partition, leader)
    }

    /// How many batches of `partition` arrived here so far: a rejoining
    /// host whose copy is not level sees by it whether the copy still comes.
    pub(crate) fn batches_arrived(&self, partition: u32) -> u64 {
        self.progress.arrivals(partition)
    }

    /// This host is about to ask for a copy of `partition` (again).
    pub(crate) fn expect_copy(&self, partition: u32) {
        self.progress.expect_copy(partition)
    }
}

impl ClusterLink for Link {
    fn leads(&self, partition: u32) -> bool {
        self.routing.load().leaders.get(partition as usize).copied().flatten() == Some(self.me)
    }

    fn sp_disposition(&self, partition: u32) -> SpDisposition {
        let routing = self.routing.load();
        match routing.leaders.get(partition as usize).copied().flatten() {
            Some(l) if l != self.me => SpDisposition::Forward,
            Some(_) if routing.handing_over => SpDisposition::Hold,
            _ => SpDisposition::Run,
        }
    }

    fn may_run_entered(&self, partition: u32) -> bool {
        self.may_run_here(partition)
    }

    fn coordinates(&self) -> bool {
        self.routing.load().coordinator == Some(self.me)
    }

    fn hands_coordination_over(&self) -> bool {
        let routing = self.routing.load();
        routing.coordinator == Some(self.me) && routing.handing_over
    }

    fn coordinator(&self) -> Option<u64> {
        self.routing.load().coordinator
    }

    fn forward(&self, to: Destination, call: WireCall, handle: u64, sink: Arc<dyn ResponseSink>) {
        let which = usize::from(to == Destination::Coordinator);
        self.forwarded[which].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let seq = self.forward_seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.forward_request(Forward { seq, to, call, handle, sink, fenced: None });
    }

    fn open_remote(&self, partition: u32) -> Result<Box<dyn RemoteSite>> {
        let routing = self.routing.load();
        let Some(target) = routing.leaders.get(partition as usize).copied().flatten() else {
            return Err(err!(Unavailable, "partition {partition} has no running copy in the cluster"));
        };
        let pooled =
            self.sessions.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&(partition, target)).and_then(|v| v.pop());
        let stream = match pooled {
            Some(s) => s,
            None => {
                let address = routing
                    .up
                    .get(&target)
                    .ok_or_else(|| err!(Unavailable, "host {target} (leading partition {partition}) is down"))?;
                let mut s = connect(address, SESSION)?;
                write_frame(&mut s, &(partition, self.me))?;
                s
            }
        };
        Ok(Box::new(Session {
            stream: Some(stream),
            partition,
            target,
            routing: self.routing.clone(),
            pool: self.sessions.clone(),
        }))
    }

    fn replicate(&self, partition: u32, records: Vec<u8>, done: Box<dyn FnOnce() + Send>) {
        self.ship_to(partition, Shipment::Batch { records, done })
    }

    fn add_replica(&self, partition: u32, host: u64, copy: Box<dyn Iterator<Item = Vec<u8>> + Send>) {
        self.ship_to(partition, Shipment::AddReplica { host, copy })
    }

    fn compact_log(&self, partition: u32, via_shipper: bool, copy: Result<Box<dyn Iterator<Item = Vec<u8>> + Send>>) {
        let Some(logs) = &self.logs else { return };
        if via_shipper {
            // In order with the batches, if this host still ships them.
            let shippers = self.shippers.lock().unwrap_or_else(|p| p.into_inner());
            let sent = shippers.get(&partition).is_some_and(|tx| tx.send(Shipment::Compact { copy }).is_ok());
            if !sent {
                logs.abandon(partition);
            }
            return;
        }
        match (logs.take_pending(partition), copy) {
            (Some((generation, last)), Ok(pieces)) => {
                let position = match last {
                    Some(b) => copylog::BasePosition {
                        from: b.from,
                        stream: b.stream,
                        sequence: b.sequence,
                        term: b.term,
                        last: (!b.copy).then_some(b),
                    },
                    None => copylog::BasePosition { from: self.me, stream: 0, sequence: 0, term: 0, last: None },
                };
                logs.write_base(partition, generation, position, pieces);
            }
            (Some(_), Err(e)) => {
                eprintln!("joule: cluster: partition {partition}: copy log not compacted: {e}");
                logs.abandon(partition);
            }
            (None, _) => {}
        }
    }

    fn doubt(&self, partition: u32) -> Result<joule_txn::remote::DoubtReport> {
        self.ask_leader(partition, None)
    }

    fn settle(&self, partition: u32, txn: u64, commit: bool) -> Result<()> {
        self.ask_leader(partition, Some((txn, commit)))
    }

    fn record_ring(&self, ring: &joule_common::hashinator::Hashinator, txn: u64) -> Result<()> {
        self.record_ring_in_metadata(ring, txn)
    }

    fn ring_txn(&self) -> Option<u64> {
        self.metadata.get().and_then(|m| m.metadata().ring_txn)
    }
}

impl Link {
    /// Queue `shipment` on `partition`'s shipper (started on first use).
    fn ship_to(&self, partition: u32, shipment: Shipment) {
        let mut shippers = self.shippers.lock().unwrap_or_else(|p| p.into_inner());
        let shipment = match shippers.get(&partition) {
            Some(tx) => match tx.send(shipment) {
                Ok(()) => return,
                Err(e) => e.0,
            },
            None => shipment,
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let _ = tx.send(shipment);
        shippers.insert(partition, tx);
        let (me, routing, progress) = (self.me, self.routing.clone(), self.progress.clone());
        let log = self.logs.clone().map(|logs| replication::ShipperLog {
            logs,
            stop: self.stop.clone(),
            host: self.host.clone(),
        });
        let spawned = std::thread::Builder::new()
            .name(format!("joule-ship-{partition}"))
            .spawn(move || ship(partition, me, rx, routing, progress, log));
        if let Err(e) = spawned {
            eprintln!("joule: cannot start partition {partition}'s replication thread: {e}");
        }
    }
}

// ---- framing ----

fn io_error(what: &str, e: impl std::fmt::Display) -> Error {
    err!(Unavailable, "{what}: {e}")
}

fn write_frame<T: Serialize>(s: &mut std::net::TcpStream, value: &T) -> Result<()> {
    let mut buf = Vec::new();
    append_frame(value, &mut buf)?;
    s.write_all(&buf).map_err(|e| io_error("cannot write to another host", e))
}

/// Read one frame's body, blocking (the stream's read timeout applies).
fn read_body(s: &mut std::net::TcpStream) -> std::io::Result<Vec<u8>> {
    let mut header = [0u8; 4];
    s.read_exact(&mut header)?;
    let len = u32::from_le_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("a frame of {len} bytes")));
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    Ok(body)
}

/// How long a frame that has begun may take to arrive whole.
const FRAME_TIMEOUT: Duration = Duration::from_secs(30);

/// Wait for the next frame, asking `keep_waiting` every [`CHECK_EVERY`]
/// while none has begun (`Ok(None)` once it says stop); a frame that has
/// begun is read whole. Timeouts never cut a frame in two.
fn read_frame_checked(
    s: &mut std::net::TcpStream,
    mut keep_waiting: impl FnMut() -> bool,
) -> std::io::Result<Option<Vec<u8>>> {
    loop {
        s.set_read_timeout(Some(CHECK_EVERY))?;
        let mut first = [0u8; 1];
        match s.peek(&mut first) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => break,
            // (`Interrupted`: a read with a timeout is not restarted after a
            // signal, nor after the process was stopped and continued —
            // `SIGSTOP`, a paused VM — and a host that woke must not take
            // that for a broken connection.)
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted
                ) =>
            {
                if !keep_waiting() {
                    return Ok(None);
                }
            }
            Err(e) => return Err(e),
        }
    }
    s.set_read_timeout(Some(FRAME_TIMEOUT))?;
    read_body(s).map(Some)
}

/// Write `value` as one frame, asking `keep_writing` every [`CHECK_EVERY`]
/// while the other end takes nothing (a host that hangs reads nothing,
/// and the write would otherwise block once the connection's buffers are
/// full, for as long as it hangs): `Ok(false)` once it says stop, the
/// frame perhaps cut in two (the stream must not be used again).
fn write_frame_checked<T: Serialize>(
    s: &mut std::net::TcpStream,
    value: &T,
    mut keep_writing: impl FnMut() -> bool,
) -> Result<bool> {
    let mut buf = Vec::new();
    append_frame(value, &mut buf)?;
    s.set_write_timeout(Some(CHECK_EVERY)).map_err(|e| io_error("cannot write to another host", e))?;
    let mut at = 0;
    while at < buf.len() {
        match s.write(&buf[at..]) {
            Ok(0) => return Err(io_error("cannot write to another host", "the connection closed")),
            Ok(n) => at += n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                if !keep_writing() {
                    return Ok(false);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error("cannot write to another host", e)),
        }
    }
    Ok(true)
}

async fn write_frame_async<T: Serialize>(s: &mut (impl AsyncWriteExt + Unpin), value: &T) -> Result<()> {
    let mut buf = Vec::new();
    append_frame(value, &mut buf)?;
    s.write_all(&buf).await.map_err(|e| io_error("cannot write to another host", e))
}

async fn read_body_async(s: &mut (impl AsyncReadExt + Unpin)) -> std::io::Result<Vec<u8>> {
    let mut header = [0u8; 4];
    s.read_exact(&mut header).await?;
    let len = u32::from_le_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("a frame of {len} bytes")));
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await?;
    Ok(body)
}

/// Open a data-plane connection of `kind` to `address` (blocking).
fn connect(address: &str, kind: u8) -> Result<std::net::TcpStream> {
    use std::net::ToSocketAddrs;
    let addr = address
        .to_socket_addrs()
        .map_err(|e| io_error(&format!("cannot resolve {address}"), e))?
        .next()
        .ok_or_else(|| err!(Unavailable, "{address} resolves to nothing"))?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .map_err(|e| io_error(&format!("cannot reach {address}"), e))?;
    let _ = s.set_nodelay(true);
    let ours = joule_cluster::network::data_protocol();
    s.write_all(&hello::hello(kind, ours)).map_err(|e| io_error(&format!("cannot reach {address}"), e))?;
    // The serving host's version, before any request (see `hello.rs`).
    let mut answer = [0u8; 2];
    s.set_read_timeout(Some(CONNECT_TIMEOUT)).map_err(|e| io_error(&format!("cannot reach {address}"), e))?;
    s.read_exact(&mut answer).map_err(|e| io_error(&format!("{address} did not say its protocol version"), e))?;
    s.set_read_timeout(None).map_err(|e| io_error(&format!("cannot reach {address}"), e))?;
    hello::check_answer(address, answer, ours)?;
    Ok(s)
}

/// An error as it travels: (code number, message).
type WireError = (u16, String);

fn to_wire_error(e: &Error) -> WireError {
    (e.code().number(), e.message().to_string())
}

fn from_wire_error((code, message): WireError) -> Error {
    Error::new(ErrorCode::from_number(code).unwrap_or(ErrorCode::Internal), message)
}

// ---- serving ----

/// Serve the data-plane connections the internal port hands over.
pub(crate) async fn serve(
    mut connections: tokio::sync::mpsc::UnboundedReceiver<tokio::net::TcpStream>,
    host: Arc<Host>,
    link: Arc<Link>,
    diverged: OnDivergence,
) {
    let _ = link.stop.set(diverged.clone());
    let _ = link.host.set(Arc::downgrade(&host));
    while let Some(s) = connections.recv().await {
        // Each on its own task: one that stalls before saying what it
        // carries holds up no other.
        tokio::spawn(serve_one(s, host.clone(), link.clone(), diverged.clone()));
    }
}

/// Read what the connection carries (it has [`CONNECT_TIMEOUT`] to say) and
/// serve it; anything else closes it.
async fn serve_one(mut s: tokio::net::TcpStream, host: Arc<Host>, link: Arc<Link>, diverged: OnDivergence) {
    // What it carries and the version it speaks (see `hello.rs`).
    let mut opening = [0u8; 3];
    match tokio::time::timeout(CONNECT_TIMEOUT, s.read_exact(&mut opening)).await {
        Ok(Ok(_)) => {}
        _ => return,
    }
    let [kind, v0, v1] = opening;
    let ours = joule_cluster::network::data_protocol();
    if s.write_all(&ours.to_le_bytes()).await.is_err() {
        return;
    }
    if let Err(refused) = hello::accept([v0, v1], s.peer_addr().ok(), ours) {
        hello::log_mismatch(&refused);
        return;
    }
    match kind {
        FORWARD => serve_forwarded(s, host, link).await,
        REPLICATION => serve_replication(s, host, link, diverged).await,
        REPAIR => repair::serve_repair(s, host, link, diverged).await,
        REJOIN => serve_rejoin(s, host, link).await,
        DOUBT => doubt::serve_doubt(s, host, link).await,
        LOAD => load::serve_load(s, host).await,
        SESSION => {
            let Ok(std) = s.into_std() else { return };
            let _ = std.set_nonblocking(false);
            let _ =
                std::thread::Builder::new().name("joule-session".into()).spawn(move || serve_session(std, host, link));
        }
        _ => {}
    }
}

/// Serve a rejoining host's request for a copy of a partition led here.
async fn serve_rejoin(mut s: tokio::net::TcpStream, host: Arc<Host>, link: Arc<Link>) {
    let Ok(body) = read_body_async(&mut s).await else { return };
    // Fault injection: the request is lost before the leader acts on it
    // (`crates/cli/tests/cluster.rs`).
    if joule_common::failpoint::armed("rejoin_request_lost") {
        return;
    }
    let result = match decode::<(u32, u64)>(&body) {
        Ok((partition, joiner)) if !link.routing.load().holds_or_takes(partition, joiner) => {
            Err(err!(InvalidArgument, "host {joiner} holds no copy of partition {partition} and takes none"))
        }
        // Only a leader whose own copy is whole hands one out (not a host
        // that restarted and is waiting for its own).
        Ok((partition, _)) if !link.leads(partition) || !host.replica_loaded(partition) => {
            Err(err!(Unavailable, "this host does not lead partition {partition} with a loaded copy"))
        }
        Ok((partition, joiner)) => tokio::task::spawn_blocking(move || host.rejoin_partition(partition, joiner))
            .await
            .unwrap_or_else(|_| Err(err!(Internal, "the rejoin request failed"))),
        Err(e) => Err(e),
    };
    // Fault injection: the copy is on its way, its answer lost
    // (`crates/cli/tests/cluster.rs`).
    if result.is_ok() && joule_common::failpoint::armed("rejoin_answer_lost") {
        return;
    }
    let _ = write_frame_async(&mut s, &result.map_err(|e| to_wire_error(&e))).await;
}

pub(crate) use copylog::{CopyLogs, SyncMode};

impl Link {
    /// Rebuild this host's copy of `partition` from its copy log (the whole
    /// cluster restarted, or the partition is brought back): every entry
    /// through the path a replica applies batches by; the number of
    /// entries. An error unless the copy is whole at the end.
    pub(crate) async fn replay_copy(&self, host: &Arc<Host>, partition: u32, diverged: &OnDivergence) -> Result<u64> {
        let entries = self
            .replay_entries(host, partition, diverged)
            .await
            .map_err(|e| e.context(format!("partition {partition}: replaying its copy log")))?;
        if !host.replica_loaded(partition) {
            bail!(Internal, "partition {partition}: its copy log replayed without a whole copy");
        }
        Ok(entries)
    }

    async fn replay_entries(&self, host: &Arc<Host>, partition: u32, diverged: &OnDivergence) -> Result<u64> {
        let Some(logs) = self.logs.clone() else { bail!(Unavailable, "this host keeps no copy logs") };
        let (tx, mut rx) = tokio::sync::mpsc::channel::<copylog::Entry>(64);
        let reader = tokio::task::spawn_blocking(move || {
            logs.replay(partition, |entry| {
                tx.blocking_send(entry).map_err(|_| err!(Unavailable, "partition {partition}: the replay stopped"))
            })
        });
        let mut applied = Ok(());
        while let Some(entry) = rx.recv().await {
            let r = match entry {
                copylog::Entry::Complete => {
                    host.copy_loaded(partition);
                    Ok(())
                }
                copylog::Entry::Batch(b) => {
                    replication::apply_batch(host, &self.progress, None, b, diverged, || None).await
                }
                // In the base already: where the copy stands.
                copylog::Entry::Applied(b) => {
                    self.progress.applied(b);
                    Ok(())
                }
            };
            if let Err(e) = r {
                applied = Err(e);
                break;
            }
        }
        drop(rx);
        let read = reader.await.map_err(|e| err!(Internal, "the copy-log reader failed: {e}"))?;
        applied?;
        read
    }
}

/// Ask the host at `address` (leading `partition`) for a copy of it (a
/// rejoin, `cluster.rs`; a host taking a copy, `copies.rs`); it arrives on
/// this host's replication connection, beside the stream. `Ok` with the
/// leader's answer (a refusal means nothing was sent), `Err` when it did
/// not answer — the copy may be on its way or not, so it must not be asked
/// for again from the same leader (two copies would arrive one after the
/// other).
pub(crate) async fn ask_for_copy(address: &str, partition: u32, me: HostId) -> Result<Result<()>> {
    let mut s = match open_async(address, REJOIN).await {
        Ok(s) => s,
        // Nothing reached the leader: asking again is safe.
        Err(e) => return Ok(Err(e)),
    };
    write_frame_async(&mut s, &(partition, me)).await?;
    let body = match tokio::time::timeout(Duration::from_secs(30), read_body_async(&mut s)).await {
        Ok(r) => r.map_err(|e| io_error(&format!("{address} did not answer"), e))?,
        Err(_) => bail!(Unavailable, "{address} did not answer within 30 s"),
    };
    Ok(decode::<std::result::Result<(), WireError>>(&body)?.map_err(from_wire_error))
}

/// Open a data-plane connection of `kind` to `address` (async).
pub(super) async fn open_async(address: &str, kind: u8) -> Result<tokio::net::TcpStream> {
    let mut s = match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(address)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(io_error(&format!("cannot reach {address}"), e)),
        Err(_) => return Err(err!(Unavailable, "cannot reach {address} within {CONNECT_TIMEOUT:?}")),
    };
    let _ = s.set_nodelay(true);
    let ours = joule_cluster::network::data_protocol();
    s.write_all(&hello::hello(kind, ours)).await.map_err(|e| io_error(&format!("cannot reach {address}"), e))?;
    // The serving host's version, before any request (see `hello.rs`).
    let mut answer = [0u8; 2];
    match tokio::time::timeout(CONNECT_TIMEOUT, s.read_exact(&mut answer)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(io_error(&format!("{address} did not say its protocol version"), e)),
        Err(_) => bail!(Unavailable, "{address} did not say its protocol version within {CONNECT_TIMEOUT:?}"),
    }
    hello::check_answer(address, answer, ours)?;
    Ok(s)
}

/// Open a data-plane connection to `address` and close it again: `Err`
/// with `ProtocolError` when the host there runs a build of another
/// data-plane protocol (`hello.rs`), another error when it cannot be
/// reached.
pub(crate) async fn probe_build(address: &str) -> Result<()> {
    open_async(address, LOAD).await.map(drop)
}

/// One request on a new connection of `kind`: the answer's body, which
/// may take `wait` to come.
pub(super) async fn request_async<T: Serialize>(
    address: &str,
    kind: u8,
    request: &T,
    wait: Duration,
) -> Result<Vec<u8>> {
    let mut s = open_async(address, kind).await?;
    write_frame_async(&mut s, request).await?;
    match tokio::time::timeout(wait, read_body_async(&mut s)).await {
        Ok(r) => r.map_err(|e| io_error(&format!("{address} did not answer"), e)),
        Err(_) => Err(err!(Unavailable, "{address} did not answer within {wait:?}")),
    }
}
