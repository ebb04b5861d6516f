//! The Snowflake sink: creates each target table (and the configured views) if missing, and
//! loads a batch per table in a few round trips: stage the bound payload, fill unchanged TOAST
//! values from the target, one MERGE.

pub mod client;
pub mod merge;
pub mod schema;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use tracing::{info, warn};

use self::client::SnowflakeClient;
use self::merge::{MergePlan, MAX_PAYLOAD_BYTES};
use self::schema::{
    create_rejects_sql, create_stage_sql, create_target_sql, evolve, ident, insert_rejects_sql,
    sql_type, target_columns, warehouse_name, Evolution, TargetColumn,
};
use super::SinkError;
use crate::batch::{Batch, TableBatch};
use crate::change::{Column, ColumnType, TableId};
use crate::config::{DeleteMode, SnowflakeConfig};

/// What a load did.
#[derive(Debug, Default, Clone, Copy)]
pub struct LoadReport {
    /// Folded rows merged into target tables.
    pub rows: usize,
    pub tables: usize,
}

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

struct TableState {
    plan: MergePlan,
    source_columns: Arc<[Column]>,
    /// Session generation in which the stage table was created.
    stage_generation: u64,
}

/// Loads batches into Snowflake.
pub struct SnowflakeSink {
    client: SnowflakeClient,
    cfg: SnowflakeConfig,
    tables: HashMap<TableId, TableState>,
    /// Rejects tables known to exist in this process.
    rejects_ready: std::collections::HashSet<String>,
    /// The topic each source table was read from (for per-topic target names).
    topics: HashMap<TableId, Arc<str>>,
    /// Per table and target column: the source position of the newest image whose type the
    /// column was given or checked against.
    type_lsn: HashMap<TableId, HashMap<String, u64>>,
    /// Per table, the source position of the last TRUNCATE applied by this process: a change
    /// older than it (from a partition that lags behind the truncate's) is not loaded.
    truncated_at: HashMap<TableId, u64>,
}

impl SnowflakeSink {
    pub fn new(cfg: &SnowflakeConfig) -> Result<Self, SinkError> {
        Ok(SnowflakeSink {
            client: SnowflakeClient::new(cfg)?,
            cfg: cfg.clone(),
            tables: HashMap::new(),
            rejects_ready: Default::default(),
            topics: HashMap::new(),
            type_lsn: HashMap::new(),
            truncated_at: HashMap::new(),
        })
    }

    /// Notes that changes of `table` come from `topic` (only needed for per-topic names).
    pub fn note_topic(&mut self, table: &TableId, topic: &str) {
        if self.cfg.tables.is_empty() || self.topics.contains_key(table) {
            return;
        }
        self.topics.insert(table.clone(), Arc::from(topic));
    }

    /// The warehouse name of a source table's target: `snowflake.table` if set, else the
    /// per-topic (or per `schema.table`) override, else the naming rule.
    fn table_name(&self, table: &TableId) -> String {
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
        warehouse_name(
            &self
                .cfg
                .table_name
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

    /// The rejects table of a source table: `<TARGET>_REJECTS` beside the target.
    fn rejects_name(&self, table: &TableId) -> String {
        self.qualified(&format!("{}_REJECTS", self.table_name(table)))
    }

    /// Records rejected changes in their tables' rejects tables (created if missing). A change
    /// recorded before (same topic, partition, offset) is not recorded twice, so replaying a
    /// batch after a crash is harmless.
    pub async fn record_rejects(&mut self, rejects: &[Rejected]) -> Result<(), SinkError> {
        let mut by_table: HashMap<String, Vec<&Rejected>> = HashMap::new();
        for r in rejects {
            by_table
                .entry(self.rejects_name(&r.table))
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

    /// Loads every table of the batch. On error nothing is committed by the caller, and loading
    /// the same batch again is harmless.
    pub async fn load(&mut self, batch: &Batch) -> Result<LoadReport, SinkError> {
        let result = self.load_tables(batch).await;
        if result.is_err() {
            // Whatever failed, the session (and its temporary stage tables) may be gone: make
            // the next attempt check and recreate them.
            for state in self.tables.values_mut() {
                state.stage_generation = 0;
            }
        }
        result
    }

    async fn load_tables(&mut self, batch: &Batch) -> Result<LoadReport, SinkError> {
        let mut report = LoadReport::default();
        for (table, tb) in &batch.tables {
            if tb.rows.is_empty() {
                continue;
            }
            self.prepare(table, tb).await?;
            let plan = self.tables[table].plan.clone();
            let kept: Vec<_>;
            let rows = match self.truncated_at.get(table) {
                Some(&at) => {
                    kept = tb
                        .rows
                        .iter()
                        .filter(|r| r.position.lsn >= at)
                        .cloned()
                        .collect();
                    &kept[..]
                }
                None => &tb.rows[..],
            };
            let staged = plan.stage_rows(rows, Utc::now(), MAX_PAYLOAD_BYTES);
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
            self.client.execute(&plan.merge_sql()).await?;
            report.rows += rows.len();
            report.tables += 1;
        }
        Ok(report)
    }

    /// Runs a table's load statements with no rows. A statement error here is about the table
    /// or the session (missing table, privileges), not about any row.
    pub async fn probe(&mut self, batch: &Batch) -> Result<(), SinkError> {
        for (table, tb) in &batch.tables {
            self.prepare(table, tb).await?;
            let plan = self.tables[table].plan.clone();
            self.client
                .execute(&format!("DELETE FROM {}", plan.stage))
                .await?;
            self.client.execute(&plan.merge_sql()).await?;
        }
        Ok(())
    }

    /// Applies a source `TRUNCATE` at source position `lsn`: rows loaded before it are deleted
    /// (hard mode) or marked deleted (soft mode).
    pub async fn truncate(&mut self, table: &TableId, lsn: u64) -> Result<(), SinkError> {
        let target = self.target_name(table);
        let sql = match self.cfg.delete_mode {
            DeleteMode::Hard => format!("DELETE FROM {target} WHERE \"CDC_LSN\" < ?"),
            DeleteMode::Soft => format!(
                "UPDATE {target} SET \"IS_DELETED\" = TRUE, \"CDC_OPERATION\" = 't' WHERE \"CDC_LSN\" < ?"
            ),
        };
        self.client.execute_bound(&sql, lsn.to_string()).await?;
        let at = self.truncated_at.entry(table.clone()).or_insert(lsn);
        *at = (*at).max(lsn);
        Ok(())
    }

    /// Makes sure the target table exists, its merge plan matches the batch's columns, and the
    /// session has its stage table.
    async fn prepare(&mut self, table: &TableId, tb: &TableBatch) -> Result<(), SinkError> {
        let columns = tb.columns.clone().ok_or_else(|| SinkError::Table {
            table: table.table.to_string(),
            reason: "no row image in the batch".into(),
        })?;
        let known = self
            .tables
            .get(table)
            .is_some_and(|s| same_columns(&s.source_columns, &columns));
        if !known {
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
            let sql = create_stage_sql(&state.plan.stage, &state.plan.columns);
            self.client.execute(&sql).await?;
            if let Some(s) = self.tables.get_mut(table) {
                s.stage_generation = generation;
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
        let target_cols = if typed {
            let mut cols = target_columns(columns);
            let key: Vec<String> = key_names.iter().map(|k| warehouse_name(k)).collect();
            self.client
                .execute(&create_target_sql(&target, &cols, &key))
                .await?;
            // Columns the table lacks (new source columns, or columns a plugin adds) are added;
            // a NUMBER whose precision grew is widened; nothing is dropped (a column dropped at
            // the source stays, new rows leave it NULL). A type change Snowflake cannot apply
            // stops here, before any change to the table.
            let existing = self.column_types(table).await?;
            let mut widen = Vec::new();
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
                let image_lsn = tb.column_lsn(&source.name);
                let typed_at = self
                    .type_lsn
                    .get(table)
                    .and_then(|m| m.get(&c.name))
                    .copied()
                    .unwrap_or(0);
                if image_lsn < typed_at && matches!(evolve(t, &c.sql_type), Evolution::Incompatible)
                {
                    c.sql_type = t.clone();
                    continue;
                }
                match evolve(t, &c.sql_type) {
                    // A wider NUMBER than asked (older images of a widened column): stage into
                    // the column's own type so the newer, wider values fit.
                    Evolution::Keep if t.starts_with("NUMBER(") => c.sql_type = t.clone(),
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
            let typed = self.type_lsn.entry(table.clone()).or_default();
            for (c, source) in cols.iter().zip(columns.iter()) {
                let at = tb.column_lsn(&source.name);
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
            for c in &cols {
                if !existing.contains_key(&c.name) {
                    self.client
                        .execute(&format!(
                            "ALTER TABLE {target} ADD COLUMN {} {}",
                            ident(&c.name),
                            c.sql_type
                        ))
                        .await?;
                    info!(table = %target, column = %c.name, r#type = %c.sql_type, "added a column to the target table");
                }
            }
            info!(table = %target, "target table ready");
            if let Some(views) = self.cfg.views_file.clone() {
                self.run_sql_file(&views).await?;
            }
            cols
        } else {
            self.existing_columns(table, columns).await?
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
        Ok(MergePlan {
            stage: ident(&format!("FLOE_STAGE_{}", self.table_name(table))),
            target,
            source_names: columns.iter().map(|c| c.name.clone()).collect(),
            image_columns: columns.clone(),
            columns: target_cols,
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
        // Identifiers come from config and the source's table name; quote them as literals.
        let sql = format!(
            "SELECT COLUMN_NAME, DATA_TYPE, NUMERIC_PRECISION, NUMERIC_SCALE FROM {}.INFORMATION_SCHEMA.COLUMNS WHERE TABLE_SCHEMA = '{}' AND TABLE_NAME = '{}'",
            ident(&self.cfg.database),
            self.cfg.schema.replace('\'', "''"),
            name.replace('\'', "''"),
        );
        let rows = self.client.query_text(&sql).await?;
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
                // A column whose type is known (a plugin added it): add it to the table.
                (None, ty) => {
                    let t = sql_type(ty);
                    self.client
                        .execute(&format!(
                            "ALTER TABLE {} ADD COLUMN {} {t}",
                            self.target_name(table),
                            ident(&wname)
                        ))
                        .await?;
                    info!(table = %name, column = %wname, r#type = %t, "added a column to the target table");
                    t
                }
            };
            out.push(TargetColumn {
                name: wname,
                sql_type,
            });
        }
        Ok(out)
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
        assert_eq!(sink("").table_name(&lines), "ORDER_LINES");
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
