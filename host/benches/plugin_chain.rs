//! Decode → plugin chain (the default validator with the guide's rules, then the enricher) in
//! batches of 100, on Debezium events captured from the real stack. One thread, no network.
//! Needs `plugins/dist/` (scripts/build-plugins.sh; `make bench` builds it).
//! Prints `plugin_chain_records_per_sec=N` and the µs per record of decode and of each plugin.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use floe::change::KafkaPosition;
use floe::config::PluginConfig;
use floe::decode::{Decoded, JsonDecoder};
use floe::plugin::{Outcome, PluginChain, PluginEngine};

mod common;

use common::load_fixture;

const BATCH: usize = 100;

/// The guide's rules, as the tests and config/local.toml have them.
const VALIDATOR: &str = include_str!("../../tests/plugins/guide-validator.toml");

const ENRICHER: &str = r#"
dates = { transaction_date = "created_at" }
bands = [{ column = "amount", to = "amount_band", thresholds = [10, 100, 1000], labels = ["small", "medium", "large", "very_large"] }]
flags = [{ column = "amount", to = "is_high_value", min = 1000 }]
static = { environment = "bench", pipeline_version = "0.1.0" }
processed_at = "processed_at"
"#;

fn plugin(name: &str, config: &str, grants: &[&str]) -> PluginConfig {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/dist")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{}: run scripts/build-plugins.sh",
        path.display()
    );
    PluginConfig {
        name: Some(name.into()),
        path,
        tables: Vec::new(),
        memory_mb: 64,
        timeout_ms: 1000,
        fuel: None,
        grants: grants.iter().map(|g| g.to_string()).collect(),
        config: toml::from_str(config).expect("bench config"),
    }
}

fn main() {
    let total: usize = std::env::var("FLOE_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let events = load_fixture();
    assert!(!events.is_empty(), "empty fixture");
    let engine = PluginEngine::new(None).expect("engine");
    let mut chain = PluginChain::build(
        &engine,
        &[
            plugin("validator", VALIDATOR, &[]),
            plugin("enricher", ENRICHER, &["clock"]),
        ],
    )
    .expect("chain");
    let mut decoder = JsonDecoder::new();
    let mut batch = Vec::with_capacity(BATCH);
    let (mut kept, mut refused, mut decode_time) = (0usize, 0usize, Duration::ZERO);

    let start = Instant::now();
    let mut i = 0;
    while i < total {
        // Decode a batch (timed as a whole: a clock read per event would be measured too),
        // then run it through the chain.
        let end = (i + BATCH).min(total);
        let t = Instant::now();
        for n in i..end {
            let (k, v) = &events[n % events.len()];
            let pos = KafkaPosition {
                partition: 0,
                offset: n as i64,
            };
            if let Ok(Decoded::Change(change)) = decoder.decode(Some(k), Some(v), pos) {
                batch.push(*change);
            }
        }
        decode_time += t.elapsed();
        for o in chain.run(&mut batch) {
            if o == Outcome::Keep {
                kept += 1;
            } else {
                refused += 1;
            }
        }
        batch.clear();
        i = end;
    }
    let elapsed = start.elapsed();
    let per_sec = total as f64 / elapsed.as_secs_f64();
    println!("plugin_chain_records_per_sec={per_sec:.0}");
    println!(
        "plugin_chain_decode_us_per_record={:.2}",
        decode_time.as_secs_f64() * 1e6 / total as f64
    );
    for (name, spent, seen) in chain.timings() {
        println!(
            "plugin_{name}_us_per_record={:.2}",
            spent.as_secs_f64() * 1e6 / seen.max(1) as f64
        );
    }
    println!("plugin_chain_records={total} kept={kept} refused={refused} batch={BATCH}");
}
