//! Scalar SQL functions, by VoltDB's names.
//!
//! The binder resolves a call once, at planning time, to a [`ScalarFunc`]
//! variant (checking the argument count), so execution is a `match`, never
//! a name lookup. Functions whose first argument is a keyword (`DATEADD(DAY,
//! ...)`, `TRUNCATE(HOUR, ...)`, `EXTRACT(YEAR FROM ...)`) carry it in the
//! variant as a [`TimeUnit`].
//!
//! Rules every function follows:
//! * **NULL in, NULL out**: any NULL argument gives NULL, except where SQL
//!   says otherwise (`CONCAT` follows VoltDB: NULL if any argument is NULL).
//! * **Determinism**: nothing reads a clock or an unseeded generator.
//!   `NOW()` returns the transaction's timestamp from [`FunctionContext`];
//!   `RANDOM()` derives its value from the transaction's seed. Replicas and
//!   command-log replay therefore compute the same values.
//! * **No wraps, no panics**: integer results are checked (overflow is
//!   `NumericOutOfRange`), wrong argument types are `DatatypeMismatch` naming
//!   the function, domain errors (`SQRT(-1)`) are `InvalidArgument`.
//! * Strings are UTF-8 and character functions count characters, not bytes.

use chrono::{DateTime, Datelike, Duration, Months, NaiveDate, NaiveDateTime, Timelike};
use joule_common::types::ArithOp;
use joule_common::{bail, err, DataType, Decimal, Result, Value};

/// What functions may read besides their arguments: the transaction's
/// timestamp (for NOW) and a seed for random functions, both fixed per
/// transaction so that execution is deterministic.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct FunctionContext {
    pub now_micros: i64,
    pub random_seed: u64,
}

/// A time unit argument (DATEADD, TRUNCATE, EXTRACT, SINCE_EPOCH, TO_TIMESTAMP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
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
    /// VoltDB's spellings, case-insensitive.
    pub fn parse(name: &str) -> Option<TimeUnit> {
        Some(match name.to_ascii_uppercase().as_str() {
            "YEAR" | "YEARS" => TimeUnit::Year,
            "QUARTER" => TimeUnit::Quarter,
            "MONTH" | "MONTHS" => TimeUnit::Month,
            "WEEK" | "WEEKS" | "WEEK_OF_YEAR" => TimeUnit::Week,
            "DAY" | "DAYS" | "DAY_OF_MONTH" => TimeUnit::Day,
            "HOUR" | "HOURS" => TimeUnit::Hour,
            "MINUTE" | "MINUTES" => TimeUnit::Minute,
            "SECOND" | "SECONDS" => TimeUnit::Second,
            "MILLISECOND" | "MILLISECONDS" | "MILLIS" => TimeUnit::Millisecond,
            "MICROSECOND" | "MICROSECONDS" | "MICROS" => TimeUnit::Microsecond,
            "DAY_OF_WEEK" | "DOW" => TimeUnit::DayOfWeek,
            "DAY_OF_YEAR" | "DOY" => TimeUnit::DayOfYear,
            _ => return None,
        })
    }

    /// Microseconds in one unit, for the fixed-length units.
    fn micros(self) -> Option<i64> {
        Some(match self {
            TimeUnit::Week => 7 * 86_400_000_000,
            TimeUnit::Day => 86_400_000_000,
            TimeUnit::Hour => 3_600_000_000,
            TimeUnit::Minute => 60_000_000,
            TimeUnit::Second => 1_000_000,
            TimeUnit::Millisecond => 1_000,
            TimeUnit::Microsecond => 1,
            _ => return None,
        })
    }
}

/// Which side TRIM removes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum TrimSide {
    Both,
    Leading,
    Trailing,
}

/// A scalar function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ScalarFunc {
    Abs,
    Ceiling,
    Floor,
    Round,
    Power,
    Sqrt,
    Exp,
    Ln,
    Log10,
    Mod,
    Sign,
    Pi,
    Sin,
    Cos,
    Tan,
    Degrees,
    Radians,
    CharLength,
    OctetLength,
    Substring,
    Upper,
    Lower,
    Trim(TrimSide),
    Concat,
    Replace,
    Left,
    Right,
    Repeat,
    Space,
    Position,
    Char,
    Ascii,
    Hex,
    Now,
    FromUnixtime,
    Extract(TimeUnit),
    DateAdd(TimeUnit),
    Truncate(TimeUnit),
    SinceEpoch(TimeUnit),
    ToTimestamp(TimeUnit),
    Random,
    Decode,
}

impl ScalarFunc {
    /// Resolve a function by (upper-case) name and argument count.
    pub fn lookup(name: &str, argc: usize) -> Option<ScalarFunc> {
        use ScalarFunc::*;
        let f = match (name, argc) {
            ("ABS", 1) => Abs,
            ("CEILING" | "CEIL", 1) => Ceiling,
            ("FLOOR", 1) => Floor,
            ("ROUND", 1 | 2) => Round,
            ("POWER" | "POW", 2) => Power,
            ("SQRT", 1) => Sqrt,
            ("EXP", 1) => Exp,
            ("LN" | "LOG", 1) => Ln,
            ("LOG10", 1) => Log10,
            ("MOD", 2) => Mod,
            ("SIGN", 1) => Sign,
            ("PI", 0) => Pi,
            ("SIN", 1) => Sin,
            ("COS", 1) => Cos,
            ("TAN", 1) => Tan,
            ("DEGREES", 1) => Degrees,
            ("RADIANS", 1) => Radians,
            ("CHAR_LENGTH" | "CHARACTER_LENGTH" | "LENGTH", 1) => CharLength,
            ("OCTET_LENGTH", 1) => OctetLength,
            ("SUBSTRING" | "SUBSTR", 2 | 3) => Substring,
            ("UPPER" | "UCASE", 1) => Upper,
            ("LOWER" | "LCASE", 1) => Lower,
            ("TRIM", 1) => Trim(TrimSide::Both),
            ("LTRIM", 1) => Trim(TrimSide::Leading),
            ("RTRIM", 1) => Trim(TrimSide::Trailing),
            ("CONCAT", n) if n >= 2 => Concat,
            ("REPLACE", 3) => Replace,
            ("LEFT", 2) => Left,
            ("RIGHT", 2) => Right,
            ("REPEAT", 2) => Repeat,
            ("SPACE", 1) => Space,
            ("POSITION" | "INSTR", 2) => Position,
            ("CHAR" | "CHR", 1) => Char,
            ("ASCII", 1) => Ascii,
            ("HEX", 1) => Hex,
            ("NOW" | "CURRENT_TIMESTAMP", 0) => Now,
            ("FROM_UNIXTIME", 1) => FromUnixtime,
            ("YEAR", 1) => Extract(TimeUnit::Year),
            ("QUARTER", 1) => Extract(TimeUnit::Quarter),
            ("MONTH", 1) => Extract(TimeUnit::Month),
            ("WEEK" | "WEEKOFYEAR", 1) => Extract(TimeUnit::Week),
            ("DAY" | "DAYOFMONTH", 1) => Extract(TimeUnit::Day),
            ("DAYOFWEEK" | "WEEKDAY", 1) => Extract(TimeUnit::DayOfWeek),
            ("DAYOFYEAR", 1) => Extract(TimeUnit::DayOfYear),
            ("HOUR", 1) => Extract(TimeUnit::Hour),
            ("MINUTE", 1) => Extract(TimeUnit::Minute),
            ("SECOND", 1) => Extract(TimeUnit::Second),
            ("RANDOM" | "RAND", 0) => Random,
            ("DECODE", n) if n >= 3 => Decode,
            _ => return None,
        };
        Some(f)
    }

    pub fn name(&self) -> &'static str {
        use ScalarFunc::*;
        match self {
            Abs => "ABS",
            Ceiling => "CEILING",
            Floor => "FLOOR",
            Round => "ROUND",
            Power => "POWER",
            Sqrt => "SQRT",
            Exp => "EXP",
            Ln => "LN",
            Log10 => "LOG10",
            Mod => "MOD",
            Sign => "SIGN",
            Pi => "PI",
            Sin => "SIN",
            Cos => "COS",
            Tan => "TAN",
            Degrees => "DEGREES",
            Radians => "RADIANS",
            CharLength => "CHAR_LENGTH",
            OctetLength => "OCTET_LENGTH",
            Substring => "SUBSTRING",
            Upper => "UPPER",
            Lower => "LOWER",
            Trim(_) => "TRIM",
            Concat => "CONCAT",
            Replace => "REPLACE",
            Left => "LEFT",
            Right => "RIGHT",
            Repeat => "REPEAT",
            Space => "SPACE",
            Position => "POSITION",
            Char => "CHAR",
            Ascii => "ASCII",
            Hex => "HEX",
            Now => "NOW",
            FromUnixtime => "FROM_UNIXTIME",
            Extract(_) => "EXTRACT",
            DateAdd(_) => "DATEADD",
            Truncate(_) => "TRUNCATE",
            SinceEpoch(_) => "SINCE_EPOCH",
            ToTimestamp(_) => "TO_TIMESTAMP",
            Random => "RANDOM",
            Decode => "DECODE",
        }
    }

    /// The result type, when it can be known from the argument types.
    pub fn return_type(&self, args: &[Option<DataType>]) -> Option<DataType> {
        use ScalarFunc::*;
        let first = args.first().copied().flatten();
        match self {
            Abs | Round => first.map(|t| if t.is_integer() { DataType::BigInt } else { t }),
            Ceiling | Floor => first.map(|t| if t.is_integer() { DataType::BigInt } else { t }),
            Mod => first.map(|t| if t.is_integer() { DataType::BigInt } else { t }),
            Power | Sqrt | Exp | Ln | Log10 | Pi | Sin | Cos | Tan | Degrees | Radians | Random => {
                Some(DataType::Float)
            }
            Sign | CharLength | OctetLength | Position | Ascii | SinceEpoch(_) => Some(DataType::BigInt),
            Substring | Upper | Lower | Trim(_) | Concat | Replace | Left | Right | Repeat | Space | Char | Hex => {
                Some(DataType::Varchar)
            }
            Now | FromUnixtime | DateAdd(_) | Truncate(_) | ToTimestamp(_) => Some(DataType::Timestamp),
            Extract(TimeUnit::Second) => Some(DataType::Decimal),
            Extract(_) => Some(DataType::BigInt),
            Decode => args.get(2).copied().flatten(),
        }
    }

    /// Apply the function.
    pub fn eval(&self, args: &[Value], ctx: &FunctionContext) -> Result<Value> {
        use ScalarFunc::*;
        // NULL in, NULL out (DECODE matches NULLs itself).
        if !matches!(self, Decode) && args.iter().any(Value::is_null) {
            return Ok(Value::Null);
        }
        let name = self.name();
        Ok(match self {
            Abs => match &args[0] {
                Value::Integer(i) => {
                    Value::Integer(i.checked_abs().ok_or_else(|| err!(NumericOutOfRange, "ABS overflow"))?)
                }
                Value::Float(f) => Value::Float(f.abs()),
                Value::Decimal(d) => Value::Decimal(d.abs()),
                v => return Err(mismatch(name, v)),
            },
            Ceiling | Floor => match &args[0] {
                Value::Integer(i) => Value::Integer(*i),
                Value::Float(f) => Value::Float(if *self == Ceiling { f.ceil() } else { f.floor() }),
                Value::Decimal(d) => {
                    Value::Decimal(round_decimal(*d, 0, if *self == Ceiling { Rounding::Up } else { Rounding::Down })?)
                }
                v => return Err(mismatch(name, v)),
            },
            Round => {
                let places = match args.get(1) {
                    None => 0,
                    Some(Value::Integer(p)) if (-30..=30).contains(p) => *p,
                    Some(v) => bail!(InvalidArgument, "ROUND places must be an integer between -30 and 30, not {v}"),
                };
                match &args[0] {
                    Value::Integer(i) if places >= 0 => Value::Integer(*i),
                    Value::Integer(i) => {
                        Value::Decimal(round_decimal(Decimal::from_i64(*i), places, Rounding::HalfAway)?)
                            .cast(DataType::BigInt)?
                    }
                    Value::Float(f) => {
                        let m = 10f64.powi(places as i32);
                        Value::Float((f * m).round() / m)
                    }
                    Value::Decimal(d) => Value::Decimal(round_decimal(*d, places, Rounding::HalfAway)?),
                    v => return Err(mismatch(name, v)),
                }
            }
            Power => finite(name, num(name, &args[0])?.powf(num(name, &args[1])?))?,
            Sqrt => {
                let x = num(name, &args[0])?;
                if x < 0.0 {
                    bail!(InvalidArgument, "SQRT of a negative number ({x})");
                }
                Value::Float(x.sqrt())
            }
            Exp => finite(name, num(name, &args[0])?.exp())?,
            Ln | Log10 => {
                let x = num(name, &args[0])?;
                if x <= 0.0 {
                    bail!(InvalidArgument, "{name} of a number that is not positive ({x})");
                }
                Value::Float(if *self == Ln { x.ln() } else { x.log10() })
            }
            Mod => match (&args[0], &args[1]) {
                (Value::Integer(_), Value::Integer(_)) | (Value::Decimal(_), _) | (_, Value::Decimal(_)) => {
                    args[0].arith(ArithOp::Rem, &args[1])?
                }
                (a, b) if a.is_number() && b.is_number() => args[0].arith(ArithOp::Rem, &args[1])?,
                (a, b) => bail!(DatatypeMismatch, "MOD needs numbers, not {} and {}", a.type_name(), b.type_name()),
            },
            Sign => Value::Integer(match &args[0] {
                Value::Integer(i) => i.signum(),
                Value::Float(f) if *f > 0.0 => 1,
                Value::Float(f) if *f < 0.0 => -1,
                Value::Float(_) => 0,
                Value::Decimal(d) => d.units().signum() as i64,
                v => return Err(mismatch(name, v)),
            }),
            Pi => Value::Float(std::f64::consts::PI),
            Sin => Value::Float(num(name, &args[0])?.sin()),
            Cos => Value::Float(num(name, &args[0])?.cos()),
            Tan => finite(name, num(name, &args[0])?.tan())?,
            Degrees => Value::Float(num(name, &args[0])?.to_degrees()),
            Radians => Value::Float(num(name, &args[0])?.to_radians()),
            CharLength => Value::Integer(text(name, &args[0])?.chars().count() as i64),
            OctetLength => Value::Integer(match &args[0] {
                Value::Binary(b) => b.len(),
                v => text(name, v)?.len(),
            } as i64),
            Substring => {
                let s = text(name, &args[0])?;
                let start = int(name, &args[1])?;
                let len = args.get(2).map(|v| int(name, v)).transpose()?;
                if len.is_some_and(|l| l < 0) {
                    bail!(InvalidArgument, "SUBSTRING length must not be negative");
                }
                // SQL: characters from position `start` (1-based) for `len`;
                // positions before 1 count against the length.
                let end = len.map(|l| start.saturating_add(l));
                let from = start.max(1) - 1;
                let take = end.map(|e| (e - 1 - from).max(0));
                let chars = s.chars().skip(from as usize);
                Value::String(match take {
                    Some(n) => chars.take(n as usize).collect(),
                    None => chars.collect(),
                })
            }
            Upper => Value::String(text(name, &args[0])?.to_uppercase()),
            Lower => Value::String(text(name, &args[0])?.to_lowercase()),
            Trim(side) => {
                let s = text(name, &args[0])?;
                let chars: Vec<char> = match args.get(1) {
                    Some(c) => text(name, c)?.chars().collect(),
                    None => vec![' '],
                };
                let pat = |c: char| chars.contains(&c);
                Value::String(
                    match side {
                        TrimSide::Both => s.trim_matches(pat),
                        TrimSide::Leading => s.trim_start_matches(pat),
                        TrimSide::Trailing => s.trim_end_matches(pat),
                    }
                    .to_string(),
                )
            }
            Concat => {
                let mut out = String::new();
                for a in args {
                    out.push_str(&a.to_string());
                }
                Value::String(out)
            }
            Replace => {
                let (s, from, to) = (text(name, &args[0])?, text(name, &args[1])?, text(name, &args[2])?);
                Value::String(if from.is_empty() { s.to_string() } else { s.replace(from, to) })
            }
            Left | Right => {
                let s = text(name, &args[0])?;
                let n = int(name, &args[1])?;
                if n < 0 {
                    bail!(InvalidArgument, "{name} length must not be negative");
                }
                let count = s.chars().count();
                let n = (n as usize).min(count);
                Value::String(if *self == Left {
                    s.chars().take(n).collect()
                } else {
                    s.chars().skip(count - n).collect()
                })
            }
            Repeat => {
                let s = text(name, &args[0])?;
                let n = int(name, &args[1])?.max(0) as usize;
                if s.len().saturating_mul(n) > joule_common::types::MAX_VALUE_LENGTH {
                    bail!(ValueTooLarge, "REPEAT result would exceed 1 MiB");
                }
                Value::String(s.repeat(n))
            }
            Space => {
                let n = int(name, &args[0])?;
                if !(0..=joule_common::types::MAX_VALUE_LENGTH as i64).contains(&n) {
                    bail!(InvalidArgument, "SPACE count {n} must be between 0 and 1048576");
                }
                Value::String(" ".repeat(n as usize))
            }
            Position => {
                let (needle, hay) = (text(name, &args[0])?, text(name, &args[1])?);
                Value::Integer(match hay.find(needle) {
                    Some(byte) => hay[..byte].chars().count() as i64 + 1,
                    None => 0,
                })
            }
            Char => {
                let code = int(name, &args[0])?;
                let c = u32::try_from(code)
                    .ok()
                    .and_then(char::from_u32)
                    .ok_or_else(|| err!(InvalidArgument, "CHAR code {code} is not a character"))?;
                Value::String(c.to_string())
            }
            Ascii => Value::Integer(text(name, &args[0])?.chars().next().map_or(0, |c| c as i64)),
            Hex => Value::String(match &args[0] {
                Value::Binary(b) => joule_common::types::hex(b),
                Value::Integer(i) => format!("{i:X}"),
                Value::String(s) => joule_common::types::hex(s.as_bytes()),
                v => return Err(mismatch(name, v)),
            }),
            Now => Value::Timestamp(ctx.now_micros),
            FromUnixtime => Value::Timestamp(
                int(name, &args[0])?
                    .checked_mul(1_000_000)
                    .ok_or_else(|| err!(InvalidDatetime, "FROM_UNIXTIME out of range"))?,
            ),
            Extract(unit) => extract(*unit, timestamp(name, &args[0])?)?,
            DateAdd(unit) => date_add(*unit, int(name, &args[0])?, timestamp(name, &args[1])?)?,
            Truncate(unit) => truncate(*unit, timestamp(name, &args[0])?)?,
            SinceEpoch(unit) => {
                let t = timestamp(name, &args[0])?;
                Value::Integer(match unit.micros() {
                    Some(m) => t.div_euclid(m),
                    None => bail!(InvalidArgument, "SINCE_EPOCH takes SECOND, MILLISECOND or MICROSECOND"),
                })
            }
            ToTimestamp(unit) => {
                let n = int(name, &args[0])?;
                let m = unit.micros().ok_or_else(|| {
                    err!(InvalidArgument, "TO_TIMESTAMP takes SECOND, MILLISECOND, MICROSECOND, MINUTE, HOUR or DAY")
                })?;
                Value::Timestamp(n.checked_mul(m).ok_or_else(|| err!(InvalidDatetime, "TO_TIMESTAMP out of range"))?)
            }
            Random => {
                // splitmix64 of the transaction's seed: fixed per transaction.
                let mut z = ctx.random_seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                Value::Float((z >> 11) as f64 / (1u64 << 53) as f64)
            }
            Decode => {
                let subject = &args[0];
                let mut i = 1;
                while i + 1 < args.len() {
                    let hit = match (subject, &args[i]) {
                        (Value::Null, Value::Null) => true,
                        (a, b) => a.sql_cmp(b)? == Some(std::cmp::Ordering::Equal),
                    };
                    if hit {
                        return Ok(args[i + 1].clone());
                    }
                    i += 2;
                }
                if i < args.len() {
                    args[i].clone()
                } else {
                    Value::Null
                }
            }
        })
    }
}

fn mismatch(name: &str, v: &Value) -> joule_common::Error {
    err!(DatatypeMismatch, "{name} does not accept a {} argument", v.type_name())
}

fn num(name: &str, v: &Value) -> Result<f64> {
    match v.cast(DataType::Float) {
        Ok(Value::Float(f)) if v.is_number() => Ok(f),
        _ => Err(mismatch(name, v)),
    }
}

fn finite(name: &str, f: f64) -> Result<Value> {
    if f.is_finite() {
        Ok(Value::Float(f))
    } else {
        bail!(NumericOutOfRange, "{name} result is out of range")
    }
}

fn int(name: &str, v: &Value) -> Result<i64> {
    match v {
        Value::Integer(i) => Ok(*i),
        Value::Decimal(d) if d.is_integral() => d.to_i64(),
        Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e18 => Ok(*f as i64),
        v => Err(err!(DatatypeMismatch, "{name} needs an integer argument, not {}", v.type_name())),
    }
}

fn text<'a>(name: &str, v: &'a Value) -> Result<&'a str> {
    match v {
        Value::String(s) => Ok(s),
        v => Err(err!(DatatypeMismatch, "{name} needs a string argument, not {}", v.type_name())),
    }
}

fn timestamp(name: &str, v: &Value) -> Result<i64> {
    match v {
        Value::Timestamp(t) => Ok(*t),
        Value::String(s) => joule_common::types::parse_timestamp(s),
        v => Err(err!(DatatypeMismatch, "{name} needs a TIMESTAMP argument, not {}", v.type_name())),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Rounding {
    Up,
    Down,
    HalfAway,
}

/// Round a DECIMAL to `places` fraction digits (may be negative).
fn round_decimal(d: Decimal, places: i64, mode: Rounding) -> Result<Decimal> {
    let drop = joule_common::decimal::SCALE as i64 - places;
    if drop <= 0 {
        return Ok(d);
    }
    if drop > 38 {
        return Ok(Decimal::ZERO);
    }
    let f = 10i128.pow(drop as u32);
    let u = d.units();
    let (q, r) = (u / f, u % f);
    let q = match mode {
        Rounding::Down if r < 0 => q - 1,
        Rounding::Up if r > 0 => q + 1,
        Rounding::HalfAway if r.abs() * 2 >= f => q + r.signum(),
        _ => q,
    };
    Decimal::from_units(q.checked_mul(f).ok_or_else(|| err!(NumericOutOfRange, "DECIMAL rounding overflow"))?)
}

fn datetime(t: i64) -> Result<NaiveDateTime> {
    DateTime::from_timestamp_micros(t)
        .map(|d| d.naive_utc())
        .ok_or_else(|| err!(InvalidDatetime, "TIMESTAMP {t} is out of range"))
}

fn micros_of(dt: NaiveDateTime) -> Value {
    Value::Timestamp(dt.and_utc().timestamp_micros())
}

fn extract(unit: TimeUnit, t: i64) -> Result<Value> {
    let dt = datetime(t)?;
    Ok(Value::Integer(match unit {
        TimeUnit::Year => dt.year() as i64,
        TimeUnit::Quarter => (dt.month0() / 3 + 1) as i64,
        TimeUnit::Month => dt.month() as i64,
        TimeUnit::Week => dt.iso_week().week() as i64,
        TimeUnit::Day => dt.day() as i64,
        TimeUnit::Hour => dt.hour() as i64,
        TimeUnit::Minute => dt.minute() as i64,
        TimeUnit::Second => {
            // Seconds with their fraction, as VoltDB returns them.
            let micros = dt.second() as i64 * 1_000_000 + (dt.nanosecond() / 1000) as i64 % 1_000_000;
            return Ok(Value::Decimal(Decimal::from_i64(micros).checked_div(Decimal::from_i64(1_000_000))?));
        }
        TimeUnit::Millisecond => (dt.nanosecond() / 1_000_000) as i64 % 1000,
        TimeUnit::Microsecond => (dt.nanosecond() / 1000) as i64 % 1_000_000,
        // VoltDB: 1 = Sunday ... 7 = Saturday.
        TimeUnit::DayOfWeek => dt.weekday().num_days_from_sunday() as i64 + 1,
        TimeUnit::DayOfYear => dt.ordinal() as i64,
    }))
}

fn date_add(unit: TimeUnit, n: i64, t: i64) -> Result<Value> {
    let out_of_range = || err!(InvalidDatetime, "DATEADD result is out of range");
    if let Some(m) = unit.micros() {
        let delta = n.checked_mul(m).ok_or_else(out_of_range)?;
        let r = t.checked_add(delta).ok_or_else(out_of_range)?;
        datetime(r)?;
        return Ok(Value::Timestamp(r));
    }
    let dt = datetime(t)?;
    let months = match unit {
        TimeUnit::Year => n.checked_mul(12),
        TimeUnit::Quarter => n.checked_mul(3),
        TimeUnit::Month => Some(n),
        _ => bail!(InvalidArgument, "DATEADD does not take this unit"),
    }
    .ok_or_else(out_of_range)?;
    let m = u32::try_from(months.unsigned_abs()).map_err(|_| out_of_range())?;
    // chrono clamps the day to the end of the target month.
    let shifted =
        if months >= 0 { dt.checked_add_months(Months::new(m)) } else { dt.checked_sub_months(Months::new(m)) };
    Ok(micros_of(shifted.ok_or_else(out_of_range)?))
}

fn truncate(unit: TimeUnit, t: i64) -> Result<Value> {
    let dt = datetime(t)?;
    let date = dt.date();
    let day_start = |d: NaiveDate| d.and_hms_opt(0, 0, 0).unwrap_or_default();
    let first_of = |y: i32, m: u32| {
        NaiveDate::from_ymd_opt(y, m, 1).map(day_start).ok_or_else(|| err!(InvalidDatetime, "bad date"))
    };
    Ok(match unit {
        TimeUnit::Year => micros_of(first_of(dt.year(), 1)?),
        TimeUnit::Quarter => micros_of(first_of(dt.year(), dt.month0() / 3 * 3 + 1)?),
        TimeUnit::Month => micros_of(first_of(dt.year(), dt.month())?),
        TimeUnit::Week => {
            let monday = date - Duration::days(dt.weekday().num_days_from_monday() as i64);
            micros_of(day_start(monday))
        }
        TimeUnit::Day | TimeUnit::DayOfWeek | TimeUnit::DayOfYear => micros_of(day_start(date)),
        u => {
            let m = u.micros().unwrap_or(1);
            Value::Timestamp(t.div_euclid(m) * m)
        }
    })
}

/// SQL LIKE: `%` matches any run of characters, `_` one character, and the
/// escape character (if any) makes the next character literal. Case
/// sensitive. A pattern ending in a lone escape character is an error.
pub fn like_match(text: &str, pattern: &str, escape: Option<char>) -> Result<bool> {
    #[derive(Clone, Copy, PartialEq)]
    enum Tok {
        Any,
        One,
        Lit(char),
    }
    let mut toks = Vec::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if Some(c) == escape {
            match chars.next() {
                Some(n) => toks.push(Tok::Lit(n)),
                None => bail!(InvalidEscapeSequence, "LIKE pattern '{pattern}' ends with the escape character"),
            }
        } else if c == '%' {
            if toks.last() != Some(&Tok::Any) {
                toks.push(Tok::Any);
            }
        } else if c == '_' {
            toks.push(Tok::One);
        } else {
            toks.push(Tok::Lit(c));
        }
    }
    // Greedy matching with backtracking to the last `%`: linear-ish.
    let t: Vec<char> = text.chars().collect();
    let (mut ti, mut pi) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match toks.get(pi) {
            Some(Tok::Any) => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(Tok::One) => {
                ti += 1;
                pi += 1;
            }
            Some(Tok::Lit(c)) if *c == t[ti] => {
                ti += 1;
                pi += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return Ok(false),
            },
        }
    }
    Ok(toks[pi..].iter().all(|t| *t == Tok::Any))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn call(name: &str, args: &[Value]) -> Result<Value> {
        let f = ScalarFunc::lookup(name, args.len()).unwrap_or_else(|| panic!("{name}/{}", args.len()));
        f.eval(args, &FunctionContext { now_micros: 1_700_000_000_000_000, random_seed: 7 })
    }

    fn s(x: &str) -> Value {
        Value::String(x.into())
    }

    fn i(x: i64) -> Value {
        Value::Integer(x)
    }

    fn dec(x: &str) -> Value {
        Value::Decimal(Decimal::parse(x).unwrap())
    }

    #[test]
    fn math() {
        assert_eq!(call("ABS", &[i(-5)]).unwrap(), i(5));
        assert!(call("ABS", &[i(i64::MIN + 1)]).is_ok());
        assert_eq!(call("CEILING", &[Value::Float(1.2)]).unwrap(), Value::Float(2.0));
        assert_eq!(call("FLOOR", &[dec("-1.5")]).unwrap(), dec("-2"));
        assert_eq!(call("ROUND", &[dec("2.345"), i(2)]).unwrap(), dec("2.35"));
        assert_eq!(call("ROUND", &[dec("-2.5")]).unwrap(), dec("-3"));
        assert_eq!(call("MOD", &[i(7), i(3)]).unwrap(), i(1));
        assert_eq!(call("MOD", &[i(7), i(0)]).unwrap_err().code(), joule_common::ErrorCode::DivisionByZero);
        assert_eq!(call("POWER", &[i(2), i(10)]).unwrap(), Value::Float(1024.0));
        assert_eq!(call("SQRT", &[i(-1)]).unwrap_err().code(), joule_common::ErrorCode::InvalidArgument);
        assert_eq!(call("SIGN", &[dec("-0.1")]).unwrap(), i(-1));
        assert_eq!(call("ABS", &[s("x")]).unwrap_err().code(), joule_common::ErrorCode::DatatypeMismatch);
        assert_eq!(call("POWER", &[i(10), i(400)]).unwrap_err().code(), joule_common::ErrorCode::NumericOutOfRange);
    }

    #[test]
    fn strings() {
        assert_eq!(call("CHAR_LENGTH", &[s("héllo")]).unwrap(), i(5));
        assert_eq!(call("OCTET_LENGTH", &[s("héllo")]).unwrap(), i(6));
        assert_eq!(call("SUBSTRING", &[s("hello"), i(2), i(3)]).unwrap(), s("ell"));
        assert_eq!(call("SUBSTRING", &[s("hello"), i(0), i(2)]).unwrap(), s("h"));
        assert_eq!(call("SUBSTRING", &[s("hello"), i(4)]).unwrap(), s("lo"));
        assert_eq!(call("UPPER", &[s("abc")]).unwrap(), s("ABC"));
        assert_eq!(call("TRIM", &[s("  a ")]).unwrap(), s("a"));
        assert_eq!(
            ScalarFunc::Trim(TrimSide::Leading).eval(&[s("xxaxx"), s("x")], &Default::default()).unwrap(),
            s("axx")
        );
        assert_eq!(call("CONCAT", &[s("a"), i(1), s("b")]).unwrap(), s("a1b"));
        assert_eq!(call("CONCAT", &[s("a"), Value::Null]).unwrap(), Value::Null);
        assert_eq!(call("REPLACE", &[s("aXbX"), s("X"), s("-")]).unwrap(), s("a-b-"));
        assert_eq!(call("LEFT", &[s("héllo"), i(2)]).unwrap(), s("hé"));
        assert_eq!(call("RIGHT", &[s("hello"), i(9)]).unwrap(), s("hello"));
        assert_eq!(call("POSITION", &[s("l"), s("héllo")]).unwrap(), i(3));
        assert_eq!(call("POSITION", &[s("z"), s("hello")]).unwrap(), i(0));
        assert_eq!(call("REPEAT", &[s("ab"), i(3)]).unwrap(), s("ababab"));
        assert_eq!(call("HEX", &[Value::Binary(vec![1, 171])]).unwrap(), s("01AB"));
        assert_eq!(call("DECODE", &[i(2), i(1), s("one"), i(2), s("two"), s("other")]).unwrap(), s("two"));
        assert_eq!(call("DECODE", &[i(9), i(1), s("one")]).unwrap(), Value::Null);
    }

    #[test]
    fn time() {
        let t = joule_common::types::parse_timestamp("2024-01-31 10:20:30.5").unwrap();
        let ts = Value::Timestamp(t);
        assert_eq!(call("YEAR", std::slice::from_ref(&ts)).unwrap(), i(2024));
        assert_eq!(call("DAYOFWEEK", std::slice::from_ref(&ts)).unwrap(), i(4)); // a Wednesday
        assert_eq!(
            ScalarFunc::Extract(TimeUnit::Second).eval(std::slice::from_ref(&ts), &Default::default()).unwrap(),
            dec("30.5")
        );
        let plus_month = ScalarFunc::DateAdd(TimeUnit::Month).eval(&[i(1), ts.clone()], &Default::default()).unwrap();
        assert_eq!(plus_month.to_string(), "2024-02-29 10:20:30.500000");
        let day = ScalarFunc::Truncate(TimeUnit::Day).eval(std::slice::from_ref(&ts), &Default::default()).unwrap();
        assert_eq!(day.to_string(), "2024-01-31 00:00:00.000000");
        let week = ScalarFunc::Truncate(TimeUnit::Week).eval(std::slice::from_ref(&ts), &Default::default()).unwrap();
        assert_eq!(week.to_string(), "2024-01-29 00:00:00.000000");
        assert_eq!(call("FROM_UNIXTIME", &[i(0)]).unwrap(), Value::Timestamp(0));
        assert_eq!(
            ScalarFunc::SinceEpoch(TimeUnit::Second).eval(&[Value::Timestamp(5_500_000)], &Default::default()).unwrap(),
            i(5)
        );
        // NOW is the transaction's timestamp, never the clock.
        assert_eq!(call("NOW", &[]).unwrap(), Value::Timestamp(1_700_000_000_000_000));
        assert_eq!(call("RANDOM", &[]).unwrap(), call("RANDOM", &[]).unwrap());
        assert_eq!(TimeUnit::parse("day_of_week"), Some(TimeUnit::DayOfWeek));
    }

    #[test]
    fn null_in_null_out() {
        for (name, argc) in [("ABS", 1), ("SUBSTRING", 2), ("REPLACE", 3), ("YEAR", 1), ("MOD", 2)] {
            let args = vec![Value::Null; argc];
            assert_eq!(call(name, &args).unwrap(), Value::Null, "{name}");
        }
        assert!(ScalarFunc::lookup("NOPE", 1).is_none());
        assert!(ScalarFunc::lookup("ABS", 2).is_none());
    }

    #[test]
    fn like() {
        assert!(like_match("hello", "h%o", None).unwrap());
        assert!(like_match("hello", "h_llo", None).unwrap());
        assert!(!like_match("hello", "h_lo", None).unwrap());
        assert!(like_match("", "%", None).unwrap());
        assert!(like_match("a%b", "a\\%b", Some('\\')).unwrap());
        assert!(!like_match("axb", "a\\%b", Some('\\')).unwrap());
        assert!(like_match("abcabc", "%abc", None).unwrap());
        assert!(like_match("mississippi", "%iss%ppi", None).unwrap());
        assert!(like_match("x", "x\\", Some('\\')).is_err());
    }

    proptest! {
        #[test]
        fn escaped_text_matches_itself(text in "\\PC{0,20}") {
            let escaped: String = text.chars().flat_map(|c| {
                if matches!(c, '%' | '_' | '\\') { vec!['\\', c] } else { vec![c] }
            }).collect();
            prop_assert!(like_match(&text, &escaped, Some('\\')).unwrap());
        }

        #[test]
        fn percent_matches_everything(text in "\\PC{0,20}") {
            prop_assert!(like_match(&text, "%", None).unwrap());
        }
    }
}
