//! The multi-partition coordinator: one thread that orders and drives every
//! multi-partition transaction.
//!
//! For each transaction it assigns ids, puts the start marker into every
//! site's inbox (so every site joins at the same point of its serial order),
//! runs the work — a multi-partition procedure's Rust code, a batch of ad hoc
//! statements, DDL — sending each batch to the sites as rounds of work items
//! ([`crate::messages::WorkItem`]) and combining their results (see
//! [`crate::distribute`]), then commits or rolls back on every site. Any
//! failure on any site rolls the transaction back everywhere.
//!
//! DDL is planned here, against the coordinator's own copy of the schema (a
//! [`Database`] holding no rows), applied on every site, and only committed
//! once every site succeeded and every procedure compiles against the new
//! catalog. The new [`Schema`] is installed on the sites with the commit and
//! published to initiators right after.

use crate::compile::{CompiledStatement, Schema};
use crate::distribute::{reaggregate, Combine, DistQuery, MpStatement};
use crate::hashinator::Hashinator;
use crate::host::Shared;
use crate::ids::{IdGenerator, TxnIds, MP_INITIATOR};
use crate::logging::{self, Answer, CommandLog, LoggedTxn};
use crate::messages::{
    recv_soon, CoordMsg, ItemResult, MpKind, MpReply, MpTask, MpWork, SiteMsg, WorkItem, IN_TRANSACTION,
};
use crate::procedure::{run_procedure, Batch, BatchExecutor, BatchRef};
use crate::response::{Response, ResultTable};
use crate::site::pinned_partition;
use joule_common::{bail, err, DataType, Error, Result, Row, Value};
use joule_engine::eval::Context;
use joule_engine::storage::{Storage, Table};
use joule_engine::{exec, Database, ExecResult};
use joule_sql::functions::FunctionContext;
use joule_sql::plan::Partitioning;
use joule_sql::planner::PlannedKind;
use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;

pub(crate) struct Coordinator {
    pub shared: Arc<Shared>,
    pub inbox: Receiver<CoordMsg>,
    pub sites: Vec<Sender<MpWork>>,
    /// Per partition, the inbox of the site here (or of the proxy for its
    /// leader): where start markers go. Partitions added by a
    /// transaction join it here at once, and the initiators' routes once
    /// it committed (see [`crate::partitions`]).
    pub site_inboxes: Vec<Sender<SiteMsg>>,
    pub replies: Receiver<MpReply>,
    /// The schema without data: plans DDL and runs combine steps.
    pub schema_db: Database,
    pub ids: IdGenerator,
    pub hashinator: Arc<Hashinator>,
    pub batch: Batch,
    /// Where committed changes are logged (none: no command log).
    pub log: Option<Arc<dyn CommandLog>>,
    /// Every committed DDL call: (session database, statements), in order.
    pub ddl_history: Vec<(String, String)>,
    /// Multi-partition work's statistics (see [`crate::stats`]).
    pub counters: crate::stats::SiteCounters,
    /// In a cluster: per partition, the proxy for its leader on another
    /// host (start marker, work), used while this host does not lead it.
    pub proxies: Vec<Option<crate::host::PartitionInboxes>>,
    /// For the transaction running: which partitions are led elsewhere.
    pub remote: Vec<bool>,
    /// For the transaction running: which partitions were sent a write.
    pub wrote: Vec<bool>,
    /// For the transaction running: which partitions hold nothing for it —
    /// released early (their outcome sent before the work, see
    /// `Coordinator::release_uninvolved`) or not started yet (`deferred`)
    /// — and in a cluster the channels the released ones' confirmations
    /// come on.
    pub released: Vec<bool>,
    pub released_waits: Vec<(usize, std::sync::mpsc::Receiver<()>)>,
    /// For the transaction running: partitions told to prepare behind their
    /// last round ([`Coordinator::round_then_prepare`]), and their answers.
    pub early_prepared: Vec<(usize, std::sync::mpsc::Receiver<Result<bool>>)>,
    /// For the transaction running: partitions not sent their start marker
    /// yet (a move's partitions that only take rows start when the rows
    /// come, see `Coordinator::start_deferred`). Until then they hold
    /// nothing: they count as released.
    pub deferred: Vec<bool>,
    /// Outcomes of prepared transactions this coordinator still owes
    /// partitions: (partition, transaction, commit) (see `crate::resolve`).
    pub unsettled: Vec<(u32, u64, bool)>,
    /// For the transaction running: the partition count before it brought
    /// partitions in (see [`crate::partitions`]).
    pub joining_from: Option<usize>,
    /// Calls held while this host hands the coordination over (see
    /// `handover.rs`), in the order they came.
    pub held: std::collections::VecDeque<MpTask>,
}

/// What a transaction changes besides data.
#[derive(Default)]
struct Installs {
    schema: Option<Arc<Schema>>,
    hashinator: Option<Arc<Hashinator>>,
    /// Partitions the transaction brought into the order: sites started
    /// here for them (one host), and the count in the order after it (see
    /// [`crate::partitions`]; published before the ring that counts them).
    partitions: Option<crate::partitions::Joined>,
    /// The partitions that stay after a transaction that took the last
    /// ones out of the order (see [`crate::partitions`]).
    left: Option<usize>,
}

impl Coordinator {
    pub fn new(
        shared: Arc<Shared>,
        inbox: Receiver<CoordMsg>,
        replies: Receiver<MpReply>,
        log: Option<Arc<dyn CommandLog>>,
    ) -> Self {
        let hashinator = shared.hashinator.load_full();
        let routes = shared.routes.load_full();
        let active = routes.active;
        Coordinator {
            shared,
            inbox,
            sites: routes.work[..active].to_vec(),
            site_inboxes: routes.sites[..active].to_vec(),
            replies,
            schema_db: Database::new(),
            ids: IdGenerator::new(MP_INITIATOR),
            hashinator,
            batch: Batch::default(),
            log,
            ddl_history: Vec::new(),
            counters: crate::stats::SiteCounters::new(),
            proxies: routes.proxies[..active].to_vec(),
            remote: Vec::new(),
            wrote: Vec::new(),
            released: Vec::new(),
            released_waits: Vec::new(),
            early_prepared: Vec::new(),
            deferred: Vec::new(),
            unsettled: Vec::new(),
            joining_from: None,
            held: Default::default(),
        }
    }

    /// Where partition `p`'s start marker goes in this transaction.
    pub(crate) fn begin_target(&self, p: usize) -> &Sender<SiteMsg> {
        match &self.proxies.get(p) {
            Some(Some((begin, _))) if self.remote[p] => begin,
            _ => &self.site_inboxes[p],
        }
    }

    /// Where partition `p`'s work goes in this transaction.
    pub(crate) fn work_target(&self, p: usize) -> &Sender<MpWork> {
        match &self.proxies.get(p) {
            Some(Some((_, work))) if self.remote[p] => work,
            _ => &self.sites[p],
        }
    }

    pub fn run(mut self) {
        loop {
            let idle = std::time::Instant::now();
            // Owing partitions an outcome, this thread tries again now and
            // then even while no work comes (they wait on it).
            let msg = if self.owes() {
                match self.inbox.recv_timeout(crate::resolve::RETRY_EVERY) {
                    Ok(m) => Some(m),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match self.inbox.recv() {
                    Ok(m) => Some(m),
                    Err(_) => break,
                }
            };
            self.counters.idle += idle.elapsed();
            let caught_up = self.catch_up();
            let Some(msg) = msg else { continue };
            match msg {
                CoordMsg::Invoke(task) => match caught_up {
                    Ok(()) => self.run_or_hold(task),
                    Err(e) => task.sink.deliver(task.handle, Response::failure(e, None)),
                },
                // Everything taken before has run (or is held).
                CoordMsg::HandOver(reply) => drop(reply.send(())),
                // (Not while an outcome is owed: the held calls wait.)
                CoordMsg::ReviewHeld if caught_up.is_ok() => self.review_held(),
                CoordMsg::ReviewHeld => {}
                CoordMsg::Resolve => {}
                CoordMsg::Install(plans) => self.install(plans),
                CoordMsg::LoadCatalog(catalog) => self.load_catalog(catalog),
                CoordMsg::Stats(reply) => {
                    let _ = reply.send(self.counters.snapshot(None, 0, Vec::new()));
                }
                CoordMsg::Shutdown => break,
            }
        }
        self.stop();
    }

    pub(crate) fn run_txn(&mut self, task: MpTask) {
        let started = std::time::Instant::now();
        let ids = match task.replay {
            Some(ids) => {
                self.ids.observe(ids);
                ids
            }
            None => self.ids.issue(),
        };
        if let Some(link) = self.shared.link.clone() {
            if !link.coordinates() {
                // The coordinator moved while this waited: send it there.
                return crate::forwarding::forward_mp(&link, task);
            }
            // Partitions another host's coordinator brought in.
            self.follow_partitions();
            self.remote = (0..self.sites.len()).map(|p| !link.leads(p as u32)).collect();
            // A ring another host's coordinator moved to (this host
            // coordinates since), as the metadata gave it.
            let published = self.shared.hashinator.load_full();
            if published.version() > self.hashinator.version() {
                self.hashinator = published;
            }
        } else {
            self.remote = vec![false; self.sites.len()];
        }
        self.wrote.clear();
        self.wrote.resize(self.sites.len(), false);
        self.deferred.clear();
        self.deferred.resize(self.sites.len(), false);
        if let MpKind::MoveRange { ranges, .. } = &task.kind {
            self.defer_taking(ranges);
        }
        self.released.clone_from(&self.deferred);
        self.released_waits.clear();
        self.early_prepared.clear();
        let marker = || SiteMsg::MpBegin(ids, None, crate::messages::Decider::Coordinator);
        let mut marked = (0..self.sites.len()).filter(|p| !self.deferred[*p]);
        if marked.any(|p| self.begin_target(p).send(marker()).is_err()) {
            // Sites that did get the marker wait for an outcome.
            self.rollback();
            let e = err!(Unavailable, "the host is shutting down");
            return task.sink.deliver(task.handle, Response::failure(e, Some(ids)));
        }
        let functions =
            FunctionContext { now_micros: ids.unique_id.timestamp_micros(), random_seed: ids.random_seed() };
        self.schema_db.set_function_context(functions);
        let mut installs = Installs::default();
        let mut frozen = None;
        let mut batch = std::mem::take(&mut self.batch);
        let (result, app_status, app_status_string) = match &task.kind {
            MpKind::Procedure(routed) => {
                let current = self.current(routed);
                let p = match &current {
                    Ok(p) => p,
                    Err(e) => {
                        self.rollback();
                        self.batch = batch;
                        let log = if task.replay.is_some() { None } else { self.log.clone() };
                        let response = Response::failure(e.clone(), Some(ids));
                        return logging::answer(
                            log.as_ref(),
                            None,
                            Answer { sink: task.sink, handle: task.handle, response },
                        );
                    }
                };
                let mut exec = MpExecutor { coord: self, ids, failed: None };
                let outcome = run_procedure(p, &task.params, &mut exec, &mut batch, ids, None);
                let result = match (outcome.result, exec.failed.take()) {
                    (Ok(t), None) => Ok(t),
                    (Ok(_), Some(e)) | (Err(e), _) => Err(e),
                };
                (result, outcome.app_status, outcome.app_status_string)
            }
            MpKind::Ddl { statements, database } => {
                (self.run_ddl(statements, database, &mut installs), crate::response::APP_STATUS_UNSET, None)
            }
            MpKind::Checksums => {
                (self.per_site(|| WorkItem::Checksum, "CHECKSUM"), crate::response::APP_STATUS_UNSET, None)
            }
            MpKind::ValidatePartitioning => (
                self.per_site(|| WorkItem::ValidatePartitioning, "MISPARTITIONED_ROWS"),
                crate::response::APP_STATUS_UNSET,
                None,
            ),
            MpKind::SetHashinator(h) if h.version() <= self.hashinator.version() => {
                let e = err!(
                    InvalidArgument,
                    "the new hashinator's version {} must be above the current {}",
                    h.version(),
                    self.hashinator.version()
                );
                (Err(e), crate::response::APP_STATUS_UNSET, None)
            }
            // Range-partitioned tables deal their ranges out over the
            // partitions: another count would move every range, and no rows
            // move with a hashinator.
            MpKind::SetHashinator(h)
                if h.partition_count() != self.hashinator.partition_count()
                    && self.schema_db.catalog().tables().any(|t| t.partition_ranges.is_some()) =>
            {
                let e = err!(
                    FeatureNotSupported,
                    "a hashinator over {} partitions instead of {} would move the ranges of range-partitioned tables",
                    h.partition_count(),
                    self.hashinator.partition_count()
                );
                (Err(e), crate::response::APP_STATUS_UNSET, None)
            }
            MpKind::SetHashinator(h) => {
                installs.hashinator = Some(h.clone());
                (Ok(Vec::new()), crate::response::APP_STATUS_UNSET, None)
            }
            MpKind::Snapshot(target) => {
                let result = self.freeze(ids).map(|db| {
                    frozen = Some((target.clone(), db));
                    Vec::new()
                });
                (result, crate::response::APP_STATUS_UNSET, None)
            }
            MpKind::LoadRows { tables, .. } => (self.load_rows(tables), crate::response::APP_STATUS_UNSET, None),
            MpKind::PlaceRows(rows) => (self.place_rows(rows), crate::response::APP_STATUS_UNSET, None),
            MpKind::MoveRange { ranges, keep } => {
                let result = self.move_range(ranges, *keep, ids, &mut installs.hashinator);
                (result, crate::response::APP_STATUS_UNSET, None)
            }
            MpKind::ForgetTokens => (
                self.round((0..self.sites.len()).map(|_| vec![WorkItem::ForgetTokens]).collect()).map(|_| Vec::new()),
                crate::response::APP_STATUS_UNSET,
                None,
            ),
            MpKind::IndexTokens { partitions, rows } => {
                (self.index_tokens(partitions, *rows), crate::response::APP_STATUS_UNSET, None)
            }
            MpKind::AddPartitions(count) => {
                let result = self.add_partitions(*count, ids, &mut installs.hashinator, &mut installs.partitions);
                (result, crate::response::APP_STATUS_UNSET, None)
            }
            MpKind::RemovePartitions(keep) => {
                let result = self.remove_partitions(*keep as usize, &mut installs.hashinator, &mut installs.left);
                (result, crate::response::APP_STATUS_UNSET, None)
            }
        };
        self.batch = batch;
        let log = if task.replay.is_some() { None } else { self.log.clone() };
        // A cluster's transaction commits in two phases (see
        // `crate::participant`): every partition prepares first.
        // Only a transaction that wrote on several partitions can commit
        // on some and not others: one that wrote on one commits in one
        // phase (its outcome unknown, not partial, if that leader dies).
        // A transaction that moves the ring prepares too: its commit point
        // is the ring's record in the cluster metadata (`crate::moverange`).
        let two_phase = self.shared.link.is_some()
            && (self.wrote.iter().filter(|w| **w).count() > 1 || installs.hashinator.is_some());
        let mut ring_unknown = false;
        let (result, in_doubt) = match (result, two_phase) {
            (Ok(tables), true) => match self.prepare_all() {
                (in_doubt, None) => match self.record_ring(installs.hashinator.as_ref(), ids) {
                    Ok(()) => (Ok(tables), in_doubt),
                    Err(e) => {
                        ring_unknown = e.code() == joule_common::ErrorCode::OutcomeUnknown;
                        (Err(e), in_doubt)
                    }
                },
                (in_doubt, Some(e)) => (Err(e), in_doubt),
            },
            // (Partitions told to prepare early may be in doubt.)
            (result, _) => (result, self.early_in_doubt()),
        };
        let mut response = match result {
            Ok(tables) => {
                // Logged before any site commits, so that nothing a site
                // answers afterwards can overtake it in the log.
                if let Some(log) = &log {
                    self.log_committed(log.as_ref(), &task.kind, &task.params, ids);
                }
                let hashinator = installs.hashinator.is_some();
                let confirmed = self.commit(installs);
                let settled = self.settle_unconfirmed(ids, true, &confirmed, &in_doubt);
                // In one phase: every partition that wrote (every one, for
                // a new hashinator) confirmed.
                let everywhere = settled
                    && (two_phase || (0..confirmed.len()).all(|p| confirmed[p] || !(self.wrote[p] || hashinator)));
                if let MpKind::Ddl { statements, database } = &task.kind {
                    self.ddl_history.push((database.clone(), statements.join(";\n")));
                }
                if everywhere {
                    Response::success(tables, ids)
                } else {
                    Response::failure(crate::resolve::unconfirmed(), Some(ids))
                }
            }
            // Whether the metadata took the ring is not known here, and
            // this host no longer coordinates: the next coordinator decides
            // by the metadata (`crate::resolve`).
            Err(e) if ring_unknown => Response::failure(e, Some(ids)),
            // Failed before every partition prepared: rolled back everywhere
            // (those that prepared, until confirmed). No site commits what it
            // did not prepare, so the outcome is known if a host failed.
            Err(e) => {
                if in_doubt.contains(&true) {
                    self.rollback_prepared(ids, &in_doubt);
                } else {
                    self.rollback();
                }
                let e = match e.code() {
                    joule_common::ErrorCode::OutcomeUnknown if self.shared.link.is_some() => {
                        err!(Unavailable, "the transaction was rolled back: {}", e.message())
                    }
                    _ => e,
                };
                Response::failure(e, Some(ids))
            }
        };
        // Partitions a failed transaction was to bring in (rolled back above).
        self.forget_joining();
        response.app_status = app_status;
        response.app_status_string = app_status_string;
        response.cluster_micros = task.accepted.elapsed().as_micros() as u64;
        // (A command log's replay is no call: see `Site::run_sp`.)
        if task.replay.is_none() {
            let _ = self.counters.latency.record(response.cluster_micros.max(1));
        }
        let name = match &task.kind {
            MpKind::Procedure(p) => p.name.as_str(),
            MpKind::Ddl { .. } => "@AdHoc",
            MpKind::Checksums => "@Checksum",
            MpKind::ValidatePartitioning => "@ValidatePartitioning",
            MpKind::SetHashinator(_) => "@SetHashinator",
            MpKind::Snapshot(_) => "@SnapshotSave",
            MpKind::LoadRows { .. } => "@SnapshotRestore",
            MpKind::PlaceRows(_) => "@Recover",
            MpKind::MoveRange { .. } => "@MoveRange",
            MpKind::ForgetTokens => "@ForgetTokens",
            MpKind::IndexTokens { .. } => "@IndexTokens",
            MpKind::AddPartitions(_) => "@AddPartitions",
            MpKind::RemovePartitions(_) => "@RemovePartitions",
        };
        let result_bytes = crate::stats::values_bytes(response.results.iter().flat_map(|t| t.rows.iter().flatten()));
        self.counters.procedure(name).record(
            started.elapsed(),
            crate::site::outcome_of(&response),
            crate::stats::values_bytes(task.params.iter()),
            result_bytes,
        );
        let answer = Answer { sink: task.sink, handle: task.handle, response };
        match frozen {
            // The target answers (at once, or once its files are written).
            Some((target, db)) => target.frozen(db, answer),
            // Published (schema, hashinator) before it is answered.
            None => logging::answer(log.as_ref(), None, answer),
        }
    }

    /// Log a committed multi-partition transaction that may have changed
    /// state: procedures with a writing statement, and DDL.
    fn log_committed(&self, log: &dyn CommandLog, kind: &MpKind, params: &[Value], ids: TxnIds) {
        let record = |database: &str, procedure: &str, sql: Option<&str>, params: &[Value]| {
            let txn = LoggedTxn { ids, partition: None, after_mp: 0, database, procedure, sql, params };
            log.append(&txn, None);
        };
        match kind {
            MpKind::Procedure(p) if p.statements.iter().any(|s| s.planned.writes) => {
                let sql = crate::site::adhoc_sql(p);
                record(&p.database, &p.name, sql.as_deref(), params);
            }
            MpKind::Ddl { statements, database } => record(database, "@AdHoc", Some(&statements.join(";\n")), &[]),
            MpKind::LoadRows { log_as: Some((procedure, params)), .. } => record("", procedure, None, params),
            // Logged without `keep` (it changes how rows are found, not
            // which): a replay keeps nothing it would have to forget.
            MpKind::MoveRange { ranges, .. } => record("", "@MoveRange", None, &crate::moverange::range_values(ranges)),
            // Not logged: reads, and bare hashinator swaps (which no client
            // can request: `@MoveRange` logs itself).
            MpKind::Procedure(_)
            | MpKind::Checksums
            | MpKind::ValidatePartitioning
            | MpKind::SetHashinator(_)
            | MpKind::ForgetTokens
            | MpKind::IndexTokens { .. }
            | MpKind::Snapshot(_)
            | MpKind::PlaceRows(_)
            | MpKind::LoadRows { log_as: None, .. } => {}
            // Refused with a command log (see `crate::partitions`).
            MpKind::AddPartitions(_) | MpKind::RemovePartitions(_) => {}
        }
    }

    /// The procedure as compiled for the current schema: the one routed, or
    /// (after a schema change overtook it) the current multi-partition one
    /// of that name; otherwise the caller is told to retry.
    fn current(&self, p: &Arc<crate::compile::CompiledProcedure>) -> Result<Arc<crate::compile::CompiledProcedure>> {
        if p.catalog_version == self.schema_db.catalog().version {
            return Ok(p.clone());
        }
        let retry = || err!(SchemaChangeConflict, "the schema changed while {} was queued; call it again", p.name);
        if p.name.starts_with('@') {
            return Err(retry());
        }
        match self.shared.schema.load().procedure(&p.name) {
            Some(now) if now.routing.is_none() => Ok(now.clone()),
            Some(_) => Err(retry()),
            None => Err(err!(UndefinedProcedure, "procedure {} was dropped", p.name)),
        }
    }

    /// Commit everywhere; in a cluster, wait until every partition's
    /// replicas have the commit too. Per partition, whether it confirmed.
    fn commit(&mut self, installs: Installs) -> Vec<bool> {
        if self.schema_db.in_transaction() {
            self.schema_db.commit();
        }
        // On one host a commit cannot fail half way: not waited for.
        let cluster = self.shared.link.is_some();
        let mut waits = Vec::with_capacity(if cluster { self.sites.len() } else { 0 });
        for p in (0..self.sites.len()).filter(|p| !self.released[*p]) {
            let done = cluster.then(|| {
                let (done, confirmed) = std::sync::mpsc::channel();
                waits.push((p, confirmed));
                done
            });
            let commit = MpWork::Commit {
                schema: installs.schema.clone(),
                hashinator: installs.hashinator.clone(),
                install: false,
                done,
            };
            let _ = self.work_target(p).send(commit);
            if cluster && waits.len() == 1 && joule_common::failpoint::armed("coordinator-after-first-commit") {
                // One partition committed, the others not told.
                let _ = waits[0].1.recv();
                joule_common::failpoint::crash("coordinator-after-first-commit");
            }
        }
        // Released partitions committed (nothing) before the work.
        waits.append(&mut self.released_waits);
        let mut everywhere = vec![true; self.sites.len()];
        for (p, confirmed) in waits {
            everywhere[p] = confirmed.recv().is_ok();
        }
        if let Some(s) = installs.schema {
            self.shared.schema.store(s);
        }
        if let Some(joined) = installs.partitions {
            self.publish_partitions(joined);
        }
        if let Some(keep) = installs.left {
            self.retire_partitions(keep);
        }
        if let Some(h) = installs.hashinator {
            self.hashinator = h.clone();
            self.shared.hashinator.store(h);
        }
        everywhere
    }

    /// A copy of a partition brought its catalog: take it (when newer).
    fn load_catalog(&mut self, catalog: Arc<joule_sql::catalog::Catalog>) {
        if catalog.version <= self.schema_db.catalog().version {
            return;
        }
        let mut db = Database::new();
        if let Err(e) = db.load_catalog(catalog.clone()) {
            return eprintln!("joule: coordinator: the catalog from the partition's leader does not load: {e}");
        }
        self.schema_db = db;
        let previous = self.shared.schema.load_full();
        match Schema::compile(catalog, &self.shared.registry, Some(&previous.catalog)) {
            Ok(schema) => publish_newer(&self.shared, Arc::new(schema)),
            Err(e) => eprintln!("joule: coordinator: the catalog from the partition's leader does not compile: {e}"),
        }
    }

    /// A schema change made by another host's coordinator reached this
    /// host: apply its DDL plans to this coordinator's copy (if newer) and
    /// publish the new schema here.
    fn install(&mut self, plans: Vec<Arc<joule_sql::planner::Planned>>) {
        // Plans made against the catalog this copy has: applied once.
        let Some(first) = plans.iter().map(|p| p.catalog_version).min() else { return };
        if first != self.schema_db.catalog().version {
            return;
        }
        self.schema_db.begin();
        for planned in &plans {
            if let Err(e) = self.schema_db.execute_planned(planned, &[]) {
                eprintln!("joule: coordinator: a schema change from another host does not apply here: {e}");
                let _ = self.schema_db.rollback();
                return;
            }
        }
        self.schema_db.commit();
        let previous = self.shared.schema.load_full();
        match Schema::compile(self.schema_db.catalog_arc().clone(), &self.shared.registry, Some(&previous.catalog)) {
            Ok(schema) => publish_newer(&self.shared, Arc::new(schema)),
            Err(e) => eprintln!("joule: coordinator: the schema from another host does not compile here: {e}"),
        }
    }

    /// Send each site its items (sites with none are not asked) and gather
    /// the results, by site. The first error any site reports wins.
    pub(crate) fn round(&mut self, per_site: Vec<Vec<WorkItem>>) -> Result<Vec<Vec<ItemResult>>> {
        self.round_then_prepare(per_site, &[])
    }

    /// [`Self::round`], and on a cluster each site asked whose entry in
    /// `prepare` is true is told to prepare right behind its items (its last
    /// round): it ships its writes to its replicas before it runs them
    /// (`MpWork::Round`'s `ahead`), and [`Self::prepare_all`] collects its answer.
    pub(crate) fn round_then_prepare(
        &mut self,
        mut per_site: Vec<Vec<WorkItem>>,
        prepare: &[bool],
    ) -> Result<Vec<Vec<ItemResult>>> {
        let mut asked = 0;
        let mut first_error: Option<Error> = None;
        for (site, items) in per_site.iter_mut().enumerate() {
            if !items.is_empty() {
                self.wrote[site] |= items.iter().any(WorkItem::writes);
                let early = prepare.get(site) == Some(&true) && self.shared.link.is_some();
                let (work, items) = (self.work_target(site), std::mem::take(items));
                match work.send(MpWork::Round { items, reply: None, ahead: early.then(|| work.clone()) }) {
                    Ok(()) if early => {
                        asked += 1;
                        self.prepare_early(site);
                    }
                    Ok(()) => asked += 1,
                    Err(_) => {
                        first_error.get_or_insert(err!(Unavailable, "partition {site} is gone (shutting down)"));
                    }
                }
            }
        }
        // Every site asked answers before the next round, so replies never
        // carry over from one round to another.
        let mut results: Vec<Vec<ItemResult>> = (0..self.sites.len()).map(|_| Vec::new()).collect();
        for _ in 0..asked {
            let reply = recv_soon(&self.replies, IN_TRANSACTION)
                .map_err(|_| err!(Unavailable, "a partition stopped mid-transaction"))?;
            match reply.results {
                Ok(r) => results[reply.partition as usize] = r,
                // One told to prepare stays among the early prepares: its
                // replicas may hold its writes (`early_in_doubt`).
                Err(e) => _ = first_error.get_or_insert(e),
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(results),
        }
    }

    /// One item to every site; one result table of (partition, table, value).
    fn per_site(&mut self, make: fn() -> WorkItem, value_name: &str) -> Result<Vec<ResultTable>> {
        let results = self.round((0..self.sites.len()).map(|_| vec![make()]).collect())?;
        let mut rows = Vec::new();
        for (p, r) in results.into_iter().enumerate() {
            for item in r {
                if let ItemResult::Tables(t) = item {
                    for (table, v) in t {
                        rows.push(vec![Value::Integer(p as i64), Value::String(table), Value::Integer(v as i64)]);
                    }
                }
            }
        }
        let col = |name: &str, t| joule_sql::plan::OutputColumn { name: name.to_string(), data_type: Some(t) };
        let columns = vec![
            col("PARTITION_ID", DataType::Integer),
            col("TABLE_NAME", DataType::Varchar),
            col(value_name, DataType::BigInt),
        ];
        Ok(vec![ResultTable::new(columns.into(), rows)])
    }

    /// Plan and apply DDL statements on every site; compile the resulting
    /// schema before anything commits.
    fn run_ddl(&mut self, statements: &[String], database: &str, installs: &mut Installs) -> Result<Vec<ResultTable>> {
        self.schema_db.begin();
        let mut results = Vec::new();
        for sql in statements {
            let stmt = joule_sql::parser::parse_single(sql)?;
            let planned = Arc::new(joule_sql::planner::plan(&stmt, self.schema_db.catalog(), database)?);
            if !matches!(planned.kind, PlannedKind::Ddl(_)) {
                bail!(FeatureNotSupported, "DDL and other statements cannot be mixed in one call: {sql}");
            }
            let replaced = crate::moverange::replaced_table(&planned, self.schema_db.catalog(), self.sites.len())?;
            self.schema_db.execute_planned(&planned, &[])?;
            let params: Arc<[Value]> = Arc::from(Vec::new());
            let items = (0..self.sites.len())
                .map(|_| vec![WorkItem::Execute { planned: planned.clone(), params: params.clone() }])
                .collect();
            self.round(items)?;
            if let Some(table) = replaced {
                self.replace_ranges(&table)?;
            }
            results.push(ResultTable::from_exec(ExecResult::Done));
        }
        let previous = self.shared.schema.load_full();
        let schema =
            Schema::compile(self.schema_db.catalog_arc().clone(), &self.shared.registry, Some(&previous.catalog))?;
        installs.schema = Some(Arc::new(schema));
        Ok(results)
    }
}

/// Publish `schema` to this host's initiators unless a newer one is
/// published already (sites and the coordinator may race to publish a
/// schema change from another host; it never moves back).
pub(crate) fn publish_newer(shared: &Shared, schema: Arc<Schema>) {
    shared.schema.rcu(|current| if current.version() >= schema.version() { current.clone() } else { schema.clone() });
}

/// Where a statement's result comes from once its round has run.
enum Pending {
    /// Item `index` of site `site`.
    One { site: usize, index: usize },
    /// The same item on several sites: counts add up (or, for a replicated
    /// table, every copy reports the same count).
    Broadcast { at: Vec<(usize, usize)>, replicated: bool },
    /// Fragments of a distributed read: per fragment, (site, index) pairs.
    Read { statement: Arc<CompiledStatement>, at: Vec<Vec<(usize, usize)>>, params: Arc<[Value]> },
}

/// Runs a multi-partition transaction's batches through the sites.
struct MpExecutor<'a> {
    coord: &'a mut Coordinator,
    ids: TxnIds,
    failed: Option<Error>,
}

impl MpExecutor<'_> {
    fn sites(&self) -> usize {
        self.coord.sites.len()
    }

    /// Any one partition, for replicated reads (spread by transaction).
    fn any_site(&self) -> usize {
        (self.ids.txn_id.sequence() % self.sites() as u64) as usize
    }

    fn push(per_site: &mut [Vec<WorkItem>], site: usize, item: WorkItem) -> (usize, usize) {
        per_site[site].push(item);
        (site, per_site[site].len() - 1)
    }

    /// The partitions a statement for every partition runs on: all, or
    /// those a range pruning leaves.
    fn targets(&self, prune: Option<&crate::prune::RangePrune>, params: &[Value]) -> Vec<usize> {
        match prune {
            Some(prune) => prune
                .partitions(params, self.coord.hashinator.partition_count())
                .into_iter()
                .filter(|s| *s < self.sites())
                .collect(),
            None => (0..self.sites()).collect(),
        }
    }

    /// Queue a distributed read's fragments.
    fn push_fragments(
        &self,
        per_site: &mut [Vec<WorkItem>],
        statement: &Arc<CompiledStatement>,
        query: &DistQuery,
        params: &Arc<[Value]>,
    ) -> Vec<Vec<(usize, usize)>> {
        let any = self.any_site();
        query
            .fragments
            .iter()
            .enumerate()
            .map(|(f, frag)| {
                let targets = if frag.everywhere { self.targets(frag.prune.as_ref(), params) } else { vec![any] };
                targets
                    .into_iter()
                    .map(|s| {
                        let item =
                            WorkItem::Fragment { statement: statement.clone(), fragment: f, params: params.clone() };
                        Self::push(per_site, s, item)
                    })
                    .collect()
            })
            .collect()
    }

    /// Combine a read's fragment results into its rows.
    fn combine(&mut self, query: &DistQuery, inputs: Vec<Vec<Row>>, params: &[Value]) -> Result<Vec<Row>> {
        match &query.combine {
            Combine::Concat => Ok(inputs.into_iter().next().unwrap_or_default()),
            Combine::Plan(plan) => self.coord.schema_db.query(plan, params, &inputs),
            Combine::Gather { tables, plan } => {
                let catalog = self.coord.schema_db.catalog_arc().clone();
                let mut scratch = Storage::new();
                for (id, rows) in tables.iter().zip(inputs) {
                    let def = catalog.table_by_id(*id).ok_or_else(|| err!(Internal, "table #{id} missing"))?;
                    // Keys unique per partition need not be unique across them.
                    let mut loose = (**def).clone();
                    for i in &mut loose.indexes {
                        i.unique = false;
                        i.assume_unique = false;
                        i.primary_key = false;
                    }
                    let rows = match (&def.view, def.partition_column, catalog.is_partitioned(def)) {
                        (Some(v), None, true) => reaggregate(v, rows)?,
                        _ => rows,
                    };
                    let mut table = Table::new(Arc::new(loose));
                    for r in rows {
                        table.insert(r)?;
                    }
                    scratch.put_table(table);
                }
                let functions = FunctionContext {
                    now_micros: self.ids.unique_id.timestamp_micros(),
                    random_seed: self.ids.random_seed(),
                };
                let ctx = Context { storage: &scratch, params, outer: None, functions, inputs: &[] };
                exec::collect(plan, &ctx)
            }
        }
    }

    /// Gather the rows of fragments from a round's results.
    fn take_inputs(results: &mut [Vec<ItemResult>], at: &[Vec<(usize, usize)>]) -> Result<Vec<Vec<Row>>> {
        at.iter()
            .map(|places| {
                let mut rows = Vec::new();
                for &(s, i) in places {
                    match std::mem::replace(&mut results[s][i], ItemResult::Rows(Vec::new())) {
                        ItemResult::Rows(r) => rows.extend(r),
                        other => bail!(Internal, "fragment answered {other:?}"),
                    }
                }
                Ok(rows)
            })
            .collect()
    }

    fn exec_result(results: &mut [Vec<ItemResult>], s: usize, i: usize) -> Result<ExecResult> {
        match std::mem::replace(&mut results[s][i], ItemResult::Rows(Vec::new())) {
            ItemResult::Exec(r) => Ok(r),
            other => bail!(Internal, "statement answered {other:?}"),
        }
    }

    /// Run a round (if anything is queued), resolve its pending statements
    /// into `out`, and return the results for items no statement claimed.
    fn flush(
        &mut self,
        per_site: &mut Vec<Vec<WorkItem>>,
        pending: &mut Vec<(usize, Pending)>,
        out: &mut [Option<ResultTable>],
    ) -> Result<Vec<Vec<ItemResult>>> {
        let n = self.sites();
        if per_site.iter().all(Vec::is_empty) {
            return Ok((0..n).map(|_| Vec::new()).collect());
        }
        let mut results = self.coord.round(std::mem::replace(per_site, (0..n).map(|_| Vec::new()).collect()))?;
        for (slot, p) in pending.drain(..) {
            let table = match p {
                Pending::One { site, index } => ResultTable::from_exec(Self::exec_result(&mut results, site, index)?),
                Pending::Broadcast { at, replicated } => {
                    let mut total = 0u64;
                    let mut first = None;
                    for (s, i) in at {
                        match Self::exec_result(&mut results, s, i)? {
                            ExecResult::Modified(m) if replicated => {
                                first.get_or_insert(m);
                            }
                            ExecResult::Modified(m) => total += m,
                            other => {
                                first.get_or_insert(0);
                                let _ = other;
                            }
                        }
                    }
                    ResultTable::from_exec(ExecResult::Modified(if replicated { first.unwrap_or(0) } else { total }))
                }
                Pending::Read { statement, at, params } => {
                    let inputs = Self::take_inputs(&mut results, &at)?;
                    let query = match &statement.mp {
                        Some(MpStatement::Read(q)) => q,
                        _ => bail!(Internal, "read without a distributed plan"),
                    };
                    let rows = self.combine(query, inputs, &params)?;
                    let PlannedKind::Query(q) = &statement.planned.kind else {
                        bail!(Internal, "read of a statement that is not a query");
                    };
                    ResultTable::new(q.columns.clone(), rows)
                }
            };
            out[slot] = Some(table);
        }
        Ok(results)
    }

    fn run_batch(&mut self, statements: &[Arc<CompiledStatement>], batch: BatchRef<'_>) -> Result<Vec<ResultTable>> {
        let n = self.sites();
        let mut per_site: Vec<Vec<WorkItem>> = (0..n).map(|_| Vec::new()).collect();
        let mut pending: Vec<(usize, Pending)> = Vec::new();
        let mut out: Vec<Option<ResultTable>> = (0..batch.len()).map(|_| None).collect();
        for (slot, (i, params)) in batch.iter().enumerate() {
            let statement = &statements[i];
            let params: Arc<[Value]> = Arc::from(params);
            let Some(mp) = &statement.mp else {
                bail!(Internal, "statement {} was not planned for multi-partition execution", statement.sql);
            };
            match mp {
                MpStatement::Pinned => {
                    let Partitioning::Single(key, route) = &statement.planned.partitioning else {
                        bail!(Internal, "pinned statement without a partition key");
                    };
                    let site = pinned_partition(&self.coord.hashinator, key, route, &params)?
                        .ok_or_else(|| err!(Internal, "the partition key of {} cannot be computed", statement.sql))?
                        as usize;
                    let (site, index) = Self::push(
                        &mut per_site,
                        site,
                        WorkItem::Execute { planned: statement.planned.clone(), params },
                    );
                    pending.push((slot, Pending::One { site, index }));
                }
                MpStatement::Local => {
                    let site = self.any_site();
                    let (site, index) = Self::push(
                        &mut per_site,
                        site,
                        WorkItem::Execute { planned: statement.planned.clone(), params },
                    );
                    pending.push((slot, Pending::One { site, index }));
                }
                MpStatement::Broadcast { planned, replicated, prune } => {
                    let at = self
                        .targets(prune.as_ref(), &params)
                        .into_iter()
                        .map(|s| {
                            let item = WorkItem::Execute { planned: planned.clone(), params: params.clone() };
                            Self::push(&mut per_site, s, item)
                        })
                        .collect();
                    pending.push((slot, Pending::Broadcast { at, replicated: *replicated }));
                }
                MpStatement::Read(query) => {
                    let at = self.push_fragments(&mut per_site, statement, query, &params);
                    pending.push((slot, Pending::Read { statement: statement.clone(), at, params }));
                }
                MpStatement::Insert { source, planned, route } => {
                    // Compute the rows first (their round also runs what
                    // was queued before), then send each site its rows.
                    let at = self.push_fragments(&mut per_site, statement, source, &params);
                    let mut results = self.flush(&mut per_site, &mut pending, &mut out)?;
                    let inputs = Self::take_inputs(&mut results, &at)?;
                    let rows = self.combine(source, inputs, &params)?;
                    let mut by_site: BTreeMap<usize, Vec<Row>> = BTreeMap::new();
                    match route {
                        Some((pos, route)) => {
                            for row in rows {
                                let site = route.partition(&row[*pos], &self.coord.hashinator)? as usize;
                                by_site.entry(site).or_default().push(row);
                            }
                        }
                        None => {
                            for s in 0..n {
                                by_site.insert(s, rows.clone());
                            }
                        }
                    }
                    let at = by_site
                        .into_iter()
                        .map(|(s, rows)| {
                            Self::push(&mut per_site, s, WorkItem::InsertRows { planned: planned.clone(), rows })
                        })
                        .collect::<Vec<_>>();
                    if at.is_empty() {
                        out[slot] = Some(ResultTable::from_exec(ExecResult::Modified(0)));
                    } else {
                        pending.push((slot, Pending::Broadcast { at, replicated: route.is_none() }));
                    }
                }
            }
        }
        self.flush(&mut per_site, &mut pending, &mut out)?;
        out.into_iter().map(|t| t.ok_or_else(|| err!(Internal, "a statement produced no result"))).collect()
    }
}

impl BatchExecutor for MpExecutor<'_> {
    fn execute(&mut self, statements: &[Arc<CompiledStatement>], batch: BatchRef<'_>) -> Result<Vec<ResultTable>> {
        if let Some(e) = &self.failed {
            return Err(e.clone().context("the transaction already failed"));
        }
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        self.run_batch(statements, batch).inspect_err(|e| {
            self.failed = Some(e.clone());
        })
    }
}
