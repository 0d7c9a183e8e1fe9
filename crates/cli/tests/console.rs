//! The web console in a real browser: Debian's headless Chromium loads
//! `http://HOST:PORT/` from a node under load (`joule bench` running
//! beside it) and runs the page's script; the test reads the DOM the
//! script built and checks that the charts received samples with a
//! non-zero throughput and that the tables and procedures are listed.
//! `.ci/run` installs Chromium when it is missing.

mod common;

use common::{start_in, TempDir};
use std::process::{Command, Stdio};

fn chromium() -> &'static str {
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new("which").arg(c).output().is_ok_and(|o| o.status.success()) {
            return c;
        }
    }
    panic!("the console test needs a headless Chromium: apt-get install chromium (.ci/run does)");
}

#[test]
fn the_console_shows_live_figures_in_a_real_browser() {
    let browser = chromium();
    let dir = TempDir::new("console");
    let node = start_in(dir.path(), &[]);
    let mut load = Command::new(env!("CARGO_BIN_EXE_joule"))
        .args(["bench", "kv", "--records", "2000", "--rate", "2000", "--duration", "30", "--warmup", "0", "--json"])
        .args(["--servers", &format!("127.0.0.1:{}", node.client)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("joule bench runs");
    // Wait until the load is on (the kv table exists and grows).
    std::thread::sleep(std::time::Duration::from_secs(3));
    let url = format!("http://127.0.0.1:{}/", node.http);
    let browse = |extra: &[&str]| {
        Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--virtual-time-budget=8000",
            ])
            .args(extra)
            .arg(&url)
            .output()
            .expect("chromium runs")
    };
    let dom = String::from_utf8_lossy(&browse(&["--dump-dom"]).stdout).to_string();
    let attr = |name: &str| -> i64 {
        let at = dom.find(&format!("{name}=\"")).unwrap_or_else(|| panic!("{name} in the page:\n{dom}"));
        dom[at + name.len() + 2..].split('"').next().unwrap().parse().unwrap()
    };
    assert!(attr("data-samples") >= 3, "the charts received samples");
    assert!(attr("data-tps") > 0, "the throughput chart shows the load");
    assert!(dom.contains("DEFAULT.KV") && dom.contains("KV.select"), "tables and procedures are listed");
    assert!(dom.contains("node started"), "the event log shows the start");
    assert!(
        dom.contains("data-host=\"0\" data-state=\"UP\"") && dom.contains("k-factor 0"),
        "the cluster view draws the one host, up"
    );
    // A screenshot of the page under load, for people to look at.
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console.png");
    let out = browse(&["--hide-scrollbars", "--window-size=1400,1000", &format!("--screenshot={}", shot.display())]);
    assert!(shot.exists(), "{}", String::from_utf8_lossy(&out.stderr));
    let _ = load.kill();
    let _ = load.wait();
}
