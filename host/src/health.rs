//! What `/readyz` answers: floe is ready when a Kafka broker is reachable, the last attempt to
//! reach Snowflake got an answer (not an outage, a timeout or a refused login), the plugin chain
//! runs (not paused on a fault), and no table is blocked. The Kafka source and the run loop set
//! the parts; the HTTP endpoints and the alerts read them.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::metrics::Stats;

/// The parts of readiness the run loop knows (the Kafka source's part is its own handle).
#[derive(Debug, Default)]
pub struct Health {
    /// The last attempt to reach Snowflake (a session, a load, a TRUNCATE) got an answer.
    snowflake: AtomicBool,
    /// Why Snowflake could not be reached, while it cannot (a fixed text, never an error's).
    snowflake_error: std::sync::Mutex<&'static str>,
    /// Snowflake refused floe's login or configuration (floe stops at its first load).
    snowflake_refused: AtomicBool,
    /// The plugin chain is paused on a fault (`plugins.on_fault = "pause"`).
    chain_paused: AtomicBool,
}

impl Health {
    /// Snowflake answered.
    pub fn snowflake_up(&self) {
        self.snowflake.store(true, Ordering::Relaxed);
        self.snowflake_refused.store(false, Ordering::Relaxed);
    }

    /// Snowflake could not be reached (an outage, a timeout): `why` is a fixed text.
    pub fn snowflake_down(&self, why: &'static str) {
        self.snowflake.store(false, Ordering::Relaxed);
        *self
            .snowflake_error
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = why;
    }

    /// Snowflake refused floe's login or configuration.
    pub fn snowflake_refused(&self) {
        self.snowflake_down("refuses floe's login or configuration (the log has the error)");
        self.snowflake_refused.store(true, Ordering::Relaxed);
    }

    /// Whether the last answer was a refused login (not worth asking again by itself).
    pub fn is_snowflake_refusing(&self) -> bool {
        self.snowflake_refused.load(Ordering::Relaxed)
    }

    /// Whether the last attempt to reach Snowflake got an answer.
    pub fn is_snowflake_up(&self) -> bool {
        self.snowflake.load(Ordering::Relaxed)
    }

    /// The run loop paused (`true`) or resumed on a plugin fault.
    pub fn chain_paused(&self, paused: bool) {
        self.chain_paused.store(paused, Ordering::Relaxed);
    }
}

/// Why floe is not ready, one line per reason; empty when it is.
pub fn not_ready(stats: &Stats, kafka_up: &AtomicBool) -> Vec<String> {
    let health = &stats.health;
    let mut why = Vec::new();
    if !kafka_up.load(Ordering::Relaxed) {
        why.push("kafka: no broker reachable".to_string());
    }
    if !health.is_snowflake_up() {
        let error = *health
            .snowflake_error
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        why.push(if error.is_empty() {
            "snowflake: not reached yet".to_string()
        } else {
            format!("snowflake: {error}")
        });
    }
    if health.chain_paused.load(Ordering::Relaxed) {
        why.push("plugins: paused on a plugin fault".to_string());
    }
    for (table, reason) in stats
        .blocked
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
    {
        why.push(format!("table blocked: {table}: {reason}"));
    }
    why
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_of_readiness_is_named_when_it_fails() {
        let stats = Stats::default();
        let kafka = AtomicBool::new(false);
        assert_eq!(
            not_ready(&stats, &kafka),
            vec!["kafka: no broker reachable", "snowflake: not reached yet"]
        );
        kafka.store(true, Ordering::Relaxed);
        stats.health.snowflake_up();
        assert!(not_ready(&stats, &kafka).is_empty());
        stats.health.snowflake_down("unreachable");
        stats.health.chain_paused(true);
        stats.set_blocked("\"Order Lines\"", Some("insufficient privileges"));
        assert_eq!(
            not_ready(&stats, &kafka),
            vec![
                "snowflake: unreachable",
                "plugins: paused on a plugin fault",
                "table blocked: \"Order Lines\": insufficient privileges",
            ]
        );
        stats.health.snowflake_up();
        stats.health.chain_paused(false);
        stats.set_blocked("\"Order Lines\"", None);
        assert!(not_ready(&stats, &kafka).is_empty());
        // A refused login: named, and not asked again by itself.
        stats.health.snowflake_refused();
        assert!(stats.health.is_snowflake_refusing());
        assert_eq!(
            not_ready(&stats, &kafka),
            vec!["snowflake: refuses floe's login or configuration (the log has the error)"]
        );
        stats.health.snowflake_up();
        assert!(!stats.health.is_snowflake_refusing());
        assert!(not_ready(&stats, &kafka).is_empty());
    }
}
