//! `joule bench`: load a running node with a workload and report
//! throughput and latency.
//!
//! Three ways to drive it:
//!
//! * pipelined (default): `--in-flight` calls kept in flight over
//!   `--connections` connections with `Client::call_with` — each answer's
//!   callback records the latency and sends the next call;
//! * `--sync`: `--clients` connections, each with one call outstanding,
//!   served by `--threads` threads (`PolledConnections`: a thread sends a
//!   connection's next call as soon as its answer arrives) — as
//!   `pgbench -c CLIENTS -j THREADS` drives its clients;
//! * `--rate R`: calls sent on a fixed schedule (R per second), each
//!   call's latency measured from when it *should* have been sent, so a
//!   stalled server shows up as the latency its callers would see
//!   (corrected for coordinated omission).
//!
//! A progress bar runs on a terminal; a line every `--report-every`
//! seconds gives the figures so far; at the end, a report (or with
//! `--json`, one JSON object: `tps`, `latency_ms` with `p50`, `p95`,
//! `p99`, `p999`, `max`, `calls`, `errors` by status, `first_errors`: each status's first message). TPS and latency
//! count successful calls only; failures are counted by status.
//!
//! `--phase-file PATH` splits the figures by what the cluster was doing: a
//! script writes a label into PATH (`steady`, `rebalancing`, ...) as it
//! changes the cluster, the bench reads it every 100 ms, and the report
//! ends with each label's calls, TPS and latency percentiles (with `--json`,
//! `phases`: per label, `seconds`, `calls`, `tps` and `latency_ms`), taken
//! from one histogram per label (a p99 over all the calls of a phase, not a
//! figure per second). A call counts under the label read before its
//! answer came.

mod workloads;

use hdrhistogram::Histogram;
use joule_client::{BlockingClient, Client, Options, PolledConnections};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use workloads::{KeyValue, Tpcb, Voter, Workload};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// voter, kv or tpcb.
    #[arg(value_parser = ["voter", "kv", "tpcb"])]
    workload: String,
    /// Servers (`host:port`, comma-separated).
    #[arg(long, default_value = "localhost:21212")]
    servers: String,
    /// Seconds measured (after the warm-up).
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Seconds run before measuring.
    #[arg(long, default_value_t = 5.0)]
    warmup: f64,
    /// Connections per server.
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Pipelined mode: calls kept in flight.
    #[arg(long, default_value_t = 128)]
    in_flight: usize,
    /// Calls per second on a fixed schedule (latency corrected for
    /// coordinated omission).
    #[arg(long)]
    rate: Option<f64>,
    /// Synchronous clients: one outstanding call per client.
    #[arg(long)]
    sync: bool,
    /// Threads for --sync (each serves its share of the clients).
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// Clients (connections) for --sync; default: one per thread.
    #[arg(long)]
    clients: Option<usize>,
    /// kv: the YCSB mix (a, b or c).
    #[arg(long, default_value = "a")]
    mix: char,
    /// kv: records.
    #[arg(long, default_value_t = 100_000)]
    records: u64,
    /// tpcb: scale factor (as pgbench -s).
    #[arg(long, default_value_t = 1)]
    scale: i64,
    /// tpcb: draw the teller and account within the drawn branch (always
    /// single-partition) instead of uniformly over all, as pgbench does.
    #[arg(long)]
    local_keys: bool,
    /// Seconds between progress lines (each gives the figures of its
    /// own interval).
    #[arg(long, default_value_t = 5.0)]
    report_every: f64,
    #[arg(long, default_value = "")]
    user: String,
    #[arg(long, default_value = "")]
    password: String,
    /// Print one JSON object instead of the report.
    #[arg(long)]
    json: bool,
    /// A file holding the current phase's label (re-read every 100 ms):
    /// the report gives the figures of each label apart.
    #[arg(long)]
    phase_file: Option<std::path::PathBuf>,
}

struct Latency {
    whole: Histogram<u64>,
    interval: Histogram<u64>,
    /// Since the phase file was last read (`None`: no `--phase-file`).
    phase: Option<Histogram<u64>>,
}

/// The calls of each phase (see `--phase-file`): a histogram and the
/// seconds spent under each label.
struct Phases {
    file: std::path::PathBuf,
    label: String,
    since: Instant,
    by_label: BTreeMap<String, (Histogram<u64>, f64)>,
}

impl Phases {
    fn new(file: std::path::PathBuf) -> Self {
        let label = Self::read(&file);
        Phases { file, label, since: Instant::now(), by_label: BTreeMap::new() }
    }

    /// The label in `file`: its first line, trimmed ("unlabelled" if the
    /// file is missing or empty).
    fn read(file: &std::path::Path) -> String {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        match text.lines().next().map(str::trim) {
            Some(label) if !label.is_empty() => label.to_string(),
            _ => "unlabelled".to_string(),
        }
    }

    /// Count the calls since the last turn under the label they ran
    /// under, then read the label again.
    fn turn(&mut self, tally: &Tally) {
        let calls = tally.latency.lock().unwrap_or_else(|e| e.into_inner()).phase.replace(new_histogram());
        let entry = self.by_label.entry(self.label.clone()).or_insert_with(|| (new_histogram(), 0.0));
        if let Some(calls) = calls {
            let _ = entry.0.add(&calls);
        }
        entry.1 += self.since.elapsed().as_secs_f64();
        self.since = Instant::now();
        self.label = Self::read(&self.file);
    }
}

fn new_histogram() -> Histogram<u64> {
    joule_txn::stats::new_histogram()
}

/// A latency summary in milliseconds: p50, p95, p99, p99.9 and max.
fn percentiles(h: &Histogram<u64>) -> [f64; 5] {
    let ms = |v: u64| v as f64 / 1000.0;
    let q = |q: f64| ms(h.value_at_quantile(q));
    [q(0.5), q(0.95), q(0.99), q(0.999), ms(h.max())]
}

/// What the calls measured so far.
struct Tally {
    /// Latency over the whole run, and since the last progress line.
    latency: Mutex<Latency>,
    calls: AtomicU64,
    /// Failed calls by status: how many, and the first one's message
    /// (what an operator needs to tell one cause of a status from another).
    errors: Mutex<BTreeMap<String, (u64, String)>>,
    /// Counting starts once the warm-up is over.
    measuring: AtomicBool,
    stop: AtomicBool,
}

impl Tally {
    /// Count a finished call: successes give TPS and latency; failures are
    /// counted by status only (a fast "unavailable" must not look fast).
    fn record(&self, micros: u64, result: &joule_common::Result<joule_client::Response>) {
        if !self.measuring.load(Ordering::Relaxed) {
            return;
        }
        match result {
            Ok(_) => {
                let mut latency = self.latency.lock().unwrap_or_else(|e| e.into_inner());
                // Checked again under the lock: a call counted is in every
                // histogram, the last phase's too (taken after measuring ends).
                if !self.measuring.load(Ordering::SeqCst) {
                    return;
                }
                self.calls.fetch_add(1, Ordering::Relaxed);
                let _ = latency.whole.record(micros.max(1));
                let _ = latency.interval.record(micros.max(1));
                if let Some(phase) = &mut latency.phase {
                    let _ = phase.record(micros.max(1));
                }
            }
            Err(e) => {
                let key = format!("J{} {:?}", e.code().number(), e.code());
                let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
                errors.entry(key).or_insert_with(|| (0, e.to_string())).0 += 1;
            }
        }
    }
}

pub fn run(args: BenchArgs) -> ExitCode {
    match bench(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bench(args: BenchArgs) -> joule_common::Result<()> {
    let workload: Arc<dyn Workload> = match args.workload.as_str() {
        "voter" => Arc::new(Voter::new()),
        "kv" => Arc::new(KeyValue::new(args.mix, args.records)?),
        _ => Arc::new(Tpcb::new(args.scale, args.local_keys)),
    };
    let servers: Vec<&str> = args.servers.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    let options = Options {
        user: args.user.clone(),
        password: args.password.clone(),
        connections_per_address: args.connections.max(1),
        ..Default::default()
    };
    let setup = BlockingClient::connect(&servers, options.clone())?;
    if !args.json {
        eprintln!("joule bench: {} on {}: creating the schema and data if absent", workload.name(), args.servers);
    }
    let t = Instant::now();
    workload.setup(&setup)?;
    if !args.json {
        eprintln!("joule bench: ready in {:.1} s", t.elapsed().as_secs_f64());
    }
    let tally = Arc::new(Tally {
        latency: Mutex::new(Latency {
            whole: new_histogram(),
            interval: new_histogram(),
            phase: args.phase_file.as_ref().map(|_| new_histogram()),
        }),
        calls: AtomicU64::new(0),
        errors: Mutex::default(),
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
    });
    let drivers = start_drivers(&args, &servers, options, workload.clone(), tally.clone())?;
    // Warm-up, then measure with a progress bar and periodic lines.
    std::thread::sleep(Duration::from_secs_f64(args.warmup.max(0.0)));
    tally.measuring.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let mut phases = args.phase_file.clone().map(Phases::new);
    let bar = (!args.json).then(|| {
        let bar = indicatif::ProgressBar::new((args.duration * 10.0) as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {elapsed}/{duration} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut last_report = Instant::now();
    let mut last_calls = 0;
    while started.elapsed().as_secs_f64() < args.duration {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(phases) = &mut phases {
            phases.turn(&tally);
        }
        let calls = tally.calls.load(Ordering::Relaxed);
        if let Some(bar) = &bar {
            bar.set_position((started.elapsed().as_secs_f64() * 10.0) as u64);
            bar.set_message(format!("{} calls", calls));
        }
        if last_report.elapsed().as_secs_f64() >= args.report_every {
            let h = std::mem::replace(
                &mut tally.latency.lock().unwrap_or_else(|e| e.into_inner()).interval,
                new_histogram(),
            );
            let line = format!(
                "{:>6.1} s: {:>9.0} TPS, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
                started.elapsed().as_secs_f64(),
                (calls - last_calls) as f64 / last_report.elapsed().as_secs_f64(),
                h.value_at_quantile(0.5) as f64 / 1000.0,
                h.value_at_quantile(0.99) as f64 / 1000.0,
                h.max() as f64 / 1000.0
            );
            match &bar {
                Some(bar) if !bar.is_hidden() => bar.println(line),
                _ => eprintln!("{line}"),
            }
            last_report = Instant::now();
            last_calls = calls;
        }
    }
    tally.measuring.store(false, Ordering::SeqCst);
    let seconds = started.elapsed().as_secs_f64();
    if let Some(phases) = &mut phases {
        phases.turn(&tally);
    }
    tally.stop.store(true, Ordering::SeqCst);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    for d in drivers {
        let _ = d.join();
    }
    let phases = phases.map(|p| p.by_label).unwrap_or_default();
    report(&args, &*workload, &tally, seconds, &phases);
    Ok(())
}

/// Start the threads (or callback chains) that make the calls.
fn start_drivers(
    args: &BenchArgs,
    servers: &[&str],
    options: Options,
    workload: Arc<dyn Workload>,
    tally: Arc<Tally>,
) -> joule_common::Result<Vec<std::thread::JoinHandle<()>>> {
    let mut threads = Vec::new();
    if args.sync {
        let threads_n = args.threads.max(1);
        let clients = args.clients.unwrap_or(threads_n).max(1);
        for t in 0..threads_n.min(clients) {
            // This thread's share of the clients, servers in turn.
            let mine: Vec<&str> = (t..clients).step_by(threads_n).map(|i| servers[i % servers.len()]).collect();
            let options = Options { connections_per_address: 1, ..options.clone() };
            let mut connections = PolledConnections::connect(&mine, &options)?;
            let (workload, tally) = (workload.clone(), tally.clone());
            threads.push(std::thread::spawn(move || drive_sync(&mut connections, &*workload, &tally)));
        }
        return Ok(threads);
    }
    let client = BlockingClient::connect(servers, options)?;
    let async_client = client.client().clone();
    match args.rate {
        Some(rate) => {
            let rate = rate.max(1.0);
            threads.push(std::thread::spawn(move || {
                let _keep = client;
                let start = Instant::now();
                let mut i: u64 = 0;
                while !tally.stop.load(Ordering::Relaxed) {
                    let due = start + Duration::from_secs_f64(i as f64 / rate);
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    let (procedure, params) = workload.next_call();
                    let t = tally.clone();
                    // Latency from the scheduled time, not the send time.
                    let sent = async_client.call_with(procedure, params, move |r| {
                        t.record(due.elapsed().as_micros() as u64, &r);
                    });
                    if sent.is_err() {
                        break;
                    }
                    i += 1;
                }
                // Let the last calls come back.
                std::thread::sleep(Duration::from_millis(200));
            }));
        }
        None => {
            for _ in 0..args.in_flight.max(1) {
                issue(async_client.clone(), workload.clone(), tally.clone());
            }
            threads.push(std::thread::spawn(move || {
                let _keep = client;
                while !tally.stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                std::thread::sleep(Duration::from_millis(200));
            }));
        }
    }
    Ok(threads)
}

/// Keep one call outstanding on each of `connections` until told to stop.
fn drive_sync(connections: &mut PolledConnections, workload: &dyn Workload, tally: &Tally) {
    let mut sent_at = vec![Instant::now(); connections.len()];
    let mut live = connections.len();
    let send = |connections: &mut PolledConnections, i: usize, sent_at: &mut [Instant]| -> bool {
        let (procedure, params) = workload.next_call();
        sent_at[i] = Instant::now();
        match connections.send(i, procedure, params) {
            Ok(()) => true,
            Err(e) => {
                eprintln!("joule bench: a connection stopped: {e}");
                false
            }
        }
    };
    for i in 0..connections.len() {
        if !send(connections, i, &mut sent_at) {
            live -= 1;
        }
    }
    let mut answered = Vec::with_capacity(connections.len());
    while live > 0 && !tally.stop.load(Ordering::Relaxed) {
        let polled = connections.poll(Some(Duration::from_millis(100)), |i, r| {
            tally.record(sent_at[i].elapsed().as_micros() as u64, &r);
            let lost = r.as_ref().is_err_and(|e| {
                matches!(e.code(), joule_common::ErrorCode::Unavailable | joule_common::ErrorCode::OutcomeUnknown)
            });
            answered.push((i, lost));
        });
        if let Err(e) = polled {
            eprintln!("joule bench: {e}");
            return;
        }
        for (i, lost) in answered.drain(..) {
            // A lost connection (or a server refusing calls) stops that client.
            if lost || !send(connections, i, &mut sent_at) {
                if lost {
                    eprintln!("joule bench: a connection stopped (unavailable)");
                }
                live -= 1;
            }
        }
    }
}

/// One call whose callback records it and makes the next.
fn issue(client: Client, workload: Arc<dyn Workload>, tally: Arc<Tally>) {
    if tally.stop.load(Ordering::Relaxed) {
        return;
    }
    let (procedure, params) = workload.next_call();
    let t = Instant::now();
    let next = client.clone();
    let sent = client.call_with(procedure, params, move |r| {
        tally.record(t.elapsed().as_micros() as u64, &r);
        issue(next, workload, tally);
    });
    if let Err(e) = sent {
        eprintln!("joule bench: a call could not be sent: {e}");
    }
}

fn report(
    args: &BenchArgs,
    workload: &dyn Workload,
    tally: &Tally,
    seconds: f64,
    phases: &BTreeMap<String, (Histogram<u64>, f64)>,
) {
    let h = tally.latency.lock().unwrap_or_else(|e| e.into_inner()).whole.clone();
    let calls = tally.calls.load(Ordering::Relaxed);
    let errors = tally.errors.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let [p50, p95, p99, p999, max] = percentiles(&h);
    let tps = calls as f64 / seconds;
    let phase_tps = |h: &Histogram<u64>, secs: f64| if secs > 0.0 { h.len() as f64 / secs } else { 0.0 };
    let mode = match (args.sync, args.rate) {
        (true, _) => {
            let clients = args.clients.unwrap_or(args.threads).max(1);
            format!("sync, {clients} clients on {} threads", args.threads.max(1).min(clients))
        }
        (false, Some(r)) => format!("fixed rate {r}/s"),
        (false, None) => format!("pipelined, {} in flight", args.in_flight),
    };
    if args.json {
        let object = serde_json::json!({
            "workload": workload.name(),
            "mode": mode,
            "seconds": seconds,
            "tps": tps,
            "calls": calls,
            "latency_ms": { "p50": p50, "p95": p95, "p99": p99, "p999": p999, "max": max },
            "errors": errors.iter().map(|(status, (n, _))| (status.clone(), *n)).collect::<BTreeMap<_, _>>(),
            "first_errors": errors.iter().map(|(status, (_, first))| (status.clone(), first.clone())).collect::<BTreeMap<_, _>>(),
            "phases": phases.iter().map(|(label, (h, secs))| {
                let [p50, p95, p99, p999, max] = percentiles(h);
                (label.clone(), serde_json::json!({
                    "seconds": secs, "calls": h.len(), "tps": phase_tps(h, *secs),
                    "latency_ms": { "p50": p50, "p95": p95, "p99": p99, "p999": p999, "max": max },
                }))
            }).collect::<BTreeMap<_, _>>(),
        });
        println!("{object}");
        return;
    }
    println!("{} ({mode}) over {seconds:.1} s: {calls} calls, {tps:.0} TPS", workload.name());
    println!("latency ms: p50 {p50:.3}  p95 {p95:.3}  p99 {p99:.3}  p99.9 {p999:.3}  max {max:.3}");
    if errors.is_empty() {
        println!("errors: none");
    }
    for (status, (n, first)) in errors {
        println!("errors: {n} x {status} (the first: {first})");
    }
    for (label, (h, secs)) in phases {
        let [p50, p95, p99, p999, max] = percentiles(h);
        println!(
            "phase {label}: {} calls over {secs:.1} s, {:.0} TPS; latency ms: p50 {p50:.3}  p95 {p95:.3}  p99 {p99:.3}  \
             p99.9 {p999:.3}  max {max:.3}",
            h.len(),
            phase_tps(h, *secs)
        );
    }
}
