//! One index of one table partition: the key → row-id map and its lookups.
//!
//! A tree index is a `BTreeMap<Vec<Value>, Posting>` (ordered: equality on a
//! key prefix, ranges, ORDER BY); a hash index is a `hashbrown::HashMap`
//! (equality on the full key only; its iteration order is never exposed, so
//! results never depend on the hasher). Keys are the values of the index
//! columns, compared by `Value`'s total order (NULL first).
//!
//! A [`Posting`] holds the rows of one key in ascending [`RowId`] order. It
//! starts as a single id, grows into a small sorted vector and then into a
//! `BTreeSet`, so a key with millions of duplicates still inserts and deletes
//! in O(log n), while the common unique case costs no allocation at all.
//! Unique indexes use the same postings: SQL lets any number of rows share a
//! key that contains NULL.
//!
//! Maintenance (`insert`/`remove`) and conflict checks take the row itself and
//! look up through borrowed [`KeyRef`]s, so only a key that is new to the map
//! is ever copied.
//!
//! A tree index on one integer column (the usual primary key) is a
//! `BTreeMap<i64, Posting>` instead: keys live inside the B-tree nodes, so a
//! lookup compares machine integers rather than chasing a pointer to a
//! `Vec<Value>` at every step. NULL is stored as `i64::MIN`, VoltDB's NULL
//! marker, which is never a legal integer value and sorts first, exactly
//! where NULL sorts in `Value`'s order. Lookup keys of other kinds (a FLOAT
//! `5.0`, a DECIMAL, a string) are translated to the integer bounds that
//! select the same rows (see [`int_probe`]).

use super::key::{cmp_keys, HashKey, KeyRef, Probe, Tail, TreeKey};
use super::sharded::ShardedHashMap;
use super::RowId;
use hashbrown::hash_map::EntryRef;
use joule_common::{bail, err, Result, Value};
use joule_sql::catalog::{IndexDef, IndexKind, TableDef};
use std::collections::{btree_map, btree_set, BTreeMap, BTreeSet};
use std::mem::size_of;
use std::ops::Bound;

/// Largest posting kept as a sorted vector; beyond it, a `BTreeSet`.
pub(crate) const FEW_MAX: usize = 16;

/// The rows sharing one key, in ascending id order.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Posting {
    One(RowId),
    /// Sorted, 2..=FEW_MAX ids.
    Few(Vec<RowId>),
    /// More than FEW_MAX / 2 ids (shrinks back to `Few` below that).
    Many(BTreeSet<RowId>),
}

impl Posting {
    fn insert(&mut self, id: RowId) {
        match self {
            Posting::One(a) if *a == id => {}
            Posting::One(a) => *self = Posting::Few(if *a < id { vec![*a, id] } else { vec![id, *a] }),
            Posting::Few(v) => {
                if let Err(pos) = v.binary_search(&id) {
                    if v.len() < FEW_MAX {
                        v.insert(pos, id);
                    } else {
                        let mut set: BTreeSet<RowId> = v.iter().copied().collect();
                        set.insert(id);
                        *self = Posting::Many(set);
                    }
                }
            }
            Posting::Many(s) => {
                s.insert(id);
            }
        }
    }

    /// Remove `id` (if present). Returns whether the posting is now empty.
    fn remove(&mut self, id: RowId) -> bool {
        match self {
            Posting::One(a) => return *a == id,
            Posting::Few(v) => {
                if let Ok(pos) = v.binary_search(&id) {
                    v.remove(pos);
                }
            }
            Posting::Many(s) => {
                s.remove(&id);
                if s.len() <= FEW_MAX / 2 {
                    *self = Posting::Few(s.iter().copied().collect());
                }
            }
        }
        if let Posting::Few(v) = self {
            match v[..] {
                [] => return true,
                [only] => *self = Posting::One(only),
                _ => {}
            }
        }
        false
    }

    fn first(&self) -> Option<RowId> {
        match self {
            Posting::One(a) => Some(*a),
            Posting::Few(v) => v.first().copied(),
            Posting::Many(s) => s.first().copied(),
        }
    }

    fn has_id(&self, id: RowId) -> bool {
        match self {
            Posting::One(a) => *a == id,
            Posting::Few(v) => v.binary_search(&id).is_ok(),
            Posting::Many(s) => s.contains(&id),
        }
    }

    /// Whether the posting holds a row other than `me`.
    fn has_other(&self, me: Option<RowId>) -> bool {
        match self {
            Posting::One(a) => Some(*a) != me,
            Posting::Few(v) => v.iter().any(|&a| Some(a) != me),
            Posting::Many(s) => s.iter().any(|&a| Some(a) != me),
        }
    }

    fn iter(&self) -> PostingIter<'_> {
        match self {
            Posting::One(a) => PostingIter::One(Some(*a)),
            Posting::Few(v) => PostingIter::Few(v.iter()),
            Posting::Many(s) => PostingIter::Many(s.iter()),
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            Posting::One(_) => 0,
            Posting::Few(v) => v.capacity() * size_of::<RowId>(),
            // B-tree nodes: the ids plus roughly as much again in slack and links.
            Posting::Many(s) => s.len() * 2 * size_of::<RowId>(),
        }
    }
}

/// Iterates one posting, in either direction.
#[derive(Clone, Debug)]
enum PostingIter<'a> {
    One(Option<RowId>),
    Few(std::slice::Iter<'a, RowId>),
    Many(btree_set::Iter<'a, RowId>),
}

impl PostingIter<'_> {
    fn step(&mut self, reverse: bool) -> Option<RowId> {
        match self {
            PostingIter::One(a) => a.take(),
            PostingIter::Few(it) if reverse => it.next_back().copied(),
            PostingIter::Few(it) => it.next().copied(),
            PostingIter::Many(it) if reverse => it.next_back().copied(),
            PostingIter::Many(it) => it.next().copied(),
        }
    }
}

/// Row ids from an index lookup: in key order (then ascending id), or the
/// exact reverse when `reverse` was asked for.
#[derive(Clone, Debug)]
pub struct IndexIter<'a> {
    current: PostingIter<'a>,
    rest: Option<Rest<'a>>,
    reverse: bool,
}

/// The keys an index iterator has yet to visit.
#[derive(Clone, Debug)]
enum Rest<'a> {
    Values(btree_map::Range<'a, Vec<Value>, Posting>),
    Ints(btree_map::Range<'a, i64, Posting>),
}

impl<'a> IndexIter<'a> {
    fn empty() -> Self {
        IndexIter { current: PostingIter::One(None), rest: None, reverse: false }
    }

    fn posting(p: Option<&'a Posting>) -> Self {
        let current = p.map_or(PostingIter::One(None), Posting::iter);
        IndexIter { current, rest: None, reverse: false }
    }

    fn range(range: btree_map::Range<'a, Vec<Value>, Posting>, reverse: bool) -> Self {
        IndexIter { current: PostingIter::One(None), rest: Some(Rest::Values(range)), reverse }
    }

    fn int_range(range: btree_map::Range<'a, i64, Posting>, reverse: bool) -> Self {
        IndexIter { current: PostingIter::One(None), rest: Some(Rest::Ints(range)), reverse }
    }
}

impl Iterator for IndexIter<'_> {
    type Item = RowId;

    fn next(&mut self) -> Option<RowId> {
        loop {
            if let Some(id) = self.current.step(self.reverse) {
                return Some(id);
            }
            let p = match self.rest.as_mut()? {
                Rest::Values(r) => if self.reverse { r.next_back() } else { r.next() }?.1,
                Rest::Ints(r) => if self.reverse { r.next_back() } else { r.next() }?.1,
            };
            self.current = p.iter();
        }
    }
}

#[derive(Clone, Debug)]
enum Map {
    Tree(BTreeMap<Vec<Value>, Posting>),
    /// A tree index on one integer column; NULL is `i64::MIN`.
    Int(BTreeMap<i64, Posting>),
    Hash(ShardedHashMap<HashKey, Posting>),
    /// A hash index on one integer column; NULL is `i64::MIN`.
    IntHash(ShardedHashMap<i64, Posting>),
}

/// The stored integer key equal to a one-column key (`None`: no integer
/// equals it, so no stored row can have it).
fn stored_int(key: KeyRef<'_>) -> Option<i64> {
    let v = match key {
        KeyRef::Slice([v]) => v,
        KeyRef::Cols { row, cols: [c] } => row.get(*c)?,
        _ => return None,
    };
    int_key(v)
}

/// The stored integer key equal to a lookup value, if any can be
/// (`Value`'s equality: 5.0 finds 5, 5.5 finds nothing).
fn int_key(v: &Value) -> Option<i64> {
    match v {
        Value::Null => Some(i64::MIN),
        v => match int_probe(v) {
            IntProbe::Exact(k) => Some(k),
            _ => None,
        },
    }
}

/// Where a lookup value falls among integer keys.
#[derive(Clone, Copy, Debug, PartialEq)]
enum IntProbe {
    /// Equal to this key.
    Exact(i64),
    /// Strictly between `n` and `n + 1` (a fraction).
    After(i64),
    /// Below every integer (but above NULL): booleans.
    BelowAll,
    /// Above every integer: strings, binaries, timestamps, huge numbers.
    AboveAll,
}

/// Place a non-NULL lookup value among integer keys, following `Value`'s
/// total order (numbers by value across kinds; booleans before numbers;
/// strings, binaries and timestamps after).
fn int_probe(v: &Value) -> IntProbe {
    match v {
        Value::Integer(i) => IntProbe::Exact(*i),
        Value::Null | Value::Boolean(_) => IntProbe::BelowAll,
        Value::Float(f) => {
            if f.is_nan() {
                // NaN sorts above every integer in the total order.
                return IntProbe::AboveAll;
            }
            let fl = f.floor();
            if fl < -9.2e18 {
                IntProbe::BelowAll
            } else if fl >= 9.2e18 {
                IntProbe::AboveAll
            } else if fl == *f {
                IntProbe::Exact(fl as i64)
            } else {
                IntProbe::After(fl as i64)
            }
        }
        Value::Decimal(d) => {
            let units = d.units();
            let whole = units.div_euclid(joule_common::decimal::SCALE_FACTOR);
            match i64::try_from(whole) {
                Ok(w) if units.rem_euclid(joule_common::decimal::SCALE_FACTOR) == 0 => IntProbe::Exact(w),
                Ok(w) => IntProbe::After(w),
                Err(_) if whole < 0 => IntProbe::BelowAll,
                Err(_) => IntProbe::AboveAll,
            }
        }
        Value::String(_) | Value::Binary(_) | Value::Timestamp(_) | Value::Array(_) => IntProbe::AboveAll,
    }
}

impl Map {
    fn get(&self, key: KeyRef<'_>) -> Option<&Posting> {
        match (self, key) {
            (Map::Int(m), k) => m.get(&stored_int(k)?),
            (Map::IntHash(m), k) => m.get(&stored_int(k)?),
            (Map::Tree(m), KeyRef::Slice(s)) => m.get(s),
            (Map::Tree(m), k) => m.get(&k as &dyn TreeKey),
            (Map::Hash(m), k) => m.get(&k),
        }
    }

    fn get_mut(&mut self, key: KeyRef<'_>) -> Option<&mut Posting> {
        match (self, key) {
            (Map::Int(m), k) => m.get_mut(&stored_int(k)?),
            (Map::IntHash(m), k) => m.get_mut(&stored_int(k)?),
            (Map::Tree(m), KeyRef::Slice(s)) => m.get_mut(s),
            (Map::Tree(m), k) => m.get_mut(&k as &dyn TreeKey),
            (Map::Hash(m), k) => m.get_mut(&k),
        }
    }

    fn remove(&mut self, key: KeyRef<'_>) {
        match (self, key) {
            (Map::Int(m), k) => match stored_int(k) {
                Some(i) => m.remove(&i),
                None => None,
            },
            (Map::IntHash(m), k) => match stored_int(k) {
                Some(i) => m.remove(&i),
                None => None,
            },
            (Map::Tree(m), KeyRef::Slice(s)) => m.remove(s),
            (Map::Tree(m), k) => m.remove(&k as &dyn TreeKey),
            (Map::Hash(m), k) => m.remove(&k),
        };
    }

    /// A B-tree's removal of `id` under `key` in one descent, for the
    /// usual case of a key that only `id` has (a unique index): the entry
    /// comes out whole and goes back only if other ids remain. `None` for
    /// hash maps (their two probes cost little), which the caller removes
    /// from the usual way.
    fn remove_sole(&mut self, key: KeyRef<'_>, id: RowId) -> Option<bool> {
        fn put_back<K: Ord>(m: &mut BTreeMap<K, Posting>, entry: Option<(K, Posting)>, id: RowId) -> bool {
            let Some((k, mut p)) = entry else { return false };
            let found = p.has_id(id);
            if !p.remove(id) {
                m.insert(k, p);
            }
            found
        }
        match (self, key) {
            (Map::Int(m), k) => {
                let entry = stored_int(k).and_then(|i| m.remove_entry(&i));
                Some(put_back(m, entry, id))
            }
            (Map::Tree(m), KeyRef::Slice(s)) => {
                let entry = m.remove_entry(s);
                Some(put_back(m, entry, id))
            }
            (Map::Tree(m), k) => {
                let entry = m.remove_entry(&k as &dyn TreeKey);
                Some(put_back(m, entry, id))
            }
            (Map::Hash(_) | Map::IntHash(_), _) => None,
        }
    }
}

fn probe<'a>(prefix: &'a [Value], next: Option<&'a Value>, tail: Tail) -> Probe<'a> {
    Probe { prefix, next, tail }
}

/// `row`'s key for an index on `columns` (a plain slice when they are adjacent).
fn key_in<'a>(contiguous: Option<(usize, usize)>, columns: &'a [usize], row: &'a [Value]) -> KeyRef<'a> {
    match contiguous.and_then(|(s, e)| row.get(s..e)) {
        Some(slice) => KeyRef::Slice(slice),
        None => KeyRef::Cols { row, cols: columns },
    }
}

/// One index's data. Its definition lives in the table's `TableDef`.
#[derive(Clone, Debug)]
pub(crate) struct Index {
    columns: Vec<usize>,
    /// PRIMARY KEY, UNIQUE or ASSUMEUNIQUE.
    pub(crate) unique: bool,
    /// When the key columns are adjacent and in order: their row range, so
    /// keys are plain row slices.
    contiguous: Option<(usize, usize)>,
    map: Map,
}

impl Index {
    /// An empty index for `def` on a table with `table`'s columns.
    pub(crate) fn new(def: &IndexDef, table: &TableDef) -> Index {
        let columns = def.columns.clone();
        let contiguous = match columns.first() {
            Some(&start) if columns.iter().enumerate().all(|(i, &c)| c == start + i) => {
                Some((start, start + columns.len()))
            }
            _ => None,
        };
        let one_integer_column = match columns.as_slice() {
            [c] => table.columns.get(*c).is_some_and(|col| col.data_type.is_integer()),
            _ => false,
        };
        let map = match def.kind {
            IndexKind::Tree if one_integer_column => Map::Int(BTreeMap::new()),
            IndexKind::Tree => Map::Tree(BTreeMap::new()),
            IndexKind::Hash if one_integer_column => Map::IntHash(ShardedHashMap::new()),
            IndexKind::Hash => Map::Hash(ShardedHashMap::new()),
        };
        Index { columns, unique: def.unique || def.assume_unique || def.primary_key, contiguous, map }
    }

    pub(crate) fn columns(&self) -> &[usize] {
        &self.columns
    }

    /// This index's key of `row`.
    pub(crate) fn key<'a>(&'a self, row: &'a [Value]) -> KeyRef<'a> {
        key_in(self.contiguous, &self.columns, row)
    }

    /// Whether two rows have the same key in this index.
    pub(crate) fn same_key(&self, a: &[Value], b: &[Value]) -> bool {
        self.columns.iter().all(|&c| a.get(c) == b.get(c))
    }

    /// If `row` would break this unique index (a non-NULL key some row other
    /// than `me` already has), its key.
    pub(crate) fn conflict<'a>(&'a self, row: &'a [Value], me: Option<RowId>) -> Option<KeyRef<'a>> {
        if !self.unique {
            return None;
        }
        let key = self.key(row);
        if key.has_null() {
            return None;
        }
        self.map.get(key).filter(|p| p.has_other(me)).map(|_| key)
    }

    pub(crate) fn insert(&mut self, row: &[Value], id: RowId) {
        self.insert_checked(row, id, false);
    }

    /// Insert `id` under `row`'s key unless this is a unique index and
    /// another row has that (non-NULL) key: then change nothing and return
    /// false. One traversal does both the check and the insert.
    pub(crate) fn try_insert(&mut self, row: &[Value], id: RowId) -> bool {
        let check = self.unique && !self.key(row).has_null();
        self.insert_checked(row, id, check)
    }

    fn insert_checked(&mut self, row: &[Value], id: RowId, check: bool) -> bool {
        let key = key_in(self.contiguous, &self.columns, row);
        match &mut self.map {
            Map::Int(m) => match stored_int(key) {
                Some(k) => match m.entry(k) {
                    btree_map::Entry::Occupied(e) if check && e.get().has_other(Some(id)) => return false,
                    btree_map::Entry::Occupied(mut e) => e.get_mut().insert(id),
                    btree_map::Entry::Vacant(e) => {
                        e.insert(Posting::One(id));
                    }
                },
                // Rows are coerced before they reach an index: an integer
                // column holds integers or NULL.
                None => debug_assert!(false, "non-integer key in an integer index"),
            },
            Map::IntHash(m) => match stored_int(key) {
                Some(k) => match m.shard_for_insert(&k).entry(k) {
                    hashbrown::hash_map::Entry::Occupied(e) if check && e.get().has_other(Some(id)) => return false,
                    hashbrown::hash_map::Entry::Occupied(mut e) => e.get_mut().insert(id),
                    hashbrown::hash_map::Entry::Vacant(e) => {
                        e.insert(Posting::One(id));
                    }
                },
                None => debug_assert!(false, "non-integer key in an integer index"),
            },
            // A unique index's key is nearly always new: one descent
            // through `entry` with the key copied beforehand (the copy an
            // insert needs anyway) beats a lookup followed by an insert.
            Map::Tree(m) if self.unique => match m.entry(key.to_vec()) {
                btree_map::Entry::Occupied(e) if check && e.get().has_other(Some(id)) => return false,
                btree_map::Entry::Occupied(mut e) => e.get_mut().insert(id),
                btree_map::Entry::Vacant(e) => {
                    e.insert(Posting::One(id));
                }
            },
            Map::Tree(m) => {
                let posting = match key {
                    KeyRef::Slice(s) => m.get_mut(s),
                    k => m.get_mut(&k as &dyn TreeKey),
                };
                match posting {
                    Some(p) if check && p.has_other(Some(id)) => return false,
                    Some(p) => p.insert(id),
                    None => {
                        m.insert(key.to_vec(), Posting::One(id));
                    }
                }
            }
            Map::Hash(m) => match m.shard_for_insert(&key).entry_ref(&key) {
                EntryRef::Occupied(e) if check && e.get().has_other(Some(id)) => return false,
                EntryRef::Occupied(mut e) => e.get_mut().insert(id),
                EntryRef::Vacant(e) => {
                    e.insert(Posting::One(id));
                }
            },
        }
        true
    }

    /// Remove `id` under `row`'s key. Returns whether it was there.
    pub(crate) fn remove(&mut self, row: &[Value], id: RowId) -> bool {
        let key = key_in(self.contiguous, &self.columns, row);
        if self.unique {
            if let Some(found) = self.map.remove_sole(key, id) {
                return found;
            }
        }
        let Some(p) = self.map.get_mut(key) else { return false };
        let found = p.has_id(id);
        if p.remove(id) {
            self.map.remove(key);
        }
        found
    }

    pub(crate) fn clear(&mut self) {
        match &mut self.map {
            Map::Tree(m) => m.clear(),
            Map::Int(m) => m.clear(),
            Map::Hash(m) => m.clear(),
            Map::IntHash(m) => m.clear(),
        }
    }

    /// Rows whose key equals `key` (tree: or starts with it).
    pub(crate) fn eq(&self, key: &[Value]) -> Result<IndexIter<'_>> {
        if key.len() > self.columns.len() {
            bail!(Internal, "index lookup with {} key values on an index of {} columns", key.len(), self.columns.len());
        }
        match &self.map {
            Map::Int(m) => match key {
                [v] => Ok(IndexIter::posting(match v {
                    Value::Null => m.get(&i64::MIN),
                    v => match int_probe(v) {
                        IntProbe::Exact(k) => m.get(&k),
                        _ => None,
                    },
                })),
                _ => Ok(IndexIter::int_range(m.range(..), false)),
            },
            Map::Tree(m) if key.len() == self.columns.len() => Ok(IndexIter::posting(m.get(key))),
            Map::Tree(_) => self.range(key, Bound::Unbounded, Bound::Unbounded, false),
            Map::Hash(m) if key.len() == self.columns.len() => Ok(IndexIter::posting(m.get(&KeyRef::Slice(key)))),
            Map::IntHash(m) if key.len() == 1 => Ok(IndexIter::posting(int_key(&key[0]).and_then(|k| m.get(&k)))),
            Map::Hash(_) | Map::IntHash(_) => {
                bail!(Internal, "hash index lookup needs all {} key values, got {}", self.columns.len(), key.len())
            }
        }
    }

    /// The lowest row id whose key equals `key` (full key only).
    pub(crate) fn get_unique(&self, key: &[Value]) -> Option<RowId> {
        if key.len() != self.columns.len() {
            return None;
        }
        if let (Map::Int(m), [v]) = (&self.map, key) {
            let k = match v {
                Value::Null => i64::MIN,
                v => match int_probe(v) {
                    IntProbe::Exact(k) => k,
                    _ => return None,
                },
            };
            return m.get(&k).and_then(Posting::first);
        }
        if let (Map::IntHash(m), [v]) = (&self.map, key) {
            return m.get(&int_key(v)?).and_then(Posting::first);
        }
        self.map.get(KeyRef::Slice(key)).and_then(Posting::first)
    }

    /// Tree only: keys starting with `prefix` whose next column lies within
    /// the bounds (see `Table::index_range`).
    pub(crate) fn range(
        &self,
        prefix: &[Value],
        lower: Bound<&Value>,
        upper: Bound<&Value>,
        reverse: bool,
    ) -> Result<IndexIter<'_>> {
        if let Map::Int(m) = &self.map {
            return int_range(m, prefix, lower, upper, reverse);
        }
        let Map::Tree(m) = &self.map else {
            bail!(Internal, "range scan on a hash index");
        };
        let bounded = !matches!((lower, upper), (Bound::Unbounded, Bound::Unbounded));
        if bounded && prefix.len() >= self.columns.len() {
            bail!(
                Internal,
                "range scan with a {}-value prefix on an index of {} columns",
                prefix.len(),
                self.columns.len()
            );
        }
        if prefix.len() > self.columns.len() {
            bail!(
                Internal,
                "index lookup with {} key values on an index of {} columns",
                prefix.len(),
                self.columns.len()
            );
        }
        // SQL: a comparison with NULL is never true.
        let is_null = |b: Bound<&Value>| matches!(b, Bound::Included(v) | Bound::Excluded(v) if v.is_null());
        if is_null(lower) || is_null(upper) {
            return Ok(IndexIter::empty());
        }
        let at = |next, tail| probe(prefix, next, tail);
        let null = Value::Null;
        let lo = match (lower, upper) {
            (Bound::Unbounded, Bound::Unbounded) => Bound::Included(at(None, Tail::Exact)),
            // NULLs sort first: a bounded range starts after them.
            (Bound::Unbounded, _) => Bound::Excluded(at(Some(&null), Tail::High)),
            (Bound::Included(v), _) => Bound::Included(at(Some(v), Tail::Exact)),
            (Bound::Excluded(v), _) => Bound::Excluded(at(Some(v), Tail::High)),
        };
        let hi = match upper {
            Bound::Unbounded => Bound::Included(at(None, Tail::High)),
            Bound::Included(v) => Bound::Included(at(Some(v), Tail::High)),
            Bound::Excluded(v) => Bound::Excluded(at(Some(v), Tail::Exact)),
        };
        if let (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) = (&lo, &hi) {
            // BTreeMap::range panics on inverted bounds: answer those here.
            let both_included = matches!((&lo, &hi), (Bound::Included(_), Bound::Included(_)));
            match cmp_keys(a, b) {
                std::cmp::Ordering::Greater => return Ok(IndexIter::empty()),
                std::cmp::Ordering::Equal if !both_included => return Ok(IndexIter::empty()),
                _ => {}
            }
        }
        let lo = lo.as_ref().map(|p| p as &dyn TreeKey);
        let hi = hi.as_ref().map(|p| p as &dyn TreeKey);
        Ok(IndexIter::range(m.range::<dyn TreeKey, _>((lo, hi)), reverse))
    }

    /// Tree only: every entry in key order.
    pub(crate) fn all(&self, reverse: bool) -> Result<IndexIter<'_>> {
        match &self.map {
            Map::Tree(m) => Ok(IndexIter::range(m.range::<[Value], _>(..), reverse)),
            Map::Int(m) => Ok(IndexIter::int_range(m.range(..), reverse)),
            Map::Hash(_) | Map::IntHash(_) => Err(err!(Internal, "ordered scan of a hash index")),
        }
    }

    /// Distinct keys.
    pub(crate) fn key_count(&self) -> usize {
        match &self.map {
            Map::Tree(m) => m.len(),
            Map::Int(m) => m.len(),
            Map::Hash(m) => m.len(),
            Map::IntHash(m) => m.len(),
        }
    }

    /// A rough estimate of the heap memory this index uses.
    pub(crate) fn memory_bytes(&self) -> usize {
        let key_bytes =
            |k: &[Value]| std::mem::size_of_val(k) + k.iter().map(super::slab::value_heap_bytes).sum::<usize>();
        match &self.map {
            // B-tree nodes run about two-thirds full.
            Map::Tree(m) => {
                m.iter().map(|(k, p)| key_bytes(k) + p.heap_bytes() + size_of::<(Vec<Value>, Posting)>() * 3 / 2).sum()
            }
            Map::Int(m) => m.values().map(|p| p.heap_bytes() + size_of::<(i64, Posting)>() * 3 / 2).sum(),
            Map::IntHash(m) => {
                m.capacity() * (size_of::<(i64, Posting)>() + 1) + m.values().map(Posting::heap_bytes).sum::<usize>()
            }
            Map::Hash(m) => {
                m.capacity() * (size_of::<(HashKey, Posting)>() + 1)
                    + m.iter().map(|(k, p)| key_bytes(&k.0) + p.heap_bytes()).sum::<usize>()
            }
        }
    }
}

/// A range lookup on an integer-keyed index (see `Index::range` for the
/// contract): the bounds, whatever their kind, become integer bounds that
/// select exactly the keys `Value`'s order would.
fn int_range<'a>(
    m: &'a BTreeMap<i64, Posting>,
    prefix: &[Value],
    lower: Bound<&Value>,
    upper: Bound<&Value>,
    reverse: bool,
) -> Result<IndexIter<'a>> {
    let bounded = !matches!((lower, upper), (Bound::Unbounded, Bound::Unbounded));
    match prefix {
        [] => {}
        [v] if !bounded => {
            // A full-key equality walked (possibly in reverse).
            let k = match v {
                Value::Null => i64::MIN,
                v => match int_probe(v) {
                    IntProbe::Exact(k) => k,
                    _ => return Ok(IndexIter::empty()),
                },
            };
            return Ok(IndexIter::int_range(m.range(k..=k), reverse));
        }
        _ => bail!(Internal, "range scan with a {}-value prefix on a one-column index", prefix.len()),
    }
    if !bounded {
        return Ok(IndexIter::int_range(m.range(..), reverse));
    }
    let is_null = |b: Bound<&Value>| matches!(b, Bound::Included(v) | Bound::Excluded(v) if v.is_null());
    if is_null(lower) || is_null(upper) {
        return Ok(IndexIter::empty());
    }
    // Smallest key allowed (NULL, stored as i64::MIN, is never in a bounded range).
    let lo: Option<i64> = match lower {
        Bound::Unbounded => Some(i64::MIN + 1),
        Bound::Included(v) | Bound::Excluded(v) => match (int_probe(v), matches!(lower, Bound::Included(_))) {
            (IntProbe::Exact(k), true) => Some(k.max(i64::MIN + 1)),
            (IntProbe::Exact(k), false) => k.checked_add(1),
            (IntProbe::After(k), _) => k.checked_add(1),
            (IntProbe::BelowAll, _) => Some(i64::MIN + 1),
            (IntProbe::AboveAll, _) => None,
        },
    };
    // Largest key allowed.
    let hi: Option<i64> = match upper {
        Bound::Unbounded => Some(i64::MAX),
        Bound::Included(v) | Bound::Excluded(v) => match (int_probe(v), matches!(upper, Bound::Included(_))) {
            (IntProbe::Exact(k), true) => Some(k),
            (IntProbe::Exact(k), false) => k.checked_sub(1),
            (IntProbe::After(k), _) => Some(k),
            (IntProbe::BelowAll, _) => None,
            (IntProbe::AboveAll, _) => Some(i64::MAX),
        },
    };
    match (lo, hi) {
        (Some(a), Some(b)) if a <= b && b > i64::MIN => Ok(IndexIter::int_range(m.range(a..=b), reverse)),
        _ => Ok(IndexIter::empty()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(p: &Posting) -> Vec<RowId> {
        let mut it = p.iter();
        std::iter::from_fn(|| it.step(false)).collect()
    }

    #[test]
    fn posting_grows_and_shrinks_through_every_shape() {
        let mut p = Posting::One(50);
        let ids: Vec<RowId> = (0..100).rev().collect();
        for &id in &ids {
            p.insert(id);
            p.insert(id); // idempotent
        }
        assert!(matches!(p, Posting::Many(_)));
        assert_eq!(collect(&p), (0..100).collect::<Vec<_>>());
        assert!(p.has_other(Some(3)));
        for id in 0..99 {
            assert!(!p.remove(id));
            assert!(!p.remove(id)); // absent: no change
            assert_eq!(collect(&p), (id + 1..100).collect::<Vec<_>>());
            let expect_few = (2..=FEW_MAX / 2).contains(&(99 - id as usize));
            if expect_few {
                assert!(matches!(p, Posting::Few(_)));
            }
        }
        assert_eq!(p, Posting::One(99));
        assert!(!p.has_other(Some(99)));
        assert!(p.has_other(None));
        assert!(!p.remove(5));
        assert!(p.remove(99));
    }

    mod int_keys {
        use super::super::*;
        use joule_common::{DataType, Decimal};
        use joule_sql::catalog::ColumnDef;
        use proptest::prelude::*;

        /// A one-column table of type `t`.
        fn table(t: DataType) -> TableDef {
            TableDef {
                id: 1,
                database: "D".into(),
                name: "T".into(),
                columns: vec![ColumnDef {
                    name: "K".into(),
                    data_type: t,
                    max_len: None,
                    len_in_bytes: false,
                    nullable: true,
                    default: None,
                }],
                indexes: vec![],
                partition_column: None,
                partition_ranges: None,
                range_owners: None,
                view: None,
            }
        }

        /// The same one-column tree index, keyed by integers (`Map::Int`) or
        /// by values (`Map::Tree`, as for a FLOAT column).
        fn pair() -> (Index, Index) {
            let def = IndexDef {
                name: "I".into(),
                columns: vec![0],
                unique: false,
                assume_unique: false,
                primary_key: false,
                kind: IndexKind::Tree,
            };
            let int = Index::new(&def, &table(DataType::BigInt));
            let gen = Index::new(&def, &table(DataType::Float));
            assert!(matches!(int.map, Map::Int(_)) && matches!(gen.map, Map::Tree(_)));
            (int, gen)
        }

        fn stored() -> impl Strategy<Value = Value> {
            prop_oneof![Just(Value::Null), (-20i64..20).prop_map(Value::Integer), Just(Value::Integer(i64::MAX))]
        }

        fn probe() -> impl Strategy<Value = Value> {
            prop_oneof![
                Just(Value::Null),
                Just(Value::Boolean(true)),
                (-25i64..25).prop_map(Value::Integer),
                Just(Value::Integer(i64::MAX)),
                Just(Value::Integer(-i64::MAX)),
                (-250i64..250).prop_map(|x| Value::Float(x as f64 / 10.0)),
                Just(Value::Float(f64::NAN)),
                Just(Value::Float(1e30)),
                Just(Value::Float(-1e30)),
                (-250i64..250).prop_map(|x| Value::Decimal(Decimal::from_units(x as i128 * 100_000_000_000).unwrap())),
                Just(Value::String("5".into())),
                Just(Value::Timestamp(0)),
            ]
        }

        fn bound() -> impl Strategy<Value = Bound<Value>> {
            prop_oneof![Just(Bound::Unbounded), probe().prop_map(Bound::Included), probe().prop_map(Bound::Excluded)]
        }

        proptest! {
            #[test]
            fn integer_keys_answer_like_value_keys(
                rows in prop::collection::vec(stored(), 0..40),
                lookups in prop::collection::vec((probe(), bound(), bound(), any::<bool>()), 1..20),
            ) {
                let (mut int, mut gen) = pair();
                for (id, v) in rows.iter().enumerate() {
                    int.insert(std::slice::from_ref(v), id as RowId);
                    gen.insert(std::slice::from_ref(v), id as RowId);
                }
                let ids = |it: IndexIter<'_>| it.collect::<Vec<_>>();
                prop_assert_eq!(ids(int.all(false).unwrap()), ids(gen.all(false).unwrap()));
                prop_assert_eq!(ids(int.all(true).unwrap()), ids(gen.all(true).unwrap()));
                for (v, lo, hi, rev) in lookups {
                    let key = std::slice::from_ref(&v);
                    prop_assert_eq!(ids(int.eq(key).unwrap()), ids(gen.eq(key).unwrap()), "eq {:?}", v);
                    prop_assert_eq!(int.get_unique(key), gen.get_unique(key), "get_unique {:?}", v);
                    prop_assert_eq!(
                        ids(int.range(key, Bound::Unbounded, Bound::Unbounded, rev).unwrap()),
                        ids(gen.range(key, Bound::Unbounded, Bound::Unbounded, rev).unwrap())
                    );
                    let (l, h) = (lo.as_ref(), hi.as_ref());
                    prop_assert_eq!(
                        ids(int.range(&[], l, h, rev).unwrap()),
                        ids(gen.range(&[], l, h, rev).unwrap()),
                        "range {:?} {:?}", lo, hi
                    );
                }
                for (id, v) in rows.iter().enumerate() {
                    prop_assert_eq!(int.remove(std::slice::from_ref(v), id as RowId), gen.remove(std::slice::from_ref(v), id as RowId));
                }
                prop_assert_eq!(int.key_count(), 0);
            }

            #[test]
            fn integer_hash_keys_answer_like_value_hash_keys(
                rows in prop::collection::vec(stored(), 0..40),
                lookups in prop::collection::vec(probe(), 1..20),
                unique in any::<bool>(),
            ) {
                let (mut int, mut gen) = hash_pair(unique);
                for (id, v) in rows.iter().enumerate() {
                    let key = std::slice::from_ref(v);
                    prop_assert_eq!(int.try_insert(key, id as RowId), gen.try_insert(key, id as RowId));
                }
                let ids = |it: IndexIter<'_>| it.collect::<Vec<_>>();
                for v in lookups {
                    let key = std::slice::from_ref(&v);
                    prop_assert_eq!(ids(int.eq(key).unwrap()), ids(gen.eq(key).unwrap()), "eq {:?}", v);
                    prop_assert_eq!(int.get_unique(key), gen.get_unique(key), "get_unique {:?}", v);
                    prop_assert_eq!(int.conflict(key, None).is_some(), gen.conflict(key, None).is_some());
                }
                prop_assert_eq!(int.key_count(), gen.key_count());
                for (id, v) in rows.iter().enumerate() {
                    prop_assert_eq!(int.remove(std::slice::from_ref(v), id as RowId), gen.remove(std::slice::from_ref(v), id as RowId));
                }
                prop_assert_eq!(int.key_count(), 0);
            }
        }

        /// The same one-column hash index keyed by integers (`Map::IntHash`)
        /// or by values (`Map::Hash`, as for a FLOAT column).
        fn hash_pair(unique: bool) -> (Index, Index) {
            let def = IndexDef {
                name: "H".into(),
                columns: vec![0],
                unique,
                assume_unique: false,
                primary_key: false,
                kind: IndexKind::Hash,
            };
            let int = Index::new(&def, &table(DataType::BigInt));
            let gen = Index::new(&def, &table(DataType::Float));
            assert!(matches!(int.map, Map::IntHash(_)) && matches!(gen.map, Map::Hash(_)));
            (int, gen)
        }
    }

    #[test]
    fn posting_iterates_both_ways() {
        let mut p = Posting::One(7);
        p.insert(3);
        p.insert(9);
        let mut it = p.iter();
        assert_eq!(std::iter::from_fn(|| it.step(true)).collect::<Vec<_>>(), vec![9, 7, 3]);
        assert_eq!(p.first(), Some(3));
    }
}
