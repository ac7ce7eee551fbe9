//! The published-port table: weft's nftables table rewritten from the ports of the containers
//! on this host that have not exited (and of the one being started), loaded only when it
//! changed.

use super::janitor::Survey;
use super::{Host, HostError, Result};
use crate::ports::{self, PortSpec};

impl Host {
    /// Every published port of a container on this host that has not exited.
    pub(super) fn all_ports(&self) -> Vec<PortSpec> {
        self.survey().map(|s| s.wanted_ports()).unwrap_or_default()
    }

    /// Rewrites weft's port table from the running containers' netconf files (plus the one being
    /// started, whose file is already written).
    pub async fn sync_ports(&self) -> Result<()> {
        let Some(survey) = self.survey() else { return Ok(()) };
        self.sync_ports_from(&survey).await
    }

    /// [`Host::sync_ports`] from a survey already taken (the janitor's round).
    pub(super) async fn sync_ports_from(&self, survey: &Survey) -> Result<()> {
        let script = ports::script(&survey.wanted_ports());
        let mut loaded = self.ports_loaded.lock().await;
        if loaded.as_ref().is_some_and(|l| l.script == script) {
            return Ok(());
        }
        ports::apply(&script).await.map_err(|e| HostError::Internal(format!("nftables: {e}")))?;
        *loaded = Some(LoadedPorts { listing: ports::listing().await, script });
        Ok(())
    }

    /// After an nftables change notification: when the port table is not as weft left it (a
    /// `nft flush ruleset`, an edited rule), it is loaded again. weft's own loads notify too;
    /// their listing matches and nothing happens.
    pub(super) async fn heal_ports(&self) {
        let mut loaded = self.ports_loaded.lock().await;
        let Some(current) = loaded.as_mut() else { return };
        let now = ports::listing().await;
        if now == current.listing {
            return;
        }
        match ports::apply(&current.script).await {
            Ok(()) => {
                current.listing = ports::listing().await;
                tracing::warn!(
                    "weft's published-ports table was changed or removed by someone else; restored"
                );
            }
            Err(e) => tracing::warn!(error = %e, "restoring the published-ports table failed"),
        }
    }
}

/// What weft last loaded as its port table.
#[derive(Debug)]
pub(super) struct LoadedPorts {
    /// The script.
    pub(super) script: String,
    /// `nft -s list` of the table right after (`None`: no table, no ports published).
    pub(super) listing: Option<String>,
}

impl Survey {
    /// The ports that should be published: those of containers that have not exited, and of
    /// containers being started (a netconf file, no container yet).
    fn wanted_ports(&self) -> Vec<PortSpec> {
        let mut wanted: Vec<PortSpec> = self
            .netconfs
            .iter()
            .filter(|(id, _)| self.containers.get(*id) != Some(&true))
            .flat_map(|(_, (conf, _))| conf.ports.iter().cloned())
            .collect();
        wanted.sort();
        wanted.dedup();
        wanted
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::NetConf;
    use super::super::janitor::Survey;
    use crate::ports;

    fn conf(ports: &[&str]) -> (NetConf, Option<Duration>) {
        let ports = ports.iter().map(|p| ports::parse(p).unwrap()).collect();
        (NetConf { ports, ..NetConf::default() }, Some(Duration::from_secs(1)))
    }

    #[test]
    fn wanted_ports_are_those_of_live_and_starting_containers() {
        let survey = Survey {
            containers: [("running".to_string(), false), ("exited".to_string(), true)].into(),
            netconfs: [
                ("running".to_string(), conf(&["8080:80", "53:53/udp"])),
                ("exited".to_string(), conf(&["9090:90"])),
                ("starting".to_string(), conf(&["7070:70", "8080:80"])),
            ]
            .into(),
        };
        let wanted: Vec<String> = survey
            .wanted_ports()
            .iter()
            .map(|p| format!("{}:{}/{}", p.host_port, p.container_port, p.protocol))
            .collect();
        assert_eq!(
            wanted.len(),
            3,
            "{wanted:?}: the exited container's port is withdrawn, duplicates merged"
        );
        assert!(wanted.contains(&"7070:70/tcp".to_string()), "{wanted:?}");
        assert!(!wanted.iter().any(|p| p.starts_with("9090")), "{wanted:?}");
    }
}
