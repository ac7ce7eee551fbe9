//! The layer cache. Every step has a key chained from its parent's: a stage starts from its base
//! (`scratch`, an image id, or the key of the stage it is built on) and each instruction hashes
//! its text into the key, RUN also the environment it runs with, COPY/ADD also a checksum of the
//! content it copies and `--chown`. A key whose layer is still in the store is a hit:
//! `<store>/build-cache/<key>.json` names the layer's diff id; `<key>.time` keeps when the step
//! was first built.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::image::{Digest, ImageStore};
use crate::{Result, RuntimeError};

/// The sha256 of `parts`, each framed by its length, as hex.
fn framed(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    hex::encode(h.finalize())
}

/// A step's cache key (64 hex characters).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey(String);

impl CacheKey {
    /// The key a `FROM scratch` stage starts from.
    pub(crate) fn scratch() -> CacheKey {
        CacheKey(framed(&[b"scratch"]))
    }

    /// The key a stage on image `id` starts from.
    pub(crate) fn image(id: &str) -> CacheKey {
        CacheKey(framed(&[id.as_bytes()]))
    }

    /// The key after a metadata-only instruction.
    pub(crate) fn metadata(&self, text: &str) -> CacheKey {
        CacheKey(framed(&[self.0.as_bytes(), text.as_bytes()]))
    }

    /// The key of a RUN with the config's `env` and the ARG values `args` in scope. The order
    /// of `env` entries does not matter.
    pub(crate) fn run(&self, text: &str, env: &[String], args: &BTreeMap<String, String>) -> CacheKey {
        let mut env: Vec<&str> = env.iter().map(String::as_str).collect();
        env.sort_unstable();
        let args: Vec<String> = args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        CacheKey(framed(&[
            self.0.as_bytes(),
            text.as_bytes(),
            env.join("\n").as_bytes(),
            args.join("\n").as_bytes(),
        ]))
    }

    /// The key of a COPY/ADD of content whose checksum is `content`, with `--chown` `chown`.
    pub(crate) fn copy(&self, text: &str, content: &ContentSum, chown: Option<&str>) -> CacheKey {
        CacheKey(framed(&[
            self.0.as_bytes(),
            text.as_bytes(),
            content.0.as_bytes(),
            chown.unwrap_or("").as_bytes(),
        ]))
    }

    /// The hex key.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// The checksum of what a COPY/ADD copies: where from, and the names, modes and contents of
/// every file (symlink targets, not what they point at).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ContentSum(String);

/// Computes a [`ContentSum`].
#[derive(Debug, Clone)]
pub(crate) struct ContentHasher(Sha256);

impl ContentHasher {
    /// Starts a checksum of content from `origin` (`context`, a stage's key or an image id).
    pub(crate) fn new(origin: &str) -> ContentHasher {
        let mut h = Sha256::new();
        h.update(origin.as_bytes());
        ContentHasher(h)
    }

    /// Adds the tree at `path`, named `rel` (relative to its source root), leaving out what
    /// `skip` says (asked with paths relative to the source root).
    pub(crate) fn add(&mut self, path: &Path, rel: &Path, skip: &dyn Fn(&Path) -> bool) -> Result<()> {
        if skip(rel) {
            return Ok(());
        }
        let meta = fs::symlink_metadata(path).map_err(RuntimeError::io("read", path))?;
        self.0.update(rel.as_os_str().as_encoded_bytes());
        self.0.update(meta.mode().to_be_bytes());
        if meta.is_file() {
            let mut file = File::open(path).map_err(RuntimeError::io("open", path))?;
            let mut buf = vec![0u8; 65536];
            loop {
                let n = file.read(&mut buf).map_err(RuntimeError::io("read", path))?;
                if n == 0 {
                    break;
                }
                self.0.update(&buf[..n]);
            }
        } else if meta.is_symlink() {
            let target = fs::read_link(path).map_err(RuntimeError::io("read link", path))?;
            self.0.update(target.as_os_str().as_encoded_bytes());
        } else if meta.is_dir() {
            let mut names: Vec<_> = fs::read_dir(path)
                .map_err(RuntimeError::io("list", path))?
                .flatten()
                .map(|e| e.file_name())
                .collect();
            names.sort();
            for name in names {
                self.add(&path.join(&name), &rel.join(&name), skip)?;
            }
        }
        Ok(())
    }

    /// The checksum.
    pub(crate) fn finish(self) -> ContentSum {
        ContentSum(hex::encode(self.0.finalize()))
    }
}

/// A cache record on disk.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    diff_id: String,
}

/// The layer cache of an image store.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LayerCache<'a> {
    store: &'a ImageStore,
}

impl<'a> LayerCache<'a> {
    /// The cache kept in `store`.
    pub(crate) fn new(store: &'a ImageStore) -> LayerCache<'a> {
        LayerCache { store }
    }

    fn dir(&self) -> PathBuf {
        self.store.root().join("build-cache")
    }

    fn path(&self, key: &CacheKey) -> PathBuf {
        self.dir().join(format!("{}.json", key.as_str()))
    }

    /// The layer cached under `key`, if its record reads and the layer is still in the store.
    pub(crate) fn lookup(&self, key: &CacheKey) -> Option<Digest> {
        let entry: Entry = serde_json::from_slice(&fs::read(self.path(key)).ok()?).ok()?;
        let diff: Digest = entry.diff_id.parse().ok()?;
        self.store.layer_dir(&diff).is_dir().then_some(diff)
    }

    /// When the step of `key` was first built (RFC 3339), if recorded: a step taken from the
    /// cache keeps its first time, as Docker's history shows it, so a build served wholly from
    /// the cache gives the same image id.
    pub(crate) fn created(&self, key: &CacheKey) -> Option<String> {
        let text = fs::read_to_string(self.dir().join(format!("{}.time", key.as_str()))).ok()?;
        let text = text.trim();
        (!text.is_empty()).then(|| text.to_string())
    }

    /// Records `created` as the time of `key`'s step.
    pub(crate) fn record_created(&self, key: &CacheKey, created: &str) -> Result<()> {
        let dir = self.dir();
        fs::create_dir_all(&dir).map_err(RuntimeError::io("create", &dir))?;
        let path = dir.join(format!("{}.time", key.as_str()));
        fs::write(&path, created).map_err(RuntimeError::io("write", &path))
    }

    /// Records `diff` as the layer of `key`.
    pub(crate) fn store(&self, key: &CacheKey, diff: &Digest) -> Result<()> {
        let dir = self.dir();
        fs::create_dir_all(&dir).map_err(RuntimeError::io("create", &dir))?;
        let path = self.path(key);
        let entry = serde_json::to_vec(&Entry { diff_id: diff.to_string() })
            .map_err(|e| RuntimeError::BadImage(format!("cache record: {e}")))?;
        fs::write(&path, entry).map_err(RuntimeError::io("write", &path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("weft-cache-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn args(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn env(entries: &[&str]) -> Vec<String> {
        entries.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn keys_are_stable() {
        // Pinned: a change here invalidates every cache on every node.
        assert_eq!(
            CacheKey::scratch().as_str(),
            "d36224063b9b0eb08e9d0cdf0a8db4813a94f4a9d35a50fd9c16518762c88e96"
        );
        let base = CacheKey::image("sha256:abc");
        assert_eq!(base, CacheKey::image("sha256:abc"));
        assert_eq!(base.metadata("ENV A=1"), base.metadata("ENV A=1"));
        let run = |e: &[&str]| base.run("RUN make", &env(e), &args(&[("V", "1")]));
        assert_eq!(run(&["A=1"]), run(&["A=1"]));
    }

    #[test]
    fn keys_change_with_parent_instruction_env_and_args_but_not_env_order() {
        let base = CacheKey::scratch();
        let other = CacheKey::image("sha256:abc");
        let e = env(&["PATH=/bin", "A=1", "B=2"]);
        let no_args = args(&[]);
        let key = base.run("RUN make", &e, &no_args);
        assert_eq!(key, base.run("RUN make", &env(&["B=2", "PATH=/bin", "A=1"]), &no_args));
        assert_ne!(key, other.run("RUN make", &e, &no_args), "parent");
        assert_ne!(key, base.run("RUN make all", &e, &no_args), "instruction");
        assert_ne!(key, base.run("RUN make", &env(&["PATH=/bin", "A=1", "B=3"]), &no_args), "env value");
        assert_ne!(key, base.run("RUN make", &e, &args(&[("V", "1")])), "args");
        // An ARG is not an ENV of the same name.
        let as_env = base.run("RUN x", &env(&["V=1"]), &no_args);
        assert_ne!(as_env, base.run("RUN x", &[], &args(&[("V", "1")])));
        assert_ne!(base.metadata("ENV A=1"), base.metadata("ENV A=2"));
        assert_ne!(base.metadata("ENV A=1"), other.metadata("ENV A=1"));
    }

    #[test]
    fn copy_keys_follow_content_mode_chown_and_dockerignore() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("copy");
        fs::create_dir_all(dir.join("src/sub")).unwrap();
        fs::write(dir.join("src/a"), "one").unwrap();
        fs::write(dir.join("src/sub/b"), "two").unwrap();
        fs::write(dir.join("src/ignored"), "x").unwrap();
        std::os::unix::fs::symlink("a", dir.join("src/link")).unwrap();
        let skip = |rel: &Path| rel == Path::new("src/ignored");
        let sum = |origin: &str| {
            let mut h = ContentHasher::new(origin);
            h.add(&dir.join("src"), Path::new("src"), &skip).unwrap();
            h.finish()
        };
        let base = CacheKey::scratch();
        let key = |content: &ContentSum| base.copy("COPY src /src", content, None);
        let first = sum("context");
        assert_eq!(key(&first), key(&sum("context")), "stable");
        assert_ne!(key(&first), key(&sum("stage-key")), "origin");
        assert_ne!(key(&first), base.copy("COPY src /dst", &first, None), "instruction");
        assert_ne!(key(&first), base.copy("COPY src /src", &first, Some("1:1")), "chown");

        fs::write(dir.join("src/ignored"), "changed").unwrap();
        assert_eq!(sum("context"), first, "an ignored file does not count");
        fs::write(dir.join("src/sub/b"), "TWO").unwrap();
        let second = sum("context");
        assert_ne!(second, first, "content");
        fs::set_permissions(dir.join("src/sub/b"), fs::Permissions::from_mode(0o600)).unwrap();
        assert_ne!(sum("context"), second, "mode");
        let third = sum("context");
        fs::remove_file(dir.join("src/link")).unwrap();
        std::os::unix::fs::symlink("sub/b", dir.join("src/link")).unwrap();
        assert_ne!(sum("context"), third, "symlink target");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn lookup_needs_the_record_and_the_layer() {
        let dir = temp_dir("store");
        let store = ImageStore::open(dir.join("images")).unwrap();
        let cache = LayerCache::new(&store);
        let key = CacheKey::scratch().metadata("RUN true");
        let diff: Digest = format!("sha256:{}", "0f".repeat(32)).parse().unwrap();
        assert_eq!(cache.lookup(&key), None);
        cache.store(&key, &diff).unwrap();
        assert_eq!(cache.lookup(&key), None, "the layer is not in the store");
        fs::create_dir_all(store.layer_dir(&diff)).unwrap();
        assert_eq!(cache.lookup(&key), Some(diff));
        assert_eq!(cache.lookup(&CacheKey::scratch()), None);
        fs::remove_dir_all(&dir).unwrap();
    }
}
