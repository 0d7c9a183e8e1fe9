//! The row slab of one table partition: rows addressed by dense [`RowId`]s.
//!
//! Rows live in fixed-size leaves of `Option<Row>` slots under branches
//! ([`Rows`]), so a growing table never copies its rows to a bigger array; a deleted row
//! leaves a hole whose id is reused by a later insert. The reuse policy is chosen so that the slab's
//! state is a pure function of *which ids are occupied*:
//!
//! * an insert takes the lowest free id ([`FreeIds`], a bitmap), or appends;
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

use super::free_ids::FreeIds;
use super::RowId;
use joule_common::{Row, Value};
use std::mem::size_of;
use triomphe::Arc;

/// Slots per leaf: the rows a first write after a freeze copies.
const LEAF_BITS: usize = 6;
const LEAF: usize = 1 << LEAF_BITS;
/// Leaves per branch: the references a first write after a freeze copies.
const BRANCH_BITS: usize = 6;
const BRANCH: usize = 1 << BRANCH_BITS;
/// Slots per branch.
const BRANCH_SLOTS_BITS: usize = LEAF_BITS + BRANCH_BITS;

/// [`LEAF`] slots, shared with frozen copies until written.
type Leaf = Arc<[Option<Row>; LEAF]>;

/// [`BRANCH`] leaves, shared with frozen copies until written. Leaves are
/// allocated as slots are pushed: only those past the last slot are absent.
/// (Inline, so that a read goes from the branch to the leaf to the slot.)
#[derive(Clone, Debug)]
struct Branch {
    leaves: [Option<Leaf>; BRANCH],
}

impl Branch {
    fn new() -> Arc<Branch> {
        Arc::new(Branch { leaves: std::array::from_fn(|_| None) })
    }
}

fn empty_leaf() -> Leaf {
    Arc::new(std::array::from_fn(|_| None))
}

/// Every slot of `branches`, in order (the caller cuts it at the length).
fn slots(branches: &[Arc<Branch>]) -> impl Iterator<Item = &Option<Row>> + '_ {
    branches.iter().flat_map(|b| b.leaves.iter().flatten()).flat_map(|l| l.iter())
}

/// The occupied slots of `branches` with their ids, from id `start` to
/// `end` (exclusive), in id order: the walk starts at `start`'s branch.
fn occupied_from(branches: &[Arc<Branch>], start: usize, end: usize) -> impl Iterator<Item = (RowId, &Row)> + '_ {
    let first = (start >> BRANCH_SLOTS_BITS).min(branches.len());
    let base = first << BRANCH_SLOTS_BITS;
    slots(&branches[first..])
        .enumerate()
        .map(move |(i, r)| (base + i, r))
        .skip(start.saturating_sub(base))
        .take_while(move |(i, _)| *i < end)
        .filter_map(|(i, r)| Some((i as RowId, r.as_ref()?)))
}

/// A vector of row slots stored in a two-level tree: branches of
/// [`BRANCH`] leaves of [`LEAF`] slots. Pushing never moves existing slots
/// (a plain `Vec` doubling would copy the whole table and touch twice its
/// memory while doing it).
///
/// Branches and leaves are reference-counted and copied on write:
/// [`Rows::freeze`] hands out the branches as they are (one reference
/// count per 4096 rows, no row copied), and the first later write under a
/// branch a frozen copy still holds copies that branch's 64 leaf
/// references, the first write to a shared leaf its 64 rows. That is how a
/// snapshot sees one consistent state while the site goes on writing, and
/// why the two levels: one level of large chunks made each first write
/// copy a thousand rows (a scattered write load, or a range move's
/// deletes, paid for copying most of the table within moments of every
/// freeze), and one level of small ones made the freeze itself count one
/// reference per 64 rows, a site pause growing with the table.
#[derive(Clone, Debug, Default)]
struct Rows {
    branches: Vec<Arc<Branch>>,
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
        let leaf = self.branches.get(i >> BRANCH_SLOTS_BITS)?.leaves[(i >> LEAF_BITS) & (BRANCH - 1)].as_ref()?;
        leaf.get(i & (LEAF - 1))
    }

    fn get_mut(&mut self, i: usize) -> Option<&mut Option<Row>> {
        if i >= self.len {
            return None;
        }
        let branch = Arc::make_mut(self.branches.get_mut(i >> BRANCH_SLOTS_BITS)?);
        let leaf = Arc::make_mut(branch.leaves[(i >> LEAF_BITS) & (BRANCH - 1)].as_mut()?);
        leaf.get_mut(i & (LEAF - 1))
    }

    fn last(&self) -> Option<&Option<Row>> {
        self.len.checked_sub(1).and_then(|i| self.get(i))
    }

    fn push(&mut self, slot: Option<Row>) {
        if self.len.is_multiple_of(LEAF) {
            if self.len.is_multiple_of(BRANCH * LEAF) {
                self.branches.push(Branch::new());
            }
            if let Some(branch) = self.branches.last_mut() {
                Arc::make_mut(branch).leaves[(self.len >> LEAF_BITS) & (BRANCH - 1)] = Some(empty_leaf());
            }
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
        if self.len.is_multiple_of(LEAF) {
            if let Some(branch) = self.branches.last_mut() {
                Arc::make_mut(branch).leaves[(self.len >> LEAF_BITS) & (BRANCH - 1)] = None;
            }
            if self.len.is_multiple_of(BRANCH * LEAF) {
                self.branches.pop();
            }
        }
        Some(slot)
    }

    fn resize_with_none(&mut self, len: usize) {
        while self.len < len {
            self.push(None);
        }
    }

    fn iter(&self) -> impl Iterator<Item = &Option<Row>> + '_ {
        slots(&self.branches).take(self.len)
    }

    /// Slots allocated: whole leaves, one per [`LEAF`] slots begun.
    fn capacity(&self) -> usize {
        self.len.div_ceil(LEAF) * LEAF
    }

    fn freeze(&self) -> FrozenRows {
        FrozenRows { branches: self.branches.clone(), len: self.len }
    }
}

/// A table's rows as they were when frozen, readable from any thread while
/// the table goes on changing (see [`Rows`]).
#[derive(Clone, Debug, Default)]
pub struct FrozenRows {
    branches: Vec<Arc<Branch>>,
    len: usize,
}

impl FrozenRows {
    /// The rows, in id order.
    pub fn iter(&self) -> impl Iterator<Item = &Row> + '_ {
        slots(&self.branches).take(self.len).flatten()
    }

    /// The rows with their ids, in id order.
    pub fn iter_with_ids(&self) -> impl Iterator<Item = (RowId, &Row)> + '_ {
        slots(&self.branches).take(self.len).enumerate().filter_map(|(i, r)| Some((i as RowId, r.as_ref()?)))
    }

    /// The rows with their ids from id `start` on, in id order (reached
    /// through its branch, not by walking the rows of the branches before).
    pub fn iter_from(&self, start: RowId) -> impl Iterator<Item = (RowId, &Row)> + '_ {
        occupied_from(&self.branches, start as usize, self.len)
    }

    /// How many leaves (of up to 64 slots) the rows span.
    pub fn leaf_count(&self) -> usize {
        self.branches.iter().map(|b| b.leaves.iter().flatten().count()).sum()
    }
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Slab {
    rows: Rows,
    free: FreeIds,
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
            Some(id) => Some(id),
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
            self.free.remove(id);
            if let Some(slot) = self.rows.get_mut(i) {
                *slot = Some(row);
            }
        } else {
            // Ids between the old end and `id` become holes.
            let old_len = self.rows.len();
            self.free.insert_range(old_len, i);
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
            self.free.truncate(self.rows.len());
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

    /// One past the highest occupied id (0 when empty).
    pub(crate) fn end(&self) -> usize {
        self.rows.len()
    }

    /// Occupied rows with ids in `start..end`, in ascending id order.
    pub(crate) fn iter_range(&self, start: usize, end: usize) -> impl Iterator<Item = (RowId, &Row)> + '_ {
        occupied_from(&self.rows.branches, start, end.min(self.rows.len()))
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
        self.rows.capacity() * size_of::<Option<Row>>() + self.free.heap_bytes() + per_row * self.live
    }

    /// A rough estimate of the heap memory the rows use.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.rows.capacity() * size_of::<Option<Row>>()
            + self.free.heap_bytes()
            + self.iter().map(|(_, r)| row_heap_bytes(r)).sum::<usize>()
    }

    #[cfg(test)]
    pub(crate) fn holes(&self) -> (usize, Vec<RowId>) {
        (self.rows.len(), self.free.iter().collect())
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
        for i in 0..9000 {
            insert(&mut s, i);
        }
        for id in [5, 1500, 2047, 4096, 8999] {
            s.remove(id).unwrap();
        }
        let frozen = s.freeze();
        let all: Vec<(RowId, Row)> = frozen.iter_with_ids().map(|(i, r)| (i, r.clone())).collect();
        assert_eq!(all.len(), 8995);
        for start in [0, 1, 5, 63, 64, 1500, 2048, 4095, 4096, 4097, 8191, 8192, 8998, 8999, 9000, 20_000] {
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
        assert_eq!(frozen.leaf_count(), 47);
        // Writes to every leaf, a trim at the end, and growth.
        for id in (10..3000).step_by(64) {
            s.replace(id, row(-(id as i64))).unwrap();
        }
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

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u16),
        Remove(u16),
        RemoveTail(u16),
        Replace(u16),
        Place(u16),
        Freeze,
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            3 => (1u16..600).prop_map(Op::Insert),
            3 => any::<u16>().prop_map(Op::Remove),
            1 => (1u16..600).prop_map(Op::RemoveTail),
            2 => any::<u16>().prop_map(Op::Replace),
            1 => (0u16..10_000).prop_map(Op::Place),
            1 => Just(Op::Freeze),
        ]
    }

    proptest::proptest! {
        /// Growth and trimming across leaves and branches, with frozen
        /// copies taken along the way: the slab agrees with a map of its
        /// rows, its holes are the free ids below its length, and every
        /// frozen copy still reads exactly as the slab did when frozen.
        #[test]
        fn slab_and_frozen_copies_agree_with_a_model(ops in proptest::collection::vec(op(), 1..60)) {
            use std::collections::BTreeMap;
            let mut s = Slab::default();
            let mut model: BTreeMap<RowId, Row> = BTreeMap::new();
            let mut frozen: Vec<(FrozenRows, Vec<(RowId, Row)>)> = Vec::new();
            let mut next = 0i64;
            for op in ops {
                let occupied: Vec<RowId> = model.keys().copied().collect();
                let pick = |n: u16| occupied.get(n as usize % occupied.len().max(1)).copied();
                match op {
                    Op::Insert(n) => {
                        for _ in 0..n {
                            next += 1;
                            let id = insert(&mut s, next);
                            proptest::prop_assert!(model.insert(id, row(next)).is_none());
                        }
                    }
                    Op::Remove(n) => {
                        if let Some(id) = pick(n) {
                            proptest::prop_assert_eq!(s.remove(id), model.remove(&id));
                        }
                    }
                    Op::RemoveTail(n) => {
                        for id in occupied.iter().rev().take(n as usize) {
                            proptest::prop_assert_eq!(s.remove(*id), model.remove(id));
                        }
                    }
                    Op::Replace(n) => {
                        if let Some(id) = pick(n) {
                            next += 1;
                            proptest::prop_assert_eq!(s.replace(id, row(-next)).ok(), model.insert(id, row(-next)));
                        }
                    }
                    Op::Place(id) => {
                        let id = RowId::from(id);
                        next += 1;
                        let placed = s.place(id, row(next)).is_ok();
                        proptest::prop_assert_eq!(placed, !model.contains_key(&id));
                        if placed {
                            model.insert(id, row(next));
                        }
                    }
                    Op::Freeze => frozen.push((s.freeze(), model.iter().map(|(i, r)| (*i, r.clone())).collect())),
                }
            }
            let now: Vec<(RowId, Row)> = s.iter().map(|(i, r)| (i, r.clone())).collect();
            proptest::prop_assert_eq!(now, model.iter().map(|(i, r)| (*i, r.clone())).collect::<Vec<_>>());
            proptest::prop_assert_eq!(s.len(), model.len());
            let len = model.keys().next_back().map_or(0, |last| *last as usize + 1);
            let holes: Vec<RowId> = (0..len as RowId).filter(|i| !model.contains_key(i)).collect();
            proptest::prop_assert_eq!(s.holes(), (len, holes));
            proptest::prop_assert_eq!(s.rows.capacity(), len.div_ceil(LEAF) * LEAF);
            for (copy, then) in &frozen {
                let seen: Vec<(RowId, Row)> = copy.iter_with_ids().map(|(i, r)| (i, r.clone())).collect();
                proptest::prop_assert_eq!(&seen, then);
                let from = then.len() / 2;
                let start = then.get(from).map_or(0, |(i, _)| *i);
                let tail: Vec<(RowId, Row)> = copy.iter_from(start).map(|(i, r)| (i, r.clone())).collect();
                proptest::prop_assert_eq!(&tail[..], &then[from..]);
            }
        }
    }
}
