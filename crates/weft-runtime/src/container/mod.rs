//! Containers: the spec written at create, the monitor and init that run them, and the runtime
//! API the agent drives (create, start, stop, kill, wait, rm, ps, logs, exec, stats).

pub mod monitor;
mod runtime;
mod setup;
pub mod spec;

pub use runtime::{ContainerStatus, Runtime};
pub use spec::{BindMount, ContainerSpec, ExitState, LogLine, NetworkMode, RunState, SpecLimits};
