//! DDL planning: validates schema changes and describes them as [`DdlPlan`]s.
//!
//! Each plan is checked against the current catalog here (names exist or
//! not, types valid, constraints consistent), so applying it can only fail
//! on the data (a unique index over duplicate rows, NOT NULL over NULLs),
//! which the engine checks while building the new storage. `IF [NOT]
//! EXISTS` clauses that make a statement a no-op produce [`DdlPlan::Noop`].
//!
//! Materialized views follow VoltDB's rules: one source table, GROUP BY
//! plain columns listed first in the select list, then COUNT(*) and any of
//! SUM/MIN/MAX/COUNT over plain columns.

use crate::binder::{contains_aggregate, convert_type, ident_name, object_name, Binder};
use crate::catalog::{ColumnDef, IndexDef, IndexKind, MaterializedView, ProcedureDef, TableDef, TableId, ViewDef};
use crate::expr::{AggKind, Expr};
use crate::parser::{ParsedStatement, Statement};
use crate::plan::Plan;
use joule_common::hashinator::PartitionId;
use joule_common::{bail, err, DataType, Result, Value};
use sqlparser::ast;
use std::sync::Arc;

/// Where a column of an altered table gets its values.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ColumnSource {
    /// The old row's column at this position (cast to the new type).
    Existing(usize),
    /// A new column: this value in every row.
    Fill(Value),
}

/// A validated schema change.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum DdlPlan {
    Noop,
    CreateDatabase(String),
    DropDatabase(String),
    /// A new table (its id is assigned when applied).
    CreateTable(TableDef),
    /// Drop tables (a table and the materialized views on it).
    DropTables(Vec<TableId>),
    CreateIndex {
        table: TableId,
        index: IndexDef,
    },
    DropIndex {
        table: TableId,
        name: String,
    },
    /// Replace a table's definition; rows are rebuilt through `row_map`.
    AlterTable {
        table: TableId,
        def: TableDef,
        row_map: Vec<ColumnSource>,
    },
    PartitionTable {
        table: TableId,
        column: usize,
        /// Value-range boundaries (`USING RANGE`); `None`: hashed.
        ranges: Option<Arc<[Value]>>,
        /// Each range's partition (`ON PARTITIONS`); `None`: `i mod P`.
        owners: Option<Arc<[PartitionId]>>,
        /// The table was placed by ranges on this column already: its rows
        /// stay, and the transaction layer moves those the new placement
        /// puts elsewhere (splitting and moving ranges).
        replace: bool,
    },
    CreateView(ViewDef),
    DropView {
        database: String,
        name: String,
    },
    /// A materialized view: a table filled and maintained from its source.
    CreateMaterializedView(TableDef),
    /// Create or replace (PARTITION PROCEDURE) a stored procedure.
    PutProcedure(ProcedureDef),
    DropProcedure(String),
    /// Exchange the rows of two alike tables.
    SwapTables(TableId, TableId),
}

pub fn plan_ddl(binder: &mut Binder, stmt: &ParsedStatement) -> Result<DdlPlan> {
    let catalog = binder.catalog;
    match &stmt.statement {
        Statement::CreateDatabase { name, if_not_exists } => {
            let n = ident_name(name);
            if catalog.databases.contains_key(&n) {
                if *if_not_exists {
                    return Ok(DdlPlan::Noop);
                }
                bail!(DuplicateObject, "database {n} already exists");
            }
            Ok(DdlPlan::CreateDatabase(n))
        }
        Statement::DropDatabase { name, if_exists } => {
            let n = ident_name(name);
            if !catalog.databases.contains_key(&n) {
                if *if_exists {
                    return Ok(DdlPlan::Noop);
                }
                bail!(UndefinedObject, "database {n} does not exist");
            }
            if n == crate::catalog::DEFAULT_DATABASE {
                bail!(InvalidSchemaDefinition, "the DEFAULT database cannot be dropped");
            }
            Ok(DdlPlan::DropDatabase(n))
        }
        Statement::PartitionTable { table, column, ranges, owners } => {
            let (db, t) = binder.split_name(table)?;
            let def = catalog.table(&db, &t)?;
            let c = ident_name(column);
            let pos =
                def.column_index(&c).ok_or_else(|| err!(UndefinedColumn, "column {c} does not exist in table {t}"))?;
            let col = &def.columns[pos];
            if !(col.data_type.is_integer() || matches!(col.data_type, DataType::Varchar | DataType::Varbinary)) {
                bail!(
                    InvalidSchemaDefinition,
                    "partition column {c} must be an integer, VARCHAR or VARBINARY, not {}",
                    col.data_type
                );
            }
            if col.nullable {
                bail!(InvalidSchemaDefinition, "partition column {c} of table {t} must be NOT NULL");
            }
            if def.view.is_some() {
                bail!(InvalidSchemaDefinition, "{t} is a view; partition its source table instead");
            }
            let ranges = ranges.as_deref().map(|r| range_bounds(r, col, &t)).transpose()?;
            let owners = match (owners, &ranges) {
                (Some(o), Some(bounds)) => Some(range_owners(o, bounds.len(), &t)?),
                _ => None,
            };
            if let Some(existing) = def.partition_column {
                if existing == pos && def.partition_ranges == ranges && def.range_owners == owners {
                    return Ok(DdlPlan::Noop);
                }
                if existing == pos && def.partition_ranges.is_some() && ranges.is_some() {
                    return Ok(DdlPlan::PartitionTable { table: def.id, column: pos, ranges, owners, replace: true });
                }
                let how = if def.partition_ranges.is_some() { "by value ranges" } else { "by hash" };
                bail!(
                    InvalidSchemaDefinition,
                    "table {t} is already partitioned on {} {how}; its partitioning cannot change (only the ranges \
                     of a table placed by ranges can be split and moved)",
                    def.columns[existing].name
                );
            }
            Ok(DdlPlan::PartitionTable { table: def.id, column: pos, ranges, owners, replace: false })
        }
        Statement::SwapTables { a, b } => swap_tables(binder, a, b),
        Statement::CreateProcedure(c) => super::procedure::create_procedure(binder, c),
        Statement::DropProcedure { name, if_exists } => super::procedure::drop_procedure(binder, name, *if_exists),
        Statement::PartitionProcedure { name, partition } => {
            super::procedure::partition_procedure(binder, name, partition)
        }
        Statement::Standard(s) => match s.as_ref() {
            ast::Statement::CreateTable(ct) => create_table(binder, ct, &stmt.assume_unique),
            ast::Statement::CreateIndex(ci) => create_index(binder, ci, !stmt.assume_unique.is_empty()),
            ast::Statement::CreateView(cv) => create_view(binder, cv),
            ast::Statement::Drop { object_type, if_exists, names, cascade, .. } => {
                let [name] = names.as_slice() else {
                    bail!(FeatureNotSupported, "DROP one object at a time");
                };
                drop_object(binder, *object_type, name, *if_exists, *cascade)
            }
            ast::Statement::AlterTable(at) => super::alter::alter_table(binder, at),
            ast::Statement::CreateSchema { schema_name: ast::SchemaName::Simple(n), if_not_exists, .. } => {
                let name = object_name(n);
                if catalog.databases.contains_key(&name) {
                    if *if_not_exists {
                        return Ok(DdlPlan::Noop);
                    }
                    bail!(DuplicateObject, "database {name} already exists");
                }
                Ok(DdlPlan::CreateDatabase(name))
            }
            other => bail!(FeatureNotSupported, "statement is not supported: {}", first_words(&other.to_string())),
        },
        Statement::Upsert(_) => bail!(Internal, "UPSERT reached the DDL planner"),
    }
}

fn first_words(s: &str) -> String {
    s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// Convert a column definition; returns the column and its inline
/// constraints (primary key, unique) as index definitions.
pub fn column_def(
    c: &ast::ColumnDef,
    table: &str,
    unique_counter: &mut usize,
    assume_unique: &[usize],
) -> Result<(ColumnDef, Vec<(IndexDef, bool)>)> {
    let name = ident_name(&c.name);
    let (data_type, max_len, len_in_bytes) = convert_type(&c.data_type)?;
    if data_type == DataType::Boolean {
        bail!(FeatureNotSupported, "BOOLEAN columns are not supported; use TINYINT");
    }
    let mut col = ColumnDef { name: name.clone(), data_type, max_len, len_in_bytes, nullable: true, default: None };
    let mut indexes = Vec::new();
    for opt in &c.options {
        match &opt.option {
            ast::ColumnOption::Null => col.nullable = true,
            ast::ColumnOption::NotNull => col.nullable = false,
            ast::ColumnOption::Default(e) => col.default = Some(default_value(e, &col)?),
            ast::ColumnOption::PrimaryKey(_) => {
                col.nullable = false;
                let idx_name = opt.name.as_ref().map(ident_name).unwrap_or_else(|| format!("PK_{table}"));
                indexes.push((index(idx_name, vec![], true, true, false), true));
            }
            ast::ColumnOption::Unique(_) => {
                let assumed = assume_unique.contains(unique_counter);
                *unique_counter += 1;
                let idx_name = opt.name.as_ref().map(ident_name).unwrap_or_else(|| format!("UQ_{table}_{name}"));
                indexes.push((index(idx_name, vec![], true, false, assumed), true));
            }
            other => bail!(FeatureNotSupported, "column option {other} is not supported"),
        }
    }
    Ok((col, indexes))
}

fn index(name: String, columns: Vec<usize>, unique: bool, primary_key: bool, assume_unique: bool) -> IndexDef {
    IndexDef { name, columns, unique, assume_unique, primary_key, kind: IndexKind::Tree }
}

/// A DEFAULT must be a constant; it is cast to the column's type now.
fn default_value(e: &ast::Expr, col: &ColumnDef) -> Result<Value> {
    constant(e, col, &format!("DEFAULT for column {}", col.name))
}

/// `what` (a constant, perhaps negated) cast to `col`'s type.
fn constant(e: &ast::Expr, col: &ColumnDef, what: &str) -> Result<Value> {
    let catalog = crate::catalog::Catalog::default();
    let mut b = Binder::new(&catalog, crate::catalog::DEFAULT_DATABASE);
    let bound = b.bind_expr(e, &Default::default())?;
    let v = match bound {
        Expr::Constant(v) => v,
        Expr::Negate(inner) => match *inner {
            Expr::Constant(v) => v.negate()?,
            _ => bail!(FeatureNotSupported, "{what} must be a constant"),
        },
        _ => bail!(FeatureNotSupported, "{what} must be a constant"),
    };
    v.cast(col.data_type).map_err(|e| err!(InvalidSchemaDefinition, "{what}: {}", e.message()))
}

/// Most boundaries a range-partitioned table may have.
pub const MAX_RANGE_BOUNDS: usize = 4096;

/// `USING RANGE (b1, ..., bn)`: constants of the partition column's type,
/// not NULL, strictly ascending.
fn range_bounds(exprs: &[ast::Expr], col: &ColumnDef, table: &str) -> Result<Arc<[Value]>> {
    if exprs.is_empty() || exprs.len() > MAX_RANGE_BOUNDS {
        bail!(
            InvalidSchemaDefinition,
            "USING RANGE for {table} takes 1 to {MAX_RANGE_BOUNDS} boundaries, not {}",
            exprs.len()
        );
    }
    let mut bounds = Vec::with_capacity(exprs.len());
    for (i, e) in exprs.iter().enumerate() {
        let v = constant(e, col, &format!("range boundary {} of {table}", i + 1))?;
        if v.is_null() {
            bail!(InvalidSchemaDefinition, "range boundary {} of {table} is NULL", i + 1);
        }
        if bounds.last().is_some_and(|prev: &Value| *prev >= v) {
            bail!(
                InvalidSchemaDefinition,
                "range boundaries of {table} must be in ascending order without repeats: {} follows {}",
                v,
                bounds[i - 1]
            );
        }
        bounds.push(v);
    }
    Ok(bounds.into())
}

/// `ON PARTITIONS (p0, ..., pn)`: one partition number per range (the
/// partition count is checked where it is known, by the transaction layer).
fn range_owners(exprs: &[ast::Expr], bounds: usize, table: &str) -> Result<Arc<[PartitionId]>> {
    if exprs.len() != bounds + 1 {
        bail!(
            InvalidSchemaDefinition,
            "{bounds} range boundaries of {table} make {} ranges, but ON PARTITIONS names {} partitions",
            bounds + 1,
            exprs.len()
        );
    }
    let int = ColumnDef {
        name: "partition".into(),
        data_type: DataType::Integer,
        max_len: None,
        len_in_bytes: false,
        nullable: false,
        default: None,
    };
    exprs
        .iter()
        .enumerate()
        .map(|(i, e)| match constant(e, &int, &format!("partition of range {i} of {table}"))? {
            Value::Integer(p) if (0..=i64::from(u16::MAX)).contains(&p) => Ok(p as PartitionId),
            v => {
                bail!(InvalidSchemaDefinition, "partition of range {i} of {table} must be a partition number, not {v}")
            }
        })
        .collect()
}

fn create_table(binder: &Binder, ct: &ast::CreateTable, assume_unique: &[usize]) -> Result<DdlPlan> {
    if ct.query.is_some() || ct.like.is_some() || ct.clone.is_some() {
        bail!(FeatureNotSupported, "CREATE TABLE ... AS / LIKE / CLONE is not supported");
    }
    let (db, name) = binder.split_name(&ct.name)?;
    binder.catalog.database(&db)?;
    if binder.catalog.name_taken(&db, &name) {
        if ct.if_not_exists {
            return Ok(DdlPlan::Noop);
        }
        bail!(DuplicateObject, "table or view {name} already exists in database {db}");
    }
    if ct.columns.is_empty() {
        bail!(InvalidSchemaDefinition, "table {name} must have at least one column");
    }
    let mut columns: Vec<ColumnDef> = Vec::new();
    let mut indexes: Vec<IndexDef> = Vec::new();
    let mut unique_counter = 0;
    for (pos, c) in ct.columns.iter().enumerate() {
        let (col, inline) = column_def(c, &name, &mut unique_counter, assume_unique)?;
        if columns.iter().any(|x| x.name == col.name) {
            bail!(InvalidSchemaDefinition, "column {} is defined twice in table {name}", col.name);
        }
        columns.push(col);
        for (mut idx, _) in inline {
            idx.columns = vec![pos];
            indexes.push(idx);
        }
    }
    for tc in &ct.constraints {
        let idx = table_constraint(tc, &name, &mut columns, &mut unique_counter, assume_unique)?;
        indexes.push(idx);
    }
    let def = TableDef {
        id: 0,
        database: db,
        name: name.clone(),
        columns,
        indexes,
        partition_column: None,
        partition_ranges: None,
        range_owners: None,
        view: None,
    };
    validate_indexes(&def)?;
    Ok(DdlPlan::CreateTable(def))
}

/// A table-level PRIMARY KEY or UNIQUE constraint as an index.
pub fn table_constraint(
    tc: &ast::TableConstraint,
    table: &str,
    columns: &mut [ColumnDef],
    unique_counter: &mut usize,
    assume_unique: &[usize],
) -> Result<IndexDef> {
    let (name, cols, primary) = match tc {
        ast::TableConstraint::PrimaryKey(pk) => (pk.name.as_ref().map(ident_name), &pk.columns, true),
        ast::TableConstraint::Unique(u) => {
            (u.name.as_ref().or(u.index_name.as_ref()).map(ident_name), &u.columns, false)
        }
        other => bail!(FeatureNotSupported, "constraint {other} is not supported"),
    };
    let mut positions = Vec::new();
    for ic in cols {
        let ast::Expr::Identifier(id) = &ic.column.expr else {
            bail!(FeatureNotSupported, "constraint columns must be plain column names");
        };
        let n = ident_name(id);
        let p = columns
            .iter()
            .position(|c| c.name == n)
            .ok_or_else(|| err!(UndefinedColumn, "column {n} in constraint does not exist in table {table}"))?;
        if primary {
            columns[p].nullable = false;
        }
        positions.push(p);
    }
    let assumed = !primary && assume_unique.contains(unique_counter);
    if !primary {
        *unique_counter += 1;
    }
    let name = name.unwrap_or_else(|| {
        let cols: Vec<&str> = positions.iter().map(|p| columns[*p].name.as_str()).collect();
        if primary {
            format!("PK_{table}")
        } else {
            format!("UQ_{table}_{}", cols.join("_"))
        }
    });
    Ok(index(name, positions, true, primary, assumed))
}

/// At most one primary key; index names unique within the table.
pub fn validate_indexes(def: &TableDef) -> Result<()> {
    if def.indexes.iter().filter(|i| i.primary_key).count() > 1 {
        bail!(InvalidSchemaDefinition, "table {} has more than one primary key", def.name);
    }
    for (i, idx) in def.indexes.iter().enumerate() {
        if def.indexes[..i].iter().any(|o| o.name == idx.name) {
            bail!(DuplicateObject, "index or constraint {} is defined twice on table {}", idx.name, def.name);
        }
        if idx.columns.is_empty() {
            bail!(InvalidSchemaDefinition, "index {} has no columns", idx.name);
        }
    }
    Ok(())
}

fn create_index(binder: &Binder, ci: &ast::CreateIndex, assume_unique: bool) -> Result<DdlPlan> {
    let name =
        ci.name.as_ref().map(object_name).ok_or_else(|| err!(SyntaxError, "CREATE INDEX needs an index name"))?;
    let (db, tname) = binder.split_name(&ci.table_name)?;
    let table = binder.catalog.table(&db, &tname)?;
    if binder.catalog.index_owner(&db, &name).is_some() {
        if ci.if_not_exists {
            return Ok(DdlPlan::Noop);
        }
        bail!(DuplicateObject, "index {name} already exists in database {db}");
    }
    if ci.predicate.is_some() {
        bail!(FeatureNotSupported, "partial indexes (CREATE INDEX ... WHERE) are not supported");
    }
    let mut columns = Vec::new();
    for ic in &ci.columns {
        let ast::Expr::Identifier(id) = &ic.column.expr else {
            bail!(FeatureNotSupported, "index keys must be plain column names");
        };
        let n = ident_name(id);
        columns.push(
            table
                .column_index(&n)
                .ok_or_else(|| err!(UndefinedColumn, "column {n} does not exist in table {tname}"))?,
        );
    }
    let kind = match &ci.using {
        Some(ast::IndexType::Hash) => IndexKind::Hash,
        None | Some(ast::IndexType::BTree) => IndexKind::Tree,
        Some(other) => bail!(FeatureNotSupported, "index type {other} is not supported"),
    };
    let index = IndexDef {
        name,
        columns,
        unique: ci.unique,
        assume_unique: assume_unique && ci.unique,
        primary_key: false,
        kind,
    };
    Ok(DdlPlan::CreateIndex { table: table.id, index })
}

fn create_view(binder: &mut Binder, cv: &ast::CreateView) -> Result<DdlPlan> {
    let (db, name) = binder.split_name(&cv.name)?;
    binder.catalog.database(&db)?;
    if binder.catalog.name_taken(&db, &name) {
        if cv.if_not_exists {
            return Ok(DdlPlan::Noop);
        }
        bail!(DuplicateObject, "table or view {name} already exists in database {db}");
    }
    let column_names: Vec<String> = cv.columns.iter().map(|c| ident_name(&c.name)).collect();
    // Bind it now: errors surface at CREATE time, and the plan tells us
    // whether this is an aggregate (materialized) view.
    let saved_db = std::mem::replace(&mut binder.database, db.clone());
    let bound = binder.bind_query(&cv.query);
    binder.database = saved_db;
    let (plan, scope) = bound?;
    if !column_names.is_empty() && column_names.len() != scope.columns.len() {
        bail!(
            ColumnCountMismatch,
            "view {name} names {} columns but its query returns {}",
            column_names.len(),
            scope.columns.len()
        );
    }
    let is_aggregate = match cv.query.body.as_ref() {
        ast::SetExpr::Select(s) => {
            matches!(&s.group_by, ast::GroupByExpr::Expressions(v, _) if !v.is_empty())
                || s.projection.iter().any(|p| matches!(p, ast::SelectItem::UnnamedExpr(e) | ast::SelectItem::ExprWithAlias { expr: e, .. } if contains_aggregate(e)))
        }
        _ => false,
    };
    let names: Vec<String> =
        if column_names.is_empty() { scope.columns.iter().map(|c| c.name.clone()).collect() } else { column_names };
    if !is_aggregate {
        return Ok(DdlPlan::CreateView(ViewDef {
            database: db,
            name,
            column_names: names,
            query_sql: cv.query.to_string(),
        }));
    }
    materialized_view(binder, db, name, names, &plan)
}

/// Check a bound aggregate view plan against VoltDB's rules and describe it.
fn materialized_view(binder: &Binder, db: String, name: String, names: Vec<String>, plan: &Plan) -> Result<DdlPlan> {
    let unsupported = |why: &str| err!(FeatureNotSupported, "materialized view {name}: {why}");
    // Expected shape: Project(Aggregate(Scan)) with the projection listing
    // the GROUP BY columns then the aggregates, in order.
    let Plan::Project { input, exprs } = plan else { return Err(unsupported("unexpected query shape")) };
    let Plan::Aggregate { input: agg_input, group_by, aggregates } = input.as_ref() else {
        return Err(unsupported("HAVING, DISTINCT, ORDER BY and LIMIT are not allowed"));
    };
    let Plan::Scan { table, filter: None, .. } = agg_input.as_ref() else {
        return Err(unsupported("the source must be one table without WHERE or joins"));
    };
    let source = binder.catalog.table_by_id(*table).ok_or_else(|| err!(Internal, "view source vanished"))?;
    if source.view.is_some() {
        return Err(unsupported("the source cannot be another view"));
    }
    let n = group_by.len();
    if exprs.len() != n + aggregates.len() || exprs.iter().enumerate().any(|(i, e)| *e != Expr::Column(i)) {
        return Err(unsupported("list the GROUP BY columns first, then each aggregate once"));
    }
    let mut group_cols = Vec::new();
    for g in group_by {
        match g {
            Expr::Column(c) => group_cols.push(*c),
            _ => return Err(unsupported("GROUP BY must name plain columns")),
        }
    }
    if group_cols.is_empty() {
        return Err(unsupported("GROUP BY is required"));
    }
    let mut aggs = Vec::new();
    for a in aggregates {
        if a.distinct {
            return Err(unsupported("DISTINCT aggregates are not allowed"));
        }
        let col = match &a.arg {
            None => None,
            Some(Expr::Column(c)) => Some(*c),
            Some(_) => return Err(unsupported("aggregate arguments must be plain columns")),
        };
        if a.kind == AggKind::Avg {
            return Err(unsupported("AVG is not allowed; keep SUM and COUNT and divide"));
        }
        aggs.push((a.kind, col));
    }
    if !aggs.iter().any(|(k, _)| *k == AggKind::CountStar) {
        return Err(unsupported("it must include COUNT(*)"));
    }
    let mut columns = Vec::new();
    for (i, g) in group_cols.iter().enumerate() {
        columns.push(ColumnDef { name: names[i].clone(), ..source.columns[*g].clone() });
    }
    for (j, (kind, col)) in aggs.iter().enumerate() {
        let input = col.map(|c| source.columns[c].data_type);
        let data_type = kind.result_type(input).unwrap_or(DataType::BigInt);
        let src = col.map(|c| &source.columns[c]);
        columns.push(ColumnDef {
            name: names[n + j].clone(),
            data_type,
            max_len: if matches!(kind, AggKind::Min | AggKind::Max) { src.and_then(|c| c.max_len) } else { None },
            len_in_bytes: src.is_some_and(|c| c.len_in_bytes),
            nullable: !matches!(kind, AggKind::CountStar | AggKind::Count),
            default: None,
        });
    }
    let key = IndexDef {
        name: format!("PK_{name}"),
        columns: (0..n).collect(),
        unique: true,
        assume_unique: false,
        primary_key: true,
        // Hashed: every write to the source looks its group up here, and
        // views grow large (a group per caller, per device...), where a
        // tree costs a cache miss per level. Range scans and ORDER BY on a
        // view can use a tree index created on it.
        kind: IndexKind::Hash,
    };
    // The view's key columns may hold NULL (a NULL group): the index allows it.
    let partition_column = source.partition_column.and_then(|pc| group_cols.iter().position(|g| *g == pc));
    Ok(DdlPlan::CreateMaterializedView(TableDef {
        id: 0,
        database: db,
        name,
        columns,
        indexes: vec![key],
        partition_ranges: partition_column.and(source.partition_ranges.clone()),
        range_owners: partition_column.and(source.range_owners.clone()),
        partition_column,
        view: Some(MaterializedView { source: source.id, group_by: group_cols, aggregates: aggs }),
    }))
}

fn drop_object(
    binder: &Binder,
    kind: ast::ObjectType,
    name: &ast::ObjectName,
    if_exists: bool,
    cascade: bool,
) -> Result<DdlPlan> {
    let catalog = binder.catalog;
    let (db, n) = binder.split_name(name)?;
    match kind {
        ast::ObjectType::Table => {
            let table = match catalog.database(&db).ok().and_then(|d| d.tables.get(&n)) {
                Some(t) if t.view.is_none() => t,
                Some(_) => bail!(InvalidSchemaDefinition, "{n} is a view: use DROP VIEW"),
                None if if_exists => return Ok(DdlPlan::Noop),
                None => bail!(UndefinedTable, "table {n} does not exist in database {db}"),
            };
            let views = catalog.views_on(table.id);
            if !views.is_empty() && !cascade {
                let names: Vec<String> =
                    views.iter().filter_map(|v| catalog.table_by_id(*v)).map(|v| v.name.clone()).collect();
                bail!(
                    DependentObjectsExist,
                    "cannot drop table {n}: views {} depend on it (drop them first, or use CASCADE)",
                    names.join(", ")
                );
            }
            let mut ids = views;
            ids.push(table.id);
            Ok(DdlPlan::DropTables(ids))
        }
        ast::ObjectType::View | ast::ObjectType::MaterializedView => {
            let Ok(d) = catalog.database(&db) else {
                return if if_exists {
                    Ok(DdlPlan::Noop)
                } else {
                    Err(err!(UndefinedObject, "database {db} does not exist"))
                };
            };
            if d.views.contains_key(&n) {
                return Ok(DdlPlan::DropView { database: db, name: n });
            }
            match d.tables.get(&n) {
                Some(t) if t.view.is_some() => Ok(DdlPlan::DropTables(vec![t.id])),
                Some(_) => bail!(InvalidSchemaDefinition, "{n} is a table: use DROP TABLE"),
                None if if_exists => Ok(DdlPlan::Noop),
                None => bail!(UndefinedTable, "view {n} does not exist in database {db}"),
            }
        }
        ast::ObjectType::Index => match catalog.index_owner(&db, &n) {
            Some(t) => {
                if t.indexes.iter().any(|i| i.name == n && i.primary_key) {
                    bail!(
                        InvalidSchemaDefinition,
                        "index {n} enforces the primary key of {}; it cannot be dropped",
                        t.name
                    );
                }
                Ok(DdlPlan::DropIndex { table: t.id, name: n })
            }
            None if if_exists => Ok(DdlPlan::Noop),
            None => bail!(UndefinedObject, "index {n} does not exist in database {db}"),
        },
        ast::ObjectType::Database | ast::ObjectType::Schema => {
            if !catalog.databases.contains_key(&n) {
                return if if_exists {
                    Ok(DdlPlan::Noop)
                } else {
                    Err(err!(UndefinedObject, "database {n} does not exist"))
                };
            }
            if n == crate::catalog::DEFAULT_DATABASE {
                bail!(InvalidSchemaDefinition, "the DEFAULT database cannot be dropped");
            }
            Ok(DdlPlan::DropDatabase(n))
        }
        other => bail!(FeatureNotSupported, "DROP {other} is not supported"),
    }
}

/// `SWAP TABLE a WITH b`: both tables, not views, with the same columns,
/// indexes and partitioning, and no materialized views over either.
fn swap_tables(binder: &Binder, a: &ast::ObjectName, b: &ast::ObjectName) -> Result<DdlPlan> {
    let catalog = binder.catalog;
    let (da, na) = binder.split_name(a)?;
    let (db, nb) = binder.split_name(b)?;
    let ta = catalog.table(&da, &na)?;
    let tb = catalog.table(&db, &nb)?;
    if ta.id == tb.id {
        bail!(InvalidArgument, "cannot swap table {na} with itself");
    }
    for t in [ta, tb] {
        if t.view.is_some() {
            bail!(InvalidSchemaDefinition, "{} is a view; only tables can be swapped", t.name);
        }
        if !catalog.views_on(t.id).is_empty() {
            bail!(DependentObjectsExist, "table {} has materialized views; drop them before swapping", t.name);
        }
    }
    if table_shape(ta) != table_shape(tb) {
        bail!(
            InvalidSchemaDefinition,
            "tables {na} and {nb} differ in columns, indexes or partitioning; only alike tables can be swapped"
        );
    }
    Ok(DdlPlan::SwapTables(ta.id, tb.id))
}

/// What two tables must share to swap contents: columns and indexes (by
/// structure, not name) and partitioning (the column, and the value ranges
/// and their partitions if any: rows placed one way must not end up in a
/// table placed another).
type Shape<'a> = (
    Vec<(&'a str, DataType, Option<u32>, bool, bool)>,
    Vec<(&'a [usize], bool, bool, bool, IndexKind)>,
    Option<usize>,
    Option<&'a [Value]>,
    Option<&'a [PartitionId]>,
);

fn table_shape(t: &TableDef) -> Shape<'_> {
    let cols =
        t.columns.iter().map(|c| (c.name.as_str(), c.data_type, c.max_len, c.len_in_bytes, c.nullable)).collect();
    let idx =
        t.indexes.iter().map(|i| (i.columns.as_slice(), i.unique, i.assume_unique, i.primary_key, i.kind)).collect();
    (cols, idx, t.partition_column, t.partition_ranges.as_deref(), t.range_owners.as_deref())
}
