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

/// A device node entry: `kind` (Char or Block), `major:minor`, permission bits `mode`.
fn device_entry(t: &mut Vec<u8>, path: &str, kind: tar::EntryType, major: u32, minor: u32, mode: u32) {
    let mut header = tar::Header::new_gnu();
    header.set_path(path).unwrap();
    header.set_entry_type(kind);
    header.set_device_major(major).unwrap();
    header.set_device_minor(minor).unwrap();
    header.set_mode(mode);
    header.set_size(0);
    header.set_cksum();
    t.extend_from_slice(header.as_bytes());
}

/// Images with device nodes (debootstrap'd and older distribution images carry /dev entries) are
/// imported as Docker imports them: the nodes are made as they are; the device allow-list of a
/// container's cgroup decides what it may open.
#[test]
fn device_nodes_in_a_layer_are_made_as_they_are() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    let tmp = TempDir::new("devices");
    let store = ImageStore::open(tmp.0.join("store")).unwrap();
    let mut t = Vec::new();
    raw_entry(&mut t, b"dev/", tar::EntryType::Directory, b"", b"");
    device_entry(&mut t, "dev/console", tar::EntryType::Char, 5, 1, 0o600);
    device_entry(&mut t, "dev/null", tar::EntryType::Char, 1, 3, 0o666);
    device_entry(&mut t, "dev/sda", tar::EntryType::Block, 8, 0, 0o660);
    let dir = tmp.0.join("with-devices");
    docker_dir(&dir, &finish(t), None);
    let images = store.import(&dir, Some("devices:latest")).unwrap();
    let layer = &store.layer_dirs(&images[0]).unwrap()[0];
    for (name, char_dev, major, minor, mode) in
        [("console", true, 5, 1, 0o600), ("null", true, 1, 3, 0o666), ("sda", false, 8, 0, 0o660)]
    {
        let meta = fs::symlink_metadata(layer.join("dev").join(name)).unwrap();
        let ft = meta.file_type();
        assert!(if char_dev { ft.is_char_device() } else { ft.is_block_device() }, "{name}: {ft:?}");
        assert_eq!((libc::major(meta.rdev()), libc::minor(meta.rdev())), (major, minor), "{name}");
        assert_eq!(meta.permissions().mode() & 0o7777, mode, "{name}");
    }
}

/// A file that is not an image is refused naming the file and what was expected, not with a tar
/// parser's internal error; a gzipped docker-save archive (`docker save | gzip`) imports.
#[test]
fn import_names_what_it_expected_and_takes_gzip() {
    use std::io::Write;
    let tmp = TempDir::new("formats");
    let store = ImageStore::open(tmp.0.join("store")).unwrap();
    let garbage = tmp.0.join("notes.txt");
    fs::write(&garbage, vec![0xffu8; 2048]).unwrap();
    let err = store.import(&garbage, None).unwrap_err().to_string();
    assert!(err.contains("notes.txt") && err.contains("OCI image layout or a docker-save archive"), "{err}");
    assert!(!err.contains('\u{fffd}'), "no garbage bytes in the message: {err}");
    let short = tmp.0.join("short");
    fs::write(&short, b"hi").unwrap();
    assert!(store.import(&short, None).unwrap_err().to_string().contains("OCI image layout"));
    assert_nothing_stored(&store);

    let mut t = Vec::new();
    raw_entry(&mut t, b"etc/ok", tar::EntryType::Regular, b"", b"fine");
    let dir = tmp.0.join("plain");
    docker_dir(&dir, &finish(t), None);
    let mut archive = tar::Builder::new(Vec::new());
    archive.append_dir_all(".", &dir).unwrap();
    let tar_bytes = archive.into_inner().unwrap();
    let gz_path = tmp.0.join("image.tar.gz");
    let mut gz =
        flate2::write::GzEncoder::new(fs::File::create(&gz_path).unwrap(), flate2::Compression::fast());
    gz.write_all(&tar_bytes).unwrap();
    gz.finish().unwrap();
    let images = store.import(&gz_path, Some("zipped:latest")).unwrap();
    assert_eq!(images.len(), 1);
    // Garbage behind a gzip header is named too.
    let bad_gz = tmp.0.join("bad.tar.gz");
    let mut gz =
        flate2::write::GzEncoder::new(fs::File::create(&bad_gz).unwrap(), flate2::Compression::fast());
    gz.write_all(&[0x42u8; 4096]).unwrap();
    gz.finish().unwrap();
    let err = store.import(&bad_gz, None).unwrap_err().to_string();
    assert!(err.contains("bad.tar.gz") && err.contains("gzip"), "{err}");
}
