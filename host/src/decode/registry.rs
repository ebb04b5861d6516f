//! The Schema Registry client: fetches Avro writer schemas by id over the Confluent REST API
//! (`GET {url}/schemas/ids/{id}`), which Confluent's registry and Apicurio's `ccompat` API serve.
//! Fetching only; the decoder caches what it gets.
//!
//! How answers are read: 200 is the schema; 404 (an id the registry does not know) is asked
//! again a few times before it counts as unknown, since a schema registered a moment ago may
//! not have reached the node that answered; 401 and 403 are a configuration error that
//! waiting cannot fix; anything else, or no answer, is an outage to wait out. No message
//! quotes the password.

use std::time::Duration;

use serde::Deserialize;

use crate::config::{masked_url, RegistryConfig, Secret};

/// How long to wait before each new question about an id the registry said it does not know
/// (three questions over ~3 s); then the id counts as unknown and its message is
/// dead-lettered.
const UNKNOWN_ID_RETRY_DELAYS: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(2)];

/// Why a schema could not be fetched. [`RegistryError::is_transient`] says whether waiting can
/// fix it; an id the registry does not know is not an error (see [`Fetched`]).
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No answer (connection refused, timeout).
    #[error("schema registry at {url} unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    /// An answer that is neither the schema nor "unknown id" nor a refusal.
    #[error("schema registry answered {status} for schema id {id}: {body}")]
    Status { id: u32, status: u16, body: String },
    /// The registry refused floe's credentials (401) or their rights (403): fixing the
    /// configuration, not waiting, helps.
    #[error("schema registry at {url} answered {status} for schema id {id}: {fix}")]
    Refused {
        url: String,
        id: u32,
        status: u16,
        fix: &'static str,
    },
    /// A 404 that is not the registry's "schema not found": `registry.url` does not lead to
    /// the Confluent API.
    #[error("schema registry at {url} answered 404 without the registry's \"schema not found\" (40403): registry.url must point at the Confluent API (for Apicurio Registry, …/apis/ccompat/v7); answer: {body}")]
    WrongUrl { url: String, body: String },
    /// Messages carry registry schema ids but no registry is configured.
    #[error("an Avro message names schema id {0}, but no schema registry is configured (set registry.url)")]
    NotConfigured(u32),
}

impl RegistryError {
    /// Whether waiting can fix it: an outage can, missing or refused credentials cannot.
    pub fn is_transient(&self) -> bool {
        !matches!(
            self,
            RegistryError::NotConfigured(_)
                | RegistryError::Refused { .. }
                | RegistryError::WrongUrl { .. }
        )
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
    /// `base` with any password in it masked, for messages.
    shown: String,
    http: reqwest::Client,
    user: Option<String>,
    password: Option<Secret>,
    unknown_id_retry_delays: Vec<Duration>,
}

impl std::fmt::Debug for SchemaRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaRegistry")
            .field("base", &self.shown)
            .finish_non_exhaustive()
    }
}

impl SchemaRegistry {
    /// A client for `cfg.url`, or `None` when no registry is configured.
    pub fn new(cfg: &RegistryConfig) -> Result<Option<Self>, RegistryError> {
        let Some(url) = cfg.url.as_deref().filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        let base = url.trim_end_matches('/').to_string();
        let shown = masked_url(&base);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.timeout_ms.max(1)))
            .build()
            .map_err(|e| RegistryError::Unreachable {
                url: shown.clone(),
                reason: e.without_url().to_string(),
            })?;
        Ok(Some(SchemaRegistry {
            base,
            shown,
            http,
            user: cfg.user.clone(),
            password: cfg.password.clone(),
            unknown_id_retry_delays: UNKNOWN_ID_RETRY_DELAYS.to_vec(),
        }))
    }

    /// The registry's base URL, any password in it masked.
    pub fn url(&self) -> &str {
        &self.shown
    }

    /// Tests wait less for an unknown id.
    #[cfg(test)]
    pub(crate) fn with_unknown_id_retry_delays(mut self, delays: Vec<Duration>) -> Self {
        self.unknown_id_retry_delays = delays;
        self
    }

    /// Fetches the schema registered under `id`; an id the registry does not know is asked
    /// about again after each of the retry delays before it is reported [`Fetched::Unknown`].
    pub async fn fetch(&self, id: u32) -> Result<Fetched, RegistryError> {
        let mut delays = self.unknown_id_retry_delays.iter();
        loop {
            match self.fetch_once(id).await? {
                Fetched::Unknown => match delays.next() {
                    Some(delay) => tokio::time::sleep(*delay).await,
                    None => return Ok(Fetched::Unknown),
                },
                answer => return Ok(answer),
            }
        }
    }

    async fn fetch_once(&self, id: u32) -> Result<Fetched, RegistryError> {
        let url = format!("{}/schemas/ids/{id}", self.base);
        let mut req = self.http.get(&url).header(
            "Accept",
            "application/vnd.schemaregistry.v1+json, application/json",
        );
        if let Some(user) = &self.user {
            req = req.basic_auth(user, self.password.as_ref().map(|p| p.expose()));
        }
        // The URL is named once, masked; reqwest's own text would repeat it.
        let unreachable = |e: reqwest::Error| RegistryError::Unreachable {
            url: self.shown.clone(),
            reason: e.without_url().to_string(),
        };
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status().as_u16();
        if let 401 | 403 = status {
            // The body is left out: some servers echo the request, credentials included.
            return Err(RegistryError::Refused {
                url: self.shown.clone(),
                id,
                status,
                fix: match (status, &self.user) {
                    (401, None) => "it wants credentials: set registry.user and registry.password (better: SCHEMA_REGISTRY_PASSWORD)",
                    (401, Some(_)) => "it refused the credentials in registry.user and registry.password (SCHEMA_REGISTRY_PASSWORD); correct them",
                    _ => "registry.user may not read schemas: grant it read access, or correct registry.user and registry.password (SCHEMA_REGISTRY_PASSWORD)",
                },
            });
        }
        let body = resp.text().await.map_err(unreachable)?;
        match status {
            200 => {
                let parsed: SchemaById =
                    serde_json::from_str(&body).map_err(|e| RegistryError::Status {
                        id,
                        status,
                        body: format!("unreadable answer ({e}): {}", self.excerpt(&body)),
                    })?;
                match parsed.schema_type.as_deref() {
                    None | Some("AVRO") => Ok(Fetched::Schema(parsed.schema)),
                    Some(other) => Ok(Fetched::NotAvro(other.to_string())),
                }
            }
            // Only the registry's own "schema not found" (40403) means an unknown id; any other
            // 404 is a URL that does not lead to the registry's API.
            404 if serde_json::from_str::<serde_json::Value>(&body).is_ok_and(|v| {
                v.get("error_code").and_then(serde_json::Value::as_i64) == Some(40403)
            }) =>
            {
                Ok(Fetched::Unknown)
            }
            404 => Err(RegistryError::WrongUrl {
                url: self.shown.clone(),
                body: self.excerpt(&body),
            }),
            _ => Err(RegistryError::Status {
                id,
                status,
                body: self.excerpt(&body),
            }),
        }
    }

    /// The start of an answer's body for a message, the password masked should the server
    /// have echoed it.
    fn excerpt(&self, body: &str) -> String {
        let body = match self.password.as_ref().map(Secret::expose) {
            Some(p) if !p.is_empty() => body.replace(p, "***"),
            _ => body.to_string(),
        };
        body.chars().take(300).collect()
    }
}

/// A Schema Registry stand-in on loopback for tests: answers each `GET /schemas/ids/{id}` with
/// what `answer` says for the id, the how-manieth question about it (from 1) and the
/// `Authorization` header, and counts the questions.
#[cfg(test)]
pub(crate) mod fake {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    type Answer = dyn Fn(u32, usize, Option<&str>) -> (u16, String) + Send + Sync;

    pub(crate) struct FakeRegistry {
        pub url: String,
        asked: Arc<Mutex<HashMap<u32, usize>>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl FakeRegistry {
        pub async fn start(
            answer: impl Fn(u32, usize, Option<&str>) -> (u16, String) + Send + Sync + 'static,
        ) -> FakeRegistry {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let asked = Arc::new(Mutex::new(HashMap::new()));
            let answer: Arc<Answer> = Arc::new(answer);
            let counts = asked.clone();
            let task = tokio::spawn(async move {
                loop {
                    let Ok((mut sock, _)) = listener.accept().await else {
                        continue;
                    };
                    let (answer, counts) = (answer.clone(), counts.clone());
                    tokio::spawn(async move {
                        let mut head = Vec::new();
                        let mut buf = [0u8; 1024];
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                            match sock.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => head.extend_from_slice(&buf[..n]),
                            }
                        }
                        let head = String::from_utf8_lossy(&head).into_owned();
                        let path = head.split(' ').nth(1).unwrap_or("");
                        let id: u32 = path
                            .strip_prefix("/schemas/ids/")
                            .and_then(|i| i.parse().ok())
                            .unwrap_or(u32::MAX);
                        let auth = head.lines().find_map(|l| {
                            let (name, value) = l.split_once(':')?;
                            name.eq_ignore_ascii_case("authorization")
                                .then(|| value.trim().to_string())
                        });
                        let nth = {
                            let mut c = counts.lock().unwrap();
                            let n = c.entry(id).or_insert(0);
                            *n += 1;
                            *n
                        };
                        let (status, body) = answer(id, nth, auth.as_deref());
                        let response = format!(
                            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = sock.write_all(response.as_bytes()).await;
                    });
                }
            });
            FakeRegistry { url, asked, task }
        }

        /// How many times `id` was asked for.
        pub fn asked(&self, id: u32) -> usize {
            self.asked.lock().unwrap().get(&id).copied().unwrap_or(0)
        }
    }

    impl Drop for FakeRegistry {
        fn drop(&mut self) {
            self.task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeRegistry;
    use super::*;

    const SCHEMA: &str = r#"{"type":"record","name":"Key","fields":[{"name":"id","type":"long"}]}"#;

    fn found() -> (u16, String) {
        (200, serde_json::json!({ "schema": SCHEMA }).to_string())
    }

    fn not_found() -> (u16, String) {
        (
            404,
            r#"{"error_code":40403,"message":"Schema not found"}"#.into(),
        )
    }

    fn client(url: &str, user: Option<&str>, password: Option<&str>) -> SchemaRegistry {
        let cfg = RegistryConfig {
            url: Some(url.into()),
            user: user.map(str::to_string),
            password: password.map(Secret::new),
            timeout_ms: 2000,
        };
        SchemaRegistry::new(&cfg)
            .unwrap()
            .unwrap()
            .with_unknown_id_retry_delays(vec![Duration::from_millis(10); 2])
    }

    #[tokio::test]
    async fn a_known_id_is_fetched_with_the_credentials() {
        let fake = FakeRegistry::start(|_, _, auth| match auth {
            Some(a) if a.starts_with("Basic ") => found(),
            _ => (401, String::new()),
        })
        .await;
        let reg = client(&fake.url, Some("floe"), Some("pw"));
        assert_eq!(reg.fetch(1).await.unwrap(), Fetched::Schema(SCHEMA.into()));
        assert_eq!(fake.asked(1), 1);
    }

    #[tokio::test]
    async fn an_unknown_id_is_asked_three_times_then_reported_unknown() {
        let fake = FakeRegistry::start(|_, _, _| not_found()).await;
        let reg = client(&fake.url, None, None);
        assert_eq!(reg.fetch(9).await.unwrap(), Fetched::Unknown);
        assert_eq!(fake.asked(9), 3);
    }

    #[tokio::test]
    async fn a_404_that_is_not_schema_not_found_is_a_wrong_url_and_fatal() {
        let fake = FakeRegistry::start(|_, _, _| (404, "<html>Not Found</html>".into())).await;
        let reg = client(&fake.url, None, None);
        let err = reg.fetch(9).await.unwrap_err();
        assert!(!err.is_transient(), "{err}");
        assert!(err.to_string().contains("registry.url"), "{err}");
        assert_eq!(fake.asked(9), 1, "a wrong URL is not asked again");
    }

    #[tokio::test]
    async fn an_id_registered_a_moment_late_is_found_on_a_retry() {
        let fake =
            FakeRegistry::start(|_, nth, _| if nth < 3 { not_found() } else { found() }).await;
        let reg = client(&fake.url, None, None);
        assert_eq!(reg.fetch(4).await.unwrap(), Fetched::Schema(SCHEMA.into()));
        assert_eq!(fake.asked(4), 3);
    }

    #[tokio::test]
    async fn refused_credentials_are_fatal_name_the_settings_and_hide_the_password() {
        // The server echoes the credentials it was sent in its body, as some do.
        let fake = FakeRegistry::start(|id, _, auth| {
            let status = if id == 3 { 403 } else { 401 };
            (status, format!("denied: {}", auth.unwrap_or("")))
        })
        .await;
        let reg = client(&fake.url, Some("floe"), Some("PLANTED-pw"));
        for (id, names) in [(1, "registry.password"), (3, "registry.user")] {
            let err = reg.fetch(id).await.unwrap_err();
            assert!(!err.is_transient(), "{err}");
            let text = err.to_string();
            assert!(text.contains(names), "{text}");
            assert!(text.contains("SCHEMA_REGISTRY_PASSWORD"), "{text}");
            assert!(
                !text.contains("PLANTED") && !text.contains("Basic"),
                "{text}"
            );
            assert_eq!(fake.asked(id), 1, "a refusal is not retried");
        }
        let anonymous = client(&fake.url, None, None);
        let err = anonymous.fetch(1).await.unwrap_err();
        assert!(!err.is_transient());
        assert!(err.to_string().contains("set registry.user"), "{err}");
    }

    #[tokio::test]
    async fn other_errors_are_waited_out_and_hide_the_password() {
        let fake = FakeRegistry::start(|_, _, _| (500, "oops: PLANTED-pw".into())).await;
        let reg = client(&fake.url, Some("floe"), Some("PLANTED-pw"));
        let err = reg.fetch(1).await.unwrap_err();
        assert!(err.is_transient());
        assert!(!err.to_string().contains("PLANTED"), "{err}");
        // Nothing listening: an outage, named by the URL with its password masked.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let reg = client(&format!("http://floe:PLANTED-url@{closed}"), None, None);
        let err = reg.fetch(1).await.unwrap_err();
        assert!(err.is_transient());
        assert!(!err.to_string().contains("PLANTED"), "{err}");
        assert!(!format!("{reg:?}").contains("PLANTED"));
    }
}
