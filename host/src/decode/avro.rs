//! Debezium Avro in Confluent's wire format: a zero magic byte, the 4-byte big-endian id of the
//! writer schema in the Schema Registry, then the Avro binary datum. Writer schemas are fetched
//! by id (see [`super::registry`]) and cached with their row image mapped to columns and a
//! reader compiled for them ([`super::avro_reader`]), like the JSON decoder's embedded
//! schemas; each message then costs one pass over its bytes.
//!
//! The Kafka Connect Avro converters (Confluent's and Apicurio's) keep the Connect type of every
//! field in the schema (`connect.name`, `connect.parameters`), so a column gets the same
//! warehouse type and the same value as through the JSON converter.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::avro_reader::Reader;
use super::envelope::{build_typed_change, KeyColumns, TableNames};
use super::registry::{Fetched, RegistryError, SchemaRegistry};
use super::schema::{ConnectSchema, ImageSchema};
use super::{DecodeError, Decoded};
use crate::change::{Cell, KafkaPosition};

/// The first byte of a message in Confluent's wire format.
pub const MAGIC: u8 = 0;
/// How many schemas are remembered (tables × versions × key/value); the oldest goes first.
const MAX_CACHED_SCHEMAS: usize = 1024;
/// How long "the registry does not know this id" stands: meanwhile messages naming the id are
/// dead-lettered without asking again (which takes seconds, see [`SchemaRegistry::fetch`]);
/// afterwards the next one asks, as the schema may have been registered since.
const UNKNOWN_ID_TTL: Duration = Duration::from_secs(60);

/// The registry schema id of a message in Confluent's wire format, if it is one.
pub fn schema_id(bytes: &[u8]) -> Option<u32> {
    match bytes {
        [MAGIC, a, b, c, d, ..] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => None,
    }
}

/// One writer schema, parsed and mapped to columns.
struct Parsed {
    reader: Reader,
    shape: Shape,
}

enum Shape {
    /// A Debezium envelope; the row image's columns (`None` when it has no row images).
    Envelope(Option<ImageSchema>),
    /// Anything else is read as a message key: its fields are the key columns.
    Key(ImageSchema),
}

/// What the decoder knows about a schema id.
enum Entry {
    Ready(Arc<Parsed>),
    /// The registry does not know the id, or holds something floe cannot read: the reason, and
    /// until when it stands (`None`: for good, as a registered id never changes its schema).
    Refused {
        reason: String,
        until: Option<Instant>,
    },
}

/// Decodes Avro messages; one per consumer (it caches schemas).
pub struct AvroDecoder {
    registry: Option<SchemaRegistry>,
    schemas: HashMap<u32, Entry>,
    order: Vec<u32>,
    names: TableNames,
    unknown_id_ttl: Duration,
}

impl AvroDecoder {
    pub fn new(registry: Option<SchemaRegistry>) -> Self {
        AvroDecoder {
            registry,
            schemas: HashMap::new(),
            order: Vec::new(),
            names: TableNames::default(),
            unknown_id_ttl: UNKNOWN_ID_TTL,
        }
    }

    /// How many schema ids this decoder has an answer for.
    pub fn cached_schemas(&self) -> usize {
        self.schemas.len()
    }

    /// Fetches the writer schemas of `key` and `value` that are not cached yet (or were unknown
    /// to the registry longer than [`UNKNOWN_ID_TTL`] ago). An error means the registry could
    /// not answer: the caller waits and retries if [`RegistryError::is_transient`] (nothing is
    /// decoded meanwhile), and stops otherwise.
    pub async fn fetch_missing(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<(), RegistryError> {
        for id in [key, value].into_iter().flatten().filter_map(schema_id) {
            if self.knows(id) {
                continue;
            }
            let registry = self
                .registry
                .as_ref()
                .ok_or(RegistryError::NotConfigured(id))?;
            let fetched = registry.fetch(id).await?;
            self.learn(id, fetched);
        }
        Ok(())
    }

    /// Whether every writer schema `key` and `value` name has an answer at hand: decoding
    /// them needs no registry call.
    pub fn has_schemas(&self, key: Option<&[u8]>, value: Option<&[u8]>) -> bool {
        [key, value]
            .into_iter()
            .flatten()
            .filter_map(schema_id)
            .all(|id| self.knows(id))
    }

    /// Whether the registry's answer about `id` is at hand (an id it did not know is asked
    /// again after [`UNKNOWN_ID_TTL`]).
    fn knows(&self, id: u32) -> bool {
        match self.schemas.get(&id) {
            Some(Entry::Refused {
                until: Some(until), ..
            }) => *until > Instant::now(),
            Some(_) => true,
            None => false,
        }
    }

    /// Remembers what the registry said about `id` (replacing what it said before).
    pub fn learn(&mut self, id: u32, fetched: Fetched) {
        let for_good = |reason: String| Entry::Refused {
            reason,
            until: None,
        };
        let entry = match fetched {
            Fetched::Schema(text) => match parse(&text) {
                Ok(p) => Entry::Ready(Arc::new(p)),
                Err(e) => for_good(format!("schema id {id} cannot be used: {e}")),
            },
            Fetched::Unknown => Entry::Refused {
                reason: format!("schema id {id} is unknown to the schema registry"),
                until: Some(Instant::now() + self.unknown_id_ttl),
            },
            Fetched::NotAvro(kind) => for_good(format!(
                "schema id {id} is a {kind} schema; floe reads Avro and JSON"
            )),
        };
        if self.schemas.remove(&id).is_some() {
            // Asked again after its refusal expired: it moves to the back of the queue.
            self.order.retain(|&o| o != id);
        } else if self.schemas.len() >= MAX_CACHED_SCHEMAS && !self.order.is_empty() {
            let oldest = self.order.remove(0);
            self.schemas.remove(&oldest);
        }
        self.order.push(id);
        self.schemas.insert(id, entry);
    }

    /// The schema for `id`. A refusal stands here even when expired: only
    /// [`AvroDecoder::fetch_missing`] asks again, so a message decoded again (after a failed
    /// load) gets the answer it got the first time.
    fn schema(&self, id: u32) -> Result<Arc<Parsed>, DecodeError> {
        match self.schemas.get(&id) {
            Some(Entry::Ready(p)) => Ok(p.clone()),
            Some(Entry::Refused { reason, .. }) => Err(DecodeError::Schema(reason.clone())),
            None => Err(DecodeError::Schema(format!(
                "internal: schema id {id} was not fetched before decoding"
            ))),
        }
    }

    /// Decodes one message whose value (and usually key) is in Confluent's wire format.
    /// [`AvroDecoder::fetch_missing`] must have run for it. `value` is `None` for a tombstone.
    pub fn decode(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        kafka: KafkaPosition,
    ) -> Result<Decoded, DecodeError> {
        let Some(value) = value else {
            return Ok(Decoded::Tombstone);
        };
        let id = schema_id(value).ok_or_else(|| {
            DecodeError::NotAvro("value does not start with the magic byte and a schema id".into())
        })?;
        let parsed = self.schema(id)?;
        let Shape::Envelope(image) = &parsed.shape else {
            return Err(DecodeError::Schema(format!(
                "schema id {id} is not a Debezium change envelope"
            )));
        };
        let (key, key_typed) = self.key(key)?;
        let payload = parsed.reader.envelope(image.as_ref(), &value[5..])?;
        let empty = ImageSchema::untyped(Vec::<String>::new());
        let image = image.as_ref().unwrap_or(&empty);
        let key = super::envelope::typed_key(key, key_typed, Some(image))?;
        let change = build_typed_change(payload, image, key, kafka, &mut self.names)?;
        Ok(Decoded::Change(Box::new(change)))
    }

    /// The key columns of an Avro key (a JSON key is left to the JSON key reader), and whether
    /// a schema typed them.
    fn key(&mut self, key: Option<&[u8]>) -> Result<(KeyColumns, bool), DecodeError> {
        let Some(bytes) = key else {
            return Ok((Vec::new(), true));
        };
        let Some(id) = schema_id(bytes) else {
            let mut names = Vec::new();
            return Ok((super::envelope::parse_key(Some(bytes), &mut names)?, false));
        };
        let parsed = self.schema(id)?;
        let Shape::Key(image) = &parsed.shape else {
            return Err(DecodeError::BadKey(format!(
                "key schema id {id} is a change envelope, not a key"
            )));
        };
        let cells = parsed.reader.key(image, &bytes[5..])?;
        let key = image
            .columns
            .iter()
            .zip(cells.0)
            .map(|(c, cell)| {
                let v = match cell {
                    Cell::Value(v) => v,
                    Cell::Unchanged => Value::Null,
                };
                (c.name.clone(), v)
            })
            .collect();
        Ok((key, true))
    }
}

/// Parses a writer schema and maps its row image (or key fields) to columns.
fn parse(text: &str) -> Result<Parsed, String> {
    let avro = apache_avro::Schema::parse_str(text).map_err(|e| format!("invalid Avro: {e}"))?;
    let json: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let fields = json
        .get("fields")
        .and_then(Value::as_array)
        .ok_or("not an Avro record schema")?;
    let field = |name: &str| fields.iter().find(|f| f["name"] == name);
    let is_envelope = field("op").is_some() && field("source").is_some();
    let shape = if is_envelope {
        // `before` defines the row record; `after` usually refers to it by name.
        let row = ["before", "after"]
            .into_iter()
            .filter_map(field)
            .filter_map(|f| record_in(&f["type"]))
            .next();
        Shape::Envelope(row.map(image_of).transpose()?)
    } else {
        Shape::Key(image_of(&json)?)
    };
    let image = match &shape {
        Shape::Envelope(image) => image.as_ref(),
        Shape::Key(_) => None,
    };
    let reader = Reader::compile(&avro, image)?;
    Ok(Parsed { reader, shape })
}

/// The record definition inside a field type (`["null", {record}]` or `{record}`).
fn record_in(ty: &Value) -> Option<&Value> {
    match ty {
        Value::Array(branches) => branches.iter().find_map(record_in),
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("record") => Some(ty),
        _ => None,
    }
}

fn image_of(record: &Value) -> Result<ImageSchema, String> {
    let node = connect_node(record, None, false)?;
    ImageSchema::from_connect(&node).map_err(|e| e.to_string())
}

/// The Kafka Connect schema an Avro type was written from (the converters record it in
/// `connect.name` / `connect.type` / `connect.parameters`).
fn connect_node(ty: &Value, field: Option<&str>, optional: bool) -> Result<ConnectSchema, String> {
    let node = |t: &str| ConnectSchema {
        ty: t.to_string(),
        optional,
        name: None,
        field: field.map(str::to_string),
        fields: Vec::new(),
        parameters: None,
    };
    match ty {
        Value::String(t) => Ok(node(primitive(t, None)?)),
        Value::Array(branches) => {
            let non_null: Vec<&Value> = branches.iter().filter(|b| *b != "null").collect();
            match non_null.as_slice() {
                [one] => connect_node(one, field, optional || non_null.len() < branches.len()),
                _ => Err(format!(
                    "field `{}`: unions other than [null, T] are not supported",
                    field.unwrap_or("?")
                )),
            }
        }
        Value::Object(o) => {
            let avro_type = o.get("type").and_then(Value::as_str).unwrap_or("");
            let mut n = match avro_type {
                "record" => {
                    let mut n = node("struct");
                    for f in o
                        .get("fields")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        let name = f
                            .get("name")
                            .and_then(Value::as_str)
                            .ok_or("a field has no name")?;
                        n.fields.push(connect_node(&f["type"], Some(name), false)?);
                    }
                    n
                }
                "array" => node("array"),
                "map" => node("map"),
                "enum" => node("string"),
                "fixed" => node("bytes"),
                t => node(primitive(t, o.get("connect.type").and_then(Value::as_str))?),
            };
            n.name = o
                .get("connect.name")
                .and_then(Value::as_str)
                .map(str::to_string);
            n.parameters = o
                .get("connect.parameters")
                .and_then(Value::as_object)
                .cloned();
            Ok(n)
        }
        other => Err(format!("unexpected Avro type {other}")),
    }
}

fn primitive(avro: &str, connect: Option<&str>) -> Result<&'static str, String> {
    Ok(match (avro, connect) {
        ("int", Some("int8")) => "int8",
        ("int", Some("int16")) => "int16",
        ("int", _) => "int32",
        ("long", _) => "int64",
        ("float", _) => "float32",
        ("double", _) => "float64",
        ("boolean", _) => "boolean",
        ("string", _) => "string",
        ("bytes", _) => "bytes",
        (other, _) => return Err(format!("unsupported Avro type `{other}`")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::{ColumnType, Op};
    use apache_avro::types::Record;
    use apache_avro::types::Value as Avro;

    const ROW: &str = r#"{"type":"record","name":"Value","fields":[
        {"name":"id","type":{"type":"long","connect.default":0},"default":0},
        {"name":"amount","type":["null",{"type":"bytes","scale":2,"precision":12,
            "connect.version":1,"connect.parameters":{"scale":"2","connect.decimal.precision":"12"},
            "connect.name":"org.apache.kafka.connect.data.Decimal","logicalType":"decimal"}],"default":null},
        {"name":"note","type":["null","string"],"default":null},
        {"name":"created_at","type":{"type":"long","connect.version":1,
            "connect.name":"io.debezium.time.MicroTimestamp"}}]}"#;

    fn envelope_schema() -> String {
        format!(
            r#"{{"type":"record","name":"Envelope","namespace":"t","fields":[
            {{"name":"before","type":["null",{ROW}],"default":null}},
            {{"name":"after","type":["null","Value"],"default":null}},
            {{"name":"source","type":{{"type":"record","name":"Source","fields":[
                {{"name":"schema","type":"string"}},{{"name":"table","type":"string"}},
                {{"name":"lsn","type":["null","long"],"default":null}},
                {{"name":"ts_ms","type":"long"}}]}}}},
            {{"name":"op","type":"string"}}]}}"#
        )
    }

    const KEY: &str = r#"{"type":"record","name":"Key","fields":[{"name":"id","type":"long"}]}"#;

    fn framed(id: u32, schema: &apache_avro::Schema, value: Avro) -> Vec<u8> {
        let mut out = vec![MAGIC];
        out.extend_from_slice(&id.to_be_bytes());
        let writer = apache_avro::writer::datum::GenericDatumWriter::builder(schema)
            .build()
            .unwrap();
        out.extend(writer.write_value_to_vec(value).unwrap());
        out
    }

    fn decoder() -> (AvroDecoder, apache_avro::Schema, apache_avro::Schema) {
        let mut d = AvroDecoder::new(None);
        d.learn(1, Fetched::Schema(KEY.into()));
        d.learn(2, Fetched::Schema(envelope_schema()));
        let key = apache_avro::Schema::parse_str(KEY).unwrap();
        let value = apache_avro::Schema::parse_str(&envelope_schema()).unwrap();
        (d, key, value)
    }

    fn insert_event(value_schema: &apache_avro::Schema) -> Avro {
        let apache_avro::Schema::Record(rs) = value_schema else {
            panic!()
        };
        let row_schema = match &rs.fields[0].schema {
            apache_avro::Schema::Union(u) => u.variants()[1].clone(),
            _ => panic!(),
        };
        let mut row = Record::new(&row_schema).unwrap();
        row.put("id", 7i64);
        // 1250 at scale 2.
        row.put(
            "amount",
            Avro::Union(1, Box::new(Avro::Decimal(vec![0x04, 0xE2].into()))),
        );
        row.put("note", Avro::Union(1, Box::new(Avro::String("hi".into()))));
        row.put("created_at", 1_700_000_000_123_456i64);
        let source_schema = rs.fields[2].schema.clone();
        let mut source = Record::new(&source_schema).unwrap();
        source.put("schema", "public");
        source.put("table", "t");
        source.put("lsn", Avro::Union(1, Box::new(Avro::Long(42))));
        source.put("ts_ms", 5i64);
        let mut env = Record::new(value_schema).unwrap();
        env.put("before", Avro::Union(0, Box::new(Avro::Null)));
        env.put("after", Avro::Union(1, Box::new(row.into())));
        env.put("source", Avro::from(source));
        env.put("op", "c");
        env.into()
    }

    #[test]
    fn decodes_an_insert_with_typed_columns() {
        let (mut d, key_schema, value_schema) = decoder();
        let mut key = Record::new(&key_schema).unwrap();
        key.put("id", 7i64);
        let key = framed(1, &key_schema, key.into());
        let value = framed(2, &value_schema, insert_event(&value_schema));
        let Decoded::Change(c) = d
            .decode(Some(&key), Some(&value), KafkaPosition::default())
            .unwrap()
        else {
            panic!("expected a change")
        };
        assert_eq!(c.op, Op::Create);
        assert_eq!(&*c.table.table, "t");
        assert_eq!(c.position.lsn, 42);
        assert_eq!(c.key, vec![(Arc::from("id"), Value::from(7))]);
        let after = c.after.unwrap();
        let types: Vec<_> = after.columns.iter().map(|c| c.ty.clone()).collect();
        assert_eq!(
            types,
            vec![
                ColumnType::Integer,
                ColumnType::Decimal {
                    precision: Some(12),
                    scale: 2
                },
                ColumnType::Text,
                ColumnType::Timestamp
            ]
        );
        assert_eq!(
            after.get("amount"),
            Some(&Cell::Value(Value::from("12.50")))
        );
        assert_eq!(
            after.get("created_at"),
            Some(&Cell::Value(Value::from("2023-11-14T22:13:20.123456")))
        );
    }

    #[test]
    fn unknown_and_unfetched_ids_are_clear_errors() {
        let (mut d, _, _) = decoder();
        d.learn(9, Fetched::Unknown);
        let msg = [MAGIC, 0, 0, 0, 9, 0];
        let err = d
            .decode(None, Some(&msg), KafkaPosition::default())
            .unwrap_err();
        assert!(err.to_string().contains("schema id 9 is unknown"), "{err}");
        let msg = [MAGIC, 0, 0, 0, 10, 0];
        let err = d
            .decode(None, Some(&msg), KafkaPosition::default())
            .unwrap_err();
        assert!(err.to_string().contains("not fetched"), "{err}");
        let err = d
            .decode(None, Some(b"{}"), KafkaPosition::default())
            .unwrap_err();
        assert!(matches!(err, DecodeError::NotAvro(_)), "{err}");
    }

    #[test]
    fn a_datum_that_does_not_match_its_schema_is_refused() {
        let (mut d, _, _) = decoder();
        let msg = [MAGIC, 0, 0, 0, 2, 0xFF, 0xFF];
        let err = d
            .decode(None, Some(&msg), KafkaPosition::default())
            .unwrap_err();
        assert!(matches!(err, DecodeError::NotAvro(_)), "{err}");
    }

    #[tokio::test]
    async fn an_unknown_id_is_refused_for_a_while_then_asked_again() {
        use crate::config::RegistryConfig;
        use crate::decode::registry::fake::FakeRegistry;
        // Id 5 is unknown for its first three questions (one fetch), then registered.
        let fake = FakeRegistry::start(|_, nth, _| {
            if nth <= 3 {
                (404, r#"{"error_code":40403}"#.to_string())
            } else {
                (200, serde_json::json!({ "schema": KEY }).to_string())
            }
        })
        .await;
        let cfg = RegistryConfig {
            url: Some(fake.url.clone()),
            ..RegistryConfig::default()
        };
        let registry = SchemaRegistry::new(&cfg)
            .unwrap()
            .unwrap()
            .with_unknown_id_retry_delays(vec![Duration::from_millis(5); 2]);
        let mut d = AvroDecoder::new(Some(registry));
        let key = [MAGIC, 0, 0, 0, 5];
        d.fetch_missing(Some(&key), None).await.unwrap();
        assert_eq!(fake.asked(5), 3);
        // Within the refusal's lifetime the message is refused (dead-lettered) without asking.
        d.fetch_missing(Some(&key), None).await.unwrap();
        assert_eq!(fake.asked(5), 3);
        let err = d.schema(5).err().expect("refused");
        assert!(err.to_string().contains("schema id 5 is unknown"), "{err}");
        // Once it expired, the next message asks again and finds the schema.
        d.unknown_id_ttl = Duration::ZERO;
        d.learn(5, Fetched::Unknown);
        d.fetch_missing(Some(&key), None).await.unwrap();
        assert_eq!(fake.asked(5), 4);
        assert!(d.schema(5).is_ok());
        assert_eq!(d.cached_schemas(), 1);
        assert_eq!(d.order, vec![5]);
    }

    #[tokio::test]
    async fn refused_registry_credentials_stop_rather_than_dead_letter() {
        use crate::config::{RegistryConfig, Secret};
        use crate::decode::registry::fake::FakeRegistry;
        let fake = FakeRegistry::start(|_, _, _| (401, String::new())).await;
        let cfg = RegistryConfig {
            url: Some(fake.url.clone()),
            user: Some("floe".into()),
            password: Some(Secret::new("PLANTED-pw")),
            ..RegistryConfig::default()
        };
        let mut d = AvroDecoder::new(SchemaRegistry::new(&cfg).unwrap());
        let msg = [MAGIC, 0, 0, 0, 6, 0];
        let err = d.fetch_missing(None, Some(&msg)).await.unwrap_err();
        assert!(!err.is_transient(), "{err}");
        assert!(err.to_string().contains("registry.password"), "{err}");
        assert!(!err.to_string().contains("PLANTED"), "{err}");
        assert_eq!(d.cached_schemas(), 0, "nothing is remembered about the id");
    }

    #[test]
    fn fetching_without_a_registry_names_the_setting() {
        let mut d = AvroDecoder::new(None);
        let msg = [MAGIC, 0, 0, 0, 3, 0];
        let err = futures::executor::block_on(d.fetch_missing(None, Some(&msg))).unwrap_err();
        assert!(!err.is_transient());
        assert!(err.to_string().contains("registry.url"), "{err}");
    }
}
