//! `floe plugin test`: runs one plugin on Debezium events from a file (one message per line:
//! its value, or its key, a tab and its value, as `kcat -f '%k\t%s\n'` captures a topic) and reports each event's decision and edits as JSON lines.
//! Nothing is loaded anywhere; the plugin runs in the same sandbox and limits as in the pipeline.

use std::io::{BufRead, Write};
use std::path::Path;

use anyhow::Context as _;
use serde_json::{json, Value as Json};

use super::bindings::exports::floe::plugin::transform::Decision;
use super::bindings::floe::plugin::types::{Edit, ValueResult as Value};
use super::convert::reaches_plugins;
use super::PluginEngine;
use crate::change::{Change, KafkaPosition};
use crate::config::PluginConfig;
use crate::decode::{Decoded, JsonDecoder};

/// Events waiting for a plugin call: line number, what to print about it, the change.
type Pending = Vec<(usize, Json, Change)>;

/// Runs `spec`'s plugin over `events` in batches of `batch`, writing one JSON line per event.
/// Returns the number of events per decision: (kept, dropped, rejected, undecodable).
pub fn run(
    spec: &PluginConfig,
    events: &Path,
    batch: usize,
    out: &mut impl Write,
) -> anyhow::Result<(usize, usize, usize, usize)> {
    let engine = PluginEngine::new(Some(std::env::temp_dir().join("floe-plugin-cache")))?;
    let mut plugin = engine.load(spec)?;
    let file =
        std::fs::File::open(events).with_context(|| format!("cannot open {}", events.display()))?;
    let mut decoder = JsonDecoder::new();
    let mut counts = (0, 0, 0, 0);
    let mut pending: Pending = Vec::new();
    let lines = std::io::BufReader::new(file).lines();
    let mut flush = |pending: &mut Pending,
                     out: &mut dyn Write,
                     counts: &mut (usize, usize, usize, usize)|
     -> anyhow::Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let changes: Vec<&Change> = pending.iter().map(|(_, _, c)| c).collect();
        let decisions = plugin.process(&changes)?;
        for ((line, head, _), decision) in pending.drain(..).zip(decisions) {
            let mut obj = head;
            obj["event"] = json!(line);
            match decision {
                Decision::Keep(edits) => {
                    counts.0 += 1;
                    obj["decision"] = json!("keep");
                    obj["edits"] = Json::Array(edits.into_iter().map(edit_json).collect());
                }
                Decision::Drop => {
                    counts.1 += 1;
                    obj["decision"] = json!("drop");
                }
                Decision::Reject(reason) => {
                    counts.2 += 1;
                    obj["decision"] = json!("reject");
                    obj["reason"] = json!(reason);
                }
            }
            writeln!(out, "{obj}")?;
        }
        Ok(())
    };
    for (n, line) in lines.enumerate() {
        let line = line.with_context(|| format!("reading {}", events.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let number = n + 1;
        let pos = KafkaPosition {
            partition: 0,
            offset: n as i64,
        };
        let (key, value) = match line.split_once('\t') {
            Some((k, v)) => (Some(k.as_bytes()), v),
            None => (None, line.as_str()),
        };
        match decoder.decode(key, Some(value.as_bytes()), pos) {
            Ok(Decoded::Change(change)) => match reaches_plugins(&change) {
                true => {
                    let head = json!({
                        "table": format!("{}.{}", change.table.schema, change.table.table),
                        "op": change.op.code(),
                    });
                    pending.push((number, head, *change));
                }
                false => writeln!(
                    out,
                    "{}",
                    json!({"event": number, "decision": "not-sent", "why": "truncate events do not reach plugins"})
                )?,
            },
            Ok(Decoded::Tombstone) => writeln!(
                out,
                "{}",
                json!({"event": number, "decision": "not-sent", "why": "tombstone"})
            )?,
            Err(e) => {
                counts.3 += 1;
                writeln!(
                    out,
                    "{}",
                    json!({"event": number, "decision": "undecodable", "reason": e.to_string()})
                )?;
            }
        }
        if pending.len() >= batch.max(1) {
            flush(&mut pending, out, &mut counts)?;
        }
    }
    flush(&mut pending, out, &mut counts)?;
    Ok(counts)
}

fn edit_json(edit: Edit) -> Json {
    match edit {
        Edit::Set(f) => {
            let (ty, v) = value_json(f.value);
            json!({"set": f.name, "type": ty, "value": v})
        }
        Edit::Remove(name) => json!({ "remove": name }),
    }
}

fn value_json(v: Value) -> (&'static str, Json) {
    match v {
        Value::Null => ("null", Json::Null),
        Value::Boolean(b) => ("boolean", json!(b)),
        Value::Integer(i) => ("integer", json!(i)),
        Value::Float(f) => ("float", json!(f)),
        Value::Decimal(s) => ("decimal", json!(s)),
        Value::Text(s) => ("text", json!(s)),
        Value::Bytes(b) => ("bytes", json!(b)),
        Value::Date(s) => ("date", json!(s)),
        Value::Time(s) => ("time", json!(s)),
        Value::Timestamp(s) => ("timestamp", json!(s)),
        Value::Timestamptz(s) => ("timestamptz", json!(s)),
        Value::Json(s) => ("json", json!(s)),
        Value::Unchanged => ("unchanged", Json::Null),
    }
}
