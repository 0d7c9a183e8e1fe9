//! The system procedures the server answers itself, off the I/O threads:
//! the durability ones (`@SnapshotSave`, `@SnapshotScan`,
//! `@SnapshotRestore`, `@SnapshotDelete`, with the durability crate) and
//! `@Statistics` (see `stats.rs`); plus the automatic snapshot timer.
//!
//! Saving, restoring and deleting snapshots need the ADMINISTRATOR role or
//! the admin port (the caller checks [`needs_admin`]). Work that reads or
//! writes files runs on its own thread, never on an I/O task.

use crate::ServerContext;
use joule_common::{bail, err, DataType, Result, Value};
use joule_durability::manager::{failure, strings, SaveRequest, Snapshots};
use joule_durability::LogMode;
use joule_sql::plan::OutputColumn;
use joule_txn::{Client, Response, ResponseSink, ResultTable};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// System procedures running on threads of their own, at most.
const MAX_SYSPROC_THREADS: usize = 8;

/// Whether `name` is one of the procedures this module answers.
pub(crate) fn handles(name: &str) -> bool {
    matches!(
        name,
        "@SnapshotSave"
            | "@SnapshotScan"
            | "@SnapshotRestore"
            | "@SnapshotDelete"
            | "@Statistics"
            | "@Advise"
            | "@Rebalance"
    )
}

/// Whether `name` changes snapshots or moves data between partitions
/// (administrators only).
pub(crate) fn needs_admin(name: &str) -> bool {
    matches!(name, "@SnapshotSave" | "@SnapshotRestore" | "@SnapshotDelete" | "@Rebalance" | "@MoveRange" | "@AddCopy")
}

fn string_param(params: &[Value], i: usize, proc_name: &str, what: &str) -> Result<String> {
    match params.get(i) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v) => bail!(DatatypeMismatch, "{proc_name}: {what} must be a string, not {}", v.type_name()),
        None => bail!(WrongParameterCount, "{proc_name} needs {what} (parameter {})", i + 1),
    }
}

fn dir_param(ctx: &ServerContext, params: &[Value], i: usize, proc_name: &str) -> Result<PathBuf> {
    let dir = string_param(params, i, proc_name, "the directory")?;
    Ok(if dir.is_empty() { ctx.snapshots.root.clone() } else { PathBuf::from(dir) })
}

/// Answer `name(params)` to `sink`.
pub(crate) fn invoke(
    ctx: &Arc<ServerContext>,
    client: &mut Client,
    name: &str,
    params: Vec<Value>,
    handle: u64,
    sink: Arc<dyn ResponseSink>,
) {
    match name {
        "@SnapshotSave" => {
            let request = (|| -> Result<(Option<PathBuf>, String, bool)> {
                if params.is_empty() {
                    return Ok((None, format!("SNAPSHOT_{}", now_millis()), false));
                }
                let dir = dir_param(ctx, &params, 0, name)?;
                let nonce = string_param(&params, 1, name, "the nonce")?;
                let blocking = match params.get(2) {
                    None | Some(Value::Null) => false,
                    Some(Value::Integer(i)) => *i != 0,
                    Some(Value::Boolean(b)) => *b,
                    Some(v) => bail!(DatatypeMismatch, "@SnapshotSave: blocking must be 0 or 1, not {}", v.type_name()),
                };
                Ok((Some(dir), nonce, blocking))
            })();
            match request {
                Ok((dir, nonce, blocking)) => {
                    let request = SaveRequest { dir, nonce, blocking, automatic: false };
                    ctx.snapshots.save(client, request, handle, sink)
                }
                Err(e) => sink.deliver(handle, failure(e)),
            }
        }
        _ => {
            // File and statistics work off the I/O threads, a few at a time.
            if ctx.sysproc_threads.fetch_add(1, Ordering::SeqCst) >= MAX_SYSPROC_THREADS {
                ctx.sysproc_threads.fetch_sub(1, Ordering::SeqCst);
                let e = err!(
                    Unavailable,
                    "server unavailable: {MAX_SYSPROC_THREADS} system procedures are running already"
                );
                return sink.deliver(handle, failure(e));
            }
            let (ctx, name) = (ctx.clone(), name.to_string());
            let fallback = sink.clone();
            let running = ctx.clone();
            let spawned = std::thread::Builder::new().name("joule-sysproc".into()).spawn(move || {
                let mut client = ctx.host.client();
                let result = match name.as_str() {
                    "@SnapshotScan" => {
                        dir_param(&ctx, &params, 0, &name).and_then(|d| Snapshots::scan_table(&d)).map(|t| vec![t])
                    }
                    "@SnapshotRestore" => dir_param(&ctx, &params, 0, &name).and_then(|dir| {
                        let nonce = string_param(&params, 1, &name, "the nonce")?;
                        let tables = ctx.snapshots.restore(&mut client, &dir, &nonce)?;
                        // A snapshot right away, so that recovery soon no
                        // longer needs the restored files. The restore has
                        // committed either way: a failure here is reported,
                        // not answered.
                        if let Err(e) = snapshot_now(&ctx, &mut client) {
                            eprintln!(
                                "joule: the snapshot after restoring {nonce} failed ({e}); keep {} until a later \
                                 snapshot completes",
                                dir.join(&nonce).display()
                            );
                        }
                        Ok(tables)
                    }),
                    "@SnapshotDelete" => delete(&ctx, &params),
                    "@Statistics" => statistics(&ctx, &params),
                    "@Advise" => Ok(vec![crate::advisor::advice_table(&crate::advisor::for_node(&ctx))]),
                    "@Rebalance" => crate::rebalance::invoke(&ctx, &params),
                    _ => Err(err!(UndefinedProcedure, "system procedure {name} was not found")),
                };
                ctx.sysproc_threads.fetch_sub(1, Ordering::SeqCst);
                sink.deliver(handle, result.map_or_else(failure, Response::answered));
            });
            if let Err(e) = spawned {
                running.sysproc_threads.fetch_sub(1, Ordering::SeqCst);
                fallback
                    .deliver(handle, failure(err!(Unavailable, "cannot start a thread for a system procedure: {e}")));
            }
        }
    }
}

/// `@SnapshotDelete(directories, nonces)`: strings or arrays of them, paired.
fn delete(ctx: &ServerContext, params: &[Value]) -> Result<Vec<ResultTable>> {
    let (Some(dirs), Some(nonces)) = (params.first(), params.get(1)) else {
        bail!(WrongParameterCount, "@SnapshotDelete takes directories and nonces");
    };
    let dirs = strings(dirs, "@SnapshotDelete directories")?;
    let nonces = strings(nonces, "@SnapshotDelete nonces")?;
    if dirs.len() != nonces.len() {
        bail!(InvalidArgument, "@SnapshotDelete: {} directories but {} nonces", dirs.len(), nonces.len());
    }
    let mut rows = Vec::new();
    for (dir, nonce) in dirs.iter().zip(&nonces) {
        let root = if dir.is_empty() { ctx.snapshots.root.clone() } else { PathBuf::from(dir) };
        let (result, message) = match joule_durability::snapshot::delete(&root, nonce) {
            Ok(()) => ("SUCCESS", String::new()),
            Err(e) => ("FAILURE", e.to_string()),
        };
        rows.push(vec![
            Value::from(root.display().to_string().as_str()),
            Value::from(nonce.as_str()),
            Value::from(result),
            Value::from(message.as_str()),
        ]);
    }
    let columns = ["PATH", "NONCE", "RESULT", "ERR_MSG"]
        .iter()
        .map(|n| OutputColumn { name: n.to_string(), data_type: Some(DataType::Varchar) })
        .collect::<Vec<_>>();
    Ok(vec![ResultTable::new(columns.into(), rows)])
}

/// `@Statistics(selector[, delta])` (see `stats.rs`).
fn statistics(ctx: &ServerContext, params: &[Value]) -> Result<Vec<ResultTable>> {
    let selector = string_param(params, 0, "@Statistics", "the selector")?;
    let delta = match params.get(1) {
        None | Some(Value::Null) => false,
        Some(Value::Integer(i)) => *i != 0,
        Some(Value::Boolean(b)) => *b,
        Some(v) => bail!(DatatypeMismatch, "@Statistics: delta must be 0 or 1, not {}", v.type_name()),
    };
    crate::stats::statistics(ctx, &selector, delta)
}

pub(crate) fn command_log_table(ctx: &ServerContext) -> ResultTable {
    let col = |n: &str, t| OutputColumn { name: n.to_string(), data_type: Some(t) };
    let columns = vec![
        col("TIMESTAMP", DataType::BigInt),
        col("HOST_ID", DataType::Integer),
        col("HOSTNAME", DataType::Varchar),
        col("MODE", DataType::Varchar),
        col("FSYNC_INTERVAL", DataType::Integer),
        col("SEGMENT_COUNT", DataType::Integer),
        col("RECORDS", DataType::BigInt),
        col("BYTES", DataType::BigInt),
        col("FSYNCS", DataType::BigInt),
        col("FSYNC_AVG_MICROS", DataType::BigInt),
        col("FSYNC_MAX_MICROS", DataType::BigInt),
        col("FAILED", DataType::Varchar),
    ];
    let (mode, interval) = match ctx.config.command_log {
        None => ("OFF", 0),
        Some(LogMode::Sync) => ("SYNC", 0),
        Some(LogMode::Async { frequency }) => ("ASYNC", frequency.as_millis() as i64),
    };
    let segments = joule_durability::segment::list_segments(&ctx.data.log_dir()).map_or(0, |s| s.len()) as i64;
    let (records, bytes, syncs, sync_micros, max, failed) = match ctx.log.writer() {
        Some(w) => {
            let s = w.stats();
            (
                s.records.load(Ordering::Relaxed),
                s.bytes.load(Ordering::Relaxed),
                s.syncs.load(Ordering::Relaxed),
                s.sync_micros.load(Ordering::Relaxed),
                s.max_sync_micros.load(Ordering::Relaxed),
                w.has_failed(),
            )
        }
        None => (0, 0, 0, 0, 0, false),
    };
    let row = vec![
        Value::Integer(now_millis() as i64),
        Value::Integer(0),
        Value::from("localhost"),
        Value::from(mode),
        Value::Integer(interval),
        Value::Integer(segments),
        Value::Integer(records as i64),
        Value::Integer(bytes as i64),
        Value::Integer(syncs as i64),
        Value::Integer(sync_micros.checked_div(syncs).unwrap_or(0) as i64),
        Value::Integer(max as i64),
        Value::from(if failed { "TRUE" } else { "FALSE" }),
    ];
    ResultTable::new(columns.into(), vec![row])
}

fn now_millis() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Save an automatic snapshot in the data directory and wait for it.
fn snapshot_now(ctx: &Arc<ServerContext>, client: &mut Client) -> Result<()> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    struct Wait(std::sync::mpsc::SyncSender<Response>);
    impl ResponseSink for Wait {
        fn deliver(&self, _handle: u64, response: Response) {
            let _ = self.0.send(response);
        }
    }
    // One may be running already: wait for it to finish first.
    for _ in 0..6000 {
        if !ctx.snapshots.is_running() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let request = SaveRequest { dir: None, nonce: format!("AUTO_{}", now_millis()), blocking: true, automatic: true };
    ctx.snapshots.save(client, request, 0, Arc::new(Wait(tx)));
    match rx.recv() {
        Ok(r) => r.error.map_or(Ok(()), Err),
        Err(_) => Err(err!(Unavailable, "the server stopped")),
    }
}

/// Save an automatic snapshot every `every` until the server stops.
pub(crate) async fn automatic_snapshots(ctx: Arc<ServerContext>, every: std::time::Duration) {
    let mut shutdown = ctx.shutdown.subscribe();
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if ctx.snapshots.is_running() {
            continue;
        }
        let nonce = format!("AUTO_{}", now_millis());
        let sink: Arc<dyn ResponseSink> = Arc::new(Report);
        let mut client = ctx.host.client();
        let request = SaveRequest { dir: None, nonce, blocking: true, automatic: true };
        ctx.snapshots.save(&mut client, request, 0, sink);
    }
}

/// Automatic snapshots report failures on stderr (and in SNAPSHOTSTATUS).
struct Report;

impl ResponseSink for Report {
    fn deliver(&self, _handle: u64, response: Response) {
        if let Some(e) = response.error {
            eprintln!("joule: automatic snapshot failed: {e}");
        }
    }
}
