//! A node's data directory: what it holds, checking it fits this start,
//! and the log handle the transaction layer gets before recovery is done.
//!
//! `node.toml` is written at the first start and records the partition
//! count and the format; a later start with another `--sites` is refused
//! (the log replays per partition). The transaction layer is started with
//! an [`AttachableLog`]: until recovery has replayed everything, it logs
//! nothing and holds no answers (recovery's own transactions are already
//! in the log or in the snapshot); [`AttachableLog::attach`] then switches
//! it to the real writer.

use crate::command_log::CommandLogWriter;
use crate::segment::list_segments;
use joule_common::{bail, err, Result};
use joule_txn::logging::{Answer, CommandLog, LoggedTxn};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// The data directory format this build writes and reads.
pub const DATA_FORMAT: u32 = 1;
const NODE_FILE: &str = "node.toml";

/// What `node.toml` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeMeta {
    pub partitions: u32,
    pub format: u32,
}

/// The paths inside a data directory.
#[derive(Clone, Debug)]
pub struct DataDir {
    pub root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into() }
    }

    pub fn log_dir(&self) -> PathBuf {
        self.root.join("log")
    }

    pub fn snapshot_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    fn node_file(&self) -> PathBuf {
        self.root.join(NODE_FILE)
    }

    /// `node.toml`, if this directory has been used before.
    pub fn meta(&self) -> Result<Option<NodeMeta>> {
        let path = self.node_file();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => bail!(IoError, "cannot read {}: {e}", path.display()),
        };
        let field = |name: &str| -> Result<u32> {
            text.lines()
                .filter_map(|l| l.split_once('='))
                .find(|(k, _)| k.trim() == name)
                .and_then(|(_, v)| v.trim().parse().ok())
                .ok_or_else(|| err!(RecoveryFailed, "{} lacks a valid `{name}` line", path.display()))
        };
        Ok(Some(NodeMeta { partitions: field("partitions")?, format: field("format")? }))
    }

    /// Check the directory fits `partitions`, creating it (and `node.toml`)
    /// at the first start. Returns whether this is the first start.
    pub fn open(&self, partitions: u32) -> Result<bool> {
        std::fs::create_dir_all(&self.root)
            .map_err(|e| err!(IoError, "cannot create data directory {}: {e}", self.root.display()))?;
        match self.meta()? {
            Some(meta) => {
                if meta.format != DATA_FORMAT {
                    bail!(
                        RecoveryFailed,
                        "{} holds data format {}, but this build reads format {DATA_FORMAT}",
                        self.root.display(),
                        meta.format
                    );
                }
                if meta.partitions != partitions {
                    bail!(
                        RecoveryFailed,
                        "{} holds a database of {} partitions, but this start asks for {partitions}: start with \
                         --sites {} (or save a snapshot, start a new data directory with the new count and \
                         restore the snapshot there)",
                        self.root.display(),
                        meta.partitions,
                        meta.partitions
                    );
                }
                Ok(false)
            }
            None => {
                if !list_segments(&self.log_dir())?.is_empty() {
                    bail!(
                        RecoveryFailed,
                        "{} has command log segments but no {NODE_FILE}: it was not written by this build or \
                         was damaged; restore {NODE_FILE} or use another directory",
                        self.root.display()
                    );
                }
                let path = self.node_file();
                let tmp = self.root.join("node.toml.tmp");
                std::fs::write(
                    &tmp,
                    format!("# JouleDB data directory\nformat = {DATA_FORMAT}\npartitions = {partitions}\n"),
                )
                .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
                .and_then(|_| std::fs::rename(&tmp, &path))
                .map_err(|e| err!(IoError, "cannot write {}: {e}", path.display()))?;
                crate::command_log::sync_dir(&self.root)?;
                Ok(true)
            }
        }
    }

    /// The number the next new log segment gets.
    pub fn next_segment(&self) -> Result<u64> {
        Ok(list_segments(&self.log_dir())?.last().map_or(1, |(s, _)| s + 1))
    }
}

/// The command log handed to the transaction layer at start: inert until
/// [`AttachableLog::attach`] (recovery runs meanwhile), then the writer.
#[derive(Default)]
pub struct AttachableLog {
    writer: OnceLock<Arc<CommandLogWriter>>,
}

impl AttachableLog {
    pub fn new() -> AttachableLog {
        AttachableLog::default()
    }

    /// Start logging through `writer` (once).
    pub fn attach(&self, writer: Arc<CommandLogWriter>) -> Result<()> {
        self.writer.set(writer).map_err(|_| err!(Internal, "the command log was attached twice"))
    }

    pub fn writer(&self) -> Option<&Arc<CommandLogWriter>> {
        self.writer.get()
    }
}

impl CommandLog for AttachableLog {
    fn holds_answers(&self) -> bool {
        self.writer.get().is_some_and(|w| w.holds_answers())
    }

    fn encode(&self, txn: &LoggedTxn<'_>, out: &mut Vec<u8>) {
        if self.writer.get().is_some() {
            crate::segment::encode_frame(out, txn);
        }
    }

    fn submit(&self, frames: Vec<u8>, answers: Vec<Answer>) {
        match self.writer.get() {
            Some(w) => w.submit(frames, answers),
            None => answers.into_iter().for_each(Answer::deliver),
        }
    }

    fn current_segment(&self) -> u64 {
        self.writer.get().map_or(0, |w| w.current_segment())
    }
}
