//! Range pruning: which partitions a distributed read of a
//! range-partitioned table must visit.
//!
//! A table placed by value ranges (`PARTITION TABLE t ON COLUMN c USING
//! RANGE (b1, …, bn)`, see [`KeyRoute`](joule_sql::catalog::KeyRoute)) keeps
//! the rows of range `i` on partition `i mod P`, or on the partition its
//! `ON PARTITIONS` list names. A fragment that reads such
//! a table with predicates on `c` — `c = v`, `c < v`, `c <= v`, `c > v`,
//! `c >= v` (BETWEEN is the last two), in the scan's filter or its index
//! lookup — can hold rows only from the ranges those predicates overlap, so
//! the coordinator sends it only to the partitions holding those ranges
//! ([`RangePrune::partitions`]). The values are read at run time (a
//! parameter's value is known only then).
//!
//! Pruning never changes an answer: a predicate it cannot read (any other
//! shape, a value of another type than the column's — `c < 10.5` on an
//! integer column) narrows nothing, and at least one partition always runs
//! the fragment (so a global aggregate still has its one partial row). The
//! transaction itself is still multi-partition: every partition takes part
//! in its ordering; only the others skip the scan.

use joule_common::{DataType, Value};
use joule_sql::catalog::{range_of, range_partition, Catalog};
use joule_sql::expr::{CmpOp, Expr};
use joule_sql::plan::{Access, IndexLookup, Plan};
use std::sync::Arc;

/// A fragment's partitions, narrowed by predicates on the partition column
/// of the one range-partitioned table it reads.
#[derive(Clone, Debug, PartialEq)]
pub struct RangePrune {
    /// The table's range boundaries.
    pub bounds: Arc<[Value]>,
    /// Each range's partition, if the table names them.
    pub owners: Option<Arc<[joule_common::hashinator::PartitionId]>>,
    pub key_type: DataType,
    /// `column op value` conditions that every row read satisfies.
    pub limits: Vec<(CmpOp, Expr)>,
}

impl RangePrune {
    /// For a fragment's plan: its pruning, if it scans exactly one
    /// partitioned table, placed by ranges, with conditions on its
    /// partition column.
    pub fn of(plan: &Plan, catalog: &Catalog) -> Option<RangePrune> {
        let mut scans = Vec::new();
        joule_sql::planner::visit_scans(plan, &mut |table, access, filter| {
            if let Some(def) = catalog.table_by_id(table).filter(|d| catalog.is_partitioned(d)) {
                scans.push((def.clone(), access.clone(), filter.clone()));
            }
        });
        let [(def, access, filter)] = scans.as_slice() else { return None };
        let (pc, bounds) = (def.partition_column?, def.partition_ranges.clone()?);
        let mut limits = Vec::new();
        if let Access::Index { index, lookup, .. } = access {
            if def.indexes.get(*index)?.columns.first() == Some(&pc) {
                match lookup {
                    IndexLookup::Eq(keys) => limits.extend(keys.first().map(|k| (CmpOp::Eq, k.clone()))),
                    IndexLookup::Range { prefix, lower, upper } if prefix.is_empty() => {
                        let bound = |b: &Option<(Expr, bool)>, closed: CmpOp, open: CmpOp| {
                            b.as_ref().map(|(e, inclusive)| (if *inclusive { closed } else { open }, e.clone()))
                        };
                        limits.extend(bound(lower, CmpOp::GtEq, CmpOp::Gt));
                        limits.extend(bound(upper, CmpOp::LtEq, CmpOp::Lt));
                    }
                    _ => {}
                }
            }
        }
        for conjunct in filter.clone().map(Expr::into_conjuncts).unwrap_or_default() {
            if let Expr::Compare(op, a, b) = conjunct {
                match (*a, *b) {
                    (Expr::Column(c), v) if c == pc && v.is_constant() => limits.push((op, v)),
                    (v, Expr::Column(c)) if c == pc && v.is_constant() => limits.push((flip(op), v)),
                    _ => {}
                }
            }
        }
        limits.retain(|(op, v)| *op != CmpOp::NotEq && matches!(v, Expr::Constant(_) | Expr::Parameter(_)));
        if limits.is_empty() {
            return None;
        }
        Some(RangePrune { bounds, owners: def.range_owners.clone(), key_type: def.columns[pc].data_type, limits })
    }

    /// The partitions (ascending, below `partitions`) whose ranges the
    /// conditions overlap, with `params` for parameters; never none.
    pub fn partitions(&self, params: &[Value], partitions: u32) -> Vec<usize> {
        // Ranges lo..=hi may hold matching rows.
        let (mut lo, mut hi) = (0usize, self.bounds.len());
        for (op, e) in &self.limits {
            let value = match e {
                Expr::Constant(v) => v,
                Expr::Parameter(i) => match params.get(*i) {
                    Some(v) => v,
                    None => continue,
                },
                _ => continue,
            };
            if !self.comparable(value) {
                continue;
            }
            let at = range_of(&self.bounds, value);
            match op {
                CmpOp::Eq => (lo, hi) = (lo.max(at), hi.min(at)),
                CmpOp::Gt | CmpOp::GtEq => lo = lo.max(at),
                // Range i holds keys from bounds[i - 1]: below `value` only
                // if that bound is.
                CmpOp::Lt => hi = hi.min(self.bounds.partition_point(|b| b < value)),
                CmpOp::LtEq => hi = hi.min(at),
                CmpOp::NotEq => {}
            }
        }
        let mut out: Vec<usize> = match &self.owners {
            Some(owners) => (lo..=hi.max(lo)).map(|r| range_partition(Some(owners), r, partitions) as usize).collect(),
            None => (lo..=hi.max(lo))
                .map(|r| range_partition(None, r, partitions) as usize)
                .take(partitions as usize)
                .collect(),
        };
        if lo > hi {
            // Nothing can match: one partition answers (with no rows).
            out.truncate(1);
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Whether `value` compares with the column's values as they are
    /// ordered in the ranges (the same kind; NULL matches nothing, so it
    /// narrows nothing here either — the scan finds no rows).
    fn comparable(&self, value: &Value) -> bool {
        match value {
            Value::Integer(_) => self.key_type.is_integer(),
            Value::String(_) => self.key_type == DataType::Varchar,
            Value::Binary(_) => self.key_type == DataType::Varbinary,
            _ => false,
        }
    }

    /// A line for EXPLAIN.
    pub fn describe(&self) -> String {
        let limits: Vec<String> = self.limits.iter().map(|(op, e)| format!("{} {e}", op.symbol())).collect();
        format!(
            "RANGE PRUNED: only partitions whose ranges ({} boundaries) hold keys {}",
            self.bounds.len(),
            limits.join(" and ")
        )
    }
}

/// `v op column` as `column op' v`.
fn flip(op: CmpOp) -> CmpOp {
    match op {
        CmpOp::Lt => CmpOp::Gt,
        CmpOp::LtEq => CmpOp::GtEq,
        CmpOp::Gt => CmpOp::Lt,
        CmpOp::GtEq => CmpOp::LtEq,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prune(limits: Vec<(CmpOp, Expr)>) -> RangePrune {
        let bounds: Vec<Value> = [100, 200, 300].iter().map(|b| Value::Integer(*b)).collect();
        RangePrune { bounds: bounds.into(), owners: None, key_type: DataType::BigInt, limits }
    }

    fn c(v: i64) -> Expr {
        Expr::Constant(Value::Integer(v))
    }

    #[test]
    fn conditions_narrow_the_ranges_and_so_the_partitions() {
        // Ranges: 0 (< 100), 1 [100, 200), 2 [200, 300), 3 (>= 300); four
        // partitions, one range each.
        let p = |limits| prune(limits).partitions(&[], 4);
        assert_eq!(p(vec![(CmpOp::Eq, c(150))]), vec![1]);
        assert_eq!(p(vec![(CmpOp::Eq, c(200))]), vec![2], "a boundary starts its range");
        assert_eq!(p(vec![(CmpOp::GtEq, c(150)), (CmpOp::Lt, c(250))]), vec![1, 2]);
        assert_eq!(p(vec![(CmpOp::Lt, c(200))]), vec![0, 1], "below 200: not range 2");
        assert_eq!(p(vec![(CmpOp::LtEq, c(200))]), vec![0, 1, 2], "200 itself is in range 2");
        assert_eq!(p(vec![(CmpOp::Gt, c(299))]), vec![2, 3]);
        assert_eq!(p(vec![(CmpOp::Lt, c(-5))]), vec![0]);
        assert_eq!(p(vec![(CmpOp::GtEq, c(1000))]), vec![3]);
        // Contradictions still run on one partition (no rows).
        assert_eq!(p(vec![(CmpOp::Gt, c(250)), (CmpOp::Lt, c(120))]).len(), 1);
        // Values of another kind narrow nothing.
        let float = vec![(CmpOp::Lt, Expr::Constant(Value::Float(10.5)))];
        assert_eq!(p(float), vec![0, 1, 2, 3]);
        // Parameters are read at run time; a missing one narrows nothing.
        let param = prune(vec![(CmpOp::GtEq, Expr::Parameter(0))]);
        assert_eq!(param.partitions(&[Value::Integer(250)], 4), vec![2, 3]);
        assert_eq!(param.partitions(&[], 4), vec![0, 1, 2, 3]);
        // Fewer partitions than ranges: range i on partition i mod P.
        assert_eq!(prune(vec![(CmpOp::GtEq, c(200))]).partitions(&[], 2), vec![0, 1]);
        assert_eq!(prune(vec![(CmpOp::Eq, c(350))]).partitions(&[], 2), vec![1]);
        assert_eq!(prune(vec![(CmpOp::Eq, c(50))]).partitions(&[], 2), vec![0]);
        // Named partitions: ranges 0..=3 on partitions 2, 2, 0, 3.
        let named = |limits| RangePrune { owners: Some(vec![2, 2, 0, 3].into()), ..prune(limits) };
        assert_eq!(named(vec![(CmpOp::Lt, c(200))]).partitions(&[], 4), vec![2]);
        assert_eq!(named(vec![(CmpOp::GtEq, c(150))]).partitions(&[], 4), vec![0, 2, 3]);
        assert_eq!(named(vec![(CmpOp::Eq, c(250)), (CmpOp::Eq, c(260))]).partitions(&[], 4), vec![0]);
    }
}
