//! The janitor: on every container event (an exit above all, see `events`) and every two
//! seconds, removes exited `--rm` containers, withdraws the ports of containers that exited by
//! themselves, undoes orphaned netconf files (retrying endpoint releases the cluster could not
//! take at the time), revokes addresses the cluster took back and releases endpoints no container
//! holds, all from one survey of this host's containers and netconf files.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use weft_runtime::container::ContainerStatus;

use super::{Host, NetConf};

/// Rounds without an event.
const ROUND_EVERY: Duration = Duration::from_secs(2);

impl Host {
    /// Periodic housekeeping: removes exited `--rm` containers, and retries releasing endpoints
    /// of removed containers that the cluster could not take back at the time.
    pub async fn janitor(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        // What no event announces (an address the cluster took back, an orphan's grace ending)
        // is found by the next round; an exit starts a round at once.
        let mut tick = tokio::time::interval(ROUND_EVERY);
        let mut listings = self.container_listings();
        let mut orphans_since = std::collections::HashMap::new();
        // nftables notifications: a flushed port table comes back at once, not at the next change.
        let mut nft = weft_net::nft_events::NftEvents::subscribe()
            .inspect_err(|e| tracing::warn!(error = %e, "no nftables notifications for the port table"))
            .ok();
        loop {
            let nft_changed = async {
                match nft.as_mut() {
                    Some(nft) => nft.changed().await,
                    None => std::future::pending().await,
                }
            };
            let (notified, published) = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tick.tick() => (None, None),
                _ = listings.changed() => (None, listings.borrow_and_update().clone()),
                changed = nft_changed => (Some(changed.is_ok()), None),
            };
            if let Some(ok) = notified {
                if !ok {
                    nft = None;
                }
                // Let a burst of changes settle, then look at weft's table only.
                tokio::time::sleep(Duration::from_millis(20)).await;
                self.heal_ports().await;
                continue;
            }
            // `--rm` containers that exited go first (removal takes the lock below itself). After a
            // change, the exit watcher's listing of it; on a round, a listing of its own (it reads
            // every container's files: on a blocking thread, not a runtime worker).
            let list = match published {
                Some(list) => list,
                None => {
                    let runtime = self.runtime.clone();
                    let Ok(Ok(list)) = tokio::task::spawn_blocking(move || runtime.list()).await else {
                        continue;
                    };
                    std::sync::Arc::new(list)
                }
            };
            for (spec, status) in list.iter() {
                if matches!(status, ContainerStatus::Exited(_))
                    && self.netconf_for_display(&spec.id).auto_remove
                    && let Err(e) = self.remove(&spec.id, true).await
                {
                    tracing::warn!(container = %spec.name, error = %e, "removing an exited --rm container failed");
                }
            }
            let _serial = self.serial.lock().await;
            let host = self.clone();
            let Ok(Some(survey)) = tokio::task::spawn_blocking(move || host.survey()).await else { continue };
            // Containers that exited by themselves withdraw their published ports.
            if let Err(e) = self.sync_ports_from(&survey).await {
                tracing::warn!(error = %e, "syncing published ports failed");
            }
            for (id, (conf, age)) in &survey.netconfs {
                match survey.containers.get(id) {
                    // Files younger than a few seconds may belong to a container being started.
                    None if age.is_some_and(|a| a > Duration::from_secs(30)) => self.undo(id, conf).await,
                    Some(false) => self.revoke_lost_addresses(id, conf.clone()).await,
                    _ => {}
                }
            }
            self.release_orphan_endpoints(&survey, &mut orphans_since).await;
        }
    }

    /// One look at this host's containers and network configs: each container's status read once
    /// and each netconf file read once, shared by everything the janitor does in a round.
    pub(super) fn survey(&self) -> Option<Survey> {
        let list = self.runtime.list().ok()?;
        let containers = list
            .iter()
            .map(|(spec, status)| (spec.id.clone(), matches!(status, ContainerStatus::Exited(_))))
            .collect();
        let mut netconfs = BTreeMap::new();
        if let Ok(entries) = std::fs::read_dir(self.dir.join("netconf")) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(id) = name.strip_suffix(".json") else { continue };
                let age = entry.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
                match self.netconf(id) {
                    Ok(conf) => {
                        netconfs.insert(id.to_string(), (conf, age));
                    }
                    // Never cleaned up on a guess: the file stays until it reads again.
                    Err(e) => tracing::warn!(error = %e, "network config unreadable; left alone"),
                }
            }
        }
        Some(Survey { containers, netconfs })
    }
}

/// What the janitor saw in one round: [`Host::survey`].
pub(super) struct Survey {
    /// Container id → whether it has exited.
    pub(super) containers: BTreeMap<String, bool>,
    /// Container id → its network config and the age of the file (containers being started have
    /// a file before they exist; orphans have one after).
    pub(super) netconfs: BTreeMap<String, (NetConf, Option<Duration>)>,
}
