//! The row slab of one table partition: rows addressed by dense [`RowId`]s.
//!
//! Rows live in fixed-size chunks of `Option<Row>` slots ([`Rows`]), so a
//! growing table never copies its rows to a bigger array; a deleted row
//! leaves a hole whose id is reused by a later insert. The reuse policy is chosen so that the slab's
//! state is a pure function of *which ids are occupied*:
//!
//! * an insert takes the lowest free id (a `BTreeSet`), or appends;
//! * the vector never ends in a hole: deleting the last row also drops the
//!   holes before it.
//!
//! So the free set is always exactly "the holes below the length", and the
//! length is "highest occupied id + 1". Two slabs holding rows at the same
//! ids are identical, whatever history produced them. That is what makes
//! undo exact: rolling back puts every row back at its old id, and with it
//! the slab returns to the very state it had, so the ids later inserts get
//! (and with them the order of full scans) are the same as if the rolled-back
//! work had never happened. Replicas replaying the same transactions,
//! including aborted ones, therefore stay identical.

use super::RowId;
use joule_common::{Row, Value};
use std::collections::BTreeSet;
use std::mem::size_of;
use std::sync::Arc;

/// Slots per chunk.
const CHUNK_BITS: usize = 10;
const CHUNK: usize = 1 << CHUNK_BITS;

/// One chunk: [`CHUNK`] slots, shared with snapshots until written.
type Chunk = Arc<[Option<Row>]>;

fn empty_chunk() -> Chunk {
    (0..CHUNK).map(|_| None).collect()
}

/// A vector of row slots stored in chunks of [`CHUNK`]: pushing never
/// moves existing slots (a plain `Vec` doubling would copy the whole table
/// and touch twice its memory while doing it).
///
/// Chunks are reference-counted and copied on write: [`Rows::freeze`]
/// hands out the chunks as they are (one reference count per chunk, no
/// row copied), and the first later write to a chunk a frozen copy still
/// holds copies that chunk only. That is how a snapshot sees one
/// consistent state while the site goes on writing.
#[derive(Clone, Debug, Default)]
struct Rows {
    chunks: Vec<Chunk>,
    len: usize,
}

impl Rows {
    fn len(&self) -> usize {
        self.len
    }

    fn get(&self, i: usize) -> Option<&Option<Row>> {
        if i >= self.len {
            return None;
        }
        self.chunks.get(i >> CHUNK_BITS)?.get(i & (CHUNK - 1))
    }

    fn get_mut(&mut self, i: usize) -> Option<&mut Option<Row>> {
        if i >= self.len {
            return None;
        }
        Arc::make_mut(self.chunks.get_mut(i >> CHUNK_BITS)?).get_mut(i & (CHUNK - 1))
    }

    fn last(&self) -> Option<&Option<Row>> {
        self.len.checked_sub(1).and_then(|i| self.get(i))
    }

    fn push(&mut self, slot: Option<Row>) {
        if self.len.is_multiple_of(CHUNK) {
            self.chunks.push(empty_chunk());
        }
        let i = self.len;
        self.len += 1;
        if let Some(s) = self.get_mut(i) {
            *s = slot;
        }
    }

    fn pop(&mut self) -> Option<Option<Row>> {
        let i = self.len.checked_sub(1)?;
        let slot = self.get_mut(i)?.take();
        self.len -= 1;
        if self.len.is_multiple_of(CHUNK) {
            self.chunks.pop();
        }
        Some(slot)
    }

    fn resize_with_none(&mut self, len: usize) {
        while self.len < len {
            self.push(None);
        }
    }

    fn iter(&self) -> impl Iterator<Item = &Option<Row>> + '_ {
        self.chunks.iter().flat_map(|c| c.iter()).take(self.len)
    }

    fn capacity(&self) -> usize {
        self.chunks.len() * CHUNK
    }

    fn freeze(&self) -> FrozenRows {
        FrozenRows { chunks: self.chunks.clone(), len: self.len }
    }
}

/// A table's rows as they were when frozen, readable from any thread while
/// the table goes on changing (see [`Rows`]).
#[derive(Clone, Debug, Default)]
pub struct FrozenRows {
    chunks: Vec<Chunk>,
    len: usize,
}

impl FrozenRows {
    /// The rows, in id order.
    pub fn iter(&self) -> impl Iterator<Item = &Row> + '_ {
        self.chunks.iter().flat_map(|c| c.iter()).take(self.len).flatten()
    }

    /// The rows with their ids, in id order.
    pub fn iter_with_ids(&self) -> impl Iterator<Item = (RowId, &Row)> + '_ {
        self.chunks
            .iter()
            .flat_map(|c| c.iter())
            .take(self.len)
            .enumerate()
            .filter_map(|(i, r)| Some((i as RowId, r.as_ref()?)))
    }

    /// The rows with their ids from id `start` on, in id order (reached
    /// directly, not by walking the rows before it).
    pub fn iter_from(&self, start: RowId) -> impl Iterator<Item = (RowId, &Row)> + '_ {
        let start = start as usize;
        let first = start / CHUNK;
        self.chunks
            .iter()
            .skip(first)
            .flat_map(|c| c.iter())
            .enumerate()
            .map(move |(i, r)| (first * CHUNK + i, r))
            .skip(start - first * CHUNK)
            .take_while(move |(i, _)| *i < self.len)
            .filter_map(|(i, r)| Some((i as RowId, r.as_ref()?)))
    }

    /// How many chunks (of up to 1024 slots) the rows span.
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Slab {
    rows: Rows,
    free: BTreeSet<RowId>,
    live: usize,
}

impl Slab {
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    pub(crate) fn get(&self, id: RowId) -> Option<&Row> {
        self.rows.get(id as usize).and_then(Option::as_ref)
    }

    pub(crate) fn is_occupied(&self, id: RowId) -> bool {
        self.get(id).is_some()
    }

    /// The id the next insert will get; `None` when ids are exhausted.
    pub(crate) fn next_id(&self) -> Option<RowId> {
        match self.free.first() {
            Some(&id) => Some(id),
            None => RowId::try_from(self.rows.len()).ok(),
        }
    }

    /// Put `row` at `id`, which must be free (else the row is handed back).
    pub(crate) fn place(&mut self, id: RowId, row: Row) -> Result<(), Row> {
        let i = id as usize;
        if i < self.rows.len() {
            if self.rows.get(i).is_some_and(Option::is_some) {
                return Err(row);
            }
            self.free.remove(&id);
            if let Some(slot) = self.rows.get_mut(i) {
                *slot = Some(row);
            }
        } else {
            // Ids between the old end and `id` become holes.
            let old_len = self.rows.len();
            self.free.extend((old_len..i).filter_map(|h| RowId::try_from(h).ok()));
            self.rows.resize_with_none(i);
            self.rows.push(Some(row));
        }
        self.live += 1;
        Ok(())
    }

    pub(crate) fn remove(&mut self, id: RowId) -> Option<Row> {
        let i = id as usize;
        let row = self.rows.get_mut(i)?.take()?;
        self.live -= 1;
        if i + 1 == self.rows.len() {
            self.rows.pop();
            while let Some(None) = self.rows.last() {
                self.rows.pop();
            }
            // Drop the ids of the holes just cut off.
            if let Ok(len) = RowId::try_from(self.rows.len()) {
                self.free.split_off(&len);
            }
        } else {
            self.free.insert(id);
        }
        Some(row)
    }

    /// Swap the row at `id` (which must exist) for `row`; returns the old one.
    pub(crate) fn replace(&mut self, id: RowId, row: Row) -> Result<Row, Row> {
        match self.rows.get_mut(id as usize) {
            Some(Some(slot)) => Ok(std::mem::replace(slot, row)),
            _ => Err(row),
        }
    }

    /// Occupied rows in ascending id order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (RowId, &Row)> + '_ {
        self.rows.iter().enumerate().filter_map(|(i, r)| Some((i as RowId, r.as_ref()?)))
    }

    /// Remove every row, returning them in ascending id order.
    pub(crate) fn clear(&mut self) -> Vec<(RowId, Row)> {
        let mut rows = std::mem::take(&mut self.rows);
        self.free.clear();
        let mut out = Vec::with_capacity(std::mem::take(&mut self.live));
        let len = rows.len;
        for i in 0..len {
            if let Some(Some(row)) = rows.get_mut(i).map(Option::take) {
                out.push((i as RowId, row));
            }
        }
        out
    }

    /// The rows as they are now, for a snapshot (see [`Rows`]).
    pub(crate) fn freeze(&self) -> FrozenRows {
        self.rows.freeze()
    }

    /// Like [`Slab::memory_bytes`] but from a sample of at most 256 rows,
    /// so that it costs the same for any table size (for statistics).
    pub(crate) fn memory_estimate(&self) -> usize {
        let sample: Vec<usize> = self.iter().take(256).map(|(_, r)| row_heap_bytes(r)).collect();
        let per_row = if sample.is_empty() { 0 } else { sample.iter().sum::<usize>() / sample.len() };
        self.rows.capacity() * size_of::<Option<Row>>() + self.free.len() * 2 * size_of::<RowId>() + per_row * self.live
    }

    /// A rough estimate of the heap memory the rows use.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.rows.capacity() * size_of::<Option<Row>>()
            + self.free.len() * 2 * size_of::<RowId>()
            + self.iter().map(|(_, r)| row_heap_bytes(r)).sum::<usize>()
    }

    #[cfg(test)]
    pub(crate) fn holes(&self) -> (usize, Vec<RowId>) {
        (self.rows.len(), self.free.iter().copied().collect())
    }
}

pub(crate) fn row_heap_bytes(row: &Row) -> usize {
    row.capacity() * size_of::<Value>() + row.iter().map(value_heap_bytes).sum::<usize>()
}

/// Heap bytes a value owns beyond its inline size.
pub(crate) fn value_heap_bytes(v: &Value) -> usize {
    match v {
        Value::String(s) => s.capacity(),
        Value::Binary(b) => b.capacity(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: i64) -> Row {
        vec![Value::Integer(i)]
    }

    fn insert(s: &mut Slab, i: i64) -> RowId {
        let id = s.next_id().unwrap();
        s.place(id, row(i)).unwrap();
        id
    }

    #[test]
    fn frozen_rows_are_read_from_any_id_on() {
        let mut s = Slab::default();
        for i in 0..3000 {
            insert(&mut s, i);
        }
        for id in [5, 1500, 2047, 2999] {
            s.remove(id).unwrap();
        }
        let frozen = s.freeze();
        let all: Vec<(RowId, Row)> = frozen.iter_with_ids().map(|(i, r)| (i, r.clone())).collect();
        for start in [0, 1, 5, 1023, 1024, 1500, 2048, 2998, 2999, 3000, 5000] {
            let from: Vec<(RowId, Row)> = frozen.iter_from(start).map(|(i, r)| (i, r.clone())).collect();
            let expected: Vec<(RowId, Row)> = all.iter().filter(|(i, _)| *i >= start).cloned().collect();
            assert_eq!(from, expected, "from {start}");
        }
    }

    #[test]
    fn reuses_lowest_free_id_and_never_ends_in_a_hole() {
        let mut s = Slab::default();
        for i in 0..5 {
            assert_eq!(insert(&mut s, i), i as RowId);
        }
        s.remove(3).unwrap();
        s.remove(1).unwrap();
        assert_eq!(s.holes(), (5, vec![1, 3]));
        assert_eq!(insert(&mut s, 10), 1);
        s.remove(4).unwrap(); // last: trims it and the hole at 3
        assert_eq!(s.holes(), (3, vec![]));
        assert_eq!(s.len(), 3);
        assert_eq!(s.iter().map(|(id, _)| id).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert!(s.remove(4).is_none());
        assert!(s.remove(99).is_none());
    }

    #[test]
    fn state_depends_only_on_occupied_ids() {
        let mut a = Slab::default();
        for i in 0..6 {
            insert(&mut a, i);
        }
        for id in [0, 2, 5, 4] {
            a.remove(id).unwrap();
        }
        let mut b = Slab::default();
        b.place(3, row(3)).unwrap();
        b.place(1, row(1)).unwrap();
        assert_eq!(a.holes(), b.holes());
        assert_eq!(a.next_id(), b.next_id());
        assert_eq!(a.iter().collect::<Vec<_>>(), b.iter().collect::<Vec<_>>());
    }

    #[test]
    fn a_frozen_copy_keeps_its_rows_while_the_slab_changes() {
        let mut s = Slab::default();
        for i in 0..3000 {
            insert(&mut s, i);
        }
        let frozen = s.freeze();
        assert_eq!(frozen.chunk_count(), 3);
        // Writes to every chunk, a trim at the end, and growth.
        s.replace(5, row(-5)).unwrap();
        s.remove(1500).unwrap();
        for id in (2000..3000).rev() {
            s.remove(id).unwrap();
        }
        insert(&mut s, 99_999);
        for i in 0..2000 {
            insert(&mut s, 100_000 + i);
        }
        let seen: Vec<i64> = frozen.iter().map(|r| if let Value::Integer(i) = r[0] { i } else { -1 }).collect();
        assert_eq!(seen, (0..3000).collect::<Vec<_>>());
        // The slab has its own new state.
        assert_eq!(s.get(5), Some(&row(-5)));
        assert_eq!(s.get(1500), Some(&row(99_999)));
        assert_eq!(s.len(), 2000 + 2000);
        // A second freeze sees the new state; dropping both changes nothing.
        let again = s.freeze();
        assert_eq!(again.iter().count(), 4000);
        drop(frozen);
        drop(again);
        assert_eq!(s.iter().count(), 4000);
    }

    #[test]
    fn place_and_replace_refuse_wrong_slots() {
        let mut s = Slab::default();
        insert(&mut s, 0);
        assert_eq!(s.place(0, row(9)), Err(row(9)));
        assert_eq!(s.replace(0, row(7)), Ok(row(0)));
        assert_eq!(s.replace(1, row(7)), Err(row(7)));
        assert_eq!(s.clear(), vec![(0, row(7))]);
        assert_eq!(s.holes(), (0, vec![]));
        assert_eq!(s.len(), 0);
        assert!(s.memory_bytes() < 1024);
    }
}
