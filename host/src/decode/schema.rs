//! Kafka Connect schemas as Debezium embeds them: which warehouse type each column gets, and how
//! each wire value is normalised (decimals from bytes, temporal integers to ISO-8601 text).

use std::sync::Arc;

use base64::Engine as _;
use chrono::{DateTime, NaiveDate, NaiveTime};
use serde::Deserialize;
use serde_json::Value;

use super::DecodeError;
use crate::change::{Cell, Column, ColumnType};

/// Debezium's placeholder for a TOASTed value that did not change and was not sent.
pub const UNAVAILABLE_VALUE: &str = "__debezium_unavailable_value";

/// A Kafka Connect schema node, as the JSON converter writes it.
#[derive(Debug, Deserialize)]
pub struct ConnectSchema {
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(default)]
    pub optional: bool,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub field: Option<String>,
    #[serde(default)]
    pub fields: Vec<ConnectSchema>,
    #[serde(default)]
    pub parameters: Option<serde_json::Map<String, Value>>,
}

/// How one column's wire value is turned into a loadable value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFormat {
    /// Pass the JSON value through.
    Plain,
    /// Connect `Decimal`: base64 big-endian two's complement, fixed scale.
    DecimalBytes { scale: u32 },
    /// Debezium `VariableScaleDecimal`: `{ "scale": s, "value": base64 }`.
    VariableDecimal,
    /// Days since the epoch.
    DateDays,
    /// Time of day in the given unit per second (1e3 ms, 1e6 µs, 1e9 ns).
    TimeOfDay { per_sec: i64 },
    /// Timestamp without zone in the given unit per second.
    Timestamp { per_sec: i64 },
}

/// The columns of a table image plus how to read each one.
#[derive(Debug, Clone)]
pub struct ImageSchema {
    pub columns: Arc<[Column]>,
    pub formats: Vec<WireFormat>,
}

impl ImageSchema {
    /// Builds the image schema from a Connect `struct` schema (Debezium's `before`/`after`).
    pub fn from_connect(node: &ConnectSchema) -> Result<ImageSchema, DecodeError> {
        if node.ty != "struct" {
            return Err(DecodeError::BadSchema(format!(
                "row image must be a struct, found `{}`",
                node.ty
            )));
        }
        let mut columns = Vec::with_capacity(node.fields.len());
        let mut formats = Vec::with_capacity(node.fields.len());
        for f in &node.fields {
            let name = f
                .field
                .as_deref()
                .ok_or_else(|| DecodeError::BadSchema("a struct field has no name".into()))?;
            let (ty, format) = column_type(f)?;
            columns.push(Column {
                name: Arc::from(name),
                ty,
                optional: f.optional,
            });
            formats.push(format);
        }
        Ok(ImageSchema {
            columns: columns.into(),
            formats,
        })
    }

    /// Schema for events without an embedded schema: column names from the first image seen.
    pub fn untyped(names: impl IntoIterator<Item = String>) -> ImageSchema {
        let columns: Vec<Column> = names
            .into_iter()
            .map(|n| Column {
                name: Arc::from(n),
                ty: ColumnType::Unknown,
                optional: true,
            })
            .collect();
        let formats = vec![WireFormat::Plain; columns.len()];
        ImageSchema {
            columns: columns.into(),
            formats,
        }
    }
}

fn param_u32(node: &ConnectSchema, key: &str) -> Option<u32> {
    let v = node.parameters.as_ref()?.get(key)?;
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        _ => None,
    }
}

fn column_type(node: &ConnectSchema) -> Result<(ColumnType, WireFormat), DecodeError> {
    use ColumnType as T;
    use WireFormat as W;
    let name = node.name.as_deref().unwrap_or("");
    Ok(match (node.ty.as_str(), name) {
        ("bytes", "org.apache.kafka.connect.data.Decimal") => {
            let scale = param_u32(node, "scale").unwrap_or(0);
            let precision = param_u32(node, "connect.decimal.precision");
            (T::Decimal { precision, scale }, W::DecimalBytes { scale })
        }
        ("struct", "io.debezium.data.VariableScaleDecimal") => (T::Text, W::VariableDecimal),
        ("int32", "io.debezium.time.Date" | "org.apache.kafka.connect.data.Date") => {
            (T::Date, W::DateDays)
        }
        ("int32", "io.debezium.time.Time" | "org.apache.kafka.connect.data.Time") => {
            (T::Time, W::TimeOfDay { per_sec: 1_000 })
        }
        ("int64", "io.debezium.time.MicroTime") => (T::Time, W::TimeOfDay { per_sec: 1_000_000 }),
        ("int64", "io.debezium.time.NanoTime") => (
            T::Time,
            W::TimeOfDay {
                per_sec: 1_000_000_000,
            },
        ),
        ("int64", "io.debezium.time.Timestamp" | "org.apache.kafka.connect.data.Timestamp") => {
            (T::Timestamp, W::Timestamp { per_sec: 1_000 })
        }
        ("int64", "io.debezium.time.MicroTimestamp") => {
            (T::Timestamp, W::Timestamp { per_sec: 1_000_000 })
        }
        ("int64", "io.debezium.time.NanoTimestamp") => (
            T::Timestamp,
            W::Timestamp {
                per_sec: 1_000_000_000,
            },
        ),
        ("string", "io.debezium.time.ZonedTimestamp") => (T::TimestampTz, W::Plain),
        ("string", "io.debezium.data.Json") => (T::Json, W::Plain),
        ("int8" | "int16" | "int32" | "int64", _) => (T::Integer, W::Plain),
        // The JSON converter names them `float` and `double`; Connect itself `float32`, `float64`.
        ("float32" | "float64" | "float" | "double", _) => (T::Float, W::Plain),
        ("boolean", _) => (T::Boolean, W::Plain),
        ("string", _) => (T::Text, W::Plain),
        ("bytes", _) => (T::Binary, W::Plain),
        ("array" | "map" | "struct", _) => (T::Json, W::Plain),
        (other, _) => {
            return Err(DecodeError::BadSchema(format!(
                "unknown Connect type `{other}`"
            )))
        }
    })
}

/// Normalises one wire value of a column into a [`Cell`].
pub fn normalise(column: &Column, format: WireFormat, value: Value) -> Result<Cell, DecodeError> {
    let bad = |reason: String| DecodeError::BadValue {
        field: column.name.to_string(),
        reason,
    };
    if let Value::String(s) = &value {
        if s == UNAVAILABLE_VALUE {
            return Ok(Cell::Unchanged);
        }
    }
    if value.is_null() {
        return Ok(Cell::Value(Value::Null));
    }
    Ok(Cell::Value(match format {
        WireFormat::Plain => {
            if column.ty == ColumnType::Json {
                // Structured values (arrays, maps) are loaded as their JSON text, like `json`.
                match value {
                    Value::String(_) => value,
                    other => Value::String(other.to_string()),
                }
            } else {
                value
            }
        }
        WireFormat::DecimalBytes { scale } => {
            let b64 = value
                .as_str()
                .ok_or_else(|| bad("decimal must be base64 text".into()))?;
            Value::String(decimal_from_base64(b64, scale).map_err(bad)?)
        }
        WireFormat::VariableDecimal => {
            let scale = value
                .get("scale")
                .and_then(Value::as_u64)
                .ok_or_else(|| bad("variable-scale decimal without scale".into()))?;
            let b64 = value
                .get("value")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("variable-scale decimal without value".into()))?;
            let scale = u32::try_from(scale).map_err(|e| bad(e.to_string()))?;
            Value::String(decimal_from_base64(b64, scale).map_err(bad)?)
        }
        WireFormat::DateDays => {
            let days = value
                .as_i64()
                .ok_or_else(|| bad("date must be an integer".into()))?;
            let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");
            let date = epoch
                .checked_add_signed(chrono::Duration::days(days))
                .ok_or_else(|| bad(format!("date out of range: {days}")))?;
            Value::String(date.format("%Y-%m-%d").to_string())
        }
        WireFormat::TimeOfDay { per_sec } => {
            let (secs, nanos) = seconds_and_nanos(&value, per_sec).map_err(bad)?;
            let t = u32::try_from(secs)
                .ok()
                .and_then(|s| NaiveTime::from_num_seconds_from_midnight_opt(s, nanos))
                .ok_or_else(|| bad(format!("time out of range: {value}")))?;
            Value::String(t.format("%H:%M:%S%.f").to_string())
        }
        WireFormat::Timestamp { per_sec } => {
            let (secs, nanos) = seconds_and_nanos(&value, per_sec).map_err(bad)?;
            let t = DateTime::from_timestamp(secs, nanos)
                .ok_or_else(|| bad(format!("timestamp out of range: {value}")))?;
            Value::String(t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.f").to_string())
        }
    }))
}

/// Splits an integer count of `1/per_sec` seconds into whole seconds and nanoseconds.
fn seconds_and_nanos(value: &Value, per_sec: i64) -> Result<(i64, u32), String> {
    let n = value
        .as_i64()
        .ok_or_else(|| format!("expected an integer time value, found {value}"))?;
    let nanos = n.rem_euclid(per_sec) * (1_000_000_000 / per_sec);
    Ok((n.div_euclid(per_sec), nanos as u32))
}

/// Decodes a Connect decimal (base64 of a big-endian two's-complement integer) to text.
pub fn decimal_from_base64(b64: &str, scale: u32) -> Result<String, String> {
    let bad = |e: base64::DecodeSliceError| format!("decimal is not base64: {e}");
    let engine = &base64::engine::general_purpose::STANDARD;
    // Up to 38 digits (PostgreSQL's usual precisions) fit 16 bytes: decode on the stack.
    let mut buf = [0u8; 24];
    if b64.len() <= 32 {
        let n = engine.decode_slice(b64, &mut buf).map_err(bad)?;
        return Ok(decimal_from_bytes(&buf[..n], scale));
    }
    let bytes = engine
        .decode(b64)
        .map_err(|e| format!("decimal is not base64: {e}"))?;
    Ok(decimal_from_bytes(&bytes, scale))
}

/// Formats a big-endian two's-complement unscaled integer with `scale` decimal places.
pub fn decimal_from_bytes(bytes: &[u8], scale: u32) -> String {
    if bytes.len() <= 16 {
        // Sign-extend into an i128 and format its digits (no big-number arithmetic).
        let fill = if bytes.first().is_some_and(|b| b & 0x80 != 0) {
            0xFF
        } else {
            0
        };
        let mut be = [fill; 16];
        be[16 - bytes.len()..].copy_from_slice(bytes);
        let n = i128::from_be_bytes(be);
        return with_scale(n < 0, &n.unsigned_abs().to_string(), scale);
    }
    decimal_from_long_bytes(bytes, scale)
}

/// `digits` (an unsigned integer's decimal digits) with `scale` of them after the point.
fn with_scale(negative: bool, digits: &str, scale: u32) -> String {
    let scale = scale as usize;
    // Leading zeros so that at least one digit stays before the point: 1 → "0.01".
    let pad = (scale + 1).saturating_sub(digits.len());
    let total = digits.len() + pad;
    let mut out = String::with_capacity(total + 2);
    if negative {
        out.push('-');
    }
    for (i, d) in std::iter::repeat_n(b'0', pad)
        .chain(digits.bytes())
        .enumerate()
    {
        if i == total - scale && scale > 0 {
            out.push('.');
        }
        out.push(char::from(d));
    }
    out
}

/// [`decimal_from_bytes`] for integers wider than 128 bits.
fn decimal_from_long_bytes(bytes: &[u8], scale: u32) -> String {
    let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
    // Magnitude as big-endian bytes.
    let mut mag: Vec<u8> = if negative {
        let mut v: Vec<u8> = bytes.iter().map(|b| !b).collect();
        for b in v.iter_mut().rev() {
            let (r, carry) = b.overflowing_add(1);
            *b = r;
            if !carry {
                break;
            }
        }
        v
    } else {
        bytes.to_vec()
    };
    // Repeated division by 10 on the byte string gives the decimal digits.
    let mut digits = Vec::new();
    while mag.iter().any(|&b| b != 0) {
        let mut rem = 0u32;
        for b in mag.iter_mut() {
            let cur = (rem << 8) | u32::from(*b);
            *b = (cur / 10) as u8;
            rem = cur % 10;
        }
        digits.push(b'0' + rem as u8);
    }
    digits.reverse();
    with_scale(
        negative,
        std::str::from_utf8(&digits).expect("ascii digits"),
        scale,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_from_connect_bytes() {
        // 1250 = 0x04E2 -> 12.50 at scale 2 (Debezium sends "BOI=").
        assert_eq!(decimal_from_base64("BOI=", 2).unwrap(), "12.50");
        assert_eq!(decimal_from_bytes(&[0xFF], 2), "-0.01");
        assert_eq!(decimal_from_bytes(&[0x00], 0), "0");
        assert_eq!(decimal_from_bytes(&[0x80], 0), "-128");
        assert_eq!(decimal_from_bytes(&[0x01, 0x00], 3), "0.256");
        // 10^38 - 1 does not fit u64 but must survive.
        let big: u128 = 10u128.pow(38) - 1;
        let bytes = big.to_be_bytes();
        assert_eq!(
            decimal_from_bytes(&bytes, 2),
            "999999999999999999999999999999999999.99"
        );
        assert!(decimal_from_base64("***", 2).is_err());
    }

    #[test]
    fn short_decimals_format_like_the_long_path() {
        // Up to 16 bytes go through i128; wider ones through byte division. Both must agree,
        // signs, padding and i128::MIN included.
        let mut cases: Vec<Vec<u8>> = vec![vec![], vec![0], vec![0xFF], vec![0x80; 16]];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for len in 1..=16 {
            for _ in 0..50 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                cases.push((0..len).map(|i| (x >> ((i % 8) * 8)) as u8).collect());
            }
        }
        for bytes in cases {
            for scale in [0, 1, 2, 5, 30] {
                assert_eq!(
                    decimal_from_bytes(&bytes, scale),
                    decimal_from_long_bytes(&bytes, scale),
                    "{bytes:02x?} scale {scale}"
                );
            }
        }
        // 17 bytes: -1 sign-extended, and a long base64 text.
        assert_eq!(decimal_from_bytes(&[0xFF; 17], 3), "-0.001");
        let mut two_to_128 = [0u8; 17];
        two_to_128[0] = 1;
        let wide = base64::engine::general_purpose::STANDARD.encode(two_to_128);
        assert_eq!(
            decimal_from_base64(&wide, 2).unwrap(),
            "3402823669209384634633746074317682114.56"
        );
    }

    #[test]
    fn temporal_values_become_iso_text() {
        let col = Column {
            name: "d".into(),
            ty: ColumnType::Date,
            optional: true,
        };
        let cell = normalise(&col, WireFormat::DateDays, Value::from(19000)).unwrap();
        assert_eq!(cell, Cell::Value(Value::from("2022-01-08")));
        let cell = normalise(
            &col,
            WireFormat::Timestamp { per_sec: 1_000_000 },
            Value::from(1_700_000_000_123_456i64),
        )
        .unwrap();
        assert_eq!(cell, Cell::Value(Value::from("2023-11-14T22:13:20.123456")));
        let cell = normalise(
            &col,
            WireFormat::TimeOfDay { per_sec: 1_000_000 },
            Value::from(3_723_000_001i64),
        )
        .unwrap();
        assert_eq!(cell, Cell::Value(Value::from("01:02:03.000001")));
    }

    #[test]
    fn placeholder_means_unchanged() {
        let col = Column {
            name: "description".into(),
            ty: ColumnType::Text,
            optional: true,
        };
        let cell = normalise(&col, WireFormat::Plain, Value::from(UNAVAILABLE_VALUE)).unwrap();
        assert_eq!(cell, Cell::Unchanged);
    }
}
