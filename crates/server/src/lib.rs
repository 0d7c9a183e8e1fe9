//! JouleDB's network server: VoltDB's binary client protocol on the client
//! port (21212) and the admin port (21211), and its HTTP/JSON API on the
//! HTTP port (8080; see `http.rs`), in front of a transaction-layer
//! [`Host`].
//!
//! [`Server::start`] binds the ports (port 0 picks a free one; the bound
//! addresses are reported), opens the data directory, starts the host with
//! the configured number of sites, recovers what the directory holds
//! (replaying the command log), attaches the command log, loads a schema
//! file at the first start, and serves each connection
//! on a tokio task (see [`connection`]). [`Server::wait`] returns when a
//! shutdown is requested — by `@Shutdown` from an administrator, by
//! [`Server::shutdown`], or by the process's signal handling in the `joule`
//! command — after the listeners stopped, the client connections drained
//! (each refuses new calls and closes once the calls it took are answered,
//! for [`DRAIN_PATIENCE`] at most) and the host finished its queued work.

mod advisor;
pub mod autoscale;
mod changes;
pub mod cluster;
pub mod config;
mod connection;
pub mod convert;
mod copies;
mod dataplane;
mod durable;
mod elastic;
mod http;
mod metrics;
pub mod rebalance;
mod stats;
mod topology;

use joule_common::{err, Error, ErrorCode, Result};
use joule_durability::manager::Snapshots;
use joule_durability::node::{AttachableLog, DataDir};
use joule_durability::recovery::recover_node;
pub use joule_durability::recovery::RecoveryReport;
use joule_durability::{CommandLogWriter, LogConfig, LogMode};
use joule_txn::{ClusterPlacement, Host, HostConfig, ProcedureRegistry};
use joule_wire::messages::login_result;
use joule_wire::LoginResponse;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How long a stopping server waits for its client connections' calls to
/// be answered before it stops the host: a call taken is answered, not
/// cut off with its connection (see `connection.rs`).
pub const DRAIN_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// A configured user.
#[derive(Clone, Debug, PartialEq)]
pub struct User {
    pub name: String,
    pub password: String,
    pub roles: Vec<String>,
}

/// How to run a server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Interface to listen on.
    pub host: String,
    pub client_port: u16,
    pub admin_port: u16,
    /// The HTTP/JSON API.
    pub http_port: u16,
    /// Sites (partitions) on this host.
    pub sites: usize,
    /// Data directory (created if missing).
    pub dir: PathBuf,
    /// DDL to load at start.
    pub schema: Option<PathBuf>,
    /// Largest message accepted, in bytes.
    pub max_message_bytes: usize,
    /// Unanswered requests a connection may have before it is told the
    /// server is unavailable.
    pub max_outstanding_per_connection: usize,
    /// Unanswered requests over all connections, past which new ones are
    /// told the server is unavailable.
    pub max_queued_requests: usize,
    /// With users, logins must match one; without, anyone may log in.
    pub users: Vec<User>,
    /// The command log's mode; `None`: off (nothing is logged).
    pub command_log: Option<LogMode>,
    /// A command-log segment is closed past this size.
    pub log_segment_bytes: u64,
    /// Automatic snapshots: how often (`None`: never).
    pub snapshot_every: Option<std::time::Duration>,
    /// How many snapshots in the data directory stay usable for recovery.
    pub snapshot_retain: usize,
    /// Threads serving connections (the I/O runtime `joule start` builds).
    pub network_threads: usize,
    /// Let the kernel use transparent huge pages for the node's memory
    /// (`joule start` turns them off unless this is set).
    pub transparent_huge_pages: bool,
    /// The cluster this node forms or joins (default: a one-host cluster).
    pub cluster: cluster::ClusterConfig,
    /// How fast `@Rebalance` moves ranges (see `rebalance.rs`).
    pub elastic: rebalance::ElasticConfig,
    /// The auto-scaler's policy and provider (see `autoscale/`).
    pub autoscale: autoscale::AutoscaleConfig,
}

/// A quarter of the cores, at least one: the sites do the work, and on a
/// small machine every extra network thread competes with them (on 2 cores,
/// one network thread served 10–15 % more calls than two, pipelined or
/// synchronous; docs/performance.md).
pub fn default_network_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 4).max(1))
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "0.0.0.0".to_string(),
            client_port: 21212,
            admin_port: 21211,
            http_port: 8080,
            sites: std::thread::available_parallelism().map_or(1, |n| n.get()),
            dir: PathBuf::from("joule-data"),
            schema: None,
            max_message_bytes: joule_wire::frame::DEFAULT_MAX_PAYLOAD,
            max_outstanding_per_connection: 10_000,
            max_queued_requests: 100_000,
            users: Vec::new(),
            command_log: Some(LogMode::Async { frequency: std::time::Duration::from_millis(200) }),
            log_segment_bytes: 64 << 20,
            snapshot_every: Some(std::time::Duration::from_secs(1800)),
            snapshot_retain: 2,
            network_threads: default_network_threads(),
            transparent_huge_pages: false,
            cluster: cluster::ClusterConfig::default(),
            elastic: rebalance::ElasticConfig::default(),
            autoscale: autoscale::AutoscaleConfig::default(),
        }
    }
}

/// Open connections by id: their statistics and (while open) their sink.
pub(crate) type ConnectionRegistry =
    std::collections::BTreeMap<i64, (Arc<connection::ConnectionStats>, std::sync::Weak<connection::ConnectionSink>)>;

/// What every connection shares.
pub(crate) struct ServerContext {
    pub config: ServerConfig,
    pub host: Arc<Host>,
    pub shutdown: Arc<watch::Sender<bool>>,
    /// Why the node stopped on its own (a failed command log).
    pub failure: Arc<std::sync::Mutex<Option<Error>>>,
    pub log: Arc<AttachableLog>,
    pub snapshots: Arc<Snapshots>,
    pub data: DataDir,
    /// Open connections' figures (locked only to add, remove or read them).
    pub connections: std::sync::Mutex<ConnectionRegistry>,
    /// What `@Statistics` remembers between calls (deltas, CPU time).
    pub stats_memory: std::sync::Mutex<stats::Memory>,
    /// Serializes `@Statistics` calls (see `stats.rs`).
    pub stats_serial: std::sync::Mutex<()>,
    /// System procedures running on threads of their own now.
    pub sysproc_threads: std::sync::atomic::AtomicUsize,
    /// Bytes read from and written to connections that have closed (open
    /// ones count their own), so that the totals only grow.
    pub closed_bytes: [AtomicU64; 2],
    /// The event log the console shows: (Unix ms, what happened).
    pub events: std::sync::Mutex<std::collections::VecDeque<(i64, String)>>,
    pub next_connection: AtomicU64,
    pub started_millis: i64,
    pub started: std::time::Instant,
    /// Requests handed to the host and not yet answered, all connections.
    pub queued: Arc<std::sync::atomic::AtomicUsize>,
    /// `@Pause`d: only the admin port takes work.
    pub paused: std::sync::atomic::AtomicBool,
    /// Out of touch with the cluster's metadata group (see
    /// `cluster::watch_contact`): calls are refused as unavailable.
    pub cut_off: std::sync::atomic::AtomicBool,
    /// The cluster as this node takes part in it.
    pub membership: cluster::Membership,
    /// In a multi-host cluster: the data plane to the other hosts.
    pub link: Option<Arc<dataplane::Link>>,
    /// False while a restarted host waits to recover its copies from its
    /// copy logs: it follows the metadata but takes no leadership yet.
    pub copies_ready: watch::Sender<bool>,
    /// This host's id and name, as statistics report them.
    pub host_id: u64,
    pub host_name: String,
    /// `@Rebalance`'s job (see `rebalance.rs`).
    pub rebalance: rebalance::Rebalancer,
    /// A join transaction for partitions added with new hosts is under way
    /// here (see `elastic.rs`).
    pub joining: std::sync::atomic::AtomicBool,
    /// Partitions of hosts being removed are drained here (see
    /// `elastic.rs`).
    pub removing: std::sync::atomic::AtomicBool,
    /// Copies of partitions being added to this host (see `copies.rs`).
    pub copying: copies::Copying,
    /// Set while this host hands the partitions it leads over (it leaves
    /// the cluster; see `copies::hand_over_if_leaving`).
    pub handing_over: std::sync::atomic::AtomicBool,
    /// What the auto-scaler last saw and decided (see `autoscale/`).
    pub autoscaler: autoscale::Autoscaler,
}

impl ServerContext {
    pub fn request_shutdown(&self) {
        self.event("shutdown requested");
        let _ = self.shutdown.send(true);
    }

    /// Note an event for the console's log (the newest 200 are kept).
    pub fn event(&self, text: impl Into<String>) {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if events.len() == 200 {
            events.pop_front();
        }
        events.push_back((now, text.into()));
    }

    pub fn login_response(&self, connection_id: i64) -> LoginResponse {
        LoginResponse {
            version: 0,
            result: login_result::SUCCESS,
            host_id: 0,
            connection_id,
            cluster_start_millis: self.started_millis,
            leader_ipv4: 0x7f00_0001,
            build: format!("JouleDB {}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// A running server.
pub struct Server {
    ctx: Arc<ServerContext>,
    pub client_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// Where other hosts reach this one (multi-host clusters only).
    pub internal_addr: Option<String>,
    /// This host's id in its cluster.
    pub host_id: u64,
    pub recovery: RecoveryReport,
}

impl Server {
    /// Bind, start the host, load the schema, and start serving.
    pub async fn start(mut config: ServerConfig, registry: ProcedureRegistry) -> Result<Server> {
        config.cluster.validate()?;
        // A multi-host cluster logs each copy's replication stream instead
        // of a command log (`dataplane/copylog.rs`), in the command log's
        // mode; snapshots of a cluster are not built.
        let copy_logs = match (config.cluster.is_multi_host(), config.command_log) {
            (true, Some(LogMode::Sync)) => Some(dataplane::SyncMode::EveryBatch),
            (true, Some(LogMode::Async { frequency })) => Some(dataplane::SyncMode::Every(frequency)),
            _ => None,
        };
        if config.cluster.is_multi_host() {
            if config.snapshot_every.is_some() {
                eprintln!(
                    "joule: cluster: automatic snapshots are off on a multi-host cluster (not built for clusters yet)"
                );
            }
            config.command_log = None;
            config.snapshot_every = None;
        }
        let data = DataDir::new(&config.dir);
        let partitions = u32::try_from(config.sites).map_err(|_| err!(InvalidArgument, "too many sites"))?;
        let first_start = data.open(partitions)?;
        // A host that never became a member of its cluster (its first
        // `--join` or `--add` was refused) starts afresh though its data
        // directory exists: only a host the cluster knows by an id holds
        // copies to recover.
        let first_start = first_start
            || (config.cluster.is_multi_host()
                && joule_cluster::formation::stored_identity(&config.dir.join("cluster"))?.is_none());
        let bind = |port: u16| {
            let host = config.host.clone();
            async move {
                TcpListener::bind((host.as_str(), port))
                    .await
                    .map_err(|e| err!(Unavailable, "cannot listen on {host}:{port}: {e}"))
            }
        };
        let client = bind(config.client_port).await?;
        let admin = bind(config.admin_port).await?;
        let http = bind(config.http_port).await?;
        let client_addr = client.local_addr().map_err(|e| err!(Unavailable, "{e}"))?;
        let copies_dir = config.dir.join("copies");
        let logs = match copy_logs {
            Some(mode) => Some(dataplane::CopyLogs::open(&copies_dir, mode, config.log_segment_bytes)?),
            None => None,
        };
        let logged = if logs.is_some() { dataplane::CopyLogs::replayable(&copies_dir) } else { Default::default() };
        let membership = if config.cluster.is_multi_host() {
            let dir = config.dir.join("cluster");
            cluster::Membership::Member(
                cluster::join(&config.cluster, &config.host, config.sites, client_addr.port(), dir, logged).await?,
            )
        } else {
            cluster::Membership::alone(config.sites, client_addr.to_string())?
        };
        let log = Arc::new(AttachableLog::new());
        let mut link = None;
        // Restarted and recovering from its copy logs (or already resumed:
        // it was the last host of a whole-cluster restart to recover).
        let recovering = match &membership {
            cluster::Membership::Member(node) => {
                let (m, me) = (node.metadata(), node.id());
                !first_start && (m.is_recovering(me) || m.is_up(me))
            }
            cluster::Membership::Alone(_) => false,
        };
        let (host, recovery) = match &membership {
            cluster::Membership::Member(node) => {
                let m = node.metadata();
                let me = node.id();
                let routes = joule_cluster::Routes::by_address(config.cluster.routes.clone());
                // A recovering host starts leading nothing: it takes its
                // leaderships (repairing first) once its copies are replayed.
                let mut start_from = m.clone();
                if recovering {
                    for p in &mut start_from.partitions {
                        p.leader = p.leader.filter(|l| *l != me);
                    }
                    start_from.mp_coordinator = start_from.mp_coordinator.filter(|c| *c != me);
                }
                if first_start {
                    if let Some(logs) = &logs {
                        for p in
                            (0..m.partitions.len() as u32).filter(|p| m.partitions[*p as usize].replicas.contains(&me))
                        {
                            logs.fresh(p, true)?;
                        }
                    }
                }
                let l = dataplane::Link::new(
                    me,
                    &start_from,
                    routes,
                    tokio::runtime::Handle::current(),
                    logs.clone(),
                    recovering,
                );
                let replicas = (0..m.partitions.len() as u32)
                    .filter(|p| m.partitions[*p as usize].replicas.contains(&me))
                    .collect();
                let placement = ClusterPlacement {
                    partitions: m.partitions.len() as u32,
                    active: m.active_partitions() as u32,
                    replicas,
                    link: l.clone(),
                };
                let host = Host::start(HostConfig {
                    sites_per_host: config.sites,
                    registry,
                    command_log: None,
                    resume_after: None,
                    cluster: Some(placement),
                })?;
                // Routed by the metadata's ring from the start.
                host.install_ring(m.ring.as_ref());
                l.attach_metadata(node.handle());
                link = Some(l);
                (host, RecoveryReport { first_start, ..Default::default() })
            }
            cluster::Membership::Alone(_) => recover_node(&data, partitions, first_start, |resume_after| {
                Host::start(HostConfig {
                    sites_per_host: config.sites,
                    registry,
                    command_log: Some(log.clone()),
                    resume_after,
                    cluster: None,
                })
            })?,
        };
        let host = Arc::new(host);
        let snapshots = Snapshots::new(data.snapshot_dir(), log.clone(), config.snapshot_retain);
        let (shutdown, _) = watch::channel(false);
        let shutdown = Arc::new(shutdown);
        let failure: Arc<std::sync::Mutex<Option<Error>>> = Arc::default();
        if let Some(mode) = config.command_log {
            let (stop, failed) = (shutdown.clone(), failure.clone());
            let on_failure = Box::new(move |e: &Error| {
                *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
                let _ = stop.send(true);
            });
            let log_config = LogConfig {
                dir: data.log_dir(),
                mode,
                segment_bytes: config.log_segment_bytes,
                partitions,
                first_segment: data.next_segment()?,
            };
            log.attach(Arc::new(CommandLogWriter::start(log_config, on_failure)?))?;
        }
        // In a cluster the host that formed it loads the schema, once.
        let loads_schema = first_start && membership.host_id() == 0;
        let started_millis =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let ctx = Arc::new(ServerContext {
            config,
            host,
            shutdown,
            failure,
            log,
            snapshots,
            data,
            connections: Default::default(),
            stats_memory: Default::default(),
            events: Default::default(),
            sysproc_threads: Default::default(),
            stats_serial: Default::default(),
            closed_bytes: Default::default(),
            next_connection: AtomicU64::new(1),
            started_millis,
            started: std::time::Instant::now(),
            queued: Arc::default(),
            paused: Default::default(),
            cut_off: Default::default(),
            link,
            copies_ready: watch::channel(!recovering).0,
            host_id: membership.host_id(),
            host_name: membership.host_name(),
            rebalance: rebalance::Rebalancer::default(),
            joining: Default::default(),
            copying: Default::default(),
            handing_over: Default::default(),
            removing: Default::default(),
            autoscaler: Default::default(),
            membership,
        });
        let admin_addr = admin.local_addr().map_err(|e| err!(Unavailable, "{e}"))?;
        let http_addr = http.local_addr().map_err(|e| err!(Unavailable, "{e}"))?;
        ctx.event(format!("node started: {recovery}"));
        let (internal_addr, host_id) = match &ctx.membership {
            cluster::Membership::Member(node) => {
                let m = node.metadata();
                ctx.event(format!(
                    "host {} of a {}-host cluster (k-factor {}, {} partitions); metadata group led by {}",
                    node.id(),
                    m.hosts.len(),
                    m.kfactor,
                    m.partitions.len(),
                    node.leader().map_or("no host yet".to_string(), |l| format!("host {l}"))
                ));
                let recorded = m.hosts.get(&node.id()).map(|h| h.internal_address.clone());
                (Some(recorded.unwrap_or_else(|| node.address().to_string())), node.id())
            }
            cluster::Membership::Alone(_) => (None, 0),
        };
        tokio::spawn(cluster::follow(ctx.clone()));
        tokio::spawn(cluster::watch_contact(ctx.clone()));
        match (&ctx.membership, ctx.config.autoscale.enabled) {
            (cluster::Membership::Member(_), true) => drop(tokio::spawn(autoscale::run(ctx.clone()))),
            (cluster::Membership::Alone(_), true) => {
                ctx.event("autoscaler: off: a single node cannot add hosts (start it with --elastic to scale it)")
            }
            _ => {}
        }
        if let cluster::Membership::Member(node) = &ctx.membership {
            if recovering || !node.metadata().is_up(node.id()) {
                // Restarted: its copies come from the leaders (`rejoin`).
                ctx.host.expect_copies();
            }
            if let (Some(connections), Some(link)) = (node.data_connections(), ctx.link.clone()) {
                let diverged = on_divergence(&ctx);
                tokio::spawn(dataplane::serve(connections, ctx.host.clone(), link, diverged));
            }
        }
        cluster::rejoin(&ctx).await?;
        // Last: in a cluster, loading the schema needs the other hosts, and
        // them to reach this one's data plane (started above).
        match (ctx.config.schema.clone(), loads_schema) {
            (Some(path), true) => {
                let ddl = std::fs::read_to_string(&path)
                    .map_err(|e| err!(InvalidArgument, "cannot read schema file {}: {e}", path.display()))?;
                let host = ctx.host.clone();
                let r = tokio::task::spawn_blocking(move || host.client().adhoc(&ddl, vec![]))
                    .await
                    .map_err(|e| err!(Internal, "loading the schema failed: {e}"))?;
                if let Some(e) = r.error {
                    ctx.request_shutdown();
                    return Err(e.context(format!("schema file {}", path.display())));
                }
            }
            (Some(path), false) => eprintln!(
                "joule: schema file {} not loaded: {} already holds a database",
                path.display(),
                ctx.config.dir.display()
            ),
            (None, _) => {}
        }
        tokio::spawn(accept(client, ctx.clone(), false));
        tokio::spawn(accept(admin, ctx.clone(), true));
        tokio::spawn(http::serve(http, ctx.clone()));
        if let Some(every) = ctx.config.snapshot_every {
            tokio::spawn(durable::automatic_snapshots(ctx.clone(), every));
        }
        Ok(Server { ctx, client_addr, admin_addr, http_addr, internal_addr, host_id, recovery })
    }

    /// The command log's mode (`None`: off).
    pub fn command_log_mode(&self) -> Option<LogMode> {
        self.ctx.config.command_log
    }

    /// Ask the server to stop.
    pub fn shutdown(&self) {
        self.ctx.request_shutdown();
    }

    /// A function that asks the server to stop, for signal handlers.
    pub fn shutdown_handle(&self) -> impl Fn() + Send + Sync + 'static {
        let ctx = self.ctx.clone();
        move || ctx.request_shutdown()
    }

    /// Wait until a shutdown is requested, then let the client connections
    /// drain (for [`DRAIN_PATIENCE`] at most), then stop the host and the
    /// command log (which writes and syncs what is queued). Returns the
    /// failure that stopped the node on its own, if one did.
    pub async fn wait(self) -> Option<Error> {
        let mut rx = self.ctx.shutdown.subscribe();
        while !*rx.borrow() {
            if rx.changed().await.is_err() {
                break;
            }
        }
        // The connections refuse new calls from now on and close once the
        // calls they took are answered (forwarded ones included), and calls
        // other hosts forwarded here are answered too: give them that
        // time, while the host still runs.
        let deadline = tokio::time::Instant::now() + DRAIN_PATIENCE;
        let forwarded = || self.ctx.link.as_ref().map_or(0, |l| l.unanswered_forwarded());
        while !self.ctx.connections.lock().unwrap_or_else(|e| e.into_inner()).is_empty() || forwarded() > 0 {
            if tokio::time::Instant::now() >= deadline {
                let open: Vec<usize> = (self.ctx.connections.lock().unwrap_or_else(|e| e.into_inner()).values())
                    .filter_map(|(_, sink)| sink.upgrade().map(|s| s.unanswered()))
                    .collect();
                eprintln!(
                    "joule: {} connections still had {} calls unanswered, and {} calls forwarded here, after {} s: \
                     stopping anyway (those calls may or may not have run)",
                    open.len(),
                    open.iter().sum::<usize>(),
                    forwarded(),
                    DRAIN_PATIENCE.as_secs()
                );
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let ctx = self.ctx.clone();
        let member = self.ctx.membership.is_multi_host();
        if let cluster::Membership::Member(node) = &self.ctx.membership {
            node.stop_serving().await;
        }
        let stopped = tokio::task::spawn_blocking(move || {
            ctx.host.shutdown();
            if let Some(w) = ctx.log.writer() {
                w.stop();
            }
        });
        if member {
            // A cluster's host may have work waiting on hosts that are gone:
            // it does not wait for it forever (nothing here is durable
            // that its replicas do not hold).
            if tokio::time::timeout(std::time::Duration::from_secs(5), stopped).await.is_err() {
                eprintln!("joule: cluster: work waiting on other hosts did not finish within 5 s; stopping anyway");
            }
        } else {
            let _ = stopped.await;
        }
        let failure = self.ctx.failure.lock().unwrap_or_else(|p| p.into_inner()).clone();
        failure
    }
}

async fn accept(listener: TcpListener, ctx: Arc<ServerContext>, admin: bool) {
    let mut shutdown = ctx.shutdown.subscribe();
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    tokio::spawn(connection::serve(stream, ctx.clone(), admin));
                }
                Err(e) => eprintln!("joule: accept failed: {e}"),
            },
            _ = shutdown.changed() => break,
        }
    }
}

/// What a host does when one of its copies no longer follows its leader
/// (or it cannot repair a partition it now leads, or write its copy log):
/// it stops, to rejoin afresh when started again.
pub(crate) fn on_divergence(ctx: &Arc<ServerContext>) -> dataplane::OnDivergence {
    let weak = Arc::downgrade(ctx);
    Arc::new(move |e: Error| {
        let Some(ctx) = weak.upgrade() else { return };
        let e = if e.code() == ErrorCode::IoError {
            // Keeps its code: the disk, not the copy, is what failed.
            Error::new(
                ErrorCode::IoError,
                format!(
                    "{}; this host stops (the other copies keep the data): start it again once the disk is fixed, \
                     to rejoin",
                    e.message()
                ),
            )
        } else {
            err!(Unavailable, "{e}: this host's copy no longer follows its leader; start it again to rejoin")
        };
        eprintln!("joule: cluster: {e}");
        *ctx.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
        ctx.request_shutdown();
    })
}
