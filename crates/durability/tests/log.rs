//! The command log over real files: group commit delivers answers, segments
//! rotate, and recovery reads everything back, cuts a torn tail, and
//! refuses corruption it cannot safely cut.

use joule_common::{ErrorCode, Value};
use joule_durability::recovery::read_log;
use joule_durability::segment::list_segments;
use joule_durability::{CommandLogWriter, LogConfig, LogMode};
use joule_txn::logging::{Answer, CommandLog, LoggedTxn};
use joule_txn::{Response, ResponseSink, TxnId, TxnIds, UniqueId};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

struct Collect(Mutex<Vec<(u64, Response)>>);

impl ResponseSink for Collect {
    fn deliver(&self, handle: u64, response: Response) {
        self.0.lock().unwrap().push((handle, response));
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("joule-log-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn start(dir: &Path, mode: LogMode, segment_bytes: u64) -> CommandLogWriter {
    let config = LogConfig { dir: dir.to_path_buf(), mode, segment_bytes, partitions: 2, first_segment: 1 };
    CommandLogWriter::start(config, Box::new(|_| {})).unwrap()
}

fn ids(i: u64) -> TxnIds {
    TxnIds { txn_id: TxnId(i << 14), unique_id: UniqueId(i << 23) }
}

/// Log `n` single-partition records with answers; return the answers.
fn write(log: &CommandLogWriter, n: u64) -> Vec<(u64, Response)> {
    let sink = Arc::new(Collect(Mutex::new(Vec::new())));
    for i in 0..n {
        let params = [Value::Integer(i as i64), Value::String(format!("value {i}"))];
        let txn = LoggedTxn {
            ids: ids(i + 1),
            partition: Some((i % 2) as u32),
            after_mp: 0,
            database: "",
            procedure: "KV.insert",
            sql: None,
            params: &params,
        };
        let answer = Answer { sink: sink.clone(), handle: i, response: Response::answered(Vec::new()) };
        log.append(&txn, Some(answer));
    }
    log.stop();
    let answers = std::mem::take(&mut *sink.0.lock().unwrap());
    answers
}

#[test]
fn synchronous_log_answers_after_syncing_and_reads_back_in_order() {
    let dir = temp_dir("sync");
    let log = start(&dir, LogMode::Sync, 64 << 20);
    let answers = write(&log, 1000);
    assert_eq!(answers.len(), 1000);
    assert!(answers.iter().all(|(_, r)| r.error.is_none()));
    // Answers come back in log order.
    assert!(answers.windows(2).all(|w| w[0].0 < w[1].0));
    let stats = log.stats();
    assert!(stats.syncs.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    assert_eq!(stats.records.load(std::sync::atomic::Ordering::Relaxed), 1000);
    let contents = read_log(&dir, 2).unwrap();
    assert_eq!(contents.records.len(), 1000);
    assert!(contents.cut.is_none());
    for (i, r) in contents.records.iter().enumerate() {
        assert_eq!(r.ids, ids(i as u64 + 1));
        assert_eq!(r.params[1], Value::String(format!("value {i}")));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn segments_rotate_and_read_back_as_one_log() {
    let dir = temp_dir("rotate");
    let log = start(&dir, LogMode::Async { frequency: std::time::Duration::from_millis(5) }, 4096);
    write(&log, 2000);
    let segments = list_segments(&dir).unwrap();
    assert!(segments.len() > 5, "{} segments", segments.len());
    let contents = read_log(&dir, 2).unwrap();
    assert_eq!(contents.records.len(), 2000);
    assert_eq!(contents.segments, (1..=segments.len() as u64).collect::<Vec<_>>());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_torn_tail_is_cut_and_reported() {
    let dir = temp_dir("torn");
    let log = start(&dir, LogMode::Sync, 64 << 20);
    write(&log, 10);
    let (_, path) = list_segments(&dir).unwrap().pop().unwrap();
    let good_len = std::fs::metadata(&path).unwrap().len();
    // Half a frame: a length that runs past the end, then a few bytes.
    let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
    std::io::Write::write_all(&mut f, &[200, 0, 0, 0, 1, 2, 3, 4, 5, 6]).unwrap();
    drop(f);
    let contents = read_log(&dir, 2).unwrap();
    assert_eq!(contents.records.len(), 10);
    let (seq, offset, bytes, _) = contents.cut.clone().expect("the tail is reported");
    assert_eq!((seq, offset, bytes), (1, good_len, 10));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), good_len, "the tail was cut");
    let aside = path.with_extension(format!("jlog.cut-{good_len}"));
    assert_eq!(std::fs::read(&aside).unwrap(), vec![200, 0, 0, 0, 1, 2, 3, 4, 5, 6], "and kept aside");
    // A checksum failure in the last frame is cut the same way.
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let contents = read_log(&dir, 2).unwrap();
    assert_eq!(contents.records.len(), 9);
    assert!(contents.cut.unwrap().3.contains("checksum"));
    assert!(read_log(&dir, 2).unwrap().cut.is_none(), "cut once, clean after");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_frame_that_passes_its_checksum_but_does_not_decode_is_corruption_not_a_tail() {
    let dir = temp_dir("undecodable");
    let log = start(&dir, LogMode::Sync, 64 << 20);
    write(&log, 5);
    let (_, path) = list_segments(&dir).unwrap().pop().unwrap();
    let payload = [9u8, 9, 9, 9];
    let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    frame.extend_from_slice(&payload);
    let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
    std::io::Write::write_all(&mut f, &frame).unwrap();
    drop(f);
    let e = read_log(&dir, 2).unwrap_err();
    assert_eq!(e.code(), ErrorCode::CorruptData, "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn corruption_before_the_last_segment_or_a_missing_segment_stops_recovery() {
    let dir = temp_dir("corrupt");
    let log = start(&dir, LogMode::Async { frequency: std::time::Duration::from_millis(5) }, 4096);
    write(&log, 500);
    let segments = list_segments(&dir).unwrap();
    assert!(segments.len() >= 3);
    // Another partition count.
    assert_eq!(read_log(&dir, 3).unwrap_err().code(), ErrorCode::RecoveryFailed);
    // A flipped byte inside the first segment.
    let first = &segments[0].1;
    let mut bytes = std::fs::read(first).unwrap();
    bytes[100] ^= 0x40;
    std::fs::write(first, &bytes).unwrap();
    let e = read_log(&dir, 2).unwrap_err();
    assert_eq!(e.code(), ErrorCode::CorruptData, "{e}");
    assert!(e.message().contains("not the last segment"), "{e}");
    bytes[100] ^= 0x40;
    std::fs::write(first, &bytes).unwrap();
    // A segment missing from the middle.
    std::fs::remove_file(&segments[1].1).unwrap();
    let e = read_log(&dir, 2).unwrap_err();
    assert_eq!(e.code(), ErrorCode::RecoveryFailed, "{e}");
    assert!(e.message().contains("not consecutive"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
