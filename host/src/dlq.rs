//! The dead-letter path: a message floe cannot load goes to the dead-letter topic unchanged
//! (same key and value), with headers saying why and where it came from, so a user can inspect
//! and replay it. Its offset is committed only after the dead-letter topic acknowledged it.

use std::time::Duration;

use rdkafka::message::{Header, Message, OwnedHeaders};
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

/// Why a message could not be dead-lettered (the pipeline retries; nothing is committed).
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// The producer could not be created.
    #[error("dead-letter producer setup: {0}")]
    Setup(rdkafka::error::KafkaError),
    /// The dead-letter topic did not acknowledge the message.
    #[error("dead-letter topic {topic} did not accept the message: {reason}")]
    Send { topic: String, reason: String },
}

/// Writes messages to the dead-letter topic.
pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
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
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Sends `msg` to the dead-letter topic and waits for the acknowledgement.
    pub async fn send<M: Message>(
        &self,
        msg: &M,
        stage: &str,
        reason: &str,
    ) -> Result<(), DlqError> {
        self.send_with(msg, stage, reason, None).await
    }

    /// [`DeadLetters::send`], naming the plugin that refused the message.
    pub async fn send_with<M: Message>(
        &self,
        msg: &M,
        stage: &str,
        reason: &str,
        plugin: Option<&str>,
    ) -> Result<(), DlqError> {
        let partition = msg.partition().to_string();
        let offset = msg.offset().to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: HEADER_REASON,
                value: Some(reason),
            })
            .insert(Header {
                key: HEADER_STAGE,
                value: Some(stage),
            })
            .insert(Header {
                key: HEADER_TOPIC,
                value: Some(msg.topic()),
            })
            .insert(Header {
                key: HEADER_PARTITION,
                value: Some(&partition),
            })
            .insert(Header {
                key: HEADER_OFFSET,
                value: Some(&offset),
            });
        let headers = match plugin {
            Some(p) => headers.insert(Header {
                key: HEADER_PLUGIN,
                value: Some(p),
            }),
            None => headers,
        };
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.topic).headers(headers);
        if let Some(k) = msg.key() {
            record = record.key(k);
        }
        if let Some(p) = msg.payload() {
            record = record.payload(p);
        }
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map(|_| ())
            .map_err(|(e, _)| DlqError::Send {
                topic: self.topic.clone(),
                reason: e.to_string(),
            })
    }
}
