//! The catalog: every database, table, index and view, as schema (no data).
//!
//! Names are case-insensitive and stored upper-case, as VoltDB reports them.
//! Databases are namespaces: `db.table` reaches any of them, bare names use the
//! session's current database (`DEFAULT` unless chosen). Every table and
//! materialized view gets a [`TableId`] that never changes while it exists and
//! is never reused, so plans and storage refer to tables by id, not by name.
//!
//! The catalog is a plain value: DDL builds a changed copy, checks it, and
//! swaps it in, so a failed schema change leaves nothing behind. Storage (in
//! `joule-engine`) is kept in step by the code that applies the change.

use crate::expr::AggKind;
use joule_common::hashinator::{Hashinator, PartitionId};
use joule_common::{bail, err, DataType, Result, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The name of the database used when none is chosen.
pub const DEFAULT_DATABASE: &str = "DEFAULT";

/// Stable identity of a table or materialized view.
pub type TableId = u32;

/// One column of a table.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ColumnDef {
    pub name: String,
    pub data_type: DataType,
    /// VARCHAR/VARBINARY limit; `None` for other types.
    pub max_len: Option<u32>,
    /// VARCHAR(n BYTES): the limit counts bytes, not characters.
    pub len_in_bytes: bool,
    pub nullable: bool,
    /// Constant DEFAULT value (NULL when absent and nullable).
    pub default: Option<Value>,
}

impl ColumnDef {
    /// The SQL spelling of this column's type, e.g. `VARCHAR(32 BYTES)`.
    pub fn type_sql(&self) -> String {
        match (self.data_type, self.max_len) {
            (DataType::Varchar, Some(n)) if self.len_in_bytes => format!("VARCHAR({n} BYTES)"),
            (t @ (DataType::Varchar | DataType::Varbinary), Some(n)) => format!("{t}({n})"),
            (t, _) => t.to_string(),
        }
    }
}

/// Index structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum IndexKind {
    /// Ordered (B-tree): equality, ranges and ORDER BY.
    Tree,
    /// Hashed: equality only.
    Hash,
}

/// An index (or a PRIMARY KEY / UNIQUE constraint's index) on a table.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct IndexDef {
    pub name: String,
    /// Indexed columns, by position in the table, in key order.
    pub columns: Vec<usize>,
    pub unique: bool,
    /// ASSUMEUNIQUE: unique within a partition (checked like UNIQUE here).
    pub assume_unique: bool,
    pub primary_key: bool,
    pub kind: IndexKind,
}

/// How a materialized view derives from its source table.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MaterializedView {
    pub source: TableId,
    /// Source column positions of the GROUP BY keys; the view's first columns.
    pub group_by: Vec<usize>,
    /// Aggregates after the keys: kind and source column (`None` = COUNT(*)).
    pub aggregates: Vec<(AggKind, Option<usize>)>,
}

/// A table or a materialized view's table.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TableDef {
    pub id: TableId,
    pub database: String,
    pub name: String,
    pub columns: Vec<ColumnDef>,
    /// Indexes; the primary key, when there is one, is among them.
    pub indexes: Vec<IndexDef>,
    /// `PARTITION TABLE t ON COLUMN c`: the partition column; `None` = replicated.
    pub partition_column: Option<usize>,
    /// `... USING RANGE (b1, ..., bn)`: the boundaries (ascending, of the
    /// partition column's type) placing rows by value instead of by the
    /// hashinator — see [`KeyRoute`]. A view grouping by its source's
    /// partition column has its source's.
    pub partition_ranges: Option<Arc<[Value]>>,
    /// `... ON PARTITIONS (p0, ..., pn)`: the partition of each range (one
    /// more than the boundaries); `None` deals range `i` to partition
    /// `i mod P`.
    pub range_owners: Option<Arc<[PartitionId]>>,
    /// Set when this table is a materialized view.
    pub view: Option<MaterializedView>,
}

impl TableDef {
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    pub fn primary_key(&self) -> Option<&IndexDef> {
        self.indexes.iter().find(|i| i.primary_key)
    }

    pub fn primary_key_position(&self) -> Option<usize> {
        self.indexes.iter().position(|i| i.primary_key)
    }

    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.database, self.name)
    }

    /// The partition owning a row whose partition column holds `key`
    /// (already of the column's type): by value range or by hash.
    pub fn partition_of(&self, key: &Value, hashinator: &Hashinator) -> Result<PartitionId> {
        match &self.partition_ranges {
            Some(bounds) => {
                Ok(range_partition(self.range_owners.as_deref(), range_of(bounds, key), hashinator.partition_count()))
            }
            None => hashinator.partition_for(key),
        }
    }

    /// How a value of the partition column finds its partition (`None`:
    /// replicated, or a view without its source's partition column).
    pub fn key_route(&self) -> Option<KeyRoute> {
        let pc = self.partition_column?;
        Some(KeyRoute {
            key_type: self.columns[pc].data_type,
            ranges: self.partition_ranges.clone(),
            owners: self.range_owners.clone(),
        })
    }
}

/// How a partition key finds its partition: cast to the partition column's
/// type, then placed by the table's value ranges if it has them, by the
/// cluster's hashinator otherwise.
///
/// Range placement: boundaries `b1 < … < bn` make `n + 1` ranges — range 0
/// holds keys below `b1`, range `i` keys from `bi` (included) to `b(i+1)`
/// (excluded), range `n` keys from `bn` up — and range `i` lives on
/// partition `i mod P`, `P` the cluster's partition count, unless the
/// table names each range's partition (`ON PARTITIONS (p0, …, pn)`). So
/// `P - 1` boundaries give each partition one contiguous range; splitting
/// a range is adding a boundary, moving one is naming another partition.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KeyRoute {
    pub key_type: DataType,
    pub ranges: Option<Arc<[Value]>>,
    /// Each range's partition (see [`TableDef::range_owners`]).
    pub owners: Option<Arc<[PartitionId]>>,
}

impl KeyRoute {
    /// Placed by the hashinator.
    pub fn hashed(key_type: DataType) -> KeyRoute {
        KeyRoute { key_type, ranges: None, owners: None }
    }

    /// The partition owning `value` (cast to the key type first).
    pub fn partition(&self, value: &Value, hashinator: &Hashinator) -> Result<PartitionId> {
        let key = partition_key(value, self.key_type)?;
        match &self.ranges {
            None => hashinator.partition_for(&key),
            Some(bounds) => {
                Ok(range_partition(self.owners.as_deref(), range_of(bounds, &key), hashinator.partition_count()))
            }
        }
    }

    /// Whether every key lands on the same partition under both routes
    /// (integers of any width hash alike; ranges must be the same).
    pub fn same_placement(&self, other: &KeyRoute) -> bool {
        let types = self.key_type == other.key_type || (self.key_type.is_integer() && other.key_type.is_integer());
        types && self.ranges == other.ranges && self.owners == other.owners
    }
}

/// The range (index) holding `key` among ascending `bounds`.
pub fn range_of(bounds: &[Value], key: &Value) -> usize {
    bounds.partition_point(|b| b <= key)
}

/// The partition of range `range` among `partitions`: the one `owners`
/// names, or `range mod partitions`. (Owners are checked against the
/// partition count when they are declared; one past it — a catalog that
/// never went through that check — wraps rather than indexes out of bounds.)
pub fn range_partition(owners: Option<&[PartitionId]>, range: usize, partitions: u32) -> PartitionId {
    let partitions = partitions.max(1);
    match owners.and_then(|o| o.get(range)) {
        Some(p) => p % partitions,
        None => (range % partitions as usize) as PartitionId,
    }
}

/// A key value as the partition column's type: integers of any width as
/// they are, other values cast (an impossible cast is the caller's error).
pub fn partition_key(value: &Value, key_type: DataType) -> Result<Value> {
    match value {
        Value::Null => Ok(Value::Null),
        Value::Integer(_) if key_type.is_integer() => Ok(value.clone()),
        Value::String(_) if key_type == DataType::Varchar => Ok(value.clone()),
        Value::Binary(_) if key_type == DataType::Varbinary => Ok(value.clone()),
        v => v.cast(key_type),
    }
}

/// A plain (non-materialized) view: its query text, expanded at planning time.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ViewDef {
    pub database: String,
    pub name: String,
    pub column_names: Vec<String>,
    pub query_sql: String,
}

/// Where a single-partition procedure runs: the partition owning the value of
/// parameter `parameter`, hashed as `table.column` would be.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProcedurePartition {
    pub database: String,
    pub table: String,
    pub column: String,
    /// Zero-based index of the parameter holding the partition key.
    pub parameter: usize,
}

/// What a procedure runs.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ProcedureBody {
    /// `AS stmt` or `AS BEGIN stmt; ...; END`: SQL statements in order. The
    /// procedure's parameters feed the statements' `?`s in order.
    Statements(Vec<String>),
    /// `FROM CLASS name`: native code registered under this class name.
    Class(String),
}

/// A stored procedure, as declared (its statements are planned by the
/// transaction layer whenever the schema changes, never per call).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProcedureDef {
    /// Case-sensitive, as clients call it.
    pub name: String,
    /// The database its statements' unqualified names resolve in.
    pub database: String,
    /// `None`: a multi-partition procedure.
    pub partition: Option<ProcedurePartition>,
    /// `ALLOW role, ...`: roles that may call it (empty: everyone).
    pub roles: Vec<String>,
    pub body: ProcedureBody,
}

/// One database namespace.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DatabaseDef {
    pub tables: BTreeMap<String, Arc<TableDef>>,
    pub views: BTreeMap<String, Arc<ViewDef>>,
}

/// The whole schema.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Catalog {
    pub databases: BTreeMap<String, DatabaseDef>,
    /// Stored procedures by (case-sensitive) name.
    pub procedures: BTreeMap<String, Arc<ProcedureDef>>,
    /// Next table id to hand out; ids are never reused.
    pub next_table_id: TableId,
    /// Bumped by every schema change; plans remember the version they saw.
    pub version: u64,
}

impl Default for Catalog {
    fn default() -> Self {
        let mut databases = BTreeMap::new();
        databases.insert(DEFAULT_DATABASE.to_string(), DatabaseDef::default());
        Catalog { databases, procedures: BTreeMap::new(), next_table_id: 1, version: 0 }
    }
}

/// What a name resolved to.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum Relation {
    Table(Arc<TableDef>),
    View(Arc<ViewDef>),
}

impl Catalog {
    pub fn database(&self, name: &str) -> Result<&DatabaseDef> {
        self.databases.get(name).ok_or_else(|| err!(UndefinedObject, "database {name} does not exist"))
    }

    pub fn database_mut(&mut self, name: &str) -> Result<&mut DatabaseDef> {
        self.databases.get_mut(name).ok_or_else(|| err!(UndefinedObject, "database {name} does not exist"))
    }

    /// Resolve a table or view name in a database.
    pub fn relation(&self, database: &str, name: &str) -> Result<Relation> {
        let db = self.database(database)?;
        if let Some(t) = db.tables.get(name) {
            return Ok(Relation::Table(t.clone()));
        }
        if let Some(v) = db.views.get(name) {
            return Ok(Relation::View(v.clone()));
        }
        bail!(UndefinedTable, "table or view {name} does not exist in database {database}")
    }

    pub fn table(&self, database: &str, name: &str) -> Result<&Arc<TableDef>> {
        self.database(database)?
            .tables
            .get(name)
            .ok_or_else(|| err!(UndefinedTable, "table {name} does not exist in database {database}"))
    }

    pub fn table_by_id(&self, id: TableId) -> Option<&Arc<TableDef>> {
        self.tables().find(|t| t.id == id)
    }

    /// Every table in every database, in name order.
    pub fn tables(&self) -> impl Iterator<Item = &Arc<TableDef>> {
        self.databases.values().flat_map(|d| d.tables.values())
    }

    /// Whether a table's rows are split among partitions: a partitioned
    /// table, or a materialized view of one (which may lack a partition
    /// column when it does not group by it).
    pub fn is_partitioned(&self, table: &TableDef) -> bool {
        table.partition_column.is_some()
            || table
                .view
                .as_ref()
                .and_then(|v| self.table_by_id(v.source))
                .is_some_and(|source| source.partition_column.is_some())
    }

    /// Materialized views whose source is `table`.
    pub fn views_on(&self, table: TableId) -> Vec<TableId> {
        self.tables().filter(|t| t.view.as_ref().is_some_and(|v| v.source == table)).map(|t| t.id).collect()
    }

    /// Whether `name` is taken by a table or view in `database`.
    pub fn name_taken(&self, database: &str, name: &str) -> bool {
        self.databases.get(database).is_some_and(|d| d.tables.contains_key(name) || d.views.contains_key(name))
    }

    /// The table owning an index name in a database.
    pub fn index_owner(&self, database: &str, index: &str) -> Option<&Arc<TableDef>> {
        self.databases.get(database)?.tables.values().find(|t| t.indexes.iter().any(|i| i.name == index))
    }

    pub fn allocate_table_id(&mut self) -> TableId {
        let id = self.next_table_id;
        self.next_table_id += 1;
        id
    }
}
