//! `joule start` as a real process on ports chosen at run time, spoken to
//! over real sockets with the wire codec and with VoltDB's own Python
//! client, and stopped for real (`@Shutdown`, SIGTERM).

use joule_common::Value;
use joule_wire::frame::{payload_len, write_frame};
use joule_wire::{ClientResponse, HashScheme, Invocation, Param};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;

use common::wire::WireConnection as Conn;
use common::{rand_suffix, start_in, Node, TempDir};

/// A node in a fresh data directory (removed with the returned guard).
fn start(extra: &[&str]) -> NodeInDir {
    let dir = TempDir::new("test");
    let node = start_in(dir.path(), extra);
    NodeInDir { node, _dir: dir }
}

struct NodeInDir {
    node: Node,
    _dir: TempDir,
}

impl std::ops::Deref for NodeInDir {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}

impl std::ops::DerefMut for NodeInDir {
    fn deref_mut(&mut self) -> &mut Node {
        &mut self.node
    }
}

fn s(x: &str) -> Value {
    Value::String(x.into())
}

#[test]
fn serves_the_voltdb_protocol_and_shuts_down_on_request() {
    let mut node = start(&[]);
    let mut c = Conn::open(("127.0.0.1", node.client));
    let r = c.call(
        "@AdHoc",
        vec![s("CREATE TABLE kv (k BIGINT NOT NULL PRIMARY KEY, v VARCHAR(20)); PARTITION TABLE kv ON COLUMN k")],
    );
    assert_eq!(r.status, 1, "{r:?}");
    assert_eq!(c.call("@Ping", vec![]).status, 1);
    // Pipelined: many requests in flight, answered by handle.
    for h in 0..200i64 {
        c.invoke(h, "KV.insert", vec![Value::Integer(h), s(&format!("v{h}"))]);
    }
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..200 {
        let r = ClientResponse::decode(&c.recv().unwrap()).unwrap();
        assert_eq!(r.status, 1, "{r:?}");
        seen.insert(r.client_handle);
    }
    assert_eq!(seen.len(), 200);
    let r = c.call("@AdHoc", vec![s("SELECT COUNT(*), MAX(v) FROM kv")]);
    assert_eq!(r.tables[0].rows, vec![vec![Value::Integer(200), s("v99")]]);
    assert_eq!(r.tables[0].columns[0].1, joule_wire::VoltType::BigInt);
    // Errors carry VoltDB's status and JouleDB's code.
    let r = c.call("KV.insert", vec![Value::Integer(1), s("dup")]);
    assert_eq!(r.status, -2);
    assert!(r.status_string.unwrap().contains("J2007"));
    let r = c.call("Nope", vec![]);
    assert!(r.status_string.unwrap().contains("J4001"));
    // A bad frame closes that connection only.
    let mut bad = TcpStream::connect(("127.0.0.1", node.client)).unwrap();
    bad.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    bad.write_all(&(-5i32).to_be_bytes()).unwrap();
    let mut sink = Vec::new();
    let _ = bad.read_to_end(&mut sink);
    assert_eq!(c.call("@Ping", vec![]).status, 1);
    // @Shutdown on the admin port stops the process cleanly.
    let mut admin = Conn::open(("127.0.0.1", node.admin));
    assert_eq!(admin.call("@Shutdown", vec![]).status, 1);
    let status = node.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn users_and_roles_from_the_configuration_file() {
    let conf = std::env::temp_dir().join(format!("joule-conf-{}.toml", rand_suffix()));
    std::fs::write(
        &conf,
        "[[users]]\nname = \"admin\"\npassword = \"s3cret\"\nroles = [\"administrator\"]\n\
         [[users]]\nname = \"app\"\npassword = \"pw\"\nroles = [\"user\"]\n",
    )
    .unwrap();
    let mut node = start(&["--config", conf.to_str().unwrap()]);
    let _ = std::fs::remove_file(&conf);
    assert_eq!(Conn::login(("127.0.0.1", node.client), "app", "wrong", HashScheme::Sha256).err(), Some(-1));
    assert_eq!(Conn::login(("127.0.0.1", node.client), "nobody", "pw", HashScheme::Sha256).err(), Some(-1));
    assert_eq!(Conn::login(("127.0.0.1", node.client), "", "", HashScheme::Sha256).err(), Some(-1));
    let mut app = Conn::login(("127.0.0.1", node.client), "app", "pw", HashScheme::Sha1).expect("SHA-1 login");
    assert_eq!(app.call("@Ping", vec![]).status, 1);
    // @Pause (admin port) leaves only the admin port taking work.
    let mut admin_port = Conn::login(("127.0.0.1", node.admin), "app", "pw", HashScheme::Sha256).unwrap();
    assert_eq!(admin_port.call("@Pause", vec![]).status, 1);
    assert_eq!(app.call("@AdHoc", vec![s("SELECT 1 FROM (VALUES (1)) v(x)")]).status, -5);
    assert_eq!(admin_port.call("@Ping", vec![]).status, 1);
    assert_eq!(admin_port.call("@Resume", vec![]).status, 1);
    assert_eq!(app.call("@Ping", vec![]).status, 1);
    // Admin procedures need the role or the admin port.
    let r = app.call("@Shutdown", vec![]);
    assert!(r.status_string.unwrap().contains("J4005"));
    // Snapshot changes are administrators' too; reading their status is not.
    for (name, params) in [
        ("@SnapshotSave", vec![s(""), s("n1"), Value::Integer(1)]),
        ("@SnapshotRestore", vec![s(""), s("n1")]),
        ("@SnapshotDelete", vec![s(""), s("n1")]),
    ] {
        let r = app.call(name, params);
        assert!(r.status_string.unwrap().contains("J4005"), "{name}");
    }
    assert_eq!(app.call("@Statistics", vec![s("SNAPSHOTSTATUS"), Value::Integer(0)]).status, 1);
    let mut admin = Conn::login(("127.0.0.1", node.client), "admin", "s3cret", HashScheme::Sha256).unwrap();
    assert_eq!(admin.call("@Shutdown", vec![]).status, 1);
    assert!(node.child.wait().unwrap().success());
}

/// Resident memory of a process, from /proc (Linux), in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_flood_gets_backpressure_from_the_server_wide_bound() {
    flood("max_outstanding_per_connection = 200\nmax_queued_requests = 100\n", "queued work");
}

#[test]
fn a_flood_gets_backpressure_from_the_connection_bound() {
    flood("max_outstanding_per_connection = 100\nmax_queued_requests = 100000\n", "on this connection");
}

/// Flood a node configured with `config` from one client that reads
/// nothing; check memory, another client's service, and that every
/// request is answered, some with the backpressure answer naming `bound`.
fn flood(config: &str, bound: &str) {
    let conf = std::env::temp_dir().join(format!("joule-flood-{}.toml", rand_suffix()));
    std::fs::write(&conf, config).unwrap();
    let node = start(&["--config", conf.to_str().unwrap()]);
    let _ = std::fs::remove_file(&conf);
    let mut setup = Conn::open(("127.0.0.1", node.client));
    assert_eq!(
        setup.call("@AdHoc", vec![s("CREATE TABLE f (k BIGINT NOT NULL PRIMARY KEY, v VARCHAR(100))")]).status,
        1
    );
    assert_eq!(setup.call("F.insert", vec![Value::Integer(1), s(&"x".repeat(100))]).status, 1);
    let before = rss_kib(node.child.id());

    // A client that writes 200,000 requests and reads nothing yet.
    let flood = Conn::open(("127.0.0.1", node.client));
    let mut writer = flood.0.try_clone().unwrap();
    let sent: i64 = 200_000;
    let flooder = std::thread::spawn(move || {
        let inv = |h: i64| {
            Invocation {
                version: 0,
                procedure: "F.select".into(),
                client_handle: h,
                batch_timeout_ms: None,
                params: vec![Param::Value(Value::Integer(1))],
            }
            .encode()
            .unwrap()
        };
        let mut buf = Vec::new();
        for h in 0..sent {
            write_frame(&mut buf, &inv(h));
            if buf.len() > 64 * 1024 {
                writer.write_all(&buf).unwrap();
                buf.clear();
            }
        }
        writer.write_all(&buf).unwrap();
    });
    std::thread::sleep(Duration::from_millis(1500));
    // Another client is served promptly meanwhile.
    let mut other = Conn::open(("127.0.0.1", node.client));
    let t = std::time::Instant::now();
    assert_eq!(other.call("@Ping", vec![]).status, 1);
    assert_eq!(other.call("F.select", vec![Value::Integer(1)]).status, 1);
    assert!(t.elapsed() < Duration::from_secs(2), "took {:?}", t.elapsed());
    let during = rss_kib(node.child.id());
    // The server stopped reading the flood instead of buffering answers
    // (about 200 bytes each, 40 MB for all of them).
    assert!(during < before + 64 * 1024, "memory grew from {before} KiB to {during} KiB");
    // Now read: every request is answered, some with backpressure.
    let mut flood = flood;
    let (mut ok, mut unavailable, mut by_bound) = (0, 0, 0);
    for _ in 0..sent {
        let r = ClientResponse::decode(&flood.recv().expect("an answer")).unwrap();
        match r.status {
            1 => ok += 1,
            -5 => {
                unavailable += 1;
                by_bound += usize::from(r.status_string.as_deref().is_some_and(|s| s.contains(bound)));
            }
            s => panic!("status {s}: {:?}", r.status_string),
        }
    }
    flooder.join().unwrap();
    eprintln!("flood: {ok} answered, {unavailable} told unavailable; memory {before} KiB -> {during} KiB");
    assert_eq!(ok + unavailable, sent);
    assert!(ok > 0, "some requests succeed");
    assert!(by_bound > 0, "the bound saying {bound:?} answered some");
    assert_eq!(other.call("@Ping", vec![]).status, 1);
}

/// `THP_enabled` from /proc (Linux): whether the kernel may back the
/// process's memory with transparent huge pages.
fn thp_enabled(pid: u32) -> Option<bool> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("THP_enabled:")).map(|v| v.trim() == "1")
}

/// Threads of a process named `name` (Linux: /proc/PID/task/*/comm).
fn threads_named(pid: u32, name: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .filter(|comm| comm.trim() == name)
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn network_threads_and_transparent_huge_pages_follow_the_settings() {
    let three = start(&["--network-threads", "3"]);
    assert_eq!(threads_named(three.child.id(), "tokio-rt-worker"), 3);
    let out = Command::new(env!("CARGO_BIN_EXE_joule"))
        .args(["start", "--network-threads", "0", "--client-port", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--network-threads must be between 1 and 256"));
    let node = start(&[]);
    let Some(enabled) = thp_enabled(node.child.id()) else {
        eprintln!("this kernel does not report THP_enabled; nothing to check");
        return;
    };
    assert!(!enabled, "a default node runs without transparent huge pages");
    // THP_enabled shows this process's own setting (the system-wide mode
    // is separate): with the flag, the node leaves the choice to the kernel.
    let with = start(&["--transparent-huge-pages"]);
    assert_eq!(thp_enabled(with.child.id()), Some(true), "--transparent-huge-pages leaves them to the kernel");
}

#[test]
fn stops_on_sigterm() {
    let mut node = start(&[]);
    let mut c = Conn::open(("127.0.0.1", node.client));
    assert_eq!(c.call("@Ping", vec![]).status, 1);
    let pid = node.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = node.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let err = node.stderr_after_exit();
    assert!(err.contains("stopped"), "{err}");
}

#[test]
fn loads_a_schema_file_and_runs_the_voter_procedures() {
    let ddl = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/voter/ddl.sql");
    let node = start(&["--schema", ddl]);
    let mut c = Conn::open(("127.0.0.1", node.client));
    let r = c.call("Initialize", vec![Value::Integer(6), s(joule_voter::CONTESTANTS)]);
    assert_eq!(r.tables[0].rows, vec![vec![Value::Integer(6)]]);
    let r = c.call("Vote", vec![Value::Integer(2015551234), Value::Integer(3), Value::Integer(2)]);
    assert_eq!(r.tables[0].rows, vec![vec![Value::Integer(0)]], "{r:?}");
    let r = c.call("Results", vec![]);
    assert_eq!(r.tables[0].rows, vec![vec![s("Kelly Clauss"), Value::Integer(3), Value::Integer(1)]]);
}

/// The Rust client crate against the real binary: pipelined calls over
/// several connections, typed results, array parameters (ad hoc and in a
/// procedure), errors with their codes, and a clear error once the process
/// is killed.
#[test]
fn rust_client_against_the_binary() {
    use joule_client::{BlockingClient, Client, Options};
    use joule_common::ErrorCode;
    let mut node = start(&[]);
    let addr = format!("127.0.0.1:{}", node.client);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let options = Options { connections_per_address: 2, ..Default::default() };
        let client = Client::connect(&[&addr], options).await.unwrap();
        assert_eq!(client.open_connections(), 2);
        let ddl = "CREATE TABLE t (id BIGINT NOT NULL PRIMARY KEY, name VARCHAR(10)); PARTITION TABLE t ON COLUMN id;
                   CREATE PROCEDURE Names AS SELECT name FROM t WHERE id IN ? ORDER BY id";
        client.execute(ddl, vec![]).await.unwrap();
        let calls: Vec<_> = (0..500i64)
            .map(|i| {
                let c = client.clone();
                tokio::spawn(async move { c.call("T.insert", vec![i.into(), format!("n{i}").into()]).await })
            })
            .collect();
        for call in calls {
            call.await.unwrap().unwrap();
        }
        let ids = || Value::Array(vec![Value::Integer(400), Value::Integer(3), Value::Integer(1000)].into());
        let r = client.execute("SELECT name FROM t WHERE id IN ? ORDER BY id", vec![ids()]).await.unwrap();
        assert_eq!(r.table(0).unwrap().rows(), &[vec![s("n3")], vec![s("n400")]]);
        let r = client.call("Names", vec![ids()]).await.unwrap();
        assert_eq!(r.table(0).unwrap().get::<String>(1, 0).unwrap(), "n400");
        let e = client.call("T.insert", vec![ids(), s("x")]).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::DatatypeMismatch, "{e}");
    });
    let blocking = BlockingClient::connect(&[&addr], Options::default()).unwrap();
    let r = blocking.execute("SELECT COUNT(*) FROM t", vec![]).unwrap();
    assert_eq!(r.table(0).unwrap().get::<i64>(0, 0).unwrap(), 500);
    let e = blocking.call("T.insert", vec![Value::Integer(1), s("dup")]).unwrap_err();
    assert_eq!(e.code(), ErrorCode::UniqueViolation);
    // kill -9: calls fail instead of hanging — unavailable when the loss is
    // seen before sending, outcome unknown when the call went out first.
    node.child.kill().unwrap();
    node.child.wait().unwrap();
    let e = blocking.call("@Ping", vec![]).unwrap_err();
    assert!(matches!(e.code(), ErrorCode::Unavailable | ErrorCode::OutcomeUnknown), "{e}");
}

/// VoltDB's own Python client (the `voltdbclient` package), unchanged.
#[test]
fn voltdb_python_client_works_unchanged() {
    let python_path = voltdbclient_path();
    let node = start(&[]);
    let script = r#"
import sys
from voltdbclient import FastSerializer, VoltProcedure
c = FastSerializer("127.0.0.1", int(sys.argv[1]), username="", password="")
adhoc = VoltProcedure(c, "@AdHoc", [FastSerializer.VOLTTYPE_STRING])
assert adhoc.call(["CREATE TABLE users (id INT PRIMARY KEY, name VARCHAR(255))"]).status == 1
assert adhoc.call(["INSERT INTO users (id, name) VALUES (1, 'Alice')"]).status == 1
ins = VoltProcedure(c, "USERS.insert", [FastSerializer.VOLTTYPE_INTEGER, FastSerializer.VOLTTYPE_STRING])
assert ins.call([2, "Bob"]).status == 1
r = adhoc.call(["SELECT * FROM users ORDER BY id"])
for row in r.tables[0].tuples:
    print(tuple(row))
# An array parameter (VoltDB's `IN ?`).
pick = VoltProcedure(c, "@AdHoc", [FastSerializer.VOLTTYPE_STRING, FastSerializer.VOLTTYPE_INTEGER])
r = pick.call(["SELECT name FROM users WHERE id IN ? ORDER BY id", [2, 7, 1]])
print([row[0] for row in r.tables[0].tuples])
bad = adhoc.call(["SELECT * FROM nowhere"])
print(bad.status, bad.statusString)
c.close()
"#;
    let stdout = common::run_python_script(script, &node.client.to_string(), &python_path);
    assert!(stdout.starts_with("(1, 'Alice')\n(2, 'Bob')\n['Alice', 'Bob']\n-2 [J1003"), "{stdout}");
}

/// Where `voltdbclient` can be imported from: already installed, or
/// installed by this test from the package registry into target/.
fn voltdbclient_path() -> String {
    common::python_package_path("voltdbclient", "voltdbclient", "python-voltdbclient")
}

/// The Python package in clients/python, tested with pytest against the
/// real binary.
#[test]
fn python_client_package_tests_pass() {
    common::run_python_suite("tests");
}

/// `joule sql` against a running node: a script on standard input with
/// multi-line statements and directives, then CSV output and
/// --stop-on-error.
#[test]
fn sql_shell_runs_scripts_and_directives() {
    let node = start(&[]);
    let port = node.client.to_string();
    let shell = |extra: &[&str], input: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_joule"))
            .args(["sql", "--servers", "127.0.0.1", "--port", &port])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let script = "CREATE TABLE pets (id INT NOT NULL PRIMARY KEY,\n  name VARCHAR(10));\n\
                  PARTITION TABLE pets ON COLUMN id;\n\
                  CREATE PROCEDURE AddPet PARTITION ON TABLE pets COLUMN id AS BEGIN\n\
                    INSERT INTO pets VALUES (?, ?);\n\
                  END;\n\
                  exec AddPet 1, 'Rex'\n\
                  exec PETS.insert 2 'Tom'\n\
                  -- a comment\n\
                  SELECT * FROM pets\n  ORDER BY id;\n\
                  show tables\n\
                  describe pets\n\
                  explain SELECT name FROM pets WHERE id = 1\n";
    let (ok, out, err) = shell(&[], script);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("ID NAME\n-- ----\n 1 Rex\n 2 Tom"), "{out}");
    assert!(out.contains("(Returned 2 rows in"), "{out}");
    assert!(out.contains("PETS (TABLE)"), "{out}");
    assert!(out.contains("NAME") && out.contains("VARCHAR"), "{out}");
    assert!(out.contains("SINGLE PARTITION"), "{out}");
    let (ok, out, _) =
        shell(&["--output-format", "csv", "--output-skip-metadata"], "SELECT id, name FROM pets ORDER BY id;");
    assert!(ok);
    assert_eq!(out, "1,Rex\n2,Tom\n");
    let (ok, out, err) = shell(&["--stop-on-error"], "SELECT * FROM nowhere;\nSELECT 1 FROM pets;\n");
    assert!(!ok);
    assert!(err.contains("J1003"), "{err}");
    assert!(!out.contains("Returned"), "stopped at the error: {out}");
    let (ok, out, _) = shell(&["--query", "SELECT COUNT(*) FROM pets;"], "");
    assert!(ok && out.contains("2"), "{out}");
}

/// The HTTP/JSON API, driven with curl.
#[test]
fn http_json_api_with_curl() {
    let node = start(&[]);
    let base = format!("http://127.0.0.1:{}", node.http);
    let curl = |args: &[&str]| {
        let out =
            Command::new("curl").args(["-s", "-S", "-w", "\n%{http_code}"]).args(args).output().expect("curl runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).unwrap();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.to_string(), body.to_string())
    };
    let (code, body) = curl(&[
        "--data-urlencode",
        "Procedure=@AdHoc",
        "--data-urlencode",
        "Parameters=[\"CREATE TABLE h (id INT PRIMARY KEY, name VARCHAR(9))\"]",
        &format!("{base}/api/1.0/"),
    ]);
    assert_eq!(code, "200");
    assert!(body.contains("\"status\":1"), "{body}");
    let (_, body) = curl(&[
        "-G",
        "--data-urlencode",
        "Procedure=H.insert",
        "--data-urlencode",
        "Parameters=[1,\"Ann\"]",
        &format!("{base}/api/2.0/"),
    ]);
    assert!(body.contains("\"status\":1"), "{body}");
    let (_, body) = curl(&[
        "-G",
        "--data-urlencode",
        "Procedure=@AdHoc",
        "--data-urlencode",
        "Parameters=[\"SELECT id, name FROM h WHERE id = ?\", 1]",
        &format!("{base}/api/1.0/"),
    ]);
    assert!(body.contains("\"schema\":[{\"name\":\"ID\",\"type\":5},{\"name\":\"NAME\",\"type\":9}]"), "{body}");
    assert!(body.contains("\"data\":[[1,\"Ann\"]]"), "{body}");
    // 2.0: results keyed by table position, rows as objects; an array
    // parameter for `IN ?`.
    let (_, body) = curl(&[
        "-G",
        "--data-urlencode",
        "Procedure=@AdHoc",
        "--data-urlencode",
        "Parameters=[\"SELECT id, name FROM h WHERE id IN ?\", [1, 5]]",
        &format!("{base}/api/2.0/"),
    ]);
    assert!(body.contains("\"results\":{\"0\":[{\"ID\":1,\"NAME\":\"Ann\"}]}"), "{body}");
    // JSONP, errors, bad parameters.
    let (_, body) = curl(&[
        "-G",
        "--data-urlencode",
        "Procedure=@Ping",
        "--data-urlencode",
        "jsonp=cb",
        &format!("{base}/api/1.0/"),
    ]);
    assert!(body.starts_with("cb({") && body.ends_with("})") && body.contains("\"status\":1"), "{body}");
    let (_, body) = curl(&[
        "-G",
        "--data-urlencode",
        "Procedure=H.insert",
        "--data-urlencode",
        "Parameters=[1,\"Dup\"]",
        &format!("{base}/api/1.0/"),
    ]);
    assert!(body.contains("\"status\":-2") && body.contains("J2007"), "{body}");
    let (_, body) = curl(&[
        "-G",
        "--data-urlencode",
        "Parameters=[1",
        "--data-urlencode",
        "Procedure=H.select",
        &format!("{base}/api/1.0/"),
    ]);
    assert!(body.contains("not valid JSON"), "{body}");
}

/// `@Statistics` answers every selector with VoltDB's leading columns,
/// counts what ran, honours `delta`, and `/metrics` serves the same
/// figures as Prometheus text.
#[test]
fn statistics_selectors_deltas_and_prometheus_metrics() {
    let node = start(&[]);
    let mut c = Conn::open(("127.0.0.1", node.client));
    let ddl = "CREATE TABLE kv (k BIGINT NOT NULL PRIMARY KEY, v VARCHAR(20)); PARTITION TABLE kv ON COLUMN k";
    assert_eq!(c.call("@AdHoc", vec![s(ddl)]).status, 1);
    for k in 0..50 {
        assert_eq!(c.call("KV.insert", vec![Value::Integer(k), s("v")]).status, 1);
    }
    assert_eq!(c.call("KV.insert", vec![Value::Integer(1), s("dup")]).status, -2);
    let stats = |c: &mut Conn, selector: &str, delta: i64| {
        let r = c.call("@Statistics", vec![s(selector), Value::Integer(delta)]);
        assert_eq!(r.status, 1, "{selector}: {:?}", r.status_string);
        r.tables
    };
    for selector in [
        "PROCEDURE",
        "PROCEDUREPROFILE",
        "TABLE",
        "INDEX",
        "MEMORY",
        "CPU",
        "IOSTATS",
        "LIVECLIENTS",
        "INITIATOR",
        "LATENCY",
        "LATENCY_HISTOGRAM",
        "QUEUE",
        "STARVATION",
        "PARTITIONCOUNT",
        "TOPO",
        "COMMANDLOG",
        "SNAPSHOTSTATUS",
    ] {
        let t = stats(&mut c, selector, 0);
        // TOPO: the partitions, then the ring clients route by.
        assert_eq!(t.len(), if selector == "TOPO" { 2 } else { 1 }, "{selector}");
        if selector != "PROCEDUREPROFILE" && selector != "TOPO" && selector != "SNAPSHOTSTATUS" {
            assert_eq!(t[0].columns[0].0, "TIMESTAMP", "{selector}");
        }
    }
    assert_eq!(stats(&mut c, "MANAGEMENT", 0).len(), 9);
    let r = c.call("@Statistics", vec![s("NOPE"), Value::Integer(0)]);
    assert!(r.status_string.unwrap().contains("J2009"));
    // PROCEDURE: 51 invocations of KV.insert over the partitions, 1 failure.
    let proc_rows = |t: &[joule_wire::VoltTable]| -> (i64, i64) {
        let col = |n: &str| t[0].columns.iter().position(|(c, _)| c == n).unwrap();
        let (p, inv, fail) = (col("PROCEDURE"), col("INVOCATIONS"), col("FAILURES"));
        t[0].rows.iter().filter(|r| r[p] == s("KV.insert")).fold((0, 0), |(a, b), r| {
            let n = |v: &Value| if let Value::Integer(i) = v { *i } else { 0 };
            (a + n(&r[inv]), b + n(&r[fail]))
        })
    };
    assert_eq!(proc_rows(&stats(&mut c, "PROCEDURE", 0)), (51, 1));
    // delta: the first delta call counts from the start, the next only what came since.
    assert_eq!(proc_rows(&stats(&mut c, "PROCEDURE", 1)), (51, 1));
    assert_eq!(c.call("KV.insert", vec![Value::Integer(100), s("v")]).status, 1);
    assert_eq!(proc_rows(&stats(&mut c, "PROCEDURE", 1)), (1, 0));
    let tables = stats(&mut c, "TABLE", 0);
    let rows_at = tables[0].columns.iter().position(|(n, _)| n == "TUPLE_COUNT").unwrap();
    let total: i64 = tables[0].rows.iter().map(|r| if let Value::Integer(i) = r[rows_at] { i } else { 0 }).sum();
    assert_eq!(total, 51);
    let out = Command::new("curl").args(["-s", &format!("http://127.0.0.1:{}/metrics", node.http)]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for family in [
        "# TYPE joule_procedure_invocations_total counter",
        "joule_procedure_invocations_total{procedure=\"KV.insert\",partition=\"0\"}",
        "# TYPE joule_transaction_latency_seconds histogram",
        "joule_transaction_latency_seconds_bucket{le=\"+Inf\"}",
        "joule_table_rows{table=\"DEFAULT.KV\",partition=\"1\"}",
        "joule_command_log_records_total",
        "joule_connections 1",
    ] {
        assert!(text.contains(family), "{family} in\n{text}");
    }
}

/// Large answers written in pieces to a client that reads slowly, while
/// small answers (each the only call in flight, so written directly when
/// the writer is idle) keep arriving: every frame must come out whole.
#[test]
fn answers_never_interleave_on_a_connection() {
    let node = start(&[]);
    let mut c = Conn::open(("127.0.0.1", node.client));
    let ddl =
        "CREATE TABLE wide (id INTEGER NOT NULL PRIMARY KEY, pad VARCHAR(1000)); PARTITION TABLE wide ON COLUMN id";
    assert_eq!(c.call("@AdHoc", vec![s(ddl)]).status, 1);
    let pad = "p".repeat(1000);
    for id in 0..2000 {
        assert_eq!(c.call("WIDE.insert", vec![Value::Integer(id), s(&pad)]).status, 1);
    }
    // A reader that drains the socket in small, slow pieces.
    let mut rd = c.0.try_clone().unwrap();
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let mut chunk = [0u8; 4096];
        let mut frames = Vec::new();
        while frames.len() < 60 {
            let n = rd.read(&mut chunk).expect("read");
            assert!(n > 0, "the server closed the connection");
            bytes.extend_from_slice(&chunk[..n]);
            while bytes.len() >= 4 {
                let len = payload_len([bytes[0], bytes[1], bytes[2], bytes[3]], 1 << 30).expect("a frame length");
                if bytes.len() < 4 + len {
                    break;
                }
                let frame: Vec<u8> = bytes.drain(..4 + len).skip(4).collect();
                frames.push(ClientResponse::decode(&frame).expect("a whole, well-formed answer"));
            }
            std::thread::sleep(Duration::from_micros(300));
        }
        frames
    });
    // 10 large multi-partition reads, each followed by 5 small
    // single-partition calls sent one at a time while it is being written.
    let mut h = 0;
    for _ in 0..10 {
        h += 1;
        c.invoke(h, "@AdHoc", vec![s("SELECT id, pad FROM wide")]);
        for k in 0..5 {
            std::thread::sleep(Duration::from_millis(3));
            h += 1;
            c.invoke(h, "WIDE.select", vec![Value::Integer(k)]);
        }
    }
    let frames = reader.join().unwrap();
    assert_eq!(frames.len(), 60);
    assert!(frames.iter().all(|r| r.status == 1));
    let big = frames.iter().filter(|r| r.tables.first().is_some_and(|t| t.rows.len() == 2000)).count();
    assert_eq!(big, 10);
}

/// `@Shutdown` while a client has thousands of calls in flight: every call
/// the node took is answered — run, or refused as unavailable because the
/// node is stopping (so it did not run) — before its connection closes;
/// none is cut off with its outcome unknown. Restarted, the node holds
/// exactly the writes it acknowledged (synchronous command log).
#[test]
fn a_shutdown_answers_every_call_it_took_before_closing() {
    let dir = TempDir::new("drain");
    let mut node = start_in(dir.path(), &["--command-log", "sync"]);
    let mut c = Conn::open(("127.0.0.1", node.client));
    let r =
        c.call("@AdHoc", vec![s("CREATE TABLE kv (k BIGINT NOT NULL PRIMARY KEY); PARTITION TABLE kv ON COLUMN k")]);
    assert_eq!(r.status, 1, "{r:?}");
    let mut admin = Conn::open(("127.0.0.1", node.admin));
    // (Below the 10,000 unanswered requests a connection may have.)
    const CALLS: i64 = 8_000;
    for h in 0..CALLS {
        c.invoke(h, "KV.insert", vec![Value::Integer(h)]);
        if h == CALLS / 2 {
            // The rest are sent once the node stops taking calls.
            assert_eq!(admin.call("@Shutdown", vec![]).status, 1);
        }
    }
    let (mut ran, mut refused) = (0i64, 0i64);
    let mut answered = std::collections::BTreeSet::new();
    while let Some(frame) = c.recv() {
        let r = ClientResponse::decode(&frame).unwrap();
        match r.status {
            1 => ran += 1,
            -5 if r.status_string.as_deref().unwrap_or("").contains("shutting down") => refused += 1,
            _ => panic!("neither run nor refused as the node stops: {r:?}"),
        }
        assert!(answered.insert(r.client_handle), "answered twice: {r:?}");
    }
    assert_eq!(answered.len() as i64, CALLS, "every call answered ({ran} ran, {refused} refused)");
    assert!(ran > 0 && refused > 0, "{ran} ran, {refused} refused");
    assert!(node.child.wait().unwrap().success());
    let node = start_in(dir.path(), &["--command-log", "sync"]);
    let mut c = Conn::open(("127.0.0.1", node.client));
    let r = c.call("@AdHoc", vec![s("SELECT COUNT(*) FROM kv")]);
    assert_eq!(r.tables[0].rows, vec![vec![Value::Integer(ran)]], "{refused} refused");
    // The recovery's replay is no call: the latency figures count the one
    // query, not the thousands of inserts replayed.
    let r = c.call("@Statistics", vec![s("LATENCY"), Value::Integer(0)]);
    let at = r.tables[0].columns.iter().position(|(name, _)| name == "COUNT").expect("a COUNT column");
    assert_eq!(r.tables[0].rows[0][at], Value::Integer(1), "{:?}", r.tables[0].rows);
}
