//! System procedures answered from the published schema, without a
//! transaction: `@Explain`, `@ExplainProc`, `@SystemCatalog`,
//! `@SystemInformation` and `@GetPartitionKeys`. Their result columns follow
//! VoltDB's (the catalog selectors use JDBC's metadata column names), so
//! tools written for VoltDB read them unchanged.

use crate::compile::Schema;
use crate::hashinator::Hashinator;
use crate::response::ResultTable;
use joule_common::{bail, err, DataType, Result, Value};
use joule_sql::plan::OutputColumn;
use joule_sql::planner::{explain::explain, plan};
use std::sync::Arc;

fn columns(spec: &[(&str, DataType)]) -> Arc<[OutputColumn]> {
    spec.iter().map(|(n, t)| OutputColumn { name: n.to_string(), data_type: Some(*t) }).collect::<Vec<_>>().into()
}

fn text(s: impl Into<String>) -> Value {
    Value::String(s.into())
}

fn int(i: i64) -> Value {
    Value::Integer(i)
}

/// The string parameter `i` of a system procedure.
pub(crate) fn string_param(name: &str, params: &[Value], i: usize) -> Result<String> {
    match params.get(i) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v) => bail!(DatatypeMismatch, "{name}'s parameter {i} must be a string, not {}", v.type_name()),
        None => bail!(WrongParameterCount, "{name} needs parameter {i}"),
    }
}

/// `@Explain(sql)`: each statement's plan, as `EXPLAIN` prints it.
pub(crate) fn explain_sql(schema: &Schema, database: &str, sql: &str) -> Result<Vec<ResultTable>> {
    joule_sql::parser::parse(sql)?
        .iter()
        .map(|stmt| {
            let planned = Arc::new(plan(stmt, &schema.catalog, database)?);
            let mut lines = explain(&planned, &schema.catalog);
            lines.extend(pruning(&planned, &schema.catalog));
            Ok(plan_table(lines))
        })
        .collect()
}

/// `@ExplainProc(name)`: one row per statement, with its plan.
pub(crate) fn explain_proc(schema: &Schema, name: &str) -> Result<Vec<ResultTable>> {
    let p = schema.procedure(name).ok_or_else(|| err!(UndefinedProcedure, "procedure {name} was not found"))?;
    let rows = p
        .statements
        .iter()
        .map(|s| {
            let mut lines = explain(&s.planned, &schema.catalog);
            lines.extend(pruning(&s.planned, &schema.catalog));
            vec![text(s.sql.clone()), text(lines.join("\n"))]
        })
        .collect();
    Ok(vec![ResultTable::new(
        columns(&[("SQL_STATEMENT", DataType::Varchar), ("EXECUTION_PLAN", DataType::Varchar)]),
        rows,
    )])
}

/// EXPLAIN's lines on range pruning: one per pruned fragment of a
/// multi-partition read.
fn pruning(planned: &Arc<joule_sql::planner::Planned>, catalog: &joule_sql::catalog::Catalog) -> Vec<String> {
    match crate::distribute::mp_statement(planned.clone(), catalog) {
        Ok(crate::distribute::MpStatement::Read(q)) => {
            q.fragments.iter().filter_map(|f| f.prune.as_ref().map(|p| p.describe())).collect()
        }
        Ok(crate::distribute::MpStatement::Broadcast { prune: Some(p), .. }) => vec![p.describe()],
        _ => Vec::new(),
    }
}

fn plan_table(lines: Vec<String>) -> ResultTable {
    ResultTable::new(columns(&[("EXECUTION_PLAN", DataType::Varchar)]), vec![vec![text(lines.join("\n"))]])
}

/// `@SystemInformation([OVERVIEW | DEPLOYMENT])`.
pub(crate) fn system_information(selector: &str, partitions: usize, catalog_version: u64) -> Result<Vec<ResultTable>> {
    let version = env!("CARGO_PKG_VERSION");
    let rows: Vec<(&str, String)> = match selector.to_ascii_uppercase().as_str() {
        "OVERVIEW" => vec![
            ("VERSION", version.to_string()),
            ("BUILDSTRING", format!("JouleDB {version}")),
            ("CLUSTERSTATE", "RUNNING".to_string()),
            ("SITESPERHOST", partitions.to_string()),
            ("PARTITIONS", partitions.to_string()),
            ("CATALOGVERSION", catalog_version.to_string()),
        ],
        "DEPLOYMENT" => vec![
            ("hostcount", "1".to_string()),
            ("sitesperhost", partitions.to_string()),
            ("kfactor", "0".to_string()),
            ("commandlogenabled", "false".to_string()),
            ("snapshotenabled", "false".to_string()),
        ],
        s => bail!(InvalidArgument, "@SystemInformation takes OVERVIEW or DEPLOYMENT, not {s}"),
    };
    if selector.eq_ignore_ascii_case("DEPLOYMENT") {
        let cols = columns(&[("PROPERTY", DataType::Varchar), ("VALUE", DataType::Varchar)]);
        return Ok(vec![ResultTable::new(cols, rows.into_iter().map(|(k, v)| vec![text(k), text(v)]).collect())]);
    }
    let cols = columns(&[("HOST_ID", DataType::Integer), ("KEY", DataType::Varchar), ("VALUE", DataType::Varchar)]);
    Ok(vec![ResultTable::new(cols, rows.into_iter().map(|(k, v)| vec![int(0), text(k), text(v)]).collect())])
}

/// `@GetPartitionKeys(INTEGER | STRING | VARCHAR | VARBINARY)`: one key per
/// partition that hashes to it, for clients that want to reach every
/// partition with single-partition calls.
pub(crate) fn partition_keys(kind: &str, hashinator: &Hashinator, partitions: usize) -> Result<Vec<ResultTable>> {
    let kind = kind.to_ascii_uppercase();
    let (key_type, make): (DataType, fn(i64) -> Value) = match kind.as_str() {
        "INTEGER" => (DataType::BigInt, Value::Integer),
        "STRING" | "VARCHAR" => (DataType::Varchar, |i| Value::String(i.to_string())),
        "VARBINARY" => (DataType::Varbinary, |i| Value::Binary(i.to_le_bytes().to_vec())),
        _ => bail!(InvalidArgument, "@GetPartitionKeys takes INTEGER, STRING or VARBINARY, not {kind}"),
    };
    let mut found: Vec<Option<Value>> = vec![None; partitions];
    let mut missing = partitions;
    for i in 0..1_000_000i64 {
        let key = make(i);
        let p = hashinator.partition_for(&key)? as usize;
        if p < partitions && found[p].is_none() {
            found[p] = Some(key);
            missing -= 1;
            if missing == 0 {
                break;
            }
        }
    }
    let rows = found.into_iter().enumerate().filter_map(|(p, k)| Some(vec![int(p as i64), k?])).collect();
    Ok(vec![ResultTable::new(columns(&[("PARTITION_ID", DataType::Integer), ("PARTITION_KEY", key_type)]), rows)])
}

/// JDBC's type number and name for a column type.
fn jdbc_type(t: DataType) -> (i64, &'static str) {
    match t {
        DataType::Boolean => (16, "BOOLEAN"),
        DataType::TinyInt => (-6, "TINYINT"),
        DataType::SmallInt => (5, "SMALLINT"),
        DataType::Integer => (4, "INTEGER"),
        DataType::BigInt => (-5, "BIGINT"),
        DataType::Float => (8, "FLOAT"),
        DataType::Decimal => (3, "DECIMAL"),
        DataType::Varchar => (12, "VARCHAR"),
        DataType::Varbinary => (-3, "VARBINARY"),
        DataType::Timestamp => (93, "TIMESTAMP"),
    }
}

/// `@SystemCatalog(selector)`.
pub(crate) fn system_catalog(schema: &Schema, selector: &str) -> Result<Vec<ResultTable>> {
    let catalog = &schema.catalog;
    let v = DataType::Varchar;
    let i = DataType::Integer;
    let table = match selector.to_ascii_uppercase().as_str() {
        "TABLES" => {
            let cols = columns(&[
                ("TABLE_CAT", v),
                ("TABLE_SCHEM", v),
                ("TABLE_NAME", v),
                ("TABLE_TYPE", v),
                ("REMARKS", v),
                ("TYPE_CAT", v),
                ("TYPE_SCHEM", v),
                ("TYPE_NAME", v),
                ("SELF_REFERENCING_COL_NAME", v),
                ("REF_GENERATION", v),
            ]);
            let rows = catalog
                .tables()
                .map(|t| {
                    let kind = if t.view.is_some() { "VIEW" } else { "TABLE" };
                    let remarks = match (t.partition_column, &t.partition_ranges) {
                        (Some(pc), Some(bounds)) => text(format!(
                            "{{\"partitionColumn\":\"{}\",\"partitionRanges\":[{}]{}}}",
                            t.columns[pc].name,
                            bounds.iter().map(json_value).collect::<Vec<_>>().join(","),
                            t.range_owners.as_ref().map_or(String::new(), |o| format!(
                                ",\"rangePartitions\":[{}]",
                                o.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
                            ))
                        )),
                        (Some(pc), None) => text(format!("{{\"partitionColumn\":\"{}\"}}", t.columns[pc].name)),
                        (None, _) if catalog.is_partitioned(t) => text("{\"partitioned\":true}"),
                        (None, _) => Value::Null,
                    };
                    let mut row =
                        vec![Value::Null, text(t.database.clone()), text(t.name.clone()), text(kind), remarks];
                    row.extend(std::iter::repeat_n(Value::Null, 5));
                    row
                })
                .collect();
            ResultTable::new(cols, rows)
        }
        "COLUMNS" => {
            let cols = columns(&[
                ("TABLE_CAT", v),
                ("TABLE_SCHEM", v),
                ("TABLE_NAME", v),
                ("COLUMN_NAME", v),
                ("DATA_TYPE", i),
                ("TYPE_NAME", v),
                ("COLUMN_SIZE", i),
                ("BUFFER_LENGTH", i),
                ("DECIMAL_DIGITS", i),
                ("NUM_PREC_RADIX", i),
                ("NULLABLE", i),
                ("REMARKS", v),
                ("COLUMN_DEF", v),
                ("SQL_DATA_TYPE", i),
                ("SQL_DATETIME_SUB", i),
                ("CHAR_OCTET_LENGTH", i),
                ("ORDINAL_POSITION", i),
                ("IS_NULLABLE", v),
                ("SCOPE_CATALOG", v),
                ("SCOPE_SCHEMA", v),
                ("SCOPE_TABLE", v),
                ("SOURCE_DATA_TYPE", DataType::SmallInt),
                ("IS_AUTOINCREMENT", v),
            ]);
            let mut rows = Vec::new();
            for t in catalog.tables() {
                for (pos, c) in t.columns.iter().enumerate() {
                    let (jdbc, name) = jdbc_type(c.data_type);
                    let size = c.max_len.map(i64::from).unwrap_or(match c.data_type {
                        DataType::TinyInt => 7,
                        DataType::SmallInt => 15,
                        DataType::Integer => 31,
                        DataType::BigInt | DataType::Float => 63,
                        DataType::Decimal => 38,
                        _ => 8,
                    });
                    let remarks = if t.partition_column == Some(pos) { text("PARTITION_COLUMN") } else { Value::Null };
                    rows.push(vec![
                        Value::Null,
                        text(t.database.clone()),
                        text(t.name.clone()),
                        text(c.name.clone()),
                        int(jdbc),
                        text(name),
                        int(size),
                        Value::Null,
                        if c.data_type == DataType::Decimal { int(12) } else { Value::Null },
                        int(if matches!(c.data_type, DataType::Varchar | DataType::Varbinary) { 0 } else { 2 }),
                        int(i64::from(c.nullable)),
                        remarks,
                        c.default.as_ref().map_or(Value::Null, |d| text(d.to_string())),
                        Value::Null,
                        Value::Null,
                        if c.data_type == DataType::Varchar { int(size) } else { Value::Null },
                        int(pos as i64 + 1),
                        text(if c.nullable { "YES" } else { "NO" }),
                        Value::Null,
                        Value::Null,
                        Value::Null,
                        Value::Null,
                        text("NO"),
                    ]);
                }
            }
            ResultTable::new(cols, rows)
        }
        "INDEXINFO" => {
            let cols = columns(&[
                ("TABLE_CAT", v),
                ("TABLE_SCHEM", v),
                ("TABLE_NAME", v),
                ("NON_UNIQUE", DataType::TinyInt),
                ("INDEX_QUALIFIER", v),
                ("INDEX_NAME", v),
                ("TYPE", DataType::SmallInt),
                ("ORDINAL_POSITION", DataType::SmallInt),
                ("COLUMN_NAME", v),
                ("ASC_OR_DESC", v),
                ("CARDINALITY", i),
                ("PAGES", i),
                ("FILTER_CONDITION", v),
            ]);
            let mut rows = Vec::new();
            for t in catalog.tables() {
                for idx in &t.indexes {
                    for (k, c) in idx.columns.iter().enumerate() {
                        rows.push(vec![
                            Value::Null,
                            text(t.database.clone()),
                            text(t.name.clone()),
                            int(i64::from(!(idx.unique || idx.assume_unique || idx.primary_key))),
                            Value::Null,
                            text(idx.name.clone()),
                            int(3),
                            int(k as i64 + 1),
                            text(t.columns[*c].name.clone()),
                            if idx.kind == joule_sql::catalog::IndexKind::Tree { text("A") } else { Value::Null },
                            Value::Null,
                            Value::Null,
                            Value::Null,
                        ]);
                    }
                }
            }
            ResultTable::new(cols, rows)
        }
        "PRIMARYKEYS" => {
            let cols = columns(&[
                ("TABLE_CAT", v),
                ("TABLE_SCHEM", v),
                ("TABLE_NAME", v),
                ("COLUMN_NAME", v),
                ("KEY_SEQ", DataType::SmallInt),
                ("PK_NAME", v),
            ]);
            let mut rows = Vec::new();
            for t in catalog.tables() {
                if let Some(pk) = t.primary_key() {
                    for (k, c) in pk.columns.iter().enumerate() {
                        rows.push(vec![
                            Value::Null,
                            text(t.database.clone()),
                            text(t.name.clone()),
                            text(t.columns[*c].name.clone()),
                            int(k as i64 + 1),
                            text(pk.name.clone()),
                        ]);
                    }
                }
            }
            ResultTable::new(cols, rows)
        }
        "PROCEDURES" => {
            let cols = columns(&[
                ("PROCEDURE_CAT", v),
                ("PROCEDURE_SCHEM", v),
                ("PROCEDURE_NAME", v),
                ("RESERVED1", v),
                ("RESERVED2", v),
                ("RESERVED3", v),
                ("REMARKS", v),
                ("PROCEDURE_TYPE", DataType::SmallInt),
                ("SPECIFIC_NAME", v),
            ]);
            let rows = schema
                .procedure_names()
                .into_iter()
                .filter_map(|n| schema.procedure(n))
                .map(|p| {
                    let remarks = match &p.routing {
                        // Clients hash a partition parameter to route the
                        // call; a key placed by value ranges is routed here.
                        Some(r) if r.key.ranges.is_some() => {
                            "{\"singlePartition\":true,\"rangePartitioned\":true}".to_string()
                        }
                        Some(r) => format!("{{\"partitionParameter\":{},\"singlePartition\":true}}", r.parameter),
                        None => "{\"singlePartition\":false}".to_string(),
                    };
                    vec![
                        Value::Null,
                        Value::Null,
                        text(p.name.clone()),
                        Value::Null,
                        Value::Null,
                        Value::Null,
                        text(remarks),
                        int(1),
                        text(p.name.clone()),
                    ]
                })
                .collect();
            ResultTable::new(cols, rows)
        }
        "PROCEDURECOLUMNS" => {
            let cols = columns(&[
                ("PROCEDURE_CAT", v),
                ("PROCEDURE_SCHEM", v),
                ("PROCEDURE_NAME", v),
                ("COLUMN_NAME", v),
                ("COLUMN_TYPE", DataType::SmallInt),
                ("DATA_TYPE", i),
                ("TYPE_NAME", v),
                ("ORDINAL_POSITION", i),
                ("REMARKS", v),
            ]);
            let mut rows = Vec::new();
            for name in schema.procedure_names() {
                let Some(p) = schema.procedure(name) else { continue };
                // Statement procedures take their statements' parameters;
                // native procedures declare none up front.
                for k in 0..p.param_count.unwrap_or(0) {
                    let remarks = match &p.routing {
                        Some(r) if r.parameter == k => text("PARTITION_PARAMETER"),
                        _ => Value::Null,
                    };
                    rows.push(vec![
                        Value::Null,
                        Value::Null,
                        text(p.name.clone()),
                        text(format!("ARG{k}")),
                        int(1),
                        int(1111),
                        text("OTHER"),
                        int(k as i64 + 1),
                        remarks,
                    ]);
                }
            }
            ResultTable::new(cols, rows)
        }
        s => bail!(
            InvalidArgument,
            "@SystemCatalog takes TABLES, COLUMNS, INDEXINFO, PRIMARYKEYS, PROCEDURES or PROCEDURECOLUMNS, not {s}"
        ),
    };
    Ok(vec![table])
}

/// A range boundary as JSON: integers as numbers, strings quoted,
/// binaries as quoted hex.
fn json_value(v: &Value) -> String {
    match v {
        Value::Integer(i) => i.to_string(),
        Value::Binary(b) => format!("\"{}\"", b.iter().map(|x| format!("{x:02X}")).collect::<String>()),
        Value::String(s) => {
            let mut out = String::with_capacity(s.len() + 2);
            out.push('"');
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        }
        other => format!("\"{other}\""),
    }
}
