//! Linux capabilities by name: Docker's default set, and the set a container gets from
//! `--cap-add`, `--cap-drop` and `--privileged`. Pure.

use crate::{Result, RuntimeError};

/// Every capability the kernel headers name, by number (capability.h).
const NAMES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Docker's default capability set (moby `oci/caps/defaults.go`).
pub const DOCKER_DEFAULT: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// A capability name in Docker's spelling, upper case with the `CAP_` prefix (`net_admin` ->
/// `CAP_NET_ADMIN`), known to this table or not (seccomp profiles may name newer ones).
pub fn spelled(name: &str) -> String {
    let upper = name.trim().to_ascii_uppercase();
    if upper.starts_with("CAP_") { upper } else { format!("CAP_{upper}") }
}

/// The canonical name of a capability given as Docker accepts it: any case, with or without
/// the `CAP_` prefix (`net_admin`, `CAP_NET_ADMIN`), or `ALL`.
pub fn canonical(name: &str) -> Result<String> {
    if name.trim().eq_ignore_ascii_case("ALL") {
        return Ok("ALL".into());
    }
    let full = spelled(name);
    if NAMES.contains(&full.as_str()) {
        Ok(full)
    } else {
        Err(RuntimeError::invalid("capability", name, "not a Linux capability (e.g. NET_ADMIN, SYS_TIME)"))
    }
}

/// The number of a capability by canonical name.
pub fn number(name: &str) -> Option<u32> {
    NAMES.iter().position(|n| *n == name).map(|i| i as u32)
}

/// Every capability this table names.
pub fn all() -> Vec<String> {
    NAMES.iter().map(|s| s.to_string()).collect()
}

/// The capability set of a container, by canonical name, as Docker computes it: every
/// capability when privileged; otherwise the default set, then `add` (`ALL` adds every one),
/// then `drop` (`ALL` drops every one not named in `add`). Unknown names are refused.
pub fn effective(privileged: bool, add: &[String], drop: &[String]) -> Result<Vec<String>> {
    let add: Vec<String> = add.iter().map(|c| canonical(c)).collect::<Result<_>>()?;
    let drop: Vec<String> = drop.iter().map(|c| canonical(c)).collect::<Result<_>>()?;
    if privileged {
        return Ok(all());
    }
    let mut set: Vec<String> = if drop.iter().any(|d| d == "ALL") {
        Vec::new()
    } else {
        DOCKER_DEFAULT.iter().map(|s| s.to_string()).filter(|c| !drop.contains(c)).collect()
    };
    if add.iter().any(|a| a == "ALL") {
        set = all().into_iter().filter(|c| !drop.contains(c)).collect();
    }
    for cap in add.into_iter().filter(|a| a != "ALL") {
        if !set.contains(&cap) {
            set.push(cap);
        }
    }
    set.sort_by_key(|c| number(c));
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(number("CAP_SYS_ADMIN"), Some(21));
        assert_eq!(number("CAP_CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(canonical("net_admin").unwrap(), "CAP_NET_ADMIN");
        assert_eq!(canonical("all").unwrap(), "ALL");
        assert!(canonical("CAP_FLY").unwrap_err().to_string().contains("not a Linux capability"));
    }

    #[test]
    fn docker_rules_for_add_and_drop() {
        let default = effective(false, &[], &[]).unwrap();
        assert_eq!(default.len(), 14);
        assert!(!default.contains(&"CAP_SYS_ADMIN".to_string()));
        let s = effective(false, &["SYS_TIME".into()], &["MKNOD".into()]).unwrap();
        assert!(s.contains(&"CAP_SYS_TIME".to_string()) && !s.contains(&"CAP_MKNOD".to_string()));
        let s = effective(false, &["NET_ADMIN".into()], &["ALL".into()]).unwrap();
        assert_eq!(s, ["CAP_NET_ADMIN"]);
        assert_eq!(effective(false, &["ALL".into()], &[]).unwrap().len(), NAMES.len());
        assert_eq!(effective(true, &[], &["ALL".into()]).unwrap().len(), NAMES.len());
        assert!(effective(false, &["BOGUS".into()], &[]).is_err());
    }
}
