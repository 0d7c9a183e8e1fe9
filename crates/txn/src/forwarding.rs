//! Calls this host hands to another: a single-partition call to its
//! partition's leader, a multi-partition one to the coordinator, as the
//! wire form the data plane carries (`ClusterLink::forward`), each hop
//! counted so that a call bouncing while leadership moves ends with an
//! error instead of travelling for ever.

use crate::messages::{MpKind, MpTask, SpTask};
use crate::remote::{ClusterLink, Destination, WireCall};
use crate::response::{Response, ResponseSink};
use joule_common::{err, Value};
use joule_sql::catalog::DEFAULT_DATABASE;
use std::sync::Arc;

pub(crate) fn forward_sp(link: &Arc<dyn ClusterLink>, partition: u32, task: SpTask) {
    let mut params = task.params;
    let procedure = task.procedure.name.clone();
    if let Some(sql) = crate::site::adhoc_sql(&task.procedure) {
        params.insert(0, Value::String(sql));
    }
    let call = WireCall {
        database: task.procedure.database.clone(),
        procedure,
        params,
        hops: task.hops + 1,
        ring: task.hash_version,
        metadata: 0,
    };
    forward(link, Destination::Partition(partition), call, task.handle, task.sink)
}

/// Send a multi-partition invocation to the host coordinating them.
/// The internal procedure a host forwards [`crate::host::Client::forget_tokens`] as
/// (refused from clients).
pub(crate) const FORGET_TOKENS: &str = "@ForgetTokens";
/// The internal procedure a host forwards [`crate::host::Client::index_tokens`] as
/// (refused from clients).
pub(crate) const INDEX_TOKENS: &str = "@IndexTokens";

pub(crate) fn forward_mp(link: &Arc<dyn ClusterLink>, task: MpTask) {
    let (database, procedure, mut params) = match &task.kind {
        MpKind::Procedure(p) => (p.database.clone(), p.name.clone(), task.params),
        MpKind::Ddl { statements, database } => {
            (database.clone(), "@AdHoc".to_string(), vec![Value::String(statements.join(";\n"))])
        }
        MpKind::Checksums => (DEFAULT_DATABASE.to_string(), "@Checksum".to_string(), Vec::new()),
        MpKind::ValidatePartitioning => (DEFAULT_DATABASE.to_string(), "@ValidatePartitioning".to_string(), Vec::new()),
        MpKind::MoveRange { ranges, keep } => {
            let mut params = crate::moverange::range_values(ranges);
            if *keep {
                params.push(Value::Integer(1));
            }
            (DEFAULT_DATABASE.to_string(), "@MoveRange".to_string(), params)
        }
        MpKind::ForgetTokens => (DEFAULT_DATABASE.to_string(), FORGET_TOKENS.to_string(), Vec::new()),
        MpKind::IndexTokens { partitions, rows } => {
            let params = std::iter::once(Value::Integer(*rows as i64))
                .chain(partitions.iter().map(|p| Value::Integer(i64::from(*p))))
                .collect();
            (DEFAULT_DATABASE.to_string(), INDEX_TOKENS.to_string(), params)
        }
        _ => {
            let e =
                err!(FeatureNotSupported, "this system procedure is not available on a cluster of several hosts yet");
            return task.sink.deliver(task.handle, Response::failure(e, None));
        }
    };
    if let MpKind::Procedure(p) = &task.kind {
        if let Some(sql) = crate::site::adhoc_sql(p) {
            params.insert(0, Value::String(sql));
        }
    }
    let call = WireCall { database, procedure, params, hops: task.hops + 1, ring: 0, metadata: 0 };
    forward(link, Destination::Coordinator, call, task.handle, task.sink)
}

fn forward(link: &Arc<dyn ClusterLink>, to: Destination, call: WireCall, handle: u64, sink: Arc<dyn ResponseSink>) {
    if call.hops > crate::remote::MAX_HOPS {
        let e = err!(
            Unavailable,
            "the cluster's leadership is moving: {} was forwarded too often; try again",
            call.procedure
        );
        return sink.deliver(handle, Response::failure(e, None));
    }
    link.forward(to, call, handle, sink)
}
