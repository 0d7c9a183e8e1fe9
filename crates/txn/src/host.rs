//! A host: its sites, the multi-partition coordinator, and the initiator
//! side that clients call through.
//!
//! [`Host::start`] spawns one thread per site (`sites_per_host`, default the
//! number of cores) and the coordinator thread. A [`Client`] is the
//! initiator's entry point: it resolves a procedure name in the published
//! [`Schema`], and routes the invocation — single-partition procedures to
//! the site owning their partition key (hashed with the published
//! [`Hashinator`]), everything else to the coordinator. The schema and the
//! hashinator are published through `ArcSwap`s: reading them costs no lock,
//! and a schema change or a new hashinator replaces them atomically.
//!
//! `@AdHoc` is handled here too: the SQL is planned (plans are cached per
//! client by text and schema version); a batch whose statements all pin the
//! same partition, or only read replicated tables, runs single-partition;
//! anything else runs as one multi-partition transaction; DDL goes to the
//! coordinator, which plans and applies it everywhere at once.

use crate::compile::{compile_statement, CompiledProcedure, CompiledStatement, ProcedureCode, Schema};
use crate::coordinator::Coordinator;
use crate::hashinator::Hashinator;
use crate::ids::TxnIds;
use crate::logging::CommandLog;
use crate::messages::{CoordMsg, MpKind, MpTask, MpWork, SiteMsg, SpTask};
use crate::procedure::ProcedureRegistry;
use crate::remote::ClusterLink;
use crate::response::{Response, ResponseSink};
use crate::site::pinned_partition;
use crate::snapshot::SnapshotTarget;
use crate::sysprocs;
use arc_swap::ArcSwap;
use joule_common::{bail, err, Result, Row, Value};
use joule_engine::Database;
use joule_sql::catalog::DEFAULT_DATABASE;
use joule_sql::parser::ParsedStatement;
use joule_sql::plan::Partitioning;
use joule_sql::planner::PlannedKind;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

/// How to start a host.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// Sites (partitions) on this host.
    pub sites_per_host: usize,
    /// Native procedure classes `CREATE PROCEDURE ... FROM CLASS` can bind.
    pub registry: ProcedureRegistry,
    /// Where committed transactions are logged (none: not logged).
    pub command_log: Option<Arc<dyn CommandLog>>,
    /// Ids a restored snapshot was taken with: ids issued from now on
    /// follow them, and every site counts as having started that
    /// multi-partition transaction (so later log records are not mistaken
    /// for ones the snapshot covers).
    pub resume_after: Option<TxnIds>,
    /// In a multi-host cluster: the partitions, the ones held here, and
    /// the link to the other hosts (`None`: one host holding every
    /// partition, `sites_per_host` of them).
    pub cluster: Option<ClusterPlacement>,
}

/// A host's place in a multi-host cluster (see [`crate::remote`]).
#[derive(Clone)]
pub struct ClusterPlacement {
    /// Partitions in the cluster (joining ones included).
    pub partitions: u32,
    /// Partitions in the transaction order (the others are joining).
    pub active: u32,
    /// The partitions this host holds a replica of.
    pub replicas: Vec<u32>,
    pub link: Arc<dyn ClusterLink>,
}

impl std::fmt::Debug for ClusterPlacement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ClusterPlacement {{ partitions: {}, active: {}, replicas: {:?} }}",
            self.partitions, self.active, self.replicas
        )
    }
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            sites_per_host: std::thread::available_parallelism().map_or(1, |n| n.get()),
            registry: ProcedureRegistry::new(),
            command_log: None,
            resume_after: None,
            cluster: None,
        }
    }
}

impl std::fmt::Debug for dyn CommandLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CommandLog {{ synchronous: {} }}", self.holds_answers())
    }
}

/// What initiators and the coordinator share.
pub(crate) struct Shared {
    /// The partitions initiators route to (replaced whole when partitions
    /// are added, see [`crate::partitions`]).
    pub routes: ArcSwap<Routes>,
    pub coordinator: Sender<CoordMsg>,
    /// Where sites and proxies answer the coordinator's rounds.
    pub replies: Sender<crate::messages::MpReply>,
    pub schema: ArcSwap<Schema>,
    pub hashinator: ArcSwap<Hashinator>,
    pub registry: ProcedureRegistry,
    pub running: AtomicBool,
    /// Per site: invocations sent and not yet taken (for QUEUE statistics).
    /// Sized for [`MAX_PARTITIONS`], as are `loaded` and `in_doubt`, so
    /// that adding partitions never moves them.
    pub depths: Arc<[std::sync::atomic::AtomicU64]>,
    /// Per site: it holds calls while its partition is handed over (see
    /// `handover.rs`): calls for the partition go to the site, behind
    /// them, even once another host leads it.
    pub holding: Arc<[AtomicBool]>,
    /// The coordinator holds multi-partition calls while this host hands
    /// the coordination over (see `handover.rs`): they go to it, behind
    /// them, even once another host coordinates.
    pub holding_mp: AtomicBool,
    /// In a cluster: the other hosts.
    pub link: Option<Arc<dyn ClusterLink>>,
    /// Per partition: this host's copy follows the leader's stream — true
    /// from the start for a new cluster; for a rejoining host, once the copy
    /// from the leader has been loaded.
    pub loaded: Vec<AtomicBool>,
    /// Per partition: this host's copy's prepared multi-partition
    /// transactions (see [`crate::messages::InDoubt`]).
    pub in_doubt: Vec<Mutex<crate::messages::InDoubt>>,
    /// A cluster: this host has just become the coordinator and must settle
    /// what the previous one left in doubt before it runs anything.
    pub resolve: AtomicBool,
    /// Threads started after the host (the sites of added partitions),
    /// joined at shutdown.
    pub spawned: Mutex<Vec<JoinHandle<()>>>,
    /// Inboxes of sites here whose partitions left the order (see
    /// `crate::partitions`): no route reaches them, and they stop with the
    /// host.
    pub retired: Mutex<Vec<Sender<SiteMsg>>>,
}

/// A partition's two inboxes, as a site or a proxy takes them: start
/// markers and single-partition work, and multi-partition work.
pub(crate) type PartitionInboxes = (Sender<SiteMsg>, Sender<MpWork>);

/// The most partitions a host routes to (held here or not).
pub const MAX_PARTITIONS: usize = 1024;

/// The partition set as this host sees it: per partition, where its
/// calls and start markers go (the inbox of the site here, or the proxy for
/// its leader on another host), where multi-partition work goes (the
/// site's work inbox, or the proxy's), the proxy (in a cluster), and
/// whether a site here holds a copy. Partitions past `active` exist (a
/// cluster's hosts added them) but are not in the transaction order yet.
#[derive(Clone)]
pub(crate) struct Routes {
    pub sites: Vec<Sender<SiteMsg>>,
    pub work: Vec<Sender<MpWork>>,
    pub proxies: Vec<Option<PartitionInboxes>>,
    pub local: Vec<bool>,
    pub active: usize,
}

impl Shared {
    /// How many partitions are in the transaction order.
    pub fn partition_count(&self) -> usize {
        self.routes.load().active
    }

    /// How many partitions this host knows of (joining ones included).
    pub fn known_partitions(&self) -> usize {
        self.routes.load().sites.len()
    }

    /// The inbox of this host's site for `partition`, if it holds a copy.
    pub fn local_site(&self, partition: u32) -> Option<Sender<SiteMsg>> {
        let routes = self.routes.load();
        let p = partition as usize;
        routes.local.get(p).copied().unwrap_or(false).then(|| routes.sites[p].clone())
    }

    /// `partition`'s prepared transactions here, if the partition exists.
    pub fn doubt(&self, partition: u32) -> Option<&Mutex<crate::messages::InDoubt>> {
        ((partition as usize) < self.known_partitions()).then(|| &self.in_doubt[partition as usize])
    }
}

/// A running host.
pub struct Host {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Host {
    pub fn start(config: HostConfig) -> Result<Host> {
        let n = match &config.cluster {
            Some(c) => c.partitions as usize,
            None => config.sites_per_host,
        };
        if n == 0 || n > MAX_PARTITIONS {
            bail!(InvalidArgument, "sites_per_host must be between 1 and {MAX_PARTITIONS}, not {n}");
        }
        let active = match &config.cluster {
            Some(c) => (c.active as usize).clamp(1, n),
            None => n,
        };
        let local: Vec<bool> = match &config.cluster {
            Some(c) => (0..n as u32).map(|p| c.replicas.contains(&p)).collect(),
            None => vec![true; n],
        };
        let link = config.cluster.as_ref().map(|c| c.link.clone());
        let hashinator = Arc::new(Hashinator::even(active as u32, 1)?);
        let schema = Arc::new(Schema::compile(Arc::new(Default::default()), &config.registry, None)?);
        let (site_tx, site_rx): (Vec<_>, Vec<_>) = (0..n).map(|_| mpsc::channel::<SiteMsg>()).unzip();
        let (mp_tx, mp_rx): (Vec<_>, Vec<_>) = (0..n).map(|_| mpsc::channel::<MpWork>()).unzip();
        let (reply_tx, reply_rx) = mpsc::channel();
        let (coord_tx, coord_rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            routes: ArcSwap::from_pointee(Routes {
                sites: site_tx.clone(),
                work: mp_tx.clone(),
                proxies: vec![None; n],
                local: local.clone(),
                active,
            }),
            coordinator: coord_tx.clone(),
            replies: reply_tx.clone(),
            schema: ArcSwap::new(schema.clone()),
            hashinator: ArcSwap::new(hashinator.clone()),
            registry: config.registry,
            running: AtomicBool::new(true),
            depths: (0..MAX_PARTITIONS).map(|_| std::sync::atomic::AtomicU64::new(0)).collect(),
            holding: (0..MAX_PARTITIONS).map(|_| AtomicBool::new(false)).collect(),
            holding_mp: AtomicBool::new(false),
            link: link.clone(),
            // Fresh: every copy here is the partition as it is (empty).
            loaded: (0..MAX_PARTITIONS).map(|_| AtomicBool::new(true)).collect(),
            in_doubt: (0..MAX_PARTITIONS).map(|_| Mutex::default()).collect(),
            resolve: AtomicBool::new(false),
            spawned: Mutex::new(Vec::new()),
            retired: Mutex::new(Vec::new()),
        });
        let mut threads = Vec::new();
        for (p, (inbox, mp_inbox)) in site_rx.into_iter().zip(mp_rx).enumerate() {
            if !local[p] {
                continue;
            }
            let start = crate::partitions::SiteStart {
                partition: p as u32,
                db: Database::new(),
                hashinator: hashinator.clone(),
                schema: schema.clone(),
                inbox,
                mp_inbox,
                resume_after: config.resume_after,
            };
            threads.push(crate::partitions::start_site(&shared, start, reply_tx.clone(), config.command_log.clone())?);
        }
        drop((site_tx, mp_tx));
        // In a cluster, every partition also has a proxy for its leader on
        // another host (used while this host does not lead it).
        if link.is_some() {
            let mut routes = Routes::clone(&shared.routes.load());
            for (p, &held) in local.iter().enumerate().take(n) {
                let (thread, proxy) = crate::partitions::start_proxy(&shared, p as u32)?;
                threads.push(thread);
                if !held {
                    routes.sites[p] = proxy.0.clone();
                    routes.work[p] = proxy.1.clone();
                }
                routes.proxies[p] = Some(proxy);
            }
            shared.routes.store(Arc::new(routes));
        }
        let mut coordinator = Coordinator::new(shared.clone(), coord_rx, reply_rx, config.command_log.clone());
        if let Some(resume) = config.resume_after {
            coordinator.ids.observe(resume);
        }
        threads.push(spawn("joule-mp".to_string(), move || coordinator.run())?);
        Ok(Host { shared, threads: Mutex::new(threads) })
    }

    /// A new client (initiator handle) with `DEFAULT` as its database.
    pub fn client(&self) -> Client {
        Client {
            shared: self.shared.clone(),
            database: DEFAULT_DATABASE.to_string(),
            plans: HashMap::new(),
            mp_plans: HashMap::new(),
            replicated_reads: 0,
            hops: 0,
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Partitions in the transaction order.
    pub fn partitions(&self) -> usize {
        self.shared.partition_count()
    }

    /// Partitions this host routes to, joining ones included.
    pub fn known_partitions(&self) -> usize {
        self.shared.known_partitions()
    }

    /// The schema initiators currently plan against.
    pub fn schema(&self) -> Arc<Schema> {
        self.shared.schema.load_full()
    }

    pub fn hashinator(&self) -> Arc<Hashinator> {
        self.shared.hashinator.load_full()
    }

    /// The version of the ring this host routes by (no copy of the ring).
    pub fn ring_version(&self) -> u64 {
        self.shared.hashinator.load().version()
    }

    /// Every site's statistics and the coordinator's (last), each copied
    /// by its own thread between transactions. A thread that does not
    /// answer within `wait` is left out.
    pub fn statistics(&self, wait: std::time::Duration) -> Vec<crate::stats::SiteStats> {
        let (tx, rx) = mpsc::channel();
        let mut asked = 0;
        let routes = self.shared.routes.load();
        for (site, _) in routes.sites.iter().zip(&routes.local).filter(|(_, local)| **local) {
            asked += usize::from(site.send(SiteMsg::Stats(tx.clone())).is_ok());
        }
        asked += usize::from(self.shared.coordinator.send(CoordMsg::Stats(tx.clone())).is_ok());
        drop(tx);
        let deadline = Instant::now() + wait;
        let mut out = Vec::with_capacity(asked);
        while out.len() < asked {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(s) => out.push(s),
                Err(_) => break,
            }
        }
        out.sort_by_key(|s| s.partition.unwrap_or(u32::MAX));
        out
    }

    /// Whether the host still takes work (it has not begun to shut down).
    pub fn is_running(&self) -> bool {
        self.shared.running.load(Ordering::SeqCst)
    }

    /// The cluster metadata's ring (`ring`, `None` for the even ring every
    /// host starts with): routed by from now on, unless this host has it
    /// or a newer one already. Sites take it when a call routed with it
    /// reaches them, and the coordinator when its next transaction starts.
    pub fn install_ring(&self, ring: Option<&Hashinator>) {
        let Some(ring) = ring else { return };
        // A ring over more partitions: partitions joined (see
        // `crate::partitions`), routed to before the ring that counts them.
        let count = (ring.partition_count() as usize).min(self.shared.known_partitions());
        if count > self.shared.partition_count() {
            self.shared.routes.rcu(|now| Routes { active: now.active.max(count), ..Routes::clone(now) });
        }
        // A newer ring over fewer partitions: the last ones left.
        let current = self.shared.hashinator.load();
        if ring.version() >= current.version() && (ring.partition_count() as usize) < self.shared.partition_count() {
            crate::partitions::retire_routes(&self.shared, ring.partition_count() as usize, false);
        }
        let ring = Arc::new(ring.clone());
        self.shared.hashinator.rcu(|now| if now.version() >= ring.version() { now.clone() } else { ring.clone() });
    }

    /// Stop taking work, let queued work finish, and join every thread.
    /// The coordinator stops first and then stops the sites, so no site
    /// leaves while a multi-partition transaction waits for it.
    pub fn shutdown(&self) {
        self.shared.running.store(false, Ordering::SeqCst);
        if self.shared.coordinator.send(CoordMsg::Shutdown).is_err() {
            let routes = self.shared.routes.load();
            for s in routes.sites.iter().chain(routes.proxies.iter().flatten().map(|(begin, _)| begin)) {
                let _ = s.send(SiteMsg::Shutdown);
            }
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
        // The coordinator started these and has stopped them.
        let spawned = std::mem::take(&mut *self.shared.spawned.lock().unwrap_or_else(|e| e.into_inner()));
        for t in spawned {
            let _ = t.join();
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Send a single-partition invocation to the host leading its partition.
/// Send a single-partition invocation to `partition`'s site here, or to
/// the host leading it.
pub(crate) fn dispatch_sp(shared: &Shared, partition: usize, task: SpTask) {
    if let Some(link) = &shared.link {
        // (Unless the site here still holds earlier calls for it: then to
        // the site, behind them.)
        let holding = shared.holding[partition].load(Ordering::SeqCst);
        if !link.leads(partition as u32) && !holding {
            return forward_sp(link, partition as u32, task);
        }
        // Leading it since a moment: calls that entered here before this
        // one may still be on their way (parked, or at the old leader) —
        // behind them. Decided here, not in the site: a call queued in the
        // site's inbox may not wait for ones put in behind it.
        if task.hops == 0 && !holding && !link.may_run_entered(partition as u32) {
            return forward_sp(link, partition as u32, task);
        }
    }
    shared.depths[partition].fetch_add(1, Ordering::Relaxed);
    if let Err(e) = shared.routes.load().sites[partition].send(SiteMsg::Sp(task)) {
        shared.depths[partition].fetch_sub(1, Ordering::Relaxed);
        if let SiteMsg::Sp(t) = e.0 {
            t.sink.deliver(t.handle, Response::failure(err!(Unavailable, "the host is shutting down"), None));
        }
    }
}

use crate::forwarding::{forward_mp, forward_sp, FORGET_TOKENS, INDEX_TOKENS};

pub(crate) fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(f)
        .map_err(|e| err!(Internal, "cannot start thread {name}: {e}"))
}

/// A response sink that hands the answer to one waiting caller.
struct Waiter(SyncSender<Response>);

impl ResponseSink for Waiter {
    fn deliver(&self, _handle: u64, response: Response) {
        let _ = self.0.send(response);
    }
}

/// An invocation: a procedure (user, CRUD or system) with parameters, and,
/// when replaying a log, the ids it ran with.
#[derive(Clone, Debug, PartialEq)]
pub struct Invocation {
    pub procedure: String,
    pub params: Vec<Value>,
    pub replay: Option<TxnIds>,
}

impl Invocation {
    pub fn new(procedure: &str, params: Vec<Value>) -> Invocation {
        Invocation { procedure: procedure.to_string(), params, replay: None }
    }
}

/// Ad hoc plans a client keeps (per kind) before starting over.
const PLAN_CACHE_LIMIT: usize = 512;

/// The initiator handle clients invoke through. Not shared between
/// threads: each connection or thread has its own (it keeps a session
/// database and a plan cache).
pub struct Client {
    shared: Arc<Shared>,
    database: String,
    /// Ad hoc statements planned for one partition, by (database, text).
    plans: HashMap<(String, String), Arc<CompiledStatement>>,
    /// The same, planned for multi-partition execution.
    mp_plans: HashMap<(String, String), Arc<CompiledStatement>>,
    /// Counts replicated-only ad hoc reads, to spread them over partitions.
    replicated_reads: u64,
    /// Hosts that forwarded this client's calls here (a cluster's host
    /// serving forwarded calls sets it).
    hops: u8,
}

impl Client {
    /// Invoke and wait for the answer.
    pub fn call(&mut self, procedure: &str, params: Vec<Value>) -> Response {
        self.invoke_wait(Invocation::new(procedure, params))
    }

    /// `@AdHoc`: run SQL (`?`s bound to `params` in order) and wait.
    pub fn adhoc(&mut self, sql: &str, params: Vec<Value>) -> Response {
        let mut all = vec![Value::String(sql.to_string())];
        all.extend(params);
        self.call("@AdHoc", all)
    }

    /// Invoke and wait.
    pub fn invoke_wait(&mut self, invocation: Invocation) -> Response {
        let (tx, rx) = mpsc::sync_channel(1);
        self.invoke(invocation, 0, Arc::new(Waiter(tx)));
        rx.recv().unwrap_or_else(|_| Response::failure(err!(Unavailable, "the host stopped"), None))
    }

    /// Invoke; the response goes to `sink` with `handle`.
    pub fn invoke(&mut self, invocation: Invocation, handle: u64, sink: Arc<dyn ResponseSink>) {
        let Invocation { procedure, params, replay } = invocation;
        self.invoke_with(&procedure, params, replay, handle, sink)
    }

    /// Invoke `procedure` without waiting; the response goes to `sink` with
    /// `handle`.
    pub fn call_async(&mut self, procedure: &str, params: Vec<Value>, handle: u64, sink: Arc<dyn ResponseSink>) {
        self.invoke_with(procedure, params, None, handle, sink)
    }

    fn invoke_with(
        &mut self,
        procedure: &str,
        params: Vec<Value>,
        replay: Option<TxnIds>,
        handle: u64,
        sink: Arc<dyn ResponseSink>,
    ) {
        if !self.shared.running.load(Ordering::Relaxed) {
            return sink.deliver(handle, Response::failure(err!(Unavailable, "the host is shutting down"), None));
        }
        let routed = if procedure.starts_with('@') {
            self.system(procedure, params, replay)
        } else {
            match self.shared.schema.load().procedure(procedure) {
                Some(p) => Ok(Route::Procedure(p.clone(), params)),
                None => Err(err!(UndefinedProcedure, "procedure {procedure} was not found")),
            }
        };
        match routed {
            Ok(Route::Procedure(p, params)) => self.route(p, params, replay, handle, sink),
            Ok(Route::Sp(p, params, partition, hash_version)) => self.send_sp(
                partition as usize,
                SpTask {
                    procedure: p,
                    params,
                    sink,
                    handle,
                    replay,
                    hash_version,
                    accepted: Instant::now(),
                    hops: self.hops,
                },
            ),
            Ok(Route::Mp(kind, params)) => {
                self.send_mp(MpTask { kind, params, sink, handle, replay, accepted: Instant::now(), hops: self.hops })
            }
            Ok(Route::Done(response)) => sink.deliver(handle, response),
            Err(e) => sink.deliver(handle, Response::failure(e, None)),
        }
    }

    /// Send a procedure to its partition or to the coordinator.
    fn route(
        &mut self,
        procedure: Arc<CompiledProcedure>,
        params: Vec<Value>,
        replay: Option<TxnIds>,
        handle: u64,
        sink: Arc<dyn ResponseSink>,
    ) {
        let Some(routing) = &procedure.routing else {
            let accepted = Instant::now();
            return self.send_mp(MpTask {
                kind: MpKind::Procedure(procedure),
                params,
                sink,
                handle,
                replay,
                accepted,
                hops: self.hops,
            });
        };
        let hashinator = self.shared.hashinator.load();
        let partition = match params.get(routing.parameter) {
            None => Err(err!(
                WrongParameterCount,
                "procedure {} is partitioned on parameter {} but got {} parameter(s)",
                procedure.name,
                routing.parameter,
                params.len()
            )),
            Some(v) => routing
                .key
                .partition(v, &hashinator)
                .map_err(|e| e.context(format!("partition parameter of {} ({})", procedure.name, routing.column))),
        };
        let partition = match partition {
            Ok(p) => p as usize,
            Err(e) => return sink.deliver(handle, Response::failure(e, None)),
        };
        let task = SpTask {
            procedure,
            params,
            sink,
            handle,
            replay,
            hash_version: hashinator.version(),
            accepted: Instant::now(),
            hops: self.hops,
        };
        self.send_sp(partition, task);
    }

    fn send_sp(&self, partition: usize, task: SpTask) {
        dispatch_sp(&self.shared, partition, task)
    }

    fn send_mp(&self, task: MpTask) {
        if let Some(link) = &self.shared.link {
            // (Unless the coordinator here still holds earlier calls.)
            if !link.coordinates() && !self.shared.holding_mp.load(Ordering::SeqCst) {
                return forward_mp(link, task);
            }
        }
        if let Err(e) = self.shared.coordinator.send(CoordMsg::Invoke(task)) {
            if let CoordMsg::Invoke(t) = e.0 {
                t.sink.deliver(t.handle, Response::failure(err!(Unavailable, "the host is shutting down"), None));
            }
        }
    }

    /// System procedures handled by the transaction layer.
    fn system(&mut self, name: &str, mut params: Vec<Value>, _replay: Option<TxnIds>) -> Result<Route> {
        match name {
            "@AdHoc" => {
                if params.is_empty() {
                    bail!(WrongParameterCount, "@AdHoc takes the SQL text and then its parameters");
                }
                let Value::String(sql) = params.remove(0) else {
                    bail!(DatatypeMismatch, "@AdHoc's first parameter must be the SQL text");
                };
                self.adhoc_route(&sql, params)
            }
            "@ValidatePartitioning" => Ok(Route::Mp(MpKind::ValidatePartitioning, Vec::new())),
            "@Checksum" => Ok(Route::Mp(MpKind::Checksums, Vec::new())),
            "@MoveRange" => {
                let keep = crate::moverange::keep_param(name, &mut params)?;
                let ranges = crate::moverange::range_moves_params(name, &params, self.shared.partition_count())?;
                Ok(Route::Mp(MpKind::MoveRange { ranges, keep }, Vec::new()))
            }
            // Only as forwarded by another host's `forget_tokens`.
            FORGET_TOKENS if self.hops > 0 => Ok(Route::Mp(MpKind::ForgetTokens, Vec::new())),
            INDEX_TOKENS if self.hops > 0 => match params.as_slice() {
                [Value::Integer(rows), partitions @ ..] if *rows > 0 && !partitions.is_empty() => {
                    let partitions = partitions
                        .iter()
                        .map(|p| match p {
                            Value::Integer(p) => {
                                u32::try_from(*p).map_err(|_| err!(InvalidArgument, "no partition {p}"))
                            }
                            v => bail!(InvalidArgument, "{INDEX_TOKENS}: a partition must be an integer, not {v}"),
                        })
                        .collect::<Result<Vec<u32>>>()?;
                    Ok(Route::Mp(MpKind::IndexTokens { partitions, rows: *rows as u64 }, Vec::new()))
                }
                _ => bail!(InvalidArgument, "{INDEX_TOKENS} takes a count of rows and then the partitions"),
            },
            "@Explain" => {
                let sql = sysprocs::string_param(name, &params, 0)?;
                let schema = self.shared.schema.load_full();
                Ok(Route::Done(Response::answered(sysprocs::explain_sql(&schema, &self.database, &sql)?)))
            }
            "@ExplainProc" => {
                let proc_name = sysprocs::string_param(name, &params, 0)?;
                Ok(Route::Done(Response::answered(sysprocs::explain_proc(&self.shared.schema.load(), &proc_name)?)))
            }
            "@SystemCatalog" => {
                let selector = sysprocs::string_param(name, &params, 0)?;
                Ok(Route::Done(Response::answered(sysprocs::system_catalog(&self.shared.schema.load(), &selector)?)))
            }
            "@SystemInformation" => {
                let selector =
                    if params.is_empty() { "OVERVIEW".to_string() } else { sysprocs::string_param(name, &params, 0)? };
                let version = self.shared.schema.load().version();
                Ok(Route::Done(Response::answered(sysprocs::system_information(
                    &selector,
                    self.shared.partition_count(),
                    version,
                )?)))
            }
            "@GetPartitionKeys" => {
                let kind = sysprocs::string_param(name, &params, 0)?;
                let tables =
                    sysprocs::partition_keys(&kind, &self.shared.hashinator.load(), self.shared.partition_count())?;
                Ok(Route::Done(Response::answered(tables)))
            }
            // Nothing is buffered outside transactions (no export; a
            // cluster's replication holds the answers of what it has not
            // shipped): quiescing has nothing to wait for.
            "@Quiesce" => Ok(Route::Done(Response::answered(Vec::new()))),
            "@Ping" => Ok(Route::Done(Response::answered(Vec::new()))),
            "@SwapTables" => {
                let a = sysprocs::string_param(name, &params, 0)?;
                let b = sysprocs::string_param(name, &params, 1)?;
                let valid =
                    |t: &str| !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
                if !valid(&a) || !valid(&b) {
                    bail!(InvalidArgument, "@SwapTables takes two table names");
                }
                let statements = vec![format!("SWAP TABLE {a} WITH {b}")];
                Ok(Route::Mp(MpKind::Ddl { statements, database: self.database.clone() }, Vec::new()))
            }
            _ => bail!(UndefinedProcedure, "system procedure {name} was not found"),
        }
    }

    /// Plan ad hoc SQL and decide where it runs.
    fn adhoc_route(&mut self, sql: &str, params: Vec<Value>) -> Result<Route> {
        let parsed = joule_sql::parser::parse(sql)?;
        if parsed.is_empty() {
            bail!(SyntaxError, "syntax error: empty statement");
        }
        let ddl = parsed.iter().filter(|s| s.is_schema_change()).count();
        if ddl > 0 {
            if ddl != parsed.len() {
                bail!(FeatureNotSupported, "DDL and other statements cannot be mixed in one @AdHoc call");
            }
            if !params.is_empty() {
                bail!(WrongParameterCount, "DDL takes no parameters");
            }
            let statements = parsed.into_iter().map(|s| s.sql).collect();
            return Ok(Route::Mp(MpKind::Ddl { statements, database: self.database.clone() }, Vec::new()));
        }
        let schema = self.shared.schema.load_full();
        let mut statements = Vec::with_capacity(parsed.len());
        for stmt in &parsed {
            let compiled = self.plan_single(stmt, &schema)?;
            if let PlannedKind::UseDatabase(db) = &compiled.planned.kind {
                if parsed.len() > 1 {
                    bail!(FeatureNotSupported, "USE must be the only statement of an @AdHoc call");
                }
                self.database = db.clone();
                return Ok(Route::Done(Response::answered(Vec::new())));
            }
            statements.push(compiled);
        }
        let param_count: usize = statements.iter().map(|s| s.planned.param_count).sum();
        if params.len() != param_count {
            bail!(WrongParameterCount, "the SQL has {param_count} ? parameter(s) but {} were given", params.len());
        }
        // Single-partition if every statement pins the same partition or
        // only reads replicated tables.
        let hashinator = self.shared.hashinator.load();
        let mut target: Option<u32> = None;
        let mut single = true;
        let mut offset = 0;
        for s in &statements {
            let p = &params[offset..offset + s.planned.param_count];
            offset += s.planned.param_count;
            match &s.planned.partitioning {
                Partitioning::Single(key, route) => match pinned_partition(&hashinator, key, route, p)? {
                    Some(owner) if target.is_none_or(|t| t == owner) => target = Some(owner),
                    _ => single = false,
                },
                Partitioning::Replicated if !s.planned.writes => {}
                _ => single = false,
            }
        }
        if single {
            // Replicated-only reads spread over the partitions.
            let target = target.unwrap_or_else(|| {
                self.replicated_reads += 1;
                (self.replicated_reads % self.shared.partition_count() as u64) as u32
            });
            let version = hashinator.version();
            let procedure = adhoc_procedure(statements, &schema, &self.database);
            return Ok(Route::Sp(Arc::new(procedure), params, target, version));
        }
        let mp = parsed.iter().map(|stmt| self.plan_multi(stmt, &schema)).collect::<Result<Vec<_>>>()?;
        Ok(Route::Mp(MpKind::Procedure(Arc::new(adhoc_procedure(mp, &schema, &self.database))), params))
    }

    /// Plan one ad hoc statement for a single partition (cached).
    fn plan_single(&mut self, stmt: &ParsedStatement, schema: &Schema) -> Result<Arc<CompiledStatement>> {
        let key = (self.database.clone(), stmt.sql.clone());
        if let Some(p) = self.plans.get(&key) {
            if p.planned.catalog_version == schema.version() {
                return Ok(p.clone());
            }
        }
        let planned = joule_sql::planner::plan(stmt, &schema.catalog, &self.database)?;
        let compiled = Arc::new(CompiledStatement { sql: stmt.sql.clone(), planned: Arc::new(planned), mp: None });
        if self.plans.len() >= PLAN_CACHE_LIMIT {
            self.plans.clear();
        }
        if !matches!(compiled.planned.kind, PlannedKind::UseDatabase(_)) {
            self.plans.insert(key, compiled.clone());
        }
        Ok(compiled)
    }

    /// Replace the hashinator everywhere at once, as a multi-partition
    /// transaction (the new one must have a higher version). Moving the
    /// rows whose owner changes is the caller's business (elastic scaling);
    /// invocations routed with the old one are re-routed by the sites.
    pub fn swap_hashinator(&mut self, hashinator: Hashinator) -> Response {
        let current = self.shared.hashinator.load();
        if hashinator.version() <= current.version() {
            let e = err!(
                InvalidArgument,
                "the new hashinator's version {} must be above the current {}",
                hashinator.version(),
                current.version()
            );
            return Response::failure(e, None);
        }
        if hashinator.ring().iter().any(|(_, p)| *p as usize >= self.shared.partition_count()) {
            return Response::failure(err!(InvalidArgument, "the hashinator names a partition this host lacks"), None);
        }
        self.run_mp_and_wait(MpKind::SetHashinator(Arc::new(hashinator)))
    }

    /// How many partitions the cluster has now.
    pub(crate) fn partition_count(&self) -> usize {
        self.shared.partition_count()
    }

    /// Run one internal multi-partition transaction and wait for its answer.
    pub(crate) fn run_mp_and_wait(&mut self, kind: MpKind) -> Response {
        let (tx, rx) = mpsc::sync_channel(1);
        let sink = Arc::new(Waiter(tx));
        self.send_mp(MpTask {
            kind,
            params: Vec::new(),
            sink,
            handle: 0,
            replay: None,
            accepted: Instant::now(),
            hops: 0,
        });
        rx.recv().unwrap_or_else(|_| Response::failure(err!(Unavailable, "the host stopped"), None))
    }

    /// Take a snapshot: every partition frozen at one point and handed to
    /// `target`, which answers `sink` (see [`crate::snapshot`]).
    pub fn snapshot(&mut self, target: Arc<dyn SnapshotTarget>, handle: u64, sink: Arc<dyn ResponseSink>) {
        let kind = MpKind::Snapshot(target);
        self.send_mp(MpTask {
            kind,
            params: Vec::new(),
            sink,
            handle,
            replay: None,
            accepted: Instant::now(),
            hops: 0,
        });
    }

    /// Insert rows into tables (by qualified name) in one multi-partition
    /// transaction, each row on the partition that owns it; the command log
    /// records it as `log_as` (procedure, parameters) if given. Waits.
    pub fn load_rows(&mut self, tables: Vec<(String, Vec<Row>)>, log_as: Option<(String, Vec<Value>)>) -> Response {
        self.run_mp_and_wait(MpKind::LoadRows { tables, log_as })
    }

    /// Recovery: put each partition's rows at their row ids, in one
    /// multi-partition transaction (not logged). Waits.
    pub fn place_rows(&mut self, per_partition: Vec<crate::snapshot::PartitionRows>) -> Response {
        self.run_mp_and_wait(MpKind::PlaceRows(per_partition))
    }

    /// Plan one ad hoc statement for multi-partition execution (cached).
    fn plan_multi(&mut self, stmt: &ParsedStatement, schema: &Schema) -> Result<Arc<CompiledStatement>> {
        let key = (self.database.clone(), stmt.sql.clone());
        if let Some(p) = self.mp_plans.get(&key) {
            if p.planned.catalog_version == schema.version() {
                return Ok(p.clone());
            }
        }
        let compiled = Arc::new(compile_statement(&stmt.sql, &schema.catalog, &self.database, true)?);
        if self.mp_plans.len() >= PLAN_CACHE_LIMIT {
            self.mp_plans.clear();
        }
        self.mp_plans.insert(key, compiled.clone());
        Ok(compiled)
    }

    /// The session's current database.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// Make `database` the session's current one (as `USE` does, without
    /// checking that it exists: replay restores sessions this way). An
    /// empty name means the default database.
    pub fn use_database(&mut self, database: &str) {
        self.database = if database.is_empty() { DEFAULT_DATABASE.to_string() } else { database.to_string() };
    }

    /// Calls through this client were forwarded here by `hops` hosts.
    pub fn set_hops(&mut self, hops: u8) {
        self.hops = hops;
    }

    /// A client a replica site uses to plan a replicated `@AdHoc` record.
    pub(crate) fn replaying(shared: Arc<Shared>, database: &str) -> Client {
        let mut c = Client {
            shared,
            database: DEFAULT_DATABASE.to_string(),
            plans: HashMap::new(),
            mp_plans: HashMap::new(),
            replicated_reads: 0,
            hops: 0,
        };
        c.use_database(database);
        c
    }

    /// Plan a replicated `@AdHoc` record's SQL against `schema` (the
    /// replica site's own) as the single-partition procedure it ran as.
    pub(crate) fn adhoc_procedure_at(
        &mut self,
        sql: &str,
        params: Vec<Value>,
        schema: Arc<Schema>,
    ) -> Result<(Arc<CompiledProcedure>, Vec<Value>)> {
        let parsed = joule_sql::parser::parse(sql)?;
        let statements = parsed.iter().map(|stmt| self.plan_single(stmt, &schema)).collect::<Result<Vec<_>>>()?;
        Ok((Arc::new(adhoc_procedure(statements, &schema, &self.database)), params))
    }
}

/// Where an invocation goes.
enum Route {
    Procedure(Arc<CompiledProcedure>, Vec<Value>),
    /// Ad hoc work for one partition, routed with this hashinator version.
    Sp(Arc<CompiledProcedure>, Vec<Value>, u32, u64),
    Mp(MpKind, Vec<Value>),
    Done(Response),
}

fn adhoc_procedure(statements: Vec<Arc<CompiledStatement>>, schema: &Schema, database: &str) -> CompiledProcedure {
    CompiledProcedure {
        name: "@AdHoc".to_string(),
        routing: None,
        code: ProcedureCode::Statements,
        param_count: Some(statements.iter().map(|s| s.planned.param_count).sum()),
        statements,
        roles: Vec::new(),
        catalog_version: schema.version(),
        database: database.to_string(),
    }
}
