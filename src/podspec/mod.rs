//! Pod-spec vocabulary both the node agent and the runtime side need (quantities, requests, QoS
//! class). It imports neither `kubelet` nor `backends`, so either may import it.

pub mod resources;
