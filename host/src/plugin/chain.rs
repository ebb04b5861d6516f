//! The plugin chain: the ordered plugins each change passes through, and what they decided.
//! A change leaves the chain at the first plugin that drops or rejects it (or faults on it);
//! the others see it with the edits of the plugins before them. It also guards the columns
//! plugins may not edit (the key, floe's own): such an edit rejects the change.

use std::time::{Duration, Instant};

use super::bindings::exports::floe::plugin::transform::Decision;
use super::bindings::floe::plugin::types::Edit;
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
pub struct PluginChain {
    entries: Vec<Entry>,
    columns: ColumnCache,
    /// The columns plugins may not edit.
    reserved: ReservedColumns,
}

impl Default for PluginChain {
    fn default() -> Self {
        PluginChain {
            entries: Vec::new(),
            columns: ColumnCache::default(),
            // floe's columns under their default names (`snowflake.columns`); the pipeline sets
            // the configured ones.
            reserved: ReservedColumns::new(
                crate::config::MetaColumns::default()
                    .named()
                    .iter()
                    .map(|(_, name)| name.to_string())
                    .collect(),
            ),
        }
    }
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
            ..PluginChain::default()
        })
    }

    /// Sets the columns floe writes itself (metadata and staging columns), which plugins may
    /// not edit: an edit that sets or removes one rejects its change. Compared with edits'
    /// names after upper-casing both, as Snowflake names columns. Defaults to floe's columns
    /// under their default names (`snowflake.columns`);
    /// a reloaded chain keeps the list of the chain it replaces.
    pub fn set_reserved_columns(&mut self, names: Vec<String>) {
        self.reserved = ReservedColumns::new(names);
    }

    /// The upper-cased names set by [`PluginChain::set_reserved_columns`].
    pub fn reserved_columns(&self) -> &[String] {
        &self.reserved.names
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
                                match forbidden_edit(&name, &changes[i], &edits, &self.reserved) {
                                    Some(reason) => {
                                        outcomes[i] = Outcome::Reject {
                                            plugin: name.clone(),
                                            reason,
                                        }
                                    }
                                    None => apply_edits(&mut changes[i], edits, &mut self.columns),
                                }
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

/// Why `plugin`'s `edits` of `change` are refused, if they are: an edit (set or remove) of a
/// key column would move the row away from its key, and one of floe's own columns would
/// corrupt the MERGE that loads it (whether a row is deleted, which change is newer). A change
/// without an `after` image takes no edits, so none are refused.
fn forbidden_edit(
    plugin: &str,
    change: &Change,
    edits: &[Edit],
    reserved: &ReservedColumns,
) -> Option<String> {
    change.after.as_ref()?;
    edits.iter().find_map(|edit| {
        let name = match edit {
            Edit::Set(field) => field.name.as_str(),
            Edit::Remove(name) => name.as_str(),
        };
        if change.key.iter().any(|(key, _)| same_column(key, name)) {
            return Some(format!(
                "plugin {plugin} edited key column {name}; plugins may not change key columns"
            ));
        }
        reserved.contains(name).then(|| {
            format!(
                "plugin {plugin} edited floe's column {}; plugins may not change floe's columns",
                name.to_uppercase()
            )
        })
    })
}

/// Whether `a` and `b` name the same warehouse column (Snowflake upper-cases names). ASCII
/// names, nearly all, are compared without allocating.
fn same_column(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        a.eq_ignore_ascii_case(b)
    } else {
        a.to_uppercase() == b.to_uppercase()
    }
}

/// floe's columns: the reserved names (upper-cased). Every edit of every
/// kept change is checked (a plugin sets several columns per change), so most names are
/// cleared by their first letter alone.
struct ReservedColumns {
    names: Vec<String>,
    /// `initials[b]`: some reserved name starts with the ASCII letter `b`, either case.
    initials: [bool; 128],
}

impl ReservedColumns {
    fn new(names: Vec<String>) -> Self {
        let names: Vec<String> = names.iter().map(|n| n.to_uppercase()).collect();
        let mut initials = [false; 128];
        for first in names.iter().filter_map(|n| n.bytes().next()) {
            if first.is_ascii() {
                initials[first.to_ascii_uppercase() as usize] = true;
                initials[first.to_ascii_lowercase() as usize] = true;
            }
        }
        ReservedColumns { names, initials }
    }

    /// Whether `name` is one of floe's columns.
    fn contains(&self, name: &str) -> bool {
        match name.bytes().next() {
            None => self.names.iter().any(|n| n.is_empty()),
            Some(first) if first.is_ascii() && name.is_ascii() => {
                self.initials[first as usize]
                    && self.names.iter().any(|n| n.eq_ignore_ascii_case(name))
            }
            // Upper-casing may turn a non-ASCII letter into an ASCII one ("ı" into "I").
            Some(_) => self.names.contains(&name.to_uppercase()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reserved() -> ReservedColumns {
        PluginChain::default().reserved
    }

    fn is_reserved(name: &str, r: &ReservedColumns) -> bool {
        r.contains(name)
    }

    #[test]
    fn floes_columns_are_recognised_whatever_their_case() {
        let r = reserved();
        for name in ["IS_DELETED", "is_deleted", "Cdc_Lsn", "cdc_position"] {
            assert!(is_reserved(name, &r), "{name}");
        }
        // Upper-cased, a dotless i is an I: Snowflake would name this column IS_DELETED.
        assert!(is_reserved("\u{131}s_deleted", &r));
        for name in [
            "status",
            "deleted",
            "is_deleted_at",
            "cdc",
            "my_cdc_lsn",
            "\u{e9}t\u{e9}",
            // The stage table names its columns by position: these are source columns like any.
            "floe_action",
            "cdc_anything",
        ] {
            assert!(!is_reserved(name, &r), "{name}");
        }
    }

    #[test]
    fn the_reserved_names_can_be_replaced() {
        let mut chain = PluginChain::default();
        chain.set_reserved_columns(vec!["_deleted".into(), "Loaded_At".into()]);
        assert_eq!(chain.reserved_columns(), ["_DELETED", "LOADED_AT"]);
        let r = &chain.reserved;
        assert!(is_reserved("_Deleted", r) && is_reserved("loaded_at", r));
        assert!(!is_reserved("is_deleted", r) && !is_reserved("status", r));
        assert!(!is_reserved("cdc_lsn", r) && !is_reserved("FLOE_ACTION", r));
    }

    #[test]
    fn key_columns_compare_as_warehouse_names() {
        assert!(same_column("transaction_id", "TRANSACTION_ID"));
        assert!(same_column("stra\u{df}e", "STRASSE"));
        assert!(!same_column("id", "ids"));
    }
}
