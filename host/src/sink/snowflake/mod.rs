//! The Snowflake sink: creates each target table (and the configured views) if missing, and
//! loads one table's folded rows in one round trip (a MERGE straight from the bound payload),
//! or, for a batch larger than one payload or with unchanged TOAST values to fill from the
//! target, a few: stage the payloads, fill, one MERGE.
//!
//! Owns the warehouse side of every table: its name (and that no two sources share one,
//! through floe's state table), its columns (and that none collides with floe's own), its
//! type evolution, and where a source TRUNCATE cut it. Failures say which table they belong
//! to ([`SinkError::for_table`]); the pipeline decides what a failure does.

pub mod client;
pub mod merge;
pub mod pool;
pub mod schema;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::Utc;
use tracing::{info, warn};

use self::client::SnowflakeClient;
use self::merge::{MergePlan, MAX_PAYLOAD_BYTES};
use self::schema::{
    create_rejects_sql, create_stage_sql, create_target_sql, evolve, ident, insert_rejects_sql,
    meta, meta_columns, sql_type, target_columns, warehouse_name, Evolution, TargetColumn,
};
use super::{ErrorClass, Rejected, SinkError};

/// Stage tables are `FLOE_STAGE_<TARGET>` (temporary, in the session's schema): no target may
/// be named so.
const STAGE_PREFIX: &str = "FLOE_STAGE_";
use crate::batch::{FoldedRow, LogKey, TableBatch};
use crate::change::{Column, ColumnType, SourcePosition, TableId};
use crate::config::{DeleteMode, SnowflakeConfig};

struct TableState {
    plan: MergePlan,
    source_columns: Arc<[Column]>,
    /// Session generation in which the stage table was created.
    stage_generation: u64,
}

/// Loads table batches into Snowflake.
pub struct SnowflakeSink {
    client: SnowflakeClient,
    cfg: SnowflakeConfig,
    /// floe's columns in every target table, in payload order.
    meta: Vec<TargetColumn>,
    tables: HashMap<TableId, TableState>,
    /// Rejects tables known to exist in this process.
    rejects_ready: HashSet<String>,
    /// The topic each source table was read from (for per-topic target names).
    topics: HashMap<TableId, Arc<str>>,
    /// Per table and target column: the log position of the newest image whose type the
    /// column was given or checked against.
    type_at: HashMap<TableId, HashMap<String, LogKey>>,
    /// Owners read back from the state table: warehouse name (upper case) → source table.
    owners: HashMap<String, String>,
    /// Whether the state table is known to exist.
    state_ready: bool,
}

impl SnowflakeSink {
    pub fn new(cfg: &SnowflakeConfig) -> Result<Self, SinkError> {
        Ok(SnowflakeSink {
            client: SnowflakeClient::new(cfg)?,
            cfg: cfg.clone(),
            meta: meta_columns(&cfg.columns),
            tables: HashMap::new(),
            rejects_ready: Default::default(),
            topics: HashMap::new(),
            type_at: HashMap::new(),
            owners: HashMap::new(),
            state_ready: false,
        })
    }

    /// Notes that changes of `table` come from `topic` (only needed for per-topic names).
    pub fn note_topic(&mut self, table: &TableId, topic: &str) {
        if self.cfg.tables.is_empty() || self.topics.contains_key(table) {
            return;
        }
        self.topics.insert(table.clone(), Arc::from(topic));
    }

    /// Statements sent to Snowflake so far.
    pub fn statements(&self) -> u64 {
        self.client.statements()
    }

    /// The warehouse name of a source table's target: `snowflake.table` if set, else the
    /// per-topic (or per `schema.table`) override, else the naming rule (by default `{table}`
    /// in the `public` schema and `{schema}_{table}` elsewhere).
    pub fn table_name(&self, table: &TableId) -> String {
        if let Some(t) = &self.cfg.table {
            return t.clone();
        }
        let by_topic = self
            .topics
            .get(table)
            .and_then(|t| self.cfg.tables.get(&**t));
        let by_source = || {
            self.cfg
                .tables
                .get(&format!("{}.{}", table.schema, table.table))
        };
        if let Some(name) = by_topic.or_else(by_source) {
            return name.clone();
        }
        let rule = match &self.cfg.table_name {
            Some(rule) => rule.as_str(),
            None if &*table.schema == "public" || table.schema.is_empty() => "{table}",
            None => "{schema}_{table}",
        };
        warehouse_name(
            &rule
                .replace("{schema}", &table.schema)
                .replace("{table}", &table.table),
        )
    }

    /// `name` qualified with the configured database and schema.
    fn qualified(&self, name: &str) -> String {
        format!(
            "{}.{}.{}",
            ident(&self.cfg.database),
            ident(&self.cfg.schema),
            ident(name)
        )
    }

    fn target_name(&self, table: &TableId) -> String {
        self.qualified(&self.table_name(table))
    }

    /// The rejects table of a target: `<TARGET>_REJECTS` beside it.
    fn rejects_of(target: &str) -> String {
        format!("{target}_REJECTS")
    }

    /// Records rejected changes in their tables' rejects tables (created if missing). A change
    /// recorded before (same topic, partition, offset) is not recorded twice, so replaying a
    /// batch after a crash is harmless.
    pub async fn record_rejects(&mut self, rejects: &[Rejected]) -> Result<(), SinkError> {
        let mut by_table: HashMap<String, Vec<&Rejected>> = HashMap::new();
        for r in rejects {
            self.claim(&r.table).await?;
            by_table
                .entry(self.qualified(&Self::rejects_of(&self.table_name(&r.table))))
                .or_default()
                .push(r);
        }
        let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        for (name, rows) in by_table {
            if !self.rejects_ready.contains(&name) {
                self.client.execute(&create_rejects_sql(&name)).await?;
                self.rejects_ready.insert(name.clone());
            }
            let payload: Vec<serde_json::Value> = rows
                .iter()
                .map(|r| {
                    serde_json::json!([
                        r.topic,
                        r.partition,
                        r.offset,
                        r.key,
                        r.event,
                        r.reason,
                        r.plugin,
                        now
                    ])
                })
                .collect();
            let json = serde_json::Value::Array(payload).to_string();
            self.client
                .execute_bound(&insert_rejects_sql(&name), json)
                .await?;
        }
        Ok(())
    }

    /// Loads one table's folded rows; returns how many were merged. On error nothing is
    /// committed by the caller, and loading the same rows again is harmless.
    pub async fn load_table(
        &mut self,
        table: &TableId,
        tb: &TableBatch,
        rows: &[FoldedRow],
    ) -> Result<usize, SinkError> {
        let result = self.load_rows(table, tb, rows).await;
        self.after_failure(table, &result);
        result
    }

    /// What a failed load or claim leaves for the next attempt.
    fn after_failure<T>(&mut self, table: &TableId, result: &Result<T, SinkError>) {
        match result {
            // The table itself is at fault (dropped, altered, refused): plan it again from
            // scratch next time (create, evolve), which is where such a fault is fixed.
            Err(e) if e.class() == ErrorClass::Table => {
                self.tables.remove(table);
            }
            // The session (and its temporary stage table) may be gone: make the next attempt
            // check and recreate it.
            Err(_) => {
                if let Some(state) = self.tables.get_mut(table) {
                    state.stage_generation = 0;
                }
            }
            Ok(_) => {}
        }
    }

    async fn load_rows(
        &mut self,
        table: &TableId,
        tb: &TableBatch,
        rows: &[FoldedRow],
    ) -> Result<usize, SinkError> {
        if rows.is_empty() {
            return Ok(0);
        }
        self.prepare(table, tb).await?;
        let plan = self.tables[table].plan.clone();
        let mut staged = plan.stage_rows(rows, Utc::now(), MAX_PAYLOAD_BYTES);
        if staged.payloads.len() == 1
            && (plan.is_append_only() || staged.unchanged_columns.is_empty())
        {
            // The common case: one statement, straight from the bound payload.
            let payload = staged.payloads.remove(0);
            self.client
                .execute_binds(
                    &plan.merge_payload_sql(),
                    vec![payload.json, plan.target_name.clone()],
                )
                .await?;
            return Ok(rows.len());
        }
        // Several payloads, or unchanged values to fill from the target: through the stage.
        self.client
            .execute(&format!("DELETE FROM {}", plan.stage))
            .await?;
        let insert = plan.stage_insert_sql();
        for payload in staged.payloads {
            self.client.execute_bound(&insert, payload.json).await?;
        }
        if !plan.is_append_only() {
            for &i in &staged.unchanged_columns {
                self.client.execute(&plan.fill_unchanged_sql(i)).await?;
            }
        }
        self.client
            .execute_bound(&plan.merge_sql(), plan.target_name.clone())
            .await?;
        Ok(rows.len())
    }

    /// Runs a table's load statements with no rows. A statement error here is about the table
    /// or the session (missing table, privileges), not about any row.
    pub async fn probe(&mut self, table: &TableId, tb: &TableBatch) -> Result<(), SinkError> {
        let target = self.table_name(table);
        let result = async {
            self.prepare(table, tb).await?;
            let plan = self.tables[table].plan.clone();
            // Both ways a row loads (straight from its payload; through the stage when it has
            // unchanged TOAST values), on no rows.
            self.client
                .execute_binds(
                    &plan.merge_payload_sql(),
                    vec!["[]".to_string(), plan.target_name.clone()],
                )
                .await?;
            self.client
                .execute(&format!("DELETE FROM {}", plan.stage))
                .await?;
            self.client
                .execute_bound(&plan.merge_sql(), plan.target_name.clone())
                .await
        }
        .await;
        if result.is_err() {
            // The table is at fault: plan it again from scratch next time.
            self.tables.remove(table);
        }
        result.map_err(|e| e.for_table(&target))
    }

    /// Applies a source `TRUNCATE` at `position`, in one transaction: the cut is recorded in
    /// floe's state table (so no process loads an older change of the table afterwards,
    /// whichever partition or replay it comes from) and the rows loaded before it are deleted
    /// (hard mode) or marked deleted (soft mode); both or neither. A table that does not exist
    /// yet has nothing to cut, and the cut is recorded all the same.
    pub async fn truncate(
        &mut self,
        table: &TableId,
        position: SourcePosition,
    ) -> Result<(), SinkError> {
        let name = self.table_name(table);
        let result = async {
            self.claim(table).await?;
            let exists = !self.column_types(table).await?.is_empty();
            let mut statements: Vec<(String, Vec<String>)> = Vec::new();
            if position.known {
                let cut = position.log_text();
                statements.push((
                    format!(
                        "UPDATE {} SET \"TRUNCATED_BEFORE\" = ?, \"UPDATED_AT\" = CURRENT_TIMESTAMP() \
                         WHERE \"TARGET_TABLE\" = ? AND (\"TRUNCATED_BEFORE\" IS NULL OR \"TRUNCATED_BEFORE\" < ?)",
                        self.state_table()
                    ),
                    vec![cut.clone(), name.to_uppercase(), cut],
                ));
            }
            if exists {
                let target = self.target_name(table);
                let m = |i: usize| ident(&self.meta[i].name);
                // Rows of an older log position (or without one: loaded before the truncate).
                let older = format!(
                    "({pos} IS NOT NULL AND SUBSTR({pos}, 2) < ?) OR ({pos} IS NULL AND ({lsn} IS NULL OR {lsn} < ?))",
                    pos = m(meta::POSITION),
                    lsn = m(meta::LSN),
                );
                let (cut, lsn) = if position.known {
                    (position.log_text(), position.lsn.to_string())
                } else {
                    ("G".to_string(), u64::MAX.to_string())
                };
                let sql = match self.cfg.delete_mode {
                    DeleteMode::Hard => format!("DELETE FROM {target} WHERE {older}"),
                    DeleteMode::Soft => format!(
                        "UPDATE {target} SET {} = TRUE, {} = 't' WHERE {older}",
                        m(meta::IS_DELETED),
                        m(meta::OPERATION)
                    ),
                };
                statements.push((sql, vec![cut, lsn]));
            } else {
                info!(table = %name, "source TRUNCATE of a table not created yet: recorded, nothing to delete");
            }
            self.client.transaction(statements).await
        }
        .await;
        result.map_err(|e| e.for_table(&name))
    }

    fn state_table(&self) -> String {
        self.qualified(&self.cfg.state_table)
    }

    /// Creates floe's state table if this process has not seen it yet.
    async fn ensure_state(&mut self) -> Result<(), SinkError> {
        if self.state_ready {
            return Ok(());
        }
        self.client
            .execute(&format!(
                "CREATE TABLE IF NOT EXISTS {} (\"TARGET_TABLE\" VARCHAR, \"SOURCE_TABLE\" VARCHAR, \
                 \"TRUNCATED_BEFORE\" VARCHAR, \"UPDATED_AT\" TIMESTAMP_TZ(9))",
                self.state_table()
            ))
            .await?;
        self.state_ready = true;
        Ok(())
    }

    /// Makes `table` the owner of its target name and of its rejects table's name, or fails
    /// naming the source that owns one of them already. Owners are kept in floe's state table,
    /// so every process and every restart agree; names are compared in upper case.
    async fn claim(&mut self, table: &TableId) -> Result<(), SinkError> {
        let target = self.table_name(table);
        let source = format!("{}.{}", table.schema, table.table);
        let names = [
            target.to_uppercase(),
            Self::rejects_of(&target).to_uppercase(),
        ];
        let collision = |owner: &str, name: &str| {
            SinkError::Table {
            table: target.clone(),
            reason: format!(
                "source table {source} would load into {name}, which source table {owner} already loads into; \
                 give one of them another name (snowflake.tables, e.g. \"{source}\" = \"OTHER_NAME\", or snowflake.table_name); \
                 no rows of the two are merged"
            ),
        }
        };
        if names[0] == self.cfg.state_table.to_uppercase() || names[0].starts_with(STAGE_PREFIX) {
            return Err(SinkError::Table {
                table: target.clone(),
                reason: format!(
                    "source table {source} would load into {target}, a name floe keeps for itself \
                     (its state table, snowflake.state_table, or a stage table, {STAGE_PREFIX}*); \
                     name it otherwise (snowflake.tables)"
                ),
            });
        }
        if names.iter().all(|n| self.owners.get(n) == Some(&source)) {
            return Ok(());
        }
        if let Some((n, owner)) = names
            .iter()
            .find_map(|n| self.owners.get(n).filter(|o| **o != source).map(|o| (n, o)))
        {
            return Err(collision(owner, n));
        }
        self.ensure_state().await?;
        let payload = serde_json::json!([[names[0], source], [names[1], source]]).to_string();
        self.client
            .execute_bound(
                &format!(
                    "INSERT INTO {state} (\"TARGET_TABLE\", \"SOURCE_TABLE\", \"UPDATED_AT\") \
                     SELECT f.value[0]::VARCHAR, f.value[1]::VARCHAR, CURRENT_TIMESTAMP() FROM LATERAL FLATTEN(INPUT => PARSE_JSON(?)) f \
                     WHERE NOT EXISTS (SELECT 1 FROM {state} o WHERE o.\"TARGET_TABLE\" = f.value[0]::VARCHAR)",
                    state = self.state_table()
                ),
                payload,
            )
            .await?;
        // Two processes claiming at once may both insert: the smallest source name wins, the
        // same answer for both.
        for name in &names {
            let rows = self
                .client
                .query_text(
                    &format!(
                        "SELECT MIN(\"SOURCE_TABLE\") FROM {} WHERE \"TARGET_TABLE\" = ?",
                        self.state_table()
                    ),
                    vec![name.clone()],
                )
                .await?;
            let owner = rows
                .into_iter()
                .next()
                .and_then(|r| r.into_iter().next().flatten())
                .unwrap_or_else(|| source.clone());
            self.owners.insert(name.clone(), owner.clone());
            if owner != source {
                return Err(collision(&owner, name));
            }
        }
        Ok(())
    }

    /// Opens the session if there is none and runs `SELECT 1` in it.
    pub async fn ping(&mut self) -> Result<(), SinkError> {
        self.client.execute("SELECT 1").await
    }

    /// Makes `table` the owner of its target name (see `claim`), as the table's failure. The
    /// pool claims a batch's tables one at a time before their loads run concurrently: two
    /// sources colliding on one name must never claim it at once.
    pub async fn claim_target(&mut self, table: &TableId) -> Result<(), SinkError> {
        let name = self.table_name(table);
        let result = self.claim(table).await.map_err(|e| e.for_table(&name));
        self.after_failure(table, &result);
        result
    }

    /// Makes sure the target table exists, its merge plan matches the batch's columns, and the
    /// session has its stage table. Every refusal on the way is the table's.
    async fn prepare(&mut self, table: &TableId, tb: &TableBatch) -> Result<(), SinkError> {
        let name = self.table_name(table);
        self.prepare_table(table, tb)
            .await
            .map_err(|e| e.for_table(&name))
    }

    async fn prepare_table(&mut self, table: &TableId, tb: &TableBatch) -> Result<(), SinkError> {
        // A batch of deletes without images (only keys) loads with the plan it already has.
        let columns = match (&tb.columns, self.tables.get(table)) {
            (Some(c), _) => c.clone(),
            (None, Some(state)) => state.source_columns.clone(),
            (None, None) => {
                return Err(SinkError::Table {
                    table: table.table.to_string(),
                    reason: "no row image in the batch, and the table is not known yet".into(),
                })
            }
        };
        let known = self
            .tables
            .get(table)
            .is_some_and(|s| same_columns(&s.source_columns, &columns));
        if !known {
            self.claim(table).await?;
            self.check_columns(table, &columns)?;
            let plan = self.plan_for(table, tb, &columns).await?;
            self.tables.insert(
                table.clone(),
                TableState {
                    plan,
                    source_columns: columns,
                    stage_generation: 0,
                },
            );
        }
        self.client.connect().await?;
        let generation = self.client.generation();
        let state = &self.tables[table];
        if state.stage_generation != generation {
            let sql = create_stage_sql(&state.plan.stage, &state.plan.stage_types());
            self.client.execute(&sql).await?;
            if let Some(s) = self.tables.get_mut(table) {
                s.stage_generation = generation;
            }
        }
        Ok(())
    }

    /// Refuses a table whose columns collide: two source columns with one warehouse name
    /// (`id` and `ID`), or a source column named like one of floe's.
    fn check_columns(&self, table: &TableId, columns: &[Column]) -> Result<(), SinkError> {
        let target = self.table_name(table);
        let mut seen: HashMap<String, &str> = HashMap::new();
        for c in columns {
            let w = warehouse_name(&c.name);
            if let Some(key) = self
                .cfg
                .columns
                .named()
                .iter()
                .find(|(_, n)| n.to_uppercase() == w)
                .map(|(k, _)| *k)
            {
                return Err(SinkError::Table {
                    table: target,
                    reason: format!(
                        "source column `{}` of {}.{} has the name of floe's column {w}; \
                         give floe's column another name with snowflake.columns.{key}",
                        c.name, table.schema, table.table
                    ),
                });
            }
            if let Some(other) = seen.insert(w.clone(), &c.name) {
                return Err(SinkError::Table {
                    table: target,
                    reason: format!(
                        "source columns `{other}` and `{}` of {}.{} both become {w} in Snowflake",
                        c.name, table.schema, table.table
                    ),
                });
            }
        }
        Ok(())
    }

    async fn plan_for(
        &mut self,
        table: &TableId,
        tb: &TableBatch,
        columns: &Arc<[Column]>,
    ) -> Result<MergePlan, SinkError> {
        let target = self.target_name(table);
        let key_names: Vec<Arc<str>> = tb
            .rows
            .iter()
            .find(|r| !r.key.is_empty())
            .map(|r| r.key.iter().map(|(k, _)| k.clone()).collect())
            .unwrap_or_default();
        if key_names.is_empty() && !self.tables.contains_key(table) {
            info!(table = %target, "the source table has no primary key: loading it append-only (one row per change)");
        }
        // Events with an embedded schema type every source column, keys included; a column
        // still untyped then is one a plugin added with only NULLs so far.
        let typed = key_names.iter().all(|k| {
            columns
                .iter()
                .any(|c| c.name == *k && c.ty != ColumnType::Unknown)
        });
        let (target_cols, as_json) = if typed {
            let mut cols = target_columns(columns);
            let key: Vec<String> = key_names.iter().map(|k| warehouse_name(k)).collect();
            let created = self.column_types(table).await?.is_empty();
            self.client
                .execute(&create_target_sql(&target, &cols, &self.meta, &key))
                .await?;
            // Columns the table lacks (new source columns, or columns a plugin adds) are added;
            // a NUMBER whose precision grew is widened; nothing is dropped (a column dropped at
            // the source stays, new rows leave it NULL). A type change Snowflake cannot apply
            // stops here, before any change to the table.
            let existing = self.column_types(table).await?;
            let mut widen = Vec::new();
            let mut as_json = HashSet::new();
            for (c, source) in cols.iter_mut().zip(columns.iter()) {
                let Some(t) = existing.get(&c.name) else {
                    continue;
                };
                // A column the newest image lacks (dropped at the source) keeps its type.
                if source.ty == ColumnType::Unknown || !tb.newest_has(&source.name) {
                    c.sql_type = t.clone();
                    continue;
                }
                // Images older than the one that set the column's current type (a partition
                // lagging behind the others, a replay) load into that type; only a newer image
                // can ask for another one.
                let image_at = tb.column_at(&source.name);
                let typed_at = self
                    .type_at
                    .get(table)
                    .and_then(|m| m.get(&c.name))
                    .copied()
                    .unwrap_or_default();
                if image_at < typed_at && matches!(evolve(t, &c.sql_type), Evolution::Incompatible)
                {
                    c.sql_type = t.clone();
                    continue;
                }
                match evolve(t, &c.sql_type) {
                    // A wider NUMBER than asked (older images of a widened column): stage into
                    // the column's own type so the newer, wider values fit.
                    Evolution::Keep if t.starts_with("NUMBER(") => c.sql_type = t.clone(),
                    // A VARIANT column (created while a plugin's new column held only NULLs)
                    // now getting typed values: they are staged as JSON documents.
                    Evolution::Keep if t == "VARIANT" && source.ty != ColumnType::Json => {
                        c.sql_type = t.clone();
                        as_json.insert(c.name.clone());
                    }
                    Evolution::Keep => {}
                    Evolution::Widen(to) => {
                        widen.push((c.name.clone(), t.clone(), to.clone()));
                        c.sql_type = to;
                    }
                    Evolution::Incompatible => {
                        return Err(SinkError::Incompatible {
                            table: target.clone(),
                            column: c.name.clone(),
                            existing: t.clone(),
                            wanted: c.sql_type.clone(),
                        })
                    }
                }
            }
            let typed = self.type_at.entry(table.clone()).or_default();
            for (c, source) in cols.iter().zip(columns.iter()) {
                let at = tb.column_at(&source.name);
                let entry = typed.entry(c.name.clone()).or_insert(at);
                *entry = (*entry).max(at);
            }
            for (name, from, to) in widen {
                self.client
                    .execute(&format!(
                        "ALTER TABLE {target} ALTER COLUMN {} SET DATA TYPE {to}",
                        ident(&name)
                    ))
                    .await?;
                info!(table = %target, column = %name, from = %from, to = %to, "widened a column of the target table");
            }
            // floe's own columns too: a table created by an older floe, or by hand, may lack
            // some (the position column came later).
            let meta = self.meta.clone();
            self.add_missing_columns(&target, &existing, cols.iter().chain(&meta))
                .await?;
            info!(table = %target, "target table ready");
            if created {
                if let Some(views) = self.cfg.views_file.clone() {
                    // The views are the user's; a view that does not apply to this table must
                    // not stop it from loading.
                    if let Err(e) = self.run_sql_file(&views).await {
                        warn!(table = %target, error = %e, "the views file failed after the table was created; the table loads anyway");
                    }
                }
            }
            (cols, as_json)
        } else {
            (self.existing_columns(table, columns).await?, HashSet::new())
        };
        let key = key_names
            .iter()
            .map(|k| {
                columns
                    .iter()
                    .position(|c| c.name == *k)
                    .ok_or_else(|| SinkError::Table {
                        table: table.table.to_string(),
                        reason: format!("key column `{k}` is not in the row image"),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let name = self.table_name(table);
        Ok(MergePlan {
            stage: ident(&format!("{STAGE_PREFIX}{name}")),
            target,
            target_name: name.to_uppercase(),
            state: self.state_table(),
            source_names: columns.iter().map(|c| c.name.clone()).collect(),
            image_columns: columns.clone(),
            as_json: target_cols
                .iter()
                .map(|c| as_json.contains(&c.name))
                .collect(),
            columns: target_cols,
            meta: self.meta.clone(),
            key,
            delete_mode: self.cfg.delete_mode,
        })
    }

    /// The target table's columns and their types (empty if the table does not exist).
    async fn column_types(
        &mut self,
        table: &TableId,
    ) -> Result<HashMap<String, String>, SinkError> {
        let name = self.table_name(table);
        let sql = format!(
            "SELECT COLUMN_NAME, DATA_TYPE, NUMERIC_PRECISION, NUMERIC_SCALE FROM {}.INFORMATION_SCHEMA.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            ident(&self.cfg.database),
        );
        let rows = self
            .client
            .query_text(&sql, vec![self.cfg.schema.clone(), name])
            .await?;
        let mut types = HashMap::new();
        for r in rows {
            let (Some(col), Some(ty)) = (r.first().cloned().flatten(), r.get(1).cloned().flatten())
            else {
                continue;
            };
            let sql_type = match (
                ty.as_str(),
                r.get(2).cloned().flatten(),
                r.get(3).cloned().flatten(),
            ) {
                ("NUMBER", Some(p), Some(s)) => format!("NUMBER({p},{s})"),
                ("TEXT", _, _) => "VARCHAR".to_string(),
                (t, _, _) => t.to_string(),
            };
            types.insert(col, sql_type);
        }
        Ok(types)
    }

    /// For events without an embedded schema: the types come from the existing target table.
    async fn existing_columns(
        &mut self,
        table: &TableId,
        columns: &[Column],
    ) -> Result<Vec<TargetColumn>, SinkError> {
        let name = self.table_name(table);
        let types = self.column_types(table).await?;
        if types.is_empty() {
            return Err(SinkError::Table {
                table: name,
                reason: "the events carry no schema and the target table does not exist; \
                         create it (sql/setup_snowflake.sql) or enable schemas in the converter"
                    .into(),
            });
        }
        let mut out = Vec::with_capacity(columns.len());
        for c in columns {
            let wname = warehouse_name(&c.name);
            let sql_type = match (types.get(&wname), &c.ty) {
                (Some(t), _) => t.clone(),
                (None, ColumnType::Unknown) => {
                    return Err(SinkError::Table {
                        table: name.clone(),
                        reason: format!("column {wname} is missing from the target table"),
                    })
                }
                // A column whose type is known (a plugin added it): added below.
                (None, ty) => sql_type(ty),
            };
            out.push(TargetColumn {
                name: wname,
                sql_type,
            });
        }
        // A table created by hand (or by an older floe) may lack some of floe's columns.
        let meta = self.meta.clone();
        self.add_missing_columns(&self.target_name(table), &types, out.iter().chain(&meta))
            .await?;
        Ok(out)
    }

    /// Adds to `target` the columns `existing` lacks. `IF NOT EXISTS`: another floe process
    /// of the group may add the same column at the same moment.
    async fn add_missing_columns(
        &mut self,
        target: &str,
        existing: &HashMap<String, String>,
        columns: impl Iterator<Item = &TargetColumn>,
    ) -> Result<(), SinkError> {
        for c in columns.filter(|c| !existing.contains_key(&c.name)) {
            self.client
                .execute(&format!(
                    "ALTER TABLE {target} ADD COLUMN IF NOT EXISTS {} {}",
                    ident(&c.name),
                    c.sql_type
                ))
                .await?;
            info!(table = %target, column = %c.name, r#type = %c.sql_type, "added a column to the target table");
        }
        Ok(())
    }

    async fn run_sql_file(&mut self, path: &std::path::Path) -> Result<(), SinkError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SinkError::Config(format!("cannot read {}: {e}", path.display())))?;
        for stmt in split_statements(&text) {
            if let Err(e) = self.client.execute(&stmt).await {
                warn!(file = %path.display(), error = %e, "statement of the views file failed");
                return Err(e);
            }
        }
        info!(file = %path.display(), "views ready");
        Ok(())
    }
}

/// Whether two column lists are the same set (a batch's union may list them in another order;
/// the plan reads rows by name then, and needs no new plan).
fn same_columns(a: &Arc<[Column]>, b: &Arc<[Column]>) -> bool {
    Arc::ptr_eq(a, b)
        || a[..] == b[..]
        || (a.len() == b.len() && a.iter().all(|c| b.iter().any(|d| d == c)))
}

/// Splits a SQL script on `;` at the end of a line, dropping comment-only pieces.
pub fn split_statements(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("--") || trimmed.is_empty() {
            continue;
        }
        cur.push_str(line);
        cur.push('\n');
        if trimmed.ends_with(';') {
            let stmt = cur.trim().trim_end_matches(';').trim().to_string();
            if !stmt.is_empty() {
                out.push(stmt);
            }
            cur.clear();
        }
    }
    let rest = cur.trim();
    if !rest.is_empty() {
        out.push(rest.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(toml: &str) -> SnowflakeSink {
        let cfg = crate::config::Config::from_toml(
            &format!(
                "[kafka]\nbrokers = \"b\"\ntopics = [\"t\"]\n[snowflake]\naccount = \"a\"\nuser = \"u\"\npassword = \"p\"\n{toml}"
            ),
            Vec::<(String, String)>::new(),
        )
        .unwrap();
        SnowflakeSink::new(&cfg.snowflake).unwrap()
    }

    #[test]
    fn target_names_follow_the_rule_then_per_topic_overrides() {
        let orders = TableId {
            schema: "shop".into(),
            table: "orders".into(),
        };
        let lines = TableId {
            schema: "shop".into(),
            table: "order_lines".into(),
        };
        let mut s = sink("table_name = \"{schema}_{table}\"\n[snowflake.tables]\n\"cdc.shop.orders\" = \"Orders_V2\"\n\"shop.order_lines\" = \"LINES\"");
        assert_eq!(s.table_name(&orders), "SHOP_ORDERS");
        s.note_topic(&orders, "cdc.shop.orders");
        assert_eq!(s.table_name(&orders), "Orders_V2");
        assert_eq!(s.table_name(&lines), "LINES");
        assert_eq!(sink("table = \"ONE\"").table_name(&lines), "ONE");
        // Without a rule: the table's name in `public`, schema and name elsewhere, so that
        // `public.orders` and `s2.orders` never load into one table.
        assert_eq!(sink("").table_name(&lines), "SHOP_ORDER_LINES");
        let public = TableId {
            schema: "public".into(),
            table: "orders".into(),
        };
        let s2 = TableId {
            schema: "s2".into(),
            table: "orders".into(),
        };
        assert_eq!(sink("").table_name(&public), "ORDERS");
        assert_eq!(sink("").table_name(&s2), "S2_ORDERS");
    }

    #[test]
    fn columns_that_collide_are_refused_with_the_setting_to_change() {
        let t = TableId {
            schema: "public".into(),
            table: "t".into(),
        };
        let col = |n: &str| Column {
            name: n.into(),
            ty: ColumnType::Text,
            optional: true,
        };
        let s = sink("");
        let err = s
            .check_columns(&t, &[col("id"), col("is_deleted")])
            .unwrap_err();
        assert_eq!(err.class(), crate::sink::ErrorClass::Table);
        assert!(
            err.to_string().contains("snowflake.columns.is_deleted"),
            "{err}"
        );
        let err = s.check_columns(&t, &[col("Id"), col("ID")]).unwrap_err();
        assert!(err.to_string().contains("`Id` and `ID`"), "{err}");
        // Renamed, floe's column no longer collides.
        let renamed = sink("[snowflake.columns]\nis_deleted = \"_FLOE_DELETED\"");
        assert!(renamed
            .check_columns(&t, &[col("id"), col("is_deleted"), col("cdc_lsn_x")])
            .is_ok());
        assert!(s.check_columns(&t, &[col("cdc_lsn")]).is_err());
    }

    #[test]
    fn sql_files_split_into_statements() {
        let s = "-- views\nCREATE VIEW a AS\nSELECT 1;\n\nCREATE VIEW b AS SELECT 2;\n-- end\n";
        assert_eq!(
            split_statements(s),
            vec!["CREATE VIEW a AS\nSELECT 1", "CREATE VIEW b AS SELECT 2"]
        );
    }
}
