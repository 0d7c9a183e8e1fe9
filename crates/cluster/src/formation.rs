//! Forming a cluster, and starting a member of one again.
//!
//! One host forms the cluster: it is started without `--join` and with the
//! number of hosts to expect. Every other host is started with `--join`
//! naming it (a list: the first that answers is used). A joining host sends
//! its ports and settings to the forming host over the internal port; the
//! forming host checks that the settings agree (host count, k-factor, sites
//! per host — a cluster whose hosts disagree on its shape must not form),
//! gives it the next host id (0 is the forming host's own) and, once the
//! expected number of hosts have joined, forms the metadata group with all
//! of them and proposes [`Command::Form`], which lays out the partitions.
//!
//! Addresses: a host is recorded at the address the forming host saw its
//! join request come from (or at its `--advertise` name), and the forming
//! host at the address the first joiner reached it by (or its own
//! `--advertise`). So the addresses recorded are ones that worked.
//!
//! A host remembers its id in `host-id` beside the metadata group's files,
//! written once the cluster has formed. Started again with that file, it
//! takes its place in the group again (the group's log and snapshot are on
//! disk) instead of joining. A directory holding group files but no
//! `host-id` is a formation that never finished: it is refused with a clear
//! message rather than guessed at.

use crate::metadata::{Command, CommandResult, HostId, HostInfo, HostState};
use crate::network::{Peer, Reply, Request, Routes};
use crate::{DetectorSettings, MetadataNode};
use joule_common::{bail, err, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// How to form or join a cluster.
#[derive(Clone, Debug)]
pub struct FormationSettings {
    /// Hosts the cluster has when it forms.
    pub host_count: usize,
    pub kfactor: u32,
    pub sites_per_host: u32,
    /// Internal addresses of hosts to join; empty: this host forms it.
    pub join: Vec<String>,
    /// Join a running cluster as a new host (elastic scaling, see
    /// `admission.rs`) rather than one being formed; `join` names members.
    pub add: bool,
    /// The name or IP other hosts and clients reach this host by; `None`:
    /// the address the forming host sees (see the module doc).
    pub advertise: Option<String>,
    /// This host's client port (recorded for other hosts and clients).
    pub client_port: u16,
    /// Where the metadata group keeps its files.
    pub dir: PathBuf,
    pub detector: DetectorSettings,
    /// Other hosts' internal addresses (as recorded, or as given in
    /// `join`) dialled elsewhere; see [`Routes`].
    pub routes: Routes,
    /// The partitions whose copies this host's copy logs hold whole (see
    /// `joule-server`'s `copylog`): a host restarted while still up in the
    /// metadata that holds every partition it has a copy of recovers from
    /// them ([`Command::HostRecovering`]) instead of rejoining by copy.
    pub logged: std::collections::BTreeSet<u32>,
}

/// A host's request to join the cluster being formed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JoinRequest {
    pub internal_port: u16,
    pub client_port: u16,
    pub advertise: Option<String>,
    /// The address the joining host reached the forming host by.
    pub contacted: String,
    pub host_count: usize,
    pub kfactor: u32,
    pub sites_per_host: u32,
    /// The data-plane protocol the joining host speaks (0: a build from
    /// before protocol versions, which does not send it).
    #[serde(default)]
    pub protocol: u16,
}

/// Join requests handed from the internal port's server to the forming
/// host's formation task, each with where it came from and a reply slot.
pub(crate) type Joins = mpsc::Sender<(JoinRequest, SocketAddr, oneshot::Sender<std::result::Result<HostId, String>>)>;

/// The internal port's answer to a join request.
pub(crate) async fn ask(
    joins: Option<&Joins>,
    request: JoinRequest,
    peer: SocketAddr,
) -> std::result::Result<HostId, String> {
    const FORMED: &str = "this host is not forming a cluster (it has formed already, or this host joined one)";
    let Some(joins) = joins else { return Err(FORMED.into()) };
    let (tx, rx) = oneshot::channel();
    if joins.send((request, peer, tx)).await.is_err() {
        return Err(FORMED.into());
    }
    rx.await.unwrap_or_else(|_| Err(FORMED.into()))
}

/// The file holding this host's id once the cluster has formed.
fn id_file(dir: &Path) -> PathBuf {
    dir.join("host-id")
}

/// Who this host is in the cluster it formed or joined: its id, and the
/// internal port the others know it by (it must come back on that port).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    pub host_id: HostId,
    pub internal_port: u16,
}

/// This host's identity, if its cluster has formed (`host-id` holds the id
/// and the internal port, one per line).
pub fn stored_identity(dir: &Path) -> Result<Option<Identity>> {
    let text = match std::fs::read_to_string(id_file(dir)) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err!(IoError, "cannot read {}: {e}", id_file(dir).display())),
    };
    let mut lines = text.lines().map(str::trim);
    match (lines.next().map(str::parse), lines.next().map(str::parse)) {
        (Some(Ok(host_id)), Some(Ok(internal_port))) => Ok(Some(Identity { host_id, internal_port })),
        _ => {
            Err(err!(CorruptData, "{} does not hold a host id and an internal port: {text:?}", id_file(dir).display()))
        }
    }
}

fn store_identity(dir: &Path, identity: Identity) -> Result<()> {
    let path = id_file(dir);
    let tmp = dir.join("host-id.tmp");
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        writeln!(f, "{}\n{}", identity.host_id, identity.internal_port)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| err!(IoError, "cannot write {}: {e}", path.display()))
}

/// Form the cluster, join it, or (with a stored host id) take this host's
/// place in it again; return once this host's metadata shows the cluster
/// formed. A restarted host is returned down: it has lost its copies, and
/// is up again only once it has rejoined ([`rejoined`]). `progress` is told
/// what is being waited for.
pub async fn form_or_join(
    settings: &FormationSettings,
    listener: tokio::net::TcpListener,
    progress: &(dyn Fn(String) + Send + Sync),
) -> Result<MetadataNode> {
    if settings.add && settings.join.is_empty() {
        bail!(InvalidArgument, "a host added to a running cluster needs --join naming one of its hosts");
    }
    if !settings.add {
        check_shape(settings.host_count, settings.kfactor)?;
    }
    std::fs::create_dir_all(&settings.dir)
        .map_err(|e| err!(IoError, "cannot create {}: {e}", settings.dir.display()))?;
    let internal_port = listener.local_addr().map_err(|e| err!(Internal, "no internal address: {e}"))?.port();
    let restarted = stored_identity(&settings.dir)?;
    if let Some(known) = restarted.filter(|known| known.internal_port != internal_port) {
        bail!(
            InvalidArgument,
            "host {} is known to the cluster at internal port {}, not {internal_port}; start it with --internal-port {} \
             (or 0, which picks the known port)",
            known.host_id,
            known.internal_port,
            known.internal_port
        );
    }
    let mut node = if let Some(Identity { host_id: id, .. }) = restarted {
        progress(format!("restarting as host {id} of the cluster"));
        MetadataNode::start_routed(id, &settings.dir, listener, settings.routes.clone()).await?
    } else {
        let leftovers = std::fs::read_dir(&settings.dir)
            .map_err(|e| err!(IoError, "cannot read {}: {e}", settings.dir.display()))?
            .next()
            .is_some();
        if leftovers {
            bail!(
                InvalidArgument,
                "{} holds metadata from a cluster formation that did not finish; remove it and start again",
                settings.dir.display()
            );
        }
        if settings.add {
            crate::admission::add_this_host(settings, listener, progress).await?
        } else if settings.join.is_empty() {
            form(settings, listener, progress).await?
        } else {
            join(settings, listener, progress).await?
        }
    };
    let mut current = wait_formed(&node, progress).await;
    store_identity(&settings.dir, Identity { host_id: node.id(), internal_port })?;
    let me = node.id();
    if restarted.is_some() {
        // What this host applied before it stopped may be stale: ask the group.
        current = node.read_within(Duration::from_secs(60)).await?;
    }
    if !current.hosts.contains_key(&me) {
        bail!(InvalidArgument, "host {me} is not a member of the cluster its metadata describes");
    }
    let incarnation = current.hosts.get(&me).map_or(0, |h| h.incarnation);
    let held: Vec<u32> = (0..current.partitions.len() as u32)
        .filter(|p| current.partitions[*p as usize].replicas.contains(&me))
        .collect();
    let logged = held.iter().all(|p| settings.logged.contains(p));
    if restarted.is_some() && current.is_recovering(me) && !logged {
        // Recovering, but its copy logs are gone since: it rejoins by copy.
        progress(format!("host {me} was recovering but its copy logs are incomplete: marking it down"));
        if let CommandResult::Refused(why) = node.propose(Command::HostFailed { host: me, incarnation: None }).await? {
            progress(format!("host {me}: {why}"));
        }
    }
    if restarted.is_some() && current.is_up(me) {
        // Restarted faster than failure detection noticed (or the whole
        // cluster stopped): this host is down until it has recovered from
        // its copy logs, or, without them, rejoined by copy.
        let command = if logged {
            progress(format!("host {me} restarted with its copies in its copy logs: recovering"));
            Command::HostRecovering { host: me, incarnation }
        } else {
            progress(format!("host {me} restarted without its data: marking it down until it rejoins"));
            Command::HostFailed { host: me, incarnation: Some(incarnation) }
        };
        match node.propose(command).await? {
            CommandResult::Applied => {}
            CommandResult::Refused(why) => progress(format!("host {me}: {why}")),
        }
    }
    if restarted.is_some() {
        // This host's own metadata may trail the group's: wait until it
        // too shows this host down, so what follows starts from there.
        // (Up again at a new incarnation: this was the last host of a
        // whole-cluster restart to recover, and the cluster resumed.)
        let again = |m: &crate::ClusterMetadata| m.hosts.get(&me).is_some_and(|h| h.incarnation != incarnation);
        node.wait_for(Duration::from_secs(60), |m| m.formed && (!m.is_up(me) || again(m))).await?;
    }
    node.detect_failures(settings.detector);
    Ok(node)
}

/// This host has its copies back (or has none to get): mark it up, and
/// wait until its own metadata shows it.
pub async fn rejoined(node: &MetadataNode, revived: Vec<u32>, copied: Vec<(u32, HostId, u64)>) -> Result<()> {
    let me = node.id();
    match node.propose(Command::HostRejoined { host: me, revived, copied }).await? {
        CommandResult::Applied => {}
        CommandResult::Refused(why) if node.metadata().is_up(me) => {
            let _ = why;
        }
        CommandResult::Refused(why) => bail!(Unavailable, "host {me} cannot rejoin: {why}"),
    }
    node.wait_for(Duration::from_secs(60), |m| m.is_up(me)).await?;
    Ok(())
}

/// Wait (saying so now and then) until the metadata shows the cluster formed.
async fn wait_formed(node: &MetadataNode, progress: &(dyn Fn(String) + Send + Sync)) -> crate::ClusterMetadata {
    loop {
        match node.wait_for(Duration::from_secs(5), |m| m.formed).await {
            Ok(m) => return m,
            Err(_) => progress(format!(
                "host {} is waiting for the cluster's metadata (the group needs a majority of its hosts)",
                node.id()
            )),
        }
    }
}

/// This host forms the cluster: take join requests until every host has
/// joined, then form the metadata group and lay out the partitions.
async fn form(
    settings: &FormationSettings,
    listener: tokio::net::TcpListener,
    progress: &(dyn Fn(String) + Send + Sync),
) -> Result<MetadataNode> {
    let internal_port = listener.local_addr().map_err(|e| err!(Internal, "no internal address: {e}"))?.port();
    let (tx, mut requests) = mpsc::channel(64);
    let node = MetadataNode::start_inner(0, &settings.dir, listener, settings.routes.clone(), Some(tx)).await?;
    let mut my_host = settings.advertise.clone();
    // Joined hosts by id: (host name or IP, internal port, client port).
    let mut joined: BTreeMap<HostId, (Option<String>, u16, u16)> = BTreeMap::new();
    joined.insert(0, (None, internal_port, settings.client_port));
    progress(format!(
        "forming a cluster of {} hosts on internal port {internal_port}: waiting for {} to join",
        settings.host_count,
        settings.host_count - 1
    ));
    while joined.len() < settings.host_count {
        let Some((request, peer, reply)) = requests.recv().await else {
            bail!(Internal, "the internal port stopped taking join requests");
        };
        if let Some(mismatch) = mismatch(settings, &request) {
            let _ = reply.send(Err(mismatch));
            continue;
        }
        let host = request.advertise.clone().unwrap_or_else(|| peer.ip().to_string());
        let same =
            |h: &(Option<String>, u16, u16)| h.0.as_deref() == Some(host.as_str()) && h.1 == request.internal_port;
        if let Some((id, _)) = joined.iter().find(|(_, h)| same(h)) {
            // A retried request (its answer was lost): the same id.
            let _ = reply.send(Ok(*id));
            continue;
        }
        let id = joined.len() as HostId;
        joined.insert(id, (Some(host.clone()), request.internal_port, request.client_port));
        if my_host.is_none() {
            // The first joiner reached this host at `contacted`: others can too.
            my_host = Some(host_part(&request.contacted));
        }
        let _ = reply.send(Ok(id));
        progress(format!(
            "host {id} joined from {} ({} of {} hosts)",
            address(&host, request.internal_port),
            joined.len(),
            settings.host_count
        ));
    }
    drop(requests);
    let my_host = my_host.unwrap_or_else(|| "127.0.0.1".to_string());
    let hosts: BTreeMap<HostId, HostInfo> = joined
        .into_iter()
        .map(|(id, (host, internal, client))| {
            let host = host.unwrap_or_else(|| my_host.clone());
            let info = HostInfo {
                internal_address: address(&host, internal),
                client_address: address(&host, client),
                state: HostState::Up,
                incarnation: 0,
            };
            (id, info)
        })
        .collect();
    node.initialize(hosts.iter().map(|(id, h)| (*id, h.internal_address.clone())).collect()).await?;
    let form = Command::Form { kfactor: settings.kfactor, sites_per_host: settings.sites_per_host, hosts };
    match node.propose(form).await? {
        CommandResult::Applied => Ok(node),
        // Another attempt formed it (a retried proposal): the same layout.
        CommandResult::Refused(_) if node.metadata().formed => Ok(node),
        CommandResult::Refused(why) => Err(err!(InvalidArgument, "the cluster cannot form: {why}")),
    }
}

/// Why a join request's settings do not fit this cluster, if they do not.
fn mismatch(settings: &FormationSettings, r: &JoinRequest) -> Option<String> {
    let mut wrong = Vec::new();
    if r.host_count != settings.host_count {
        wrong.push(format!("host count {} (this cluster: {})", r.host_count, settings.host_count));
    }
    if r.kfactor != settings.kfactor {
        wrong.push(format!("k-factor {} (this cluster: {})", r.kfactor, settings.kfactor));
    }
    if r.sites_per_host != settings.sites_per_host {
        wrong.push(format!("sites per host {} (this cluster: {})", r.sites_per_host, settings.sites_per_host));
    }
    if !wrong.is_empty() {
        return Some(format!("the joining host was started with {}", wrong.join(", ")));
    }
    crate::network::protocol_mismatch(r.protocol).map(|why| format!("the joining host cannot join: {why}"))
}

/// `host:port`, bracketing IPv6 addresses.
pub(crate) fn address(host: &str, port: u16) -> String {
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port).to_string(),
        Err(_) => format!("{host}:{port}"),
    }
}

/// Whether a cluster of `host_count` hosts can keep `kfactor` + 1 copies
/// of every partition.
pub fn check_shape(host_count: usize, kfactor: u32) -> Result<()> {
    if host_count == 0 || host_count > crate::metadata::MAX_HOSTS {
        bail!(InvalidArgument, "the host count must be between 1 and {}", crate::metadata::MAX_HOSTS);
    }
    if kfactor as usize >= host_count {
        bail!(
            InvalidArgument,
            "k-factor {kfactor} keeps {} copies of every partition, which needs at least {} hosts; the host count is \
             {host_count}",
            kfactor + 1,
            kfactor + 1
        );
    }
    Ok(())
}

/// The host part of `host:port` (or `[v6]:port`).
pub fn host_part(addr: &str) -> String {
    match addr.parse::<SocketAddr>() {
        Ok(a) => a.ip().to_string(),
        Err(_) => addr.rsplit_once(':').map_or(addr, |(h, _)| h).to_string(),
    }
}

/// This host joins the cluster another host is forming.
async fn join(
    settings: &FormationSettings,
    listener: tokio::net::TcpListener,
    progress: &(dyn Fn(String) + Send + Sync),
) -> Result<MetadataNode> {
    let internal_port = listener.local_addr().map_err(|e| err!(Internal, "no internal address: {e}"))?.port();
    let mut said = Instant::now();
    let id = 'joined: loop {
        for target in &settings.join {
            let request = JoinRequest {
                internal_port,
                client_port: settings.client_port,
                advertise: settings.advertise.clone(),
                contacted: target.clone(),
                host_count: settings.host_count,
                kfactor: settings.kfactor,
                sites_per_host: settings.sites_per_host,
                protocol: crate::network::data_protocol(),
            };
            match Peer::new(HostId::MAX, settings.routes.dial(target))
                .call(&Request::Join(request), Duration::from_secs(5))
                .await
            {
                Ok(Reply::Join(Ok(id))) => break 'joined id,
                Ok(Reply::Join(Err(why))) => bail!(InvalidArgument, "{target} did not let this host join: {why}"),
                Ok(_) => bail!(InvalidArgument, "{target} answered the join request with something else"),
                // Not up yet: keep trying.
                Err(_) => {}
            }
        }
        if said.elapsed() >= Duration::from_secs(5) {
            progress(format!("waiting for {} to take this host into the cluster", settings.join.join(", ")));
            said = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    progress(format!("joined the cluster as host {id}"));
    MetadataNode::start_routed(id, &settings.dir, listener, settings.routes.clone()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(address("10.0.0.1", 3021), "10.0.0.1:3021");
        assert_eq!(address("::1", 3021), "[::1]:3021");
        assert_eq!(address("db1.example", 3021), "db1.example:3021");
        assert_eq!(host_part("10.0.0.1:3021"), "10.0.0.1");
        assert_eq!(host_part("[::1]:3021"), "::1");
        assert_eq!(host_part("db1.example:3021"), "db1.example");
    }

    #[test]
    fn mismatched_settings_are_named() {
        let settings = FormationSettings {
            host_count: 3,
            kfactor: 1,
            sites_per_host: 2,
            join: vec![],
            add: false,
            advertise: None,
            client_port: 1,
            dir: PathBuf::new(),
            detector: DetectorSettings::default(),
            routes: Routes::default(),
            logged: Default::default(),
        };
        let mut r = JoinRequest {
            internal_port: 1,
            client_port: 1,
            advertise: None,
            contacted: "x:1".into(),
            host_count: 3,
            kfactor: 1,
            sites_per_host: 2,
            protocol: crate::network::DATA_PROTOCOL,
        };
        assert_eq!(mismatch(&settings, &r), None);
        // A build from before protocol versions sends none.
        r.protocol = 0;
        let why = mismatch(&settings, &r).unwrap();
        let expected = format!("data-plane protocol 0 and this cluster {}", crate::network::DATA_PROTOCOL);
        assert!(why.contains(&expected), "{why}");
        r.protocol = crate::network::DATA_PROTOCOL;
        r.kfactor = 0;
        r.sites_per_host = 4;
        let why = mismatch(&settings, &r).unwrap();
        assert!(why.contains("k-factor 0 (this cluster: 1)") && why.contains("sites per host 4"), "{why}");
    }

    #[test]
    fn a_join_request_of_a_build_without_protocol_versions_reads_as_protocol_0() {
        let old = r#"{"internal_port":1,"client_port":2,"advertise":null,"contacted":"x:1","host_count":3,
            "kfactor":1,"sites_per_host":2}"#;
        let r: JoinRequest = serde_json::from_str(old).unwrap();
        assert_eq!(r.protocol, 0);
    }
}
