//! `joule snapshot save|scan|restore|delete`: the snapshot system
//! procedures from the command line, against a running node's admin port
//! (saving, restoring and deleting need administrator rights).

use crate::shell::print_fixed;
use joule_client::{BlockingClient, Options};
use joule_common::Value;
use std::process::ExitCode;

/// Where and as whom to connect (also `joule rebalance`'s and `joule
/// cluster`'s).
#[derive(clap::Args)]
pub struct Target {
    /// The node's host.
    #[arg(long, default_value = "localhost")]
    pub host: String,
    /// Its admin port (snapshot changes and rebalancing need administrator
    /// rights).
    #[arg(long, default_value_t = 21211)]
    pub port: u16,
    #[arg(long, default_value = "")]
    pub user: String,
    #[arg(long, default_value = "")]
    pub password: String,
}

impl Target {
    /// Connect and log in, saying why on standard error if that fails.
    pub fn connect(&self) -> Option<BlockingClient> {
        let address = format!("{}:{}", self.host, self.port);
        let options = Options { user: self.user.clone(), password: self.password.clone(), ..Default::default() };
        match BlockingClient::connect(&[&address], options) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("error: cannot connect to {address}: {e}");
                None
            }
        }
    }
}

#[derive(clap::Subcommand)]
pub enum SnapshotCommand {
    /// Save a snapshot (@SnapshotSave).
    Save {
        #[command(flatten)]
        target: Target,
        /// Directory on the node [default: its data directory's snapshots/].
        #[arg(long, default_value = "")]
        dir: String,
        /// The snapshot's name [default: SNAPSHOT_<time>].
        #[arg(long)]
        nonce: Option<String>,
        /// Return once the files are written, not once the data is frozen.
        #[arg(long)]
        blocking: bool,
    },
    /// List the snapshots in a directory (@SnapshotScan).
    Scan {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value = "")]
        dir: String,
    },
    /// Load a snapshot's rows into the node's tables (@SnapshotRestore).
    Restore(Named),
    /// Delete a snapshot (@SnapshotDelete).
    Delete(Named),
}

/// One snapshot: where it is and its name.
#[derive(clap::Args)]
pub struct Named {
    #[command(flatten)]
    target: Target,
    /// Directory on the node [default: its data directory's snapshots/].
    #[arg(long, default_value = "")]
    dir: String,
    #[arg(long)]
    nonce: String,
}

pub fn run(command: SnapshotCommand) -> ExitCode {
    let (target, procedure, params) = match command {
        SnapshotCommand::Save { target, dir, nonce, blocking } => {
            let nonce = nonce.unwrap_or_else(|| {
                let ms =
                    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
                format!("SNAPSHOT_{ms}")
            });
            let params =
                vec![Value::from(dir.as_str()), Value::from(nonce.as_str()), Value::Integer(i64::from(blocking))];
            (target, "@SnapshotSave", params)
        }
        SnapshotCommand::Scan { target, dir } => (target, "@SnapshotScan", vec![Value::from(dir.as_str())]),
        SnapshotCommand::Restore(n) => (n.target, "@SnapshotRestore", vec![Value::from(n.dir), Value::from(n.nonce)]),
        SnapshotCommand::Delete(n) => (n.target, "@SnapshotDelete", vec![Value::from(n.dir), Value::from(n.nonce)]),
    };
    let Some(client) = target.connect() else { return ExitCode::FAILURE };
    match client.call(procedure, params) {
        Ok(r) => {
            print_fixed(&r.tables);
            let failed = r.tables.iter().flat_map(|t| {
                let at = t.columns.iter().position(|(n, _)| n == "RESULT");
                t.rows.iter().filter_map(move |row| at.map(|i| row[i] == Value::from("FAILURE")))
            });
            if failed.into_iter().any(|f| f) {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
