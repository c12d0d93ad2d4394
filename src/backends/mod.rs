//! Runtime backends behind the Generic Runtime Manager seam.

pub mod common;
pub mod cri;
pub mod crilog;
pub mod native;
pub mod sim;
