//! Calls that wait while a partition's new leader takes over.
//!
//! When a partition's leadership moves (its leader's host failed, stopped
//! or left the cluster), the host that now leads it first brings the other
//! copies level (`repair.rs`), and until that is done no host routes the
//! partition's calls anywhere: the routing names no leader for it, while
//! the newest metadata already does. Calls for it that arrive meanwhile —
//! from clients, or forwarded by hosts that still thought another led it —
//! used to be refused as unavailable; under a steady load a planned
//! removal of a host turned into hundreds of failed calls in the second
//! the repair took.
//!
//! Instead such a call is parked here: queued per partition, in the order
//! the calls came, and sent on as soon as the routing names a leader that
//! is up ([`Link::update`] calls [`Link::unpark`] after every change). Once
//! a partition has calls parked, later ones queue behind them even if the
//! leader is known by then, so calls from one client to one partition keep
//! their order. A call parked for [`PATIENCE`] is refused as unavailable
//! (it did not run), and so are the parked calls of a partition the newest
//! metadata no longer gives any leader (every copy is down): a partition
//! that cannot be served still fails its calls at once.
//!
//! The check costs a forwarded call one atomic load while nothing is
//! parked; the queues' lock is taken only while some partition has no
//! leader in the routing or calls parked, and on every routing change.

use super::forward::{fail, Forward};
use super::*;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// How long a call waits for its partition's new leader before it is
/// refused as unavailable.
pub(super) const PATIENCE: Duration = Duration::from_secs(10);

/// The calls parked on this host, by partition.
#[derive(Default)]
pub(super) struct Parking {
    /// Calls parked over all partitions (read without the lock).
    count: AtomicUsize,
    queues: Mutex<BTreeMap<u32, VecDeque<(Instant, Forward)>>>,
}

impl Parking {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, VecDeque<(Instant, Forward)>>> {
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Refuse `partition`'s calls parked for [`PATIENCE`], the oldest first,
    /// until none is left.
    async fn expire(self: Arc<Self>, partition: u32) {
        loop {
            let oldest = self.lock().get(&partition).and_then(|q| q.front().map(|(since, _)| *since));
            let Some(since) = oldest else { return };
            tokio::time::sleep_until((since + PATIENCE).into()).await;
            let expired: Vec<Forward> = {
                let mut queues = self.lock();
                let Some(queue) = queues.get_mut(&partition) else { return };
                let mut expired = Vec::new();
                while queue.front().is_some_and(|(since, _)| since.elapsed() >= PATIENCE) {
                    expired.extend(queue.pop_front().map(|(_, f)| f));
                }
                if queue.is_empty() {
                    queues.remove(&partition);
                }
                self.count.fetch_sub(expired.len(), Ordering::SeqCst);
                expired
            };
            for f in expired {
                let e = err!(
                    Unavailable,
                    "partition {partition}: no leader took it over within {} s; the call did not run",
                    PATIENCE.as_secs()
                );
                fail(f, e);
            }
        }
    }
}

impl Link {
    /// The host leading `partition` by the routing, if it is up.
    fn routable(routing: &Routing, partition: u32) -> bool {
        routing.leaders.get(partition as usize).copied().flatten().is_some_and(|l| routing.up.contains_key(&l))
    }

    /// Whether `partition` has a leader in the newest metadata that is up
    /// and not routed to yet: a new leader is taking it over.
    fn taken_over(&self, routing: &Routing, partition: u32) -> bool {
        self.latest_leader(partition).is_some_and(|l| routing.up.contains_key(&l))
    }

    /// Park `request` for `partition` if its new leader is taking over or
    /// calls for it are parked already; otherwise hand it back to be sent.
    pub(super) fn park(&self, partition: u32, request: Forward) -> Option<Forward> {
        if self.parking.count.load(Ordering::SeqCst) == 0 && Self::routable(&self.routing.load(), partition) {
            return Some(request);
        }
        let mut queues = self.parking.lock();
        // Read under the lock: `update` stores the routing before it takes
        // the lock to unpark, so a call parked here is always sent on.
        let routing = self.routing.load();
        let waiting = queues.get(&partition).is_some_and(|q| !q.is_empty());
        if !waiting && (Self::routable(&routing, partition) || !self.taken_over(&routing, partition)) {
            return Some(request);
        }
        let queue = queues.entry(partition).or_default();
        queue.push_back((Instant::now(), request));
        self.parking.count.fetch_add(1, Ordering::SeqCst);
        if queue.len() == 1 {
            self.runtime.spawn(self.parking.clone().expire(partition));
        }
        None
    }

    /// The routing changed: send on the calls parked for partitions that
    /// now have a leader up, in the order they came; refuse those of a
    /// partition the newest metadata gives no live leader.
    pub(super) fn unpark(&self) {
        // Always under the lock (routing changes are rare): a call parking
        // meanwhile has either read the new routing or is seen here.
        let mut failed = Vec::new();
        {
            let mut queues = self.parking.lock();
            let routing = self.routing.load();
            for (partition, queue) in queues.iter_mut() {
                if Self::routable(&routing, *partition) {
                    let sent = queue.len();
                    // Sent under the lock, and counted out only after: a
                    // call coming meanwhile waits for the lock and goes
                    // after these.
                    for (_, request) in queue.drain(..) {
                        self.send(Destination::Partition(*partition), request);
                    }
                    self.parking.count.fetch_sub(sent, Ordering::SeqCst);
                } else if !self.taken_over(&routing, *partition) {
                    self.parking.count.fetch_sub(queue.len(), Ordering::SeqCst);
                    failed.extend(queue.drain(..).map(|(_, f)| (*partition, f)));
                }
            }
            queues.retain(|_, q| !q.is_empty());
        }
        for (partition, f) in failed {
            let e = err!(Unavailable, "partition {partition} has no leader now (its copies are down)");
            fail(f, e);
        }
    }
}
