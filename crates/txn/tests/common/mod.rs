//! Helpers shared by the transaction-layer tests.
#![allow(dead_code)]

use joule_common::{ErrorCode, Row, Value};
use joule_txn::{Client, Host, HostConfig, ProcedureRegistry, Response};

pub fn host(sites: usize) -> Host {
    host_with(sites, ProcedureRegistry::new())
}

pub fn host_with(sites: usize, registry: ProcedureRegistry) -> Host {
    Host::start(HostConfig { sites_per_host: sites, registry, ..Default::default() }).expect("host starts")
}

/// The response, which must be a success.
#[track_caller]
pub fn ok(r: Response) -> Response {
    assert!(r.is_success(), "expected success, got {r:?}");
    r
}

/// The error code of a response that must have failed.
#[track_caller]
pub fn fails(r: Response) -> ErrorCode {
    match &r.error {
        Some(e) => e.code(),
        None => panic!("expected failure, got {r:?}"),
    }
}

#[track_caller]
pub fn exec(c: &mut Client, sql: &str) -> Response {
    ok(c.adhoc(sql, vec![]))
}

/// The rows of the first result of a successful ad hoc query.
#[track_caller]
pub fn query(c: &mut Client, sql: &str) -> Vec<Row> {
    let r = ok(c.adhoc(sql, vec![]));
    r.results.into_iter().next().map(|t| t.rows).unwrap_or_default()
}

#[track_caller]
pub fn scalar(c: &mut Client, sql: &str) -> Value {
    query(c, sql).into_iter().next().and_then(|r| r.into_iter().next()).unwrap_or(Value::Null)
}

pub fn int(i: i64) -> Value {
    Value::Integer(i)
}

pub fn text(s: &str) -> Value {
    Value::String(s.to_string())
}

/// Whether a response ran as a multi-partition transaction.
pub fn was_multi_partition(r: &Response) -> bool {
    r.ids.expect("transaction ids").txn_id.is_multi_partition()
}

/// Sum of misplaced rows over every partition and table.
pub fn misplaced(c: &mut Client) -> i64 {
    let r = ok(c.call("@ValidatePartitioning", vec![]));
    r.results[0].rows.iter().map(|row| if let Value::Integer(n) = row[2] { n } else { 0 }).sum()
}

/// Three writers, each bumping 1500 of the 400 rows of `h` (which must be
/// there, with the procedure `AddH` that adds 1 to a row's `n`) and reading
/// every partition now and then: 4500 bumps in all.
pub fn three_writers(host: &Host) -> Vec<std::thread::JoinHandle<()>> {
    (0..3)
        .map(|w| {
            let mut c = host.client();
            std::thread::spawn(move || {
                for i in 0..1500 {
                    let k = (i * 7 + w * 13) % 400;
                    ok(c.call("AddH", vec![int(k)]));
                    if i % 50 == 0 {
                        // Multi-partition reads see every partition.
                        assert_eq!(scalar(&mut c, "SELECT COUNT(*) FROM h"), int(400));
                    }
                }
            })
        })
        .collect()
}
