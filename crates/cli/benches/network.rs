//! Network round trips against a real `joule start` process over loopback.
//!
//! `cargo bench -p joule-cli --bench network`
//!
//! 1. One synchronous client (a blocking socket, one call at a time) doing
//!    a single-row primary-key `T.select`: latency percentiles.
//! 2. The same through `joule_client::BlockingClient`.
//! 3. Pipelined: the async `joule_client::Client` keeping many calls in
//!    flight over a few connections: calls per second.
//! 4. The same with `Client::call_with` (a callback per call instead of a
//!    task): calls per second.
//!
//! (`JOULE_BENCH_SECONDS` sets each phase's length, default 5;
//! `JOULE_BENCH_SITES` the server's `--sites`, default its own default;
//! `JOULE_BENCH_PROXY=1` runs every phase through a `joule proxy` in front
//! of the server, to measure what the extra hop costs.)

use hdrhistogram::Histogram;
use joule_client::{BlockingClient, Client, Options};
use joule_common::Value;
use joule_wire::frame::{payload_len, write_frame};
use joule_wire::{ClientResponse, HashScheme, Invocation, Login, Param};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ROWS: i64 = 10_000;

fn main() {
    let seconds: f64 = std::env::var("JOULE_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let dir = std::env::temp_dir().join(format!("joule-bench-{}", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_joule"))
        .args(["start", "--client-port", "0", "--admin-port", "0", "--http-port", "0", "--host", "127.0.0.1", "--dir"])
        .arg(&dir)
        .args(std::env::var("JOULE_BENCH_SITES").map(|s| vec!["--sites".to_string(), s]).unwrap_or_default())
        .stdout(Stdio::piped())
        .spawn()
        .expect("joule starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.split("client ").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    let addr = format!("127.0.0.1:{port}");

    let setup = BlockingClient::connect(&[&addr], Options::default()).unwrap();
    setup
        .execute("CREATE TABLE t (id BIGINT NOT NULL PRIMARY KEY, name VARCHAR(20), v BIGINT); PARTITION TABLE t ON COLUMN id", vec![])
        .unwrap();
    for i in 0..ROWS {
        setup.call("T.insert", vec![i.into(), format!("name{i}").into(), (i * 3).into()]).unwrap();
    }
    let mut proxy = None;
    let (addr, setup) = if std::env::var("JOULE_BENCH_PROXY").is_ok_and(|v| v == "1") {
        let mut p = Command::new(env!("CARGO_BIN_EXE_joule"))
            .args(["proxy", "--listen", "127.0.0.1:0", "--servers", &addr])
            .stdout(Stdio::piped())
            .spawn()
            .expect("joule proxy starts");
        let mut line = String::new();
        BufReader::new(p.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let through = line.split("listening on ").nth(1).unwrap().split(';').next().unwrap().to_string();
        println!("(every phase through joule proxy at {through})");
        proxy = Some(p);
        let setup = BlockingClient::connect(&[&through], Options::default()).unwrap();
        (through, setup)
    } else {
        (addr, setup)
    };

    // 1. A plain synchronous socket client.
    let mut sock = TcpStream::connect(&addr).unwrap();
    sock.set_nodelay(true).unwrap();
    let login = Login {
        version: 1,
        scheme: HashScheme::Sha256,
        service: "database".into(),
        user: String::new(),
        password_hash: vec![0; 32],
    };
    send(&mut sock, &login.encode());
    recv(&mut sock);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).unwrap();
    let mut i = 0i64;
    let run = |hist: &mut Histogram<u64>, call: &mut dyn FnMut(i64)| {
        let end = Instant::now() + Duration::from_secs_f64(seconds);
        let mut n = 0u64;
        while Instant::now() < end {
            let t = Instant::now();
            call(n as i64);
            hist.saturating_record(t.elapsed().as_nanos() as u64 / 1000);
            n += 1;
        }
        n
    };
    let n = run(&mut hist, &mut |k| {
        let inv = Invocation {
            version: 0,
            procedure: "T.select".into(),
            client_handle: k,
            batch_timeout_ms: None,
            params: vec![Param::Value(Value::Integer((k * 7919) % ROWS))],
        };
        send(&mut sock, &inv.encode().unwrap());
        let r = ClientResponse::decode(&recv(&mut sock)).unwrap();
        assert!(r.status == 1 && r.tables[0].rows.len() == 1);
        i += 1;
    });
    report("sync socket client, T.select", &hist, n, seconds);

    // 2. The blocking client API.
    let mut hist = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).unwrap();
    let n = run(&mut hist, &mut |k| {
        let r = setup.call("T.select", vec![((k * 7919) % ROWS).into()]).unwrap();
        assert_eq!(r.tables[0].rows.len(), 1);
    });
    report("BlockingClient, T.select", &hist, n, seconds);

    // 3. Pipelined async client.
    let in_flight: u64 = std::env::var("JOULE_BENCH_IN_FLIGHT").ok().and_then(|s| s.parse().ok()).unwrap_or(256);
    let connections: usize = std::env::var("JOULE_BENCH_CONNECTIONS").ok().and_then(|s| s.parse().ok()).unwrap_or(2);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let rate = rt.block_on(async {
        let client = Client::connect(&[&addr], Options { connections_per_address: connections, ..Default::default() })
            .await
            .unwrap();
        let done = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let end = start + Duration::from_secs_f64(seconds);
        let mut workers = Vec::new();
        for w in 0..in_flight {
            let (client, done) = (client.clone(), done.clone());
            workers.push(tokio::spawn(async move {
                let mut k = w as i64;
                while Instant::now() < end {
                    let r = client.call("T.select", vec![(k % ROWS).into()]).await.unwrap();
                    assert_eq!(r.tables[0].rows.len(), 1);
                    k += 7919;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        for w in workers {
            w.await.unwrap();
        }
        done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
    });
    println!("pipelined Client ({connections} connections, {in_flight} in flight), T.select: {rate:.0} calls/s");

    // 4. Pipelined with callbacks (`Client::call_with`): each answer's
    //    callback makes the next call; no task per call.
    let rate = rt.block_on(async {
        let client = Client::connect(&[&addr], Options { connections_per_address: connections, ..Default::default() })
            .await
            .unwrap();
        let done = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let start = Instant::now();
        for w in 0..in_flight {
            issue(client.clone(), done.clone(), stop.clone(), w as i64);
        }
        tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
        stop.store(true, Ordering::SeqCst);
        let rate = done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
        // Let the calls in flight finish.
        tokio::time::sleep(Duration::from_millis(200)).await;
        rate
    });
    println!(
        "pipelined Client::call_with ({connections} connections, {in_flight} in flight), T.select: {rate:.0} calls/s"
    );
    let _ = i;
    if let Some(mut p) = proxy {
        let _ = p.kill();
        let _ = p.wait();
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// One call whose callback checks the answer and makes the next call.
fn issue(client: Client, done: Arc<AtomicU64>, stop: Arc<std::sync::atomic::AtomicBool>, k: i64) {
    let next = client.clone();
    let sent = client.call_with("T.select", vec![(k % ROWS).into()], move |r| {
        let r = r.expect("T.select answers");
        assert_eq!(
            r.tables[0].rows,
            vec![vec![
                Value::Integer(k % ROWS),
                Value::String(format!("name{}", k % ROWS)),
                Value::Integer(k % ROWS * 3)
            ]]
        );
        done.fetch_add(1, Ordering::Relaxed);
        if !stop.load(Ordering::Relaxed) {
            issue(next, done, stop, k + 7919);
        }
    });
    sent.expect("the call is sent");
}

fn report(what: &str, h: &Histogram<u64>, n: u64, seconds: f64) {
    println!(
        "{what}: {:.0} calls/s, p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
        n as f64 / seconds,
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max()
    );
}

fn send(s: &mut TcpStream, payload: &[u8]) {
    let mut buf = Vec::with_capacity(payload.len() + 4);
    write_frame(&mut buf, payload);
    s.write_all(&buf).unwrap();
}

fn recv(s: &mut TcpStream) -> Vec<u8> {
    let mut h = [0u8; 4];
    s.read_exact(&mut h).unwrap();
    let mut p = vec![0u8; payload_len(h, 1 << 30).unwrap()];
    s.read_exact(&mut p).unwrap();
    p
}
