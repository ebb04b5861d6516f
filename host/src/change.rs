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

/// Where a change sits in the source's history. Later changes of one row compare greater.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct SourcePosition {
    /// PostgreSQL log sequence number of the change (Debezium `source.lsn`).
    pub lsn: u64,
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
