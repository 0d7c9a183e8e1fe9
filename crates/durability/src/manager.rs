//! Snapshots as a node runs them: saving (manual and automatic), the
//! status history, truncating the command log, restoring online, and the
//! system procedures' answers.
//!
//! Snapshots saved in the data directory's `snapshots/` (the default
//! place) take part in recovery: after one is complete, the `retain`
//! newest there are kept usable — automatic ones (`AUTO_…`) older than
//! them are deleted, and so are the log segments none of them needs. A
//! snapshot saved anywhere else is a backup only (restorable with
//! `@SnapshotRestore`); it never truncates the log.

use crate::node::AttachableLog;
use crate::snapshot::{self, check_nonce, SaveReport};
use joule_common::{bail, err, DataType, Error, Result, Value};
use joule_sql::plan::OutputColumn;
use joule_txn::logging::Answer;
use joule_txn::snapshot::{FrozenDatabase, SnapshotTarget};
use joule_txn::{Client, Response, ResponseSink, ResultTable};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Statuses kept for `@Statistics SNAPSHOTSTATUS`.
const HISTORY: usize = 20;

/// One snapshot's outcome.
#[derive(Clone, Debug)]
pub struct SnapshotStatus {
    pub path: PathBuf,
    pub nonce: String,
    pub txn_id: u64,
    pub started_millis: u64,
    pub seconds: f64,
    pub bytes: u64,
    pub rows: u64,
    pub max_pause_micros: u64,
    pub automatic: bool,
    /// `None`: success.
    pub error: Option<String>,
}

/// What to save.
#[derive(Clone, Debug)]
pub struct SaveRequest {
    /// Where (`None`: the data directory's `snapshots/`).
    pub dir: Option<PathBuf>,
    pub nonce: String,
    /// Answer once written (otherwise as soon as the partitions are frozen).
    pub blocking: bool,
    /// Started by the timer (`AUTO_…`), not a user.
    pub automatic: bool,
}

/// A node's snapshots.
pub struct Snapshots {
    /// `<data>/snapshots`: the snapshots recovery uses.
    pub root: PathBuf,
    log: Arc<AttachableLog>,
    retain: usize,
    /// The running snapshot's token (0: none).
    running: AtomicU64,
    tokens: AtomicU64,
    history: Mutex<VecDeque<SnapshotStatus>>,
    /// Snapshots finished since start: succeeded, failed.
    succeeded: AtomicU64,
    failed: AtomicU64,
}

fn now_millis() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn column(name: &str, t: DataType) -> OutputColumn {
    OutputColumn { name: name.to_string(), data_type: Some(t) }
}

impl Snapshots {
    pub fn new(root: PathBuf, log: Arc<AttachableLog>, retain: usize) -> Arc<Snapshots> {
        Arc::new(Snapshots {
            root,
            log,
            retain: retain.max(1),
            running: AtomicU64::new(0),
            tokens: AtomicU64::new(0),
            history: Mutex::default(),
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        })
    }

    pub fn history(&self) -> Vec<SnapshotStatus> {
        self.history.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect()
    }

    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst) != 0
    }

    /// Start a snapshot; `sink` gets the answer once the partitions are
    /// frozen, or (blocking) once the files are written.
    pub fn save(self: &Arc<Self>, client: &mut Client, request: SaveRequest, handle: u64, sink: Arc<dyn ResponseSink>) {
        let SaveRequest { dir, nonce, blocking, automatic } = request;
        let nonce = nonce.as_str();
        let root = dir.unwrap_or_else(|| self.root.clone());
        if let Err(e) = check_nonce(nonce) {
            return sink.deliver(handle, Response::failure(e, None));
        }
        if root.join(nonce).exists() {
            let e = err!(SnapshotFailed, "a snapshot named {nonce} already exists in {}", root.display());
            return sink.deliver(handle, Response::failure(e, None));
        }
        let token = self.tokens.fetch_add(1, Ordering::SeqCst) + 1;
        if self.running.compare_exchange(0, token, Ordering::SeqCst, Ordering::SeqCst).is_err() {
            let e = err!(SnapshotFailed, "a snapshot is already in progress; try again when it is done");
            return sink.deliver(handle, Response::failure(e, None));
        }
        let job =
            Arc::new(SaveJob { snapshots: self.clone(), root, nonce: nonce.to_string(), blocking, automatic, token });
        let guard: Arc<dyn ResponseSink> = Arc::new(ClearOnFailure { snapshots: self.clone(), inner: sink, token });
        client.snapshot(job, handle, guard);
    }

    /// Snapshots finished since start: (succeeded, failed).
    pub fn totals(&self) -> (u64, u64) {
        (self.succeeded.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed))
    }

    fn finish(&self, token: u64, status: SnapshotStatus) {
        match status.error {
            None => self.succeeded.fetch_add(1, Ordering::Relaxed),
            Some(_) => self.failed.fetch_add(1, Ordering::Relaxed),
        };
        let mut h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        if h.len() == HISTORY {
            h.pop_front();
        }
        h.push_back(status);
        drop(h);
        self.release(token);
    }

    /// The snapshot with `token` is over (a newer one is left alone).
    fn release(&self, token: u64) {
        let _ = self.running.compare_exchange(token, 0, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// After a snapshot in the data directory completed: keep the `retain`
    /// newest usable, delete older automatic ones and the log segments no
    /// kept snapshot needs.
    fn truncate(&self) -> Result<()> {
        let complete: Vec<(PathBuf, snapshot::Manifest)> =
            snapshot::scan(&self.root)?.into_iter().filter_map(|(p, m)| m.ok().map(|m| (p, m))).collect();
        let kept = &complete[..complete.len().min(self.retain)];
        for (path, m) in &complete[kept.len()..] {
            if m.nonce.starts_with("AUTO_") {
                snapshot::delete(&self.root, &m.nonce).map_err(|e| e.context(path.display().to_string()))?;
            }
        }
        // Automatic snapshots that never completed (a crash, a full disk).
        for (path, m) in snapshot::scan(&self.root)? {
            let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            if m.is_err() && name.starts_with("AUTO_") {
                snapshot::delete(&self.root, &name)?;
            }
        }
        // A snapshot taken with no log (segment 0) needs the log from the start.
        let needed = kept.iter().map(|(_, m)| m.log_segment.max(1)).min();
        if let (Some(seq), Some(w)) = (needed, self.log.writer()) {
            w.delete_before(seq)?;
        }
        Ok(())
    }

    /// `@SnapshotRestore`: load snapshot `nonce` from `dir` into the
    /// existing tables, as one transaction the command log records (its
    /// replay reads the same files).
    pub fn restore(&self, client: &mut Client, dir: &Path, nonce: &str) -> Result<Vec<ResultTable>> {
        check_nonce(nonce)?;
        let loaded = snapshot::load(&dir.join(nonce))?;
        let log_as =
            ("@SnapshotRestore".to_string(), vec![Value::from(dir.display().to_string().as_str()), Value::from(nonce)]);
        let r = client.load_rows(loaded.logical_tables(), Some(log_as));
        match r.error {
            Some(e) => Err(e.context(format!("restoring snapshot {nonce}"))),
            None => Ok(r.results),
        }
    }

    /// `@SnapshotScan`: the snapshots in `dir`.
    pub fn scan_table(dir: &Path) -> Result<ResultTable> {
        let columns = vec![
            column("PATH", DataType::Varchar),
            column("NONCE", DataType::Varchar),
            column("TXNID", DataType::BigInt),
            column("CREATED", DataType::BigInt),
            column("SIZE", DataType::BigInt),
            column("PARTITIONS", DataType::Integer),
            column("ROWS", DataType::BigInt),
            column("COMPLETE", DataType::Varchar),
            column("ERR_MSG", DataType::Varchar),
        ];
        let mut rows = Vec::new();
        for (path, m) in snapshot::scan(dir)? {
            let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            rows.push(match m {
                Ok(m) => vec![
                    Value::from(dir.display().to_string().as_str()),
                    Value::from(m.nonce.as_str()),
                    Value::Integer(m.ids.txn_id.0 as i64),
                    Value::Integer(m.created_millis as i64),
                    Value::Integer(m.bytes() as i64),
                    Value::Integer(i64::from(m.partitions)),
                    Value::Integer(m.rows as i64),
                    Value::from("TRUE"),
                    Value::from(""),
                ],
                Err(e) => vec![
                    Value::from(dir.display().to_string().as_str()),
                    Value::from(name.as_str()),
                    Value::Null,
                    Value::Null,
                    Value::Null,
                    Value::Null,
                    Value::Null,
                    Value::from("FALSE"),
                    Value::from(e.to_string().as_str()),
                ],
            });
        }
        Ok(ResultTable::new(columns.into(), rows))
    }

    /// `@Statistics SNAPSHOTSTATUS`.
    pub fn status_table(&self) -> ResultTable {
        let columns = vec![
            column("TIMESTAMP", DataType::BigInt),
            column("HOST_ID", DataType::Integer),
            column("HOSTNAME", DataType::Varchar),
            column("PATH", DataType::Varchar),
            column("NONCE", DataType::Varchar),
            column("TXNID", DataType::BigInt),
            column("START_TIME", DataType::BigInt),
            column("END_TIME", DataType::BigInt),
            column("SIZE", DataType::BigInt),
            column("ROWS", DataType::BigInt),
            column("DURATION", DataType::BigInt),
            column("THROUGHPUT", DataType::Float),
            column("MAX_PAUSE_MICROS", DataType::BigInt),
            column("RESULT", DataType::Varchar),
            column("TYPE", DataType::Varchar),
        ];
        let now = now_millis() as i64;
        let rows = self
            .history()
            .into_iter()
            .rev()
            .map(|s| {
                let millis = (s.seconds * 1000.0) as i64;
                let mb_per_s = if s.seconds > 0.0 { s.bytes as f64 / (1 << 20) as f64 / s.seconds } else { 0.0 };
                vec![
                    Value::Integer(now),
                    Value::Integer(0),
                    Value::from("localhost"),
                    Value::from(s.path.display().to_string().as_str()),
                    Value::from(s.nonce.as_str()),
                    Value::Integer(s.txn_id as i64),
                    Value::Integer(s.started_millis as i64),
                    Value::Integer(s.started_millis as i64 + millis),
                    Value::Integer(s.bytes as i64),
                    Value::Integer(s.rows as i64),
                    Value::Integer(millis),
                    Value::Float(mb_per_s),
                    Value::Integer(s.max_pause_micros as i64),
                    Value::from(if s.error.is_none() { "SUCCESS" } else { "FAILURE" }),
                    Value::from(if s.automatic { "AUTO" } else { "MANUAL" }),
                ]
            })
            .collect();
        ResultTable::new(columns.into(), rows)
    }
}

/// A snapshot request as the coordinator's target.
#[derive(Clone)]
struct SaveJob {
    snapshots: Arc<Snapshots>,
    root: PathBuf,
    nonce: String,
    blocking: bool,
    automatic: bool,
    token: u64,
}

impl SaveJob {
    fn result_table(&self, db_txn: u64, result: &str, error: &str, pause: u64) -> ResultTable {
        let columns = vec![
            column("PATH", DataType::Varchar),
            column("NONCE", DataType::Varchar),
            column("TXNID", DataType::BigInt),
            column("RESULT", DataType::Varchar),
            column("ERR_MSG", DataType::Varchar),
            column("MAX_PAUSE_MICROS", DataType::BigInt),
        ];
        let row = vec![
            Value::from(self.root.display().to_string().as_str()),
            Value::from(self.nonce.as_str()),
            Value::Integer(db_txn as i64),
            Value::from(result),
            Value::from(error),
            Value::Integer(pause as i64),
        ];
        ResultTable::new(columns.into(), vec![row])
    }
}

impl SnapshotTarget for SaveJob {
    fn frozen(&self, db: FrozenDatabase, answer: Answer) {
        let txn = db.ids.txn_id.0;
        let pause = db.partitions.iter().map(|p| p.pause_micros).max().unwrap_or(0);
        let job = self.clone();
        let answer = if self.blocking {
            Some(answer)
        } else {
            let table = self.result_table(txn, "STARTED", "", pause);
            Answer { response: Response::answered(vec![table]), ..answer }.deliver();
            None
        };
        let started_millis = now_millis();
        let fallback = answer.as_ref().map(|a| (a.sink.clone(), a.handle));
        let spawned = std::thread::Builder::new().name("joule-snapshot".into()).spawn(move || {
            let result = snapshot::save(&job.root, &job.nonce, &db);
            drop(db);
            let in_data_dir = job.root == job.snapshots.root;
            let result = result.and_then(|report| {
                if in_data_dir {
                    job.snapshots.truncate().map_err(|e| e.context("snapshot saved, but truncating the log failed"))?;
                }
                Ok(report)
            });
            job.complete(result, txn, pause, started_millis, answer);
        });
        if let Err(e) = spawned {
            // The closure (and the answer it held) is gone: answer here.
            let e = err!(Internal, "cannot start the snapshot writer: {e}");
            self.snapshots.finish(self.token, self.status(&Err(e.clone()), txn, pause, started_millis));
            if let Some((sink, handle)) = fallback {
                sink.deliver(handle, Response::failure(e, None));
            }
        }
    }
}

impl SaveJob {
    fn status(&self, result: &Result<SaveReport>, txn: u64, pause: u64, started_millis: u64) -> SnapshotStatus {
        let (seconds, bytes, rows, max_pause_micros, error) = match result {
            Ok(r) => (r.seconds, r.manifest.bytes(), r.manifest.rows, r.max_pause_micros, None),
            Err(e) => (0.0, 0, 0, pause, Some(e.to_string())),
        };
        SnapshotStatus {
            path: self.root.clone(),
            nonce: self.nonce.clone(),
            txn_id: txn,
            started_millis,
            seconds,
            bytes,
            rows,
            max_pause_micros,
            automatic: self.automatic,
            error,
        }
    }

    fn complete(&self, result: Result<SaveReport>, txn: u64, pause: u64, started_millis: u64, answer: Option<Answer>) {
        let status = self.status(&result, txn, pause, started_millis);
        if let Err(e) = &result {
            eprintln!("joule: snapshot {} failed: {e}", self.nonce);
        }
        self.snapshots.finish(self.token, status);
        if let Some(answer) = answer {
            let response = match result {
                Ok(r) => Response::answered(vec![self.result_table(txn, "SUCCESS", "", r.max_pause_micros)]),
                Err(e) => Response::failure(e, answer.response.ids),
            };
            Answer { response, ..answer }.deliver();
        }
    }
}

/// Frees the "running" flag when the snapshot transaction itself failed
/// (the job never ran).
struct ClearOnFailure {
    snapshots: Arc<Snapshots>,
    inner: Arc<dyn ResponseSink>,
    token: u64,
}

impl ResponseSink for ClearOnFailure {
    fn deliver(&self, handle: u64, response: Response) {
        if response.error.is_some() && response.results.is_empty() {
            self.snapshots.release(self.token);
        }
        self.inner.deliver(handle, response)
    }
}

/// A parameter that may be one string or an array of strings.
pub fn strings(v: &Value, what: &str) -> Result<Vec<String>> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Ok(s.clone()),
                other => Err(err!(DatatypeMismatch, "{what} must be strings, not {}", other.type_name())),
            })
            .collect(),
        other => bail!(DatatypeMismatch, "{what} must be a string or an array of strings, not {}", other.type_name()),
    }
}

/// An error as a failed answer.
pub fn failure(e: Error) -> Response {
    Response::failure(e, None)
}
