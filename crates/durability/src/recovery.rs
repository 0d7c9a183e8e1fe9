//! Recovery: reading the command log back and running it again in order.
//!
//! [`read_log`] scans every segment. A bad frame in the last segment is a
//! torn tail (a batch whose sync never finished: nothing in it was
//! acknowledged in synchronous mode) — it is reported and cut off. A bad
//! frame in any other segment, a segment of another partition count or a
//! gap in the segment numbers stop recovery with a message saying what to
//! do: the transactions after the damage cannot be replayed in order, and
//! guessing would silently lose or reorder acknowledged work.
//!
//! [`replay_plan`] orders the records not covered by the snapshot being
//! restored. Single-partition records keep their file order (each site's
//! records reached the log in its execution order) and are placed by
//! `after_mp` between the multi-partition records, which run in id order:
//! a single-partition transaction ran after every multi-partition one with
//! an id up to its `after_mp` and before every later one.
//!
//! [`replay`] runs the plan through a [`Host`] with the recorded ids, so
//! `NOW()` and random functions give what they gave the first time. The
//! single-partition records between two multi-partition ones are sent all
//! at once (each partition runs its own in order, partitions in parallel);
//! a multi-partition record waits for them and is waited for.

use crate::node::DataDir;
use crate::segment::{list_segments, scan_segment, LogRecord, Tail};
use crate::snapshot::{self, highest};
use joule_common::{bail, err, Result, Value};
use joule_txn::{Client, Host, Invocation, Response, ResponseSink, TxnIds};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

/// What reading the log found.
#[derive(Debug, Default)]
pub struct LogContents {
    pub records: Vec<LogRecord>,
    /// Segment numbers present, in order.
    pub segments: Vec<u64>,
    /// A torn tail that was cut: (segment, offset, bytes cut, why).
    pub cut: Option<(u64, u64, u64, String)>,
}

/// Read every segment in `dir` (written for `partitions` partitions),
/// cutting a torn tail off the last one.
pub fn read_log(dir: &Path, partitions: u32) -> Result<LogContents> {
    let segments = list_segments(dir)?;
    let mut out = LogContents::default();
    let last = segments.len().saturating_sub(1);
    for (i, (seq, path)) in segments.iter().enumerate() {
        let scan = scan_segment(path).map_err(|e| {
            err!(
                CorruptData,
                "command log segment {} cannot be read ({e}); move it aside only if you accept losing the \
                 transactions in it and after it",
                path.display()
            )
        })?;
        if scan.partitions != partitions {
            bail!(
                RecoveryFailed,
                "command log segment {} was written by a node with {} partitions, but this node has {partitions}: \
                 start with --sites {}",
                path.display(),
                scan.partitions,
                scan.partitions
            );
        }
        if scan.seq != *seq {
            bail!(CorruptData, "command log segment {} says it is segment {:016x}", path.display(), scan.seq);
        }
        if let Some(prev) = out.segments.last() {
            if *seq != prev + 1 {
                bail!(
                    RecoveryFailed,
                    "command log segments {prev:016x} and {seq:016x} are not consecutive: segment(s) between them \
                     are missing from {}; restore them, or start from a snapshot in a new data directory",
                    dir.display()
                );
            }
        }
        out.segments.push(*seq);
        out.records.extend(scan.records);
        if let Tail::Bad { offset, reason } = scan.tail {
            if i != last {
                bail!(
                    CorruptData,
                    "command log segment {} is corrupt at byte {offset} ({reason}) and is not the last segment: \
                     the transactions after it cannot be replayed in order. Keep a copy of {}, then remove this \
                     segment and the later ones to start from the state before the damage",
                    path.display(),
                    dir.display()
                );
            }
            let len = std::fs::metadata(path).map_err(|e| err!(IoError, "{}: {e}", path.display()))?.len();
            // Keep the cut bytes: damage inside the last segment looks the
            // same as a torn write, and someone may want to look at it.
            let aside = path.with_extension(format!("jlog.cut-{offset}"));
            let bytes = std::fs::read(path).map_err(|e| err!(IoError, "cannot read {}: {e}", path.display()))?;
            std::fs::write(&aside, &bytes[offset as usize..])
                .map_err(|e| err!(IoError, "cannot keep the torn tail in {}: {e}", aside.display()))?;
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| err!(IoError, "cannot open {} to cut its torn tail: {e}", path.display()))?;
            file.set_len(offset)
                .and_then(|_| file.sync_all())
                .map_err(|e| err!(IoError, "cannot cut the torn tail of {}: {e}", path.display()))?;
            out.cut = Some((*seq, offset, len - offset, format!("{reason}; the cut bytes are in {}", aside.display())));
        }
    }
    Ok(out)
}

/// One step of a replay.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Single-partition records, in log order (run in parallel across
    /// partitions, in order within each).
    Single(Vec<LogRecord>),
    /// One multi-partition record.
    Multi(LogRecord),
}

/// Order the records a snapshot taken by multi-partition transaction
/// `snapshot` (0: none) does not cover.
pub fn replay_plan(records: Vec<LogRecord>, snapshot: u64) -> Vec<Step> {
    let mut multi: Vec<LogRecord> = Vec::new();
    let mut single: Vec<LogRecord> = Vec::new();
    for r in records.into_iter().filter(|r| !r.covered_by(snapshot)) {
        match r.partition {
            None => multi.push(r),
            Some(_) => single.push(r),
        }
    }
    multi.sort_by_key(|r| r.ids.txn_id);
    let ids: Vec<u64> = multi.iter().map(|r| r.ids.txn_id.0).collect();
    let mut groups: Vec<Vec<LogRecord>> = (0..=multi.len()).map(|_| Vec::new()).collect();
    for r in single {
        // After every multi-partition record with an id up to after_mp.
        let epoch = ids.partition_point(|&id| id <= r.after_mp);
        groups[epoch].push(r);
    }
    let mut steps = Vec::new();
    let mut multi = multi.into_iter();
    for group in groups {
        if !group.is_empty() {
            steps.push(Step::Single(group));
        }
        if let Some(m) = multi.next() {
            steps.push(Step::Multi(m));
        }
    }
    steps
}

/// What a replay did.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReplayStats {
    pub transactions: usize,
}

/// Counts answers; keeps the first failure. The handle of each replayed
/// invocation is its recorded transaction id.
struct Tally {
    state: Mutex<(usize, Option<String>)>,
    done: Condvar,
}

impl ResponseSink for Tally {
    fn deliver(&self, handle: u64, response: Response) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.0 += 1;
        if let Some(e) = response.error {
            s.1.get_or_insert_with(|| format!("transaction {handle}: {e}"));
        }
        self.done.notify_all();
    }
}

/// Run `steps` on `host` with the recorded ids. Stops at the first
/// transaction that fails: a logged transaction committed once, so failing
/// now means the log does not fit the state it is replayed on.
pub fn replay(host: &Host, steps: Vec<Step>) -> Result<ReplayStats> {
    let mut clients: HashMap<String, Client> = HashMap::new();
    let mut stats = ReplayStats::default();
    let tally = Arc::new(Tally { state: Mutex::new((0, None)), done: Condvar::new() });
    let sink: Arc<dyn ResponseSink> = tally.clone();
    let mut sent = 0usize;
    for step in steps {
        let records = match step {
            Step::Single(records) => records,
            Step::Multi(record) => vec![record],
        };
        for r in records {
            stats.transactions += 1;
            if r.procedure == "@SnapshotRestore" {
                replay_restore(host, &r)?;
                continue;
            }
            let client = clients.entry(r.database.clone()).or_insert_with(|| {
                let mut c = host.client();
                c.use_database(&r.database);
                c
            });
            sent += 1;
            let handle = r.ids.txn_id.0;
            let invocation = Invocation { procedure: r.procedure, params: r.params, replay: Some(r.ids) };
            client.invoke(invocation, handle, sink.clone());
        }
        // Wait for the step before the next one.
        let mut s = tally.state.lock().unwrap_or_else(|e| e.into_inner());
        while s.0 < sent {
            s = tally.done.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        if let Some(e) = &s.1 {
            bail!(
                RecoveryFailed,
                "replaying the command log failed: {e}. The log does not fit the snapshot it was replayed on; \
                 keep a copy of the data directory and report this"
            );
        }
    }
    Ok(stats)
}

/// Replay an online `@SnapshotRestore`: load the same files again.
fn replay_restore(host: &Host, r: &LogRecord) -> Result<()> {
    let (Some(Value::String(dir)), Some(Value::String(nonce))) = (r.params.first(), r.params.get(1)) else {
        bail!(CorruptData, "a logged @SnapshotRestore lacks its directory and nonce");
    };
    let path = std::path::Path::new(dir).join(nonce);
    let loaded = snapshot::load(&path).map_err(|e| {
        err!(
            RecoveryFailed,
            "the command log replays @SnapshotRestore of {}, which cannot be read ({e}); put the snapshot back \
             there to recover",
            path.display()
        )
    })?;
    let response = host.client().load_rows(loaded.logical_tables(), None);
    match response.error {
        Some(e) => bail!(RecoveryFailed, "replaying @SnapshotRestore of {} failed: {e}", path.display()),
        None => Ok(()),
    }
}

/// What a start found in the data directory and did with it.
#[derive(Clone, Debug, Default)]
pub struct RecoveryReport {
    pub first_start: bool,
    /// The snapshot loaded: (nonce, its transaction id, rows, bytes).
    pub snapshot: Option<(String, u64, u64, u64)>,
    /// Snapshots passed over, newest first, with why.
    pub skipped: Vec<String>,
    pub snapshot_seconds: f64,
    pub segments: usize,
    pub transactions: usize,
    /// A torn log tail that was cut: (segment, offset, bytes, why).
    pub cut: Option<(u64, u64, u64, String)>,
    pub seconds: f64,
}

impl std::fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.first_start {
            return f.write_str("new database (nothing to recover)");
        }
        for s in &self.skipped {
            write!(f, "skipped {s}; ")?;
        }
        match &self.snapshot {
            Some((nonce, txn, rows, bytes)) => write!(
                f,
                "loaded snapshot {nonce} (txn {txn}, {rows} rows, {bytes} bytes) in {:.3} s; ",
                self.snapshot_seconds
            )?,
            None => f.write_str("no snapshot; ")?,
        }
        write!(
            f,
            "replayed {} transaction(s) from {} command log segment(s); {:.3} s in all",
            self.transactions, self.segments, self.seconds
        )?;
        if let Some((seg, offset, bytes, why)) = &self.cut {
            write!(f, "; cut a torn tail of {bytes} byte(s) at byte {offset} of segment {seg:016x} ({why})")?;
        }
        Ok(())
    }
}

/// Bring a node back: read the log (cutting a torn tail), load the newest
/// usable snapshot (falling back to older ones), start the host with
/// `start_host` (given the snapshot's ids), rebuild the schema and load
/// the rows, and replay the log after the snapshot.
pub fn recover_node(
    data: &DataDir,
    partitions: u32,
    first_start: bool,
    start_host: impl FnOnce(Option<TxnIds>) -> Result<Host>,
) -> Result<(Host, RecoveryReport)> {
    let started = std::time::Instant::now();
    let mut report = RecoveryReport { first_start, ..Default::default() };
    let contents = read_log(&data.log_dir(), partitions)?;
    report.segments = contents.segments.len();
    report.cut = contents.cut.clone();
    let first_segment = contents.segments.first().copied();
    let mut chosen = None;
    for (path, manifest) in snapshot::scan(&data.snapshot_dir())? {
        let name = path.display().to_string();
        let manifest = match manifest {
            Ok(m) => m,
            Err(e) => {
                report.skipped.push(format!("{name} ({e})"));
                continue;
            }
        };
        if manifest.partitions != partitions {
            report.skipped.push(format!("{name} (taken with {} partitions)", manifest.partitions));
            continue;
        }
        if let Some(first) = first_segment {
            // 0: taken with no log; it needs the log from the start.
            if manifest.log_segment.max(1) < first {
                report.skipped.push(format!("{name} (the log after it was truncated)"));
                continue;
            }
        }
        let t = std::time::Instant::now();
        match snapshot::load(&path) {
            Ok(loaded) => {
                report.snapshot_seconds = t.elapsed().as_secs_f64();
                chosen = Some(loaded);
                break;
            }
            Err(e) => report.skipped.push(format!("{name} ({e})")),
        }
    }
    if chosen.is_none() && first_segment.is_some_and(|s| s > 1) {
        bail!(
            RecoveryFailed,
            "the command log in {} starts at segment {:016x}: older segments were deleted after a snapshot, but no \
             usable snapshot is left ({}). Restore the snapshot directory from a backup",
            data.log_dir().display(),
            first_segment.unwrap_or(0),
            if report.skipped.is_empty() { "none found".to_string() } else { report.skipped.join("; ") }
        );
    }
    // Ids from now on follow every id the log or the snapshot knows of —
    // including multi-partition ids only seen as `after_mp` (reads are not
    // logged) — so that no new transaction can sort before an old one.
    let mut resume = chosen.as_ref().map(|s| highest(s.manifest.ids, s.manifest.max_ids));
    for r in &contents.records {
        let after = TxnIds { txn_id: joule_txn::TxnId(r.after_mp), unique_id: r.ids.unique_id };
        let seen = highest(r.ids, after);
        resume = Some(resume.map_or(seen, |x| highest(x, seen)));
    }
    let host = start_host(resume)?;
    let mut snapshot_txn = 0;
    if let Some(loaded) = chosen {
        let t = std::time::Instant::now();
        let m = &loaded.manifest;
        snapshot_txn = m.ids.txn_id.0;
        report.snapshot = Some((m.nonce.clone(), snapshot_txn, m.rows, loaded.bytes));
        let mut client = host.client();
        for (database, sql) in &m.ddl {
            client.use_database(database);
            if let Some(e) = client.adhoc(sql, Vec::new()).error {
                bail!(RecoveryFailed, "rebuilding the schema of snapshot {} failed at \"{sql}\": {e}", m.nonce);
            }
        }
        let nonce = m.nonce.clone();
        // The rows sit where the snapshot's ring put them: that ring first.
        if let Some(ring) = m.hashinator.clone().filter(|h| h.version() > host.hashinator().version()) {
            if let Some(e) = client.swap_hashinator(ring).error {
                bail!(RecoveryFailed, "installing the hashinator ring of snapshot {nonce} failed: {e}");
            }
        }
        if let Some(e) = client.place_rows(loaded.placement()).error {
            bail!(RecoveryFailed, "loading the rows of snapshot {nonce} failed: {e}");
        }
        report.snapshot_seconds += t.elapsed().as_secs_f64();
    }
    let stats = replay(&host, replay_plan(contents.records, snapshot_txn))?;
    report.transactions = stats.transactions;
    report.seconds = started.elapsed().as_secs_f64();
    Ok((host, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use joule_txn::{TxnId, TxnIds, UniqueId};

    fn rec(txn: u64, partition: Option<u32>, after_mp: u64) -> LogRecord {
        LogRecord {
            ids: TxnIds { txn_id: TxnId(txn), unique_id: UniqueId(txn) },
            partition,
            after_mp,
            database: String::new(),
            procedure: format!("p{txn}"),
            params: Vec::new(),
        }
    }

    fn names(steps: &[Step]) -> Vec<Vec<String>> {
        steps
            .iter()
            .map(|s| match s {
                Step::Single(rs) => rs.iter().map(|r| r.procedure.clone()).collect(),
                Step::Multi(r) => vec![format!("MP {}", r.procedure)],
            })
            .collect()
    }

    #[test]
    fn single_partition_records_fall_between_their_multi_partition_neighbours() {
        // Multi-partition 100 and 300 were logged; 200 ran but wrote
        // nothing (not logged).
        let log = vec![
            rec(1, Some(0), 0),
            rec(100, None, 0),
            rec(2, Some(1), 0),   // partition 1 had not reached 100 yet
            rec(3, Some(0), 100), // after 100
            rec(4, Some(1), 200), // after the unlogged 200: still before 300
            rec(300, None, 0),
            rec(5, Some(0), 300),
        ];
        let steps = replay_plan(log.clone(), 0);
        assert_eq!(
            names(&steps),
            vec![vec!["p1", "p2"], vec!["MP p100"], vec!["p3", "p4"], vec!["MP p300"], vec!["p5"]]
        );
        // A snapshot taken by multi-partition 200 covers everything before it.
        assert_eq!(names(&replay_plan(log, 200)), vec![vec!["p4"], vec!["MP p300"], vec!["p5"]]);
    }
}
