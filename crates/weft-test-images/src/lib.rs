//! Test images made from Debian's busybox-static, without any registry.

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

/// What a test image holds beside busybox: extra files, and what `/etc` is.
#[derive(Debug, Clone, Default)]
pub struct Variant {
    /// The image's tag (default `busybox:latest`).
    pub tag: String,
    /// Extra regular files: (path in the image, content, mode).
    pub files: Vec<(String, Vec<u8>, u32)>,
    /// `/etc` as a symlink to this target instead of a directory with passwd and group.
    pub etc_link: Option<String>,
}

impl Variant {
    /// The busybox image with the host program at `program` as `/NAME`, and the shared libraries
    /// it links (as `ldd` lists them) at their host paths, so it runs inside the container.
    pub fn with_program(tag: &str, program: &Path, name: &str) -> Variant {
        let mut files = vec![(name.trim_start_matches('/').to_string(), fs::read(program).unwrap(), 0o755)];
        let ldd = std::process::Command::new("ldd").arg(program).output().expect("run ldd");
        for line in String::from_utf8_lossy(&ldd.stdout).lines() {
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next().unwrap_or(""),
                None => line.split_whitespace().next().unwrap_or(""),
            };
            if path.starts_with('/') {
                files.push((path.trim_start_matches('/').to_string(), fs::read(path).unwrap(), 0o755));
            }
        }
        Variant { tag: tag.into(), files, etc_link: None }
    }
}

/// A docker-save directory holding one layer: busybox-static with a few applet links.
pub fn busybox_save_dir(dir: &Path) -> PathBuf {
    variant_save_dir(dir, &Variant::default())
}

/// A docker-save directory of a busybox image changed as `variant` says.
pub fn variant_save_dir(dir: &Path, variant: &Variant) -> PathBuf {
    let mut layer = tar::Builder::new(Vec::new());
    let add_dir = |b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(mode);
        h.set_size(0);
        b.append_data(&mut h, path, std::io::empty()).unwrap();
    };
    for (d, mode) in [("bin", 0o755), ("tmp", 0o1777), ("root", 0o700)] {
        add_dir(&mut layer, d, mode);
    }
    if variant.etc_link.is_none() {
        add_dir(&mut layer, "etc", 0o755);
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
    match &variant.etc_link {
        None => {
            let passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n";
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_size(passwd.len() as u64);
            layer.append_data(&mut h, "etc/passwd", &passwd[..]).unwrap();
        }
        Some(target) => {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            layer.append_link(&mut h, "etc", target).unwrap();
        }
    }
    let mut dirs_made = std::collections::BTreeSet::new();
    for (path, content, mode) in &variant.files {
        let mut parent = Path::new(path).parent();
        let mut missing = Vec::new();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            missing.push(p.to_string_lossy().into_owned());
            parent = p.parent();
        }
        for d in missing.into_iter().rev() {
            if !["bin", "etc", "tmp", "root"].contains(&d.as_str()) && dirs_made.insert(d.clone()) {
                add_dir(&mut layer, &d, 0o755);
            }
        }
        let mut h = tar::Header::new_gnu();
        h.set_mode(*mode);
        h.set_size(content.len() as u64);
        layer.append_data(&mut h, path, content.as_slice()).unwrap();
    }
    let layer = layer.into_inner().unwrap();
    let diff = format!("sha256:{}", hex(&Sha256::digest(&layer)));
    let tag = if variant.tag.is_empty() { "busybox:latest" } else { variant.tag.as_str() };
    let out = dir.join(format!("save-{}", tag.replace([':', '/'], "-")));
    fs::create_dir_all(out.join("l1")).unwrap();
    fs::write(out.join("l1/layer.tar"), &layer).unwrap();
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Cmd":["/bin/sh"]}},"rootfs":{{"type":"layers","diff_ids":["{diff}"]}}}}"#
    );
    let name = format!("{}.json", hex(&Sha256::digest(config.as_bytes())));
    fs::write(out.join(&name), &config).unwrap();
    fs::write(
        out.join("manifest.json"),
        format!(r#"[{{"Config":"{name}","RepoTags":["{tag}"],"Layers":["l1/layer.tar"]}}]"#),
    )
    .unwrap();
    out
}

/// A busybox variant as a docker-save tar file (what `weft image import` reads).
pub fn variant_save_tar(dir: &Path, variant: &Variant) -> PathBuf {
    let save = variant_save_dir(dir, variant);
    let path = save.with_extension("tar");
    let mut archive = tar::Builder::new(fs::File::create(&path).unwrap());
    archive.append_dir_all(".", &save).unwrap();
    archive.finish().unwrap();
    path
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The busybox image as a docker-save tar file (what `weft image import` reads).
pub fn busybox_save_tar(dir: &Path) -> PathBuf {
    variant_save_tar(dir, &Variant::default())
}
