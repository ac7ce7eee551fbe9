//! Address revocation: a running container whose endpoint the cluster released (its host was
//! Down longer than the lease TTL) loses that interface, so an address is never used twice.

use std::time::Duration;

use super::{Host, NetConf};

/// How long a live copy of the state must miss a running container's endpoint before its
/// interface is taken away.
const REVOKE_AFTER: Duration = Duration::from_secs(5);

impl Host {
    /// Takes the network away from a container whose address the cluster has taken back (its
    /// host was Down longer than the lease TTL, so the address may now belong to another
    /// container): its interface goes, the attachment is kept as revoked, and it is logged. Only
    /// with a live copy of the state, and only after the endpoint has been missing from it for
    /// [`REVOKE_AFTER`], so a copy that is merely behind never costs a container its network.
    pub(super) async fn revoke_lost_addresses(&self, id: &str, mut conf: NetConf) {
        if !self.live.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let state = self.state();
        let mut missing = self.missing_since.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut lost = Vec::new();
        for a in &conf.attachments {
            let held = state.endpoint(a.endpoint).is_some_and(|e| e.container_id == id);
            if held {
                missing.remove(&a.endpoint);
            } else if missing.entry(a.endpoint).or_insert_with(std::time::Instant::now).elapsed()
                >= REVOKE_AFTER
            {
                lost.push(a.clone());
            }
        }
        *self.missing_since.lock().unwrap_or_else(|e| e.into_inner()) = missing;
        if lost.is_empty() {
            return;
        }
        for a in &lost {
            tracing::error!(
                container = %id, network = %a.network, ips = ?a.ips,
                "the cluster released this container's address (its host was down longer than the lease TTL); its interface is removed so the address is never used twice"
            );
            let _ = weft_overlay::attach::detach(&self.nl, &a.host_ifname).await;
            self.missing_since.lock().unwrap_or_else(|e| e.into_inner()).remove(&a.endpoint);
        }
        conf.attachments.retain(|a| !lost.contains(a));
        conf.revoked.extend(lost);
        self.save_netconf_or_warn(id, &conf);
    }

    /// This node was removed from the cluster (`weft node rm -f` while it ran): every address
    /// its containers hold was released with it and may be handed out again, so every interface
    /// goes now, before weftd exits, without waiting for [`REVOKE_AFTER`]. The containers keep
    /// running without their networks; `inspect` lists them as revoked.
    /// `state` is the cluster's state as this node last saw it (without its endpoints).
    pub async fn revoke_all_addresses(&self, state: &weft_state::State) {
        let Some(survey) = self.survey() else { return };
        for (id, (mut conf, _)) in survey.netconfs {
            let (kept, lost): (Vec<_>, Vec<_>) = conf
                .attachments
                .iter()
                .cloned()
                .partition(|a| state.endpoint(a.endpoint).is_some_and(|e| e.container_id == id));
            if lost.is_empty() {
                continue;
            }
            for a in &lost {
                tracing::error!(
                    container = %id, network = %a.network, ips = ?a.ips,
                    "this node was removed from the cluster: the container's address is released and its interface removed"
                );
                let _ = weft_overlay::attach::detach(&self.nl, &a.host_ifname).await;
            }
            conf.attachments = kept;
            conf.revoked.extend(lost);
            self.save_netconf_or_warn(&id, &conf);
        }
    }
}
