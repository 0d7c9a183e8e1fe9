//! Settling prepared multi-partition transactions (connections of kind
//! `D`; the protocol is in `joule_txn`'s `participant` and `resolve`
//! modules): the coordinator asks a partition's leader what it holds in
//! doubt (`Doubt`), or tells it the outcome of the one it holds (`Settle`).
//!
//! The leader answers only once its own metadata names the asker as the
//! coordinator and itself as the partition's leader (after its repair
//! step): from then on a coordinator the metadata replaced can decide
//! nothing here, so a `Doubt` answer cannot change afterwards.

use super::*;
use joule_txn::remote::{encode, DoubtReport};

/// A coordinator's requests to a partition's leader.
#[derive(Serialize, Deserialize)]
enum DoubtRequest {
    /// What the leader's copy holds in doubt, and its last outcomes.
    Doubt { partition: u32, coordinator: HostId },
    /// End the prepared transaction `txn` as `commit` says.
    Settle { partition: u32, coordinator: HostId, txn: u64, commit: bool },
}

/// How long a leader waits for its metadata to name the asker coordinator
/// (and itself leader), and how long the asker waits for an answer.
const WAIT: Duration = Duration::from_secs(10);

impl Link {
    pub(super) fn ask_leader<T: for<'de> Deserialize<'de>>(
        &self,
        partition: u32,
        settle: Option<(u64, bool)>,
    ) -> Result<T> {
        let routing = self.routing.load();
        let leader = routing
            .leaders
            .get(partition as usize)
            .copied()
            .flatten()
            .ok_or_else(|| err!(Unavailable, "partition {partition} has no leader now"))?;
        let address = routing
            .up
            .get(&leader)
            .ok_or_else(|| err!(Unavailable, "host {leader} (leading partition {partition}) is down"))?
            .clone();
        let request = match settle {
            None => DoubtRequest::Doubt { partition, coordinator: self.me },
            Some((txn, commit)) => DoubtRequest::Settle { partition, coordinator: self.me, txn, commit },
        };
        // Settling waits for the leader's replicas too. The leader waits
        // (up to `WAIT`) for its metadata to name this host coordinator:
        // once this host's own metadata names another, that will not come,
        // and the asking ends (a host deposed while it settled spent those
        // seconds before it could stop).
        let (routing, me) = (self.routing.clone(), self.me);
        let body = self.runtime.block_on(async move {
            let deposed = async {
                while routing.load().coordinator == Some(me) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            };
            tokio::select! {
                body = request_async(&address, DOUBT, &request, 4 * WAIT) => body,
                () = deposed => Err(err!(Unavailable, "this host no longer coordinates (the metadata moved it)")),
            }
        })?;
        let answer = decode::<std::result::Result<Vec<u8>, WireError>>(&body)?.map_err(from_wire_error)?;
        decode(&answer)
    }
}

/// Serve a coordinator's request about a partition led here.
pub(super) async fn serve_doubt(mut s: tokio::net::TcpStream, host: Arc<Host>, link: Arc<Link>) {
    let Ok(body) = read_body_async(&mut s).await else { return };
    let request = match link.refuse_while_replaying() {
        Some(e) => Err(e),
        None => decode::<DoubtRequest>(&body),
    };
    let answer = match request {
        Err(e) => Err(e),
        Ok(request) => answer(request, host, &link).await,
    };
    let _ = write_frame_async(&mut s, &answer.map_err(|e| to_wire_error(&e))).await;
}

async fn answer(request: DoubtRequest, host: Arc<Host>, link: &Link) -> Result<Vec<u8>> {
    let (DoubtRequest::Doubt { partition, coordinator } | DoubtRequest::Settle { partition, coordinator, .. }) =
        request;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let routing = link.routing.load();
        if routing.coordinator == Some(coordinator) && link.leads(partition) {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(err!(
                Unavailable,
                "this host's metadata does not name host {coordinator} coordinator and this host leader of \
                 partition {partition} (coordinator {:?})",
                routing.coordinator
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Everything the stream brought is applied: an outcome that came on it
    // before this host led is in the entry read.
    link.progress.settled_last(partition).await?;
    let stop = link.stop.clone();
    tokio::task::spawn_blocking(move || match request {
        DoubtRequest::Doubt { partition, .. } => host.local_doubt(partition).and_then(|r: DoubtReport| encode(&r)),
        // Writes that failed on this copy and committed on its old leader's
        // (see `joule_txn::participant`): this copy diverged, and stops.
        DoubtRequest::Settle { partition, txn, commit: true, .. } if host.failed_in_doubt(partition, txn) => {
            let e = err!(
                Internal,
                "partition {partition}: transaction {txn} committed, and its writes failed on this host's copy, \
                 which no longer follows the partition's"
            );
            if let Some(stop) = stop.get() {
                stop(e.clone());
            }
            Err(e)
        }
        DoubtRequest::Settle { partition, txn, commit, coordinator } => {
            host.local_settle(partition, txn, commit, coordinator).and_then(|()| encode(&()))
        }
    })
    .await
    .unwrap_or_else(|_| Err(err!(Internal, "the request about prepared transactions failed")))
}
