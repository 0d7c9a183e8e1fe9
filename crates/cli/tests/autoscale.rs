//! The auto-scaler over real processes: a 2-host cluster whose policy's
//! latency target any call breaks adds a host of its own (the local
//! provider starts a `joule` process) under a voter load, with no failed
//! vote; once the load stops, the host leaves again and its process ends.

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

#[test]
fn the_local_provider_adds_a_host_under_a_load_that_breaks_the_target_and_removes_it_after() {
    let dirs: Vec<TempDir> = (0..2).map(|i| TempDir::new(&format!("autoscale-{i}"))).collect();
    let scaled = TempDir::new("autoscale-hosts");
    let _reaper = Reaper(scaled.path().to_path_buf());
    let config_dir = TempDir::new("autoscale-config");
    std::fs::create_dir_all(config_dir.path()).unwrap();
    let config = config_dir.path().join("joule.toml");
    std::fs::write(
        &config,
        format!(
            "[elastic]\nduration_ms = 5\nthroughput_mb = 0\n\
             [autoscale]\nenabled = true\nprovider = \"local\"\ndir = {:?}\n\
             target_p99_ms = 0.001\ntarget_utilization = 100\nmin_hosts = 2\nmax_hosts = 3\n\
             cooldown_s = 1\ninterval_ms = 300\nintervals = 2\n",
            scaled.path()
        ),
    )
    .unwrap();
    let hosts = form_all(&dirs, 0, &["--config", config.to_str().unwrap()]);
    all_up_and_led(&hosts);
    let clients: Vec<String> = hosts.iter().map(|h| h.client.clone()).collect();
    let decider = &hosts[0].http;
    event(decider, "autoscaler: on: targets p99 0.001 ms");

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
    assert_eq!(states(&clients[1]), vec![(0, "UP".to_string()), (1, "UP".to_string())]);
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
