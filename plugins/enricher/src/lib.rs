//! floe's default enricher: adds and rewrites columns of each change's `after` image from
//! config. New columns appear in the warehouse by themselves. Deletes pass untouched.
//!
//! ```toml
//! dates = { transaction_date = "created_at" }          # date part (UTC) of a timestamp
//! bands = [{ column = "amount", to = "amount_band", thresholds = [10, 100, 1000],
//!            labels = ["small", "medium", "large", "very_large"] }]
//! flags = [{ column = "amount", to = "is_high_value", min = 1000 }]
//! hash = [{ column = "user_email", salt = "pepper" }]   # SHA-256 hex of salt + value
//! mask = [{ column = "card_number", keep_last = 4 }]    # all but the last N characters → '*'
//! static = { environment = "local", pipeline_version = "0.1.0" }
//! processed_at = "processed_at"                         # needs the `clock` grant
//! ```
//! A derived column whose source value was not sent (unchanged TOAST) is itself marked
//! unchanged, so the warehouse keeps its stored value.

mod derive;

wit_bindgen::generate!({
    path: "../../wit/floe-plugin@0.3.0",
    world: "plugin",
});

use std::cell::RefCell;

use exports::floe::plugin::transform::{Change, Decision, Guest};
use floe::plugin::log::{log, Level};
use floe::plugin::types::{Reads, Table};

use derive::Enrichment;

thread_local! {
    static ENRICHMENT: RefCell<Option<Enrichment>> = const { RefCell::new(None) };
}

struct Enricher;

impl Guest for Enricher {
    fn init(config: String) -> Result<Reads, String> {
        let e = Enrichment::from_json(&config)?;
        log(
            Level::Info,
            &format!("enricher ready, adding {:?}", e.added_columns()),
        );
        // Only the columns values are derived from, never `before`.
        let reads = Reads {
            columns: Some(e.source_columns()),
            before: false,
        };
        ENRICHMENT.with(|slot| *slot.borrow_mut() = Some(e));
        Ok(reads)
    }

    fn process(table: Table, changes: Vec<Change>) -> Vec<Decision> {
        ENRICHMENT.with(|slot| match &*slot.borrow() {
            Some(e) => {
                let call = e.call(&table.columns);
                changes.iter().map(|c| e.decide(c, &call)).collect()
            }
            None => changes
                .iter()
                .map(|_| Decision::Reject("enricher: init was not called".into()))
                .collect(),
        })
    }
}

/// Every string of a batch is allocated and freed in here: free lists per size class, with
/// talc (faster than the default dlmalloc) behind them for chunks and large blocks.
#[cfg(all(not(target_feature = "atomics"), target_family = "wasm"))]
#[global_allocator]
static ALLOCATOR: plugin_alloc::SizeClasses<talc::wasm::WasmDynamicTalc> =
    plugin_alloc::SizeClasses::new(talc::wasm::new_wasm_dynamic_allocator());

export!(Enricher);
