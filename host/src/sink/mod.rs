//! Sinks: where folded batches are loaded. Delivery is at least once (a batch may be loaded
//! again after a crash), so a sink must make replays harmless.
//!
//! Owns the one classification of load failures ([`SinkError::class`]): what is retried, what
//! stops floe, what stops one table, and what sends rows to be isolated.

pub mod snowflake;

/// What a failure means for the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Retried with backoff and never blamed on rows: the network, HTTP 5xx and 429, internal
    /// errors, statement timeouts, lock waits, a suspended or resuming warehouse, an expired
    /// session.
    Transient,
    /// floe stops with the message: the credentials or the configuration are wrong, and no
    /// retry can help.
    Fatal,
    /// One table cannot take its changes (refused DDL, a missing privilege, a name collision,
    /// an incompatible type, no schema to create it from): that table's records are
    /// dead-lettered or held, the other tables load.
    Table,
    /// Snowflake refused a statement that loads rows: a row may be at fault (a value it cannot
    /// store), so the rows it refuses are looked for; if the load fails without any row, the
    /// table is at fault.
    Refused,
}

/// Why a load failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The warehouse could not be reached, or the session was lost.
    #[error("cannot reach Snowflake: {0}")]
    Unavailable(String),
    /// A statement was answered with an error.
    #[error("Snowflake refused `{statement}`: {message}")]
    Statement {
        statement: String,
        /// Snowflake's error code (e.g. `100038`), when it sent one.
        code: Option<String>,
        message: String,
    },
    /// Snowflake refused the login.
    #[error("Snowflake refused the login; check snowflake.user and SNOWFLAKE_PASSWORD (or snowflake.private_key_path), snowflake.role and snowflake.warehouse: {message}")]
    Auth {
        code: Option<String>,
        message: String,
    },
    /// The sink is misconfigured (bad key file, bad endpoint).
    #[error("Snowflake sink configuration: {0}")]
    Config(String),
    /// The table cannot be loaded as configured or described (no schema known for it, its
    /// DDL refused, a column or table name collision).
    #[error("cannot load table {table}: {reason}")]
    Table { table: String, reason: String },
    /// The source changed a column's type in a way the target column cannot follow. The
    /// table's records are dead-lettered until the target is changed by hand.
    #[error("cannot load table {table}: column {column} is {existing} in Snowflake and the source now sends {wanted}, a change Snowflake cannot apply in place; alter or rename the column (or load into a new table), then replay the dead-lettered records")]
    Incompatible {
        table: String,
        column: String,
        existing: String,
        wanted: String,
    },
}

impl SinkError {
    /// The one classifier of load failures.
    pub fn class(&self) -> ErrorClass {
        match self {
            SinkError::Unavailable(_) => ErrorClass::Transient,
            SinkError::Statement { code, .. } => code
                .as_deref()
                .map_or(ErrorClass::Refused, snowflake::client::classify_code),
            SinkError::Auth { .. } | SinkError::Config(_) => ErrorClass::Fatal,
            SinkError::Table { .. } | SinkError::Incompatible { .. } => ErrorClass::Table,
        }
    }

    /// The same failure seen as the table's: a refused statement while the table is being
    /// created, altered or checked is about the table, never about a row.
    pub fn for_table(self, table: &str) -> SinkError {
        match self.class() {
            ErrorClass::Refused => SinkError::Table {
                table: table.to_string(),
                reason: self.to_string(),
            },
            _ => self,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(code: Option<&str>) -> SinkError {
        SinkError::Statement {
            statement: "MERGE ...".into(),
            code: code.map(str::to_string),
            message: "m".into(),
        }
    }

    #[test]
    fn each_failure_has_one_class() {
        for code in ["000603", "000625", "000630", "000606", "390114", "390112"] {
            assert_eq!(refused(Some(code)).class(), ErrorClass::Transient, "{code}");
        }
        for code in ["390100", "390144"] {
            assert_eq!(refused(Some(code)).class(), ErrorClass::Fatal, "{code}");
        }
        for code in [Some("100038"), Some("002003"), Some("003001"), None] {
            assert_eq!(refused(code).class(), ErrorClass::Refused, "{code:?}");
        }
        assert_eq!(
            SinkError::Unavailable("x".into()).class(),
            ErrorClass::Transient
        );
        let auth = SinkError::Auth {
            code: Some("390100".into()),
            message: "Incorrect username or password was specified.".into(),
        };
        assert_eq!(auth.class(), ErrorClass::Fatal);
        assert!(auth.to_string().contains("SNOWFLAKE_PASSWORD"));
        // While a table is prepared, a refusal is the table's; an outage stays an outage.
        assert_eq!(
            refused(Some("003001")).for_table("T").class(),
            ErrorClass::Table
        );
        assert_eq!(
            refused(Some("000603")).for_table("T").class(),
            ErrorClass::Transient
        );
    }
}
