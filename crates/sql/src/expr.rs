//! Bound expressions: SQL expressions with every name resolved.
//!
//! The binder turns parsed expressions into [`Expr`] trees in which a column is
//! a position in the input row, a correlated reference is a position in an
//! enclosing query's row, and a function is an enum variant, so evaluation
//! never looks anything up by name. Subqueries carry their own bound [`Plan`].
//! Evaluation lives in `joule-engine`, which can run those subplans.

use crate::functions::ScalarFunc;
use crate::plan::Plan;
use joule_common::types::ArithOp;
use joule_common::{DataType, Value};
use std::fmt;

/// Comparison operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum CmpOp {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

impl CmpOp {
    pub fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::NotEq => "<>",
            CmpOp::Lt => "<",
            CmpOp::LtEq => "<=",
            CmpOp::Gt => ">",
            CmpOp::GtEq => ">=",
        }
    }

    /// The operator with its operands swapped: `a < b` is `b > a`.
    pub fn flip(self) -> CmpOp {
        match self {
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::LtEq => CmpOp::GtEq,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::GtEq => CmpOp::LtEq,
            o => o,
        }
    }

    pub fn test(self, o: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            CmpOp::Eq => o == Equal,
            CmpOp::NotEq => o != Equal,
            CmpOp::Lt => o == Less,
            CmpOp::LtEq => o != Greater,
            CmpOp::Gt => o == Greater,
            CmpOp::GtEq => o != Less,
        }
    }
}

/// Aggregate functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum AggKind {
    CountStar,
    Count,
    Sum,
    Min,
    Max,
    Avg,
}

impl AggKind {
    pub fn name(self) -> &'static str {
        match self {
            AggKind::CountStar | AggKind::Count => "COUNT",
            AggKind::Sum => "SUM",
            AggKind::Min => "MIN",
            AggKind::Max => "MAX",
            AggKind::Avg => "AVG",
        }
    }

    /// Result type for an input of type `input`.
    pub fn result_type(self, input: Option<DataType>) -> Option<DataType> {
        match self {
            AggKind::CountStar | AggKind::Count => Some(DataType::BigInt),
            AggKind::Sum => input.map(|t| if t.is_integer() { DataType::BigInt } else { t }),
            AggKind::Min | AggKind::Max => input,
            AggKind::Avg => input.map(|t| if t == DataType::Decimal { t } else { DataType::Float }),
        }
    }
}

/// One aggregate call in an Aggregate plan node.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AggCall {
    pub kind: AggKind,
    /// The argument; `None` for COUNT(*).
    pub arg: Option<Expr>,
    pub distinct: bool,
}

/// A bound expression.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Expr {
    Constant(Value),
    /// A column of the input row, by position.
    Column(usize),
    /// A column of an enclosing query's row: `depth` 0 is the nearest.
    OuterColumn {
        depth: usize,
        index: usize,
    },
    /// The `?` parameter with this zero-based index.
    Parameter(usize),
    Arith(ArithOp, Box<Expr>, Box<Expr>),
    Negate(Box<Expr>),
    Compare(CmpOp, Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    IsNull {
        expr: Box<Expr>,
        negated: bool,
    },
    /// String concatenation (`||`); NULL if either side is NULL.
    Concat(Box<Expr>, Box<Expr>),
    Like {
        expr: Box<Expr>,
        pattern: Box<Expr>,
        escape: Option<Box<Expr>>,
        negated: bool,
    },
    InList {
        expr: Box<Expr>,
        list: Vec<Expr>,
        negated: bool,
    },
    Case {
        operand: Option<Box<Expr>>,
        whens: Vec<(Expr, Expr)>,
        otherwise: Option<Box<Expr>>,
    },
    Cast(Box<Expr>, DataType),
    Function(ScalarFunc, Vec<Expr>),
    Coalesce(Vec<Expr>),
    NullIf(Box<Expr>, Box<Expr>),
    /// `(SELECT ...)` yielding one value (NULL when empty).
    ScalarSubquery(Box<Plan>),
    Exists {
        plan: Box<Plan>,
        negated: bool,
    },
    InSubquery {
        expr: Box<Expr>,
        plan: Box<Plan>,
        negated: bool,
    },
}

impl Expr {
    pub fn and(a: Expr, b: Expr) -> Expr {
        Expr::And(Box::new(a), Box::new(b))
    }

    pub fn compare(op: CmpOp, a: Expr, b: Expr) -> Expr {
        Expr::Compare(op, Box::new(a), Box::new(b))
    }

    /// AND together a list of conjuncts (`None` when empty).
    pub fn conjunction(mut parts: Vec<Expr>) -> Option<Expr> {
        let first = if parts.is_empty() { return None } else { parts.remove(0) };
        Some(parts.into_iter().fold(first, Expr::and))
    }

    /// Split a predicate into its AND-ed parts.
    pub fn into_conjuncts(self) -> Vec<Expr> {
        match self {
            Expr::And(a, b) => {
                let mut v = a.into_conjuncts();
                v.extend(b.into_conjuncts());
                v
            }
            e => vec![e],
        }
    }

    /// The plans of the subqueries in this expression (not nested deeper
    /// than this expression's own tree).
    pub fn subqueries(&self) -> Vec<&Plan> {
        let mut out = Vec::new();
        self.collect_subqueries(&mut out);
        out
    }

    fn collect_subqueries<'a>(&'a self, out: &mut Vec<&'a Plan>) {
        match self {
            Expr::ScalarSubquery(p) | Expr::Exists { plan: p, .. } | Expr::InSubquery { plan: p, .. } => out.push(p),
            _ => {}
        }
        self.children().for_each(|c| c.collect_subqueries(out));
    }

    /// Visit this expression and its children (not into subquery plans).
    pub fn walk(&self, f: &mut impl FnMut(&Expr)) {
        f(self);
        self.children().for_each(|c| c.walk(f));
    }

    fn children(&self) -> Box<dyn Iterator<Item = &Expr> + '_> {
        use Expr::*;
        match self {
            Constant(_) | Column(_) | OuterColumn { .. } | Parameter(_) | ScalarSubquery(_) | Exists { .. } => {
                Box::new(std::iter::empty())
            }
            Arith(_, a, b) | Compare(_, a, b) | And(a, b) | Or(a, b) | Concat(a, b) | NullIf(a, b) => {
                Box::new([a.as_ref(), b.as_ref()].into_iter())
            }
            Negate(a) | Not(a) | IsNull { expr: a, .. } | Cast(a, _) | InSubquery { expr: a, .. } => {
                Box::new(std::iter::once(a.as_ref()))
            }
            Like { expr, pattern, escape, .. } => {
                Box::new([expr.as_ref(), pattern.as_ref()].into_iter().chain(escape.as_deref()))
            }
            InList { expr, list, .. } => Box::new(std::iter::once(expr.as_ref()).chain(list.iter())),
            Case { operand, whens, otherwise } => Box::new(
                operand
                    .as_deref()
                    .into_iter()
                    .chain(whens.iter().flat_map(|(w, t)| [w, t]))
                    .chain(otherwise.as_deref()),
            ),
            Function(_, args) | Coalesce(args) => Box::new(args.iter()),
        }
    }

    /// Rewrite every node bottom-up with `f` (not into subquery plans).
    pub fn transform(self, f: &mut impl FnMut(Expr) -> Expr) -> Expr {
        use Expr::*;
        let b = |e: Box<Expr>, f: &mut dyn FnMut(Expr) -> Expr| Box::new(e.transform_dyn(f));
        let node = match self {
            Arith(op, x, y) => Arith(op, b(x, f), b(y, f)),
            Compare(op, x, y) => Compare(op, b(x, f), b(y, f)),
            And(x, y) => And(b(x, f), b(y, f)),
            Or(x, y) => Or(b(x, f), b(y, f)),
            Concat(x, y) => Concat(b(x, f), b(y, f)),
            NullIf(x, y) => NullIf(b(x, f), b(y, f)),
            Negate(x) => Negate(b(x, f)),
            Not(x) => Not(b(x, f)),
            IsNull { expr, negated } => IsNull { expr: b(expr, f), negated },
            Cast(x, t) => Cast(b(x, f), t),
            InSubquery { expr, plan, negated } => InSubquery { expr: b(expr, f), plan, negated },
            Like { expr, pattern, escape, negated } => {
                Like { expr: b(expr, f), pattern: b(pattern, f), escape: escape.map(|e| b(e, f)), negated }
            }
            InList { expr, list, negated } => {
                InList { expr: b(expr, f), list: list.into_iter().map(|e| e.transform_dyn(f)).collect(), negated }
            }
            Case { operand, whens, otherwise } => Case {
                operand: operand.map(|e| b(e, f)),
                whens: whens.into_iter().map(|(w, t)| (w.transform_dyn(f), t.transform_dyn(f))).collect(),
                otherwise: otherwise.map(|e| b(e, f)),
            },
            Function(func, args) => Function(func, args.into_iter().map(|e| e.transform_dyn(f)).collect()),
            Coalesce(args) => Coalesce(args.into_iter().map(|e| e.transform_dyn(f)).collect()),
            leaf => leaf,
        };
        f(node)
    }

    fn transform_dyn(self, f: &mut dyn FnMut(Expr) -> Expr) -> Expr {
        self.transform(&mut |e| f(e))
    }

    /// Whether the expression reads input columns (`Column`).
    pub fn references_columns(&self) -> bool {
        let mut found = false;
        self.walk(&mut |e| found |= matches!(e, Expr::Column(_)));
        found
    }

    /// Input columns read by this expression.
    pub fn columns(&self) -> Vec<usize> {
        let mut cols = Vec::new();
        self.walk(&mut |e| {
            if let Expr::Column(i) = e {
                cols.push(*i)
            }
        });
        cols
    }

    /// Whether the value is fixed for one execution: constants, parameters
    /// and functions of them (no columns, no subqueries).
    pub fn is_constant(&self) -> bool {
        let mut ok = true;
        self.walk(&mut |e| {
            ok &= !matches!(
                e,
                Expr::Column(_)
                    | Expr::OuterColumn { .. }
                    | Expr::ScalarSubquery(_)
                    | Expr::Exists { .. }
                    | Expr::InSubquery { .. }
            )
        });
        ok
    }

    /// Shift column references by `offset` (used when rows are concatenated).
    pub fn shift_columns(self, offset: isize) -> Expr {
        self.transform(&mut |e| match e {
            Expr::Column(i) => Expr::Column((i as isize + offset) as usize),
            e => e,
        })
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Expr::*;
        match self {
            Constant(Value::String(s)) => write!(f, "'{}'", s.replace('\'', "''")),
            Constant(v) => write!(f, "{v}"),
            Column(i) => write!(f, "#{i}"),
            OuterColumn { depth, index } => write!(f, "outer{depth}#{index}"),
            Parameter(i) => write!(f, "?{}", i + 1),
            Arith(op, a, b) => write!(f, "({a} {} {b})", op.symbol()),
            Negate(a) => write!(f, "-{a}"),
            Compare(op, a, b) => write!(f, "{a} {} {b}", op.symbol()),
            And(a, b) => write!(f, "({a} AND {b})"),
            Or(a, b) => write!(f, "({a} OR {b})"),
            Not(a) => write!(f, "NOT {a}"),
            IsNull { expr, negated } => write!(f, "{expr} IS {}NULL", if *negated { "NOT " } else { "" }),
            Concat(a, b) => write!(f, "({a} || {b})"),
            Like { expr, pattern, negated, .. } => {
                write!(f, "{expr} {}LIKE {pattern}", if *negated { "NOT " } else { "" })
            }
            InList { expr, list, negated } => {
                let items: Vec<String> = list.iter().map(|e| e.to_string()).collect();
                write!(f, "{expr} {}IN ({})", if *negated { "NOT " } else { "" }, items.join(", "))
            }
            Case { .. } => f.write_str("CASE"),
            Cast(a, t) => write!(f, "CAST({a} AS {t})"),
            Function(func, args) => {
                let items: Vec<String> = args.iter().map(|e| e.to_string()).collect();
                write!(f, "{}({})", func.name(), items.join(", "))
            }
            Coalesce(args) => {
                let items: Vec<String> = args.iter().map(|e| e.to_string()).collect();
                write!(f, "COALESCE({})", items.join(", "))
            }
            NullIf(a, b) => write!(f, "NULLIF({a}, {b})"),
            ScalarSubquery(_) => f.write_str("(subquery)"),
            Exists { negated, .. } => write!(f, "{}EXISTS (subquery)", if *negated { "NOT " } else { "" }),
            InSubquery { expr, negated, .. } => {
                write!(f, "{expr} {}IN (subquery)", if *negated { "NOT " } else { "" })
            }
        }
    }
}
