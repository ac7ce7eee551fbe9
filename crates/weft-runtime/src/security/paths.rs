//! The paths of /proc and /sys that Docker hides from or freezes for an unprivileged container
//! (moby `oci/defaults.go`): masked paths are covered (a file by /dev/null, a directory by an
//! empty read-only tmpfs), read-only paths are bound onto themselves read-only.

/// Paths a container must not read: kernel memory, keys, timers and scheduler internals, firmware.
pub const MASKED: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths a container may read but never write: host-wide sysctls and the sysrq trigger.
pub const READ_ONLY: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];
