//! VoltDB's binary client protocol, as JouleDB speaks it on its client
//! port: byte-compatible with VoltDB's clients.
//!
//! * [`frame`]: length-prefixed frames and their size limit.
//! * [`buf`]: checked big-endian reads (a truncated or lying message is a
//!   `ProtocolError`, never a panic) and the matching writes.
//! * [`types`]: wire types, NULL encodings, parameters and table cells.
//! * [`messages`]: login, invocations (versions 0, 1, 2), responses and
//!   VoltTables, with their layouts documented in the module.
//!
//! The codec does no I/O: the server and the Rust client feed it bytes.

pub mod buf;
pub mod frame;
pub mod messages;
pub mod types;

pub use messages::{ClientResponse, HashScheme, Invocation, Login, LoginResponse, VoltTable, TOPOLOGY_HANDLE};
pub use types::{Param, VoltType};
