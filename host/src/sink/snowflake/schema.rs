//! Warehouse-side naming and types: identifiers, the target table's columns (source columns
//! plus floe's CDC columns), and the temporary stage table a batch is loaded through.

use crate::change::{Column, ColumnType};

use crate::config::MetaColumns;

/// The types of floe's columns, in the order of [`MetaColumns::named`] (which is also their
/// order in the bound payload and the stage table).
const META_TYPES: [&str; 8] = [
    "BOOLEAN",
    "VARCHAR(1)",
    "TIMESTAMP_TZ(3)",
    "NUMBER(20,0)",
    "VARCHAR",
    "NUMBER(10,0)",
    "NUMBER(20,0)",
    "TIMESTAMP_TZ(9)",
];

/// Positions of floe's columns in [`meta_columns`].
pub mod meta {
    pub const IS_DELETED: usize = 0;
    pub const OPERATION: usize = 1;
    pub const LSN: usize = 3;
    pub const POSITION: usize = 4;
    pub const KAFKA_PARTITION: usize = 5;
    pub const KAFKA_OFFSET: usize = 6;
}

/// Columns floe adds to every target table (names from the config), with their types.
pub fn meta_columns(names: &MetaColumns) -> Vec<TargetColumn> {
    names
        .named()
        .iter()
        .zip(META_TYPES)
        .map(|((_, name), ty)| TargetColumn {
            name: name.to_string(),
            sql_type: ty.to_string(),
        })
        .collect()
}

/// Types of the stage-only columns that follow the data and meta columns: what the MERGE must
/// do with the row, and which cells were unchanged TOAST values (as `,i,j,` column indexes).
pub const STAGE_ONLY_TYPES: [&str; 2] = ["VARCHAR", "VARCHAR"];

/// The stage table's name for its `i`-th column. Stage columns are named by position, so no
/// source column can ever collide with them (the stage holds data columns, then floe's
/// columns, then the action and the unchanged-TOAST list).
pub fn stage_col(i: usize) -> String {
    format!("\"F{i}\"")
}

/// A double-quoted Snowflake identifier. Every identifier floe puts in SQL goes through this
/// function; record values never appear in SQL text (they are bound).
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The warehouse name of a source column or table: upper case, as unquoted Snowflake names are.
pub fn warehouse_name(source: &str) -> String {
    source.to_uppercase()
}

/// The columns of a rejects table, in payload order.
const REJECTS_COLUMNS: &[(&str, &str)] = &[
    ("SOURCE_TOPIC", "VARCHAR"),
    ("SOURCE_PARTITION", "NUMBER(10,0)"),
    ("SOURCE_OFFSET", "NUMBER(20,0)"),
    ("RECORD_KEY", "VARCHAR"),
    ("RAW_EVENT", "VARCHAR"),
    ("REASON", "VARCHAR"),
    ("PLUGIN", "VARCHAR"),
    ("REJECTED_AT", "TIMESTAMP_TZ(9)"),
];

/// `CREATE TABLE IF NOT EXISTS` for a rejects table: the raw event, why, which plugin, when.
pub fn create_rejects_sql(name: &str) -> String {
    let cols: Vec<String> = REJECTS_COLUMNS
        .iter()
        .map(|(c, t)| format!("{} {t}", ident(c)))
        .collect();
    format!("CREATE TABLE IF NOT EXISTS {name} ({})", cols.join(", "))
}

/// Inserts a bound JSON array of reject rows, skipping those already recorded.
pub fn insert_rejects_sql(name: &str) -> String {
    let names: Vec<String> = REJECTS_COLUMNS.iter().map(|(c, _)| ident(c)).collect();
    let exprs: Vec<String> = REJECTS_COLUMNS
        .iter()
        .enumerate()
        .map(|(i, (_, t))| stage_expr(i, t))
        .collect();
    format!(
        "INSERT INTO {name} ({}) SELECT {} FROM LATERAL FLATTEN(INPUT => PARSE_JSON(?)) f \
         WHERE NOT EXISTS (SELECT 1 FROM {name} r WHERE r.\"SOURCE_TOPIC\" = {} \
         AND r.\"SOURCE_PARTITION\" = {} AND r.\"SOURCE_OFFSET\" = {})",
        names.join(", "),
        exprs.join(", "),
        exprs[0],
        exprs[1],
        exprs[2]
    )
}

/// The Snowflake type of a source column.
pub fn sql_type(ty: &ColumnType) -> String {
    match ty {
        ColumnType::Integer => "NUMBER(38,0)".into(),
        ColumnType::Float => "FLOAT".into(),
        ColumnType::Boolean => "BOOLEAN".into(),
        ColumnType::Decimal { precision, scale } => {
            let s = (*scale).min(37);
            let p = precision.unwrap_or(38).clamp(s.max(1), 38);
            format!("NUMBER({p},{s})")
        }
        ColumnType::Text => "VARCHAR".into(),
        ColumnType::Binary => "BINARY".into(),
        ColumnType::Date => "DATE".into(),
        ColumnType::Time => "TIME(9)".into(),
        ColumnType::Timestamp => "TIMESTAMP_NTZ(9)".into(),
        ColumnType::TimestampTz => "TIMESTAMP_TZ(9)".into(),
        ColumnType::Json | ColumnType::Unknown => "VARIANT".into(),
    }
}

/// What a target column needs when the source's type for it may have changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evolution {
    /// The column holds the source's values as it is.
    Keep,
    /// Snowflake can widen the column in place: `ALTER COLUMN ... SET DATA TYPE` this type.
    Widen(String),
    /// Snowflake cannot turn the existing type into the wanted one.
    Incompatible,
}

/// Compares a target column's existing type (as [`super::SnowflakeSink`] reads it back:
/// `NUMBER(p,s)`, `VARCHAR`, `FLOAT`, ...) with the type the source now asks for.
/// Snowflake widens a NUMBER's precision (same scale) in place; it changes no scale and no
/// type family. A VARIANT column holds any value.
pub fn evolve(existing: &str, wanted: &str) -> Evolution {
    let base = |t: &str| -> String {
        let b = t.split('(').next().unwrap_or(t).trim().to_ascii_uppercase();
        match b.as_str() {
            "TEXT" | "STRING" | "CHAR" | "CHARACTER" => "VARCHAR".into(),
            "DECIMAL" | "NUMERIC" | "INT" | "INTEGER" | "BIGINT" | "SMALLINT" => "NUMBER".into(),
            "DOUBLE" | "DOUBLE PRECISION" | "REAL" | "FLOAT4" | "FLOAT8" => "FLOAT".into(),
            "TIMESTAMP" | "DATETIME" => "TIMESTAMP_NTZ".into(),
            _ => b,
        }
    };
    let (e, w) = (base(existing), base(wanted));
    if e == "VARIANT" {
        return Evolution::Keep;
    }
    if e != w {
        return Evolution::Incompatible;
    }
    if e != "NUMBER" {
        return Evolution::Keep;
    }
    match (number_args(existing), number_args(wanted)) {
        (Some((ep, es)), Some((wp, ws))) if es == ws => {
            if wp > ep {
                Evolution::Widen(format!("NUMBER({wp},{ws})"))
            } else {
                Evolution::Keep
            }
        }
        (Some(_), Some(_)) => Evolution::Incompatible,
        // A bare NUMBER is NUMBER(38,0).
        _ => Evolution::Keep,
    }
}

fn number_args(t: &str) -> Option<(u32, u32)> {
    let inner = t.split_once('(')?.1.strip_suffix(')')?;
    let (p, s) = inner.split_once(',').unwrap_or((inner, "0"));
    Some((p.trim().parse().ok()?, s.trim().parse().ok()?))
}

/// The expression that reads element `i` of a staged JSON row as `sql_type`.
pub fn stage_expr(i: usize, sql_type: &str) -> String {
    let v = format!("f.value[{i}]");
    let upper = sql_type.to_uppercase();
    if upper.starts_with("VARIANT") || upper.starts_with("OBJECT") || upper.starts_with("ARRAY") {
        // JSON documents travel as their text so SQL NULL and JSON null stay distinct.
        format!("PARSE_JSON({v}::VARCHAR)")
    } else if upper.starts_with("BINARY") {
        format!("BASE64_DECODE_BINARY({v}::VARCHAR)")
    } else {
        format!("{v}::{sql_type}")
    }
}

/// One column of a target table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetColumn {
    /// Warehouse name (upper case).
    pub name: String,
    pub sql_type: String,
}

/// The data columns of a target table for the given source columns.
pub fn target_columns(columns: &[Column]) -> Vec<TargetColumn> {
    columns
        .iter()
        .map(|c| TargetColumn {
            name: warehouse_name(&c.name),
            sql_type: sql_type(&c.ty),
        })
        .collect()
}

/// `CREATE TABLE IF NOT EXISTS` for a target table: its data columns, then floe's.
pub fn create_target_sql(
    table: &str,
    columns: &[TargetColumn],
    meta: &[TargetColumn],
    key: &[String],
) -> String {
    let defs: Vec<String> = columns
        .iter()
        .chain(meta)
        .map(|c| format!("{} {}", ident(&c.name), c.sql_type))
        .collect();
    let mut defs = defs;
    if !key.is_empty() {
        let k: Vec<String> = key.iter().map(|k| ident(k)).collect();
        defs.push(format!("PRIMARY KEY ({})", k.join(", ")));
    }
    format!("CREATE TABLE IF NOT EXISTS {table} ({})", defs.join(", "))
}

/// `CREATE OR REPLACE TEMPORARY TABLE` for a stage whose columns have these types (named by
/// position, see [`stage_col`]; session-scoped, unqualified). Replaced, not kept: after a
/// schema change the stage must get the new columns.
pub fn create_stage_sql(stage: &str, types: &[String]) -> String {
    let defs: Vec<String> = types
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{} {t}", stage_col(i)))
        .collect();
    format!(
        "CREATE OR REPLACE TEMPORARY TABLE {stage} ({})",
        defs.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_changes_snowflake_can_and_cannot_apply() {
        use Evolution::*;
        assert_eq!(
            evolve("NUMBER(10,2)", "NUMBER(12,2)"),
            Widen("NUMBER(12,2)".into())
        );
        assert_eq!(evolve("NUMBER(12,2)", "NUMBER(10,2)"), Keep);
        assert_eq!(evolve("NUMBER(38,0)", "NUMBER(38,0)"), Keep);
        assert_eq!(evolve("NUMBER(12,2)", "NUMBER(12,4)"), Incompatible);
        assert_eq!(evolve("NUMBER(38,0)", "VARCHAR"), Incompatible);
        assert_eq!(evolve("VARCHAR", "NUMBER(38,0)"), Incompatible);
        assert_eq!(evolve("TEXT", "VARCHAR"), Keep);
        assert_eq!(evolve("TIMESTAMP_TZ", "TIMESTAMP_TZ(9)"), Keep);
        assert_eq!(evolve("TIMESTAMP_NTZ", "TIMESTAMP_TZ(9)"), Incompatible);
        assert_eq!(evolve("FLOAT", "NUMBER(38,0)"), Incompatible);
        assert_eq!(evolve("VARIANT", "VARCHAR"), Keep);
    }
    use std::sync::Arc;

    /// `sql/setup_snowflake.sql` is for people who create the table by hand: it must declare
    /// what floe itself creates for the guide's table, and carry the same views.
    #[test]
    fn hand_written_setup_matches_what_floe_creates() {
        let setup = include_str!("../../../../sql/setup_snowflake.sql");
        let views = include_str!("../../../../sql/views.sql");
        let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        let setup_flat = squash(setup);
        let col = |name: &str, ty: ColumnType| Column {
            name: Arc::from(name),
            ty,
            optional: true,
        };
        // The guide's table as Debezium describes it.
        let guide = [
            col("transaction_id", ColumnType::Integer),
            col("user_id", ColumnType::Integer),
            col(
                "amount",
                ColumnType::Decimal {
                    precision: Some(12),
                    scale: 2,
                },
            ),
            col("currency", ColumnType::Text),
            col("status", ColumnType::Text),
            col("payment_method", ColumnType::Text),
            col("description", ColumnType::Text),
            col("metadata", ColumnType::Json),
            col("created_at", ColumnType::TimestampTz),
            col("updated_at", ColumnType::TimestampTz),
        ];
        let declared = target_columns(&guide)
            .into_iter()
            .map(|c| (c.name, c.sql_type))
            .chain(
                meta_columns(&MetaColumns::default())
                    .into_iter()
                    .map(|c| (c.name, c.sql_type)),
            );
        for (name, ty) in declared {
            assert!(
                setup_flat.contains(&format!("{name} {ty}")),
                "sql/setup_snowflake.sql lacks `{name} {ty}`"
            );
        }
        for stmt in crate::sink::snowflake::split_statements(views) {
            assert!(
                setup_flat.contains(&squash(&stmt)),
                "sql/setup_snowflake.sql lacks the view `{}`",
                stmt.lines().next().unwrap_or_default()
            );
        }
    }

    #[test]
    fn identifiers_are_quoted_and_escaped() {
        assert_eq!(ident("A\"B"), "\"A\"\"B\"");
        assert_eq!(warehouse_name("transaction_id"), "TRANSACTION_ID");
    }

    #[test]
    fn types_and_stage_expressions() {
        assert_eq!(
            sql_type(&ColumnType::Decimal {
                precision: Some(12),
                scale: 2
            }),
            "NUMBER(12,2)"
        );
        assert_eq!(
            sql_type(&ColumnType::Decimal {
                precision: Some(60),
                scale: 2
            }),
            "NUMBER(38,2)"
        );
        assert_eq!(stage_expr(3, "VARIANT"), "PARSE_JSON(f.value[3]::VARCHAR)");
        assert_eq!(stage_expr(0, "NUMBER(38,0)"), "f.value[0]::NUMBER(38,0)");
    }

    #[test]
    fn target_ddl_has_cdc_columns_and_key() {
        let cols = target_columns(&[Column {
            name: Arc::from("id"),
            ty: ColumnType::Integer,
            optional: false,
        }]);
        let meta = meta_columns(&MetaColumns::default());
        let sql = create_target_sql("DB.S.T", &cols, &meta, &["ID".into()]);
        assert!(sql.starts_with(
            "CREATE TABLE IF NOT EXISTS DB.S.T (\"ID\" NUMBER(38,0), \"IS_DELETED\" BOOLEAN"
        ));
        assert!(sql.contains("\"CDC_LSN\" NUMBER(20,0), \"CDC_POSITION\" VARCHAR"));
        assert!(sql.ends_with("PRIMARY KEY (\"ID\"))"));
        let stage = create_stage_sql(
            "\"FLOE_STAGE_T\"",
            &["NUMBER(38,0)".into(), "VARCHAR".into()],
        );
        assert_eq!(
            stage,
            "CREATE OR REPLACE TEMPORARY TABLE \"FLOE_STAGE_T\" (\"F0\" NUMBER(38,0), \"F1\" VARCHAR)"
        );
    }
}
