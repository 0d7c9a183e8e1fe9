//! The server's settings, from defaults, a TOML file and command-line flags
//! (flags win).
//!
//! ```toml
//! host = "0.0.0.0"
//! client_port = 21212
//! admin_port = 21211
//! http_port = 8080
//! internal_port = 3021
//! sites = 2                    # default: one per core
//! network_threads = 1          # default: a quarter of the cores, at least one
//! dir = "joule-data"
//! schema = "schema.sql"        # DDL loaded at start
//! max_message_bytes = 52428800
//! max_outstanding_per_connection = 10000
//! max_queued_requests = 100000
//! transparent_huge_pages = false   # true: let the kernel use them (see docs/operations.md)
//!
//! [command_log]
//! mode = "async"               # sync | async | off
//! frequency_ms = 200           # async: the longest time between fsyncs
//! segment_mb = 64              # segment files are closed past this size
//!
//! [cluster]                    # several hosts (see docs/operations.md, "Clusters")
//! host_count = 3               # hosts the cluster forms with (default 1: alone)
//! join = ["db1:3021"]          # hosts to join; leave out on the host that forms it
//! kfactor = 1                  # copies of each partition beyond the first
//! advertise = "db2"            # the name other hosts reach this one by
//! heartbeat_timeout_ms = 1000  # a host silent this long is declared dead
//! routes = { "db1:3021" = "10.0.0.7:3021" }  # reach a host by another address
//!
//! [snapshot]
//! frequency_s = 1800           # automatic snapshots (0: none); each truncates the log
//! retain = 2                   # snapshots kept usable for recovery
//!
//! [elastic]                    # how fast @Rebalance moves ranges
//! duration_ms = 5              # aimed-at length of each move's transaction
//! throughput_mb = 0.3          # MB/s of rows moved at most (0: no limit; fractions allowed)
//! busy_percent = 25            # share of the time moves may run at most
//! target_p99_ms = 10           # moves slow down while calls' p99 is above (0: off)
//!
//! [autoscale]                  # add and remove hosts by the load (see autoscale/)
//! enabled = true
//! provider = "local"           # local: joule processes here; command: a script
//! target_p99_ms = 10
//! target_utilization = 75      # percent of the sites' time busy
//! min_hosts = 2
//! max_hosts = 6
//!
//! [[users]]                    # with users, logins must match one
//! name = "admin"
//! password = "secret"
//! roles = ["ADMINISTRATOR"]    # may call @Shutdown, @Pause, ...
//! ```

use crate::{ServerConfig, User};
use joule_common::{err, Result};
use joule_durability::LogMode;
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    host: Option<String>,
    client_port: Option<u16>,
    admin_port: Option<u16>,
    http_port: Option<u16>,
    internal_port: Option<u16>,
    sites: Option<usize>,
    network_threads: Option<usize>,
    dir: Option<PathBuf>,
    schema: Option<PathBuf>,
    max_message_bytes: Option<usize>,
    max_outstanding_per_connection: Option<usize>,
    max_queued_requests: Option<usize>,
    transparent_huge_pages: Option<bool>,
    #[serde(default)]
    users: Vec<FileUser>,
    command_log: Option<FileCommandLog>,
    snapshot: Option<FileSnapshot>,
    cluster: Option<FileCluster>,
    elastic: Option<FileElastic>,
    autoscale: Option<crate::autoscale::FileAutoscale>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileElastic {
    duration_ms: Option<u64>,
    throughput_mb: Option<f64>,
    busy_percent: Option<u32>,
    target_p99_ms: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCluster {
    host_count: Option<usize>,
    join: Option<Vec<String>>,
    kfactor: Option<u32>,
    advertise: Option<String>,
    heartbeat_timeout_ms: Option<u64>,
    routes: Option<std::collections::BTreeMap<String, String>>,
    elastic: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSnapshot {
    frequency_s: Option<u64>,
    retain: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCommandLog {
    mode: Option<String>,
    frequency_ms: Option<u64>,
    segment_mb: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileUser {
    name: String,
    password: String,
    #[serde(default)]
    roles: Vec<String>,
}

/// Settings the server does not use itself: whether the file chose the
/// site count (the `joule` command keeps an existing data directory's count
/// otherwise).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OtherPorts {
    pub sites_set: bool,
}

/// Apply a TOML configuration file's settings over `config`.
pub fn apply_toml(config: &mut ServerConfig, other: &mut OtherPorts, text: &str) -> Result<()> {
    let file: FileConfig = toml::from_str(text).map_err(|e| err!(InvalidArgument, "configuration: {e}"))?;
    if let Some(v) = file.host {
        config.host = v;
    }
    if let Some(v) = file.client_port {
        config.client_port = v;
    }
    if let Some(v) = file.admin_port {
        config.admin_port = v;
    }
    if let Some(v) = file.http_port {
        config.http_port = v;
    }
    if let Some(v) = file.internal_port {
        config.cluster.internal_port = v;
    }
    if let Some(c) = file.cluster {
        if let Some(v) = c.host_count {
            config.cluster.host_count = v;
        }
        if let Some(v) = c.join {
            config.cluster.join = v;
        }
        if let Some(v) = c.kfactor {
            config.cluster.kfactor = v;
        }
        if let Some(v) = c.advertise {
            config.cluster.advertise = Some(v);
        }
        if let Some(ms) = c.heartbeat_timeout_ms {
            config.cluster.heartbeat_timeout = std::time::Duration::from_millis(ms);
        }
        if let Some(routes) = c.routes {
            config.cluster.routes = routes;
        }
        if let Some(v) = c.elastic {
            config.cluster.elastic = v;
        }
        config.cluster.validate().map_err(|e| err!(InvalidArgument, "configuration: [cluster]: {e}"))?;
    }
    if let Some(v) = file.sites {
        config.sites = v;
        other.sites_set = true;
    }
    if let Some(v) = file.dir {
        config.dir = v;
    }
    if let Some(v) = file.schema {
        config.schema = Some(v);
    }
    if let Some(v) = file.max_message_bytes {
        if !(1024..=256 << 20).contains(&v) {
            return Err(err!(
                InvalidArgument,
                "configuration: max_message_bytes must be between 1024 and 268435456 (the command log's record limit)"
            ));
        }
        config.max_message_bytes = v;
    }
    if let Some(v) = file.max_outstanding_per_connection {
        if v == 0 {
            return Err(err!(InvalidArgument, "configuration: max_outstanding_per_connection must be positive"));
        }
        config.max_outstanding_per_connection = v;
    }
    if let Some(v) = file.max_queued_requests {
        if v == 0 {
            return Err(err!(InvalidArgument, "configuration: max_queued_requests must be positive"));
        }
        config.max_queued_requests = v;
    }
    if let Some(v) = file.network_threads {
        if !(1..=256).contains(&v) {
            return Err(err!(InvalidArgument, "configuration: network_threads must be between 1 and 256"));
        }
        config.network_threads = v;
    }
    if let Some(v) = file.transparent_huge_pages {
        config.transparent_huge_pages = v;
    }
    if let Some(log) = file.command_log {
        let frequency = match log.frequency_ms {
            Some(0) => return Err(err!(InvalidArgument, "configuration: command_log.frequency_ms must be positive")),
            Some(ms) => std::time::Duration::from_millis(ms),
            None => std::time::Duration::from_millis(200),
        };
        config.command_log = match log.mode.as_deref() {
            Some("sync") => Some(LogMode::Sync),
            Some("async") | None => Some(LogMode::Async { frequency }),
            Some("off") => None,
            Some(other) => {
                return Err(err!(
                    InvalidArgument,
                    "configuration: command_log.mode must be sync, async or off, not {other:?}"
                ))
            }
        };
        if let Some(mb) = log.segment_mb {
            if mb == 0 {
                return Err(err!(InvalidArgument, "configuration: command_log.segment_mb must be positive"));
            }
            config.log_segment_bytes = mb << 20;
        }
    }
    if let Some(s) = file.snapshot {
        if let Some(secs) = s.frequency_s {
            config.snapshot_every = (secs > 0).then(|| std::time::Duration::from_secs(secs));
        }
        if let Some(n) = s.retain {
            if n == 0 {
                return Err(err!(InvalidArgument, "configuration: snapshot.retain must be at least 1"));
            }
            config.snapshot_retain = n;
        }
    }
    if let Some(e) = file.elastic {
        if let Some(ms) = e.duration_ms {
            if !(1..=60_000).contains(&ms) {
                return Err(err!(InvalidArgument, "configuration: elastic.duration_ms must be between 1 and 60000"));
            }
            config.elastic.duration = std::time::Duration::from_millis(ms);
        }
        if let Some(mb) = e.throughput_mb {
            if !(mb >= 0.0 && mb.is_finite()) {
                return Err(err!(InvalidArgument, "configuration: elastic.throughput_mb must be 0 or more"));
            }
            // A limit too small to count in bytes is one byte a second,
            // not none.
            config.elastic.throughput_bytes = ((mb * (1 << 20) as f64).ceil() as u64).max(u64::from(mb > 0.0));
        }
        if let Some(p) = e.busy_percent {
            if !(1..=100).contains(&p) {
                return Err(err!(InvalidArgument, "configuration: elastic.busy_percent must be between 1 and 100"));
            }
            config.elastic.busy_percent = p;
        }
        if let Some(ms) = e.target_p99_ms {
            if !(0.0..=3_600_000.0).contains(&ms) {
                return Err(err!(
                    InvalidArgument,
                    "configuration: elastic.target_p99_ms must be between 0 (no target) and 3600000"
                ));
            }
            config.elastic.target_p99 = (ms > 0.0).then(|| std::time::Duration::from_secs_f64(ms / 1000.0));
        }
    }
    if let Some(a) = file.autoscale {
        crate::autoscale::apply(&mut config.autoscale, a)?;
    }
    let mut seen = std::collections::BTreeSet::new();
    for u in file.users {
        if u.name.is_empty() || !seen.insert(u.name.clone()) {
            return Err(err!(InvalidArgument, "configuration: user names must be non-empty and unique ({:?})", u.name));
        }
        let roles = u.roles.into_iter().map(|r| r.to_uppercase()).collect();
        config.users.push(User { name: u.name, password: u.password, roles });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_set_what_they_name_and_refuse_mistakes() {
        let mut c = ServerConfig::default();
        let mut o = OtherPorts::default();
        apply_toml(
            &mut c,
            &mut o,
            "client_port = 1\nsites = 3\nhttp_port = 9\n[[users]]\nname = \"a\"\npassword = \"p\"\nroles = [\"administrator\"]\n",
        )
        .unwrap();
        assert_eq!((c.client_port, c.admin_port, c.sites, c.http_port), (1, 21211, 3, 9));
        assert_eq!(c.cluster.internal_port, 3021);
        assert!(o.sites_set);
        assert_eq!(c.users, vec![User { name: "a".into(), password: "p".into(), roles: vec!["ADMINISTRATOR".into()] }]);
        apply_toml(&mut c, &mut o, "[command_log]\nmode = \"sync\"\nsegment_mb = 8").unwrap();
        assert_eq!((c.command_log, c.log_segment_bytes), (Some(LogMode::Sync), 8 << 20));
        apply_toml(&mut c, &mut o, "[command_log]\nmode = \"off\"").unwrap();
        assert_eq!(c.command_log, None);
        apply_toml(&mut c, &mut o, "[snapshot]\nfrequency_s = 0\nretain = 3").unwrap();
        assert_eq!((c.snapshot_every, c.snapshot_retain), (None, 3));
        apply_toml(&mut c, &mut o, "[elastic]\nduration_ms = 20\nthroughput_mb = 0").unwrap();
        assert_eq!((c.elastic.duration.as_millis(), c.elastic.throughput_bytes), (20, 0));
        apply_toml(&mut c, &mut o, "[elastic]\nthroughput_mb = 0.5").unwrap();
        assert_eq!(c.elastic.throughput_bytes, 1 << 19);
        apply_toml(&mut c, &mut o, "[elastic]\nthroughput_mb = 1e-9").unwrap();
        assert_eq!(c.elastic.throughput_bytes, 1, "a limit too small for bytes is still a limit");
        apply_toml(&mut c, &mut o, "[elastic]\nbusy_percent = 50").unwrap();
        assert_eq!(c.elastic.busy_percent, 50);
        assert_eq!(c.elastic.target_p99, Some(std::time::Duration::from_millis(10)));
        apply_toml(&mut c, &mut o, "[elastic]\ntarget_p99_ms = 2.5").unwrap();
        assert_eq!(c.elastic.target_p99, Some(std::time::Duration::from_micros(2500)));
        apply_toml(&mut c, &mut o, "[elastic]\ntarget_p99_ms = 0").unwrap();
        assert_eq!(c.elastic.target_p99, None);
        assert!(!c.transparent_huge_pages);
        apply_toml(&mut c, &mut o, "transparent_huge_pages = true\nnetwork_threads = 3").unwrap();
        assert!(c.transparent_huge_pages);
        assert_eq!(c.network_threads, 3);
        apply_toml(&mut c, &mut o, "internal_port = 4000\n[cluster]\nhost_count = 3\njoin = [\"a:1\"]\nkfactor = 1\nheartbeat_timeout_ms = 500\nroutes = { \"a:1\" = \"b:2\" }").unwrap();
        assert_eq!((c.cluster.internal_port, c.cluster.host_count, c.cluster.kfactor), (4000, 3, 1));
        assert_eq!(c.cluster.join, vec!["a:1".to_string()]);
        assert_eq!(c.cluster.heartbeat_timeout, std::time::Duration::from_millis(500));
        assert_eq!(c.cluster.routes.get("a:1").map(String::as_str), Some("b:2"));
        let mut alone = ServerConfig::default();
        assert!(!alone.cluster.is_multi_host());
        apply_toml(&mut alone, &mut o, "[cluster]\nelastic = true").unwrap();
        assert!(alone.cluster.elastic && alone.cluster.is_multi_host(), "one host that may grow runs the group");
        for bad in [
            "[cluster]\nhost_count = 2\nkfactor = 2",
            "[cluster]\nhost_count = 3\nkfactor = 3",
            "[cluster]\nheartbeat_timeout_ms = 5",
            "[cluster]\nhosts = 3",
            "client_port = \"x\"",
            "nonsense = 1",
            "client_port = 70000",
            "max_outstanding_per_connection = 0",
            "[[users]]\nname = \"a\"\npassword = \"p\"\n[[users]]\nname = \"a\"\npassword = \"q\"",
            "[[users]]\nname = \"a\"",
            "[command_log]\nmode = \"always\"",
            "[command_log]\nfrequency_ms = 0",
            "[snapshot]\nretain = 0",
            "[elastic]\nduration_ms = 0",
            "[elastic]\nthroughput_mb = -1",
            "[elastic]\nbusy_percent = 0",
            "[elastic]\nbusy_percent = 101",
            "[elastic]\ntarget_p99_ms = -1",
            "transparent_huge_pages = 1",
            "network_threads = 0",
        ] {
            let e = apply_toml(&mut ServerConfig::default(), &mut OtherPorts::default(), bad).unwrap_err();
            assert_eq!(e.code(), joule_common::ErrorCode::InvalidArgument, "{bad}");
        }
    }
}
