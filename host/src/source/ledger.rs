//! What may be committed: per Kafka partition, the offsets read and not yet done (loaded,
//! dead-lettered, or skipped on purpose). The only rule for offsets lives here: a partition is
//! committed up to its oldest offset still open, so a record that waits (a batch in flight, a
//! table held back) is read again after a restart, and nothing after it is lost either; and
//! only partitions this process owns are committed: a revoked partition is committed one last
//! time (what is done) and forgotten, and its messages still in memory are the pipeline's to
//! drop, since the partition's new owner reads them again.

use std::collections::{BTreeSet, HashMap, HashSet};
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
    /// Partitions taken away in a rebalance and not assigned again since.
    revoked: HashSet<Partition>,
    /// Revoked partitions the pipeline has not been told about yet.
    unreported: Vec<Partition>,
    /// Per partition, how many times it was assigned to this process: a message fetched under
    /// an earlier assignment (still queued when the partition came back) is stale.
    assignments: Vec<(Partition, u64)>,
}

/// What a message read means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// A new message: its offset is open.
    New,
    /// Its offset is open already (a re-delivery after a rebalance): it is in the pipeline.
    Again,
    /// Its partition was revoked: another process owns it now.
    NotOwned,
}

impl Ledger {
    /// A message was read: its offset is open until [`Ledger::done`].
    pub fn read(&mut self, topic: &str, partition: i32, offset: i64) -> Read {
        if !self.revoked.is_empty() && self.revoked.contains(&(Arc::from(topic), partition)) {
            return Read::NotOwned;
        }
        let p = self.entry(topic, partition);
        if !p.open.insert(offset) {
            return Read::Again;
        }
        p.next = p.next.max(offset + 1);
        Read::New
    }

    /// Partitions assigned to this process (again).
    pub fn assigned(&mut self, partitions: &[Partition]) {
        for p in partitions {
            self.revoked.remove(p);
            match self.assignments.iter_mut().find(|(q, _)| q == p) {
                Some((_, n)) => *n += 1,
                None => self.assignments.push((p.clone(), 1)),
            }
        }
    }

    /// Which assignment of the partition is current (0 before the first): a message fetched
    /// under another one is not to be read.
    pub fn assignment(&self, topic: &str, partition: i32) -> u64 {
        self.assignments
            .iter()
            .find(|((t, p), _)| &**t == topic && *p == partition)
            .map_or(0, |(_, n)| *n)
    }

    /// Whether the message at `offset` is still this process's to handle: read and not done,
    /// and its partition not revoked since.
    pub fn owns(&self, topic: &str, partition: i32, offset: i64) -> bool {
        self.partitions
            .iter()
            .any(|((t, p), l)| &**t == topic && *p == partition && l.open.contains(&offset))
    }

    /// Partitions revoked from this process: returns their last commits (up to what is done),
    /// then forgets them. Their open messages are never committed here.
    pub fn revoke(&mut self, partitions: &[Partition]) -> Vec<(Partition, i64)> {
        let mut last = Vec::new();
        for key in partitions {
            if let Some(p) = self.partitions.remove(key) {
                if p.committable() > p.committed {
                    last.push((key.clone(), p.committable()));
                }
            }
            self.revoked.insert(key.clone());
            self.unreported.push(key.clone());
        }
        last.sort();
        last
    }

    /// The partitions revoked since the last call (the pipeline drops their messages).
    pub fn take_revoked(&mut self) -> Vec<Partition> {
        std::mem::take(&mut self.unreported)
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
    fn a_revoked_partition_is_committed_once_up_to_what_is_done_then_forgotten() {
        let mut l = Ledger::default();
        let t0: Partition = (Arc::from("t"), 0);
        let t1: Partition = (Arc::from("t"), 1);
        for o in 0..4 {
            assert_eq!(l.read("t", 0, o), Read::New);
        }
        l.read("t", 1, 9);
        l.done("t", 0, 0);
        l.done("t", 0, 1);
        // 2 and 3 are still in flight: the last commit stops before them.
        assert_eq!(l.revoke(std::slice::from_ref(&t0)), vec![(t0.clone(), 2)]);
        assert_eq!(l.take_revoked(), vec![t0.clone()]);
        assert!(l.take_revoked().is_empty());
        // Nothing more of it is committed, whatever the pipeline finishes later.
        l.done("t", 0, 2);
        assert_eq!(l.committable(), vec![(t1.clone(), 9)]);
        assert_eq!(l.read("t", 0, 4), Read::NotOwned);
        // Assigned again: read afresh from wherever the group's offset is.
        l.assigned(std::slice::from_ref(&t0));
        assert_eq!(l.read("t", 0, 2), Read::New);
        assert_eq!(l.committable(), vec![(t0.clone(), 2), (t1.clone(), 9)]);
    }

    #[test]
    fn a_message_is_owned_while_open_and_its_partition_not_revoked() {
        let mut l = Ledger::default();
        let t0: Partition = (Arc::from("t ü"), 0);
        assert_eq!(l.assignment("t ü", 0), 0);
        l.assigned(std::slice::from_ref(&t0));
        assert_eq!(l.assignment("t ü", 0), 1);
        assert_eq!(l.assignment("t ü", 1), 0, "another partition");
        l.read("t ü", 0, 5);
        l.read("t ü", 0, 6);
        l.done("t ü", 0, 6);
        assert!(l.owns("t ü", 0, 5));
        assert!(!l.owns("t ü", 0, 6), "done");
        assert!(!l.owns("t ü", 1, 5), "another partition");
        l.revoke(std::slice::from_ref(&t0));
        assert!(!l.owns("t ü", 0, 5), "revoked");
        // Back again: a message fetched before is of an older assignment, and not owned until
        // it is read anew.
        l.assigned(std::slice::from_ref(&t0));
        assert_eq!(l.assignment("t ü", 0), 2);
        assert!(!l.owns("t ü", 0, 5));
        assert_eq!(l.read("t ü", 0, 5), Read::New);
        assert!(l.owns("t ü", 0, 5));
    }

    #[test]
    fn a_message_delivered_again_while_open_is_not_read_twice() {
        let mut l = Ledger::default();
        assert_eq!(l.read("t", 0, 5), Read::New);
        assert_eq!(l.read("t", 0, 5), Read::Again);
        l.done("t", 0, 5);
        assert!(!l.has_open());
        // Once done, a replay is a new read (loading it again is harmless).
        assert_eq!(l.read("t", 0, 5), Read::New);
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
