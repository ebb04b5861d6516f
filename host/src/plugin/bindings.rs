//! The Rust side of `wit/floe-plugin@0.1.0`, generated here and nowhere else.

wasmtime::component::bindgen!({
    path: "../wit/floe-plugin@0.1.0",
    world: "plugin",
});

/// The WIT package version this floe speaks; a plugin must export exactly this interface.
pub const WIT_PACKAGE: &str = "floe:plugin";
pub const WIT_VERSION: &str = "0.1.0";
