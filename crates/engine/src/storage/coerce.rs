//! Row coercion: making a row fit its table's column definitions.
//!
//! Every row that enters storage passes through here first: each value is
//! converted to its column's type (`Value::cast`), then checked against the
//! column's constraints — NOT NULL (primary key columns always count as NOT
//! NULL), VARCHAR/VARBINARY length and the 1 MiB value limit. Values that
//! already have their column's representation are checked in place, without
//! the clone `cast` would make. Errors name the column and the table, so a
//! failing multi-row statement still says which value was wrong.

use joule_common::types::MAX_VALUE_LENGTH;
use joule_common::{bail, DataType, Error, ErrorCode, Result, Row, Value};
use joule_sql::catalog::{ColumnDef, TableDef};

/// Which columns reject NULL: NOT NULL columns and primary key columns.
pub(crate) fn not_null_columns(def: &TableDef) -> Vec<bool> {
    let mut not_null: Vec<bool> = def.columns.iter().map(|c| !c.nullable).collect();
    for index in def.indexes.iter().filter(|i| i.primary_key) {
        for &c in &index.columns {
            if let Some(flag) = not_null.get_mut(c) {
                *flag = true;
            }
        }
    }
    not_null
}

/// Coerce `row` to `def` (see the module docs). `not_null` comes from
/// [`not_null_columns`].
pub(crate) fn coerce_row(def: &TableDef, not_null: &[bool], mut row: Row) -> Result<Row> {
    if row.len() != def.columns.len() {
        bail!(
            ColumnCountMismatch,
            "table {} has {} columns but {} values were given",
            def.name,
            def.columns.len(),
            row.len()
        );
    }
    for (i, (value, col)) in row.iter_mut().zip(&def.columns).enumerate() {
        let not_null = not_null.get(i).copied().unwrap_or(!col.nullable);
        coerce_value(value, col, not_null, &def.name)?;
    }
    Ok(row)
}

fn coerce_value(value: &mut Value, col: &ColumnDef, not_null: bool, table: &str) -> Result<()> {
    use DataType as T;
    let in_place = match (&*value, col.data_type) {
        (Value::Null, _) if not_null || !col.nullable => {
            bail!(NotNullViolation, "column {} of table {} cannot be NULL", col.name, table)
        }
        (Value::Null, _) => return Ok(()),
        (Value::Integer(i), t) if t.is_integer() => match t.integer_range() {
            Some((lo, hi)) if *i < lo || *i > hi => return Err(out_of_range(value, col, table)),
            _ => true,
        },
        (Value::String(_), T::Varchar)
        | (Value::Binary(_), T::Varbinary)
        | (Value::Float(_), T::Float)
        | (Value::Decimal(_), T::Decimal)
        | (Value::Timestamp(_), T::Timestamp)
        | (Value::Boolean(_), T::Boolean) => true,
        _ => false,
    };
    if !in_place {
        *value = value.cast(col.data_type).map_err(|e| in_column(e, value, col, table))?;
    }
    match value {
        Value::String(s) => check_length(s.len(), || s.chars().count(), col, table),
        Value::Binary(b) => check_length(b.len(), || b.len(), col, table),
        _ => Ok(()),
    }
}

/// `bytes`: the value's size; `units`: its length as the column counts it
/// (characters for VARCHAR, bytes for VARCHAR(n BYTES) and VARBINARY).
fn check_length(bytes: usize, units: impl FnOnce() -> usize, col: &ColumnDef, table: &str) -> Result<()> {
    if let Some(max) = col.max_len {
        let max = max as usize;
        // Characters never outnumber bytes: only count when the bytes exceed.
        if bytes > max {
            let in_chars = col.data_type == DataType::Varchar && !col.len_in_bytes;
            let (n, unit) = if in_chars { (units(), "characters") } else { (bytes, "bytes") };
            if n > max {
                bail!(
                    StringTooLong,
                    "value of {n} {unit} is too long for column {} {} of table {table}",
                    col.name,
                    col.type_sql()
                );
            }
        }
    }
    if bytes > MAX_VALUE_LENGTH {
        bail!(
            ValueTooLarge,
            "value of {bytes} bytes is larger than the 1 MiB limit ({MAX_VALUE_LENGTH} bytes) for column {} of table {table}",
            col.name
        );
    }
    Ok(())
}

fn out_of_range(value: &Value, col: &ColumnDef, table: &str) -> Error {
    Error::new(
        ErrorCode::NumericOutOfRange,
        format!("value {value} out of range for column {} {} of table {table}", col.name, col.type_sql()),
    )
}

/// Give a cast error the column's context.
fn in_column(e: Error, value: &Value, col: &ColumnDef, table: &str) -> Error {
    match e.code() {
        ErrorCode::NumericOutOfRange => out_of_range(value, col, table),
        code => Error::new(code, format!("{} (column {} of table {table})", e.message(), col.name)),
    }
}
