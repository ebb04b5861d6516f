//! The Debezium change envelope (`before`, `after`, `source`, `op`) and the message key, once
//! the wire format has been peeled off. Builds the [`Change`] the rest of floe sees.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::schema::{normalise, ImageSchema};
use super::DecodeError;
use crate::change::{Change, KafkaPosition, Op, Row, SourcePosition, TableId};

/// The envelope's payload with row images still as JSON objects.
#[derive(Debug, Deserialize)]
pub struct Payload {
    #[serde(default)]
    pub before: Option<Map<String, Value>>,
    #[serde(default)]
    pub after: Option<Map<String, Value>>,
    #[serde(default)]
    pub source: Option<Source>,
    #[serde(default)]
    pub op: Option<String>,
}

/// The fields of Debezium's `source` block that floe uses.
#[derive(Debug, Deserialize)]
pub struct Source {
    #[serde(default)]
    pub lsn: Option<u64>,
    #[serde(default)]
    pub ts_ms: Option<i64>,
    #[serde(default)]
    pub schema: Option<String>,
    #[serde(default)]
    pub table: Option<String>,
}

/// Builds a change from a parsed payload. `image` is the typed row schema when the event
/// carried one; without it the columns are taken from the images themselves.
pub fn build_change(
    payload: Payload,
    image: Option<&ImageSchema>,
    key: Vec<(Arc<str>, Value)>,
    kafka: KafkaPosition,
) -> Result<Change, DecodeError> {
    let code = payload
        .op
        .as_deref()
        .ok_or_else(|| DecodeError::NotEnvelope("no `op` field".into()))?;
    let op = Op::from_code(code)
        .ok_or_else(|| DecodeError::NotEnvelope(format!("unknown op `{code}`")))?;
    let source = payload
        .source
        .ok_or_else(|| DecodeError::NotEnvelope("no `source` block".into()))?;
    let table = TableId {
        schema: source.schema.unwrap_or_default(),
        table: source
            .table
            .ok_or_else(|| DecodeError::NotEnvelope("`source` has no `table`".into()))?,
    };
    let before = payload.before.map(|m| row_from(m, image)).transpose()?;
    let after = payload.after.map(|m| row_from(m, image)).transpose()?;
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
        position: SourcePosition {
            lsn: source.lsn.unwrap_or(0),
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

/// Parses a Debezium message key: `{"schema":…, "payload":{…}}` or the bare object.
pub fn parse_key(bytes: Option<&[u8]>) -> Result<Vec<(Arc<str>, Value)>, DecodeError> {
    let Some(bytes) = bytes else {
        return Ok(Vec::new());
    };
    let v: Value =
        serde_json::from_slice(bytes).map_err(|e| DecodeError::BadKey(e.to_string()))?;
    let obj = match v {
        Value::Object(mut m) if m.contains_key("payload") && m.contains_key("schema") => {
            match m.remove("payload") {
                Some(Value::Object(p)) => p,
                Some(Value::Null) | None => return Ok(Vec::new()),
                Some(other) => {
                    return Err(DecodeError::BadKey(format!(
                        "key payload is not an object: {other}"
                    )))
                }
            }
        }
        Value::Object(m) => m,
        Value::Null => return Ok(Vec::new()),
        other => return Err(DecodeError::BadKey(format!("not an object: {other}"))),
    };
    Ok(obj.into_iter().map(|(k, v)| (Arc::from(k), v)).collect())
}
