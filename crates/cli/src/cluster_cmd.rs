//! `joule cluster remove`: take hosts out of a running cluster
//! (`@ElasticRemove` on a host's admin port), then follow until they have
//! left and shut down. Hosts holding every copy of the cluster's last
//! partitions and nothing else (the k+1 added last) leave with those
//! partitions: ranges drain off them to the others, and they leave the
//! transaction order. Any other hosts leave by having their copies made
//! again on the hosts that stay (`joule_cluster`'s `copies`); the node
//! refuses a removal that would leave fewer than k+1 hosts.

use crate::snapshot_cmd::Target;
use joule_client::BlockingClient;
use joule_common::Value;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(clap::Subcommand)]
pub enum ClusterCommand {
    /// Drain hosts' partitions to the others and retire the hosts, online.
    /// Connect to a host that stays.
    Remove(RemoveArgs),
}

#[derive(clap::Args)]
pub struct RemoveArgs {
    #[command(flatten)]
    target: Target,
    /// Ids of the hosts to remove (`joule status` lists them).
    #[arg(required_unless_present = "cancel")]
    hosts: Vec<u64>,
    /// Give up the removal under way (ranges moved so far stay moved).
    #[arg(long, conflicts_with = "hosts")]
    cancel: bool,
    /// Return once the removal has started instead of following it.
    #[arg(long)]
    no_wait: bool,
}

pub fn run(command: ClusterCommand) -> ExitCode {
    match command {
        ClusterCommand::Remove(args) => remove(args),
    }
}

fn remove(args: RemoveArgs) -> ExitCode {
    let Some(client) = args.target.connect() else { return ExitCode::FAILURE };
    let params = if args.cancel {
        vec![Value::from("CANCEL")]
    } else {
        args.hosts.iter().map(|h| Value::Integer(*h as i64)).collect()
    };
    if let Err(e) = client.call("@ElasticRemove", params) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    if args.cancel {
        println!(
            "the removal was cancelled; ranges moved so far stay where they went (@Rebalance spreads them), and \
             copies being made finish as extra copies"
        );
        return ExitCode::SUCCESS;
    }
    println!(
        "removing hosts {:?}: their partitions drain to the others (or their copies are made again there), then \
         the hosts leave",
        args.hosts
    );
    if args.no_wait {
        return ExitCode::SUCCESS;
    }
    let started = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        match remaining(&client, &args.hosts) {
            Ok(left) if left.is_empty() => {
                println!("hosts {:?} left the cluster in {:.1} s", args.hosts, started.elapsed().as_secs_f64());
                return ExitCode::SUCCESS;
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("error: following the removal: {e} (it goes on in the cluster; see `joule status`)");
                return ExitCode::FAILURE;
            }
        }
    }
}

/// Which of `hosts` the cluster still names (`@Statistics CLUSTER`).
fn remaining(client: &BlockingClient, hosts: &[u64]) -> joule_common::Result<Vec<u64>> {
    let r = client.call("@Statistics", vec![Value::from("CLUSTER"), Value::Integer(0)])?;
    let Some(table) = r.tables.first() else { return Ok(hosts.to_vec()) };
    let Some(id) = table.columns.iter().position(|(n, _)| n == "HOST_ID") else { return Ok(hosts.to_vec()) };
    let named: Vec<u64> = table
        .rows
        .iter()
        .filter_map(|row| match row.get(id) {
            Some(Value::Integer(h)) => Some(*h as u64),
            _ => None,
        })
        .collect();
    Ok(hosts.iter().copied().filter(|h| named.contains(h)).collect())
}
