//! The transaction layer's side of a multi-host cluster: what it asks of
//! the other hosts, and the forms its work takes between them.
//!
//! A host of a cluster holds copies ("replicas") of some partitions; each
//! partition has one leader among its replicas, which orders its work. The
//! layer asks the cluster (a [`ClusterLink`], implemented over the internal
//! port by the server) four things:
//!
//! * **who leads**: whether this host leads a partition, and whether it
//!   coordinates multi-partition transactions;
//! * **forwarding**: an invocation routed to a partition this host does not
//!   lead, or a multi-partition one on a host that does not coordinate, is
//!   sent as a [`WireCall`] to the host that does, and its answer relayed;
//! * **remote sites**: the coordinator drives a partition led elsewhere
//!   through a [`RemoteSite`] — a proxy thread here (`run_proxy`) sends the
//!   start marker, each round's items ([`WireItem`]) and the outcome to the
//!   leader's host, where a [`SessionDriver`] feeds them to the site;
//! * **replication**: a leader site streams each committed change as a
//!   [`Replicated`] record to the partition's other replicas, which apply
//!   the same sequence ([`crate::Host::apply_replicated`]); an answer is
//!   held until every live replica has applied everything before it.
//!
//! Plans travel as data (`serde`, encoded with `postcard`): a replica or a
//! remote site runs exactly the plan the coordinator made, against the same
//! catalog version, so nothing is planned twice and nothing can plan
//! differently. Single-partition records carry the invocation instead (the
//! procedure and its parameters, with the ids it ran with): execution is
//! deterministic, so running it again on the same prior state reproduces
//! the effects — the same reasoning as command-log replay.

use crate::ids::TxnIds;
use crate::messages::{EvictedRows, ItemResult, MpReply, MpWork, SiteMsg, WorkItem};
use crate::response::{Response, ResponseSink, ResultTable, Status};
use joule_common::{bail, err, Error, ErrorCode, Result, Row, Value};
use joule_engine::ExecResult;
use joule_sql::plan::{OutputColumn, Plan};
use joule_sql::planner::Planned;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub use crate::replica::ApplyDone;

/// Where a forwarded invocation goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// The host leading this partition.
    Partition(u32),
    /// The host coordinating multi-partition transactions.
    Coordinator,
}

/// What the transaction layer asks of the cluster.
pub trait ClusterLink: Send + Sync {
    /// Whether this host leads `partition` now.
    fn leads(&self, partition: u32) -> bool;
    /// What this host's site for `partition` does with a single-partition
    /// call it took (one load of the routing: it is asked per call).
    fn sp_disposition(&self, partition: u32) -> SpDisposition;
    /// Whether this host, leading `partition`, may run a call that entered
    /// here now: no call that entered before it is parked or forwarded and
    /// unanswered (otherwise the site forwards the call behind them).
    fn may_run_entered(&self, partition: u32) -> bool;
    /// Whether this host coordinates multi-partition transactions now.
    fn coordinates(&self) -> bool;
    /// Whether this host coordinates and hands the coordination over (it
    /// is leaving the cluster): new multi-partition calls wait.
    fn hands_coordination_over(&self) -> bool;
    /// The host coordinating multi-partition transactions now.
    fn coordinator(&self) -> Option<u64>;
    /// Run `call` on the host `to` names; its answer goes to `sink`.
    fn forward(&self, to: Destination, call: WireCall, handle: u64, sink: Arc<dyn ResponseSink>);
    /// A session with the site leading `partition` on another host.
    fn open_remote(&self, partition: u32) -> Result<Box<dyn RemoteSite>>;
    /// Ship `records` (framed [`Replicated`] records, possibly none) to
    /// `partition`'s other live replicas, after everything shipped before;
    /// `done` runs once every live replica has applied them.
    fn replicate(&self, partition: u32, records: Vec<u8>, done: Box<dyn FnOnce() + Send>);
    /// Host `host` rejoins as a replica of `partition`: send it `copy`
    /// (batches of framed [`Replicated::Load`] records) after everything
    /// shipped so far, then every batch after it.
    fn add_replica(&self, partition: u32, host: u64, copy: Box<dyn Iterator<Item = Vec<u8>> + Send>);
    /// This host's copy log of `partition` asked to compact itself: here
    /// is the partition as it is after everything shipped or applied so
    /// far (`via_shipper`: this host led it when it asked, and the copy
    /// goes through the shipper, in order with the batches), or why the
    /// site could not freeze it.
    fn compact_log(&self, partition: u32, via_shipper: bool, copy: Result<Box<dyn Iterator<Item = Vec<u8>> + Send>>);
    /// What `partition`'s leader knows of prepared multi-partition
    /// transactions, asked as this host's coordinator (the leader answers
    /// once its metadata names this host coordinator; see
    /// `crate::participant`).
    fn doubt(&self, partition: u32) -> Result<DoubtReport>;
    /// Have `partition`'s leader end the prepared transaction `txn` as
    /// `commit` says; returns once its replicas have the outcome too (at
    /// once if the leader holds no such transaction in doubt).
    fn settle(&self, partition: u32, txn: u64, commit: bool) -> Result<()>;
    /// Record `ring` in the cluster metadata as the ring transaction `txn`
    /// (prepared on every partition) moves to, if this host still
    /// coordinates and the metadata's ring is the one before it: the
    /// transaction's commit point (see `crate::moverange`). Waits for an
    /// answer while this host coordinates; `OutcomeUnknown` once it no
    /// longer does without one.
    fn record_ring(&self, ring: &crate::hashinator::Hashinator, txn: u64) -> Result<()>;
    /// The transaction whose ring the metadata holds (as this host last
    /// applied it), if a transaction moved it.
    fn ring_txn(&self) -> Option<u64>;
}

/// What a copy of a partition knows of prepared multi-partition
/// transactions: the one it waits on, and the last outcomes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoubtReport {
    pub pending: Option<u64>,
    /// (transaction id, committed), oldest first.
    pub decided: Vec<(u64, bool)>,
    /// The highest multi-partition transaction id the copy knows of
    /// ([`crate::messages::InDoubt::highest_known`]): the new coordinator
    /// issues its ids above every partition's.
    pub highest: u64,
}

/// A partition's leader on another host, driven by this host's coordinator.
pub trait RemoteSite: Send {
    fn begin(&mut self, ids: TxnIds) -> Result<()>;
    /// Run a round; `ahead`: a prepare follows, and the leader ships the
    /// writes to its replicas before it runs them (see `MpWork::Round`).
    fn round(&mut self, items: Vec<WireItem>, ahead: bool) -> Result<Vec<WireResult>>;
    /// Hold the writes until the outcome (see `crate::participant`): whether
    /// the partition is in doubt (it wrote).
    fn prepare(&mut self) -> Result<bool>;
    /// Commit (installing the catalog the transaction's DDL made, if
    /// `schema_changed`) or roll back; a commit returns once the leader's
    /// replicas have it too.
    fn finish(&mut self, commit: bool, schema_changed: bool) -> Result<()>;
}

/// An invocation forwarded to another host.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WireCall {
    /// The session database it was made in.
    pub database: String,
    pub procedure: String,
    pub params: Vec<Value>,
    /// Hosts it went through already (a call is not forwarded forever while
    /// leadership moves).
    pub hops: u8,
    /// The ring version the forwarding host routed it by (0: not routed by
    /// key). A host whose ring is older waits for the newer one before it
    /// routes the call, so that a call does not bounce between a host that
    /// has a move of ranges and one that does not have it yet.
    #[serde(default)]
    pub ring: u64,
    /// The version of the cluster metadata the forwarding host routed it
    /// by (set as it leaves a host). A host whose metadata is older waits
    /// for the newer one before it routes the call: otherwise, while a
    /// partition's leadership moves, a host that has not heard of the move
    /// would send the call back to the one it came from.
    #[serde(default)]
    pub metadata: u64,
}

/// What a site does with a single-partition call for its partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpDisposition {
    /// Run it: this host leads the partition (or no host does yet — a new
    /// leader settling its copies — and the call was queued before).
    Run,
    /// Another host leads the partition now: the call goes there.
    Forward,
    /// This host leads the partition but is handing it over (it leaves
    /// the cluster): the call waits until another host leads it.
    Hold,
}

/// Forwards a call takes at most.
pub const MAX_HOPS: u8 = 3;

/// A work item as it travels to another host.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum WireItem {
    Execute {
        planned: Planned,
        params: Vec<Value>,
    },
    /// One fragment of a distributed read (its plan, as split).
    Query {
        plan: Plan,
        params: Vec<Value>,
        catalog_version: u64,
    },
    InsertRows {
        planned: Planned,
        rows: Vec<Row>,
    },
    Checksum,
    ValidatePartitioning,
    /// Moving a range (see [`WorkItem::Evict`]): the next ring travels
    /// whole, and a replica evicts exactly the rows its leader did.
    Evict {
        ring: crate::hashinator::Hashinator,
        table: Option<String>,
        tokens: Option<(i32, i32)>,
        keep: bool,
    },
    /// Moving a range (see [`WorkItem::Admit`]).
    Admit {
        planned: Planned,
        rows: Vec<Row>,
        ring: crate::hashinator::Hashinator,
    },
    /// Drop the token indexes moving ranges kept (see [`WorkItem::ForgetTokens`]).
    ForgetTokens,
    /// See [`WorkItem::NextRing`].
    NextRing(crate::hashinator::Hashinator),
    /// See [`WorkItem::ReplicatedRows`].
    ReplicatedRows,
    /// See [`WorkItem::JoinPartition`]: the catalog travels whole.
    JoinPartition {
        catalog: joule_sql::catalog::Catalog,
        rows: crate::snapshot::PartitionRows,
    },
    /// See [`WorkItem::Retire`].
    Retire,
    /// See [`WorkItem::IndexTokens`] (last: encoded by variant number).
    IndexTokens {
        rows: u64,
    },
}

/// A work item's result as it travels back.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum WireResult {
    Query { columns: Vec<OutputColumn>, rows: Vec<Row> },
    Modified(u64),
    Done,
    Rows(Vec<Row>),
    Tables(Vec<(String, u64)>),
    Evicted(Vec<(String, Vec<Row>)>),
    Placed(crate::snapshot::PartitionRows),
}

/// A committed change of one partition, as its leader streams it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Replicated {
    /// A single-partition transaction: the invocation and its ids (`@AdHoc`
    /// with its SQL text in `sql`).
    Sp { ids: TxnIds, database: String, procedure: String, sql: Option<String>, params: Vec<Value> },
    /// A multi-partition transaction's writes on this partition, committed.
    Mp { ids: TxnIds, items: Vec<WireItem> },
    /// A multi-partition transaction's writes on this partition, prepared:
    /// run them and hold them until the outcome (see `crate::participant`).
    MpPrepare { ids: TxnIds, items: Vec<WireItem> },
    /// The outcome of the prepared transaction `txn`.
    MpDecide { txn: u64, commit: bool },
    /// Part of a copy of the partition, for a rejoining replica: the
    /// catalog (first part only), then rows of one table at their ids;
    /// the last part says the copy is `complete`.
    Load {
        catalog: Option<Box<joule_sql::catalog::Catalog>>,
        /// With the catalog: the ring the copy was taken under (its rows
        /// are the ones that ring places on the partition).
        ring: Option<crate::hashinator::Hashinator>,
        table: Option<String>,
        rows: Vec<(u32, Row)>,
        last_ids: TxnIds,
        complete: bool,
        /// On the last part: the outcomes of prepared transactions the copy
        /// remembered (a coordinator settling one after a failure asks for
        /// them), oldest first.
        decided: Vec<(u64, bool)>,
    },
    /// As [`Replicated::MpPrepare`], shipped before the leader ran the
    /// writes (a range move's last round, see `MpWork::Round`'s `ahead`):
    /// they may fail on every copy, and a copy holds them prepared all the
    /// same until the outcome — which can only be a rollback, unless this
    /// copy alone failed them (see `crate::participant`).
    MpPrepareAhead { ids: TxnIds, items: Vec<WireItem> },
}

/// A copy of one partition as its leader hands it to a rejoining replica:
/// the catalog and every table's rows, frozen at one point of the
/// partition's order (encoded lazily, off the site's thread).
pub(crate) struct PartitionCopy {
    pub catalog: Arc<joule_sql::catalog::Catalog>,
    pub ring: Arc<crate::hashinator::Hashinator>,
    pub tables: Vec<(String, joule_engine::storage::FrozenRows)>,
    pub last_ids: TxnIds,
    /// The outcomes of prepared transactions the copy remembers.
    pub decided: Vec<(u64, bool)>,
}

/// Rows per [`Replicated::Load`] record.
const LOAD_ROWS: usize = 16 * 1024;

impl PartitionCopy {
    /// The copy as batches of framed records: the catalog, then each
    /// table in pieces of [`LOAD_ROWS`] rows.
    pub(crate) fn into_batches(self) -> impl Iterator<Item = Vec<u8>> + Send {
        let PartitionCopy { catalog, ring, tables, last_ids, decided } = self;
        let first = Replicated::Load {
            catalog: Some(Box::new((*catalog).clone())),
            ring: Some((*ring).clone()),
            table: None,
            rows: Vec::new(),
            last_ids,
            complete: false,
            decided: Vec::new(),
        };
        let first = std::iter::once(first);
        let last = std::iter::once(Replicated::Load {
            catalog: None,
            ring: None,
            table: None,
            rows: Vec::new(),
            last_ids,
            complete: true,
            decided,
        });
        // Each piece's rows are cloned out of the frozen table when it is
        // encoded (never the whole table at once), picking up after the
        // last row of the piece before.
        let rest = tables.into_iter().flat_map(move |(name, frozen)| {
            let mut next: Option<u32> = Some(0);
            std::iter::from_fn(move || {
                let rows: Vec<(u32, Row)> =
                    frozen.iter_from(next?).take(LOAD_ROWS).map(|(id, r)| (id, r.clone())).collect();
                next = match rows.last() {
                    Some((id, _)) if rows.len() == LOAD_ROWS => id.checked_add(1),
                    _ => None,
                };
                (!rows.is_empty()).then(|| Replicated::Load {
                    catalog: None,
                    ring: None,
                    table: Some(name.clone()),
                    rows,
                    last_ids,
                    complete: false,
                    decided: Vec::new(),
                })
            })
        });
        first.chain(rest).chain(last).map(|record| {
            let mut out = Vec::new();
            if let Err(e) = frame_record(&record, &mut out) {
                eprintln!("joule: a partition's copy cannot be encoded: {e}");
            }
            out
        })
    }
}

/// An answer as it travels back to the host that forwarded the call.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WireResponse {
    pub status: i8,
    /// (error code number, message).
    pub error: Option<(u16, String)>,
    pub app_status: i8,
    pub app_status_string: Option<String>,
    pub results: Vec<(Vec<OutputColumn>, Vec<Row>)>,
    pub ids: Option<TxnIds>,
    pub cluster_micros: u64,
}

impl From<&Response> for WireResponse {
    fn from(r: &Response) -> Self {
        WireResponse {
            status: r.status as i8,
            error: r.error.as_ref().map(|e| (e.code().number(), e.message().to_string())),
            app_status: r.app_status,
            app_status_string: r.app_status_string.clone(),
            results: r.results.iter().map(|t| (t.columns.to_vec(), t.rows.clone())).collect(),
            ids: r.ids,
            cluster_micros: r.cluster_micros,
        }
    }
}

impl WireResponse {
    pub fn into_response(self) -> Response {
        let error = self
            .error
            .map(|(code, message)| Error::new(ErrorCode::from_number(code).unwrap_or(ErrorCode::Internal), message));
        let results = self.results.into_iter().map(|(c, rows)| ResultTable::new(c.into(), rows)).collect();
        let mut r = match error {
            Some(e) => Response::failure(e, self.ids),
            None => Response::success(results, self.ids.unwrap_or(TxnIds::ZERO)),
        };
        r.status = Status::from_i8(self.status).unwrap_or(r.status);
        r.ids = self.ids;
        r.app_status = self.app_status;
        r.app_status_string = self.app_status_string;
        r.cluster_micros = self.cluster_micros;
        r
    }
}

/// Encode `value` (postcard).
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(value).map_err(|e| err!(Internal, "cannot encode a message for another host: {e}"))
}

/// Decode `bytes` (postcard); damage is `ProtocolError`, never a panic.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| err!(ProtocolError, "a malformed message from another host: {e}"))
}

/// Append `value` to `out` as a frame: `length (u32 LE) | postcard`,
/// encoded in place (on failure `out` is left as it was).
pub fn append_frame<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<()> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    if let Err(e) = postcard::to_io(value, &mut *out) {
        out.truncate(start);
        return Err(err!(Internal, "cannot encode a message for another host: {e}"));
    }
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

/// A single-partition record as a leader site frames it: borrowed from the
/// transaction it ran (no copy per transaction), encoded exactly as
/// [`Replicated::Sp`] (postcard writes the variant's index and its fields in
/// order, and a borrowed string or slice as the owned one).
#[derive(Serialize)]
pub(crate) enum SpRecord<'a> {
    Sp { ids: TxnIds, database: &'a str, procedure: &'a str, sql: Option<&'a str>, params: &'a [Value] },
}

/// Append `record` to `out`, framed.
pub fn frame_record(record: &Replicated, out: &mut Vec<u8>) -> Result<()> {
    append_frame(record, out)
}

/// [`Replicated::Load`]'s variant index, the first byte postcard writes for
/// one (a varint: one byte below 128).
const LOAD_TAG: u8 = 4;

/// Whether the first record framed in `bytes` is a piece of a copy
/// ([`Replicated::Load`]), told by its variant's tag alone: a piece holds
/// megabytes of rows, and this is asked on the host's network runtime
/// before the piece is decoded elsewhere (a record that does not decode
/// fails when it is applied).
pub(crate) fn first_is_load(bytes: &[u8]) -> bool {
    bytes.get(4) == Some(&LOAD_TAG)
}

/// The records framed in `bytes`, in order.
pub fn unframe_records(mut bytes: &[u8]) -> Result<Vec<Replicated>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < 4 {
            bail!(ProtocolError, "a replication record's length is cut short");
        }
        let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        let body = bytes.get(4..4 + len).ok_or_else(|| err!(ProtocolError, "a replication record is cut short"))?;
        out.push(decode(body)?);
        bytes = &bytes[4 + len..];
    }
    Ok(out)
}

/// A work item in the form another host can run: plans as data.
pub(crate) fn to_wire(item: &WorkItem) -> Result<WireItem> {
    Ok(match item {
        WorkItem::Execute { planned, params } => {
            WireItem::Execute { planned: (**planned).clone(), params: params.to_vec() }
        }
        WorkItem::Fragment { statement, fragment, params } => {
            let query = match &statement.mp {
                Some(crate::distribute::MpStatement::Read(q))
                | Some(crate::distribute::MpStatement::Insert { source: q, .. }) => q,
                _ => bail!(Internal, "fragment of a statement without a distributed read"),
            };
            let f = query.fragments.get(*fragment).ok_or_else(|| err!(Internal, "fragment {fragment} missing"))?;
            WireItem::Query {
                plan: f.plan.clone(),
                params: params.to_vec(),
                catalog_version: statement.planned.catalog_version,
            }
        }
        WorkItem::InsertRows { planned, rows } => {
            WireItem::InsertRows { planned: (**planned).clone(), rows: rows.clone() }
        }
        WorkItem::Query { plan, params, catalog_version } => {
            WireItem::Query { plan: (**plan).clone(), params: params.to_vec(), catalog_version: *catalog_version }
        }
        WorkItem::Checksum => WireItem::Checksum,
        WorkItem::ValidatePartitioning => WireItem::ValidatePartitioning,
        WorkItem::Freeze | WorkItem::PlaceRows(_) => {
            bail!(FeatureNotSupported, "snapshots of a cluster of several hosts are not available yet")
        }
        WorkItem::Evict { hashinator, table, tokens, keep } => {
            WireItem::Evict { ring: (**hashinator).clone(), table: table.clone(), tokens: *tokens, keep: *keep }
        }
        WorkItem::Admit { planned, rows, hashinator } => {
            WireItem::Admit { planned: (**planned).clone(), rows: rows.clone(), ring: (**hashinator).clone() }
        }
        WorkItem::ForgetTokens => WireItem::ForgetTokens,
        WorkItem::NextRing(ring) => WireItem::NextRing((**ring).clone()),
        WorkItem::ReplicatedRows => WireItem::ReplicatedRows,
        WorkItem::JoinPartition { catalog, rows } => {
            WireItem::JoinPartition { catalog: (**catalog).clone(), rows: rows.clone() }
        }
        WorkItem::Retire => WireItem::Retire,
        WorkItem::IndexTokens { rows } => WireItem::IndexTokens { rows: *rows },
    })
}

/// [`to_wire`], taking the item: the rows of the items that carry them
/// (a move's admitted rows, inserted rows, a joining partition's rows) move
/// into the wire form rather than being copied, since the caller (a proxy
/// about to send them) has no use for them afterwards.
pub(crate) fn into_wire(item: WorkItem) -> Result<WireItem> {
    Ok(match item {
        WorkItem::Admit { planned, rows, hashinator } => {
            WireItem::Admit { planned: Arc::unwrap_or_clone(planned), rows, ring: Arc::unwrap_or_clone(hashinator) }
        }
        WorkItem::InsertRows { planned, rows } => WireItem::InsertRows { planned: Arc::unwrap_or_clone(planned), rows },
        WorkItem::JoinPartition { catalog, rows } => {
            WireItem::JoinPartition { catalog: Arc::unwrap_or_clone(catalog), rows }
        }
        other => to_wire(&other)?,
    })
}

/// A travelled work item, ready for a site.
pub(crate) fn from_wire(item: WireItem) -> WorkItem {
    match item {
        WireItem::Execute { planned, params } => {
            WorkItem::Execute { planned: Arc::new(planned), params: params.into() }
        }
        WireItem::Query { plan, params, catalog_version } => {
            WorkItem::Query { plan: Box::new(plan), params: params.into(), catalog_version }
        }
        WireItem::InsertRows { planned, rows } => WorkItem::InsertRows { planned: Arc::new(planned), rows },
        WireItem::Checksum => WorkItem::Checksum,
        WireItem::ValidatePartitioning => WorkItem::ValidatePartitioning,
        WireItem::Evict { ring, table, tokens, keep } => {
            WorkItem::Evict { hashinator: Arc::new(ring), table, tokens, keep }
        }
        WireItem::Admit { planned, rows, ring } => {
            WorkItem::Admit { planned: Arc::new(planned), rows, hashinator: Arc::new(ring) }
        }
        WireItem::ForgetTokens => WorkItem::ForgetTokens,
        WireItem::NextRing(ring) => WorkItem::NextRing(Arc::new(ring)),
        WireItem::ReplicatedRows => WorkItem::ReplicatedRows,
        WireItem::JoinPartition { catalog, rows } => WorkItem::JoinPartition { catalog: Arc::new(catalog), rows },
        WireItem::Retire => WorkItem::Retire,
        WireItem::IndexTokens { rows } => WorkItem::IndexTokens { rows },
    }
}

pub(crate) fn result_to_wire(r: ItemResult) -> Result<WireResult> {
    Ok(match r {
        ItemResult::Exec(ExecResult::Rows { columns, rows }) => WireResult::Query { columns: columns.to_vec(), rows },
        ItemResult::Exec(ExecResult::Modified(n)) => WireResult::Modified(n),
        ItemResult::Exec(ExecResult::Done) => WireResult::Done,
        ItemResult::Rows(rows) => WireResult::Rows(rows),
        ItemResult::Tables(t) => WireResult::Tables(t),
        ItemResult::Frozen(_) => bail!(Internal, "a frozen partition cannot travel"),
        ItemResult::Evicted(tables) => WireResult::Evicted(tables.into_iter().map(|t| (t.table, t.rows)).collect()),
        ItemResult::Placed(rows) => WireResult::Placed(rows),
    })
}

pub(crate) fn result_from_wire(r: WireResult) -> ItemResult {
    match r {
        WireResult::Query { columns, rows } => ItemResult::Exec(ExecResult::Rows { columns: columns.into(), rows }),
        WireResult::Modified(n) => ItemResult::Exec(ExecResult::Modified(n)),
        WireResult::Done => ItemResult::Exec(ExecResult::Done),
        WireResult::Rows(rows) => ItemResult::Rows(rows),
        WireResult::Tables(t) => ItemResult::Tables(t),
        WireResult::Evicted(tables) => {
            ItemResult::Evicted(tables.into_iter().map(|(table, rows)| EvictedRows::new(table, rows)).collect())
        }
        WireResult::Placed(rows) => ItemResult::Placed(rows),
    }
}

/// The proxy for partition `partition`'s leader on another host: takes
/// what this host's coordinator (or a stale route) sends the partition and
/// carries it there — invocations forwarded, a multi-partition
/// transaction's marker, rounds and outcome through a [`RemoteSite`].
pub(crate) fn run_proxy(
    partition: u32,
    inbox: std::sync::mpsc::Receiver<SiteMsg>,
    work: std::sync::mpsc::Receiver<MpWork>,
    replies: std::sync::mpsc::Sender<MpReply>,
    link: Arc<dyn ClusterLink>,
) {
    while let Ok(msg) = inbox.recv() {
        match msg {
            SiteMsg::Sp(task) => crate::forwarding::forward_sp(&link, partition, task),
            // (A dropped `HandOver` reply says no site here hands over.)
            SiteMsg::Stats(_) | SiteMsg::Checksums(_) | SiteMsg::HandOver(_) | SiteMsg::ReviewHeld => {}
            SiteMsg::Replay(r) => {
                let e = err!(Unavailable, "partition {partition} has no replica on this host");
                r.sink.deliver(0, Response::failure(e, Some(r.ids)));
            }
            SiteMsg::Rejoin { reply, .. } => {
                let _ = reply.send(Err(err!(Unavailable, "partition {partition} has no replica on this host")));
            }
            SiteMsg::CompactLog { .. } => {}
            SiteMsg::Load { done, .. } => {
                let _ = done.send(Err(err!(Unavailable, "partition {partition} has no replica on this host")));
            }
            SiteMsg::Shutdown => {
                // Calls queued behind it are answered, not dropped.
                while let Ok(msg) = inbox.try_recv() {
                    if let SiteMsg::Sp(t) = msg {
                        t.sink
                            .deliver(t.handle, Response::failure(err!(Unavailable, "the host is shutting down"), None));
                    }
                }
                break;
            }
            SiteMsg::MpBegin(ids, _, _) => {
                let mut session = link.open_remote(partition).and_then(|mut s| s.begin(ids).map(|()| s));
                loop {
                    let Ok(w) = work.recv() else { return };
                    match w {
                        MpWork::Round { items, reply, ahead } => {
                            let results = match &mut session {
                                Ok(s) => items
                                    .into_iter()
                                    .map(into_wire)
                                    .collect::<Result<Vec<_>>>()
                                    .and_then(|items| s.round(items, ahead.is_some()))
                                    .map(|r| r.into_iter().map(result_from_wire).collect()),
                                Err(e) => Err(e.clone()),
                            };
                            let _ = reply.as_ref().unwrap_or(&replies).send(MpReply { partition, results });
                        }
                        // A session that never began ran nothing there:
                        // not in doubt, and nothing to roll back.
                        MpWork::Prepare { done, .. } => {
                            let _ = done.send(match &mut session {
                                Ok(s) => s.prepare(),
                                Err(_) => Ok(false),
                            });
                        }
                        MpWork::Commit { schema, done, .. } => {
                            if let Ok(s) = &mut session {
                                if s.finish(true, schema.is_some()).is_ok() {
                                    if let Some(d) = done {
                                        let _ = d.send(());
                                    }
                                }
                            }
                            break;
                        }
                        MpWork::Rollback { done } => {
                            if session.as_mut().map_or(true, |s| s.finish(false, false).is_ok()) {
                                if let Some(d) = done {
                                    let _ = d.send(());
                                }
                            }
                            break;
                        }
                        // Sent to a site, never through a proxy.
                        MpWork::Abandon | MpWork::Settle { .. } => {}
                    }
                }
            }
        }
    }
}

/// Drives a site here on behalf of the coordinator on another host: one
/// multi-partition transaction at a time, its marker, rounds and outcome.
/// Dropped in the middle of a transaction (the coordinator's host went
/// away), it rolls the transaction back.
pub struct SessionDriver {
    partition: u32,
    /// The coordinator's host.
    from: u64,
    inbox: std::sync::mpsc::Sender<SiteMsg>,
    /// The open transaction's work channel (the site reads it once it
    /// reaches the transaction's marker).
    work: Option<std::sync::mpsc::Sender<MpWork>>,
    replies: (std::sync::mpsc::Sender<MpReply>, std::sync::mpsc::Receiver<MpReply>),
}

impl SessionDriver {
    /// Whether a transaction is open (begun, not finished).
    pub fn is_open(&self) -> bool {
        self.work.is_some()
    }

    pub fn begin(&mut self, ids: TxnIds) -> Result<()> {
        if self.work.is_some() {
            bail!(ProtocolError, "a transaction is already open on partition {}", self.partition);
        }
        let (work, own) = std::sync::mpsc::channel();
        let by = crate::messages::Decider::RemoteCoordinator(self.from);
        self.inbox.send(SiteMsg::MpBegin(ids, Some(own), by)).map_err(|_| gone(self.partition))?;
        self.work = Some(work);
        Ok(())
    }

    pub fn round(&mut self, items: Vec<WireItem>, ahead: bool) -> Result<Vec<WireResult>> {
        let Some(work) = &self.work else {
            bail!(ProtocolError, "no transaction is open on partition {}", self.partition);
        };
        let items = items.into_iter().map(from_wire).collect();
        let (reply, ahead) = (Some(self.replies.0.clone()), ahead.then(|| work.clone()));
        work.send(MpWork::Round { items, reply, ahead }).map_err(|_| gone(self.partition))?;
        let reply = self.replies.1.recv().map_err(|_| gone(self.partition))?;
        reply.results?.into_iter().map(result_to_wire).collect()
    }

    /// Hold the writes until the outcome: whether the partition is in doubt.
    pub fn prepare(&mut self) -> Result<bool> {
        let Some(work) = &self.work else {
            bail!(ProtocolError, "no transaction is open on partition {}", self.partition);
        };
        let (done, prepared) = std::sync::mpsc::channel();
        work.send(MpWork::Prepare { work: work.clone(), done }).map_err(|_| gone(self.partition))?;
        prepared.recv().map_err(|_| gone(self.partition))?
    }

    /// Commit or roll back; returns once the partition's replicas have the
    /// outcome.
    pub fn finish(&mut self, commit: bool, schema_changed: bool) -> Result<()> {
        let Some(work) = self.work.take() else {
            bail!(ProtocolError, "no transaction is open on partition {}", self.partition);
        };
        let (done, confirmed) = std::sync::mpsc::channel();
        let outcome = if commit {
            MpWork::Commit { schema: None, hashinator: None, install: schema_changed, done: Some(done) }
        } else {
            MpWork::Rollback { done: Some(done) }
        };
        work.send(outcome).map_err(|_| gone(self.partition))?;
        confirmed.recv().map_err(|_| {
            err!(
                OutcomeUnknown,
                "partition {}: the outcome was not confirmed (this host no longer decides it)",
                self.partition
            )
        })
    }
}

impl Drop for SessionDriver {
    fn drop(&mut self) {
        // Rolls back an unprepared transaction; a prepared one waits for
        // whoever resolves it.
        if let Some(work) = &self.work {
            let _ = work.send(MpWork::Abandon);
        }
    }
}

impl crate::Host {
    /// A session for another host's coordinator to drive `partition`'s
    /// site here, which must lead it.
    pub fn remote_session(&self, partition: u32, from: u64) -> Result<SessionDriver> {
        let Some(site) = self.local_site(partition) else {
            bail!(Unavailable, "partition {partition} has no replica on this host");
        };
        if !self.shared().link.as_ref().is_some_and(|l| l.leads(partition)) {
            bail!(Unavailable, "this host does not lead partition {partition}");
        }
        Ok(SessionDriver { partition, from, inbox: site.clone(), work: None, replies: std::sync::mpsc::channel() })
    }
}

pub(crate) fn gone(partition: u32) -> Error {
    err!(Unavailable, "partition {partition}'s site here has stopped")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_frame_and_unframe_and_damage_is_an_error() {
        let ids = TxnIds::ZERO;
        let records = vec![
            Replicated::Sp {
                ids,
                database: "DEFAULT".into(),
                procedure: "Vote".into(),
                sql: None,
                params: vec![Value::Integer(5), Value::from("x"), Value::Float(f64::NAN), Value::Null],
            },
            Replicated::Mp { ids, items: vec![WireItem::Checksum] },
            Replicated::MpPrepare { ids, items: vec![WireItem::Checksum] },
            Replicated::MpDecide { txn: 7, commit: true },
        ];
        let mut bytes = Vec::new();
        for r in &records {
            frame_record(r, &mut bytes).unwrap();
        }
        let back = unframe_records(&bytes).unwrap();
        assert_eq!(back.len(), 4);
        // A copy's piece is told from the others by its tag alone.
        for r in &records {
            let mut one = Vec::new();
            frame_record(r, &mut one).unwrap();
            assert!(!first_is_load(&one), "{r:?}");
        }
        let load = Replicated::Load {
            catalog: None,
            ring: None,
            table: Some("T".into()),
            rows: vec![(1, vec![Value::Integer(1)])],
            last_ids: ids,
            complete: false,
            decided: Vec::new(),
        };
        let mut one = Vec::new();
        frame_record(&load, &mut one).unwrap();
        assert!(first_is_load(&one));
        assert!(!first_is_load(&one[..4]));
        match &back[0] {
            Replicated::Sp { procedure, params, .. } => {
                assert_eq!(procedure, "Vote");
                assert!(matches!(params[2], Value::Float(f) if f.is_nan()));
            }
            r => panic!("{r:?}"),
        }
        assert!(matches!(back[1], Replicated::Mp { .. }));
        assert!(matches!(back[2], Replicated::MpPrepare { .. }));
        assert!(matches!(back[3], Replicated::MpDecide { txn: 7, commit: true }));
        for cut in [1, 3, bytes.len() - 1] {
            let e = unframe_records(&bytes[..cut]).unwrap_err();
            assert_eq!(e.code(), ErrorCode::ProtocolError);
        }
        let mut junk = bytes.clone();
        junk[4] = 0xff;
        assert!(unframe_records(&junk).is_err());
    }

    #[test]
    fn a_partition_copy_ends_with_what_it_remembers_of_prepared_transactions() {
        let ring = crate::hashinator::Hashinator::even(4, 1).unwrap().with_range_moved(3, 30, 2).unwrap();
        let copy = PartitionCopy {
            catalog: Arc::new(joule_sql::catalog::Catalog::default()),
            ring: Arc::new(ring.clone()),
            tables: Vec::new(),
            last_ids: TxnIds::ZERO,
            decided: vec![(7, true), (9, false)],
        };
        let records: Vec<Replicated> = copy.into_batches().flat_map(|piece| unframe_records(&piece).unwrap()).collect();
        assert_eq!(records.len(), 2, "the catalog and ring, then the last part");
        match &records[0] {
            Replicated::Load { catalog: Some(_), ring: Some(r), complete: false, decided, .. } => {
                assert!(decided.is_empty());
                assert_eq!(r, &ring, "the ring the copy was taken under goes with its catalog");
            }
            r => panic!("{r:?}"),
        }
        match &records[1] {
            Replicated::Load { catalog: None, complete: true, decided, .. } => {
                assert_eq!(decided, &vec![(7, true), (9, false)])
            }
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn a_borrowed_record_encodes_as_the_owned_one() {
        let params = vec![Value::Integer(7), Value::from("x")];
        for sql in [None, Some("UPDATE t SET v = ? WHERE k = ?")] {
            let mut borrowed = Vec::new();
            let record = SpRecord::Sp { ids: TxnIds::ZERO, database: "DEFAULT", procedure: "P", sql, params: &params };
            append_frame(&record, &mut borrowed).unwrap();
            let owned = Replicated::Sp {
                ids: TxnIds::ZERO,
                database: "DEFAULT".into(),
                procedure: "P".into(),
                sql: sql.map(String::from),
                params: params.clone(),
            };
            let mut bytes = Vec::new();
            frame_record(&owned, &mut bytes).unwrap();
            assert_eq!(borrowed, bytes);
        }
    }

    #[test]
    fn responses_travel_with_their_error_codes() {
        let r = Response::failure(err!(UniqueViolation, "duplicate key"), None);
        let back = WireResponse::from(&r).into_response();
        assert_eq!(back.status, r.status);
        let e = back.error.unwrap();
        assert_eq!(e.code(), ErrorCode::UniqueViolation);
        assert_eq!(e.message(), "duplicate key");
        let ok =
            Response::success(vec![ResultTable::new(Vec::new().into(), vec![vec![Value::Integer(1)]])], TxnIds::ZERO);
        let back = WireResponse::from(&ok).into_response();
        assert!(back.error.is_none());
        assert_eq!(back.results[0].rows, vec![vec![Value::Integer(1)]]);
    }
}
