//! Multi-host clusters of real `joule` processes on loopback, on ports
//! chosen at run time: forming, failure detection after `kill -9` and
//! `SIGSTOP`, a killed host taking its place again, `@StopNode`, and what
//! `@Statistics` and `joule status` say at each step.

mod common;

use common::cluster::*;
use common::TempDir;
use joule_common::{ErrorCode, Value};
use std::process::Command;
use std::time::Duration;

#[test]
fn three_hosts_form_fail_over_rejoin_and_stop() {
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("cluster-{i}"))).collect();
    let mut hosts = form(&dirs, 1);
    assert_eq!(hosts.iter().map(|h| h.id).collect::<Vec<_>>(), vec![0, 1, 2]);

    // Every host sees the same cluster: 3 hosts up, 3 partitions with two
    // copies each on distinct hosts, one leader each, leaders spread.
    for h in &hosts {
        assert_eq!(states(&h.client), vec![(0, "UP".into()), (1, "UP".into()), (2, "UP".into())]);
        let recorded: Vec<String> = stats(&h.client, "CLUSTER").into_iter().map(|r| r[1].clone()).collect();
        assert_eq!(recorded, hosts.iter().map(|h| h.internal.clone()).collect::<Vec<_>>());
        let topo = stats(&h.client, "TOPO");
        assert_eq!(topo.len(), 4, "{topo:?}");
        for r in &topo[..3] {
            let copies: Vec<&str> = r[1].split(',').map(|s| s.split(':').next().unwrap()).collect();
            assert_eq!(copies.len(), 2);
            assert_ne!(copies[0], copies[1]);
        }
        let leaders: std::collections::BTreeSet<&str> = topo[..3].iter().map(|r| r[2].as_str()).collect();
        assert_eq!(leaders.len(), 3, "one partition led by each host: {topo:?}");
        assert_eq!(stats(&h.client, "PARTITIONCOUNT")[0][3], "3");
        assert!(stats(&h.client, "KSAFETY").iter().all(|r| r[4] == "0"));
    }
    let first = status(&hosts[1].client);
    assert!(first.starts_with("3 of 3 hosts up, k-factor 1, 3 partitions; redundancy full"), "{first}");

    // DDL made through one host reaches all; rows written through any host
    // land on their partition's two copies; every host reads them all.
    sql(
        &hosts[1].client,
        "CREATE TABLE t (id BIGINT NOT NULL PRIMARY KEY, v VARCHAR(20)); PARTITION TABLE t ON COLUMN id; \
         CREATE TABLE colors (name VARCHAR(10) NOT NULL PRIMARY KEY);",
        vec![],
    );
    for id in 0..60i64 {
        let via = &hosts[id as usize % 3].client;
        sql(via, "INSERT INTO t VALUES (?, ?)", vec![Value::Integer(id), Value::from(format!("v{id}").as_str())]);
    }
    sql(&hosts[2].client, "INSERT INTO colors VALUES ('red')", vec![]);
    for h in &hosts {
        assert_eq!(scalar(&h.client, "SELECT COUNT(*) FROM t"), 60);
        assert_eq!(scalar(&h.client, "SELECT COUNT(*) FROM colors"), 1);
        let row = sql(&h.client, "SELECT v FROM t WHERE id = ?", vec![Value::Integer(42)]);
        assert_eq!(row.tables[0].rows, vec![vec![Value::from("v42")]]);
    }
    let clients: Vec<String> = hosts.iter().map(|h| h.client.clone()).collect();
    assert_eq!(replicas_agree(&clients, 2), Ok(6), "3 partitions × 2 tables, two copies each");
    // A constraint violation is answered with its own code from any host.
    let e =
        connect(&hosts[0].client).call("@AdHoc", vec![Value::from("INSERT INTO t VALUES (7, 'again')")]).unwrap_err();
    assert_eq!(e.code(), joule_common::ErrorCode::UniqueViolation, "{e}");

    // kill -9 the forming host (which led the metadata group): the others
    // elect a leader, declare it failed, and lead its partitions.
    let _ = hosts[0].child.kill();
    let _ = hosts[0].child.wait();
    eventually("host 0 declared failed", || states(&hosts[1].client)[0].1 == "FAILED");
    assert!(every_partition_led_by_a_live_host(&hosts[1].client));
    assert!(
        every_partition_led_by_a_live_host(&hosts[2].client) || {
            // Host 2 may apply the change a moment later.
            std::thread::sleep(Duration::from_millis(500));
            every_partition_led_by_a_live_host(&hosts[2].client)
        }
    );
    let missing: usize = stats(&hosts[2].client, "KSAFETY").iter().map(|r| r[4].parse::<usize>().unwrap()).sum();
    assert_eq!(missing, 2, "host 0 held two partitions' copies");
    let reduced = status(&hosts[2].client);
    assert!(reduced.starts_with("2 of 3 hosts up, k-factor 1, 3 partitions; redundancy reduced"), "{reduced}");
    let log = wait_line(&hosts[1].stderr, "host 0 (");
    assert!(log.contains("failed (failure detection)"), "{log}");
    // The console's figures mark it failed (the page draws them).
    let console: serde_json::Value = serde_json::from_str(&http_get(&hosts[1].http, "/console/stats")).unwrap();
    let shown: Vec<(u64, String)> = console["cluster"]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["id"].as_u64().unwrap(), h["state"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(shown, vec![(0, "FAILED".into()), (1, "UP".into()), (2, "UP".into())]);
    // Writes go on without host 0, every one acknowledged.
    for id in 60..90i64 {
        sql(&hosts[1 + id as usize % 2].client, "INSERT INTO t VALUES (?, 'after')", vec![Value::Integer(id)]);
    }
    assert_eq!(scalar(&hosts[2].client, "SELECT COUNT(*) FROM t"), 90);

    // Started again on its data directory, host 0 takes a copy of each of
    // its partitions from their leaders and is up again; the copies agree.
    let again = spawn(dirs[0].path(), &["--host-count", "3", "--kfactor", "1"]).ready();
    assert_eq!(again.id, 0);
    hosts[0] = again;
    eventually("host 0 up again", || states(&hosts[1].client).iter().all(|(_, s)| s == "UP"));
    let full = status(&hosts[0].client);
    assert!(full.starts_with("3 of 3 hosts up, k-factor 1, 3 partitions; redundancy full"), "{full}");
    assert_eq!(scalar(&hosts[0].client, "SELECT COUNT(*) FROM t"), 90);
    let clients: Vec<String> = hosts.iter().map(|h| h.client.clone()).collect();
    assert_eq!(replicas_agree(&clients, 2), Ok(6));

    // @StopNode takes host 2 out, and its process exits.
    connect(&hosts[0].admin).call("@StopNode", vec![Value::Integer(2)]).expect("stops host 2");
    let exited = hosts[2].child.wait().unwrap();
    assert!(exited.success(), "a stopped host exits cleanly: {exited:?}");
    assert_eq!(states(&hosts[0].client)[2].1, "STOPPED");
    // Stopping another would leave a partition without a copy: refused.
    let e = connect(&hosts[0].admin).call("@StopNode", vec![Value::Integer(1)]).unwrap_err();
    assert!(e.to_string().contains("k-safety"), "{e}");
    let e = connect(&hosts[0].admin).call("@StopNode", vec![Value::Integer(7)]).unwrap_err();
    assert!(e.to_string().contains("not a member"), "{e}");
}

#[test]
fn two_k1_hosts_ride_out_the_loss_of_the_one_that_does_not_lead_the_metadata() {
    // Of two hosts, one votes in the metadata group and the other follows
    // (two voters would both be needed for every change): killed, the
    // follower is failed over by the voter alone, and comes back.
    let dirs: Vec<TempDir> = (0..2).map(|i| TempDir::new(&format!("pair-{i}"))).collect();
    let mut hosts = form(&dirs, 1);
    let voting = |addr: &str| -> Vec<(usize, usize)> {
        stats(addr, "CLUSTER").iter().map(|r| (r[7].parse().unwrap(), r[8].parse().unwrap())).collect()
    };
    // (leads the metadata group, votes) per host: the leader alone votes.
    eventually("one voter, the metadata group's leader", || {
        let v = voting(&hosts[0].client);
        v.iter().filter(|(_, votes)| *votes == 1).count() == 1 && v.iter().all(|(leads, votes)| leads == votes)
    });
    let leader = voting(&hosts[0].client).iter().position(|(leads, _)| *leads == 1).unwrap();
    let other = 1 - leader;
    sql(&hosts[0].client, "CREATE TABLE t (id BIGINT NOT NULL PRIMARY KEY); PARTITION TABLE t ON COLUMN id", vec![]);
    for id in 0..40i64 {
        sql(&hosts[id as usize % 2].client, "INSERT INTO t VALUES (?)", vec![Value::Integer(id)]);
    }
    let _ = hosts[other].child.kill();
    let _ = hosts[other].child.wait();
    let live = hosts[leader].client.clone();
    eventually("the killed host declared failed", || states(&live)[other].1 == "FAILED");
    eventually("the live host leads every partition", || every_partition_led_by_a_live_host(&live));
    for id in 40..60i64 {
        sql(&live, "INSERT INTO t VALUES (?)", vec![Value::Integer(id)]);
    }
    assert_eq!(scalar(&live, "SELECT COUNT(*) FROM t"), 60);
    // Started again on its directory, it takes its copies and is up.
    hosts[other] = spawn(dirs[other].path(), &["--host-count", "2", "--kfactor", "1"]).ready();
    eventually("both up again", || states(&live).iter().all(|(_, s)| s == "UP"));
    assert_eq!(scalar(&hosts[other].client, "SELECT COUNT(*) FROM t"), 60);
    let clients: Vec<String> = hosts.iter().map(|h| h.client.clone()).collect();
    assert_eq!(replicas_agree(&clients, 2), Ok(2), "2 partitions, two copies each");
}

#[test]
fn a_hung_host_is_declared_failed_and_stops_when_it_wakes() {
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("hung-{i}"))).collect();
    let mut hosts = form(&dirs, 1);
    let pid = hosts[2].child.id() as libc::pid_t;
    // SAFETY: signalling a child process this test started.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    eventually("the hung host declared failed", || states(&hosts[0].client)[2].1 == "FAILED");
    assert!(every_partition_led_by_a_live_host(&hosts[0].client));
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    // It finds the cluster moved on without it, and stops rather than serve.
    let status = hosts[2].child.wait().unwrap();
    assert!(!status.success());
    let said = wait_line(&hosts[2].stderr, "JouleDB stopped");
    assert!(said.contains("declared host 2 failed"), "{said}");
}

/// Calls forwarded to a host that hangs fill the forwarding connection
/// until its write blocks (the hung host reads nothing, and TCP waits for
/// it forever). Once the host is declared failed each call is answered —
/// run by the partition's new leader if it was never written, its outcome
/// unknown if it was — rather than waiting for the host to wake.
#[test]
fn calls_forwarded_to_a_hung_host_are_answered_once_it_is_declared_failed() {
    calls_forwarded_to_a_lost_host(libc::SIGSTOP, 100_000);
}

/// Calls for a killed host's partitions that come before it is declared
/// failed find no connection to it: they wait for the new leaders rather
/// than fail (they were refused as unavailable).
#[test]
fn calls_forwarded_to_a_killed_host_go_to_the_new_leaders_once_it_is_declared_failed() {
    calls_forwarded_to_a_lost_host(libc::SIGKILL, 100);
}

/// A multi-partition round of 64 MB to a partition's leader that stops
/// reading it (failpoint `session_round_unread`, then `SIGSTOP`: a host
/// that hangs mid-transaction) blocks once the connection's buffers are
/// full; it ends when that host is declared failed, and the transaction
/// rolls back, rather than holding the coordinator — and every
/// multi-partition call behind it — until the host wakes.
#[test]
fn a_multi_partition_round_to_a_hung_host_ends_once_it_is_declared_failed() {
    // More than a loopback connection's buffers hold (36 MB here) in one
    // call: the hosts take messages of up to 100 MB.
    const COLUMNS: usize = 64;
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("hung-round-{i}"))).collect();
    // (In a directory of its own, removed with the others.)
    let config_dir = TempDir::new("hung-config");
    std::fs::create_dir_all(config_dir.path()).unwrap();
    let config = config_dir.path().join("joule.toml");
    std::fs::write(&config, "max_message_bytes = 104857600\n").unwrap();
    let mut hosts = form_all(&dirs, 1, &["--config", config.to_str().unwrap()]);
    let columns: Vec<String> = (0..COLUMNS).map(|i| format!("c{i} VARCHAR(1048576)")).collect();
    let ddl = format!("CREATE TABLE wide (id BIGINT NOT NULL PRIMARY KEY, {});", columns.join(", "));
    sql(&hosts[0].client, &ddl, vec![]);
    // The coordinator takes the call; the victim leads a partition.
    let cluster = stats(&hosts[0].client, "CLUSTER");
    let coordinator = cluster.iter().position(|r| r[6] == "1").expect("a coordinator");
    let victim = (0..3).find(|h| *h != coordinator && cluster[*h][5] != "0").expect("another host leads");
    sql(&hosts[coordinator].client, "INSERT INTO wide (id) VALUES (0)", vec![]);
    arm(dirs[victim].path(), "session_round_unread");
    let entry = hosts[coordinator].client.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let marks = vec!["?"; COLUMNS + 1].join(", ");
        let mut params = vec![Value::from(format!("INSERT INTO wide VALUES ({marks})").as_str()), Value::Integer(1)];
        params.extend((0..COLUMNS).map(|_| Value::from("w".repeat(1 << 20).as_str())));
        let _ = tx.send(connect(&entry).call("@AdHoc", params).map(|_| ()));
    });
    wait_line(&hosts[victim].stderr, "failpoint session_round_unread is armed");
    let pid = hosts[victim].child.id() as libc::pid_t;
    // SAFETY: signalling a child process this test started.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let answer = rx.recv_timeout(Duration::from_secs(30));
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let _ = hosts[victim].child.kill();
    let e = answer.expect("the call is answered within 30 s").expect_err("the transaction rolls back");
    assert_eq!(e.code(), ErrorCode::Unavailable, "{e}");
    assert!(e.message().contains("failed during the transaction"), "{e}");
    // Rolled back everywhere; the coordinator takes multi-partition calls again.
    let live = hosts[coordinator].client.clone();
    eventually("the live hosts lead every partition", || every_partition_led_by_a_live_host(&live));
    assert_eq!(scalar(&live, "SELECT COUNT(*) FROM wide"), 1);
}

/// The other way round: a partition's leader answering a round with 64
/// MB (more than the loopback buffers hold) to a coordinator that stops reading it (failpoint
/// `session_answer_unread`, then `SIGSTOP`) blocks once the buffers are
/// full; once the metadata replaces that coordinator the leader gives the
/// transaction up and its site takes other calls again — it was held
/// until the old coordinator woke.
#[test]
fn a_leader_answering_a_hung_coordinator_frees_its_site_once_the_coordinator_is_replaced() {
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("hung-answer-{i}"))).collect();
    // (In a directory of its own, removed with the others.)
    let config_dir = TempDir::new("hung-config");
    std::fs::create_dir_all(config_dir.path()).unwrap();
    let config = config_dir.path().join("joule.toml");
    std::fs::write(&config, "max_message_bytes = 104857600\n").unwrap();
    let mut hosts = form_all(&dirs, 1, &["--config", config.to_str().unwrap()]);
    let ddl = "CREATE TABLE wide (id BIGINT NOT NULL PRIMARY KEY, a VARCHAR(1048576), b VARCHAR(1048576)); \
               PARTITION TABLE wide ON COLUMN id;";
    sql(&hosts[0].client, ddl, vec![]);
    // A partition led by a host that does not coordinate, and 32 rows of
    // 2 MB on it.
    let cluster = stats(&hosts[0].client, "CLUSTER");
    let coordinator = cluster.iter().position(|r| r[6] == "1").expect("a coordinator");
    let topo = stats(&hosts[0].client, "TOPO");
    let partitions = topo.len() - 1;
    let (partition, leader) = topo[..partitions]
        .iter()
        .map(|r| (r[0].parse::<usize>().unwrap(), r[2].split(':').next().unwrap().parse::<usize>().unwrap()))
        .find(|(_, l)| *l != coordinator)
        .expect("a partition another host leads");
    let ring = joule_txn::Hashinator::even(partitions as u32, 1).unwrap();
    let on_it = |k: &i64| ring.partition_for(&Value::Integer(*k)).unwrap() as usize == partition;
    let keys: Vec<i64> = (0..100_000i64).filter(on_it).take(32).collect();
    let mb = "w".repeat(1 << 20);
    for k in &keys {
        let params = vec![Value::Integer(*k), Value::from(mb.as_str()), Value::from(mb.as_str())];
        connect(&hosts[leader].client).call("WIDE.insert", params).expect("a row of 2 MB goes in");
    }
    // A read of every row through the coordinator, which stops reading
    // the leader's answer, then hangs.
    arm(dirs[coordinator].path(), "session_answer_unread");
    let entry = hosts[coordinator].client.clone();
    std::thread::spawn(move || {
        let _ = connect(&entry).call("@AdHoc", vec![Value::from("SELECT * FROM wide")]);
    });
    wait_line(&hosts[coordinator].stderr, "failpoint session_answer_unread is armed");
    let pid = hosts[coordinator].child.id() as libc::pid_t;
    // SAFETY: signalling a child process this test started.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let live = hosts[leader].client.clone();
    eventually("the hung coordinator declared failed", || states(&live)[coordinator].1 == "FAILED");
    // The partition's site takes a write within seconds.
    let options = joule_client::Options { call_timeout: Some(Duration::from_secs(20)), ..Default::default() };
    let write = joule_client::SyncConnection::connect(&live, &options).and_then(|mut c| {
        c.call("@AdHoc", vec![Value::from("DELETE FROM wide WHERE id = ?"), Value::Integer(keys[0])])
    });
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let _ = hosts[coordinator].child.kill();
    let write = write.expect("the partition's site took the write");
    assert_eq!(write.tables[0].rows[0][0], Value::Integer(1));
}

/// Host 0 of a k=1 cluster gets `signal` while calls of `value_bytes`
/// each are pipelined through host 1, a third of them for host 0's
/// partitions, over a forwarding connection opened before: every call is
/// answered within 60 s, run or (written to host 0 before it was lost)
/// of unknown outcome, none refused.
fn calls_forwarded_to_a_lost_host(signal: libc::c_int, value_bytes: usize) {
    const CALLS: usize = 600;
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("lost-forward-{signal}-{i}"))).collect();
    let mut hosts = form(&dirs, 1);
    let ddl = "CREATE TABLE big (k BIGINT NOT NULL PRIMARY KEY, v VARCHAR(200000)); PARTITION TABLE big ON COLUMN k;";
    sql(&hosts[0].client, ddl, vec![]);
    // Host 1's forwarding connection to host 0 is open.
    for k in 1_000_000..1_000_030i64 {
        sql(&hosts[1].client, "INSERT INTO big VALUES (?, 'x')", vec![Value::Integer(k)]);
    }
    let pid = hosts[0].child.id() as libc::pid_t;
    // SAFETY: signalling a child process this test started.
    unsafe { libc::kill(pid, signal) };
    let entry = hosts[1].client.clone();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let answers = rt.block_on(async move {
        let client = client_through(&entry).await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let value = "v".repeat(value_bytes);
        for k in 0..CALLS as i64 {
            let tx = tx.clone();
            let params = vec![Value::Integer(k), Value::from(value.as_str())];
            let sent = client.call_with("BIG.insert", params, move |r| drop(tx.send(r.map(|_| ()))));
            sent.expect("the call goes out");
        }
        let mut answers = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while answers.len() < CALLS {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(r)) => answers.push(r),
                _ => break,
            }
        }
        answers
    });
    let states_now = states(&hosts[1].client);
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let _ = hosts[0].child.kill();
    assert_eq!(answers.len(), CALLS, "calls unanswered 60 s on (hosts: {states_now:?})");
    let run = answers.iter().filter(|r| r.is_ok()).count();
    let unknown = answers.iter().filter(|r| matches!(r, Err(e) if e.code() == ErrorCode::OutcomeUnknown)).count();
    let refused: std::collections::BTreeSet<String> =
        answers.iter().filter_map(|r| r.as_ref().err()).map(|e| e.to_string()).collect();
    eprintln!("{run} calls ran, {unknown} ended unknown, {} refused: {refused:?}", CALLS - run - unknown);
    assert!(run >= CALLS * 2 / 3, "the calls for the other hosts' partitions and those never written ran: {run}");
    assert_eq!(run + unknown, CALLS, "none refused: {refused:?}");
    // Every call that ran is there.
    let live = hosts[1].client.clone();
    eventually("the live hosts lead every partition", || every_partition_led_by_a_live_host(&live));
    assert!(scalar(&live, "SELECT COUNT(*) FROM big") >= 30 + run as i64);
}

/// The forming host loads `--schema` once the cluster has formed, through
/// the cluster: every host has it, and its copies agree.
#[test]
fn the_forming_host_loads_the_schema_file_for_everyone() {
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("schema-{i}"))).collect();
    let schema = dirs[0].path().with_extension("sql");
    std::fs::write(
        &schema,
        "CREATE TABLE pets (id BIGINT NOT NULL PRIMARY KEY, name VARCHAR(10));\nPARTITION TABLE pets ON COLUMN id;\n\
         CREATE PROCEDURE AddPet PARTITION ON TABLE pets COLUMN id AS INSERT INTO pets VALUES (?, ?);\n",
    )
    .unwrap();
    // The forming host names itself (`--advertise`): the cluster records,
    // and the others and clients reach it by, that name.
    let hosts = form_with(&dirs, 1, &["--schema", schema.to_str().unwrap(), "--advertise", "localhost"]);
    let recorded = stats(&hosts[1].client, "CLUSTER");
    assert!(recorded[0][1].starts_with("localhost:") && recorded[0][2].starts_with("localhost:"), "{recorded:?}");
    assert!(recorded[1][1].starts_with("127.0.0.1:"), "{recorded:?}");
    for id in 0..30i64 {
        let via = &hosts[id as usize % 3].client;
        connect(via).call("AddPet", vec![Value::Integer(id), Value::from("rex")]).expect("AddPet");
    }
    for h in &hosts {
        assert_eq!(scalar(&h.client, "SELECT COUNT(*) FROM pets"), 30);
    }
    // Schema changes while writes go on: each new table is written through
    // every host at once; the replicas follow the changes in order.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (addr, stop) = (hosts[1].client.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut c = connect(&addr);
            let mut id = 1000i64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                c.call("AddPet", vec![Value::Integer(id), Value::from("kit")]).expect("AddPet during DDL");
                id += 1;
            }
        })
    };
    for t in 0..5 {
        sql(
            &hosts[t % 3].client,
            &format!("CREATE TABLE toys{t} (id BIGINT NOT NULL PRIMARY KEY, owner BIGINT); PARTITION TABLE toys{t} ON COLUMN id;"),
            vec![],
        );
        for (i, h) in hosts.iter().enumerate() {
            for k in 0..5i64 {
                let id = i as i64 * 100 + k;
                sql(&h.client, &format!("INSERT INTO toys{t} VALUES (?, 1)"), vec![Value::Integer(id)]);
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().expect("the writer");
    let clients: Vec<String> = hosts.iter().map(|h| h.client.clone()).collect();
    assert!(clients.iter().all(|c| try_states(c).is_some_and(|s| s.iter().all(|(_, st)| st == "UP"))));
    assert_eq!(replicas_agree(&clients, 2), Ok(3 * 6), "pets and five toy tables on three partitions");
    let _ = std::fs::remove_file(schema);
}

#[test]
fn mismatched_settings_are_refused_at_join() {
    let dirs: Vec<TempDir> = (0..2).map(|i| TempDir::new(&format!("mismatch-{i}"))).collect();
    let first = spawn(dirs[0].path(), &["--host-count", "2", "--kfactor", "1"]);
    let join = format!("127.0.0.1:{}", forming_port(&first));
    let out = Command::new(env!("CARGO_BIN_EXE_joule"))
        .args(["start", "--client-port", "0", "--admin-port", "0", "--http-port", "0", "--internal-port", "0"])
        .args(["--sites", "2", "--host-count", "2", "--kfactor", "0", "--join", &join, "--dir"])
        .arg(dirs[1].path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("k-factor 0 (this cluster: 1)"), "{err}");
    let mut first = first;
    let _ = first.child.kill();
    let _ = first.child.wait();
    // Settings that cannot work are refused before anything starts.
    let out = Command::new(env!("CARGO_BIN_EXE_joule"))
        .args(["start", "--host-count", "1", "--kfactor", "1", "--dir"])
        .arg(dirs[1].path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs at least 2 hosts"));
}

/// The Python package's cluster client (clients/python/tests_cluster),
/// tested with pytest against a real 3-host cluster it forms itself.
#[test]
fn python_cluster_client_tests_pass() {
    common::run_python_suite("tests_cluster");
}

/// A client connected to every host sends single-partition calls straight
/// to their partition's leader: no host forwards them.
#[test]
fn the_rust_client_routes_single_partition_calls_to_leaders() {
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("route-{i}"))).collect();
    let hosts = form(&dirs, 1);
    sql(
        &hosts[0].client,
        "CREATE TABLE kv (k BIGINT NOT NULL PRIMARY KEY, v BIGINT); PARTITION TABLE kv ON COLUMN k; \
         CREATE PROCEDURE Put PARTITION ON TABLE kv COLUMN k AS UPSERT INTO kv VALUES (?, ?);",
        vec![],
    );
    let forwarded = |selector_column: usize| -> i64 {
        hosts.iter().map(|h| stats(&h.client, "FORWARDING")[0][selector_column].parse::<i64>().unwrap()).sum()
    };
    let before = forwarded(3);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let addresses: Vec<&str> = hosts.iter().map(|h| h.client.as_str()).collect();
        let client = joule_client::Client::connect(&addresses, joule_client::Options::default()).await.unwrap();
        for k in 0..300i64 {
            client.call("Put", vec![Value::Integer(k), Value::Integer(k)]).await.expect("Put");
        }
    });
    assert_eq!(forwarded(3) - before, 0, "routed calls are not forwarded");
    assert_eq!(scalar(&hosts[1].client, "SELECT COUNT(*) FROM kv"), 300);
    // Without routing, two calls in three reach a host that forwards them.
    let before = forwarded(3);
    rt.block_on(async {
        let addresses: Vec<&str> = hosts.iter().map(|h| h.client.as_str()).collect();
        let options = joule_client::Options { route_to_leaders: false, ..Default::default() };
        let client = joule_client::Client::connect(&addresses, options).await.unwrap();
        for k in 0..300i64 {
            client.call("Put", vec![Value::Integer(k), Value::Integer(-k)]).await.expect("Put");
        }
    });
    let unrouted = forwarded(3) - before;
    assert!((150..=250).contains(&unrouted), "{unrouted} of 300 forwarded");

    // Given one host and asked to discover, the client connects to the
    // others too (from `@Statistics CLUSTER`) and routes to them.
    let before = forwarded(3);
    rt.block_on(async {
        let options = joule_client::Options { discover_hosts: true, ..Default::default() };
        let client = joule_client::Client::connect(&[hosts[1].client.as_str()], options).await.unwrap();
        assert_eq!(client.open_connections(), 3, "one connection to each host");
        for k in 0..300i64 {
            client.call("Put", vec![Value::Integer(k), Value::Integer(k * 2)]).await.expect("Put");
        }
    });
    assert_eq!(forwarded(3) - before, 0, "calls routed to hosts the client learned of are not forwarded");

    // After a move of ranges, clients route by the ring the hosts route by
    // (TOPO's second table), not the even one.
    let even = joule_common::hashinator::Hashinator::even(3, 1).unwrap();
    let (start, end) = (even.ring()[1].0, even.ring()[2].0 - 1);
    connect(&hosts[2].admin)
        .call("@MoveRange", vec![Value::Integer(start.into()), Value::Integer(end.into()), Value::Integer(0)])
        .expect("@MoveRange");
    eventually("every host routes by the new ring", || {
        hosts.iter().all(|h| {
            let r = connect(&h.client).call("@Statistics", vec![Value::from("TOPO"), Value::Integer(0)]).unwrap();
            r.tables.len() == 2 && matches!(&r.tables[1].rows[0][1], Value::Binary(b) if b.len() == 4 + 8 * 2)
        })
    });
    let before = forwarded(3);
    rt.block_on(async {
        let addresses: Vec<&str> = hosts.iter().map(|h| h.client.as_str()).collect();
        let client = joule_client::Client::connect(&addresses, joule_client::Options::default()).await.unwrap();
        for k in 0..300i64 {
            client.call("Put", vec![Value::Integer(k), Value::Integer(k * 3)]).await.expect("Put");
        }
    });
    assert_eq!(forwarded(3) - before, 0, "calls routed by the moved ring are not forwarded");
    assert_eq!(scalar(&hosts[1].client, "SELECT SUM(v) FROM kv"), 3 * 299 * 300 / 2);

    // Topology notifications: a connection that subscribed hears of a host
    // stopping, in a response with VoltDB's topology handle carrying the
    // new TOPO table, between the answers to its own calls.
    let mut watcher = common::wire::WireConnection::open(hosts[0].client.as_str());
    let subscribed = watcher.call("@Subscribe", vec![Value::from("TOPOLOGY")]);
    assert_eq!(subscribed.status, 1, "{:?}", subscribed.status_string);
    let refused = watcher.call("@Subscribe", vec![Value::from("NEWS")]);
    assert_eq!(refused.status, -2, "a graceful failure");
    assert!(refused.status_string.unwrap_or_default().contains("only TOPOLOGY"));
    connect(&hosts[0].admin).call("@StopNode", vec![Value::Integer(2)]).expect("@StopNode 2");
    let pushed = loop {
        let r = watcher.receive();
        if r.client_handle == joule_wire::TOPOLOGY_HANDLE {
            break r;
        }
    };
    let rows = &pushed.tables[0].rows;
    // The last row is the multi-partition initiator's.
    for row in &rows[..rows.len() - 1] {
        let leader = match &row[2] {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        assert!(!leader.starts_with("2:"), "partition led by the stopped host: {rows:?}");
    }
}

/// k = 2, the repair step: the link between partition 0's leader and one
/// of its two replicas hangs while a write is in flight, so one replica
/// applies the write's batch and the other never gets it; the leader is
/// killed. The new leader must bring both surviving copies to the same
/// last batch before it serves — whichever of the two it is.
#[test]
fn a_new_leader_repairs_copies_that_differ_by_the_last_batch() {
    use common::fault_proxy::Link;
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("repair-{i}"))).collect();
    let (mut hosts, mesh) = form_meshed(&dirs, 2, &[]);
    let ddl = "CREATE TABLE kv (k BIGINT NOT NULL PRIMARY KEY, v BIGINT); PARTITION TABLE kv ON COLUMN k;";
    sql(&hosts[0].client, ddl, vec![]);
    let leader_of_0 = |addr: &str| -> usize { stats(addr, "TOPO")[0][2].split(':').next().unwrap().parse().unwrap() };
    let leader = leader_of_0(&hosts[0].client);
    let (behind, ahead) = ((leader + 1) % 3, (leader + 2) % 3);
    // A key of partition 0 (two partitions: three hosts, two sites, three copies).
    let ring = joule_common::hashinator::Hashinator::even(2, 1).unwrap();
    let key = (0..).find(|k| ring.partition_for(&Value::Integer(*k)).unwrap() == 0).unwrap();
    sql(&hosts[ahead].client, "INSERT INTO kv VALUES (?, 1)", vec![Value::Integer(key + 1000)]);

    mesh.set(leader, behind, Link::Hang);
    let through = hosts[ahead].client.clone();
    let pending = std::thread::spawn(move || {
        let all = vec![Value::from("INSERT INTO kv VALUES (?, 2)"), Value::Integer(key)];
        let options = joule_client::Options { call_timeout: Some(Duration::from_secs(30)), ..Default::default() };
        joule_client::SyncConnection::connect(&through, &options).and_then(|mut c| c.call("@AdHoc", all))
    });
    // The batch reaches `ahead` and waits for `behind`, which never gets it.
    std::thread::sleep(Duration::from_millis(400));
    let _ = hosts[leader].child.kill();
    let _ = hosts[leader].child.wait();
    let answer = pending.join().unwrap();
    assert!(answer.is_err(), "the write was answered though a live replica never had it: {answer:?}");
    let dead = leader as u64;
    eventually("the leader is declared failed and partition 0 led again", || {
        let s = states(&hosts[ahead].client);
        s.iter().any(|(h, st)| *h == dead && st != "UP") && every_partition_led_by_a_live_host(&hosts[ahead].client)
    });
    let new_leader = leader_of_0(&hosts[ahead].client);
    assert_ne!(new_leader, leader);
    wait_line(&hosts[new_leader].stderr, "partition 0: repaired as its new leader");
    mesh.heal();
    // Both copies hold the write (one had applied it).
    let live = [hosts[behind].client.clone(), hosts[ahead].client.clone()];
    replicas_agree(&live, 2).unwrap();
    for addr in &live {
        assert_eq!(scalar(addr, "SELECT COUNT(*) FROM kv"), 2);
    }
    // And the partition takes writes under its new leader.
    sql(&hosts[behind].client, "INSERT INTO kv VALUES (?, 3)", vec![Value::Integer(key + 2000)]);
    replicas_agree(&live, 2).unwrap();
}

/// A host cut off from both others: they declare it failed, and it — not
/// hearing so — refuses calls once it has been out of touch for twice the
/// heartbeat timeout, so its clients go elsewhere instead of waiting on it.
/// When the network heals it learns it was failed, stops, and rejoins.
#[test]
fn a_host_cut_off_from_the_cluster_refuses_calls_then_rejoins() {
    use common::fault_proxy::Link;
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("cutoff-{i}"))).collect();
    let (mut hosts, mesh) = form_meshed(&dirs, 1, &[]);
    sql(&hosts[0].client, "CREATE TABLE kv (k BIGINT NOT NULL PRIMARY KEY); PARTITION TABLE kv ON COLUMN k;", vec![]);
    mesh.set(2, 0, Link::Hang);
    mesh.set(2, 1, Link::Hang);
    eventually("the others declare host 2 failed", || states(&hosts[0].client)[2].1 == "FAILED");
    let isolated = hosts[2].client.clone();
    let refusal = || {
        let all = vec![Value::from("INSERT INTO kv VALUES (7)")];
        let options = joule_client::Options { call_timeout: Some(Duration::from_secs(5)), ..Default::default() };
        joule_client::SyncConnection::connect(&isolated, &options).and_then(|mut c| c.call("@AdHoc", all))
    };
    eventually("host 2 refuses calls", || {
        refusal().is_err_and(|e| e.code() == joule_common::ErrorCode::Unavailable && e.message().contains("lost touch"))
    });
    // Its own figures it still answers.
    assert_eq!(states(&hosts[2].client)[2].1, "UP", "host 2 has not heard it was failed");
    wait_line(&hosts[2].stderr, "lost touch with the metadata group");
    // The others go on.
    sql(&hosts[1].client, "INSERT INTO kv VALUES (1)", vec![]);
    mesh.heal();
    let child = &mut hosts[2].child;
    assert!(wait_until(Duration::from_secs(20), || child.try_wait().ok().flatten().is_some()), "host 2 stops");
    let again = spawn(dirs[2].path(), &[&["--host-count", "3", "--kfactor", "1"][..], &mesh.args(2)].concat()).ready();
    hosts[2] = again;
    eventually("host 2 rejoined", || states(&hosts[0].client).iter().all(|(_, s)| s == "UP"));
    assert_eq!(scalar(&hosts[2].client, "SELECT COUNT(*) FROM kv"), 1);
}

/// k = 2: a host that rejoined (its copy taken at the leader's position,
/// with no batch after it) becomes a partition's leader when the leader
/// dies. Its repair step must count the copy's position as its last batch,
/// not take it for a copy that missed everything.
#[test]
fn a_rejoined_copy_can_lead_after_the_next_failure() {
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("rejoined-lead-{i}"))).collect();
    let mut hosts = form(&dirs, 2);
    kv_rows(&hosts, 20);
    let leader_of =
        |addr: &str, p: usize| -> usize { stats(addr, "TOPO")[p][2].split(':').next().unwrap().parse().unwrap() };
    // The host leading no partition rejoins.
    let leaders = [leader_of(&hosts[0].client, 0), leader_of(&hosts[0].client, 1)];
    let rejoiner = (0..3).find(|h| !leaders.contains(h)).expect("two partitions, three hosts");
    let _ = hosts[rejoiner].child.kill();
    let _ = hosts[rejoiner].child.wait();
    let other = (rejoiner + 1) % 3;
    eventually("the killed host is declared failed", || states(&hosts[other].client)[rejoiner].1 != "UP");
    hosts[rejoiner] = spawn(dirs[rejoiner].path(), &["--host-count", "3", "--kfactor", "2"]).ready();
    eventually("it rejoined", || states(&hosts[other].client).iter().all(|(_, s)| s == "UP"));
    // Partition 0's leader dies; the rejoined host, leading nothing, takes over.
    let victim = leaders[0];
    let _ = hosts[victim].child.kill();
    let _ = hosts[victim].child.wait();
    let survivor = (0..3).find(|h| *h != victim && *h != rejoiner).unwrap();
    eventually("partition 0 led again", || {
        every_partition_led_by_a_live_host(&hosts[survivor].client) && states(&hosts[survivor].client)[victim].1 != "UP"
    });
    assert_eq!(leader_of(&hosts[survivor].client, 0), rejoiner, "the host leading nothing leads partition 0");
    assert!(hosts[rejoiner].child.try_wait().unwrap().is_none(), "the new leader keeps running");
    sql(&hosts[rejoiner].client, "INSERT INTO kv VALUES (100, 100)", vec![]);
    let live = [hosts[rejoiner].client.clone(), hosts[survivor].client.clone()];
    replicas_agree(&live, 2).unwrap();
    assert_eq!(scalar(&hosts[survivor].client, "SELECT COUNT(*) FROM kv"), 21);
}

/// Hosts speaking different data-plane protocols (builds) refuse each
/// other at the first connection and say why. A connection that opens the
/// data plane with a version no build speaks gets the host's version back
/// and nothing more, and the host logs the refusal; one with the host's own
/// version is served; one with the magic of builds from before the version
/// is closed at once, said too. A host restarted as a newer build (the
/// failpoint `data-protocol-next`) stops before it replays its copy logs
/// or asks for copies, naming both versions — restarted at once after a
/// `kill -9` (it may still count as up, and would recover from its copy
/// logs; usually the refused pings have failed it already) and after it
/// was declared failed (it would ask for copies); the cluster goes on, and
/// started again as the cluster's build, the host comes back with every
/// row.
#[test]
fn hosts_of_different_builds_refuse_each_other_and_say_why() {
    use std::io::{Read, Write};
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("builds-{i}"))).collect();
    let mut hosts = form_all(&dirs, 1, &["--command-log", "async"]);
    kv_rows(&hosts, 10);
    // The data plane's magic (`joule_cluster::network::DATA_MAGIC`), `L`
    // (load figures) and a version.
    let open = |version: u16| {
        let mut s = std::net::TcpStream::connect(&hosts[0].internal).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let [v0, v1] = version.to_le_bytes();
        s.write_all(&[0xff, b'J', b'D', b'Q', b'L', v0, v1]).unwrap();
        let mut theirs = [0u8; 2];
        s.read_exact(&mut theirs).unwrap();
        (s, u16::from_le_bytes(theirs))
    };
    let (mut refused, protocol) = open(u16::MAX);
    assert_ne!(protocol, u16::MAX);
    // A request (an empty frame) gets no answer: the connection closes.
    let _ = refused.write_all(&[0, 0, 0, 0]);
    let mut byte = [0u8; 1];
    match refused.read(&mut byte) {
        Ok(0) => {}
        Err(e) if !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
        other => panic!("a refused connection was served or left open: {other:?}"),
    }
    wait_line(&hosts[0].stderr, &format!("speaks protocol {} and this host {protocol}", u16::MAX));
    let (mut served, again) = open(protocol);
    assert_eq!(again, protocol);
    served.write_all(&[0, 0, 0, 0]).unwrap();
    let mut length = [0u8; 4];
    served.read_exact(&mut length).unwrap();
    assert!(u32::from_le_bytes(length) > 0, "the load figures came back empty");
    // A build from before the version (its magic ended in `P`) is refused
    // at once.
    let mut unversioned = std::net::TcpStream::connect(&hosts[0].internal).unwrap();
    unversioned.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    unversioned.write_all(&[0xff, b'J', b'D', b'P', b'L']).unwrap();
    match unversioned.read(&mut byte) {
        Ok(0) => {}
        Err(e) if !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
        other => panic!("a connection of an unversioned build was served or left open: {other:?}"),
    }
    wait_line(&hosts[0].stderr, "a JouleDB build from before data-plane protocol versions");

    // Host 2 restarts as a newer build: at once, then once it is failed.
    let restart_newer = |dir: &std::path::Path| -> Vec<String> {
        arm(dir, "data-protocol-next");
        let mut newer = spawn(dir, &["--host-count", "3", "--kfactor", "1", "--command-log", "async"]);
        let child = &mut newer.child;
        assert!(
            wait_until(Duration::from_secs(30), || child.try_wait().ok().flatten().is_some()),
            "host 2 kept running"
        );
        assert!(!newer.child.wait().unwrap().success());
        disarm(dir);
        // (Every line: the output ended with the process.)
        newer.stderr.iter().collect()
    };
    let expected = format!("speaks data-plane protocol {protocol} and this host {}", protocol + 1);
    for failed_first in [false, true] {
        let _ = hosts[2].child.kill();
        let _ = hosts[2].child.wait();
        if failed_first {
            eventually("host 2 is declared failed", || states(&hosts[0].client)[2].1 != "UP");
        }
        let said = restart_newer(dirs[2].path());
        let stopped = said.iter().any(|l| l.contains("run different builds") && l.contains(&expected));
        assert!(stopped, "host 2 (failed first: {failed_first}) said:\n{}", said.join("\n"));
        assert!(!said.iter().any(|l| l.contains("trying again")), "host 2 asked again:\n{}", said.join("\n"));
        // The cluster goes on.
        let k = 100 + i64::from(failed_first);
        sql(&hosts[0].client, "INSERT INTO kv VALUES (?, ?)", vec![Value::Integer(k), Value::Integer(k)]);
        // The same build again: it comes back with every row.
        hosts[2] = spawn(dirs[2].path(), &["--host-count", "3", "--kfactor", "1", "--command-log", "async"]).ready();
        eventually("host 2 is back", || states(&hosts[0].client).iter().all(|(_, s)| s == "UP"));
        let clients: Vec<String> = hosts.iter().map(|h| h.client.clone()).collect();
        replicas_agree(&clients, 2).unwrap();
        assert_eq!(scalar(&hosts[2].client, "SELECT COUNT(*) FROM kv"), 11 + i64::from(failed_first));
    }
}

/// A connection to a host's internal port that opens the data plane and
/// then says nothing is closed after 2 s, and holds up nothing meanwhile:
/// calls through another host that need a new data-plane connection to
/// this one (forwarded to the partition it leads) go through at once.
#[test]
fn a_silent_data_plane_connection_is_closed_and_holds_up_nothing() {
    use std::io::{Read, Write};
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("silent-{i}"))).collect();
    let hosts = form(&dirs, 1);
    sql(&hosts[0].client, "CREATE TABLE kv (k BIGINT NOT NULL PRIMARY KEY); PARTITION TABLE kv ON COLUMN k;", vec![]);
    let mut silent = std::net::TcpStream::connect(&hosts[1].internal).unwrap();
    // The data plane's magic (`joule_cluster::network::DATA_MAGIC`), and no
    // byte saying what the connection carries.
    silent.write_all(&[0xff, b'J', b'D', b'Q']).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let options = joule_client::Options { call_timeout: Some(Duration::from_millis(1500)), ..Default::default() };
    let mut c = joule_client::SyncConnection::connect(&hosts[0].client, &options).unwrap();
    for k in 0..30 {
        c.call("@AdHoc", vec![Value::from("INSERT INTO kv VALUES (?)"), Value::Integer(k)])
            .unwrap_or_else(|e| panic!("insert {k} while a silent connection is open: {e}"));
    }
    // TO_PARTITION_LEADERS, the second-last column.
    let forwarded: i64 =
        stats(&hosts[0].client, "FORWARDING").iter().map(|r| r[r.len() - 2].parse::<i64>().unwrap()).sum();
    assert!(forwarded > 0, "no insert needed another host");
    silent.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = std::time::Instant::now();
    let mut byte = [0u8; 1];
    match silent.read(&mut byte) {
        Ok(0) => {}
        Err(e) if !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
        other => panic!("the silent connection is still open after {:?}: {other:?}", started.elapsed()),
    }
    assert_eq!(scalar(&hosts[2].client, "SELECT COUNT(*) FROM kv"), 30);
}

/// Every host stopped at once, with no copy logs (`--command-log off`), so
/// its data is gone: a restarted host says so and refuses to start rather
/// than serve an empty database in its place. Told to accept the loss
/// (`--accept-data-loss`), the hosts come back empty and work.
#[test]
fn a_whole_cluster_restart_refuses_to_come_back_empty_unless_told() {
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("wholestop-{i}"))).collect();
    let mut hosts = form(&dirs, 1);
    sql(&hosts[0].client, "CREATE TABLE kv (k BIGINT NOT NULL PRIMARY KEY); PARTITION TABLE kv ON COLUMN k;", vec![]);
    for k in 0..10 {
        sql(&hosts[1].client, "INSERT INTO kv VALUES (?)", vec![Value::Integer(k)]);
    }
    for h in &mut hosts {
        let _ = h.child.kill();
        let _ = h.child.wait();
    }
    drop(hosts);
    let args = ["--host-count", "3", "--kfactor", "1"];
    let mut starting: Vec<Starting> = dirs.iter().map(|d| spawn(d.path(), &args)).collect();
    let mut told = 0;
    for s in &mut starting {
        let child = &mut s.child;
        assert!(
            wait_until(Duration::from_secs(90), || child.try_wait().ok().flatten().is_some()),
            "a host kept running"
        );
        assert!(!child.wait().unwrap().success());
        let said: Vec<String> = s.stderr.try_iter().collect();
        // Each refuses. The last ones may fail another way first: their
        // metadata may never learn that the others went down (or lose its
        // quorum when they stop), so they give up waiting for a copy or for
        // the group, within a minute. None comes up.
        let empty = said.iter().any(|l| l.contains("would come back empty") && l.contains("--accept-data-loss"));
        // Either way it stops with an error of its own, not a crash.
        let gave_up = said.iter().any(|l| l.starts_with("error: [J4004 ") || l.starts_with("error: [J4006 "));
        assert!(empty || gave_up, "the host said:\n{}", said.join("\n"));
        told += usize::from(empty);
    }
    assert!(told >= 1, "no host said its partitions would come back empty");
    drop(starting);
    let args = ["--host-count", "3", "--kfactor", "1", "--accept-data-loss"];
    let starting: Vec<Starting> = dirs.iter().map(|d| spawn(d.path(), &args)).collect();
    let hosts: Vec<Host> = starting.into_iter().map(Starting::ready).collect();
    all_up_and_led(&hosts);
    // The table is gone (a read refused as `Unavailable` while leadership
    // settles is tried again).
    eventually("the old table is gone", || {
        match connect(&hosts[0].client).call("@AdHoc", vec![Value::from("SELECT COUNT(*) FROM kv")]) {
            Ok(r) => panic!("the table came back: {r:?}"),
            Err(e) => e.message().contains("KV"),
        }
    });
    // Leadership may still be settling on the hosts (`Unavailable`, safe to
    // call again).
    let ddl = "CREATE TABLE kv (k BIGINT NOT NULL PRIMARY KEY); PARTITION TABLE kv ON COLUMN k;";
    eventually("the schema can be created again", || {
        connect(&hosts[2].client).call("@AdHoc", vec![Value::from(ddl)]).is_ok()
    });
    for k in 0..10 {
        sql(&hosts[0].client, "INSERT INTO kv VALUES (?)", vec![Value::Integer(k)]);
    }
    let clients: Vec<String> = hosts.iter().map(|h| h.client.clone()).collect();
    replicas_agree(&clients, 2).unwrap();
    assert_eq!(scalar(&hosts[1].client, "SELECT COUNT(*) FROM kv"), 10);
}

/// A rejoining host whose request for a copy goes unanswered (the leader
/// sends the copy, the answer is lost: failpoint `rejoin_answer_lost`)
/// does not ask again — a second copy would come after the first and be
/// refused once the first is whole — but waits for the copy on its way,
/// and rejoins with it.
#[test]
fn a_rejoin_whose_request_goes_unanswered_waits_for_the_copy_on_its_way() {
    let (dirs, mut hosts) = host_2_failed_with_leaders_armed("rejoin-unanswered", "rejoin_answer_lost");
    let started = spawn(dirs[2].path(), &["--host-count", "3", "--kfactor", "1"]);
    let waited = wait_line(&started.stderr, "did not answer the request for a copy");
    assert!(waited.contains("waiting for the copy it may be sending"), "{waited}");
    hosts[2] = started.ready();
    eventually("host 2 rejoined", || states(&hosts[0].client).iter().all(|(_, s)| s == "UP"));
    for dir in &dirs[..2] {
        disarm(dir.path());
    }
    sql(&hosts[2].client, "INSERT INTO kv VALUES (100, 100)", vec![]);
    let clients: Vec<String> = hosts.iter().map(|h| h.client.clone()).collect();
    replicas_agree(&clients, 2).unwrap();
    assert_eq!(scalar(&hosts[2].client, "SELECT COUNT(*) FROM kv"), 51);
}

/// A rejoining host whose request for a copy is lost before the leader
/// acts on it (failpoint `rejoin_request_lost`) waits for a copy that is not
/// coming only until nothing of it has arrived for 60 s: it then gives the
/// start up with an error saying so (rather than waiting 10 minutes), and
/// started again it rejoins.
#[test]
fn a_rejoin_whose_request_is_lost_gives_up_once_nothing_arrives_and_starts_again() {
    let (dirs, mut hosts) = host_2_failed_with_leaders_armed("rejoin-lost", "rejoin_request_lost");
    let mut started = spawn(dirs[2].path(), &["--host-count", "3", "--kfactor", "1"]);
    let waited = wait_line(&started.stderr, "did not answer the request for a copy");
    assert!(waited.contains("waiting for the copy it may be sending"), "{waited}");
    let asked = std::time::Instant::now();
    let deadline = asked + std::time::Duration::from_secs(120);
    let status = loop {
        if let Some(status) = started.child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "host 2 still waits for a copy that is not coming");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(!status.success(), "the start is given up: {status:?}");
    let said = wait_line(&started.stderr, "arrived for 60 s");
    assert!(said.contains("start this host again"), "{said}");
    assert!(asked.elapsed() >= std::time::Duration::from_secs(55), "given up after {:?}", asked.elapsed());
    for dir in &dirs[..2] {
        disarm(dir.path());
    }
    hosts[2] = spawn(dirs[2].path(), &["--host-count", "3", "--kfactor", "1"]).ready();
    eventually("host 2 rejoined", || states(&hosts[0].client).iter().all(|(_, s)| s == "UP"));
    let clients: Vec<String> = hosts.iter().map(|h| h.client.clone()).collect();
    replicas_agree(&clients, 2).unwrap();
    assert_eq!(scalar(&hosts[2].client, "SELECT COUNT(*) FROM kv"), 50);
}

/// Three hosts formed with k=1 and 50 kv rows (`kv_rows`); host 2 killed
/// and declared failed, and the failpoint `point` armed on hosts 0 and 1
/// (the leaders it will ask for copies when started again).
fn host_2_failed_with_leaders_armed(name: &str, point: &str) -> (Vec<TempDir>, Vec<Host>) {
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("{name}-{i}"))).collect();
    let mut hosts = form(&dirs, 1);
    kv_rows(&hosts[..2], 50);
    let _ = hosts[2].child.kill();
    let _ = hosts[2].child.wait();
    eventually("host 2 is declared failed", || states(&hosts[0].client)[2].1 != "UP");
    for dir in &dirs[..2] {
        arm(dir.path(), point);
    }
    (dirs, hosts)
}

/// A partitioned table `kv (k, v)` with rows `(k, k)` for `k` below
/// `rows`, inserted through `hosts` in turn.
fn kv_rows(hosts: &[Host], rows: i64) {
    let ddl = "CREATE TABLE kv (k BIGINT NOT NULL PRIMARY KEY, v BIGINT); PARTITION TABLE kv ON COLUMN k;";
    sql(&hosts[0].client, ddl, vec![]);
    for k in 0..rows {
        let via = &hosts[k as usize % hosts.len()].client;
        sql(via, "INSERT INTO kv VALUES (?, ?)", vec![Value::Integer(k), Value::Integer(k)]);
    }
}
