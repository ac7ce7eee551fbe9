//! A stage's file system as its layers stack, read without mounting: what COPY, ADD and WORKDIR
//! need to know of the image they write into (is the destination a directory already, with what
//! mode and owner; where does a path lead once the image's own symlinks are followed).
//!
//! The union follows overlayfs: the top-most layer holding a path wins, unless a whiteout (a 0:0
//! character device), an opaque directory or a non-directory in a higher layer hides it.

use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

/// How many symlinks a path may pass through before it is taken as a loop (Linux's limit).
const MAX_LINKS: usize = 40;

/// The union of a stage's layer directories, bottom first.
#[derive(Debug, Clone)]
pub(crate) struct ImageView {
    layers: Vec<PathBuf>,
}

fn is_whiteout(meta: &fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

fn is_opaque(dir: &Path) -> bool {
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else { return false };
    let mut value = [0u8; 1];
    // SAFETY: valid C strings and a buffer of the given size.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    n == 1 && value[0] == b'y'
}

/// The normal components of `path` (an image path, absolute or relative to the root).
fn parts(path: &Path) -> Vec<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p.to_os_string()),
            _ => None,
        })
        .collect()
}

impl ImageView {
    /// The view of `layers` (bottom first).
    pub(crate) fn new(layers: Vec<PathBuf>) -> ImageView {
        ImageView { layers }
    }

    /// Where `rel` (relative to the image root, nothing followed) is stored, if the union shows it.
    pub(crate) fn lookup(&self, rel: &Path) -> Option<PathBuf> {
        let parts = parts(rel);
        if parts.is_empty() {
            return self.layers.last().cloned();
        }
        for layer in self.layers.iter().rev() {
            let mut cur = layer.clone();
            for (i, part) in parts.iter().enumerate() {
                cur.push(part);
                let Ok(meta) = fs::symlink_metadata(&cur) else {
                    // Not in this layer: an opaque directory on the way hides the lower ones.
                    if i > 0 && cur.parent().is_some_and(is_opaque) {
                        return None;
                    }
                    break;
                };
                if is_whiteout(&meta) {
                    return None;
                }
                if i == parts.len() - 1 {
                    return Some(cur);
                }
                if !meta.is_dir() {
                    return None;
                }
            }
        }
        None
    }

    /// The metadata of `rel` as the union shows it (not following a final symlink).
    pub(crate) fn metadata(&self, rel: &Path) -> Option<fs::Metadata> {
        self.lookup(rel).and_then(|p| fs::symlink_metadata(p).ok())
    }

    /// `path` with every symlink of the image on the way followed, inside the image's root (an
    /// absolute target starts again at the root, `..` stops at it), as the kernel would inside
    /// the container; returned relative to the root. A missing component ends the following:
    /// the rest is taken as it is. A loop is cut after 40 links.
    pub(crate) fn resolve(&self, path: &Path) -> PathBuf {
        let mut pending: Vec<OsString> = parts(path);
        pending.reverse();
        let mut done = PathBuf::new();
        let mut links = 0;
        while let Some(part) = pending.pop() {
            if part == ".." {
                done.pop();
                continue;
            }
            let candidate = done.join(&part);
            let link = self
                .lookup(&candidate)
                .filter(|p| fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink()));
            match link.and_then(|p| fs::read_link(p).ok()) {
                Some(target) if links < MAX_LINKS => {
                    links += 1;
                    if target.is_absolute() {
                        done = PathBuf::new();
                    }
                    let mut more: Vec<OsString> = target
                        .components()
                        .filter_map(|c| match c {
                            Component::Normal(p) => Some(p.to_os_string()),
                            Component::ParentDir => Some(OsString::from("..")),
                            _ => None,
                        })
                        .collect();
                    more.reverse();
                    pending.extend(more);
                }
                _ => done = candidate,
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("weft-view-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_top_layer_wins_and_symlinks_are_followed_inside_the_root() {
        let dir = tmp("union");
        let (low, high) = (dir.join("low"), dir.join("high"));
        fs::create_dir_all(low.join("etc")).unwrap();
        fs::create_dir_all(low.join("run/app")).unwrap();
        fs::write(low.join("etc/a"), "low").unwrap();
        fs::create_dir_all(low.join("var")).unwrap();
        std::os::unix::fs::symlink("/run", low.join("var/run")).unwrap();
        std::os::unix::fs::symlink("../../../../etc", low.join("escape")).unwrap();
        std::os::unix::fs::symlink("loop", low.join("loop")).unwrap();
        fs::create_dir_all(high.join("etc")).unwrap();
        fs::write(high.join("etc/a"), "high").unwrap();
        let view = ImageView::new(vec![low.clone(), high.clone()]);
        assert_eq!(view.lookup(Path::new("etc/a")), Some(high.join("etc/a")));
        assert_eq!(view.lookup(Path::new("/run/app")), Some(low.join("run/app")));
        assert_eq!(view.lookup(Path::new("nope")), None);
        assert!(view.metadata(Path::new("etc")).unwrap().is_dir());
        assert_eq!(view.resolve(Path::new("/var/run/app/x")), PathBuf::from("run/app/x"));
        assert_eq!(view.resolve(Path::new("/escape/a")), PathBuf::from("etc/a"), "`..` stops at the root");
        assert_eq!(view.resolve(Path::new("/new/dir/")), PathBuf::from("new/dir"));
        let _ = view.resolve(Path::new("/loop/x"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
