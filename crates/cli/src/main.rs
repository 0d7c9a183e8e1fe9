//! The `joule` command.
//!
//! `joule start` starts a node: VoltDB's client protocol on the client and
//! admin ports, in front of a host with one site per core (see
//! `joule-server`); it prints one line when ready and stops on SIGINT,
//! SIGTERM or `@Shutdown`. `joule sql` is the SQL shell (see `shell.rs`),
//! connecting to a server; with `--embedded` it runs SQL against an
//! in-process, in-memory database instead, which is handy for trying the
//! engine without a server. `joule snapshot save|scan|restore|delete`
//! wraps the snapshot system procedures (see `snapshot_cmd.rs`), `joule
//! rebalance` runs and follows `@Rebalance` (see `rebalance_cmd.rs`). `joule
//! proxy` runs the load balancer (see `proxy_cmd.rs` and `joule-proxy`).
//! `joule cluster remove` takes hosts out of a running cluster (see
//! `cluster_cmd.rs`).

mod bench;
mod cluster_cmd;
mod proxy_cmd;
mod rebalance_cmd;
mod shell;
mod snapshot_cmd;
mod status;

use clap::{Parser, Subcommand};
use joule_engine::{Database, ExecResult};
use std::io::Read;
use std::process::ExitCode;

/// mimalloc: fast small allocations for rows and values (see
/// docs/performance.md for what it changes).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "joule", version, about = "JouleDB: an in-memory, partitioned, ACID SQL database")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a node.
    Start(StartArgs),
    /// The SQL shell (VoltDB sqlcmd-compatible): connects to a server.
    Sql(SqlArgs),
    /// Save, list, restore and delete snapshots of a running node.
    #[command(subcommand)]
    Snapshot(snapshot_cmd::SnapshotCommand),
    /// Load a running node with a workload (voter, kv, tpcb) and report.
    Bench(bench::BenchArgs),
    /// Move ranges of the hashinator ring between partitions in the
    /// background (@Rebalance) and follow the progress.
    Rebalance(rebalance_cmd::RebalanceArgs),
    /// Recommendations for a running node, with the evidence (@Advise).
    Advise(status::NodeArgs),
    /// The cluster's hosts, partitions, leaders and redundancy.
    Status(status::NodeArgs),
    /// Change a running cluster's hosts (`remove`).
    #[command(subcommand)]
    Cluster(cluster_cmd::ClusterCommand),
    /// A load balancer speaking the client protocol in front of hosts:
    /// routes single-partition calls to their leaders, spreads the rest.
    Proxy(proxy_cmd::ProxyArgs),
}

/// `joule sql` flags (sqlcmd's names).
#[derive(clap::Args)]
struct SqlArgs {
    /// Servers to connect to (comma-separated, `host` or `host:port`).
    #[arg(long, default_value = "localhost")]
    servers: String,
    /// Port for servers given without one.
    #[arg(long, default_value_t = 21212)]
    port: u16,
    #[arg(long, default_value = "")]
    user: String,
    #[arg(long, default_value = "")]
    password: String,
    /// Run these statements and exit (otherwise read a terminal or stdin).
    #[arg(long, visible_alias = "execute", short = 'e')]
    query: Option<String>,
    #[arg(long, value_enum, default_value = "fixed")]
    output_format: shell::Format,
    /// Print rows only: no headers, no row counts.
    #[arg(long)]
    output_skip_metadata: bool,
    /// Stop at the first failing statement.
    #[arg(long)]
    stop_on_error: bool,
    /// Run against an in-process, single-partition, in-memory database
    /// instead of a server.
    #[arg(long)]
    embedded: bool,
}

/// `joule start` flags; each overrides the configuration file's setting.
#[derive(clap::Args)]
struct StartArgs {
    /// Data directory [default: joule-data].
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// Interface to listen on [default: 0.0.0.0].
    #[arg(long)]
    host: Option<String>,
    /// VoltDB client protocol port; 0 picks a free one [default: 21212].
    #[arg(long)]
    client_port: Option<u16>,
    /// Admin port: the client protocol with administrator rights [default: 21211].
    #[arg(long)]
    admin_port: Option<u16>,
    /// HTTP/JSON API port; 0 picks a free one [default: 8080].
    #[arg(long)]
    http_port: Option<u16>,
    /// Port other hosts of a multi-host cluster reach this one on; 0
    /// picks a free one [default: 3021].
    #[arg(long)]
    internal_port: Option<u16>,
    /// Hosts the cluster forms with; start the first host with this alone
    /// and the others with `--join` too [default: 1].
    #[arg(long)]
    host_count: Option<usize>,
    /// Internal addresses (HOST:PORT, comma-separated) of hosts to join:
    /// the host forming the cluster, or any member.
    #[arg(long, value_delimiter = ',')]
    join: Option<Vec<String>>,
    /// Join a running cluster (one of `--join`'s hosts) as a new host:
    /// k+1 hosts are added at a time, with partitions of their own, and
    /// ranges of the ring move to them in the background. Give the
    /// cluster's `--kfactor` and `--sites`.
    #[arg(long)]
    add: bool,
    /// Form a cluster even with one host (`--host-count 1`), so that hosts
    /// can be added to it later with `--add`: it runs the metadata group and
    /// keeps copy logs instead of a command log.
    #[arg(long)]
    elastic: bool,
    /// Copies of each partition beyond the first: the cluster survives
    /// this many hosts failing [default: 0].
    #[arg(long)]
    kfactor: Option<u32>,
    /// The name or IP other hosts and clients reach this host by
    /// [default: the address the forming host sees].
    #[arg(long)]
    advertise: Option<String>,
    /// A host silent this many milliseconds is declared dead [default: 1000].
    #[arg(long)]
    heartbeat_timeout: Option<u64>,
    /// A restarted host may bring partitions back empty when no other host
    /// has a running copy and this host cannot recover its own from its
    /// copy logs (it keeps none with `--command-log off`, or it was failed
    /// before the cluster stopped). Without it the host refuses to start
    /// rather than lose the data silently.
    #[arg(long)]
    accept_data_loss: bool,
    /// Reach another host's internal address at another one
    /// (RECORDED=DIAL, HOST:PORT each; repeatable): a host behind NAT, or
    /// a relay between two hosts.
    #[arg(long = "route", value_name = "RECORDED=DIAL")]
    routes: Vec<String>,
    /// Sites (partitions) on this host [default: the number of cores].
    #[arg(long)]
    sites: Option<usize>,
    /// DDL file to load at start.
    #[arg(long)]
    schema: Option<std::path::PathBuf>,
    /// TOML configuration file (see docs/configuration.md).
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// Command log: `sync` answers after the fsync, `async` fsyncs every
    /// `--command-log-frequency` ms, `off` logs nothing [default: async].
    #[arg(long, value_enum)]
    command_log: Option<LogModeArg>,
    /// Asynchronous command log: the longest time between fsyncs, in ms
    /// [default: 200].
    #[arg(long)]
    command_log_frequency: Option<u64>,
    /// Threads serving connections (sockets, framing, routing) [default:
    /// a quarter of the cores, at least one].
    #[arg(long)]
    network_threads: Option<usize>,
    /// Let the kernel back this process's memory with transparent huge
    /// pages (off by default: zeroing a 2 MB page on first touch stalls a
    /// site for hundreds of microseconds).
    #[arg(long)]
    transparent_huge_pages: bool,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogModeArg {
    Sync,
    Async,
    Off,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Start(args) => start(args),
        Command::Snapshot(command) => snapshot_cmd::run(command),
        Command::Rebalance(args) => rebalance_cmd::run(args),
        Command::Cluster(command) => cluster_cmd::run(command),
        Command::Bench(args) => bench::run(args),
        Command::Advise(args) => advise(args),
        Command::Status(args) => status::run(args),
        Command::Proxy(args) => proxy_cmd::run(args),
        Command::Sql(args) if args.embedded => {
            let sql = match args.query {
                Some(s) => s,
                None => {
                    let mut s = String::new();
                    if let Err(e) = std::io::stdin().read_to_string(&mut s) {
                        eprintln!("error: cannot read standard input: {e}");
                        return ExitCode::FAILURE;
                    }
                    s
                }
            };
            run_script(&sql)
        }
        Command::Sql(args) => shell::run(shell::ShellOptions {
            servers: vec![args.servers],
            port: args.port,
            user: args.user,
            password: args.password,
            query: args.query,
            format: args.output_format,
            skip_metadata: args.output_skip_metadata,
            stop_on_error: args.stop_on_error,
        }),
    }
}

/// Print `@Advise`'s recommendations, most severe first.
fn advise(args: status::NodeArgs) -> ExitCode {
    let Some(mut c) = args.connect() else { return ExitCode::FAILURE };
    let r = match c.call("@Advise", vec![]) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut rows: Vec<Vec<String>> =
        r.tables[0].rows.iter().map(|row| row.iter().map(|v| v.to_string()).collect()).collect();
    let rank = |s: &str| match s {
        "high" => 0,
        "medium" => 1,
        _ => 2,
    };
    rows.sort_by_key(|r| rank(&r[1]));
    if rows.is_empty() {
        println!("No recommendations: nothing in the statistics or plans calls for a change.");
    }
    for r in rows {
        println!(
            "[{}] {}: {}
    evidence: {}",
            r[1], r[0], r[2], r[3]
        );
    }
    ExitCode::SUCCESS
}

/// Ask the kernel not to back this process's memory with transparent huge
/// pages (`allowed`: clear that request, in case the parent process set it
/// and we inherited it). Tables grow into fresh memory; with huge pages
/// each first touch of 2 MB zeroes it all at once inside a transaction,
/// which put the voter benchmark's p99 at 3–5 ms on a fresh node (about
/// 1 ms without). Best effort: a kernel without the setting leaves things
/// as they were.
fn set_transparent_huge_pages(allowed: bool) {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with integer arguments only; it changes a flag of this
    // process's memory map.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, libc::c_ulong::from(!allowed), 0, 0, 0);
    }
}

/// Start a node and serve until SIGINT, SIGTERM or `@Shutdown`.
fn start(args: StartArgs) -> ExitCode {
    // A file-size limit (`ulimit -f`) is then a write error like a full
    // disk (EFBIG), which the command log handles, instead of a kill.
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to "ignore" before any other
    // thread exists.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let mut config = joule_server::ServerConfig::default();
    let mut other = joule_server::config::OtherPorts::default();
    if let Some(path) = &args.config {
        // Hosts the auto-scaler starts here take the same file.
        config.autoscale.config_file = Some(std::fs::canonicalize(path).unwrap_or_else(|_| path.clone()));
        let applied =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display())).and_then(
                |text| joule_server::config::apply_toml(&mut config, &mut other, &text).map_err(|e| e.to_string()),
            );
        if let Err(e) = applied {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    }
    if let Some(v) = args.dir {
        config.dir = v;
    }
    if let Some(v) = args.host {
        config.host = v;
    }
    if let Some(v) = args.client_port {
        config.client_port = v;
    }
    if let Some(v) = args.admin_port {
        config.admin_port = v;
    }
    if let Some(v) = args.http_port {
        config.http_port = v;
    }
    if let Some(v) = args.internal_port {
        config.cluster.internal_port = v;
    }
    if let Some(v) = args.host_count {
        config.cluster.host_count = v;
    }
    if let Some(v) = args.join {
        config.cluster.join = v.into_iter().filter(|a| !a.is_empty()).collect();
    }
    config.cluster.add |= args.add;
    config.cluster.elastic |= args.elastic;
    if let Some(v) = args.kfactor {
        config.cluster.kfactor = v;
    }
    if let Some(v) = args.advertise {
        config.cluster.advertise = Some(v);
    }
    if let Some(ms) = args.heartbeat_timeout {
        config.cluster.heartbeat_timeout = std::time::Duration::from_millis(ms);
    }
    if args.accept_data_loss {
        config.cluster.accept_data_loss = true;
    }
    for route in &args.routes {
        let Some((recorded, dial)) = route.split_once('=') else {
            eprintln!("error: --route {route}: expected RECORDED=DIAL (HOST:PORT each)");
            return ExitCode::from(2);
        };
        config.cluster.routes.insert(recorded.to_string(), dial.to_string());
    }
    if let Err(e) = config.cluster.validate() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    if let Some(v) = args.sites {
        config.sites = v;
    } else if !other.sites_set {
        // An existing data directory keeps its partition count.
        match joule_durability::node::DataDir::new(&config.dir).meta() {
            Ok(Some(meta)) => config.sites = meta.partitions as usize,
            Ok(None) => {}
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let frequency = args
        .command_log_frequency
        .map(std::time::Duration::from_millis)
        .or(match config.command_log {
            Some(joule_durability::LogMode::Async { frequency }) => Some(frequency),
            _ => None,
        })
        .unwrap_or(std::time::Duration::from_millis(200));
    match args.command_log {
        Some(LogModeArg::Sync) => config.command_log = Some(joule_durability::LogMode::Sync),
        Some(LogModeArg::Async) => config.command_log = Some(joule_durability::LogMode::Async { frequency }),
        Some(LogModeArg::Off) => config.command_log = None,
        None => {
            if let Some(joule_durability::LogMode::Async { .. }) = config.command_log {
                config.command_log = Some(joule_durability::LogMode::Async { frequency });
            }
        }
    }
    if frequency.is_zero() {
        eprintln!("error: --command-log-frequency must be at least 1 ms");
        return ExitCode::from(2);
    }
    if let Some(v) = args.schema {
        config.schema = Some(v);
    }
    if args.transparent_huge_pages {
        config.transparent_huge_pages = true;
    }
    set_transparent_huge_pages(config.transparent_huge_pages);
    if let Some(v) = args.network_threads {
        config.network_threads = v;
    }
    if !(1..=256).contains(&config.network_threads) {
        eprintln!("error: --network-threads must be between 1 and 256");
        return ExitCode::from(2);
    }
    let runtime =
        match tokio::runtime::Builder::new_multi_thread().worker_threads(config.network_threads).enable_all().build() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: cannot start the I/O runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
    let code = runtime.block_on(async move {
        let sites = config.sites;
        let dir = config.dir.clone();
        let mut registry = joule_txn::ProcedureRegistry::new();
        joule_voter::register(&mut registry);
        let server = match joule_server::Server::start(config, registry).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        eprintln!("joule: recovery: {}", server.recovery);
        let log = match server.command_log_mode() {
            None => "command log off".to_string(),
            Some(joule_durability::LogMode::Sync) => "command log sync".to_string(),
            Some(joule_durability::LogMode::Async { frequency }) => {
                format!("command log async every {} ms", frequency.as_millis())
            }
        };
        let cluster = match &server.internal_addr {
            Some(internal) => format!("host {} of a cluster, internal {internal}", server.host_id),
            None => "a one-host cluster".to_string(),
        };
        println!(
            "JouleDB ready: client {} admin {} http {} ({sites} sites, {log}, data in {}; {cluster})",
            server.client_addr,
            server.admin_addr,
            server.http_addr,
            dir.display(),
        );
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        let stop = server_stopper(&server);
        tokio::spawn(async move {
            wait_for_signal().await;
            stop();
        });
        match server.wait().await {
            None => {
                eprintln!("JouleDB stopped");
                ExitCode::SUCCESS
            }
            Some(e) if e.code() == joule_common::ErrorCode::Unavailable => {
                eprintln!("JouleDB stopped: {e}");
                ExitCode::FAILURE
            }
            Some(e) => {
                eprintln!(
                    "JouleDB stopped: {e}. Nothing unacknowledged was kept; fix the cause (free disk space, check the \
                     device) and start again: recovery restores every acknowledged transaction"
                );
                ExitCode::FAILURE
            }
        }
    });
    // Work the server gave up waiting for (a cluster host's, held by hosts
    // that are gone) must not keep the process from exiting.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}

fn server_stopper(server: &joule_server::Server) -> impl FnOnce() + Send + 'static {
    let handle = server.shutdown_handle();
    move || handle()
}

pub(crate) async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Run each statement, printing results; stop at the first error.
fn run_script(sql: &str) -> ExitCode {
    let mut db = Database::new();
    let statements = match joule_engine::split_statements(sql) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    for stmt in statements {
        match db.execute(&stmt) {
            Ok(ExecResult::Rows { columns, rows }) => {
                let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
                println!("{}", names.join("\t"));
                for r in &rows {
                    let vals: Vec<String> = r.iter().map(|v| v.to_string()).collect();
                    println!("{}", vals.join("\t"));
                }
                println!("({} row{})", rows.len(), if rows.len() == 1 { "" } else { "s" });
            }
            Ok(ExecResult::Modified(n)) => println!("({n} row{} affected)", if n == 1 { "" } else { "s" }),
            Ok(ExecResult::Done) => println!("OK"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
