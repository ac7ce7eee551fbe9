//! The multiplexed stream Docker uses for a container's output when it has no TTY: each chunk
//! behind an 8-byte header (stream 1 stdout or 2 stderr, three zero bytes, the length as a
//! big-endian u32), so the client can split stdout from stderr on one connection.

use bytes::{BufMut, Bytes, BytesMut};

/// Which of the container's outputs a chunk is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output (1).
    Stdout,
    /// Standard error (2).
    Stderr,
}

impl Stream {
    /// weft's log line names the stream "stdout" or "stderr".
    pub fn from_name(name: &str) -> Stream {
        if name == "stderr" { Stream::Stderr } else { Stream::Stdout }
    }
}

/// One chunk in Docker's multiplexed framing.
pub fn frame(stream: Stream, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(8 + payload.len());
    out.put_u8(match stream {
        Stream::Stdout => 1,
        Stream::Stderr => 2,
    });
    out.put_slice(&[0, 0, 0]);
    out.put_u32(payload.len() as u32);
    out.put_slice(payload);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_the_stream_and_the_length() {
        assert_eq!(&frame(Stream::Stdout, b"hi\n")[..], b"\x01\0\0\0\0\0\0\x03hi\n");
        assert_eq!(&frame(Stream::Stderr, b"")[..], b"\x02\0\0\0\0\0\0\0");
        assert_eq!(Stream::from_name("stderr"), Stream::Stderr);
    }
}
