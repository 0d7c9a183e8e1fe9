//! The optimization advisor (`@Advise`, `joule advise`): reads the
//! statistics and the plans, and recommends, each recommendation with the
//! figures behind it.
//!
//! Rules (each a pure function of [`Evidence`], so that it can be tested
//! on figures built to trigger it as well as on a running node):
//!
//! * `partition-procedure`: a multi-partition procedure whose every
//!   statement pins one partitioned table's partition column to the same
//!   parameter could run single-partition — `PARTITION PROCEDURE`;
//! * `partition-skew`: one partition does far more work than the mean;
//! * `missing-index`: a procedure statement scans a sizeable table in full
//!   to apply a filter — an index on the filtered columns would do;
//! * `sites-vs-cores`: more sites than cores (they fight over cores), or
//!   far fewer (cores idle);
//! * `command-log`: a synchronous log whose fsyncs are slow enough to
//!   dominate latency, or no log at all;
//! * `memory-headroom`: the process uses most of the machine's memory.

use joule_common::{DataType, Value};
use joule_sql::catalog::Catalog;
use joule_sql::expr::Expr;
use joule_sql::plan::{Access, Partitioning, Plan};
use joule_sql::planner::{visit_scans, PlannedKind};
use joule_txn::compile::CompiledProcedure;
use joule_txn::ResultTable;
use std::collections::BTreeMap;

/// One recommendation.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Advice {
    pub rule: &'static str,
    pub severity: &'static str,
    pub recommendation: String,
    pub evidence: String,
}

/// What the rules look at.
pub(crate) struct Evidence<'a> {
    pub catalog: &'a Catalog,
    /// Every procedure, compiled.
    pub procedures: Vec<&'a CompiledProcedure>,
    /// Invocations by procedure: (single-partition runs, multi-partition runs).
    pub calls: BTreeMap<String, (u64, u64)>,
    /// Invocations per partition.
    pub per_partition: Vec<u64>,
    /// Rows per table (all partitions).
    pub table_rows: BTreeMap<String, u64>,
    pub sites: usize,
    pub cores: usize,
    /// `None`: no command log; else (synchronous, mean fsync µs).
    pub command_log: Option<(bool, u64)>,
    /// Acceptance-to-answer latency, µs: median.
    pub latency_p50_micros: u64,
    pub rss_bytes: u64,
    pub physical_bytes: u64,
}

/// Every rule's recommendations.
pub(crate) fn advise(e: &Evidence<'_>) -> Vec<Advice> {
    let mut out = Vec::new();
    out.extend(partition_procedures(e));
    out.extend(partition_skew(e));
    out.extend(missing_indexes(e));
    out.extend(sites_vs_cores(e));
    out.extend(command_log(e));
    out.extend(memory_headroom(e));
    out
}

/// The parameter a statement pins a partitioned table's partition column
/// to (as the planner found it), with that table and column.
fn pinned_parameter(planned: &joule_sql::planner::Planned, catalog: &Catalog) -> Option<(String, String, usize)> {
    let Partitioning::Single(Expr::Parameter(p), _) = &planned.partitioning else { return None };
    let mut table = None;
    let mut note = |id| {
        if let Some(t) = catalog.table_by_id(id).filter(|t| catalog.is_partitioned(t)) {
            if let Some(pc) = t.partition_column {
                table.get_or_insert((t.name.clone(), t.columns[pc].name.clone()));
            }
        }
    };
    match &planned.kind {
        PlannedKind::Insert(i) => note(i.table),
        kind => visit_scans(statement_plan(kind)?, &mut |id, _, _| note(id)),
    }
    table.map(|(t, c)| (t, c, *p))
}

fn statement_plan(kind: &PlannedKind) -> Option<&Plan> {
    match kind {
        PlannedKind::Query(q) => Some(&q.root),
        PlannedKind::Update(u) => Some(&u.source),
        PlannedKind::Delete(d) => Some(&d.source),
        _ => None,
    }
}

fn partition_procedures(e: &Evidence<'_>) -> Vec<Advice> {
    let mut out = Vec::new();
    for p in &e.procedures {
        // Statement procedures only: a native procedure's statements take
        // parameters of their own, not the procedure's.
        let statements_only = matches!(p.code, joule_txn::compile::ProcedureCode::Statements);
        if p.routing.is_some()
            || !statements_only
            || p.name.contains('.')
            || p.name.starts_with('@')
            || p.statements.is_empty()
        {
            continue;
        }
        let (_, mp_calls) = e.calls.get(&p.name).copied().unwrap_or_default();
        if mp_calls == 0 {
            continue;
        }
        // Every statement pins the same parameter (offset into its own ?s).
        let mut offset = 0;
        let mut pin: Option<(String, String, usize)> = None;
        let mut all = true;
        for s in &p.statements {
            match pinned_parameter(&s.planned, e.catalog) {
                Some((t, c, i)) if pin.as_ref().is_none_or(|(_, _, j)| *j == offset + i) => {
                    pin = Some((t, c, offset + i))
                }
                _ => all = false,
            }
            offset += s.planned.param_count;
        }
        if let (true, Some((table, column, param))) = (all, pin) {
            out.push(Advice {
                rule: "partition-procedure",
                severity: "high",
                recommendation: format!(
                    "PARTITION PROCEDURE {} ON TABLE {table} COLUMN {column} PARAMETER {param};",
                    p.name
                ),
                evidence: format!(
                    "{} ran {mp_calls} times as a multi-partition transaction, but every statement pins {table}.{column} to parameter {param}",
                    p.name
                ),
            });
        }
    }
    out
}

fn partition_skew(e: &Evidence<'_>) -> Vec<Advice> {
    let n = e.per_partition.len();
    let total: u64 = e.per_partition.iter().sum();
    if n < 2 || total < 1000 {
        return Vec::new();
    }
    let mean = total as f64 / n as f64;
    let (hot, max) =
        e.per_partition.iter().enumerate().max_by_key(|(_, v)| **v).map(|(i, v)| (i, *v)).unwrap_or((0, 0));
    let ratio = max as f64 / mean;
    if ratio < 1.5 {
        return Vec::new();
    }
    vec![Advice {
        rule: "partition-skew",
        severity: if ratio >= 3.0 { "high" } else { "medium" },
        recommendation: format!(
            "partition {hot} is hot: choose a partition column with more distinct, evenly used values, or spread the hot keys"
        ),
        evidence: format!(
            "partition {hot} ran {max} of {total} transactions ({ratio:.1}x the mean of {mean:.0}); per partition: {:?}",
            e.per_partition
        ),
    }]
}

fn missing_indexes(e: &Evidence<'_>) -> Vec<Advice> {
    let mut out = Vec::new();
    for p in &e.procedures {
        let (sp, mp) = e.calls.get(&p.name).copied().unwrap_or_default();
        if sp + mp == 0 {
            continue;
        }
        for s in &p.statements {
            let Some(plan) = statement_plan(&s.planned.kind) else { continue };
            visit_scans(plan, &mut |table, access, filter| {
                let (Some(t), Access::Full, Some(f)) = (e.catalog.table_by_id(table), access, filter) else { return };
                let rows = e.table_rows.get(&t.qualified_name()).copied().unwrap_or(0);
                if rows < 1000 {
                    return;
                }
                let mut columns: Vec<String> = Vec::new();
                f.walk(&mut |x| {
                    if let Expr::Column(i) = x {
                        if let Some(c) = t.columns.get(*i) {
                            if !columns.contains(&c.name) {
                                columns.push(c.name.clone());
                            }
                        }
                    }
                });
                if columns.is_empty() {
                    return;
                }
                out.push(Advice {
                    rule: "missing-index",
                    severity: "high",
                    recommendation: format!(
                        "CREATE INDEX {}_{} ON {} ({});",
                        t.name.to_lowercase(),
                        columns.join("_").to_lowercase(),
                        t.name,
                        columns.join(", ")
                    ),
                    evidence: format!(
                        "{} (called {} times) scans all {rows} rows of {} to filter on {}: \"{}\"",
                        p.name,
                        sp + mp,
                        t.name,
                        columns.join(", "),
                        s.sql
                    ),
                });
            });
        }
    }
    out
}

fn sites_vs_cores(e: &Evidence<'_>) -> Vec<Advice> {
    if e.sites > e.cores {
        return vec![Advice {
            rule: "sites-vs-cores",
            severity: "medium",
            recommendation: format!("start with --sites {} (one per core) or fewer", e.cores),
            evidence: format!("{} sites share {} cores: their threads take turns instead of running", e.sites, e.cores),
        }];
    }
    if e.cores >= 4 && e.sites * 2 < e.cores {
        return vec![Advice {
            rule: "sites-vs-cores",
            severity: "low",
            recommendation: format!("consider --sites {} to use more of the cores", e.cores * 3 / 4),
            evidence: format!("{} sites on {} cores", e.sites, e.cores),
        }];
    }
    Vec::new()
}

fn command_log(e: &Evidence<'_>) -> Vec<Advice> {
    match e.command_log {
        None => vec![Advice {
            rule: "command-log",
            severity: "high",
            recommendation: "turn the command log on (--command-log async, or sync where nothing may be lost)".into(),
            evidence: "the command log is off: a crash loses everything after the last snapshot".into(),
        }],
        Some((true, fsync)) if fsync > 2_000 && e.latency_p50_micros > 0 && fsync * 2 > e.latency_p50_micros => {
            vec![Advice {
                rule: "command-log",
                severity: "medium",
                recommendation: "put the command log on a faster device, or use --command-log async if losing up to its window on a power loss is acceptable".into(),
                evidence: format!(
                    "synchronous log: a mean fsync takes {fsync} µs against a median transaction latency of {} µs",
                    e.latency_p50_micros
                ),
            }]
        }
        _ => Vec::new(),
    }
}

fn memory_headroom(e: &Evidence<'_>) -> Vec<Advice> {
    if e.physical_bytes == 0 || e.rss_bytes * 10 < e.physical_bytes * 7 {
        return Vec::new();
    }
    let share = e.rss_bytes as f64 / e.physical_bytes as f64 * 100.0;
    vec![Advice {
        rule: "memory-headroom",
        severity: if share > 85.0 { "high" } else { "medium" },
        recommendation:
            "add memory or hosts, or delete data you do not need: an in-memory database cannot spill to disk".into(),
        evidence: format!(
            "the process holds {:.1} GiB of {:.1} GiB ({share:.0}%)",
            e.rss_bytes as f64 / (1u64 << 30) as f64,
            e.physical_bytes as f64 / (1u64 << 30) as f64
        ),
    }]
}

/// Gather the evidence on a running node and advise.
pub(crate) fn for_node(ctx: &crate::ServerContext) -> Vec<Advice> {
    let schema = ctx.host.schema();
    let sites = ctx.host.statistics(std::time::Duration::from_secs(10));
    let mut calls: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut per_partition = Vec::new();
    let mut table_rows: BTreeMap<String, u64> = BTreeMap::new();
    for s in &sites {
        for (name, p) in &s.procedures {
            let e = calls.entry(name.clone()).or_default();
            match s.partition {
                Some(_) => e.0 += p.invocations,
                None => e.1 += p.invocations,
            }
        }
        if let Some(partition) = s.partition {
            // By partition id (a site that did not answer leaves a zero).
            let p = partition as usize;
            if per_partition.len() <= p {
                per_partition.resize(p + 1, 0);
            }
            per_partition[p] = s.procedures.values().map(|p| p.invocations).sum();
            for t in &s.tables {
                if t.partitioned || partition == 0 {
                    *table_rows.entry(t.name.clone()).or_default() += t.rows;
                }
            }
        }
    }
    let command_log = ctx.config.command_log.map(|mode| {
        let fsync = ctx.log.writer().map_or(0, |w| {
            let s = w.stats();
            let n = s.syncs.load(std::sync::atomic::Ordering::Relaxed);
            s.sync_micros.load(std::sync::atomic::Ordering::Relaxed).checked_div(n).unwrap_or(0)
        });
        (mode == joule_durability::LogMode::Sync, fsync)
    });
    let (rss_bytes, physical_bytes) = crate::stats::proc_memory();
    let names = schema.procedure_names();
    let evidence = Evidence {
        catalog: &schema.catalog,
        procedures: names.iter().filter_map(|n| schema.procedure(n).map(|p| p.as_ref())).collect(),
        calls,
        per_partition,
        table_rows,
        sites: ctx.host.partitions(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        command_log,
        latency_p50_micros: crate::stats::merged_latency(&sites).value_at_quantile(0.5),
        rss_bytes,
        physical_bytes,
    };
    advise(&evidence)
}

/// The advice as `@Advise` answers it.
pub(crate) fn advice_table(advice: &[Advice]) -> ResultTable {
    let col = |n: &str| joule_sql::plan::OutputColumn { name: n.to_string(), data_type: Some(DataType::Varchar) };
    let rows = advice
        .iter()
        .map(|a| {
            vec![
                Value::from(a.rule),
                Value::from(a.severity),
                Value::from(a.recommendation.as_str()),
                Value::from(a.evidence.as_str()),
            ]
        })
        .collect();
    ResultTable::new(vec![col("RULE"), col("SEVERITY"), col("RECOMMENDATION"), col("EVIDENCE")].into(), rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty(catalog: &Catalog) -> Evidence<'_> {
        Evidence {
            catalog,
            procedures: Vec::new(),
            calls: BTreeMap::new(),
            per_partition: vec![500, 500],
            table_rows: BTreeMap::new(),
            sites: 2,
            cores: 2,
            command_log: Some((false, 300)),
            latency_p50_micros: 200,
            rss_bytes: 1 << 30,
            physical_bytes: 16 << 30,
        }
    }

    #[test]
    fn healthy_figures_give_no_advice() {
        let catalog = Catalog::default();
        assert_eq!(advise(&empty(&catalog)), Vec::new());
    }

    #[test]
    fn each_figure_rule_fires_on_figures_built_for_it() {
        let catalog = Catalog::default();
        let rules = |e: &Evidence<'_>| advise(e).into_iter().map(|a| a.rule).collect::<Vec<_>>();
        let mut e = empty(&catalog);
        e.per_partition = vec![5000, 400];
        assert_eq!(rules(&e), vec!["partition-skew"]);
        let mut e = empty(&catalog);
        e.sites = 8;
        assert_eq!(rules(&e), vec!["sites-vs-cores"]);
        let mut e = empty(&catalog);
        e.command_log = None;
        assert_eq!(rules(&e), vec!["command-log"]);
        let mut e = empty(&catalog);
        e.command_log = Some((true, 9_000));
        e.latency_p50_micros = 10_000;
        assert_eq!(rules(&e), vec!["command-log"]);
        e.command_log = Some((false, 9_000));
        assert_eq!(rules(&e), Vec::<&str>::new(), "an async log's fsyncs do not delay answers");
        let mut e = empty(&catalog);
        e.rss_bytes = 15 << 30;
        assert_eq!(rules(&e), vec!["memory-headroom"]);
    }
}
