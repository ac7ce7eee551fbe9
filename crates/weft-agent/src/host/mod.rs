//! The node-local half of weftd: images, containers and how each container is wired to its
//! network. It outlives role switches (a manager demoted to worker keeps its containers); the
//! control-plane half it uses for cluster-wide writes is swapped in with [`Host::set_core`].
//!
//! [`Host`] is here with its accessors; each concern is a module with its own `impl Host`
//! block, one operation per module: `state_cache` (this host's copy of the replicated state),
//! `netconf` (what weft wired for each container, on disk), `run`, `attach` (an endpoint wired
//! into a namespace, for run and connect), `connect`, `disconnect`, `stop`, `remove` (and the
//! undo of everything wired), `ports_sync` (the published-port table), `revoke` (addresses the
//! cluster took back), `health` (health checks), `events` (container events: starts, exits, removals), `rewire` (a container's namespace made again after a reboot), `orphans` (endpoints no
//! container holds), `restarts`
//! (restart policies) and `janitor` (periodic housekeeping).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tokio::sync::watch;
use weft_net::Netlink;
use weft_proto::v1 as pb;
use weft_runtime::container::Runtime;
use weft_runtime::image::ImageStore;
use weft_state::State;

use crate::service::Core;

mod attach;
mod connect;
mod disconnect;
mod events;
mod health;
mod janitor;
mod netconf;
mod orphans;
mod ports_sync;
mod remove;
mod restarts;
mod revoke;
mod rewire;
mod run;
mod start;
mod state_cache;
mod stop;

pub use crate::error::{HostError, Result};
pub use health::{CheckResult, HealthState};
pub use netconf::{Attachment, NetConf};
pub use run::{DEFAULT_BRIDGE, DEFAULT_BRIDGE_SUBNET, ModeRequest, parse_mode};

/// The node-local half of the agent.
pub struct Host {
    /// This node's id.
    pub id: u64,
    dir: PathBuf,
    /// Containers.
    pub runtime: Runtime,
    /// Images.
    pub images: Arc<ImageStore>,
    nl: Netlink,
    state_tx: watch::Sender<Arc<State>>,
    core: RwLock<Option<Arc<Core>>>,
    /// Serialises changes that check-then-act on names, ports and namespaces.
    serial: tokio::sync::Mutex<()>,
    /// The port table last loaded into nftables, and how the kernel listed it right after.
    ports_loaded: tokio::sync::Mutex<Option<ports_sync::LoadedPorts>>,
    /// The state the overlay reconciler last applied in full.
    reconciled: std::sync::OnceLock<watch::Receiver<Arc<State>>>,
    /// The overlay reconciler's journal (drift repaired, failed actions), for `weft net why`.
    journal: std::sync::OnceLock<weft_overlay::journal::SharedJournal>,
    /// A copy of the state has come from the cluster (not only from the last-state file).
    live: std::sync::atomic::AtomicBool,
    /// Endpoints of running containers missing from the state, and since when.
    missing_since: std::sync::Mutex<std::collections::HashMap<u64, std::time::Instant>>,
    /// Moves whenever this host's containers change (see `events`).
    container_events: watch::Sender<u64>,
    /// The exit watcher's listing of this host's containers after each change (see `events`).
    container_listing: watch::Sender<Option<events::Listing>>,
}

/// Runs blocking runtime work off the async threads.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| HostError::Internal(format!("task failed: {e}")))?
}

impl Host {
    /// The host of node `id` keeping images and containers under `dir`; `shim` is the executable
    /// serving the `monitor` verb (weftd itself).
    pub fn new(id: u64, dir: &Path, shim: PathBuf) -> anyhow::Result<Arc<Host>> {
        let runtime = Runtime::new(dir, shim)?;
        let images = Arc::new(ImageStore::open(dir.join("images"))?);
        for sub in ["netconf", "netns", "tmp"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        // The copy of the state this host last saw, so that a restarted agent serves names and
        // keeps its data path from the first moment, before it has synced with the cluster.
        let (state_tx, _) = watch::channel(Arc::new(state_cache::last_state(dir)));
        Ok(Arc::new(Host {
            id,
            dir: dir.to_path_buf(),
            runtime,
            images,
            nl: Netlink::connect()?,
            state_tx,
            core: RwLock::new(None),
            serial: tokio::sync::Mutex::new(()),
            ports_loaded: tokio::sync::Mutex::new(None),
            reconciled: std::sync::OnceLock::new(),
            journal: std::sync::OnceLock::new(),
            live: std::sync::atomic::AtomicBool::new(false),
            missing_since: std::sync::Mutex::new(std::collections::HashMap::new()),
            container_events: watch::channel(0).0,
            container_listing: watch::channel(None).0,
        }))
    }

    /// Hands the host the overlay reconciler's journal (once, at start).
    pub fn set_journal(&self, journal: weft_overlay::journal::SharedJournal) {
        let _ = self.journal.set(journal);
    }

    /// The overlay reconciler's journal, once the reconciler runs.
    pub fn journal(&self) -> Option<&weft_overlay::journal::SharedJournal> {
        self.journal.get()
    }

    /// The control plane of the current role.
    pub fn set_core(&self, core: Option<Arc<Core>>) {
        *self.core.write().unwrap() = core;
    }

    /// The control plane of the current role, if one runs.
    pub fn current_core(&self) -> Option<Arc<Core>> {
        self.core.read().unwrap().clone()
    }

    fn core(&self) -> Result<Arc<Core>> {
        self.core.read().unwrap().clone().ok_or_else(|| HostError::Cluster {
            reason: pb::Reason::Unspecified,
            code: tonic::Code::Unavailable,
            message: "this agent is between roles; try again in a moment".into(),
            cause: None,
        })
    }

    /// A directory for temporary files (imports, exports) on the same file system as the store.
    pub fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    /// Applies a command through the cluster and waits until this host's copy has caught up.
    pub async fn apply(&self, command: pb::Command) -> Result<pb::ApplyResponse> {
        let response = self.core()?.apply(command).await.map_err(|s| HostError::from_cluster(&s))?;
        self.wait_revision(response.revision).await?;
        Ok(response)
    }
}
