//! An ICMP echo with the DF bit set, sent out of one named device: how an agent checks that
//! another host's VTEP answers through the overlay (a packet that goes through the local VXLAN
//! device, across the underlay on the VXLAN port, through the remote one and back), at a small
//! size and at the overlay's full MTU. Blocking: run it on a blocking thread.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

/// Bytes of IPv4 and ICMP headers in an echo request without options.
pub const ECHO_OVERHEAD: usize = 28;

/// Identifiers of this process's probes, so concurrent ones do not take each other's replies.
static NEXT_ID: AtomicU16 = AtomicU16::new(1);

/// The internet checksum (RFC 1071) of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for pair in data.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ICMP echo request of `ip_size` bytes as an IP packet (at least the 28 bytes of headers).
pub fn echo_request(id: u16, seq: u16, ip_size: usize) -> Vec<u8> {
    let mut icmp = vec![0u8; ip_size.max(ECHO_OVERHEAD) - 20];
    icmp[0] = 8;
    icmp[4..6].copy_from_slice(&id.to_be_bytes());
    icmp[6..8].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in icmp[8..].iter_mut().enumerate() {
        *b = i as u8;
    }
    let sum = checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    icmp
}

/// True when `packet` (an IPv4 packet as a raw socket reads it) is the echo reply to (`id`, `seq`)
/// from `from`.
pub fn is_reply(packet: &[u8], from: Ipv4Addr, id: u16, seq: u16) -> bool {
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return false;
    }
    let header = usize::from(packet[0] & 0x0f) * 4;
    let Some(icmp) = packet.get(header..header + 8) else { return false };
    packet[12..16] == from.octets()
        && icmp[0] == 0
        && icmp[4..6] == id.to_be_bytes()
        && icmp[6..8] == seq.to_be_bytes()
}

fn setsockopt<T>(fd: &OwnedFd, level: i32, name: i32, value: &T, len: usize) -> io::Result<()> {
    // SAFETY: `value` points to `len` readable bytes for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(fd.as_raw_fd(), level, name, (value as *const T).cast(), len as libc::socklen_t)
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Sends one echo request of `ip_size` bytes (IP header included) to `dst` out of `device`, with
/// DF set whatever the path MTU cache says, and waits up to `timeout` for its reply. Returns the
/// round trip; `TimedOut` when no reply came, or the send's own error (`EMSGSIZE` when the packet
/// does not fit the device). Needs CAP_NET_RAW in the calling thread's network namespace.
pub fn echo(device: &str, dst: Ipv4Addr, ip_size: usize, timeout: Duration) -> io::Result<Duration> {
    // SAFETY: plain socket(2); the descriptor is owned at once.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::IPPROTO_ICMP) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_BINDTODEVICE, &device.as_bytes()[0], device.len())?;
    let probe: libc::c_int = libc::IP_PMTUDISC_PROBE;
    setsockopt(&fd, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, &probe, size_of::<libc::c_int>())?;
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed) ^ (std::process::id() as u16);
    let seq = 1;
    let request = echo_request(id, seq, ip_size);
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(dst.octets()) },
        sin_zero: [0; 8],
    };
    let started = Instant::now();
    // SAFETY: `request` and `addr` are valid for the call.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            request.as_ptr().cast(),
            request.len(),
            0,
            (&addr as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let deadline = started + timeout;
    let mut buf = vec![0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, format!("no echo reply from {dst}")));
        }
        let tv = libc::timeval { tv_sec: left.as_secs() as _, tv_usec: left.subsec_micros().max(1) as _ };
        setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv, size_of::<libc::timeval>())?;
        // SAFETY: `buf` is writable for its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted => continue,
                _ => return Err(e),
            }
        }
        if is_reply(&buf[..n as usize], dst, id, seq) {
            return Ok(started.elapsed());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_has_a_valid_checksum_and_the_asked_size() {
        let r = echo_request(0x1234, 7, 1450);
        assert_eq!(r.len() + 20, 1450);
        assert_eq!((r[0], r[1]), (8, 0));
        assert_eq!(checksum(&r), 0, "a packet with its checksum sums to zero");
        assert_eq!(echo_request(1, 1, 0).len(), 8, "never below the headers");
    }

    #[test]
    fn only_the_matching_reply_counts() {
        let from = Ipv4Addr::new(10, 0, 0, 9);
        let mut packet = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 9, 10, 0, 0, 1];
        packet.extend_from_slice(&[0, 0, 0, 0, 0x12, 0x34, 0, 7]);
        assert!(is_reply(&packet, from, 0x1234, 7));
        assert!(!is_reply(&packet, from, 0x1234, 8), "another sequence");
        assert!(!is_reply(&packet, Ipv4Addr::new(10, 0, 0, 8), 0x1234, 7), "another sender");
        packet[20] = 8;
        assert!(!is_reply(&packet, from, 0x1234, 7), "a request is not a reply");
        assert!(!is_reply(&packet[..22], from, 0x1234, 7), "too short");
    }
}
