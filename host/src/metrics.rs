//! Pipeline counters and the periodic stats line (the guide's monitoring: messages consumed,
//! records decoded, records loaded, errors, consumer lag).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Counters shared by the pipeline and the stats reporter.
#[derive(Debug, Default)]
pub struct Stats {
    /// Kafka messages received.
    pub consumed: AtomicU64,
    /// Changes decoded successfully.
    pub decoded: AtomicU64,
    /// Tombstones skipped.
    pub tombstones: AtomicU64,
    /// Folded rows merged into Snowflake.
    pub loaded: AtomicU64,
    /// Batches loaded.
    pub batches: AtomicU64,
    /// Messages sent to the dead-letter topic.
    pub dead_lettered: AtomicU64,
    /// Failed attempts (loads, dead-letter sends, Kafka errors); each was retried.
    pub errors: AtomicU64,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The stats line, e.g. `consumed=120 decoded=118 loaded=90 dlq=2 errors=0 lag=3`.
    pub fn line(&self, lag: &AtomicI64) -> String {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let lag = lag.load(Ordering::Relaxed);
        format!(
            "consumed={} decoded={} tombstones={} loaded={} batches={} dlq={} errors={} lag={}",
            g(&self.consumed),
            g(&self.decoded),
            g(&self.tombstones),
            g(&self.loaded),
            g(&self.batches),
            g(&self.dead_lettered),
            g(&self.errors),
            if lag < 0 {
                "?".to_string()
            } else {
                lag.to_string()
            },
        )
    }
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
            "consumed=3 decoded=0 tombstones=0 loaded=0 batches=0 dlq=1 errors=0 lag=?"
        );
    }

    #[test]
    fn peak_memory_is_readable_on_linux() {
        assert!(peak_rss_bytes().is_some_and(|b| b > 0));
    }
}
