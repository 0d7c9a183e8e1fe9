//! Durability for JouleDB: the command log, snapshots and recovery.
//!
//! An in-memory database keeps what it acknowledged by writing down two
//! things: the *invocations* it committed (the command log) and, now and
//! then, *all the data* at one consistent point (a snapshot). Recovery
//! loads the newest good snapshot and runs the logged invocations after
//! it again; execution is deterministic, so the result is the state the
//! node had acknowledged.
//!
//! * [`codec`]: the byte encoding of values, rows and records.
//! * [`segment`]: command-log segment files, frames, torn-tail detection.
//! * [`command_log`]: the writer thread — group commit, synchronous and
//!   asynchronous modes, failure handling.
//! * [`recovery`]: reading the log back and replaying it in order.
//! * [`node`]: the data directory and the log handle recovery attaches.
//! * [`snapshot`]: snapshot files — writing, reading, verifying.
//! * [`manager`]: snapshots as a node runs them (save, status, truncate,
//!   restore, the system procedures' answers).
//!
//! Layout of a data directory:
//!
//! ```text
//! joule-data/
//!   node.toml            partitions and format, written at first start
//!   log/                 command-log segments (0000000000000001.jlog, ...)
//!   snapshots/NONCE/     one directory per snapshot
//! ```

pub mod codec;
pub mod command_log;
pub mod manager;
pub mod node;
pub mod recovery;
pub mod segment;
pub mod snapshot;

pub use command_log::{CommandLogWriter, LogConfig, LogMode, LogStats};
