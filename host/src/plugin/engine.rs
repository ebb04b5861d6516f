//! The Wasmtime side of plugins: one engine for the process, components compiled once (and
//! cached on disk by content hash), one sandboxed store per plugin. Every engine knob is set
//! here, with why. Owns limits (memory, time, fuel), grants, where plugin code runs (off the
//! async runtime, a host panic caught), and turning a trap into a [`PluginError::Fault`] that
//! names the plugin; it does not decide what happens to records.

use std::any::Any;
use std::hash::{Hash, Hasher};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, ResourceLimiter, Store, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{
    HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView,
};

use bumpalo::Bump;

use super::bindings::exports::floe::plugin::transform::Decision;
use super::bindings::floe::plugin::log::{self, Level};
use super::bindings::floe::plugin::types::Table as WitTable;
use super::bindings::{Plugin, PluginPre, WIT_PACKAGE, WIT_VERSION};
use super::convert::{to_wit, Projection};
use super::poll::{DeadlinePoll, DeadlinePollView};
use super::PluginError;
use crate::change::{Change, TableId};
use crate::config::PluginConfig;

/// How often the epoch advances. Deadlines are whole ticks, so this is their resolution; each
/// tick costs one atomic increment, so 10 ms is invisible.
const EPOCH_TICK: Duration = Duration::from_millis(10);
/// What a plugin may write to stderr (kept to explain its faults). A plugin that writes more
/// sees its stderr closed; the `log` import is the way to log.
const STDERR_CAPACITY: usize = 1 << 20;

/// The process-wide Wasmtime setup: engines, linkers, the epoch ticker and the compile cache.
pub struct PluginEngine {
    plain: EngineLinker,
    /// Fuel metering costs every plugin some speed, so only plugins with a `fuel` budget run
    /// on this engine.
    fueled: EngineLinker,
    cache_dir: Option<PathBuf>,
    ticker: Arc<EpochTicker>,
}

/// Stops the epoch thread when the last engine or plugin using it is gone: a plugin outliving
/// its engine value must still meet its deadlines.
struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct EngineLinker {
    engine: Engine,
    linker: Linker<PluginState>,
}

impl EngineLinker {
    fn new(fuel: bool) -> wasmtime::Result<Self> {
        let mut config = Config::new();
        config
            // Plugins are components (`floe:plugin` world), not core modules.
            .wasm_component_model(true)
            // Deadlines: a call that overruns its epoch deadline traps (no endless loops).
            .epoch_interruption(true)
            .consume_fuel(fuel)
            // Optimise for speed of the plugin code; compilation happens once per content hash.
            .cranelift_opt_level(wasmtime::OptLevel::Speed);
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        // WASI is linked because every wasm32-wasip2 toolchain imports it, but each store's
        // WasiCtx grants nothing unless the plugin's config does (see `sandbox`).
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        // WASI's `wasi:io/poll` waits as long as the plugin asks; this one stops at the call's
        // deadline, which epoch interruption cannot enforce inside a host call (see `poll.rs`).
        linker.allow_shadowing(true);
        wasmtime_wasi::p2::bindings::sync::io::poll::add_to_linker::<PluginState, DeadlinePoll>(
            &mut linker,
            |s| DeadlinePollView {
                table: &mut s.table,
                deadline: s.deadline,
            },
        )?;
        linker.allow_shadowing(false);
        Plugin::add_to_linker::<PluginState, wasmtime::component::HasSelf<PluginState>>(
            &mut linker,
            |s| s,
        )?;
        Ok(EngineLinker { engine, linker })
    }
}

impl PluginEngine {
    /// Sets up the engines and starts the epoch ticker thread.
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Self, PluginError> {
        let setup = |e: wasmtime::Error| PluginError::Load {
            plugin: "(engine)".into(),
            path: String::new(),
            reason: e.to_string(),
        };
        let plain = EngineLinker::new(false).map_err(setup)?;
        let fueled = EngineLinker::new(true).map_err(setup)?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let (e1, e2, stop) = (
            plain.engine.clone(),
            fueled.engine.clone(),
            ticker_stop.clone(),
        );
        std::thread::Builder::new()
            .name("floe-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    e1.increment_epoch();
                    e2.increment_epoch();
                }
            })
            .map_err(|e| PluginError::Load {
                plugin: "(engine)".into(),
                path: String::new(),
                reason: format!("cannot start the epoch thread: {e}"),
            })?;
        Ok(PluginEngine {
            plain,
            fueled,
            cache_dir,
            ticker: Arc::new(EpochTicker { stop: ticker_stop }),
        })
    }

    /// Loads, checks, instantiates and initialises one plugin.
    pub fn load(&self, spec: &PluginConfig) -> Result<LoadedPlugin, PluginError> {
        let name = spec.display_name();
        let el = if spec.fuel.is_some() {
            &self.fueled
        } else {
            &self.plain
        };
        let load_err = |reason: String| PluginError::Load {
            plugin: name.clone(),
            path: spec.path.display().to_string(),
            reason,
        };
        let bytes = std::fs::read(&spec.path).map_err(|e| load_err(e.to_string()))?;
        let digest = hex(&Sha256::digest(&bytes));
        let component = self
            .compile(&el.engine, &bytes, &digest)
            .map_err(|e| load_err(format!("{e:#}")))?;
        check_version(&name, &el.engine, &component)?;
        let pre = el
            .linker
            .instantiate_pre(&component)
            .map_err(|e| PluginError::Init {
                plugin: name.clone(),
                reason: format!("{e:#}"),
            })?;
        let pre = PluginPre::new(pre).map_err(|e| PluginError::Init {
            plugin: name.clone(),
            reason: format!("{e:#}"),
        })?;
        let config = serde_json::to_string(&toml_to_json(&toml::Value::Table(spec.config.clone())))
            .unwrap_or_else(|_| "{}".into());
        let mut plugin = LoadedPlugin {
            name: name.clone(),
            spec: spec.clone(),
            digest,
            config,
            pre,
            running: None,
            projection: Projection::all(),
            arena: Bump::new(),
            _ticker: self.ticker.clone(),
        };
        plugin.start()?;
        info!(plugin = %name, path = %spec.path.display(), "plugin loaded");
        Ok(plugin)
    }

    /// Compiles `bytes`, or reuses the artifact cached for the same content and engine.
    fn compile(&self, engine: &Engine, bytes: &[u8], digest: &str) -> wasmtime::Result<Component> {
        let Some(dir) = &self.cache_dir else {
            return Component::from_binary(engine, bytes);
        };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let path = dir.join(format!("{digest}-{:016x}.cwasm", h.finish()));
        if path.exists() {
            // SAFETY: the file was written by `Component::serialize` of an engine with the same
            // compatibility hash, into floe's own cache directory.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(c) => {
                    debug!(path = %path.display(), "compiled plugin taken from the cache");
                    return Ok(c);
                }
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "unusable cache entry; recompiling")
                }
            }
        }
        let component = Component::from_binary(engine, bytes)?;
        if let Err(e) = write_cache(dir, &path, &component) {
            warn!(dir = %dir.display(), error = %e, "cannot cache the compiled plugin");
        }
        Ok(component)
    }
}

fn write_cache(dir: &Path, path: &Path, component: &Component) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(
        &tmp,
        component.serialize().map_err(|e| anyhow::anyhow!("{e}"))?,
    )?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Refuses a component that does not export this floe's `transform` interface version.
fn check_version(name: &str, engine: &Engine, component: &Component) -> Result<(), PluginError> {
    let wanted = format!("{WIT_PACKAGE}/transform@{WIT_VERSION}");
    let ty = component.component_type();
    let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    if exports.contains(&wanted) {
        return Ok(());
    }
    let found = exports
        .iter()
        .find_map(|e| {
            e.strip_prefix(&format!("{WIT_PACKAGE}/"))
                .and_then(|rest| rest.split_once('@'))
                .map(|(_, v)| format!("{WIT_PACKAGE}@{v}"))
        })
        .unwrap_or_else(|| {
            format!(
                "no floe:plugin interface (it exports: {})",
                if exports.is_empty() {
                    "nothing".to_string()
                } else {
                    exports.join(", ")
                }
            )
        });
    Err(PluginError::Version {
        plugin: name.to_string(),
        found,
        supported: WIT_VERSION,
    })
}

/// One loaded plugin: its pre-instantiated component and its running instance.
pub struct LoadedPlugin {
    name: String,
    spec: PluginConfig,
    /// SHA-256 of the `.wasm` file, to notice a replaced file.
    digest: String,
    config: String,
    pre: PluginPre<PluginState>,
    /// The live instance; `None` after a fault, until the next call starts a fresh one.
    running: Option<(Store<PluginState>, Plugin)>,
    /// What the plugin said it reads (its `init` result): what calls hand it.
    projection: Projection,
    /// Scratch space for the values of one call that are made rather than borrowed.
    arena: Bump,
    _ticker: Arc<EpochTicker>,
}

impl LoadedPlugin {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn spec(&self) -> &PluginConfig {
        &self.spec
    }

    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Instantiates the component in a fresh sandbox and calls `init` with its config (off the
    /// async runtime, a host panic caught: see [`run_guest`]).
    fn start(&mut self) -> Result<(), PluginError> {
        let mut store = Store::new(self.pre.engine(), PluginState::new(&self.name, &self.spec));
        store.limiter(|s| &mut s.limits);
        self.arm(&mut store);
        let (pre, config, spec) = (&self.pre, &self.config, &self.spec);
        let outcome = run_guest(|| {
            let instance = pre
                .instantiate(&mut store)
                .map_err(|e| explain(&e, &store, spec))?;
            match instance
                .floe_plugin_transform()
                .call_init(&mut store, config)
            {
                Ok(Ok(reads)) => Ok((instance, reads)),
                Ok(Err(reason)) => Err(reason),
                Err(e) => Err(explain(&e, &store, spec)),
            }
        });
        let init_failed = |reason: String| PluginError::Init {
            plugin: self.name.clone(),
            reason,
        };
        let (instance, reads) = match outcome {
            Ok(Ok(started)) => started,
            Ok(Err(reason)) => return Err(init_failed(reason)),
            Err(why) => return Err(init_failed(with_stderr(why, &store))),
        };
        self.projection = Projection::new(reads);
        self.running = Some((store, instance));
        Ok(())
    }

    /// Sets the per-call deadline and fuel.
    fn arm(&self, store: &mut Store<PluginState>) {
        let ticks = self
            .spec
            .timeout_ms
            .div_ceil(EPOCH_TICK.as_millis() as u64)
            .max(1);
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();
        // The same deadline for waits inside host calls, which epochs cannot interrupt.
        store.data_mut().deadline =
            Instant::now().checked_add(Duration::from_millis(self.spec.timeout_ms));
        if let Some(fuel) = self.spec.fuel {
            // Cannot fail: fuel is only set on plugins that run on the fuel-metering engine.
            let _ = store.set_fuel(fuel);
        }
    }

    /// One decision per change (truncates never reach plugins: the caller leaves them out), or
    /// the fault that prevented them. The plugin is called once per table, with that table's
    /// changes in order; a fault in any call is the whole batch's. After a fault the instance
    /// is discarded; the next call starts (and initialises) a fresh one.
    pub fn process(&mut self, changes: &[&Change]) -> Result<Vec<Decision>, PluginError> {
        let mut tables: Vec<(&TableId, Vec<usize>)> = Vec::new();
        for (i, c) in changes.iter().enumerate() {
            match tables.iter_mut().find(|(t, _)| **t == c.table) {
                Some((_, indexes)) => indexes.push(i),
                None => tables.push((&c.table, vec![i])),
            }
        }
        if let [(table, _)] = tables.as_slice() {
            return self.call(table, changes);
        }
        let mut decisions: Vec<Option<Decision>> = changes.iter().map(|_| None).collect();
        for (table, indexes) in tables {
            let part: Vec<&Change> = indexes.iter().map(|&i| changes[i]).collect();
            for (i, d) in indexes.into_iter().zip(self.call(table, &part)?) {
                decisions[i] = Some(d);
            }
        }
        decisions
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| self.fault("a change got no decision".into()))
    }

    /// One `process` call with changes of `table`.
    fn call(&mut self, table: &TableId, changes: &[&Change]) -> Result<Vec<Decision>, PluginError> {
        if self.running.is_none() {
            self.start().map_err(|e| PluginError::Fault {
                plugin: self.name.clone(),
                reason: format!("restart after a fault failed: {e}"),
            })?;
        }
        let Some((mut store, instance)) = self.running.take() else {
            return Err(self.fault("no running instance".into()));
        };
        self.arm(&mut store);
        self.arena.reset();
        let Some(call) = to_wit(changes, &mut self.projection, &self.arena) else {
            self.running = Some((store, instance));
            return Err(self.fault("a truncate was handed to the plugin".into()));
        };
        let spec = &self.spec;
        let outcome = run_guest(|| {
            instance
                .floe_plugin_transform()
                .call_process(
                    &mut store,
                    WitTable {
                        schema: &table.schema,
                        name: &table.table,
                        key: &call.key,
                        columns: &call.columns,
                    },
                    &call.changes,
                )
                .map_err(|e| explain(&e, &store, spec))
        });
        match outcome {
            Ok(Ok(decisions)) if decisions.len() == changes.len() => {
                self.running = Some((store, instance));
                Ok(decisions)
            }
            // A fault leaves the instance behind: the next call starts a fresh one.
            Ok(Ok(decisions)) => Err(self.fault(format!(
                "returned {} decisions for {} changes",
                decisions.len(),
                changes.len()
            ))),
            Ok(Err(reason)) => Err(self.fault(reason)),
            Err(why) => Err(self.fault(with_stderr(why, &store))),
        }
    }

    fn fault(&self, reason: String) -> PluginError {
        PluginError::Fault {
            plugin: self.name.clone(),
            reason,
        }
    }
}

/// Runs plugin code (instantiation, `init`, `process`) where it may block and where a panic
/// cannot take floe down; `Err` says why it did not complete.
///
/// WASI's sync bindings block on Tokio inside host calls (a write to stderr, a sleep), which
/// panics on a thread that drives async tasks ("cannot block the current thread from within a
/// runtime"). floe loads plugins at startup inside `block_on`, reloads them on a thread of
/// their own and runs batches on Tokio's blocking pool, so every entry into plugin code comes here
/// rather than trusting each caller.
/// `block_in_place` lends the thread to blocking work (other tasks move to another worker) and
/// is a plain call outside a runtime, on the blocking pool or inside another `block_in_place`; a current-thread
/// runtime cannot lend its only thread, so there the code runs on a thread of its own.
/// A panic in floe's host code during the call (WASI's, Wasmtime's or floe's own) is caught
/// and becomes the plugin's error: the store it left half-way is dropped by the caller.
fn run_guest<R: Send>(f: impl FnOnce() -> R + Send) -> Result<R, String> {
    let guarded = || std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(|p| host_panic(&*p));
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::CurrentThread) => std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("floe-plugin".into())
                .spawn_scoped(scope, guarded)
                .map_err(|e| format!("cannot start a thread for the plugin: {e}"))?
                .join()
                .unwrap_or_else(|p| Err(host_panic(&*p)))
        }),
        _ => tokio::task::block_in_place(guarded),
    }
}

/// What to say about a panic caught by [`run_guest`] (it is floe's bug, not the plugin's, but
/// the plugin's call is what it broke).
fn host_panic(payload: &(dyn Any + Send)) -> String {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into());
    tracing::error!(panic = %message, "floe panicked inside a plugin call; the plugin's instance is discarded");
    format!("floe panicked in a host call: {message}")
}

/// Turns a Wasmtime error into what the user needs: which limit was hit, or the trap and the
/// plugin's last words on stderr (a Rust panic message, for instance).
fn explain(e: &wasmtime::Error, store: &Store<PluginState>, spec: &PluginConfig) -> String {
    let state = store.data();
    if let Some(m) = &state.limits.denied {
        return m.clone();
    }
    let base = match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => {
            format!(
                "deadline: the call ran longer than {} ms (timeout_ms)",
                spec.timeout_ms
            )
        }
        Some(Trap::OutOfFuel) => format!(
            "fuel exhausted: the call used more than {} units (fuel)",
            spec.fuel.unwrap_or_default()
        ),
        Some(trap) => format!("trap: {trap}"),
        None => format!("{e:#}"),
    };
    with_stderr(base, store)
}

/// `base`, followed by the last lines the plugin wrote to stderr, if any.
fn with_stderr(base: String, store: &Store<PluginState>) -> String {
    let stderr = store.data().stderr.contents();
    let text = String::from_utf8_lossy(&stderr);
    // Rust's panic hint about RUST_BACKTRACE says nothing about the plugin.
    let last: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE"))
        .collect();
    match last.len() {
        0 => base,
        n => {
            let tail = last[n.saturating_sub(2)..].join(" | ");
            let tail: String = tail.chars().take(400).collect();
            format!("{base} (stderr: {tail})")
        }
    }
}

/// What a plugin's store holds: its WASI context (granting nothing by default), its memory
/// limit, its stderr buffer.
pub struct PluginState {
    name: Arc<str>,
    wasi: WasiCtx,
    table: ResourceTable,
    limits: MemoryLimit,
    stderr: MemoryOutputPipe,
    /// When the running call must end (set by `arm`); waits in `wasi:io/poll` stop there.
    deadline: Option<Instant>,
}

impl PluginState {
    fn new(name: &str, spec: &PluginConfig) -> Self {
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
        let mut b = WasiCtxBuilder::new();
        // The sandbox: no preopened directories, no environment, no arguments, no network
        // (WasiCtxBuilder grants none of these unless asked), stdin empty, stdout discarded,
        // and clocks frozen at the Unix epoch unless the config grants `clock`.
        let mut real_clock = false;
        let mut inherit_stderr = false;
        for grant in &spec.grants {
            if grant == "clock" {
                real_clock = true;
            } else if grant == "stderr" {
                inherit_stderr = true;
            } else if let Some(var) = grant.strip_prefix("env:") {
                if let Ok(v) = std::env::var(var) {
                    b.env(var, v);
                }
            }
        }
        if !real_clock {
            b.wall_clock(FrozenClock);
            b.monotonic_clock(FrozenClock);
        }
        if inherit_stderr {
            b.inherit_stderr();
        } else {
            b.stderr(stderr.clone());
        }
        PluginState {
            name: name.into(),
            wasi: b.build(),
            table: ResourceTable::new(),
            limits: MemoryLimit {
                max_bytes: (spec.memory_mb as usize).saturating_mul(1 << 20),
                denied: None,
            },
            stderr,
            deadline: None,
        }
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl super::bindings::floe::plugin::types::Host for PluginState {}

impl log::Host for PluginState {
    fn log(&mut self, level: Level, message: String) {
        let plugin = &*self.name;
        match level {
            Level::Debug => debug!(target: "floe::plugin", plugin, "{message}"),
            Level::Info => info!(target: "floe::plugin", plugin, "{message}"),
            Level::Warn => warn!(target: "floe::plugin", plugin, "{message}"),
            Level::Error => tracing::error!(target: "floe::plugin", plugin, "{message}"),
        }
    }
}

/// The per-plugin memory limit; remembers a refusal so the fault can say what happened.
struct MemoryLimit {
    max_bytes: usize,
    denied: Option<String>,
}

impl ResourceLimiter for MemoryLimit {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            let m = format!(
                "memory limit: the plugin asked to grow its memory from {} to {} MiB, over its limit of {} MiB (memory_mb)",
                current >> 20,
                desired.div_ceil(1 << 20),
                self.max_bytes >> 20
            );
            self.denied = Some(m.clone());
            // An error (not `false`) traps at once, instead of letting the guest limp on.
            return Err(wasmtime::format_err!("{m}"));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// A clock stopped at the Unix epoch: what a plugin sees without the `clock` grant.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A plugin's TOML config table as the JSON its `init` receives.
pub fn toml_to_json(v: &toml::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        toml::Value::String(s) => J::String(s.clone()),
        toml::Value::Integer(i) => J::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        toml::Value::Boolean(b) => J::Bool(*b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(a) => J::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => J::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::run_guest;

    /// Plugin code may block on Tokio (WASI's sync bindings do) and a host panic during it is
    /// the plugin's error, wherever floe calls it from.
    fn blocks_and_survives_a_panic() {
        let blocking = run_guest(|| {
            wasmtime_wasi::runtime::in_tokio(async {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                7
            })
        });
        assert_eq!(blocking, Ok(7));
        let panicked = run_guest(|| -> u32 { panic!("boom in a host call") });
        assert_eq!(
            panicked,
            Err("floe panicked in a host call: boom in a host call".to_string())
        );
    }

    #[test]
    fn plugin_code_runs_off_the_runtime_and_a_panic_is_an_error() {
        blocks_and_survives_a_panic();
        let multi = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        multi.block_on(async { blocks_and_survives_a_panic() });
        multi
            .block_on(multi.spawn(async { blocks_and_survives_a_panic() }))
            .expect("a worker thread");
        let single = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        single.block_on(async { blocks_and_survives_a_panic() });
    }
}
