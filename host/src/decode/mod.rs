//! Decoding: turns the bytes of a Kafka message (key and value) into a [`Change`]. Owns the
//! Debezium envelope and the wire formats; knows nothing about batching or the warehouse.

pub mod avro;
mod avro_reader;
pub mod envelope;
pub mod json;
pub mod registry;
mod scan;
pub mod schema;

pub use avro::AvroDecoder;
pub use json::JsonDecoder;
pub use registry::{RegistryError, SchemaRegistry};

use crate::change::{Change, KafkaPosition};
use crate::config::WireFormatChoice;

/// Why a message could not be decoded. The message goes to the dead-letter topic with this
/// reason; the stream goes on.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The value is not valid JSON.
    #[error("value is not valid JSON: {0}")]
    NotJson(String),
    /// The key is not valid JSON or has no fields.
    #[error("key is not a valid Debezium key: {0}")]
    BadKey(String),
    /// The JSON is not a Debezium change envelope.
    #[error("not a Debezium change event: {0}")]
    NotEnvelope(String),
    /// The embedded Kafka Connect schema cannot be understood.
    #[error("unsupported Kafka Connect schema: {0}")]
    BadSchema(String),
    /// Not Avro in Confluent's wire format, or the datum does not match its writer schema.
    #[error("not a valid Avro message: {0}")]
    NotAvro(String),
    /// The writer schema is unknown to the registry or unusable.
    #[error("{0}")]
    Schema(String),
    /// A field value does not match its declared type.
    #[error("field `{field}`: {reason}")]
    BadValue { field: String, reason: String },
}

/// What a Kafka message turned out to be.
#[derive(Debug)]
pub enum Decoded {
    /// A change to load.
    Change(Box<Change>),
    /// A tombstone (null value) that Debezium sends after a delete for log compaction.
    Tombstone,
}

/// Decodes every topic's messages: JSON or Avro, configured per topic or detected per message
/// (a message in Confluent's wire format starts with a zero byte, a JSON one with `{`).
pub struct Decoder {
    json: JsonDecoder,
    avro: AvroDecoder,
    default: WireFormatChoice,
    per_topic: std::collections::BTreeMap<String, WireFormatChoice>,
}

impl Decoder {
    pub fn new(
        registry: Option<SchemaRegistry>,
        default: WireFormatChoice,
        per_topic: std::collections::BTreeMap<String, WireFormatChoice>,
    ) -> Self {
        Decoder {
            json: JsonDecoder::new(),
            avro: AvroDecoder::new(registry),
            default,
            per_topic,
        }
    }

    fn is_avro(&self, topic: &str, value: Option<&[u8]>) -> bool {
        match self.per_topic.get(topic).copied().unwrap_or(self.default) {
            WireFormatChoice::Json => false,
            WireFormatChoice::Avro => true,
            WireFormatChoice::Auto => value.is_some_and(|v| v.first() == Some(&avro::MAGIC)),
        }
    }

    /// Makes sure the writer schemas an Avro message needs are at hand (fetched from the
    /// registry); nothing to do for JSON. An error means the registry could not answer.
    pub async fn prepare(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<(), RegistryError> {
        if self.is_avro(topic, value) {
            self.avro.fetch_missing(key, value).await
        } else {
            Ok(())
        }
    }

    /// Whether the message can be decoded without a registry call ([`Decoder::prepare`] would
    /// do nothing).
    pub fn is_prepared(&self, topic: &str, key: Option<&[u8]>, value: Option<&[u8]>) -> bool {
        !self.is_avro(topic, value) || self.avro.has_schemas(key, value)
    }

    /// Decodes one message ([`Decoder::prepare`] first). `value` is `None` for a tombstone.
    pub fn decode(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        kafka: KafkaPosition,
    ) -> Result<Decoded, DecodeError> {
        if self.is_avro(topic, value) {
            self.avro.decode(key, value, kafka)
        } else {
            self.json.decode(key, value, kafka)
        }
    }
}
