//! Built against `floe:plugin@0.4.0`, which this floe does not support: loading it must fail
//! with a message naming both versions.

wit_bindgen::generate!({
    path: "wit/floe-plugin@0.4.0",
    world: "plugin",
});

struct Future;

impl exports::floe::plugin::transform::Guest for Future {
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn process(changes: Vec<String>) -> Vec<String> {
        changes
    }
}

export!(Future);
