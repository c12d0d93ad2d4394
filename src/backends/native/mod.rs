//! The native backend: real containers with no container daemon. Part 1 is its image service
//! (pull, import, unpack, store); the runtime service comes with part 2.

pub mod images;
pub mod monitor;
pub mod sandbox;
