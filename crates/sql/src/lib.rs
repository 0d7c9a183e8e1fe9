//! The SQL layer of JouleDB: everything between SQL text and an executable
//! plan, with no data and no execution.
//!
//! * [`parser`]: sqlparser plus VoltDB's extra statements, into [`parser::Statement`].
//! * [`procedure_syntax`]: `CREATE/DROP/PARTITION PROCEDURE`.
//! * [`catalog`]: databases, tables, indexes, views, procedures (schema only).
//! * [`binder`]: name resolution and typing into [`expr::Expr`] / [`plan::Plan`].
//! * [`optimizer`]: predicate pushdown, index selection, join methods.
//! * [`planner`]: statements (queries, DML, DDL) into [`planner::Planned`],
//!   including whether a statement pins a single partition.
//! * [`functions`]: the scalar SQL functions.

pub mod binder;
pub mod catalog;
pub mod expr;
pub mod functions;
pub mod optimizer;
pub mod parser;
pub mod plan;
pub mod planner;
pub mod procedure_syntax;
