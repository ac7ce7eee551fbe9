//! `weft rm`: removes a container (a running one only when forced) and undoes everything weft
//! wired for it: published ports, interfaces, namespace, endpoints, netconf file. The undo is
//! also what a failed `run` and the janitor's orphan clean-up use.

use weft_net::NetNs;
use weft_proto::v1 as pb;
use weft_runtime::container::ContainerStatus;
use weft_state::cmd;

use super::{Host, HostError, NetConf, Result, blocking};

impl Host {
    /// Removes a container (a running one only with `force`) and everything weft wired for it.
    pub async fn remove(&self, reference: &str, force: bool) -> Result<()> {
        let _serial = self.serial.lock().await;
        let spec = self.runtime.find(reference)?;
        if !force && matches!(self.runtime.status(&spec.id)?, ContainerStatus::Running(_)) {
            return Err(HostError::Precondition(format!(
                "container {} is running: stop it first or use rm -f",
                spec.name
            )));
        }
        let conf = self.netconf(&spec.id)?;
        self.undo(&spec.id, &conf).await;
        Ok(())
    }

    /// Undoes what weft wired for a container (ports, veths, namespace, endpoints) and removes
    /// the container record if there is one. Best effort: what fails is logged, and an endpoint
    /// that could not be released stays in the netconf file for the janitor.
    pub(super) async fn undo(&self, id: &str, conf: &NetConf) {
        // Every step is tried whatever failed before it; every failure is reported (netavark's
        // teardown), none is dropped.
        let mut failures: Vec<String> = Vec::new();
        // Asked while the container's name can still be read.
        let joined = self.joined_by_others(id);
        let runtime = self.runtime.clone();
        let owned = id.to_string();
        if let Err(e) = blocking(move || Ok(runtime.remove(&owned, true)?)).await
            && !matches!(e, HostError::NotFound(_))
        {
            failures.push(format!("remove the container: {e}"));
        }
        self.containers_changed();
        let mut left = conf.clone();
        if !conf.ports.is_empty() {
            left.ports.clear();
            if let Err(e) = self.save_netconf(id, &left) {
                failures.push(format!("save the network config: {e}"));
            }
            if let Err(e) = self.sync_ports().await {
                failures.push(format!("withdraw published ports: {e}"));
            }
        }
        // A namespace of weft's own that no other container joined dies with its container, and
        // the kernel then deletes its veths itself, in the background and batched; deleting each
        // one here would make `rm` wait for an RCU grace period per interface (~15 ms).
        let namespace_takes_veths = conf.netns.as_ref().is_some_and(|p| p.exists()) && !joined;
        if !namespace_takes_veths {
            self.detach_all(conf, &mut failures).await;
        }
        if let Some(path) = &conf.netns
            && path.exists()
            && let Err(e) = NetNs::delete_at(path, id)
        {
            failures.push(format!("remove the network namespace {}: {e}", path.display()));
            // The namespace stays, so its veths would too: deleted here after all.
            if namespace_takes_veths {
                self.detach_all(conf, &mut failures).await;
            }
        }
        left.netns = None;
        let mut kept = Vec::new();
        for a in &conf.attachments {
            if self.state().endpoint(a.endpoint).is_none() {
                continue;
            }
            match self.apply(cmd::release_endpoint(a.endpoint)).await {
                Ok(_) => {}
                Err(e) if e.reason() == pb::Reason::UnknownEndpoint => {}
                Err(e) => {
                    failures.push(format!("release endpoint {} (will retry): {e}", a.endpoint));
                    kept.push(a.clone());
                }
            }
        }
        left.attachments = kept;
        self.forget_restarts(id);
        self.forget_health(id);
        if left.attachments.is_empty() {
            match std::fs::remove_file(self.netconf_path(id)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    failures.push(format!("remove the network config: {e}"))
                }
                _ => {}
            }
        } else if let Err(e) = self.save_netconf(id, &left) {
            failures.push(format!("save the network config: {e}"));
        }
        if !failures.is_empty() {
            tracing::warn!(container = id, failures = %failures.join("; "), "teardown incomplete");
        }
    }

    /// Deletes the host-side veth of every attachment in `conf`, each failure added to `failures`.
    async fn detach_all(&self, conf: &NetConf, failures: &mut Vec<String>) {
        for a in &conf.attachments {
            if let Err(e) = weft_overlay::attach::detach(&self.nl, &a.host_ifname).await {
                failures.push(format!("detach {}: {e}", a.host_ifname));
            }
        }
    }

    /// Whether another container's network config names container `id` in `--network
    /// container:...` (by name, id or id prefix): such a container shares, and keeps alive, its
    /// network namespace.
    fn joined_by_others(&self, id: &str) -> bool {
        // Without its record, nothing says who refers to it: assumed joined (veths deleted by rm).
        let Ok(spec) = self.runtime.find(id) else { return true };
        let Ok(entries) = std::fs::read_dir(self.dir.join("netconf")) else { return true };
        entries.flatten().any(|entry| {
            let file = entry.file_name().to_string_lossy().into_owned();
            let Some(other) = file.strip_suffix(".json") else { return false };
            if other == id {
                return false;
            }
            let Ok(conf) = self.netconf(other) else { return true };
            conf.mode.strip_prefix("container:").is_some_and(|target| spec.answers_to(target))
        })
    }
}
