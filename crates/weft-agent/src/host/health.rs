//! Health checks, as Docker runs them: every running container with a health check (its image's
//! HEALTHCHECK or `--health-*`) has its command run inside it (exec, confined as the workload)
//! every interval after the previous check ended. A check fails when it exits non-zero or
//! outlives its timeout (it is killed then). The status starts as `starting`; a success makes it
//! `healthy`; `retries` failures in a row make it `unhealthy`, except failures within the start
//! period while it is still `starting`. The last five results are kept with their output (4 KiB
//! each), in `<state>/health/ID.json`, and start over when the container starts again. Health
//! never restarts a container (Docker's restart policies ignore it too).
//!
//! The rules are [`HealthState::record`], pure and unit-tested; the loop is
//! [`Host::health_monitor`], woken by container events, by a check that ended and when the next
//! check is due (no polling).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use weft_proto::v1 as pb;
use weft_runtime::container::{ContainerStatus, ExecOptions, HealthConfig};

use super::Host;
use super::events::next_look;

/// Results kept, as Docker.
const KEEP_RESULTS: usize = 5;
/// Output kept per result, as Docker.
const KEEP_OUTPUT: usize = 4096;

/// A container's health: Docker's `State.Health`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthState {
    /// `starting`, `healthy` or `unhealthy`.
    pub status: String,
    /// Failures in a row.
    pub failing_streak: u32,
    /// The last results, oldest first.
    pub log: Vec<CheckResult>,
    /// The start (ns since the epoch) of the run of the container this state is about.
    pub run_started_ns: u64,
}

/// One run of a check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    /// When it started, ns since the epoch.
    pub start_ns: u64,
    /// When it ended.
    pub end_ns: u64,
    /// Its exit code (-1: it could not run or outlived its timeout).
    pub exit_code: i32,
    /// What it printed (stdout and stderr), at most 4 KiB.
    pub output: String,
}

impl HealthState {
    /// The state of a container run that started at `run_started_ns`, before any check.
    pub fn starting(run_started_ns: u64) -> HealthState {
        HealthState { status: "starting".into(), run_started_ns, ..HealthState::default() }
    }

    /// Takes one result into account. `in_start_period`: the check started within the start
    /// period of the container's run.
    pub fn record(&mut self, result: CheckResult, retries: u32, in_start_period: bool) {
        if result.exit_code == 0 {
            self.status = "healthy".into();
            self.failing_streak = 0;
        } else if !(in_start_period && self.status == "starting") {
            self.failing_streak += 1;
            if self.failing_streak >= retries {
                self.status = "unhealthy".into();
            }
        }
        self.log.push(result);
        if self.log.len() > KEEP_RESULTS {
            self.log.remove(0);
        }
    }

    /// As the API shows it.
    pub fn to_proto(&self) -> pb::Health {
        pb::Health {
            status: self.status.clone(),
            failing_streak: self.failing_streak,
            log: self
                .log
                .iter()
                .map(|r| pb::HealthResult {
                    start_ns: r.start_ns,
                    end_ns: r.end_ns,
                    exit_code: r.exit_code,
                    output: r.output.clone(),
                })
                .collect(),
        }
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// What the monitor remembers of one container between looks.
struct Tracked {
    /// The run it is about (its start).
    run_started_ns: u64,
    /// When the next check is due.
    due: Instant,
    /// A check in flight (aborted when the container stops or weftd does).
    running: Option<tokio::task::JoinHandle<()>>,
}

/// A check that ended: whose, for which run, under which config, and its result.
struct Ended {
    id: String,
    name: String,
    run_started_ns: u64,
    check: HealthConfig,
    result: CheckResult,
}

impl Host {
    fn health_path(&self, id: &str) -> PathBuf {
        self.dir.join("health").join(format!("{id}.json"))
    }

    /// Container `id`'s health, when it has a health check and has run since weftd knew it.
    pub fn health_of(&self, id: &str) -> Option<HealthState> {
        weft_fs::read_json(&self.health_path(id)).ok().flatten()
    }

    fn save_health(&self, id: &str, state: &HealthState) {
        let path = self.health_path(id);
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Err(e) = weft_fs::write_json(&path, state, 0o600, weft_fs::Durability::Volatile) {
            tracing::warn!(container = id, error = %e, "cannot record the container's health");
        }
    }

    /// Forgets container `id`'s health (it was removed).
    pub(super) fn forget_health(&self, id: &str) {
        let _ = std::fs::remove_file(self.health_path(id));
    }

    /// Runs the health checks of this host's containers until `stop`.
    pub async fn health_monitor(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut tracked: HashMap<String, Tracked> = HashMap::new();
        let mut listings = self.container_listings();
        let (ended_tx, mut ended_rx) = tokio::sync::mpsc::unbounded_channel::<Ended>();
        let mut next_due: Option<Instant> = None;
        loop {
            let stopped = tokio::select! {
                _ = stop.wait_for(|s| *s) => true,
                _ = next_look(&mut listings, next_due) => false,
                Some(ended) = ended_rx.recv() => {
                    self.take_result(&mut tracked, ended);
                    false
                }
            };
            if stopped {
                for t in tracked.values_mut() {
                    if let Some(task) = t.running.take() {
                        task.abort();
                    }
                }
                return;
            }
            // A check that fell due with no change since reads the last listing. None: the exit
            // watcher has not looked yet.
            let Some(list) = listings.borrow_and_update().clone() else { continue };
            next_due = None;
            let now = Instant::now();
            for (spec, status) in list.iter() {
                let (Some(check), ContainerStatus::Running(run)) = (&spec.healthcheck, status) else {
                    continue;
                };
                let t = tracked.entry(spec.id.clone()).or_insert_with(|| Tracked {
                    run_started_ns: 0,
                    due: now,
                    running: None,
                });
                if t.run_started_ns != run.started_ns {
                    // A new run (or one weftd had not seen): its health starts over, unless the
                    // file is already about this run (weftd restarted).
                    if let Some(task) = t.running.take() {
                        task.abort();
                    }
                    t.run_started_ns = run.started_ns;
                    t.due = now + check.interval;
                    if self.health_of(&spec.id).is_none_or(|h| h.run_started_ns != run.started_ns) {
                        self.save_health(&spec.id, &HealthState::starting(run.started_ns));
                    }
                }
                if t.running.is_some() {
                    continue;
                }
                if now >= t.due {
                    let runtime = self.runtime.clone();
                    let ended_tx = ended_tx.clone();
                    let (id, name, check, run_started_ns) =
                        (spec.id.clone(), spec.name.clone(), check.clone(), run.started_ns);
                    t.running = Some(tokio::spawn(async move {
                        let result = run_check(&runtime, &id, &check).await;
                        let _ = ended_tx.send(Ended { id, name, run_started_ns, check, result });
                    }));
                } else {
                    next_due = Some(next_due.map_or(t.due, |d| d.min(t.due)));
                }
            }
            tracked.retain(|id, t| {
                let alive =
                    list.iter().any(|(s, st)| s.id == *id && matches!(st, ContainerStatus::Running(_)));
                if !alive && let Some(task) = t.running.take() {
                    task.abort();
                }
                alive
            });
        }
    }

    /// Records the result of a check that ended, if its container is still on the run it was
    /// about; the next check is due an interval later.
    fn take_result(&self, tracked: &mut HashMap<String, Tracked>, ended: Ended) {
        let Some(t) = tracked.get_mut(&ended.id) else { return };
        if t.run_started_ns != ended.run_started_ns {
            return;
        }
        t.running = None;
        let mut state =
            self.health_of(&ended.id).unwrap_or_else(|| HealthState::starting(ended.run_started_ns));
        let since_start = Duration::from_nanos(ended.result.start_ns.saturating_sub(ended.run_started_ns));
        let in_start_period = since_start < ended.check.start_period;
        let before = state.status.clone();
        state.record(ended.result, ended.check.retries, in_start_period);
        if state.status != before {
            tracing::info!(container = %ended.name, status = %state.status, "health changed");
        }
        self.save_health(&ended.id, &state);
        t.due = Instant::now() + ended.check.interval;
    }
}

/// Runs one check inside the container: its exit code and output, or -1 when it could not run
/// or outlived the timeout (it is killed then).
async fn run_check(
    runtime: &weft_runtime::container::Runtime,
    id: &str,
    check: &HealthConfig,
) -> CheckResult {
    let start_ns = now_ns();
    let failed = |output: String| CheckResult { start_ns, end_ns: now_ns(), exit_code: -1, output };
    let options = ExecOptions { argv: check.argv(), ..ExecOptions::default() };
    let command = match runtime.exec_command(id, &options) {
        Ok(c) => c,
        Err(e) => return failed(format!("health check could not run: {e}")),
    };
    let mut command = tokio::process::Command::from(command);
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => return failed(format!("health check could not run: {e}")),
    };
    let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
    let finished = tokio::time::timeout(check.timeout, async {
        let mut text = Vec::new();
        let mut errors = Vec::new();
        let read_out = async {
            if let Some(o) = out.as_mut() {
                let _ = o.read_to_end(&mut text).await;
            }
        };
        let read_err = async {
            if let Some(e) = err.as_mut() {
                let _ = e.read_to_end(&mut errors).await;
            }
        };
        tokio::join!(read_out, read_err);
        text.extend(errors);
        let status = child.wait().await;
        (status, text)
    })
    .await;
    match finished {
        Ok((Ok(status), text)) => {
            let mut output = String::from_utf8_lossy(&text).into_owned();
            if output.len() > KEEP_OUTPUT {
                let mut cut = KEEP_OUTPUT;
                while !output.is_char_boundary(cut) {
                    cut -= 1;
                }
                output.truncate(cut);
            }
            CheckResult { start_ns, end_ns: now_ns(), exit_code: status.code().unwrap_or(-1), output }
        }
        Ok((Err(e), _)) => failed(format!("health check could not run: {e}")),
        Err(_) => failed(format!("Health check exceeded timeout ({:?})", check.timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(code: i32) -> CheckResult {
        CheckResult { exit_code: code, ..CheckResult::default() }
    }

    #[test]
    fn dockers_rules() {
        let mut h = HealthState::starting(1);
        // Failures within the start period do not count while starting.
        h.record(result(1), 2, true);
        h.record(result(1), 2, true);
        assert_eq!((h.status.as_str(), h.failing_streak), ("starting", 0));
        // After it, they do: `retries` in a row make it unhealthy.
        h.record(result(1), 2, false);
        assert_eq!((h.status.as_str(), h.failing_streak), ("starting", 1));
        h.record(result(1), 2, false);
        assert_eq!((h.status.as_str(), h.failing_streak), ("unhealthy", 2));
        // One success makes it healthy again.
        h.record(result(0), 2, false);
        assert_eq!((h.status.as_str(), h.failing_streak), ("healthy", 0));
        // Once healthy, a failure in the start period counts.
        h.record(result(1), 2, true);
        assert_eq!((h.status.as_str(), h.failing_streak), ("healthy", 1));
        assert_eq!(h.log.len(), KEEP_RESULTS, "only the last five results are kept");
        assert_eq!(h.to_proto().log.len(), KEEP_RESULTS);
    }
}
