//! A Jepsen-style linearizability checker for one register with reads,
//! writes and compare-and-set: Wing and Gong's search for an order of the
//! calls that respects real time (a call that completed before another
//! began comes first) and the register's rules, memoized on (calls done,
//! value) as Knossos and Porcupine do.
//!
//! A call whose outcome is unknown (sent, answer lost) may have taken
//! effect at any moment after it began — or never: it completes "at
//! infinity" and need not be placed. A read whose answer was lost tells
//! nothing and is left out; so is a call known to have done nothing.
//!
//! The search tries confirmed calls before unknown ones, earliest invoked
//! first: a valid history is then usually placed in one pass, and unknown
//! calls are placed only where a confirmed call needs their effect (each
//! unknown call would otherwise double the states to visit). A search past
//! [`MAX_STATES`] gives up with an error rather than run for hours.

use std::collections::HashSet;

/// States the search visits before it gives up.
pub const MAX_STATES: usize = 1_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// A read that returned this value.
    Read(i64),
    Write(i64),
    /// Set `new` if the value is `expected`.
    Cas {
        expected: i64,
        new: i64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done (a CAS: it matched and set).
    Ok,
    /// A CAS that found another value and set nothing.
    Refused,
    /// Sent; the answer was lost.
    Unknown,
}

/// One call as a client saw it; times in any one clock (microseconds).
#[derive(Clone, Copy, Debug)]
pub struct Call {
    pub client: usize,
    pub op: Op,
    pub outcome: Outcome,
    pub invoked: u64,
    /// `None` when the outcome is unknown.
    pub completed: Option<u64>,
}

/// Whether `history` (from `initial`) is linearizable; if not, why.
pub fn check(initial: i64, history: &[Call]) -> Result<(), String> {
    let mut calls: Vec<Call> =
        history.iter().copied().filter(|c| !(matches!(c.op, Op::Read(_)) && c.outcome == Outcome::Unknown)).collect();
    calls.sort_by_key(|c| c.invoked);
    let n = calls.len();
    let required: Vec<bool> = calls.iter().map(|c| c.outcome != Outcome::Unknown).collect();
    let complete: Vec<u64> = calls
        .iter()
        .map(|c| if c.outcome == Outcome::Unknown { u64::MAX } else { c.completed.unwrap_or(u64::MAX) })
        .collect();
    let total_required = required.iter().filter(|r| **r).count();
    let words = n.div_ceil(64).max(1);
    let mut seen: HashSet<(Vec<u64>, i64)> = HashSet::new();
    let mut stack = vec![(vec![0u64; words], initial, 0usize)];
    let mut best = 0;
    while let Some((done, value, required_done)) = stack.pop() {
        if required_done == total_required {
            return Ok(());
        }
        best = best.max(required_done);
        let is_done = |i: usize| done[i / 64] & (1 << (i % 64)) != 0;
        // The next call must begin before every pending call's completion.
        let horizon = (0..n).filter(|i| required[*i] && !is_done(*i)).map(|i| complete[i]).min().unwrap_or(u64::MAX);
        // Pushed so that confirmed calls pop first, earliest invoked first.
        let mut confirmed = Vec::new();
        let mut unknown = Vec::new();
        for i in 0..n {
            if calls[i].invoked >= horizon {
                break;
            }
            if is_done(i) {
                continue;
            }
            let c = &calls[i];
            let next = match (c.op, c.outcome) {
                (Op::Read(v), _) => (v == value).then_some(value),
                (Op::Write(v), _) => Some(v),
                (Op::Cas { expected, new }, Outcome::Ok) => (expected == value).then_some(new),
                (Op::Cas { expected, .. }, Outcome::Refused) => (expected != value).then_some(value),
                (Op::Cas { expected, new }, Outcome::Unknown) => Some(if expected == value { new } else { value }),
            };
            let Some(next) = next else { continue };
            if required[i] {
                confirmed.push((i, next))
            } else {
                unknown.push((i, next))
            }
        }
        for (i, next) in unknown.into_iter().rev().chain(confirmed.into_iter().rev()) {
            let mut after = done.clone();
            after[i / 64] |= 1 << (i % 64);
            if seen.insert((after.clone(), next)) {
                stack.push((after, next, required_done + usize::from(required[i])));
            }
        }
        if seen.len() > MAX_STATES {
            let unknowns = required.iter().filter(|r| !**r).count();
            return Err(format!(
                "the search gave up after {} states ({n} calls, {unknowns} of unknown outcome; the longest \
                 consistent prefix places {best} of {total_required} confirmed calls)",
                seen.len()
            ));
        }
    }
    Err(format!(
        "not linearizable: no order of the {total_required} confirmed calls fits the register; the longest \
         consistent prefix places {best} of them ({} calls, {} states tried)",
        n,
        seen.len()
    ))
}
