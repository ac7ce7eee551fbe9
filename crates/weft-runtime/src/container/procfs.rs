//! What the container code reads about processes from /proc.

use std::fs;

/// A live process's start time in clock ticks after boot (/proc/PID/stat field 22), or None
/// when it does not exist or has exited and waits to be reaped (a zombie: a monitor killed
/// without recording an exit stays one until init reaps it, which can take a second or more).
pub(crate) fn process_start(pid: u32) -> Option<u64> {
    let stat = stat_after_name(pid)?;
    let mut fields = stat.split_whitespace();
    if matches!(fields.next(), Some("Z" | "X")) {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// /proc/PID/stat from field 3 (the state) on. The command name (field 2) may hold spaces and
/// parentheses: everything after the last ')' is what follows it.
fn stat_after_name(pid: u32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(stat[stat.rfind(')')? + 1..].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// The state letter of `pid` (/proc/PID/stat field 3).
    fn state_of(pid: u32) -> Option<String> {
        stat_after_name(pid)?.split_whitespace().next().map(String::from)
    }

    #[test]
    fn a_running_process_has_a_start_time_and_an_exited_unreaped_one_has_none() {
        let mut running = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let mut exited = std::process::Command::new("true").spawn().unwrap();
        // Not waited for: it stays a zombie, still listed in /proc, until reaped below.
        let deadline = Instant::now() + Duration::from_secs(10);
        while state_of(exited.id()).as_deref() != Some("Z") {
            assert!(Instant::now() < deadline, "true never became a zombie");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(process_start(running.id()).is_some_and(|t| t > 0));
        assert_eq!(process_start(exited.id()), None, "a zombie is not alive");
        exited.wait().unwrap();
        assert_eq!(process_start(exited.id()), None);
        running.kill().unwrap();
        running.wait().unwrap();
    }
}
