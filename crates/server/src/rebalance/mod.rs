//! `@Rebalance`: moving ranges of the hashinator ring in the background,
//! a piece at a time, throttled, with its progress in `@Statistics
//! REBALANCE`.
//!
//! A move of many tokens (and so many rows) done as one transaction would
//! stall every partition for as long as it copies. `@Rebalance` instead
//! works out the ring it is asked to reach — `@Rebalance(first_token,
//! last_token, partition)` gives that range to the partition,
//! `@Rebalance()` gives every partition an even share of the tokens,
//! moving as few as it can (`Hashinator::balanced`: the even ring itself
//! when only ranges moved off it) — and reaches it through many
//! small `@MoveRange` transactions (see `joule_txn`'s `moverange.rs`), each
//! atomic and command-logged on its own: a kill between two of them loses
//! nothing, and what moved stays moved (calling `@Rebalance` again carries
//! on from there). `@Rebalance('STOP')` stops after the piece in flight.
//!
//! Throttling follows the `[elastic]` settings: each piece aims at
//! `duration_ms` (its token span scales by how far the last piece was from
//! it, see [`next_piece`]), rows move at `throughput_mb` MB/s at most, and
//! pieces run `busy_percent` of the time at most — with `target_p99_ms`,
//! a share that starts at a fifth of that and follows the calls' p99
//! ([`governor`])
//! (the job sleeps between pieces; a throughput of 0 lifts every limit, and then each piece
//! takes the next span of every partition giving tokens up, so those
//! partitions — and the ones taking them — work side by side: `lanes`).
//! The partitions
//! giving rows up keep them by token while the job runs (so a piece finds
//! its rows without scanning: `joule_engine`'s token index) and drop that
//! index when the job ends. The job builds each one before its first
//! piece, a step at a time ([`index_partitions`]: steps sized and rested
//! like pieces; unthrottled, each step indexes every giving partition side
//! by side), since one pass over a partition's millions of rows inside a
//! piece held the partition for up to a second.
//!
//! One job runs at a time, on its own thread, calling the host like any
//! client; the job's figures are kept here for `@Statistics REBALANCE`, and
//! its start and end are events (console, `joule status`). On a cluster the
//! job runs on the host asked (its pieces go to the coordinator like any
//! multi-partition call, each also waiting for the metadata's record of its
//! ring — which is why pieces are sized by their time beyond the quickest
//! one's), and a piece refused while the cluster fails over is tried again.

mod governor;

use crate::ServerContext;
use governor::Governor;
use joule_common::hashinator::Hashinator;
use joule_common::{bail, DataType, Error, Result, Value};
use joule_sql::plan::OutputColumn;
use joule_txn::ResultTable;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `[elastic]`: how fast ranges move.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElasticConfig {
    /// The length each move's transaction aims at.
    pub duration: Duration,
    /// Bytes of rows moved per second at most (0: no limit, and no
    /// `busy_percent` either).
    pub throughput_bytes: u64,
    /// The share of the time, in percent, that moves may run at most: after
    /// each piece the job rests at least `100 / busy_percent - 1` times as
    /// long as the piece took. Every piece is a multi-partition transaction
    /// and holds the partitions it moves between (and, while it waits for
    /// them, the ones queued behind it); on a cluster a piece costs 10–20
    /// ms whatever it carries, so without this bound tiny pieces would run
    /// back to back and hold the partitions most of the time.
    pub busy_percent: u32,
    /// The p99 of single-partition calls the job keeps to (`None`: no
    /// target): above it, moves run a smaller share of the time (see
    /// [`governor`]).
    pub target_p99: Option<Duration>,
}

/// The defaults kept a voter load at 66–90 % of its throughput (75 % on
/// average) with a p99 under 10 ms while ranges moved on one host
/// (docs/performance.md, "Moving ranges"), and a saturating load on a host
/// that a second one joined a p99 of 9.5–9.6 ms in the median second once
/// the share followed the load's p99 (docs/performance/elastic.md);
/// VoltDB's own (50 ms, 2 MB/s) moved faster but stalled every partition
/// for 50 ms at a time and halved the throughput.
impl Default for ElasticConfig {
    fn default() -> Self {
        ElasticConfig {
            duration: Duration::from_millis(5),
            throughput_bytes: 3 * (1 << 20) / 10,
            busy_percent: 25,
            target_p99: Some(Duration::from_millis(10)),
        }
    }
}

/// The first piece's span: 1/4096 of the ring.
const FIRST_PIECE_TOKENS: u64 = 1 << 20;

/// How a job stands.
#[derive(Clone, Debug, PartialEq)]
enum State {
    Running,
    Done,
    Stopped,
    Failed(String),
}

/// One job's figures.
#[derive(Clone, Debug)]
struct Job {
    state: State,
    started: Instant,
    finished: Option<Instant>,
    /// (first token, last token, partition) runs to move.
    ranges: usize,
    total_tokens: u64,
    moved_tokens: u64,
    moved_rows: u64,
    moved_bytes: u64,
    calls: u64,
    /// Time spent inside move transactions.
    calls_time: Duration,
    /// The share of the time moves may run now (percent), and the p99 of
    /// the load's single-partition calls it was last steered by.
    share: f64,
    load_p99: Option<Duration>,
}

/// The node's rebalancer: the running or last job.
#[derive(Default)]
pub(crate) struct Rebalancer {
    job: Mutex<Option<Job>>,
    stop: AtomicBool,
}

impl Rebalancer {
    fn update(&self, f: impl FnOnce(&mut Job)) {
        if let Some(job) = self.job.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            f(job);
        }
    }
}

/// What `@Rebalance(params)` asks for: the ring to reach, or a stop.
enum Request {
    Reach(Hashinator),
    Stop,
}

/// The request `params` make against the `current` ring. While hosts are
/// being removed (`removing`: the partitions that stay), `@Rebalance()`
/// balances over the partitions that stay ([`Hashinator::balanced`]).
fn request(current: &Hashinator, params: &[Value], removing: Option<usize>) -> Result<Request> {
    match params {
        [] => match removing {
            Some(keep) => Ok(Request::Reach(current.balanced(keep as u32)?)),
            None => Ok(Request::Reach(current.balanced(current.partition_count())?)),
        },
        [Value::String(s)] if s.eq_ignore_ascii_case("STOP") => Ok(Request::Stop),
        [_, _, _] => {
            let (first, last, partition) =
                joule_txn::range_move_params("@Rebalance", params, current.partition_count() as usize)?;
            Ok(Request::Reach(current.with_range_moved(first, last, partition)?))
        }
        _ => bail!(
            WrongParameterCount,
            "@Rebalance takes no parameters (an even share for every partition), 'STOP', or the first token, the last \
             token and the partition to give them to"
        ),
    }
}

/// `@Rebalance(...)`: start a job (answered at once with what it will
/// move) or stop the running one.
pub(crate) fn invoke(ctx: &Arc<ServerContext>, params: &[Value]) -> Result<Vec<ResultTable>> {
    // One reading of the ring: the target is made from it and the moves
    // are what it lacks.
    let current = ctx.host.hashinator();
    let removing = match &ctx.membership {
        crate::cluster::Membership::Member(node) => node.metadata().removing.map(|r| r.keep),
        _ => None,
    };
    let target = match request(&current, params, removing)? {
        Request::Stop => {
            // Under the job's lock, so that it stops this job and no later one.
            let job = ctx.rebalance.job.lock().unwrap_or_else(|e| e.into_inner());
            if !job.as_ref().is_some_and(|j| j.state == State::Running) {
                bail!(InvalidArgument, "@Rebalance('STOP'): no rebalance is running");
            }
            ctx.rebalance.stop.store(true, Ordering::SeqCst);
            return Ok(vec![plan_table(&[])]);
        }
        Request::Reach(target) => target,
    };
    match start(ctx, &current, &target)? {
        Some(moves) => Ok(vec![plan_table(&moves)]),
        None => bail!(
            InvalidArgument,
            "a rebalance is running already (see @Statistics REBALANCE; stop it with @Rebalance('STOP'))"
        ),
    }
}

/// Whether a job is running on this host.
pub(crate) fn running(ctx: &ServerContext) -> bool {
    ctx.rebalance.job.lock().unwrap_or_else(|e| e.into_inner()).as_ref().is_some_and(|j| j.state == State::Running)
}

/// Start a job to reach `target` unless one runs already (`false`).
pub(crate) fn reach(ctx: &Arc<ServerContext>, target: &Hashinator) -> Result<bool> {
    Ok(start(ctx, &ctx.host.hashinator(), target)?.is_some())
}

/// Start a job moving `current` to `target`: the ranges it moves, or
/// `None` if a job runs already.
fn start(ctx: &Arc<ServerContext>, current: &Hashinator, target: &Hashinator) -> Result<Option<Vec<(i32, i32, u32)>>> {
    let moves = current.moves_to(target);
    {
        let mut job = ctx.rebalance.job.lock().unwrap_or_else(|e| e.into_inner());
        if job.as_ref().is_some_and(|j| j.state == State::Running) {
            return Ok(None);
        }
        *job = Some(Job {
            state: if moves.is_empty() { State::Done } else { State::Running },
            started: Instant::now(),
            finished: moves.is_empty().then(Instant::now),
            ranges: moves.len(),
            total_tokens: moves.iter().map(|(s, e, _)| span(*s, *e)).sum(),
            moved_tokens: 0,
            moved_rows: 0,
            moved_bytes: 0,
            calls: 0,
            calls_time: Duration::ZERO,
            share: if ctx.config.elastic.throughput_bytes == 0 {
                100.0
            } else {
                governor::starting_share(ctx.config.elastic.target_p99, ctx.config.elastic.busy_percent)
            },
            load_p99: None,
        });
        ctx.rebalance.stop.store(false, Ordering::SeqCst);
    }
    if !moves.is_empty() {
        ctx.event(format!(
            "rebalance started: {} range(s), {} token(s)",
            moves.len(),
            moves.iter().map(|(s, e, _)| span(*s, *e)).sum::<u64>()
        ));
        let (job_ctx, job_moves) = (ctx.clone(), moves.clone());
        let spawned =
            std::thread::Builder::new().name("joule-rebalance".into()).spawn(move || run(&job_ctx, job_moves));
        if let Err(e) = spawned {
            let message = format!("cannot start the rebalance thread: {e}");
            ctx.rebalance.update(|j| {
                j.state = State::Failed(message.clone());
                j.finished = Some(Instant::now());
            });
            bail!(Unavailable, "{message}");
        }
    }
    Ok(Some(moves))
}

/// Tokens in `start..=end`.
fn span(start: i32, end: i32) -> u64 {
    (i64::from(end) - i64::from(start) + 1) as u64
}

/// The ranges a job moves, as `@Rebalance` answers them.
fn plan_table(moves: &[(i32, i32, u32)]) -> ResultTable {
    let col = |name: &str, t| OutputColumn { name: name.to_string(), data_type: Some(t) };
    let columns = vec![
        col("FIRST_TOKEN", DataType::BigInt),
        col("LAST_TOKEN", DataType::BigInt),
        col("PARTITION_ID", DataType::Integer),
    ];
    let rows = moves
        .iter()
        .map(|(s, e, p)| {
            vec![Value::Integer(i64::from(*s)), Value::Integer(i64::from(*e)), Value::Integer(i64::from(*p))]
        })
        .collect();
    ResultTable::new(columns.into(), rows)
}

/// The job: every range, piece by piece.
fn run(ctx: &Arc<ServerContext>, moves: Vec<(i32, i32, u32)>) {
    let mut client = ctx.host.client();
    let elastic = ctx.config.elastic.clone();
    let mut governor = Governor::new(elastic.target_p99, elastic.busy_percent);
    let mut piece = FIRST_PIECE_TOKENS;
    // The quickest move so far: what a move costs whatever it carries.
    let mut floor = Duration::MAX;
    // A panic (a bug) still ends the job and drops the token indexes,
    // rather than leave it RUNNING for good.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> std::result::Result<State, Error> {
        // The partitions giving rows up index them by token first, a step
        // at a time (built inside the first piece, the index held the
        // partition for up to a second).
        let ring = ctx.host.hashinator();
        let sources: std::collections::BTreeSet<u32> =
            moves.iter().flat_map(|(s, e, to)| ring.owners_of(*s, *e).into_iter().filter(move |p| p != to)).collect();
        // Throttled, one partition at a time; unthrottled, all of them in
        // each step, side by side.
        let groups: Vec<Vec<u32>> = if elastic.throughput_bytes == 0 {
            vec![sources.into_iter().collect()]
        } else {
            sources.into_iter().map(|p| vec![p]).collect()
        };
        for group in groups.iter().filter(|g| !g.is_empty()) {
            if !index_partitions(ctx, &mut client, group, &elastic, &mut governor)? {
                return Ok(State::Stopped);
            }
        }
        // Throttled, one range at a time; unthrottled, a piece takes the
        // next span of every lane (the ranges of one giving partition) at
        // once, so the partitions involved evict and admit side by side.
        let mut lanes = lanes(&ring, &moves, elastic.throughput_bytes == 0);
        loop {
            if ctx.rebalance.stop.load(Ordering::SeqCst) || *ctx.shutdown.borrow() {
                return Ok(State::Stopped);
            }
            let ranges: Vec<(i32, i32, u32)> = lanes
                .iter()
                .filter_map(|lane| {
                    let (at, end, to) = *lane.front()?;
                    Some((at, (i64::from(at) + piece as i64 - 1).min(i64::from(end)) as i32, to))
                })
                .collect();
            if ranges.is_empty() {
                break;
            }
            let began = Instant::now();
            let r = retried(ctx, || client.move_ranges_piece(&ranges));
            let took = began.elapsed();
            if let Some(e) = r.error {
                return Err(e);
            }
            let moved = |i: usize| -> u64 {
                let rows = r.results.first().map(|t| t.rows.as_slice()).unwrap_or_default();
                rows.iter()
                    .map(|row| if let Some(Value::Integer(n)) = row.get(i) { (*n).max(0) as u64 } else { 0 })
                    .sum()
            };
            let (rows, bytes) = (moved(3), moved(4));
            ctx.rebalance.update(|j| {
                j.moved_tokens += ranges.iter().map(|(s, e, _)| span(*s, *e)).sum::<u64>();
                j.moved_rows += rows;
                j.moved_bytes += bytes;
                j.calls += 1;
                j.calls_time += took;
            });
            floor = floor.min(took);
            piece = next_piece(piece, rows / ranges.len() as u64, took, floor, elastic.duration);
            // And keep under the throughput (a piece of `bytes` earns
            // bytes / throughput seconds) and the share of busy time.
            if elastic.throughput_bytes > 0 {
                let share = governed(ctx, &mut governor);
                pause(ctx, rest_after(took, bytes, elastic.throughput_bytes, share));
            }
            for lane in &mut lanes {
                let Some(front) = lane.front_mut() else { continue };
                let last = (i64::from(front.0) + piece_taken(&ranges, front.0)) - 1;
                if last >= i64::from(front.1) {
                    lane.pop_front();
                } else {
                    front.0 = (last + 1) as i32;
                }
            }
        }
        Ok(State::Done)
    }))
    .unwrap_or_else(|_| Err(joule_common::err!(Internal, "the rebalance stopped on an internal error (a panic)")));
    let forgot = client.forget_tokens();
    if let Some(e) = forgot.error {
        eprintln!("joule: rebalance: the token indexes were not dropped (the next rebalance's end drops them): {e}");
    }
    let state = outcome.unwrap_or_else(|e| State::Failed(e.to_string()));
    let text = match &state {
        State::Done => "rebalance done".to_string(),
        State::Stopped => "rebalance stopped".to_string(),
        State::Failed(e) => format!("rebalance failed: {e}"),
        State::Running => String::new(),
    };
    ctx.rebalance.update(|j| {
        j.state = state;
        j.finished = Some(Instant::now());
    });
    let figures = ctx.rebalance.job.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if let Some(j) = figures {
        let (lowest, cap) = governor.range();
        let paced = match elastic.target_p99 {
            Some(target) if lowest < cap => format!(
                " (moves ran {lowest:.1}–{cap:.0} % of the time to keep the calls' p99 under {} ms)",
                target.as_secs_f64() * 1000.0
            ),
            _ => String::new(),
        };
        ctx.event(format!("{text}: {} row(s), {} byte(s) in {} move(s){paced}", j.moved_rows, j.moved_bytes, j.calls));
    }
}

/// The ranges of `moves` in lanes: unless `parallel`, one lane of all of
/// them in order; else one lane per partition giving tokens up (each range
/// cut where `current` changes owner), in token order.
fn lanes(current: &Hashinator, moves: &[(i32, i32, u32)], parallel: bool) -> Vec<VecDeque<(i32, i32, u32)>> {
    if !parallel {
        return vec![moves.iter().copied().collect()];
    }
    let mut by_source: BTreeMap<u32, VecDeque<(i32, i32, u32)>> = BTreeMap::new();
    for &(start, end, to) in moves {
        let mut at = start;
        loop {
            // Up to the next token where the current ring changes owner.
            let cut = current.ring().iter().map(|(t, _)| *t).find(|t| *t > at && *t <= end);
            let last = cut.map_or(end, |t| t - 1);
            by_source.entry(current.partition_for_token(at)).or_default().push_back((at, last, to));
            match cut {
                Some(t) => at = t,
                None => break,
            }
        }
    }
    by_source.into_values().collect()
}

/// The span a piece of `ranges` took from the lane whose front range
/// starts at `start`.
fn piece_taken(ranges: &[(i32, i32, u32)], start: i32) -> i64 {
    ranges.iter().find(|(s, _, _)| *s == start).map_or(0, |(s, e, _)| i64::from(*e) - i64::from(*s) + 1)
}

/// The first step's row ids (later ones are sized like pieces, by their
/// time).
const FIRST_INDEX_STEP: u64 = 16 * 1024;

/// Build the token indexes of `partitions` a step at a time (each step
/// on all of them at once), resting between steps as between pieces:
/// `false` if the job was stopped first.
fn index_partitions(
    ctx: &Arc<ServerContext>,
    client: &mut joule_txn::Client,
    partitions: &[u32],
    elastic: &ElasticConfig,
    governor: &mut Governor,
) -> std::result::Result<bool, Error> {
    let mut step = FIRST_INDEX_STEP;
    let mut floor = Duration::MAX;
    loop {
        if ctx.rebalance.stop.load(Ordering::SeqCst) || *ctx.shutdown.borrow() {
            return Ok(false);
        }
        let began = Instant::now();
        let r = retried(ctx, || client.index_tokens(partitions, step));
        let took = began.elapsed();
        if let Some(e) = r.error {
            return Err(e);
        }
        let left = match r.results.first().and_then(|t| t.rows.first()).and_then(|row| row.first()) {
            Some(Value::Integer(n)) => *n,
            _ => bail!(Internal, "@IndexTokens answered no ROWS_LEFT"),
        };
        if left <= 0 {
            return Ok(true);
        }
        floor = floor.min(took);
        step = next_piece(step, step, took, floor, elastic.duration).clamp(1024, 1 << 22);
        if elastic.throughput_bytes > 0 {
            let share = governed(ctx, governor);
            pause(ctx, rest_after(took, 0, elastic.throughput_bytes, share));
        }
    }
}

/// How long a piece is tried again while the cluster fails over (a host
/// died: its partitions' new leaders repair, a new coordinator resolves).
const PIECE_PATIENCE: Duration = Duration::from_secs(30);

/// Call `call` (a piece, or a step of indexing) until its answer is other
/// than `Unavailable` or `OutcomeUnknown` (in a cluster, while a failed
/// host's work moves to others), for [`PIECE_PATIENCE`] at most. Trying a
/// piece again is safe even if it moved: moving tokens to the partition
/// that owns them moves nothing.
fn retried(ctx: &ServerContext, mut call: impl FnMut() -> joule_txn::Response) -> joule_txn::Response {
    let deadline = Instant::now() + PIECE_PATIENCE;
    loop {
        let r = call();
        let retry = matches!(
            r.error.as_ref().map(|e| e.code()),
            Some(joule_common::ErrorCode::Unavailable | joule_common::ErrorCode::OutcomeUnknown)
        );
        if !retry || Instant::now() > deadline || ctx.rebalance.stop.load(Ordering::SeqCst) || *ctx.shutdown.borrow() {
            return r;
        }
        pause(ctx, Duration::from_millis(200));
    }
}

/// The next piece's span after one of `piece` tokens took `took`: scaled
/// so that the time spent moving rows — beyond `floor`, the quickest move
/// seen, which every move costs (on a cluster, the prepare and the ring's
/// record in the metadata) — comes to the configured duration; at most
/// halved or quadrupled at once (one slow piece, held up by a compaction or
/// a busy core, must not shrink the next ones to nothing). A piece that moved fewer than [`SMALL_PIECE_ROWS`] rows is
/// never shrunk, and at least doubled: its time was the fixed cost and the
/// wait behind the calls queued on its partitions, not its rows — under a
/// busy machine's varying waits, pieces sized by time alone shrank to one
/// token each and a rebalance crawled.
fn next_piece(piece: u64, rows: u64, took: Duration, floor: Duration, duration: Duration) -> u64 {
    let moving = took.saturating_sub(floor);
    let mut factor = (duration.as_secs_f64() / moving.as_secs_f64().max(1e-6)).clamp(0.5, 4.0);
    if rows < SMALL_PIECE_ROWS {
        factor = factor.max(2.0);
    }
    ((piece as f64 * factor) as u64).clamp(1, 1 << 32)
}

/// Rows below which a piece's time says little of its size: its time is
/// then mostly what every move costs and the wait behind the calls queued
/// on its partitions (250 rows are 1.5 ms of moving at 6 µs a row). Above
/// it pieces are sized by their time toward `duration_ms`. At 1000 rows,
/// pieces under a saturating load stayed at 1,000–1,400 rows and held
/// their partitions 13–15 ms on a cluster, three times `duration_ms`'s
/// default, which set the calls' p99 while ranges moved (see
/// docs/performance/elastic.md, "Scaling out and in").
const SMALL_PIECE_ROWS: u64 = 250;

/// How long the job rests after a piece of `bytes` that took `took`: long
/// enough to keep under `throughput_bytes` a second, and for the piece to
/// be `busy` percent of the time.
fn rest_after(took: Duration, bytes: u64, throughput_bytes: u64, busy: f64) -> Duration {
    let earned = Duration::from_secs_f64(bytes as f64 / throughput_bytes.max(1) as f64);
    let busy = busy.clamp(1.0, 100.0);
    let idle = took.mul_f64((100.0 - busy) / busy);
    earned.saturating_sub(took).max(idle)
}

/// The governor's share now, shown in `@Statistics REBALANCE`.
fn governed(ctx: &Arc<ServerContext>, governor: &mut Governor) -> f64 {
    let share = governor.share(ctx);
    let p99 = governor.last_p99();
    ctx.rebalance.update(|j| {
        j.share = share;
        j.load_p99 = p99;
    });
    share
}

/// Sleep up to `d`, waking early for a stop or a shutdown.
fn pause(ctx: &ServerContext, d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until && !ctx.rebalance.stop.load(Ordering::SeqCst) && !*ctx.shutdown.borrow() {
        std::thread::sleep((until - Instant::now()).min(Duration::from_millis(20)));
    }
}

/// `@Statistics REBALANCE`: the running or last job (no row before the first).
pub(crate) fn statistics(
    ctx: &ServerContext,
    host_cells: Vec<Value>,
    host_columns: &[(&'static str, DataType)],
) -> ResultTable {
    let columns: Vec<(&str, DataType)> = host_columns
        .iter()
        .copied()
        .chain([
            ("STATUS", DataType::Varchar),
            ("TOTAL_RANGES", DataType::Integer),
            ("PERCENTAGE_MOVED", DataType::Float),
            ("MOVED_ROWS", DataType::BigInt),
            ("MOVED_BYTES", DataType::BigInt),
            ("ROWS_PER_SECOND", DataType::Float),
            ("MEGABYTES_PER_SECOND", DataType::Float),
            ("ESTIMATED_REMAINING", DataType::BigInt),
            ("CALLS", DataType::BigInt),
            ("CALLS_PER_SECOND", DataType::Float),
            ("CALLS_LATENCY", DataType::Float),
            ("CALLS_TIME", DataType::BigInt),
            ("MESSAGE", DataType::Varchar),
            ("BUSY_PERCENT", DataType::Float),
            ("LOAD_P99", DataType::Float),
        ])
        .collect();
    let job = ctx.rebalance.job.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let rows = job.map_or_else(Vec::new, |j| {
        let elapsed = j.finished.unwrap_or_else(Instant::now).duration_since(j.started).as_secs_f64().max(1e-6);
        let fraction = if j.total_tokens == 0 { 1.0 } else { j.moved_tokens as f64 / j.total_tokens as f64 };
        // Milliseconds left at the pace so far (-1: not known yet).
        let remaining = match (&j.state, fraction > 0.0) {
            (State::Running, true) => ((elapsed / fraction - elapsed) * 1000.0) as i64,
            (State::Running, false) => -1,
            _ => 0,
        };
        let (status, message) = match &j.state {
            State::Running => ("RUNNING", String::new()),
            State::Done => ("DONE", String::new()),
            State::Stopped => ("STOPPED", String::new()),
            State::Failed(e) => ("FAILED", e.clone()),
        };
        let latency = if j.calls == 0 { 0.0 } else { j.calls_time.as_secs_f64() * 1000.0 / j.calls as f64 };
        vec![host_cells
            .into_iter()
            .chain([
                Value::from(status),
                Value::Integer(j.ranges as i64),
                Value::Float(fraction * 100.0),
                Value::Integer(j.moved_rows as i64),
                Value::Integer(j.moved_bytes as i64),
                Value::Float(j.moved_rows as f64 / elapsed),
                Value::Float(j.moved_bytes as f64 / (1 << 20) as f64 / elapsed),
                Value::Integer(remaining),
                Value::Integer(j.calls as i64),
                Value::Float(j.calls as f64 / elapsed),
                Value::Float(latency),
                Value::Integer(j.calls_time.as_millis() as i64),
                Value::from(message.as_str()),
                Value::Float(j.share),
                Value::Float(j.load_p99.map_or(-1.0, |d| d.as_secs_f64() * 1000.0)),
            ])
            .collect()]
    });
    let columns =
        columns.iter().map(|(n, t)| OutputColumn { name: n.to_string(), data_type: Some(*t) }).collect::<Vec<_>>();
    ResultTable::new(columns.into(), rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_aim_at_the_duration() {
        let ms = Duration::from_millis;
        // Quick moves: the span grows, four times at most per step.
        assert_eq!(next_piece(1000, 5000, ms(1), ms(0), ms(50)), 4000);
        assert_eq!(next_piece(1000, 5000, ms(25), ms(0), ms(50)), 2000);
        assert_eq!(next_piece(1000, 5000, ms(50), ms(0), ms(50)), 1000);
        // A slow one halves it at most.
        assert_eq!(next_piece(1000, 5000, ms(500), ms(0), ms(50)), 500);
        assert_eq!(next_piece(1, 5000, ms(500), ms(0), ms(50)), 1, "never below one token");
        assert_eq!(next_piece(1 << 32, 5000, ms(1), ms(0), ms(50)), 1 << 32, "never past the ring");
        // What every move costs (a cluster's commit) does not count.
        assert_eq!(next_piece(1000, 5000, ms(30), ms(20), ms(5)), 500);
        assert_eq!(next_piece(1000, 5000, ms(21), ms(20), ms(5)), 4000);
        assert_eq!(next_piece(1000, 5000, ms(25), ms(20), ms(5)), 1000);
        // A piece of few rows: slow or not, the next one is bigger.
        assert_eq!(next_piece(1000, 10, ms(500), ms(0), ms(5)), 2000);
        // A few hundred rows are enough to size by: a slow piece of 500
        // shrinks (under load, pieces follow `duration_ms` down to there).
        assert_eq!(next_piece(1000, 500, ms(30), ms(20), ms(5)), 500);
        assert_eq!(next_piece(1000, SMALL_PIECE_ROWS - 1, ms(30), ms(20), ms(5)), 2000);
        assert_eq!(next_piece(1000, 0, ms(1), ms(0), ms(5)), 4000);
    }

    #[test]
    fn unthrottled_moves_run_in_a_lane_per_giving_partition() {
        let current = Hashinator::even(4, 1).unwrap();
        let quarter = 1i64 << 30;
        let at = |q: i64| (i64::from(i32::MIN) + q * quarter) as i32;
        // The upper half of partition 0's quarter and all of partition 1's
        // to partition 2; the lower half of partition 3's to partition 2.
        let moves = vec![(at(0) + (1 << 29), at(2) - 1, 2), (at(3), at(3) + (1 << 29) - 1, 2)];
        assert_eq!(
            lanes(&current, &moves, true),
            vec![
                VecDeque::from([(at(0) + (1 << 29), at(1) - 1, 2)]),
                VecDeque::from([(at(1), at(2) - 1, 2)]),
                VecDeque::from([(at(3), at(3) + (1 << 29) - 1, 2)]),
            ]
        );
        // Throttled: one lane, the moves as they are.
        assert_eq!(lanes(&current, &moves, false), vec![VecDeque::from(moves.clone())]);
        // The ring's last token ends a lane too.
        let last = vec![(at(3), i32::MAX, 0)];
        assert_eq!(lanes(&current, &last, true), vec![VecDeque::from(last.clone())]);
        // What a piece took from the lane whose front starts at a token.
        assert_eq!(piece_taken(&[(10, 19, 0), (40, 40, 1)], 40), 1);
        assert_eq!(piece_taken(&[(10, 19, 0)], 10), 10);
        assert_eq!(piece_taken(&[(10, 19, 0)], 11), 0);
    }

    #[test]
    fn the_job_rests_for_the_throughput_and_the_share_of_busy_time() {
        let ms = Duration::from_millis;
        let mb = 1 << 20;
        // 512 KiB at 1 MiB/s earn half a second; the piece took 100 ms.
        assert_eq!(rest_after(ms(100), 1 << 19, mb, 25.0), ms(400));
        // A small piece on a cluster: 1 KiB earns 1 ms, but 10 ms busy at
        // 25 % asks for 30 ms of rest.
        assert_eq!(rest_after(ms(10), 1 << 10, mb, 25.0), ms(30));
        assert_eq!(rest_after(ms(10), 0, mb, 25.0), ms(30), "an empty piece held the partitions too");
        assert_eq!(rest_after(ms(10), 0, mb, 100.0), ms(0));
        // The governor's halved share: twice the rest and more.
        assert_eq!(rest_after(ms(10), 0, mb, 12.5), ms(70));
    }
}
