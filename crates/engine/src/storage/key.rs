//! Index keys: how stored keys are compared, hashed and looked up without
//! allocating.
//!
//! Stored keys are owned `Vec<Value>`s (tree indexes) or [`HashKey`]s (hash
//! indexes). Every lookup on the hot path, though, starts from values that
//! already live somewhere else: a caller's key slice, or the index columns of
//! a row being inserted, updated or deleted. Building a `Vec` just to probe a
//! map would cost an allocation plus a clone of every string in the key, so
//! this module defines borrowed views instead:
//!
//! * [`KeyRef`]: a full key, either a contiguous slice or "these columns of
//!   that row". It hashes exactly like a [`HashKey`] and is `Equivalent` to
//!   one, so hash maps take it directly; trees take it through [`TreeKey`].
//! * [`Probe`]: a range-scan position: a prefix, an optional next value, and
//!   a [`Tail`] that places the probe before or after every longer key that
//!   starts with it. This is what lets a tree range scan start and stop at
//!   exactly the right entry for "prefix = p AND next column > v", forward or
//!   reverse, without skipping over entries.
//!
//! `Vec<Value>: Borrow<dyn TreeKey>` ties it together: `BTreeMap` searches with
//! any of these views, and the order on `dyn TreeKey` (lexicographic, with
//! [`Tail::High`] acting as a +infinity element appended to the key) agrees
//! with `Vec<Value>`'s own order on stored keys, as `Borrow` requires.

use joule_common::Value;
use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

/// Stands in for a column a malformed definition points past (never panic).
static NULL: Value = Value::Null;

/// Where a key sorts relative to longer keys that extend it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Tail {
    /// The key itself: before every longer key it is a prefix of.
    Exact,
    /// After every key it is a prefix of (as if +infinity were appended).
    High,
}

/// A sequence of values that can be compared with stored tree keys.
pub(crate) trait TreeKey {
    fn key_len(&self) -> usize;
    fn key_at(&self, i: usize) -> &Value;
    fn tail(&self) -> Tail {
        Tail::Exact
    }
}

/// Lexicographic order, with `Tail::High` sorting after every extension.
pub(crate) fn cmp_keys(a: &dyn TreeKey, b: &dyn TreeKey) -> Ordering {
    let (la, lb) = (a.key_len(), b.key_len());
    for i in 0..la.min(lb) {
        match a.key_at(i).cmp(b.key_at(i)) {
            Ordering::Equal => {}
            other => return other,
        }
    }
    match la.cmp(&lb) {
        Ordering::Equal => a.tail().cmp(&b.tail()),
        Ordering::Less if a.tail() == Tail::High => Ordering::Greater,
        Ordering::Less => Ordering::Less,
        Ordering::Greater if b.tail() == Tail::High => Ordering::Less,
        Ordering::Greater => Ordering::Greater,
    }
}

impl PartialEq for dyn TreeKey + '_ {
    fn eq(&self, other: &Self) -> bool {
        cmp_keys(self, other) == Ordering::Equal
    }
}

impl Eq for dyn TreeKey + '_ {}

impl PartialOrd for dyn TreeKey + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for dyn TreeKey + '_ {
    fn cmp(&self, other: &Self) -> Ordering {
        cmp_keys(self, other)
    }
}

impl TreeKey for Vec<Value> {
    fn key_len(&self) -> usize {
        self.len()
    }
    fn key_at(&self, i: usize) -> &Value {
        self.get(i).unwrap_or(&NULL)
    }
}

impl<'a> Borrow<dyn TreeKey + 'a> for Vec<Value> {
    fn borrow(&self) -> &(dyn TreeKey + 'a) {
        self
    }
}

/// A borrowed full index key.
#[derive(Clone, Copy, Debug)]
pub(crate) enum KeyRef<'a> {
    /// The key's values, in key order.
    Slice(&'a [Value]),
    /// The values of `row` at positions `cols`.
    Cols { row: &'a [Value], cols: &'a [usize] },
}

impl<'a> KeyRef<'a> {
    pub(crate) fn len(&self) -> usize {
        match self {
            KeyRef::Slice(s) => s.len(),
            KeyRef::Cols { cols, .. } => cols.len(),
        }
    }

    pub(crate) fn at(&self, i: usize) -> &'a Value {
        match *self {
            KeyRef::Slice(s) => s.get(i),
            KeyRef::Cols { row, cols } => cols.get(i).and_then(|&c| row.get(c)),
        }
        .unwrap_or(&NULL)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &'a Value> + '_ {
        (0..self.len()).map(|i| self.at(i))
    }

    /// SQL unique constraints ignore keys containing NULL.
    pub(crate) fn has_null(&self) -> bool {
        self.iter().any(Value::is_null)
    }

    pub(crate) fn to_vec(self) -> Vec<Value> {
        match self {
            KeyRef::Slice(s) => s.to_vec(),
            KeyRef::Cols { .. } => self.iter().cloned().collect(),
        }
    }
}

impl TreeKey for KeyRef<'_> {
    fn key_len(&self) -> usize {
        self.len()
    }
    fn key_at(&self, i: usize) -> &Value {
        self.at(i)
    }
}

/// `(5, 'abc', NULL)`: a key as error messages show it.
impl fmt::Display for KeyRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(")?;
        for (i, v) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match v {
                Value::String(s) => write!(f, "'{}'", s.replace('\'', "''"))?,
                Value::Binary(_) | Value::Timestamp(_) => write!(f, "'{v}'")?,
                v => write!(f, "{v}")?,
            }
        }
        f.write_str(")")
    }
}

/// A range-scan position in a tree index (see the module docs).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Probe<'a> {
    pub(crate) prefix: &'a [Value],
    pub(crate) next: Option<&'a Value>,
    pub(crate) tail: Tail,
}

impl TreeKey for Probe<'_> {
    fn key_len(&self) -> usize {
        self.prefix.len() + usize::from(self.next.is_some())
    }
    fn key_at(&self, i: usize) -> &Value {
        match self.prefix.get(i) {
            Some(v) => v,
            None => self.next.unwrap_or(&NULL),
        }
    }
    fn tail(&self) -> Tail {
        self.tail
    }
}

/// A stored hash-index key. Its `Hash` is defined here (the values in order,
/// no length prefix; all keys of one index have the same length) so that
/// [`KeyRef`] can hash identically.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HashKey(pub(crate) Vec<Value>);

impl Hash for HashKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for v in &self.0 {
            v.hash(state);
        }
    }
}

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for v in self.iter() {
            v.hash(state);
        }
    }
}

impl hashbrown::Equivalent<HashKey> for KeyRef<'_> {
    fn equivalent(&self, key: &HashKey) -> bool {
        self.len() == key.0.len() && self.iter().zip(&key.0).all(|(a, b)| a == b)
    }
}

impl From<&KeyRef<'_>> for HashKey {
    fn from(k: &KeyRef<'_>) -> HashKey {
        HashKey(k.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hashbrown::HashMap;
    use std::collections::BTreeMap;

    fn int(i: i64) -> Value {
        Value::Integer(i)
    }

    fn probe<'a>(prefix: &'a [Value], next: Option<&'a Value>, tail: Tail) -> Probe<'a> {
        Probe { prefix, next, tail }
    }

    #[test]
    fn high_tail_sorts_after_every_extension() {
        let p = [int(1)];
        let low = probe(&p, None, Tail::Exact);
        let high = probe(&p, None, Tail::High);
        let k = vec![int(1), int(i64::MAX)];
        let k2 = vec![int(2)];
        assert_eq!(cmp_keys(&low, &k), Ordering::Less);
        assert_eq!(cmp_keys(&high, &k), Ordering::Greater);
        assert_eq!(cmp_keys(&k, &high), Ordering::Less);
        assert_eq!(cmp_keys(&high, &k2), Ordering::Less);
        assert_eq!(cmp_keys(&high, &high), Ordering::Equal);
        assert_eq!(cmp_keys(&low, &vec![int(1)]), Ordering::Equal);
    }

    #[test]
    fn probes_search_a_btreemap() {
        let mut m: BTreeMap<Vec<Value>, u32> = BTreeMap::new();
        for a in 0..3 {
            for b in 0..3 {
                m.insert(vec![int(a), int(b)], (a * 3 + b) as u32);
            }
        }
        let p = [int(1)];
        let lo = probe(&p, None, Tail::Exact);
        let hi = probe(&p, None, Tail::High);
        let got: Vec<u32> = m
            .range::<dyn TreeKey, _>((
                std::ops::Bound::Included(&lo as &dyn TreeKey),
                std::ops::Bound::Included(&hi as &dyn TreeKey),
            ))
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(got, vec![3, 4, 5]);
        let row = [Value::Null, int(2), int(1)];
        let cols = [2, 1];
        let k = KeyRef::Cols { row: &row, cols: &cols };
        assert_eq!(m.get(&k as &dyn TreeKey), Some(&5));
    }

    #[test]
    fn key_refs_find_hash_keys() {
        let mut m: HashMap<HashKey, u32> = HashMap::new();
        m.insert(HashKey(vec![int(7), Value::String("x".into())]), 1);
        let row = [Value::String("x".into()), Value::Null, Value::Float(7.0)];
        let cols = [2, 0];
        assert_eq!(m.get(&KeyRef::Cols { row: &row, cols: &cols }), Some(&1));
        let s = [int(7), Value::String("x".into())];
        assert_eq!(m.get(&KeyRef::Slice(&s)), Some(&1));
        assert_eq!(m.get(&KeyRef::Slice(&s[..1])), None);
    }

    #[test]
    fn display_quotes_strings() {
        let s = [int(5), Value::String("it's".into()), Value::Null];
        assert_eq!(KeyRef::Slice(&s).to_string(), "(5, 'it''s', NULL)");
        // A definition pointing past the row reads NULL instead of panicking.
        let cols = [0, 9];
        assert_eq!(KeyRef::Cols { row: &s, cols: &cols }.to_string(), "(5, NULL)");
    }
}
