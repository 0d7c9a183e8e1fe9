//! `@Statistics PROXY`: what the proxy knows of its virtual hosts and
//! backends, answered by the proxy itself (the backends' own statistics
//! are a call away through it, as usual).
//!
//! Two tables. The first has a row per virtual host and backend: its
//! state — `UP` (a connection is open and answering its health checks),
//! `DOWN` (connections open, but the health check gets no answer in time:
//! a stopped or overloaded host), `CLOSED` (no connection; being reopened)
//! or `IDLE` (no client has logged in to the virtual host yet, so the
//! proxy has not connected) —, the calls sent to it and how many of them
//! were routed to it as their partition's leader, the calls awaiting its
//! answers, and its recent round trip. The second has a row per virtual
//! host: its policy, client connections, pools (one per set of
//! credentials), calls relayed, calls failed here, and calls the proxy
//! answered itself.

use crate::Shared;
use joule_client::{Backend, Balance};
use joule_common::{Row, Value};
use joule_wire::{VoltTable, VoltType};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

/// A backend's state, summed over the pools' connections to it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendState {
    pub name: &'static str,
    pub open: usize,
    pub calls: u64,
    pub routed: u64,
    pub outstanding: usize,
    /// The highest recent round trip among its connections.
    pub latency_us: u64,
}

/// Per backend address, the state of the connections `backends` lists.
pub fn backend_states(backends: &[Backend]) -> BTreeMap<SocketAddr, BackendState> {
    let mut states: BTreeMap<SocketAddr, (BackendState, bool, bool)> = BTreeMap::new();
    for b in backends {
        let (s, usable, open) = states.entry(b.address).or_default();
        s.open += usize::from(b.open);
        s.calls += b.calls;
        s.routed += b.routed;
        s.outstanding += b.outstanding;
        s.latency_us = s.latency_us.max(b.latency_us);
        *usable |= b.open && b.healthy;
        *open |= b.open;
    }
    states
        .into_iter()
        .map(|(a, (mut s, usable, open))| {
            s.name = match (usable, open) {
                (true, _) => "UP",
                (false, true) => "DOWN",
                (false, false) => "CLOSED",
            };
            (a, s)
        })
        .collect()
}

/// The policy's name, as `joule proxy --balance` takes it.
pub fn policy_name(balance: &Balance) -> &'static str {
    match balance {
        Balance::RoundRobin => "round-robin",
        Balance::Random { .. } => "random",
        Balance::Weighted { .. } => "weighted",
        Balance::LeastOutstanding => "least-outstanding",
        Balance::LatencyAware => "latency-aware",
    }
}

fn columns(names: &[(&str, VoltType)]) -> Vec<(String, VoltType)> {
    names.iter().map(|(n, t)| (n.to_string(), *t)).collect()
}

pub(crate) fn tables(shared: &Shared) -> Vec<VoltTable> {
    let mut backends: Vec<Row> = Vec::new();
    let mut hosts: Vec<Row> = Vec::new();
    let int = |n: u64| Value::Integer(n as i64);
    for group in &shared.groups {
        let name = Value::String(group.config.name.clone());
        let states = backend_states(&group.backends());
        let pools = group.pool_count();
        for (server, resolved) in group.config.servers.iter().zip(&group.resolved) {
            // Matched by the address it resolved to at start.
            let state = resolved.and_then(|r| states.get_key_value(&r));
            let row = match state {
                Some((address, s)) => vec![
                    name.clone(),
                    Value::String(address.to_string()),
                    Value::String(s.name.into()),
                    int(s.open as u64),
                    int(s.calls),
                    int(s.routed),
                    int(s.outstanding as u64),
                    int(s.latency_us),
                ],
                None => vec![
                    name.clone(),
                    Value::String(server.clone()),
                    Value::String("IDLE".into()),
                    int(0),
                    int(0),
                    int(0),
                    int(0),
                    int(0),
                ],
            };
            backends.push(row);
        }
        hosts.push(vec![
            name,
            Value::String(policy_name(&group.config.balance).into()),
            int(group.connections.load(Ordering::Relaxed) as u64),
            int(pools as u64),
            int(group.calls.load(Ordering::Relaxed)),
            int(group.failed.load(Ordering::Relaxed)),
            int(group.answered_here.load(Ordering::Relaxed)),
        ]);
    }
    use VoltType::{BigInt, String as Text};
    vec![
        VoltTable {
            columns: columns(&[
                ("VHOST", Text),
                ("BACKEND", Text),
                ("STATE", Text),
                ("CONNECTIONS", BigInt),
                ("CALLS", BigInt),
                ("ROUTED", BigInt),
                ("OUTSTANDING", BigInt),
                ("LATENCY_US", BigInt),
            ]),
            rows: backends,
        },
        VoltTable {
            columns: columns(&[
                ("VHOST", Text),
                ("POLICY", Text),
                ("CLIENT_CONNECTIONS", BigInt),
                ("POOLS", BigInt),
                ("CALLS", BigInt),
                ("FAILED", BigInt),
                ("ANSWERED_HERE", BigInt),
            ]),
            rows: hosts,
        },
    ]
}

/// `/metrics`: the same figures as Prometheus text (version 0.0.4).
pub(crate) fn prometheus(shared: &Shared) -> String {
    let tables = tables(shared);
    let text = |v: &Value| match v {
        Value::String(s) => s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n"),
        v => v.to_string(),
    };
    let number = |v: &Value| if let Value::Integer(i) = v { *i as f64 } else { 0.0 };
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, f64)>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, value) in samples {
            out.push_str(&format!("{name}{{{labels}}} {value}\n"));
        }
    };
    let backends = &tables[0].rows;
    let per_backend = |column: usize, scale: f64| -> Vec<(String, f64)> {
        backends
            .iter()
            .map(|r| (format!("vhost=\"{}\",backend=\"{}\"", text(&r[0]), text(&r[1])), number(&r[column]) * scale))
            .collect()
    };
    let states = backends
        .iter()
        .map(|r| {
            let up = r[2] == Value::String("UP".into());
            (
                format!("vhost=\"{}\",backend=\"{}\",state=\"{}\"", text(&r[0]), text(&r[1]), text(&r[2])),
                f64::from(u8::from(up)),
            )
        })
        .collect();
    family("joule_proxy_backend_up", "gauge", "1 if the backend is UP (the state label says which state)", states);
    family(
        "joule_proxy_backend_connections",
        "gauge",
        "Open connections to the backend, over all pools",
        per_backend(3, 1.0),
    );
    family("joule_proxy_backend_calls_total", "counter", "Calls sent to the backend", per_backend(4, 1.0));
    family(
        "joule_proxy_backend_routed_total",
        "counter",
        "Calls sent to it as their partition's leader",
        per_backend(5, 1.0),
    );
    family("joule_proxy_backend_outstanding", "gauge", "Calls awaiting the backend's answers", per_backend(6, 1.0));
    family("joule_proxy_backend_latency_seconds", "gauge", "Recent round trip to the backend", per_backend(7, 1e-6));
    let hosts = &tables[1].rows;
    let per_host = |column: usize| -> Vec<(String, f64)> {
        hosts
            .iter()
            .map(|r| (format!("vhost=\"{}\",policy=\"{}\"", text(&r[0]), text(&r[1])), number(&r[column])))
            .collect()
    };
    family("joule_proxy_client_connections", "gauge", "Client connections logged in", per_host(2));
    family("joule_proxy_pools", "gauge", "Pools open (one per set of credentials)", per_host(3));
    family("joule_proxy_calls_total", "counter", "Calls relayed to backends", per_host(4));
    family("joule_proxy_failed_total", "counter", "Calls answered with a failure made at the proxy", per_host(5));
    family("joule_proxy_answered_here_total", "counter", "Calls the proxy answered itself", per_host(6));
    out
}

/// Serve `/metrics` on `listener` until the proxy stops.
pub(crate) async fn serve_metrics(listener: tokio::net::TcpListener, shared: std::sync::Arc<Shared>) {
    use axum::routing::get;
    let mut shutdown = shared.shutdown.clone();
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let shared = shared.clone();
            async move { ([("content-type", "text/plain; version=0.0.4")], prometheus(&shared)) }
        }),
    );
    let stop = async move {
        let _ = shutdown.changed().await;
    };
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
        eprintln!("joule proxy: HTTP server failed: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(address: &str, open: bool, healthy: bool, calls: u64) -> Backend {
        Backend {
            address: address.parse().unwrap(),
            open,
            healthy,
            outstanding: 1,
            latency_us: calls * 10,
            calls,
            routed: calls / 2,
        }
    }

    #[test]
    fn a_backend_is_up_if_any_pool_reaches_it_and_down_if_open_but_silent() {
        let states = backend_states(&[
            backend("127.0.0.1:1", true, true, 4),
            backend("127.0.0.1:1", false, true, 6),
            backend("127.0.0.1:2", true, false, 1),
            backend("127.0.0.1:3", false, true, 0),
        ]);
        let s = |a: &str| states[&a.parse::<SocketAddr>().unwrap()];
        assert_eq!((s("127.0.0.1:1").name, s("127.0.0.1:1").calls, s("127.0.0.1:1").open), ("UP", 10, 1));
        assert_eq!(s("127.0.0.1:1").routed, 5);
        assert_eq!(s("127.0.0.1:1").latency_us, 60);
        assert_eq!(s("127.0.0.1:2").name, "DOWN");
        assert_eq!(s("127.0.0.1:3").name, "CLOSED");
    }
}
