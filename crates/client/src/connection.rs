//! One connection: a writer task sending framed invocations, a reader task
//! matching responses to waiting calls by client handle.

use crate::Options;
use joule_common::{err, Error, Result};
use joule_wire::frame::{payload_len, write_frame};
use joule_wire::{ClientResponse, Invocation, LoginResponse, Param};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

/// Who gets a call's answer.
pub(crate) enum Reply {
    /// An `async` caller waiting on a channel.
    Wait(oneshot::Sender<Result<ClientResponse>>),
    /// A function run with the answer on the reader task (no task to wake).
    Callback(Box<dyn FnOnce(Result<ClientResponse>) + Send>),
    /// A function run on the reader task with the answer's payload as it
    /// came, not decoded (a proxy passing it on).
    Raw(Box<dyn FnOnce(Result<Vec<u8>>) + Send>),
}

impl Reply {
    /// Hand over an answer's payload (decoded here unless `Raw`) or the
    /// reason there is none.
    pub(crate) fn complete(self, answer: Result<Vec<u8>>) {
        match self {
            Reply::Wait(tx) => {
                let _ = tx.send(answer.and_then(|p| ClientResponse::decode(&p)));
            }
            Reply::Callback(f) => f(answer.and_then(|p| ClientResponse::decode(&p))),
            Reply::Raw(f) => f(answer),
        }
    }
}

/// The client handle of a response payload (after its version byte), read
/// without decoding the rest.
fn response_handle(payload: &[u8]) -> Option<i64> {
    Some(i64::from_be_bytes(payload.get(1..9)?.try_into().ok()?))
}

/// Calls awaiting answers, by handle, with when they were written.
type Pending = Arc<Mutex<HashMap<i64, (Reply, std::time::Instant)>>>;

struct Outgoing {
    frame: Vec<u8>,
    handle: i64,
    reply: Reply,
}

pub(crate) struct Connection {
    tx: mpsc::UnboundedSender<Outgoing>,
    open: Arc<AtomicBool>,
    next_handle: AtomicI64,
    timeout: Option<std::time::Duration>,
    /// Calls sent and not yet answered (for least-outstanding balancing).
    outstanding: Arc<AtomicUsize>,
    /// Recent round trips, in microseconds: an exponentially weighted
    /// average over the answers (each weighs 1/8; 0 until the first).
    latency_us: Arc<AtomicU64>,
}

async fn read_frame(rd: &mut BufReader<OwnedReadHalf>, max: usize) -> Result<Vec<u8>> {
    let mut header = [0u8; 4];
    rd.read_exact(&mut header).await.map_err(|e| err!(Unavailable, "connection lost: {e}"))?;
    let n = payload_len(header, max)?;
    let mut payload = vec![0u8; n];
    rd.read_exact(&mut payload).await.map_err(|e| err!(Unavailable, "connection lost: {e}"))?;
    Ok(payload)
}

fn lock(p: &Pending) -> std::sync::MutexGuard<'_, HashMap<i64, (Reply, std::time::Instant)>> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

impl Connection {
    /// Open and log in. Topology notifications (after `@Subscribe`) wake
    /// `pushes`.
    pub(crate) async fn open(
        addr: SocketAddr,
        options: &Options,
        pushes: Option<Arc<tokio::sync::Notify>>,
    ) -> Result<Connection> {
        let stream = TcpStream::connect(addr).await.map_err(|e| err!(Unavailable, "cannot connect to {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (rd, mut wr) = stream.into_split();
        let mut rd = BufReader::with_capacity(64 * 1024, rd);
        let login = crate::login_message(options);
        let mut buf = Vec::new();
        write_frame(&mut buf, &login.encode());
        wr.write_all(&buf).await.map_err(|e| err!(Unavailable, "cannot log in to {addr}: {e}"))?;
        let answer = LoginResponse::decode(&read_frame(&mut rd, options.max_message_bytes).await?)?;
        if answer.result != 0 {
            return Err(err!(PermissionDenied, "{addr} refused the login (result {})", answer.result));
        }
        let open = Arc::new(AtomicBool::new(true));
        let pending: Pending = Arc::default();
        let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing>();
        let outstanding = Arc::new(AtomicUsize::new(0));
        // Writer: register each call, then send what has accumulated.
        let (w_open, w_pending, w_outstanding) = (open.clone(), pending.clone(), outstanding.clone());
        tokio::spawn(async move {
            let mut buf = Vec::new();
            while let Some(first) = rx.recv().await {
                buf.clear();
                let mut batch = vec![first];
                while let Ok(more) = rx.try_recv() {
                    batch.push(more);
                    if batch.len() >= 512 {
                        break;
                    }
                }
                if !w_open.load(Ordering::SeqCst) {
                    // The connection was lost before these went out: they
                    // never ran, and may be sent again elsewhere.
                    for o in batch {
                        w_outstanding.fetch_sub(1, Ordering::Relaxed);
                        o.reply.complete(Err(err!(Unavailable, "connection lost before the call was sent")));
                    }
                    continue;
                }
                {
                    // One clock reading for the batch: they go out together.
                    let sent = std::time::Instant::now();
                    let mut p = lock(&w_pending);
                    for o in batch {
                        buf.extend_from_slice(&o.frame);
                        p.insert(o.handle, (o.reply, sent));
                    }
                }
                if wr.write_all(&buf).await.is_err() {
                    w_open.store(false, Ordering::SeqCst);
                }
                // Lost while this batch was registered or written: the
                // reader may have failed the calls before these joined them.
                if !w_open.load(Ordering::SeqCst) {
                    fail_all(&w_pending, &w_outstanding);
                }
            }
        });
        if let Some(limit) = options.call_timeout {
            expire_calls(limit, open.clone(), pending.clone(), outstanding.clone());
        }
        // Reader: answer each call by handle; on loss fail every waiting call.
        let (r_open, r_pending, max) = (open.clone(), pending, options.max_message_bytes);
        let r_outstanding = outstanding.clone();
        let latency_us = Arc::new(AtomicU64::new(0));
        let r_latency = latency_us.clone();
        tokio::spawn(async move {
            loop {
                let Ok(payload) = read_frame(&mut rd, max).await else { break };
                let Some(handle) = response_handle(&payload) else { break };
                if handle == joule_wire::TOPOLOGY_HANDLE {
                    if let Some(p) = &pushes {
                        p.notify_one();
                    }
                    continue;
                }
                let reply = lock(&r_pending).remove(&handle);
                if let Some((reply, sent)) = reply {
                    r_outstanding.fetch_sub(1, Ordering::Relaxed);
                    // Only this task writes it.
                    let sample = (sent.elapsed().as_micros() as u64).max(1);
                    let before = r_latency.load(Ordering::Relaxed);
                    let after = if before == 0 { sample } else { before - before / 8 + sample / 8 };
                    r_latency.store(after.max(1), Ordering::Relaxed);
                    reply.complete(Ok(payload));
                }
            }
            r_open.store(false, Ordering::SeqCst);
            fail_all(&r_pending, &r_outstanding);
        });
        let connection = Connection {
            tx,
            open,
            next_handle: AtomicI64::new(1),
            timeout: options.call_timeout,
            outstanding,
            latency_us,
        };
        if let Some(database) = &options.database {
            connection.use_database(database).await?;
        }
        Ok(connection)
    }

    /// Make `database` this connection's current database.
    async fn use_database(&self, database: &str) -> Result<()> {
        if database.is_empty() || !database.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(err!(InvalidArgument, "'{database}' is not a database name (letters, digits, underscores)"));
        }
        let answer = self.call("@AdHoc", vec![Param::Value(format!("USE {database}").into())]).await?;
        if answer.status != 1 {
            let text = answer.status_string.unwrap_or_else(|| format!("USE {database} failed"));
            return Err(Error::parse(&text, joule_common::ErrorCode::UndefinedObject));
        }
        Ok(())
    }

    /// A connection that is not open (an address that could not be reached
    /// yet: its slot reopens it in the background).
    pub(crate) fn closed(options: &Options) -> Connection {
        let (tx, _) = mpsc::unbounded_channel();
        Connection {
            tx,
            open: Arc::new(AtomicBool::new(false)),
            next_handle: AtomicI64::new(1),
            timeout: options.call_timeout,
            outstanding: Arc::default(),
            latency_us: Arc::default(),
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.open.load(Ordering::SeqCst)
    }

    /// Calls sent on this connection and not yet answered.
    pub(crate) fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// Recent round trips on this connection, in microseconds (0: none
    /// answered yet).
    pub(crate) fn latency_us(&self) -> u64 {
        self.latency_us.load(Ordering::Relaxed)
    }

    /// Send the invocation; `reply` gets the answer.
    pub(crate) fn send(&self, procedure: &str, params: Vec<Param>, reply: Reply) -> Result<()> {
        let invocation = Encoded::new(procedure, params)?;
        self.send_encoded(&invocation, reply).map_err(|(e, _)| e)
    }

    /// Send an invocation encoded once (under this connection's next
    /// handle); `reply` gets the answer. If it cannot be sent (the
    /// connection is lost), `reply` comes back with the reason: the call
    /// never went out and may go on another connection.
    pub(crate) fn send_encoded(&self, invocation: &Encoded, reply: Reply) -> std::result::Result<(), (Error, Reply)> {
        if !self.is_open() {
            return Err((err!(Unavailable, "connection lost"), reply));
        }
        let handle = self.next_handle.fetch_add(1, Ordering::Relaxed);
        let mut frame = Vec::with_capacity(invocation.payload.len() + 4);
        write_frame(&mut frame, &invocation.payload);
        let at = 4 + invocation.handle_at;
        frame[at..at + 8].copy_from_slice(&handle.to_be_bytes());
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        self.tx.send(Outgoing { frame, handle, reply }).map_err(|lost| {
            self.outstanding.fetch_sub(1, Ordering::Relaxed);
            (err!(Unavailable, "connection lost"), lost.0.reply)
        })
    }

    /// Send `invocation` and wait for its answer. `Unavailable` means it
    /// was never sent (it cannot have run); `OutcomeUnknown` that it was and
    /// no answer came.
    pub(crate) async fn call_encoded(&self, invocation: &Encoded) -> Result<ClientResponse> {
        let (reply, answer) = oneshot::channel();
        self.send_encoded(invocation, Reply::Wait(reply)).map_err(|(e, _)| e)?;
        let answer = match self.timeout {
            Some(t) => tokio::time::timeout(t, answer).await.map_err(|_| {
                err!(OutcomeUnknown, "no answer to {} within {t:?}: it may or may not have run", invocation.procedure)
            })?,
            None => answer.await,
        };
        answer
            .map_err(|_| err!(OutcomeUnknown, "connection lost before the answer: the call may or may not have run"))?
    }

    pub(crate) async fn call(&self, procedure: &str, params: Vec<Param>) -> Result<ClientResponse> {
        self.call_encoded(&Encoded::new(procedure, params)?).await
    }
}

/// An invocation encoded once, to be sent under any connection's handle
/// (a call that never went out is sent again on another connection).
pub(crate) struct Encoded {
    procedure: String,
    payload: Vec<u8>,
    handle_at: usize,
}

impl Encoded {
    pub(crate) fn new(procedure: &str, params: Vec<Param>) -> Result<Encoded> {
        Encoded::of(Invocation {
            version: 0,
            procedure: procedure.to_string(),
            client_handle: 0,
            batch_timeout_ms: None,
            params,
        })
    }

    /// `invocation` as it is (its version and batch timeout kept); its
    /// handle is replaced by each connection's own.
    pub(crate) fn of(invocation: Invocation) -> Result<Encoded> {
        let payload = invocation.encode()?;
        Ok(Encoded { handle_at: invocation.handle_offset(), procedure: invocation.procedure, payload })
    }
}

/// While the connection is open: fail calls that have waited `limit` for
/// their answer with `OutcomeUnknown` (a host that stopped without closing
/// its socket never answers), checked a few times per `limit`. Every kind
/// of caller is covered, callbacks too; an answer that comes later is
/// dropped.
fn expire_calls(limit: std::time::Duration, open: Arc<AtomicBool>, pending: Pending, outstanding: Arc<AtomicUsize>) {
    let every = (limit / 4).clamp(std::time::Duration::from_millis(10), std::time::Duration::from_secs(1));
    tokio::spawn(async move {
        while open.load(Ordering::SeqCst) {
            tokio::time::sleep(every).await;
            let expired: Vec<Reply> = {
                let mut p = lock(&pending);
                let now = std::time::Instant::now();
                let late: Vec<i64> =
                    p.iter().filter(|(_, (_, sent))| now.duration_since(*sent) >= limit).map(|(h, _)| *h).collect();
                late.into_iter().filter_map(|h| p.remove(&h)).map(|(r, _)| r).collect()
            };
            for reply in expired {
                outstanding.fetch_sub(1, Ordering::Relaxed);
                reply.complete(Err(err!(
                    OutcomeUnknown,
                    "no answer within {limit:?}: the call may or may not have run"
                )));
            }
        }
    });
}

/// The connection is gone: every call sent on it gets `OutcomeUnknown` —
/// it went out, and whether it ran is not known.
fn fail_all(pending: &Pending, outstanding: &AtomicUsize) {
    let replies: Vec<Reply> = lock(pending).drain().map(|(_, (r, _))| r).collect();
    for reply in replies {
        outstanding.fetch_sub(1, Ordering::Relaxed);
        reply
            .complete(Err(err!(OutcomeUnknown, "connection lost before the answer: the call may or may not have run")));
    }
}
