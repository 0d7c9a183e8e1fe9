//! The command log's writer: one thread that appends logged transactions to
//! segment files and makes them durable with group commit.
//!
//! Sites and the coordinator encode their records on their own threads and
//! hand them over a channel ([`CommandLogWriter`] implements the
//! transaction layer's [`CommandLog`]). The writer takes everything queued
//! at once, writes it with one `write`, and then:
//!
//! * **synchronous** mode: syncs the file (`fdatasync`) and only then
//!   delivers the answers that were waiting on that batch — so an answer
//!   never leaves before its transaction (and everything logged before it)
//!   is on disk. While one sync runs, the next batch gathers: the longer a
//!   sync takes, the more transactions share the next one;
//! * **asynchronous** mode: answers went out already; the writer only
//!   writes, and a second thread syncs the segment every `frequency` (and
//!   the writer once more when it stops), so a slow sync never holds up
//!   writing. A power loss can take what was written since the last
//!   completed sync: at most `frequency` plus the length of one sync. A
//!   process crash (`kill -9`) takes only what had not yet reached
//!   `write` — records still in the writer's queue.
//!
//! A segment is synced before the next one starts, so only the last
//! segment can end in a torn write (see [`crate::segment`]).
//!
//! Failures: if a write or sync fails (a full disk, an I/O error), every
//! answer waiting on it gets a [`ErrorCode::IoError`] failure instead, the
//! log refuses everything after, and the failure callback runs — the
//! server uses it to stop the node, since transactions that already ran in
//! memory could no longer be made durable. Recovery then restores exactly
//! what was acknowledged.

use crate::segment::{encode_frame, encode_header, list_segments, segment_name, HEADER_BYTES};
use joule_common::{err, Error, ErrorCode, Result};
use joule_txn::logging::{Answer, CommandLog, LoggedTxn};
use joule_txn::Response;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// When answers wait for the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogMode {
    /// Answer only after the fsync that covers the transaction.
    Sync,
    /// Answer at once; fsync at least this often.
    Async { frequency: Duration },
}

/// How to run the command log.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// The `log` directory inside the data directory.
    pub dir: PathBuf,
    pub mode: LogMode,
    /// A segment is closed and a new one started past this size.
    pub segment_bytes: u64,
    /// Recorded in every segment header; recovery refuses another count.
    pub partitions: u32,
    /// The first segment this writer creates (after those found on disk).
    pub first_segment: u64,
}

/// Counters for statistics (`@Statistics COMMANDLOG`) and tests.
#[derive(Debug, Default)]
pub struct LogStats {
    pub records: AtomicU64,
    pub bytes: AtomicU64,
    pub syncs: AtomicU64,
    /// Total time spent in fsync, microseconds.
    pub sync_micros: AtomicU64,
    /// The longest fsync, microseconds.
    pub max_sync_micros: AtomicU64,
}

enum Entry {
    /// Whole frames, and answers to deliver once they are durable.
    Records(Vec<u8>, Vec<Answer>),
    /// Delete the segments numbered below this one (a snapshot covers them).
    DeleteBefore(u64, Sender<Result<usize>>),
    Stop,
}

/// Called once when the log fails.
pub type FailureHook = Box<dyn Fn(&Error) + Send + Sync>;

/// The command log: a handle to the writer thread.
pub struct CommandLogWriter {
    tx: SyncSender<Entry>,
    /// The segment being written (see `CommandLog::current_segment`).
    current: Arc<AtomicU64>,
    mode: LogMode,
    failure: Arc<Failure>,
    stats: Arc<LogStats>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl CommandLogWriter {
    /// Create the directory if needed and start the writer on a new segment.
    pub fn start(config: LogConfig, on_failure: FailureHook) -> Result<CommandLogWriter> {
        std::fs::create_dir_all(&config.dir)
            .map_err(|e| err!(IoError, "cannot create the command log directory {}: {e}", config.dir.display()))?;
        let stats = Arc::new(LogStats::default());
        let failure = Arc::new(Failure { failed: AtomicBool::new(false), hook: on_failure });
        let segment = Segment::create(&config.dir, config.partitions, config.first_segment)?;
        sync_dir(&config.dir)?;
        let syncer = match config.mode {
            LogMode::Sync => None,
            LogMode::Async { frequency } => Some(Syncer::start(&segment, frequency, stats.clone(), failure.clone())?),
        };
        // Bounded: a disk slower than the transactions holds the sites back
        // instead of growing the queue (and the async loss window).
        let (tx, rx) = mpsc::sync_channel(QUEUE_BATCHES);
        let current = Arc::new(AtomicU64::new(segment.seq));
        let mut writer = Writer {
            current: current.clone(),
            config: config.clone(),
            rx,
            segment,
            stats: stats.clone(),
            failure: failure.clone(),
            buf: Vec::with_capacity(1 << 20),
            waiting: Vec::new(),
            unsynced: false,
            syncer,
        };
        let thread = std::thread::Builder::new()
            .name("joule-cmdlog".into())
            .spawn(move || writer.run())
            .map_err(|e| err!(Internal, "cannot start the command log thread: {e}"))?;
        Ok(CommandLogWriter { tx, current, mode: config.mode, failure, stats, thread: Mutex::new(Some(thread)) })
    }

    pub fn stats(&self) -> &Arc<LogStats> {
        &self.stats
    }

    pub fn mode(&self) -> LogMode {
        self.mode
    }

    pub fn has_failed(&self) -> bool {
        self.failure.failed.load(Ordering::SeqCst)
    }

    /// Hands the entry back when the writer is gone (its answer must still
    /// be given). Entries are moved, not boxed: one allocation less per
    /// transaction.
    #[allow(clippy::result_large_err)]
    fn send(&self, entry: Entry) -> std::result::Result<(), Entry> {
        self.tx.send(entry).map_err(|e| e.0)
    }

    /// The segment being written now.
    pub fn current_segment(&self) -> u64 {
        self.current.load(Ordering::SeqCst)
    }

    /// Delete the segments numbered below `seq`; returns how many.
    pub fn delete_before(&self, seq: u64) -> Result<usize> {
        let (tx, rx) = mpsc::channel();
        self.send(Entry::DeleteBefore(seq, tx)).map_err(|_| err!(Unavailable, "the command log has stopped"))?;
        rx.recv().map_err(|_| err!(Unavailable, "the command log has stopped"))?
    }

    /// Write and sync what is queued, then stop the writer.
    pub fn stop(&self) {
        let _ = self.send(Entry::Stop);
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl Drop for CommandLogWriter {
    fn drop(&mut self) {
        self.stop();
    }
}

fn log_failed() -> Error {
    err!(
        IoError,
        "the command log failed earlier; the transaction ran but could not be made durable, and the node is stopping"
    )
}

impl CommandLog for CommandLogWriter {
    fn holds_answers(&self) -> bool {
        self.mode == LogMode::Sync
    }

    fn encode(&self, txn: &LoggedTxn<'_>, out: &mut Vec<u8>) {
        encode_frame(out, txn);
    }

    fn submit(&self, frames: Vec<u8>, answers: Vec<Answer>) {
        if let Err(Entry::Records(_, answers)) = self.send(Entry::Records(frames, answers)) {
            for a in answers {
                refuse(a, log_failed());
            }
        }
    }

    fn current_segment(&self) -> u64 {
        CommandLogWriter::current_segment(self)
    }
}

/// Answer with `e` instead: the transaction is not durable.
fn refuse(answer: Answer, e: Error) {
    let ids = answer.response.ids;
    Answer { response: Response::failure(e, ids), ..answer }.deliver()
}

/// The open segment.
struct Segment {
    file: File,
    seq: u64,
    len: u64,
}

impl Segment {
    /// Create segment `seq` whole or not at all: its header is written and
    /// synced under a temporary name, then renamed into place.
    fn create(dir: &Path, partitions: u32, seq: u64) -> Result<Segment> {
        let path = dir.join(segment_name(seq));
        if path.exists() {
            return Err(err!(IoError, "command log segment {} exists already", path.display()));
        }
        let tmp = dir.join(format!("{}.tmp", segment_name(seq)));
        let io = |e: std::io::Error| err!(IoError, "cannot create command log segment {}: {e}", path.display());
        let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(&tmp).map_err(io)?;
        file.write_all(&encode_header(partitions, seq)).and_then(|_| file.sync_data()).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        Ok(Segment { file, seq, len: HEADER_BYTES as u64 })
    }
}

/// Sync a directory so that files created or removed in it stay so.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| err!(IoError, "cannot sync directory {}: {e}", dir.display()))
}

/// The log's failure: raised once, by the writer or the syncer.
struct Failure {
    failed: AtomicBool,
    hook: FailureHook,
}

impl Failure {
    fn raise(&self, e: &Error) {
        if !self.failed.swap(true, Ordering::SeqCst) {
            eprintln!("joule: {e}");
            (self.hook)(e);
        }
    }
}

/// Sync `file`, counting it in `stats`.
fn timed_sync(file: &File, seq: u64, stats: &LogStats) -> Result<()> {
    let started = Instant::now();
    file.sync_data().map_err(|e| err!(IoError, "command log fsync of segment {seq:016x} failed: {e}"))?;
    let micros = started.elapsed().as_micros() as u64;
    stats.syncs.fetch_add(1, Ordering::Relaxed);
    stats.sync_micros.fetch_add(micros, Ordering::Relaxed);
    stats.max_sync_micros.fetch_max(micros, Ordering::Relaxed);
    Ok(())
}

/// Asynchronous mode's background sync: every `frequency`, if anything
/// was written since, sync the current segment (its own handle to it).
struct Syncer {
    state: Arc<SyncState>,
    thread: Option<JoinHandle<()>>,
}

struct SyncState {
    /// (handle to the current segment, its number); replaced on rotation.
    file: Mutex<(File, u64)>,
    dirty: AtomicBool,
    stop: Mutex<bool>,
    wake: std::sync::Condvar,
}

impl Syncer {
    fn start(segment: &Segment, frequency: Duration, stats: Arc<LogStats>, failure: Arc<Failure>) -> Result<Syncer> {
        let file = segment.file.try_clone().map_err(|e| err!(IoError, "cannot open the command log twice: {e}"))?;
        let state = Arc::new(SyncState {
            file: Mutex::new((file, segment.seq)),
            dirty: AtomicBool::new(false),
            stop: Mutex::new(false),
            wake: std::sync::Condvar::new(),
        });
        let s = state.clone();
        let thread = std::thread::Builder::new()
            .name("joule-cmdlog-sync".into())
            .spawn(move || loop {
                let stop = s.stop.lock().unwrap_or_else(|e| e.into_inner());
                let (stop, _) = s.wake.wait_timeout(stop, frequency).unwrap_or_else(|e| e.into_inner());
                if *stop {
                    return;
                }
                drop(stop);
                if s.dirty.swap(false, Ordering::SeqCst) {
                    let file = s.file.lock().unwrap_or_else(|e| e.into_inner());
                    if let Err(e) = timed_sync(&file.0, file.1, &stats) {
                        failure.raise(&e);
                        return;
                    }
                }
            })
            .map_err(|e| err!(Internal, "cannot start the command log sync thread: {e}"))?;
        Ok(Syncer { state, thread: Some(thread) })
    }

    /// The writer now writes `segment` (the previous one is synced).
    fn switch(&self, segment: &Segment) -> Result<()> {
        let file = segment.file.try_clone().map_err(|e| err!(IoError, "cannot open the command log twice: {e}"))?;
        *self.state.file.lock().unwrap_or_else(|e| e.into_inner()) = (file, segment.seq);
        Ok(())
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        *self.state.stop.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.state.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Writer {
    current: Arc<AtomicU64>,
    config: LogConfig,
    rx: Receiver<Entry>,
    segment: Segment,
    stats: Arc<LogStats>,
    failure: Arc<Failure>,
    /// Frames of the batch being gathered.
    buf: Vec<u8>,
    /// Answers to deliver once the batch is durable.
    waiting: Vec<Answer>,
    /// Bytes written since the last sync.
    unsynced: bool,
    /// Asynchronous mode's background sync.
    syncer: Option<Syncer>,
}

/// Gather at most this much before writing.
const MAX_BATCH_BYTES: usize = 4 << 20;
/// Batches that may wait for the writer before submitters wait too.
const QUEUE_BATCHES: usize = 1024;

impl Writer {
    fn run(&mut self) {
        while let Ok(first) = self.rx.recv() {
            let mut next = Some(first);
            let mut stop = false;
            while let Some(entry) = next.take() {
                match entry {
                    Entry::Records(frames, answers) => {
                        if self.buf.is_empty() {
                            self.buf = frames;
                        } else {
                            self.buf.extend_from_slice(&frames);
                        }
                        self.waiting.extend(answers);
                    }
                    Entry::DeleteBefore(seq, reply) => {
                        let _ = reply.send(self.delete_before(seq));
                    }
                    Entry::Stop => {
                        stop = true;
                        break;
                    }
                }
                // A batch ends where the segment would overflow, so that
                // segments stay near their size.
                let room = self.config.segment_bytes.saturating_sub(self.segment.len) as usize;
                if self.buf.len() < MAX_BATCH_BYTES.min(room) {
                    next = self.rx.try_recv().ok();
                }
            }
            if let Err(e) = self.flush() {
                self.fail(e);
            }
            if stop {
                break;
            }
        }
        self.syncer = None;
        if let Err(e) = self.flush().and_then(|_| self.sync()) {
            self.fail(e);
        }
    }

    /// Write the gathered batch; in synchronous mode sync it and deliver
    /// its answers (asynchronous mode leaves syncing to the syncer).
    fn flush(&mut self) -> Result<()> {
        if self.failure.failed.load(Ordering::SeqCst) {
            for a in self.waiting.drain(..) {
                refuse(a, log_failed());
            }
            self.buf.clear();
            return Ok(());
        }
        if !self.buf.is_empty() {
            if self.segment.len + self.buf.len() as u64 > self.config.segment_bytes
                && self.segment.len > HEADER_BYTES as u64
            {
                self.rotate()?;
            }
            self.segment
                .file
                .write_all(&self.buf)
                .map_err(|e| err!(IoError, "command log write to segment {:016x} failed: {e}", self.segment.seq))?;
            self.segment.len += self.buf.len() as u64;
            self.stats.bytes.fetch_add(self.buf.len() as u64, Ordering::Relaxed);
            self.stats.records.fetch_add(count_frames(&self.buf), Ordering::Relaxed);
            self.buf.clear();
            self.unsynced = true;
            if let Some(s) = &self.syncer {
                s.state.dirty.store(true, Ordering::SeqCst);
            }
        }
        if self.syncer.is_none() {
            self.sync()?;
        }
        // Nothing waits in asynchronous mode; deliver whatever does anyway.
        for a in self.waiting.drain(..) {
            a.deliver();
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        if !self.unsynced {
            return Ok(());
        }
        timed_sync(&self.segment.file, self.segment.seq, &self.stats)?;
        self.unsynced = false;
        Ok(())
    }

    /// Sync the current segment and start the next.
    fn rotate(&mut self) -> Result<()> {
        self.unsynced = true;
        self.sync()?;
        let next = Segment::create(&self.config.dir, self.config.partitions, self.segment.seq + 1)?;
        sync_dir(&self.config.dir)?;
        if let Some(s) = &self.syncer {
            s.switch(&next)?;
        }
        self.segment = next;
        self.current.store(self.segment.seq, Ordering::SeqCst);
        Ok(())
    }

    fn delete_before(&mut self, seq: u64) -> Result<usize> {
        let mut deleted = 0;
        for (s, path) in list_segments(&self.config.dir)? {
            if s < seq && s != self.segment.seq {
                std::fs::remove_file(&path)
                    .map_err(|e| err!(IoError, "cannot delete command log segment {}: {e}", path.display()))?;
                deleted += 1;
            }
        }
        sync_dir(&self.config.dir)?;
        Ok(deleted)
    }

    fn fail(&mut self, e: Error) {
        let e = if e.code() == ErrorCode::IoError { e } else { err!(IoError, "{}", e.message()) };
        for a in self.waiting.drain(..) {
            refuse(a, e.clone());
        }
        self.buf.clear();
        self.failure.raise(&e);
    }
}

/// How many frames a batch of whole frames holds.
fn count_frames(mut buf: &[u8]) -> u64 {
    let mut n = 0;
    while buf.len() >= 8 {
        let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        buf = &buf[(8 + len).min(buf.len())..];
        n += 1;
    }
    n
}
