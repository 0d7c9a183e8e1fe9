//! The hashinator: which partition owns a partition key.
//!
//! JouleDB places rows exactly as VoltDB does, so that VoltDB's clients can
//! route single-partition calls themselves:
//!
//! 1. The key's bytes are hashed with MurmurHash3 x64-128, seed 0. Integers
//!    of every width are hashed as their 8 little-endian bytes (as a BIGINT),
//!    VARCHAR as its UTF-8 bytes, VARBINARY as its bytes.
//! 2. The token is the high 32 bits of the first 64-bit half of the hash,
//!    as a signed 32-bit integer.
//! 3. The ring is a sorted list of (token, partition) pairs; a token belongs
//!    to the partition of the largest ring token less than or equal to it,
//!    wrapping around to the last ring entry for tokens below the first.
//!
//! A [`Hashinator`] is an immutable, versioned value: moving a range
//! ([`Hashinator::with_range_moved`], the transaction layer's `@MoveRange`)
//! builds the next version and swaps it in whole, so a reader always sees
//! one consistent ring. NULL has no hash; it is placed on the
//! partition that owns the lowest token (`i32::MIN`), so that every key,
//! even a NULL parameter, has exactly one home.
//!
//! MurmurHash3 is written out here (about 60 lines) rather than taken from a
//! crate, because placement must never change: its test vectors are checked
//! against an independent implementation (Python's `mmh3`).

use crate::{bail, Result, Value};

/// A partition's number.
pub type PartitionId = u32;

/// Tokens in `start..=end`.
fn span(start: i32, end: i32) -> u64 {
    (i64::from(end) - i64::from(start) + 1) as u64
}

/// Tokens `start..=end` while [`Hashinator::balanced`] works: who owns
/// them, whom the even ring gives them, and whether their owner gives
/// them up.
#[derive(Clone, Copy, Debug)]
struct Stretch {
    start: i32,
    end: i32,
    owner: PartitionId,
    home: PartitionId,
    released: bool,
}

impl Stretch {
    fn len(&self) -> u64 {
        span(self.start, self.end)
    }

    /// The first `n` tokens and the rest (`0 < n < len`).
    fn split(self, n: u64) -> (Stretch, Stretch) {
        let cut = (i64::from(self.start) + n as i64) as i32;
        (Stretch { end: cut - 1, ..self }, Stretch { start: cut, ..self })
    }
}

/// A versioned ring of tokens. It travels (between hosts, in the cluster
/// metadata) as its version, ring and partition count, checked again when
/// it arrives.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "RingForm", into = "RingForm")]
pub struct Hashinator {
    version: u64,
    /// (token, partition), sorted by token, tokens distinct.
    ring: Vec<(i32, PartitionId)>,
    /// One more than the highest partition on the ring.
    partitions: u32,
}

/// A [`Hashinator`] as it is serialized.
#[derive(serde::Serialize, serde::Deserialize)]
struct RingForm {
    version: u64,
    ring: Vec<(i32, PartitionId)>,
    partitions: u32,
}

impl TryFrom<RingForm> for Hashinator {
    type Error = crate::Error;
    fn try_from(f: RingForm) -> Result<Hashinator> {
        Hashinator::over(f.version, f.ring, f.partitions)
    }
}

impl From<Hashinator> for RingForm {
    fn from(h: Hashinator) -> RingForm {
        RingForm { version: h.version, ring: h.ring, partitions: h.partitions }
    }
}

impl Hashinator {
    /// A ring that splits the token space evenly among `partitions`
    /// partitions, partition `i` owning the `i`-th slice.
    pub fn even(partitions: u32, version: u64) -> Result<Hashinator> {
        if partitions == 0 {
            bail!(InvalidArgument, "a hashinator needs at least one partition");
        }
        let span = (1u64 << 32) / partitions as u64;
        let ring = (0..partitions).map(|p| ((i32::MIN as i64 + (p as u64 * span) as i64) as i32, p)).collect();
        Ok(Hashinator { version, ring, partitions })
    }

    /// A ring from explicit (token, partition) pairs, in any order.
    pub fn from_ring(version: u64, mut ring: Vec<(i32, PartitionId)>) -> Result<Hashinator> {
        if ring.is_empty() {
            bail!(InvalidArgument, "a hashinator ring needs at least one token");
        }
        ring.sort_unstable();
        if ring.windows(2).any(|w| w[0].0 == w[1].0) {
            bail!(InvalidArgument, "a hashinator ring lists a token twice");
        }
        let partitions = ring.iter().map(|(_, p)| p + 1).max().unwrap_or(1);
        Ok(Hashinator { version, ring, partitions })
    }

    /// A ring over exactly `partitions` partitions (some may own no token:
    /// the count, not the ring, says how range-partitioned tables spread).
    pub fn over(version: u64, ring: Vec<(i32, PartitionId)>, partitions: u32) -> Result<Hashinator> {
        let mut h = Hashinator::from_ring(version, ring)?;
        if h.partitions > partitions {
            bail!(
                InvalidArgument,
                "a hashinator ring over {partitions} partitions names partition {}",
                h.partitions - 1
            );
        }
        h.partitions = partitions;
        Ok(h)
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// This ring with tokens `start..=end` given to partition `to`, as the
    /// next version. The ring is kept canonical (an entry at `i32::MIN`, no
    /// two neighbours on one partition), so equal placements are equal rings.
    pub fn with_range_moved(&self, start: i32, end: i32, to: PartitionId) -> Result<Hashinator> {
        if start > end {
            bail!(InvalidArgument, "a token range must start at or below its end ({start} > {end})");
        }
        if to >= self.partitions {
            bail!(InvalidArgument, "partition {to} does not exist (there are {})", self.partitions);
        }
        let mut points: std::collections::BTreeMap<i32, PartitionId> = self.ring.iter().copied().collect();
        points.insert(i32::MIN, self.partition_for_token(i32::MIN));
        if end < i32::MAX {
            points.insert(end + 1, self.partition_for_token(end + 1));
        }
        points.retain(|t, _| *t < start || *t > end);
        points.insert(start, to);
        let mut ring: Vec<(i32, PartitionId)> = Vec::with_capacity(points.len());
        for (t, p) in points {
            if ring.last().map(|l| l.1) != Some(p) {
                ring.push((t, p));
            }
        }
        Ok(Hashinator { version: self.version + 1, ring, partitions: self.partitions })
    }

    /// The token ranges `target` places on another partition than this
    /// ring does, as maximal `(start, end, target's partition)` runs in
    /// token order.
    pub fn moves_to(&self, target: &Hashinator) -> Vec<(i32, i32, PartitionId)> {
        let mut cuts: Vec<i32> = self.ring.iter().chain(target.ring.iter()).map(|(t, _)| *t).collect();
        cuts.push(i32::MIN);
        cuts.sort_unstable();
        cuts.dedup();
        let mut moves: Vec<(i32, i32, PartitionId)> = Vec::new();
        for (i, start) in cuts.iter().enumerate() {
            let end = cuts.get(i + 1).map_or(i32::MAX, |next| next - 1);
            let (from, to) = (self.partition_for_token(*start), target.partition_for_token(*start));
            if from == to {
                continue;
            }
            match moves.last_mut() {
                Some(last) if last.2 == to && last.1.checked_add(1) == Some(*start) => last.1 = end,
                _ => moves.push((*start, end, to)),
            }
        }
        moves
    }

    /// The next ring that gives each of partitions `0..keep` as many
    /// tokens as the even ring over `keep` does, and the partitions from
    /// `keep` on none, moving as few tokens as possible: only a partition
    /// above its share gives tokens up — first those the even ring places
    /// elsewhere, then its highest — and they go, in ring order, to the
    /// partition the even ring places them on if it is below its share,
    /// else to the one furthest below (the lowest on a tie). So the even
    /// ring stays as it is, one range moved away comes back exactly, hosts
    /// joining take only their share (not a reshuffle of every partition's
    /// tokens), and a removal moves only the leaving partitions' tokens.
    /// The partition count is kept.
    pub fn balanced(&self, keep: u32) -> Result<Hashinator> {
        if keep == 0 || keep > self.partitions {
            bail!(InvalidArgument, "cannot balance over {keep} of {} partitions", self.partitions);
        }
        let even = Hashinator::even(keep, 0)?;
        let n = self.partitions as usize;
        let mut share = vec![0u64; n];
        for (s, e, p) in even.runs() {
            share[p as usize] += span(s, e);
        }
        // Stretches cut wherever either ring changes hands.
        let mut cuts: Vec<i32> = self.runs().iter().chain(even.runs().iter()).map(|r| r.0).collect();
        cuts.sort_unstable();
        cuts.dedup();
        let stretches: Vec<Stretch> = cuts
            .iter()
            .enumerate()
            .map(|(i, start)| Stretch {
                start: *start,
                end: cuts.get(i + 1).map_or(i32::MAX, |next| next - 1),
                owner: self.partition_for_token(*start),
                home: even.partition_for_token(*start),
                released: false,
            })
            .collect();
        let mut excess = vec![0u64; n];
        for st in &stretches {
            excess[st.owner as usize] += st.len();
        }
        let mut want: Vec<u64> = (0..n).map(|p| share[p].saturating_sub(excess[p])).collect();
        for (x, s) in excess.iter_mut().zip(&share) {
            *x = x.saturating_sub(*s);
        }
        // Give up first what the even ring places elsewhere, lowest first...
        let mut out = Vec::with_capacity(stretches.len() + n);
        for st in stretches {
            let x = &mut excess[st.owner as usize];
            if st.home == st.owner || *x == 0 {
                out.push(st);
            } else if st.len() <= *x {
                *x -= st.len();
                out.push(Stretch { released: true, ..st });
            } else {
                let (head, tail) = st.split(*x);
                *x = 0;
                out.extend([Stretch { released: true, ..head }, tail]);
            }
        }
        // ...then the highest tokens.
        let mut stretches = Vec::with_capacity(out.len() + n);
        for st in out.into_iter().rev() {
            let x = &mut excess[st.owner as usize];
            if st.released || *x == 0 {
                stretches.push(st);
            } else if st.len() <= *x {
                *x -= st.len();
                stretches.push(Stretch { released: true, ..st });
            } else {
                let (head, tail) = st.split(st.len() - *x);
                *x = 0;
                stretches.extend([Stretch { released: true, ..tail }, head]);
            }
        }
        stretches.reverse();
        let mut ring: Vec<(i32, PartitionId)> = Vec::new();
        let mut push = |start: i32, p: PartitionId| {
            if ring.last().is_none_or(|(_, last)| *last != p) {
                ring.push((start, p));
            }
        };
        for mut st in stretches {
            if !st.released {
                push(st.start, st.owner);
                continue;
            }
            loop {
                let to = if want[st.home as usize] > 0 {
                    st.home as usize
                } else {
                    (0..n).max_by_key(|q| (want[*q], std::cmp::Reverse(*q))).unwrap_or(0)
                };
                // (What is given up equals what is wanted, so a stretch
                // never finds every share full; if it did, it would stay
                // with the partition chosen.)
                let take = if want[to] == 0 { st.len() } else { want[to].min(st.len()) };
                want[to] = want[to].saturating_sub(take);
                if take == st.len() {
                    push(st.start, to as PartitionId);
                    break;
                }
                let (head, tail) = st.split(take);
                push(head.start, to as PartitionId);
                st = tail;
            }
        }
        Hashinator::over(self.version + 1, ring, self.partitions)
    }

    /// The ring as maximal `(start, end, partition)` runs covering every
    /// token, in token order.
    fn runs(&self) -> Vec<(i32, i32, PartitionId)> {
        let mut runs: Vec<(i32, i32, PartitionId)> = Vec::new();
        let mut starts: Vec<i32> = self.ring.iter().map(|(t, _)| *t).collect();
        if starts.first() != Some(&i32::MIN) {
            starts.insert(0, i32::MIN);
        }
        for (i, start) in starts.iter().enumerate() {
            let end = starts.get(i + 1).map_or(i32::MAX, |next| next - 1);
            let p = self.partition_for_token(*start);
            match runs.last_mut() {
                Some(last) if last.2 == p => last.1 = end,
                _ => runs.push((*start, end, p)),
            }
        }
        runs
    }

    /// The partitions owning some token of `start..=end`, ascending.
    pub fn owners_of(&self, start: i32, end: i32) -> Vec<PartitionId> {
        let mut owners = vec![self.partition_for_token(start)];
        owners.extend(self.ring.iter().filter(|(t, _)| *t > start && *t <= end).map(|(_, p)| *p));
        owners.sort_unstable();
        owners.dedup();
        owners
    }

    /// How many partitions the ring places keys on (one more than the
    /// highest): range-partitioned tables spread their ranges over them.
    pub fn partition_count(&self) -> u32 {
        self.partitions
    }

    /// The ring, sorted by token.
    pub fn ring(&self) -> &[(i32, PartitionId)] {
        &self.ring
    }

    /// The partition owning `token`.
    pub fn partition_for_token(&self, token: i32) -> PartitionId {
        // Entries with ring token <= token; the last of them owns it.
        let n = self.ring.partition_point(|(t, _)| *t <= token);
        let i = if n == 0 { self.ring.len() - 1 } else { n - 1 };
        self.ring[i].1
    }

    /// The partition owning a key value.
    pub fn partition_for(&self, key: &Value) -> Result<PartitionId> {
        Ok(match token(key)? {
            Some(t) => self.partition_for_token(t),
            None => self.partition_for_token(i32::MIN),
        })
    }
}

/// The token of a partition key (`None` for NULL).
pub fn token(key: &Value) -> Result<Option<i32>> {
    let h1 = match key {
        Value::Null => return Ok(None),
        Value::Integer(i) => murmur3_x64_128(&i.to_le_bytes(), 0).0,
        Value::String(s) => murmur3_x64_128(s.as_bytes(), 0).0,
        Value::Binary(b) => murmur3_x64_128(b, 0).0,
        v => bail!(
            DatatypeMismatch,
            "a {} value cannot be a partition key (use an integer, VARCHAR or VARBINARY)",
            v.type_name()
        ),
    };
    Ok(Some((h1 >> 32) as u32 as i32))
}

/// MurmurHash3 x64-128 (Austin Appleby's public-domain algorithm): the two
/// 64-bit halves.
pub fn murmur3_x64_128(data: &[u8], seed: u32) -> (u64, u64) {
    const C1: u64 = 0x87c3_7b91_1142_53d5;
    const C2: u64 = 0x4cf5_ad43_2745_937f;
    let fmix = |mut k: u64| {
        k ^= k >> 33;
        k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
        k ^= k >> 33;
        k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        k ^ (k >> 33)
    };
    let (mut h1, mut h2) = (seed as u64, seed as u64);
    let mut blocks = data.chunks_exact(16);
    for block in &mut blocks {
        let k1 = u64::from_le_bytes(block[..8].try_into().unwrap_or_default());
        let k2 = u64::from_le_bytes(block[8..].try_into().unwrap_or_default());
        h1 ^= k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2);
        h1 = h1.rotate_left(27).wrapping_add(h2).wrapping_mul(5).wrapping_add(0x52dc_e729);
        h2 ^= k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1);
        h2 = h2.rotate_left(31).wrapping_add(h1).wrapping_mul(5).wrapping_add(0x3849_5ab5);
    }
    let tail = blocks.remainder();
    let (mut k1, mut k2) = (0u64, 0u64);
    for (i, b) in tail.iter().enumerate() {
        if i < 8 {
            k1 |= (*b as u64) << (8 * i);
        } else {
            k2 |= (*b as u64) << (8 * (i - 8));
        }
    }
    if tail.len() > 8 {
        h2 ^= k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1);
    }
    if !tail.is_empty() {
        h1 ^= k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2);
    }
    let len = data.len() as u64;
    h1 ^= len;
    h2 ^= len;
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    h1 = fmix(h1);
    h2 = fmix(h2);
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    (h1, h2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The owner of every token, checked at the ring's edges and around
    /// each of its tokens: enough to compare two rings exactly.
    fn probes(a: &Hashinator, b: &Hashinator) -> Vec<i32> {
        let mut t: Vec<i32> = vec![i32::MIN, i32::MAX, 0];
        for (x, _) in a.ring.iter().chain(b.ring.iter()) {
            t.extend([x.saturating_sub(1), *x, x.saturating_add(1)]);
        }
        t
    }

    #[test]
    fn rings_travel_whole_and_are_checked_when_they_arrive() {
        let h = Hashinator::even(4, 3).unwrap().with_range_moved(-10, 10, 2).unwrap();
        let text = serde_json::to_string(&h).unwrap();
        assert_eq!(serde_json::from_str::<Hashinator>(&text).unwrap(), h);
        // Unsorted, duplicated, or naming a partition past the count.
        let bad = [
            r#"{"version":1,"ring":[[0,0],[0,1]],"partitions":2}"#,
            r#"{"version":1,"ring":[],"partitions":2}"#,
            r#"{"version":1,"ring":[[0,5]],"partitions":2}"#,
        ];
        for text in bad {
            assert!(serde_json::from_str::<Hashinator>(text).is_err(), "{text}");
        }
    }

    #[test]
    fn moving_a_range_changes_only_that_range() {
        let even = Hashinator::even(4, 1).unwrap();
        let moved = even.with_range_moved(-100, 100, 3).unwrap();
        assert_eq!(moved.version(), 2);
        assert_eq!(moved.partition_count(), 4);
        for t in [-101, 101, i32::MIN, i32::MAX, 5000] {
            assert_eq!(moved.partition_for_token(t), even.partition_for_token(t), "token {t}");
        }
        for t in [-100, 0, 100] {
            assert_eq!(moved.partition_for_token(t), 3, "token {t}");
        }
        assert_eq!(even.moves_to(&moved), vec![(-100, 100, 3)]);
        assert_eq!(even.owners_of(-100, 100), vec![1, 2]);
        // Moving it back gives the even ring again (canonical form).
        let back = moved.with_range_moved(-100, -1, 1).unwrap().with_range_moved(0, 100, 2).unwrap();
        assert_eq!(back.ring(), even.ring());
        assert!(even.with_range_moved(5, 4, 0).is_err());
        assert!(even.with_range_moved(0, 4, 4).is_err());
        // A partition left with no token still counts.
        let all = even.with_range_moved(i32::MIN, i32::MAX, 0).unwrap();
        assert_eq!(all.ring(), &[(i32::MIN, 0)]);
        assert_eq!(all.partition_count(), 4);
    }

    proptest! {
        #[test]
        fn moves_compose_and_diff_exactly(
            partitions in 1u32..6,
            steps in proptest::collection::vec((any::<i32>(), any::<i32>(), 0u32..6), 0..8),
        ) {
            let start = Hashinator::even(partitions, 1).unwrap();
            let mut ring = start.clone();
            for (a, b, p) in steps {
                let (lo, hi) = (a.min(b), a.max(b));
                let next = ring.with_range_moved(lo, hi, p % partitions).unwrap();
                for t in probes(&ring, &next).into_iter().chain([lo, hi]) {
                    let want = if t >= lo && t <= hi { p % partitions } else { ring.partition_for_token(t) };
                    prop_assert_eq!(next.partition_for_token(t), want);
                }
                ring = next;
            }
            // Applying the moves to the start ring reaches the final ring.
            let mut replayed = start.clone();
            for (lo, hi, p) in start.moves_to(&ring) {
                replayed = replayed.with_range_moved(lo, hi, p).unwrap();
            }
            for t in probes(&replayed, &ring) {
                prop_assert_eq!(replayed.partition_for_token(t), ring.partition_for_token(t));
            }
            prop_assert_eq!(replayed.ring(), ring.ring());
            prop_assert!(ring.moves_to(&replayed).is_empty());
        }
    }

    /// Tokens each partition owns.
    fn owned(ring: &Hashinator) -> Vec<u64> {
        let mut owned = vec![0u64; ring.partition_count() as usize];
        for (s, e, p) in ring.runs() {
            owned[p as usize] += span(s, e);
        }
        owned
    }

    /// Tokens moved from `a` to `b`.
    fn moved(a: &Hashinator, b: &Hashinator) -> u64 {
        a.moves_to(b).iter().map(|(s, e, _)| span(*s, *e)).sum()
    }

    #[test]
    fn balancing_moves_only_what_must_move() {
        let quarter = 1i32 << 30;
        // Two partitions grow to four: the new ones take a quarter each,
        // half the ring moves (the even ring over four would move three
        // quarters: partition 0's upper half to 1 as well).
        let two = Hashinator::over(3, Hashinator::even(2, 1).unwrap().ring().to_vec(), 4).unwrap();
        let grown = two.balanced(4).unwrap();
        assert_eq!(grown.version(), 4);
        assert_eq!(owned(&grown), vec![1 << 30; 4]);
        assert_eq!(two.moves_to(&grown), vec![(-quarter, -1, 2), (0, quarter - 1, 3)]);
        assert_eq!(moved(&two, &Hashinator::even(4, 1).unwrap()), 3 << 30);
        // Removing the last two of four: only their quarters move.
        let even = Hashinator::even(4, 7).unwrap();
        let drained = even.balanced(2).unwrap();
        assert_eq!(owned(&drained), vec![1 << 31, 1 << 31, 0, 0]);
        assert_eq!(drained.partition_count(), 4);
        assert_eq!(moved(&even, &drained), 1 << 31);
        assert!(even.moves_to(&drained).iter().all(|(s, e, _)| even.owners_of(*s, *e).iter().all(|p| *p >= 2)));
        // The even ring is balanced; a range moved away comes back exactly.
        assert!(even.moves_to(&even.balanced(4).unwrap()).is_empty());
        let moved_away = even.with_range_moved(-100, 100, 3).unwrap();
        assert_eq!(moved_away.balanced(4).unwrap().ring(), even.ring());
        assert!(even.balanced(0).is_err());
        assert!(even.balanced(5).is_err());
    }

    proptest! {
        #[test]
        fn balancing_evens_out_moving_the_fewest_tokens(
            partitions in 1u32..7,
            steps in proptest::collection::vec((any::<i32>(), any::<i32>(), 0u32..7), 0..6),
            keep in 1u32..7,
        ) {
            let mut ring = Hashinator::even(partitions, 1).unwrap();
            for (a, b, p) in steps {
                ring = ring.with_range_moved(a.min(b), a.max(b), p % partitions).unwrap();
            }
            let keep = keep.min(partitions);
            let balanced = ring.balanced(keep).unwrap();
            let (before, after) = (owned(&ring), owned(&balanced));
            // Every partition gets the even ring's share...
            let mut share = owned(&Hashinator::even(keep, 1).unwrap());
            share.resize(partitions as usize, 0);
            prop_assert_eq!(&after, &share);
            // ...and no more tokens move than the partitions above their
            // share hold beyond it (any ring with these shares moves as many).
            let least: u64 = before.iter().zip(&share).map(|(b, s)| b.saturating_sub(*s)).sum();
            prop_assert_eq!(moved(&ring, &balanced), least);
            // Balancing again moves nothing.
            prop_assert!(balanced.moves_to(&balanced.balanced(keep).unwrap()).is_empty());
        }
    }

    /// Vectors from Python's `mmh3.hash64(data, 0, signed=False)`, an
    /// independent implementation: (input, h1, h2).
    #[test]
    fn murmur3_matches_an_independent_implementation() {
        let ints: [(i64, u64, u64); 7] = [
            (0, 2945182322382062539, 17462001654787800658),
            (1, 19144387141682250, 4434582959624657926),
            (-1, 11593587578262711667, 7575356704511641263),
            (42, 13163110875106803192, 2646172625393561472),
            (i64::MAX, 7815693464130447828, 9078010830062108062),
            (-i64::MAX, 8169395405585754863, 154995738212058967),
            (1234567890123, 15506224910913890035, 17379845352513669601),
        ];
        for (i, h1, h2) in ints {
            assert_eq!(murmur3_x64_128(&i.to_le_bytes(), 0), (h1, h2), "integer {i}");
        }
        let strings: [(&str, u64, u64); 7] = [
            ("", 0, 0),
            ("a", 9607679276477937801, 16624257681780017498),
            ("abc", 13012657714217449575, 4297124817637354834),
            ("hello world", 5998619086395760910, 12364428806279881649),
            ("ünïcödé", 894021159702796914, 18151888875458398312),
            ("xxxxxxxxxxxxxxxxx", 16327912387190054547, 11263429666212951403),
            ("0123456789abcdef", 5467490433528156583, 9782763267945859290),
        ];
        for (s, h1, h2) in strings {
            assert_eq!(murmur3_x64_128(s.as_bytes(), 0), (h1, h2), "string {s:?}");
        }
    }

    #[test]
    fn token_is_the_high_half_of_h1() {
        let t = token(&Value::Integer(42)).unwrap().unwrap();
        assert_eq!(t, (13163110875106803192u64 >> 32) as u32 as i32);
        assert_eq!(token(&Value::Null).unwrap(), None);
        assert!(token(&Value::Float(1.0)).is_err());
        // Strings and binaries with the same bytes hash alike.
        assert_eq!(token(&Value::String("ab".into())).unwrap(), token(&Value::Binary(b"ab".to_vec())).unwrap());
    }

    #[test]
    fn rings_are_validated() {
        assert!(Hashinator::even(0, 1).is_err());
        assert!(Hashinator::from_ring(1, vec![]).is_err());
        assert!(Hashinator::from_ring(1, vec![(5, 0), (5, 1)]).is_err());
        let h = Hashinator::from_ring(7, vec![(100, 1), (-100, 0)]).unwrap();
        assert_eq!(h.version(), 7);
        assert_eq!(h.partition_for_token(-100), 0);
        assert_eq!(h.partition_for_token(99), 0);
        assert_eq!(h.partition_for_token(100), 1);
        // Below the first token wraps to the last entry.
        assert_eq!(h.partition_for_token(-101), 1);
    }

    proptest! {
        #[test]
        fn owner_is_the_largest_ring_token_at_or_below(
            tokens in prop::collection::btree_set(any::<i32>(), 1..20),
            probe in any::<i32>(),
        ) {
            let ring: Vec<(i32, PartitionId)> = tokens.iter().enumerate().map(|(i, t)| (*t, i as u32)).collect();
            let h = Hashinator::from_ring(1, ring.clone()).unwrap();
            let expected = ring.iter().rev().find(|(t, _)| *t <= probe).or(ring.last()).map(|(_, p)| *p).unwrap();
            prop_assert_eq!(h.partition_for_token(probe), expected);
        }

        #[test]
        fn even_rings_cover_every_partition(partitions in 1u32..64, key in any::<i64>()) {
            let h = Hashinator::even(partitions, 1).unwrap();
            prop_assert_eq!(h.ring().len(), partitions as usize);
            let p = h.partition_for(&Value::Integer(key)).unwrap();
            prop_assert!(p < partitions);
            // Placement depends only on the key and the ring.
            prop_assert_eq!(p, Hashinator::even(partitions, 2).unwrap().partition_for(&Value::Integer(key)).unwrap());
        }
    }

    #[test]
    fn even_ring_spreads_keys() {
        let h = Hashinator::even(8, 1).unwrap();
        let mut counts = [0u32; 8];
        for k in 0..80_000i64 {
            counts[h.partition_for(&Value::Integer(k)).unwrap() as usize] += 1;
        }
        // Each partition gets its share within 10%.
        for c in counts {
            assert!((9_000..=11_000).contains(&c), "{counts:?}");
        }
    }
}
