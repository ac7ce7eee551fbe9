//! Name rules: DNS labels (RFC 1123), so every name can be resolved. The agent and CLI use the
//! same checks to refuse a bad name before it reaches Raft.

use crate::{Result, StateError};

/// Checks a DNS label: 1 to 63 letters, digits and hyphens, not starting or ending with a hyphen
/// (node names: they are host names, and name the node in its certificate).
pub fn dns_label(what: &'static str, name: &str) -> Result<()> {
    label(what, name, false)
}

/// Checks a network, container or alias name: a DNS label that may also hold '_', as Docker's
/// names do (Compose names containers `project_service_1`); DNS carries '_' (RFC 2181, section
/// 11) and the embedded DNS answers such names.
pub fn resolvable_name(what: &'static str, name: &str) -> Result<()> {
    label(what, name, true)
}

fn label(what: &'static str, name: &str, underscore: bool) -> Result<()> {
    let bad = |reason| Err(StateError::InvalidName { what, name: name.to_string(), reason });
    if name.is_empty() {
        return bad("must not be empty");
    }
    if name.len() > 63 {
        return bad("must be at most 63 characters");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || (underscore && b == b'_')) {
        return bad(if underscore {
            "may hold only letters, digits, '-' and '_'"
        } else {
            "may hold only letters, digits and '-'"
        });
    }
    if name.starts_with(['-', '_']) || name.ends_with(['-', '_']) {
        return bad("must not start or end with '-' or '_'");
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
        assert!(dns_label("node", "web_1").is_err());
        assert!(resolvable_name("container", "wc_web_1").is_ok());
        assert!(resolvable_name("container", "_web").is_err());
        assert!(resolvable_name("network", "a.b").is_err());
        assert!(dns_label("network", &"a".repeat(64)).is_err());
        assert!(container_id("3f2a_c.d-1").is_ok());
        assert!(container_id("a b").is_err());
    }
}

/// A node id as every tool prints it: 16 hexadecimal digits (`00f3a1...`), the form `weft node
/// ls` shows and the node's certificate carries.
pub fn node_id_text(id: u64) -> String {
    format!("{id:016x}")
}

/// Whether `reference` (what a user typed: a node's name in any case, or its id in hexadecimal,
/// with or without leading zeros) names node `id` called `name`. The id is compared as a
/// number, so `00f3...` and `f3...` are the same node.
pub fn node_matches(id: u64, name: &str, reference: &str) -> bool {
    name.eq_ignore_ascii_case(reference)
        || (!reference.is_empty()
            && reference.len() <= 16
            && u64::from_str_radix(reference, 16).is_ok_and(|r| r == id))
}

#[cfg(test)]
mod node_ref_tests {
    use super::*;

    #[test]
    fn ids_are_printed_and_matched_in_one_form() {
        let id = 0x0abc_def0_1234_5678;
        assert_eq!(node_id_text(id), "0abcdef012345678", "leading zero kept");
        assert!(node_matches(id, "h1", &node_id_text(id)), "the printed form matches");
        assert!(node_matches(id, "h1", "abcdef012345678"), "without the leading zero too");
        assert!(node_matches(id, "h1", "H1"));
        assert!(!node_matches(id, "h1", "h2"));
        assert!(!node_matches(id, "h1", ""));
        assert!(!node_matches(1, "h1", "00000000000000001"), "17 digits is no id");
    }
}
