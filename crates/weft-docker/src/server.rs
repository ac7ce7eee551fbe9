//! The HTTP side: a unix socket, HTTP/1.1 connections (with the upgrade `attach` hijacks), each
//! request routed to its handler and answered with moby's headers.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint, Uri};
use weft_proto::v1::agent_client::AgentClient;

use crate::engine::Engine;
use crate::error::{ApiError, ApiResult};
use crate::reply::{self, MULTIPLEXED, RAW, Reply};
use crate::route::{Query, Route, route};
use crate::{build, containers, events, exec, images, networks, system};

/// The largest request body read (create and network bodies are a few KiB).
const MAX_BODY: usize = 4 << 20;

/// What can stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The socket cannot be bound.
    #[error("docker socket {path}: {source}")]
    Bind {
        /// The socket's path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Another process serves on the socket.
    #[error("docker socket {0} is in use by another process")]
    InUse(PathBuf),
}

/// Binds the Docker socket at `path`, mode 0660 (root and its group, as docker.sock), replacing
/// a stale socket file but never a live one.
pub fn bind(path: &Path) -> Result<UnixListener, ServeError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |source| ServeError::Bind { path: path.to_path_buf(), source };
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ServeError::InUse(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(err)?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(err)?;
    Ok(listener)
}

/// A client of weftd's agent API on its local socket, connected on first use.
pub fn local_agent(socket: PathBuf) -> AgentClient<Channel> {
    let channel = Endpoint::from_static("http://localhost").connect_with_connector_lazy(tower::service_fn(
        move |_: Uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        },
    ));
    AgentClient::new(channel).max_decoding_message_size(256 << 20)
}

/// Serves the Engine API on `listener` until `shutdown` turns true.
pub async fn serve(listener: UnixListener, engine: Arc<Engine>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let stream = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "docker API: accept failed");
                    continue;
                }
            },
        };
        let engine = engine.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| handle(engine.clone(), request));
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "docker API: connection ended");
            }
        });
    }
}

async fn handle(engine: Arc<Engine>, request: Request<Incoming>) -> Result<Reply, Infallible> {
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    let mut reply = match dispatch(&engine, request).await {
        Ok(reply) => reply,
        Err(e) => {
            tracing::debug!(%method, %path, status = %e.status, error = %e.message, "docker API request refused");
            reply::error(&e)
        }
    };
    reply::decorate(&mut reply);
    Ok(reply)
}

async fn body(request: Request<Incoming>) -> ApiResult<bytes::Bytes> {
    Limited::new(request.into_body(), MAX_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| ApiError::bad(format!("request body: {e} (at most {MAX_BODY} bytes)")))
}

async fn dispatch(engine: &Arc<Engine>, request: Request<Incoming>) -> ApiResult<Reply> {
    let routed = route(request.method(), request.uri().path())?;
    let query = Query::parse(request.uri().query());
    let e = engine;
    match routed.route {
        Route::Ping => Ok(system::ping()),
        Route::Version => Ok(system::version()),
        Route::Info => system::info(e).await,
        Route::ContainerList => containers::list(e, &query).await,
        Route::ContainerCreate => containers::create(e, &query, &body(request).await?).await,
        Route::ContainerInspect(id) => containers::inspect(e, &id).await,
        Route::ContainerStart(id) => containers::start(e, &id).await,
        Route::ContainerStop(id) => containers::stop(e, &id, &query).await,
        Route::ContainerRestart(id) => containers::restart(e, &id, &query).await,
        Route::ContainerKill(id) => containers::kill(e, &id, &query).await,
        Route::ContainerWait(id) => containers::wait(e, &id, &query).await,
        Route::ContainerLogs(id) => containers::logs(e, &id, &query).await,
        Route::ContainerDelete(id) => containers::remove(e, &id, &query).await,
        Route::ContainerAttach(id) => attach(e, &id, query, request).await,
        Route::ContainerStats(id) => events::stats(e, &id, &query).await,
        Route::Events => events::events(e, &query).await,
        Route::ContainerTop(id) => events::top(e, &id, &query).await,
        Route::ExecCreate(id) => exec::create(e, &id, &body(request).await?).await,
        Route::ExecStart(id) => exec_start(e, &id, request).await,
        Route::ExecResize(id) => exec::resize(e, &id, &query).await,
        Route::ExecInspect(id) => exec::inspect(e, &id).await,
        Route::Build => build::build(e, &query, request.into_body()).await,
        Route::ImageList => images::list(e, &query).await,
        Route::ImagePull => images::pull(e, &query).await,
        Route::ImageLoad => images::load(e, request.into_body()).await,
        Route::ImageSave(name) => images::save(e, name.as_deref(), &query).await,
        Route::ImageTag(name) => images::tag(e, &name, &query).await,
        Route::ImageDelete(name) => images::remove(e, &name, &query).await,
        Route::ImageInspect(name) => images::inspect(e, &name).await,
        Route::NetworkList => networks::list(e, &query).await,
        Route::NetworkCreate => networks::create(e, &body(request).await?).await,
        Route::NetworkInspect(id) => networks::inspect(e, &id).await,
        Route::NetworkDelete(id) => networks::remove(e, &id).await,
        Route::NetworkConnect(id) => networks::connect(e, &id, &body(request).await?, true).await,
        Route::NetworkDisconnect(id) => networks::connect(e, &id, &body(request).await?, false).await,
    }
}

/// `exec start`: detached, it runs in the background and the answer is an empty 200, as
/// Docker's; attached, the connection is upgraded and carries stdin in and the output out.
async fn exec_start(engine: &Arc<Engine>, id: &str, request: Request<Incoming>) -> ApiResult<Reply> {
    let upgrade =
        request.headers().get(header::UPGRADE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let (parts, incoming) = request.into_parts();
    let bytes = body(Request::from_parts(parts.clone(), incoming)).await?;
    let (detach, size) = exec::start_prepare(engine, id, &bytes)?;
    let tty = engine.with_execs(|e| e.get(id).is_some_and(|x| x.tty));
    if detach {
        tokio::spawn(exec::run(
            engine.clone(),
            id.to_string(),
            size,
            None::<tokio::io::Empty>,
            None::<tokio::io::Sink>,
        ));
        return Ok(reply::empty(StatusCode::OK));
    }
    if !upgrade.eq_ignore_ascii_case("tcp") {
        return Err(ApiError::bad(
            "exec start needs the connection upgraded: send Connection: Upgrade and Upgrade: tcp",
        ));
    }
    let mut request = Request::from_parts(parts, ());
    let on_upgrade = hyper::upgrade::on(&mut request);
    let (engine, id) = (engine.clone(), id.to_string());
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let (read, write) = tokio::io::split(TokioIo::new(upgraded));
                exec::run(engine, id, size, Some(read), Some(write)).await;
            }
            Err(e) => tracing::debug!(error = %e, "docker API: exec upgrade failed"),
        }
    });
    Ok(upgraded_reply(if tty { RAW } else { MULTIPLEXED }))
}

/// A 101 that hands the connection over to a stream of `content_type`.
fn upgraded_reply(content_type: &'static str) -> Reply {
    let mut reply = Response::new(Full::new(bytes::Bytes::new()).boxed());
    *reply.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = reply.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("tcp"));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    reply
}

/// `attach`: answers 101 and hands the upgraded connection to the output pump.
async fn attach(
    engine: &Arc<Engine>,
    reference: &str,
    query: Query,
    mut request: Request<Incoming>,
) -> ApiResult<Reply> {
    let upgrade = request.headers().get(header::UPGRADE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !upgrade.eq_ignore_ascii_case("tcp") {
        return Err(ApiError::bad(
            "attach needs the connection upgraded: send Connection: Upgrade and Upgrade: tcp",
        ));
    }
    let (id, drained) = containers::attach_prepare(engine, reference, &query).await?;
    let on_upgrade = hyper::upgrade::on(&mut request);
    let engine = engine.clone();
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => containers::attach(engine, id, query, TokioIo::new(upgraded), drained).await,
            Err(e) => tracing::debug!(error = %e, "docker API: attach upgrade failed"),
        }
    });
    Ok(upgraded_reply(MULTIPLEXED))
}
