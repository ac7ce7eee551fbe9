//! Wiring one endpoint: allocates an endpoint of a network through the cluster, records it in
//! the container's netconf, and puts its interface into the container's namespace (for `run`'s
//! first network and `connect`'s further ones, and again for a container whose namespace died
//! with its host, see `rewire`).

use weft_net::NetNs;
use weft_proto::v1 as pb;
use weft_state::cmd;

use super::{Attachment, Host, HostError, NetConf, Result};

impl Host {
    /// Allocates an endpoint of `network` for the container and wires it into `ns` as `ifname`.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn attach(
        &self,
        ns: &NetNs,
        network: &weft_state::Network,
        container_id: &str,
        name: &str,
        aliases: &[String],
        ip: &str,
        ifname: &str,
        conf: &mut NetConf,
    ) -> Result<Attachment> {
        let mut command = cmd::allocate_endpoint(&network.name, self.id, container_id, name, ip);
        if let Some(pb::command::Kind::AllocateEndpoint(a)) = command.kind.as_mut() {
            a.aliases = aliases.to_vec();
        }
        let response = self.apply(command).await?;
        let response_revision = response.revision;
        let Some(pb::outcome::Kind::Endpoint(endpoint)) = response.outcome.and_then(|o| o.kind) else {
            return Err(HostError::Internal("the cluster answered an allocation without an endpoint".into()));
        };
        let attachment = Attachment {
            network: network.name.clone(),
            endpoint: endpoint.id,
            host_ifname: weft_overlay::attach::host_ifname(endpoint.id),
            ifname: ifname.into(),
            ips: endpoint.ips.iter().filter_map(|i| i.parse().ok()).collect(),
            mac: endpoint.mac.clone(),
            gateway: None,
            aliases: aliases.to_vec(),
        };
        // Recorded before the interface exists, so an undo after a failure releases the endpoint.
        conf.attachments.push(attachment);
        self.save_netconf(container_id, conf)?;
        let at = conf.attachments.len() - 1;
        self.wire(ns, network, container_id, &mut conf.attachments[at]).await?;
        self.save_netconf(container_id, conf)?;
        self.wait_reconciled(response_revision).await;
        Ok(conf.attachments[at].clone())
    }

    /// Puts the interface of an endpoint this host holds into `ns` (as `attachment.ifname`) and
    /// records the gateway it uses in `attachment`.
    pub(super) async fn wire(
        &self,
        ns: &NetNs,
        network: &weft_state::Network,
        container_id: &str,
        attachment: &mut Attachment,
    ) -> Result<()> {
        let state = self.state();
        let mtu = match state.node(self.id) {
            Some(me) => self.nl.underlay_mtu(me.underlay).await.unwrap_or(1500),
            None => 1500,
        };
        let mut spec = weft_overlay::attach::spec_for(&state, attachment.endpoint, mtu).ok_or_else(|| {
            HostError::Internal(format!(
                "endpoint {} of container {container_id} is not in this host's copy of the state",
                attachment.endpoint
            ))
        })?;
        spec.ifname = attachment.ifname.clone();
        if attachment.ifname != "eth0" {
            // A second network adds routes to its subnets, not a second default route.
            spec.extra_routes = spec.gateways.iter().zip(&network.subnets).map(|(g, s)| (*s, *g)).collect();
            spec.gateways.clear();
        }
        attachment.gateway = spec.gateways.first().copied().or(spec.extra_routes.first().map(|r| r.1));
        weft_overlay::attach::attach(&self.nl, ns, &spec)
            .await
            .map_err(|e| HostError::Internal(e.to_string()))
    }
}
