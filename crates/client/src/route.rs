//! Routing single-partition calls straight to their partition's leader.
//!
//! Any host of a cluster serves any call, forwarding it to the host that
//! leads the call's partition — one more hop. A [`Client`](crate::Client)
//! connected to several hosts saves it: it learns the cluster's topology
//! (`@Statistics TOPO` for each partition's leader, `@Statistics CLUSTER`
//! for the hosts' client addresses) and which procedures are
//! single-partition and on which parameter (`@SystemCatalog PROCEDURES`, the
//! `partitionParameter` VoltDB clients read), hashes the call's partition
//! key with the same hashinator the server uses (`joule_common::hashinator`),
//! and sends the call on a connection to the leader. Its connections
//! subscribe to topology notifications (`@Subscribe('TOPOLOGY')`): when a
//! host says the topology changed (a failover, a host back), the client
//! reads it again at once — and every few seconds regardless. A call
//! it cannot route — a multi-partition one, a key of another type, a leader
//! it has no connection to — goes by the balancing policy, and is forwarded
//! as before: routing only ever saves a hop, it never decides correctness.

use joule_common::hashinator::Hashinator;
use joule_common::{Result, Value};
use joule_wire::{Param, VoltTable};
use std::collections::HashMap;
use std::net::SocketAddr;

/// What the client knows of the cluster to route calls.
pub(crate) struct Topology {
    hashinator: Hashinator,
    /// Per partition: the client's connection slot to its leader, if any.
    leader_slot: Vec<Option<usize>>,
    /// Single-partition procedures: their partition parameter's index.
    procedures: HashMap<String, usize>,
}

impl Topology {
    /// The slot to send `procedure(params)` on, if it can be routed.
    pub(crate) fn slot_for(&self, procedure: &str, params: &[Param]) -> Option<usize> {
        let index = *self.procedures.get(procedure)?;
        let key = match params.get(index)? {
            Param::Value(v @ (Value::Integer(_) | Value::String(_) | Value::Binary(_))) => v,
            _ => return None,
        };
        let partition = self.hashinator.partition_for(key).ok()?;
        self.leader_slot.get(partition as usize).copied().flatten()
    }

    /// Build from the system tables (TOPO's second, the ring, if the server
    /// sent one; the even ring otherwise) and the client's slot addresses.
    pub(crate) fn from_tables(
        topo: &VoltTable,
        ring: Option<&VoltTable>,
        cluster: &VoltTable,
        procedures: &VoltTable,
        slots: &[SocketAddr],
    ) -> Option<Topology> {
        // TOPO's last row is the multi-partition initiator's.
        let partitions = u32::try_from(topo.rows.len().checked_sub(1)?).ok()?;
        let hashinator = match ring.and_then(|t| parse_ring(t, partitions)) {
            Some(h) => h,
            None => Hashinator::even(partitions, 1).ok()?,
        };
        let client_of: HashMap<String, SocketAddr> = cluster
            .rows
            .iter()
            .filter_map(|r| {
                let id = text(r.first()?);
                let state = text(r.get(3)?);
                let address: SocketAddr = text(r.get(2)?).parse().ok()?;
                (state == "UP").then_some((id, address))
            })
            .collect();
        let leader_slot = topo.rows[..partitions as usize]
            .iter()
            .map(|r| {
                let leader = text(r.get(2)?);
                let host = leader.split(':').next()?;
                let address = client_of.get(host)?;
                slots.iter().position(|s| s == address)
            })
            .collect();
        let name = column(procedures, "PROCEDURE_NAME")?;
        let remarks = column(procedures, "REMARKS")?;
        let procedures = procedures
            .rows
            .iter()
            .filter_map(|r| {
                let remarks = text(r.get(remarks)?);
                Some((text(r.get(name)?), partition_parameter(&remarks)?))
            })
            .collect();
        Some(Topology { hashinator, leader_slot, procedures })
    }
}

/// The ring in TOPO's second table (`HASHCONFIG`: a big-endian count, then
/// each entry's token and partition), over `partitions`; `None` if absent
/// or malformed (the client then routes by the even ring: a hop more at
/// worst).
fn parse_ring(t: &VoltTable, partitions: u32) -> Option<Hashinator> {
    let Value::Binary(config) = t.rows.first()?.get(column(t, "HASHCONFIG")?)? else { return None };
    let be = |i: usize| Some(i32::from_be_bytes(config.get(i..i + 4)?.try_into().ok()?));
    let count = usize::try_from(be(0)?).ok()?;
    if config.len() != 4 + count * 8 {
        return None;
    }
    let ring =
        (0..count).map(|i| Some((be(4 + 8 * i)?, u32::try_from(be(8 + 8 * i)?).ok()?))).collect::<Option<Vec<_>>>()?;
    Hashinator::over(1, ring, partitions).ok()
}

fn column(t: &VoltTable, name: &str) -> Option<usize> {
    t.columns.iter().position(|(n, _)| n.eq_ignore_ascii_case(name))
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `partitionParameter` from a procedure's REMARKS
/// (`{"partitionParameter":1,"singlePartition":true}`), if single-partition.
fn partition_parameter(remarks: &str) -> Option<usize> {
    if !remarks.contains("\"singlePartition\":true") {
        return None;
    }
    let at = remarks.find("\"partitionParameter\":")? + "\"partitionParameter\":".len();
    let digits: String =
        remarks[at..].chars().skip_while(|c| c.is_whitespace()).take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Read the topology through `client` (any of its hosts answers), and the
/// client addresses of the hosts that are up.
/// The cluster's topology (if it has one), the client addresses of the
/// hosts that are up, and those of every member (up or not).
pub(crate) async fn fetch(client: &crate::Client) -> Result<(Option<Topology>, Vec<SocketAddr>, Vec<SocketAddr>)> {
    let stats = |selector: &str| vec![Value::from(selector), Value::Integer(0)];
    let topo_response = client.call_unrouted("@Statistics", stats("TOPO")).await?;
    let cluster = client.call_unrouted("@Statistics", stats("CLUSTER")).await?;
    let procedures = client.call_unrouted("@SystemCatalog", vec![Value::from("PROCEDURES")]).await?;
    let (Some(topo), Some(cluster), Some(procedures)) =
        (topo_response.tables.first(), cluster.tables.first(), procedures.tables.first())
    else {
        return Ok((None, Vec::new(), Vec::new()));
    };
    let addresses = |up_only: bool| -> Vec<SocketAddr> {
        cluster
            .rows
            .iter()
            .filter(|r| !up_only || r.get(3).is_some_and(|s| text(s) == "UP"))
            .filter_map(|r| text(r.get(2)?).parse().ok())
            .collect()
    };
    let ring = topo_response.tables.get(1);
    let topology = Topology::from_tables(topo, ring, cluster, procedures, &client.slot_addresses());
    Ok((topology, addresses(true), addresses(false)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use joule_wire::VoltType;

    fn table(columns: &[&str], rows: Vec<Vec<Value>>) -> VoltTable {
        VoltTable { columns: columns.iter().map(|c| (c.to_string(), VoltType::String)).collect(), rows }
    }

    #[test]
    fn routes_by_key_to_the_leaders_connection() {
        let s = |x: &str| Value::from(x);
        let topo = table(
            &["Partition", "Sites", "Leader"],
            vec![
                vec![Value::Integer(0), s("0:0,1:0"), s("1:0")],
                vec![Value::Integer(1), s("2:0,0:1"), s("2:0")],
                vec![Value::Integer(2), s("1:1,2:1"), s("1:1")],
                vec![Value::Integer(16383), s("0:2"), s("0:2")],
            ],
        );
        let cluster = table(
            &["HOST_ID", "INTERNAL_ADDRESS", "CLIENT_ADDRESS", "STATE"],
            vec![
                vec![Value::Integer(0), s("x"), s("127.0.0.1:1000"), s("UP")],
                vec![Value::Integer(1), s("x"), s("127.0.0.1:1001"), s("UP")],
                vec![Value::Integer(2), s("x"), s("127.0.0.1:1002"), s("FAILED")],
            ],
        );
        let procs = table(
            &["PROCEDURE_NAME", "REMARKS"],
            vec![
                vec![s("Vote"), s("{\"partitionParameter\":1,\"singlePartition\":true}")],
                vec![s("Results"), s("{\"singlePartition\":false}")],
            ],
        );
        let slots: Vec<SocketAddr> = ["127.0.0.1:1000", "127.0.0.1:1001"].iter().map(|a| a.parse().unwrap()).collect();
        let t = Topology::from_tables(&topo, None, &cluster, &procs, &slots).unwrap();
        let h = Hashinator::even(3, 1).unwrap();
        for key in 0..50i64 {
            let params = vec![Param::Value(Value::from("x")), Param::Value(Value::Integer(key))];
            let expected = match h.partition_for(&Value::Integer(key)).unwrap() {
                0 | 2 => Some(1), // led by host 1: slot 1
                _ => None,        // host 2 is down: no connection to route to
            };
            assert_eq!(t.slot_for("Vote", &params), expected, "key {key}");
        }
        assert_eq!(t.slot_for("Results", &[]), None);
        assert_eq!(t.slot_for("Vote", &[Param::Value(Value::Null)]), None, "too few parameters");
        assert_eq!(partition_parameter("{\"partitionParameter\": 12,\"singlePartition\":true}"), Some(12));

        // With the ring the server sent: partition 1's slice moved to
        // partition 0 (host 1's), every key routes to host 1.
        let moved = h.with_range_moved(h.ring()[1].0, h.ring()[2].0 - 1, 0).unwrap();
        let mut config = (moved.ring().len() as i32).to_be_bytes().to_vec();
        for (token, p) in moved.ring() {
            config.extend(token.to_be_bytes());
            config.extend((*p as i32).to_be_bytes());
        }
        let ring = table(&["HASHTYPE", "HASHCONFIG"], vec![vec![s("ELASTIC"), Value::Binary(config.clone())]]);
        let t = Topology::from_tables(&topo, Some(&ring), &cluster, &procs, &slots).unwrap();
        for key in 0..50i64 {
            let params = vec![Param::Value(Value::from("x")), Param::Value(Value::Integer(key))];
            assert_eq!(t.slot_for("Vote", &params), Some(1), "key {key}");
        }
        // A malformed ring falls back to the even one.
        config.pop();
        let bad = table(&["HASHTYPE", "HASHCONFIG"], vec![vec![s("ELASTIC"), Value::Binary(config)]]);
        assert!(parse_ring(&bad, 3).is_none());
        let too_many = table(&["HASHTYPE", "HASHCONFIG"], vec![vec![s("ELASTIC"), Value::Binary(vec![0, 0, 0, 9])]]);
        assert!(parse_ring(&too_many, 3).is_none());
    }
}
