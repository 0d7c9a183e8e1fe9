//! Scalar SQL functions (placeholder: being written).

use joule_common::{DataType, Result, Value};

/// Execution context functions may read: the transaction's timestamp (NOW)
/// and a seed for random functions, both fixed per transaction so that
/// execution is deterministic.
#[derive(Clone, Copy, Debug, Default)]
pub struct FunctionContext {
    pub now_micros: i64,
    pub random_seed: u64,
}

/// A time unit argument (DATEADD, TRUNCATE, EXTRACT, SINCE_EPOCH, TO_TIMESTAMP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimeUnit {
    Year,
    Quarter,
    Month,
    Week,
    Day,
    Hour,
    Minute,
    Second,
    Millisecond,
    Microsecond,
    DayOfWeek,
    DayOfYear,
}

impl TimeUnit {
    pub fn parse(name: &str) -> Option<TimeUnit> {
        let _ = name;
        None
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TrimSide {
    Both,
    Leading,
    Trailing,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScalarFunc {
    Abs,
    Extract(TimeUnit),
    DateAdd(TimeUnit),
    Truncate(TimeUnit),
    SinceEpoch(TimeUnit),
    ToTimestamp(TimeUnit),
    Trim(TrimSide),
    Substring,
    Position,
}

impl ScalarFunc {
    pub fn lookup(name: &str, argc: usize) -> Option<ScalarFunc> {
        let _ = (name, argc);
        None
    }
    pub fn name(&self) -> &'static str {
        "ABS"
    }
    pub fn return_type(&self, args: &[Option<DataType>]) -> Option<DataType> {
        args.first().copied().flatten()
    }
    pub fn eval(&self, args: &[Value], ctx: &FunctionContext) -> Result<Value> {
        let _ = ctx;
        Ok(args[0].clone())
    }
}

pub fn like_match(text: &str, pattern: &str, escape: Option<char>) -> Result<bool> {
    Ok(text == pattern && escape.is_none())
}
