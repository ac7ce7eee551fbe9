//! nftables change notifications (`nft monitor`): the kernel multicasts every change of the
//! namespace's ruleset to the `NFNLGRP_NFTABLES` group of netfilter's netlink family. A
//! firewall reconciler listens, so a flushed or edited table is noticed at once instead of at its
//! next resync. Only "something changed" is reported; the listener looks at what it cares about.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{AddressFamily, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, socket};
use tokio::io::unix::AsyncFd;

use crate::{NetError, Result};

/// netfilter's nftables multicast group (`NFNLGRP_NFTABLES` in linux/netfilter/nfnetlink.h).
const NFNLGRP_NFTABLES: u32 = 7;

/// A subscription to the calling thread's namespace's nftables changes.
#[derive(Debug)]
pub struct NftEvents {
    socket: AsyncFd<OwnedFd>,
}

fn socket_error(op: &'static str, e: nix::Error) -> NetError {
    NetError::Socket { op, source: io::Error::from_raw_os_error(e as i32) }
}

impl NftEvents {
    /// Subscribes; call it on a thread inside the namespace to watch, within a tokio runtime.
    pub fn subscribe() -> Result<NftEvents> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )
        .map_err(|e| socket_error("open the nftables event socket", e))?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 1 << (NFNLGRP_NFTABLES - 1)))
            .map_err(|e| socket_error("join the nftables event group", e))?;
        // SAFETY: `fd` is a socket this function just opened; the AsyncFd takes ownership of it
        // and keeps it open for as long as it is registered.
        let socket = unsafe { AsyncFd::register(fd) }.map_err(|e| NetError::Socket {
            op: "watch the nftables event socket",
            source: io::Error::other(e.to_string()),
        })?;
        Ok(NftEvents { socket })
    }

    /// Waits until the ruleset changed (at least one notification), then takes every
    /// notification already queued, so a burst of changes is one wake-up. An overrun of the
    /// socket's buffer (ENOBUFS) also counts as a change: some were lost, so look.
    pub async fn changed(&mut self) -> Result<()> {
        let mut buf = vec![0u8; 64 << 10];
        let mut got = false;
        loop {
            let mut guard = self
                .socket
                .readable()
                .await
                .map_err(|source| NetError::Socket { op: "wait for nftables events", source })?;
            loop {
                match guard.try_io(|fd| {
                    nix::sys::socket::recv(fd.as_raw_fd(), &mut buf, nix::sys::socket::MsgFlags::empty())
                        .map_err(|e| io::Error::from_raw_os_error(e as i32))
                }) {
                    Ok(Ok(_)) => got = true,
                    Ok(Err(e)) if e.raw_os_error() == Some(libc_enobufs()) => got = true,
                    Ok(Err(e)) => return Err(NetError::Socket { op: "read nftables events", source: e }),
                    Err(_would_block) => break,
                }
            }
            if got {
                return Ok(());
            }
        }
    }
}

fn libc_enobufs() -> i32 {
    nix::errno::Errno::ENOBUFS as i32
}
