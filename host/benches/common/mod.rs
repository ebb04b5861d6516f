//! What the benchmarks share: the captured Debezium events.

use std::io::{BufRead, BufReader};

/// The (key, value) pairs of `benches/fixtures/debezium-transactions.jsonl.gz` (or of the file
/// `FLOE_BENCH_FIXTURE` names), tombstones left out.
pub fn load_fixture() -> Vec<(Vec<u8>, Vec<u8>)> {
    let path = std::env::var("FLOE_BENCH_FIXTURE").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/benches/fixtures/debezium-transactions.jsonl.gz"
        )
        .into()
    });
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    BufReader::new(flate2::read::GzDecoder::new(file))
        .lines()
        .map(|l| l.expect("fixture line"))
        .filter_map(|l| {
            let (k, v) = l.split_once('\t')?;
            (v != "null").then(|| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        })
        .collect()
}
