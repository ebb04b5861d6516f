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

/// 10^19: the largest power of ten in a u64, so each division pass yields 19 digits.
const CHUNK: u64 = 10_000_000_000_000_000_000;
/// The reciprocal of [`CHUNK`] for [`div_chunk`]: floor((2^128 - 1) / CHUNK) - 2^64.
const CHUNK_RECIPROCAL: u64 = (u128::MAX / CHUNK as u128 - (1 << 64)) as u64;

/// `(hi * 2^64 + lo) / 10^19` and its remainder, for `hi < 10^19`. A 128-bit division is a
/// library call with a hardware divide; this is two multiplications by a precomputed
/// reciprocal (Möller and Granlund, "Improved division by invariant integers", 2011,
/// algorithm 4), which needs a divisor with its top bit set, as 10^19 has.
#[inline]
fn div_chunk(hi: u64, lo: u64) -> (u64, u64) {
    const _: () = assert!(CHUNK >= 1 << 63, "the divisor must be normalised");
    // No overflow: hi * (2^64 + reciprocal) + lo < 2^128 for hi < CHUNK.
    let estimate =
        u128::from(CHUNK_RECIPROCAL) * u128::from(hi) + ((u128::from(hi) << 64) | u128::from(lo));
    let mut q = ((estimate >> 64) as u64).wrapping_add(1);
    let mut r = lo.wrapping_sub(q.wrapping_mul(CHUNK));
    if r > estimate as u64 {
        q = q.wrapping_sub(1);
        r = r.wrapping_add(CHUNK);
    }
    if r >= CHUNK {
        q += 1;
        r -= CHUNK;
    }
    (q, r)
}

/// [`decimal_from_bytes`] for integers wider than 128 bits. PostgreSQL's unconstrained
/// `numeric` reaches ~147,000 digits (~61 KB of bytes): each pass divides the whole number, as
/// 64-bit limbs, by 10^19, so a pass costs one [`div_chunk`] per limb and yields 19 digits.
/// Still quadratic, but 50 KB converts in tens of milliseconds rather than ~16 s.
fn decimal_from_long_bytes(bytes: &[u8], scale: u32) -> String {
    let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
    // The magnitude as big-endian 64-bit limbs; a negative number is its two's complement
    // negated (invert, then add one from the least significant limb up).
    let pad = (8 - bytes.len() % 8) % 8;
    let fill = if negative { 0xFF } else { 0 };
    let mut limbs: Vec<u64> = std::iter::repeat_n(fill, pad)
        .chain(bytes.iter().copied())
        .collect::<Vec<u8>>()
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().expect("chunks of 8")))
        .collect();
    if negative {
        let mut carry = true;
        for limb in limbs.iter_mut().rev() {
            (*limb, carry) = (!*limb).overflowing_add(u64::from(carry));
        }
    }
    // Base-10^19 chunks, least significant first. Each sweep divides twice: the second
    // division takes the first one's quotient limbs as they come out, and the two remainder
    // chains do not wait on each other, so the processor overlaps them (50 KB: 78 -> 49 ms).
    let mut chunks = Vec::with_capacity(limbs.len() * 64 / 63 + 2);
    let mut start = limbs.iter().position(|&l| l != 0).unwrap_or(limbs.len());
    while start < limbs.len() {
        let (mut low, mut high) = (0, 0);
        for limb in &mut limbs[start..] {
            let q;
            (q, low) = div_chunk(low, *limb);
            (*limb, high) = div_chunk(high, q);
        }
        chunks.extend([low, high]);
        while start < limbs.len() && limbs[start] == 0 {
            start += 1;
        }
    }
    // The last sweep's second division may have had nothing left to divide.
    while chunks.last() == Some(&0) {
        chunks.pop();
    }
    let mut digits = String::with_capacity(chunks.len() * 19);
    for (i, chunk) in chunks.iter().rev().enumerate() {
        // The most significant chunk without leading zeros, the others with all 19 digits.
        let mut buf = itoa::Buffer::new();
        let text = buf.format(*chunk);
        if i > 0 {
            digits.extend(std::iter::repeat_n('0', 19 - text.len()));
        }
        digits.push_str(text);
    }
    with_scale(negative, &digits, scale)
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
    fn division_by_the_reciprocal_matches_u128_division() {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut cases = vec![(0, 0), (0, u64::MAX), (CHUNK - 1, u64::MAX), (CHUNK - 1, 0)];
        for _ in 0..100_000 {
            cases.push((next() % CHUNK, next()));
        }
        for (hi, lo) in cases {
            let n = (u128::from(hi) << 64) | u128::from(lo);
            let want = (
                (n / u128::from(CHUNK)) as u64,
                (n % u128::from(CHUNK)) as u64,
            );
            assert_eq!(div_chunk(hi, lo), want, "{hi} {lo}");
        }
    }

    /// Big-endian two's-complement bytes of a decimal integer, built by multiplying and adding
    /// (the opposite of the division under test), with 32-bit limbs.
    fn twos_complement_bytes(digits: &str, negative: bool) -> Vec<u8> {
        let mut limbs: Vec<u32> = vec![0]; // least significant first
        for group in digits.as_bytes().chunks(9) {
            let mul = 10u64.pow(group.len() as u32);
            let mut carry: u64 = group.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0'));
            for limb in limbs.iter_mut() {
                let t = u64::from(*limb) * mul + carry;
                *limb = t as u32;
                carry = t >> 32;
            }
            if carry > 0 {
                limbs.push(carry as u32);
            }
        }
        // A zero limb on top keeps the sign bit clear before negating.
        limbs.push(0);
        if negative {
            let mut carry = true;
            for limb in limbs.iter_mut() {
                (*limb, carry) = (!*limb).overflowing_add(u32::from(carry));
            }
        }
        limbs.iter().rev().flat_map(|l| l.to_be_bytes()).collect()
    }

    #[test]
    fn very_long_decimals_convert_exactly() {
        // 131,072 digits: PostgreSQL's limit before the point (~54 KB of bytes).
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let digits: String = (0..131_072)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let d = (x % 10) as u8;
                char::from(b'0' + if i == 0 { d.max(1) } else { d })
            })
            .collect();
        let bytes = twos_complement_bytes(&digits, false);
        assert!(bytes.len() > 50_000);
        assert_eq!(decimal_from_bytes(&bytes, 0), digits);
        let negative = twos_complement_bytes(&digits, true);
        let (int, frac) = digits.split_at(digits.len() - 16_383);
        assert_eq!(
            decimal_from_bytes(&negative, 16_383),
            format!("-{int}.{frac}")
        );
        // Chunks with inner zeros keep them: 10^200 + 7, and 10^19 exactly (one whole chunk).
        let sparse = format!("1{}7", "0".repeat(199));
        assert_eq!(
            decimal_from_bytes(&twos_complement_bytes(&sparse, false), 0),
            sparse
        );
        let chunk = twos_complement_bytes("10000000000000000000", false);
        let mut wide = vec![0u8; 32 - chunk.len()];
        wide.extend(chunk);
        assert_eq!(decimal_from_bytes(&wide, 0), "10000000000000000000");
        assert_eq!(decimal_from_bytes(&[0u8; 40], 3), "0.000");
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
