//! Sources: where change events are read from. Kafka in production ([`kafka::KafkaSource`]);
//! an in-memory source ([`memory::MemorySource`]) drives the run loop in unit tests. Every
//! source keeps a [`ledger::Ledger`]: the pipeline says when a message is done, the ledger
//! says what may be committed.

pub mod kafka;
pub mod ledger;
pub mod memory;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// The thread that polls Kafka is gone (floe is stopping).
    #[error("the Kafka polling thread stopped")]
    Stopped,
}

/// Held by the run loop while it loads rows into the warehouse; a rebalance waits for it
/// before it takes partitions away. A statement already sent cannot be called back, and a
/// late one could undo what the partition's new owner loaded meanwhile (a hard delete leaves
/// no position to compare with), so a revocation completes only between two loads.
#[derive(Clone, Default)]
pub struct LoadGate {
    lock: Arc<tokio::sync::Mutex<()>>,
    /// Revocations waiting: the run loop starts no load until they had their turn.
    revoking: Arc<AtomicUsize>,
}

/// A load in flight: revocations wait until it is dropped.
pub type Loading = tokio::sync::OwnedMutexGuard<()>;

/// A revocation running: no load starts until it is dropped.
pub type Revoking<'a> = tokio::sync::MutexGuard<'a, ()>;

impl LoadGate {
    /// Waits until no revocation is waiting or running, then holds revocations back until the
    /// guard drops.
    pub async fn hold(&self) -> Loading {
        loop {
            // A revocation polls for its turn; without this, a run loop that loads batch after
            // batch would take the gate back before the revocation sees it free.
            while self.revoking.load(Ordering::Acquire) > 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let guard = self.lock.clone().lock_owned().await;
            if self.revoking.load(Ordering::Acquire) == 0 {
                return guard;
            }
        }
    }

    /// For a rebalance (on the thread that polls Kafka): waits until the load in flight is
    /// over, and keeps the next one from starting while the guard lives. `None` after `limit`
    /// in vain: the revocation then goes ahead, and the run loop leaves the revoked rows out of
    /// its retries.
    pub fn wait(&self, limit: Duration) -> Option<Revoking<'_>> {
        let until = Instant::now() + limit;
        let _turn = Turn::take(&self.revoking);
        loop {
            // Polled rather than `blocking_lock`: librdkafka may run the last rebalance inside
            // the runtime, when the consumer is dropped.
            if let Ok(guard) = self.lock.try_lock() {
                return Some(guard);
            }
            if Instant::now() >= until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// [`LoadGate::wait`] for a task (the in-memory source's rebalances), with no limit.
    pub async fn wait_async(&self) -> Revoking<'_> {
        let _turn = Turn::take(&self.revoking);
        self.lock.lock().await
    }
}

/// A revocation's place in line at the [`LoadGate`], given up when dropped.
struct Turn<'a>(&'a AtomicUsize);

impl<'a> Turn<'a> {
    fn take(revoking: &'a AtomicUsize) -> Self {
        revoking.fetch_add(1, Ordering::AcqRel);
        Turn(revoking)
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the run loop needs of a source. Every message read goes through [`Source::read`]
/// and, once handled, [`Source::done`]; commits go only as far as the ledger allows and only
/// to partitions this process owns.
pub trait Source: Send + Sync {
    /// The next message; waits while there is none.
    fn recv(&self) -> impl Future<Output = Result<OwnedMessage, SourceError>> + Send;
    /// Notes a message received: [`Read::New`] opens its offset until [`Source::done`].
    fn read(&self, msg: &OwnedMessage) -> Read;
    /// Whether a message read is still this process's to handle: not done, and its partition
    /// not revoked since.
    fn owns(&self, msg: &OwnedMessage) -> bool;
    /// What the run loop holds while it loads, so that no revocation completes meanwhile.
    fn load_gate(&self) -> LoadGate;
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
    /// Whether a broker is reachable now (for `/readyz`).
    fn reachable_handle(&self) -> Arc<AtomicBool>;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run loop that loads batch after batch, taking the gate back as soon as it let it go,
    /// still lets a waiting revocation in after at most the load in flight.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_revocation_gets_its_turn_between_back_to_back_loads() {
        let gate = LoadGate::default();
        let loads = Arc::new(AtomicUsize::new(0));
        let looping = tokio::spawn({
            let (gate, loads) = (gate.clone(), loads.clone());
            async move {
                loop {
                    let held = gate.hold().await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    loads.fetch_add(1, Ordering::SeqCst);
                    drop(held);
                }
            }
        });
        while loads.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let revoked = tokio::task::spawn_blocking({
            let (gate, loads) = (gate.clone(), loads.clone());
            move || {
                let before = loads.load(Ordering::SeqCst);
                let turn = gate.wait(Duration::from_secs(10)).is_some();
                (turn, loads.load(Ordering::SeqCst) - before)
            }
        })
        .await
        .expect("revocation thread");
        looping.abort();
        let (turn, waited_for) = revoked;
        assert!(turn, "the revocation never got the gate between loads");
        assert!(waited_for <= 2, "it waited for {waited_for} loads");
    }

    #[test]
    fn a_revocation_gives_up_after_its_limit() {
        let gate = LoadGate::default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let held = rt.block_on(gate.hold());
        assert!(gate.wait(Duration::from_millis(30)).is_none());
        assert_eq!(
            gate.revoking.load(Ordering::SeqCst),
            0,
            "its turn was given up"
        );
        drop(held);
        assert!(gate.wait(Duration::from_millis(30)).is_some());
    }
}
