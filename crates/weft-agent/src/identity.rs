//! What a node keeps in its state dir about itself: its id, name and role (`node.json`), its
//! certificates (`tls/`), on managers the CA key, and the managers it knows of
//! (`managers.json`, the seeds a worker watches and a new manager first talks to).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::pki::ClusterCa;
use crate::tls::{self, NodeTls, TlsError};

/// The node's identity, `node.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeFile {
    /// Raft and state id.
    pub id: u64,
    /// Host name in the cluster.
    pub name: String,
    /// True on managers.
    pub manager: bool,
}

/// A manager's extra key material: the CA with its key (join token secrets derive from it).
pub struct ManagerKeys {
    /// The CA.
    pub ca: ClusterCa,
}

/// The state dir's layout.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// The layout under `root`.
    pub fn new(root: &Path) -> StateDir {
        StateDir { root: root.to_path_buf() }
    }

    /// The root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The raft log's directory.
    pub fn raft_dir(&self) -> PathBuf {
        self.root.join("raft")
    }

    fn tls_dir(&self) -> PathBuf {
        self.root.join("tls")
    }

    /// The node file, if this node has joined a cluster.
    pub fn node(&self) -> Result<Option<NodeFile>, TlsError> {
        let path = self.root.join("node.json");
        if !path.exists() {
            return Ok(None);
        }
        let text = tls::read(&path)?;
        serde_json::from_str(&text).map(Some).map_err(|e| TlsError::Cert(format!("{}: {e}", path.display())))
    }

    /// Saves the node file.
    pub fn save_node(&self, node: &NodeFile) -> Result<(), TlsError> {
        let text = serde_json::to_string_pretty(node).map_err(|e| TlsError::Cert(e.to_string()))?;
        tls::write(&self.root.join("node.json"), &text, 0o644)
    }

    /// The node's certificates.
    pub fn tls(&self) -> Result<NodeTls, TlsError> {
        NodeTls::load(&self.tls_dir())
    }

    /// Saves the node's certificates.
    pub fn save_tls(&self, tls: &NodeTls) -> Result<(), TlsError> {
        tls.save(&self.tls_dir())
    }

    /// A manager's CA and its key.
    pub fn manager_keys(&self) -> Result<ManagerKeys, TlsError> {
        let dir = self.tls_dir();
        Ok(ManagerKeys {
            ca: ClusterCa {
                cert_pem: tls::read(&dir.join("ca.pem"))?,
                key_pem: tls::read(&dir.join("ca-key.pem"))?,
            },
        })
    }

    /// Saves a manager's CA key.
    pub fn save_manager_keys(&self, keys: &ManagerKeys) -> Result<(), TlsError> {
        tls::write(&self.tls_dir().join("ca-key.pem"), &keys.ca.key_pem, 0o600)
    }

    /// The managers (id, API address) this node last knew.
    pub fn managers(&self) -> Vec<(u64, String)> {
        std::fs::read_to_string(self.root.join("managers.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    /// Records the managers only when they differ from what was last recorded through
    /// `last` (callers see the list on every state change; the file changes rarely).
    pub fn record_managers(&self, managers: &[(u64, String)], last: &mut Vec<(u64, String)>) {
        if managers.is_empty() || managers == last.as_slice() {
            return;
        }
        if let Err(e) = self.save_managers(managers) {
            tracing::warn!(error = %e, "cannot record the managers");
            return;
        }
        *last = managers.to_vec();
    }

    /// Records the managers (id, API address).
    pub fn save_managers(&self, managers: &[(u64, String)]) -> Result<(), TlsError> {
        let text = serde_json::to_string(managers).map_err(|e| TlsError::Cert(e.to_string()))?;
        tls::write(&self.root.join("managers.json"), &text, 0o644)
    }
}
