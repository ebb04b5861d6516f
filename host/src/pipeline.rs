//! The run loop: consume → decode → batch → load → commit offsets, in one direction. Owns
//! ordering and delivery guarantees: offsets are committed only after everything before them
//! was loaded or dead-lettered, and every failure is retried with backoff, never skipped.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::message::{Message, OwnedMessage};
use tokio::sync::watch;
use tokio::time::{sleep, sleep_until, Instant};
use tracing::{info, warn};

use crate::batch::{BatchLimits, Batcher};
use crate::change::{KafkaPosition, Op};
use crate::config::{Config, TruncateMode};
use crate::decode::{Decoded, JsonDecoder};
use crate::dlq::DeadLetters;
use crate::metrics::Stats;
use crate::sink::snowflake::SnowflakeSink;
use crate::source::kafka::KafkaSource;

/// Longest wait between two attempts: short enough that a recovered warehouse is used again
/// within seconds, long enough not to hammer one that is down.
const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// Whether the pipeline was asked to stop.
pub type Shutdown = watch::Receiver<bool>;

/// The assembled pipeline.
pub struct Pipeline {
    cfg: Config,
    source: KafkaSource,
    dlq: DeadLetters,
    sink: SnowflakeSink,
    decoder: JsonDecoder,
    batcher: Batcher,
    stats: Arc<Stats>,
}

/// The outcome of one retried step.
enum Step {
    Done,
    /// Shutdown was requested while the step was still failing.
    Abandoned,
    /// A failure that no retry can fix (bad configuration); floe stops with this error.
    Fatal(String),
}

impl Pipeline {
    pub fn new(cfg: Config) -> anyhow::Result<Self> {
        let source = KafkaSource::new(&cfg.kafka).context("creating the Kafka consumer")?;
        let dlq = DeadLetters::new(&cfg.kafka).context("creating the dead-letter producer")?;
        let sink = SnowflakeSink::new(&cfg.snowflake).context("configuring Snowflake")?;
        let batcher = Batcher::new(BatchLimits {
            max_records: cfg.batch.max_records,
            max_wait: cfg.batch_max_wait(),
        });
        Ok(Pipeline {
            cfg,
            source,
            dlq,
            sink,
            decoder: JsonDecoder::new(),
            batcher,
            stats: Arc::new(Stats::default()),
        })
    }

    /// Runs until `shutdown` turns true; then finishes (or safely abandons) the batch in flight,
    /// commits what was loaded and returns.
    ///
    /// With `exit_when_idle`, it also stops once no message arrived for that long and everything
    /// read was loaded (the demo and the tests use this to run "until caught up").
    pub async fn run(
        mut self,
        mut shutdown: Shutdown,
        exit_when_idle: Option<Duration>,
    ) -> anyhow::Result<()> {
        let mut last_message = Instant::now();
        let reporter = self.spawn_stats_reporter(shutdown.clone());
        info!(
            topics = ?self.cfg.kafka.topics,
            group = %self.cfg.kafka.group_id,
            max_records = self.cfg.batch.max_records,
            max_wait_ms = self.cfg.batch.max_wait_ms,
            "floe is running"
        );
        loop {
            if *shutdown.borrow() {
                break;
            }
            let deadline = self.batcher.deadline();
            let idle_at = exit_when_idle.map(|d| last_message + d);
            let step = tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                _ = sleep_until(idle_at.unwrap_or_else(Instant::now)), if idle_at.is_some() && self.batcher.is_empty() => {
                    info!("idle: everything read so far is loaded; exiting as asked");
                    break;
                }
                _ = sleep_until(deadline.map(Instant::from_std).unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    self.flush(&shutdown).await
                }
                msg = self.source.recv() => {
                    match msg {
                        Ok(m) => {
                            last_message = Instant::now();
                            let m = m.detach();
                            self.handle(&m, &shutdown).await
                        }
                        Err(e) => {
                            Stats::add(&self.stats.errors, 1);
                            warn!(error = %e, "Kafka error; retrying");
                            sleep(Duration::from_millis(500)).await;
                            Step::Done
                        }
                    }
                }
            };
            let step = match step {
                Step::Done if self.batcher.is_full() => self.flush(&shutdown).await,
                other => other,
            };
            match step {
                Step::Done => {}
                Step::Abandoned => break,
                Step::Fatal(e) => {
                    reporter.abort();
                    anyhow::bail!("{e}; nothing from the unloaded batch was committed");
                }
            }
        }
        // Stopping: one last attempt at the batch in flight, bounded in time. Offsets are only
        // committed if it loads; otherwise it is read again after the restart.
        if !self.batcher.is_empty() {
            let batch = self.batcher.current();
            match tokio::time::timeout(Duration::from_secs(10), self.sink.load(batch)).await {
                Ok(Ok(report)) => {
                    self.batcher.take();
                    Stats::add(&self.stats.loaded, report.rows as u64);
                    Stats::add(&self.stats.batches, 1);
                    self.source.commit();
                    info!(rows = report.rows, "loaded the last batch");
                }
                _ => warn!(
                    changes = batch.changes,
                    "abandoned the batch in flight; its offsets are not committed and it will be read again"
                ),
            }
        } else if self.source.has_pending() {
            // Only dead-lettered messages and tombstones are pending: they are fully handled.
            self.source.commit();
        }
        let peak_mb = crate::metrics::peak_rss_bytes().map_or(0, |b| b / (1024 * 1024));
        info!(stats = %self.stats.line(&self.source.lag_handle()), peak_rss_mb = peak_mb, "floe stopped");
        reporter.abort();
        Ok(())
    }

    fn spawn_stats_reporter(&self, mut shutdown: Shutdown) -> tokio::task::JoinHandle<()> {
        let stats = self.stats.clone();
        let lag = self.source.lag_handle();
        let every = Duration::from_secs(self.cfg.stats.interval_secs.max(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => info!(target: "floe::stats", "{}", stats.line(&lag)),
                    _ = shutdown.changed() => break,
                }
            }
        })
    }

    /// Handles one message: decode and batch it, or dead-letter it.
    async fn handle(&mut self, msg: &OwnedMessage, shutdown: &Shutdown) -> Step {
        Stats::add(&self.stats.consumed, 1);
        let pos = KafkaPosition {
            partition: msg.partition(),
            offset: msg.offset(),
        };
        match self.decoder.decode(msg.key(), msg.payload(), pos) {
            Ok(Decoded::Tombstone) => {
                Stats::add(&self.stats.tombstones, 1);
                self.source.mark(msg.topic(), msg.partition(), msg.offset());
                Step::Done
            }
            Ok(Decoded::Change(change)) if change.op == Op::Truncate => {
                match self.flush(shutdown).await {
                    Step::Done => {}
                    other => return other,
                }
                if self.cfg.snowflake.truncate == TruncateMode::Apply {
                    let (table, lsn) = (change.table.clone(), change.position.lsn);
                    if let Err(e) = self.sink.truncate(&table, lsn).await {
                        Stats::add(&self.stats.errors, 1);
                        warn!(error = %e, table = %table.table, "truncate not applied");
                    } else {
                        info!(table = %table.table, "applied a source TRUNCATE");
                    }
                } else {
                    info!(table = %change.table.table, "source TRUNCATE ignored (snowflake.truncate = \"ignore\")");
                }
                self.source.mark(msg.topic(), msg.partition(), msg.offset());
                self.source.commit();
                Step::Done
            }
            Ok(Decoded::Change(change)) => {
                Stats::add(&self.stats.decoded, 1);
                self.batcher.push(*change);
                self.source.mark(msg.topic(), msg.partition(), msg.offset());
                Step::Done
            }
            Err(e) => {
                let reason = e.to_string();
                warn!(
                    topic = msg.topic(), partition = msg.partition(), offset = msg.offset(),
                    reason = %reason, dlq = self.dlq.topic(), "undecodable message sent to the dead-letter topic"
                );
                let step = self
                    .retry("dead-letter send", shutdown, || async {
                        self.dlq.send(msg, "decode", &reason).await
                    })
                    .await;
                if let Step::Done = step {
                    Stats::add(&self.stats.dead_lettered, 1);
                    self.source.mark(msg.topic(), msg.partition(), msg.offset());
                }
                step
            }
        }
    }

    /// Loads the current batch (retrying until it succeeds) and commits the offsets.
    async fn flush(&mut self, shutdown: &Shutdown) -> Step {
        if self.batcher.is_empty() {
            return Step::Done;
        }
        let mut backoff = Duration::from_millis(250);
        loop {
            // The batch stays in the batcher until it is loaded, so that stopping mid-retry
            // never commits the offsets of records that did not reach the warehouse.
            let batch = self.batcher.current();
            match self.sink.load(batch).await {
                Ok(report) => {
                    self.batcher.take();
                    Stats::add(&self.stats.loaded, report.rows as u64);
                    Stats::add(&self.stats.batches, 1);
                    self.source.commit();
                    return Step::Done;
                }
                Err(e) if e.is_permanent() => return Step::Fatal(e.to_string()),
                Err(e) => {
                    Stats::add(&self.stats.errors, 1);
                    warn!(error = %e, retry_in = ?backoff, changes = batch.changes,
                        "load failed; nothing committed, retrying");
                    if wait_or_shutdown(backoff, shutdown).await {
                        return Step::Abandoned;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    async fn retry<F, Fut, E>(&self, what: &str, shutdown: &Shutdown, mut f: F) -> Step
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let mut backoff = Duration::from_millis(250);
        loop {
            match f().await {
                Ok(()) => return Step::Done,
                Err(e) => {
                    Stats::add(&self.stats.errors, 1);
                    warn!(error = %e, retry_in = ?backoff, "{what} failed; retrying");
                    if wait_or_shutdown(backoff, shutdown).await {
                        return Step::Abandoned;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// Sleeps for `d`; returns true if shutdown was requested meanwhile.
async fn wait_or_shutdown(d: Duration, shutdown: &Shutdown) -> bool {
    let mut s = shutdown.clone();
    if *s.borrow() {
        return true;
    }
    tokio::select! {
        _ = sleep(d) => *s.borrow(),
        _ = s.changed() => true,
    }
}
