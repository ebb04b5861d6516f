//! Between floe's [`Change`] and the WIT types plugins see: typed values out, edits back in.
//! Values keep their warehouse meaning both ways (a decimal stays exact text, a timestamp stays
//! ISO-8601), so a plugin that sets a column back to what it read changes nothing.

use std::sync::Arc;

use base64::Engine as _;
use serde_json::Value as Json;

use super::bindings::floe::plugin::types::{Change as WitChange, Edit, Field, Op as WitOp, Value};
use crate::change::{Cell, Change, Column, ColumnType, Op, Row};

/// The plugin's view of a change (`None` for a truncate, which plugins never see).
pub fn to_wit(change: &Change) -> Option<WitChange> {
    let op = match change.op {
        Op::Create => WitOp::Create,
        Op::Update => WitOp::Update,
        Op::Delete => WitOp::Delete,
        Op::Read => WitOp::Read,
        Op::Truncate => return None,
    };
    Some(WitChange {
        schema: change.table.schema.to_string(),
        table: change.table.table.to_string(),
        op,
        key: change
            .key
            .iter()
            .map(|(name, v)| Field {
                name: name.to_string(),
                value: untyped(v),
            })
            .collect(),
        before: change.before.as_ref().map(fields),
        after: change.after.as_ref().map(fields),
        lsn: change.position.lsn,
        source_ts_ms: change.source_ts_ms,
    })
}

fn fields(row: &Row) -> Vec<Field> {
    row.columns
        .iter()
        .zip(&row.cells)
        .map(|(c, cell)| Field {
            name: c.name.to_string(),
            value: match cell {
                Cell::Unchanged => Value::Unchanged,
                Cell::Value(v) => typed(v, &c.ty),
            },
        })
        .collect()
}

/// A normalised JSON value of a column of type `ty` as a WIT value.
fn typed(v: &Json, ty: &ColumnType) -> Value {
    if v.is_null() {
        return Value::Null;
    }
    let text = || match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    };
    match ty {
        ColumnType::Integer => v.as_i64().map_or_else(|| untyped(v), Value::Integer),
        ColumnType::Float => v.as_f64().map_or_else(|| untyped(v), Value::Float),
        ColumnType::Boolean => v.as_bool().map_or_else(|| untyped(v), Value::Boolean),
        ColumnType::Decimal { .. } => Value::Decimal(text()),
        ColumnType::Text => Value::Text(text()),
        ColumnType::Binary => match v {
            Json::String(s) => base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_or_else(|_| Value::Text(s.clone()), Value::Bytes),
            other => untyped(other),
        },
        ColumnType::Date => Value::Date(text()),
        ColumnType::Time => Value::Time(text()),
        ColumnType::Timestamp => Value::Timestamp(text()),
        ColumnType::TimestampTz => Value::Timestamptz(text()),
        ColumnType::Json => Value::Json(text()),
        ColumnType::Unknown => untyped(v),
    }
}

/// A JSON value whose column type is unknown (schemaless events, keys).
fn untyped(v: &Json) -> Value {
    match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::Text(s.clone()),
        other => Value::Json(other.to_string()),
    }
}

/// A WIT value as a cell, and the column type a new column gets from it.
fn from_wit(v: Value) -> (Cell, ColumnType) {
    let (json, ty) = match v {
        Value::Unchanged => return (Cell::Unchanged, ColumnType::Unknown),
        Value::Null => (Json::Null, ColumnType::Unknown),
        Value::Boolean(b) => (Json::Bool(b), ColumnType::Boolean),
        Value::Integer(i) => (Json::from(i), ColumnType::Integer),
        Value::Float(f) => (
            serde_json::Number::from_f64(f)
                .map_or_else(|| Json::String(f.to_string()), Json::Number),
            ColumnType::Float,
        ),
        Value::Decimal(s) => {
            let scale = s.split_once('.').map_or(0, |(_, frac)| frac.len() as u32);
            (
                Json::String(s),
                ColumnType::Decimal {
                    precision: None,
                    scale,
                },
            )
        }
        Value::Text(s) => (Json::String(s), ColumnType::Text),
        Value::Bytes(b) => (
            Json::String(base64::engine::general_purpose::STANDARD.encode(b)),
            ColumnType::Binary,
        ),
        Value::Date(s) => (Json::String(s), ColumnType::Date),
        Value::Time(s) => (Json::String(s), ColumnType::Time),
        Value::Timestamp(s) => (Json::String(s), ColumnType::Timestamp),
        Value::Timestamptz(s) => (Json::String(s), ColumnType::TimestampTz),
        Value::Json(s) => (Json::String(s), ColumnType::Json),
    };
    (Cell::Value(json), ty)
}

/// Remembers the column lists edits produced, so the rows of a batch that gained the same
/// columns share one list (the sink reads rows sharing their plan's list by position).
#[derive(Default)]
pub struct ColumnCache {
    lists: Vec<Arc<[Column]>>,
    /// The type each added column had when a plugin last set it to a non-NULL value, so a
    /// column set to NULL keeps its type.
    learned: std::collections::HashMap<String, ColumnType>,
}

impl ColumnCache {
    fn intern(&mut self, columns: Vec<Column>) -> Arc<[Column]> {
        if let Some(shared) = self.lists.iter().find(|c| ***c == *columns) {
            return shared.clone();
        }
        let shared: Arc<[Column]> = columns.into();
        if self.lists.len() >= 64 {
            self.lists.clear();
        }
        self.lists.push(shared.clone());
        shared
    }
}

/// Applies a plugin's edits to a change's `after` image (a change without one is left alone).
pub fn apply_edits(change: &mut Change, edits: Vec<Edit>, cache: &mut ColumnCache) {
    let Some(after) = change.after.as_mut() else {
        return;
    };
    if edits.is_empty() {
        return;
    }
    let mut columns: Vec<Column> = after.columns.to_vec();
    for edit in edits {
        match edit {
            Edit::Set(Field { name, value }) => {
                let (cell, mut ty) = from_wit(value);
                if ty == ColumnType::Unknown {
                    ty = cache
                        .learned
                        .get(&name)
                        .cloned()
                        .unwrap_or(ColumnType::Unknown);
                } else if cache.learned.get(&name) != Some(&ty) {
                    cache.learned.insert(name.clone(), ty.clone());
                }
                match columns.iter().position(|c| *c.name == *name) {
                    // An existing column keeps its declared type: the value is loaded into it.
                    Some(i) => after.cells[i] = cell,
                    None => {
                        columns.push(Column {
                            name: name.into(),
                            ty,
                            optional: true,
                        });
                        after.cells.push(cell);
                    }
                }
            }
            Edit::Remove(name) => {
                if let Some(i) = columns.iter().position(|c| *c.name == *name) {
                    columns.remove(i);
                    after.cells.remove(i);
                }
            }
        }
    }
    if *columns != *after.columns {
        after.columns = cache.intern(columns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::{KafkaPosition, SourcePosition, TableId};

    fn change() -> Change {
        let columns: Arc<[Column]> = vec![
            Column {
                name: "id".into(),
                ty: ColumnType::Integer,
                optional: false,
            },
            Column {
                name: "amount".into(),
                ty: ColumnType::Decimal {
                    precision: Some(12),
                    scale: 2,
                },
                optional: true,
            },
            Column {
                name: "note".into(),
                ty: ColumnType::Text,
                optional: true,
            },
        ]
        .into();
        Change {
            table: TableId {
                schema: "public".into(),
                table: "t".into(),
            },
            op: Op::Update,
            key: vec![("id".into(), Json::from(7))],
            before: None,
            after: Some(Row {
                columns,
                cells: vec![
                    Cell::Value(Json::from(7)),
                    Cell::Value(Json::String("12.50".into())),
                    Cell::Unchanged,
                ],
            }),
            position: SourcePosition { lsn: 42 },
            source_ts_ms: 1,
            kafka: KafkaPosition::default(),
        }
    }

    #[test]
    fn values_keep_their_types() {
        let w = to_wit(&change()).expect("not a truncate");
        let after = w.after.expect("after");
        assert!(matches!(after[0].value, Value::Integer(7)));
        assert!(matches!(&after[1].value, Value::Decimal(s) if s == "12.50"));
        assert!(matches!(after[2].value, Value::Unchanged));
        assert!(matches!(w.key[0].value, Value::Integer(7)));
        assert_eq!(w.lsn, 42);
    }

    #[test]
    fn edits_set_add_and_remove_columns_sharing_lists() {
        let mut cache = ColumnCache::default();
        let edits = || {
            vec![
                Edit::Set(Field {
                    name: "band".into(),
                    value: Value::Text("small".into()),
                }),
                Edit::Set(Field {
                    name: "amount".into(),
                    value: Value::Decimal("13.00".into()),
                }),
                Edit::Remove("note".into()),
            ]
        };
        let (mut a, mut b) = (change(), change());
        apply_edits(&mut a, edits(), &mut cache);
        apply_edits(&mut b, edits(), &mut cache);
        let (ra, rb) = (a.after.expect("after"), b.after.expect("after"));
        let names: Vec<&str> = ra.columns.iter().map(|c| &*c.name).collect();
        assert_eq!(names, ["id", "amount", "band"]);
        assert_eq!(
            ra.columns[1].ty,
            ColumnType::Decimal {
                precision: Some(12),
                scale: 2
            }
        );
        assert_eq!(ra.columns[2].ty, ColumnType::Text);
        assert_eq!(ra.cells[1], Cell::Value(Json::String("13.00".into())));
        assert!(Arc::ptr_eq(&ra.columns, &rb.columns));
    }
}
