//! Property tests: random sequences of inserts, updates, deletes, truncates,
//! index lookups, savepoints and rollbacks against a trivially correct model
//! (a `BTreeMap<RowId, Row>` plus linear scans). After every step the table
//! must agree with the model — rows, ids, errors, every index lookup — and a
//! rollback must restore exactly the state (including future row ids) that
//! held at its savepoint.

use super::tests::{col, dump, idx, table_def, Dump};
use super::*;
use joule_common::{DataType, ErrorCode, Row, Value};
use joule_sql::catalog::IndexKind;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::ops::Bound;

const TABLE: TableId = 5;

/// P(A INTEGER PK, B SMALLINT, C VARCHAR(3)) with tree and hash, unique and
/// non-unique, contiguous and non-contiguous indexes.
fn def() -> Arc<TableDef> {
    table_def(
        TABLE,
        "P",
        vec![
            col("A", DataType::Integer, None, false),
            col("B", DataType::SmallInt, None, true),
            col("C", DataType::Varchar, Some(3), true),
        ],
        vec![
            idx("PK_P", &[0], true, IndexKind::Tree),
            idx("IX_B", &[1], false, IndexKind::Hash),
            idx("IX_BC", &[1, 2], false, IndexKind::Tree),
            idx("UQ_C", &[2], true, IndexKind::Hash),
            idx("UQ_CA", &[2, 0], true, IndexKind::Tree),
            idx("IX_CB", &[2, 1], false, IndexKind::Tree),
        ],
    )
}

/// A value for column `column` from a small domain (lots of duplicates).
fn domain(column: usize, seed: u8) -> Value {
    match column {
        0 => Value::Integer(i64::from(seed % 80)),
        1 => match seed % 5 {
            0 => Value::Null,
            n => Value::Integer(i64::from(n) - 1),
        },
        _ => match seed % 7 {
            0 => Value::Null,
            n => Value::String(char::from(b'a' + n - 1).to_string()),
        },
    }
}

fn value_a() -> impl Strategy<Value = Value> {
    prop_oneof![
        8 => (0i64..80).prop_map(Value::Integer),
        2 => (0i64..80).prop_map(|i| Value::String(i.to_string())),
        1 => Just(Value::Null),
    ]
}

fn value_b() -> impl Strategy<Value = Value> {
    prop_oneof![
        2 => Just(Value::Null),
        8 => (0i64..2).prop_map(Value::Integer),
        1 => Just(Value::Integer(40_000)),
    ]
}

fn value_c() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => Just(Value::Null),
        3 => (0u8..6).prop_map(|n| Value::String(char::from(b'a' + n).to_string())),
        1 => Just(Value::String("toolong".into())),
    ]
}

fn row() -> impl Strategy<Value = Row> {
    (value_a(), value_b(), value_c()).prop_map(|(a, b, c)| vec![a, b, c])
}

#[derive(Clone, Debug)]
enum Bnd {
    Unbounded,
    Included(u8),
    Excluded(u8),
}

#[derive(Clone, Debug)]
enum Op {
    Insert(Row),
    /// Update the n-th live row (modulo the count).
    Update(usize, Row),
    Delete(usize),
    Truncate,
    /// Index the next 1 to 8 row ids' tokens (when the run builds its token
    /// index a step at a time).
    TokenStep(u8),
    Lookup {
        index: usize,
        prefix: Vec<u8>,
        lower: Bnd,
        upper: Bnd,
        reverse: bool,
    },
    Mark,
    Rollback,
    Commit,
}

fn bound() -> impl Strategy<Value = Bnd> {
    prop_oneof![2 => Just(Bnd::Unbounded), 1 => any::<u8>().prop_map(Bnd::Included), 1 => any::<u8>().prop_map(Bnd::Excluded)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        30 => row().prop_map(Op::Insert),
        12 => (any::<usize>(), row()).prop_map(|(n, r)| Op::Update(n, r)),
        10 => any::<usize>().prop_map(Op::Delete),
        8 => (0usize..6, prop::collection::vec(any::<u8>(), 0..3), bound(), bound(), any::<bool>())
            .prop_map(|(index, prefix, lower, upper, reverse)| Op::Lookup { index, prefix, lower, upper, reverse }),
        3 => Just(Op::Mark),
        2 => Just(Op::Rollback),
        1 => Just(Op::Commit),
        1 => Just(Op::Truncate),
        4 => (1u8..=8).prop_map(Op::TokenStep),
    ]
}

type Model = BTreeMap<RowId, Row>;

fn key(row: &Row, cols: &[usize]) -> Vec<Value> {
    cols.iter().map(|&c| row[c].clone()).collect()
}

/// The error code the model expects for putting `row` at `me` (or a new id).
fn model_conflict(model: &Model, row: &Row, me: Option<RowId>) -> Option<ErrorCode> {
    let def = def();
    for d in def.indexes.iter().filter(|d| d.unique) {
        let k = key(row, &d.columns);
        if k.iter().any(Value::is_null) {
            continue;
        }
        if model.iter().any(|(id, r)| Some(*id) != me && key(r, &d.columns) == k) {
            return Some(ErrorCode::UniqueViolation);
        }
    }
    None
}

/// Lowest id not in use: the slab's reuse policy.
fn model_next_id(model: &Model) -> RowId {
    (0..).find(|id| !model.contains_key(id)).unwrap_or(0)
}

fn to_bound(b: &Bnd, column: usize) -> Bound<Value> {
    match b {
        Bnd::Unbounded => Bound::Unbounded,
        Bnd::Included(s) => Bound::Included(domain(column, *s)),
        Bnd::Excluded(s) => Bound::Excluded(domain(column, *s)),
    }
}

fn in_bounds(v: &Value, lower: &Bound<Value>, upper: &Bound<Value>) -> bool {
    let lo = match lower {
        Bound::Unbounded => true,
        Bound::Included(b) => v >= b,
        Bound::Excluded(b) => v > b,
    };
    let hi = match upper {
        Bound::Unbounded => true,
        Bound::Included(b) => v <= b,
        Bound::Excluded(b) => v < b,
    };
    lo && hi
}

/// `index_range` (or, for hash indexes, full-key `index_eq`) against the model.
fn check_lookup(t: &Table, model: &Model, index: usize, prefix: &[u8], lower: &Bnd, upper: &Bnd, reverse: bool) {
    let d = &t.def().indexes[index];
    let cols = &d.columns;
    let mut prefix: Vec<Value> = prefix.iter().zip(cols).map(|(s, &c)| domain(c, *s)).collect();
    let mut sorted: Vec<(Vec<Value>, RowId)> = model.iter().map(|(id, r)| (key(r, cols), *id)).collect();
    sorted.sort();
    if d.kind == IndexKind::Hash {
        while prefix.len() < cols.len() {
            prefix.push(domain(cols[prefix.len()], prefix.len() as u8));
        }
        let expect: Vec<RowId> = sorted.iter().filter(|(k, _)| *k == prefix).map(|(_, id)| *id).collect();
        assert_eq!(t.index_eq(index, &prefix).unwrap().collect::<Vec<_>>(), expect);
        assert_eq!(t.index_get_unique(index, &prefix), expect.first().copied());
        return;
    }
    let n = prefix.len();
    let (lo, hi) = if n < cols.len() {
        (to_bound(lower, cols[n]), to_bound(upper, cols[n]))
    } else {
        (Bound::Unbounded, Bound::Unbounded)
    };
    let bounded = !matches!((&lo, &hi), (Bound::Unbounded, Bound::Unbounded));
    let null_bound = [&lo, &hi].iter().any(|b| matches!(b, Bound::Included(v) | Bound::Excluded(v) if v.is_null()));
    let mut expect: Vec<RowId> = sorted
        .iter()
        .filter(|(k, _)| {
            k[..n] == prefix[..]
                && !null_bound
                && (n == k.len() || !(bounded && k[n].is_null()) && in_bounds(&k[n], &lo, &hi))
        })
        .map(|(_, id)| *id)
        .collect();
    if reverse {
        expect.reverse();
    }
    let got: Vec<RowId> = t.index_range(index, &prefix, lo.as_ref(), hi.as_ref(), reverse).unwrap().collect();
    assert_eq!(got, expect, "index {index} prefix {prefix:?} {lo:?}..{hi:?} reverse {reverse}");
    if !bounded {
        let mut eq = t.index_eq(index, &prefix).unwrap().collect::<Vec<_>>();
        if reverse {
            eq.reverse();
        }
        assert_eq!(eq, expect);
    }
}

/// Every row and every index agrees with the model.
fn check_all(t: &Table, model: &Model) {
    assert_eq!(t.len(), model.len());
    // Row ids by the token of A, once the index is complete: all of them,
    // and those of one slice of the ring.
    let token = |r: &Row| joule_common::hashinator::token(&r[0]).unwrap().unwrap_or(i32::MIN);
    if let Some(all) = t.ids_in_tokens(i32::MIN, i32::MAX) {
        assert_eq!(all, model.keys().copied().collect::<Vec<_>>());
        let slice: Vec<RowId> =
            model.iter().filter(|(_, r)| (-1 << 30..=1 << 29).contains(&token(r))).map(|(id, _)| *id).collect();
        assert_eq!(t.ids_in_tokens(-1 << 30, 1 << 29).unwrap(), slice);
    }
    assert!(t.scan().map(|(id, r)| (id, r.clone())).eq(model.iter().map(|(id, r)| (*id, r.clone()))));
    for (n, d) in t.def().indexes.iter().enumerate() {
        let mut groups: BTreeMap<Vec<Value>, Vec<RowId>> = BTreeMap::new();
        for (id, r) in model {
            groups.entry(key(r, &d.columns)).or_default().push(*id);
        }
        assert_eq!(t.index_key_count(n).unwrap(), groups.len());
        for (k, ids) in &groups {
            assert_eq!(&t.index_eq(n, k).unwrap().collect::<Vec<_>>(), ids);
            assert_eq!(t.index_get_unique(n, k), ids.first().copied());
        }
        if d.kind == IndexKind::Tree {
            let all: Vec<RowId> = groups.values().flatten().copied().collect();
            assert_eq!(t.index_all(n, false).unwrap().collect::<Vec<_>>(), all);
            assert!(t.index_all(n, true).unwrap().eq(all.into_iter().rev()));
        }
    }
}

/// With `stepped`, the token index is built by the run's `TokenStep`s while
/// the rows change (else it is tracked from the start and steps do nothing).
fn run(ops: Vec<Op>, stepped: bool) {
    let mut storage = Storage::new();
    storage.create_table(def()).unwrap();
    if !stepped {
        storage.table_mut(TABLE).unwrap().track_tokens(0);
        assert!(storage.table(TABLE).unwrap().ids_in_tokens(0, 0).is_some());
    }
    let mut model = Model::new();
    let mut log = UndoLog::new();
    // Savepoints: (log mark, model, full dump); the bottom one is the last commit.
    let snapshot = |storage: &Storage, model: &Model, mark: usize| -> (usize, Model, Dump) {
        (mark, model.clone(), dump(storage.table(TABLE).unwrap()))
    };
    let mut marks = vec![snapshot(&storage, &model, 0)];
    for (step, op) in ops.into_iter().enumerate() {
        let t = storage.table_mut(TABLE).unwrap();
        match op {
            Op::Insert(row) => {
                let expect = t.coerce_row(row.clone()).map_err(|e| e.code()).and_then(|r| {
                    match model_conflict(&model, &r, None) {
                        Some(code) => Err(code),
                        None => Ok(r),
                    }
                });
                match (t.insert(row), expect) {
                    (Ok(id), Ok(r)) => {
                        assert_eq!(id, model_next_id(&model));
                        model.insert(id, r);
                        log.record(UndoOp::Inserted { table: TABLE, id });
                    }
                    (Err(e), Err(code)) => assert_eq!(e.code(), code, "{e}"),
                    (got, expect) => panic!("insert: got {got:?}, expected {expect:?}"),
                }
            }
            Op::Update(n, row) => {
                let Some(&id) = model.keys().nth(n % model.len().max(1)) else { continue };
                let expect = t.coerce_row(row.clone()).map_err(|e| e.code()).and_then(|r| {
                    match model_conflict(&model, &r, Some(id)) {
                        Some(code) => Err(code),
                        None => Ok(r),
                    }
                });
                match (t.update(id, row), expect) {
                    (Ok(old), Ok(r)) => {
                        assert_eq!(model.insert(id, r), Some(old.clone()));
                        log.record(UndoOp::Updated { table: TABLE, id, old });
                    }
                    (Err(e), Err(code)) => assert_eq!(e.code(), code, "{e}"),
                    (got, expect) => panic!("update: got {got:?}, expected {expect:?}"),
                }
            }
            Op::Delete(n) => {
                let Some(&id) = model.keys().nth(n % model.len().max(1)) else { continue };
                let row = t.delete(id).unwrap();
                assert_eq!(model.remove(&id), Some(row.clone()));
                log.record(UndoOp::Deleted { table: TABLE, id, row });
            }
            Op::Truncate => {
                let rows = t.truncate();
                assert!(rows.iter().map(|(id, r)| (id, r)).eq(model.iter()));
                model.clear();
                log.record(UndoOp::Truncated { table: TABLE, rows });
            }
            Op::TokenStep(n) => {
                let left = t.track_tokens_step(0, usize::from(n));
                assert_eq!(left == 0, t.ids_in_tokens(0, 0).is_some(), "complete exactly when nothing is left");
            }
            Op::Lookup { index, prefix, lower, upper, reverse } => {
                check_lookup(t, &model, index, &prefix, &lower, &upper, reverse);
            }
            Op::Mark => marks.push(snapshot(&storage, &model, log.mark())),
            Op::Rollback => {
                let (mark, saved_model, saved_dump) =
                    if marks.len() > 1 { marks.pop().unwrap() } else { marks[0].clone() };
                log.rollback_to(mark, &mut storage).unwrap();
                assert_eq!(log.len(), mark);
                model = saved_model;
                let t = storage.table(TABLE).unwrap();
                assert_eq!(dump(t), saved_dump);
                check_all(t, &model);
            }
            Op::Commit => {
                log.clear();
                marks = vec![snapshot(&storage, &model, 0)];
            }
        }
        if step % 16 == 0 {
            check_all(storage.table(TABLE).unwrap(), &model);
        }
    }
    check_all(storage.table(TABLE).unwrap(), &model);
    // Finishing the index (built a step at a time, or complete already)
    // makes it answer, and agree with the rows.
    assert_eq!(storage.table_mut(TABLE).unwrap().track_tokens_step(0, usize::MAX), 0);
    assert!(storage.table(TABLE).unwrap().ids_in_tokens(0, 0).is_some());
    check_all(storage.table(TABLE).unwrap(), &model);
    // The token index built in bulk over the rows there are now agrees
    // with the one kept row by row since the start.
    storage.table_mut(TABLE).unwrap().untrack_tokens();
    storage.table_mut(TABLE).unwrap().track_tokens(0);
    check_all(storage.table(TABLE).unwrap(), &model);
    // Rolling everything back returns to the last commit.
    let (_, saved_model, saved_dump) = marks.swap_remove(0);
    log.rollback(&mut storage).unwrap();
    assert_eq!(dump(storage.table(TABLE).unwrap()), saved_dump);
    check_all(storage.table(TABLE).unwrap(), &saved_model);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn table_agrees_with_model_and_rollback_is_exact(ops in prop::collection::vec(op(), 1..400), stepped: bool) {
        run(ops, stepped);
    }
}

/// Enough duplicates of one key to push postings through every shape, then
/// back, with a rollback in between.
#[test]
fn many_duplicates_of_one_key() {
    let mut ops: Vec<Op> =
        (0..80).map(|a| Op::Insert(vec![Value::Integer(a), Value::Integer(a % 2), Value::Null])).collect();
    ops.push(Op::Mark);
    ops.extend((0..70).map(|n| Op::Delete(n * 7)));
    ops.push(Op::Lookup { index: 2, prefix: vec![2], lower: Bnd::Unbounded, upper: Bnd::Unbounded, reverse: true });
    ops.push(Op::Rollback);
    ops.extend(
        (0..60).map(|n| Op::Update(n * 3, vec![Value::Integer(100 + n as i64), Value::Integer(1), Value::Null])),
    );
    ops.extend((0..80).map(|_| Op::Delete(0)));
    run(ops, false);
}
