//! The transaction layer's part in snapshots: freezing every partition at
//! one point of the serial order, and loading rows back.
//!
//! A snapshot is a multi-partition transaction ([`Client::snapshot`]): every
//! site reaches it at the same point of its order, freezes its tables —
//! one reference count per 4096 rows, since row slots are copied on write
//! (see `joule_engine::storage`) — and goes back to work; the coordinator
//! asks the command log to start a new segment (so that every record
//! before the snapshot lies in older segments) and hands the frozen
//! partitions to a [`SnapshotTarget`], which writes them on its own
//! threads. The transaction's id names the point: the log records a
//! snapshot covers are exactly those before it (see the durability
//! crate's `LogRecord::covered_by`).
//!
//! Every table is frozen with its row ids, materialized views included;
//! replicated tables on partition 0 only. The schema goes along as the DDL
//! that built it, in order ([`FrozenDatabase::ddl`]).
//!
//! Two ways back, both multi-partition transactions:
//!
//! * [`Client::place_rows`] (recovery): each partition gets its own rows at
//!   their original ids, views' rows included, so the slabs — and with them
//!   the ids later inserts get and the order of scans — are exactly as
//!   they were; replaying the log then reproduces what happened;
//! * [`Client::load_rows`] (`@SnapshotRestore`): rows of base tables go to
//!   the partition the hashinator names (the partition count may differ
//!   from the snapshot's), replicated rows to every partition, each through
//!   the same checks an INSERT makes; views are maintained as they go.
//!
//! [`Client::snapshot`]: crate::Client::snapshot
//! [`Client::load_rows`]: crate::Client::load_rows
//! [`Client::place_rows`]: crate::Client::place_rows

use crate::coordinator::Coordinator;
use crate::ids::TxnIds;
use crate::logging::Answer;
use crate::messages::{ItemResult, WorkItem};
use crate::response::ResultTable;
use joule_common::{bail, err, DataType, Result, Row, Value};
use joule_engine::storage::{FrozenRows, RowId};
use joule_sql::catalog::{Catalog, TableDef, DEFAULT_DATABASE};
use joule_sql::plan::OutputColumn;
use joule_sql::planner::Planned;
use std::sync::Arc;

/// One table of one partition, frozen.
#[derive(Debug)]
pub struct FrozenTable {
    pub def: Arc<TableDef>,
    pub rows: FrozenRows,
    /// Replicated (the same rows, at the same ids, on every partition;
    /// frozen on partition 0 only).
    pub replicated: bool,
}

/// One partition's tables, frozen.
#[derive(Debug)]
pub struct FrozenPartition {
    pub partition: u32,
    pub tables: Vec<FrozenTable>,
    /// How long the site spent freezing, microseconds.
    pub pause_micros: u64,
    /// The last ids the site's generator issued: ids after a restore must
    /// come after them.
    pub last_ids: TxnIds,
}

/// Every partition at one point.
pub struct FrozenDatabase {
    /// The snapshot transaction's ids.
    pub ids: TxnIds,
    pub partitions: Vec<FrozenPartition>,
    /// The DDL that built the schema: (session database, statements), in
    /// the order it ran.
    pub ddl: Vec<(String, String)>,
    /// The command-log segment being written at the snapshot (0: no log):
    /// older segments hold only records the snapshot covers.
    pub log_segment: u64,
    /// The ring the frozen rows are placed by.
    pub hashinator: Arc<crate::hashinator::Hashinator>,
}

/// Where frozen partitions go (the durability crate's snapshot writer).
pub trait SnapshotTarget: Send + Sync {
    /// Called on the coordinator thread as soon as the transaction ends;
    /// must hand the writing to another thread and return. `answer` is the
    /// caller's, to deliver when the target sees fit (at once, or once the
    /// files are written).
    fn frozen(&self, database: FrozenDatabase, answer: Answer);
}

impl Coordinator {
    /// Freeze every partition (one round) and note the log segment being
    /// written: the segments before it hold only records from before this
    /// point (see [`crate::logging::CommandLog::current_segment`]).
    pub(crate) fn freeze(&mut self, ids: TxnIds) -> Result<FrozenDatabase> {
        let results = self.round((0..self.sites.len()).map(|_| vec![WorkItem::Freeze]).collect())?;
        let mut partitions = Vec::with_capacity(results.len());
        for r in results {
            for item in r {
                if let ItemResult::Frozen(p) = item {
                    partitions.push(p);
                }
            }
        }
        let log_segment = self.log.as_ref().map_or(0, |log| log.current_segment());
        Ok(FrozenDatabase {
            ids,
            partitions,
            ddl: self.ddl_history.clone(),
            log_segment,
            hashinator: self.hashinator.clone(),
        })
    }

    /// Insert rows into tables named by their qualified names (or, in the
    /// default database, their bare names), each row
    /// where the hashinator puts it (replicated tables: everywhere).
    pub(crate) fn load_rows(&mut self, tables: &[(String, Vec<Row>)]) -> Result<Vec<ResultTable>> {
        let mut loaded = Vec::new();
        for (name, rows) in tables {
            let catalog = self.schema_db.catalog_arc().clone();
            let def = catalog
                .tables()
                .find(|t| {
                    t.qualified_name().eq_ignore_ascii_case(name)
                        || (!name.contains('.') && t.database == DEFAULT_DATABASE && t.name.eq_ignore_ascii_case(name))
                })
                .ok_or_else(|| err!(UndefinedTable, "table {name} does not exist"))?
                .clone();
            if def.view.is_some() {
                bail!(InvalidArgument, "{name} is a view: its rows come from its source table");
            }
            let width = def.columns.len();
            if let Some(bad) = rows.iter().find(|r| r.len() != width) {
                bail!(
                    ColumnCountMismatch,
                    "a row for {name} has {} values, but the table has {width} columns",
                    bad.len()
                );
            }
            let planned = insert_plan(&catalog, &def)?;
            let n = self.sites.len();
            let mut per_site: Vec<Vec<Row>> = (0..n).map(|_| Vec::new()).collect();
            match def.partition_column.filter(|_| catalog.is_partitioned(&def)) {
                Some(pc) => {
                    let route = def.key_route().ok_or_else(|| err!(Internal, "{} has no partition key", def.name))?;
                    for row in rows {
                        per_site[route.partition(&row[pc], &self.hashinator)? as usize].push(row.clone());
                    }
                }
                None => per_site.iter_mut().for_each(|s| s.extend(rows.iter().cloned())),
            }
            let items = per_site
                .into_iter()
                .map(|rows| {
                    if rows.is_empty() {
                        Vec::new()
                    } else {
                        vec![WorkItem::InsertRows { planned: planned.clone(), rows }]
                    }
                })
                .collect();
            self.round(items)?;
            loaded.push(vec![Value::String(def.qualified_name()), Value::Integer(rows.len() as i64)]);
        }
        let col = |name: &str, t| OutputColumn { name: name.to_string(), data_type: Some(t) };
        let columns = vec![col("TABLE_NAME", DataType::Varchar), col("ROWS_LOADED", DataType::BigInt)];
        Ok(vec![ResultTable::new(columns.into(), loaded)])
    }
}

/// An INSERT of whole rows into `def`, planned against `catalog`: how rows
/// computed by the coordinator (loaded, or moved) reach a site.
pub(crate) fn insert_plan(catalog: &Catalog, def: &TableDef) -> Result<Arc<Planned>> {
    let placeholders = vec!["?"; def.columns.len()].join(", ");
    let sql = format!("INSERT INTO {} VALUES ({placeholders})", def.qualified_name());
    let stmt = joule_sql::parser::parse_single(&sql)?;
    Ok(Arc::new(joule_sql::planner::plan(&stmt, catalog, DEFAULT_DATABASE)?))
}

/// Rows by table name with their row ids, for one partition.
pub type PartitionRows = Vec<(String, Vec<(RowId, Row)>)>;

impl Coordinator {
    /// Put each partition's rows at their ids (recovery).
    pub(crate) fn place_rows(&mut self, per_partition: &[PartitionRows]) -> Result<Vec<ResultTable>> {
        if per_partition.len() != self.sites.len() {
            bail!(
                RecoveryFailed,
                "rows for {} partitions cannot be placed on {}",
                per_partition.len(),
                self.sites.len()
            );
        }
        let items = per_partition.iter().map(|rows| vec![WorkItem::PlaceRows(rows.clone())]).collect();
        self.round(items)?;
        Ok(Vec::new())
    }
}
