//! The Kafka source: a consumer in a consumer group (cooperative-sticky assignment), polled on
//! a thread of its own, with offsets committed only as its [`Ledger`] allows (what is loaded or
//! dead-lettered), and only for the partitions it owns: a revocation waits for the load in
//! flight ([`LoadGate`]), then commits the revoked partitions one last time before it
//! completes. Consumer lag is read from librdkafka's statistics.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::ledger::{Ledger, Partition, Read};
use super::{LoadGate, Source, SourceError};
use crate::config::KafkaConfig;

/// How long a revocation waits for the load in flight. Well under librdkafka's
/// `max.poll.interval.ms` (5 minutes by default), past which the group would drop this process.
const REVOKE_WAIT: Duration = Duration::from_secs(60);

/// Messages polled and not yet taken by the run loop (librdkafka prefetches the rest).
const POLLED: usize = 256;

/// How long the run loop may leave what was polled untaken (a load, an outage's retries)
/// before the polling thread pauses fetching and polls on, so that rebalances are served.
const STALL_AFTER: Duration = Duration::from_secs(30);

/// Who paused which partitions in librdkafka.
#[derive(Debug, Default)]
struct Flow {
    /// The run loop's: the partitions of a held table.
    held: HashSet<Partition>,
    /// The polling thread's: the whole assignment, while the run loop takes nothing.
    stalled: bool,
}

fn lock_flow(flow: &Mutex<Flow>) -> MutexGuard<'_, Flow> {
    flow.lock().unwrap_or_else(|e| e.into_inner())
}

/// Pauses the whole assignment (`stalled`) or resumes it but the run loop's held partitions.
fn set_stalled(consumer: &BaseConsumer<SourceContext>, flow: &Mutex<Flow>, stalled: bool) {
    let mut flow = lock_flow(flow);
    if flow.stalled == stalled {
        return;
    }
    let Ok(assigned) = consumer.assignment() else {
        return;
    };
    let result = if stalled {
        info!(after = ?STALL_AFTER, "the run loop takes no messages now; fetching paused, rebalances still served");
        consumer.pause(&assigned)
    } else {
        let mut tpl = TopicPartitionList::new();
        for e in assigned.elements() {
            if !flow.held.contains(&(Arc::from(e.topic()), e.partition())) {
                tpl.add_partition(e.topic(), e.partition());
            }
        }
        consumer.resume(&tpl)
    };
    match result {
        Ok(()) => flow.stalled = stalled,
        Err(e) => warn!(error = %e, stalled, "cannot pause or resume fetching"),
    }
}

/// Receives librdkafka's statistics (the summed consumer lag) and its rebalances (the ledger
/// learns which partitions this process owns).
pub struct SourceContext {
    flow: Arc<Mutex<Flow>>,
    lag: Arc<AtomicI64>,
    /// A broker is up (librdkafka's statistics).
    reachable: Arc<AtomicBool>,
    ledger: Arc<Mutex<Ledger>>,
    gate: LoadGate,
}

impl ClientContext for SourceContext {
    fn stats(&self, statistics: Statistics) {
        // Only the partitions this process owns: librdkafka keeps reporting partitions that
        // moved to another member of the group, with the lag they had when they left.
        let lag: i64 = statistics
            .topics
            .values()
            .flat_map(|t| t.partitions.values())
            .filter(|p| p.partition >= 0 && p.desired && p.fetch_state != "none")
            .map(|p| match (p.hi_offset, p.committed_offset) {
                (hi, committed) if hi >= 0 && committed >= 0 => (hi - committed).max(0),
                (hi, _) if hi >= 0 && p.lo_offset >= 0 => (hi - p.lo_offset).max(0),
                _ => p.consumer_lag.max(0),
            })
            .sum();
        self.lag.store(lag, Ordering::Relaxed);
        let up = statistics.brokers.values().any(|b| b.state == "UP");
        self.reachable.store(up, Ordering::Relaxed);
    }
}

impl ConsumerContext for SourceContext {
    /// Runs inside the consumer's poll (on the polling thread), before librdkafka applies the
    /// rebalance. A revocation first waits for the load in flight, so no statement of this
    /// process about the revoked partitions lands after their new owner started; then they are
    /// committed up to what is done and forgotten, so no later commit of this process touches
    /// them and their new owner starts right after what was loaded here.
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let parts = partitions(tpl);
                info!(partitions = ?names(&parts), "partitions assigned");
                lock(&self.ledger).assigned(&parts);
            }
            Rebalance::Revoke(tpl) => {
                let parts = partitions(tpl);
                // Held until the revocation is done: the next load starts after it.
                let between_loads = self.gate.wait(REVOKE_WAIT);
                if between_loads.is_none() {
                    warn!(partitions = ?names(&parts), waited = ?REVOKE_WAIT, "the run loop is still loading (or dead-lettering what failed to load); revoking anyway (its rows of these partitions are not retried here)");
                }
                info!(partitions = ?names(&parts), "partitions revoked; their messages not loaded yet are dropped (their new owner reads them again)");
                // A partition paused for a blocked table stays paused in librdkafka across an
                // unassign; resumed here, it is fetched again if it comes back to this process.
                let mut flow = lock_flow(&self.flow);
                if let Err(e) = consumer.resume(tpl) {
                    warn!(error = %e, "cannot resume the revoked partitions");
                }
                for p in &parts {
                    flow.held.remove(p);
                }
                drop(flow);
                let last = lock(&self.ledger).revoke(&parts);
                if !last.is_empty() {
                    if let Err(e) = consumer.commit(&offset_list(&last), CommitMode::Sync) {
                        warn!(error = %e, "last commit of revoked partitions failed; their new owner reads some loaded records again (harmless)");
                    }
                }
            }
            Rebalance::Error(e) => warn!(error = %e, "rebalance error"),
        }
    }

    /// A partition assigned starts unpaused by the run loop (which holds nothing of it), even
    /// if the run loop paused it again after its revocation; while fetching is paused (the run
    /// loop takes nothing) it waits like the others.
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let mut flow = lock_flow(&self.flow);
            for p in partitions(tpl) {
                flow.held.remove(&p);
            }
            let result = if flow.stalled {
                consumer.pause(tpl)
            } else {
                consumer.resume(tpl)
            };
            if let Err(e) = result {
                warn!(error = %e, stalled = flow.stalled, "cannot pause or resume the partitions assigned");
            }
        }
    }
}

fn lock(ledger: &Mutex<Ledger>) -> MutexGuard<'_, Ledger> {
    ledger.lock().unwrap_or_else(|e| e.into_inner())
}

fn partitions(tpl: &TopicPartitionList) -> Vec<Partition> {
    tpl.elements()
        .iter()
        .map(|e| (Arc::from(e.topic()), e.partition()))
        .collect()
}

fn names(parts: &[Partition]) -> Vec<String> {
    parts.iter().map(|(t, p)| format!("{t}[{p}]")).collect()
}

/// Next-offsets to commit as a partition list.
fn offset_list(offsets: &[(Partition, i64)]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), next) in offsets {
        if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*next)) {
            warn!(error = %e, topic = &**topic, partition, "cannot build the offset commit");
        }
    }
    tpl
}

/// Base librdkafka settings for every floe client, then the user's `kafka.properties`.
pub fn client_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers);
    for (k, v) in &cfg.properties {
        c.set(k, v);
    }
    c
}

/// A message polled, with the assignment of its partition it was fetched under.
type Polled = Result<(OwnedMessage, u64), KafkaError>;

/// The Kafka consumer and its ledger. The pipeline says when a message is done; the ledger
/// says what may be committed.
pub struct KafkaSource {
    consumer: Arc<BaseConsumer<SourceContext>>,
    polled: tokio::sync::Mutex<mpsc::Receiver<Polled>>,
    stop: Arc<AtomicBool>,
    poller: Option<JoinHandle<()>>,
    flow: Arc<Mutex<Flow>>,
    lag: Arc<AtomicI64>,
    reachable: Arc<AtomicBool>,
    ledger: Arc<Mutex<Ledger>>,
    gate: LoadGate,
}

impl KafkaSource {
    pub fn new(cfg: &KafkaConfig) -> Result<Self, SourceError> {
        let lag = Arc::new(AtomicI64::new(-1));
        let reachable = Arc::new(AtomicBool::new(false));
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let gate = LoadGate::default();
        let flow = Arc::new(Mutex::new(Flow::default()));
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &cfg.brokers)
            .set("group.id", &cfg.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("statistics.interval.ms", "2000")
            // A process joining or leaving moves only the partitions that must move; the
            // others keep loading. Every process of a group must use the same strategy.
            .set("partition.assignment.strategy", "cooperative-sticky");
        if cfg.topics.iter().any(|t| t.starts_with('^')) {
            // A pattern matches topics created later (a table added to the connector); look for
            // them every 10 s rather than librdkafka's default 5 minutes.
            c.set("topic.metadata.refresh.interval.ms", "10000");
        }
        for (k, v) in cfg.properties.iter().chain(&cfg.consumer_properties) {
            c.set(k, v);
        }
        let consumer: BaseConsumer<SourceContext> = c
            .create_with_context(SourceContext {
                flow: flow.clone(),
                lag: lag.clone(),
                reachable: reachable.clone(),
                ledger: ledger.clone(),
                gate: gate.clone(),
            })
            .map_err(SourceError::Setup)?;
        let topics: Vec<&str> = cfg.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(SourceError::Setup)?;
        let consumer = Arc::new(consumer);
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel(POLLED);
        let poller = std::thread::Builder::new()
            .name("floe-kafka-poll".into())
            .spawn({
                let (consumer, ledger, flow, stop) =
                    (consumer.clone(), ledger.clone(), flow.clone(), stop.clone());
                move || poll(&consumer, &ledger, &flow, &stop, &tx)
            })
            .map_err(|e| SourceError::Setup(KafkaError::ClientCreation(e.to_string())))?;
        Ok(KafkaSource {
            consumer,
            polled: tokio::sync::Mutex::new(rx),
            stop,
            poller: Some(poller),
            flow,
            lag,
            reachable,
            ledger,
            gate,
        })
    }
}

/// The polling thread: serves librdkafka's callbacks (rebalances, statistics) and hands the
/// messages to the run loop, in order. Rebalances run here, so one can wait for a load in
/// flight without stopping it. While the run loop takes nothing (the channel full), the thread
/// waits; after [`STALL_AFTER`] it pauses fetching and polls on, so that a rebalance is served
/// however long the run loop is busy (librdkafka would otherwise leave the group once
/// `max.poll.interval.ms` passed without a poll).
fn poll(
    consumer: &BaseConsumer<SourceContext>,
    ledger: &Mutex<Ledger>,
    flow: &Mutex<Flow>,
    stop: &AtomicBool,
    tx: &mpsc::Sender<Polled>,
) {
    // Polled while the channel was full (fetched before the pause took effect), oldest first.
    let mut waiting: VecDeque<Polled> = VecDeque::new();
    let mut full_since: Option<Instant> = None;
    let mut stalled = false;
    while !stop.load(Ordering::Relaxed) {
        while !waiting.is_empty() {
            match tx.try_reserve() {
                Ok(permit) => {
                    if let Some(item) = waiting.pop_front() {
                        permit.send(item);
                    }
                }
                Err(mpsc::error::TrySendError::Full(())) => break,
                Err(mpsc::error::TrySendError::Closed(())) => return,
            }
        }
        let full = !waiting.is_empty() || tx.capacity() == 0;
        if !stalled {
            full_since = if full {
                full_since.or_else(|| Some(Instant::now()))
            } else {
                None
            };
            stalled = full_since.is_some_and(|since| since.elapsed() >= STALL_AFTER);
        } else if waiting.is_empty() && tx.capacity() >= POLLED / 2 {
            // Resumed once the run loop took half of what waits, not on its first message:
            // every pause drops what librdkafka had fetched ahead.
            stalled = false;
            full_since = None;
        }
        set_stalled(consumer, flow, stalled);
        if full && !stalled {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        let polled = match consumer.poll(Duration::from_millis(100)) {
            None => continue,
            Some(Ok(m)) => {
                // Read after the poll: a rebalance inside it has run already.
                let assignment = lock(ledger).assignment(m.topic(), m.partition());
                Ok((m.detach(), assignment))
            }
            Some(Err(e)) => Err(e),
        };
        if !waiting.is_empty() {
            waiting.push_back(polled);
            continue;
        }
        match tx.try_send(polled) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(polled)) => waiting.push_back(polled),
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}

impl Drop for KafkaSource {
    /// Stops the polling thread; the consumer then leaves the group as it is dropped (a last
    /// revocation, which commits what is done).
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(poller) = self.poller.take() {
            if poller.join().is_err() {
                warn!("the Kafka polling thread panicked");
            }
        }
    }
}

impl Source for KafkaSource {
    async fn recv(&self) -> Result<OwnedMessage, SourceError> {
        let mut polled = self.polled.lock().await;
        loop {
            match polled.recv().await {
                Some(Ok((m, assignment))) => {
                    // Fetched before its partition was revoked and assigned again: the new
                    // assignment fetches it again, after the older messages it must follow.
                    if lock(&self.ledger).assignment(m.topic(), m.partition()) == assignment {
                        return Ok(m);
                    }
                }
                Some(Err(e)) => return Err(SourceError::Receive(e)),
                None => return Err(SourceError::Stopped),
            }
        }
    }

    fn read(&self, msg: &OwnedMessage) -> Read {
        lock(&self.ledger).read(msg.topic(), msg.partition(), msg.offset())
    }

    fn owns(&self, msg: &OwnedMessage) -> bool {
        lock(&self.ledger).owns(msg.topic(), msg.partition(), msg.offset())
    }

    fn load_gate(&self) -> LoadGate {
        self.gate.clone()
    }

    fn done(&self, msg: &OwnedMessage) {
        lock(&self.ledger).done(msg.topic(), msg.partition(), msg.offset());
    }

    fn has_open(&self) -> bool {
        lock(&self.ledger).has_open()
    }

    fn take_revoked(&self) -> Vec<Partition> {
        lock(&self.ledger).take_revoked()
    }

    /// Commits what the ledger allows, synchronously. A failure is logged and reported: the
    /// data is already loaded, and a replay of it is harmless.
    fn commit(&self) -> bool {
        // Under the ledger's lock: a revocation (on the polling thread) waits for it, so no
        // commit goes to a partition revoked after its offsets were chosen.
        let mut ledger = lock(&self.ledger);
        let offsets = ledger.committable();
        if offsets.is_empty() {
            return true;
        }
        match self
            .consumer
            .commit(&offset_list(&offsets), CommitMode::Sync)
        {
            Ok(()) => {
                ledger.committed(&offsets);
                true
            }
            Err(e) => {
                warn!(error = %e, "offset commit failed; the loaded records may be read again (harmless)");
                false
            }
        }
    }

    /// Measures the lag of the partitions this process owns now (messages after the committed
    /// offsets), asking the broker, and stores it where [`Self::lag_handle`] reads. For the last
    /// stats line: librdkafka's statistics are up to two seconds old.
    fn measure_lag(&self) {
        let timeout = std::time::Duration::from_secs(5);
        let Ok(assigned) = self.consumer.assignment() else {
            return;
        };
        let Ok(committed) = self.consumer.committed_offsets(assigned.clone(), timeout) else {
            return;
        };
        let mut lag = 0;
        for tp in committed.elements() {
            let Ok((low, high)) =
                self.consumer
                    .fetch_watermarks(tp.topic(), tp.partition(), timeout)
            else {
                return;
            };
            let from = match tp.offset() {
                Offset::Offset(o) => o,
                _ => low,
            };
            lag += (high - from).max(0);
        }
        self.lag.store(lag, Ordering::Relaxed);
    }

    /// Stops (`pause`) or restarts fetching these partitions.
    /// While the polling thread has paused fetching, a partition resumed here stays paused
    /// until fetching resumes.
    fn pause(&self, partitions: &[Partition], pause: bool) {
        let mut flow = lock_flow(&self.flow);
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            tpl.add_partition(&p.0, p.1);
            if pause {
                flow.held.insert(p.clone());
            } else {
                flow.held.remove(p);
            }
        }
        let result = if pause {
            self.consumer.pause(&tpl)
        } else if flow.stalled {
            Ok(())
        } else {
            self.consumer.resume(&tpl)
        };
        if let Err(e) = result {
            warn!(error = %e, pause, "cannot pause or resume partitions");
        }
    }

    /// Summed consumer lag (messages behind the committed offsets); -1 until known.
    fn lag_handle(&self) -> Arc<AtomicI64> {
        self.lag.clone()
    }

    /// A broker was up in librdkafka's last statistics (every 2 s).
    fn reachable_handle(&self) -> Arc<AtomicBool> {
        self.reachable.clone()
    }
}
