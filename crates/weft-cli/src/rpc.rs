//! The API clients the verbs are given, and how a failed call becomes a [`Failure`].

use tonic::transport::Channel;
use weft_proto::v1::agent_client::AgentClient;
use weft_proto::v1::cluster_client::ClusterClient;

use crate::failure::Failure;

/// The node-local agent API: networks, images, containers.
pub(crate) type Api = AgentClient<Channel>;

/// The cluster API: nodes, roles, join tokens.
pub(crate) type ClusterApi = ClusterClient<Channel>;

/// A failed call as the verb's failure, its exit status taken from the error detail.
pub(crate) fn err(s: tonic::Status) -> Failure {
    Failure::from(s)
}
