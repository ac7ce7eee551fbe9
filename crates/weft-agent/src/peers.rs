//! Outgoing gRPC channels to other agents, one per address, all mutual TLS with this node's
//! certificate. Channels connect lazily and reconnect by themselves; HTTP/2 keep-alives notice a
//! peer that vanished (a cut link) within a few seconds.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use weft_proto::v1::cluster_client::ClusterClient;

/// The channel pool.
pub struct Peers {
    tls: ClientTlsConfig,
    channels: Mutex<HashMap<String, Channel>>,
}

impl Peers {
    /// A pool whose connections present this TLS client config.
    pub fn new(tls: ClientTlsConfig) -> Peers {
        Peers { tls, channels: Mutex::new(HashMap::new()) }
    }

    /// The channel to `addr` (`IP:PORT`).
    pub fn channel(&self, addr: &str) -> Result<Channel, tonic::Status> {
        let mut channels = self.channels.lock().unwrap();
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let endpoint = Endpoint::from_shared(format!("https://{addr}"))
            .and_then(|e| e.tls_config(self.tls.clone()))
            .map_err(|e| tonic::Status::invalid_argument(format!("bad peer address {addr}: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(2))
            .keep_alive_while_idle(true)
            .tcp_nodelay(true);
        let channel = endpoint.connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    /// A cluster API client for `addr`.
    pub fn cluster(&self, addr: &str) -> Result<ClusterClient<Channel>, tonic::Status> {
        Ok(ClusterClient::new(self.channel(addr)?))
    }
}
