//! Docker's restart policies, as pure decisions: whether an exited container is started again,
//! and how long to wait first (100 ms, doubling, at most a minute; back to 100 ms once a run lasted
//! 10 s). The restart manager ([`crate::host::Host::restart_manager`]) applies them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The first back-off, doubled after every quick exit.
pub const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest back-off.
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// A run at least this long resets the back-off.
pub const STEADY: Duration = Duration::from_secs(10);

/// `--restart`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never (the default).
    #[default]
    No,
    /// When it exits non-zero, at most `max` times (0: no limit).
    OnFailure {
        /// The most restarts (0: unlimited).
        max: u32,
    },
    /// Whenever it exits; after a manual stop, only once weftd starts again.
    Always,
    /// Whenever it exits, unless it was stopped by hand (also across weftd restarts).
    UnlessStopped,
}

impl RestartPolicy {
    /// Parses Docker's spelling.
    pub fn parse(text: &str) -> Result<RestartPolicy, String> {
        let bad = || {
            format!("invalid --restart {text:?}: use no, on-failure[:MAX-RETRIES], always or unless-stopped")
        };
        Ok(match text {
            "" | "no" => RestartPolicy::No,
            "always" => RestartPolicy::Always,
            "unless-stopped" => RestartPolicy::UnlessStopped,
            "on-failure" => RestartPolicy::OnFailure { max: 0 },
            other => match other.strip_prefix("on-failure:") {
                Some(n) => RestartPolicy::OnFailure { max: n.parse().map_err(|_| bad())? },
                None => return Err(bad()),
            },
        })
    }

    /// Docker's spelling.
    pub fn render(&self) -> String {
        match self {
            RestartPolicy::No => "no".into(),
            RestartPolicy::OnFailure { max: 0 } => "on-failure".into(),
            RestartPolicy::OnFailure { max } => format!("on-failure:{max}"),
            RestartPolicy::Always => "always".into(),
            RestartPolicy::UnlessStopped => "unless-stopped".into(),
        }
    }

    /// Whether a container that exited with `code` is started again, having been restarted
    /// `count` times, stopped by hand or not; `daemon_start` on weftd's first look after it started
    /// (a reboot): `always` then restarts a container stopped by hand too, as Docker's daemon does.
    pub fn should_restart(&self, code: i32, count: u32, manually_stopped: bool, daemon_start: bool) -> bool {
        match self {
            RestartPolicy::No => false,
            RestartPolicy::OnFailure { max } => !manually_stopped && code != 0 && (*max == 0 || count < *max),
            RestartPolicy::Always => !manually_stopped || daemon_start,
            RestartPolicy::UnlessStopped => !manually_stopped,
        }
    }
}

/// The wait before restart number `consecutive` (0-based) of a run of quick exits.
pub fn delay(consecutive: u32) -> Duration {
    FIRST_DELAY.saturating_mul(2u32.saturating_pow(consecutive.min(20))).min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_spellings_parse_and_render() {
        for (text, policy) in [
            ("no", RestartPolicy::No),
            ("", RestartPolicy::No),
            ("always", RestartPolicy::Always),
            ("unless-stopped", RestartPolicy::UnlessStopped),
            ("on-failure", RestartPolicy::OnFailure { max: 0 }),
            ("on-failure:3", RestartPolicy::OnFailure { max: 3 }),
        ] {
            assert_eq!(RestartPolicy::parse(text), Ok(policy), "{text}");
        }
        assert_eq!(RestartPolicy::OnFailure { max: 3 }.render(), "on-failure:3");
        for bad in ["sometimes", "on-failure:x", "always:2", "on-failure:-1"] {
            let e = RestartPolicy::parse(bad).unwrap_err();
            assert!(e.contains("invalid --restart") && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn policies_decide_as_docker_does() {
        use RestartPolicy::*;
        assert!(!No.should_restart(1, 0, false, true));
        assert!(OnFailure { max: 2 }.should_restart(1, 1, false, false));
        assert!(!OnFailure { max: 2 }.should_restart(1, 2, false, false), "retries used up");
        assert!(!OnFailure { max: 0 }.should_restart(0, 0, false, false), "a clean exit");
        assert!(OnFailure { max: 0 }.should_restart(137, 50, false, true));
        assert!(Always.should_restart(0, 9, false, false));
        assert!(!Always.should_restart(0, 0, true, false), "stopped by hand");
        assert!(Always.should_restart(0, 0, true, true), "but weftd started again");
        assert!(UnlessStopped.should_restart(0, 0, false, true));
        assert!(!UnlessStopped.should_restart(0, 0, true, true), "stopped by hand, even across restarts");
    }

    #[test]
    fn the_back_off_doubles_from_100ms_to_a_minute() {
        assert_eq!(delay(0), Duration::from_millis(100));
        assert_eq!(delay(1), Duration::from_millis(200));
        assert_eq!(delay(4), Duration::from_millis(1600));
        assert_eq!(delay(40), MAX_DELAY);
    }
}
