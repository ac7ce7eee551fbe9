//! `docker exec`: exec create (`POST /containers/{id}/exec`), start (`POST /exec/{id}/start`,
//! hijacked like attach: stdin in, output out, raw on a TTY and in multiplexed frames without),
//! resize (`POST /exec/{id}/resize`) and inspect (`GET /exec/{id}/json`, the exit status the
//! client reads once the stream ends), on weftd's own exec stream.

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use weft_proto::v1 as pb;

use crate::engine::{Engine, ExecInstance};
use crate::error::{ApiError, ApiResult};
use crate::frame::{Stream, frame};
use crate::reply::{self, Reply};
use crate::route::Query;

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// `POST /containers/{id}/exec`.
pub async fn create(engine: &Arc<Engine>, reference: &str, body: &[u8]) -> ApiResult<Reply> {
    let config: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("malformed JSON body: {e}")))?;
    let cmd = strings(config.get("Cmd"));
    if cmd.is_empty() {
        return Err(ApiError::bad("No exec command specified"));
    }
    if config.get("Privileged").and_then(Value::as_bool).unwrap_or(false) {
        return Err(ApiError::unsupported("docker exec --privileged"));
    }
    let info = engine.inspect(reference).await?.ok_or_else(|| ApiError::no_such_container(reference))?;
    if info.state != "running" {
        return Err(ApiError::conflict(format!("Container {} is not running", info.id)));
    }
    let flag = |k: &str| config.get(k).and_then(Value::as_bool).unwrap_or(false);
    let text = |k: &str| config.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let instance = ExecInstance {
        container: info.id,
        cmd,
        env: strings(config.get("Env")),
        user: text("User"),
        workdir: text("WorkingDir"),
        tty: flag("Tty"),
        stdin: flag("AttachStdin"),
        stdout: flag("AttachStdout"),
        stderr: flag("AttachStderr"),
        ..ExecInstance::default()
    };
    let id = crate::engine::new_id()?;
    engine.with_execs(|e| e.insert(id.clone(), instance));
    Ok(reply::json(StatusCode::CREATED, &serde_json::json!({"Id": id})))
}

/// The instance `id`, or Docker's 404.
fn instance(engine: &Engine, id: &str) -> ApiResult<ExecInstance> {
    engine
        .with_execs(|e| e.get(id).cloned())
        .ok_or_else(|| ApiError::not_found(format!("No such exec instance: {id}")))
}

/// Checks exec start's body and marks the instance running; returns whether it runs detached
/// and the terminal size to start with.
pub fn start_prepare(engine: &Engine, id: &str, body: &[u8]) -> ApiResult<(bool, (u32, u32))> {
    let config: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("malformed JSON body: {e}")))?
    };
    let detach = config.get("Detach").and_then(Value::as_bool).unwrap_or(false);
    let size = config
        .get("ConsoleSize")
        .and_then(Value::as_array)
        .map(|a| {
            (
                a.first().and_then(Value::as_u64).unwrap_or(0) as u32,
                a.get(1).and_then(Value::as_u64).unwrap_or(0) as u32,
            )
        })
        .unwrap_or((0, 0));
    let found = instance(engine, id)?;
    if found.running || found.exit_code.is_some() {
        return Err(ApiError::conflict(format!("exec instance {id} has already been started")));
    }
    engine.with_execs(|e| {
        if let Some(x) = e.get_mut(id) {
            x.running = true;
        }
    });
    Ok((detach, size))
}

/// Runs exec instance `id`: stdin from `input` (when attached), output to `output` (nothing
/// for a detached run). The exit status is recorded for inspect before the output is closed:
/// the client asks for it as soon as it sees the end of the stream.
pub async fn run<R, W>(engine: Arc<Engine>, id: String, size: (u32, u32), input: Option<R>, output: Option<W>)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    let mut output = output;
    let code = match run_inner(&engine, &id, size, input, &mut output).await {
        Ok(code) => code,
        Err(e) => {
            tracing::debug!(exec = %id, error = %e, "docker API: exec failed");
            126
        }
    };
    engine.with_execs(|e| {
        if let Some(x) = e.get_mut(&id) {
            x.running = false;
            x.exit_code = Some(code);
            x.resize = None;
        }
    });
    if let Some(mut out) = output {
        let _ = out.flush().await;
        let _ = out.shutdown().await;
    }
}

async fn run_inner<R, W>(
    engine: &Arc<Engine>,
    id: &str,
    size: (u32, u32),
    input: Option<R>,
    output: &mut Option<W>,
) -> ApiResult<i32>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    let x = instance(engine, id)?;
    let (tx, rx) = mpsc::channel::<pb::ExecInput>(16);
    let (resize_tx, mut resize_rx) = mpsc::channel::<(u32, u32)>(4);
    engine.with_execs(|e| {
        if let Some(entry) = e.get_mut(id) {
            entry.resize = Some(resize_tx);
        }
    });
    let interactive = x.stdin && input.is_some();
    tx.send(pb::ExecInput {
        reference: x.container.clone(),
        command: x.cmd.clone(),
        interactive,
        tty: x.tty,
        rows: size.0,
        cols: size.1,
        user: x.user.clone(),
        workdir: x.workdir.clone(),
        env: x.env.clone(),
        ..Default::default()
    })
    .await
    .map_err(|_| ApiError::internal("exec: the stream closed"))?;
    // stdin and resizes go to weftd beside the output.
    let feeder = {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut input = input.filter(|_| interactive);
            let mut buf = vec![0u8; 16 << 10];
            loop {
                tokio::select! {
                    size = resize_rx.recv() => match size {
                        Some((rows, cols)) => {
                            if tx.send(pb::ExecInput { rows, cols, ..Default::default() }).await.is_err() { return; }
                        }
                        None => if input.is_none() { return },
                    },
                    read = async { input.as_mut().expect("checked").read(&mut buf).await }, if input.is_some() => match read {
                        Ok(0) | Err(_) => {
                            let _ = tx.send(pb::ExecInput { close_stdin: true, ..Default::default() }).await;
                            input = None;
                        }
                        Ok(n) => {
                            if tx.send(pb::ExecInput { stdin: buf[..n].to_vec(), ..Default::default() }).await.is_err() { return; }
                        }
                    },
                }
            }
        })
    };
    drop(tx);
    let mut stream = engine.agent().exec(ReceiverStream::new(rx)).await?.into_inner();
    let mut code = None;
    while let Some(message) = stream.next().await {
        let message = message?;
        if let Some(out) = output.as_mut() {
            for (data, which, wanted) in
                [(&message.stdout, Stream::Stdout, x.stdout), (&message.stderr, Stream::Stderr, x.stderr)]
            {
                if data.is_empty() || !wanted {
                    continue;
                }
                let bytes = if x.tty { Bytes::copy_from_slice(data) } else { frame(which, data) };
                if out.write_all(&bytes).await.is_err() {
                    *output = None;
                    break;
                }
            }
        }
        if message.exited {
            code = Some(message.exit_code);
            break;
        }
    }
    feeder.abort();
    code.ok_or_else(|| ApiError::internal("exec: the stream ended without an exit status"))
}

/// `POST /exec/{id}/resize?h=ROWS&w=COLS`.
pub async fn resize(engine: &Arc<Engine>, id: &str, query: &Query) -> ApiResult<Reply> {
    let rows = query.number::<u32>("h")?.unwrap_or(0);
    let cols = query.number::<u32>("w")?.unwrap_or(0);
    let x = instance(engine, id)?;
    if let Some(tx) = x.resize {
        let _ = tx.send((rows, cols)).await;
    }
    Ok(reply::empty(StatusCode::OK))
}

/// `GET /exec/{id}/json`.
pub async fn inspect(engine: &Arc<Engine>, id: &str) -> ApiResult<Reply> {
    let x = instance(engine, id)?;
    let body = serde_json::json!({
        "ID": id,
        "Running": x.running,
        "ExitCode": x.exit_code,
        "ProcessConfig": {
            "tty": x.tty, "entrypoint": x.cmd.first(), "arguments": x.cmd.iter().skip(1).collect::<Vec<_>>(),
            "privileged": false, "user": x.user,
        },
        "OpenStdin": x.stdin,
        "OpenStderr": x.stderr,
        "OpenStdout": x.stdout,
        "CanRemove": false,
        "ContainerID": x.container,
        "DetachKeys": "",
        "Pid": 0,
    });
    Ok(reply::json(StatusCode::OK, &body))
}
