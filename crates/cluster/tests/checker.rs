//! The linearizability checker itself: histories known to be
//! linearizable pass, known violations fail, and every history produced
//! by a real (atomic) register under random concurrency passes.

mod common;

use common::linearizable::{check, Call, Op, Outcome};
use proptest::prelude::*;

fn call(client: usize, op: Op, outcome: Outcome, invoked: u64, completed: u64) -> Call {
    Call { client, op, outcome, invoked, completed: (outcome != Outcome::Unknown).then_some(completed) }
}

#[test]
fn known_histories() {
    use Op::*;
    use Outcome::*;
    // Concurrent write and read: the read may see either value.
    let h = [call(0, Write(1), Ok, 0, 10), call(1, Read(0), Ok, 1, 5), call(2, Read(1), Ok, 2, 6)];
    assert!(check(0, &h).is_ok());
    // A read after a completed write must not see the old value.
    let stale = [call(0, Write(1), Ok, 0, 10), call(1, Read(0), Ok, 11, 12)];
    assert!(check(0, &stale).is_err());
    // A value nobody wrote.
    assert!(check(0, &[call(0, Read(7), Ok, 0, 1)]).is_err());
    // Two CAS from the same value cannot both succeed.
    let double = [call(0, Cas { expected: 0, new: 1 }, Ok, 0, 5), call(1, Cas { expected: 0, new: 2 }, Ok, 1, 6)];
    assert!(check(0, &double).is_err());
    // A refused CAS needs another value at its moment.
    assert!(check(0, &[call(0, Cas { expected: 0, new: 1 }, Refused, 0, 1)]).is_err());
    // An unknown CAS may have happened...
    let maybe = [call(0, Cas { expected: 0, new: 1 }, Unknown, 0, 0), call(1, Read(1), Ok, 10, 11)];
    assert!(check(0, &maybe).is_ok());
    // ...or not.
    let maybe_not = [call(0, Cas { expected: 0, new: 1 }, Unknown, 0, 0), call(1, Read(0), Ok, 10, 11)];
    assert!(check(0, &maybe_not).is_ok());
    // But not both: once seen, it cannot be undone.
    let flicker = [
        call(0, Cas { expected: 0, new: 1 }, Unknown, 0, 0),
        call(1, Read(1), Ok, 10, 11),
        call(1, Read(0), Ok, 12, 13),
    ];
    assert!(check(0, &flicker).is_err());
}

/// A real register, driven by concurrent clients: each call takes effect
/// at one instant between its invocation and completion; some answers are
/// lost (unknown outcomes).
fn simulate(plan: &[(usize, u8, i64, u64, u64, bool)]) -> Vec<Call> {
    // (client, kind, argument, start offset, length, answer lost)
    let mut value = 0i64;
    let mut events: Vec<(u64, usize)> = Vec::new();
    let mut calls = Vec::new();
    let mut clock = [0u64; 4];
    for (i, (client, _, _, start, len, _)) in plan.iter().enumerate() {
        let invoked = clock[*client] + start;
        let effect = invoked + len / 2;
        clock[*client] = invoked + len + 1;
        events.push((effect, i));
        calls.push((invoked, invoked + len));
    }
    events.sort();
    let mut history = vec![None; plan.len()];
    for (_, i) in events {
        let (client, kind, arg, _, _, lost) = plan[i];
        let (op, outcome) = match kind % 3 {
            0 => (Op::Read(value), Outcome::Ok),
            1 => {
                value = arg;
                (Op::Write(arg), Outcome::Ok)
            }
            _ => {
                let expected = arg % 3;
                if value == expected {
                    value = arg;
                    (Op::Cas { expected, new: arg }, Outcome::Ok)
                } else {
                    (Op::Cas { expected, new: arg }, Outcome::Refused)
                }
            }
        };
        let outcome = if lost { Outcome::Unknown } else { outcome };
        let (invoked, completed) = calls[i];
        history[i] =
            Some(Call { client, op, outcome, invoked, completed: (outcome != Outcome::Unknown).then_some(completed) });
    }
    history.into_iter().flatten().collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn real_registers_are_linearizable(
        plan in proptest::collection::vec((0usize..4, 0u8..3, 0i64..6, 0u64..20, 1u64..30, proptest::bool::weighted(0.1)), 1..60)
    ) {
        let history = simulate(&plan);
        prop_assert!(check(0, &history).is_ok(), "{:?}", history);
    }
}
