//! Planning of the procedure statements into catalog changes.
//!
//! `CREATE PROCEDURE` is checked against the catalog here (name free,
//! partition clause naming a partitioned table's partition column); its
//! statements are planned by the transaction layer, which knows the native
//! procedure classes and recompiles every procedure on each schema change.

use super::ddl::DdlPlan;
use crate::binder::Binder;
use crate::catalog::{ProcedureBody, ProcedureDef, ProcedurePartition};
use crate::procedure_syntax::{CreateProcedure, PartitionClause, ProcedureSource};
use joule_common::{bail, err, Result};

pub fn create_procedure(binder: &Binder, c: &CreateProcedure) -> Result<DdlPlan> {
    if binder.catalog.procedures.contains_key(&c.name) {
        bail!(DuplicateObject, "procedure {} already exists", c.name);
    }
    if c.name.starts_with('@') {
        bail!(InvalidSchemaDefinition, "procedure names starting with @ are reserved for system procedures");
    }
    let partition = c.partition.as_ref().map(|p| partition(binder, &c.name, p)).transpose()?;
    let body = match &c.source {
        ProcedureSource::Statements(s) => ProcedureBody::Statements(s.clone()),
        ProcedureSource::Class(name) => ProcedureBody::Class(name.clone()),
    };
    Ok(DdlPlan::PutProcedure(ProcedureDef {
        name: c.name.clone(),
        database: binder.database.clone(),
        partition,
        roles: c.roles.clone(),
        body,
    }))
}

pub fn partition_procedure(binder: &Binder, name: &str, clause: &PartitionClause) -> Result<DdlPlan> {
    let existing = binder
        .catalog
        .procedures
        .get(name)
        .ok_or_else(|| err!(UndefinedProcedure, "procedure {name} does not exist"))?;
    let mut def = (**existing).clone();
    def.partition = Some(partition(binder, name, clause)?);
    Ok(DdlPlan::PutProcedure(def))
}

pub fn drop_procedure(binder: &Binder, name: &str, if_exists: bool) -> Result<DdlPlan> {
    match binder.catalog.procedures.get(name) {
        Some(_) => Ok(DdlPlan::DropProcedure(name.to_string())),
        None if if_exists => Ok(DdlPlan::Noop),
        None => bail!(UndefinedProcedure, "procedure {name} does not exist"),
    }
}

fn partition(binder: &Binder, procedure: &str, p: &PartitionClause) -> Result<ProcedurePartition> {
    let (database, table) = match p.table.as_slice() {
        [t] => (binder.database.clone(), t.clone()),
        [d, t] => (d.clone(), t.clone()),
        _ => bail!(SyntaxError, "syntax error: table name {} has too many parts", p.table.join(".")),
    };
    let def = binder.catalog.table(&database, &table)?;
    let pos = def
        .column_index(&p.column)
        .ok_or_else(|| err!(UndefinedColumn, "column {} does not exist in table {table}", p.column))?;
    if def.partition_column != Some(pos) {
        bail!(
            InvalidSchemaDefinition,
            "procedure {procedure} is partitioned on {table}.{} but {table} is {}",
            p.column,
            match def.partition_column {
                Some(c) => format!("partitioned on {}", def.columns[c].name),
                None => "replicated".to_string(),
            }
        );
    }
    Ok(ProcedurePartition { database, table, column: p.column.clone(), parameter: p.parameter.unwrap_or(0) })
}
