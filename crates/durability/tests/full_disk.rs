//! A full disk under the command log, made real with the process's file
//! size limit (`RLIMIT_FSIZE`, as `ulimit -f`): writes past it fail with
//! EFBIG like on a full file system. Its own test binary, since the limit
//! is the process's.

use joule_common::{ErrorCode, Value};
use joule_durability::recovery::read_log;
use joule_durability::{CommandLogWriter, LogConfig, LogMode};
use joule_txn::logging::{Answer, CommandLog, LoggedTxn};
use joule_txn::{Response, ResponseSink, TxnId, TxnIds, UniqueId};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

struct Collect(Mutex<Vec<(u64, Response)>>);

impl ResponseSink for Collect {
    fn deliver(&self, handle: u64, response: Response) {
        self.0.lock().unwrap().push((handle, response));
    }
}

#[test]
fn a_full_disk_fails_the_writes_it_hits_and_acknowledges_nothing_it_lost() {
    let dir = std::env::temp_dir().join(format!("joule-full-disk-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    const LIMIT: u64 = 64 * 1024;
    unsafe {
        // Fail with EFBIG instead of being killed by SIGXFSZ.
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let limit = libc::rlimit { rlim_cur: LIMIT, rlim_max: libc::RLIM_INFINITY };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
    let failed = Arc::new(AtomicBool::new(false));
    let hook = failed.clone();
    let config =
        LogConfig { dir: dir.clone(), mode: LogMode::Sync, segment_bytes: 1 << 30, partitions: 1, first_segment: 1 };
    let log = CommandLogWriter::start(
        config,
        Box::new(move |e| {
            assert_eq!(e.code(), ErrorCode::IoError);
            hook.store(true, Ordering::SeqCst);
        }),
    )
    .unwrap();
    let sink = Arc::new(Collect(Mutex::new(Vec::new())));
    let payload = Value::String("x".repeat(1000));
    for i in 0..200u64 {
        let params = [Value::Integer(i as i64), payload.clone()];
        let txn = LoggedTxn {
            ids: TxnIds { txn_id: TxnId((i + 1) << 14), unique_id: UniqueId((i + 1) << 23) },
            partition: Some(0),
            after_mp: 0,
            database: "",
            procedure: "T.insert",
            sql: None,
            params: &params,
        };
        let answer = Answer { sink: sink.clone(), handle: i, response: Response::answered(Vec::new()) };
        log.append(&txn, Some(answer));
        // One at a time, so that each batch is one record.
        while sink.0.lock().unwrap().len() <= i as usize {
            std::thread::yield_now();
        }
    }
    log.stop();
    assert!(failed.load(Ordering::SeqCst), "the failure hook ran");
    let answers = std::mem::take(&mut *sink.0.lock().unwrap());
    let acknowledged = answers.iter().filter(|(_, r)| r.error.is_none()).count();
    assert!(acknowledged > 0 && acknowledged < 200, "{acknowledged} acknowledged");
    // Every answer after the first failure is a failure with IoError.
    let first_failure = answers.iter().position(|(_, r)| r.error.is_some()).unwrap();
    assert_eq!(first_failure, acknowledged);
    assert!(answers[first_failure..].iter().all(|(_, r)| r.error.as_ref().unwrap().code() == ErrorCode::IoError));
    // Recovery finds exactly the acknowledged records (a partial write of
    // the failed one, if any, is a torn tail).
    unsafe {
        let limit = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
        libc::setrlimit(libc::RLIMIT_FSIZE, &limit);
    }
    let contents = read_log(&dir, 1).unwrap();
    assert_eq!(contents.records.len(), acknowledged);
    let _ = std::fs::remove_dir_all(&dir);
}
