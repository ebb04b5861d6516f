//! Hot swap: notices a changed config file (plugin list or plugin settings), a replaced `.wasm`
//! file, or a SIGHUP, builds the new chain on a thread of its own beside the running one (so
//! compiling never holds up consumption), and hands it over at the first batch boundary after
//! it is ready. A new chain that fails to load or initialise is reported and the old one stays.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tracing::{error, info};

use super::{PluginChain, PluginEngine, PluginError};
use crate::config::{Config, PluginsConfig};

/// What [`ChainReloader::poll`] did.
#[derive(Debug)]
pub enum Reload {
    /// Nothing changed (or it was not time to look).
    Unchanged,
    /// A new chain runs now; the plugin names in order.
    Swapped(Vec<String>),
    /// The new config or chain was refused; the running chain stays.
    Refused(String),
}

/// A replacement chain being built.
struct Build {
    thread: std::thread::JoinHandle<Result<PluginChain, PluginError>>,
    plugins: PluginsConfig,
    why: &'static str,
}

/// Watches the config file and the plugin files; builds replacement chains.
pub struct ChainReloader {
    engine: Arc<PluginEngine>,
    building: Option<Build>,
    config_path: Option<PathBuf>,
    current: PluginsConfig,
    interval: Duration,
    last_check: Instant,
    /// Modification times of the config file and of each plugin file at the last (re)load.
    stamps: Vec<(PathBuf, Option<SystemTime>)>,
    hangup: Arc<AtomicBool>,
}

impl ChainReloader {
    /// Builds the first chain. Without `config_path` only plugin files are watched.
    pub fn start(
        engine: PluginEngine,
        config_path: Option<PathBuf>,
        plugins: &PluginsConfig,
    ) -> Result<(Self, PluginChain), PluginError> {
        let chain = PluginChain::build(&engine, &plugins.chain)?;
        let mut r = ChainReloader {
            engine: Arc::new(engine),
            building: None,
            config_path,
            current: plugins.clone(),
            interval: Duration::from_millis(plugins.watch_interval_ms),
            last_check: Instant::now(),
            stamps: Vec::new(),
            hangup: Arc::new(AtomicBool::new(false)),
        };
        r.stamps = r.read_stamps();
        Ok((r, chain))
    }

    /// A flag that forces a reload at the next poll (set by the SIGHUP handler).
    pub fn hangup_flag(&self) -> Arc<AtomicBool> {
        self.hangup.clone()
    }

    /// The plugins config of the running chain.
    pub fn current(&self) -> &PluginsConfig {
        &self.current
    }

    fn read_stamps(&self) -> Vec<(PathBuf, Option<SystemTime>)> {
        self.config_path
            .iter()
            .cloned()
            .chain(self.current.chain.iter().map(|p| p.path.clone()))
            .map(|p| {
                let t = std::fs::metadata(&p).and_then(|m| m.modified()).ok();
                (p, t)
            })
            .collect()
    }

    /// Between batches: swaps in a replacement chain that finished building (if it loaded and
    /// initialised), or starts building one if SIGHUP arrived or a watched file changed.
    pub fn poll(&mut self, chain: &mut PluginChain) -> Reload {
        if let Some(b) = &self.building {
            if !b.thread.is_finished() {
                return Reload::Unchanged;
            }
        }
        if let Some(b) = self.building.take() {
            let built = b.thread.join().unwrap_or_else(|_| {
                Err(PluginError::Load {
                    plugin: "?".into(),
                    path: "?".into(),
                    reason: "building the chain panicked".into(),
                })
            });
            return self.finish(chain, b.plugins, b.why, built);
        }
        let forced = self.hangup.swap(false, Ordering::Relaxed);
        if !forced {
            if self.interval.is_zero() || self.last_check.elapsed() < self.interval {
                return Reload::Unchanged;
            }
            self.last_check = Instant::now();
            if self.read_stamps() == self.stamps {
                return Reload::Unchanged;
            }
        }
        let outcome = self.start_build(chain, forced);
        // Whatever happens, this state of the files was seen: a refused change is not retried
        // every second, only when the files change again (or on SIGHUP).
        self.stamps = self.read_stamps();
        outcome
    }

    /// Whether a replacement chain is being built.
    pub fn is_building(&self) -> bool {
        self.building.is_some()
    }

    fn start_build(&mut self, chain: &PluginChain, forced: bool) -> Reload {
        let plugins = match &self.config_path {
            Some(path) => match Config::load(path) {
                Ok(cfg) => cfg.plugins,
                Err(e) => {
                    let m = format!("config reload refused: {e}; the running plugin chain stays");
                    error!("{m}");
                    return Reload::Refused(m);
                }
            },
            None => self.current.clone(),
        };
        let why = if forced {
            "SIGHUP"
        } else {
            "a watched file changed"
        };
        let engine = self.engine.clone();
        let specs = plugins.chain.clone();
        // What the pipeline set on the chain is not in the plugins config: keep it.
        let reserved = chain.reserved_columns().to_vec();
        let thread = std::thread::Builder::new()
            .name("floe-plugin-build".into())
            .spawn(move || {
                let mut new = PluginChain::build(&engine, &specs)?;
                new.set_reserved_columns(reserved);
                Ok(new)
            });
        match thread {
            Ok(thread) => {
                info!(reason = why, "building a new plugin chain");
                self.building = Some(Build {
                    thread,
                    plugins,
                    why,
                });
                Reload::Unchanged
            }
            Err(e) => {
                let m = format!("plugin reload refused: cannot start a thread to build it: {e}");
                error!("{m}");
                Reload::Refused(m)
            }
        }
    }

    fn finish(
        &mut self,
        chain: &mut PluginChain,
        plugins: PluginsConfig,
        why: &str,
        built: Result<PluginChain, PluginError>,
    ) -> Reload {
        match built {
            Ok(new) => {
                let names: Vec<String> = new.names().iter().map(|s| s.to_string()).collect();
                *chain = new;
                self.interval = Duration::from_millis(plugins.watch_interval_ms);
                self.current = plugins;
                info!(plugins = ?names, reason = why, "plugin chain reloaded");
                Reload::Swapped(names)
            }
            Err(e) => {
                let m = format!("plugin reload refused: {e}; the running plugin chain stays");
                error!(plugin = e.plugin(), "{m}");
                Reload::Refused(m)
            }
        }
    }
}
