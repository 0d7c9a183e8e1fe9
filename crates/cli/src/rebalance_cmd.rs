//! `joule rebalance`: `@Rebalance` from the command line, against a running
//! node's admin port, following the job's progress (`@Statistics
//! REBALANCE`) with a progress bar until it ends.

use crate::shell::print_fixed;
use crate::snapshot_cmd::Target;
use joule_client::BlockingClient;
use joule_common::Value;
use std::process::ExitCode;
use std::time::Duration;

/// `joule rebalance` flags: what to move, or `--stop`.
#[derive(clap::Args)]
pub struct RebalanceArgs {
    #[command(flatten)]
    target: Target,
    /// The first ring token of the range to move (with --last and --to).
    #[arg(long, allow_hyphen_values = true, requires_all = ["last", "to"], conflicts_with_all = ["even", "stop"])]
    first: Option<i32>,
    /// The last ring token of the range to move.
    #[arg(long, allow_hyphen_values = true, requires = "first")]
    last: Option<i32>,
    /// The partition to give the range to.
    #[arg(long, requires = "first")]
    to: Option<u32>,
    /// Give every partition an even share of the ring, moving as few tokens
    /// as possible (the even ring itself after ranges moved off it).
    #[arg(long, conflicts_with = "stop")]
    even: bool,
    /// Stop the running rebalance after the piece in flight.
    #[arg(long)]
    stop: bool,
    /// Return once the rebalance has started instead of following it.
    #[arg(long)]
    no_wait: bool,
}

pub fn run(args: RebalanceArgs) -> ExitCode {
    let params = match (&args.first, args.last, args.to, args.even, args.stop) {
        (Some(first), Some(last), Some(to), false, false) => {
            vec![Value::Integer(i64::from(*first)), Value::Integer(i64::from(last)), Value::Integer(i64::from(to))]
        }
        (None, _, _, true, false) => Vec::new(),
        (None, _, _, false, true) => vec![Value::from("STOP")],
        _ => {
            eprintln!("error: give --first, --last and --to, or --even, or --stop");
            return ExitCode::FAILURE;
        }
    };
    let Some(client) = args.target.connect() else { return ExitCode::FAILURE };
    match client.call("@Rebalance", params) {
        Ok(_) if args.stop => {
            println!("stopping the rebalance after the piece in flight");
            ExitCode::SUCCESS
        }
        Ok(r) => {
            if r.tables.first().is_some_and(|t| t.rows.is_empty()) {
                println!("nothing to move: the ring is already as asked");
                return ExitCode::SUCCESS;
            }
            println!("moving:");
            print_fixed(&r.tables);
            if args.no_wait {
                return ExitCode::SUCCESS;
            }
            follow(&client)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One reading of `@Statistics REBALANCE`.
struct Progress {
    status: String,
    percent: f64,
    rows: i64,
    bytes: i64,
    message: String,
}

fn progress(client: &BlockingClient) -> joule_common::Result<Option<Progress>> {
    let r = client.call("@Statistics", vec![Value::from("REBALANCE"), Value::Integer(0)])?;
    let Some(table) = r.tables.first() else { return Ok(None) };
    let Some(row) = table.rows.first() else { return Ok(None) };
    let column = |name: &str| table.columns.iter().position(|(n, _)| n == name).and_then(|i| row.get(i));
    let text = |name: &str| match column(name) {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    let number = |name: &str| match column(name) {
        Some(Value::Float(f)) => *f,
        Some(Value::Integer(i)) => *i as f64,
        _ => 0.0,
    };
    Ok(Some(Progress {
        status: text("STATUS"),
        percent: number("PERCENTAGE_MOVED"),
        rows: number("MOVED_ROWS") as i64,
        bytes: number("MOVED_BYTES") as i64,
        message: text("MESSAGE"),
    }))
}

/// Show the running job's progress until it ends; its end is the exit code.
fn follow(client: &BlockingClient) -> ExitCode {
    let bar = indicatif::ProgressBar::new(1000);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {percent:>3}% {elapsed} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    loop {
        let now = match progress(client) {
            Ok(Some(p)) => p,
            Ok(None) => {
                bar.abandon();
                eprintln!("error: the node reports no rebalance");
                return ExitCode::FAILURE;
            }
            Err(e) => {
                bar.abandon();
                eprintln!("error: reading the progress: {e}");
                return ExitCode::FAILURE;
            }
        };
        let Progress { status, percent, rows, bytes, message } = now;
        bar.set_position((percent * 10.0) as u64);
        bar.set_message(format!("{rows} rows, {:.1} MB", bytes as f64 / 1048576.0));
        if status != "RUNNING" {
            bar.finish();
            println!("{status}: {rows} rows ({bytes} bytes) moved, {percent:.1} % of the tokens");
            return match status.as_str() {
                "DONE" => ExitCode::SUCCESS,
                _ => {
                    if !message.is_empty() {
                        eprintln!("error: {message}");
                    }
                    ExitCode::FAILURE
                }
            };
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
