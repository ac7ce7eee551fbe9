//! `weft start`: starts an exited container again, as Docker's `start` does: its network wired
//! again where it is gone (as after a reboot), its published ports back, and its restart policy
//! in force again (a manual stop no longer holds it).

use weft_runtime::container::{ContainerSpec, ContainerStatus};

use super::{Host, HostError, Result, blocking};

impl Host {
    /// Starts container `reference` again; an error if it runs.
    pub async fn start_again(&self, reference: &str) -> Result<ContainerSpec> {
        let _serial = self.serial.lock().await;
        let spec = self.runtime.find(reference)?;
        let runtime = self.runtime.clone();
        let status = {
            let id = spec.id.clone();
            blocking(move || Ok(runtime.status(&id)?)).await?
        };
        if let ContainerStatus::Running(_) = status {
            return Err(HostError::Precondition(format!("container {} is already running", spec.name)));
        }
        if self.netconf_for_display(&spec.id).auto_remove {
            return Err(HostError::Precondition(format!(
                "container {} was run with --rm: it is removed when it exits, not started again",
                spec.name
            )));
        }
        self.rewire(&spec.id, &spec.name).await?;
        self.clear_stopped_by_hand(&spec.id);
        let runtime = self.runtime.clone();
        {
            let id = spec.id.clone();
            blocking(move || Ok(runtime.start(&id)?)).await?;
        }
        self.containers_changed();
        self.sync_ports().await?;
        Ok(spec)
    }
}
