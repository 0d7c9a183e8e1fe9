//! How [`Client`](crate::Client) spreads calls over its connections
//! ([`Balance`]), and the chooser that applies it without locks: a counter
//! for round robin, a splitmix64 stream for the random policies (seeded, so
//! a run can be replayed), each connection's count of calls awaiting
//! answers for least-outstanding, and with it each connection's recent
//! round trip for latency-aware. Closed connections are skipped by every
//! policy.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// A policy for picking the connection of each call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Balance {
    /// Each connection in turn.
    #[default]
    RoundRobin,
    /// Uniformly at random, from `seed`.
    Random { seed: u64 },
    /// At random in proportion to each address's weight (one weight per
    /// address, in the order given to `connect`; 0 sends it nothing unless
    /// every other connection is closed), from `seed`.
    Weighted { weights: Vec<u32>, seed: u64 },
    /// The open connection with the fewest calls awaiting answers (ties
    /// taken in turn).
    LeastOutstanding,
    /// The open connection whose recent round trip (an average over its
    /// answers), times one more than its calls awaiting answers, is the
    /// lowest: a slow host gets fewer calls, a busy one too. A connection
    /// not yet measured counts as the fastest, so each is tried (ties
    /// taken in turn).
    LatencyAware,
}

pub(crate) struct Chooser {
    balance: Balance,
    next: AtomicUsize,
    rng: AtomicU64,
    /// Per connection: the cumulative weight up to and including it.
    cumulative: Vec<u64>,
}

impl Chooser {
    /// A chooser over `per_address` connections to each of `addresses`.
    pub(crate) fn new(balance: Balance, addresses: usize, per_address: usize) -> Result<Chooser, String> {
        let seed = match &balance {
            Balance::Random { seed } | Balance::Weighted { seed, .. } => *seed,
            _ => 0,
        };
        let mut cumulative = Vec::new();
        if let Balance::Weighted { weights, .. } = &balance {
            if weights.len() != addresses {
                return Err(format!("{} weights for {addresses} addresses", weights.len()));
            }
            let mut total = 0u64;
            for w in weights {
                for _ in 0..per_address {
                    total += u64::from(*w);
                    cumulative.push(total);
                }
            }
            if total == 0 {
                return Err("the weights are all zero".into());
            }
        }
        Ok(Chooser { balance, next: AtomicUsize::new(0), rng: AtomicU64::new(seed), cumulative })
    }

    /// The next number of a splitmix64 stream shared by every caller.
    fn random(&self) -> u64 {
        use joule_common::splitmix::{mix, GAMMA};
        mix(self.rng.fetch_add(GAMMA, Ordering::Relaxed).wrapping_add(GAMMA))
    }

    /// The connection (of `n`) for the next call; `None` if none is open.
    /// `outstanding` and `latency_us` give each connection's calls awaiting
    /// answers and recent round trip (0: not measured yet).
    pub(crate) fn pick(
        &self,
        n: usize,
        open: impl Fn(usize) -> bool,
        outstanding: impl Fn(usize) -> usize,
        latency_us: impl Fn(usize) -> u64,
    ) -> Option<usize> {
        if n == 0 {
            return None;
        }
        let start = match &self.balance {
            Balance::RoundRobin | Balance::LeastOutstanding | Balance::LatencyAware => {
                self.next.fetch_add(1, Ordering::Relaxed) % n
            }
            Balance::Random { .. } => (self.random() % n as u64) as usize,
            Balance::Weighted { .. } => {
                let total = *self.cumulative.last().unwrap_or(&1);
                let r = self.random() % total;
                self.cumulative.partition_point(|c| *c <= r).min(n - 1)
            }
        };
        let mut in_turn = (0..n).map(|i| (start + i) % n).filter(|i| open(*i));
        match self.balance {
            Balance::LeastOutstanding => in_turn.min_by_key(|i| outstanding(*i)),
            Balance::LatencyAware => in_turn.min_by_key(|i| latency_us(*i).saturating_mul(outstanding(*i) as u64 + 1)),
            // Past a closed pick, the next open one that has weight.
            Balance::Weighted { .. } => {
                let weight = |i: usize| self.cumulative[i] - if i == 0 { 0 } else { self.cumulative[i - 1] };
                let mut weighted = (0..n).map(|i| (start + i) % n).filter(|i| open(*i) && weight(*i) > 0);
                weighted.next().or_else(|| in_turn.next())
            }
            _ => in_turn.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(chooser: &Chooser, n: usize, calls: usize, open: impl Fn(usize) -> bool + Copy) -> Vec<usize> {
        let mut c = vec![0; n];
        for _ in 0..calls {
            c[chooser.pick(n, open, |_| 0, |_| 0).unwrap()] += 1;
        }
        c
    }

    #[test]
    fn each_policy_spreads_calls_as_it_promises() {
        let rr = Chooser::new(Balance::RoundRobin, 3, 1).unwrap();
        assert_eq!(counts(&rr, 3, 300, |_| true), vec![100, 100, 100]);
        // A closed connection is skipped; its turns go to the next one.
        assert_eq!(counts(&rr, 3, 300, |i| i != 1), vec![100, 0, 200]);

        let random = Chooser::new(Balance::Random { seed: 7 }, 4, 1).unwrap();
        let c = counts(&random, 4, 40_000, |_| true);
        assert!(c.iter().all(|n| (9_000..11_000).contains(n)), "{c:?}");
        // The same seed, the same choices.
        let again = Chooser::new(Balance::Random { seed: 7 }, 4, 1).unwrap();
        assert_eq!(counts(&again, 4, 40_000, |_| true), c);

        // Two addresses weighted 3:1, two connections each.
        let weighted = Chooser::new(Balance::Weighted { weights: vec![3, 1], seed: 1 }, 2, 2).unwrap();
        let c = counts(&weighted, 4, 40_000, |_| true);
        let first = c[0] + c[1];
        assert!((29_000..31_000).contains(&first), "{c:?}");
        // Weight 0 gets nothing while another is open, everything otherwise.
        let zero = Chooser::new(Balance::Weighted { weights: vec![0, 1], seed: 1 }, 2, 1).unwrap();
        assert_eq!(counts(&zero, 2, 100, |_| true), vec![0, 100]);
        assert_eq!(counts(&zero, 2, 100, |i| i == 0), vec![100, 0]);
        let three = Chooser::new(Balance::Weighted { weights: vec![0, 1, 1], seed: 3 }, 3, 1).unwrap();
        assert_eq!(counts(&three, 3, 100, |i| i != 2), vec![0, 100, 0]);
        assert!(Chooser::new(Balance::Weighted { weights: vec![1], seed: 1 }, 2, 1).is_err());
        assert!(Chooser::new(Balance::Weighted { weights: vec![0, 0], seed: 1 }, 2, 1).is_err());

        let least = Chooser::new(Balance::LeastOutstanding, 3, 1).unwrap();
        let waiting = [5, 2, 9];
        for _ in 0..10 {
            assert_eq!(least.pick(3, |_| true, |i| waiting[i], |_| 0), Some(1));
        }
        // Ties are taken in turn.
        let tied: Vec<_> = (0..6).map(|_| least.pick(3, |_| true, |_| 0, |_| 0).unwrap()).collect();
        assert_eq!(tied.iter().filter(|i| **i == 0).count(), 2, "{tied:?}");
        assert_eq!(least.pick(3, |_| false, |_| 0, |_| 0), None);

        // Latency-aware: round trip times one more than the calls waiting.
        let fast = Chooser::new(Balance::LatencyAware, 3, 1).unwrap();
        let latency = [900, 200, 400];
        for _ in 0..10 {
            assert_eq!(fast.pick(3, |_| true, |_| 0, |i| latency[i]), Some(1), "the fastest");
        }
        // The fastest with 3 waiting (200 × 4) loses to the next (400 × 1).
        let waiting = [0, 3, 0];
        assert_eq!(fast.pick(3, |_| true, |i| waiting[i], |i| latency[i]), Some(2));
        // One not measured yet is tried first; a closed one never.
        assert_eq!(fast.pick(3, |_| true, |_| 0, |i| if i == 0 { 0 } else { latency[i] }), Some(0));
        assert_eq!(fast.pick(3, |i| i != 1, |_| 0, |i| latency[i]), Some(2));
        assert_eq!(fast.pick(3, |_| false, |_| 0, |i| latency[i]), None);
    }
}
