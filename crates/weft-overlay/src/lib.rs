//! weft-overlay is the reconciler of the VXLAN data path: it turns the replicated state and the
//! local node id into the kernel objects this host should have (bridge, vxlan device, one route,
//! neighbour and FDB entry per remote host), compares them with what the kernel holds, and applies
//! only the difference.
//!
//! It must never flush kernel state or touch objects it does not own: an agent restart leaves
//! running containers and their traffic untouched. Planning stays a pure function; only the apply
//! step talks to the kernel, through `weft-net`.
