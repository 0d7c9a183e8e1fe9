//! EXPLAIN: a plan as indented text, one operator per line, with the
//! statement's partitioning first.

use super::{Planned, PlannedKind};
use crate::catalog::Catalog;
use crate::plan::{Access, IndexLookup, Partitioning, Plan};

/// Describe a planned statement.
pub fn explain(planned: &Planned, catalog: &Catalog) -> Vec<String> {
    let mut lines = vec![match &planned.partitioning {
        Partitioning::Single(e, _) => format!("SINGLE PARTITION (partition key {e})"),
        Partitioning::Multi => "MULTI PARTITION".to_string(),
        Partitioning::Replicated => "REPLICATED TABLES ONLY".to_string(),
    }];
    let table_name = |id| catalog.table_by_id(id).map_or_else(|| format!("#{id}"), |t| t.name.clone());
    match &planned.kind {
        PlannedKind::Query(q) => plan_lines(&q.root, catalog, 0, &mut lines),
        PlannedKind::Insert(i) => {
            lines.push(format!("{} INTO {}", if i.upsert { "UPSERT" } else { "INSERT" }, table_name(i.table)));
            plan_lines(&i.source, catalog, 1, &mut lines);
        }
        PlannedKind::Update(u) => {
            lines.push(format!("UPDATE {}", table_name(u.table)));
            plan_lines(&u.source, catalog, 1, &mut lines);
        }
        PlannedKind::Delete(d) => {
            lines.push(format!("DELETE FROM {}", table_name(d.table)));
            plan_lines(&d.source, catalog, 1, &mut lines);
        }
        PlannedKind::Truncate(t) => lines.push(format!("TRUNCATE {}", table_name(*t))),
        PlannedKind::Ddl(d) => lines.push(format!("SCHEMA CHANGE {}", ddl_name(d))),
        PlannedKind::UseDatabase(d) => lines.push(format!("USE {d}")),
        PlannedKind::Explain(_) => lines.push("EXPLAIN".to_string()),
    }
    lines
}

fn ddl_name(d: &super::DdlPlan) -> &'static str {
    use super::DdlPlan::*;
    match d {
        Noop => "(no change)",
        CreateDatabase(_) => "CREATE DATABASE",
        DropDatabase(_) => "DROP DATABASE",
        CreateTable(_) => "CREATE TABLE",
        DropTables(_) => "DROP TABLE",
        CreateIndex { .. } => "CREATE INDEX",
        DropIndex { .. } => "DROP INDEX",
        AlterTable { .. } => "ALTER TABLE",
        PartitionTable { .. } => "PARTITION TABLE",
        CreateView(_) => "CREATE VIEW",
        DropView { .. } => "DROP VIEW",
        CreateMaterializedView(_) => "CREATE MATERIALIZED VIEW",
        PutProcedure(_) => "CREATE PROCEDURE",
        DropProcedure(_) => "DROP PROCEDURE",
        SwapTables(..) => "SWAP TABLES",
    }
}

fn list(exprs: &[crate::expr::Expr]) -> String {
    exprs.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", ")
}

fn plan_lines(plan: &Plan, catalog: &Catalog, depth: usize, out: &mut Vec<String>) {
    let pad = "  ".repeat(depth);
    let table = |id| catalog.table_by_id(id);
    let index_name =
        |id, ix: usize| table(id).and_then(|t| t.indexes.get(ix)).map_or("?".to_string(), |i| i.name.clone());
    let line = match plan {
        Plan::Scan { table: id, access, filter } => {
            let name = table(*id).map_or("?".to_string(), |t| t.name.clone());
            let f = filter.as_ref().map(|f| format!(" FILTER {f}")).unwrap_or_default();
            match access {
                Access::Full => format!("SEQUENTIAL SCAN {name}{f}"),
                Access::Index { index, lookup, reverse } => {
                    let how = match lookup {
                        IndexLookup::Eq(k) => format!("= ({})", list(k)),
                        IndexLookup::In(k) => format!("IN ({})", list(k)),
                        IndexLookup::Range { prefix, lower, upper } => {
                            let lo = lower.as_ref().map(|(e, inc)| format!("{} {e}", if *inc { ">=" } else { ">" }));
                            let hi = upper.as_ref().map(|(e, inc)| format!("{} {e}", if *inc { "<=" } else { "<" }));
                            let mut parts = vec![];
                            if !prefix.is_empty() {
                                parts.push(format!("= ({})", list(prefix)));
                            }
                            parts.extend(lo);
                            parts.extend(hi);
                            parts.join(" AND ")
                        }
                        IndexLookup::All => "ALL".to_string(),
                    };
                    let dir = if *reverse { " REVERSE" } else { "" };
                    format!("INDEX SCAN {name} USING {} {how}{dir}{f}", index_name(*id, *index))
                }
            }
        }
        Plan::Values { rows, .. } => format!("VALUES ({} rows)", rows.len()),
        Plan::Input { slot, .. } => format!("RECEIVE FROM PARTITIONS (fragment {slot})"),
        Plan::Filter { predicate, .. } => format!("FILTER {predicate}"),
        Plan::Project { exprs, .. } => format!("PROJECT {}", list(exprs)),
        Plan::NestedLoopJoin { kind, predicate, .. } => {
            format!("NESTED LOOP {kind:?} JOIN{}", predicate.as_ref().map(|p| format!(" ON {p}")).unwrap_or_default())
        }
        Plan::HashJoin { kind, left_keys, right_keys, .. } => {
            format!("HASH {kind:?} JOIN ON ({}) = ({})", list(left_keys), list(right_keys))
        }
        Plan::IndexJoin { table: id, index, keys, kind, .. } => format!(
            "INDEX NESTED LOOP {kind:?} JOIN {} USING {} = ({})",
            table(*id).map_or("?".to_string(), |t| t.name.clone()),
            index_name(*id, *index),
            list(keys)
        ),
        Plan::Aggregate { group_by, aggregates, .. } => {
            let aggs: Vec<String> = aggregates.iter().map(|a| a.kind.name().to_string()).collect();
            format!("AGGREGATE [{}] GROUP BY ({})", aggs.join(", "), list(group_by))
        }
        Plan::Sort { keys, .. } => {
            let ks: Vec<String> =
                keys.iter().map(|k| format!("{}{}", k.expr, if k.descending { " DESC" } else { "" })).collect();
            format!("ORDER BY {}", ks.join(", "))
        }
        Plan::Limit { limit, offset, .. } => format!(
            "LIMIT {}{}",
            limit.as_ref().map_or("ALL".to_string(), |l| l.to_string()),
            offset.as_ref().map(|o| format!(" OFFSET {o}")).unwrap_or_default()
        ),
        Plan::Distinct { .. } => "DISTINCT".to_string(),
        Plan::SetOp { kind, all, .. } => format!("{kind:?}{}", if *all { " ALL" } else { "" }).to_uppercase(),
    };
    out.push(format!("{pad}{line}"));
    for input in plan.inputs() {
        plan_lines(input, catalog, depth + 1, out);
    }
}
