//! The `joule` command.
//!
//! `joule start` will start a server node once the network layer lands; until
//! then it says so plainly and exits with a non-zero status. `joule sql`
//! runs SQL against an in-process, in-memory database: statements from
//! `--execute`, or from standard input (one script, `;`-separated), which is
//! handy for trying the engine from a shell.

use clap::{Parser, Subcommand};
use joule_engine::{Database, ExecResult};
use std::io::Read;
use std::process::ExitCode;

/// mimalloc: fast small allocations for rows and values (see
/// docs/performance.md for what it changes).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "joule", version, about = "JouleDB: an in-memory, partitioned, ACID SQL database")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a node (the network server is not built yet).
    Start,
    /// Run SQL against an in-process, in-memory database.
    Sql {
        /// SQL to run; without it, SQL is read from standard input.
        #[arg(short, long)]
        execute: Option<String>,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Start => {
            eprintln!(
                "joule start: not yet — the network server (VoltDB wire protocol on port 21212, HTTP on 8080) \
                 is not built yet. The SQL engine can be tried with `joule sql`."
            );
            ExitCode::from(2)
        }
        Command::Sql { execute } => {
            let sql = match execute {
                Some(s) => s,
                None => {
                    let mut s = String::new();
                    if let Err(e) = std::io::stdin().read_to_string(&mut s) {
                        eprintln!("error: cannot read standard input: {e}");
                        return ExitCode::FAILURE;
                    }
                    s
                }
            };
            run_script(&sql)
        }
    }
}

/// Run each statement, printing results; stop at the first error.
fn run_script(sql: &str) -> ExitCode {
    let mut db = Database::new();
    let statements = match joule_engine::split_statements(sql) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    for stmt in statements {
        match db.execute(&stmt) {
            Ok(ExecResult::Rows { columns, rows }) => {
                let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
                println!("{}", names.join("\t"));
                for r in &rows {
                    let vals: Vec<String> = r.iter().map(|v| v.to_string()).collect();
                    println!("{}", vals.join("\t"));
                }
                println!("({} row{})", rows.len(), if rows.len() == 1 { "" } else { "s" });
            }
            Ok(ExecResult::Modified(n)) => println!("({n} row{} affected)", if n == 1 { "" } else { "s" }),
            Ok(ExecResult::Done) => println!("OK"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
