//! The Schema Registry client: fetches Avro writer schemas by id over the Confluent REST API
//! (`GET {url}/schemas/ids/{id}`), which Confluent's registry and Apicurio's `ccompat` API serve.
//! Fetching only; the decoder caches what it gets.

use std::time::Duration;

use serde::Deserialize;

use crate::config::RegistryConfig;

/// Why a schema could not be fetched. All of these are worth retrying: the registry is down,
/// slow or answering errors; an id it does not know is not an error (see [`Fetched`]).
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No answer (connection refused, timeout).
    #[error("schema registry at {url} unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    /// An answer that is neither the schema nor "unknown id".
    #[error("schema registry answered {status} for schema id {id}: {body}")]
    Status { id: u32, status: u16, body: String },
    /// Messages carry registry schema ids but no registry is configured.
    #[error("an Avro message names schema id {0}, but no schema registry is configured (set registry.url)")]
    NotConfigured(u32),
}

impl RegistryError {
    /// Whether waiting can fix it (everything but a missing configuration).
    pub fn is_transient(&self) -> bool {
        !matches!(self, RegistryError::NotConfigured(_))
    }
}

/// What the registry said about one schema id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The schema text (Avro JSON).
    Schema(String),
    /// The registry does not know this id.
    Unknown,
    /// A schema of another kind (`PROTOBUF`, `JSON`); floe decodes Avro.
    NotAvro(String),
}

#[derive(Deserialize)]
struct SchemaById {
    schema: String,
    #[serde(default, rename = "schemaType")]
    schema_type: Option<String>,
}

/// A Schema Registry reachable over HTTP.
#[derive(Clone)]
pub struct SchemaRegistry {
    base: String,
    http: reqwest::Client,
    user: Option<String>,
    password: Option<crate::config::Secret>,
}

impl std::fmt::Debug for SchemaRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaRegistry")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl SchemaRegistry {
    /// A client for `cfg.url`, or `None` when no registry is configured.
    pub fn new(cfg: &RegistryConfig) -> Result<Option<Self>, RegistryError> {
        let Some(url) = cfg.url.as_deref().filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.timeout_ms.max(1)))
            .build()
            .map_err(|e| RegistryError::Unreachable {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
        Ok(Some(SchemaRegistry {
            base: url.trim_end_matches('/').to_string(),
            http,
            user: cfg.user.clone(),
            password: cfg.password.clone(),
        }))
    }

    /// The registry's base URL (no credentials in it).
    pub fn url(&self) -> &str {
        &self.base
    }

    /// Fetches the schema registered under `id`.
    pub async fn fetch(&self, id: u32) -> Result<Fetched, RegistryError> {
        let url = format!("{}/schemas/ids/{id}", self.base);
        let mut req = self.http.get(&url).header(
            "Accept",
            "application/vnd.schemaregistry.v1+json, application/json",
        );
        if let Some(user) = &self.user {
            req = req.basic_auth(user, self.password.as_ref().map(|p| p.expose()));
        }
        let unreachable = |e: reqwest::Error| RegistryError::Unreachable {
            url: self.base.clone(),
            reason: e.to_string(),
        };
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status().as_u16();
        let body = resp.text().await.map_err(unreachable)?;
        match status {
            200 => {
                let parsed: SchemaById =
                    serde_json::from_str(&body).map_err(|e| RegistryError::Status {
                        id,
                        status,
                        body: format!("unreadable answer ({e}): {}", truncate(&body)),
                    })?;
                match parsed.schema_type.as_deref() {
                    None | Some("AVRO") => Ok(Fetched::Schema(parsed.schema)),
                    Some(other) => Ok(Fetched::NotAvro(other.to_string())),
                }
            }
            404 => Ok(Fetched::Unknown),
            _ => Err(RegistryError::Status {
                id,
                status,
                body: truncate(&body),
            }),
        }
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(300).collect()
}
