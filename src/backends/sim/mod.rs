//! Simulated runtime (being written).
pub mod config;
pub mod images;
pub mod script;
