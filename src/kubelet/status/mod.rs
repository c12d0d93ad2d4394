//! Pod status: generation from runtime state (phase, conditions, container statuses) and the
//! status manager that patches it to the API.

pub mod conditions;
pub mod generate;
pub mod manager;
pub mod patch;
pub mod phase;
pub mod reasoncache;
