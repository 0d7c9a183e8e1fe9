//! ALTER TABLE planning: ADD/DROP/ALTER COLUMN and ADD/DROP constraints.
//!
//! Every operation produces a complete new [`TableDef`] plus a row map that
//! says where each new column's values come from, so the engine can rebuild
//! the table's rows and indexes in one step and keep the old table untouched
//! if any row does not fit the new definition (a NULL in a column made NOT
//! NULL, a value too long for a shortened VARCHAR, a duplicate under a new
//! UNIQUE constraint).

use super::ddl::{column_def, table_constraint, validate_indexes, ColumnSource, DdlPlan};
use crate::binder::{convert_type, ident_name, Binder};
use joule_common::{bail, err, DataType, Result, Value};
use sqlparser::ast;

pub fn alter_table(binder: &Binder, at: &ast::AlterTable) -> Result<DdlPlan> {
    let (db, name) = binder.split_name(&at.name)?;
    let table = match binder.catalog.table(&db, &name) {
        Ok(t) => t.clone(),
        Err(_) if at.if_exists => return Ok(DdlPlan::Noop),
        Err(e) => return Err(e),
    };
    if table.view.is_some() {
        bail!(InvalidSchemaDefinition, "{name} is a materialized view and cannot be altered");
    }
    let has_views = !binder.catalog.views_on(table.id).is_empty();
    let mut def = (*table).clone();
    let mut row_map: Vec<ColumnSource> = (0..def.columns.len()).map(ColumnSource::Existing).collect();
    let mut unique_counter = 0;
    for op in &at.operations {
        use ast::AlterTableOperation as Op;
        match op {
            Op::AddColumn { column_def: cd, if_not_exists, .. } => {
                let (col, inline) = column_def(cd, &name, &mut unique_counter, &[])?;
                if def.column_index(&col.name).is_some() {
                    if *if_not_exists {
                        continue;
                    }
                    bail!(DuplicateObject, "column {} already exists in table {name}", col.name);
                }
                let fill = col.default.clone().unwrap_or(Value::Null);
                def.columns.push(col);
                row_map.push(ColumnSource::Fill(fill));
                let pos = def.columns.len() - 1;
                for (mut idx, _) in inline {
                    idx.columns = vec![pos];
                    def.indexes.push(idx);
                }
            }
            Op::DropColumn { column_names, if_exists, .. } => {
                for cn in column_names {
                    let c = ident_name(cn);
                    let Some(pos) = def.column_index(&c) else {
                        if *if_exists {
                            continue;
                        }
                        bail!(UndefinedColumn, "column {c} does not exist in table {name}");
                    };
                    if has_views {
                        bail!(
                            DependentObjectsExist,
                            "table {name} has materialized views; drop them before dropping columns"
                        );
                    }
                    if def.partition_column == Some(pos) {
                        bail!(
                            InvalidSchemaDefinition,
                            "column {c} is the partition column of {name} and cannot be dropped"
                        );
                    }
                    if def.indexes.iter().any(|i| i.primary_key && i.columns.contains(&pos)) {
                        bail!(
                            InvalidSchemaDefinition,
                            "column {c} is part of the primary key of {name} and cannot be dropped"
                        );
                    }
                    if def.columns.len() == 1 {
                        bail!(InvalidSchemaDefinition, "cannot drop the only column of table {name}");
                    }
                    def.columns.remove(pos);
                    row_map.remove(pos);
                    // Indexes on the column go with it; others shift.
                    def.indexes.retain(|i| !i.columns.contains(&pos));
                    for i in def.indexes.iter_mut() {
                        i.columns.iter_mut().filter(|p| **p > pos).for_each(|p| *p -= 1);
                    }
                    if let Some(pc) = def.partition_column.as_mut() {
                        if *pc > pos {
                            *pc -= 1;
                        }
                    }
                }
            }
            Op::AlterColumn { column_name, op } => {
                let c = ident_name(column_name);
                let pos = def
                    .column_index(&c)
                    .ok_or_else(|| err!(UndefinedColumn, "column {c} does not exist in table {name}"))?;
                let col = &mut def.columns[pos];
                match op {
                    ast::AlterColumnOperation::SetNotNull => col.nullable = false,
                    ast::AlterColumnOperation::DropNotNull => {
                        if def.indexes.iter().any(|i| i.primary_key && i.columns.contains(&pos))
                            || def.partition_column == Some(pos)
                        {
                            bail!(
                                InvalidSchemaDefinition,
                                "column {c} must stay NOT NULL (primary key or partition column)"
                            );
                        }
                        def.columns[pos].nullable = true;
                    }
                    ast::AlterColumnOperation::SetDefault { value } => {
                        let catalog = crate::catalog::Catalog::default();
                        let mut b = Binder::new(&catalog, crate::catalog::DEFAULT_DATABASE);
                        match b.bind_expr(value, &Default::default())? {
                            crate::expr::Expr::Constant(v) => col.default = Some(v.cast(col.data_type)?),
                            _ => bail!(FeatureNotSupported, "DEFAULT for column {c} must be a constant"),
                        }
                    }
                    ast::AlterColumnOperation::DropDefault => col.default = None,
                    ast::AlterColumnOperation::SetDataType { data_type, .. } => {
                        if has_views {
                            bail!(
                                DependentObjectsExist,
                                "table {name} has materialized views; drop them before changing column types"
                            );
                        }
                        let (t, max_len, bytes) = convert_type(data_type)?;
                        if t == DataType::Boolean {
                            bail!(FeatureNotSupported, "BOOLEAN columns are not supported");
                        }
                        if def.partition_column == Some(pos) && t != col.data_type {
                            bail!(InvalidSchemaDefinition, "the type of partition column {c} cannot change");
                        }
                        col.data_type = t;
                        col.max_len = max_len;
                        col.len_in_bytes = bytes;
                        if let Some(d) = col.default.take() {
                            col.default = Some(d.cast(t)?);
                        }
                    }
                    other => bail!(FeatureNotSupported, "ALTER COLUMN {other} is not supported"),
                }
            }
            Op::AddConstraint { constraint, .. } => {
                let idx = table_constraint(constraint, &name, &mut def.columns, &mut unique_counter, &[])?;
                def.indexes.push(idx);
            }
            Op::DropConstraint { name: cname, if_exists, .. } => {
                let n = ident_name(cname);
                match def.indexes.iter().position(|i| i.name == n) {
                    Some(p) => {
                        def.indexes.remove(p);
                    }
                    None if *if_exists => {}
                    None => bail!(UndefinedObject, "constraint {n} does not exist on table {name}"),
                }
            }
            Op::DropPrimaryKey { .. } => {
                let before = def.indexes.len();
                def.indexes.retain(|i| !i.primary_key);
                if def.indexes.len() == before {
                    bail!(UndefinedObject, "table {name} has no primary key");
                }
            }
            other => bail!(FeatureNotSupported, "ALTER TABLE {other} is not supported"),
        }
    }
    validate_indexes(&def)?;
    Ok(DdlPlan::AlterTable { table: table.id, def, row_map })
}
