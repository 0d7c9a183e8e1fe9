//! JouleDB's network server: VoltDB's binary client protocol on the client
//! port (21212) and the admin port (21211), and its HTTP/JSON API on the
//! HTTP port (8080; see `http.rs`), in front of a transaction-layer
//! [`Host`].
//!
//! [`Server::start`] binds the ports (port 0 picks a free one; the bound
//! addresses are reported), starts the host with the configured number of
//! sites, loads a schema file if one is given, and serves each connection
//! on a tokio task (see [`connection`]). [`Server::wait`] returns when a
//! shutdown is requested — by `@Shutdown` from an administrator, by
//! [`Server::shutdown`], or by the process's signal handling in the `joule`
//! command — after the listeners stopped and the host finished its queued
//! work.

pub mod config;
mod connection;
pub mod convert;
mod http;

use joule_common::{err, Result};
use joule_txn::{Host, HostConfig, ProcedureRegistry};
use joule_wire::messages::login_result;
use joule_wire::LoginResponse;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A configured user.
#[derive(Clone, Debug, PartialEq)]
pub struct User {
    pub name: String,
    pub password: String,
    pub roles: Vec<String>,
}

/// How to run a server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Interface to listen on.
    pub host: String,
    pub client_port: u16,
    pub admin_port: u16,
    /// The HTTP/JSON API.
    pub http_port: u16,
    /// Sites (partitions) on this host.
    pub sites: usize,
    /// Data directory (created if missing).
    pub dir: PathBuf,
    /// DDL to load at start.
    pub schema: Option<PathBuf>,
    /// Largest message accepted, in bytes.
    pub max_message_bytes: usize,
    /// Unanswered requests a connection may have before it is told the
    /// server is unavailable.
    pub max_outstanding_per_connection: usize,
    /// Unanswered requests over all connections, past which new ones are
    /// told the server is unavailable.
    pub max_queued_requests: usize,
    /// With users, logins must match one; without, anyone may log in.
    pub users: Vec<User>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "0.0.0.0".to_string(),
            client_port: 21212,
            admin_port: 21211,
            http_port: 8080,
            sites: std::thread::available_parallelism().map_or(1, |n| n.get()),
            dir: PathBuf::from("joule-data"),
            schema: None,
            max_message_bytes: joule_wire::frame::DEFAULT_MAX_PAYLOAD,
            max_outstanding_per_connection: 10_000,
            max_queued_requests: 100_000,
            users: Vec::new(),
        }
    }
}

/// What every connection shares.
pub(crate) struct ServerContext {
    pub config: ServerConfig,
    pub host: Host,
    pub shutdown: watch::Sender<bool>,
    pub next_connection: AtomicU64,
    pub started_millis: i64,
    /// Requests handed to the host and not yet answered, all connections.
    pub queued: Arc<std::sync::atomic::AtomicUsize>,
    /// `@Pause`d: only the admin port takes work.
    pub paused: std::sync::atomic::AtomicBool,
}

impl ServerContext {
    pub fn request_shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    pub fn login_response(&self, connection_id: i64) -> LoginResponse {
        LoginResponse {
            version: 0,
            result: login_result::SUCCESS,
            host_id: 0,
            connection_id,
            cluster_start_millis: self.started_millis,
            leader_ipv4: 0x7f00_0001,
            build: format!("JouleDB {}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// A running server.
pub struct Server {
    ctx: Arc<ServerContext>,
    pub client_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub http_addr: SocketAddr,
}

impl Server {
    /// Bind, start the host, load the schema, and start serving.
    pub async fn start(config: ServerConfig, registry: ProcedureRegistry) -> Result<Server> {
        std::fs::create_dir_all(&config.dir)
            .map_err(|e| err!(InvalidArgument, "cannot create data directory {}: {e}", config.dir.display()))?;
        let bind = |port: u16| {
            let host = config.host.clone();
            async move {
                TcpListener::bind((host.as_str(), port))
                    .await
                    .map_err(|e| err!(Unavailable, "cannot listen on {host}:{port}: {e}"))
            }
        };
        let client = bind(config.client_port).await?;
        let admin = bind(config.admin_port).await?;
        let http = bind(config.http_port).await?;
        let host = Host::start(HostConfig { sites_per_host: config.sites, registry })?;
        if let Some(path) = &config.schema {
            let ddl = std::fs::read_to_string(path)
                .map_err(|e| err!(InvalidArgument, "cannot read schema file {}: {e}", path.display()))?;
            let r = host.client().adhoc(&ddl, vec![]);
            if let Some(e) = r.error {
                return Err(e.context(format!("schema file {}", path.display())));
            }
        }
        let started_millis =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let (shutdown, _) = watch::channel(false);
        let ctx = Arc::new(ServerContext {
            config,
            host,
            shutdown,
            next_connection: AtomicU64::new(1),
            started_millis,
            queued: Arc::default(),
            paused: Default::default(),
        });
        let client_addr = client.local_addr().map_err(|e| err!(Unavailable, "{e}"))?;
        let admin_addr = admin.local_addr().map_err(|e| err!(Unavailable, "{e}"))?;
        let http_addr = http.local_addr().map_err(|e| err!(Unavailable, "{e}"))?;
        tokio::spawn(accept(client, ctx.clone(), false));
        tokio::spawn(accept(admin, ctx.clone(), true));
        tokio::spawn(http::serve(http, ctx.clone()));
        Ok(Server { ctx, client_addr, admin_addr, http_addr })
    }

    /// Ask the server to stop.
    pub fn shutdown(&self) {
        self.ctx.request_shutdown();
    }

    /// A function that asks the server to stop, for signal handlers.
    pub fn shutdown_handle(&self) -> impl Fn() + Send + Sync + 'static {
        let ctx = self.ctx.clone();
        move || ctx.request_shutdown()
    }

    /// Wait until a shutdown is requested, then stop the host.
    pub async fn wait(self) {
        let mut rx = self.ctx.shutdown.subscribe();
        while !*rx.borrow() {
            if rx.changed().await.is_err() {
                break;
            }
        }
        let ctx = self.ctx.clone();
        let _ = tokio::task::spawn_blocking(move || ctx.host.shutdown()).await;
    }
}

async fn accept(listener: TcpListener, ctx: Arc<ServerContext>, admin: bool) {
    let mut shutdown = ctx.shutdown.subscribe();
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    tokio::spawn(connection::serve(stream, ctx.clone(), admin));
                }
                Err(e) => eprintln!("joule: accept failed: {e}"),
            },
            _ = shutdown.changed() => break,
        }
    }
}
