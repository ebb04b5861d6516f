//! The load of one table's batch: the JSON payload that is bound to the stage insert, and the
//! SQL that stages it, fills unchanged TOAST values from the target, and MERGEs it.
//!
//! Record values only ever travel as the bound payload, never inside SQL text. The MERGE only
//! moves a row forward: it applies a change only if its source LSN is newer than the stored
//! one, so a replayed batch changes nothing.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::schema::{ident, stage_expr, TargetColumn, CDC_COLUMNS};
use crate::batch::{FoldedRow, RowAction};
use crate::change::{Cell, Column};
use crate::config::DeleteMode;

/// What identifies a row of an append-only table: the Kafka position of its change.
const APPEND_KEY: [&str; 2] = ["CDC_KAFKA_PARTITION", "CDC_KAFKA_OFFSET"];

/// Largest bound payload per stage insert; Snowflake accepts 16 MB per bind value.
pub const MAX_PAYLOAD_BYTES: usize = 8 * 1024 * 1024;

/// Everything needed to load batches into one target table.
#[derive(Debug, Clone)]
pub struct MergePlan {
    /// Fully qualified, quoted target table.
    pub target: String,
    /// Quoted, unqualified temporary stage table.
    pub stage: String,
    /// Source column names, in the order of `columns`.
    pub source_names: Vec<Arc<str>>,
    /// The source columns the plan was made for; row images sharing them are read by position.
    pub image_columns: Arc<[Column]>,
    /// Data columns of the target, in payload order.
    pub columns: Vec<TargetColumn>,
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
    /// `INSERT INTO stage SELECT … FROM LATERAL FLATTEN(INPUT => PARSE_JSON(?))`.
    pub fn stage_insert_sql(&self) -> String {
        let mut exprs: Vec<String> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| stage_expr(i, &c.sql_type))
            .collect();
        let n = self.columns.len();
        for (j, (_, ty)) in CDC_COLUMNS.iter().enumerate() {
            exprs.push(stage_expr(n + j, ty));
        }
        let m = n + CDC_COLUMNS.len();
        exprs.push(stage_expr(m, "VARCHAR"));
        exprs.push(stage_expr(m + 1, "VARCHAR"));
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

    fn key_join(&self, left: &str, right: &str) -> String {
        let names: Vec<String> = if self.is_append_only() {
            APPEND_KEY.iter().map(|n| ident(n)).collect()
        } else {
            self.key
                .iter()
                .map(|&k| ident(&self.columns[k].name))
                .collect()
        };
        names
            .iter()
            .map(|c| format!("{left}.{c} = {right}.{c}"))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    /// Copies the stored value of data column `i` into staged rows that marked it unchanged.
    pub fn fill_unchanged_sql(&self, i: usize) -> String {
        let c = ident(&self.columns[i].name);
        format!(
            "UPDATE {stage} s SET {c} = t.{c} FROM {target} t WHERE {join} AND CONTAINS(s.\"FLOE_UNCHANGED\", ',{i},')",
            stage = self.stage,
            target = self.target,
            join = self.key_join("s", "t"),
        )
    }

    /// The MERGE from the stage into the target.
    pub fn merge_sql(&self) -> String {
        let newer = "(t.\"CDC_LSN\" IS NULL OR s.\"CDC_LSN\" > t.\"CDC_LSN\")";
        let cdc_set: Vec<String> = CDC_COLUMNS
            .iter()
            .filter(|(n, _)| *n != "IS_DELETED")
            .map(|(n, _)| format!("{0} = s.{0}", ident(n)))
            .collect();
        let mut data_set: Vec<String> = self
            .columns
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.key.contains(i))
            .map(|(_, c)| format!("{0} = s.{0}", ident(&c.name)))
            .collect();
        data_set.push("\"IS_DELETED\" = s.\"IS_DELETED\"".into());
        data_set.extend(cdc_set.iter().cloned());
        let all: Vec<String> = self
            .columns
            .iter()
            .map(|c| ident(&c.name))
            .chain(CDC_COLUMNS.iter().map(|(n, _)| ident(n)))
            .collect();
        let insert = format!(
            "INSERT ({}) VALUES ({})",
            all.join(", "),
            all.iter()
                .map(|c| format!("s.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let head = format!(
            "MERGE INTO {} t USING {} s ON {}",
            self.target,
            self.stage,
            self.key_join("t", "s")
        );
        if self.is_append_only() {
            // Every change is a row; a replayed one is already there.
            return format!("{head} WHEN NOT MATCHED THEN {insert}");
        }
        match self.delete_mode {
            DeleteMode::Soft => {
                let mut del_set = vec!["\"IS_DELETED\" = TRUE".to_string()];
                del_set.extend(cdc_set);
                format!(
                    "{head} \
                     WHEN MATCHED AND s.\"FLOE_ACTION\" = 'delete' AND {newer} THEN UPDATE SET {del} \
                     WHEN MATCHED AND s.\"FLOE_ACTION\" <> 'delete' AND {newer} THEN UPDATE SET {data} \
                     WHEN NOT MATCHED AND s.\"FLOE_ACTION\" <> 'delete' THEN {insert}",
                    del = del_set.join(", "),
                    data = data_set.join(", "),
                )
            }
            DeleteMode::Hard => format!(
                "{head} \
                 WHEN MATCHED AND s.\"FLOE_ACTION\" <> 'upsert' AND {newer} THEN DELETE \
                 WHEN MATCHED AND s.\"FLOE_ACTION\" = 'upsert' AND {newer} THEN UPDATE SET {data} \
                 WHEN NOT MATCHED AND s.\"FLOE_ACTION\" = 'upsert' THEN {insert}",
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
        let mut cur: Vec<u8> = Vec::with_capacity(rows.len() * 512 + 2);
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
        // The CDC columns in the order of CDC_COLUMNS, then the stage-only columns, written
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
        for n in [
            row.position.lsn as i128,
            row.kafka.partition.into(),
            row.kafka.offset.into(),
        ] {
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
    // Writing a serde_json::Value into memory cannot fail.
    let _ = serde_json::to_writer(&mut *out, v);
}

fn into_string(bytes: Vec<u8>) -> String {
    // serde_json writes UTF-8 only.
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::{Column, ColumnType, KafkaPosition, Op, Row, SourcePosition};

    fn plan(mode: DeleteMode) -> MergePlan {
        MergePlan {
            target: "\"DB\".\"S\".\"T\"".into(),
            stage: "\"FLOE_STAGE_T\"".into(),
            source_names: vec!["id".into(), "note".into()],
            image_columns: test_columns(),
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
            position: SourcePosition { lsn: 77 },
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
    }

    #[test]
    fn payload_rows_carry_action_position_and_unchanged_columns() {
        let p = plan(DeleteMode::Soft);
        let rows = vec![
            folded(1, Cell::Unchanged, RowAction::Upsert),
            folded(2, Cell::Value(Value::Null), RowAction::Delete),
        ];
        let staged = p.stage_rows(&rows, Utc::now(), MAX_PAYLOAD_BYTES);
        let v: Value = serde_json::from_str(&staged.payloads[0].json).unwrap();
        assert_eq!(v[0][0], 1);
        assert_eq!(v[0][1], Value::Null);
        assert_eq!(v[0][5], 77); // CDC_LSN
        assert_eq!(v[0][9], "upsert");
        assert_eq!(v[0][10], ",1,");
        assert_eq!(v[1][0], 2); // key of a key-only delete
        assert_eq!(v[1][2], true); // IS_DELETED
        assert_eq!(v[1][9], "delete");
        assert_eq!(staged.unchanged_columns, BTreeSet::from([1]));
    }

    #[test]
    fn append_only_tables_insert_each_change_once_by_kafka_position() {
        let mut p = plan(DeleteMode::Soft);
        p.key.clear();
        assert!(p.is_append_only());
        let sql = p.merge_sql();
        assert!(sql.contains(
            "ON t.\"CDC_KAFKA_PARTITION\" = s.\"CDC_KAFKA_PARTITION\" AND t.\"CDC_KAFKA_OFFSET\" = s.\"CDC_KAFKA_OFFSET\""
        ), "{sql}");
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
            v[0][10], ",1,",
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
        assert_eq!(soft.matches("s.\"CDC_LSN\" > t.\"CDC_LSN\"").count(), 2);
        assert!(soft.contains("\"IS_DELETED\" = TRUE"));
        assert!(!soft.contains("THEN DELETE"));
        let hard = plan(DeleteMode::Hard).merge_sql();
        assert!(hard.contains("THEN DELETE"));
        assert!(
            !hard.contains("\"ID\" = s.\"ID\","),
            "keys are not updated: {hard}"
        );
    }
}
