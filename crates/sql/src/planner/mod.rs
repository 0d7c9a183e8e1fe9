//! Statement planning: from a parsed [`Statement`] to an executable [`Planned`].
//!
//! Queries and DML are bound (`crate::binder`), then optimized
//! (`crate::optimizer`), then analysed for partitioning: whether the
//! statement pins a single partition (the partition column of every
//! partitioned table it touches is compared for equality with one constant
//! or parameter). DDL is validated against the catalog and turned into a
//! [`DdlPlan`] that the engine applies to catalog and storage together
//! (see [`ddl`]).
//!
//! A [`Planned`] statement holds no parameter values: it is made once and
//! executed many times.

pub mod alter;
pub mod ddl;
pub mod explain;
pub mod procedure;

use crate::binder::{ident_name, Binder, Scope};
use crate::catalog::{Catalog, KeyRoute, TableDef, TableId};
use crate::expr::{CmpOp, Expr};
use crate::optimizer;
use crate::parser::{ParsedStatement, Statement};
use crate::plan::{Access, IndexLookup, OutputColumn, Partitioning, Plan};
pub use ddl::{ColumnSource, DdlPlan};
use joule_common::{bail, err, Result};
use sqlparser::ast;
use std::sync::Arc;

/// A query ready to execute.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QueryPlan {
    pub root: Plan,
    /// Shared so that each execution's result can point at it for free.
    pub columns: Arc<[OutputColumn]>,
}

/// INSERT / UPSERT.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InsertPlan {
    pub table: TableId,
    /// For each source column, the target column position.
    pub columns: Vec<usize>,
    pub source: Plan,
    /// Replace rows with the same primary key (UPSERT, INSERT OR REPLACE).
    pub upsert: bool,
}

/// UPDATE: `source` is a Scan of the target table choosing the rows.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UpdatePlan {
    pub table: TableId,
    pub source: Plan,
    /// (column, new value over the old row)
    pub assignments: Vec<(usize, Expr)>,
}

/// DELETE: `source` is a Scan of the target table choosing the rows.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeletePlan {
    pub table: TableId,
    pub source: Plan,
}

/// What a statement does.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum PlannedKind {
    Query(QueryPlan),
    Insert(InsertPlan),
    Update(UpdatePlan),
    Delete(DeletePlan),
    Truncate(TableId),
    Ddl(DdlPlan),
    /// `USE db` / session database change.
    UseDatabase(String),
    /// EXPLAIN: the plan's text, one line per row.
    Explain(Vec<String>),
}

/// A planned statement.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Planned {
    pub kind: PlannedKind,
    /// Number of `?` parameters it takes.
    pub param_count: usize,
    pub partitioning: Partitioning,
    /// Whether it changes data or schema.
    pub writes: bool,
    /// Catalog version it was planned against.
    pub catalog_version: u64,
}

/// Plan one parsed statement against a catalog, with `database` as the
/// current database.
pub fn plan(stmt: &ParsedStatement, catalog: &Catalog, database: &str) -> Result<Planned> {
    plan_for(stmt, catalog, database, false)
}

/// Plan a statement; with `multi_partition`, for execution across
/// partitions (no ORDER BY is left to index order, which holds only within
/// one partition).
pub fn plan_for(stmt: &ParsedStatement, catalog: &Catalog, database: &str, multi_partition: bool) -> Result<Planned> {
    let mut binder = Binder::new(catalog, database);
    binder.multi_partition = multi_partition;
    let (kind, writes) = match &stmt.statement {
        Statement::Standard(s) => match s.as_ref() {
            ast::Statement::Query(q) => (PlannedKind::Query(plan_query(&mut binder, q)?), false),
            ast::Statement::Insert(ins) => {
                let upsert = ins.replace_into || matches!(ins.or, Some(ast::SqliteOnConflict::Replace));
                (PlannedKind::Insert(plan_insert(&mut binder, ins, upsert)?), true)
            }
            ast::Statement::Update(u) => (PlannedKind::Update(plan_update(&mut binder, u)?), true),
            ast::Statement::Delete(d) => (PlannedKind::Delete(plan_delete(&mut binder, d)?), true),
            ast::Statement::Truncate(t) => {
                let [target] = t.table_names.as_slice() else {
                    bail!(FeatureNotSupported, "TRUNCATE takes exactly one table");
                };
                let table = writable_table(&binder, &target.name)?;
                (PlannedKind::Truncate(table.id), true)
            }
            ast::Statement::Use(u) => {
                let name = match u {
                    ast::Use::Object(n) | ast::Use::Database(n) | ast::Use::Schema(n) => crate::binder::object_name(n),
                    _ => bail!(FeatureNotSupported, "this USE form is not supported"),
                };
                catalog.database(&name)?;
                (PlannedKind::UseDatabase(name), false)
            }
            ast::Statement::Explain { statement, analyze: false, .. } => {
                let inner = ParsedStatement {
                    statement: Statement::Standard(statement.clone()),
                    assume_unique: stmt.assume_unique.clone(),
                    sql: stmt.sql.clone(),
                };
                let planned = plan_for(&inner, catalog, database, multi_partition)?;
                let lines = explain::explain(&planned, catalog);
                (PlannedKind::Explain(lines), false)
            }
            _ => (PlannedKind::Ddl(ddl::plan_ddl(&mut binder, stmt)?), true),
        },
        Statement::Upsert(s) => match s.as_ref() {
            ast::Statement::Insert(ins) => (PlannedKind::Insert(plan_insert(&mut binder, ins, true)?), true),
            _ => bail!(SyntaxError, "UPSERT must be followed by INTO"),
        },
        _ => (PlannedKind::Ddl(ddl::plan_ddl(&mut binder, stmt)?), true),
    };
    let partitioning = partitioning(&kind, catalog);
    Ok(Planned { kind, param_count: binder.param_count, partitioning, writes, catalog_version: catalog.version })
}

fn plan_query(binder: &mut Binder, q: &ast::Query) -> Result<QueryPlan> {
    let (root, scope) = binder.bind_query(q)?;
    let root = optimizer::optimize_for(root, binder.catalog, binder.multi_partition);
    let columns: Vec<OutputColumn> =
        scope.columns.iter().map(|c| OutputColumn { name: c.name.clone(), data_type: c.data_type }).collect();
    Ok(QueryPlan { root, columns: columns.into() })
}

/// A table that DML may write: exists, and is not a materialized view.
fn writable_table(binder: &Binder, name: &ast::ObjectName) -> Result<Arc<TableDef>> {
    let (db, t) = binder.split_name(name)?;
    let table = binder.catalog.table(&db, &t).map_err(|e| {
        if binder.catalog.relation(&db, &t).is_ok() {
            err!(FeatureNotSupported, "{t} is a view; views cannot be written")
        } else {
            e
        }
    })?;
    if table.view.is_some() {
        bail!(FeatureNotSupported, "{t} is a materialized view; it changes only through its source table");
    }
    Ok(table.clone())
}

fn table_scope(t: &TableDef, alias: Option<String>) -> Scope {
    let qual = alias.unwrap_or_else(|| t.name.clone());
    Scope {
        columns: t
            .columns
            .iter()
            .map(|c| crate::binder::ScopeColumn {
                table: Some(qual.clone()),
                name: c.name.clone(),
                data_type: Some(c.data_type),
                hidden: false,
            })
            .collect(),
    }
}

fn plan_insert(binder: &mut Binder, ins: &ast::Insert, upsert: bool) -> Result<InsertPlan> {
    if ins.on.is_some() || ins.returning.is_some() {
        bail!(FeatureNotSupported, "ON CONFLICT / RETURNING are not supported");
    }
    let ast::TableObject::TableName(name) = &ins.table else {
        bail!(FeatureNotSupported, "INSERT into a table function is not supported");
    };
    let table = writable_table(binder, name)?;
    if upsert && table.primary_key().is_none() {
        bail!(InvalidSchemaDefinition, "UPSERT needs a primary key, and table {} has none", table.name);
    }
    let columns: Vec<usize> = if ins.columns.is_empty() {
        (0..table.columns.len()).collect()
    } else {
        let mut cols = Vec::new();
        for c in &ins.columns {
            let n = crate::binder::object_name(c);
            let i = table
                .column_index(&n)
                .ok_or_else(|| err!(UndefinedColumn, "column {n} does not exist in table {}", table.name))?;
            if cols.contains(&i) {
                bail!(SyntaxError, "column {n} is listed twice in INSERT");
            }
            cols.push(i);
        }
        cols
    };
    let Some(source) = &ins.source else {
        bail!(SyntaxError, "INSERT needs VALUES or a SELECT");
    };
    let (plan, scope) = match source.body.as_ref() {
        ast::SetExpr::Values(v) if source.order_by.is_none() && source.limit_clause.is_none() => {
            binder.bind_values(v)?
        }
        _ => binder.bind_query(source)?,
    };
    if scope.columns.len() != columns.len() {
        bail!(
            ColumnCountMismatch,
            "INSERT into {} has {} target columns but {} values",
            table.name,
            columns.len(),
            scope.columns.len()
        );
    }
    let source = optimizer::optimize_for(plan, binder.catalog, binder.multi_partition);
    Ok(InsertPlan { table: table.id, columns, source, upsert })
}

fn dml_target(binder: &Binder, twj: &ast::TableWithJoins) -> Result<(Arc<TableDef>, Option<String>)> {
    if !twj.joins.is_empty() {
        bail!(FeatureNotSupported, "UPDATE/DELETE with joins is not supported");
    }
    match &twj.relation {
        ast::TableFactor::Table { name, alias, .. } => {
            Ok((writable_table(binder, name)?, alias.as_ref().map(|a| ident_name(&a.name))))
        }
        _ => bail!(FeatureNotSupported, "UPDATE/DELETE target must be a table"),
    }
}

fn dml_source(binder: &mut Binder, table: &TableDef, scope: &Scope, selection: &Option<ast::Expr>) -> Result<Plan> {
    let filter = match selection {
        Some(w) => {
            if crate::binder::contains_aggregate(w) {
                bail!(AggregateMisuse, "aggregate functions are not allowed in WHERE");
            }
            Some(binder.bind_expr(w, scope)?)
        }
        None => None,
    };
    let scan = Plan::Scan { table: table.id, access: Access::Full, filter };
    Ok(optimizer::optimize(scan, binder.catalog))
}

fn plan_update(binder: &mut Binder, u: &ast::Update) -> Result<UpdatePlan> {
    if u.from.is_some() || u.returning.is_some() || u.limit.is_some() {
        bail!(FeatureNotSupported, "UPDATE ... FROM / RETURNING / LIMIT is not supported");
    }
    let (table, alias) = dml_target(binder, &u.table)?;
    let scope = table_scope(&table, alias);
    let mut assignments = Vec::new();
    for a in &u.assignments {
        let ast::AssignmentTarget::ColumnName(n) = &a.target else {
            bail!(FeatureNotSupported, "tuple assignment is not supported");
        };
        let name = crate::binder::object_name(n);
        let col = table
            .column_index(&name)
            .ok_or_else(|| err!(UndefinedColumn, "column {name} does not exist in table {}", table.name))?;
        // As in SQLite, the rightmost of repeated assignments wins.
        assignments.retain(|(c, _)| *c != col);
        if crate::binder::contains_aggregate(&a.value) {
            bail!(AggregateMisuse, "aggregate functions are not allowed in UPDATE");
        }
        assignments.push((col, binder.bind_expr(&a.value, &scope)?));
    }
    let source = dml_source(binder, &table, &scope, &u.selection)?;
    Ok(UpdatePlan { table: table.id, source, assignments })
}

fn plan_delete(binder: &mut Binder, d: &ast::Delete) -> Result<DeletePlan> {
    if d.using.is_some() || d.returning.is_some() || d.limit.is_some() || !d.order_by.is_empty() {
        bail!(FeatureNotSupported, "DELETE ... USING / RETURNING / ORDER BY / LIMIT is not supported");
    }
    let from = match &d.from {
        ast::FromTable::WithFromKeyword(v) | ast::FromTable::WithoutKeyword(v) => v,
    };
    let [twj] = from.as_slice() else {
        bail!(FeatureNotSupported, "DELETE takes exactly one table");
    };
    let (table, alias) = dml_target(binder, twj)?;
    let scope = table_scope(&table, alias);
    let source = dml_source(binder, &table, &scope, &d.selection)?;
    Ok(DeletePlan { table: table.id, source })
}

/// Decide whether a statement pins one partition.
fn partitioning(kind: &PlannedKind, catalog: &Catalog) -> Partitioning {
    match kind {
        PlannedKind::Query(q) => plan_partitioning(&q.root, catalog),
        PlannedKind::Insert(i) => {
            let Some(t) = catalog.table_by_id(i.table) else { return Partitioning::Multi };
            let Some(pc) = t.partition_column else {
                return if catalog.is_partitioned(t) { Partitioning::Multi } else { Partitioning::Replicated };
            };
            match (&i.source, i.columns.iter().position(|c| *c == pc)) {
                (Plan::Values { rows, .. }, Some(pos))
                    if rows.len() == 1
                        && rows[0][pos].is_constant()
                        && rows[0].iter().all(|e| {
                            e.subqueries()
                                .into_iter()
                                .all(|p| plan_partitioning(p, catalog) == Partitioning::Replicated)
                        }) =>
                {
                    match t.key_route() {
                        Some(route) => Partitioning::Single(rows[0][pos].clone(), route),
                        None => Partitioning::Multi,
                    }
                }
                _ => Partitioning::Multi,
            }
        }
        // A subquery in SET reads its own tables: on one partition it would
        // see only that partition's rows.
        PlannedKind::Update(u)
            if u.assignments.iter().any(|(_, e)| {
                e.subqueries().into_iter().any(|p| plan_partitioning(p, catalog) != Partitioning::Replicated)
            }) =>
        {
            Partitioning::Multi
        }
        PlannedKind::Update(u) => plan_partitioning(&u.source, catalog),
        PlannedKind::Delete(d) => plan_partitioning(&d.source, catalog),
        PlannedKind::Truncate(t) => match catalog.table_by_id(*t) {
            Some(t) if !catalog.is_partitioned(t) => Partitioning::Replicated,
            _ => Partitioning::Multi,
        },
        PlannedKind::UseDatabase(_) | PlannedKind::Explain(_) => Partitioning::Replicated,
        PlannedKind::Ddl(_) => Partitioning::Multi,
    }
}

/// Every scan of a partitioned table must pin its partition column to the
/// same constant for the plan to be single-partition.
pub fn plan_partitioning(plan: &Plan, catalog: &Catalog) -> Partitioning {
    let mut pinned: Option<(Expr, KeyRoute)> = None;
    let mut multi = false;
    let mut any_partitioned = false;
    visit_scans(plan, &mut |table, access, filter| {
        let Some(t) = catalog.table_by_id(table) else { return };
        if !catalog.is_partitioned(t) {
            return;
        }
        any_partitioned = true;
        // A view of a partitioned table without its partition column holds
        // per-partition rows no key can pin.
        let (Some(pc), Some(route)) = (t.partition_column, t.key_route()) else {
            multi = true;
            return;
        };
        // Two pins agree only if the same value lands on the same partition
        // for both columns: integers of any width hash alike, otherwise the
        // same type; value ranges must be the same ranges.
        match scan_pin(t, pc, access, filter) {
            Some(e) if pinned.as_ref().is_none_or(|p| p.0 == e && p.1.same_placement(&route)) => {
                pinned = Some((e, route))
            }
            _ => multi = true,
        }
    });
    match (any_partitioned, multi, pinned) {
        (false, _, _) => Partitioning::Replicated,
        (true, false, Some((e, t))) => Partitioning::Single(e, t),
        _ => Partitioning::Multi,
    }
}

fn scan_pin(t: &TableDef, pc: usize, access: &Access, filter: &Option<Expr>) -> Option<Expr> {
    if let Access::Index { index, lookup: IndexLookup::Eq(keys), .. } = access {
        let cols = &t.indexes.get(*index)?.columns;
        if let Some(pos) = cols.iter().position(|c| *c == pc) {
            if let Some(k) = keys.get(pos) {
                return Some(k.clone());
            }
        }
    }
    filter.clone()?.into_conjuncts().into_iter().find_map(|c| match c {
        Expr::Compare(CmpOp::Eq, a, b) => match (*a, *b) {
            (Expr::Column(i), v) | (v, Expr::Column(i)) if i == pc && v.is_constant() => Some(v),
            _ => None,
        },
        _ => None,
    })
}

/// Call `f` for every table scan in a plan, including subqueries and join
/// lookups.
pub fn visit_scans(plan: &Plan, f: &mut dyn FnMut(TableId, &Access, &Option<Expr>)) {
    let visit_expr = |e: &Expr, f: &mut dyn FnMut(TableId, &Access, &Option<Expr>)| {
        e.walk(&mut |x| match x {
            Expr::ScalarSubquery(p) | Expr::Exists { plan: p, .. } | Expr::InSubquery { plan: p, .. } => {
                visit_scans(p, f)
            }
            _ => {}
        })
    };
    match plan {
        Plan::Scan { table, access, filter } => {
            f(*table, access, filter);
            if let Some(e) = filter {
                visit_expr(e, f);
            }
        }
        Plan::IndexJoin { table, index, keys, .. } => {
            // A join lookup pins nothing: it reads whichever keys arrive.
            f(*table, &Access::Index { index: *index, lookup: IndexLookup::All, reverse: false }, &None);
            keys.iter().for_each(|k| visit_expr(k, f));
        }
        Plan::Filter { predicate, .. } => visit_expr(predicate, f),
        Plan::Project { exprs, .. } => exprs.iter().for_each(|e| visit_expr(e, f)),
        Plan::NestedLoopJoin { predicate: Some(p), .. } => visit_expr(p, f),
        _ => {}
    }
    for input in plan.inputs() {
        visit_scans(input, f);
    }
}
