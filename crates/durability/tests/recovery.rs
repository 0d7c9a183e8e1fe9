//! Recovery in process, over real files: ids after recovery keep growing
//! past every id the log mentions (so later transactions replay after
//! earlier ones, restart after restart), a restored snapshot puts rows back
//! at their row ids (so scans after recovery see the order they saw
//! before), and leftovers of an interrupted segment creation are harmless.

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
        (Node { host, writer, log }, report.to_string())
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
