//! The cluster as clients and operators see it: `@Statistics TOPO` (the
//! partitions with their sites and leaders, then the hashinator ring that
//! clients route by), `@Statistics CLUSTER` (the hosts), and the console's
//! cluster view — all read off the metadata this host follows
//! (`crate::cluster`), never off a guess of its own.

use crate::cluster::Membership;
use crate::ServerContext;
use joule_cluster::{ClusterMetadata, HostId, HostState};
use joule_common::{DataType, Value};
use joule_sql::plan::OutputColumn;
use joule_txn::ResultTable;

/// The console's cluster view: the hosts (state, what they hold and lead)
/// and every partition's copies and leader, as this host knows them.
pub(crate) fn console_json(ctx: &ServerContext) -> serde_json::Value {
    use serde_json::json;
    let m = ctx.membership.metadata();
    let leads = m.leaderships();
    let group_leader = ctx.membership.metadata_leader();
    json!({
        "me": ctx.host_id,
        "kfactor": m.kfactor,
        "hosts": m.hosts.iter().map(|(id, h)| json!({
            "id": id,
            "internal": h.internal_address,
            "client": h.client_address,
            "state": format!("{:?}", h.state).to_uppercase(),
            "copies": m.partitions.iter().filter(|p| p.replicas.contains(id)).count(),
            "leads": leads.get(id).copied().unwrap_or(0),
            "coordinator": m.mp_coordinator == Some(*id),
            "metadata_leader": group_leader == Some(*id),
        })).collect::<Vec<_>>(),
        "partitions": m.partitions.iter().enumerate().map(|(p, placement)| json!({
            "id": p,
            "replicas": placement.replicas,
            "leader": placement.leader,
        })).collect::<Vec<_>>(),
    })
}

/// `hostId:siteId` of partition `p` on host `h`: the site is the
/// partition's position among those `h` holds.
fn site_name(m: &ClusterMetadata, h: HostId, p: usize) -> String {
    let site = m.partitions[..p].iter().filter(|q| q.replicas.contains(&h)).count();
    format!("{h}:{site}")
}

/// `@Statistics TOPO`'s two tables: [`topo_table`], then the ring this
/// host routes by ([`ring_table`]).
pub(crate) fn topo_tables(ctx: &crate::ServerContext, m: &ClusterMetadata) -> Vec<ResultTable> {
    vec![topo_table(m), ring_table(&ctx.host.hashinator())]
}

/// The hashinator ring, for clients that route by it: one row, `HASHTYPE`
/// `ELASTIC` and `HASHCONFIG`, the ring as a big-endian 32-bit count of
/// entries, then each entry's token and partition (32-bit, big-endian), in
/// token order. A token belongs to the entry at or below it (wrapping to
/// the last entry below the first).
pub(crate) fn ring_table(ring: &joule_common::hashinator::Hashinator) -> ResultTable {
    let mut config = Vec::with_capacity(4 + ring.ring().len() * 8);
    config.extend_from_slice(&(ring.ring().len() as i32).to_be_bytes());
    for (token, partition) in ring.ring() {
        config.extend_from_slice(&token.to_be_bytes());
        config.extend_from_slice(&(*partition as i32).to_be_bytes());
    }
    result_table(
        &[("HASHTYPE", DataType::Varchar), ("HASHCONFIG", DataType::Varbinary)],
        vec![vec![Value::from("ELASTIC"), Value::Binary(config)]],
    )
}

/// `@Statistics TOPO`: per partition its copies and its leader (VoltDB's
/// layout: `hostId:siteId`), then the multi-partition initiator's row.
pub(crate) fn topo_table(m: &ClusterMetadata) -> ResultTable {
    let mut rows: Vec<Vec<Value>> = m
        .partitions
        .iter()
        .enumerate()
        .map(|(p, placement)| {
            let sites: Vec<String> = placement.replicas.iter().map(|h| site_name(m, *h, p)).collect();
            let leader = placement.leader.map_or(String::new(), |l| site_name(m, l, p));
            vec![Value::Integer(p as i64), Value::from(sites.join(",").as_str()), Value::from(leader.as_str())]
        })
        .collect();
    let mp = m.mp_coordinator.map_or(String::new(), |h| format!("{h}:{}", m.sites_per_host));
    rows.push(vec![
        Value::Integer(i64::from(joule_txn::ids::MP_INITIATOR)),
        Value::from(mp.as_str()),
        Value::from(mp.as_str()),
    ]);
    result_table(&[("Partition", DataType::Integer), ("Sites", DataType::Varchar), ("Leader", DataType::Varchar)], rows)
}

/// `@Statistics CLUSTER`: one row per host — addresses, state, how many
/// partitions it holds and leads, which host coordinates multi-partition
/// work and leads the metadata group, and which hosts vote in it.
pub(crate) fn hosts_table(membership: &Membership) -> ResultTable {
    let m = membership.metadata();
    let group_leader = membership.metadata_leader();
    let voters = membership.metadata_voters();
    let leads = m.leaderships();
    let rows = m
        .hosts
        .iter()
        .map(|(id, h)| {
            let replicas = m.partitions.iter().filter(|p| p.replicas.contains(id)).count();
            let state = match h.state {
                HostState::Up => "UP",
                HostState::Failed => "FAILED",
                HostState::Stopped => "STOPPED",
                HostState::Recovering => "RECOVERING",
            };
            vec![
                Value::Integer(*id as i64),
                Value::from(h.internal_address.as_str()),
                Value::from(h.client_address.as_str()),
                Value::from(state),
                Value::Integer(replicas as i64),
                Value::Integer(leads.get(id).copied().unwrap_or(0) as i64),
                Value::Integer(i64::from(m.mp_coordinator == Some(*id))),
                Value::Integer(i64::from(group_leader == Some(*id))),
                Value::Integer(i64::from(voters.contains(id))),
            ]
        })
        .collect();
    result_table(
        &[
            ("HOST_ID", DataType::Integer),
            ("INTERNAL_ADDRESS", DataType::Varchar),
            ("CLIENT_ADDRESS", DataType::Varchar),
            ("STATE", DataType::Varchar),
            ("PARTITIONS", DataType::Integer),
            ("LEADERS", DataType::Integer),
            ("MP_COORDINATOR", DataType::TinyInt),
            ("METADATA_LEADER", DataType::TinyInt),
            ("METADATA_VOTER", DataType::TinyInt),
        ],
        rows,
    )
}

fn result_table(columns: &[(&str, DataType)], rows: Vec<Vec<Value>>) -> ResultTable {
    let columns = columns.iter().map(|(n, t)| OutputColumn { name: n.to_string(), data_type: Some(*t) });
    ResultTable::new(columns.collect::<Vec<_>>().into(), rows)
}
