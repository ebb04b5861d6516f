//! A plugin that misbehaves on command, for floe's own tests. Config:
//! `{ "mode": "trap" | "loop" | "memory" | "sleep" | "poll" | "init-fail" | "init-stderr-panic"
//!    | "edit-key" | "edit-reserved" | "keep" | "describe", "trigger": "text",
//!    "reads": ["column", ...], "before": bool }`.
//! With `trigger`, it misbehaves only on batches where some `after` image holds that exact
//! text value, and keeps every change otherwise. `reads` and `before` are what its `init`
//! returns (every column and `before` by default); `describe` rejects each change with what it
//! was handed: `table=s.t after=a,b before=c,d` (`-` for an absent image).
//!
//! `sleep` and `poll` wait 30 s inside a host call (`std::thread::sleep`, and `poll(2)` with no
//! descriptors and a timeout: a WASI monotonic-clock timer), where no Wasm code runs for an
//! epoch deadline to interrupt. `init-stderr-panic` writes to stderr in `init`, then panics.
//! `edit-key` keeps each change with an edit setting its first key column, `edit-reserved`
//! with one setting `is_deleted`: edits floe must refuse. With `trigger`, they edit only the
//! changes whose `after` image holds the trigger.

wit_bindgen::generate!({
    path: "../../../wit/floe-plugin@0.3.0",
    world: "plugin",
});

use std::cell::RefCell;

use exports::floe::plugin::transform::{Change, Decision, Guest};
use floe::plugin::types::{Edit, Field, Reads, Table, Value};
use serde::Deserialize;

#[derive(Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    mode: String,
    trigger: Option<String>,
    reads: Option<Vec<String>>,
    before: Option<bool>,
}

thread_local! {
    static CONFIG: RefCell<Config> = RefCell::new(Config::default());
}

/// How long `sleep` and `poll` wait: far beyond any deadline a test sets.
const LONG_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

struct Misbehave;

impl Guest for Misbehave {
    fn init(config: String) -> Result<Reads, String> {
        let cfg: Config = serde_json::from_str(&config).map_err(|e| e.to_string())?;
        match cfg.mode.as_str() {
            "init-fail" => return Err("misbehave: failing init as configured".into()),
            "init-stderr-panic" => {
                eprintln!("misbehave: writing to stderr in init");
                panic!("misbehave: panicking in init as configured");
            }
            _ => {}
        }
        let reads = Reads {
            columns: cfg.reads.clone(),
            before: cfg.before.unwrap_or(true),
        };
        CONFIG.with(|c| *c.borrow_mut() = cfg);
        Ok(reads)
    }

    fn process(table: Table, changes: Vec<Change>) -> Vec<Decision> {
        let cfg = CONFIG.with(|c| c.borrow().clone());
        let triggered = match &cfg.trigger {
            None => true,
            Some(t) => changes.iter().any(|c| {
                c.after
                    .iter()
                    .flatten()
                    .any(|v| matches!(v, Some(Value::Text(s)) if s == t))
            }),
        };
        if triggered {
            match cfg.mode.as_str() {
                "trap" => panic!("misbehave: trapping as configured"),
                "loop" => {
                    let mut n: u64 = 0;
                    loop {
                        n = std::hint::black_box(n.wrapping_add(1));
                    }
                }
                "sleep" => std::thread::sleep(LONG_WAIT),
                "poll" => {
                    // No descriptors: only the timeout's monotonic-clock pollable is polled.
                    // SAFETY: a null list of zero descriptors is what poll(2) allows.
                    unsafe { libc::poll(std::ptr::null_mut(), 0, LONG_WAIT.as_millis() as i32) };
                }
                "memory" => {
                    let mut hoard: Vec<Vec<u8>> = Vec::new();
                    loop {
                        hoard.push(vec![1u8; 16 << 20]);
                        std::hint::black_box(&hoard);
                    }
                }
                _ => {}
            }
        }
        if cfg.mode == "describe" {
            // The columns an image has: those of `table.columns` it holds a value for.
            let names = |image: &Option<Vec<Option<Value>>>| match image {
                Some(values) if values.len() != table.columns.len() => {
                    format!(
                        "{} values for {} columns",
                        values.len(),
                        table.columns.len()
                    )
                }
                Some(values) => table
                    .columns
                    .iter()
                    .zip(values)
                    .filter(|(_, v)| v.is_some())
                    .map(|(c, _)| c.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                None => "-".to_string(),
            };
            return changes
                .iter()
                .map(|c| {
                    Decision::Reject(format!(
                        "table={}.{} after={} before={}",
                        table.schema,
                        table.name,
                        names(&c.after),
                        names(&c.before)
                    ))
                })
                .collect();
        }
        let column = match cfg.mode.as_str() {
            "edit-key" => table.key.first().cloned(),
            "edit-reserved" => Some("is_deleted".to_string()),
            _ => None,
        };
        // The edit modes edit only the changes holding the trigger (all without one).
        let hit = |c: &Change| match &cfg.trigger {
            None => true,
            Some(t) => c
                .after
                .iter()
                .flatten()
                .any(|v| matches!(v, Some(Value::Text(s)) if s == t)),
        };
        changes
            .iter()
            .map(|c| match &column {
                Some(name) if hit(c) => Decision::Keep(vec![Edit::Set(Field {
                    name: name.clone(),
                    value: Value::Boolean(true),
                })]),
                _ => Decision::Keep(Vec::new()),
            })
            .collect()
    }
}

export!(Misbehave);
