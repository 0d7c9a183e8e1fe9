//! Keeping the order of calls through this host when a partition's leader
//! moves.
//!
//! Calls a client sends through one host to one partition run in the order
//! they came: this host runs them on its site in order, or forwards them in
//! order over one connection to the partition's leader, which runs them in
//! the order they arrive. When the leadership moves from host X to host Y
//! (a removed host hands its partitions over, a failed one is replaced),
//! calls this host forwarded to X may still be on their way or held there
//! (X holds the calls it takes while it hands over, then forwards them to
//! Y). A later call sent straight to Y, or run here because this host now
//! leads, would overtake them.
//!
//! So each partition has a **fence**: the host its forwarded calls went to
//! and how many are not answered yet. A call for the partition goes to
//! its leader only if none is outstanding elsewhere; otherwise it is
//! parked with the calls waiting for a new leader (`parking.rs`) until the
//! last call outstanding elsewhere is answered (it ran, or its outcome is
//! known to be unknown), then sent on. If this host leads now, a call that
//! entered here goes to its site only once nothing for the partition is
//! parked here or outstanding elsewhere (decided when the call is
//! dispatched: one already in the site's inbox cannot wait for calls put
//! in behind it); otherwise it is forwarded behind them, and when the
//! fence opens the parked calls go straight into the site, in order. Only
//! calls that entered this host are fenced: calls passing through
//! (forwarded here by another host) go on, among them the very calls the
//! fence waits for, sent back by the old leader that held them.
//!
//! A call still queued for the old leader when it leaves the cluster (or
//! is declared failed) was never sent: the forwarding connection hands it
//! back (`Link::send_back`), and it joins the partition's line here ahead
//! of every call that came after it (the line keeps the order calls came
//! in, `Forward::seq`), then leaves the old fence. Whoever checks whether
//! the line is empty reads it before the fence and again after, so nothing
//! that came after the call passes it.
//!
//! An answer that the outcome is unknown (the connection to the old
//! leader broke) opens the fence too: such a call may still run later,
//! after calls sent to the new leader — its caller was told its outcome is
//! unknown. The order is kept when the leadership is handed over (a host
//! leaving the cluster); a leader deposed without a hand-over (it hung)
//! may still have calls run out of order.
//!
//! The fence costs a forwarded call one compare-and-swap when it is sent
//! and one subtraction when it is answered (the call carries a ticket,
//! dropped once whatever answers it), and a call that entered the
//! host that leads its partition one `ArcSwap` load and two atomic loads
//! when it is dispatched.

use super::*;
use std::sync::atomic::{AtomicU64, Ordering};

/// One partition's fence: the host its outstanding forwarded calls went
/// to (high 32 bits) and how many there are (low 32 bits), in one word so
/// that both change together.
#[derive(Default)]
pub(super) struct Fence {
    word: AtomicU64,
    /// Calls for the partition parked on this host (`parking.rs`).
    pub(super) parked: std::sync::atomic::AtomicUsize,
}

const COUNT: u64 = 0xffff_ffff;

fn target_of(word: u64) -> u64 {
    word >> 32
}

/// A host's id as a fence names it: ids from 2^32 on (never given out by
/// the cluster, but possible in a configuration) all read as one value
/// that matches nothing, so their calls wait for the fence to be empty.
fn tag(host: HostId) -> u64 {
    host.min(COUNT)
}

impl Fence {
    /// Whether a call for the partition may go to `leader` now: no
    /// forwarded call is outstanding at another host.
    fn open_to(&self, leader: HostId) -> bool {
        let word = self.word.load(Ordering::SeqCst);
        word & COUNT == 0 || (target_of(word) == tag(leader) && tag(leader) != COUNT)
    }

    /// Count one more call forwarded to `target`, unless calls are
    /// outstanding at another host (then `false`: it must wait).
    fn enter(&self, target: HostId) -> bool {
        let target = tag(target);
        let mut word = self.word.load(Ordering::SeqCst);
        loop {
            let count = word & COUNT;
            if count > 0 && (target_of(word) != target || target == COUNT) {
                return false;
            }
            match self.word.compare_exchange_weak(
                word,
                (target << 32) | (count + 1),
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return true,
                Err(now) => word = now,
            }
        }
    }

    /// One forwarded call answered; whether it was the last outstanding.
    fn leave(&self) -> bool {
        self.word.fetch_sub(1, Ordering::SeqCst) & COUNT == 1
    }
}

/// Every partition's fence (grown as partitions are added).
#[derive(Default)]
pub(super) struct Fences(arc_swap::ArcSwap<Vec<Arc<Fence>>>);

impl Fences {
    /// Partition `partition`'s fence (made if the partition is new).
    pub(super) fn get(&self, partition: u32) -> Arc<Fence> {
        if let Some(f) = self.0.load().get(partition as usize) {
            return f.clone();
        }
        self.0.rcu(|v| {
            let mut v = (**v).clone();
            while v.len() <= partition as usize {
                v.push(Arc::default());
            }
            v
        });
        self.0.load()[partition as usize].clone()
    }

    /// Whether a call for `partition` may go to (or run at) `leader` now.
    pub(super) fn open_to(&self, partition: u32, leader: HostId) -> bool {
        self.0.load().get(partition as usize).is_none_or(|f| f.open_to(leader))
    }
}

/// A forwarded call's place in its partition's fence: counted out when
/// the call is answered, or dropped unanswered, or handed back unsent
/// (`Forward::fenced`), and the fence opened for what waits on it.
pub(super) struct FenceTicket {
    fence: Arc<Fence>,
    link: std::sync::Weak<Link>,
}

impl Drop for FenceTicket {
    fn drop(&mut self) {
        if !self.fence.leave() {
            return;
        }
        if let Some(link) = self.link.upgrade() {
            link.fence_opened();
        }
    }
}

impl Link {
    /// Count `request`, forwarded to `target` for `partition`, into the
    /// partition's fence, giving it its ticket; `false` (the request left
    /// as it was) if calls are outstanding at another host: it must wait.
    pub(super) fn enter_fence(&self, partition: u32, target: HostId, request: &mut Forward) -> bool {
        let fence = self.parking.fences.get(partition);
        if !fence.enter(target) {
            return false;
        }
        debug_assert!(request.fenced.is_none(), "a call is in one fence at most");
        request.fenced = Some(FenceTicket { fence, link: self.me_weak.clone() });
        true
    }

    /// Whether this host, leading `partition`, may send a call that
    /// entered here to its site now: no call for the partition is parked
    /// here, or forwarded to another host and not answered. Otherwise the
    /// call is forwarded behind them (parked calls sent on to this host go
    /// straight into its site, in order: `Link::run_here`).
    pub(super) fn may_run_here(&self, partition: u32) -> bool {
        let fences = self.parking.fences.0.load();
        let Some(fence) = fences.get(partition as usize) else { return true };
        // Parked, fence, parked again: a parked call is counted into its
        // fence (or handed to the site) before it is counted out of the
        // parked ones, and a call handed back unsent (`Link::send_back`) is
        // counted in before it leaves its fence.
        let nothing_parked = || fence.parked.load(Ordering::SeqCst) == 0;
        nothing_parked() && fence.word.load(Ordering::SeqCst) & COUNT == 0 && nothing_parked()
    }

    /// The last call outstanding behind a fence was answered: send on the
    /// calls parked — from a task of its own, as the answer may come while
    /// the parked calls' lock is held (a forwarding queue dropped while
    /// calls are sent on).
    fn fence_opened(&self) {
        if self.parked() == 0 {
            return;
        }
        if let Some(link) = self.me_weak.upgrade() {
            self.runtime.spawn(async move { link.unpark() });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fence_lets_calls_follow_their_leader_only_once_none_is_outstanding_elsewhere() {
        let f = Fence::default();
        assert!(f.open_to(1) && f.open_to(2), "nothing outstanding: open to any leader");
        assert!(f.enter(1) && f.enter(1), "calls to the same leader pass each other by nothing");
        assert!(f.open_to(1) && !f.open_to(2));
        assert!(!f.enter(2), "the leader moved: a call to the new one waits");
        assert!(!f.leave(), "one call still outstanding at host 1");
        assert!(!f.enter(2));
        assert!(f.leave(), "the last one answered");
        assert!(f.open_to(2) && f.enter(2) && !f.open_to(1));
        assert!(f.leave());
        // A host id past 2^32 matches nothing: its calls wait for an empty fence.
        let big = 1u64 << 40;
        assert!(f.enter(big) && !f.enter(big) && !f.open_to(big));
        assert!(f.leave() && f.open_to(big));
    }
}
