//! Command-log segment files: their layout, writing frames, and reading
//! them back with torn-tail detection.
//!
//! A segment is `log/NNNNNNNNNNNNNNNN.jlog` (its sequence number, 16 hex
//! digits, so names sort in order):
//!
//! ```text
//! header (32 bytes): "JOULELOG" | u32 format (1) | u32 partitions |
//!                    u64 sequence | u32 reserved | u32 CRC32C of the 28 bytes before
//! frames:            u32 payload length | u32 CRC32C of the payload | payload
//! ```
//!
//! A payload is one logged transaction ([`LogRecord`]):
//!
//! ```text
//! u8 kind (1 single-partition, 2 multi-partition) | u64 txn id | u64 unique id |
//! u32 partition (u32::MAX: multi-partition) | u64 after_mp | str database |
//! str procedure | u32 parameter count | values (see codec)
//! ```
//!
//! The writer appends whole batches and syncs them before it writes the
//! next, and syncs a segment before starting the next one (segments are
//! created whole: header written and synced under a temporary name, then
//! renamed). So in the last segment everything after the first bad frame
//! (short, or failing its checksum) is taken for a batch whose sync never
//! finished: a torn tail, cut off on recovery — and kept aside, since
//! damage to older bytes of that segment looks the same. A bad frame in
//! any other segment, or a frame that passes its checksum but does not
//! decode, is corruption, and recovery refuses to guess.

use crate::codec::{put_str, put_u32, put_u64, put_u8, put_value, Reader};
use joule_common::{bail, err, Result, Value};
use joule_txn::logging::LoggedTxn;
use joule_txn::{TxnId, TxnIds, UniqueId};
use std::path::{Path, PathBuf};

pub const MAGIC: &[u8; 8] = b"JOULELOG";
pub const FORMAT: u32 = 1;
pub const HEADER_BYTES: usize = 32;
/// Frame header: length and checksum.
pub const FRAME_HEADER: usize = 8;
/// Longest payload accepted when reading.
pub const MAX_RECORD_BYTES: usize = 256 << 20;

/// A logged transaction, read back.
#[derive(Clone, Debug, PartialEq)]
pub struct LogRecord {
    pub ids: TxnIds,
    /// `None`: multi-partition.
    pub partition: Option<u32>,
    pub after_mp: u64,
    pub database: String,
    pub procedure: String,
    pub params: Vec<Value>,
}

impl LogRecord {
    /// Whether a snapshot taken by multi-partition transaction `snapshot`
    /// already holds this transaction's effects.
    pub fn covered_by(&self, snapshot: u64) -> bool {
        match self.partition {
            None => self.ids.txn_id.0 <= snapshot,
            Some(_) => self.after_mp < snapshot,
        }
    }
}

/// The file name of segment `seq`.
pub fn segment_name(seq: u64) -> String {
    format!("{seq:016x}.jlog")
}

/// The segments in `dir`, by sequence number.
pub fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => bail!(IoError, "cannot list the command log directory {}: {e}", dir.display()),
    };
    for entry in entries {
        let entry = entry.map_err(|e| err!(IoError, "cannot list {}: {e}", dir.display()))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(hex) = name.strip_suffix(".jlog") {
            if let Ok(seq) = u64::from_str_radix(hex, 16) {
                out.push((seq, entry.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

pub fn encode_header(partitions: u32, seq: u64) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&FORMAT.to_le_bytes());
    h[12..16].copy_from_slice(&partitions.to_le_bytes());
    h[16..24].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32c::crc32c(&h[..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// A segment header: (partitions, sequence).
pub fn decode_header(h: &[u8]) -> Result<(u32, u64)> {
    if h.len() < HEADER_BYTES || &h[..8] != MAGIC {
        bail!(CorruptData, "not a JouleDB command log segment (bad magic)");
    }
    let crc = u32::from_le_bytes(h[28..32].try_into().unwrap_or_default());
    if crc != crc32c::crc32c(&h[..28]) {
        bail!(CorruptData, "the segment header fails its checksum");
    }
    let format = u32::from_le_bytes(h[8..12].try_into().unwrap_or_default());
    if format != FORMAT {
        bail!(CorruptData, "segment format {format} is not the supported {FORMAT}");
    }
    let partitions = u32::from_le_bytes(h[12..16].try_into().unwrap_or_default());
    let seq = u64::from_le_bytes(h[16..24].try_into().unwrap_or_default());
    Ok((partitions, seq))
}

/// Append `txn` as one frame to `out`.
pub fn encode_frame(out: &mut Vec<u8>, txn: &LoggedTxn<'_>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER]);
    put_u8(out, if txn.partition.is_some() { 1 } else { 2 });
    put_u64(out, txn.ids.txn_id.0);
    put_u64(out, txn.ids.unique_id.0);
    put_u32(out, txn.partition.unwrap_or(u32::MAX));
    put_u64(out, txn.after_mp);
    put_str(out, txn.database);
    put_str(out, txn.procedure);
    put_u32(out, (txn.params.len() + usize::from(txn.sql.is_some())) as u32);
    if let Some(sql) = txn.sql {
        // As a VARCHAR value, without building one.
        put_u8(out, 5);
        put_str(out, sql);
    }
    for v in txn.params {
        put_value(out, v);
    }
    let payload_len = (out.len() - start - FRAME_HEADER) as u32;
    let crc = crc32c::crc32c(&out[start + FRAME_HEADER..]);
    out[start..start + 4].copy_from_slice(&payload_len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

pub fn decode_record(payload: &[u8]) -> Result<LogRecord> {
    let mut r = Reader::new(payload);
    let kind = r.u8("record kind")?;
    let txn_id = r.u64("transaction id")?;
    let unique_id = r.u64("unique id")?;
    let partition = r.u32("partition")?;
    let after_mp = r.u64("after_mp")?;
    let database = r.str("database")?.to_string();
    let procedure = r.str("procedure")?.to_string();
    let n = r.u32("parameter count")? as usize;
    if n > r.remaining() {
        bail!(ProtocolError, "{n} parameters in {} bytes", r.remaining());
    }
    let mut params = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        params.push(r.value()?);
    }
    if !r.is_empty() {
        bail!(ProtocolError, "{} bytes after the record", r.remaining());
    }
    let partition = match (kind, partition) {
        (1, p) if p != u32::MAX => Some(p),
        (2, u32::MAX) => None,
        (k, p) => bail!(ProtocolError, "record kind {k} with partition {p}"),
    };
    Ok(LogRecord {
        ids: TxnIds { txn_id: TxnId(txn_id), unique_id: UniqueId(unique_id) },
        partition,
        after_mp,
        database,
        procedure,
        params,
    })
}

/// How a segment ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tail {
    /// Every byte belongs to a good frame.
    Clean,
    /// From `offset` on, the bytes are not a good frame (`reason`).
    Bad { offset: u64, reason: String },
}

/// What reading a segment found.
#[derive(Debug)]
pub struct SegmentScan {
    pub seq: u64,
    pub partitions: u32,
    pub records: Vec<LogRecord>,
    pub tail: Tail,
}

/// Read a segment's records up to its end or its first bad frame.
pub fn scan_segment(path: &Path) -> Result<SegmentScan> {
    let bytes = std::fs::read(path).map_err(|e| err!(IoError, "cannot read {}: {e}", path.display()))?;
    let (partitions, seq) = decode_header(&bytes).map_err(|e| e.context(path.display().to_string()))?;
    let mut records = Vec::new();
    let mut at = HEADER_BYTES;
    let tail = loop {
        if at == bytes.len() {
            break Tail::Clean;
        }
        let bad = |reason: String| Tail::Bad { offset: at as u64, reason };
        if bytes.len() - at < FRAME_HEADER {
            break bad(format!("{} bytes, too few for a frame header", bytes.len() - at));
        }
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap_or_default());
        if len > MAX_RECORD_BYTES || len > bytes.len() - at - FRAME_HEADER {
            break bad(format!("a frame of {len} bytes runs past the end of the file"));
        }
        let payload = &bytes[at + FRAME_HEADER..at + FRAME_HEADER + len];
        if crc32c::crc32c(payload) != crc {
            break bad("a frame fails its checksum".to_string());
        }
        // A torn write cannot pass the checksum: a frame that does and
        // still does not decode is damage (or a bug), never a torn tail.
        let record = decode_record(payload).map_err(|e| {
            err!(
                CorruptData,
                "{}: the record at byte {at} passes its checksum but does not decode: {e}",
                path.display()
            )
        })?;
        records.push(record);
        at += FRAME_HEADER + len;
    };
    Ok(SegmentScan { seq, partitions, records, tail })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txn<'a>(params: &'a [Value], partition: Option<u32>) -> LoggedTxn<'a> {
        LoggedTxn {
            ids: TxnIds { txn_id: TxnId(77 << 14), unique_id: UniqueId(5 << 23) },
            partition,
            after_mp: 3,
            database: "DEFAULT",
            procedure: "Vote",
            sql: None,
            params,
        }
    }

    #[test]
    fn records_round_trip() {
        let params = [Value::Integer(5), Value::String("x".into())];
        for partition in [Some(2), None] {
            let mut out = Vec::new();
            encode_frame(&mut out, &LoggedTxn { sql: Some("SELECT 1"), ..txn(&params, partition) });
            let r = decode_record(&out[FRAME_HEADER..]).unwrap();
            assert_eq!(r.partition, partition);
            assert_eq!(r.procedure, "Vote");
            assert_eq!(r.params, vec![Value::String("SELECT 1".into()), Value::Integer(5), Value::String("x".into())]);
            assert_eq!(r.ids.txn_id, TxnId(77 << 14));
        }
    }

    #[test]
    fn coverage_by_a_snapshot() {
        let sp = |after_mp| LogRecord {
            ids: TxnIds { txn_id: TxnId(1), unique_id: UniqueId(1) },
            partition: Some(0),
            after_mp,
            database: String::new(),
            procedure: String::new(),
            params: Vec::new(),
        };
        let mp = |id| LogRecord { ids: TxnIds { txn_id: TxnId(id), unique_id: UniqueId(1) }, partition: None, ..sp(0) };
        // Snapshot taken by multi-partition transaction 100.
        assert!(sp(99).covered_by(100));
        assert!(!sp(100).covered_by(100));
        assert!(mp(100).covered_by(100));
        assert!(!mp(101).covered_by(100));
    }

    #[test]
    fn headers_check_themselves() {
        let h = encode_header(4, 9);
        assert_eq!(decode_header(&h).unwrap(), (4, 9));
        for i in 0..HEADER_BYTES {
            let mut bad = h;
            bad[i] ^= 1;
            assert!(decode_header(&bad).is_err(), "byte {i}");
        }
    }
}
