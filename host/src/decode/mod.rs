//! Decoding: turns the bytes of a Kafka message (key and value) into a [`Change`]. Owns the
//! Debezium envelope and the wire formats; knows nothing about batching or the warehouse.

pub mod envelope;
pub mod json;
pub mod schema;

pub use json::JsonDecoder;

use crate::change::Change;

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
