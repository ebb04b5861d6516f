//! floe: streams Debezium change events from Kafka into Snowflake.
//!
//! A record flows through the modules in one direction:
//! [`source`] (Kafka) → [`decode`] → [`plugin`] chain (Wasm) → [`batch`] → [`sink`] (Snowflake
//! MERGE) → offsets committed, with [`dlq`] for what cannot be decoded or is rejected and
//! [`metrics`] counting along the way ([`endpoints`] serves them, [`health`] says whether
//! floe is ready, and [`alerts`] tells an operator when it stops moving).
//! [`pipeline`] wires them together; [`config`] and [`generate`] serve the command line.

/// Every binary built on floe (the service, its tests and benchmarks) uses mimalloc: records
/// are many small allocations (cells, strings, plugin values) and glibc malloc spent a quarter
/// of the decode and plugin time on them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod alerts;
pub mod batch;
pub mod change;
pub mod config;
pub mod decode;
pub mod dlq;
pub mod endpoints;
pub mod generate;
pub mod health;
pub mod metrics;
pub mod pipeline;
pub mod plugin;
pub mod sink;
pub mod source;
