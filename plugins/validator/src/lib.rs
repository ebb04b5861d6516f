//! floe's default validator. Its rules come from config, so users extend them per table (one
//! chain entry per set of tables). Each rule names a column and a check; a change whose `after`
//! image fails any rule is rejected with every failure in the reason. Deletes always pass: the
//! warehouse must see them whatever the row held.
//!
//! ```toml
//! rules = [
//!   { column = "transaction_id", check = "required" },
//!   { column = "transaction_id", check = "unique-in-batch" },
//!   { column = "user_id", check = "integer" },
//!   { column = "user_id", check = "positive" },
//!   { column = "amount", check = "numeric" },
//!   { column = "amount", check = "range", min = 0, max = 1000000 },
//!   { column = "status", check = "one-of", values = ["pending", "completed"] },
//!   { column = "currency", check = "regex", pattern = "^[A-Z]{3}$" },
//!   { column = "description", check = "max-length", max = 500 },
//! ]
//! ```
//! Every check but `required` passes on NULL and on values the source did not send (unchanged
//! TOAST): they say what a present value must look like.

mod rules;

wit_bindgen::generate!({
    path: "../../wit/floe-plugin@0.3.0",
    world: "plugin",
});

use std::cell::RefCell;

use exports::floe::plugin::transform::{Change, Decision, Guest};
use floe::plugin::log::{log, Level};
use floe::plugin::types::{Reads, Table};

use rules::RuleSet;

thread_local! {
    static RULES: RefCell<Option<RuleSet>> = const { RefCell::new(None) };
}

struct Validator;

impl Guest for Validator {
    fn init(config: String) -> Result<Reads, String> {
        let set = RuleSet::from_json(&config)?;
        log(
            Level::Info,
            &format!("validator ready with {} rules", set.len()),
        );
        // Only the columns the rules name; `before` only for unique-in-batch (a deleted row
        // frees its value).
        let reads = Reads {
            columns: Some(set.columns()),
            before: set.needs_before(),
        };
        RULES.with(|r| *r.borrow_mut() = Some(set));
        Ok(reads)
    }

    fn process(table: Table, changes: Vec<Change>) -> Vec<Decision> {
        RULES.with(|r| match &*r.borrow() {
            Some(set) => set.decide(&table.key, &table.columns, &changes),
            None => changes
                .iter()
                .map(|_| Decision::Reject("validator: init was not called".into()))
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

export!(Validator);
