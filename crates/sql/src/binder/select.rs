//! Binding of queries: FROM, joins, WHERE, GROUP BY, HAVING, the select
//! list, DISTINCT, ORDER BY, LIMIT/OFFSET and set operations.
//!
//! A SELECT becomes this operator pipeline, bottom-up:
//!
//! ```text
//! FROM (scans and joins) → Filter(WHERE) → [Aggregate → Filter(HAVING)]
//!   → Project(select list + hidden sort keys) → [Distinct] → [Sort]
//!   → [Limit] → [Project(drop hidden sort keys)]
//! ```
//!
//! ORDER BY may name an output column (by alias or 1-based ordinal) or any
//! expression over the FROM clause; the latter are computed as hidden
//! columns of the projection and dropped after sorting. NULLs sort first in
//! ascending order (they are the smallest value), as in VoltDB.
//! The optimizer (`crate::optimizer`) later rewrites this naive shape:
//! pushes predicates into scans and joins, picks indexes and join methods.

use super::{contains_aggregate, ident_name, infer_type, object_name, AggContext, Binder, Scope, ScopeColumn};
use crate::catalog::Relation;
use crate::expr::Expr;
use crate::plan::{JoinKind, Plan, SetOpKind, SortKey};
use joule_common::{bail, err, DataType, Result};
use sqlparser::ast;

/// Upper bound on nested view expansion (stops recursive views).
const MAX_VIEW_DEPTH: usize = 16;

impl Binder<'_> {
    /// Bind a full query (with ORDER BY and LIMIT) into a plan and the scope
    /// of its output row.
    pub fn bind_query(&mut self, q: &ast::Query) -> Result<(Plan, Scope)> {
        if q.with.is_some() {
            bail!(FeatureNotSupported, "WITH (common table expressions) is not supported");
        }
        if q.fetch.is_some() || !q.locks.is_empty() {
            bail!(FeatureNotSupported, "FETCH and locking clauses are not supported");
        }
        let order_by: &[ast::OrderByExpr] = match &q.order_by {
            None => &[],
            Some(ast::OrderBy { kind: ast::OrderByKind::Expressions(v), .. }) => v,
            Some(_) => bail!(FeatureNotSupported, "ORDER BY ALL is not supported"),
        };
        let (mut plan, mut scope, visible) = match q.body.as_ref() {
            ast::SetExpr::Select(s) => self.bind_select(s, order_by)?,
            body => {
                let (plan, scope) = self.bind_set_expr(body)?;
                let width = scope.columns.len();
                let plan = self.order_output(plan, &scope, order_by)?;
                (plan, scope, width)
            }
        };
        let (limit, offset) = match &q.limit_clause {
            None => (None, None),
            Some(ast::LimitClause::LimitOffset { limit, offset, limit_by }) => {
                if !limit_by.is_empty() {
                    bail!(FeatureNotSupported, "LIMIT BY is not supported");
                }
                (limit.as_ref(), offset.as_ref().map(|o| &o.value))
            }
            Some(ast::LimitClause::OffsetCommaLimit { offset, limit }) => (Some(limit), Some(offset)),
        };
        if limit.is_some() || offset.is_some() {
            let limit = limit.map(|e| self.bind_constant(e, "LIMIT")).transpose()?;
            let offset = offset.map(|e| self.bind_constant(e, "OFFSET")).transpose()?;
            plan = Plan::Limit { input: plan.boxed(), limit, offset };
        }
        if visible < scope.columns.len() {
            plan = Plan::Project { input: plan.boxed(), exprs: (0..visible).map(Expr::Column).collect() };
            scope.columns.truncate(visible);
        }
        Ok((plan, scope))
    }

    fn bind_constant(&mut self, e: &ast::Expr, what: &str) -> Result<Expr> {
        let bound = self.bind_expr(e, &Scope::default())?;
        if !bound.is_constant() {
            bail!(SyntaxError, "{what} must be a constant or a parameter");
        }
        Ok(bound)
    }

    /// Bind a query body without ORDER BY/LIMIT (operands of set operations).
    fn bind_set_expr(&mut self, body: &ast::SetExpr) -> Result<(Plan, Scope)> {
        match body {
            ast::SetExpr::Select(s) => {
                let (plan, scope, _) = self.bind_select(s, &[])?;
                Ok((plan, scope))
            }
            ast::SetExpr::Query(q) => self.bind_query(q),
            ast::SetExpr::Values(v) => self.bind_values(v),
            ast::SetExpr::SetOperation { left, op, set_quantifier, right } => {
                let (lp, ls) = self.bind_set_expr(left)?;
                let (rp, rs) = self.bind_set_expr(right)?;
                if ls.columns.len() != rs.columns.len() {
                    bail!(
                        ColumnCountMismatch,
                        "each {op} query must have the same number of columns ({} vs {})",
                        ls.columns.len(),
                        rs.columns.len()
                    );
                }
                let kind = match op {
                    ast::SetOperator::Union => SetOpKind::Union,
                    ast::SetOperator::Intersect => SetOpKind::Intersect,
                    ast::SetOperator::Except | ast::SetOperator::Minus => SetOpKind::Except,
                };
                let all = match set_quantifier {
                    ast::SetQuantifier::All => true,
                    ast::SetQuantifier::Distinct | ast::SetQuantifier::None => false,
                    q => bail!(FeatureNotSupported, "{op} {q} is not supported"),
                };
                let mut scope = ls;
                for (l, r) in scope.columns.iter_mut().zip(&rs.columns) {
                    l.table = None;
                    l.data_type = match (l.data_type, r.data_type) {
                        (Some(a), Some(b)) if a != b && a.is_numeric() && b.is_numeric() => {
                            Some(DataType::numeric_result(a, b))
                        }
                        (a, b) => a.or(b),
                    };
                }
                Ok((Plan::SetOp { kind, all, left: lp.boxed(), right: rp.boxed() }, scope))
            }
            other => bail!(FeatureNotSupported, "query form {other} is not supported"),
        }
    }

    pub fn bind_values(&mut self, v: &ast::Values) -> Result<(Plan, Scope)> {
        let empty = Scope::default();
        let width = v.rows.first().map_or(0, |r| r.len());
        let mut rows = Vec::with_capacity(v.rows.len());
        for r in &v.rows {
            if r.len() != width {
                bail!(ColumnCountMismatch, "VALUES lists must all be the same length ({width} vs {})", r.len());
            }
            rows.push(r.iter().map(|e| self.bind_expr(e, &empty)).collect::<Result<Vec<_>>>()?);
        }
        let columns = (0..width)
            .map(|i| ScopeColumn {
                table: None,
                name: format!("C{}", i + 1),
                data_type: rows.iter().find_map(|r| infer_type(&r[i], &[])),
                hidden: false,
            })
            .collect();
        Ok((Plan::Values { rows, width }, Scope { columns }))
    }

    /// Sort the output of a set operation by output columns.
    fn order_output(&mut self, plan: Plan, scope: &Scope, order_by: &[ast::OrderByExpr]) -> Result<Plan> {
        if order_by.is_empty() {
            return Ok(plan);
        }
        let mut keys = Vec::new();
        for o in order_by {
            let expr = match output_reference(&o.expr, scope, &[])? {
                Some(i) => Expr::Column(i),
                None => self.bind_expr(&o.expr, scope)?,
            };
            keys.push(sort_key(expr, o));
        }
        Ok(Plan::Sort { input: plan.boxed(), keys })
    }

    /// Bind one SELECT; returns the plan, its output scope (including hidden
    /// sort columns) and the number of visible columns.
    fn bind_select(&mut self, s: &ast::Select, order_by: &[ast::OrderByExpr]) -> Result<(Plan, Scope, usize)> {
        if s.top.is_some() || s.into.is_some() || !s.lateral_views.is_empty() || s.qualify.is_some() {
            bail!(FeatureNotSupported, "this SELECT form is not supported");
        }
        let (mut plan, from_scope) = self.bind_from(&s.from)?;
        if let Some(w) = &s.selection {
            if contains_aggregate(w) {
                bail!(AggregateMisuse, "aggregate functions are not allowed in WHERE");
            }
            let predicate = self.bind_expr(w, &from_scope)?;
            plan = Plan::Filter { input: plan.boxed(), predicate };
        }
        let group_exprs: &[ast::Expr] = match &s.group_by {
            ast::GroupByExpr::Expressions(v, m) if m.is_empty() => v,
            _ => bail!(FeatureNotSupported, "this GROUP BY form is not supported"),
        };
        let aggregated = !group_exprs.is_empty()
            || s.having.is_some()
            || s.projection.iter().any(|p| match p {
                ast::SelectItem::UnnamedExpr(e) | ast::SelectItem::ExprWithAlias { expr: e, .. } => {
                    contains_aggregate(e)
                }
                _ => false,
            })
            || order_by.iter().any(|o| contains_aggregate(&o.expr));

        let mut agg = None;
        if aggregated {
            let mut group_by = Vec::new();
            for g in group_exprs {
                group_by.push(self.bind_group_key(g, s, &from_scope)?);
            }
            agg = Some(AggContext { group_by, aggregates: Vec::new(), input: from_scope.clone() });
        }

        // The select list.
        let mut exprs: Vec<Expr> = Vec::new();
        let mut columns: Vec<ScopeColumn> = Vec::new();
        for item in &s.projection {
            match item {
                ast::SelectItem::Wildcard(_) | ast::SelectItem::QualifiedWildcard(..) => {
                    let qualifier = match item {
                        ast::SelectItem::QualifiedWildcard(ast::SelectItemQualifiedWildcardKind::ObjectName(n), _) => {
                            Some(object_name(n))
                        }
                        ast::SelectItem::QualifiedWildcard(..) => {
                            bail!(FeatureNotSupported, "this wildcard form is not supported")
                        }
                        _ => None,
                    };
                    if agg.is_some() {
                        bail!(GroupingError, "SELECT * cannot be used with GROUP BY or aggregates");
                    }
                    if let Some(q) = &qualifier {
                        if !from_scope.has_table(q) {
                            bail!(UndefinedTable, "table or alias {q} is not in the FROM clause");
                        }
                    }
                    for (i, c) in from_scope.columns.iter().enumerate() {
                        let visible = match &qualifier {
                            Some(q) => c.table.as_deref() == Some(q.as_str()),
                            None => !c.hidden,
                        };
                        if visible {
                            exprs.push(Expr::Column(i));
                            columns.push(ScopeColumn { hidden: false, ..c.clone() });
                        }
                    }
                }
                ast::SelectItem::UnnamedExpr(e) | ast::SelectItem::ExprWithAlias { expr: e, .. } => {
                    let bound = self.bind(e, &from_scope, &mut agg)?;
                    let (table, name) = match item {
                        ast::SelectItem::ExprWithAlias { alias, .. } => (None, ident_name(alias)),
                        _ => match (&bound, e) {
                            (Expr::Column(i), _) if agg.is_none() => {
                                (from_scope.columns[*i].table.clone(), from_scope.columns[*i].name.clone())
                            }
                            (_, ast::Expr::Identifier(id)) => (None, ident_name(id)),
                            (_, ast::Expr::CompoundIdentifier(p)) => {
                                (None, p.last().map(ident_name).unwrap_or_default())
                            }
                            _ => (None, format!("C{}", columns.len() + 1)),
                        },
                    };
                    exprs.push(bound);
                    columns.push(ScopeColumn { table, name, data_type: None, hidden: false });
                }
                ast::SelectItem::ExprWithAliases { .. } => {
                    bail!(FeatureNotSupported, "multiple aliases are not supported")
                }
            }
        }

        let having = match &s.having {
            Some(h) => Some(self.bind(h, &from_scope, &mut agg)?),
            None => None,
        };
        // ORDER BY: output references first, else expressions (maybe hidden).
        let visible = exprs.len();
        let mut keys = Vec::new();
        for o in order_by {
            let out_scope = Scope { columns: columns.clone() };
            let expr = match output_reference(&o.expr, &out_scope, &s.projection)? {
                Some(i) => Expr::Column(i),
                None => {
                    let bound = self.bind(&o.expr, &from_scope, &mut agg)?;
                    match exprs.iter().position(|e| *e == bound) {
                        Some(i) => Expr::Column(i),
                        None => {
                            exprs.push(bound);
                            columns.push(ScopeColumn {
                                table: None,
                                name: String::new(),
                                data_type: None,
                                hidden: true,
                            });
                            Expr::Column(exprs.len() - 1)
                        }
                    }
                }
            };
            keys.push(sort_key(expr, o));
        }

        // Types of the row the projection reads.
        let input_types = match &agg {
            Some(ctx) => {
                let from_types = from_scope.types();
                let mut t: Vec<Option<DataType>> = ctx.group_by.iter().map(|g| infer_type(g, &from_types)).collect();
                t.extend(
                    ctx.aggregates
                        .iter()
                        .map(|a| a.kind.result_type(a.arg.as_ref().and_then(|x| infer_type(x, &from_types)))),
                );
                t
            }
            None => from_scope.types(),
        };
        for (c, e) in columns.iter_mut().zip(&exprs) {
            c.data_type = infer_type(e, &input_types);
        }
        if let Some(ctx) = agg {
            plan = Plan::Aggregate { input: plan.boxed(), group_by: ctx.group_by, aggregates: ctx.aggregates };
        }
        if let Some(predicate) = having {
            plan = Plan::Filter { input: plan.boxed(), predicate };
        }
        plan = Plan::Project { input: plan.boxed(), exprs };
        match &s.distinct {
            None | Some(ast::Distinct::All) => {}
            Some(ast::Distinct::Distinct) => {
                if columns.len() > visible {
                    bail!(
                        InvalidColumnReference,
                        "for SELECT DISTINCT, ORDER BY expressions must appear in the select list"
                    );
                }
                plan = Plan::Distinct { input: plan.boxed() };
            }
            Some(ast::Distinct::On(_)) => bail!(FeatureNotSupported, "DISTINCT ON is not supported"),
        }
        if !keys.is_empty() {
            plan = Plan::Sort { input: plan.boxed(), keys };
        }
        Ok((plan, Scope { columns }, visible))
    }

    /// A GROUP BY key: an ordinal or output alias refers to the select list.
    fn bind_group_key(&mut self, g: &ast::Expr, s: &ast::Select, from_scope: &Scope) -> Result<Expr> {
        let item_expr = |i: usize| -> Result<&ast::Expr> {
            match s.projection.get(i) {
                Some(ast::SelectItem::UnnamedExpr(e)) | Some(ast::SelectItem::ExprWithAlias { expr: e, .. }) => Ok(e),
                _ => bail!(InvalidColumnReference, "GROUP BY position {} is not in the select list", i + 1),
            }
        };
        if let ast::Expr::Value(v) = g {
            if let ast::Value::Number(n, _) = &v.value {
                let pos: usize =
                    n.parse().map_err(|_| err!(InvalidColumnReference, "invalid GROUP BY position {n}"))?;
                if pos == 0 {
                    bail!(InvalidColumnReference, "GROUP BY position 0 is not in the select list");
                }
                let e = item_expr(pos - 1)?.clone();
                if contains_aggregate(&e) {
                    bail!(GroupingError, "aggregate functions are not allowed in GROUP BY");
                }
                return self.bind_expr(&e, from_scope);
            }
        }
        match self.bind_expr(g, from_scope) {
            Ok(e) => Ok(e),
            Err(e) if e.code() == joule_common::ErrorCode::UndefinedColumn => {
                // An output alias.
                if let ast::Expr::Identifier(id) = g {
                    let name = ident_name(id);
                    for item in &s.projection {
                        if let ast::SelectItem::ExprWithAlias { expr, alias } = item {
                            if ident_name(alias) == name && !contains_aggregate(expr) {
                                return self.bind_expr(&expr.clone(), from_scope);
                            }
                        }
                    }
                }
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Bind a FROM list; an empty one yields a single empty row.
    pub fn bind_from(&mut self, from: &[ast::TableWithJoins]) -> Result<(Plan, Scope)> {
        let mut result: Option<(Plan, Scope)> = None;
        for twj in from {
            let (p, s) = self.bind_table_with_joins(twj)?;
            result = Some(match result {
                None => (p, s),
                Some((lp, ls)) => {
                    let scope = concat_scopes(&ls, &s);
                    (
                        Plan::NestedLoopJoin {
                            left: lp.boxed(),
                            right: p.boxed(),
                            kind: JoinKind::Inner,
                            predicate: None,
                        },
                        scope,
                    )
                }
            });
        }
        Ok(result.unwrap_or_else(|| (Plan::Values { rows: vec![vec![]], width: 0 }, Scope::default())))
    }

    fn bind_table_with_joins(&mut self, twj: &ast::TableWithJoins) -> Result<(Plan, Scope)> {
        let (mut plan, mut scope) = self.bind_table_factor(&twj.relation)?;
        for j in &twj.joins {
            let (rp, mut rs) = self.bind_table_factor(&j.relation)?;
            use ast::JoinOperator as J;
            let (kind, constraint) = match &j.join_operator {
                J::Join(c) | J::Inner(c) => (JoinKind::Inner, Some(c)),
                J::Left(c) | J::LeftOuter(c) => (JoinKind::Left, Some(c)),
                J::Right(c) | J::RightOuter(c) => (JoinKind::Right, Some(c)),
                J::FullOuter(c) => (JoinKind::Full, Some(c)),
                J::CrossJoin(_) => (JoinKind::Inner, None),
                other => bail!(FeatureNotSupported, "join type {other:?} is not supported"),
            };
            let left_width = scope.columns.len();
            let mut using_cols: Vec<String> = Vec::new();
            match constraint {
                Some(ast::JoinConstraint::Using(cols)) => using_cols = cols.iter().map(object_name).collect(),
                Some(ast::JoinConstraint::Natural) => {
                    using_cols = rs
                        .columns
                        .iter()
                        .filter(|c| !c.hidden && scope.columns.iter().any(|l| !l.hidden && l.name == c.name))
                        .map(|c| c.name.clone())
                        .collect();
                }
                _ => {}
            }
            let mut conjuncts = Vec::new();
            for name in &using_cols {
                let li = scope
                    .resolve(None, name)?
                    .ok_or_else(|| err!(UndefinedColumn, "column {name} in USING does not exist in the left table"))?;
                let ri = rs
                    .resolve(None, name)?
                    .ok_or_else(|| err!(UndefinedColumn, "column {name} in USING does not exist in the right table"))?;
                conjuncts.push(Expr::compare(crate::expr::CmpOp::Eq, Expr::Column(li), Expr::Column(left_width + ri)));
                rs.columns[ri].hidden = true;
            }
            let combined = concat_scopes(&scope, &rs);
            if let Some(ast::JoinConstraint::On(e)) = constraint {
                if contains_aggregate(e) {
                    bail!(AggregateMisuse, "aggregate functions are not allowed in JOIN conditions");
                }
                conjuncts.push(self.bind_expr(e, &combined)?);
            }
            plan = Plan::NestedLoopJoin {
                left: plan.boxed(),
                right: rp.boxed(),
                kind,
                predicate: Expr::conjunction(conjuncts),
            };
            scope = combined;
        }
        Ok((plan, scope))
    }

    fn bind_table_factor(&mut self, tf: &ast::TableFactor) -> Result<(Plan, Scope)> {
        match tf {
            ast::TableFactor::Table { name, alias, args: None, .. } => {
                let (db, table) = self.split_name(name)?;
                let alias_name = alias.as_ref().map(|a| ident_name(&a.name));
                match self.catalog.relation(&db, &table)? {
                    Relation::Table(t) => {
                        let qual = alias_name.unwrap_or_else(|| t.name.clone());
                        let mut scope = Scope {
                            columns: t
                                .columns
                                .iter()
                                .map(|c| ScopeColumn {
                                    table: Some(qual.clone()),
                                    name: c.name.clone(),
                                    data_type: Some(c.data_type),
                                    hidden: false,
                                })
                                .collect(),
                        };
                        apply_column_aliases(&mut scope, alias)?;
                        Ok((Plan::Scan { table: t.id, access: crate::plan::Access::Full, filter: None }, scope))
                    }
                    Relation::View(v) => {
                        if self.view_depth >= MAX_VIEW_DEPTH {
                            bail!(InvalidSchemaDefinition, "view {} is nested too deeply (recursive view?)", v.name);
                        }
                        let parsed = crate::parser::parse_single(&v.query_sql)?;
                        let crate::parser::Statement::Standard(stmt) = parsed.statement else {
                            bail!(Internal, "view {} has an invalid query", v.name);
                        };
                        let ast::Statement::Query(q) = *stmt else {
                            bail!(Internal, "view {} has an invalid query", v.name);
                        };
                        // A view sees only its own database and no outer scopes.
                        let saved_outer = std::mem::take(&mut self.outer);
                        let saved_db = std::mem::replace(&mut self.database, v.database.clone());
                        self.view_depth += 1;
                        let r = self.bind_query(&q);
                        self.view_depth -= 1;
                        self.database = saved_db;
                        self.outer = saved_outer;
                        let (plan, mut scope) = r?;
                        let qual = alias_name.unwrap_or_else(|| v.name.clone());
                        for (i, c) in scope.columns.iter_mut().enumerate() {
                            c.table = Some(qual.clone());
                            if let Some(n) = v.column_names.get(i) {
                                c.name = n.clone();
                            }
                        }
                        apply_column_aliases(&mut scope, alias)?;
                        Ok((plan, scope))
                    }
                }
            }
            ast::TableFactor::Derived { lateral: false, subquery, alias, .. } => {
                let (plan, mut scope) = self.bind_query(subquery)?;
                let qual = alias.as_ref().map(|a| ident_name(&a.name));
                for c in scope.columns.iter_mut() {
                    c.table = qual.clone();
                }
                apply_column_aliases(&mut scope, alias)?;
                Ok((plan, scope))
            }
            ast::TableFactor::NestedJoin { table_with_joins, alias } => {
                let (plan, mut scope) = self.bind_table_with_joins(table_with_joins)?;
                if let Some(a) = alias {
                    let q = ident_name(&a.name);
                    scope.columns.iter_mut().for_each(|c| c.table = Some(q.clone()));
                }
                Ok((plan, scope))
            }
            other => bail!(FeatureNotSupported, "FROM item {other} is not supported"),
        }
    }

    /// Split `db.table` / `table` into (database, table), upper-cased.
    pub fn split_name(&self, name: &ast::ObjectName) -> Result<(String, String)> {
        let parts: Vec<String> = name
            .0
            .iter()
            .map(|p| match p {
                ast::ObjectNamePart::Identifier(i) => Ok(ident_name(i)),
                _ => Err(err!(SyntaxError, "invalid name {name}")),
            })
            .collect::<Result<_>>()?;
        match parts.as_slice() {
            [t] => Ok((self.database.clone(), t.clone())),
            [d, t] => Ok((d.clone(), t.clone())),
            _ => bail!(SyntaxError, "invalid name {name}: use table or database.table"),
        }
    }
}

fn apply_column_aliases(scope: &mut Scope, alias: &Option<ast::TableAlias>) -> Result<()> {
    if let Some(a) = alias {
        if a.columns.len() > scope.columns.len() {
            bail!(
                ColumnCountMismatch,
                "{} has {} columns but {} column aliases were given",
                ident_name(&a.name),
                scope.columns.len(),
                a.columns.len()
            );
        }
        for (c, n) in scope.columns.iter_mut().zip(&a.columns) {
            c.name = ident_name(&n.name);
        }
    }
    Ok(())
}

fn concat_scopes(a: &Scope, b: &Scope) -> Scope {
    Scope { columns: a.columns.iter().chain(&b.columns).cloned().collect() }
}

fn sort_key(expr: Expr, o: &ast::OrderByExpr) -> SortKey {
    let descending = matches!(o.options.sort, Some(ast::OrderBySort::Desc));
    SortKey { expr, descending, nulls_first: o.options.nulls_first.unwrap_or(!descending) }
}

/// ORDER BY naming an output column: a 1-based ordinal or an output alias.
fn output_reference(e: &ast::Expr, out: &Scope, projection: &[ast::SelectItem]) -> Result<Option<usize>> {
    match e {
        ast::Expr::Value(v) => match &v.value {
            ast::Value::Number(n, _) => {
                let pos: usize =
                    n.parse().map_err(|_| err!(InvalidColumnReference, "invalid ORDER BY position {n}"))?;
                if pos == 0 || pos > out.columns.iter().filter(|c| !c.hidden).count() {
                    bail!(InvalidColumnReference, "ORDER BY position {pos} is not in the select list");
                }
                Ok(Some(pos - 1))
            }
            _ => Ok(None),
        },
        ast::Expr::Identifier(id) => {
            let name = ident_name(id);
            // Only aliases written in the select list, or set-operation outputs.
            let aliased: Vec<usize> = if projection.is_empty() {
                out.columns.iter().enumerate().filter(|(_, c)| !c.hidden && c.name == name).map(|(i, _)| i).collect()
            } else {
                projection
                    .iter()
                    .enumerate()
                    .filter(
                        |(_, p)| matches!(p, ast::SelectItem::ExprWithAlias { alias, .. } if ident_name(alias) == name),
                    )
                    .map(|(i, _)| i)
                    .collect()
            };
            Ok(aliased.first().copied().filter(|i| *i < out.columns.len()))
        }
        _ => Ok(None),
    }
}
