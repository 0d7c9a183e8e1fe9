//! Expression evaluation over rows.
//!
//! [`Context`] carries what an expression can see besides its row: the
//! partition's storage (for subqueries), the statement's `?` parameters, the
//! rows of enclosing queries (for correlated references, innermost first),
//! the rows handed to `Plan::Input` nodes (in multi-partition queries),
//! and the transaction's function context (its timestamp and random seed,
//! so that `NOW()` and random functions are deterministic).
//!
//! NULL handling follows SQL's three-valued logic (see
//! `joule_common::types`): comparisons with NULL are unknown, `AND`/`OR`
//! are Kleene, `IN` with a NULL in the list and no match is unknown.
//! Leaves (columns, constants, parameters) are read by reference where
//! possible so that predicates do not clone values.

use crate::exec;
use crate::storage::Storage;
use joule_common::types::{and3, not3, or3, truth_value};
use joule_common::{bail, err, Result, Row, Value};
use joule_sql::expr::Expr;
use joule_sql::functions::{like_match, FunctionContext};
use std::borrow::Cow;

/// Rows of enclosing queries, innermost first.
pub struct OuterRows<'a> {
    pub row: &'a [Value],
    pub parent: Option<&'a OuterRows<'a>>,
}

/// What evaluation can see besides the current row.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub storage: &'a Storage,
    pub params: &'a [Value],
    pub outer: Option<&'a OuterRows<'a>>,
    pub functions: FunctionContext,
    /// Rows for `Plan::Input` slots (multi-partition fragments' results).
    pub inputs: &'a [Vec<Row>],
}

impl<'a> Context<'a> {
    fn outer_value(&self, depth: usize, index: usize) -> Result<&'a Value> {
        let mut o = self.outer;
        for _ in 0..depth {
            o = o.and_then(|x| x.parent);
        }
        o.and_then(|x| x.row.get(index)).ok_or_else(|| err!(Internal, "correlated reference out of range"))
    }
}

/// Evaluate an expression that reads no row and no table (a constant, a
/// parameter, arithmetic or casts of those): what a partition key that
/// pins a statement is.
pub fn eval_constant(e: &Expr, params: &[Value]) -> Result<Value> {
    let storage = Storage::new();
    let ctx = Context { storage: &storage, params, outer: None, functions: FunctionContext::default(), inputs: &[] };
    eval(e, &[], &ctx)
}

/// Evaluate to an owned value.
pub fn eval(e: &Expr, row: &[Value], ctx: &Context) -> Result<Value> {
    Ok(eval_ref(e, row, ctx)?.into_owned())
}

/// Evaluate as a predicate: `None` is unknown.
pub fn eval_truth(e: &Expr, row: &[Value], ctx: &Context) -> Result<Option<bool>> {
    match e {
        Expr::Compare(op, a, b) => {
            let (a, b) = (eval_ref(a, row, ctx)?, eval_ref(b, row, ctx)?);
            Ok(a.sql_cmp(&b)?.map(|o| op.test(o)))
        }
        Expr::And(a, b) => {
            let l = eval_truth(a, row, ctx)?;
            if l == Some(false) {
                return Ok(Some(false));
            }
            Ok(and3(l, eval_truth(b, row, ctx)?))
        }
        Expr::Or(a, b) => {
            let l = eval_truth(a, row, ctx)?;
            if l == Some(true) {
                return Ok(Some(true));
            }
            Ok(or3(l, eval_truth(b, row, ctx)?))
        }
        Expr::Not(a) => Ok(not3(eval_truth(a, row, ctx)?)),
        other => eval_ref(other, row, ctx)?.truth(),
    }
}

/// Whether a predicate holds (unknown counts as false).
pub fn holds(e: &Expr, row: &[Value], ctx: &Context) -> Result<bool> {
    Ok(eval_truth(e, row, ctx)? == Some(true))
}

/// Evaluate, borrowing leaves from the row, the plan or the parameters.
pub fn eval_ref<'r>(e: &'r Expr, row: &'r [Value], ctx: &Context<'r>) -> Result<Cow<'r, Value>> {
    Ok(match e {
        Expr::Constant(v) => Cow::Borrowed(v),
        Expr::Column(i) => Cow::Borrowed(row.get(*i).ok_or_else(|| err!(Internal, "column #{i} out of range"))?),
        Expr::OuterColumn { depth, index } => Cow::Borrowed(ctx.outer_value(*depth, *index)?),
        Expr::Parameter(i) => Cow::Borrowed(
            ctx.params.get(*i).ok_or_else(|| err!(WrongParameterCount, "parameter ?{} was not supplied", i + 1))?,
        ),
        Expr::Compare(..) | Expr::And(..) | Expr::Or(..) | Expr::Not(_) => {
            Cow::Owned(truth_value(eval_truth(e, row, ctx)?))
        }
        Expr::Arith(op, a, b) => Cow::Owned(eval_ref(a, row, ctx)?.arith(*op, eval_ref(b, row, ctx)?.as_ref())?),
        Expr::Negate(a) => Cow::Owned(eval_ref(a, row, ctx)?.negate()?),
        Expr::IsNull { expr, negated } => Cow::Owned(Value::Boolean(eval_ref(expr, row, ctx)?.is_null() != *negated)),
        Expr::Concat(a, b) => {
            let (a, b) = (eval_ref(a, row, ctx)?, eval_ref(b, row, ctx)?);
            Cow::Owned(match (a.as_ref(), b.as_ref()) {
                (Value::Null, _) | (_, Value::Null) => Value::Null,
                (x, y) => Value::String(format!("{x}{y}")),
            })
        }
        Expr::Like { expr, pattern, escape, negated } => {
            let (v, p) = (eval_ref(expr, row, ctx)?, eval_ref(pattern, row, ctx)?);
            let esc = match escape {
                Some(x) => match eval_ref(x, row, ctx)?.as_ref() {
                    Value::Null => return Ok(Cow::Owned(Value::Null)),
                    Value::String(s) if s.chars().count() == 1 => s.chars().next(),
                    other => bail!(InvalidEscapeSequence, "ESCAPE must be a single character, not '{other}'"),
                },
                None => None,
            };
            Cow::Owned(match (v.as_ref(), p.as_ref()) {
                (Value::Null, _) | (_, Value::Null) => Value::Null,
                (Value::String(s), Value::String(pat)) => Value::Boolean(like_match(s, pat, esc)? != *negated),
                (a, b) => bail!(DatatypeMismatch, "LIKE needs strings, not {} and {}", a.type_name(), b.type_name()),
            })
        }
        Expr::InList { expr, list, negated } => {
            let v = eval_ref(expr, row, ctx)?;
            let result = match list.as_slice() {
                // `x IN ?` with an array parameter: the array's elements.
                [only] => match eval_ref(only, row, ctx)? {
                    Cow::Borrowed(Value::Array(items)) => in_set(&v, items.iter().map(|i| Ok(Cow::Borrowed(i))))?,
                    Cow::Owned(Value::Array(items)) => in_set(&v, items.iter().map(|i| Ok(Cow::Owned(i.clone()))))?,
                    item => in_set(&v, std::iter::once(Ok(item)))?,
                },
                _ => in_set(&v, list.iter().map(|item| eval_ref(item, row, ctx)))?,
            };
            Cow::Owned(truth_value(if *negated { not3(result) } else { result }))
        }
        Expr::Case { operand, whens, otherwise } => {
            let base = match operand {
                Some(o) => Some(eval_ref(o, row, ctx)?),
                None => None,
            };
            for (w, then) in whens {
                let hit = match &base {
                    Some(b) => b.sql_cmp(eval_ref(w, row, ctx)?.as_ref())? == Some(std::cmp::Ordering::Equal),
                    None => holds(w, row, ctx)?,
                };
                if hit {
                    return eval_ref(then, row, ctx);
                }
            }
            match otherwise {
                Some(x) => eval_ref(x, row, ctx)?,
                None => Cow::Owned(Value::Null),
            }
        }
        Expr::Cast(a, t) => Cow::Owned(eval_ref(a, row, ctx)?.cast(*t)?),
        Expr::Function(f, args) => {
            let vals = args.iter().map(|a| eval(a, row, ctx)).collect::<Result<Vec<_>>>()?;
            Cow::Owned(f.eval(&vals, &ctx.functions)?)
        }
        Expr::Coalesce(args) => {
            for a in args {
                let v = eval_ref(a, row, ctx)?;
                if !v.is_null() {
                    return Ok(v);
                }
            }
            Cow::Owned(Value::Null)
        }
        Expr::NullIf(a, b) => {
            let (x, y) = (eval_ref(a, row, ctx)?, eval_ref(b, row, ctx)?);
            if x.sql_cmp(&y)? == Some(std::cmp::Ordering::Equal) {
                Cow::Owned(Value::Null)
            } else {
                x
            }
        }
        Expr::ScalarSubquery(plan) => {
            let rows = subquery_rows(plan, row, ctx, Some(2))?;
            match rows.len() {
                0 => Cow::Owned(Value::Null),
                1 => Cow::Owned(rows.into_iter().next().and_then(|r| r.into_iter().next()).unwrap_or(Value::Null)),
                _ => bail!(CardinalityViolation, "a scalar subquery returned more than one row"),
            }
        }
        Expr::Exists { plan, negated } => {
            let rows = subquery_rows(plan, row, ctx, Some(1))?;
            Cow::Owned(Value::Boolean(rows.is_empty() == *negated))
        }
        Expr::InSubquery { expr, plan, negated } => {
            let v = eval(expr, row, ctx)?;
            let rows = subquery_rows(plan, row, ctx, None)?;
            let items = rows.iter().map(|r| Ok(Cow::Borrowed(r.first().unwrap_or(&Value::Null))));
            let result = in_set(&v, items)?;
            Cow::Owned(truth_value(if *negated { not3(result) } else { result }))
        }
    })
}

/// SQL `v IN (items)`: true on a match; unknown when `v` is NULL (and the
/// set is not empty) or when no item matched but some compared as unknown;
/// else false.
fn in_set<'v>(v: &Value, items: impl Iterator<Item = Result<Cow<'v, Value>>>) -> Result<Option<bool>> {
    let mut result = Some(false);
    for item in items {
        let item = item?;
        if v.is_null() {
            return Ok(None);
        }
        match v.sql_cmp(&item)? {
            Some(std::cmp::Ordering::Equal) => return Ok(Some(true)),
            None => result = None,
            _ => {}
        }
    }
    Ok(result)
}

/// Run a subquery with `row` as its nearest outer row; at most `limit` rows.
fn subquery_rows(plan: &joule_sql::plan::Plan, row: &[Value], ctx: &Context, limit: Option<usize>) -> Result<Vec<Row>> {
    let outer = OuterRows { row, parent: ctx.outer };
    let sub = Context { outer: Some(&outer), ..*ctx };
    let iter = exec::execute(plan, &sub)?;
    let mut out = Vec::new();
    for r in iter {
        out.push(r?);
        if limit.is_some_and(|l| out.len() >= l) {
            break;
        }
    }
    Ok(out)
}

/// Compare helper used by sorts: the SQL ordering with NULLs placed.
pub fn compare_for_sort(a: &Value, b: &Value, nulls_first: bool) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    match (a.is_null(), b.is_null()) {
        (true, true) => Equal,
        (true, false) => {
            if nulls_first {
                Less
            } else {
                Greater
            }
        }
        (false, true) => {
            if nulls_first {
                Greater
            } else {
                Less
            }
        }
        (false, false) => a.sql_cmp(b).ok().flatten().unwrap_or_else(|| a.cmp(b)),
    }
}
