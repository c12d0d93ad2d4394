//! The pause process of a `shareProcessNamespace` pod: PID 1 of the pod's PID namespace.
