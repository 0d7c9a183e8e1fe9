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
//! the background, throttled by `[elastic]`, until the ring is even again.
//! Should that host die before the job ends, what moved stays moved and
//! `@Rebalance()` on any host carries on.

use crate::cluster::Membership;
use crate::ServerContext;
use joule_cluster::ClusterMetadata;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Tell the operator (stderr) and the console's event log.
fn say(ctx: &ServerContext, line: String) {
    eprintln!("joule: cluster: {line}");
    ctx.event(line);
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
            follow_partitions(&ctx, &m);
            let host = ctx.host.clone();
            let count = (to - from) as u32;
            let answer = tokio::task::spawn_blocking(move || host.client().add_partitions(count)).await;
            match answer {
                Ok(r) if r.is_success() => {
                    say(&ctx, format!("partitions {from}..{} joined the cluster's transaction order", to - 1));
                    start_rebalance(&ctx);
                    break;
                }
                Ok(r) => {
                    let why = r.error.map_or_else(|| "no reason given".to_string(), |e| e.to_string());
                    if why != said {
                        say(&ctx, format!("partitions {from}..{} could not join yet (trying again): {why}", to - 1));
                        said = why;
                    }
                }
                Err(e) => say(&ctx, format!("the join of partitions {from}..{} stopped: {e}", to - 1)),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        ctx.joining.store(false, Ordering::SeqCst);
    });
}

/// After a join: move ranges to the new partitions in the background.
fn start_rebalance(ctx: &Arc<ServerContext>) {
    match crate::rebalance::invoke(ctx, &[]) {
        Ok(_) => say(ctx, "ranges move to the new partitions in the background (@Statistics REBALANCE)".to_string()),
        Err(e) => say(ctx, format!("the rebalance after the join did not start (start it with @Rebalance()): {e}")),
    }
}
