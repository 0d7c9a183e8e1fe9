//! A host leaving the cluster hands the partitions it leads over drained.
//!
//! When a host is removed, the partitions it leads move to other copies.
//! Moved at once, whatever it had run and not yet shipped, or shipped and
//! not yet seen acknowledged, would be lost to its callers: the new leader
//! settles the copies that go on, the leaving host can no longer confirm
//! a batch they may not hold, and its callers learn only that the outcome
//! is unknown. So the cluster metadata first marks the removal as
//! draining (`joule_cluster`'s `copies` module), and the leaving host:
//!
//! 1. stops running single-partition calls on the partitions it leads:
//!    each site holds the calls it takes from then on, in order
//!    ([`SpDisposition::Hold`], read from the routing per call), shipping
//!    what it had batched when it holds the first;
//! 2. asks each such site to hand over ([`Host::hand_over`]): the site
//!    ships what is batched and then an empty batch whose confirmation —
//!    every copy applied it, so everything before it — is the answer;
//! 3. tells the metadata it has drained, and the metadata moves the
//!    leadership: the new leaders find every copy level.
//!
//! Once another host leads, the held calls go to it
//! ([`Host::review_held`], sent after every change of the metadata);
//! should the hand-over be called off, they run here again. A site holds
//! calls only while its host leads and hands over; calls arriving while
//! some are held queue behind them — this host's own calls for the
//! partition too: from the hand-over on they go to the site
//! (`Shared::holding`) even once another host leads, and it forwards them
//! in order — so one client's calls to a partition keep their order
//! through this host.
//!
//! The new leader keeps that order too. Calls a host forwarded for a
//! partition before it came to lead it may still be held by the old
//! leader, or on their way back: a call that enters the host meanwhile
//! does not go to its site (`ClusterLink::may_run_entered`, asked when the
//! call is dispatched) but is forwarded behind them (the server's fence),
//! while calls forwarded to the host run at once (the held ones are among
//! them).
//!
//! If the leaving host coordinates multi-partition transactions, it hands
//! the coordination over first, the same way: its coordinator holds the
//! multi-partition calls it takes from then on
//! (`ClusterLink::hands_coordination_over`), the host waits until the
//! coordinator has run every transaction taken before
//! ([`Host::hand_coordination_over`]), and only then asks the sites to hand
//! their partitions over — so the transactions' writes on this host's
//! partitions are in what the copies confirm. Once another host
//! coordinates, the held calls go to it, in order (this host's new ones
//! behind them: `Shared::holding_mp`, set when the hand-over begins, so
//! that none passes a call still queued for the coordinator).
//!
//! Fragments of other hosts' multi-partition transactions still run on a
//! draining host's sites: they do not come from the calls held, and what
//! they ship is confirmed as before.

use crate::host::Host;
use crate::messages::{CoordMsg, MpTask, SiteMsg, SpTask};
use crate::remote::SpDisposition;
use crate::site::Site;
use std::sync::mpsc::{channel, Receiver, Sender};

impl Site {
    /// Hold `task` while the partition is handed over. The first call held
    /// ships what is batched: everything this site ran goes out now.
    pub(crate) fn hold(&mut self, task: SpTask) {
        if self.held.is_empty() {
            self.flush_log();
            self.set_holding(true);
        }
        self.held.push_back(task);
    }

    /// Say whether this site holds calls (`dispatch_sp` then sends the
    /// partition's calls here, behind them, wherever the partition is led).
    fn set_holding(&self, holding: bool) {
        if let Some(shared) = self.shared.upgrade() {
            shared.holding[self.partition as usize].store(holding, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// If this site hands its partition over: ship what is batched, then
    /// answer `reply` once every copy applied it all. Otherwise `reply`
    /// is dropped unanswered.
    pub(crate) fn hand_over(&mut self, reply: Sender<()>) {
        let Some(link) = self.link.clone() else { return };
        if link.sp_disposition(self.partition) != SpDisposition::Hold {
            return;
        }
        self.set_holding(true);
        self.flush_log();
        link.replicate(
            self.partition,
            Vec::new(),
            Box::new(move || {
                let _ = reply.send(());
            }),
        );
    }

    /// The calls held go on, in order: to the partition's new leader, or
    /// run here (the hand-over was called off) — unless it still waits.
    pub(crate) fn review_held(&mut self) {
        let Some(link) = self.link.clone() else { return };
        while let Some(task) = self.held.pop_front() {
            match link.sp_disposition(self.partition) {
                SpDisposition::Hold => {
                    self.held.push_front(task);
                    return;
                }
                SpDisposition::Forward => crate::forwarding::forward_sp(&link, self.partition, task),
                SpDisposition::Run => self.run_sp(task),
            }
        }
        // Leading again (the hand-over was called off), calls come here
        // anyway. Once another host leads, this host's calls for the
        // partition keep coming through this site (which forwards them in
        // the order they came) until the host stops: a flag cleared while
        // calls sent under it still wait here would let later ones pass.
        if link.sp_disposition(self.partition) == SpDisposition::Run {
            self.set_holding(false);
        }
    }
}

impl crate::coordinator::Coordinator {
    /// Run `task`, or hold it while this host hands the coordination over
    /// (and behind calls held already).
    pub(crate) fn run_or_hold(&mut self, task: MpTask) {
        let handing_over = self.shared.link.as_ref().is_some_and(|l| l.hands_coordination_over());
        if handing_over || !self.held.is_empty() {
            self.shared.holding_mp.store(true, std::sync::atomic::Ordering::SeqCst);
            self.held.push_back(task);
            self.review_held();
        } else {
            self.run_txn(task);
        }
    }

    /// The calls held go on, in order: to the new coordinator (`run_txn`
    /// forwards a call once another host coordinates), or run here (the
    /// hand-over was called off) — unless the hand-over goes on.
    pub(crate) fn review_held(&mut self) {
        let Some(link) = self.shared.link.clone() else { return };
        while !link.hands_coordination_over() {
            let Some(task) = self.held.pop_front() else { break };
            self.run_txn(task);
        }
        // As for a site: once another host coordinates, this host's calls
        // keep coming here (forwarded in order) until it stops.
        if self.held.is_empty() && link.coordinates() {
            self.shared.holding_mp.store(false, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

impl Host {
    /// Ask this host's site of `partition` to hand it over (see the module
    /// doc): the receiver gets `()` once every copy applied everything the
    /// site ran, and is disconnected if the site does not hand it over or
    /// its batches were not confirmed (this host was deposed meanwhile).
    /// `None` if no site here holds the partition.
    pub fn hand_over(&self, partition: u32) -> Option<Receiver<()>> {
        let site = self.local_site(partition)?;
        let (tx, rx) = channel();
        site.send(SiteMsg::HandOver(tx)).ok()?;
        Some(rx)
    }

    /// Every site here, and the coordinator, look at the calls they hold
    /// again (the metadata changed: another host may lead their
    /// partitions, or coordinate, now).
    pub fn review_held(&self) {
        let routes = self.shared().routes.load();
        for (site, local) in routes.sites.iter().zip(routes.local.iter()) {
            if *local {
                let _ = site.send(SiteMsg::ReviewHeld);
            }
        }
        let _ = self.shared().coordinator.send(CoordMsg::ReviewHeld);
    }

    /// Ask the coordinator here to hand the coordination over: the
    /// receiver gets `()` once every multi-partition transaction it took
    /// before has run (those taken from now on wait for the new
    /// coordinator). `None` if this host does not hand it over.
    pub fn hand_coordination_over(&self) -> Option<Receiver<()>> {
        let link = self.shared().link.clone()?;
        if !link.hands_coordination_over() {
            return None;
        }
        // From now on this host's multi-partition calls go to its
        // coordinator (held there, then forwarded in order), even once
        // another host coordinates: none can pass one queued before.
        self.shared().holding_mp.store(true, std::sync::atomic::Ordering::SeqCst);
        let (tx, rx) = channel();
        self.shared().coordinator.send(CoordMsg::HandOver(tx)).ok()?;
        Some(rx)
    }
}
