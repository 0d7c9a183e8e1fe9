//! The free row ids of a slab: which ids below its length are holes, and
//! the lowest of them, which the next insert takes.
//!
//! A bitmap, one bit per id below the slab's length, and a summary above
//! it, one bit per word of the bitmap that has any bit set. Marking an id
//! free or taken touches one bitmap word and at most one summary word; the
//! lowest free id is read from the first summary word that is not zero,
//! which the set keeps track of (its floor). A
//! `BTreeSet` of ids did the same before: every row deleted cost an insert
//! into a tree of all the holes (a cache miss per level once it held
//! hundreds of thousands, as a range move leaves on the partition it
//! gives from), and it took 12 bytes or more per hole where the bitmap
//! takes one bit per id.
//!
//! The floor is set by the first hole, lowered by a hole below it, and
//! moved up past the zero words when the last hole of the summary word at
//! the floor is taken.
//! That walk is the only step that is not constant time: it crosses at most
//! one summary word per 4096 ids (a few hundred words for a million rows),
//! and only when the lowest hole is taken while the next lies far above.

use super::RowId;
use std::mem::size_of;

/// Ids per bitmap word.
const BITS: usize = 64;

#[derive(Clone, Debug, Default)]
pub(crate) struct FreeIds {
    /// Bit `i % 64` of word `i / 64`: id `i` is free.
    words: Vec<u64>,
    /// Bit `w % 64` of word `w / 64`: `words[w]` is not zero.
    summary: Vec<u64>,
    /// While any id is free: the first summary word that is not zero.
    floor: usize,
    count: usize,
}

impl FreeIds {
    /// How many ids are free.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// The lowest free id.
    pub(crate) fn first(&self) -> Option<RowId> {
        if self.count == 0 {
            return None;
        }
        let s = *self.summary.get(self.floor)?;
        let w = self.floor * BITS + s.trailing_zeros() as usize;
        let word = *self.words.get(w)?;
        RowId::try_from(w * BITS + word.trailing_zeros() as usize).ok()
    }

    /// Whether `id` is free.
    #[cfg(test)]
    pub(crate) fn contains(&self, id: RowId) -> bool {
        let i = id as usize;
        self.words.get(i / BITS).is_some_and(|w| w & (1 << (i % BITS)) != 0)
    }

    /// Mark `id` free; returns whether it was not already.
    pub(crate) fn insert(&mut self, id: RowId) -> bool {
        let i = id as usize;
        let (w, bit) = (i / BITS, 1u64 << (i % BITS));
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
            self.summary.resize(self.words.len().div_ceil(BITS), 0);
        }
        if self.words[w] & bit != 0 {
            return false;
        }
        self.words[w] |= bit;
        self.summary[w / BITS] |= 1 << (w % BITS);
        // (With no id free before, the floor may point at a zero word.)
        self.floor = if self.count == 0 { w / BITS } else { self.floor.min(w / BITS) };
        self.count += 1;
        true
    }

    /// Mark every id in `start..end` free.
    pub(crate) fn insert_range(&mut self, start: usize, end: usize) {
        for id in start..end {
            match RowId::try_from(id) {
                Ok(id) => {
                    self.insert(id);
                }
                Err(_) => break,
            }
        }
    }

    /// Take `id` (no longer free); returns whether it was free.
    pub(crate) fn remove(&mut self, id: RowId) -> bool {
        let i = id as usize;
        let (w, bit) = (i / BITS, 1u64 << (i % BITS));
        match self.words.get_mut(w) {
            Some(word) if *word & bit != 0 => *word &= !bit,
            _ => return false,
        }
        self.count -= 1;
        if self.words[w] == 0 {
            self.summary[w / BITS] &= !(1 << (w % BITS));
            self.raise_floor();
        }
        true
    }

    /// Forget every free id at or above `len` (the slab was cut there).
    pub(crate) fn truncate(&mut self, len: usize) {
        let words = len.div_ceil(BITS);
        // Every id the bitmap can hold is below `len` already.
        if words > self.words.len() || (words == self.words.len() && len.is_multiple_of(BITS)) {
            return;
        }
        let dropped: usize = self.words.get(words..).map_or(0, |ws| ws.iter().map(|w| w.count_ones() as usize).sum());
        self.words.truncate(words);
        self.count -= dropped;
        // The last word keeps only the ids below `len`.
        if let (Some(last), true) = (self.words.last_mut(), !len.is_multiple_of(BITS)) {
            let kept = *last & ((1u64 << (len % BITS)) - 1);
            self.count -= (*last ^ kept).count_ones() as usize;
            *last = kept;
        }
        // Only the last summary word covers words that changed.
        let n = self.words.len().div_ceil(BITS);
        self.summary.truncate(n);
        if let (Some(s), Some(chunk)) =
            (n.checked_sub(1).and_then(|l| self.summary.get_mut(l)), self.words.get((n.saturating_sub(1)) * BITS..))
        {
            *s = chunk.iter().enumerate().fold(0, |acc, (j, w)| if *w != 0 { acc | 1 << j } else { acc });
        }
        self.floor = self.floor.min(self.summary.len());
        self.raise_floor();
    }

    pub(crate) fn clear(&mut self) {
        *self = FreeIds::default();
    }

    /// Every free id, ascending.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = RowId> + '_ {
        self.words.iter().enumerate().flat_map(|(w, &word)| {
            let mut bits = word;
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                RowId::try_from(w * BITS + b).ok()
            })
        })
    }

    /// The heap memory it takes.
    pub(crate) fn heap_bytes(&self) -> usize {
        (self.words.capacity() + self.summary.capacity()) * size_of::<u64>()
    }

    /// Move the floor up past the summary words that are zero.
    fn raise_floor(&mut self) {
        while self.summary.get(self.floor).is_some_and(|s| *s == 0) {
            self.floor += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn the_lowest_free_id_comes_first_across_words_and_summary_words() {
        let mut f = FreeIds::default();
        assert_eq!(f.first(), None);
        for id in [70_000, 5, 4096 * 64 + 3, 64] {
            assert!(f.insert(id));
        }
        assert!(!f.insert(5));
        assert_eq!(f.len(), 4);
        assert_eq!(f.iter().collect::<Vec<_>>(), vec![5, 64, 70_000, 4096 * 64 + 3]);
        let mut taken = Vec::new();
        while let Some(id) = f.first() {
            assert!(f.remove(id));
            taken.push(id);
        }
        assert_eq!(taken, vec![5, 64, 70_000, 4096 * 64 + 3]);
        assert!(!f.remove(5));
        assert_eq!(f.len(), 0);
    }

    #[test]
    fn truncating_keeps_only_the_ids_below_the_cut() {
        let mut f = FreeIds::default();
        f.insert_range(0, 200);
        f.truncate(130);
        assert_eq!(f.len(), 130);
        assert_eq!(f.iter().last(), Some(129));
        f.truncate(0);
        assert_eq!((f.len(), f.first()), (0, None));
        f.insert(3);
        assert_eq!(f.first(), Some(3));
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(RowId),
        Remove(RowId),
        TakeFirst,
        Range(RowId, RowId),
        Truncate(RowId),
    }

    fn op() -> impl Strategy<Value = Op> {
        // Ids spread over a few summary words, and many near each other.
        let id = prop_oneof![0..300u32, 0..600_000u32];
        prop_oneof![
            4 => id.clone().prop_map(Op::Insert),
            3 => id.clone().prop_map(Op::Remove),
            3 => Just(Op::TakeFirst),
            1 => (id.clone(), 0..200u32).prop_map(|(s, n)| Op::Range(s, s + n)),
            1 => id.prop_map(Op::Truncate),
        ]
    }

    proptest! {
        /// The bitmap answers as a `BTreeSet` of the same ids does.
        #[test]
        fn free_ids_behave_as_an_ordered_set(ops in proptest::collection::vec(op(), 1..200)) {
            let mut f = FreeIds::default();
            let mut model = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Insert(id) => prop_assert_eq!(f.insert(id), model.insert(id)),
                    Op::Remove(id) => prop_assert_eq!(f.remove(id), model.remove(&id)),
                    Op::TakeFirst => {
                        let first = model.first().copied();
                        prop_assert_eq!(f.first(), first);
                        if let Some(id) = first {
                            prop_assert!(f.remove(id));
                            model.remove(&id);
                        }
                    }
                    Op::Range(s, e) => {
                        f.insert_range(s as usize, e as usize);
                        model.extend(s..e);
                    }
                    Op::Truncate(len) => {
                        f.truncate(len as usize);
                        model.retain(|id| *id < len);
                    }
                }
                prop_assert_eq!(f.len(), model.len());
                prop_assert_eq!(f.first(), model.first().copied());
                for probe in [0u32, 1, 63, 64, 4095, 4096, 300_000] {
                    prop_assert_eq!(f.contains(probe), model.contains(&probe));
                }
            }
            prop_assert_eq!(f.iter().collect::<Vec<_>>(), model.into_iter().collect::<Vec<_>>());
        }
    }
}
