//! A reader compiled once per Avro writer schema: it walks the binary datum with the schema's
//! shape known in advance and writes floe's cells straight from the bytes, with no generic Avro
//! value, no field-name strings per record, and strings of the envelope borrowed from the
//! message. Values come out exactly as Kafka Connect's JSON converter writes the same Connect
//! value, so a column is typed and loaded the same through either converter.

use std::borrow::Cow;
use std::collections::HashMap;

use apache_avro::schema::{InnerDecimalSchema, Name, Schema, UuidSchema};
use base64::Engine as _;
use serde_json::{Map, Value};

use super::envelope::{Source, TypedImage, TypedPayload};
use super::schema::{decimal_from_bytes, normalise, ImageSchema, WireFormat, UNAVAILABLE_VALUE};
use super::DecodeError;
use crate::change::Cell;

/// Deepest nesting of types a schema may have (Debezium's are a few levels deep; a recursive
/// type would otherwise never end).
const MAX_DEPTH: usize = 32;

/// How to read one Avro type.
#[derive(Debug, Clone)]
enum Node {
    Null,
    Boolean,
    /// `int`, and the logical types on it (`date`, `time-millis`).
    Int,
    /// `long`, and the logical types on it (times and timestamps).
    Long,
    Float,
    Double,
    /// `bytes`, and `decimal` / `big-decimal` on bytes.
    Bytes,
    String,
    /// `fixed` of this size (`decimal` on fixed, `duration`).
    Fixed(usize),
    /// `uuid` on 16 raw bytes (a `fixed`, or `bytes` of that length): its canonical text.
    UuidBytes {
        fixed: bool,
    },
    /// `uuid` on a `string`: parsed, and written as its canonical (lower-case) text.
    UuidText,
    Enum(Vec<String>),
    Array(Box<Node>),
    Map(Box<Node>),
    Union(Vec<Node>),
    Record(Vec<(String, Node)>),
}

/// What a field of the envelope is.
#[derive(Debug, Clone, Copy)]
enum Role {
    Before,
    After,
    Source,
    Op,
    Other,
}

/// What a field of the `source` block is.
#[derive(Debug, Clone, Copy)]
enum SourceRole {
    Lsn,
    TsMs,
    Schema,
    Table,
    Sequence,
    Other,
}

/// A compiled reader for one writer schema: a Debezium envelope, or a key record.
#[derive(Debug)]
pub struct Reader {
    root: Node,
    roles: Vec<Role>,
    source_roles: Vec<SourceRole>,
}

impl Reader {
    /// Compiles `schema`; refuses types floe cannot read and row records whose fields do not
    /// match `image` (the columns mapped from the same schema).
    pub fn compile(schema: &Schema, image: Option<&ImageSchema>) -> Result<Reader, String> {
        let mut named = HashMap::new();
        collect_names(schema, &mut named, 0)?;
        let root = node(schema, &named, 0)?;
        let Node::Record(fields) = &root else {
            return Err("not an Avro record schema".into());
        };
        let mut roles = Vec::with_capacity(fields.len());
        let mut source_roles = Vec::new();
        for (name, n) in fields {
            roles.push(match name.as_str() {
                "before" => Role::Before,
                "after" => Role::After,
                "op" => Role::Op,
                "source" => {
                    let Some(Node::Record(sf)) = non_null(n) else {
                        return Err("`source` is not a record".into());
                    };
                    source_roles = sf
                        .iter()
                        .map(|(f, _)| match f.as_str() {
                            "lsn" => SourceRole::Lsn,
                            "ts_ms" => SourceRole::TsMs,
                            "schema" => SourceRole::Schema,
                            "table" => SourceRole::Table,
                            "sequence" => SourceRole::Sequence,
                            _ => SourceRole::Other,
                        })
                        .collect();
                    Role::Source
                }
                _ => Role::Other,
            });
            if let (Role::Before | Role::After, Some(image)) = (roles[roles.len() - 1], image) {
                match non_null(n) {
                    Some(Node::Record(cells)) if cells.len() == image.columns.len() => {}
                    Some(Node::Record(cells)) => {
                        return Err(format!(
                            "`{name}` has {} fields, its row image {}",
                            cells.len(),
                            image.columns.len()
                        ))
                    }
                    _ => return Err(format!("`{name}` is not a row record")),
                }
            }
        }
        Ok(Reader {
            root,
            roles,
            source_roles,
        })
    }

    /// Reads a Debezium envelope whose rows are `image`'s.
    pub fn envelope<'a>(
        &self,
        image: Option<&ImageSchema>,
        mut bytes: &'a [u8],
    ) -> Result<TypedPayload<'a>, DecodeError> {
        let Node::Record(fields) = &self.root else {
            return Err(DecodeError::NotEnvelope(
                "the value is not an Avro record".into(),
            ));
        };
        let buf = &mut bytes;
        let mut payload = TypedPayload {
            before: None,
            after: None,
            source: None,
            op: None,
        };
        for ((name, n), role) in fields.iter().zip(&self.roles) {
            match role {
                Role::Before | Role::After => {
                    let row = branch(n, buf)?;
                    let cells = match (row, image) {
                        (Node::Null, _) => None,
                        (Node::Record(cells), Some(image)) => Some(row_cells(image, cells, buf)?),
                        _ => {
                            return Err(DecodeError::NotEnvelope(format!(
                                "`{name}` is not a row image"
                            )))
                        }
                    };
                    if matches!(role, Role::Before) {
                        payload.before = cells;
                    } else {
                        payload.after = cells;
                    }
                }
                Role::Source => payload.source = self.source(branch(n, buf)?, buf)?,
                Role::Op => match branch(n, buf)? {
                    Node::String => payload.op = Some(Cow::Borrowed(read_str(buf)?)),
                    other => skip(other, buf)?,
                },
                Role::Other => skip(n, buf)?,
            }
        }
        Ok(payload)
    }

    /// Reads a key record: its cells, typed by `image` (the same record's columns).
    pub fn key(&self, image: &ImageSchema, mut bytes: &[u8]) -> Result<TypedImage, DecodeError> {
        let Node::Record(cells) = &self.root else {
            return Err(DecodeError::BadKey("the key is not an Avro record".into()));
        };
        if cells.len() != image.columns.len() {
            return Err(DecodeError::NotAvro(format!(
                "row has {} fields, its schema {}",
                cells.len(),
                image.columns.len()
            )));
        }
        row_cells(image, cells, &mut bytes)
    }

    /// Debezium's `source` block.
    fn source<'a>(&self, n: &Node, buf: &mut &'a [u8]) -> Result<Option<Source<'a>>, DecodeError> {
        let Node::Record(fields) = n else {
            return Err(DecodeError::NotEnvelope("`source` is not a record".into()));
        };
        let mut s = Source {
            lsn: None,
            ts_ms: None,
            schema: None,
            table: None,
            last_commit: None,
        };
        for ((_, n), role) in fields.iter().zip(&self.source_roles) {
            let n = branch(n, buf)?;
            match (role, n) {
                (SourceRole::Lsn, Node::Long) => s.lsn = u64::try_from(read_long(buf)?).ok(),
                (SourceRole::TsMs, Node::Long) => s.ts_ms = Some(read_long(buf)?),
                (SourceRole::Schema, Node::String) => {
                    s.schema = Some(Cow::Borrowed(read_str(buf)?))
                }
                (SourceRole::Table, Node::String) => s.table = Some(Cow::Borrowed(read_str(buf)?)),
                (SourceRole::Sequence, Node::String) => {
                    s.last_commit = crate::change::last_commit_from_sequence(read_str(buf)?)
                }
                _ => skip(n, buf)?,
            }
        }
        Ok(Some(s))
    }
}

/// The type of a `[null, T]`-style field once its branch is known: `T` when there is one
/// non-null branch.
fn non_null(n: &Node) -> Option<&Node> {
    match n {
        Node::Union(branches) => {
            let mut it = branches.iter().filter(|b| !matches!(b, Node::Null));
            match (it.next(), it.next()) {
                (Some(one), None) => Some(one),
                _ => None,
            }
        }
        other => Some(other),
    }
}

/// For a union, reads the branch index and returns that branch; any other type is itself.
fn branch<'n>(n: &'n Node, buf: &mut &[u8]) -> Result<&'n Node, DecodeError> {
    match n {
        Node::Union(branches) => {
            let i = read_long(buf)?;
            usize::try_from(i)
                .ok()
                .and_then(|i| branches.get(i))
                .ok_or_else(|| datum(format!("union branch {i} out of range")))
        }
        other => Ok(other),
    }
}

/// The cells of a row record, normalised like the JSON converter's values.
fn row_cells(
    image: &ImageSchema,
    fields: &[(String, Node)],
    buf: &mut &[u8],
) -> Result<TypedImage, DecodeError> {
    let mut cells = Vec::with_capacity(fields.len());
    for ((_, n), (col, fmt)) in fields.iter().zip(image.columns.iter().zip(&image.formats)) {
        let n = branch(n, buf)?;
        let cell = match (fmt, n) {
            (WireFormat::DecimalBytes { scale }, Node::Bytes) => {
                Cell::Value(Value::String(decimal_from_bytes(read_bytes(buf)?, *scale)))
            }
            (WireFormat::DecimalBytes { scale }, Node::Fixed(size)) => {
                Cell::Value(Value::String(decimal_from_bytes(take(buf, *size)?, *scale)))
            }
            (_, Node::Bytes) => {
                let b = read_bytes(buf)?;
                if b == UNAVAILABLE_VALUE.as_bytes() {
                    Cell::Unchanged
                } else {
                    normalise(col, *fmt, base64(b))?
                }
            }
            (fmt, n) => normalise(col, *fmt, read_json(n, buf, 0)?)?,
        };
        cells.push(cell);
    }
    Ok(TypedImage(cells))
}

/// One value as Kafka Connect's JSON converter writes the same Connect value.
fn read_json(n: &Node, buf: &mut &[u8], depth: usize) -> Result<Value, DecodeError> {
    if depth > MAX_DEPTH {
        return Err(datum("nested too deep".into()));
    }
    Ok(match n {
        Node::Null => Value::Null,
        Node::Boolean => match take(buf, 1)?[0] {
            0 => Value::Bool(false),
            1 => Value::Bool(true),
            b => return Err(datum(format!("boolean byte {b}"))),
        },
        Node::Int => Value::from(read_int(buf)?),
        Node::Long => Value::from(read_long(buf)?),
        // The shortest text of the f32 (as the JSON converter writes it), not its widened bits:
        // 3.4e38 stays 3.4e38 rather than 3.3999999521443642e38.
        Node::Float => {
            let f = f32::from_le_bytes(fixed_array(buf)?);
            float(f.to_string().parse().unwrap_or(f64::from(f)))
        }
        Node::Double => float(f64::from_le_bytes(fixed_array(buf)?)),
        Node::Bytes => base64(read_bytes(buf)?),
        Node::Fixed(size) => base64(take(buf, *size)?),
        Node::UuidBytes { fixed } => {
            let b = if *fixed {
                take(buf, 16)?
            } else {
                read_bytes(buf)?
            };
            if b.len() != 16 {
                return Err(datum(format!("a uuid of {} bytes", b.len())));
            }
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            Value::String(canonical_uuid(&hex))
        }
        Node::UuidText => {
            let t = read_str(buf)?;
            let bare = t.trim_start_matches("urn:uuid:");
            let bare = bare
                .strip_prefix('{')
                .and_then(|b| b.strip_suffix('}'))
                .unwrap_or(bare);
            let hex: String = bare.chars().filter(|c| *c != '-').collect();
            if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(datum(format!("`{t}` is not a uuid")));
            }
            Value::String(canonical_uuid(&hex.to_ascii_lowercase()))
        }
        Node::String => Value::String(read_str(buf)?.to_string()),
        Node::Enum(symbols) => {
            let i = read_long(buf)?;
            let s = usize::try_from(i)
                .ok()
                .and_then(|i| symbols.get(i))
                .ok_or_else(|| datum(format!("enum index {i} out of range")))?;
            Value::String(s.clone())
        }
        Node::Union(_) => {
            let b = branch(n, buf)?;
            read_json(b, buf, depth + 1)?
        }
        Node::Array(items) => {
            let mut out = Vec::new();
            blocks(buf, |buf| {
                out.push(read_json(items, buf, depth + 1)?);
                Ok(())
            })?;
            Value::Array(out)
        }
        Node::Map(values) => {
            let mut out = Map::new();
            blocks(buf, |buf| {
                let k = read_str(buf)?.to_string();
                out.insert(k, read_json(values, buf, depth + 1)?);
                Ok(())
            })?;
            Value::Object(out)
        }
        Node::Record(fields) => {
            let mut out = Map::new();
            for (name, f) in fields {
                out.insert(name.clone(), read_json(f, buf, depth + 1)?);
            }
            Value::Object(out)
        }
    })
}

/// Moves past one value.
fn skip(n: &Node, buf: &mut &[u8]) -> Result<(), DecodeError> {
    match n {
        Node::Null => {}
        Node::Boolean => {
            take(buf, 1)?;
        }
        Node::Int | Node::Long | Node::Enum(_) => {
            read_long(buf)?;
        }
        Node::Float => {
            take(buf, 4)?;
        }
        Node::Double => {
            take(buf, 8)?;
        }
        Node::Bytes | Node::String => {
            read_bytes(buf)?;
        }
        Node::Fixed(size) => {
            take(buf, *size)?;
        }
        Node::UuidBytes { fixed: true } => {
            take(buf, 16)?;
        }
        Node::UuidBytes { fixed: false } | Node::UuidText => {
            read_bytes(buf)?;
        }
        Node::Union(_) => {
            let b = branch(n, buf)?;
            skip(b, buf)?;
        }
        Node::Array(items) => blocks(buf, |buf| skip(items, buf))?,
        Node::Map(values) => blocks(buf, |buf| {
            read_bytes(buf)?;
            skip(values, buf)
        })?,
        Node::Record(fields) => {
            for (_, f) in fields {
                skip(f, buf)?;
            }
        }
    }
    Ok(())
}

/// The blocks of an array or a map: a count, then that many items, until a zero count (a
/// negative count is followed by the block's size in bytes).
fn blocks(
    buf: &mut &[u8],
    mut item: impl FnMut(&mut &[u8]) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    loop {
        let mut count = read_long(buf)?;
        if count == 0 {
            return Ok(());
        }
        if count < 0 {
            count = count
                .checked_neg()
                .ok_or_else(|| datum("bad block count".into()))?;
            read_long(buf)?;
        }
        // Every item takes a byte at least (arrays of items written in no bytes are refused).
        if count as u64 > buf.len() as u64 {
            return Err(datum(format!(
                "a block of {count} items in {} bytes",
                buf.len()
            )));
        }
        for _ in 0..count {
            item(buf)?;
        }
    }
}

/// Whether values of `n` are written in no bytes at all.
fn takes_no_bytes(n: &Node) -> bool {
    match n {
        Node::Null | Node::Fixed(0) => true,
        Node::Record(fields) => fields.iter().all(|(_, f)| takes_no_bytes(f)),
        _ => false,
    }
}

/// 32 lower-case hex digits as `8-4-4-4-12`.
fn canonical_uuid(hex: &str) -> String {
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

fn datum(reason: String) -> DecodeError {
    DecodeError::NotAvro(format!("the datum does not match its schema: {reason}"))
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], DecodeError> {
    if buf.len() < n {
        return Err(datum("it ends too early".into()));
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

fn fixed_array<const N: usize>(buf: &mut &[u8]) -> Result<[u8; N], DecodeError> {
    let b = take(buf, N)?;
    let mut out = [0u8; N];
    out.copy_from_slice(b);
    Ok(out)
}

/// A zigzag-encoded variable-length long.
fn read_long(buf: &mut &[u8]) -> Result<i64, DecodeError> {
    let mut value: u64 = 0;
    for (i, &b) in buf.iter().enumerate() {
        if i >= 10 {
            break;
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            *buf = &buf[i + 1..];
            return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    Err(datum("a variable-length number is cut or too long".into()))
}

fn read_int(buf: &mut &[u8]) -> Result<i32, DecodeError> {
    let n = read_long(buf)?;
    i32::try_from(n).map_err(|_| datum(format!("int {n} out of range")))
}

fn read_bytes<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], DecodeError> {
    let len = read_long(buf)?;
    let len = usize::try_from(len).map_err(|_| datum(format!("negative length {len}")))?;
    take(buf, len)
}

fn read_str<'a>(buf: &mut &'a [u8]) -> Result<&'a str, DecodeError> {
    let b = read_bytes(buf)?;
    simdutf8::basic::from_utf8(b).map_err(|_| datum("a string is not UTF-8".into()))
}

fn base64(b: &[u8]) -> Value {
    Value::String(base64::engine::general_purpose::STANDARD.encode(b))
}

/// A float as JSON; NaN and the infinities become the text PostgreSQL and Snowflake use.
pub fn float(f: f64) -> Value {
    if f.is_nan() {
        Value::String("NaN".into())
    } else if f == f64::INFINITY {
        Value::String("Infinity".into())
    } else if f == f64::NEG_INFINITY {
        Value::String("-Infinity".into())
    } else {
        Value::from(f)
    }
}

/// Every named type of the schema, by full name, for the references to it.
fn collect_names<'s>(
    s: &'s Schema,
    named: &mut HashMap<Name, &'s Schema>,
    depth: usize,
) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err("the schema is nested too deep".into());
    }
    match s {
        Schema::Record(r) => {
            named.insert(r.name.clone(), s);
            for f in &r.fields {
                collect_names(&f.schema, named, depth + 1)?;
            }
        }
        Schema::Enum(e) => {
            named.insert(e.name.clone(), s);
        }
        Schema::Fixed(f) | Schema::Duration(f) => {
            named.insert(f.name.clone(), s);
        }
        Schema::Decimal(d) => {
            if let InnerDecimalSchema::Fixed(f) = &d.inner {
                named.insert(f.name.clone(), s);
            }
        }
        Schema::Uuid(UuidSchema::Fixed(f)) => {
            named.insert(f.name.clone(), s);
        }
        Schema::Array(a) => collect_names(&a.items, named, depth + 1)?,
        Schema::Map(m) => collect_names(&m.types, named, depth + 1)?,
        Schema::Union(u) => {
            for v in u.variants() {
                collect_names(v, named, depth + 1)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn node(s: &Schema, named: &HashMap<Name, &Schema>, depth: usize) -> Result<Node, String> {
    if depth > MAX_DEPTH {
        return Err("the schema is nested too deep (a recursive type?)".into());
    }
    let next = |s: &Schema| node(s, named, depth + 1);
    Ok(match s {
        Schema::Null => Node::Null,
        Schema::Boolean => Node::Boolean,
        Schema::Int | Schema::Date | Schema::TimeMillis => Node::Int,
        Schema::Long
        | Schema::TimeMicros
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => Node::Long,
        Schema::Float => Node::Float,
        Schema::Double => Node::Double,
        Schema::Bytes | Schema::BigDecimal => Node::Bytes,
        Schema::String => Node::String,
        Schema::Uuid(UuidSchema::String) => Node::UuidText,
        Schema::Uuid(UuidSchema::Bytes) => Node::UuidBytes { fixed: false },
        Schema::Uuid(UuidSchema::Fixed(_)) => Node::UuidBytes { fixed: true },
        Schema::Decimal(d) => match &d.inner {
            InnerDecimalSchema::Bytes => Node::Bytes,
            InnerDecimalSchema::Fixed(f) => Node::Fixed(f.size),
        },
        Schema::Fixed(f) | Schema::Duration(f) => Node::Fixed(f.size),
        Schema::Enum(e) => Node::Enum(e.symbols.clone()),
        Schema::Array(a) => {
            let items = next(&a.items)?;
            // Every item must take a byte at least, so that no count can outrun the datum.
            if takes_no_bytes(&items) {
                return Err(
                    "arrays of a type written in no bytes (null, fixed(0), an empty record) are not supported"
                        .into(),
                );
            }
            Node::Array(Box::new(items))
        }
        Schema::Map(m) => Node::Map(Box::new(next(&m.types)?)),
        Schema::Union(u) => Node::Union(u.variants().iter().map(next).collect::<Result<_, _>>()?),
        Schema::Record(r) => Node::Record(
            r.fields
                .iter()
                .map(|f| Ok((f.name.clone(), next(&f.schema)?)))
                .collect::<Result<_, String>>()?,
        ),
        Schema::Ref { name } => match named.get(name) {
            Some(target) => next(target)?,
            None => return Err(format!("unknown type `{}`", name.fullname(None))),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::types::Value as Avro;
    use serde_json::json;

    fn encode(schema: &Schema, value: Avro) -> Vec<u8> {
        apache_avro::writer::datum::GenericDatumWriter::builder(schema)
            .build()
            .expect("writer")
            .write_value_to_vec(value)
            .expect("encode")
    }

    /// Every Avro type reads as the JSON converter writes the same Connect value, references to
    /// named types resolve, and the whole datum is consumed.
    #[test]
    fn reads_every_type_as_the_json_converter_writes_it() {
        let text = r#"{"type":"record","name":"R","namespace":"n","fields":[
            {"name":"b","type":"boolean"},
            {"name":"i","type":"int"},
            {"name":"l","type":"long"},
            {"name":"f","type":"float"},
            {"name":"d","type":"double"},
            {"name":"nan","type":"double"},
            {"name":"by","type":"bytes"},
            {"name":"s","type":"string"},
            {"name":"fx","type":{"type":"fixed","name":"F4","size":4}},
            {"name":"fx2","type":"F4"},
            {"name":"e","type":{"type":"enum","name":"E","symbols":["A","B"]}},
            {"name":"a","type":{"type":"array","items":["null","long"]}},
            {"name":"m","type":{"type":"map","values":"string"}},
            {"name":"u","type":["null","string","long"]},
            {"name":"nested","type":{"type":"record","name":"Inner","fields":[{"name":"x","type":"int"}]}},
            {"name":"date","type":{"type":"int","logicalType":"date"}},
            {"name":"ts","type":{"type":"long","logicalType":"timestamp-micros"}}]}"#;
        let schema = Schema::parse_str(text).expect("schema");
        let value = Avro::Record(vec![
            ("b".into(), Avro::Boolean(true)),
            ("i".into(), Avro::Int(-7)),
            ("l".into(), Avro::Long(i64::MIN)),
            ("f".into(), Avro::Float(3.4e38)),
            ("d".into(), Avro::Double(-0.5)),
            ("nan".into(), Avro::Double(f64::NAN)),
            ("by".into(), Avro::Bytes(vec![0, 255])),
            ("s".into(), Avro::String("héllo".into())),
            ("fx".into(), Avro::Fixed(4, vec![1, 2, 3, 4])),
            ("fx2".into(), Avro::Fixed(4, vec![5, 6, 7, 8])),
            ("e".into(), Avro::Enum(1, "B".into())),
            (
                "a".into(),
                Avro::Array(vec![
                    Avro::Union(1, Box::new(Avro::Long(1))),
                    Avro::Union(0, Box::new(Avro::Null)),
                ]),
            ),
            (
                "m".into(),
                Avro::Map([("k".to_string(), Avro::String("v".into()))].into()),
            ),
            ("u".into(), Avro::Union(2, Box::new(Avro::Long(42)))),
            (
                "nested".into(),
                Avro::Record(vec![("x".into(), Avro::Int(9))]),
            ),
            ("date".into(), Avro::Date(19000)),
            ("ts".into(), Avro::TimestampMicros(1_700_000_000_000_000)),
        ]);
        let bytes = encode(&schema, value);
        let mut named = HashMap::new();
        collect_names(&schema, &mut named, 0).expect("names");
        let n = node(&schema, &named, 0).expect("node");
        let mut buf = bytes.as_slice();
        let got = read_json(&n, &mut buf, 0).expect("read");
        assert!(buf.is_empty(), "{} bytes left", buf.len());
        assert_eq!(
            got,
            json!({
                "b": true, "i": -7, "l": i64::MIN, "f": 3.4e38, "d": -0.5, "nan": "NaN",
                "by": "AP8=", "s": "héllo", "fx": "AQIDBA==", "fx2": "BQYHCA==", "e": "B",
                "a": [1, null], "m": {"k": "v"}, "u": 42, "nested": {"x": 9},
                "date": 19000, "ts": 1_700_000_000_000_000i64
            })
        );
        // The same datum skipped leaves nothing either; cut short, it is an error, not a panic.
        let mut buf = bytes.as_slice();
        skip(&n, &mut buf).expect("skip");
        assert!(buf.is_empty());
        for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
            let mut short = &bytes[..cut];
            assert!(read_json(&n, &mut short, 0).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn blocks_with_sizes_and_bad_lengths() {
        // An array written in one block of -2 items with its byte size, then the end.
        let items = Node::Array(Box::new(Node::Long));
        let bytes = [0x03, 0x04, 0x02, 0x04, 0x00];
        let mut buf = &bytes[..];
        assert_eq!(read_json(&items, &mut buf, 0).expect("read"), json!([1, 2]));
        assert!(buf.is_empty());
        // A negative string length, and a union branch that does not exist.
        assert!(read_json(&Node::String, &mut &[0x01u8][..], 0).is_err());
        let u = Node::Union(vec![Node::Null, Node::Long]);
        assert!(read_json(&u, &mut &[0x04u8, 0x02][..], 0).is_err());
        // A varint that never ends.
        assert!(read_long(&mut &[0xffu8; 11][..]).is_err());
    }

    #[test]
    fn refuses_what_could_outrun_the_datum_and_writes_uuids_canonically() {
        // An array of nulls could claim 2^62 items in ten bytes: refused with its schema.
        let nulls = Schema::parse_str(
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":{"type":"array","items":"null"}}]}"#,
        )
        .expect("schema");
        let err = Reader::compile(&nulls, None).expect_err("refused");
        assert!(err.contains("no bytes"), "{err}");
        // A block claiming more items than bytes are left fails at once.
        let longs = Node::Array(Box::new(Node::Long));
        let huge = [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0x02];
        assert!(read_json(&longs, &mut &huge[..], 0).is_err());
        assert!(skip(&longs, &mut &huge[..]).is_err());
        // uuid on a string: parsed and written lower case; not a uuid: an error.
        let text = |t: &str| {
            let mut b = vec![(t.len() as u8) << 1];
            b.extend_from_slice(t.as_bytes());
            read_json(&Node::UuidText, &mut b.as_slice(), 0)
        };
        assert_eq!(
            text("6F9619FF-8B86-D011-B42D-00C04FC964FF").expect("uuid"),
            json!("6f9619ff-8b86-d011-b42d-00c04fc964ff")
        );
        assert_eq!(
            text("{6f9619ff8b86d011b42d00c04fc964ff}").expect("uuid"),
            json!("6f9619ff-8b86-d011-b42d-00c04fc964ff")
        );
        assert!(text("not-a-uuid").is_err());
        // uuid on bytes: exactly 16 of them.
        let mut sixteen = vec![32u8];
        sixteen.extend(0u8..16);
        assert_eq!(
            read_json(
                &Node::UuidBytes { fixed: false },
                &mut sixteen.as_slice(),
                0
            )
            .expect("uuid"),
            json!("00010203-0405-0607-0809-0a0b0c0d0e0f")
        );
        assert!(read_json(&Node::UuidBytes { fixed: false }, &mut &[2u8, 1][..], 0).is_err());
    }
}
