//! The metadata group's storage: openraft's log store and state machine.
//!
//! **The log** ([`LogStore`]) is a journal file, `raft-log`, of records —
//! an entry, a vote, the committed id, a truncation, a purge — each framed
//! as `length (u32 LE) | CRC32C (u32 LE) | JSON`. Opening the store replays
//! the journal into memory; a torn or corrupt tail (a crash mid-write) is
//! cut off, since nothing after it was ever acknowledged. Every write is
//! `fdatasync`ed before it returns (votes) or before openraft's callback is
//! called (appends), which is what Raft's safety needs. When purges leave
//! the journal mostly dead records it is rewritten whole (temporary file,
//! fsync, rename).
//!
//! **The state machine** ([`StateMachineStore`]) is the
//! [`ClusterMetadata`] in memory, with the last applied log id and
//! membership. Snapshots serialize all three to `raft-snapshot` (written
//! whole the same way); on open the newest snapshot is loaded and openraft
//! re-applies the log after it. Each applied change is also published on a
//! `watch` channel, which is how the rest of the host reads the metadata.
//!
//! The metadata changes rarely and is small, so the files are written with
//! blocking I/O from openraft's task; a transaction never waits for it.

// openraft's `StorageError` (over 200 bytes) is what its storage traits
// return; the helpers here return it too rather than convert twice.
#![allow(clippy::result_large_err)]

use crate::metadata::{ClusterMetadata, CommandResult};
use crate::TypeConfig;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StoredMembership, Vote,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{Cursor, Read, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

type NodeId = crate::HostId;
type StoreResult<T> = Result<T, StorageError<NodeId>>;

const LOG_FILE: &str = "raft-log";
const SNAPSHOT_FILE: &str = "raft-snapshot";
/// Largest record accepted when reading the journal back.
const MAX_RECORD: usize = 64 << 20;

fn io_error(subject: ErrorSubject<NodeId>, verb: ErrorVerb, e: std::io::Error) -> StorageError<NodeId> {
    StorageError::from_io_error(subject, verb, e)
}

fn json_error(subject: ErrorSubject<NodeId>, verb: ErrorVerb, e: serde_json::Error) -> StorageError<NodeId> {
    io_error(subject, verb, std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// One journal record.
#[derive(Serialize, Deserialize)]
enum Record {
    Entry(Entry<TypeConfig>),
    Vote(Vote<NodeId>),
    Committed(Option<LogId<NodeId>>),
    /// Entries at this index and after are gone.
    Truncate(u64),
    /// Entries up to and including this id are gone.
    Purge(LogId<NodeId>),
}

fn frame(out: &mut Vec<u8>, record: &Record) -> Result<(), serde_json::Error> {
    let payload = serde_json::to_vec(record)?;
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(())
}

/// How a journal ends after its last good record.
#[derive(Debug, PartialEq, Eq)]
enum Ending {
    /// Nothing after the last good record.
    Clean,
    /// A torn last write: an incomplete frame, or zeros, up to the end.
    Torn,
    /// A bad record with more bytes after it: damage, not a crash.
    Damaged,
}

/// The records of a journal, the length of its good prefix, and how it
/// ends after that.
fn read_journal(bytes: &[u8]) -> (Vec<Record>, usize, Ending) {
    let mut records = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        if rest.iter().all(|b| *b == 0) {
            return (records, at, Ending::Torn);
        }
        if rest.len() < 8 {
            return (records, at, Ending::Torn);
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if len > MAX_RECORD {
            return (records, at, Ending::Damaged);
        }
        if rest.len() - 8 < len {
            return (records, at, Ending::Torn);
        }
        let payload = &rest[8..8 + len];
        let record = (crc32c::crc32c(payload) == crc).then(|| serde_json::from_slice(payload).ok()).flatten();
        match record {
            Some(r) => records.push(r),
            // The last frame, whole in length but not in content: the
            // file grew before its data reached the disk.
            None if rest.len() == 8 + len => return (records, at, Ending::Torn),
            None => return (records, at, Ending::Damaged),
        }
        at += 8 + len;
    }
    (records, at, Ending::Clean)
}

/// A temporary name next to `path`, unique within the process.
fn temporary(path: &Path) -> PathBuf {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    path.with_extension(format!("tmp{}", N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)))
}

/// Write `bytes` to `path` whole: a temporary file, fsync, rename, fsync of
/// the directory.
fn write_whole(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temporary(path);
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    sync_parent(path)
}

fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// Run blocking file work off the async runtime's threads.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> std::io::Result<T> + Send + 'static) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work).await.map_err(std::io::Error::other)?
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The journal file (written only from blocking threads).
struct Journal {
    path: PathBuf,
    file: File,
    /// Records in it (live or not), to know when to rewrite it.
    records: usize,
}

/// The log as the journal says it is, in memory (reads never wait for a
/// write's fsync).
#[derive(Default)]
struct LogData {
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    last_purged: Option<LogId<NodeId>>,
}

impl LogData {
    fn apply(&mut self, record: Record) {
        match record {
            Record::Entry(e) => {
                self.entries.insert(e.log_id.index, e);
            }
            Record::Vote(v) => self.vote = Some(v),
            Record::Committed(c) => self.committed = c,
            Record::Truncate(index) => {
                self.entries.split_off(&index);
            }
            Record::Purge(id) => {
                self.entries = self.entries.split_off(&(id.index + 1));
                self.last_purged = Some(id);
            }
        }
    }

    /// The records that rebuild this state.
    fn live_records(&self) -> Vec<Record> {
        let mut records = Vec::new();
        if let Some(id) = self.last_purged {
            records.push(Record::Purge(id));
        }
        if let Some(v) = self.vote {
            records.push(Record::Vote(v));
        }
        records.push(Record::Committed(self.committed));
        records.extend(self.entries.values().cloned().map(Record::Entry));
        records
    }
}

fn encode(records: &[Record]) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    for r in records {
        frame(&mut buf, r).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    }
    Ok(buf)
}

/// The metadata group's durable log (see the module doc). openraft issues
/// its writes one at a time; each is written and fsynced on a blocking
/// thread, then applied to the in-memory copy that reads use.
#[derive(Clone)]
pub(crate) struct LogStore {
    journal: Arc<Mutex<Journal>>,
    data: Arc<Mutex<LogData>>,
}

impl LogStore {
    /// Open (or create) the journal in `dir`, cutting off a torn tail. A
    /// damaged record with more after it is an `InvalidData` error: records
    /// after it were acknowledged, and dropping them could undo a vote.
    pub(crate) fn open(dir: &Path) -> std::io::Result<LogStore> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(LOG_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let (records, good, ending) = read_journal(&bytes);
        if ending == Ending::Damaged {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} is damaged at byte {good} with {} more bytes after the bad record; \
                     move it aside to rebuild this member from the others",
                    path.display(),
                    bytes.len() - good
                ),
            ));
        }
        let created = !path.exists();
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        if created {
            sync_parent(&path)?;
        }
        if good < bytes.len() {
            // Never acknowledged: written when the process died.
            file.set_len(good as u64)?;
            file.sync_all()?;
        }
        let mut data = LogData::default();
        let count = records.len();
        for r in records {
            data.apply(r);
        }
        Ok(LogStore {
            journal: Arc::new(Mutex::new(Journal { path, file, records: count })),
            data: Arc::new(Mutex::new(data)),
        })
    }

    /// Append records to the journal and fsync, then apply them.
    async fn write_records(&self, records: Vec<Record>) -> std::io::Result<()> {
        let buf = encode(&records)?;
        let (journal, n) = (self.journal.clone(), records.len());
        blocking(move || {
            let mut j = lock(&journal);
            j.file.write_all(&buf)?;
            j.file.sync_data()?;
            j.records += n;
            Ok(())
        })
        .await?;
        let mut data = lock(&self.data);
        for r in records {
            data.apply(r);
        }
        Ok(())
    }

    async fn write(&self, subject: ErrorSubject<NodeId>, records: Vec<Record>) -> StoreResult<()> {
        self.write_records(records).await.map_err(|e| io_error(subject, ErrorVerb::Write, e))
    }

    /// Rewrite the journal with only what is live, once dead records are
    /// most of it.
    async fn compact_if_worthwhile(&self) -> std::io::Result<()> {
        let live = lock(&self.data).live_records();
        let journal = self.journal.clone();
        blocking(move || {
            let mut j = lock(&journal);
            if j.records < 1024 || j.records < live.len() * 4 {
                return Ok(());
            }
            write_whole(&j.path, &encode(&live)?)?;
            j.file = OpenOptions::new().append(true).open(&j.path)?;
            j.records = live.len();
            Ok(())
        })
        .await
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StoreResult<Vec<Entry<TypeConfig>>> {
        Ok(lock(&self.data).entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StoreResult<LogState<TypeConfig>> {
        let data = lock(&self.data);
        let last = data.entries.values().next_back().map(|e| e.log_id).or(data.last_purged);
        Ok(LogState { last_purged_log_id: data.last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StoreResult<()> {
        self.write(ErrorSubject::Vote, vec![Record::Vote(*vote)]).await
    }

    async fn read_vote(&mut self) -> StoreResult<Option<Vote<NodeId>>> {
        Ok(lock(&self.data).vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StoreResult<()> {
        self.write(ErrorSubject::Store, vec![Record::Committed(committed)]).await
    }

    async fn read_committed(&mut self) -> StoreResult<Option<LogId<NodeId>>> {
        Ok(lock(&self.data).committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StoreResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let records: Vec<Record> = entries.into_iter().map(Record::Entry).collect();
        // The callback hears of the fsync's outcome; a failure is also this call's error.
        match self.write_records(records).await {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let copy = std::io::Error::new(e.kind(), e.to_string());
                callback.log_io_completed(Err(e));
                Err(io_error(ErrorSubject::Logs, ErrorVerb::Write, copy))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StoreResult<()> {
        self.write(ErrorSubject::Log(log_id), vec![Record::Truncate(log_id.index)]).await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StoreResult<()> {
        self.write_records(vec![Record::Purge(log_id)])
            .await
            .map_err(|e| io_error(ErrorSubject::Log(log_id), ErrorVerb::Delete, e))?;
        self.compact_if_worthwhile().await.map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Write, e))
    }
}

/// Proposal ids remembered (with their results) to answer retries.
const REMEMBERED_PROPOSALS: usize = 4096;

/// What a snapshot file holds.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta<NodeId, BasicNode>,
    metadata: ClusterMetadata,
    /// The last proposals applied, oldest first, with their results.
    recent: Vec<((NodeId, u64), CommandResult)>,
}

struct SmInner {
    metadata: ClusterMetadata,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    /// Recently applied proposal ids and their results; `order` oldest first.
    recent: BTreeMap<(NodeId, u64), CommandResult>,
    order: VecDeque<(NodeId, u64)>,
    /// The newest snapshot: its meta and bytes.
    snapshot: Option<(SnapshotMeta<NodeId, BasicNode>, Vec<u8>)>,
    snapshots_built: u64,
}

impl SmInner {
    fn remember(&mut self, id: (NodeId, u64), result: CommandResult) {
        if self.recent.insert(id, result).is_none() {
            self.order.push_back(id);
            while self.order.len() > REMEMBERED_PROPOSALS {
                if let Some(old) = self.order.pop_front() {
                    self.recent.remove(&old);
                }
            }
        }
    }

    fn recent_in_order(&self) -> Vec<((NodeId, u64), CommandResult)> {
        self.order.iter().filter_map(|id| self.recent.get(id).map(|r| (*id, r.clone()))).collect()
    }
}

/// The metadata state machine (see the module doc).
#[derive(Clone)]
pub(crate) struct StateMachineStore {
    inner: Arc<Mutex<SmInner>>,
    /// Held while a snapshot file is written and recorded, so a build and
    /// an install never interleave and an older one never replaces a newer.
    snapshot_writes: Arc<Mutex<()>>,
    dir: PathBuf,
    published: Arc<watch::Sender<ClusterMetadata>>,
}

impl StateMachineStore {
    /// Open the state machine in `dir` from its newest snapshot, if any.
    pub(crate) fn open(dir: &Path) -> std::io::Result<(StateMachineStore, watch::Receiver<ClusterMetadata>)> {
        std::fs::create_dir_all(dir)?;
        let mut inner = SmInner {
            metadata: ClusterMetadata::default(),
            last_applied: None,
            membership: StoredMembership::default(),
            recent: BTreeMap::new(),
            order: VecDeque::new(),
            snapshot: None,
            snapshots_built: 0,
        };
        match File::open(dir.join(SNAPSHOT_FILE)) {
            Ok(mut f) => {
                let mut bytes = Vec::new();
                f.read_to_end(&mut bytes)?;
                let file: SnapshotFile = serde_json::from_slice(&bytes)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
                inner.metadata = file.metadata;
                inner.last_applied = file.meta.last_log_id;
                inner.membership = file.meta.last_membership.clone();
                for (id, r) in file.recent {
                    inner.remember(id, r);
                }
                inner.snapshot = Some((file.meta, bytes));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let (tx, rx) = watch::channel(inner.metadata.clone());
        let store = StateMachineStore {
            inner: Arc::new(Mutex::new(inner)),
            snapshot_writes: Arc::default(),
            dir: dir.to_path_buf(),
            published: Arc::new(tx),
        };
        Ok((store, rx))
    }

    /// Write a snapshot's file and record it as the current one — unless a
    /// newer one is already current (a build that finished after an
    /// install). Returns whether it became current.
    async fn keep_snapshot(&self, meta: SnapshotMeta<NodeId, BasicNode>, bytes: Vec<u8>) -> std::io::Result<bool> {
        let (writes, inner, path) = (self.snapshot_writes.clone(), self.inner.clone(), self.dir.join(SNAPSHOT_FILE));
        blocking(move || {
            let _one_at_a_time = lock(&writes);
            let newer_kept = lock(&inner).snapshot.as_ref().is_some_and(|(m, _)| m.last_log_id > meta.last_log_id);
            if newer_kept {
                return Ok(false);
            }
            write_whole(&path, &bytes)?;
            lock(&inner).snapshot = Some((meta, bytes));
            Ok(true)
        })
        .await
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> StoreResult<Snapshot<TypeConfig>> {
        let (meta, bytes) = {
            let mut inner = lock(&self.inner);
            inner.snapshots_built += 1;
            let snapshot_id = format!("{}-{}", inner.last_applied.map_or(0, |id| id.index), inner.snapshots_built);
            let meta = SnapshotMeta {
                last_log_id: inner.last_applied,
                last_membership: inner.membership.clone(),
                snapshot_id,
            };
            let file =
                SnapshotFile { meta: meta.clone(), metadata: inner.metadata.clone(), recent: inner.recent_in_order() };
            let bytes =
                serde_json::to_vec(&file).map_err(|e| json_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
            (meta, bytes)
        };
        self.keep_snapshot(meta.clone(), bytes.clone())
            .await
            .map_err(|e| io_error(ErrorSubject::Snapshot(Some(meta.signature())), ErrorVerb::Write, e))?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(bytes)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(&mut self) -> StoreResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        let inner = lock(&self.inner);
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StoreResult<Vec<CommandResult>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = lock(&self.inner);
        let mut results = Vec::new();
        for entry in entries {
            inner.last_applied = Some(entry.log_id);
            results.push(match entry.payload {
                EntryPayload::Blank => CommandResult::Applied,
                // A repeated proposal (a retry) gets its first result again.
                EntryPayload::Normal(p) => match inner.recent.get(&p.id) {
                    Some(first) => first.clone(),
                    None => {
                        let result = inner.metadata.apply(&p.command);
                        inner.remember(p.id, result.clone());
                        result
                    }
                },
                EntryPayload::Membership(m) => {
                    inner.membership = StoredMembership::new(Some(entry.log_id), m);
                    CommandResult::Applied
                }
            });
        }
        self.published.send_replace(inner.metadata.clone());
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StoreResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StoreResult<()> {
        let subject = || ErrorSubject::Snapshot(Some(meta.signature()));
        let bytes = snapshot.into_inner();
        let file: SnapshotFile =
            serde_json::from_slice(&bytes).map_err(|e| json_error(subject(), ErrorVerb::Read, e))?;
        self.keep_snapshot(meta.clone(), bytes).await.map_err(|e| io_error(subject(), ErrorVerb::Write, e))?;
        let mut inner = lock(&self.inner);
        inner.metadata = file.metadata;
        inner.last_applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        inner.recent.clear();
        inner.order.clear();
        for (id, r) in file.recent {
            inner.remember(id, r);
        }
        self.published.send_replace(inner.metadata.clone());
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StoreResult<Option<Snapshot<TypeConfig>>> {
        Ok(lock(&self.inner)
            .snapshot
            .as_ref()
            .map(|(meta, bytes)| Snapshot { meta: meta.clone(), snapshot: Box::new(Cursor::new(bytes.clone())) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Proposal;
    use openraft::testing::{StoreBuilder, Suite};

    fn temp_dir(name: &str) -> PathBuf {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let d = std::env::temp_dir().join(format!("joule-cluster-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// Fresh stores in a fresh directory for each of openraft's tests.
    struct Builder;

    /// A suite test's directory, removed when openraft drops it (at the
    /// test's end).
    struct SuiteDir(PathBuf);

    impl Drop for SuiteDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, SuiteDir> for Builder {
        async fn build(&self) -> StoreResult<(SuiteDir, LogStore, StateMachineStore)> {
            let dir = temp_dir("suite");
            let log = LogStore::open(&dir).map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Write, e))?;
            let (sm, _) =
                StateMachineStore::open(&dir).map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Write, e))?;
            Ok((SuiteDir(dir), log, sm))
        }
    }

    /// openraft's conformance suite for log stores and state machines.
    #[test]
    fn openraft_storage_suite() {
        Suite::test_all(Builder).unwrap();
    }

    fn entry(term: u64, index: u64) -> Entry<TypeConfig> {
        Entry { log_id: LogId::new(openraft::CommittedLeaderId::new(term, 1), index), payload: EntryPayload::Blank }
    }

    /// What was written survives reopening; a torn tail (half a record, or
    /// zeros) is cut off and later appends go after the good prefix.
    #[test]
    fn the_journal_survives_reopening_and_torn_tails() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = temp_dir("journal");
            {
                let log = LogStore::open(&dir).unwrap();
                log.write(ErrorSubject::Logs, (1..=10).map(|i| Record::Entry(entry(1, i))).collect()).await.unwrap();
                log.write(ErrorSubject::Vote, vec![Record::Vote(Vote::new(2, 3))]).await.unwrap();
                let purge = Record::Purge(LogId::new(openraft::CommittedLeaderId::new(1, 1), 2));
                log.write(ErrorSubject::Logs, vec![Record::Truncate(8), purge]).await.unwrap();
            }
            let path = dir.join(LOG_FILE);
            for tail in [TornTail::Half, TornTail::Zeros] {
                let mut bytes = Vec::new();
                frame(&mut bytes, &Record::Entry(entry(1, 8))).unwrap();
                let torn = match tail {
                    TornTail::Half => bytes[..bytes.len() / 2].to_vec(),
                    TornTail::Zeros => vec![0u8; 300],
                };
                let mut f = OpenOptions::new().append(true).open(&path).unwrap();
                f.write_all(&torn).unwrap();
                drop(f);
                let mut log = LogStore::open(&dir).unwrap();
                assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(2, 3)));
                let state = log.get_log_state().await.unwrap();
                assert_eq!(state.last_purged_log_id.map(|id| id.index), Some(2));
                assert_eq!(state.last_log_id.map(|id| id.index), Some(7));
                let got: Vec<u64> =
                    log.try_get_log_entries(0..100).await.unwrap().iter().map(|e| e.log_id.index).collect();
                assert_eq!(got, (3..=7).collect::<Vec<_>>());
            }
            let log = LogStore::open(&dir).unwrap();
            log.write(ErrorSubject::Logs, vec![Record::Entry(entry(2, 8))]).await.unwrap();
            drop(log);
            let mut log = LogStore::open(&dir).unwrap();
            let last = log.get_log_state().await.unwrap().last_log_id.map(|id| (id.leader_id.term, id.index));
            assert_eq!(last, Some((2, 8)));
            drop(log);
            // Damage with good records after it is not a torn tail: refused.
            let mut bytes = std::fs::read(&path).unwrap();
            bytes[12] ^= 0xFF;
            std::fs::write(&path, &bytes).unwrap();
            let e = LogStore::open(&dir).err().expect("a damaged journal is refused");
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
            assert!(e.to_string().contains("damaged at byte 0"), "{e}");
            let _ = std::fs::remove_dir_all(&dir);
        });
    }

    /// A snapshot build that finishes after a newer install does not
    /// replace it, on disk or in memory.
    #[test]
    fn an_older_snapshot_never_replaces_a_newer_one() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = temp_dir("snapshot-order");
            let (mut sm, _) = StateMachineStore::open(&dir).unwrap();
            let meta = |index: u64| SnapshotMeta {
                last_log_id: Some(LogId::new(openraft::CommittedLeaderId::new(1, 1), index)),
                last_membership: StoredMembership::default(),
                snapshot_id: format!("s{index}"),
            };
            let file = |index: u64| {
                let f = SnapshotFile { meta: meta(index), metadata: ClusterMetadata::default(), recent: Vec::new() };
                serde_json::to_vec(&f).unwrap()
            };
            assert!(sm.keep_snapshot(meta(9), file(9)).await.unwrap());
            assert!(!sm.keep_snapshot(meta(4), file(4)).await.unwrap(), "older than the one kept");
            let current = sm.get_current_snapshot().await.unwrap().unwrap();
            assert_eq!(current.meta.snapshot_id, "s9");
            let (mut reopened, _) = StateMachineStore::open(&dir).unwrap();
            assert_eq!(reopened.get_current_snapshot().await.unwrap().unwrap().meta.snapshot_id, "s9");
            let on_disk: SnapshotFile =
                serde_json::from_slice(&std::fs::read(dir.join(SNAPSHOT_FILE)).unwrap()).unwrap();
            assert_eq!(on_disk.meta.snapshot_id, "s9");
            let _ = std::fs::remove_dir_all(&dir);
        });
    }

    enum TornTail {
        Half,
        Zeros,
    }

    /// A proposal applied twice (a retry whose first attempt committed
    /// after all) changes the metadata once and answers both with the
    /// first result; snapshots keep what is remembered.
    #[test]
    fn repeated_proposals_apply_once() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = temp_dir("dedupe");
            let (mut sm, rx) = StateMachineStore::open(&dir).unwrap();
            let bump = |id: u64, expected: u64| Proposal {
                id: (1, id),
                command: crate::Command::SetCatalogVersion { expected, version: expected + 1 },
            };
            let entry = |index: u64, p: Proposal| Entry {
                log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
                payload: EntryPayload::Normal(p),
            };
            let results =
                sm.apply(vec![entry(1, bump(7, 0)), entry(2, bump(7, 0)), entry(3, bump(8, 1))]).await.unwrap();
            assert_eq!(results, vec![CommandResult::Applied, CommandResult::Applied, CommandResult::Applied]);
            assert_eq!(rx.borrow().catalog_version, 2);
            sm.build_snapshot().await.unwrap();
            let (mut reopened, rx) = StateMachineStore::open(&dir).unwrap();
            let again = reopened.apply(vec![entry(4, bump(8, 1))]).await.unwrap();
            assert_eq!(again, vec![CommandResult::Applied]);
            assert_eq!(rx.borrow().catalog_version, 2, "remembered across the snapshot");
            let _ = std::fs::remove_dir_all(&dir);
        });
    }
}
