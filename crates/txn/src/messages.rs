//! The messages that move work between initiators, sites and the
//! multi-partition coordinator.
//!
//! Each site has one inbox ([`SiteMsg`]), fed by initiators (single-partition
//! invocations, in arrival order) and by the coordinator (the marker that
//! starts a multi-partition transaction). When a site reaches that marker it
//! stops reading its inbox and serves only the coordinator's [`MpWork`]
//! (rounds of fragments, then commit or rollback), answering each round with
//! an [`MpReply`]. Because one coordinator orders all multi-partition
//! transactions and puts each marker into every inbox before the next, all
//! sites see them in the same order, which is what makes the whole
//! serializable.

use crate::compile::{CompiledProcedure, CompiledStatement, Schema};
use crate::hashinator::Hashinator;
use crate::ids::TxnIds;
use crate::response::ResponseSink;
use crate::snapshot::{FrozenPartition, SnapshotTarget};
use joule_common::{Result, Row, Value};
use joule_engine::ExecResult;
use joule_sql::planner::Planned;
use std::sync::mpsc::{Receiver, RecvError, TryRecvError};
use std::sync::Arc;

/// How long a waiting thread polls before it sleeps: busy polls, then
/// yields. Multi-partition transactions pass messages back and forth
/// several times each, and a reply usually comes within microseconds — far
/// sooner than a sleeping thread can be woken; the bound keeps an idle
/// thread from burning a core.
#[derive(Clone, Copy)]
pub(crate) struct Patience {
    pub spins: u32,
    pub yields: u32,
}

/// Within a multi-partition transaction: short, so that the three or more
/// threads taking part do not starve each other of cores.
pub(crate) const IN_TRANSACTION: Patience = Patience { spins: 200, yields: 20 };
/// A site waiting for new work after a multi-partition transaction: the
/// coordinator's next one usually follows within microseconds, so a few
/// busy polls and many yields catch it before the site sleeps.
pub(crate) const AFTER_MULTI_PARTITION: Patience = Patience { spins: 100, yields: 100 };
/// A site waiting for new work after a single-partition transaction: a
/// short busy poll, then sleep. Yielding in a loop here took the cores from
/// the network threads that bring the work: with synchronous clients on
/// two cores, point selects ran 30–45 % faster without it.
pub(crate) const AFTER_SINGLE_PARTITION: Patience = Patience { spins: 100, yields: 0 };

/// Receive, polling briefly (per `patience`) before sleeping.
pub(crate) fn recv_soon<T>(rx: &Receiver<T>, patience: Patience) -> std::result::Result<T, RecvError> {
    for i in 0..patience.spins + patience.yields {
        match rx.try_recv() {
            Ok(m) => return Ok(m),
            Err(TryRecvError::Disconnected) => return Err(RecvError),
            Err(TryRecvError::Empty) if i < patience.spins => std::hint::spin_loop(),
            Err(TryRecvError::Empty) => std::thread::yield_now(),
        }
    }
    rx.recv()
}

/// A single-partition invocation.
pub(crate) struct SpTask {
    pub procedure: Arc<CompiledProcedure>,
    pub params: Vec<Value>,
    pub sink: Arc<dyn ResponseSink>,
    pub handle: u64,
    /// Ids recorded earlier (command-log replay); `None` = assign new ones.
    pub replay: Option<TxnIds>,
    /// The hashinator version the initiator routed with.
    pub hash_version: u64,
    /// When the initiator accepted the invocation.
    pub accepted: std::time::Instant,
    /// Hosts that forwarded it here (see [`crate::remote::MAX_HOPS`]).
    pub hops: u8,
}

/// A replicated single-partition record for a replica site to resolve
/// (against its own schema) and run with the ids it ran with.
pub(crate) struct Replay {
    pub ids: TxnIds,
    pub database: String,
    pub procedure: String,
    /// `@AdHoc`: its SQL text.
    pub sql: Option<String>,
    pub params: Vec<Value>,
    pub sink: Arc<dyn ResponseSink>,
}

/// What a site's inbox carries.
pub(crate) enum SiteMsg {
    Sp(SpTask),
    /// A replica applies a record from its partition's leader.
    Replay(Replay),
    /// Join this multi-partition transaction now.
    /// (Its work comes on the given channel — each transaction driven from
    /// another host or applied from a replication record has its own, so
    /// no message of one transaction can reach another — or, for this
    /// host's coordinator, on the site's multi-partition inbox.)
    MpBegin(TxnIds, Option<std::sync::mpsc::Receiver<MpWork>>, Decider),
    /// Finish what is queued before this, then stop.
    Shutdown,
    /// Reply with a copy of the site's statistics.
    Stats(std::sync::mpsc::Sender<crate::stats::SiteStats>),
    /// Reply with the partition's per-table checksums (this copy's).
    Checksums(std::sync::mpsc::Sender<(u32, Vec<(String, u64)>)>),
    /// A cluster: host `host` rejoins as a replica of this (leading) site's
    /// partition — hand it a copy of the partition now, then the stream.
    Rejoin {
        host: u64,
        reply: std::sync::mpsc::Sender<Result<()>>,
    },
    /// A cluster: freeze the partition as it is now (after everything
    /// queued before this, and after flushing what waits to be shipped)
    /// for this host's copy log to compact itself to; handed over through
    /// `ClusterLink::compact_log`.
    CompactLog {
        via_shipper: bool,
    },
    /// A cluster: this host is handing the partition over (see
    /// `handover.rs`): run no new single-partition call, ship what is
    /// batched, and reply once every copy applied everything shipped
    /// (dropped unanswered if the site does not hand over, or the batches
    /// were not confirmed).
    HandOver(std::sync::mpsc::Sender<()>),
    /// A cluster: the partition's leadership may have changed — calls
    /// held while handing it over go to the new leader (or run here again).
    ReviewHeld,
    /// A cluster: load part of a copy of the partition from its leader
    /// (this site rejoins); `done` says whether it applied.
    Load {
        catalog: Option<Box<joule_sql::catalog::Catalog>>,
        ring: Option<crate::hashinator::Hashinator>,
        table: Option<String>,
        rows: Vec<(u32, Row)>,
        last_ids: TxnIds,
        done: std::sync::mpsc::Sender<Result<()>>,
    },
}

/// One piece of a multi-partition round for one site.
pub(crate) enum WorkItem {
    /// Execute a planned statement (pinned, broadcast, DDL).
    Execute { planned: Arc<Planned>, params: Arc<[Value]> },
    /// Run fragment `fragment` of the statement's distributed read.
    Fragment { statement: Arc<CompiledStatement>, fragment: usize, params: Arc<[Value]> },
    /// Run a fragment's plan that came from another host (planned against
    /// `catalog_version`).
    Query { plan: Box<joule_sql::plan::Plan>, params: Arc<[Value]>, catalog_version: u64 },
    /// Insert rows computed at the coordinator.
    InsertRows { planned: Arc<Planned>, rows: Vec<Row> },
    /// Report per-table checksums.
    Checksum,
    /// Report, per partitioned table, rows whose key another partition owns.
    ValidatePartitioning,
    /// Freeze the partition's tables for a snapshot.
    Freeze,
    /// Recovery: put rows at their ids (by table name).
    PlaceRows(crate::snapshot::PartitionRows),
    /// Moving a range: delete and hand back the rows that `hashinator`
    /// (the next ring) places on another partition — of table `table`
    /// (qualified name) as the catalog now places it, or with no table, of
    /// every hash-partitioned table. With `tokens`, only rows whose key's
    /// token is in that range can leave: tables that keep their rows by
    /// token find them without a scan, and with `keep` start keeping them.
    Evict { hashinator: Arc<Hashinator>, table: Option<String>, tokens: Option<(i32, i32)>, keep: bool },
    /// Moving a range: insert rows that `hashinator` (the next ring) places
    /// on this partition, checked against it rather than the current one.
    Admit { planned: Arc<Planned>, rows: Vec<Row>, hashinator: Arc<Hashinator> },
    /// Moving a range to this partition: `hashinator` is the ring the
    /// transaction installs if it commits, whether or not any row comes
    /// (the partition's replicas check the rows of later writes against it).
    NextRing(Arc<Hashinator>),
    /// Moves of ranges are over: stop keeping rows by token. Counted as a
    /// write so that it reaches the replicas (which kept them too); it
    /// changes no row.
    ForgetTokens,
    /// Ranges will move off this partition: build each hash-partitioned
    /// table's index of rows by token a step at a time, the next `rows` row
    /// ids of each (see `joule_engine::storage::Table::track_tokens_step`);
    /// answers the row ids left to look at. Counted as a write so that the
    /// replicas build theirs in the same steps; it changes no row.
    IndexTokens { rows: u64 },
    /// Hand over the rows of every replicated table (views on them too)
    /// with their ids (see `crate::partitions`).
    ReplicatedRows,
    /// A partition joins the transaction order: take `catalog` as the
    /// schema (the partition holds no row yet) and place the replicated
    /// tables' rows at their ids.
    JoinPartition { catalog: Arc<joule_sql::catalog::Catalog>, rows: crate::snapshot::PartitionRows },
    /// The partition leaves the transaction order: it must hold no row of
    /// a partitioned table (every range moved off it).
    Retire,
}

impl WorkItem {
    /// Whether the item may change the partition.
    pub fn writes(&self) -> bool {
        match self {
            WorkItem::Execute { planned, .. } => planned.writes,
            WorkItem::InsertRows { .. }
            | WorkItem::PlaceRows(_)
            | WorkItem::Evict { .. }
            | WorkItem::Admit { .. }
            | WorkItem::NextRing(_)
            | WorkItem::ForgetTokens
            | WorkItem::IndexTokens { .. }
            | WorkItem::JoinPartition { .. } => true,
            WorkItem::Fragment { .. }
            | WorkItem::Query { .. }
            | WorkItem::Checksum
            | WorkItem::ValidatePartitioning
            | WorkItem::Freeze
            | WorkItem::ReplicatedRows
            | WorkItem::Retire => false,
        }
    }
}

/// One table's rows given up by an eviction.
#[derive(Debug)]
pub(crate) struct EvictedRows {
    /// The table's qualified name.
    pub table: String,
    pub rows: Vec<Row>,
    /// Their values' bytes (`crate::stats::values_bytes`), counted where
    /// the rows were last touched (on the evicting site, or the proxy that
    /// decoded them) rather than by the coordinator reading every row
    /// again from another core's cache.
    pub bytes: u64,
}

impl EvictedRows {
    pub fn new(table: String, rows: Vec<Row>) -> EvictedRows {
        let bytes = rows.iter().map(|r| crate::stats::values_bytes(r.iter())).sum();
        EvictedRows { table, rows, bytes }
    }
}

/// The result of one work item.
#[derive(Debug)]
pub(crate) enum ItemResult {
    Exec(ExecResult),
    Rows(Vec<Row>),
    /// (table, value) pairs: checksums or misplaced-row counts.
    Tables(Vec<(String, u64)>),
    Frozen(FrozenPartition),
    /// Rows given up by [`WorkItem::Evict`], by table.
    Evicted(Vec<EvictedRows>),
    /// Rows with their ids, by table ([`WorkItem::ReplicatedRows`]).
    Placed(crate::snapshot::PartitionRows),
}

/// What the coordinator sends a site inside a multi-partition transaction.
pub(crate) enum MpWork {
    /// Run these items in order and reply (stopping at the first error) —
    /// to `reply` if given, else to the coordinator.
    ///
    /// `ahead`: this is the site's last round and a `Prepare` follows right
    /// behind it (`Coordinator::round_then_prepare`). A leading site in a
    /// cluster then ships the transaction's writes to its replicas *before*
    /// it runs them, so the replicas run them beside it rather than after
    /// it, and is prepared from then on (its replicas are in doubt, whatever
    /// the round's result). The sender reaches this transaction's site for
    /// as long as it is in doubt, as `Prepare`'s `work`.
    Round {
        items: Vec<WorkItem>,
        reply: Option<std::sync::mpsc::Sender<MpReply>>,
        ahead: Option<std::sync::mpsc::Sender<MpWork>>,
    },
    /// Make the transaction's changes permanent; install a new schema or
    /// hashinator if the transaction made one.
    Commit {
        schema: Option<Arc<Schema>>,
        hashinator: Option<Arc<Hashinator>>,
        /// A cluster's transaction from another host changed the schema:
        /// the host compiles the new catalog itself.
        install: bool,
        /// Told once the commit is done — in a cluster, once the
        /// partition's replicas have it too (dropped unsent if that fails).
        done: Option<std::sync::mpsc::Sender<()>>,
    },
    /// Undo the transaction's changes; `done` as for `Commit`.
    Rollback { done: Option<std::sync::mpsc::Sender<()>> },
    /// A cluster: every round ran; hold the writes until the outcome. A
    /// leading site ships them to its replicas, which hold them too, and
    /// answers `done` once they have them: `true` if this partition wrote
    /// (it is then *in doubt* until told the outcome), `false` if it only
    /// read (its outcome changes nothing). `work` reaches this transaction's
    /// site for as long as it is in doubt (see [`InDoubt`]).
    Prepare { work: std::sync::mpsc::Sender<MpWork>, done: std::sync::mpsc::Sender<Result<bool>> },
    /// The session driving this transaction from another host ended. Before
    /// the prepare this rolls back; after it, the site stays in doubt —
    /// unless its host stops (`InDoubt::stopped`): then it rolls its copy
    /// back and goes (its replicas hold the writes).
    Abandon,
    /// The outcome of the prepared transaction `txn`, from the coordinator
    /// that resolves it (the one that ran it, after a partition's leader
    /// changed; or a new one, after the old one's host failed). `done` as
    /// for `Commit`.
    Settle { txn: u64, commit: bool, by: Decider, done: std::sync::mpsc::Sender<()> },
}

/// Who drives a multi-partition transaction on a site, and so whose
/// outcome it takes once prepared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decider {
    /// This host's coordinator: taken while this host coordinates.
    Coordinator,
    /// The coordinator on the given host: taken while the metadata names
    /// it.
    RemoteCoordinator(u64),
    /// The partition's leader, through its replication stream (this site
    /// is a replica): always taken.
    Leader,
}

/// A partition's copy's prepared multi-partition transactions: the one
/// waiting for its outcome, and the last few outcomes. Shared between the
/// site (which sets both under the lock, together with checking that its
/// decider still may decide) and whoever asks or settles (see
/// `crate::coordinator`'s resolution).
#[derive(Default)]
pub(crate) struct InDoubt {
    /// The prepared transaction waiting for its outcome, and the channel its
    /// site reads while it waits.
    pub pending: Option<(u64, std::sync::mpsc::Sender<MpWork>)>,
    /// Outcomes of prepared transactions, oldest first (the last
    /// [`DECIDED_KEPT`]).
    pub decided: std::collections::VecDeque<(u64, bool)>,
    /// The host stops: nothing is held in doubt here any more (what this
    /// copy prepared, its replicas hold).
    pub stopped: bool,
    /// The pending transaction, if its writes failed on this copy (a
    /// replica holds writes shipped ahead of its leader's run, see
    /// `crate::participant`): committing it here would leave this copy
    /// unlike its leader's.
    pub failed: Option<u64>,
    /// The highest multi-partition transaction id this copy began (0 for
    /// none): a new coordinator issues ids above every copy's, so an id
    /// in `decided` names one transaction only.
    pub last_begun: u64,
}

/// Outcomes of prepared transactions a copy remembers.
pub(crate) const DECIDED_KEPT: usize = 64;

impl InDoubt {
    pub fn decide(&mut self, txn: u64, commit: bool) {
        self.pending = None;
        self.failed = None;
        if self.decided.len() == DECIDED_KEPT {
            self.decided.pop_front();
        }
        self.decided.push_back((txn, commit));
    }

    pub fn outcome(&self, txn: u64) -> Option<bool> {
        self.decided.iter().rev().find(|(t, _)| *t == txn).map(|(_, c)| *c)
    }

    /// The highest multi-partition transaction id this copy knows of:
    /// begun here, waiting here, or among the outcomes it remembers (a
    /// copy loaded at a rejoin brings those, not the ids begun).
    pub fn highest_known(&self) -> u64 {
        let pending = self.pending.as_ref().map_or(0, |(t, _)| *t);
        let decided = self.decided.iter().map(|(t, _)| *t).max().unwrap_or(0);
        self.last_begun.max(pending).max(decided)
    }
}

/// A site's answer to a round.
pub(crate) struct MpReply {
    pub partition: u32,
    pub results: Result<Vec<ItemResult>>,
}

/// Work for the multi-partition coordinator.
pub(crate) enum MpKind {
    Procedure(Arc<CompiledProcedure>),
    /// DDL statements (texts), planned by the coordinator in `database`.
    Ddl {
        statements: Vec<String>,
        database: String,
    },
    /// Per-partition checksums of every table.
    Checksums,
    /// Rows stored on a partition that does not own their key.
    ValidatePartitioning,
    /// Install a new hashinator everywhere at once.
    SetHashinator(Arc<Hashinator>),
    /// Freeze every partition and hand them to the target.
    Snapshot(Arc<dyn SnapshotTarget>),
    /// Insert rows into tables (by qualified name), routed by the
    /// hashinator; logged as `log_as` (procedure, parameters) if given.
    LoadRows {
        tables: Vec<(String, Vec<Row>)>,
        log_as: Option<(String, Vec<Value>)>,
    },
    /// Recovery: each partition's rows at their ids (not logged).
    PlaceRows(Vec<crate::snapshot::PartitionRows>),
    /// `@MoveRange`: give each range of tokens `start..=end` of the ring
    /// to its partition (`ranges`: one or more, disjoint), moving their
    /// rows, and install the next hashinator; with `keep`, the partitions
    /// giving rows up keep their rows by token afterwards (more moves
    /// follow).
    MoveRange {
        ranges: Vec<(i32, i32, u32)>,
        keep: bool,
    },
    /// Moves of ranges are over: every copy of every partition stops
    /// keeping rows by token.
    ForgetTokens,
    /// Ranges will move off `partitions`: a step of building their indexes
    /// of rows by token, over the next `rows` row ids of each table, side
    /// by side (the other partitions are released at once).
    IndexTokens {
        partitions: Vec<u32>,
        rows: u64,
    },
    /// Add this many partitions, held by new sites on this host (see
    /// `crate::partitions`).
    AddPartitions(u32),
    /// Take the partitions from this one on out of the order: they own no
    /// token and hold no partitioned row (see `crate::partitions`).
    RemovePartitions(u32),
}

/// A multi-partition invocation.
pub(crate) struct MpTask {
    pub kind: MpKind,
    pub params: Vec<Value>,
    pub sink: Arc<dyn ResponseSink>,
    pub handle: u64,
    pub replay: Option<TxnIds>,
    pub accepted: std::time::Instant,
    /// Hosts that forwarded it here.
    pub hops: u8,
}

/// The coordinator's inbox.
pub(crate) enum CoordMsg {
    Invoke(MpTask),
    /// A cluster's schema change made on another host reached a site here:
    /// apply its DDL plans to the coordinator's copy of the schema and
    /// publish the new schema to this host's initiators.
    Install(Vec<Arc<Planned>>),
    /// This host rejoins a cluster: take the catalog a partition's copy
    /// came with as the coordinator's schema (if this one is older).
    LoadCatalog(Arc<joule_sql::catalog::Catalog>),
    Shutdown,
    /// A cluster: this host has just become the coordinator: settle what the
    /// previous one left in doubt before anything else.
    Resolve,
    /// Reply with the coordinator's statistics (multi-partition work).
    Stats(std::sync::mpsc::Sender<crate::stats::SiteStats>),
    /// This host hands the coordination over (see `handover.rs`): answer
    /// once every transaction taken before has run.
    HandOver(std::sync::mpsc::Sender<()>),
    /// The metadata changed: look at the calls held again.
    ReviewHeld,
}
