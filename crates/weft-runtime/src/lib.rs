//! weft-runtime is the node-local container runtime: content-addressed image layers, overlayfs
//! root filesystems, namespaces, cgroups (v1 and v2), weft's own init as PID 1, the per-container
//! monitor, logs and exec.
//!
//! It must never configure networking beyond the namespace a container is given: network modes are
//! wired by the agent through `weft-net` and `weft-overlay`.
