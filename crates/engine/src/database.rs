//! The in-process database: one partition's catalog, storage and undo log,
//! executing SQL statements.
//!
//! [`Database`] is what a site (one thread owning one partition) drives. It
//! plans statements through `joule-sql`, caches ad hoc plans by their text,
//! and executes them against its [`Storage`]. Every statement is atomic: it
//! takes an undo-log mark first and rolls back to it on any error, so a
//! failed statement leaves no trace. Several statements form one
//! transaction between [`Database::begin`] and [`Database::commit`] /
//! [`Database::rollback`]; without `begin`, each statement commits alone.
//!
//! Schema changes build the new catalog and the new storage for the tables
//! they touch before swapping either in, so a DDL statement that fails on
//! the data (a unique index over duplicates) changes nothing.

use crate::eval::{eval, Context};
use crate::exec;
use crate::storage::{RowId, Storage, UndoLog, UndoOp};
use crate::views;
use joule_common::{bail, err, Result, Row, Value};
use joule_sql::catalog::{Catalog, TableDef, TableId, DEFAULT_DATABASE};
use joule_sql::expr::Expr;
use joule_sql::functions::FunctionContext;
use joule_sql::plan::{OutputColumn, Plan};
use joule_sql::planner::{self, DeletePlan, InsertPlan, Planned, PlannedKind, UpdatePlan};
use std::collections::HashMap;
use std::sync::Arc;

/// The result of one statement.
#[derive(Clone, Debug, PartialEq)]
pub enum ExecResult {
    /// A query's rows. `columns` is shared with the plan.
    Rows { columns: Arc<[OutputColumn]>, rows: Vec<Row> },
    /// INSERT/UPDATE/DELETE/UPSERT/TRUNCATE: rows changed.
    Modified(u64),
    /// DDL and other statements without a result.
    Done,
}

/// A statement planned once, executable many times with parameters.
#[derive(Clone, Debug)]
pub struct Prepared {
    planned: Arc<Planned>,
}

impl Prepared {
    pub fn param_count(&self) -> usize {
        self.planned.param_count
    }

    pub fn planned(&self) -> &Planned {
        &self.planned
    }
}

/// Most ad hoc plans kept by text.
const PLAN_CACHE_LIMIT: usize = 1024;

/// Decides whether this partition owns a partition key: the transaction
/// layer installs one per site so that a single-partition transaction
/// cannot write a row another partition owns.
pub trait PartitionOwner: Send + Sync {
    /// `Ok` if this partition owns `key` (the value of `table`'s partition
    /// column `column`, already of the column's type); otherwise a
    /// `Mispartitioned` error naming the owner.
    fn check(&self, table: &TableDef, column: usize, key: &Value) -> Result<()>;
}

/// An in-process JouleDB database: one partition, one thread.
pub struct Database {
    pub(crate) catalog: Arc<Catalog>,
    pub(crate) storage: Storage,
    pub(crate) undo: UndoLog,
    pub(crate) database: String,
    pub(crate) in_transaction: bool,
    pub(crate) plan_cache: HashMap<String, Arc<Planned>>,
    /// Transaction counter: the deterministic source of NOW() and seeds
    /// when no transaction layer supplies them (see `set_function_context`).
    txn_counter: u64,
    functions: FunctionContext,
    /// Materialized views by source table, rebuilt on every schema change.
    pub(crate) views: HashMap<TableId, Arc<[TableId]>>,
    /// Rejects writes of rows this partition does not own.
    owner: Option<Arc<dyn PartitionOwner>>,
}

impl Default for Database {
    fn default() -> Self {
        Self::new()
    }
}

impl Database {
    pub fn new() -> Database {
        Database {
            catalog: Arc::new(Catalog::default()),
            storage: Storage::new(),
            undo: UndoLog::new(),
            database: DEFAULT_DATABASE.to_string(),
            in_transaction: false,
            plan_cache: HashMap::new(),
            txn_counter: 0,
            functions: FunctionContext::default(),
            views: HashMap::new(),
            owner: None,
        }
    }

    /// The catalog as a shareable value.
    pub fn catalog_arc(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// Install (or remove) the check that written rows belong here.
    pub fn set_partition_owner(&mut self, owner: Option<Arc<dyn PartitionOwner>>) {
        self.owner = owner;
    }

    /// Whether a transaction is open.
    pub fn in_transaction(&self) -> bool {
        self.in_transaction
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The current database for unqualified names.
    pub fn current_database(&self) -> &str {
        &self.database
    }

    /// Set the function context (transaction timestamp and random seed) for
    /// the statements that follow. The transaction layer calls this with
    /// the transaction's id-derived values.
    pub fn set_function_context(&mut self, ctx: FunctionContext) {
        self.functions = ctx;
    }

    /// Execute one or more `;`-separated statements; returns the last result.
    pub fn execute(&mut self, sql: &str) -> Result<ExecResult> {
        let statements = joule_sql::parser::parse(sql)?;
        if statements.is_empty() {
            bail!(SyntaxError, "syntax error: empty statement");
        }
        let mut last = ExecResult::Done;
        for stmt in statements {
            let planned = match self.plan_cache.get(&stmt.sql) {
                Some(p) if p.catalog_version == self.catalog.version && !matches!(p.kind, PlannedKind::Ddl(_)) => {
                    p.clone()
                }
                _ => {
                    let p = Arc::new(planner::plan(&stmt, &self.catalog, &self.database)?);
                    if !matches!(p.kind, PlannedKind::Ddl(_) | PlannedKind::UseDatabase(_)) {
                        if self.plan_cache.len() >= PLAN_CACHE_LIMIT {
                            self.plan_cache.clear();
                        }
                        self.plan_cache.insert(stmt.sql.clone(), p.clone());
                    }
                    p
                }
            };
            if planned.param_count > 0 {
                bail!(
                    WrongParameterCount,
                    "statement has {} ? parameters; prepare it and pass values",
                    planned.param_count
                );
            }
            last = self.run(&planned, &[])?;
        }
        Ok(last)
    }

    /// Plan a single statement with `?` parameters.
    pub fn prepare(&mut self, sql: &str) -> Result<Prepared> {
        let stmt = joule_sql::parser::parse_single(sql)?;
        Ok(Prepared { planned: Arc::new(planner::plan(&stmt, &self.catalog, &self.database)?) })
    }

    /// Execute a prepared statement.
    pub fn execute_prepared(&mut self, stmt: &Prepared, params: &[Value]) -> Result<ExecResult> {
        if stmt.planned.catalog_version != self.catalog.version {
            bail!(SchemaChangeConflict, "the schema changed since this statement was prepared; prepare it again");
        }
        if params.len() != stmt.planned.param_count {
            bail!(
                WrongParameterCount,
                "statement takes {} parameter(s) but {} were given",
                stmt.planned.param_count,
                params.len()
            );
        }
        self.run(&stmt.planned, params)
    }

    /// Execute a statement planned elsewhere (by the transaction layer,
    /// against this partition's catalog version).
    pub fn execute_planned(&mut self, planned: &Planned, params: &[Value]) -> Result<ExecResult> {
        if planned.catalog_version != self.catalog.version {
            bail!(SchemaChangeConflict, "the schema changed since this statement was planned; plan it again");
        }
        if params.len() != planned.param_count {
            bail!(
                WrongParameterCount,
                "statement takes {} parameter(s) but {} were given",
                planned.param_count,
                params.len()
            );
        }
        self.run(planned, params)
    }

    /// Run a read-only plan (a multi-partition query's fragment or its
    /// final step) with rows for its `Plan::Input` slots.
    pub fn query(&self, plan: &Plan, params: &[Value], inputs: &[Vec<Row>]) -> Result<Vec<Row>> {
        let ctx = Context { inputs, ..self.context(params) };
        exec::collect(plan, &ctx)
    }

    /// Insert rows computed elsewhere (a multi-partition INSERT ... SELECT
    /// whose source spans partitions) as `plan` would insert its source's
    /// rows. Atomic like any statement.
    pub fn insert_rows(&mut self, plan: &InsertPlan, rows: Vec<Row>) -> Result<ExecResult> {
        self.statement(|db| db.insert_source(plan, rows))
    }

    /// Recovery: place a snapshot's rows of table `table` at their row ids
    /// (see `Table::place_row`); views are not maintained (their rows come
    /// the same way). Undone with the transaction like any insert.
    pub fn place_rows(&mut self, table: TableId, rows: Vec<(RowId, Row)>) -> Result<()> {
        let t = self.storage.table_mut(table)?;
        for (id, row) in rows {
            t.place_row(id, row)?;
            self.undo.record(UndoOp::Inserted { table, id });
        }
        Ok(())
    }

    /// Take `catalog` as this database's schema, with empty storage for
    /// each of its tables — a copy of another database's schema, whose rows
    /// then come through [`place_rows`](Self::place_rows). Only for a
    /// database that holds no tables and runs no transaction.
    pub fn load_catalog(&mut self, catalog: Arc<Catalog>) -> Result<()> {
        if self.in_transaction || self.storage.tables().next().is_some() {
            return Err(joule_common::err!(Internal, "a catalog can only be loaded into an empty database"));
        }
        for def in catalog.tables() {
            self.storage.create_table(def.clone())?;
        }
        self.install_catalog(catalog);
        Ok(())
    }

    /// Start a multi-statement transaction.
    pub fn begin(&mut self) {
        self.in_transaction = true;
    }

    /// Whether the running transaction has changed anything (rows or
    /// schema) so far.
    pub fn has_changes(&self) -> bool {
        !self.undo.is_empty()
    }

    /// Commit the running transaction.
    pub fn commit(&mut self) {
        self.undo.clear();
        self.in_transaction = false;
    }

    /// Roll back the running transaction, schema changes included.
    pub fn rollback(&mut self) -> Result<()> {
        let r = self.rollback_to(0);
        self.in_transaction = false;
        r
    }

    /// Undo everything after `mark`, putting back the catalog of any schema
    /// change among it.
    fn rollback_to(&mut self, mark: usize) -> Result<()> {
        let schema = self.undo.schema_since(mark);
        let r = self.undo.rollback_to(mark, &mut self.storage);
        if let Some((catalog, database)) = schema {
            self.database = database;
            self.install_catalog(catalog);
        }
        r
    }

    fn run(&mut self, planned: &Planned, params: &[Value]) -> Result<ExecResult> {
        self.statement(|db| db.run_statement(planned, params))
    }

    /// Run one statement atomically: on error, it leaves no trace.
    fn statement(&mut self, f: impl FnOnce(&mut Self) -> Result<ExecResult>) -> Result<ExecResult> {
        if !self.in_transaction {
            self.txn_counter += 1;
        }
        let mark = self.undo.mark();
        let result = f(self);
        if result.is_err() {
            self.rollback_to(mark)?;
        }
        if !self.in_transaction {
            self.undo.clear();
        }
        result
    }

    fn context<'a>(&'a self, params: &'a [Value]) -> Context<'a> {
        Context { storage: &self.storage, params, outer: None, functions: self.functions, inputs: &[] }
    }

    /// An order-independent checksum of every table's rows (and the set of
    /// tables), equal on any two partitions holding the same data however
    /// it got there. For determinism and replica checks.
    pub fn checksum(&self) -> u64 {
        self.table_checksums().iter().fold(0u64, |acc, (name, sum)| {
            acc.rotate_left(5) ^ fnv(name.as_bytes()) ^ sum.wrapping_mul(0x100_0000_01b3)
        })
    }

    /// Per table (qualified name, in name order): row count and an
    /// order-independent hash of its rows, folded into one value.
    pub fn table_checksums(&self) -> Vec<(String, u64)> {
        use std::hash::{Hash, Hasher};
        self.catalog
            .tables()
            .map(|def| {
                let Ok(t) = self.storage.table(def.id) else { return (def.qualified_name(), 0) };
                let mut sum = t.len() as u64;
                for (_, row) in t.scan() {
                    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
                    row.hash(&mut h);
                    sum = sum.wrapping_add(h.finish());
                }
                (def.qualified_name(), sum)
            })
            .collect()
    }

    fn run_statement(&mut self, planned: &Planned, params: &[Value]) -> Result<ExecResult> {
        match &planned.kind {
            PlannedKind::Query(q) => {
                let ctx = self.context(params);
                let rows = exec::collect(&q.root, &ctx)?;
                Ok(ExecResult::Rows { columns: q.columns.clone(), rows })
            }
            PlannedKind::Insert(i) => self.insert(i, params),
            PlannedKind::Update(u) => self.update(u, params),
            PlannedKind::Delete(d) => self.delete(d, params),
            PlannedKind::Truncate(t) => {
                if !self.views_on(*t).is_empty() {
                    let ids: Vec<RowId> = self.storage.table(*t)?.scan().map(|(id, _)| id).collect();
                    return self.delete_ids(*t, ids);
                }
                let rows = self.storage.table_mut(*t)?.truncate();
                let n = rows.len() as u64;
                self.undo.record(UndoOp::Truncated { table: *t, rows });
                Ok(ExecResult::Modified(n))
            }
            PlannedKind::UseDatabase(d) => {
                // Cached plans resolved unqualified names in the old database.
                self.plan_cache.clear();
                self.database = d.clone();
                Ok(ExecResult::Done)
            }
            PlannedKind::Explain(lines) => Ok(ExecResult::Rows {
                columns: vec![OutputColumn {
                    name: "EXECUTION_PLAN".into(),
                    data_type: Some(joule_common::DataType::Varchar),
                }]
                .into(),
                rows: lines.iter().map(|l| vec![Value::String(l.clone())]).collect(),
            }),
            PlannedKind::Ddl(d) => {
                if self.in_transaction && self.undo.has_data_changes() {
                    bail!(FeatureNotSupported, "schema changes cannot follow writes in the same transaction");
                }
                self.apply_ddl(d)?;
                Ok(ExecResult::Done)
            }
        }
    }

    fn insert(&mut self, plan: &InsertPlan, params: &[Value]) -> Result<ExecResult> {
        let width = self.storage.table(plan.table)?.def().columns.len();
        let all_in_order = plan.columns.len() == width && plan.columns.iter().enumerate().all(|(i, c)| i == *c);
        // Read the source fully first: INSERT ... SELECT may read the target.
        let source: Vec<Row> = {
            let ctx = self.context(params);
            match &plan.source {
                // One VALUES row naming every column: build the row directly;
                // `VALUES (?, ?, ...)` in parameter order is the parameters.
                Plan::Values { rows, .. } if rows.len() == 1 && all_in_order && !plan.upsert => {
                    let direct = rows[0].len() == params.len()
                        && rows[0].iter().enumerate().all(|(i, e)| matches!(e, Expr::Parameter(p) if *p == i));
                    let row = if direct {
                        params.to_vec()
                    } else {
                        rows[0].iter().map(|e| eval(e, &[], &ctx)).collect::<Result<Row>>()?
                    };
                    return self.insert_one(plan.table, row);
                }
                source => exec::collect(source, &ctx)?,
            }
        };
        self.insert_source(plan, source)
    }

    /// Insert (or upsert) evaluated source rows, in `plan.columns` order.
    fn insert_source(&mut self, plan: &InsertPlan, source: Vec<Row>) -> Result<ExecResult> {
        let def = self.storage.table(plan.table)?.def().clone();
        let all_in_order =
            plan.columns.len() == def.columns.len() && plan.columns.iter().enumerate().all(|(i, c)| i == *c);
        let views = self.views_on(plan.table);
        let defaults: Row = def.columns.iter().map(|c| c.default.clone().unwrap_or(Value::Null)).collect();
        let mut count = 0;
        for values in source {
            let row = if all_in_order {
                values
            } else {
                let mut row = defaults.clone();
                for (v, col) in values.into_iter().zip(&plan.columns) {
                    row[*col] = v;
                }
                row
            };
            if plan.upsert {
                self.upsert_row(&def, &views, row, &plan.columns)?;
            } else {
                self.insert_one(plan.table, row)?;
            }
            count += 1;
        }
        Ok(ExecResult::Modified(count))
    }

    /// Insert one full row, maintaining views.
    fn insert_one(&mut self, table: TableId, row: Row) -> Result<ExecResult> {
        let id = self.storage.table_mut(table)?.insert(row)?;
        self.undo.record(UndoOp::Inserted { table, id });
        self.check_owner(table, id)?;
        if let Some(views) = if self.views.is_empty() { None } else { self.views.get(&table) } {
            let new = self.storage.table(table)?.get(id).cloned();
            views::maintain(&mut self.storage, &mut self.undo, views, id, None, new.as_ref())?;
        }
        Ok(ExecResult::Modified(1))
    }

    /// Insert, or replace the listed columns of the row with the same key.
    fn upsert_row(&mut self, def: &TableDef, views: &[TableId], row: Row, columns: &[usize]) -> Result<()> {
        let table = self.storage.table(def.id)?;
        let row = table.coerce_row(row)?;
        let pk = def.primary_key_position().ok_or_else(|| err!(Internal, "UPSERT without primary key"))?;
        let key: Vec<Value> = def.indexes[pk].columns.iter().map(|c| row[*c].clone()).collect();
        match table.index_get_unique(pk, &key) {
            Some(id) => {
                let mut new = table.get(id).cloned().ok_or_else(|| err!(Internal, "indexed row missing"))?;
                for c in columns {
                    new[*c] = row[*c].clone();
                }
                let old = self.storage.table_mut(def.id)?.update(id, new)?;
                self.undo.record(UndoOp::Updated { table: def.id, id, old: old.clone() });
                self.check_owner(def.id, id)?;
                let new = self.storage.table(def.id)?.get(id).cloned();
                if !views.is_empty() {
                    views::maintain(&mut self.storage, &mut self.undo, views, id, Some(&old), new.as_ref())?;
                }
            }
            None => {
                let id = self.storage.table_mut(def.id)?.insert(row)?;
                self.undo.record(UndoOp::Inserted { table: def.id, id });
                self.check_owner(def.id, id)?;
                if !views.is_empty() {
                    let new = self.storage.table(def.id)?.get(id).cloned();
                    views::maintain(&mut self.storage, &mut self.undo, views, id, None, new.as_ref())?;
                }
            }
        }
        Ok(())
    }

    /// Rows chosen by a DML source scan.
    fn chosen_rows(&self, source: &Plan, params: &[Value]) -> Result<Vec<(RowId, Row)>> {
        let Plan::Scan { table, access, filter } = source else {
            bail!(Internal, "DML source must be a scan");
        };
        let ctx = self.context(params);
        let t = self.storage.table(*table)?;
        exec::scan(t, access, filter.as_ref(), ctx)?.map(|r| r.map(|(id, row)| (id, row.clone()))).collect()
    }

    fn update(&mut self, plan: &UpdatePlan, params: &[Value]) -> Result<ExecResult> {
        // Compute every new row against the old state, then write.
        let chosen = self.chosen_rows(&plan.source, params)?;
        let mut changes = Vec::with_capacity(chosen.len());
        {
            let ctx = self.context(params);
            for (id, old) in chosen {
                let mut new = old.clone();
                for (col, e) in &plan.assignments {
                    new[*col] = eval(e, &old, &ctx)?;
                }
                changes.push((id, new));
            }
        }
        let views = self.views_on(plan.table);
        let n = changes.len() as u64;
        for (id, new) in changes {
            let old = self.storage.table_mut(plan.table)?.update(id, new)?;
            self.undo.record(UndoOp::Updated { table: plan.table, id, old: old.clone() });
            self.check_owner(plan.table, id)?;
            if !views.is_empty() {
                let new = self.storage.table(plan.table)?.get(id).cloned();
                views::maintain(&mut self.storage, &mut self.undo, &views, id, Some(&old), new.as_ref())?;
            }
        }
        Ok(ExecResult::Modified(n))
    }

    fn delete(&mut self, plan: &DeletePlan, params: &[Value]) -> Result<ExecResult> {
        let ids: Vec<RowId> = self.chosen_rows(&plan.source, params)?.into_iter().map(|(id, _)| id).collect();
        self.delete_ids(plan.table, ids)
    }

    /// Keep `table`'s row ids by the token of `column` while ranges move
    /// out (see [`Table::track_tokens`](crate::storage::Table::track_tokens)).
    pub fn track_tokens(&mut self, table: TableId, column: usize) -> Result<()> {
        self.storage.table_mut(table)?.track_tokens(column);
        Ok(())
    }

    /// Build `table`'s index of row ids by the token of `column` a step at a
    /// time (see [`Table::track_tokens_step`](crate::storage::Table::track_tokens_step)):
    /// the row ids left to look at after this step (0: complete).
    pub fn track_tokens_step(&mut self, table: TableId, column: usize, limit: usize) -> Result<usize> {
        Ok(self.storage.table_mut(table)?.track_tokens_step(column, limit))
    }

    /// Stop keeping row ids by token, in every table.
    pub fn untrack_tokens(&mut self) {
        self.storage.untrack_tokens();
    }

    /// Delete rows `ids` of `table` and hand them back, in `ids` order
    /// (moving rows to another partition). Views are maintained and the
    /// deletes are undone with the transaction, like a DELETE statement.
    pub fn take_rows(&mut self, table: TableId, ids: Vec<RowId>) -> Result<Vec<Row>> {
        let mut taken = Vec::with_capacity(ids.len());
        self.statement(|db| {
            let views = db.views_on(table);
            for id in ids {
                let row = db.storage.table_mut(table)?.delete(id)?;
                // Kept encoded for a rollback (recorded before the views'
                // maintenance, which may fail); the row itself leaves.
                if let Err(e) = db.undo.record_taken(table, id, &row) {
                    db.undo.record(UndoOp::Deleted { table, id, row });
                    return Err(e);
                }
                if !views.is_empty() {
                    views::maintain(&mut db.storage, &mut db.undo, &views, id, Some(&row), None)?;
                }
                taken.push(row);
            }
            Ok(ExecResult::Modified(taken.len() as u64))
        })?;
        Ok(taken)
    }

    fn delete_ids(&mut self, table: TableId, ids: Vec<RowId>) -> Result<ExecResult> {
        let views = self.views_on(table);
        let n = ids.len() as u64;
        for id in ids {
            let row = self.storage.table_mut(table)?.delete(id)?;
            if !views.is_empty() {
                // A failed maintenance still leaves the row to put back.
                if let Err(e) = views::maintain(&mut self.storage, &mut self.undo, &views, id, Some(&row), None) {
                    self.undo.record(UndoOp::Deleted { table, id, row });
                    return Err(e);
                }
            }
            self.undo.record(UndoOp::Deleted { table, id, row });
        }
        Ok(ExecResult::Modified(n))
    }

    /// With a partition owner installed, fail if row `id` of `table` (just
    /// written, and already in the undo log) belongs to another partition.
    fn check_owner(&self, table: TableId, id: RowId) -> Result<()> {
        let Some(owner) = &self.owner else { return Ok(()) };
        let t = self.storage.table(table)?;
        let def = t.def();
        match (def.partition_column, t.get(id)) {
            (Some(pc), Some(row)) => owner.check(def, pc, &row[pc]),
            _ => Ok(()),
        }
    }

    /// Materialized views over `table` (empty for most tables).
    fn views_on(&self, table: TableId) -> Arc<[TableId]> {
        self.views.get(&table).cloned().unwrap_or_else(|| Arc::from(Vec::new()))
    }
}

/// FNV-1a, 64-bit: a fixed hash (std's hashers are seeded per process).
struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    h.write(bytes);
    h.finish()
}
