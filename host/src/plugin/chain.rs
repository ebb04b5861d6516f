//! The plugin chain: the ordered plugins each change passes through, and what they decided.
//! A change leaves the chain at the first plugin that drops or rejects it (or faults on it);
//! the others see it with the edits of the plugins before them.

use std::time::{Duration, Instant};

use super::bindings::exports::floe::plugin::transform::Decision;
use super::convert::{apply_edits, reaches_plugins, ColumnCache};
use super::engine::{LoadedPlugin, PluginEngine};
use super::PluginError;
use crate::change::{Change, TableId};
use crate::config::PluginConfig;

/// What the chain decided for one change.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Load it (with any edits already applied to the change).
    Keep,
    /// A plugin dropped it: not loaded, not reported.
    Drop { plugin: String },
    /// A plugin rejected it, with its reason.
    Reject { plugin: String, reason: String },
    /// The plugin faulted on the batch holding it (trap, deadline, memory, fuel).
    Fault { plugin: String, reason: String },
}

struct Entry {
    plugin: LoadedPlugin,
    /// `schema.table` or `table` names; every table when empty.
    tables: Vec<String>,
    /// Time spent in this plugin (conversion included) and changes it was given.
    spent: Duration,
    seen: u64,
}

impl Entry {
    fn applies_to(&self, t: &TableId) -> bool {
        self.tables.is_empty()
            || self.tables.iter().any(|name| match name.split_once('.') {
                Some((schema, table)) => *t.schema == *schema && *t.table == *table,
                None => *t.table == **name,
            })
    }
}

/// The running chain of plugins.
#[derive(Default)]
pub struct PluginChain {
    entries: Vec<Entry>,
    columns: ColumnCache,
}

impl PluginChain {
    /// Loads and initialises every plugin of `specs`, in order; the first failure refuses the
    /// whole chain.
    pub fn build(engine: &PluginEngine, specs: &[PluginConfig]) -> Result<Self, PluginError> {
        let entries = specs
            .iter()
            .map(|spec| {
                Ok(Entry {
                    plugin: engine.load(spec)?,
                    tables: spec.tables.clone(),
                    spent: Duration::ZERO,
                    seen: 0,
                })
            })
            .collect::<Result<Vec<_>, PluginError>>()?;
        Ok(PluginChain {
            entries,
            columns: ColumnCache::default(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The plugins' names, in chain order.
    pub fn names(&self) -> Vec<&str> {
        self.entries.iter().map(|e| e.plugin.name()).collect()
    }

    /// The configs and file digests the chain was built from (to notice what changed).
    pub fn fingerprint(&self) -> Vec<(PluginConfig, String)> {
        self.entries
            .iter()
            .map(|e| (e.plugin.spec().clone(), e.plugin.digest().to_string()))
            .collect()
    }

    /// Per plugin: name, time spent and changes handled since the chain was built.
    pub fn timings(&self) -> Vec<(&str, Duration, u64)> {
        self.entries
            .iter()
            .map(|e| (e.plugin.name(), e.spent, e.seen))
            .collect()
    }

    /// Runs `changes` through the chain, applying edits in place; one outcome per change.
    pub fn run(&mut self, changes: &mut [Change]) -> Vec<Outcome> {
        let mut outcomes = vec![Outcome::Keep; changes.len()];
        for entry in &mut self.entries {
            let started = Instant::now();
            let (indexes, batch): (Vec<usize>, Vec<&Change>) = changes
                .iter()
                .enumerate()
                .filter(|(i, c)| {
                    outcomes[*i] == Outcome::Keep
                        && reaches_plugins(c)
                        && entry.applies_to(&c.table)
                })
                .unzip();
            if batch.is_empty() {
                continue;
            }
            let handed = batch.len() as u64;
            let name = entry.plugin.name().to_string();
            let result = entry.plugin.process(&batch);
            drop(batch);
            match result {
                Ok(decisions) => {
                    for (i, decision) in indexes.into_iter().zip(decisions) {
                        match decision {
                            Decision::Keep(edits) => {
                                apply_edits(&mut changes[i], edits, &mut self.columns)
                            }
                            Decision::Drop => {
                                outcomes[i] = Outcome::Drop {
                                    plugin: name.clone(),
                                }
                            }
                            Decision::Reject(reason) => {
                                outcomes[i] = Outcome::Reject {
                                    plugin: name.clone(),
                                    reason,
                                }
                            }
                        }
                    }
                }
                Err(e) => {
                    let reason = match e {
                        PluginError::Fault { reason, .. } => reason,
                        other => other.to_string(),
                    };
                    tracing::warn!(plugin = %name, reason = %reason, changes = indexes.len(), "plugin fault");
                    for i in indexes {
                        outcomes[i] = Outcome::Fault {
                            plugin: name.clone(),
                            reason: reason.clone(),
                        };
                    }
                }
            }
            entry.spent += started.elapsed();
            entry.seen += handed;
        }
        outcomes
    }
}
