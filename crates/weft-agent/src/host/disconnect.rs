//! `weft network disconnect`: takes a container's interface on a network away, records that,
//! and releases the endpoint through the cluster.

use weft_proto::v1 as pb;
use weft_runtime::container::ContainerSpec;
use weft_state::cmd;

use super::{Host, HostError, Result};

impl Host {
    /// Disconnects a running container from a network.
    pub async fn disconnect(&self, request: &pb::ConnectRequest) -> Result<ContainerSpec> {
        let _serial = self.serial.lock().await;
        let spec = self.runtime.find(&request.container)?;
        let mut conf = self.netconf(&spec.id)?;
        let Some(position) = conf.attachments.iter().position(|a| a.network == request.network) else {
            return Err(HostError::NotFound(format!(
                "container {} is not connected to network {}",
                spec.name, request.network
            )));
        };
        let attachment = conf.attachments.remove(position);
        weft_overlay::attach::detach(&self.nl, &attachment.host_ifname)
            .await
            .map_err(|e| HostError::Internal(e.to_string()))?;
        self.save_netconf(&spec.id, &conf)?;
        self.apply(cmd::release_endpoint(attachment.endpoint)).await?;
        Ok(spec)
    }
}
