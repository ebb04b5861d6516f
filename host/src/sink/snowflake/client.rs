//! The connection to Snowflake: authentication (password or key pair), the endpoint override,
//! one session reused across statements and replaced when it is lost.

use std::time::Duration;

use snowflake_connector_rs::{
    AuthConfig, CellValue, Client, ClientConfig, EndpointConfig, ErrorKind, KeyPairConfig,
    QueryConfig, Session, SessionConfig, Statement,
};

use crate::config::SnowflakeConfig;
use crate::sink::{ErrorClass, SinkError};

/// A Snowflake client with a lazily (re)created session.
pub struct SnowflakeClient {
    client: Client,
    session: Option<Session>,
    /// Incremented every time a new session is opened; session-scoped objects (the temporary
    /// stage tables) must be recreated when it changes.
    generation: u64,
    /// Statements sent (for the stats: statements per batch).
    statements: u64,
}

impl SnowflakeClient {
    pub fn new(cfg: &SnowflakeConfig) -> Result<Self, SinkError> {
        let auth = match (&cfg.private_key_path, &cfg.password) {
            (Some(path), _) => {
                let pem = std::fs::read_to_string(path).map_err(|e| {
                    SinkError::Config(format!("cannot read private key {}: {e}", path.display()))
                })?;
                let kp = match &cfg.private_key_passphrase {
                    Some(p) => {
                        KeyPairConfig::from_encrypted_pem(pem, p.expose().as_bytes().to_vec())
                    }
                    None => KeyPairConfig::from_pem(pem),
                };
                AuthConfig::key_pair(kp)
            }
            (None, Some(pw)) => AuthConfig::password(pw.expose()),
            (None, None) => {
                return Err(SinkError::Config(
                    "no password and no private key configured".into(),
                ))
            }
        };
        let mut session = SessionConfig::new()
            .with_database(&cfg.database)
            .with_schema(&cfg.schema)
            .with_session_parameter("TIMEZONE", serde_json::json!("UTC"));
        if let Some(w) = &cfg.warehouse {
            session = session.with_warehouse(w);
        }
        if let Some(r) = &cfg.role {
            session = session.with_role(r);
        }
        let mut client_cfg = ClientConfig::new(&cfg.user, &cfg.account, auth)
            .with_session(session)
            .with_query(
                QueryConfig::new()
                    .with_query_response_timeout(Duration::from_secs(cfg.query_timeout_secs)),
            );
        if let Some(endpoint) = &cfg.endpoint {
            let url = endpoint
                .parse()
                .map_err(|e| SinkError::Config(format!("endpoint `{endpoint}`: {e}")))?;
            client_cfg = client_cfg.with_endpoint(EndpointConfig::CustomBaseUrl(url));
        }
        let client = Client::new(client_cfg).map_err(|e| SinkError::Config(e.to_string()))?;
        Ok(SnowflakeClient {
            client,
            session: None,
            generation: 0,
            statements: 0,
        })
    }

    /// Statements sent so far.
    pub fn statements(&self) -> u64 {
        self.statements
    }

    /// The current session generation (see the field's doc).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Opens a session if there is none, so that [`Self::generation`] names a live one.
    pub async fn connect(&mut self) -> Result<(), SinkError> {
        self.session().await.map(|_| ())
    }

    async fn session(&mut self) -> Result<&Session, SinkError> {
        if self.session.is_none() {
            let s = self.client.create_session().await.map_err(login_error)?;
            self.generation += 1;
            self.session = Some(s);
        }
        Ok(self.session.as_ref().expect("session just set"))
    }

    /// Runs a statement without binds.
    pub async fn execute(&mut self, sql: &str) -> Result<(), SinkError> {
        self.execute_binds(sql, Vec::new()).await
    }

    /// Runs a statement with one bound text value (`?`).
    pub async fn execute_bound(&mut self, sql: &str, value: String) -> Result<(), SinkError> {
        self.execute_binds(sql, vec![value]).await
    }

    /// Runs a statement with bound text values, one per `?` in order.
    pub async fn execute_binds(&mut self, sql: &str, binds: Vec<String>) -> Result<(), SinkError> {
        self.statements += 1;
        let result = self.session().await?.query(statement(sql, binds)).await;
        self.settle(sql, result.map(|_| ()))
    }

    /// Runs a query with bound text values and returns every row as text cells.
    pub async fn query_text(
        &mut self,
        sql: &str,
        binds: Vec<String>,
    ) -> Result<Vec<Vec<Option<String>>>, SinkError> {
        self.statements += 1;
        let result = async {
            let table = self
                .session()
                .await?
                .query(statement(sql, binds))
                .await
                .map_err(|e| map_error(sql, e))?
                .collect_table()
                .await
                .map_err(|e| map_error(sql, e))?;
            let mut rows = Vec::new();
            for row in table.dynamic_rows().map_err(|e| map_error(sql, e))? {
                let row = row.map_err(|e| map_error(sql, e))?;
                rows.push(row.values().iter().map(cell_text).collect());
            }
            Ok(rows)
        }
        .await;
        if matches!(result, Err(SinkError::Unavailable(_))) {
            self.session = None;
        }
        result
    }

    /// Runs statements (each with its binds) in one transaction: all of them or none.
    pub async fn transaction(
        &mut self,
        statements: Vec<(String, Vec<String>)>,
    ) -> Result<(), SinkError> {
        self.execute("BEGIN").await?;
        for (sql, binds) in statements {
            if let Err(e) = self.execute_binds(&sql, binds).await {
                // Best effort: a lost session has rolled back already.
                let _ = self.execute("ROLLBACK").await;
                return Err(e);
            }
        }
        self.execute("COMMIT").await
    }

    fn settle(
        &mut self,
        sql: &str,
        result: Result<(), snowflake_connector_rs::Error>,
    ) -> Result<(), SinkError> {
        result.map_err(|e| {
            let err = map_error(sql, e);
            if err.class() == ErrorClass::Transient {
                // The session may be gone (server restart, expiry): open a new one next time.
                self.session = None;
            }
            err
        })
    }
}

/// A result cell as text; `None` for SQL NULL. floe only reads small metadata results.
fn cell_text(v: &CellValue) -> Option<String> {
    Some(match v {
        CellValue::Null => return None,
        CellValue::Boolean(b) => b.to_string(),
        CellValue::Integer(i) => i.to_string(),
        CellValue::Float(f) => f.to_string(),
        CellValue::String(s) => s.clone(),
        CellValue::Json(j) => j.to_string(),
        other => format!("{other:?}"),
    })
}

/// A statement with its binds (positional, text).
fn statement(sql: &str, binds: Vec<String>) -> Statement<snowflake_connector_rs::PositionalBinds> {
    binds
        .into_iter()
        .fold(Statement::new_positional(sql.to_string()), |s, b| s.bind(b))
}

fn map_error(sql: &str, e: snowflake_connector_rs::Error) -> SinkError {
    match e.kind() {
        ErrorKind::Server => SinkError::Statement {
            statement: shorten(sql),
            code: e.snowflake_code().map(str::to_string),
            message: e.to_string(),
        },
        ErrorKind::Auth => login_error(e),
        ErrorKind::Config | ErrorKind::BindEncode => SinkError::Config(e.to_string()),
        _ => SinkError::Unavailable(e.to_string()),
    }
}

/// A failed login: refused credentials stop floe (retrying cannot help), anything else
/// (network, a 5xx, an expired token) is an outage.
fn login_error(e: snowflake_connector_rs::Error) -> SinkError {
    let code = e.snowflake_code().map(str::to_string);
    let refused = e.kind() == ErrorKind::Auth
        || code
            .as_deref()
            .is_some_and(|c| classify_code(c) == ErrorClass::Fatal);
    if refused {
        SinkError::Auth {
            code,
            message: e.to_string(),
        }
    } else {
        SinkError::Unavailable(format!("login failed: {e}"))
    }
}

/// What a Snowflake error code means, for a statement Snowflake answered with an error. The
/// one table of codes floe knows; [`SinkError::class`] reads it.
pub fn classify_code(code: &str) -> ErrorClass {
    match code {
        // Internal error, execution cancelled or aborted, no running warehouse (suspended or
        // resuming), a warehouse that cannot resume now, too many waiters on a lock, the
        // statement's timeout, and every flavour of lost or expired session or token.
        "000603" | "000604" | "000605" | "000606" | "000608" | "000625" | "000630" | "390103"
        | "390104" | "390111" | "390112" | "390114" => ErrorClass::Transient,
        // Wrong user or password, locked user, invalid JWT (key pair), role, database or
        // warehouse not granted at login, expired OAuth token.
        "390100" | "390101" | "390102" | "390144" | "390186" | "390189" | "390201" | "390318" => {
            ErrorClass::Fatal
        }
        // Anything else is a refusal of the statement: a value Snowflake cannot store (data
        // errors, 100xxx), or the statement itself (missing object or privilege, 002xxx and
        // 003xxx). Whether that is about rows or about the table depends on the statement.
        _ => ErrorClass::Refused,
    }
}

/// Statements are logged in errors; they never contain record values (those are bound), but
/// they can be long.
fn shorten(sql: &str) -> String {
    const MAX: usize = 160;
    if sql.len() <= MAX {
        return sql.to_string();
    }
    let mut end = MAX;
    while !sql.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &sql[..end])
}
