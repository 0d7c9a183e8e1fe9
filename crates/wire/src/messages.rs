//! The messages of VoltDB's client protocol, as JouleDB reads and writes
//! them. Every message travels in a frame (see [`crate::frame`]); the
//! layouts below are of the frame's payload, all integers big-endian.
//!
//! * Login request: `version: i8` (0 or 1), `hash scheme: i8` (0 = SHA-1,
//!   1 = SHA-256), `service: string` (`"database"`), `user: string`, then the
//!   raw password hash (20 or 32 bytes).
//! * Login response: `version: i8`, `result: i8` (0 = success), and on
//!   success `host id: i32`, `connection id: i64`, `cluster start
//!   (ms): i64`, `leader address: i32` (IPv4), `build: string`.
//! * Invocation: `version: i8`, then
//!   - v0: `procedure: string`, `client handle: i64`, parameters;
//!   - v1: `timeout kind: i8` (1 = an `i32` batch timeout follows), then as v0;
//!   - v2: `procedure`, `handle`, `extension count: i8` (0..=30), each
//!     extension `type: i8`, `size: i8` (payload 0 bytes if 0, else
//!     `2^(size-1)`) and its payload — unknown ones skipped by length —
//!     then the parameters.
//! * Response: `version: i8` (0), `client handle: i64`, `fields: i8` (bit 5
//!   status string, bit 6 serialized exception, bit 7 app status string),
//!   `status: i8`, [status string], `app status: i8`, [app status string],
//!   `cluster round trip (ms): i32`, [exception: `i32` length + bytes],
//!   `table count: i16`, tables.
//! * VoltTable: `total length: i32`, `header length: i32`, `status: i8`,
//!   `column count: i16`, the column types (`i8` each), the column names
//!   (strings), `row count: i32`, then each row as `length: i32` and its
//!   values by column type.

use crate::buf::{begin_length, end_length, put_i16, put_i32, put_i64, put_i8, put_string, Reader};
use crate::types::{read_params, read_value, write_params, write_value, Param, VoltType};
use joule_common::{bail, err, Result, Row};

/// Password hash schemes of the login message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashScheme {
    Sha1,
    Sha256,
}

impl HashScheme {
    pub fn digest_len(self) -> usize {
        match self {
            HashScheme::Sha1 => 20,
            HashScheme::Sha256 => 32,
        }
    }
}

/// A login request.
#[derive(Clone, Debug, PartialEq)]
pub struct Login {
    pub version: i8,
    pub scheme: HashScheme,
    pub service: String,
    pub user: String,
    /// The client's hash of the password (`scheme.digest_len()` bytes).
    pub password_hash: Vec<u8>,
}

impl Login {
    pub fn decode(payload: &[u8]) -> Result<Login> {
        let mut r = Reader::new(payload);
        let version = r.i8("login version")?;
        if !(0..=1).contains(&version) {
            bail!(ProtocolError, "unsupported login protocol version {version}");
        }
        let scheme = match r.i8("password hash scheme")? {
            0 => HashScheme::Sha1,
            1 => HashScheme::Sha256,
            s => bail!(ProtocolError, "unknown password hash scheme {s}"),
        };
        let service = r.string("service name")?.unwrap_or_default();
        let user = r.string("user name")?.unwrap_or_default();
        let password_hash = r.bytes(scheme.digest_len(), "password hash")?.to_vec();
        r.finish("login request")?;
        Ok(Login { version, scheme, service, user, password_hash })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        put_i8(&mut out, self.version);
        put_i8(&mut out, if self.scheme == HashScheme::Sha1 { 0 } else { 1 });
        put_string(&mut out, &self.service);
        put_string(&mut out, &self.user);
        out.extend_from_slice(&self.password_hash);
        out
    }
}

/// The client handle of a topology notification: an unsolicited response
/// a server sends to connections that called `@Subscribe('TOPOLOGY')`
/// whenever the cluster's topology changes (hosts failing or coming back,
/// partition leaders moving). It carries the `@Statistics TOPO` table; the
/// value is VoltDB's, so its clients understand it too.
pub const TOPOLOGY_HANDLE: i64 = i64::MAX - 1;

/// Login result codes.
pub mod login_result {
    pub const SUCCESS: i8 = 0;
    pub const TOO_MANY_CONNECTIONS: i8 = 1;
    pub const TIMEOUT: i8 = 2;
    pub const MALFORMED: i8 = 3;
    pub const AUTHENTICATION_FAILED: i8 = -1;
}

/// A login response.
#[derive(Clone, Debug, PartialEq)]
pub struct LoginResponse {
    pub version: i8,
    pub result: i8,
    pub host_id: i32,
    pub connection_id: i64,
    pub cluster_start_millis: i64,
    pub leader_ipv4: i32,
    pub build: String,
}

impl LoginResponse {
    /// A refusal with this result code (nothing else is sent).
    pub fn refused(result: i8) -> LoginResponse {
        LoginResponse {
            version: 0,
            result,
            host_id: 0,
            connection_id: 0,
            cluster_start_millis: 0,
            leader_ipv4: 0,
            build: String::new(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(40 + self.build.len());
        put_i8(&mut out, self.version);
        put_i8(&mut out, self.result);
        if self.result == login_result::SUCCESS {
            put_i32(&mut out, self.host_id);
            put_i64(&mut out, self.connection_id);
            put_i64(&mut out, self.cluster_start_millis);
            put_i32(&mut out, self.leader_ipv4);
            put_string(&mut out, &self.build);
        }
        out
    }

    pub fn decode(payload: &[u8]) -> Result<LoginResponse> {
        let mut r = Reader::new(payload);
        let version = r.i8("login response version")?;
        let result = r.i8("login result")?;
        if result != login_result::SUCCESS {
            return Ok(LoginResponse { version, ..LoginResponse::refused(result) });
        }
        Ok(LoginResponse {
            version,
            result,
            host_id: r.i32("host id")?,
            connection_id: r.i64("connection id")?,
            cluster_start_millis: r.i64("cluster start")?,
            leader_ipv4: r.i32("leader address")?,
            build: r.string("build string")?.unwrap_or_default(),
        })
    }
}

/// Most invocation extensions VoltDB's clients send.
const MAX_EXTENSIONS: i8 = 30;

/// A procedure invocation.
#[derive(Clone, Debug, PartialEq)]
pub struct Invocation {
    pub version: i8,
    pub procedure: String,
    pub client_handle: i64,
    /// Batch timeout in milliseconds, when the client set one.
    pub batch_timeout_ms: Option<i32>,
    pub params: Vec<Param>,
}

impl Invocation {
    pub fn decode(payload: &[u8]) -> Result<Invocation> {
        let mut r = Reader::new(payload);
        let version = r.i8("invocation version")?;
        let mut batch_timeout_ms = None;
        if version == 1 {
            match r.i8("batch timeout kind")? {
                0 => {}
                1 => batch_timeout_ms = Some(r.i32("batch timeout")?),
                k => bail!(ProtocolError, "unknown batch timeout kind {k}"),
            }
        } else if !(version == 0 || version == 2) {
            bail!(ProtocolError, "unsupported invocation version {version}");
        }
        let procedure = match r.string("procedure name")? {
            Some(p) if !p.is_empty() => p,
            _ => bail!(ProtocolError, "the invocation has no procedure name"),
        };
        let client_handle = r.i64("client handle")?;
        if version == 2 {
            let count = r.i8("extension count")?;
            if !(0..=MAX_EXTENSIONS).contains(&count) {
                bail!(ProtocolError, "invocation extension count {count} is outside 0..={MAX_EXTENSIONS}");
            }
            for _ in 0..count {
                let kind = r.i8("extension type")?;
                let size = match r.i8("extension size")? {
                    0 => 0,
                    n @ 1..=24 => 1usize << (n - 1),
                    n => bail!(ProtocolError, "invocation extension size code {n} is out of range"),
                };
                let payload = r.bytes(size, "extension")?;
                // Type 1 is the batch timeout; others are skipped.
                if kind == 1 && size == 4 {
                    batch_timeout_ms = Some(i32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]));
                }
            }
        }
        let params = read_params(&mut r)?;
        r.finish("invocation")?;
        Ok(Invocation { version, procedure, client_handle, batch_timeout_ms, params })
    }

    /// Encode as version 0 (or 1 when a batch timeout is set).
    /// Where [`encode`](Self::encode) puts the client handle (8 bytes, big
    /// endian): a client sending the same invocation on another connection
    /// patches the handle instead of encoding again.
    pub fn handle_offset(&self) -> usize {
        let version = if self.batch_timeout_ms.is_some() { 6 } else { 1 };
        version + 4 + self.procedure.len()
    }

    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(32 + self.procedure.len());
        match self.batch_timeout_ms {
            None => put_i8(&mut out, 0),
            Some(t) => {
                put_i8(&mut out, 1);
                put_i8(&mut out, 1);
                put_i32(&mut out, t);
            }
        }
        put_string(&mut out, &self.procedure);
        put_i64(&mut out, self.client_handle);
        write_params(&mut out, &self.params)?;
        Ok(out)
    }
}

/// A result table: typed, named columns and rows.
#[derive(Clone, Debug, PartialEq)]
pub struct VoltTable {
    pub columns: Vec<(String, VoltType)>,
    pub rows: Vec<Row>,
}

/// Append a VoltTable built from borrowed columns and rows.
pub fn write_table(out: &mut Vec<u8>, columns: &[(&str, VoltType)], rows: &[Row]) -> Result<()> {
    let total = begin_length(out);
    let header = begin_length(out);
    put_i8(out, i8::MIN);
    put_i16(out, columns.len() as i16);
    for (_, t) in columns {
        put_i8(out, t.code());
    }
    for (name, _) in columns {
        put_string(out, name);
    }
    end_length(out, header);
    put_i32(out, rows.len() as i32);
    for row in rows {
        if row.len() != columns.len() {
            bail!(Internal, "a row of {} values in a table of {} columns", row.len(), columns.len());
        }
        let at = begin_length(out);
        for ((_, t), v) in columns.iter().zip(row) {
            write_value(out, *t, v)?;
        }
        end_length(out, at);
    }
    end_length(out, total);
    Ok(())
}

impl VoltTable {
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        let columns: Vec<(&str, VoltType)> = self.columns.iter().map(|(n, t)| (n.as_str(), *t)).collect();
        write_table(out, &columns, &self.rows)
    }

    pub fn decode(r: &mut Reader<'_>) -> Result<VoltTable> {
        let total = r.i32("table length")?;
        if total < 0 || total as usize > r.remaining() {
            bail!(ProtocolError, "table length {total} exceeds the message");
        }
        let header_len = r.i32("table header length")?;
        let header_start = r.position();
        let _status = r.i8("table status")?;
        let n = r.i16("column count")?;
        if n < 0 {
            bail!(ProtocolError, "negative column count {n}");
        }
        let types = (0..n).map(|_| VoltType::from_code(r.i8("column type")?)).collect::<Result<Vec<_>>>()?;
        let mut columns = Vec::with_capacity(types.len());
        for t in types {
            columns.push((r.string("column name")?.unwrap_or_default(), t));
        }
        if r.position() - header_start != header_len as usize {
            bail!(ProtocolError, "table header length {header_len} does not match its contents");
        }
        let row_count = r.i32("row count")?;
        if row_count < 0 {
            bail!(ProtocolError, "negative row count {row_count}");
        }
        let mut rows = Vec::with_capacity((row_count as usize).min(r.remaining() / 4));
        for _ in 0..row_count {
            let len = r.i32("row length")?;
            let start = r.position();
            let row = columns.iter().map(|(_, t)| read_value(r, *t)).collect::<Result<Row>>()?;
            if len < 0 || r.position() - start != len as usize {
                bail!(ProtocolError, "row length {len} does not match its values");
            }
            rows.push(row);
        }
        Ok(VoltTable { columns, rows })
    }
}

/// A client response.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientResponse {
    pub client_handle: i64,
    pub status: i8,
    pub status_string: Option<String>,
    pub app_status: i8,
    pub app_status_string: Option<String>,
    pub cluster_round_trip_ms: i32,
    pub tables: Vec<VoltTable>,
}

const FIELD_STATUS_STRING: i8 = 1 << 5;
const FIELD_EXCEPTION: i8 = 1 << 6;
const FIELD_APP_STATUS_STRING: i8 = i8::MIN; // bit 7

/// A response's fields before its tables, borrowed: the server writes
/// them straight from its own response without building a [`ClientResponse`].
#[derive(Clone, Copy, Debug)]
pub struct ResponseHeader<'a> {
    pub client_handle: i64,
    pub status: i8,
    pub status_string: Option<&'a str>,
    pub app_status: i8,
    pub app_status_string: Option<&'a str>,
    pub cluster_round_trip_ms: i32,
}

impl ResponseHeader<'_> {
    /// Append the header and the table count; the caller appends the tables
    /// with [`write_table`].
    pub fn write(&self, out: &mut Vec<u8>, table_count: usize) -> Result<()> {
        put_i8(out, 0);
        put_i64(out, self.client_handle);
        let mut fields = 0i8;
        if self.status_string.is_some() {
            fields |= FIELD_STATUS_STRING;
        }
        if self.app_status_string.is_some() {
            fields |= FIELD_APP_STATUS_STRING;
        }
        put_i8(out, fields);
        put_i8(out, self.status);
        if let Some(s) = self.status_string {
            put_string(out, s);
        }
        put_i8(out, self.app_status);
        if let Some(s) = self.app_status_string {
            put_string(out, s);
        }
        put_i32(out, self.cluster_round_trip_ms);
        if table_count > i16::MAX as usize {
            return Err(err!(ValueTooLarge, "a response holds at most {} tables", i16::MAX));
        }
        put_i16(out, table_count as i16);
        Ok(())
    }
}

/// VoltDB's application status when the procedure set none.
pub const APP_STATUS_UNSET: i8 = i8::MIN;

/// VoltDB's status for a connection that cannot take more work now (the
/// client may try elsewhere).
pub const STATUS_SERVER_UNAVAILABLE: i8 = -5;
/// VoltDB's status for a request the server refused or could not run.
pub const STATUS_GRACEFUL_FAILURE: i8 = -2;
/// VoltDB's status for a call that went out and whose outcome is unknown.
pub const STATUS_RESPONSE_UNKNOWN: i8 = -7;

/// Append a framed answer with `status`, an optional status string and no
/// tables: a failure (or a `@Ping`'s success) made without a transaction.
pub fn write_bare_response(out: &mut Vec<u8>, handle: i64, status: i8, message: Option<&str>) {
    let mut payload = Vec::with_capacity(32 + message.map_or(0, str::len));
    let header = ResponseHeader {
        client_handle: handle,
        status,
        status_string: message,
        app_status: APP_STATUS_UNSET,
        app_status_string: None,
        cluster_round_trip_ms: 0,
    };
    // Zero tables cannot fail to encode.
    let _ = header.write(&mut payload, 0);
    crate::frame::write_frame(out, &payload);
}

impl ClientResponse {
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(64);
        let header = ResponseHeader {
            client_handle: self.client_handle,
            status: self.status,
            status_string: self.status_string.as_deref(),
            app_status: self.app_status,
            app_status_string: self.app_status_string.as_deref(),
            cluster_round_trip_ms: self.cluster_round_trip_ms,
        };
        header.write(&mut out, self.tables.len())?;
        for t in &self.tables {
            t.encode(&mut out)?;
        }
        Ok(out)
    }

    pub fn decode(payload: &[u8]) -> Result<ClientResponse> {
        let mut r = Reader::new(payload);
        let version = r.i8("response version")?;
        if version != 0 {
            bail!(ProtocolError, "unsupported response version {version}");
        }
        let client_handle = r.i64("client handle")?;
        let fields = r.i8("present fields")?;
        let status = r.i8("status")?;
        let status_string = if fields & FIELD_STATUS_STRING != 0 { r.string("status string")? } else { None };
        let app_status = r.i8("app status")?;
        let app_status_string =
            if fields & FIELD_APP_STATUS_STRING != 0 { r.string("app status string")? } else { None };
        let cluster_round_trip_ms = r.i32("round trip time")?;
        if fields & FIELD_EXCEPTION != 0 {
            let len = r.i32("exception length")?;
            if len < 0 {
                bail!(ProtocolError, "negative exception length {len}");
            }
            r.bytes(len as usize, "exception")?;
        }
        let n = r.i16("table count")?;
        if n < 0 {
            bail!(ProtocolError, "negative table count {n}");
        }
        let tables = (0..n).map(|_| VoltTable::decode(&mut r)).collect::<Result<Vec<_>>>()?;
        r.finish("response")?;
        Ok(ClientResponse {
            client_handle,
            status,
            status_string,
            app_status,
            app_status_string,
            cluster_round_trip_ms,
            tables,
        })
    }
}
