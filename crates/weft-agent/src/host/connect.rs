//! `weft network connect`: attaches a running container to one more network (a further
//! interface in its namespace); on failure the new endpoint is released and the netconf restored.

use weft_net::NetNs;
use weft_proto::v1 as pb;
use weft_runtime::container::{ContainerSpec, ContainerStatus};
use weft_state::cmd;

use super::{Host, HostError, Result};

impl Host {
    /// Connects a running container to one more network.
    pub async fn connect(&self, request: &pb::ConnectRequest) -> Result<ContainerSpec> {
        let _serial = self.serial.lock().await;
        let spec = self.runtime.find(&request.container)?;
        let ContainerStatus::Running(run) = self.runtime.status(&spec.id)? else {
            return Err(HostError::Precondition(format!("container {} is not running", spec.name)));
        };
        let mut conf = self.netconf(&spec.id)?;
        if conf.netns.is_none() {
            return Err(HostError::Invalid(format!(
                "container {} uses --network {}: it has no network of its own to extend",
                spec.name, conf.mode
            )));
        }
        if conf.attachments.iter().any(|a| a.network == request.network) {
            return Err(HostError::Conflict(format!(
                "container {} is already connected to network {}",
                spec.name, request.network
            )));
        }
        let network = self.state().network(&request.network).cloned().ok_or_else(|| {
            HostError::NotFound(format!("network {:?} not found (see `weft network ls`)", request.network))
        })?;
        let ns = NetNs::of_pid(run.pid)?;
        let ifname = format!("eth{}", conf.attachments.len());
        let before = conf.clone();
        match self
            .attach(&ns, &network, &spec.id, &spec.name, &request.aliases, &request.ip, &ifname, &mut conf)
            .await
        {
            Ok(_) => Ok(spec),
            Err(e) => {
                if let Some(added) = conf.attachments.iter().find(|a| !before.attachments.contains(a)) {
                    let _ = weft_overlay::attach::detach(&self.nl, &added.host_ifname).await;
                    let _ = self.apply(cmd::release_endpoint(added.endpoint)).await;
                }
                self.save_netconf_or_warn(&spec.id, &before);
                Err(e)
            }
        }
    }
}
