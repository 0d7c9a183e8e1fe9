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
use std::collections::BTreeMap;
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

/// The records of a journal and the length of its intact prefix.
fn read_journal(bytes: &[u8]) -> (Vec<Record>, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= 8 {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap_or_default());
        if len > MAX_RECORD || bytes.len() - at - 8 < len {
            break;
        }
        let payload = &bytes[at + 8..at + 8 + len];
        if crc32c::crc32c(payload) != crc {
            break;
        }
        let Ok(record) = serde_json::from_slice(payload) else { break };
        records.push(record);
        at += 8 + len;
    }
    (records, at)
}

/// Write `bytes` to `path` whole: a temporary file, fsync, rename, fsync of
/// the directory.
fn write_whole(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The log's state in memory, and its journal.
struct LogInner {
    path: PathBuf,
    file: File,
    /// Records in the journal (live or not), to know when to rewrite it.
    records: usize,
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    last_purged: Option<LogId<NodeId>>,
}

impl LogInner {
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

    /// Append records to the journal and fsync, then apply them.
    fn write(&mut self, records: Vec<Record>) -> std::io::Result<()> {
        let mut buf = Vec::new();
        for r in &records {
            frame(&mut buf, r).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        }
        self.file.write_all(&buf)?;
        self.file.sync_data()?;
        self.records += records.len();
        for r in records {
            self.apply(r);
        }
        Ok(())
    }

    /// Rewrite the journal with only what is live, once dead records are
    /// most of it.
    fn compact_if_worthwhile(&mut self) -> std::io::Result<()> {
        let live = self.entries.len() + 3;
        if self.records < 1024 || self.records < live * 4 {
            return Ok(());
        }
        let mut records: Vec<Record> = Vec::new();
        if let Some(id) = self.last_purged {
            records.push(Record::Purge(id));
        }
        if let Some(v) = self.vote {
            records.push(Record::Vote(v));
        }
        records.push(Record::Committed(self.committed));
        records.extend(self.entries.values().cloned().map(Record::Entry));
        let mut buf = Vec::new();
        for r in &records {
            frame(&mut buf, r).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        }
        write_whole(&self.path, &buf)?;
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        self.records = records.len();
        Ok(())
    }
}

/// The metadata group's durable log (see the module doc).
#[derive(Clone)]
pub(crate) struct LogStore {
    inner: Arc<Mutex<LogInner>>,
}

impl LogStore {
    /// Open (or create) the journal in `dir`, cutting off a torn tail.
    pub(crate) fn open(dir: &Path) -> std::io::Result<LogStore> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(LOG_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let (records, intact) = read_journal(&bytes);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        if intact < bytes.len() {
            // Never acknowledged: written when the process died.
            file.set_len(intact as u64)?;
            file.sync_all()?;
        }
        let mut inner = LogInner {
            path,
            file,
            records: records.len(),
            entries: BTreeMap::new(),
            vote: None,
            committed: None,
            last_purged: None,
        };
        for r in records {
            inner.apply(r);
        }
        Ok(LogStore { inner: Arc::new(Mutex::new(inner)) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self, subject: ErrorSubject<NodeId>, records: Vec<Record>) -> StoreResult<()> {
        self.lock().write(records).map_err(|e| io_error(subject, ErrorVerb::Write, e))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StoreResult<Vec<Entry<TypeConfig>>> {
        Ok(self.lock().entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StoreResult<LogState<TypeConfig>> {
        let inner = self.lock();
        let last = inner.entries.values().next_back().map(|e| e.log_id).or(inner.last_purged);
        Ok(LogState { last_purged_log_id: inner.last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StoreResult<()> {
        self.write(ErrorSubject::Vote, vec![Record::Vote(*vote)])
    }

    async fn read_vote(&mut self) -> StoreResult<Option<Vote<NodeId>>> {
        Ok(self.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StoreResult<()> {
        self.write(ErrorSubject::Store, vec![Record::Committed(committed)])
    }

    async fn read_committed(&mut self) -> StoreResult<Option<LogId<NodeId>>> {
        Ok(self.lock().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StoreResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let records: Vec<Record> = entries.into_iter().map(Record::Entry).collect();
        // The callback hears of the fsync's outcome; a failure is also this call's error.
        match self.lock().write(records) {
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
        self.write(ErrorSubject::Log(log_id), vec![Record::Truncate(log_id.index)])
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StoreResult<()> {
        let mut inner = self.lock();
        inner
            .write(vec![Record::Purge(log_id)])
            .map_err(|e| io_error(ErrorSubject::Log(log_id), ErrorVerb::Delete, e))?;
        inner.compact_if_worthwhile().map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Write, e))
    }
}

/// What a snapshot file holds.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta<NodeId, BasicNode>,
    metadata: ClusterMetadata,
}

struct SmInner {
    metadata: ClusterMetadata,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    /// The newest snapshot: its meta and bytes.
    snapshot: Option<(SnapshotMeta<NodeId, BasicNode>, Vec<u8>)>,
    snapshots_built: u64,
}

/// The metadata state machine (see the module doc).
#[derive(Clone)]
pub(crate) struct StateMachineStore {
    inner: Arc<Mutex<SmInner>>,
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
                inner.snapshot = Some((file.meta, bytes));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let (tx, rx) = watch::channel(inner.metadata.clone());
        Ok((
            StateMachineStore { inner: Arc::new(Mutex::new(inner)), dir: dir.to_path_buf(), published: Arc::new(tx) },
            rx,
        ))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SmInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replace the state with a snapshot's and keep the snapshot.
    fn install(&self, meta: &SnapshotMeta<NodeId, BasicNode>, bytes: Vec<u8>) -> StoreResult<()> {
        let subject = || ErrorSubject::Snapshot(Some(meta.signature()));
        let file: SnapshotFile =
            serde_json::from_slice(&bytes).map_err(|e| json_error(subject(), ErrorVerb::Read, e))?;
        write_whole(&self.dir.join(SNAPSHOT_FILE), &bytes).map_err(|e| io_error(subject(), ErrorVerb::Write, e))?;
        let mut inner = self.lock();
        inner.metadata = file.metadata;
        inner.last_applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        inner.snapshot = Some((meta.clone(), bytes));
        self.published.send_replace(inner.metadata.clone());
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> StoreResult<Snapshot<TypeConfig>> {
        let (meta, bytes) = {
            let mut inner = self.lock();
            inner.snapshots_built += 1;
            let snapshot_id = format!("{}-{}", inner.last_applied.map_or(0, |id| id.index), inner.snapshots_built);
            let meta = SnapshotMeta {
                last_log_id: inner.last_applied,
                last_membership: inner.membership.clone(),
                snapshot_id,
            };
            let file = SnapshotFile { meta: meta.clone(), metadata: inner.metadata.clone() };
            let bytes =
                serde_json::to_vec(&file).map_err(|e| json_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
            (meta, bytes)
        };
        write_whole(&self.dir.join(SNAPSHOT_FILE), &bytes)
            .map_err(|e| io_error(ErrorSubject::Snapshot(Some(meta.signature())), ErrorVerb::Write, e))?;
        self.lock().snapshot = Some((meta.clone(), bytes.clone()));
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(bytes)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(&mut self) -> StoreResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        let inner = self.lock();
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StoreResult<Vec<CommandResult>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = self.lock();
        let mut results = Vec::new();
        for entry in entries {
            inner.last_applied = Some(entry.log_id);
            results.push(match entry.payload {
                EntryPayload::Blank => CommandResult::Applied,
                EntryPayload::Normal(command) => inner.metadata.apply(&command),
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
        self.install(meta, snapshot.into_inner())
    }

    async fn get_current_snapshot(&mut self) -> StoreResult<Option<Snapshot<TypeConfig>>> {
        Ok(self
            .lock()
            .snapshot
            .as_ref()
            .map(|(meta, bytes)| Snapshot { meta: meta.clone(), snapshot: Box::new(Cursor::new(bytes.clone())) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, PathBuf> for Builder {
        async fn build(&self) -> StoreResult<(PathBuf, LogStore, StateMachineStore)> {
            let dir = temp_dir("suite");
            let log = LogStore::open(&dir).map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Write, e))?;
            let (sm, _) =
                StateMachineStore::open(&dir).map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Write, e))?;
            Ok((dir, log, sm))
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

    /// What was written survives reopening; a torn tail is cut off and
    /// later appends go after the intact prefix.
    #[test]
    fn the_journal_survives_reopening_and_torn_tails() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let dir = temp_dir("journal");
            {
                let log = LogStore::open(&dir).unwrap();
                log.write(ErrorSubject::Logs, (1..=10).map(|i| Record::Entry(entry(1, i))).collect()).unwrap();
                log.write(ErrorSubject::Vote, vec![Record::Vote(Vote::new(2, 3))]).unwrap();
                log.write(
                    ErrorSubject::Logs,
                    vec![Record::Truncate(8), Record::Purge(LogId::new(openraft::CommittedLeaderId::new(1, 1), 2))],
                )
                .unwrap();
            }
            // Half a record at the end, as a crash mid-write leaves it.
            let path = dir.join(LOG_FILE);
            let mut bytes = Vec::new();
            frame(&mut bytes, &Record::Entry(entry(1, 8))).unwrap();
            let mut f = OpenOptions::new().append(true).open(&path).unwrap();
            f.write_all(&bytes[..bytes.len() / 2]).unwrap();
            drop(f);
            let mut log = LogStore::open(&dir).unwrap();
            assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(2, 3)));
            let state = log.get_log_state().await.unwrap();
            assert_eq!(state.last_purged_log_id.map(|id| id.index), Some(2));
            assert_eq!(state.last_log_id.map(|id| id.index), Some(7));
            let got: Vec<u64> = log.try_get_log_entries(0..100).await.unwrap().iter().map(|e| e.log_id.index).collect();
            assert_eq!(got, (3..=7).collect::<Vec<_>>());
            log.write(ErrorSubject::Logs, vec![Record::Entry(entry(2, 8))]).unwrap();
            drop(log);
            let mut log = LogStore::open(&dir).unwrap();
            assert_eq!(
                log.get_log_state().await.unwrap().last_log_id.map(|id| (id.leader_id.term, id.index)),
                Some((2, 8))
            );
            let _ = std::fs::remove_dir_all(&dir);
        });
    }
}
