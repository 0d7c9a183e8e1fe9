//! Multi-host clusters of real `joule` processes on loopback, on ports
//! chosen at run time: forming, failure detection after `kill -9` and
//! `SIGSTOP`, a killed host taking its place again, `@StopNode`, and what
//! `@Statistics` and `joule status` say at each step.

mod common;

use common::TempDir;
use joule_client::{Options, SyncConnection};
use joule_common::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// One host of a test cluster.
struct Host {
    child: Child,
    id: u64,
    client: String,
    admin: String,
    internal: String,
    /// Every stderr line, as it comes.
    stderr: mpsc::Receiver<String>,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A started `joule start` whose ready line has not come yet.
struct Starting {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

fn lines(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn spawn(dir: &std::path::Path, extra: &[&str]) -> Starting {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_joule"));
    cmd.args(["start", "--client-port", "0", "--admin-port", "0", "--http-port", "0", "--internal-port", "0"])
        .args(["--sites", "2", "--command-log", "off", "--dir"])
        .arg(dir)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("joule starts");
    let stdout = lines(child.stdout.take().unwrap());
    let stderr = lines(child.stderr.take().unwrap());
    Starting { child, stdout, stderr }
}

/// The first line from `rx` containing `needle` (within 30 s).
fn wait_line(rx: &mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(e) => panic!("no line containing {needle:?}: {e}"),
        }
    }
}

fn field<'a>(line: &'a str, label: &str) -> &'a str {
    let at = line.find(label).unwrap_or_else(|| panic!("{label} in {line}")) + label.len();
    line[at..].split([' ', ',', ')', ';']).next().unwrap()
}

/// `127.0.0.1:PORT` for an address a node listens on (on every interface).
fn loopback(listening: &str) -> String {
    format!("127.0.0.1:{}", listening.rsplit(':').next().unwrap())
}

/// The internal port the forming host announces on stderr.
fn forming_port(starting: &Starting) -> String {
    let line = wait_line(&starting.stderr, "forming a cluster");
    field(&line, "internal port ").trim_end_matches(':').to_string()
}

impl Starting {
    fn ready(self) -> Host {
        let line = wait_line(&self.stdout, "JouleDB ready");
        Host {
            id: field(&line, "host ").parse().unwrap(),
            client: loopback(field(&line, "client ")),
            admin: loopback(field(&line, "admin ")),
            internal: field(&line, "internal ").to_string(),
            child: self.child,
            stderr: self.stderr,
        }
    }
}

/// Form a cluster of `n` hosts with k-factor `k` in `dirs`.
fn form(dirs: &[TempDir], k: u32) -> Vec<Host> {
    let n = dirs.len().to_string();
    let k = k.to_string();
    let shape = ["--host-count", n.as_str(), "--kfactor", k.as_str()];
    let first = spawn(dirs[0].path(), &shape);
    let join = format!("127.0.0.1:{}", forming_port(&first));
    let rest: Vec<Starting> =
        dirs[1..].iter().map(|d| spawn(d.path(), &[&shape[..], &["--join", join.as_str()]].concat())).collect();
    let mut hosts = vec![first.ready()];
    hosts.extend(rest.into_iter().map(Starting::ready));
    hosts.sort_by_key(|h| h.id);
    hosts
}

fn connect(addr: &str) -> SyncConnection {
    SyncConnection::connect(addr, &Options::default()).expect("connects")
}

/// `@Statistics selector` rows, cells as text.
fn stats(addr: &str, selector: &str) -> Vec<Vec<String>> {
    let r = connect(addr).call("@Statistics", vec![Value::from(selector), Value::Integer(0)]).expect(selector);
    r.tables[0]
        .rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    v => v.to_string(),
                })
                .collect()
        })
        .collect()
}

/// Host id → state, from `@Statistics CLUSTER` on `addr`.
fn states(addr: &str) -> Vec<(u64, String)> {
    stats(addr, "CLUSTER").into_iter().map(|r| (r[0].parse().unwrap(), r[3].clone())).collect()
}

fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "not within 20 s: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn status(addr: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_joule")).args(["status", "--servers", addr]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Every partition in TOPO (as `addr` sees it) led by a host that is up.
fn every_partition_led_by_a_live_host(addr: &str) -> bool {
    let up: Vec<String> = states(addr).into_iter().filter(|(_, s)| s == "UP").map(|(h, _)| h.to_string()).collect();
    let topo = stats(addr, "TOPO");
    topo[..topo.len() - 1].iter().all(|r| r[2].split(':').next().is_some_and(|l| up.iter().any(|h| h == l)))
}

#[test]
fn three_hosts_form_fail_over_rejoin_and_stop() {
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("cluster-{i}"))).collect();
    let mut hosts = form(&dirs, 1);
    assert_eq!(hosts.iter().map(|h| h.id).collect::<Vec<_>>(), vec![0, 1, 2]);

    // Every host sees the same cluster: 3 hosts up, 3 partitions with two
    // copies each on distinct hosts, one leader each, leaders spread.
    for h in &hosts {
        assert_eq!(states(&h.client), vec![(0, "UP".into()), (1, "UP".into()), (2, "UP".into())]);
        let recorded: Vec<String> = stats(&h.client, "CLUSTER").into_iter().map(|r| r[1].clone()).collect();
        assert_eq!(recorded, hosts.iter().map(|h| h.internal.clone()).collect::<Vec<_>>());
        let topo = stats(&h.client, "TOPO");
        assert_eq!(topo.len(), 4, "{topo:?}");
        for r in &topo[..3] {
            let copies: Vec<&str> = r[1].split(',').map(|s| s.split(':').next().unwrap()).collect();
            assert_eq!(copies.len(), 2);
            assert_ne!(copies[0], copies[1]);
        }
        let leaders: std::collections::BTreeSet<&str> = topo[..3].iter().map(|r| r[2].as_str()).collect();
        assert_eq!(leaders.len(), 3, "one partition led by each host: {topo:?}");
        assert_eq!(stats(&h.client, "PARTITIONCOUNT")[0][3], "3");
        assert!(stats(&h.client, "KSAFETY").iter().all(|r| r[4] == "0"));
    }
    let first = status(&hosts[1].client);
    assert!(first.starts_with("3 of 3 hosts up, k-factor 1, 3 partitions; redundancy full"), "{first}");

    // Transactions are refused with a stable code, not run on one host's
    // copy of the data.
    let e = connect(&hosts[1].client).call("@AdHoc", vec![Value::from("select 1")]).unwrap_err();
    assert_eq!(e.code(), joule_common::ErrorCode::FeatureNotSupported, "{e}");

    // kill -9 the forming host (which led the metadata group): the others
    // elect a leader, declare it failed, and lead its partitions.
    let _ = hosts[0].child.kill();
    let _ = hosts[0].child.wait();
    eventually("host 0 declared failed", || states(&hosts[1].client)[0].1 == "FAILED");
    assert!(every_partition_led_by_a_live_host(&hosts[1].client));
    assert!(
        every_partition_led_by_a_live_host(&hosts[2].client) || {
            // Host 2 may apply the change a moment later.
            std::thread::sleep(Duration::from_millis(500));
            every_partition_led_by_a_live_host(&hosts[2].client)
        }
    );
    let missing: usize = stats(&hosts[2].client, "KSAFETY").iter().map(|r| r[4].parse::<usize>().unwrap()).sum();
    assert_eq!(missing, 2, "host 0 held two partitions' copies");
    let reduced = status(&hosts[2].client);
    assert!(reduced.starts_with("2 of 3 hosts up, k-factor 1, 3 partitions; redundancy reduced"), "{reduced}");
    let log = wait_line(&hosts[1].stderr, "host 0 (");
    assert!(log.contains("failed (failure detection)"), "{log}");

    // Started again on its data directory, host 0 takes its place again.
    let again = spawn(dirs[0].path(), &["--host-count", "3", "--kfactor", "1"]).ready();
    assert_eq!(again.id, 0);
    hosts[0] = again;
    eventually("host 0 up again", || states(&hosts[1].client).iter().all(|(_, s)| s == "UP"));
    let full = status(&hosts[0].client);
    assert!(full.starts_with("3 of 3 hosts up, k-factor 1, 3 partitions; redundancy full"), "{full}");

    // @StopNode takes host 2 out, and its process exits.
    connect(&hosts[0].admin).call("@StopNode", vec![Value::Integer(2)]).expect("stops host 2");
    let exited = hosts[2].child.wait().unwrap();
    assert!(exited.success(), "a stopped host exits cleanly: {exited:?}");
    assert_eq!(states(&hosts[0].client)[2].1, "STOPPED");
    // Stopping another would leave a partition without a copy: refused.
    let e = connect(&hosts[0].admin).call("@StopNode", vec![Value::Integer(1)]).unwrap_err();
    assert!(e.to_string().contains("k-safety"), "{e}");
    let e = connect(&hosts[0].admin).call("@StopNode", vec![Value::Integer(7)]).unwrap_err();
    assert!(e.to_string().contains("not a member"), "{e}");
}

#[test]
fn a_hung_host_is_declared_failed_and_stops_when_it_wakes() {
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("hung-{i}"))).collect();
    let mut hosts = form(&dirs, 1);
    let pid = hosts[2].child.id() as libc::pid_t;
    // SAFETY: signalling a child process this test started.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    eventually("the hung host declared failed", || states(&hosts[0].client)[2].1 == "FAILED");
    assert!(every_partition_led_by_a_live_host(&hosts[0].client));
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    // It finds the cluster moved on without it, and stops rather than serve.
    let status = hosts[2].child.wait().unwrap();
    assert!(!status.success());
    let said = wait_line(&hosts[2].stderr, "JouleDB stopped");
    assert!(said.contains("declared host 2 failed"), "{said}");
}

#[test]
fn mismatched_settings_are_refused_at_join() {
    let dirs: Vec<TempDir> = (0..2).map(|i| TempDir::new(&format!("mismatch-{i}"))).collect();
    let first = spawn(dirs[0].path(), &["--host-count", "2", "--kfactor", "1"]);
    let join = format!("127.0.0.1:{}", forming_port(&first));
    let out = Command::new(env!("CARGO_BIN_EXE_joule"))
        .args(["start", "--client-port", "0", "--admin-port", "0", "--http-port", "0", "--internal-port", "0"])
        .args(["--sites", "2", "--host-count", "2", "--kfactor", "0", "--join", &join, "--dir"])
        .arg(dirs[1].path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("k-factor 0 (this cluster: 1)"), "{err}");
    let mut first = first;
    let _ = first.child.kill();
    let _ = first.child.wait();
    // Settings that cannot work are refused before anything starts.
    let out = Command::new(env!("CARGO_BIN_EXE_joule"))
        .args(["start", "--host-count", "2", "--kfactor", "2", "--dir"])
        .arg(dirs[1].path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs at least 3 hosts"));
}
