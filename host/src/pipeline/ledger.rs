//! What may be committed: per Kafka partition, the offsets read and not yet done (loaded,
//! dead-lettered, or skipped on purpose). The only rule for offsets lives here: a partition is
//! committed up to its oldest offset still open, so a record that waits (a batch in flight, a
//! table held back) is read again after a restart, and nothing after it is lost either.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// A Kafka topic and partition.
pub type Partition = (Arc<str>, i32);

#[derive(Debug, Default)]
struct PartitionLedger {
    /// Offsets read and not done yet.
    open: BTreeSet<i64>,
    /// One past the highest offset read.
    next: i64,
    /// The offset last committed (or -1: nothing yet).
    committed: i64,
}

impl PartitionLedger {
    /// The offset to commit: the oldest open one, else one past everything read.
    fn committable(&self) -> i64 {
        self.open.first().copied().unwrap_or(self.next)
    }
}

/// Offsets per partition, from read to done to committed.
#[derive(Debug, Default)]
pub struct Ledger {
    partitions: HashMap<Partition, PartitionLedger>,
}

impl Ledger {
    /// A message was read: its offset is open until [`Ledger::done`].
    pub fn read(&mut self, topic: &str, partition: i32, offset: i64) {
        let p = self.entry(topic, partition);
        p.open.insert(offset);
        p.next = p.next.max(offset + 1);
    }

    /// The message at `offset` is fully handled.
    pub fn done(&mut self, topic: &str, partition: i32, offset: i64) {
        if let Some(p) = self.find_mut(topic, partition) {
            p.open.remove(&offset);
        }
    }

    /// Whether some read message is not done yet.
    pub fn has_open(&self) -> bool {
        self.partitions.values().any(|p| !p.open.is_empty())
    }

    /// The offsets to commit now: per partition, the oldest open offset (or one past the last
    /// read), where that moved since the last commit.
    pub fn committable(&self) -> Vec<(Partition, i64)> {
        let mut out: Vec<(Partition, i64)> = self
            .partitions
            .iter()
            .filter(|(_, p)| p.committable() > p.committed)
            .map(|(k, p)| (k.clone(), p.committable()))
            .collect();
        out.sort();
        out
    }

    /// The broker accepted these commits.
    pub fn committed(&mut self, offsets: &[(Partition, i64)]) {
        for ((topic, partition), offset) in offsets {
            if let Some(p) = self.find_mut(topic, *partition) {
                p.committed = p.committed.max(*offset);
            }
        }
    }

    fn entry(&mut self, topic: &str, partition: i32) -> &mut PartitionLedger {
        let key = (Arc::from(topic), partition);
        self.partitions
            .entry(key)
            .or_insert_with(|| PartitionLedger {
                committed: -1,
                ..Default::default()
            })
    }

    fn find_mut(&mut self, topic: &str, partition: i32) -> Option<&mut PartitionLedger> {
        self.partitions
            .iter_mut()
            .find(|((t, p), _)| &**t == topic && *p == partition)
            .map(|(_, l)| l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_commits_up_to_its_oldest_open_offset() {
        let mut l = Ledger::default();
        for o in 10..15 {
            l.read("t", 0, o);
        }
        l.read("t", 1, 7);
        assert_eq!(
            l.committable(),
            vec![((Arc::from("t"), 0), 10), ((Arc::from("t"), 1), 7)]
        );
        // 12 waits (say its table is held back); everything else is done.
        for o in [10, 11, 13, 14] {
            l.done("t", 0, o);
        }
        l.done("t", 1, 7);
        assert_eq!(
            l.committable(),
            vec![((Arc::from("t"), 0), 12), ((Arc::from("t"), 1), 8)]
        );
        let c = l.committable();
        l.committed(&c);
        assert!(l.committable().is_empty(), "nothing moved since");
        assert!(l.has_open());
        l.done("t", 0, 12);
        assert_eq!(l.committable(), vec![((Arc::from("t"), 0), 15)]);
        assert!(!l.has_open());
    }

    #[test]
    fn nothing_read_nothing_committed() {
        let mut l = Ledger::default();
        l.done("t", 0, 5); // unknown: ignored
        assert!(l.committable().is_empty());
        l.read("t", 0, 0);
        assert_eq!(l.committable(), vec![((Arc::from("t"), 0), 0)]);
    }
}
