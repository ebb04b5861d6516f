//! Decode throughput of the same Debezium events as JSON (with the embedded schema, as captured
//! from the stack in `benches/fixtures/`) and as Avro in Confluent's wire format (the same events
//! re-encoded with the writer schemas the stack's Avro connector registered, kept in
//! `benches/fixtures/debezium-transactions-avro-schemas.json`). One thread, no network: the
//! Avro decoder is given the schemas as the registry would answer them.
//! Prints `json_decode_records_per_sec`, `avro_decode_records_per_sec` and bytes per event.

use std::collections::HashMap;
use std::time::Instant;

use apache_avro::schema::{Name, Schema};
use apache_avro::types::Value as Avro;
use base64::Engine as _;
use floe::change::KafkaPosition;
use floe::decode::registry::Fetched;
use floe::decode::{AvroDecoder, Decoded, JsonDecoder};
use serde_json::Value;

mod common;

use common::load_fixture;

const KEY_ID: u32 = 1;
const VALUE_ID: u32 = 2;

fn main() {
    let total: usize = std::env::var("FLOE_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);
    let json_events = load_fixture();
    let schemas: Value = serde_json::from_str(include_str!(
        "fixtures/debezium-transactions-avro-schemas.json"
    ))
    .expect("schema fixture");
    let key_schema = Schema::parse(&schemas["key"]).expect("key schema");
    let value_schema = Schema::parse(&schemas["value"]).expect("value schema");
    let avro_events: Vec<(Vec<u8>, Vec<u8>)> = json_events
        .iter()
        .map(|(k, v)| {
            (
                encode(&key_schema, KEY_ID, &payload(k)),
                encode(&value_schema, VALUE_ID, &payload(v)),
            )
        })
        .collect();

    let mut json = JsonDecoder::new();
    let json_rate = run(total, &json_events, |k, v, pos| {
        json.decode(Some(k), Some(v), pos)
    });
    let mut avro = AvroDecoder::new(None);
    avro.learn(KEY_ID, Fetched::Schema(schemas["key"].to_string()));
    avro.learn(VALUE_ID, Fetched::Schema(schemas["value"].to_string()));
    let avro_rate = run(total, &avro_events, |k, v, pos| {
        avro.decode(Some(k), Some(v), pos)
    });

    let avg = |e: &[(Vec<u8>, Vec<u8>)]| {
        e.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() / e.len()
    };
    println!("decode_events={total}");
    println!("json_decode_records_per_sec={json_rate:.0}");
    println!("avro_decode_records_per_sec={avro_rate:.0}");
    println!("json_event_bytes_avg={}", avg(&json_events));
    println!("avro_event_bytes_avg={}", avg(&avro_events));
}

/// Decodes `total` events (cycling through `events`) and returns the rate per second.
fn run<F>(total: usize, events: &[(Vec<u8>, Vec<u8>)], mut decode: F) -> f64
where
    F: FnMut(&[u8], &[u8], KafkaPosition) -> Result<Decoded, floe::decode::DecodeError>,
{
    let start = Instant::now();
    let mut changes = 0usize;
    for i in 0..total {
        let (k, v) = &events[i % events.len()];
        let pos = KafkaPosition {
            partition: 0,
            offset: i as i64,
        };
        if let Decoded::Change(c) = decode(k, v, pos).expect("fixture decodes") {
            changes += usize::from(c.after.is_some() || c.before.is_some());
        }
    }
    assert!(changes > 0);
    total as f64 / start.elapsed().as_secs_f64()
}

/// The `payload` of a JSON converter message.
fn payload(bytes: &[u8]) -> Value {
    let mut v: Value = serde_json::from_slice(bytes).expect("fixture is JSON");
    v["payload"].take()
}

/// The JSON converter's value re-encoded as Avro in Confluent's wire format.
fn encode(schema: &Schema, id: u32, value: &Value) -> Vec<u8> {
    let mut names = HashMap::new();
    collect_names(schema, &mut names);
    let avro = to_avro(schema, value, &names);
    let writer = apache_avro::writer::datum::GenericDatumWriter::builder(schema)
        .build()
        .expect("writer");
    let mut out = vec![0u8];
    out.extend_from_slice(&id.to_be_bytes());
    out.extend(
        writer
            .write_value_to_vec(avro)
            .expect("event fits its schema"),
    );
    out
}

/// The named records of `schema`, for the references to them (`after` names `before`'s type).
fn collect_names(schema: &Schema, names: &mut HashMap<Name, Schema>) {
    match schema {
        Schema::Record(r) => {
            names.insert(r.name.clone(), schema.clone());
            for f in &r.fields {
                collect_names(&f.schema, names);
            }
        }
        Schema::Union(u) => u.variants().iter().for_each(|s| collect_names(s, names)),
        _ => {}
    }
}

fn to_avro(schema: &Schema, v: &Value, names: &HashMap<Name, Schema>) -> Avro {
    match schema {
        Schema::Ref { name } => {
            let s = names
                .get(name)
                .cloned()
                .expect("named type defined before use");
            to_avro(&s, v, names)
        }
        Schema::Union(u) => {
            let variants = u.variants();
            if v.is_null() {
                let i = variants
                    .iter()
                    .position(|s| *s == Schema::Null)
                    .expect("nullable");
                Avro::Union(i as u32, Box::new(Avro::Null))
            } else {
                let i = variants
                    .iter()
                    .position(|s| *s != Schema::Null)
                    .expect("a value branch");
                Avro::Union(i as u32, Box::new(to_avro(&variants[i], v, names)))
            }
        }
        Schema::Record(r) => Avro::Record(
            r.fields
                .iter()
                .map(|f| (f.name.clone(), to_avro(&f.schema, &v[&f.name], names)))
                .collect(),
        ),
        Schema::Decimal(_) => {
            let b64 = v.as_str().expect("decimal as base64");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .expect("base64");
            Avro::Decimal(bytes.into())
        }
        Schema::Null => Avro::Null,
        Schema::Boolean => Avro::Boolean(v.as_bool().expect("boolean")),
        Schema::Int => Avro::Int(v.as_i64().expect("int") as i32),
        Schema::Long => Avro::Long(v.as_i64().expect("long")),
        Schema::Float => Avro::Float(v.as_f64().expect("float") as f32),
        Schema::Double => Avro::Double(v.as_f64().expect("double")),
        Schema::String => Avro::String(v.as_str().expect("string").to_string()),
        other => panic!("the fixture has no {other:?} field"),
    }
}
