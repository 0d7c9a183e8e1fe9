//! The undo log: how a transaction (or one statement of it) is rolled back.
//!
//! JouleDB runs each partition's transactions one at a time on one thread, so
//! there is no concurrency control to undo — only the transaction's own
//! changes. Every mutation the executor makes is recorded as the operation
//! that reverses it; a savepoint is just the log's length ([`UndoLog::mark`]).
//! Rolling back pops and applies the inverse operations newest first, which
//! puts every row back at its original id. Because the row slab's state
//! depends only on which ids are occupied, the partition ends up exactly as
//! it was at the mark — including the ids future inserts will receive.
//!
//! Commit is [`UndoLog::clear`], which keeps the allocation for the next
//! transaction. A schema change inside a transaction (DDL run as a
//! multi-partition transaction, which must be undone everywhere if any
//! partition fails) is logged as [`UndoOp::Schema`]: the catalog before it
//! and the previous state of every table it touched. The storage part is
//! restored here; the owner of the catalog (the `Database`) reads the
//! catalog back with [`UndoLog::schema_since`] before rolling back.
//!
//! Rows a transaction takes away rather than deletes — a range move's
//! eviction, whose rows leave for another partition — are kept encoded
//! ([`UndoLog::record_taken`]): the row itself goes to its new partition
//! without a copy, and the log holds its bytes in one buffer, so that a
//! move of tens of thousands of rows costs no allocation per row here and
//! nothing to free at its commit. Only a rollback decodes them.

use super::{RowId, Storage, Table};
use joule_common::{bail, Result, Row};
use joule_sql::catalog::{Catalog, TableId};
use std::sync::Arc;

/// What undoing a schema change puts back.
#[derive(Clone, Debug)]
pub struct SchemaUndo {
    pub catalog: Arc<Catalog>,
    /// The session's current database before the change.
    pub database: String,
    /// Tables as they were, oldest change first: `None` = did not exist.
    pub tables: Vec<(TableId, Option<Table>)>,
}

/// One change, described by what it takes to reverse it.
#[derive(Clone, Debug)]
pub enum UndoOp {
    /// Row `id` was inserted: undo deletes it.
    Inserted { table: TableId, id: RowId },
    /// Row `id` was deleted: undo restores `row` at `id`.
    Deleted { table: TableId, id: RowId, row: Row },
    /// Row `id` was taken away: undo restores the row encoded at offset
    /// `at` of the log's buffer of taken rows (to its end: taken rows are
    /// undone newest first).
    Taken { table: TableId, id: RowId, at: usize },
    /// Row `id` was updated: undo puts `old` back.
    Updated { table: TableId, id: RowId, old: Row },
    /// The table was truncated: undo restores every row at its id.
    Truncated { table: TableId, rows: Vec<(RowId, Row)> },
    /// A schema change: undo puts the touched tables back.
    Schema(Box<SchemaUndo>),
}

/// The inverse operations of the running transaction, oldest first.
#[derive(Clone, Debug, Default)]
pub struct UndoLog {
    ops: Vec<UndoOp>,
    /// The rows of the [`UndoOp::Taken`] operations, encoded one after
    /// another in the order they were taken.
    taken: Vec<u8>,
}

/// The buffer of taken rows a commit keeps for the next transaction at
/// most (a larger one, left by a big move, is given back).
const KEPT_TAKEN_BYTES: usize = 4 << 20;

impl UndoLog {
    pub fn new() -> UndoLog {
        UndoLog::default()
    }

    pub fn record(&mut self, op: UndoOp) {
        self.ops.push(op);
    }

    /// Row `id` of `table` was taken away (see the module doc): keep it
    /// encoded, for a rollback to put back.
    pub fn record_taken(&mut self, table: TableId, id: RowId, row: &Row) -> Result<()> {
        let at = self.taken.len();
        if let Err(e) = postcard::to_io(row, &mut self.taken) {
            self.taken.truncate(at);
            bail!(Internal, "row {id} cannot be kept for a rollback: {e}");
        }
        self.ops.push(UndoOp::Taken { table, id, at });
        Ok(())
    }

    /// A savepoint: pass it to [`rollback_to`](Self::rollback_to).
    pub fn mark(&self) -> usize {
        self.ops.len()
    }

    /// Undo everything recorded after `mark`, newest first, and forget it.
    /// Every operation is attempted even if one fails; the first error (a
    /// broken invariant, never a user error) is returned.
    pub fn rollback_to(&mut self, mark: usize, storage: &mut Storage) -> Result<()> {
        let mut first_error = None;
        while self.ops.len() > mark {
            let Some(op) = self.ops.pop() else { break };
            if let Err(e) = undo(op, storage, &mut self.taken) {
                first_error.get_or_insert(e);
            }
        }
        if self.ops.is_empty() {
            self.forget_taken();
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The catalog and current database as they were before the oldest
    /// schema change recorded after `mark`, if any.
    pub fn schema_since(&self, mark: usize) -> Option<(Arc<Catalog>, String)> {
        self.ops.get(mark..)?.iter().find_map(|op| match op {
            UndoOp::Schema(s) => Some((s.catalog.clone(), s.database.clone())),
            _ => None,
        })
    }

    /// Undo the whole log.
    pub fn rollback(&mut self, storage: &mut Storage) -> Result<()> {
        self.rollback_to(0, storage)
    }

    /// Commit: forget every recorded operation.
    pub fn clear(&mut self) {
        self.ops.clear();
        self.forget_taken();
    }

    /// Empty the buffer of taken rows, giving a large one back (a big
    /// move's, committed or rolled back, is not kept for the next).
    fn forget_taken(&mut self) {
        if self.taken.capacity() > KEPT_TAKEN_BYTES {
            self.taken = Vec::new();
        } else {
            self.taken.clear();
        }
    }

    /// Whether any row changed (as opposed to only the schema).
    pub fn has_data_changes(&self) -> bool {
        self.ops.iter().any(|op| !matches!(op, UndoOp::Schema(_)))
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Apply `op`'s inverse; `taken` is the log's buffer of taken rows, whose
/// last row is `op`'s if it is [`UndoOp::Taken`] (cut off here).
fn undo(op: UndoOp, storage: &mut Storage, taken: &mut Vec<u8>) -> Result<()> {
    match op {
        UndoOp::Inserted { table, id } => storage.table_mut(table)?.delete(id).map(drop),
        UndoOp::Deleted { table, id, row } => storage.table_mut(table)?.restore(id, row),
        UndoOp::Taken { table, id, at } => {
            let row = taken.get(at..).map(postcard::from_bytes::<Row>);
            taken.truncate(at);
            match row {
                Some(Ok(row)) => storage.table_mut(table)?.restore(id, row),
                Some(Err(e)) => bail!(Internal, "row {id}, taken, cannot be put back: {e}"),
                None => bail!(Internal, "row {id}, taken, is missing from the undo log"),
            }
        }
        UndoOp::Updated { table, id, old } => storage.table_mut(table)?.restore_update(id, old).map(drop),
        UndoOp::Truncated { table, rows } => {
            let table = storage.table_mut(table)?;
            let mut result = Ok(());
            for (id, row) in rows {
                if let Err(e) = table.restore(id, row) {
                    result = result.and(Err(e));
                }
            }
            result
        }
        UndoOp::Schema(s) => {
            for (id, old) in s.tables.into_iter().rev() {
                storage.drop_table(id);
                if let Some(t) = old {
                    storage.put_table(t);
                }
            }
            Ok(())
        }
    }
}
