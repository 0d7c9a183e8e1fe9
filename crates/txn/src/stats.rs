//! Statistics each site (and the coordinator) keeps about its own work.
//!
//! The counters live in the site's own memory and only its thread writes
//! them — no locks, no shared cache lines on the hot path (two exceptions:
//! the inbox depth, an atomic the initiators add to and the site takes
//! from, and the latencies of held answers, below). Readers ask: a
//! `Stats` message in the site's inbox, answered between transactions with
//! a copy ([`Host::statistics`]). Table and index figures are computed at
//! that moment from the site's storage.
//!
//! A call's latency ends where its answer is released, not where its
//! site ran it: in a cluster the answer waits for the partition's
//! replicas, and with a synchronous command log for the fsync. Those
//! answers leave in batches on other threads, so their latencies are
//! recorded there ([`ReleaseClock`], one lock per batch, into the site's
//! [`ReleasedLatency`]) and added to the site's own when it is asked.
//! The auto-scaler and a rebalance steer by this figure: taken where the
//! site ran the call, it missed the replicas' wait, which at k ≥ 1 is
//! most of what a move costs the calls.
//!
//! [`Host::statistics`]: crate::Host::statistics

use crate::response::{Response, ResponseSink};
use hdrhistogram::Histogram;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Latency histograms count microseconds up to an hour, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap_or_else(|_| Histogram::new(3).expect("histogram"))
}

/// One procedure's counters on one site.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcedureStats {
    pub invocations: u64,
    /// Ended by the procedure's own abort.
    pub aborts: u64,
    /// Ended by an error (constraint, SQL, mispartitioning...).
    pub failures: u64,
    /// Execution time, nanoseconds: total, smallest, largest.
    pub exec_nanos: u64,
    pub min_exec_nanos: u64,
    pub max_exec_nanos: u64,
    /// Result bytes (an estimate of the answer's size): total, smallest, largest.
    pub result_bytes: u64,
    pub min_result_bytes: u64,
    pub max_result_bytes: u64,
    /// Parameter bytes (an estimate): total, smallest, largest.
    pub param_bytes: u64,
    pub min_param_bytes: u64,
    pub max_param_bytes: u64,
}

impl ProcedureStats {
    pub fn record(&mut self, exec: Duration, outcome: Outcome, param_bytes: u64, result_bytes: u64) {
        let nanos = exec.as_nanos() as u64;
        if self.invocations == 0 {
            (self.min_exec_nanos, self.min_param_bytes, self.min_result_bytes) = (nanos, param_bytes, result_bytes);
        }
        self.min_exec_nanos = self.min_exec_nanos.min(nanos);
        self.min_param_bytes = self.min_param_bytes.min(param_bytes);
        self.min_result_bytes = self.min_result_bytes.min(result_bytes);
        self.invocations += 1;
        self.exec_nanos += nanos;
        self.max_exec_nanos = self.max_exec_nanos.max(nanos);
        self.param_bytes += param_bytes;
        self.max_param_bytes = self.max_param_bytes.max(param_bytes);
        self.result_bytes += result_bytes;
        self.max_result_bytes = self.max_result_bytes.max(result_bytes);
        match outcome {
            Outcome::Committed => {}
            Outcome::Aborted => self.aborts += 1,
            Outcome::Failed => self.failures += 1,
        }
    }

    /// `self` minus an earlier copy of itself (for deltas); the extremes
    /// stay as they are.
    pub fn since(&self, earlier: &ProcedureStats) -> ProcedureStats {
        ProcedureStats {
            invocations: self.invocations.saturating_sub(earlier.invocations),
            aborts: self.aborts.saturating_sub(earlier.aborts),
            failures: self.failures.saturating_sub(earlier.failures),
            exec_nanos: self.exec_nanos.saturating_sub(earlier.exec_nanos),
            result_bytes: self.result_bytes.saturating_sub(earlier.result_bytes),
            param_bytes: self.param_bytes.saturating_sub(earlier.param_bytes),
            ..self.clone()
        }
    }
}

/// How a transaction ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Committed,
    Aborted,
    Failed,
}

/// One table's figures on one partition.
#[derive(Clone, Debug, PartialEq)]
pub struct TableStats {
    pub name: String,
    pub rows: u64,
    /// Estimated bytes of its rows (sampled) and of its indexes.
    pub bytes: u64,
    pub index_bytes: u64,
    pub partitioned: bool,
    pub view: bool,
    /// (index name, entries, unique).
    pub indexes: Vec<(String, u64, bool)>,
}

/// What a site (or the coordinator, `partition` = `None`) reports.
#[derive(Clone, Debug)]
pub struct SiteStats {
    pub partition: Option<u32>,
    pub procedures: HashMap<String, ProcedureStats>,
    /// Time from acceptance by the initiator to the answer's release
    /// (after the replicas and a synchronous log's fsync), µs.
    pub latency: Histogram<u64>,
    /// Time from acceptance to the start of execution (queueing), µs.
    pub queue_wait: Histogram<u64>,
    /// Invocations waiting in the inbox when asked.
    pub queue_depth: u64,
    /// Since the site started: time spent waiting for work, and in all.
    pub idle: Duration,
    pub since_start: Duration,
    pub tables: Vec<TableStats>,
    /// Pieces of multi-partition statements sent to this site — read
    /// fragments, writes, rows to insert (range pruning spares the
    /// partitions a statement's conditions exclude).
    pub fragments: u64,
}

/// The counters as the site keeps them.
pub(crate) struct SiteCounters {
    pub procedures: HashMap<String, ProcedureStats>,
    /// Calls answered at once, recorded by the site.
    pub latency: Histogram<u64>,
    /// Calls whose answers were held, recorded as they were released.
    pub released: ReleasedLatency,
    /// When the calls whose answers are held now (in the site's batch)
    /// were accepted, in the batch's order.
    pub unreleased: Vec<Instant>,
    pub queue_wait: Histogram<u64>,
    pub idle: Duration,
    pub started: Instant,
    pub fragments: u64,
}

impl SiteCounters {
    pub fn new() -> SiteCounters {
        SiteCounters {
            procedures: HashMap::new(),
            latency: new_histogram(),
            released: ReleasedLatency::default(),
            unreleased: Vec::new(),
            queue_wait: new_histogram(),
            idle: Duration::ZERO,
            started: Instant::now(),
            fragments: 0,
        }
    }

    pub fn procedure(&mut self, name: &str) -> &mut ProcedureStats {
        if !self.procedures.contains_key(name) {
            self.procedures.insert(name.to_string(), ProcedureStats::default());
        }
        self.procedures.get_mut(name).expect("inserted above")
    }

    /// The last answer of a batch of held ones: it records the held calls'
    /// latencies when the batch is released (`None`: no call's answer is
    /// held).
    pub fn release_clock(&mut self) -> Option<crate::logging::Answer> {
        if self.unreleased.is_empty() {
            return None;
        }
        let clock = ReleaseClock { accepted: std::mem::take(&mut self.unreleased), into: self.released.clone() };
        Some(crate::logging::Answer { sink: Arc::new(clock), handle: 0, response: Response::answered(Vec::new()) })
    }

    pub fn snapshot(&self, partition: Option<u32>, queue_depth: u64, tables: Vec<TableStats>) -> SiteStats {
        let mut latency = self.latency.clone();
        let _ = latency.add(&*self.released.0.lock().unwrap_or_else(|e| e.into_inner()));
        SiteStats {
            partition,
            procedures: self.procedures.clone(),
            latency,
            queue_wait: self.queue_wait.clone(),
            queue_depth,
            idle: self.idle,
            since_start: self.started.elapsed(),
            tables,
            fragments: self.fragments,
        }
    }
}

/// The latencies of a site's calls whose answers were held, recorded on
/// the threads that release them.
#[derive(Clone)]
pub(crate) struct ReleasedLatency(Arc<Mutex<Histogram<u64>>>);

impl Default for ReleasedLatency {
    fn default() -> ReleasedLatency {
        ReleasedLatency(Arc::new(Mutex::new(new_histogram())))
    }
}

/// Rides at the end of a batch of held answers, which are released in
/// order (by the replicas' acknowledgement, then a synchronous log): when
/// it is "delivered", every answer before it has been, and it records
/// their latencies — one clock read and one lock for the batch.
struct ReleaseClock {
    accepted: Vec<Instant>,
    into: ReleasedLatency,
}

impl ResponseSink for ReleaseClock {
    fn deliver(&self, _: u64, _: Response) {
        let now = Instant::now();
        let mut h = self.into.0.lock().unwrap_or_else(|e| e.into_inner());
        for at in &self.accepted {
            let _ = h.record((now.saturating_duration_since(*at).as_micros() as u64).max(1));
        }
    }
}

/// A rough size of values, for the result and parameter size columns.
pub fn values_bytes<'a>(values: impl Iterator<Item = &'a joule_common::Value>) -> u64 {
    values
        .map(|v| match v {
            joule_common::Value::String(s) => 4 + s.len() as u64,
            joule_common::Value::Binary(b) => 4 + b.len() as u64,
            joule_common::Value::Decimal(_) => 16,
            joule_common::Value::Array(a) => 2 + a.len() as u64 * 8,
            _ => 8,
        })
        .sum()
}
