//! Content digests (`sha256:<64 hex>`) and hashing readers.

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

use crate::RuntimeError;

/// A sha256 content digest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(String);

impl Digest {
    /// The 64 lowercase hex characters.
    pub fn hex(&self) -> &str {
        &self.0
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(hex::encode(Sha256::digest(bytes)))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

impl FromStr for Digest {
    type Err = RuntimeError;

    /// Parses `sha256:<64 hex>`; other algorithms are refused.
    fn from_str(s: &str) -> Result<Digest, RuntimeError> {
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| RuntimeError::invalid("digest", s, "expected sha256:<64 hex>"))?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(RuntimeError::invalid("digest", s, "expected sha256:<64 lowercase hex>"));
        }
        Ok(Digest(hex.to_string()))
    }
}

/// A reader that hashes what passes through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> HashingReader<R> {
        HashingReader { inner, hasher: Sha256::new(), bytes: 0 }
    }

    /// Reads what is left (so the digest covers the whole stream) and returns digest and size.
    pub fn finish(self) -> io::Result<(Digest, u64)> {
        self.finish_with_inner().map(|(d, n, _)| (d, n))
    }

    /// Like [`HashingReader::finish`], also giving back the wrapped reader (drained).
    pub fn finish_with_inner(mut self) -> io::Result<(Digest, u64, R)> {
        io::copy(&mut self.inner, &mut HashSink(&mut self.hasher, &mut self.bytes))?;
        Ok((Digest(hex::encode(self.hasher.finalize())), self.bytes, self.inner))
    }
}

struct HashSink<'a>(&'a mut Sha256, &'a mut u64);

impl io::Write for HashSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        *self.1 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}
