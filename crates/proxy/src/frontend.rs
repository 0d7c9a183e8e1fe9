//! One client connection to the proxy: the login (which picks the virtual
//! host and its pool), then invocations in and answers out.
//!
//! The reader decodes each invocation and hands it to the pool without
//! waiting; answers come back on the pool's I/O tasks, get the client's
//! handle put back and go to this connection's writer task, which sends
//! whatever has accumulated in one write. So calls are pipelined end to
//! end and answered in whatever order they finish, as by a server.

use crate::{failure_status, Group, Shared};
use joule_common::{err, Result, Value};
use joule_wire::frame::{payload_len, write_frame};
use joule_wire::messages::{login_result, write_bare_response, STATUS_GRACEFUL_FAILURE, STATUS_SERVER_UNAVAILABLE};
use joule_wire::{ClientResponse, Invocation, Login, LoginResponse, Param};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// How long a new connection may take to log in, and the proxy to open
/// the pool for it.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);

async fn read_frame(rd: &mut BufReader<OwnedReadHalf>, max: usize) -> Result<Option<Vec<u8>>> {
    let mut header = [0u8; 4];
    match rd.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(err!(Unavailable, "connection read failed: {e}")),
    }
    let mut payload = vec![0u8; payload_len(header, max)?];
    rd.read_exact(&mut payload).await.map_err(|e| err!(ProtocolError, "connection closed inside a message: {e}"))?;
    Ok(Some(payload))
}

/// Answers encoded but not yet written, past which the connection stops
/// reading requests until its client reads (TCP then pushes back on it).
const MAX_UNWRITTEN_BYTES: usize = 8 << 20;

/// The way to this connection's writer task, counting what is queued.
#[derive(Clone)]
struct Answers {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    unwritten: Arc<AtomicUsize>,
}

impl Answers {
    fn send(&self, frame: Vec<u8>) {
        self.unwritten.fetch_add(frame.len(), Ordering::Relaxed);
        if let Err(lost) = self.tx.send(frame) {
            self.unwritten.fetch_sub(lost.0.len(), Ordering::Relaxed);
        }
    }
}

/// Counts a client connection in its group while it lives.
struct Counted(Arc<Group>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(crate) async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::with_capacity(64 * 1024, rd);
    let max = shared.config.max_message_bytes;
    let refuse = |result: i8| {
        let mut buf = Vec::new();
        write_frame(&mut buf, &LoginResponse::refused(result).encode());
        buf
    };
    let login = match tokio::time::timeout(LOGIN_TIMEOUT, read_frame(&mut rd, max)).await {
        Ok(Ok(Some(payload))) => Login::decode(&payload),
        _ => return,
    };
    let login = match login {
        Ok(login) => login,
        Err(_) => {
            let _ = wr.write_all(&refuse(login_result::MALFORMED)).await;
            return;
        }
    };
    let Some(group) = shared.group(&login.service).cloned() else {
        eprintln!("joule proxy: {peer} asked for virtual host '{}', which is not configured", login.service);
        let _ = wr.write_all(&refuse(login_result::AUTHENTICATION_FAILED)).await;
        return;
    };
    let pool = match tokio::time::timeout(LOGIN_TIMEOUT, group.pool(&login, &shared)).await {
        Ok(Ok(pool)) => pool,
        Ok(Err(e)) if e.code() == joule_common::ErrorCode::PermissionDenied => {
            let _ = wr.write_all(&refuse(login_result::AUTHENTICATION_FAILED)).await;
            return;
        }
        // Reached, but not usable as configured (say its database does not
        // exist there).
        Ok(Err(e)) if e.code() != joule_common::ErrorCode::Unavailable => {
            eprintln!("joule proxy: {peer} could not log in to '{}': {e}", group.config.name);
            let _ = wr.write_all(&refuse(login_result::AUTHENTICATION_FAILED)).await;
            return;
        }
        outcome => {
            let why = match outcome {
                Ok(Err(e)) => e.to_string(),
                _ => format!("no backend answered within {LOGIN_TIMEOUT:?}"),
            };
            eprintln!("joule proxy: {peer} could not log in to '{}': {why}", group.config.name);
            let _ = wr.write_all(&refuse(login_result::TIMEOUT)).await;
            return;
        }
    };
    group.connections.fetch_add(1, Ordering::Relaxed);
    let _counted = Counted(group.clone());
    let connection_id = shared.next_connection.fetch_add(1, Ordering::Relaxed) as i64;
    let welcome = LoginResponse {
        version: 0,
        result: login_result::SUCCESS,
        host_id: 0,
        connection_id,
        cluster_start_millis: shared.started_millis,
        leader_ipv4: 0x7f00_0001,
        build: format!("JouleDB proxy {}", env!("CARGO_PKG_VERSION")),
    };
    let mut buf = Vec::new();
    write_frame(&mut buf, &welcome.encode());
    if wr.write_all(&buf).await.is_err() {
        return;
    }

    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let answers = Answers { tx, unwritten: Arc::new(AtomicUsize::new(0)) };
    let written = Arc::new(tokio::sync::Notify::new());
    let (w_unwritten, w_written) = (answers.unwritten.clone(), written.clone());
    let writer = tokio::spawn(async move {
        while let Some(mut buf) = rx.recv().await {
            while let Ok(more) = rx.try_recv() {
                buf.extend_from_slice(&more);
                if buf.len() > 1 << 20 {
                    break;
                }
            }
            let ok = wr.write_all(&buf).await.is_ok();
            w_unwritten.fetch_sub(buf.len(), Ordering::Relaxed);
            w_written.notify_one();
            if !ok {
                // Nothing more will be written; the reader stops too.
                rx.close();
                while let Ok(lost) = rx.try_recv() {
                    w_unwritten.fetch_sub(lost.len(), Ordering::Relaxed);
                }
                w_written.notify_one();
                return;
            }
        }
    });
    let outstanding = Arc::new(AtomicUsize::new(0));
    let mut shutdown = shared.shutdown.clone();
    'serve: loop {
        // A client that does not read its answers: stop reading its
        // requests until the writer catches up.
        while answers.unwritten.load(Ordering::Relaxed) > MAX_UNWRITTEN_BYTES {
            if answers.tx.is_closed() {
                break 'serve;
            }
            tokio::select! {
                _ = written.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = shutdown.changed() => break 'serve,
            }
        }
        let payload = tokio::select! {
            r = read_frame(&mut rd, max) => r,
            _ = shutdown.changed() => break,
        };
        let invocation = match payload.and_then(|p| p.map(|p| Invocation::decode(&p)).transpose()) {
            Ok(Some(inv)) => inv,
            Ok(None) => break,
            Err(e) => {
                // A bad frame or invocation: say why (handle unknown: 0),
                // then close.
                let mut out = Vec::new();
                write_bare_response(&mut out, 0, STATUS_GRACEFUL_FAILURE, Some(&e.to_string()));
                answers.send(out);
                break;
            }
        };
        let handle = invocation.client_handle;
        if let Some(out) = answer_here(&invocation, &shared) {
            group.answered_here.fetch_add(1, Ordering::Relaxed);
            answers.send(out);
            continue;
        }
        if outstanding.load(Ordering::Relaxed) >= shared.config.max_outstanding_per_connection {
            let mut out = Vec::new();
            let why = "server unavailable: too many outstanding requests on this proxy connection (backpressure)";
            write_bare_response(&mut out, handle, STATUS_SERVER_UNAVAILABLE, Some(why));
            group.failed.fetch_add(1, Ordering::Relaxed);
            answers.send(out);
            continue;
        }
        outstanding.fetch_add(1, Ordering::Relaxed);
        group.calls.fetch_add(1, Ordering::Relaxed);
        let (answers, outstanding, group) = (answers.clone(), outstanding.clone(), group.clone());
        pool.forward(invocation, move |answer| {
            outstanding.fetch_sub(1, Ordering::Relaxed);
            let mut out = Vec::new();
            match answer {
                Ok(mut payload) if payload.len() >= 9 => {
                    payload[1..9].copy_from_slice(&handle.to_be_bytes());
                    write_frame(&mut out, &payload);
                }
                Ok(_) => {
                    let why = err!(ProtocolError, "the backend sent an answer too short to hold a handle");
                    group.failed.fetch_add(1, Ordering::Relaxed);
                    write_bare_response(&mut out, handle, failure_status(&why), Some(&why.to_string()));
                }
                Err(e) => {
                    group.failed.fetch_add(1, Ordering::Relaxed);
                    write_bare_response(&mut out, handle, failure_status(&e), Some(&e.to_string()));
                }
            }
            answers.send(out);
        });
    }
    // Answers still on their way (each bounded by the call timeout) are
    // written before the socket closes.
    drop(answers);
    let _ = writer.await;
}

/// The answer to a call the proxy serves itself, if it is one: `@Ping`,
/// `@Statistics PROXY` and `@Subscribe` (acknowledged; the proxy follows
/// the topology itself), and the refusal of `USE` (it would change the
/// database of a connection other clients share).
fn answer_here(invocation: &Invocation, shared: &Shared) -> Option<Vec<u8>> {
    let handle = invocation.client_handle;
    let mut out = Vec::new();
    match invocation.procedure.as_str() {
        "@AdHoc" if first_text(&invocation.params).is_some_and(changes_database) => {
            let e = err!(
                FeatureNotSupported,
                "USE through joule proxy: its connections to the backends are shared; give the virtual host a \
                 database (--vhost NAME@DATABASE=...) or qualify names (database.table)"
            );
            write_bare_response(&mut out, handle, STATUS_GRACEFUL_FAILURE, Some(&e.to_string()))
        }
        "@Ping" | "@Subscribe" => write_bare_response(&mut out, handle, 1, None),
        "@Statistics" if first_text(&invocation.params).is_some_and(|s| s.eq_ignore_ascii_case("PROXY")) => {
            let response = ClientResponse {
                client_handle: handle,
                status: 1,
                status_string: None,
                app_status: joule_wire::messages::APP_STATUS_UNSET,
                app_status_string: None,
                cluster_round_trip_ms: 0,
                tables: crate::stats::tables(shared),
            };
            match response.encode() {
                Ok(payload) => write_frame(&mut out, &payload),
                Err(e) => write_bare_response(&mut out, handle, STATUS_GRACEFUL_FAILURE, Some(&e.to_string())),
            }
        }
        _ => return None,
    }
    Some(out)
}

/// Whether ad hoc SQL holds a `USE` statement. Statements are told apart
/// by semicolons alone, so a semicolon inside a string may make a
/// statement look like `USE` — refused, never let through.
fn changes_database(sql: &str) -> bool {
    sql.split(';').any(|statement| {
        let words = statement.trim_start();
        words.len() >= 3
            && words.is_char_boundary(3)
            && words[..3].eq_ignore_ascii_case("USE")
            && words[3..].chars().next().is_none_or(char::is_whitespace)
    })
}

/// A call's first parameter, if it is text (`@Statistics`' selector,
/// `@AdHoc`'s SQL).
fn first_text(params: &[Param]) -> Option<&str> {
    match params.first()? {
        Param::Value(Value::String(s)) => Some(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn use_statements_are_found_wherever_they_are() {
        assert!(changes_database("USE sales"));
        assert!(changes_database("  use\tSALES;"));
        assert!(changes_database("SELECT 1; use database sales"));
        assert!(changes_database("SELECT ';use x'"), "a false alarm is refused, never a miss");
        assert!(!changes_database("SELECT * FROM users"));
        assert!(!changes_database("UPDATE t SET used = 1"));
        assert!(!changes_database("USER"));
        assert!(!changes_database("é€x"), "no panic inside a character");
        assert!(!changes_database(""));
    }
}
