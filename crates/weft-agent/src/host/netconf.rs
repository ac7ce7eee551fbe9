//! The netconf store: what weft wired for each container (its namespace, attachments and
//! published ports), one JSON file per container under the state dir's `netconf/`, read, shown
//! and saved durably, so removal undoes exactly that, also after an agent restart.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use weft_proto::v1 as pb;

use super::{Host, Result};
use crate::ports::PortSpec;

/// One network attachment of a container, as weft wired it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// Network name.
    pub network: String,
    /// Endpoint id in the replicated state.
    pub endpoint: u64,
    /// Host end of the veth pair.
    pub host_ifname: String,
    /// Interface inside the container.
    pub ifname: String,
    /// Its addresses.
    pub ips: Vec<IpAddr>,
    /// Its MAC.
    pub mac: String,
    /// The gateway (and DNS server) it uses.
    pub gateway: Option<IpAddr>,
    /// Its `--network-alias` names, kept so the endpoint can be allocated again with them (after
    /// a reboot, when the cluster had released it).
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// What weft did to a container's network, kept beside the runtime's own record so removal undoes
/// exactly that, also after an agent restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetConf {
    /// The `--network` value as given (`bridge`, `host`, `none`, `container:NAME`, a network).
    pub mode: String,
    /// The namespace weft made for it (a bind mount under the state dir), if any.
    pub netns: Option<PathBuf>,
    /// Its networks.
    pub attachments: Vec<Attachment>,
    /// Published ports.
    pub ports: Vec<PortSpec>,
    /// Remove the container when it exits (`--rm`).
    pub auto_remove: bool,
    /// Seconds `stop` waits after SIGTERM unless told (`--init-grace`).
    #[serde(default)]
    pub stop_grace: u32,
    /// The image as the user named it (`busybox`), for `ps`.
    #[serde(default)]
    pub image: String,
    /// Attachments whose address the cluster took back while this host was away; their
    /// interfaces are gone (see [`Host::janitor`]).
    #[serde(default)]
    pub revoked: Vec<Attachment>,
    /// `--restart`.
    #[serde(default)]
    pub restart: crate::restart::RestartPolicy,
    /// `--label KEY=VALUE`, kept here with the rest of weft's own record of the container.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

impl Host {
    /// The netconf file of container `id`.
    pub(super) fn netconf_path(&self, id: &str) -> PathBuf {
        self.dir.join("netconf").join(format!("{id}.json"))
    }

    /// What weft wired for container `id` (default for containers it did not wire).
    pub fn netconf(&self, id: &str) -> Result<NetConf> {
        Ok(weft_fs::read_json(&self.netconf_path(id))?.unwrap_or_default())
    }

    /// [`Host::netconf`] for what only shows it (inspect, ps, stop's grace): an unreadable file
    /// is logged with its name and shown as nothing wired.
    pub fn netconf_for_display(&self, id: &str) -> NetConf {
        self.netconf(id).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "network config unreadable");
            NetConf::default()
        })
    }

    /// Writes a container's network config durably (it says what to undo), off the async threads.
    pub(super) fn save_netconf(&self, id: &str, conf: &NetConf) -> Result<()> {
        let path = self.netconf_path(id);
        let write = || weft_fs::write_json(&path, conf, 0o600, weft_fs::Durability::Durable);
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        Ok(if multi_thread { tokio::task::block_in_place(write) } else { write() }?)
    }

    /// [`Host::save_netconf`] where the caller goes on either way: a failure is logged.
    pub(super) fn save_netconf_or_warn(&self, id: &str, conf: &NetConf) {
        if let Err(e) = self.save_netconf(id, conf) {
            tracing::warn!(container = id, error = %e, "saving the network config failed");
        }
    }

    /// The attachments of a container, for inspect and ps.
    pub fn networks_of(&self, id: &str) -> Vec<pb::ContainerNetwork> {
        Self::describe(&self.netconf_for_display(id).attachments)
    }

    /// The attachments of a container whose addresses the cluster took back.
    pub fn revoked_of(&self, id: &str) -> Vec<pb::ContainerNetwork> {
        Self::describe(&self.netconf_for_display(id).revoked)
    }

    /// Attachments as the API shows them.
    fn describe(attachments: &[Attachment]) -> Vec<pb::ContainerNetwork> {
        attachments
            .iter()
            .map(|a| pb::ContainerNetwork {
                network: a.network.clone(),
                ips: a.ips.iter().map(ToString::to_string).collect(),
                mac: a.mac.clone(),
                endpoint_id: a.endpoint,
                gateway: a.gateway.map(|g| g.to_string()).unwrap_or_default(),
            })
            .collect()
    }
}
