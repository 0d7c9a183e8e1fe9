//! VoltDB's DECIMAL: precision 38, scale 12, held exactly as an `i128` count of
//! 10^-12 units.
//!
//! VoltDB stores every DECIMAL with the same precision and scale, so one fixed
//! representation covers all of them and arithmetic never has to reconcile
//! scales. `rust_decimal` tops out near 28 digits, so this type is our own.
//! The largest magnitude is 10^38 - 1 units (26 integer digits and 12
//! fraction digits); anything past that is a [`NumericOutOfRange`] error, never
//! a wrap. Inputs with more than 12 fraction digits are rounded half away from
//! zero, as VoltDB does.
//!
//! [`NumericOutOfRange`]: crate::error::ErrorCode::NumericOutOfRange

use crate::error::Result;
use crate::{bail, err};
use std::fmt;

/// Units per 1.0.
pub const SCALE_FACTOR: i128 = 1_000_000_000_000;
/// Digits after the point.
pub const SCALE: u32 = 12;
/// Largest magnitude in units: 38 nines.
pub const MAX_UNITS: i128 = 99_999_999_999_999_999_999_999_999_999_999_999_999;

/// An exact DECIMAL(38,12) value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
pub struct Decimal(i128);

impl Decimal {
    pub const ZERO: Decimal = Decimal(0);

    /// From a raw count of 10^-12 units, checking the precision limit.
    pub fn from_units(units: i128) -> Result<Decimal> {
        if units.abs() > MAX_UNITS {
            bail!(NumericOutOfRange, "DECIMAL value out of range (precision 38, scale 12)");
        }
        Ok(Decimal(units))
    }

    /// The raw count of 10^-12 units.
    pub fn units(self) -> i128 {
        self.0
    }

    pub fn from_i64(v: i64) -> Decimal {
        // |i64| < 10^19, times 10^12 stays below 10^31: always in range.
        Decimal(v as i128 * SCALE_FACTOR)
    }

    pub fn from_f64(v: f64) -> Result<Decimal> {
        if !v.is_finite() {
            bail!(NumericOutOfRange, "cannot convert {v} to DECIMAL");
        }
        let units = (v * SCALE_FACTOR as f64).round();
        if units.abs() > MAX_UNITS as f64 {
            bail!(NumericOutOfRange, "value {v} out of range for DECIMAL");
        }
        Ok(Decimal(units as i128))
    }

    pub fn to_f64(self) -> f64 {
        self.0 as f64 / SCALE_FACTOR as f64
    }

    /// Whether the value has no fractional part.
    pub fn is_integral(self) -> bool {
        self.0 % SCALE_FACTOR == 0
    }

    /// Truncate toward zero to an i64, or fail if it does not fit.
    pub fn to_i64(self) -> Result<i64> {
        let whole = self.0 / SCALE_FACTOR;
        i64::try_from(whole).map_err(|_| err!(NumericOutOfRange, "DECIMAL {self} out of range for BIGINT"))
    }

    pub fn checked_add(self, o: Decimal) -> Result<Decimal> {
        Decimal::from_units(self.0.checked_add(o.0).ok_or_else(overflow)?)
    }

    pub fn checked_sub(self, o: Decimal) -> Result<Decimal> {
        Decimal::from_units(self.0.checked_sub(o.0).ok_or_else(overflow)?)
    }

    pub fn checked_neg(self) -> Decimal {
        Decimal(-self.0)
    }

    pub fn abs(self) -> Decimal {
        Decimal(self.0.abs())
    }

    /// Multiply, rounding the 24-digit fraction back to 12 half away from zero.
    pub fn checked_mul(self, o: Decimal) -> Result<Decimal> {
        let neg = (self.0 < 0) != (o.0 < 0);
        let (a, b) = (self.0.unsigned_abs(), o.0.unsigned_abs());
        let f = SCALE_FACTOR as u128;
        // a*b/f = a_hi*b + a_lo*b_hi + a_lo*b_lo/f, each term without overflow
        // for in-range results.
        let (a_hi, a_lo) = (a / f, a % f);
        let (b_hi, b_lo) = (b / f, b % f);
        let low = a_lo * b_lo; // < 10^24
        let mut units = a_hi
            .checked_mul(b)
            .and_then(|x| x.checked_add(a_lo * b_hi))
            .and_then(|x| x.checked_add(low / f))
            .ok_or_else(overflow)?;
        if low % f >= f / 2 {
            units += 1;
        }
        let units = i128::try_from(units).map_err(|_| overflow())?;
        Decimal::from_units(if neg { -units } else { units })
    }

    /// Divide, rounding the 13th fraction digit half away from zero.
    pub fn checked_div(self, o: Decimal) -> Result<Decimal> {
        if o.0 == 0 {
            bail!(DivisionByZero, "division by zero");
        }
        let neg = (self.0 < 0) != (o.0 < 0);
        let (a, b) = (self.0.unsigned_abs(), o.0.unsigned_abs());
        // Long division: integer part, then 13 fraction digits one at a time.
        let mut q = a / b;
        let mut r = a % b;
        for _ in 0..=SCALE {
            r = r.checked_mul(10).ok_or_else(overflow)?;
            q = q.checked_mul(10).ok_or_else(overflow)?.checked_add(r / b).ok_or_else(overflow)?;
            r %= b;
        }
        let q = (q + 5) / 10;
        let q = i128::try_from(q).map_err(|_| overflow())?;
        Decimal::from_units(if neg { -q } else { q })
    }

    /// Remainder with the sign of the dividend.
    pub fn checked_rem(self, o: Decimal) -> Result<Decimal> {
        if o.0 == 0 {
            bail!(DivisionByZero, "division by zero");
        }
        Ok(Decimal(self.0 % o.0))
    }

    /// Parse decimal text such as `-12.5`, `3`, `.25`, `1e3`.
    pub fn parse(text: &str) -> Result<Decimal> {
        let bad = || err!(InvalidTextRepresentation, "invalid DECIMAL value: '{text}'");
        let t = text.trim();
        let (mantissa, exp) = match t.find(['e', 'E']) {
            Some(i) => (&t[..i], t[i + 1..].parse::<i32>().map_err(|_| bad())?),
            None => (t, 0),
        };
        let (neg, digits) = match mantissa.as_bytes().first() {
            Some(b'-') => (true, &mantissa[1..]),
            Some(b'+') => (false, &mantissa[1..]),
            _ => (false, mantissa),
        };
        let (int_part, frac_part) = match digits.find('.') {
            Some(i) => (&digits[..i], &digits[i + 1..]),
            None => (digits, ""),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(bad());
        }
        if !int_part.bytes().chain(frac_part.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        // All digits as one big integer with a decimal exponent.
        let mut all: Vec<u8> = int_part.bytes().chain(frac_part.bytes()).map(|b| b - b'0').collect();
        let point = exp as i64 - frac_part.len() as i64 + SCALE as i64; // units exponent
        let mut round_up = false;
        if point < 0 {
            let drop = (-point) as usize;
            if drop > all.len() {
                all.clear();
            } else {
                round_up = all[all.len() - drop] >= 5;
                all.truncate(all.len() - drop);
            }
        } else {
            if point > 80 && all.iter().any(|&d| d != 0) {
                return Err(err!(NumericOutOfRange, "DECIMAL value out of range: '{text}'"));
            }
            all.extend(std::iter::repeat_n(0, point as usize));
        }
        let mut units: i128 = 0;
        for d in all {
            units = units
                .checked_mul(10)
                .and_then(|u| u.checked_add(d as i128))
                .ok_or_else(|| err!(NumericOutOfRange, "DECIMAL value out of range: '{text}'"))?;
        }
        if round_up {
            units += 1;
        }
        Decimal::from_units(if neg { -units } else { units })
    }
}

fn overflow() -> crate::error::Error {
    err!(NumericOutOfRange, "DECIMAL arithmetic overflow (precision 38, scale 12)")
}

impl fmt::Display for Decimal {
    /// Always 12 fraction digits, as VoltDB prints DECIMAL.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let a = self.0.unsigned_abs();
        let f12 = SCALE_FACTOR as u128;
        write!(f, "{sign}{}.{:012}", a / f12, a % f12)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(s: &str) -> Decimal {
        Decimal::parse(s).unwrap()
    }

    #[test]
    fn parse_and_print() {
        assert_eq!(d("1.5").to_string(), "1.500000000000");
        assert_eq!(d("-0.25").to_string(), "-0.250000000000");
        assert_eq!(d(".5").to_string(), "0.500000000000");
        assert_eq!(d("1e3").to_string(), "1000.000000000000");
        assert_eq!(d("0.0000000000005").to_string(), "0.000000000001");
        assert!(Decimal::parse("abc").is_err());
        assert!(Decimal::parse("").is_err());
        assert!(Decimal::parse("1e40").is_err());
    }

    #[test]
    fn arithmetic() {
        assert_eq!(d("1.5").checked_mul(d("2")).unwrap(), d("3"));
        assert_eq!(d("1").checked_div(d("3")).unwrap().to_string(), "0.333333333333");
        assert_eq!(d("2").checked_div(d("3")).unwrap().to_string(), "0.666666666667");
        assert_eq!(d("-7").checked_rem(d("2")).unwrap(), d("-1"));
        assert!(d("1").checked_div(Decimal::ZERO).is_err());
        let big = d("99999999999999999999999999");
        assert!(big.checked_mul(d("10")).is_err());
        assert!(big.checked_add(d("1")).is_err());
    }

    proptest! {
        #[test]
        fn display_parse_roundtrip(units in -MAX_UNITS..=MAX_UNITS) {
            let v = Decimal(units);
            prop_assert_eq!(Decimal::parse(&v.to_string()).unwrap(), v);
        }

        #[test]
        fn mul_matches_integer_math(a in -1_000_000i64..1_000_000, b in -1_000_000i64..1_000_000) {
            let p = Decimal::from_i64(a).checked_mul(Decimal::from_i64(b)).unwrap();
            prop_assert_eq!(p, Decimal::from_i64(a * b));
        }

        #[test]
        fn div_inverts_mul(a in -1_000_000i64..1_000_000, b in 1i64..1_000_000) {
            let p = Decimal::from_i64(a).checked_mul(Decimal::from_i64(b)).unwrap();
            prop_assert_eq!(p.checked_div(Decimal::from_i64(b)).unwrap(), Decimal::from_i64(a));
        }
    }
}
