//! JouleDB's execution engine: one partition's storage and the executors
//! that run plans over it.
//!
//! * [`storage`]: tables in row slabs, tree and hash indexes, the undo log.
//! * [`eval`]: expression evaluation with SQL NULL logic.
//! * [`exec`]: plan nodes as row iterators.
//! * [`views`]: incremental maintenance of materialized views.
//! * [`database`]: the [`Database`] facade that plans and executes
//!   statements atomically, with transactions and savepoints.
//! * `schema`: applying DDL to the catalog and storage, undoably.

pub mod database;
pub mod eval;
pub mod exec;
mod schema;
pub mod storage;
pub mod views;

pub use database::{Database, ExecResult, PartitionOwner, Prepared};

/// Split a script into its statements' texts (for shells and tools).
pub fn split_statements(sql: &str) -> joule_common::Result<Vec<String>> {
    joule_sql::parser::split(sql)
}
