//! The restart manager: on every container event (see `events`: an exit above all) and when a
//! back-off ends, it looks at this host's containers and starts again those whose restart policy
//! ([`crate::restart::RestartPolicy`]) says so, after the policy's back-off.
//! Its first look after weftd starts is the reboot case: containers that were running when the
//! host went down come back (`always`, `unless-stopped`, `on-failure` after a kill). What it did
//! is kept per container in `<state>/restarts/ID.json` (the count `inspect` shows, and whether the
//! container was stopped by hand).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use weft_runtime::container::ContainerStatus;

use super::events::next_look;
use super::{Host, blocking};
use crate::restart::{self, RestartPolicy};

/// What weftd remembers about a container's restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartRecord {
    /// How often weftd started it again.
    pub count: u32,
    /// `weft stop` or `weft kill` stopped it: its policy does not bring it back (`always` does
    /// after weftd restarts, as Docker's daemon does).
    pub manually_stopped: bool,
}

/// The manager's memory of one container between looks.
#[derive(Debug, Default)]
struct Tracked {
    /// Quick exits in a row (the back-off's exponent).
    consecutive: u32,
    /// When the pending restart is due.
    due: Option<Instant>,
    /// Since when it has been seen running.
    running_since: Option<Instant>,
}

impl Host {
    fn restart_path(&self, id: &str) -> PathBuf {
        self.dir.join("restarts").join(format!("{id}.json"))
    }

    /// The restart record of container `id` (empty when it has none).
    pub fn restart_record(&self, id: &str) -> RestartRecord {
        weft_fs::read_json(&self.restart_path(id)).ok().flatten().unwrap_or_default()
    }

    fn save_restart_record(&self, id: &str, record: &RestartRecord) {
        let path = self.restart_path(id);
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Err(e) = weft_fs::write_json(&path, record, 0o600, weft_fs::Durability::Durable) {
            tracing::warn!(container = id, error = %e, "cannot record the container's restarts");
        }
    }

    /// Records that the user stopped (or killed) container `id`, before it exits, so its policy
    /// does not start it again.
    pub fn mark_stopped_by_hand(&self, id: &str) {
        let mut record = self.restart_record(id);
        if !record.manually_stopped {
            record.manually_stopped = true;
            self.save_restart_record(id, &record);
        }
    }

    /// The user started container `id` again: its policy applies again.
    pub(super) fn clear_stopped_by_hand(&self, id: &str) {
        let mut record = self.restart_record(id);
        if record.manually_stopped {
            record.manually_stopped = false;
            self.save_restart_record(id, &record);
        }
    }

    /// Forgets container `id`'s restarts (it was removed).
    pub(super) fn forget_restarts(&self, id: &str) {
        let _ = std::fs::remove_file(self.restart_path(id));
    }

    /// Restarts exited containers as their policies say, until `stop`.
    pub async fn restart_manager(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut listings = self.container_listings();
        let mut tracked: HashMap<String, Tracked> = HashMap::new();
        let mut first = true;
        let mut next_due: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = next_look(&mut listings, next_due) => {}
            }
            // A due back-off with no change since reads the last listing: restart_one looks at
            // the container itself before it acts. None: the exit watcher has not looked yet.
            let Some(list) = listings.borrow_and_update().clone() else { continue };
            next_due = None;
            let now = Instant::now();
            for (spec, status) in list.iter() {
                let policy = self.netconf_for_display(&spec.id).restart;
                if policy == RestartPolicy::No {
                    continue;
                }
                let t = tracked.entry(spec.id.clone()).or_default();
                let code = match status {
                    ContainerStatus::Running(_) => {
                        let since = *t.running_since.get_or_insert(now);
                        if now.duration_since(since) >= restart::STEADY {
                            t.consecutive = 0;
                        }
                        t.due = None;
                        continue;
                    }
                    ContainerStatus::Created => continue,
                    ContainerStatus::Exited(exit) => exit.code,
                };
                if t.running_since.take().is_some_and(|since| now.duration_since(since) >= restart::STEADY) {
                    t.consecutive = 0;
                }
                let mut record = self.restart_record(&spec.id);
                if first && policy == RestartPolicy::Always && record.manually_stopped {
                    // weftd started again: `always` forgets a manual stop, as Docker's daemon does.
                    record.manually_stopped = false;
                    self.save_restart_record(&spec.id, &record);
                }
                if !policy.should_restart(code, record.count, record.manually_stopped, first) {
                    continue;
                }
                let due = *t.due.get_or_insert(now + restart::delay(t.consecutive));
                if now < due {
                    next_due = Some(next_due.map_or(due, |d| d.min(due)));
                    continue;
                }
                t.due = None;
                t.consecutive = t.consecutive.saturating_add(1);
                if !self.restart_one(&spec.id, &spec.name, code, policy, record).await {
                    // Tried again after the next back-off (a look finds it running if it was
                    // started by other means meanwhile).
                    let retry = Instant::now() + restart::delay(t.consecutive);
                    t.due = Some(retry);
                    next_due = Some(next_due.map_or(retry, |d| d.min(retry)));
                }
            }
            tracked.retain(|id, _| list.iter().any(|(spec, _)| spec.id == *id));
            first = false;
        }
    }

    async fn restart_one(
        &self,
        id: &str,
        name: &str,
        code: i32,
        policy: RestartPolicy,
        mut record: RestartRecord,
    ) -> bool {
        // Under the host lock: a `rm` or `stop` in flight finishes first, and is looked at again.
        let _serial = self.serial.lock().await;
        let runtime = self.runtime.clone();
        let current = {
            let id = id.to_string();
            blocking(move || Ok(runtime.status(&id)?)).await
        };
        if !matches!(current, Ok(ContainerStatus::Exited(_))) || self.restart_record(id).manually_stopped {
            return true;
        }
        // After a reboot its network namespace is gone: made and wired again first.
        if let Err(e) = self.rewire(id, name).await {
            tracing::warn!(container = name, error = %e, "wiring the container's network again failed; retrying");
            return false;
        }
        let runtime = self.runtime.clone();
        let started = {
            let id = id.to_string();
            blocking(move || Ok(runtime.start(&id)?)).await
        };
        match started {
            Ok(_) => {
                self.containers_changed();
                record.count = record.count.saturating_add(1);
                self.save_restart_record(id, &record);
                tracing::info!(container = name, exit_code = code, policy = %policy.render(), count = record.count, "container restarted");
                if let Err(e) = self.sync_ports().await {
                    tracing::warn!(container = name, error = %e, "publishing the restarted container's ports failed");
                }
                true
            }
            Err(e) => {
                tracing::warn!(container = name, error = %e, "restarting the container failed");
                false
            }
        }
    }
}
