//! The transaction layer of JouleDB.
//!
//! Today it holds the [`hashinator`], which maps partition keys to
//! partitions. Sites (one thread per partition), initiators and procedures
//! come with the partitioned-transactions work.

pub mod hashinator;

pub use hashinator::{Hashinator, PartitionId};
