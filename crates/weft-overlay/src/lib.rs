//! weft-overlay is the reconciler of the VXLAN data path: it turns the replicated state and the
//! local node id into the kernel objects this host should have (per network a bridge holding the
//! gateways and a vxlan device; per remote block one route and one neighbour, per remote host one
//! FDB entry), compares them with what the kernel holds, and applies only the difference. It also
//! owns weft's nftables table and the endpoint attachment seam.
//!
//! It must never flush kernel state or touch objects it does not own: an agent restart leaves
//! running containers and their traffic untouched. Planning is a pure function; only the apply
//! step talks to the kernel, through `weft-net`.

pub mod apply;
pub mod attach;
pub mod desired;
pub mod firewall;
pub mod journal;
pub mod observed;
pub mod plan;
pub mod reconciler;

pub use reconciler::{Metrics, OverlayConfig, Reconciler, Report, Trigger};

/// What the overlay can fail with.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    /// Reading the kernel's state failed.
    #[error("observe kernel state: {0}")]
    Observe(#[source] weft_net::NetError),
    /// One planned action failed (after rolling back its own partial work).
    #[error("apply {action}: {source}")]
    Apply {
        /// The action, for the log.
        action: String,
        /// What the kernel said.
        #[source]
        source: weft_net::NetError,
    },
    /// Programming nftables failed.
    #[error("nftables: {0}")]
    Firewall(#[source] std::io::Error),
    /// Attaching or detaching an endpoint failed.
    #[error("attach endpoint {ifname}: {source}")]
    Attach {
        /// The host-side interface.
        ifname: String,
        /// What failed.
        #[source]
        source: weft_net::NetError,
    },
}

/// Results of this crate.
pub type Result<T, E = OverlayError> = std::result::Result<T, E>;
