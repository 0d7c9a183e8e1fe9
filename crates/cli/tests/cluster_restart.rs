//! A whole cluster stopped at once comes back from its hosts' copy logs:
//! real `joule` processes on loopback, started with `--command-log async`
//! (a multi-host cluster then logs each copy's replication stream), killed
//! with `kill -9` and started again.
//!
//! Checked after each restart: every acknowledged write is there (single-
//! and multi-partition), the copies of every partition are identical, and
//! the cluster takes new writes. A host restarted while the others run
//! rejoins by copy instead (its logs would miss what the others do next);
//! a host that does not come back with the others is failed (every
//! partition still has a copy) and rejoins by copy when it does.

mod common;

use common::cluster::*;
use common::TempDir;
use joule_common::Value;
use std::time::Duration;

/// A heartbeat timeout of 3 s: a host killed and started again at once is
/// back before failure detection notices (and recovers, see below).
const ARGS: [&str; 8] =
    ["--host-count", "3", "--kfactor", "1", "--command-log", "async", "--heartbeat-timeout", "3000"];

/// The lines from `rx` up to the first containing `needle` (within 30 s).
fn lines_until(rx: &std::sync::mpsc::Receiver<String>, needle: &str) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while !seen.last().is_some_and(|l: &String| l.contains(needle)) {
        match rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
            Ok(line) => seen.push(line),
            Err(e) => panic!("no line containing {needle:?} ({e}); the lines before:\n{}", seen.join("\n")),
        }
    }
    seen
}

fn count_and_sum(addr: &str) -> (i64, i64) {
    let r = settled_sql(addr, "SELECT COUNT(*), SUM(v) FROM kv", vec![]);
    match (&r.tables[0].rows[0][0], &r.tables[0].rows[0][1]) {
        (Value::Integer(c), Value::Integer(s)) => (*c, *s),
        other => panic!("{other:?}"),
    }
}

/// Rows `from..to`, each through a different host, then one update of
/// every row (multi-partition).
fn write(hosts: &[&Host], from: i64, to: i64) {
    for k in from..to {
        let via = &hosts[k as usize % hosts.len()].client;
        settled_sql(via, "INSERT INTO kv VALUES (?, 0)", vec![Value::Integer(k)]);
    }
    settled_sql(&hosts[0].client, "UPDATE kv SET v = v + 1", vec![]);
}

fn all(hosts: &[Host]) -> Vec<&Host> {
    hosts.iter().collect()
}

fn kill(hosts: &mut [Host]) {
    for h in hosts {
        let _ = h.child.kill();
        let _ = h.child.wait();
    }
}

/// Three hosts, k = 1, with copy logs (and `extra` too), in directories
/// named after `name`, with `ddl` run.
fn logged_cluster(name: &str, extra: &[&str], ddl: &str) -> (Vec<TempDir>, Vec<Host>) {
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("{name}-{i}"))).collect();
    let hosts = form_all(&dirs, 1, &[&ARGS[4..], extra].concat());
    sql(&hosts[0].client, ddl, vec![]);
    (dirs, hosts)
}

/// Whether a line of `rx` passes `what` within 10 s (its standard error is
/// read on a thread of its own, and may trail its exit); what it said.
fn says(rx: &std::sync::mpsc::Receiver<String>, what: impl Fn(&str) -> bool) -> (bool, Vec<String>) {
    let mut said = Vec::new();
    let found = wait_until(Duration::from_secs(10), || {
        said.extend(rx.try_iter());
        said.iter().any(|l| what(l))
    });
    (found, said)
}

/// Everything up, every partition led, every copy identical, and the
/// count and sum as expected (through every host).
fn check(hosts: &[Host], count: i64, sum: i64) {
    all_up_and_led(hosts);
    for h in hosts {
        assert_eq!(count_and_sum(&h.client), (count, sum), "through {}", h.client);
    }
    let clients: Vec<String> = hosts.iter().map(|h| h.client.clone()).collect();
    eventually("the copies agree", || replicas_agree(&clients, 2).is_ok());
}

#[test]
fn a_whole_cluster_restart_recovers_every_acknowledged_write_from_the_copy_logs() {
    let (dirs, mut hosts) = logged_cluster(
        "restart",
        &[],
        "CREATE TABLE kv (k BIGINT NOT NULL PRIMARY KEY, v BIGINT NOT NULL); PARTITION TABLE kv ON COLUMN k; \
         CREATE TABLE note (id BIGINT NOT NULL PRIMARY KEY, text VARCHAR(20));",
    );
    sql(&hosts[1].client, "INSERT INTO note VALUES (1, 'kept')", vec![]);
    write(&all(&hosts), 0, 60);
    write(&all(&hosts), 60, 90);
    check(&hosts, 90, 60 * 2 + 30);

    // Every host killed at once, then started again: nothing refused,
    // nothing lost.
    kill(&mut hosts);
    drop(hosts);
    let starting: Vec<Starting> = dirs.iter().map(|d| spawn(d.path(), &ARGS)).collect();
    let mut hosts: Vec<Host> = starting.into_iter().map(Starting::ready).collect();
    check(&hosts, 90, 150);
    let r = settled_sql(&hosts[2].client, "SELECT text FROM note WHERE id = 1", vec![]);
    assert_eq!(r.tables[0].rows[0][0], Value::from("kept"), "the replicated table came back");
    write(&all(&hosts), 90, 120);
    check(&hosts, 120, 150 + 120);

    // One host killed and started again at once, before failure detection
    // noticed: it recovers, but the others run on, so they fail it (its
    // logs would miss what they do next) and it rejoins by copy.
    let _ = hosts[1].child.kill();
    let _ = hosts[1].child.wait();
    hosts[1] = spawn(dirs[1].path(), &ARGS).ready();
    // (Its standard error is read on a thread of its own: waited for.) It
    // says it recovers, and then that the cluster went on without it —
    // unless the others failed it before its server looked (it then simply
    // rejoins), or, on a loaded machine, before it even restarted.
    let said = lines_until(&hosts[1].stderr, "rejoined: copies of");
    let recovered = said.iter().any(|l| l.contains("copy logs: recovering"));
    let went_on = said.iter().any(|l| l.contains("the cluster went on without it"));
    assert!(!went_on || recovered, "{}", said.join("\n"));
    if !went_on {
        eprintln!("host 1 was failed before its server looked (recovering said: {recovered}): it rejoined by copy");
    }
    write(&all(&hosts), 120, 130);
    check(&hosts, 130, 270 + 130);

    // Every host killed again, and one of them does not come back with
    // the others: they fail it and resume without it (every partition
    // has a copy on one of them); when it comes back it rejoins by copy.
    // Its copy of partition logs started afresh with the copy it took.
    kill(&mut hosts);
    drop(hosts);
    let first = spawn(dirs[0].path(), &ARGS);
    let third = spawn(dirs[2].path(), &ARGS);
    let (first, third) = (first.ready(), third.ready());
    let failed = |addr: &str| states(addr).iter().any(|(h, s)| *h == 1 && s == "FAILED");
    eventually("host 1 is declared failed", || failed(&first.client));
    let pair = [first, third];
    assert_eq!(count_and_sum(&pair[0].client), (130, 400));
    write(&all(&pair), 130, 140);
    let second = spawn(dirs[1].path(), &ARGS).ready();
    let [first, third] = pair;
    let hosts = vec![first, second, third];
    check(&hosts, 140, 400 + 140);
}

/// The lowest and highest `touched` of the rows (all through `addr`).
fn touched(addr: &str) -> (i64, i64) {
    let r = settled_sql(addr, "SELECT MIN(touched), MAX(touched) FROM accounts", vec![]);
    match (&r.tables[0].rows[0][0], &r.tables[0].rows[0][1]) {
        (Value::Integer(lo), Value::Integer(hi)) => (*lo, *hi),
        other => panic!("{other:?}"),
    }
}

/// The whole cluster stops while a multi-partition transaction is in
/// doubt — a partition's leader died after its replica held the prepared
/// writes, or right after it committed — and before the coordinator could
/// settle it: after the restart the coordinator settles it from what the
/// copy logs brought back, the same way on every partition.
#[test]
fn a_transaction_in_doubt_when_the_whole_cluster_stops_is_settled_alike_everywhere() {
    let (dirs, mut hosts) = logged_cluster(
        "restart-doubt",
        &[],
        "CREATE TABLE accounts (id BIGINT NOT NULL PRIMARY KEY, touched BIGINT NOT NULL); \
         PARTITION TABLE accounts ON COLUMN id;",
    );
    for id in 0..30 {
        sql(&hosts[0].client, "INSERT INTO accounts VALUES (?, 0)", vec![Value::Integer(id)]);
    }
    let mut expected = 0;
    for point in ["leader-after-prepare", "leader-after-commit"] {
        let topo = stats(&hosts[0].client, "TOPO");
        let coordinator: usize = topo.last().unwrap()[2].split(':').next().unwrap().parse().unwrap();
        let victim = (coordinator + 1) % 3;
        arm(dirs[victim].path(), point);
        let via = hosts[coordinator].client.clone();
        let update = std::thread::spawn(move || {
            connect(&via).call("@AdHoc", vec![Value::from("UPDATE accounts SET touched = touched + 1")])
        });
        assert!(
            wait_until(Duration::from_secs(30), || hosts[victim].child.try_wait().ok().flatten().is_some()),
            "the failpoint {point} did not stop host {victim}"
        );
        // Before failure detection (3 s) lets anyone settle it.
        kill(&mut hosts);
        let answer = update.join().unwrap();
        assert!(answer.is_err(), "{point}: the update cannot have been confirmed: {answer:?}");
        drop(hosts);
        disarm(dirs[victim].path());
        let starting: Vec<Starting> = dirs.iter().map(|d| spawn(d.path(), &ARGS)).collect();
        hosts = starting.into_iter().map(Starting::ready).collect();
        all_up_and_led(&hosts);
        let (lo, hi) = touched(&hosts[0].client);
        // The restarted coordinator found it in doubt and settled it.
        let mut settled = Vec::new();
        let found = wait_until(Duration::from_secs(10), || {
            settled.extend(hosts.iter().flat_map(|h| h.stderr.try_iter()));
            settled.iter().any(|l| l.contains("settled (") && l.contains("with its leader"))
        });
        assert!(found, "{point}: no host said it settled the transaction in doubt");
        assert_eq!(lo, hi, "{point}: the transaction in doubt was settled differently on different partitions");
        assert!(lo == expected || lo == expected + 1, "{point}: {lo}, expected {expected} or one more");
        if point == "leader-after-prepare" {
            assert_eq!(lo, expected, "{point}: no partition committed it, so it is rolled back");
        }
        let clients: Vec<String> = hosts.iter().map(|h| h.client.clone()).collect();
        eventually("the copies agree", || replicas_agree(&clients, 2).is_ok());
        settled_sql(&hosts[1].client, "UPDATE accounts SET touched = touched + 1", vec![]);
        expected = lo + 1;
        assert_eq!(touched(&hosts[2].client), (expected, expected));
    }
}

/// Copy logs past their limit (`segment_mb`, 1 MB here) compact: a
/// frozen copy of the partition becomes a new generation's base and the
/// generations before it go. A whole-cluster restart then starts from
/// those bases.
#[test]
fn copy_logs_compact_and_a_whole_cluster_restart_starts_from_the_compacted_copies() {
    let config_dir = TempDir::new("restart-compact-config");
    std::fs::create_dir_all(config_dir.path()).unwrap();
    let config = config_dir.path().join("joule.toml");
    std::fs::write(&config, "[command_log]\nsegment_mb = 1\n").unwrap();
    let config = config.to_str().unwrap().to_string();
    let mut args: Vec<&str> = ARGS.to_vec();
    args.extend(["--config", config.as_str()]);
    let (dirs, mut hosts) = logged_cluster(
        "restart-compact",
        &["--config", config.as_str()],
        "CREATE TABLE blob (k BIGINT NOT NULL PRIMARY KEY, v VARCHAR(20000) NOT NULL); PARTITION TABLE blob ON COLUMN k;",
    );
    // About 2 MB of records per partition on each of its two copies.
    const ROWS: i64 = 600;
    let value = "x".repeat(10_000);
    let mut c = connect(&hosts[0].client);
    for k in 0..ROWS {
        c.call(
            "@AdHoc",
            vec![Value::from("INSERT INTO blob VALUES (?, ?)"), Value::Integer(k), Value::from(value.as_str())],
        )
        .unwrap();
    }
    drop(c);
    let compacted = |d: &TempDir| -> usize {
        let Ok(parts) = std::fs::read_dir(d.path().join("copies")) else { return 0 };
        parts
            .filter_map(|p| std::fs::read_dir(p.ok()?.path()).ok())
            .map(|files| files.filter_map(|f| Some(f.ok()?.file_name().to_str()?.to_string())).collect::<Vec<_>>())
            .filter(|names| {
                names.iter().any(|n| n.ends_with(".base")) && !names.iter().any(|n| n == "0000000000000001.log")
            })
            .count()
    };
    eventually("every copy's log compacted", || dirs.iter().map(compacted).sum::<usize>() == 6);
    sql(&hosts[1].client, "UPDATE blob SET v = 'short' WHERE k < 10", vec![]);
    kill(&mut hosts);
    drop(hosts);
    let starting: Vec<Starting> = dirs.iter().map(|d| spawn(d.path(), &args)).collect();
    let hosts: Vec<Host> = starting.into_iter().map(Starting::ready).collect();
    all_up_and_led(&hosts);
    let r = settled_sql(&hosts[2].client, "SELECT COUNT(*), SUM(CHAR_LENGTH(v)) FROM blob", vec![]);
    assert_eq!(r.tables[0].rows[0][0], Value::Integer(ROWS));
    assert_eq!(r.tables[0].rows[0][1], Value::Integer((ROWS - 10) * 10_000 + 10 * 5));
    let clients: Vec<String> = hosts.iter().map(|h| h.client.clone()).collect();
    eventually("the copies agree", || replicas_agree(&clients, 2).is_ok());
}

/// A host whose copy log cannot be written (here a file-size limit, as on
/// a full disk) stops with the I/O error; the others fail it and go on,
/// nothing acknowledged is lost, and started again without the limit it
/// rejoins with identical copies.
#[test]
fn a_host_that_cannot_write_its_copy_log_stops_and_nothing_acknowledged_is_lost() {
    let (dirs, mut hosts) = logged_cluster(
        "restart-full",
        &[],
        "CREATE TABLE kv (k BIGINT NOT NULL PRIMARY KEY, v VARCHAR(400) NOT NULL); PARTITION TABLE kv ON COLUMN k;",
    );
    // Host 2 again, under a 1 MB file-size limit (its copies arrive anew).
    let _ = hosts[2].child.kill();
    let _ = hosts[2].child.wait();
    hosts[2] = spawn_limited(dirs[2].path(), &ARGS, 2048).ready();
    eventually("host 2 is up again", || states(&hosts[0].client).iter().all(|(_, s)| s == "UP"));
    let mut acked = Vec::new();
    let mut tried = Vec::new();
    let value = "v".repeat(300);
    let mut c = connect(&hosts[0].client);
    for k in 0..20_000i64 {
        if hosts[2].child.try_wait().ok().flatten().is_some() {
            break;
        }
        tried.push(k);
        let call = vec![Value::from("INSERT INTO kv VALUES (?, ?)"), Value::Integer(k), Value::from(value.as_str())];
        if c.call("@AdHoc", call).is_ok() {
            acked.push(k);
        }
    }
    drop(c);
    let status = hosts[2].child.wait().unwrap();
    assert!(!status.success(), "host 2 stopped with a failure status");
    let (told, said) =
        says(&hosts[2].stderr, |l| l.contains("J6001") && l.contains("copy log") && l.contains("this host stops"));
    assert!(told, "host 2 said:\n{}", said.join("\n"));
    assert!(acked.len() > 100, "{} writes before the limit", acked.len());
    // The others go on, with every acknowledged row.
    eventually("host 2 is declared failed", || states(&hosts[0].client).iter().any(|(h, s)| *h == 2 && s == "FAILED"));
    let present: Vec<i64> = settled_sql(&hosts[1].client, "SELECT k FROM kv ORDER BY k", vec![]).tables[0]
        .rows
        .iter()
        .map(|r| match r[0] {
            Value::Integer(k) => k,
            ref other => panic!("{other:?}"),
        })
        .collect();
    for k in &acked {
        assert!(present.binary_search(k).is_ok(), "acknowledged row {k} is missing");
    }
    assert!(present.iter().all(|k| tried.contains(k)), "a row nobody wrote");
    settled_sql(&hosts[0].client, "INSERT INTO kv VALUES (-1, 'after')", vec![]);
    // Without the limit it rejoins.
    hosts[2] = spawn(dirs[2].path(), &ARGS).ready();
    let clients: Vec<String> = hosts.iter().map(|h| h.client.clone()).collect();
    eventually("every host is up", || states(&hosts[0].client).iter().all(|(_, s)| s == "UP"));
    eventually("the copies agree", || replicas_agree(&clients, 2).is_ok());
}

/// Both copies of a partition lost at once while the third host runs on
/// (it alone is no majority, so neither is declared failed then). The
/// first to restart is failed by the running host and finds its copy
/// stale — a leader was named for the partition while it was down — so it
/// waits rather than bring the partition back from it. The other, whose
/// copy no leader went on without, brings the partition back from its copy
/// log; then the first, still waiting, rejoins by copy. Nothing
/// acknowledged is lost.
#[test]
fn a_partition_whose_copies_all_stopped_is_brought_back_from_a_current_copy_log() {
    let (dirs, mut hosts) = logged_cluster(
        "restart-revive",
        &[],
        "CREATE TABLE kv (k BIGINT NOT NULL PRIMARY KEY, v BIGINT NOT NULL); PARTITION TABLE kv ON COLUMN k;",
    );
    write(&all(&hosts), 0, 60);
    for h in &mut hosts[..2] {
        let _ = h.child.kill();
        let _ = h.child.wait();
    }
    // Host 0 first: failed by host 2 at once, its copy of the partition it
    // shares with host 1 stale; it waits, and says why.
    let mut first = spawn(dirs[0].path(), &ARGS);
    let mut said = Vec::new();
    let waits = wait_until(Duration::from_secs(90), || {
        said.extend(first.stderr.try_iter());
        said.iter().any(|l| l.contains("waits for partitions") && l.contains("--accept-data-loss"))
    });
    assert!(waits, "host 0 said:\n{}", said.join("\n"));
    assert!(first.child.try_wait().unwrap().is_none(), "host 0 waits, it does not stop");
    // Host 1 brings it back from its log; host 0 then takes a copy.
    let second = spawn(dirs[1].path(), &ARGS).ready();
    wait_line(&second.stderr, "brought back from this host's copy log");
    let third = hosts.pop().unwrap();
    drop(hosts);
    let first = first.ready();
    let hosts = vec![first, second, third];
    check(&hosts, 60, 60);
}
