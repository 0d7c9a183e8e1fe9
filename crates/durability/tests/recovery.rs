//! Recovery in process, over real files: ids after recovery keep growing
//! past every id the log mentions (so later transactions replay after
//! earlier ones, restart after restart), a restored snapshot puts rows back
//! at their row ids (so scans after recovery see the order they saw
//! before), leftovers of an interrupted segment creation are harmless, and
//! moved hashinator ranges come back from the log and from snapshots.

use joule_common::Value;
use joule_durability::manager::{SaveRequest, Snapshots};
use joule_durability::node::{AttachableLog, DataDir};
use joule_durability::recovery::recover_node;
use joule_durability::{CommandLogWriter, LogConfig, LogMode};
use joule_txn::{Client, Host, HostConfig, Response, ResponseSink};
use std::sync::{mpsc, Arc};

const SITES: usize = 2;

/// A node in `data`: recovered, with a synchronous log attached.
struct Node {
    dir: DataDir,
    host: Host,
    writer: Arc<CommandLogWriter>,
    log: Arc<AttachableLog>,
}

impl Node {
    fn start(data: &DataDir) -> (Node, String) {
        let first = data.open(SITES as u32).unwrap();
        let log = Arc::new(AttachableLog::new());
        let command_log: Arc<dyn joule_txn::logging::CommandLog> = log.clone();
        let (host, report) = recover_node(data, SITES as u32, first, |resume_after| {
            Host::start(HostConfig {
                sites_per_host: SITES,
                command_log: Some(command_log),
                resume_after,
                ..Default::default()
            })
        })
        .unwrap();
        let config = LogConfig {
            dir: data.log_dir(),
            mode: LogMode::Sync,
            segment_bytes: 1 << 20,
            partitions: SITES as u32,
            first_segment: data.next_segment().unwrap(),
        };
        let writer = Arc::new(CommandLogWriter::start(config, Box::new(|e| panic!("log failed: {e}"))).unwrap());
        log.attach(writer.clone()).unwrap();
        (Node { dir: data.clone(), host, writer, log }, report.to_string())
    }

    fn stop(self) {
        self.host.shutdown();
        self.writer.stop();
    }
}

fn sql(c: &mut Client, text: &str) -> Response {
    let r = c.adhoc(text, vec![]);
    assert!(r.error.is_none(), "{text}: {:?}", r.error);
    r
}

fn scalar(c: &mut Client, text: &str) -> i64 {
    sql(c, text).results[0].as_i64().unwrap()
}

fn temp(name: &str) -> DataDir {
    let root = std::env::temp_dir().join(format!("joule-recovery-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    DataDir::new(root)
}

#[test]
fn transactions_after_recovery_replay_after_the_ones_before() {
    let data = temp("ids");
    let (node, _) = Node::start(&data);
    let mut c = node.host.client();
    sql(&mut c, "CREATE TABLE v (id INTEGER NOT NULL PRIMARY KEY, n BIGINT NOT NULL); PARTITION TABLE v ON COLUMN id");
    sql(&mut c, "INSERT INTO v VALUES (1, 1)");
    sql(&mut c, "UPDATE v SET n = n + 1"); // multi-partition write: logged
    scalar(&mut c, "SELECT COUNT(*) FROM v"); // multi-partition read: not logged, takes an id
    sql(&mut c, "UPDATE v SET n = 5 WHERE id = 1"); // single-partition, after that read
    node.stop();
    // A leftover of a segment creation interrupted by a crash.
    std::fs::write(data.log_dir().join("00000000000000ff.jlog.tmp"), b"JOULE").unwrap();
    let (node, _) = Node::start(&data);
    let mut c = node.host.client();
    assert_eq!(scalar(&mut c, "SELECT n FROM v WHERE id = 1"), 5);
    sql(&mut c, "UPDATE v SET n = n * 2"); // multi-partition, after recovery
    assert_eq!(scalar(&mut c, "SELECT n FROM v WHERE id = 1"), 10);
    node.stop();
    for round in 0..2 {
        let (node, report) = Node::start(&data);
        let mut c = node.host.client();
        assert_eq!(scalar(&mut c, "SELECT n FROM v WHERE id = 1"), 10, "restart {round}: {report}");
        node.stop();
    }
    let _ = std::fs::remove_dir_all(&data.root);
}

struct Wait(mpsc::SyncSender<Response>);

impl ResponseSink for Wait {
    fn deliver(&self, _: u64, r: Response) {
        let _ = self.0.send(r);
    }
}

#[test]
fn a_restored_snapshot_keeps_row_ids_so_scans_keep_their_order() {
    let data = temp("rowids");
    let (node, _) = Node::start(&data);
    let mut c = node.host.client();
    sql(&mut c, "CREATE TABLE t (k INTEGER NOT NULL, note VARCHAR(10)); CREATE TABLE p (id INTEGER NOT NULL PRIMARY KEY, k INTEGER); PARTITION TABLE p ON COLUMN id");
    for k in 0..100 {
        sql(&mut c, &format!("INSERT INTO t VALUES ({k}, 'a')"));
        sql(&mut c, &format!("INSERT INTO p VALUES ({k}, {k})"));
    }
    sql(&mut c, "DELETE FROM t WHERE k >= 10 AND k < 20"); // holes at ids 10..19
    sql(&mut c, "DELETE FROM p WHERE k >= 10 AND k < 60");
    let snapshots = Snapshots::new(data.snapshot_dir(), node.log.clone(), 2);
    let (tx, rx) = mpsc::sync_channel(1);
    snapshots.save(
        &mut c,
        SaveRequest { dir: None, nonce: "s".into(), blocking: true, automatic: false },
        0,
        Arc::new(Wait(tx)),
    );
    assert!(rx.recv().unwrap().error.is_none());
    // After the snapshot: inserts fill the lowest holes.
    for k in 1000..1005 {
        sql(&mut c, &format!("INSERT INTO t VALUES ({k}, 'b')"));
        sql(&mut c, &format!("INSERT INTO p VALUES ({k}, {k})"));
    }
    let scan = |c: &mut Client| -> Vec<Vec<Value>> {
        let mut all = sql(c, "SELECT k FROM t").results[0].rows.clone();
        all.extend(sql(c, "SELECT k FROM p").results[0].rows.clone());
        all
    };
    let before = scan(&mut c);
    let checksums = c.call("@Checksum", vec![]).results;
    node.stop();
    let (node, report) = Node::start(&data);
    assert!(report.contains("loaded snapshot s"), "{report}");
    let mut c = node.host.client();
    assert_eq!(scan(&mut c), before, "scans see rows in the same order after recovery");
    assert_eq!(c.call("@Checksum", vec![]).results, checksums);
    // Later inserts take the same ids they would have taken.
    sql(&mut c, "INSERT INTO t VALUES (2000, 'c')");
    let ks: Vec<Value> = sql(&mut c, "SELECT k FROM t").results[0].rows.iter().map(|r| r[0].clone()).collect();
    assert_eq!(ks.iter().position(|k| *k == Value::Integer(2000)), Some(15), "filled the next hole (id 15)");
    node.stop();
    let _ = std::fs::remove_dir_all(&data.root);
}

/// Rows of `t` per partition.
fn per_partition(host: &Host) -> Vec<u64> {
    let mut stats = host.statistics(std::time::Duration::from_secs(10));
    stats.retain(|s| s.partition.is_some());
    stats.sort_by_key(|s| s.partition);
    stats.iter().map(|s| s.tables.iter().filter(|t| t.name == "DEFAULT.T").map(|t| t.rows).sum()).collect()
}

fn save_snapshot(node: &Node, c: &mut Client, nonce: &str) {
    let snapshots = Snapshots::new(node_snapshot_dir(node), node.log.clone(), 2);
    let (tx, rx) = mpsc::sync_channel(1);
    let request = SaveRequest { dir: None, nonce: nonce.into(), blocking: true, automatic: false };
    snapshots.save(c, request, 0, Arc::new(Wait(tx)));
    let r = rx.recv().unwrap();
    assert!(r.error.is_none(), "snapshot: {:?}", r.error);
}

fn node_snapshot_dir(node: &Node) -> std::path::PathBuf {
    node.dir.snapshot_dir()
}

#[test]
fn moved_ranges_come_back_from_the_log_and_from_snapshots() {
    let data = temp("moves");
    let (node, _) = Node::start(&data);
    let mut c = node.host.client();
    sql(&mut c, "CREATE TABLE t (k BIGINT NOT NULL PRIMARY KEY, n BIGINT); PARTITION TABLE t ON COLUMN k");
    sql(&mut c, "CREATE TABLE r (k BIGINT NOT NULL PRIMARY KEY); PARTITION TABLE r ON COLUMN k USING RANGE (100)");
    for k in 0..300 {
        sql(&mut c, &format!("INSERT INTO t VALUES ({k}, {k})"));
        sql(&mut c, &format!("INSERT INTO r VALUES ({k})"));
    }
    // Value ranges split and moved: [50, 100) and [200, ...) to partition 0.
    sql(&mut c, "PARTITION TABLE r ON COLUMN k USING RANGE (50, 100, 200) ON PARTITIONS (0, 0, 1, 0)");
    let r_placed = |host: &Host| -> Vec<u64> {
        let mut stats = host.statistics(std::time::Duration::from_secs(10));
        stats.retain(|s| s.partition.is_some());
        stats.sort_by_key(|s| s.partition);
        stats.iter().map(|s| s.tables.iter().filter(|t| t.name == "DEFAULT.R").map(|t| t.rows).sum()).collect()
    };
    assert_eq!(r_placed(&node.host), vec![200, 100]);
    let call = |c: &mut Client, start: i64, end: i64, p: i64| {
        let r = c.call("@MoveRange", vec![Value::Integer(start), Value::Integer(end), Value::Integer(p)]);
        assert!(r.error.is_none(), "@MoveRange: {:?}", r.error);
    };
    // Partition 1's half of the ring, bit by bit, to partition 0.
    call(&mut c, 0, 1 << 29, 0);
    call(&mut c, (1 << 29) + 1, 1 << 30, 0);
    let ring = node.host.hashinator();
    let placed = per_partition(&node.host);
    assert_ne!(placed, vec![150, 150]);
    node.stop();
    // From the log alone.
    let (node, report) = Node::start(&data);
    assert_eq!(node.host.hashinator().as_ref(), ring.as_ref(), "{report}");
    assert_eq!(per_partition(&node.host), placed);
    assert_eq!(r_placed(&node.host), vec![200, 100]);
    let mut c = node.host.client();
    // A snapshot, then one more move of each kind after it.
    save_snapshot(&node, &mut c, "after-moves");
    call(&mut c, i32::MIN as i64, -1, 1);
    sql(&mut c, "PARTITION TABLE r ON COLUMN k USING RANGE (50, 100, 200) ON PARTITIONS (1, 0, 1, 0)");
    let ring = node.host.hashinator();
    let placed = per_partition(&node.host);
    sql(&mut c, "UPDATE t SET n = n + 1 WHERE k = 7");
    node.stop();
    // From the snapshot (its ring) and the log after it.
    let (node, report) = Node::start(&data);
    assert!(report.contains("after-moves"), "recovered from the snapshot: {report}");
    assert_eq!(node.host.hashinator().as_ref(), ring.as_ref(), "{report}");
    assert_eq!(per_partition(&node.host), placed);
    assert_eq!(r_placed(&node.host), vec![150, 150]);
    let mut c = node.host.client();
    assert_eq!(scalar(&mut c, "SELECT n FROM t WHERE k = 7"), 8);
    assert_eq!(scalar(&mut c, "SELECT COUNT(*) FROM t"), 300);
    let misplaced =
        c.call("@ValidatePartitioning", vec![]).results[0].rows.iter().map(|r| r[2].clone()).collect::<Vec<_>>();
    assert!(misplaced.iter().all(|v| *v == Value::Integer(0)), "{misplaced:?}");
    node.stop();
    let _ = std::fs::remove_dir_all(&data.root);
}
