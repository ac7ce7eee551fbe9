//! Sysctls of a network namespace.
//!
//! `/proc/sys/net` shows the namespace of the thread that opens it, so call these from a thread
//! inside the namespace: a [`crate::NetnsWorker`] job.

use std::path::PathBuf;

use crate::{NetError, Result};

fn path_of(key: &str) -> Result<PathBuf> {
    let ok = !key.is_empty()
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
        && !key.split(['.', '/']).any(|part| part.is_empty() || part == "..");
    if !ok || !key.starts_with("net") {
        return Err(NetError::invalid("sysctl key", key, "expected a net.* key such as net.ipv4.ip_forward"));
    }
    // `net.ipv4.conf.eth0/1.rp_filter`: like sysctl(8), a key with a slash keeps its dots.
    let rel = if key.contains('/') { key.to_string() } else { key.replace('.', "/") };
    Ok(PathBuf::from("/proc/sys").join(rel))
}

/// Reads a net.* sysctl of the calling thread's namespace, trimmed.
pub fn read(key: &str) -> Result<String> {
    let path = path_of(key)?;
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|source| NetError::Sysctl { key: key.to_string(), source })
}

/// Writes a net.* sysctl of the calling thread's namespace.
pub fn write(key: &str, value: &str) -> Result<()> {
    let path = path_of(key)?;
    std::fs::write(path, value).map_err(|source| NetError::Sysctl { key: key.to_string(), source })
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys() {
        assert_eq!(
            super::path_of("net.ipv4.ip_forward").unwrap().to_str(),
            Some("/proc/sys/net/ipv4/ip_forward")
        );
        assert!(super::path_of("kernel.panic").is_err());
        assert!(super::path_of("net/../kernel/panic").is_err());
        assert!(super::path_of("net.ipv4..x").is_err());
    }
}
