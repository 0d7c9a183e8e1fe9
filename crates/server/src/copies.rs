//! A copy of a partition added to this host while it runs (the cluster
//! metadata's `AddCopy`; see `joule_cluster`'s `copies` module): the host
//! taking it does the work.
//!
//! Copies come from `@AddCopy(partition, host)`, or from the removal of
//! hosts that are not the last added (the metadata plans copies on the
//! hosts that stay). When the metadata names this host among a
//! partition's `adding` hosts, [`take_copies`] starts one task per such
//! partition: it starts an empty site for the partition
//! (`Host::add_copy_site`), begins the partition's copy log afresh (if
//! copy logs are kept), and asks the partition's leader for a copy the way
//! a rejoining host does (`dataplane::ask_for_copy`): the leader's site
//! freezes the partition and sends it beside the stream, then the batches
//! shipped meanwhile, then says the copy is level (`dataplane/beside.rs`);
//! from then on it waits for this host's acknowledgement of every batch as
//! for a replica's (tried again when the connection breaks; dropped only if
//! this host refuses the stream) — so the copy never lacks a batch the
//! leader released. Once the copy is level, the task proposes `CopyAdded`
//! naming the leader it came from and that leader's incarnation; from then
//! on this host is a replica.
//!
//! A copy is asked for once per leader, incarnation and copy round: asked
//! again from the same leader while the first may still come, two copies
//! would arrive one after the other (and a second copy is refused once one
//! is whole). If the leader changes first, the proposal is refused and the
//! task asks the new leader (its copy replaces what came; the old
//! leader's pieces are refused, as any batch from a host that no longer
//! leads). The task ends when this host is a replica, or no longer adding
//! the partition — given up: the site stops and the copy log goes.

use crate::cluster::Membership;
use crate::ServerContext;
use joule_cluster::{ClusterMetadata, Command, CommandResult, HostId};
use joule_common::{bail, err, Result, Value};
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a copy asked for may take to be loaded before the host says
/// it is still waiting.
const COPY_PATIENCE: Duration = Duration::from_secs(600);

/// A copy asked for: of which leader, incarnation and copy round; when.
type Asked = ((HostId, u64, u64), std::time::Instant);

/// Partitions whose copy a task here is taking.
#[derive(Default)]
pub struct Copying(Mutex<BTreeSet<u32>>);

/// Start a task for each partition `m` has this host adding and no task
/// takes yet.
pub(crate) fn take_copies(ctx: &Arc<ServerContext>, m: &ClusterMetadata) {
    let Membership::Member(node) = &ctx.membership else { return };
    let me = node.id();
    for p in (0..m.partitions.len() as u32).filter(|p| m.partitions[*p as usize].adding.contains(&me)) {
        if !ctx.copying.0.lock().unwrap_or_else(|e| e.into_inner()).insert(p) {
            continue;
        }
        let ctx = ctx.clone();
        tokio::spawn(async move {
            take_copy(&ctx, p).await;
            ctx.copying.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&p);
        });
    }
}

/// `@AddCopy(partition, host)`: give `partition` a copy on `host` (answered
/// once the metadata recorded it; the host takes the copy in the
/// background, `@Statistics TOPO` shows it among the replicas once done);
/// `@AddCopy(partition, host, 'CANCEL')` gives that up.
pub(crate) async fn add_copy(ctx: &ServerContext, params: Vec<Value>) -> Result<()> {
    let Membership::Member(node) = &ctx.membership else {
        bail!(InvalidArgument, "@AddCopy: this node is a one-host cluster; there is no other host to copy to");
    };
    let id = |i: usize, what: &str| match params.get(i) {
        Some(Value::Integer(v)) if *v >= 0 => Ok(*v as u64),
        Some(Value::Integer(v)) => bail!(InvalidArgument, "@AddCopy: no {what} {v}"),
        Some(v) => bail!(DatatypeMismatch, "@AddCopy: the {what} is an id, not {}", v.type_name()),
        None => bail!(WrongParameterCount, "@AddCopy takes a partition id and a host id (and 'CANCEL' to give up)"),
    };
    let (partition, host) = (id(0, "partition")?, id(1, "host")?);
    let partition =
        u32::try_from(partition).map_err(|_| err!(InvalidArgument, "@AddCopy: no partition {partition}"))?;
    if params.len() > 3 {
        bail!(WrongParameterCount, "@AddCopy takes at most three parameters");
    }
    let command = match params.get(2) {
        None => Command::AddCopy { partition, host },
        Some(Value::String(s)) if s.eq_ignore_ascii_case("CANCEL") => Command::CancelCopy { partition, host },
        Some(v) => bail!(InvalidArgument, "@AddCopy: the third parameter can only be 'CANCEL', not {v:?}"),
    };
    match node.propose_within(command, Duration::from_secs(10)).await? {
        CommandResult::Applied => Ok(()),
        CommandResult::Refused(why) => Err(err!(InvalidArgument, "@AddCopy: {why}")),
    }
}

fn say(ctx: &ServerContext, line: String) {
    eprintln!("joule: cluster: {line}");
    ctx.event(line);
}

/// Take the copy of partition `p` this host is adding, until it is a
/// replica or no longer adding (then its site stops and its log goes).
/// Errors are said (once per reason) and the step tried again.
async fn take_copy(ctx: &Arc<ServerContext>, p: u32) {
    let Membership::Member(node) = &ctx.membership else { return };
    let me = node.id();
    let started = std::time::Instant::now();
    let mut said = String::new();
    // The request in flight: the leader asked, its incarnation, and the
    // partition's copy round then; and when.
    let mut asked: Option<Asked> = None;
    loop {
        let m = node.metadata();
        let adding = m.partitions.get(p as usize).is_some_and(|q| q.adding.contains(&me));
        if !adding || !ctx.host.is_running() {
            break;
        }
        match step(ctx, node, &m, p, &mut asked).await {
            Ok(Some(leader)) => {
                say(
                    ctx,
                    format!(
                        "host {me} holds a copy of partition {p} from now on (taken from host {leader} in {:.1} s)",
                        started.elapsed().as_secs_f64()
                    ),
                );
                return;
            }
            Ok(None) => {}
            Err(e) => {
                let why = e.to_string();
                if why != said {
                    say(ctx, format!("partition {p}: the copy being added here: {why}; trying again"));
                    said = why;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Given up (or this host is stopping): no copy stays here unless the
    // metadata made it a replica meanwhile.
    let replica = node.metadata().partitions.get(p as usize).is_some_and(|q| q.replicas.contains(&me));
    if !replica && ctx.host.is_running() {
        ctx.host.drop_copy_site(p);
        if let Some(logs) = ctx.link.as_ref().and_then(|l| l.logs.as_ref()) {
            if let Err(e) = logs.forget(p) {
                say(ctx, format!("partition {p}: the log of the copy given up stays: {e}"));
            }
        }
        say(ctx, format!("partition {p}: the copy being added here was given up"));
    }
}

/// One look at the metadata `m`: ask the leader for a copy if none was
/// asked of it (and its incarnation, in this copy round), or record the
/// copy once it is loaded (the leader it came from, once recorded).
///
/// A copy is asked for once per leader, incarnation and round: asked
/// again from the same leader while the first may still be on its way,
/// two copies would arrive one after the other. A refusal, or a leader
/// that could not be reached, is asked again; a leader that does not
/// answer is not (the copy may come, or the leader will change).
async fn step(
    ctx: &Arc<ServerContext>,
    node: &joule_cluster::MetadataNode,
    m: &ClusterMetadata,
    p: u32,
    asked: &mut Option<Asked>,
) -> Result<Option<HostId>> {
    let me = node.id();
    let placement = &m.partitions[p as usize];
    let Some(leader) = placement.leader else { return Ok(None) };
    let Some(info) = m.hosts.get(&leader) else { return Ok(None) };
    let key = (leader, info.incarnation, placement.copy_round);
    if asked.as_ref().is_some_and(|(k, at)| *k == key && at.elapsed() > COPY_PATIENCE) && !copy_level(ctx, p, leader) {
        // Not given up here: a large copy may still be on its way, and one
        // the leader could not send is not coming. Said (once per reason,
        // by the caller) so that an operator can tell.
        bail!(
            Unavailable,
            "no whole copy from host {leader} after {COPY_PATIENCE:?}; if the leader could not send it (its log says \
             so), give it up with @AddCopy({p}, {me}, 'CANCEL') or cancel the removal"
        );
    }
    if asked.as_ref().map(|(k, _)| *k) != Some(key) {
        let host = ctx.host.clone();
        tokio::task::spawn_blocking(move || host.add_copy_site(p))
            .await
            .map_err(|e| err!(Internal, "starting the site failed: {e}"))??;
        // Whatever came before is void: only the new copy's pieces apply.
        ctx.host.expect_copy(p);
        if let Some(link) = &ctx.link {
            link.expect_copy(p);
        }
        if let Some(logs) = ctx.link.as_ref().and_then(|l| l.logs.as_ref()) {
            logs.fresh(p, false)?;
        }
        let address = joule_cluster::Routes::by_address(ctx.config.cluster.routes.clone())
            .dial(&info.internal_address)
            .to_string();
        let answered = crate::dataplane::ask_for_copy(&address, p, me).await;
        if !matches!(answered, Ok(Err(_))) {
            *asked = Some((key, std::time::Instant::now()));
        }
        answered
            .map_err(|e| e.context(format!("host {leader} did not answer the request for a copy (waiting for it)")))?
            .map_err(|e| e.context(format!("asking host {leader} for a copy")))?;
        return Ok(None);
    }
    // Loaded is not enough: the batches the leader shipped while the copy
    // travelled must have reached it too (the leader says so).
    if !copy_level(ctx, p, leader) {
        return Ok(None);
    }
    // Fault injection: the host dies with its copy whole but not yet
    // recorded (`crates/cli/tests/cluster_copies.rs`).
    joule_common::failpoint::crash_if_armed("copy_loaded_not_recorded");
    let (leader, incarnation, _) = key;
    let added = Command::CopyAdded { partition: p, host: me, leader, incarnation };
    match node.propose_within(added, Duration::from_secs(10)).await? {
        CommandResult::Applied => Ok(Some(leader)),
        // The leader changed (the next look asks the new one), or an
        // earlier attempt was applied (the next look sees a replica).
        CommandResult::Refused(why) => Err(err!(Unavailable, "the copy was not recorded: {why}")),
    }
}

/// Whether this host's copy of `p` is level with `leader`'s stream.
fn copy_level(ctx: &ServerContext, p: u32, leader: HostId) -> bool {
    ctx.link.as_ref().is_some_and(|l| l.copy_level(p, leader))
}

/// How long a leaving host waits for the copies of the partitions it leads
/// to confirm everything it ran before it hands them over anyway (a
/// replica that does not answer must not hold the removal; failure
/// detection deals with it).
const HAND_OVER_PATIENCE: Duration = Duration::from_secs(5);

/// This host is being removed and the metadata asks it to hand the
/// partitions it leads over (the removal is `draining`; see `joule_txn`'s
/// `handover` module): start the task that does it, unless one runs.
pub(crate) fn hand_over_if_leaving(ctx: &Arc<ServerContext>, m: &ClusterMetadata) {
    let Membership::Member(node) = &ctx.membership else { return };
    if !asked_to_hand_over(m, node.id()) || ctx.handing_over.swap(true, Ordering::SeqCst) {
        return;
    }
    let ctx = ctx.clone();
    tokio::spawn(async move {
        hand_over(&ctx).await;
        ctx.handing_over.store(false, Ordering::SeqCst);
        // Asked again between the task's last look and now: start anew.
        if let Membership::Member(node) = &ctx.membership {
            hand_over_if_leaving(&ctx, &node.metadata());
        }
    });
}

/// Whether `m` asks host `me` to hand the partitions it leads over.
fn asked_to_hand_over(m: &ClusterMetadata, me: HostId) -> bool {
    m.removing.as_ref().is_some_and(|r| r.draining && r.hosts.contains(&me) && !r.drained.contains(&me))
}

/// Ask each site here whose partition this host leads to hand it over,
/// wait until every copy applied what they ran (for [`HAND_OVER_PATIENCE`]
/// at most), and tell the metadata (`LeaderDrained`); again while the
/// metadata still asks (the proposal was lost).
async fn hand_over(ctx: &Arc<ServerContext>) {
    let Membership::Member(node) = &ctx.membership else { return };
    let me = node.id();
    loop {
        let m = node.metadata();
        let Some(incarnation) = m.hosts.get(&me).map(|h| h.incarnation) else { return };
        if !asked_to_hand_over(&m, me) || !ctx.host.is_running() {
            return;
        }
        let since = m.removing.as_ref().map_or(0, |r| r.draining_since);
        let led: Vec<u32> =
            (0..m.partitions.len() as u32).filter(|p| m.partitions[*p as usize].leader == Some(me)).collect();
        let started = std::time::Instant::now();
        // The coordination first: the transactions it ran write on the
        // partitions handed over next, and must be in what their copies
        // confirm.
        let coordinator_drained = match ctx.host.hand_coordination_over() {
            Some(rx) => {
                tokio::task::spawn_blocking(move || rx.recv_timeout(HAND_OVER_PATIENCE).is_ok()).await.unwrap_or(false)
            }
            None => true,
        };
        // The sites get their own time.
        let sites_started = std::time::Instant::now();
        let asked: Vec<(u32, std::sync::mpsc::Receiver<()>)> =
            led.iter().filter_map(|p| ctx.host.hand_over(*p).map(|rx| (*p, rx))).collect();
        let mut unconfirmed = Vec::new();
        for (p, rx) in asked {
            let left = HAND_OVER_PATIENCE.saturating_sub(sites_started.elapsed());
            let confirmed = tokio::task::spawn_blocking(move || rx.recv_timeout(left).is_ok()).await.unwrap_or(false);
            if !confirmed {
                unconfirmed.push(p);
            }
        }
        let took = started.elapsed().as_secs_f64() * 1000.0;
        if !coordinator_drained {
            say(
                ctx,
                format!(
                    "host {me} hands the multi-partition coordination over though a transaction it took has not \
                     ended within {} s (it is settled as on any change of coordinator)",
                    HAND_OVER_PATIENCE.as_secs()
                ),
            );
        }
        if unconfirmed.is_empty() {
            say(ctx, format!("host {me} hands partitions {led:?} over: every copy holds what it ran ({took:.0} ms)"));
        } else {
            say(
                ctx,
                format!(
                    "host {me} hands partitions {led:?} over; what it ran on {unconfirmed:?} was not confirmed by \
                     every copy within {} s (calls in flight there may end with their outcome unknown)",
                    HAND_OVER_PATIENCE.as_secs()
                ),
            );
        }
        // Fault injection: handed over but not recorded yet, calls held
        // meanwhile (`crates/cli/tests/cluster_copies.rs`).
        if joule_common::failpoint::armed("hand_over_not_recorded") {
            let pause =
                || joule_common::failpoint::pause_while_armed("hand_over_not_recorded", Duration::from_secs(60));
            let _ = tokio::task::spawn_blocking(pause).await;
        }
        let drained = Command::LeaderDrained { host: me, incarnation, since };
        match node.propose_within(drained, Duration::from_secs(10)).await {
            Ok(CommandResult::Applied) => return,
            // The hand-over began again meanwhile: drain again.
            Ok(CommandResult::Refused(why)) if asked_to_hand_over(&node.metadata(), me) => {
                say(ctx, format!("host {me}: the hand-over was not recorded (draining again): {why}"));
                // (This host's metadata may trail the group's a moment.)
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Ok(CommandResult::Refused(why)) => {
                say(ctx, format!("host {me}: the hand-over was not recorded: {why}"));
                return;
            }
            Err(e) => say(ctx, format!("host {me}: the hand-over was not recorded (trying again): {e}")),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
