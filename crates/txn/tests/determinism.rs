//! Determinism: replaying the same invocations with the same transaction
//! ids on a fresh host reproduces every table exactly, including values
//! from NOW() and RANDOM() and work that aborted.

mod common;

use common::*;
use joule_common::Value;
use joule_txn::{Client, Host, Invocation, Response, TxnIds};

fn script() -> Vec<Invocation> {
    let adhoc = |sql: &str, params: Vec<Value>| {
        let mut all = vec![text(sql)];
        all.extend(params);
        Invocation::new("@AdHoc", all)
    };
    let mut out = vec![
        adhoc("CREATE TABLE ev (id BIGINT NOT NULL PRIMARY KEY, at TIMESTAMP, r FLOAT, n INT); PARTITION TABLE ev ON COLUMN id; \
               CREATE TABLE totals (name VARCHAR(10) NOT NULL PRIMARY KEY, at TIMESTAMP, n BIGINT); \
               CREATE PROCEDURE Record PARTITION ON TABLE ev COLUMN id AS INSERT INTO ev VALUES (?, NOW(), RANDOM(), ?); \
               CREATE PROCEDURE Roll AS BEGIN UPDATE ev SET r = RANDOM(), n = n + 1 WHERE n % 3 = 0; \
                 UPSERT INTO totals SELECT 'all', NOW(), COUNT(*) FROM ev; END", vec![]),
    ];
    for i in 0..200 {
        out.push(Invocation::new("Record", vec![int(i), int(i % 10)]));
        if i % 25 == 0 {
            out.push(Invocation::new("Roll", vec![]));
            // Fails (duplicate key) and must leave no trace in either run.
            out.push(Invocation::new("Record", vec![int(i), int(0)]));
        }
    }
    out.push(adhoc("UPDATE ev SET at = NOW() WHERE id < ?", vec![int(50)]));
    out
}

fn run(c: &mut Client, invocations: Vec<Invocation>) -> Vec<Response> {
    invocations.into_iter().map(|i| c.invoke_wait(i)).collect()
}

fn checksums(host: &Host) -> Vec<joule_common::Row> {
    ok(host.client().call("@Checksum", vec![])).results[0].rows.clone()
}

#[test]
fn replay_with_the_same_ids_reproduces_every_table() {
    let first = host(2);
    let responses = run(&mut first.client(), script());
    let failures = responses.iter().filter(|r| !r.is_success()).count();
    assert_eq!(failures, 8, "the duplicate inserts fail");
    let ids: Vec<TxnIds> = responses.iter().map(|r| r.ids.expect("every invocation ran")).collect();

    let replayed = script().into_iter().zip(&ids).map(|(mut inv, ids)| {
        inv.replay = Some(*ids);
        inv
    });
    let second = host(2);
    let again = run(&mut second.client(), replayed.collect());
    assert_eq!(
        again.iter().map(|r| r.status).collect::<Vec<_>>(),
        responses.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    let sums = checksums(&first);
    assert_eq!(checksums(&second), sums);
    assert_eq!(sums.len(), 2 * 2, "two tables on two partitions");

    // The control: the same invocations with fresh ids (a later clock,
    // other seeds) give different tables, so the checksum sees the values.
    std::thread::sleep(std::time::Duration::from_millis(5));
    let third = host(2);
    run(&mut third.client(), script());
    assert_ne!(checksums(&third), sums);
}
