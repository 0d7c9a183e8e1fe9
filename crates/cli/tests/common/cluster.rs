//! Clusters of real `joule` processes for end-to-end tests: forming one
//! on loopback (ports chosen at run time), reading what its hosts say, and
//! starting a host again.

#![allow(dead_code)]

use super::TempDir;
use joule_client::{Options, SyncConnection};
use joule_common::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// One host of a test cluster.
pub struct Host {
    pub child: Child,
    pub id: u64,
    pub client: String,
    pub admin: String,
    pub http: String,
    pub internal: String,
    /// Every stderr line, as it comes.
    pub stderr: mpsc::Receiver<String>,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A started `joule start` whose ready line has not come yet.
pub struct Starting {
    pub child: Child,
    pub stdout: mpsc::Receiver<String>,
    pub stderr: mpsc::Receiver<String>,
}

/// Each line `r` gives, as it comes. With `JOULE_ECHO_HOSTS` set, every
/// line is also printed (prefixed by `who`): a run that hangs still shows
/// what the hosts said.
pub fn lines(r: impl std::io::Read + Send + 'static, who: String) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let echo = std::env::var_os("JOULE_ECHO_HOSTS").is_some();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if echo {
                // Seconds since the test began, to line hosts' words up.
                static BEGAN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
                let at = BEGAN.get_or_init(std::time::Instant::now).elapsed().as_secs_f64();
                eprintln!("[{at:8.3} {who}] {line}");
            }
            if tx.send(line).is_err() && !echo {
                break;
            }
        }
    });
    rx
}

/// Arm the failpoint `name` on the host whose directory is `dir`.
pub fn arm(dir: &std::path::Path, name: &str) {
    let points = dir.join("failpoints");
    std::fs::create_dir_all(&points).unwrap();
    std::fs::write(points.join(name), b"").unwrap();
}

/// Disarm every failpoint on the host whose directory is `dir`.
pub fn disarm(dir: &std::path::Path) {
    let _ = std::fs::remove_dir_all(dir.join("failpoints"));
}

pub fn spawn(dir: &std::path::Path, extra: &[&str]) -> Starting {
    spawn_command(Command::new(env!("CARGO_BIN_EXE_joule")), dir, extra)
}

/// [`spawn`] under a file-size limit of `blocks` 512-byte blocks (`ulimit
/// -f`): writes past it fail with `EFBIG`, as on a full file system.
pub fn spawn_limited(dir: &std::path::Path, extra: &[&str], blocks: u64) -> Starting {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &format!("ulimit -f {blocks} && exec \"$0\" \"$@\""), env!("CARGO_BIN_EXE_joule")]);
    spawn_command(cmd, dir, extra)
}

fn spawn_command(mut cmd: Command, dir: &std::path::Path, extra: &[&str]) -> Starting {
    // A host that restarts comes back on its recorded internal port
    // (`0` picks it); a new one gets a port the kernel never hands out for
    // outgoing connections, so that nothing can hold it when it restarts.
    let internal = if dir.join("cluster").join("host-id").exists() {
        0
    } else {
        joule_common::testing::stable_port(super::rand_suffix())
    };
    cmd.args(["start", "--client-port", "0", "--admin-port", "0", "--http-port", "0"]);
    if !extra.contains(&"--internal-port") {
        cmd.args(["--internal-port", &internal.to_string()]);
    }
    // Fault injection (`joule_common::failpoint`): a test arms a point on
    // this host by creating a file there.
    cmd.env("JOULE_FAILPOINTS", dir.join("failpoints"));
    // No copy logs unless the test asks for them.
    if !extra.contains(&"--command-log") {
        cmd.args(["--command-log", "off"]);
    }
    cmd.args(["--sites", "2", "--dir"]).arg(dir).args(extra).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("joule starts");
    let who = format!("{} pid {}", dir.file_name().map_or(String::new(), |n| n.to_string_lossy().into()), child.id());
    let stdout = lines(child.stdout.take().unwrap(), who.clone());
    let stderr = lines(child.stderr.take().unwrap(), who);
    Starting { child, stdout, stderr }
}

/// The first line from `rx` containing `needle` (within 30 s).
pub fn wait_line(rx: &mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains(needle) => return line,
            Ok(line) => seen.push(line),
            Err(e) => panic!("no line containing {needle:?} ({e}); the lines before:\n{}", seen.join("\n")),
        }
    }
}

pub fn field<'a>(line: &'a str, label: &str) -> &'a str {
    let at = line.find(label).unwrap_or_else(|| panic!("{label} in {line}")) + label.len();
    line[at..].split([' ', ',', ')', ';']).next().unwrap()
}

/// `127.0.0.1:PORT` for an address a node listens on (on every interface).
pub fn loopback(listening: &str) -> String {
    format!("127.0.0.1:{}", listening.rsplit(':').next().unwrap())
}

/// The internal port the forming host announces on stderr.
pub fn forming_port(starting: &Starting) -> String {
    let line = wait_line(&starting.stderr, "forming a cluster");
    field(&line, "internal port ").trim_end_matches(':').to_string()
}

impl Starting {
    /// Wait until the forming host `first` says host `i` (this one) joined;
    /// if it does not within 30 s, or this host exits, fail with what both
    /// hosts said.
    fn wait_joined(&mut self, first: &Starting, i: usize) {
        let needle = format!("host {i} joined");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        loop {
            match first.stderr.recv_timeout(Duration::from_millis(200)) {
                Ok(line) if line.contains(&needle) => return,
                Ok(line) => seen.push(line),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => seen.push("(the forming host's output ended)".into()),
            }
            let exited = self.child.try_wait().ok().flatten();
            let ended = seen.last().is_some_and(|l| l.starts_with("(the forming host's output ended"));
            if exited.is_some() || ended || Instant::now() >= deadline {
                std::thread::sleep(Duration::from_millis(200));
                let said: Vec<String> = self.stderr.try_iter().collect();
                panic!(
                    "no line containing {needle:?} (joiner exited: {exited:?}); the forming host said:\n{}\nthe \
                     joiner said:\n{}",
                    seen.join("\n"),
                    said.join("\n")
                );
            }
        }
    }

    pub fn ready(self) -> Host {
        let deadline = Instant::now() + Duration::from_secs(60);
        let line = loop {
            match self.stdout.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if line.contains("JouleDB ready") => break line,
                Ok(_) => {}
                Err(e) => {
                    let said: Vec<String> = self.stderr.try_iter().collect();
                    panic!("no ready line ({e}); the host said:\n{}", said.join("\n"));
                }
            }
        };
        Host {
            id: field(&line, "host ").parse().unwrap(),
            client: loopback(field(&line, "client ")),
            admin: loopback(field(&line, "admin ")),
            http: loopback(field(&line, "http ")),
            internal: field(&line, "internal ").to_string(),
            child: self.child,
            stderr: self.stderr,
        }
    }
}

/// Form a cluster of `n` hosts with k-factor `k` in `dirs`: host `i` in
/// `dirs[i]` (each joins once the one before has), returned in that order.
pub fn form(dirs: &[TempDir], k: u32) -> Vec<Host> {
    form_with(dirs, k, &[])
}

/// [`form`], the forming host started with `first_extra` too.
pub fn form_with(dirs: &[TempDir], k: u32, first_extra: &[&str]) -> Vec<Host> {
    form_each(dirs, k, |i| if i == 0 { first_extra.to_vec() } else { Vec::new() })
}

/// [`form`], every host started with `extra` too.
pub fn form_all(dirs: &[TempDir], k: u32, extra: &[&str]) -> Vec<Host> {
    form_each(dirs, k, |_| extra.to_vec())
}

/// [`form`], host `i` started with `extra(i)` too.
fn form_each<'a>(dirs: &[TempDir], k: u32, extra: impl Fn(usize) -> Vec<&'a str>) -> Vec<Host> {
    let n = dirs.len().to_string();
    let k = k.to_string();
    let shape = ["--host-count", n.as_str(), "--kfactor", k.as_str()];
    let first = spawn(dirs[0].path(), &[&shape[..], &extra(0)].concat());
    let join = format!("127.0.0.1:{}", forming_port(&first));
    let mut rest = Vec::new();
    for (i, d) in dirs.iter().enumerate().skip(1) {
        let mut joiner = spawn(d.path(), &[&shape[..], &["--join", join.as_str()], &extra(i)].concat());
        joiner.wait_joined(&first, i);
        rest.push(joiner);
    }
    let mut hosts = vec![first.ready()];
    hosts.extend(rest.into_iter().map(Starting::ready));
    for (i, h) in hosts.iter().enumerate() {
        assert_eq!(h.id, i as u64, "hosts join in order");
    }
    hosts
}

/// A proxy on every link between the hosts of a cluster (one per
/// direction), so that a test can cut or hang the network between two
/// hosts while both still reach the third. Host `i` is started with
/// `--route` arguments sending its connections to host `t` through the
/// proxy for (i, t); [`Mesh::args`] gives them again for a restart.
pub struct Mesh {
    proxies: std::collections::BTreeMap<(usize, usize), super::fault_proxy::Proxy>,
    args: Vec<Vec<String>>,
    runtime: tokio::runtime::Runtime,
}

impl Mesh {
    /// Proxies for `n` hosts, with an internal port chosen for each.
    pub fn new(n: usize) -> Mesh {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        // Distinct ports: two hosts told the same one would fail to start.
        let mut ports: Vec<u16> = Vec::new();
        while ports.len() < n {
            let port = joule_common::testing::stable_port(super::rand_suffix() ^ (ports.len() as u64) << 48);
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        let mut proxies = std::collections::BTreeMap::new();
        let mut args = Vec::new();
        for from in 0..n {
            let mut a = vec!["--internal-port".to_string(), ports[from].to_string()];
            for to in (0..n).filter(|t| *t != from) {
                let target = format!("127.0.0.1:{}", ports[to]);
                let proxy = runtime.block_on(super::fault_proxy::Proxy::start(target.clone()));
                a.extend(["--route".to_string(), format!("{target}={}", proxy.address)]);
                proxies.insert((from, to), proxy);
            }
            args.push(a);
        }
        Mesh { proxies, args, runtime }
    }

    /// The arguments host `i` starts with (and restarts with).
    pub fn args(&self, i: usize) -> Vec<&str> {
        self.args[i].iter().map(String::as_str).collect()
    }

    /// Set both directions of the link between hosts `a` and `b`.
    pub fn set(&self, a: usize, b: usize, link: super::fault_proxy::Link) {
        let _guard = self.runtime.enter();
        self.proxies[&(a, b)].set(link);
        self.proxies[&(b, a)].set(link);
    }

    /// Every link up again.
    pub fn heal(&self) {
        let _guard = self.runtime.enter();
        for p in self.proxies.values() {
            p.set(super::fault_proxy::Link::Up);
        }
    }
}

/// [`form`], every link through a [`Mesh`]'s proxies, every host started
/// with `extra` too.
pub fn form_meshed(dirs: &[TempDir], k: u32, extra: &[&str]) -> (Vec<Host>, Mesh) {
    let mesh = Mesh::new(dirs.len());
    let hosts = form_each(dirs, k, |i| [&mesh.args(i)[..], extra].concat());
    (hosts, mesh)
}

/// The body of `GET path` from the HTTP port at `addr`.
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("the HTTP port answers");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

/// A pipelining client whose every call enters the cluster through
/// `entry` (one connection, no routing to leaders, no other hosts).
pub async fn client_through(entry: &str) -> joule_client::Client {
    let options =
        Options { route_to_leaders: false, discover_hosts: false, connections_per_address: 1, ..Default::default() };
    joule_client::Client::connect(&[entry], options).await.expect("connects")
}

pub fn connect(addr: &str) -> SyncConnection {
    SyncConnection::connect(addr, &Options::default()).expect("connects")
}

/// `@Statistics selector` rows, cells as text.
pub fn stats(addr: &str, selector: &str) -> Vec<Vec<String>> {
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

/// [`states`], or `None` if `addr` does not answer.
pub fn try_states(addr: &str) -> Option<Vec<(u64, String)>> {
    let mut c = SyncConnection::connect(addr, &Options::default()).ok()?;
    let r = c.call("@Statistics", vec![Value::from("CLUSTER"), Value::Integer(0)]).ok()?;
    let rows = r.tables.first()?.rows.iter();
    Some(
        rows.map(|row| {
            let id = match &row[0] {
                Value::Integer(v) => *v as u64,
                _ => u64::MAX,
            };
            let state = match &row[3] {
                Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            (id, state)
        })
        .collect(),
    )
}

/// Host id → state, from `@Statistics CLUSTER` on `addr`.
pub fn states(addr: &str) -> Vec<(u64, String)> {
    stats(addr, "CLUSTER").into_iter().map(|r| (r[0].parse().unwrap(), r[3].clone())).collect()
}

/// Whether `done` holds within `limit` (polled every 100 ms).
pub fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

pub fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "not within 20 s: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn status(addr: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_joule")).args(["status", "--servers", addr]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Every host up and every partition led (as the first host sees it).
pub fn all_up_and_led(hosts: &[Host]) {
    eventually("every host is up and every partition led", || {
        states(&hosts[0].client).iter().all(|(_, s)| s == "UP") && every_partition_led_by_a_live_host(&hosts[0].client)
    });
}

/// Every partition in TOPO (as `addr` sees it) led by a host that is up.
pub fn every_partition_led_by_a_live_host(addr: &str) -> bool {
    let up: Vec<String> = states(addr).into_iter().filter(|(_, s)| s == "UP").map(|(h, _)| h.to_string()).collect();
    let topo = stats(addr, "TOPO");
    topo[..topo.len() - 1].iter().all(|r| r[2].split(':').next().is_some_and(|l| up.iter().any(|h| h == l)))
}

/// Per (partition, table): every copy's checksum, from each host's
/// `@Statistics REPLICACHECKSUM`; an error names any that differ or a
/// partition with fewer than `copies` copies.
pub fn replicas_agree(clients: &[String], copies: usize) -> Result<usize, String> {
    let mut seen: std::collections::BTreeMap<(String, String), Vec<(String, String)>> = Default::default();
    for addr in clients {
        for r in stats(addr, "REPLICACHECKSUM") {
            seen.entry((r[3].clone(), r[5].clone())).or_default().push((r[1].clone(), r[6].clone()));
        }
    }
    for ((partition, table), copies_seen) in &seen {
        if copies_seen.len() != copies {
            return Err(format!("partition {partition} table {table}: {} copies: {copies_seen:?}", copies_seen.len()));
        }
        if copies_seen.iter().any(|(_, c)| *c != copies_seen[0].1) {
            return Err(format!("partition {partition} table {table}: copies differ: {copies_seen:?}"));
        }
    }
    Ok(seen.len())
}

/// Run `sql` (with `params`) on `addr`; panics on failure.
pub fn sql(addr: &str, sql: &str, params: Vec<Value>) -> joule_client::Response {
    let mut all = vec![Value::from(sql)];
    all.extend(params);
    connect(addr).call("@AdHoc", all).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// `sql` on `addr`, called again while it is refused as `Unavailable`
/// (leadership settling after a restart: not done, safe to call again).
pub fn settled_sql(addr: &str, sql: &str, params: Vec<Value>) -> joule_client::Response {
    let mut all = vec![Value::from(sql)];
    all.extend(params);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match connect(addr).call("@AdHoc", all.clone()) {
            Ok(r) => return r,
            Err(e) if e.code() == joule_common::ErrorCode::Unavailable && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Err(e) => panic!("{sql}: {e}"),
        }
    }
}

/// The single integer a query returns.
pub fn scalar(addr: &str, query: &str) -> i64 {
    match &sql(addr, query, vec![]).tables[0].rows[0][0] {
        Value::Integer(v) => *v,
        v => panic!("{query} returned {v:?}"),
    }
}

/// Rows placed on the wrong partition, by `@ValidatePartitioning` on `addr`
/// (every table, every partition).
pub fn misplaced(addr: &str) -> i64 {
    let r = connect(addr).call("@ValidatePartitioning", vec![]).expect("@ValidatePartitioning");
    r.tables[0]
        .rows
        .iter()
        .map(|row| match &row[2] {
            Value::Integer(n) => *n,
            v => panic!("MISPARTITIONED_ROWS is not an integer: {v:?}"),
        })
        .sum()
}

/// `joule cluster remove` with `args`, against `admin` (host:port): its
/// exit status, standard output and standard error; two minutes at most.
pub fn cluster_remove(admin: &str, args: &[&str]) -> (bool, String, String) {
    let (host, port) = admin.rsplit_once(':').unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_joule"));
    cmd.args(["cluster", "remove", "--host", host, "--port", port]).args(args);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(cmd.output().unwrap());
    });
    let out = rx.recv_timeout(std::time::Duration::from_secs(120)).expect("joule cluster remove ends within 2 min");
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.success(), text(out.stdout), text(out.stderr))
}
