//! Sinks: where folded batches are loaded. Delivery is at least once (a batch may be loaded
//! again after a crash), so a sink must make replays harmless. Snowflake in production
//! ([`snowflake::pool::SinkPool`]); an in-memory warehouse ([`memory::MemorySink`]) drives the
//! run loop in unit tests.
//!
//! Owns what the run loop may ask of a sink ([`Sink`]) and the one classification of load
//! failures ([`SinkError::class`]): what is retried, what stops floe, what stops one table,
//! and what sends rows to be isolated.

pub mod memory;
pub mod snowflake;

use std::future::Future;

use crate::batch::{FoldedRow, TableBatch};
use crate::change::{SourcePosition, TableId};

/// A change that a plugin rejected or faulted on, as its table's rejects table records it.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub table: TableId,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The Kafka key and value as text (lossy for binary formats).
    pub key: Option<String>,
    pub event: String,
    pub reason: String,
    pub plugin: String,
}

/// What the run loop asks of a warehouse. Each call either does all it was asked or fails
/// with a [`SinkError`] whose class says what the run loop does next; a load may be repeated
/// (after a crash, or a retry whose first attempt reached the warehouse), so loads must be
/// idempotent for the same rows.
pub trait Sink: Send {
    /// Notes that changes of `table` come from `topic` (the target may be named after it).
    fn note_topic(&mut self, table: &TableId, topic: &str);
    /// The warehouse name of `table`'s target, for logs and the stats line.
    fn table_name(&self, table: &TableId) -> String;
    /// Statements sent to the warehouse so far.
    fn statements(&self) -> u64;
    /// Reaches the warehouse (for `/readyz`): a session, and a trivial statement.
    fn ping(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send;
    /// Loads each table's rows once, as concurrently as the sink allows; a result per job,
    /// in the order of `jobs` (the rows loaded, or why not).
    fn load_tables(
        &mut self,
        jobs: &[(&TableId, &TableBatch)],
    ) -> impl Future<Output = Vec<Result<usize, SinkError>>> + Send;
    /// Loads some of a table batch's rows (while the rows a warehouse refuses are looked for).
    fn load_rows(
        &mut self,
        table: &TableId,
        tb: &TableBatch,
        rows: &[FoldedRow],
    ) -> impl Future<Output = Result<usize, SinkError>> + Send;
    /// The same load with no rows: succeeds when the table, not a row, is fine.
    fn probe(
        &mut self,
        table: &TableId,
        tb: &TableBatch,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;
    /// Applies a source TRUNCATE of `table` made at `position`.
    fn truncate(
        &mut self,
        table: &TableId,
        position: SourcePosition,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;
    /// Records changes the plugin chain refused in their tables' rejects tables.
    fn record_rejects(
        &mut self,
        rejects: &[Rejected],
    ) -> impl Future<Output = Result<(), SinkError>> + Send;
}

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
