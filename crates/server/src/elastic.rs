//! Elastic scaling, the hosts' side: routing to partitions that hosts
//! added to the cluster brought, and bringing them into the transaction
//! order.
//!
//! New hosts are admitted by the metadata group (`joule start --add`,
//! `joule-cluster`'s `admission.rs`), which records them with partitions of
//! their own, *joining*. Every host then routes to those partitions'
//! leaders ([`follow_partitions`]: proxies in the transaction layer, the
//! data plane's routing follows the metadata by itself). The host that
//! coordinates multi-partition transactions runs the join transaction
//! ([`bring_in_joining`]): the transaction layer's `add_partitions`, which
//! hands the new partitions the schema and the replicated tables' rows and
//! commits by recording `PartitionsJoined` in the metadata (the data
//! plane's `ring.rs`). It tries again every second while the partitions
//! are joining and this host coordinates; a coordinator that takes over
//! goes on where it stopped. Once they have joined, the same host starts
//! `@Rebalance()` (`rebalance.rs`): ranges move to the new partitions in
//! the background, throttled by `[elastic]`, until every partition has
//! its even share of the ring.
//! Should that host die before the job ends, what moved stays moved and
//! `@Rebalance()` on any host carries on. If every host added with the
//! joining partitions fails first, the same loop gives the join up
//! (`AbandonJoin`; their ids are retired).
//!
//! Removing hosts is the reverse ([`remove_hosts`], `@ElasticRemove`,
//! `joule cluster remove`): the metadata records the removal (the hosts
//! must hold every copy of the last partitions and nothing else, see
//! `joule-cluster`'s `removal.rs`); the coordinator host drains those
//! partitions ([`drain_removing`]: a rebalance job to the ring that gives
//! their tokens to the partitions that stay, up to an even share each —
//! `Hashinator::balanced` — throttled like any),
//! then runs the transaction layer's `remove_partitions`, which commits by
//! recording `PartitionsLeft`. The removed hosts see themselves gone from
//! the metadata and shut down ([`leave_if_removed`]) once the metadata
//! group's leader has taken them out of the group.

use crate::cluster::Membership;
use crate::ServerContext;
use joule_cluster::{ClusterMetadata, Command, CommandResult, HostId, HostState};
use joule_common::{bail, err, Result, Value};
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Tell the operator (stderr) and the console's event log.
fn say(ctx: &ServerContext, line: String) {
    eprintln!("joule: cluster: {line}");
    ctx.event(line);
}

/// Say `line(why)` unless `why` is what was said last (`said`): a step
/// retried every second is reported once per reason.
fn say_once(ctx: &ServerContext, said: &mut String, why: String, line: impl FnOnce(&str) -> String) {
    if why != *said {
        say(ctx, line(&why));
        *said = why;
    }
}

/// Run `call` on a client of this host, off the async runtime (it waits
/// for a multi-partition transaction): its failure as text.
async fn client_call(
    ctx: &Arc<ServerContext>,
    call: impl FnOnce(&mut joule_txn::Client) -> joule_txn::Response + Send + 'static,
) -> std::result::Result<(), String> {
    let host = ctx.host.clone();
    match tokio::task::spawn_blocking(move || call(&mut host.client())).await {
        Ok(r) if r.is_success() => Ok(()),
        Ok(r) => Err(r.error.map_or_else(|| "no reason given".to_string(), |e| e.to_string())),
        Err(e) => Err(format!("the call stopped: {e}")),
    }
}

/// Route to every partition `m` names (those that joined the metadata
/// since this host started included).
pub(crate) fn follow_partitions(ctx: &Arc<ServerContext>, m: &ClusterMetadata) {
    if m.partitions.len() > ctx.host.known_partitions() {
        match ctx.host.extend_partitions(m.partitions.len() as u32) {
            Ok(()) => say(
                ctx,
                format!(
                    "partitions {}..{} were added with new hosts: routing to them",
                    m.active_partitions(),
                    m.partitions.len() - 1
                ),
            ),
            Err(e) => say(ctx, format!("cannot route to the partitions added with new hosts: {e}")),
        }
    }
}

/// If partitions are joining and this host coordinates, run the join
/// transaction (once at a time) until they have joined.
pub(crate) fn bring_in_joining(ctx: &Arc<ServerContext>, m: &ClusterMetadata) {
    let Membership::Member(node) = &ctx.membership else { return };
    if !m.joining() || m.mp_coordinator != Some(node.id()) || ctx.joining.swap(true, Ordering::SeqCst) {
        return;
    }
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let mut said = String::new();
        let Membership::Member(node) = &ctx.membership else { return };
        loop {
            let m = node.metadata();
            if !m.joining() || m.mp_coordinator != Some(node.id()) || !ctx.host.is_running() {
                break;
            }
            let (from, to) = (m.active_partitions(), m.partitions.len());
            if let Some(added) = failed_joiners(&m) {
                match node.propose_within(Command::AbandonJoin, Duration::from_secs(10)).await {
                    Ok(CommandResult::Applied) => {
                        say(
                            &ctx,
                            format!(
                                "the join of hosts {added:?} was given up: they failed before their partitions \
                                 joined (their ids are retired; start the machines again with --add and an empty \
                                 --dir)"
                            ),
                        );
                        break;
                    }
                    // Joined or given up meanwhile: the loop sees which.
                    Ok(CommandResult::Refused(_)) => {}
                    Err(e) => say_once(&ctx, &mut said, e.to_string(), |why| {
                        format!("the join of hosts {added:?} cannot be given up yet (trying again): {why}")
                    }),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            follow_partitions(&ctx, &m);
            let count = (to - from) as u32;
            match client_call(&ctx, move |c| c.add_partitions(count)).await {
                Ok(()) => {
                    say(&ctx, format!("partitions {from}..{} joined the cluster's transaction order", to - 1));
                    start_rebalance(&ctx).await;
                    break;
                }
                Err(why) => say_once(&ctx, &mut said, why, |why| {
                    format!("partitions {from}..{} could not join yet (trying again): {why}", to - 1)
                }),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        ctx.joining.store(false, Ordering::SeqCst);
    });
}

/// The hosts added with the joining partitions, if every one of them has
/// failed or stopped: the join cannot finish (the partitions' only copies
/// are on them) and is to be given up.
fn failed_joiners(m: &ClusterMetadata) -> Option<BTreeSet<HostId>> {
    let added: BTreeSet<HostId> =
        m.partitions[m.active_partitions()..].iter().flat_map(|p| p.replicas.iter().copied()).collect();
    let down = |h: &HostId| m.hosts.get(h).is_none_or(|i| matches!(i.state, HostState::Failed | HostState::Stopped));
    (!added.is_empty() && added.iter().all(down)).then_some(added)
}

/// After a join: move ranges to the new partitions in the background. A
/// job still moving ranges for an earlier join aims at a ring without the
/// new partitions: it is stopped after its piece in flight, and the new
/// job carries on from where it left the ring.
async fn start_rebalance(ctx: &Arc<ServerContext>) {
    if crate::rebalance::running(ctx) {
        let _ = crate::rebalance::invoke(ctx, &[Value::from("STOP")]);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while crate::rebalance::running(ctx) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    match crate::rebalance::invoke(ctx, &[]) {
        Ok(_) => say(ctx, "ranges move to the new partitions in the background (@Statistics REBALANCE)".to_string()),
        Err(e) => say(ctx, format!("the rebalance after the join did not start (start it with @Rebalance()): {e}")),
    }
}

/// `@ElasticRemove(host, ...)`: start removing those hosts (answered once
/// the metadata recorded it; the drain runs in the background);
/// `@ElasticRemove('CANCEL')`: give up the removal under way.
pub(crate) async fn remove_hosts(ctx: &ServerContext, params: Vec<Value>) -> Result<()> {
    let Membership::Member(node) = &ctx.membership else {
        bail!(InvalidArgument, "@ElasticRemove: this node is a one-host cluster; there is no host to remove");
    };
    let command = match params.as_slice() {
        [Value::String(s)] if s.eq_ignore_ascii_case("CANCEL") => Command::CancelRemove,
        [] => bail!(WrongParameterCount, "@ElasticRemove takes the ids of the hosts to remove, or 'CANCEL'"),
        _ => {
            let mut hosts = BTreeSet::new();
            for p in &params {
                match p {
                    Value::Integer(h) if *h >= 0 => hosts.insert(*h as HostId),
                    Value::Integer(h) => bail!(InvalidArgument, "@ElasticRemove: no host {h}"),
                    v => bail!(DatatypeMismatch, "@ElasticRemove takes host ids, not {}", v.type_name()),
                };
            }
            Command::RemoveHosts { hosts }
        }
    };
    match node.propose_within(command, Duration::from_secs(10)).await? {
        CommandResult::Applied => Ok(()),
        CommandResult::Refused(why) => Err(err!(InvalidArgument, "@ElasticRemove: {why}")),
    }
}

/// If hosts are being removed and this host coordinates: drain their
/// partitions, then take them out of the transaction order (once at a
/// time), trying again each second until they left.
pub(crate) fn drain_removing(ctx: &Arc<ServerContext>, m: &ClusterMetadata) {
    let Membership::Member(node) = &ctx.membership else { return };
    // A removal that moves the hosts' copies instead needs no drain: the
    // hosts taking the copies do the work (`copies.rs`).
    let drains = m.removing.as_ref().is_some_and(|r| !r.copies);
    if !drains || m.mp_coordinator != Some(node.id()) || ctx.removing.swap(true, Ordering::SeqCst) {
        return;
    }
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let mut said = String::new();
        let Membership::Member(node) = &ctx.membership else { return };
        let mut keeping = None;
        loop {
            let m = node.metadata();
            let Some(removal) = m.removing.clone() else {
                if keeping.is_some_and(|keep| m.partitions.len() > keep) {
                    // Cancelled: ranges moved so far stay where they went.
                    let _ = crate::rebalance::invoke(&ctx, &[Value::from("STOP")]);
                }
                break;
            };
            keeping = Some(removal.keep);
            if removal.copies || m.mp_coordinator != Some(node.id()) || !ctx.host.is_running() {
                break;
            }
            let (keep, count) = (removal.keep, m.partitions.len());
            let current = ctx.host.hashinator();
            let step = if current.ring().iter().any(|(_, p)| *p as usize >= keep) {
                // Started once; while it runs, `@Rebalance` refuses another.
                match current.balanced(keep as u32) {
                    Ok(target) => match crate::rebalance::reach(&ctx, &target) {
                        Ok(true) => Ok(format!(
                            "ranges move off partitions {keep}..{} to the partitions that stay (@Statistics REBALANCE)",
                            count - 1
                        )),
                        Ok(false) => Ok(String::new()),
                        Err(e) => Err(e.to_string()),
                    },
                    Err(e) => Err(e.to_string()),
                }
            } else {
                match client_call(&ctx, move |c| c.remove_partitions(keep as u32)).await {
                    Ok(()) => {
                        say(
                            &ctx,
                            format!(
                                "partitions {keep}..{} left the cluster's transaction order; hosts {:?} leave the \
                                 cluster",
                                count - 1,
                                removal.hosts
                            ),
                        );
                        break;
                    }
                    Err(why) => Err(why),
                }
            };
            match step {
                Ok(line) if !line.is_empty() => say(&ctx, line),
                Ok(_) => {}
                Err(why) => say_once(&ctx, &mut said, why, |why| {
                    format!("partitions {keep}..{} could not leave yet (trying again): {why}", count - 1)
                }),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        ctx.removing.store(false, Ordering::SeqCst);
    });
}

/// `before` named this host and `now` retired it: once the metadata
/// group has let it go (its quorum must not count a host that is gone),
/// shut down. Waits 30 s at most for that.
pub(crate) fn leave_if_removed(ctx: &Arc<ServerContext>, before: &ClusterMetadata, now: &ClusterMetadata) {
    let Membership::Member(node) = &ctx.membership else { return };
    let me = node.id();
    if !before.hosts.contains_key(&me) || now.hosts.contains_key(&me) || !now.retired.contains(&me) {
        return;
    }
    say(ctx, format!("host {me} was removed from the cluster: shutting down once the metadata group lets it go"));
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let Membership::Member(node) = &ctx.membership else { return };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while node.in_group() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Time for this host's acknowledgement of the change to reach the
        // leader, which may need it to commit.
        tokio::time::sleep(Duration::from_secs(1)).await;
        ctx.request_shutdown();
    });
}
