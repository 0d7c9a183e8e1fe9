//! VoltDB's wire types and how JouleDB values travel as them.
//!
//! Every parameter is sent as a type byte and a value; table cells are sent
//! as values only, typed by their column. Integers, floats and timestamps
//! have no NULL flag: each type reserves a value as its NULL (the type's
//! minimum integer, −1.7e308 for FLOAT); strings and binaries use length −1;
//! DECIMAL is 16 bytes of a two's-complement count of 10^-12 units, NULL
//! being the smallest 128-bit integer. TIMESTAMP is microseconds since the
//! Unix epoch. Arrays (type −99) carry an element type and their elements;
//! a TINYINT array is a byte string.

use crate::buf::{put_f64, put_i16, put_i32, put_i64, put_i8, put_var_bytes, Reader};

use joule_common::{bail, err, DataType, Decimal, Result, Value};

/// A VoltDB wire type code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i8)]
pub enum VoltType {
    Null = 1,
    TinyInt = 3,
    SmallInt = 4,
    Integer = 5,
    BigInt = 6,
    Float = 8,
    String = 9,
    Timestamp = 11,
    VoltTable = 21,
    Decimal = 22,
    Varbinary = 25,
    GeographyPoint = 26,
    Geography = 27,
    Array = -99,
}

/// VoltDB's FLOAT NULL.
pub const NULL_FLOAT: f64 = -1.7e308;

impl VoltType {
    pub fn from_code(code: i8) -> Result<VoltType> {
        use VoltType::*;
        Ok(match code {
            1 => Null,
            3 => TinyInt,
            4 => SmallInt,
            5 => Integer,
            6 => BigInt,
            8 => Float,
            9 => String,
            11 => Timestamp,
            21 => VoltTable,
            22 => Decimal,
            25 => Varbinary,
            26 => GeographyPoint,
            27 => Geography,
            -99 => Array,
            c => bail!(ProtocolError, "unknown wire type {c}"),
        })
    }

    pub fn code(self) -> i8 {
        self as i8
    }

    /// The wire type of a column of `t` (BOOLEAN results travel as TINYINT).
    pub fn of(t: DataType) -> VoltType {
        match t {
            DataType::Boolean | DataType::TinyInt => VoltType::TinyInt,
            DataType::SmallInt => VoltType::SmallInt,
            DataType::Integer => VoltType::Integer,
            DataType::BigInt => VoltType::BigInt,
            DataType::Float => VoltType::Float,
            DataType::Decimal => VoltType::Decimal,
            DataType::Varchar => VoltType::String,
            DataType::Varbinary => VoltType::Varbinary,
            DataType::Timestamp => VoltType::Timestamp,
        }
    }

    /// The SQL type a value of this wire type has.
    pub fn data_type(self) -> Option<DataType> {
        Some(match self {
            VoltType::TinyInt => DataType::TinyInt,
            VoltType::SmallInt => DataType::SmallInt,
            VoltType::Integer => DataType::Integer,
            VoltType::BigInt => DataType::BigInt,
            VoltType::Float => DataType::Float,
            VoltType::String => DataType::Varchar,
            VoltType::Timestamp => DataType::Timestamp,
            VoltType::Decimal => DataType::Decimal,
            VoltType::Varbinary => DataType::Varbinary,
            _ => return None,
        })
    }
}

/// A procedure parameter as sent: a value or an array of values.
#[derive(Clone, Debug, PartialEq)]
pub enum Param {
    Value(Value),
    /// An array parameter with its element type (a TINYINT array arrives
    /// as `Value(Binary)`, as VoltDB treats `byte[]`).
    Array(VoltType, Vec<Value>),
}

/// Read a value of wire type `t` (no type byte).
pub fn read_value(r: &mut Reader<'_>, t: VoltType) -> Result<Value> {
    Ok(match t {
        VoltType::Null => Value::Null,
        VoltType::TinyInt => match r.i8("TINYINT")? {
            i8::MIN => Value::Null,
            v => Value::Integer(v.into()),
        },
        VoltType::SmallInt => match r.i16("SMALLINT")? {
            i16::MIN => Value::Null,
            v => Value::Integer(v.into()),
        },
        VoltType::Integer => match r.i32("INTEGER")? {
            i32::MIN => Value::Null,
            v => Value::Integer(v.into()),
        },
        VoltType::BigInt => match r.i64("BIGINT")? {
            i64::MIN => Value::Null,
            v => Value::Integer(v),
        },
        VoltType::Float => match r.f64("FLOAT")? {
            v if v <= NULL_FLOAT => Value::Null,
            v => Value::Float(v),
        },
        VoltType::Timestamp => match r.i64("TIMESTAMP")? {
            i64::MIN => Value::Null,
            v => Value::Timestamp(v),
        },
        VoltType::Decimal => match r.i128("DECIMAL")? {
            i128::MIN => Value::Null,
            v => Value::Decimal(Decimal::from_units(v).map_err(|e| err!(ProtocolError, "{}", e.message()))?),
        },
        VoltType::String => match r.var_bytes("STRING")? {
            None => Value::Null,
            Some(b) => Value::String(
                std::str::from_utf8(b)
                    .map_err(|_| err!(ProtocolError, "a STRING value is not valid UTF-8"))?
                    .to_string(),
            ),
        },
        VoltType::Varbinary => match r.var_bytes("VARBINARY")? {
            None => Value::Null,
            Some(b) => Value::Binary(b.to_vec()),
        },
        t @ (VoltType::VoltTable | VoltType::GeographyPoint | VoltType::Geography | VoltType::Array) => {
            bail!(FeatureNotSupported, "{t:?} values are not supported")
        }
    })
}

/// Write `v` as wire type `t` (no type byte), converting where the value's
/// kind differs from the column's (an integer in a FLOAT column).
pub fn write_value(out: &mut Vec<u8>, t: VoltType, v: &Value) -> Result<()> {
    let range = |lo: i64, hi: i64, i: i64| {
        if i < lo || i > hi {
            Err(err!(NumericOutOfRange, "{i} does not fit wire type {t:?}"))
        } else {
            Ok(i)
        }
    };
    match (t, v) {
        (VoltType::Null, Value::Null) => {}
        (VoltType::TinyInt, Value::Null) => put_i8(out, i8::MIN),
        (VoltType::SmallInt, Value::Null) => put_i16(out, i16::MIN),
        (VoltType::Integer, Value::Null) => put_i32(out, i32::MIN),
        (VoltType::BigInt | VoltType::Timestamp, Value::Null) => put_i64(out, i64::MIN),
        (VoltType::Float, Value::Null) => put_f64(out, NULL_FLOAT),
        (VoltType::Decimal, Value::Null) => out.extend_from_slice(&i128::MIN.to_be_bytes()),
        (VoltType::String | VoltType::Varbinary, Value::Null) => put_var_bytes(out, None),
        (VoltType::TinyInt, Value::Boolean(b)) => put_i8(out, i8::from(*b)),
        (VoltType::TinyInt, Value::Integer(i)) => put_i8(out, range(-127, 127, *i)? as i8),
        (VoltType::SmallInt, Value::Integer(i)) => put_i16(out, range(-32767, 32767, *i)? as i16),
        (VoltType::Integer, Value::Integer(i)) => put_i32(out, range(-(i32::MAX as i64), i32::MAX as i64, *i)? as i32),
        (VoltType::BigInt, Value::Integer(i)) => put_i64(out, range(-i64::MAX, i64::MAX, *i)?),
        (VoltType::Float, Value::Float(f)) => put_f64(out, *f),
        (VoltType::Float, Value::Integer(i)) => put_f64(out, *i as f64),
        (VoltType::Timestamp, Value::Timestamp(t)) => put_i64(out, *t),
        (VoltType::Decimal, Value::Decimal(d)) => out.extend_from_slice(&d.units().to_be_bytes()),
        (VoltType::Decimal, Value::Integer(i)) => out.extend_from_slice(&Decimal::from_i64(*i).units().to_be_bytes()),
        (VoltType::String, Value::String(s)) => put_var_bytes(out, Some(s.as_bytes())),
        (VoltType::Varbinary, Value::Binary(b)) => put_var_bytes(out, Some(b)),
        (t, v) => match v.cast(t.data_type().ok_or_else(|| err!(FeatureNotSupported, "cannot send {t:?} values"))?) {
            // Another kind of value in this column: convert once.
            Ok(converted) if std::mem::discriminant(&converted) != std::mem::discriminant(v) => {
                return write_value(out, t, &converted)
            }
            _ => bail!(DatatypeMismatch, "a {} value cannot be sent as {t:?}", v.type_name()),
        },
    }
    Ok(())
}

/// The wire type a parameter value is sent as.
pub fn param_type(v: &Value) -> VoltType {
    match v {
        Value::Null => VoltType::Null,
        Value::Boolean(_) => VoltType::TinyInt,
        Value::Integer(_) => VoltType::BigInt,
        Value::Float(_) => VoltType::Float,
        Value::Decimal(_) => VoltType::Decimal,
        Value::String(_) => VoltType::String,
        Value::Binary(_) => VoltType::Varbinary,
        Value::Timestamp(_) => VoltType::Timestamp,
        Value::Array(_) => VoltType::Array,
    }
}

/// Read a parameter: type byte and value.
pub fn read_param(r: &mut Reader<'_>) -> Result<Param> {
    let t = VoltType::from_code(r.i8("parameter type")?)?;
    if t != VoltType::Array {
        return Ok(Param::Value(read_value(r, t)?));
    }
    let elem = VoltType::from_code(r.i8("array element type")?)?;
    if elem == VoltType::TinyInt {
        // byte[]: a length-prefixed byte string.
        return Ok(Param::Value(match r.var_bytes("TINYINT array")? {
            None => Value::Null,
            Some(b) => Value::Binary(b.to_vec()),
        }));
    }
    let n = r.i16("array length")?;
    if n < 0 {
        bail!(ProtocolError, "array of negative length {n}");
    }
    let mut values = Vec::with_capacity((n as usize).min(r.remaining()));
    for _ in 0..n {
        values.push(read_value(r, elem)?);
    }
    Ok(Param::Array(elem, values))
}

/// Write a parameter with its type byte.
pub fn write_param(out: &mut Vec<u8>, p: &Param) -> Result<()> {
    match p {
        Param::Value(Value::Array(values)) => {
            // The element type is the first non-NULL element's.
            let elem = values.iter().find(|v| !v.is_null()).map_or(VoltType::BigInt, param_type);
            write_array(out, elem, values)
        }
        Param::Value(v) => {
            let t = param_type(v);
            put_i8(out, t.code());
            write_value(out, t, v)
        }
        Param::Array(elem, values) => write_array(out, *elem, values),
    }
}

fn write_array(out: &mut Vec<u8>, elem: VoltType, values: &[Value]) -> Result<()> {
    if matches!(elem, VoltType::Array | VoltType::Null | VoltType::TinyInt) {
        bail!(DatatypeMismatch, "an array parameter cannot hold {elem:?} elements");
    }
    put_i8(out, VoltType::Array.code());
    put_i8(out, elem.code());
    if values.len() > i16::MAX as usize {
        bail!(ValueTooLarge, "an array parameter holds at most {} values", i16::MAX);
    }
    put_i16(out, values.len() as i16);
    values.iter().try_for_each(|v| write_value(out, elem, v))
}

/// Read a parameter set: `i16` count, then the parameters.
pub fn read_params(r: &mut Reader<'_>) -> Result<Vec<Param>> {
    let n = r.i16("parameter count")?;
    if n < 0 {
        bail!(ProtocolError, "negative parameter count {n}");
    }
    (0..n).map(|_| read_param(r)).collect()
}

pub fn write_params(out: &mut Vec<u8>, params: &[Param]) -> Result<()> {
    if params.len() > i16::MAX as usize {
        bail!(ValueTooLarge, "at most {} parameters", i16::MAX);
    }
    put_i16(out, params.len() as i16);
    params.iter().try_for_each(|p| write_param(out, p))
}
