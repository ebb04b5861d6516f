//! Pipeline counters, the periodic stats line (the guide's monitoring: messages consumed,
//! records decoded, records loaded, errors, consumer lag) and the same counters for Prometheus.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

/// Counters shared by the pipeline and the stats reporter.
#[derive(Debug, Default)]
pub struct Stats {
    /// Kafka messages received.
    pub consumed: AtomicU64,
    /// Changes decoded successfully.
    pub decoded: AtomicU64,
    /// Tombstones skipped.
    pub tombstones: AtomicU64,
    /// Changes the plugin chain kept (the guide's "records validated").
    pub validated: AtomicU64,
    /// Changes a plugin rejected (dead-lettered and recorded in the rejects table).
    pub rejected: AtomicU64,
    /// Changes a plugin dropped on purpose.
    pub dropped: AtomicU64,
    /// Changes handed to a plugin that faulted (trap, deadline, memory, fuel).
    pub plugin_faults: AtomicU64,
    /// Runs of the plugin chain over a batch's changes (one repeated after a fault counts
    /// again; one while the batch before loads counts too).
    pub plugin_runs: AtomicU64,
    /// Plugin chains swapped in without a restart.
    pub plugin_reloads: AtomicU64,
    /// Reloads refused because the new chain failed to load or initialise (the old one ran on).
    pub plugin_reload_failures: AtomicU64,
    /// Folded rows merged into Snowflake.
    pub loaded: AtomicU64,
    /// Batches loaded.
    pub batches: AtomicU64,
    /// Statements sent to Snowflake (loads, DDL, rejects, state).
    pub statements: AtomicU64,
    /// Messages sent to the dead-letter topic.
    pub dead_lettered: AtomicU64,
    /// Failed attempts (loads, dead-letter sends, Kafka errors); each was retried.
    pub errors: AtomicU64,
    /// Target tables that cannot be loaded now, and why.
    pub blocked: Mutex<BTreeMap<String, String>>,
    /// Counters of each target table.
    pub tables: Mutex<BTreeMap<String, TableCounters>>,
    /// What `/readyz` reads besides the blocked tables.
    pub health: crate::health::Health,
}

/// What happened to one target table's records.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TableCounters {
    /// Rows merged.
    pub loaded: u64,
    /// Changes a plugin rejected.
    pub rejected: u64,
    /// Messages dead-lettered because Snowflake refused their row or the table.
    pub dead_lettered: u64,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Marks a target table blocked (with the reason) or, with `None`, loading again.
    pub fn set_blocked(&self, table: &str, reason: Option<&str>) {
        let mut blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        match reason {
            Some(r) => {
                blocked.insert(table.to_string(), r.to_string());
            }
            None => {
                blocked.remove(table);
            }
        }
    }

    /// Updates the counters of target table `table`.
    pub fn table(&self, table: &str, update: impl FnOnce(&mut TableCounters)) {
        let mut tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        update(tables.entry(table.to_string()).or_default());
    }

    /// A copy of every table's counters.
    pub fn table_counters(&self) -> BTreeMap<String, TableCounters> {
        self.tables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The blocked target tables, by name.
    pub fn blocked_tables(&self) -> Vec<String> {
        let blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        blocked.keys().cloned().collect()
    }

    /// The stats line, e.g. `consumed=120 decoded=118 loaded=90 dlq=2 errors=0 lag=3`.
    pub fn line(&self, lag: &AtomicI64) -> String {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let lag = lag.load(Ordering::Relaxed);
        format!(
            "consumed={} decoded={} tombstones={} validated={} rejected={} dropped={} plugin_faults={} loaded={} batches={} statements={} dlq={} errors={} lag={}",
            g(&self.consumed),
            g(&self.decoded),
            g(&self.tombstones),
            g(&self.validated),
            g(&self.rejected),
            g(&self.dropped),
            g(&self.plugin_faults),
            g(&self.loaded),
            g(&self.batches),
            g(&self.statements),
            g(&self.dead_lettered),
            g(&self.errors),
            if lag < 0 {
                "?".to_string()
            } else {
                lag.to_string()
            },
        ) + &match self.blocked_tables() {
            b if b.is_empty() => String::new(),
            b => format!(" blocked={}", b.join(",")),
        }
    }
}

impl Stats {
    /// The counters in Prometheus' text exposition format.
    pub fn prometheus(&self, lag: &AtomicI64) -> String {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let counters = [
            (
                "floe_messages_consumed_total",
                "Kafka messages received.",
                g(&self.consumed),
            ),
            (
                "floe_changes_decoded_total",
                "Changes decoded.",
                g(&self.decoded),
            ),
            (
                "floe_tombstones_total",
                "Tombstones skipped.",
                g(&self.tombstones),
            ),
            (
                "floe_changes_validated_total",
                "Changes the plugin chain kept.",
                g(&self.validated),
            ),
            (
                "floe_changes_rejected_total",
                "Changes a plugin rejected.",
                g(&self.rejected),
            ),
            (
                "floe_changes_dropped_total",
                "Changes a plugin dropped.",
                g(&self.dropped),
            ),
            (
                "floe_plugin_fault_changes_total",
                "Changes handed to a plugin that faulted.",
                g(&self.plugin_faults),
            ),
            (
                "floe_plugin_chain_runs_total",
                "Runs of the plugin chain over a batch's changes.",
                g(&self.plugin_runs),
            ),
            (
                "floe_plugin_reloads_total",
                "Plugin chains swapped in without a restart.",
                g(&self.plugin_reloads),
            ),
            (
                "floe_plugin_reload_failures_total",
                "Plugin reloads refused; the old chain kept running.",
                g(&self.plugin_reload_failures),
            ),
            (
                "floe_rows_loaded_total",
                "Rows merged into Snowflake.",
                g(&self.loaded),
            ),
            (
                "floe_batches_loaded_total",
                "Batches loaded.",
                g(&self.batches),
            ),
            (
                "floe_snowflake_statements_total",
                "Statements sent to Snowflake.",
                g(&self.statements),
            ),
            (
                "floe_dead_lettered_total",
                "Messages sent to the dead-letter topic.",
                g(&self.dead_lettered),
            ),
            (
                "floe_errors_total",
                "Failed attempts, each retried.",
                g(&self.errors),
            ),
        ];
        let mut out = String::new();
        for (name, help, value) in counters {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
            ));
        }
        let lag = lag.load(Ordering::Relaxed);
        if lag >= 0 {
            out.push_str(&format!(
                "# HELP floe_consumer_lag Messages behind the committed offsets.\n# TYPE floe_consumer_lag gauge\nfloe_consumer_lag {lag}\n"
            ));
        }
        let tables = self.table_counters();
        if !tables.is_empty() {
            for (name, help, get) in [
                (
                    "floe_table_rows_loaded_total",
                    "Rows merged into a target table.",
                    (|c: &TableCounters| c.loaded) as fn(&TableCounters) -> u64,
                ),
                (
                    "floe_table_changes_rejected_total",
                    "Changes of a target table a plugin rejected.",
                    |c| c.rejected,
                ),
                (
                    "floe_table_dead_lettered_total",
                    "Messages of a target table dead-lettered because Snowflake refused the row or the table.",
                    |c| c.dead_lettered,
                ),
            ] {
                out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
                for (t, c) in &tables {
                    out.push_str(&format!("{name}{{table=\"{}\"}} {}\n", label(t), get(c)));
                }
            }
        }
        let blocked = self.blocked_tables();
        if !blocked.is_empty() {
            out.push_str("# HELP floe_table_blocked A target table that cannot be loaded now (its records are dead-lettered or held).\n# TYPE floe_table_blocked gauge\n");
            for t in blocked {
                out.push_str(&format!(
                    "floe_table_blocked{{table=\"{}\"}} 1\n",
                    label(&t)
                ));
            }
        }
        if let Some(rss) = peak_rss_bytes() {
            out.push_str(&format!(
                "# HELP floe_peak_rss_bytes Peak resident memory.\n# TYPE floe_peak_rss_bytes gauge\nfloe_peak_rss_bytes {rss}\n"
            ));
        }
        out
    }
}

/// A Prometheus label value: backslashes, quotes and newlines escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Peak resident memory of this process (Linux `VmHWM`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_line_names_every_counter() {
        let s = Stats::default();
        Stats::add(&s.consumed, 3);
        Stats::add(&s.dead_lettered, 1);
        let line = s.line(&AtomicI64::new(-1));
        assert_eq!(
            line,
            "consumed=3 decoded=0 tombstones=0 validated=0 rejected=0 dropped=0 plugin_faults=0 loaded=0 batches=0 statements=0 dlq=1 errors=0 lag=?"
        );
    }

    #[test]
    fn prometheus_text_has_every_counter() {
        let s = Stats::default();
        Stats::add(&s.loaded, 42);
        let text = s.prometheus(&AtomicI64::new(7));
        assert!(text.contains("floe_rows_loaded_total 42\n"), "{text}");
        assert!(text.contains("# TYPE floe_consumer_lag gauge\nfloe_consumer_lag 7\n"));
        assert_eq!(text.matches("# TYPE").count(), 17);
    }

    #[test]
    fn counters_carry_their_table_and_blocked_tables_are_named() {
        let s = Stats::default();
        s.table("ORDERS", |c| c.loaded += 5);
        s.table("ORDERS", |c| c.loaded += 2);
        s.table("S2_ORDERS", |c| c.rejected += 1);
        s.table("COLLIDES", |c| c.dead_lettered += 3);
        s.set_blocked("COLLIDES", Some("column collides"));
        let text = s.prometheus(&AtomicI64::new(0));
        assert!(
            text.contains("floe_table_rows_loaded_total{table=\"ORDERS\"} 7\n"),
            "{text}"
        );
        assert!(text.contains("floe_table_changes_rejected_total{table=\"S2_ORDERS\"} 1\n"));
        assert!(text.contains("floe_table_dead_lettered_total{table=\"COLLIDES\"} 3\n"));
        assert!(text.contains("floe_table_blocked{table=\"COLLIDES\"} 1\n"));
        assert!(s
            .line(&AtomicI64::new(0))
            .ends_with(" lag=0 blocked=COLLIDES"));
        s.set_blocked("COLLIDES", None);
        assert!(!s
            .prometheus(&AtomicI64::new(0))
            .contains("floe_table_blocked"));
        assert!(s.line(&AtomicI64::new(0)).ends_with(" lag=0"));
    }

    #[test]
    fn peak_memory_is_readable_on_linux() {
        assert!(peak_rss_bytes().is_some_and(|b| b > 0));
    }
}
