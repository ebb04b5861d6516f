//! The Kafka source: a consumer in a consumer group, with offsets committed only when floe says
//! so (after a successful load), and consumer lag read from librdkafka's statistics.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};
use tracing::warn;

use crate::config::KafkaConfig;

/// Why the source failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The consumer could not be created or subscribed.
    #[error("Kafka consumer setup: {0}")]
    Setup(KafkaError),
}

/// Receives librdkafka's statistics and keeps the summed consumer lag.
pub struct LagContext {
    lag: Arc<AtomicI64>,
}

impl ClientContext for LagContext {
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
    }
}

impl ConsumerContext for LagContext {}

/// Base librdkafka settings for every floe client, then the user's `kafka.properties`.
pub fn client_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers);
    for (k, v) in &cfg.properties {
        c.set(k, v);
    }
    c
}

/// The Kafka consumer. Which offsets may be committed is the pipeline's ledger's to say.
pub struct KafkaSource {
    consumer: StreamConsumer<LagContext>,
    lag: Arc<AtomicI64>,
}

impl KafkaSource {
    pub fn new(cfg: &KafkaConfig) -> Result<Self, SourceError> {
        let lag = Arc::new(AtomicI64::new(-1));
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &cfg.brokers)
            .set("group.id", &cfg.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("statistics.interval.ms", "2000");
        if cfg.topics.iter().any(|t| t.starts_with('^')) {
            // A pattern matches topics created later (a table added to the connector); look for
            // them every 10 s rather than librdkafka's default 5 minutes.
            c.set("topic.metadata.refresh.interval.ms", "10000");
        }
        for (k, v) in cfg.properties.iter().chain(&cfg.consumer_properties) {
            c.set(k, v);
        }
        let consumer: StreamConsumer<LagContext> = c
            .create_with_context(LagContext { lag: lag.clone() })
            .map_err(SourceError::Setup)?;
        let topics: Vec<&str> = cfg.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(SourceError::Setup)?;
        Ok(KafkaSource { consumer, lag })
    }

    /// The next message.
    pub async fn recv(&self) -> Result<BorrowedMessage<'_>, KafkaError> {
        self.consumer.recv().await
    }

    /// Commits these next-offsets synchronously. A failure is logged and reported: the data is
    /// already loaded, and a replay of it is harmless.
    pub fn commit(&self, offsets: &[((Arc<str>, i32), i64)]) -> bool {
        if offsets.is_empty() {
            return true;
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), next) in offsets {
            if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*next)) {
                warn!(error = %e, topic = &**topic, partition, "cannot build the offset commit");
            }
        }
        match self.consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => true,
            Err(e) => {
                warn!(error = %e, "offset commit failed; the loaded records may be read again (harmless)");
                false
            }
        }
    }

    /// Measures the lag of the partitions this process owns now (messages after the committed
    /// offsets), asking the broker, and stores it where [`Self::lag_handle`] reads. For the last
    /// stats line: librdkafka's statistics are up to two seconds old.
    pub fn measure_lag(&self) {
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
    pub fn pause(&self, partitions: &[(Arc<str>, i32)], pause: bool) {
        let mut tpl = TopicPartitionList::new();
        for (topic, partition) in partitions {
            tpl.add_partition(topic, *partition);
        }
        let result = if pause {
            self.consumer.pause(&tpl)
        } else {
            self.consumer.resume(&tpl)
        };
        if let Err(e) = result {
            warn!(error = %e, pause, "cannot pause or resume partitions");
        }
    }

    /// Summed consumer lag (messages behind the committed offsets); -1 until known.
    pub fn lag_handle(&self) -> Arc<AtomicI64> {
        self.lag.clone()
    }
}
