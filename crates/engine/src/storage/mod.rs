//! Storage of one partition: its tables, their rows and indexes, and the undo
//! log that rolls transactions back.
//!
//! In the H-Store/VoltDB model a partition's data is owned by exactly one
//! thread, which runs that partition's transactions one after another. So
//! nothing here locks, nothing is shared, and every structure is a plain
//! single-threaded collection chosen for speed: rows in a slab addressed by
//! [`RowId`] ([`Table`]), tree indexes in `BTreeMap`s, hash indexes in
//! sharded `hashbrown` maps. Iteration that can reach a user (scans, ordered index
//! scans, the table list) is deterministic, because replicas must produce
//! identical results from identical inputs.
//!
//! * [`Table`] (`table.rs`): rows + indexes of one table, atomic mutations;
//!   row coercion lives in `coerce.rs`, the slab in `slab.rs` (its free ids
//!   in `free_ids.rs`).
//! * `index.rs` / `key.rs`: index structures and allocation-free key lookups;
//!   `sharded.rs`: the hash indexes' map, which never rehashes more than a
//!   small share of its entries at once.
//! * [`UndoLog`] (`undo.rs`): inverse operations for rollback and savepoints.
//! * [`Storage`] (here): every table of the partition, by [`TableId`].

mod coerce;
mod free_ids;
mod index;
mod key;
mod sharded;
mod slab;
mod table;
mod undo;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use index::IndexIter;
pub use slab::FrozenRows;
pub use table::{token_of, Table};
pub use undo::{SchemaUndo, UndoLog, UndoOp};

use joule_common::{bail, err, Result};
use joule_sql::catalog::{TableDef, TableId};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Identifies a row within one table of one partition. Ids of deleted rows
/// are reused (lowest first).
pub type RowId = u32;

/// Every table of one partition, in `TableId` order.
#[derive(Clone, Debug, Default)]
pub struct Storage {
    tables: BTreeMap<TableId, Table>,
}

impl Storage {
    pub fn new() -> Storage {
        Storage::default()
    }

    pub fn table(&self, id: TableId) -> Result<&Table> {
        self.tables.get(&id).ok_or_else(|| err!(Internal, "table id {id} has no storage in this partition"))
    }

    pub fn table_mut(&mut self, id: TableId) -> Result<&mut Table> {
        self.tables.get_mut(&id).ok_or_else(|| err!(Internal, "table id {id} has no storage in this partition"))
    }

    /// Create empty storage for a new table. `Internal` error if the id is
    /// already in use.
    pub fn create_table(&mut self, def: Arc<TableDef>) -> Result<()> {
        if self.tables.contains_key(&def.id) {
            bail!(Internal, "table id {} of {} already has storage in this partition", def.id, def.name);
        }
        self.tables.insert(def.id, Table::new(def));
        Ok(())
    }

    /// Remove a table's storage, returning it (to put back if the DDL fails).
    pub fn drop_table(&mut self, id: TableId) -> Option<Table> {
        self.tables.remove(&id)
    }

    /// Install a table under its definition's id, replacing (and returning)
    /// any table stored there.
    pub fn put_table(&mut self, table: Table) -> Option<Table> {
        self.tables.insert(table.def().id, table)
    }

    pub fn contains(&self, id: TableId) -> bool {
        self.tables.contains_key(&id)
    }

    /// Every table in `TableId` order.
    pub fn tables(&self) -> impl Iterator<Item = &Table> + '_ {
        self.tables.values()
    }

    /// Stop keeping row ids by token in every table (see
    /// [`Table::track_tokens`]).
    pub fn untrack_tokens(&mut self) {
        self.tables.values_mut().for_each(Table::untrack_tokens);
    }

    /// A rough estimate of the memory all tables use.
    pub fn memory_bytes(&self) -> usize {
        self.tables.values().map(Table::memory_bytes).sum()
    }
}
