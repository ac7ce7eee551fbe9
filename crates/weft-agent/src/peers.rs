//! Outgoing gRPC channels to other agents, one per address (and per expected node), all mutual
//! TLS with this node's certificate. Channels connect lazily and reconnect by themselves; HTTP/2
//! keep-alives notice a peer that vanished (a cut link) within a few seconds. A renewed
//! certificate replaces the pool's channels: connections made from then on present it.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use weft_proto::v1::cluster_client::ClusterClient;

use crate::tls::NodeTls;

/// The channel pool.
pub struct Peers {
    tls: RwLock<NodeTls>,
    /// By address and the node the server must be (`None`: any manager).
    channels: Mutex<HashMap<(String, Option<u64>), Channel>>,
}

impl Peers {
    /// A pool whose connections present this node's certificate.
    pub fn new(tls: NodeTls) -> Peers {
        Peers { tls: RwLock::new(tls), channels: Mutex::new(HashMap::new()) }
    }

    /// The channel to the manager at `addr` (`IP:PORT`): its certificate must be a manager's.
    pub fn channel(&self, addr: &str) -> Result<Channel, tonic::Status> {
        self.channel_as(addr, None)
    }

    /// The channel to node `id` at `addr`: its certificate must be that node's (raft peers).
    pub fn channel_to_node(&self, addr: &str, id: u64) -> Result<Channel, tonic::Status> {
        self.channel_as(addr, Some(id))
    }

    fn channel_as(&self, addr: &str, node: Option<u64>) -> Result<Channel, tonic::Status> {
        let key = (addr.to_string(), node);
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = channels.get(&key) {
            return Ok(c.clone());
        }
        let tls: ClientTlsConfig = {
            let tls = self.tls.read().unwrap_or_else(|e| e.into_inner());
            match node {
                Some(id) => tls.client_config_for(id),
                None => tls.client_config(),
            }
        };
        let endpoint = Endpoint::from_shared(format!("https://{addr}"))
            .and_then(|e| e.tls_config(tls))
            .map_err(|e| tonic::Status::invalid_argument(format!("bad peer address {addr}: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(2))
            .keep_alive_while_idle(true)
            .tcp_nodelay(true);
        let channel = endpoint.connect_lazy();
        channels.insert(key, channel.clone());
        Ok(channel)
    }

    /// A cluster API client for the manager at `addr`.
    pub fn cluster(&self, addr: &str) -> Result<ClusterClient<Channel>, tonic::Status> {
        Ok(ClusterClient::new(self.channel(addr)?))
    }

    /// Presents `tls` from now on: channels made before are dropped from the pool (calls in
    /// flight on them finish; the next call dials anew with the new certificate).
    pub fn renew(&self, tls: NodeTls) {
        *self.tls.write().unwrap_or_else(|e| e.into_inner()) = tls;
        self.channels.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}
