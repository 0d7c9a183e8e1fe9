//! The data plane between a cluster's hosts: the [`ClusterLink`] the
//! transaction layer uses, over connections to the other hosts' internal
//! ports, and the serving of such connections here.
//!
//! A data-plane connection opens with [`DATA_MAGIC`] (the internal port's
//! server hands it over; see `joule-cluster`) and one byte saying what it
//! carries; then frames — `length (u32 LE) | postcard` — each way:
//!
//! * `F`, **forwarded calls**: `(id, WireCall)` requests, `(id,
//!   WireResponse)` answers in any order. One connection per target host,
//!   shared by every call forwarded there. A call on a connection that
//!   breaks fails as `OutcomeUnknown` if it was written, `Unavailable` if
//!   not.
//! * `S`, **a remote site session**: the coordinator here drives partition
//!   `p`'s leader there: `Begin`, `Round`, `Finish` requests, one answer
//!   each. Sessions are pooled per (partition, host) between transactions.
//!   While waiting, a session checks the metadata: a target declared
//!   failed ends the wait.
//! * `R`, **replication**: batches (partition, the sender's stream and the
//!   batch's position on it, records), one
//!   acknowledgement each once the replica has applied them. A shipper
//!   thread per partition sends each batch to every live replica and waits
//!   for all acknowledgements before running the batch's callbacks (which
//!   release the answers). A batch sent again after a broken connection is
//!   recognised by its position and not applied twice; a position skipped
//!   means batches were lost, and the replica stops (its copy would
//!   silently differ). A rejoining replica's copy pieces carry the position
//!   the copy was taken at.
//!
//! Leadership is read on every transaction, so it is kept precomputed
//! ([`Routing`]) and swapped whole when the metadata changes.

use arc_swap::ArcSwap;
use joule_cluster::network::DATA_MAGIC;
use joule_cluster::{ClusterMetadata, HostId, Routes};
use joule_common::{err, Error, ErrorCode, Result};
use joule_txn::remote::{append_frame, decode, ClusterLink, Destination, RemoteSite, WireCall, WireItem, WireResponse};
use joule_txn::remote::{SessionDriver, WireResult};
use joule_txn::{Host, Response, ResponseSink, TxnIds};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest data-plane frame accepted.
const MAX_FRAME: usize = 256 << 20;
const FORWARD: u8 = b'F';
const SESSION: u8 = b'S';
const REPLICATION: u8 = b'R';
const REJOIN: u8 = b'J';
/// How long opening a connection to another host may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a rejoining host may take to acknowledge a batch before it is
/// dropped (it then starts its rejoin again).
const JOINER_PATIENCE: Duration = Duration::from_secs(10);
/// Replication batches merged from queued ones stop growing past this.
const MAX_BATCH_BYTES: usize = 8 << 20;
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
    /// Internal addresses of every host, up or not.
    all: BTreeMap<HostId, String>,
}

impl Routing {
    fn from(me: HostId, m: &ClusterMetadata, routes: &Routes) -> Routing {
        Routing {
            me,
            leaders: m.partitions.iter().map(|p| p.leader).collect(),
            coordinator: m.mp_coordinator,
            up: m
                .hosts
                .iter()
                .filter(|(id, _)| m.is_up(**id))
                .map(|(id, h)| (*id, routes.dial(&h.internal_address)))
                .collect(),
            replicas: m.partitions.iter().map(|p| p.replicas.clone()).collect(),
            all: m.hosts.iter().map(|(id, h)| (*id, routes.dial(&h.internal_address))).collect(),
        }
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
}

/// Idle remote-site sessions, by (partition, host).
type SessionPool = Arc<Mutex<HashMap<(u32, HostId), Vec<std::net::TcpStream>>>>;

impl Link {
    pub fn new(me: HostId, metadata: &ClusterMetadata, routes: Routes, runtime: tokio::runtime::Handle) -> Arc<Link> {
        Arc::new(Link {
            me,
            routing: Arc::new(ArcSwap::from_pointee(Routing::from(me, metadata, &routes))),
            routes,
            runtime,
            forwarders: ArcSwap::default(),
            spawning: Mutex::default(),
            shippers: Mutex::default(),
            sessions: Arc::default(),
            forwarded: Default::default(),
        })
    }

    /// The metadata changed: route by it from now on.
    pub fn update(&self, metadata: &ClusterMetadata) {
        self.routing.store(Arc::new(Routing::from(self.me, metadata, &self.routes)));
    }
}

impl ClusterLink for Link {
    fn leads(&self, partition: u32) -> bool {
        self.routing.load().leaders.get(partition as usize).copied().flatten() == Some(self.me)
    }

    fn coordinates(&self) -> bool {
        self.routing.load().coordinator == Some(self.me)
    }

    fn forward(&self, to: Destination, call: WireCall, handle: u64, sink: Arc<dyn ResponseSink>) {
        let which = usize::from(to == Destination::Coordinator);
        self.forwarded[which].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let routing = self.routing.load();
        let target = match to {
            Destination::Partition(p) => routing.leaders.get(p as usize).copied().flatten(),
            Destination::Coordinator => routing.coordinator,
        };
        let Some((target, address)) = target.and_then(|t| routing.up.get(&t).map(|a| (t, a))) else {
            let e = match to {
                Destination::Partition(p) => err!(Unavailable, "partition {p} has no running copy in the cluster"),
                Destination::Coordinator => err!(Unavailable, "the cluster has no multi-partition coordinator"),
            };
            return sink.deliver(handle, Response::failure(e, None));
        };
        let mut request = Forward { call, handle, sink };
        if let Some(tx) = self.forwarders.load().get(&target) {
            match tx.send(request) {
                Ok(()) => return,
                Err(e) => request = e.0,
            }
        }
        // First call to this host (or its task ended): start one, once.
        let _spawning = self.spawning.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = self.forwarders.load().get(&target) {
            match tx.send(request) {
                Ok(()) => return,
                Err(e) => request = e.0,
            }
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let _ = tx.send(request);
        self.forwarders.rcu(|m| {
            let mut m = (**m).clone();
            m.insert(target, tx.clone());
            m
        });
        self.runtime.spawn(forwarder(address.clone(), target, self.routing.clone(), rx));
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
        let (me, routing) = (self.me, self.routing.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("joule-ship-{partition}"))
            .spawn(move || ship(partition, me, rx, routing));
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
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
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
    let mut hello = DATA_MAGIC.to_vec();
    hello.push(kind);
    s.write_all(&hello).map_err(|e| io_error(&format!("cannot reach {address}"), e))?;
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

// ---- forwarded calls ----

struct Forward {
    call: WireCall,
    handle: u64,
    sink: Arc<dyn ResponseSink>,
}

type Pending = Arc<Mutex<HashMap<u64, (u64, Arc<dyn ResponseSink>)>>>;

/// Carry calls to one host over one connection, reopened when it breaks.
async fn forwarder(
    address: String,
    target: HostId,
    routing: Shared<Routing>,
    mut requests: tokio::sync::mpsc::UnboundedReceiver<Forward>,
) {
    let mut next_id: u64 = 0;
    while let Some(first) = requests.recv().await {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&address)).await;
        let mut stream = match stream {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                fail(first, err!(Unavailable, "cannot reach {address} to forward the call: {e}"));
                continue;
            }
            Err(_) => {
                fail(first, err!(Unavailable, "cannot reach {address} to forward the call within {CONNECT_TIMEOUT:?}"));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let mut hello = DATA_MAGIC.to_vec();
        hello.push(FORWARD);
        if let Err(e) = stream.write_all(&hello).await {
            fail(first, err!(Unavailable, "cannot reach {address} to forward the call: {e}"));
            continue;
        }
        let (mut rd, mut wr) = stream.into_split();
        let pending: Pending = Arc::default();
        let reader = {
            let pending = pending.clone();
            tokio::spawn(async move {
                while let Ok(body) = read_body_async(&mut rd).await {
                    let Ok((id, response)) = decode::<(u64, WireResponse)>(&body) else { break };
                    let entry = pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                    if let Some((handle, sink)) = entry {
                        sink.deliver(handle, response.into_response());
                    }
                }
            })
        };
        let mut request = Some(first);
        let mut buf = Vec::with_capacity(64 * 1024);
        loop {
            // A host declared failed (dead, hung, cut off) answers nothing
            // more: what waits on it ends as unknown.
            if !routing.load().up.contains_key(&target) {
                break;
            }
            let Some(r) = request.take() else {
                tokio::select! {
                    r = requests.recv() => match r {
                        Some(r) => { request = Some(r); continue; }
                        None => break,
                    },
                    _ = wait_finished(&reader) => break,
                    _ = tokio::time::sleep(CHECK_EVERY) => continue,
                }
            };
            // Everything queued goes out in one write.
            buf.clear();
            let mut next = Some(r);
            while let Some(r) = next.take() {
                next_id += 1;
                pending.lock().unwrap_or_else(|p| p.into_inner()).insert(next_id, (r.handle, r.sink.clone()));
                if let Err(e) = append_frame(&(next_id, &r.call), &mut buf) {
                    // Not sent: say so to this caller alone.
                    if let Some((handle, sink)) = pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&next_id) {
                        sink.deliver(handle, Response::failure(e, None));
                    }
                }
                if buf.len() < 1 << 20 {
                    next = requests.try_recv().ok();
                }
            }
            if wr.write_all(&buf).await.is_err() {
                break;
            }
        }
        reader.abort();
        // Calls written and not answered: they may have run.
        let lost: Vec<_> = pending.lock().unwrap_or_else(|p| p.into_inner()).drain().collect();
        for (_, (handle, sink)) in lost {
            let e = err!(OutcomeUnknown, "the connection to {address} broke before the forwarded call was answered");
            sink.deliver(handle, Response::failure(e, None));
        }
    }
}

async fn wait_finished(task: &tokio::task::JoinHandle<()>) {
    while !task.is_finished() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn fail(f: Forward, e: Error) {
    f.sink.deliver(f.handle, Response::failure(e, None));
}

// ---- remote site sessions ----

#[derive(Serialize, Deserialize)]
enum SessionRequest {
    Begin(TxnIds),
    Round(Vec<WireItem>),
    Finish { commit: bool, schema_changed: bool },
}

#[derive(Serialize, Deserialize)]
enum SessionReply {
    Done,
    Results(Vec<WireResult>),
}

struct Session {
    stream: Option<std::net::TcpStream>,
    partition: u32,
    target: HostId,
    routing: Shared<Routing>,
    pool: SessionPool,
}

impl Session {
    fn exchange(&mut self, request: &SessionRequest) -> Result<SessionReply> {
        let Some(s) = self.stream.as_mut() else {
            return Err(err!(Unavailable, "the session with host {} broke", self.target));
        };
        let result = (|| {
            write_frame(s, request)?;
            let (routing, target, partition) = (&self.routing, self.target, self.partition);
            let mut why = None;
            let waited = read_frame_checked(s, || {
                let r = routing.load();
                if !r.up.contains_key(&target) {
                    why = Some(format!("host {target} (leading partition {partition}) failed during the transaction"));
                } else if r.coordinator != Some(r.me) {
                    // Another host coordinates now: this transaction is
                    // abandoned (the partition's leader rolls it back).
                    why = Some("this host stopped coordinating during the transaction (the metadata moved it)".into());
                }
                why.is_none()
            });
            match waited {
                Ok(Some(body)) => {
                    decode::<std::result::Result<SessionReply, WireError>>(&body)?.map_err(from_wire_error)
                }
                Ok(None) => Err(err!(OutcomeUnknown, "{}", why.unwrap_or_default())),
                Err(e) => Err(err!(
                    OutcomeUnknown,
                    "the connection to host {target} (leading partition {partition}) broke: {e}"
                )),
            }
        })();
        if result.is_err() {
            // A partial frame may be in flight: never reuse this stream.
            self.stream = None;
        }
        result
    }
}

impl RemoteSite for Session {
    fn begin(&mut self, ids: TxnIds) -> Result<()> {
        self.exchange(&SessionRequest::Begin(ids)).map(|_| ())
    }

    fn round(&mut self, items: Vec<WireItem>) -> Result<Vec<WireResult>> {
        match self.exchange(&SessionRequest::Round(items))? {
            SessionReply::Results(r) => Ok(r),
            SessionReply::Done => Err(err!(ProtocolError, "host {} answered a round with no results", self.target)),
        }
    }

    fn finish(&mut self, commit: bool, schema_changed: bool) -> Result<()> {
        self.exchange(&SessionRequest::Finish { commit, schema_changed }).map(|_| ())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(s) = self.stream.take() {
            self.pool
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry((self.partition, self.target))
                .or_default()
                .push(s);
        }
    }
}

/// Serve one session: another host's coordinator drives a site here.
fn serve_session(mut s: std::net::TcpStream, host: Arc<Host>, link: Arc<Link>) {
    let Ok(body) = read_body(&mut s) else { return };
    let Ok((partition, from)) = decode::<(u32, HostId)>(&body) else { return };
    let mut driver: Option<SessionDriver> = None;
    loop {
        // A coordinator that the metadata replaced (dead, hung or cut off)
        // must not hold this site: its open transaction rolls back.
        let open = driver.as_ref().is_some_and(|d| d.is_open());
        let body = match read_frame_checked(&mut s, || !open || link.routing.load().coordinator == Some(from)) {
            Ok(Some(body)) => body,
            Ok(None) | Err(_) => break,
        };
        let reply = match decode::<SessionRequest>(&body) {
            Err(e) => Err(e),
            Ok(SessionRequest::Begin(_)) if link.routing.load().coordinator != Some(from) => Err(err!(
                Unavailable,
                "host {from} no longer coordinates multi-partition transactions (the metadata moved it)"
            )),
            Ok(SessionRequest::Begin(_)) if !link.leads(partition) => {
                Err(err!(Unavailable, "this host no longer leads partition {partition}"))
            }
            Ok(SessionRequest::Begin(ids)) => {
                let d = match driver.take() {
                    Some(d) => Ok(d),
                    None => host.remote_session(partition),
                };
                d.and_then(|mut d| {
                    let r = d.begin(ids);
                    driver = Some(d);
                    r.map(|()| SessionReply::Done)
                })
            }
            Ok(SessionRequest::Round(items)) => match driver.as_mut() {
                Some(d) => d.round(items).map(SessionReply::Results),
                None => Err(err!(ProtocolError, "a round before the transaction began")),
            },
            Ok(SessionRequest::Finish { commit, schema_changed }) => match driver.as_mut() {
                Some(d) => d.finish(commit, schema_changed).map(|()| SessionReply::Done),
                None => Err(err!(ProtocolError, "an outcome before the transaction began")),
            },
        };
        let reply = reply.map_err(|e| to_wire_error(&e));
        if write_frame(&mut s, &reply).is_err() {
            break;
        }
    }
    // Dropping an open driver rolls its transaction back.
}

// ---- replication ----

/// One replication frame: a batch of records, or a piece of a rejoining
/// replica's copy, on one leader's stream for a partition.
#[derive(Serialize, Deserialize)]
struct Batch {
    partition: u32,
    /// The sender's stream (one per shipper: a new leader, or a leader's
    /// new process, starts a new one).
    stream: u64,
    /// The batch's position on the stream; a copy piece carries the
    /// position the copy was taken at.
    sequence: u64,
    copy: bool,
    from: HostId,
    records: Vec<u8>,
}

enum Shipment {
    /// Records for every replica; `done` once all have applied them.
    Batch { records: Vec<u8>, done: Box<dyn FnOnce() + Send> },
    /// A rejoining replica: its copy of the partition, then every batch.
    AddReplica { host: HostId, copy: Box<dyn Iterator<Item = Vec<u8>> + Send> },
}

/// One replica's connection (batches in order, one acknowledgement each).
struct ReplicaConnection {
    stream: std::net::TcpStream,
}

/// Ship partition `partition`'s batches to its live replicas, in order.
fn ship(partition: u32, me: HostId, shipments: std::sync::mpsc::Receiver<Shipment>, routing: Shared<Routing>) {
    let mut connections: BTreeMap<HostId, ReplicaConnection> = BTreeMap::new();
    // Rejoining replicas: sent every batch though not up yet.
    let mut joining: std::collections::BTreeSet<HostId> = Default::default();
    let mut sequence: u64 = 0;
    let stream = joule_common::splitmix::mix(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(partition),
    );
    let mut next = shipments.recv().ok();
    while let Some(shipment) = next.take() {
        match shipment {
            Shipment::AddReplica { host, copy } => {
                let Some(address) = address_of(&routing, host) else {
                    eprintln!("joule: partition {partition}: host {host} asked to rejoin but is not a member");
                    next = shipments.recv().ok();
                    continue;
                };
                // A connection from before the host restarted went to its
                // old process: the copy opens a new one.
                connections.remove(&host);
                let mut ok = true;
                for records in copy {
                    let piece = Batch { partition, stream, sequence, copy: true, from: me, records };
                    if !send_to_one(host, &address, &piece, &routing, &mut connections) {
                        ok = false;
                        break;
                    }
                }
                if ok {
                    joining.insert(host);
                } else {
                    eprintln!("joule: partition {partition}: host {host} did not take the partition's copy");
                }
                next = shipments.recv().ok();
            }
            Shipment::Batch { records, done } => {
                // Everything queued behind it goes in the same batch.
                let mut records = records;
                let mut dones = vec![done];
                while records.len() < MAX_BATCH_BYTES {
                    match shipments.try_recv() {
                        Ok(Shipment::Batch { records: more, done }) => {
                            records.extend_from_slice(&more);
                            dones.push(done);
                        }
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                // Even with no records: the replicas' acknowledgement confirms
                // this host still leads, before answers (reads too) go out.
                sequence += 1;
                let batch = Batch { partition, stream, sequence, copy: false, from: me, records };
                deliver_batch(&batch, &routing, &mut connections, &mut joining);
                for d in dones {
                    d();
                }
                if next.is_none() {
                    next = shipments.recv().ok();
                }
            }
        }
    }
}

/// Where `host` listens, if the metadata knows it (up or not).
fn address_of(routing: &Shared<Routing>, host: HostId) -> Option<String> {
    routing.load().all.get(&host).cloned()
}

/// Send one batch to one (rejoining) host and wait for its
/// acknowledgement; no retry.
fn send_to_one(
    host: HostId,
    address: &str,
    piece: &Batch,
    routing: &Shared<Routing>,
    connections: &mut BTreeMap<HostId, ReplicaConnection>,
) -> bool {
    let c = match connections.entry(host) {
        std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::btree_map::Entry::Vacant(e) => match connect(address, REPLICATION) {
            Ok(stream) => e.insert(ReplicaConnection { stream }),
            Err(_) => return false,
        },
    };
    let ok = write_frame(&mut c.stream, piece).is_ok() && wait_ack(c, host, routing, true);
    if !ok {
        connections.remove(&host);
    }
    ok
}

/// Send one batch to every live replica (and every rejoining one) and wait
/// for their acknowledgements. A live replica that cannot be reached is
/// tried again until it acknowledges or the metadata says it is down; a
/// rejoining one that fails is dropped (it starts its rejoin again).
fn deliver_batch(
    batch: &Batch,
    routing: &Shared<Routing>,
    connections: &mut BTreeMap<HostId, ReplicaConnection>,
    joining: &mut std::collections::BTreeSet<HostId>,
) {
    let (partition, me) = (batch.partition, batch.from);
    let mut acknowledged: std::collections::BTreeSet<HostId> = Default::default();
    loop {
        let r = routing.load();
        // Up now: no longer joining.
        joining.retain(|h| !r.up.contains_key(h));
        let replicas = r.replicas.get(partition as usize).cloned().unwrap_or_default();
        let targets: Vec<(HostId, String, bool)> = replicas
            .iter()
            .filter(|h| **h != me && !acknowledged.contains(h))
            .filter_map(|h| match r.up.get(h) {
                Some(a) => Some((*h, a.clone(), false)),
                None if joining.contains(h) => r.all.get(h).map(|a| (*h, a.clone(), true)),
                None => None,
            })
            .collect();
        // Connections to hosts that are not targets now (down, or a
        // joining host that failed) are closed: one that comes back is a
        // new process.
        connections.retain(|h, _| acknowledged.contains(h) || targets.iter().any(|(t, _, _)| t == h));
        if targets.is_empty() {
            return;
        }
        let mut sent = Vec::new();
        for (host, address, rejoining) in &targets {
            if !connections.contains_key(host) {
                match connect(address, REPLICATION) {
                    Ok(stream) => {
                        connections.insert(*host, ReplicaConnection { stream });
                    }
                    Err(_) => {
                        if *rejoining {
                            joining.remove(host);
                        }
                        continue;
                    }
                }
            }
            let Some(c) = connections.get_mut(host) else { continue };
            if write_frame(&mut c.stream, batch).is_ok() {
                sent.push((*host, *rejoining));
            } else {
                connections.remove(host);
                if *rejoining {
                    joining.remove(host);
                }
            }
        }
        for (host, rejoining) in sent {
            let Some(c) = connections.get_mut(&host) else { continue };
            if wait_ack(c, host, routing, rejoining) {
                acknowledged.insert(host);
            } else {
                connections.remove(&host);
                if rejoining {
                    eprintln!("joule: partition {partition}: rejoining host {host} stopped taking the stream");
                    joining.remove(&host);
                }
            }
        }
        if targets.iter().all(|(h, _, _)| acknowledged.contains(h)) {
            return;
        }
        // Try again (the batch's sequence makes a repeat harmless) until
        // the replicas that failed are declared down.
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wait for `host`'s acknowledgement; false if the connection broke or
/// the host was declared down meanwhile.
fn wait_ack(c: &mut ReplicaConnection, host: HostId, routing: &Shared<Routing>, joining: bool) -> bool {
    // A rejoining host is not up yet, so failure detection does not watch
    // it: it gets a bounded wait (a hung joiner must not stall the partition).
    let since = std::time::Instant::now();
    let keep_waiting = || {
        if joining {
            since.elapsed() < JOINER_PATIENCE
        } else {
            routing.load().up.contains_key(&host)
        }
    };
    match read_frame_checked(&mut c.stream, keep_waiting) {
        Ok(Some(body)) => match decode::<std::result::Result<(), WireError>>(&body) {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                eprintln!("joule: host {host} could not apply replicated records: {}", from_wire_error(e));
                false
            }
            Err(_) => false,
        },
        Ok(None) | Err(_) => false,
    }
}

/// Per partition replicated here: the stream followed (sender and stream
/// id) with the position of the last batch received, and per partition the
/// (stream, position) applied. A batch sent again is acknowledged, not
/// applied twice; a batch past the next position means batches were lost
/// on the way, and the copy can no longer be trusted.
#[derive(Default)]
pub(crate) struct ReplicaProgress {
    received: Mutex<BTreeMap<u32, (HostId, u64, u64)>>,
    applied: tokio::sync::watch::Sender<BTreeMap<u32, (u64, u64)>>,
}

/// What to do with a batch that arrived.
enum Arrival {
    Apply,
    /// Sent again: acknowledge once the first copy has been applied.
    Repeat,
    /// Batches before it never arrived: the position expected.
    Gap(u64),
}

impl ReplicaProgress {
    fn arrive(&self, b: &Batch) -> Arrival {
        let mut received = self.received.lock().unwrap_or_else(|p| p.into_inner());
        match received.get_mut(&b.partition) {
            Some((from, stream, last)) if *from == b.from && *stream == b.stream => {
                if b.copy {
                    // A copy: the stream continues after the position it was taken at.
                    *last = b.sequence;
                    Arrival::Apply
                } else if b.sequence <= *last {
                    Arrival::Repeat
                } else if b.sequence == *last + 1 {
                    *last = b.sequence;
                    Arrival::Apply
                } else {
                    Arrival::Gap(*last + 1)
                }
            }
            _ => {
                // A new stream (a new leader, or the first one): followed from here.
                received.insert(b.partition, (b.from, b.stream, b.sequence));
                Arrival::Apply
            }
        }
    }
}

/// Serve a replication connection: apply each batch, then acknowledge it.
/// What a replica does when it cannot apply what its leader sent: its copy
/// no longer follows the leader's, so it must stop (and rejoin afresh).
pub(crate) type OnDivergence = Arc<dyn Fn(Error) + Send + Sync>;

async fn serve_replication(
    mut s: tokio::net::TcpStream,
    host: Arc<Host>,
    progress: Arc<ReplicaProgress>,
    link: Arc<Link>,
    diverged: OnDivergence,
) {
    while let Ok(body) = read_body_async(&mut s).await {
        let Ok(batch) = decode::<Batch>(&body) else { break };
        let (partition, from) = (batch.partition, batch.from);
        // Only the partition's leader (as this host's metadata has it) is
        // followed: a deposed leader that has not noticed yet is refused,
        // so it can neither change a replica nor answer a read.
        let leader = link.routing.load().leaders.get(partition as usize).copied().flatten();
        if !host.accepts_records(partition, &batch.records) {
            let e = err!(Unavailable, "this host restarted and has not loaded partition {partition}'s copy yet");
            if write_frame_async(&mut s, &std::result::Result::<(), WireError>::Err(to_wire_error(&e))).await.is_err() {
                break;
            }
            continue;
        }
        if leader != Some(from) || from == link.me {
            let e = err!(Unavailable, "host {from} does not lead partition {partition} (the metadata says {leader:?})");
            if write_frame_async(&mut s, &std::result::Result::<(), WireError>::Err(to_wire_error(&e))).await.is_err() {
                break;
            }
            continue;
        }
        let result: std::result::Result<(), WireError> = match progress.arrive(&batch) {
            Arrival::Apply => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                host.apply_replicated(partition, &batch.records, Box::new(move |r| drop(tx.send(r))));
                let r = rx.await.unwrap_or_else(|_| Err(err!(Unavailable, "the host is shutting down")));
                if let Err(e) = &r {
                    // Partly applied, perhaps: this copy can no longer be trusted.
                    diverged(
                        e.clone().context(format!("partition {partition}: records from host {from} did not apply")),
                    );
                    let _ = write_frame_async(&mut s, &r.map_err(|e| to_wire_error(&e))).await;
                    break;
                }
                progress.applied.send_modify(|m| {
                    let a = m.entry(partition).or_insert((batch.stream, 0));
                    *a = if a.0 == batch.stream {
                        (a.0, a.1.max(batch.sequence))
                    } else {
                        (batch.stream, batch.sequence)
                    };
                });
                Ok(())
            }
            Arrival::Repeat => {
                let mut rx = progress.applied.subscribe();
                let (stream, sequence) = (batch.stream, batch.sequence);
                let _ = rx.wait_for(|m| m.get(&partition).is_some_and(|a| a.0 != stream || a.1 >= sequence)).await;
                Ok(())
            }
            Arrival::Gap(expected) => {
                let e = err!(
                    Internal,
                    "partition {partition}: host {from} sent batch {} but batch {expected} never arrived",
                    batch.sequence
                );
                diverged(e.clone());
                let _ = write_frame_async(&mut s, &std::result::Result::<(), WireError>::Err(to_wire_error(&e))).await;
                break;
            }
        };
        if write_frame_async(&mut s, &result).await.is_err() {
            break;
        }
    }
}

// ---- serving ----

/// Serve the data-plane connections the internal port hands over.
pub(crate) async fn serve(
    mut connections: tokio::sync::mpsc::UnboundedReceiver<tokio::net::TcpStream>,
    host: Arc<Host>,
    link: Arc<Link>,
    diverged: OnDivergence,
) {
    let progress = Arc::new(ReplicaProgress::default());
    while let Some(mut s) = connections.recv().await {
        let mut kind = [0u8; 1];
        if s.read_exact(&mut kind).await.is_err() {
            continue;
        }
        let host = host.clone();
        match kind[0] {
            FORWARD => {
                tokio::spawn(serve_forwarded(s, host));
            }
            REPLICATION => {
                tokio::spawn(serve_replication(s, host, progress.clone(), link.clone(), diverged.clone()));
            }
            REJOIN => {
                tokio::spawn(serve_rejoin(s, host, link.clone()));
            }
            SESSION => {
                let Ok(std) = s.into_std() else { continue };
                let _ = std.set_nonblocking(false);
                let _ = std::thread::Builder::new().name("joule-session".into()).spawn({
                    let link = link.clone();
                    move || serve_session(std, host, link)
                });
            }
            _ => {}
        }
    }
}

/// Serve a rejoining host's request for a copy of a partition led here.
async fn serve_rejoin(mut s: tokio::net::TcpStream, host: Arc<Host>, link: Arc<Link>) {
    let Ok(body) = read_body_async(&mut s).await else { return };
    let result = match decode::<(u32, u64)>(&body) {
        Ok((partition, joiner))
            if !link.routing.load().replicas.get(partition as usize).is_some_and(|r| r.contains(&joiner)) =>
        {
            Err(err!(InvalidArgument, "host {joiner} holds no copy of partition {partition}"))
        }
        Ok((partition, joiner)) => tokio::task::spawn_blocking(move || host.rejoin_partition(partition, joiner))
            .await
            .unwrap_or_else(|_| Err(err!(Internal, "the rejoin request failed"))),
        Err(e) => Err(e),
    };
    let _ = write_frame_async(&mut s, &result.map_err(|e| to_wire_error(&e))).await;
}

/// Ask the host at `address` (leading `partition`) for a copy of it; it
/// arrives on this host's replication connection, followed by the stream.
pub(crate) async fn request_copy(address: &str, partition: u32, me: HostId) -> Result<()> {
    let connect = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(address)).await;
    let mut s = match connect {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(io_error(&format!("cannot reach {address}"), e)),
        Err(_) => return Err(err!(Unavailable, "cannot reach {address} within {CONNECT_TIMEOUT:?}")),
    };
    let mut hello = DATA_MAGIC.to_vec();
    hello.push(REJOIN);
    s.write_all(&hello).await.map_err(|e| io_error(&format!("cannot reach {address}"), e))?;
    write_frame_async(&mut s, &(partition, me)).await?;
    let body = match tokio::time::timeout(Duration::from_secs(30), read_body_async(&mut s)).await {
        Ok(r) => r.map_err(|e| io_error(&format!("{address} did not answer"), e))?,
        Err(_) => return Err(err!(Unavailable, "{address} did not answer the request for a copy within 30 s")),
    };
    decode::<std::result::Result<(), WireError>>(&body)?.map_err(from_wire_error)
}

/// Answers to forwarded calls, queued for the connection's writer.
struct ForwardedSink(tokio::sync::mpsc::UnboundedSender<(u64, WireResponse)>);

impl ResponseSink for ForwardedSink {
    fn deliver(&self, handle: u64, response: Response) {
        let _ = self.0.send((handle, WireResponse::from(&response)));
    }
}

/// Serve calls another host forwarded here: run each, answer with its id.
async fn serve_forwarded(s: tokio::net::TcpStream, host: Arc<Host>) {
    let (mut rd, mut wr) = s.into_split();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, WireResponse)>();
    let writer = tokio::spawn(async move {
        let mut buf = Vec::with_capacity(64 * 1024);
        while let Some(answer) = rx.recv().await {
            // Everything answered meanwhile goes out in one write.
            buf.clear();
            let mut next = Some(answer);
            while let Some(a) = next.take() {
                if append_frame(&a, &mut buf).is_err() {
                    return;
                }
                if buf.len() < 1 << 20 {
                    next = rx.try_recv().ok();
                }
            }
            if wr.write_all(&buf).await.is_err() {
                break;
            }
        }
    });
    let sink: Arc<dyn ResponseSink> = Arc::new(ForwardedSink(tx));
    let mut client = host.client();
    while let Ok(body) = read_body_async(&mut rd).await {
        let Ok((id, call)) = decode::<(u64, WireCall)>(&body) else { break };
        client.use_database(&call.database);
        client.set_hops(call.hops);
        client.call_async(&call.procedure, call.params, id, sink.clone());
    }
    drop(sink);
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(stream: u64, sequence: u64, copy: bool, from: HostId) -> Batch {
        Batch { partition: 3, stream, sequence, copy, from, records: Vec::new() }
    }

    #[test]
    fn positions_on_a_stream_are_followed_repeats_and_gaps_told_apart() {
        let p = ReplicaProgress::default();
        assert!(matches!(p.arrive(&batch(7, 10, false, 1)), Arrival::Apply), "a new stream is followed from anywhere");
        assert!(matches!(p.arrive(&batch(7, 11, false, 1)), Arrival::Apply));
        assert!(matches!(p.arrive(&batch(7, 11, false, 1)), Arrival::Repeat), "sent again after a broken connection");
        assert!(matches!(p.arrive(&batch(7, 9, false, 1)), Arrival::Repeat));
        assert!(matches!(p.arrive(&batch(7, 13, false, 1)), Arrival::Gap(12)), "batch 12 was lost");
        // A new leader's stream is followed from its own positions.
        assert!(matches!(p.arrive(&batch(8, 500, false, 2)), Arrival::Apply));
        assert!(matches!(p.arrive(&batch(8, 501, false, 2)), Arrival::Apply));
        // A copy's pieces all carry the position it was taken at; the stream goes on after it.
        assert!(matches!(p.arrive(&batch(9, 40, true, 0)), Arrival::Apply));
        assert!(matches!(p.arrive(&batch(9, 40, true, 0)), Arrival::Apply));
        assert!(matches!(p.arrive(&batch(9, 41, false, 0)), Arrival::Apply));
        assert!(
            matches!(p.arrive(&batch(9, 43, false, 0)), Arrival::Gap(42)),
            "the leader stopped sending after the copy"
        );
    }
}
