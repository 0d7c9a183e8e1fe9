//! The Rust client against a real server on a free port.

use joule_client::{BlockingClient, Client, Options};
use joule_common::{ErrorCode, Value};
use joule_server::{Server, ServerConfig};

/// A server for one test; its data directory goes when it is dropped.
struct TestServer {
    /// `None` once [`TestServer::wait`] took it.
    server: Option<Server>,
    dir: std::path::PathBuf,
}

impl std::ops::Deref for TestServer {
    type Target = Server;
    fn deref(&self) -> &Server {
        self.server.as_ref().expect("the server is running")
    }
}

impl TestServer {
    /// [`Server::wait`]: until the server stopped.
    async fn wait(mut self) {
        if let Some(server) = self.server.take() {
            server.wait().await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(server) = &self.server {
            server.shutdown();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn start(config: ServerConfig) -> TestServer {
    let dir = config.dir.clone();
    let server = Server::start(config, joule_txn::ProcedureRegistry::new()).await.unwrap();
    TestServer { server: Some(server), dir }
}

async fn server() -> TestServer {
    let dir = std::env::temp_dir().join(format!(
        "joule-client-test-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let config = ServerConfig {
        client_port: 0,
        admin_port: 0,
        http_port: 0,
        host: "127.0.0.1".into(),
        sites: 2,
        dir,
        ..Default::default()
    };
    start(config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_calls_typed_results_and_errors() {
    let server = server().await;
    let addr = server.client_addr.to_string();
    let client = Client::connect(&[&addr], Options { connections_per_address: 3, ..Default::default() }).await.unwrap();
    assert_eq!(client.open_connections(), 3);
    client
        .execute("CREATE TABLE t (id BIGINT NOT NULL PRIMARY KEY, name VARCHAR(10), score FLOAT); PARTITION TABLE t ON COLUMN id", vec![])
        .await
        .unwrap();
    // 1000 calls in flight at once over three connections.
    let calls = (0..1000i64).map(|i| {
        let c = client.clone();
        async move { c.call("T.insert", vec![i.into(), format!("n{i}").into(), (i as f64 / 2.0).into()]).await }
    });
    let results = futures_join(calls).await;
    assert!(results.iter().all(|r| r.is_ok()), "{:?}", results.iter().find(|r| r.is_err()));
    let r = client.execute("SELECT COUNT(*), MAX(name), SUM(score) FROM t", vec![]).await.unwrap();
    let t = r.table(0).unwrap();
    assert_eq!(t.get::<i64>(0, 0).unwrap(), 1000);
    assert_eq!(t.get::<String>(0, 1).unwrap(), "n999");
    assert_eq!(t.get::<f64>(0, 2).unwrap(), (0..1000).map(|i| i as f64 / 2.0).sum::<f64>());
    let r = client.call("T.select", vec![5.into()]).await.unwrap();
    assert_eq!(r.table(0).unwrap().get::<Option<String>>(0, 1).unwrap(), Some("n5".into()));
    assert!(r.table(0).unwrap().get::<String>(0, 2).is_err());
    // Server errors come back with their codes.
    let e = client.call("T.insert", vec![5.into(), Value::Null, Value::Null]).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::UniqueViolation);
    let e = client.call("Missing", vec![]).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::UndefinedProcedure);
    let e = client.execute("SELEC", vec![]).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::SyntaxError);
    // Losing the server fails calls instead of hanging them.
    server.shutdown();
    server.wait().await;
    let mut failed = false;
    for _ in 0..50 {
        match client.call("@Ping", vec![]).await {
            Err(e) => {
                // Unavailable if the loss was seen before sending, unknown if after.
                assert!(matches!(e.code(), ErrorCode::Unavailable | ErrorCode::OutcomeUnknown), "{e}");
                failed = true;
                break;
            }
            Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
    assert!(failed, "calls after shutdown must fail");
}

/// Await futures concurrently (a tiny join_all on tokio tasks).
async fn futures_join<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[test]
fn blocking_client_and_refused_logins() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let server = rt.block_on(server());
    let addr = server.client_addr.to_string();
    let c = BlockingClient::connect(&[&addr], Options::default()).unwrap();
    c.execute("CREATE TABLE b (k INT)", vec![]).unwrap();
    c.execute("INSERT INTO b VALUES (?)", vec![7.into()]).unwrap();
    let r = c.execute("SELECT k FROM b", vec![]).unwrap();
    assert_eq!(r.table(0).unwrap().get::<i32>(0, 0).unwrap(), 7);
    assert!(BlockingClient::connect(&["127.0.0.1:1"], Options::default()).is_err());
    assert!(BlockingClient::connect(&[], Options::default()).is_err());
    server.shutdown();
}

/// `call_with`: callbacks get every answer (successes and failures), can
/// make further calls, and get `Unavailable` when the server goes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_answer_every_call_and_learn_of_connection_loss() {
    let server = server().await;
    let addr = server.client_addr.to_string();
    let client = Client::connect(&[&addr], Options { connections_per_address: 2, ..Default::default() }).await.unwrap();
    client
        .execute("CREATE TABLE c (id BIGINT NOT NULL PRIMARY KEY); PARTITION TABLE c ON COLUMN id", vec![])
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    // Each callback inserts the next id until 500: a chain of calls.
    fn chain(client: Client, id: i64, tx: tokio::sync::mpsc::UnboundedSender<joule_common::Result<i64>>) {
        let next = client.clone();
        client
            .call_with("C.insert", vec![id.into()], move |r| {
                let _ = tx.send(r.map(|_| id));
                if id < 500 {
                    chain(next, id + 1, tx);
                }
            })
            .unwrap();
    }
    chain(client.clone(), 1, tx.clone());
    let mut seen = Vec::new();
    while seen.len() < 500 {
        seen.push(rx.recv().await.unwrap().unwrap());
    }
    assert_eq!(seen, (1..=500).collect::<Vec<_>>());
    // A failing call's callback gets the server's error.
    let tx2 = tx.clone();
    client.call_with("C.insert", vec![7.into()], move |r| drop(tx2.send(r.map(|_| 0)))).unwrap();
    assert_eq!(rx.recv().await.unwrap().unwrap_err().code(), ErrorCode::UniqueViolation);
    // In flight when the server stops: the callback hears of it.
    server.shutdown();
    server.wait().await;
    let mut lost = false;
    for _ in 0..50 {
        let tx3 = tx.clone();
        match client.call_with("@Ping", vec![], move |r| drop(tx3.send(r.map(|_| 0)))) {
            Err(e) => {
                assert_eq!(e.code(), ErrorCode::Unavailable);
                lost = true;
                break;
            }
            Ok(()) => match rx.recv().await.unwrap() {
                Err(e) => {
                    assert!(matches!(e.code(), ErrorCode::Unavailable | ErrorCode::OutcomeUnknown), "{e}");
                    lost = true;
                    break;
                }
                Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            },
        }
    }
    assert!(lost, "callbacks learn that the connection is gone");
}

/// `SyncConnection`: blocking calls on the caller's thread, errors with
/// their codes, refused logins, a clear error once the server is gone.
#[test]
fn sync_connection_calls_on_the_callers_thread() {
    use joule_client::SyncConnection;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let server = rt.block_on(server());
    let addr = server.client_addr.to_string();
    let mut c = SyncConnection::connect(&addr, &Options::default()).unwrap();
    c.execute("CREATE TABLE s (id BIGINT NOT NULL PRIMARY KEY, v VARCHAR(5))", vec![]).unwrap();
    for i in 0..100i64 {
        c.call("S.insert", vec![i.into(), "x".into()]).unwrap();
    }
    let r = c.execute("SELECT COUNT(*) FROM s", vec![]).unwrap();
    assert_eq!(r.table(0).unwrap().get::<i64>(0, 0).unwrap(), 100);
    assert_eq!(c.call("S.insert", vec![1.into(), "y".into()]).unwrap_err().code(), ErrorCode::UniqueViolation);
    assert_eq!(c.call("Nope", vec![]).unwrap_err().code(), ErrorCode::UndefinedProcedure);
    assert!(SyncConnection::connect("127.0.0.1:1", &Options::default()).is_err());
    server.shutdown();
    rt.block_on(server.wait());
    let e = (0..50).find_map(|_| c.call("@Ping", vec![]).err()).expect("calls fail once the server is gone");
    assert!(matches!(e.code(), ErrorCode::Unavailable | ErrorCode::OutcomeUnknown), "{e}");
}

/// `PolledConnections`: one thread, several connections, one call
/// outstanding on each; answers larger than a read, calls larger than the
/// socket takes at once, errors with their codes, and a lost server.
#[test]
fn polled_connections_serve_many_calls_from_one_thread() {
    use joule_client::PolledConnections;
    use std::time::Duration;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let server = rt.block_on(server());
    let addr = server.client_addr.to_string();
    let mut c =
        PolledConnections::connect(&[&addr], &Options { connections_per_address: 4, ..Default::default() }).unwrap();
    assert_eq!(c.len(), 4);
    // Wait for one answer per busy connection.
    let answers = |c: &mut PolledConnections, busy: usize| {
        let mut got = Vec::new();
        while got.len() < busy {
            c.poll(Some(Duration::from_secs(10)), |i, r| got.push((i, r))).unwrap();
        }
        got.sort_by_key(|(i, _)| *i);
        got
    };
    c.send(0, "@AdHoc", vec!["CREATE TABLE p (id BIGINT NOT NULL PRIMARY KEY, v VARCHAR(2000))".into()]).unwrap();
    assert!(answers(&mut c, 1)[0].1.is_ok());
    // 4 connections x 50 rounds, a call on every connection each round.
    let long = "x".repeat(1500);
    for round in 0..50i64 {
        for i in 0..4 {
            c.send(i, "P.insert", vec![(round * 4 + i as i64).into(), long.clone().into()]).unwrap();
        }
        // A second call on a busy connection is refused and sends nothing.
        let e = c.send(2, "@Ping", vec![]).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArgument);
        let got = answers(&mut c, 4);
        assert_eq!(got.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
        assert!(got.iter().all(|(_, r)| r.is_ok()), "{got:?}");
        assert!((0..4).all(|i| c.is_idle(i)));
    }
    // An answer of about 300 KB arrives over many reads.
    c.send(1, "@AdHoc", vec!["SELECT id, v FROM p ORDER BY id".into()]).unwrap();
    let got = answers(&mut c, 1);
    let r = got[0].1.as_ref().unwrap();
    assert_eq!(r.table(0).unwrap().rows().len(), 200);
    assert_eq!(r.table(0).unwrap().get::<String>(199, 1).unwrap(), long);
    // A call of 8 MB is more than the socket takes at once; it is written
    // as the socket drains, and its error comes back with its code.
    c.send(3, "P.insert", vec![1_000_000i64.into(), "y".repeat(8 << 20).into()]).unwrap();
    let got = answers(&mut c, 1);
    assert_eq!(got[0].0, 3);
    assert_eq!(got[0].1.as_ref().unwrap_err().code(), ErrorCode::StringTooLong);
    c.send(0, "P.insert", vec![0i64.into(), "dup".into()]).unwrap();
    assert_eq!(answers(&mut c, 1)[0].1.as_ref().unwrap_err().code(), ErrorCode::UniqueViolation);
    assert!(PolledConnections::connect(&["127.0.0.1:1"], &Options::default()).is_err());
    // The server goes: outstanding calls fail as unavailable, later ones are refused.
    server.shutdown();
    rt.block_on(server.wait());
    let mut lost = 0;
    for _ in 0..50 {
        if (0..4).all(|i| !c.is_idle(i) && c.send(i, "@Ping", vec![]).is_err()) {
            break;
        }
        for i in 0..4 {
            if c.is_idle(i) {
                let _ = c.send(i, "@Ping", vec![]);
            }
        }
        c.poll(Some(Duration::from_millis(100)), |_, r| {
            if r.is_err_and(|e| matches!(e.code(), ErrorCode::Unavailable | ErrorCode::OutcomeUnknown)) {
                lost += 1;
            }
        })
        .unwrap();
    }
    assert!(lost > 0, "calls outstanding when the server went failed as unavailable");
    for i in 0..4 {
        assert!(!c.is_idle(i));
        assert_eq!(c.send(i, "@Ping", vec![]).unwrap_err().code(), ErrorCode::Unavailable);
    }
}

/// A server on `port` (0: any) with data in a directory of its own.
async fn server_on(name: &str, port: u16) -> TestServer {
    let dir = std::env::temp_dir().join(format!("joule-client-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = ServerConfig {
        client_port: port,
        admin_port: 0,
        http_port: 0,
        host: "127.0.0.1".into(),
        sites: 2,
        dir,
        command_log: None,
        ..Default::default()
    };
    start(config).await
}

/// Rows in `hits` on one server.
async fn hits(address: &str) -> i64 {
    let c = Client::connect(&[address], Options::default()).await.unwrap();
    c.execute("SELECT COUNT(*) FROM hits", vec![]).await.unwrap().table(0).unwrap().get::<i64>(0, 0).unwrap()
}

/// Two servers: round robin splits calls evenly, weights split them in
/// proportion, least-outstanding, latency-aware and random reach both; a
/// lost server's connections are skipped and reopened once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balancing_policies_and_reconnection_across_two_servers() {
    use joule_client::Balance;
    let (a, b) = (server_on("balance-a", 0).await, server_on("balance-b", 0).await);
    let (addr_a, addr_b) = (a.client_addr.to_string(), b.client_addr.to_string());
    for addr in [&addr_a, &addr_b] {
        let c = Client::connect(&[addr.as_str()], Options::default()).await.unwrap();
        c.execute("CREATE TABLE hits (id BIGINT NOT NULL PRIMARY KEY, policy VARCHAR(20))", vec![]).await.unwrap();
    }
    let mut next_id = 0i64;
    let mut run = |balance: Balance, calls: i64| {
        let (addr_a, addr_b) = (addr_a.clone(), addr_b.clone());
        let first = next_id;
        next_id += calls;
        async move {
            let options = Options { connections_per_address: 2, balance, ..Default::default() };
            let client = Client::connect(&[addr_a.as_str(), addr_b.as_str()], options).await.unwrap();
            let (before_a, before_b) = (hits(&addr_a).await, hits(&addr_b).await);
            for id in first..first + calls {
                client.call("HITS.insert", vec![id.into(), "x".into()]).await.unwrap();
            }
            (hits(&addr_a).await - before_a, hits(&addr_b).await - before_b)
        }
    };
    assert_eq!(run(Balance::RoundRobin, 200).await, (100, 100));
    let (on_a, on_b) = run(Balance::Weighted { weights: vec![3, 1], seed: 9 }, 400).await;
    assert!((250..=350).contains(&on_a) && on_a + on_b == 400, "weighted 3:1 gave {on_a}:{on_b}");
    let (on_a, on_b) = run(Balance::Random { seed: 4 }, 200).await;
    assert!(on_a > 50 && on_b > 50, "random gave {on_a}:{on_b}");
    let (on_a, on_b) = run(Balance::LeastOutstanding, 100).await;
    assert_eq!(on_a + on_b, 100);
    // Each connection is measured first, then the quicker get the calls.
    let (on_a, on_b) = run(Balance::LatencyAware, 100).await;
    assert!(on_a > 0 && on_b > 0 && on_a + on_b == 100, "latency-aware gave {on_a}:{on_b}");

    // Server B goes away: its calls fail, the rest go to A; when B is back
    // on its port, the client reconnects to it by itself.
    let client = Client::connect(&[addr_a.as_str(), addr_b.as_str()], Options::default()).await.unwrap();
    let port_b = b.client_addr.port();
    b.shutdown();
    b.wait().await;
    for _ in 0..50 {
        match client.call("@Ping", vec![]).await {
            Ok(_) => {}
            Err(e) => assert!(
                matches!(e.code(), ErrorCode::Unavailable | ErrorCode::OutcomeUnknown),
                "a lost server's calls fail as unavailable or unknown: {e}"
            ),
        }
    }
    assert_eq!(client.open_connections(), 1);
    for _ in 0..20 {
        client.call("@Ping", vec![]).await.expect("calls go to the server still up");
    }
    let b = server_on("balance-b2", port_b).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while client.open_connections() < 2 && std::time::Instant::now() < deadline {
        let _ = client.call("@Ping", vec![]).await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(client.open_connections(), 2, "the client reconnected to the restarted server");
    b.shutdown();
    a.shutdown();
}
