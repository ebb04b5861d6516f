//! Configuration: one TOML file, overridden by the environment. Owns parsing, defaults and
//! validation; an unknown or invalid key is refused with its name. Secrets are never printed.
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
#[derive(Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(transparent)]
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
        f.write_str("***")
    }
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
#[derive(Debug, Clone, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
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

/// Batch limits: a batch is loaded when it holds `max_records` changes, `max_bytes` of
/// messages, or is `max_wait_ms` old.
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
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_records: default_max_records(),
            max_wait_ms: default_max_wait_ms(),
            max_bytes: default_max_bytes(),
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

/// What a `TRUNCATE` on the source does in the warehouse.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum TruncateMode {
    /// Log it and change nothing.
    #[default]
    Ignore,
    /// Delete (hard mode) or mark deleted (soft mode) every row of the table.
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

/// The Wasm plugin chain every change passes through between decode and batch.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
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
#[derive(Debug, Clone, Deserialize, PartialEq)]
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
    /// The plugin's own settings, handed to its `init` as JSON.
    #[serde(default)]
    pub config: toml::Table,
}

impl PluginConfig {
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
fn default_database() -> String {
    "CDC_WAREHOUSE".into()
}
fn default_schema() -> String {
    "PUBLIC".into()
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
            toml::from_str(text).map_err(|e| ConfigError::Invalid(e.message().to_string()))?;
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
                reason: format!("`{v}` is not a number of seconds"),
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
            } else {
                set_path(&mut doc, &refs, parse_scalar(v));
            }
        }
        let cfg: Config = toml::Value::Table(doc)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.message().to_string()))?;
        cfg.validate()?;
        Ok(cfg)
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
        assert!(err.to_string().contains("maybe"), "{err}");
        let err = Config::from_toml(MINIMAL, env(&[])).unwrap_err();
        assert!(err.to_string().contains("SNOWFLAKE_PASSWORD"), "{err}");
    }
}
