//! weft's state files (node identity, TLS material, image records, container configs, network
//! configs, the last seen cluster state, a container's run state): every one is written through
//! [`write`], so a reader never sees half a file, and read through [`read`] / [`read_json`], so a
//! torn or unreadable file is an error that names it instead of passing for "nothing there".

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A state file operation that failed, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file system refused.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The file is there but its content does not decode (torn, or not weft's).
    #[error("state file {} is unreadable: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// How much a write must survive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// A crash or power loss must not lose it once `write` returns: the file and its directory
    /// are fsynced (identity, keys, configs, the cluster state).
    Durable,
    /// Only atomicity: readers see the old or the new content, never a mix, but a power loss may
    /// lose the write. For records of processes that do not survive a reboot anyway (a
    /// container's run and exit state), where an fsync per container start would cost more than
    /// it protects.
    Volatile,
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> FileError {
    let path = path.to_path_buf();
    move |source| FileError::Io { op, path, source }
}

/// Replaces `path` with `bytes` atomically (a temporary file beside it, then rename), created
/// with `mode` if new, fsynced as `durability` says.
pub fn write(path: &Path, bytes: &[u8], mode: u32, durability: Durability) -> Result<(), FileError> {
    let name = path
        .file_name()
        .ok_or_else(|| FileError::Corrupt { path: path.to_path_buf(), reason: "not a file path".into() })?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let written = (|| -> Result<(), FileError> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io("create", &tmp))?;
        file.write_all(bytes).map_err(io("write", &tmp))?;
        if durability == Durability::Durable {
            file.sync_all().map_err(io("fsync", &tmp))?;
        }
        fs::rename(&tmp, path).map_err(io("rename into place", path))?;
        if durability == Durability::Durable {
            fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io("fsync directory of", path))?;
        }
        Ok(())
    })();
    if written.is_err() {
        let _ignored_cleanup = fs::remove_file(&tmp);
    }
    written
}

/// [`write`] of `value` as JSON.
pub fn write_json<T: serde::Serialize>(
    path: &Path,
    value: &T,
    mode: u32,
    durability: Durability,
) -> Result<(), FileError> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| FileError::Corrupt { path: path.to_path_buf(), reason: e.to_string() })?;
    write(path, &bytes, mode, durability)
}

/// The content of `path`, or `None` when there is no such file.
pub fn read(path: &Path) -> Result<Option<Vec<u8>>, FileError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("read", path)(e)),
    }
}

/// The JSON value in `path`, or `None` when there is no such file; a file that does not decode
/// is [`FileError::Corrupt`].
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, FileError> {
    match read(path)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| FileError::Corrupt { path: path.to_path_buf(), reason: e.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("weft-fs-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn writes_replace_whole_files_and_reads_name_what_is_wrong() {
        let dir = scratch("rw");
        let path = dir.join("conf.json");
        assert!(read_json::<Vec<u32>>(&path).unwrap().is_none(), "missing is None, not an error");
        write_json(&path, &vec![1, 2, 3], 0o600, Durability::Durable).unwrap();
        assert_eq!(read_json::<Vec<u32>>(&path).unwrap(), Some(vec![1, 2, 3]));
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        write(&path, b"[4]", 0o600, Durability::Volatile).unwrap();
        assert_eq!(read_json::<Vec<u32>>(&path).unwrap(), Some(vec![4]));
        // Nothing temporary is left beside it.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        // A torn file is an error naming it.
        fs::write(&path, b"[4, 5").unwrap();
        let err = read_json::<Vec<u32>>(&path).unwrap_err().to_string();
        assert!(err.contains("conf.json") && err.contains("unreadable"), "{err}");
        // A write that cannot happen says where, and leaves the old file.
        let err = write(&dir.join("no/such/dir/f"), b"x", 0o600, Durability::Durable).unwrap_err();
        assert!(err.to_string().contains("no/such/dir"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
