//! Remote site sessions: the coordinator here driving a partition led on
//! another host (`Begin`, `Round` or `RoundAhead`, `Prepare`, `Finish`), and
//! the serving of such sessions here.

use super::*;

#[derive(Serialize, Deserialize)]
pub(super) enum SessionRequest {
    Begin(TxnIds),
    Round(Vec<WireItem>),
    Prepare,
    Finish {
        commit: bool,
        schema_changed: bool,
    },
    /// A round that a prepare follows: the leader ships the writes to its
    /// replicas before it runs them (see `RemoteSite::round`).
    RoundAhead(Vec<WireItem>),
}

#[derive(Serialize, Deserialize)]
pub(super) enum SessionReply {
    Done,
    Results(Vec<WireResult>),
    /// Prepared: whether the partition is in doubt (it wrote).
    Prepared(bool),
}

pub(super) struct Session {
    pub(super) stream: Option<std::net::TcpStream>,
    pub(super) partition: u32,
    pub(super) target: HostId,
    pub(super) routing: Shared<Routing>,
    pub(super) pool: SessionPool,
}

impl Session {
    fn exchange(&mut self, request: SessionRequest) -> Result<SessionReply> {
        let Some(s) = self.stream.as_mut() else {
            return Err(err!(Unavailable, "the session with host {} broke", self.target));
        };
        let result = (|| {
            let (routing, target, partition) = (&self.routing, self.target, self.partition);
            let mut why = None;
            // Whether to keep waiting for the target (`why` says why not).
            let mut go_on = || {
                let r = routing.load();
                if !r.up.contains_key(&target) {
                    why = Some(format!("host {target} (leading partition {partition}) failed during the transaction"));
                } else if r.coordinator != Some(r.me) {
                    // Another host coordinates now: this transaction is
                    // abandoned (the partition's leader rolls it back).
                    why = Some("this host stopped coordinating during the transaction (the metadata moved it)".into());
                }
                why.is_none()
            };
            // A round of megabytes to a host that hangs blocks once the
            // connection's buffers are full: it too ends when the host is
            // declared failed.
            if !write_frame_checked(s, &request, &mut go_on)? {
                return Err(err!(OutcomeUnknown, "{}", why.take().unwrap_or_default()));
            }
            // Fault injection: this host stops reading the partition's
            // answer to a round (`crates/cli/tests/cluster.rs`).
            if matches!(request, SessionRequest::Round(_) | SessionRequest::RoundAhead(_)) {
                joule_common::failpoint::pause_while_armed("session_answer_unread", Duration::from_secs(60));
            }
            // Sent: a round's rows (a move carries megabytes) are freed
            // while the other host runs it, not after it answers.
            drop(request);
            let waited = read_frame_checked(s, &mut go_on);
            match waited {
                Ok(Some(body)) => {
                    decode::<std::result::Result<SessionReply, WireError>>(&body)?.map_err(from_wire_error)
                }
                Ok(None) => Err(err!(OutcomeUnknown, "{}", why.unwrap_or_default())),
                Err(e) => Err(err!(
                    OutcomeUnknown,
                    "the connection to host {target} (leading partition {partition}) broke: {e}"
                )),
            }
        })();
        if result.is_err() {
            // A partial frame may be in flight: never reuse this stream.
            self.stream = None;
        }
        result
    }
}

impl RemoteSite for Session {
    fn begin(&mut self, ids: TxnIds) -> Result<()> {
        self.exchange(SessionRequest::Begin(ids)).map(|_| ())
    }

    fn round(&mut self, items: Vec<WireItem>, ahead: bool) -> Result<Vec<WireResult>> {
        let request = if ahead { SessionRequest::RoundAhead(items) } else { SessionRequest::Round(items) };
        match self.exchange(request)? {
            SessionReply::Results(r) => Ok(r),
            _ => Err(err!(ProtocolError, "host {} answered a round with no results", self.target)),
        }
    }

    fn prepare(&mut self) -> Result<bool> {
        match self.exchange(SessionRequest::Prepare)? {
            SessionReply::Prepared(in_doubt) => Ok(in_doubt),
            _ => Err(err!(ProtocolError, "host {} answered a prepare with something else", self.target)),
        }
    }

    fn finish(&mut self, commit: bool, schema_changed: bool) -> Result<()> {
        self.exchange(SessionRequest::Finish { commit, schema_changed }).map(|_| ())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(s) = self.stream.take() {
            self.pool
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry((self.partition, self.target))
                .or_default()
                .push(s);
        }
    }
}

/// Serve one session: another host's coordinator drives a site here.
pub(super) fn serve_session(mut s: std::net::TcpStream, host: Arc<Host>, link: Arc<Link>) {
    let Ok(body) = read_body(&mut s) else { return };
    let Ok((partition, from)) = decode::<(u32, HostId)>(&body) else { return };
    let mut driver: Option<SessionDriver> = None;
    loop {
        // A coordinator that the metadata replaced (dead, hung or cut off)
        // must not hold this site: its open transaction rolls back.
        let open = driver.as_ref().is_some_and(|d| d.is_open());
        let body = match read_frame_checked(&mut s, || !open || link.routing.load().coordinator == Some(from)) {
            Ok(Some(body)) => body,
            Ok(None) | Err(_) => break,
        };
        let request = decode::<SessionRequest>(&body);
        let began = matches!(request, Ok(SessionRequest::Begin(_)));
        let reply = match request {
            Err(e) => Err(e),
            Ok(SessionRequest::Begin(_)) if link.routing.load().coordinator != Some(from) => Err(err!(
                Unavailable,
                "host {from} no longer coordinates multi-partition transactions (the metadata moved it)"
            )),
            Ok(SessionRequest::Begin(_)) if !link.leads(partition) => {
                Err(err!(Unavailable, "this host no longer leads partition {partition}"))
            }
            Ok(SessionRequest::Begin(ids)) => {
                let d = match driver.take() {
                    Some(d) => Ok(d),
                    None => host.remote_session(partition, from),
                };
                d.and_then(|mut d| {
                    let r = d.begin(ids);
                    driver = Some(d);
                    r.map(|()| SessionReply::Done)
                })
            }
            Ok(SessionRequest::Round(items)) => match driver.as_mut() {
                Some(d) => d.round(items, false).map(SessionReply::Results),
                None => Err(err!(ProtocolError, "a round before the transaction began")),
            },
            Ok(SessionRequest::RoundAhead(items)) => match driver.as_mut() {
                Some(d) => d.round(items, true).map(SessionReply::Results),
                None => Err(err!(ProtocolError, "a round before the transaction began")),
            },
            Ok(SessionRequest::Prepare) => match driver.as_mut() {
                Some(d) => d.prepare().map(SessionReply::Prepared),
                None => Err(err!(ProtocolError, "a prepare before the transaction began")),
            },
            Ok(SessionRequest::Finish { commit, schema_changed }) => match driver.as_mut() {
                Some(d) => d.finish(commit, schema_changed).map(|()| SessionReply::Done),
                None => Err(err!(ProtocolError, "an outcome before the transaction began")),
            },
        };
        let reply = reply.map_err(|e| to_wire_error(&e));
        // An answer of megabytes to a coordinator that hangs blocks once
        // the connection's buffers are full: a coordinator the metadata
        // replaced must not hold this site that way either.
        let open = driver.as_ref().is_some_and(|d| d.is_open());
        let keep_writing = || !open || link.routing.load().coordinator == Some(from);
        if !matches!(write_frame_checked(&mut s, &reply, keep_writing), Ok(true)) {
            break;
        }
        // Fault injection: this host stops reading the transaction's
        // rounds (`crates/cli/tests/cluster.rs`).
        if began {
            joule_common::failpoint::pause_while_armed("session_round_unread", Duration::from_secs(60));
        }
    }
    // Dropping an open driver rolls its transaction back.
}
