//! The transaction layer of JouleDB: partitions owned by single-threaded
//! sites, work arriving as procedure invocations, single-partition
//! transactions running with no locks, and multi-partition transactions
//! ordered by one coordinator.
//!
//! * [`hashinator`]: VoltDB-compatible hash partitioning (which partition
//!   owns a key), versioned and swappable.
//! * [`ids`]: transaction ids and unique ids (which carry the timestamp).
//! * [`procedure`]: the native procedure trait, its context and registry.
//! * [`compile`]: a catalog's procedures (DDL, native, CRUD) planned once.
//! * [`distribute`]: splitting multi-partition statements into fragments.
//! * `messages`, `site`, `coordinator`: the threads and what they exchange;
//!   `participant`: a site's part in a multi-partition transaction (the
//!   prepare and outcome that keep a cluster's commit atomic).
//! * [`host`]: starting a host, and the [`Client`] initiator handle.
//! * [`response`]: what an invocation answers.
//! * [`logging`]: what committed transactions hand to the command log.
//! * [`snapshot`]: freezing every partition at one point, loading rows.
//! * [`stats`]: what sites count about their work, copied out on request.
//! * [`remote`]: a multi-host cluster as this layer sees it — forwarding,
//!   remote sites, replication, and the forms work takes between hosts.
//! * `sysprocs`: system procedures answered from the schema (`@Explain`,
//!   `@SystemCatalog`, ...).

pub mod compile;
mod coordinator;
pub mod distribute;
mod evict;
mod forwarding;
mod handover;
pub mod hashinator;
pub mod host;
pub mod ids;
pub mod logging;
mod messages;
mod moverange;
mod participant;
mod partitions;
pub mod procedure;
pub mod prune;
mod recorded;
pub mod remote;
mod replica;
mod resolve;
pub mod response;
mod site;
pub mod snapshot;
pub mod stats;
mod sysprocs;

pub use compile::Schema;
pub use hashinator::{Hashinator, PartitionId};
pub use host::{Client, ClusterPlacement, Host, HostConfig, Invocation};
pub use ids::{TxnId, TxnIds, UniqueId};
pub use moverange::range_move_params;
pub use procedure::{Procedure, ProcedureContext, ProcedureRegistry};
pub use response::{Response, ResponseSink, ResultTable, Status};
pub use site::partition_key;
