//! Replication: the per-partition shipper sending each batch of committed
//! records to every live replica (and rejoining ones) and waiting for their
//! acknowledgements, and a replica applying what its leader sends, in order.

use super::*;

/// One replication frame: a batch of records, or a piece of a rejoining
/// replica's copy, on one leader's stream for a partition.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Batch {
    pub(super) partition: u32,
    /// The sender's stream (one per shipper: a new leader, or a leader's
    /// new process, starts a new one).
    pub(super) stream: u64,
    /// The batch's position on the stream; a copy piece carries the
    /// position the copy was taken at.
    pub(super) sequence: u64,
    pub(super) copy: bool,
    pub(super) from: HostId,
    /// How many leaders' streams precede this one on the partition (see
    /// `repair.rs`): a later stream has a higher term.
    pub(super) term: u64,
    /// Encoded in one piece (`serde_bytes`): the same bytes postcard writes
    /// for a plain `Vec<u8>` (copy logs written either way read alike), but
    /// copied whole rather than visited byte by byte.
    #[serde(with = "serde_bytes")]
    pub(super) records: Vec<u8>,
}

impl Batch {
    /// Whether this batch comes right after `before` (the last batch a
    /// copy applied; `None`: nothing yet): the next position on the same
    /// stream, or the first batch of a later leader's stream.
    pub(super) fn follows(&self, before: Option<&Batch>) -> bool {
        match before {
            None => self.sequence == 1,
            Some(b) if b.stream == self.stream => self.sequence == b.sequence + 1,
            Some(b) => self.term > b.term && self.sequence == 1,
        }
    }

    /// Where the batch stands among the partition's batches.
    pub(super) fn position(&self) -> (u64, u64) {
        (self.term, self.sequence)
    }

    /// The frame telling a host taking a copy that the copy, with the
    /// batches sent after it, is level with the stream at this position
    /// (see `beside.rs`): a copy piece with no records (a real piece always
    /// has some). Never applied or logged.
    pub(super) fn level_marker(partition: u32, stream: u64, sequence: u64, from: HostId, term: u64) -> Batch {
        Batch { partition, stream, sequence, copy: true, from, term, records: Vec::new() }
    }

    /// Whether this frame is a [`level_marker`](Self::level_marker).
    pub(super) fn is_level_marker(&self) -> bool {
        self.copy && self.records.is_empty()
    }
}

pub(super) enum Shipment {
    /// Records for every replica; `done` once all have applied them.
    Batch { records: Vec<u8>, done: Box<dyn FnOnce() + Send> },
    /// A rejoining replica: its copy of the partition, then every batch.
    AddReplica { host: HostId, copy: Box<dyn Iterator<Item = Vec<u8>> + Send> },
    /// This host's copy log compacts itself to this copy of the partition
    /// (as of the batches shipped before it), or the site could not freeze.
    Compact { copy: Result<Box<dyn Iterator<Item = Vec<u8>> + Send>> },
}

/// A shipper's copy log: where batches are written before they are sent,
/// what stops this host when that fails, and the host whose site is asked
/// for a copy when the log has grown enough to compact (the last two set
/// once the data plane serves).
pub(super) struct ShipperLog {
    pub(super) logs: Arc<super::copylog::CopyLogs>,
    pub(super) stop: Arc<std::sync::OnceLock<OnDivergence>>,
    pub(super) host: Arc<std::sync::OnceLock<std::sync::Weak<Host>>>,
}

/// One replica's connection (batches in order, one acknowledgement each).
pub(super) struct ReplicaConnection {
    pub(super) stream: std::net::TcpStream,
}

/// Ship partition `partition`'s batches to its live replicas, in order.
pub(super) fn ship(
    partition: u32,
    me: HostId,
    shipments: std::sync::mpsc::Receiver<Shipment>,
    routing: Shared<Routing>,
    progress: Arc<ReplicaProgress>,
    log: Option<ShipperLog>,
) {
    let stream = joule_common::splitmix::mix(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(partition),
    );
    // Streams of earlier leaders of this partition come before this one.
    let term = progress.term(partition) + 1;
    progress.raise_term(partition, term);
    let mut shipper = Shipper {
        partition,
        me,
        stream,
        term,
        sequence: 0,
        routing,
        log,
        last: None,
        stopping: false,
        connections: BTreeMap::new(),
        joining: Default::default(),
        beside: Vec::new(),
    };
    let mut next: Option<Shipment> = None;
    loop {
        let shipment = match next.take() {
            Some(s) => s,
            // While copies are sent beside the stream, looked at every few
            // milliseconds even with nothing to ship (one through waits
            // for the shipper to level it).
            None if !shipper.beside.is_empty() => match shipments.recv_timeout(BESIDE_CHECK) {
                Ok(s) => s,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    shipper.level_copies_through();
                    continue;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            },
            None => match shipments.recv() {
                Ok(s) => s,
                Err(_) => return,
            },
        };
        shipper.level_copies_through();
        match shipment {
            Shipment::AddReplica { host, copy } => shipper.add_replica(host, copy),
            Shipment::Batch { records, done } => {
                let (records, dones, after) = merge_queued(records, done, &shipments, MAX_BATCH_BYTES);
                next = after;
                shipper.ship_batch(records, dones);
            }
            Shipment::Compact { copy } => shipper.compact(copy),
        }
    }
}

/// How often a shipper with copies sent beside its stream looks at them
/// when it has nothing to ship.
const BESIDE_CHECK: Duration = Duration::from_millis(5);

/// A partition's shipper: its stream, where it stands, and the hosts it
/// ships to.
struct Shipper {
    partition: u32,
    me: HostId,
    stream: u64,
    term: u64,
    /// The position of the last batch shipped.
    sequence: u64,
    routing: Shared<Routing>,
    log: Option<ShipperLog>,
    /// The last batch shipped: a compaction's base stands there.
    last: Option<Batch>,
    /// The copy log failed and this host is stopping (said once).
    stopping: bool,
    connections: BTreeMap<HostId, ReplicaConnection>,
    /// Hosts taking a copy whose copy is level with the stream: sent every
    /// batch though not replicas (or not up) yet.
    joining: std::collections::BTreeSet<HostId>,
    /// Copies being sent beside the stream (`beside.rs`).
    beside: Vec<super::beside::SideCopy>,
}

impl Shipper {
    /// A host asked for a copy: sent beside the stream from here.
    fn add_replica(&mut self, host: HostId, copy: Box<dyn Iterator<Item = Vec<u8>> + Send>) {
        let partition = self.partition;
        // A leader whose log failed sends no copy (it would hold batches no
        // replica has).
        if self.stopping {
            return;
        }
        let Some(address) = address_of(&self.routing, host) else {
            eprintln!("joule: partition {partition}: host {host} asked for a copy but is not a member");
            return;
        };
        // A connection from before the host restarted went to its old
        // process, and a copy asked for again replaces one still being
        // sent (its pieces are refused from now on: they stand before the
        // new copy's position). A host whose copy is level stays among the
        // joiners: should this be a request repeated by the same process,
        // it refuses the new copy and goes on with the stream; a process
        // that starts afresh refuses the stream and is dropped.
        self.connections.remove(&host);
        self.beside.retain(|s| s.host != host);
        let (stream, sequence, term) = (self.stream, self.sequence, self.term);
        // Each piece stands at the position the copy was taken at.
        let template = Batch { partition, stream, sequence, copy: true, from: self.me, term, records: Vec::new() };
        match super::beside::SideCopy::start(host, address, template, copy, self.routing.clone()) {
            Some(side) => self.beside.push(side),
            None => eprintln!("joule: partition {partition}: host {host} did not take the partition's copy"),
        }
    }

    /// Copies sent beside the stream that are through: the last batches
    /// kept for them, then the level marker; from then on their hosts get
    /// every batch.
    fn level_copies_through(&mut self) {
        use super::beside::Taken;
        let partition = self.partition;
        let mut i = 0;
        while i < self.beside.len() {
            let host = self.beside[i].host;
            match self.beside[i].take() {
                Taken::Sending => {
                    i += 1;
                    continue;
                }
                Taken::Failed => {
                    eprintln!(
                        "joule: partition {partition}: host {host} did not take the partition's copy (or no longer \
                         takes one)"
                    );
                }
                Taken::Through(mut c, kept, in_all) => {
                    let marker = Batch::level_marker(partition, self.stream, self.sequence, self.me, self.term);
                    let level = super::beside::send_in_order(&mut c, host, &self.routing, &kept)
                        && super::beside::send_in_order(&mut c, host, &self.routing, std::slice::from_ref(&marker));
                    if level {
                        eprintln!(
                            "joule: partition {partition}: host {host}'s copy is level with the stream at batch {} \
                             (sent beside it; {in_all} batches shipped meanwhile, the last {} sent by the shipper)",
                            self.sequence,
                            kept.len()
                        );
                        self.connections.insert(host, c);
                        self.joining.insert(host);
                    } else {
                        eprintln!("joule: partition {partition}: host {host} did not take the batches after its copy");
                    }
                }
            }
            self.beside.swap_remove(i);
        }
    }

    /// Ship one batch of `records` to every replica (and every host whose
    /// copy is level), then release `dones`.
    fn ship_batch(&mut self, records: Vec<u8>, dones: Vec<Done>) {
        let partition = self.partition;
        // Even with no records: the replicas' acknowledgement confirms this
        // host still leads, before answers (reads too) go out.
        self.sequence += 1;
        let (stream, sequence, term, me) = (self.stream, self.sequence, self.term, self.me);
        let batch = Batch { partition, stream, sequence, copy: false, from: me, term, records };
        // Logged before anyone is answered. A host that cannot log stops:
        // from the first failure on nothing more is sent, logged or
        // released (its callers learn the outcome is unknown when the
        // host's connections close).
        if let Some(ShipperLog { logs, stop, host }) = &self.log {
            let appended = if self.stopping { Err(None) } else { logs.append(partition, &batch).map_err(Some) };
            match appended {
                Ok(false) => {}
                // Grown past its limit: the site freezes the partition
                // after what it has shipped, and the copy comes back here
                // in order (`Shipment::Compact`).
                Ok(true) => match host.get().and_then(std::sync::Weak::upgrade) {
                    Some(h) => h.compact_log(partition, true),
                    None => logs.abandon(partition),
                },
                Err(e) => {
                    if let (Some(e), Some(stop)) = (e, stop.get()) {
                        stop(e);
                    }
                    self.stopping = true;
                    self.beside.clear();
                    return;
                }
            }
        }
        for side in &self.beside {
            side.keep(&batch);
        }
        let acknowledged = deliver_batch(&batch, &self.routing, &mut self.connections, &mut self.joining);
        // Released only while this host still leads, or — deposed while it
        // waited (its host handed the partition over on leaving, or was
        // failed) — if the new leader and every copy it waits for hold the
        // batch: then it is in the partition's history whoever leads.
        // Otherwise it must not confirm what no current copy may hold; its
        // callers learn the outcome is unknown when its connections close.
        if still_committed(&self.routing.load(), partition, me, &acknowledged) {
            for d in dones {
                d();
            }
        }
        self.last = Some(batch);
    }

    /// This host's copy log compacts itself to `copy` (as of the batches
    /// shipped before it).
    fn compact(&mut self, copy: Result<Box<dyn Iterator<Item = Vec<u8>> + Send>>) {
        let Some(ShipperLog { logs, .. }) = &self.log else { return };
        let partition = self.partition;
        match copy.and_then(|pieces| Ok((logs.next_generation(partition)?, pieces))) {
            Ok((generation, pieces)) => {
                // (Its records copied once per compaction.)
                let position = super::copylog::BasePosition {
                    from: self.me,
                    stream: self.stream,
                    sequence: self.sequence,
                    term: self.term,
                    last: self.last.clone().map(Arc::new),
                };
                logs.write_base(partition, generation, position, pieces);
            }
            Err(e) => {
                eprintln!("joule: cluster: partition {partition}: copy log not compacted: {e}");
                logs.abandon(partition);
            }
        }
    }
}

/// What runs once every live replica has applied a batch.
type Done = Box<dyn FnOnce() + Send>;

/// A batch's records and callbacks: `records` and `done`, then every batch
/// queued behind them until they reach `limit` bytes; and the shipment
/// that ended the merge if it is not a batch.
fn merge_queued(
    mut records: Vec<u8>,
    done: Done,
    shipments: &std::sync::mpsc::Receiver<Shipment>,
    limit: usize,
) -> (Vec<u8>, Vec<Done>, Option<Shipment>) {
    let mut dones = vec![done];
    while records.len() < limit {
        match shipments.try_recv() {
            Ok(Shipment::Batch { records: more, done }) => {
                records.extend_from_slice(&more);
                dones.push(done);
            }
            Ok(other) => return (records, dones, Some(other)),
            Err(_) => break,
        }
    }
    (records, dones, None)
}

/// Where `host` listens, if the metadata knows it (up or not).
pub(super) fn address_of(routing: &Shared<Routing>, host: HostId) -> Option<String> {
    routing.load().all.get(&host).cloned()
}

/// Send one batch to every live replica (and every rejoining one) and wait
/// for their acknowledgements. A live replica that cannot be reached is
/// tried again until it acknowledges or the metadata says it is down; a
/// rejoining one that fails is dropped (it starts its rejoin again).
pub(super) fn deliver_batch(
    batch: &Batch,
    routing: &Shared<Routing>,
    connections: &mut BTreeMap<HostId, ReplicaConnection>,
    joining: &mut std::collections::BTreeSet<HostId>,
) -> std::collections::BTreeSet<HostId> {
    let (partition, me) = (batch.partition, batch.from);
    let mut acknowledged: std::collections::BTreeSet<HostId> = Default::default();
    loop {
        let r = routing.load();
        // No longer the leader: the copies refuse this host's batches from
        // now on (see `still_committed` for what was acknowledged).
        if r.leaders.get(partition as usize).copied().flatten() != Some(me) {
            return acknowledged;
        }
        // Up now: no longer joining — unless the host is taking a copy,
        // not a replica yet (it is waited for once it is one).
        let adding = r.adding(partition);
        joining.retain(|h| !r.up.contains_key(h) || adding.contains(h));
        let replicas = r.replicas.get(partition as usize).map_or(&[][..], Vec::as_slice);
        // A host taking a copy is waited for as a replica is (it is up, and
        // failure detection watches it: a leader never releases a batch it
        // lacks, so its copy holds every acknowledged write once it is a
        // replica), but dropped on a failure as a rejoining host is (it
        // takes a new copy).
        let targets: Vec<(HostId, String, Follower)> = replicas
            .iter()
            .chain(adding)
            .filter(|h| **h != me && !acknowledged.contains(h))
            .filter_map(|h| match r.must_acknowledge(*h) {
                Some(a) if !adding.contains(h) => Some((*h, a.clone(), Follower::Replica)),
                Some(a) if joining.contains(h) => Some((*h, a.clone(), Follower::Adding)),
                None if joining.contains(h) => r.all.get(h).map(|a| (*h, a.clone(), Follower::Rejoining)),
                _ => None,
            })
            .collect();
        // Connections to hosts that are not targets now (down, or a
        // joining host that failed) are closed: one that comes back is a
        // new process.
        connections.retain(|h, _| acknowledged.contains(h) || targets.iter().any(|(t, _, _)| t == h));
        if targets.is_empty() {
            return acknowledged;
        }
        let mut sent = Vec::new();
        for (host, address, follower) in &targets {
            // Only a rejoining host is dropped when it cannot be reached:
            // a host taking a copy is up, and tried again as a replica is.
            let rejoining = *follower == Follower::Rejoining;
            if !connections.contains_key(host) {
                match connect(address, REPLICATION) {
                    Ok(stream) => {
                        connections.insert(*host, ReplicaConnection { stream });
                    }
                    Err(e) => {
                        // Nobody else would say it: a replica of another
                        // build (`hello.rs`) never takes the stream.
                        if e.code() == ErrorCode::ProtocolError {
                            super::hello::log_mismatch(&format!("partition {partition}: replica {host}: {e}"));
                        }
                        if rejoining {
                            joining.remove(host);
                        }
                        continue;
                    }
                }
            }
            let Some(c) = connections.get_mut(host) else { continue };
            if write_frame(&mut c.stream, batch).is_ok() {
                sent.push((*host, *follower));
            } else {
                connections.remove(host);
                if rejoining {
                    joining.remove(host);
                }
            }
        }
        for (host, follower) in sent {
            let Some(c) = connections.get_mut(&host) else { continue };
            let ack = wait_ack(c, host, routing, follower == Follower::Rejoining);
            if ack == Ack::Applied {
                acknowledged.insert(host);
                continue;
            }
            connections.remove(&host);
            // A rejoining host that fails is dropped; a host taking a copy
            // only when it refuses the stream (it waits for a new copy):
            // otherwise it is tried again, so that it never lacks a batch
            // this leader released.
            let dropped = match follower {
                Follower::Replica => false,
                Follower::Rejoining => true,
                Follower::Adding => ack == Ack::Refused,
            };
            if dropped {
                eprintln!("joule: partition {partition}: host {host} stopped taking the stream of its new copy");
                joining.remove(&host);
            }
        }
        if targets.iter().all(|(h, _, _)| acknowledged.contains(h)) {
            return acknowledged;
        }
        // Try again (the batch's sequence makes a repeat harmless) until
        // the replicas that failed are declared down.
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether a batch this host shipped for `partition`, acknowledged by
/// `acknowledged`, may be confirmed to its callers now: this host leads
/// the partition, or the partition's leader and every copy a leader waits
/// for (up or recovering) acknowledged it — applied before they learned
/// that this host no longer leads, so it is in the copies that go on.
fn still_committed(r: &Routing, partition: u32, me: HostId, acknowledged: &std::collections::BTreeSet<HostId>) -> bool {
    let leader = r.leaders.get(partition as usize).copied().flatten();
    if leader == Some(me) {
        return true;
    }
    let replicas = r.replicas.get(partition as usize).map_or(&[][..], Vec::as_slice);
    leader.is_some_and(|l| acknowledged.contains(&l))
        && replicas.iter().filter(|h| **h != me && r.must_acknowledge(**h).is_some()).all(|h| acknowledged.contains(h))
}

/// What a host a batch goes to is to its partition.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Follower {
    /// A replica: waited for until it acknowledges or is declared down.
    Replica,
    /// Rejoining (not up yet): waited for a bounded time, dropped on any
    /// failure.
    Rejoining,
    /// Up and taking a copy (`AddCopy`): waited for as a replica, dropped
    /// on a failure as a rejoining host.
    Adding,
}

/// What a host answered a batch with.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Ack {
    Applied,
    /// It answered that it did not apply it.
    Refused,
    /// No answer: the connection broke, or the host was declared down (or,
    /// rejoining, took too long).
    Lost,
}

/// Wait for `host`'s acknowledgement.
pub(super) fn wait_ack(c: &mut ReplicaConnection, host: HostId, routing: &Shared<Routing>, joining: bool) -> Ack {
    // A rejoining host is not up yet, so failure detection does not watch
    // it: it gets a bounded wait (a hung joiner must not stall the partition).
    let since = std::time::Instant::now();
    let keep_waiting = || {
        if joining {
            since.elapsed() < JOINER_PATIENCE
        } else {
            routing.load().must_acknowledge(host).is_some()
        }
    };
    match read_frame_checked(&mut c.stream, keep_waiting) {
        Ok(Some(body)) => match decode::<std::result::Result<(), WireError>>(&body) {
            Ok(Ok(())) => Ack::Applied,
            Ok(Err(e)) => {
                eprintln!("joule: host {host} could not apply replicated records: {}", from_wire_error(e));
                Ack::Refused
            }
            Err(_) => Ack::Lost,
        },
        Ok(None) | Err(_) => Ack::Lost,
    }
}

/// Per partition replicated here: the stream followed (sender and stream
/// id) with the position of the last batch received, and per partition the
/// (stream, position) applied. A batch sent again is acknowledged, not
/// applied twice; a batch past the next position means batches were lost
/// on the way, and the copy can no longer be trusted.
#[derive(Default)]
pub(crate) struct ReplicaProgress {
    pub(super) received: Mutex<BTreeMap<u32, (HostId, u64, u64)>>,
    pub(super) applied: tokio::sync::watch::Sender<BTreeMap<u32, (u64, u64)>>,
    /// Per partition: the last batch of a stream applied here (not copy
    /// pieces), kept for a new leader's repair (`repair.rs`).
    last: Mutex<BTreeMap<u32, Arc<Batch>>>,
    /// Per partition: the highest term seen (a new leader's stream takes
    /// the next one).
    terms: Mutex<BTreeMap<u32, u64>>,
    /// Partitions whose copy, taken here from their leader, its leader
    /// said is level with its stream (`beside.rs`): until then it may lack
    /// batches the leader released, and must not count as a copy.
    level: Mutex<BTreeMap<u32, HostId>>,
    /// Per partition: how many batches (copy pieces included) arrived, so
    /// that a rejoining host sees whether its copy is still coming.
    arrivals: Mutex<BTreeMap<u32, u64>>,
}

/// What to do with a batch that arrived.
pub(super) enum Arrival {
    Apply,
    /// Sent again: acknowledge once the first copy has been applied.
    Repeat,
    /// Batches before it never arrived: the position expected.
    Gap(u64),
    /// A piece of a copy taken before the position this copy follows (a
    /// copy given up for a later one): refused.
    Stale,
}

impl ReplicaProgress {
    /// Where `b` stands — unless `refuse` (asked with no other batch
    /// arriving meanwhile, and no new leader taking over: see
    /// [`exclusive`](Self::exclusive)) says why it is not taken.
    pub(super) fn arrive(&self, b: &Batch, refuse: impl FnOnce() -> Option<Error>) -> Result<Arrival> {
        let mut received = self.received.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = refuse() {
            return Err(e);
        }
        *self.arrivals.lock().unwrap_or_else(|p| p.into_inner()).entry(b.partition).or_default() += 1;
        Ok(match received.get_mut(&b.partition) {
            Some((from, stream, last)) if *from == b.from && *stream == b.stream => {
                if b.copy && b.sequence < *last {
                    // A piece of a copy given up for a later one.
                    Arrival::Stale
                } else if b.copy {
                    // A copy: the stream continues after the position it was taken at.
                    *last = b.sequence;
                    Arrival::Apply
                } else if b.sequence <= *last {
                    Arrival::Repeat
                } else if b.sequence == *last + 1 {
                    *last = b.sequence;
                    Arrival::Apply
                } else {
                    Arrival::Gap(*last + 1)
                }
            }
            _ => {
                // A new stream (a new leader, or the first one): followed from here.
                received.insert(b.partition, (b.from, b.stream, b.sequence));
                Arrival::Apply
            }
        })
    }

    /// A level marker arrived (see `beside.rs`): the copy of `b`'s
    /// partition here counts as level if it is `loaded` and the last batch
    /// received is the one the marker stands at, on the same stream (and
    /// `refuse` has nothing against its sender).
    ///
    /// `loaded` is read under the lock [`expect_copy`](Self::expect_copy)
    /// takes: a host asking for a copy anew voids its loaded flag first,
    /// then the level one, so a marker for the copy voided cannot leave it
    /// level.
    pub(super) fn mark_level(
        &self,
        b: &Batch,
        loaded: impl FnOnce() -> bool,
        refuse: impl FnOnce() -> Option<Error>,
    ) -> Result<()> {
        let received = self.received.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = refuse() {
            return Err(e);
        }
        let mut level = self.level.lock().unwrap_or_else(|p| p.into_inner());
        let loaded = loaded();
        let here = received.get(&b.partition).copied();
        if !loaded || here != Some((b.from, b.stream, b.sequence)) {
            bail!(
                Unavailable,
                "partition {}: host {} says the copy here is level at batch {}, but this copy {}",
                b.partition,
                b.from,
                b.sequence,
                match here {
                    _ if !loaded => "is not whole".to_string(),
                    Some((from, stream, last)) if (from, stream) == (b.from, b.stream) => format!("stands at {last}"),
                    _ => "follows another stream".to_string(),
                }
            );
        }
        level.insert(b.partition, b.from);
        Ok(())
    }

    /// Whether this host's copy of `partition` was said to be level with
    /// the stream of `leader` since it last asked for a copy.
    pub(crate) fn is_level(&self, partition: u32, leader: HostId) -> bool {
        self.level.lock().unwrap_or_else(|p| p.into_inner()).get(&partition) == Some(&leader)
    }

    /// How many batches of `partition` arrived here (copy pieces included;
    /// level markers, which end a copy, are not), refused ones aside.
    pub(crate) fn arrivals(&self, partition: u32) -> u64 {
        self.arrivals.lock().unwrap_or_else(|p| p.into_inner()).get(&partition).copied().unwrap_or(0)
    }

    /// This host asks for a copy of `partition` (again): not level until
    /// its leader says so.
    pub(crate) fn expect_copy(&self, partition: u32) {
        self.level.lock().unwrap_or_else(|p| p.into_inner()).remove(&partition);
    }

    /// Run `f` with no batch arriving meanwhile: a new leader's repair
    /// names the leaders replicas follow this way, so that no batch of the
    /// old leader slips in after a copy told the new one its last batch.
    pub(super) fn exclusive<R>(&self, f: impl FnOnce() -> R) -> R {
        let _received = self.received.lock().unwrap_or_else(|p| p.into_inner());
        f()
    }

    /// Wait (30 s at most) until `partition`'s copy here has applied
    /// position `sequence` of `stream`.
    async fn applied_up_to(&self, partition: u32, stream: u64, sequence: u64) -> Result<()> {
        let mut rx = self.applied.subscribe();
        let done = async {
            rx.wait_for(|m| m.get(&partition).is_some_and(|a| a.0 == stream && a.1 >= sequence)).await.is_ok()
        };
        if tokio::time::timeout(Duration::from_secs(30), done).await.unwrap_or(false) {
            return Ok(());
        }
        Err(err!(Unavailable, "partition {partition}: batch {sequence} was not applied here within 30 s"))
    }

    /// `batch` has been applied here.
    pub(super) fn applied(&self, batch: Batch) {
        let (partition, stream, sequence) = (batch.partition, batch.stream, batch.sequence);
        self.raise_term(partition, batch.term);
        // A copy piece stands for the position the copy was taken at (its
        // rows are not kept).
        let last = if batch.copy { Batch { records: Vec::new(), ..batch } } else { batch };
        self.last.lock().unwrap_or_else(|p| p.into_inner()).insert(partition, Arc::new(last));
        self.applied.send_modify(|m| {
            let a = m.entry(partition).or_insert((stream, 0));
            *a = if a.0 == stream { (a.0, a.1.max(sequence)) } else { (stream, sequence) };
        });
    }

    /// The last batch applied on `partition`, once every batch received
    /// has been applied.
    pub(super) async fn settled_last(&self, partition: u32) -> Result<Option<Arc<Batch>>> {
        let received = self.received.lock().unwrap_or_else(|p| p.into_inner()).get(&partition).copied();
        if let Some((_, stream, last)) = received {
            self.applied_up_to(partition, stream, last).await?;
        }
        Ok(self.last.lock().unwrap_or_else(|p| p.into_inner()).get(&partition).cloned())
    }

    /// The highest term seen on `partition`.
    pub(super) fn term(&self, partition: u32) -> u64 {
        self.terms.lock().unwrap_or_else(|p| p.into_inner()).get(&partition).copied().unwrap_or(0)
    }

    pub(super) fn raise_term(&self, partition: u32, term: u64) {
        let mut terms = self.terms.lock().unwrap_or_else(|p| p.into_inner());
        let t = terms.entry(partition).or_default();
        *t = (*t).max(term);
    }
}

/// Serve a replication connection: apply each batch, then acknowledge it.
/// What a replica does when it cannot apply what its leader sent: its copy
/// no longer follows the leader's, so it must stop (and rejoin afresh).
pub(crate) type OnDivergence = Arc<dyn Fn(Error) + Send + Sync>;

pub(super) async fn serve_replication(
    mut s: tokio::net::TcpStream,
    host: Arc<Host>,
    link: Arc<Link>,
    diverged: OnDivergence,
) {
    while let Ok(body) = read_body_async(&mut s).await {
        let Ok(batch) = decode::<Batch>(&body) else { break };
        let (partition, from) = (batch.partition, batch.from);
        // Only the partition's leader (as this host's newest metadata has
        // it) is followed: a deposed leader that has not noticed yet is
        // refused, so it can neither change a replica nor answer a read.
        let refuse = || {
            let leader = link.latest_leader(partition);
            (leader != Some(from) || from == link.me).then(|| {
                err!(Unavailable, "host {from} does not lead partition {partition} (the metadata says {leader:?})")
            })
        };
        let result = if let Some(e) = link.refuse_while_replaying() {
            Err(e)
        } else if batch.is_level_marker() {
            link.progress.mark_level(&batch, || host.replica_loaded(partition), refuse)
        } else if !host.accepts_records(partition, &batch.records) {
            Err(err!(
                Unavailable,
                "this host's copy of partition {partition} takes a copy now, or has one whole already and follows \
                 the stream"
            ))
        } else {
            apply_batch(&host, &link.progress, link.logs.as_deref(), batch, &diverged, refuse).await
        };
        let stop = result.as_ref().is_err_and(|e| e.code() == ErrorCode::Internal);
        if write_frame_async(&mut s, &result.map_err(|e| to_wire_error(&e))).await.is_err() || stop {
            break;
        }
    }
}

/// A replica's copy log has grown past its limit: it goes on in a new
/// generation from the batch just applied, and the site freezes the
/// partition as it is now for that generation's base. Not while a
/// prepared transaction is open here: its outcome, coming in a later
/// batch, would then be both in the base and after it.
fn compact_replica_log(host: &Arc<Host>, logs: &super::copylog::CopyLogs, partition: u32, last: Arc<Batch>) {
    let in_doubt = host.local_doubt(partition).map_or(true, |d| d.pending.is_some());
    if in_doubt {
        logs.abandon(partition);
        return;
    }
    match logs.expect_base(partition, Some(last)) {
        Ok(()) => host.compact_log(partition, false),
        Err(e) => {
            eprintln!("joule: cluster: partition {partition}: copy log not compacted: {e}");
            logs.abandon(partition);
        }
    }
}

/// Records of at least this many bytes (copy pieces, mostly) are decoded
/// and logged off the runtime's worker ([`off_runtime`]).
const HEAVY_BYTES: usize = 256 << 10;

/// Run `work` — when `heavy`, without holding the runtime's worker: the
/// runtime (one worker thread on a small machine) also answers the failure
/// detector's pings and serves the metadata group, and a host replaying
/// gigabytes of copy log, or taking a copy, would otherwise leave them
/// unanswered long enough to be declared failed (seen in a whole-cluster
/// restart of 1 GB on two cores). Light work runs in place, and so does any
/// work on a current-thread runtime (it has no other thread to hand its
/// tasks to).
fn off_runtime<T>(heavy: bool, work: impl FnOnce() -> T) -> T {
    let multi_thread = || {
        tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
    };
    if heavy && multi_thread() {
        tokio::task::block_in_place(work)
    } else {
        work()
    }
}

/// Apply `batch` on this host's copy if it is the next one (acknowledge a
/// repeat once its first arrival has been applied). A batch that does not
/// apply, or one past the next position, means this copy no longer follows
/// the leader's: `diverged` stops the host, and the error is `Internal`.
pub(super) async fn apply_batch(
    host: &Arc<Host>,
    progress: &ReplicaProgress,
    logs: Option<&super::copylog::CopyLogs>,
    batch: Batch,
    diverged: &OnDivergence,
    refuse: impl FnOnce() -> Option<Error>,
) -> Result<()> {
    let (partition, from) = (batch.partition, batch.from);
    match progress.arrive(&batch, refuse)? {
        Arrival::Apply => {
            // A copy piece of megabytes is decoded (and logged, below) off
            // the runtime's worker: the runtime also answers the failure
            // detector's pings and the metadata group.
            let heavy = batch.records.len() >= HEAVY_BYTES;
            let (tx, rx) = tokio::sync::oneshot::channel();
            off_runtime(heavy, || {
                host.apply_replicated(partition, &batch.records, Box::new(move |r| drop(tx.send(r))))
            });
            let r = rx.await.unwrap_or_else(|_| Err(err!(Unavailable, "the host is shutting down")));
            if let Err(e) = r {
                // Partly applied, perhaps: this copy can no longer be trusted.
                let e = e.context(format!("partition {partition}: records from host {from} did not apply"));
                diverged(e.clone());
                return Err(Error::new(ErrorCode::Internal, e.message().to_string()));
            }
            // Logged before it is acknowledged; a copy that cannot log stops.
            let mut due = false;
            if let Some(logs) = logs {
                let logged = off_runtime(heavy, || {
                    logs.append(partition, &batch).and_then(|d| {
                        due = d;
                        if batch.copy && host.replica_loaded(partition) {
                            logs.complete(partition)
                        } else {
                            Ok(())
                        }
                    })
                });
                if let Err(e) = logged {
                    diverged(e.clone());
                    return Err(Error::new(ErrorCode::Internal, e.message().to_string()));
                }
            }
            // Before the batch counts as applied: nothing after it (a repeat
            // of it acknowledged on another connection, then the next
            // batch) can reach the site before the freeze.
            let batch = Arc::new(batch);
            if let (true, Some(logs)) = (due, logs) {
                compact_replica_log(host, logs, partition, batch.clone());
            }
            progress.applied(Arc::unwrap_or_clone(batch));
            Ok(())
        }
        // Acknowledged once its first arrival is applied.
        Arrival::Repeat => progress.applied_up_to(partition, batch.stream, batch.sequence).await,
        Arrival::Stale => Err(err!(
            Unavailable,
            "partition {partition}: a piece of a copy from host {from} taken at batch {}, given up for a later copy",
            batch.sequence
        )),
        Arrival::Gap(expected) => {
            let e = err!(
                Internal,
                "partition {partition}: host {from} sent batch {} but batch {expected} never arrived",
                batch.sequence
            );
            diverged(e.clone());
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn batch(stream: u64, sequence: u64, copy: bool, from: HostId) -> Batch {
        Batch { partition: 3, stream, sequence, copy, from, term: 1, records: Vec::new() }
    }

    #[test]
    fn positions_on_a_stream_are_followed_repeats_and_gaps_told_apart() {
        let p = ReplicaProgress::default();
        assert!(
            matches!(p.arrive(&batch(7, 10, false, 1), || None).unwrap(), Arrival::Apply),
            "a new stream is followed from anywhere"
        );
        assert!(matches!(p.arrive(&batch(7, 11, false, 1), || None).unwrap(), Arrival::Apply));
        assert!(
            matches!(p.arrive(&batch(7, 11, false, 1), || None).unwrap(), Arrival::Repeat),
            "sent again after a broken connection"
        );
        assert!(matches!(p.arrive(&batch(7, 9, false, 1), || None).unwrap(), Arrival::Repeat));
        assert!(matches!(p.arrive(&batch(7, 13, false, 1), || None).unwrap(), Arrival::Gap(12)), "batch 12 was lost");
        // A new leader's stream is followed from its own positions.
        assert!(matches!(p.arrive(&batch(8, 500, false, 2), || None).unwrap(), Arrival::Apply));
        assert!(matches!(p.arrive(&batch(8, 501, false, 2), || None).unwrap(), Arrival::Apply));
        // A copy's pieces all carry the position it was taken at; the stream goes on after it.
        assert!(matches!(p.arrive(&batch(9, 40, true, 0), || None).unwrap(), Arrival::Apply));
        assert!(matches!(p.arrive(&batch(9, 40, true, 0), || None).unwrap(), Arrival::Apply));
        assert!(matches!(p.arrive(&batch(9, 41, false, 0), || None).unwrap(), Arrival::Apply));
        assert!(
            matches!(p.arrive(&batch(9, 43, false, 0), || None).unwrap(), Arrival::Gap(42)),
            "the leader stopped sending after the copy"
        );
        // Every batch that arrived is counted (a rejoining host watches the
        // count while its copy comes); refused ones are not.
        assert_eq!(p.arrivals(3), 11);
        assert!(p.arrive(&batch(9, 44, false, 0), || Some(err!(Unavailable, "no"))).is_err());
        assert_eq!((p.arrivals(3), p.arrivals(4)), (11, 0));
    }

    #[test]
    fn a_copy_counts_as_level_only_where_its_leader_says_it_stands() {
        let p = ReplicaProgress::default();
        let marker = |stream, sequence| Batch::level_marker(3, stream, sequence, 0, 1);
        assert!(marker(9, 42).is_level_marker());
        assert!(!Batch { records: vec![1], ..marker(9, 42) }.is_level_marker(), "a copy piece has records");
        // The copy's pieces at 40, then the batches shipped meanwhile.
        for b in [batch(9, 40, true, 0), batch(9, 40, true, 0), batch(9, 41, false, 0), batch(9, 42, false, 0)] {
            assert!(matches!(p.arrive(&b, || None).unwrap(), Arrival::Apply));
        }
        assert!(p.mark_level(&marker(9, 42), || false, || None).is_err(), "a copy not loaded is not level");
        let e = p.mark_level(&marker(9, 43), || true, || None).unwrap_err();
        assert!(e.to_string().contains("stands at 42"), "{e}");
        assert!(p.mark_level(&marker(9, 41), || true, || None).is_err());
        assert!(p.mark_level(&marker(8, 42), || true, || None).is_err(), "another stream");
        let deposed = || Some(err!(Unavailable, "host 0 does not lead partition 3"));
        assert!(p.mark_level(&marker(9, 42), || true, deposed).is_err());
        assert!(!p.is_level(3, 0));
        p.mark_level(&marker(9, 42), || true, || None).unwrap();
        assert!(p.is_level(3, 0));
        assert!(!p.is_level(3, 1), "level with host 0's stream, not another leader's");
        p.expect_copy(3);
        assert!(!p.is_level(3, 0), "a copy asked for again is not level until its leader says so");
        // A piece of a copy given up for a later one is refused.
        for b in [batch(9, 50, true, 0), batch(9, 51, false, 0)] {
            assert!(matches!(p.arrive(&b, || None).unwrap(), Arrival::Apply));
        }
        assert!(matches!(p.arrive(&batch(9, 40, true, 0), || None).unwrap(), Arrival::Stale));
    }

    fn shipment(bytes: usize) -> Shipment {
        Shipment::Batch { records: vec![7; bytes], done: Box::new(|| {}) }
    }

    #[test]
    fn queued_batches_merge_up_to_the_limit_and_stop_at_anything_else() {
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..3 {
            tx.send(shipment(5)).unwrap();
        }
        // 5 + 5 bytes reach the limit of 8: the merge stops there.
        let (records, dones, after) = merge_queued(vec![1; 5], Box::new(|| {}), &rx, 8);
        assert_eq!((records.len(), dones.len()), (10, 2));
        assert!(after.is_none());
        // The two left wait for the next batch (an empty one: 0 + 5 + 5).
        let (records, dones, _) = merge_queued(Vec::new(), Box::new(|| {}), &rx, 8);
        assert_eq!((records.len(), dones.len()), (10, 3));
        assert_eq!(rx.try_iter().count(), 0);
        // A copy for a rejoining host is not merged into a batch: it ends
        // the merge and comes next, in order.
        tx.send(shipment(1)).unwrap();
        tx.send(Shipment::AddReplica { host: 2, copy: Box::new(std::iter::empty()) }).unwrap();
        tx.send(shipment(1)).unwrap();
        let (records, dones, after) = merge_queued(vec![1], Box::new(|| {}), &rx, 8);
        assert_eq!((records.len(), dones.len()), (2, 2));
        assert!(matches!(after, Some(Shipment::AddReplica { host: 2, .. })));
        assert_eq!(rx.try_iter().count(), 1);
    }
}
