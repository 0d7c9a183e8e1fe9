//! Property tests: random SQL never panics the engine or trips an internal
//! error, and a failing statement leaves no trace.
//!
//! Statements are generated from a small grammar over a fixed schema (so
//! that many of them are valid and reach the executor), mixed with token
//! soup (so that the parser wrapper and binder see garbage too).

use joule_common::Value;
use joule_engine::{Database, ExecResult};
use proptest::prelude::*;

fn setup() -> Database {
    let mut db = Database::new();
    db.execute(
        "CREATE TABLE t (id INTEGER NOT NULL PRIMARY KEY, a INTEGER, b VARCHAR(8), c FLOAT, d DECIMAL);
         CREATE INDEX t_a ON t (a);
         CREATE TABLE u (id BIGINT NOT NULL, x TINYINT, y VARCHAR(4 BYTES), PRIMARY KEY (id));
         CREATE VIEW v (a, n, s, lo, hi, nd) AS SELECT a, COUNT(*), SUM(c), MIN(b), MAX(d), COUNT(d) FROM t GROUP BY a;",
    )
    .unwrap();
    for i in 0..20 {
        db.execute(&format!("INSERT INTO t VALUES ({i}, {}, 'b{}', {}.5, {}.25)", i % 4, i % 3, i, i)).unwrap();
        db.execute(&format!("INSERT INTO u VALUES ({i}, {}, 'y{}')", i % 5, i % 2)).unwrap();
    }
    db
}

fn expr() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("id".to_string()),
        Just("a".to_string()),
        Just("b".to_string()),
        Just("c".to_string()),
        Just("d".to_string()),
        Just("NULL".to_string()),
        Just("t.a".to_string()),
        Just("u.x".to_string()),
        Just("'x'".to_string()),
        Just("''".to_string()),
        (-200i64..200).prop_map(|i| i.to_string()),
        Just("9223372036854775807".to_string()),
        Just("1.5".to_string()),
        Just("1e308".to_string()),
    ];
    leaf.prop_recursive(3, 24, 3, |inner| {
        prop_oneof![
            (
                inner.clone(),
                prop::sample::select(vec!["+", "-", "*", "/", "%", "=", "<", ">=", "<>", "AND", "OR", "||"]),
                inner.clone()
            )
                .prop_map(|(a, op, b)| format!("({a} {op} {b})")),
            inner.clone().prop_map(|a| format!("NOT {a}")),
            inner.clone().prop_map(|a| format!("{a} IS NULL")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("CASE WHEN {a} THEN {b} ELSE NULL END")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} IN ({b}, 1, NULL)")),
            (inner.clone(), inner.clone(), inner.clone()).prop_map(|(a, b, c)| format!("{a} BETWEEN {b} AND {c}")),
            inner.clone().prop_map(|a| format!("CAST({a} AS TINYINT)")),
            inner.clone().prop_map(|a| format!("ABS({a})")),
            inner.clone().prop_map(|a| format!("COALESCE({a}, 0)")),
            inner.clone().prop_map(|a| format!("(SELECT MAX(x) FROM u WHERE u.id = {a})")),
            inner.clone().prop_map(|a| format!("EXISTS (SELECT 1 FROM u WHERE x > {a})")),
            inner.clone().prop_map(|a| format!("(SELECT MIN(w.x) FROM u AS w WHERE w.id = {a})")),
            inner.clone().prop_map(|a| format!("EXISTS (SELECT 1 FROM u AS w WHERE w.x > {a})")),
            (inner.clone(), inner).prop_map(|(a, b)| format!("{a} LIKE {b}")),
        ]
    })
}

fn statement() -> impl Strategy<Value = String> {
    prop_oneof![
        (expr(), expr()).prop_map(|(e, w)| format!("SELECT {e} FROM t WHERE {w}")),
        (expr(), expr()).prop_map(|(e, g)| format!("SELECT {g}, COUNT(*), SUM({e}) FROM t GROUP BY {g}")),
        expr().prop_map(|e| format!("SELECT DISTINCT {e} FROM t ORDER BY 1 LIMIT 5")),
        (expr(), expr())
            .prop_map(|(h, o)| format!("SELECT a, COUNT(*), MAX(d) FROM t GROUP BY a HAVING {h} ORDER BY {o}")),
        (expr(), expr()).prop_map(|(e, w)| format!("SELECT {e} FROM t GROUP BY a, b HAVING COUNT(*) > 0 AND {w}")),
        (expr(), expr()).prop_map(|(e, w)| format!(
            "SELECT x.a, x.n FROM (SELECT a, COUNT(*) AS n FROM t WHERE {w} GROUP BY a) AS x WHERE {e}"
        )),
        (expr(), expr()).prop_map(|(e, w)| format!("SELECT * FROM v WHERE {e} ORDER BY a LIMIT {}", w.len() % 7)),
        (expr(), expr()).prop_map(|(e, w)| format!("SELECT t.id, u.y FROM t JOIN u ON t.id = u.id AND {w} WHERE {e}")),
        (expr(), expr()).prop_map(|(e, w)| format!("SELECT * FROM t LEFT JOIN u ON {e} WHERE {w}")),
        (expr(), expr()).prop_map(|(e, w)| format!("SELECT t.id, u.id FROM t, u WHERE {e} AND t.id = u.id OR {w}")),
        (expr(), expr())
            .prop_map(|(e, w)| format!("SELECT COUNT(*) FROM u RIGHT JOIN t ON u.id = t.a AND {e} WHERE {w}")),
        (expr(), expr()).prop_map(|(e, w)| format!("UPDATE t SET a = {e} WHERE {w}")),
        (expr(), expr()).prop_map(|(e, w)| format!("UPDATE t SET b = {e}, d = {w}")),
        expr().prop_map(|w| format!("DELETE FROM t WHERE {w}")),
        (expr(), expr()).prop_map(|(a, b)| format!("INSERT INTO t VALUES ({a}, {b}, 'z', 1.0, 2)")),
        (expr(), expr()).prop_map(|(a, b)| format!("INSERT INTO u (id, x) VALUES ({a}, {b})")),
        (expr(), expr()).prop_map(|(a, b)| format!("UPSERT INTO u VALUES ({a}, {b}, 'q')")),
        (expr(), expr()).prop_map(|(a, b)| format!("SELECT {a} FROM t UNION SELECT {b} FROM u")),
        prop::collection::vec(
            prop::sample::select(vec![
                "SELECT",
                "FROM",
                "WHERE",
                "t",
                "u",
                "(",
                ")",
                ",",
                "*",
                "?",
                "'",
                "1",
                "NULL",
                "GROUP BY",
                "ORDER",
                "JOIN",
                "ON",
                "IN",
                "=",
                "INSERT",
                "INTO",
                "VALUES",
                "UPDATE",
                "SET",
                "DELETE",
                "CREATE",
                "TABLE",
                "INDEX",
                "VIEW",
                "AS",
                "COUNT(*)",
                "SUM",
                "LIMIT",
                "-",
                "PARTITION",
                "UPSERT",
                "DROP",
                "ALTER",
            ]),
            0..16
        )
        .prop_map(|v| v.join(" ")),
    ]
}

fn snapshot(db: &mut Database) -> Vec<Vec<Value>> {
    let mut all = Vec::new();
    for q in ["SELECT * FROM t ORDER BY id", "SELECT * FROM u ORDER BY id", "SELECT * FROM v ORDER BY a"] {
        match db.execute(q).unwrap() {
            ExecResult::Rows { rows, .. } => all.extend(rows),
            other => panic!("unexpected {other:?}"),
        }
    }
    all
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    #[test]
    fn random_statements_never_panic_and_failures_leave_no_trace(stmts in prop::collection::vec(statement(), 1..6)) {
        let mut db = setup();
        for s in stmts {
            let before = snapshot(&mut db);
            if let Err(e) = db.execute(&s) {
                // Internal errors are bugs, never the statement's fault.
                prop_assert_ne!(e.code(), joule_common::ErrorCode::Internal, "{}: {}", s, e);
                prop_assert_eq!(snapshot(&mut db), before, "failed statement changed data: {}", s);
            }
        }
        // The materialized view always equals a fresh aggregate of its source.
        let fresh = db.execute("SELECT a, COUNT(*), SUM(c), MIN(b), MAX(d), COUNT(d) FROM t GROUP BY a ORDER BY a").unwrap();
        let view = db.execute("SELECT a, n, s, lo, hi, nd FROM v ORDER BY a").unwrap();
        match (fresh, view) {
            (ExecResult::Rows { rows: f, .. }, ExecResult::Rows { rows: v, .. }) => prop_assert_eq!(f, v),
            _ => prop_assert!(false),
        }
    }
}
