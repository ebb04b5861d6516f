//! The record that flows through floe: one decoded Debezium change, independent of the wire
//! format it came in. Decoders produce it; the batcher, plugins and sinks consume it.

use std::sync::Arc;

use serde_json::Value;

/// What happened to the source row (Debezium's `op`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `c`: a row was inserted.
    Create,
    /// `u`: a row was updated.
    Update,
    /// `d`: a row was deleted.
    Delete,
    /// `r`: a row was read by the initial snapshot.
    Read,
    /// `t`: the table was truncated.
    Truncate,
}

impl Op {
    /// Parses Debezium's one-letter operation code.
    pub fn from_code(code: &str) -> Option<Op> {
        Some(match code {
            "c" => Op::Create,
            "u" => Op::Update,
            "d" => Op::Delete,
            "r" => Op::Read,
            "t" => Op::Truncate,
            _ => return None,
        })
    }

    /// Debezium's one-letter code, as stored in the warehouse's `CDC_OPERATION` column.
    pub fn code(self) -> &'static str {
        match self {
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Read => "r",
            Op::Truncate => "t",
        }
    }
}

/// The source table a change belongs to, as Debezium names it. Cheap to clone: every change
/// carries one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableId {
    pub schema: Arc<str>,
    pub table: Arc<str>,
}

/// How a column's values must be typed in the warehouse. Derived from the Kafka Connect schema
/// that Debezium embeds; `Unknown` when events carry no schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnType {
    Integer,
    Float,
    Boolean,
    /// Fixed-point number; precision is `None` when the source declares none.
    Decimal {
        precision: Option<u32>,
        scale: u32,
    },
    Text,
    Binary,
    Date,
    Time,
    /// Timestamp without time zone.
    Timestamp,
    /// Timestamp with time zone.
    TimestampTz,
    /// JSON document (PostgreSQL `json`/`jsonb`), stored as VARIANT.
    Json,
    Unknown,
}

/// One column of a table as the source describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// The source column name, as Debezium sends it.
    pub name: Arc<str>,
    pub ty: ColumnType,
    pub optional: bool,
}

/// A cell of a row image.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// A value already normalised for loading: decimals as strings, temporal values as ISO-8601
    /// text, JSON documents as their text.
    Value(Value),
    /// Debezium sent its unchanged-TOAST placeholder: the value did not change and was not sent.
    Unchanged,
}

/// A row image (`before` or `after`) in the column order of the table's schema.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Row {
    pub columns: Arc<[Column]>,
    pub cells: Vec<Cell>,
}

impl Row {
    /// The cell of the column named `name`, if the row has it.
    pub fn get(&self, name: &str) -> Option<&Cell> {
        self.columns
            .iter()
            .position(|c| &*c.name == name)
            .and_then(|i| self.cells.get(i))
    }
}

/// Where a change sits in the source's history, and the one rule that orders two changes of a
/// row ([`SourcePosition::supersedes`]; the MERGE guard in the sink applies the same rule to
/// the stored row through [`SourcePosition::order_text`]).
///
/// PostgreSQL commits transactions in an order that differs from the order their changes were
/// written: a transaction that began before the initial snapshot and committed after it has
/// changes whose LSN is lower than the snapshot's. So changes are ordered by the commit
/// position of their transaction first (Debezium's `source.sequence`: the commit LSN of the
/// transaction streamed before this one, which grows with commit order), then by their own LSN
/// within the transaction. Snapshot reads (`op = r`) rank below every streamed change: the
/// stream carries every transaction that committed after the snapshot, so a snapshot row never
/// overwrites a streamed change (a streamed change always overwrites a snapshot row), and
/// snapshot rows order among themselves by their LSN. A change that carries no `source.lsn`
/// has no position: it always applies, in the order floe reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SourcePosition {
    /// PostgreSQL log sequence number of the change (Debezium `source.lsn`); 0 when unknown.
    pub lsn: u64,
    /// Commit position of the change's transaction: `source.sequence[0]` when Debezium sends
    /// it, else the change's own LSN (a lower bound of the commit).
    pub commit: u64,
    /// A snapshot read (`op = r`), initial or incremental.
    pub snapshot: bool,
    /// Whether the event carried a position at all.
    pub known: bool,
}

impl SourcePosition {
    /// A streamed change at `lsn` whose transaction follows the commit at `last_commit`
    /// (`source.sequence[0]`), if Debezium sent one.
    pub fn streamed(lsn: u64, last_commit: Option<u64>) -> Self {
        SourcePosition {
            lsn,
            commit: last_commit.unwrap_or(lsn),
            snapshot: false,
            known: true,
        }
    }

    /// A snapshot read at `lsn`.
    pub fn snapshot(lsn: u64) -> Self {
        SourcePosition {
            lsn,
            commit: lsn,
            snapshot: true,
            known: true,
        }
    }

    /// A change without a position.
    pub fn unknown() -> Self {
        SourcePosition::default()
    }

    fn order_key(&self) -> (bool, u64, u64) {
        (!self.snapshot, self.commit, self.lsn)
    }

    /// Whether this change must replace a row last written by a change at `stored`: it is
    /// newer, or either position is unknown (then the order floe reads them in decides).
    pub fn supersedes(&self, stored: &SourcePosition) -> bool {
        !self.known || !stored.known || self.order_key() > stored.order_key()
    }

    /// Whether this change comes after `stored` or at the same place (a replay of it).
    pub fn at_or_after(&self, stored: &SourcePosition) -> bool {
        !self.known || !stored.known || self.order_key() >= stored.order_key()
    }

    /// Where the change sits in the log, ignoring whether it was a snapshot read: (commit,
    /// LSN). A source TRUNCATE removes the rows whose log position is before its own.
    pub fn log_key(&self) -> (u64, u64) {
        (self.commit, self.lsn)
    }

    /// The position as fixed-width text whose byte order is [`SourcePosition::supersedes`]'s
    /// order (`1` streamed or `0` snapshot, then commit and LSN as 16 hex digits each), stored
    /// in the warehouse so the MERGE can compare a change with the stored row; `None` when
    /// unknown. Written into a buffer: this runs once per loaded row.
    pub fn order_bytes(&self) -> Option<[u8; 33]> {
        if !self.known {
            return None;
        }
        let mut out = [0u8; 33];
        out[0] = if self.snapshot { b'0' } else { b'1' };
        hex16(self.commit, &mut out[1..17]);
        hex16(self.lsn, &mut out[17..33]);
        Some(out)
    }

    /// [`SourcePosition::order_bytes`] as text.
    pub fn order_text(&self) -> Option<String> {
        self.order_bytes()
            .map(|b| b.iter().map(|&c| char::from(c)).collect())
    }

    /// The log position as the same hex text without the leading kind digit (what a
    /// TRUNCATE compares against).
    pub fn log_text(&self) -> String {
        format!("{:016X}{:016X}", self.commit, self.lsn)
    }
}

/// Writes `n` as 16 upper-case hex digits.
fn hex16(n: u64, out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    for (i, slot) in out.iter_mut().enumerate().take(16) {
        *slot = DIGITS[((n >> ((15 - i) * 4)) & 0xF) as usize];
    }
}

/// Parses Debezium PostgreSQL's `source.sequence`, a JSON array of two strings as text:
/// `["<last commit LSN>","<LSN>"]`; the first is `null` for the first transaction a new
/// connector streams. Returns the last commit LSN when the text starts exactly so (`["`, the
/// digits, `",`); anything else has none.
pub fn last_commit_from_sequence(sequence: &str) -> Option<u64> {
    let digits = sequence.strip_prefix("[\"")?;
    let n = digits.bytes().take_while(u8::is_ascii_digit).count();
    if !(1..=20).contains(&n) || !digits[n..].starts_with("\",") {
        return None;
    }
    digits[..n].parse().ok()
}

/// Where a change was read from in Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KafkaPosition {
    pub partition: i32,
    pub offset: i64,
}

/// One decoded change event.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub table: TableId,
    pub op: Op,
    /// Primary-key columns and values, from the Kafka message key.
    pub key: Vec<(Arc<str>, Value)>,
    pub before: Option<Row>,
    pub after: Option<Row>,
    pub position: SourcePosition,
    /// Source commit time in milliseconds since the epoch (`source.ts_ms`).
    pub source_ts_ms: i64,
    pub kafka: KafkaPosition,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_order_wins_over_change_lsn_and_snapshots_never_overwrite_the_stream() {
        // The snapshot read the row at 1000; a transaction that changed it at 900 committed
        // after the snapshot (the transaction streamed before it committed at 1010).
        let snapshot = SourcePosition::snapshot(1000);
        let late_commit = SourcePosition::streamed(900, Some(1010));
        assert!(late_commit.supersedes(&snapshot));
        assert!(!snapshot.supersedes(&late_commit));
        // The first transaction a new connector streams has no last commit: still streamed.
        let first = SourcePosition::streamed(800, None);
        assert!(first.supersedes(&snapshot) && !snapshot.supersedes(&first));
        // Within the stream: commit order first, then the LSN within one transaction.
        let a = SourcePosition::streamed(2000, Some(1500));
        let b = SourcePosition::streamed(1900, Some(1600));
        let c = SourcePosition::streamed(1950, Some(1600));
        assert!(b.supersedes(&a) && c.supersedes(&b) && !a.supersedes(&c));
        // A replay of the same change is not newer, but is "at or after" it.
        assert!(!a.supersedes(&a) && a.at_or_after(&a));
        // Snapshot reads order among themselves by LSN.
        assert!(SourcePosition::snapshot(1001).supersedes(&snapshot));
        // Without a position, the order floe reads changes in decides.
        let none = SourcePosition::unknown();
        assert!(none.supersedes(&a) && a.supersedes(&none) && none.order_text().is_none());
    }

    #[test]
    fn order_text_sorts_like_supersedes() {
        let positions = [
            SourcePosition::snapshot(5),
            SourcePosition::snapshot(0x1_0000_0000),
            SourcePosition::streamed(3, None),
            SourcePosition::streamed(0xFFFF, Some(0x10)),
            SourcePosition::streamed(0x20, Some(0x11)),
            SourcePosition::streamed(0x21, Some(0x11)),
            SourcePosition::streamed(u64::MAX, Some(u64::MAX)),
        ];
        for a in &positions {
            for b in &positions {
                let (ta, tb) = (a.order_text().unwrap(), b.order_text().unwrap());
                assert_eq!(a.supersedes(b), ta > tb, "{a:?} vs {b:?}");
                assert_eq!(ta.len(), 33);
                assert_eq!(&ta[1..], a.log_text());
            }
        }
        assert_eq!(
            SourcePosition::streamed(0xAB, Some(0x1F))
                .order_text()
                .unwrap(),
            "1000000000000001F00000000000000AB"
        );
    }

    #[test]
    fn sequence_gives_the_last_commit() {
        assert_eq!(
            last_commit_from_sequence(r#"["56562392","56562856"]"#),
            Some(56562392)
        );
        assert_eq!(last_commit_from_sequence(r#"[null,"56557048"]"#), None);
        assert_eq!(last_commit_from_sequence("garbage"), None);
        assert_eq!(last_commit_from_sequence(r#"["12"l,"13"]"#), None);
        assert_eq!(last_commit_from_sequence(r#"[ "12","13"]"#), None);
        assert_eq!(last_commit_from_sequence("[]"), None);
    }
}
