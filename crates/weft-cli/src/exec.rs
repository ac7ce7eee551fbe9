//! `weft exec`: a command in a running container, its stdin, output and exit status streamed,
//! on a terminal that follows the client's window (SIGWINCH) and is raw while interactive.

use std::io::{Read, Write};

use tokio_stream::StreamExt;
use weft_proto::v1 as pb;

use crate::failure::Failure;
use crate::rpc::{Api, err};
use crate::terminal::{RawMode, window_size};

/// `weft exec`'s flags beside the container and command.
pub(crate) struct ExecFlags {
    /// `-i`: pass stdin to the command.
    pub(crate) interactive: bool,
    /// `-t`: run the command on a terminal.
    pub(crate) tty: bool,
    /// `-d`: start it and return.
    pub(crate) detach: bool,
    /// `-u`: the user instead of the container's.
    pub(crate) user: Option<String>,
    /// `-w`: the working directory instead of the container's.
    pub(crate) workdir: Option<String>,
    /// `-e`: KEY=VALUE over the container's environment.
    pub(crate) env: Vec<String>,
}

/// Runs `command` in `container`; returns the command's exit status (0 at once with `-d`).
pub(crate) async fn exec(
    api: &mut Api,
    container: String,
    command: Vec<String>,
    flags: ExecFlags,
) -> Result<u8, Failure> {
    let ExecFlags { interactive, tty, detach, user, workdir, env } = flags;
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::ExecInput>(8);
    let (rows, cols) = if tty { window_size() } else { (0, 0) };
    let first = pb::ExecInput {
        reference: container,
        command,
        interactive,
        close_stdin: !interactive,
        tty,
        rows,
        cols,
        user: user.unwrap_or_default(),
        workdir: workdir.unwrap_or_default(),
        env,
        ..Default::default()
    };
    tx.send(first).await.map_err(|e| e.to_string())?;
    if tty {
        // The window follows the client's terminal.
        let resize = tx.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut changes) = signal(SignalKind::window_change()) else { return };
            while changes.recv().await.is_some() {
                let (rows, cols) = window_size();
                if resize.send(pb::ExecInput { rows, cols, ..Default::default() }).await.is_err() {
                    return;
                }
            }
        });
    }
    if interactive {
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin();
            let mut buf = vec![0u8; 32 << 10];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = tx.blocking_send(pb::ExecInput { close_stdin: true, ..Default::default() });
                        return;
                    }
                    Ok(n) => {
                        if tx
                            .blocking_send(pb::ExecInput { stdin: buf[..n].to_vec(), ..Default::default() })
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
        });
    } else if !tty {
        drop(tx);
    }
    let mut stream =
        api.exec(tokio_stream::wrappers::ReceiverStream::new(rx)).await.map_err(err)?.into_inner();
    if detach {
        return Ok(0);
    }
    let _raw = if tty && interactive { Some(RawMode::enter()) } else { None };
    let (mut out, mut errout) = (std::io::stdout(), std::io::stderr());
    while let Some(message) = stream.next().await {
        let message = message.map_err(err)?;
        if !message.stdout.is_empty() {
            let _ = out.write_all(&message.stdout);
            let _ = out.flush();
        }
        if !message.stderr.is_empty() {
            let _ = errout.write_all(&message.stderr);
        }
        if message.exited {
            return Ok(message.exit_code.clamp(0, 255) as u8);
        }
    }
    Err("the exec stream ended without an exit status".into())
}
