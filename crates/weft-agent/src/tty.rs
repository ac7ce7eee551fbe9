//! `exec -t`: a command on a pseudo-terminal. The command gets the terminal's slave side as its
//! controlling terminal and stdin, stdout and stderr; the master side is pumped to and from the
//! client's stream, and the client's window size is applied to it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use futures::StreamExt;
use tokio::sync::mpsc;
use tonic::{Status, Streaming};
use weft_proto::v1 as pb;

/// A new pseudo-terminal of the devpts instance whose `ptmx` is given: (master, slave). The
/// container's own instance, so that the command inside sees its terminal as `/dev/pts/N` there.
fn open_pty(ptmx: &Path) -> std::io::Result<(OwnedFd, OwnedFd)> {
    let master: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(ptmx)?
        .into();
    // SAFETY: unlockpt and TIOCGPTPEER act on the master descriptor we own; TIOCGPTPEER returns a
    // new descriptor of the slave side, which we then own.
    unsafe {
        if libc::unlockpt(master.as_raw_fd()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let slave = libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY);
        if slave < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok((master, OwnedFd::from_raw_fd(slave)))
    }
}

fn set_size(master: &impl AsRawFd, rows: u32, cols: u32) {
    if rows == 0 || cols == 0 {
        return;
    }
    let size = libc::winsize { ws_row: rows as u16, ws_col: cols as u16, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads a winsize from the pointer.
    unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
}

/// Runs `command` on a new terminal of the devpts instance at `ptmx`; its output and finally its exit status go to `tx`, the
/// client's keystrokes and window sizes come from `input`.
pub fn run(
    ptmx: &Path,
    mut command: Command,
    first: pb::ExecInput,
    mut input: Streaming<pb::ExecInput>,
    tx: mpsc::Sender<Result<pb::ExecOutput, Status>>,
) -> Result<(), Status> {
    let internal = |e: std::io::Error| Status::internal(format!("exec -t: {e}"));
    let (master, slave) = open_pty(ptmx).map_err(internal)?;
    set_size(&master, first.rows, first.cols);
    let stdio = || slave.try_clone().map(Stdio::from);
    command
        .stdin(stdio().map_err(internal)?)
        .stdout(stdio().map_err(internal)?)
        .stderr(stdio().map_err(internal)?);
    // SAFETY: setsid and ioctl are async-signal-safe; the child becomes a session leader whose
    // controlling terminal is its stdin, the pty's slave side.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    let mut child = command.spawn().map_err(internal)?;
    drop(slave);
    let mut reader = File::from(master.try_clone().map_err(internal)?);
    let mut writer = File::from(master);
    if !first.stdin.is_empty() {
        let _ = writer.write_all(&first.stdin);
    }
    // Keystrokes and resizes: a thread of its own, so a slow terminal never blocks the runtime.
    let (keys_tx, keys_rx) = std::sync::mpsc::channel::<pb::ExecInput>();
    tokio::spawn(async move {
        while let Some(Ok(message)) = input.next().await {
            if keys_tx.send(message).is_err() {
                return;
            }
        }
    });
    std::thread::spawn(move || {
        for message in keys_rx {
            set_size(&writer, message.rows, message.cols);
            if !message.stdin.is_empty() && writer.write_all(&message.stdin).is_err() {
                return;
            }
        }
    });
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 32 << 10];
        // EIO once the last process holding the slave side has exited.
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            let out = pb::ExecOutput { stdout: buf[..n].to_vec(), ..Default::default() };
            if tx.blocking_send(Ok(out)).is_err() {
                break;
            }
        }
        let code = match child.wait() {
            Ok(s) => s
                .code()
                .unwrap_or_else(|| 128 + std::os::unix::process::ExitStatusExt::signal(&s).unwrap_or(0)),
            Err(_) => 126,
        };
        let _ = tx.blocking_send(Ok(pb::ExecOutput { exited: true, exit_code: code, ..Default::default() }));
    });
    Ok(())
}
