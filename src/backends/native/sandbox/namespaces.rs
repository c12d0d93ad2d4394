//! Network, IPC and UTS namespaces created on a dedicated thread and pinned by bind mounts.
