//! The per-file results table: printed by each test and collected into
//! `target/sqllogictest-report.md`.
//!
//! Every file's test writes its row to `target/sqllogictest-report/<file>.tsv`
//! and then rebuilds the markdown report from all rows there, so the report
//! always shows the latest run of every file, also when only some files were
//! run (the `run at` column tells when each row was made). Files are written
//! through a temporary file and a rename, and the rebuild holds a lock that
//! works across threads and processes (nextest runs each test in its own).

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One file's line in the report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReportRow {
    /// Path relative to the corpus directory, e.g. `evidence/in1.test`.
    pub file: String,
    /// `pass`, `FAIL`, `skipped` or `ERROR` (script unreadable or unparsable).
    pub status: String,
    pub records: usize,
    pub run: usize,
    pub passed: usize,
    pub failed: usize,
    pub panics: usize,
    pub skipped: usize,
    pub seconds: f64,
    pub notes: String,
    /// Unix time (seconds) of the run.
    pub at: u64,
}

impl ReportRow {
    pub fn new(file: &str, status: &str) -> ReportRow {
        let at = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        ReportRow { file: file.to_string(), status: status.to_string(), at, ..ReportRow::default() }
    }

    fn pass_percent(&self) -> String {
        if self.status == "skipped" || self.status == "ERROR" {
            "-".into()
        } else if self.run == 0 {
            "n/a".into()
        } else {
            format!("{:.2}", 100.0 * self.passed as f64 / self.run as f64)
        }
    }

    /// The row as a markdown table line.
    pub fn markdown(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {} | {} |",
            self.file,
            self.status,
            self.records,
            self.run,
            self.passed,
            self.failed,
            self.panics,
            self.skipped,
            self.pass_percent(),
            self.seconds,
            self.notes.replace('|', "\\|"),
            utc_text(self.at),
        )
    }

    fn to_tsv(&self) -> String {
        let clean = |s: &str| s.replace(['\t', '\n', '\r'], " ");
        format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            clean(&self.file),
            clean(&self.status),
            self.records,
            self.run,
            self.passed,
            self.failed,
            self.panics,
            self.skipped,
            self.seconds,
            clean(&self.notes),
            self.at
        )
    }

    fn from_tsv(line: &str) -> Option<ReportRow> {
        let f: Vec<&str> = line.trim_end_matches('\n').split('\t').collect();
        let [file, status, records, run, passed, failed, panics, skipped, seconds, notes, at] = f[..] else {
            return None;
        };
        Some(ReportRow {
            file: file.into(),
            status: status.into(),
            records: records.parse().ok()?,
            run: run.parse().ok()?,
            passed: passed.parse().ok()?,
            failed: failed.parse().ok()?,
            panics: panics.parse().ok()?,
            skipped: skipped.parse().ok()?,
            seconds: seconds.parse().ok()?,
            notes: notes.into(),
            at: at.parse().ok()?,
        })
    }
}

/// The header of the markdown table (two lines).
pub const TABLE_HEADER: &str = "| file | result | records | run | passed | failed | panics | skipped | pass % | time (s) | notes | run at (UTC) |\n|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|---|";

/// `CARGO_TARGET_DIR` if set (relative to the workspace root), else the
/// workspace's `target/`.
pub fn target_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let workspace = manifest.ancestors().nth(2).unwrap_or(manifest);
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace.join(dir),
        None => workspace.join("target"),
    }
}

pub fn report_path() -> PathBuf {
    target_dir().join("sqllogictest-report.md")
}

fn rows_dir() -> PathBuf {
    target_dir().join("sqllogictest-report")
}

/// A lock shared by threads (a mutex) and by processes (a lock file made
/// with `create_new`; test runners like nextest run each test in its own
/// process). A lock file older than ten seconds is taken to be stale.
struct ReportLock<'a> {
    _thread: std::sync::MutexGuard<'a, ()>,
    path: PathBuf,
}

impl ReportLock<'_> {
    fn acquire(dir: &Path) -> io::Result<ReportLock<'static>> {
        static LOCK: Mutex<()> = Mutex::new(());
        let thread = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let path = dir.join(".lock");
        let started = Instant::now();
        loop {
            match fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(_) => return Ok(ReportLock { _thread: thread, path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if started.elapsed() > Duration::from_secs(10) {
                        let _ = fs::remove_file(&path);
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for ReportLock<'_> {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Write `row` and rebuild the markdown report; returns the report's path.
pub fn record(row: &ReportRow) -> io::Result<PathBuf> {
    let dir = rows_dir();
    fs::create_dir_all(&dir)?;
    let _lock = ReportLock::acquire(&dir)?;
    let name = row.file.replace(['/', '\\'], "__");
    write_atomically(&dir.join(format!("{name}.tsv")), &row.to_tsv())?;

    let mut rows = Vec::new();
    for entry in fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "tsv") {
            rows.extend(ReportRow::from_tsv(&fs::read_to_string(&path)?));
        }
    }
    rows.sort_by(|a, b| a.file.cmp(&b.file));
    let path = report_path();
    write_atomically(&path, &markdown(&rows))?;
    Ok(path)
}

fn write_atomically(path: &Path, text: &str) -> io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&tmp, text)?;
    fs::rename(&tmp, path)
}

/// The whole report: explanation, table and totals.
pub fn markdown(rows: &[ReportRow]) -> String {
    let mut s = String::new();
    s.push_str("# sqllogictest report\n\n");
    s.push_str(
        "Made by `cargo test -p joule-engine --test sqllogictest`: one row per script, from the latest run of\n",
    );
    s.push_str("each (see *run at*). The engine runs as `postgresql` for `skipif`/`onlyif`. A file passes when\n");
    s.push_str("at least 99% of the records it runs pass (`JOULE_SLT_MIN_PASS` changes the bar). *skipped*\n");
    s.push_str("counts records excluded by conditions or left behind by a `halt`; *panics* are failures where\n");
    s.push_str("the engine panicked (always bugs).\n\n");
    s.push_str(TABLE_HEADER);
    s.push('\n');
    let mut total = ReportRow { file: "**total**".into(), status: String::new(), ..ReportRow::default() };
    for r in rows {
        let _ = writeln!(s, "{}", r.markdown());
        total.records += r.records;
        total.run += r.run;
        total.passed += r.passed;
        total.failed += r.failed;
        total.panics += r.panics;
        total.skipped += r.skipped;
        total.seconds += r.seconds;
        total.at = total.at.max(r.at);
    }
    let failing = rows.iter().filter(|r| r.status == "FAIL" || r.status == "ERROR").count();
    total.status = if failing == 0 { "pass".into() } else { format!("{failing} failing") };
    let _ = writeln!(s, "{}", total.markdown());
    s
}

/// Unix seconds as `YYYY-MM-DD HH:MM`.
fn utc_text(secs: u64) -> String {
    // Howard Hinnant's days-to-civil algorithm.
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}", rem / 3600, rem % 3600 / 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsv_roundtrip() {
        let mut r = ReportRow::new("evidence/in1.test", "FAIL");
        r.records = 10;
        r.run = 8;
        r.passed = 7;
        r.failed = 1;
        r.skipped = 2;
        r.seconds = 0.25;
        r.notes = "halt at line 5\twith a tab".into();
        let back = ReportRow::from_tsv(&r.to_tsv()).unwrap();
        assert_eq!(back.notes, "halt at line 5 with a tab");
        assert_eq!(ReportRow { notes: r.notes.replace('\t', " "), ..r }, back);
        assert_eq!(ReportRow::from_tsv("garbage"), None);
    }

    #[test]
    fn markdown_has_rows_and_totals() {
        let mut a = ReportRow::new("a.test", "pass");
        (a.records, a.run, a.passed) = (3, 3, 3);
        let mut b = ReportRow::new("b.test", "FAIL");
        (b.records, b.run, b.passed, b.failed, b.panics) = (4, 4, 1, 3, 1);
        let md = markdown(&[a, b]);
        assert!(md.contains("| a.test | pass | 3 | 3 | 3 | 0 | 0 | 0 | 100.00 |"), "{md}");
        assert!(md.contains("| b.test | FAIL | 4 | 4 | 1 | 3 | 1 | 0 | 25.00 |"), "{md}");
        assert!(md.contains("| **total** | 1 failing | 7 | 7 | 4 | 3 | 1 | 0 | 57.14 |"), "{md}");
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc_text(0), "1970-01-01 00:00");
        // Checked with Python's datetime.fromtimestamp(..., datetime.UTC).
        assert_eq!(utc_text(951_782_400 + 3723), "2000-02-29 01:02");
        assert_eq!(utc_text(1_795_392_000), "2026-11-23 00:00");
    }
}
