//! Test images made from Debian's busybox-static, without any registry.

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

/// A docker-save directory holding one layer: busybox-static with a few applet links.
pub fn busybox_save_dir(dir: &Path) -> PathBuf {
    let mut layer = tar::Builder::new(Vec::new());
    let add_dir = |b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(mode);
        h.set_size(0);
        b.append_data(&mut h, path, std::io::empty()).unwrap();
    };
    for (d, mode) in [("bin", 0o755), ("etc", 0o755), ("tmp", 0o1777), ("root", 0o700)] {
        add_dir(&mut layer, d, mode);
    }
    let busybox = fs::read("/bin/busybox").unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o755);
    h.set_size(busybox.len() as u64);
    layer.append_data(&mut h, "bin/busybox", busybox.as_slice()).unwrap();
    for applet in [
        "sh", "sleep", "cat", "echo", "ls", "hostname", "ps", "head", "tr", "id", "touch", "seq", "true",
        "false", "wc", "grep", "ping", "nslookup", "nc", "ip", "wget", "httpd", "kill", "printf", "env",
        "netstat", "timeout", "mkdir", "rm", "tty", "stty",
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        layer.append_link(&mut h, format!("bin/{applet}"), "busybox").unwrap();
    }
    let passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n";
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(passwd.len() as u64);
    layer.append_data(&mut h, "etc/passwd", &passwd[..]).unwrap();
    let layer = layer.into_inner().unwrap();
    let diff = format!("sha256:{}", hex(&Sha256::digest(&layer)));
    let out = dir.join("busybox-save");
    fs::create_dir_all(out.join("l1")).unwrap();
    fs::write(out.join("l1/layer.tar"), &layer).unwrap();
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Cmd":["/bin/sh"]}},"rootfs":{{"type":"layers","diff_ids":["{diff}"]}}}}"#
    );
    let name = format!("{}.json", hex(&Sha256::digest(config.as_bytes())));
    fs::write(out.join(&name), &config).unwrap();
    fs::write(
        out.join("manifest.json"),
        format!(r#"[{{"Config":"{name}","RepoTags":["busybox:latest"],"Layers":["l1/layer.tar"]}}]"#),
    )
    .unwrap();
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The busybox image as a docker-save tar file (what `weft image import` reads).
pub fn busybox_save_tar(dir: &Path) -> PathBuf {
    let save = busybox_save_dir(dir);
    let path = dir.join("busybox.tar");
    let mut archive = tar::Builder::new(fs::File::create(&path).unwrap());
    archive.append_dir_all(".", &save).unwrap();
    archive.finish().unwrap();
    path
}
