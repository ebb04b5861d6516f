//! Taking messages in: a message read (its offset open in the ledger) is decoded and its change
//! batched, and reading ahead: while the warehouse loads a batch, the run loop goes on reading,
//! decoding and batching the next one (within the batch's bounds, records and bytes), so the
//! warehouse's round trips are not also time in which nothing is read. Only what needs no wait
//! is done ahead; a message that needs the run loop (a schema to fetch, a TRUNCATE, a change of
//! a held table, an undecodable message) or a rebalance stops the reading until the load is
//! back, and the run loop handles that message first.

use std::collections::HashMap;
use std::sync::Arc;

use rdkafka::message::{Message, OwnedMessage};
use tracing::warn;

use super::Blocked;
use crate::batch::Batcher;
use crate::change::{Change, KafkaPosition, Op, TableId};
use crate::decode::{DecodeError, Decoded, Decoder};
use crate::metrics::Stats;
use crate::source::ledger::{Partition, Read};
use crate::source::{Source, SourceError};

/// The parts of the pipeline a message goes through on its way into the batch. Borrowed one
/// by one, so that the sink can be loading meanwhile.
pub(super) struct Intake<'a, Src> {
    pub source: &'a Src,
    pub decoder: &'a mut Decoder,
    pub batcher: &'a mut Batcher,
    /// The messages of the batch being filled, by the index the batcher gave each change.
    pub in_flight: &'a mut Vec<OwnedMessage>,
    pub stats: &'a Stats,
    /// Tables that cannot load now, and whether their records wait (`on_table_error = "pause"`).
    pub blocked: &'a HashMap<TableId, Blocked>,
    pub pause: bool,
}

/// What became of a message taken in.
pub(super) enum Admitted {
    /// Its change is in the batch; the sink is told the table's topic.
    Batched(TableId),
    /// A tombstone: nothing to load, and done.
    Tombstone,
    /// A source TRUNCATE: applied between batches.
    Truncate(OwnedMessage, Box<Change>),
    /// A change of a table whose records wait.
    Held(OwnedMessage, TableId),
    /// It cannot be decoded: it goes to the dead-letter topic.
    Undecodable(OwnedMessage, DecodeError),
}

/// Whether `table`'s records wait (its table paused after a failure, and not being tried again).
pub(super) fn is_held(blocked: &HashMap<TableId, Blocked>, pause: bool, table: &TableId) -> bool {
    pause && blocked.get(table).is_some_and(|b| !b.retrying)
}

impl<Src: Source> Intake<'_, Src> {
    /// Decodes a message whose writer schemas are at hand and batches its change, or says what
    /// else it needs.
    pub fn admit(&mut self, msg: OwnedMessage) -> Admitted {
        let pos = KafkaPosition {
            partition: msg.partition(),
            offset: msg.offset(),
        };
        let decoded = self
            .decoder
            .decode(msg.topic(), msg.key(), msg.payload(), pos);
        match decoded {
            Ok(Decoded::Tombstone) => {
                Stats::add(&self.stats.tombstones, 1);
                self.source.done(&msg);
                Admitted::Tombstone
            }
            Ok(Decoded::Change(change)) if is_held(self.blocked, self.pause, &change.table) => {
                Admitted::Held(msg, change.table)
            }
            Ok(Decoded::Change(change)) if change.op == Op::Truncate => {
                Admitted::Truncate(msg, change)
            }
            Ok(Decoded::Change(change)) => {
                Stats::add(&self.stats.decoded, 1);
                let table = change.table.clone();
                let bytes = msg.payload().map_or(0, <[u8]>::len) + msg.key().map_or(0, <[u8]>::len);
                let index = self.batcher.push(*change, bytes);
                debug_assert_eq!(index, self.in_flight.len());
                self.in_flight.push(msg);
                Admitted::Batched(table)
            }
            Err(e) => Admitted::Undecodable(msg, e),
        }
    }
}

/// Reading ahead while a load is in flight.
pub(super) struct ReadAhead<'a, Src> {
    intake: Intake<'a, Src>,
    /// The tables batched ahead and their topics, for the sink once it is back.
    notes: Vec<(TableId, Arc<str>)>,
    /// A message read that the run loop must handle before any other.
    kept: Option<OwnedMessage>,
    /// Partitions revoked meanwhile: their changes are dropped once the load is back.
    revoked: Vec<Partition>,
    /// Reading failed (it is retried by the run loop, with its pause).
    failed: bool,
}

impl<'a, Src: Source> ReadAhead<'a, Src> {
    pub fn new(intake: Intake<'a, Src>) -> Self {
        ReadAhead {
            intake,
            notes: Vec::new(),
            kept: None,
            revoked: Vec::new(),
            failed: false,
        }
    }

    /// What the run loop takes over once the load is back: the tables batched and their
    /// topics, the message it must handle first, the partitions revoked.
    #[allow(clippy::type_complexity)]
    pub fn finish(
        self,
    ) -> (
        Vec<(TableId, Arc<str>)>,
        Option<OwnedMessage>,
        Vec<Partition>,
    ) {
        (self.notes, self.kept, self.revoked)
    }

    /// The pending changes, moved out to run through the plugin chain, when the batch is full
    /// and nothing else stopped the reading; given back with [`Batcher::put_pending`].
    pub fn take_full_batch(&mut self) -> Option<Vec<Change>> {
        let clean = self.kept.is_none() && self.revoked.is_empty() && !self.failed;
        (clean && self.intake.batcher.is_full() && self.intake.batcher.has_pending())
            .then(|| self.intake.batcher.take_pending())
    }

    /// Whether to read another message now.
    pub fn reading(&self) -> bool {
        self.kept.is_none()
            && self.revoked.is_empty()
            && !self.failed
            && !self.intake.batcher.is_full_ahead()
    }

    /// Takes one message read ahead in, as far as it can go without waiting.
    pub fn take(&mut self, msg: Result<OwnedMessage, SourceError>) {
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "Kafka error while a batch loads; reading again once it is loaded");
                self.failed = true;
                return;
            }
        };
        let source = self.intake.source;
        // A rebalance runs inside the poll: the revoked partitions' changes are dropped once
        // the load is back, before this message is looked at.
        self.revoked.extend(source.take_revoked());
        if source.read(&msg) != Read::New {
            return;
        }
        Stats::add(&self.intake.stats.consumed, 1);
        if !self.revoked.is_empty()
            || !self
                .intake
                .decoder
                .is_prepared(msg.topic(), msg.key(), msg.payload())
        {
            self.kept = Some(msg);
            return;
        }
        match self.intake.admit(msg) {
            Admitted::Batched(table) => {
                if !self.notes.iter().any(|(t, _)| *t == table) {
                    if let Some(m) = self.intake.in_flight.last() {
                        self.notes.push((table, Arc::from(m.topic())));
                    }
                }
            }
            Admitted::Tombstone => {}
            Admitted::Truncate(m, _) | Admitted::Held(m, _) | Admitted::Undecodable(m, _) => {
                self.kept = Some(m);
            }
        }
    }
}
