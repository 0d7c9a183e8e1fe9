//! JouleDB's Rust client: VoltDB's binary client protocol over TCP.
//!
//! [`Client`] is async and pipelined: any number of calls may be in flight
//! on each connection, matched to their answers by client handle, and calls
//! are spread over several connections (one or more per server address).
//! [`BlockingClient`] wraps it with its own runtime for code that is not
//! async. [`SyncConnection`] is one blocking connection for one thread,
//! with no runtime at all: the fastest way to make one call at a time.
//! [`PolledConnections`] serves many such connections, one call
//! outstanding on each, from one thread.
//!
//! ```no_run
//! # async fn demo() -> joule_common::Result<()> {
//! use joule_client::{Client, Options};
//! let client = Client::connect(&["127.0.0.1:21212"], Options::default()).await?;
//! client.execute("CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(10))", vec![]).await?;
//! client.call("T.insert", vec![1.into(), "Ann".into()]).await?;
//! let r = client.execute("SELECT name FROM t WHERE id = ?", vec![1.into()]).await?;
//! let name: String = r.table(0)?.get(0, 0)?;
//! # Ok(()) }
//! ```
//!
//! A call that fails on the server returns the server's error (its JouleDB
//! code, read back from the status string). A lost connection fails the
//! calls in flight on it — `OutcomeUnknown` for those already sent (they may
//! have run; read back before retrying), `Unavailable` for those that had
//! not gone out — and later calls go to the remaining connections (by the
//! [`Balance`] policy) while the lost one is reopened in the background.

mod balance;
mod connection;
mod polled;
mod route;
mod sync;
mod value;

pub use balance::Balance;
pub use polled::PolledConnections;
pub use sync::SyncConnection;
pub use value::FromValue;

use arc_swap::ArcSwap;
use connection::Connection;
use joule_common::{err, Error, ErrorCode, Result, Row, Value};
use joule_wire::{ClientResponse, Param, VoltTable};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Connection settings.
#[derive(Clone, Debug)]
pub struct Options {
    pub user: String,
    pub password: String,
    /// Connections opened to each address.
    pub connections_per_address: usize,
    /// Largest response accepted, in bytes.
    pub max_message_bytes: usize,
    /// How long a call may wait for its answer before failing with
    /// `OutcomeUnknown` (`None`: forever).
    pub call_timeout: Option<std::time::Duration>,
    /// How calls are spread over the connections.
    pub balance: Balance,
    /// Connected to several hosts of a cluster: send single-partition calls
    /// straight to their partition's leader (see `route.rs`).
    pub route_to_leaders: bool,
    /// Learn the cluster's other hosts from the ones given (`@Statistics
    /// CLUSTER`) and connect to them too, following hosts that come up
    /// later. On whenever several addresses are given; set it to learn
    /// from a single one. Not with the `Weighted` policy (its weights name
    /// the addresses given).
    pub discover_hosts: bool,
    /// The service named at login: VoltDB's clients send `database`; a
    /// `joule proxy` picks the virtual host by it.
    pub service: String,
    /// Log in with this hash of the password (and its scheme) instead of
    /// hashing `password`: a proxy passing its clients' logins through.
    pub password_hash: Option<(joule_wire::HashScheme, Vec<u8>)>,
    /// Ping every connection on this schedule and pass over, until it
    /// answers again, one that missed [`MISSES_TO_FAIL`] pings in a row: a
    /// stopped or hung host keeps its connections open, so only pings
    /// tell. `None`: only lost connections are passed over.
    pub health_check: Option<HealthCheck>,
    /// Start when at least one address can be reached; the others are
    /// opened in the background and used once they answer. Otherwise every
    /// address must answer at `connect`.
    pub connect_to_any: bool,
    /// `USE` this database on every connection as it opens (a reopened one
    /// too), so unqualified names resolve there. `None`: the server's
    /// `DEFAULT`. (For [`Client`] and [`BlockingClient`].)
    pub database: Option<String>,
}

/// When [`Options::health_check`] pings and how long an answer may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    pub every: std::time::Duration,
    pub within: std::time::Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            user: String::new(),
            password: String::new(),
            connections_per_address: 1,
            max_message_bytes: joule_wire::frame::DEFAULT_MAX_PAYLOAD,
            call_timeout: Some(std::time::Duration::from_secs(120)),
            balance: Balance::RoundRobin,
            route_to_leaders: true,
            discover_hosts: false,
            service: "database".into(),
            password_hash: None,
            health_check: None,
            connect_to_any: false,
            database: None,
        }
    }
}

/// A successful call's answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    pub app_status: i8,
    pub app_status_string: Option<String>,
    pub tables: Vec<VoltTable>,
}

impl Response {
    /// Result table `i`.
    pub fn table(&self, i: usize) -> Result<Table<'_>> {
        self.tables.get(i).map(Table).ok_or_else(|| err!(InvalidArgument, "the response has no table {i}"))
    }
}

/// A result table with typed accessors.
#[derive(Clone, Copy, Debug)]
pub struct Table<'a>(&'a VoltTable);

impl<'a> Table<'a> {
    pub fn rows(&self) -> &'a [Row] {
        &self.0.rows
    }

    pub fn column_names(&self) -> impl Iterator<Item = &'a str> {
        self.0.columns.iter().map(|(n, _)| n.as_str())
    }

    /// The value at (`row`, `column`) as a Rust type.
    pub fn get<T: FromValue>(&self, row: usize, column: usize) -> Result<T> {
        let v = self
            .0
            .rows
            .get(row)
            .and_then(|r| r.get(column))
            .ok_or_else(|| err!(InvalidArgument, "no value at row {row}, column {column}"))?;
        T::from_value(v)
    }
}

/// The async, pipelined client.
#[derive(Clone)]
pub struct Client {
    /// Connection slots: per address, `connections_per_address` of them.
    /// Only ever appended to (hosts learned), so an index stays valid.
    slots: Arc<ArcSwap<Vec<Arc<Slot>>>>,
    chooser: Arc<balance::Chooser>,
    options: Arc<Options>,
    runtime: tokio::runtime::Handle,
    /// Where single-partition calls go, when known (several hosts).
    topology: Arc<arc_swap::ArcSwapOption<route::Topology>>,
    /// Whether the client follows the topology (routing to leaders): its
    /// connections subscribe to topology notifications, which wake `pushes`.
    follows: bool,
    pushes: Arc<tokio::sync::Notify>,
}

/// Health checks a connection may miss in a row before it is passed over
/// (one late answer on a busy host is not a failure).
pub const MISSES_TO_FAIL: u32 = 2;

/// How long connecting to a host learned from the topology may take.
const LEARN_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

/// How often a routing client reads the cluster's topology again without
/// being told it changed (a notification makes it read at once).
const TOPOLOGY_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// One connection's place: its address and the current connection there,
/// replaced when a lost one is reopened.
struct Slot {
    address: SocketAddr,
    current: ArcSwap<Connection>,
    reconnecting: AtomicBool,
    /// False while its connection fails the health check.
    healthy: AtomicBool,
    /// Health checks missed in a row by the current connection.
    misses: std::sync::atomic::AtomicU32,
    /// Calls sent through this slot, and of them those routed to it as
    /// their partition's leader.
    calls: AtomicU64,
    routed: AtomicU64,
    /// Learned from the topology (not one of the addresses the client was
    /// given).
    learned: bool,
    /// A learned host the cluster no longer names (it was removed): no new
    /// call goes to it, while the calls in flight there finish.
    retired: AtomicBool,
}

impl Slot {
    fn new(address: SocketAddr, connection: Connection, learned: bool) -> Arc<Slot> {
        Arc::new(Slot {
            address,
            current: ArcSwap::from_pointee(connection),
            reconnecting: AtomicBool::new(false),
            healthy: AtomicBool::new(true),
            misses: std::sync::atomic::AtomicU32::new(0),
            calls: AtomicU64::new(0),
            routed: AtomicU64::new(0),
            learned,
            retired: AtomicBool::new(false),
        })
    }

    /// Open, answering its health checks, and a member of the cluster:
    /// calls may go to it.
    fn usable(&self) -> bool {
        self.healthy.load(Ordering::Relaxed) && !self.retired.load(Ordering::Relaxed) && self.current.load().is_open()
    }
}

/// One connection of a [`Client`], as [`Client::backends`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    pub address: SocketAddr,
    /// Connected (a lost connection is being reopened).
    pub open: bool,
    /// Answering its health checks (always, without them).
    pub healthy: bool,
    /// Calls awaiting answers.
    pub outstanding: usize,
    /// Recent round trip in microseconds (0: none measured yet).
    pub latency_us: u64,
    /// Calls sent on it, and of them those sent to it as their partition's
    /// leader.
    pub calls: u64,
    pub routed: u64,
}

/// Ask `connection`'s host for topology notifications (a server that has
/// none refuses; the client then reads the topology on its schedule alone).
async fn subscribe(connection: &Connection) {
    let _ = connection.call("@Subscribe", vec![Param::Value(Value::from("TOPOLOGY"))]).await;
}

/// Waits between attempts to reopen a lost connection: doubling from the
/// first to the last.
const RECONNECT_FIRST: std::time::Duration = std::time::Duration::from_millis(100);
const RECONNECT_LAST: std::time::Duration = std::time::Duration::from_secs(2);

impl Client {
    /// Connect to every address (`host:port`), log in on each connection.
    pub async fn connect(addresses: &[&str], options: Options) -> Result<Client> {
        if addresses.is_empty() || options.connections_per_address == 0 {
            return Err(err!(InvalidArgument, "give at least one address and one connection per address"));
        }
        let chooser = balance::Chooser::new(options.balance.clone(), addresses.len(), options.connections_per_address)
            .map_err(|why| err!(InvalidArgument, "balance: {why}"))?;
        let follows = addresses.len() > 1 || options.discover_hosts;
        let pushes = Arc::new(tokio::sync::Notify::new());
        let mut slots = Vec::new();
        let mut unreachable = None;
        for a in addresses {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host(*a).await.map_err(|e| err!(Unavailable, "cannot resolve {a}: {e}"))?.collect();
            let address = *addrs.first().ok_or_else(|| err!(Unavailable, "{a} resolves to no address"))?;
            for _ in 0..options.connections_per_address {
                // With `connect_to_any`, an address that does not answer
                // soon (a host gone without refusing) is not waited on.
                let open = Connection::open(address, &options, Some(pushes.clone()));
                let opened = if options.connect_to_any {
                    tokio::time::timeout(LEARN_WITHIN, open)
                        .await
                        .unwrap_or_else(|_| Err(err!(Unavailable, "{address} did not answer within {LEARN_WITHIN:?}")))
                } else {
                    open.await
                };
                let connection = match opened {
                    Ok(c) => c,
                    // Reopened in the background once the client runs.
                    Err(e) if options.connect_to_any && e.code() == ErrorCode::Unavailable => {
                        unreachable = Some(e);
                        Connection::closed(&options)
                    }
                    Err(e) => return Err(e),
                };
                if follows && connection.is_open() {
                    subscribe(&connection).await;
                }
                slots.push(Slot::new(address, connection, false));
            }
        }
        if let Some(e) = unreachable.filter(|_| !slots.iter().any(|s| s.current.load().is_open())) {
            return Err(e);
        }
        let client = Client {
            slots: Arc::new(ArcSwap::from_pointee(slots)),
            chooser: Arc::new(chooser),
            options: Arc::new(options),
            runtime: tokio::runtime::Handle::current(),
            topology: Arc::default(),
            follows,
            pushes,
        };
        if follows {
            client.follow_topology().await;
        }
        for slot in client.slots.load().iter().filter(|s| !s.current.load().is_open()) {
            client.reconnect(slot);
        }
        if let Some(check) = client.options.health_check {
            client.check_health(check);
        }
        Ok(client)
    }

    /// A handle on this client for its background tasks that does not keep
    /// it alive: they end once every clone of the client is dropped.
    fn weak(&self) -> WeakClient {
        WeakClient {
            slots: Arc::downgrade(&self.slots),
            chooser: self.chooser.clone(),
            options: self.options.clone(),
            runtime: self.runtime.clone(),
            topology: self.topology.clone(),
            follows: self.follows,
            pushes: self.pushes.clone(),
        }
    }

    /// Ping every open connection each `check.every`; one that misses
    /// [`MISSES_TO_FAIL`] in a row (no answer within `check.within`) is
    /// passed over until it answers again (a lost one is reopened
    /// meanwhile, as always).
    fn check_health(&self, check: HealthCheck) {
        let weak = self.weak();
        self.runtime.spawn(async move {
            loop {
                tokio::time::sleep(check.every).await;
                let Some(client) = weak.upgrade() else { return };
                let mut pings = tokio::task::JoinSet::new();
                for slot in client.slots.load().iter() {
                    let connection = slot.current.load_full();
                    if !connection.is_open() {
                        client.reconnect(slot);
                        continue;
                    }
                    let slot = slot.clone();
                    pings.spawn(async move {
                        let answer = tokio::time::timeout(check.within, connection.call("@Ping", vec![])).await;
                        // A reopened connection starts afresh: this
                        // verdict is on the one it replaced.
                        if !Arc::ptr_eq(&slot.current.load_full(), &connection) {
                            return;
                        }
                        if matches!(answer, Ok(Ok(ref r)) if r.status == 1) {
                            slot.misses.store(0, Ordering::Relaxed);
                            slot.healthy.store(true, Ordering::Relaxed);
                        } else if slot.misses.fetch_add(1, Ordering::Relaxed) + 1 >= MISSES_TO_FAIL {
                            slot.healthy.store(false, Ordering::Relaxed);
                        }
                    });
                }
                drop(client);
                while pings.join_next().await.is_some() {}
            }
        });
    }

    /// Each connection slot's state and counts, in the order of the
    /// addresses given (hosts learned later after them).
    pub fn backends(&self) -> Vec<Backend> {
        self.slots
            .load()
            .iter()
            .map(|s| {
                let c = s.current.load();
                Backend {
                    address: s.address,
                    open: c.is_open(),
                    healthy: s.healthy.load(Ordering::Relaxed),
                    outstanding: c.outstanding(),
                    latency_us: c.latency_us(),
                    calls: s.calls.load(Ordering::Relaxed),
                    routed: s.routed.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    /// Read the topology now, then whenever a host says it changed (and
    /// every [`TOPOLOGY_EVERY`] regardless) in the background until the
    /// client is dropped.
    async fn follow_topology(&self) {
        self.refresh().await;
        let weak = self.weak();
        self.runtime.spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(TOPOLOGY_EVERY) => {}
                    _ = weak.pushes.notified() => {}
                }
                let Some(client) = weak.upgrade() else { return };
                client.refresh().await;
            }
        });
    }

    /// Read the cluster's topology: connect to hosts not known yet (see
    /// [`Options::discover_hosts`]), then note each partition's leader (if
    /// routing to leaders).
    async fn refresh(&self) {
        let Ok((mut topology, up, members)) = route::fetch(self).await else { return };
        // Hosts learned from the topology that the cluster no longer names
        // were removed: calls stop going there (before they shut down).
        if !members.is_empty() {
            for slot in self.slots.load().iter().filter(|s| s.learned) {
                slot.retired.store(!members.contains(&slot.address), Ordering::Relaxed);
            }
        }
        if self.learn_hosts(&up).await {
            // Read again, to route to the new connections too.
            if let Ok((t, _, _)) = route::fetch(self).await {
                topology = t;
            }
        }
        if self.options.route_to_leaders {
            self.topology.store(topology.map(Arc::new));
        }
    }

    /// Each connection slot's address.
    pub(crate) fn slot_addresses(&self) -> Vec<SocketAddr> {
        self.slots.load().iter().map(|s| s.address).collect()
    }

    /// Connect to the hosts in `up` (client addresses of hosts that are up)
    /// the client has no connections to yet; true if it added any. A host
    /// that cannot be reached now is tried again next time.
    async fn learn_hosts(&self, up: &[SocketAddr]) -> bool {
        if matches!(self.options.balance, Balance::Weighted { .. }) {
            return false;
        }
        let known = self.slot_addresses();
        let mut added = Vec::new();
        for address in up.iter().filter(|a| !known.contains(a) && !a.ip().is_unspecified()) {
            // All of an address's connections, or none (tried again at the
            // next read); a host that does not answer soon is not waited on.
            let mut opened = Vec::new();
            for _ in 0..self.options.connections_per_address {
                let open = async {
                    let c = Connection::open(*address, &self.options, Some(self.pushes.clone())).await?;
                    subscribe(&c).await;
                    Ok::<_, Error>(c)
                };
                match tokio::time::timeout(LEARN_WITHIN, open).await {
                    Ok(Ok(connection)) => opened.push(Slot::new(*address, connection, true)),
                    _ => break,
                }
            }
            if opened.len() == self.options.connections_per_address {
                added.extend(opened);
            }
        }
        if added.is_empty() {
            return false;
        }
        self.slots.rcu(|slots| {
            let mut slots = (**slots).clone();
            slots.extend(added.iter().cloned());
            slots
        });
        true
    }

    /// The open connection to the leader of the call's partition, if the
    /// call can be routed; else the one the balancing policy picks.
    fn pick_for(&self, procedure: &str, params: &[Param]) -> Result<Arc<Slot>> {
        if let Some(t) = self.topology.load().as_ref() {
            if let Some(i) = t.slot_for(procedure, params) {
                if let Some(slot) = self.slots.load().get(i).filter(|s| s.usable()) {
                    slot.routed.fetch_add(1, Ordering::Relaxed);
                    slot.calls.fetch_add(1, Ordering::Relaxed);
                    return Ok(slot.clone());
                }
            }
        }
        self.pick()
    }

    /// Invoke on the first usable connection, outside the balancing policy
    /// and its counts (the topology's own reads).
    pub(crate) async fn call_unrouted(&self, procedure: &str, params: Vec<Value>) -> Result<Response> {
        let slot = self.slots.load().iter().find(|s| s.usable()).cloned();
        let slot = slot.ok_or_else(|| err!(Unavailable, "every connection to the server is closed or failing"))?;
        let connection = slot.current.load_full();
        into_response(connection.call(procedure, params.into_iter().map(Param::Value).collect()).await?)
    }

    /// Invoke a procedure; the server's error if it failed.
    pub async fn call(&self, procedure: &str, params: Vec<Value>) -> Result<Response> {
        let raw = self.call_raw(procedure, params.into_iter().map(Param::Value).collect()).await?;
        into_response(raw)
    }

    /// `@AdHoc`: run SQL with `?`s bound to `params` in order.
    pub async fn execute(&self, sql: &str, params: Vec<Value>) -> Result<Response> {
        let mut all = Vec::with_capacity(params.len() + 1);
        all.push(Value::String(sql.to_string()));
        all.extend(params);
        self.call("@AdHoc", all).await
    }

    /// The slot of the open connection the balancing policy picks (lost
    /// ones start reconnecting in the background as they are passed over).
    fn pick(&self) -> Result<Arc<Slot>> {
        let slots = self.slots.load();
        let open = |i: usize| {
            if slots[i].retired.load(Ordering::Relaxed) {
                return false;
            }
            let is_open = slots[i].current.load().is_open();
            if !is_open {
                self.reconnect(&slots[i]);
            }
            is_open && slots[i].healthy.load(Ordering::Relaxed)
        };
        let outstanding = |i: usize| slots[i].current.load().outstanding();
        let latency_us = |i: usize| slots[i].current.load().latency_us();
        match self.chooser.pick(slots.len(), open, outstanding, latency_us) {
            Some(i) => {
                slots[i].calls.fetch_add(1, Ordering::Relaxed);
                Ok(slots[i].clone())
            }
            None => Err(err!(Unavailable, "every connection to the server is closed or failing its health check")),
        }
    }

    /// Reopen `slot`'s connection in the background, once at a time,
    /// with growing waits, until it succeeds or the client is dropped.
    fn reconnect(&self, slot: &Arc<Slot>) {
        if slot.reconnecting.swap(true, Ordering::SeqCst) {
            return;
        }
        let (slot, alive, options) = (Arc::downgrade(slot), Arc::downgrade(&self.slots), self.options.clone());
        let (follows, pushes) = (self.follows, self.pushes.clone());
        self.runtime.spawn(async move {
            let mut wait = RECONNECT_FIRST;
            loop {
                tokio::time::sleep(wait).await;
                let (Some(slot), Some(_client)) = (slot.upgrade(), alive.upgrade()) else { return };
                if let Ok(c) = Connection::open(slot.address, &options, Some(pushes.clone())).await {
                    if follows {
                        subscribe(&c).await;
                        // It was away: what it missed is read now.
                        pushes.notify_one();
                    }
                    slot.current.store(Arc::new(c));
                    slot.misses.store(0, Ordering::Relaxed);
                    slot.healthy.store(true, Ordering::Relaxed);
                    slot.reconnecting.store(false, Ordering::SeqCst);
                    return;
                }
                wait = (wait * 2).min(RECONNECT_LAST);
            }
        });
    }

    /// Invoke and return the response as it came (any status). A call
    /// whose connection was lost before it was written is sent again on
    /// another (it cannot have run); one that was written is never sent
    /// twice — its loss is `OutcomeUnknown`.
    pub async fn call_raw(&self, procedure: &str, params: Vec<Param>) -> Result<ClientResponse> {
        // Owned across the await (a load guard is for short borrows).
        let connection = self.pick_for(procedure, &params)?.current.load_full();
        let invocation = connection::Encoded::new(procedure, params)?;
        let mut answer = connection.call_encoded(&invocation).await;
        for _ in 1..self.slots.load().len() {
            match &answer {
                Err(e) if e.code() == ErrorCode::Unavailable => {
                    answer = self.pick()?.current.load_full().call_encoded(&invocation).await;
                }
                _ => break,
            }
        }
        answer
    }

    /// Invoke without waiting: `callback` runs with the answer on the
    /// client's I/O task, so it must be quick and must not block (it may
    /// make further calls). No task is woken per call, which makes this the
    /// cheapest way to keep many calls in flight. An `Err` here means
    /// nothing was sent (and the callback will not run). If the connection
    /// is lost, the callback gets `Unavailable` for a call that had not
    /// gone out yet (it never ran) and `OutcomeUnknown` for one that had.
    pub fn call_with(
        &self,
        procedure: &str,
        params: Vec<Value>,
        callback: impl FnOnce(Result<Response>) + Send + 'static,
    ) -> Result<()> {
        let params: Vec<Param> = params.into_iter().map(Param::Value).collect();
        let reply = connection::Reply::Callback(Box::new(move |r| callback(r.and_then(into_response))));
        self.pick_for(procedure, &params)?.current.load().send(procedure, params, reply)
    }

    /// Send an invocation (its version and batch timeout as given, its
    /// handle replaced) as [`call`](Client::call) would (routed to its
    /// partition's leader, or by the balancing policy) and hand `reply`
    /// the answer's payload as it came, not decoded — its client handle
    /// is the connection's own, for the caller to replace. `reply` runs
    /// exactly once, on the client's I/O task (quick, never blocking):
    /// with `Unavailable` if no connection could take the call (it never
    /// ran), `OutcomeUnknown` if its connection was lost after it went out.
    /// A call whose connection was lost before it went out is sent on
    /// another, once per connection at most.
    pub fn forward(&self, invocation: joule_wire::Invocation, reply: impl FnOnce(Result<Vec<u8>>) + Send + 'static) {
        let reply: RawReply = Box::new(reply);
        let slot = match self.pick_for(&invocation.procedure, &invocation.params) {
            Ok(slot) => slot,
            Err(e) => return reply(Err(e)),
        };
        match connection::Encoded::of(invocation) {
            Ok(invocation) => self.forward_on(slot, Arc::new(invocation), self.slots.load().len(), reply),
            Err(e) => reply(Err(e)),
        }
    }

    /// Send `invocation` on `slot`; if it cannot go out there, on the next
    /// pick, up to `tries` connections in all.
    fn forward_on(&self, slot: Arc<Slot>, invocation: Arc<connection::Encoded>, tries: usize, reply: RawReply) {
        let again = (tries > 1).then(|| (self.clone(), invocation.clone()));
        let retrying = move |answer: Result<Vec<u8>>| match (answer, again) {
            (Err(e), Some((client, invocation))) if e.code() == ErrorCode::Unavailable => match client.pick() {
                Ok(next) => client.forward_on(next, invocation, tries - 1, reply),
                Err(_) => reply(Err(e)),
            },
            (answer, _) => reply(answer),
        };
        let connection = slot.current.load();
        if let Err((e, lost)) = connection.send_encoded(&invocation, connection::Reply::Raw(Box::new(retrying))) {
            lost.complete(Err(e));
        }
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.slots.load().iter().filter(|s| s.current.load().is_open()).count()
    }
}

/// What [`Client::forward`] hands an answer's payload to.
type RawReply = Box<dyn FnOnce(Result<Vec<u8>>) + Send>;

/// The background tasks' handle on a [`Client`] (see [`Client::weak`]).
struct WeakClient {
    slots: std::sync::Weak<ArcSwap<Vec<Arc<Slot>>>>,
    chooser: Arc<balance::Chooser>,
    options: Arc<Options>,
    runtime: tokio::runtime::Handle,
    topology: Arc<arc_swap::ArcSwapOption<route::Topology>>,
    follows: bool,
    pushes: Arc<tokio::sync::Notify>,
}

impl WeakClient {
    /// The client, if anyone still holds it.
    fn upgrade(&self) -> Option<Client> {
        Some(Client {
            slots: self.slots.upgrade()?,
            chooser: self.chooser.clone(),
            options: self.options.clone(),
            runtime: self.runtime.clone(),
            topology: self.topology.clone(),
            follows: self.follows,
            pushes: self.pushes.clone(),
        })
    }
}

/// The login a connection sends: version 1, SHA-256 of the password
/// (or the hash given in the options, with its scheme).
fn login_message(options: &Options) -> joule_wire::Login {
    use sha2::Digest;
    let (scheme, password_hash) = match &options.password_hash {
        Some((scheme, hash)) => (*scheme, hash.clone()),
        None => (joule_wire::HashScheme::Sha256, sha2::Sha256::digest(options.password.as_bytes()).to_vec()),
    };
    joule_wire::Login {
        version: 1,
        scheme,
        service: options.service.clone(),
        user: options.user.clone(),
        password_hash,
    }
}

/// The encoded invocation of `procedure` with plain values, under `handle`.
fn encode_call(procedure: &str, handle: i64, params: Vec<Value>) -> Result<Vec<u8>> {
    joule_wire::Invocation {
        version: 0,
        procedure: procedure.to_string(),
        client_handle: handle,
        batch_timeout_ms: None,
        params: params.into_iter().map(Param::Value).collect(),
    }
    .encode()
}

fn into_response(r: ClientResponse) -> Result<Response> {
    if r.status == 1 {
        return Ok(Response { app_status: r.app_status, app_status_string: r.app_status_string, tables: r.tables });
    }
    let fallback = match r.status {
        -5 => ErrorCode::Unavailable,
        -7 => ErrorCode::OutcomeUnknown,
        -1 => ErrorCode::ProcedureAborted,
        -3 => ErrorCode::Internal,
        _ => ErrorCode::InvalidArgument,
    };
    let text = r.status_string.unwrap_or_else(|| format!("the call failed with status {}", r.status));
    Err(Error::parse(&text, fallback))
}

/// A client for code that is not async: each call blocks until answered.
pub struct BlockingClient {
    runtime: tokio::runtime::Runtime,
    client: Client,
}

impl BlockingClient {
    pub fn connect(addresses: &[&str], options: Options) -> Result<BlockingClient> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| err!(Unavailable, "cannot start the client runtime: {e}"))?;
        let client = runtime.block_on(Client::connect(addresses, options))?;
        Ok(BlockingClient { runtime, client })
    }

    pub fn call(&self, procedure: &str, params: Vec<Value>) -> Result<Response> {
        self.runtime.block_on(self.client.call(procedure, params))
    }

    pub fn execute(&self, sql: &str, params: Vec<Value>) -> Result<Response> {
        self.runtime.block_on(self.client.execute(sql, params))
    }

    /// The async client underneath (to pipeline from a runtime of your own).
    pub fn client(&self) -> &Client {
        &self.client
    }
}
