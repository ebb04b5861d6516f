//! Decode → fold into batches of 100 → MERGE payload, on Debezium events captured from the real
//! stack (`benches/fixtures/`, made by `scripts/capture_fixture.sh`). No network, one thread.
//! Prints `decode_batch_records_per_sec=N` and the cost per record.

use std::time::{Duration, Instant};

use chrono::Utc;
use floe::batch::{BatchLimits, Batcher};
use floe::change::KafkaPosition;
use floe::config::{DeleteMode, MetaColumns};
use floe::decode::{Decoded, JsonDecoder};
use floe::sink::snowflake::merge::{MergePlan, MAX_PAYLOAD_BYTES};
use floe::sink::snowflake::schema::{ident, meta_columns, target_columns};

mod common;

use common::load_fixture;

const BATCH: usize = 100;

fn main() {
    // FLOE_BENCH_EVENTS: fewer events for instruction counting under valgrind.
    let total: usize = std::env::var("FLOE_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);
    let events = load_fixture();
    assert!(!events.is_empty(), "empty fixture");
    let avg_bytes = events.iter().map(|(_, v)| v.len()).sum::<usize>() / events.len();

    let mut decoder = JsonDecoder::new();
    let mut batcher = Batcher::new(BatchLimits {
        max_records: BATCH,
        max_wait: Duration::from_secs(3600),
        max_bytes: usize::MAX,
        backlog_max_records: BATCH,
    });
    let mut plan: Option<MergePlan> = None;
    let mut payload_bytes = 0usize;
    let mut rows = 0usize;
    let now = Utc::now();

    let start = Instant::now();
    for i in 0..total {
        let (k, v) = &events[i % events.len()];
        let pos = KafkaPosition {
            partition: 0,
            offset: i as i64,
        };
        match decoder
            .decode(Some(k), Some(v), pos)
            .expect("fixture decodes")
        {
            Decoded::Change(c) => {
                batcher.push(*c, v.len());
            }
            Decoded::Tombstone => continue,
        }
        if batcher.is_full() {
            batcher.seal(|_| true);
            let batch = batcher.take();
            for tb in batch.tables.values() {
                let plan = plan.get_or_insert_with(|| {
                    let cols = tb.columns.clone().expect("columns");
                    let key = tb.rows[0]
                        .key
                        .iter()
                        .map(|(k, _)| cols.iter().position(|c| c.name == *k).expect("key column"))
                        .collect();
                    MergePlan {
                        target: ident("T"),
                        target_name: "T".into(),
                        stage: ident("S"),
                        state: ident("FLOE_STATE"),
                        meta: meta_columns(&MetaColumns::default()),
                        source_names: cols.iter().map(|c| c.name.clone()).collect(),
                        image_columns: cols.clone(),
                        as_json: vec![false; cols.len()],
                        columns: target_columns(&cols),
                        key,
                        delete_mode: DeleteMode::Soft,
                    }
                });
                let staged = plan.stage_rows(&tb.rows, now, MAX_PAYLOAD_BYTES);
                payload_bytes += staged.payloads.iter().map(|p| p.json.len()).sum::<usize>();
                rows += tb.rows.len();
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!("decode_batch_events={total}");
    println!("decode_batch_event_bytes_avg={avg_bytes}");
    println!("decode_batch_records_per_sec={:.0}", total as f64 / secs);
    println!(
        "decode_batch_us_per_record={:.3}",
        secs * 1e6 / total as f64
    );
    println!(
        "decode_batch_input_mb_per_sec={:.0}",
        (total * avg_bytes) as f64 / secs / 1e6
    );
    println!(
        "merge_payload_bytes_per_row={}",
        payload_bytes / rows.max(1)
    );
}
