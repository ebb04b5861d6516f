//! The dead-letter path: a message floe cannot load goes to the dead-letter topic unchanged
//! (same key and value), with headers saying why and where it came from, so a user can inspect
//! and replay it. Its offset is committed only after the dead-letter topic acknowledged it.
//!
//! A message too large for the dead-letter topic (a source topic may allow larger messages)
//! is still recorded rather than retried forever: it is sent again with its value cut to fit,
//! marked `floe.truncated` with its `floe.original.size`; the reason and origin headers are kept
//! whole, so the full message can be read from the source topic while it retains it.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::config::KafkaConfig;
use crate::source::kafka::client_config;

/// Header names on dead-lettered messages.
pub const HEADER_REASON: &str = "floe.reason";
pub const HEADER_STAGE: &str = "floe.stage";
pub const HEADER_TOPIC: &str = "floe.source.topic";
pub const HEADER_PARTITION: &str = "floe.source.partition";
pub const HEADER_OFFSET: &str = "floe.source.offset";
/// The plugin that rejected the message or faulted on it (stage `plugin`).
pub const HEADER_PLUGIN: &str = "floe.plugin";
/// `true` on a dead letter whose value was cut to fit the dead-letter topic.
pub const HEADER_TRUNCATED: &str = "floe.truncated";
/// The size in bytes of the value before it was cut.
pub const HEADER_ORIGINAL_SIZE: &str = "floe.original.size";
/// The size in bytes of a key that was left out of a cut dead letter (too large to keep).
pub const HEADER_ORIGINAL_KEY_SIZE: &str = "floe.original.key.size";

/// The largest dead letter when librdkafka's `message.max.bytes` is not set: under its default
/// (1,000,000) and the broker's (1,048,588 per topic).
const DEFAULT_MESSAGE_LIMIT: usize = 900 * 1024;
/// Room for what a record holds besides key, value and header bytes (record and batch framing,
/// length varints); librdkafka counts these against `message.max.bytes` too.
const FRAMING: usize = 1024;
/// A key up to this size is kept on a cut dead letter; a larger one is left out (a cut key
/// would be a different key).
const SMALL_KEY: usize = 4 * 1024;

/// Why a message could not be dead-lettered (the pipeline retries; nothing is committed).
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// The producer could not be created (a refused property is named, not its value).
    #[error("dead-letter producer setup: {}", without_value(.0))]
    Setup(rdkafka::error::KafkaError),
    /// The dead-letter topic did not acknowledge the message.
    #[error("dead-letter topic {topic} did not accept the message: {reason}")]
    Send { topic: String, reason: String },
}

/// Where the run loop sends a message it cannot load, and waits until it is kept: the Kafka
/// dead-letter topic ([`DeadLetters`]), or [`MemoryDeadLetters`] in unit tests.
pub trait DeadLetterQueue: Send + Sync {
    /// Where dead letters go, for logs.
    fn topic(&self) -> &str;
    /// Sends `msg` unchanged, with why (`stage`, `reason`, the refusing `plugin`).
    fn send_with(
        &self,
        msg: &OwnedMessage,
        stage: &str,
        reason: &str,
        plugin: Option<&str>,
    ) -> impl Future<Output = Result<(), DlqError>> + Send;
}

/// Writes messages to the dead-letter topic.
pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
    /// The largest message the producer accepts (`message.max.bytes`).
    limit: usize,
}

impl DeadLetters {
    pub fn new(cfg: &KafkaConfig) -> Result<Self, DlqError> {
        let producer: FutureProducer = client_config(cfg)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "30000")
            .create()
            .map_err(DlqError::Setup)?;
        Ok(DeadLetters {
            producer,
            topic: cfg.dlq_topic.clone(),
            limit: message_limit(cfg),
        })
    }

    /// Sends `msg` to the dead-letter topic and waits for the acknowledgement, naming the
    /// plugin that refused it, if one did. A message refused as too large is sent again cut
    /// (see [`cuts`]).
    pub async fn send_message<M: Message>(
        &self,
        msg: &M,
        stage: &str,
        reason: &str,
        plugin: Option<&str>,
    ) -> Result<(), DlqError> {
        let partition = msg.partition().to_string();
        let offset = msg.offset().to_string();
        let mut fields = vec![
            (HEADER_REASON, reason),
            (HEADER_STAGE, stage),
            (HEADER_TOPIC, msg.topic()),
            (HEADER_PARTITION, &partition),
            (HEADER_OFFSET, &offset),
        ];
        if let Some(p) = plugin {
            fields.push((HEADER_PLUGIN, p));
        }
        let (key, value) = (msg.key(), msg.payload());
        let refused = match self.produce(key, value, headers(&fields)).await {
            Ok(()) => return Ok(()),
            Err(e) if is_too_large(&e) => e,
            Err(e) => return Err(self.send_error(&e)),
        };
        let (key_len, value_len) = (key.map_or(0, <[u8]>::len), value.map_or(0, <[u8]>::len));
        tracing::warn!(error = %refused, size = key_len + value_len, dlq = %self.topic,
            "dead letter too large for its topic; sending it with its value cut");
        let original_size = value_len.to_string();
        let original_key_size = key_len.to_string();
        fields.push((HEADER_TRUNCATED, "true"));
        fields.push((HEADER_ORIGINAL_SIZE, &original_size));
        let mut last = refused;
        for cut in cuts(self.limit, key_len, fields_len(&fields), value_len) {
            let mut cut_fields = fields.clone();
            if !cut.keep_key && key.is_some() {
                cut_fields.push((HEADER_ORIGINAL_KEY_SIZE, &original_key_size));
            }
            let key = key.filter(|_| cut.keep_key);
            let value = value.map(|v| &v[..cut.value.min(v.len())]);
            match self.produce(key, value, headers(&cut_fields)).await {
                Ok(()) => return Ok(()),
                Err(e) if is_too_large(&e) => last = e,
                Err(e) => return Err(self.send_error(&e)),
            }
        }
        // Even the headers alone are too large: the reason is kept whole on purpose, so this
        // takes a reason of about `message.max.bytes`; retrying will not help, but nothing
        // floe could drop would.
        Err(self.send_error(&last))
    }

    async fn produce(
        &self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: OwnedHeaders,
    ) -> Result<(), KafkaError> {
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.topic).headers(headers);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(v) = value {
            record = record.payload(v);
        }
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map(|_| ())
            .map_err(|(e, _)| e)
    }

    fn send_error(&self, e: &KafkaError) -> DlqError {
        DlqError::Send {
            topic: self.topic.clone(),
            reason: e.to_string(),
        }
    }
}

impl DeadLetterQueue for DeadLetters {
    fn topic(&self) -> &str {
        &self.topic
    }

    async fn send_with(
        &self,
        msg: &OwnedMessage,
        stage: &str,
        reason: &str,
        plugin: Option<&str>,
    ) -> Result<(), DlqError> {
        self.send_message(msg, stage, reason, plugin).await
    }
}

/// One message kept by [`MemoryDeadLetters`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub stage: String,
    pub reason: String,
    pub plugin: Option<String>,
}

/// An in-memory dead-letter queue for the run loop's unit tests; clones share what was sent.
/// While `refusing` is set, every send fails as an unreachable topic would.
#[derive(Clone, Default)]
pub struct MemoryDeadLetters {
    sent: Arc<Mutex<Vec<DeadLetter>>>,
    refusing: Arc<std::sync::atomic::AtomicBool>,
}

impl MemoryDeadLetters {
    /// Everything sent so far, in order.
    pub fn sent(&self) -> Vec<DeadLetter> {
        self.sent.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Makes every send fail (`true`) or succeed again.
    pub fn refuse(&self, refusing: bool) {
        self.refusing
            .store(refusing, std::sync::atomic::Ordering::Relaxed);
    }
}

impl DeadLetterQueue for MemoryDeadLetters {
    fn topic(&self) -> &str {
        "memory-dlq"
    }

    async fn send_with(
        &self,
        msg: &OwnedMessage,
        stage: &str,
        reason: &str,
        plugin: Option<&str>,
    ) -> Result<(), DlqError> {
        if self.refusing.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(DlqError::Send {
                topic: self.topic().to_string(),
                reason: "refusing on purpose".into(),
            });
        }
        {
            let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
            sent.push(DeadLetter {
                topic: msg.topic().to_string(),
                partition: msg.partition(),
                offset: msg.offset(),
                stage: stage.to_string(),
                reason: reason.to_string(),
                plugin: plugin.map(str::to_string),
            });
        }
        Ok(())
    }
}

/// A Kafka client error without the value of the property it refused: librdkafka quotes it,
/// and a misplaced secret (a Java-only `sasl.jaas.config`, say) would be printed.
fn without_value(e: &KafkaError) -> String {
    match e {
        KafkaError::ClientConfig(_, desc, key, value) => {
            let desc = if value.is_empty() {
                desc.clone()
            } else {
                desc.replace(value.as_str(), "***")
            };
            format!("client config error: {desc} (property `{key}`)")
        }
        other => other.to_string(),
    }
}

/// The producer's `message.max.bytes` from `kafka.properties`, or [`DEFAULT_MESSAGE_LIMIT`].
fn message_limit(cfg: &KafkaConfig) -> usize {
    cfg.properties
        .get("message.max.bytes")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_MESSAGE_LIMIT)
}

/// Whether the producer (its `message.max.bytes`) or the broker (the topic's
/// `max.message.bytes`) refused a message for its size.
fn is_too_large(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::MessageBatchTooLarge)
    )
}

fn headers(fields: &[(&str, &str)]) -> OwnedHeaders {
    fields.iter().fold(OwnedHeaders::new(), |h, (key, value)| {
        h.insert(Header {
            key,
            value: Some(*value),
        })
    })
}

/// The bytes headers take in a record: names, values and two length varints each.
fn fields_len(fields: &[(&str, &str)]) -> usize {
    fields.iter().map(|(k, v)| k.len() + v.len() + 10).sum()
}

/// One more try at a dead letter refused as too large.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cut {
    /// How many bytes of the value are kept (from its start).
    value: usize,
    /// Whether the key is kept.
    keep_key: bool,
}

/// The tries for a dead letter refused as too large, largest first: the value cut to what fits
/// `limit` beside the headers (`headers_len`, the truncation headers included) and the key
/// (kept if at most [`SMALL_KEY`]); then a quarter of that each time it is refused again (the
/// topic's own limit may be lower than the producer's); last, neither value nor key.
fn cuts(limit: usize, key_len: usize, headers_len: usize, value_len: usize) -> Vec<Cut> {
    let keep_key = key_len <= SMALL_KEY;
    let kept_key = if keep_key { key_len } else { 0 };
    let fits = limit.saturating_sub(FRAMING + headers_len + kept_key);
    // Nothing to cut by floe's count means the broker allows less: start below the original.
    let mut value = if fits < value_len {
        fits
    } else {
        value_len / 4
    };
    let mut tries = Vec::new();
    while value > 0 {
        tries.push(Cut { value, keep_key });
        value /= 4;
    }
    if keep_key && key_len > 0 {
        tries.push(Cut {
            value: 0,
            keep_key: true,
        });
    }
    tries.push(Cut {
        value: 0,
        keep_key: false,
    });
    tries
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::Headers as _;

    #[test]
    fn a_cut_dead_letter_fits_the_limit_and_shrinks_to_nothing() {
        let (limit, key, hdrs, value) = (1_000_000, 120, 600, 5_000_000);
        let tries = cuts(limit, key, hdrs, value);
        let first = tries[0];
        assert!(first.keep_key);
        assert!(first.value + key + hdrs + FRAMING <= limit, "{first:?}");
        assert!(
            first.value > limit - 2 * FRAMING - key - hdrs,
            "cut no more than needed"
        );
        assert!(
            tries.windows(2).all(|w| w[1].value < w[0].value
                || (w[1].value == 0 && w[0].value == 0 && !w[1].keep_key)),
            "{tries:?}"
        );
        assert!(tries.len() < 16, "a handful of tries: {tries:?}");
        assert_eq!(
            tries.last(),
            Some(&Cut {
                value: 0,
                keep_key: false
            })
        );
    }

    #[test]
    fn a_large_key_is_left_out_and_a_fitting_value_is_still_cut() {
        // A key over SMALL_KEY is dropped from every try; the room it took goes to the value.
        let tries = cuts(1_000_000, 100_000, 600, 5_000_000);
        assert!(tries.iter().all(|c| !c.keep_key), "{tries:?}");
        assert_eq!(tries[0].value, 1_000_000 - FRAMING - 600);
        // A value that fits by floe's count was refused by the broker's smaller limit: the
        // first try is already smaller than the original.
        let tries = cuts(1_000_000, 10, 100, 500_000);
        assert_eq!(tries[0].value, 125_000);
        // Headers alone over the limit: only empty tries are left.
        let tries = cuts(1_000, 10, 2_000, 50_000);
        assert!(tries.iter().all(|c| c.value == 0), "{tries:?}");
    }

    #[test]
    fn size_refusals_are_recognised() {
        let producer = |code| KafkaError::MessageProduction(code);
        assert!(is_too_large(&producer(
            RDKafkaErrorCode::MessageSizeTooLarge
        )));
        assert!(is_too_large(&producer(
            RDKafkaErrorCode::MessageBatchTooLarge
        )));
        assert!(!is_too_large(&producer(RDKafkaErrorCode::MessageTimedOut)));
        assert!(!is_too_large(&producer(
            RDKafkaErrorCode::UnknownTopicOrPartition
        )));
    }

    #[test]
    fn a_refused_property_is_named_without_its_value() {
        let mut cfg: KafkaConfig = toml::from_str("brokers = \"b\"\ntopics = [\"t\"]").unwrap();
        cfg.properties.insert(
            "sasl.jaas.config".into(),
            "PlainLoginModule required password=\"PLANTED\";".into(),
        );
        cfg.properties
            .insert("session.timeout.ms".into(), "PLANTED-number".into());
        for (key, value) in cfg.properties.clone() {
            let mut one = cfg.clone();
            one.properties.retain(|k, _| *k == key);
            let Err(err) = DeadLetters::new(&one) else {
                panic!("librdkafka accepted {key} = {value}");
            };
            let text = err.to_string();
            assert!(text.contains(&key), "{text}");
            assert!(!text.contains("PLANTED"), "{text}");
        }
    }

    #[test]
    fn the_limit_is_the_producers_message_max_bytes() {
        let mut cfg: KafkaConfig = toml::from_str(
            r#"
brokers = "b"
topics = ["t"]
"#,
        )
        .unwrap();
        assert_eq!(message_limit(&cfg), DEFAULT_MESSAGE_LIMIT);
        cfg.properties
            .insert("message.max.bytes".into(), "2000000".into());
        assert_eq!(message_limit(&cfg), 2_000_000);
        cfg.properties
            .insert("message.max.bytes".into(), "lots".into());
        assert_eq!(message_limit(&cfg), DEFAULT_MESSAGE_LIMIT);
    }

    #[test]
    fn headers_are_written_in_order_and_counted() {
        let fields = [
            (HEADER_REASON, "a reason"),
            (HEADER_TRUNCATED, "true"),
            (HEADER_ORIGINAL_SIZE, "5000000"),
        ];
        let h = headers(&fields);
        assert_eq!(h.count(), 3);
        for (i, (key, value)) in fields.iter().enumerate() {
            let got = h.get(i);
            assert_eq!(got.key, *key);
            assert_eq!(got.value, Some(value.as_bytes()));
        }
        assert_eq!(fields_len(&fields), 11 + 8 + 14 + 4 + 18 + 7 + 30);
    }
}
