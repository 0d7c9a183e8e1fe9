//! [`ShardedHashMap`]: the map behind hash indexes, built so that no insert
//! ever stalls the partition for long.
//!
//! A `hashbrown` map grows by allocating a table twice the size and moving
//! every entry at once. At a few million entries that move takes 40–170 ms
//! (measured on the development machine at 0.9 M and 3.7 M `i64` keys), and
//! a site that stalls that long holds up every transaction queued behind it:
//! the voter benchmark's p99 and max latency were those stalls. Here a map
//! starts as one `hashbrown` map and, once it holds [`SPLIT_AT`] keys, is
//! split into [`SHARDS`] maps chosen by a hash of the key; afterwards each
//! growth moves only the entries of one shard (1/256 of the whole). Small
//! indexes — most of them — keep a single map and pay nothing.
//!
//! The shard is chosen with a hasher of this map's own, independent of
//! the shards' hashers, so a key's shard says nothing about its bucket.
//! Iteration order is arbitrary, as for any hash map; nothing that changes
//! state depends on it.

use hashbrown::{DefaultHashBuilder, Equivalent, HashMap};
use std::hash::{BuildHasher, Hash};

/// Keys held before the map splits into shards.
pub(crate) const SPLIT_AT: usize = 1 << 15;
/// Shards after the split (a power of two; the top bits of the hash pick one).
pub(crate) const SHARDS: usize = 256;

/// A hash map whose growth moves at most one shard's entries at a time.
#[derive(Clone, Debug)]
pub(crate) struct ShardedHashMap<K, V> {
    /// One map, or `SHARDS` maps.
    shards: Vec<HashMap<K, V>>,
    selector: DefaultHashBuilder,
}

impl<K: Hash + Eq, V> ShardedHashMap<K, V> {
    pub(crate) fn new() -> Self {
        ShardedHashMap { shards: vec![HashMap::new()], selector: DefaultHashBuilder::default() }
    }

    fn shard_of<Q: Hash + ?Sized>(&self, key: &Q) -> usize {
        if self.shards.len() == 1 {
            0
        } else {
            (self.selector.hash_one(key) >> (64 - SHARDS.trailing_zeros())) as usize
        }
    }

    pub(crate) fn get<Q: Hash + Equivalent<K> + ?Sized>(&self, key: &Q) -> Option<&V> {
        self.shards[self.shard_of(key)].get(key)
    }

    pub(crate) fn get_mut<Q: Hash + Equivalent<K> + ?Sized>(&mut self, key: &Q) -> Option<&mut V> {
        let i = self.shard_of(key);
        self.shards[i].get_mut(key)
    }

    pub(crate) fn remove<Q: Hash + Equivalent<K> + ?Sized>(&mut self, key: &Q) -> Option<V> {
        let i = self.shard_of(key);
        self.shards[i].remove(key)
    }

    /// The map that holds (or will hold) `key`, for an insert through its
    /// entry API. Splits the map first once it is large enough.
    pub(crate) fn shard_for_insert<Q: Hash + ?Sized>(&mut self, key: &Q) -> &mut HashMap<K, V> {
        if self.shards.len() == 1 && self.shards[0].len() >= SPLIT_AT {
            self.split();
        }
        let i = self.shard_of(key);
        &mut self.shards[i]
    }

    /// Move every entry of the single map into its shard (once, at
    /// `SPLIT_AT` keys: a bounded pause).
    fn split(&mut self) {
        let whole = std::mem::take(&mut self.shards[0]);
        let per_shard = whole.len() / SHARDS * 2;
        self.shards = (0..SHARDS).map(|_| HashMap::with_capacity(per_shard)).collect();
        for (k, v) in whole {
            let i = self.shard_of(&k);
            self.shards[i].insert(k, v);
        }
    }

    pub(crate) fn clear(&mut self) {
        self.shards = vec![HashMap::new()];
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(HashMap::len).sum()
    }

    /// Entries the shards can hold without growing.
    pub(crate) fn capacity(&self) -> usize {
        self.shards.iter().map(HashMap::capacity).sum()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards.iter().flat_map(HashMap::iter)
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.shards.iter().flat_map(HashMap::values)
    }

    /// Whether the map has split into shards.
    #[cfg(test)]
    pub(crate) fn is_split(&self) -> bool {
        self.shards.len() > 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[test]
    fn splits_at_the_threshold_and_keeps_every_entry() {
        let mut m = ShardedHashMap::new();
        for k in 0..SPLIT_AT as i64 {
            m.shard_for_insert(&k).insert(k, k * 2);
        }
        assert!(!m.is_split());
        for k in SPLIT_AT as i64..3 * SPLIT_AT as i64 {
            m.shard_for_insert(&k).insert(k, k * 2);
        }
        assert!(m.is_split());
        assert_eq!(m.len(), 3 * SPLIT_AT);
        for k in 0..3 * SPLIT_AT as i64 {
            assert_eq!(m.get(&k), Some(&(k * 2)), "key {k}");
        }
        assert_eq!(m.get(&-1), None);
        // Every shard got a share: no shard holds more than four times the mean.
        let mean = m.len() / SHARDS;
        assert!(m.shards.iter().all(|s| s.len() < 4 * mean), "shards are badly unbalanced");
        assert_eq!(m.iter().count(), m.len());
        m.clear();
        assert_eq!((m.len(), m.is_split()), (0, false));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// The same answers as an ordinary map, across the split.
        #[test]
        fn behaves_as_a_map(ops in proptest::collection::vec((0u8..3, 0i64..50_000), 1..3000), prefill in 0usize..2) {
            let mut m = ShardedHashMap::new();
            let mut model = BTreeMap::new();
            // Half the cases start past the split.
            for k in 0..(prefill * SPLIT_AT) as i64 {
                m.shard_for_insert(&(k + 100_000)).insert(k + 100_000, k);
                model.insert(k + 100_000, k);
            }
            for (op, k) in ops {
                match op {
                    0 => {
                        m.shard_for_insert(&k).insert(k, k);
                        model.insert(k, k);
                    }
                    1 => prop_assert_eq!(m.remove(&k), model.remove(&k)),
                    _ => {
                        if let Some(v) = m.get_mut(&k) {
                            *v += 1;
                        }
                        if let Some(v) = model.get_mut(&k) {
                            *v += 1;
                        }
                    }
                }
                prop_assert_eq!(m.get(&k), model.get(&k));
            }
            prop_assert_eq!(m.len(), model.len());
            let mut all: Vec<_> = m.iter().map(|(k, v)| (*k, *v)).collect();
            all.sort();
            prop_assert_eq!(all, model.into_iter().collect::<Vec<_>>());
        }
    }
}
