//! Starting the real `joule` binary for end-to-end tests: a node on ports
//! chosen at run time, in a data directory of its own, killed for real.

#![allow(dead_code)]

pub mod cluster;
/// The fault-injecting TCP proxy (and the linearizability checker) the
/// metadata group's tests use.
#[path = "../../../cluster/tests/common/mod.rs"]
pub mod fault_proxy;
pub mod voters;
pub mod wire;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub struct Node {
    pub child: Child,
    pub client: u16,
    pub admin: u16,
    pub http: u16,
    /// What the node wrote to stderr up to its ready line (the recovery
    /// report).
    pub startup: String,
    /// Everything it wrote to stderr after that, read by a thread that
    /// ends when the process does.
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Node {
    /// `kill -9`.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What the node wrote to stderr after starting; waits for it to exit.
    pub fn stderr_after_exit(&mut self) -> String {
        let _ = self.child.wait();
        self.stderr.take().map(|t| t.join().unwrap_or_default()).unwrap_or_default()
    }

    pub fn client_addr(&self) -> String {
        format!("127.0.0.1:{}", self.client)
    }

    pub fn admin_addr(&self) -> String {
        format!("127.0.0.1:{}", self.admin)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("joule-{name}-{}-{}", std::process::id(), rand_suffix()));
        let _ = std::fs::remove_dir_all(&d);
        TempDir(d)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `elastic.toml` in `dir` (made if missing) holding `settings` under
/// `[elastic]` (later tables may follow); its path. Written again, the same
/// file changes for the next start.
pub fn elastic_config(dir: &TempDir, settings: &str) -> String {
    std::fs::create_dir_all(dir.path()).unwrap();
    let path = dir.path().join("elastic.toml");
    std::fs::write(&path, format!("[elastic]\n{settings}\n")).unwrap();
    path.to_str().unwrap().to_string()
}

pub fn rand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// Start `joule start` on free ports with data in `dir` (2 sites unless
/// `extra` says otherwise) and wait for its ready line.
pub fn start_in(dir: &Path, extra: &[&str]) -> Node {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_joule"));
    cmd.args(["start", "--client-port", "0", "--admin-port", "0", "--http-port", "0", "--dir"]).arg(dir);
    if !extra.contains(&"--sites") {
        cmd.args(["--sites", "2"]);
    }
    start_command(cmd.args(extra))
}

/// Run a prepared `joule start` command and wait for its ready line.
pub fn start_command(cmd: &mut Command) -> Node {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("joule starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let mut startup = String::new();
    if !line.starts_with("JouleDB ready") {
        let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut startup);
        panic!("joule did not start: {line}\n{startup}");
    }
    // The recovery report is the line before the ready line on stderr.
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let _ = err.read_line(&mut startup);
    // Keep draining stderr so the node never blocks on a full pipe.
    let stderr = std::thread::spawn(move || {
        let mut all = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut all);
        all
    });
    let port = |label: &str| -> u16 {
        let at = line.find(label).unwrap_or_else(|| panic!("{label} in {line}")) + label.len();
        let addr = line[at..].split_whitespace().next().unwrap();
        addr.rsplit(':').next().unwrap().parse().unwrap()
    };
    Node { client: port("client "), admin: port("admin "), http: port("http "), child, startup, stderr: Some(stderr) }
}

/// A `PYTHONPATH` entry under which `module` imports: the environment's
/// own, or `target/<dir>` after `pip install --target` of `package`.
pub fn python_package_path(module: &str, package: &str, dir: &str) -> String {
    let import = format!("import {module}");
    let probe = Command::new("python3").args(["-c", &import]).output();
    if probe.is_ok_and(|o| o.status.success()) {
        return String::new();
    }
    let target = format!("{}/../../target/{dir}", env!("CARGO_MANIFEST_DIR"));
    let check = Command::new("python3").args(["-c", &import]).env("PYTHONPATH", &target).output();
    if check.is_ok_and(|o| o.status.success()) {
        return target;
    }
    let out = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target", &target, package])
        .output()
        .expect("pip runs");
    assert!(
        out.status.success(),
        "cannot install {package} (pip install {package}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    target
}

/// Run a Python `script` with `arg` (its `sys.argv[1]`) and `python_path`
/// on `PYTHONPATH`; its standard output, once it has succeeded.
pub fn run_python_script(script: &str, arg: &str, python_path: &str) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(arg)
        .env("PYTHONPATH", python_path)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// Run the pytest suite in `clients/python/<suite>` against the real
/// binary (pytest installed under `target/` if the environment lacks it).
pub fn run_python_suite(suite: &str) {
    let pytest = python_package_path("pytest", "pytest", "python-test");
    let package = format!("{}/../../clients/python", env!("CARGO_MANIFEST_DIR"));
    let path = if pytest.is_empty() { package.clone() } else { format!("{pytest}:{package}") };
    let out = Command::new("python3")
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", &format!("{package}/{suite}")])
        .env("PYTHONPATH", path)
        .env("JOULE_BIN", env!("CARGO_BIN_EXE_joule"))
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}
