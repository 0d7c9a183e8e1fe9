//! Copy logs: what each copy of a partition on this host applied, kept on
//! disk so that a whole-cluster restart brings the data back.
//!
//! A multi-host cluster keeps no command log: its durability is its
//! replicas. That covers the loss of up to k hosts, not of every host at
//! once. So each host also writes, per partition it holds a copy of, the
//! partition's replication stream as that copy took it — the batches a
//! leader ships (written before they are sent, so before any client is
//! answered) and those a replica applies (written before it acknowledges),
//! a rejoin's copy pieces included. Replayed in order through the path a
//! replica applies batches by, they rebuild the copy exactly: the stream is
//! the replicas' whole input, deterministic by design.
//!
//! Layout: `DIR/p{P}/{G:016}.log`, generations of one partition's log.
//! Each entry is `length (u32 LE) | crc32c (u32 LE) | postcard(Entry)`. A
//! generation starts with its base: the pieces of a copy then
//! [`Entry::Complete`], or `Complete` alone for a copy that started empty
//! (the cluster formed, or `--accept-data-loss`). Only a log whose base is
//! complete can be replayed; a host whose rejoin copy was cut short has
//! none, and rejoins by copy again. A new copy replaces the partition's
//! directory whole (renamed away first, so a crash never leaves an old base
//! to be mistaken for the new one).
//!
//! A torn last entry (the process died mid-write) ends the log: it is cut
//! off before anything is appended. Writes reach the operating system
//! before the batch is released, so a killed process loses nothing; they
//! reach the disk every `sync_every` (the command log's `async` frequency),
//! or before the batch is released with `sync`.
//!
//! Why it is safe to serve from them (see `joule-cluster`'s
//! `HostState::Recovering`): a leader releases a batch only once every
//! replica that is up (or recovering) applied it, so a host that was up
//! when the cluster stopped holds every acknowledged batch, and at most one
//! batch more, which the repair step brings level.

use super::replication::Batch;
use joule_common::{bail, err, Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// One entry of a copy log.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Entry {
    /// A batch (or copy piece) the copy applied.
    Batch(Batch),
    /// The copy's base is whole: what follows applies on top of it.
    Complete,
    /// Ends a compaction's base: the last batch the copy had applied when
    /// it was frozen (in the base already; kept for the repair step).
    Applied(Batch),
}

/// Largest entry read back (a batch is at most a data-plane frame).
const MAX_ENTRY: usize = super::MAX_FRAME + 1024;

/// When copy-log writes reach the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// Before the batch is released.
    EveryBatch,
    /// Every so often, by a background thread.
    Every(Duration),
}

/// This host's copy logs.
pub(crate) struct CopyLogs {
    dir: PathBuf,
    mode: SyncMode,
    /// A generation's log past this many bytes asks for a compaction.
    limit: u64,
    parts: Mutex<BTreeMap<u32, Part>>,
}

/// One partition's log as it is being written.
struct Part {
    file: Arc<Mutex<File>>,
    generation: u64,
    /// Bytes in the current generation's log.
    bytes: u64,
    /// Bytes of the newest base: a log is compacted only once it is larger
    /// than that too (a large partition is not rewritten for every few
    /// megabytes of changes).
    base_bytes: u64,
    /// A compaction was asked for and has not ended.
    compacting: bool,
    /// A replica's compaction: the generation its base is for, and where
    /// the copy stood (its last batch) when it was asked for.
    pending: Option<(u64, Option<Arc<Batch>>)>,
}

/// Where a compaction's base stands on the partition's stream: its pieces
/// carry this position, and the batch there follows them (not applied
/// again on replay: [`Entry::Applied`]).
pub(super) struct BasePosition {
    pub from: u64,
    pub stream: u64,
    pub sequence: u64,
    pub term: u64,
    pub last: Option<Arc<Batch>>,
}

impl CopyLogs {
    /// The copy logs in `dir` (created if missing), compacted past `limit`
    /// bytes; with [`SyncMode::Every`], a thread syncs them while they are
    /// in use.
    pub fn open(dir: &Path, mode: SyncMode, limit: u64) -> Result<Arc<CopyLogs>> {
        std::fs::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
        let logs = Arc::new(CopyLogs { dir: dir.to_path_buf(), mode, limit, parts: Mutex::default() });
        if let SyncMode::Every(every) = mode {
            let weak = Arc::downgrade(&logs);
            std::thread::Builder::new()
                .name("joule-copylog-sync".into())
                .spawn(move || sync_every(weak, every))
                .map_err(|e| err!(Internal, "cannot start the copy-log sync thread: {e}"))?;
        }
        Ok(logs)
    }

    fn partition_dir(&self, partition: u32) -> PathBuf {
        self.dir.join(format!("p{partition}"))
    }

    fn parts(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, Part>> {
        self.parts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Start `partition`'s log afresh (a new copy arrives, or the copy
    /// starts empty: `empty`, whose base is then complete already).
    pub fn fresh(&self, partition: u32, empty: bool) -> Result<()> {
        let mut parts = self.parts();
        parts.remove(&partition);
        let dir = self.partition_dir(partition);
        if dir.exists() {
            let away = self.dir.join(format!("p{partition}.old"));
            let _ = std::fs::remove_dir_all(&away);
            std::fs::rename(&dir, &away).map_err(|e| io("rename", &dir, e))?;
            std::fs::remove_dir_all(&away).map_err(|e| io("remove", &away, e))?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| io("create", &dir, e))?;
        sync_dir(&self.dir)?;
        let file = Arc::new(Mutex::new(create(&dir.join(log_name(1)))?));
        sync_dir(&dir)?;
        parts.insert(
            partition,
            Part { file: file.clone(), generation: 1, bytes: 0, base_bytes: 0, compacting: false, pending: None },
        );
        drop(parts);
        if empty {
            self.write(partition, &EntryRef::Complete)?;
        }
        Ok(())
    }

    /// This host no longer holds a copy of `partition` (a copy being added
    /// was given up): its log goes.
    pub fn forget(&self, partition: u32) -> Result<()> {
        self.parts().remove(&partition);
        let dir = self.partition_dir(partition);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| io("remove", &dir, e))?;
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Append a batch `partition`'s copy applied (or, leading, is about
    /// to ship). True when the log has grown past its limit and should be
    /// compacted now (said once, until that compaction ends).
    pub(super) fn append(&self, partition: u32, batch: &Batch) -> Result<bool> {
        // Entry::Batch(batch) without cloning the records.
        self.write(partition, &EntryRef::Batch(batch))
    }

    /// `partition`'s copy is whole: what follows applies on top of it.
    pub(super) fn complete(&self, partition: u32) -> Result<()> {
        self.write(partition, &EntryRef::Complete).map(drop)
    }

    /// A compaction of `partition`'s log did not happen after all: it may
    /// be asked for again.
    pub(super) fn abandon(&self, partition: u32) {
        if let Some(part) = self.parts().get_mut(&partition) {
            part.compacting = false;
            part.pending = None;
        }
    }

    /// `partition`'s log goes on in a new generation from here (its base
    /// comes later, from [`write_base`](Self::write_base)); the generation.
    pub(super) fn next_generation(&self, partition: u32) -> Result<u64> {
        let mut parts = self.parts();
        let part = parts.get_mut(&partition).ok_or_else(|| not_open(partition))?;
        let generation = part.generation + 1;
        let dir = self.partition_dir(partition);
        let file = create(&dir.join(log_name(generation)))?;
        let old = std::mem::replace(&mut part.file, Arc::new(Mutex::new(file)));
        part.generation = generation;
        part.bytes = 0;
        drop(parts);
        // The old generation is whole on disk before anything follows it
        // in the new one (the periodic sync covers only current files);
        // synced outside the lock every partition's writes take, while the
        // caller, this partition's only writer, waits.
        sync_dir(&dir)?;
        old.lock()
            .unwrap_or_else(|p| p.into_inner())
            .sync_data()
            .map_err(|e| err!(IoError, "partition {partition}: cannot sync its copy log: {e}"))?;
        Ok(generation)
    }

    /// A replica's compaction: its log goes on in a new generation from
    /// here, and the base, at `last`, comes when the site hands the copy
    /// over ([`take_pending`](Self::take_pending)).
    pub(super) fn expect_base(&self, partition: u32, last: Option<Arc<Batch>>) -> Result<()> {
        let generation = self.next_generation(partition)?;
        if let Some(part) = self.parts().get_mut(&partition) {
            part.pending = Some((generation, last));
        }
        Ok(())
    }

    /// The replica's compaction waiting for its base, if any.
    pub(super) fn take_pending(&self, partition: u32) -> Option<(u64, Option<Arc<Batch>>)> {
        self.parts().get_mut(&partition).and_then(|p| p.pending.take())
    }

    /// Write generation `generation`'s base — the copy's pieces at
    /// `position`, then [`Entry::Complete`] and the batch there — on a
    /// thread of its own; once it is whole and synced, the generations
    /// before it are deleted and the compaction ends.
    pub(super) fn write_base(
        self: &Arc<Self>,
        partition: u32,
        generation: u64,
        position: BasePosition,
        pieces: Box<dyn Iterator<Item = Vec<u8>> + Send>,
    ) {
        let logs = self.clone();
        let spawned = std::thread::Builder::new().name(format!("joule-copylog-base-{partition}")).spawn(move || {
            let started = std::time::Instant::now();
            match logs.write_base_now(partition, generation, position, pieces) {
                Ok(bytes) => {
                    if let Some(part) = logs.parts().get_mut(&partition) {
                        part.base_bytes = bytes;
                    }
                    eprintln!(
                        "joule: cluster: partition {partition}: copy log compacted to a {:.1} MB copy in {:.1} s",
                        bytes as f64 / 1e6,
                        started.elapsed().as_secs_f64()
                    )
                }
                Err(e) => eprintln!("joule: cluster: partition {partition}: copy log not compacted: {e}"),
            }
            logs.abandon(partition);
        });
        if let Err(e) = spawned {
            eprintln!("joule: cluster: partition {partition}: cannot start compacting its copy log: {e}");
            self.abandon(partition);
        }
    }

    fn write_base_now(
        &self,
        partition: u32,
        generation: u64,
        position: BasePosition,
        pieces: Box<dyn Iterator<Item = Vec<u8>> + Send>,
    ) -> Result<u64> {
        let dir = self.partition_dir(partition);
        let (tmp, done) = (dir.join(format!("{generation:016}.base.tmp")), dir.join(base_name(generation)));
        let mut out =
            std::io::BufWriter::with_capacity(1 << 20, File::create(&tmp).map_err(|e| io("create", &tmp, e))?);
        let mut bytes = 0u64;
        let mut put = |entry: &EntryRef| -> Result<()> {
            let frame = framed(entry)?;
            bytes += frame.len() as u64;
            out.write_all(&frame).map_err(|e| io("write", &tmp, e))
        };
        let BasePosition { from, stream, sequence, term, last } = position;
        for records in pieces {
            put(&EntryRef::Batch(&Batch { partition, stream, sequence, copy: true, from, term, records }))?;
        }
        put(&EntryRef::Complete)?;
        if let Some(last) = last {
            put(&EntryRef::Applied(&last))?;
        }
        let file = out.into_inner().map_err(|e| io("write", &tmp, e.into_error()))?;
        file.sync_all().map_err(|e| io("sync", &tmp, e))?;
        std::fs::rename(&tmp, &done).map_err(|e| io("rename", &tmp, e))?;
        sync_dir(&dir)?;
        // The base is whole: the generations before it are not needed.
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for path in entries.filter_map(|e| Some(e.ok()?.path())) {
                let unfinished = path.to_str().and_then(|p| p.strip_suffix(".base.tmp")).map(Path::new);
                if generation_of(&path)
                    .or_else(|| unfinished.and_then(generation_of_stem))
                    .is_some_and(|g| g < generation)
                {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        Ok(bytes)
    }

    /// The partitions whose logs here can be replayed now.
    pub fn replayable_here(&self) -> BTreeSet<u32> {
        Self::replayable(&self.dir)
    }

    /// The partitions whose logs in `dir` can be replayed (their base is
    /// whole).
    pub fn replayable(dir: &Path) -> BTreeSet<u32> {
        let Ok(entries) = std::fs::read_dir(dir) else { return BTreeSet::new() };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.strip_prefix('p')?.parse::<u32>().ok())
            .filter(|p| matches!(read_generations(&dir.join(format!("p{p}"))), Ok(Some(_))))
            .collect()
    }

    /// Replay `partition`'s log: `apply` gets every entry in order (an
    /// error stops the replay). The log then continues where it ends (a
    /// torn last entry cut off).
    pub(super) fn replay(&self, partition: u32, mut apply: impl FnMut(Entry) -> Result<()>) -> Result<u64> {
        let dir = self.partition_dir(partition);
        let Some(files) = read_generations(&dir)? else {
            bail!(Unavailable, "partition {partition}: no copy log with a whole copy in {}", dir.display());
        };
        let mut count = 0;
        for (i, path) in files.iter().enumerate() {
            let last = i + 1 == files.len();
            let good = read_entries(path, last, |entry| {
                count += 1;
                apply(entry).map(|()| true)
            })?;
            if last {
                // Cut off a torn tail, and go on appending after what is good.
                let mut file = OpenOptions::new().write(true).open(path).map_err(|e| io("open", path, e))?;
                file.set_len(good).map_err(|e| io("truncate", path, e))?;
                std::io::Seek::seek(&mut file, std::io::SeekFrom::End(0)).map_err(|e| io("seek", path, e))?;
                let generation = generation_of(path).unwrap_or(1);
                let base_bytes = std::fs::metadata(dir.join(base_name(generation))).map_or(0, |m| m.len());
                let file = Arc::new(Mutex::new(file));
                let part = Part { file, generation, bytes: good, base_bytes, compacting: false, pending: None };
                self.parts().insert(partition, part);
            }
        }
        Ok(count)
    }

    /// Append `entry` to `partition`'s log; true when the log is due a
    /// compaction (see [`append`](Self::append)).
    fn write(&self, partition: u32, entry: &EntryRef) -> Result<bool> {
        let frame = framed(entry)?;
        let file = {
            let mut parts = self.parts();
            let part = parts.get_mut(&partition).ok_or_else(|| not_open(partition))?;
            part.bytes += frame.len() as u64;
            let due = part.bytes > self.limit.max(part.base_bytes) && !part.compacting;
            part.compacting |= due;
            (part.file.clone(), due)
        };
        let (file, due) = file;
        let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
        f.write_all(&frame).map_err(|e| err!(IoError, "partition {partition}: cannot write its copy log: {e}"))?;
        if self.mode == SyncMode::EveryBatch {
            f.sync_data().map_err(|e| err!(IoError, "partition {partition}: cannot sync its copy log: {e}"))?;
        }
        Ok(due)
    }
}

/// A copy this host holds without a log (it never started one): nothing
/// can be logged for it until a new copy starts one.
fn not_open(partition: u32) -> Error {
    err!(Unavailable, "partition {partition} has no copy log open on this host")
}

/// `length | crc32c | postcard(entry)`, encoded in place after room for
/// the header (one allocation).
fn framed(entry: &EntryRef) -> Result<Vec<u8>> {
    let frame =
        postcard::to_extend(entry, vec![0u8; 8]).map_err(|e| err!(Internal, "cannot encode a copy-log entry: {e}"))?;
    let len = u32::try_from(frame.len() - 8).map_err(|_| err!(ValueTooLarge, "a copy-log entry over 4 GiB"))?;
    let crc = crc32c::crc32c(&frame[8..]);
    let mut frame = frame;
    frame[..4].copy_from_slice(&len.to_le_bytes());
    frame[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(frame)
}

/// [`Entry`] as written, borrowing its batch (the same encoding: the
/// variants in the same order).
#[derive(Serialize)]
enum EntryRef<'a> {
    Batch(&'a Batch),
    Complete,
    Applied(&'a Batch),
}

/// Sync every open log each `every`, until the logs are dropped.
fn sync_every(logs: Weak<CopyLogs>, every: Duration) {
    loop {
        std::thread::sleep(every);
        let Some(logs) = logs.upgrade() else { return };
        let files: Vec<Arc<Mutex<File>>> = logs.parts().values().map(|p| p.file.clone()).collect();
        for f in files {
            // Synced outside the writers' lock: a clone of the descriptor.
            let clone = f.lock().unwrap_or_else(|p| p.into_inner()).try_clone();
            if let Ok(c) = clone {
                if let Err(e) = c.sync_data() {
                    eprintln!("joule: cluster: cannot sync a copy log: {e}");
                }
            }
        }
    }
}

fn log_name(g: u64) -> String {
    format!("{g:016}.log")
}

fn base_name(g: u64) -> String {
    format!("{g:016}.base")
}

/// The generation in a file name's stem (`…/0000000000000003`).
fn generation_of_stem(stem: &Path) -> Option<u64> {
    stem.file_name()?.to_str()?.parse().ok()
}

/// The generation a log or base file belongs to (not a base being written).
fn generation_of(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.strip_suffix(".log").or_else(|| name.strip_suffix(".base"))?.parse().ok()
}

/// The files of a partition's log to replay, in order: from the newest
/// generation with a whole base — a compaction's base file, or a base at
/// the head of its log — that base, then every generation's log from
/// there. `None`: no generation has one.
fn read_generations(dir: &Path) -> Result<Option<Vec<PathBuf>>> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(None) };
    let mut logs: Vec<(u64, PathBuf)> = entries
        .filter_map(|e| {
            let path = e.ok()?.path();
            let g = path.file_name()?.to_str()?.strip_suffix(".log")?.parse::<u64>().ok()?;
            Some((g, path))
        })
        .collect();
    logs.sort();
    for (i, (g, path)) in logs.iter().enumerate().rev() {
        // A base file exists only once it is whole (renamed into place).
        let base = dir.join(base_name(*g));
        let head = if base.exists() {
            vec![base]
        } else if base_is_complete(path)? {
            Vec::new()
        } else {
            continue;
        };
        return Ok(Some(head.into_iter().chain(logs[i..].iter().map(|(_, p)| p.clone())).collect()));
    }
    Ok(None)
}

/// Whether the log at `path` starts with a whole base.
fn base_is_complete(path: &Path) -> Result<bool> {
    let mut complete = false;
    // Copy pieces, then the marker; anything else first: no base.
    read_entries(path, true, |entry| match entry {
        Entry::Complete => {
            complete = true;
            Ok(false)
        }
        Entry::Batch(b) => Ok(b.copy),
        Entry::Applied(_) => Ok(false),
    })?;
    Ok(complete)
}

/// Read the entries of the log at `path` in order, giving each to `f`
/// until it says stop (`false`); the length of the good part. A last log
/// (`last`) may end in a torn entry — one a crash cut short: it runs to the
/// end of the file, or only zeros follow it — which ends it. Any other bad
/// entry is corruption (`CorruptData`), and a read that fails an error:
/// nothing after them is thrown away.
fn read_entries(path: &Path, last: bool, mut f: impl FnMut(Entry) -> Result<bool>) -> Result<u64> {
    let file = File::open(path).map_err(|e| io("open", path, e))?;
    let size = file.metadata().map_err(|e| io("read", path, e))?.len();
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut good = 0u64;
    let read_error = |e: std::io::Error| io("read", path, e);
    loop {
        let mut head = [0u8; 8];
        let n = read_full(&mut r, &mut head).map_err(read_error)?;
        if n == 0 {
            return Ok(good);
        }
        let len = u32::from_le_bytes(head[..4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(head[4..].try_into().unwrap_or_default());
        let mut entry = None;
        if n == 8 && len <= MAX_ENTRY {
            let mut body = vec![0u8; len];
            let got = read_full(&mut r, &mut body).map_err(read_error)?;
            if got == len && crc32c::crc32c(&body) == crc {
                entry = postcard::from_bytes::<Entry>(&body).ok();
            }
        }
        let Some(entry) = entry else {
            // Cut short by a crash: a header, or a body of a believable
            // length, that runs to the end of the file.
            let reaches_end = n < 8 || (len <= MAX_ENTRY && good + 8 + len as u64 >= size);
            if last && (reaches_end || zeros_to_end(&mut r, &head[..n]).map_err(read_error)?) {
                return Ok(good);
            }
            bail!(CorruptData, "{}: a bad entry at byte {good} of the copy log, with more after it", path.display());
        };
        good += 8 + len as u64;
        if !f(entry)? {
            return Ok(good);
        }
    }
}

/// Whether `seen` and everything left in `r` are zero bytes.
fn zeros_to_end(r: &mut impl Read, seen: &[u8]) -> std::io::Result<bool> {
    if seen.iter().any(|b| *b != 0) {
        return Ok(false);
    }
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match r.read(&mut buf)? {
            0 => return Ok(true),
            n if buf[..n].iter().any(|b| *b != 0) => return Ok(false),
            _ => {}
        }
    }
}

/// Read until `buf` is full or the file ends; how much was read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn create(path: &Path) -> Result<File> {
    OpenOptions::new().create(true).append(true).open(path).map_err(|e| io("create", path, e))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io("sync", dir, e))
}

fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
    err!(IoError, "cannot {what} {}: {e}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("joule-copylog-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn batch(sequence: u64, copy: bool) -> Batch {
        Batch { partition: 2, stream: 9, sequence, copy, from: 1, term: 1, records: vec![sequence as u8; 10] }
    }

    fn replayed(logs: &CopyLogs) -> Vec<(u64, bool)> {
        let mut seen = Vec::new();
        logs.replay(2, |e| {
            seen.push(match e {
                Entry::Batch(b) => (b.sequence, b.copy),
                Entry::Complete => (0, true),
                Entry::Applied(b) => (b.sequence, false),
            });
            Ok(())
        })
        .unwrap();
        seen
    }

    #[test]
    fn a_log_replays_what_was_appended_and_a_torn_tail_is_cut_off() {
        let d = dir("replay");
        let logs = CopyLogs::open(&d, SyncMode::EveryBatch, 1 << 30).unwrap();
        assert!(CopyLogs::replayable(&d).is_empty());
        logs.fresh(2, false).unwrap();
        logs.append(2, &batch(5, true)).unwrap();
        assert!(CopyLogs::replayable(&d).is_empty(), "a copy cut short is not replayable");
        logs.complete(2).unwrap();
        logs.append(2, &batch(6, false)).unwrap();
        logs.append(2, &batch(7, false)).unwrap();
        assert_eq!(CopyLogs::replayable(&d), BTreeSet::from([2]));
        drop(logs);
        // The process died in the middle of an entry.
        let path = d.join("p2").join(log_name(1));
        let full = std::fs::metadata(&path).unwrap().len();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(full - 3).unwrap();
        let logs = CopyLogs::open(&d, SyncMode::EveryBatch, 1 << 30).unwrap();
        assert_eq!(replayed(&logs), vec![(5, true), (0, true), (6, false)]);
        // Appends go on after the good part.
        logs.append(2, &batch(7, false)).unwrap();
        assert_eq!(replayed(&logs), vec![(5, true), (0, true), (6, false), (7, false)]);
        // A bad entry with more after it is corruption, not a torn tail.
        logs.append(2, &batch(8, false)).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.len() - 60;
        bytes[at] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let e = logs.replay(2, |_| Ok(())).unwrap_err();
        assert_eq!(e.code(), joule_common::ErrorCode::CorruptData, "{e}");
        // So is a length no entry can have, with more after it.
        bytes[at] ^= 0xff;
        let mut huge = bytes.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(&path, &huge).unwrap();
        let e = logs.replay(2, |_| Ok(())).unwrap_err();
        assert_eq!(e.code(), joule_common::ErrorCode::CorruptData, "{e}");
        // Zeros after the last good entry (a crash after the file grew) end it.
        bytes.extend_from_slice(&[0u8; 100]);
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(replayed(&logs).len(), 5);
        // A new copy replaces the log whole.
        logs.fresh(2, true).unwrap();
        logs.append(2, &batch(1, false)).unwrap();
        assert_eq!(replayed(&logs), vec![(0, true), (1, false)]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn generations_replay_from_the_newest_whole_base_and_corruption_before_the_last_is_an_error() {
        let d = dir("generations");
        let logs = CopyLogs::open(&d, SyncMode::Every(Duration::from_millis(10)), 1 << 30).unwrap();
        logs.fresh(2, true).unwrap();
        logs.append(2, &batch(1, false)).unwrap();
        drop(logs);
        let first = d.join("p2").join(log_name(1));
        let second = d.join("p2").join(log_name(2));
        // Generation 2 holds batches only (its base never completed): it
        // continues generation 1.
        let frame = framed(&EntryRef::Batch(&batch(2, false))).unwrap();
        std::fs::write(&second, &frame).unwrap();
        let logs = CopyLogs::open(&d, SyncMode::EveryBatch, 1 << 30).unwrap();
        assert_eq!(replayed(&logs), vec![(0, true), (1, false), (2, false)]);
        let mut bytes = std::fs::read(&first).unwrap();
        let n = bytes.len();
        bytes[n - 2] ^= 0xff;
        std::fs::write(&first, bytes).unwrap();
        let e = logs.replay(2, |_| Ok(())).unwrap_err();
        assert_eq!(e.code(), joule_common::ErrorCode::CorruptData, "{e}");
        // A generation with a whole base of its own starts the replay (its
        // marker framed by hand from the owned `Entry`: the two encode alike).
        let mut good = Vec::new();
        let body = postcard::to_allocvec(&Entry::Complete).unwrap();
        good.extend_from_slice(&(body.len() as u32).to_le_bytes());
        good.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        good.extend_from_slice(&body);
        good.extend_from_slice(&frame);
        std::fs::write(&second, &good).unwrap();
        assert_eq!(replayed(&logs), vec![(0, true), (2, false)]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_compaction_starts_a_generation_whose_base_replaces_the_ones_before() {
        let d = dir("compact");
        // A limit of 50 bytes: the second batch asks for a compaction.
        let logs = CopyLogs::open(&d, SyncMode::EveryBatch, 50).unwrap();
        logs.fresh(2, true).unwrap();
        assert!(!logs.append(2, &batch(1, false)).unwrap());
        assert!(logs.append(2, &batch(2, false)).unwrap(), "past the limit");
        assert!(!logs.append(2, &batch(3, false)).unwrap(), "asked once until the compaction ends");
        let generation = logs.next_generation(2).unwrap();
        assert_eq!(generation, 2);
        // Batch 4 comes while the base is being written.
        logs.append(2, &batch(4, false)).unwrap();
        assert_eq!(replayed(&logs), vec![(0, true), (1, false), (2, false), (3, false), (4, false)]);
        let position = BasePosition { from: 1, stream: 9, sequence: 3, term: 1, last: Some(Arc::new(batch(3, false))) };
        let pieces: Box<dyn Iterator<Item = Vec<u8>> + Send> = Box::new(vec![vec![1u8; 4], vec![2u8; 4]].into_iter());
        logs.write_base_now(2, generation, position, pieces).unwrap();
        logs.abandon(2);
        assert!(!d.join("p2").join(log_name(1)).exists(), "the generation before the base is gone");
        // The base's pieces at batch 3, the marker, batch 3 as applied, then batch 4.
        assert_eq!(replayed(&logs), vec![(3, true), (3, true), (0, true), (3, false), (4, false)]);
        // Asked again once it has ended, when the log is past the limit and
        // larger than the base too (about 90 bytes here).
        let base = std::fs::metadata(d.join("p2").join(base_name(2))).unwrap().len();
        let mut sequence = 5;
        while !logs.append(2, &batch(sequence, false)).unwrap() {
            sequence += 1;
        }
        let log = std::fs::metadata(d.join("p2").join(log_name(2))).unwrap().len();
        assert!(log > base && log > 50 && sequence > 5, "{log} bytes of log, {base} of base");
        // A base never finished leaves the generation before it in use.
        let generation = logs.next_generation(2).unwrap();
        std::fs::write(d.join("p2").join(format!("{generation:016}.base.tmp")), b"partial").unwrap();
        logs.append(2, &batch(sequence + 1, false)).unwrap();
        let seen = replayed(&logs);
        assert_eq!(seen.first(), Some(&(3, true)));
        assert_eq!(seen.last(), Some(&(sequence + 1, false)));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
