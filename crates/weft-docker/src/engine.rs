//! The API's state beside weft's: containers created and not yet started (weft runs a container
//! at start, so until then it lives here), and the client of weftd's own agent API that every
//! handler calls.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tonic::Code;
use tonic::transport::Channel;
use weft_proto::v1 as pb;
use weft_proto::v1::agent_client::AgentClient;

use crate::create::CreateRequest;
use crate::error::{ApiError, ApiResult};

/// A fresh id from the kernel's random source, in Docker's and weft's shape (64 hex digits):
/// containers created and exec instances.
pub fn new_id() -> ApiResult<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .map_err(|e| ApiError::internal(format!("read /dev/urandom: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// How a created container's start ended: `None` until it is started.
pub type StartOutcome = Option<Result<(), String>>;

/// A container created through the API and not started yet.
#[derive(Debug)]
pub struct Created {
    /// Its name.
    pub name: String,
    /// What start runs.
    pub request: CreateRequest,
    /// Flips when start has run it (or failed to).
    pub started: watch::Sender<StartOutcome>,
    /// One per attached client: dropped or sent when that client has all the output, so an
    /// `--rm` container is removed only after its output is delivered.
    pub drained: Vec<oneshot::Receiver<()>>,
    /// A client waits for its exit: `--rm` is then done here, after the output is delivered.
    pub watched: bool,
    /// Networks connected before start beyond the one it runs on: joined right after start.
    pub more_networks: Vec<weft_proto::v1::ConnectRequest>,
}

/// An exec instance (`docker exec`): made by exec create, run by exec start, read by exec
/// inspect for its exit status.
#[derive(Debug, Clone, Default)]
pub struct ExecInstance {
    /// The container's id.
    pub container: String,
    /// The command.
    pub cmd: Vec<String>,
    /// KEY=VALUE pairs.
    pub env: Vec<String>,
    /// user[:group].
    pub user: String,
    /// Working directory.
    pub workdir: String,
    /// On a pseudo-terminal.
    pub tty: bool,
    /// The client sends stdin.
    pub stdin: bool,
    /// The client wants stdout / stderr.
    pub stdout: bool,
    /// See `stdout`.
    pub stderr: bool,
    /// Started and not yet exited.
    pub running: bool,
    /// Set once it exited.
    pub exit_code: Option<i32>,
    /// Terminal size changes for a running TTY exec (rows, columns).
    pub resize: Option<tokio::sync::mpsc::Sender<(u32, u32)>>,
}

/// The Docker API's view of one weftd.
pub struct Engine {
    agent: AgentClient<Channel>,
    created: Mutex<BTreeMap<String, Created>>,
    execs: Mutex<BTreeMap<String, ExecInstance>>,
}

impl Engine {
    /// An engine calling weftd's agent API through `agent`.
    pub fn new(agent: AgentClient<Channel>) -> Arc<Engine> {
        Arc::new(Engine { agent, created: Mutex::new(BTreeMap::new()), execs: Mutex::new(BTreeMap::new()) })
    }

    /// A client of weftd's agent API.
    pub fn agent(&self) -> AgentClient<Channel> {
        self.agent.clone()
    }

    /// Runs `f` on the created containers.
    pub fn with_created<T>(&self, f: impl FnOnce(&mut BTreeMap<String, Created>) -> T) -> T {
        f(&mut self.created.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Runs `f` on the exec instances.
    pub fn with_execs<T>(&self, f: impl FnOnce(&mut BTreeMap<String, ExecInstance>) -> T) -> T {
        f(&mut self.execs.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The id of a created container that `reference` names (its id, a prefix of it, or its name).
    pub fn find_created(&self, reference: &str) -> Option<String> {
        let reference = reference.strip_prefix('/').unwrap_or(reference);
        self.with_created(|c| {
            c.iter()
                .find(|(id, e)| e.name == reference || id.as_str() == reference)
                .or_else(|| c.iter().find(|(id, _)| reference.len() >= 3 && id.starts_with(reference)))
                .map(|(id, _)| id.clone())
        })
    }

    /// weft's view of container `reference`, `None` when weft has no such container.
    pub async fn inspect(&self, reference: &str) -> ApiResult<Option<pb::ContainerInfo>> {
        let reference = reference.strip_prefix('/').unwrap_or(reference).to_string();
        match self.agent().inspect_container(pb::ContainerRef { reference }).await {
            Ok(r) => Ok(Some(r.into_inner())),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(s.into()),
        }
    }

    /// Waits until the created container `id` has been started (or its start failed, or it was
    /// removed); returns at once for a container weft already runs.
    pub async fn until_started(&self, id: &str) -> ApiResult<()> {
        let Some(mut rx) = self.with_created(|c| c.get(id).map(|e| e.started.subscribe())) else {
            return Ok(());
        };
        let outcome = rx.wait_for(Option::is_some).await.map(|o| o.clone()).ok().flatten();
        match outcome {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(ApiError::conflict(e)),
            None => Err(ApiError::no_such_container(id)),
        }
    }

    /// Waits for container `id` to exit and returns its status; for `removed`, also until it is
    /// gone.
    pub async fn wait_exit(&self, id: &str, removed: bool) -> ApiResult<i64> {
        self.until_started(id).await?;
        let code = match self.agent().wait(pb::ContainerRef { reference: id.into() }).await {
            Ok(r) => i64::from(r.into_inner().exit_code),
            Err(s) if s.code() == Code::NotFound && removed => return Ok(0),
            Err(s) => return Err(s.into()),
        };
        while removed && self.inspect(id).await?.is_some() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(code)
    }
}
