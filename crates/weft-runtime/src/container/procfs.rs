//! What the container code reads about processes from /proc.

use std::fs;

/// A process's start time in clock ticks after boot (/proc/PID/stat field 22), or None when it
/// does not exist.
pub(crate) fn process_start(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}
