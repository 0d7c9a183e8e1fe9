//! Metadata failover time: three members on loopback with failure
//! detection at its default settings; the member leading the metadata
//! group (and some partitions) is stopped, and the clock runs until a
//! surviving member's metadata shows every partition led by a live host.
//! That is the metadata's share of a failover (detection, an election, the
//! change committed and applied); the data path's repair step adds to it.
//!
//! ```sh
//! cargo bench -p joule-cluster --bench failover     # JOULE_BENCH_ROUNDS (5)
//! ```

use joule_cluster::{Command, DetectorSettings, HostInfo, HostState, MetadataNode};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

async fn round(i: u64) -> Duration {
    let dir = std::env::temp_dir().join(format!("joule-failover-{}-{i}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut nodes = Vec::new();
    for id in 1..=3u64 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        nodes.push(MetadataNode::start(id, &dir.join(id.to_string()), listener).await.expect("start"));
    }
    let members: BTreeMap<u64, String> = nodes.iter().map(|n| (n.id(), n.address().to_string())).collect();
    nodes[0].initialize(members.clone()).await.expect("initialize");
    let hosts = members
        .iter()
        .map(|(id, a)| {
            (
                *id,
                HostInfo {
                    internal_address: a.clone(),
                    client_address: String::new(),
                    state: HostState::Up,
                    incarnation: 0,
                },
            )
        })
        .collect();
    nodes[0].propose(Command::Form { kfactor: 1, sites_per_host: 2, hosts }).await.expect("form");
    for n in &mut nodes {
        n.wait_for(Duration::from_secs(10), |m| m.formed).await.expect("formed");
        n.detect_failures(DetectorSettings::default());
    }
    let leader = nodes[0].leader().expect("a leader");
    let at = nodes.iter().position(|n| n.id() == leader).expect("leader is a member");
    let victim = nodes.remove(at);
    let killed = Instant::now();
    victim.shutdown().await;
    nodes[0]
        .wait_for(Duration::from_secs(30), |m| {
            !m.is_up(leader) && m.partitions.iter().all(|p| p.leader.is_some_and(|l| l != leader))
        })
        .await
        .expect("failed over");
    let took = killed.elapsed();
    for n in nodes {
        n.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    took
}

fn main() {
    let rounds: u64 = std::env::var("JOULE_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let settings = DetectorSettings::default();
    let mut times: Vec<Duration> = Vec::new();
    for i in 0..rounds {
        let t = rt.block_on(round(i));
        println!("round {i}: metadata failed over in {:.0} ms", t.as_secs_f64() * 1000.0);
        times.push(t);
    }
    times.sort();
    println!(
        "metadata failover (ping every {:?}, timeout {:?}), {rounds} rounds: median {:.0} ms, max {:.0} ms",
        settings.interval,
        settings.timeout,
        times[times.len() / 2].as_secs_f64() * 1000.0,
        times[times.len() - 1].as_secs_f64() * 1000.0
    );
}
