//! Native procedures: Rust code that runs as one transaction.
//!
//! A native procedure implements [`Procedure`]: it declares its SQL
//! statements up front (planned once, when `CREATE PROCEDURE ... FROM CLASS`
//! binds it and again after each schema change — never per call) and, in
//! [`Procedure::run`], queues statements with parameters, executes the batch,
//! reads the results and decides. It may execute several batches; it ends by
//! returning result tables, or an error — [`ProcedureContext::abort`] for a
//! deliberate abort with an app status. Either way the transaction is atomic:
//! on any error nothing it did remains.
//!
//! Procedures are registered in a [`ProcedureRegistry`] under a class name
//! (for example `voter.Vote`) when the host starts. A single-partition
//! procedure runs on the site that owns its partition key, on the site's
//! thread; a multi-partition procedure runs on the coordinator, and each
//! batch is sent to the partitions its statements need.
//!
//! Determinism: a procedure must compute the same thing from the same
//! parameters and data. Use [`ProcedureContext::timestamp_micros`] instead of
//! a clock and [`ProcedureContext::random`] instead of an unseeded generator;
//! do not iterate hash maps to decide what to write.

use crate::compile::CompiledStatement;
use crate::ids::TxnIds;
use crate::response::{ResultTable, APP_STATUS_UNSET};
use joule_common::{err, Error, Result, Value};
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

/// A native stored procedure.
pub trait Procedure: Send + Sync + 'static {
    /// The SQL statements the procedure uses; `queue` refers to them by
    /// position.
    fn statements(&self) -> &[&'static str];

    /// Run the procedure as one transaction.
    fn run(&self, ctx: &mut ProcedureContext<'_>, params: &[Value]) -> Result<Vec<ResultTable>>;
}

/// Native procedure classes by name.
#[derive(Clone, Default)]
pub struct ProcedureRegistry {
    classes: BTreeMap<String, Arc<dyn Procedure>>,
}

impl ProcedureRegistry {
    pub fn new() -> ProcedureRegistry {
        ProcedureRegistry::default()
    }

    /// Register `procedure` under `class` (replacing any earlier one).
    pub fn register(&mut self, class: &str, procedure: impl Procedure) -> &mut Self {
        self.classes.insert(class.to_string(), Arc::new(procedure));
        self
    }

    pub fn get(&self, class: &str) -> Option<&Arc<dyn Procedure>> {
        self.classes.get(class)
    }

    /// Registered class names, sorted.
    pub fn classes(&self) -> impl Iterator<Item = &str> {
        self.classes.keys().map(String::as_str)
    }
}

impl std::fmt::Debug for ProcedureRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.classes.keys()).finish()
    }
}

/// Statements queued for the next `execute`, with their parameters stored
/// back to back (the buffers are reused from transaction to transaction).
#[derive(Default, Debug)]
pub struct Batch {
    pub(crate) items: Vec<(usize, Range<usize>)>,
    pub(crate) params: Vec<Value>,
}

impl Batch {
    pub(crate) fn clear(&mut self) {
        self.items.clear();
        self.params.clear();
    }

    fn view(&self) -> BatchRef<'_> {
        BatchRef { items: &self.items, params: &self.params }
    }
}

/// A batch to execute: statements (by index) with ranges into `params`,
/// which may be the queued parameters or, for statement procedures, the
/// invocation's own (so they are not copied).
#[derive(Clone, Copy)]
pub(crate) struct BatchRef<'a> {
    pub items: &'a [(usize, Range<usize>)],
    pub params: &'a [Value],
}

impl<'a> BatchRef<'a> {
    /// The statements: (statement index, its parameters).
    pub(crate) fn iter(self) -> impl Iterator<Item = (usize, &'a [Value])> {
        self.items.iter().map(move |(s, r)| (*s, &self.params[r.clone()]))
    }

    pub(crate) fn len(self) -> usize {
        self.items.len()
    }

    pub(crate) fn is_empty(self) -> bool {
        self.items.is_empty()
    }
}

/// Runs a batch where the transaction runs: on a site (single-partition) or
/// through the coordinator (multi-partition).
pub(crate) trait BatchExecutor {
    fn execute(&mut self, statements: &[Arc<CompiledStatement>], batch: BatchRef<'_>) -> Result<Vec<ResultTable>>;
}

/// What a running procedure sees: its transaction, its statements, and the
/// batch being built.
pub struct ProcedureContext<'a> {
    pub(crate) statements: &'a [Arc<CompiledStatement>],
    pub(crate) executor: &'a mut dyn BatchExecutor,
    pub(crate) batch: &'a mut Batch,
    pub(crate) ids: TxnIds,
    pub(crate) partition: Option<u32>,
    pub(crate) app_status: i8,
    pub(crate) app_status_string: Option<String>,
    pub(crate) random_state: u64,
    pub(crate) queue_error: Option<Error>,
}

impl<'a> ProcedureContext<'a> {
    pub(crate) fn new(
        statements: &'a [Arc<CompiledStatement>],
        executor: &'a mut dyn BatchExecutor,
        batch: &'a mut Batch,
        ids: TxnIds,
        partition: Option<u32>,
    ) -> ProcedureContext<'a> {
        batch.clear();
        ProcedureContext {
            statements,
            executor,
            batch,
            ids,
            partition,
            app_status: APP_STATUS_UNSET,
            app_status_string: None,
            random_state: ids.random_seed(),
            queue_error: None,
        }
    }

    /// Queue statement `stmt` (its position in [`Procedure::statements`])
    /// with parameters for the next [`execute`](Self::execute).
    pub fn queue<I: IntoIterator<Item = Value>>(&mut self, stmt: usize, params: I) {
        let start = self.batch.params.len();
        self.batch.params.extend(params);
        let range = start..self.batch.params.len();
        match self.statements.get(stmt) {
            Some(s) if s.planned.param_count == range.len() => self.batch.items.push((stmt, range)),
            Some(s) => {
                self.queue_error.get_or_insert(err!(
                    WrongParameterCount,
                    "statement {stmt} ({}) takes {} parameter(s) but {} were queued",
                    s.sql,
                    s.planned.param_count,
                    range.len()
                ));
            }
            None => {
                self.queue_error.get_or_insert(err!(
                    InvalidArgument,
                    "the procedure has {} statement(s); there is no statement {stmt}",
                    self.statements.len()
                ));
            }
        }
    }

    /// Run the queued statements in order; one result per statement. If a
    /// statement fails, the transaction is rolled back when the procedure
    /// returns (whatever it returns).
    pub fn execute(&mut self) -> Result<Vec<ResultTable>> {
        if let Some(e) = self.queue_error.take() {
            self.batch.clear();
            return Err(e);
        }
        let result = self.executor.execute(self.statements, self.batch.view());
        self.batch.clear();
        result
    }

    /// An error that aborts the transaction with `app_status` and `message`
    /// (return it from `run`).
    pub fn abort(&mut self, app_status: i8, message: impl Into<String>) -> Error {
        let message = message.into();
        self.app_status = app_status;
        self.app_status_string = Some(message.clone());
        err!(ProcedureAborted, "{message}")
    }

    /// Set the app status returned with a successful response.
    pub fn set_app_status(&mut self, status: i8, message: Option<String>) {
        self.app_status = status;
        self.app_status_string = message;
    }

    /// The transaction's ids.
    pub fn txn_ids(&self) -> TxnIds {
        self.ids
    }

    /// The transaction's timestamp (µs since the Unix epoch): what `NOW()`
    /// returns inside it.
    pub fn timestamp_micros(&self) -> i64 {
        self.ids.unique_id.timestamp_micros()
    }

    /// The partition a single-partition procedure runs on.
    pub fn partition(&self) -> Option<u32> {
        self.partition
    }

    /// A pseudo-random number from a generator seeded by the transaction id
    /// (SplitMix64): the same sequence whenever this transaction is replayed.
    pub fn random(&mut self) -> u64 {
        self.random_state = self.random_state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.random_state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Read parameter `i` as an integer (for procedures' argument checks).
pub fn param_i64(params: &[Value], i: usize) -> Result<i64> {
    match params.get(i) {
        Some(Value::Integer(v)) => Ok(*v),
        Some(Value::String(s)) => {
            s.trim().parse().map_err(|_| err!(DatatypeMismatch, "parameter {i} must be an integer, not '{s}'"))
        }
        Some(v) => Err(err!(DatatypeMismatch, "parameter {i} must be an integer, not {}", v.type_name())),
        None => Err(err!(WrongParameterCount, "parameter {i} is missing ({} given)", params.len())),
    }
}

/// Read parameter `i` as a string.
pub fn param_str(params: &[Value], i: usize) -> Result<&str> {
    match params.get(i) {
        Some(Value::String(s)) => Ok(s),
        Some(v) => Err(err!(DatatypeMismatch, "parameter {i} must be a string, not {}", v.type_name())),
        None => Err(err!(WrongParameterCount, "parameter {i} is missing ({} given)", params.len())),
    }
}

/// How a procedure ended: its result (or error) and the app status it set.
pub(crate) struct Outcome {
    pub result: Result<Vec<ResultTable>>,
    pub app_status: i8,
    pub app_status_string: Option<String>,
}

/// Run a compiled procedure through `executor`, turning a panic in its
/// code into an `Internal` error: a buggy procedure fails its own
/// transaction (which is rolled back) instead of taking its site down.
pub(crate) fn run_procedure(
    procedure: &crate::compile::CompiledProcedure,
    params: &[Value],
    executor: &mut dyn BatchExecutor,
    batch: &mut Batch,
    ids: TxnIds,
    partition: Option<u32>,
) -> Outcome {
    let run = std::panic::AssertUnwindSafe(|| run_unguarded(procedure, params, executor, batch, ids, partition));
    std::panic::catch_unwind(run).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown cause".to_string());
        let e = err!(Internal, "procedure {} panicked: {what}", procedure.name);
        Outcome { result: Err(e), app_status: APP_STATUS_UNSET, app_status_string: None }
    })
}

fn run_unguarded(
    procedure: &crate::compile::CompiledProcedure,
    params: &[Value],
    executor: &mut dyn BatchExecutor,
    batch: &mut Batch,
    ids: TxnIds,
    partition: Option<u32>,
) -> Outcome {
    use crate::compile::ProcedureCode;
    match &procedure.code {
        ProcedureCode::Statements => {
            let expected = procedure.param_count.unwrap_or(0);
            if params.len() != expected {
                let e = err!(
                    WrongParameterCount,
                    "procedure {} takes {expected} parameter(s) but {} were given",
                    procedure.name,
                    params.len()
                );
                return Outcome { result: Err(e), app_status: APP_STATUS_UNSET, app_status_string: None };
            }
            // The parameters feed the statements' `?`s in order, read in
            // place from the invocation.
            batch.clear();
            let mut start = 0;
            for (i, s) in procedure.statements.iter().enumerate() {
                let n = s.planned.param_count;
                batch.items.push((i, start..start + n));
                start += n;
            }
            let result = executor.execute(&procedure.statements, BatchRef { items: &batch.items, params });
            batch.clear();
            Outcome { result, app_status: APP_STATUS_UNSET, app_status_string: None }
        }
        ProcedureCode::Native(p) => {
            let mut ctx = ProcedureContext::new(&procedure.statements, executor, batch, ids, partition);
            let result = p.run(&mut ctx, params);
            Outcome { result, app_status: ctx.app_status, app_status_string: ctx.app_status_string.take() }
        }
    }
}
