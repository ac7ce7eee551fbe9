//! Name rules: DNS labels (RFC 1123), so every name can be resolved. The agent and CLI use the
//! same checks to refuse a bad name before it reaches Raft.

use crate::{Result, StateError};

/// Checks a DNS label: 1 to 63 letters, digits and hyphens, not starting or ending with a hyphen.
pub fn dns_label(what: &'static str, name: &str) -> Result<()> {
    let bad = |reason| Err(StateError::InvalidName { what, name: name.to_string(), reason });
    if name.is_empty() {
        return bad("must not be empty");
    }
    if name.len() > 63 {
        return bad("must be at most 63 characters");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return bad("may hold only letters, digits and '-'");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return bad("must not start or end with '-'");
    }
    Ok(())
}

/// Checks a container id: 1 to 128 letters, digits, '_', '.' and '-'.
pub fn container_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(StateError::InvalidName {
            what: "container id",
            name: id.to_string(),
            reason: "must be 1-128 letters, digits, '_', '.' or '-'",
        })
    }
}

/// The key a name is compared under: DNS is case-insensitive.
pub fn key(name: &str) -> String {
    name.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert!(dns_label("network", "app").is_ok());
        assert!(dns_label("network", "web-1").is_ok());
        assert!(dns_label("network", "").is_err());
        assert!(dns_label("network", "-web").is_err());
        assert!(dns_label("network", "web_1").is_err());
        assert!(dns_label("network", &"a".repeat(64)).is_err());
        assert!(container_id("3f2a_c.d-1").is_ok());
        assert!(container_id("a b").is_err());
    }
}
