//! `@Statistics(selector, delta)` with VoltDB's column layouts (the same
//! figures in other shapes: `metrics.rs`).
//!
//! The figures come from the sites (copied by each site's own thread
//! between transactions, see `joule_txn::stats`), from the connections'
//! counters, the command log and the snapshot history, and from `/proc`
//! for memory and CPU. With `delta` = 1, cumulative counters report the
//! change since the previous delta call of that selector; `LATENCY` always
//! reports the interval since its previous call (its first call: since
//! start).

use crate::ServerContext;
use hdrhistogram::Histogram;
use joule_common::{bail, DataType, Result, Value};
use joule_sql::plan::OutputColumn;
use joule_txn::stats::{new_histogram, ProcedureStats, SiteStats};
use joule_txn::ResultTable;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Every selector `@Statistics` answers.
pub(crate) const SELECTORS: &[&str] = &[
    "PROCEDURE",
    "PROCEDUREPROFILE",
    "TABLE",
    "INDEX",
    "MEMORY",
    "CPU",
    "IOSTATS",
    "LIVECLIENTS",
    "INITIATOR",
    "LATENCY",
    "LATENCY_HISTOGRAM",
    "QUEUE",
    "STARVATION",
    "PARTITIONCOUNT",
    "TOPO",
    "KSAFETY",
    "CLUSTER",
    "REPLICACHECKSUM",
    "FORWARDING",
    "FRAGMENTS",
    "COMMANDLOG",
    "SNAPSHOTSTATUS",
    "MANAGEMENT",
    "REBALANCE",
    "AUTOSCALER",
];

/// What `@Statistics` remembers between calls.
#[derive(Default)]
pub(crate) struct Memory {
    /// Per selector: the procedure counters at its last delta call, by
    /// (partition, procedure).
    procedures: HashMap<String, HashMap<(Option<u32>, String), ProcedureStats>>,
    /// The latency histogram at the last LATENCY call, and when.
    latency: Option<(Histogram<u64>, Instant)>,
    /// Process CPU time at the last CPU call, and when.
    /// Per reader (`CPU`, `MANAGEMENT`, the console): CPU time and when.
    cpu: HashMap<&'static str, (Duration, Instant)>,
    /// Per selector: connection byte/message counters at its last delta call.
    io: HashMap<String, HashMap<i64, [u64; 4]>>,
    /// The latency histogram at the console's last poll.
    pub(crate) console_latency: Option<Histogram<u64>>,
}

fn col(name: &str, t: DataType) -> OutputColumn {
    OutputColumn { name: name.to_string(), data_type: Some(t) }
}

fn table(columns: &[(&str, DataType)], rows: Vec<Vec<Value>>) -> ResultTable {
    ResultTable::new(columns.iter().map(|(n, t)| col(n, *t)).collect::<Vec<_>>().into(), rows)
}

pub(crate) fn now_millis() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn int(v: u64) -> Value {
    Value::Integer(v.min(i64::MAX as u64) as i64)
}

const HOST: [(&str, DataType); 3] =
    [("TIMESTAMP", DataType::BigInt), ("HOST_ID", DataType::Integer), ("HOSTNAME", DataType::Varchar)];

fn host_cells(ctx: &ServerContext) -> Vec<Value> {
    vec![Value::Integer(now_millis()), Value::Integer(ctx.host_id as i64), Value::from(ctx.host_name.as_str())]
}

fn with_host(columns: &[(&'static str, DataType)]) -> Vec<(&'static str, DataType)> {
    HOST.iter().copied().chain(columns.iter().copied()).collect()
}

/// The sites' statistics (the coordinator's last).
pub(crate) fn sites(ctx: &ServerContext) -> Vec<SiteStats> {
    ctx.host.statistics(Duration::from_secs(10))
}

/// `@Statistics(selector, delta)`.
pub(crate) fn statistics(ctx: &ServerContext, selector: &str, delta: bool) -> Result<Vec<ResultTable>> {
    // One call at a time: a delta's baseline is taken from the same figures
    // the call reports, never overtaken by a concurrent call's.
    let _serial = ctx.stats_serial.lock().unwrap_or_else(|e| e.into_inner());
    let selector = selector.to_ascii_uppercase();
    Ok(match selector.as_str() {
        "PROCEDURE" => vec![procedure(ctx, &sites(ctx), delta, &selector)],
        "PROCEDUREPROFILE" => vec![procedure_profile(ctx, &sites(ctx), delta, &selector)],
        "INITIATOR" => vec![initiator(ctx, &sites(ctx), delta, &selector)],
        "TABLE" => vec![tables(ctx, &sites(ctx))],
        "INDEX" => vec![indexes(ctx, &sites(ctx))],
        "MEMORY" => vec![memory(ctx, &sites(ctx))],
        "CPU" => vec![cpu(ctx)],
        "IOSTATS" => vec![iostats(ctx, delta, "IOSTATS")],
        "LIVECLIENTS" => vec![live_clients(ctx)],
        "LATENCY" => vec![latency(ctx, &sites(ctx))],
        "LATENCY_HISTOGRAM" => vec![latency_histogram(ctx, &sites(ctx))?],
        "QUEUE" => vec![queue(ctx, &sites(ctx))],
        "STARVATION" => vec![starvation(ctx, &sites(ctx))],
        "FRAGMENTS" => {
            let rows = sites(ctx)
                .iter()
                .filter(|s| s.partition.is_some())
                .map(|s| [host_cells(ctx), vec![site_id(s.partition), int(s.fragments)]].concat())
                .collect();
            vec![table(&with_host(&[("SITE_ID", DataType::Integer), ("FRAGMENTS", DataType::BigInt)]), rows)]
        }
        "PARTITIONCOUNT" => vec![table(
            &with_host(&[("PARTITION_COUNT", DataType::Integer)]),
            vec![[host_cells(ctx), vec![int(ctx.membership.metadata().partitions.len() as u64)]].concat()],
        )],
        "TOPO" => crate::topology::topo_tables(ctx, &ctx.membership.metadata()),
        "KSAFETY" => vec![ksafety(ctx)],
        "CLUSTER" => vec![crate::topology::hosts_table(&ctx.membership)],
        "REPLICACHECKSUM" => vec![replica_checksums(ctx)],
        "FORWARDING" => {
            let count =
                |i: usize| ctx.link.as_ref().map_or(0, |l| l.forwarded[i].load(std::sync::atomic::Ordering::Relaxed));
            vec![table(
                &with_host(&[("TO_PARTITION_LEADERS", DataType::BigInt), ("TO_COORDINATOR", DataType::BigInt)]),
                vec![[host_cells(ctx), vec![int(count(0)), int(count(1))]].concat()],
            )]
        }
        "COMMANDLOG" => vec![crate::durable::command_log_table(ctx)],
        "SNAPSHOTSTATUS" => vec![ctx.snapshots.status_table()],
        "REBALANCE" => vec![crate::rebalance::statistics(ctx, host_cells(ctx), &HOST)],
        "AUTOSCALER" => vec![crate::autoscale::statistics(ctx, host_cells(ctx), &HOST)],
        "MANAGEMENT" => {
            let s = sites(ctx);
            vec![
                memory(ctx, &s),
                cpu(ctx),
                initiator(ctx, &s, delta, "MANAGEMENT"),
                procedure(ctx, &s, delta, "MANAGEMENT"),
                iostats(ctx, delta, "MANAGEMENT"),
                tables(ctx, &s),
                indexes(ctx, &s),
                starvation(ctx, &s),
                queue(ctx, &s),
            ]
        }
        other => bail!(InvalidArgument, "@Statistics has no selector {other}; selectors: {}", SELECTORS.join(", ")),
    })
}

/// Per (partition, procedure) counters, as deltas if asked.
fn procedure_counts(
    ctx: &ServerContext,
    sites: &[SiteStats],
    delta: bool,
    selector: &str,
) -> Vec<(Option<u32>, String, ProcedureStats)> {
    let mut now = Vec::new();
    for s in sites {
        let mut names: Vec<&String> = s.procedures.keys().collect();
        names.sort();
        for name in names {
            now.push((s.partition, name.clone(), s.procedures[name].clone()));
        }
    }
    if !delta {
        return now;
    }
    let mut memory = ctx.stats_memory.lock().unwrap_or_else(|e| e.into_inner());
    let last = memory.procedures.entry(selector.to_string()).or_default();
    let out = now
        .iter()
        .map(|(p, n, st)| {
            let d = last.get(&(*p, n.clone())).map_or_else(|| st.clone(), |before| st.since(before));
            (*p, n.clone(), d)
        })
        .collect();
    // Merged, not replaced: a site that did not answer keeps its baseline.
    for (p, n, st) in now {
        last.insert((p, n), st);
    }
    out
}

fn site_id(partition: Option<u32>) -> Value {
    // The coordinator reports as site 16383, VoltDB's MP initiator number.
    Value::Integer(partition.map_or(i64::from(joule_txn::ids::MP_INITIATOR), i64::from))
}

fn procedure(ctx: &ServerContext, sites: &[SiteStats], delta: bool, selector: &str) -> ResultTable {
    use DataType::*;
    let columns = with_host(&[
        ("SITE_ID", Integer),
        ("PARTITION_ID", Integer),
        ("PROCEDURE", Varchar),
        ("INVOCATIONS", BigInt),
        ("TIMED_INVOCATIONS", BigInt),
        ("MIN_EXECUTION_TIME", BigInt),
        ("MAX_EXECUTION_TIME", BigInt),
        ("AVG_EXECUTION_TIME", BigInt),
        ("MIN_RESULT_SIZE", Integer),
        ("MAX_RESULT_SIZE", Integer),
        ("AVG_RESULT_SIZE", Integer),
        ("MIN_PARAMETER_SET_SIZE", Integer),
        ("MAX_PARAMETER_SET_SIZE", Integer),
        ("AVG_PARAMETER_SET_SIZE", Integer),
        ("ABORTS", BigInt),
        ("FAILURES", BigInt),
        ("TRANSACTIONAL", TinyInt),
    ]);
    let rows = procedure_counts(ctx, sites, delta, selector)
        .into_iter()
        .filter(|(_, _, s)| s.invocations > 0)
        .map(|(p, name, s)| {
            let n = s.invocations.max(1);
            [
                host_cells(ctx),
                vec![
                    site_id(p),
                    site_id(p),
                    Value::from(name.as_str()),
                    int(s.invocations),
                    int(s.invocations),
                    int(s.min_exec_nanos),
                    int(s.max_exec_nanos),
                    int(s.exec_nanos / n),
                    int(s.min_result_bytes),
                    int(s.max_result_bytes),
                    int(s.result_bytes / n),
                    int(s.min_param_bytes),
                    int(s.max_param_bytes),
                    int(s.param_bytes / n),
                    int(s.aborts),
                    int(s.failures),
                    Value::Integer(1),
                ],
            ]
            .concat()
        })
        .collect();
    table(&columns, rows)
}

fn procedure_profile(ctx: &ServerContext, sites: &[SiteStats], delta: bool, selector: &str) -> ResultTable {
    use DataType::*;
    let mut by_name: std::collections::BTreeMap<String, ProcedureStats> = Default::default();
    for (_, name, s) in procedure_counts(ctx, sites, delta, selector) {
        let e = by_name.entry(name).or_default();
        if e.invocations == 0 || (s.invocations > 0 && s.min_exec_nanos < e.min_exec_nanos) {
            e.min_exec_nanos = s.min_exec_nanos;
        }
        e.invocations += s.invocations;
        e.exec_nanos += s.exec_nanos;
        e.max_exec_nanos = e.max_exec_nanos.max(s.max_exec_nanos);
        e.aborts += s.aborts;
        e.failures += s.failures;
    }
    let total: u64 = by_name.values().map(|s| s.exec_nanos).sum::<u64>().max(1);
    let rows = by_name
        .into_iter()
        .filter(|(_, s)| s.invocations > 0)
        .map(|(name, s)| {
            vec![
                Value::Integer(now_millis()),
                Value::from(name.as_str()),
                int(s.exec_nanos * 100 / total),
                int(s.invocations),
                int(s.exec_nanos / s.invocations.max(1)),
                int(s.min_exec_nanos),
                int(s.max_exec_nanos),
                int(s.aborts),
                int(s.failures),
            ]
        })
        .collect();
    let columns = [
        ("TIMESTAMP", BigInt),
        ("PROCEDURE", Varchar),
        ("WEIGHTED_PERC", BigInt),
        ("INVOCATIONS", BigInt),
        ("AVG", BigInt),
        ("MIN", BigInt),
        ("MAX", BigInt),
        ("ABORTS", BigInt),
        ("FAILURES", BigInt),
    ];
    table(&columns, rows)
}

fn initiator(ctx: &ServerContext, sites: &[SiteStats], delta: bool, selector: &str) -> ResultTable {
    use DataType::*;
    let columns = with_host(&[
        ("SITE_ID", Integer),
        ("CONNECTION_ID", BigInt),
        ("CONNECTION_HOSTNAME", Varchar),
        ("PROCEDURE_NAME", Varchar),
        ("INVOCATIONS", BigInt),
        ("AVG_EXECUTION_TIME", Integer),
        ("MIN_EXECUTION_TIME", Integer),
        ("MAX_EXECUTION_TIME", Integer),
        ("ABORTS", BigInt),
        ("FAILURES", BigInt),
    ]);
    // Initiators are the sites (single-partition) and the coordinator; the
    // connection is not tracked per invocation (-1).
    let ms = |nanos: u64| int(nanos / 1_000_000);
    let rows = procedure_counts(ctx, sites, delta, &format!("{selector}/INITIATOR"))
        .into_iter()
        .filter(|(_, _, s)| s.invocations > 0)
        .map(|(p, name, s)| {
            [
                host_cells(ctx),
                vec![
                    site_id(p),
                    Value::Integer(-1),
                    Value::from(""),
                    Value::from(name.as_str()),
                    int(s.invocations),
                    ms(s.exec_nanos / s.invocations.max(1)),
                    ms(s.min_exec_nanos),
                    ms(s.max_exec_nanos),
                    int(s.aborts),
                    int(s.failures),
                ],
            ]
            .concat()
        })
        .collect();
    table(&columns, rows)
}

fn tables(ctx: &ServerContext, sites: &[SiteStats]) -> ResultTable {
    use DataType::*;
    let columns = with_host(&[
        ("SITE_ID", Integer),
        ("PARTITION_ID", BigInt),
        ("TABLE_NAME", Varchar),
        ("TABLE_TYPE", Varchar),
        ("TUPLE_COUNT", BigInt),
        ("TUPLE_ALLOCATED_MEMORY", BigInt),
        ("TUPLE_DATA_MEMORY", BigInt),
        ("STRING_DATA_MEMORY", BigInt),
        ("TUPLE_LIMIT", Integer),
        ("PERCENT_FULL", Integer),
    ]);
    let mut rows = Vec::new();
    for s in sites.iter().filter(|s| s.partition.is_some()) {
        for t in &s.tables {
            let kind = match (t.view, t.partitioned) {
                (true, _) => "PersistentTable (view)",
                (false, true) => "PersistentTable",
                (false, false) => "ReplicatedTable",
            };
            rows.push(
                [
                    host_cells(ctx),
                    vec![
                        site_id(s.partition),
                        site_id(s.partition),
                        Value::from(t.name.as_str()),
                        Value::from(kind),
                        int(t.rows),
                        int(t.bytes / 1024),
                        int(t.bytes / 1024),
                        int(0),
                        Value::Null,
                        int(0),
                    ],
                ]
                .concat(),
            );
        }
    }
    table(&columns, rows)
}

fn indexes(ctx: &ServerContext, sites: &[SiteStats]) -> ResultTable {
    use DataType::*;
    let columns = with_host(&[
        ("SITE_ID", Integer),
        ("PARTITION_ID", BigInt),
        ("INDEX_NAME", Varchar),
        ("TABLE_NAME", Varchar),
        ("INDEX_TYPE", Varchar),
        ("IS_UNIQUE", TinyInt),
        ("IS_COUNTABLE", TinyInt),
        ("ENTRY_COUNT", BigInt),
        ("MEMORY_ESTIMATE", BigInt),
    ]);
    let mut rows = Vec::new();
    for s in sites.iter().filter(|s| s.partition.is_some()) {
        for t in &s.tables {
            for (name, entries, unique) in &t.indexes {
                rows.push(
                    [
                        host_cells(ctx),
                        vec![
                            site_id(s.partition),
                            site_id(s.partition),
                            Value::from(name.as_str()),
                            Value::from(t.name.as_str()),
                            Value::from("TreeIndex"),
                            Value::Integer(i64::from(*unique)),
                            Value::Integer(0),
                            int(*entries),
                            // Keys, row ids and tree overhead: about 48 bytes an entry.
                            int(entries * 48 / 1024),
                        ],
                    ]
                    .concat(),
                );
            }
        }
    }
    table(&columns, rows)
}

/// (resident bytes, physical memory bytes) from /proc.
pub(crate) fn proc_memory() -> (u64, u64) {
    let page = 4096u64;
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map_or(0, |p| p * page);
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|k| k.parse::<u64>().ok()))
        })
        .map_or(0, |k| k * 1024);
    (rss, total)
}

fn memory(ctx: &ServerContext, sites: &[SiteStats]) -> ResultTable {
    use DataType::*;
    let columns = with_host(&[
        ("RSS", BigInt),
        ("JAVAUSED", BigInt),
        ("JAVAUNUSED", BigInt),
        ("TUPLEDATA", BigInt),
        ("TUPLEALLOCATED", BigInt),
        ("INDEXMEMORY", BigInt),
        ("STRINGMEMORY", BigInt),
        ("TUPLECOUNT", BigInt),
        ("POOLEDMEMORY", BigInt),
        ("PHYSICALMEMORY", BigInt),
        ("JAVAMAXHEAP", BigInt),
    ]);
    let (rss, physical) = proc_memory();
    let all = sites.iter().flat_map(|s| s.tables.iter());
    let (mut data, mut tuples, mut index) = (0u64, 0u64, 0u64);
    for t in all {
        data += t.bytes;
        tuples += t.rows;
        index += t.index_bytes;
    }
    // Memory figures in KiB, as VoltDB reports them.
    let row = [
        host_cells(ctx),
        vec![
            int(rss / 1024),
            int(0),
            int(0),
            int(data / 1024),
            int(data / 1024),
            int(index / 1024),
            int(0),
            int(tuples),
            int(0),
            int(physical / 1024),
            int(0),
        ],
    ]
    .concat();
    table(&columns, vec![row])
}

/// CPU time of this process (user + system) from /proc.
pub(crate) fn process_cpu() -> Duration {
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces) in parentheses.
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// Percent of all cores this process used since the previous call.
pub(crate) fn cpu_percent(ctx: &ServerContext, reader: &'static str) -> i64 {
    let now = (process_cpu(), Instant::now());
    let mut memory = ctx.stats_memory.lock().unwrap_or_else(|e| e.into_inner());
    let (cpu0, t0) = memory.cpu.insert(reader, now).unwrap_or((Duration::ZERO, ctx.started));
    let wall = now.1.duration_since(t0).as_secs_f64();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    if wall <= 0.0 {
        return 0;
    }
    ((now.0.saturating_sub(cpu0)).as_secs_f64() / wall / cores * 100.0).round() as i64
}

fn cpu(ctx: &ServerContext) -> ResultTable {
    let row = [host_cells(ctx), vec![Value::Integer(cpu_percent(ctx, "CPU"))]].concat();
    table(&with_host(&[("PERCENT_USED", DataType::BigInt)]), vec![row])
}

fn iostats(ctx: &ServerContext, delta: bool, reader: &str) -> ResultTable {
    use DataType::*;
    let columns = with_host(&[
        ("CONNECTION_ID", BigInt),
        ("CONNECTION_HOSTNAME", Varchar),
        ("BYTES_READ", BigInt),
        ("MESSAGES_READ", BigInt),
        ("BYTES_WRITTEN", BigInt),
        ("MESSAGES_WRITTEN", BigInt),
    ]);
    let conns: Vec<_> =
        ctx.connections.lock().unwrap_or_else(|e| e.into_inner()).values().map(|(s, _)| s.clone()).collect();
    let mut memory = ctx.stats_memory.lock().unwrap_or_else(|e| e.into_inner());
    let last = memory.io.entry(reader.into()).or_default();
    let mut rows = Vec::new();
    let mut now = HashMap::new();
    for c in conns {
        let v = [
            c.bytes_read.load(Ordering::Relaxed),
            c.messages_read.load(Ordering::Relaxed),
            c.bytes_written.load(Ordering::Relaxed),
            c.messages_written.load(Ordering::Relaxed),
        ];
        let before = if delta { last.get(&c.id).copied().unwrap_or_default() } else { [0; 4] };
        now.insert(c.id, v);
        let d: Vec<Value> = v.iter().zip(before).map(|(a, b)| int(a.saturating_sub(b))).collect();
        rows.push([host_cells(ctx), vec![Value::Integer(c.id), Value::from(c.peer.as_str())], d].concat());
    }
    if delta {
        *last = now;
    }
    table(&columns, rows)
}

fn live_clients(ctx: &ServerContext) -> ResultTable {
    use DataType::*;
    let columns = with_host(&[
        ("CONNECTION_ID", BigInt),
        ("CLIENT_HOSTNAME", Varchar),
        ("ADMIN", TinyInt),
        ("OUTSTANDING_REQUEST_BYTES", BigInt),
        ("OUTSTANDING_RESPONSE_MESSAGES", BigInt),
        ("OUTSTANDING_TRANSACTIONS", BigInt),
    ]);
    let conns = ctx.connections.lock().unwrap_or_else(|e| e.into_inner());
    let rows = conns
        .values()
        .map(|(s, sink)| {
            let outstanding = sink.upgrade().map_or(0, |k| k.outstanding.load(Ordering::Relaxed) as u64);
            [
                host_cells(ctx),
                vec![
                    Value::Integer(s.id),
                    Value::from(s.peer.as_str()),
                    Value::Integer(i64::from(s.admin)),
                    int(0),
                    int(0),
                    int(outstanding),
                ],
            ]
            .concat()
        })
        .collect();
    table(&columns, rows)
}

/// Every site's latency histogram added up.
pub(crate) fn merged_latency(sites: &[SiteStats]) -> Histogram<u64> {
    let mut all = new_histogram();
    for s in sites {
        let _ = all.add(&s.latency);
    }
    all
}

fn latency(ctx: &ServerContext, sites: &[SiteStats]) -> ResultTable {
    use DataType::*;
    let columns = with_host(&[
        ("INTERVAL", Integer),
        ("COUNT", Integer),
        ("TPS", Integer),
        ("P50", BigInt),
        ("P95", BigInt),
        ("P99", BigInt),
        ("P99.9", BigInt),
        ("P99.99", BigInt),
        ("P99.999", BigInt),
        ("MAX", BigInt),
    ]);
    let now = merged_latency(sites);
    let mut memory = ctx.stats_memory.lock().unwrap_or_else(|e| e.into_inner());
    let (mut interval, since) = match memory.latency.take() {
        Some((before, at)) => {
            let mut h = now.clone();
            if h.subtract(&before).is_err() {
                h = now.clone();
            }
            (h, at)
        }
        None => (now.clone(), ctx.started),
    };
    memory.latency = Some((now, Instant::now()));
    drop(memory);
    if interval.is_empty() {
        interval = new_histogram();
    }
    let seconds = since.elapsed().as_secs_f64().max(0.001);
    let q = |p: f64| int(interval.value_at_quantile(p));
    let row = [
        host_cells(ctx),
        vec![
            int((seconds * 1000.0) as u64),
            int(interval.len()),
            int((interval.len() as f64 / seconds) as u64),
            q(0.5),
            q(0.95),
            q(0.99),
            q(0.999),
            q(0.9999),
            q(0.99999),
            int(interval.max()),
        ],
    ]
    .concat();
    table(&columns, vec![row])
}

fn latency_histogram(ctx: &ServerContext, sites: &[SiteStats]) -> Result<ResultTable> {
    use hdrhistogram::serialization::Serializer as _;
    let mut bytes = Vec::new();
    hdrhistogram::serialization::V2Serializer::new()
        .serialize(&merged_latency(sites), &mut bytes)
        .map_err(|e| joule_common::err!(Internal, "cannot encode the latency histogram: {e:?}"))?;
    let row = [host_cells(ctx), vec![Value::Binary(bytes)]].concat();
    Ok(table(&with_host(&[("HISTOGRAM", DataType::Varbinary)]), vec![row]))
}

fn queue(ctx: &ServerContext, sites: &[SiteStats]) -> ResultTable {
    use DataType::*;
    let columns = with_host(&[
        ("SITE_ID", Integer),
        ("CURRENT_DEPTH", Integer),
        ("POLL_COUNT", BigInt),
        ("AVG_WAIT", BigInt),
        ("MAX_WAIT", BigInt),
    ]);
    let rows = sites
        .iter()
        .filter(|s| s.partition.is_some())
        .map(|s| {
            [
                host_cells(ctx),
                vec![
                    site_id(s.partition),
                    int(s.queue_depth),
                    int(s.queue_wait.len()),
                    int(s.queue_wait.mean() as u64),
                    int(s.queue_wait.max()),
                ],
            ]
            .concat()
        })
        .collect();
    table(&columns, rows)
}

fn starvation(ctx: &ServerContext, sites: &[SiteStats]) -> ResultTable {
    use DataType::*;
    let columns = with_host(&[
        ("SITE_ID", Integer),
        ("COUNT", BigInt),
        ("PERCENT", Float),
        ("AVG", BigInt),
        ("MIN", BigInt),
        ("MAX", BigInt),
        ("STDDEV", BigInt),
    ]);
    let rows = sites
        .iter()
        .map(|s| {
            let total = s.since_start.as_secs_f64().max(1e-9);
            let idle = s.idle.as_secs_f64();
            let invocations: u64 = s.procedures.values().map(|p| p.invocations).sum();
            [
                host_cells(ctx),
                vec![
                    site_id(s.partition),
                    int(invocations),
                    Value::Float((idle / total * 100.0).clamp(0.0, 100.0)),
                    int(0),
                    int(0),
                    int(0),
                    int(0),
                ],
            ]
            .concat()
        })
        .collect();
    table(&columns, rows)
}

/// Per partition held on this host, per table: this copy's checksum and
/// whether this host leads the partition — equal checksums on every host
/// holding a partition mean its replicas agree.
fn replica_checksums(ctx: &ServerContext) -> ResultTable {
    let m = ctx.membership.metadata();
    let me = ctx.host_id;
    let mut rows = Vec::new();
    for (p, tables) in ctx.host.local_checksums(Duration::from_secs(10)) {
        let leads = m.partitions.get(p as usize).and_then(|x| x.leader) == Some(me);
        for (table, checksum) in tables {
            rows.push(
                [
                    host_cells(ctx),
                    vec![
                        Value::Integer(i64::from(p)),
                        Value::from(if leads { "LEADER" } else { "REPLICA" }),
                        Value::from(table.as_str()),
                        Value::Integer(checksum as i64),
                    ],
                ]
                .concat(),
            );
        }
    }
    table(
        &with_host(&[
            ("PARTITION_ID", DataType::Integer),
            ("ROLE", DataType::Varchar),
            ("TABLE_NAME", DataType::Varchar),
            ("CHECKSUM", DataType::BigInt),
        ]),
        rows,
    )
}

/// Per partition: how many of its k+1 copies are not running.
fn ksafety(ctx: &ServerContext) -> ResultTable {
    let m = ctx.membership.metadata();
    let rows = m
        .partitions
        .iter()
        .enumerate()
        .map(|(p, placement)| {
            let missing = placement.replicas.iter().filter(|h| !m.is_up(**h)).count();
            [host_cells(ctx), vec![Value::Integer(p as i64), int(missing as u64)]].concat()
        })
        .collect();
    table(&with_host(&[("PARTITION_ID", DataType::Integer), ("MISSING_REPLICA", DataType::Integer)]), rows)
}
