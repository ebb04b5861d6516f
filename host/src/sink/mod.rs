//! Sinks: where folded batches are loaded. Delivery is at least once (a batch may be loaded
//! again after a crash), so a sink must make replays harmless.

pub mod snowflake;

/// Why a load failed. The pipeline retries every kind with backoff and commits nothing until
/// the load succeeds, so no failure loses data.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The warehouse could not be reached, or the session was lost.
    #[error("cannot reach Snowflake: {0}")]
    Unavailable(String),
    /// A statement was refused (SQL error, type mismatch, missing privilege).
    #[error("Snowflake refused `{statement}`: {message}")]
    Statement { statement: String, message: String },
    /// The sink is misconfigured (bad key file, bad endpoint).
    #[error("Snowflake sink configuration: {0}")]
    Config(String),
    /// The batch cannot be loaded as described (e.g. no schema known for a table).
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
    /// Whether retrying cannot help (the configuration must change first).
    pub fn is_permanent(&self) -> bool {
        matches!(self, SinkError::Config(_))
    }

    /// Whether the table's records cannot load until someone changes the target table.
    pub fn is_incompatible(&self) -> bool {
        matches!(self, SinkError::Incompatible { .. })
    }

    /// Whether Snowflake refused a statement (as opposed to not answering).
    pub fn is_refusal(&self) -> bool {
        matches!(self, SinkError::Statement { .. })
    }
}
