//! Unit tests of [`Table`], [`Storage`] and [`UndoLog`]: every method, every
//! error message, and exact restoration by rollback. The shared helpers
//! (schema builders, [`dump`]) are used by the property tests too.

use super::*;
use joule_common::{DataType, ErrorCode, Row, Value};
use joule_sql::catalog::{ColumnDef, IndexDef, IndexKind};
use std::ops::Bound::{self, Excluded, Included, Unbounded};

pub(super) fn col(name: &str, data_type: DataType, max_len: Option<u32>, nullable: bool) -> ColumnDef {
    ColumnDef { name: name.into(), data_type, max_len, len_in_bytes: false, nullable, default: None }
}

pub(super) fn idx(name: &str, columns: &[usize], unique: bool, kind: IndexKind) -> IndexDef {
    IndexDef {
        name: name.into(),
        columns: columns.to_vec(),
        unique,
        assume_unique: false,
        primary_key: name.starts_with("PK"),
        kind,
    }
}

pub(super) fn table_def(id: TableId, name: &str, columns: Vec<ColumnDef>, indexes: Vec<IndexDef>) -> Arc<TableDef> {
    Arc::new(TableDef {
        id,
        database: "DEFAULT".into(),
        name: name.into(),
        columns,
        indexes,
        partition_column: None,
        partition_ranges: None,
        range_owners: None,
        view: None,
    })
}

/// PEOPLE(ID INTEGER PK, NAME VARCHAR(5), AGE TINYINT, EMAIL VARCHAR(10))
/// indexes: 0 PK_PEOPLE tree (ID); 1 UQ_EMAIL hash unique (EMAIL);
/// 2 IDX_AGE_NAME tree (AGE, NAME); 3 IDX_NAME hash (NAME).
fn people_def() -> Arc<TableDef> {
    table_def(
        1,
        "PEOPLE",
        vec![
            col("ID", DataType::Integer, None, false),
            col("NAME", DataType::Varchar, Some(5), true),
            col("AGE", DataType::TinyInt, None, true),
            col("EMAIL", DataType::Varchar, Some(10), true),
        ],
        vec![
            idx("PK_PEOPLE", &[0], true, IndexKind::Tree),
            idx("UQ_EMAIL", &[3], true, IndexKind::Hash),
            idx("IDX_AGE_NAME", &[2, 1], false, IndexKind::Tree),
            idx("IDX_NAME", &[1], false, IndexKind::Hash),
        ],
    )
}

fn i(v: i64) -> Value {
    Value::Integer(v)
}

fn s(v: &str) -> Value {
    Value::String(v.into())
}

const NULL: Value = Value::Null;

fn person(id: i64, name: &str, age: i64, email: Option<&str>) -> Row {
    vec![i(id), s(name), i(age), email.map_or(NULL, s)]
}

fn people() -> Table {
    let mut t = Table::new(people_def());
    t.insert(person(1, "ann", 30, Some("a@x"))).unwrap();
    t.insert(person(2, "bob", 25, None)).unwrap();
    t.insert(person(3, "cy", 30, Some("c@x"))).unwrap();
    t.insert(person(4, "dee", 41, None)).unwrap();
    t
}

fn ids(it: Result<IndexIter<'_>>) -> Vec<RowId> {
    it.unwrap().collect()
}

fn code<T: std::fmt::Debug>(r: Result<T>) -> ErrorCode {
    r.unwrap_err().code()
}

fn message<T: std::fmt::Debug>(r: Result<T>) -> String {
    r.unwrap_err().message().to_string()
}

/// Everything observable about a table: rows in scan order, every index's
/// lookups for every stored key, ordered scans, key counts, and the slab's
/// shape (which decides future row ids).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Dump {
    rows: Vec<(RowId, Row)>,
    indexes: Vec<IndexDump>,
    slab: (usize, Vec<RowId>),
}

/// Key count, `index_eq` for every stored key, and (tree only) `index_all`.
type IndexDump = (usize, Vec<(Vec<Value>, Vec<RowId>)>, Option<Vec<RowId>>);

pub(super) fn dump(t: &Table) -> Dump {
    let rows: Vec<(RowId, Row)> = t.scan().map(|(id, r)| (id, r.clone())).collect();
    let indexes = t
        .def()
        .indexes
        .iter()
        .enumerate()
        .map(|(n, d)| {
            let mut keys: Vec<Vec<Value>> =
                rows.iter().map(|(_, r)| d.columns.iter().map(|&c| r[c].clone()).collect()).collect();
            keys.sort();
            keys.dedup();
            let lookups = keys.into_iter().map(|k| (k.clone(), ids(t.index_eq(n, &k)))).collect();
            let all = (d.kind == IndexKind::Tree).then(|| ids(t.index_all(n, false)));
            (t.index_key_count(n).unwrap(), lookups, all)
        })
        .collect();
    Dump { rows, indexes, slab: t.slab_state() }
}

#[test]
fn insert_assigns_ids_and_scan_returns_rows_in_id_order() {
    let t = people();
    assert_eq!(t.len(), 4);
    assert!(!t.is_empty());
    assert_eq!(t.scan().map(|(id, _)| id).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    assert_eq!(t.get(1), Some(&person(2, "bob", 25, None)));
    assert_eq!(t.get(4), None);
    assert!(Table::new(people_def()).is_empty());
    assert_eq!(t.def().name, "PEOPLE");
}

#[test]
fn coerce_row_converts_to_column_types() {
    let t = Table::new(people_def());
    let row = t.coerce_row(vec![s(" 12 "), i(5), Value::Float(7.9), NULL]).unwrap();
    assert!(matches!(row[0], Value::Integer(12)));
    assert!(matches!(&row[1], Value::String(x) if x == "5"));
    assert!(matches!(row[2], Value::Integer(7)));
    assert!(row[3].is_null());
}

#[test]
fn not_null_errors_name_the_column_and_table() {
    let mut t = Table::new(people_def());
    let r = t.insert(vec![NULL, s("a"), i(1), NULL]);
    assert_eq!(r.clone().unwrap_err().code(), ErrorCode::NotNullViolation);
    assert_eq!(message(r), "column ID of table PEOPLE cannot be NULL");
    // A primary key column rejects NULL even if its definition says nullable.
    let mut def = (*people_def()).clone();
    def.columns[0].nullable = true;
    let t2 = Table::new(Arc::new(def));
    assert_eq!(code(t2.coerce_row(vec![NULL, NULL, NULL, NULL])), ErrorCode::NotNullViolation);
    assert!(t.is_empty());
}

#[test]
fn length_errors_count_characters_or_bytes() {
    let mut def = (*people_def()).clone();
    def.columns.push(ColumnDef { len_in_bytes: true, ..col("CODE", DataType::Varchar, Some(4), true) });
    def.columns.push(col("BIN", DataType::Varbinary, Some(2), true));
    def.columns.push(col("DOC", DataType::Varchar, None, true));
    let t = Table::new(Arc::new(def));
    let row = |name: &str, code: &str, bin: Value, doc: Value| vec![i(1), s(name), NULL, NULL, s(code), bin, doc];
    // Five 2-byte characters fit VARCHAR(5).
    assert!(t.coerce_row(row("ééééé", "éé", Value::Binary(vec![1, 2]), NULL)).is_ok());
    let r = t.coerce_row(row("abcdef", "", NULL, NULL));
    assert_eq!(r.clone().unwrap_err().code(), ErrorCode::StringTooLong);
    assert_eq!(message(r), "value of 6 characters is too long for column NAME VARCHAR(5) of table PEOPLE");
    let r = t.coerce_row(row("", "éé!", NULL, NULL));
    assert_eq!(message(r), "value of 5 bytes is too long for column CODE VARCHAR(4 BYTES) of table PEOPLE");
    let r = t.coerce_row(row("", "", Value::Binary(vec![1, 2, 3]), NULL));
    assert_eq!(r.clone().unwrap_err().code(), ErrorCode::StringTooLong);
    assert_eq!(message(r), "value of 3 bytes is too long for column BIN VARBINARY(2) of table PEOPLE");
    // Hex text casts to VARBINARY before the length check.
    assert!(t.coerce_row(row("", "", s("0A0B"), NULL)).is_ok());
    let big = "x".repeat(joule_common::types::MAX_VALUE_LENGTH + 1);
    let r = t.coerce_row(row("", "", NULL, s(&big)));
    assert_eq!(r.clone().unwrap_err().code(), ErrorCode::ValueTooLarge);
    assert_eq!(
        message(r),
        "value of 1048577 bytes is larger than the 1 MiB limit (1048576 bytes) for column DOC of table PEOPLE"
    );
}

#[test]
fn numeric_range_errors_name_the_column() {
    let t = Table::new(people_def());
    for v in [i(300), s("300"), Value::Float(300.5), i(-128)] {
        let r = t.coerce_row(vec![i(1), NULL, v.clone(), NULL]);
        assert_eq!(r.clone().unwrap_err().code(), ErrorCode::NumericOutOfRange, "{v:?}");
        assert_eq!(message(r), format!("value {v} out of range for column AGE TINYINT of table PEOPLE"));
    }
    assert!(t.coerce_row(vec![i(1), NULL, i(-127), NULL]).is_ok());
    let r = t.coerce_row(vec![s("abc"), NULL, NULL, NULL]);
    assert_eq!(r.clone().unwrap_err().code(), ErrorCode::InvalidTextRepresentation);
    assert_eq!(message(r), "invalid integer value: 'abc' (column ID of table PEOPLE)");
    let r = t.coerce_row(vec![i(1)]);
    assert_eq!(r.clone().unwrap_err().code(), ErrorCode::ColumnCountMismatch);
    assert_eq!(message(r), "table PEOPLE has 4 columns but 1 values were given");
}

#[test]
fn unique_violations_name_constraint_and_table_and_change_nothing() {
    let mut t = people();
    let before = dump(&t);
    let r = t.insert(person(3, "zed", 1, None));
    assert_eq!(r.clone().unwrap_err().code(), ErrorCode::UniqueViolation);
    assert_eq!(message(r), "duplicate key (3) violates unique constraint PK_PEOPLE on table PEOPLE");
    let r = t.insert(person(9, "zed", 1, Some("c@x")));
    assert_eq!(message(r), "duplicate key ('c@x') violates unique constraint UQ_EMAIL on table PEOPLE");
    // A coercion failure after valid columns changes nothing either.
    assert!(t.insert(vec![i(9), s("zed"), i(999), NULL]).is_err());
    assert_eq!(dump(&t), before);
    // NULL keys never conflict.
    t.insert(person(5, "eve", 20, None)).unwrap();
    assert_eq!(ids(t.index_eq(1, &[NULL])), vec![1, 3, 4]);
}

#[test]
fn delete_removes_from_every_index() {
    let mut t = people();
    assert_eq!(t.delete(2).unwrap(), person(3, "cy", 30, Some("c@x")));
    assert_eq!(t.len(), 3);
    assert_eq!(t.get(2), None);
    assert_eq!(t.index_get_unique(0, &[i(3)]), None);
    assert_eq!(ids(t.index_eq(1, &[s("c@x")])), Vec::<RowId>::new());
    assert_eq!(ids(t.index_eq(2, &[i(30)])), vec![0]);
    assert_eq!(ids(t.index_eq(3, &[s("cy")])), Vec::<RowId>::new());
    let r = t.delete(2);
    assert_eq!(r.clone().unwrap_err().code(), ErrorCode::Internal);
    assert_eq!(message(r), "table PEOPLE has no row 2");
    // The freed id is reused by the next insert.
    assert_eq!(t.insert(person(7, "gus", 1, None)).unwrap(), 2);
}

#[test]
fn update_rekeys_only_changed_indexes_and_is_atomic() {
    let mut t = people();
    // Keeping its own unique keys is not a conflict.
    let old = t.update(0, person(1, "ann", 31, Some("a@x"))).unwrap();
    assert_eq!(old, person(1, "ann", 30, Some("a@x")));
    assert_eq!(ids(t.index_eq(2, &[i(30)])), vec![2]);
    assert_eq!(ids(t.index_eq(2, &[i(31), s("ann")])), vec![0]);
    assert_eq!(t.index_get_unique(0, &[i(1)]), Some(0));
    // Change the primary key and the email.
    t.update(0, person(10, "ann", 31, Some("new@x"))).unwrap();
    assert_eq!(t.index_get_unique(0, &[i(1)]), None);
    assert_eq!(t.index_get_unique(0, &[i(10)]), Some(0));
    assert_eq!(t.index_get_unique(1, &[s("new@x")]), Some(0));
    assert_eq!(t.index_get_unique(1, &[s("a@x")]), None);
    let before = dump(&t);
    let r = t.update(0, person(2, "ann", 31, None));
    assert_eq!(message(r), "duplicate key (2) violates unique constraint PK_PEOPLE on table PEOPLE");
    let r = t.update(0, person(10, "ann", 31, Some("c@x")));
    assert_eq!(message(r), "duplicate key ('c@x') violates unique constraint UQ_EMAIL on table PEOPLE");
    assert_eq!(code(t.update(0, person(10, "toolong", 31, None))), ErrorCode::StringTooLong);
    assert_eq!(message(t.update(9, person(11, "x", 1, None))), "table PEOPLE has no row 9");
    assert_eq!(dump(&t), before);
}

#[test]
fn restore_puts_rows_back_at_their_ids() {
    let mut t = people();
    let before = dump(&t);
    let row = t.delete(1).unwrap();
    let last = t.delete(3).unwrap();
    t.restore(3, last).unwrap();
    t.restore(1, row.clone()).unwrap();
    assert_eq!(dump(&t), before);
    let r = t.restore(1, row);
    assert_eq!(r.clone().unwrap_err().code(), ErrorCode::Internal);
    assert_eq!(message(r), "cannot restore row 1 of table PEOPLE: the id is in use");
    let new = t.update(2, person(3, "cyd", 33, None)).unwrap();
    assert_eq!(t.restore_update(2, new).unwrap(), person(3, "cyd", 33, None));
    assert_eq!(dump(&t), before);
    assert_eq!(code(t.restore_update(8, person(1, "a", 1, None))), ErrorCode::Internal);
}

#[test]
fn truncate_returns_rows_for_undo() {
    let mut t = people();
    t.delete(1).unwrap();
    let before = dump(&t);
    let rows = t.truncate();
    assert_eq!(rows.iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![0, 2, 3]);
    assert!(t.is_empty());
    assert_eq!(t.scan().count(), 0);
    assert_eq!(t.index_key_count(0).unwrap(), 0);
    assert_eq!(t.index_key_count(1).unwrap(), 0);
    assert_eq!(t.slab_state(), (0, vec![]));
    for (id, row) in rows {
        t.restore(id, row).unwrap();
    }
    assert_eq!(dump(&t), before);
}

#[test]
fn index_eq_takes_prefixes_on_trees_and_full_keys_on_hashes() {
    let mut t = people();
    t.insert(person(5, "ann", 30, None)).unwrap(); // id 4
    assert_eq!(ids(t.index_eq(2, &[i(30)])), vec![0, 4, 2]); // key order: ann, ann, cy
    assert_eq!(ids(t.index_eq(2, &[i(30), s("ann")])), vec![0, 4]);
    assert_eq!(ids(t.index_eq(2, &[])), vec![1, 0, 4, 2, 3]);
    assert_eq!(ids(t.index_eq(3, &[s("ann")])), vec![0, 4]);
    assert_eq!(ids(t.index_eq(0, &[i(99)])), Vec::<RowId>::new());
    // Numbers match across representations.
    assert_eq!(ids(t.index_eq(0, &[Value::Float(2.0)])), vec![1]);
    assert_eq!(message(t.index_eq(3, &[])), "hash index lookup needs all 1 key values, got 0");
    assert_eq!(message(t.index_eq(0, &[i(1), i(2)])), "index lookup with 2 key values on an index of 1 columns");
    assert_eq!(message(t.index_eq(7, &[i(1)])), "table PEOPLE has no index at position 7");
}

#[test]
fn index_get_unique_is_a_full_key_lookup() {
    let t = people();
    assert_eq!(t.index_get_unique(0, &[i(4)]), Some(3));
    assert_eq!(t.index_get_unique(1, &[s("a@x")]), Some(0));
    assert_eq!(t.index_get_unique(1, &[s("zz")]), None);
    assert_eq!(t.index_get_unique(1, &[NULL]), Some(1)); // NULL matches NULL: lowest id
    assert_eq!(t.index_get_unique(2, &[i(30)]), None); // prefix: not a full key
    assert_eq!(t.index_get_unique(2, &[i(30), s("cy")]), Some(2));
    assert_eq!(t.index_get_unique(9, &[i(1)]), None);
}

/// NUMS(A INTEGER, B INTEGER, C INTEGER), tree index (A, B, C) plus a hash.
fn nums() -> Table {
    let cols = ["A", "B", "C"].map(|n| col(n, DataType::Integer, None, true)).to_vec();
    let def = table_def(
        2,
        "NUMS",
        cols,
        vec![idx("IX_ABC", &[0, 1, 2], false, IndexKind::Tree), idx("IX_H", &[0], false, IndexKind::Hash)],
    );
    let mut t = Table::new(def);
    // ids 0..: a in {1, 2}, b in {NULL, 1, 2, 3}, c in {1, 2}
    for a in 1..=2 {
        for b in [NULL, i(1), i(2), i(3)] {
            for c in 1..=2 {
                t.insert(vec![i(a), b.clone(), i(c)]).unwrap();
            }
        }
    }
    t
}

fn range(t: &Table, prefix: &[Value], lo: Bound<&Value>, hi: Bound<&Value>, reverse: bool) -> Vec<RowId> {
    ids(t.index_range(0, prefix, lo, hi, reverse))
}

#[test]
fn index_range_bounds_prefixes_and_nulls() {
    let t = nums();
    let (one, two, three) = (i(1), i(2), i(3));
    let a1 = [i(1)];
    // a = 1: ids 0..8; b NULL -> 0,1; b 1 -> 2,3; b 2 -> 4,5; b 3 -> 6,7
    assert_eq!(range(&t, &a1, Unbounded, Unbounded, false), (0..8).collect::<Vec<_>>());
    assert_eq!(range(&t, &a1, Unbounded, Unbounded, true), (0..8).rev().collect::<Vec<_>>());
    assert_eq!(range(&t, &a1, Included(&two), Unbounded, false), vec![4, 5, 6, 7]);
    assert_eq!(range(&t, &a1, Excluded(&two), Unbounded, false), vec![6, 7]);
    assert_eq!(range(&t, &a1, Unbounded, Excluded(&two), false), vec![2, 3]); // NULLs excluded
    assert_eq!(range(&t, &a1, Unbounded, Included(&two), true), vec![5, 4, 3, 2]);
    assert_eq!(range(&t, &a1, Excluded(&one), Excluded(&three), false), vec![4, 5]);
    assert_eq!(range(&t, &a1, Included(&two), Included(&two), false), vec![4, 5]);
    // Empty and inverted ranges answer empty (BTreeMap::range would panic).
    assert!(range(&t, &a1, Included(&three), Included(&two), false).is_empty());
    assert!(range(&t, &a1, Excluded(&two), Excluded(&two), false).is_empty());
    assert!(range(&t, &a1, Included(&two), Excluded(&two), false).is_empty());
    assert!(range(&t, &a1, Excluded(&two), Included(&two), true).is_empty());
    // A NULL bound matches nothing.
    assert!(range(&t, &a1, Included(&NULL), Unbounded, false).is_empty());
    assert!(range(&t, &[], Unbounded, Excluded(&NULL), false).is_empty());
    // No prefix: a range on the first column.
    assert_eq!(range(&t, &[], Excluded(&one), Unbounded, false), (8..16).collect::<Vec<_>>());
    assert_eq!(range(&t, &[], Unbounded, Unbounded, true), (0..16).rev().collect::<Vec<_>>());
    // Prefix with NULL: IS NULL lookups.
    assert_eq!(range(&t, &[two.clone(), NULL], Unbounded, Unbounded, false), vec![8, 9]);
    assert_eq!(range(&t, &[two.clone(), NULL], Included(&two), Unbounded, false), vec![9]);
    // The full key, reversible.
    assert_eq!(range(&t, &[two.clone(), three.clone(), one.clone()], Unbounded, Unbounded, true), vec![14]);
    let r = t.index_range(0, &[one.clone(), one.clone(), one.clone()], Included(&one), Unbounded, false);
    assert_eq!(message(r), "range scan with a 3-value prefix on an index of 3 columns");
    let r = t.index_range(1, &[], Included(&one), Unbounded, false);
    assert_eq!(message(r), "range scan on a hash index");
    assert_eq!(code(t.index_range(5, &[], Unbounded, Unbounded, false)), ErrorCode::Internal);
}

#[test]
fn index_all_is_key_ordered_and_tree_only() {
    let t = people();
    assert_eq!(ids(t.index_all(0, false)), vec![0, 1, 2, 3]);
    assert_eq!(ids(t.index_all(0, true)), vec![3, 2, 1, 0]);
    assert_eq!(ids(t.index_all(2, false)), vec![1, 0, 2, 3]); // (25 bob) (30 ann) (30 cy) (41 dee)
    assert_eq!(message(t.index_all(1, false)), "ordered scan of a hash index");
    assert_eq!(code(t.index_all(4, false)), ErrorCode::Internal);
}

#[test]
fn add_index_builds_over_rows_or_changes_nothing() {
    let mut t = people();
    let mut def = (*people_def()).clone();
    def.indexes.insert(1, idx("IX_AGE", &[2], false, IndexKind::Tree));
    t.add_index(Arc::new(def.clone()), 1).unwrap();
    assert_eq!(ids(t.index_eq(1, &[i(30)])), vec![0, 2]);
    assert_eq!(t.index_get_unique(2, &[s("a@x")]), Some(0)); // old indexes shifted
    assert_eq!(t.def().indexes.len(), 5);

    let before = dump(&t);
    let mut bad = def.clone();
    bad.indexes.push(idx("UQ_AGE", &[2], true, IndexKind::Hash));
    let r = t.add_index(Arc::new(bad.clone()), 5);
    assert_eq!(r.clone().unwrap_err().code(), ErrorCode::UniqueViolation);
    assert_eq!(message(r), "duplicate key (30) violates unique constraint UQ_AGE on table PEOPLE");
    assert_eq!(dump(&t), before);
    assert_eq!(t.def().indexes.len(), 5);
    // A primary key over NULL values.
    let mut pk = def.clone();
    pk.indexes.push(idx("PK_EMAIL", &[3], true, IndexKind::Tree));
    let r = t.add_index(Arc::new(pk), 5);
    assert_eq!(r.clone().unwrap_err().code(), ErrorCode::NotNullViolation);
    assert_eq!(message(r), "column EMAIL of table PEOPLE cannot be NULL");
    assert_eq!(code(t.add_index(Arc::new(bad.clone()), 9)), ErrorCode::Internal);
    assert_eq!(code(t.add_index(Arc::new(def), 1)), ErrorCode::Internal); // not one more index
    assert_eq!(dump(&t), before);
}

#[test]
fn drop_index_removes_one_index() {
    let mut t = people();
    let mut def = (*people_def()).clone();
    def.indexes.remove(1);
    assert_eq!(code(t.drop_index(Arc::new(def.clone()), 4)), ErrorCode::Internal);
    t.drop_index(Arc::new(def.clone()), 1).unwrap();
    assert_eq!(ids(t.index_eq(1, &[i(30)])), vec![0, 2]); // IDX_AGE_NAME moved to 1
    assert_eq!(code(t.drop_index(Arc::new(def), 0)), ErrorCode::Internal); // def not one fewer
                                                                           // Duplicate emails are fine now.
    t.insert(person(9, "x", 1, Some("a@x"))).unwrap();
}

#[test]
fn replace_def_maps_rows_atomically() {
    let mut t = people();
    t.delete(1).unwrap();
    let before = dump(&t);
    // ADD COLUMN SCORE FLOAT DEFAULT 1 and widen AGE to INTEGER.
    let mut def = (*people_def()).clone();
    def.columns[2].data_type = DataType::Integer;
    def.columns.push(col("SCORE", DataType::Float, None, true));
    let def = Arc::new(def);
    let mut calls = 0;
    let r = t.replace_def(def.clone(), |mut row| {
        calls += 1;
        if calls == 3 {
            joule_common::bail!(InvalidArgument, "stop");
        }
        row.push(i(1));
        Ok(row)
    });
    assert_eq!(message(r), "stop");
    assert_eq!(dump(&t), before);
    // Coercion to the new def fails (the closure forgot the new column).
    let r = t.replace_def(def.clone(), Ok);
    assert_eq!(code(r), ErrorCode::ColumnCountMismatch);
    // A conversion that makes keys collide.
    let mut collide = (*people_def()).clone();
    collide.columns[3].max_len = Some(1);
    collide.columns[3].data_type = DataType::Varchar;
    let r = t.replace_def(Arc::new(collide), |mut row| {
        row[3] = s(if row[3].is_null() { "n" } else { "y" });
        Ok(row)
    });
    assert_eq!(message(r), "duplicate key ('y') violates unique constraint UQ_EMAIL on table PEOPLE");
    assert_eq!(dump(&t), before);
    t.replace_def(def, |mut row| {
        row.push(i(1));
        Ok(row)
    })
    .unwrap();
    assert_eq!(t.scan().map(|(id, _)| id).collect::<Vec<_>>(), vec![0, 2, 3]); // ids kept
    assert!(matches!(t.get(0).unwrap()[4], Value::Float(f) if f == 1.0));
    assert_eq!(t.slab_state(), (4, vec![1]));
    assert_eq!(ids(t.index_eq(2, &[i(30)])), vec![0, 2]);
    assert!(t.insert(vec![i(20), NULL, i(1000), NULL, NULL]).is_ok()); // AGE is INTEGER now
}

#[test]
fn memory_grows_with_data() {
    let empty = Table::new(people_def()).memory_bytes();
    let t = people();
    assert!(t.memory_bytes() > empty);
    let mut st = Storage::new();
    st.put_table(t);
    assert!(st.memory_bytes() > empty);
}

#[test]
fn storage_holds_tables_by_id() {
    let mut st = Storage::new();
    st.create_table(people_def()).unwrap();
    let r = st.create_table(people_def());
    assert_eq!(message(r), "table id 1 of PEOPLE already has storage in this partition");
    assert_eq!(message(st.table(7).map(|_| ())), "table id 7 has no storage in this partition");
    assert_eq!(code(st.table_mut(7).map(|_| ())), ErrorCode::Internal);
    st.table_mut(1).unwrap().insert(person(1, "a", 1, None)).unwrap();
    assert_eq!(st.table(1).unwrap().len(), 1);
    st.put_table(nums());
    assert!(st.contains(2));
    assert_eq!(st.tables().map(|t| t.def().id).collect::<Vec<_>>(), vec![1, 2]);
    let dropped = st.drop_table(1).unwrap();
    assert_eq!(dropped.len(), 1);
    assert!(st.drop_table(1).is_none());
    assert!(st.put_table(dropped).is_none());
    assert!(st.put_table(Table::new(people_def())).is_some());
}

#[test]
fn rollback_restores_exact_state_at_each_mark() {
    let mut st = Storage::new();
    st.put_table(people());
    st.put_table(nums());
    let mut log = UndoLog::new();
    assert!(log.is_empty());
    let snap = |st: &Storage| (dump(st.table(1).unwrap()), dump(st.table(2).unwrap()));
    let at_start = snap(&st);

    // Statement 1: delete, update, insert.
    let t = st.table_mut(1).unwrap();
    let row = t.delete(1).unwrap();
    log.record(UndoOp::Deleted { table: 1, id: 1, row });
    let old = t.update(0, person(1, "ann", 50, Some("q@x"))).unwrap();
    log.record(UndoOp::Updated { table: 1, id: 0, old });
    let id = t.insert(person(8, "hal", 1, None)).unwrap();
    assert_eq!(id, 1); // reused
    log.record(UndoOp::Inserted { table: 1, id });
    let id = t.insert(person(9, "ike", 1, None)).unwrap();
    log.record(UndoOp::Inserted { table: 1, id });
    let mark = log.mark();
    let at_mark = snap(&st);

    // Statement 2: truncate one table, churn the other.
    let rows = st.table_mut(2).unwrap().truncate();
    log.record(UndoOp::Truncated { table: 2, rows });
    let t = st.table_mut(1).unwrap();
    for id in [4, 3, 2] {
        let row = t.delete(id).unwrap();
        log.record(UndoOp::Deleted { table: 1, id, row });
    }
    let id = t.insert(person(2, "bob", 25, None)).unwrap();
    log.record(UndoOp::Inserted { table: 1, id });
    assert_eq!(log.len(), mark + 5);

    log.rollback_to(mark, &mut st).unwrap();
    assert_eq!(log.len(), mark);
    assert_eq!(snap(&st), at_mark);
    log.rollback_to(mark + 10, &mut st).unwrap(); // a mark past the end: nothing to do
    log.rollback(&mut st).unwrap();
    assert_eq!(snap(&st), at_start);
    assert!(log.is_empty());

    // Commit forgets; a broken log reports an error but undoes the rest.
    log.record(UndoOp::Inserted { table: 1, id: 0 });
    log.clear();
    assert_eq!(log.len(), 0);
    let id = st.table_mut(1).unwrap().insert(person(30, "x", 1, None)).unwrap();
    log.record(UndoOp::Inserted { table: 1, id });
    log.record(UndoOp::Inserted { table: 99, id: 0 });
    let r = log.rollback(&mut st);
    assert_eq!(message(r), "table id 99 has no storage in this partition");
    assert_eq!(snap(&st), at_start);
}

#[test]
fn rows_sharing_a_key_share_a_token_and_are_tracked_one_by_one() {
    let mut t = Table::new(table_def(
        9,
        "T",
        vec![col("K", DataType::BigInt, None, false), col("N", DataType::Integer, None, true)],
        vec![],
    ));
    for n in 0..3000 {
        t.insert(vec![i(7 + n % 2), i(n)]).unwrap();
    }
    t.track_tokens(0);
    let token = |k: i64| joule_common::hashinator::token(&i(k)).unwrap().unwrap();
    let ids = |t: &Table, k: i64| t.ids_in_tokens(token(k), token(k)).unwrap();
    assert_eq!(ids(&t, 7).len(), 1500);
    // Delete every third row of key 7, move some rows of key 8 to key 7.
    for id in ids(&t, 7).into_iter().step_by(3) {
        t.delete(id).unwrap();
    }
    for id in ids(&t, 8).into_iter().take(100) {
        let n = t.get(id).unwrap()[1].clone();
        t.update(id, vec![i(7), n]).unwrap();
    }
    let want = |k: i64| -> Vec<RowId> { t.scan().filter(|(_, r)| r[0] == i(k)).map(|(id, _)| id).collect() };
    assert_eq!(ids(&t, 7), want(7));
    assert_eq!(ids(&t, 8), want(8));
    assert_eq!(ids(&t, 7).len(), 1000 + 100);
    assert!(t.memory_bytes() > 1100 * 16, "the index counts in the table's memory");
    t.untrack_tokens();
    assert_eq!(t.ids_in_tokens(i32::MIN, i32::MAX), None);
}
