//! A copy of a partition added to this host while it runs (the cluster
//! metadata's `AddCopy`; see `joule_cluster`'s `copies` module): the host
//! taking it does the work.
//!
//! Copies come from `@AddCopy(partition, host)`, or from the removal of
//! hosts that are not the last added (the metadata plans copies on the
//! hosts that stay). When the metadata names this host among a
//! partition's `adding` hosts,
//! [`take_copies`] starts one task per such partition: it starts an empty
//! site for the partition (`Host::add_copy_site`), begins the partition's
//! copy log afresh (if copy logs are kept), and asks the partition's leader
//! for a copy the way a rejoining host does (`dataplane::request_copy`):
//! the leader's site freezes the partition and sends it, then its stream —
//! without waiting for this host, which is no replica yet. Once the copy
//! is loaded, the task proposes `CopyAdded` naming the leader it came from
//! and that leader's incarnation; from then on this host is a replica, and
//! the leader waits for it as for the others. If the leader changes before
//! that, the proposal is refused and the task asks the new leader for a
//! copy (which replaces what arrived). The task ends when this host is no
//! longer adding the partition (added, cancelled, or this host was taken
//! down — its copies being added are void then).
//!
//! As with a rejoin, a host the leader stopped sending to in the short
//! time between its copy's last piece and `CopyAdded` gets a gap in the
//! stream once it is a replica, and stops (its copy no longer follows).

use crate::cluster::Membership;
use crate::ServerContext;
use joule_cluster::{ClusterMetadata, Command, CommandResult};
use joule_common::{bail, err, Result, Value};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a copy may take to arrive before it is asked for again.
const COPY_PATIENCE: Duration = Duration::from_secs(600);

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
            if let Err(e) = take_copy(&ctx, p).await {
                say(&ctx, format!("partition {p}: the copy being added here was not taken: {e}"));
            }
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

async fn take_copy(ctx: &Arc<ServerContext>, p: u32) -> Result<()> {
    let Membership::Member(node) = &ctx.membership else { return Ok(()) };
    let me = node.id();
    let routes = joule_cluster::Routes::by_address(ctx.config.cluster.routes.clone());
    let started = std::time::Instant::now();
    let mut said = String::new();
    loop {
        let m = node.read_within(Duration::from_secs(10)).await?;
        if !m.partitions[p as usize].adding.contains(&me) || !ctx.host.is_running() {
            return Ok(());
        }
        let Some((leader, incarnation, address)) = m.partitions[p as usize]
            .leader
            .and_then(|l| m.hosts.get(&l).map(|h| (l, h.incarnation, routes.dial(&h.internal_address).to_string())))
        else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let host = ctx.host.clone();
        tokio::task::spawn_blocking(move || host.add_copy_site(p))
            .await
            .map_err(|e| err!(Internal, "starting the site failed: {e}"))??;
        ctx.host.expect_copy(p);
        if let Some(logs) = ctx.link.as_ref().and_then(|l| l.logs.as_ref()) {
            logs.fresh(p, false)?;
        }
        if let Err(e) = crate::dataplane::request_copy(&address, p, me).await {
            let why = e.to_string();
            if why != said {
                say(ctx, format!("partition {p}: asking host {leader} for a copy: {why}; trying again"));
                said = why;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        // The copy comes on the replication connection; wait for it whole
        // (or for its leader to change: ask the new one).
        let asked = std::time::Instant::now();
        while !ctx.host.replica_loaded(p) {
            let now = node.metadata();
            let placement = &now.partitions[p as usize];
            if placement.leader != Some(leader) || !placement.adding.contains(&me) || asked.elapsed() > COPY_PATIENCE {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !ctx.host.replica_loaded(p) {
            continue;
        }
        // Fault injection: the host dies with its copy whole but not yet
        // recorded (`crates/cli/tests/cluster_copies.rs`).
        joule_common::failpoint::crash_if_armed("copy_loaded_not_recorded");
        let added = Command::CopyAdded { partition: p, host: me, leader, incarnation };
        match node.propose_within(added, Duration::from_secs(10)).await? {
            CommandResult::Applied => {
                say(
                    ctx,
                    format!(
                        "host {me} holds a copy of partition {p} from now on (taken from host {leader} in {:.1} s)",
                        started.elapsed().as_secs_f64()
                    ),
                );
                return Ok(());
            }
            CommandResult::Refused(why) => say(ctx, format!("partition {p}: the copy was not recorded: {why}")),
        }
    }
}
