//! The node's place in its cluster: the settings that form one, the
//! membership the node runs with, and what the node does when the cluster's
//! metadata changes.
//!
//! A node started alone (`joule start`, no `--host-count`, no `--join`) is
//! a one-host cluster: its metadata is laid out locally by the same rule a
//! cluster uses ([`ClusterMetadata::apply`] of a `Form`), with no metadata
//! group and no internal port. A node started with `--host-count N` (N > 1)
//! or `--join` runs a member of the metadata group (`joule-cluster`) on the
//! internal port: it forms or joins the cluster, runs failure detection, and
//! follows the metadata from then on — logging every change (hosts failing,
//! stopping or coming back, partition leaders and the multi-partition
//! coordinator moving) as an event with the details needed to diagnose it
//! afterwards, and shutting itself down when `@StopNode` stops it or when
//! the others declare it failed (a host that was hung or cut off finds the
//! cluster has moved on without it; it must not serve on its own).
//!
//! The metadata feeds `@Statistics TOPO`, `KSAFETY`, `PARTITIONCOUNT` and
//! `CLUSTER`, `joule status` and the console, and the data plane's routing
//! (`dataplane.rs`: forwarding, replication, remote sites, rejoin). A
//! restarted host takes a copy of each of its partitions from their leaders
//! before it counts as up again (`rejoin`) — unless it was still up when it
//! stopped and keeps copy logs: then it recovers (`recover`), and either
//! the whole cluster restarted and it replays its logs, or the others ran
//! on, fail it, and it rejoins by copy. Snapshot procedures are refused on
//! a multi-host cluster (`FeatureNotSupported`): snapshots of a cluster are
//! not built.

use crate::ServerContext;
use joule_cluster::{ClusterMetadata, Command, CommandResult, HostId, HostInfo, HostState, MetadataNode};
use joule_common::{bail, err, Result};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How the node takes part in a cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Hosts the cluster forms with.
    pub host_count: usize,
    /// Internal addresses of hosts to join; empty: this host forms the
    /// cluster (or is a one-host cluster).
    pub join: Vec<String>,
    pub kfactor: u32,
    /// The port other hosts reach this one on (multi-host clusters only).
    pub internal_port: u16,
    /// The name or IP other hosts and clients reach this host by.
    pub advertise: Option<String>,
    /// Failure detection: a host silent this long is declared dead.
    pub heartbeat_timeout: Duration,
    /// Other hosts' internal addresses (as the cluster records them, or as
    /// given to `join`) dialled at another address: `--route A=B`.
    pub routes: BTreeMap<String, String>,
    /// A restarted host may bring a partition back empty when no other host
    /// runs a copy of it (`--accept-data-loss`); otherwise it refuses to
    /// start.
    pub accept_data_loss: bool,
    /// Join a running cluster as a new host (`--add`, with `join` naming
    /// its members): elastic scaling adds k+1 hosts at a time, each with
    /// partitions of its own that join the transaction order and then take
    /// ranges of the ring (`@Rebalance`).
    pub add: bool,
    /// Run a metadata group even with one host (`--elastic`), so that
    /// hosts can be added to it later: a one-host cluster with copy logs,
    /// not a single node with a command log.
    pub elastic: bool,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            host_count: 1,
            join: Vec::new(),
            kfactor: 0,
            internal_port: 3021,
            advertise: None,
            heartbeat_timeout: joule_cluster::DetectorSettings::default().timeout,
            routes: BTreeMap::new(),
            accept_data_loss: false,
            add: false,
            elastic: false,
        }
    }
}

impl ClusterConfig {
    /// Whether the node runs a member of a metadata group.
    pub fn is_multi_host(&self) -> bool {
        self.host_count > 1 || !self.join.is_empty() || self.elastic
    }

    /// Settings that cannot work, refused before anything starts.
    pub fn validate(&self) -> Result<()> {
        if self.add && self.join.is_empty() {
            bail!(InvalidArgument, "--add needs --join naming a host of the running cluster");
        }
        if !self.add {
            joule_cluster::formation::check_shape(self.host_count, self.kfactor)?;
        }
        for (from, to) in &self.routes {
            for a in [from, to] {
                if a.rsplit_once(':').is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err()) {
                    bail!(InvalidArgument, "route {from}={to}: {a} is not HOST:PORT");
                }
            }
        }
        if self.heartbeat_timeout < Duration::from_millis(200) {
            bail!(InvalidArgument, "the heartbeat timeout must be at least 200 ms");
        }
        Ok(())
    }
}

/// The membership a node runs with.
pub(crate) enum Membership {
    /// A one-host cluster: metadata laid out here, nothing replicated.
    Alone(ClusterMetadata),
    /// A member of a multi-host cluster's metadata group.
    Member(MetadataNode),
}

impl Membership {
    /// The one-host cluster of a node started alone.
    pub fn alone(sites: usize, client_address: String) -> Result<Membership> {
        let mut m = ClusterMetadata::default();
        let host = HostInfo { internal_address: String::new(), client_address, state: HostState::Up, incarnation: 0 };
        let form = Command::Form { kfactor: 0, sites_per_host: sites as u32, hosts: BTreeMap::from([(0, host)]) };
        match m.apply(&form) {
            CommandResult::Applied => Ok(Membership::Alone(m)),
            CommandResult::Refused(why) => Err(err!(InvalidArgument, "{why}")),
        }
    }

    /// The metadata as this host knows it now.
    pub fn metadata(&self) -> ClusterMetadata {
        match self {
            Membership::Alone(m) => m.clone(),
            Membership::Member(node) => node.metadata(),
        }
    }

    pub fn host_id(&self) -> HostId {
        match self {
            Membership::Alone(_) => 0,
            Membership::Member(node) => node.id(),
        }
    }

    pub fn is_multi_host(&self) -> bool {
        matches!(self, Membership::Member(_))
    }

    /// The name other hosts reach this one by (`localhost` when alone).
    pub fn host_name(&self) -> String {
        let Membership::Member(node) = self else { return "localhost".to_string() };
        let address = node.metadata().hosts.get(&node.id()).map(|h| h.internal_address.clone()).unwrap_or_default();
        joule_cluster::formation::host_part(&address)
    }

    /// The host leading the metadata group (this one when alone).
    pub fn metadata_leader(&self) -> Option<HostId> {
        match self {
            Membership::Alone(_) => Some(0),
            Membership::Member(node) => node.leader(),
        }
    }

    /// The hosts that vote in the metadata group (an odd number; the
    /// others follow it as learners), as this host knows them.
    pub fn metadata_voters(&self) -> Vec<HostId> {
        match self {
            Membership::Alone(_) => vec![0],
            Membership::Member(node) => node.voters(),
        }
    }
}

/// Start a multi-host node's member of the metadata group: form or join
/// the cluster (or take its place again after a restart).
pub(crate) async fn join(
    config: &ClusterConfig,
    bind_host: &str,
    sites: usize,
    client_port: u16,
    dir: std::path::PathBuf,
    logged: std::collections::BTreeSet<u32>,
) -> Result<MetadataNode> {
    // A host coming back listens where the others know it (port 0: that port).
    let port = match joule_cluster::formation::stored_identity(&dir)? {
        Some(known) if config.internal_port == 0 => known.internal_port,
        _ => config.internal_port,
    };
    let listener = bind_reusable(bind_host, port)
        .await
        .map_err(|e| err!(Unavailable, "cannot listen on {bind_host}:{port} (internal port): {e}"))?;
    let settings = joule_cluster::FormationSettings {
        host_count: config.host_count,
        kfactor: config.kfactor,
        sites_per_host: u32::try_from(sites).map_err(|_| err!(InvalidArgument, "too many sites"))?,
        join: config.join.clone(),
        add: config.add,
        advertise: config.advertise.clone(),
        client_port,
        dir,
        detector: joule_cluster::DetectorSettings {
            interval: (config.heartbeat_timeout / 5).max(Duration::from_millis(50)),
            timeout: config.heartbeat_timeout,
        },
        routes: joule_cluster::Routes::by_address(config.routes.clone()),
        logged,
    };
    joule_cluster::form_or_join(&settings, listener, &|line| eprintln!("joule: cluster: {line}")).await
}

/// A restarted host takes its place again: for each partition it holds a
/// copy of, ask the partition's leader for the partition as it is now
/// (the stream of changes follows it), wait until every copy is loaded,
/// then mark this host up. A partition with no running copy elsewhere (a
/// k = 0 cluster, or every host stopped) is brought back from this host's
/// copy log if its copy there is current; otherwise it would come back
/// empty, and the host waits (saying so every 30 s) for another host to
/// bring it back — or, keeping no copy logs at all, stops — unless told to
/// accept the loss (`accept_data_loss`).
pub(crate) async fn rejoin(ctx: &Arc<ServerContext>) -> Result<()> {
    let Membership::Member(node) = &ctx.membership else { return Ok(()) };
    let me = node.id();
    if !*ctx.copies_ready.borrow() || !node.metadata().is_up(me) {
        let routes = joule_cluster::Routes::by_address(ctx.config.cluster.routes.clone());
        check_builds(node, &routes).await?;
    }
    if !*ctx.copies_ready.borrow() {
        // A replay that failed leaves the host not ready: it stops.
        let resumed = recover(ctx, node).await?;
        if let Some(link) = &ctx.link {
            link.replayed();
        }
        // `send_replace`: stored even if `follow` has not subscribed yet
        // (`send` drops the value when no receiver exists).
        ctx.copies_ready.send_replace(true);
        if resumed {
            return Ok(());
        }
    }
    if node.metadata().is_up(me) {
        return Ok(());
    }
    // While hosts recover from their copy logs, no partition has a leader
    // to copy from: wait for the cluster to be back. Decided on the
    // group's metadata as it is now, once this host's own copy (which the
    // data plane routes by) has caught up with it: just after a restart it
    // may trail.
    let logs = ctx.link.as_ref().and_then(|l| l.logs.clone());
    let replayable = logs.as_ref().map(|l| l.replayable_here()).unwrap_or_default();
    let routes = joule_cluster::Routes::by_address(ctx.config.cluster.routes.clone());
    let mut waiting_since: Option<std::time::Instant> = None;
    let mut unreachable_since: Option<std::time::Instant> = None;
    let m = loop {
        wait_while_restarting(ctx, node).await?;
        let m = caught_up(node).await?;
        if m.hosts.values().any(|h| h.state == HostState::Recovering) {
            continue;
        }
        // Partitions with no running copy that this host cannot bring back
        // itself: another host holding a current copy may still start and
        // bring them back; wait for it rather than stop (or come back empty
        // only when told to).
        let lacking = unrecoverable_here(&m, me, &replayable);
        // A host that keeps no copy logs at all stops instead (below): in
        // a cluster run that way, no host can bring anything back.
        if lacking.is_empty() || ctx.config.cluster.accept_data_loss || logs.is_none() {
            // A leader that does not answer may be dead and not declared
            // failed yet (just after a whole-cluster stop): asking it for a
            // copy would fail half way through this host's partitions.
            // Wait until it answers or the metadata moves on.
            match silent_leader(&m, me, &routes).await {
                None => break m,
                Some(leader) => {
                    if unreachable_since.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
                        eprintln!(
                            "joule: cluster: host {me} waits for host {leader}, the leader of partitions it holds, \
                             to answer or be declared failed"
                        );
                        unreachable_since = Some(std::time::Instant::now());
                    }
                    let mut shutdown = ctx.shutdown.subscribe();
                    tokio::select! {
                        _ = shutdown.changed() => bail!(Unavailable, "the host is shutting down"),
                        () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                    continue;
                }
            }
        }
        if waiting_since.is_none_or(|t| t.elapsed() >= Duration::from_secs(30)) {
            let line = format!(
                "host {me} waits for partitions {lacking:?}: they have no running copy, and this host's own would \
                 bring them back empty or short (it was declared failed before the cluster stopped). Start the hosts \
                 that hold their other copies; if none is left, their data is gone: stop this host and start it with \
                 --accept-data-loss to bring them back empty"
            );
            eprintln!("joule: cluster: {line}");
            if waiting_since.is_none() {
                ctx.event(line);
            }
            waiting_since = Some(std::time::Instant::now());
        }
        let mut shutdown = ctx.shutdown.subscribe();
        tokio::select! {
            _ = shutdown.changed() => bail!(Unavailable, "the host is shutting down"),
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    };
    let started = std::time::Instant::now();
    let mine: Vec<u32> =
        (0..m.partitions.len() as u32).filter(|p| m.partitions[*p as usize].replicas.contains(&me)).collect();
    let mut asked = Vec::new();
    let mut empty = Vec::new();
    let mut revived = Vec::new();
    for p in &mine {
        let placement = &m.partitions[*p as usize];
        if placement.leader.is_none_or(|l| l == me) {
            // No copy to take. A copy of it in this host's logs that no
            // leader went on without (not stale) brings it back.
            if !placement.stale.contains(&me) && replayable.contains(p) {
                revived.push(*p);
            } else {
                empty.push(*p);
            }
            continue;
        }
        // A leader goes on without this host's copy: start it afresh.
        if let Some(logs) = &logs {
            logs.fresh(*p, false)?;
        }
        match ask_for_copy(node, &routes, *p).await? {
            Some((leader, incarnation)) => asked.push((*p, leader, incarnation)),
            None => empty.push(*p),
        }
    }
    if let (false, Some(link)) = (revived.is_empty(), &ctx.link) {
        let diverged = crate::on_divergence(ctx);
        for p in &revived {
            let entries = link.replay_copy(&ctx.host, *p, &diverged).await?;
            let line = format!(
                "host {me}: partition {p} had no running copy; brought back from this host's copy log ({entries} \
                 entries)"
            );
            eprintln!("joule: cluster: {line}");
            ctx.event(line);
        }
    }
    if !empty.is_empty() {
        if !ctx.config.cluster.accept_data_loss {
            bail!(
                Unavailable,
                "partitions {empty:?} have no running copy on another host, and this host cannot bring its own back \
                 (it was declared failed before the cluster stopped, or it keeps no copy logs: --command-log off): \
                 they would come back empty. Start the hosts that hold their other copies first; if none is left, \
                 their data is gone: start this host with --accept-data-loss to bring them back empty"
            );
        }
        let line = format!("host {me}: partitions {empty:?} had no running copy elsewhere: they come back empty");
        eprintln!("joule: cluster: {line}");
        ctx.event(line);
        for p in &empty {
            if let Some(logs) = ctx.link.as_ref().and_then(|l| l.logs.as_ref()) {
                logs.fresh(*p, true)?;
            }
            ctx.host.copy_loaded(*p);
        }
    }
    // Up only once every copy is complete. A copy that never completes (its
    // leader failed, or dropped this host) ends the start with an error:
    // asking again while a first copy may still complete could mark this
    // host up with half a copy.
    // (Complete means level with the leader's stream: loaded, and every
    // batch the leader shipped while the copy travelled applied too.)
    // A copy that stops coming (nothing of it arrives for COPY_STALL: the
    // request or the copy was lost, or the leader dropped this host) ends
    // the start too; a large copy that keeps coming is waited for however
    // long it takes.
    let level = |p: u32, leader: HostId| ctx.link.as_ref().is_some_and(|l| l.copy_level(p, leader));
    let arrived = |p: u32| ctx.link.as_ref().map_or(0, |l| l.batches_arrived(p));
    let mut last_arrival: BTreeMap<u32, (u64, std::time::Instant)> =
        asked.iter().map(|(p, _, _)| (*p, (arrived(*p), std::time::Instant::now()))).collect();
    while !asked.iter().all(|(p, leader, _)| level(*p, *leader)) {
        for (p, leader, _) in asked.iter().filter(|(p, leader, _)| !level(*p, *leader)) {
            let (seen, since) = last_arrival.entry(*p).or_insert((0, std::time::Instant::now()));
            if arrived(*p) != *seen {
                (*seen, *since) = (arrived(*p), std::time::Instant::now());
            } else if since.elapsed() >= COPY_STALL {
                bail!(
                    Unavailable,
                    "partition {p}: nothing of the copy asked of host {leader} arrived for {} s (the request or the \
                     copy was lost on the way, or that host gave this one up); start this host again",
                    COPY_STALL.as_secs()
                );
            }
        }
        let now = node.metadata();
        let gone = asked
            .iter()
            .find(|(p, leader, _)| !level(*p, *leader) && now.partitions[*p as usize].leader != Some(*leader));
        if let Some((p, _, _)) = gone {
            bail!(Unavailable, "partition {p}'s leader failed while sending its copy; start this host again");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    loop {
        // Each copy goes with the leader (and its incarnation) that sent it.
        match joule_cluster::formation::rejoined(node, revived.clone(), asked.clone()).await {
            Ok(()) => break,
            // Another host started recovering meanwhile: after the restart.
            Err(_) if node.metadata().hosts.values().any(|h| h.state == HostState::Recovering) => {
                wait_while_restarting(ctx, node).await?
            }
            Err(e) => {
                return Err(e.context(
                    "start this host again (a partition it brought back from its copy log may have been brought \
                     back by another host meanwhile, or the leader a copy came from may have changed: it then takes \
                     a copy)",
                ))
            }
        }
    }
    let line = format!(
        "host {me} rejoined: copies of {} partitions loaded, {} brought back from its copy logs, in {:.1} s",
        asked.len(),
        revived.len(),
        started.elapsed().as_secs_f64()
    );
    eprintln!("joule: cluster: {line}");
    ctx.event(line);
    Ok(())
}

/// The group's metadata as it is now, once this host has applied it too
/// (read again if it changed meanwhile).
async fn caught_up(node: &MetadataNode) -> Result<ClusterMetadata> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let m = node.read_within(Duration::from_secs(30)).await?;
        let same = |local: &ClusterMetadata| local.hosts == m.hosts && local.partitions == m.partitions;
        match node.wait_for(Duration::from_secs(5), same).await {
            Ok(_) => return Ok(m),
            Err(e) if std::time::Instant::now() > deadline => {
                return Err(e.context("this host's metadata did not catch up with the group's"))
            }
            Err(_) => {}
        }
    }
}

/// Wait while any host is recovering from its copy logs (the cluster
/// restarts), saying so every 5 s.
/// A host leading one of this host's partitions that does not accept a
/// connection on its internal port within a second, if any.
async fn silent_leader(m: &ClusterMetadata, me: HostId, routes: &joule_cluster::Routes) -> Option<HostId> {
    let leaders: std::collections::BTreeSet<HostId> = m
        .partitions
        .iter()
        .filter(|p| p.replicas.contains(&me))
        .filter_map(|p| p.leader)
        .filter(|l| *l != me)
        .collect();
    for leader in leaders {
        let address = m.hosts.get(&leader).map(|h| routes.dial(&h.internal_address)).unwrap_or_default();
        let probe = tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(address.as_str()));
        if !matches!(probe.await, Ok(Ok(_))) {
            return Some(leader);
        }
    }
    None
}

/// This host's partitions that have no leader (or only this host) and that
/// it cannot bring back from its own copy log (its copy is stale, or it has
/// none): they would come back empty.
fn unrecoverable_here(m: &ClusterMetadata, me: HostId, replayable: &std::collections::BTreeSet<u32>) -> Vec<u32> {
    (0..m.partitions.len() as u32)
        .filter(|p| {
            let placement = &m.partitions[*p as usize];
            placement.replicas.contains(&me)
                && placement.leader.is_none_or(|l| l == me)
                && (placement.stale.contains(&me) || !replayable.contains(p))
        })
        .collect()
}

async fn wait_while_restarting(ctx: &ServerContext, node: &MetadataNode) -> Result<()> {
    let mut rx = node.watch();
    let mut said = std::time::Instant::now();
    let mut shutdown = ctx.shutdown.subscribe();
    loop {
        let recovering: Vec<HostId> = rx
            .borrow_and_update()
            .hosts
            .iter()
            .filter(|(_, h)| h.state == HostState::Recovering)
            .map(|(id, _)| *id)
            .collect();
        if recovering.is_empty() {
            return Ok(());
        }
        if said.elapsed() >= Duration::from_secs(5) {
            eprintln!(
                "joule: cluster: host {} waits for the cluster's restart (hosts {recovering:?} are recovering) \
                 before it rejoins",
                node.id()
            );
            said = std::time::Instant::now();
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { bail!(Unavailable, "the metadata group stopped") },
            _ = shutdown.changed() => bail!(Unavailable, "the host is shutting down"),
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// A host recovering from its copy logs waits for the rest of the cluster:
/// once no host runs on (every other host restarted too, or was failed),
/// the metadata has it up again, and it replays its copies; if the
/// cluster went on without it, the others fail it, and it rejoins by copy
/// (false).
async fn recover(ctx: &Arc<ServerContext>, node: &MetadataNode) -> Result<bool> {
    let me = node.id();
    let started = std::time::Instant::now();
    let mut said = std::time::Instant::now();
    let mut rx = node.watch();
    loop {
        let m = rx.borrow_and_update().clone();
        if m.is_up(me) {
            break;
        }
        if !m.is_recovering(me) {
            let line = format!("host {me}: the cluster went on without it; it rejoins by copy");
            eprintln!("joule: cluster: {line}");
            ctx.event(line);
            return Ok(false);
        }
        if said.elapsed() >= Duration::from_secs(5) {
            let waiting: Vec<HostId> =
                m.hosts.iter().filter(|(_, h)| h.state == HostState::Up).map(|(id, _)| *id).collect();
            eprintln!(
                "joule: cluster: host {me} is recovering from its copy logs: waiting for hosts {waiting:?} to restart \
                 (or to be declared failed)"
            );
            said = std::time::Instant::now();
        }
        let mut shutdown = ctx.shutdown.subscribe();
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { bail!(Unavailable, "the metadata group stopped") },
            _ = shutdown.changed() => bail!(Unavailable, "the host is shutting down"),
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    let Some(link) = &ctx.link else { return Ok(false) };
    let waited = started.elapsed();
    let started = std::time::Instant::now();
    let m = node.metadata();
    let mine: Vec<u32> =
        (0..m.partitions.len() as u32).filter(|p| m.partitions[*p as usize].replicas.contains(&me)).collect();
    let diverged = crate::on_divergence(ctx);
    // Every partition at once (each replays on its own site).
    let mut replays = tokio::task::JoinSet::new();
    for p in mine.iter().copied() {
        let (link, host, diverged) = (link.clone(), ctx.host.clone(), diverged.clone());
        replays.spawn(async move { link.replay_copy(&host, p, &diverged).await });
    }
    let mut entries = 0;
    while let Some(done) = replays.join_next().await {
        entries += done.map_err(|e| err!(Internal, "a copy-log replay failed: {e}"))??;
    }
    let line = format!(
        "host {me} recovered the copies of {} partitions from its copy logs ({entries} entries) in {:.1} s, after \
         waiting {:.1} s for the other hosts",
        mine.len(),
        started.elapsed().as_secs_f64(),
        waited.as_secs_f64()
    );
    eprintln!("joule: cluster: {line}");
    ctx.event(line);
    Ok(true)
}

/// A restarted host that finds a host of another build running stops
/// here, before it replays its copy logs or asks for copies: replicas of
/// other builds cannot take each other's streams (`dataplane/hello.rs`),
/// and a leader waits for a replica up or recovering in the metadata until
/// it is failed. Every other host up or recovering is asked at once (a
/// host that cannot be reached is not counted: it may be down, and checks
/// this one when it restarts). Whichever of two hosts checks second stops,
/// which need not be the one whose build differs from the cluster's.
async fn check_builds(node: &MetadataNode, routes: &joule_cluster::Routes) -> Result<()> {
    let (m, me) = (node.metadata(), node.id());
    let mut probes = tokio::task::JoinSet::new();
    let running = |s: &HostState| matches!(s, HostState::Up | HostState::Recovering);
    for (h, info) in m.hosts.iter().filter(|(h, i)| **h != me && running(&i.state)) {
        let (h, address) = (*h, routes.dial(&info.internal_address));
        probes.spawn(async move { (h, crate::dataplane::probe_build(&address).await) });
    }
    while let Some(done) = probes.join_next().await {
        if let Ok((h, Err(e))) = done {
            if e.code() == joule_common::ErrorCode::ProtocolError {
                return Err(e.context(format!("this host and host {h} run different builds")));
            }
        }
    }
    Ok(())
}

/// How long a rejoining host waits with nothing of a copy it asked for
/// arriving before it gives the start up: a leader sends a copy's first
/// piece within a second or two of the request, and the next ones as the
/// host takes them (its shipper may wait first for another copy of the
/// partition on its way, under a heavy load: `beside.rs`).
const COPY_STALL: Duration = Duration::from_secs(60);

/// Ask partition `p`'s leader for a copy (retried for a minute while it
/// cannot be reached): the leader asked and its incarnation, or `None` if
/// no other host has a running copy.
async fn ask_for_copy(node: &MetadataNode, routes: &joule_cluster::Routes, p: u32) -> Result<Option<(HostId, u64)>> {
    let me = node.id();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let now = node.read_within(Duration::from_secs(10)).await?;
        let Some(leader) = now.partitions[p as usize].leader.filter(|l| *l != me) else {
            return Ok(None);
        };
        let address = now.hosts.get(&leader).map(|h| routes.dial(&h.internal_address)).unwrap_or_default();
        let incarnation = now.hosts.get(&leader).map_or(0, |h| h.incarnation);
        match crate::dataplane::ask_for_copy(&address, p, me).await {
            Ok(Ok(())) => return Ok(Some((leader, incarnation))),
            // Asked, and no answer: the copy may be on its way. Asking again
            // would bring a second copy after the first (refused once the
            // first is whole, leaving this host waiting for a copy that is
            // never level); the wait for the copy gives up if that leader
            // goes (the caller).
            Err(e) => {
                eprintln!(
                    "joule: cluster: partition {p}: host {leader} did not answer the request for a copy ({e}); \
                     waiting for the copy it may be sending"
                );
                return Ok(Some((leader, incarnation)));
            }
            // A host of another build: asking again cannot help.
            Ok(Err(e)) if e.code() == joule_common::ErrorCode::ProtocolError => {
                return Err(e.context(format!("partition {p}: no copy from host {leader}")));
            }
            // Refused, or never reached it: nothing was sent.
            Ok(Err(e)) if std::time::Instant::now() < deadline => {
                eprintln!("joule: cluster: partition {p}: asking host {leader} for a copy: {e}; trying again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Ok(Err(e)) => return Err(e.context(format!("partition {p}: no copy from host {leader}"))),
        }
    }
}

/// Listen on `host:port` with `SO_REUSEADDR`: a host restarting after a
/// crash must get its internal port back even while connections its old
/// process had on it linger in `TIME_WAIT`.
async fn bind_reusable(host: &str, port: u16) -> std::io::Result<tokio::net::TcpListener> {
    let mut last = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        match socket.bind(addr).and_then(|()| socket.listen(1024)) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last
        .unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("{host} resolves to nothing"))))
}

/// Follow the metadata: log each change as an event, and shut the node
/// down when the metadata says it was stopped.
pub(crate) async fn follow(ctx: Arc<ServerContext>) {
    let Membership::Member(node) = &ctx.membership else { return };
    let me = node.id();
    let mut rx = node.watch();
    let mut before = rx.borrow_and_update().clone();
    let mut ready = ctx.copies_ready.subscribe();
    let mut was_ready = *ready.borrow_and_update();
    crate::elastic::follow_partitions(&ctx, &before);
    ctx.host.install_ring(before.ring.as_ref());
    if let (Some(link), true) = (&ctx.link, was_ready) {
        // Changes between starting the link and now (leaderships gained
        // meanwhile are repaired first; a recovered host's too, if its
        // copies were replayed before this started).
        let is_up = |h: HostId| node.metadata().is_up(h);
        link.follow_metadata(&before, &ctx.host, &crate::on_divergence(&ctx), &is_up).await;
    }
    if was_ready && before.is_up(me) {
        crate::elastic::bring_in_joining(&ctx, &before);
        crate::elastic::drain_removing(&ctx, &before);
        crate::copies::take_copies(&ctx, &before);
        crate::copies::hand_over_if_leaving(&ctx, &before);
    }
    let mut shutdown = ctx.shutdown.subscribe();
    loop {
        // A recovering host this one (running, up) has not managed to fail
        // yet — the proposal lost in a change of metadata leader, say — is
        // tried again every second.
        let retry = was_ready && before.is_up(me) && before.hosts.values().any(|h| h.state == HostState::Recovering);
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            _ = ready.changed() => {}
            _ = shutdown.changed() => return,
            () = tokio::time::sleep(Duration::from_secs(1)), if retry => {
                fail_recovering(&ctx, &before);
                continue;
            }
        }
        let now = rx.borrow_and_update().clone();
        let is_ready = *ready.borrow_and_update();
        // Before a new coordinator here takes over: it decides moves of
        // ranges left in doubt by this ring (and by the partitions it counts).
        crate::elastic::follow_partitions(&ctx, &now);
        ctx.host.install_ring(now.ring.as_ref());
        // A host recovering from its copy logs takes no leadership until
        // they are replayed; then it takes what the metadata gives it
        // (repairing each partition first, as any new leader does).
        if let (Some(link), true) = (&ctx.link, is_ready) {
            let is_up = |h: HostId| node.metadata().is_up(h);
            link.follow_metadata(&now, &ctx.host, &crate::on_divergence(&ctx), &is_up).await;
        }
        if is_ready && now.is_up(me) {
            fail_recovering(&ctx, &now);
            crate::elastic::bring_in_joining(&ctx, &now);
            crate::elastic::drain_removing(&ctx, &now);
            crate::copies::take_copies(&ctx, &now);
            crate::copies::hand_over_if_leaving(&ctx, &now);
        }
        crate::elastic::leave_if_removed(&ctx, &before, &now);
        let became_ready = is_ready && !was_ready;
        was_ready = is_ready;
        if became_ready && now == before {
            continue;
        }
        for line in crate::changes::changes(&before, &now) {
            eprintln!("joule: cluster: {line}");
            ctx.event(line);
        }
        if topology_changed(&before, &now) {
            crate::connection::push_topology(&ctx, &now);
        }
        let was_up = before.hosts.get(&me).map(|h| h.state) == Some(HostState::Up);
        match now.hosts.get(&me).map(|h| h.state) {
            Some(HostState::Stopped) if was_up => {
                ctx.event(format!("host {me} was stopped by @StopNode: shutting down"));
                ctx.request_shutdown();
            }
            Some(HostState::Failed) if was_up => {
                // The others have moved on without this host (it was hung or
                // cut off): serving on would split the cluster's brain.
                let why = err!(
                    Unavailable,
                    "the cluster declared host {me} failed (nothing heard from it within the heartbeat timeout); \
                     start it again to rejoin"
                );
                ctx.event(why.to_string());
                *ctx.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
                ctx.request_shutdown();
            }
            _ => {}
        }
        before = now;
    }
}

/// This host runs and is up, so the cluster goes on: a host recovering
/// from its copy logs cannot rejoin that way (its copies fall behind
/// every batch its leaders release from now on). Fail it: it rejoins by
/// copy.
fn fail_recovering(ctx: &Arc<ServerContext>, now: &ClusterMetadata) {
    for (id, h) in now.hosts.iter().filter(|(_, h)| h.state == HostState::Recovering) {
        let (ctx, host, incarnation) = (ctx.clone(), *id, h.incarnation);
        tokio::spawn(async move {
            if let Membership::Member(node) = &ctx.membership {
                let _ = node.propose(Command::HostFailed { host, incarnation: Some(incarnation) }).await;
            }
        });
    }
}

/// Why this node does not run `procedure`, if it does not: a node of a
/// multi-host cluster answers only what it can answer alone (see the
/// module doc).
pub(crate) fn refused_here(ctx: &ServerContext, procedure: &str) -> Option<joule_common::Error> {
    if ctx.cut_off.load(std::sync::atomic::Ordering::Relaxed) && !answers_alone(procedure) {
        return Some(err!(
            Unavailable,
            "host {} has lost touch with the cluster's metadata group (cut off from the other hosts?): it takes no \
             calls until it is back in touch; use another host",
            ctx.host_id
        ));
    }
    if !ctx.membership.is_multi_host()
        || !matches!(procedure, "@SnapshotSave" | "@SnapshotRestore" | "@SnapshotScan" | "@SnapshotDelete")
    {
        return None;
    }
    Some(err!(FeatureNotSupported, "{procedure}: snapshots of a cluster of several hosts are not available yet"))
}

/// What a host cut off from its cluster still answers: its own figures.
fn answers_alone(procedure: &str) -> bool {
    matches!(procedure, "@Statistics" | "@SystemInformation" | "@Ping")
}

/// Watch whether this host is in touch with a quorum of the metadata group
/// (every 100 ms): out of touch for twice the heartbeat timeout (2 s at
/// least), it refuses
/// calls (`refused_here`) — its peers may have declared it failed without
/// its hearing so, and its clients should go to another host instead of
/// waiting on it. Each change is an event.
pub(crate) async fn watch_contact(ctx: Arc<ServerContext>) {
    let Membership::Member(node) = &ctx.membership else { return };
    // Never shorter than a metadata election (0.4–0.8 s) with room to spare:
    // followers hear no leader while one is held.
    let within = (ctx.config.cluster.heartbeat_timeout * 2).max(Duration::from_secs(2));
    let mut shutdown = ctx.shutdown.subscribe();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let lost = !node.in_contact(within);
        if ctx.cut_off.swap(lost, std::sync::atomic::Ordering::Relaxed) != lost {
            let line = if lost {
                format!("host {} lost touch with the metadata group for {within:?}: refusing calls", node.id())
            } else {
                format!("host {} is back in touch with the metadata group: taking calls", node.id())
            };
            eprintln!("joule: cluster: {line}");
            ctx.event(line);
        }
    }
}

/// `@StopNode(host_id)`: take a host out of the cluster on purpose.
pub(crate) async fn stop_node(ctx: &ServerContext, host: i64) -> Result<()> {
    let Membership::Member(node) = &ctx.membership else {
        bail!(InvalidArgument, "@StopNode: this node is a one-host cluster; use @Shutdown to stop it");
    };
    let host = u64::try_from(host).map_err(|_| err!(InvalidArgument, "@StopNode: no host {host}"))?;
    match node.propose_within(Command::StopHost { host }, Duration::from_secs(10)).await? {
        CommandResult::Applied => Ok(()),
        CommandResult::Refused(why) => Err(err!(InvalidArgument, "@StopNode: {why}")),
    }
}

/// Whether clients routing by the topology must hear of the change: hosts'
/// states or addresses, partition leaders, or the coordinator moved.
fn topology_changed(before: &ClusterMetadata, now: &ClusterMetadata) -> bool {
    before.hosts != now.hosts
        || before.partitions != now.partitions
        || before.mp_coordinator != now.mp_coordinator
        || before.ring_version() != now.ring_version()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changes::tests::hosts;
    use crate::topology::{ring_table, topo_table};
    use joule_common::Value;

    #[test]
    fn settings_that_cannot_work_are_refused() {
        let ok = ClusterConfig { host_count: 3, kfactor: 1, ..Default::default() };
        ok.validate().unwrap();
        assert!(ok.is_multi_host());
        assert!(!ClusterConfig::default().is_multi_host());
        let e = ClusterConfig { host_count: 1, kfactor: 1, ..Default::default() }.validate().unwrap_err();
        assert!(e.to_string().contains("needs at least 2 hosts"), "{e}");
        ClusterConfig { host_count: 3, kfactor: 2, ..Default::default() }.validate().unwrap();
        let e = ClusterConfig { host_count: 3, kfactor: 3, ..Default::default() }.validate().unwrap_err();
        assert!(e.to_string().contains("needs at least 4 hosts"), "{e}");
        let bad_route = ClusterConfig {
            host_count: 3,
            routes: BTreeMap::from([("db1:3021".to_string(), "nowhere".to_string())]),
            ..Default::default()
        };
        assert!(bad_route.validate().unwrap_err().to_string().contains("not HOST:PORT"));
        assert!(ClusterConfig { host_count: 0, ..Default::default() }.validate().is_err());
        let fast = ClusterConfig { heartbeat_timeout: Duration::from_millis(10), ..Default::default() };
        assert!(fast.validate().is_err());
    }

    #[test]
    fn topo_names_sites_by_host_and_position() {
        let mut m = ClusterMetadata::default();
        assert_eq!(m.apply(&Command::Form { kfactor: 1, sites_per_host: 2, hosts: hosts(3) }), CommandResult::Applied);
        let t = topo_table(&m);
        assert_eq!(t.rows.len(), 4);
        // Partition 0 on hosts 0 and 1, partition 1 on hosts 2 and 0, partition 2 on 1 and 2.
        assert_eq!(t.rows[0][1], Value::from("0:0,1:0"));
        assert_eq!(t.rows[1][1], Value::from("2:0,0:1"));
        assert_eq!(t.rows[2][1], Value::from("1:1,2:1"));
        assert_eq!(t.rows[3][1], Value::from("0:2"));
    }

    #[test]
    fn the_ring_table_lists_entries_big_endian() {
        let ring = joule_common::hashinator::Hashinator::even(2, 1).unwrap().with_range_moved(0, 9, 0).unwrap();
        let t = ring_table(&ring);
        let Value::Binary(config) = &t.rows[0][1] else { panic!("{t:?}") };
        let be = |i: usize| i32::from_be_bytes(config[i..i + 4].try_into().unwrap());
        assert_eq!(be(0) as usize, ring.ring().len());
        assert_eq!(config.len(), 4 + 8 * ring.ring().len());
        for (i, (token, partition)) in ring.ring().iter().enumerate() {
            assert_eq!((be(4 + 8 * i), be(8 + 8 * i)), (*token, *partition as i32));
        }
    }

    #[test]
    fn alone_is_one_host_with_every_partition() {
        let m = Membership::alone(4, "127.0.0.1:21212".into()).unwrap().metadata();
        assert!(m.formed);
        assert_eq!(m.partitions.len(), 4);
        assert!(m.partitions.iter().all(|p| p.replicas == vec![0] && p.leader == Some(0)));
        assert_eq!(m.mp_coordinator, Some(0));
    }
}
