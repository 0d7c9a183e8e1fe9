//! The byte encoding shared by command-log records and snapshot files.
//!
//! Little-endian throughout. A value is a tag byte and its payload, exact
//! for every [`Value`] kind (a BOOLEAN stays a BOOLEAN, a DECIMAL keeps
//! its 38 digits), so that a replayed invocation sees the very parameters
//! the original did:
//!
//! | tag | value | payload |
//! |---|---|---|
//! | 0 | NULL | — |
//! | 1 | BOOLEAN | `u8` 0 or 1 |
//! | 2 | integer | `i64` |
//! | 3 | FLOAT | `f64` bits |
//! | 4 | DECIMAL | `i128` units of 10⁻¹² |
//! | 5 | VARCHAR | `u32` length, UTF-8 bytes |
//! | 6 | VARBINARY | `u32` length, bytes |
//! | 7 | TIMESTAMP | `i64` microseconds |
//! | 8 | array | `u32` count, values (no nested arrays) |
//!
//! [`Reader`] checks every length against what is left, so a corrupt or
//! truncated input is an error (`ProtocolError`), never a panic or a huge
//! allocation.

use joule_common::{bail, err, Decimal, Result, Value};

/// Longest string, binary or array accepted when reading: as long as the
/// longest record (a parameter can be as large as a message the server
/// accepts, which its configuration keeps below this).
pub const MAX_VALUE_BYTES: usize = 256 << 20;

pub fn put_u8(out: &mut Vec<u8>, v: u8) {
    out.push(v);
}

pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len() as u32);
    out.extend_from_slice(b);
}

pub fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

/// Append `v`'s encoding.
pub fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => put_u8(out, 0),
        Value::Boolean(b) => {
            put_u8(out, 1);
            put_u8(out, u8::from(*b));
        }
        Value::Integer(i) => {
            put_u8(out, 2);
            out.extend_from_slice(&i.to_le_bytes());
        }
        Value::Float(f) => {
            put_u8(out, 3);
            out.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        Value::Decimal(d) => {
            put_u8(out, 4);
            out.extend_from_slice(&d.units().to_le_bytes());
        }
        Value::String(s) => {
            put_u8(out, 5);
            put_str(out, s);
        }
        Value::Binary(b) => {
            put_u8(out, 6);
            put_bytes(out, b);
        }
        Value::Timestamp(t) => {
            put_u8(out, 7);
            out.extend_from_slice(&t.to_le_bytes());
        }
        Value::Array(items) => {
            put_u8(out, 8);
            put_u32(out, items.len() as u32);
            for item in items.iter() {
                put_value(out, item);
            }
        }
    }
}

/// Append a row: `u32` column count, then the values.
pub fn put_row(out: &mut Vec<u8>, row: &[Value]) {
    put_u32(out, row.len() as u32);
    for v in row {
        put_value(out, v);
    }
}

/// A bounds-checked cursor over encoded bytes.
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, at: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            bail!(ProtocolError, "truncated {what}: needs {n} bytes, {} left", self.remaining());
        }
        let b = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(b)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    pub fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }

    pub fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    pub fn bytes(&mut self, what: &str) -> Result<&'a [u8]> {
        let n = self.u32(what)? as usize;
        if n > MAX_VALUE_BYTES {
            bail!(ProtocolError, "{what} of {n} bytes is longer than the {MAX_VALUE_BYTES}-byte limit");
        }
        self.take(n, what)
    }

    pub fn str(&mut self, what: &str) -> Result<&'a str> {
        std::str::from_utf8(self.bytes(what)?).map_err(|_| err!(ProtocolError, "{what} is not valid UTF-8"))
    }

    pub fn value(&mut self) -> Result<Value> {
        self.value_at(0)
    }

    fn value_at(&mut self, depth: u8) -> Result<Value> {
        Ok(match self.u8("value tag")? {
            0 => Value::Null,
            1 => match self.u8("BOOLEAN")? {
                0 => Value::Boolean(false),
                1 => Value::Boolean(true),
                b => bail!(ProtocolError, "BOOLEAN byte {b} is neither 0 nor 1"),
            },
            2 => Value::Integer(i64::from_le_bytes(self.array("integer")?)),
            3 => Value::Float(f64::from_bits(u64::from_le_bytes(self.array("FLOAT")?))),
            4 => Value::Decimal(
                Decimal::from_units(i128::from_le_bytes(self.array("DECIMAL")?))
                    .map_err(|e| err!(ProtocolError, "{}", e.message()))?,
            ),
            5 => Value::String(self.str("VARCHAR")?.to_string()),
            6 => Value::Binary(self.bytes("VARBINARY")?.to_vec()),
            7 => Value::Timestamp(i64::from_le_bytes(self.array("TIMESTAMP")?)),
            8 if depth == 0 => {
                let n = self.u32("array length")? as usize;
                // Every element takes at least its tag byte.
                if n > self.remaining() {
                    bail!(ProtocolError, "array of {n} values in {} bytes", self.remaining());
                }
                // Grown as read: a lying count must not allocate ahead.
                let mut items = Vec::new();
                for _ in 0..n {
                    items.push(self.value_at(depth + 1)?);
                }
                Value::Array(items.into())
            }
            8 => bail!(ProtocolError, "nested array"),
            t => bail!(ProtocolError, "unknown value tag {t}"),
        })
    }

    pub fn row(&mut self) -> Result<Vec<Value>> {
        let n = self.u32("column count")? as usize;
        if n > self.remaining() {
            bail!(ProtocolError, "row of {n} columns in {} bytes", self.remaining());
        }
        let mut row = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            row.push(self.value()?);
        }
        Ok(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Boolean),
            any::<i64>().prop_map(Value::Integer),
            any::<f64>().prop_map(Value::Float),
            (-(10i128.pow(37))..10i128.pow(37)).prop_map(|u| Value::Decimal(Decimal::from_units(u).unwrap())),
            ".{0,12}".prop_map(Value::String),
            prop::collection::vec(any::<u8>(), 0..12).prop_map(Value::Binary),
            any::<i64>().prop_map(Value::Timestamp),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            4 => scalar(),
            1 => prop::collection::vec(scalar(), 0..5).prop_map(|v| Value::Array(v.into())),
        ]
    }

    /// Same kind and same bits (NaN included), not just SQL-equal.
    fn identical(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y.iter()).all(|(a, b)| identical(a, b))
            }
            _ => std::mem::discriminant(a) == std::mem::discriminant(b) && a == b,
        }
    }

    proptest! {
        #[test]
        fn rows_round_trip_exactly(row in prop::collection::vec(value(), 0..8)) {
            let mut out = Vec::new();
            put_row(&mut out, &row);
            let mut r = Reader::new(&out);
            let back = r.row().unwrap();
            prop_assert!(r.is_empty());
            prop_assert_eq!(back.len(), row.len());
            for (a, b) in row.iter().zip(&back) {
                prop_assert!(identical(a, b), "{:?} came back as {:?}", a, b);
            }
        }

        #[test]
        fn garbage_is_an_error_not_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let mut r = Reader::new(&bytes);
            let _ = r.row();
        }

        #[test]
        fn every_truncation_is_an_error(row in prop::collection::vec(value(), 1..6)) {
            let mut out = Vec::new();
            put_row(&mut out, &row);
            for cut in 0..out.len() {
                prop_assert!(Reader::new(&out[..cut]).row().is_err());
            }
        }
    }

    #[test]
    fn layout_is_fixed() {
        let mut out = Vec::new();
        put_row(&mut out, &[Value::Integer(1), Value::String("ab".into()), Value::Null, Value::Boolean(true)]);
        assert_eq!(
            out,
            [4, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 5, 2, 0, 0, 0, b'a', b'b', 0, 1, 1].to_vec(),
            "the on-disk layout changed: old logs and snapshots would no longer read"
        );
    }
}
