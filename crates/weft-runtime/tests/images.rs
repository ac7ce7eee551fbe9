//! Image import against images made by third-party tools: umoci builds an OCI layout from a
//! busybox-static rootfs (a second layer deletes a file), skopeo turns it into a docker-save
//! archive. Layers are stacked with a real overlayfs mount. Hostile archives are refused and
//! leave nothing behind. Needs root (device nodes, ownership, trusted xattrs, mounts).

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use sha2::{Digest as _, Sha256};
use weft_runtime::RuntimeError;
use weft_runtime::image::ImageStore;

static N: AtomicU32 = AtomicU32::new(0);

/// A scratch directory removed on drop (unmounting anything left mounted below it).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "weft-img-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.0.join("merged").exists() {
            let _ = Command::new("umount")
                .arg("-R")
                .arg(self.0.join("merged"))
                .stderr(std::process::Stdio::null())
                .status();
        }
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Builds `dir/oci` (OCI layout, tag `latest`, two layers) with umoci and `dir/docker.tar` with
/// skopeo.
fn build_images(dir: &Path) {
    let layout = dir.join("oci");
    let bundle = dir.join("bundle");
    let image = format!("{}:latest", layout.display());
    run(Command::new("umoci").args(["init", "--layout"]).arg(&layout));
    run(Command::new("umoci").args(["new", "--image", &image]));
    run(Command::new("umoci").args(["unpack", "--image", &image]).arg(&bundle));
    let rootfs = bundle.join("rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::create_dir_all(rootfs.join("etc")).unwrap();
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).unwrap();
    fs::write(rootfs.join("etc/motd"), "hello from weft\n").unwrap();
    fs::write(rootfs.join("etc/deleteme"), "gone in layer 2\n").unwrap();
    run(Command::new("umoci").args(["repack", "--image", &image]).arg(&bundle));
    run(Command::new("umoci").args([
        "config",
        "--image",
        &image,
        "--config.cmd",
        "/bin/sh",
        "--config.env",
        "FOO=bar",
    ]));
    fs::remove_dir_all(&bundle).unwrap();
    run(Command::new("umoci").args(["unpack", "--image", &image]).arg(&bundle));
    fs::remove_file(bundle.join("rootfs/etc/deleteme")).unwrap();
    run(Command::new("umoci").args(["repack", "--image", &image]).arg(&bundle));
    let archive = format!("docker-archive:{}:busybox:latest", dir.join("docker.tar").display());
    run(Command::new("skopeo").args(["copy", &format!("oci:{image}"), &archive]));
}

fn mount_overlay(store: &ImageStore, layers: &[PathBuf], dir: &Path) -> PathBuf {
    let (upper, work, merged) = (dir.join("upper"), dir.join("work"), dir.join("merged"));
    for d in [&upper, &work, &merged] {
        fs::create_dir_all(d).unwrap();
    }
    let lower: Vec<String> = layers.iter().rev().map(|p| p.display().to_string()).collect();
    let opts =
        format!("lowerdir={},upperdir={},workdir={}", lower.join(":"), upper.display(), work.display());
    run(Command::new("mount").args(["-t", "overlay", "overlay", "-o", &opts]).arg(&merged));
    let _ = store;
    merged
}

#[test]
fn oci_layouts_and_docker_archives_from_real_tools_import_and_stack() {
    let tmp = TempDir::new("real");
    build_images(&tmp.0);
    let store = ImageStore::open(tmp.0.join("store")).unwrap();

    let oci = store.import(&tmp.0.join("oci"), Some("busybox:oci")).unwrap();
    assert_eq!(oci.len(), 1);
    let image = &oci[0];
    assert!(image.names.contains(&"busybox:oci".to_string()), "{:?}", image.names);
    assert_eq!(image.diff_ids.len(), 2);
    assert_eq!(image.runtime_config()["Cmd"][0], "/bin/sh");
    assert!(image.runtime_config()["Env"].as_array().unwrap().iter().any(|e| e == "FOO=bar"));
    let layers = store.layer_dirs(image).unwrap();
    // The second layer holds an overlayfs whiteout for the deleted file.
    let whiteout = fs::symlink_metadata(layers[1].join("etc/deleteme")).unwrap();
    assert!(whiteout.file_type().is_char_device() && whiteout.rdev() == 0);
    assert!(layers[0].join("bin/busybox").is_file());

    // Stacked as overlayfs: the whiteout hides the file, everything else is there and runs.
    let merged = mount_overlay(&store, &layers, &tmp.0);
    assert!(!merged.join("etc/deleteme").exists(), "the whiteout hides the deleted file");
    assert_eq!(fs::read_to_string(merged.join("etc/motd")).unwrap(), "hello from weft\n");
    let out =
        Command::new("chroot").arg(&merged).args(["/bin/sh", "-c", "echo ran inside"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ran inside\n");
    run(Command::new("umount").arg(&merged));

    // And run by weft's own runtime: the whiteout holds there too.
    let runtime =
        weft_runtime::container::Runtime::new(&tmp.0.join("state"), env!("CARGO_BIN_EXE_weft-shim")).unwrap();
    let argv = vec!["/bin/sh".into(), "-c".into(), "cat /etc/motd; ls /etc/deleteme 2>&1; echo $FOO".into()];
    let spec = weft_runtime::container::ContainerSpec {
        name: "from-umoci".into(),
        image: image.id.clone(),
        env: vec!["FOO=bar".into()],
        cgroup_path: PathBuf::from(format!("weft-test-img-{}", std::process::id())),
        ..weft_runtime::container::ContainerSpec::new(layers.clone(), argv)
    };
    let spec = runtime.create(spec).unwrap();
    runtime.start(&spec.id).unwrap();
    assert_eq!(runtime.wait(&spec.id, Some(std::time::Duration::from_secs(30))).unwrap().code, 0);
    let lines: Vec<String> = runtime.logs(&spec.id, 0).unwrap().0.into_iter().map(|l| l.line).collect();
    assert_eq!(lines[0], "hello from weft");
    assert!(lines[1].contains("No such file"), "{lines:?}");
    assert_eq!(lines[2], "bar");
    runtime.remove(&spec.id, false).unwrap();

    // The docker-save archive of the same image: same layers (stored once), its own name.
    let docker = store.import(&tmp.0.join("docker.tar"), None).unwrap();
    assert_eq!(docker[0].diff_ids, image.diff_ids);
    assert!(docker[0].names.contains(&"busybox:latest".to_string()), "{:?}", docker[0].names);
    assert_eq!(fs::read_dir(store.root().join("layers")).unwrap().count(), 2);
    assert_eq!(store.get("busybox").unwrap().id, docker[0].id);

    // An OCI layout as a tar file.
    let oci_tar = tmp.0.join("oci.tar");
    run(Command::new("tar").arg("-C").arg(tmp.0.join("oci")).arg("-cf").arg(&oci_tar).arg("."));
    let again = store.import(&oci_tar, Some("busybox:tarred")).unwrap();
    assert_eq!(again[0].id, image.id);
    assert!(store.get("busybox:tarred").is_ok());
    assert_eq!(fs::read_dir(store.root().join("tmp")).unwrap().count(), 0, "scratch space cleaned");

    // Export both ways; third-party tools read them and a fresh store imports the same image.
    let docker_out = tmp.0.join("export-docker.tar");
    store.export_docker("busybox:latest", &docker_out).unwrap();
    let oci_out = tmp.0.join("export-oci");
    store.export_oci("busybox:latest", &oci_out).unwrap();
    let inspect = Command::new("skopeo")
        .arg("inspect")
        .arg(format!("docker-archive:{}", docker_out.display()))
        .output()
        .unwrap();
    assert!(inspect.status.success(), "{}", String::from_utf8_lossy(&inspect.stderr));
    let seen: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(seen["Layers"].as_array().unwrap().len(), 2);
    assert!(seen["Env"].as_array().unwrap().iter().any(|e| e == "FOO=bar"), "{seen}");
    let inspect =
        Command::new("skopeo").arg("inspect").arg(format!("oci:{}", oci_out.display())).output().unwrap();
    assert!(inspect.status.success(), "{}", String::from_utf8_lossy(&inspect.stderr));
    let fresh = ImageStore::open(tmp.0.join("store2")).unwrap();
    let from_docker = fresh.import(&docker_out, None).unwrap();
    let from_oci = fresh.import(&oci_out, None).unwrap();
    assert_eq!(
        (from_docker[0].id.clone(), from_docker[0].diff_ids.clone()),
        (image.id.clone(), image.diff_ids.clone())
    );
    assert_eq!(from_oci[0].id, image.id);
    assert!(store.export_oci("busybox:latest", &oci_out).is_err(), "an existing destination is refused");
}

/// A tar header with a raw name and link name, so hostile paths can be written at all.
fn raw_entry(out: &mut Vec<u8>, name: &[u8], kind: tar::EntryType, link: &[u8], data: &[u8]) {
    let mut header = tar::Header::new_old();
    header.as_old_mut().name[..name.len()].copy_from_slice(name);
    header.as_old_mut().linkname[..link.len()].copy_from_slice(link);
    header.set_entry_type(kind);
    header.set_mode(0o644);
    header.set_size(data.len() as u64);
    header.set_cksum();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn finish(mut tar: Vec<u8>) -> Vec<u8> {
    tar.extend_from_slice(&[0u8; 1024]);
    tar
}

/// A docker-save directory holding one layer; `diff_id` overrides the layer's true digest.
fn docker_dir(dir: &Path, layer: &[u8], diff_id: Option<String>) {
    fs::create_dir_all(dir.join("l1")).unwrap();
    fs::write(dir.join("l1/layer.tar"), layer).unwrap();
    let diff = diff_id.unwrap_or_else(|| format!("sha256:{}", hex(&Sha256::digest(layer))));
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":["{diff}"]}}}}"#
    );
    let config_name = format!("{}.json", hex(&Sha256::digest(config.as_bytes())));
    fs::write(dir.join(&config_name), &config).unwrap();
    let manifest =
        format!(r#"[{{"Config":"{config_name}","RepoTags":["hostile:latest"],"Layers":["l1/layer.tar"]}}]"#);
    fs::write(dir.join("manifest.json"), manifest).unwrap();
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn assert_nothing_stored(store: &ImageStore) {
    for dir in ["layers", "configs", "tmp"] {
        let left: Vec<_> = fs::read_dir(store.root().join(dir)).unwrap().collect();
        assert!(left.is_empty(), "{dir} holds {left:?}");
    }
}

#[test]
fn hostile_archives_are_refused_and_leave_nothing_behind() {
    let tmp = TempDir::new("hostile");
    let store = ImageStore::open(tmp.0.join("store")).unwrap();
    let victim = tmp.0.join("victim");
    fs::create_dir_all(&victim).unwrap();
    let victim_bytes = victim.as_os_str().as_encoded_bytes().to_vec();

    let mut cases: Vec<(&str, Vec<u8>, &str)> = Vec::new();
    let mut t = Vec::new();
    raw_entry(&mut t, b"../escaped", tar::EntryType::Regular, b"", b"x");
    cases.push(("dot-dot", finish(t), "'..' in path"));
    let mut t = Vec::new();
    raw_entry(&mut t, &[&victim_bytes[..], b"/abs"].concat(), tar::EntryType::Regular, b"", b"x");
    cases.push(("absolute", finish(t), "absolute path"));
    let mut t = Vec::new();
    raw_entry(&mut t, b"escape", tar::EntryType::Symlink, &victim_bytes, b"");
    raw_entry(&mut t, b"escape/owned", tar::EntryType::Regular, b"", b"pwned");
    cases.push(("symlink-escape", finish(t), "symlink"));
    let mut t = Vec::new();
    raw_entry(&mut t, b"up", tar::EntryType::Symlink, b"../../../../etc", b"");
    cases.push(("relative-symlink-escape", finish(t), "climbs out"));
    let mut t = Vec::new();
    raw_entry(&mut t, b"link", tar::EntryType::Link, b"../../etc/passwd", b"");
    cases.push(("hardlink-escape", finish(t), "hard link"));
    let mut t = Vec::new();
    let mut header = tar::Header::new_gnu();
    header.set_path("dev-sda").unwrap();
    header.set_entry_type(tar::EntryType::Block);
    header.set_device_major(8).unwrap();
    header.set_device_minor(0).unwrap();
    header.set_size(0);
    header.set_cksum();
    t.extend_from_slice(header.as_bytes());
    cases.push(("device", finish(t), "device nodes"));

    for (label, layer, want) in cases {
        let dir = tmp.0.join(label);
        docker_dir(&dir, &layer, None);
        let err = store.import(&dir, None).unwrap_err();
        assert!(matches!(err, RuntimeError::UnsafeEntry { .. }), "{label}: {err}");
        assert!(err.to_string().contains(want), "{label}: {err}");
        assert_nothing_stored(&store);
    }
    assert!(!victim.join("owned").exists() && !victim.join("abs").exists(), "nothing written outside");

    // A layer whose content does not match its announced digest.
    let mut good = Vec::new();
    raw_entry(&mut good, b"etc/ok", tar::EntryType::Regular, b"", b"fine");
    let dir = tmp.0.join("digest");
    docker_dir(&dir, &finish(good), Some(format!("sha256:{}", "0".repeat(64))));
    let err = store.import(&dir, None).unwrap_err();
    assert!(matches!(err, RuntimeError::DigestMismatch { .. }), "{err}");
    assert_nothing_stored(&store);
    assert!(store.list().unwrap().is_empty());
    let err = store.import(&tmp.0.join("nope"), None).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
    let err = store.import(&dir, Some("Bad Name")).unwrap_err();
    assert!(err.to_string().contains("image name"), "{err}");
}
