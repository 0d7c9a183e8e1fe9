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
//! Calls that entered this host also park while the partition's fence is
//! closed (`fence.rs`): its leader moved while calls this host forwarded
//! to the old one were not answered yet; they are sent on once the last
//! is. Calls passing through (forwarded here, forwarded on) do not wait
//! for the fence, nor behind calls that do.
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
    /// Per partition, its fence and its calls parked (`fence.rs`).
    pub(super) fences: super::fence::Fences,
    queues: Mutex<BTreeMap<u32, VecDeque<(Instant, Forward)>>>,
}

impl Parking {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, VecDeque<(Instant, Forward)>>> {
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One more call parked for `partition`, counted over all partitions
    /// and in its fence.
    fn counted_in(&self, partition: u32) {
        self.fences.get(partition).parked.fetch_add(1, Ordering::SeqCst);
        self.count.fetch_add(1, Ordering::SeqCst);
    }

    /// `n` calls parked for `partition` no longer are (sent, or refused).
    fn counted_out(&self, partition: u32, n: usize) {
        self.fences.get(partition).parked.fetch_sub(n, Ordering::SeqCst);
        self.count.fetch_sub(n, Ordering::SeqCst);
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
                self.counted_out(partition, expired.len());
                expired
            };
            for f in expired {
                let e = err!(
                    Unavailable,
                    "partition {partition}: no leader took it over (or the calls sent to its last leader were not \
                     answered) within {} s; the call did not run",
                    PATIENCE.as_secs()
                );
                fail(f, e);
            }
        }
    }
}

thread_local! {
    /// Set while this thread sends parked calls on under the lock: a call
    /// forwarded meanwhile (one run here that now routes elsewhere: the
    /// ring moved, say) is kept here and forwarded once the lock is
    /// released — it would otherwise wait for that lock on its own thread.
    static UNPARKING: std::cell::RefCell<Option<Vec<Forward>>> = const { std::cell::RefCell::new(None) };
}

/// Whether `request` entered this host from a client (it is forwarded for
/// the first time), rather than passing through.
pub(super) fn entered_here(request: &Forward) -> bool {
    request.call.hops <= 1
}

impl Link {
    /// The host leading `partition` by the routing, if it is up.
    fn routable(routing: &Routing, partition: u32) -> bool {
        routing.leaders.get(partition as usize).copied().flatten().is_some_and(|l| routing.up.contains_key(&l))
    }

    /// Whether a call for `partition` can be sent now: its leader is up,
    /// and no call this host forwarded for it is outstanding at another
    /// host (`fence.rs`).
    fn sendable(&self, routing: &Routing, partition: u32) -> bool {
        Self::routable(routing, partition)
            && routing.leaders[partition as usize].is_some_and(|l| self.parking.fences.open_to(partition, l))
    }

    /// Forward `request` to its destination: parked if it must wait, sent
    /// otherwise.
    pub(super) fn forward_request(&self, request: Forward) {
        let mut request = Some(request);
        UNPARKING.with(|u| {
            if let Some(kept) = u.borrow_mut().as_mut() {
                kept.extend(request.take());
            }
        });
        let Some(mut request) = request else { return };
        if let Destination::Partition(p) = request.to {
            match self.park(p, request) {
                Some(r) => request = r,
                None => return,
            }
        }
        if let Some(stopped) = self.send(request) {
            if let Destination::Partition(p) = stopped.to {
                self.wait_behind_fence(p, stopped);
            }
        }
    }

    /// Calls forwarded to a host that is no longer up and never sent to it
    /// (`forward.rs`), in the order they were sent: routed again by the
    /// routing now. A partition's calls go first in its line — every call
    /// parked for it came after them — and leave the fence they were
    /// counted in only once there, so that no later call passes them
    /// meanwhile.
    pub(super) fn send_back(&self, unsent: Vec<Forward>) {
        let mut tickets = Vec::new();
        let mut to_coordinator = Vec::new();
        {
            let mut queues = self.parking.lock();
            for mut request in unsent {
                match request.to {
                    Destination::Partition(p) => {
                        tickets.push(request.fenced.take());
                        self.enqueue(&mut queues, p, request);
                    }
                    Destination::Coordinator => to_coordinator.push(request),
                }
            }
        }
        drop(tickets);
        self.unpark();
        for request in to_coordinator {
            self.forward_request(request);
        }
    }

    /// Calls parked here now.
    pub(super) fn parked(&self) -> usize {
        self.parking.count.load(Ordering::SeqCst)
    }

    /// Whether `partition` has a leader in the newest metadata that is up
    /// and not routed to yet: a new leader is taking it over.
    fn taken_over(&self, routing: &Routing, partition: u32) -> bool {
        self.latest_leader(partition).is_some_and(|l| routing.up.contains_key(&l))
    }

    /// Park `request` for `partition` if its new leader is taking over, or
    /// the partition's fence is closed (a call that entered here), or calls
    /// of its kind wait for it already; otherwise hand it back to be sent.
    ///
    /// Two kinds: calls that entered this host (`hops` 1 once forwarded)
    /// keep their order and respect the fence; calls passing through
    /// (forwarded here, forwarded on) keep their order among themselves
    /// and pass the fence — among them may be the very calls the fence
    /// waits for, sent back by the old leader that held them.
    pub(super) fn park(&self, partition: u32, request: Forward) -> Option<Forward> {
        let entered = entered_here(&request);
        let ready = |routing: &Routing| {
            if entered {
                self.sendable(routing, partition)
            } else {
                Self::routable(routing, partition)
            }
        };
        // Parked count, fence, parked count again: a call handed back is
        // counted in before its fence opens (`send_back`), one sent on from
        // the line counted out only after it is in the new fence.
        let nothing_parked = || self.parking.count.load(Ordering::SeqCst) == 0;
        if nothing_parked() && ready(&self.routing.load()) && nothing_parked() {
            return Some(request);
        }
        {
            let mut queues = self.parking.lock();
            // Read under the lock: `update` stores the routing before it
            // takes the lock to unpark, so a call parked here is always sent on.
            let routing = self.routing.load();
            let waiting = queues.get(&partition).is_some_and(|q| q.iter().any(|(_, f)| entered_here(f) == entered));
            let no_leader_coming = !Self::routable(&routing, partition) && !self.taken_over(&routing, partition);
            if !waiting && (ready(&routing) || no_leader_coming) {
                return Some(request);
            }
            self.enqueue(&mut queues, partition, request);
        }
        self.unpark_if_ready(partition, entered);
        None
    }

    /// `request`, which entered this host, found `partition`'s fence closed
    /// when it was sent: it waits, ahead of the calls parked meanwhile
    /// (they came after it), until the fence opens.
    pub(super) fn wait_behind_fence(&self, partition: u32, request: Forward) {
        self.enqueue(&mut self.parking.lock(), partition, request);
        self.unpark_if_ready(partition, true);
    }

    /// Put `request` in `partition`'s line in the order calls came to this
    /// host's data plane (`Forward::seq`): behind every call that came
    /// before it. A call parking as it comes goes last; one that comes back
    /// — stopped by the fence as it was sent, or handed back unsent by the
    /// connection to a host that left — goes ahead of the calls that came
    /// after it, and behind those handed back before it.
    fn enqueue(&self, queues: &mut BTreeMap<u32, VecDeque<(Instant, Forward)>>, partition: u32, request: Forward) {
        let queue = queues.entry(partition).or_default();
        let at = queue.iter().rposition(|(_, f)| f.seq < request.seq).map_or(0, |i| i + 1);
        // Stamped no later than the call behind it: the line expires from
        // its front.
        let now = Instant::now();
        let since = queue.get(at).map_or(now, |(t, _)| (*t).min(now));
        queue.insert(at, (since, request));
        self.parking.counted_in(partition);
        if queue.len() == 1 {
            self.runtime.spawn(self.parking.clone().expire(partition));
        }
    }

    /// A call was just parked, counted in first: if it could go now (the
    /// fence may have opened meanwhile, its last answer finding nothing
    /// parked yet), send on what can. A call that entered here and finds
    /// the fence still closed leaves the queue as it is (no scan per call).
    fn unpark_if_ready(&self, partition: u32, entered: bool) {
        let routing = self.routing.load();
        let ready = if entered { self.sendable(&routing, partition) } else { Self::routable(&routing, partition) };
        if ready {
            self.unpark();
        }
    }

    /// The routing changed: send on the calls parked for partitions that
    /// now have a leader up, in the order they came; refuse those of a
    /// partition the newest metadata gives no live leader.
    pub(super) fn unpark(&self) {
        // Always under the lock (routing changes are rare): a call parking
        // meanwhile has either read the new routing or is seen here.
        let mut failed = Vec::new();
        let nested = UNPARKING.with(|u| u.borrow().is_some());
        if !nested {
            UNPARKING.with(|u| *u.borrow_mut() = Some(Vec::new()));
        }
        {
            let mut queues = self.parking.lock();
            let routing = self.routing.load();
            for (partition, queue) in queues.iter_mut() {
                if Self::routable(&routing, *partition) {
                    // Sent under the lock, and counted out only after: a
                    // call coming meanwhile waits for the lock and goes
                    // after these. A call that entered here and finds the
                    // fence closed waits, and so do those of its kind
                    // behind it; calls passing through go on.
                    let mut kept = VecDeque::new();
                    let mut fenced = false;
                    let mut sent = 0;
                    for (since, request) in queue.drain(..) {
                        if fenced && entered_here(&request) {
                            kept.push_back((since, request));
                        } else if let Some(stopped) = self.send(request) {
                            fenced = true;
                            kept.push_back((since, stopped));
                        } else {
                            sent += 1;
                        }
                    }
                    *queue = kept;
                    self.parking.counted_out(*partition, sent);
                } else if !self.taken_over(&routing, *partition) {
                    self.parking.counted_out(*partition, queue.len());
                    failed.extend(queue.drain(..).map(|(_, f)| (*partition, f)));
                }
            }
            queues.retain(|_, q| !q.is_empty());
        }
        for (partition, f) in failed {
            let e = err!(Unavailable, "partition {partition} has no leader now (its copies are down)");
            fail(f, e);
        }
        if !nested {
            for request in UNPARKING.with(|u| u.borrow_mut().take()).unwrap_or_default() {
                self.forward_request(request);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers, by handle, as they come.
    #[derive(Default)]
    struct Answers(Mutex<Vec<u64>>);

    impl ResponseSink for Answers {
        fn deliver(&self, handle: u64, _: Response) {
            self.0.lock().unwrap().push(handle);
        }
    }

    fn call(seq: u64, sink: &Arc<Answers>) -> Forward {
        let call = WireCall {
            database: String::new(),
            procedure: "Step".into(),
            params: Vec::new(),
            hops: 1,
            ring: 0,
            metadata: 0,
        };
        Forward { seq, to: Destination::Partition(0), call, handle: seq, sink: sink.clone(), fenced: None }
    }

    #[test]
    fn a_partitions_line_keeps_the_order_calls_came_in() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let link = Link::new(1, &ClusterMetadata::default(), Routes::default(), runtime.handle().clone(), None, false);
        let answers = Arc::new(Answers::default());
        let park = |seq| link.enqueue(&mut link.parking.lock(), 0, call(seq, &answers));
        // Calls 5 and 7 park as they come; 3 and 4 come back from a host
        // that left (handed back in their order), 6 is stopped by the
        // fence as it is sent, 9 parks as it comes.
        for seq in [5, 7, 3, 4, 6, 9] {
            park(seq);
        }
        let line: Vec<u64> = link.parking.lock()[&0].iter().map(|(_, f)| f.seq).collect();
        assert_eq!(line, vec![3, 4, 5, 6, 7, 9]);
        assert_eq!(link.parked(), 6);
        let stamps: Vec<Instant> = link.parking.lock()[&0].iter().map(|(t, _)| *t).collect();
        assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "the line expires from its front");
        assert!(answers.0.lock().unwrap().is_empty(), "parked, not answered");
    }
}
