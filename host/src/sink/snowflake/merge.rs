//! The load of one table's batch: the JSON payload that is bound to the stage insert, and the
//! SQL that stages it, fills unchanged TOAST values from the target, and MERGEs it.
//!
//! Record values only ever travel as the bound payload, never inside SQL text. The MERGE only
//! moves a row forward: it applies a change only if the change supersedes the stored row
//! (see [`crate::change::SourcePosition`], the one owner of that order; the MERGE compares
//! the text form it stores in the position column), so a replayed batch changes nothing. It
//! also skips every staged change older than the last source TRUNCATE recorded in floe's state
//! table, whichever process or run applied it.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::schema::{ident, meta, stage_col, stage_expr, TargetColumn, STAGE_ONLY_TYPES};
use crate::batch::{FoldedRow, RowAction};
use crate::change::{Cell, Column};
use crate::config::DeleteMode;

/// Largest bound payload per stage insert; Snowflake accepts 16 MB per bind value.
pub const MAX_PAYLOAD_BYTES: usize = 8 * 1024 * 1024;

/// Everything needed to load batches into one target table.
#[derive(Debug, Clone)]
pub struct MergePlan {
    /// Fully qualified, quoted target table.
    pub target: String,
    /// The target's unqualified name, as floe's state table records it (bound, not spliced).
    pub target_name: String,
    /// Quoted, unqualified temporary stage table.
    pub stage: String,
    /// Fully qualified, quoted state table (where source TRUNCATEs are recorded).
    pub state: String,
    /// Source column names, in the order of `columns`.
    pub source_names: Vec<Arc<str>>,
    /// The source columns the plan was made for; row images sharing them are read by position.
    pub image_columns: Arc<[Column]>,
    /// Data columns of the target, in payload order.
    pub columns: Vec<TargetColumn>,
    /// Per data column: whether its values are sent as JSON documents (a VARIANT column whose
    /// source values are typed, e.g. text; VARIANT columns are parsed from JSON text).
    pub as_json: Vec<bool>,
    /// floe's columns of the target, in payload order after the data columns.
    pub meta: Vec<TargetColumn>,
    /// Indexes into `columns` of the key columns; empty for a source table without a primary
    /// key, which is loaded append-only (one row per change, replays recognised by their Kafka
    /// partition and offset).
    pub key: Vec<usize>,
    pub delete_mode: DeleteMode,
}

/// One bound payload and what it holds.
#[derive(Debug)]
pub struct Payload {
    /// JSON array of row arrays.
    pub json: String,
    pub rows: usize,
}

/// The payloads for a batch, and the data columns that had unchanged-TOAST cells.
#[derive(Debug)]
pub struct StagedBatch {
    pub payloads: Vec<Payload>,
    pub unchanged_columns: BTreeSet<usize>,
}

impl MergePlan {
    /// Stage column index of floe's column `m` (see [`meta`]).
    fn meta_at(&self, m: usize) -> usize {
        self.columns.len() + m
    }

    /// Stage column index of the row's action.
    fn action_at(&self) -> usize {
        self.columns.len() + self.meta.len()
    }

    /// The types of the stage's columns, in order (data, floe's, action, unchanged list).
    pub fn stage_types(&self) -> Vec<String> {
        self.columns
            .iter()
            .chain(&self.meta)
            .map(|c| c.sql_type.clone())
            .chain(STAGE_ONLY_TYPES.iter().map(|t| t.to_string()))
            .collect()
    }

    /// `INSERT INTO stage SELECT … FROM LATERAL FLATTEN(INPUT => PARSE_JSON(?))`.
    pub fn stage_insert_sql(&self) -> String {
        let exprs: Vec<String> = self
            .stage_types()
            .iter()
            .enumerate()
            .map(|(i, t)| stage_expr(i, t))
            .collect();
        format!(
            "INSERT INTO {} SELECT {} FROM LATERAL FLATTEN(INPUT => PARSE_JSON(?)) f",
            self.stage,
            exprs.join(", ")
        )
    }

    /// Whether the table is loaded append-only (its source has no primary key).
    pub fn is_append_only(&self) -> bool {
        self.key.is_empty()
    }

    /// `target.K = stage.F…` for the key columns (or the Kafka position of append-only rows).
    fn key_join(&self, target: &str, stage: &str) -> String {
        let pairs: Vec<(String, usize)> = if self.is_append_only() {
            [meta::KAFKA_PARTITION, meta::KAFKA_OFFSET]
                .into_iter()
                .map(|m| (ident(&self.meta[m].name), self.meta_at(m)))
                .collect()
        } else {
            self.key
                .iter()
                .map(|&k| (ident(&self.columns[k].name), k))
                .collect()
        };
        pairs
            .iter()
            .map(|(c, i)| format!("{target}.{c} = {stage}.{}", stage_col(*i)))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    /// Copies the stored value of data column `i` into staged rows that marked it unchanged.
    pub fn fill_unchanged_sql(&self, i: usize) -> String {
        format!(
            "UPDATE {stage} s SET {sc} = t.{c} FROM {target} t WHERE {join} AND CONTAINS(s.{list}, ',{i},')",
            stage = self.stage,
            sc = stage_col(i),
            c = ident(&self.columns[i].name),
            target = self.target,
            join = self.key_join("t", "s"),
            list = stage_col(self.action_at() + 1),
        )
    }

    /// The MERGE from the stage into the target. It has one bind: the target's name in the
    /// state table (for the TRUNCATE guard), i.e. [`MergePlan::target_name`].
    pub fn merge_sql(&self) -> String {
        self.merge_from(&self.stage)
    }

    /// The MERGE straight from one bound payload, with no stage: the whole load in one
    /// statement. Two binds: the payload, then [`MergePlan::target_name`]. Only for a batch
    /// that fits one payload and has no unchanged-TOAST cells to fill from the target.
    pub fn merge_payload_sql(&self) -> String {
        let exprs: Vec<String> = self
            .stage_types()
            .iter()
            .enumerate()
            .map(|(i, t)| format!("{} AS {}", stage_expr(i, t), stage_col(i)))
            .collect();
        self.merge_from(&format!(
            "(SELECT {} FROM LATERAL FLATTEN(INPUT => PARSE_JSON(?)) f)",
            exprs.join(", ")
        ))
    }

    /// The MERGE into the target from `source`, a relation with the stage's columns.
    fn merge_from(&self, source: &str) -> String {
        let pos = |m: usize| stage_col(self.meta_at(m));
        let t_pos = ident(&self.meta[meta::POSITION].name);
        let t_lsn = ident(&self.meta[meta::LSN].name);
        // The change supersedes the stored row (SourcePosition::supersedes): it has no
        // position, or the stored row has none (written without one, or by a floe from before
        // positions; then the LSNs decide), or its position text sorts after the stored one.
        let newer = format!(
            "(s.{sp} IS NULL OR (t.{t_pos} IS NULL AND (t.{t_lsn} IS NULL OR s.{sl} > t.{t_lsn})) OR s.{sp} > t.{t_pos})",
            sp = pos(meta::POSITION),
            sl = pos(meta::LSN),
        );
        let action = stage_col(self.action_at());
        let set_meta = |skip_deleted: bool| -> Vec<String> {
            self.meta
                .iter()
                .enumerate()
                .filter(|(m, _)| !(skip_deleted && *m == meta::IS_DELETED))
                .map(|(m, c)| format!("{} = s.{}", ident(&c.name), pos(m)))
                .collect()
        };
        let mut data_set: Vec<String> = self
            .columns
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.key.contains(i))
            .map(|(i, c)| format!("{} = s.{}", ident(&c.name), stage_col(i)))
            .collect();
        data_set.extend(set_meta(false));
        let all: Vec<String> = self
            .columns
            .iter()
            .chain(&self.meta)
            .map(|c| ident(&c.name))
            .collect();
        let insert = format!(
            "INSERT ({}) VALUES ({})",
            all.join(", "),
            (0..all.len())
                .map(|i| format!("s.{}", stage_col(i)))
                .collect::<Vec<_>>()
                .join(", ")
        );
        // Changes from before the last source TRUNCATE recorded for this table are left out,
        // whichever process applied it (its log position, without the kind digit).
        let head = format!(
            "MERGE INTO {target} t USING (SELECT * FROM {source} WHERE {sp} IS NULL OR SUBSTR({sp}, 2) > \
             COALESCE((SELECT MAX(\"TRUNCATED_BEFORE\") FROM {state} WHERE \"TARGET_TABLE\" = ?), '')) s ON {join}",
            target = self.target,
            sp = pos(meta::POSITION),
            state = self.state,
            join = self.key_join("t", "s"),
        );
        if self.is_append_only() {
            // Every change is a row; a replayed one is already there.
            return format!("{head} WHEN NOT MATCHED THEN {insert}");
        }
        match self.delete_mode {
            DeleteMode::Soft => {
                let mut del_set = vec![format!(
                    "{} = TRUE",
                    ident(&self.meta[meta::IS_DELETED].name)
                )];
                del_set.extend(set_meta(true));
                format!(
                    "{head} \
                     WHEN MATCHED AND s.{action} = 'delete' AND {newer} THEN UPDATE SET {del} \
                     WHEN MATCHED AND s.{action} <> 'delete' AND {newer} THEN UPDATE SET {data} \
                     WHEN NOT MATCHED AND s.{action} <> 'delete' THEN {insert}",
                    del = del_set.join(", "),
                    data = data_set.join(", "),
                )
            }
            DeleteMode::Hard => format!(
                "{head} \
                 WHEN MATCHED AND s.{action} <> 'upsert' AND {newer} THEN DELETE \
                 WHEN MATCHED AND s.{action} = 'upsert' AND {newer} THEN UPDATE SET {data} \
                 WHEN NOT MATCHED AND s.{action} = 'upsert' THEN {insert}",
                data = data_set.join(", "),
            ),
        }
    }

    /// Serialises folded rows into bound payloads of at most `max_bytes` each.
    pub fn stage_rows(
        &self,
        rows: &[FoldedRow],
        loaded_at: DateTime<Utc>,
        max_bytes: usize,
    ) -> StagedBatch {
        let loaded_at = format!(
            "\"{}\"",
            loaded_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        );
        // Rows of one source transaction share a commit time: format it once.
        let mut ts_cache = (None, String::new());
        let mut payloads = Vec::new();
        let mut unchanged_columns = BTreeSet::new();
        let mut cur: Vec<u8> = Vec::with_capacity(2);
        cur.push(b'[');
        let mut cur_rows = 0;
        let mut row_buf = Vec::with_capacity(1024);
        let mut unchanged = Vec::new();
        for row in rows {
            row_buf.clear();
            unchanged.clear();
            self.write_row(
                &mut row_buf,
                &mut unchanged,
                row,
                loaded_at.as_bytes(),
                &mut ts_cache,
            );
            unchanged_columns.extend(unchanged.iter().copied());
            if cur_rows > 0 && cur.len() + row_buf.len() + 2 > max_bytes {
                cur.push(b']');
                payloads.push(Payload {
                    json: into_string(std::mem::replace(&mut cur, vec![b'['])),
                    rows: cur_rows,
                });
                cur_rows = 0;
            }
            if cur_rows > 0 {
                cur.push(b',');
            } else if payloads.is_empty() {
                // Sized from the first row: one allocation for the payload, not a doubling.
                let want = rows.len().saturating_mul(row_buf.len() + 16).min(max_bytes);
                cur.reserve(want.saturating_sub(cur.capacity()));
            }
            cur.extend_from_slice(&row_buf);
            cur_rows += 1;
        }
        if cur_rows > 0 {
            cur.push(b']');
            payloads.push(Payload {
                json: into_string(cur),
                rows: cur_rows,
            });
        }
        StagedBatch {
            payloads,
            unchanged_columns,
        }
    }

    /// Writes one row array, noting the indexes of unchanged-TOAST data columns.
    fn write_row(
        &self,
        out: &mut Vec<u8>,
        unchanged: &mut Vec<usize>,
        row: &FoldedRow,
        loaded_at: &[u8],
        ts_cache: &mut (Option<i64>, String),
    ) {
        out.push(b'[');
        // Images with the plan's own columns are read by position, others by name.
        let positional = row
            .image
            .as_ref()
            .filter(|img| Arc::ptr_eq(&img.columns, &self.image_columns))
            .map(|img| &img.cells[..]);
        for (i, name) in self.source_names.iter().enumerate() {
            let cell = match (positional, &row.image) {
                (Some(cells), _) => cells.get(i),
                // An image without this column (written before the source added it, or after
                // it dropped it): a stored row keeps its value, a new row gets NULL.
                (None, Some(img)) => img.get(name).or(Some(&Cell::Unchanged)),
                (None, None) => {
                    // Key-only delete: only the key columns have values.
                    match row.key.iter().find(|(k, _)| k == name) {
                        Some((_, v)) => push_json(out, v),
                        None => out.extend_from_slice(b"null"),
                    }
                    out.push(b',');
                    continue;
                }
            };
            match cell {
                Some(Cell::Value(v)) if !v.is_null() && self.as_json.get(i) == Some(&true) => {
                    push_json(out, &Value::String(v.to_string()))
                }
                Some(Cell::Value(v)) => push_json(out, v),
                Some(Cell::Unchanged) => {
                    unchanged.push(i);
                    out.extend_from_slice(b"null");
                }
                None => out.extend_from_slice(b"null"),
            }
            out.push(b',');
        }
        let (action, deleted): (&[u8], &[u8]) = match row.action {
            RowAction::Upsert => (b"upsert", b"false"),
            RowAction::Delete => (b"delete", b"true"),
            RowAction::DeleteWithImage => (b"delete_image", b"true"),
        };
        // floe's columns in the order of `meta`, then the stage-only columns, written
        // directly: this runs once per row.
        let mut num = itoa::Buffer::new();
        out.extend_from_slice(deleted);
        out.extend_from_slice(b",\"");
        out.extend_from_slice(row.op.code().as_bytes());
        out.extend_from_slice(b"\",");
        if ts_cache.0 != Some(row.source_ts_ms) {
            let text = DateTime::from_timestamp_millis(row.source_ts_ms).map_or_else(
                || "null".to_string(),
                |t| {
                    format!(
                        "\"{}\"",
                        t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                    )
                },
            );
            *ts_cache = (Some(row.source_ts_ms), text);
        }
        out.extend_from_slice(ts_cache.1.as_bytes());
        out.push(b',');
        match row.position.order_bytes() {
            Some(text) => {
                out.extend_from_slice(num.format(row.position.lsn).as_bytes());
                out.extend_from_slice(b",\"");
                out.extend_from_slice(&text);
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null,null"),
        }
        for n in [i64::from(row.kafka.partition), row.kafka.offset] {
            out.push(b',');
            out.extend_from_slice(num.format(n).as_bytes());
        }
        out.push(b',');
        out.extend_from_slice(loaded_at);
        out.extend_from_slice(b",\"");
        out.extend_from_slice(action);
        out.extend_from_slice(b"\",");
        if unchanged.is_empty() {
            out.extend_from_slice(b"null");
        } else {
            out.extend_from_slice(b"\",");
            for i in unchanged.iter() {
                out.extend_from_slice(num.format(*i).as_bytes());
                out.push(b',');
            }
            out.push(b'"');
        }
        out.push(b']');
    }
}

fn push_json(out: &mut Vec<u8>, v: &Value) {
    match v {
        // Most text needs no escape: copied whole, as serde_json would write it. The check
        // reads every byte without an early exit, which the compiler vectorises.
        Value::String(text) if !needs_escape(text.as_bytes()) => {
            out.reserve(text.len() + 2);
            out.push(b'"');
            out.extend_from_slice(text.as_bytes());
            out.push(b'"');
        }
        // Writing a serde_json::Value into memory cannot fail.
        _ => {
            let _ = serde_json::to_writer(&mut *out, v);
        }
    }
}

/// Whether JSON text must escape some of these bytes: a quote, a backslash or a control
/// character (serde_json escapes exactly these).
fn needs_escape(bytes: &[u8]) -> bool {
    bytes.iter().fold(false, |acc, &b| {
        acc | (b < 0x20) | (b == b'"') | (b == b'\\')
    })
}

fn into_string(bytes: Vec<u8>) -> String {
    // Everything written is UTF-8 (serde_json's output and copies of `str`s); checked with SIMD,
    // which is several times faster on a payload of megabytes than the standard library.
    if simdutf8::basic::from_utf8(&bytes).is_ok() {
        // SAFETY: the bytes were just checked to be valid UTF-8.
        return unsafe { String::from_utf8_unchecked(bytes) };
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_written_as_serde_json_writes_it() {
        let long = "a".repeat(100) + "\"" + &"b".repeat(40);
        for text in [
            "",
            "plain",
            "O'Reilly said \"hello\"",
            "back\\slash",
            "tab\tnew\nline\r",
            "\u{0}\u{1f}",
            "\u{7f} del",
            "paiement reçu ✅ 🎉 — 東京 €",
            long.as_str(),
        ] {
            let v = Value::String(text.to_string());
            let mut out = Vec::new();
            push_json(&mut out, &v);
            assert_eq!(out, serde_json::to_vec(&v).expect("json"), "{text:?}");
        }
    }
    use crate::change::{Column, ColumnType, KafkaPosition, Op, Row, SourcePosition};
    use crate::config::MetaColumns;

    fn plan(mode: DeleteMode) -> MergePlan {
        MergePlan {
            target: "\"DB\".\"S\".\"T\"".into(),
            target_name: "T".into(),
            stage: "\"FLOE_STAGE_T\"".into(),
            state: "\"DB\".\"S\".\"FLOE_STATE\"".into(),
            source_names: vec!["id".into(), "note".into()],
            image_columns: test_columns(),
            as_json: vec![false, false],
            columns: vec![
                TargetColumn {
                    name: "ID".into(),
                    sql_type: "NUMBER(38,0)".into(),
                },
                TargetColumn {
                    name: "NOTE".into(),
                    sql_type: "VARCHAR".into(),
                },
            ],
            meta: super::super::schema::meta_columns(&MetaColumns::default()),
            key: vec![0],
            delete_mode: mode,
        }
    }

    fn test_columns() -> Arc<[Column]> {
        vec![
            Column {
                name: "id".into(),
                ty: ColumnType::Integer,
                optional: false,
            },
            Column {
                name: "note".into(),
                ty: ColumnType::Text,
                optional: true,
            },
        ]
        .into()
    }

    fn folded(id: i64, note: Cell, action: RowAction) -> FoldedRow {
        let cols = test_columns();
        FoldedRow {
            action,
            image: (action != RowAction::Delete).then(|| Row {
                columns: cols,
                cells: vec![Cell::Value(id.into()), note],
            }),
            key: vec![("id".into(), id.into())],
            op: Op::Update,
            position: SourcePosition::streamed(77, Some(70)),
            source_ts_ms: 1_700_000_000_000,
            kafka: KafkaPosition {
                partition: 2,
                offset: 9,
            },
            sources: vec![0],
        }
    }

    #[test]
    fn values_are_bound_never_spliced() {
        let p = plan(DeleteMode::Soft);
        let evil = "'); DROP TABLE T; --";
        let rows = vec![folded(1, Cell::Value(evil.into()), RowAction::Upsert)];
        let staged = p.stage_rows(&rows, Utc::now(), MAX_PAYLOAD_BYTES);
        assert!(staged.payloads[0].json.contains("DROP TABLE"));
        for sql in [p.stage_insert_sql(), p.merge_sql(), p.fill_unchanged_sql(1)] {
            assert!(!sql.contains("DROP"), "{sql}");
        }
        assert!(p.stage_insert_sql().ends_with("PARSE_JSON(?)) f"));
        // The target's name in the state table is bound too.
        assert_eq!(p.merge_sql().matches('?').count(), 1);
    }

    #[test]
    fn payload_rows_carry_action_position_and_unchanged_columns() {
        let p = plan(DeleteMode::Soft);
        let mut unknown = folded(3, Cell::Value("x".into()), RowAction::Upsert);
        unknown.position = SourcePosition::unknown();
        let rows = vec![
            folded(1, Cell::Unchanged, RowAction::Upsert),
            folded(2, Cell::Value(Value::Null), RowAction::Delete),
            unknown,
        ];
        let staged = p.stage_rows(&rows, Utc::now(), MAX_PAYLOAD_BYTES);
        let v: Value = serde_json::from_str(&staged.payloads[0].json).unwrap();
        let width = p.stage_types().len();
        assert!(v
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r.as_array().unwrap().len() == width));
        assert_eq!(v[0][0], 1);
        assert_eq!(v[0][1], Value::Null);
        assert_eq!(v[0][5], 77); // CDC_LSN
        assert_eq!(v[0][6], "10000000000000046000000000000004D"); // CDC_POSITION
        assert_eq!((v[0][7].clone(), v[0][8].clone()), (2.into(), 9.into()));
        assert_eq!(v[0][10], "upsert");
        assert_eq!(v[0][11], ",1,");
        assert_eq!(v[1][0], 2); // key of a key-only delete
        assert_eq!(v[1][2], true); // IS_DELETED
        assert_eq!(v[1][10], "delete");
        assert_eq!(
            (v[2][5].clone(), v[2][6].clone()),
            (Value::Null, Value::Null)
        );
        assert_eq!(staged.unchanged_columns, BTreeSet::from([1]));
    }

    #[test]
    fn append_only_tables_insert_each_change_once_by_kafka_position() {
        let mut p = plan(DeleteMode::Soft);
        p.key.clear();
        assert!(p.is_append_only());
        let sql = p.merge_sql();
        assert!(
            sql.contains(
                "ON t.\"CDC_KAFKA_PARTITION\" = s.\"F7\" AND t.\"CDC_KAFKA_OFFSET\" = s.\"F8\""
            ),
            "{sql}"
        );
        assert!(sql.contains("WHEN NOT MATCHED THEN INSERT"), "{sql}");
        assert!(!sql.contains("WHEN MATCHED"), "{sql}");
    }

    #[test]
    fn a_column_missing_from_an_image_keeps_the_stored_value() {
        let p = plan(DeleteMode::Soft);
        // An image of an older schema: only `id`.
        let older: Arc<[Column]> = vec![test_columns()[0].clone()].into();
        let mut row = folded(3, Cell::Value("x".into()), RowAction::Upsert);
        row.image = Some(Row {
            columns: older,
            cells: vec![Cell::Value(3.into())],
        });
        let staged = p.stage_rows(&[row], Utc::now(), MAX_PAYLOAD_BYTES);
        let v: Value = serde_json::from_str(&staged.payloads[0].json).unwrap();
        assert_eq!(v[0][1], Value::Null);
        assert_eq!(
            v[0][11], ",1,",
            "NOTE is filled from the target (NULL for a new row)"
        );
    }

    #[test]
    fn payloads_split_by_size() {
        let p = plan(DeleteMode::Soft);
        let rows: Vec<_> = (0..50)
            .map(|i| folded(i, Cell::Value("x".repeat(100).into()), RowAction::Upsert))
            .collect();
        let staged = p.stage_rows(&rows, Utc::now(), 1_000);
        assert!(staged.payloads.len() > 5);
        assert_eq!(staged.payloads.iter().map(|p| p.rows).sum::<usize>(), 50);
        for pl in &staged.payloads {
            let v: Value = serde_json::from_str(&pl.json).unwrap();
            assert_eq!(v.as_array().unwrap().len(), pl.rows);
        }
    }

    #[test]
    fn merge_never_moves_backwards_and_deletes_by_mode() {
        let soft = plan(DeleteMode::Soft).merge_sql();
        assert_eq!(soft.matches("s.\"F6\" > t.\"CDC_POSITION\"").count(), 2);
        assert!(soft.contains("\"IS_DELETED\" = TRUE"));
        assert!(!soft.contains("THEN DELETE"));
        // Changes from before a recorded TRUNCATE are left out of the source.
        assert!(soft.contains("SUBSTR(\"F6\", 2) > COALESCE((SELECT MAX(\"TRUNCATED_BEFORE\")"));
        let hard = plan(DeleteMode::Hard).merge_sql();
        assert!(hard.contains("THEN DELETE"));
        assert!(
            !hard.contains("\"ID\" = s.\"F0\","),
            "keys are not updated: {hard}"
        );
    }

    #[test]
    fn typed_values_of_a_variant_column_travel_as_json_documents() {
        // NOTE became VARIANT while a plugin sent only NULLs for it; now it sends text.
        let mut p = plan(DeleteMode::Soft);
        p.columns[1].sql_type = "VARIANT".into();
        p.as_json = vec![false, true];
        let rows = vec![
            folded(1, Cell::Value("very_large".into()), RowAction::Upsert),
            folded(2, Cell::Value(Value::Null), RowAction::Upsert),
        ];
        let staged = p.stage_rows(&rows, Utc::now(), MAX_PAYLOAD_BYTES);
        let v: Value = serde_json::from_str(&staged.payloads[0].json).unwrap();
        assert_eq!(
            v[0][1], "\"very_large\"",
            "PARSE_JSON of this gives the text back"
        );
        assert_eq!(v[1][1], Value::Null, "SQL NULL stays NULL");
        assert!(p
            .stage_insert_sql()
            .contains("PARSE_JSON(f.value[1]::VARCHAR)"));
    }

    #[test]
    fn stage_columns_never_collide_with_source_columns() {
        // A source table with columns named like floe's own stage columns.
        let mut p = plan(DeleteMode::Soft);
        p.columns[1].name = "FLOE_ACTION".into();
        let sql = p.merge_sql();
        assert!(sql.contains("\"FLOE_ACTION\" = s.\"F1\""), "{sql}");
        assert!(sql.contains("s.\"F10\" = 'delete'"), "{sql}");
    }
}
