//! `joule status`: the cluster as one of its hosts sees it — a summary
//! line (hosts up, k-factor, partitions, redundancy), then the hosts
//! (`@Statistics CLUSTER`) and every partition's copies and leader
//! (`@Statistics TOPO`); with the auto-scaler on, what it does and its last
//! decision (`@Statistics AUTOSCALER`).

use joule_common::Value;
use joule_wire::VoltTable;
use std::process::ExitCode;

/// Flags naming the node a command talks to (`joule status`, `joule advise`).
#[derive(clap::Args)]
pub struct NodeArgs {
    /// The node, or a host of the cluster (`host:port` of its client port).
    #[arg(long, default_value = "localhost:21212")]
    servers: String,
    #[arg(long, default_value = "")]
    user: String,
    #[arg(long, default_value = "")]
    password: String,
}

impl NodeArgs {
    /// Connect and log in, saying why on standard error if that fails.
    pub fn connect(self) -> Option<joule_client::SyncConnection> {
        let options = joule_client::Options { user: self.user, password: self.password, ..Default::default() };
        match joule_client::SyncConnection::connect(&self.servers, &options) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("error: cannot connect to {}: {e}", self.servers);
                None
            }
        }
    }
}

pub fn run(args: NodeArgs) -> ExitCode {
    let Some(mut c) = args.connect() else { return ExitCode::FAILURE };
    let mut fetch = |selector: &str| match c.call("@Statistics", vec![Value::from(selector), Value::Integer(0)]) {
        Ok(mut r) if !r.tables.is_empty() => Ok(r.tables.swap_remove(0)),
        Ok(_) => Err(format!("@Statistics {selector} returned no table")),
        Err(e) => Err(format!("@Statistics {selector}: {e}")),
    };
    let (hosts, topo) = match (fetch("CLUSTER"), fetch("TOPO")) {
        (Ok(h), Ok(t)) => (h, t),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}", summary(&hosts, &topo));
    if let Ok(scaler) = fetch("AUTOSCALER") {
        if let Some(line) = autoscaler(&scaler) {
            println!("{line}");
        }
    }
    println!();
    crate::shell::print_fixed(&[hosts, topo]);
    ExitCode::SUCCESS
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Cell `i` of `row` as text (empty if the server sent fewer cells).
fn cell(row: &[Value], i: usize) -> String {
    row.get(i).map(text).unwrap_or_default()
}

/// The auto-scaler's state and last decision, if it is on.
fn autoscaler(t: &VoltTable) -> Option<String> {
    let column = |name: &str| t.columns.iter().position(|(n, _)| n == name);
    let row = t.rows.first()?;
    if cell(row, column("ENABLED")?) != "1" {
        return None;
    }
    let last = column("LAST_DECISION").map(|i| cell(row, i)).filter(|s| !s.is_empty() && s != "NULL");
    Some(format!(
        "autoscaler: {} (as host {} sees it){}",
        column("STATE").map(|i| cell(row, i)).unwrap_or_default(),
        column("HOST_ID").map(|i| cell(row, i)).unwrap_or_default(),
        last.map_or(String::new(), |l| format!("; last: {l}"))
    ))
}

/// One line: hosts up of all, k-factor, partitions, and redundancy — full,
/// reduced (naming the partitions that lost a copy), or lost (naming the
/// partitions no host serves).
pub(crate) fn summary(hosts: &VoltTable, topo: &VoltTable) -> String {
    let state = hosts.columns.iter().position(|(n, _)| n == "STATE");
    let id = hosts.columns.iter().position(|(n, _)| n == "HOST_ID");
    let up: Vec<String> = hosts
        .rows
        .iter()
        .filter(|r| state.is_some_and(|s| cell(r, s) == "UP"))
        .filter_map(|r| id.map(|i| cell(r, i)))
        .collect();
    // TOPO's last row is the multi-partition initiator's.
    let partitions = &topo.rows[..topo.rows.len().saturating_sub(1)];
    let copies = partitions.first().map_or(1, |r| cell(r, 1).split(',').count());
    let mut reduced = Vec::new();
    let mut lost = Vec::new();
    for r in partitions {
        let running = cell(r, 1).split(',').filter(|s| up.iter().any(|h| s.split(':').next() == Some(h))).count();
        if running == 0 || cell(r, 2).is_empty() {
            lost.push(cell(r, 0));
        } else if running < copies {
            reduced.push(cell(r, 0));
        }
    }
    let redundancy = if !lost.is_empty() {
        format!("partitions {} have no running copy: the cluster cannot serve them", lost.join(", "))
    } else if !reduced.is_empty() {
        format!("reduced: partitions {} are missing a copy", reduced.join(", "))
    } else {
        "full".to_string()
    };
    format!(
        "{} of {} hosts up, k-factor {}, {} partitions; redundancy {redundancy}",
        up.len(),
        hosts.rows.len(),
        copies.saturating_sub(1),
        partitions.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use joule_wire::VoltType;

    fn table(columns: &[&str], rows: Vec<Vec<&str>>) -> VoltTable {
        VoltTable {
            columns: columns.iter().map(|c| (c.to_string(), VoltType::String)).collect(),
            rows: rows.into_iter().map(|r| r.into_iter().map(Value::from).collect()).collect(),
        }
    }

    #[test]
    fn summary_says_what_redundancy_is_left() {
        let topo = table(
            &["Partition", "Sites", "Leader"],
            vec![
                vec!["0", "0:0,1:0", "0:0"],
                vec!["1", "2:0,0:1", "2:0"],
                vec!["2", "1:1,2:1", "1:1"],
                vec!["16383", "0:2", "0:2"],
            ],
        );
        let hosts = |states: [&str; 3]| {
            table(&["HOST_ID", "STATE"], states.iter().enumerate().map(|(i, s)| vec![["0", "1", "2"][i], *s]).collect())
        };
        assert_eq!(
            summary(&hosts(["UP", "UP", "UP"]), &topo),
            "3 of 3 hosts up, k-factor 1, 3 partitions; redundancy full"
        );
        assert_eq!(
            summary(&hosts(["UP", "UP", "FAILED"]), &topo),
            "2 of 3 hosts up, k-factor 1, 3 partitions; redundancy reduced: partitions 1, 2 are missing a copy"
        );
        let mut led = topo.clone();
        led.rows[2][2] = Value::from("");
        assert!(summary(&hosts(["UP", "FAILED", "FAILED"]), &led).contains("partitions 2 have no running copy"));
    }
}
