//! Shared foundations of JouleDB: the one error type with stable codes
//! ([`error`]), the runtime value and data types ([`types`]) and VoltDB's
//! exact DECIMAL ([`decimal`]), a seeded generator ([`splitmix`]), and the port choice tests share
//! ([`testing`]). Every other crate builds on these; nothing here
//! depends on another JouleDB crate.

pub mod decimal;
pub mod error;
pub mod failpoint;
pub mod hashinator;
pub mod splitmix;
pub mod testing;
pub mod types;

pub use decimal::Decimal;
pub use error::{Error, ErrorCode, Result};
pub use types::{DataType, Row, Value};
