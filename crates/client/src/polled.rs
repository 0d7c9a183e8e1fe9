//! [`PolledConnections`]: many connections served by one thread, each with
//! at most one call outstanding — the shape of a pool of synchronous
//! clients (a web tier's request threads, a benchmark's simulated users)
//! without a thread per connection.
//!
//! Why it exists: on a small machine, a thread blocked on each connection
//! costs a context switch per answer. One thread that waits for readiness
//! on all of its connections (epoll through `mio`) handles every answer
//! that arrived while it was busy in one wake-up, and sends the next calls
//! before it sleeps again. That is how `pgbench -c N -j T` drives its
//! clients, and `joule bench --sync --clients N --threads T` does the same.
//!
//! Logging in is bounded by `Options::call_timeout`; calls are not — the
//! caller's loop decides how long to wait (its `poll` timeout).
//!
//! The caller owns the loop: [`PolledConnections::send`] puts a call on an
//! idle connection (a non-blocking write; what the socket does not take is
//! written when it becomes writable), and [`PolledConnections::poll`] waits
//! for readiness and hands each finished call to a callback with the index
//! of its connection. A lost connection fails its outstanding call —
//! `OutcomeUnknown` once the call was wholly written (it may have run),
//! `Unavailable` before — and refuses later calls; the others carry on.

use crate::{into_response, sync::open_logged_in, Options, Response};
use joule_common::{err, Error, ErrorCode, Result, Value};
use joule_wire::frame::{next_frame, write_frame};
use joule_wire::ClientResponse;
use mio::{Events, Interest, Poll, Token};
use std::io::{ErrorKind, Read, Write};
use std::time::Duration;

/// Connections polled by one thread, one call outstanding on each.
pub struct PolledConnections {
    poll: Poll,
    events: Events,
    connections: Vec<Polled>,
    max_message_bytes: usize,
    /// Where reads land before their bytes join a connection's input
    /// (allocated once, so a read costs no zeroing).
    scratch: Vec<u8>,
}

/// One connection's state.
struct Polled {
    stream: mio::net::TcpStream,
    /// Bytes read and not yet consumed as frames.
    input: Vec<u8>,
    /// Bytes of the current call not yet taken by the socket.
    output: Vec<u8>,
    written: usize,
    /// The handle of the call in flight.
    outstanding: Option<i64>,
    next_handle: i64,
    /// Why the connection is unusable, once it is.
    failed: Option<String>,
}

impl PolledConnections {
    /// Open `options.connections_per_address` connections to each address
    /// (`host:port`), each logged in.
    pub fn connect(addresses: &[&str], options: &Options) -> Result<PolledConnections> {
        if addresses.is_empty() || options.connections_per_address == 0 {
            return Err(err!(InvalidArgument, "give at least one address and one connection per address"));
        }
        let poll = Poll::new().map_err(|e| err!(Internal, "cannot create a poller: {e}"))?;
        let mut connections = Vec::new();
        for address in addresses {
            for _ in 0..options.connections_per_address {
                let stream = open_logged_in(address, options)?;
                stream.set_nonblocking(true).map_err(|e| err!(Unavailable, "cannot use {address}: {e}"))?;
                let mut stream = mio::net::TcpStream::from_std(stream);
                poll.registry()
                    .register(&mut stream, Token(connections.len()), Interest::READABLE | Interest::WRITABLE)
                    .map_err(|e| err!(Internal, "cannot poll the connection to {address}: {e}"))?;
                connections.push(Polled {
                    stream,
                    input: Vec::with_capacity(4096),
                    output: Vec::with_capacity(256),
                    written: 0,
                    outstanding: None,
                    next_handle: 1,
                    failed: None,
                });
            }
        }
        Ok(PolledConnections {
            poll,
            events: Events::with_capacity(connections.len().max(1)),
            connections,
            max_message_bytes: options.max_message_bytes,
            scratch: vec![0; 16 * 1024],
        })
    }

    /// The number of connections (indexes `0..len()`).
    pub fn len(&self) -> usize {
        self.connections.len()
    }

    /// No connections at all (never true after a successful `connect`).
    pub fn is_empty(&self) -> bool {
        self.connections.is_empty()
    }

    /// Whether connection `i` is open and has no call outstanding.
    pub fn is_idle(&self, i: usize) -> bool {
        self.connections.get(i).is_some_and(|c| c.failed.is_none() && c.outstanding.is_none())
    }

    /// Send a call on connection `i` without waiting for its answer, which
    /// a later [`poll`](Self::poll) delivers. Fails (and sends nothing) if
    /// the connection is lost or already has a call outstanding.
    pub fn send(&mut self, i: usize, procedure: &str, params: Vec<Value>) -> Result<()> {
        let c = self.connections.get_mut(i).ok_or_else(|| err!(InvalidArgument, "there is no connection {i}"))?;
        if let Some(why) = &c.failed {
            return Err(err!(Unavailable, "connection {i} is lost: {why}"));
        }
        if c.outstanding.is_some() {
            return Err(err!(InvalidArgument, "connection {i} already has a call outstanding"));
        }
        let handle = c.next_handle;
        let payload = crate::encode_call(procedure, handle, params)?;
        c.next_handle += 1;
        c.output.clear();
        c.written = 0;
        write_frame(&mut c.output, &payload);
        c.outstanding = Some(handle);
        if let Err(e) = c.flush() {
            c.outstanding = None;
            return Err(c.fail(e));
        }
        Ok(())
    }

    /// Wait up to `timeout` (`None`: until something happens) for answers
    /// and hand each to `on_answer` with its connection's index. A
    /// connection lost while its call was outstanding delivers that call
    /// as `Unavailable`.
    pub fn poll(
        &mut self,
        timeout: Option<Duration>,
        mut on_answer: impl FnMut(usize, Result<Response>),
    ) -> Result<()> {
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(err!(Internal, "waiting for the connections failed: {e}")),
        }
        for event in self.events.iter() {
            let i = event.token().0;
            let Some(c) = self.connections.get_mut(i) else { continue };
            if c.failed.is_some() {
                continue;
            }
            let result =
                c.flush().and_then(|()| c.receive(self.max_message_bytes, &mut self.scratch, |r| on_answer(i, r)));
            if let Err(e) = result {
                let e = c.fail(e);
                if c.outstanding.take().is_some() {
                    // Wholly written: it may have run. Partly: the server
                    // never runs a partial frame.
                    let e = if c.written == c.output.len() && e.code() == ErrorCode::Unavailable {
                        err!(OutcomeUnknown, "{}: the call may or may not have run", e.message())
                    } else {
                        e
                    };
                    on_answer(i, Err(e));
                }
            }
        }
        Ok(())
    }
}

impl Polled {
    /// Write what is left of the current call; stop when the socket is
    /// full (the writable event brings us back).
    fn flush(&mut self) -> Result<()> {
        while self.written < self.output.len() {
            match self.stream.write(&self.output[self.written..]) {
                Ok(0) => return Err(err!(Unavailable, "the server closed the connection")),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(err!(Unavailable, "connection lost: {e}")),
            }
        }
        Ok(())
    }

    /// Read everything the socket holds (readiness is edge-triggered) and
    /// deliver each complete answer.
    fn receive(&mut self, max: usize, scratch: &mut [u8], mut deliver: impl FnMut(Result<Response>)) -> Result<()> {
        let mut closed = false;
        loop {
            match self.stream.read(scratch) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => self.input.extend_from_slice(&scratch[..n]),
                Err(e) => match e.kind() {
                    ErrorKind::WouldBlock => break,
                    ErrorKind::Interrupted => {}
                    _ => return Err(err!(Unavailable, "connection lost: {e}")),
                },
            }
        }
        let mut consumed = 0;
        while let Some((from, to)) = next_frame(&self.input[consumed..], max)? {
            let answer = ClientResponse::decode(&self.input[consumed + from..consumed + to])?;
            consumed += to;
            match self.outstanding {
                Some(handle) if handle == answer.client_handle => {
                    self.outstanding = None;
                    deliver(into_response(answer));
                }
                _ => {
                    return Err(err!(
                        ProtocolError,
                        "an answer for call {} arrived while {:?} was outstanding",
                        answer.client_handle,
                        self.outstanding
                    ))
                }
            }
        }
        self.input.drain(..consumed);
        if closed {
            return Err(err!(Unavailable, "the server closed the connection"));
        }
        Ok(())
    }

    /// Mark the connection lost; later calls are refused.
    fn fail(&mut self, e: Error) -> Error {
        self.failed = Some(e.to_string());
        e
    }
}
