//! Batching: collects changes until the batch is full (records) or old enough (time), folding
//! every change of one row inside the batch into the single net effect the warehouse must see.
//! It never talks to Kafka or Snowflake.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::change::{Cell, Change, Column, KafkaPosition, Op, Row, SourcePosition, TableId};

/// The batch's maps are looked up once or more per record: a fast hasher, seeded per process.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A change's place in the source log, `(commit, LSN)` (see [`SourcePosition::log_key`]).
pub type LogKey = (u64, u64);

/// What the load must do for one row of one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowAction {
    /// Insert the image, or update the stored row with it.
    Upsert,
    /// Delete the row; only its key is known.
    Delete,
    /// Delete the row, whose last image is known because it was written earlier in the batch
    /// (a soft delete then keeps those values, and a row created and deleted in one batch still
    /// appears as deleted).
    DeleteWithImage,
}

/// The net effect of all changes to one row within a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct FoldedRow {
    pub action: RowAction,
    /// The latest known image; unchanged-TOAST cells are filled from earlier images in the batch
    /// where possible.
    pub image: Option<Row>,
    /// The key columns and values.
    pub key: Vec<(Arc<str>, serde_json::Value)>,
    /// Operation, positions and time of the latest change.
    pub op: Op,
    pub position: SourcePosition,
    pub source_ts_ms: i64,
    pub kafka: KafkaPosition,
    /// Indexes (in push order within the batch) of every change folded into this row, so the
    /// caller can trace a row that fails to load back to its source messages.
    pub sources: Vec<usize>,
}

/// The folded rows of one table, in first-seen order.
#[derive(Debug, Default)]
pub struct TableBatch {
    pub rows: Vec<FoldedRow>,
    /// The table's columns: those of the newest `after` image in the batch (by source
    /// position), then any column only older images have (the source dropped it meanwhile);
    /// from a `before` image if the batch has no `after` (without an embedded schema a delete's
    /// `before` may hold the key columns only).
    pub columns: Option<Arc<[Column]>>,
    /// Log position and columns of the newest `after` image.
    newest: Option<(LogKey, Arc<[Column]>)>,
    /// Every column list seen, with the newest log position it was seen at.
    seen: Vec<(LogKey, Arc<[Column]>)>,
    index: FastMap<String, usize>,
}

impl TableBatch {
    /// Log position of the newest image that has a column named `name` (its type in
    /// [`TableBatch::columns`] is that image's); the lowest position if none has it.
    pub fn column_at(&self, name: &str) -> LogKey {
        self.seen
            .iter()
            .filter(|(_, cols)| cols.iter().any(|c| &*c.name == name))
            .map(|(at, _)| *at)
            .max()
            .unwrap_or_default()
    }

    /// Whether the newest `after` image has a column named `name` (columns only older images
    /// have were dropped at the source meanwhile).
    pub fn newest_has(&self, name: &str) -> bool {
        self.newest
            .as_ref()
            .is_none_or(|(_, cols)| cols.iter().any(|c| &*c.name == name))
    }

    /// Notes the columns of an `after` image written at log position `lsn`. Images of one
    /// schema share their column list, so this is a pointer comparison unless the source
    /// schema changed within the batch (partitions interleave old and new images).
    fn note_columns(&mut self, cols: &Arc<[Column]>, lsn: LogKey) {
        let seen = self.seen.iter().position(|(_, s)| Arc::ptr_eq(s, cols));
        let newer = self.newest.as_ref().is_none_or(|(at, _)| lsn >= *at);
        match seen {
            Some(i) => {
                let at = &mut self.seen[i].0;
                *at = (*at).max(lsn);
            }
            None => self.seen.push((lsn, cols.clone())),
        }
        if newer {
            let same = self
                .newest
                .as_ref()
                .is_some_and(|(_, n)| Arc::ptr_eq(n, cols));
            self.newest = Some((lsn, cols.clone()));
            if same {
                return;
            }
        } else if seen.is_some() {
            return;
        }
        let Some((_, newest)) = &self.newest else {
            return;
        };
        // Newest first; a column only older images have takes its type from the newest of them.
        let mut older: Vec<&(LogKey, Arc<[Column]>)> = self.seen.iter().collect();
        older.sort_by_key(|s| std::cmp::Reverse(s.0));
        let mut union: Vec<Column> = newest.to_vec();
        for c in older.iter().flat_map(|(_, s)| s.iter()) {
            if !union.iter().any(|u| u.name == c.name) {
                union.push(c.clone());
            }
        }
        self.columns = Some(if union.len() == newest.len() {
            newest.clone()
        } else {
            union.into()
        });
    }

    fn add(&mut self, change: Change, index: usize) {
        if let Some(after) = &change.after {
            self.note_columns(&after.columns, change.position.log_key());
        } else if let (None, Some(before)) = (&self.columns, &change.before) {
            self.columns = Some(before.columns.clone());
        }
        // The key by column name, whatever order its columns came in: values alone would make
        // (order_id 1, line_no 4) and (line_no 4, order_id 1) different rows, and the first
        // the same as (order_id 4, line_no 1).
        let key_text = if change.key.is_empty() {
            None
        } else {
            let mut pairs: Vec<(&str, &serde_json::Value)> =
                change.key.iter().map(|(n, v)| (&**n, v)).collect();
            pairs.sort_by(|a, b| a.0.cmp(b.0));
            Some(serde_json::to_string(&pairs).unwrap_or_default())
        };
        let existing = key_text.as_ref().and_then(|k| self.index.get(k).copied());
        match existing {
            Some(i) => {
                self.rows[i].sources.push(index);
                fold_into(&mut self.rows[i], change);
            }
            None => {
                let mut row = first_fold(change);
                row.sources.push(index);
                if let Some(k) = key_text {
                    self.index.insert(k, self.rows.len());
                }
                self.rows.push(row);
            }
        }
    }
}

fn first_fold(change: Change) -> FoldedRow {
    let (action, image) = match change.op {
        Op::Delete => (RowAction::Delete, None),
        _ => (RowAction::Upsert, change.after),
    };
    FoldedRow {
        action,
        image,
        key: change.key,
        op: change.op,
        position: change.position,
        source_ts_ms: change.source_ts_ms,
        kafka: change.kafka,
        sources: Vec::new(),
    }
}

fn fold_into(row: &mut FoldedRow, change: Change) {
    if !change.position.at_or_after(&row.position) {
        // An older change of the same row (a replay, or a snapshot read after a streamed
        // change); the newer state already holds.
        return;
    }
    match change.op {
        Op::Delete => {
            row.action = if row.image.is_some() {
                RowAction::DeleteWithImage
            } else {
                RowAction::Delete
            };
        }
        _ => {
            let mut after = change.after;
            if let (Some(new), Some(old)) = (after.as_mut(), row.image.as_ref()) {
                fill_unchanged(new, old);
            }
            row.action = RowAction::Upsert;
            row.image = after;
        }
    }
    row.op = change.op;
    row.position = change.position;
    row.source_ts_ms = change.source_ts_ms;
    row.kafka = change.kafka;
}

/// Replaces unchanged-TOAST cells of `new` by the values `old` holds for the same columns.
fn fill_unchanged(new: &mut Row, old: &Row) {
    for (i, cell) in new.cells.iter_mut().enumerate() {
        if *cell == Cell::Unchanged {
            if let Some(prev @ Cell::Value(_)) = old.get(&new.columns[i].name) {
                *cell = prev.clone();
            }
        }
    }
}

/// A batch ready to load: folded rows per table.
#[derive(Debug, Default)]
pub struct Batch {
    pub tables: FastMap<TableId, TableBatch>,
    /// Changes that went into the batch (before folding).
    pub changes: usize,
}

impl Batch {
    /// Folded rows across all tables.
    pub fn rows(&self) -> usize {
        self.tables.values().map(|t| t.rows.len()).sum()
    }
}

/// Size and time limits of a batch (the guide's defaults: 100 records, 5 s), and a bound on
/// the bytes of the messages it holds.
///
/// Batches are adaptive: `max_records` and `max_wait` bound latency while floe is caught up;
/// a batch that fills before its time is up means a backlog, and the next one may hold twice
/// as many records, up to `backlog_max_records` (and always `max_bytes`), so that the
/// warehouse's cost per statement is spread over many rows. A batch closed by time means floe
/// has caught up: the next one is back to `max_records`.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_records: usize,
    pub max_wait: Duration,
    pub max_bytes: usize,
    pub backlog_max_records: usize,
}

/// Accumulates changes into the current batch. Changes wait unfolded (so the plugin chain
/// can see and edit each one) until [`Batcher::seal`] folds the kept ones for loading.
#[derive(Debug)]
pub struct Batcher {
    limits: BatchLimits,
    /// Records the current batch may hold: `max_records` when caught up, more under a backlog.
    target: usize,
    /// Changes pushed since the last seal, in push order (their index is their position).
    pending: Vec<Change>,
    /// The message bytes of each pending change (dropped ones give theirs back).
    pending_bytes: Vec<usize>,
    current: Batch,
    opened: Option<Instant>,
    /// Message bytes pushed since the last take.
    bytes: usize,
}

impl Batcher {
    pub fn new(limits: BatchLimits) -> Self {
        Batcher {
            limits,
            target: limits.max_records,
            pending: Vec::new(),
            pending_bytes: Vec::new(),
            current: Batch::default(),
            opened: None,
            bytes: 0,
        }
    }

    /// Adds a change (not a truncate: those are applied between batches) that came in a
    /// message of `bytes` bytes. Returns its index in the batch, the number
    /// [`FoldedRow::sources`] refers to it by.
    pub fn push(&mut self, change: Change, bytes: usize) -> usize {
        if self.opened.is_none() {
            self.opened = Some(self.opened_at(change.source_ts_ms));
        }
        self.bytes += bytes;
        self.pending.push(change);
        self.pending_bytes.push(bytes);
        self.current.changes + self.pending.len() - 1
    }

    /// The changes not folded yet, for the plugin chain to decide on and edit.
    pub fn pending_mut(&mut self) -> &mut [Change] {
        &mut self.pending
    }

    /// The pending changes, moved out to run through the plugin chain on another thread; they
    /// are given back with [`Batcher::put_pending`] before the batcher is used again.
    pub fn take_pending(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.pending)
    }

    /// Gives back the changes [`Batcher::take_pending`] moved out.
    pub fn put_pending(&mut self, pending: Vec<Change>) {
        assert!(
            self.pending.is_empty(),
            "pending changes pushed while taken"
        );
        self.pending = pending;
    }

    /// Whether changes wait to be folded.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Folds the pending changes whose index `keep` accepts into the current batch; the others
    /// are left out (dropped, or dead-lettered by the caller).
    pub fn seal(&mut self, keep: impl Fn(usize) -> bool) {
        let base = self.current.changes;
        self.pending_bytes.clear();
        for (i, change) in std::mem::take(&mut self.pending).into_iter().enumerate() {
            let index = base + i;
            self.current.changes += 1;
            if keep(index) {
                self.current
                    .tables
                    .entry(change.table.clone())
                    .or_default()
                    .add(change, index);
            }
        }
    }

    /// Whether nothing was pushed since the last take.
    pub fn is_empty(&self) -> bool {
        self.current.changes == 0 && self.pending.is_empty()
    }

    /// When a batch opened by a change committed at `source_ts_ms` counts as opened: the
    /// commit time, if it is less than `max_wait` ago (but never earlier than `max_wait / 2`
    /// before the read), so that `max_wait` bounds the time from the source's commit to the
    /// load, not from floe's read (Debezium's own delay included).
    /// An older change (a backlog), one without a commit time or from a clock ahead of floe's
    /// opens the batch now: a batch never waits longer than `max_wait` from its first read.
    fn opened_at(&self, source_ts_ms: i64) -> Instant {
        let now = Instant::now();
        let wall_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        match u64::try_from(wall_ms.saturating_sub(source_ts_ms)) {
            Ok(age) if source_ts_ms > 0 && (age as u128) < self.limits.max_wait.as_millis() => {
                // At most half the wait is taken back: a clock skew or a delay just under
                // `max_wait` must not make every batch a few milliseconds long.
                let back = Duration::from_millis(age).min(self.limits.max_wait / 2);
                now.checked_sub(back).unwrap_or(now)
            }
            _ => now,
        }
    }

    /// Whether the batch holds as many records (or bytes) as it may.
    pub fn is_full(&self) -> bool {
        self.current.changes + self.pending.len() >= self.target
            || self.bytes >= self.limits.max_bytes
    }

    /// Whether a batch read while the one before loads holds as much as it may for now: half
    /// of `max_bytes` (or all its records), so that the two batches' messages stay within 1.5
    /// times `max_bytes`; the rest is read once the load is back.
    pub fn is_full_ahead(&self) -> bool {
        self.is_full() || self.bytes >= self.limits.max_bytes / 2
    }

    /// Records the current batch may hold (see [`BatchLimits`]).
    pub fn target(&self) -> usize {
        self.target
    }

    /// Drops the pending changes whose index `drop` names (their messages went to another
    /// consumer in a rebalance). Only while nothing is sealed: indexes stay those of the
    /// remaining changes in order. Returns how many were dropped.
    pub fn drop_pending(&mut self, drop: impl Fn(usize) -> bool) -> usize {
        if self.current.changes > 0 {
            return 0;
        }
        let before = self.pending.len();
        remove_indexes(&mut self.pending, &drop);
        remove_indexes(&mut self.pending_bytes, &drop);
        self.bytes = self.pending_bytes.iter().sum();
        if self.pending.is_empty() {
            self.opened = None;
        }
        before - self.pending.len()
    }

    /// When the current batch must be flushed by time, if it holds anything.
    pub fn deadline(&self) -> Option<Instant> {
        self.opened.map(|t| t + self.limits.max_wait)
    }

    /// The sealed batch, to load; it stays here until [`Batcher::take`] after the load.
    pub fn current(&self) -> &Batch {
        &self.current
    }

    /// Takes the current batch, leaving an empty one. Changes still pending are sealed into it
    /// first (all kept), so nothing pushed can vanish.
    pub fn take(&mut self) -> Batch {
        if self.is_full() {
            // A backlog: spread the next statements over more rows.
            self.target =
                (self.target * 2).min(self.limits.backlog_max_records.max(self.limits.max_records));
        } else if self
            .opened
            .is_some_and(|t| t.elapsed() >= self.limits.max_wait)
        {
            // Closed by time: caught up, back to the latency bound.
            self.target = self.limits.max_records;
        }
        if self.has_pending() {
            self.seal(|_| true);
        }
        self.opened = None;
        self.bytes = 0;
        std::mem::take(&mut self.current)
    }
}

/// Removes the items of `items` whose index `drop` names, keeping the others in order.
pub fn remove_indexes<T>(items: &mut Vec<T>, drop: impl Fn(usize) -> bool) {
    let mut i = 0;
    items.retain(|_| {
        let keep = !drop(i);
        i += 1;
        keep
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::{Column, ColumnType};
    use serde_json::Value;

    fn columns() -> Arc<[Column]> {
        ["id", "status", "description"]
            .into_iter()
            .map(|n| Column {
                name: n.into(),
                ty: ColumnType::Text,
                optional: true,
            })
            .collect::<Vec<_>>()
            .into()
    }

    fn change(op: Op, id: i64, lsn: u64, status: &str, desc: Cell) -> Change {
        let row = Row {
            columns: columns(),
            cells: vec![Cell::Value(id.into()), Cell::Value(status.into()), desc],
        };
        Change {
            table: TableId {
                schema: Arc::from("public"),
                table: Arc::from("t"),
            },
            op,
            key: vec![("id".into(), Value::from(id))],
            before: None,
            after: (op != Op::Delete).then_some(row),
            position: SourcePosition::streamed(lsn, None),
            source_ts_ms: lsn as i64,
            kafka: KafkaPosition {
                partition: 0,
                offset: lsn as i64,
            },
        }
    }

    fn text(s: &str) -> Cell {
        Cell::Value(Value::from(s))
    }

    fn batch_of(changes: Vec<Change>) -> Batch {
        let mut b = Batcher::new(BatchLimits {
            max_records: 3,
            max_wait: Duration::from_secs(5),
            max_bytes: usize::MAX,
            backlog_max_records: 3,
        });
        for c in changes {
            b.push(c, 0);
        }
        b.seal(|_| true);
        b.take()
    }

    #[test]
    fn several_updates_of_one_row_fold_to_the_last() {
        let b = batch_of(vec![
            change(Op::Create, 1, 10, "new", text("long")),
            change(Op::Update, 1, 11, "paid", Cell::Unchanged),
            change(Op::Update, 1, 12, "shipped", Cell::Unchanged),
            change(Op::Create, 2, 13, "new", text("x")),
        ]);
        assert_eq!(b.changes, 4);
        let rows = &b.tables.values().next().unwrap().rows;
        assert_eq!(rows.len(), 2);
        let img = rows[0].image.as_ref().unwrap();
        assert_eq!(img.get("status"), Some(&text("shipped")));
        // The unchanged TOAST value is carried from the insert earlier in the batch.
        assert_eq!(img.get("description"), Some(&text("long")));
        assert_eq!(rows[0].position.lsn, 12);
        assert_eq!(rows[0].action, RowAction::Upsert);
        assert_eq!(rows[0].sources, vec![0, 1, 2]);
        assert_eq!(rows[1].sources, vec![3]);
    }

    #[test]
    fn composite_keys_fold_by_column_name_not_position() {
        // (order 1, line 4) with its key columns in either order is one row; (order 4,
        // line 1) is another, though its values come in the same order as one of them.
        let keyed = |lsn: u64, key: [(&str, i64); 2]| {
            let mut c = change(Op::Create, 0, lsn, "new", text("x"));
            c.key = key
                .iter()
                .map(|(n, v)| (Arc::from(*n), Value::from(*v)))
                .collect();
            c
        };
        let mut b = Batcher::new(BatchLimits {
            max_records: 10,
            max_wait: Duration::from_secs(5),
            max_bytes: usize::MAX,
            backlog_max_records: 10,
        });
        b.push(keyed(1, [("line_no", 4), ("order_id", 1)]), 0);
        b.push(keyed(2, [("order_id", 4), ("line_no", 1)]), 0);
        b.push(keyed(3, [("order_id", 1), ("line_no", 4)]), 0);
        b.seal(|_| true);
        let rows = &b.take().tables.into_values().next().unwrap().rows;
        let sources: Vec<&Vec<usize>> = rows.iter().map(|r| &r.sources).collect();
        assert_eq!(sources, [&vec![0, 2], &vec![1]]);
    }

    #[test]
    fn insert_then_delete_keeps_the_image_for_soft_deletes() {
        let b = batch_of(vec![
            change(Op::Create, 1, 10, "new", text("d")),
            change(Op::Delete, 1, 11, "", text("")),
            change(Op::Delete, 2, 12, "", text("")),
        ]);
        let rows = &b.tables.values().next().unwrap().rows;
        assert_eq!(rows[0].action, RowAction::DeleteWithImage);
        assert_eq!(
            rows[0].image.as_ref().unwrap().get("status"),
            Some(&text("new"))
        );
        assert_eq!(rows[0].op, Op::Delete);
        assert_eq!(rows[1].action, RowAction::Delete);
        assert!(rows[1].image.is_none());
    }

    #[test]
    fn delete_then_reinsert_is_an_upsert_and_older_replays_are_ignored() {
        let b = batch_of(vec![
            change(Op::Delete, 1, 10, "", text("")),
            change(Op::Create, 1, 11, "again", text("d")),
            change(Op::Update, 1, 5, "stale", text("d")),
        ]);
        let rows = &b.tables.values().next().unwrap().rows;
        assert_eq!(rows[0].action, RowAction::Upsert);
        assert_eq!(
            rows[0].image.as_ref().unwrap().get("status"),
            Some(&text("again"))
        );
    }

    #[test]
    fn table_columns_come_from_after_images_not_key_only_befores() {
        let mut delete = change(Op::Delete, 2, 11, "", text(""));
        delete.before = Some(Row {
            columns: vec![Column {
                name: "id".into(),
                ty: ColumnType::Unknown,
                optional: false,
            }]
            .into(),
            cells: vec![Cell::Value(2.into())],
        });
        let b = batch_of(vec![change(Op::Create, 1, 10, "new", text("d")), delete]);
        let tb = b.tables.values().next().unwrap();
        assert_eq!(tb.columns.as_ref().unwrap().len(), 3);
    }

    #[test]
    fn columns_of_a_batch_are_the_newest_schema_plus_dropped_columns() {
        let col = |n: &str, ty: ColumnType| Column {
            name: n.into(),
            ty,
            optional: true,
        };
        let old: Arc<[Column]> = vec![
            col("id", ColumnType::Integer),
            col("gone", ColumnType::Text),
            col(
                "amt",
                ColumnType::Decimal {
                    precision: Some(10),
                    scale: 2,
                },
            ),
        ]
        .into();
        let new: Arc<[Column]> = vec![
            col("id", ColumnType::Integer),
            col(
                "amt",
                ColumnType::Decimal {
                    precision: Some(14),
                    scale: 2,
                },
            ),
        ]
        .into();
        let mut tb = TableBatch::default();
        let older: Arc<[Column]> = vec![
            col("id", ColumnType::Integer),
            col("gone", ColumnType::Integer),
        ]
        .into();
        // Partitions interleave: the newest schema arrives first, older images after it.
        tb.note_columns(&new, (20, 20));
        tb.note_columns(&older, (5, 5));
        tb.note_columns(&old, (10, 10));
        tb.note_columns(&new, (30, 30));
        let cols = tb.columns.clone().unwrap();
        let names: Vec<&str> = cols.iter().map(|c| &*c.name).collect();
        assert_eq!(names, ["id", "amt", "gone"]);
        assert_eq!(
            cols[1].ty,
            ColumnType::Decimal {
                precision: Some(14),
                scale: 2
            }
        );
        // The dropped column's type is the one of the newest image that had it.
        assert_eq!(cols[2].ty, ColumnType::Text);
    }

    #[test]
    fn limits() {
        let mut b = Batcher::new(BatchLimits {
            max_records: 2,
            max_wait: Duration::from_millis(50),
            max_bytes: usize::MAX,
            backlog_max_records: 2,
        });
        assert!(b.deadline().is_none() && b.is_empty());
        b.push(change(Op::Create, 1, 1, "a", text("")), 0);
        assert!(b.deadline().is_some() && !b.is_full());
        b.push(change(Op::Update, 1, 2, "b", text("")), 0);
        assert!(b.is_full());
        b.seal(|_| true);
        let batch = b.take();
        assert_eq!((batch.changes, batch.rows()), (2, 1));
        assert!(b.is_empty() && b.deadline().is_none());
    }

    #[test]
    fn the_batch_clock_starts_at_the_source_commit_when_it_is_recent() {
        let limits = BatchLimits {
            max_records: 100,
            max_wait: Duration::from_secs(60),
            max_bytes: usize::MAX,
            backlog_max_records: 100,
        };
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let deadline_after = |ts_ms: i64| {
            let mut b = Batcher::new(limits);
            let mut c = change(Op::Create, 1, 1, "a", text(""));
            c.source_ts_ms = ts_ms;
            b.push(c, 0);
            // Later changes do not move the clock.
            b.push(change(Op::Create, 2, 2, "a", text("")), 0);
            b.deadline()
                .unwrap()
                .saturating_duration_since(Instant::now())
        };
        // Committed 20 s ago: 40 s left of the minute.
        let left = deadline_after(now_ms - 20_000);
        assert!(
            left > Duration::from_secs(30) && left <= Duration::from_secs(40),
            "{left:?}"
        );
        // A backlog (committed an hour ago), no commit time, a clock ahead of floe's: the
        // whole minute from now.
        for ts in [now_ms - 3_600_000, 0, now_ms + 20_000] {
            let left = deadline_after(ts);
            assert!(left > Duration::from_secs(50), "{ts}: {left:?}");
        }
    }

    #[test]
    fn batches_grow_under_a_backlog_and_shrink_once_caught_up() {
        let mut b = Batcher::new(BatchLimits {
            max_records: 2,
            max_wait: Duration::from_millis(30),
            max_bytes: usize::MAX,
            backlog_max_records: 5,
        });
        let fill = |b: &mut Batcher| {
            let mut n = 0;
            while !b.is_full() {
                b.push(change(Op::Create, n, n as u64 + 1, "a", text("")), 0);
                n += 1;
            }
            b.take();
            n
        };
        // Full before their time, each batch allows twice the last, up to the cap.
        assert_eq!(
            [fill(&mut b), fill(&mut b), fill(&mut b), fill(&mut b)],
            [2, 4, 5, 5]
        );
        // A batch closed by time: caught up, back to the latency bound.
        b.push(change(Op::Create, 1, 1, "a", text("")), 0);
        std::thread::sleep(Duration::from_millis(40));
        b.take();
        assert_eq!(b.target(), 2);
        // A batch taken early and not full (a TRUNCATE between batches) changes nothing.
        assert_eq!(fill(&mut b), 2);
        b.push(change(Op::Create, 1, 1, "a", text("")), 0);
        b.take();
        assert_eq!(b.target(), 4);
    }

    #[test]
    fn dropping_pending_changes_keeps_the_others_in_order() {
        let mut b = Batcher::new(BatchLimits {
            max_records: 10,
            max_wait: Duration::from_secs(5),
            max_bytes: 100,
            backlog_max_records: 10,
        });
        for id in 1..=4 {
            b.push(change(Op::Create, id, id as u64, "a", text("")), 30);
        }
        assert!(b.is_full(), "120 bytes of 100");
        assert_eq!(b.drop_pending(|i| i % 2 == 0), 2);
        assert!(!b.is_full(), "the dropped changes' bytes are given back");
        let ids: Vec<_> = b
            .pending_mut()
            .iter()
            .map(|c| c.after.as_ref().unwrap().cells[0].clone())
            .collect();
        assert_eq!(ids, [Cell::Value(2.into()), Cell::Value(4.into())]);
        assert_eq!(b.drop_pending(|_| true), 2);
        assert!(b.is_empty() && b.deadline().is_none());
    }

    #[test]
    fn taking_an_unsealed_batch_keeps_every_change() {
        let mut b = Batcher::new(BatchLimits {
            max_records: 10,
            max_wait: Duration::from_secs(5),
            max_bytes: usize::MAX,
            backlog_max_records: 10,
        });
        b.push(change(Op::Create, 1, 1, "a", text("")), 0);
        b.push(change(Op::Create, 2, 2, "a", text("")), 0);
        let batch = b.take();
        assert_eq!((batch.changes, batch.rows()), (2, 2));
        assert!(b.is_empty() && !b.is_full());
    }

    #[test]
    fn sealing_leaves_out_what_the_chain_refused_and_keeps_indexes() {
        let mut b = Batcher::new(BatchLimits {
            max_records: 10,
            max_wait: Duration::from_secs(5),
            max_bytes: usize::MAX,
            backlog_max_records: 10,
        });
        for id in 1..=3 {
            assert_eq!(
                b.push(change(Op::Create, id, id as u64, "a", text("")), 0),
                id as usize - 1
            );
        }
        b.pending_mut()[2].after.as_mut().unwrap().cells[1] = text("edited");
        b.seal(|i| i != 1);
        assert!(!b.has_pending() && !b.is_empty());
        let batch = b.take();
        let rows = &batch.tables.values().next().unwrap().rows;
        assert_eq!(batch.changes, 3);
        assert_eq!(
            rows.iter().map(|r| r.sources.clone()).collect::<Vec<_>>(),
            [vec![0], vec![2]]
        );
        assert_eq!(rows[1].image.as_ref().unwrap().cells[1], text("edited"));
    }

    #[test]
    fn a_snapshot_read_never_replaces_a_streamed_change_in_a_batch() {
        // The streamed update has a lower LSN than the snapshot read but committed after it.
        let mut update = change(Op::Update, 1, 900, "paid", text("d"));
        update.position = SourcePosition::streamed(900, Some(1010));
        let mut read = change(Op::Read, 1, 1000, "new", text("d"));
        read.position = SourcePosition::snapshot(1000);
        for order in [vec![update.clone(), read.clone()], vec![read, update]] {
            let b = batch_of(order);
            let rows = &b.tables.values().next().unwrap().rows;
            assert_eq!(
                rows[0].image.as_ref().unwrap().get("status"),
                Some(&text("paid"))
            );
            assert!(!rows[0].position.snapshot);
        }
    }

    #[test]
    fn changes_without_a_position_apply_in_the_order_read() {
        let mut a = change(Op::Create, 1, 0, "first", text("d"));
        a.position = SourcePosition::unknown();
        let mut b = change(Op::Update, 1, 0, "second", text("d"));
        b.position = SourcePosition::unknown();
        let batch = batch_of(vec![a, b]);
        let rows = &batch.tables.values().next().unwrap().rows;
        assert_eq!(
            rows[0].image.as_ref().unwrap().get("status"),
            Some(&text("second"))
        );
    }

    #[test]
    fn a_batch_is_full_by_bytes_too() {
        let mut b = Batcher::new(BatchLimits {
            max_records: 100,
            max_wait: Duration::from_secs(5),
            max_bytes: 1000,
            backlog_max_records: 100,
        });
        b.push(change(Op::Create, 1, 1, "a", text("")), 600);
        assert!(!b.is_full());
        // Read ahead while another batch loads, it stops at half the bytes.
        assert!(b.is_full_ahead());
        b.push(change(Op::Create, 2, 2, "a", text("")), 600);
        assert!(b.is_full());
        b.take();
        assert!(!b.is_full(), "a new batch starts empty");
        assert!(!b.is_full_ahead());
        b.push(change(Op::Create, 3, 3, "a", text("")), 400);
        assert!(!b.is_full_ahead(), "400 of 1000 bytes is under half");
    }
}
