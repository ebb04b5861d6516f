//! The run loop: consume → decode → plugin chain → batch → load → commit offsets, in one
//! direction. Owns ordering and delivery guarantees: offsets are committed only after
//! everything before them was loaded or dead-lettered (rejected records included), and every
//! failure is retried with backoff, never skipped.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::message::{Message, OwnedMessage};
use tokio::sync::watch;
use tokio::time::{sleep, sleep_until, Instant};
use tracing::{info, warn};

use crate::batch::{BatchLimits, Batcher, FoldedRow};
use crate::change::TableId;
use crate::change::{KafkaPosition, Op};
use crate::config::{Config, FaultPolicy, TruncateMode};
use crate::decode::{Decoded, Decoder, SchemaRegistry};
use crate::dlq::DeadLetters;
use crate::metrics::Stats;
use crate::plugin::reload::{ChainReloader, Reload};
use crate::plugin::{Outcome, PluginChain, PluginEngine};
use crate::sink::snowflake::{Rejected, SnowflakeSink};
use crate::source::kafka::KafkaSource;

/// Longest wait between two attempts: short enough that a recovered warehouse is used again
/// within seconds, long enough not to hammer one that is down.
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// Refusals of the same batch before floe looks for the rows Snowflake refuses.
const REFUSALS_BEFORE_ISOLATING: u32 = 2;

/// Whether the pipeline was asked to stop.
pub type Shutdown = watch::Receiver<bool>;

/// The assembled pipeline.
pub struct Pipeline {
    cfg: Config,
    source: KafkaSource,
    dlq: DeadLetters,
    sink: SnowflakeSink,
    decoder: Decoder,
    chain: PluginChain,
    reloader: ChainReloader,
    batcher: Batcher,
    /// The Kafka messages of the current batch, by the index the batcher gave each change.
    in_flight: Vec<OwnedMessage>,
    stats: Arc<Stats>,
}

/// The outcome of looking for the rows Snowflake refuses.
enum Isolation {
    /// Every row was loaded or dead-lettered; the number loaded.
    Done(usize),
    /// Shutdown was requested meanwhile.
    Abandoned,
    /// The refusal is not about any row (the table or session is at fault): retry the batch.
    NotRowSpecific(crate::sink::SinkError),
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
    /// Assembles the pipeline. `config_path` is watched for plugin changes (hot swap).
    pub fn new(cfg: Config, config_path: Option<PathBuf>) -> anyhow::Result<Self> {
        let engine = PluginEngine::new(Some(
            cfg.plugins
                .cache_dir
                .clone()
                .unwrap_or_else(|| std::env::temp_dir().join("floe-plugin-cache")),
        ))?;
        let (reloader, chain) = ChainReloader::start(engine, config_path, &cfg.plugins)
            .context("loading the plugin chain")?;
        if !chain.is_empty() {
            info!(plugins = ?chain.names(), on_fault = ?cfg.plugins.on_fault, "plugin chain ready");
        }
        let source = KafkaSource::new(&cfg.kafka).context("creating the Kafka consumer")?;
        let dlq = DeadLetters::new(&cfg.kafka).context("creating the dead-letter producer")?;
        let sink = SnowflakeSink::new(&cfg.snowflake).context("configuring Snowflake")?;
        let registry =
            SchemaRegistry::new(&cfg.registry).context("configuring the schema registry")?;
        let decoder = Decoder::new(registry, cfg.kafka.format, cfg.kafka.topic_formats.clone());
        let batcher = Batcher::new(BatchLimits {
            max_records: cfg.batch.max_records,
            max_wait: cfg.batch_max_wait(),
        });
        Ok(Pipeline {
            cfg,
            source,
            dlq,
            sink,
            decoder,
            chain,
            reloader,
            batcher,
            in_flight: Vec::new(),
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
        let hangup = self.spawn_hangup_listener()?;
        let prometheus = match &self.cfg.stats.prometheus_listen {
            Some(addr) => Some(
                crate::metrics::serve_prometheus(
                    addr,
                    self.stats.clone(),
                    self.source.lag_handle(),
                )
                .await
                .with_context(|| format!("serving metrics on {addr}"))?,
            ),
            None => None,
        };
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
                            self.handle(m, &shutdown).await
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
                    hangup.abort();
                    if let Some(p) = &prometheus {
                        p.abort();
                    }
                    anyhow::bail!("{e}; nothing from the unloaded batch was committed");
                }
            }
        }
        hangup.abort();
        // Stopping: one last attempt at the batch in flight, bounded in time. Offsets are only
        // committed if it loads; otherwise it is read again after the restart. A batch the
        // plugin chain has not seen yet is left for the next run.
        if self.batcher.has_pending() {
            warn!(
                "left the batch in flight unprocessed; its offsets are not committed and it will be read again"
            );
        } else if !self.batcher.is_empty() {
            let batch = self.batcher.current();
            match tokio::time::timeout(Duration::from_secs(10), self.sink.load(batch)).await {
                Ok(Ok(report)) => {
                    self.batcher.take();
                    self.in_flight.clear();
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
        if let Some(p) = prometheus {
            p.abort();
        }
        Ok(())
    }

    /// SIGHUP forces a plugin reload at the next batch boundary.
    fn spawn_hangup_listener(&self) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        use tokio::signal::unix::{signal, SignalKind};
        let flag = self.reloader.hangup_flag();
        let mut hup = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
        Ok(tokio::spawn(async move {
            while hup.recv().await.is_some() {
                info!("SIGHUP: the plugin chain will be reloaded before the next batch");
                flag.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }))
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
    async fn handle(&mut self, msg: OwnedMessage, shutdown: &Shutdown) -> Step {
        Stats::add(&self.stats.consumed, 1);
        let pos = KafkaPosition {
            partition: msg.partition(),
            offset: msg.offset(),
        };
        match self.prepare_schemas(&msg, shutdown).await {
            Step::Done => {}
            other => return other,
        }
        match self
            .decoder
            .decode(msg.topic(), msg.key(), msg.payload(), pos)
        {
            Ok(Decoded::Tombstone) => {
                Stats::add(&self.stats.tombstones, 1);
                self.source.mark(msg.topic(), msg.partition(), msg.offset());
                Step::Done
            }
            Ok(Decoded::Change(change)) if change.op == Op::Truncate => {
                self.sink.note_topic(&change.table, msg.topic());
                match self.flush(shutdown).await {
                    Step::Done => {}
                    other => return other,
                }
                if self.cfg.snowflake.truncate == TruncateMode::Apply {
                    let (table, lsn) = (change.table.clone(), change.position.lsn);
                    let mut backoff = Backoff::new();
                    loop {
                        match self.sink.truncate(&table, lsn).await {
                            Ok(()) => {
                                info!(table = %table.table, "applied a source TRUNCATE");
                                break;
                            }
                            // Refused: typically no target table yet, so nothing to truncate.
                            Err(e) if e.is_refusal() || e.is_permanent() => {
                                Stats::add(&self.stats.errors, 1);
                                warn!(error = %e, table = %table.table, "source TRUNCATE not applied");
                                break;
                            }
                            Err(e) => {
                                Stats::add(&self.stats.errors, 1);
                                warn!(error = %e, retry_in = ?backoff.delay(), "TRUNCATE failed; retrying");
                                if backoff.wait(shutdown).await {
                                    return Step::Abandoned;
                                }
                            }
                        }
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
                self.sink.note_topic(&change.table, msg.topic());
                let index = self.batcher.push(*change);
                debug_assert_eq!(index, self.in_flight.len());
                self.source.mark(msg.topic(), msg.partition(), msg.offset());
                self.in_flight.push(msg);
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
                        self.dlq.send(&msg, "decode", &reason).await
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

    /// Loads the current batch (retrying until it succeeds) and commits the offsets. When
    /// Snowflake keeps refusing the batch, the rows it refuses are found and their source
    /// messages dead-lettered, so one bad record cannot stop the stream.
    async fn flush(&mut self, shutdown: &Shutdown) -> Step {
        if self.batcher.is_empty() {
            return Step::Done;
        }
        if self.batcher.has_pending() {
            match self.run_chain(shutdown).await {
                Step::Done => {}
                other => return other,
            }
            if self.batcher.current().rows() == 0 {
                // Everything was rejected, dropped or dead-lettered: nothing to load.
                self.batcher.take();
                self.in_flight.clear();
                self.source.commit();
                return Step::Done;
            }
        }
        let mut backoff = Backoff::new();
        let mut refusals = 0;
        loop {
            // The batch stays in the batcher until it is loaded, so that stopping mid-retry
            // never commits the offsets of records that did not reach the warehouse.
            let batch = self.batcher.current();
            let result = self.sink.load(batch).await;
            let result = match result {
                Err(e)
                    if e.is_incompatible()
                        || (e.is_refusal() && refusals + 1 >= REFUSALS_BEFORE_ISOLATING) =>
                {
                    warn!(error = %e, "Snowflake keeps refusing the batch; looking for the rows it refuses");
                    match self.isolate(shutdown).await {
                        Isolation::Done(rows) => Ok(rows),
                        Isolation::Abandoned => return Step::Abandoned,
                        Isolation::NotRowSpecific(e) => Err(e),
                    }
                }
                other => other.map(|r| r.rows),
            };
            match result {
                Ok(rows) => {
                    self.batcher.take();
                    self.in_flight.clear();
                    Stats::add(&self.stats.loaded, rows as u64);
                    Stats::add(&self.stats.batches, 1);
                    self.source.commit();
                    return Step::Done;
                }
                Err(e) if e.is_permanent() => return Step::Fatal(e.to_string()),
                Err(e) => {
                    if e.is_refusal() {
                        refusals += 1;
                    }
                    Stats::add(&self.stats.errors, 1);
                    warn!(error = %e, retry_in = ?backoff.delay(), changes = self.batcher.current().changes,
                        "load failed; nothing committed, retrying");
                    if backoff.wait(shutdown).await {
                        return Step::Abandoned;
                    }
                }
            }
        }
    }

    /// Passes the pending changes through the plugin chain (swapping in a reloaded chain first,
    /// if one is due), routes rejected and faulted changes to the dead-letter topic and the
    /// rejects tables, and seals the kept ones into the batch to load.
    async fn run_chain(&mut self, shutdown: &Shutdown) -> Step {
        let mut backoff = Backoff::new();
        let outcomes = loop {
            match self.reloader.poll(&mut self.chain) {
                Reload::Swapped(_) => Stats::add(&self.stats.plugin_reloads, 1),
                Reload::Refused(_) => Stats::add(&self.stats.plugin_reload_failures, 1),
                Reload::Unchanged => {}
            }
            if self.chain.is_empty() {
                break Vec::new();
            }
            // Plugins run synchronously; WASI's sync bindings block on Tokio internally, which
            // is only allowed outside the async context.
            let (chain, batcher) = (&mut self.chain, &mut self.batcher);
            let outcomes = tokio::task::block_in_place(|| chain.run(batcher.pending_mut()));
            let fault = outcomes.iter().find_map(|o| match o {
                Outcome::Fault { plugin, reason } => Some((plugin.clone(), reason.clone())),
                _ => None,
            });
            match (fault, self.reloader.current().on_fault) {
                (Some((plugin, reason)), FaultPolicy::Pause) => {
                    Stats::add(&self.stats.errors, 1);
                    warn!(plugin = %plugin, reason = %reason, retry_in = ?backoff.delay(),
                        "plugin fault; pipeline paused (plugins.on_fault = \"pause\"), nothing committed");
                    if backoff.wait(shutdown).await {
                        return Step::Abandoned;
                    }
                    // The chain may have edited the changes before faulting: start again from
                    // the messages.
                    match self.redecode_pending() {
                        Ok(()) => continue,
                        Err(e) => return Step::Fatal(e),
                    }
                }
                _ => break outcomes,
            }
        };
        let mut refused: Vec<(usize, String, String)> = Vec::new();
        for (i, o) in outcomes.iter().enumerate() {
            match o {
                Outcome::Keep => Stats::add(&self.stats.validated, 1),
                Outcome::Drop { .. } => Stats::add(&self.stats.dropped, 1),
                Outcome::Reject { plugin, reason } => {
                    Stats::add(&self.stats.rejected, 1);
                    refused.push((i, plugin.clone(), reason.clone()));
                }
                Outcome::Fault { plugin, reason } => {
                    Stats::add(&self.stats.plugin_faults, 1);
                    refused.push((i, plugin.clone(), format!("plugin-fault: {reason}")));
                }
            }
        }
        if outcomes.is_empty() {
            Stats::add(
                &self.stats.validated,
                self.batcher.pending_mut().len() as u64,
            );
        }
        if !refused.is_empty() {
            match self.dead_letter_refused(&refused, shutdown).await {
                Step::Done => {}
                other => return other,
            }
        }
        self.batcher
            .seal(|i| outcomes.get(i).is_none_or(|o| *o == Outcome::Keep));
        Step::Done
    }

    /// Fetches the Avro writer schemas `msg` needs, waiting out a registry outage: the batch
    /// read so far is loaded first, then the fetch is retried until the registry answers.
    async fn prepare_schemas(&mut self, msg: &OwnedMessage, shutdown: &Shutdown) -> Step {
        let mut backoff = Backoff::new();
        let mut flushed = false;
        loop {
            let prepared = self
                .decoder
                .prepare(msg.topic(), msg.key(), msg.payload())
                .await;
            match prepared {
                Ok(()) => return Step::Done,
                Err(e) if !e.is_transient() => return Step::Fatal(e.to_string()),
                Err(e) => {
                    Stats::add(&self.stats.errors, 1);
                    warn!(error = %e, retry_in = ?backoff.delay(), offset = msg.offset(),
                        "schema registry unavailable; waiting (nothing is skipped)");
                    if !flushed {
                        flushed = true;
                        match self.flush(shutdown).await {
                            Step::Done => {}
                            other => return other,
                        }
                    }
                    if backoff.wait(shutdown).await {
                        return Step::Abandoned;
                    }
                }
            }
        }
    }

    /// Decodes the pending changes again from their Kafka messages.
    fn redecode_pending(&mut self) -> Result<(), String> {
        let pending = self.batcher.pending_mut();
        for (i, slot) in pending.iter_mut().enumerate() {
            let Some(msg) = self.in_flight.get(i) else {
                return Err(format!("internal: no message for pending change {i}"));
            };
            let pos = KafkaPosition {
                partition: msg.partition(),
                offset: msg.offset(),
            };
            match self
                .decoder
                .decode(msg.topic(), msg.key(), msg.payload(), pos)
            {
                Ok(Decoded::Change(c)) => *slot = *c,
                _ => {
                    return Err(format!(
                        "internal: message at offset {} no longer decodes",
                        msg.offset()
                    ))
                }
            }
        }
        Ok(())
    }

    /// Sends changes refused by the chain to the dead-letter topic and records them in their
    /// tables' rejects tables, retrying until both accepted them.
    async fn dead_letter_refused(
        &mut self,
        refused: &[(usize, String, String)],
        shutdown: &Shutdown,
    ) -> Step {
        let pending = self.batcher.pending_mut();
        let mut rows = Vec::with_capacity(refused.len());
        for (i, plugin, reason) in refused {
            let (Some(msg), Some(change)) = (self.in_flight.get(*i), pending.get(*i)) else {
                continue;
            };
            warn!(plugin = %plugin, partition = msg.partition(), offset = msg.offset(), reason = %reason,
                dlq = self.dlq.topic(), "change refused by a plugin; dead-lettered and recorded in the rejects table");
            rows.push(Rejected {
                table: change.table.clone(),
                topic: msg.topic().to_string(),
                partition: msg.partition(),
                offset: msg.offset(),
                key: msg.key().map(as_text),
                event: msg.payload().map(as_text).unwrap_or_default(),
                reason: reason.clone(),
                plugin: plugin.clone(),
            });
        }
        for (i, plugin, reason) in refused {
            let Some(msg) = self.in_flight.get(*i) else {
                continue;
            };
            let step = self
                .retry("dead-letter send", shutdown, || async {
                    self.dlq
                        .send_with(msg, "plugin", reason, Some(plugin))
                        .await
                })
                .await;
            if !matches!(step, Step::Done) {
                return step;
            }
            Stats::add(&self.stats.dead_lettered, 1);
        }
        let mut backoff = Backoff::new();
        loop {
            match self.sink.record_rejects(&rows).await {
                Ok(()) => return Step::Done,
                Err(e) if e.is_permanent() => return Step::Fatal(e.to_string()),
                Err(e) => {
                    Stats::add(&self.stats.errors, 1);
                    warn!(error = %e, retry_in = ?backoff.delay(), "recording rejects failed; retrying");
                    if backoff.wait(shutdown).await {
                        return Step::Abandoned;
                    }
                }
            }
        }
    }

    /// Loads the current batch piece by piece, halving the pieces Snowflake refuses, until the
    /// refused rows stand alone; their source messages go to the dead-letter topic with
    /// Snowflake's reason. A lone row is only blamed if the same load with no rows succeeds.
    async fn isolate(&mut self, shutdown: &Shutdown) -> Isolation {
        let batch = self.batcher.current();
        let tables: Vec<(TableId, Vec<FoldedRow>)> = batch
            .tables
            .iter()
            .map(|(t, tb)| (t.clone(), tb.rows.clone()))
            .collect();
        let mut loaded = 0;
        let mut refused: Vec<(FoldedRow, String)> = Vec::new();
        for (table, rows) in tables {
            let mut pending = vec![rows];
            while let Some(piece) = pending.pop() {
                let sub = self.batcher.current().subset(&table, &piece);
                match self.sink.load(&sub).await {
                    Ok(r) => loaded += r.rows,
                    // The table cannot take these rows at all: every row of it is refused.
                    Err(e) if e.is_incompatible() => {
                        let reason = e.to_string();
                        refused.extend(piece.into_iter().map(|r| (r, reason.clone())));
                    }
                    Err(e) if e.is_refusal() && piece.len() > 1 => {
                        let (a, b) = piece.split_at(piece.len() / 2);
                        pending.push(b.to_vec());
                        pending.push(a.to_vec());
                    }
                    Err(e) if e.is_refusal() => match self.sink.probe(&sub).await {
                        Ok(()) => refused.push((piece[0].clone(), e.to_string())),
                        Err(_) => return Isolation::NotRowSpecific(e),
                    },
                    Err(e) => return Isolation::NotRowSpecific(e),
                }
            }
        }
        for (row, reason) in refused {
            warn!(partition = row.kafka.partition, offset = row.kafka.offset, reason = %reason,
                dlq = self.dlq.topic(), "row refused by Snowflake; its source messages go to the dead-letter topic");
            for index in &row.sources {
                let Some(msg) = self.in_flight.get(*index) else {
                    continue;
                };
                let step = self
                    .retry("dead-letter send", shutdown, || async {
                        self.dlq.send(msg, "load", &reason).await
                    })
                    .await;
                if !matches!(step, Step::Done) {
                    return Isolation::Abandoned;
                }
                Stats::add(&self.stats.dead_lettered, 1);
            }
        }
        Isolation::Done(loaded)
    }

    async fn retry<F, Fut, E>(&self, what: &str, shutdown: &Shutdown, mut f: F) -> Step
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let mut backoff = Backoff::new();
        loop {
            match f().await {
                Ok(()) => return Step::Done,
                Err(e) => {
                    Stats::add(&self.stats.errors, 1);
                    warn!(error = %e, retry_in = ?backoff.delay(), "{what} failed; retrying");
                    if backoff.wait(shutdown).await {
                        return Step::Abandoned;
                    }
                }
            }
        }
    }
}

/// Message bytes as text for the rejects table: JSON as it is, binary formats (Avro) as
/// `base64:` and their bytes, so nothing is lost and the event can be replayed.
fn as_text(bytes: &[u8]) -> String {
    use base64::Engine as _;
    match std::str::from_utf8(bytes) {
        Ok(s) if !s.starts_with('\0') => s.to_string(),
        _ => format!(
            "base64:{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ),
    }
}

/// Exponential backoff between attempts of one failing step: 250 ms, doubling, capped.
struct Backoff {
    delay: Duration,
}

impl Backoff {
    fn new() -> Self {
        Backoff {
            delay: Duration::from_millis(250),
        }
    }

    /// The wait before the next attempt.
    fn delay(&self) -> Duration {
        self.delay
    }

    /// Waits before the next attempt; returns true if shutdown was requested meanwhile.
    async fn wait(&mut self, shutdown: &Shutdown) -> bool {
        let mut s = shutdown.clone();
        if *s.borrow() {
            return true;
        }
        let stopped = tokio::select! {
            _ = sleep(self.delay) => *s.borrow(),
            _ = s.changed() => true,
        };
        self.delay = (self.delay * 2).min(MAX_BACKOFF);
        stopped
    }
}
