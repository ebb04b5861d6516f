//! Sources: where change events are read from. Only Kafka today.

pub mod kafka;
pub mod ledger;
