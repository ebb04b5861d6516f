//! The plugin stage: every decoded change passes through a chain of sandboxed WebAssembly
//! components (the `floe:plugin` WIT package) that keep, drop or reject it and may patch its
//! row image. Owns loading, sandboxing, limits, the chain and hot swap; it never talks to Kafka
//! or Snowflake (the pipeline routes what the chain decides).

mod bindings;
pub mod chain;
pub(crate) mod convert;
pub mod engine;
mod poll;
pub mod reload;
pub mod trial;

pub use bindings::WIT_VERSION;
pub use chain::{Outcome, PluginChain};
pub use engine::PluginEngine;

/// Why a plugin could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The `.wasm` file could not be read or compiled.
    #[error("plugin `{plugin}`: cannot load {path}: {reason}")]
    Load {
        plugin: String,
        path: String,
        reason: String,
    },
    /// The plugin was built against another version of the plugin interface.
    #[error("plugin `{plugin}` was built against {found}, but this floe supports floe:plugin@{supported}; rebuild it against wit/floe-plugin@{supported}")]
    Version {
        plugin: String,
        found: String,
        supported: &'static str,
    },
    /// Instantiation or `init` failed, or `init` refused its config.
    #[error("plugin `{plugin}`: init failed: {reason}")]
    Init { plugin: String, reason: String },
    /// A call trapped, ran out of time, memory or fuel, or broke the interface contract.
    #[error("plugin `{plugin}` faulted: {reason}")]
    Fault { plugin: String, reason: String },
}

impl PluginError {
    /// The plugin's name.
    pub fn plugin(&self) -> &str {
        match self {
            PluginError::Load { plugin, .. }
            | PluginError::Version { plugin, .. }
            | PluginError::Init { plugin, .. }
            | PluginError::Fault { plugin, .. } => plugin,
        }
    }
}
