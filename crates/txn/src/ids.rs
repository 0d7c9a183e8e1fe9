//! Transaction ids and unique ids, as initiators hand them out.
//!
//! Every invocation gets two numbers before it runs:
//!
//! * a **transaction id** ([`TxnId`]): `sequence << 14 | initiator`, where
//!   the initiator is the partition (single-partition work) or
//!   [`MP_INITIATOR`] (the multi-partition coordinator). Sequences only grow,
//!   so ids order each initiator's transactions;
//! * a **unique id** ([`UniqueId`]): `milliseconds << 23 | counter << 14 |
//!   initiator`, milliseconds counted from [`EPOCH_MILLIS`]
//!   (2020-01-01T00:00:00Z). It carries the transaction's timestamp: `NOW()`
//!   is read from it, never from a clock during execution.
//!
//! Only the generator reads the wall clock, and it never goes backwards: if
//! the clock does, or more than 512 ids are needed in one millisecond, the
//! timestamp is advanced past the last one issued. Replaying a command log
//! hands the recorded ids back in, so replay computes the same `NOW()` and
//! the same random seeds (derived from the transaction id).

use std::time::{SystemTime, UNIX_EPOCH};

/// Bits of the initiator field in both ids.
pub const INITIATOR_BITS: u32 = 14;
/// The initiator number of the multi-partition coordinator.
pub const MP_INITIATOR: u32 = (1 << INITIATOR_BITS) - 1;
/// Unique ids count milliseconds from 2020-01-01T00:00:00Z.
pub const EPOCH_MILLIS: u64 = 1_577_836_800_000;
const COUNTER_BITS: u32 = 9;

/// A transaction id: `sequence << 14 | initiator`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct TxnId(pub u64);

impl TxnId {
    pub fn initiator(self) -> u32 {
        (self.0 & u64::from(MP_INITIATOR)) as u32
    }

    pub fn sequence(self) -> u64 {
        self.0 >> INITIATOR_BITS
    }

    pub fn is_multi_partition(self) -> bool {
        self.initiator() == MP_INITIATOR
    }
}

/// A unique id: `millis << 23 | counter << 14 | initiator`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct UniqueId(pub u64);

impl UniqueId {
    /// Milliseconds since the Unix epoch.
    pub fn unix_millis(self) -> u64 {
        (self.0 >> (COUNTER_BITS + INITIATOR_BITS)) + EPOCH_MILLIS
    }

    /// The transaction's timestamp in microseconds since the Unix epoch
    /// (what `NOW()` returns), millisecond precision.
    pub fn timestamp_micros(self) -> i64 {
        self.unix_millis() as i64 * 1000
    }

    pub fn initiator(self) -> u32 {
        (self.0 & u64::from(MP_INITIATOR)) as u32
    }
}

/// The ids of one transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TxnIds {
    pub txn_id: TxnId,
    pub unique_id: UniqueId,
}

impl TxnIds {
    /// No transaction (a placeholder where ids are filled in later).
    pub const ZERO: TxnIds = TxnIds { txn_id: TxnId(0), unique_id: UniqueId(0) };

    /// The seed of the transaction's random functions.
    pub fn random_seed(self) -> u64 {
        self.txn_id.0
    }
}

/// Hands out an initiator's ids.
#[derive(Clone, Debug)]
pub struct IdGenerator {
    initiator: u32,
    sequence: u64,
    last_millis: u64,
    counter: u64,
}

impl IdGenerator {
    pub fn new(initiator: u32) -> IdGenerator {
        assert!(initiator <= MP_INITIATOR, "initiator {initiator} does not fit {INITIATOR_BITS} bits");
        IdGenerator { initiator, sequence: 0, last_millis: 0, counter: 0 }
    }

    /// The next ids, stamped with the wall clock.
    pub fn issue(&mut self) -> TxnIds {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        self.next_at(now)
    }

    /// The next ids for a wall-clock reading of `unix_millis`.
    pub fn next_at(&mut self, unix_millis: u64) -> TxnIds {
        let millis = unix_millis.saturating_sub(EPOCH_MILLIS);
        if millis > self.last_millis {
            self.last_millis = millis;
            self.counter = 0;
        } else {
            self.counter += 1;
            if self.counter >= 1 << COUNTER_BITS {
                self.last_millis += 1;
                self.counter = 0;
            }
        }
        self.sequence += 1;
        let i = u64::from(self.initiator);
        TxnIds {
            txn_id: TxnId(self.sequence << INITIATOR_BITS | i),
            unique_id: UniqueId(
                self.last_millis << (COUNTER_BITS + INITIATOR_BITS) | self.counter << INITIATOR_BITS | i,
            ),
        }
    }

    /// The last ids issued or observed (zeros before any).
    pub fn last(&self) -> TxnIds {
        let i = u64::from(self.initiator);
        TxnIds {
            txn_id: TxnId(self.sequence << INITIATOR_BITS | i),
            unique_id: UniqueId(
                self.last_millis << (COUNTER_BITS + INITIATOR_BITS) | self.counter << INITIATOR_BITS | i,
            ),
        }
    }

    /// Continue after `txn`, an id another generator of this initiator
    /// issued (a cluster's previous coordinator): the next id is above it.
    pub fn continue_after(&mut self, txn: TxnId) {
        self.sequence = self.sequence.max(txn.sequence());
    }

    /// Accept ids issued earlier (command-log replay): later ids continue
    /// after them.
    pub fn observe(&mut self, ids: TxnIds) {
        self.sequence = self.sequence.max(ids.txn_id.sequence());
        let millis = ids.unique_id.unix_millis() - EPOCH_MILLIS;
        let counter = (ids.unique_id.0 >> INITIATOR_BITS) & ((1 << COUNTER_BITS) - 1);
        if (millis, counter) > (self.last_millis, self.counter) {
            self.last_millis = millis;
            self.counter = counter;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_initiator_and_time() {
        let mut g = IdGenerator::new(3);
        let a = g.next_at(EPOCH_MILLIS + 1_000);
        assert_eq!(a.txn_id.initiator(), 3);
        assert_eq!(a.unique_id.initiator(), 3);
        assert_eq!(a.unique_id.unix_millis(), EPOCH_MILLIS + 1_000);
        assert_eq!(a.unique_id.timestamp_micros(), (EPOCH_MILLIS as i64 + 1_000) * 1000);
        assert!(!a.txn_id.is_multi_partition());
        assert!(IdGenerator::new(MP_INITIATOR).issue().txn_id.is_multi_partition());
    }

    #[test]
    fn ids_grow_even_when_the_clock_does_not() {
        let mut g = IdGenerator::new(0);
        let mut last = g.next_at(EPOCH_MILLIS + 50);
        // A clock stuck (and then going backwards) for 2000 ids: still unique
        // and increasing; the timestamp advances once 512 are used up.
        for i in 0..2000 {
            let t = if i < 1000 { EPOCH_MILLIS + 50 } else { EPOCH_MILLIS + 10 };
            let next = g.next_at(t);
            assert!(next.txn_id > last.txn_id && next.unique_id > last.unique_id);
            last = next;
        }
        assert!(last.unique_id.unix_millis() > EPOCH_MILLIS + 50);
    }

    #[test]
    fn replayed_ids_are_continued() {
        let mut a = IdGenerator::new(1);
        let ids: Vec<_> = (0..10).map(|_| a.next_at(EPOCH_MILLIS + 5_000)).collect();
        let mut b = IdGenerator::new(1);
        ids.iter().for_each(|i| b.observe(*i));
        let next = b.next_at(EPOCH_MILLIS + 10);
        assert!(next.txn_id > ids[9].txn_id && next.unique_id > ids[9].unique_id);
    }

    #[test]
    fn a_new_coordinator_continues_above_the_ids_it_is_told_of() {
        let mut old = IdGenerator::new(MP_INITIATOR);
        let issued: Vec<_> = (0..20).map(|_| old.next_at(EPOCH_MILLIS + 5_000).txn_id).collect();
        let mut new = IdGenerator::new(MP_INITIATOR);
        new.next_at(EPOCH_MILLIS + 6_000);
        new.continue_after(issued[19]);
        let next = new.next_at(EPOCH_MILLIS + 6_000).txn_id;
        assert!(next > issued[19] && next.is_multi_partition());
        // An id below what it issued itself changes nothing.
        new.continue_after(issued[0]);
        assert!(new.next_at(EPOCH_MILLIS + 6_000).txn_id > next);
    }
}
