//! An in-memory warehouse for the run loop's unit tests: it applies folded rows to tables kept
//! in memory (upserts and deletes by key), counts its statements, and fails on demand the way
//! Snowflake does: an outage, a value it refuses in one row, a table it cannot load. Like the
//! MERGE, a change older (by source position) than the row it would replace is ignored. The
//! test keeps a [`MemoryWarehouse`] handle to break it, heal it, hold its statements at a gate
//! and read what was loaded.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::{Rejected, Sink, SinkError};
use crate::batch::{FoldedRow, RowAction, TableBatch};
use crate::change::{SourcePosition, TableId};

/// The change that last wrote a row.
struct Written {
    partition: i32,
    offset: i64,
    position: SourcePosition,
    deleted: bool,
}

#[derive(Default)]
struct State {
    /// Per target, the rows by their key (as JSON text): the Kafka and source positions of
    /// the change that wrote them, and whether that change deleted the row.
    tables: BTreeMap<String, BTreeMap<String, Written>>,
    /// Every (target, partition, offset) of a row loaded, in load order (a retried load
    /// appears again: loads are idempotent, not exactly once).
    loaded: Vec<(String, i32, i64)>,
    rejects: Vec<Rejected>,
    statements: u64,
    /// Waited before every statement is answered (a real warehouse takes hundreds of ms).
    latency: Duration,
    /// Statements wait at the gate while it is closed; how many wait there now.
    gated: bool,
    waiting: usize,
    outage: bool,
    /// Key values (JSON text of one key cell) whose rows are refused as Snowflake refuses a
    /// value it cannot store.
    poison: HashSet<String>,
    /// Targets that cannot be loaded at all.
    broken: HashSet<String>,
    /// Targets whose every load is refused as a row would be, even with no rows.
    refusing: HashSet<String>,
}

/// The sink the pipeline loads into.
pub struct MemorySink {
    state: Arc<Mutex<State>>,
}

/// The test's side of a [`MemorySink`].
#[derive(Clone)]
pub struct MemoryWarehouse {
    state: Arc<Mutex<State>>,
}

/// A sink and the handle that inspects it.
pub fn memory_sink() -> (MemorySink, MemoryWarehouse) {
    let state = Arc::new(Mutex::new(State::default()));
    (
        MemorySink {
            state: state.clone(),
        },
        MemoryWarehouse { state },
    )
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// A target's name: the source table's, upper case (simpler than the Snowflake sink's naming:
/// no schema prefix, no configured names).
fn target(table: &TableId) -> String {
    table.table.to_uppercase()
}

fn key_text(row: &FoldedRow) -> String {
    let cells: Vec<String> = row.key.iter().map(|(_, v)| v.to_string()).collect();
    cells.join(",")
}

impl MemoryWarehouse {
    /// Another sink over the same warehouse (a restarted process's session).
    pub fn session(&self) -> MemorySink {
        MemorySink {
            state: self.state.clone(),
        }
    }

    /// Every statement fails as an unreachable warehouse (`true`) or succeeds again.
    pub fn outage(&self, down: bool) {
        lock(&self.state).outage = down;
    }

    /// Every statement waits this long before it is answered.
    pub fn latency(&self, latency: Duration) {
        lock(&self.state).latency = latency;
    }

    /// Closes the gate (`true`): every statement waits there until it opens again.
    pub fn gate(&self, closed: bool) {
        lock(&self.state).gated = closed;
    }

    /// Statements waiting at the closed gate now.
    pub fn waiting(&self) -> usize {
        lock(&self.state).waiting
    }

    /// Refuses any load that holds a row with this key value (a key cell's JSON text).
    pub fn poison(&self, key: &str) {
        lock(&self.state).poison.insert(key.to_string());
    }

    /// Every load into the target is refused with a row's error code, even a load of no rows:
    /// the table, not a row, is at fault (a column Snowflake cannot write, say).
    pub fn refuse_table(&self, target: &str) {
        lock(&self.state).refusing.insert(target.to_string());
    }

    /// The target cannot be loaded (`true`), as a table whose DDL is refused, or can again.
    pub fn break_table(&self, target: &str, broken: bool) {
        let mut s = lock(&self.state);
        if broken {
            s.broken.insert(target.to_string());
        } else {
            s.broken.remove(target);
        }
    }

    /// The live rows of a target: key text → (partition, offset) of the change that wrote it.
    pub fn rows(&self, target: &str) -> BTreeMap<String, (i32, i64)> {
        lock(&self.state)
            .tables
            .get(target)
            .map(|t| {
                t.iter()
                    .filter(|(_, w)| !w.deleted)
                    .map(|(k, w)| (k.clone(), (w.partition, w.offset)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every (target, partition, offset) loaded so far, in load order.
    pub fn loaded(&self) -> Vec<(String, i32, i64)> {
        lock(&self.state).loaded.clone()
    }

    /// The changes recorded in rejects tables.
    pub fn rejects(&self) -> Vec<Rejected> {
        lock(&self.state).rejects.clone()
    }

    /// Statements run so far (failed ones included).
    pub fn statements(&self) -> u64 {
        lock(&self.state).statements
    }
}

impl MemorySink {
    /// Waits the warehouse's round trip, and at the gate while it is closed.
    async fn round_trip(&self) {
        let latency = lock(&self.state).latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        if !lock(&self.state).gated {
            return;
        }
        lock(&self.state).waiting += 1;
        while lock(&self.state).gated {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        lock(&self.state).waiting -= 1;
    }

    /// One statement that loads `rows` into `table`'s target, all or nothing.
    fn apply(&self, table: &TableId, rows: &[FoldedRow]) -> Result<usize, SinkError> {
        let mut s = lock(&self.state);
        s.statements += 1;
        let name = target(table);
        if s.outage {
            return Err(SinkError::Unavailable(
                "the warehouse is down (on purpose)".into(),
            ));
        }
        if s.broken.contains(&name) {
            return Err(SinkError::Table {
                table: name,
                reason: "broken on purpose".into(),
            });
        }
        if s.refusing.contains(&name) {
            return Err(SinkError::Statement {
                statement: format!("MERGE INTO {name}"),
                code: Some("100038".into()),
                message: "Numeric value 'x' is not recognized".into(),
            });
        }
        if let Some(bad) = rows
            .iter()
            .find(|r| r.key.iter().any(|(_, v)| s.poison.contains(&v.to_string())))
        {
            return Err(SinkError::Statement {
                statement: format!("MERGE INTO {name}"),
                code: Some("100038".into()),
                message: format!("Numeric value '{}' is not recognized", key_text(bad)),
            });
        }
        let t = s.tables.entry(name.clone()).or_default();
        for r in rows {
            let key = key_text(r);
            if t.get(&key)
                .is_some_and(|w| !r.position.at_or_after(&w.position))
            {
                continue;
            }
            let written = Written {
                partition: r.kafka.partition,
                offset: r.kafka.offset,
                position: r.position,
                deleted: !matches!(r.action, RowAction::Upsert),
            };
            t.insert(key, written);
        }
        for r in rows {
            s.loaded
                .push((name.clone(), r.kafka.partition, r.kafka.offset));
        }
        Ok(rows.len())
    }
}

impl Sink for MemorySink {
    fn note_topic(&mut self, _table: &TableId, _topic: &str) {}

    fn table_name(&self, table: &TableId) -> String {
        target(table)
    }

    fn statements(&self) -> u64 {
        lock(&self.state).statements
    }

    /// Not a statement the tests count: it fails during an outage, and that is all.
    async fn ping(&mut self) -> Result<(), SinkError> {
        if lock(&self.state).outage {
            return Err(SinkError::Unavailable(
                "the warehouse is down (on purpose)".into(),
            ));
        }
        Ok(())
    }

    async fn load_tables(
        &mut self,
        jobs: &[(&TableId, &TableBatch)],
    ) -> Vec<Result<usize, SinkError>> {
        self.round_trip().await;
        jobs.iter()
            .map(|(table, tb)| self.apply(table, &tb.rows))
            .collect()
    }

    async fn load_rows(
        &mut self,
        table: &TableId,
        _tb: &TableBatch,
        rows: &[FoldedRow],
    ) -> Result<usize, SinkError> {
        self.round_trip().await;
        self.apply(table, rows)
    }

    async fn probe(&mut self, table: &TableId, _tb: &TableBatch) -> Result<(), SinkError> {
        self.round_trip().await;
        self.apply(table, &[]).map(|_| ())
    }

    async fn truncate(
        &mut self,
        table: &TableId,
        _position: SourcePosition,
    ) -> Result<(), SinkError> {
        self.round_trip().await;
        self.apply(table, &[])?;
        lock(&self.state).tables.remove(&target(table));
        Ok(())
    }

    async fn record_rejects(&mut self, rejects: &[Rejected]) -> Result<(), SinkError> {
        self.round_trip().await;
        let mut s = lock(&self.state);
        s.statements += 1;
        if s.outage {
            return Err(SinkError::Unavailable(
                "the warehouse is down (on purpose)".into(),
            ));
        }
        s.rejects.extend(rejects.iter().cloned());
        Ok(())
    }
}
