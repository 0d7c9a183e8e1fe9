//! Big-endian reading and writing with every read checked.
//!
//! [`Reader`] is a cursor over one received message: each read checks that
//! the bytes are there and fails with `ProtocolError` naming what was being
//! read, so a truncated or lying message can never panic or read past its
//! end. The `put_*` functions append to a `Vec<u8>`.

use joule_common::{bail, err, Result};

/// A cursor over one message's bytes.
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Reader<'a> {
        Reader { data, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    /// The bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        &self.data[self.pos..]
    }

    pub fn bytes(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            bail!(
                ProtocolError,
                "message truncated: {what} needs {n} bytes at offset {}, {} left",
                self.pos,
                self.remaining()
            );
        }
        let out = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let b = self.bytes(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    pub fn i8(&mut self, what: &str) -> Result<i8> {
        Ok(i8::from_be_bytes(self.array(what)?))
    }

    pub fn i16(&mut self, what: &str) -> Result<i16> {
        Ok(i16::from_be_bytes(self.array(what)?))
    }

    pub fn i32(&mut self, what: &str) -> Result<i32> {
        Ok(i32::from_be_bytes(self.array(what)?))
    }

    pub fn i64(&mut self, what: &str) -> Result<i64> {
        Ok(i64::from_be_bytes(self.array(what)?))
    }

    pub fn f64(&mut self, what: &str) -> Result<f64> {
        Ok(f64::from_be_bytes(self.array(what)?))
    }

    pub fn i128(&mut self, what: &str) -> Result<i128> {
        Ok(i128::from_be_bytes(self.array(what)?))
    }

    /// An `i32`-length-prefixed byte string; length -1 is NULL (`None`).
    pub fn var_bytes(&mut self, what: &str) -> Result<Option<&'a [u8]>> {
        match self.i32(what)? {
            -1 => Ok(None),
            n if n < 0 => bail!(ProtocolError, "{what} has a negative length {n}"),
            n => Ok(Some(self.bytes(n as usize, what)?)),
        }
    }

    /// A length-prefixed UTF-8 string; `None` for NULL.
    pub fn string(&mut self, what: &str) -> Result<Option<String>> {
        match self.var_bytes(what)? {
            None => Ok(None),
            Some(b) => std::str::from_utf8(b)
                .map(|s| Some(s.to_string()))
                .map_err(|_| err!(ProtocolError, "{what} is not valid UTF-8")),
        }
    }

    /// Fail unless every byte was read.
    pub fn finish(&self, what: &str) -> Result<()> {
        if self.remaining() != 0 {
            bail!(ProtocolError, "{what} has {} unexpected trailing bytes", self.remaining());
        }
        Ok(())
    }
}

pub fn put_i8(out: &mut Vec<u8>, v: i8) {
    out.push(v as u8);
}

pub fn put_i16(out: &mut Vec<u8>, v: i16) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub fn put_i32(out: &mut Vec<u8>, v: i32) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub fn put_f64(out: &mut Vec<u8>, v: f64) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Length-prefixed bytes (`None` writes the NULL length -1).
pub fn put_var_bytes(out: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        None => put_i32(out, -1),
        Some(b) => {
            put_i32(out, b.len() as i32);
            out.extend_from_slice(b);
        }
    }
}

pub fn put_string(out: &mut Vec<u8>, s: &str) {
    put_var_bytes(out, Some(s.as_bytes()));
}

/// Reserve an `i32` length at the current end; [`end_length`] fills it in
/// with the number of bytes written after it.
pub fn begin_length(out: &mut Vec<u8>) -> usize {
    let at = out.len();
    put_i32(out, 0);
    at
}

pub fn end_length(out: &mut [u8], at: usize) {
    let len = (out.len() - at - 4) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}
