//! Materialized view maintenance.
//!
//! A materialized view is a table whose rows are the groups of its source
//! table: the GROUP BY key, `COUNT(*)`, and SUM/MIN/MAX/COUNT of columns. It
//! is kept current inside the writing transaction, row by row:
//!
//! * an inserted source row adds to its group (creating it when new);
//! * a deleted source row subtracts from its group, deleting the group when
//!   its `COUNT(*)` reaches zero; SUM, MIN and MAX over a removed non-NULL
//!   value are recomputed from the group's remaining source rows (through an
//!   index on the key columns when one exists), because a SUM may become
//!   NULL and a MIN/MAX may lose its value;
//! * an update is a delete of the old row and an insert of the new one.
//!
//! Every change to a view row goes through the view table and the undo log,
//! so a rolled-back transaction rolls back its view changes too.

use crate::storage::{RowId, Storage, UndoLog, UndoOp};
use joule_common::types::ArithOp;
use joule_common::{err, Result, Row, Value};
use joule_sql::catalog::{MaterializedView, TableId};
use joule_sql::expr::AggKind;

/// Apply one source-row change to every view over its source table. Call it
/// after the source table changed; `row_id` is the changed source row (its
/// new contents are left out of any recomputation of the old group, since
/// `new` is added separately).
pub fn maintain(
    storage: &mut Storage,
    undo: &mut UndoLog,
    views: &[TableId],
    row_id: RowId,
    old: Option<&Row>,
    new: Option<&Row>,
) -> Result<()> {
    for &view in views {
        let def = storage.table(view)?.def().clone();
        let Some(mv) = def.view.as_ref() else { continue };
        if let Some(old) = old {
            remove_row(storage, undo, view, mv, old, row_id)?;
        }
        if let Some(new) = new {
            add_row(storage, undo, view, mv, new)?;
        }
    }
    Ok(())
}

fn key_of(mv: &MaterializedView, row: &Row) -> Vec<Value> {
    mv.group_by.iter().map(|c| row[*c].clone()).collect()
}

/// The view row for a key: its primary key is the key columns (index 0).
fn find(storage: &Storage, view: TableId, key: &[Value]) -> Result<Option<RowId>> {
    let t = storage.table(view)?;
    Ok(t.index_get_unique(0, key))
}

fn add_row(storage: &mut Storage, undo: &mut UndoLog, view: TableId, mv: &MaterializedView, row: &Row) -> Result<()> {
    let key = key_of(mv, row);
    match find(storage, view, &key)? {
        None => {
            let mut vrow = key;
            for (kind, col) in &mv.aggregates {
                let v = col.map(|c| &row[c]);
                vrow.push(match (kind, v) {
                    (AggKind::CountStar, _) => Value::Integer(1),
                    (AggKind::Count, Some(v)) => Value::Integer(i64::from(!v.is_null())),
                    (_, Some(v)) => v.clone(),
                    (_, None) => Value::Null,
                });
            }
            let id = storage.table_mut(view)?.insert(vrow)?;
            undo.record(UndoOp::Inserted { table: view, id });
        }
        Some(id) => {
            let mut vrow = storage.table(view)?.get(id).cloned().ok_or_else(|| err!(Internal, "view row vanished"))?;
            let n = mv.group_by.len();
            for (j, (kind, col)) in mv.aggregates.iter().enumerate() {
                let cur = &vrow[n + j];
                let v = col.map(|c| &row[c]);
                let next = match (kind, v) {
                    (AggKind::CountStar, _) => cur.arith(ArithOp::Add, &Value::Integer(1))?,
                    (AggKind::Count, Some(v)) if !v.is_null() => cur.arith(ArithOp::Add, &Value::Integer(1))?,
                    (AggKind::Sum, Some(v)) if !v.is_null() => {
                        if cur.is_null() {
                            v.clone()
                        } else {
                            cur.arith(ArithOp::Add, v)?
                        }
                    }
                    (AggKind::Min, Some(v))
                        if !v.is_null() && (cur.is_null() || v.sql_cmp(cur)?.is_some_and(|o| o.is_lt())) =>
                    {
                        v.clone()
                    }
                    (AggKind::Max, Some(v))
                        if !v.is_null() && (cur.is_null() || v.sql_cmp(cur)?.is_some_and(|o| o.is_gt())) =>
                    {
                        v.clone()
                    }
                    _ => cur.clone(),
                };
                vrow[n + j] = next;
            }
            let old = storage.table_mut(view)?.update(id, vrow)?;
            undo.record(UndoOp::Updated { table: view, id, old });
        }
    }
    Ok(())
}

fn remove_row(
    storage: &mut Storage,
    undo: &mut UndoLog,
    view: TableId,
    mv: &MaterializedView,
    row: &Row,
    row_id: RowId,
) -> Result<()> {
    let key = key_of(mv, row);
    let Some(id) = find(storage, view, &key)? else {
        return Err(err!(Internal, "materialized view is missing the group of a source row"));
    };
    let mut vrow = storage.table(view)?.get(id).cloned().ok_or_else(|| err!(Internal, "view row vanished"))?;
    let n = mv.group_by.len();
    let mut recompute = false;
    for (j, (kind, col)) in mv.aggregates.iter().enumerate() {
        let v = col.map(|c| &row[c]);
        match (kind, v) {
            (AggKind::CountStar, _) => vrow[n + j] = vrow[n + j].arith(ArithOp::Sub, &Value::Integer(1))?,
            (AggKind::Count, Some(v)) if !v.is_null() => {
                vrow[n + j] = vrow[n + j].arith(ArithOp::Sub, &Value::Integer(1))?
            }
            (AggKind::Sum | AggKind::Min | AggKind::Max, Some(v)) if !v.is_null() => recompute = true,
            _ => {}
        }
    }
    let count_pos = mv.aggregates.iter().position(|(k, _)| *k == AggKind::CountStar);
    let empty = count_pos.is_some_and(|p| vrow[n + p] == Value::Integer(0));
    if empty {
        let old = storage.table_mut(view)?.delete(id)?;
        undo.record(UndoOp::Deleted { table: view, id, row: old });
        return Ok(());
    }
    if recompute {
        // The source row is already gone (or about to be replaced): fold the
        // group's remaining rows.
        let source = storage.table(mv.source)?;
        let mut folded: Vec<Value> = vec![Value::Null; mv.aggregates.len()];
        let prefix_index = source.def().indexes.iter().position(|i| i.columns.starts_with(&mv.group_by));
        let ids: Vec<RowId> = match prefix_index {
            Some(ix) if key.iter().all(|k| !k.is_null()) => source.index_eq(ix, &key)?.collect(),
            _ => source.scan().filter(|(_, r)| key_of(mv, r) == key).map(|(id, _)| id).collect(),
        };
        for sid in ids {
            if sid == row_id {
                continue;
            }
            let Some(r) = source.get(sid) else { continue };
            if key_of(mv, r) != key {
                continue;
            }
            for (j, (kind, col)) in mv.aggregates.iter().enumerate() {
                let Some(v) = col.map(|c| &r[c]) else { continue };
                if v.is_null() {
                    continue;
                }
                let cur = &folded[j];
                folded[j] = match kind {
                    AggKind::Sum if !cur.is_null() => cur.arith(ArithOp::Add, v)?,
                    AggKind::Min if !cur.is_null() && !v.sql_cmp(cur)?.is_some_and(|o| o.is_lt()) => cur.clone(),
                    AggKind::Max if !cur.is_null() && !v.sql_cmp(cur)?.is_some_and(|o| o.is_gt()) => cur.clone(),
                    AggKind::Sum | AggKind::Min | AggKind::Max => v.clone(),
                    _ => cur.clone(),
                };
            }
        }
        for (j, (kind, _)) in mv.aggregates.iter().enumerate() {
            if matches!(kind, AggKind::Sum | AggKind::Min | AggKind::Max) {
                vrow[n + j] = folded[j].clone();
            }
        }
    }
    let old = storage.table_mut(view)?.update(id, vrow)?;
    undo.record(UndoOp::Updated { table: view, id, old });
    Ok(())
}
