//! The container endpoints: create, start, attach, wait, logs, list, inspect, stop, kill, rm.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::StatusCode;
use tokio::io::AsyncWriteExt;
use tokio::sync::{oneshot, watch};
use tokio_stream::StreamExt;
use tonic::Code;
use weft_proto::v1 as pb;

use crate::create;
use crate::engine::{Created, Engine};
use crate::error::{ApiError, ApiResult};
use crate::frame::{Stream, frame};
use crate::model;
use crate::reply::{self, MULTIPLEXED, Reply};
use crate::route::Query;

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// `POST /containers/create`.
pub async fn create(engine: &Arc<Engine>, query: &Query, body: &[u8]) -> ApiResult<Reply> {
    let request = create::parse(body, query.get("name").unwrap_or(""))?;
    if query.get("platform").is_some_and(|p| !p.is_empty() && !p.starts_with("linux")) {
        return Err(ApiError::bad(format!(
            "weft runs linux containers only, not {:?}",
            query.get("platform")
        )));
    }
    let mut agent = engine.agent();
    match agent.inspect_image(pb::ImageRef { reference: request.run.image.clone() }).await {
        Ok(_) => {}
        Err(s) if s.code() == Code::NotFound => return Err(ApiError::no_such_image(&request.run.image)),
        Err(s) => return Err(s.into()),
    }
    let network = request.run.network.as_str();
    let named_network = !(network.is_empty()
        || ["bridge", "host", "none"].contains(&network)
        || network.starts_with("container:"));
    if named_network {
        match agent.inspect_network(pb::NetworkRef { name: network.into() }).await {
            Ok(_) => {}
            Err(s) if s.code() == Code::NotFound => {
                return Err(ApiError::not_found(format!("network {network} not found")));
            }
            Err(s) => return Err(s.into()),
        }
    }
    let id = crate::engine::new_id()?;
    let name = if request.run.name.is_empty() { id[..12].to_string() } else { request.run.name.clone() };
    if let Some(holder) = holder_of(engine, &name).await? {
        return Err(ApiError::conflict(format!(
            "Conflict. The container name \"/{name}\" is already in use by container \"{holder}\". You have to remove (or rename) that container to be able to reuse that name."
        )));
    }
    let (started, _) = watch::channel(None);
    engine.with_created(|c| {
        let created = Created {
            name,
            request,
            started,
            drained: Vec::new(),
            watched: false,
            more_networks: Vec::new(),
        };
        c.insert(id.clone(), created)
    });
    Ok(reply::json(StatusCode::CREATED, &model::CreateResponse { id, warnings: Vec::new() }))
}

/// The id of the container already called `name`, in weft or among the created.
async fn holder_of(engine: &Engine, name: &str) -> ApiResult<Option<String>> {
    if let Some(id) =
        engine.with_created(|c| c.iter().find(|(_, e)| e.name == name).map(|(id, _)| id.clone()))
    {
        return Ok(Some(id));
    }
    Ok(engine.inspect(name).await?.filter(|c| c.name == name).map(|c| c.id))
}

/// The id of the container `reference` names, created or in weft; Docker's 404 otherwise.
async fn resolve(engine: &Engine, reference: &str) -> ApiResult<String> {
    if let Some(id) = engine.find_created(reference) {
        return Ok(id);
    }
    engine.inspect(reference).await?.map(|c| c.id).ok_or_else(|| ApiError::no_such_container(reference))
}

/// `POST /containers/{id}/start`: runs a created container through weft, or starts an exited
/// one again.
pub async fn start(engine: &Arc<Engine>, reference: &str) -> ApiResult<Reply> {
    let Some(id) = engine.find_created(reference) else {
        return match engine.inspect(reference).await? {
            Some(c) if c.state == "running" => Ok(reply::empty(StatusCode::NOT_MODIFIED)),
            Some(c) => {
                engine.agent().start(pb::ContainerRef { reference: c.id }).await?;
                Ok(reply::empty(StatusCode::NO_CONTENT))
            }
            None => Err(ApiError::no_such_container(reference)),
        };
    };
    let Some((mut run, auto_remove, watched)) = engine.with_created(|c| {
        c.get(&id).map(|e| (e.request.run.clone(), e.request.auto_remove, e.watched || !e.drained.is_empty()))
    }) else {
        return Err(ApiError::no_such_container(reference));
    };
    run.id = id.clone();
    engine.with_created(|c| c.get(&id).map(|e| e.started.send_replace(None)));
    // weftd removes an --rm container itself unless a client is attached or waiting: then it
    // is removed here once its output is delivered.
    run.auto_remove = auto_remove && !watched;
    let result = engine.agent().run(run).await;
    let entry = engine.with_created(|c| match &result {
        Ok(_) => c.remove(&id),
        Err(_) => None,
    });
    match result {
        Ok(_) => {
            let Some(entry) = entry else { return Ok(reply::empty(StatusCode::NO_CONTENT)) };
            let _ = entry.started.send(Some(Ok(())));
            if auto_remove && watched {
                tokio::spawn(remove_when_done(engine.clone(), id.clone(), entry.drained));
            }
            for mut connect in entry.more_networks {
                connect.container = id.clone();
                let network = connect.network.clone();
                engine.agent().connect_network(connect).await.map_err(|s| {
                    ApiError::from_status(&s)
                        .prefixed(&format!("started, but joining network {network} failed"))
                })?;
            }
            Ok(reply::empty(StatusCode::NO_CONTENT))
        }
        Err(status) => {
            let e = ApiError::from_status(&status);
            if let Some(tx) = engine.with_created(|c| c.get(&id).map(|e| e.started.clone())) {
                // The container stays created, as in Docker: a later start may try again.
                let _ = tx.send(Some(Err(e.message.clone())));
            }
            Err(e)
        }
    }
}

/// `--rm` with a client attached or waiting: once the container exits and every attached client
/// has its output, it is removed.
async fn remove_when_done(engine: Arc<Engine>, id: String, drained: Vec<oneshot::Receiver<()>>) {
    let _ = engine.agent().wait(pb::ContainerRef { reference: id.clone() }).await;
    for rx in drained {
        let _ = tokio::time::timeout(Duration::from_secs(10), rx).await;
    }
    let request = pb::RemoveContainerRequest { reference: id.clone(), force: true };
    if let Err(e) = engine.agent().remove_container(request).await {
        tracing::warn!(container = %id, error = %e.message(), "docker API: removing an --rm container failed");
    }
}

/// `POST /containers/{id}/wait?condition=not-running|next-exit|removed`: the headers go out at
/// once (the client starts the container after them), the status when the container exits.
pub async fn wait(engine: &Arc<Engine>, reference: &str, query: &Query) -> ApiResult<Reply> {
    let condition = query.get("condition").unwrap_or("not-running").to_string();
    if !matches!(condition.as_str(), "" | "not-running" | "next-exit" | "removed") {
        return Err(ApiError::bad(format!("invalid condition: {condition:?}")));
    }
    let id = resolve(engine, reference).await?;
    engine.with_created(|c| {
        if let Some(e) = c.get_mut(&id) {
            e.watched = true;
        }
    });
    let (reply, tx) = reply::stream("application/json");
    let engine = engine.clone();
    tokio::spawn(async move {
        let body = match engine.wait_exit(&id, condition == "removed").await {
            Ok(code) => model::WaitResponse { status_code: code, error: None },
            Err(e) => {
                model::WaitResponse { status_code: -1, error: Some(model::WaitError { message: e.message }) }
            }
        };
        let mut text = serde_json::to_vec(&body).unwrap_or_default();
        text.push(b'\n');
        let _ = tx.send(Bytes::from(text)).await;
    });
    Ok(reply)
}

/// Which lines a log or attach stream sends.
struct LogOptions {
    stdout: bool,
    stderr: bool,
    follow: bool,
    timestamps: bool,
    /// Skip this many lines from the start (the tail, or what attach must not replay).
    skip: usize,
}

/// How many lines weft has of container `id` now.
async fn line_count(engine: &Engine, id: &str) -> ApiResult<usize> {
    let mut stream =
        engine.agent().logs(pb::LogsRequest { reference: id.into(), follow: false }).await?.into_inner();
    let mut n = 0;
    while let Some(line) = stream.next().await {
        line?;
        n += 1;
    }
    Ok(n)
}

/// Where a stream of frames goes: a response body or an upgraded connection.
trait FrameSink {
    /// Sends one frame; false when the client is gone.
    async fn send(&mut self, frame: Bytes) -> bool;
}

impl FrameSink for tokio::sync::mpsc::Sender<Bytes> {
    async fn send(&mut self, frame: Bytes) -> bool {
        tokio::sync::mpsc::Sender::send(self, frame).await.is_ok()
    }
}

/// An upgraded connection as a [`FrameSink`].
struct Connection<W>(W);

impl<W: tokio::io::AsyncWrite + Unpin> FrameSink for Connection<W> {
    async fn send(&mut self, frame: Bytes) -> bool {
        self.0.write_all(&frame).await.is_ok()
    }
}

/// Sends container `id`'s output as Docker frames into `sink` until the stream ends or the
/// client is gone.
async fn pump(engine: &Engine, id: &str, options: LogOptions, sink: &mut impl FrameSink) -> ApiResult<()> {
    let request = pb::LogsRequest { reference: id.into(), follow: options.follow };
    let mut stream = engine.agent().logs(request).await?.into_inner();
    let mut seen = 0usize;
    while let Some(line) = stream.next().await {
        let line = line?;
        seen += 1;
        if seen <= options.skip {
            continue;
        }
        let which = Stream::from_name(&line.stream);
        if (which == Stream::Stdout && !options.stdout) || (which == Stream::Stderr && !options.stderr) {
            continue;
        }
        let mut text = String::new();
        if options.timestamps {
            text.push_str(&model::rfc3339(line.ts));
            text.push(' ');
        }
        text.push_str(&line.line);
        text.push('\n');
        if !sink.send(frame(which, text.as_bytes())).await {
            return Ok(());
        }
    }
    Ok(())
}

/// `GET /containers/{id}/logs`.
pub async fn logs(engine: &Arc<Engine>, reference: &str, query: &Query) -> ApiResult<Reply> {
    let stdout = query.flag("stdout", false);
    let stderr = query.flag("stderr", false);
    if !stdout && !stderr {
        return Err(ApiError::bad("you must choose at least one stream"));
    }
    for unsupported in ["since", "until"] {
        if query.get(unsupported).is_some_and(|v| !v.is_empty() && v != "0") {
            return Err(ApiError::unsupported(format!("logs --{unsupported}")));
        }
    }
    let id = resolve(engine, reference).await?;
    if engine.find_created(&id).is_some() {
        // Nothing has run yet: no output.
        return Ok(reply::stream(MULTIPLEXED).0);
    }
    let tail = match query.get("tail") {
        None | Some("") | Some("all") => None,
        Some(_) => query.number::<usize>("tail")?,
    };
    let skip = match tail {
        Some(n) => line_count(engine, &id).await?.saturating_sub(n),
        None => 0,
    };
    let options = LogOptions {
        stdout,
        stderr,
        follow: query.flag("follow", false),
        timestamps: query.flag("timestamps", false),
        skip,
    };
    let (reply, mut tx) = reply::stream(MULTIPLEXED);
    let engine = engine.clone();
    tokio::spawn(async move {
        let result = pump(&engine, &id, options, &mut tx).await;
        if let Err(e) = result {
            tracing::debug!(container = %id, error = %e, "docker API: logs stream ended");
        }
    });
    Ok(reply)
}

/// `POST /containers/{id}/attach`, after the connection is upgraded: the container's output
/// from now on (or from its start, for one not started yet) as Docker frames, then EOF.
pub async fn attach<W>(engine: Arc<Engine>, id: String, query: Query, out: W, drained: oneshot::Sender<()>)
where
    W: tokio::io::AsyncWrite + Unpin,
{
    let pending = engine.find_created(&id).is_some();
    let mut out = Connection(out);
    let result = async {
        let skip = if pending {
            engine.until_started(&id).await?;
            0
        } else {
            line_count(&engine, &id).await?
        };
        let options = LogOptions {
            stdout: query.flag("stdout", false),
            stderr: query.flag("stderr", false),
            follow: query.flag("stream", false),
            timestamps: false,
            skip,
        };
        pump(&engine, &id, options, &mut out).await
    }
    .await;
    if let Err(e) = result {
        tracing::debug!(container = %id, error = %e, "docker API: attach ended");
    }
    let _ = out.0.flush().await;
    let _ = out.0.shutdown().await;
    let _ = drained.send(());
}

/// Registers an attach to container `reference` before the upgrade; returns its id and the
/// sender to signal once its output is delivered.
pub async fn attach_prepare(
    engine: &Arc<Engine>,
    reference: &str,
    query: &Query,
) -> ApiResult<(String, oneshot::Sender<()>)> {
    if query.flag("stdin", false) {
        return Err(ApiError::unsupported("attaching stdin (docker run -i / attach with stdin)"));
    }
    if query.flag("logs", false) {
        return Err(ApiError::unsupported("attach with logs=1: use the logs endpoint"));
    }
    let id = resolve(engine, reference).await?;
    let (tx, rx) = oneshot::channel();
    engine.with_created(|c| {
        if let Some(e) = c.get_mut(&id) {
            e.drained.push(rx);
        }
    });
    Ok((id, tx))
}

/// Applies the `filters` of `GET /containers/json` Docker's CLI sends most (id, name, status).
fn matches_filters(c: &pb::ContainerInfo, filters: &[(String, Vec<String>)]) -> ApiResult<bool> {
    for (key, wanted) in filters {
        let ok = match key.as_str() {
            "id" => wanted.iter().any(|w| c.id.starts_with(w.as_str())),
            "name" => wanted.iter().any(|w| c.name.contains(w.trim_start_matches('/'))),
            "status" => wanted.contains(&c.state),
            "label" => wanted.iter().all(|w| {
                let (key, value) = w.split_once('=').map_or((w.as_str(), None), |(k, v)| (k, Some(v)));
                c.labels.iter().any(|l| l.key == key && value.is_none_or(|v| l.value == v))
            }),
            other => return Err(ApiError::bad(format!("weft does not support the filter {other:?}"))),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `GET /containers/json`.
pub async fn list(engine: &Arc<Engine>, query: &Query) -> ApiResult<Reply> {
    let all = query.flag("all", false);
    let filters = query.filters()?;
    let mut containers =
        engine.agent().list_containers(pb::ListContainersRequest { all }).await?.into_inner().containers;
    if all {
        engine.with_created(|c| {
            containers.extend(c.iter().map(|(id, e)| model::created_info(id, &e.name, &e.request.run)));
        });
    }
    let now = now_ns();
    let mut rows = Vec::new();
    for c in &containers {
        if matches_filters(c, &filters)? {
            rows.push(model::summary(c, now));
        }
    }
    Ok(reply::json(StatusCode::OK, &rows))
}

/// `GET /containers/{id}/json`.
pub async fn inspect(engine: &Arc<Engine>, reference: &str) -> ApiResult<Reply> {
    if let Some(id) = engine.find_created(reference) {
        let info =
            engine.with_created(|c| c.get(&id).map(|e| model::created_info(&id, &e.name, &e.request.run)));
        if let Some(info) = info {
            return Ok(reply::json(StatusCode::OK, &model::inspect(&info)));
        }
    }
    let info = engine.inspect(reference).await?.ok_or_else(|| ApiError::no_such_container(reference))?;
    Ok(reply::json(StatusCode::OK, &model::inspect(&info)))
}

/// `POST /containers/{id}/stop?t=N`.
pub async fn stop(engine: &Arc<Engine>, reference: &str, query: &Query) -> ApiResult<Reply> {
    if query.get("signal").is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::unsupported("stop --signal: set the stop signal at create (StopSignal)"));
    }
    let id = resolve(engine, reference).await?;
    if engine.find_created(&id).is_some() {
        return Ok(reply::empty(StatusCode::NOT_MODIFIED));
    }
    let grace = query.number::<i64>("t")?.map(|t| t.clamp(0, u32::MAX as i64) as u32);
    let info = engine.inspect(&id).await?.ok_or_else(|| ApiError::no_such_container(reference))?;
    if info.state != "running" {
        return Ok(reply::empty(StatusCode::NOT_MODIFIED));
    }
    engine.agent().stop(pb::StopRequest { reference: id, grace_seconds: grace }).await?;
    Ok(reply::empty(StatusCode::NO_CONTENT))
}

/// Signal numbers by Docker's names (with or without `SIG`), or a number.
pub fn signal_number(text: &str) -> ApiResult<i32> {
    if let Ok(n) = text.parse::<i32>() {
        return if (1..=64).contains(&n) {
            Ok(n)
        } else {
            Err(ApiError::bad(format!("invalid signal: {text}")))
        };
    }
    let name = text.trim_start_matches("SIG").to_ascii_uppercase();
    let table = [
        ("HUP", 1),
        ("INT", 2),
        ("QUIT", 3),
        ("ILL", 4),
        ("TRAP", 5),
        ("ABRT", 6),
        ("BUS", 7),
        ("FPE", 8),
        ("KILL", 9),
        ("USR1", 10),
        ("SEGV", 11),
        ("USR2", 12),
        ("PIPE", 13),
        ("ALRM", 14),
        ("TERM", 15),
        ("CHLD", 17),
        ("CONT", 18),
        ("STOP", 19),
        ("TSTP", 20),
        ("TTIN", 21),
        ("TTOU", 22),
        ("URG", 23),
        ("XCPU", 24),
        ("XFSZ", 25),
        ("VTALRM", 26),
        ("PROF", 27),
        ("WINCH", 28),
        ("IO", 29),
        ("PWR", 30),
        ("SYS", 31),
    ];
    table
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| *s)
        .ok_or_else(|| ApiError::bad(format!("invalid signal: {text}")))
}

/// `POST /containers/{id}/kill?signal=S`.
pub async fn kill(engine: &Arc<Engine>, reference: &str, query: &Query) -> ApiResult<Reply> {
    let signal = signal_number(query.get("signal").filter(|s| !s.is_empty()).unwrap_or("KILL"))?;
    let id = resolve(engine, reference).await?;
    let running = engine.inspect(&id).await?.is_some_and(|c| c.state == "running");
    if !running {
        return Err(ApiError::conflict(format!("Container {id} is not running")));
    }
    engine.agent().kill(pb::KillRequest { reference: id, signal }).await?;
    Ok(reply::empty(StatusCode::NO_CONTENT))
}

/// `DELETE /containers/{id}?force=1`.
pub async fn remove(engine: &Arc<Engine>, reference: &str, query: &Query) -> ApiResult<Reply> {
    if query.flag("link", false) {
        return Err(ApiError::unsupported("removing links (docker rm --link)"));
    }
    if let Some(id) = engine.find_created(reference) {
        if let Some(entry) = engine.with_created(|c| c.remove(&id)) {
            drop(entry.started);
        }
        return Ok(reply::empty(StatusCode::NO_CONTENT));
    }
    let id = resolve(engine, reference).await?;
    let force = query.flag("force", false);
    if !force && engine.inspect(&id).await?.is_some_and(|c| c.state == "running") {
        return Err(ApiError::conflict(format!(
            "cannot remove container \"/{reference}\": container is running: stop the container before removing or force remove"
        )));
    }
    engine.agent().remove_container(pb::RemoveContainerRequest { reference: id, force }).await?;
    Ok(reply::empty(StatusCode::NO_CONTENT))
}

/// `POST /containers/{id}/restart?t=N`: stop (when running), then start.
pub async fn restart(engine: &Arc<Engine>, reference: &str, query: &Query) -> ApiResult<Reply> {
    let id = resolve(engine, reference).await?;
    if engine.find_created(&id).is_some() {
        return start(engine, &id).await.map(|_| reply::empty(StatusCode::NO_CONTENT));
    }
    let grace = query.number::<i64>("t")?.map(|t| t.clamp(0, u32::MAX as i64) as u32);
    let info = engine.inspect(&id).await?.ok_or_else(|| ApiError::no_such_container(reference))?;
    if info.state == "running" {
        engine.agent().stop(pb::StopRequest { reference: id.clone(), grace_seconds: grace }).await?;
    }
    engine.agent().start(pb::ContainerRef { reference: id }).await?;
    Ok(reply::empty(StatusCode::NO_CONTENT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(signal_number("SIGKILL").unwrap(), 9);
        assert_eq!(signal_number("usr1").unwrap(), 10);
        assert_eq!(signal_number("15").unwrap(), 15);
        assert!(signal_number("SIGNOPE").unwrap_err().message.contains("invalid signal"));
        assert!(signal_number("0").is_err());
    }

    #[test]
    fn list_filters() {
        let c = pb::ContainerInfo {
            id: "abcdef".into(),
            name: "web".into(),
            state: "running".into(),
            ..Default::default()
        };
        let parsed = |j: &str| Query::parse(Some(&format!("filters={j}"))).filters().unwrap();
        let f = |j: &str| matches_filters(&c, &parsed(j));
        assert!(f(r#"{"name":{"web":true}}"#).unwrap());
        assert!(!f(r#"{"status":["exited"]}"#).unwrap());
        assert!(f(r#"{"id":["abc"]}"#).unwrap());
        assert!(!f(r#"{"label":["a=b"]}"#).unwrap());
        let labelled = pb::ContainerInfo {
            labels: vec![
                pb::Label { key: "a".into(), value: "b".into() },
                pb::Label { key: "c".into(), value: "".into() },
            ],
            ..c
        };
        let g = |j: &str| matches_filters(&labelled, &parsed(j)).unwrap();
        assert!(g(r#"{"label":{"a=b":true,"c":true}}"#) && !g(r#"{"label":["a=x"]}"#));
        assert!(matches_filters(&labelled, &parsed(r#"{"before":["x"]}"#)).is_err());
    }
}
