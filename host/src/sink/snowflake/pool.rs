//! Which Snowflake session loads which table. Each table stays on one session for the life of
//! the process (its loads stay in order, its plan and stage table live there); tables are
//! spread over `snowflake.sessions` sessions in the order they first appear, and a batch's
//! tables load concurrently, one statement per session at a time.

use std::collections::HashMap;

use futures::future::join_all;

use super::{Rejected, SnowflakeSink};
use crate::batch::{FoldedRow, TableBatch};
use crate::change::{SourcePosition, TableId};
use crate::config::SnowflakeConfig;
use crate::sink::{Sink, SinkError};

/// One [`SnowflakeSink`] (one session) per slot, and the slot of every table seen.
pub struct SinkPool {
    sinks: Vec<SnowflakeSink>,
    slots: HashMap<TableId, usize>,
}

impl SinkPool {
    pub fn new(cfg: &SnowflakeConfig) -> Result<Self, SinkError> {
        let sinks = (0..cfg.sessions.max(1))
            .map(|_| SnowflakeSink::new(cfg))
            .collect::<Result<_, _>>()?;
        Ok(SinkPool {
            sinks,
            slots: HashMap::new(),
        })
    }

    /// The slot of `table`, given round-robin the first time it is seen.
    fn slot(&mut self, table: &TableId) -> usize {
        let next = self.slots.len() % self.sinks.len();
        *self.slots.entry(table.clone()).or_insert(next)
    }

    /// The sink (session) that loads `table`.
    fn sink(&mut self, table: &TableId) -> &mut SnowflakeSink {
        let slot = self.slot(table);
        &mut self.sinks[slot]
    }
}

impl Sink for SinkPool {
    /// Notes that changes of `table` come from `topic` (every sink names tables alike).
    fn note_topic(&mut self, table: &TableId, topic: &str) {
        for s in &mut self.sinks {
            s.note_topic(table, topic);
        }
    }

    /// The warehouse name of `table`'s target.
    fn table_name(&self, table: &TableId) -> String {
        self.sinks[0].table_name(table)
    }

    /// Statements sent to Snowflake so far, over every session.
    fn statements(&self) -> u64 {
        self.sinks.iter().map(SnowflakeSink::statements).sum()
    }

    /// Records rejected changes, each in its table's session.
    async fn record_rejects(&mut self, rejects: &[Rejected]) -> Result<(), SinkError> {
        let mut by_slot: Vec<Vec<Rejected>> = vec![Vec::new(); self.sinks.len()];
        for r in rejects {
            let slot = self.slot(&r.table);
            by_slot[slot].push(r.clone());
        }
        for (sink, rows) in self.sinks.iter_mut().zip(by_slot) {
            if !rows.is_empty() {
                sink.record_rejects(&rows).await?;
            }
        }
        Ok(())
    }

    /// Loads each table's rows once, the tables of different sessions concurrently, those of
    /// one session one after another. The results are in the order of `jobs`.
    ///
    /// The target names are claimed first, one table at a time (a claim known already costs
    /// nothing): two sources whose names collide, claiming at once from two sessions, could
    /// each see only its own claim and both load into one table.
    async fn load_tables(
        &mut self,
        jobs: &[(&TableId, &TableBatch)],
    ) -> Vec<Result<usize, SinkError>> {
        let mut results: Vec<Option<Result<usize, SinkError>>> =
            (0..jobs.len()).map(|_| None).collect();
        let mut by_slot: Vec<Vec<usize>> = vec![Vec::new(); self.sinks.len()];
        for (i, (table, _)) in jobs.iter().enumerate() {
            let slot = self.slot(table);
            match self.sinks[slot].claim_target(table).await {
                Ok(()) => by_slot[slot].push(i),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        let runs = self
            .sinks
            .iter_mut()
            .zip(by_slot)
            .map(|(sink, mine)| async move {
                let mut out = Vec::with_capacity(mine.len());
                for i in mine {
                    let (table, tb) = jobs[i];
                    out.push((i, sink.load_table(table, tb, &tb.rows).await));
                }
                out
            });
        for (i, r) in join_all(runs).await.into_iter().flatten() {
            results[i] = Some(r);
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| Err(SinkError::Unavailable("internal: no load result".into())))
            })
            .collect()
    }

    async fn load_rows(
        &mut self,
        table: &TableId,
        tb: &TableBatch,
        rows: &[FoldedRow],
    ) -> Result<usize, SinkError> {
        self.sink(table).load_table(table, tb, rows).await
    }

    async fn probe(&mut self, table: &TableId, tb: &TableBatch) -> Result<(), SinkError> {
        self.sink(table).probe(table, tb).await
    }

    /// One session answers: the others share its account, network and credentials.
    async fn ping(&mut self) -> Result<(), SinkError> {
        self.sinks[0].ping().await
    }

    async fn truncate(
        &mut self,
        table: &TableId,
        position: SourcePosition,
    ) -> Result<(), SinkError> {
        self.sink(table).truncate(table, position).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(sessions: usize) -> SinkPool {
        let cfg: SnowflakeConfig = toml::from_str(&format!(
            "account = \"local\"\nuser = \"u\"\npassword = \"p\"\nendpoint = \"http://127.0.0.1:1\"\nsessions = {sessions}"
        ))
        .expect("config");
        SinkPool::new(&cfg).expect("pool")
    }

    fn table(name: &str) -> TableId {
        TableId {
            schema: "Shop".into(),
            table: name.into(),
        }
    }

    #[test]
    fn tables_spread_over_the_sessions_and_stay_on_theirs() {
        let mut p = pool(3);
        let names = ["orders", "ORDERS", "order lines", "Ünïcode", "orders_1"];
        let first: Vec<usize> = names.iter().map(|n| p.slot(&table(n))).collect();
        assert_eq!(first, [0, 1, 2, 0, 1]);
        // In any later order, each table keeps its session (its loads stay in order).
        let again: Vec<usize> = names.iter().rev().map(|n| p.slot(&table(n))).collect();
        assert_eq!(again, [1, 0, 2, 1, 0]);
        // One session: everything on it.
        let mut one = pool(1);
        assert!(names.iter().all(|n| one.slot(&table(n)) == 0));
    }
}
