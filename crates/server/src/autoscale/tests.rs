//! The policy, the figures and the configuration of the auto-scaler.

use super::*;
use joule_txn::stats::SiteStats;

fn policy() -> AutoscaleConfig {
    AutoscaleConfig {
        enabled: true,
        target_p99: Duration::from_millis(10),
        target_utilization: 80.0,
        min_hosts: 2,
        max_hosts: 4,
        intervals: 2,
        ..AutoscaleConfig::default()
    }
}

fn figures(p99_ms: Option<u64>, utilization: f64) -> Figures {
    let p99 = p99_ms.map(Duration::from_millis);
    Figures { calls: p99_ms.map_or(0, |_| 1000), p99, single_p99: p99, utilization, hosts: 2 }
}

fn situation(hosts: usize) -> Situation {
    Situation { hosts, copies: 1, busy: None, cooling: None, removable: Some([hosts as u64 - 1].into()) }
}

#[test]
fn a_broken_target_for_enough_intervals_scales_out_and_a_quiet_cluster_scales_in() {
    let p = policy();
    let mut s = Streaks::default();
    // One slow interval is not enough; two in a row are.
    assert_eq!(decide(&p, &mut s, &figures(Some(25), 10.0), &situation(2)), Decision::Hold(None));
    match decide(&p, &mut s, &figures(Some(25), 10.0), &situation(2)) {
        Decision::Out { hosts: 1, why } => {
            assert!(why.contains("p99 above the 10 ms target for 2 intervals"), "{why}");
            assert!(
                why.contains("p99 25.00 ms over 1000 calls, sites 10 % busy (figures of 2 host(s)); 2 hosts"),
                "{why}"
            );
        }
        d => panic!("{d:?}"),
    }
    assert_eq!(s, Streaks::default(), "the streak starts again after a change");
    // Busy sites alone count too; an interval back under the target
    // breaks the streak.
    decide(&p, &mut s, &figures(Some(1), 95.0), &situation(3));
    decide(&p, &mut s, &figures(Some(1), 50.0), &situation(3));
    assert_eq!(decide(&p, &mut s, &figures(Some(1), 95.0), &situation(3)), Decision::Hold(None));
    assert!(matches!(decide(&p, &mut s, &figures(Some(1), 95.0), &situation(3)), Decision::Out { .. }));
    // Quiet (no calls at all counts) for two intervals: the last host goes.
    decide(&p, &mut s, &figures(None, 0.0), &situation(3));
    match decide(&p, &mut s, &figures(Some(4), 30.0), &situation(3)) {
        Decision::In { hosts, why } => {
            assert_eq!(hosts, [2].into());
            assert!(why.contains("half their targets"), "{why}");
        }
        d => panic!("{d:?}"),
    }
    // Between half the target and the target: nothing.
    for _ in 0..5 {
        assert_eq!(decide(&p, &mut s, &figures(Some(7), 60.0), &situation(3)), Decision::Hold(None));
    }
}

#[test]
fn the_bounds_the_cooldown_and_changes_under_way_hold_the_scaler() {
    let p = policy();
    let hot = figures(Some(50), 99.0);
    let twice = |s: &Situation| {
        let mut streaks = Streaks::default();
        decide(&p, &mut streaks, &hot, s);
        decide(&p, &mut streaks, &hot, s)
    };
    let said = |d: Decision| match d {
        Decision::Hold(Some(held)) => held.to_string(),
        d => panic!("{d:?}"),
    };
    assert!(said(twice(&situation(4))).contains("1 more would pass max_hosts = 4"));
    let rebalancing = Situation { busy: Some("a rebalance is running".into()), ..situation(2) };
    assert!(said(twice(&rebalancing)).ends_with("but a rebalance is running"));
    let cooling = Situation { cooling: Some(Duration::from_secs(42)), ..situation(2) };
    assert!(said(twice(&cooling)).ends_with("the cooldown since the last change is not over"));
    // Never in below min_hosts, nor below k+1 hosts.
    let quiet = figures(None, 0.0);
    let mut s = Streaks::default();
    for _ in 0..4 {
        assert_eq!(decide(&p, &mut s, &quiet, &situation(2)), Decision::Hold(None));
    }
    let k1 = Situation { copies: 2, removable: Some([2, 3].into()), ..situation(4) };
    let one_host = AutoscaleConfig { min_hosts: 1, ..policy() };
    let mut s = Streaks::default();
    decide(&one_host, &mut s, &quiet, &k1);
    assert!(matches!(decide(&one_host, &mut s, &quiet, &k1), Decision::In { .. }));
    let k1_floor = Situation { hosts: 3, ..k1 };
    let mut s = Streaks::default();
    decide(&one_host, &mut s, &quiet, &k1_floor);
    assert_eq!(decide(&one_host, &mut s, &quiet, &k1_floor), Decision::Hold(None));
    // Nothing can leave: said once.
    let stuck = Situation { removable: None, ..situation(3) };
    let mut s = Streaks::default();
    decide(&p, &mut s, &quiet, &stuck);
    assert!(said(decide(&p, &mut s, &quiet, &stuck)).contains("no host can leave"));
}

fn site(partition: u32, idle_ms: u64, since_ms: u64, latencies_us: &[u64]) -> SiteStats {
    let mut latency = new_histogram();
    for l in latencies_us {
        latency.record(*l).unwrap();
    }
    SiteStats {
        partition: Some(partition),
        procedures: Default::default(),
        latency,
        queue_wait: new_histogram(),
        queue_depth: 0,
        idle: Duration::from_millis(idle_ms),
        since_start: Duration::from_millis(since_ms),
        tables: Vec::new(),
        fragments: 0,
    }
}

/// One host's totals: its sites' (partition, idle ms, since start ms) and
/// every call's latency (µs).
fn load(sites: &[(u32, u64, u64)], latencies_us: &[u64]) -> HostLoad {
    let mut latency = new_histogram();
    for l in latencies_us {
        latency.record(*l).unwrap();
    }
    let ms = Duration::from_millis;
    let first = sites.first().map(|(p, _, _)| *p);
    let sites = sites.iter().map(|(p, idle, since)| (*p, ms(*idle), ms(*since))).collect();
    HostLoad { latency: vec![(first, latency)], sites }
}

#[test]
fn the_single_partition_p99_leaves_the_coordinators_calls_out() {
    let mut sampler = Sampler::default();
    let mut coordinator = site(0, 0, 1000, &[30_000; 50]);
    coordinator.partition = None;
    let sites = [site(0, 500, 1000, &[100; 99]), site(1, 500, 1000, &[200; 99]), coordinator];
    let f = sampler.sample(&BTreeMap::from([(0, HostLoad::of(&sites))]), &BTreeSet::from([0]));
    assert_eq!(f.calls, 248);
    assert_eq!(f.p99.map(|d| d.as_millis()), Some(30));
    assert_eq!(f.single_p99.map(|d| d.as_micros()), Some(200));
    // A site that misses a sample: the interval has the others' calls, and
    // the next one its calls since its own last sample, not its history.
    let more = |s: &SiteStats, us: u64, n: usize| {
        let mut s = s.clone();
        (0..n).for_each(|_| s.latency.record(us).unwrap());
        s
    };
    let missing = [more(&sites[0], 100, 10)];
    let f = sampler.sample(&BTreeMap::from([(0, HostLoad::of(&missing))]), &BTreeSet::from([0]));
    assert_eq!((f.calls, f.single_p99.map(|d| d.as_micros())), (10, Some(100)));
    let back = [more(&missing[0], 100, 5), more(&sites[1], 20_000, 3), more(&sites[2], 30_000, 0)];
    let f = sampler.sample(&BTreeMap::from([(0, HostLoad::of(&back))]), &BTreeSet::from([0]));
    assert_eq!(f.calls, 8, "5 quick calls on partition 0, 3 slow ones on partition 1 since its last sample");
    assert_eq!(f.single_p99.map(|d| d.as_millis()), Some(20));
}

#[test]
fn figures_cover_the_interval_since_the_last_sample() {
    let mut sampler = Sampler::default();
    let one = BTreeSet::from([0]);
    let sample = |sampler: &mut Sampler, l: HostLoad| sampler.sample(&BTreeMap::from([(0, l)]), &one);
    let first = sample(&mut sampler, HostLoad::of(&[site(0, 500, 1000, &[100; 10]), site(1, 1000, 1000, &[])]));
    assert_eq!((first.calls, first.utilization.round(), first.hosts), (10, 25.0, 1));
    // Next interval: partition 0 idle all along, partition 1 busy all
    // along; 100 slow calls.
    let mut slow = vec![100; 10];
    slow.extend([20_000; 100]);
    let next = sample(&mut sampler, load(&[(0, 1500, 2000), (1, 1000, 2000)], &slow));
    assert_eq!(next.calls, 100);
    assert_eq!(next.p99.map(|d| d.as_millis()), Some(20));
    assert_eq!(next.utilization.round(), 50.0);
    let quiet = sample(&mut sampler, load(&[(0, 2500, 3000), (1, 2000, 3000)], &slow));
    assert_eq!((quiet.calls, quiet.p99, quiet.utilization.round()), (0, None, 0.0));
}

#[test]
fn figures_merge_every_host_and_follow_hosts_that_miss_a_sample() {
    let mut sampler = Sampler::default();
    let members = BTreeSet::from([0, 1]);
    let fast = [100u64; 99];
    // Interval 1: host 0 quick and idle, host 1 slow and busy. The p99 is
    // that of all 198 calls together (not either host's, nor an average).
    let mut slow = vec![100u64; 90];
    slow.extend([30_000; 9]);
    let loads = BTreeMap::from([(0, load(&[(0, 900, 1000)], &fast)), (1, load(&[(1, 100, 1000)], &slow))]);
    let f = sampler.sample(&loads, &members);
    assert_eq!((f.calls, f.hosts, f.utilization.round()), (198, 2, 50.0));
    assert_eq!(f.p99.map(|d| d.as_millis()), Some(30));
    // Interval 2: host 1 does not answer; the figures are host 0's.
    let fast2: Vec<u64> = fast.iter().chain(&fast).copied().collect();
    let f = sampler.sample(&BTreeMap::from([(0, load(&[(0, 1900, 2000)], &fast2))]), &members);
    assert_eq!((f.calls, f.hosts, f.utilization.round()), (99, 1, 0.0));
    // Interval 3: host 1 is back; its figures count from its last sample
    // (10 calls and 1 s busy since), not from its start.
    let mut slow3 = slow.clone();
    slow3.extend([100; 10]);
    let loads = BTreeMap::from([(0, load(&[(0, 2900, 3000)], &fast2)), (1, load(&[(1, 100, 3000)], &slow3))]);
    let f = sampler.sample(&loads, &members);
    assert_eq!((f.calls, f.hosts), (10, 2));
    assert_eq!(f.utilization.round(), 67.0, "host 0 idle its 1 s, host 1 busy its 2 s: {f:?}");
}

#[test]
fn the_configuration_refuses_what_cannot_work() {
    let parse = |text: &str| -> Result<AutoscaleConfig> {
        let mut c = AutoscaleConfig::default();
        let file: FileAutoscale = toml::from_str(text).map_err(|e| err!(InvalidArgument, "{e}"))?;
        apply(&mut c, file).map(|()| c)
    };
    let c = parse(
        "enabled = true\nprovider = \"command\"\ncommand = \"/opt/scale.sh\"\ntarget_p99_ms = 2.5\n\
         target_utilization = 60\nmin_hosts = 2\nmax_hosts = 6\ncooldown_s = 30\nstep = 2\ninterval_ms = 500\nintervals = 4",
    )
    .unwrap();
    assert_eq!(c.provider, Provider::Command { command: "/opt/scale.sh".into() });
    assert_eq!((c.target_p99, c.target_utilization), (Duration::from_micros(2500), 60.0));
    assert_eq!((c.min_hosts, c.max_hosts, c.step, c.intervals), (2, 6, 2, 4));
    assert_eq!((c.cooldown, c.interval), (Duration::from_secs(30), Duration::from_millis(500)));
    assert_eq!(parse("dir = \"/scale\"").unwrap().provider, Provider::Local { dir: Some("/scale".into()) });
    for bad in [
        "provider = \"command\"",
        "provider = \"cloud\"",
        "command = \"x\"",
        "target_p99_ms = 0",
        "target_utilization = 120",
        "min_hosts = 5\nmax_hosts = 4",
        "min_hosts = 0",
        "cooldown_s = -1",
        "step = 0",
        "interval_ms = 5",
        "intervals = 0",
        "sideways = true",
    ] {
        assert!(parse(bad).is_err(), "{bad}");
    }
}

#[tokio::test]
async fn the_command_provider_runs_the_script_with_its_arguments_and_says_why_it_failed() {
    let dir = std::env::temp_dir().join(format!("joule-autoscale-cmd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("scale.sh");
    let out = dir.join("calls");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$@ join=$JOULE_JOIN k=$JOULE_KFACTOR\" >> {out:?}\n\
             if [ \"$1\" = remove ]; then echo 'no such machine' >&2; exit 3; fi\n"
        ),
    )
    .unwrap();
    let command = format!("sh {}", script.display());
    let env = [("JOULE_JOIN", "db1:3021".to_string()), ("JOULE_KFACTOR", "1".to_string())];
    provider::run_command(&command, &["add".into(), "2".into()], &env).await.unwrap();
    let e = provider::run_command(&command, &["remove".into(), "4".into(), "5".into()], &[]).await.unwrap_err();
    assert!(e.to_string().contains("remove 4 5 failed (exit status: 3): no such machine"), "{e}");
    let calls = std::fs::read_to_string(&out).unwrap();
    assert_eq!(calls, "add 2 join=db1:3021 k=1\nremove 4 5 join= k=\n");
    let e = provider::run_command("/nonexistent/scale", &["add".into(), "1".into()], &[]).await.unwrap_err();
    assert!(e.to_string().contains("failed"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
