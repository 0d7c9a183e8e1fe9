//! Fault injection for end-to-end tests: named points where a test makes a
//! running `joule` process die at once, as `kill -9` would, at a moment no
//! signal from outside can hit reliably (between two steps of a commit),
//! or holds one of its threads still while the test acts (a copy half
//! sent).
//!
//! A process started with `JOULE_FAILPOINTS=DIR` checks at each point
//! whether the file `DIR/NAME` exists, and aborts (or waits while it
//! exists) if it does: a test arms a point on one host by creating that
//! file while the host runs, and releases a pause by removing it. Without the
//! variable a check is one read of a value computed once. Points sit on
//! rare paths (a cluster's multi-partition commit), never once per
//! single-partition transaction; the one nearest a hot path
//! (`forwarding_held`) is checked once per write of forwarded calls.

use std::path::PathBuf;
use std::sync::OnceLock;

static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Whether the point `name` is armed in this process.
pub fn armed(name: &str) -> bool {
    DIR.get_or_init(|| std::env::var_os("JOULE_FAILPOINTS").map(PathBuf::from))
        .as_ref()
        .is_some_and(|dir| dir.join(name).exists())
}

/// Die here if the point `name` is armed.
pub fn crash_if_armed(name: &str) {
    if armed(name) {
        crash(name);
    }
}

/// Wait here while the point `name` is armed, `limit` at most (said once).
pub fn pause_while_armed(name: &str, limit: std::time::Duration) {
    let started = std::time::Instant::now();
    let mut said = false;
    while armed(name) && started.elapsed() < limit {
        if !said {
            eprintln!("joule: failpoint {name} is armed: this thread waits here");
            said = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Die at once, saying which point did it.
pub fn crash(name: &str) -> ! {
    eprintln!("joule: failpoint {name} is armed: this process dies here");
    std::process::abort()
}
