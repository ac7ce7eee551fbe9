//! Containers: the spec written at create, the monitor and init that run them, and the runtime
//! API the agent drives (create, start, stop, kill, wait, rm, ps, logs, exec, stats).

mod confine;
mod exec;
mod inroot;
pub mod monitor;
mod procfs;
mod runtime;
mod setup;
pub mod spec;
mod watch;

pub use exec::ExecOptions;
pub use runtime::{ContainerStatus, Runtime};
pub use spec::{
    BindMount, ContainerSpec, DeviceMapping, ExitState, HealthConfig, LogLine, NetworkMode, RunState,
    SeccompMode, Security, SpecLimits, TmpfsMount,
};
pub use watch::{ChangeWatch, ExitNotice};
