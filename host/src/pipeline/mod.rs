//! The run loop: consume → decode → plugin chain → batch → load → commit offsets, in one
//! direction, over any [`Source`], [`Sink`] and [`DeadLetterQueue`] (Kafka and Snowflake in
//! production, in-memory ones in the run loop's tests). Owns delivery: every message read is
//! open in the source's [`crate::source::ledger::Ledger`] until it is loaded, dead-lettered or
//! skipped on purpose, and only the ledger says what may be committed; messages of partitions
//! revoked in a rebalance are dropped from memory. What a failure leads to is `retry`'s rule,
//! by the failure's class ([`crate::sink::ErrorClass`]): an outage is retried with backoff, a
//! refused row is isolated and dead-lettered, a table that cannot load is blocked alone (its
//! records dead-lettered or held, `snowflake.on_table_error`) while the other tables load, a
//! fatal error stops floe.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::message::{Message, OwnedMessage};
use tokio::sync::watch;
use tokio::time::{sleep, sleep_until, Instant};
use tracing::{info, warn};

use crate::batch::{remove_indexes, BatchLimits, Batcher, FoldedRow, TableBatch};
use crate::change::TableId;
use crate::change::{Change, KafkaPosition};
use crate::config::{Config, FaultPolicy, TableErrorPolicy, TruncateMode};
use crate::decode::{Decoded, Decoder, SchemaRegistry};
use crate::dlq::{DeadLetterQueue, DeadLetters};
use crate::metrics::Stats;
use crate::plugin::reload::{ChainReloader, Reload};
use crate::plugin::{Outcome, PluginChain, PluginEngine};
use crate::sink::snowflake::pool::SinkPool;
use crate::sink::{ErrorClass, Rejected, Sink, SinkError};
use crate::source::kafka::KafkaSource;
use crate::source::ledger::{Partition, Read};
use crate::source::{Loading, Source, SourceError};

mod intake;
mod isolate;
mod retry;
use intake::{Admitted, Intake, ReadAhead};
use isolate::Isolation;
use retry::{AfterLoad, Backoff, Next};

/// How often the run loop looks for a changed plugin config or a finished chain build.
const RELOAD_TICK: Duration = Duration::from_millis(250);

/// How often an idle run loop pings Snowflake while the last attempt to reach it failed, and
/// how long it waits for the answer.
const PING_EVERY: Duration = Duration::from_secs(10);

/// Whether the pipeline was asked to stop.
pub type Shutdown = watch::Receiver<bool>;

/// A table that cannot be loaded now.
struct Blocked {
    /// Its target's name and why, for logs and the stats line.
    target: String,
    reason: String,
    /// `on_table_error = "pause"`: its messages, waiting in read order (their offsets stay
    /// open in the ledger), and the partitions paused for it.
    held: Vec<OwnedMessage>,
    paused: Vec<Partition>,
    /// When the held messages are tried again, and the wait after that.
    retry_at: Instant,
    backoff: Duration,
    /// The held messages are being tried again: they go through as if the table loaded.
    retrying: bool,
}

/// The assembled pipeline: Kafka to Snowflake in production; any [`Source`], [`Sink`] and
/// [`DeadLetterQueue`] in tests (the in-memory ones drive the run loop's unit tests).
pub struct Pipeline<Src = KafkaSource, Snk = SinkPool, Dlq = DeadLetters> {
    cfg: Config,
    source: Src,
    dlq: Dlq,
    sinks: Snk,
    decoder: Decoder,
    chain: PluginChain,
    reloader: ChainReloader,
    batcher: Batcher,
    /// The Kafka messages of the batch being filled, by the index the batcher gave each change.
    in_flight: Vec<OwnedMessage>,
    /// The Kafka messages of the batch being loaded (the batch filled before, while it loads).
    loading: Vec<OwnedMessage>,
    /// Partitions revoked while a batch was loading: its messages of them are no longer this
    /// process's to dead-letter, hold or commit.
    gone: Vec<Partition>,
    /// A message read ahead that needs the run loop; handled before any other.
    kept: Option<OwnedMessage>,
    blocked: HashMap<TableId, Blocked>,
    /// The chain and the pending changes are on the blocking pool ([`Pipeline::run_plugins`]);
    /// still set after it returned means its run was abandoned half-way, and nothing of the
    /// batch may be loaded or committed.
    plugins_away: bool,
    /// The plugin chain's outcomes for the pending changes, from a run while the batch before
    /// loaded; given up if the pending changes change meanwhile.
    ran_ahead: Option<Vec<Outcome>>,
    /// The pending changes went through the chain (which may have edited them): before it
    /// runs on them again, they are decoded again from their messages.
    pending_edited: bool,
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
    /// Assembles the pipeline from Kafka to Snowflake. `config_path` is watched for plugin
    /// changes (hot swap).
    pub fn new(cfg: Config, config_path: Option<PathBuf>) -> anyhow::Result<Self> {
        // The consumer joins its group as soon as it exists: it is created last, once the
        // plugin chain and everything else that can refuse the configuration are ready.
        Pipeline::assemble(cfg, config_path, |cfg| {
            let dlq = DeadLetters::new(&cfg.kafka).context("creating the dead-letter producer")?;
            let sinks = SinkPool::new(&cfg.snowflake).context("configuring Snowflake")?;
            let source = KafkaSource::new(&cfg.kafka).context("creating the Kafka consumer")?;
            Ok((source, sinks, dlq))
        })
    }
}

impl<Src: Source, Snk: Sink, Dlq: DeadLetterQueue> Pipeline<Src, Snk, Dlq> {
    /// Assembles the pipeline around a source, a sink and a dead-letter queue; the decoder,
    /// the plugin chain and the batcher come from `cfg`.
    pub fn with_parts(
        cfg: Config,
        config_path: Option<PathBuf>,
        source: Src,
        sinks: Snk,
        dlq: Dlq,
    ) -> anyhow::Result<Self> {
        Pipeline::assemble(cfg, config_path, |_| Ok((source, sinks, dlq)))
    }

    /// Builds the plugin chain, the decoder and the batcher, then the parts (`parts`).
    fn assemble(
        cfg: Config,
        config_path: Option<PathBuf>,
        parts: impl FnOnce(&Config) -> anyhow::Result<(Src, Snk, Dlq)>,
    ) -> anyhow::Result<Self> {
        let engine = PluginEngine::new(Some(
            cfg.plugins
                .cache_dir
                .clone()
                .unwrap_or_else(|| std::env::temp_dir().join("floe-plugin-cache")),
        ))?;
        let (reloader, mut chain) = ChainReloader::start(engine, config_path, &cfg.plugins)
            .context("loading the plugin chain")?;
        // Plugins may not edit floe's own columns (a reloaded chain keeps the list).
        chain.set_reserved_columns(
            cfg.snowflake
                .columns
                .named()
                .iter()
                .map(|(_, name)| name.to_string())
                .collect(),
        );
        if !chain.is_empty() {
            info!(plugins = ?chain.names(), on_fault = ?cfg.plugins.on_fault, "plugin chain ready");
        }
        let registry =
            SchemaRegistry::new(&cfg.registry).context("configuring the schema registry")?;
        let decoder = Decoder::new(registry, cfg.kafka.format, cfg.kafka.topic_formats.clone());
        let batcher = Batcher::new(BatchLimits {
            max_records: cfg.batch.max_records,
            max_wait: cfg.batch_max_wait(),
            max_bytes: cfg.batch.max_bytes,
            backlog_max_records: cfg.batch.backlog_max_records,
        });
        let (source, sinks, dlq) = parts(&cfg)?;
        Ok(Pipeline {
            cfg,
            source,
            dlq,
            sinks,
            decoder,
            chain,
            reloader,
            batcher,
            in_flight: Vec::new(),
            loading: Vec::new(),
            gone: Vec::new(),
            kept: None,
            blocked: HashMap::new(),
            plugins_away: false,
            ran_ahead: None,
            pending_edited: false,
            stats: Arc::new(Stats::default()),
        })
    }

    /// The counters the stats line and `/metrics` report.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
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
                crate::endpoints::serve(
                    addr,
                    self.stats.clone(),
                    self.source.lag_handle(),
                    self.source.reachable_handle(),
                )
                .await
                .with_context(|| format!("serving metrics on {addr}"))?,
            ),
            None => None,
        };
        let alerts = crate::alerts::spawn(
            &self.cfg.alerts,
            &self.cfg.kafka.group_id,
            self.stats.clone(),
            self.source.lag_handle(),
            self.source.reachable_handle(),
        );
        // The stats line, the HTTP endpoints and the alerts, stopped with the run loop.
        let background: Vec<tokio::task::JoinHandle<()>> = [Some(reporter), prometheus, alerts]
            .into_iter()
            .flatten()
            .collect();
        // For /readyz: whether Snowflake answers before anything is loaded.
        self.ping_warehouse(&shutdown).await;
        let mut last_ping = Instant::now();
        info!(
            topics = ?self.cfg.kafka.topics,
            group = %self.cfg.kafka.group_id,
            max_records = self.cfg.batch.max_records,
            max_wait_ms = self.cfg.batch.max_wait_ms,
            "floe is running"
        );
        // Between batches the chain is not running: a changed config or plugin file is looked
        // for, and a chain built meanwhile swapped in, on this tick as well as before each batch.
        let mut reload_tick = tokio::time::interval(RELOAD_TICK);
        reload_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if *shutdown.borrow() {
                break;
            }
            // A rebalance runs inside a poll that may return no message: drop what left before
            // anything else (a flush by time, a held table's retry) could load it.
            self.drop_revoked();
            let deadline = self.batcher.deadline();
            let idle_at = exit_when_idle.map(|d| last_message + d);
            let retry_held = self
                .blocked
                .values()
                .filter(|b| !b.held.is_empty())
                .map(|b| b.retry_at)
                .min();
            let mut worked = true;
            let step = if let Some(msg) = self.kept.take() {
                // Read ahead while the last batch loaded: it is in the ledger already.
                self.handle_read(msg, &shutdown).await
            } else {
                tokio::select! {
                    biased;
                    _ = shutdown.changed() => break,
                    _ = sleep_until(idle_at.unwrap_or_else(Instant::now)), if idle_at.is_some() && self.batcher.is_empty() && !self.source.has_open() => {
                        info!("idle: everything read so far is loaded; exiting as asked");
                        break;
                    }
                    _ = sleep_until(retry_held.unwrap_or_else(Instant::now)), if retry_held.is_some() => {
                        self.retry_held(&shutdown).await
                    }
                    _ = sleep_until(deadline.map(Instant::from_std).unwrap_or_else(Instant::now)), if deadline.is_some() => {
                        self.flush(&shutdown, true).await
                    }
                    _ = reload_tick.tick() => {
                        worked = false;
                        self.poll_reload();
                        // Loads retry while Snowflake is out; with nothing to load, a ping
                        // tells /readyz when it is back.
                        // Not after a refused login: Snowflake locks a user after a few.
                        if !self.stats.health.is_snowflake_up()
                            && !self.stats.health.is_snowflake_refusing()
                            && self.batcher.is_empty()
                            && last_ping.elapsed() >= PING_EVERY
                        {
                            self.ping_warehouse(&shutdown).await;
                            last_ping = Instant::now();
                        }
                        Step::Done
                    }
                    msg = self.source.recv() => {
                        match msg {
                            Ok(m) => {
                                // A rebalance runs inside the poll: drop what left first.
                                self.drop_revoked();
                                self.handle(m, &shutdown).await
                            }
                            Err(SourceError::Stopped) => Step::Fatal(SourceError::Stopped.to_string()),
                            Err(e) => {
                                worked = false;
                                Stats::add(&self.stats.errors, 1);
                                warn!(error = %e, "Kafka error; retrying");
                                sleep(Duration::from_millis(500)).await;
                                Step::Done
                            }
                        }
                    }
                }
            };
            let step = match step {
                // Between two messages: the next batch may be read while this one loads.
                Step::Done if self.batcher.is_full() => self.flush(&shutdown, true).await,
                other => other,
            };
            // Idle time counts from the end of the last piece of work: time spent loading is
            // not idle (nothing was read meanwhile, yet more may be waiting).
            if worked {
                last_message = Instant::now();
            }
            match step {
                Step::Done => {}
                Step::Abandoned => break,
                Step::Fatal(e) => {
                    hangup.abort();
                    background.iter().for_each(|t| t.abort());
                    anyhow::bail!("{e}; nothing from the unloaded batch was committed");
                }
            }
        }
        hangup.abort();
        // Stopping: one last attempt at the batch in flight, bounded in time. Offsets are only
        // committed for what it loaded; the rest is read again after the restart. A batch the
        // plugin chain has not seen yet is left for the next run.
        if self.batcher.has_pending() {
            warn!(
                "left the batch in flight unprocessed; its offsets are not committed and it will be read again"
            );
        } else if !self.batcher.is_empty() {
            let changes = self.batcher.current().changes;
            match tokio::time::timeout(Duration::from_secs(10), self.flush(&shutdown, false)).await {
                Ok(Step::Done) => info!(changes, "loaded the last batch"),
                _ => warn!(
                    changes,
                    "abandoned the batch in flight; its offsets are not committed and it will be read again"
                ),
            }
        }
        self.commit();
        let peak_mb = crate::metrics::peak_rss_bytes().map_or(0, |b| b / (1024 * 1024));
        self.source.measure_lag();
        info!(stats = %self.stats.line(&self.source.lag_handle()), peak_rss_mb = peak_mb, "floe stopped");
        background.iter().for_each(|t| t.abort());
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

    /// Handles one message: decode and batch it, or dead-letter it. A message still in flight
    /// (delivered again after a rebalance) or of a revoked partition is ignored.
    async fn handle(&mut self, msg: OwnedMessage, shutdown: &Shutdown) -> Step {
        match self.source.read(&msg) {
            Read::New => {
                Stats::add(&self.stats.consumed, 1);
                self.handle_read(msg, shutdown).await
            }
            Read::Again | Read::NotOwned => Step::Done,
        }
    }

    /// Drops the messages of partitions revoked in a rebalance: the batch's (nothing of it is
    /// sealed between two messages) and the held ones. The ledger forgot them already, so none
    /// is committed here; their new owner reads them again.
    fn drop_revoked(&mut self) {
        let revoked = self.source.take_revoked();
        self.drop_partitions(revoked);
    }

    /// Drops the messages of `revoked` partitions (see [`Pipeline::drop_revoked`]); those of
    /// the batch loading now are remembered as no longer this process's.
    fn drop_partitions(&mut self, revoked: Vec<Partition>) {
        if revoked.is_empty() {
            return;
        }
        let gone = |m: &OwnedMessage| {
            revoked
                .iter()
                .any(|(t, p)| **t == *m.topic() && *p == m.partition())
        };
        let drop: Vec<bool> = self.in_flight.iter().map(gone).collect();
        if drop.iter().any(|d| *d) {
            // Changes are sealed only inside a flush, which loads them before it returns.
            debug_assert_eq!(self.batcher.current().changes, 0, "revoked changes sealed");
            let dropped = self
                .batcher
                .drop_pending(|i| drop.get(i).copied().unwrap_or(false));
            if dropped > 0 {
                self.ran_ahead = None;
                remove_indexes(&mut self.in_flight, |i| drop[i]);
                info!(
                    dropped,
                    "dropped the revoked partitions' changes from the open batch"
                );
            }
        }
        for b in self.blocked.values_mut() {
            b.held.retain(|m| !gone(m));
            b.paused.retain(|p| !revoked.contains(p));
        }
        if self.kept.as_ref().is_some_and(gone) {
            self.kept = None;
        }
        if !self.loading.is_empty() {
            self.gone.extend(revoked);
        }
    }

    /// Handles a message already in the ledger (read now, or held back and tried again).
    async fn handle_read(&mut self, msg: OwnedMessage, shutdown: &Shutdown) -> Step {
        match self.prepare_schemas(&msg, shutdown).await {
            Step::Done => {}
            other => return other,
        }
        match self.intake().admit(msg) {
            Admitted::Tombstone => Step::Done,
            Admitted::Batched(table) => {
                if let Some(m) = self.in_flight.last() {
                    self.sinks.note_topic(&table, m.topic());
                }
                Step::Done
            }
            Admitted::Held(msg, table) => {
                self.hold(&table, vec![msg]);
                Step::Done
            }
            Admitted::Truncate(msg, change) => {
                self.sinks.note_topic(&change.table, msg.topic());
                match self.flush(shutdown, false).await {
                    Step::Done => {}
                    other => return other,
                }
                self.truncate(&change.table, change.position, msg, shutdown)
                    .await
            }
            Admitted::Undecodable(msg, e) => {
                let reason = e.to_string();
                warn!(
                    topic = msg.topic(), partition = msg.partition(), offset = msg.offset(),
                    reason = %reason, dlq = self.dlq.topic(), "undecodable message sent to the dead-letter topic"
                );
                self.dead_letter(&msg, "decode", &reason, None, shutdown)
                    .await
            }
        }
    }

    /// Applies a source TRUNCATE (between batches), or not, as configured. Retried while
    /// Snowflake is out; never skipped: if the table cannot take it, the message is
    /// dead-lettered or held like the table's other records.
    async fn truncate(
        &mut self,
        table: &TableId,
        position: crate::change::SourcePosition,
        msg: OwnedMessage,
        shutdown: &Shutdown,
    ) -> Step {
        if self.cfg.snowflake.truncate == TruncateMode::Ignore {
            info!(table = %table.table, "source TRUNCATE ignored (snowflake.truncate = \"ignore\")");
            self.done(&msg);
            self.commit();
            return Step::Done;
        }
        let mut backoff = Backoff::new();
        loop {
            let gate = self.source.load_gate().hold().await;
            self.drop_revoked();
            if !self.source.owns(&msg) {
                // Its partition left: the new owner applies it, after anything loaded here.
                info!(table = %table.table, "source TRUNCATE left to the partition's new owner");
                return Step::Done;
            }
            let result = self.sinks.truncate(table, position).await;
            self.note_warehouse([&result]);
            match result {
                Ok(()) => {
                    info!(table = %table.table, "applied a source TRUNCATE");
                    self.unblock(table);
                    self.done(&msg);
                    self.commit();
                    return Step::Done;
                }
                Err(e) => match retry::after_table_step(e.class()) {
                    Next::Stop => return Step::Fatal(e.to_string()),
                    Next::Block => {
                        return self.block(table, &e, vec![msg], shutdown).await;
                    }
                    Next::Retry => {
                        Stats::add(&self.stats.errors, 1);
                        warn!(error = %e, retry_in = ?backoff.delay(), "TRUNCATE failed; retrying");
                        drop(gate);
                        if backoff.wait(shutdown).await {
                            return Step::Abandoned;
                        }
                    }
                },
            }
        }
    }

    /// Sends one message to the dead-letter topic (retrying until the broker accepts it) and
    /// marks it done.
    async fn dead_letter(
        &mut self,
        msg: &OwnedMessage,
        stage: &str,
        reason: &str,
        plugin: Option<&str>,
        shutdown: &Shutdown,
    ) -> Step {
        let step = self
            .retry("dead-letter send", shutdown, || async {
                self.dlq.send_with(msg, stage, reason, plugin).await
            })
            .await;
        if let Step::Done = step {
            Stats::add(&self.stats.dead_lettered, 1);
            self.done(msg);
        }
        step
    }

    /// The message is fully handled: its offset may be committed.
    fn done(&mut self, msg: &OwnedMessage) {
        self.source.done(msg);
    }

    /// Commits what the ledger allows.
    fn commit(&mut self) {
        self.source.commit();
    }

    /// The parts a message read goes through into the batch.
    fn intake(&mut self) -> Intake<'_, Src> {
        Intake {
            source: &self.source,
            decoder: &mut self.decoder,
            batcher: &mut self.batcher,
            in_flight: &mut self.in_flight,
            stats: &self.stats,
            blocked: &self.blocked,
            pause: self.cfg.snowflake.on_table_error == TableErrorPolicy::Pause,
        }
    }

    /// Changes read ahead while their table got blocked (`on_table_error = "pause"`) join its
    /// held messages, behind the older ones, instead of loading before them.
    fn hold_read_ahead(&mut self) {
        let pause = self.cfg.snowflake.on_table_error == TableErrorPolicy::Pause;
        let held: Vec<(usize, TableId)> = self
            .batcher
            .pending_mut()
            .iter()
            .enumerate()
            .filter(|(_, c)| intake::is_held(&self.blocked, pause, &c.table))
            .map(|(i, c)| (i, c.table.clone()))
            .collect();
        if held.is_empty() {
            return;
        }
        let mut by_table: Vec<(TableId, Vec<OwnedMessage>)> = Vec::new();
        for (i, table) in &held {
            let Some(msg) = self.in_flight.get(*i).cloned() else {
                continue;
            };
            match by_table.iter_mut().find(|(t, _)| t == table) {
                Some((_, msgs)) => msgs.push(msg),
                None => by_table.push((table.clone(), vec![msg])),
            }
        }
        let indexes: HashSet<usize> = held.iter().map(|(i, _)| *i).collect();
        if self.batcher.drop_pending(|i| indexes.contains(&i)) == indexes.len() {
            self.ran_ahead = None;
            remove_indexes(&mut self.in_flight, |i| indexes.contains(&i));
            for (table, msgs) in by_table {
                self.hold(&table, msgs);
            }
        }
    }

    /// Adds messages to a paused table's held ones, pausing their partitions.
    fn hold(&mut self, table: &TableId, msgs: Vec<OwnedMessage>) {
        // Callers block the table first; a message is never dropped from memory while its
        // offset stays open.
        let Some(b) = self.blocked.get_mut(table) else {
            debug_assert!(false, "hold without a blocked entry");
            return;
        };
        let mut pause = Vec::new();
        for m in &msgs {
            let p: Partition = (Arc::from(m.topic()), m.partition());
            if !b.paused.contains(&p) {
                b.paused.push(p.clone());
                pause.push(p);
            }
        }
        b.held.extend(msgs);
        if !pause.is_empty() {
            self.source.pause(&pause, true);
        }
    }

    /// `table` cannot be loaded: its messages `msgs` are dead-lettered with the reason, or held
    /// back (`snowflake.on_table_error`). Other tables go on.
    async fn block(
        &mut self,
        table: &TableId,
        error: &SinkError,
        msgs: Vec<OwnedMessage>,
        shutdown: &Shutdown,
    ) -> Step {
        Stats::add(&self.stats.errors, 1);
        let target = self.sinks.table_name(table);
        let reason = error.to_string();
        let policy = self.cfg.snowflake.on_table_error;
        let entry = self.blocked.entry(table.clone());
        let fresh = matches!(entry, std::collections::hash_map::Entry::Vacant(_));
        let b = entry.or_insert_with(|| Blocked {
            target: target.clone(),
            reason: reason.clone(),
            held: Vec::new(),
            paused: Vec::new(),
            retry_at: Instant::now(),
            backoff: retry::FIRST_TABLE_BACKOFF,
            retrying: false,
        });
        b.reason = reason.clone();
        b.retrying = false;
        self.stats.set_blocked(&target, Some(&reason));
        match policy {
            TableErrorPolicy::DeadLetter => {
                if fresh {
                    warn!(table = %target, source = %format!("{}.{}", table.schema, table.table), reason = %reason,
                        "table cannot be loaded: its records go to the dead-letter topic (snowflake.on_table_error = \"dead-letter\"); other tables keep loading");
                }
                let reason = format!("table {target} cannot be loaded: {reason}");
                for m in &msgs {
                    match self.dead_letter(m, "load", &reason, None, shutdown).await {
                        Step::Done => {}
                        other => return other,
                    }
                }
                self.stats
                    .table(&target, |c| c.dead_lettered += msgs.len() as u64);
            }
            TableErrorPolicy::Pause => {
                b.retry_at = Instant::now() + b.backoff;
                if fresh {
                    warn!(table = %target, reason = %reason, retry_in = ?b.backoff,
                        "table cannot be loaded: its records wait, nothing of them is committed (snowflake.on_table_error = \"pause\"); other tables keep loading");
                }
                self.hold(table, msgs);
            }
        }
        Step::Done
    }

    /// `table` loaded: it is no longer blocked.
    fn unblock(&mut self, table: &TableId) {
        if let Some(b) = self.blocked.remove(table) {
            info!(table = %b.target, "table loads again");
            self.stats.set_blocked(&b.target, None);
            if !b.paused.is_empty() {
                self.source.pause(&b.paused, false);
            }
        }
    }

    /// Tries the held-back messages of the paused tables that are due again: they go through
    /// decode, plugins and a load as if just read; a table that still fails holds them again
    /// (`block`), waiting twice as long; one that loads (or whose messages all went elsewhere:
    /// dropped, rejected, dead-lettered) is unblocked.
    async fn retry_held(&mut self, shutdown: &Shutdown) -> Step {
        self.drop_revoked();
        let now = Instant::now();
        let due: Vec<TableId> = self
            .blocked
            .iter()
            .filter(|(_, b)| !b.held.is_empty() && b.retry_at <= now)
            .map(|(t, _)| t.clone())
            .collect();
        for table in due {
            let Some(b) = self.blocked.get_mut(&table) else {
                continue;
            };
            let msgs = std::mem::take(&mut b.held);
            b.backoff = retry::next_table_backoff(b.backoff);
            b.retry_at = Instant::now() + b.backoff;
            b.retrying = true;
            info!(table = %b.target, messages = msgs.len(), "trying a held-back table again");
            for m in msgs {
                match self.handle_read(m, shutdown).await {
                    Step::Done => {}
                    other => return other,
                }
                if self.batcher.is_full() {
                    match self.flush(shutdown, false).await {
                        Step::Done => {}
                        other => return other,
                    }
                }
            }
            match self.flush(shutdown, false).await {
                Step::Done => {}
                other => return other,
            }
            // Still marked retrying: nothing of the table failed again.
            if self.blocked.get(&table).is_some_and(|b| b.retrying) {
                self.unblock(&table);
            }
        }
        Step::Done
    }

    /// Loads the current batch, its tables concurrently over the sink's sessions, and commits
    /// what the ledger then allows. An outage is retried (only the tables not loaded yet); rows
    /// Snowflake keeps refusing are found and dead-lettered; a table that cannot load is
    /// blocked alone. With `read_ahead` (called between two messages), the next batch is read
    /// while the warehouse loads this one.
    async fn flush(&mut self, shutdown: &Shutdown, read_ahead: bool) -> Step {
        if self.plugins_away {
            // The batch's changes never came back from the plugin chain: marking its messages
            // done would commit what was never loaded.
            return Step::Fatal("internal: the plugin chain's run was abandoned half-way".into());
        }
        self.drop_revoked();
        if self.batcher.is_empty() {
            return Step::Done;
        }
        if self.batcher.has_pending() {
            match self.run_chain(shutdown).await {
                Step::Done => {}
                other => return other,
            }
        }
        // Out of the batcher: from here on, a message is committed only once the ledger says
        // it is done, so dropping the batch on shutdown loses nothing.
        let mut batch = self.batcher.take();
        // The next batch fills from index 0 while this one loads.
        self.loading = std::mem::take(&mut self.in_flight);
        self.gone.clear();
        let mut todo: Vec<TableId> = batch.tables.keys().cloned().collect();
        todo.sort_by(|a, b| (&a.schema, &a.table).cmp(&(&b.schema, &b.table)));
        let mut refusals: HashMap<TableId, u32> = HashMap::new();
        let mut handled: HashSet<usize> = HashSet::new();
        let mut loaded = 0usize;
        let mut backoff = Backoff::new();
        let mut gate: Option<Loading> = None;
        while !todo.is_empty() {
            // No revocation completes during this attempt (the gate): what left before it is
            // left out now, since a statement about it could land after its new owner's.
            // Held on after the last attempt until its messages are marked done, so that a
            // revocation right after it commits what it loaded.
            gate = Some(self.source.load_gate().hold().await);
            self.drop_revoked();
            if !self.gone.is_empty() {
                todo = self.without_gone(&mut batch, todo);
                if todo.is_empty() {
                    break;
                }
            }
            let mut again = Vec::new();
            // Every table's first attempt at once (over the sessions); the failures are then
            // handled one table at a time.
            let jobs: Vec<(&TableId, &TableBatch)> =
                todo.iter().map(|t| (t, &batch.tables[t])).collect();
            let results = if read_ahead {
                self.load_reading_ahead(&jobs, shutdown).await
            } else {
                self.sinks.load_tables(&jobs).await
            };
            if self.plugins_away {
                return Step::Fatal("the plugin chain's run on the next batch failed".into());
            }
            // A revocation that gave up waiting for this load (the gate): what left is no
            // longer this process's to retry, dead-letter, hold or commit.
            self.drop_revoked();
            self.note_warehouse(&results);
            for (table, result) in todo.iter().zip(results) {
                let tb = &batch.tables[table];
                let error = match result {
                    Ok(n) => {
                        loaded += n;
                        self.stats
                            .table(&self.sinks.table_name(table), |c| c.loaded += n as u64);
                        self.unblock(table);
                        continue;
                    }
                    Err(e) => e,
                };
                let refused = refusals.entry(table.clone()).or_insert(0);
                let (error, next) = match retry::after_load(error.class(), refused) {
                    AfterLoad::Isolate => {
                        warn!(error = %error, "Snowflake keeps refusing the rows of a table; looking for the rows it refuses");
                        match self.isolate(table, tb, &mut handled, shutdown).await {
                            Isolation::Done(n) => {
                                loaded += n;
                                self.stats
                                    .table(&self.sinks.table_name(table), |c| c.loaded += n as u64);
                                self.unblock(table);
                                continue;
                            }
                            Isolation::Abandoned => return Step::Abandoned,
                            Isolation::NotRowSpecific(e) => {
                                let next = retry::after_table_step(e.class());
                                (e, next)
                            }
                        }
                    }
                    AfterLoad::Then(next) => (error, next),
                };
                match next {
                    Next::Stop => return Step::Fatal(error.to_string()),
                    Next::Block => {
                        let msgs = self.messages_of(&tb.rows, &mut handled);
                        match self.block(table, &error, msgs, shutdown).await {
                            Step::Done => {}
                            other => return other,
                        }
                    }
                    Next::Retry => {
                        Stats::add(&self.stats.errors, 1);
                        warn!(error = %error, retry_in = ?backoff.delay(), changes = tb.rows.len(),
                            "load failed; nothing committed, retrying");
                        again.push(table.clone());
                    }
                }
            }
            // A revocation that gave up waiting for this attempt.
            if !self.gone.is_empty() {
                again = self.without_gone(&mut batch, again);
            }
            if !again.is_empty() {
                gate = None;
                if backoff.wait(shutdown).await {
                    return Step::Abandoned;
                }
            }
            todo = again;
        }
        for (i, msg) in std::mem::take(&mut self.loading).iter().enumerate() {
            // A message of a partition that left is never marked done here: if the partition
            // came back meanwhile, its offset is open again for the copy read anew.
            if !handled.contains(&i) && !self.is_gone(msg) {
                self.done(msg);
            }
        }
        self.commit();
        drop(gate);
        self.gone.clear();
        self.hold_read_ahead();
        Stats::add(&self.stats.loaded, loaded as u64);
        Stats::add(&self.stats.batches, 1);
        self.stats.statements.store(
            self.sinks.statements(),
            std::sync::atomic::Ordering::Relaxed,
        );
        Step::Done
    }

    /// Notes for `/readyz` whether Snowflake answered `results` (one attempt's): a transient
    /// failure (the network, an outage, a timeout) or a refused login is not an answer; a table
    /// or a row refused is. The reasons are fixed texts: an error's own text may quote a
    /// response, and the endpoint is not authenticated (the log has the error).
    fn note_warehouse<'a, T: 'a>(
        &self,
        results: impl IntoIterator<Item = &'a Result<T, SinkError>>,
    ) {
        let mut worst = None;
        for r in results {
            match r.as_ref().err().map(SinkError::class) {
                Some(ErrorClass::Fatal) => worst = Some(ErrorClass::Fatal),
                Some(ErrorClass::Transient) if worst.is_none() => {
                    worst = Some(ErrorClass::Transient)
                }
                _ => {}
            }
        }
        let health = &self.stats.health;
        match worst {
            None => health.snowflake_up(),
            Some(ErrorClass::Fatal) => health.snowflake_refused(),
            Some(_) => health
                .snowflake_down("unreachable (network, outage or timeout; the log has the error)"),
        }
    }

    /// Pings Snowflake for `/readyz`, waiting at most [`PING_EVERY`], or until floe stops.
    async fn ping_warehouse(&mut self, shutdown: &Shutdown) {
        let mut stopping = shutdown.clone();
        tokio::select! {
            answer = tokio::time::timeout(PING_EVERY, self.sinks.ping()) => match answer {
                Ok(result) => {
                    if let Err(e) = &result {
                        warn!(error = %e, "Snowflake does not answer, or refuses floe");
                    }
                    self.note_warehouse([&result]);
                }
                Err(_) => self.stats.health.snowflake_down("no answer within 10 s"),
            },
            _ = stopping.changed() => {}
        }
    }

    /// Whether `msg`'s partition was revoked while its batch loaded.
    fn is_gone(&self, msg: &OwnedMessage) -> bool {
        self.gone
            .iter()
            .any(|(t, p)| **t == *msg.topic() && *p == msg.partition())
    }

    /// Takes the rows whose every source message is of a partition revoked meanwhile out of the
    /// tables to load again (`again`): their new owner loads them, and a late retry here could
    /// undo what it loaded (a hard delete leaves nothing to compare positions with). Tables left
    /// with no rows are not loaded again.
    fn without_gone(&self, batch: &mut crate::batch::Batch, again: Vec<TableId>) -> Vec<TableId> {
        let gone_row = |r: &FoldedRow| {
            r.sources
                .iter()
                .all(|i| self.loading.get(*i).is_some_and(|m| self.is_gone(m)))
        };
        again
            .into_iter()
            .filter(|t| {
                batch.tables.get_mut(t).is_some_and(|tb| {
                    tb.rows.retain(|r| !gone_row(r));
                    !tb.rows.is_empty()
                })
            })
            .collect()
    }

    /// The source messages of `rows` in the batch loading (cloned out of it), each once; they
    /// are recorded in `handled` because whoever takes them dead-letters or holds them. Those
    /// of partitions revoked meanwhile are left out: their new owner reads them again.
    fn messages_of(&self, rows: &[FoldedRow], handled: &mut HashSet<usize>) -> Vec<OwnedMessage> {
        let mut indexes: Vec<usize> = rows
            .iter()
            .flat_map(|r| r.sources.iter().copied())
            .filter(|i| handled.insert(*i))
            .collect();
        indexes.sort_unstable();
        indexes
            .into_iter()
            .filter_map(|i| self.loading.get(i))
            .filter(|m| !self.is_gone(m))
            .cloned()
            .collect()
    }

    /// One load of the batch's tables while the next batch is read ahead ([`intake`]); the
    /// reading stops when the load is back.
    async fn load_reading_ahead(
        &mut self,
        jobs: &[(&TableId, &TableBatch)],
        shutdown: &Shutdown,
    ) -> Vec<Result<usize, SinkError>> {
        if self.kept.is_some() {
            // A message read ahead during an earlier attempt waits for the run loop.
            return self.sinks.load_tables(jobs).await;
        }
        let source = &self.source;
        // Field by field rather than `self.intake()`: the sink stays borrowable for the load.
        let mut ahead = ReadAhead::new(Intake {
            source,
            decoder: &mut self.decoder,
            batcher: &mut self.batcher,
            in_flight: &mut self.in_flight,
            stats: &self.stats,
            blocked: &self.blocked,
            pause: self.cfg.snowflake.on_table_error == TableErrorPolicy::Pause,
        });
        let mut chain_run: Option<ChainRun> = None;
        let results = {
            let load = self.sinks.load_tables(jobs);
            tokio::pin!(load);
            loop {
                if chain_run.is_none()
                    && self.ran_ahead.is_none()
                    && !self.plugins_away
                    && !self.chain.is_empty()
                {
                    // The next batch is full: it goes through the plugin chain now.
                    if let Some(pending) = ahead.take_full_batch() {
                        self.plugins_away = true;
                        let chain = std::mem::take(&mut self.chain);
                        chain_run = Some(spawn_chain(chain, pending, self.stats.clone()));
                    }
                }
                let reading = chain_run.is_none() && ahead.reading() && !*shutdown.borrow();
                tokio::select! {
                    biased;
                    results = &mut load => break results,
                    msg = source.recv(), if reading => ahead.take(msg),
                }
            }
        };
        let (notes, kept, revoked) = ahead.finish();
        if let Some(run) = chain_run {
            match self.chain_back(run.await) {
                Ok(outcomes) => self.ran_ahead = Some(outcomes),
                // Still away: the flush stops floe right after this load rather than load
                // changes the chain never returned.
                Err(e) => warn!(error = %e, "the plugin chain's run ahead failed"),
            }
        }
        for (table, topic) in notes {
            self.sinks.note_topic(&table, &topic);
        }
        self.kept = kept;
        self.drop_partitions(revoked);
        results
    }

    /// Swaps in a plugin chain that finished building, or starts building one if the config or
    /// a plugin file changed (the build runs on a thread of its own: consumption goes on).
    fn poll_reload(&mut self) {
        match self.reloader.poll(&mut self.chain) {
            Reload::Swapped(_) => {
                Stats::add(&self.stats.plugin_reloads, 1);
                // Outcomes of the chain swapped out are not this batch's.
                self.ran_ahead = None;
            }
            Reload::Refused(_) => Stats::add(&self.stats.plugin_reload_failures, 1),
            Reload::Unchanged => {}
        }
    }

    /// Passes the pending changes through the plugin chain (swapping in a reloaded chain first,
    /// if one is due), routes rejected and faulted changes to the dead-letter topic and the
    /// rejects tables, and seals the kept ones into the batch to load.
    async fn run_chain(&mut self, shutdown: &Shutdown) -> Step {
        let mut backoff = Backoff::new();
        let outcomes = loop {
            let outcomes = match self.ran_ahead.take() {
                // Run while the batch before loaded, on these very changes.
                Some(outcomes) if outcomes.len() == self.batcher.pending_mut().len() => outcomes,
                _ => {
                    if self.pending_edited {
                        if let Err(e) = self.redecode_pending() {
                            return Step::Fatal(e);
                        }
                        self.pending_edited = false;
                    }
                    self.poll_reload();
                    if self.chain.is_empty() {
                        break Vec::new();
                    }
                    match self.run_plugins().await {
                        Ok(outcomes) => outcomes,
                        Err(e) => return Step::Fatal(e),
                    }
                }
            };
            let fault = outcomes.iter().find_map(|o| match o {
                Outcome::Fault { plugin, reason } => Some((plugin.clone(), reason.clone())),
                _ => None,
            });
            match (fault, self.reloader.current().on_fault) {
                (Some((plugin, reason)), FaultPolicy::Pause) => {
                    Stats::add(&self.stats.errors, 1);
                    self.stats.health.chain_paused(true);
                    warn!(plugin = %plugin, reason = %reason, retry_in = ?backoff.delay(),
                        "plugin fault; pipeline paused (plugins.on_fault = \"pause\"), nothing committed");
                    if backoff.wait(shutdown).await {
                        return Step::Abandoned;
                    }
                    // The chain may have edited the changes before faulting: the next round
                    // starts again from the messages.
                    continue;
                }
                _ => break outcomes,
            }
        };
        self.stats.health.chain_paused(false);
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
        self.pending_edited = false;
        Step::Done
    }

    /// Runs the pending changes through the chain on a thread of the blocking pool
    /// ([`spawn_chain`]). The chain and the changes move to that thread and back.
    async fn run_plugins(&mut self) -> Result<Vec<Outcome>, String> {
        if self.plugins_away {
            return Err("internal: an earlier plugin run was abandoned half-way".into());
        }
        self.plugins_away = true;
        let run = spawn_chain(
            std::mem::take(&mut self.chain),
            self.batcher.take_pending(),
            self.stats.clone(),
        );
        let ran = run.await;
        self.chain_back(ran)
    }

    /// Takes back the chain and the changes from a run on the blocking pool ([`spawn_chain`]).
    fn chain_back(
        &mut self,
        ran: Result<(PluginChain, Vec<Change>, Vec<Outcome>), tokio::task::JoinError>,
    ) -> Result<Vec<Outcome>, String> {
        match ran {
            Ok((chain, pending, outcomes)) => {
                self.chain = chain;
                self.batcher.put_pending(pending);
                self.plugins_away = false;
                self.pending_edited = true;
                Ok(outcomes)
            }
            Err(e) => Err(format!("the plugin chain's thread failed: {e}")),
        }
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
                        match self.flush(shutdown, false).await {
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
            self.stats
                .table(&self.sinks.table_name(&change.table), |c| c.rejected += 1);
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
            let Err(e) = self.sinks.record_rejects(&rows).await else {
                return Step::Done;
            };
            match retry::after_table_step(e.class()) {
                Next::Stop => return Step::Fatal(e.to_string()),
                // The rejects table cannot take them (a name collision, refused DDL): they are
                // in the dead-letter topic already, with their reasons.
                Next::Block => {
                    Stats::add(&self.stats.errors, 1);
                    warn!(error = %e, dlq = self.dlq.topic(), "rejected changes not recorded in a rejects table; they are in the dead-letter topic");
                    return Step::Done;
                }
                Next::Retry => {
                    Stats::add(&self.stats.errors, 1);
                    warn!(error = %e, retry_in = ?backoff.delay(), "recording rejects failed; retrying");
                    if backoff.wait(shutdown).await {
                        return Step::Abandoned;
                    }
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

/// A run of the plugin chain on the blocking pool; it gives back the chain, the changes (edited
/// by the plugins) and an outcome per change.
type ChainRun = tokio::task::JoinHandle<(PluginChain, Vec<Change>, Vec<Outcome>)>;

/// Runs `chain` over `pending` on a thread of the blocking pool: plugins run synchronously
/// (WASI's sync bindings block on Tokio internally, which is only allowed outside the async
/// context), and the runtime's workers go on meanwhile.
fn spawn_chain(mut chain: PluginChain, mut pending: Vec<Change>, stats: Arc<Stats>) -> ChainRun {
    tokio::task::spawn_blocking(move || {
        let outcomes = chain.run(&mut pending);
        Stats::add(&stats.plugin_runs, 1);
        (chain, pending, outcomes)
    })
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
