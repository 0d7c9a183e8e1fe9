//! End-to-end behaviour of the in-process database: schema, constraints,
//! errors with their codes, materialized views, namespaces, UPSERT, ALTER,
//! prepared statements, transactions and partitioning analysis.

use joule_common::{ErrorCode, Value};
use joule_engine::{Database, ExecResult};
use joule_sql::plan::Partitioning;
use joule_sql::planner::PlannedKind;

fn rows(db: &mut Database, sql: &str) -> Vec<Vec<Value>> {
    match db.execute(sql).unwrap_or_else(|e| panic!("{sql}: {e}")) {
        ExecResult::Rows { rows, .. } => rows,
        other => panic!("{sql}: expected rows, got {other:?}"),
    }
}

fn code(db: &mut Database, sql: &str) -> ErrorCode {
    match db.execute(sql) {
        Err(e) => e.code(),
        Ok(r) => panic!("{sql}: expected an error, got {r:?}"),
    }
}

fn int(i: i64) -> Value {
    Value::Integer(i)
}

fn s(x: &str) -> Value {
    Value::String(x.into())
}

#[test]
fn constraints_give_clear_errors_and_leave_no_trace() {
    let mut db = Database::new();
    db.execute("CREATE TABLE p (id INTEGER NOT NULL PRIMARY KEY, name VARCHAR(5) NOT NULL, age TINYINT)").unwrap();
    db.execute("INSERT INTO p VALUES (1, 'ann', 30)").unwrap();
    let e = db.execute("INSERT INTO p VALUES (1, 'bob', 40)").unwrap_err();
    assert_eq!(e.code(), ErrorCode::UniqueViolation);
    assert!(e.message().contains("PK_P") && e.message().contains("P"), "{e}");
    let e = db.execute("INSERT INTO p VALUES (2, 'abcdef', 1)").unwrap_err();
    assert_eq!(e.code(), ErrorCode::StringTooLong);
    assert!(e.message().contains("NAME") && e.message().contains("VARCHAR(5)"), "{e}");
    assert_eq!(code(&mut db, "INSERT INTO p VALUES (3, NULL, 1)"), ErrorCode::NotNullViolation);
    assert_eq!(code(&mut db, "INSERT INTO p VALUES (4, 'x', 128)"), ErrorCode::NumericOutOfRange);
    assert_eq!(code(&mut db, "INSERT INTO p VALUES (5, 'x', -128)"), ErrorCode::NumericOutOfRange);
    // A multi-row insert failing on its last row inserts nothing.
    assert_eq!(
        code(&mut db, "INSERT INTO p VALUES (6, 'a', 1), (7, 'b', 2), (1, 'dup', 3)"),
        ErrorCode::UniqueViolation
    );
    assert_eq!(rows(&mut db, "SELECT COUNT(*) FROM p"), vec![vec![int(1)]]);
    // An update that fails halfway changes nothing.
    db.execute("INSERT INTO p VALUES (2, 'bo', 1), (5, 'cy', 2)").unwrap();
    // Row 1 moves to 10 first, then row 2 collides with row 5.
    assert_eq!(code(&mut db, "UPDATE p SET id = CASE WHEN id = 1 THEN 10 ELSE id + 3 END"), ErrorCode::UniqueViolation);
    assert_eq!(rows(&mut db, "SELECT id FROM p ORDER BY id"), vec![vec![int(1)], vec![int(2)], vec![int(5)]]);
}

#[test]
fn errors_have_codes() {
    let mut db = Database::new();
    db.execute("CREATE TABLE t (a INTEGER, b VARCHAR(3))").unwrap();
    assert_eq!(code(&mut db, "SELEC 1"), ErrorCode::SyntaxError);
    assert_eq!(code(&mut db, "SELECT * FROM nope"), ErrorCode::UndefinedTable);
    assert_eq!(code(&mut db, "SELECT zz FROM t"), ErrorCode::UndefinedColumn);
    assert_eq!(code(&mut db, "SELECT nosuch(a) FROM t"), ErrorCode::UndefinedFunction);
    assert_eq!(code(&mut db, "SELECT a, COUNT(*) FROM t"), ErrorCode::GroupingError);
    assert_eq!(code(&mut db, "SELECT a FROM t WHERE SUM(a) > 1"), ErrorCode::AggregateMisuse);
    assert_eq!(code(&mut db, "SELECT 1 / 0"), ErrorCode::DivisionByZero);
    assert_eq!(code(&mut db, "SELECT 9223372036854775807 + 1"), ErrorCode::NumericOutOfRange);
    assert_eq!(code(&mut db, "CREATE TABLE t (x INTEGER)"), ErrorCode::DuplicateObject);
    assert_eq!(code(&mut db, "SELECT a FROM t ORDER BY 3"), ErrorCode::InvalidColumnReference);
    db.execute("INSERT INTO t VALUES (1, 'a'), (2, 'b')").unwrap();
    assert_eq!(code(&mut db, "SELECT (SELECT a FROM t)"), ErrorCode::CardinalityViolation);
    assert_eq!(code(&mut db, "INSERT INTO t VALUES (1)"), ErrorCode::ColumnCountMismatch);
    assert_eq!(code(&mut db, "SELECT * FROM t WHERE a = ?"), ErrorCode::WrongParameterCount);
}

#[test]
fn materialized_view_follows_every_write_and_rollback() {
    let mut db = Database::new();
    db.execute(
        "CREATE TABLE votes (phone BIGINT NOT NULL, state VARCHAR(2) NOT NULL, contestant INTEGER NOT NULL, amount INTEGER);
         CREATE VIEW by_state (state, contestant, votes, total, low, high) AS
           SELECT state, contestant, COUNT(*), SUM(amount), MIN(amount), MAX(amount) FROM votes GROUP BY state, contestant;",
    )
    .unwrap();
    db.execute("INSERT INTO votes VALUES (1, 'MA', 1, 5), (2, 'MA', 1, 7), (3, 'NY', 2, NULL)").unwrap();
    let expect = |db: &mut Database| rows(db, "SELECT * FROM by_state ORDER BY state, contestant");
    assert_eq!(
        expect(&mut db),
        vec![
            vec![s("MA"), int(1), int(2), int(12), int(5), int(7)],
            vec![s("NY"), int(2), int(1), Value::Null, Value::Null, Value::Null]
        ]
    );
    db.execute("DELETE FROM votes WHERE phone = 1").unwrap();
    assert_eq!(expect(&mut db)[0], vec![s("MA"), int(1), int(1), int(7), int(7), int(7)]);
    db.execute("UPDATE votes SET state = 'NY', contestant = 2, amount = 3 WHERE phone = 2").unwrap();
    assert_eq!(expect(&mut db), vec![vec![s("NY"), int(2), int(2), int(3), int(3), int(3)]]);
    // A failing statement rolls the view back with the table.
    db.execute("CREATE UNIQUE INDEX votes_phone ON votes (phone)").unwrap();
    assert_eq!(code(&mut db, "INSERT INTO votes VALUES (9, 'CA', 3, 1), (2, 'CA', 3, 1)"), ErrorCode::UniqueViolation);
    assert_eq!(expect(&mut db).len(), 1);
    // The view is a table: indexable and queryable with predicates.
    db.execute("CREATE INDEX by_state_votes ON by_state (votes)").unwrap();
    assert_eq!(rows(&mut db, "SELECT state FROM by_state WHERE votes = 2"), vec![vec![s("NY")]]);
    assert_eq!(code(&mut db, "INSERT INTO by_state VALUES ('X', 1, 1, 1, 1, 1)"), ErrorCode::FeatureNotSupported);
    assert_eq!(code(&mut db, "DROP TABLE votes"), ErrorCode::DependentObjectsExist);
    db.execute("DROP TABLE votes CASCADE").unwrap();
    assert_eq!(code(&mut db, "SELECT * FROM by_state"), ErrorCode::UndefinedTable);
}

/// A DELETE whose view maintenance fails (the group's SUM, folded again
/// without the row, no longer fits a BIGINT) leaves the row where it was.
#[test]
fn a_delete_that_its_views_refuse_keeps_the_row() {
    let mut db = Database::new();
    db.execute(
        "CREATE TABLE t (id INTEGER NOT NULL, g INTEGER NOT NULL, v BIGINT);
         CREATE VIEW sums (g, n, total) AS SELECT g, COUNT(*), SUM(v) FROM t GROUP BY g;",
    )
    .unwrap();
    db.execute(&format!("INSERT INTO t VALUES (1, 0, {}), (2, 0, -1), (3, 0, 1)", i64::MAX)).unwrap();
    let err = db.execute("DELETE FROM t WHERE id = 2").unwrap_err();
    assert_ne!(err.code(), ErrorCode::Internal, "{err}");
    assert_eq!(rows(&mut db, "SELECT COUNT(*) FROM t"), vec![vec![int(3)]]);
    assert_eq!(rows(&mut db, "SELECT id FROM t WHERE id = 2"), vec![vec![int(2)]]);
    assert_eq!(rows(&mut db, "SELECT n, total FROM sums"), vec![vec![int(3), int(i64::MAX)]]);
}

#[test]
fn view_created_on_filled_table_is_populated() {
    let mut db = Database::new();
    db.execute("CREATE TABLE t (g INTEGER, v INTEGER); INSERT INTO t VALUES (1, 1), (1, 2), (2, 5)").unwrap();
    db.execute("CREATE VIEW s AS SELECT g, COUNT(*) AS n, SUM(v) AS total FROM t GROUP BY g").unwrap();
    assert_eq!(
        rows(&mut db, "SELECT * FROM s ORDER BY g"),
        vec![vec![int(1), int(2), int(3)], vec![int(2), int(1), int(5)]]
    );
    assert_eq!(code(&mut db, "CREATE VIEW bad AS SELECT g, SUM(v) FROM t GROUP BY g"), ErrorCode::FeatureNotSupported);
}

#[test]
fn databases_are_namespaces() {
    let mut db = Database::new();
    db.execute("CREATE DATABASE sales; CREATE TABLE sales.orders (id INTEGER PRIMARY KEY, amount INTEGER)").unwrap();
    db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, note VARCHAR(10))").unwrap();
    db.execute("INSERT INTO sales.orders VALUES (1, 100); INSERT INTO orders VALUES (1, 'default')").unwrap();
    assert_eq!(rows(&mut db, "SELECT amount FROM sales.orders"), vec![vec![int(100)]]);
    assert_eq!(rows(&mut db, "SELECT note FROM orders"), vec![vec![s("default")]]);
    assert_eq!(rows(&mut db, "SELECT * FROM orders"), vec![vec![int(1), s("default")]]);
    db.execute("USE sales").unwrap();
    // The same text now means the other database's table.
    assert_eq!(rows(&mut db, "SELECT * FROM orders"), vec![vec![int(1), int(100)]]);
    assert_eq!(rows(&mut db, "SELECT amount FROM orders"), vec![vec![int(100)]]);
    assert_eq!(
        rows(&mut db, "SELECT o.amount, d.note FROM orders o JOIN default.orders d ON o.id = d.id"),
        vec![vec![int(100), s("default")]]
    );
    db.execute("USE default; DROP DATABASE sales").unwrap();
    assert_eq!(code(&mut db, "SELECT * FROM sales.orders"), ErrorCode::UndefinedObject);
    assert_eq!(code(&mut db, "DROP DATABASE default"), ErrorCode::InvalidSchemaDefinition);
}

#[test]
fn upsert_replaces_listed_columns_by_primary_key() {
    let mut db = Database::new();
    db.execute("CREATE TABLE kv (k VARCHAR(10) NOT NULL PRIMARY KEY, v INTEGER, w INTEGER DEFAULT 7)").unwrap();
    db.execute("UPSERT INTO kv VALUES ('a', 1, 1)").unwrap();
    db.execute("UPSERT INTO kv (k, v) VALUES ('a', 2)").unwrap();
    db.execute("UPSERT INTO kv (k, v) VALUES ('b', 3)").unwrap();
    assert_eq!(
        rows(&mut db, "SELECT * FROM kv ORDER BY k"),
        vec![vec![s("a"), int(2), int(1)], vec![s("b"), int(3), int(7)]]
    );
    db.execute("CREATE TABLE nopk (a INTEGER)").unwrap();
    assert_eq!(code(&mut db, "UPSERT INTO nopk VALUES (1)"), ErrorCode::InvalidSchemaDefinition);
}

#[test]
fn alter_table_keeps_data_and_checks_it() {
    let mut db = Database::new();
    db.execute("CREATE TABLE t (id INTEGER NOT NULL PRIMARY KEY, name VARCHAR(10)); INSERT INTO t VALUES (1, 'abc'), (2, NULL)")
        .unwrap();
    db.execute("ALTER TABLE t ADD COLUMN score INTEGER DEFAULT 5 NOT NULL").unwrap();
    assert_eq!(rows(&mut db, "SELECT score FROM t ORDER BY id"), vec![vec![int(5)], vec![int(5)]]);
    // Making NAME NOT NULL fails on the NULL row and changes nothing.
    assert_eq!(code(&mut db, "ALTER TABLE t ALTER COLUMN name SET NOT NULL"), ErrorCode::NotNullViolation);
    assert_eq!(code(&mut db, "ALTER TABLE t ALTER COLUMN name SET DATA TYPE VARCHAR(2)"), ErrorCode::StringTooLong);
    db.execute("ALTER TABLE t ALTER COLUMN name SET DATA TYPE VARCHAR(20)").unwrap();
    db.execute("ALTER TABLE t DROP COLUMN name").unwrap();
    assert_eq!(rows(&mut db, "SELECT * FROM t ORDER BY id"), vec![vec![int(1), int(5)], vec![int(2), int(5)]]);
    assert_eq!(code(&mut db, "ALTER TABLE t DROP COLUMN id"), ErrorCode::InvalidSchemaDefinition);
    db.execute("INSERT INTO t VALUES (3, 5)").unwrap();
    assert_eq!(code(&mut db, "ALTER TABLE t ADD CONSTRAINT u_score UNIQUE (score)"), ErrorCode::UniqueViolation);
    assert_eq!(code(&mut db, "CREATE UNIQUE INDEX t_score ON t (score)"), ErrorCode::UniqueViolation);
    db.execute("CREATE INDEX t_score ON t (score)").unwrap();
    assert_eq!(rows(&mut db, "SELECT COUNT(*) FROM t WHERE score = 5"), vec![vec![int(3)]]);
}

#[test]
fn prepared_statements_take_parameters() {
    let mut db = Database::new();
    db.execute("CREATE TABLE a (id BIGINT NOT NULL PRIMARY KEY, bal BIGINT)").unwrap();
    let ins = db.prepare("INSERT INTO a VALUES (?, ?)").unwrap();
    assert_eq!(ins.param_count(), 2);
    for i in 0..100 {
        db.execute_prepared(&ins, &[int(i), int(i * 10)]).unwrap();
    }
    let get = db.prepare("SELECT bal FROM a WHERE id = ?").unwrap();
    match db.execute_prepared(&get, &[int(42)]).unwrap() {
        ExecResult::Rows { rows, .. } => assert_eq!(rows, vec![vec![int(420)]]),
        other => panic!("{other:?}"),
    }
    match db.execute_prepared(&get, &[Value::Null]).unwrap() {
        ExecResult::Rows { rows, .. } => assert!(rows.is_empty()),
        other => panic!("{other:?}"),
    }
    assert_eq!(db.execute_prepared(&get, &[]).unwrap_err().code(), ErrorCode::WrongParameterCount);
    let range = db.prepare("SELECT id FROM a WHERE id >= ? AND id < ? ORDER BY id DESC LIMIT ?").unwrap();
    match db.execute_prepared(&range, &[int(10), int(20), int(3)]).unwrap() {
        ExecResult::Rows { rows, .. } => assert_eq!(rows, vec![vec![int(19)], vec![int(18)], vec![int(17)]]),
        other => panic!("{other:?}"),
    }
    // A schema change invalidates prepared plans with a clear error.
    db.execute("CREATE INDEX a_bal ON a (bal)").unwrap();
    assert_eq!(db.execute_prepared(&get, &[int(1)]).unwrap_err().code(), ErrorCode::SchemaChangeConflict);
}

#[test]
fn array_parameters_stand_for_in_lists() {
    let mut db = Database::new();
    db.execute("CREATE TABLE a (id BIGINT NOT NULL PRIMARY KEY, name VARCHAR(10))").unwrap();
    for i in 0..20 {
        db.execute(&format!("INSERT INTO a VALUES ({i}, 'n{i}')")).unwrap();
    }
    let array = |items: Vec<Value>| Value::Array(items.into());
    let query = |db: &mut Database, sql: &str, params: &[Value]| -> joule_common::Result<Vec<Vec<Value>>> {
        let stmt = db.prepare(sql)?;
        match db.execute_prepared(&stmt, params)? {
            ExecResult::Rows { rows, .. } => Ok(rows),
            other => panic!("{other:?}"),
        }
    };
    // Through the primary-key index and through a scan (on name).
    let by_id = "SELECT id FROM a WHERE id IN ? ORDER BY id";
    let got = query(&mut db, by_id, &[array(vec![int(3), int(17), int(3), int(99), Value::Null])]).unwrap();
    assert_eq!(got, vec![vec![int(3)], vec![int(17)]]);
    assert!(query(&mut db, by_id, &[array(vec![])]).unwrap().is_empty());
    let by_name = "SELECT id FROM a WHERE name IN ? ORDER BY id";
    assert_eq!(query(&mut db, by_name, &[array(vec![s("n5"), s("n6")])]).unwrap(), vec![vec![int(5)], vec![int(6)]]);
    // NOT IN over an array with a NULL is unknown for every row, as SQL says.
    let not_in = "SELECT COUNT(*) FROM a WHERE id NOT IN ?";
    assert_eq!(query(&mut db, not_in, &[array(vec![int(1), int(2)])]).unwrap(), vec![vec![int(18)]]);
    assert_eq!(query(&mut db, not_in, &[array(vec![int(1), Value::Null])]).unwrap(), vec![vec![int(0)]]);
    // A scalar parameter still works in the `IN ?` spelling.
    assert_eq!(query(&mut db, by_id, &[int(4)]).unwrap(), vec![vec![int(4)]]);
    // An array where a single value belongs is a type error, not a panic.
    let err = query(&mut db, "SELECT id FROM a WHERE id = ?", &[array(vec![int(1)])]).unwrap_err();
    assert_eq!(err.code(), ErrorCode::DatatypeMismatch, "{err}");
    let err = query(&mut db, "INSERT INTO a VALUES (?, 'x')", &[array(vec![int(1)])]).unwrap_err();
    assert_eq!(err.code(), ErrorCode::DatatypeMismatch, "{err}");
    let err = query(&mut db, by_name, &[array(vec![array(vec![])])]).unwrap_err();
    assert_eq!(err.code(), ErrorCode::DatatypeMismatch, "{err}");
}

#[test]
fn transaction_rollback_restores_everything() {
    let mut db = Database::new();
    db.execute("CREATE TABLE t (id INTEGER NOT NULL PRIMARY KEY, v INTEGER); INSERT INTO t VALUES (1, 1), (2, 2)")
        .unwrap();
    db.begin();
    db.execute("INSERT INTO t VALUES (3, 3)").unwrap();
    db.execute("UPDATE t SET v = v * 100").unwrap();
    db.execute("DELETE FROM t WHERE id = 1").unwrap();
    db.rollback().unwrap();
    assert_eq!(rows(&mut db, "SELECT * FROM t ORDER BY id"), vec![vec![int(1), int(1)], vec![int(2), int(2)]]);
    db.begin();
    db.execute("TRUNCATE TABLE t").unwrap();
    db.rollback().unwrap();
    assert_eq!(rows(&mut db, "SELECT COUNT(*) FROM t"), vec![vec![int(2)]]);
}

#[test]
fn partitioning_is_detected() {
    let mut db = Database::new();
    db.execute(
        "CREATE TABLE acct (id BIGINT NOT NULL PRIMARY KEY, owner VARCHAR(20) NOT NULL, bal BIGINT);
         PARTITION TABLE acct ON COLUMN id;
         CREATE TABLE region (code INTEGER NOT NULL PRIMARY KEY, name VARCHAR(20));",
    )
    .unwrap();
    let part = |db: &mut Database, sql: &str| db.prepare(sql).unwrap().planned().partitioning.clone();
    assert!(matches!(part(&mut db, "SELECT bal FROM acct WHERE id = ?"), Partitioning::Single(..)));
    assert!(matches!(part(&mut db, "UPDATE acct SET bal = bal + 1 WHERE id = 5"), Partitioning::Single(..)));
    assert!(matches!(part(&mut db, "INSERT INTO acct VALUES (?, 'x', 0)"), Partitioning::Single(..)));
    assert_eq!(part(&mut db, "SELECT SUM(bal) FROM acct"), Partitioning::Multi);
    assert_eq!(part(&mut db, "SELECT * FROM acct WHERE id = 1 OR id = 2"), Partitioning::Multi);
    assert_eq!(part(&mut db, "SELECT * FROM region"), Partitioning::Replicated);
    assert!(matches!(
        part(&mut db, "SELECT a.bal, r.name FROM acct a JOIN region r ON r.code = a.bal WHERE a.id = ?"),
        Partitioning::Single(..)
    ));
    assert_eq!(code(&mut db, "PARTITION TABLE region ON COLUMN name"), ErrorCode::InvalidSchemaDefinition);
    db.execute("INSERT INTO region VALUES (1, 'x')").unwrap();
    assert_eq!(code(&mut db, "PARTITION TABLE region ON COLUMN code"), ErrorCode::SchemaChangeConflict);
}

#[test]
fn explain_shows_index_choices() {
    let mut db = Database::new();
    db.execute(
        "CREATE TABLE t (id INTEGER NOT NULL PRIMARY KEY, a INTEGER, b INTEGER);
         CREATE INDEX t_a ON t (a);
         CREATE TABLE u (tid INTEGER, c INTEGER);",
    )
    .unwrap();
    let plan = |db: &mut Database, sql: &str| -> String {
        rows(db, &format!("EXPLAIN {sql}")).into_iter().map(|r| r[0].to_string()).collect::<Vec<_>>().join("\n")
    };
    assert!(plan(&mut db, "SELECT * FROM t WHERE id = 3").contains("INDEX SCAN T USING PK_T = (3)"));
    assert!(plan(&mut db, "SELECT * FROM t WHERE a > 3 AND a <= 9").contains("INDEX SCAN T USING T_A > 3 AND <= 9"));
    assert!(plan(&mut db, "SELECT * FROM t WHERE a IN (1, 2)").contains("USING T_A IN (1, 2)"));
    assert!(plan(&mut db, "SELECT * FROM t WHERE b = 1").contains("SEQUENTIAL SCAN T FILTER"));
    assert!(
        plan(&mut db, "SELECT * FROM u JOIN t ON t.id = u.tid").contains("INDEX NESTED LOOP Inner JOIN T USING PK_T")
    );
    assert!(plan(&mut db, "SELECT * FROM t JOIN u ON t.b = u.c").contains("HASH Inner JOIN"));
}

#[test]
fn prepared_plans_are_reused_and_ad_hoc_plans_cached() {
    let mut db = Database::new();
    db.execute("CREATE TABLE t (a INTEGER)").unwrap();
    let p = db.prepare("SELECT a FROM t").unwrap();
    assert!(matches!(p.planned().kind, PlannedKind::Query(_)));
    for _ in 0..3 {
        db.execute("INSERT INTO t VALUES (1)").unwrap();
    }
    assert_eq!(rows(&mut db, "SELECT COUNT(*) FROM t"), vec![vec![int(3)]]);
}

#[test]
fn join_order_starts_from_the_pinned_table() {
    let mut db = Database::new();
    db.execute(
        "CREATE TABLE c (id INTEGER NOT NULL PRIMARY KEY, name VARCHAR(10));
         CREATE TABLE o (id INTEGER NOT NULL PRIMARY KEY, cid INTEGER, total INTEGER);
         CREATE INDEX o_cid ON o (cid);
         CREATE TABLE l (oid INTEGER, qty INTEGER);
         CREATE INDEX l_oid ON l (oid);
         INSERT INTO c VALUES (1, 'ann'), (2, 'bob');
         INSERT INTO o VALUES (10, 1, 5), (11, 2, 7), (12, 1, 9);
         INSERT INTO l VALUES (10, 1), (10, 2), (11, 3), (12, 4);",
    )
    .unwrap();
    // Written with the big tables first; the plan must drive from C (pinned
    // by its primary key) and reach O and L through their indexes.
    let sql =
        "SELECT c.name, o.id, l.qty FROM l, o, c WHERE l.oid = o.id AND o.cid = c.id AND c.id = 1 ORDER BY o.id, l.qty";
    let plan: Vec<String> = rows(&mut db, &format!("EXPLAIN {sql}")).into_iter().map(|r| r[0].to_string()).collect();
    let text = plan.join("\n");
    assert!(text.contains("INDEX SCAN C USING PK_C = (1)"), "{text}");
    assert!(text.contains("INDEX NESTED LOOP Inner JOIN O USING O_CID"), "{text}");
    assert!(text.contains("INDEX NESTED LOOP Inner JOIN L USING L_OID"), "{text}");
    assert_eq!(
        rows(&mut db, sql),
        vec![vec![s("ann"), int(10), int(1)], vec![s("ann"), int(10), int(2)], vec![s("ann"), int(12), int(4)]]
    );
}

#[test]
fn order_by_limit_walks_an_index() {
    let mut db = Database::new();
    db.execute("CREATE TABLE s (id INTEGER NOT NULL PRIMARY KEY, player INTEGER, score INTEGER); CREATE INDEX s_ps ON s (player, score)")
        .unwrap();
    for i in 0..50 {
        db.execute(&format!("INSERT INTO s VALUES ({i}, {}, {})", i % 5, (i * 37) % 101)).unwrap();
    }
    let explain = |db: &mut Database, sql: &str| -> String {
        rows(db, &format!("EXPLAIN {sql}")).into_iter().map(|r| r[0].to_string()).collect::<Vec<_>>().join("\n")
    };
    let top = "SELECT score FROM s WHERE player = 3 ORDER BY score DESC LIMIT 3";
    let text = explain(&mut db, top);
    assert!(!text.contains("ORDER BY") && text.contains("REVERSE"), "{text}");
    let mut expected: Vec<i64> = (0..50).filter(|i| i % 5 == 3).map(|i| (i * 37) % 101).collect();
    expected.sort_unstable_by(|a, b| b.cmp(a));
    let got: Vec<Vec<Value>> = rows(&mut db, top);
    assert_eq!(got, expected[..3].iter().map(|v| vec![int(*v)]).collect::<Vec<_>>());
    let text = explain(&mut db, "SELECT id FROM s ORDER BY id LIMIT 2");
    assert!(!text.contains("ORDER BY") && text.contains("USING PK_S ALL"), "{text}");
    assert_eq!(rows(&mut db, "SELECT id FROM s ORDER BY id LIMIT 2"), vec![vec![int(0)], vec![int(1)]]);
    // Mixed directions still sort.
    assert!(explain(&mut db, "SELECT id FROM s ORDER BY player, score DESC").contains("ORDER BY"));
}

#[test]
fn correlated_subqueries_see_every_joined_table() {
    let mut db = Database::new();
    db.execute(
        "CREATE TABLE a (x INTEGER); CREATE TABLE b (y INTEGER); CREATE TABLE c (z INTEGER);
         INSERT INTO a VALUES (1), (2); INSERT INTO b VALUES (10), (20); INSERT INTO c VALUES (20);",
    )
    .unwrap();
    // The subquery reads b.y, the second table of the join.
    assert_eq!(
        rows(&mut db, "SELECT a.x, b.y FROM a, b WHERE EXISTS (SELECT 1 FROM c WHERE c.z = b.y) ORDER BY 1"),
        vec![vec![int(1), int(20)], vec![int(2), int(20)]]
    );
    assert_eq!(
        rows(&mut db, "SELECT a.x, b.y FROM a LEFT JOIN b ON b.y = (SELECT MAX(z) FROM c WHERE z > a.x) ORDER BY 1"),
        vec![vec![int(1), int(20)], vec![int(2), int(20)]]
    );
}

#[test]
fn schema_changes_in_a_transaction_roll_back_with_it() {
    let mut db = Database::new();
    db.execute("CREATE TABLE t (a INT PRIMARY KEY, b VARCHAR(5)); CREATE TABLE gone (x INT)").unwrap();
    db.execute("INSERT INTO t VALUES (1, 'x'), (2, 'y'); INSERT INTO gone VALUES (7)").unwrap();
    let before = db.checksum();
    let version = db.catalog().version;
    db.begin();
    for sql in [
        "CREATE TABLE fresh (z INT)",
        "ALTER TABLE t ADD COLUMN c INT DEFAULT 3",
        "CREATE INDEX t_b ON t (b)",
        "DROP TABLE gone",
        "CREATE VIEW per_b (b, n) AS SELECT b, COUNT(*) FROM t GROUP BY b",
        "CREATE PROCEDURE p AS SELECT 1",
    ] {
        db.execute(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    assert_eq!(rows(&mut db, "SELECT a, c FROM t ORDER BY a"), vec![vec![int(1), int(3)], vec![int(2), int(3)]]);
    // Several schema changes in one transaction roll back together.
    db.rollback().unwrap();
    assert_eq!(db.catalog().version, version);
    assert!(db.catalog().procedures.is_empty());
    assert_eq!(code(&mut db, "SELECT * FROM fresh"), ErrorCode::UndefinedTable);
    assert_eq!(code(&mut db, "SELECT c FROM t"), ErrorCode::UndefinedColumn);
    assert_eq!(code(&mut db, "SELECT * FROM per_b"), ErrorCode::UndefinedTable);
    assert_eq!(rows(&mut db, "SELECT x FROM gone"), vec![vec![int(7)]]);
    assert_eq!(db.checksum(), before);
    // And the table keeps working with its old indexes.
    db.execute("INSERT INTO t VALUES (3, 'z')").unwrap();
    assert_eq!(code(&mut db, "INSERT INTO t VALUES (3, 'w')"), ErrorCode::UniqueViolation);
    // Outside a transaction a schema change commits at once.
    db.execute("CREATE TABLE kept (k INT)").unwrap();
    assert!(db.rollback().is_ok());
    assert_eq!(rows(&mut db, "SELECT COUNT(*) FROM kept"), vec![vec![int(0)]]);
}

#[test]
fn checksums_ignore_row_order_but_not_contents() {
    let mut a = Database::new();
    let mut b = Database::new();
    for db in [&mut a, &mut b] {
        db.execute("CREATE TABLE t (k INT, v VARCHAR(3))").unwrap();
    }
    a.execute("INSERT INTO t VALUES (1, 'a'), (2, 'b')").unwrap();
    b.execute("INSERT INTO t VALUES (2, 'b'), (1, 'a')").unwrap();
    assert_eq!(a.checksum(), b.checksum());
    b.execute("UPDATE t SET v = 'c' WHERE k = 1").unwrap();
    assert_ne!(a.checksum(), b.checksum());
}

/// A range move's eviction: `take_rows` hands the rows over whole and
/// keeps them (encoded) only for a rollback, which puts each back at its
/// id, in its indexes and in the views over the table.
#[test]
fn taken_rows_leave_whole_and_a_rollback_puts_them_back() {
    let mut db = Database::new();
    db.execute(
        "CREATE TABLE kv (k VARCHAR(32) NOT NULL PRIMARY KEY, v VARBINARY(64), f FLOAT, d DECIMAL, t TIMESTAMP, n INTEGER);
         CREATE VIEW by_n (n, c) AS SELECT n, COUNT(*) FROM kv GROUP BY n;",
    )
    .unwrap();
    for i in 0..50 {
        db.execute(&format!(
            "INSERT INTO kv VALUES ('key-{i}', x'{:02x}ff00', {i}.25, {i}.125, {}, {})",
            i,
            1_600_000_000_000_000i64 + i,
            i % 3
        ))
        .unwrap();
    }
    db.execute("INSERT INTO kv VALUES ('nulls', NULL, NULL, NULL, NULL, 7)").unwrap();
    let table = db.catalog().tables().find(|t| t.name == "KV").unwrap().id;
    let scan = |db: &Database| -> Vec<(_, Vec<Value>)> {
        db.storage().table(table).unwrap().scan().map(|(id, row)| (id, row.clone())).collect()
    };
    let before = scan(&db);
    let views = rows(&mut db, "SELECT * FROM by_n ORDER BY n");
    // Every other row, the last (of NULLs) among them.
    let chosen: Vec<_> = before.iter().step_by(2).collect();
    let ids: Vec<_> = chosen.iter().map(|(id, _)| *id).collect();
    for end in ["rollback", "commit"] {
        db.begin();
        let taken = db.take_rows(table, ids.clone()).unwrap();
        assert_eq!(taken, chosen.iter().map(|(_, row)| row.clone()).collect::<Vec<_>>(), "the rows, whole, in order");
        assert_eq!(scan(&db).len(), before.len() - ids.len());
        assert!(rows(&mut db, "SELECT k FROM kv WHERE k = 'key-0'").is_empty());
        if end == "commit" {
            db.commit();
            break;
        }
        db.rollback().unwrap();
        assert_eq!(scan(&db), before, "every row back at its id");
        assert_eq!(rows(&mut db, "SELECT n FROM kv WHERE k = 'key-0'"), vec![vec![int(0)]], "and in the index");
        assert_eq!(rows(&mut db, "SELECT * FROM by_n ORDER BY n"), views, "and in the view");
    }
    assert_eq!(scan(&db).len(), before.len() - ids.len(), "committed, they are gone");
    assert_eq!(rows(&mut db, "SELECT SUM(c) FROM by_n"), vec![vec![int(25)]]);
    // The next transaction's taken rows roll back on their own, whole; a
    // take that fails half way (an id that holds no row) puts back its own
    // rows at once, and the transaction's rollback the earlier take's.
    let left = scan(&db);
    let (first, second): (Vec<_>, Vec<_>) = left.iter().map(|(id, _)| *id).partition(|id| id % 3 == 0);
    db.begin();
    assert_eq!(db.take_rows(table, first.clone()).unwrap().len(), first.len());
    let missing = before.iter().map(|(id, _)| *id).max().unwrap() + 1;
    let half = [second[..3].to_vec(), vec![missing]].concat();
    assert_eq!(db.take_rows(table, half).unwrap_err().code(), ErrorCode::Internal);
    let kept: Vec<_> = left.iter().filter(|(id, _)| id % 3 != 0).cloned().collect();
    assert_eq!(scan(&db), kept, "the failed take's rows are back, the first take's still gone");
    db.rollback().unwrap();
    assert_eq!(scan(&db), left, "every row back, as it was");
    assert_eq!(rows(&mut db, "SELECT SUM(c) FROM by_n"), vec![vec![int(25)]]);
}
