//! The binder: resolves names in parsed SQL and produces bound plans.
//!
//! Binding turns sqlparser's AST into JouleDB's own [`Expr`] and [`Plan`]
//! trees. It is the only place (with the parser wrapper and DDL planner)
//! that reads sqlparser types. Its jobs:
//!
//! * **Names.** A [`Scope`] lists the columns visible to an expression, each
//!   with the table (or alias) it came from. Unqualified names must be
//!   unambiguous; qualified names (`t.c`, `db.t.c`) pick the table. A name
//!   not found in the current scope is looked up in the enclosing queries'
//!   scopes, making a correlated reference ([`Expr::OuterColumn`]).
//! * **Aggregation.** In a grouped query, expressions after the GROUP BY are
//!   rewritten onto the Aggregate node's output row: an aggregate call becomes
//!   the column holding its result, an expression equal to a GROUP BY
//!   expression becomes that key's column, and any other column reference is
//!   a grouping error, as in PostgreSQL.
//! * **Types.** Every bound expression gets a static type where one can be
//!   known, for result metadata and for choosing comparison semantics.
//!
//! SELECT-specific planning is in [`select`]; statements (DML, DDL) in
//! `crate::planner`.

pub mod select;

use crate::catalog::Catalog;
use crate::expr::{AggCall, AggKind, CmpOp, Expr};
use crate::functions::{ScalarFunc, TimeUnit, TrimSide};
use crate::plan::Plan;
use joule_common::types::{ArithOp, Value};
use joule_common::{bail, err, DataType, Decimal, Result};
use sqlparser::ast;

/// Upper-case an identifier, as VoltDB does for every name.
pub fn ident_name(i: &ast::Ident) -> String {
    i.value.to_uppercase()
}

/// A column visible in a scope.
#[derive(Clone, Debug)]
pub struct ScopeColumn {
    /// The table name or alias that qualifies it (`None` for derived values).
    pub table: Option<String>,
    pub name: String,
    pub data_type: Option<DataType>,
    /// Hidden from unqualified lookup and `*` (the right copy of a USING column).
    pub hidden: bool,
}

/// The columns of a row, in order.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    pub columns: Vec<ScopeColumn>,
}

impl Scope {
    pub fn types(&self) -> Vec<Option<DataType>> {
        self.columns.iter().map(|c| c.data_type).collect()
    }

    /// Find a column by optional qualifier and name.
    fn resolve(&self, table: Option<&str>, name: &str) -> Result<Option<usize>> {
        let mut found = None;
        for (i, c) in self.columns.iter().enumerate() {
            let matches = c.name == name
                && match table {
                    Some(t) => c.table.as_deref() == Some(t),
                    None => !c.hidden,
                };
            if matches {
                if found.is_some() {
                    bail!(AmbiguousColumn, "column reference {name} is ambiguous");
                }
                found = Some(i);
            }
        }
        Ok(found)
    }

    pub fn has_table(&self, table: &str) -> bool {
        self.columns.iter().any(|c| c.table.as_deref() == Some(table))
    }
}

/// State for rewriting expressions above an Aggregate node.
pub struct AggContext {
    /// The GROUP BY expressions, bound against the FROM scope.
    pub group_by: Vec<Expr>,
    /// Aggregate calls collected so far.
    pub aggregates: Vec<AggCall>,
    /// The FROM scope the aggregates' arguments are bound against.
    pub input: Scope,
}

/// Binds expressions and queries against a catalog.
pub struct Binder<'a> {
    pub catalog: &'a Catalog,
    /// The current database for unqualified names.
    pub database: String,
    /// Enclosing queries' scopes, innermost last.
    outer: Vec<Scope>,
    /// Number of `?` parameters seen.
    pub param_count: usize,
    /// Depth of view expansion, to stop recursive views.
    pub view_depth: usize,
    /// Plan for execution across partitions: keep every ORDER BY as a sort
    /// (an index gives order only within one partition).
    pub multi_partition: bool,
}

impl<'a> Binder<'a> {
    pub fn new(catalog: &'a Catalog, database: &str) -> Binder<'a> {
        Binder {
            catalog,
            database: database.to_string(),
            outer: Vec::new(),
            param_count: 0,
            view_depth: 0,
            multi_partition: false,
        }
    }

    /// Bind an expression in a scope, with aggregates not allowed.
    pub fn bind_expr(&mut self, e: &ast::Expr, scope: &Scope) -> Result<Expr> {
        self.bind(e, scope, &mut None)
    }

    /// Bind a subquery with `scope` as its nearest enclosing scope.
    fn bind_subquery(&mut self, q: &ast::Query, scope: &Scope) -> Result<(Plan, Scope)> {
        self.outer.push(scope.clone());
        let r = self.bind_query(q);
        self.outer.pop();
        r
    }

    /// Resolve a column name, trying enclosing scopes when not found.
    fn column(&self, parts: &[ast::Ident], scope: &Scope) -> Result<Expr> {
        let names: Vec<String> = parts.iter().map(ident_name).collect();
        let (table, name) = match names.as_slice() {
            [c] => (None, c.as_str()),
            [t, c] => (Some(t.as_str()), c.as_str()),
            [_db, t, c] => (Some(t.as_str()), c.as_str()),
            _ => bail!(SyntaxError, "invalid column reference {}", names.join(".")),
        };
        if let Some(i) = scope.resolve(table, name)? {
            return Ok(Expr::Column(i));
        }
        for (depth, s) in self.outer.iter().rev().enumerate() {
            if let Some(i) = s.resolve(table, name)? {
                return Ok(Expr::OuterColumn { depth, index: i });
            }
        }
        match table {
            Some(t) if !scope.has_table(t) && !self.outer.iter().any(|s| s.has_table(t)) => {
                bail!(UndefinedTable, "table or alias {t} is not in the FROM clause (referenced as {t}.{name})")
            }
            Some(t) => bail!(UndefinedColumn, "column {name} does not exist in {t}"),
            None => bail!(UndefinedColumn, "column {name} does not exist"),
        }
    }

    /// Bind with an optional aggregate context (set above GROUP BY).
    pub fn bind(&mut self, e: &ast::Expr, scope: &Scope, agg: &mut Option<AggContext>) -> Result<Expr> {
        if let Some(ctx) = agg.as_mut() {
            // An aggregate call, or an expression equal to a GROUP BY key,
            // becomes a column of the Aggregate node's output.
            if let Some(call) = self.aggregate_call(e, &ctx.input)? {
                let n = ctx.group_by.len();
                let pos = match ctx.aggregates.iter().position(|a| *a == call) {
                    Some(p) => p,
                    None => {
                        ctx.aggregates.push(call);
                        ctx.aggregates.len() - 1
                    }
                };
                return Ok(Expr::Column(n + pos));
            }
            if !contains_aggregate(e) && !matches!(e, ast::Expr::Value(_)) {
                let input = ctx.input.clone();
                if let Ok(bound) = self.bind(e, &input, &mut None) {
                    if let Some(i) = ctx.group_by.iter().position(|g| *g == bound) {
                        return Ok(Expr::Column(i));
                    }
                    if !bound.references_columns() && !has_subquery(&bound) {
                        return Ok(bound);
                    }
                }
            }
            if let ast::Expr::Identifier(_) | ast::Expr::CompoundIdentifier(_) = e {
                let parts = match e {
                    ast::Expr::Identifier(i) => vec![i.clone()],
                    ast::Expr::CompoundIdentifier(p) => p.clone(),
                    _ => unreachable!(),
                };
                let name = parts.iter().map(|p| p.value.clone()).collect::<Vec<_>>().join(".");
                // Not a key: either an error or an outer reference.
                return match self.column(&parts, &ctx.input)? {
                    Expr::Column(_) => bail!(
                        GroupingError,
                        "column {} must appear in the GROUP BY clause or be used in an aggregate function",
                        name.to_uppercase()
                    ),
                    outer => Ok(outer),
                };
            }
        }
        self.bind_node(e, scope, agg)
    }

    /// If `e` is an aggregate function call, bind it.
    fn aggregate_call(&mut self, e: &ast::Expr, input: &Scope) -> Result<Option<AggCall>> {
        let ast::Expr::Function(f) = e else { return Ok(None) };
        let name = object_name(&f.name);
        let kind = match name.as_str() {
            "COUNT" => AggKind::Count,
            "SUM" => AggKind::Sum,
            "MIN" => AggKind::Min,
            "MAX" => AggKind::Max,
            "AVG" => AggKind::Avg,
            _ => return Ok(None),
        };
        let ast::FunctionArguments::List(list) = &f.args else {
            bail!(SyntaxError, "{name} needs an argument");
        };
        let distinct = matches!(list.duplicate_treatment, Some(ast::DuplicateTreatment::Distinct));
        match list.args.as_slice() {
            [ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Wildcard)] if kind == AggKind::Count => {
                Ok(Some(AggCall { kind: AggKind::CountStar, arg: None, distinct: false }))
            }
            [ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(arg))] => {
                if contains_aggregate(arg) {
                    bail!(AggregateMisuse, "aggregate function calls cannot be nested");
                }
                let arg = self.bind(arg, input, &mut None)?;
                Ok(Some(AggCall { kind, arg: Some(arg), distinct }))
            }
            _ => bail!(SyntaxError, "{name} takes exactly one argument"),
        }
    }

    fn bind_node(&mut self, e: &ast::Expr, scope: &Scope, agg: &mut Option<AggContext>) -> Result<Expr> {
        use ast::Expr as A;
        macro_rules! b {
            ($x:expr) => {
                Box::new(self.bind($x, scope, agg)?)
            };
        }
        Ok(match e {
            A::Identifier(i) => self.column(std::slice::from_ref(i), scope)?,
            A::CompoundIdentifier(parts) => self.column(parts, scope)?,
            A::Value(v) => self.literal(&v.value)?,
            A::Nested(x) => return self.bind(x, scope, agg),
            A::BinaryOp { left, op, right } => {
                let (l, r) = (b!(left), b!(right));
                use ast::BinaryOperator as O;
                match op {
                    O::Plus => Expr::Arith(ArithOp::Add, l, r),
                    O::Minus => Expr::Arith(ArithOp::Sub, l, r),
                    O::Multiply => Expr::Arith(ArithOp::Mul, l, r),
                    O::Divide => Expr::Arith(ArithOp::Div, l, r),
                    O::Modulo => Expr::Arith(ArithOp::Rem, l, r),
                    O::StringConcat => Expr::Concat(l, r),
                    O::Eq => Expr::Compare(CmpOp::Eq, l, r),
                    O::NotEq => Expr::Compare(CmpOp::NotEq, l, r),
                    O::Lt => Expr::Compare(CmpOp::Lt, l, r),
                    O::LtEq => Expr::Compare(CmpOp::LtEq, l, r),
                    O::Gt => Expr::Compare(CmpOp::Gt, l, r),
                    O::GtEq => Expr::Compare(CmpOp::GtEq, l, r),
                    O::And => Expr::And(l, r),
                    O::Or => Expr::Or(l, r),
                    op => bail!(FeatureNotSupported, "operator {op} is not supported"),
                }
            }
            A::UnaryOp { op, expr } => {
                use ast::UnaryOperator as U;
                match (op, expr.as_ref()) {
                    // Fold negative literals so that -9223372036854775807 fits.
                    (U::Minus, A::Value(v)) => match self.literal(&v.value)? {
                        Expr::Constant(c) if c.is_number() => Expr::Constant(c.negate()?),
                        other => Expr::Negate(Box::new(other)),
                    },
                    (U::Minus, x) => Expr::Negate(b!(x)),
                    (U::Plus, x) => *b!(x),
                    (U::Not, x) => Expr::Not(b!(x)),
                    (op, _) => bail!(FeatureNotSupported, "operator {op} is not supported"),
                }
            }
            A::IsNull(x) => Expr::IsNull { expr: b!(x), negated: false },
            A::IsNotNull(x) => Expr::IsNull { expr: b!(x), negated: true },
            A::IsTrue(x) => Expr::compare(CmpOp::Eq, *b!(x), Expr::Constant(Value::Boolean(true))),
            A::IsFalse(x) => Expr::compare(CmpOp::Eq, *b!(x), Expr::Constant(Value::Boolean(false))),
            A::IsDistinctFrom(x, y) | A::IsNotDistinctFrom(x, y) => {
                let (x, y) = (*b!(x), *b!(y));
                // NOT DISTINCT: both NULL, or equal.
                let both_null = Expr::and(
                    Expr::IsNull { expr: Box::new(x.clone()), negated: false },
                    Expr::IsNull { expr: Box::new(y.clone()), negated: false },
                );
                let eq = Expr::Coalesce(vec![Expr::compare(CmpOp::Eq, x, y), Expr::Constant(Value::Boolean(false))]);
                let same = Expr::Or(Box::new(both_null), Box::new(eq));
                if matches!(e, A::IsDistinctFrom(..)) {
                    Expr::Not(Box::new(same))
                } else {
                    same
                }
            }
            A::Between { expr, negated, low, high } => {
                let x = b!(expr);
                let inside =
                    Expr::and(Expr::Compare(CmpOp::GtEq, x.clone(), b!(low)), Expr::Compare(CmpOp::LtEq, x, b!(high)));
                if *negated {
                    Expr::Not(Box::new(inside))
                } else {
                    inside
                }
            }
            A::In { expr, target, negated, .. } => {
                let x = b!(expr);
                match target {
                    ast::InTarget::List(list) => Expr::InList {
                        expr: x,
                        list: list.iter().map(|e| self.bind(e, scope, agg)).collect::<Result<_>>()?,
                        negated: *negated,
                    },
                    ast::InTarget::Subquery(subquery) => {
                        let (plan, sub_scope) = self.bind_subquery(subquery, &agg_scope(agg, scope))?;
                        if sub_scope.columns.len() != 1 {
                            bail!(
                                ColumnCountMismatch,
                                "subquery in IN must return one column, not {}",
                                sub_scope.columns.len()
                            );
                        }
                        Expr::InSubquery { expr: x, plan: Box::new(plan), negated: *negated }
                    }
                    _ => bail!(FeatureNotSupported, "this form of IN is not supported"),
                }
            }
            A::Exists { subquery, negated } => {
                let (plan, _) = self.bind_subquery(subquery, &agg_scope(agg, scope))?;
                Expr::Exists { plan: Box::new(plan), negated: *negated }
            }
            A::Subquery(q) => {
                let (plan, sub_scope) = self.bind_subquery(q, &agg_scope(agg, scope))?;
                if sub_scope.columns.len() != 1 {
                    bail!(
                        ColumnCountMismatch,
                        "scalar subquery must return one column, not {}",
                        sub_scope.columns.len()
                    );
                }
                Expr::ScalarSubquery(Box::new(plan))
            }
            A::Like { negated, expr, pattern, escape_char, any: false } => Expr::Like {
                expr: b!(expr),
                pattern: b!(pattern),
                escape: match escape_char {
                    Some(x) => Some(b!(x)),
                    None => None,
                },
                negated: *negated,
            },
            A::Case { operand, conditions, else_result, .. } => Expr::Case {
                operand: match operand {
                    Some(o) => Some(b!(o)),
                    None => None,
                },
                whens: conditions
                    .iter()
                    .map(|w| Ok((self.bind(&w.condition, scope, agg)?, self.bind(&w.result, scope, agg)?)))
                    .collect::<Result<_>>()?,
                otherwise: match else_result {
                    Some(x) => Some(b!(x)),
                    None => None,
                },
            },
            A::Cast { expr, data_type, .. } => {
                let (t, _, _) = convert_type(data_type)?;
                Expr::Cast(b!(expr), t)
            }
            A::Extract { field, expr, .. } => {
                let unit = TimeUnit::parse(&field.to_string())
                    .ok_or_else(|| err!(FeatureNotSupported, "EXTRACT of {field} is not supported"))?;
                Expr::Function(ScalarFunc::Extract(unit), vec![*b!(expr)])
            }
            A::Ceil { expr, .. } => Expr::Function(builtin("CEILING", 1)?, vec![*b!(expr)]),
            A::Floor { expr, .. } => Expr::Function(builtin("FLOOR", 1)?, vec![*b!(expr)]),
            A::Position { expr, r#in } => Expr::Function(ScalarFunc::Position, vec![*b!(expr), *b!(r#in)]),
            A::Substring { expr, substring_from, substring_for, .. } => {
                let mut args = vec![*b!(expr)];
                args.push(match substring_from {
                    Some(f) => *b!(f),
                    None => Expr::Constant(Value::Integer(1)),
                });
                if let Some(n) = substring_for {
                    args.push(*b!(n));
                }
                Expr::Function(ScalarFunc::Substring, args)
            }
            A::Trim { trim_where, trim_what, expr, trim_characters } => {
                let side = match trim_where {
                    Some(ast::TrimWhereField::Leading) => TrimSide::Leading,
                    Some(ast::TrimWhereField::Trailing) => TrimSide::Trailing,
                    _ => TrimSide::Both,
                };
                let mut args = vec![*b!(expr)];
                if let Some(w) = trim_what {
                    args.push(*b!(w));
                } else if let Some(chars) = trim_characters.as_ref().and_then(|c| c.first()) {
                    args.push(*b!(chars));
                }
                Expr::Function(ScalarFunc::Trim(side), args)
            }
            A::Function(f) => self.function(f, scope, agg)?,
            A::TypedString(ts) => {
                let (t, _, _) = convert_type(&ts.data_type)?;
                let text = match &ts.value.value {
                    ast::Value::SingleQuotedString(s) => s.clone(),
                    v => v.to_string(),
                };
                Expr::Constant(Value::String(text).cast(t)?)
            }
            other => bail!(FeatureNotSupported, "expression {other} is not supported"),
        })
    }

    fn literal(&mut self, v: &ast::Value) -> Result<Expr> {
        Ok(Expr::Constant(match v {
            ast::Value::Number(n, _) => number_literal(n)?,
            ast::Value::SingleQuotedString(s) | ast::Value::DoubleQuotedString(s) => Value::String(s.clone()),
            ast::Value::HexStringLiteral(h) => Value::String(h.clone()).cast(DataType::Varbinary)?,
            ast::Value::Boolean(b) => Value::Boolean(*b),
            ast::Value::Null => Value::Null,
            ast::Value::Placeholder(p) if p == "?" => {
                self.param_count += 1;
                return Ok(Expr::Parameter(self.param_count - 1));
            }
            ast::Value::Placeholder(p) => bail!(SyntaxError, "unsupported parameter marker {p}: use ?"),
            v => bail!(FeatureNotSupported, "literal {v} is not supported"),
        }))
    }

    fn function(&mut self, f: &ast::Function, scope: &Scope, agg: &mut Option<AggContext>) -> Result<Expr> {
        let name = object_name(&f.name);
        if matches!(name.as_str(), "COUNT" | "SUM" | "MIN" | "MAX" | "AVG") {
            bail!(AggregateMisuse, "aggregate function {name} is not allowed here");
        }
        if f.over.is_some() {
            bail!(FeatureNotSupported, "window functions are not supported");
        }
        let raw_args: Vec<&ast::Expr> = match &f.args {
            ast::FunctionArguments::None => vec![],
            ast::FunctionArguments::List(list) => list
                .args
                .iter()
                .map(|a| match a {
                    ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)) => Ok(e),
                    _ => Err(err!(SyntaxError, "invalid argument to {name}")),
                })
                .collect::<Result<_>>()?,
            ast::FunctionArguments::Subquery(_) => bail!(SyntaxError, "invalid argument to {name}"),
        };
        // Functions whose first argument is a time unit keyword.
        let unit_fn: Option<fn(TimeUnit) -> ScalarFunc> = match name.as_str() {
            "DATEADD" => Some(ScalarFunc::DateAdd),
            "TRUNCATE" => Some(ScalarFunc::Truncate),
            "SINCE_EPOCH" => Some(ScalarFunc::SinceEpoch),
            "TO_TIMESTAMP" => Some(ScalarFunc::ToTimestamp),
            "EXTRACT" => Some(ScalarFunc::Extract),
            _ => None,
        };
        if let (Some(make), Some(ast::Expr::Identifier(unit))) = (unit_fn, raw_args.first()) {
            let unit = TimeUnit::parse(&unit.value)
                .ok_or_else(|| err!(InvalidArgument, "unknown time unit {} in {name}", unit.value))?;
            let args = raw_args[1..].iter().map(|a| self.bind(a, scope, agg)).collect::<Result<Vec<_>>>()?;
            return Ok(Expr::Function(make(unit), args));
        }
        let mut args = raw_args.iter().map(|a| self.bind(a, scope, agg)).collect::<Result<Vec<_>>>()?;
        Ok(match (name.as_str(), args.len()) {
            ("COALESCE", n) if n >= 1 => Expr::Coalesce(args),
            ("NULLIF", 2) => {
                let b2 = args.pop().unwrap_or(Expr::Constant(Value::Null));
                let a2 = args.pop().unwrap_or(Expr::Constant(Value::Null));
                Expr::NullIf(Box::new(a2), Box::new(b2))
            }
            _ => {
                let func = ScalarFunc::lookup(&name, args.len()).ok_or_else(|| {
                    err!(UndefinedFunction, "function {name} with {} argument(s) does not exist", args.len())
                })?;
                Expr::Function(func, args)
            }
        })
    }
}

/// The scope a subquery sees as its enclosing query: above GROUP BY that is
/// the aggregate output (keys by name), else the FROM scope.
fn agg_scope(agg: &Option<AggContext>, scope: &Scope) -> Scope {
    match agg {
        None => scope.clone(),
        Some(ctx) => {
            let mut s = Scope::default();
            for g in &ctx.group_by {
                let col = match g {
                    Expr::Column(i) => ctx.input.columns[*i].clone(),
                    _ => ScopeColumn { table: None, name: String::new(), data_type: None, hidden: true },
                };
                s.columns.push(col);
            }
            s
        }
    }
}

fn builtin(name: &str, argc: usize) -> Result<ScalarFunc> {
    ScalarFunc::lookup(name, argc).ok_or_else(|| err!(UndefinedFunction, "function {name} does not exist"))
}

fn has_subquery(e: &Expr) -> bool {
    let mut found = false;
    e.walk(&mut |x| found |= matches!(x, Expr::ScalarSubquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. }));
    found
}

/// The last part of a (possibly qualified) name, upper-cased.
pub fn object_name(n: &ast::ObjectName) -> String {
    n.0.last()
        .map(|p| match p {
            ast::ObjectNamePart::Identifier(i) => ident_name(i),
            ast::ObjectNamePart::Function(f) => ident_name(&f.name),
        })
        .unwrap_or_default()
}

/// Whether an AST expression contains an aggregate call (not looking into
/// subqueries, whose aggregates are their own).
pub fn contains_aggregate(e: &ast::Expr) -> bool {
    use ast::Expr as A;
    match e {
        A::Function(f) => {
            let n = object_name(&f.name);
            if matches!(n.as_str(), "COUNT" | "SUM" | "MIN" | "MAX" | "AVG") {
                return true;
            }
            match &f.args {
                ast::FunctionArguments::List(l) => l.args.iter().any(|a| match a {
                    ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(x)) => contains_aggregate(x),
                    _ => false,
                }),
                _ => false,
            }
        }
        A::BinaryOp { left, right, .. } => contains_aggregate(left) || contains_aggregate(right),
        A::UnaryOp { expr, .. }
        | A::Nested(expr)
        | A::IsNull(expr)
        | A::IsNotNull(expr)
        | A::IsTrue(expr)
        | A::IsFalse(expr)
        | A::Cast { expr, .. }
        | A::Extract { expr, .. }
        | A::Ceil { expr, .. }
        | A::Floor { expr, .. } => contains_aggregate(expr),
        A::IsDistinctFrom(a, b) | A::IsNotDistinctFrom(a, b) | A::Position { expr: a, r#in: b } => {
            contains_aggregate(a) || contains_aggregate(b)
        }
        A::Between { expr, low, high, .. } => {
            contains_aggregate(expr) || contains_aggregate(low) || contains_aggregate(high)
        }
        A::In { expr, target: ast::InTarget::List(list), .. } => {
            contains_aggregate(expr) || list.iter().any(contains_aggregate)
        }
        A::In { expr, .. } => contains_aggregate(expr),
        A::Like { expr, pattern, .. } => contains_aggregate(expr) || contains_aggregate(pattern),
        A::Case { operand, conditions, else_result, .. } => {
            operand.as_deref().is_some_and(contains_aggregate)
                || conditions.iter().any(|w| contains_aggregate(&w.condition) || contains_aggregate(&w.result))
                || else_result.as_deref().is_some_and(contains_aggregate)
        }
        A::Substring { expr, substring_from, substring_for, .. } => {
            contains_aggregate(expr)
                || substring_from.as_deref().is_some_and(contains_aggregate)
                || substring_for.as_deref().is_some_and(contains_aggregate)
        }
        A::Trim { expr, trim_what, .. } => {
            contains_aggregate(expr) || trim_what.as_deref().is_some_and(contains_aggregate)
        }
        _ => false,
    }
}

/// A numeric literal: integer if it fits BIGINT, DECIMAL if it has a point,
/// FLOAT if it has an exponent.
pub fn number_literal(n: &str) -> Result<Value> {
    if n.contains(['e', 'E']) {
        return n.parse::<f64>().map(Value::Float).map_err(|_| err!(InvalidTextRepresentation, "invalid number {n}"));
    }
    if n.contains('.') {
        return Ok(Value::Decimal(Decimal::parse(n)?));
    }
    match n.parse::<i64>() {
        Ok(i) => Ok(Value::Integer(i)),
        Err(_) => Ok(Value::Decimal(Decimal::parse(n)?)),
    }
}

/// Map a sqlparser data type to JouleDB's: (type, max length, length in bytes).
pub fn convert_type(t: &ast::DataType) -> Result<(DataType, Option<u32>, bool)> {
    use ast::DataType as D;
    let char_len = |l: &Option<ast::CharacterLength>| -> Result<(Option<u32>, bool)> {
        match l {
            Some(ast::CharacterLength::IntegerLength { length, unit }) => {
                let bytes = matches!(unit, Some(ast::CharLengthUnits::Octets));
                if *length == 0 || *length > joule_common::types::MAX_VALUE_LENGTH as u64 {
                    bail!(InvalidSchemaDefinition, "VARCHAR length {length} must be between 1 and 1048576");
                }
                Ok((Some(*length as u32), bytes))
            }
            _ => Ok((Some(1024 * 1024), true)),
        }
    };
    Ok(match t {
        D::TinyInt(_) => (DataType::TinyInt, None, false),
        D::SmallInt(_) | D::Int2(_) => (DataType::SmallInt, None, false),
        D::Int(_) | D::Integer(_) | D::Int4(_) => (DataType::Integer, None, false),
        D::BigInt(_) | D::Int8(_) => (DataType::BigInt, None, false),
        D::Float(_) | D::Real | D::Double(_) | D::DoublePrecision | D::Float8 => (DataType::Float, None, false),
        D::Decimal(_) | D::Numeric(_) => (DataType::Decimal, None, false),
        D::Varchar(l) | D::CharacterVarying(l) | D::Char(l) => {
            let (n, bytes) = char_len(l)?;
            (DataType::Varchar, n, bytes)
        }
        D::Text | D::String(_) => (DataType::Varchar, Some(1024 * 1024), true),
        D::Varbinary(l) => {
            let n = match l {
                Some(ast::BinaryLength::IntegerLength { length }) => {
                    if *length == 0 || *length > joule_common::types::MAX_VALUE_LENGTH as u64 {
                        bail!(InvalidSchemaDefinition, "VARBINARY length {length} must be between 1 and 1048576");
                    }
                    *length as u32
                }
                _ => 1024 * 1024,
            };
            (DataType::Varbinary, Some(n), true)
        }
        D::Binary(_) | D::Blob(_) => (DataType::Varbinary, Some(1024 * 1024), true),
        D::Timestamp(..) | D::Datetime(_) | D::Date => (DataType::Timestamp, None, false),
        D::Boolean | D::Bool => (DataType::Boolean, None, false),
        other => bail!(FeatureNotSupported, "data type {other} is not supported"),
    })
}

/// The static type of a bound expression, given its input row's types.
pub fn infer_type(e: &Expr, input: &[Option<DataType>]) -> Option<DataType> {
    use Expr::*;
    match e {
        Constant(v) => v.data_type(),
        Column(i) => input.get(*i).copied().flatten(),
        OuterColumn { .. } | Parameter(_) => None,
        Arith(_, a, b) => match (infer_type(a, input), infer_type(b, input)) {
            (Some(x), Some(y)) if x.is_numeric() && y.is_numeric() => Some(DataType::numeric_result(x, y)),
            (Some(x), None) | (None, Some(x)) if x.is_numeric() => Some(DataType::numeric_result(x, x)),
            _ => None,
        },
        Negate(a) => infer_type(a, input).map(|t| if t.is_integer() { DataType::BigInt } else { t }),
        Compare(..)
        | And(..)
        | Or(..)
        | Not(_)
        | IsNull { .. }
        | Like { .. }
        | InList { .. }
        | Exists { .. }
        | InSubquery { .. } => Some(DataType::Boolean),
        Concat(..) => Some(DataType::Varchar),
        Case { whens, otherwise, .. } => {
            whens.iter().map(|(_, t)| t).chain(otherwise.as_deref()).filter_map(|x| infer_type(x, input)).reduce(
                |a, b| {
                    if a == b {
                        a
                    } else if a.is_numeric() && b.is_numeric() {
                        DataType::numeric_result(a, b)
                    } else {
                        a
                    }
                },
            )
        }
        Cast(_, t) => Some(*t),
        Function(f, args) => {
            let types: Vec<Option<DataType>> = args.iter().map(|a| infer_type(a, input)).collect();
            f.return_type(&types)
        }
        Coalesce(args) => args.iter().find_map(|a| infer_type(a, input)),
        NullIf(a, _) => infer_type(a, input),
        // A subquery's type is not tracked through its plan.
        ScalarSubquery(_) => None,
    }
}
