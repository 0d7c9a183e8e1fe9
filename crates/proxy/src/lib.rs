//! `joule proxy`: a load balancer for clients that cannot route for
//! themselves.
//!
//! It speaks VoltDB's client protocol on its own port, so any client —
//! VoltDB's, JouleDB's, or one that only knows a single address — logs in
//! to it as to a server. Behind it are *virtual hosts*: named groups of
//! backends, typically the hosts of one cluster each (one per database). A
//! client picks one by the service name in its login (VoltDB's clients send
//! `database`, the name of the group `--servers` gives).
//!
//! For each virtual host and each set of credentials that logged in, the
//! proxy keeps a pool: a [`joule_client::Client`] connected to every
//! backend of the group with those credentials. Logins are passed through
//! (the first one with a set of credentials opens the pool, and the
//! backends accept or refuse it), so the proxy holds no passwords and the
//! backends' users and roles apply unchanged. The pool does the work the
//! Rust client does for an application: it reads the cluster's topology and
//! sends each single-partition call straight to its partition's leader,
//! spreads the rest by the virtual host's balancing policy (round-robin,
//! random, weighted, least-outstanding, latency-aware — the client's
//! [`Balance`]), pings every backend (`@Ping`) and passes over one that does
//! not answer in time, and reopens lost connections in the background.
//!
//! Calls are relayed without being decoded twice: the proxy decodes an
//! invocation (to route it), the pool encodes it once, and the answer's
//! payload comes back as it came, with the client's own handle put back.
//! `@Ping` and `@Statistics PROXY` are answered by the proxy itself (see
//! [`stats`]); `@Subscribe` is acknowledged and nothing is pushed (the
//! proxy follows the topology for its clients). Everything else goes to a
//! backend, administrative procedures included — the backend decides
//! whether the login may run them.
//!
//! A backend connection's session state is shared by every client whose
//! calls it carries, so the one piece of it a client could change — the
//! current database — is fixed per virtual host (`VirtualHost::database`)
//! and `USE` through the proxy is refused.
//!
//! Failures keep VoltDB's meaning: a call no backend could take is
//! answered "server unavailable" (it never ran, a client may retry it); one
//! whose backend was lost after it went out is "response unknown" (read
//! back before retrying).

mod frontend;
pub mod stats;

pub use joule_client::Balance;
use joule_common::{err, ErrorCode, Result};
use joule_wire::HashScheme;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A named group of backends and how calls are spread over them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualHost {
    /// The service name clients log in with.
    pub name: String,
    /// Backend client addresses (`host:port`).
    pub servers: Vec<String>,
    pub balance: Balance,
    /// Send single-partition calls to their partition's leader (the
    /// backends are the hosts of one cluster). Off: every call goes by the
    /// balancing policy (for example backends that are separate databases).
    pub route_to_leaders: bool,
    /// The database (namespace) unqualified names resolve in for this
    /// virtual host's clients: every pooled connection `USE`s it. `None`:
    /// `DEFAULT`.
    pub database: Option<String>,
}

/// What the proxy serves and how.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    pub listen: SocketAddr,
    pub virtual_hosts: Vec<VirtualHost>,
    /// How often each backend connection is pinged, and how long its
    /// answer may take before the backend is passed over.
    pub health_check: joule_client::HealthCheck,
    /// Largest message accepted, either way.
    pub max_message_bytes: usize,
    /// Calls one client connection may have awaiting answers; more are
    /// answered "server unavailable" at once.
    pub max_outstanding_per_connection: usize,
    /// How long a relayed call may wait for its backend's answer before the
    /// client is told its outcome is unknown.
    pub call_timeout: Duration,
    /// Where to serve `/metrics` (Prometheus text of `@Statistics PROXY`);
    /// `None`: nowhere.
    pub http: Option<SocketAddr>,
}

impl ProxyConfig {
    /// Listen on `listen` in front of one virtual host, `database`.
    pub fn new(listen: SocketAddr, servers: Vec<String>, balance: Balance) -> ProxyConfig {
        ProxyConfig {
            listen,
            virtual_hosts: vec![VirtualHost {
                name: DEFAULT_SERVICE.into(),
                servers,
                balance,
                route_to_leaders: true,
                database: None,
            }],
            health_check: joule_client::HealthCheck { every: Duration::from_secs(1), within: Duration::from_secs(2) },
            max_message_bytes: joule_wire::frame::DEFAULT_MAX_PAYLOAD,
            max_outstanding_per_connection: 10_000,
            call_timeout: Duration::from_secs(120),
            http: None,
        }
    }

    fn check(&self) -> Result<()> {
        if self.virtual_hosts.is_empty() {
            return Err(err!(InvalidArgument, "the proxy needs at least one virtual host"));
        }
        let mut names = std::collections::BTreeSet::new();
        for v in &self.virtual_hosts {
            if v.servers.is_empty() {
                return Err(err!(InvalidArgument, "virtual host '{}' has no servers", v.name));
            }
            if !names.insert(v.name.as_str()) {
                return Err(err!(InvalidArgument, "virtual host '{}' is named twice", v.name));
            }
            if let Balance::Weighted { weights, .. } = &v.balance {
                if weights.len() != v.servers.len() || weights.iter().all(|w| *w == 0) {
                    return Err(err!(
                        InvalidArgument,
                        "virtual host '{}': {} weights for {} servers (and at least one above 0)",
                        v.name,
                        weights.len(),
                        v.servers.len()
                    ));
                }
            }
        }
        if self.health_check.every.is_zero() || self.health_check.within.is_zero() || self.call_timeout.is_zero() {
            return Err(err!(InvalidArgument, "health checks and calls need time limits above zero"));
        }
        Ok(())
    }
}

/// The service name VoltDB's clients log in with.
pub const DEFAULT_SERVICE: &str = "database";

/// A login's credentials as sent: a pool is kept per set.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Credentials {
    user: String,
    sha256: bool,
    hash: Vec<u8>,
}

/// A pool being opened or open: logins with the same credentials wait on
/// the same opening; others do not wait at all.
type PoolCell = Arc<tokio::sync::OnceCell<joule_client::Client>>;

/// A virtual host at run time: its pools and counts.
pub(crate) struct Group {
    pub(crate) config: VirtualHost,
    /// Held only to look up or insert a cell, never across a connect.
    pools: std::sync::Mutex<BTreeMap<Credentials, PoolCell>>,
    /// Each configured server's address, resolved at start (`None`: it did
    /// not resolve then), to match the pools' connections to it.
    pub(crate) resolved: Vec<Option<SocketAddr>>,
    /// Client connections logged in now.
    pub(crate) connections: AtomicUsize,
    /// Calls relayed, calls answered with a failure made here (no backend
    /// took them, or their backend was lost), and calls the proxy answered
    /// itself.
    pub(crate) calls: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) answered_here: AtomicU64,
}

impl Group {
    /// The pool for a login's credentials, opened on first use. A backend
    /// refusing the credentials is `PermissionDenied`; none reachable is
    /// `Unavailable`.
    async fn pool(&self, login: &joule_wire::Login, shared: &Shared) -> Result<joule_client::Client> {
        let key = Credentials {
            user: login.user.clone(),
            sha256: login.scheme == HashScheme::Sha256,
            hash: login.password_hash.clone(),
        };
        let cell = self.lock().entry(key.clone()).or_default().clone();
        let options = joule_client::Options {
            user: login.user.clone(),
            password_hash: Some((login.scheme, login.password_hash.clone())),
            service: DEFAULT_SERVICE.into(),
            balance: self.config.balance.clone(),
            route_to_leaders: self.config.route_to_leaders,
            health_check: Some(shared.config.health_check),
            connect_to_any: true,
            max_message_bytes: shared.config.max_message_bytes,
            call_timeout: Some(shared.config.call_timeout),
            database: self.config.database.clone(),
            ..Default::default()
        };
        let servers: Vec<&str> = self.config.servers.iter().map(String::as_str).collect();
        let opened = cell.get_or_try_init(|| joule_client::Client::connect(&servers, options)).await.cloned();
        if opened.is_err() {
            // Refused or unreachable: nothing kept for these credentials
            // (unless another login opened the pool meanwhile).
            let mut pools = self.lock();
            // Only a cell no other login waits on: one that does will try
            // again, and must find its pool here once open.
            if pools.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell) && c.get().is_none() && Arc::strong_count(c) <= 2)
            {
                pools.remove(&key);
            }
        }
        opened
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Credentials, PoolCell>> {
        self.pools.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every open pool's view of the backends (for statistics).
    pub(crate) fn backends(&self) -> Vec<joule_client::Backend> {
        self.lock().values().filter_map(|c| c.get()).flat_map(|p| p.backends()).collect()
    }

    pub(crate) fn pool_count(&self) -> usize {
        self.lock().values().filter(|c| c.get().is_some()).count()
    }
}

/// What every client connection shares.
pub(crate) struct Shared {
    pub(crate) config: ProxyConfig,
    pub(crate) groups: Vec<Arc<Group>>,
    pub(crate) started_millis: i64,
    pub(crate) next_connection: AtomicU64,
    pub(crate) shutdown: watch::Receiver<bool>,
}

impl Shared {
    fn group(&self, service: &str) -> Option<&Arc<Group>> {
        self.groups.iter().find(|g| g.config.name.eq_ignore_ascii_case(service))
    }
}

/// A running proxy; stops when dropped or on [`Proxy::shutdown`].
pub struct Proxy {
    address: SocketAddr,
    http: Option<SocketAddr>,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
}

impl Proxy {
    /// Check the configuration, bind the port and start serving (on the
    /// current tokio runtime). Backends are contacted at the first login.
    pub async fn start(config: ProxyConfig) -> Result<Proxy> {
        config.check()?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| err!(Unavailable, "cannot listen on {}: {e}", config.listen))?;
        let address = listener.local_addr().map_err(|e| err!(Unavailable, "no local address: {e}"))?;
        let http_listener = match config.http {
            Some(at) => Some(
                TcpListener::bind(at).await.map_err(|e| err!(Unavailable, "cannot listen for HTTP on {at}: {e}"))?,
            ),
            None => None,
        };
        let http = http_listener.as_ref().and_then(|l| l.local_addr().ok());
        let (stop, shutdown) = watch::channel(false);
        let mut groups = Vec::new();
        for v in &config.virtual_hosts {
            let mut resolved = Vec::new();
            for server in &v.servers {
                let first = tokio::net::lookup_host(server.as_str()).await.ok().and_then(|mut a| a.next());
                resolved.push(first);
            }
            groups.push(Arc::new(Group {
                config: v.clone(),
                pools: Default::default(),
                resolved,
                connections: AtomicUsize::new(0),
                calls: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                answered_here: AtomicU64::new(0),
            }));
        }
        let started_millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default();
        let shared = Arc::new(Shared { config, groups, started_millis, next_connection: AtomicU64::new(1), shutdown });
        let (accepting, mut stopping) = (shared.clone(), shared.shutdown.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            tokio::spawn(frontend::serve(stream, accepting.clone()));
                        }
                        // Out of descriptors and the like: wait, go on.
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    },
                    _ = stopping.changed() => return,
                }
            }
        });
        tokio::spawn(report_backend_changes(shared.clone()));
        if let Some(listener) = http_listener {
            tokio::spawn(stats::serve_metrics(listener, shared.clone()));
        }
        Ok(Proxy { address, http, shared, stop })
    }

    /// The address clients connect to.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Where `/metrics` is served, if anywhere.
    pub fn http_address(&self) -> Option<SocketAddr> {
        self.http
    }

    /// `@Statistics PROXY`'s tables, as the proxy would answer now.
    pub fn statistics(&self) -> Vec<joule_wire::VoltTable> {
        stats::tables(&self.shared)
    }

    /// Stop accepting and close every client connection.
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Print a line on stderr whenever a backend's state changes (up, down —
/// open but failing its health check —, closed), until the proxy stops.
async fn report_backend_changes(shared: Arc<Shared>) {
    let mut last: BTreeMap<(String, SocketAddr), &'static str> = BTreeMap::new();
    let mut shutdown = shared.shutdown.clone();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shutdown.changed() => return,
        }
        for group in &shared.groups {
            for (address, state) in stats::backend_states(&group.backends()) {
                let key = (group.config.name.clone(), address);
                if last.insert(key, state.name) != Some(state.name) {
                    eprintln!("joule proxy: backend {address} of '{}' is {}", group.config.name, state.name);
                }
            }
        }
    }
}

/// The status a relayed call that failed here is answered with, and its
/// message (which carries the JouleDB error code).
pub(crate) fn failure_status(e: &joule_common::Error) -> i8 {
    match e.code() {
        ErrorCode::Unavailable => joule_wire::messages::STATUS_SERVER_UNAVAILABLE,
        ErrorCode::OutcomeUnknown => joule_wire::messages::STATUS_RESPONSE_UNKNOWN,
        _ => joule_wire::messages::STATUS_GRACEFUL_FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurations_that_cannot_work_are_refused() {
        let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let ok = ProxyConfig::new(listen, vec!["a:1".into()], Balance::RoundRobin);
        assert!(ok.check().is_ok());
        let mut none = ok.clone();
        none.virtual_hosts[0].servers.clear();
        assert!(none.check().unwrap_err().to_string().contains("no servers"));
        let mut twice = ok.clone();
        twice.virtual_hosts.push(twice.virtual_hosts[0].clone());
        assert!(twice.check().unwrap_err().to_string().contains("named twice"));
        let mut weights = ok.clone();
        weights.virtual_hosts[0].balance = Balance::Weighted { weights: vec![1, 2], seed: 0 };
        assert!(weights.check().unwrap_err().to_string().contains("2 weights for 1 servers"));
        weights.virtual_hosts[0].balance = Balance::Weighted { weights: vec![0], seed: 0 };
        assert!(weights.check().is_err());
        let mut never = ok;
        never.health_check.every = Duration::ZERO;
        assert_eq!(never.check().unwrap_err().code(), ErrorCode::InvalidArgument);
    }
}
