//! Schema changes: applying a planned DDL statement to a partition's catalog
//! and storage.
//!
//! A change is built on a copy of the catalog and on new or rebuilt tables,
//! and only swapped in once everything succeeded, so a DDL statement that
//! fails on the data (a unique index over duplicates, PARTITION TABLE on a
//! filled table) changes nothing. Inside a transaction the change is also
//! logged in the undo log ([`UndoOp::Schema`]: the old catalog and the old
//! state of every table it touched), because a multi-partition DDL
//! transaction must be undone on every partition when any one of them
//! fails. Outside a transaction nothing is kept: the statement commits at
//! once.

use crate::database::Database;
use crate::storage::{RowId, SchemaUndo, Storage, Table, UndoLog, UndoOp};
use crate::views;
use joule_common::{bail, err, Result, Row, Value};
use joule_sql::catalog::{Catalog, DatabaseDef, TableDef, TableId, DEFAULT_DATABASE};
use joule_sql::planner::{ColumnSource, DdlPlan};
use std::collections::HashMap;
use std::sync::Arc;

/// The previous state of the tables a change touches, when it must be kept.
struct Saved {
    keep: bool,
    tables: Vec<(TableId, Option<Table>)>,
}

impl Saved {
    /// Remember `id` as it is now (a copy), before changing it in place.
    fn copy(&mut self, storage: &Storage, id: TableId) {
        if self.keep {
            self.tables.push((id, storage.table(id).ok().cloned()));
        }
    }

    /// Remember a table that is being removed (moved, not copied).
    fn moved(&mut self, id: TableId, table: Option<Table>) {
        if self.keep {
            self.tables.push((id, table));
        }
    }

    /// Remember that `id` did not exist.
    fn created(&mut self, id: TableId) {
        if self.keep {
            self.tables.push((id, None));
        }
    }
}

impl Database {
    /// Apply a schema change to a copy of the catalog and the affected
    /// tables, then swap both in.
    pub(crate) fn apply_ddl(&mut self, ddl: &DdlPlan) -> Result<()> {
        let mut catalog = (*self.catalog).clone();
        let mut saved = Saved { keep: self.in_transaction, tables: Vec::new() };
        let old_database = self.database.clone();
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
                    let old = self.storage.drop_table(t.id);
                    saved.moved(t.id, old);
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
                self.storage.create_table(def.clone())?;
                saved.created(def.id);
            }
            DdlPlan::DropTables(ids) => {
                for id in ids {
                    let def = catalog.table_by_id(*id).cloned().ok_or_else(|| err!(Internal, "table #{id} missing"))?;
                    catalog.database_mut(&def.database)?.tables.remove(&def.name);
                }
                for id in ids {
                    let old = self.storage.drop_table(*id);
                    saved.moved(*id, old);
                }
            }
            DdlPlan::CreateIndex { table, index } => {
                let mut def = (**self.table_def(*table)?).clone();
                def.indexes.push(index.clone());
                let def = Arc::new(def);
                saved.copy(&self.storage, *table);
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
                saved.copy(&self.storage, *table);
                self.storage.table_mut(*table)?.drop_index(def.clone(), pos)?;
                replace_def(&mut catalog, def)?;
            }
            DdlPlan::AlterTable { table, def, row_map } => {
                let mut def = def.clone();
                def.id = *table;
                let def = Arc::new(def);
                saved.copy(&self.storage, *table);
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
            DdlPlan::PartitionTable { table, column, ranges, owners, replace } => {
                if !*replace && !self.storage.table(*table)?.is_empty() {
                    bail!(
                        SchemaChangeConflict,
                        "PARTITION TABLE needs an empty table; {} has rows",
                        self.table_def(*table)?.name
                    );
                }
                let mut def = (**self.table_def(*table)?).clone();
                def.partition_column = Some(*column);
                def.partition_ranges = ranges.clone();
                def.range_owners = owners.clone();
                let def = Arc::new(def);
                saved.copy(&self.storage, *table);
                self.storage.table_mut(*table)?.replace_def(def.clone(), Ok)?;
                replace_def(&mut catalog, def)?;
                // Views grouping by the partition column are placed as
                // their source is (their rows follow the source's rows).
                let views: Vec<Arc<TableDef>> = catalog
                    .tables()
                    .filter(|v| v.view.as_ref().is_some_and(|m| m.source == *table) && v.partition_ranges.is_some())
                    .cloned()
                    .collect();
                for view in views {
                    let mut v = (*view).clone();
                    v.partition_ranges = ranges.clone();
                    v.range_owners = owners.clone();
                    let v = Arc::new(v);
                    saved.copy(&self.storage, v.id);
                    self.storage.table_mut(v.id)?.replace_def(v.clone(), Ok)?;
                    replace_def(&mut catalog, v)?;
                }
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
                let view_table = self.fill_view(def.clone())?;
                catalog.database_mut(&def.database)?.tables.insert(def.name.clone(), def.clone());
                self.storage.put_table(view_table);
                saved.created(def.id);
            }
            DdlPlan::PutProcedure(p) => {
                catalog.procedures.insert(p.name.clone(), Arc::new(p.clone()));
            }
            DdlPlan::DropProcedure(name) => {
                catalog.procedures.remove(name);
            }
            DdlPlan::SwapTables(a, b) => {
                let mut ta = self.storage.drop_table(*a).ok_or_else(|| err!(Internal, "table #{a} missing"))?;
                let mut tb = match self.storage.drop_table(*b) {
                    Some(t) => t,
                    None => {
                        self.storage.put_table(ta);
                        bail!(Internal, "table #{b} missing");
                    }
                };
                if saved.keep {
                    saved.moved(*a, Some(ta.clone()));
                    saved.moved(*b, Some(tb.clone()));
                }
                ta.swap_contents(&mut tb);
                self.storage.put_table(ta);
                self.storage.put_table(tb);
            }
        }
        catalog.version += 1;
        if saved.keep {
            let undo = SchemaUndo { catalog: self.catalog.clone(), database: old_database, tables: saved.tables };
            self.undo.record(UndoOp::Schema(Box::new(undo)));
        }
        self.install_catalog(Arc::new(catalog));
        Ok(())
    }

    /// Make `catalog` current: rebuild the view map, forget cached plans.
    pub(crate) fn install_catalog(&mut self, catalog: Arc<Catalog>) {
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
        self.catalog = catalog;
        self.plan_cache.clear();
    }

    /// A materialized view's table, filled from its source's current rows.
    fn fill_view(&mut self, def: Arc<TableDef>) -> Result<Table> {
        let source = def.view.as_ref().map(|v| v.source).ok_or_else(|| err!(Internal, "view without source"))?;
        let mut view_storage = Storage::new();
        view_storage.put_table(Table::new(def.clone()));
        let rows: Vec<(RowId, Row)> = self.storage.table(source)?.scan().map(|(id, r)| (id, r.clone())).collect();
        let src = self.storage.drop_table(source).ok_or_else(|| err!(Internal, "view source missing"))?;
        view_storage.put_table(src);
        let mut scratch = UndoLog::new();
        let filled = rows
            .iter()
            .try_for_each(|(id, r)| views::maintain(&mut view_storage, &mut scratch, &[def.id], *id, None, Some(r)));
        let src = view_storage.drop_table(source).ok_or_else(|| err!(Internal, "view source missing"))?;
        self.storage.put_table(src);
        filled?;
        view_storage.drop_table(def.id).ok_or_else(|| err!(Internal, "view table missing"))
    }

    fn table_def(&self, id: TableId) -> Result<&Arc<TableDef>> {
        self.catalog.table_by_id(id).ok_or_else(|| err!(Internal, "table #{id} missing from the catalog"))
    }
}

fn replace_def(catalog: &mut Catalog, def: Arc<TableDef>) -> Result<()> {
    catalog.database_mut(&def.database)?.tables.insert(def.name.clone(), def);
    Ok(())
}
