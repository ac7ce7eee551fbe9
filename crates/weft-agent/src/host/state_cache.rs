//! This host's copy of the replicated state: the watch every new copy is published on (from
//! raft on managers, the Watch on workers), the reconciler's view of what the kernel holds, the
//! waits for a revision, and the last seen state kept on disk across restarts.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use weft_state::State;

use super::{Host, HostError, Result};

/// Where the last state this host saw is kept across restarts (in the state dir).
const LAST_STATE: &str = "last-state.pb";

/// How long a container start waits for this host's copy of the state to show its endpoint.
const STATE_WAIT: Duration = Duration::from_secs(10);

/// The copy of the state this host last saw (empty if there is none or it does not read), so
/// that a restarted agent serves names and keeps its data path from the first moment, before
/// it has synced with the cluster.
pub(super) fn last_state(dir: &Path) -> State {
    std::fs::read(dir.join(LAST_STATE))
        .ok()
        .and_then(|bytes| State::from_snapshot_bytes(&bytes).ok())
        .unwrap_or_default()
}

impl Host {
    /// Publishes a newer copy of the replicated state (from raft on managers, Watch on workers).
    pub fn publish_state(&self, state: Arc<State>) {
        // Live once the cluster's copy has caught up with what this host saw before a restart.
        if state.revision() >= self.state_tx.borrow().revision() {
            self.live.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        self.state_tx.send_if_modified(|current| {
            if state.revision() > current.revision() || current.revision() == 0 {
                *current = state;
                true
            } else {
                false
            }
        });
    }

    /// Every new copy of the state.
    pub fn states(&self) -> watch::Receiver<Arc<State>> {
        self.state_tx.subscribe()
    }

    /// This host's current copy of the state.
    pub fn state(&self) -> Arc<State> {
        self.state_tx.borrow().clone()
    }

    /// Waits (at most [`STATE_WAIT`]) until this host's copy of the state reaches `revision`.
    pub(super) async fn wait_revision(&self, revision: u64) -> Result<Arc<State>> {
        let mut states = self.states();
        let waited = tokio::time::timeout(STATE_WAIT, states.wait_for(|s| s.revision() >= revision)).await;
        match waited {
            Ok(Ok(state)) => Ok(state.clone()),
            _ => Err(HostError::Internal(format!(
                "this host's copy of the cluster state did not reach revision {revision} within {} s",
                STATE_WAIT.as_secs()
            ))),
        }
    }

    /// Hands over the reconciler's view of what the kernel holds (set once, at start).
    pub fn set_reconciled(&self, reconciled: watch::Receiver<Arc<State>>) {
        let _ = self.reconciled.set(reconciled);
    }

    /// Waits (at most [`STATE_WAIT`]) until this host's routes and devices reflect `revision`, so
    /// a container is started with its whole network path in place. A reconciler that cannot
    /// catch up (a failing action) is logged, not fatal: it keeps retrying.
    pub(super) async fn wait_reconciled(&self, revision: u64) {
        let Some(mut reconciled) = self.reconciled.get().cloned() else { return };
        let waited =
            tokio::time::timeout(STATE_WAIT, reconciled.wait_for(|s| s.revision() >= revision)).await;
        if !matches!(waited, Ok(Ok(_))) {
            tracing::warn!(revision, "the overlay has not caught up with this endpoint yet; starting anyway");
        }
    }

    /// Keeps the newest state on disk (coalescing changes for a second, and once more at
    /// shutdown), until `stop`.
    pub async fn persist_state(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut states = self.states();
        let mut saved = 0;
        loop {
            let state = states.borrow_and_update().clone();
            if state.revision() != saved {
                let path = self.dir.join(LAST_STATE);
                let bytes = state.snapshot_bytes();
                let written = tokio::task::spawn_blocking(move || {
                    weft_fs::write(&path, &bytes, 0o600, weft_fs::Durability::Durable)
                })
                .await
                .map_err(|e| HostError::Internal(format!("saving the last seen state: {e}")))
                .and_then(|r| Ok(r?));
                match written {
                    Ok(()) => saved = state.revision(),
                    Err(e) => tracing::warn!(error = %e, "saving the last seen state failed"),
                }
            }
            if *stop.borrow() {
                return;
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => continue,
                changed = states.changed() => if changed.is_err() { return },
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}
