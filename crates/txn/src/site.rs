//! A site: the one thread that owns a partition.
//!
//! The site holds its partition's [`Database`] (tables, indexes, undo log)
//! and runs transactions one at a time, to completion, with no locks: a
//! single-partition invocation from its inbox runs entirely here; a
//! multi-partition transaction's marker makes the site serve the
//! coordinator's rounds until it commits or rolls back (see
//! [`crate::messages`]).
//!
//! The site is also its partition's initiator: it gives each
//! single-partition transaction its ids as the transaction starts (or takes
//! the recorded ones during replay), and sets the engine's function context
//! from them, so `NOW()` and random functions depend only on the ids.
//!
//! Routing guards: an invocation routed with an older hashinator is checked
//! against the current one and forwarded if its key moved; a statement
//! pinned to a key another partition owns fails with `Mispartitioned`, and
//! so does any row written here whose key another partition owns (checked
//! by the engine through [`PartitionOwner`]).

use crate::compile::{CompiledProcedure, CompiledStatement, Schema};
use crate::distribute::MpStatement;
use crate::hashinator::Hashinator;
use crate::ids::{IdGenerator, TxnIds};
use crate::logging::{Answer, CommandLog, LoggedTxn};
use crate::messages::{
    recv_soon, CoordMsg, ItemResult, MpReply, MpWork, SiteMsg, SpTask, WorkItem, AFTER_MULTI_PARTITION,
    AFTER_SINGLE_PARTITION,
};
use crate::procedure::{run_procedure, Batch, BatchExecutor, BatchRef};
use crate::remote::{append_frame, ClusterLink, SpDisposition, SpRecord};
use crate::response::{Response, ResultTable};
use crate::snapshot::{FrozenPartition, FrozenTable};
use crate::stats::{values_bytes, Outcome, SiteCounters, SiteStats, TableStats};
use joule_common::{bail, err, Result, Value};
use joule_engine::{Database, PartitionOwner};
use joule_sql::catalog::{KeyRoute, TableDef};
use joule_sql::expr::Expr;
use joule_sql::functions::FunctionContext;
use joule_sql::plan::Partitioning;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;

pub use joule_sql::catalog::partition_key;

/// The partition a statement pinned by `key` (a constant or parameter)
/// must run on.
pub(crate) fn pinned_partition(
    hashinator: &Hashinator,
    key: &Expr,
    route: &KeyRoute,
    params: &[Value],
) -> Result<Option<u32>> {
    let owned;
    let v = match key {
        Expr::Constant(v) => v,
        Expr::Parameter(i) => params.get(*i).ok_or_else(|| err!(WrongParameterCount, "parameter {i} is missing"))?,
        // `id = 1 + 1`, `id = CAST(? AS BIGINT)`: computed once here.
        e if e.is_constant() => {
            owned = joule_engine::eval::eval_constant(e, params)?;
            &owned
        }
        _ => return Ok(None),
    };
    Ok(Some(route.partition(v, hashinator)?))
}

/// The engine's guard: rows written here must hash here.
struct Owner {
    partition: u32,
    hashinator: Arc<Hashinator>,
}

impl PartitionOwner for Owner {
    fn check(&self, table: &TableDef, column: usize, key: &Value) -> Result<()> {
        let owner = table.partition_of(key, &self.hashinator)?;
        if owner != self.partition {
            bail!(
                Mispartitioned,
                "mispartitioned: a row of {} with {} = {key} belongs to partition {owner}, but this transaction runs on partition {}",
                table.name,
                table.columns[column].name,
                self.partition
            );
        }
        Ok(())
    }
}

pub(crate) struct Site {
    pub partition: u32,
    pub db: Database,
    pub ids: IdGenerator,
    pub hashinator: Arc<Hashinator>,
    /// The ring the multi-partition transaction under way moves ranges to
    /// (from its `Evict` and `Admit` items): installed if it commits. So a
    /// replica, and a leader on another host than the coordinator, take
    /// the next ring at the same point of their stream as the rows.
    pub next_ring: Option<Arc<Hashinator>>,
    pub schema: Arc<Schema>,
    pub inbox: Receiver<SiteMsg>,
    pub mp_inbox: Receiver<MpWork>,
    pub mp_reply: Sender<MpReply>,
    pub batch: Batch,
    /// Where committed changes are logged (none: no command log).
    pub log: Option<Arc<dyn CommandLog>>,
    /// The id of the last multi-partition transaction started here.
    pub last_mp: u64,
    /// Frames encoded and not yet handed to the log, and the answers
    /// waiting on them (see [`CommandLog`]).
    pub log_frames: Vec<u8>,
    pub log_answers: Vec<Answer>,
    /// When the oldest batched frame or answer was batched.
    pub log_since: Option<std::time::Instant>,
    /// This site's statistics (see [`crate::stats`]).
    pub counters: SiteCounters,
    /// Per site: invocations sent to it and not yet taken (senders add,
    /// the site takes away).
    pub depths: Arc<[std::sync::atomic::AtomicU64]>,
    /// The last transaction was multi-partition (another usually follows:
    /// wait for it longer before sleeping).
    pub after_mp: bool,
    /// In a cluster: the other hosts (this site's replicas among them).
    pub link: Option<Arc<dyn ClusterLink>>,
    /// Replication records batched and not yet shipped (with the answers
    /// waiting in `log_answers`).
    pub repl_records: Vec<u8>,
    /// Single-partition calls waiting while this host hands the partition
    /// over (see `handover.rs`), in the order they came.
    pub held: std::collections::VecDeque<SpTask>,
    /// This host's coordinator (told of schema changes from other hosts).
    pub coordinator: Sender<CoordMsg>,
    /// What this host's initiators share (the published schema).
    pub shared: std::sync::Weak<crate::host::Shared>,
}

/// Hand the log what is batched once it is this large, holds this many
/// answers, or is this old — whichever comes first (and whenever the inbox
/// runs empty). The age bound keeps a busy site from holding answers or
/// asynchronous-mode records back.
const LOG_BATCH_BYTES: usize = 256 << 10;
const LOG_BATCH_ANSWERS: usize = 2048;
const LOG_BATCH_AGE: std::time::Duration = std::time::Duration::from_millis(1);

impl Site {
    /// The site's loop: until shutdown or until every sender is gone.
    pub fn run(mut self) {
        self.install_owner();
        loop {
            let msg = match self.inbox.try_recv() {
                Ok(m) => m,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    // Idle: what is batched goes to the log now.
                    self.flush_log();
                    let idle = std::time::Instant::now();
                    let patience = if self.after_mp { AFTER_MULTI_PARTITION } else { AFTER_SINGLE_PARTITION };
                    let m = recv_soon(&self.inbox, patience);
                    self.counters.idle += idle.elapsed();
                    match m {
                        Ok(m) => m,
                        Err(_) => break,
                    }
                }
            };
            match msg {
                SiteMsg::Sp(task) => {
                    self.after_mp = false;
                    self.depths[self.partition as usize].fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                    if !self.held.is_empty() {
                        // Behind the calls held while the partition was
                        // handed over, wherever they go now.
                        self.held.push_back(task);
                        self.review_held();
                        continue;
                    }
                    match self.link.as_ref().map(|l| (l, l.sp_disposition(self.partition))) {
                        // The partition's leadership moved to another host
                        // while the call waited here (this host handed it
                        // over on leaving the cluster, or was deposed): the
                        // leader runs it, as it would have had the call come
                        // a moment later.
                        Some((link, SpDisposition::Forward)) => {
                            crate::forwarding::forward_sp(link, self.partition, task)
                        }
                        // Handing the partition over: the call waits for
                        // its new leader.
                        Some((_, SpDisposition::Hold)) => self.hold(task),
                        _ => self.run_sp(task),
                    }
                }
                SiteMsg::Stats(reply) => {
                    let _ = reply.send(self.stats());
                }
                SiteMsg::Replay(r) => {
                    self.after_mp = false;
                    self.replay(r)
                }
                SiteMsg::Checksums(reply) => {
                    let _ = reply.send((self.partition, self.db.table_checksums()));
                }
                SiteMsg::Rejoin { host, reply } => {
                    let _ = reply.send(self.hand_copy(host));
                }
                SiteMsg::CompactLog { via_shipper } => self.compact_log(via_shipper),
                SiteMsg::HandOver(reply) => self.hand_over(reply),
                SiteMsg::ReviewHeld => self.review_held(),
                SiteMsg::Load { catalog, ring, table, rows, last_ids, done } => {
                    let _ = done.send(self.load_copy(catalog, ring, table, rows, last_ids));
                }
                SiteMsg::MpBegin(ids, work, by) => {
                    self.after_mp = true;
                    self.run_mp(ids, work, by)
                }
                SiteMsg::Shutdown => break,
            }
        }
        self.flush_log();
        // Whatever was held or arrived after the shutdown is answered, not
        // dropped.
        let held = std::mem::take(&mut self.held);
        let queued = std::iter::from_fn(|| self.inbox.try_recv().ok()).filter_map(|msg| match msg {
            SiteMsg::Sp(t) => Some(t),
            _ => None,
        });
        for t in held.into_iter().chain(queued) {
            t.sink.deliver(t.handle, Response::failure(err!(Unavailable, "the host is shutting down"), None));
        }
    }

    /// An `Evict` or `Admit` item moves ranges to `ring`.
    fn note_next_ring(&mut self, ring: &Arc<Hashinator>) {
        if ring.version() > self.hashinator.version() {
            self.next_ring = Some(ring.clone());
        }
    }

    /// Take `ring` (newer than this site's), and publish it to this host's
    /// routing unless it has it or a newer one: a cluster's partition on
    /// another host than the coordinator learns it here, from the
    /// transaction that moved the range, or from the metadata.
    pub(crate) fn install_ring(&mut self, ring: Arc<Hashinator>) {
        if ring.version() <= self.hashinator.version() {
            return;
        }
        self.hashinator = ring;
        self.install_owner();
        if let Some(shared) = self.shared.upgrade() {
            let ring = self.hashinator.clone();
            shared.hashinator.rcu(|now| if now.version() >= ring.version() { now.clone() } else { ring.clone() });
        }
    }

    pub(crate) fn install_owner(&mut self) {
        let owner = Owner { partition: self.partition, hashinator: self.hashinator.clone() };
        self.db.set_partition_owner(Some(Arc::new(owner)));
    }

    pub(crate) fn run_sp(&mut self, task: SpTask) {
        if task.hash_version != self.hashinator.version() {
            if task.hash_version > self.hashinator.version() && task.replay.is_none() {
                // Routed with a ring this site has not taken: in a cluster,
                // a partition the move left alone hears of it from the
                // metadata (its own tokens are the same in both).
                if let Some(ring) = self.shared.upgrade().map(|s| s.hashinator.load_full()) {
                    self.install_ring(ring);
                }
            }
            // Routed before the hashinator changed: the key may live elsewhere now.
            let target = match self.reroute(&task) {
                Ok(target) => target,
                Err(e) => return task.sink.deliver(task.handle, Response::failure(e, None)),
            };
            if let Some(target) = target {
                if target != self.partition {
                    // Another site's (on another host, in a cluster, if
                    // another leads it).
                    let task = SpTask { hash_version: self.hashinator.version(), ..task };
                    match self.shared.upgrade() {
                        Some(shared) => crate::host::dispatch_sp(&shared, target as usize, task),
                        None => task.sink.deliver(
                            task.handle,
                            Response::failure(err!(Unavailable, "the host is shutting down"), None),
                        ),
                    }
                    return;
                }
            }
        }
        let ids = match task.replay {
            Some(ids) => {
                self.ids.observe(ids);
                ids
            }
            None => self.ids.issue(),
        };
        let procedure = match self.current(&task.procedure, &task.params) {
            Ok(p) => p,
            Err(e) => {
                let answer = Answer { sink: task.sink, handle: task.handle, response: Response::failure(e, Some(ids)) };
                if task.replay.is_none() && self.holds_answers() {
                    return self.log_answers.push(answer);
                }
                return answer.deliver();
            }
        };
        self.db.set_function_context(FunctionContext {
            now_micros: ids.unique_id.timestamp_micros(),
            random_seed: ids.random_seed(),
        });
        let started = std::time::Instant::now();
        // A call's latency and queueing are its caller's: work replayed
        // (a replica applying its leader's writes, a command log's
        // recovery) is no call, and counted in them it would make the
        // calls' p99 look lower than it is (the auto-scaler and a
        // rebalance steer by it).
        let call = task.replay.is_none();
        // (Read once: an attached log may begin to hold answers.)
        let holds_answers = self.holds_answers();
        if call {
            let _ = self.counters.queue_wait.record(started.duration_since(task.accepted).as_micros() as u64);
        }
        self.db.begin();
        let mut exec =
            SiteExecutor { db: &mut self.db, partition: self.partition, hashinator: &self.hashinator, failed: None };
        let outcome = run_procedure(&procedure, &task.params, &mut exec, &mut self.batch, ids, Some(self.partition));
        let failed = exec.failed.take();
        let mut changed = false;
        let result = match (outcome.result, failed) {
            (Ok(tables), None) => {
                changed = self.db.has_changes();
                self.db.commit();
                Ok(tables)
            }
            // A failed statement dooms the transaction even if the
            // procedure went on.
            (Ok(_), Some(e)) | (Err(e), _) => {
                if let Err(r) = self.db.rollback() {
                    Err(err!(Internal, "rollback failed after \"{e}\": {r}"))
                } else {
                    Err(e)
                }
            }
        };
        let mut response = match result {
            Ok(tables) => Response::success(tables, ids),
            Err(e) => Response::failure(e, Some(ids)),
        };
        response.app_status = outcome.app_status;
        response.app_status_string = outcome.app_status_string;
        response.cluster_micros = task.accepted.elapsed().as_micros() as u64;
        // A held answer's latency is taken when it is released (see
        // `crate::stats`).
        if call && !holds_answers {
            let _ = self.counters.latency.record(response.cluster_micros.max(1));
        }
        let result_bytes = values_bytes(response.results.iter().flat_map(|t| t.rows.iter().flatten()));
        self.counters.procedure(&procedure.name).record(
            started.elapsed(),
            outcome_of(&response),
            values_bytes(task.params.iter()),
            result_bytes,
        );
        let answer = Answer { sink: task.sink, handle: task.handle, response };
        if task.replay.is_some() {
            return answer.deliver();
        }
        if !holds_answers && self.log.is_none() {
            return answer.deliver();
        }
        if changed {
            let sql = adhoc_sql(&procedure);
            if let Some(log) = self.log.as_deref() {
                let txn = LoggedTxn {
                    ids,
                    partition: Some(self.partition),
                    after_mp: self.last_mp,
                    database: &procedure.database,
                    procedure: &procedure.name,
                    sql: sql.as_deref(),
                    params: &task.params,
                };
                log.encode(&txn, &mut self.log_frames);
            }
            if self.link.is_some() {
                let record = SpRecord::Sp {
                    ids,
                    database: &procedure.database,
                    procedure: &procedure.name,
                    sql: sql.as_deref(),
                    params: &task.params,
                };
                if let Err(e) = append_frame(&record, &mut self.repl_records) {
                    eprintln!("joule: partition {}: {e}", self.partition);
                }
            }
        }
        if holds_answers {
            self.log_answers.push(answer);
            self.counters.unreleased.push(task.accepted);
        } else {
            answer.deliver();
        }
        if self.log_frames.is_empty() && self.log_answers.is_empty() && self.repl_records.is_empty() {
            return;
        }
        let since = *self.log_since.get_or_insert_with(std::time::Instant::now);
        if self.log_frames.len() + self.repl_records.len() >= LOG_BATCH_BYTES
            || self.log_answers.len() >= LOG_BATCH_ANSWERS
            || since.elapsed() >= LOG_BATCH_AGE
        {
            self.flush_log();
        }
    }

    /// Whether answers wait (for the command log's fsync, or for the
    /// partition's replicas) instead of going out at once.
    fn holds_answers(&self) -> bool {
        self.link.is_some() || self.log.as_ref().is_some_and(|l| l.holds_answers())
    }

    /// Hand the batched frames and answers to the log — and in a cluster
    /// the records to the partition's replicas, the answers going out once
    /// the replicas have applied everything before them (and, with a
    /// synchronous log, once it is durable here).
    pub(crate) fn flush_log(&mut self) {
        self.log_since = None;
        if self.log_frames.is_empty() && self.log_answers.is_empty() && self.repl_records.is_empty() {
            return;
        }
        let frames = std::mem::replace(&mut self.log_frames, Vec::with_capacity(4096));
        let mut answers = std::mem::take(&mut self.log_answers);
        answers.extend(self.counters.release_clock());
        match &self.link {
            Some(link) => {
                if let Some(log) = &self.log {
                    if !frames.is_empty() {
                        log.submit(frames, Vec::new());
                    }
                }
                let records = std::mem::take(&mut self.repl_records);
                let log = self.log.clone();
                link.replicate(
                    self.partition,
                    records,
                    Box::new(move || {
                        for a in answers {
                            match &log {
                                Some(l) if l.holds_answers() => l.after_durable(a),
                                _ => a.deliver(),
                            }
                        }
                    }),
                );
            }
            None => match &self.log {
                Some(log) => log.submit(frames, answers),
                None => answers.into_iter().for_each(Answer::deliver),
            },
        }
    }

    /// The partition an invocation belongs to under this site's ring: a
    /// procedure's by its key; ad hoc statements' by the keys that pin
    /// them (`None`: nothing pins it — a replicated read runs anywhere).
    /// Ad hoc statements that pinned one partition under the ring they were
    /// routed by may pin several under this one: that is an error, and the
    /// call, made again, runs as a multi-partition transaction.
    fn reroute(&self, task: &SpTask) -> Result<Option<u32>> {
        let procedure = &task.procedure;
        if let Some(r) = procedure.routing.as_ref() {
            return Ok(task.params.get(r.parameter).and_then(|k| r.key.partition(k, &self.hashinator).ok()));
        }
        if !matches!(procedure.code, crate::compile::ProcedureCode::Statements) {
            return Ok(None);
        }
        let mut target: Option<u32> = None;
        let mut offset = 0;
        for s in &procedure.statements {
            let params = task.params.get(offset..offset + s.planned.param_count).unwrap_or_default();
            offset += s.planned.param_count;
            let Partitioning::Single(key, route) = &s.planned.partitioning else { continue };
            let Ok(Some(owner)) = pinned_partition(&self.hashinator, key, route, params) else { continue };
            match target {
                Some(t) if t != owner => bail!(
                    Mispartitioned,
                    "the hashinator changed while this call was in flight, and its statements now belong to \
                     partitions {t} and {owner}: call it again (it will run as a multi-partition transaction)"
                ),
                _ => target = Some(owner),
            }
        }
        Ok(target)
    }

    /// The procedure as compiled for this site's schema: the one routed, or
    /// (after a schema change overtook it) the current one of that name —
    /// but only if that one is still single-partition and its key still
    /// belongs here. Otherwise the caller is told to retry.
    fn current(&mut self, p: &Arc<CompiledProcedure>, params: &[Value]) -> Result<Arc<CompiledProcedure>> {
        if p.catalog_version == self.db.catalog().version {
            return Ok(p.clone());
        }
        // A schema change from another host is published by this host's
        // coordinator after the site committed it.
        if let Some(shared) = self.shared.upgrade() {
            let published = shared.schema.load_full();
            if published.version() > self.schema.version() {
                self.schema = published;
            }
        }
        let retry = || err!(SchemaChangeConflict, "the schema changed while {} was queued; call it again", p.name);
        if p.name.starts_with('@') {
            return Err(retry());
        }
        let Some(now) = self.schema.procedure(&p.name) else {
            bail!(UndefinedProcedure, "procedure {} was dropped", p.name);
        };
        let Some(routing) = &now.routing else { return Err(retry()) };
        let key = params.get(routing.parameter).ok_or_else(retry)?;
        if routing.key.partition(key, &self.hashinator)? != self.partition {
            return Err(retry());
        }
        Ok(now.clone())
    }

    pub(crate) fn run_round(&mut self, items: Vec<WorkItem>) -> Result<Vec<ItemResult>> {
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            if matches!(
                item,
                WorkItem::Execute { .. }
                    | WorkItem::Fragment { .. }
                    | WorkItem::Query { .. }
                    | WorkItem::InsertRows { .. }
            ) {
                self.counters.fragments += 1;
            }
            out.push(match item {
                WorkItem::Execute { planned, params } => ItemResult::Exec(self.db.execute_planned(&planned, &params)?),
                WorkItem::Fragment { statement, fragment, params } => {
                    if statement.planned.catalog_version != self.db.catalog().version {
                        bail!(
                            SchemaChangeConflict,
                            "the schema changed since this statement was planned; plan it again"
                        );
                    }
                    let query = match &statement.mp {
                        Some(MpStatement::Read(q)) | Some(MpStatement::Insert { source: q, .. }) => q,
                        _ => bail!(Internal, "fragment of a statement without a distributed read"),
                    };
                    let f =
                        query.fragments.get(fragment).ok_or_else(|| err!(Internal, "fragment {fragment} missing"))?;
                    ItemResult::Rows(self.db.query(&f.plan, &params, &[])?)
                }
                WorkItem::InsertRows { planned, rows } => {
                    let joule_sql::planner::PlannedKind::Insert(plan) = &planned.kind else {
                        bail!(Internal, "rows to insert for a statement that is not an INSERT");
                    };
                    ItemResult::Exec(self.db.insert_rows(plan, rows)?)
                }
                WorkItem::Query { plan, params, catalog_version } => {
                    if catalog_version != self.db.catalog().version {
                        bail!(
                            SchemaChangeConflict,
                            "the schema changed since this statement was planned; plan it again"
                        );
                    }
                    ItemResult::Rows(self.db.query(&plan, &params, &[])?)
                }
                WorkItem::Checksum => ItemResult::Tables(self.db.table_checksums()),
                WorkItem::ValidatePartitioning => ItemResult::Tables(self.misplaced_rows()?),
                WorkItem::Freeze => ItemResult::Frozen(self.freeze()?),
                WorkItem::PlaceRows(tables) => {
                    for (name, rows) in tables {
                        let id = self
                            .db
                            .catalog()
                            .tables()
                            .find(|t| t.qualified_name() == name)
                            .map(|t| t.id)
                            .ok_or_else(|| err!(UndefinedTable, "table {name} does not exist"))?;
                        self.db.place_rows(id, rows)?;
                    }
                    ItemResult::Exec(joule_engine::ExecResult::Done)
                }
                WorkItem::Evict { hashinator, table, tokens, keep } => {
                    self.note_next_ring(&hashinator);
                    ItemResult::Evicted(self.evict(&hashinator, table.as_deref(), tokens, keep)?)
                }
                WorkItem::NextRing(ring) => {
                    self.note_next_ring(&ring);
                    ItemResult::Exec(joule_engine::ExecResult::Done)
                }
                WorkItem::ForgetTokens => {
                    self.db.untrack_tokens();
                    ItemResult::Exec(joule_engine::ExecResult::Done)
                }
                WorkItem::IndexTokens { rows } => {
                    ItemResult::Exec(joule_engine::ExecResult::Modified(self.index_tokens(rows)?))
                }
                WorkItem::ReplicatedRows => ItemResult::Placed(self.replicated_rows()?),
                WorkItem::JoinPartition { catalog, rows } => {
                    // (Tests: a new host that dies before its partitions join.)
                    joule_common::failpoint::crash_if_armed("partition-joining");
                    self.join_partition(catalog, rows)?;
                    ItemResult::Exec(joule_engine::ExecResult::Done)
                }
                WorkItem::Retire => {
                    self.check_empty()?;
                    ItemResult::Exec(joule_engine::ExecResult::Done)
                }
                WorkItem::Admit { planned, rows, hashinator } => {
                    self.note_next_ring(&hashinator);
                    let joule_sql::planner::PlannedKind::Insert(plan) = &planned.kind else {
                        bail!(Internal, "rows to admit for a statement that is not an INSERT");
                    };
                    // Checked against the ring the transaction installs.
                    self.db.set_partition_owner(Some(Arc::new(Owner { partition: self.partition, hashinator })));
                    let done = self.db.insert_rows(plan, rows);
                    self.install_owner();
                    ItemResult::Exec(done?)
                }
            });
        }
        Ok(out)
    }

    /// A copy of this site's statistics, with its tables' figures now.
    fn stats(&self) -> SiteStats {
        let catalog = self.db.catalog();
        let tables = catalog
            .tables()
            .filter_map(|def| {
                let t = self.db.storage().table(def.id).ok()?;
                let indexes = def
                    .indexes
                    .iter()
                    .enumerate()
                    .map(|(i, ix)| (ix.name.clone(), t.index_key_count(i).unwrap_or(0) as u64, ix.unique))
                    .collect();
                let (bytes, index_bytes) = t.memory_estimate();
                Some(TableStats {
                    name: def.qualified_name(),
                    rows: t.len() as u64,
                    bytes: bytes as u64,
                    index_bytes: index_bytes as u64,
                    partitioned: catalog.is_partitioned(def),
                    view: def.view.is_some(),
                    indexes,
                })
            })
            .collect();
        let depth = self.depths[self.partition as usize].load(std::sync::atomic::Ordering::Relaxed);
        self.counters.snapshot(Some(self.partition), depth, tables)
    }

    /// Host `host` rejoins as a replica: everything shipped so far goes
    /// first, then a copy of the partition as it is now (the catalog, then
    /// every table, frozen here and encoded on the shipper's thread), then
    /// every change after it.
    fn hand_copy(&mut self, host: u64) -> Result<()> {
        let Some(link) = self.link.clone() else { bail!(InvalidArgument, "this host is not in a cluster") };
        if !link.leads(self.partition) {
            bail!(Unavailable, "this host no longer leads partition {}", self.partition);
        }
        let copy = self.frozen_copy()?;
        link.add_replica(self.partition, host, Box::new(copy.into_batches()));
        Ok(())
    }

    /// Everything batched so far goes to the shipper, then the partition
    /// as it is now, frozen (copy-on-write; encoded later, elsewhere).
    fn frozen_copy(&mut self) -> Result<crate::remote::PartitionCopy> {
        self.flush_log();
        let catalog = self.db.catalog_arc().clone();
        let mut tables = Vec::new();
        for def in catalog.tables() {
            tables.push((def.qualified_name(), self.db.storage().table(def.id)?.freeze()));
        }
        // What the copy remembers of prepared transactions' outcomes goes
        // with it (no transaction is open on the site now).
        let decided = match self.shared.upgrade() {
            Some(shared) => shared
                .in_doubt
                .get(self.partition as usize)
                .map(|d| crate::participant::lock(d).decided.iter().copied().collect())
                .unwrap_or_default(),
            None => Vec::new(),
        };
        let ring = self.hashinator.clone();
        Ok(crate::remote::PartitionCopy { catalog, ring, tables, last_ids: self.ids.last(), decided })
    }

    /// This host's copy log of the partition compacts itself to a frozen
    /// copy of it as it is now.
    fn compact_log(&mut self, via_shipper: bool) {
        let Some(link) = self.link.clone() else { return };
        let copy = self.frozen_copy().map(|c| Box::new(c.into_batches()) as Box<dyn Iterator<Item = Vec<u8>> + Send>);
        link.compact_log(self.partition, via_shipper, copy);
    }

    /// Run a record from the partition's leader: resolve its procedure (or
    /// plan its ad hoc SQL) against this site's own schema, then run it with
    /// the ids it ran with there.
    fn replay(&mut self, r: crate::messages::Replay) {
        let crate::messages::Replay { ids, database, procedure, sql, params, sink } = r;
        let resolved = match (sql, self.shared.upgrade()) {
            (Some(sql), Some(shared)) => {
                let mut client = crate::host::Client::replaying(shared, &database);
                client.adhoc_procedure_at(&sql, params, self.schema.clone())
            }
            (Some(_), None) => Err(err!(Unavailable, "the host is shutting down")),
            (None, _) => self
                .schema
                .procedure(&procedure)
                .cloned()
                .map(|p| (p, params))
                .ok_or_else(|| err!(UndefinedProcedure, "replicated procedure {procedure} is not defined here")),
        };
        match resolved {
            Ok((procedure, params)) => {
                let task = SpTask {
                    procedure,
                    params,
                    sink,
                    handle: 0,
                    replay: Some(ids),
                    hash_version: self.hashinator.version(),
                    accepted: std::time::Instant::now(),
                    hops: 0,
                };
                self.run_sp(task)
            }
            Err(e) => {
                eprintln!("joule: partition {}: a replicated record cannot be applied: {e}", self.partition);
                sink.deliver(0, Response::failure(e, Some(ids)));
            }
        }
    }

    /// A schema change that came from another host is in this site's
    /// catalog: compile it and publish it to this host's initiators (unless
    /// a site here already published it or a newer one), before the change
    /// is confirmed — records that follow it are planned against it.
    pub(crate) fn publish_schema(&mut self) {
        let Some(shared) = self.shared.upgrade() else { return };
        let catalog = self.db.catalog_arc().clone();
        let published = shared.schema.load_full();
        if published.version() == catalog.version {
            self.schema = published;
            return;
        }
        let previous = shared.schema.load_full();
        match crate::compile::Schema::compile(catalog, &shared.registry, Some(&previous.catalog)) {
            Ok(schema) => {
                let schema = Arc::new(schema);
                shared.schema.rcu(
                    |current| if current.version() >= schema.version() { current.clone() } else { schema.clone() },
                );
                self.schema = shared.schema.load_full();
            }
            Err(e) => {
                eprintln!("joule: partition {}: the schema from another host does not compile: {e}", self.partition)
            }
        }
    }

    /// Load part of a copy of this partition (this host rejoins).
    fn load_copy(
        &mut self,
        catalog: Option<Box<joule_sql::catalog::Catalog>>,
        ring: Option<Hashinator>,
        table: Option<String>,
        rows: Vec<(u32, joule_common::Row)>,
        last_ids: TxnIds,
    ) -> Result<()> {
        self.ids.observe(last_ids);
        if let Some(ring) = ring {
            // The copy's placement, whatever this site had.
            self.hashinator = Arc::new(Hashinator::even(1, 0)?);
            self.install_ring(Arc::new(ring));
        }
        if let Some(catalog) = catalog {
            let catalog = Arc::new(*catalog);
            let mut db = Database::new();
            db.load_catalog(catalog.clone())?;
            self.db = db;
            self.install_owner();
            self.publish_schema();
            let _ = self.coordinator.send(CoordMsg::LoadCatalog(catalog));
        }
        if let Some(name) = table {
            let id =
                self.db.catalog().tables().find(|t| t.qualified_name() == name).map(|t| t.id).ok_or_else(|| {
                    err!(UndefinedTable, "table {name} of the partition's copy is not in its catalog")
                })?;
            self.db.begin();
            if let Err(e) = self.db.place_rows(id, rows) {
                let _ = self.db.rollback();
                return Err(e);
            }
            self.db.commit();
        }
        Ok(())
    }

    /// The rows of every replicated table and view, with their ids.
    fn replicated_rows(&self) -> Result<crate::snapshot::PartitionRows> {
        let catalog = self.db.catalog();
        let mut out = Vec::new();
        for def in catalog.tables().filter(|t| !catalog.is_partitioned(t)) {
            let rows = self.db.storage().table(def.id)?.freeze();
            out.push((def.qualified_name(), rows.iter_with_ids().map(|(id, row)| (id, row.clone())).collect()));
        }
        Ok(out)
    }

    /// This partition joins the transaction order (see `crate::partitions`):
    /// take `catalog` (it holds no row yet: a new partition, or one whose
    /// earlier join rolled back) and place the replicated tables' rows, in
    /// the transaction under way.
    fn join_partition(
        &mut self,
        catalog: Arc<joule_sql::catalog::Catalog>,
        rows: crate::snapshot::PartitionRows,
    ) -> Result<()> {
        if self.db.catalog().version != catalog.version
            || self.db.catalog().tables().count() != catalog.tables().count()
        {
            if let Some(t) =
                self.db.catalog().tables().find(|t| self.db.storage().table(t.id).is_ok_and(|t| !t.is_empty()))
            {
                bail!(
                    Internal,
                    "partition {} holds rows of {} and cannot join as a new partition",
                    self.partition,
                    t.name
                );
            }
            let mut db = Database::new();
            db.load_catalog(catalog.clone())?;
            db.begin();
            self.db = db;
            self.install_owner();
            self.publish_schema();
            let _ = self.coordinator.send(CoordMsg::LoadCatalog(catalog));
        }
        for (name, rows) in rows {
            let id = self
                .db
                .catalog()
                .tables()
                .find(|t| t.qualified_name() == name)
                .map(|t| t.id)
                .ok_or_else(|| err!(UndefinedTable, "table {name} does not exist"))?;
            self.db.place_rows(id, rows)?;
        }
        Ok(())
    }

    /// Freeze this partition's tables (views included), replicated ones on
    /// partition 0 only.
    fn freeze(&self) -> Result<FrozenPartition> {
        let started = std::time::Instant::now();
        let catalog = self.db.catalog();
        let mut tables = Vec::new();
        for def in catalog.tables() {
            let replicated = !catalog.is_partitioned(def);
            if self.partition != 0 && replicated {
                continue;
            }
            let table = self.db.storage().table(def.id)?;
            tables.push(FrozenTable { def: table.def().clone(), rows: table.freeze(), replicated });
        }
        Ok(FrozenPartition {
            partition: self.partition,
            tables,
            pause_micros: started.elapsed().as_micros() as u64,
            last_ids: self.ids.last(),
        })
    }

    /// Per partitioned table: how many rows here belong to another partition.
    fn misplaced_rows(&self) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        for def in self.db.catalog().tables() {
            let Some(pc) = def.partition_column else { continue };
            let table = self.db.storage().table(def.id)?;
            let mut misplaced = 0;
            for (_, row) in table.scan() {
                if def.partition_of(&row[pc], &self.hashinator)? != self.partition {
                    misplaced += 1;
                }
            }
            out.push((def.qualified_name(), misplaced));
        }
        Ok(out)
    }
}

/// How an answered transaction ended, for the statistics.
pub(crate) fn outcome_of(response: &Response) -> Outcome {
    match &response.error {
        None => Outcome::Committed,
        Some(e) if e.code() == joule_common::ErrorCode::ProcedureAborted => Outcome::Aborted,
        Some(_) => Outcome::Failed,
    }
}

/// The SQL text an ad hoc procedure runs (its statements, in order), to log
/// as `@AdHoc`'s first parameter; `None` for other procedures.
pub(crate) fn adhoc_sql(procedure: &CompiledProcedure) -> Option<String> {
    if procedure.name != "@AdHoc" {
        return None;
    }
    let texts: Vec<&str> = procedure.statements.iter().map(|s| s.sql.as_str()).collect();
    Some(texts.join(";\n"))
}

/// Runs a single-partition transaction's batches on the site's database.
struct SiteExecutor<'a> {
    db: &'a mut Database,
    partition: u32,
    hashinator: &'a Hashinator,
    /// The first statement error: the transaction will roll back.
    failed: Option<joule_common::Error>,
}

impl SiteExecutor<'_> {
    fn statement(&mut self, stmt: &CompiledStatement, params: &[Value]) -> Result<ResultTable> {
        if let Partitioning::Single(key, route) = &stmt.planned.partitioning {
            if let Some(owner) = pinned_partition(self.hashinator, key, route, params)? {
                if owner != self.partition {
                    bail!(
                        Mispartitioned,
                        "mispartitioned: statement \"{}\" reads or writes partition {owner}, but this single-partition transaction runs on partition {}",
                        stmt.sql,
                        self.partition
                    );
                }
            }
        }
        Ok(ResultTable::from_exec(self.db.execute_planned(&stmt.planned, params)?))
    }
}

impl BatchExecutor for SiteExecutor<'_> {
    fn execute(&mut self, statements: &[Arc<CompiledStatement>], batch: BatchRef<'_>) -> Result<Vec<ResultTable>> {
        if let Some(e) = &self.failed {
            return Err(e.clone().context("the transaction already failed"));
        }
        let mut out = Vec::with_capacity(batch.len());
        for (i, params) in batch.iter() {
            match self.statement(&statements[i], params) {
                Ok(t) => out.push(t),
                Err(e) => {
                    self.failed = Some(e.clone());
                    return Err(e);
                }
            }
        }
        Ok(out)
    }
}
