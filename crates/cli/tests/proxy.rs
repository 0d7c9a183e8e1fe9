//! `joule proxy` over real processes: `joule start` backends (on ports
//! chosen at run time), a `joule proxy` in front of them, and JouleDB's
//! Rust client (and the raw wire) talking to the proxy. Where each call
//! went is counted on the backends themselves — rows inserted through the
//! proxy — so the proxy's own figures are checked, not trusted.

mod common;

use common::cluster::{all_up_and_led, form, lines, scalar, sql, wait_until};
use common::fault_proxy::{Link, Proxy as Relay};
use common::wire::WireConnection;
use common::{start_in, Node, TempDir};
use joule_client::{BlockingClient, Options};
use joule_common::{ErrorCode, Value};
use joule_wire::HashScheme;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running `joule proxy`.
struct ProxyProcess {
    child: Child,
    address: String,
    /// `host:port` of its metrics endpoint, if started with `--http`.
    metrics: Option<String>,
    stderr: mpsc::Receiver<String>,
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `joule proxy --listen 127.0.0.1:0 args…` and wait for its ready line.
fn proxy(args: &[&str]) -> ProxyProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_joule"))
        .args(["proxy", "--listen", "127.0.0.1:0", "--health-every-ms", "200", "--health-within-ms", "1000"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("joule proxy starts");
    let stdout = lines(child.stdout.take().unwrap(), "proxy".into());
    let stderr = lines(child.stderr.take().unwrap(), "proxy".into());
    let line = stdout.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| {
        let said: Vec<String> = stderr.try_iter().collect();
        panic!("no ready line from the proxy; it said:\n{}", said.join("\n"))
    });
    assert!(line.starts_with("JouleDB proxy ready"), "{line}");
    let address = line.split("listening on ").nth(1).unwrap().split(';').next().unwrap().to_string();
    let metrics = line.split("metrics http://").nth(1).map(|m| m.trim_end_matches("/metrics").to_string());
    ProxyProcess { child, address, metrics, stderr }
}

fn client(address: &str, options: Options) -> BlockingClient {
    BlockingClient::connect(&[address], options).expect("connects to the proxy")
}

fn node(dir: &TempDir) -> Node {
    start_in(dir.path(), &["--sites", "1", "--command-log", "off"])
}

/// Rows `tag` put in `hits` on each backend.
fn hits(backends: &[String], tag: &str) -> Vec<i64> {
    backends.iter().map(|b| scalar(b, &format!("SELECT COUNT(*) FROM hits WHERE tag = '{tag}'"))).collect()
}

/// `calls` inserts tagged `tag` through `proxy`, `in_flight` at a time.
fn insert_through(proxy: &str, tag: &str, calls: usize, in_flight: usize) {
    let c = client(proxy, Options::default());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..in_flight {
            let (c, tag) = (c.client().clone(), tag.to_string());
            tasks.spawn(async move {
                for i in (worker..calls).step_by(in_flight) {
                    let params = vec![Value::from(tag.as_str()), Value::Integer(i as i64)];
                    c.execute("INSERT INTO hits VALUES (?, ?)", params).await.expect("insert through the proxy");
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
    });
}

/// A `@Statistics PROXY` backends row per backend: (state, calls, routed).
fn proxy_backends(proxy: &str) -> Vec<(String, String, i64, i64)> {
    let r = client(proxy, Options::default())
        .call("@Statistics", vec![Value::from("PROXY"), Value::Integer(0)])
        .expect("@Statistics PROXY");
    let int = |v: &Value| if let Value::Integer(i) = v { *i } else { panic!("{v:?}") };
    r.tables[0].rows.iter().map(|row| (row[1].to_string(), row[2].to_string(), int(&row[4]), int(&row[5]))).collect()
}

#[test]
fn each_balancing_policy_spreads_calls_as_it_promises() {
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("proxy-policy-{i}"))).collect();
    let nodes: Vec<Node> = dirs.iter().map(node).collect();
    let direct: Vec<String> = nodes.iter().map(Node::client_addr).collect();
    for b in &direct {
        sql(b, "CREATE TABLE hits (tag VARCHAR(20) NOT NULL, id INT NOT NULL)", vec![]);
    }
    // Backend 0 through a relay that can slow it down.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let relay = runtime.block_on(Relay::start(direct[0].clone()));
    let servers = [relay.address.as_str(), &direct[1], &direct[2]];
    let list = servers.join(",");
    let policy = |balance: &str, extra: &[&str]| {
        proxy(&[&["--servers", list.as_str(), "--no-route", "--balance", balance], extra].concat())
    };

    // Round-robin: each in turn, exactly.
    let p = policy("round-robin", &["--http", "127.0.0.1:0"]);
    insert_through(&p.address, "rr", 90, 1);
    assert_eq!(hits(&direct, "rr"), vec![30, 30, 30]);
    // The proxy's own counts agree, in-band and as Prometheus text.
    let counted: Vec<i64> = proxy_backends(&p.address).iter().map(|b| b.2).collect();
    assert_eq!(counted, vec![30, 30, 30]);
    let metrics = common::cluster::http_get(p.metrics.as_deref().expect("a metrics address"), "/metrics");
    for server in servers {
        let line = format!("joule_proxy_backend_calls_total{{vhost=\"database\",backend=\"{server}\"}} 30");
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
    assert!(metrics.contains("joule_proxy_calls_total{vhost=\"database\",policy=\"round-robin\"} 90"), "{metrics}");
    drop(p);

    // Random: about a third each (expected 100 of 300, spread about ±8).
    let p = policy("random", &["--seed", "7"]);
    insert_through(&p.address, "random", 300, 4);
    let h = hits(&direct, "random");
    assert!(h.iter().all(|n| (60..=140).contains(n)) && h.iter().sum::<i64>() == 300, "{h:?}");
    drop(p);

    // Weighted 3:1:0: nothing to the third, three quarters to the first.
    let weighted = format!("{}*3,{}*1,{}*0", servers[0], servers[1], servers[2]);
    let p = proxy(&["--servers", weighted.as_str(), "--no-route", "--balance", "weighted", "--seed", "3"]);
    insert_through(&p.address, "weighted", 400, 4);
    let h = hits(&direct, "weighted");
    assert_eq!(h[2], 0, "{h:?}");
    assert!((250..=350).contains(&h[0]) && h[0] + h[1] == 400, "{h:?}");
    drop(p);

    // Backend 0 answers 30 ms late from now on.
    relay.set(Link::Delay(Duration::from_millis(30)));
    // Least-outstanding, 12 calls in flight: the slow backend holds its
    // calls longer, so it gets far fewer than a third.
    let p = policy("least-outstanding", &[]);
    insert_through(&p.address, "least", 600, 12);
    let h = hits(&direct, "least");
    assert!(h[0] < 90 && h.iter().sum::<i64>() == 600, "{h:?}");
    drop(p);

    // Latency-aware, one call at a time: once measured, the slow backend
    // gets next to nothing.
    let p = policy("latency-aware", &[]);
    insert_through(&p.address, "latency", 200, 1);
    let h = hits(&direct, "latency");
    assert!(h[0] <= 5 && h.iter().sum::<i64>() == 200, "{h:?}");
    drop(p);
}

#[test]
fn the_proxy_routes_single_partition_calls_to_leaders_and_rides_out_a_host_loss() {
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("proxy-cluster-{i}"))).collect();
    let mut hosts = form(&dirs, 1);
    all_up_and_led(&hosts);
    let servers: Vec<&str> = hosts.iter().map(|h| h.client.as_str()).collect();
    let p = proxy(&["--servers", &servers.join(","), "--balance", "least-outstanding"]);
    let c = client(&p.address, Options::default());
    c.execute(
        "CREATE TABLE kv (k BIGINT NOT NULL PRIMARY KEY, v BIGINT NOT NULL); PARTITION TABLE kv ON COLUMN k;",
        vec![],
    )
    .expect("DDL through the proxy");
    // The proxy learns the new procedure (KV.insert) at its next topology
    // read (within 5 s); from then on every insert goes to its leader.
    let mut next = 0i64;
    let mut insert = |c: &BlockingClient| {
        next += 1;
        c.call("KV.insert", vec![Value::Integer(next), Value::Integer(next * 10)]).map(|_| next)
    };
    let routed_total = |p: &ProxyProcess| proxy_backends(&p.address).iter().map(|b| b.3).sum::<i64>();
    assert!(
        wait_until(Duration::from_secs(20), || {
            insert(&c).expect("insert");
            routed_total(&p) > 0
        }),
        "the proxy never routed a call to a leader"
    );
    let (calls_before, routed_before) = {
        let b = proxy_backends(&p.address);
        (b.iter().map(|b| b.2).sum::<i64>(), routed_total(&p))
    };
    for _ in 0..200 {
        insert(&c).expect("insert");
    }
    let after = proxy_backends(&p.address);
    let (calls, routed) = (after.iter().map(|b| b.2).sum::<i64>(), after.iter().map(|b| b.3).sum::<i64>());
    assert_eq!((calls - calls_before, routed - routed_before), (200, 200), "{after:?}");
    // Every backend led some of them (keys hash over every partition).
    assert!(after.iter().all(|b| b.3 > 0), "{after:?}");

    // kill -9 a host: the proxy marks it closed, its partitions fail over,
    // and calls go on. Those caught in the failover may fail; every one
    // acknowledged is kept.
    let mut acknowledged = vec![];
    let _ = hosts[2].child.kill();
    let _ = hosts[2].child.wait();
    let mut failures = 0;
    let went_on = wait_until(Duration::from_secs(30), || {
        match insert(&c) {
            Ok(k) => acknowledged.push(k),
            Err(e) => {
                assert!(matches!(e.code(), ErrorCode::Unavailable | ErrorCode::OutcomeUnknown), "{e}");
                failures += 1;
            }
        }
        acknowledged.len() >= 100
    });
    assert!(went_on, "calls did not go on after the host loss ({failures} failed)");
    assert!(
        wait_until(Duration::from_secs(10), || proxy_backends(&p.address)[2].1 == "CLOSED"),
        "{:?}",
        proxy_backends(&p.address)
    );
    assert!(p.stderr.try_iter().any(|l| l.contains("is CLOSED")), "the proxy reports the lost backend");
    let survivor = &hosts[0].client;
    for k in acknowledged {
        let v = scalar(survivor, &format!("SELECT COUNT(*) FROM kv WHERE k = {k}"));
        assert_eq!(v, 1, "acknowledged key {k}");
    }
    hosts.truncate(2);
}

#[test]
fn virtual_hosts_logins_health_checks_and_bad_input() {
    let (a_dir, b_dir) = (TempDir::new("proxy-vhost-a"), TempDir::new("proxy-vhost-b"));
    let a = node(&a_dir);
    std::fs::create_dir_all(b_dir.path()).unwrap();
    let config = b_dir.path().join("joule.toml");
    std::fs::write(&config, "[[users]]\nname = \"app\"\npassword = \"pw\"\nroles = [\"user\"]\n").unwrap();
    let b = start_in(b_dir.path(), &["--sites", "1", "--command-log", "off", "--config", config.to_str().unwrap()]);
    sql(&a.client_addr(), "CREATE TABLE who (name VARCHAR(10) NOT NULL)", vec![]);
    sql(&a.client_addr(), "INSERT INTO who VALUES ('a')", vec![]);
    sql(&a.client_addr(), "CREATE DATABASE sales", vec![]);
    sql(&a.client_addr(), "CREATE TABLE sales.who (name VARCHAR(10) NOT NULL)", vec![]);
    sql(&a.client_addr(), "INSERT INTO sales.who VALUES ('a-sales')", vec![]);
    let admin = Options { user: "app".into(), password: "pw".into(), ..Default::default() };
    let direct_b = BlockingClient::connect(&[b.client_addr().as_str()], admin.clone()).unwrap();
    direct_b.execute("CREATE TABLE who (name VARCHAR(10) NOT NULL)", vec![]).unwrap();
    direct_b.execute("INSERT INTO who VALUES ('b')", vec![]).unwrap();

    let vhost_a = format!("alpha={}", a.client_addr());
    let vhost_b = format!("beta={}", b.client_addr());
    let b_addr = b.client_addr();
    let vhost_sales = format!("sales@SALES={}", a.client_addr());
    let vhost_none = format!("nowhere@NOWHERE={}", a.client_addr());
    let p = proxy(&[
        "--vhost",
        &vhost_a,
        "--vhost",
        &vhost_b,
        "--vhost",
        &vhost_sales,
        "--vhost",
        &vhost_none,
        "--servers",
        &b_addr,
        "--call-timeout-ms",
        "1500",
    ]);
    let login = |service: &str, user: &str, password: &str| {
        let options =
            Options { service: service.into(), user: user.into(), password: password.into(), ..Default::default() };
        BlockingClient::connect(&[p.address.as_str()], options)
    };
    let who = |c: &BlockingClient| -> String {
        c.execute("SELECT name FROM who", vec![]).unwrap().table(0).unwrap().get(0, 0).unwrap()
    };
    // The login's service picks the virtual host.
    assert_eq!(who(&login("alpha", "", "").unwrap()), "a");
    assert_eq!(who(&login("beta", "app", "pw").unwrap()), "b");
    // A virtual host may name the database its clients' names resolve in;
    // USE through the proxy would change it for every client sharing the
    // connection, and is refused.
    let sales = login("sales", "", "").unwrap();
    assert_eq!(who(&sales), "a-sales");
    let refused = sales.execute("SELECT 1 FROM who; USE DEFAULT", vec![]).err().map(|e| e.code());
    assert_eq!(refused, Some(ErrorCode::FeatureNotSupported));
    assert_eq!(who(&sales), "a-sales");
    assert_eq!(who(&login("alpha", "", "").unwrap()), "a");
    assert_eq!(login("nowhere", "", "").err().map(|e| e.code()), Some(ErrorCode::PermissionDenied));
    assert!(
        wait_until(Duration::from_secs(5), || p.stderr.try_iter().any(|l| l.contains("NOWHERE"))),
        "the proxy says why"
    );
    // Credentials are the backend's to check; an unknown service is refused.
    assert_eq!(login("beta", "app", "wrong").err().map(|e| e.code()), Some(ErrorCode::PermissionDenied));
    assert_eq!(login("gamma", "", "").err().map(|e| e.code()), Some(ErrorCode::PermissionDenied));
    assert!(
        wait_until(Duration::from_secs(5), || p.stderr.try_iter().any(|l| l.contains("'gamma'"))),
        "the proxy says why it refused"
    );
    // VoltDB's SHA-1 logins pass through too (the raw wire, service
    // `database`: the group --servers gives).
    let mut sha1 = WireConnection::login(&p.address, "app", "pw", HashScheme::Sha1).expect("a SHA-1 login");
    sha1.send(
        &joule_wire::Invocation {
            version: 0,
            procedure: "@AdHoc".into(),
            client_handle: 77,
            batch_timeout_ms: None,
            params: vec![joule_wire::Param::Value(Value::from("SELECT name FROM who"))],
        }
        .encode()
        .unwrap(),
    );
    let answer = sha1.receive();
    assert_eq!((answer.client_handle, answer.status), (77, 1), "{answer:?}");
    assert_eq!(answer.tables[0].rows[0][0], Value::from("b"));
    assert_eq!(WireConnection::login(&p.address, "app", "wrong", HashScheme::Sha1).err(), Some(-1));

    // A stopped backend fails its health checks: DOWN, and calls to its
    // virtual host are refused as "server unavailable" (never run) until
    // it answers again.
    let alpha = login("alpha", "", "").unwrap();
    let pid = a.child.id().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    // A call sent before the health checks notice (two missed pings) waits
    // for the call timeout, then its outcome is unknown.
    let started = std::time::Instant::now();
    let stuck = alpha.execute("SELECT name FROM who", vec![]).err().map(|e| e.code());
    assert_eq!(stuck, Some(ErrorCode::OutcomeUnknown), "after {:?}", started.elapsed());
    assert!(started.elapsed() >= Duration::from_millis(1400), "{:?}", started.elapsed());
    let down = wait_until(Duration::from_secs(10), || {
        let beta = login("beta", "app", "pw").unwrap();
        let r = beta.call("@Statistics", vec![Value::from("PROXY"), Value::Integer(0)]).unwrap();
        r.tables[0].rows.iter().any(|row| row[0] == Value::from("alpha") && row[2] == Value::from("DOWN"))
    });
    let refused = alpha.execute("SELECT name FROM who", vec![]).err().map(|e| e.code());
    assert!(Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    assert!(down, "the stopped backend was never marked DOWN");
    assert_eq!(refused, Some(ErrorCode::Unavailable));
    assert!(
        wait_until(Duration::from_secs(10), || alpha.execute("SELECT name FROM who", vec![]).is_ok()),
        "the backend never came back"
    );

    // A malformed frame (a length past any limit) after the login is
    // answered with why and the connection closed; the proxy serves on.
    assert_eq!(WireConnection::login(&p.address, "", "", HashScheme::Sha256).err(), Some(-1), "b wants a user");
    let stream = std::net::TcpStream::connect(&p.address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut raw = WireConnection(stream);
    let hello = joule_wire::Login {
        version: 1,
        scheme: HashScheme::Sha256,
        service: "alpha".into(),
        user: String::new(),
        password_hash: vec![0; 32],
    };
    raw.send(&hello.encode());
    assert_eq!(joule_wire::LoginResponse::decode(&raw.recv().unwrap()).unwrap().result, 0);
    std::io::Write::write_all(&mut raw.0, &[0x7f, 0xff, 0xff, 0xff]).unwrap();
    let answer = joule_wire::ClientResponse::decode(&raw.recv().expect("an answer saying why")).unwrap();
    assert_eq!(answer.status, -2);
    assert!(answer.status_string.unwrap().starts_with("[J"), "carries the error code");
    assert!(raw.recv().is_none(), "then the connection closes");
    assert_eq!(who(&alpha), "a");
}

/// VoltDB's own Python client (the `voltdbclient` package, unchanged)
/// through the proxy: login, ad hoc SQL, a CRUD procedure routed to its
/// leader, an array parameter, and a failure's status.
#[test]
fn voltdb_python_client_works_through_the_proxy() {
    // Its own install directory: another test installs the same package
    // concurrently into the server tests' one.
    let python_path = common::python_package_path("voltdbclient", "voltdbclient", "python-voltdbclient-proxy");
    let dir = TempDir::new("proxy-python");
    let n = node(&dir);
    let p = proxy(&["--servers", &n.client_addr()]);
    let port = p.address.rsplit(':').next().unwrap().to_string();
    let script = r#"
import sys
from voltdbclient import FastSerializer, VoltProcedure
c = FastSerializer("127.0.0.1", int(sys.argv[1]), username="", password="")
adhoc = VoltProcedure(c, "@AdHoc", [FastSerializer.VOLTTYPE_STRING])
assert adhoc.call(["CREATE TABLE users (id INT NOT NULL PRIMARY KEY, name VARCHAR(255)); PARTITION TABLE users ON COLUMN id"]).status == 1
ins = VoltProcedure(c, "USERS.insert", [FastSerializer.VOLTTYPE_INTEGER, FastSerializer.VOLTTYPE_STRING])
for i, name in enumerate(["Alice", "Bob", "Carol"]):
    assert ins.call([i + 1, name]).status == 1
pick = VoltProcedure(c, "@AdHoc", [FastSerializer.VOLTTYPE_STRING, FastSerializer.VOLTTYPE_INTEGER])
r = pick.call(["SELECT name FROM users WHERE id IN ? ORDER BY id", [3, 1]])
print([row[0] for row in r.tables[0].tuples])
bad = adhoc.call(["SELECT * FROM nowhere"])
print(bad.status, bad.statusString)
c.close()
"#;
    let stdout = common::run_python_script(script, &port, &python_path);
    assert!(stdout.starts_with("['Alice', 'Carol']\n-2 [J1003"), "{stdout}");
    assert_eq!(scalar(&n.client_addr(), "SELECT COUNT(*) FROM users"), 3);
}

/// A client that sends without reading its answers: the proxy stops
/// reading its requests once 8 MiB of answers wait to be written (TCP then
/// holds the client back), and serves it again as it reads.
#[test]
fn a_client_that_does_not_read_is_held_back() {
    let dir = TempDir::new("proxy-unread");
    let n = node(&dir);
    let p = proxy(&["--servers", &n.client_addr()]);
    let mut c = WireConnection::open(&p.address);
    let ping = joule_wire::Invocation {
        version: 0,
        procedure: "@Ping".into(),
        client_handle: 1,
        batch_timeout_ms: None,
        params: vec![],
    }
    .encode()
    .unwrap();
    let mut frame = Vec::new();
    joule_wire::frame::write_frame(&mut frame, &ping);
    // 1,000,000 pings: about 24 MB of requests, 22 MB of answers.
    let calls = 1_000_000;
    let burst: Vec<u8> = frame.iter().copied().cycle().take(frame.len() * calls).collect();
    let mut writer = c.0.try_clone().unwrap();
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let ok = std::io::Write::write_all(&mut writer, &burst).is_ok();
        let _ = done_tx.send(ok);
    });
    assert!(
        done_rx.recv_timeout(Duration::from_secs(3)).is_err(),
        "the proxy took every request without its answers being read"
    );
    // Reading the answers lets the rest through.
    for i in 0..calls {
        let answer = c.receive();
        assert_eq!(answer.status, 1, "answer {i}");
    }
    assert_eq!(done_rx.recv_timeout(Duration::from_secs(30)), Ok(true));
}
