//! The rule-based optimizer.
//!
//! The binder produces a naive plan (cross joins under one big filter); the
//! optimizer rewrites it in three passes:
//!
//! 1. **Predicate pushdown.** A filter is split into AND-ed conjuncts and
//!    each conjunct moves as far down as it can: into a table scan's filter,
//!    into the side of a join whose columns it reads, or into the join's own
//!    predicate. Outer joins only accept what keeps their NULL-extension
//!    semantics. A conjunct holding a correlated subquery moves only where
//!    the row it sees keeps the same column positions: it stays at the join.
//! 2. **Access paths.** For each scan, conjuncts of the form `col = c`,
//!    `col IN (c, ...)` and `col < c` (etc.) against an index's leading
//!    columns become an index lookup, where `c` is constant for one execution
//!    (a literal, a parameter or an outer column). A unique index fully
//!    matched by equalities wins, then the longest equality prefix, then IN,
//!    then a range. Conjuncts an index answers exactly leave the filter.
//! 3. **Join methods.** An inner or left join with equality conjuncts
//!    between its sides becomes an index nested-loop join when the right
//!    side is a table with an index on those columns, else a hash join.
//!    Inner join chains are reordered greedily so that the most selective
//!    table (one pinned by an indexed equality) drives the join.

use crate::catalog::{Catalog, IndexKind, TableDef};
use crate::expr::{CmpOp, Expr};
use crate::plan::{Access, IndexLookup, JoinKind, Plan};

/// Optimize a plan (and the plans of its subqueries).
pub fn optimize(plan: Plan, catalog: &Catalog) -> Plan {
    optimize_for(plan, catalog, false)
}

/// Optimize; for `multi_partition` execution, the top-level plan keeps its
/// sorts (an index orders rows only within one partition).
pub fn optimize_for(plan: Plan, catalog: &Catalog, multi_partition: bool) -> Plan {
    let plan = optimize_subqueries(plan, catalog);
    let plan = pushdown(plan, Vec::new(), catalog);
    let plan = reorder_joins(plan, catalog);
    let plan = access_paths(plan, catalog);
    if multi_partition {
        plan
    } else {
        order_by_index(plan, catalog)
    }
}

/// Drop a sort that an index already provides: ORDER BY plain columns of
/// one table (all ascending with NULLs first, or all descending with NULLs
/// last) over a scan, when a tree index's columns — after any equality
/// prefix of the scan's own lookup — are those columns in that order. The
/// scan then walks the index, forward or reversed, and a LIMIT above stops
/// it after the rows it needs.
fn order_by_index(plan: Plan, catalog: &Catalog) -> Plan {
    let plan = map_inputs(plan, &mut |p| order_by_index(p, catalog));
    let Plan::Sort { input, keys } = plan else { return plan };
    let rewritten = (|| {
        let Plan::Project { input: scan, exprs } = input.as_ref() else { return None };
        let Plan::Scan { table, access, filter } = scan.as_ref() else { return None };
        let t = catalog.table_by_id(*table)?;
        let descending = keys.first()?.descending;
        let mut cols = Vec::new();
        for k in &keys {
            if k.descending != descending || k.nulls_first == descending {
                return None;
            }
            let Expr::Column(out) = k.expr else { return None };
            let Expr::Column(c) = exprs.get(out)? else { return None };
            cols.push(*c);
        }
        let matches_at = |index: &crate::catalog::IndexDef, start: usize| {
            index.kind == IndexKind::Tree && index.columns.get(start..start + cols.len()) == Some(cols.as_slice())
        };
        let access = match access {
            Access::Full => {
                let ix = t.indexes.iter().position(|i| matches_at(i, 0))?;
                Access::Index { index: ix, lookup: IndexLookup::All, reverse: descending }
            }
            Access::Index { index, lookup, .. } => {
                let idef = t.indexes.get(*index)?;
                let prefix = match lookup {
                    IndexLookup::Eq(k) => k.len(),
                    IndexLookup::Range { prefix, .. } => prefix.len(),
                    IndexLookup::All => 0,
                    IndexLookup::In(_) => return None,
                };
                if !(matches_at(idef, 0) || matches_at(idef, prefix)) {
                    return None;
                }
                Access::Index { index: *index, lookup: lookup.clone(), reverse: descending }
            }
        };
        let scan = Plan::Scan { table: *table, access, filter: filter.clone() };
        Some(Plan::Project { input: Box::new(scan), exprs: exprs.clone() })
    })();
    match rewritten {
        Some(p) => p,
        None => Plan::Sort { input, keys },
    }
}

/// Number of columns a plan produces.
pub fn width(plan: &Plan, catalog: &Catalog) -> usize {
    match plan {
        Plan::Scan { table, .. } => catalog.table_by_id(*table).map_or(0, |t| t.columns.len()),
        Plan::Values { width, .. } | Plan::Input { width, .. } => *width,
        Plan::Project { exprs, .. } => exprs.len(),
        Plan::NestedLoopJoin { left, right, .. } | Plan::HashJoin { left, right, .. } => {
            width(left, catalog) + width(right, catalog)
        }
        Plan::IndexJoin { left, table, .. } => {
            width(left, catalog) + catalog.table_by_id(*table).map_or(0, |t| t.columns.len())
        }
        Plan::Aggregate { group_by, aggregates, .. } => group_by.len() + aggregates.len(),
        Plan::Filter { input, .. }
        | Plan::Sort { input, .. }
        | Plan::Limit { input, .. }
        | Plan::Distinct { input } => width(input, catalog),
        Plan::SetOp { left, .. } => width(left, catalog),
    }
}

fn has_subquery(e: &Expr) -> bool {
    let mut found = false;
    e.walk(&mut |x| found |= matches!(x, Expr::ScalarSubquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. }));
    found
}

fn optimize_expr(e: Expr, catalog: &Catalog) -> Expr {
    e.transform(&mut |x| match x {
        Expr::ScalarSubquery(p) => Expr::ScalarSubquery(Box::new(optimize(*p, catalog))),
        Expr::Exists { plan, negated } => Expr::Exists { plan: Box::new(optimize(*plan, catalog)), negated },
        Expr::InSubquery { expr, plan, negated } => {
            Expr::InSubquery { expr, plan: Box::new(optimize(*plan, catalog)), negated }
        }
        x => x,
    })
}

fn optimize_subqueries(plan: Plan, catalog: &Catalog) -> Plan {
    let oe = |e: Expr| optimize_expr(e, catalog);
    let rec = |p: Box<Plan>| Box::new(optimize_subqueries(*p, catalog));
    match plan {
        Plan::Scan { table, access, filter } => Plan::Scan { table, access, filter: filter.map(oe) },
        Plan::Values { rows, width } => {
            Plan::Values { rows: rows.into_iter().map(|r| r.into_iter().map(oe).collect()).collect(), width }
        }
        Plan::Filter { input, predicate } => Plan::Filter { input: rec(input), predicate: oe(predicate) },
        Plan::Project { input, exprs } => {
            Plan::Project { input: rec(input), exprs: exprs.into_iter().map(oe).collect() }
        }
        Plan::NestedLoopJoin { left, right, kind, predicate } => {
            Plan::NestedLoopJoin { left: rec(left), right: rec(right), kind, predicate: predicate.map(oe) }
        }
        Plan::Aggregate { input, group_by, aggregates } => Plan::Aggregate {
            input: rec(input),
            group_by: group_by.into_iter().map(oe).collect(),
            aggregates: aggregates
                .into_iter()
                .map(|mut a| {
                    a.arg = a.arg.map(oe);
                    a
                })
                .collect(),
        },
        Plan::Sort { input, keys } => Plan::Sort {
            input: rec(input),
            keys: keys
                .into_iter()
                .map(|mut k| {
                    k.expr = oe(k.expr);
                    k
                })
                .collect(),
        },
        Plan::Limit { input, limit, offset } => Plan::Limit { input: rec(input), limit, offset },
        Plan::Distinct { input } => Plan::Distinct { input: rec(input) },
        Plan::SetOp { kind, all, left, right } => Plan::SetOp { kind, all, left: rec(left), right: rec(right) },
        other => other,
    }
}

fn wrap_filter(plan: Plan, preds: Vec<Expr>) -> Plan {
    match Expr::conjunction(preds) {
        Some(predicate) => Plan::Filter { input: Box::new(plan), predicate },
        None => plan,
    }
}

/// Where a conjunct's columns lie relative to a join split at `lw`.
enum Side {
    Left,
    Right,
    Both,
}

fn side(e: &Expr, lw: usize) -> Side {
    // A subquery may read any column of the row it is evaluated on (its
    // correlated references are inside its own plan): keep it where the
    // whole row is.
    if has_subquery(e) {
        return Side::Both;
    }
    let cols = e.columns();
    if cols.iter().all(|c| *c < lw) {
        Side::Left
    } else if cols.iter().all(|c| *c >= lw) {
        Side::Right
    } else {
        Side::Both
    }
}

fn pushdown(plan: Plan, mut preds: Vec<Expr>, catalog: &Catalog) -> Plan {
    match plan {
        Plan::Filter { input, predicate } => {
            preds.extend(predicate.into_conjuncts());
            pushdown(*input, preds, catalog)
        }
        Plan::Scan { table, access, filter } => {
            if let Some(f) = filter {
                preds.extend(f.into_conjuncts());
            }
            Plan::Scan { table, access, filter: Expr::conjunction(preds) }
        }
        Plan::NestedLoopJoin { left, right, kind, predicate } => {
            let lw = width(&left, catalog);
            let (mut to_left, mut to_right, mut at_join, mut above) = (vec![], vec![], vec![], vec![]);
            let on: Vec<Expr> = predicate.map(|p| p.into_conjuncts()).unwrap_or_default();
            match kind {
                JoinKind::Inner => {
                    for p in preds.into_iter().chain(on) {
                        match side(&p, lw) {
                            Side::Left => to_left.push(p),
                            Side::Right => to_right.push(p.shift_columns(-(lw as isize))),
                            Side::Both => at_join.push(p),
                        }
                    }
                }
                JoinKind::Left => {
                    for p in preds {
                        match side(&p, lw) {
                            Side::Left if !p.columns().is_empty() => to_left.push(p),
                            _ => above.push(p),
                        }
                    }
                    for p in on {
                        match side(&p, lw) {
                            Side::Right if !p.columns().is_empty() => to_right.push(p.shift_columns(-(lw as isize))),
                            _ => at_join.push(p),
                        }
                    }
                }
                JoinKind::Right | JoinKind::Full => {
                    above = preds;
                    at_join = on;
                }
            }
            let left = pushdown(*left, to_left, catalog);
            let right = pushdown(*right, to_right, catalog);
            let join = Plan::NestedLoopJoin {
                left: Box::new(left),
                right: Box::new(right),
                kind,
                predicate: Expr::conjunction(at_join),
            };
            wrap_filter(join, above)
        }
        other => {
            let plan = map_inputs(other, &mut |p| pushdown(p, Vec::new(), catalog));
            wrap_filter(plan, preds)
        }
    }
}

/// Rebuild a plan with each direct input transformed by `f`.
fn map_inputs(plan: Plan, f: &mut dyn FnMut(Plan) -> Plan) -> Plan {
    let mut g = |p: Box<Plan>| Box::new(f(*p));
    match plan {
        Plan::Filter { input, predicate } => Plan::Filter { input: g(input), predicate },
        Plan::Project { input, exprs } => Plan::Project { input: g(input), exprs },
        Plan::Aggregate { input, group_by, aggregates } => Plan::Aggregate { input: g(input), group_by, aggregates },
        Plan::Sort { input, keys } => Plan::Sort { input: g(input), keys },
        Plan::Limit { input, limit, offset } => Plan::Limit { input: g(input), limit, offset },
        Plan::Distinct { input } => Plan::Distinct { input: g(input) },
        Plan::SetOp { kind, all, left, right } => {
            let left = g(left);
            Plan::SetOp { kind, all, left, right: g(right) }
        }
        Plan::NestedLoopJoin { left, right, kind, predicate } => {
            let left = g(left);
            Plan::NestedLoopJoin { left, right: g(right), kind, predicate }
        }
        Plan::HashJoin { left, right, kind, left_keys, right_keys, residual } => {
            let left = g(left);
            Plan::HashJoin { left, right: g(right), kind, left_keys, right_keys, residual }
        }
        Plan::IndexJoin { left, table, index, keys, kind, residual } => {
            Plan::IndexJoin { left: g(left), table, index, keys, kind, residual }
        }
        leaf => leaf,
    }
}

/// How selective a scan looks: higher drives a join better.
fn scan_selectivity(plan: &Plan, catalog: &Catalog) -> u32 {
    let Plan::Scan { table, filter: Some(f), .. } = plan else { return 0 };
    let Some(t) = catalog.table_by_id(*table) else { return 0 };
    let conjuncts = f.clone().into_conjuncts();
    let (lookup, _, _) = best_index(t, &conjuncts);
    match lookup {
        Some((score, _)) => score,
        None => 1,
    }
}

/// Reorder a left-deep chain of inner joins greedily: start from the most
/// selective input (one pinned by an indexed equality), then keep adding
/// the input best connected to what is joined so far (an equality on an
/// indexed column of the new input first, then any join condition, then a
/// cross product). The original column order is restored by a projection
/// on top, and join conditions are pushed down again into the new shape.
/// Chains whose conditions hold subqueries keep their order: a correlated
/// subquery's references are positional.
fn reorder_joins(plan: Plan, catalog: &Catalog) -> Plan {
    let plan = map_inputs(plan, &mut |p| reorder_joins(p, catalog));
    if !matches!(plan, Plan::NestedLoopJoin { kind: JoinKind::Inner, .. }) {
        return plan;
    }
    // Flatten the left spine: leaves in column order, conditions in the
    // root's column numbering (every left subtree's row is a prefix).
    let mut leaves = Vec::new();
    let mut conjuncts = Vec::new();
    let mut node = plan;
    loop {
        match node {
            Plan::NestedLoopJoin { left, right, kind: JoinKind::Inner, predicate }
                if predicate.as_ref().is_none_or(|p| !has_subquery(p)) =>
            {
                leaves.push(*right);
                conjuncts.extend(predicate.map(|p| p.into_conjuncts()).unwrap_or_default());
                node = *left;
            }
            other => {
                leaves.push(other);
                break;
            }
        }
    }
    leaves.reverse();
    let widths: Vec<usize> = leaves.iter().map(|l| width(l, catalog)).collect();
    let offsets: Vec<usize> = widths.iter().scan(0, |acc, w| Some(std::mem::replace(acc, *acc + w))).collect();
    let leaf_of = |col: usize| offsets.iter().rposition(|o| *o <= col).unwrap_or(0);
    // Greedy order.
    let n = leaves.len();
    let mut order: Vec<usize> = Vec::with_capacity(n);
    let first = (0..n).max_by_key(|i| (scan_selectivity(&leaves[*i], catalog), std::cmp::Reverse(*i))).unwrap_or(0);
    order.push(first);
    while order.len() < n {
        let score = |cand: usize| -> u32 {
            let mut best = 0;
            for c in &conjuncts {
                let leaves_used: Vec<usize> = c.columns().into_iter().map(leaf_of).collect();
                if !leaves_used.contains(&cand) || !leaves_used.iter().all(|l| *l == cand || order.contains(l)) {
                    continue;
                }
                if leaves_used.iter().all(|l| *l == cand) {
                    continue;
                }
                let indexed = match (c, &leaves[cand]) {
                    (Expr::Compare(CmpOp::Eq, a, b), Plan::Scan { table, .. }) => [a, b].iter().any(|side| {
                        matches!(side.as_ref(), Expr::Column(col) if leaf_of(*col) == cand
                            && catalog.table_by_id(*table).is_some_and(|t| t.indexes.iter().any(|i| i.columns.first() == Some(&(col - offsets[cand])))))
                    }),
                    _ => false,
                };
                best = best.max(if indexed { 3 } else { 2 });
            }
            best.max(1)
        };
        let next =
            (0..n).filter(|i| !order.contains(i)).max_by_key(|i| (score(*i), std::cmp::Reverse(*i))).unwrap_or(0);
        order.push(next);
    }
    let identity = order.iter().enumerate().all(|(i, o)| i == *o);
    // Map old column -> new column.
    let mut new_offsets = vec![0; n];
    let mut acc = 0;
    for &leaf in &order {
        new_offsets[leaf] = acc;
        acc += widths[leaf];
    }
    let remap = |c: usize| {
        let l = leaf_of(c);
        new_offsets[l] + (c - offsets[l])
    };
    let conjuncts: Vec<Expr> = conjuncts
        .into_iter()
        .map(|e| {
            e.transform(&mut |x| match x {
                Expr::Column(c) if !identity => Expr::Column(remap(c)),
                x => x,
            })
        })
        .collect();
    let mut leaves: Vec<Option<Plan>> = leaves.into_iter().map(Some).collect();
    let mut tree: Option<Plan> = None;
    for &leaf in &order {
        let p = leaves[leaf].take().unwrap_or(Plan::Values { rows: vec![], width: widths[leaf] });
        tree = Some(match tree {
            None => p,
            Some(t) => {
                Plan::NestedLoopJoin { left: Box::new(t), right: Box::new(p), kind: JoinKind::Inner, predicate: None }
            }
        });
    }
    let tree = tree.unwrap_or(Plan::Values { rows: vec![vec![]], width: 0 });
    let tree = pushdown(tree, conjuncts, catalog);
    if identity {
        return tree;
    }
    let total: usize = widths.iter().sum();
    Plan::Project { input: Box::new(tree), exprs: (0..total).map(|c| Expr::Column(remap(c))).collect() }
}

fn access_paths(plan: Plan, catalog: &Catalog) -> Plan {
    let plan = map_inputs(plan, &mut |p| access_paths(p, catalog));
    match plan {
        Plan::Scan { table, access: Access::Full, filter: Some(f) } => {
            let Some(t) = catalog.table_by_id(table) else {
                return Plan::Scan { table, access: Access::Full, filter: Some(f) };
            };
            let conjuncts = f.into_conjuncts();
            let (best, used, conjuncts) = best_index(t, &conjuncts);
            match best {
                Some((_, access)) => {
                    let rest: Vec<Expr> =
                        conjuncts.into_iter().enumerate().filter(|(i, _)| !used.contains(i)).map(|(_, c)| c).collect();
                    Plan::Scan { table, access, filter: Expr::conjunction(rest) }
                }
                None => Plan::Scan { table, access: Access::Full, filter: Expr::conjunction(conjuncts) },
            }
        }
        Plan::NestedLoopJoin { left, right, kind: kind @ (JoinKind::Inner | JoinKind::Left), predicate: Some(p) } => {
            join_method(*left, *right, kind, p, catalog)
        }
        other => other,
    }
}

/// `col op constant` with the column on the left.
fn column_comparison(e: &Expr) -> Option<(usize, CmpOp, &Expr)> {
    match e {
        Expr::Compare(op, a, b) => match (a.as_ref(), b.as_ref()) {
            (Expr::Column(c), v) if v.is_constant() => Some((*c, *op, v)),
            (v, Expr::Column(c)) if v.is_constant() => Some((*c, op.flip(), v)),
            _ => None,
        },
        _ => None,
    }
}

/// Pick the best index for a scan's conjuncts: (score, access), the
/// conjuncts it consumes, and the conjuncts (returned for reuse).
#[allow(clippy::type_complexity)]
fn best_index(t: &TableDef, conjuncts: &[Expr]) -> (Option<(u32, Access)>, Vec<usize>, Vec<Expr>) {
    let mut best: Option<(u32, Access, Vec<usize>)> = None;
    for (ix, index) in t.indexes.iter().enumerate() {
        let mut keys = Vec::new();
        let mut used = Vec::new();
        for col in &index.columns {
            let found = conjuncts.iter().enumerate().find_map(|(i, c)| match column_comparison(c) {
                Some((cc, CmpOp::Eq, v)) if cc == *col => Some((i, v.clone())),
                _ => None,
            });
            match found {
                Some((i, v)) => {
                    keys.push(v);
                    used.push(i);
                }
                None => break,
            }
        }
        let full = keys.len() == index.columns.len();
        let candidate = if full {
            let score = if index.unique { 100 } else { 50 + keys.len() as u32 };
            Some((score, IndexLookup::Eq(keys), used))
        } else if index.kind == IndexKind::Hash {
            None
        } else {
            // Range on the next column after an equality prefix.
            let next = index.columns[keys.len()];
            let mut lower = None;
            let mut upper = None;
            let mut range_used = used.clone();
            for (i, c) in conjuncts.iter().enumerate() {
                if let Some((cc, op, v)) = column_comparison(c) {
                    if cc != next {
                        continue;
                    }
                    match op {
                        CmpOp::Gt | CmpOp::GtEq if lower.is_none() => {
                            lower = Some((v.clone(), op == CmpOp::GtEq));
                            range_used.push(i);
                        }
                        CmpOp::Lt | CmpOp::LtEq if upper.is_none() => {
                            upper = Some((v.clone(), op == CmpOp::LtEq));
                            range_used.push(i);
                        }
                        _ => {}
                    }
                }
            }
            let in_list = if keys.is_empty() {
                conjuncts.iter().enumerate().find_map(|(i, c)| match c {
                    Expr::InList { expr, list, negated: false }
                        if matches!(expr.as_ref(), Expr::Column(cc) if *cc == next)
                            && list.iter().all(Expr::is_constant) =>
                    {
                        Some((i, list.clone()))
                    }
                    _ => None,
                })
            } else {
                None
            };
            if lower.is_some() || upper.is_some() {
                let score = 10 + 2 * keys.len() as u32 + u32::from(lower.is_some() && upper.is_some());
                Some((score, IndexLookup::Range { prefix: keys, lower, upper }, range_used))
            } else if let Some((i, list)) = in_list {
                Some((8, IndexLookup::In(list), vec![i]))
            } else if !keys.is_empty() {
                Some((20 + keys.len() as u32, IndexLookup::Eq(keys), used))
            } else {
                None
            }
        };
        if let Some((score, lookup, used)) = candidate {
            if best.as_ref().is_none_or(|(s, _, _)| score > *s) {
                best = Some((score, Access::Index { index: ix, lookup, reverse: false }, used));
            }
        }
    }
    match best {
        Some((s, a, used)) => (Some((s, a)), used, conjuncts.to_vec()),
        None => (None, vec![], conjuncts.to_vec()),
    }
}

fn best_ix(best: &Option<(usize, Vec<usize>, bool)>) -> usize {
    best.as_ref().map_or(0, |b| b.0)
}

fn join_method(left: Plan, right: Plan, kind: JoinKind, predicate: Expr, catalog: &Catalog) -> Plan {
    let lw = width(&left, catalog);
    let mut left_keys = Vec::new();
    let mut right_keys = Vec::new();
    let mut residual = Vec::new();
    for c in predicate.into_conjuncts() {
        if let Expr::Compare(CmpOp::Eq, a, b) = &c {
            let (sa, sb) = (side(a, lw), side(b, lw));
            let usable = |e: &Expr| !e.columns().is_empty() && !has_subquery(e);
            if usable(a) && usable(b) {
                match (sa, sb) {
                    (Side::Left, Side::Right) => {
                        left_keys.push((**a).clone());
                        right_keys.push((**b).clone().shift_columns(-(lw as isize)));
                        continue;
                    }
                    (Side::Right, Side::Left) => {
                        left_keys.push((**b).clone());
                        right_keys.push((**a).clone().shift_columns(-(lw as isize)));
                        continue;
                    }
                    _ => {}
                }
            }
        }
        residual.push(c);
    }
    if left_keys.is_empty() {
        return Plan::NestedLoopJoin {
            left: Box::new(left),
            right: Box::new(right),
            kind,
            predicate: Expr::conjunction(residual),
        };
    }
    // Index nested loop: the right side is a plain scan and an index's
    // columns are all equated with left-side keys.
    if let Plan::Scan { table, access: Access::Full, filter } = &right {
        if let Some(t) = catalog.table_by_id(*table) {
            // The index whose leading columns are all equated with left
            // keys, longest match first (a hash index needs every column).
            let mut best: Option<(usize, Vec<usize>, bool)> = None;
            for (ix, index) in t.indexes.iter().enumerate() {
                let positions: Vec<usize> = index
                    .columns
                    .iter()
                    .map_while(|col| right_keys.iter().position(|k| *k == Expr::Column(*col)))
                    .collect();
                let full = positions.len() == index.columns.len();
                if positions.is_empty() || (!full && index.kind == IndexKind::Hash) {
                    continue;
                }
                let better = best.as_ref().is_none_or(|(_, bp, bfull)| {
                    (full && index.unique, positions.len()) > (*bfull && t.indexes[best_ix(&best)].unique, bp.len())
                });
                if better {
                    best = Some((ix, positions, full));
                }
            }
            let best = best.map(|(ix, p, _)| (ix, p));
            if let Some((index, positions)) = best {
                let keys = positions.iter().map(|p| left_keys[*p].clone()).collect();
                let mut rest = residual;
                for (i, (lk, rk)) in left_keys.into_iter().zip(right_keys).enumerate() {
                    if !positions.contains(&i) {
                        rest.push(Expr::compare(CmpOp::Eq, lk, rk.shift_columns(lw as isize)));
                    }
                }
                if let Some(f) = filter {
                    rest.push(f.clone().shift_columns(lw as isize));
                }
                return Plan::IndexJoin {
                    left: Box::new(left),
                    table: *table,
                    index,
                    keys,
                    kind,
                    residual: Expr::conjunction(rest),
                };
            }
        }
    }
    Plan::HashJoin {
        left: Box::new(left),
        right: Box::new(right),
        kind,
        left_keys,
        right_keys,
        residual: Expr::conjunction(residual),
    }
}
