//! `@MoveRange`: giving ranges of hashinator tokens to other partitions,
//! rows and all, in one multi-partition transaction.
//!
//! The hashinator ring says which partition owns each token (see
//! `joule_common::hashinator`). Moving tokens `start..=end` to partition
//! `p` (or several disjoint ranges, each to its partition, at once: one
//! version more, [`Hashinator::with_range_moved`] for each) builds the
//! next ring version and then, inside one transaction that every site
//! joins at one point of its serial order (a partition that only takes
//! rows joins when they come, [`Coordinator::start_deferred`]):
//!
//! 1. each partition that owns part of the range gives up (deletes and
//!    returns) the rows of hash-partitioned tables that the next ring places
//!    elsewhere ([`WorkItem::Evict`]; views follow their source tables);
//! 2. the coordinator hands those rows to their new partition
//!    ([`WorkItem::Admit`], checked against the next ring);
//! 3. the commit installs the next ring on those sites and publishes it to
//!    the host's routing before the answer goes out.
//!
//! The partitions the move leaves alone (neither giving nor taking tokens)
//! are released as soon as they joined ([`Coordinator::release_uninvolved`]):
//! they take the outcome first, and run their own work while the others
//! move rows.
//!
//! So no reader or writer ever sees a row twice or not at all: until the
//! commit the rows and the ring are the old ones, and any failure rolls both
//! back. A single-partition call routed with the old ring that reaches a
//! site after the commit is sent on to the key's new owner (see
//! `crate::site`), and the commit is logged as the call `@MoveRange(start,
//! end, partition, ...)` (a triple per range), whose replay from the same
//! state moves the same rows in the same order — with or without a token
//! index, each range's `Evict` takes that range's rows, ascending by id.
//!
//! Range-partitioned tables and replicated tables do not move: their
//! placement does not depend on ring tokens, and the ring keeps its
//! partition count. A range-partitioned table's value ranges move by DDL
//! instead (`PARTITION TABLE ... ON PARTITIONS`): the coordinator applies
//! the new placement everywhere, then evicts and admits that table's rows
//! the same way ([`Coordinator::replace_ranges`]) in the same transaction.
//!
//! **On a cluster of several hosts** the same items travel to the leaders
//! on other hosts (`crate::remote::WireItem`, the ring whole) and reach
//! every replica inside its leader's prepare record, so each copy — and a
//! copy log replayed later — takes the next ring at the same point of its
//! stream as the rows (`Site::next_ring`; the receiving partition gets a
//! [`WorkItem::NextRing`] even if no row comes, since its replicas check
//! later writes against the ring). Partitions that neither give nor take
//! tokens keep their rings: their tokens are the same in both. The move
//! always prepares everywhere first, and then its commit point is the
//! next ring's record in the cluster metadata ([`Coordinator::record_ring`]):
//! recorded, it commits; refused, it rolls back; if the coordinator's host
//! fails before it knows, the next coordinator commits it exactly when the
//! metadata holds its ring (`crate::resolve`). Every host routes by the
//! metadata's ring, so the cluster never routes by a ring whose rows did
//! not move.

use crate::coordinator::Coordinator;
use crate::hashinator::Hashinator;
use crate::messages::{ItemResult, MpKind, MpWork, WorkItem};
use crate::response::{Response, ResultTable};
use joule_common::{bail, err, DataType, Result, Row, Value};
use joule_sql::catalog::Catalog;
use joule_sql::plan::OutputColumn;
use joule_sql::planner::{DdlPlan, Planned, PlannedKind};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The most row bytes one move carries on a cluster: its rows travel
/// between hosts in single frames (the data plane's limit is 256 MiB, and
/// encoding adds to the values), and every partition waits while it runs.
const CLUSTER_MOVE_BYTES: u64 = 64 << 20;

/// For a planned `PARTITION TABLE`: its named partitions checked against
/// the `partitions` there are, and — when it re-places a table already
/// placed by ranges — that table's qualified name (its rows must move).
pub(crate) fn replaced_table(planned: &Planned, catalog: &Catalog, partitions: usize) -> Result<Option<String>> {
    let PlannedKind::Ddl(DdlPlan::PartitionTable { table, owners, replace, .. }) = &planned.kind else {
        return Ok(None);
    };
    if let Some(p) = owners.as_deref().and_then(|o| o.iter().find(|p| **p as usize >= partitions)) {
        bail!(InvalidSchemaDefinition, "ON PARTITIONS names partition {p}, but partitions are 0 to {}", partitions - 1);
    }
    if !replace {
        return Ok(None);
    }
    let def = catalog.table_by_id(*table).ok_or_else(|| err!(Internal, "table #{table} is not in the catalog"))?;
    Ok(Some(def.qualified_name()))
}

/// `@MoveRange`'s optional last parameter (after each range's three),
/// taken off `params`: 1 to have the partitions giving rows up keep them by
/// token for the next moves (`@Rebalance`'s pieces), 0 (the default) not to.
pub(crate) fn keep_param(procedure: &str, params: &mut Vec<Value>) -> Result<bool> {
    if params.len() < 4 || params.len() % 3 != 1 {
        return Ok(false);
    }
    match params.pop() {
        Some(Value::Integer(0)) => Ok(false),
        Some(Value::Integer(1)) => Ok(true),
        Some(v) => {
            bail!(InvalidArgument, "{procedure}: the last parameter (keep the token index) must be 0 or 1, not {v}")
        }
        None => Ok(false),
    }
}

/// The parameters of a range move (`@MoveRange`, `@Rebalance`), checked:
/// (first token, last token, partition), the partition one of
/// `partitions`. Errors name `procedure`.
pub fn range_move_params(procedure: &str, params: &[Value], partitions: usize) -> Result<(i32, i32, u32)> {
    if params.len() != 3 {
        bail!(
            WrongParameterCount,
            "{procedure} takes the first token, the last token and the partition to give them to ({} given)",
            params.len()
        );
    }
    let int = |i: usize, what: &str| -> Result<i64> {
        match &params[i] {
            Value::Integer(v) => Ok(*v),
            v => bail!(DatatypeMismatch, "{procedure}: {what} must be an integer, not {}", v.type_name()),
        }
    };
    let token = |i: usize, what: &str| -> Result<i32> {
        let v = int(i, what)?;
        i32::try_from(v).map_err(|_| err!(InvalidArgument, "{procedure}: {what} {v} is not a token (a 32-bit integer)"))
    };
    let (start, end) = (token(0, "the first token")?, token(1, "the last token")?);
    if start > end {
        bail!(InvalidArgument, "{procedure}: the first token {start} is above the last {end}");
    }
    let p = int(2, "the partition")?;
    if p < 0 || p >= partitions as i64 {
        bail!(InvalidArgument, "{procedure}: partition {p} does not exist (partitions are 0 to {})", partitions - 1);
    }
    Ok((start, end, p as u32))
}

/// The ranges of a move of several (`@MoveRange(start, end, partition,
/// start, end, partition, ...)`), each checked as [`range_move_params`]
/// does, and disjoint.
pub(crate) fn range_moves_params(procedure: &str, params: &[Value], partitions: usize) -> Result<Vec<(i32, i32, u32)>> {
    if params.len() > 3 && !params.len().is_multiple_of(3) {
        bail!(
            WrongParameterCount,
            "{procedure} takes ranges of three parameters each (the first token, the last token and the partition \
             to give them to), then optionally 1 to keep the token index ({} given)",
            params.len()
        );
    }
    if params.len() <= 3 {
        return range_move_params(procedure, params, partitions).map(|r| vec![r]);
    }
    let mut ranges =
        params.chunks(3).map(|c| range_move_params(procedure, c, partitions)).collect::<Result<Vec<_>>>()?;
    ranges.sort_unstable();
    if let Some(w) = ranges.windows(2).find(|w| w[1].0 <= w[0].1) {
        bail!(InvalidArgument, "{procedure}: the ranges {}..={} and {}..={} overlap", w[0].0, w[0].1, w[1].0, w[1].1);
    }
    Ok(ranges)
}

/// Ranges as `@MoveRange`'s parameters (three each).
pub(crate) fn range_values(ranges: &[(i32, i32, u32)]) -> Vec<Value> {
    ranges.iter().flat_map(|(s, e, p)| [i64::from(*s), i64::from(*e), i64::from(*p)]).map(Value::Integer).collect()
}

/// The calls of a rebalance job (the server's `@Rebalance`).
impl crate::host::Client {
    /// `@MoveRange(start, end, partition)` as one piece of many (see the
    /// server's `@Rebalance`): the partitions giving rows up keep them by
    /// token for the next pieces, until [`Self::forget_tokens`]. Waits.
    pub fn move_range_piece(&mut self, start: i32, end: i32, partition: u32) -> Response {
        self.move_ranges_piece(&[(start, end, partition)])
    }

    /// Like [`Self::move_range_piece`], several disjoint ranges (each to
    /// its partition) in one transaction: the partitions involved evict and
    /// admit their rows at the same time.
    pub fn move_ranges_piece(&mut self, ranges: &[(i32, i32, u32)]) -> Response {
        let partitions = self.partition_count();
        let values = range_values(ranges);
        match range_moves_params("@MoveRange", &values, partitions) {
            Ok(ranges) => self.run_mp_and_wait(MpKind::MoveRange { ranges, keep: true }),
            Err(e) => Response::failure(e, None),
        }
    }

    /// Ranges will move off `partitions`: one step of building their
    /// indexes of rows by token, over the next `rows` row ids of each of
    /// their tables, each partition on its own site at the same time (every
    /// copy of each does the same). Answers one row, `ROWS_LEFT`: the row
    /// ids still to look at, summed over the partitions (0: every index is
    /// complete, and pieces find their rows through them). Waits.
    pub fn index_tokens(&mut self, partitions: &[u32], rows: u64) -> Response {
        let count = self.partition_count();
        if partitions.is_empty() || partitions.iter().any(|p| *p as usize >= count) || rows == 0 {
            let e = err!(InvalidArgument, "no step of {rows} rows can index partitions {partitions:?}");
            return Response::failure(e, None);
        }
        self.run_mp_and_wait(MpKind::IndexTokens { partitions: partitions.to_vec(), rows })
    }

    /// Moves of ranges are over: every copy of every partition stops
    /// keeping rows by token (see [`Self::move_range_piece`]). Waits.
    pub fn forget_tokens(&mut self) -> Response {
        self.run_mp_and_wait(MpKind::ForgetTokens)
    }
}

impl Coordinator {
    /// In a cluster: record `ring`, the next ring of transaction `ids`
    /// (prepared on every partition), in the cluster metadata. This is the
    /// transaction's commit point: it commits if the metadata took the
    /// ring, rolls back if the metadata refused it, and stays in doubt —
    /// for the next coordinator, which decides by the metadata — if this
    /// host lost the coordination before it could tell
    /// (`OutcomeUnknown`).
    pub(crate) fn record_ring(&self, ring: Option<&Arc<Hashinator>>, ids: crate::TxnIds) -> Result<()> {
        match (&self.shared.link, ring) {
            (Some(link), Some(ring)) => {
                // Prepared everywhere, not recorded: the next coordinator rolls back.
                joule_common::failpoint::crash_if_armed("coordinator-before-ring-recorded");
                link.record_ring(ring, ids.txn_id.0)?;
                // Recorded, committed nowhere: the next coordinator commits.
                joule_common::failpoint::crash_if_armed("coordinator-after-ring-recorded");
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Run the `evict` round, then hand every row it gave up to the
    /// partition that `ring` and the coordinator's catalog (the one the
    /// transaction installs) place it on. (Rows moved, their bytes.)
    /// Send the partitions a move leaves alone their outcome at once: they
    /// took the start marker (so each partition's order still places the
    /// move between the same transactions), but the move reads and writes
    /// nothing there, so committing it there first changes nothing — and
    /// they go back to their own work instead of waiting out the move's
    /// rounds, prepare and ring record. They keep their ring until a call
    /// routed by the next one reaches them (`Site::run_sp` takes the
    /// host's then): their own tokens are the same in both, so every check
    /// they make of a key's owner answers the same either way. (Were one of
    /// them to give tokens up or take some, the move would send it an item,
    /// and it would not be released.)
    pub(crate) fn release_uninvolved(&mut self, involved: &[bool]) {
        let cluster = self.shared.link.is_some();
        for p in (0..self.sites.len()).filter(|p| !involved[*p]) {
            let (done, confirmed) = std::sync::mpsc::channel();
            let outcome = MpWork::Commit { schema: None, hashinator: None, install: false, done: Some(done) };
            if self.work_target(p).send(outcome).is_ok() {
                self.released[p] = true;
                if cluster {
                    self.released_waits.push((p, confirmed));
                }
            }
        }
    }

    /// For a move of `ranges` (before it starts): mark in `deferred` the
    /// partitions that only take rows — the target of a range, giving up
    /// no token of any (`deferred` is all false before). Their
    /// start marker waits until the rows come (`start_deferred`): the move
    /// takes its place in their order then rather than at the start, which
    /// is as good a place (no other multi-partition transaction runs
    /// meanwhile, and the tokens they take are not theirs until the
    /// commit), and their own calls run on while the giving partitions
    /// evict — on a cluster, half or more of a piece's time.
    pub(crate) fn defer_taking(&mut self, ranges: &[(i32, i32, u32)]) {
        let taking = &mut self.deferred;
        for (_, _, to) in ranges {
            if let Some(t) = taking.get_mut(*to as usize) {
                *t = true;
            }
        }
        for (start, end, to) in ranges {
            for p in self.hashinator.owners_of(*start, *end) {
                if p != *to {
                    if let Some(t) = taking.get_mut(p as usize) {
                        *t = false;
                    }
                }
            }
        }
    }

    /// Send the partitions whose start was deferred their start marker:
    /// they join the transaction now, and hold from here to its outcome.
    pub(crate) fn start_deferred(&mut self, ids: crate::TxnIds) -> Result<()> {
        for p in 0..self.sites.len() {
            if !self.deferred[p] {
                continue;
            }
            let marker = crate::messages::SiteMsg::MpBegin(ids, None, crate::messages::Decider::Coordinator);
            if self.begin_target(p).send(marker).is_err() {
                bail!(Unavailable, "partition {p} is gone (shutting down)");
            }
            self.deferred[p] = false;
            self.released[p] = false;
        }
        Ok(())
    }

    /// Evict (`evict`: per site, its items), then admit the rows where
    /// `ring` places them; returns, per site and evict item, the rows and
    /// bytes of values it gave up. `late`: the transaction's ids, and the
    /// items of the partitions whose start was deferred, which start just
    /// before the admit round and take these items first in it. `whole`:
    /// per site and evict item, the partition `ring` gives that item's
    /// whole token range to, if it does (a range move's items): its rows go
    /// there without hashing their keys again (the admitting site checks
    /// each against `ring` all the same). Each site's entries follow its
    /// `Evict` items in order; other items in between take none.
    /// `prepare_givers`: on a cluster, the sites to prepare right behind
    /// their evict round (they take no rows: it is their last), their
    /// replicas taking the evictions while the rows are admitted; then
    /// every site the admit round asks is told to prepare behind it too
    /// (empty: none is, as in a move that is not the transaction's last step).
    pub(crate) fn relocate(
        &mut self,
        evict: Vec<Vec<WorkItem>>,
        ring: &Arc<Hashinator>,
        late: Option<(crate::TxnIds, Vec<Vec<WorkItem>>)>,
        whole: &[Vec<u32>],
        prepare_givers: &[bool],
    ) -> Result<Vec<Vec<(u64, u64)>>> {
        let n = self.sites.len();
        // Gathered by table, partitions in order: the same on every run.
        // Each site item's rows stay together, with the partition they all
        // go to when the item says.
        type Chunks = Vec<(Option<u32>, Vec<Row>)>;
        let mut by_table: BTreeMap<String, Chunks> = BTreeMap::new();
        let mut per_item: Vec<Vec<(u64, u64)>> = Vec::with_capacity(n);
        for (site, results) in self.round_then_prepare(evict, prepare_givers)?.into_iter().enumerate() {
            let mut counts = Vec::with_capacity(results.len());
            // The site's evict items answer in order, whatever else it ran.
            let mut evicts = whole.get(site).map(|w| w.iter().copied());
            for item in results {
                let (mut rows_given, mut bytes_given) = (0u64, 0u64);
                if let ItemResult::Evicted(tables) = item {
                    let to = evicts.as_mut().and_then(|w| w.next());
                    for t in tables {
                        rows_given += t.rows.len() as u64;
                        bytes_given += t.bytes;
                        by_table.entry(t.table).or_default().push((to, t.rows));
                    }
                }
                counts.push((rows_given, bytes_given));
            }
            per_item.push(counts);
        }
        let moved_bytes: u64 = per_item.iter().flatten().map(|(_, b)| b).sum();
        if self.shared.link.is_some() && moved_bytes > CLUSTER_MOVE_BYTES {
            bail!(
                InvalidArgument,
                "this move carries {moved_bytes} bytes of rows, and one move between the hosts of a cluster carries at \
                 most {CLUSTER_MOVE_BYTES}: move hash ranges with @Rebalance (in pieces), value ranges in smaller steps"
            );
        }
        let catalog = self.schema_db.catalog_arc().clone();
        let mut admit: Vec<Vec<WorkItem>> = match late {
            Some((ids, items)) => {
                self.start_deferred(ids)?;
                items
            }
            None => (0..n).map(|_| Vec::new()).collect(),
        };
        for (name, chunks) in by_table {
            let def = catalog
                .tables()
                .find(|t| t.qualified_name() == name)
                .ok_or_else(|| err!(Internal, "a moved row's table {name} is not in the catalog"))?;
            let pc = def.partition_column.ok_or_else(|| err!(Internal, "moved rows of unpartitioned {name}"))?;
            let planned = crate::snapshot::insert_plan(&catalog, def)?;
            let mut per_site: Vec<Vec<Row>> = (0..n).map(|_| Vec::new()).collect();
            fn site(per_site: &mut [Vec<Row>], p: usize) -> Result<&mut Vec<Row>> {
                per_site.get_mut(p).ok_or_else(|| err!(Internal, "a moved row's partition {p} does not exist"))
            }
            for (to, rows) in chunks {
                match to {
                    Some(to) => {
                        let into = site(&mut per_site, to as usize)?;
                        if into.is_empty() {
                            *into = rows;
                        } else {
                            into.extend(rows);
                        }
                    }
                    None => {
                        for row in rows {
                            let p = def.partition_of(&row[pc], ring)? as usize;
                            site(&mut per_site, p)?.push(row);
                        }
                    }
                }
            }
            for (p, rows) in per_site.into_iter().enumerate() {
                if !rows.is_empty() {
                    admit[p].push(WorkItem::Admit { planned: planned.clone(), rows, hashinator: ring.clone() });
                }
            }
        }
        let prepare_takers = if prepare_givers.is_empty() { Vec::new() } else { vec![true; n] };
        self.round_then_prepare(admit, &prepare_takers)?;
        Ok(per_item)
    }

    /// After a `PARTITION TABLE` that splits or moves the value ranges of
    /// `table` (already applied on every site and in the coordinator's
    /// catalog): move the rows its new placement puts elsewhere.
    /// (`run_ddl` refuses it on a cluster before anything runs.)
    pub(crate) fn replace_ranges(&mut self, table: &str) -> Result<()> {
        let ring = self.hashinator.clone();
        let evict = (0..self.sites.len())
            .map(|_| {
                let table = Some(table.to_string());
                vec![WorkItem::Evict { hashinator: ring.clone(), table, tokens: None, keep: false }]
            })
            .collect();
        self.relocate(evict, &ring, None, &[], &[])?;
        Ok(())
    }

    /// `@IndexTokens`: one step of building the token index of each of
    /// `partitions` (see `crate::evict`), side by side; the other
    /// partitions are released at once. Answers `ROWS_LEFT`, the row ids
    /// still to look at (summed).
    pub(crate) fn index_tokens(&mut self, partitions: &[u32], rows: u64) -> Result<Vec<ResultTable>> {
        let n = self.sites.len();
        if let Some(p) = partitions.iter().find(|p| **p as usize >= n) {
            bail!(InvalidArgument, "there is no partition {p}");
        }
        let mut items: Vec<Vec<WorkItem>> = (0..n).map(|_| Vec::new()).collect();
        for p in partitions {
            if items[*p as usize].is_empty() {
                items[*p as usize].push(WorkItem::IndexTokens { rows });
            }
        }
        let involved: Vec<bool> = items.iter().map(|i| !i.is_empty()).collect();
        self.release_uninvolved(&involved);
        let mut left = 0u64;
        for result in self.round(items)?.into_iter().flatten() {
            if let ItemResult::Exec(joule_engine::ExecResult::Modified(n)) = result {
                left += n;
            }
        }
        let columns = vec![OutputColumn { name: "ROWS_LEFT".to_string(), data_type: Some(DataType::BigInt) }];
        Ok(vec![ResultTable::new(columns.into(), vec![vec![Value::Integer(left as i64)]])])
    }

    /// Move each range of `ranges` (disjoint, in token order) and its rows
    /// to its partition; the next ring — one version on — goes to `next`
    /// for the commit to install. Answers a row per range.
    pub(crate) fn move_range(
        &mut self,
        ranges: &[(i32, i32, u32)],
        keep: bool,
        ids: crate::TxnIds,
        next: &mut Option<Arc<Hashinator>>,
    ) -> Result<Vec<ResultTable>> {
        // Every range moved, as one version after the current ring.
        let mut moved = (*self.hashinator).clone();
        for (start, end, to) in ranges {
            moved = moved.with_range_moved(*start, *end, *to)?;
        }
        let ring = Arc::new(Hashinator::over(
            self.hashinator.version() + 1,
            moved.ring().to_vec(),
            self.hashinator.partition_count(),
        )?);
        let n = self.sites.len();
        let mut evict: Vec<Vec<WorkItem>> = (0..n).map(|_| Vec::new()).collect();
        // Per site, the range each of its evict items is for.
        let mut of_range: Vec<Vec<usize>> = (0..n).map(|_| Vec::new()).collect();
        // Per site, the partition each of its evict items gives its rows to
        // (the next ring gives it the item's whole range).
        let mut whole: Vec<Vec<u32>> = (0..n).map(|_| Vec::new()).collect();
        for (r, (start, end, to)) in ranges.iter().enumerate() {
            for p in self.hashinator.owners_of(*start, *end) {
                if p != *to {
                    let tokens = Some((*start, *end));
                    evict[p as usize].push(WorkItem::Evict { hashinator: ring.clone(), table: None, tokens, keep });
                    of_range[p as usize].push(r);
                    whole[p as usize].push(*to);
                }
            }
        }
        // Every partition whose tokens change takes the next ring with the
        // transaction, the receiving one too if no row comes (its replicas
        // check later writes against it); the others keep their tokens.
        // A partition that only takes rows starts with the admit round, so
        // it takes it there (see `Coordinator::start_deferred`).
        let mut late: Vec<Vec<WorkItem>> = (0..n).map(|_| Vec::new()).collect();
        for (_, _, to) in ranges {
            let to = *to as usize;
            let items = if self.deferred[to] { &mut late[to] } else { &mut evict[to] };
            if items.iter().all(|i| !matches!(i, WorkItem::NextRing(_))) {
                items.push(WorkItem::NextRing(ring.clone()));
            }
        }
        let involved: Vec<bool> = (0..n).map(|p| !evict[p].is_empty() || self.deferred[p]).collect();
        self.release_uninvolved(&involved);
        // The move's last step: every site prepares behind its last round,
        // those that only give rows right after their evict.
        let givers: Vec<bool> =
            (0..n).map(|p| !evict[p].is_empty() && ranges.iter().all(|(_, _, to)| *to as usize != p)).collect();
        let per_item = self.relocate(evict, &ring, Some((ids, late)), &whole, &givers)?;
        let mut per_range = vec![(0u64, 0u64); ranges.len()];
        for (site, counts) in per_item.iter().enumerate() {
            for (&r, (rows, bytes)) in of_range[site].iter().zip(counts) {
                per_range[r].0 += rows;
                per_range[r].1 += bytes;
            }
        }
        let version = ring.version();
        *next = Some(ring);
        let col = |name: &str, t| OutputColumn { name: name.to_string(), data_type: Some(t) };
        let columns = vec![
            col("FIRST_TOKEN", DataType::BigInt),
            col("LAST_TOKEN", DataType::BigInt),
            col("PARTITION_ID", DataType::Integer),
            col("MOVED_ROWS", DataType::BigInt),
            col("MOVED_BYTES", DataType::BigInt),
            col("HASHINATOR_VERSION", DataType::BigInt),
        ];
        let rows = ranges
            .iter()
            .zip(per_range)
            .map(|((start, end, to), (rows, bytes))| {
                vec![
                    Value::Integer(i64::from(*start)),
                    Value::Integer(i64::from(*end)),
                    Value::Integer(i64::from(*to)),
                    Value::Integer(rows as i64),
                    Value::Integer(bytes as i64),
                    Value::Integer(version as i64),
                ]
            })
            .collect();
        Ok(vec![ResultTable::new(columns.into(), rows)])
    }
}
