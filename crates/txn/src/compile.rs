//! Compiling the schema's procedures: every statement planned once.
//!
//! A [`Schema`] is a catalog plus every procedure it defines, compiled:
//! DDL procedures (`AS stmt`, `AS BEGIN ... END`), native procedures (`FROM
//! CLASS`, looked up in the [`ProcedureRegistry`]), and the CRUD procedures
//! generated for every table with a primary key (`T.insert`, `T.update`,
//! `T.upsert`, `T.delete`, `T.select`, VoltDB's names and parameter order).
//! A schema is built whenever the catalog changes — a change that leaves a
//! procedure unplannable (dropping a table it reads) is refused — and then
//! shared, read-only, by initiators and sites: no statement is ever planned
//! per call.
//!
//! Single-partition procedures may not write replicated tables (every copy
//! must change together, which only a multi-partition transaction can do).

use crate::distribute::{mp_statement, MpStatement};
use crate::procedure::{Procedure, ProcedureRegistry};
use joule_common::{bail, err, Result};
use joule_sql::catalog::KeyRoute;
use joule_sql::catalog::{Catalog, ProcedureBody, ProcedureDef, TableDef};
use joule_sql::parser::parse_single;
use joule_sql::plan::Partitioning;
use joule_sql::planner::{plan, plan_for, Planned, PlannedKind};
use std::collections::HashMap;
use std::sync::Arc;

/// One statement, planned.
#[derive(Debug)]
pub struct CompiledStatement {
    pub sql: String,
    /// The plan for one partition (and for pinned statements anywhere).
    pub planned: Arc<Planned>,
    /// How it runs in a multi-partition transaction (set for statements of
    /// multi-partition procedures and ad hoc multi-partition work).
    pub mp: Option<MpStatement>,
}

/// Where a single-partition procedure runs.
#[derive(Clone, Debug)]
pub struct Routing {
    /// Which parameter holds the partition key.
    pub parameter: usize,
    /// How the key finds its partition (cast to the partition column's
    /// type, then hashed or placed by value range).
    pub key: KeyRoute,
    /// `table.column`, for messages.
    pub column: String,
}

/// What a procedure runs.
#[derive(Clone)]
pub enum ProcedureCode {
    /// Its statements in order, parameters consumed in order.
    Statements,
    Native(Arc<dyn Procedure>),
}

/// A procedure ready to run.
pub struct CompiledProcedure {
    pub name: String,
    /// `None`: multi-partition.
    pub routing: Option<Routing>,
    pub code: ProcedureCode,
    pub statements: Vec<Arc<CompiledStatement>>,
    /// For statement procedures: the number of parameters it takes.
    pub param_count: Option<usize>,
    pub roles: Vec<String>,
    /// The catalog version its statements were planned against.
    pub catalog_version: u64,
    /// Ad hoc SQL: the session database it was planned in (empty for
    /// catalog procedures).
    pub database: String,
}

impl std::fmt::Debug for CompiledProcedure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledProcedure")
            .field("name", &self.name)
            .field("routing", &self.routing)
            .field("statements", &self.statements.len())
            .finish()
    }
}

/// A catalog and its compiled procedures.
#[derive(Debug)]
pub struct Schema {
    pub catalog: Arc<Catalog>,
    procedures: HashMap<String, Arc<CompiledProcedure>>,
    /// Lower-cased names, for case-insensitive lookup when unambiguous.
    folded: HashMap<String, Option<Arc<CompiledProcedure>>>,
}

impl Schema {
    pub fn version(&self) -> u64 {
        self.catalog.version
    }

    /// A procedure by name: exact match first, then case-insensitive when
    /// only one procedure has that name in any case.
    pub fn procedure(&self, name: &str) -> Option<&Arc<CompiledProcedure>> {
        self.procedures.get(name).or_else(|| self.folded.get(&name.to_lowercase())?.as_ref())
    }

    /// Every procedure name, sorted.
    pub fn procedure_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.procedures.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// Compile every procedure of `catalog`. `previous` is the catalog
    /// before the schema change being made: a procedure it already had
    /// that no longer compiles means the change breaks it.
    pub fn compile(catalog: Arc<Catalog>, registry: &ProcedureRegistry, previous: Option<&Catalog>) -> Result<Schema> {
        let mut procedures = HashMap::new();
        for def in catalog.procedures.values() {
            let p = compile_procedure(def, &catalog, registry).map_err(|e| {
                if previous.and_then(|c| c.procedures.get(&def.name)).is_some_and(|old| old == def) {
                    err!(DependentObjectsExist, "this change would break procedure {}: {}", def.name, e.message())
                } else {
                    e.context(format!("procedure {}", def.name))
                }
            })?;
            procedures.insert(def.name.clone(), Arc::new(p));
        }
        for table in catalog.tables() {
            for p in crud_procedures(table, &catalog)? {
                procedures.entry(p.name.clone()).or_insert_with(|| Arc::new(p));
            }
        }
        let mut folded: HashMap<String, Option<Arc<CompiledProcedure>>> = HashMap::new();
        for (name, p) in &procedures {
            folded.entry(name.to_lowercase()).and_modify(|e| *e = None).or_insert_with(|| Some(p.clone()));
        }
        Ok(Schema { catalog, procedures, folded })
    }
}

/// Plan one statement of a procedure (or of an ad hoc batch).
pub fn compile_statement(
    sql: &str,
    catalog: &Catalog,
    database: &str,
    multi_partition: bool,
) -> Result<CompiledStatement> {
    let stmt = parse_single(sql)?;
    let planned = Arc::new(plan(&stmt, catalog, database)?);
    if matches!(planned.kind, PlannedKind::Ddl(_) | PlannedKind::UseDatabase(_)) {
        bail!(FeatureNotSupported, "a procedure cannot change the schema or the current database: {sql}");
    }
    if !multi_partition {
        if let Some(t) = written_table(&planned, catalog) {
            if !catalog.is_partitioned(t) {
                bail!(
                    FeatureNotSupported,
                    "a single-partition procedure cannot write replicated table {}; make the procedure multi-partition",
                    t.name
                );
            }
        }
        return Ok(CompiledStatement { sql: sql.to_string(), planned, mp: None });
    }
    let mp = if matches!(planned.partitioning, Partitioning::Single(..)) {
        MpStatement::Pinned
    } else {
        let replanned = Arc::new(plan_for(&stmt, catalog, database, true)?);
        mp_statement(replanned, catalog)?
    };
    Ok(CompiledStatement { sql: sql.to_string(), planned, mp: Some(mp) })
}

/// The table a write statement changes.
pub fn written_table<'c>(planned: &Planned, catalog: &'c Catalog) -> Option<&'c Arc<TableDef>> {
    let id = match &planned.kind {
        PlannedKind::Insert(i) => i.table,
        PlannedKind::Update(u) => u.table,
        PlannedKind::Delete(d) => d.table,
        PlannedKind::Truncate(t) => *t,
        _ => return None,
    };
    catalog.table_by_id(id)
}

fn compile_procedure(def: &ProcedureDef, catalog: &Catalog, registry: &ProcedureRegistry) -> Result<CompiledProcedure> {
    let routing = match &def.partition {
        Some(p) => {
            let t = catalog.table(&p.database, &p.table)?;
            let pos = t
                .column_index(&p.column)
                .ok_or_else(|| err!(UndefinedColumn, "column {} does not exist in table {}", p.column, p.table))?;
            if t.partition_column != Some(pos) {
                bail!(
                    InvalidSchemaDefinition,
                    "it is partitioned on {}.{}, which is not the partition column",
                    p.table,
                    p.column
                );
            }
            Some(Routing {
                parameter: p.parameter,
                key: KeyRoute {
                    key_type: t.columns[pos].data_type,
                    ranges: t.partition_ranges.clone(),
                    owners: t.range_owners.clone(),
                },
                column: format!("{}.{}", p.table, p.column),
            })
        }
        None => None,
    };
    let mp = routing.is_none();
    let (code, sqls): (ProcedureCode, Vec<String>) = match &def.body {
        ProcedureBody::Statements(s) => (ProcedureCode::Statements, s.clone()),
        ProcedureBody::Class(class) => {
            let p = registry
                .get(class)
                .ok_or_else(|| err!(UndefinedObject, "no procedure class {class} is registered with this host"))?;
            (ProcedureCode::Native(p.clone()), p.statements().iter().map(|s| s.to_string()).collect())
        }
    };
    let statements = sqls
        .iter()
        .map(|s| compile_statement(s, catalog, &def.database, mp).map(Arc::new))
        .collect::<Result<Vec<_>>>()?;
    let param_count = match code {
        ProcedureCode::Statements => Some(statements.iter().map(|s| s.planned.param_count).sum::<usize>()),
        ProcedureCode::Native(_) => None,
    };
    if let (Some(r), Some(n)) = (&routing, param_count) {
        if r.parameter >= n {
            bail!(InvalidSchemaDefinition, "its partition parameter is {} but it takes {n} parameter(s)", r.parameter);
        }
    }
    Ok(CompiledProcedure {
        name: def.name.clone(),
        routing,
        code,
        statements,
        param_count,
        roles: def.roles.clone(),
        catalog_version: catalog.version,
        database: String::new(),
    })
}

/// `T.insert`, `T.upsert`, `T.update`, `T.delete`, `T.select` for a table
/// with a primary key (tables in other databases: `DB.T.insert`, ...).
fn crud_procedures(table: &TableDef, catalog: &Catalog) -> Result<Vec<CompiledProcedure>> {
    let Some(pk) = table.primary_key() else { return Ok(Vec::new()) };
    if table.view.is_some() {
        return Ok(Vec::new());
    }
    let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let name = q(&table.name);
    let cols: Vec<String> = table.columns.iter().map(|c| q(&c.name)).collect();
    let marks = vec!["?"; cols.len()].join(", ");
    let key_where = pk.columns.iter().map(|c| format!("{} = ?", cols[*c])).collect::<Vec<_>>().join(" AND ");
    let set = cols.iter().map(|c| format!("{c} = ?")).collect::<Vec<_>>().join(", ");
    let pc = table.partition_column;
    let in_key = pc.and_then(|pc| pk.columns.iter().position(|c| *c == pc));
    let prefix = if table.database == joule_sql::catalog::DEFAULT_DATABASE {
        table.name.clone()
    } else {
        format!("{}.{}", table.database, table.name)
    };
    let specs: [(&str, String, Option<usize>); 5] = [
        ("insert", format!("INSERT INTO {name} VALUES ({marks})"), pc),
        ("upsert", format!("UPSERT INTO {name} VALUES ({marks})"), pc),
        ("update", format!("UPDATE {name} SET {set} WHERE {key_where}"), in_key.map(|k| cols.len() + k)),
        ("delete", format!("DELETE FROM {name} WHERE {key_where}"), in_key),
        ("select", format!("SELECT * FROM {name} WHERE {key_where}"), in_key),
    ];
    let mut out = Vec::new();
    for (verb, sql, parameter) in specs {
        let routing = match (pc, parameter) {
            (Some(pc), Some(parameter)) => Some(Routing {
                parameter,
                key: KeyRoute {
                    key_type: table.columns[pc].data_type,
                    ranges: table.partition_ranges.clone(),
                    owners: table.range_owners.clone(),
                },
                column: format!("{}.{}", table.name, table.columns[pc].name),
            }),
            _ => None,
        };
        let stmt = compile_statement(&sql, catalog, &table.database, routing.is_none())?;
        out.push(CompiledProcedure {
            name: format!("{prefix}.{verb}"),
            param_count: Some(stmt.planned.param_count),
            routing,
            code: ProcedureCode::Statements,
            statements: vec![Arc::new(stmt)],
            roles: Vec::new(),
            catalog_version: catalog.version,
            database: String::new(),
        });
    }
    Ok(out)
}
