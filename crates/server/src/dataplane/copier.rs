//! Sending a partition's copy to a host that takes one (a rejoining host,
//! or one a copy is added to) beside the partition's stream, not in it.
//!
//! The leader's shipper (`replication.rs`) gets the copy in order with its
//! batches (`Shipment::AddReplica`: the site froze the partition right
//! after the batches shipped before it), so the copy stands at the
//! stream's current position. Sent on the shipper's thread, the copy held
//! up every batch behind it — every write to the partition waited for the
//! whole copy (0.7 s for 400,000 votes, a minute for gigabytes). Here it
//! goes out on a thread and a connection of its own ([`Copier::start`])
//! while the shipper goes on shipping batches to the replicas and keeps
//! each one for the new host too ([`Copier::keep`]). Once every piece is
//! acknowledged (the host's copy is loaded), the shipper sends it the
//! batches kept, in order, and then the stream as to any joining host
//! ([`Copier::finish`]). Batches kept are bounded ([`MAX_KEPT_BYTES`]): a
//! copy that falls that far behind is given up (the host asks again).

use super::replication::{address_of, send_to_one, Batch, ReplicaConnection};
use super::{Routing, Shared};
use joule_cluster::HostId;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;

/// The most bytes of batches kept for one host while its copy is sent.
pub(super) const MAX_KEPT_BYTES: usize = 1 << 30;

/// One copy being sent.
struct Sending {
    /// Whether every piece was acknowledged (sent once, when the thread ends).
    done: Receiver<bool>,
    /// Batches shipped since the copy was taken, for the host once its copy
    /// is loaded.
    kept: Vec<Batch>,
    bytes: usize,
    /// Set to make the thread stop after the piece it is sending.
    cancel: Arc<AtomicBool>,
}

/// The copies a partition's shipper is sending.
#[derive(Default)]
pub(super) struct Copier {
    sending: BTreeMap<HostId, Sending>,
}

impl Copier {
    pub(super) fn is_empty(&self) -> bool {
        self.sending.is_empty()
    }

    /// Start sending `pieces` (a copy standing at `first`'s position, whose
    /// fields the pieces take) to `host` at `address`, on a thread of its
    /// own. A copy already on its way to the host is given up.
    pub(super) fn start(
        &mut self,
        host: HostId,
        address: String,
        first: Batch,
        pieces: Box<dyn Iterator<Item = Vec<u8>> + Send>,
        routing: &Shared<Routing>,
    ) {
        self.give_up(host);
        let (tx, done) = std::sync::mpsc::channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let (stop, routing) = (cancel.clone(), routing.clone());
        let partition = first.partition;
        let name = format!("joule-copy-p{partition}-h{host}");
        let spawned = std::thread::Builder::new().name(name).spawn(move || {
            let mut connections: BTreeMap<HostId, ReplicaConnection> = BTreeMap::new();
            let mut ok = true;
            for records in pieces {
                let piece = Batch { records, ..first.clone() };
                if stop.load(Ordering::SeqCst) || !send_to_one(host, &address, &piece, &routing, &mut connections) {
                    ok = false;
                    break;
                }
            }
            let _ = tx.send(ok);
        });
        if let Err(e) = spawned {
            eprintln!("joule: partition {partition}: the copy for host {host} could not start: {e}");
            return;
        }
        self.sending.insert(host, Sending { done, kept: Vec::new(), bytes: 0, cancel });
    }

    /// Keep `batch` (just shipped to the replicas) for every host whose copy
    /// is on its way; a host that fell too far behind is given up.
    pub(super) fn keep(&mut self, batch: &Batch) {
        let mut behind = Vec::new();
        for (host, s) in &mut self.sending {
            s.bytes += batch.records.len();
            if s.bytes > MAX_KEPT_BYTES {
                behind.push(*host);
            } else {
                s.kept.push(batch.clone());
            }
        }
        for host in behind {
            eprintln!(
                "joule: partition {}: host {host} fell more than {MAX_KEPT_BYTES} bytes of writes behind while its \
                 copy was sent: the copy is given up",
                batch.partition
            );
            self.give_up(host);
        }
    }

    /// For each copy whose thread ended: if every piece was acknowledged,
    /// send the host the batches kept, in order, and add it to `joining`
    /// (it gets the stream from now on).
    pub(super) fn finish(
        &mut self,
        partition: u32,
        routing: &Shared<Routing>,
        connections: &mut BTreeMap<HostId, ReplicaConnection>,
        joining: &mut BTreeSet<HostId>,
    ) {
        let ended: Vec<(HostId, bool)> = self
            .sending
            .iter()
            .filter_map(|(h, s)| match s.done.try_recv() {
                Ok(ok) => Some((*h, ok)),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => Some((*h, false)),
            })
            .collect();
        for (host, ok) in ended {
            let Some(s) = self.sending.remove(&host) else { continue };
            let address = address_of(routing, host);
            let caught_up =
                ok && address.is_some_and(|a| s.kept.iter().all(|b| send_to_one(host, &a, b, routing, connections)));
            if caught_up {
                joining.insert(host);
            } else {
                eprintln!("joule: partition {partition}: host {host} did not take the partition's copy");
            }
        }
    }

    /// Stop sending every copy (the shipper stops, or its log failed).
    pub(super) fn give_up_all(&mut self) {
        for (_, s) in std::mem::take(&mut self.sending) {
            s.cancel.store(true, Ordering::SeqCst);
        }
    }

    /// Stop sending a copy to `host` (if one is on its way).
    pub(super) fn give_up(&mut self, host: HostId) {
        if let Some(s) = self.sending.remove(&host) {
            s.cancel.store(true, Ordering::SeqCst);
        }
    }
}
