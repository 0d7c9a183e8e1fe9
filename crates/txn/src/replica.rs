//! The replica side of a cluster host: applying the records a partition's
//! leader streams ([`crate::remote::Replicated`]) to this host's copy, in
//! the leader's order, and answering what the rest of the cluster asks of a
//! copy — its prepared transactions (doubt reports and settling them), its
//! checksums, a copy of it for a rejoining host, and its copy log's
//! compaction.
//!
//! Replication is active: a replica runs the same single-partition
//! invocations and multi-partition writes its leader ran, in the same
//! order, through the same site thread that would run them as a leader
//! (`replay_mp` feeds a multi-partition record to it as a marker, one round
//! and the outcome or prepare). A [`Countdown`] collects the answers of one
//! shipped batch and tells the data plane once every record applied, which
//! is what lets the leader answer its clients.

use crate::ids::TxnIds;
use crate::messages::{Decider, MpWork, SiteMsg};
use crate::remote::{first_is_load, from_wire, gone, unframe_records, DoubtReport, Replicated, WireItem};
use crate::response::{Response, ResponseSink};
use joule_common::{bail, err, Error, Result};
use std::sync::Arc;

/// Run a replicated multi-partition record on `site` (on its own channel,
/// `work`): the marker, the writes as one round, then `last` (the commit,
/// or the prepare); `countdown` is told, on a thread of its own, whether
/// the writes ran (when `must_run`) and `finished` (which waits for
/// `last`) says it did.
///
/// A record shipped ahead of its leader's run ([`Replicated::MpPrepareAhead`])
/// need not run: a round that fails there most likely fails here too, and
/// is rolled back by the outcome that follows. The site holds such a
/// failure, and an outcome that commits it is what shows that this copy
/// diverged (see `crate::participant`).
fn replay_mp(
    site: &std::sync::mpsc::Sender<SiteMsg>,
    ids: TxnIds,
    items: Vec<WireItem>,
    (work, own): (std::sync::mpsc::Sender<MpWork>, std::sync::mpsc::Receiver<MpWork>),
    (last, must_run): (MpWork, bool),
    finished: impl FnOnce() -> bool + Send + 'static,
    countdown: Arc<Countdown>,
) {
    let (tx, rx) = std::sync::mpsc::channel();
    let items = items.into_iter().map(from_wire).collect();
    let sent = site.send(SiteMsg::MpBegin(ids, Some(own), Decider::Leader)).is_ok()
        && work.send(MpWork::Round { items, reply: Some(tx), ahead: None }).is_ok()
        && work.send(last).is_ok();
    std::thread::spawn(move || {
        let ran = rx.recv().is_ok_and(|r| r.results.is_ok() || !must_run);
        countdown.one_done(sent && ran && finished());
    });
}

fn unknown(partition: u32) -> Error {
    err!(InvalidArgument, "there is no partition {partition}")
}

/// Told whether replicated records applied.
pub type ApplyDone = Box<dyn FnOnce(Result<()>) + Send>;

/// A response sink that counts answers down and runs `done` after the last.
struct Countdown {
    left: std::sync::atomic::AtomicUsize,
    failed: std::sync::atomic::AtomicBool,
    done: std::sync::Mutex<Option<ApplyDone>>,
    partition: u32,
}

impl Countdown {
    fn one_done(&self, ok: bool) {
        if !ok {
            self.failed.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        if self.left.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
            let done = self.done.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(done) = done {
                done(if self.failed.load(std::sync::atomic::Ordering::SeqCst) {
                    Err(err!(Internal, "partition {}: a replicated record failed on this replica", self.partition))
                } else {
                    Ok(())
                });
            }
        }
    }
}

impl ResponseSink for Countdown {
    fn deliver(&self, _handle: u64, response: Response) {
        // Only transactions that committed a change are shipped: any error
        // here, an abort included, means the copies differ.
        if let Some(e) = &response.error {
            eprintln!("joule: partition {}: a replicated record failed on this replica: {e}", self.partition);
        }
        self.one_done(response.error.is_none())
    }
}

impl crate::Host {
    /// Apply `records` (framed [`Replicated`] records from the partition's
    /// leader) to this host's replica of `partition`, in order; `done`
    /// runs once all are applied.
    pub fn apply_replicated(&self, partition: u32, records: &[u8], done: ApplyDone) {
        let Some(site) = self.local_site(partition) else {
            return done(Err(err!(InvalidArgument, "partition {partition} has no replica on this host")));
        };
        let records = match unframe_records(records) {
            Ok(r) => r,
            Err(e) => return done(Err(e)),
        };
        if records.is_empty() {
            return done(Ok(()));
        }
        let countdown = Arc::new(Countdown {
            left: std::sync::atomic::AtomicUsize::new(records.len()),
            failed: Default::default(),
            done: std::sync::Mutex::new(Some(done)),
            partition,
        });
        for record in records {
            match record {
                Replicated::Sp { ids, database, procedure, sql, params } => {
                    // Resolved by the site itself, against the schema its
                    // own data is at (a schema change shipped just before
                    // is applied by then; one other sites of this host have
                    // published already is not used early).
                    let replay =
                        crate::messages::Replay { ids, database, procedure, sql, params, sink: countdown.clone() };
                    if site.send(SiteMsg::Replay(replay)).is_err() {
                        countdown.one_done(false);
                    }
                }
                Replicated::Load { catalog, ring, table, rows, last_ids, complete, decided } => {
                    let (tx, rx) = std::sync::mpsc::channel();
                    let sent = site.send(SiteMsg::Load { catalog, ring, table, rows, last_ids, done: tx }).is_ok();
                    let countdown = countdown.clone();
                    let shared = self.shared().clone();
                    std::thread::spawn(move || {
                        let ok = sent && matches!(rx.recv(), Ok(Ok(())));
                        if ok && complete {
                            // The copy's memory of outcomes comes with it.
                            if let Some(doubt) = shared.in_doubt.get(partition as usize) {
                                crate::participant::lock(doubt).decided = decided.into_iter().collect();
                            }
                            shared.loaded[partition as usize].store(true, std::sync::atomic::Ordering::SeqCst);
                        }
                        countdown.one_done(ok);
                    });
                }
                Replicated::Mp { ids, items } => {
                    let (confirm, confirmed) = std::sync::mpsc::channel();
                    let commit = MpWork::Commit { schema: None, hashinator: None, install: true, done: Some(confirm) };
                    // Applied once the site has run the writes and committed.
                    let committed = move || confirmed.recv().is_ok();
                    let last = (commit, true);
                    replay_mp(&site, ids, items, std::sync::mpsc::channel(), last, committed, countdown.clone());
                }
                Replicated::MpPrepare { ids, items } => self.hold(&site, partition, ids, items, true, &countdown),
                // Shipped ahead of the leader's run, its writes need not run.
                Replicated::MpPrepareAhead { ids, items } => self.hold(&site, partition, ids, items, false, &countdown),
                Replicated::MpDecide { txn, commit } => {
                    let doubt = crate::participant::lock(&self.shared().in_doubt[partition as usize]);
                    let (confirm, confirmed) = std::sync::mpsc::channel();
                    let sent = match (&doubt.pending, doubt.outcome(txn)) {
                        (Some((t, work)), _) if *t == txn => work
                            .send(if commit {
                                MpWork::Commit { schema: None, hashinator: None, install: true, done: Some(confirm) }
                            } else {
                                MpWork::Rollback { done: Some(confirm) }
                            })
                            .is_ok(),
                        // Sent again after a broken connection: applied already.
                        (_, Some(c)) if c == commit => confirm.send(()).is_ok(),
                        _ => {
                            eprintln!(
                                "joule: partition {partition}: the outcome of transaction {txn} arrived, but it is not \
                                 the one prepared here"
                            );
                            false
                        }
                    };
                    drop(doubt);
                    let countdown = countdown.clone();
                    std::thread::spawn(move || countdown.one_done(sent && confirmed.recv().is_ok()));
                }
            }
        }
    }

    /// Run a prepared record's writes on `site` and hold them (see
    /// [`replay_mp`] for `must_run`).
    fn hold(
        &self,
        site: &std::sync::mpsc::Sender<SiteMsg>,
        partition: u32,
        ids: TxnIds,
        items: Vec<WireItem>,
        must_run: bool,
        countdown: &Arc<Countdown>,
    ) {
        let (ready, prepared) = std::sync::mpsc::channel();
        let (work, own) = std::sync::mpsc::channel();
        // In doubt from now on: the outcome that follows on the stream (or
        // a coordinator's settle) finds the site here.
        {
            let mut doubt = crate::participant::lock(&self.shared().in_doubt[partition as usize]);
            if !doubt.stopped {
                doubt.pending = Some((ids.txn_id.0, work.clone()));
                doubt.failed = None;
            }
        }
        let prepare = MpWork::Prepare { work: work.clone(), done: ready };
        // Applied once the site has run the writes and holds them.
        let held = move || matches!(prepared.recv(), Ok(Ok(true)));
        replay_mp(site, ids, items, (work, own), (prepare, must_run), held, countdown.clone());
    }

    /// Whether `txn` is the transaction this host's copy of `partition`
    /// holds prepared and its writes failed here (see
    /// `crate::participant`): a commit of it must not be taken, and the
    /// copy no longer follows its leader's.
    pub fn failed_in_doubt(&self, partition: u32, txn: u64) -> bool {
        self.shared().doubt(partition).is_some_and(|d| crate::participant::lock(d).failed == Some(txn))
    }

    /// This host's copy of `partition`'s prepared multi-partition
    /// transactions (asked by a coordinator resolving them; see
    /// `crate::participant`).
    pub fn local_doubt(&self, partition: u32) -> Result<DoubtReport> {
        let doubt = self.shared().doubt(partition).ok_or_else(|| unknown(partition))?;
        let doubt = crate::participant::lock(doubt);
        if doubt.stopped {
            bail!(Unavailable, "this host is stopping");
        }
        Ok(DoubtReport {
            pending: doubt.pending.as_ref().map(|(t, _)| *t),
            decided: doubt.decided.iter().copied().collect(),
            highest: doubt.highest_known(),
        })
    }

    /// End the prepared transaction `txn` on this host's copy of
    /// `partition` (which leads it) as `commit` says, for the coordinator
    /// on host `by` (which must be the one the metadata names when the site
    /// takes it); returns once the replicas have the outcome. A transaction
    /// ended here already the same way is confirmed; one ended the other
    /// way, or a commit of one never prepared here, is an `Internal` error
    /// (the copies that held it are gone); a rollback of one never prepared
    /// here has nothing to do.
    pub fn local_settle(&self, partition: u32, txn: u64, commit: bool, by: u64) -> Result<()> {
        let doubt = self.shared().doubt(partition).ok_or_else(|| unknown(partition))?;
        let (done, confirmed) = std::sync::mpsc::channel();
        {
            let doubt = crate::participant::lock(doubt);
            if doubt.stopped {
                bail!(Unavailable, "this host is stopping");
            }
            let outcome = |c: bool| if c { "committed" } else { "rolled back" };
            match (&doubt.pending, doubt.outcome(txn)) {
                (Some((t, work)), _) if *t == txn => {
                    let by = Decider::RemoteCoordinator(by);
                    work.send(MpWork::Settle { txn, commit, by, done }).map_err(|_| gone(partition))?
                }
                (_, Some(c)) if c == commit => return Ok(()),
                (_, Some(c)) => {
                    bail!(Internal, "partition {partition}: transaction {txn} was {} here already", outcome(c))
                }
                (_, None) if commit => {
                    bail!(Internal, "partition {partition}: transaction {txn} was never prepared on this copy")
                }
                (_, None) => return Ok(()),
            }
        }
        confirmed.recv_timeout(std::time::Duration::from_secs(30)).map_err(|_| {
            err!(
                Unavailable,
                "partition {partition}: the outcome of transaction {txn} was not confirmed (refused, or the replicas \
                 did not acknowledge it in time)"
            )
        })
    }

    /// Per partition held here, this copy's per-table checksums (taken by
    /// each site between transactions): comparing them across hosts shows
    /// whether the replicas agree.
    pub fn local_checksums(&self, wait: std::time::Duration) -> Vec<(u32, Vec<(String, u64)>)> {
        let shared = self.shared();
        let (tx, rx) = std::sync::mpsc::channel();
        let mut asked = 0;
        let routes = shared.routes.load();
        for (site, _) in routes.sites.iter().zip(&routes.local).filter(|(_, local)| **local) {
            asked += usize::from(site.send(SiteMsg::Checksums(tx.clone())).is_ok());
        }
        drop(tx);
        let deadline = std::time::Instant::now() + wait;
        let mut out = Vec::with_capacity(asked);
        while out.len() < asked {
            match rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
                Ok(c) => out.push(c),
                Err(_) => break,
            }
        }
        out.sort_by_key(|(p, _)| *p);
        out
    }

    /// Host `host` rejoins as a replica of `partition`, which this host
    /// leads: its site hands over a copy and then the stream.
    pub fn rejoin_partition(&self, partition: u32, host: u64) -> Result<()> {
        let Some(site) = self.local_site(partition) else {
            bail!(Unavailable, "partition {partition} has no replica on this host");
        };
        let (tx, rx) = std::sync::mpsc::channel();
        site.send(SiteMsg::Rejoin { host, reply: tx }).map_err(|_| gone(partition))?;
        rx.recv().map_err(|_| gone(partition))?
    }

    /// Have `partition`'s site freeze its copy for this host's copy log
    /// (see [`ClusterLink::compact_log`]); nothing if it holds no copy.
    pub fn compact_log(&self, partition: u32, via_shipper: bool) {
        if let Some(site) = self.local_site(partition) {
            let _ = site.send(SiteMsg::CompactLog { via_shipper });
        }
    }

    /// This host restarted without its data: its copies follow their
    /// leaders' streams only once a copy from the leader has been loaded.
    pub fn expect_copies(&self) {
        for l in &self.shared().loaded {
            l.store(false, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Whether this host's copy of `partition` may take `records` now: it
    /// follows the stream already and they are not a copy, or they are
    /// part of the copy it waits for (which comes whole before the
    /// stream). A leader that still sends the stream to this host's
    /// previous process (it has not seen it restart) is refused, not
    /// followed; so is a second copy once one is whole (a copy asked for
    /// again while the first was on its way: loading it would make the
    /// whole copy partial again while it counts as loaded).
    pub fn accepts_records(&self, partition: u32, records: &[u8]) -> bool {
        let copy = first_is_load(records);
        copy != self.replica_loaded(partition)
    }

    /// This host is about to take a copy of `partition` from its leader
    /// (again): until it is loaded, only the copy's pieces apply.
    pub fn expect_copy(&self, partition: u32) {
        if (partition as usize) < self.shared().known_partitions() {
            self.shared().loaded[partition as usize].store(false, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// This host's copy of `partition` is the partition as it is (it came
    /// back empty, with no copy elsewhere to load).
    pub fn copy_loaded(&self, partition: u32) {
        if (partition as usize) < self.shared().known_partitions() {
            self.shared().loaded[partition as usize].store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Whether a copy of `partition` from its leader has been loaded here.
    pub fn replica_loaded(&self, partition: u32) -> bool {
        (partition as usize) < self.shared().known_partitions()
            && self.shared().loaded[partition as usize].load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The inbox of this host's site for `partition`, if it holds a copy.
    pub(crate) fn local_site(&self, partition: u32) -> Option<std::sync::mpsc::Sender<SiteMsg>> {
        self.shared().local_site(partition)
    }
}
