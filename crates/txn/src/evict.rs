//! A partition's side of moving ranges: giving up the rows of a range
//! ([`Site::evict`], the `Evict` item of `@MoveRange`) and, before a
//! rebalance's first piece, building the index those pieces find their rows
//! through ([`Site::index_tokens`]).
//!
//! The index of rows by token (`joule_engine`'s token index) lets a piece
//! read only its range's rows instead of scanning the table. Built at once
//! over a partition of millions of rows it takes a few tenths of a second
//! to a second, inside a transaction that holds the partition: every call
//! queued on it waits that long. So a rebalance builds it first, a step at
//! a time (`@IndexTokens`, one small transaction per step, the calls in
//! between), and a piece builds (or finishes) it at once only when no
//! steps came first — as a copy log replayed, or a `@MoveRange` called by
//! hand, does.

use crate::hashinator::Hashinator;
use crate::site::Site;
use joule_common::{err, Result};

impl Site {
    /// One step of building the token index of every hash-partitioned
    /// table here that holds rows, over the next `rows` row ids of each;
    /// returns the row ids still to look at, summed over the tables (0:
    /// every index is complete).
    pub(crate) fn index_tokens(&mut self, rows: u64) -> Result<u64> {
        let tables: Vec<(joule_sql::catalog::TableId, usize)> = self
            .db
            .catalog()
            .tables()
            .filter(|d| d.view.is_none() && d.partition_ranges.is_none() && self.db.catalog().is_partitioned(d))
            .filter_map(|d| d.partition_column.map(|pc| (d.id, pc)))
            .collect();
        let limit = usize::try_from(rows).unwrap_or(usize::MAX);
        let mut left = 0u64;
        for (id, pc) in tables {
            // As `evict` does: an empty table is not worth an index.
            if !self.db.storage().table(id)?.is_empty() {
                left += self.db.track_tokens_step(id, pc, limit)? as u64;
            }
        }
        Ok(left)
    }

    /// Delete and return the rows that `next` places elsewhere — of table
    /// `only`, or of every hash-partitioned table — by table in catalog
    /// order, each table's rows in storage order: the same on every copy of
    /// the partition. Views are never evicted: they follow their source.
    /// With `tokens` (the range that moves), a hash-partitioned table that
    /// keeps its rows by token (or starts to, with `keep`) reads only the
    /// rows of that range; any other scans the table but takes only rows
    /// of that range (so that each range of a move of several takes its own
    /// rows, the same ones in the same order with or without an index).
    pub(crate) fn evict(
        &mut self,
        next: &Hashinator,
        only: Option<&str>,
        tokens: Option<(i32, i32)>,
        keep: bool,
    ) -> Result<Vec<crate::messages::EvictedRows>> {
        let mut out = Vec::new();
        let chosen = |d: &joule_sql::catalog::TableDef| match only {
            Some(name) => d.qualified_name() == name,
            None => d.partition_ranges.is_none(),
        };
        let tables: Vec<(joule_sql::catalog::TableId, usize, String)> = self
            .db
            .catalog()
            .tables()
            .filter(|d| d.view.is_none() && chosen(d) && self.db.catalog().is_partitioned(d))
            .filter_map(|d| d.partition_column.map(|pc| (d.id, pc, d.qualified_name())))
            .collect();
        for (id, pc, name) in tables {
            let hashed = self.db.storage().table(id)?.def().partition_ranges.is_none();
            // An empty table is not worth an index: should rows arrive,
            // the pieces scan it.
            if keep && hashed && tokens.is_some() && !self.db.storage().table(id)?.is_empty() {
                self.db.track_tokens(id, pc)?;
            }
            let table = self.db.storage().table(id)?;
            let def = table.def();
            // The rows of the range if the table keeps them by token (in
            // ascending ids: the order a scan gives), else every row.
            type Candidates<'a> =
                Box<dyn Iterator<Item = Result<(joule_engine::storage::RowId, &'a joule_common::Row)>> + 'a>;
            let in_range = tokens.filter(|_| hashed).and_then(|(s, e)| Some((table.ids_in_tokens(s, e)?, s, e)));
            let leaving = match in_range {
                // The next ring gives the whole range to one other
                // partition (a move does): every row of it leaves, and
                // their keys need not be hashed again.
                Some((ids, s, e)) if !next.owners_of(s, e).contains(&self.partition) => ids,
                _ => {
                    let candidates: Candidates = match in_range {
                        Some((ids, _, _)) => Box::new(ids.into_iter().map(|id| {
                            table
                                .get(id)
                                .map(|row| (id, row))
                                .ok_or_else(|| err!(Internal, "row {id} of {name} is gone"))
                        })),
                        // A scan (no index yet, or a replay) looks at the rows
                        // of this item's range only, as the index would:
                        // with several ranges in one move, each item takes
                        // its own range's rows, in the same order.
                        None => match tokens.filter(|_| hashed) {
                            Some((s, e)) => Box::new(
                                table
                                    .scan()
                                    .filter(move |(_, row)| {
                                        (s..=e).contains(&joule_engine::storage::token_of(&row[pc]))
                                    })
                                    .map(Ok),
                            ),
                            None => Box::new(table.scan().map(Ok)),
                        },
                    };
                    let mut leaving = Vec::new();
                    for candidate in candidates {
                        let (row_id, row) = candidate?;
                        if def.partition_of(&row[pc], next)? != self.partition {
                            leaving.push(row_id);
                        }
                    }
                    leaving
                }
            };
            if !leaving.is_empty() {
                out.push(crate::messages::EvictedRows::new(name, self.db.take_rows(id, leaving)?));
            }
        }
        Ok(out)
    }
}
