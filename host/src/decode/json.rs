//! Debezium JSON (Kafka Connect's JsonConverter), with or without the embedded schema.
//!
//! With `schemas.enable=true` every message repeats the same multi-kilobyte schema. The decoder
//! keeps the exact bytes of the schemas it has seen; a message whose schema bytes match one of
//! them skips straight to its payload, so the schema is parsed once, not once per message. That
//! payload is read by [`super::scan`] (serde when the payload is out of the ordinary).

use serde::Deserialize;
use serde_json::value::RawValue;

use std::sync::Arc;

use serde::de::DeserializeSeed;

use super::envelope::{
    build_change, build_typed_change, normalise_key, parse_key, parse_key_payload, typed_key,
    KeyColumns, Payload, PayloadSeed, TableNames,
};
use super::scan;
use super::schema::{ConnectSchema, ImageSchema, WireFormat};
use super::{DecodeError, Decoded};
use crate::change::ColumnType;
use crate::change::KafkaPosition;

const SCHEMA_PREFIX: &[u8] = br#"{"schema":"#;
const PAYLOAD_INFIX: &[u8] = br#","payload":"#;
/// How many distinct value schemas are remembered (tables × schema versions).
const MAX_CACHED_SCHEMAS: usize = 256;

struct CachedSchema {
    raw: Box<[u8]>,
    image: Option<ImageSchema>,
}

/// Decodes Debezium JSON messages; one per consumer (it caches schemas).
#[derive(Default)]
pub struct JsonDecoder {
    schemas: Vec<CachedSchema>,
    /// Key schemas seen before, byte for byte, with the key columns' types when some value
    /// needs normalising (`None`: plain columns, or a schema that is not a struct; the values
    /// are then taken as they are).
    key_schemas: Vec<(Box<[u8]>, Option<ImageSchema>)>,
    names: TableNames,
    key_names: Vec<Arc<str>>,
}

#[derive(Deserialize)]
struct Wrapped<'a> {
    #[serde(borrow, default)]
    schema: Option<&'a RawValue>,
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct EnvelopeSchema {
    #[serde(default)]
    fields: Vec<ConnectSchema>,
}

impl JsonDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many value schemas this decoder remembers.
    pub fn cached_schemas(&self) -> usize {
        self.schemas.len()
    }

    /// Decodes one message. `value` is `None` for a tombstone.
    pub fn decode(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        kafka: KafkaPosition,
    ) -> Result<Decoded, DecodeError> {
        let Some(value) = value else {
            return Ok(Decoded::Tombstone);
        };
        let (key, key_typed) = self.key(key)?;

        // Fast path: a schema seen before, byte for byte.
        if let Some(rest) = value.strip_prefix(SCHEMA_PREFIX) {
            for (i, cached) in self.schemas.iter().enumerate() {
                let Some(after) = rest.strip_prefix(&*cached.raw) else {
                    continue;
                };
                let Some(payload) = after.strip_prefix(PAYLOAD_INFIX) else {
                    continue;
                };
                let payload = trim_closing_brace(payload)?;
                if payload == b"null" {
                    return Ok(Decoded::Tombstone);
                }
                let change = match self.schemas[i].image.as_ref() {
                    Some(image) => {
                        // One UTF-8 check for the whole payload; the str reader then skips
                        // the per-string checks of the slice reader.
                        let payload = utf8(payload)?;
                        let typed = match scan::payload(payload, image) {
                            Some(typed) => typed,
                            // Anything out of the ordinary: serde reads it, or says why not.
                            None => {
                                let mut de = serde_json::Deserializer::from_str(payload);
                                PayloadSeed(image)
                                    .deserialize(&mut de)
                                    .and_then(|p| de.end().map(|_| p))
                                    .map_err(|e| DecodeError::NotEnvelope(e.to_string()))?
                            }
                        };
                        build_typed_change(
                            typed,
                            image,
                            typed_key(key, key_typed, Some(image))?,
                            kafka,
                            &mut self.names,
                        )?
                    }
                    None => {
                        let payload: Payload = serde_json::from_slice(payload)
                            .map_err(|e| DecodeError::NotEnvelope(e.to_string()))?;
                        build_change(payload, None, key, kafka, &mut self.names)?
                    }
                };
                return Ok(Decoded::Change(Box::new(change)));
            }
        }

        let wrapped: Wrapped =
            serde_json::from_slice(value).map_err(|e| DecodeError::NotJson(e.to_string()))?;
        match (wrapped.schema, wrapped.payload) {
            (Some(schema), Some(payload)) => {
                if payload.get() == "null" {
                    return Ok(Decoded::Tombstone);
                }
                let image = image_schema(schema.get())?;
                let payload: Payload = serde_json::from_str(payload.get())
                    .map_err(|e| DecodeError::NotEnvelope(e.to_string()))?;
                let key = typed_key(key, key_typed, image.as_ref())?;
                let change = build_change(payload, image.as_ref(), key, kafka, &mut self.names)?;
                if self.schemas.len() >= MAX_CACHED_SCHEMAS {
                    self.schemas.remove(0);
                }
                self.schemas.push(CachedSchema {
                    raw: schema.get().as_bytes().into(),
                    image,
                });
                Ok(Decoded::Change(Box::new(change)))
            }
            (Some(_), None) if has_null_payload(value) => Ok(Decoded::Tombstone),
            _ => {
                // No wrapper: the whole value is the envelope (schemas.enable=false).
                let payload: Payload = serde_json::from_slice(value)
                    .map_err(|e| DecodeError::NotEnvelope(e.to_string()))?;
                Ok(Decoded::Change(Box::new(build_change(
                    payload,
                    None,
                    key,
                    kafka,
                    &mut self.names,
                )?)))
            }
        }
    }
}

impl JsonDecoder {
    /// Parses the message key, skipping a key schema seen before without parsing it. Key
    /// values are normalised by their schema exactly as row images are (a date key is the
    /// same text as the date column, a decimal key the same digits), so a delete that only
    /// has its key matches the row it deletes.
    ///
    /// Returns the key's columns, and whether its schema typed them (a key without one is
    /// typed by the row image's schema, [`typed_key`]).
    fn key(&mut self, key: Option<&[u8]>) -> Result<(KeyColumns, bool), DecodeError> {
        let Some(bytes) = key else {
            return Ok((Vec::new(), true));
        };
        if let Some(rest) = bytes.strip_prefix(SCHEMA_PREFIX) {
            for (raw, schema) in &self.key_schemas {
                if let Some(payload) = rest
                    .strip_prefix(&**raw)
                    .and_then(|a| a.strip_prefix(PAYLOAD_INFIX))
                {
                    let fields =
                        parse_key_payload(trim_closing_brace(payload)?, &mut self.key_names)?;
                    return Ok((normalise_key(fields, schema.as_ref())?, true));
                }
            }
            let wrapped: Wrapped =
                serde_json::from_slice(bytes).map_err(|e| DecodeError::BadKey(e.to_string()))?;
            if let Some(schema) = wrapped.schema {
                let image = serde_json::from_str::<ConnectSchema>(schema.get())
                    .ok()
                    .filter(|node| node.ty == "struct")
                    .map(|node| ImageSchema::from_connect(&node))
                    .transpose()
                    .map_err(|e| DecodeError::BadKey(e.to_string()))?
                    // Keys of plain columns only (integers, text) are taken as they are.
                    .filter(|image| {
                        image
                            .formats
                            .iter()
                            .zip(image.columns.iter())
                            .any(|(f, c)| *f != WireFormat::Plain || c.ty == ColumnType::Json)
                    });
                if self.key_schemas.len() >= MAX_CACHED_SCHEMAS {
                    self.key_schemas.remove(0);
                }
                self.key_schemas
                    .push((schema.get().as_bytes().into(), image.clone()));
                let fields = parse_key(Some(bytes), &mut self.key_names)?;
                return Ok((normalise_key(fields, image.as_ref())?, true));
            }
        }
        Ok((parse_key(Some(bytes), &mut self.key_names)?, false))
    }
}

/// Whether a wrapped message's `payload` is an explicit `null` (serde reads it as absent).
fn has_null_payload(value: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(value)
        .is_ok_and(|m| m.get("payload").is_some_and(serde_json::Value::is_null))
}

/// The payload as text: validated with SIMD (most of it is ASCII), the standard library's
/// checker only for the message of an error.
fn utf8(bytes: &[u8]) -> Result<&str, DecodeError> {
    simdutf8::basic::from_utf8(bytes).map_err(|_| match std::str::from_utf8(bytes) {
        Err(e) => DecodeError::NotJson(e.to_string()),
        Ok(_) => DecodeError::NotJson("invalid UTF-8".into()),
    })
}

fn trim_closing_brace(bytes: &[u8]) -> Result<&[u8], DecodeError> {
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .ok_or_else(|| DecodeError::NotJson("truncated message".into()))?;
    if bytes[end] != b'}' {
        return Err(DecodeError::NotJson("message does not end with `}`".into()));
    }
    Ok(&bytes[..end])
}

/// The typed row schema from an envelope schema (`None` for an envelope without row images,
/// such as a truncate-only schema).
pub(crate) fn image_schema(raw: &str) -> Result<Option<ImageSchema>, DecodeError> {
    let env: EnvelopeSchema =
        serde_json::from_str(raw).map_err(|e| DecodeError::BadSchema(e.to_string()))?;
    let image = env
        .fields
        .iter()
        .find(|f| matches!(f.field.as_deref(), Some("after" | "before")));
    image.map(ImageSchema::from_connect).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::{Cell, ColumnType, Op};
    use serde_json::Value;

    const SCHEMA: &str = r#"{"type":"struct","fields":[{"type":"struct","fields":[{"type":"int64","optional":false,"field":"transaction_id"},{"type":"bytes","optional":true,"name":"org.apache.kafka.connect.data.Decimal","version":1,"parameters":{"scale":"2","connect.decimal.precision":"12"},"field":"amount"},{"type":"string","optional":true,"field":"description"},{"type":"string","optional":false,"name":"io.debezium.time.ZonedTimestamp","field":"created_at"}],"optional":true,"field":"before"},{"type":"struct","fields":[{"type":"int64","optional":false,"field":"transaction_id"},{"type":"bytes","optional":true,"name":"org.apache.kafka.connect.data.Decimal","version":1,"parameters":{"scale":"2","connect.decimal.precision":"12"},"field":"amount"},{"type":"string","optional":true,"field":"description"},{"type":"string","optional":false,"name":"io.debezium.time.ZonedTimestamp","field":"created_at"}],"optional":true,"field":"after"},{"type":"struct","fields":[],"field":"source"},{"type":"string","field":"op"}],"name":"x.Envelope"}"#;

    fn message(payload: &str) -> Vec<u8> {
        format!(r#"{{"schema":{SCHEMA},"payload":{payload}}}"#).into_bytes()
    }

    const KEY: &[u8] = br#"{"schema":{"type":"struct","fields":[{"type":"int64","field":"transaction_id"}]},"payload":{"transaction_id":7}}"#;

    fn change(d: Decoded) -> crate::change::Change {
        match d {
            Decoded::Change(c) => *c,
            Decoded::Tombstone => panic!("expected a change"),
        }
    }

    #[test]
    fn decodes_with_schema_and_reuses_it() {
        let mut dec = JsonDecoder::new();
        let p = r#"{"before":null,"after":{"transaction_id":7,"amount":"BOI=","description":"__debezium_unavailable_value","created_at":"2024-01-01T00:00:00Z"},"source":{"lsn":42,"ts_ms":5,"schema":"public","table":"transactions"},"op":"u"}"#;
        for _ in 0..2 {
            let c = change(
                dec.decode(Some(KEY), Some(&message(p)), KafkaPosition::default())
                    .unwrap(),
            );
            assert_eq!(c.op, Op::Update);
            assert_eq!(c.position.lsn, 42);
            assert_eq!(&*c.table.table, "transactions");
            let after = c.after.unwrap();
            assert_eq!(
                after.get("amount"),
                Some(&Cell::Value(Value::from("12.50")))
            );
            assert_eq!(after.get("description"), Some(&Cell::Unchanged));
            assert_eq!(after.columns[3].ty, ColumnType::TimestampTz);
            assert_eq!(c.key[0].1, Value::from(7));
        }
        assert_eq!(dec.cached_schemas(), 1);
    }

    #[test]
    fn fields_out_of_schema_order_or_missing() {
        let mut dec = JsonDecoder::new();
        for p in [
            r#"{"after":{"created_at":"2024-01-01T00:00:00Z","extra":[1],"transaction_id":7},"source":{"table":"t"},"op":"c"}"#,
            r#"{"after":{"transaction_id":7,"description":"__debezium_unavailable_value"},"source":{"table":"t"},"op":"c"}"#,
        ] {
            let c = change(
                dec.decode(Some(KEY), Some(&message(p)), KafkaPosition::default())
                    .unwrap(),
            );
            let after = c.after.unwrap();
            assert_eq!(after.cells.len(), 4, "one cell per column");
            assert_eq!(
                after.get("transaction_id"),
                Some(&Cell::Value(Value::from(7)))
            );
            assert_eq!(after.get("amount"), Some(&Cell::Value(Value::Null)));
        }
    }

    #[test]
    fn escaped_names_and_decimals() {
        // Text with escapes cannot be borrowed from the message; it must decode all the same,
        // on the typed path (schema) and without a schema.
        let p = r#"{"after":{"transaction_id":7,"amount":null,"created_at":"2024-01-01T00:00:00Z"},"source":{"schema":"p\u0075blic","table":"tr\"x"},"op":"\u0063"}"#;
        let bare = p.replace(r#""amount":null,"#, "");
        let mut dec = JsonDecoder::new();
        for value in [message(p), bare.into_bytes()] {
            let c = change(
                dec.decode(Some(KEY), Some(&value), KafkaPosition::default())
                    .unwrap(),
            );
            assert_eq!(c.op, Op::Create);
            assert_eq!((&*c.table.schema, &*c.table.table), ("public", "tr\"x"));
        }
        let c = change(
            dec.decode(Some(KEY), Some(&message(p)), KafkaPosition::default())
                .unwrap(),
        );
        assert_eq!(
            c.after.unwrap().get("amount"),
            Some(&Cell::Value(Value::Null))
        );
        let bad = p.replace(r#""amount":null"#, r#""amount":"not base64!""#);
        let err = dec
            .decode(Some(KEY), Some(&message(&bad)), KafkaPosition::default())
            .unwrap_err();
        assert!(err.to_string().contains("amount"), "{err}");
    }

    #[test]
    fn keys_of_a_known_key_schema() {
        let mut dec = JsonDecoder::new();
        let p = r#"{"after":{"transaction_id":7,"created_at":"2024-01-01T00:00:00Z"},"source":{"table":"t"},"op":"c"}"#;
        let key = |payload: &str| {
            format!(
                r#"{{"schema":{{"type":"struct","fields":[{{"type":"int64","field":"a"}},{{"type":"string","field":"b"}}]}},"payload":{payload}}}"#
            )
        };
        let mut decode = |payload: &str| {
            let k = key(payload);
            dec.decode(
                Some(k.as_bytes()),
                Some(&message(p)),
                KafkaPosition::default(),
            )
        };
        for _ in 0..2 {
            // First with the key schema unknown, then from the cached one: the same key, its
            // columns in the message's order both times.
            let c = change(decode(r#"{"b":"x","a":7}"#).unwrap());
            let names: Vec<&str> = c.key.iter().map(|(n, _)| &**n).collect();
            assert_eq!(names, ["b", "a"]);
            let c = change(decode(r#"{"a":7,"b":"x"}"#).unwrap());
            let names: Vec<&str> = c.key.iter().map(|(n, _)| &**n).collect();
            assert_eq!(names, ["a", "b"]);
            assert_eq!(c.key[1].1, Value::from("x"));
            assert!(change(decode("null").unwrap()).key.is_empty());
        }
        let err = decode("[1]").unwrap_err();
        assert!(matches!(err, DecodeError::BadKey(_)), "{err}");
    }

    #[test]
    fn keys_of_every_type_equal_their_row_image() {
        // A composite key of a decimal, a date, a timestamp, a time and a text, as Debezium's
        // JSON converter writes it: the key must read exactly as the same columns of the row
        // image do, or a delete that carries only its key never matches its row.
        let fields = r#"[{"type":"bytes","optional":false,"name":"org.apache.kafka.connect.data.Decimal","parameters":{"scale":"2","connect.decimal.precision":"10"},"field":"amount"},{"type":"int32","optional":false,"name":"io.debezium.time.Date","field":"day"},{"type":"int64","optional":false,"name":"io.debezium.time.MicroTimestamp","field":"at"},{"type":"int64","optional":false,"name":"io.debezium.time.MicroTime","field":"t"},{"type":"string","optional":false,"field":"name"}]"#;
        let envelope = format!(
            r#"{{"type":"struct","fields":[{{"type":"struct","fields":{fields},"optional":true,"field":"before"}},{{"type":"struct","fields":{fields},"optional":true,"field":"after"}},{{"type":"struct","fields":[],"field":"source"}},{{"type":"string","field":"op"}}]}}"#
        );
        let row = r#"{"amount":"BOI=","day":19000,"at":1700000000123456,"t":3723000001,"name":"a \"b\" ✓"}"#;
        let with_schema = format!(
            r#"{{"schema":{{"type":"struct","fields":{fields},"optional":false}},"payload":{row}}}"#
        );
        // A key converter without schemas (`key.converter.schemas.enable=false`): the row
        // image's schema types the key.
        let bare = row.to_string();
        for key in [with_schema, bare] {
            let mut dec = JsonDecoder::new();
            for (op, payload) in [
                (
                    "c",
                    format!(
                        r#"{{"before":null,"after":{row},"source":{{"table":"t","lsn":5}},"op":"c"}}"#
                    ),
                ),
                (
                    "d",
                    format!(
                        r#"{{"before":{row},"after":null,"source":{{"table":"t","lsn":6}},"op":"d"}}"#
                    ),
                ),
            ] {
                let value = format!(r#"{{"schema":{envelope},"payload":{payload}}}"#);
                // Twice: the key schema unknown, then cached.
                for _ in 0..2 {
                    let c = change(
                        dec.decode(
                            Some(key.as_bytes()),
                            Some(value.as_bytes()),
                            KafkaPosition::default(),
                        )
                        .unwrap(),
                    );
                    let image = if op == "c" {
                        c.after.as_ref()
                    } else {
                        c.before.as_ref()
                    }
                    .unwrap();
                    assert_eq!(c.key.len(), 5);
                    for (name, v) in &c.key {
                        assert_eq!(
                            image.get(name),
                            Some(&Cell::Value(v.clone())),
                            "{op} {name}"
                        );
                    }
                    assert_eq!(c.key[0].1, Value::from("12.50"));
                    assert_eq!(c.key[1].1, Value::from("2022-01-08"));
                    assert_eq!(c.key[2].1, Value::from("2023-11-14T22:13:20.123456"));
                }
            }
        }
    }

    #[test]
    fn decodes_without_schema() {
        let mut dec = JsonDecoder::new();
        let v = br#"{"before":{"transaction_id":7},"after":null,"source":{"lsn":9,"schema":"public","table":"transactions"},"op":"d"}"#;
        let c = change(
            dec.decode(
                Some(br#"{"transaction_id":7}"#),
                Some(v),
                KafkaPosition::default(),
            )
            .unwrap(),
        );
        assert_eq!(c.op, Op::Delete);
        assert_eq!(c.before.unwrap().columns[0].ty, ColumnType::Unknown);
    }

    #[test]
    fn tombstones_and_garbage() {
        let mut dec = JsonDecoder::new();
        assert!(matches!(
            dec.decode(Some(KEY), None, KafkaPosition::default()),
            Ok(Decoded::Tombstone)
        ));
        for bad in [
            &b"not json"[..],
            b"{\"schema\":",
            b"[1,2]",
            b"{\"op\":\"x\"}",
        ] {
            assert!(dec
                .decode(Some(KEY), Some(bad), KafkaPosition::default())
                .is_err());
        }
        // A wrapped null payload is a tombstone too, on first sight of the schema and once the
        // schema is cached (fast path).
        assert!(matches!(
            dec.decode(Some(KEY), Some(&message("null")), KafkaPosition::default()),
            Ok(Decoded::Tombstone)
        ));
        let valid = r#"{"after":{"transaction_id":1,"created_at":"2024-01-01T00:00:00Z"},"source":{"table":"t"},"op":"c"}"#;
        assert!(dec
            .decode(Some(KEY), Some(&message(valid)), KafkaPosition::default())
            .is_ok());
        assert_eq!(dec.cached_schemas(), 1);
        for _ in 0..2 {
            assert!(matches!(
                dec.decode(Some(KEY), Some(&message("null")), KafkaPosition::default()),
                Ok(Decoded::Tombstone)
            ));
        }
        let missing_after = message(r#"{"after":null,"source":{"table":"t"},"op":"c"}"#);
        let err = dec
            .decode(Some(KEY), Some(&missing_after), KafkaPosition::default())
            .unwrap_err();
        assert!(err.to_string().contains("without an `after`"), "{err}");
    }
}
