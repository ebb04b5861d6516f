//! Finding the rows the warehouse refuses: a table's rows are loaded in pieces, halving the
//! pieces that are refused until the refused rows stand alone; a lone row is blamed only if
//! the same load with no rows succeeds (so a missing table or privilege is never blamed on a
//! row). The blamed rows' source messages go to the dead-letter topic with the warehouse's
//! reason; the rest is loaded.

use std::collections::HashSet;

use tracing::warn;

use super::{retry, Pipeline, Shutdown, Step};
use crate::batch::{FoldedRow, TableBatch};
use crate::change::TableId;
use crate::dlq::DeadLetterQueue;
use crate::sink::{Sink, SinkError};
use crate::source::Source;

/// The outcome of looking for the rows the warehouse refuses.
pub(super) enum Isolation {
    /// Every row was loaded or dead-lettered; the number loaded.
    Done(usize),
    /// Shutdown was requested meanwhile.
    Abandoned,
    /// The refusal is not about any row (the table or session is at fault).
    NotRowSpecific(SinkError),
}

impl<Src: Source, Snk: Sink, Dlq: DeadLetterQueue> Pipeline<Src, Snk, Dlq> {
    /// Loads one table's rows piece by piece, halving the pieces Snowflake refuses, until the
    /// refused rows stand alone; their source messages go to the dead-letter topic with
    /// Snowflake's reason. A lone row is only blamed if the same load with no rows succeeds.
    pub(super) async fn isolate(
        &mut self,
        table: &TableId,
        tb: &TableBatch,
        handled: &mut HashSet<usize>,
        shutdown: &Shutdown,
    ) -> Isolation {
        let mut loaded = 0;
        let mut refused: Vec<(FoldedRow, String)> = Vec::new();
        let mut pending = vec![tb.rows.clone()];
        while let Some(piece) = pending.pop() {
            if *shutdown.borrow() {
                return Isolation::Abandoned;
            }
            let error = match self.sinks.load_rows(table, tb, &piece).await {
                Ok(n) => {
                    loaded += n;
                    continue;
                }
                Err(e) => e,
            };
            if !retry::may_blame_rows(error.class()) {
                return Isolation::NotRowSpecific(error);
            }
            if piece.len() > 1 {
                let (a, b) = piece.split_at(piece.len() / 2);
                pending.push(b.to_vec());
                pending.push(a.to_vec());
                continue;
            }
            match self.sinks.probe(table, tb).await {
                Ok(()) => refused.push((piece[0].clone(), error.to_string())),
                Err(e) => return Isolation::NotRowSpecific(e),
            }
        }
        let target = self.sinks.table_name(table);
        for (row, reason) in refused {
            warn!(partition = row.kafka.partition, offset = row.kafka.offset, reason = %reason,
                dlq = self.dlq.topic(), "row refused by Snowflake; its source messages go to the dead-letter topic");
            for msg in self.messages_of(std::slice::from_ref(&row), handled) {
                if !matches!(
                    self.dead_letter(&msg, "load", &reason, None, shutdown)
                        .await,
                    Step::Done
                ) {
                    return Isolation::Abandoned;
                }
                self.stats.table(&target, |c| c.dead_lettered += 1);
            }
        }
        Isolation::Done(loaded)
    }
}
