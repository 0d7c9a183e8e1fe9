//! The partition set: starting a partition's site, and adding partitions
//! to a running host.
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
use crate::messages::{Decider, ItemResult, MpReply, MpWork, SiteMsg, WorkItem};
use crate::procedure::Batch;
use crate::response::ResultTable;
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

/// What adding partitions installs at its commit.
pub(crate) struct Added {
    /// The ring over the larger partition count.
    pub hashinator: Arc<Hashinator>,
    /// The initiators' routes with the new partitions.
    pub routes: Arc<Routes>,
}

impl Coordinator {
    /// Add `count` partitions, held by new sites on this host, inside the
    /// transaction `ids` (every existing site has joined it). On success
    /// the new sites have joined it too and hold the replicated tables'
    /// rows; `added` is what the commit installs. On failure the new sites
    /// are stopped and forgotten (the caller rolls the others back).
    pub(crate) fn add_partitions(
        &mut self,
        count: u32,
        ids: TxnIds,
        added: &mut Option<Added>,
    ) -> Result<Vec<ResultTable>> {
        let n = self.sites.len();
        if self.shared.link.is_some() {
            bail!(FeatureNotSupported, "adding partitions to a cluster of several hosts is not built yet");
        }
        if self.log.is_some() {
            bail!(
                FeatureNotSupported,
                "adding partitions to a node with a command log is not built yet (its segments and snapshots \
                 record the partition count)"
            );
        }
        if count == 0 || n + count as usize > MAX_PARTITIONS {
            bail!(
                InvalidArgument,
                "cannot add {count} partition(s) to {n}: the count must be at least 1 and the total at most \
                 {MAX_PARTITIONS}"
            );
        }
        if let Some(t) = self.schema_db.catalog().tables().find(|t| t.partition_ranges.is_some()) {
            bail!(
                FeatureNotSupported,
                "table {} is partitioned by value ranges, which are dealt out over the partition count: adding \
                 partitions would move them",
                t.qualified_name()
            );
        }
        let replicated = self.replicated_rows()?;
        let next = Arc::new(Hashinator::over(
            self.hashinator.version() + 1,
            self.hashinator.ring().to_vec(),
            (n + count as usize) as u32,
        )?);
        let catalog = self.schema_db.catalog_arc().clone();
        let schema = self.shared.schema.load_full();
        let current = self.shared.routes.load_full();
        let mut routes = Routes { sites: current.sites.clone(), local: current.local.clone() };
        for p in n..n + count as usize {
            let (inbox_tx, inbox) = mpsc::channel();
            let (work, mp_inbox) = mpsc::channel();
            // The start marker is first in its inbox: the site joins this
            // transaction before anything else can reach it. (The receiver
            // is at hand, so the send cannot fail.)
            let _ = inbox_tx.send(SiteMsg::MpBegin(ids, None, Decider::Coordinator));
            let mut db = Database::new();
            db.load_catalog(catalog.clone())
                .and_then(|()| {
                    let start = SiteStart {
                        partition: p as u32,
                        db,
                        hashinator: self.hashinator.clone(),
                        schema: schema.clone(),
                        inbox,
                        mp_inbox,
                        resume_after: None,
                    };
                    let thread = start_site(&self.shared, start, self.reply_to.clone(), None)?;
                    self.shared.spawned.lock().unwrap_or_else(|e| e.into_inner()).push(thread);
                    Ok(())
                })
                .inspect_err(|_| self.forget_added(n))?;
            self.shared.depths[p].store(0, std::sync::atomic::Ordering::Relaxed);
            self.shared.loaded[p].store(true, std::sync::atomic::Ordering::SeqCst);
            *crate::participant::lock(&self.shared.in_doubt[p]) = Default::default();
            self.sites.push(work);
            self.site_inboxes.push(inbox_tx.clone());
            self.remote.push(false);
            self.wrote.push(false);
            self.released.push(false);
            routes.sites.push(inbox_tx);
            routes.local.push(true);
        }
        let items = (0..n + count as usize)
            .map(|p| {
                if p >= n && !replicated.is_empty() {
                    vec![WorkItem::PlaceRows(replicated.clone())]
                } else {
                    Vec::new()
                }
            })
            .collect();
        self.round(items).inspect_err(|_| self.forget_added(n))?;
        *added = Some(Added { hashinator: next, routes: Arc::new(routes) });
        let columns = vec![OutputColumn { name: "PARTITION_ID".to_string(), data_type: Some(DataType::Integer) }];
        let rows = (n..n + count as usize).map(|p| vec![Value::Integer(p as i64)]).collect();
        Ok(vec![ResultTable::new(columns.into(), rows)])
    }

    /// The rows of every replicated table (views on them included) with
    /// their ids, as partition 0 holds them in this transaction.
    fn replicated_rows(&mut self) -> Result<PartitionRows> {
        let mut items: Vec<Vec<WorkItem>> = (0..self.sites.len()).map(|_| Vec::new()).collect();
        items[0].push(WorkItem::Freeze);
        let mut results = self.round(items)?;
        let Some(ItemResult::Frozen(frozen)) = results[0].pop() else {
            bail!(Internal, "partition 0 did not hand over its frozen tables");
        };
        Ok(frozen
            .tables
            .iter()
            .filter(|t| t.replicated)
            .map(|t| (t.def.qualified_name(), t.rows.iter_with_ids().map(|(id, row)| (id, row.clone())).collect()))
            .collect())
    }

    /// Stop the sites added from partition `n` on (rolling back what they
    /// did in this transaction) and drop them from this transaction.
    fn forget_added(&mut self, n: usize) {
        for p in n..self.sites.len() {
            let _ = self.sites[p].send(MpWork::Rollback { done: None });
            let _ = self.site_inboxes[p].send(SiteMsg::Shutdown);
        }
        self.sites.truncate(n);
        self.site_inboxes.truncate(n);
        self.remote.truncate(n);
        self.wrote.truncate(n);
        self.released.truncate(n);
    }
}
