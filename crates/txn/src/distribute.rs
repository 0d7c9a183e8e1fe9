//! Multi-partition statements: how a statement that no single partition can
//! answer is split into fragments the partitions run and a final step the
//! coordinator runs over their results.
//!
//! A read becomes a [`DistQuery`]: fragments (each run on every partition,
//! or on any one partition when it reads only replicated tables) whose rows
//! fill the `Plan::Input` slots of a combine plan. The split walks the plan
//! bottom-up, classifying each subtree as
//!
//! * *replicated*: reads only replicated tables; any one partition has it all;
//! * *distributed*: its result over all data is the union of its results on
//!   each partition (scans of partitioned tables, filters and projections of
//!   those, joins of one partitioned side with replicated tables where the
//!   partitioned side is preserved, UNION ALL of such);
//! * *combined*: computed at the coordinator from fragment results —
//!   aggregates (partial aggregates on the partitions, COUNT/SUM/MIN/MAX
//!   merged at the coordinator; DISTINCT aggregates and AVG over gathered
//!   rows), ORDER BY with LIMIT (each partition sends its first
//!   `limit + offset` rows), DISTINCT, set operations, and joins that need
//!   data from several partitions (each side's rows, filtered on the
//!   partitions, joined at the coordinator).
//!
//! Materialized views of partitioned tables that do not group by the
//! partition column hold partial groups on each partition; they are
//! re-aggregated at the coordinator before anything else reads them.
//!
//! Shapes outside these rules (index lookups into a partitioned table from
//! rows of every partition, subqueries reading partitioned tables inside a
//! distributed part) fall back to gathering every table the statement reads
//! to the coordinator and running the original plan there — always correct,
//! costly for big tables.
//!
//! Writes: UPDATE, DELETE and TRUNCATE run on every partition (a replicated
//! table's copy is the same everywhere); an INSERT whose rows span
//! partitions computes its rows first (as a [`DistQuery`]) and sends each
//! partition the rows it owns.

use joule_common::types::ArithOp;
use joule_common::{bail, Result, Row, Value};
use joule_sql::catalog::{Catalog, MaterializedView, TableDef, TableId};
use joule_sql::expr::{AggCall, AggKind, Expr};
use joule_sql::optimizer::width;
use joule_sql::plan::{Access, IndexLookup, JoinKind, Plan, SetOpKind};
use joule_sql::planner::{Planned, PlannedKind};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// A plan one or all partitions run.
#[derive(Clone, Debug, PartialEq)]
pub struct Fragment {
    pub plan: Plan,
    /// Run on every partition (and concatenate); otherwise on any one.
    pub everywhere: bool,
    /// Run everywhere, but only on the partitions whose value ranges its
    /// conditions overlap (see `prune.rs`).
    pub prune: Option<crate::prune::RangePrune>,
}

/// How the coordinator turns fragment results into the statement's rows.
#[derive(Clone, Debug, PartialEq)]
pub enum Combine {
    /// The rows of fragment 0, as they are.
    Concat,
    /// Run this plan over the fragments' rows (its `Plan::Input` slots).
    Plan(Plan),
    /// Load the fragments' rows (full copies of these tables, in order) into
    /// scratch tables and run the original plan over them.
    Gather { tables: Vec<TableId>, plan: Plan },
}

/// A read across partitions.
#[derive(Clone, Debug, PartialEq)]
pub struct DistQuery {
    pub fragments: Vec<Fragment>,
    pub combine: Combine,
}

/// How a statement runs inside a multi-partition transaction.
#[derive(Clone, Debug)]
pub enum MpStatement {
    /// Pinned to one partition: the single-partition plan on the owner of
    /// the key.
    Pinned,
    /// A read.
    Read(DistQuery),
    /// A write every partition runs (UPDATE/DELETE/TRUNCATE, or any write
    /// of a replicated table from replicated data). For partitioned tables
    /// the counts add up; for replicated ones each copy reports the same.
    /// An UPDATE or DELETE of a range-partitioned table whose conditions
    /// exclude ranges runs only where `prune` says.
    Broadcast { planned: Arc<Planned>, replicated: bool, prune: Option<crate::prune::RangePrune> },
    /// An INSERT whose rows are computed first, then sent to the partitions
    /// that own them (all partitions for a replicated table).
    Insert { source: DistQuery, planned: Arc<Planned>, route: Option<(usize, joule_sql::catalog::KeyRoute)> },
    /// A statement without data (EXPLAIN): run on any partition.
    Local,
}

/// Classify a statement planned for multi-partition execution.
pub fn mp_statement(planned: Arc<Planned>, catalog: &Catalog) -> Result<MpStatement> {
    if matches!(planned.partitioning, joule_sql::plan::Partitioning::Single(..)) {
        return Ok(MpStatement::Pinned);
    }
    Ok(match &planned.kind {
        PlannedKind::Query(q) => MpStatement::Read(split_query(&q.root, catalog)),
        PlannedKind::Insert(i) => {
            let def = table(catalog, i.table)?;
            let source_reads_partitioned = reads_partitioned(&i.source, catalog);
            if !catalog.is_partitioned(def) && !source_reads_partitioned {
                MpStatement::Broadcast { planned: planned.clone(), replicated: true, prune: None }
            } else {
                let route =
                    def.partition_column.and_then(|pc| i.columns.iter().position(|c| *c == pc)).zip(def.key_route());
                if catalog.is_partitioned(def) && route.is_none() {
                    bail!(
                        FeatureNotSupported,
                        "INSERT into partitioned table {} must give its partition column a value",
                        def.name
                    );
                }
                MpStatement::Insert { source: split_query(&i.source, catalog), planned: planned.clone(), route }
            }
        }
        PlannedKind::Update(u) => {
            let assignments: Vec<&Expr> = u.assignments.iter().map(|(_, e)| e).collect();
            broadcast(&planned, u.table, &u.source, &assignments, catalog)?
        }
        PlannedKind::Delete(d) => broadcast(&planned, d.table, &d.source, &[], catalog)?,
        PlannedKind::Truncate(t) => {
            let replicated = !catalog.is_partitioned(table(catalog, *t)?);
            MpStatement::Broadcast { planned: planned.clone(), replicated, prune: None }
        }
        PlannedKind::Explain(_) | PlannedKind::UseDatabase(_) => MpStatement::Local,
        PlannedKind::Ddl(_) => bail!(Internal, "DDL reached multi-partition statement planning"),
    })
}

/// UPDATE/DELETE on every partition: each partition changes its own rows,
/// so the statement may read (in subqueries, in SET expressions) only
/// replicated tables — a partitioned table would be seen only in part.
fn broadcast(
    planned: &Arc<Planned>,
    target: TableId,
    source: &Plan,
    assignments: &[&Expr],
    catalog: &Catalog,
) -> Result<MpStatement> {
    let def = table(catalog, target)?;
    let mut exprs = node_exprs(source);
    exprs.extend(assignments);
    if exprs.iter().any(|e| expr_reads_partitioned(e, catalog)) {
        bail!(
            FeatureNotSupported,
            "a multi-partition UPDATE or DELETE of {} may read only replicated tables in its subqueries",
            def.name
        );
    }
    let replicated = !catalog.is_partitioned(def);
    // The source scans the target table: its conditions say which
    // partitions can hold rows to change.
    let prune = if replicated { None } else { crate::prune::RangePrune::of(source, catalog) };
    Ok(MpStatement::Broadcast { planned: planned.clone(), replicated, prune })
}

fn table(catalog: &Catalog, id: TableId) -> Result<&TableDef> {
    match catalog.table_by_id(id) {
        Some(t) => Ok(t),
        None => bail!(Internal, "table #{id} missing from the catalog"),
    }
}

/// Split a read into fragments and a combine step.
pub fn split_query(plan: &Plan, catalog: &Catalog) -> DistQuery {
    let mut b = Splitter { catalog, fragments: Vec::new() };
    match b.part(plan) {
        Some(part) => {
            let w = width(plan, catalog);
            let combine = b.at_coordinator(part, w);
            if let (Plan::Input { slot: 0, .. }, [_]) = (&combine, b.fragments.as_slice()) {
                DistQuery { fragments: b.fragments, combine: Combine::Concat }
            } else {
                DistQuery { fragments: b.fragments, combine: Combine::Plan(combine) }
            }
        }
        None => gather(plan, catalog),
    }
}

/// The fallback: every table the plan reads, whole, to the coordinator.
fn gather(plan: &Plan, catalog: &Catalog) -> DistQuery {
    let mut tables = BTreeSet::new();
    tables_read(plan, &mut tables);
    let tables: Vec<TableId> = tables.into_iter().collect();
    let fragments = tables
        .iter()
        .map(|t| Fragment {
            plan: Plan::Scan { table: *t, access: Access::Full, filter: None },
            everywhere: catalog.table_by_id(*t).is_some_and(|d| catalog.is_partitioned(d)),
            prune: None,
        })
        .collect();
    DistQuery { fragments, combine: Combine::Gather { tables, plan: plan.clone() } }
}

/// Where a subtree can run.
enum Part {
    Replicated(Plan),
    Distributed(Plan),
    Coordinator(Plan),
}

struct Splitter<'a> {
    catalog: &'a Catalog,
    fragments: Vec<Fragment>,
}

impl Splitter<'_> {
    fn partitioned(&self, id: TableId) -> bool {
        self.catalog.table_by_id(id).is_some_and(|t| self.catalog.is_partitioned(t))
    }

    /// Turn a part into a coordinator-side plan, sending what partitions
    /// must run as a fragment.
    fn at_coordinator(&mut self, part: Part, width: usize) -> Plan {
        let (plan, everywhere) = match part {
            Part::Coordinator(p) => return p,
            Part::Replicated(p) => (p, false),
            Part::Distributed(p) => (p, true),
        };
        let prune = if everywhere { crate::prune::RangePrune::of(&plan, self.catalog) } else { None };
        self.fragments.push(Fragment { plan, everywhere, prune });
        Plan::Input { slot: self.fragments.len() - 1, width }
    }

    fn part(&mut self, plan: &Plan) -> Option<Part> {
        let catalog = self.catalog;
        // Expressions at this node may read replicated tables (every
        // partition has them) unless the node runs at the coordinator.
        let exprs = node_exprs(plan);
        if exprs.iter().any(|e| expr_reads_partitioned(e, catalog)) {
            return None;
        }
        let has_subquery = exprs.iter().any(|e| has_subquery(e));
        let coord = |p: Plan| if has_subquery { None } else { Some(Part::Coordinator(p)) };
        match plan {
            Plan::Scan { table, access, filter } => {
                let def = catalog.table_by_id(*table)?;
                if !catalog.is_partitioned(def) {
                    return Some(Part::Replicated(plan.clone()));
                }
                match (&def.view, def.partition_column) {
                    (Some(view), None) => self.reaggregated_view(def, view, access, filter),
                    _ => Some(Part::Distributed(plan.clone())),
                }
            }
            Plan::Values { .. } => Some(Part::Replicated(plan.clone())),
            Plan::Filter { input, predicate } => {
                let rebuild = |i: Plan| Plan::Filter { input: i.boxed(), predicate: predicate.clone() };
                match self.part(input)? {
                    Part::Replicated(i) => Some(Part::Replicated(rebuild(i))),
                    Part::Distributed(i) => Some(Part::Distributed(rebuild(i))),
                    Part::Coordinator(i) => coord(rebuild(i)),
                }
            }
            Plan::Project { input, exprs } => {
                let rebuild = |i: Plan| Plan::Project { input: i.boxed(), exprs: exprs.clone() };
                match self.part(input)? {
                    Part::Replicated(i) => Some(Part::Replicated(rebuild(i))),
                    Part::Distributed(i) => Some(Part::Distributed(rebuild(i))),
                    Part::Coordinator(i) => coord(rebuild(i)),
                }
            }
            Plan::NestedLoopJoin { left, right, kind, .. } | Plan::HashJoin { left, right, kind, .. } => {
                let (lw, rw) = (width(left, catalog), width(right, catalog));
                let rebuild = |l: Plan, r: Plan| match plan.clone() {
                    Plan::NestedLoopJoin { kind, predicate, .. } => {
                        Plan::NestedLoopJoin { left: l.boxed(), right: r.boxed(), kind, predicate }
                    }
                    Plan::HashJoin { kind, left_keys, right_keys, residual, .. } => {
                        Plan::HashJoin { left: l.boxed(), right: r.boxed(), kind, left_keys, right_keys, residual }
                    }
                    other => other,
                };
                match (self.part(left)?, self.part(right)?, kind) {
                    (Part::Replicated(l), Part::Replicated(r), _) => Some(Part::Replicated(rebuild(l, r))),
                    (Part::Distributed(l), Part::Replicated(r), JoinKind::Inner | JoinKind::Left)
                    | (Part::Replicated(l), Part::Distributed(r), JoinKind::Inner | JoinKind::Right) => {
                        Some(Part::Distributed(rebuild(l, r)))
                    }
                    (l, r, _) => {
                        let l = self.at_coordinator(l, lw);
                        let r = self.at_coordinator(r, rw);
                        coord(rebuild(l, r))
                    }
                }
            }
            Plan::IndexJoin { left, table, kind, .. } => {
                let right_partitioned = self.partitioned(*table);
                let needs_reaggregation = catalog
                    .table_by_id(*table)
                    .is_some_and(|d| right_partitioned && d.view.is_some() && d.partition_column.is_none());
                let rebuild = |l: Plan| match plan.clone() {
                    Plan::IndexJoin { table, index, keys, kind, residual, .. } => {
                        Plan::IndexJoin { left: l.boxed(), table, index, keys, kind, residual }
                    }
                    other => other,
                };
                match (self.part(left)?, right_partitioned, kind) {
                    (Part::Replicated(l), false, _) => Some(Part::Replicated(rebuild(l))),
                    (Part::Distributed(l), false, JoinKind::Inner | JoinKind::Left) => {
                        Some(Part::Distributed(rebuild(l)))
                    }
                    (Part::Replicated(l), true, JoinKind::Inner) if !needs_reaggregation => {
                        Some(Part::Distributed(rebuild(l)))
                    }
                    _ => None,
                }
            }
            Plan::Aggregate { input, group_by, aggregates } => {
                let rebuild = |i: Plan| Plan::Aggregate {
                    input: i.boxed(),
                    group_by: group_by.clone(),
                    aggregates: aggregates.clone(),
                };
                match self.part(input)? {
                    Part::Replicated(i) => Some(Part::Replicated(rebuild(i))),
                    Part::Coordinator(i) => coord(rebuild(i)),
                    Part::Distributed(i) => {
                        let mergeable = aggregates.iter().all(|a| !a.distinct && a.kind != AggKind::Avg);
                        if mergeable && !has_subquery {
                            Some(self.two_phase(i, group_by, aggregates))
                        } else {
                            let w = width(input, catalog);
                            let i = self.at_coordinator(Part::Distributed(i), w);
                            coord(rebuild(i))
                        }
                    }
                }
            }
            Plan::Sort { input, keys } => {
                let w = width(input, catalog);
                match self.part(input)? {
                    Part::Replicated(i) => Some(Part::Replicated(Plan::Sort { input: i.boxed(), keys: keys.clone() })),
                    p => {
                        let i = self.at_coordinator(p, w);
                        coord(Plan::Sort { input: i.boxed(), keys: keys.clone() })
                    }
                }
            }
            Plan::Limit { input, limit, offset } => {
                let w = width(input, catalog);
                let rebuild = |i: Plan| Plan::Limit { input: i.boxed(), limit: limit.clone(), offset: offset.clone() };
                match self.part(input)? {
                    Part::Replicated(i) => Some(Part::Replicated(rebuild(i))),
                    Part::Distributed(i) => {
                        // Each partition sends at most limit + offset rows.
                        let pushed = self.pushed_limit(i, limit, offset);
                        let i = self.at_coordinator(Part::Distributed(pushed), w);
                        coord(rebuild(i))
                    }
                    Part::Coordinator(i) => {
                        let i = self.push_limit_into_sorted_fragment(i, limit, offset);
                        coord(rebuild(i))
                    }
                }
            }
            Plan::Distinct { input } => {
                let w = width(input, catalog);
                match self.part(input)? {
                    Part::Replicated(i) => Some(Part::Replicated(Plan::Distinct { input: i.boxed() })),
                    Part::Distributed(i) => {
                        let i = self.at_coordinator(Part::Distributed(Plan::Distinct { input: i.boxed() }), w);
                        coord(Plan::Distinct { input: i.boxed() })
                    }
                    Part::Coordinator(i) => coord(Plan::Distinct { input: i.boxed() }),
                }
            }
            Plan::SetOp { kind, all, left, right } => {
                let (lw, rw) = (width(left, catalog), width(right, catalog));
                let rebuild =
                    |l: Plan, r: Plan| Plan::SetOp { kind: *kind, all: *all, left: l.boxed(), right: r.boxed() };
                match (self.part(left)?, self.part(right)?) {
                    (Part::Replicated(l), Part::Replicated(r)) => Some(Part::Replicated(rebuild(l, r))),
                    (Part::Distributed(l), Part::Distributed(r)) if *kind == SetOpKind::Union && *all => {
                        Some(Part::Distributed(rebuild(l, r)))
                    }
                    (l, r) => {
                        let l = self.at_coordinator(l, lw);
                        let r = self.at_coordinator(r, rw);
                        coord(rebuild(l, r))
                    }
                }
            }
            Plan::Input { .. } => None,
        }
    }

    /// Partial aggregates on every partition, merged at the coordinator.
    fn two_phase(&mut self, input: Plan, group_by: &[Expr], aggregates: &[AggCall]) -> Part {
        let k = group_by.len();
        let partial =
            Plan::Aggregate { input: input.boxed(), group_by: group_by.to_vec(), aggregates: aggregates.to_vec() };
        let slot = self.at_coordinator(Part::Distributed(partial), k + aggregates.len());
        let merged = aggregates
            .iter()
            .enumerate()
            .map(|(i, a)| AggCall {
                kind: match a.kind {
                    AggKind::CountStar | AggKind::Count | AggKind::Sum => AggKind::Sum,
                    other => other,
                },
                arg: Some(Expr::Column(k + i)),
                distinct: false,
            })
            .collect::<Vec<_>>();
        let agg =
            Plan::Aggregate { input: slot.boxed(), group_by: (0..k).map(Expr::Column).collect(), aggregates: merged };
        // SUM over no partial counts is NULL; a count is 0.
        let counts: Vec<usize> = aggregates
            .iter()
            .enumerate()
            .filter(|(_, a)| matches!(a.kind, AggKind::CountStar | AggKind::Count))
            .map(|(i, _)| k + i)
            .collect();
        if counts.is_empty() {
            return Part::Coordinator(agg);
        }
        let exprs = (0..k + aggregates.len())
            .map(|c| {
                if counts.contains(&c) {
                    Expr::Coalesce(vec![Expr::Column(c), Expr::Constant(Value::Integer(0))])
                } else {
                    Expr::Column(c)
                }
            })
            .collect();
        Part::Coordinator(Plan::Project { input: agg.boxed(), exprs })
    }

    fn pushed_limit(&self, input: Plan, limit: &Option<Expr>, offset: &Option<Expr>) -> Plan {
        let Some(limit) = limit else { return input };
        let total = match offset {
            // limit + offset, computed so that a huge LIMIT cannot overflow.
            Some(o) => Expr::Case {
                operand: None,
                whens: vec![(
                    Expr::Compare(
                        joule_sql::expr::CmpOp::Gt,
                        Box::new(limit.clone()),
                        Box::new(Expr::Arith(
                            ArithOp::Sub,
                            Box::new(Expr::Constant(Value::Integer(i64::MAX))),
                            Box::new(o.clone()),
                        )),
                    ),
                    Expr::Constant(Value::Integer(i64::MAX)),
                )],
                otherwise: Some(Box::new(Expr::Arith(ArithOp::Add, Box::new(limit.clone()), Box::new(o.clone())))),
            },
            None => limit.clone(),
        };
        Plan::Limit { input: input.boxed(), limit: Some(total), offset: None }
    }

    /// `LIMIT` over `Sort` over a fragment from every partition: each
    /// partition sorts and sends only its first `limit + offset` rows.
    fn push_limit_into_sorted_fragment(&mut self, coord: Plan, limit: &Option<Expr>, offset: &Option<Expr>) -> Plan {
        if let Plan::Sort { input, keys } = &coord {
            if let Plan::Input { slot, .. } = input.as_ref() {
                if let Some(f) = self.fragments.get(*slot).filter(|f| f.everywhere) {
                    let sorted = Plan::Sort { input: f.plan.clone().boxed(), keys: keys.clone() };
                    let pushed = self.pushed_limit(sorted, limit, offset);
                    self.fragments[*slot].plan = pushed;
                }
            }
        }
        coord
    }

    /// A view of a partitioned table without its partition column: each
    /// partition holds partial groups, merged here before the scan's filter.
    fn reaggregated_view(
        &mut self,
        def: &TableDef,
        view: &MaterializedView,
        access: &Access,
        filter: &Option<Expr>,
    ) -> Option<Part> {
        let k = view.group_by.len();
        // An index lookup on group columns selects whole groups: keep it on
        // the partitions. Any other index would cut through partial groups.
        let access = match access {
            Access::Index { index, lookup, .. } => {
                let idx = def.indexes.get(*index)?;
                let used = match lookup {
                    IndexLookup::Eq(keys) => keys.len(),
                    IndexLookup::In(_) => 1,
                    IndexLookup::Range { prefix, .. } => prefix.len() + 1,
                    IndexLookup::All => 0,
                };
                if idx.columns.iter().take(used).all(|c| *c < k) {
                    access.clone()
                } else {
                    // The lookup's condition (on an aggregate) left the
                    // filter; only the original plan over merged groups
                    // still has it.
                    return None;
                }
            }
            Access::Full => Access::Full,
        };
        let w = def.columns.len();
        let slot = self.at_coordinator(Part::Distributed(Plan::Scan { table: def.id, access, filter: None }), w);
        let aggregates = view
            .aggregates
            .iter()
            .enumerate()
            .map(|(i, (kind, _))| AggCall {
                kind: match kind {
                    AggKind::Min => AggKind::Min,
                    AggKind::Max => AggKind::Max,
                    _ => AggKind::Sum,
                },
                arg: Some(Expr::Column(k + i)),
                distinct: false,
            })
            .collect();
        let merged = Plan::Aggregate { input: slot.boxed(), group_by: (0..k).map(Expr::Column).collect(), aggregates };
        Some(Part::Coordinator(match filter {
            Some(f) => Plan::Filter { input: merged.boxed(), predicate: f.clone() },
            None => merged,
        }))
    }
}

/// Merge partial groups of a view without its partition column (for the
/// gather fallback): rows with equal group columns become one.
pub fn reaggregate(view: &MaterializedView, rows: Vec<Row>) -> Result<Vec<Row>> {
    let k = view.group_by.len();
    let mut groups: BTreeMap<Vec<Value>, Row> = BTreeMap::new();
    for row in rows {
        let key = row[..k].to_vec();
        match groups.get_mut(&key) {
            None => {
                groups.insert(key, row);
            }
            Some(acc) => {
                for (i, (kind, _)) in view.aggregates.iter().enumerate() {
                    let (a, b) = (&acc[k + i], &row[k + i]);
                    let merged = match (a.is_null(), b.is_null()) {
                        (_, true) => a.clone(),
                        (true, false) => b.clone(),
                        _ => match kind {
                            AggKind::Min if b.sql_cmp(a)?.is_some_and(|o| o.is_lt()) => b.clone(),
                            AggKind::Max if b.sql_cmp(a)?.is_some_and(|o| o.is_gt()) => b.clone(),
                            AggKind::Min | AggKind::Max => a.clone(),
                            _ => a.arith(ArithOp::Add, b)?,
                        },
                    };
                    acc[k + i] = merged;
                }
            }
        }
    }
    Ok(groups.into_values().collect())
}

/// Every expression a plan node holds (not its inputs').
fn node_exprs(plan: &Plan) -> Vec<&Expr> {
    let mut out: Vec<&Expr> = Vec::new();
    match plan {
        Plan::Scan { access, filter, .. } => {
            out.extend(filter);
            if let Access::Index { lookup, .. } = access {
                match lookup {
                    IndexLookup::Eq(k) | IndexLookup::In(k) => out.extend(k),
                    IndexLookup::Range { prefix, lower, upper } => {
                        out.extend(prefix);
                        out.extend(lower.iter().map(|(e, _)| e));
                        out.extend(upper.iter().map(|(e, _)| e));
                    }
                    IndexLookup::All => {}
                }
            }
        }
        Plan::Values { rows, .. } => out.extend(rows.iter().flatten()),
        Plan::Filter { predicate, .. } => out.push(predicate),
        Plan::Project { exprs, .. } => out.extend(exprs),
        Plan::NestedLoopJoin { predicate, .. } => out.extend(predicate),
        Plan::HashJoin { left_keys, right_keys, residual, .. } => {
            out.extend(left_keys);
            out.extend(right_keys);
            out.extend(residual);
        }
        Plan::IndexJoin { keys, residual, .. } => {
            out.extend(keys);
            out.extend(residual);
        }
        Plan::Aggregate { group_by, aggregates, .. } => {
            out.extend(group_by);
            out.extend(aggregates.iter().filter_map(|a| a.arg.as_ref()));
        }
        Plan::Sort { keys, .. } => out.extend(keys.iter().map(|k| &k.expr)),
        Plan::Limit { limit, offset, .. } => {
            out.extend(limit);
            out.extend(offset);
        }
        Plan::Distinct { .. } | Plan::SetOp { .. } | Plan::Input { .. } => {}
    }
    out
}

/// Subquery plans directly inside an expression.
fn subqueries(e: &Expr) -> Vec<&Plan> {
    e.subqueries()
}

fn has_subquery(e: &Expr) -> bool {
    !subqueries(e).is_empty()
}

fn expr_reads_partitioned(e: &Expr, catalog: &Catalog) -> bool {
    subqueries(e).into_iter().any(|p| reads_partitioned(p, catalog))
}

/// Whether a plan (with its subqueries) reads any partitioned table.
pub fn reads_partitioned(plan: &Plan, catalog: &Catalog) -> bool {
    let mut tables = BTreeSet::new();
    tables_read(plan, &mut tables);
    tables.into_iter().any(|t| catalog.table_by_id(t).is_some_and(|d| catalog.is_partitioned(d)))
}

/// Every table a plan reads, subqueries included.
pub fn tables_read(plan: &Plan, out: &mut BTreeSet<TableId>) {
    walk(plan, &mut |p| {
        if let Plan::Scan { table, .. } | Plan::IndexJoin { table, .. } = p {
            out.insert(*table);
        }
        for e in node_exprs(p) {
            for sub in subqueries(e) {
                tables_read(sub, out);
            }
        }
    });
}

/// Visit every node of a plan (not subqueries).
fn walk(plan: &Plan, f: &mut dyn FnMut(&Plan)) {
    f(plan);
    for i in plan.inputs() {
        walk(i, f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use joule_engine::Database;
    use joule_sql::parser::parse_single;
    use joule_sql::planner::plan_for;

    fn db() -> Database {
        let mut db = Database::new();
        db.execute(
            "CREATE TABLE p (id INT NOT NULL PRIMARY KEY, g INT, v INT); PARTITION TABLE p ON COLUMN id; \
             CREATE TABLE q (id INT NOT NULL PRIMARY KEY, w INT); PARTITION TABLE q ON COLUMN id; \
             CREATE TABLE r (g INT PRIMARY KEY, name VARCHAR(5)); \
             CREATE VIEW pg (g, n, s) AS SELECT g, COUNT(*), SUM(v) FROM p GROUP BY g",
        )
        .unwrap();
        db
    }

    fn split(db: &Database, sql: &str) -> DistQuery {
        let planned = plan_for(&parse_single(sql).unwrap(), db.catalog(), "DEFAULT", true).unwrap();
        match mp_statement(Arc::new(planned), db.catalog()).unwrap() {
            MpStatement::Read(q) => q,
            other => panic!("{sql}: {other:?}"),
        }
    }

    #[test]
    fn scans_and_replicated_joins_run_on_every_partition() {
        let db = db();
        let q = split(&db, "SELECT p.v, r.name FROM p JOIN r ON p.g = r.g WHERE p.v > 3");
        assert_eq!(q.combine, Combine::Concat);
        assert!(q.fragments[0].everywhere);
    }

    #[test]
    fn aggregates_merge_partial_results() {
        let db = db();
        let q = split(&db, "SELECT g, COUNT(*), SUM(v), MAX(v) FROM p GROUP BY g");
        assert_eq!(q.fragments.len(), 1);
        assert!(matches!(q.fragments[0].plan, Plan::Aggregate { .. }), "{:?}", q.fragments[0].plan);
        let Combine::Plan(plan) = &q.combine else { panic!("{:?}", q.combine) };
        assert!(format!("{plan:?}").contains("Input"));
        // DISTINCT aggregates need the rows themselves.
        let q = split(&db, "SELECT COUNT(DISTINCT v) FROM p");
        assert!(!matches!(q.fragments[0].plan, Plan::Aggregate { .. }));
    }

    #[test]
    fn order_by_limit_sends_only_the_top_rows() {
        let db = db();
        let q = split(&db, "SELECT id FROM p ORDER BY v DESC LIMIT 5 OFFSET 2");
        let Plan::Limit { limit: Some(limit), offset: None, .. } = &q.fragments[0].plan else {
            panic!("{:?}", q.fragments[0].plan)
        };
        assert!(matches!(limit, Expr::Case { .. }), "{limit:?}");
    }

    #[test]
    fn views_without_the_partition_column_are_reaggregated() {
        let db = db();
        let q = split(&db, "SELECT g, n FROM pg WHERE n > 2");
        let Combine::Plan(plan) = &q.combine else { panic!() };
        assert!(format!("{plan:?}").contains("Aggregate"), "{plan:?}");
    }

    #[test]
    fn other_shapes_gather_whole_tables() {
        let db = db();
        // Joining two partitioned tables: both sides come to the coordinator.
        let q = split(&db, "SELECT p.id FROM p JOIN q ON p.v = q.w");
        assert!(matches!(&q.combine, Combine::Plan(Plan::Project { .. })), "{:?}", q.combine);
        assert_eq!(q.fragments.len(), 2);
        // An index lookup into a partitioned table from rows of all
        // partitions: whole tables, and the original plan.
        let q = split(&db, "SELECT p.id FROM p JOIN q ON p.v = q.id");
        let Combine::Gather { tables, .. } = &q.combine else { panic!("{:?}", q.combine) };
        assert_eq!(tables.len(), 2);
        assert!(q.fragments.iter().all(|f| f.everywhere));
        let q = split(&db, "SELECT name FROM r");
        assert_eq!((q.fragments.len(), q.fragments[0].everywhere), (1, false));
    }

    #[test]
    fn reaggregation_merges_groups() {
        let view = MaterializedView {
            source: 1,
            group_by: vec![0],
            aggregates: vec![(AggKind::CountStar, None), (AggKind::Max, Some(1)), (AggKind::Sum, Some(2))],
        };
        let v = Value::Integer;
        let rows =
            vec![vec![v(1), v(2), v(5), Value::Null], vec![v(2), v(1), v(1), v(3)], vec![v(1), v(3), v(4), v(7)]];
        assert_eq!(reaggregate(&view, rows).unwrap(), vec![vec![v(1), v(5), v(5), v(7)], vec![v(2), v(1), v(1), v(3)]]);
    }
}
