//! Forwarded calls: a host's calls for partitions led elsewhere (or for
//! the coordinator) carried over one connection per target host, and the
//! serving of such calls here.

use super::*;

/// A call on its way to another host.
pub(super) struct Forward {
    /// The order it came to this host's data plane in: calls parked for a
    /// partition wait in this order (`parking.rs`).
    pub(super) seq: u64,
    pub(super) to: Destination,
    pub(super) call: WireCall,
    pub(super) handle: u64,
    pub(super) sink: Arc<dyn ResponseSink>,
    /// Its place in its partition's fence, while it is forwarded to
    /// another host (`fence.rs`).
    pub(super) fenced: Option<super::fence::FenceTicket>,
}

impl Forward {
    /// Answer the caller, the call counted out of its fence first.
    pub(super) fn answer(self, response: Response) {
        Sent { handle: self.handle, sink: self.sink, fenced: self.fenced }.answer(response)
    }
}

/// A call written to the forwarding connection, waiting for its answer.
pub(super) struct Sent {
    handle: u64,
    sink: Arc<dyn ResponseSink>,
    fenced: Option<super::fence::FenceTicket>,
}

impl Sent {
    fn answer(self, response: Response) {
        drop(self.fenced);
        self.sink.deliver(self.handle, response);
    }
}

pub(super) type Pending = Arc<Mutex<HashMap<u64, Sent>>>;

/// How long a host removed from the cluster is waited for to answer the
/// calls forwarded to it before they end unknown: it stops once the
/// metadata group let it go (30 s at most, and 1 s) and its calls are
/// answered (5 s at most).
const RETIRED_PATIENCE: Duration = Duration::from_secs(40);

/// Carry calls to one host over one connection, reopened when it breaks.
///
/// Calls never written because `target` is no longer up (it left the
/// cluster, or was declared failed) go back to this host's `link` to be
/// routed again by the routing now (`Link::send_back`): they did not run.
pub(super) async fn forwarder(
    address: String,
    target: HostId,
    routing: Shared<Routing>,
    link: std::sync::Weak<Link>,
    mut requests: tokio::sync::mpsc::UnboundedReceiver<Forward>,
) {
    let mut next_id: u64 = 0;
    // When the target was first seen removed from the cluster.
    let mut retired_since: Option<std::time::Instant> = None;
    while let Some(first) = requests.recv().await {
        // Calls waiting for a connection that cannot be had all fail at
        // once (not one connection attempt each), and none is sent to a
        // host declared down.
        let fail_waiting = |first: Forward, e: Error, requests: &mut tokio::sync::mpsc::UnboundedReceiver<Forward>| {
            fail(first, e.clone());
            while let Ok(r) = requests.try_recv() {
                fail(r, e.clone());
            }
        };
        let stream = match open_while_up(&address, target, &routing).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                let e = || err!(Unavailable, "host {target} is down: the call was not forwarded");
                route_again(&link, first, &mut requests, e);
                continue;
            }
            Err(e) => {
                fail_waiting(first, e, &mut requests);
                continue;
            }
        };
        let (mut rd, mut wr) = stream.into_split();
        let pending: Pending = Arc::default();
        let reader = {
            let pending = pending.clone();
            tokio::spawn(async move {
                while let Ok(body) = read_body_async(&mut rd).await {
                    let Ok((id, response)) = decode::<(u64, WireResponse)>(&body) else { break };
                    let entry = pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                    if let Some(sent) = entry {
                        sent.answer(response.into_response());
                    }
                }
            })
        };
        let mut request = Some(first);
        let mut buf = Vec::with_capacity(64 * 1024);
        loop {
            // A host declared failed (dead, hung, cut off) answers nothing
            // more: what waits on it ends as unknown. One removed from the
            // cluster answers what it took before it stops. (A test holds
            // this host's forwarded calls here: `forwarding_held`.)
            while joule_common::failpoint::armed("forwarding_held") {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let r = routing.load();
            let up = r.up.contains_key(&target);
            if !up && r.retired.contains(&target) {
                retired_since.get_or_insert_with(std::time::Instant::now);
            }
            let answering = r.retired.contains(&target)
                && retired_since.is_some_and(|t| t.elapsed() < RETIRED_PATIENCE)
                && !pending.lock().unwrap_or_else(|p| p.into_inner()).is_empty();
            if !up && !answering {
                // A call taken and not written yet is routed again.
                if let Some(r) = request.take() {
                    let e = || err!(Unavailable, "host {target} is down: the call was not forwarded");
                    route_again(&link, r, &mut requests, e);
                }
                break;
            }
            let Some(r) = request.take() else {
                tokio::select! {
                    r = requests.recv() => match r {
                        Some(r) => { request = Some(r); continue; }
                        None => break,
                    },
                    _ = wait_finished(&reader) => break,
                    _ = tokio::time::sleep(CHECK_EVERY) => continue,
                }
            };
            // Nothing new goes to a host that left the cluster (it only
            // answers what it took): routed again, not sent.
            if !up {
                let e = || err!(Unavailable, "host {target} left the cluster: the call was not forwarded");
                route_again(&link, r, &mut requests, e);
                continue;
            }
            // Everything queued goes out in one write.
            buf.clear();
            let mut next = Some(r);
            while let Some(r) = next.take() {
                next_id += 1;
                let Forward { call, handle, sink, fenced, .. } = r;
                if let Err(e) = append_frame(&(next_id, &call), &mut buf) {
                    // Not sent: say so to this caller alone.
                    Sent { handle, sink, fenced }.answer(Response::failure(e, None));
                } else {
                    pending.lock().unwrap_or_else(|p| p.into_inner()).insert(next_id, Sent { handle, sink, fenced });
                }
                if buf.len() < 1 << 20 {
                    next = requests.try_recv().ok();
                }
            }
            // A host that hangs stops reading: the write then blocks once
            // the connection's buffers are full, and only its being
            // declared failed ends it (TCP would wait for it forever).
            // Most writes go at once, without the watch.
            let at = match wr.try_write(&buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
                Err(_) => break,
            };
            let written = at == buf.len()
                || tokio::select! {
                    r = wr.write_all(&buf[at..]) => r.is_ok(),
                    () = declared_failed(&routing, target) => false,
                };
            if !written {
                break;
            }
        }
        reader.abort();
        // Calls written and not answered: they may have run.
        let lost: Vec<_> = pending.lock().unwrap_or_else(|p| p.into_inner()).drain().collect();
        let failed = {
            let r = routing.load();
            !r.up.contains_key(&target) && !r.retired.contains(&target)
        };
        for (_, sent) in lost {
            let e = if failed {
                err!(OutcomeUnknown, "host {target} was declared failed before it answered the forwarded call")
            } else {
                err!(OutcomeUnknown, "the connection to {address} broke before the forwarded call was answered")
            };
            sent.answer(Response::failure(e, None));
        }
    }
}

/// `first` and the calls queued behind it were not sent (their host is no
/// longer up): back to `link` to be routed again, in their order; failed
/// with `e` if this host is stopping.
fn route_again(
    link: &std::sync::Weak<Link>,
    first: Forward,
    requests: &mut tokio::sync::mpsc::UnboundedReceiver<Forward>,
    e: impl Fn() -> Error,
) {
    let mut unsent = vec![first];
    while let Ok(r) = requests.try_recv() {
        unsent.push(r);
    }
    match link.upgrade() {
        Some(link) => link.send_back(unsent),
        None => unsent.into_iter().for_each(|r| fail(r, e())),
    }
}

/// Until `target` is declared failed (not up, and not removed from the
/// cluster: a removed host still reads what it took).
async fn declared_failed(routing: &Shared<Routing>, target: HostId) {
    loop {
        let r = routing.load();
        if !r.up.contains_key(&target) && !r.retired.contains(&target) {
            return;
        }
        drop(r);
        tokio::time::sleep(CHECK_EVERY).await;
    }
}

pub(super) async fn wait_finished(task: &tokio::task::JoinHandle<()>) {
    while !task.is_finished() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How long calls wait for a connection to a host whose process is gone
/// while the routing still counts it up (it is declared failed within
/// about a second) before they are refused.
const OPEN_PATIENCE: Duration = Duration::from_secs(5);

/// How long the probe after a failed open waits to be refused: a port
/// nothing listens on refuses within a round trip, so a probe that takes
/// longer reached a host that is there (or cut off) — waiting the whole
/// [`CONNECT_TIMEOUT`] for it only delayed the refusal of calls to a host
/// cut off from this one (to twice that).
const PROBE_WAIT: Duration = Duration::from_millis(500);

/// A connection to forward calls to `target` (at `address`) on; `None`
/// once the routing no longer counts the host up (the calls then go to
/// the new leaders rather than fail). While nothing listens at the address
/// (connections refused at once: the process is gone, and the host is
/// declared failed in a moment) it is tried again every 100 ms, for
/// [`OPEN_PATIENCE`] at most. Any other failure (a host that hangs, or is
/// cut off from this one but not from the others) refuses the calls at
/// once, as they may otherwise run long after their callers gave up.
async fn open_while_up(
    address: &str,
    target: HostId,
    routing: &Shared<Routing>,
) -> Result<Option<tokio::net::TcpStream>> {
    let started = tokio::time::Instant::now();
    loop {
        if !routing.load().up.contains_key(&target) {
            return Ok(None);
        }
        let e = match open_forwarding(address).await {
            Ok(s) => return Ok(Some(s)),
            Err(e) => e,
        };
        let probe = tokio::time::timeout(PROBE_WAIT, tokio::net::TcpStream::connect(address)).await;
        let gone = matches!(probe, Ok(Err(ref io)) if io.kind() == std::io::ErrorKind::ConnectionRefused);
        if !gone || started.elapsed() >= OPEN_PATIENCE {
            return Err(e);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A connection to forward calls to `address` on, once the host there has
/// answered that it serves it: a relay or a dying process may accept and
/// then close, and calls written before the answer would end unknown though
/// they never reached the host.
async fn open_forwarding(address: &str) -> Result<tokio::net::TcpStream> {
    let mut stream =
        open_async(address, FORWARD).await.map_err(|e| e.context("cannot forward the call".to_string()))?;
    let mut ready = [0u8; 1];
    match tokio::time::timeout(CONNECT_TIMEOUT, stream.read_exact(&mut ready)).await {
        Ok(Ok(_)) if ready[0] == FORWARD => Ok(stream),
        _ => Err(err!(Unavailable, "{address} did not take the connection to forward the call")),
    }
}

impl Link {
    /// Send `request` to `to` (a partition's leader, or the coordinator)
    /// over the forwarding connection to its host, or fail it at once if
    /// the routing names no host up for it.
    /// A call that entered this host for a partition whose fence is closed
    /// (`fence.rs`) comes back, unsent.
    pub(super) fn send(&self, mut request: Forward) -> Option<Forward> {
        let to = request.to;
        let routing = self.routing.load();
        request.call.metadata = routing.version;

        let target = match to {
            Destination::Partition(p) => routing.leaders.get(p as usize).copied().flatten(),
            Destination::Coordinator => routing.coordinator,
        };
        let Some((target, address)) = target.and_then(|t| routing.up.get(&t).map(|a| (t, a))) else {
            let e = match to {
                Destination::Partition(p) => {
                    err!(Unavailable, "partition {p} has no leader now (its copies are down)")
                }
                Destination::Coordinator => err!(Unavailable, "the cluster has no multi-partition coordinator"),
            };
            fail(request, e);
            return None;
        };
        if let Destination::Partition(p) = to {
            let entered = super::parking::entered_here(&request);
            // This host leads it (it did not when the call came): into its
            // site, behind what is queued there — a call that entered here
            // only once none is outstanding at the old leader.
            if target == self.me {
                if entered && !self.parking.fences.open_to(p, target) {
                    return Some(request);
                }
                self.run_here(request);
                return None;
            }
            if entered && !self.enter_fence(p, target, &mut request) {
                return Some(request);
            }
        }
        if let Some(tx) = self.forwarders.load().get(&target) {
            match tx.send(request) {
                Ok(()) => return None,
                Err(e) => request = e.0,
            }
        }
        // First call to this host (or its task ended): start one, once.
        let _spawning = self.spawning.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = self.forwarders.load().get(&target) {
            match tx.send(request) {
                Ok(()) => return None,
                Err(e) => request = e.0,
            }
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let _ = tx.send(request);
        self.forwarders.rcu(|m| {
            let mut m = (**m).clone();
            m.insert(target, tx.clone());
            m
        });
        self.runtime.spawn(forwarder(address.clone(), target, self.routing.clone(), self.me_weak.clone(), rx));
        None
    }
}

impl Link {
    /// Run `request` (a call forwarded or parked here) on this host, as a
    /// call forwarded here would be (it does not wait behind calls that
    /// entered here).
    fn run_here(&self, request: Forward) {
        let Some(host) = self.host.get().and_then(std::sync::Weak::upgrade) else {
            return fail(request, err!(Unavailable, "the host is shutting down"));
        };
        let Forward { call, handle, sink, .. } = request;
        let mut client = host.client();
        client.use_database(&call.database);
        client.set_hops(call.hops);
        client.call_async(&call.procedure, call.params, handle, sink);
    }
}

pub(super) fn fail(f: Forward, e: Error) {
    f.answer(Response::failure(e, None));
}

/// Answers to forwarded calls, queued for the connection's writer; counts
/// them out of the host's calls being served.
pub(super) struct ForwardedSink {
    answers: tokio::sync::mpsc::UnboundedSender<(u64, WireResponse)>,
    serving: Arc<std::sync::atomic::AtomicUsize>,
}

impl ResponseSink for ForwardedSink {
    fn deliver(&self, handle: u64, response: Response) {
        let _ = self.answers.send((handle, WireResponse::from(&response)));
        let _ =
            self.serving.fetch_update(std::sync::atomic::Ordering::SeqCst, std::sync::atomic::Ordering::SeqCst, |n| {
                n.checked_sub(1)
            });
    }
}

/// How long a forwarded call waits for the ring, and the metadata, it was
/// routed by.
const RING_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

/// Serve calls another host forwarded here: run each, answer with its id.
pub(super) async fn serve_forwarded(mut s: tokio::net::TcpStream, host: Arc<Host>, link: Arc<Link>) {
    // Ready: the sender writes calls only after this.
    if s.write_all(&[FORWARD]).await.is_err() {
        return;
    }
    let (mut rd, mut wr) = s.into_split();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, WireResponse)>();
    let writer = tokio::spawn(async move {
        let mut buf = Vec::with_capacity(64 * 1024);
        while let Some(answer) = rx.recv().await {
            // Everything answered meanwhile goes out in one write.
            buf.clear();
            let mut next = Some(answer);
            while let Some(a) = next.take() {
                if append_frame(&a, &mut buf).is_err() {
                    return;
                }
                if buf.len() < 1 << 20 {
                    next = rx.try_recv().ok();
                }
            }
            if wr.write_all(&buf).await.is_err() {
                break;
            }
        }
    });
    let sink: Arc<dyn ResponseSink> = Arc::new(ForwardedSink { answers: tx, serving: link.serving.clone() });
    let mut client = host.client();
    // The newest metadata version this connection's calls waited for in vain.
    let mut gave_up = 0u64;
    while let Ok(body) = read_body_async(&mut rd).await {
        let Ok((id, call)) = decode::<(u64, WireCall)>(&body) else { break };
        // Routed by a newer ring than this host's: a move of ranges
        // committed, and this host hears of it in a moment (from the
        // metadata, or its own sites). Routing now would send the call back.
        // Likewise a host that knows newer metadata (a partition's leader
        // moved): routed now, the call could go back where it came from. A
        // version waited for in vain (this host's metadata is stuck behind,
        // a repair running, say) is not waited for again on this
        // connection: the calls behind it must not each wait in turn.
        let metadata_behind = |gave_up: u64| call.metadata > gave_up && link.routing.load().version < call.metadata;
        let behind = || host.ring_version() < call.ring || metadata_behind(gave_up);
        if behind() {
            let deadline = tokio::time::Instant::now() + RING_PATIENCE;
            while behind() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            if metadata_behind(gave_up) {
                gave_up = call.metadata;
            }
        }
        client.use_database(&call.database);
        client.set_hops(call.hops);
        link.serving.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        client.call_async(&call.procedure, call.params, id, sink.clone());
    }
    drop(sink);
    let _ = writer.await;
}
