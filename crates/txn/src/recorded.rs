//! A leader's record of a multi-partition transaction's writes on its
//! partition, for the replicas (and the copy log): each work item encoded
//! as it runs, framed into one [`Replicated::MpPrepare`] (or, committed in
//! one phase, [`Replicated::Mp`]; shipped ahead of the last round,
//! [`Replicated::MpPrepareAhead`]) record when the transaction prepares.
//!
//! The items travel as [`WireItem`](crate::remote::WireItem)s. Turning a [`WorkItem`] into one
//! copies everything it holds, and a range move's `Admit` holds tens of
//! thousands of rows, which the site is about to insert: copied, every
//! row cost two allocations, and their frees, only to be encoded at the
//! prepare and dropped. So the rows-carrying items (`Admit`, `InsertRows`)
//! are encoded straight from the work item (`WireItemRef`, the same
//! bytes as their `WireItem`), before the site consumes them; the others
//! are small and go through [`to_wire`]. The record is then framed from
//! those bytes ([`RecordedWrites::frame`]): exactly what
//! [`frame_record`](crate::remote::frame_record) writes for the owned
//! record, which is how every replica and copy log reads it back.

use crate::ids::TxnIds;
use crate::messages::WorkItem;
use crate::remote::to_wire;
use joule_common::{err, Result};
use serde::ser::{Serialize, SerializeStructVariant, Serializer};

/// `WireItem`'s variant indexes that [`WireItemRef`] writes itself
/// (postcard encodes a variant by its index).
const INSERT_ROWS_VARIANT: u32 = 2;
const ADMIT_VARIANT: u32 = 6;

/// Which [`crate::remote::Replicated`] record [`RecordedWrites::frame`]
/// makes; the value is its variant index (postcard's tag byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RecordKind {
    /// [`Replicated::Mp`](crate::remote::Replicated::Mp): committed.
    Mp = 1,
    /// [`Replicated::MpPrepare`](crate::remote::Replicated::MpPrepare).
    MpPrepare = 2,
    /// [`Replicated::MpPrepareAhead`](crate::remote::Replicated::MpPrepareAhead).
    MpPrepareAhead = 5,
}

/// A work item serialized as its `WireItem`, without building one.
struct WireItemRef<'a>(&'a WorkItem);

impl Serialize for WireItemRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        match self.0 {
            WorkItem::InsertRows { planned, rows } => {
                let mut v = serializer.serialize_struct_variant("WireItem", INSERT_ROWS_VARIANT, "InsertRows", 2)?;
                v.serialize_field("planned", &**planned)?;
                v.serialize_field("rows", rows)?;
                v.end()
            }
            WorkItem::Admit { planned, rows, hashinator } => {
                let mut v = serializer.serialize_struct_variant("WireItem", ADMIT_VARIANT, "Admit", 3)?;
                v.serialize_field("planned", &**planned)?;
                v.serialize_field("rows", rows)?;
                v.serialize_field("ring", &**hashinator)?;
                v.end()
            }
            other => to_wire(other).map_err(serde::ser::Error::custom)?.serialize(serializer),
        }
    }
}

/// The writes recorded so far: how many items, and their encodings one
/// after another.
#[derive(Debug, Default)]
pub(crate) struct RecordedWrites {
    items: usize,
    bytes: Vec<u8>,
}

impl RecordedWrites {
    /// Record `item` (before the site runs it: a site consumes the rows it
    /// inserts).
    pub fn push(&mut self, item: &WorkItem) -> Result<()> {
        let at = self.bytes.len();
        if let Err(e) = postcard::to_io(&WireItemRef(item), &mut self.bytes) {
            self.bytes.truncate(at);
            return Err(err!(Internal, "a write cannot be recorded for the replicas: {e}"));
        }
        self.items += 1;
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.items == 0
    }

    /// Append, framed, the record of these writes for transaction `ids`,
    /// as a record of `kind`.
    pub fn frame(&self, ids: TxnIds, kind: RecordKind, out: &mut Vec<u8>) -> Result<()> {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        out.push(kind as u8);
        if let Err(e) = postcard::to_io(&ids, &mut *out) {
            out.truncate(start);
            return Err(err!(Internal, "cannot encode a record for the replicas: {e}"));
        }
        push_varint(out, self.items as u64);
        out.extend_from_slice(&self.bytes);
        let Ok(len) = u32::try_from(out.len() - start - 4) else {
            out.truncate(start);
            return Err(err!(Internal, "a record for the replicas is over 4 GiB"));
        };
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
        Ok(())
    }
}

/// Postcard's length prefix: LEB128, seven bits a byte, low bits first.
fn push_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::{frame_record, unframe_records, Replicated, WireItem};
    use joule_common::Value;
    use std::sync::Arc;

    fn ids() -> TxnIds {
        TxnIds { txn_id: crate::ids::TxnId(77), unique_id: crate::ids::UniqueId(1 << 40) }
    }

    /// An `Admit` and an `InsertRows` of `n` rows each, a `NextRing` and a
    /// `ForgetTokens`, as a site would run them.
    fn items(n: i64) -> Vec<WorkItem> {
        let mut db = joule_engine::Database::new();
        db.execute("CREATE TABLE kv (k BIGINT NOT NULL PRIMARY KEY, v VARCHAR(100), b VARBINARY(8))").unwrap();
        let catalog = db.catalog().clone();
        let def = catalog.tables().next().unwrap().clone();
        let planned = crate::snapshot::insert_plan(&catalog, &def).unwrap();
        let rows: Vec<_> = (0..n)
            .map(|i| vec![Value::Integer(i), Value::String(format!("value {i}")), Value::Binary(vec![i as u8; 3])])
            .collect();
        let ring = Arc::new(crate::hashinator::Hashinator::even(4, 3).unwrap());
        vec![
            WorkItem::Admit { planned: planned.clone(), rows: rows.clone(), hashinator: ring.clone() },
            WorkItem::InsertRows { planned, rows },
            WorkItem::NextRing(ring),
            WorkItem::ForgetTokens,
        ]
    }

    #[test]
    fn recorded_writes_frame_as_the_records_themselves() {
        // 200 items: a length prefix of two bytes.
        for (n, copies) in [(0, 1), (3, 1), (1000, 1), (2, 50)] {
            let items: Vec<WorkItem> = (0..copies).flat_map(|_| items(n)).collect();
            let mut recorded = RecordedWrites::default();
            assert!(recorded.is_empty());
            for item in &items {
                recorded.push(item).unwrap();
            }
            let wire: Vec<WireItem> = items.iter().map(|i| to_wire(i).unwrap()).collect();
            for kind in [RecordKind::Mp, RecordKind::MpPrepare, RecordKind::MpPrepareAhead] {
                let (ids, items) = (ids(), wire.clone());
                let owned = match kind {
                    RecordKind::Mp => Replicated::Mp { ids, items },
                    RecordKind::MpPrepare => Replicated::MpPrepare { ids, items },
                    RecordKind::MpPrepareAhead => Replicated::MpPrepareAhead { ids, items },
                };
                let (mut expected, mut framed) = (b"before".to_vec(), b"before".to_vec());
                frame_record(&owned, &mut expected).unwrap();
                recorded.frame(ids, kind, &mut framed).unwrap();
                assert_eq!(framed, expected, "{n} rows, {copies} copies, {kind:?}");
                let back = unframe_records(&framed[6..]).unwrap();
                assert!(matches!(&back[..], [Replicated::MpPrepare { items, .. } | Replicated::Mp { items, .. }
                    | Replicated::MpPrepareAhead { items, .. }] if items.len() == wire.len()));
            }
        }
    }
}
