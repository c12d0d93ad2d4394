//! Simulated runtime (being written).
pub mod config;
pub mod script;
