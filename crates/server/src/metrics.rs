//! The same figures as `@Statistics` for machines and people: Prometheus
//! text for `/metrics`, and the web console's poll (`/console/stats`).

use crate::stats::{cpu_percent, merged_latency, now_millis, proc_memory, process_cpu, sites};
use crate::ServerContext;
use joule_txn::stats::ProcedureStats;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

/// One metric family: name, type, help, and (labels, value) samples.
struct Family {
    name: String,
    kind: &'static str,
    help: String,
    samples: Vec<(String, f64)>,
}

/// `/metrics`: the same figures as Prometheus text (version 0.0.4).
pub(crate) fn prometheus(ctx: &ServerContext) -> String {
    let sites = sites(ctx);
    let mut out = String::with_capacity(8192);
    let mut metrics: Vec<Family> = Vec::new();
    let mut add = |name: &str, kind: &'static str, help: &str, samples: Vec<(String, f64)>| {
        metrics.push(Family { name: name.to_string(), kind, help: help.to_string(), samples });
    };
    let label = |p: Option<u32>| p.map_or("mp".to_string(), |p| p.to_string());
    let mut inv = Vec::new();
    let mut fails = Vec::new();
    let mut aborts = Vec::new();
    let mut exec = Vec::new();
    for s in &sites {
        let mut names: Vec<&String> = s.procedures.keys().collect();
        names.sort();
        for name in names {
            let p = &s.procedures[name];
            let l = format!("{{procedure=\"{}\",partition=\"{}\"}}", escape(name), label(s.partition));
            inv.push((l.clone(), p.invocations as f64));
            fails.push((l.clone(), p.failures as f64));
            aborts.push((l.clone(), p.aborts as f64));
            exec.push((l, p.exec_nanos as f64 / 1e9));
        }
    }
    add(
        "joule_procedure_invocations_total",
        "counter",
        "Invocations run, by procedure and partition (mp: the multi-partition coordinator).",
        inv,
    );
    add("joule_procedure_failures_total", "counter", "Invocations that failed with an error.", fails);
    add("joule_procedure_aborts_total", "counter", "Invocations the procedure aborted itself.", aborts);
    add(
        "joule_procedure_execution_seconds_total",
        "counter",
        "Time spent executing, by procedure and partition.",
        exec,
    );
    add(
        "joule_site_idle_ratio",
        "gauge",
        "Share of time a site (or the coordinator) waited for work since it started.",
        sites
            .iter()
            .map(|s| {
                (
                    format!("{{partition=\"{}\"}}", label(s.partition)),
                    s.idle.as_secs_f64() / s.since_start.as_secs_f64().max(1e-9),
                )
            })
            .collect(),
    );
    add(
        "joule_queue_depth",
        "gauge",
        "Invocations waiting in a site's inbox.",
        sites
            .iter()
            .filter(|s| s.partition.is_some())
            .map(|s| (format!("{{partition=\"{}\"}}", label(s.partition)), s.queue_depth as f64))
            .collect(),
    );
    let mut rows = Vec::new();
    let mut bytes = Vec::new();
    for s in sites.iter().filter(|s| s.partition.is_some()) {
        for t in &s.tables {
            let l = format!("{{table=\"{}\",partition=\"{}\"}}", escape(&t.name), label(s.partition));
            rows.push((l.clone(), t.rows as f64));
            bytes.push((l, t.bytes as f64));
        }
    }
    add("joule_table_rows", "gauge", "Rows of a table on a partition.", rows);
    add("joule_table_bytes", "gauge", "Estimated bytes of a table's rows on a partition.", bytes);
    let (rss, physical) = proc_memory();
    add("joule_memory_rss_bytes", "gauge", "Resident memory of the process.", vec![(String::new(), rss as f64)]);
    add(
        "joule_memory_physical_bytes",
        "gauge",
        "Physical memory of the machine.",
        vec![(String::new(), physical as f64)],
    );
    add(
        "joule_process_cpu_seconds_total",
        "counter",
        "CPU time of the process (user and system).",
        vec![(String::new(), process_cpu().as_secs_f64())],
    );
    let conns =
        ctx.connections.lock().unwrap_or_else(|e| e.into_inner()).values().map(|(s, _)| s.clone()).collect::<Vec<_>>();
    add("joule_connections", "gauge", "Open client connections.", vec![(String::new(), conns.len() as f64)]);
    let sum = |f: &dyn Fn(&crate::connection::ConnectionStats) -> u64| conns.iter().map(|c| f(c) as f64).sum::<f64>();
    let closed = |i: usize| ctx.closed_bytes[i].load(Ordering::Relaxed) as f64;
    add(
        "joule_network_read_bytes_total",
        "counter",
        "Bytes read from client connections since start.",
        vec![(String::new(), closed(0) + sum(&|c| c.bytes_read.load(Ordering::Relaxed)))],
    );
    add(
        "joule_network_written_bytes_total",
        "counter",
        "Bytes written to client connections since start.",
        vec![(String::new(), closed(1) + sum(&|c| c.bytes_written.load(Ordering::Relaxed)))],
    );
    if let Some(w) = ctx.log.writer() {
        let s = w.stats();
        add(
            "joule_command_log_records_total",
            "counter",
            "Transactions written to the command log.",
            vec![(String::new(), s.records.load(Ordering::Relaxed) as f64)],
        );
        add(
            "joule_command_log_bytes_total",
            "counter",
            "Bytes written to the command log.",
            vec![(String::new(), s.bytes.load(Ordering::Relaxed) as f64)],
        );
        add(
            "joule_command_log_fsyncs_total",
            "counter",
            "fsyncs of the command log.",
            vec![(String::new(), s.syncs.load(Ordering::Relaxed) as f64)],
        );
        add(
            "joule_command_log_fsync_seconds_total",
            "counter",
            "Time spent in command log fsyncs.",
            vec![(String::new(), s.sync_micros.load(Ordering::Relaxed) as f64 / 1e6)],
        );
    }
    let (ok, failed) = ctx.snapshots.totals();
    add(
        "joule_snapshots_total",
        "counter",
        "Snapshots finished since start, by result.",
        vec![("{result=\"success\"}".into(), ok as f64), ("{result=\"failure\"}".into(), failed as f64)],
    );
    for Family { name, kind, help, samples } in metrics {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    }
    // Latency: a histogram in seconds, buckets from 50 µs to 10 s.
    let h = merged_latency(&sites);
    let _ = writeln!(out, "# HELP joule_transaction_latency_seconds Time from acceptance to answer of every transaction since start.\n# TYPE joule_transaction_latency_seconds histogram");
    for le in
        [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0]
    {
        let micros = (le * 1e6) as u64;
        let count: u64 =
            h.iter_recorded().filter(|v| v.value_iterated_to() <= micros).map(|v| v.count_at_value()).sum();
        let _ = writeln!(out, "joule_transaction_latency_seconds_bucket{{le=\"{le}\"}} {count}");
    }
    let _ = writeln!(out, "joule_transaction_latency_seconds_bucket{{le=\"+Inf\"}} {}", h.len());
    let _ = writeln!(out, "joule_transaction_latency_seconds_sum {}", h.mean() * h.len() as f64 / 1e6);
    let _ = writeln!(out, "joule_transaction_latency_seconds_count {}", h.len());
    out
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The web console's poll (`/console/stats`): cumulative counters (the
/// page turns them into rates), latency over the interval since the last
/// poll, and the tables, procedures, durability and events to show.
pub(crate) fn console_json(ctx: &ServerContext) -> serde_json::Value {
    use serde_json::json;
    let sites = sites(ctx);
    let now = merged_latency(&sites);
    let interval = {
        let mut memory = ctx.stats_memory.lock().unwrap_or_else(|e| e.into_inner());
        let mut h = now.clone();
        if let Some(before) = memory.console_latency.replace(now.clone()) {
            if h.subtract(&before).is_err() {
                h = now.clone();
            }
        }
        h
    };
    let txns: u64 = sites.iter().flat_map(|s| s.procedures.values()).map(|p| p.invocations).sum();
    let in_flight: usize = ctx
        .connections
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .filter_map(|(_, sink)| sink.upgrade())
        .map(|s| s.outstanding.load(Ordering::Relaxed))
        .sum();
    let site_rows: Vec<_> = sites
        .iter()
        .map(|s| {
            json!({
                "partition": s.partition.map_or("mp".to_string(), |p| p.to_string()),
                "invocations": s.procedures.values().map(|p| p.invocations).sum::<u64>(),
                "idle_ratio": s.idle.as_secs_f64() / s.since_start.as_secs_f64().max(1e-9),
                "queue": s.queue_depth,
            })
        })
        .collect();
    let mut tables: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    for s in sites.iter().filter(|s| s.partition.is_some()) {
        for t in &s.tables {
            let e = tables.entry(t.name.clone()).or_default();
            // Replicated tables hold the same rows on every partition: count them once.
            if t.partitioned || s.partition == Some(0) {
                e.0 += t.rows;
                e.1 += t.bytes;
            }
        }
    }
    let mut procedures: std::collections::BTreeMap<String, ProcedureStats> = Default::default();
    for s in &sites {
        for (name, p) in &s.procedures {
            let e = procedures.entry(name.clone()).or_default();
            e.invocations += p.invocations;
            e.exec_nanos += p.exec_nanos;
            e.aborts += p.aborts;
            e.failures += p.failures;
        }
    }
    let log = match ctx.log.writer() {
        Some(w) => {
            let s = w.stats();
            let syncs = s.syncs.load(Ordering::Relaxed);
            json!({
                "mode": format!("{:?}", w.mode()).to_lowercase(),
                "records": s.records.load(Ordering::Relaxed),
                "fsyncs": syncs,
                "fsync_avg_us": s.sync_micros.load(Ordering::Relaxed).checked_div(syncs).unwrap_or(0),
            })
        }
        None => json!({"mode": "off", "records": 0, "fsyncs": 0, "fsync_avg_us": 0}),
    };
    let history = ctx.snapshots.history();
    let mut events: Vec<(i64, String)> = ctx.events.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect();
    for s in &history {
        let what = match &s.error {
            None => format!(
                "snapshot {} saved ({} rows, {:.1} MB in {:.2} s)",
                s.nonce,
                s.rows,
                s.bytes as f64 / 1e6,
                s.seconds
            ),
            Some(e) => format!("snapshot {} failed: {e}", s.nonce),
        };
        events.push((s.started_millis as i64, what));
    }
    events.sort();
    let (rss, _) = proc_memory();
    json!({
        "time_ms": now_millis(),
        "uptime_s": ctx.started.elapsed().as_secs_f64(),
        "partitions": ctx.host.partitions(),
        "txns": txns,
        "latency_us": {
            "p50": interval.value_at_quantile(0.5),
            "p95": interval.value_at_quantile(0.95),
            "p99": interval.value_at_quantile(0.99),
            "p999": interval.value_at_quantile(0.999),
            "mean": interval.mean(),
            "count": interval.len(),
        },
        "in_flight": in_flight,
        "sites": site_rows,
        "tables": tables.into_iter().map(|(name, (rows, bytes))| json!({"name": name, "rows": rows, "bytes": bytes})).collect::<Vec<_>>(),
        "procedures": procedures.into_iter().map(|(name, p)| json!({
            "name": name,
            "calls": p.invocations,
            "avg_us": p.exec_nanos / p.invocations.max(1) / 1000,
            "aborts": p.aborts,
            "failures": p.failures,
        })).collect::<Vec<_>>(),
        "command_log": log,
        "snapshots": history.iter().rev().map(|s| json!({
            "nonce": s.nonce,
            "result": if s.error.is_none() { "SUCCESS" } else { "FAILURE" },
            "mb": s.bytes as f64 / 1e6,
            "seconds": s.seconds,
            "pause_us": s.max_pause_micros,
        })).collect::<Vec<_>>(),
        "events": events.iter().rev().take(50).map(|(t, text)| json!({"time_ms": t, "text": text})).collect::<Vec<_>>(),
        "host": { "rss": rss, "cpu_percent": cpu_percent(ctx, "console") },
        "cluster": crate::topology::console_json(ctx),
    })
}
