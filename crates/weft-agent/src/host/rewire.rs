//! A container's network after its host rebooted: the namespace weft made for it was a bind mount
//! under the state dir, and a reboot leaves only the empty mount point, without the namespace,
//! its interfaces or its routes. Before such a container starts again (its restart policy), a new
//! namespace is made at the same place and every network is wired again: with the same endpoint
//! and addresses when the cluster still holds them for it, else with a new endpoint (the same
//! address when it is free). Attachments revoked while the host was away come back the same way.

use std::net::IpAddr;

use weft_net::NetNs;

use super::{Host, HostError, NetConf, Result};

impl Host {
    /// Makes sure container `id`'s own network namespace exists and is wired before it starts
    /// again. A namespace that is still mounted (weftd restarted, the host did not) is left as
    /// it is. Waits for a live copy of the cluster's state first: a copy from before the reboot
    /// may still list endpoints the cluster has released since.
    pub(super) async fn rewire(&self, id: &str, name: &str) -> Result<()> {
        let mut conf = self.netconf(id)?;
        let Some(path) = conf.netns.clone() else { return Ok(()) };
        if NetNs::is_mounted_at(&path) && conf.revoked.is_empty() {
            return Ok(());
        }
        if !self.live.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(HostError::Precondition(
                "this host has not synced with the cluster since it started; the container's network is wired once it has".into(),
            ));
        }
        let fresh = !NetNs::is_mounted_at(&path);
        let ns = if fresh {
            tracing::info!(
                container = name,
                "its network namespace is gone (the host rebooted): making it again"
            );
            // The empty mount point left by the reboot.
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(HostError::Internal(format!("remove {}: {e}", path.display()))),
            }
            NetNs::create_at(&path, name)?
        } else {
            NetNs::open(&path)?
        };
        // In a new namespace no attachment is wired: each is kept as revoked (on disk) until it
        // is wired again, so an attempt cut short (the cluster not reachable yet) is taken up
        // where it stopped by the next one. eth0 first.
        if fresh {
            let wired = std::mem::take(&mut conf.attachments);
            conf.revoked.splice(0..0, wired);
            self.save_netconf(id, &conf)?;
        }
        let mut previous = conf.revoked.clone();
        previous.sort_by_key(|a| interface_order(&a.ifname));
        let state = self.state();
        for mut old in previous {
            let _ = weft_overlay::attach::detach(&self.nl, &old.host_ifname).await;
            let network = state.network(&old.network).cloned().ok_or_else(|| {
                HostError::NotFound(format!(
                    "network {:?} of container {name} is gone from the cluster; connect the container to another one",
                    old.network
                ))
            })?;
            let held =
                state.endpoint(old.endpoint).is_some_and(|e| e.container_id == id && e.node == self.id);
            if held {
                let before = old.clone();
                self.wire(&ns, &network, id, &mut old).await?;
                tracing::info!(container = name, network = %old.network, ips = ?old.ips, "wired again with its addresses");
                conf.revoked.retain(|a| *a != before);
                conf.attachments.push(old);
                self.save_netconf(id, &conf)?;
                continue;
            }
            // Released while the host was away: a new endpoint, at the old address when it is free.
            let wanted = old.ips.iter().find(|ip| ip.is_ipv4()).or(old.ips.first()).map(IpAddr::to_string);
            let mut attached = Err(HostError::Internal("not tried".into()));
            if let Some(ip) = &wanted {
                attached =
                    self.attach(&ns, &network, id, name, &old.aliases, ip, &old.ifname, &mut conf).await;
                if let Err(e) = &attached {
                    tracing::info!(container = name, ip = %ip, error = %e, "its old address is not to be had; taking another");
                }
            }
            if attached.is_err() {
                attached =
                    self.attach(&ns, &network, id, name, &old.aliases, "", &old.ifname, &mut conf).await;
            }
            let attached = attached?;
            conf.revoked.retain(|a| *a != old);
            tracing::info!(
                container = name, network = %attached.network, old = ?old.ips, new = ?attached.ips,
                "its endpoint was released while the host was away: wired with a new one"
            );
            retarget_ports(&mut conf, &old.ips, &attached.ips);
            self.save_netconf(id, &conf)?;
        }
        self.save_netconf(id, &conf)?;
        self.refresh_name_files(id, name, &conf)
    }

    /// Rewrites the container's /etc/hosts entries for itself and its resolv.conf from its
    /// attachments (they are bind-mounted from the container's directory, so the next start
    /// reads them).
    fn refresh_name_files(&self, id: &str, name: &str, conf: &NetConf) -> Result<()> {
        let short = &id[..12.min(id.len())];
        let hosts: Vec<String> = conf
            .attachments
            .iter()
            .filter(|a| a.ifname == "eth0")
            .flat_map(|a| a.ips.iter().map(move |ip| format!("{ip}\t{name} {short}")))
            .collect();
        let dns: Vec<String> = conf
            .attachments
            .iter()
            .filter(|a| a.ifname == "eth0" && a.network != super::DEFAULT_BRIDGE)
            .filter_map(|a| a.gateway.map(|g| g.to_string()))
            .collect();
        Ok(self.runtime.rewrite_name_files(id, &hosts, (!dns.is_empty()).then_some(dns.as_slice()))?)
    }
}

/// `eth0` before `eth1` before `eth10`.
fn interface_order(ifname: &str) -> (usize, String) {
    let digits = ifname.trim_start_matches(|c: char| !c.is_ascii_digit());
    (digits.parse().unwrap_or(usize::MAX), ifname.to_string())
}

/// Published ports that pointed at one of `old` point at `new` (by family).
fn retarget_ports(conf: &mut NetConf, old: &[IpAddr], new: &[IpAddr]) {
    for port in &mut conf.ports {
        if port.container_ip.is_some_and(|ip| old.contains(&ip))
            || port.container_ip6.is_some_and(|ip| old.contains(&ip))
        {
            *port = port.clone().to(new);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interfaces_are_wired_in_their_order() {
        let mut names = vec!["eth10", "eth1", "eth0", "eth2"];
        names.sort_by_key(|n| interface_order(n));
        assert_eq!(names, ["eth0", "eth1", "eth2", "eth10"]);
    }
}
