//! Query plans: trees of operators the engine executes as iterators.
//!
//! A [`Plan`] produces rows; every node documents the shape of its output row
//! so that bound expressions above it can address columns by position. Plans
//! are built once (at DDL time for procedures, on first use for ad hoc SQL)
//! and executed many times with different `?` parameters, so nothing in a
//! plan depends on parameter values.

use crate::catalog::TableId;
use crate::expr::{AggCall, Expr};
use joule_common::DataType;

/// How a scan reaches a table's rows.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Access {
    /// Every row, in storage order.
    Full,
    /// Through index `index` (position in the table's index list).
    Index { index: usize, lookup: IndexLookup, reverse: bool },
}

/// What an index scan looks up. Key expressions are constant per execution
/// (constants, parameters, outer columns).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum IndexLookup {
    /// Rows whose leading key columns equal these values.
    Eq(Vec<Expr>),
    /// Rows whose first key column equals any of these values.
    In(Vec<Expr>),
    /// Rows whose leading columns equal `prefix` and whose next column lies
    /// within the bounds (`(expr, inclusive)`; `None` = unbounded).
    Range { prefix: Vec<Expr>, lower: Option<(Expr, bool)>, upper: Option<(Expr, bool)> },
    /// Every entry in key order (for ORDER BY).
    All,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum JoinKind {
    Inner,
    Left,
    Right,
    Full,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SetOpKind {
    Union,
    Intersect,
    Except,
}

/// One ORDER BY key.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SortKey {
    pub expr: Expr,
    pub descending: bool,
    pub nulls_first: bool,
}

/// A plan node.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Plan {
    /// Rows of a table. Output: the table's columns.
    Scan {
        table: TableId,
        access: Access,
        filter: Option<Expr>,
    },
    /// Literal rows. Output: the expressions' values.
    Values {
        rows: Vec<Vec<Expr>>,
        width: usize,
    },
    Filter {
        input: Box<Plan>,
        predicate: Expr,
    },
    /// Output: one column per expression.
    Project {
        input: Box<Plan>,
        exprs: Vec<Expr>,
    },
    /// Output: left columns then right columns. For outer joins the missing
    /// side is NULLs. `predicate` sees the combined row.
    NestedLoopJoin {
        left: Box<Plan>,
        right: Box<Plan>,
        kind: JoinKind,
        predicate: Option<Expr>,
    },
    /// Equi-join building a hash table on the right side's keys.
    HashJoin {
        left: Box<Plan>,
        right: Box<Plan>,
        kind: JoinKind,
        left_keys: Vec<Expr>,
        right_keys: Vec<Expr>,
        residual: Option<Expr>,
    },
    /// For each left row, look up `table` through an index with key
    /// expressions evaluated on the left row (as outer columns, depth 0).
    IndexJoin {
        left: Box<Plan>,
        table: TableId,
        index: usize,
        keys: Vec<Expr>,
        kind: JoinKind,
        residual: Option<Expr>,
    },
    /// Output: the GROUP BY values, then one column per aggregate.
    Aggregate {
        input: Box<Plan>,
        group_by: Vec<Expr>,
        aggregates: Vec<AggCall>,
    },
    Sort {
        input: Box<Plan>,
        keys: Vec<SortKey>,
    },
    /// `limit`/`offset` are constant expressions (often parameters).
    Limit {
        input: Box<Plan>,
        limit: Option<Expr>,
        offset: Option<Expr>,
    },
    Distinct {
        input: Box<Plan>,
    },
    SetOp {
        kind: SetOpKind,
        all: bool,
        left: Box<Plan>,
        right: Box<Plan>,
    },
    /// Rows handed in by the caller rather than read from storage: in a
    /// multi-partition query, the rows the partitions returned for one
    /// fragment. Output: `width` columns.
    Input {
        slot: usize,
        width: usize,
    },
}

impl Plan {
    pub fn boxed(self) -> Box<Plan> {
        Box::new(self)
    }

    /// Child plans (not subqueries inside expressions).
    pub fn inputs(&self) -> Vec<&Plan> {
        match self {
            Plan::Scan { .. } | Plan::Values { .. } | Plan::Input { .. } => vec![],
            Plan::Filter { input, .. }
            | Plan::Project { input, .. }
            | Plan::Aggregate { input, .. }
            | Plan::Sort { input, .. }
            | Plan::Limit { input, .. }
            | Plan::Distinct { input } => vec![input],
            Plan::IndexJoin { left, .. } => vec![left],
            Plan::NestedLoopJoin { left, right, .. }
            | Plan::HashJoin { left, right, .. }
            | Plan::SetOp { left, right, .. } => vec![left, right],
        }
    }
}

/// A result column of a query.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OutputColumn {
    pub name: String,
    pub data_type: Option<DataType>,
}

/// Whether a statement can run in one partition.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Partitioning {
    /// Touches only replicated tables (or none): any one partition can
    /// answer a read; writes must reach every partition.
    Replicated,
    /// Pins one partition: the partition column of every partitioned table
    /// it touches equals this expression (a constant or parameter), routed
    /// as the partition column routes its values (the same for all).
    Single(Expr, crate::catalog::KeyRoute),
    /// Needs every partition.
    Multi,
}
