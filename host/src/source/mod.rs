//! Sources: where change events are read from. Kafka in production ([`kafka::KafkaSource`]);
//! an in-memory source ([`memory::MemorySource`]) drives the run loop in unit tests. Every
//! source keeps a [`ledger::Ledger`]: the pipeline says when a message is done, the ledger
//! says what may be committed.

pub mod kafka;
pub mod ledger;
pub mod memory;

use std::future::Future;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;

use rdkafka::error::KafkaError;
use rdkafka::message::OwnedMessage;

use ledger::{Partition, Read};

/// Why the source failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The consumer could not be created or subscribed.
    #[error("Kafka consumer setup: {0}")]
    Setup(KafkaError),
    /// Reading failed (the broker is unreachable, a fetch failed); the run loop retries.
    #[error("Kafka: {0}")]
    Receive(KafkaError),
}

/// What the run loop needs of a source. Every message read goes through [`Source::read`]
/// and, once handled, [`Source::done`]; commits go only as far as the ledger allows and only
/// to partitions this process owns.
pub trait Source: Send + Sync {
    /// The next message; waits while there is none.
    fn recv(&self) -> impl Future<Output = Result<OwnedMessage, SourceError>> + Send;
    /// Notes a message received: [`Read::New`] opens its offset until [`Source::done`].
    fn read(&self, msg: &OwnedMessage) -> Read;
    /// The message is fully handled (loaded, dead-lettered, skipped on purpose).
    fn done(&self, msg: &OwnedMessage);
    /// Whether some message read is not done yet.
    fn has_open(&self) -> bool;
    /// Partitions revoked since the last call: the pipeline drops their messages.
    fn take_revoked(&self) -> Vec<Partition>;
    /// Commits what the ledger allows; false if the commit failed (it is tried again later).
    fn commit(&self) -> bool;
    /// Measures the consumer lag now, for the last stats line.
    fn measure_lag(&self);
    /// Stops (`pause`) or restarts fetching these partitions.
    fn pause(&self, partitions: &[Partition], pause: bool);
    /// Summed consumer lag (messages behind the committed offsets); -1 until known.
    fn lag_handle(&self) -> Arc<AtomicI64>;
}
