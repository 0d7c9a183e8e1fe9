//! [`Table`]: one partition's copy of a table — its rows and their indexes.
//!
//! This is the hot path of every statement, so the rules are few and strict:
//!
//! * Every mutation is atomic: it checks everything that can fail (coercion,
//!   constraints, ids) before it changes anything, so an error leaves the
//!   table exactly as it was and the executor has nothing to repair.
//! * Unique constraints follow SQL: a key containing NULL never conflicts.
//! * Index maintenance touches only what changed: an update re-keys just the
//!   indexes whose key columns changed, and lookups borrow keys instead of
//!   building them.
//! * Nothing panics on user data; internal misuse (a wrong index position,
//!   a missing row id) is an `Internal` error.
//!
//! The partition's single thread owns the table: no locks, no atomics.
//!
//! While ranges of the hashinator ring move out of the partition, a table
//! may also keep its row ids by partition-key token ([`Table::track_tokens`]),
//! so that each piece of a move finds its rows without scanning the table;
//! every mutation keeps it current, and it is dropped when the moves end.

use super::coerce::{coerce_row, not_null_columns};
use super::index::{Index, IndexIter};
use super::key::KeyRef;
use super::slab::Slab;
use super::RowId;
use joule_common::{bail, err, Error, ErrorCode, Result, Row, Value};
use joule_sql::catalog::TableDef;
use std::collections::BTreeSet;
use std::mem::size_of;
use std::ops::Bound;
use std::sync::Arc;

/// One partition's copy of a table.
#[derive(Clone, Debug)]
pub struct Table {
    def: Arc<TableDef>,
    rows: Slab,
    /// Parallel to `def.indexes`.
    indexes: Vec<Index>,
    /// Per column: rejects NULL (NOT NULL or part of the primary key).
    not_null: Vec<bool>,
    /// While tracked: every row's id by the token of one column.
    tokens: Option<Box<TokenIndex>>,
}

/// The ring token a partition-key value hashes to (NULL, and a value that
/// does not hash, on the lowest token, as the hashinator places them).
pub fn token_of(v: &Value) -> i32 {
    joule_common::hashinator::token(v).ok().flatten().unwrap_or(i32::MIN)
}

/// Row ids by the token of column `column`'s value: the ring cut into 4096
/// slices in token order, each a small ordered set of (token, id). Shallow
/// sets keep adding a row cheap while rows keep arriving during a move (one
/// tree over every row cost a cache miss per level on each insert), and
/// every change stays logarithmic even when many rows share one key (and so
/// one token). A range of tokens reads the slices it covers.
#[derive(Clone, Debug)]
struct TokenIndex {
    column: usize,
    slices: Vec<BTreeSet<(i32, RowId)>>,
    entries: usize,
    /// Built a step at a time ([`Table::track_tokens_step`]): every row
    /// with an id below this is in the index (rows written since tracking
    /// began are too, whatever their id).
    built_to: usize,
    /// Every row is in the index: only then does it answer lookups. Once
    /// set it stays set (every later write keeps the index).
    complete: bool,
}

impl TokenIndex {
    const SLICE_BITS: u32 = 12;

    fn slice(token: i32) -> usize {
        // Order-preserving: i32::MIN is slice 0.
        ((token as u32 ^ 0x8000_0000) >> (32 - Self::SLICE_BITS)) as usize
    }

    /// The index over `rows`, built in bulk: each row's (token, id) dealt
    /// to its slice (one counting pass, one placing pass), each slice
    /// sorted on its own (a few hundred entries, in cache) and its set
    /// built from the sorted run at once. It runs inside the first piece
    /// of a move on the partition, which holds the partition: adding the
    /// rows one at a time to the sets took 0.4–2.2 s over a partition's
    /// millions of votes under load, and those seconds were the calls'
    /// worst latencies during a rebalance.
    fn build<'a>(column: usize, rows: impl Iterator<Item = (RowId, &'a Row)>) -> TokenIndex {
        let slices = 1usize << Self::SLICE_BITS;
        let mut ends = vec![0usize; slices + 1];
        let entries: Vec<(i32, RowId)> = rows.map(|(id, row)| (token_of(&row[column]), id)).collect();
        for (token, _) in &entries {
            ends[Self::slice(*token) + 1] += 1;
        }
        for s in 0..slices {
            ends[s + 1] += ends[s];
        }
        let mut next = ends.clone();
        let mut placed = vec![(0i32, 0 as RowId); entries.len()];
        for e in &entries {
            let s = Self::slice(e.0);
            placed[next[s]] = *e;
            next[s] += 1;
        }
        // (Two lists of every row's entry at once is the peak; the sets
        // are built from the second alone.)
        drop(entries);
        let sets = (0..slices)
            .map(|s| {
                let run = &mut placed[ends[s]..ends[s + 1]];
                run.sort_unstable();
                run.iter().copied().collect::<BTreeSet<_>>()
            })
            .collect();
        TokenIndex { column, slices: sets, entries: placed.len(), built_to: 0, complete: true }
    }

    /// An index to be built a step at a time, holding nothing yet.
    fn empty(column: usize) -> TokenIndex {
        let slices = (0..1usize << Self::SLICE_BITS).map(|_| BTreeSet::new()).collect();
        TokenIndex { column, slices, entries: 0, built_to: 0, complete: false }
    }

    /// Add the rows of the next `limit` ids (sorted first, so each slice is
    /// filled in order); returns the ids left to look at (0: complete).
    fn step(&mut self, rows: &Slab, limit: usize) -> usize {
        if self.complete {
            return 0;
        }
        let end = rows.end();
        let to = self.built_to.saturating_add(limit).min(end);
        let mut entries: Vec<(i32, RowId)> =
            rows.iter_range(self.built_to, to).map(|(id, row)| (token_of(&row[self.column]), id)).collect();
        entries.sort_unstable();
        for e in entries {
            if self.slices[Self::slice(e.0)].insert(e) {
                self.entries += 1;
            }
        }
        self.built_to = to;
        self.complete = to >= end;
        end - to
    }

    fn add(&mut self, row: &Row, id: RowId) {
        let token = token_of(&row[self.column]);
        if self.slices[Self::slice(token)].insert((token, id)) {
            self.entries += 1;
        }
    }

    fn remove(&mut self, row: &Row, id: RowId) {
        let token = token_of(&row[self.column]);
        if self.slices[Self::slice(token)].remove(&(token, id)) {
            self.entries -= 1;
        }
    }

    /// About what it holds in memory (an entry and its share of a node).
    fn memory_bytes(&self) -> usize {
        self.slices.len() * size_of::<BTreeSet<(i32, RowId)>>() + self.entries * 16
    }
}

impl Table {
    /// An empty table with empty indexes for `def.indexes`.
    pub fn new(def: Arc<TableDef>) -> Table {
        let indexes = def.indexes.iter().map(|i| Index::new(i, &def)).collect();
        let not_null = not_null_columns(&def);
        Table { def, rows: Slab::default(), indexes, not_null, tokens: None }
    }

    pub fn def(&self) -> &Arc<TableDef> {
        &self.def
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.len() == 0
    }

    pub fn get(&self, id: RowId) -> Option<&Row> {
        self.rows.get(id)
    }

    /// Every row in ascending id order.
    pub fn scan(&self) -> impl Iterator<Item = (RowId, &Row)> + '_ {
        self.rows.iter()
    }

    /// The rows as they are now, readable elsewhere while this table goes
    /// on changing; costs one reference count per 4096 rows (the slab's
    /// branches and leaves are copied on their next write instead).
    pub fn freeze(&self) -> super::FrozenRows {
        self.rows.freeze()
    }

    /// Convert each value to its column's type and check NOT NULL, lengths
    /// and the 1 MiB limit (not unique constraints).
    pub fn coerce_row(&self, row: Row) -> Result<Row> {
        coerce_row(&self.def, &self.not_null, row)
    }

    /// Coerce and insert a row; returns its id. Nothing changes on error.
    pub fn insert(&mut self, row: Row) -> Result<RowId> {
        let row = self.coerce_row(row)?;
        let id = self.next_id()?;
        self.index_new_row(id, &row)?;
        self.place(id, row)?;
        Ok(id)
    }

    /// Enter a new row in every index, or (on a duplicate key) in none.
    fn index_new_row(&mut self, id: RowId, row: &Row) -> Result<()> {
        for i in 0..self.indexes.len() {
            if !self.indexes[i].try_insert(row, id) {
                // A duplicate key: take the row out of the indexes it entered.
                for index in &mut self.indexes[..i] {
                    index.remove(row, id);
                }
                let key = self.indexes[i].key(row);
                return Err(self.unique_error(i, key));
            }
        }
        Ok(())
    }

    /// Remove a row from the table and all indexes; returns it.
    pub fn delete(&mut self, id: RowId) -> Result<Row> {
        let Some(row) = self.rows.remove(id) else {
            return Err(self.no_row(id));
        };
        for index in &mut self.indexes {
            index.remove(&row, id);
        }
        if let Some(t) = &mut self.tokens {
            t.remove(&row, id);
        }
        Ok(row)
    }

    /// Replace row `id` with a coerced `row`, re-keying only the indexes
    /// whose key changed; returns the old row. Nothing changes on error.
    pub fn update(&mut self, id: RowId, row: Row) -> Result<Row> {
        let row = self.coerce_row(row)?;
        let Some(old) = self.rows.get(id) else {
            return Err(self.no_row(id));
        };
        for (i, index) in self.indexes.iter().enumerate() {
            if index.unique && !index.same_key(old, &row) {
                if let Some(key) = index.conflict(&row, Some(id)) {
                    return Err(self.unique_error(i, key));
                }
            }
        }
        self.swap(id, row)
    }

    /// Undo of a delete: put `row` back at exactly `id`, without checks (it
    /// was valid when deleted). `Internal` error if `id` is occupied.
    pub fn restore(&mut self, id: RowId, row: Row) -> Result<()> {
        if self.rows.is_occupied(id) {
            bail!(Internal, "cannot restore row {id} of table {}: the id is in use", self.def.name);
        }
        for index in &mut self.indexes {
            index.insert(&row, id);
        }
        self.place(id, row)
    }

    /// Recovery: put a snapshot's `row` at exactly `id` (so that the slab,
    /// and with it the ids later inserts get, is as it was when the
    /// snapshot was taken), checking its types and unique keys; materialized
    /// views are not maintained — their own rows are placed the same way.
    pub fn place_row(&mut self, id: RowId, row: Row) -> Result<()> {
        let row = self.coerce_row(row)?;
        if self.rows.is_occupied(id) {
            bail!(CorruptData, "row id {id} of table {} appears twice", self.def.name);
        }
        self.index_new_row(id, &row)?;
        self.place(id, row)
    }

    /// Undo of an update: put `old` back at `id` without coercion or checks
    /// (it was valid before); returns the row it replaces.
    pub fn restore_update(&mut self, id: RowId, old: Row) -> Result<Row> {
        if !self.rows.is_occupied(id) {
            return Err(self.no_row(id));
        }
        self.swap(id, old)
    }

    /// Remove every row; returns them (ascending id) for undo.
    pub fn truncate(&mut self) -> Vec<(RowId, Row)> {
        for index in &mut self.indexes {
            index.clear();
        }
        if let Some(t) = &mut self.tokens {
            t.slices.iter_mut().for_each(BTreeSet::clear);
            t.entries = 0;
            // No row is left to index.
            t.complete = true;
        }
        self.rows.clear()
    }

    /// Keep row ids by the token of column `column` from now on (built
    /// with one pass over the rows if not kept already, or finished if
    /// begun by [`Table::track_tokens_step`]).
    pub fn track_tokens(&mut self, column: usize) {
        match &mut self.tokens {
            Some(t) if t.column == column => {
                t.step(&self.rows, usize::MAX);
            }
            _ => self.tokens = Some(Box::new(TokenIndex::build(column, self.rows.iter()))),
        }
    }

    /// Keep row ids by the token of column `column` from now on, building
    /// the index over the rows already here a step at a time: each call
    /// adds the rows of the next `limit` row ids. Returns the row ids left
    /// to look at; at 0 the index is complete, and only then does
    /// [`Table::ids_in_tokens`] answer. Rows written between steps keep the
    /// index as they would a complete one, so nothing is missed: the steps
    /// are for a big table whose index built at once would hold its
    /// partition for a long time (a second or more for millions of rows).
    pub fn track_tokens_step(&mut self, column: usize, limit: usize) -> usize {
        match &mut self.tokens {
            Some(t) if t.column == column => t.step(&self.rows, limit),
            _ => {
                let mut t = Box::new(TokenIndex::empty(column));
                let left = t.step(&self.rows, limit);
                self.tokens = Some(t);
                left
            }
        }
    }

    /// Stop keeping row ids by token.
    pub fn untrack_tokens(&mut self) {
        self.tokens = None;
    }

    /// While tokens are tracked: the ids of the rows whose key's token is in
    /// `start..=end`, ascending (`None`: not tracked).
    pub fn ids_in_tokens(&self, start: i32, end: i32) -> Option<Vec<RowId>> {
        let t = self.tokens.as_ref().filter(|t| t.complete)?;
        let mut ids = Vec::new();
        if start <= end {
            for slice in &t.slices[TokenIndex::slice(start)..=TokenIndex::slice(end)] {
                ids.extend(slice.range((start, RowId::MIN)..=(end, RowId::MAX)).map(|(_, id)| *id));
            }
        }
        ids.sort_unstable();
        Some(ids)
    }

    /// Rows whose key in index `index` equals `key`. On a tree index `key`
    /// may be a prefix of the index columns (even empty); a hash index needs
    /// the full key. Ids come in key order, then ascending id.
    ///
    /// Keys match by `Value`'s total order, where NULL equals NULL (so this
    /// serves `IS NULL`); for SQL `=`, a NULL parameter must match nothing
    /// and the caller should not look it up.
    pub fn index_eq(&self, index: usize, key: &[Value]) -> Result<IndexIter<'_>> {
        self.index(index)?.eq(key)
    }

    /// The row whose full key in index `index` equals `key` (for a unique
    /// index, the only one; otherwise the lowest id). No allocation. `None`
    /// also when `index` is out of range or `key` has the wrong length.
    /// NULL matches NULL, as in [`index_eq`](Self::index_eq).
    pub fn index_get_unique(&self, index: usize, key: &[Value]) -> Option<RowId> {
        self.indexes.get(index)?.get_unique(key)
    }

    /// Tree indexes only: entries whose first `prefix.len()` columns equal
    /// `prefix` and whose next column lies within `lower`/`upper`, in key
    /// order (or reversed). NULLs in the range column are excluded from
    /// bounded ranges, and a NULL bound matches nothing. With both bounds
    /// unbounded: every entry starting with `prefix` (NULLs first), and then
    /// `prefix` may be the full key (a reversible equality lookup).
    pub fn index_range(
        &self,
        index: usize,
        prefix: &[Value],
        lower: Bound<&Value>,
        upper: Bound<&Value>,
        reverse: bool,
    ) -> Result<IndexIter<'_>> {
        self.index(index)?.range(prefix, lower, upper, reverse)
    }

    /// Tree indexes only: every entry in key order (or reversed).
    pub fn index_all(&self, index: usize, reverse: bool) -> Result<IndexIter<'_>> {
        self.index(index)?.all(reverse)
    }

    /// Number of distinct keys in index `index` (for statistics).
    pub fn index_key_count(&self, index: usize) -> Result<usize> {
        Ok(self.index(index)?.key_count())
    }

    /// `def` is the current definition plus a new index at position `index`:
    /// build it over the existing rows. Fails (changing nothing) with
    /// `UniqueViolation` if the data violates it, or `NotNullViolation` if
    /// it is a primary key over NULLs.
    pub fn add_index(&mut self, def: Arc<TableDef>, index: usize) -> Result<()> {
        let Some(idef) = def.indexes.get(index) else {
            bail!(Internal, "index position {index} is outside the definition of table {}", def.name);
        };
        if def.indexes.len() != self.indexes.len() + 1 {
            bail!(Internal, "adding an index to table {} must add exactly one index", def.name);
        }
        let mut built = Index::new(idef, &def);
        for (id, row) in self.rows.iter() {
            if idef.primary_key {
                if let Some(&c) = built.columns().iter().find(|&&c| row.get(c).is_none_or(Value::is_null)) {
                    let column = def.columns.get(c).map_or("?", |c| c.name.as_str());
                    bail!(NotNullViolation, "column {column} of table {} cannot be NULL", def.name);
                }
            }
            if let Some(key) = built.conflict(row, Some(id)) {
                return Err(unique_error(&idef.name, &def.name, key));
            }
            built.insert(row, id);
        }
        self.indexes.insert(index, built);
        self.not_null = not_null_columns(&def);
        self.def = def;
        Ok(())
    }

    /// `def` is the current definition minus the index at position `index`.
    pub fn drop_index(&mut self, def: Arc<TableDef>, index: usize) -> Result<()> {
        if index >= self.indexes.len() || def.indexes.len() + 1 != self.indexes.len() {
            bail!(Internal, "cannot drop index {index} of table {}: definitions disagree", def.name);
        }
        self.indexes.remove(index);
        self.not_null = not_null_columns(&def);
        self.def = def;
        Ok(())
    }

    /// Exchange rows and index contents with `other` (`@SwapTables`); each
    /// keeps its own definition. The caller checks that the definitions
    /// are alike (same columns, same indexes in the same order).
    pub fn swap_contents(&mut self, other: &mut Table) {
        std::mem::swap(&mut self.rows, &mut other.rows);
        std::mem::swap(&mut self.indexes, &mut other.indexes);
        self.tokens = None;
        other.tokens = None;
    }

    /// For ALTER TABLE: switch to `def`, mapping every row through `map`
    /// (add, drop or convert columns) and coercing the result to `def`; all
    /// indexes are rebuilt and checked. Row ids are kept. Atomic: on any
    /// error the table is left as it was.
    pub fn replace_def(&mut self, def: Arc<TableDef>, mut map: impl FnMut(Row) -> Result<Row>) -> Result<()> {
        let mut new = Table::new(def);
        for (id, row) in self.rows.iter() {
            let row = new.coerce_row(map(row.clone())?)?;
            new.check_unique(&row, None)?;
            for index in &mut new.indexes {
                index.insert(&row, id);
            }
            new.place(id, row)?;
        }
        *self = new;
        Ok(())
    }

    /// A rough estimate of the memory this table uses (rows and indexes).
    /// Estimated bytes of the rows (sampled, so cheap for any size) and of
    /// the indexes (about 48 bytes an entry): what statistics report.
    pub fn memory_estimate(&self) -> (usize, usize) {
        let index_entries: usize = (0..self.indexes.len()).filter_map(|i| self.index_key_count(i).ok()).sum();
        let tokens = self.tokens.as_ref().map_or(0, |t| t.memory_bytes());
        (self.rows.memory_estimate(), index_entries * 48 + tokens)
    }

    pub fn memory_bytes(&self) -> usize {
        size_of::<Table>()
            + self.rows.memory_bytes()
            + self.indexes.iter().map(Index::memory_bytes).sum::<usize>()
            + self.tokens.as_ref().map_or(0, |t| t.memory_bytes())
    }

    /// The slab's length and free ids: equal shapes mean equal future ids.
    #[cfg(test)]
    pub(crate) fn slab_state(&self) -> (usize, Vec<RowId>) {
        self.rows.holes()
    }

    fn index(&self, index: usize) -> Result<&Index> {
        self.indexes
            .get(index)
            .ok_or_else(|| err!(Internal, "table {} has no index at position {index}", self.def.name))
    }

    fn check_unique(&self, row: &[Value], me: Option<RowId>) -> Result<()> {
        for (i, index) in self.indexes.iter().enumerate() {
            if let Some(key) = index.conflict(row, me) {
                return Err(self.unique_error(i, key));
            }
        }
        Ok(())
    }

    fn unique_error(&self, index: usize, key: KeyRef<'_>) -> Error {
        let name = self.def.indexes.get(index).map_or("?", |i| i.name.as_str());
        unique_error(name, &self.def.name, key)
    }

    fn no_row(&self, id: RowId) -> Error {
        err!(Internal, "table {} has no row {id}", self.def.name)
    }

    fn next_id(&self) -> Result<RowId> {
        self.rows.next_id().ok_or_else(|| {
            err!(Internal, "table {} has reached the limit of {} rows per partition", self.def.name, RowId::MAX)
        })
    }

    fn place(&mut self, id: RowId, row: Row) -> Result<()> {
        if let Some(t) = &mut self.tokens {
            if self.rows.is_occupied(id) {
                bail!(Internal, "row id {id} of table {} is already in use", self.def.name);
            }
            t.add(&row, id);
        }
        self.rows.place(id, row).map_err(|_| err!(Internal, "row id {id} of table {} is already in use", self.def.name))
    }

    /// Put `row` at occupied `id`, re-keying the indexes whose key changed.
    fn swap(&mut self, id: RowId, row: Row) -> Result<Row> {
        let Some(old) = self.rows.get(id) else {
            return Err(self.no_row(id));
        };
        for index in &mut self.indexes {
            if !index.same_key(old, &row) {
                index.remove(old, id);
                index.insert(&row, id);
            }
        }
        if let Some(t) = &mut self.tokens {
            if old[t.column] != row[t.column] {
                t.remove(old, id);
                t.add(&row, id);
            }
        }
        self.rows.replace(id, row).map_err(|_| err!(Internal, "table {} has no row {id}", self.def.name))
    }
}

fn unique_error(index: &str, table: &str, key: KeyRef<'_>) -> Error {
    Error::new(
        ErrorCode::UniqueViolation,
        format!("duplicate key {key} violates unique constraint {index} on table {table}"),
    )
}
