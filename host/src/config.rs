//! Configuration: one TOML file, overridden by the environment. Owns parsing, defaults and
//! validation; an unknown or invalid key is refused with its name.
//!
//! Secrets are never printed: typed secrets are [`Secret`]s, and the free-form settings
//! (`kafka.properties`, `kafka.consumer_properties`, plugin settings) are masked by name (see
//! [`is_secret_name`]) wherever the config is formatted (`Debug`, [`Config::masked`]). Config
//! errors name the key and the expected type, never the value: a value in the wrong place may
//! be a secret.
//!
//! Environment overrides, strongest first:
//! - `FLOE__SECTION__KEY=value` for any key (e.g. `FLOE__BATCH__MAX_RECORDS=500`); an empty
//!   value removes the key, so an optional setting falls back to unset;
//! - the guide's Snowflake variables: `SNOWFLAKE_ACCOUNT`, `SNOWFLAKE_USER`, `SNOWFLAKE_PASSWORD`,
//!   `SNOWFLAKE_DATABASE`, `SNOWFLAKE_SCHEMA`, `SNOWFLAKE_WAREHOUSE`, `SNOWFLAKE_ROLE`, plus
//!   `SNOWFLAKE_PRIVATE_KEY_PATH`, `SNOWFLAKE_PRIVATE_KEY_PASSPHRASE` and `SNOWFLAKE_ENDPOINT`;
//! - `BATCH_SIZE` and `BATCH_TIMEOUT` (seconds), as in the guide's `.env`;
//! - `SCHEMA_REGISTRY_URL` and `SCHEMA_REGISTRY_PASSWORD` for the Avro schema registry.
//!
//! A `.env` file in the working directory is read into the environment first, if present.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The TOML is malformed, or a key is unknown or has the wrong type.
    #[error("invalid config: {0}")]
    Invalid(String),
    /// An environment override names something that is not a config key.
    #[error("invalid environment override {var}: {reason}")]
    Override { var: String, reason: String },
}

/// A secret value: usable by the code, printed as `***`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

/// A secret is text; a password that looks like a number (`password = 12345`) or a boolean is
/// taken as its text rather than refused. A float is refused: its text would not survive the
/// round trip (`1.50` reads as `1.5`). Errors never quote the value.
impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("text")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Secret, E> {
                Ok(Secret(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Secret, E> {
                Err(E::custom(
                    "expected text, found a floating point number (put the secret in quotes)",
                ))
            }
        }
        d.deserialize_any(Text)
    }
}

/// What a masked value prints as.
const MASK: &str = "***";

/// Whether a setting's name says that its value is a secret, for the free-form settings
/// (`kafka.properties`, `kafka.consumer_properties`, plugin settings). Case and separators do
/// not matter. A name is secret when
/// - it contains `password`, `passwd`, `pwd`, `secret`, `token`, `passphrase`, `credential`,
///   `jaas`, `userinfo` or `authorization` (`sasl.password`, `ssl.key.password`,
///   `sasl.jaas.config`, `sasl.oauthbearer.client.secret`, `api_token`); or
/// - one of its words ends in `key` (`ssl.key.pem`, `api_key`, `apiKey`, `private_key`), unless
///   its last word is `path`, `file`, `location` or `id`: those name where a key is kept or
///   which key it is, not the key (`private_key_path`, `ssl.key.location`, `key_id`).
///
/// Masking a harmless value only hides it from `check-config`; so the rule errs that way.
pub fn is_secret_name(name: &str) -> bool {
    const MARKERS: [&str; 10] = [
        "password",
        "passwd",
        "pwd",
        "secret",
        "token",
        "passphrase",
        "credential",
        "jaas",
        "userinfo",
        "authorization",
    ];
    let squashed: String = name
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect();
    if MARKERS.iter().any(|m| squashed.contains(m)) {
        return true;
    }
    let words = words(name);
    let names_a_key = words.iter().any(|w| w.ends_with("key"));
    let refers_to_it = words
        .last()
        .is_some_and(|w| matches!(w.as_str(), "path" | "file" | "location" | "id"));
    names_a_key && !refers_to_it
}

/// The lower-cased words of a name: split at anything not alphanumeric and at camelCase humps.
fn words(name: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut after_lower = false;
    for c in name.chars() {
        let boundary = !c.is_alphanumeric() || (c.is_uppercase() && after_lower);
        if boundary && !word.is_empty() {
            words.push(std::mem::take(&mut word));
        }
        if c.is_alphanumeric() {
            word.extend(c.to_lowercase());
            after_lower = !c.is_uppercase();
        } else {
            after_lower = false;
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// A string map (librdkafka properties) formatted with secret-named values masked.
struct MaskedProperties<'a>(&'a BTreeMap<String, String>);

impl fmt::Debug for MaskedProperties<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mask = Secret::default();
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| {
                let v: &dyn fmt::Debug = if is_secret_name(k) { &mask } else { v };
                (k, v)
            }))
            .finish()
    }
}

/// Whether a plugin setting is secret: by its name, or named in `also`
/// (`plugins.secret_settings`).
fn is_secret_setting(name: &str, also: &[String]) -> bool {
    is_secret_name(name) || also.iter().any(|a| a.eq_ignore_ascii_case(name))
}

/// Plugin settings with the values of secret keys replaced by `***`, at any depth (see
/// [`is_secret_setting`]).
fn masked_settings(settings: &toml::Table, also: &[String]) -> toml::Table {
    fn value(v: &toml::Value, also: &[String]) -> toml::Value {
        match v {
            toml::Value::Table(t) => toml::Value::Table(masked_settings(t, also)),
            toml::Value::Array(items) => {
                toml::Value::Array(items.iter().map(|i| value(i, also)).collect())
            }
            other => other.clone(),
        }
    }
    settings
        .iter()
        .map(|(k, v)| {
            let secret = is_secret_setting(k, also);
            let v = if secret {
                toml::Value::String(MASK.into())
            } else {
                value(v, also)
            };
            (k.clone(), v)
        })
        .collect()
}

/// The secret values of a configuration, to mask them in text floe did not write: a Kafka
/// client refusing a property quotes its value (a Java-only `sasl.jaas.config`, say).
pub struct KnownSecrets(Vec<String>);

impl KnownSecrets {
    /// `text` with every known secret value replaced by `***`.
    pub fn mask(&self, text: &str) -> String {
        let mut text = text.to_string();
        for secret in &self.0 {
            text = text.replace(secret.as_str(), MASK);
        }
        text
    }
}

impl fmt::Debug for KnownSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KnownSecrets({} values)", self.0.len())
    }
}

/// The text of every scalar in `v` (all of it secret), for [`KnownSecrets`].
fn scalars(v: &toml::Value, out: &mut Vec<String>) {
    match v {
        toml::Value::String(s) => out.push(s.clone()),
        toml::Value::Table(t) => t.values().for_each(|v| scalars(v, out)),
        toml::Value::Array(items) => items.iter().for_each(|v| scalars(v, out)),
        other => out.push(other.to_string()),
    }
}

/// The values of the secret keys in plugin settings, at any depth.
fn secret_settings(settings: &toml::Table, also: &[String], out: &mut Vec<String>) {
    for (k, v) in settings {
        if is_secret_setting(k, also) {
            scalars(v, out);
        } else if let toml::Value::Table(t) = v {
            secret_settings(t, also, out);
        } else if let toml::Value::Array(items) = v {
            for item in items {
                if let toml::Value::Table(t) = item {
                    secret_settings(t, also, out);
                }
            }
        }
    }
}

/// The password in a `scheme://user:password@host` URL.
fn url_password(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let (userinfo, _) = authority.rsplit_once('@')?;
    userinfo.split_once(':').map(|(_, p)| p)
}

/// A `scheme://user:password@host` URL with the password masked (reqwest sends it as basic
/// auth, so it is as secret as `registry.password`).
pub fn masked_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    let user = rest[..at].split(':').next().unwrap_or("");
    format!("{scheme}://{user}:{MASK}{}", &rest[at..])
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub kafka: KafkaConfig,
    #[serde(default)]
    pub batch: BatchConfig,
    pub snowflake: SnowflakeConfig,
    #[serde(default)]
    pub stats: StatsConfig,
    #[serde(default)]
    pub plugins: PluginsConfig,
    #[serde(default)]
    pub registry: RegistryConfig,
    #[serde(default)]
    pub alerts: AlertsConfig,
}

/// The wire format of a topic's messages.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum WireFormatChoice {
    /// Per message: Confluent's Avro wire format (zero magic byte) or JSON.
    #[default]
    Auto,
    /// Kafka Connect's JSON converter, with or without embedded schemas.
    Json,
    /// Avro in Confluent's wire format; writer schemas from the registry.
    Avro,
}

/// The Schema Registry (Confluent REST API) that Avro writer schemas are fetched from.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Base URL, e.g. `http://127.0.0.1:8081/apis/ccompat/v7` (Apicurio) or
    /// `https://psrc-xxxx.confluent.cloud` (Confluent). Unset: Avro messages are refused.
    #[serde(default)]
    pub url: Option<String>,
    /// Basic-auth user (Confluent Cloud: the API key).
    #[serde(default)]
    pub user: Option<String>,
    /// Basic-auth password; prefer `SCHEMA_REGISTRY_PASSWORD` in the environment.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Time allowed for one request before it counts as an outage (and is retried).
    #[serde(default = "default_registry_timeout_ms")]
    pub timeout_ms: u64,
}

impl fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryConfig")
            .field("url", &self.url.as_deref().map(masked_url))
            .field("user", &self.user)
            .field("password", &self.password)
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            url: None,
            user: None,
            password: None,
            timeout_ms: default_registry_timeout_ms(),
        }
    }
}

fn default_state_table() -> String {
    "FLOE_STATE".into()
}

fn default_registry_timeout_ms() -> u64 {
    10_000
}

/// Where changes are read from.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma separated.
    pub brokers: String,
    /// Consumer group; offsets are committed here after each successful load.
    #[serde(default = "default_group")]
    pub group_id: String,
    /// Debezium topics to consume.
    pub topics: Vec<String>,
    /// Dead-letter topic for messages that cannot be decoded.
    #[serde(default = "default_dlq")]
    pub dlq_topic: String,
    /// Extra librdkafka properties for every Kafka client (e.g. `security.protocol`,
    /// `sasl.mechanisms`). `sasl.password` is better given as `KAFKA_SASL_PASSWORD`.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Extra librdkafka properties for the consumer only (e.g. `group.instance.id`).
    #[serde(default)]
    pub consumer_properties: BTreeMap<String, String>,
    /// Wire format of the topics' messages: `auto` (default), `json` or `avro`.
    #[serde(default)]
    pub format: WireFormatChoice,
    /// Per-topic format, overriding `format` (e.g. `"cdc.public.orders" = "avro"`).
    #[serde(default)]
    pub topic_formats: BTreeMap<String, WireFormatChoice>,
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("group_id", &self.group_id)
            .field("topics", &self.topics)
            .field("dlq_topic", &self.dlq_topic)
            .field("properties", &MaskedProperties(&self.properties))
            .field(
                "consumer_properties",
                &MaskedProperties(&self.consumer_properties),
            )
            .field("format", &self.format)
            .field("topic_formats", &self.topic_formats)
            .finish()
    }
}

/// Batch limits: a batch is loaded when it holds `max_records` changes, `max_bytes` of
/// messages, or is `max_wait_ms` old. Under a backlog (a batch full before its time), the
/// next batch may hold twice as many changes, up to `backlog_max_records`; a batch closed by
/// time brings it back to `max_records`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    #[serde(default = "default_max_records")]
    pub max_records: usize,
    #[serde(default = "default_max_wait_ms")]
    pub max_wait_ms: u64,
    /// Kafka message bytes (key and value) per batch: rows of megabytes must not make a batch
    /// of `max_records` take gigabytes.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// The most changes a batch may grow to under a backlog; below `max_records` it is
    /// `max_records` (batches never grow).
    #[serde(default = "default_backlog_max_records")]
    pub backlog_max_records: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_records: default_max_records(),
            max_wait_ms: default_max_wait_ms(),
            max_bytes: default_max_bytes(),
            backlog_max_records: default_backlog_max_records(),
        }
    }
}

/// What a delete on the source does in the warehouse.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum DeleteMode {
    /// Keep the row and set `IS_DELETED = TRUE`.
    #[default]
    Soft,
    /// Remove the row.
    Hard,
}

/// What happens to the records of a table that cannot be loaded (its DDL is refused, a
/// privilege is missing, its name collides with another source's, a column type changed in a
/// way Snowflake cannot follow, ...). Either way the other tables keep loading.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum TableErrorPolicy {
    /// The table's records go to the dead-letter topic with the reason (replay them once the
    /// table is fixed); the table is tried again with every batch.
    #[default]
    DeadLetter,
    /// The table's records wait: its partitions are paused and nothing of them is committed
    /// until the table loads again (tried with backoff).
    Pause,
}

/// The names of the columns floe adds to every target table. Change one when a source table
/// has a column of the same name (floe refuses to load a table whose columns collide).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MetaColumns {
    /// TRUE once the source row was deleted (soft deletes).
    pub is_deleted: String,
    /// Debezium's operation of the last change (`c`, `u`, `d`, `r`, `t`).
    pub operation: String,
    /// Source commit time of the last change.
    pub timestamp: String,
    /// Source LSN of the last change.
    pub lsn: String,
    /// The last change's position in the source's commit order (text; see the README).
    pub position: String,
    /// Kafka partition and offset of the last change.
    pub kafka_partition: String,
    pub kafka_offset: String,
    /// When floe loaded the row.
    pub loaded_at: String,
}

impl Default for MetaColumns {
    fn default() -> Self {
        MetaColumns {
            is_deleted: "IS_DELETED".into(),
            operation: "CDC_OPERATION".into(),
            timestamp: "CDC_TIMESTAMP".into(),
            lsn: "CDC_LSN".into(),
            position: "CDC_POSITION".into(),
            kafka_partition: "CDC_KAFKA_PARTITION".into(),
            kafka_offset: "CDC_KAFKA_OFFSET".into(),
            loaded_at: "CDC_LOADED_AT".into(),
        }
    }
}

impl MetaColumns {
    /// Every name with its config key, in the order floe writes them.
    pub fn named(&self) -> [(&'static str, &str); 8] {
        [
            ("is_deleted", &self.is_deleted),
            ("operation", &self.operation),
            ("timestamp", &self.timestamp),
            ("lsn", &self.lsn),
            ("position", &self.position),
            ("kafka_partition", &self.kafka_partition),
            ("kafka_offset", &self.kafka_offset),
            ("loaded_at", &self.loaded_at),
        ]
    }
}

/// What a `TRUNCATE` on the source does in the warehouse. Debezium sends truncates only when
/// told to (`skipped.operations` without `t`), so by default one that arrives is applied: the
/// warehouse must match the source.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum TruncateMode {
    /// Log it and change nothing.
    Ignore,
    /// Delete (hard mode) or mark deleted (soft mode) every row of the table.
    #[default]
    Apply,
}

/// Where and how changes are loaded.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnowflakeConfig {
    /// Account identifier (e.g. `xyz12345.us-east-1`).
    pub account: String,
    pub user: String,
    /// Password auth. Prefer `SNOWFLAKE_PASSWORD` in the environment.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Key-pair auth: path to a PKCS#8 PEM private key.
    #[serde(default)]
    pub private_key_path: Option<PathBuf>,
    /// Passphrase of an encrypted private key.
    #[serde(default)]
    pub private_key_passphrase: Option<Secret>,
    #[serde(default = "default_database")]
    pub database: String,
    #[serde(default = "default_schema")]
    pub schema: String,
    #[serde(default)]
    pub warehouse: Option<String>,
    #[serde(default)]
    pub role: Option<String>,
    /// Base URL override (PrivateLink, a local emulator); default is the account's URL.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// One target table for every source table (overrides the naming rule below).
    #[serde(default)]
    pub table: Option<String>,
    /// The naming rule for target tables: `{schema}` and `{table}` are the source's names; the
    /// result is upper-cased. Unset: `{table}` for tables of the `public` schema and
    /// `{schema}_{table}` for the others, so equal table names in two schemas stay apart.
    #[serde(default)]
    pub table_name: Option<String>,
    /// Per-topic target names, overriding the rule: `"cdc.shop.orders" = "ORDERS"`; a key may
    /// also be the source table as `schema.table`. Used as written (no upper-casing).
    #[serde(default)]
    pub tables: BTreeMap<String, String>,
    #[serde(default)]
    pub delete_mode: DeleteMode,
    #[serde(default)]
    pub truncate: TruncateMode,
    /// SQL file run once after the target table is created (e.g. `sql/views.sql`).
    #[serde(default)]
    pub views_file: Option<PathBuf>,
    /// How long one statement may take before it counts as failed.
    #[serde(default = "default_query_timeout")]
    pub query_timeout_secs: u64,
    /// Snowflake sessions that load tables at once. Each table stays on one session (its
    /// loads stay in order); a batch's tables load concurrently over them, so a batch of many
    /// tables costs about one round trip instead of one per table.
    #[serde(default = "default_sessions")]
    pub sessions: usize,
    /// Names of the columns floe adds to each target table.
    #[serde(default)]
    pub columns: MetaColumns,
    /// floe's own table (beside the targets): which source owns each target name, and where a
    /// source TRUNCATE cut each table, so that every floe process and every restart agree.
    #[serde(default = "default_state_table")]
    pub state_table: String,
    /// What happens to a table's records while the table cannot be loaded.
    #[serde(default)]
    pub on_table_error: TableErrorPolicy,
}

/// The periodic stats line and the Prometheus endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsConfig {
    #[serde(default = "default_stats_interval")]
    pub interval_secs: u64,
    /// Address for a Prometheus `/metrics` endpoint (e.g. `127.0.0.1:9464`); off when unset.
    #[serde(default)]
    pub prometheus_listen: Option<String>,
}

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig {
            interval_secs: default_stats_interval(),
            prometheus_listen: None,
        }
    }
}

/// Alerts through a webhook (see [`crate::alerts`]); off without `webhook_url`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Where alerts are POSTed (a Slack incoming webhook, or any JSON endpoint); a secret:
    /// prefer `ALERT_WEBHOOK_URL` in the environment.
    #[serde(default)]
    pub webhook_url: Option<Secret>,
    #[serde(default)]
    pub webhook_format: WebhookFormat,
    /// Progress stalled: consumer lag above 0 and nothing loaded, dead-lettered or skipped for
    /// this long. Also how long floe must stay not ready (`/readyz`) before that alerts.
    #[serde(default = "default_stall_secs")]
    pub stall_secs: u64,
    /// Consumer lag (messages) above which an alert fires; off when unset.
    #[serde(default)]
    pub lag_above: Option<i64>,
    /// An alert still firing is sent again after this long, never more often.
    #[serde(default = "default_repeat_secs")]
    pub repeat_secs: u64,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            webhook_url: None,
            webhook_format: WebhookFormat::default(),
            stall_secs: default_stall_secs(),
            lag_above: None,
            repeat_secs: default_repeat_secs(),
        }
    }
}

fn default_stall_secs() -> u64 {
    300
}

fn default_repeat_secs() -> u64 {
    3600
}

/// The body an alert webhook gets.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// Slack's incoming-webhook format: `{"text": "..."}`.
    #[default]
    Slack,
    /// `{"source", "group", "alert", "state", "summary", "at_unix_ms"}`.
    Json,
}

/// The Wasm plugin chain every change passes through between decode and batch.
#[derive(Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PluginsConfig {
    /// What a plugin fault (trap, deadline, memory or fuel exhausted) does to the changes it was
    /// given: send them to the dead-letter path, or pause the pipeline until the plugin works.
    #[serde(default)]
    pub on_fault: FaultPolicy,
    /// Where compiled plugins are cached, by content hash (default: a `floe-plugin-cache` folder
    /// in the system's temporary directory).
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    /// How often the config file and plugin files are checked for changes (hot swap); 0 turns
    /// watching off (SIGHUP still reloads).
    #[serde(default = "default_watch_ms")]
    pub watch_interval_ms: u64,
    /// The plugins, in the order changes pass through them.
    #[serde(default)]
    pub chain: Vec<PluginConfig>,
    /// Plugin setting names whose values are secret although their names do not say so (see
    /// [`is_secret_name`]), e.g. `["dsn"]`: masked in every plugin's settings, at any depth.
    #[serde(default)]
    pub secret_settings: Vec<String>,
}

impl fmt::Debug for PluginsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Chain<'a>(&'a PluginsConfig);
        impl fmt::Debug for Chain<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_list()
                    .entries(
                        self.0
                            .chain
                            .iter()
                            .map(|p| p.masked(&self.0.secret_settings)),
                    )
                    .finish()
            }
        }
        f.debug_struct("PluginsConfig")
            .field("on_fault", &self.on_fault)
            .field("cache_dir", &self.cache_dir)
            .field("watch_interval_ms", &self.watch_interval_ms)
            .field("chain", &Chain(self))
            .field("secret_settings", &self.secret_settings)
            .finish()
    }
}

/// What a plugin fault does.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FaultPolicy {
    /// The batch's changes go to the dead-letter topic and rejects table (`plugin-fault`).
    #[default]
    DeadLetter,
    /// Nothing moves: the batch is retried with backoff (a hot-swapped fix resumes it).
    Pause,
}

/// One plugin of the chain.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Name in logs, metrics and the rejects table (default: the file name without `.wasm`).
    #[serde(default)]
    pub name: Option<String>,
    /// The plugin component (`.wasm`).
    pub path: PathBuf,
    /// Tables it applies to, as `schema.table` or `table`; all tables when empty.
    #[serde(default)]
    pub tables: Vec<String>,
    /// Linear memory limit in MiB.
    #[serde(default = "default_plugin_memory_mb")]
    pub memory_mb: u64,
    /// Time limit for one call (one batch), enforced by epoch interruption.
    #[serde(default = "default_plugin_timeout_ms")]
    pub timeout_ms: u64,
    /// Optional instruction budget per call (Wasmtime fuel); unlimited when unset.
    #[serde(default)]
    pub fuel: Option<u64>,
    /// Capabilities beyond the sandbox's nothing: `clock` (real wall and monotonic clocks),
    /// `stderr` (the plugin's stderr goes to floe's), `env:NAME` (one environment variable).
    #[serde(default)]
    pub grants: Vec<String>,
    /// The plugin's own settings, handed to its `init` as JSON (unmasked; only their printed
    /// form is masked).
    #[serde(default)]
    pub config: toml::Table,
}

/// A plugin entry formatted with its secret settings masked.
struct MaskedPlugin<'a> {
    plugin: &'a PluginConfig,
    also: &'a [String],
}

impl fmt::Debug for MaskedPlugin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.plugin;
        f.debug_struct("PluginConfig")
            .field("name", &p.name)
            .field("path", &p.path)
            .field("tables", &p.tables)
            .field("memory_mb", &p.memory_mb)
            .field("timeout_ms", &p.timeout_ms)
            .field("fuel", &p.fuel)
            .field("grants", &p.grants)
            .field("config", &masked_settings(&p.config, self.also))
            .finish()
    }
}

/// Masks by name only: `plugins.secret_settings` is applied where the whole chain is printed.
impl fmt::Debug for PluginConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.masked(&[]).fmt(f)
    }
}

impl PluginConfig {
    fn masked<'a>(&'a self, also: &'a [String]) -> MaskedPlugin<'a> {
        MaskedPlugin { plugin: self, also }
    }

    /// The plugin's display name.
    pub fn display_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            self.path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "plugin".into())
        })
    }
}

fn default_watch_ms() -> u64 {
    1000
}
fn default_plugin_memory_mb() -> u64 {
    64
}
fn default_plugin_timeout_ms() -> u64 {
    1000
}

fn default_group() -> String {
    "floe".into()
}
fn default_dlq() -> String {
    "floe.dlq".into()
}
fn default_max_records() -> usize {
    100
}
fn default_max_wait_ms() -> u64 {
    5_000
}
fn default_max_bytes() -> usize {
    32 * 1024 * 1024
}
fn default_backlog_max_records() -> usize {
    10_000
}
fn default_database() -> String {
    "CDC_WAREHOUSE".into()
}
fn default_schema() -> String {
    "PUBLIC".into()
}
fn default_sessions() -> usize {
    4
}

fn default_query_timeout() -> u64 {
    120
}
fn default_stats_interval() -> u64 {
    5
}

/// The guide's variable names and the config keys they set.
const NAMED_OVERRIDES: &[(&str, &[&str])] = &[
    ("SNOWFLAKE_ACCOUNT", &["snowflake", "account"]),
    ("SNOWFLAKE_USER", &["snowflake", "user"]),
    ("SNOWFLAKE_PASSWORD", &["snowflake", "password"]),
    (
        "SNOWFLAKE_PRIVATE_KEY_PATH",
        &["snowflake", "private_key_path"],
    ),
    (
        "SNOWFLAKE_PRIVATE_KEY_PASSPHRASE",
        &["snowflake", "private_key_passphrase"],
    ),
    ("SNOWFLAKE_DATABASE", &["snowflake", "database"]),
    ("SNOWFLAKE_SCHEMA", &["snowflake", "schema"]),
    ("SNOWFLAKE_WAREHOUSE", &["snowflake", "warehouse"]),
    ("SNOWFLAKE_ROLE", &["snowflake", "role"]),
    ("SNOWFLAKE_ENDPOINT", &["snowflake", "endpoint"]),
    ("BATCH_SIZE", &["batch", "max_records"]),
    (
        "KAFKA_SASL_PASSWORD",
        &["kafka", "properties", "sasl.password"],
    ),
    ("SCHEMA_REGISTRY_URL", &["registry", "url"]),
    ("SCHEMA_REGISTRY_PASSWORD", &["registry", "password"]),
    ("ALERT_WEBHOOK_URL", &["alerts", "webhook_url"]),
];

impl Config {
    /// Reads `path`, applies the process environment, and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml(&text, std::env::vars())
    }

    /// Parses TOML text with the given environment applied on top.
    pub fn from_toml(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut doc: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError::Invalid(syntax_error(text, &e)))?;
        let env: BTreeMap<String, String> = env.into_iter().collect();
        for (var, path) in NAMED_OVERRIDES {
            if let Some(v) = env.get(*var) {
                let value = if *var == "BATCH_SIZE" {
                    parse_scalar(v)
                } else {
                    toml::Value::String(v.clone())
                };
                set_path(&mut doc, path, value);
            }
        }
        if let Some(v) = env.get("BATCH_TIMEOUT") {
            let secs: f64 = v.parse().map_err(|_| ConfigError::Override {
                var: "BATCH_TIMEOUT".into(),
                reason: "not a number of seconds".into(),
            })?;
            set_path(
                &mut doc,
                &["batch", "max_wait_ms"],
                toml::Value::Integer((secs * 1000.0) as i64),
            );
        }
        for (var, v) in &env {
            let Some(rest) = var.strip_prefix("FLOE__") else {
                continue;
            };
            let path: Vec<String> = rest.split("__").map(str::to_lowercase).collect();
            if path.len() < 2 || path.iter().any(String::is_empty) {
                return Err(ConfigError::Override {
                    var: var.clone(),
                    reason: "expected FLOE__SECTION__KEY".into(),
                });
            }
            let refs: Vec<&str> = path.iter().map(String::as_str).collect();
            if v.is_empty() {
                remove_path(&mut doc, &refs);
            } else if is_text_setting(&refs) {
                set_path(&mut doc, &refs, toml::Value::String(v.clone()));
            } else {
                set_path(&mut doc, &refs, parse_scalar(v));
            }
        }
        let cfg: Config = toml::Value::Table(doc)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(type_error(&e)))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Every secret value set, to mask in messages from libraries (see [`KnownSecrets`]).
    pub fn known_secrets(&self) -> KnownSecrets {
        let mut values: Vec<String> = [
            &self.snowflake.password,
            &self.snowflake.private_key_passphrase,
            &self.registry.password,
            &self.alerts.webhook_url,
        ]
        .into_iter()
        .flatten()
        .map(|s| s.expose().to_string())
        .collect();
        values.extend(
            self.registry
                .url
                .as_deref()
                .and_then(url_password)
                .map(str::to_string),
        );
        for (k, v) in self
            .kafka
            .properties
            .iter()
            .chain(&self.kafka.consumer_properties)
        {
            if is_secret_name(k) {
                values.push(v.clone());
            }
        }
        for p in &self.plugins.chain {
            secret_settings(&p.config, &self.plugins.secret_settings, &mut values);
        }
        values.retain(|v| !v.is_empty());
        // Longest first, so a secret containing another is masked whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        KnownSecrets(values)
    }

    /// The configuration as `floe check-config` prints it: every setting, secrets as `***`.
    pub fn masked(&self) -> String {
        // `Debug` of every part masks its secrets (see the module header).
        format!("{self:#?}")
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        if self.kafka.topics.is_empty() {
            return bad("kafka.topics: at least one topic is required");
        }
        if self.batch.max_records == 0 {
            return bad("batch.max_records must be at least 1");
        }
        if self.batch.max_wait_ms == 0 {
            return bad("batch.max_wait_ms must be at least 1");
        }
        if self.batch.max_bytes == 0 {
            return bad("batch.max_bytes must be at least 1");
        }
        let mut meta = std::collections::HashMap::new();
        for (key, name) in self.snowflake.columns.named() {
            if name.trim().is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "snowflake.columns.{key} must not be empty"
                )));
            }
            if let Some(other) = meta.insert(name.to_uppercase(), key) {
                return Err(ConfigError::Invalid(format!(
                    "snowflake.columns.{other} and snowflake.columns.{key} name the same column"
                )));
            }
        }
        if self.snowflake.sessions == 0 || self.snowflake.sessions > 64 {
            return bad("snowflake.sessions must be between 1 and 64");
        }
        if self.snowflake.state_table.trim().is_empty() {
            return bad("snowflake.state_table must not be empty");
        }
        if self.snowflake.password.is_none() && self.snowflake.private_key_path.is_none() {
            return bad("snowflake: set password (SNOWFLAKE_PASSWORD) or private_key_path");
        }
        let mut names = std::collections::HashSet::new();
        for p in &self.plugins.chain {
            let name = p.display_name();
            if !names.insert(name.clone()) {
                return Err(ConfigError::Invalid(format!(
                    "plugins.chain: two plugins are named `{name}`; give one a `name`"
                )));
            }
            if p.memory_mb == 0 || p.timeout_ms == 0 {
                return Err(ConfigError::Invalid(format!(
                    "plugins.chain `{name}`: memory_mb and timeout_ms must be at least 1"
                )));
            }
            for g in &p.grants {
                if !(g == "clock"
                    || g == "stderr"
                    || g.strip_prefix("env:").is_some_and(|n| !n.is_empty()))
                {
                    return Err(ConfigError::Invalid(format!(
                        "plugins.chain `{name}`: unknown grant `{g}` (known: clock, stderr, env:NAME)"
                    )));
                }
            }
        }
        Ok(())
    }

    pub fn batch_max_wait(&self) -> Duration {
        Duration::from_millis(self.batch.max_wait_ms)
    }
}

/// Whether an environment override of `path` is text whatever it looks like: a secret
/// (`FLOE__SNOWFLAKE__PASSWORD=007` is the password `007`, not the number 7) or a librdkafka
/// property (always text).
fn is_text_setting(path: &[&str]) -> bool {
    path.last().is_some_and(|k| is_secret_name(k))
        || matches!(path, ["kafka", "properties" | "consumer_properties", _])
}

/// A TOML syntax error: where, and what was expected. toml's message says what it expected
/// rather than quoting the text; the line itself (which `Display` would show) is left out.
fn syntax_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end();
    match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message.to_string(),
    }
}

/// A deserialization error as `key.path: what is wrong`, without the value: a value set in the
/// wrong place (or of the wrong type) may be a secret, and the key and the expected type say
/// enough to fix it.
fn type_error(e: &toml::de::Error) -> String {
    let message = e.message();
    // toml records the key path only in `Display`, as a last line `in `a.b``, after the
    // message; take it from there and nothing else.
    let shown = e.to_string();
    let path = shown
        .strip_prefix(message)
        .and_then(|rest| rest.strip_prefix("\nin `"))
        .and_then(|rest| rest.strip_suffix("`\n"))
        .filter(|p| !p.contains(['`', '\n']));
    let what = without_value(message);
    match path {
        Some(path) => format!("{path}: {what}"),
        None => what,
    }
}

/// serde's error message with the offending value left out. Messages that name only keys and
/// expectations are kept; any other message might quote the value, so it is replaced.
fn without_value(message: &str) -> String {
    /// What serde calls the kinds of value it found (`serde::de::Unexpected`'s `Display`,
    /// before the quoted value).
    const KINDS: [&str; 15] = [
        "boolean",
        "integer",
        "floating point",
        "char",
        "string",
        "byte array",
        "unit value",
        "Option value",
        "newtype struct",
        "sequence",
        "map",
        "enum",
        "unit variant",
        "newtype variant",
        "struct variant",
    ];
    // The expectation comes last and is floe's own text (a type, `soft` or `hard`), which
    // never contains ", expected "; a quoted value before it might.
    let split = |rest: &str| match rest.rfind(", expected ") {
        Some(at) => (rest[..at].to_string(), rest[at..].to_string()),
        None => (rest.to_string(), String::new()),
    };
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            let (found, expected) = split(rest);
            let found = found.split(['`', '"']).next().unwrap_or("").trim();
            let found = KINDS.iter().find(|k| **k == found).unwrap_or(&"value");
            return format!("{prefix}{found}{expected}");
        }
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        return format!("unknown value{}", split(rest).1);
    }
    let names_keys = ["unknown field ", "missing field ", "duplicate field "]
        .iter()
        .any(|p| message.starts_with(p));
    if names_keys || message.starts_with("invalid length ") {
        return message.to_string();
    }
    if message.starts_with("expected text, found") {
        // Our own [`Secret`] message, which never quotes the value.
        return message.to_string();
    }
    "invalid value".to_string()
}

/// An environment value as TOML: integers, floats, booleans and TOML arrays (`["a", "b"]`)
/// keep their type; anything else is a string.
fn parse_scalar(v: &str) -> toml::Value {
    if v.trim_start().starts_with('[') {
        if let Ok(mut t) = toml::from_str::<toml::Table>(&format!("v = {v}")) {
            if let Some(array) = t.remove("v") {
                return array;
            }
        }
    }
    if let Ok(i) = v.parse::<i64>() {
        toml::Value::Integer(i)
    } else if let Ok(f) = v.parse::<f64>() {
        toml::Value::Float(f)
    } else if let Ok(b) = v.parse::<bool>() {
        toml::Value::Boolean(b)
    } else {
        toml::Value::String(v.to_string())
    }
}

fn remove_path(doc: &mut toml::Table, path: &[&str]) {
    let (last, parents) = path.split_last().expect("non-empty path");
    let mut table = doc;
    for p in parents {
        match table.get_mut(*p).and_then(toml::Value::as_table_mut) {
            Some(t) => table = t,
            None => return,
        }
    }
    table.remove(*last);
}

fn set_path(doc: &mut toml::Table, path: &[&str], value: toml::Value) {
    let (last, parents) = path.split_last().expect("non-empty path");
    let mut table = doc;
    for p in parents {
        let entry = table
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        table = entry.as_table_mut().expect("just made a table");
    }
    table.insert(last.to_string(), value);
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[kafka]
brokers = "127.0.0.1:9092"
topics = ["cdc.public.transactions"]

[snowflake]
account = "acct"
user = "floe"
"#;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_the_guides() {
        let cfg = Config::from_toml(MINIMAL, env(&[("SNOWFLAKE_PASSWORD", "pw")])).unwrap();
        assert_eq!(cfg.batch.max_records, 100);
        assert_eq!(cfg.batch_max_wait(), Duration::from_secs(5));
        assert_eq!(cfg.snowflake.database, "CDC_WAREHOUSE");
        assert_eq!(cfg.snowflake.delete_mode, DeleteMode::Soft);
        assert_eq!(cfg.snowflake.truncate, TruncateMode::Apply);
        assert_eq!(cfg.snowflake.password.as_ref().unwrap().expose(), "pw");
    }

    #[test]
    fn secrets_never_print() {
        let cfg = Config::from_toml(MINIMAL, env(&[("SNOWFLAKE_PASSWORD", "hunter2")])).unwrap();
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }

    #[test]
    fn environment_overrides() {
        let cfg = Config::from_toml(
            MINIMAL,
            env(&[
                ("SNOWFLAKE_PASSWORD", "pw"),
                ("BATCH_SIZE", "500"),
                ("BATCH_TIMEOUT", "2.5"),
                ("FLOE__SNOWFLAKE__DELETE_MODE", "hard"),
                ("FLOE__SNOWFLAKE__ROLE", ""),
                ("FLOE__KAFKA__TOPICS", r#"["a.public.t", "b.public.u"]"#),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.kafka.topics, vec!["a.public.t", "b.public.u"]);
        assert_eq!(cfg.snowflake.role, None);
        assert_eq!(cfg.batch.max_records, 500);
        assert_eq!(cfg.batch.max_wait_ms, 2500);
        assert_eq!(cfg.snowflake.delete_mode, DeleteMode::Hard);
    }

    #[test]
    fn unknown_and_invalid_keys_are_named() {
        let err = Config::from_toml(
            &format!("{MINIMAL}\n[batch]\nmax_recods = 3\n"),
            env(&[("SNOWFLAKE_PASSWORD", "pw")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("max_recods"), "{err}");
        let err = Config::from_toml(
            MINIMAL,
            env(&[
                ("SNOWFLAKE_PASSWORD", "pw"),
                ("FLOE__SNOWFLAKE__DELETE_MODE", "maybe"),
            ]),
        )
        .unwrap_err();
        // Named by key and the values it takes; the value itself is never echoed (it could be
        // a secret set in the wrong place).
        let text = err.to_string();
        assert!(text.contains("snowflake.delete_mode"), "{err}");
        assert!(text.contains("`soft` or `hard`"), "{err}");
        assert!(!text.contains("maybe"), "{err}");
        let err = Config::from_toml(MINIMAL, env(&[])).unwrap_err();
        assert!(err.to_string().contains("SNOWFLAKE_PASSWORD"), "{err}");
    }

    #[test]
    fn secret_names() {
        for secret in [
            "sasl.password",
            "ssl.key.password",
            "ssl.keystore.password",
            "sasl.jaas.config",
            "sasl.oauthbearer.client.secret",
            "ssl.key.pem",
            "basic.auth.user.info",
            "api_token",
            "apiKey",
            "APIKEY",
            "privateKeyPem",
            "private_key",
            "key",
            "Pass_Phrase",
            "db_credentials",
            "authorization",
        ] {
            assert!(is_secret_name(secret), "{secret} should be secret");
        }
        for plain in [
            "ssl.key.location",
            "private_key_path",
            "key_file",
            "sslKeyLocation",
            "kms_key_id",
            "sasl.kerberos.keytab",
            "ssl.keystore.location",
            "ssl.certificate.pem",
            "sasl.username",
            "security.protocol",
            "keys",
            "session.timeout.ms",
        ] {
            assert!(!is_secret_name(plain), "{plain} should not be secret");
        }
    }

    #[test]
    fn url_passwords_are_masked() {
        assert_eq!(
            masked_url("https://key:s3cr3t@psrc.example/apis?x=1"),
            "https://key:***@psrc.example/apis?x=1"
        );
        assert_eq!(
            masked_url("http://127.0.0.1:8081/apis/ccompat/v7"),
            "http://127.0.0.1:8081/apis/ccompat/v7"
        );
        assert_eq!(masked_url("http://u@h/p@q"), "http://u:***@h/p@q");
    }

    /// Secrets planted everywhere a user can put one; none may appear in what `check-config`
    /// prints, while the code still gets every one of them.
    #[test]
    fn check_config_output_never_shows_planted_secrets() {
        let toml = r#"
[kafka]
brokers = "127.0.0.1:9092"
topics = ["cdc.public.transactions"]
[kafka.properties]
"security.protocol" = "SASL_SSL"
"sasl.username" = "floe-user"
"ssl.key.password" = "PLANTED-ssl-key-pw"
"sasl.jaas.config" = "org.apache.kafka.common.security.plain.PlainLoginModule required password=\"PLANTED-jaas\";"
"sasl.oauthbearer.client.secret" = "PLANTED-oauth"
"ssl.key.pem" = "-----BEGIN PRIVATE KEY-----PLANTED-pem"
"ssl.key.location" = "/etc/floe/client.key"
[kafka.consumer_properties]
"ssl.keystore.password" = "PLANTED-keystore"

[registry]
url = "https://reg-user:PLANTED-url-pw@registry.example/apis"
user = "reg-user"
password = "PLANTED-registry"

[snowflake]
account = "acct"
user = "floe"
private_key_path = "/etc/floe/rsa_key.p8"
private_key_passphrase = "PLANTED-passphrase"

[plugins]
secret_settings = ["dsn"]

[[plugins.chain]]
path = "plugins/dist/enricher.wasm"
[plugins.chain.config]
api_token = "PLANTED-token"
dsn = "postgres://u:PLANTED-dsn@db/x"
region = "eu-west-1"
auth = { clientSecret = "PLANTED-nested" }
targets = [{ name = "a", apiKey = "PLANTED-in-array" }]
"#;
        let cfg = Config::from_toml(
            toml,
            env(&[
                ("KAFKA_SASL_PASSWORD", "PLANTED-sasl"),
                ("FLOE__SNOWFLAKE__PASSWORD", "9876501234"),
                (
                    "ALERT_WEBHOOK_URL",
                    "https://hooks.slack.example/services/PLANTED-hook",
                ),
            ]),
        )
        .unwrap();
        let printed = cfg.masked();
        for planted in [
            "PLANTED",
            "9876501234",
            "PlainLoginModule",
            "BEGIN PRIVATE KEY",
        ] {
            assert!(!printed.contains(planted), "{planted} printed:\n{printed}");
        }
        for shown in [
            "floe-user",
            "/etc/floe/client.key",
            "/etc/floe/rsa_key.p8",
            "eu-west-1",
            "registry.example",
            "SASL_SSL",
        ] {
            assert!(printed.contains(shown), "{shown} missing:\n{printed}");
        }
        // The code itself still sees every value.
        assert_eq!(cfg.kafka.properties["sasl.password"], "PLANTED-sasl");
        assert_eq!(
            cfg.snowflake.password.as_ref().unwrap().expose(),
            "9876501234"
        );
        assert_eq!(
            cfg.plugins.chain[0].config["api_token"].as_str(),
            Some("PLANTED-token")
        );
        assert_eq!(
            cfg.alerts.webhook_url.as_ref().unwrap().expose(),
            "https://hooks.slack.example/services/PLANTED-hook"
        );
        // A lone plugin entry masks by name too.
        let alone = format!("{:?}", cfg.plugins.chain[0]);
        assert!(!alone.contains("PLANTED-token"), "{alone}");
        // Every planted value is known, to be masked in library messages.
        let librdkafka =
            "Client config error: No such configuration property: \"sasl.jaas.config\" \
            sasl.jaas.config org.apache.kafka.common.security.plain.PlainLoginModule required \
            password=\"PLANTED-jaas\"; (PLANTED-sasl, PLANTED-url-pw, postgres://u:PLANTED-dsn@db/x, \
            PLANTED-nested, PLANTED-in-array, PLANTED-token, -----BEGIN PRIVATE KEY-----PLANTED-pem, \
            9876501234, https://hooks.slack.example/services/PLANTED-hook)";
        let masked = cfg.known_secrets().mask(librdkafka);
        assert!(!masked.contains("PLANTED"), "{masked}");
        assert!(!masked.contains("9876501234"), "{masked}");
        assert!(masked.contains("sasl.jaas.config"), "{masked}");
        assert!(!format!("{:?}", cfg.known_secrets()).contains("PLANTED"));
    }

    #[test]
    fn numeric_secrets_from_the_environment_are_text() {
        let password = |pairs: &[(&str, &str)], text: &str| {
            let cfg = Config::from_toml(text, env(pairs)).unwrap();
            cfg.snowflake.password.unwrap().expose().to_string()
        };
        assert_eq!(
            password(&[("SNOWFLAKE_PASSWORD", "12345")], MINIMAL),
            "12345"
        );
        assert_eq!(
            password(&[("FLOE__SNOWFLAKE__PASSWORD", "12345")], MINIMAL),
            "12345"
        );
        // Text, not a number: leading zeros and trailing decimals survive.
        assert_eq!(
            password(&[("FLOE__SNOWFLAKE__PASSWORD", "007")], MINIMAL),
            "007"
        );
        assert_eq!(
            password(&[("FLOE__SNOWFLAKE__PASSWORD", "1.50")], MINIMAL),
            "1.50"
        );
        assert_eq!(
            password(&[("FLOE__SNOWFLAKE__PASSWORD", "true")], MINIMAL),
            "true"
        );
        // Unquoted in the file: an integer is taken as its text.
        let file = MINIMAL.replace("user = \"floe\"", "user = \"floe\"\npassword = 12345");
        assert_eq!(password(&[], &file), "12345");
        // librdkafka properties are text too.
        let cfg = Config::from_toml(
            MINIMAL,
            env(&[
                ("SNOWFLAKE_PASSWORD", "pw"),
                ("FLOE__KAFKA__PROPERTIES__SESSION.TIMEOUT.MS", "30000"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.kafka.properties["session.timeout.ms"], "30000");
    }

    /// No error quotes a configured value, whatever key it was set on.
    #[test]
    fn errors_never_echo_values() {
        // The config text, the environment, and what the error must name.
        type Case = (String, Vec<(&'static str, &'static str)>, &'static str);
        let cases: Vec<Case> = vec![
            // A number where text is expected.
            (
                MINIMAL.into(),
                vec![
                    ("SNOWFLAKE_PASSWORD", "pw"),
                    ("FLOE__SNOWFLAKE__USER", "4242424242"),
                ],
                "snowflake.user",
            ),
            // Text where a number is expected.
            (
                MINIMAL.into(),
                vec![
                    ("SNOWFLAKE_PASSWORD", "pw"),
                    ("FLOE__BATCH__MAX_RECORDS", "PLANTED-a"),
                ],
                "batch.max_records",
            ),
            (
                MINIMAL.into(),
                vec![("SNOWFLAKE_PASSWORD", "pw"), ("BATCH_SIZE", "PLANTED-b")],
                "batch.max_records",
            ),
            (
                MINIMAL.into(),
                vec![("SNOWFLAKE_PASSWORD", "pw"), ("BATCH_TIMEOUT", "PLANTED-c")],
                "BATCH_TIMEOUT",
            ),
            // An unknown variant.
            (
                MINIMAL.into(),
                vec![
                    ("SNOWFLAKE_PASSWORD", "pw"),
                    ("FLOE__KAFKA__FORMAT", "PLANTED-d"),
                ],
                "kafka.format",
            ),
            // A negative number where a count is expected.
            (
                MINIMAL.into(),
                vec![
                    ("SNOWFLAKE_PASSWORD", "pw"),
                    ("FLOE__BATCH__MAX_WAIT_MS", "-7777777"),
                ],
                "batch.max_wait_ms",
            ),
            // A float secret in the file.
            (
                MINIMAL.replace("user = \"floe\"", "user = \"floe\"\npassword = 3.14159"),
                vec![],
                "snowflake.password",
            ),
            // Text where a list is expected.
            (
                MINIMAL.replace(
                    "topics = [\"cdc.public.transactions\"]",
                    "topics = \"PLANTED-e\"",
                ),
                vec![("SNOWFLAKE_PASSWORD", "pw")],
                "kafka.topics",
            ),
            // A list where text is expected.
            (
                MINIMAL.into(),
                vec![
                    ("SNOWFLAKE_PASSWORD", "pw"),
                    ("FLOE__SNOWFLAKE__ROLE", "[\"PLANTED-f\"]"),
                ],
                "snowflake.role",
            ),
            // TOML syntax errors around a secret.
            (
                format!("{MINIMAL}password = \"PLANTED-g\nwarehouse = \"w\"\n"),
                vec![],
                "line",
            ),
            (format!("{MINIMAL}password = PLANTED-h\n"), vec![], "line"),
            (
                format!("{MINIMAL}password = \"PLANTED-i\"\npassword = \"PLANTED-j\"\n"),
                vec![],
                "line",
            ),
            (
                format!("{MINIMAL}password = 'PLANTED-k' x\n"),
                vec![],
                "line",
            ),
            (format!("{MINIMAL}[PLANTED-l\n"), vec![], "line"),
        ];
        for (text, pairs, names) in cases {
            let err = Config::from_toml(&text, env(&pairs))
                .unwrap_err()
                .to_string();
            for planted in ["PLANTED", "4242424242", "7777777", "3.14159"] {
                assert!(!err.contains(planted), "{planted} echoed: {err}");
            }
            assert!(err.contains(names), "`{names}` not named: {err}");
        }
    }
}
