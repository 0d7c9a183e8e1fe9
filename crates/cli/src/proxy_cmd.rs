//! `joule proxy`: run the load balancer (`joule-proxy`) until SIGINT or
//! SIGTERM. It prints one line when it listens.

use joule_proxy::{Balance, ProxyConfig, VirtualHost, DEFAULT_SERVICE};
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct ProxyArgs {
    /// Where to listen: a port (on every interface) or `address:port`; 0
    /// picks a free port.
    #[arg(long, default_value = "21212")]
    listen: String,
    /// The backends of the virtual host `database` (the one VoltDB's
    /// clients log in to): comma-separated `host:port`, each optionally
    /// with a weight for `--balance weighted` (`host:port*3`).
    #[arg(long)]
    servers: Option<String>,
    /// A named virtual host, `NAME[@DATABASE]=host:port[*W],...`
    /// (repeatable): clients logging in with service NAME go to these
    /// backends, their unqualified names resolving in DATABASE (default:
    /// DEFAULT).
    #[arg(long = "vhost")]
    vhosts: Vec<String>,
    /// How calls that are not routed to a partition's leader are spread.
    #[arg(long, value_enum, default_value = "round-robin")]
    balance: BalanceArg,
    /// Seed of the random and weighted policies (the same seed, the same
    /// choices).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Spread single-partition calls by the policy too, instead of sending
    /// them to their partition's leader (backends that are not the hosts
    /// of one cluster).
    #[arg(long)]
    no_route: bool,
    /// Ping each backend connection this often (milliseconds).
    #[arg(long, default_value_t = 1000)]
    health_every_ms: u64,
    /// Pass over a backend whose ping is not answered within this
    /// (milliseconds).
    #[arg(long, default_value_t = 2000)]
    health_within_ms: u64,
    /// A relayed call whose backend has not answered within this
    /// (milliseconds) is answered "response unknown".
    #[arg(long, default_value_t = 120_000)]
    call_timeout_ms: u64,
    /// Serve Prometheus metrics at http://ADDRESS/metrics (a port, or
    /// `address:port`; 0 picks a free port). Off unless given.
    #[arg(long)]
    http: Option<String>,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum BalanceArg {
    RoundRobin,
    Random,
    Weighted,
    LeastOutstanding,
    LatencyAware,
}

/// `host:port[*W]` items: the addresses and their weights (1 if unsaid).
fn servers_and_weights(list: &str) -> Result<(Vec<String>, Vec<u32>), String> {
    let mut servers = Vec::new();
    let mut weights = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (server, weight) = match item.split_once('*') {
            Some((s, w)) => (s, w.parse::<u32>().map_err(|_| format!("'{w}' in '{item}' is not a weight"))?),
            None => (item, 1),
        };
        if !server.contains(':') {
            return Err(format!("'{server}' needs a port (host:port)"));
        }
        servers.push(server.to_string());
        weights.push(weight);
    }
    if servers.is_empty() {
        return Err(format!("no servers in '{list}'"));
    }
    Ok((servers, weights))
}

fn virtual_host(name: &str, list: &str, args: &ProxyArgs) -> Result<VirtualHost, String> {
    let (servers, weights) = servers_and_weights(list).map_err(|e| format!("virtual host '{name}': {e}"))?;
    let balance = match args.balance {
        BalanceArg::RoundRobin => Balance::RoundRobin,
        BalanceArg::Random => Balance::Random { seed: args.seed },
        BalanceArg::Weighted => Balance::Weighted { weights, seed: args.seed },
        BalanceArg::LeastOutstanding => Balance::LeastOutstanding,
        BalanceArg::LatencyAware => Balance::LatencyAware,
    };
    let (name, database) = match name.split_once('@') {
        Some((n, d)) => (n.trim(), Some(d.trim().to_string())),
        None => (name, None),
    };
    if name.is_empty() || database.as_deref().is_some_and(str::is_empty) {
        return Err(format!("virtual host '{name}': give NAME or NAME@DATABASE"));
    }
    Ok(VirtualHost { name: name.to_string(), servers, balance, route_to_leaders: !args.no_route, database })
}

/// A port (every interface) or `address:port`.
fn listen_address(flag: &str, given: &str) -> Result<std::net::SocketAddr, String> {
    let full = if given.chars().all(|c| c.is_ascii_digit()) { format!("0.0.0.0:{given}") } else { given.to_string() };
    full.parse().map_err(|_| format!("--{flag} {given}: give a port or address:port"))
}

fn config(args: &ProxyArgs) -> Result<ProxyConfig, String> {
    let listen = listen_address("listen", &args.listen)?;
    let mut virtual_hosts = Vec::new();
    if let Some(servers) = &args.servers {
        virtual_hosts.push(virtual_host(DEFAULT_SERVICE, servers, args)?);
    }
    for v in &args.vhosts {
        let (name, list) = v.split_once('=').ok_or_else(|| format!("--vhost {v}: give NAME=host:port,..."))?;
        virtual_hosts.push(virtual_host(name.trim(), list, args)?);
    }
    if virtual_hosts.is_empty() {
        return Err("give the backends: --servers host:port,... or --vhost NAME=host:port,...".into());
    }
    let mut config = ProxyConfig::new(listen, Vec::new(), Balance::RoundRobin);
    config.virtual_hosts = virtual_hosts;
    config.health_check.every = Duration::from_millis(args.health_every_ms);
    config.health_check.within = Duration::from_millis(args.health_within_ms);
    config.call_timeout = Duration::from_millis(args.call_timeout_ms);
    config.http = args.http.as_deref().map(|h| listen_address("http", h)).transpose()?;
    Ok(config)
}

pub fn run(args: ProxyArgs) -> ExitCode {
    let config = match config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let hosts: Vec<String> = config
            .virtual_hosts
            .iter()
            .map(|v| {
                let policy = joule_proxy::stats::policy_name(&v.balance);
                let routing = if v.route_to_leaders { ", single-partition calls to leaders" } else { "" };
                let database = v.database.as_ref().map(|d| format!(", database {d}")).unwrap_or_default();
                format!("{} -> {} ({policy}{routing}{database})", v.name, v.servers.join(","))
            })
            .collect();
        let proxy = match joule_proxy::Proxy::start(config).await {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        let metrics = proxy.http_address().map(|a| format!("; metrics http://{a}/metrics")).unwrap_or_default();
        println!("JouleDB proxy ready: listening on {}; virtual hosts: {}{metrics}", proxy.address(), hosts.join("; "));
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        crate::wait_for_signal().await;
        proxy.shutdown();
        eprintln!("JouleDB proxy stopped");
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_lists_take_weights_and_refuse_what_is_not_an_address() {
        assert_eq!(
            servers_and_weights("a:1*3, b:2").unwrap(),
            (vec!["a:1".to_string(), "b:2".to_string()], vec![3, 1])
        );
        assert!(servers_and_weights("a:1*x").unwrap_err().contains("not a weight"));
        assert!(servers_and_weights("a").unwrap_err().contains("needs a port"));
        assert!(servers_and_weights(" , ").unwrap_err().contains("no servers"));
    }
}
