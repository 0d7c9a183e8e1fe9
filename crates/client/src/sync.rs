//! [`SyncConnection`]: one connection used from one thread, one call at a
//! time, with plain blocking socket reads and writes — no runtime, no
//! hand-off between threads. The cheapest way for a synchronous caller to
//! talk to a node (many such callers, one per thread, is how a
//! thread-per-request application uses it).

use crate::{into_response, Options, Response};
use joule_common::{err, ErrorCode, Result, Value};
use joule_wire::frame::{payload_len, write_frame};
use joule_wire::{ClientResponse, LoginResponse};
use std::io::{BufReader, Read, Write};
use std::net::TcpStream;

/// A blocking connection: each call writes its invocation and reads the
/// answer on the calling thread.
pub struct SyncConnection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    next_handle: i64,
    max_message_bytes: usize,
    buf: Vec<u8>,
    /// An I/O or framing error happened: the stream may be mid-frame, so
    /// the connection is not used again.
    broken: bool,
}

impl SyncConnection {
    /// Connect to `address` (`host:port`) and log in.
    pub fn connect(address: &str, options: &Options) -> Result<SyncConnection> {
        let stream = open_logged_in(address, options)?;
        let _ = stream.set_read_timeout(options.call_timeout);
        let writer =
            stream.try_clone().map_err(|e| err!(Unavailable, "cannot use the connection to {address}: {e}"))?;
        Ok(SyncConnection {
            reader: BufReader::with_capacity(64 * 1024, stream),
            writer,
            next_handle: 1,
            max_message_bytes: options.max_message_bytes,
            buf: Vec::with_capacity(1024),
            broken: false,
        })
    }

    fn send(&mut self, payload: &[u8]) -> Result<()> {
        self.buf.clear();
        write_frame(&mut self.buf, payload);
        self.writer.write_all(&self.buf).map_err(|e| err!(Unavailable, "connection lost: {e}"))
    }

    fn receive(&mut self) -> Result<Vec<u8>> {
        let mut header = [0u8; 4];
        self.reader.read_exact(&mut header).map_err(|e| err!(Unavailable, "connection lost: {e}"))?;
        let mut payload = vec![0u8; payload_len(header, self.max_message_bytes)?];
        self.reader.read_exact(&mut payload).map_err(|e| err!(Unavailable, "connection lost: {e}"))?;
        Ok(payload)
    }

    /// Invoke a procedure and wait for its answer; the server's error if it
    /// failed.
    pub fn call(&mut self, procedure: &str, params: Vec<Value>) -> Result<Response> {
        if self.broken {
            return Err(err!(Unavailable, "the connection failed earlier; open a new one"));
        }
        let handle = self.next_handle;
        self.next_handle += 1;
        let payload = crate::encode_call(procedure, handle, params)?;
        // From here a failure may leave the stream between frames: the
        // connection is not used again.
        // A failed send left at most part of a frame, which the server
        // never runs; a failed receive after a whole send leaves the
        // outcome unknown.
        let answer = self
            .send(&payload)
            .and_then(|_| {
                self.receive().map_err(|e| match e.code() {
                    ErrorCode::Unavailable => {
                        err!(OutcomeUnknown, "{}: the call may or may not have run", e.message())
                    }
                    _ => e,
                })
            })
            .and_then(|p| ClientResponse::decode(&p));
        let r = match answer {
            Ok(r) if r.client_handle == handle => r,
            Ok(r) => {
                self.broken = true;
                return Err(err!(ProtocolError, "an answer for call {} arrived for call {handle}", r.client_handle));
            }
            Err(e) => {
                self.broken = true;
                return Err(e);
            }
        };
        into_response(r)
    }

    /// `@AdHoc`: run SQL with `?`s bound to `params` in order.
    pub fn execute(&mut self, sql: &str, params: Vec<Value>) -> Result<Response> {
        let mut all = Vec::with_capacity(params.len() + 1);
        all.push(Value::String(sql.to_string()));
        all.extend(params);
        self.call("@AdHoc", all)
    }
}

/// Open a blocking TCP connection to `address` with Nagle off, log in, and
/// return it with nothing of the server's left unread.
pub(crate) fn open_logged_in(address: &str, options: &Options) -> Result<TcpStream> {
    // Bounded like a call: a host that accepts and then never answers (a
    // stopped process) must not hang the caller.
    let addrs: Vec<std::net::SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(address)
        .map_err(|e| err!(Unavailable, "cannot resolve {address}: {e}"))?
        .collect();
    let first = addrs.first().ok_or_else(|| err!(Unavailable, "{address} resolves to no address"))?;
    let mut stream = match options.call_timeout {
        Some(t) => TcpStream::connect_timeout(first, t),
        None => TcpStream::connect(first),
    }
    .map_err(|e| err!(Unavailable, "cannot connect to {address}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(options.call_timeout);
    let _ = stream.set_write_timeout(options.call_timeout);
    let mut frame = Vec::new();
    write_frame(&mut frame, &crate::login_message(options).encode());
    stream.write_all(&frame).map_err(|e| err!(Unavailable, "cannot log in to {address}: {e}"))?;
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).map_err(|e| err!(Unavailable, "cannot log in to {address}: {e}"))?;
    let mut payload = vec![0u8; payload_len(header, options.max_message_bytes)?];
    stream.read_exact(&mut payload).map_err(|e| err!(Unavailable, "cannot log in to {address}: {e}"))?;
    let answer = LoginResponse::decode(&payload)?;
    if answer.result != 0 {
        return Err(err!(PermissionDenied, "{address} refused the login (result {})", answer.result));
    }
    Ok(stream)
}
