//! Starting and stopping a host: every invocation gets an answer, even the
//! ones that arrive while it shuts down.

mod common;

use common::*;
use joule_common::ErrorCode;
use joule_txn::{Host, HostConfig, Response, ResponseSink, Status};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    unavailable: AtomicU64,
    other: AtomicU64,
}

impl ResponseSink for Tally {
    fn deliver(&self, _handle: u64, r: Response) {
        match r.status {
            Status::Success => &self.ok,
            Status::ServerUnavailable => &self.unavailable,
            _ => &self.other,
        }
        .fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn configuration_is_checked() {
    let e = Host::start(HostConfig { sites_per_host: 0, ..Default::default() }).err().expect("refused");
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
    let host = Host::start(HostConfig::default()).unwrap();
    assert_eq!(host.partitions(), std::thread::available_parallelism().map_or(1, |n| n.get()));
}

#[test]
fn every_invocation_is_answered_across_shutdown() {
    let host = host(2);
    let mut c = host.client();
    exec(&mut c, "CREATE TABLE t (k BIGINT NOT NULL PRIMARY KEY); PARTITION TABLE t ON COLUMN k");
    // Answers carry the time from acceptance to answer.
    assert!(ok(c.call("T.insert", vec![int(-1)])).cluster_micros > 0);
    assert!(ok(c.adhoc("SELECT COUNT(*) FROM t", vec![])).cluster_micros > 0);
    let tally = Arc::new(Tally::default());
    let sink: Arc<dyn ResponseSink> = tally.clone();
    let sent = 20_000u64;
    for i in 0..sent {
        if i == sent / 2 {
            host.shutdown();
        }
        let name = if i % 100 == 0 { "@AdHoc" } else { "T.insert" };
        let params = if i % 100 == 0 { vec![text("SELECT COUNT(*) FROM t")] } else { vec![int(i as i64)] };
        c.call_async(name, params, i, sink.clone());
    }
    let answered = tally.ok.load(Ordering::Relaxed) + tally.unavailable.load(Ordering::Relaxed);
    assert_eq!(tally.other.load(Ordering::Relaxed), 0);
    assert_eq!(answered, sent, "every invocation answered");
    assert!(tally.unavailable.load(Ordering::Relaxed) >= sent / 2);
    assert_eq!(fails(c.call("T.insert", vec![int(1)])), ErrorCode::Unavailable);
}
