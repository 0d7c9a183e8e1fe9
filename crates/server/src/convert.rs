//! Between the wire and the transaction layer: parameters in, responses out.

use joule_common::{DataType, Value};
use joule_txn::{Response, ResultTable, Status};
use joule_wire::buf::{begin_length, end_length};
use joule_wire::messages::{write_table, ResponseHeader};
use joule_wire::{Param, VoltType};

pub use joule_wire::messages::{STATUS_GRACEFUL_FAILURE, STATUS_SERVER_UNAVAILABLE};

/// The status a call refused before it ran is answered with: "server
/// unavailable" when another host (or later) may take it — VoltDB clients
/// then try elsewhere — and a graceful failure otherwise.
pub fn refusal_status(e: &joule_common::Error) -> i8 {
    if e.code() == joule_common::ErrorCode::Unavailable {
        STATUS_SERVER_UNAVAILABLE
    } else {
        STATUS_GRACEFUL_FAILURE
    }
}

/// A wire parameter as a value procedures take: arrays become
/// `Value::Array` (for `IN ?` and procedures taking arrays).
pub fn param_value(p: Param) -> Value {
    match p {
        Param::Value(v) => v,
        Param::Array(_, items) => Value::Array(items.into()),
    }
}

/// The wire type of a result column: its SQL type, or (for expressions
/// without one, such as a NULL literal) the first value's kind.
fn column_type(declared: Option<DataType>, table: &ResultTable, column: usize) -> VoltType {
    if let Some(t) = declared {
        return VoltType::of(t);
    }
    let first = table.rows.iter().map(|r| &r[column]).find(|v| !v.is_null());
    match first {
        Some(Value::Integer(_)) => VoltType::BigInt,
        Some(Value::Float(_)) => VoltType::Float,
        Some(Value::Decimal(_)) => VoltType::Decimal,
        Some(Value::Timestamp(_)) => VoltType::Timestamp,
        Some(Value::Binary(_)) => VoltType::Varbinary,
        Some(Value::Boolean(_)) => VoltType::TinyInt,
        _ => VoltType::String,
    }
}

/// Append one framed client response for `handle`, encoded in place.
pub fn write_response(out: &mut Vec<u8>, handle: i64, r: &Response, round_trip_ms: i32) {
    let status_string = r.status_string();
    let frame_at = begin_length(out);
    let header = ResponseHeader {
        client_handle: handle,
        status: r.status as i8,
        status_string: status_string.as_deref(),
        app_status: r.app_status,
        app_status_string: r.app_status_string.as_deref(),
        cluster_round_trip_ms: round_trip_ms,
    };
    let encoded = header.write(out, r.results.len()).and_then(|()| {
        for t in &r.results {
            let columns: Vec<(&str, VoltType)> =
                t.columns.iter().enumerate().map(|(i, c)| (c.name.as_str(), column_type(c.data_type, t, i))).collect();
            write_table(out, &columns, &t.rows)?;
        }
        Ok(())
    });
    if let Err(e) = encoded {
        // A value that cannot travel as its column's type: answer with the
        // error instead of a half-written table.
        out.truncate(frame_at);
        let failure = Response::failure(e.context("the result cannot be sent"), r.ids);
        return write_response(out, handle, &failure, round_trip_ms);
    }
    end_length(out, frame_at);
}

/// A framed failure answer made here, without a transaction.
pub fn write_failure(out: &mut Vec<u8>, handle: i64, status: i8, message: &str) {
    joule_wire::messages::write_bare_response(out, handle, status, Some(message));
}

/// The success answer of `@Ping`.
pub fn write_ping(out: &mut Vec<u8>, handle: i64) {
    joule_wire::messages::write_bare_response(out, handle, Status::Success as i8, None);
}
