//! The repair step: before a host that has just become a partition's
//! leader serves it, every surviving copy of the partition is brought to
//! the same last batch.
//!
//! A leader's shipper sends each batch to every live replica and sends the
//! next only once all have acknowledged it, so when a leader dies its
//! surviving copies differ by at most the batch it was sending: some have
//! it, some do not (no client was answered for it, but the copies that
//! applied it must not be left ahead of the rest). With one surviving copy
//! (k = 1) there is nothing to reconcile; with more (k ≥ 2) the new leader:
//!
//! 1. asks each other live copy for the last batch it applied (`Last`),
//!    once that copy's metadata names it leader — so the copy no longer
//!    takes batches from the old leader, and its answer cannot move;
//! 2. takes the most advanced batch among theirs and its own (by term, then
//!    position on the stream) and, if it lacks it, applies it first (it
//!    must be the next one for its copy — the one batch that can differ);
//! 3. sends that batch to every copy that lacks it (`Apply`); one that has
//!    it acknowledges it as a repeat.
//!
//! Only then does the host route calls for the partition to itself, and its
//! shipper starts a stream one term above every term seen, so that a later
//! repair orders its batches after these. Meanwhile everything else is
//! routed by the new metadata (waits on hosts that failed must end), and
//! calls for the partition are refused as unavailable. A rejoined copy's
//! last position is the one its copy was taken at. Another copy that the
//! batch does not follow (it was not following) stops itself when it gets
//! it; if this host's own copy cannot be brought level, or a live copy does
//! not answer, it leaves the partition unrouted and stops, as a replica
//! that diverged does: another copy leads. A copy declared down meanwhile
//! is not waited for.
//!
//! Connections of kind `P` carry the requests, one answer each.

use super::replication::{apply_batch, Batch};
use super::*;
use joule_txn::remote::encode;

/// A new leader's requests to another copy of a partition.
#[derive(Serialize, Deserialize)]
enum RepairRequest {
    /// The last batch applied on `partition` (once everything received is
    /// applied), if `leader` leads it in the copy's metadata.
    Last { partition: u32, leader: HostId },
    /// Apply `batch` if it is the copy's next one (acknowledge it if the
    /// copy has it already), if `leader` leads its partition.
    Apply { batch: Batch, leader: HostId },
}

/// How long a new leader waits for another copy's metadata to name it
/// leader, or for the copy to answer, before it gives up on the copy while
/// the metadata still says it is up.
const PATIENCE: Duration = Duration::from_secs(30);

/// Reads whether a host is up in the newest metadata.
type IsUp<'a> = &'a (dyn Fn(HostId) -> bool + Sync);

impl Link {
    /// Follow `metadata`: repair the partitions this host now leads and did
    /// not before, then route by it (see the module doc). `is_up` reads the
    /// newest metadata (it changes while the repair runs: a copy declared
    /// down meanwhile is not waited for).
    pub(crate) async fn follow_metadata(
        self: &Arc<Self>,
        metadata: &ClusterMetadata,
        host: &Arc<Host>,
        diverged: &OnDivergence,
        is_up: IsUp<'_>,
    ) {
        let before = self.routing.load_full();
        let newly_led: Vec<u32> = (0..metadata.partitions.len() as u32)
            .filter(|p| metadata.partitions[*p as usize].leader == Some(self.me))
            .filter(|p| before.leaders.get(*p as usize).copied().flatten() != Some(self.me))
            .collect();
        // Everything else is routed by the new metadata at once: waits on
        // hosts that failed must end (a remote session holding a site for
        // a coordinator that died, say, would hold up the repair). The
        // partitions being repaired have no leader meanwhile (calls for
        // them are refused as unavailable), and replicas here follow the
        // newest leaders.
        // This host has just become the coordinator (the previous one's
        // host failed, or the whole cluster restarted): it settles what that one left in doubt before it
        // runs anything (`joule_txn`'s `resolve` module).
        if metadata.mp_coordinator == Some(self.me) && before.coordinator != Some(self.me) {
            host.take_over_coordination();
        }
        let mut interim = metadata.clone();
        for p in &newly_led {
            interim.partitions[*p as usize].leader = None;
        }
        self.update(&interim, metadata);
        let mut settled = metadata.clone();
        for partition in newly_led {
            let others: Vec<(HostId, String)> = metadata.partitions[partition as usize]
                .replicas
                .iter()
                .filter(|h| **h != self.me && metadata.is_up(**h))
                .filter_map(|h| metadata.hosts.get(h).map(|i| (*h, self.routes.dial(&i.internal_address))))
                .collect();
            if others.is_empty() {
                continue;
            }
            let started = std::time::Instant::now();
            match self.repair(partition, &others, host, is_up).await {
                Ok(None) => {}
                Ok(Some(what)) => eprintln!(
                    "joule: cluster: partition {partition}: repaired as its new leader in {:.0} ms: {what}",
                    started.elapsed().as_secs_f64() * 1000.0
                ),
                Err(e) => {
                    // Not served from here: this host stops, and another
                    // copy leads.
                    settled.partitions[partition as usize].leader = None;
                    diverged(e.context(format!("partition {partition}: the repair step as its new leader failed")));
                    break;
                }
            }
        }
        self.update(&settled, metadata);
    }

    /// Bring `partition`'s copies on `others` and here to the same last
    /// batch; what was done, if anything.
    async fn repair(
        self: &Arc<Self>,
        partition: u32,
        others: &[(HostId, String)],
        host: &Arc<Host>,
        is_up: IsUp<'_>,
    ) -> Result<Option<String>> {
        let mine = self.progress.settled_last(partition).await?;
        let mut theirs: Vec<(HostId, &str, Option<Batch>)> = Vec::new();
        for (other, address) in others {
            let request = RepairRequest::Last { partition, leader: self.me };
            // `None`: declared down meanwhile, not a copy to bring level.
            if let Some(last) = self.ask::<Option<Batch>>(*other, address, &request, is_up).await? {
                theirs.push((*other, address, last));
            }
        }
        let mine_at = mine.as_deref().map(Batch::position);
        let candidates = theirs.iter().filter_map(|(_, _, b)| b.as_ref()).chain(mine.as_deref());
        let Some(best) = candidates.max_by_key(|b| b.position()).cloned() else { return Ok(None) };
        for b in theirs.iter().filter_map(|(_, _, b)| b.as_ref()) {
            self.progress.raise_term(partition, b.term);
            if b.position() == best.position() && b.stream != best.stream {
                return Err(err!(Internal, "copies of partition {partition} hold different batches at one position"));
            }
        }
        let mut done = Vec::new();
        if mine_at < Some(best.position()) {
            if best.copy || !best.follows(mine.as_deref()) {
                return Err(err!(
                    Internal,
                    "this copy is at {mine_at:?}, more than one batch behind the most advanced copy ({:?})",
                    best.position()
                ));
            }
            // A failure here is the caller's to report (it stops this host).
            let report_later: OnDivergence = Arc::new(|_| {});
            apply_batch(host, &self.progress, self.logs.as_deref(), best.clone(), &report_later, || None).await?;
            done.push(format!("applied batch {:?} from host {} here", best.position(), best.from));
        }
        for (other, address, b) in &theirs {
            if b.as_ref().map(Batch::position) >= Some(best.position()) {
                continue;
            }
            if best.copy {
                // A copy's position holds no batch to send (and no copy
                // can be behind it: the copy was taken after every copy had
                // acknowledged everything before it).
                done.push(format!("host {other} is behind a rejoined copy's position and cannot be repaired"));
                continue;
            }
            // One that does not follow finds out and stops itself.
            let request = RepairRequest::Apply { batch: best.clone(), leader: self.me };
            match self.ask::<()>(*other, address, &request, is_up).await {
                Ok(Some(())) => done.push(format!("sent batch {:?} to host {other}", best.position())),
                Ok(None) => {}
                // That copy diverged and stops; this one carries on.
                Err(e) if e.code() == ErrorCode::Internal => done.push(format!("host {other}: {e}")),
                Err(e) => return Err(e),
            }
        }
        Ok((!done.is_empty()).then(|| done.join("; ")))
    }

    /// Send `request` to `other` and wait for its answer: `None` if `other`
    /// is declared down meanwhile. Retried while the other copy's metadata
    /// does not name this host leader yet.
    async fn ask<T: for<'de> Deserialize<'de>>(
        &self,
        other: HostId,
        address: &str,
        request: &RepairRequest,
        is_up: IsUp<'_>,
    ) -> Result<Option<T>> {
        let mut deadline = tokio::time::Instant::now() + PATIENCE;
        let mut last = String::new();
        // A copy declared down meanwhile (dead, hung, cut off) is not
        // waited for, even in the middle of an exchange.
        let down = async {
            while is_up(other) {
                tokio::time::sleep(CHECK_EVERY).await;
            }
        };
        tokio::pin!(down);
        while tokio::time::Instant::now() < deadline {
            let answer = tokio::select! {
                a = tokio::time::timeout_at(deadline, self.exchange(address, request)) => a,
                _ = &mut down => return Ok(None),
            };
            match answer {
                Ok(Ok(Ok(answer))) => return decode::<T>(&answer).map(Some),
                Ok(Ok(Err(e))) if e.code() == ErrorCode::Internal => return Err(e),
                // Still replaying its copy logs (a whole-cluster restart):
                // it will answer, however long that takes.
                Ok(Ok(Err(e))) if e.message().contains(REPLAYING) => {
                    deadline = tokio::time::Instant::now() + PATIENCE;
                    last = e.to_string();
                }
                Ok(Ok(Err(e)) | Err(e)) => last = e.to_string(),
                Err(_) => last = "no answer".into(),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !is_up(other) {
            return Ok(None);
        }
        Err(err!(Unavailable, "host {other} did not answer the repair step within {PATIENCE:?}: {last}"))
    }

    /// One request on a new connection: the answer's encoded body, or the
    /// other copy's error.
    async fn exchange(&self, address: &str, request: &RepairRequest) -> Result<Result<Vec<u8>>> {
        let body = request_async(address, REPAIR, request, PATIENCE).await?;
        let answer = decode::<std::result::Result<serde_bytes::ByteBuf, WireError>>(&body)?;
        Ok(answer.map(serde_bytes::ByteBuf::into_vec).map_err(from_wire_error))
    }
}

/// Serve a new leader's repair requests for copies held here.
pub(super) async fn serve_repair(
    mut s: tokio::net::TcpStream,
    host: Arc<Host>,
    link: Arc<Link>,
    diverged: OnDivergence,
) {
    while let Ok(body) = read_body_async(&mut s).await {
        let request = match link.refuse_while_replaying() {
            Some(e) => Err(e),
            None => decode::<RepairRequest>(&body),
        };
        let answer: Result<Vec<u8>> = match request {
            Err(e) => Err(e),
            Ok(RepairRequest::Last { partition, leader }) => match refuse(&link, partition, leader) {
                Some(e) => Err(e),
                None => link.progress.settled_last(partition).await.and_then(|last| encode(&last.as_deref())),
            },
            Ok(RepairRequest::Apply { batch, leader }) => match refuse(&link, batch.partition, leader) {
                Some(e) => Err(e),
                None => repair_apply(&host, &link, batch, leader, &diverged).await.and_then(|()| encode(&())),
            },
        };
        // The answer's body in one piece (`ByteBuf`), not byte by byte.
        let answer = answer.map(serde_bytes::ByteBuf::from).map_err(|e| to_wire_error(&e));
        if write_frame_async(&mut s, &answer).await.is_err() {
            break;
        }
    }
}

/// Apply a batch a new leader sends to bring this copy level: it must be
/// the one right after this copy's last (or one it has); anything else
/// means this copy was not following, and it stops.
async fn repair_apply(
    host: &Arc<Host>,
    link: &Arc<Link>,
    batch: Batch,
    leader: HostId,
    diverged: &OnDivergence,
) -> Result<()> {
    let partition = batch.partition;
    let last = link.progress.settled_last(partition).await?;
    if last.as_deref().map(Batch::position) >= Some(batch.position()) {
        return Ok(());
    }
    if batch.copy || !batch.follows(last.as_deref()) {
        let e = err!(
            Internal,
            "partition {partition}: host {leader}'s repair sent batch {:?}, which does not follow this copy's last \
             ({:?})",
            batch.position(),
            last.as_deref().map(Batch::position)
        );
        diverged(e.clone());
        return Err(e);
    }
    // Checked again as the batch arrives (see `ReplicaProgress::exclusive`).
    let again = {
        let link = link.clone();
        move || refuse(&link, partition, leader)
    };
    apply_batch(host, &link.progress, link.logs.as_deref(), batch, diverged, again).await
}

/// Why `leader`'s repair request for `partition` is refused here, if it is.
fn refuse(link: &Link, partition: u32, leader: HostId) -> Option<Error> {
    let named = link.latest_leader(partition);
    (named != Some(leader)).then(|| {
        err!(Unavailable, "host {leader} does not lead partition {partition} here yet (the metadata says {named:?})")
    })
}
