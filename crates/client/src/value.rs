//! Reading result values as Rust types.

use joule_common::{bail, Decimal, Result, Value};

/// A Rust type a result value converts to.
pub trait FromValue: Sized {
    fn from_value(v: &Value) -> Result<Self>;
}

impl FromValue for i64 {
    fn from_value(v: &Value) -> Result<i64> {
        match v {
            Value::Integer(i) => Ok(*i),
            v => bail!(DatatypeMismatch, "expected an integer, got {}", v.type_name()),
        }
    }
}

impl FromValue for i32 {
    fn from_value(v: &Value) -> Result<i32> {
        let i = i64::from_value(v)?;
        i32::try_from(i).or_else(|_| bail!(NumericOutOfRange, "{i} does not fit an i32"))
    }
}

impl FromValue for f64 {
    fn from_value(v: &Value) -> Result<f64> {
        match v {
            Value::Float(f) => Ok(*f),
            Value::Integer(i) => Ok(*i as f64),
            v => bail!(DatatypeMismatch, "expected a number, got {}", v.type_name()),
        }
    }
}

impl FromValue for String {
    fn from_value(v: &Value) -> Result<String> {
        match v {
            Value::String(s) => Ok(s.clone()),
            v => bail!(DatatypeMismatch, "expected a string, got {}", v.type_name()),
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(v: &Value) -> Result<Vec<u8>> {
        match v {
            Value::Binary(b) => Ok(b.clone()),
            v => bail!(DatatypeMismatch, "expected bytes, got {}", v.type_name()),
        }
    }
}

impl FromValue for Decimal {
    fn from_value(v: &Value) -> Result<Decimal> {
        match v {
            Value::Decimal(d) => Ok(*d),
            Value::Integer(i) => Ok(Decimal::from_i64(*i)),
            v => bail!(DatatypeMismatch, "expected a DECIMAL, got {}", v.type_name()),
        }
    }
}

impl FromValue for Value {
    fn from_value(v: &Value) -> Result<Value> {
        Ok(v.clone())
    }
}

/// NULL becomes `None`.
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value) -> Result<Option<T>> {
        match v {
            Value::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}
