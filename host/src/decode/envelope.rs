//! The Debezium change envelope (`before`, `after`, `source`, `op`) and the message key, once
//! the wire format has been peeled off. Builds the [`Change`] the rest of floe sees.

use std::sync::Arc;

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::schema::{decimal_from_base64, normalise, ImageSchema, WireFormat, UNAVAILABLE_VALUE};
use super::DecodeError;
use crate::change::{
    last_commit_from_sequence, Change, KafkaPosition, Op, Row, SourcePosition, TableId,
};
use crate::change::{Cell, Column, ColumnType};

/// The envelope's payload with row images still as JSON objects.
#[derive(Debug, Deserialize)]
pub struct Payload<'a> {
    #[serde(default)]
    pub before: Option<Map<String, Value>>,
    #[serde(default)]
    pub after: Option<Map<String, Value>>,
    #[serde(default, borrow)]
    pub source: Option<Source<'a>>,
    #[serde(default, borrow, deserialize_with = "cow_str")]
    pub op: Option<Cow<'a, str>>,
}

/// The fields of Debezium's `source` block that floe uses (names borrowed from the message
/// where possible).
#[derive(Debug, Deserialize)]
pub struct Source<'a> {
    #[serde(default)]
    pub lsn: Option<u64>,
    #[serde(default)]
    pub ts_ms: Option<i64>,
    #[serde(default, borrow, deserialize_with = "cow_str")]
    pub schema: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "cow_str")]
    pub table: Option<Cow<'a, str>>,
    /// The last commit LSN from `source.sequence`, `["<last commit LSN>","<LSN>"]` as text
    /// (see [`SourcePosition`]).
    #[serde(default, rename = "sequence", deserialize_with = "last_commit")]
    pub last_commit: Option<u64>,
}

fn last_commit<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(CowStr
        .deserialize(d)?
        .as_deref()
        .and_then(last_commit_from_sequence))
}

/// Optional text borrowed from the message when it holds no escapes (serde's own
/// `Option<Cow<str>>` always copies).
fn cow_str<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    CowStr.deserialize(d)
}

#[derive(Clone, Copy)]
struct CowStr;

impl<'de> DeserializeSeed<'de> for CowStr {
    type Value = Option<Cow<'de, str>>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for CowStr {
    type Value = Option<Cow<'de, str>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("text or null")
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Borrowed(v)))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v.to_owned())))
    }
}

/// Turns source names into a [`TableId`], reusing the previous one when it is the same table
/// (the common case), so a change does not allocate its table name.
#[derive(Debug, Default)]
pub struct TableNames {
    last: Option<TableId>,
}

impl TableNames {
    pub fn get(&mut self, schema: &str, table: &str) -> TableId {
        match &self.last {
            Some(t) if &*t.schema == schema && &*t.table == table => t.clone(),
            _ => {
                let t = TableId {
                    schema: Arc::from(schema),
                    table: Arc::from(table),
                };
                self.last = Some(t.clone());
                t
            }
        }
    }
}

/// A row image decoded straight into cells in schema order (no intermediate map).
#[derive(Debug)]
pub struct TypedImage(pub Vec<Cell>);

/// The envelope's payload with row images decoded against a known schema.
#[derive(Debug)]
pub struct TypedPayload<'a> {
    pub before: Option<TypedImage>,
    pub after: Option<TypedImage>,
    pub source: Option<Source<'a>>,
    pub op: Option<Cow<'a, str>>,
}

/// Deserializes a payload against `image`, the row schema of its table.
pub struct PayloadSeed<'a>(pub &'a ImageSchema);

impl<'de> DeserializeSeed<'de> for PayloadSeed<'_> {
    type Value = TypedPayload<'de>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<TypedPayload<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for PayloadSeed<'_> {
    type Value = TypedPayload<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Debezium change payload")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TypedPayload<'de>, A::Error> {
        let mut p = TypedPayload {
            before: None,
            after: None,
            source: None,
            op: None,
        };
        #[derive(Clone, Copy)]
        enum Field {
            Before,
            After,
            Source,
            Op,
            Other,
        }
        let field = KeySeed(|key: &str| match key {
            "before" => Field::Before,
            "after" => Field::After,
            "source" => Field::Source,
            "op" => Field::Op,
            _ => Field::Other,
        });
        while let Some(key) = map.next_key_seed(field)? {
            match key {
                Field::Before => p.before = map.next_value_seed(OptionalImage(self.0))?,
                Field::After => p.after = map.next_value_seed(OptionalImage(self.0))?,
                Field::Source => p.source = map.next_value()?,
                Field::Op => p.op = map.next_value_seed(CowStr)?,
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(p)
    }
}

/// Reads a map key and hands it to a function, without allocating it (serde's `Cow<str>`
/// always makes an owned copy).
#[derive(Clone, Copy)]
struct KeySeed<F>(F);

impl<'de, T, F: FnOnce(&str) -> T> DeserializeSeed<'de> for KeySeed<F> {
    type Value = T;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, T, F: FnOnce(&str) -> T> Visitor<'de> for KeySeed<F> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<T, E> {
        Ok((self.0)(key))
    }
}

struct OptionalImage<'a>(&'a ImageSchema);

impl<'de> DeserializeSeed<'de> for OptionalImage<'_> {
    type Value = Option<TypedImage>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for OptionalImage<'_> {
    type Value = Option<TypedImage>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a row image or null")
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(ImageVisitor(self.0)).map(Some)
    }
}

struct ImageVisitor<'a>(&'a ImageSchema);

impl<'de> Visitor<'de> for ImageVisitor<'_> {
    type Value = TypedImage;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a row image object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TypedImage, A::Error> {
        let schema = self.0;
        let width = schema.columns.len();
        // Filled in order while the fields come in schema order; padded with NULLs otherwise.
        let mut cells: Vec<Cell> = Vec::with_capacity(width);
        let mut next = 0;
        loop {
            // Fields almost always come in schema order: try the next column first.
            let column = KeySeed(|key: &str| {
                if schema.columns.get(next).is_some_and(|c| *c.name == *key) {
                    Some(next)
                } else {
                    schema.columns.iter().position(|c| *c.name == *key)
                }
            });
            let Some(idx) = map.next_key_seed(column)? else {
                break;
            };
            match idx {
                Some(i) => {
                    let column = &schema.columns[i];
                    let cell = match schema.formats[i] {
                        // Read from the message's text: no copy of the base64 first.
                        WireFormat::DecimalBytes { scale } => {
                            map.next_value_seed(DecimalCell { column, scale })?
                        }
                        WireFormat::Plain if column.ty != ColumnType::Json => {
                            match map.next_value()? {
                                Value::String(s) if s == UNAVAILABLE_VALUE => Cell::Unchanged,
                                v => Cell::Value(v),
                            }
                        }
                        format => normalise(column, format, map.next_value()?)
                            .map_err(serde::de::Error::custom)?,
                    };
                    if i == cells.len() {
                        cells.push(cell);
                    } else {
                        cells.resize_with(width, || Cell::Value(Value::Null));
                        cells[i] = cell;
                    }
                    next = i + 1;
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        cells.resize_with(width, || Cell::Value(Value::Null));
        Ok(TypedImage(cells))
    }
}

/// A Connect `Decimal` cell (base64 text or null), decoded from the borrowed text.
struct DecimalCell<'a> {
    column: &'a Column,
    scale: u32,
}

impl<'de> DeserializeSeed<'de> for DecimalCell<'_> {
    type Value = Cell;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Cell, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for DecimalCell<'_> {
    type Value = Cell;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a decimal as base64 text, or null")
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Cell, E> {
        Ok(Cell::Value(Value::Null))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Cell, E> {
        Ok(Cell::Value(Value::Null))
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Cell, D::Error> {
        d.deserialize_str(self)
    }
    fn visit_str<E: serde::de::Error>(self, b64: &str) -> Result<Cell, E> {
        if b64 == UNAVAILABLE_VALUE {
            return Ok(Cell::Unchanged);
        }
        decimal_from_base64(b64, self.scale)
            .map(|text| Cell::Value(Value::String(text)))
            .map_err(|reason| {
                E::custom(DecodeError::BadValue {
                    field: self.column.name.to_string(),
                    reason,
                })
            })
    }
}

/// Builds a change from a payload decoded against its schema.
pub fn build_typed_change(
    payload: TypedPayload<'_>,
    image: &ImageSchema,
    key: Vec<(Arc<str>, Value)>,
    kafka: KafkaPosition,
    names: &mut TableNames,
) -> Result<Change, DecodeError> {
    let row = |t: TypedImage| Row {
        columns: image.columns.clone(),
        cells: t.0,
    };
    finish(
        payload.op,
        payload.source,
        payload.before.map(row),
        payload.after.map(row),
        key,
        kafka,
        names,
    )
}

/// Builds a change from a parsed payload. `image` is the typed row schema when the event
/// carried one; without it the columns are taken from the images themselves.
pub fn build_change(
    payload: Payload<'_>,
    image: Option<&ImageSchema>,
    key: Vec<(Arc<str>, Value)>,
    kafka: KafkaPosition,
    names: &mut TableNames,
) -> Result<Change, DecodeError> {
    let before = payload.before.map(|m| row_from(m, image)).transpose()?;
    let after = payload.after.map(|m| row_from(m, image)).transpose()?;
    finish(payload.op, payload.source, before, after, key, kafka, names)
}

fn finish(
    op: Option<Cow<'_, str>>,
    source: Option<Source<'_>>,
    before: Option<Row>,
    after: Option<Row>,
    key: Vec<(Arc<str>, Value)>,
    kafka: KafkaPosition,
    names: &mut TableNames,
) -> Result<Change, DecodeError> {
    let code = op
        .as_deref()
        .ok_or_else(|| DecodeError::NotEnvelope("no `op` field".into()))?;
    let op = Op::from_code(code)
        .ok_or_else(|| DecodeError::NotEnvelope(format!("unknown op `{code}`")))?;
    let source = source.ok_or_else(|| DecodeError::NotEnvelope("no `source` block".into()))?;
    let table_name = source
        .table
        .ok_or_else(|| DecodeError::NotEnvelope("`source` has no `table`".into()))?;
    let table = names.get(source.schema.as_deref().unwrap_or_default(), &table_name);
    match op {
        Op::Create | Op::Read | Op::Update if after.is_none() => {
            return Err(DecodeError::NotEnvelope(format!(
                "op `{code}` without an `after` image"
            )))
        }
        Op::Delete if before.is_none() && key.is_empty() => {
            return Err(DecodeError::NotEnvelope(
                "delete without a key or `before` image".into(),
            ))
        }
        _ => {}
    }
    Ok(Change {
        table,
        op,
        key,
        before,
        after,
        position: match source.lsn {
            None => SourcePosition::unknown(),
            Some(lsn) if op == Op::Read => SourcePosition::snapshot(lsn),
            Some(lsn) => SourcePosition::streamed(lsn, source.last_commit),
        },
        source_ts_ms: source.ts_ms.unwrap_or(0),
        kafka,
    })
}

fn row_from(mut map: Map<String, Value>, image: Option<&ImageSchema>) -> Result<Row, DecodeError> {
    let owned;
    let image = match image {
        Some(i) => i,
        None => {
            owned = ImageSchema::untyped(map.keys().cloned());
            &owned
        }
    };
    let mut cells = Vec::with_capacity(image.columns.len());
    for (col, fmt) in image.columns.iter().zip(&image.formats) {
        let v = map.remove(&*col.name).unwrap_or(Value::Null);
        cells.push(normalise(col, *fmt, v)?);
    }
    Ok(Row {
        columns: image.columns.clone(),
        cells,
    })
}

/// Normalises key values by the column types of `schema` (the key's own schema, or the row
/// image's), exactly as the row image's values are: a delete that carries only its key must
/// match the row it deletes.
pub fn normalise_key(
    mut fields: Vec<(Arc<str>, Value)>,
    schema: Option<&ImageSchema>,
) -> Result<Vec<(Arc<str>, Value)>, DecodeError> {
    let Some(schema) = schema else {
        return Ok(fields);
    };
    for (name, value) in fields.iter_mut() {
        let Some(i) = schema.columns.iter().position(|c| c.name == *name) else {
            continue;
        };
        if schema.formats[i] == WireFormat::Plain && schema.columns[i].ty != ColumnType::Json {
            continue;
        }
        let v = std::mem::take(value);
        *value = match normalise(&schema.columns[i], schema.formats[i], v)
            .map_err(|e| DecodeError::BadKey(e.to_string()))?
        {
            Cell::Value(v) => v,
            Cell::Unchanged => {
                return Err(DecodeError::BadKey(format!(
                    "key column `{name}` holds the unchanged-value placeholder"
                )))
            }
        };
    }
    Ok(fields)
}

/// A message key's columns and values, in the message's order.
pub type KeyColumns = Vec<(Arc<str>, Value)>;

/// The key of a change as the row sees it: a key its own schema typed is ready; a key without
/// one (a JSON key converter with `schemas.enable=false`) is typed by the row image's schema,
/// when there is one.
pub fn typed_key(
    key: Vec<(Arc<str>, Value)>,
    key_typed: bool,
    image: Option<&ImageSchema>,
) -> Result<Vec<(Arc<str>, Value)>, DecodeError> {
    if key_typed {
        Ok(key)
    } else {
        normalise_key(key, image)
    }
}

/// Parses a Debezium message key: `{"schema":…, "payload":{…}}` or the bare object. Key column
/// names are shared through `names` rather than allocated per message. The columns keep the
/// message's order, as [`parse_key_payload`] reads them for keys of a known schema: one key
/// must look the same whichever path read it.
pub fn parse_key(
    bytes: Option<&[u8]>,
    names: &mut Vec<Arc<str>>,
) -> Result<Vec<(Arc<str>, Value)>, DecodeError> {
    let Some(bytes) = bytes else {
        return Ok(Vec::new());
    };
    let bad = |e: serde_json::Error| DecodeError::BadKey(e.to_string());
    let v: Value = serde_json::from_slice(bytes).map_err(bad)?;
    match &v {
        Value::Object(m) if m.contains_key("payload") && m.contains_key("schema") => {
            match m.get("payload") {
                Some(Value::Object(_)) => {
                    #[derive(Deserialize)]
                    struct Wrapped<'a> {
                        #[serde(borrow)]
                        payload: &'a serde_json::value::RawValue,
                    }
                    let w: Wrapped = serde_json::from_slice(bytes).map_err(bad)?;
                    parse_key_payload(w.payload.get().as_bytes(), names)
                }
                Some(Value::Null) | None => Ok(Vec::new()),
                Some(other) => Err(DecodeError::BadKey(format!(
                    "key payload is not an object: {other}"
                ))),
            }
        }
        Value::Object(_) => parse_key_payload(bytes, names),
        Value::Null => Ok(Vec::new()),
        other => Err(DecodeError::BadKey(format!("not an object: {other}"))),
    }
}

/// A key column's name, shared with earlier keys that had it.
fn key_name(names: &mut Vec<Arc<str>>, k: &str) -> Arc<str> {
    match names.iter().find(|n| ***n == *k) {
        Some(n) => n.clone(),
        None => {
            let n: Arc<str> = Arc::from(k);
            // Bounded: odd keys must not grow the cache without end.
            if names.len() < 64 {
                names.push(n.clone());
            }
            n
        }
    }
}

/// The `payload` of a key whose schema is already known: an object of key columns (or
/// `null`), read straight into named values.
pub fn parse_key_payload(
    bytes: &[u8],
    names: &mut Vec<Arc<str>>,
) -> Result<Vec<(Arc<str>, Value)>, DecodeError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    KeyFields(names)
        .deserialize(&mut de)
        .and_then(|fields| de.end().map(|_| fields))
        .map_err(|e| DecodeError::BadKey(e.to_string()))
}

struct KeyFields<'n>(&'n mut Vec<Arc<str>>);

impl<'de> DeserializeSeed<'de> for KeyFields<'_> {
    type Value = Vec<(Arc<str>, Value)>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for KeyFields<'_> {
    type Value = Vec<(Arc<str>, Value)>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key object or null")
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let names = self.0;
        let mut fields = Vec::with_capacity(1);
        while let Some(name) = map.next_key_seed(KeySeed(|k: &str| key_name(names, k)))? {
            fields.push((name, map.next_value()?));
        }
        Ok(fields)
    }
}
