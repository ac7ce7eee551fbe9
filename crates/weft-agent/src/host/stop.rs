//! `weft stop`: stops a container (SIGTERM, then SIGKILL after its grace) and withdraws its
//! published ports.

use std::time::Duration;

use weft_runtime::container::ContainerSpec;

use super::{Host, Result, blocking};

impl Host {
    /// Stops a container (SIGTERM, SIGKILL after `grace`, by default its own `--init-grace`) and
    /// withdraws its published ports.
    pub async fn stop(&self, reference: &str, grace: Option<Duration>) -> Result<ContainerSpec> {
        let spec = self.runtime.find(reference)?;
        self.mark_stopped_by_hand(&spec.id);
        let grace = grace.unwrap_or_else(|| match self.netconf_for_display(&spec.id).stop_grace {
            0 => Duration::from_secs(10),
            s => Duration::from_secs(s.into()),
        });
        let runtime = self.runtime.clone();
        let id = spec.id.clone();
        blocking(move || Ok(runtime.stop(&id, grace)?)).await?;
        let _serial = self.serial.lock().await;
        self.sync_ports().await?;
        Ok(spec)
    }
}
