//! The SQL layer of JouleDB.

pub mod catalog;
pub mod expr;
pub mod functions;
pub mod plan;
