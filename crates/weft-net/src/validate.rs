//! Checks done before anything is sent to the kernel.

use crate::{NetError, Result};

/// Longest interface name the kernel takes (IFNAMSIZ - 1).
pub const MAX_LINK_NAME: usize = 15;

/// Largest VXLAN network identifier (24 bits).
pub const MAX_VNI: u32 = 0x00FF_FFFF;

/// Refuses link names the kernel would reject: empty, longer than 15 bytes, `.`/`..`, or holding
/// `/`, `:`, white space or NUL.
pub fn link_name(name: &str) -> Result<()> {
    let bad = |reason: &str| Err(NetError::invalid("link name", name, reason));
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_LINK_NAME {
        return bad(&format!("{} bytes, at most {MAX_LINK_NAME}", name.len()));
    }
    if name == "." || name == ".." {
        return bad("reserved name");
    }
    if let Some(c) = name.chars().find(|c| *c == '/' || *c == ':' || c.is_whitespace() || *c == '\0') {
        return bad(&format!("contains {c:?}"));
    }
    Ok(())
}

/// Refuses a VNI outside 1..=16777215.
pub fn vni(vni: u32) -> Result<()> {
    if vni == 0 || vni > MAX_VNI {
        return Err(NetError::invalid("VNI", vni, format!("must be 1..={MAX_VNI}")));
    }
    Ok(())
}

/// Refuses an MTU the kernel cannot use for Ethernet-like links (68..=65535).
pub fn mtu(mtu: u32) -> Result<()> {
    if !(68..=65535).contains(&mtu) {
        return Err(NetError::invalid("MTU", mtu, "must be 68..=65535"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(link_name("wvx-16777215").is_ok());
        assert!(link_name("abcdefghijklmno").is_ok());
        assert!(link_name("abcdefghijklmnop").is_err());
        assert!(link_name("").is_err());
        assert!(link_name("a b").is_err());
        assert!(link_name("a/b").is_err());
        assert!(link_name("..").is_err());
    }

    #[test]
    fn vnis() {
        assert!(vni(0).is_err());
        assert!(vni(1).is_ok());
        assert!(vni(16_777_215).is_ok());
        assert!(vni(16_777_216).is_err());
    }
}
