//! JouleDB's execution engine (API skeleton; implementation in progress).

use joule_common::{Result, Row, Value};
use joule_sql::plan::OutputColumn;

/// The result of one statement.
#[derive(Clone, Debug, PartialEq)]
pub enum ExecResult {
    /// A query's rows.
    Rows { columns: Vec<OutputColumn>, rows: Vec<Row> },
    /// INSERT/UPDATE/DELETE/UPSERT: rows changed.
    Modified(u64),
    /// DDL and other statements without a result.
    Done,
}

/// A statement planned once, executable many times with parameters.
pub struct Prepared {
    _private: (),
}

/// An in-process JouleDB database: one partition, one thread.
pub struct Database {
    _private: (),
}

impl Default for Database {
    fn default() -> Self {
        Self::new()
    }
}

impl Database {
    pub fn new() -> Database {
        Database { _private: () }
    }

    /// Execute one or more `;`-separated statements; returns the last result.
    pub fn execute(&mut self, sql: &str) -> Result<ExecResult> {
        let _ = sql;
        todo!()
    }

    /// Plan a single statement with `?` parameters.
    pub fn prepare(&mut self, sql: &str) -> Result<Prepared> {
        let _ = sql;
        todo!()
    }

    /// Execute a prepared statement.
    pub fn execute_prepared(&mut self, stmt: &Prepared, params: &[Value]) -> Result<ExecResult> {
        let _ = (stmt, params);
        todo!()
    }
}
