//! The auto-scaler over real processes: a 2-host cluster whose policy's
//! latency target any call breaks adds a host of its own (the local
//! provider starts a `joule` process) under a voter load, with no failed
//! vote; once the load stops, the host leaves again and its process ends.
//! The same through the `command` provider (a real script that starts the
//! host), on a load that only the host that does not decide answers.

mod common;

use common::cluster::{all_up_and_led, form_all, http_get, states, stats, status, wait_until};
use common::voters::{setup, vote_totals, vote_until_stopped};
use common::TempDir;
use std::path::PathBuf;
use std::time::Duration;

/// Kills whatever the auto-scaler started under a directory, should the
/// test fail before those hosts leave by themselves.
struct Reaper(PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = std::process::Command::new("pkill").arg("-9").arg("-f").arg(self.0.as_os_str()).status();
    }
}

/// Wait (90 s at most) until host `http`'s events contain `needle`.
fn event(http: &str, needle: &str) {
    let seen = wait_until(Duration::from_secs(90), || http_get(http, "/console/stats").contains(needle));
    assert!(seen, "no event {needle:?} within 90 s: {}", http_get(http, "/console/stats"));
}

/// A cluster of `dirs.len()` hosts whose policy (written to `joule.toml`
/// in `config_dir`, with `provider`'s lines) any call breaks — a p99
/// target of 1 µs — between 2 and 3 hosts, deciding every 300 ms; once
/// its auto-scaler is on.
fn scaling_cluster(dirs: &[TempDir], config_dir: &TempDir, provider: &str) -> Vec<common::cluster::Host> {
    std::fs::create_dir_all(config_dir.path()).unwrap();
    let config = config_dir.path().join("joule.toml");
    std::fs::write(
        &config,
        format!(
            "[elastic]\nduration_ms = 5\nthroughput_mb = 0\n\
             [autoscale]\nenabled = true\n{provider}\n\
             target_p99_ms = 0.001\ntarget_utilization = 100\nmin_hosts = 2\nmax_hosts = 3\n\
             cooldown_s = 1\ninterval_ms = 300\nintervals = 2\n"
        ),
    )
    .unwrap();
    let hosts = form_all(dirs, 0, &["--config", config.to_str().unwrap()]);
    all_up_and_led(&hosts);
    event(&hosts[0].http, "autoscaler: on: targets p99 0.001 ms");
    hosts
}

#[test]
fn the_local_provider_adds_a_host_under_a_load_that_breaks_the_target_and_removes_it_after() {
    let dirs: Vec<TempDir> = (0..2).map(|i| TempDir::new(&format!("autoscale-{i}"))).collect();
    let scaled = TempDir::new("autoscale-hosts");
    let _reaper = Reaper(scaled.path().to_path_buf());
    let config_dir = TempDir::new("autoscale-config");
    let provider = format!("provider = \"local\"\ndir = {:?}", scaled.path());
    let hosts = scaling_cluster(&dirs, &config_dir, &provider);
    let clients: Vec<String> = hosts.iter().map(|h| h.client.clone()).collect();
    let decider = &hosts[0].http;

    // Under the voter load every interval breaks the target: one host more.
    setup(&clients[0]);
    let voters = vote_until_stopped(&clients, 7, false);
    event(decider, "autoscaler: scale out by 1 host(s): p99 above the 0.001 ms target for 2 intervals");
    event(decider, "autoscaler: hosts [2] joined");
    let three = wait_until(Duration::from_secs(60), || {
        states(&clients[1]).iter().filter(|(_, s)| s == "UP").count() == 3
            && stats(&clients[0], "REBALANCE").first().is_some_and(|r| r[3] == "DONE")
    });
    assert!(three, "three hosts, the ranges moved: {:?}", states(&clients[1]));
    // At the maximum, the load asks for more: said, not done.
    event(decider, "1 more would pass max_hosts = 3");
    let (accepted, unknown) = voters.finish();
    assert_eq!(unknown, 0);
    for c in &clients {
        assert_eq!(vote_totals(c), [accepted; 3], "every accepted vote counted once, as seen from {c}");
    }

    // The load stopped: the added host leaves, and its process ends.
    event(decider, "autoscaler: scale in: hosts {2} leave: p99 and utilization at half their targets");
    event(decider, "autoscaler: hosts {2} left the cluster");
    // (Host 1 may apply the removal a moment after the host that decided.)
    let left = wait_until(Duration::from_secs(10), || {
        states(&clients[1]) == vec![(0, "UP".to_string()), (1, "UP".to_string())]
    });
    assert!(left, "{:?}", states(&clients[1]));
    let log = scaled.path().join("host-1").join("joule.log");
    let stopped = wait_until(Duration::from_secs(60), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("was removed from the cluster") && l.contains("stopped"))
    });
    assert!(stopped, "the added host stopped: {}", std::fs::read_to_string(&log).unwrap_or_default());
    for c in &clients {
        assert_eq!(vote_totals(c), [accepted; 3]);
    }
    let table = stats(&clients[0], "AUTOSCALER");
    assert_eq!(table[0][3], "1", "{table:?}");
    let said = status(&clients[0]);
    assert!(said.contains("autoscaler: DECIDING (as host 0 sees it); last: autoscaler: hosts {2} left"), "{said}");
}

#[test]
fn the_command_provider_runs_the_script_on_figures_gathered_from_every_host() {
    use common::cluster::{connect, scalar};
    use joule_common::{hashinator::Hashinator, Value};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    let dirs: Vec<TempDir> = (0..2).map(|i| TempDir::new(&format!("autoscale-cmd-{i}"))).collect();
    let scaled = TempDir::new("autoscale-cmd-hosts");
    let _reaper = Reaper(scaled.path().to_path_buf());
    std::fs::create_dir_all(scaled.path()).unwrap();
    // The operator's script: logs each call with its environment and, for
    // `add COUNT`, starts that many hosts joining the cluster.
    let said = scaled.path().join("calls.log");
    let script = scaled.path().join("provider.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             echo \"$* join=$JOULE_JOIN k=$JOULE_KFACTOR sites=$JOULE_SITES removed=$JOULE_REMOVED\" >> {said:?}\n\
             if [ \"$1\" = add ]; then\n\
               n=0\n\
               while [ \"$n\" -lt \"$2\" ]; do\n\
                 n=$((n + 1)); d={dir:?}/host-$$-$n; mkdir -p \"$d\"\n\
                 {joule:?} start --add --join \"$JOULE_JOIN\" --kfactor \"$JOULE_KFACTOR\" --sites \"$JOULE_SITES\" \
                   --dir \"$d\" --client-port 0 --admin-port 0 --http-port 0 --internal-port 0 \
                   </dev/null >\"$d/joule.log\" 2>&1 &\n\
               done\n\
             fi\n",
            dir = scaled.path(),
            joule = env!("CARGO_BIN_EXE_joule"),
        ),
    )
    .unwrap();
    let provider = format!("provider = \"command\"\ncommand = \"sh {}\"", script.display());
    let hosts = scaling_cluster(&dirs, &scaled, &provider);
    let decider = &hosts[0].http;

    // A load on host 1's partitions only, through host 1: the deciding
    // host 0 answers none of it, and sees it in host 1's figures.
    let led_by_1: Vec<u32> = stats(&hosts[1].client, "TOPO")
        .iter()
        .filter(|r| r[2].starts_with("1:"))
        .map(|r| r[0].parse().unwrap())
        .collect();
    assert_eq!(led_by_1.len(), 2, "{:?}", stats(&hosts[1].client, "TOPO"));
    let ring = Hashinator::even(4, 1).unwrap();
    let on_1 = |k: &i64| led_by_1.contains(&ring.partition_for(&Value::Integer(*k)).unwrap());
    let keys: Vec<i64> = (0..).filter(on_1).take(200).collect();
    let through = hosts[1].client.clone();
    let mut c = connect(&through);
    c.execute(
        "CREATE TABLE kv (k BIGINT NOT NULL PRIMARY KEY, v BIGINT NOT NULL); PARTITION TABLE kv ON COLUMN k; \
         CREATE PROCEDURE Bump PARTITION ON TABLE kv COLUMN k AS UPDATE kv SET v = v + 1 WHERE k = ?",
        vec![],
    )
    .expect("schema");
    for k in &keys {
        c.execute("INSERT INTO kv VALUES (?, 0)", vec![Value::Integer(*k)]).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let bumped = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, bumped, keys) = (stop.clone(), bumped.clone(), keys.clone());
        std::thread::spawn(move || {
            let mut c = connect(&through);
            for k in keys.iter().cycle() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let r = c.call("Bump", vec![Value::Integer(*k)]);
                assert!(r.is_ok(), "a write failed: {r:?}");
                bumped.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    event(decider, "autoscaler: scale out by 1 host(s): p99 above the 0.001 ms target for 2 intervals");
    let out = http_get(decider, "/console/stats");
    assert!(out.contains("(figures of 2 host(s)); 2 hosts"), "{out}");
    event(decider, "autoscaler: hosts [2] joined");
    let clients: Vec<String> = hosts.iter().map(|h| h.client.clone()).collect();
    let three = wait_until(Duration::from_secs(60), || {
        states(&clients[0]).iter().filter(|(_, s)| s == "UP").count() == 3
            && stats(&clients[0], "REBALANCE").first().is_some_and(|r| r[3] == "DONE")
    });
    assert!(three, "three hosts, the ranges moved: {:?}", states(&clients[0]));
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();

    // Quiet: the added host leaves, then the script hears of it.
    event(decider, "autoscaler: hosts {2} left the cluster");
    let calls = || std::fs::read_to_string(&said).unwrap_or_default();
    let heard = wait_until(Duration::from_secs(30), || calls().lines().any(|l| l.starts_with("remove 2 ")));
    assert!(heard, "{}", calls());
    let text = calls();
    let lines: Vec<&str> = text.lines().collect();
    // JOULE_JOIN is host 0's internal address.
    let port = hosts[0].internal.rsplit(':').next().unwrap();
    assert!(lines[0].starts_with("add 1 join=") && lines[0].contains(&format!(":{port} k=0 sites=2")), "{lines:?}");
    assert!(lines[1].starts_with("remove 2 ") && lines[1].contains("removed=2="), "{lines:?}");
    assert_eq!(lines.len(), 2, "{lines:?}");
    // (Host 1 may apply the removal a moment after the host that decided.)
    let left = wait_until(Duration::from_secs(10), || {
        states(&clients[1]) == vec![(0, "UP".to_string()), (1, "UP".to_string())]
    });
    assert!(left, "{:?}", states(&clients[1]));
    for c in &clients {
        assert_eq!(scalar(c, "SELECT SUM(v) FROM kv"), bumped.load(Ordering::SeqCst) as i64);
    }
    // The figures cover the hosts there are (3 while host 2 was in).
    let two = wait_until(Duration::from_secs(10), || stats(&clients[0], "AUTOSCALER")[0][14] == "2");
    assert!(two, "figures of both hosts: {:?}", stats(&clients[0], "AUTOSCALER"));
}
