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
    open: Mutex<BTreeMap<u32, Arc<Mutex<File>>>>,
}

impl CopyLogs {
    /// The copy logs in `dir` (created if missing); with
    /// [`SyncMode::Every`], a thread syncs them while they are in use.
    pub fn open(dir: &Path, mode: SyncMode) -> Result<Arc<CopyLogs>> {
        std::fs::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
        let logs = Arc::new(CopyLogs { dir: dir.to_path_buf(), mode, open: Mutex::default() });
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

    /// Start `partition`'s log afresh (a new copy arrives, or the copy
    /// starts empty: `empty`, whose base is then complete already).
    pub fn fresh(&self, partition: u32, empty: bool) -> Result<()> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.remove(&partition);
        let dir = self.partition_dir(partition);
        if dir.exists() {
            let away = self.dir.join(format!("p{partition}.old"));
            let _ = std::fs::remove_dir_all(&away);
            std::fs::rename(&dir, &away).map_err(|e| io("rename", &dir, e))?;
            std::fs::remove_dir_all(&away).map_err(|e| io("remove", &away, e))?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| io("create", &dir, e))?;
        sync_dir(&self.dir)?;
        let file = Arc::new(Mutex::new(create(&dir.join(generation_name(1)))?));
        open.insert(partition, file.clone());
        drop(open);
        if empty {
            self.write(partition, &file, &Entry::Complete)?;
        }
        Ok(())
    }

    /// Append a batch `partition`'s copy applied (or, leading, is about
    /// to ship).
    pub(super) fn append(&self, partition: u32, batch: &Batch) -> Result<()> {
        let file = self.file(partition)?;
        // Entry::Batch(batch) without cloning the records.
        let body = postcard_entry_batch(batch)?;
        self.write_body(partition, &file, &body)
    }

    /// `partition`'s copy is whole: what follows applies on top of it.
    pub(super) fn complete(&self, partition: u32) -> Result<()> {
        let file = self.file(partition)?;
        self.write(partition, &file, &Entry::Complete)
    }

    /// The partitions whose logs here can be replayed (their base is whole).
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
                let file = OpenOptions::new().write(true).open(path).map_err(|e| io("open", path, e))?;
                file.set_len(good).map_err(|e| io("truncate", path, e))?;
                let mut file = file;
                std::io::Seek::seek(&mut file, std::io::SeekFrom::End(0)).map_err(|e| io("seek", path, e))?;
                self.open.lock().unwrap_or_else(|p| p.into_inner()).insert(partition, Arc::new(Mutex::new(file)));
            }
        }
        Ok(count)
    }

    fn file(&self, partition: u32) -> Result<Arc<Mutex<File>>> {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = open.get(&partition) {
            return Ok(f.clone());
        }
        // A copy this host holds without a log (it never started one):
        // nothing can be logged for it until a new copy starts one.
        bail!(Unavailable, "partition {partition} has no copy log open on this host")
    }

    fn write(&self, partition: u32, file: &Mutex<File>, entry: &Entry) -> Result<()> {
        let body = postcard::to_allocvec(entry).map_err(|e| err!(Internal, "cannot encode a copy-log entry: {e}"))?;
        self.write_body(partition, file, &body)
    }

    fn write_body(&self, partition: u32, file: &Mutex<File>, body: &[u8]) -> Result<()> {
        let len = u32::try_from(body.len()).map_err(|_| err!(ValueTooLarge, "a copy-log entry over 4 GiB"))?;
        let mut frame = Vec::with_capacity(8 + body.len());
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
        frame.extend_from_slice(body);
        let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
        f.write_all(&frame).map_err(|e| err!(IoError, "partition {partition}: cannot write its copy log: {e}"))?;
        if self.mode == SyncMode::EveryBatch {
            f.sync_data().map_err(|e| err!(IoError, "partition {partition}: cannot sync its copy log: {e}"))?;
        }
        Ok(())
    }
}

/// `postcard(Entry::Batch(batch))` from a borrowed batch.
fn postcard_entry_batch(batch: &Batch) -> Result<Vec<u8>> {
    #[derive(Serialize)]
    enum EntryRef<'a> {
        Batch(&'a Batch),
    }
    postcard::to_allocvec(&EntryRef::Batch(batch)).map_err(|e| err!(Internal, "cannot encode a copy-log entry: {e}"))
}

/// Sync every open log each `every`, until the logs are dropped.
fn sync_every(logs: Weak<CopyLogs>, every: Duration) {
    loop {
        std::thread::sleep(every);
        let Some(logs) = logs.upgrade() else { return };
        let files: Vec<Arc<Mutex<File>>> =
            logs.open.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
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

fn generation_name(g: u64) -> String {
    format!("{g:016}.log")
}

/// The generations of a partition's log to replay, oldest first: from the
/// newest one whose base is whole. `None`: none is.
fn read_generations(dir: &Path) -> Result<Option<Vec<PathBuf>>> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(None) };
    let mut generations: Vec<(u64, PathBuf)> = entries
        .filter_map(|e| {
            let path = e.ok()?.path();
            let g = path.file_name()?.to_str()?.strip_suffix(".log")?.parse::<u64>().ok()?;
            Some((g, path))
        })
        .collect();
    generations.sort();
    let mut start = None;
    for (i, (_, path)) in generations.iter().enumerate().rev() {
        if base_is_complete(path)? {
            start = Some(i);
            break;
        }
    }
    Ok(start.map(|i| generations[i..].iter().map(|(_, p)| p.clone()).collect()))
}

/// Whether the log at `path` holds a whole base.
fn base_is_complete(path: &Path) -> Result<bool> {
    let mut complete = false;
    // Copy pieces, then the marker; anything else first: no base.
    read_entries(path, true, |entry| match entry {
        Entry::Complete => {
            complete = true;
            Ok(false)
        }
        Entry::Batch(b) => Ok(b.copy),
    })?;
    Ok(complete)
}

/// Read the entries of the log at `path` in order, giving each to `f`
/// until it says stop (`false`); the length of the good part. A torn or
/// corrupt entry ends a last log (`last`), and is an error in any other.
fn read_entries(path: &Path, last: bool, mut f: impl FnMut(Entry) -> Result<bool>) -> Result<u64> {
    let file = File::open(path).map_err(|e| io("open", path, e))?;
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut good = 0u64;
    loop {
        let mut head = [0u8; 8];
        match read_full(&mut r, &mut head) {
            Ok(0) => return Ok(good),
            Ok(8) => {}
            Ok(_) | Err(_) if last => return Ok(good),
            Ok(_) | Err(_) => bail!(CorruptData, "{}: a torn entry in the middle of the copy log", path.display()),
        }
        let len = u32::from_le_bytes(head[..4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(head[4..].try_into().unwrap_or_default());
        let torn = || -> Result<u64> {
            if last {
                Ok(good)
            } else {
                Err(err!(CorruptData, "{}: a bad entry at byte {good} of the copy log", path.display()))
            }
        };
        if len > MAX_ENTRY {
            return torn();
        }
        let mut body = vec![0u8; len];
        if !matches!(read_full(&mut r, &mut body), Ok(n) if n == len) || crc32c::crc32c(&body) != crc {
            return torn();
        }
        let entry: Entry = match postcard::from_bytes(&body) {
            Ok(e) => e,
            Err(_) => return torn(),
        };
        good += 8 + len as u64;
        if !f(entry)? {
            return Ok(good);
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
            });
            Ok(())
        })
        .unwrap();
        seen
    }

    #[test]
    fn a_log_replays_what_was_appended_and_a_torn_tail_is_cut_off() {
        let d = dir("replay");
        let logs = CopyLogs::open(&d, SyncMode::EveryBatch).unwrap();
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
        let path = d.join("p2").join(generation_name(1));
        let full = std::fs::metadata(&path).unwrap().len();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(full - 3).unwrap();
        let logs = CopyLogs::open(&d, SyncMode::EveryBatch).unwrap();
        assert_eq!(replayed(&logs), vec![(5, true), (0, true), (6, false)]);
        // Appends go on after the good part.
        logs.append(2, &batch(7, false)).unwrap();
        assert_eq!(replayed(&logs), vec![(5, true), (0, true), (6, false), (7, false)]);
        // A new copy replaces the log whole.
        logs.fresh(2, true).unwrap();
        logs.append(2, &batch(1, false)).unwrap();
        assert_eq!(replayed(&logs), vec![(0, true), (1, false)]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn generations_replay_from_the_newest_whole_base_and_corruption_before_the_last_is_an_error() {
        let d = dir("generations");
        let logs = CopyLogs::open(&d, SyncMode::Every(Duration::from_millis(10))).unwrap();
        logs.fresh(2, true).unwrap();
        logs.append(2, &batch(1, false)).unwrap();
        drop(logs);
        let first = d.join("p2").join(generation_name(1));
        let second = d.join("p2").join(generation_name(2));
        // Generation 2 holds batches only (its base never completed): it
        // continues generation 1.
        let body = postcard_entry_batch(&batch(2, false)).unwrap();
        let mut frame = (body.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        frame.extend_from_slice(&body);
        std::fs::write(&second, &frame).unwrap();
        let logs = CopyLogs::open(&d, SyncMode::EveryBatch).unwrap();
        assert_eq!(replayed(&logs), vec![(0, true), (1, false), (2, false)]);
        let mut bytes = std::fs::read(&first).unwrap();
        let n = bytes.len();
        bytes[n - 2] ^= 0xff;
        std::fs::write(&first, bytes).unwrap();
        let e = logs.replay(2, |_| Ok(())).unwrap_err();
        assert_eq!(e.code(), joule_common::ErrorCode::CorruptData, "{e}");
        // A generation with a whole base of its own starts the replay.
        std::fs::write(&second, std::fs::read(d.join("p2").join(generation_name(1))).unwrap()).unwrap();
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
}
