//! One client connection: login, then invocations in, responses out.
//!
//! The reader decodes each framed invocation and hands it to the
//! connection's own initiator handle ([`joule_txn::Client`]) without
//! waiting: requests are pipelined and answered by client handle, in
//! whatever order they finish. Answers are encoded on the thread that
//! produced them and queued to the connection's writer task, which sends
//! whatever has accumulated in one write.
//!
//! Limits: a frame longer than the configured maximum, a malformed login or
//! invocation, or a wrong password closes the connection (after an answer
//! saying why where the protocol has room for one); more than
//! `max_outstanding` unanswered requests get VoltDB's "server unavailable"
//! answer at once instead of queueing without bound.
//!
//! A few procedures are answered here rather than by the transaction
//! layer: `@Ping`, the administrative ones (`@Shutdown`, `@Pause`,
//! `@StopNode`, ...), and `@Subscribe('TOPOLOGY')`, after which the
//! connection also gets unsolicited responses (handle
//! [`joule_wire::TOPOLOGY_HANDLE`], the `@Statistics TOPO` table) whenever
//! the cluster's topology changes — clients routing calls to partition
//! leaders follow failovers at once instead of polling.

use crate::convert::{param_value, write_failure, write_ping, write_response, STATUS_SERVER_UNAVAILABLE};
use crate::{ServerContext, User};
use joule_common::{err, Result, Value};
use joule_txn::{Response, ResponseSink};
use joule_wire::frame::{payload_len, write_frame};
use joule_wire::messages::login_result;
use joule_wire::{HashScheme, Invocation, Login, LoginResponse};
use sha1::Digest;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio::sync::Notify;

/// How long a new connection may take to log in.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers encoded but not yet written, past which the connection stops
/// reading requests until its client reads (TCP then pushes back on it).
const MAX_UNWRITTEN_BYTES: usize = 8 << 20;

/// What the writer task shares with the rest of the connection (not the
/// sender of its own queue: the queue closes when the connection's senders
/// are gone, which is how the writer knows to stop).
struct WriteState {
    /// Bytes queued for the writer and not yet written.
    unwritten: AtomicUsize,
    /// Signalled by the writer whenever it wrote.
    written: Notify,
    /// True while the writer task has nothing queued and is not writing:
    /// then an answer may be written straight to the socket by whoever
    /// produced it (a site), saving the writer task's wake-up. Held while
    /// writing directly, and set false by every queueing, so a direct write
    /// never lands inside a frame the writer is writing.
    idle: std::sync::Mutex<bool>,
    /// The writer has stopped (the socket failed): nothing will be written.
    closed: std::sync::atomic::AtomicBool,
    /// The socket's write half, shared by the writer task and direct writes.
    socket: OwnedWriteHalf,
    stats: Arc<ConnectionStats>,
}

/// A connection's figures for `@Statistics IOSTATS` and `LIVECLIENTS`:
/// each counter has one writer (the reader task, or the writer task).
#[derive(Debug, Default)]
pub(crate) struct ConnectionStats {
    pub id: i64,
    pub peer: String,
    pub admin: bool,
    pub bytes_read: std::sync::atomic::AtomicU64,
    pub messages_read: std::sync::atomic::AtomicU64,
    pub bytes_written: std::sync::atomic::AtomicU64,
    pub messages_written: std::sync::atomic::AtomicU64,
}

/// Where a connection's answers go: encoded here, written by the writer task.
pub(crate) struct ConnectionSink {
    out: UnboundedSender<Vec<u8>>,
    pub(crate) outstanding: AtomicUsize,
    /// The client called `@Subscribe('TOPOLOGY')`: topology changes are
    /// pushed to it (see [`push_topology`]).
    topology: std::sync::atomic::AtomicBool,
    writes: Arc<WriteState>,
    /// The server's count of unanswered requests.
    queued: Arc<AtomicUsize>,
}

/// Unregisters a connection's statistics when it ends.
struct Registered<'a>(&'a ServerContext, i64);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        let gone = self.0.connections.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.1);
        if let Some((stats, _)) = gone {
            self.0.closed_bytes[0].fetch_add(stats.bytes_read.load(Ordering::Relaxed), Ordering::Relaxed);
            self.0.closed_bytes[1].fetch_add(stats.bytes_written.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }
}

impl ConnectionSink {
    /// Calls taken on this connection and not answered yet.
    pub(crate) fn unanswered(&self) -> usize {
        self.outstanding.load(Ordering::SeqCst)
    }

    /// Queue `buf` for the writer task.
    fn queue(&self, buf: Vec<u8>) {
        self.send(buf, false)
    }

    /// Queue `buf` for the writer task — or, if `direct` and the writer is
    /// idle, write it now from this thread (the rest, if the socket takes
    /// only part, still goes to the writer). Direct writes suit a lone
    /// answer (a synchronous client): they save the writer's wake-up. With
    /// many answers in flight the writer's batches are cheaper.
    fn send(&self, mut buf: Vec<u8>, direct: bool) {
        let w = &self.writes;
        let mut idle = w.idle.lock().unwrap_or_else(|e| e.into_inner());
        if *idle && direct {
            match w.socket.try_write(&buf) {
                Ok(n) if n == buf.len() => {
                    w.stats.bytes_written.fetch_add(n as u64, Ordering::Relaxed);
                    w.stats.messages_written.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Ok(n) => {
                    w.stats.bytes_written.fetch_add(n as u64, Ordering::Relaxed);
                    buf.drain(..n);
                }
                // WouldBlock (or an error the writer will meet too).
                Err(_) => {}
            }
        }
        // Whatever is queued, the writer writes next: no direct write until
        // it has drained the queue.
        *idle = false;
        let len = buf.len();
        w.unwritten.fetch_add(len, Ordering::Relaxed);
        // The connection may be gone; then nobody waits for this answer.
        if self.out.send(buf).is_err() {
            w.unwritten.fetch_sub(len, Ordering::Relaxed);
        }
    }
}

/// Write all of `buf` through the shared write half.
async fn write_all_shared(socket: &OwnedWriteHalf, buf: &[u8]) -> std::io::Result<()> {
    let mut at = 0;
    while at < buf.len() {
        socket.writable().await?;
        match socket.try_write(&buf[at..]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => at += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl ResponseSink for ConnectionSink {
    fn deliver(&self, handle: u64, response: Response) {
        let mut buf = Vec::with_capacity(128);
        let round_trip_ms = (response.cluster_micros / 1000).min(i32::MAX as u64) as i32;
        write_response(&mut buf, handle as i64, &response, round_trip_ms);
        let others = self.outstanding.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
        self.queued.fetch_sub(1, Ordering::Relaxed);
        // The only call in flight on this connection: answer it directly.
        self.send(buf, others == 0);
    }
}

/// Check `@Subscribe`'s parameters: one, `'TOPOLOGY'` (the only
/// notification there is).
fn subscription(params: &[joule_wire::Param]) -> Result<()> {
    match params {
        [p] => match param_value(p.clone()) {
            Value::String(s) if s.eq_ignore_ascii_case("TOPOLOGY") => Ok(()),
            Value::String(s) => Err(err!(InvalidArgument, "@Subscribe: unknown notification {s:?} (only TOPOLOGY)")),
            v => Err(err!(DatatypeMismatch, "@Subscribe takes a notification name, not {}", v.type_name())),
        },
        _ => Err(err!(WrongParameterCount, "@Subscribe takes one parameter ('TOPOLOGY'), not {}", params.len())),
    }
}

/// Push the topology `m` describes to every connection that subscribed:
/// one response with handle [`joule_wire::TOPOLOGY_HANDLE`] carrying the
/// `@Statistics TOPO` tables.
pub(crate) fn push_topology(ctx: &ServerContext, m: &joule_cluster::ClusterMetadata) {
    let sinks: Vec<Arc<ConnectionSink>> = ctx
        .connections
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .filter_map(|(_, sink)| sink.upgrade())
        .filter(|sink| sink.topology.load(Ordering::Relaxed))
        .collect();
    if sinks.is_empty() {
        return;
    }
    let mut buf = Vec::new();
    let response = joule_txn::Response::answered(crate::topology::topo_tables(ctx, m));
    write_response(&mut buf, joule_wire::TOPOLOGY_HANDLE, &response, 0);
    for sink in sinks {
        sink.queue(buf.clone());
    }
}

/// Reads a connection's frames, keeping a frame read in part across a
/// cancelled read: safe to race in `select!` (against a shutdown, say)
/// without tearing a frame.
struct FrameReader {
    max: usize,
    header: [u8; 4],
    /// The frame's payload once its header is read.
    payload: Option<Vec<u8>>,
    /// Bytes of the header (or, once it is read, of the payload) read.
    have: usize,
}

impl FrameReader {
    fn new(max: usize) -> FrameReader {
        FrameReader { max, header: [0; 4], payload: None, have: 0 }
    }

    /// The next frame's payload; `None` at the end of the stream between
    /// frames. Each read is cancel-safe (`read` consumes nothing when
    /// cancelled), and what was read stays here.
    async fn next(&mut self, rd: &mut BufReader<OwnedReadHalf>) -> Result<Option<Vec<u8>>> {
        loop {
            match &mut self.payload {
                None if self.have == self.header.len() => {
                    self.payload = Some(vec![0u8; payload_len(self.header, self.max)?]);
                    self.have = 0;
                }
                None => match rd.read(&mut self.header[self.have..]).await {
                    Ok(0) => return Ok(None),
                    Ok(n) => self.have += n,
                    Err(e) => return Err(err!(Unavailable, "connection read failed: {e}")),
                },
                Some(p) if self.have == p.len() => {
                    self.have = 0;
                    return Ok(self.payload.take());
                }
                Some(p) => match rd.read(&mut p[self.have..]).await {
                    Ok(0) => return Err(err!(ProtocolError, "connection closed inside a message")),
                    Ok(n) => self.have += n,
                    Err(e) => return Err(err!(ProtocolError, "connection closed inside a message: {e}")),
                },
            }
        }
    }
}

/// While a stopping server drains a connection: how long the client must
/// have sent nothing before the connection closes (requests it sent
/// meanwhile are read and refused, not cut off unread).
const DRAIN_QUIET: Duration = Duration::from_millis(100);

/// Wait until every call `sink`'s connection took is answered and every
/// answer written, and nothing came for [`DRAIN_QUIET`] since `last_read`
/// (or until the socket failed).
async fn answered(sink: &ConnectionSink, last_read: tokio::time::Instant) {
    loop {
        let writes = &sink.writes;
        let settled = sink.outstanding.load(Ordering::SeqCst) == 0 && writes.unwritten.load(Ordering::SeqCst) == 0;
        if writes.closed.load(Ordering::SeqCst) || (settled && last_read.elapsed() >= DRAIN_QUIET) {
            return;
        }
        tokio::select! {
            _ = writes.written.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
    }
}

/// Check HTTP credentials: a plain password, or a hex SHA-256 or SHA-1
/// of it (none configured: anyone).
pub(crate) fn authenticate_plain(users: &[User], user: &str, password: Option<&str>, hashed: Option<&str>) -> bool {
    if users.is_empty() {
        return true;
    }
    let Some(u) = users.iter().find(|u| u.name == user) else { return false };
    let hex = |d: &[u8]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
    match (password, hashed) {
        (Some(p), _) => same_bytes(p.as_bytes(), u.password.as_bytes()),
        (None, Some(h)) => {
            let h = h.to_ascii_lowercase();
            same_bytes(h.as_bytes(), hex(&sha2::Sha256::digest(u.password.as_bytes())).as_bytes())
                || same_bytes(h.as_bytes(), hex(&sha1::Sha1::digest(u.password.as_bytes())).as_bytes())
        }
        (None, None) => false,
    }
}

/// Equality without an early exit.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Check a login against the configured users (none configured: anyone).
fn authenticate(users: &[User], login: &Login) -> Option<Vec<String>> {
    if users.is_empty() {
        return Some(vec!["ADMINISTRATOR".to_string()]);
    }
    let user = users.iter().find(|u| u.name == login.user)?;
    let expected: Vec<u8> = match login.scheme {
        HashScheme::Sha1 => sha1::Sha1::digest(user.password.as_bytes()).to_vec(),
        HashScheme::Sha256 => sha2::Sha256::digest(user.password.as_bytes()).to_vec(),
    };
    same_bytes(&expected, &login.password_hash).then(|| user.roles.clone())
}

pub(crate) async fn serve(stream: TcpStream, ctx: Arc<ServerContext>, admin_port: bool) {
    let _ = stream.set_nodelay(true);
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let (rd, mut wr) = stream.into_split();
    // Pipelined requests arrive many to a segment: read them in bulk.
    let mut rd = BufReader::with_capacity(64 * 1024, rd);
    let max = ctx.config.max_message_bytes;
    // Login.
    // Frames are read by one reader throughout (a frame half read when the
    // shutdown comes is read on, not torn).
    let mut frames = FrameReader::new(max);
    let login = match tokio::time::timeout(LOGIN_TIMEOUT, frames.next(&mut rd)).await {
        Ok(Ok(Some(payload))) => Login::decode(&payload),
        _ => return,
    };
    let roles = match login.as_ref().ok().and_then(|l| authenticate(&ctx.config.users, l)) {
        Some(roles) => roles,
        None => {
            let result = if login.is_err() { login_result::MALFORMED } else { login_result::AUTHENTICATION_FAILED };
            let mut buf = Vec::new();
            write_frame(&mut buf, &LoginResponse::refused(result).encode());
            let _ = wr.write_all(&buf).await;
            return;
        }
    };
    let is_admin =
        admin_port || roles.iter().any(|r| r.eq_ignore_ascii_case("ADMINISTRATOR") || r.eq_ignore_ascii_case("ADMIN"));
    let connection_id = ctx.next_connection.fetch_add(1, Ordering::Relaxed) as i64;
    let stats =
        Arc::new(ConnectionStats { id: connection_id, peer: peer.clone(), admin: is_admin, ..Default::default() });
    let mut buf = Vec::new();
    write_frame(&mut buf, &ctx.login_response(connection_id).encode());
    if wr.write_all(&buf).await.is_err() {
        return;
    }

    let (tx, mut rx) = unbounded_channel::<Vec<u8>>();
    let writes = Arc::new(WriteState {
        unwritten: AtomicUsize::new(0),
        written: Notify::new(),
        idle: std::sync::Mutex::new(true),
        closed: std::sync::atomic::AtomicBool::new(false),
        socket: wr,
        stats: stats.clone(),
    });
    let sink = Arc::new(ConnectionSink {
        out: tx.clone(),
        outstanding: AtomicUsize::new(0),
        topology: std::sync::atomic::AtomicBool::new(false),
        writes: writes.clone(),
        queued: ctx.queued.clone(),
    });
    ctx.connections
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(connection_id, (stats.clone(), Arc::downgrade(&sink)));
    let _registered = Registered(&ctx, connection_id);
    let writer_state = writes.clone();
    let writer_stats = stats.clone();
    let writer = tokio::spawn(async move {
        while let Some(mut buf) = rx.recv().await {
            let mut messages = 1;
            while let Ok(more) = rx.try_recv() {
                buf.extend_from_slice(&more);
                messages += 1;
                if buf.len() > 1 << 20 {
                    break;
                }
            }
            writer_stats.bytes_written.fetch_add(buf.len() as u64, Ordering::Relaxed);
            writer_stats.messages_written.fetch_add(messages, Ordering::Relaxed);
            let ok = write_all_shared(&writer_state.socket, &buf).await.is_ok();
            writer_state.unwritten.fetch_sub(buf.len(), Ordering::Relaxed);
            writer_state.written.notify_one();
            if !ok {
                // Nothing more will be written: stop counting, wake the reader.
                writer_state.closed.store(true, Ordering::SeqCst);
                rx.close();
                while let Ok(lost) = rx.try_recv() {
                    writer_state.unwritten.fetch_sub(lost.len(), Ordering::Relaxed);
                }
                writer_state.written.notify_one();
                break;
            }
            // Nothing more queued: answers may go straight to the socket.
            let mut idle = writer_state.idle.lock().unwrap_or_else(|e| e.into_inner());
            if rx.is_empty() {
                *idle = true;
            }
        }
    });
    let sink_dyn: Arc<dyn ResponseSink> = sink.clone();
    let mut client = ctx.host.client();
    let mut shutdown = ctx.shutdown.subscribe();
    // Once a shutdown is asked: requests are refused (they did not run)
    // and the connection closes when every call it took is answered.
    let mut draining = *shutdown.borrow();
    let mut last_read = tokio::time::Instant::now();
    'serve: loop {
        // A client that does not read its answers: stop reading its
        // requests until the writer catches up.
        while writes.unwritten.load(Ordering::Relaxed) > MAX_UNWRITTEN_BYTES {
            if writes.closed.load(Ordering::SeqCst) {
                break 'serve;
            }
            tokio::select! {
                _ = writes.written.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = shutdown.changed() => break 'serve,
            }
        }
        let payload = tokio::select! {
            r = frames.next(&mut rd) => r,
            _ = shutdown.changed(), if !draining => {
                draining = true;
                last_read = tokio::time::Instant::now();
                continue;
            }
            _ = answered(&sink, last_read), if draining => break,
        };
        if draining {
            last_read = tokio::time::Instant::now();
        }
        let payload = match payload {
            Ok(Some(p)) => {
                stats.bytes_read.fetch_add(p.len() as u64 + 4, Ordering::Relaxed);
                stats.messages_read.fetch_add(1, Ordering::Relaxed);
                p
            }
            Ok(None) => break,
            Err(e) => {
                // A bad frame: say why (handle unknown: 0), then close.
                let mut buf = Vec::new();
                write_failure(&mut buf, 0, crate::convert::STATUS_GRACEFUL_FAILURE, &e.to_string());
                sink.queue(buf);
                break;
            }
        };
        let inv = match Invocation::decode(&payload) {
            Ok(inv) => inv,
            Err(e) => {
                let mut buf = Vec::new();
                write_failure(&mut buf, 0, crate::convert::STATUS_GRACEFUL_FAILURE, &e.to_string());
                sink.queue(buf);
                break;
            }
        };
        let handle = inv.client_handle;
        let mut out = Vec::new();
        let refusal = crate::cluster::refused_here(&ctx, &inv.procedure);
        match inv.procedure.as_str() {
            "@Ping" => write_ping(&mut out, handle),
            _ if draining => write_failure(
                &mut out,
                handle,
                STATUS_SERVER_UNAVAILABLE,
                "server unavailable: the server is shutting down (the call did not run)",
            ),
            name if crate::durable::needs_admin(name) && !is_admin => {
                let e = err!(PermissionDenied, "{name} needs the ADMINISTRATOR role or the admin port");
                write_failure(&mut out, handle, crate::convert::STATUS_GRACEFUL_FAILURE, &e.to_string())
            }
            "@Shutdown" | "@Pause" | "@Resume" | "@Quiesce" | "@StopNode" | "@ElasticRemove" if !is_admin => {
                let e = err!(PermissionDenied, "{} needs the ADMINISTRATOR role or the admin port", inv.procedure);
                write_failure(&mut out, handle, crate::convert::STATUS_GRACEFUL_FAILURE, &e.to_string())
            }
            "@Shutdown" => {
                write_ping(&mut out, handle);
                sink.queue(std::mem::take(&mut out));
                ctx.request_shutdown();
            }
            "@Subscribe" => match subscription(&inv.params) {
                Ok(()) => {
                    sink.topology.store(true, Ordering::Relaxed);
                    write_ping(&mut out, handle);
                }
                Err(e) => write_failure(&mut out, handle, crate::convert::STATUS_GRACEFUL_FAILURE, &e.to_string()),
            },
            "@Pause" | "@Resume" => {
                ctx.paused.store(inv.procedure == "@Pause", Ordering::SeqCst);
                write_ping(&mut out, handle);
            }
            "@StopNode" => {
                // A metadata change: answered when the group has applied it.
                let ctx = ctx.clone();
                let host = match inv.params.first().map(|p| param_value(p.clone())) {
                    Some(Value::Integer(h)) => Ok(h),
                    Some(v) => Err(err!(DatatypeMismatch, "@StopNode takes a host id, not {}", v.type_name())),
                    None => Err(err!(WrongParameterCount, "@StopNode takes a host id")),
                };
                answer_when_done(&sink, handle, async move { crate::cluster::stop_node(&ctx, host?).await });
            }
            "@AddCopy" => {
                // Answered once the metadata recorded it; the copy follows.
                let ctx = ctx.clone();
                let params: Vec<Value> = inv.params.into_iter().map(param_value).collect();
                answer_when_done(&sink, handle, async move { crate::copies::add_copy(&ctx, params).await });
            }
            "@ElasticRemove" => {
                // Answered once the metadata recorded it; the drain goes on.
                let ctx = ctx.clone();
                let params: Vec<Value> = inv.params.into_iter().map(param_value).collect();
                answer_when_done(&sink, handle, async move { crate::elastic::remove_hosts(&ctx, params).await });
            }
            _ if refusal.is_some() => {
                if let Some(e) = &refusal {
                    write_failure(&mut out, handle, crate::convert::refusal_status(e), &e.to_string());
                }
            }
            _ if !admin_port && ctx.paused.load(Ordering::Relaxed) => write_failure(
                &mut out,
                handle,
                STATUS_SERVER_UNAVAILABLE,
                "server unavailable: the database is paused (admin mode); use the admin port",
            ),
            name => {
                if sink.outstanding.load(Ordering::Relaxed) >= ctx.config.max_outstanding_per_connection {
                    write_failure(
                        &mut out,
                        handle,
                        STATUS_SERVER_UNAVAILABLE,
                        "server unavailable: too many outstanding requests on this connection (backpressure)",
                    );
                } else if ctx.queued.load(Ordering::Relaxed) >= ctx.config.max_queued_requests {
                    write_failure(
                        &mut out,
                        handle,
                        STATUS_SERVER_UNAVAILABLE,
                        "server unavailable: the server has too much queued work (backpressure)",
                    );
                } else {
                    let params: Vec<Value> = inv.params.into_iter().map(param_value).collect();
                    sink.outstanding.fetch_add(1, Ordering::Relaxed);
                    ctx.queued.fetch_add(1, Ordering::Relaxed);
                    if crate::durable::handles(name) {
                        crate::durable::invoke(&ctx, &mut client, name, params, handle as u64, sink_dyn.clone());
                    } else {
                        client.call_async(name, params, handle as u64, sink_dyn.clone());
                    }
                }
            }
        }
        if !out.is_empty() {
            sink.queue(out);
        }
    }
    drop(tx);
    drop(sink_dyn);
    drop(sink);
    let _ = writer.await;
}

/// Answer the call `handle` on `sink` once `work` (a change to the cluster
/// metadata, say) is done: with a ping, or with its failure.
fn answer_when_done(
    sink: &Arc<ConnectionSink>,
    handle: i64,
    work: impl std::future::Future<Output = joule_common::Result<()>> + Send + 'static,
) {
    let sink = sink.clone();
    tokio::spawn(async move {
        let mut out = Vec::new();
        match work.await {
            Ok(()) => write_ping(&mut out, handle),
            Err(e) => write_failure(&mut out, handle, crate::convert::STATUS_GRACEFUL_FAILURE, &e.to_string()),
        }
        sink.queue(out);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A read cancelled halfway through a frame (as `select!` does when a
    /// shutdown wins the race) loses nothing: the next read returns the
    /// whole frame, and the one after it the next frame.
    #[tokio::test]
    async fn a_frame_read_in_part_survives_a_cancelled_read() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (rd, _wr) = server.into_split();
        let mut rd = BufReader::new(rd);
        let mut frames = FrameReader::new(1 << 20);
        let mut bytes = Vec::new();
        write_frame(&mut bytes, b"first frame");
        write_frame(&mut bytes, b"second");
        // Two bytes of the header, then six of the payload: each read is
        // cut off by a timeout before the frame is whole.
        for cut in [2, 10] {
            let sent = if cut == 2 { &bytes[..2] } else { &bytes[2..10] };
            client.write_all(sent).await.unwrap();
            let r = tokio::time::timeout(Duration::from_millis(50), frames.next(&mut rd)).await;
            assert!(r.is_err(), "no frame is whole after {cut} bytes");
        }
        client.write_all(&bytes[10..]).await.unwrap();
        assert_eq!(frames.next(&mut rd).await.unwrap().as_deref(), Some(&b"first frame"[..]));
        assert_eq!(frames.next(&mut rd).await.unwrap().as_deref(), Some(&b"second"[..]));
        drop(client);
        assert_eq!(frames.next(&mut rd).await.unwrap(), None, "the end of the stream between frames");
    }

    #[test]
    fn credentials_are_checked_only_when_users_exist() {
        assert!(authenticate_plain(&[], "anyone", None, None));
        let users = vec![User { name: "u".into(), password: "pw".into(), roles: vec![] }];
        assert!(authenticate_plain(&users, "u", Some("pw"), None));
        assert!(!authenticate_plain(&users, "u", Some("px"), None));
        assert!(!authenticate_plain(&users, "v", Some("pw"), None));
        assert!(!authenticate_plain(&users, "u", None, None));
        let hex = |d: &[u8]| d.iter().map(|b| format!("{b:02X}")).collect::<String>();
        assert!(authenticate_plain(&users, "u", None, Some(&hex(&sha2::Sha256::digest(b"pw")))));
        assert!(authenticate_plain(&users, "u", None, Some(&hex(&sha1::Sha1::digest(b"pw")))));
        assert!(!authenticate_plain(&users, "u", None, Some(&hex(&sha1::Sha1::digest(b"px")))));
        let login = |password: &[u8], scheme| Login {
            version: 1,
            scheme,
            service: "database".into(),
            user: "u".into(),
            password_hash: match scheme {
                HashScheme::Sha1 => sha1::Sha1::digest(password).to_vec(),
                HashScheme::Sha256 => sha2::Sha256::digest(password).to_vec(),
            },
        };
        assert!(authenticate(&users, &login(b"pw", HashScheme::Sha256)).is_some());
        assert!(authenticate(&users, &login(b"pw", HashScheme::Sha1)).is_some());
        assert!(authenticate(&users, &login(b"no", HashScheme::Sha256)).is_none());
    }
}
