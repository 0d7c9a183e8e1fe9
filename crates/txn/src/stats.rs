//! Statistics each site (and the coordinator) keeps about its own work.
//!
//! The counters live in the site's own memory and only its thread writes
//! them — no locks, no shared cache lines on the hot path (one exception:
//! the inbox depth, an atomic the initiators add to and the site takes
//! from). Readers ask: a `Stats` message in the site's inbox, answered
//! between transactions with a copy ([`Host::statistics`]). Table and index
//! figures are computed at that moment from the site's storage.
//!
//! [`Host::statistics`]: crate::Host::statistics

use hdrhistogram::Histogram;
use std::collections::HashMap;
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
    /// Time from acceptance by the initiator to the answer, µs.
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
    pub latency: Histogram<u64>,
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

    pub fn snapshot(&self, partition: Option<u32>, queue_depth: u64, tables: Vec<TableStats>) -> SiteStats {
        SiteStats {
            partition,
            procedures: self.procedures.clone(),
            latency: self.latency.clone(),
            queue_wait: self.queue_wait.clone(),
            queue_depth,
            idle: self.idle,
            since_start: self.started.elapsed(),
            tables,
            fragments: self.fragments,
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
