//! The image store in the state directory:
//!
//! ```text
//! images/blobs/sha256/<hex>       manifests, configs and layer blobs, as received
//! images/layers/<diff-id hex>/    each layer unpacked once, by the digest of its uncompressed tar
//! images/configs/<id hex>.json    one record per image: config, layer diff ids, names
//! images/tmp/                     scratch space; anything here is garbage after a crash
//! ```

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use flate2::read::GzDecoder;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::digest::{Digest, HashingReader};
use super::unpack::unpack_layer;
use crate::{Result, RuntimeError};

/// One image in the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The image id: the digest of its config.
    pub id: String,
    /// Names (`repo:tag`) pointing at it.
    pub names: Vec<String>,
    /// The uncompressed digests of its layers, bottom first.
    pub diff_ids: Vec<String>,
    /// The OCI image config as imported.
    pub config: Value,
}

/// One step of an image's history (see [`ImageStore::history`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryStep {
    /// When (RFC 3339), if recorded.
    pub created: String,
    /// The instruction that made it.
    pub created_by: String,
    /// A comment.
    pub comment: String,
    /// It made no layer.
    pub empty_layer: bool,
    /// The size of its layer's tar, bytes.
    pub size: u64,
}

impl ImageRecord {
    /// The `config` object of the image config (Env, Cmd, Entrypoint, WorkingDir, User, ...).
    pub fn runtime_config(&self) -> &Value {
        &self.config["config"]
    }
}

/// Copies everything read through it into a file.
struct Tee<R> {
    inner: R,
    copy: File,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        std::io::Write::write_all(&mut self.copy, &buf[..n])?;
        Ok(n)
    }
}

/// The store. Cheap to open; every method works on the directory.
#[derive(Debug)]
pub struct ImageStore {
    root: PathBuf,
}

static SCRATCH: AtomicU64 = AtomicU64::new(0);

/// A scratch directory inside the store, removed when dropped.
#[derive(Debug)]
pub struct ScratchDir(Scratch);

impl ScratchDir {
    /// Its path.
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

/// Removes a scratch directory when dropped, unless kept.
#[derive(Debug)]
struct Scratch(Option<PathBuf>);

impl Scratch {
    fn path(&self) -> &Path {
        self.0.as_deref().expect("scratch alive")
    }
    fn keep(mut self) -> PathBuf {
        self.0.take().expect("scratch alive")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = fs::remove_dir_all(path);
        }
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let bytes = fs::read(path).map_err(RuntimeError::io("read", path))?;
    serde_json::from_slice(&bytes).map_err(|e| RuntimeError::BadImage(format!("{}: {e}", path.display())))
}

/// `repo[:tag]` with `:latest` added when there is no tag, and Docker Hub's default prefixes
/// (`docker.io/library/`) dropped, as `docker images` shows names.
fn normalize_name(name: &str) -> Result<String> {
    let name = name.strip_prefix("docker.io/").unwrap_or(name);
    let name = name.strip_prefix("library/").unwrap_or(name);
    let valid = !name.is_empty()
        && name.len() <= 255
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/:".contains(&b))
        && !name.starts_with(['.', '-', '/', ':']);
    if !valid {
        return Err(RuntimeError::invalid(
            "image name",
            name,
            "expected lowercase repo[:tag], e.g. busybox:latest",
        ));
    }
    let last = name.rsplit('/').next().unwrap_or(name);
    Ok(if last.contains(':') { name.to_string() } else { format!("{name}:latest") })
}

impl ImageStore {
    /// Opens (creating if needed) the store under `root`, and clears leftover scratch space.
    pub fn open(root: impl Into<PathBuf>) -> Result<ImageStore> {
        let root = root.into();
        for dir in ["blobs/sha256", "layers", "configs", "tmp"] {
            let path = root.join(dir);
            fs::create_dir_all(&path).map_err(RuntimeError::io("create", &path))?;
        }
        // Layers keep their setuid binaries and device-free contents as the image has them: no
        // other user of the host may reach them (the state dir is 0700 too).
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700))
            .map_err(RuntimeError::io("set permissions of", &root))?;
        let tmp = root.join("tmp");
        if let Ok(entries) = fs::read_dir(&tmp) {
            for entry in entries.flatten() {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        Ok(ImageStore { root })
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn scratch(&self) -> Result<Scratch> {
        let n = SCRATCH.fetch_add(1, Ordering::SeqCst);
        let path = self.root.join("tmp").join(format!("{}-{n}", std::process::id()));
        fs::create_dir(&path).map_err(RuntimeError::io("create", &path))?;
        Ok(Scratch(Some(path)))
    }

    /// The directory of an unpacked layer.
    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers").join(diff_id.hex())
    }

    /// The unpacked layer directories of an image, bottom first.
    pub fn layer_dirs(&self, image: &ImageRecord) -> Result<Vec<PathBuf>> {
        image.diff_ids.iter().map(|d| Ok(self.layer_dir(&d.parse()?))).collect()
    }

    /// The history of an image, oldest first, each step with the size of the layer it made: the
    /// config's `history`, whose entries that are not `empty_layer` take the image's layers in
    /// order; an image without history gets one entry per layer.
    pub fn history(&self, image: &ImageRecord) -> Vec<HistoryStep> {
        let size = |i: usize| -> u64 {
            image.diff_ids.get(i).and_then(|d| d.parse::<Digest>().ok()).map_or(0, |d| {
                fs::metadata(self.root.join("blobs/sha256").join(d.hex())).map_or(0, |m| m.len())
            })
        };
        let text = |v: &Value, key: &str| v[key].as_str().unwrap_or("").to_string();
        match image.config["history"].as_array() {
            Some(entries) if !entries.is_empty() => {
                // Layers the history does not account for (an image imported without it, built
                // on by an older weft) come first, without details.
                let accounted =
                    entries.iter().filter(|e| !e["empty_layer"].as_bool().unwrap_or(false)).count();
                let missing = image.diff_ids.len().saturating_sub(accounted);
                let mut layer = 0;
                (0..missing)
                    .map(|_| Value::Null)
                    .chain(entries.iter().cloned())
                    .collect::<Vec<Value>>()
                    .iter()
                    .map(|e| {
                        let empty_layer = e["empty_layer"].as_bool().unwrap_or(false);
                        let size = if empty_layer {
                            0
                        } else {
                            layer += 1;
                            size(layer - 1)
                        };
                        HistoryStep {
                            created: text(e, "created"),
                            created_by: text(e, "created_by"),
                            comment: text(e, "comment"),
                            empty_layer,
                            size,
                        }
                    })
                    .collect()
            }
            _ => (0..image.diff_ids.len())
                .map(|i| HistoryStep { size: size(i), ..HistoryStep::default() })
                .collect(),
        }
    }

    /// Every image.
    pub fn list(&self) -> Result<Vec<ImageRecord>> {
        let dir = self.root.join("configs");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(RuntimeError::io("list", &dir))? {
            let path = entry.map_err(RuntimeError::io("list", &dir))?.path();
            if path.extension().is_some_and(|e| e == "json") {
                let value = read_json(&path)?;
                out.push(serde_json::from_value(value).map_err(|e| RuntimeError::BadImage(e.to_string()))?);
            }
        }
        out.sort_by(|a: &ImageRecord, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// An image by name (`busybox`, `busybox:1`), full id or unique id prefix.
    pub fn get(&self, reference: &str) -> Result<ImageRecord> {
        let images = self.list()?;
        let by_name = normalize_name(reference).ok();
        let found: Vec<&ImageRecord> = images
            .iter()
            .filter(|i| {
                by_name.as_ref().is_some_and(|n| i.names.contains(n))
                    || i.id == reference
                    || (reference.len() >= 4 && i.id.trim_start_matches("sha256:").starts_with(reference))
            })
            .collect();
        match found.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(RuntimeError::NoSuchImage(reference.to_string())),
            _ => Err(RuntimeError::invalid("image reference", reference, "matches more than one image")),
        }
    }

    fn save_record(&self, record: &ImageRecord) -> Result<()> {
        let id: Digest = record.id.parse()?;
        let path = self.root.join("configs").join(format!("{}.json", id.hex()));
        Ok(weft_fs::write_json(&path, record, 0o600, weft_fs::Durability::Durable)?)
    }

    /// Points `name` at image `id`, taking it from any image that had it.
    pub fn tag(&self, reference: &str, name: &str) -> Result<ImageRecord> {
        let name = normalize_name(name)?;
        let mut target = self.get(reference)?;
        for mut other in self.list()? {
            if other.id != target.id && other.names.contains(&name) {
                other.names.retain(|n| *n != name);
                self.save_record(&other)?;
            }
        }
        if !target.names.contains(&name) {
            target.names.push(name);
            target.names.sort();
            self.save_record(&target)?;
        }
        Ok(target)
    }

    /// Stores a blob after checking its digest; returns its path.
    fn put_blob(&self, expected: &Digest, bytes: &[u8]) -> Result<PathBuf> {
        let actual = Digest::of(bytes);
        if actual != *expected {
            return Err(RuntimeError::DigestMismatch {
                what: "blob".into(),
                expected: expected.to_string(),
                actual: actual.to_string(),
            });
        }
        let path = self.root.join("blobs/sha256").join(expected.hex());
        if !path.exists() {
            weft_fs::write(&path, bytes, 0o600, weft_fs::Durability::Durable)?;
        }
        Ok(path)
    }

    /// Unpacks the layer in file `blob` (tar or gzip'd tar, told apart by its magic bytes),
    /// checking the blob's digest (when known) and the uncompressed digest against `diff_id`.
    fn import_layer(&self, blob: &Path, blob_digest: Option<&Digest>, diff_id: &Digest) -> Result<()> {
        let dest = self.layer_dir(diff_id);
        if dest.exists() {
            return Ok(());
        }
        let mut magic = [0u8; 2];
        let gzip =
            File::open(blob).and_then(|mut f| f.read(&mut magic)).map_err(RuntimeError::io("read", blob))?
                == 2
                && magic == [0x1f, 0x8b];
        let file = BufReader::new(File::open(blob).map_err(RuntimeError::io("open", blob))?);
        let scratch = self.scratch()?;
        // The uncompressed tar is kept as it came (blobs/sha256/<diff id>), so an export gives back
        // exactly the layers the image config names.
        let copy_dir = self.scratch()?;
        let copy_path = copy_dir.path().join("layer.tar");
        let copy = File::create(&copy_path).map_err(RuntimeError::io("create", &copy_path))?;
        let outer = HashingReader::new(file);
        let (blob_actual, diff_actual) = if gzip {
            let mut inner = HashingReader::new(Tee { inner: GzDecoder::new(outer), copy });
            unpack_layer(&mut inner, scratch.path())?;
            let (diff, _, tee) = inner.finish_with_inner().map_err(RuntimeError::io("read layer", blob))?;
            let (blob_digest, _, _) =
                tee.inner.into_inner().finish_with_inner().map_err(RuntimeError::io("read", blob))?;
            (blob_digest, diff)
        } else {
            let mut inner = HashingReader::new(Tee { inner: outer, copy });
            unpack_layer(&mut inner, scratch.path())?;
            let (digest, _, _) = inner.finish_with_inner().map_err(RuntimeError::io("read layer", blob))?;
            (digest.clone(), digest)
        };
        if let Some(expected) = blob_digest
            && blob_actual != *expected
        {
            return Err(RuntimeError::DigestMismatch {
                what: format!("layer blob {}", blob.display()),
                expected: expected.to_string(),
                actual: blob_actual.to_string(),
            });
        }
        if diff_actual != *diff_id {
            return Err(RuntimeError::DigestMismatch {
                what: format!("uncompressed layer {}", blob.display()),
                expected: diff_id.to_string(),
                actual: diff_actual.to_string(),
            });
        }
        let kept = self.root.join("blobs/sha256").join(diff_id.hex());
        fs::rename(&copy_path, &kept).map_err(RuntimeError::io("store layer tar", &kept))?;
        let done = scratch.keep();
        if let Err(e) = fs::rename(&done, &dest) {
            let _ = fs::remove_dir_all(&done);
            if !dest.exists() {
                return Err(RuntimeError::io("store layer", &dest)(e));
            }
        }
        Ok(())
    }

    /// Stores an uncompressed layer tar made by weft itself (a build step) and returns its diff id.
    pub fn add_layer_tar(&self, tar: &Path) -> Result<Digest> {
        let file = File::open(tar).map_err(RuntimeError::io("open", tar))?;
        let (diff, _) =
            HashingReader::new(BufReader::new(file)).finish().map_err(RuntimeError::io("read", tar))?;
        self.import_layer(tar, None, &diff)?;
        Ok(diff)
    }

    /// Records an image whose layers are already in the store (a build result); `config` is the
    /// OCI image config, whose digest becomes the image id.
    pub fn add_image(&self, config: &[u8], names: &[String]) -> Result<ImageRecord> {
        let value: Value = serde_json::from_slice(config)
            .map_err(|e| RuntimeError::BadImage(format!("image config: {e}")))?;
        for diff in value["rootfs"]["diff_ids"].as_array().into_iter().flatten() {
            let diff: Digest = diff.as_str().unwrap_or("").parse()?;
            if !self.layer_dir(&diff).is_dir() {
                return Err(RuntimeError::BadImage(format!("layer {diff} is not in the store")));
            }
        }
        let names = names.iter().map(|n| normalize_name(n)).collect::<Result<Vec<_>>>()?;
        self.put_blob(&Digest::of(config), config)?;
        self.record_image(config, names)
    }

    /// Scratch space inside the store (removed when dropped).
    pub fn scratch_dir(&self) -> Result<ScratchDir> {
        self.scratch().map(ScratchDir)
    }

    fn record_image(&self, config_bytes: &[u8], names: Vec<String>) -> Result<ImageRecord> {
        let config: Value = serde_json::from_slice(config_bytes)
            .map_err(|e| RuntimeError::BadImage(format!("image config: {e}")))?;
        let diff_ids: Vec<String> = config["rootfs"]["diff_ids"]
            .as_array()
            .ok_or_else(|| RuntimeError::BadImage("image config has no rootfs.diff_ids".into()))?
            .iter()
            .map(|d| {
                d.as_str()
                    .map(String::from)
                    .ok_or_else(|| RuntimeError::BadImage("diff id is not a string".into()))
            })
            .collect::<Result<_>>()?;
        let id = Digest::of(config_bytes).to_string();
        let mut record = match self.get(&id) {
            Ok(existing) => existing,
            Err(_) => ImageRecord { id, names: Vec::new(), diff_ids, config },
        };
        self.save_record(&record)?;
        for name in names {
            record = self.tag(&record.id, &name)?;
        }
        Ok(record)
    }

    /// Imports an OCI image layout directory, a docker-save directory, or either as a tar file.
    /// `name`, when given, is added to every image imported. Everything is checked before the
    /// image is recorded; a refused import leaves no layer and no record behind.
    pub fn import(&self, path: &Path, name: Option<&str>) -> Result<Vec<ImageRecord>> {
        if let Some(name) = name {
            normalize_name(name)?;
        }
        let meta = fs::metadata(path).map_err(RuntimeError::io("open", path))?;
        if meta.is_dir() {
            return self.import_dir(path, name);
        }
        let scratch = self.scratch()?;
        let (gzip, looks_like_tar) = archive_kind(path)?;
        if !looks_like_tar {
            return Err(RuntimeError::BadImage(format!(
                "{}: not an image: expected an OCI image layout or a docker-save archive (a directory, a tar, or a gzipped tar){}",
                path.display(),
                if gzip { "; it is gzipped, but what it holds is not a tar" } else { "" }
            )));
        }
        let file = BufReader::new(File::open(path).map_err(RuntimeError::io("open", path))?);
        if gzip {
            unpack_layer(GzDecoder::new(file), scratch.path())?;
        } else {
            unpack_layer(file, scratch.path())?;
        }
        self.import_dir(scratch.path(), name)
    }

    fn import_dir(&self, dir: &Path, name: Option<&str>) -> Result<Vec<ImageRecord>> {
        if dir.join("manifest.json").is_file() {
            self.import_docker(dir, name)
        } else if dir.join("oci-layout").is_file() && dir.join("index.json").is_file() {
            self.import_oci(dir, name)
        } else {
            Err(RuntimeError::BadImage(format!(
                "{}: neither an OCI image layout (oci-layout, index.json) nor a docker-save archive (manifest.json)",
                dir.display()
            )))
        }
    }

    fn blob_path(dir: &Path, digest: &Digest) -> PathBuf {
        dir.join("blobs/sha256").join(digest.hex())
    }

    fn read_blob(dir: &Path, digest: &Digest) -> Result<Vec<u8>> {
        let path = Self::blob_path(dir, digest);
        let bytes = fs::read(&path).map_err(RuntimeError::io("read blob", &path))?;
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(RuntimeError::DigestMismatch {
                what: format!("blob {}", path.display()),
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(bytes)
    }

    fn import_oci(&self, dir: &Path, name: Option<&str>) -> Result<Vec<ImageRecord>> {
        let index = read_json(&dir.join("index.json"))?;
        let mut manifests: Vec<(Value, Option<String>)> = Vec::new();
        let mut queue: Vec<Value> = index["manifests"].as_array().cloned().unwrap_or_default();
        while let Some(desc) = queue.pop() {
            let digest: Digest = desc["digest"].as_str().unwrap_or("").parse()?;
            let media = desc["mediaType"].as_str().unwrap_or("");
            let bytes = Self::read_blob(dir, &digest)?;
            let value: Value = serde_json::from_slice(&bytes)
                .map_err(|e| RuntimeError::BadImage(format!("manifest: {e}")))?;
            if media.contains("index") || value.get("manifests").is_some() {
                queue.extend(value["manifests"].as_array().cloned().unwrap_or_default());
                continue;
            }
            let annotations = &desc["annotations"];
            // A full name, if the layout carries one; a bare tag ("latest") names nothing.
            let tag = annotations["io.containerd.image.name"]
                .as_str()
                .or(annotations["org.opencontainers.image.ref.name"].as_str().filter(|r| r.contains(':')))
                .map(String::from);
            self.put_blob(&digest, &bytes)?;
            manifests.push((value, tag));
        }
        if manifests.is_empty() {
            return Err(RuntimeError::BadImage("the OCI layout's index.json lists no image manifest".into()));
        }
        let mut out = Vec::new();
        for (manifest, tag) in manifests {
            let config_digest: Digest = manifest["config"]["digest"].as_str().unwrap_or("").parse()?;
            let config = Self::read_blob(dir, &config_digest)?;
            let config_value: Value =
                serde_json::from_slice(&config).map_err(|e| RuntimeError::BadImage(e.to_string()))?;
            let diff_ids = config_value["rootfs"]["diff_ids"].as_array().cloned().unwrap_or_default();
            let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
            check_layer_count(layers.len(), diff_ids.len())?;
            for (layer, diff) in layers.iter().zip(&diff_ids) {
                let media = layer["mediaType"].as_str().unwrap_or("");
                if media.contains("zstd") {
                    return Err(RuntimeError::BadImage(format!(
                        "layer media type {media} is not supported (use gzip or plain tar)"
                    )));
                }
                let digest: Digest = layer["digest"].as_str().unwrap_or("").parse()?;
                let diff: Digest = diff.as_str().unwrap_or("").parse()?;
                self.import_layer(&Self::blob_path(dir, &digest), Some(&digest), &diff)?;
            }
            self.put_blob(&config_digest, &config)?;
            let mut names: Vec<String> = Vec::new();
            if let Some(tag) = tag.and_then(|t| normalize_name(&t).ok()) {
                names.push(tag);
            }
            names.extend(name.map(String::from));
            out.push(self.record_image(&config, names)?);
        }
        Ok(out)
    }

    fn import_docker(&self, dir: &Path, name: Option<&str>) -> Result<Vec<ImageRecord>> {
        let manifest = read_json(&dir.join("manifest.json"))?;
        let entries = manifest
            .as_array()
            .ok_or_else(|| RuntimeError::BadImage("manifest.json is not a list".into()))?;
        let mut out = Vec::new();
        for entry in entries {
            let config_path = entry["Config"]
                .as_str()
                .ok_or_else(|| RuntimeError::BadImage("manifest entry without Config".into()))?;
            let config =
                fs::read(dir.join(config_path)).map_err(RuntimeError::io("read", dir.join(config_path)))?;
            // The config's file name is its digest (`<hex>.json` or `blobs/sha256/<hex>`).
            let stem = Path::new(config_path).file_name().and_then(|s| s.to_str()).unwrap_or("");
            let named: Option<Digest> = format!("sha256:{}", stem.trim_end_matches(".json")).parse().ok();
            if let Some(expected) = named {
                let actual = Digest::of(&config);
                if actual != expected {
                    return Err(RuntimeError::DigestMismatch {
                        what: config_path.into(),
                        expected: expected.to_string(),
                        actual: actual.to_string(),
                    });
                }
            }
            let config_value: Value =
                serde_json::from_slice(&config).map_err(|e| RuntimeError::BadImage(e.to_string()))?;
            let diff_ids = config_value["rootfs"]["diff_ids"].as_array().cloned().unwrap_or_default();
            let layers = entry["Layers"].as_array().cloned().unwrap_or_default();
            check_layer_count(layers.len(), diff_ids.len())?;
            for (layer, diff) in layers.iter().zip(&diff_ids) {
                let rel = layer.as_str().unwrap_or("");
                if rel.starts_with('/') || rel.split('/').any(|p| p == "..") {
                    return Err(RuntimeError::unsafe_entry(rel, "layer path outside the archive"));
                }
                let diff: Digest = diff.as_str().unwrap_or("").parse()?;
                self.import_layer(&dir.join(rel), None, &diff)?;
            }
            let mut names: Vec<String> = entry["RepoTags"]
                .as_array()
                .map(|tags| {
                    tags.iter().filter_map(|t| t.as_str()).filter_map(|t| normalize_name(t).ok()).collect()
                })
                .unwrap_or_default();
            self.put_blob(&Digest::of(&config), &config)?;
            names.extend(name.map(String::from));
            out.push(self.record_image(&config, names)?);
        }
        Ok(out)
    }

    fn config_bytes(&self, image: &ImageRecord) -> Result<Vec<u8>> {
        let id: Digest = image.id.parse()?;
        let path = self.root.join("blobs/sha256").join(id.hex());
        fs::read(&path).map_err(RuntimeError::io("read image config", &path))
    }

    fn layer_tar(&self, diff: &str) -> Result<PathBuf> {
        let diff: Digest = diff.parse()?;
        let path = self.root.join("blobs/sha256").join(diff.hex());
        if !path.is_file() {
            return Err(RuntimeError::BadImage(format!("layer {diff} has no stored tar to export")));
        }
        Ok(path)
    }

    /// Writes the image as an OCI image layout: a directory, or a tar file when `dest` ends in
    /// `.tar`. Layers are the uncompressed tars the image was made of, so digests are unchanged.
    pub fn export_oci(&self, reference: &str, dest: &Path) -> Result<()> {
        let image = self.get(reference)?;
        let config = self.config_bytes(&image)?;
        let scratch = self.scratch()?;
        let out = scratch.path().join("layout");
        let blobs = out.join("blobs/sha256");
        fs::create_dir_all(&blobs).map_err(RuntimeError::io("create", &blobs))?;
        let copy = |src: &Path, hex: &str| -> Result<u64> {
            fs::copy(src, blobs.join(hex)).map_err(RuntimeError::io("copy blob", src))
        };
        let mut layers = Vec::new();
        for diff in &image.diff_ids {
            let path = self.layer_tar(diff)?;
            let digest: Digest = diff.parse()?;
            let size = copy(&path, digest.hex())?;
            layers.push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": diff, "size": size
            }));
        }
        let id: Digest = image.id.parse()?;
        fs::write(blobs.join(id.hex()), &config).map_err(RuntimeError::io("write", &blobs))?;
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": image.id, "size": config.len()},
            "layers": layers,
        }))
        .expect("json");
        let manifest_digest = Digest::of(&manifest);
        fs::write(blobs.join(manifest_digest.hex()), &manifest).map_err(RuntimeError::io("write", &blobs))?;
        let mut descriptor = serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest.to_string(),
            "size": manifest.len(),
        });
        if let Some(name) = image.names.first() {
            let tag = name.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
            descriptor["annotations"] = serde_json::json!({
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": tag,
            });
        }
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [descriptor]});
        fs::write(out.join("index.json"), serde_json::to_vec(&index).expect("json"))
            .map_err(RuntimeError::io("write", &out))?;
        fs::write(out.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
            .map_err(RuntimeError::io("write", &out))?;
        publish(&out, dest)
    }

    /// Writes the image as a docker-save archive (`docker load` reads it): a tar file, or a
    /// directory when `dest` does not end in `.tar`.
    pub fn export_docker(&self, reference: &str, dest: &Path) -> Result<()> {
        let image = self.get(reference)?;
        let config = self.config_bytes(&image)?;
        let scratch = self.scratch()?;
        let out = scratch.path().join("save");
        fs::create_dir_all(&out).map_err(RuntimeError::io("create", &out))?;
        let id: Digest = image.id.parse()?;
        let config_name = format!("{}.json", id.hex());
        fs::write(out.join(&config_name), &config).map_err(RuntimeError::io("write", &out))?;
        let mut layers = Vec::new();
        for diff in &image.diff_ids {
            let digest: Digest = diff.parse()?;
            let dir = out.join(digest.hex());
            fs::create_dir_all(&dir).map_err(RuntimeError::io("create", &dir))?;
            fs::copy(self.layer_tar(diff)?, dir.join("layer.tar"))
                .map_err(RuntimeError::io("copy layer", &dir))?;
            layers.push(format!("{}/layer.tar", digest.hex()));
        }
        let manifest =
            serde_json::json!([{"Config": config_name, "RepoTags": image.names, "Layers": layers}]);
        fs::write(out.join("manifest.json"), serde_json::to_vec(&manifest).expect("json"))
            .map_err(RuntimeError::io("write", &out))?;
        publish(&out, dest)
    }

    /// Whether removing `reference` from `image` only takes a name away (the image has others),
    /// as `docker rmi NAME` of an image with several names does: containers may still use it.
    pub fn untags_only(image: &ImageRecord, reference: &str) -> bool {
        normalize_name(reference).is_ok_and(|name| image.names.contains(&name) && image.names.len() > 1)
    }

    /// Removes a name, and the image when no name is left (layers shared with other images
    /// stay).
    pub fn remove(&self, reference: &str) -> Result<()> {
        let mut image = self.get(reference)?;
        if Self::untags_only(&image, reference)
            && let Ok(name) = normalize_name(reference)
        {
            image.names.retain(|n| *n != name);
            return self.save_record(&image);
        }
        let id: Digest = image.id.parse()?;
        let path = self.root.join("configs").join(format!("{}.json", id.hex()));
        fs::remove_file(&path).map_err(RuntimeError::io("remove", &path))?;
        let used: BTreeMap<String, ()> =
            self.list()?.into_iter().flat_map(|i| i.diff_ids).map(|d| (d, ())).collect();
        for diff in &image.diff_ids {
            if !used.contains_key(diff) {
                let dir = self.layer_dir(&diff.parse()?);
                let _ = fs::remove_dir_all(dir);
            }
        }
        Ok(())
    }
}

/// Moves the finished export `out` to `dest`: as a tar file when `dest` ends in `.tar`, else as a
/// directory (which must not exist yet).
fn publish(out: &Path, dest: &Path) -> Result<()> {
    if dest.exists() {
        return Err(RuntimeError::invalid(
            "export destination",
            dest.display().to_string(),
            "already exists",
        ));
    }
    if dest.extension().is_some_and(|e| e == "tar") {
        let tmp = dest.with_extension("tar.partial");
        let file = File::create(&tmp).map_err(RuntimeError::io("create", &tmp))?;
        let mut builder = tar::Builder::new(std::io::BufWriter::new(file));
        builder.mode(tar::HeaderMode::Deterministic);
        builder.append_dir_all(".", out).map_err(RuntimeError::io("write archive", &tmp))?;
        builder
            .into_inner()
            .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
            .map_err(RuntimeError::io("write archive", &tmp))?;
        fs::rename(&tmp, dest).map_err(RuntimeError::io("rename", dest))
    } else {
        copy_dir(out, dest)
    }
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).map_err(RuntimeError::io("create", to))?;
    for entry in fs::read_dir(from).map_err(RuntimeError::io("read", from))? {
        let entry = entry.map_err(RuntimeError::io("read", from))?;
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target).map_err(RuntimeError::io("copy", &target))?;
        }
    }
    Ok(())
}

/// A manifest and its config must name the same number of layers.
fn check_layer_count(layers: usize, diff_ids: usize) -> Result<()> {
    if layers != diff_ids {
        return Err(RuntimeError::BadImage(format!(
            "the manifest lists {layers} layers but the image config {diff_ids} diff ids"
        )));
    }
    Ok(())
}

/// Whether the file at `path` is gzipped, and whether what it holds (after gunzip) starts with
/// a tar header (the `ustar` magic every archive docker, skopeo and weft write carries).
fn archive_kind(path: &Path) -> Result<(bool, bool)> {
    let mut head = [0u8; 2];
    let n = File::open(path).and_then(|mut f| f.read(&mut head)).map_err(RuntimeError::io("read", path))?;
    let gzip = n == 2 && head == [0x1f, 0x8b];
    let file = File::open(path).map_err(RuntimeError::io("open", path))?;
    let mut block = vec![0u8; 512];
    let filled = if gzip {
        read_up_to(&mut GzDecoder::new(file), &mut block)
    } else {
        read_up_to(&mut BufReader::new(file), &mut block)
    };
    let tar = filled == 512 && &block[257..262] == b"ustar";
    Ok((gzip, tar))
}

/// Reads until `buf` is full or the input ends (or fails); how much was read.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> usize {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => filled += n,
        }
    }
    filled
}
