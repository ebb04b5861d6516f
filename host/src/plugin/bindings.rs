//! The Rust side of `wit/floe-plugin@0.3.0`, generated here and nowhere else.
//!
//! Changes are handed to plugins borrowed (`Change<'a>`, `ValueParam<'a>`):
//! text values are copied once, straight from floe's records into the
//! plugin's memory, with no owned copy in between. What plugins return is owned
//! (`Field`, `ValueResult`).

wasmtime::component::bindgen!({
    path: "../wit/floe-plugin@0.3.0",
    world: "plugin",
    ownership: Borrowing { duplicate_if_necessary: true },
});

/// The WIT package version this floe speaks; a plugin must export exactly this interface.
pub const WIT_PACKAGE: &str = "floe:plugin";
pub const WIT_VERSION: &str = "0.3.0";
