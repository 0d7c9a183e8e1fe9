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
use crate::storage::{RowId, Storage, Table, UndoLog, UndoOp};
use crate::views;
use joule_common::{bail, err, Result, Row, Value};
use joule_sql::catalog::{Catalog, DatabaseDef, TableDef, TableId, DEFAULT_DATABASE};
use joule_sql::expr::Expr;
use joule_sql::functions::FunctionContext;
use joule_sql::plan::{OutputColumn, Plan};
use joule_sql::planner::{self, ColumnSource, DdlPlan, DeletePlan, InsertPlan, Planned, PlannedKind, UpdatePlan};
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

/// An in-process JouleDB database: one partition, one thread.
pub struct Database {
    catalog: Arc<Catalog>,
    storage: Storage,
    undo: UndoLog,
    database: String,
    in_transaction: bool,
    plan_cache: HashMap<String, Arc<Planned>>,
    /// Transaction counter: the deterministic source of NOW() and seeds
    /// until the transaction layer supplies real transaction ids.
    txn_counter: u64,
    functions: FunctionContext,
    /// Materialized views by source table, rebuilt on every schema change.
    views: HashMap<TableId, Arc<[TableId]>>,
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
        }
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

    /// Start a multi-statement transaction.
    pub fn begin(&mut self) {
        self.in_transaction = true;
    }

    /// Commit the running transaction.
    pub fn commit(&mut self) {
        self.undo.clear();
        self.in_transaction = false;
    }

    /// Roll back the running transaction.
    pub fn rollback(&mut self) -> Result<()> {
        let r = self.undo.rollback(&mut self.storage);
        self.in_transaction = false;
        r
    }

    fn run(&mut self, planned: &Planned, params: &[Value]) -> Result<ExecResult> {
        if !self.in_transaction {
            self.txn_counter += 1;
        }
        let mark = self.undo.mark();
        let result = self.run_statement(planned, params);
        if result.is_err() {
            // The statement leaves no trace.
            self.undo.rollback_to(mark, &mut self.storage)?;
        }
        if !self.in_transaction {
            self.undo.clear();
        }
        result
    }

    fn context<'a>(&'a self, params: &'a [Value]) -> Context<'a> {
        Context { storage: &self.storage, params, outer: None, functions: self.functions }
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
                if self.in_transaction && !self.undo.is_empty() {
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
        let def = self.storage.table(plan.table)?.def().clone();
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
                let new = self.storage.table(def.id)?.get(id).cloned();
                if !views.is_empty() {
                    views::maintain(&mut self.storage, &mut self.undo, views, id, Some(&old), new.as_ref())?;
                }
                self.undo.record(UndoOp::Updated { table: def.id, id, old });
            }
            None => {
                let id = self.storage.table_mut(def.id)?.insert(row)?;
                self.undo.record(UndoOp::Inserted { table: def.id, id });
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

    fn delete_ids(&mut self, table: TableId, ids: Vec<RowId>) -> Result<ExecResult> {
        let views = self.views_on(table);
        let n = ids.len() as u64;
        for id in ids {
            let row = self.storage.table_mut(table)?.delete(id)?;
            if !views.is_empty() {
                views::maintain(&mut self.storage, &mut self.undo, &views, id, Some(&row), None)?;
            }
            self.undo.record(UndoOp::Deleted { table, id, row });
        }
        Ok(ExecResult::Modified(n))
    }

    /// Apply a schema change to a copy of the catalog and the affected
    /// tables, then swap both in.
    fn apply_ddl(&mut self, ddl: &DdlPlan) -> Result<()> {
        let mut catalog = (*self.catalog).clone();
        match ddl {
            DdlPlan::Noop => return Ok(()),
            DdlPlan::CreateDatabase(name) => {
                catalog.databases.insert(name.clone(), DatabaseDef::default());
            }
            DdlPlan::DropDatabase(name) => {
                let db = catalog
                    .databases
                    .remove(name)
                    .ok_or_else(|| err!(UndefinedObject, "database {name} does not exist"))?;
                for t in db.tables.values() {
                    self.storage.drop_table(t.id);
                }
                if self.database == *name {
                    self.database = DEFAULT_DATABASE.to_string();
                }
            }
            DdlPlan::CreateTable(def) => {
                let mut def = def.clone();
                def.id = catalog.allocate_table_id();
                let def = Arc::new(def);
                catalog.database_mut(&def.database)?.tables.insert(def.name.clone(), def.clone());
                self.storage.create_table(def)?;
            }
            DdlPlan::DropTables(ids) => {
                for id in ids {
                    let def = catalog.table_by_id(*id).cloned().ok_or_else(|| err!(Internal, "table #{id} missing"))?;
                    catalog.database_mut(&def.database)?.tables.remove(&def.name);
                }
                for id in ids {
                    self.storage.drop_table(*id);
                }
            }
            DdlPlan::CreateIndex { table, index } => {
                let mut def = (**self.table_def(*table)?).clone();
                def.indexes.push(index.clone());
                let def = Arc::new(def);
                self.storage.table_mut(*table)?.add_index(def.clone(), def.indexes.len() - 1)?;
                replace_def(&mut catalog, def)?;
            }
            DdlPlan::DropIndex { table, name } => {
                let mut def = (**self.table_def(*table)?).clone();
                let pos = def
                    .indexes
                    .iter()
                    .position(|i| i.name == *name)
                    .ok_or_else(|| err!(UndefinedObject, "index {name} does not exist"))?;
                def.indexes.remove(pos);
                let def = Arc::new(def);
                self.storage.table_mut(*table)?.drop_index(def.clone(), pos)?;
                replace_def(&mut catalog, def)?;
            }
            DdlPlan::AlterTable { table, def, row_map } => {
                let mut def = def.clone();
                def.id = *table;
                let def = Arc::new(def);
                self.storage.table_mut(*table)?.replace_def(def.clone(), |old: Row| {
                    Ok(row_map
                        .iter()
                        .map(|s| match s {
                            ColumnSource::Existing(i) => old.get(*i).cloned().unwrap_or(Value::Null),
                            ColumnSource::Fill(v) => v.clone(),
                        })
                        .collect())
                })?;
                replace_def(&mut catalog, def)?;
            }
            DdlPlan::PartitionTable { table, column } => {
                if !self.storage.table(*table)?.is_empty() {
                    bail!(
                        SchemaChangeConflict,
                        "PARTITION TABLE needs an empty table; {} has rows",
                        self.table_def(*table)?.name
                    );
                }
                let mut def = (**self.table_def(*table)?).clone();
                def.partition_column = Some(*column);
                let def = Arc::new(def);
                self.storage.table_mut(*table)?.replace_def(def.clone(), Ok)?;
                replace_def(&mut catalog, def)?;
            }
            DdlPlan::CreateView(v) => {
                catalog.database_mut(&v.database)?.views.insert(v.name.clone(), Arc::new(v.clone()));
            }
            DdlPlan::DropView { database, name } => {
                catalog.database_mut(database)?.views.remove(name);
            }
            DdlPlan::CreateMaterializedView(def) => {
                let mut def = def.clone();
                def.id = catalog.allocate_table_id();
                let def = Arc::new(def);
                let source =
                    def.view.as_ref().map(|v| v.source).ok_or_else(|| err!(Internal, "view without source"))?;
                // Fill it from the source's current rows, then install it.
                let mut view_storage = Storage::new();
                view_storage.put_table(Table::new(def.clone()));
                let rows: Vec<(RowId, Row)> =
                    self.storage.table(source)?.scan().map(|(id, r)| (id, r.clone())).collect();
                let src = self.storage.drop_table(source).ok_or_else(|| err!(Internal, "view source missing"))?;
                view_storage.put_table(src);
                let mut scratch = UndoLog::new();
                let filled = rows.iter().try_for_each(|(id, r)| {
                    views::maintain(&mut view_storage, &mut scratch, &[def.id], *id, None, Some(r))
                });
                let src = view_storage.drop_table(source).ok_or_else(|| err!(Internal, "view source missing"))?;
                self.storage.put_table(src);
                filled?;
                let view_table = view_storage.drop_table(def.id).ok_or_else(|| err!(Internal, "view table missing"))?;
                catalog.database_mut(&def.database)?.tables.insert(def.name.clone(), def.clone());
                self.storage.put_table(view_table);
            }
        }
        catalog.version += 1;
        self.views = catalog
            .tables()
            .filter_map(|t| t.view.as_ref().map(|v| (v.source, t.id)))
            .fold(HashMap::<TableId, Vec<TableId>>::new(), |mut m, (src, v)| {
                m.entry(src).or_default().push(v);
                m
            })
            .into_iter()
            .map(|(k, v)| (k, v.into()))
            .collect();
        self.catalog = Arc::new(catalog);
        self.plan_cache.clear();
        Ok(())
    }

    /// Materialized views over `table` (empty for most tables).
    fn views_on(&self, table: TableId) -> Arc<[TableId]> {
        self.views.get(&table).cloned().unwrap_or_else(|| Arc::from(Vec::new()))
    }

    fn table_def(&self, id: TableId) -> Result<&Arc<TableDef>> {
        self.catalog.table_by_id(id).ok_or_else(|| err!(Internal, "table #{id} missing from the catalog"))
    }
}

fn replace_def(catalog: &mut Catalog, def: Arc<TableDef>) -> Result<()> {
    catalog.database_mut(&def.database)?.tables.insert(def.name.clone(), def);
    Ok(())
}
