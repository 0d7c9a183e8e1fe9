//! The partition set: starting a partition's site, and adding partitions
//! to a running host or taking the last ones away.
//!
//! A host starts with a fixed number of partitions ([`crate::host::Host::start`]
//! starts one site thread per partition it holds). Elastic scaling needs
//! the set to grow while transactions run: new partitions are created
//! empty, and then ranges of the hashinator ring move to them
//! (`crate::moverange`). This module owns the first half.
//!
//! Adding partitions is a multi-partition transaction
//! ([`Coordinator::add_partitions`]), so it happens at one point of every
//! partition's serial order:
//!
//! 1. partition 0 freezes its tables, and the rows of its replicated tables
//!    (every partition holds the same ones at the same ids) are copied out;
//! 2. each new partition's site starts with the coordinator's catalog (the
//!    schema as of this transaction), joins the transaction at once (its
//!    first message is the start marker), and places those rows at their
//!    ids;
//! 3. the commit installs the next hashinator on every site — the same
//!    ring, its version one higher, over the larger partition count (the
//!    new partitions own no token yet) — and then publishes the new
//!    partitions to the initiators' routes ([`Routes`]) and the ring.
//!
//! From the commit on, every multi-partition transaction includes the new
//! partitions, so DDL and replicated-table writes reach them in order. A
//! failure before the commit rolls back everywhere and stops the new sites;
//! nothing was published. Single-partition calls reach a new partition only
//! once a range moves to it.
//!
//! Taking partitions away ([`Coordinator::remove_partitions`]) is the
//! reverse, and only from the end (partition ids are dense): every range
//! of the ring has moved off the partitions that leave first (moves of
//! ranges, `crate::moverange`), so they hold no row of a partitioned table;
//! each checks that (`WorkItem::Retire`) inside the transaction, whose
//! commit installs the same ring over the partitions that stay and drops
//! the leaving ones from the routes — on one host their sites stop. In a
//! cluster the commit point is the metadata's record (`PartitionsLeft`),
//! and the hosts that held them leave the cluster after it.
//!
//! The per-partition state initiators read without a lock (queue depths,
//! whether a copy is loaded, prepared transactions) is sized for
//! [`MAX_PARTITIONS`] when the host starts, so adding partitions never
//! moves it; the routes are replaced whole through an `ArcSwap`.
//!
//! Not built yet (so refused with `FeatureNotSupported`): adding
//! partitions on a cluster of several hosts (the metadata's placement, the
//! proxies and the data plane's links must grow with it), on a node with a
//! command log (its segments and snapshots record the partition count, and
//! a replay must add the partitions at the same point), and while a
//! range-partitioned table exists (its value ranges are dealt out over the
//! partition count, so another count would move them).

use crate::compile::Schema;
use crate::coordinator::Coordinator;
use crate::hashinator::Hashinator;
use crate::host::{Routes, Shared, MAX_PARTITIONS};
use crate::ids::TxnIds;
use crate::logging::CommandLog;
use crate::messages::{Decider, ItemResult, MpReply, SiteMsg, WorkItem};
use crate::messages::{MpKind, MpWork};
use crate::procedure::Batch;
use crate::response::{Response, ResultTable};
use crate::site::Site;
use crate::snapshot::PartitionRows;
use joule_common::{bail, err, DataType, Result, Value};
use joule_engine::Database;
use joule_sql::plan::OutputColumn;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

/// What a new site starts with.
pub(crate) struct SiteStart {
    pub partition: u32,
    /// Its storage: empty, or holding the catalog it starts with.
    pub db: Database,
    pub hashinator: Arc<Hashinator>,
    pub schema: Arc<Schema>,
    pub inbox: Receiver<SiteMsg>,
    pub mp_inbox: Receiver<MpWork>,
    /// Ids a restored snapshot was taken with (see
    /// [`crate::host::HostConfig::resume_after`]).
    pub resume_after: Option<TxnIds>,
}

/// Start a site's thread.
pub(crate) fn start_site(
    shared: &Arc<Shared>,
    start: SiteStart,
    mp_reply: Sender<MpReply>,
    log: Option<Arc<dyn CommandLog>>,
) -> Result<JoinHandle<()>> {
    let SiteStart { partition, db, hashinator, schema, inbox, mp_inbox, resume_after } = start;
    let mut ids = crate::ids::IdGenerator::new(partition);
    if let Some(resume) = resume_after {
        ids.observe(resume);
    }
    let site = Site {
        partition,
        db,
        ids,
        hashinator,
        schema,
        inbox,
        mp_inbox,
        mp_reply,
        batch: Batch::default(),
        log,
        last_mp: resume_after.map_or(0, |ids| ids.txn_id.0),
        log_frames: Vec::new(),
        log_answers: Vec::new(),
        log_since: None,
        counters: crate::stats::SiteCounters::new(),
        depths: shared.depths.clone(),
        after_mp: false,
        link: shared.link.clone(),
        repl_records: Vec::new(),
        held: Default::default(),
        next_ring: None,
        coordinator: shared.coordinator.clone(),
        shared: Arc::downgrade(shared),
    };
    let name = format!("joule-site-{partition}");
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || site.run())
        .map_err(|e| err!(Internal, "cannot start thread {name}: {e}"))
}

/// Start the proxy thread for `partition`'s leader on another host: its
/// thread, and its inboxes (start markers, work).
pub(crate) fn start_proxy(
    shared: &Arc<Shared>,
    partition: u32,
) -> Result<(JoinHandle<()>, crate::host::PartitionInboxes)> {
    let link = shared.link.clone().ok_or_else(|| err!(Internal, "a proxy needs the cluster's link"))?;
    let (begin, begin_rx) = mpsc::channel();
    let (work, work_rx) = mpsc::channel();
    let replies = shared.replies.clone();
    let thread = crate::host::spawn(format!("joule-proxy-{partition}"), move || {
        crate::remote::run_proxy(partition, begin_rx, work_rx, replies, link)
    })?;
    Ok((thread, (begin, work)))
}

impl crate::host::Host {
    /// A cluster's hosts added partitions up to `total` (see the cluster
    /// metadata's `AddHosts`): route to their leaders through proxies. They
    /// join the transaction order later, when the coordinator's join
    /// transaction commits; until then no call reaches them (the ring
    /// gives them no token). Partitions this host holds a copy of were
    /// placed when it started.
    pub fn extend_partitions(&self, total: u32) -> Result<()> {
        let shared = self.shared();
        let known = shared.known_partitions();
        if total as usize <= known {
            return Ok(());
        }
        if shared.link.is_none() || total as usize > MAX_PARTITIONS {
            bail!(InvalidArgument, "cannot route to {total} partitions here");
        }
        let mut added = Vec::new();
        for p in known..total as usize {
            let (thread, proxy) = start_proxy(shared, p as u32)?;
            shared.spawned.lock().unwrap_or_else(|e| e.into_inner()).push(thread);
            shared.loaded[p].store(true, std::sync::atomic::Ordering::SeqCst);
            added.push(proxy);
        }
        shared.routes.rcu(|now| {
            let mut routes = Routes::clone(now);
            for (begin, work) in added.iter().skip(routes.sites.len() - known) {
                routes.sites.push(begin.clone());
                routes.work.push(work.clone());
                routes.proxies.push(Some((begin.clone(), work.clone())));
                routes.local.push(false);
            }
            routes
        });
        Ok(())
    }

    /// Start a site here for `partition`, whose copy this host is about to
    /// take from its leader (the cluster metadata's `AddCopy`): empty and
    /// not loaded, so it takes nothing but the copy's pieces until the
    /// copy is whole; from then on it follows the leader's stream like any
    /// replica. It takes the proxy's place in the routes (calls still go
    /// to the leader while this host does not lead; the coordinator picks
    /// the new route up with its next transaction). Nothing if a site here
    /// holds the partition already.
    pub fn add_copy_site(&self, partition: u32) -> Result<()> {
        let shared = self.shared();
        let p = partition as usize;
        let routes = shared.routes.load_full();
        if shared.link.is_none() || p >= routes.sites.len() {
            bail!(InvalidArgument, "there is no partition {partition} to hold a copy of here");
        }
        if routes.local[p] {
            return Ok(());
        }
        shared.loaded[p].store(false, std::sync::atomic::Ordering::SeqCst);
        *crate::participant::lock(&shared.in_doubt[p]) = Default::default();
        let (inbox_tx, inbox) = mpsc::channel();
        let (work, mp_inbox) = mpsc::channel();
        let start = SiteStart {
            partition,
            db: Database::new(),
            hashinator: shared.hashinator.load_full(),
            schema: shared.schema.load_full(),
            inbox,
            mp_inbox,
            resume_after: None,
        };
        let thread = start_site(shared, start, shared.replies.clone(), None)?;
        shared.spawned.lock().unwrap_or_else(|e| e.into_inner()).push(thread);
        route_partition(shared, p, (inbox_tx, work), true);
        Ok(())
    }
}

impl crate::host::Host {
    /// The copy of `partition` being taken here was given up (the cluster
    /// metadata's `CancelCopy`): its site stops and the partition is routed
    /// through its proxy again, as before [`Self::add_copy_site`]. Nothing
    /// if no site here holds it.
    pub fn drop_copy_site(&self, partition: u32) {
        let shared = self.shared();
        let p = partition as usize;
        let routes = shared.routes.load_full();
        if p >= routes.sites.len() || !routes.local[p] {
            return;
        }
        let Some((begin, work)) = routes.proxies[p].clone() else { return };
        route_partition(shared, p, (begin, work), false);
        shared.loaded[p].store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = routes.sites[p].send(SiteMsg::Shutdown);
    }
}

/// Route to partitions `0..keep` only, from now on. Sites here of the
/// partitions that left stop now (`stop`: one host, their commit ahead of
/// the `Shutdown` in their inboxes) or with the host (a host leaving the
/// cluster holds them, and they may still owe their replicas the commit):
/// their inboxes are kept for that (`Shared::retired`).
pub(crate) fn retire_routes(shared: &Shared, keep: usize, stop: bool) {
    if shared.routes.load().sites.len() <= keep {
        return;
    }
    let mut retired = Vec::new();
    shared.routes.rcu(|now| {
        let mut routes = Routes::clone(now);
        retired = (keep..routes.sites.len()).filter(|p| routes.local[*p]).map(|p| routes.sites[p].clone()).collect();
        routes.sites.truncate(keep);
        routes.work.truncate(keep);
        routes.proxies.truncate(keep);
        routes.local.truncate(keep);
        routes.active = routes.active.min(keep);
        routes
    });
    if stop {
        for site in retired {
            let _ = site.send(SiteMsg::Shutdown);
        }
    } else {
        shared.retired.lock().unwrap_or_else(|e| e.into_inner()).extend(retired);
    }
}

impl crate::site::Site {
    /// This partition leaves the order: it must hold no row of a
    /// partitioned table (replicated ones are copies; they go with it).
    pub(crate) fn check_empty(&self) -> Result<()> {
        let catalog = self.db.catalog();
        for def in catalog.tables().filter(|t| catalog.is_partitioned(t)) {
            let rows = self.db.storage().table(def.id).map_or(0, |t| t.len());
            if rows > 0 {
                bail!(
                    InvalidArgument,
                    "partition {} still holds {rows} row(s) of {}: its ranges must move off before it leaves",
                    self.partition,
                    def.qualified_name()
                );
            }
        }
        Ok(())
    }
}

impl crate::host::Client {
    /// Add `count` partitions, held by new sites on this host, as one
    /// multi-partition transaction (see [`crate::partitions`]): they start
    /// with the schema and the replicated tables' rows and own no token of
    /// the ring until a range moves to them. Answers their ids. Waits.
    pub fn add_partitions(&mut self, count: u32) -> Response {
        self.run_mp_and_wait(MpKind::AddPartitions(count))
    }

    /// Take the partitions from `keep` on out of the transaction order, as
    /// one multi-partition transaction (see [`crate::partitions`]): every
    /// range must have moved off them, so they hold no partitioned row.
    /// On one host their sites stop; in a cluster the metadata records it
    /// (and the hosts holding them leave). Answers their ids. Waits.
    pub fn remove_partitions(&mut self, keep: u32) -> Response {
        self.run_mp_and_wait(MpKind::RemovePartitions(keep))
    }
}

/// What a transaction that brought partitions in publishes at its commit.
pub(crate) struct Joined {
    /// Partitions in the order from now on.
    pub active: usize,
    /// One host: the inboxes of the sites started for them.
    pub started: Vec<(Sender<SiteMsg>, Sender<MpWork>)>,
}

impl Coordinator {
    /// Bring `count` partitions into the transaction order inside the
    /// transaction `ids` (every partition in it so far has joined): on one
    /// host new sites are started for them; on a cluster they are the ones
    /// the metadata added with new hosts, which this host routes to
    /// already. Each takes the schema and the replicated tables' rows
    /// (`WorkItem::JoinPartition`); `ring` and `joined` are what the commit
    /// installs. On failure the coordinator forgets them again once the
    /// transaction has rolled back (`forget_joining`).
    pub(crate) fn add_partitions(
        &mut self,
        count: u32,
        ids: TxnIds,
        ring: &mut Option<Arc<Hashinator>>,
        joined: &mut Option<Joined>,
    ) -> Result<Vec<ResultTable>> {
        let n = self.sites.len();
        let cluster = self.shared.link.is_some();
        self.count_may_change("adding")?;
        if count == 0 || n + count as usize > MAX_PARTITIONS {
            bail!(
                InvalidArgument,
                "cannot add {count} partition(s) to {n}: the count must be at least 1 and the total at most \
                 {MAX_PARTITIONS}"
            );
        }
        let routes = self.shared.routes.load_full();
        if cluster && routes.sites.len() < n + count as usize {
            bail!(Unavailable, "partitions {n}..{} are not known on this host yet; try again", n + count as usize - 1);
        }
        let replicated = self.replicated_rows()?;
        let next = Arc::new(Hashinator::over(
            self.hashinator.version() + 1,
            self.hashinator.ring().to_vec(),
            (n + count as usize) as u32,
        )?);
        let mut started = Vec::new();
        self.joining_from = Some(n);
        for p in n..n + count as usize {
            if cluster {
                self.sites.push(routes.work[p].clone());
                self.site_inboxes.push(routes.sites[p].clone());
                self.proxies.push(routes.proxies[p].clone());
                self.remote.push(self.shared.link.as_ref().is_some_and(|l| !l.leads(p as u32)));
            } else {
                let (inbox_tx, inbox) = mpsc::channel();
                let (work, mp_inbox) = mpsc::channel();
                let start = SiteStart {
                    partition: p as u32,
                    db: Database::new(),
                    hashinator: self.hashinator.clone(),
                    schema: self.shared.schema.load_full(),
                    inbox,
                    mp_inbox,
                    resume_after: None,
                };
                let thread = start_site(&self.shared, start, self.shared.replies.clone(), None)?;
                self.shared.spawned.lock().unwrap_or_else(|e| e.into_inner()).push(thread);
                self.shared.depths[p].store(0, std::sync::atomic::Ordering::Relaxed);
                self.shared.loaded[p].store(true, std::sync::atomic::Ordering::SeqCst);
                *crate::participant::lock(&self.shared.in_doubt[p]) = Default::default();
                self.sites.push(work.clone());
                self.site_inboxes.push(inbox_tx.clone());
                self.proxies.push(None);
                self.remote.push(false);
                started.push((inbox_tx, work));
            }
            self.wrote.push(false);
            self.released.push(false);
            self.deferred.push(false);
            if self.begin_target(p).send(SiteMsg::MpBegin(ids, None, Decider::Coordinator)).is_err() {
                bail!(Unavailable, "partition {p} is gone (shutting down)");
            }
        }
        let catalog = self.schema_db.catalog_arc().clone();
        let items = (0..n + count as usize)
            .map(|p| {
                if p >= n {
                    vec![WorkItem::JoinPartition { catalog: catalog.clone(), rows: replicated.clone() }]
                } else {
                    Vec::new()
                }
            })
            .collect();
        self.round(items)?;
        *ring = Some(next);
        *joined = Some(Joined { active: n + count as usize, started });
        let columns = vec![OutputColumn { name: "PARTITION_ID".to_string(), data_type: Some(DataType::Integer) }];
        let rows = (n..n + count as usize).map(|p| vec![Value::Integer(p as i64)]).collect();
        Ok(vec![ResultTable::new(columns.into(), rows)])
    }

    /// Whether the partition count may change here (`doing`: "adding" or
    /// "removing"): not with a command log (its segments and snapshots
    /// record the count), nor while a table is partitioned by value ranges
    /// (they are dealt out over the count, so another count would move
    /// them).
    fn count_may_change(&self, doing: &str) -> Result<()> {
        if self.log.is_some() {
            bail!(
                FeatureNotSupported,
                "{doing} partitions on a node with a command log is not built yet (its segments and snapshots \
                 record the partition count)"
            );
        }
        if let Some(t) = self.schema_db.catalog().tables().find(|t| t.partition_ranges.is_some()) {
            bail!(
                FeatureNotSupported,
                "table {} is partitioned by value ranges, which are dealt out over the partition count: {doing} \
                 partitions would move them",
                t.qualified_name()
            );
        }
        Ok(())
    }

    /// The rows of every replicated table (views on them included) with
    /// their ids, as partition 0 holds them in this transaction.
    fn replicated_rows(&mut self) -> Result<PartitionRows> {
        let mut items: Vec<Vec<WorkItem>> = (0..self.sites.len()).map(|_| Vec::new()).collect();
        items[0].push(WorkItem::ReplicatedRows);
        let mut results = self.round(items)?;
        match results[0].pop() {
            Some(ItemResult::Placed(rows)) => Ok(rows),
            _ => bail!(Internal, "partition 0 did not hand over its replicated tables"),
        }
    }

    /// The transaction that was to bring partitions in from `joining_from`
    /// on did not commit (and has rolled back): forget them (stopping the
    /// sites started for them on one host).
    pub(crate) fn forget_joining(&mut self) {
        let Some(n) = self.joining_from.take() else { return };
        if self.shared.link.is_none() {
            for site in &self.site_inboxes[n..] {
                let _ = site.send(SiteMsg::Shutdown);
            }
        }
        self.truncate_partitions(n);
    }

    /// The transaction that brought partitions in committed: route to them
    /// (before the ring that counts them is published).
    pub(crate) fn publish_partitions(&mut self, joined: Joined) {
        self.joining_from = None;
        self.shared.routes.rcu(|now| {
            let mut routes = Routes::clone(now);
            for (inbox, work) in &joined.started {
                routes.sites.push(inbox.clone());
                routes.work.push(work.clone());
                routes.proxies.push(None);
                routes.local.push(true);
            }
            routes.active = routes.active.max(joined.active);
            routes
        });
    }

    /// Take the partitions from `keep` on out of the order inside the
    /// transaction under way: the ring gives them no token, and each
    /// checks it holds no partitioned row (`WorkItem::Retire`). `ring` and
    /// `left` are what the commit installs.
    pub(crate) fn remove_partitions(
        &mut self,
        keep: usize,
        ring: &mut Option<Arc<Hashinator>>,
        left: &mut Option<usize>,
    ) -> Result<Vec<ResultTable>> {
        let n = self.sites.len();
        self.count_may_change("removing")?;
        if keep == 0 || keep >= n {
            bail!(InvalidArgument, "cannot keep {keep} of {n} partitions: keep at least 1 and remove at least 1");
        }
        if let Some((_, p)) = self.hashinator.ring().iter().find(|(_, p)| *p as usize >= keep) {
            bail!(
                InvalidArgument,
                "partition {p} still owns ranges of the ring: move them to partitions 0..{} first (@Rebalance)",
                keep - 1
            );
        }
        let items = (0..n).map(|p| if p >= keep { vec![WorkItem::Retire] } else { Vec::new() }).collect();
        self.round(items)?;
        *ring = Some(Arc::new(Hashinator::over(
            self.hashinator.version() + 1,
            self.hashinator.ring().to_vec(),
            keep as u32,
        )?));
        *left = Some(keep);
        let columns = vec![OutputColumn { name: "PARTITION_ID".to_string(), data_type: Some(DataType::Integer) }];
        let rows = (keep..n).map(|p| vec![Value::Integer(p as i64)]).collect();
        Ok(vec![ResultTable::new(columns.into(), rows)])
    }

    /// The transaction that took the partitions from `keep` on out of the
    /// order committed (every one of them took the commit): forget them.
    /// On one host their sites stop, after the commit in their inboxes; in
    /// a cluster they live on the hosts that leave.
    pub(crate) fn retire_partitions(&mut self, keep: usize) {
        self.truncate_partitions(keep);
        retire_routes(&self.shared, keep, self.shared.link.is_none());
    }

    fn truncate_partitions(&mut self, keep: usize) {
        self.sites.truncate(keep);
        self.site_inboxes.truncate(keep);
        self.proxies.truncate(keep);
        self.remote.truncate(keep);
        self.wrote.truncate(keep);
        self.released.truncate(keep);
        self.deferred.truncate(keep);
    }

    /// Partitions another host's coordinator brought into the order, or
    /// took out of it (this host coordinates since): follow. And the
    /// routes of those it knows, which change when a copy of one is added
    /// here (`Host::add_copy_site`): its site takes the proxy's place.
    pub(crate) fn follow_partitions(&mut self) {
        let routes = self.shared.routes.load();
        if routes.active < self.sites.len() {
            self.truncate_partitions(routes.active);
        }
        for p in 0..self.sites.len().min(routes.sites.len()) {
            self.sites[p].clone_from(&routes.work[p]);
            self.site_inboxes[p].clone_from(&routes.sites[p]);
            self.proxies[p].clone_from(&routes.proxies[p]);
        }
        for p in self.sites.len()..routes.active {
            self.sites.push(routes.work[p].clone());
            self.site_inboxes.push(routes.sites[p].clone());
            self.proxies.push(routes.proxies[p].clone());
        }
    }
}

/// Route partition `p` to `inboxes` (a site's or its proxy's: start markers,
/// work), `local` if a site here holds it.
fn route_partition(shared: &Shared, p: usize, inboxes: crate::host::PartitionInboxes, local: bool) {
    shared.routes.rcu(|now| {
        let mut routes = Routes::clone(now);
        routes.sites[p] = inboxes.0.clone();
        routes.work[p] = inboxes.1.clone();
        routes.local[p] = local;
        routes
    });
}

impl crate::coordinator::Coordinator {
    /// The coordinator stops (the host shuts down): calls it holds or has
    /// queued are refused, prepared sites are told no outcome is coming
    /// from here, and every site and proxy of this host stops.
    pub(crate) fn stop(&mut self) {
        let queued = std::iter::from_fn(|| self.inbox.try_recv().ok()).filter_map(|m| match m {
            crate::messages::CoordMsg::Invoke(t) => Some(t),
            _ => None,
        });
        for t in std::mem::take(&mut self.held).into_iter().chain(queued.collect::<Vec<_>>()) {
            t.sink.deliver(t.handle, Response::failure(err!(Unavailable, "the host is shutting down"), None));
        }
        // A site prepared and waiting for an outcome is no longer reachable
        // once this host stops (its replicas hold the writes): it is told so,
        // and goes. (It reads the channel it waits on, not its inbox, and
        // while another sender of that channel lives — the routes hold this
        // coordinator's — it would wait there for good, and the host's
        // stop with it.)
        for doubt in &self.shared.in_doubt {
            let mut doubt = crate::participant::lock(doubt);
            doubt.stopped = true;
            if let Some((_, work)) = doubt.pending.take() {
                let _ = work.send(crate::messages::MpWork::Abandon);
            }
        }
        // The sites stop after the last multi-partition transaction: their
        // Shutdown follows every start marker this coordinator sent.
        // So do the ones not in the order (joining, or left) and those
        // started for copies added here since this coordinator last looked,
        // and every proxy — those of partitions a site here holds too (a
        // proxy left running would hold the host's shutdown up).
        let routes = self.shared.routes.load();
        let retired = std::mem::take(&mut *self.shared.retired.lock().unwrap_or_else(|e| e.into_inner()));
        let proxies = routes.proxies.iter().flatten().map(|(begin, _)| begin);
        for site in self.site_inboxes.iter().chain(routes.sites.iter()).chain(&retired).chain(proxies) {
            let _ = site.send(SiteMsg::Shutdown);
        }
    }
}
