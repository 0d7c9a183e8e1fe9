//! Snapshot files: writing frozen partitions, reading and verifying them.
//!
//! A snapshot is a directory `<root>/<nonce>/` holding one file per
//! partition and a manifest written last:
//!
//! ```text
//! p0000.jsnap ...   frames (u32 length | u32 CRC32C | payload), payload's
//!                   first byte its kind:
//!                     1 table:  str qualified name | u8 flags (1 view, 2 replicated) |
//!                               u32 columns | (str name, str type)*
//!                     2 rows:   u32 count | (u32 row id, row)*  (see codec)
//!                     3 end:    u64 rows | u32 tables
//! manifest.jsnap    one frame: "JOULEMAN" | u32 format | str nonce | u64 txn id |
//!                   u64 unique id | u64 highest txn id | u64 highest unique id |
//!                   u32 partitions | u64 created (Unix ms) |
//!                   u64 log segment | u32 DDL count | (str database, str sql)* |
//!                   u32 files | (str name, u64 bytes, u32 CRC32C of the file)* |
//!                   u64 rows | u64 ring version | u32 ring entries |
//!                   (i32 token, u32 partition)*
//! ```
//!
//! The ring is the hashinator the snapshot's rows are placed by (moved
//! ranges, see `@MoveRange`); format 2, written before ranges could move,
//! has none and means the even ring.
//!
//! Each file is self-describing (table names and column types) and
//! checksummed block by block and as a whole; the manifest carries the
//! schema (the DDL that built it) and exists only once every partition
//! file is written and synced — a snapshot without one is incomplete and
//! never used. Partition files are written in parallel, one thread each,
//! while the sites go on running transactions: the frozen rows are shared
//! copy-on-write with the live tables (see `joule_txn::snapshot`).

use crate::codec::{put_row, put_str, put_u32, put_u64, put_u8, Reader};
use crate::command_log::sync_dir;
use joule_common::hashinator::Hashinator;
use joule_common::{bail, err, Result, Row};
use joule_txn::snapshot::{FrozenDatabase, FrozenPartition};
use joule_txn::{TxnId, TxnIds, UniqueId};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// 2: row ids and table flags in partition files; 3: the hashinator ring.
pub const FORMAT: u32 = 3;
/// The oldest format this build reads.
const OLDEST_FORMAT: u32 = 2;
const MANIFEST: &str = "manifest.jsnap";
const MANIFEST_MAGIC: &[u8; 8] = b"JOULEMAN";
/// Rows per block.
const BLOCK_ROWS: usize = 4096;
/// Largest block accepted when reading.
const MAX_BLOCK_BYTES: usize = 512 << 20;

/// What a manifest says.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    pub nonce: String,
    /// The snapshot transaction's ids.
    pub ids: TxnIds,
    /// The highest ids any site or the coordinator had issued: ids after a
    /// restore must follow them.
    pub max_ids: TxnIds,
    pub partitions: u32,
    pub created_millis: u64,
    /// The first command-log segment with records the snapshot does not
    /// cover (0: the node had no log).
    pub log_segment: u64,
    pub ddl: Vec<(String, String)>,
    /// (file name, bytes, CRC32C of the whole file).
    pub files: Vec<(String, u64, u32)>,
    pub rows: u64,
    /// The ring the rows are placed by (`None`: the even ring of
    /// `partitions`, version 1 — a snapshot of format 2).
    pub hashinator: Option<Hashinator>,
}

impl Manifest {
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.1).sum()
    }
}

/// What writing a snapshot did.
#[derive(Clone, Debug)]
pub struct SaveReport {
    pub path: PathBuf,
    pub manifest: Manifest,
    pub seconds: f64,
    /// The longest time a site paused to freeze its partition, µs.
    pub max_pause_micros: u64,
}

fn frame(out: &mut Vec<u8>, payload: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0u8; 8]);
    payload(out);
    let len = (out.len() - start - 8) as u32;
    let crc = crc32c::crc32c(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Writes through, keeping a CRC32C of everything written.
struct Checksummed<W: Write> {
    inner: W,
    crc: u32,
    bytes: u64,
}

impl<W: Write> Write for Checksummed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

pub fn partition_file_name(partition: u32) -> String {
    format!("p{partition:04}.jsnap")
}

/// Write one partition's file; returns (name, bytes, CRC, rows).
fn write_partition(dir: &Path, p: &FrozenPartition) -> Result<(String, u64, u32, u64)> {
    use joule_engine::storage::RowId;
    let name = partition_file_name(p.partition);
    let path = dir.join(&name);
    let io = |e: std::io::Error| err!(IoError, "cannot write snapshot file {}: {e}", path.display());
    let file = std::fs::OpenOptions::new().write(true).create_new(true).open(&path).map_err(io)?;
    let mut w = Checksummed { inner: BufWriter::with_capacity(1 << 20, file), crc: 0, bytes: 0 };
    let mut buf = Vec::with_capacity(1 << 20);
    let mut rows_total = 0u64;
    for t in &p.tables {
        frame(&mut buf, |out| {
            put_u8(out, 1);
            put_str(out, &t.def.qualified_name());
            put_u8(out, u8::from(t.def.view.is_some()) | (u8::from(t.replicated) << 1));
            put_u32(out, t.def.columns.len() as u32);
            for c in &t.def.columns {
                put_str(out, &c.name);
                put_str(out, c.data_type.name());
            }
        });
        let mut rows = t.rows.iter_with_ids().peekable();
        while rows.peek().is_some() {
            let block: Vec<(RowId, &Row)> = rows.by_ref().take(BLOCK_ROWS).collect();
            rows_total += block.len() as u64;
            frame(&mut buf, |out| {
                put_u8(out, 2);
                put_u32(out, block.len() as u32);
                for (id, r) in &block {
                    put_u32(out, *id);
                    put_row(out, r);
                }
            });
            if buf.len() >= 1 << 20 {
                w.write_all(&buf).map_err(io)?;
                buf.clear();
            }
        }
    }
    frame(&mut buf, |out| {
        put_u8(out, 3);
        put_u64(out, rows_total);
        put_u32(out, p.tables.len() as u32);
    });
    w.write_all(&buf).map_err(io)?;
    w.flush().map_err(io)?;
    let (crc, bytes) = (w.crc, w.bytes);
    let file = w.inner.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    Ok((name, bytes, crc, rows_total))
}

fn encode_manifest(m: &Manifest) -> Vec<u8> {
    let mut out = Vec::new();
    frame(&mut out, |o| {
        o.extend_from_slice(MANIFEST_MAGIC);
        put_u32(o, FORMAT);
        put_str(o, &m.nonce);
        put_u64(o, m.ids.txn_id.0);
        put_u64(o, m.ids.unique_id.0);
        put_u64(o, m.max_ids.txn_id.0);
        put_u64(o, m.max_ids.unique_id.0);
        put_u32(o, m.partitions);
        put_u64(o, m.created_millis);
        put_u64(o, m.log_segment);
        put_u32(o, m.ddl.len() as u32);
        for (db, sql) in &m.ddl {
            put_str(o, db);
            put_str(o, sql);
        }
        put_u32(o, m.files.len() as u32);
        for (name, bytes, crc) in &m.files {
            put_str(o, name);
            put_u64(o, *bytes);
            put_u32(o, *crc);
        }
        put_u64(o, m.rows);
        if let Some(h) = &m.hashinator {
            put_u64(o, h.version());
            put_u32(o, h.ring().len() as u32);
            for (token, partition) in h.ring() {
                put_u32(o, *token as u32);
                put_u32(o, *partition);
            }
        }
    });
    out
}

/// Read and check a frame: (payload, bytes consumed).
fn read_frame<'a>(bytes: &'a [u8], what: &dyn Fn() -> String) -> Result<(&'a [u8], usize)> {
    if bytes.len() < 8 {
        bail!(CorruptData, "{}: truncated ({} bytes where a block header belongs)", what(), bytes.len());
    }
    let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    let crc = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    if len > MAX_BLOCK_BYTES || len > bytes.len() - 8 {
        bail!(CorruptData, "{}: truncated (a block of {len} bytes runs past the end)", what());
    }
    let payload = &bytes[8..8 + len];
    if crc32c::crc32c(payload) != crc {
        bail!(CorruptData, "{}: a block fails its checksum", what());
    }
    Ok((payload, 8 + len))
}

/// Read a snapshot's manifest.
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!(SnapshotFailed, "{} has no manifest: the snapshot is incomplete", dir.display())
        }
        Err(e) => bail!(IoError, "cannot read {}: {e}", path.display()),
    };
    let what = || path.display().to_string();
    let (payload, _) = read_frame(&bytes, &what)?;
    let mut r = Reader::new(payload);
    if r.take(8, "magic")? != MANIFEST_MAGIC {
        bail!(CorruptData, "{} is not a snapshot manifest", path.display());
    }
    let format = r.u32("format")?;
    if !(OLDEST_FORMAT..=FORMAT).contains(&format) {
        bail!(
            RecoveryFailed,
            "{} has snapshot format {format}; this build reads formats {OLDEST_FORMAT} to {FORMAT}",
            path.display()
        );
    }
    let nonce = r.str("nonce")?.to_string();
    let ids = TxnIds { txn_id: TxnId(r.u64("txn id")?), unique_id: UniqueId(r.u64("unique id")?) };
    let max_ids = TxnIds { txn_id: TxnId(r.u64("highest txn id")?), unique_id: UniqueId(r.u64("highest unique id")?) };
    let partitions = r.u32("partitions")?;
    let created_millis = r.u64("created")?;
    let log_segment = r.u64("log segment")?;
    let n = r.u32("DDL count")? as usize;
    let mut ddl = Vec::with_capacity(n.min(r.remaining()));
    for _ in 0..n {
        ddl.push((r.str("database")?.to_string(), r.str("DDL")?.to_string()));
    }
    let n = r.u32("file count")? as usize;
    let mut files = Vec::with_capacity(n.min(r.remaining()));
    for _ in 0..n {
        files.push((r.str("file name")?.to_string(), r.u64("file size")?, r.u32("file checksum")?));
    }
    let rows = r.u64("rows")?;
    let hashinator = if format >= 3 {
        let version = r.u64("ring version")?;
        let n = r.u32("ring entries")? as usize;
        let mut ring = Vec::with_capacity(n.min(r.remaining()));
        for _ in 0..n {
            ring.push((r.u32("ring token")? as i32, r.u32("ring partition")?));
        }
        let ring = Hashinator::over(version, ring, partitions)
            .map_err(|e| err!(CorruptData, "{}: its hashinator ring is invalid: {}", path.display(), e.message()))?;
        Some(ring)
    } else {
        None
    };
    Ok(Manifest { nonce, ids, max_ids, partitions, created_millis, log_segment, ddl, files, rows, hashinator })
}

/// Write a frozen database as snapshot `nonce` under `root`. The manifest
/// goes last; a failure leaves no manifest (an incomplete snapshot).
pub fn save(root: &Path, nonce: &str, db: &FrozenDatabase) -> Result<SaveReport> {
    let started = Instant::now();
    check_nonce(nonce)?;
    let dir = root.join(nonce);
    if dir.exists() {
        bail!(SnapshotFailed, "a snapshot named {nonce} already exists in {}", root.display());
    }
    std::fs::create_dir_all(&dir).map_err(|e| err!(IoError, "cannot create {}: {e}", dir.display()))?;
    let results: Vec<Result<(String, u64, u32, u64)>> = std::thread::scope(|s| {
        let handles: Vec<_> = db.partitions.iter().map(|p| s.spawn(|| write_partition(&dir, p))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(err!(Internal, "a snapshot writer thread panicked"))))
            .collect()
    });
    let mut files = Vec::new();
    let mut rows = 0;
    for r in results {
        let (name, bytes, crc, n) = r?;
        files.push((name, bytes, crc));
        rows += n;
    }
    let manifest = Manifest {
        nonce: nonce.to_string(),
        ids: db.ids,
        max_ids: db.partitions.iter().map(|p| p.last_ids).fold(db.ids, highest),
        partitions: db.partitions.len() as u32,
        created_millis: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        log_segment: db.log_segment,
        ddl: db.ddl.clone(),
        files,
        rows,
        hashinator: Some((*db.hashinator).clone()),
    };
    let tmp = dir.join("manifest.tmp");
    let io = |e: std::io::Error| err!(IoError, "cannot write the manifest of {}: {e}", dir.display());
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(&encode_manifest(&manifest)).and_then(|_| f.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, dir.join(MANIFEST)).map_err(io)?;
    sync_dir(&dir)?;
    sync_dir(root)?;
    let max_pause_micros = db.partitions.iter().map(|p| p.pause_micros).max().unwrap_or(0);
    Ok(SaveReport { path: dir, manifest, seconds: started.elapsed().as_secs_f64(), max_pause_micros })
}

/// Ids after both: the higher sequence and the higher unique id.
pub fn highest(a: TxnIds, b: TxnIds) -> TxnIds {
    let seq = a.txn_id.sequence().max(b.txn_id.sequence());
    TxnIds {
        txn_id: TxnId(seq << joule_txn::ids::INITIATOR_BITS | u64::from(joule_txn::ids::MP_INITIATOR)),
        unique_id: a.unique_id.max(b.unique_id),
    }
}

/// Nonces name directories: letters, digits, `_`, `-`, `.`; not `.`/`..`.
pub fn check_nonce(nonce: &str) -> Result<()> {
    let ok = !nonce.is_empty()
        && nonce.len() <= 200
        && nonce != "."
        && nonce != ".."
        && nonce.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !ok {
        bail!(SnapshotFailed, "snapshot nonce {nonce:?} must be letters, digits, '_', '-' or '.'");
    }
    Ok(())
}

/// One table of one partition file, read back.
#[derive(Debug)]
pub struct LoadedTable {
    pub name: String,
    pub view: bool,
    pub replicated: bool,
    pub rows: Vec<(u32, Row)>,
}

/// A snapshot read back and verified.
#[derive(Debug)]
pub struct LoadedSnapshot {
    pub manifest: Manifest,
    /// Per partition file, in partition order: its tables.
    pub partitions: Vec<Vec<LoadedTable>>,
    pub bytes: u64,
}

impl LoadedSnapshot {
    /// Base tables' rows by name, every partition's together (for loading
    /// through INSERT checks into any partition count; views rebuild).
    pub fn logical_tables(self) -> Vec<(String, Vec<Row>)> {
        let mut out: Vec<(String, Vec<Row>)> = Vec::new();
        for t in self.partitions.into_iter().flatten().filter(|t| !t.view) {
            let rows = t.rows.into_iter().map(|(_, r)| r);
            match out.iter_mut().find(|(n, _)| *n == t.name) {
                Some((_, all)) => all.extend(rows),
                None => out.push((t.name, rows.collect())),
            }
        }
        out
    }

    /// Each partition's rows at their ids (for recovery into the same
    /// partition count): its own tables, and the replicated ones (saved
    /// with partition 0) on every partition.
    pub fn placement(self) -> Vec<joule_txn::snapshot::PartitionRows> {
        let mut parts: Vec<Vec<LoadedTable>> = self.partitions;
        let replicated: Vec<(String, Vec<(u32, Row)>)> = parts
            .first()
            .map(|p0| p0.iter().filter(|t| t.replicated).map(|t| (t.name.clone(), t.rows.clone())).collect())
            .unwrap_or_default();
        parts
            .drain(..)
            .map(|tables| {
                let mut out: joule_txn::snapshot::PartitionRows =
                    tables.into_iter().filter(|t| !t.replicated).map(|t| (t.name, t.rows)).collect();
                out.extend(replicated.iter().cloned());
                out
            })
            .collect()
    }
}

/// Read every file of snapshot `dir`, checking every checksum against the
/// blocks and the manifest.
pub fn load(dir: &Path) -> Result<LoadedSnapshot> {
    let manifest = read_manifest(dir)?;
    if manifest.files.len() != manifest.partitions as usize {
        bail!(
            CorruptData,
            "{}: the manifest lists {} files for {} partitions",
            dir.display(),
            manifest.files.len(),
            manifest.partitions
        );
    }
    let mut partitions = Vec::new();
    let mut bytes_total = 0;
    let mut rows_total = 0u64;
    for (name, size, crc) in &manifest.files {
        let path = dir.join(name);
        let mut bytes = Vec::with_capacity(*size as usize);
        std::fs::File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| err!(CorruptData, "cannot read snapshot file {}: {e}", path.display()))?;
        if bytes.len() as u64 != *size || crc32c::crc32c(&bytes) != *crc {
            bail!(CorruptData, "snapshot file {} does not match its manifest (size or checksum)", path.display());
        }
        bytes_total += bytes.len() as u64;
        let mut tables = Vec::new();
        rows_total += read_partition_file(&path, &bytes, &mut tables)?;
        partitions.push(tables);
    }
    if rows_total != manifest.rows {
        bail!(CorruptData, "{}: {rows_total} rows found, the manifest says {}", dir.display(), manifest.rows);
    }
    Ok(LoadedSnapshot { manifest, partitions, bytes: bytes_total })
}

fn read_partition_file(path: &Path, bytes: &[u8], tables: &mut Vec<LoadedTable>) -> Result<u64> {
    let what = || path.display().to_string();
    let mut at = 0;
    let mut current: Option<usize> = None;
    let mut rows = 0u64;
    loop {
        let (payload, used) = read_frame(&bytes[at..], &what)?;
        at += used;
        let mut r = Reader::new(payload);
        match r.u8("block kind")? {
            1 => {
                let name = r.str("table name")?.to_string();
                let flags = r.u8("table flags")?;
                let columns = r.u32("column count")?;
                for _ in 0..columns {
                    r.str("column name")?;
                    r.str("column type")?;
                }
                if tables.iter().any(|t| t.name == name) {
                    bail!(CorruptData, "{}: table {name} appears twice", what());
                }
                tables.push(LoadedTable { name, view: flags & 1 != 0, replicated: flags & 2 != 0, rows: Vec::new() });
                current = Some(tables.len() - 1);
            }
            2 => {
                let Some(t) = current else { bail!(CorruptData, "{}: rows before any table", what()) };
                let n = r.u32("row count")? as usize;
                if n > r.remaining() {
                    bail!(CorruptData, "{}: {n} rows in {} bytes", what(), r.remaining());
                }
                let out = &mut tables[t].rows;
                for _ in 0..n {
                    let id = r.u32("row id").map_err(|e| err!(CorruptData, "{}: {}", what(), e.message()))?;
                    out.push((id, r.row().map_err(|e| err!(CorruptData, "{}: {}", what(), e.message()))?));
                }
                rows += n as u64;
            }
            3 => {
                let declared = r.u64("row total")?;
                if declared != rows || at != bytes.len() {
                    bail!(CorruptData, "{}: the end block does not match the file", what());
                }
                return Ok(rows);
            }
            k => bail!(CorruptData, "{}: unknown block kind {k}", what()),
        }
    }
}

/// Every snapshot directory under `root` with its manifest (or why it has
/// none usable), newest first.
pub fn scan(root: &Path) -> Result<Vec<(PathBuf, Result<Manifest>)>> {
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => bail!(SnapshotFailed, "cannot list {}: {e}", root.display()),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            let m = read_manifest(&path);
            out.push((path, m));
        }
    }
    out.sort_by_key(|(path, m)| std::cmp::Reverse((m.as_ref().map_or(0, |m| m.ids.txn_id.0), path.clone())));
    Ok(out)
}

/// Delete snapshot `nonce` under `root`.
pub fn delete(root: &Path, nonce: &str) -> Result<()> {
    check_nonce(nonce)?;
    let dir = root.join(nonce);
    if !dir.is_dir() {
        bail!(SnapshotFailed, "no snapshot {nonce} in {}", root.display());
    }
    std::fs::remove_dir_all(&dir).map_err(|e| err!(IoError, "cannot delete {}: {e}", dir.display()))?;
    sync_dir(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(hashinator: Option<Hashinator>) -> Manifest {
        let ids = TxnIds { txn_id: TxnId(7), unique_id: UniqueId(9) };
        Manifest {
            nonce: "n".into(),
            ids,
            max_ids: ids,
            partitions: 4,
            created_millis: 1,
            log_segment: 2,
            ddl: vec![("DEFAULT".into(), "CREATE TABLE t (k INT)".into())],
            files: vec![("p0000.jsnap".into(), 10, 3)],
            rows: 5,
            hashinator,
        }
    }

    fn write(dir: &Path, bytes: &[u8]) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(MANIFEST), bytes).unwrap();
    }

    #[test]
    fn manifests_carry_the_ring_and_older_ones_mean_the_even_ring() {
        let dir = std::env::temp_dir().join(format!("joule-manifest-{}", std::process::id()));
        let moved = Hashinator::even(4, 1).unwrap().with_range_moved(-100, 100, 3).unwrap();
        let m = manifest(Some(moved));
        write(&dir, &encode_manifest(&m));
        assert_eq!(read_manifest(&dir).unwrap(), m);
        // Format 2: the same fields without the ring.
        let mut bytes = encode_manifest(&manifest(None));
        let payload = bytes.split_off(8);
        let mut old = Vec::new();
        frame(&mut old, |o| {
            o.extend_from_slice(&payload);
            o[8 + 8..8 + 12].copy_from_slice(&2u32.to_le_bytes());
        });
        write(&dir, &old);
        assert_eq!(read_manifest(&dir).unwrap(), manifest(None));
        // A ring naming a partition the snapshot does not have is refused.
        let mut wrong = manifest(Some(Hashinator::even(4, 1).unwrap()));
        wrong.partitions = 2;
        write(&dir, &encode_manifest(&wrong));
        assert_eq!(read_manifest(&dir).unwrap_err().code(), joule_common::ErrorCode::CorruptData);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
