//! The ceiling a synchronous-client workload can reach on this machine:
//! round trips per second over loopback TCP to a server that does nothing
//! but echo, driven the way `joule bench --sync` and `pgbench` drive a
//! server (CLIENTS connections, one message outstanding on each, served by
//! THREADS client threads polling with epoll; the echo server is
//! SERVER_THREADS more threads, each polling its share of the connections
//! — no hand-off, no parsing, no work).
//!
//! No database can answer point selects from such clients faster than this
//! on the same machine, since each one costs at least these two socket
//! writes, two reads and the wake-ups between them.
//!
//! ```sh
//! cargo bench -p joule-client --bench loopback
//! # JOULE_BENCH_CLIENTS (16), JOULE_BENCH_THREADS (2),
//! # JOULE_BENCH_SERVER_THREADS (1), JOULE_BENCH_SECONDS (5)
//! ```

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::io::{ErrorKind, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A message the size of a point-select invocation.
const MESSAGE: usize = 40;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Read what is there; `Ok(bytes)` (0 at end of stream is an error).
fn drain(s: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    loop {
        match s.read(buf) {
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(got),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// One server thread: echo whatever arrives on its connections.
fn echo_server(streams: Vec<std::net::TcpStream>, stop: Arc<AtomicBool>) {
    let mut poll = Poll::new().expect("poll");
    let mut events = Events::with_capacity(1024);
    let mut connections: Vec<TcpStream> = streams
        .into_iter()
        .enumerate()
        .map(|(i, std)| {
            std.set_nodelay(true).expect("nodelay");
            std.set_nonblocking(true).expect("nonblocking");
            let mut s = TcpStream::from_std(std);
            poll.registry().register(&mut s, Token(i), Interest::READABLE).expect("register");
            s
        })
        .collect();
    let mut buf = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        poll.poll(&mut events, Some(Duration::from_millis(100))).expect("poll");
        for event in events.iter() {
            let s = &mut connections[event.token().0];
            if let Ok(n) = drain(s, &mut buf) {
                // Small messages into an empty send buffer: the write takes it all.
                let _ = s.write_all(&buf[..n]);
            }
        }
    }
}

/// One client thread: `n` connections, one message outstanding on each.
fn client(address: std::net::SocketAddr, n: usize, done: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    let mut poll = Poll::new().expect("poll");
    let mut events = Events::with_capacity(n);
    let mut connections: Vec<(TcpStream, usize)> = (0..n)
        .map(|i| {
            let std = std::net::TcpStream::connect(address).expect("connect");
            std.set_nodelay(true).expect("nodelay");
            std.set_nonblocking(true).expect("nonblocking");
            let mut s = TcpStream::from_std(std);
            poll.registry().register(&mut s, Token(i), Interest::READABLE).expect("register");
            (s, 0)
        })
        .collect();
    let message = [7u8; MESSAGE];
    let mut buf = vec![0u8; 64 * 1024];
    for (s, _) in connections.iter_mut() {
        s.write_all(&message).expect("send");
    }
    while !stop.load(Ordering::Relaxed) {
        poll.poll(&mut events, Some(Duration::from_millis(100))).expect("poll");
        for event in events.iter() {
            let (s, pending) = &mut connections[event.token().0];
            *pending += drain(s, &mut buf).expect("echo server alive");
            // The whole echo is back: one round trip; send the next.
            if *pending >= MESSAGE {
                *pending -= MESSAGE;
                done.fetch_add(1, Ordering::Relaxed);
                s.write_all(&message).expect("send");
            }
        }
    }
}

fn main() {
    let clients = setting("JOULE_BENCH_CLIENTS", 16).max(1) as usize;
    let threads = setting("JOULE_BENCH_THREADS", 2).clamp(1, clients as u64) as usize;
    let server_threads = setting("JOULE_BENCH_SERVER_THREADS", 1).clamp(1, clients as u64) as usize;
    let seconds = setting("JOULE_BENCH_SECONDS", 5).max(1);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    // The clients stop first: a server gone first would reset their connections.
    let (stop, stop_server) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let done = Arc::new(AtomicU64::new(0));
    let accept = std::thread::spawn(move || {
        let mut shares: Vec<Vec<std::net::TcpStream>> = (0..server_threads).map(|_| Vec::new()).collect();
        for i in 0..clients {
            shares[i % server_threads].push(listener.accept().expect("accept").0);
        }
        shares
    });
    let drivers: Vec<_> = (0..threads)
        .map(|t| {
            let n = (t..clients).step_by(threads).count();
            let (done, stop) = (done.clone(), stop.clone());
            std::thread::spawn(move || client(address, n, done, stop))
        })
        .collect();
    let servers: Vec<_> = accept
        .join()
        .expect("accepting")
        .into_iter()
        .map(|share| {
            let stop = stop_server.clone();
            std::thread::spawn(move || echo_server(share, stop))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let (start, before) = (Instant::now(), done.load(Ordering::Relaxed));
    std::thread::sleep(Duration::from_secs(seconds));
    let trips = done.load(Ordering::Relaxed) - before;
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for d in drivers {
        d.join().expect("client thread");
    }
    stop_server.store(true, Ordering::Relaxed);
    for s in servers {
        s.join().expect("server thread");
    }
    println!(
        "loopback echo, {server_threads} server thread(s): {clients} clients on {threads} threads, one {MESSAGE}-byte message outstanding each: {:.0} round trips/s ({trips} in {elapsed:.1} s)",
        trips as f64 / elapsed
    );
}
