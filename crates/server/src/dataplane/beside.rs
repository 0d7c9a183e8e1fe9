//! A copy of a partition sent beside the partition's stream, and the
//! catch-up that makes it level with the stream.
//!
//! A host taking a copy (rejoining, or `AddCopy`) asks the partition's
//! leader for one; the leader's site freezes the partition and hands the
//! frozen copy to the shipper, in order with the batches. Sending a copy
//! of hundreds of megabytes takes the better part of a second or more; if
//! the shipper sent it itself, every write to the partition would wait that
//! long for its replicas. So the shipper hands the copy to a thread of its
//! own ([`SideCopy::start`]), on a connection of its own, and goes on
//! shipping. Every batch it ships meanwhile it also keeps for the new host
//! ([`SideCopy::keep`]): those batches come after the copy's position and
//! the host needs each of them, in order, before it may count as a copy.
//!
//! Once the copy is through, the thread sends the kept batches too, in
//! rounds (a round sends what was kept while the one before was sent,
//! written [`WINDOW`] frames ahead of their acknowledgements), until few
//! are left. Then it hands its connection back ([`SideCopy::take`]): the
//! shipper, between two batches, sends the last kept ones itself, then a
//! **level marker** ([`Batch::level_marker`]: a copy piece with no records,
//! at the position of the last batch shipped), and from then on sends the
//! host every batch and waits for it, as for any host taking a copy. Only
//! the marker tells the host that its copy holds every batch the leader
//! released: it may then be recorded as a replica (`CopyAdded`) or count
//! as rejoined, never before — a host recorded earlier could be made a
//! replica, or a leader, lacking writes already acknowledged.
//!
//! A host that fails any of this (a refused piece, a broken connection,
//! a batch not acknowledged in time) is dropped as a host that could not
//! take the copy inline was: it asks again (a rejoin starts again; an
//! `AddCopy` waits to be retried or cancelled).

use super::replication::{wait_ack, Ack, Batch, ReplicaConnection};
use super::*;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};

/// Kept batches the sending thread leaves to the shipper: it hands the
/// connection back once no more than this many are left.
const HAND_BACK: usize = 16;
/// Rounds of kept batches the thread sends before it hands back anyway (a
/// host slower than the load would otherwise never level).
const MAX_ROUNDS: usize = 50;
/// Frames written to the host before their acknowledgements are read.
const WINDOW: usize = 64;
/// Bytes of records kept for a copy still travelling before the shipper
/// waits for it (a large copy under a heavy load would otherwise keep
/// without bound): past it, writes wait as they did when the copy went in
/// the stream.
const MAX_KEPT_BYTES: usize = 256 << 20;

/// A copy being sent to `host` beside the stream (owned by the shipper;
/// dropping it tells the thread to stop).
pub(super) struct SideCopy {
    pub(super) host: HostId,
    shared: Arc<SideShared>,
}

struct SideShared {
    state: Mutex<SideState>,
    /// Signalled when the thread takes kept batches or is through.
    taken: std::sync::Condvar,
    /// The shipper no longer wants the copy sent (it stopped leading, the
    /// host asked again, or this host is stopping).
    closing: AtomicBool,
    /// The thread's connection (a handle to it): shut when the copy is
    /// given up, so that the thread stops at once rather than after the
    /// piece it is sending.
    socket: Mutex<Option<std::net::TcpStream>>,
}

#[derive(Default)]
struct SideState {
    /// Batches shipped since the copy was taken that the thread has not
    /// sent, in order.
    kept: VecDeque<Batch>,
    /// Their records' bytes.
    kept_bytes: usize,
    /// Set when the thread is through: its connection to the host with
    /// the copy and every kept batch it took applied, or `None` if the
    /// host did not take them.
    through: Option<Option<ReplicaConnection>>,
    /// Batches kept since the copy was taken (said when it is level).
    kept_in_all: u64,
}

/// What [`SideCopy::take`] finds.
pub(super) enum Taken {
    /// The thread is still sending.
    Sending,
    /// The host took the copy and the batches the thread sent: the rest
    /// of the kept batches go on this connection (and how many were kept
    /// in all).
    Through(ReplicaConnection, Vec<Batch>, u64),
    /// The host did not take the copy.
    Failed,
}

impl SideCopy {
    /// Start sending `pieces` (the copy's batches of records) to `host` at
    /// `address` on a thread of their own, each piece as `template` with its
    /// records (a copy piece at the position the copy was taken at).
    pub(super) fn start(
        host: HostId,
        address: String,
        template: Batch,
        pieces: Box<dyn Iterator<Item = Vec<u8>> + Send>,
        routing: Shared<Routing>,
    ) -> Option<SideCopy> {
        let shared = Arc::new(SideShared {
            state: Mutex::default(),
            taken: std::sync::Condvar::new(),
            closing: AtomicBool::new(false),
            socket: Mutex::new(None),
        });
        let thread_shared = shared.clone();
        let partition = template.partition;
        let spawned = std::thread::Builder::new().name(format!("joule-copy-{partition}")).spawn(move || {
            let mut guard = Through { shared: thread_shared, connection: None };
            guard.connection = send(&guard.shared, host, &address, template, pieces, &routing);
        });
        match spawned {
            Ok(_) => Some(SideCopy { host, shared }),
            Err(e) => {
                eprintln!("joule: partition {partition}: cannot start the thread sending host {host} its copy: {e}");
                None
            }
        }
    }

    /// A batch shipped after the copy was taken: the host gets it after
    /// the copy. Past [`MAX_KEPT_BYTES`] kept, waits until the thread
    /// takes them (or is through).
    pub(super) fn keep(&self, batch: &Batch) {
        let mut state = lock(&self.shared.state);
        state.kept.push_back(batch.clone());
        state.kept_in_all += 1;
        state.kept_bytes += batch.records.len();
        while state.kept_bytes > MAX_KEPT_BYTES && state.through.is_none() {
            state = self.shared.taken.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Whether the thread is through, and with what.
    pub(super) fn take(&self) -> Taken {
        let mut state = lock(&self.shared.state);
        match state.through.take() {
            None => Taken::Sending,
            Some(Some(connection)) => {
                // The connection is the shipper's now: dropping this copy
                // must not shut it.
                *self.shared.socket.lock().unwrap_or_else(|p| p.into_inner()) = None;
                state.kept_bytes = 0;
                Taken::Through(connection, state.kept.drain(..).collect(), state.kept_in_all)
            }
            Some(None) => Taken::Failed,
        }
    }
}

/// What the sending thread leaves behind however it ends (a panic too):
/// `through` set, and a shipper waiting in [`SideCopy::keep`] woken.
struct Through {
    shared: Arc<SideShared>,
    connection: Option<ReplicaConnection>,
}

impl Drop for Through {
    fn drop(&mut self) {
        lock(&self.shared.state).through = Some(self.connection.take());
        self.shared.taken.notify_all();
    }
}

impl Drop for SideCopy {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        if let Some(s) = self.shared.socket.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn lock(state: &Mutex<SideState>) -> std::sync::MutexGuard<'_, SideState> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// The sending thread: the copy, then rounds of kept batches; the
/// connection once few are left, `None` if the host did not take them.
fn send(
    shared: &SideShared,
    host: HostId,
    address: &str,
    template: Batch,
    pieces: Box<dyn Iterator<Item = Vec<u8>> + Send>,
    routing: &Shared<Routing>,
) -> Option<ReplicaConnection> {
    let partition = template.partition;
    // Given up: the shipper stopped wanting it, or the host no longer
    // holds or takes the partition (an `AddCopy` cancelled).
    let given_up = || shared.closing.load(Ordering::SeqCst) || !routing.load().holds_or_takes(partition, host);
    let mut c = ReplicaConnection { stream: connect(address, REPLICATION).ok()? };
    *shared.socket.lock().unwrap_or_else(|p| p.into_inner()) = c.stream.try_clone().ok();
    if given_up() {
        return None;
    }
    for records in pieces {
        if given_up() {
            return None;
        }
        let piece = Batch { records, ..template.clone() };
        if write_frame(&mut c.stream, &piece).is_err() || wait_ack(&mut c, host, routing, true) != Ack::Applied {
            return None;
        }
    }
    // Fault injection: the copy is whole on the host but not level while
    // a test writes (`crates/cli/tests/cluster_copies.rs`).
    joule_common::failpoint::pause_while_armed("copy_beside_sent", Duration::from_secs(60));
    for _ in 0..MAX_ROUNDS {
        let round: Vec<Batch> = {
            let mut state = lock(&shared.state);
            if given_up() {
                return None;
            }
            if state.kept.len() <= HAND_BACK {
                break;
            }
            state.kept.drain(..).collect()
        };
        if !send_in_order(&mut c, host, routing, &round) {
            return None;
        }
        // Counted until sent: the round is held here meanwhile.
        let sent: usize = round.iter().map(|b| b.records.len()).sum();
        let mut state = lock(&shared.state);
        state.kept_bytes = state.kept_bytes.saturating_sub(sent);
        drop(state);
        shared.taken.notify_all();
    }
    Some(c)
}

/// Send `batches` to `host` in order, [`WINDOW`] frames ahead of their
/// acknowledgements; whether it applied every one.
pub(super) fn send_in_order(
    c: &mut ReplicaConnection,
    host: HostId,
    routing: &Shared<Routing>,
    batches: &[Batch],
) -> bool {
    for window in batches.chunks(WINDOW) {
        for batch in window {
            if write_frame(&mut c.stream, batch).is_err() {
                return false;
            }
        }
        for _ in window {
            if wait_ack(c, host, routing, true) != Ack::Applied {
                return false;
            }
        }
    }
    true
}
