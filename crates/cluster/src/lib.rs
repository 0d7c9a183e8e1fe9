//! JouleDB's cluster metadata group: which hosts form the cluster, where
//! every partition's replicas live and which one leads, the hashinator and
//! catalog versions, and the multi-partition coordinator — kept as a
//! replicated state machine on `openraft`, so that every host agrees on
//! them and a change survives the loss of a minority of hosts.
//!
//! * [`metadata`]: the state and the commands that change it (pure,
//!   deterministic; placement and failover rules live here).
//! * `store.rs`: the group's durable log (a CRC-framed journal, fsynced
//!   before openraft is told an append is done) and the state machine with
//!   its snapshots (written whole: temporary file, fsync, rename).
//! * `network.rs`: openraft's RPCs between hosts over TCP (the internal
//!   port), framed JSON; also forwards proposals to the leader.
//! * [`MetadataNode`] (`node.rs`): one host's member of the group — start
//!   it, form the group, propose commands, read or wait for the metadata.
//! * `detector.rs`: failure detection — the group's leader pings every
//!   host and declares dead one silent for the timeout.
//!
//! * [`formation`]: forming a cluster (`joule start --host-count N` on one
//!   host, `--join` on the others), and a member taking its place again
//!   after a restart.
//! * `admission.rs`, `elastic.rs`, `removal.rs`: hosts added to a running
//!   cluster (`--add`, k+1 at a time, with partitions of their own that
//!   join the transaction order) and removed again — the last added with
//!   their partitions, any others by moving their copies (`copies.rs`) —
//!   with their ids retired and their members taken out of the group.
//! * `copies.rs`: a partition given one more copy, on a host that is up,
//!   taken from its leader while transactions go on.
//! * `voters.rs`: which members vote — an odd number of them, so that a
//!   two-host cluster survives the loss of the host that does not lead.
//!
//! What is here is the metadata group, formation and failure detection; the
//! data plane that replicates partitions and rejoins hosts builds on it in
//! the server (see docs/architecture/6-multi-host.md).

use std::io::Cursor;

mod admission;
mod copies;
mod detector;
mod elastic;
pub mod formation;
pub mod metadata;
pub mod network;
mod node;
mod removal;
mod store;
mod voters;

pub use detector::DetectorSettings;
pub use formation::{form_or_join, FormationSettings};
pub use metadata::{
    ClusterMetadata, Command, CommandResult, HostId, HostInfo, HostState, PartitionPlacement, Proposal, Removal,
};
pub use network::Routes;
pub use node::{MetadataHandle, MetadataNode};

openraft::declare_raft_types!(
    /// The metadata group's openraft types.
    pub TypeConfig:
        D = Proposal,
        R = CommandResult,
        NodeId = HostId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);
