//! Range partitioning over real processes: a 2-host cluster (4 partitions,
//! 2 on each host) places a range-partitioned table's rows by value, range
//! i on partition i mod 4, and a read with conditions on the partition
//! column runs only on the partitions whose ranges they overlap — counted
//! by each host's own figures (`@Statistics TABLE`, `@Statistics
//! FRAGMENTS`), wherever the partition lives.

mod common;

use common::cluster::{all_up_and_led, connect, form, sql};
use common::TempDir;
use joule_common::Value;
use std::collections::BTreeMap;

/// `@Statistics selector` rows as column name to value, from every host.
fn rows(hosts: &[String], selector: &str) -> Vec<BTreeMap<String, Value>> {
    let mut out = Vec::new();
    for h in hosts {
        let r = connect(h).call("@Statistics", vec![Value::from(selector), Value::Integer(0)]).expect(selector);
        let names: Vec<String> = r.tables[0].columns.iter().map(|(n, _)| n.clone()).collect();
        for row in &r.tables[0].rows {
            out.push(names.iter().cloned().zip(row.iter().cloned()).collect());
        }
    }
    out
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Integer(i) => *i,
        v => panic!("{v:?}"),
    }
}

/// Per partition: fragments run so far, over every host.
fn fragments(hosts: &[String]) -> BTreeMap<i64, i64> {
    rows(hosts, "FRAGMENTS").iter().map(|r| (int(&r["SITE_ID"]), int(&r["FRAGMENTS"]))).collect()
}

#[test]
fn range_partitions_are_placed_and_pruned_as_declared_across_hosts() {
    let dirs: Vec<TempDir> = (0..2).map(|i| TempDir::new(&format!("range-{i}"))).collect();
    let hosts = form(&dirs, 0);
    all_up_and_led(&hosts);
    let clients: Vec<String> = hosts.iter().map(|h| h.client.clone()).collect();
    sql(
        &clients[0],
        "CREATE TABLE readings (day INT NOT NULL, meter BIGINT NOT NULL, kwh FLOAT, PRIMARY KEY (day, meter)); \
         PARTITION TABLE readings ON COLUMN day USING RANGE (100, 200, 300)",
        vec![],
    );
    // Written through both hosts; each forwards to the partition's leader.
    let mut connections: Vec<_> = clients.iter().map(|c| connect(c)).collect();
    for day in 0..400i64 {
        for meter in 0..2i64 {
            let c = &mut connections[(day + meter) as usize % 2];
            c.call("READINGS.insert", vec![Value::Integer(day), Value::Integer(meter), Value::Float(1.5)])
                .unwrap_or_else(|e| panic!("day {day}: {e}"));
        }
    }
    // Placement: 200 rows on each partition, days 100 p .. 100 p + 99.
    let mut placed: BTreeMap<i64, i64> = BTreeMap::new();
    for r in rows(&clients, "TABLE").iter().filter(|r| r["TABLE_NAME"].to_string().ends_with("READINGS")) {
        *placed.entry(int(&r["PARTITION_ID"])).or_default() += int(&r["TUPLE_COUNT"]);
    }
    assert_eq!(placed, (0..4).map(|p| (p, 200)).collect::<BTreeMap<_, _>>());
    for p in 0..4i64 {
        let q = format!("SELECT COUNT(*) FROM readings WHERE day >= {} AND day < {}", p * 100, p * 100 + 100);
        let r = sql(&clients[1], &q, vec![]);
        assert_eq!(r.tables[0].rows[0][0], Value::Integer(200), "partition {p}");
    }

    // Pruning: days 150..249 are in ranges 1 and 2 only.
    let before = fragments(&clients);
    let r = sql(
        &clients[0],
        "SELECT SUM(kwh), COUNT(*) FROM readings WHERE day BETWEEN ? AND ?",
        vec![Value::Integer(150), Value::Integer(249)],
    );
    assert_eq!(r.tables[0].rows[0][1], Value::Integer(200));
    let after = fragments(&clients);
    let ran: Vec<i64> = after.iter().filter(|(p, n)| before.get(p) != Some(n)).map(|(p, _)| *p).collect();
    assert_eq!(ran, vec![1, 2], "before {before:?} after {after:?}");
    // Without conditions on the column, every partition runs it.
    let before = fragments(&clients);
    let r = sql(&clients[0], "SELECT COUNT(*) FROM readings WHERE meter = 1", vec![]);
    assert_eq!(r.tables[0].rows[0][0], Value::Integer(400));
    let after = fragments(&clients);
    assert!(after.iter().all(|(p, n)| before.get(p) != Some(n)), "before {before:?} after {after:?}");
    // EXPLAIN on any host says which reads are pruned.
    let explained = connect(&clients[1])
        .call("@Explain", vec![Value::from("SELECT * FROM readings WHERE day < 50")])
        .expect("@Explain");
    assert!(explained.tables[0].rows[0][0].to_string().contains("RANGE PRUNED"));
    // Re-placing the ranges moves their rows between hosts: range 1 joins
    // partition 0 (another host's, or the same: the test does not care).
    sql(
        &clients[0],
        "PARTITION TABLE readings ON COLUMN day USING RANGE (100, 200, 300) ON PARTITIONS (0, 0, 2, 3)",
        vec![],
    );
    let mut placed: BTreeMap<i64, i64> = BTreeMap::new();
    for r in rows(&clients, "TABLE").iter().filter(|r| r["TABLE_NAME"].to_string().ends_with("READINGS")) {
        *placed.entry(int(&r["PARTITION_ID"])).or_default() += int(&r["TUPLE_COUNT"]);
    }
    assert_eq!(placed, BTreeMap::from([(0, 400), (1, 0), (2, 200), (3, 200)]));
    let r = sql(&clients[1], "SELECT COUNT(*) FROM readings WHERE day >= 100 AND day < 200", vec![]);
    assert_eq!(r.tables[0].rows[0][0], Value::Integer(200));
    let r = sql(&clients[1], "SELECT COUNT(*) FROM readings", vec![]);
    assert_eq!(r.tables[0].rows[0][0], Value::Integer(800));
    // And the rows are where the placement says, on every host.
    for c in &clients {
        let r = connect(c).call("@ValidatePartitioning", vec![]).expect("@ValidatePartitioning");
        assert!(r.tables[0].rows.iter().all(|row| row[2] == Value::Integer(0)), "{:?}", r.tables[0].rows);
    }
}
