//! An in-memory source for the run loop's unit tests: the test pushes messages to partitions
//! and plays rebalances through a [`MemoryTopics`] handle; the source reads them in order,
//! keeps a real [`Ledger`], and records what it commits.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rdkafka::message::{Message, OwnedMessage};
use rdkafka::Timestamp;
use tokio::sync::Notify;

use super::ledger::{Ledger, Partition, Read};
use super::{LoadGate, Source, SourceError};

#[derive(Default)]
struct State {
    /// Every message pushed, per partition, at the index of its offset.
    log: HashMap<Partition, Vec<OwnedMessage>>,
    /// Messages not read yet, in delivery order.
    queue: VecDeque<OwnedMessage>,
    ledger: Ledger,
    /// The offset committed per partition (the next one to read).
    committed: HashMap<Partition, i64>,
    paused: HashSet<Partition>,
    /// Commits fail (the broker refuses them) while set.
    refuse_commits: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    ready: Notify,
    lag: Arc<AtomicI64>,
    gate: LoadGate,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The source the pipeline reads.
pub struct MemorySource {
    shared: Arc<Shared>,
}

/// The test's side of a [`MemorySource`].
#[derive(Clone)]
pub struct MemoryTopics {
    shared: Arc<Shared>,
}

/// A source and the handle that feeds it.
pub fn memory_source() -> (MemorySource, MemoryTopics) {
    let shared = Arc::new(Shared::default());
    (
        MemorySource {
            shared: shared.clone(),
        },
        MemoryTopics { shared },
    )
}

fn partition(topic: &str, p: i32) -> Partition {
    (Arc::from(topic), p)
}

impl MemoryTopics {
    /// Appends a message to a partition; returns its offset.
    pub fn push(&self, topic: &str, p: i32, key: Option<&[u8]>, value: Option<&[u8]>) -> i64 {
        let mut s = self.shared.lock();
        let log = s.log.entry(partition(topic, p)).or_default();
        let offset = log.len() as i64;
        let msg = OwnedMessage::new(
            value.map(<[u8]>::to_vec),
            key.map(<[u8]>::to_vec),
            topic.to_string(),
            Timestamp::NotAvailable,
            p,
            offset,
            None,
        );
        log.push(msg.clone());
        s.queue.push_back(msg);
        drop(s);
        self.shared.ready.notify_one();
        offset
    }

    /// The offset committed for a partition (the next to read), if any was.
    pub fn committed(&self, topic: &str, p: i32) -> Option<i64> {
        self.shared
            .lock()
            .committed
            .get(&partition(topic, p))
            .copied()
    }

    /// Every commit fails (`true`), as when the group coordinator is unreachable, or succeeds
    /// again.
    pub fn refuse_commits(&self, refusing: bool) {
        self.shared.lock().refuse_commits = refusing;
    }

    /// Whether the pipeline paused the partition.
    pub fn is_paused(&self, topic: &str, p: i32) -> bool {
        self.shared.lock().paused.contains(&partition(topic, p))
    }

    /// One past the last offset pushed to a partition (its end, as a commit would name it).
    pub fn end(&self, topic: &str, p: i32) -> i64 {
        self.shared
            .lock()
            .log
            .get(&partition(topic, p))
            .map_or(0, |l| l.len() as i64)
    }

    /// Messages pushed and not read yet.
    pub fn unread(&self) -> usize {
        self.shared.lock().queue.len()
    }

    /// The source of a restarted process: everything not committed is read again, in order.
    /// The previous source must not be used any more.
    pub fn restart(&self) -> MemorySource {
        let mut s = self.shared.lock();
        s.ledger = Ledger::default();
        s.paused.clear();
        let mut parts: Vec<Partition> = s.log.keys().cloned().collect();
        parts.sort();
        let mut queue = VecDeque::new();
        for p in parts {
            let from = s.committed.get(&p).copied().unwrap_or(0).max(0) as usize;
            queue.extend(s.log[&p].iter().skip(from).cloned());
        }
        s.queue = queue;
        MemorySource {
            shared: self.shared.clone(),
        }
    }

    /// A rebalance takes these partitions away, as Kafka's does: it waits for the load in
    /// flight, what is done is then committed one last time, and their unread messages go to
    /// their new owner.
    pub async fn revoke(&self, partitions: &[(&str, i32)]) {
        let _between_loads = self.shared.gate.wait_async().await;
        self.revoke_now(partitions);
    }

    /// A revocation that does not wait for the load in flight, as Kafka's once it waited
    /// longer than its limit (see [`crate::source::kafka`]).
    pub fn revoke_now(&self, partitions: &[(&str, i32)]) {
        let parts: Vec<Partition> = partitions.iter().map(|(t, p)| partition(t, *p)).collect();
        let mut s = self.shared.lock();
        for (p, offset) in s.ledger.revoke(&parts) {
            s.committed.insert(p, offset);
        }
        s.queue
            .retain(|m| !parts.contains(&partition(m.topic(), m.partition())));
        for p in &parts {
            s.paused.remove(p);
        }
    }

    /// A rebalance gives these partitions (back): they are read again from their committed
    /// offset.
    pub fn assign(&self, partitions: &[(&str, i32)]) {
        let parts: Vec<Partition> = partitions.iter().map(|(t, p)| partition(t, *p)).collect();
        let mut s = self.shared.lock();
        s.ledger.assigned(&parts);
        for p in &parts {
            let from = s.committed.get(p).copied().unwrap_or(0).max(0) as usize;
            let again: Vec<OwnedMessage> = s
                .log
                .get(p)
                .map(|l| l.iter().skip(from).cloned().collect())
                .unwrap_or_default();
            s.queue
                .retain(|m| partition(m.topic(), m.partition()) != *p);
            s.queue.extend(again);
        }
        drop(s);
        self.shared.ready.notify_one();
    }
}

impl Source for MemorySource {
    async fn recv(&self) -> Result<OwnedMessage, SourceError> {
        loop {
            let ready = self.shared.ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            {
                let mut s = self.shared.lock();
                let paused = &s.paused;
                let next = s
                    .queue
                    .iter()
                    .position(|m| !paused.contains(&partition(m.topic(), m.partition())));
                if let Some(i) = next {
                    if let Some(m) = s.queue.remove(i) {
                        return Ok(m);
                    }
                }
            }
            ready.await;
        }
    }

    fn read(&self, msg: &OwnedMessage) -> Read {
        self.shared
            .lock()
            .ledger
            .read(msg.topic(), msg.partition(), msg.offset())
    }

    fn owns(&self, msg: &OwnedMessage) -> bool {
        self.shared
            .lock()
            .ledger
            .owns(msg.topic(), msg.partition(), msg.offset())
    }

    fn load_gate(&self) -> LoadGate {
        self.shared.gate.clone()
    }

    fn done(&self, msg: &OwnedMessage) {
        self.shared
            .lock()
            .ledger
            .done(msg.topic(), msg.partition(), msg.offset());
    }

    fn has_open(&self) -> bool {
        self.shared.lock().ledger.has_open()
    }

    fn take_revoked(&self) -> Vec<Partition> {
        self.shared.lock().ledger.take_revoked()
    }

    fn commit(&self) -> bool {
        let mut s = self.shared.lock();
        if s.refuse_commits {
            return false;
        }
        let offsets = s.ledger.committable();
        s.ledger.committed(&offsets);
        for (p, offset) in offsets {
            s.committed.insert(p, offset);
        }
        true
    }

    fn measure_lag(&self) {
        let s = self.shared.lock();
        let lag: i64 = s
            .log
            .iter()
            .map(|(p, l)| l.len() as i64 - s.committed.get(p).copied().unwrap_or(0))
            .sum();
        self.shared.lag.store(lag, Ordering::Relaxed);
    }

    fn pause(&self, partitions: &[Partition], pause: bool) {
        let mut s = self.shared.lock();
        for p in partitions {
            if pause {
                s.paused.insert(p.clone());
            } else {
                s.paused.remove(p);
            }
        }
        drop(s);
        if !pause {
            self.shared.ready.notify_one();
        }
    }

    fn lag_handle(&self) -> Arc<AtomicI64> {
        self.shared.lag.clone()
    }

    /// Always reachable.
    fn reachable_handle(&self) -> Arc<AtomicBool> {
        Arc::new(AtomicBool::new(true))
    }
}
