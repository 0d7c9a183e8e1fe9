//! Framing: every message is a big-endian `i32` payload length followed by
//! the payload. A length below 1 or above the configured limit is refused
//! before anything is buffered, so a hostile length cannot make the server
//! allocate.

use joule_common::{bail, Result};

/// The default largest payload accepted (VoltDB's limit is about 50 MB).
pub const DEFAULT_MAX_PAYLOAD: usize = 50 * 1024 * 1024;

/// The payload length a frame header announces, checked against `max`.
pub fn payload_len(header: [u8; 4], max: usize) -> Result<usize> {
    let n = i32::from_be_bytes(header);
    if n < 1 {
        bail!(ProtocolError, "frame length {n} is not positive");
    }
    if n as usize > max {
        bail!(ProtocolError, "frame length {n} exceeds the limit of {max} bytes");
    }
    Ok(n as usize)
}

/// Append `payload` as one frame.
pub fn write_frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as i32).to_be_bytes());
    out.extend_from_slice(payload);
}

/// The first complete frame in `buf`: `Some((payload start, payload end))`
/// or `None` if more bytes are needed.
pub fn next_frame(buf: &[u8], max: usize) -> Result<Option<(usize, usize)>> {
    let Some(header) = buf.get(..4) else { return Ok(None) };
    let n = payload_len([header[0], header[1], header[2], header[3]], max)?;
    Ok(if buf.len() >= 4 + n { Some((4, 4 + n)) } else { None })
}
