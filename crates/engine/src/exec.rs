//! Plan executors: each plan node becomes an iterator of rows.
//!
//! Execution is pull-based, one row at a time, so `LIMIT` stops a scan early
//! and a point lookup touches one row. Nodes that must see all their input
//! (sorts, aggregates, hash-join build sides, set operations) gather it
//! first. Every node runs inside one partition's single thread, so nothing
//! here locks.
//!
//! Two paths avoid copying stored rows: a projection or aggregate directly
//! over a table scan evaluates its expressions on the stored row in place,
//! and only the projected values are copied out. This is what makes point
//! lookups and full-table aggregates cheap.
//!
//! Output order is deterministic: scans follow storage or index order,
//! grouping and DISTINCT keep first-seen order or sort by key, and hash
//! tables use a fixed hasher, because replicas and command-log replay must
//! compute the same results from the same inputs.

use crate::eval::{compare_for_sort, eval, eval_ref, holds, Context};
use crate::storage::{RowId, Table};
use joule_common::{bail, err, Result, Row, Value};
use joule_sql::expr::{AggCall, AggKind, Expr};
use joule_sql::plan::{Access, IndexLookup, JoinKind, Plan, SetOpKind, SortKey};
use std::hash::BuildHasherDefault;
use std::ops::Bound;

/// A stream of result rows.
pub type Rows<'a> = Box<dyn Iterator<Item = Result<Row>> + 'a>;

/// A hasher with a fixed seed: same inputs, same layout, every run.
pub type FixedState = BuildHasherDefault<std::collections::hash_map::DefaultHasher>;
pub type FixedMap<K, V> = hashbrown::HashMap<K, V, FixedState>;

/// Evaluate a projection on one row. Plain column references (the common
/// case) are copied without going through the evaluator.
#[inline]
pub fn project(exprs: &[Expr], row: &[Value], ctx: &Context) -> Result<Row> {
    let mut out = Vec::with_capacity(exprs.len());
    for e in exprs {
        out.push(match e {
            Expr::Column(i) => row.get(*i).cloned().ok_or_else(|| err!(Internal, "column #{i} out of range"))?,
            e => eval(e, row, ctx)?,
        });
    }
    Ok(out)
}

/// Execute a plan and gather its rows. Projections over scans (point
/// lookups, index ranges) run as one tight loop with no boxed iterators.
pub fn collect(plan: &Plan, ctx: &Context) -> Result<Vec<Row>> {
    if let Plan::Project { input, exprs } = plan {
        if let Plan::Scan { table, access, filter } = input.as_ref() {
            let t = ctx.storage.table(*table)?;
            // A unique lookup on one key column: no key vector, no iterator.
            if let (Access::Index { index, lookup: IndexLookup::Eq(keys), .. }, None) = (access, filter) {
                let def = t.def();
                if let (Some(idx), [key]) = (def.indexes.get(*index), keys.as_slice()) {
                    if idx.unique && idx.columns.len() == 1 {
                        let ty = def.columns[idx.columns[0]].data_type;
                        let Some(k) = coerce_key(eval(key, &[], ctx)?, ty)? else { return Ok(Vec::new()) };
                        return match t.index_get_unique(*index, std::slice::from_ref(&k)).and_then(|id| t.get(id)) {
                            Some(row) => Ok(vec![project(exprs, row, ctx)?]),
                            None => Ok(Vec::new()),
                        };
                    }
                }
            }
            let mut out = Vec::new();
            for r in scan(t, access, filter.as_ref(), *ctx)? {
                let (_, row) = r?;
                out.push(project(exprs, row, ctx)?);
            }
            return Ok(out);
        }
    }
    execute(plan, ctx)?.collect()
}

/// Execute a plan.
pub fn execute<'a>(plan: &'a Plan, ctx: &Context<'a>) -> Result<Rows<'a>> {
    let ctx = *ctx;
    Ok(match plan {
        Plan::Scan { table, access, filter } => {
            let t = ctx.storage.table(*table)?;
            Box::new(scan(t, access, filter.as_ref(), ctx)?.map(|r| r.map(|(_, row)| row.clone())))
        }
        Plan::Values { rows, .. } => {
            Box::new(rows.iter().map(move |r| r.iter().map(|e| eval(e, &[], &ctx)).collect::<Result<Row>>()))
        }
        Plan::Filter { input, predicate } => {
            let inner = execute(input, &ctx)?;
            Box::new(inner.filter_map(move |r| match r {
                Ok(row) => match holds(predicate, &row, &ctx) {
                    Ok(true) => Some(Ok(row)),
                    Ok(false) => None,
                    Err(e) => Some(Err(e)),
                },
                Err(e) => Some(Err(e)),
            }))
        }
        Plan::Project { input, exprs } => {
            if let Plan::Scan { table, access, filter } = input.as_ref() {
                // Evaluate on the stored row in place.
                let t = ctx.storage.table(*table)?;
                let rows = scan(t, access, filter.as_ref(), ctx)?;
                return Ok(Box::new(rows.map(move |r| r.and_then(|(_, row)| project(exprs, row, &ctx)))));
            }
            let inner = execute(input, &ctx)?;
            Box::new(inner.map(move |r| r.and_then(|row| project(exprs, &row, &ctx))))
        }
        Plan::NestedLoopJoin { left, right, kind, predicate } => {
            let right_rows: Vec<Row> = execute(right, &ctx)?.collect::<Result<_>>()?;
            let right_width = right_width_of(right, &right_rows, ctx)?;
            let left_rows = execute(left, &ctx)?;
            Box::new(
                nested_loop(left_rows, right_rows, right_width, *kind, predicate.as_ref(), ctx)?.into_iter().map(Ok),
            )
        }
        Plan::HashJoin { left, right, kind, left_keys, right_keys, residual } => {
            let right_rows: Vec<Row> = execute(right, &ctx)?.collect::<Result<_>>()?;
            let right_width = right_width_of(right, &right_rows, ctx)?;
            let mut table: FixedMap<Vec<Value>, Vec<usize>> = FixedMap::default();
            for (i, r) in right_rows.iter().enumerate() {
                let key = right_keys.iter().map(|k| eval(k, r, &ctx)).collect::<Result<Vec<_>>>()?;
                if key.iter().any(Value::is_null) {
                    continue;
                }
                table.entry(key).or_default().push(i);
            }
            let mut out = Vec::new();
            for l in execute(left, &ctx)? {
                let l = l?;
                let key = left_keys.iter().map(|k| eval(k, &l, &ctx)).collect::<Result<Vec<_>>>()?;
                let ids: &[usize] =
                    if key.iter().any(Value::is_null) { &[] } else { table.get(&key).map_or(&[], |v| v.as_slice()) };
                let candidates = ids.iter().map(|&i| Ok(&right_rows[i]));
                join_row(&l, candidates, residual.as_ref(), *kind, right_width, ctx, &mut out)?;
            }
            Box::new(out.into_iter().map(Ok))
        }
        Plan::IndexJoin { left, table, index, keys, kind, residual } => {
            let t = ctx.storage.table(*table)?;
            let right_width = t.def().columns.len();
            let mut out = Vec::new();
            let key_types: Vec<_> =
                t.def().indexes[*index].columns.iter().map(|c| t.def().columns[*c].data_type).collect();
            for l in execute(left, &ctx)? {
                let l = l?;
                let mut key = Vec::with_capacity(keys.len());
                let mut null_key = false;
                for (k, ty) in keys.iter().zip(&key_types) {
                    match coerce_key(eval(k, &l, &ctx)?, *ty)? {
                        Some(v) => key.push(v),
                        None => null_key = true,
                    }
                }
                let ids = if null_key { None } else { Some(t.index_eq(*index, &key)?) };
                let candidates = ids.into_iter().flatten().filter_map(|id| t.get(id)).map(Ok);
                join_row(&l, candidates, residual.as_ref(), *kind, right_width, ctx, &mut out)?;
            }
            Box::new(out.into_iter().map(Ok))
        }
        Plan::Aggregate { input, group_by, aggregates } => {
            Box::new(aggregate(input, group_by, aggregates, ctx)?.into_iter().map(Ok))
        }
        Plan::Sort { input, keys } => {
            let rows: Vec<Row> = execute(input, &ctx)?.collect::<Result<_>>()?;
            Box::new(sort_rows(rows, keys, ctx)?.into_iter().map(Ok))
        }
        Plan::Limit { input, limit, offset } => {
            let count = |e: &Option<Expr>, what: &str| -> Result<Option<usize>> {
                match e.as_ref().map(|e| eval(e, &[], &ctx)).transpose()? {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::Integer(n)) if n >= 0 => Ok(Some(n as usize)),
                    Some(v) => bail!(InvalidArgument, "{what} must be a non-negative integer, not {v}"),
                }
            };
            let (limit, offset) = (count(limit, "LIMIT")?, count(offset, "OFFSET")?.unwrap_or(0));
            let inner = execute(input, &ctx)?.skip(offset);
            match limit {
                Some(n) => Box::new(inner.take(n)),
                None => Box::new(inner),
            }
        }
        Plan::Distinct { input } => {
            let mut seen: hashbrown::HashSet<Row, FixedState> = Default::default();
            let mut out = Vec::new();
            for r in execute(input, &ctx)? {
                let r = r?;
                if seen.insert(r.clone()) {
                    out.push(r);
                }
            }
            Box::new(out.into_iter().map(Ok))
        }
        Plan::SetOp { kind, all, left, right } => Box::new(set_op(*kind, *all, left, right, ctx)?.into_iter().map(Ok)),
        Plan::Input { slot, .. } => {
            let rows = ctx.inputs.get(*slot).ok_or_else(|| err!(Internal, "plan input {slot} was not supplied"))?;
            Box::new(rows.iter().map(|r| Ok(r.clone())))
        }
    })
}

/// Join one left row with its candidate right rows: emit each combination
/// the residual predicate accepts, or (LEFT JOIN) the NULL-extended left row
/// when none does.
fn join_row<'r>(
    l: &[Value],
    candidates: impl Iterator<Item = Result<&'r Row>>,
    residual: Option<&Expr>,
    kind: JoinKind,
    right_width: usize,
    ctx: Context,
    out: &mut Vec<Row>,
) -> Result<()> {
    let mut matched = false;
    for r in candidates {
        let row = concat(l, r?);
        if residual.map_or(Ok(true), |p| holds(p, &row, &ctx))? {
            matched = true;
            out.push(row);
        }
    }
    if !matched && kind == JoinKind::Left {
        out.push(null_extend(l, right_width));
    }
    Ok(())
}

fn right_width_of(right: &Plan, rows: &[Row], ctx: Context) -> Result<usize> {
    Ok(match rows.first() {
        Some(r) => r.len(),
        None => plan_width(right, ctx)?,
    })
}

/// Output width of a plan, from the catalog-free shape of the plan.
fn plan_width(plan: &Plan, ctx: Context) -> Result<usize> {
    Ok(match plan {
        Plan::Scan { table, .. } => ctx.storage.table(*table)?.def().columns.len(),
        Plan::Values { width, .. } | Plan::Input { width, .. } => *width,
        Plan::Project { exprs, .. } => exprs.len(),
        Plan::NestedLoopJoin { left, right, .. } | Plan::HashJoin { left, right, .. } => {
            plan_width(left, ctx)? + plan_width(right, ctx)?
        }
        Plan::IndexJoin { left, table, .. } => plan_width(left, ctx)? + ctx.storage.table(*table)?.def().columns.len(),
        Plan::Aggregate { group_by, aggregates, .. } => group_by.len() + aggregates.len(),
        Plan::Filter { input, .. }
        | Plan::Sort { input, .. }
        | Plan::Limit { input, .. }
        | Plan::Distinct { input } => plan_width(input, ctx)?,
        Plan::SetOp { left, .. } => plan_width(left, ctx)?,
    })
}

fn concat(l: &[Value], r: &[Value]) -> Row {
    let mut row = Vec::with_capacity(l.len() + r.len());
    row.extend_from_slice(l);
    row.extend_from_slice(r);
    row
}

fn null_extend(l: &[Value], width: usize) -> Row {
    let mut row = l.to_vec();
    row.resize(l.len() + width, Value::Null);
    row
}

fn nested_loop(
    left: Rows,
    right: Vec<Row>,
    right_width: usize,
    kind: JoinKind,
    predicate: Option<&Expr>,
    ctx: Context,
) -> Result<Vec<Row>> {
    let mut out = Vec::new();
    let mut right_matched = vec![false; right.len()];
    let mut left_width = None;
    for l in left {
        let l = l?;
        left_width = Some(l.len());
        let mut matched = false;
        for (i, r) in right.iter().enumerate() {
            let row = concat(&l, r);
            if predicate.map_or(Ok(true), |p| holds(p, &row, &ctx))? {
                matched = true;
                right_matched[i] = true;
                out.push(row);
            }
        }
        if !matched && matches!(kind, JoinKind::Left | JoinKind::Full) {
            out.push(null_extend(&l, right_width));
        }
    }
    if matches!(kind, JoinKind::Right | JoinKind::Full) {
        let lw = left_width.unwrap_or(0);
        for (i, r) in right.iter().enumerate() {
            if !right_matched[i] {
                let mut row = vec![Value::Null; lw];
                row.extend_from_slice(r);
                out.push(row);
            }
        }
    }
    Ok(out)
}

/// Bring an index lookup key to the indexed column's kind. NULL matches
/// nothing (`None`).
pub fn coerce_key(v: Value, ty: joule_common::DataType) -> Result<Option<Value>> {
    Ok(match v {
        Value::Null => None,
        v if v.is_number() && ty.is_numeric() => Some(v),
        Value::String(_) if ty == joule_common::DataType::Varchar => Some(v),
        v => match v.cast(ty) {
            Ok(x) => Some(x),
            // Out of the column type's range: nothing can match.
            Err(e) if e.code() == joule_common::ErrorCode::NumericOutOfRange => None,
            Err(e) => return Err(e),
        },
    })
}

type ScanIter<'a> = Box<dyn Iterator<Item = Result<(RowId, &'a Row)>> + 'a>;

/// Rows of a table through an access path, filtered.
pub fn scan<'a>(t: &'a Table, access: &'a Access, filter: Option<&'a Expr>, ctx: Context<'a>) -> Result<ScanIter<'a>> {
    let ids: Box<dyn Iterator<Item = RowId> + 'a> = match access {
        Access::Full => {
            let it = t.scan();
            return Ok(match filter {
                None => Box::new(it.map(Ok)),
                Some(f) => Box::new(it.filter_map(move |(id, row)| match holds(f, row, &ctx) {
                    Ok(true) => Some(Ok((id, row))),
                    Ok(false) => None,
                    Err(e) => Some(Err(e)),
                })),
            });
        }
        Access::Index { index, lookup, reverse } => {
            let def = t.def();
            let idx = def.indexes.get(*index).ok_or_else(|| err!(Internal, "index #{index} missing"))?;
            let ty = |pos: usize| def.columns[idx.columns[pos]].data_type;
            let keys = |exprs: &[Expr]| -> Result<Option<Vec<Value>>> {
                let mut key = Vec::with_capacity(exprs.len());
                for (i, e) in exprs.iter().enumerate() {
                    match coerce_key(eval(e, &[], &ctx)?, ty(i))? {
                        Some(v) => key.push(v),
                        None => return Ok(None),
                    }
                }
                Ok(Some(key))
            };
            match lookup {
                IndexLookup::Eq(exprs) => match keys(exprs)? {
                    None => Box::new(std::iter::empty()),
                    Some(key) if *reverse => {
                        Box::new(t.index_range(*index, &key, Bound::Unbounded, Bound::Unbounded, true)?)
                    }
                    Some(key) if idx.unique && key.len() == idx.columns.len() => {
                        Box::new(t.index_get_unique(*index, &key).into_iter())
                    }
                    Some(key) => Box::new(t.index_eq(*index, &key)?),
                },
                IndexLookup::In(list) => {
                    let mut values = Vec::new();
                    for e in list {
                        match eval(e, &[], &ctx)? {
                            // `x IN ?` with an array parameter.
                            Value::Array(items) => {
                                for item in items.iter() {
                                    values.extend(coerce_key(item.clone(), ty(0))?);
                                }
                            }
                            v => values.extend(coerce_key(v, ty(0))?),
                        }
                    }
                    values.sort();
                    values.dedup();
                    let mut ids = Vec::new();
                    for v in values {
                        ids.extend(t.index_eq(*index, std::slice::from_ref(&v))?);
                    }
                    Box::new(ids.into_iter())
                }
                IndexLookup::Range { prefix, lower, upper } => {
                    let Some(prefix) = keys(prefix)? else { return Ok(Box::new(std::iter::empty())) };
                    let n = prefix.len();
                    let bound = |b: &Option<(Expr, bool)>| -> Result<Option<Bound<Value>>> {
                        Ok(match b {
                            None => Some(Bound::Unbounded),
                            Some((e, inclusive)) => match coerce_key(eval(e, &[], &ctx)?, ty(n))? {
                                None => None,
                                Some(v) if *inclusive => Some(Bound::Included(v)),
                                Some(v) => Some(Bound::Excluded(v)),
                            },
                        })
                    };
                    let (Some(lo), Some(hi)) = (bound(lower)?, bound(upper)?) else {
                        return Ok(Box::new(std::iter::empty()));
                    };
                    Box::new(t.index_range(*index, &prefix, lo.as_ref(), hi.as_ref(), *reverse)?)
                }
                IndexLookup::All => Box::new(t.index_all(*index, *reverse)?),
            }
        }
    };
    Ok(Box::new(ids.filter_map(move |id| {
        let row = t.get(id)?;
        match filter.map_or(Ok(true), |f| holds(f, row, &ctx)) {
            Ok(true) => Some(Ok((id, row))),
            Ok(false) => None,
            Err(e) => Some(Err(e)),
        }
    })))
}

/// A running aggregate.
#[derive(Clone, Debug)]
enum Acc {
    Count(i64),
    Sum(Value),
    MinMax(Value),
    Avg(Value, i64),
    Distinct(std::collections::BTreeSet<Value>),
}

fn new_acc(call: &AggCall) -> Acc {
    match (call.kind, call.distinct) {
        (AggKind::CountStar, _) => Acc::Count(0),
        (_, true) => Acc::Distinct(Default::default()),
        (AggKind::Count, _) => Acc::Count(0),
        (AggKind::Sum, _) => Acc::Sum(Value::Null),
        (AggKind::Min | AggKind::Max, _) => Acc::MinMax(Value::Null),
        (AggKind::Avg, _) => Acc::Avg(Value::Null, 0),
    }
}

fn accumulate(acc: &mut Acc, call: &AggCall, row: &[Value], ctx: &Context) -> Result<()> {
    if call.kind == AggKind::CountStar {
        if let Acc::Count(n) = acc {
            *n += 1;
        }
        return Ok(());
    }
    let Some(arg) = &call.arg else { bail!(Internal, "aggregate without argument") };
    let v = eval_ref(arg, row, ctx)?;
    if v.is_null() {
        return Ok(());
    }
    match acc {
        Acc::Count(n) => *n += 1,
        Acc::Sum(s) => {
            *s = if s.is_null() {
                check_summable(v.into_owned())?
            } else {
                s.arith(joule_common::types::ArithOp::Add, &v)?
            }
        }
        Acc::MinMax(m) => {
            let better = m.is_null()
                || match v.sql_cmp(m)? {
                    Some(o) => (call.kind == AggKind::Min && o.is_lt()) || (call.kind == AggKind::Max && o.is_gt()),
                    None => false,
                };
            if better {
                *m = v.into_owned();
            }
        }
        Acc::Avg(s, n) => {
            *s = if s.is_null() {
                check_summable(v.into_owned())?
            } else {
                s.arith(joule_common::types::ArithOp::Add, &v)?
            };
            *n += 1;
        }
        Acc::Distinct(set) => {
            set.insert(v.into_owned());
        }
    }
    Ok(())
}

fn check_summable(v: Value) -> Result<Value> {
    if !v.is_number() {
        bail!(DatatypeMismatch, "SUM and AVG need numbers, not {}", v.type_name());
    }
    Ok(v)
}

fn finish(acc: Acc, call: &AggCall) -> Result<Value> {
    Ok(match acc {
        Acc::Count(n) => Value::Integer(n),
        Acc::Sum(s) | Acc::MinMax(s) => s,
        Acc::Avg(s, n) => average(s, n)?,
        Acc::Distinct(set) => match call.kind {
            AggKind::Count | AggKind::CountStar => Value::Integer(set.len() as i64),
            AggKind::Min => set.first().cloned().unwrap_or(Value::Null),
            AggKind::Max => set.last().cloned().unwrap_or(Value::Null),
            AggKind::Sum | AggKind::Avg => {
                let n = set.len() as i64;
                let mut sum = Value::Null;
                for v in set {
                    sum = if sum.is_null() {
                        check_summable(v)?
                    } else {
                        sum.arith(joule_common::types::ArithOp::Add, &v)?
                    };
                }
                if call.kind == AggKind::Sum {
                    sum
                } else {
                    average(sum, n)?
                }
            }
        },
    })
}

/// AVG: FLOAT for integer and float inputs, DECIMAL for DECIMAL input.
fn average(sum: Value, n: i64) -> Result<Value> {
    Ok(match sum {
        Value::Null => Value::Null,
        Value::Decimal(d) => Value::Decimal(d.checked_div(joule_common::Decimal::from_i64(n))?),
        Value::Integer(i) => Value::Float(i as f64 / n as f64),
        Value::Float(f) => Value::Float(f / n as f64),
        v => bail!(DatatypeMismatch, "AVG needs numbers, not {}", v.type_name()),
    })
}

fn aggregate(input: &Plan, group_by: &[Expr], aggregates: &[AggCall], ctx: Context) -> Result<Vec<Row>> {
    // Groups keyed by their GROUP BY values; output sorted by key.
    let mut groups: FixedMap<Vec<Value>, Vec<Acc>> = FixedMap::default();
    let mut key_buf: Vec<Value> = Vec::with_capacity(group_by.len());
    let mut feed = |row: &[Value]| -> Result<()> {
        key_buf.clear();
        for g in group_by {
            key_buf.push(eval(g, row, &ctx)?);
        }
        let accs = match groups.get_mut(key_buf.as_slice()) {
            Some(a) => a,
            None => groups.entry(key_buf.clone()).or_insert_with(|| aggregates.iter().map(new_acc).collect()),
        };
        for (acc, call) in accs.iter_mut().zip(aggregates) {
            accumulate(acc, call, row, &ctx)?;
        }
        Ok(())
    };
    if let Plan::Scan { table, access, filter } = input {
        let t = ctx.storage.table(*table)?;
        for r in scan(t, access, filter.as_ref(), ctx)? {
            feed(r?.1)?;
        }
    } else {
        for r in execute(input, &ctx)? {
            feed(&r?)?;
        }
    }
    if groups.is_empty() && group_by.is_empty() {
        groups.insert(Vec::new(), aggregates.iter().map(new_acc).collect());
    }
    let mut entries: Vec<(Vec<Value>, Vec<Acc>)> = groups.into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    entries
        .into_iter()
        .map(|(mut key, accs)| {
            for (acc, call) in accs.into_iter().zip(aggregates) {
                key.push(finish(acc, call)?);
            }
            Ok(key)
        })
        .collect()
}

fn sort_rows(rows: Vec<Row>, keys: &[SortKey], ctx: Context) -> Result<Vec<Row>> {
    let mut keyed: Vec<(Vec<Value>, Row)> = rows
        .into_iter()
        .map(|r| Ok((keys.iter().map(|k| eval(&k.expr, &r, &ctx)).collect::<Result<Vec<_>>>()?, r)))
        .collect::<Result<_>>()?;
    keyed.sort_by(|(a, _), (b, _)| {
        for (i, k) in keys.iter().enumerate() {
            let mut o = compare_for_sort(&a[i], &b[i], k.nulls_first != k.descending);
            if k.descending {
                o = o.reverse();
            }
            if o.is_ne() {
                return o;
            }
        }
        std::cmp::Ordering::Equal
    });
    Ok(keyed.into_iter().map(|(_, r)| r).collect())
}

fn set_op(kind: SetOpKind, all: bool, left: &Plan, right: &Plan, ctx: Context) -> Result<Vec<Row>> {
    let l: Vec<Row> = execute(left, &ctx)?.collect::<Result<_>>()?;
    let r: Vec<Row> = execute(right, &ctx)?.collect::<Result<_>>()?;
    let mut counts: FixedMap<Row, usize> = FixedMap::default();
    let mut out = Vec::new();
    match kind {
        SetOpKind::Union => {
            if all {
                out = l;
                out.extend(r);
            } else {
                for row in l.into_iter().chain(r) {
                    if !counts.contains_key(&row) {
                        counts.insert(row.clone(), 1);
                        out.push(row);
                    }
                }
            }
        }
        SetOpKind::Intersect | SetOpKind::Except => {
            for row in r {
                *counts.entry(row).or_default() += 1;
            }
            let mut emitted: hashbrown::HashSet<Row, FixedState> = Default::default();
            for row in l {
                let present = counts.get(&row).copied().unwrap_or(0) > 0;
                let keep = if kind == SetOpKind::Intersect { present } else { !present };
                if all {
                    if let Some(c) = counts.get_mut(&row) {
                        if *c > 0 && kind == SetOpKind::Intersect {
                            *c -= 1;
                            out.push(row);
                            continue;
                        } else if *c > 0 {
                            *c -= 1;
                            continue;
                        }
                    }
                    if kind == SetOpKind::Except {
                        out.push(row);
                    }
                } else if keep && emitted.insert(row.clone()) {
                    out.push(row);
                }
            }
        }
    }
    Ok(out)
}
