//! Printing result values the way sqllogictest expects them, sorting and hashing.
//!
//! The column's type letter on the `query` line decides how a value prints,
//! following SQLite's reference runner (the corpus was generated with it):
//!
//! | value      | `I`                         | `R` (`%.3f`)        | `T`                          |
//! |------------|-----------------------------|---------------------|------------------------------|
//! | NULL       | `NULL`                      | `NULL`              | `NULL`                       |
//! | integer    | digits                      | `3.000`             | digits                       |
//! | float      | truncated toward zero       | `%.3f`              | SQLite's `%!.15g` (`1.0`, `1.5e+20`) |
//! | decimal    | truncated toward zero       | `%.3f`              | shortest exact text, at least one decimal |
//! | boolean    | `1` / `0`                   | `1.000` / `0.000`   | `1` / `0`                    |
//! | string     | its leading integer, else 0 | its leading number  | the text; `''` is `(empty)`  |
//! | binary     | 0                           | `0.000`             | upper-case hex               |
//! | timestamp  | microseconds                | microseconds        | `YYYY-MM-DD HH:MM:SS.ffffff` |
//!
//! In `T` output every byte outside printable ASCII becomes `@`, as in SQLite's
//! runner. Sorting compares the printed strings byte-wise (`strcmp`), and a
//! hash is the MD5 of all printed values, each followed by `"\n"`.
//!
//! [`ResultBuf`] keeps all printed values of one result in a single reused
//! `String`, so running thousands of queries does not allocate per value.

use super::parser::SortMode;
use joule_common::decimal::SCALE_FACTOR;
use joule_common::types::{format_timestamp, hex};
use joule_common::Value;
use md5::{Digest, Md5};
use std::fmt::Write;
use std::ops::Range;

/// Append `v` printed for a column of type letter `ty` (`I`, `R` or `T`).
pub fn format_value(out: &mut String, ty: u8, v: &Value) {
    match (ty, v) {
        (_, Value::Null) => out.push_str("NULL"),
        (b'I', v) => {
            let _ = write!(out, "{}", as_i64(v));
        }
        (b'R', v) => write_fixed3(out, as_f64(v)),
        (_, v) => {
            let start = out.len();
            write_text(out, v);
            if out.len() == start {
                out.push_str("(empty)");
            } else if !out.as_bytes()[start..].iter().all(|b| (b' '..=b'~').contains(b)) {
                // SQLite's runner replaces every byte outside printable ASCII.
                let cleaned: String = out.as_bytes()[start..]
                    .iter()
                    .map(|&b| if (b' '..=b'~').contains(&b) { b as char } else { '@' })
                    .collect();
                out.truncate(start);
                out.push_str(&cleaned);
            }
        }
    }
}

/// A value read as an integer, the way `sqlite3_column_int64` does.
fn as_i64(v: &Value) -> i64 {
    match v {
        Value::Null | Value::Binary(_) | Value::Array(_) => 0,
        Value::Boolean(b) => i64::from(*b),
        Value::Integer(i) | Value::Timestamp(i) => *i,
        // `as` truncates toward zero and saturates (NaN becomes 0).
        Value::Float(f) => *f as i64,
        Value::Decimal(d) => {
            let whole = d.units() / SCALE_FACTOR;
            whole.clamp(i64::MIN as i128, i64::MAX as i128) as i64
        }
        Value::String(s) => leading_integer(s),
    }
}

/// A value read as a double, the way `sqlite3_column_double` does.
fn as_f64(v: &Value) -> f64 {
    match v {
        Value::Null | Value::Binary(_) | Value::Array(_) => 0.0,
        Value::Boolean(b) => f64::from(u8::from(*b)),
        Value::Integer(i) | Value::Timestamp(i) => *i as f64,
        Value::Float(f) => *f,
        Value::Decimal(d) => d.to_f64(),
        Value::String(s) => leading_number(s),
    }
}

/// The integer a string starts with (after spaces), 0 if none; saturating.
fn leading_integer(s: &str) -> i64 {
    let t = s.trim_start().as_bytes();
    let (neg, digits) = match t.first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let mut acc: i64 = 0;
    for &b in digits.iter().take_while(|b| b.is_ascii_digit()) {
        let d = i64::from(b - b'0');
        acc = acc.saturating_mul(10).saturating_add(d);
    }
    if neg {
        acc.saturating_neg()
    } else {
        acc
    }
}

/// The number a string starts with (after spaces), 0.0 if none.
fn leading_number(s: &str) -> f64 {
    let t = s.trim_start();
    let b = t.as_bytes();
    let digits = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        i
    };
    let mut end = usize::from(matches!(b.first(), Some(b'-' | b'+')));
    end = digits(end);
    if b.get(end) == Some(&b'.') {
        end = digits(end + 1);
    }
    if matches!(b.get(end), Some(b'e' | b'E')) {
        let mut e = end + 1;
        if matches!(b.get(e), Some(b'-' | b'+')) {
            e += 1;
        }
        let e_end = digits(e);
        if e_end > e {
            end = e_end;
        }
    }
    t[..end].parse().unwrap_or(0.0)
}

/// The text of a value for a `T` column (empty stays empty).
fn write_text(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("NULL"),
        Value::Boolean(b) => out.push(if *b { '1' } else { '0' }),
        Value::Integer(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Float(f) => write_real_text(out, *f),
        Value::Decimal(d) => {
            // Exact: trim the 12 fraction digits, keep at least one.
            let full = d.to_string();
            let trimmed = full.trim_end_matches('0');
            out.push_str(trimmed);
            if trimmed.ends_with('.') {
                out.push('0');
            }
        }
        Value::String(s) => out.push_str(s),
        Value::Binary(b) => out.push_str(&hex(b)),
        Value::Timestamp(t) => out.push_str(&format_timestamp(*t)),
        Value::Array(_) => {
            let _ = write!(out, "{v}");
        }
    }
}

/// The decimal digits of a double, rounded the way SQLite's printf does
/// (`sqlite3FpDecode`): round half up at digit `round` (counted from the
/// first significant digit; `round <= 0` means `-round` places after the
/// decimal point), keeping at most `max_digits` significant digits.
/// Returns `(negative, digits without trailing zeros, position of the decimal
/// point)`: the value is `0.<digits> * 10^point`.
fn fp_decode(r: f64, round: i32, max_digits: usize) -> (bool, Vec<u8>, i32) {
    if r == 0.0 {
        return (false, vec![b'0'], 1);
    }
    // 19 significant digits, correctly rounded; SQLite works from a 19-digit
    // approximation too, and rounds far before its last digit.
    let sci = format!("{:.18e}", r.abs());
    let (mantissa, exp) = sci.split_once('e').expect("exponent form");
    let mut z: Vec<u8> = mantissa.bytes().filter(u8::is_ascii_digit).collect();
    let mut point = exp.parse::<i32>().expect("exponent") + 1;
    let mut round = round;
    if round <= 0 {
        round = point - round;
        if round == 0 && z[0] >= b'5' {
            z.insert(0, b'0');
            point += 1;
            round = 1;
        }
    }
    if round > 0 && ((round as usize) < z.len() || z.len() > max_digits) {
        let keep = (round as usize).min(max_digits);
        let up = z[keep] >= b'5';
        z.truncate(keep);
        if up {
            let mut j = keep;
            loop {
                if j == 0 {
                    z.insert(0, b'1');
                    point += 1;
                    break;
                }
                j -= 1;
                if z[j] == b'9' {
                    z[j] = b'0';
                } else {
                    z[j] += 1;
                    break;
                }
            }
        }
    }
    while z.len() > 1 && z[z.len() - 1] == b'0' {
        z.pop();
    }
    (r < 0.0, z, point)
}

/// Write digits `z` (decimal point after `point` digits) with `frac` digits
/// after the point, padding with zeros; the point itself when `frac > 0`
/// or `dot`.
fn write_positional(out: &mut String, z: &[u8], point: i32, frac: usize, dot: bool) {
    let digit = |k: i32| if k >= 0 && (k as usize) < z.len() { z[k as usize] as char } else { '0' };
    if point <= 0 {
        out.push('0');
    } else {
        (0..point).for_each(|k| out.push(digit(k)));
    }
    if frac > 0 || dot {
        out.push('.');
        (0..frac as i32).for_each(|k| out.push(digit(point + k)));
    }
}

/// How SQLite prints a NaN or an infinity (`None` for finite values).
fn non_finite(v: f64) -> Option<&'static str> {
    if v.is_finite() {
        None
    } else if v.is_nan() {
        Some("NaN")
    } else if v > 0.0 {
        Some("Inf")
    } else {
        Some("-Inf")
    }
}

/// A float as SQLite's `printf("%.3f")`: at most 16 significant digits, the
/// rest zeros, rounded half away from zero.
pub fn write_fixed3(out: &mut String, v: f64) {
    if let Some(text) = non_finite(v) {
        out.push_str(text);
        return;
    }
    let (neg, z, point) = fp_decode(v, -3, 16);
    if neg {
        out.push('-');
    }
    write_positional(out, &z, point, 3, false);
}

/// A float as SQLite prints a REAL as text, `printf("%!.15g")`: 15
/// significant digits, trailing zeros removed but at least one decimal,
/// exponent form (`1.5e+20`) below 1e-4 and from 1e15 on.
pub fn write_real_text(out: &mut String, v: f64) {
    if let Some(text) = non_finite(v) {
        out.push_str(text);
        return;
    }
    let (neg, z, point) = fp_decode(v, 15, 26);
    if neg {
        out.push('-');
    }
    let exp = point - 1;
    if !(-4..=14).contains(&exp) {
        write_positional(out, &z, 1, 14, true);
    } else {
        write_positional(out, &z, point, (14 - exp) as usize, true);
    }
    // Remove trailing zeros, keeping one digit after the point.
    while out.ends_with('0') {
        out.pop();
    }
    if out.ends_with('.') {
        out.push('0');
    }
    if !(-4..=14).contains(&exp) {
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.unsigned_abs());
    }
}

/// The printed values of one query result, reused from query to query.
#[derive(Default)]
pub struct ResultBuf {
    text: String,
    spans: Vec<Range<usize>>,
    scratch: Vec<Range<usize>>,
    rows: Vec<usize>,
    ncols: usize,
}

impl ResultBuf {
    /// Forget the previous result; the next one has `ncols` columns.
    pub fn clear(&mut self, ncols: usize) {
        self.text.clear();
        self.spans.clear();
        self.ncols = ncols.max(1);
    }

    /// Append one value printed for type letter `ty`.
    pub fn push(&mut self, ty: u8, v: &Value) {
        let start = self.text.len();
        format_value(&mut self.text, ty, v);
        self.spans.push(start..self.text.len());
    }

    /// Number of values (rows × columns).
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn value(&self, i: usize) -> &str {
        &self.text[self.spans[i].clone()]
    }

    pub fn values(&self) -> impl Iterator<Item = &str> + '_ {
        self.spans.iter().map(|s| &self.text[s.clone()])
    }

    /// Apply a sort mode: rows or values compared as strings, byte-wise.
    pub fn sort(&mut self, mode: SortMode) {
        let text = &self.text;
        match mode {
            SortMode::NoSort => {}
            SortMode::ValueSort => self.spans.sort_by(|a, b| text[a.clone()].cmp(&text[b.clone()])),
            SortMode::RowSort => {
                let (n, spans) = (self.ncols, &self.spans);
                self.rows.clear();
                self.rows.extend(0..spans.len() / n);
                let row = |r: usize| spans[r * n..(r + 1) * n].iter().map(|s| &text[s.clone()]);
                self.rows.sort_by(|&a, &b| row(a).cmp(row(b)));
                self.scratch.clear();
                for &r in &self.rows {
                    self.scratch.extend_from_slice(&spans[r * n..(r + 1) * n]);
                }
                std::mem::swap(&mut self.spans, &mut self.scratch);
            }
        }
    }

    /// MD5 of all values, each followed by a newline, as lower-case hex.
    pub fn md5_hex(&self) -> String {
        let mut h = Md5::new();
        for v in self.values() {
            h.update(v.as_bytes());
            h.update(b"\n");
        }
        h.finalize().iter().fold(String::with_capacity(32), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }

    /// The `N values hashing to <md5>` line for this result.
    pub fn hash_line(&self) -> String {
        format!("{} values hashing to {}", self.len(), self.md5_hex())
    }

    /// Whether `expected` lists exactly these values, one per line (SQLite's
    /// layout) or one row per line with values separated by single spaces
    /// (the layout of other sqllogictest dialects).
    pub fn matches(&self, expected: &[&str]) -> bool {
        if expected.len() == self.len() && self.values().zip(expected).all(|(a, e)| a == *e) {
            return true;
        }
        let n = self.ncols;
        n > 1
            && expected.len() * n == self.len()
            && expected.iter().enumerate().all(|(r, line)| {
                let mut parts = line.split(' ');
                (r * n..(r + 1) * n).all(|i| parts.next() == Some(self.value(i))) && parts.next().is_none()
            })
    }

    /// The values laid out one row per line (for failure reports), at most
    /// `max_rows` rows.
    pub fn render(&self, max_rows: usize) -> String {
        render_rows(&self.values().collect::<Vec<_>>(), self.ncols, max_rows)
    }
}

/// `values` laid out `ncols` per line, at most `max_rows` lines.
pub fn render_rows(values: &[&str], ncols: usize, max_rows: usize) -> String {
    let ncols = ncols.max(1);
    let nrows = values.len().div_ceil(ncols);
    let mut out = String::new();
    for row in values.chunks(ncols).take(max_rows) {
        let _ = writeln!(out, "    {}", row.join(" | "));
    }
    if nrows > max_rows {
        let _ = writeln!(out, "    ... ({} more rows)", nrows - max_rows);
    }
    if values.is_empty() {
        out.push_str("    (no rows)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use joule_common::Decimal;

    fn f(ty: u8, v: Value) -> String {
        let mut s = String::new();
        format_value(&mut s, ty, &v);
        s
    }

    fn dec(s: &str) -> Value {
        Value::Decimal(Decimal::parse(s).unwrap())
    }

    #[test]
    fn integer_column() {
        assert_eq!(f(b'I', Value::Integer(-42)), "-42");
        assert_eq!(f(b'I', Value::Float(2.9)), "2");
        assert_eq!(f(b'I', Value::Float(-2.9)), "-2");
        assert_eq!(f(b'I', Value::Float(f64::NAN)), "0");
        assert_eq!(f(b'I', dec("-7.75")), "-7");
        assert_eq!(f(b'I', Value::Boolean(true)), "1");
        assert_eq!(f(b'I', Value::Boolean(false)), "0");
        assert_eq!(f(b'I', Value::String(" 12abc".into())), "12");
        assert_eq!(f(b'I', Value::String("abc".into())), "0");
        assert_eq!(f(b'I', Value::Null), "NULL");
    }

    #[test]
    fn real_column() {
        assert_eq!(f(b'R', Value::Integer(3)), "3.000");
        assert_eq!(f(b'R', Value::Float(1.0 / 3.0)), "0.333");
        assert_eq!(f(b'R', Value::Float(-2.5)), "-2.500");
        assert_eq!(f(b'R', Value::Float(2.0 / 3.0)), "0.667");
        assert_eq!(f(b'R', dec("123.4567")), "123.457");
        assert_eq!(f(b'R', Value::String("1.5e2x".into())), "150.000");
        assert_eq!(f(b'R', Value::Null), "NULL");
    }

    #[test]
    fn text_column() {
        assert_eq!(f(b'T', Value::String(String::new())), "(empty)");
        assert_eq!(f(b'T', Value::String("a b".into())), "a b");
        assert_eq!(f(b'T', Value::String("tab\there".into())), "tab@here");
        assert_eq!(f(b'T', Value::String("é".into())), "@@");
        assert_eq!(f(b'T', Value::Integer(7)), "7");
        assert_eq!(f(b'T', Value::Float(1.0)), "1.0");
        assert_eq!(f(b'T', Value::Float(-0.5)), "-0.5");
        assert_eq!(f(b'T', dec("2.50")), "2.5");
        assert_eq!(f(b'T', dec("-3")), "-3.0");
        assert_eq!(f(b'T', Value::Boolean(true)), "1");
        assert_eq!(f(b'T', Value::Binary(vec![0xab, 1])), "AB01");
        assert_eq!(f(b'T', Value::Null), "NULL");
    }

    #[test]
    fn real_text_like_sqlite() {
        let t = |v: f64| {
            let mut s = String::new();
            write_real_text(&mut s, v);
            s
        };
        assert_eq!(t(0.0), "0.0");
        assert_eq!(t(123.0), "123.0");
        assert_eq!(t(0.1), "0.1");
        assert_eq!(t(1.0 / 3.0), "0.333333333333333");
        assert_eq!(t(0.0001), "0.0001");
        assert_eq!(t(0.00001), "1.0e-05");
        assert_eq!(t(1e14), "100000000000000.0");
        assert_eq!(t(1e15), "1.0e+15");
        assert_eq!(t(-1.5e20), "-1.5e+20");
        assert_eq!(t(123456.789), "123456.789");
    }

    /// Doubles of many magnitudes, ties (k/16) included, deterministic.
    fn sample_doubles() -> Vec<f64> {
        let mut v = vec![0.0, -0.0, 0.0005, 0.0625, -0.0625, 2.5e-4, 9.9995, 1e15, 1e16, 123456789012345.6];
        v.extend([-9223372036854775808.0, -18446744073709551616.0, 1.0 / 3.0, 2.0 / 3.0, 0.1, 1e-5, 1e300]);
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for i in 0..3000i32 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let mantissa = (x >> 11) as f64 / (1u64 << 53) as f64;
            let exp = i % 44 - 22;
            let sign = if x & 1 == 0 { 1.0 } else { -1.0 };
            v.push(sign * mantissa * 10f64.powi(exp));
            v.push(sign * ((x >> 40) % 100_000) as f64 / 16.0);
        }
        v
    }

    /// `R` and `T` printing of floats agrees with SQLite's own printf.
    #[test]
    fn floats_print_like_sqlite() {
        let db = rusqlite::Connection::open_in_memory().unwrap();
        let mut stmt = db.prepare("SELECT printf('%.3f', ?1), CAST(?1 AS TEXT)").unwrap();
        for v in sample_doubles() {
            let (fixed, text): (String, String) = stmt.query_row([v], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
            assert_eq!(f(b'R', Value::Float(v)), fixed, "R of {v:e}");
            assert_eq!(f(b'T', Value::Float(v)), text, "T of {v:e}");
        }
    }

    #[test]
    fn md5_of_known_values() {
        // python3 -c "import hashlib; print(hashlib.md5(b'1\n2\nNULL\n(empty)\nabc\n').hexdigest())"
        let mut buf = ResultBuf::default();
        buf.clear(1);
        for v in [
            Value::Integer(1),
            Value::Integer(2),
            Value::Null,
            Value::String(String::new()),
            Value::String("abc".into()),
        ] {
            buf.push(b'T', &v);
        }
        assert_eq!(buf.md5_hex(), "bf7df2500f5ec9006b3b613cc0ea5fc2");
        assert_eq!(buf.hash_line(), "5 values hashing to bf7df2500f5ec9006b3b613cc0ea5fc2");
        buf.clear(1);
        assert_eq!(buf.md5_hex(), "d41d8cd98f00b204e9800998ecf8427e");
    }

    fn buf_of(ncols: usize, vals: &[&str]) -> ResultBuf {
        let mut b = ResultBuf::default();
        b.clear(ncols);
        for v in vals {
            b.push(b'T', &Value::String((*v).into()));
        }
        b
    }

    #[test]
    fn sorting_is_by_strings() {
        let mut b = buf_of(2, &["10", "b", "9", "a", "10", "a", "NULL", "z"]);
        b.sort(SortMode::RowSort);
        // Strings, not numbers: "10" < "9" < "NULL".
        assert_eq!(b.values().collect::<Vec<_>>(), ["10", "a", "10", "b", "9", "a", "NULL", "z"]);
        let mut b = buf_of(2, &["10", "b", "9", "a"]);
        b.sort(SortMode::ValueSort);
        assert_eq!(b.values().collect::<Vec<_>>(), ["10", "9", "a", "b"]);
        let mut b = buf_of(2, &["10", "b", "9", "a"]);
        b.sort(SortMode::NoSort);
        assert_eq!(b.values().collect::<Vec<_>>(), ["10", "b", "9", "a"]);
    }

    #[test]
    fn matching_layouts() {
        let b = buf_of(2, &["1", "x y", "2", "(empty)"]);
        assert!(b.matches(&["1", "x y", "2", "(empty)"]));
        assert!(!b.matches(&["1", "x y", "2"]));
        assert!(!b.matches(&["1", "x y", "2", "(empty)", "3"]));
        // Row-per-line layout of other dialects.
        assert!(buf_of(2, &["1", "a", "2", "b"]).matches(&["1 a", "2 b"]));
        assert!(!buf_of(2, &["1", "a", "2", "b"]).matches(&["1 a b", "2"]));
        assert!(buf_of(1, &[]).matches(&[]));
        assert_eq!(b.render(1), "    1 | x y\n    ... (1 more rows)\n");
    }
}
