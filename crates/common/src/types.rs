//! SQL data types and the single runtime [`Value`] type.
//!
//! JouleDB follows VoltDB's type system. All integer types share one runtime
//! representation (`i64`): arithmetic happens in BIGINT and the column type
//! only narrows the range a stored value may take. The minimum value of each
//! integer type is VoltDB's NULL marker, so it is never a legal value: results
//! that land on it are overflow errors, never a silent NULL.
//!
//! SQL's three-valued logic lives here too ([`Tribool`]-style helpers on
//! `Option<bool>`): comparisons with NULL are unknown, `AND`/`OR` follow
//! Kleene logic, and only a definite `true` passes a WHERE clause.
//!
//! Two orderings exist on values:
//! * [`Value::sql_cmp`]: SQL comparison. NULL compares as unknown (`None`),
//!   numbers compare across integer/float/decimal, incompatible types error.
//! * `Ord`: a total order for sorting, grouping and index keys. NULL sorts
//!   first, numbers of any kind interleave by value, then strings, binaries,
//!   timestamps. `Hash` agrees with it, so `1`, `1.0` and `1.000` group together.

use crate::decimal::Decimal;
use crate::error::Result;
use crate::{bail, err};
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

/// Largest VARCHAR/VARBINARY value: 1 MiB.
pub const MAX_VALUE_LENGTH: usize = 1024 * 1024;

/// A SQL data type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum DataType {
    /// Internal: the type of predicates. Not a column type.
    Boolean,
    TinyInt,
    SmallInt,
    Integer,
    BigInt,
    Float,
    Decimal,
    Varchar,
    Varbinary,
    Timestamp,
}

impl DataType {
    pub fn name(self) -> &'static str {
        match self {
            DataType::Boolean => "BOOLEAN",
            DataType::TinyInt => "TINYINT",
            DataType::SmallInt => "SMALLINT",
            DataType::Integer => "INTEGER",
            DataType::BigInt => "BIGINT",
            DataType::Float => "FLOAT",
            DataType::Decimal => "DECIMAL",
            DataType::Varchar => "VARCHAR",
            DataType::Varbinary => "VARBINARY",
            DataType::Timestamp => "TIMESTAMP",
        }
    }

    pub fn is_integer(self) -> bool {
        matches!(self, DataType::TinyInt | DataType::SmallInt | DataType::Integer | DataType::BigInt)
    }

    pub fn is_numeric(self) -> bool {
        self.is_integer() || matches!(self, DataType::Float | DataType::Decimal)
    }

    /// The legal range of an integer type. The type's minimum is NULL in
    /// VoltDB, so the range is symmetric.
    pub fn integer_range(self) -> Option<(i64, i64)> {
        match self {
            DataType::TinyInt => Some((-(i8::MAX as i64), i8::MAX as i64)),
            DataType::SmallInt => Some((-(i16::MAX as i64), i16::MAX as i64)),
            DataType::Integer => Some((-(i32::MAX as i64), i32::MAX as i64)),
            DataType::BigInt => Some((-i64::MAX, i64::MAX)),
            _ => None,
        }
    }

    /// The type two numeric operands are computed in.
    pub fn numeric_result(a: DataType, b: DataType) -> DataType {
        use DataType::*;
        match (a, b) {
            (Float, _) | (_, Float) => Float,
            (Decimal, _) | (_, Decimal) => Decimal,
            _ => BigInt,
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A runtime value. Integers of every width are `Integer(i64)`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum Value {
    Null,
    Boolean(bool),
    Integer(i64),
    Float(f64),
    Decimal(Decimal),
    String(String),
    /// Encoded as bytes in one piece (`serde_bytes`), not byte by byte:
    /// the same encoding in postcard and JSON, read many times faster.
    Binary(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Microseconds since 1970-01-01 00:00:00 UTC.
    Timestamp(i64),
    /// A list of values: only ever a parameter (VoltDB clients send arrays
    /// for `IN ?` and for procedures taking arrays). No column stores one;
    /// casting or comparing one is a type error.
    Array(std::sync::Arc<[Value]>),
}

/// A row: one value per column.
pub type Row = Vec<Value>;

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The type of this value (`None` for NULL and for arrays, which have
    /// no SQL type). Integers report BIGINT.
    pub fn data_type(&self) -> Option<DataType> {
        Some(match self {
            Value::Null | Value::Array(_) => return None,
            Value::Boolean(_) => DataType::Boolean,
            Value::Integer(_) => DataType::BigInt,
            Value::Float(_) => DataType::Float,
            Value::Decimal(_) => DataType::Decimal,
            Value::String(_) => DataType::Varchar,
            Value::Binary(_) => DataType::Varbinary,
            Value::Timestamp(_) => DataType::Timestamp,
        })
    }

    /// A short name of this value's kind for error messages.
    pub fn type_name(&self) -> &'static str {
        if let Value::Array(_) = self {
            return "ARRAY";
        }
        self.data_type().map_or("NULL", DataType::name)
    }

    /// The value as a predicate result: `None` is unknown (NULL).
    pub fn truth(&self) -> Result<Option<bool>> {
        Ok(match self {
            Value::Null => None,
            Value::Boolean(b) => Some(*b),
            Value::Integer(i) => Some(*i != 0),
            Value::Float(f) => Some(*f != 0.0),
            Value::Decimal(d) => Some(d.units() != 0),
            v => bail!(DatatypeMismatch, "a {} value cannot be used as a condition", v.type_name()),
        })
    }

    /// SQL comparison: `None` when either side is NULL.
    pub fn sql_cmp(&self, other: &Value) -> Result<Option<Ordering>> {
        use Value::*;
        Ok(Some(match (self, other) {
            (Null, _) | (_, Null) => return Ok(None),
            (Integer(a), Integer(b)) => a.cmp(b),
            (String(a), String(b)) => a.cmp(b),
            (a, b) if a.is_number() && b.is_number() => cmp_numbers(a, b),
            (Boolean(a), Boolean(b)) => a.cmp(b),
            (Binary(a), Binary(b)) => a.cmp(b),
            (Timestamp(a), Timestamp(b)) => a.cmp(b),
            (Timestamp(a), String(s)) => a.cmp(&parse_timestamp(s)?),
            (String(s), Timestamp(b)) => parse_timestamp(s)?.cmp(b),
            (a, b) if a.is_number() && matches!(b, String(_)) => cmp_numbers(a, &b.cast(DataType::Float)?),
            (a, b) if b.is_number() && matches!(a, String(_)) => cmp_numbers(&a.cast(DataType::Float)?, b),
            (a, b) => bail!(DatatypeMismatch, "cannot compare {} with {}", a.type_name(), b.type_name()),
        }))
    }

    pub fn is_number(&self) -> bool {
        matches!(self, Value::Integer(_) | Value::Float(_) | Value::Decimal(_))
    }

    fn as_f64(&self) -> f64 {
        match self {
            Value::Integer(i) => *i as f64,
            Value::Float(f) => *f,
            Value::Decimal(d) => d.to_f64(),
            _ => f64::NAN,
        }
    }

    fn as_decimal(&self) -> Result<Decimal> {
        match self {
            Value::Integer(i) => Ok(Decimal::from_i64(*i)),
            Value::Decimal(d) => Ok(*d),
            Value::Float(f) => Decimal::from_f64(*f),
            v => bail!(DatatypeMismatch, "{} is not a number", v.type_name()),
        }
    }

    /// Apply a binary arithmetic operator with SQL's NULL rule and VoltDB's
    /// promotion: integers stay BIGINT (overflow is an error), a DECIMAL
    /// operand makes the result DECIMAL, a FLOAT operand makes it FLOAT.
    pub fn arith(&self, op: ArithOp, other: &Value) -> Result<Value> {
        use Value::*;
        if self.is_null() || other.is_null() {
            return Ok(Null);
        }
        match (self, other) {
            (Integer(a), Integer(b)) => int_arith(op, *a, *b),
            (Timestamp(_), _) | (_, Timestamp(_)) => {
                bail!(
                    DatatypeMismatch,
                    "cannot apply {} to {} and {}",
                    op.symbol(),
                    self.type_name(),
                    other.type_name()
                )
            }
            (Float(_), _) | (_, Float(_)) if self.is_number() && other.is_number() => {
                let (a, b) = (self.as_f64(), other.as_f64());
                let r = match op {
                    ArithOp::Add => a + b,
                    ArithOp::Sub => a - b,
                    ArithOp::Mul => a * b,
                    ArithOp::Div | ArithOp::Rem if b == 0.0 => bail!(DivisionByZero, "division by zero"),
                    ArithOp::Div => a / b,
                    ArithOp::Rem => a % b,
                };
                if !r.is_finite() {
                    bail!(NumericOutOfRange, "FLOAT result out of range");
                }
                Ok(Float(r))
            }
            (a, b) if a.is_number() && b.is_number() => {
                let (a, b) = (a.as_decimal()?, b.as_decimal()?);
                Ok(Decimal(match op {
                    ArithOp::Add => a.checked_add(b)?,
                    ArithOp::Sub => a.checked_sub(b)?,
                    ArithOp::Mul => a.checked_mul(b)?,
                    ArithOp::Div => a.checked_div(b)?,
                    ArithOp::Rem => a.checked_rem(b)?,
                }))
            }
            (String(_), _) | (_, String(_)) if self.is_number() || other.is_number() => {
                // A string operand next to a number is read as a number.
                let a = if self.is_number() { self.clone() } else { self.cast(DataType::Float)? };
                let b = if other.is_number() { other.clone() } else { other.cast(DataType::Float)? };
                a.arith(op, &b)
            }
            _ => bail!(
                DatatypeMismatch,
                "cannot apply {} to {} and {}",
                op.symbol(),
                self.type_name(),
                other.type_name()
            ),
        }
    }

    pub fn negate(&self) -> Result<Value> {
        Ok(match self {
            Value::Null => Value::Null,
            Value::Integer(i) => Value::Integer(check_bigint(i.checked_neg())?),
            Value::Float(f) => Value::Float(-f),
            Value::Decimal(d) => Value::Decimal(d.checked_neg()),
            v => bail!(DatatypeMismatch, "cannot negate a {} value", v.type_name()),
        })
    }

    /// CAST(self AS to). Integer targets check their range; casting a
    /// fraction to an integer truncates toward zero, as VoltDB does.
    pub fn cast(&self, to: DataType) -> Result<Value> {
        use Value::*;
        let v = match (self, to) {
            (Null, _) => return Ok(Null),
            (Array(_), t) => bail!(DatatypeMismatch, "an array cannot be used as a {t} value"),
            (Integer(i), t) if t.is_integer() => Integer(*i),
            (Float(f), t) if t.is_integer() => {
                let t = f.trunc();
                if !(t >= -(i64::MAX as f64) && t <= i64::MAX as f64) {
                    bail!(NumericOutOfRange, "value {f} out of range for {to}");
                }
                Integer(t as i64)
            }
            (Decimal(d), t) if t.is_integer() => Integer(d.to_i64()?),
            (Boolean(b), t) if t.is_integer() => Integer(*b as i64),
            (String(s), t) if t.is_integer() => Integer(parse_integer(s)?),
            (v, DataType::Float) if v.is_number() => Float(v.as_f64()),
            (String(s), DataType::Float) => Float(
                s.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .ok_or_else(|| err!(InvalidTextRepresentation, "invalid FLOAT value: '{s}'"))?,
            ),
            (v, DataType::Decimal) if v.is_number() => Decimal(v.as_decimal()?),
            (String(s), DataType::Decimal) => Decimal(crate::decimal::Decimal::parse(s)?),
            (String(s), DataType::Varchar) => String(s.clone()),
            (Binary(b), DataType::Varbinary) => Binary(b.clone()),
            (String(s), DataType::Varbinary) => Binary(parse_hex(s)?),
            (Binary(b), DataType::Varchar) => String(hex(b)),
            (Timestamp(t), DataType::Timestamp) => Timestamp(*t),
            (String(s), DataType::Timestamp) => Timestamp(parse_timestamp(s)?),
            (Integer(i), DataType::Timestamp) => Timestamp(*i),
            (Timestamp(t), t2) if t2.is_integer() => Integer(*t),
            (Boolean(b), DataType::Boolean) => Boolean(*b),
            (v, DataType::Boolean) if v.is_number() => Boolean(v.as_f64() != 0.0),
            (v, DataType::Varchar) => String(v.to_string()),
            (v, t) => bail!(DatatypeMismatch, "cannot cast {} to {t}", v.type_name()),
        };
        if let (Integer(i), Some((lo, hi))) = (&v, to.integer_range()) {
            if *i < lo || *i > hi {
                bail!(NumericOutOfRange, "value {i} out of range for {to}");
            }
        }
        Ok(v)
    }

    fn rank(&self) -> u8 {
        match self {
            Value::Null => 0,
            Value::Boolean(_) => 1,
            Value::Integer(_) | Value::Float(_) | Value::Decimal(_) => 2,
            Value::String(_) => 3,
            Value::Binary(_) => 4,
            Value::Timestamp(_) => 5,
            Value::Array(_) => 6,
        }
    }
}

/// Binary arithmetic operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

impl ArithOp {
    pub fn symbol(self) -> &'static str {
        match self {
            ArithOp::Add => "+",
            ArithOp::Sub => "-",
            ArithOp::Mul => "*",
            ArithOp::Div => "/",
            ArithOp::Rem => "%",
        }
    }
}

fn check_bigint(v: Option<i64>) -> Result<i64> {
    match v {
        Some(i) if i != i64::MIN => Ok(i),
        _ => bail!(NumericOutOfRange, "BIGINT overflow"),
    }
}

fn int_arith(op: ArithOp, a: i64, b: i64) -> Result<Value> {
    let r = match op {
        ArithOp::Add => a.checked_add(b),
        ArithOp::Sub => a.checked_sub(b),
        ArithOp::Mul => a.checked_mul(b),
        ArithOp::Div | ArithOp::Rem if b == 0 => bail!(DivisionByZero, "division by zero"),
        // Integer division truncates toward zero.
        ArithOp::Div => a.checked_div(b),
        ArithOp::Rem => a.checked_rem(b),
    };
    Ok(Value::Integer(check_bigint(r)?))
}

fn cmp_numbers(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Integer(x), Value::Integer(y)) => x.cmp(y),
        (Value::Decimal(x), Value::Decimal(y)) => x.cmp(y),
        (Value::Integer(x), Value::Decimal(y)) => Decimal::from_i64(*x).cmp(y),
        (Value::Decimal(x), Value::Integer(y)) => x.cmp(&Decimal::from_i64(*y)),
        (Value::Integer(x), Value::Float(y)) => cmp_int_float(*x, *y),
        (Value::Float(x), Value::Integer(y)) => cmp_int_float(*y, *x).reverse(),
        _ => a.as_f64().total_cmp(&b.as_f64()),
    }
}

fn cmp_int_float(i: i64, f: f64) -> Ordering {
    if f.is_nan() {
        return Ordering::Less;
    }
    // Exact for |i| < 2^53; beyond, compare via the float's integer part.
    let fi = i as f64;
    match fi.partial_cmp(&f).unwrap_or(Ordering::Equal) {
        Ordering::Equal if f.fract() == 0.0 && f.abs() < 9.2e18 => i.cmp(&(f as i64)),
        o => o,
    }
}

/// Parse an integer literal from text (surrounding spaces allowed).
pub fn parse_integer(s: &str) -> Result<i64> {
    let t = s.trim();
    if let Ok(i) = t.parse::<i64>() {
        return check_bigint(Some(i));
    }
    // Accept integral decimals like '12.0'.
    match Decimal::parse(t) {
        Ok(d) if d.is_integral() => d.to_i64(),
        _ => bail!(InvalidTextRepresentation, "invalid integer value: '{s}'"),
    }
}

fn parse_hex(s: &str) -> Result<Vec<u8>> {
    let t = s.trim();
    if !t.len().is_multiple_of(2) {
        bail!(InvalidTextRepresentation, "hex string for VARBINARY must have an even number of digits: '{s}'");
    }
    (0..t.len())
        .step_by(2)
        .map(|i| {
            t.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| err!(InvalidTextRepresentation, "invalid hex digits in '{s}'"))
        })
        .collect()
}

/// Upper-case hex, as VoltDB prints VARBINARY.
pub fn hex(b: &[u8]) -> String {
    use fmt::Write;
    let mut out = String::with_capacity(b.len() * 2);
    for byte in b {
        let _ = write!(out, "{byte:02X}");
    }
    out
}

/// Parse `YYYY-MM-DD[ HH:MM:SS[.ffffff]]` (or with `T`) as UTC microseconds.
pub fn parse_timestamp(s: &str) -> Result<i64> {
    use chrono::NaiveDateTime;
    let t = s.trim();
    let parsed = NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f"))
        .or_else(|_| {
            chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d").map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default())
        })
        .map_err(|_| err!(InvalidDatetime, "invalid TIMESTAMP value: '{s}' (expected YYYY-MM-DD HH:MM:SS.ffffff)"))?;
    Ok(parsed.and_utc().timestamp_micros())
}

/// Format UTC microseconds as `YYYY-MM-DD HH:MM:SS.ffffff`.
pub fn format_timestamp(micros: i64) -> String {
    match chrono::DateTime::from_timestamp_micros(micros) {
        Some(dt) => dt.format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
        None => format!("{micros}"),
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Boolean(b) => f.write_str(if *b { "TRUE" } else { "FALSE" }),
            Value::Integer(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Decimal(d) => write!(f, "{d}"),
            Value::String(s) => f.write_str(s),
            Value::Binary(b) => f.write_str(&hex(b)),
            Value::Timestamp(t) => f.write_str(&format_timestamp(*t)),
            Value::Array(items) => {
                f.write_str("[")?;
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
        }
    }
}

impl PartialEq for Value {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Value {}

impl PartialOrd for Value {
    #[inline]
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Value {
    /// Total order: NULL first, then booleans, numbers (across kinds),
    /// strings, binaries, timestamps.
    #[inline]
    fn cmp(&self, other: &Self) -> Ordering {
        use Value::*;
        match (self, other) {
            (Integer(a), Integer(b)) => a.cmp(b),
            (String(a), String(b)) => a.cmp(b),
            (Boolean(a), Boolean(b)) => a.cmp(b),
            (Binary(a), Binary(b)) => a.cmp(b),
            (Timestamp(a), Timestamp(b)) => a.cmp(b),
            (Array(a), Array(b)) => a.cmp(b),
            (a, b) => cmp_mixed(a, b),
        }
    }
}

/// The rest of `Ord::cmp`, kept out of line so the common cases inline.
#[inline(never)]
fn cmp_mixed(a: &Value, b: &Value) -> Ordering {
    if a.is_number() && b.is_number() {
        cmp_numbers(a, b)
    } else {
        a.rank().cmp(&b.rank())
    }
}

impl Hash for Value {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.rank().hash(state);
        match self {
            Value::Null => {}
            Value::Boolean(b) => b.hash(state),
            Value::Integer(i) => i.hash(state),
            Value::Float(f) => {
                if f.fract() == 0.0 && f.abs() < 9.0e18 {
                    (*f as i64).hash(state)
                } else {
                    f.to_bits().hash(state)
                }
            }
            Value::Decimal(d) => match d.is_integral().then(|| d.to_i64()) {
                Some(Ok(i)) => i.hash(state),
                _ => d.to_f64().to_bits().hash(state),
            },
            Value::String(s) => s.hash(state),
            Value::Binary(b) => b.hash(state),
            Value::Timestamp(t) => t.hash(state),
            Value::Array(items) => items.hash(state),
        }
    }
}

/// Three-valued AND.
pub fn and3(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (Some(true), Some(true)) => Some(true),
        _ => None,
    }
}

/// Three-valued OR.
pub fn or3(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(true), _) | (_, Some(true)) => Some(true),
        (Some(false), Some(false)) => Some(false),
        _ => None,
    }
}

/// Three-valued NOT.
pub fn not3(a: Option<bool>) -> Option<bool> {
    a.map(|b| !b)
}

/// A predicate result as a value.
pub fn truth_value(t: Option<bool>) -> Value {
    t.map_or(Value::Null, Value::Boolean)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::hash_map::DefaultHasher;

    fn h(v: &Value) -> u64 {
        let mut s = DefaultHasher::new();
        v.hash(&mut s);
        s.finish()
    }

    #[test]
    fn integer_overflow_is_an_error() {
        let max = Value::Integer(i64::MAX);
        assert_eq!(
            max.arith(ArithOp::Add, &Value::Integer(1)).unwrap_err().code(),
            crate::ErrorCode::NumericOutOfRange
        );
        // i64::MIN is VoltDB's BIGINT NULL: reaching it is overflow too.
        let min1 = Value::Integer(-i64::MAX);
        assert!(min1.arith(ArithOp::Sub, &Value::Integer(1)).is_err());
        assert_eq!(Value::Integer(7).arith(ArithOp::Div, &Value::Integer(-2)).unwrap(), Value::Integer(-3));
        assert!(Value::Integer(1).arith(ArithOp::Div, &Value::Integer(0)).is_err());
    }

    #[test]
    fn cast_checks_integer_ranges() {
        assert!(Value::Integer(128).cast(DataType::TinyInt).is_err());
        assert!(Value::Integer(-128).cast(DataType::TinyInt).is_err());
        assert_eq!(Value::Integer(127).cast(DataType::TinyInt).unwrap(), Value::Integer(127));
        assert_eq!(Value::Float(-2.7).cast(DataType::Integer).unwrap(), Value::Integer(-2));
        assert_eq!(Value::String(" 42 ".into()).cast(DataType::BigInt).unwrap(), Value::Integer(42));
        assert!(Value::String("4x".into()).cast(DataType::BigInt).is_err());
        assert_eq!(Value::Integer(3).cast(DataType::Varchar).unwrap(), Value::String("3".into()));
    }

    #[test]
    fn null_logic() {
        assert_eq!(and3(None, Some(false)), Some(false));
        assert_eq!(and3(None, Some(true)), None);
        assert_eq!(or3(None, Some(true)), Some(true));
        assert_eq!(or3(None, Some(false)), None);
        assert_eq!(not3(None), None);
        assert_eq!(Value::Null.sql_cmp(&Value::Integer(1)).unwrap(), None);
        assert_eq!(Value::Null.arith(ArithOp::Add, &Value::Integer(1)).unwrap(), Value::Null);
    }

    #[test]
    fn timestamps_roundtrip() {
        let t = parse_timestamp("2026-11-24 11:21:36.123456").unwrap();
        assert_eq!(format_timestamp(t), "2026-11-24 11:21:36.123456");
        assert_eq!(parse_timestamp("1970-01-01").unwrap(), 0);
        assert!(parse_timestamp("yesterday").is_err());
    }

    #[test]
    fn numbers_interleave_and_hash_alike() {
        let one = Value::Integer(1);
        let onef = Value::Float(1.0);
        let oned = Value::Decimal(Decimal::from_i64(1));
        assert_eq!(one, onef);
        assert_eq!(one, oned);
        assert_eq!(h(&one), h(&onef));
        assert_eq!(h(&one), h(&oned));
        assert!(Value::Float(1.5) > one);
        assert!(Value::Null < Value::Integer(i64::MIN + 1));
    }

    proptest! {
        #[test]
        fn int_float_order_agrees(a in any::<i32>(), b in any::<i32>()) {
            let (x, y) = (Value::Integer(a as i64), Value::Float(b as f64));
            prop_assert_eq!(x.cmp(&y), (a).cmp(&b));
        }

        #[test]
        fn int_arith_matches_checked(a in any::<i64>(), b in any::<i64>()) {
            let r = Value::Integer(a).arith(ArithOp::Add, &Value::Integer(b));
            match a.checked_add(b) {
                Some(s) if s != i64::MIN => prop_assert_eq!(r.unwrap(), Value::Integer(s)),
                _ => prop_assert!(r.is_err()),
            }
        }
    }
}

macro_rules! value_from_integer {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Value {
                Value::Integer(v.into())
            }
        }
    )*};
}

value_from_integer!(i8, i16, i32, i64, u8, u16, u32);

impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Float(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Boolean(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::String(v.to_string())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::String(v)
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Value {
        Value::Binary(v)
    }
}

impl From<crate::Decimal> for Value {
    fn from(v: crate::Decimal) -> Value {
        Value::Decimal(v)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}
