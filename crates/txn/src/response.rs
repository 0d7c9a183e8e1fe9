//! What an invocation answers: a status, an optional app status set by the
//! procedure, and result tables — the shape of VoltDB's client response, so
//! that the wire protocol can encode it directly.

use crate::ids::TxnIds;
use joule_common::{DataType, Error, ErrorCode, Row, Value};
use joule_engine::ExecResult;
use joule_sql::plan::OutputColumn;
use std::sync::{Arc, OnceLock};

/// VoltDB's client response status codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i8)]
pub enum Status {
    Success = 1,
    /// The procedure aborted itself; nothing it did remains.
    UserAbort = -1,
    /// A SQL or procedure error (constraint violation, bad parameter...);
    /// nothing the transaction did remains.
    GracefulFailure = -2,
    /// A bug in JouleDB (an internal error).
    UnexpectedFailure = -3,
    /// The host is shutting down or overloaded.
    ServerUnavailable = -5,
    /// The outcome is unknown (VoltDB's RESPONSE_UNKNOWN).
    ResponseUnknown = -7,
}

impl Status {
    pub fn from_i8(v: i8) -> Option<Status> {
        [
            Status::Success,
            Status::UserAbort,
            Status::GracefulFailure,
            Status::UnexpectedFailure,
            Status::ServerUnavailable,
            Status::ResponseUnknown,
        ]
        .into_iter()
        .find(|s| *s as i8 == v)
    }
}

/// The app status a procedure did not set.
pub const APP_STATUS_UNSET: i8 = i8::MIN;

/// A result table: columns (shared with the plan) and rows.
#[derive(Clone, Debug, PartialEq)]
pub struct ResultTable {
    pub columns: Arc<[OutputColumn]>,
    pub rows: Vec<Row>,
}

impl ResultTable {
    pub fn new(columns: Arc<[OutputColumn]>, rows: Vec<Row>) -> ResultTable {
        ResultTable { columns, rows }
    }

    /// One BIGINT in a one-row, one-column table (what a procedure returning
    /// a number answers; the column is unnamed, as VoltDB's).
    pub fn scalar(value: i64) -> ResultTable {
        ResultTable { columns: bigint_column(""), rows: vec![vec![Value::Integer(value)]] }
    }

    /// The table a statement's result becomes: its rows; for DML one
    /// `MODIFIED_TUPLES` row; for DDL one `STATUS` row of 0.
    pub fn from_exec(result: ExecResult) -> ResultTable {
        match result {
            ExecResult::Rows { columns, rows } => ResultTable { columns, rows },
            ExecResult::Modified(n) => {
                ResultTable { columns: bigint_column("MODIFIED_TUPLES"), rows: vec![vec![Value::Integer(n as i64)]] }
            }
            ExecResult::Done => ResultTable { columns: bigint_column("STATUS"), rows: vec![vec![Value::Integer(0)]] },
        }
    }

    /// The first column of the first row, if any.
    pub fn first_value(&self) -> Option<&Value> {
        self.rows.first().and_then(|r| r.first())
    }

    /// The first row's first column as an integer.
    pub fn as_i64(&self) -> Option<i64> {
        match self.first_value() {
            Some(Value::Integer(i)) => Some(*i),
            _ => None,
        }
    }
}

/// One BIGINT column, built once per name: answers of DML and procedures
/// returning numbers share it instead of allocating per transaction.
fn bigint_column(name: &'static str) -> Arc<[OutputColumn]> {
    static SHARED: [OnceLock<Arc<[OutputColumn]>>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let slot = match name {
        "" => &SHARED[0],
        "MODIFIED_TUPLES" => &SHARED[1],
        _ => &SHARED[2],
    };
    slot.get_or_init(|| vec![OutputColumn { name: name.to_string(), data_type: Some(DataType::BigInt) }].into()).clone()
}

/// The answer to one invocation.
#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    pub status: Status,
    /// For failures: the error (its code, SQLSTATE and message).
    pub error: Option<Error>,
    /// Set by the procedure (`APP_STATUS_UNSET` when it did not).
    pub app_status: i8,
    pub app_status_string: Option<String>,
    pub results: Vec<ResultTable>,
    /// The transaction's ids (absent when it never started: unknown
    /// procedure, bad routing parameter, shutdown).
    pub ids: Option<TxnIds>,
    /// Time from the invocation's acceptance to its answer, in
    /// microseconds (VoltDB's cluster round-trip time).
    pub cluster_micros: u64,
}

impl Response {
    fn new(status: Status, error: Option<Error>, results: Vec<ResultTable>, ids: Option<TxnIds>) -> Response {
        Response {
            status,
            error,
            app_status: APP_STATUS_UNSET,
            app_status_string: None,
            results,
            ids,
            cluster_micros: 0,
        }
    }

    pub fn success(results: Vec<ResultTable>, ids: TxnIds) -> Response {
        Response::new(Status::Success, None, results, Some(ids))
    }

    /// A success answered without running a transaction (system
    /// procedures that read the schema, `USE`).
    pub fn answered(results: Vec<ResultTable>) -> Response {
        Response::new(Status::Success, None, results, None)
    }

    /// A failure with the status its error code calls for.
    pub fn failure(error: Error, ids: Option<TxnIds>) -> Response {
        let status = match error.code() {
            ErrorCode::ProcedureAborted => Status::UserAbort,
            ErrorCode::Internal => Status::UnexpectedFailure,
            ErrorCode::Unavailable => Status::ServerUnavailable,
            ErrorCode::OutcomeUnknown => Status::ResponseUnknown,
            _ => Status::GracefulFailure,
        };
        Response::new(status, Some(error), Vec::new(), ids)
    }

    pub fn is_success(&self) -> bool {
        self.status == Status::Success
    }

    /// The status string VoltDB clients show: the error's text, if any.
    pub fn status_string(&self) -> Option<String> {
        self.error.as_ref().map(|e| e.to_string())
    }

    /// The error, or the results.
    pub fn into_result(self) -> Result<Vec<ResultTable>, Error> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.results),
        }
    }
}

/// Where responses go: a connection, a waiting caller, a benchmark counter.
/// `handle` is the caller's token for matching answers to requests (VoltDB's
/// client handle); responses to one sink may arrive in any order.
pub trait ResponseSink: Send + Sync {
    fn deliver(&self, handle: u64, response: Response);
}
