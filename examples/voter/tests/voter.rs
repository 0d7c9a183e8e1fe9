//! The voter application end to end on a two-partition host.

use joule_common::Value;
use joule_txn::{Host, HostConfig, ProcedureRegistry, Response};
use joule_voter::{register, CallGenerator, CONTESTANTS, DDL, VOTE_ACCEPTED, VOTE_INVALID_CONTESTANT, VOTE_OVER_LIMIT};

fn host() -> Host {
    let mut registry = ProcedureRegistry::new();
    register(&mut registry);
    let host = Host::start(HostConfig { sites_per_host: 2, registry, ..Default::default() }).unwrap();
    let r = host.client().adhoc(DDL, vec![]);
    assert!(r.is_success(), "{r:?}");
    host
}

fn code(r: &Response) -> i64 {
    assert!(r.is_success(), "{r:?}");
    r.results[0].as_i64().unwrap()
}

#[test]
fn votes_limits_and_results() {
    let host = host();
    let mut c = host.client();
    let init = |c: &mut joule_txn::Client| {
        code(&c.call("Initialize", vec![Value::Integer(6), Value::String(CONTESTANTS.into())]))
    };
    assert_eq!(init(&mut c), 6);
    // Initializing again keeps what is there.
    assert_eq!(init(&mut c), 6);

    let vote = |c: &mut joule_txn::Client, phone: i64, who: i64| {
        code(&c.call("Vote", vec![Value::Integer(phone), Value::Integer(who), Value::Integer(2)]))
    };
    assert_eq!(vote(&mut c, 2015550001, 1), VOTE_ACCEPTED);
    assert_eq!(vote(&mut c, 2015550001, 2), VOTE_ACCEPTED);
    assert_eq!(vote(&mut c, 2015550001, 3), VOTE_OVER_LIMIT);
    assert_eq!(vote(&mut c, 2015550002, 999), VOTE_INVALID_CONTESTANT);
    // An area code that is not loaded votes from state XX.
    assert_eq!(vote(&mut c, 9995550003, 1), VOTE_ACCEPTED);
    let r = c.adhoc("SELECT state FROM votes WHERE phone_number = 9995550003", vec![]);
    assert_eq!(r.results[0].rows, vec![vec![Value::String("XX".into())]]);

    // Many votes from generated callers, then the results board adds up.
    let mut g = CallGenerator::new(42, 6);
    let mut accepted = 3;
    for _ in 0..2000 {
        let (phone, who) = g.next_call();
        if vote(&mut c, phone, who) == VOTE_ACCEPTED {
            accepted += 1;
        }
    }
    let r = c.call("Results", vec![]);
    assert!(r.is_success(), "{r:?}");
    let total: i64 = r.results[0]
        .rows
        .iter()
        .map(|row| match row[2] {
            Value::Integer(n) => n,
            ref v => panic!("{v:?}"),
        })
        .sum();
    assert_eq!(total, accepted);
    // Best first.
    let counts: Vec<i64> =
        r.results[0].rows.iter().map(|row| if let Value::Integer(n) = row[2] { n } else { 0 }).collect();
    assert!(counts.windows(2).all(|w| w[0] >= w[1]), "{counts:?}");
    let r = c.adhoc("SELECT COUNT(*) FROM votes", vec![]);
    assert_eq!(r.results[0].as_i64(), Some(accepted));
    // Every vote lives on the partition its phone number hashes to.
    let r = c.call("@ValidatePartitioning", vec![]);
    assert!(r.results[0].rows.iter().all(|row| row[2] == Value::Integer(0)), "{r:?}");
    // Both partitions got votes.
    let r = c.call("@Checksum", vec![]);
    assert!(r.is_success());
}

#[test]
fn vote_checks_its_parameters() {
    let host = host();
    let mut c = host.client();
    let r = c.call("Vote", vec![Value::String("not a number".into()), Value::Integer(1), Value::Integer(2)]);
    assert!(!r.is_success());
    let r = c.call("Vote", vec![]);
    assert_eq!(r.error.unwrap().code(), joule_common::ErrorCode::WrongParameterCount);
}
