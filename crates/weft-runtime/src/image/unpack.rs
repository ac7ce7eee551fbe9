//! Unpacking untrusted layer tarballs.
//!
//! Every entry is checked before anything is written: no absolute paths, no `..`, nothing written
//! through a symlink (so a link to `/etc` cannot carry a later entry out of the layer), hard links
//! only to files already in the layer, relative symlinks that stay inside it; device nodes are
//! made as they are (the container's device allow-list decides what can be opened).
//! OCI whiteouts (`.wh.NAME`, `.wh..wh..opq`) become overlayfs whiteouts (a 0/0 character device,
//! the `trusted.overlay.opaque` attribute), so layers stack directly as overlayfs lower dirs.

use std::ffi::{CString, OsStr};
use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tar::EntryType;

use crate::{Result, RuntimeError};

/// What an unpack did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UnpackStats {
    /// Entries written.
    pub entries: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Whiteouts converted.
    pub whiteouts: u64,
    /// Device nodes made.
    pub devices: u64,
    /// Device nodes left out because this process may not make them (entry paths).
    pub skipped_devices: Vec<String>,
}

/// The components of an entry's path, or why it is refused. `None` for the layer root itself.
fn components(raw: &[u8]) -> Result<Option<Vec<Vec<u8>>>> {
    let shown = || String::from_utf8_lossy(raw).into_owned();
    if raw.first() == Some(&b'/') {
        return Err(RuntimeError::unsafe_entry(shown(), "absolute path"));
    }
    if raw.contains(&0) {
        return Err(RuntimeError::unsafe_entry(shown(), "NUL in path"));
    }
    let mut parts = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => continue,
            b".." => return Err(RuntimeError::unsafe_entry(shown(), "'..' in path")),
            p => parts.push(p.to_vec()),
        }
    }
    Ok(if parts.is_empty() { None } else { Some(parts) })
}

/// Makes sure every parent of `parts` is a real directory inside `root` (creating missing ones),
/// never a symlink.
fn prepare_parents(root: &Path, parts: &[Vec<u8>], entry: &str) -> Result<PathBuf> {
    let mut path = root.to_path_buf();
    for p in &parts[..parts.len() - 1] {
        path.push(OsStr::from_bytes(p));
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_dir() => {}
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(RuntimeError::unsafe_entry(
                    entry,
                    "a parent directory is a symlink: writing through it could escape the layer",
                ));
            }
            Ok(_) => return Err(RuntimeError::unsafe_entry(entry, "a parent is not a directory")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&path).map_err(RuntimeError::io("create directory", &path))?;
                fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
                    .map_err(RuntimeError::io("chmod", &path))?;
            }
            Err(e) => return Err(RuntimeError::io("inspect", &path)(e)),
        }
    }
    Ok(path.join(OsStr::from_bytes(&parts[parts.len() - 1])))
}

/// Removes whatever is at `path` (an earlier entry of the same name), unless it is a directory
/// and `keep_dir` is set.
fn clear(path: &Path, keep_dir: bool) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => {
            if !keep_dir {
                fs::remove_dir_all(path).map_err(RuntimeError::io("replace", path))?;
            }
        }
        Ok(_) => fs::remove_file(path).map_err(RuntimeError::io("replace", path))?,
        Err(_) => {}
    }
    Ok(())
}

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("paths from tar entries have no NUL")
}

fn mknod_whiteout(path: &Path) -> Result<()> {
    nix::sys::stat::mknod(path, nix::sys::stat::SFlag::S_IFCHR, nix::sys::stat::Mode::empty(), 0)
        .map_err(|e| RuntimeError::io("create whiteout", path)(io::Error::from_raw_os_error(e as i32)))
}

fn set_opaque(dir: &Path) -> Result<()> {
    let name = CString::new("trusted.overlay.opaque").expect("static");
    let path = c_path(dir);
    // SAFETY: both strings are NUL-terminated and outlive the call; the value is one byte.
    let rc = unsafe { libc::lsetxattr(path.as_ptr(), name.as_ptr(), b"y".as_ptr().cast(), 1, 0) };
    if rc != 0 {
        return Err(RuntimeError::io("mark opaque", dir)(io::Error::last_os_error()));
    }
    Ok(())
}

fn lchown(path: &Path, uid: u64, gid: u64) -> Result<()> {
    let uid = u32::try_from(uid)
        .map_err(|_| RuntimeError::unsafe_entry(path.display().to_string(), "uid out of range"))?;
    let gid = u32::try_from(gid)
        .map_err(|_| RuntimeError::unsafe_entry(path.display().to_string(), "gid out of range"))?;
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(RuntimeError::io("chown", path))
}

fn set_mtime(path: &Path, mtime: u64) {
    let times = [
        libc::timespec { tv_sec: mtime as libc::time_t, tv_nsec: 0 },
        libc::timespec { tv_sec: mtime as libc::time_t, tv_nsec: 0 },
    ];
    let c = c_path(path);
    // SAFETY: valid NUL-terminated path and a two-element timespec array, as utimensat requires.
    unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
}

/// Whether a relative symlink target, resolved from the link's directory, stays inside the layer.
fn relative_target_stays_inside(link_parts: &[Vec<u8>], target: &[u8]) -> bool {
    let mut depth = link_parts.len() as i64 - 1;
    for part in target.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => depth += 1,
        }
    }
    true
}

/// Unpacks the uncompressed layer tar `reader` into the empty directory `root`. On error, `root`
/// holds a partial layer: the caller unpacks into a scratch directory and removes it.
pub fn unpack_layer<R: Read>(reader: R, root: &Path) -> Result<UnpackStats> {
    let mut archive = tar::Archive::new(reader);
    let mut stats = UnpackStats::default();
    let mut dir_times: Vec<(PathBuf, u64)> = Vec::new();
    let entries = archive.entries().map_err(RuntimeError::io("read layer", root))?;
    for entry in entries {
        let mut entry = entry.map_err(RuntimeError::io("read layer entry", root))?;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let Some(parts) = components(&raw)? else { continue };
        let header = entry.header();
        let kind = header.entry_type();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let uid = header.uid().unwrap_or(0);
        let gid = header.gid().unwrap_or(0);
        let mtime = header.mtime().unwrap_or(0);
        let name = parts.last().expect("non-empty").clone();

        // Whiteouts.
        if let Some(hidden) = name.strip_prefix(b".wh.") {
            let target = prepare_parents(root, &parts, &shown)?;
            let dir = target.parent().expect("entry has a parent").to_path_buf();
            if hidden == b".wh..opq" {
                set_opaque(&dir)?;
            } else {
                if hidden.is_empty() || hidden == b"." || hidden == b".." || hidden.contains(&b'/') {
                    return Err(RuntimeError::unsafe_entry(shown, "malformed whiteout"));
                }
                let path = dir.join(OsStr::from_bytes(hidden));
                clear(&path, false)?;
                mknod_whiteout(&path)?;
            }
            stats.whiteouts += 1;
            continue;
        }

        let path = prepare_parents(root, &parts, &shown)?;
        match kind {
            EntryType::Directory => {
                match fs::symlink_metadata(&path) {
                    Ok(meta) if meta.is_dir() => {}
                    _ => {
                        clear(&path, false)?;
                        fs::create_dir(&path).map_err(RuntimeError::io("create directory", &path))?;
                    }
                }
                lchown(&path, uid, gid)?;
                fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                    .map_err(RuntimeError::io("chmod", &path))?;
                dir_times.push((path, mtime));
            }
            EntryType::Regular | EntryType::Continuous => {
                clear(&path, false)?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .mode(0o600)
                    .open(&path)
                    .map_err(RuntimeError::io("create file", &path))?;
                stats.bytes +=
                    io::copy(&mut entry, &mut file).map_err(RuntimeError::io("write file", &path))?;
                drop(file);
                lchown(&path, uid, gid)?;
                fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                    .map_err(RuntimeError::io("chmod", &path))?;
                set_mtime(&path, mtime);
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| RuntimeError::unsafe_entry(&shown, "symlink without a target"))?
                    .into_owned();
                if target.first() != Some(&b'/') && !relative_target_stays_inside(&parts, &target) {
                    return Err(RuntimeError::unsafe_entry(
                        shown,
                        "relative symlink target climbs out of the layer",
                    ));
                }
                clear(&path, false)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &path)
                    .map_err(RuntimeError::io("create symlink", &path))?;
                lchown(&path, uid, gid)?;
                set_mtime(&path, mtime);
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| RuntimeError::unsafe_entry(&shown, "hard link without a target"))?
                    .into_owned();
                let target_parts = components(&target)
                    .map_err(|_| RuntimeError::unsafe_entry(&shown, "hard link target outside the layer"))?
                    .ok_or_else(|| RuntimeError::unsafe_entry(&shown, "hard link to the layer root"))?;
                // The target must already be a file of this layer, reached without symlinks.
                let mut probe = root.to_path_buf();
                for (i, p) in target_parts.iter().enumerate() {
                    probe.push(OsStr::from_bytes(p));
                    let meta = fs::symlink_metadata(&probe).map_err(|_| {
                        RuntimeError::unsafe_entry(&shown, "hard link target is not in the layer")
                    })?;
                    let last = i == target_parts.len() - 1;
                    if meta.file_type().is_symlink() || (last && meta.is_dir()) || (!last && !meta.is_dir()) {
                        return Err(RuntimeError::unsafe_entry(
                            &shown,
                            "hard link target is not a regular file of the layer",
                        ));
                    }
                }
                clear(&path, false)?;
                fs::hard_link(&probe, &path).map_err(RuntimeError::io("create hard link", &path))?;
            }
            EntryType::Fifo => {
                clear(&path, false)?;
                nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(mode)).map_err(|e| {
                    RuntimeError::io("create fifo", &path)(io::Error::from_raw_os_error(e as i32))
                })?;
                lchown(&path, uid, gid)?;
            }
            EntryType::Char
                if header.device_major().ok().flatten() == Some(0)
                    && header.device_minor().ok().flatten() == Some(0) =>
            {
                // Already in overlayfs whiteout form.
                clear(&path, false)?;
                mknod_whiteout(&path)?;
                stats.whiteouts += 1;
            }
            EntryType::Char | EntryType::Block => {
                // Device nodes (debootstrap'd and older distribution images carry /dev entries)
                // are made as Docker makes them: a container reaches only what its device
                // allow-list in the cgroup permits, whatever nodes its image holds. Where they
                // cannot be made (no CAP_MKNOD), they are left out, as rootless engines do.
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                let kind = if kind == EntryType::Char { libc::S_IFCHR } else { libc::S_IFBLK };
                clear(&path, false)?;
                let dev = libc::makedev(major, minor);
                // SAFETY: mknod on a NUL-terminated path inside the layer, made by prepare_parents.
                let made = unsafe { libc::mknod(c_path(&path).as_ptr(), kind | mode, dev) };
                if made != 0 {
                    let e = io::Error::last_os_error();
                    if e.raw_os_error() == Some(libc::EPERM) {
                        stats.skipped_devices.push(shown);
                        continue;
                    }
                    return Err(RuntimeError::io("create device node", &path)(e));
                }
                lchown(&path, uid, gid)?;
                // mknod applied the umask.
                fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                    .map_err(RuntimeError::io("chmod", &path))?;
                stats.devices += 1;
            }
            EntryType::XGlobalHeader
            | EntryType::XHeader
            | EntryType::GNULongName
            | EntryType::GNULongLink => continue,
            other => {
                return Err(RuntimeError::unsafe_entry(shown, format!("unsupported entry type {other:?}")));
            }
        }
        stats.entries += 1;
    }
    for (path, mtime) in dir_times.into_iter().rev() {
        set_mtime(&path, mtime);
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised_or_refused() {
        assert_eq!(components(b"./a/b/").unwrap(), Some(vec![b"a".to_vec(), b"b".to_vec()]));
        assert_eq!(components(b"./").unwrap(), None);
        assert!(components(b"/etc/passwd").is_err());
        assert!(components(b"a/../../etc").is_err());
    }

    #[test]
    fn relative_symlinks_must_stay_inside() {
        let link = vec![b"usr".to_vec(), b"bin".to_vec(), b"sh".to_vec()];
        assert!(relative_target_stays_inside(&link, b"../../bin/busybox"));
        assert!(!relative_target_stays_inside(&link, b"../../../etc/passwd"));
        assert!(relative_target_stays_inside(&link, b"busybox"));
    }
}
