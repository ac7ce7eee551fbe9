//! Container events: a counter that moves when weftd starts, stops or removes a container, and
//! when a container exits by itself: [`Host::watch_exits`] holds an exit notice (a pidfd on its
//! monitor) for every running container. The exit watcher lists the containers once per change
//! and publishes that listing; every part of weftd that reacts to containers (restart policies,
//! health checks, `--rm`) wakes on a new listing and reads it, instead of each listing every
//! container itself.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::sync::watch;
use tokio::task::JoinSet;
use weft_runtime::container::{ContainerSpec, ContainerStatus, ExitNotice};

use super::Host;

/// The longest a waiter sleeps without an event: a safety net for a change no event announced
/// (a container's files changed by hand), not the way changes are found.
pub(super) const SAFETY_NET: Duration = Duration::from_secs(30);

/// Every container of the host with its status, as one look found them.
pub(super) type Listing = Arc<Vec<(ContainerSpec, ContainerStatus)>>;

impl Host {
    /// Announces that this host's containers changed (one started, stopped, exited or went).
    pub(super) fn containers_changed(&self) {
        self.container_events.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver of container events.
    pub(super) fn container_events(&self) -> watch::Receiver<u64> {
        self.container_events.subscribe()
    }

    /// A receiver of the listings the exit watcher publishes after each change (`None` until its
    /// first look). Its first `changed()` returns at once: a listing published before it
    /// subscribed is read too.
    pub(super) fn container_listings(&self) -> watch::Receiver<Option<Listing>> {
        let mut listings = self.container_listing.subscribe();
        listings.mark_changed();
        listings
    }

    /// Keeps an exit notice for every running container and announces each exit, until `stop`.
    pub async fn watch_exits(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut events = self.container_events();
        let mut watched: HashSet<String> = HashSet::new();
        let mut exits: JoinSet<String> = JoinSet::new();
        // Each exited container's last exit (its finish time), as of the previous look.
        let mut exits_known: HashMap<String, u64> = HashMap::new();
        let mut first = true;
        loop {
            // Every running container not watched yet gets its notice.
            let runtime = self.runtime.clone();
            let list = tokio::task::spawn_blocking(move || runtime.list()).await.ok().and_then(|l| l.ok());
            let listed = list.is_some();
            let list: Listing = Arc::new(list.unwrap_or_default());
            let mut running = Vec::new();
            // An exit not announced yet: one that came before its container could be watched (a
            // container that exits right after it starts).
            let mut gone_already = false;
            let mut seen_exits = HashMap::new();
            for (spec, status) in list.iter() {
                match status {
                    ContainerStatus::Running(_) => running.push(spec.id.clone()),
                    ContainerStatus::Exited(exit) => {
                        gone_already |= !first && exits_known.get(&spec.id) != Some(&exit.finished_ns);
                        seen_exits.insert(spec.id.clone(), exit.finished_ns);
                    }
                    ContainerStatus::Created => {}
                }
            }
            exits_known = seen_exits;
            first = false;
            // Forgotten once no longer running, so a later run of the same container is watched.
            watched.retain(|id| running.contains(id));
            for id in running {
                if !watched.insert(id.clone()) {
                    continue;
                }
                match self.runtime.exit_notice(&id) {
                    // SAFETY: the notice owns its pidfd, which stays open and the same until the
                    // notice (owned by the AsyncFd) is dropped.
                    Ok(Some(notice)) => match unsafe {
                        AsyncFd::register_with_interest(notice, tokio::io::Interest::READABLE)
                    } {
                        Ok(fd) => {
                            exits.spawn(exit_of(fd, id));
                        }
                        Err(e) => {
                            tracing::warn!(container = %id, error = %e, "cannot wait for the container's exit")
                        }
                    },
                    // Its monitor ended between the listing and now (or died, leaving it
                    // running unwatched: announced once, not looked at again while it runs).
                    Ok(None) => gone_already = true,
                    Err(e) => {
                        tracing::warn!(container = %id, error = %e, "cannot wait for the container's exit")
                    }
                }
            }
            // A failed look publishes nothing: the waiters keep the last listing until the next.
            if listed {
                self.container_listing.send_replace(Some(list));
            }
            if gone_already {
                self.containers_changed();
            }
            events.borrow_and_update();
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = events.changed() => {}
                Some(done) = exits.join_next() => {
                    if let Ok(id) = done {
                        watched.remove(&id);
                    }
                    self.containers_changed();
                }
                _ = tokio::time::sleep(SAFETY_NET) => {}
            }
        }
    }
}

/// Waits for the notice of container `id`, then returns its id.
async fn exit_of(fd: AsyncFd<ExitNotice>, id: String) -> String {
    let _ = fd.readable().await;
    id
}

/// Sleeps until `events` moves (a container event, a new listing), `until`, or [`SAFETY_NET`],
/// whichever comes first.
pub(super) async fn next_look<T>(events: &mut watch::Receiver<T>, until: Option<Instant>) {
    let safety = Instant::now() + SAFETY_NET;
    let wake = until.map_or(safety, |u| u.min(safety));
    tokio::select! {
        _ = events.changed() => {}
        _ = tokio::time::sleep_until(wake.into()) => {}
    }
}
