//! Layer tars: a directory diff (a build container's writable upper dir, or files COPY/ADD
//! takes from the context or another stage) written as an uncompressed tar in OCI's layer form,
//! with its diff id (the sha256 of the tar) computed while it is written.
//!
//! Entries are written in sorted order with every parent directory before its children, so the
//! same tree always gives the same tar. overlayfs's own markers become OCI's: a whiteout (a 0:0
//! character device) is written as `.wh.<name>`, an opaque directory (`trusted.overlay.opaque`
//! set to `y`) gets a `.wh..wh..opq` entry.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::image::Digest;
use crate::{Result, RuntimeError};

/// The name of OCI's opaque-directory marker.
const OPAQUE: &str = ".wh..wh..opq";
/// The prefix of OCI's whiteout entries.
const WHITEOUT: &str = ".wh.";

/// Ownership forced on every entry (`--chown`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owner {
    /// The user id.
    pub(crate) uid: u64,
    /// The group id.
    pub(crate) gid: u64,
}

/// How a tree is added: ownership, mode, and which source paths to leave out.
#[derive(Clone, Copy)]
pub(crate) struct TreeOptions<'a> {
    /// Ownership for every entry, or each file's own when `None`.
    pub(crate) owner: Option<Owner>,
    /// Permission bits for every file and directory (`--chmod`), or each one's own when `None`.
    pub(crate) mode: Option<u32>,
    /// Called with each path relative to the source root; true leaves it (and what is below it)
    /// out.
    pub(crate) skip: &'a dyn Fn(&Path) -> bool,
}

impl std::fmt::Debug for TreeOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TreeOptions").field("owner", &self.owner).finish_non_exhaustive()
    }
}

/// A finished layer tar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layer {
    /// Where the tar is.
    pub(crate) path: PathBuf,
    /// The digest of the uncompressed tar.
    pub(crate) diff_id: Digest,
    /// Its size in bytes.
    pub(crate) size: u64,
}

/// Hashes and counts what is written through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A layer tar being written.
pub(crate) struct LayerWriter {
    builder: tar::Builder<HashingWriter<BufWriter<File>>>,
    path: PathBuf,
    /// Directories already written.
    dirs: BTreeSet<PathBuf>,
}

impl std::fmt::Debug for LayerWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerWriter").field("path", &self.path).finish_non_exhaustive()
    }
}

/// A tar header with the fields the builder sets.
struct Meta {
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    size: u64,
}

impl Meta {
    /// A root-owned entry with no time and no content.
    fn plain(kind: tar::EntryType, mode: u32) -> Meta {
        Meta { kind, mode, uid: 0, gid: 0, mtime: 0, size: 0 }
    }

    fn header(&self) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(self.kind);
        h.set_mode(self.mode);
        h.set_uid(self.uid);
        h.set_gid(self.gid);
        h.set_mtime(self.mtime);
        h.set_size(self.size);
        h
    }
}

impl LayerWriter {
    /// Starts a tar at `path` (created or truncated).
    pub(crate) fn create(path: impl Into<PathBuf>) -> Result<LayerWriter> {
        let path = path.into();
        let file = File::create(&path).map_err(RuntimeError::io("create", &path))?;
        let sink = HashingWriter { inner: BufWriter::new(file), hasher: Sha256::new(), bytes: 0 };
        Ok(LayerWriter { builder: tar::Builder::new(sink), path, dirs: BTreeSet::new() })
    }

    fn io(&self) -> impl FnOnce(io::Error) -> RuntimeError + use<> {
        RuntimeError::io("write layer", self.path.clone())
    }

    fn append(&mut self, meta: &Meta, rel: &Path, data: impl Read) -> Result<()> {
        let err = self.io();
        self.builder.append_data(&mut meta.header(), rel, data).map_err(err)
    }

    /// Writes the parent directories of `rel` that have not been written yet (root-owned,
    /// 0755).
    fn parents(&mut self, rel: &Path) -> Result<()> {
        let mut acc = PathBuf::new();
        let parents: Vec<_> = rel.parent().map(|p| p.components().collect()).unwrap_or_default();
        for c in parents {
            acc.push(c);
            if self.dirs.insert(acc.clone()) {
                self.append(&Meta::plain(tar::EntryType::Directory, 0o755), &acc.clone(), io::empty())?;
            }
        }
        Ok(())
    }

    /// Writes OCI's whiteout for `rel`: `.wh.<name>` beside it, meaning "deleted here".
    pub(crate) fn whiteout(&mut self, rel: &Path, mtime: u64) -> Result<()> {
        self.parents(rel)?;
        let name = format!("{WHITEOUT}{}", rel.file_name().map(|n| n.to_string_lossy()).unwrap_or_default());
        let meta = Meta { mtime, ..Meta::plain(tar::EntryType::Regular, 0o644) };
        self.append(&meta, &rel.with_file_name(name), io::empty())
    }

    /// Writes directory `rel` (unless it was written already) with the given mode, owner and
    /// time: a directory on the way to what a COPY writes.
    pub(crate) fn dir(&mut self, rel: &Path, mode: u32, owner: Owner, mtime: u64) -> Result<()> {
        if rel.as_os_str().is_empty() || !self.dirs.insert(rel.to_path_buf()) {
            return Ok(());
        }
        self.parents(rel)?;
        let meta =
            Meta { kind: tar::EntryType::Directory, mode, uid: owner.uid, gid: owner.gid, mtime, size: 0 };
        self.append(&meta, rel, io::empty())
    }

    /// Adds the file-system object at `src` (not what is below it) as `rel`, with `owner`
    /// overriding its ownership and `chmod` its permission bits (not a symlink's). Sockets and
    /// devices other than whiteouts are left out.
    pub(crate) fn add(
        &mut self,
        src: &Path,
        rel: &Path,
        owner: Option<Owner>,
        chmod: Option<u32>,
    ) -> Result<()> {
        self.parents(rel)?;
        let meta = fs::symlink_metadata(src).map_err(RuntimeError::io("read", src))?;
        let owner = owner.unwrap_or(Owner { uid: u64::from(meta.uid()), gid: u64::from(meta.gid()) });
        let entry = |kind, mode, size| Meta {
            kind,
            mode,
            uid: owner.uid,
            gid: owner.gid,
            mtime: meta.mtime().max(0) as u64,
            size,
        };
        let mode = chmod.unwrap_or(meta.mode() & 0o7777);
        let ft = meta.file_type();
        if ft.is_dir() {
            if self.dirs.insert(rel.to_path_buf()) {
                self.append(&entry(tar::EntryType::Directory, mode, 0), rel, io::empty())?;
            }
        } else if ft.is_symlink() {
            let target = fs::read_link(src).map_err(RuntimeError::io("read link", src))?;
            let err = self.io();
            let mut h = entry(tar::EntryType::Symlink, 0o777, 0).header();
            self.builder.append_link(&mut h, rel, &target).map_err(err)?;
        } else if ft.is_file() {
            let file = File::open(src).map_err(RuntimeError::io("open", src))?;
            self.append(&entry(tar::EntryType::Regular, mode, meta.len()), rel, file)?;
        } else if ft.is_char_device() && meta.rdev() == 0 {
            // An overlayfs whiteout in a writable layer.
            self.whiteout(rel, meta.mtime().max(0) as u64)?;
        } else if ft.is_fifo() {
            self.append(&entry(tar::EntryType::Fifo, mode, 0), rel, io::empty())?;
        }
        Ok(())
    }

    /// Adds `src` as `dest` and, for a directory, everything below it (sorted). `src_rel` is
    /// `src` relative to its source root, what `options.skip` is asked about.
    pub(crate) fn add_tree(
        &mut self,
        src: &Path,
        dest: &Path,
        src_rel: &Path,
        options: TreeOptions<'_>,
    ) -> Result<()> {
        if (options.skip)(src_rel) {
            return Ok(());
        }
        self.add(src, dest, options.owner, options.mode)?;
        let meta = fs::symlink_metadata(src).map_err(RuntimeError::io("read", src))?;
        if meta.is_dir() {
            if opaque(src) {
                self.append(&Meta::plain(tar::EntryType::Regular, 0o644), &dest.join(OPAQUE), io::empty())?;
            }
            for name in sorted_names(src)? {
                self.add_tree(&src.join(&name), &dest.join(&name), &src_rel.join(&name), options)?;
            }
        }
        Ok(())
    }

    /// COPY of a directory: what is below `src` lands below `dest` (the directory itself is not
    /// copied: `dest` is written by the caller, as the image has it or as created).
    pub(crate) fn add_dir_contents(
        &mut self,
        src: &Path,
        dest: &Path,
        src_rel: &Path,
        options: TreeOptions<'_>,
    ) -> Result<()> {
        for name in sorted_names(src)? {
            self.add_tree(&src.join(&name), &dest.join(&name), &src_rel.join(&name), options)?;
        }
        Ok(())
    }

    /// A build container's writable upper dir, leaving out the mount points weft's container
    /// setup made in it (empty `proc`, `dev`, `sys`, and empty `/etc/hosts`, `/etc/hostname`,
    /// `/etc/resolv.conf`).
    pub(crate) fn add_upper_dir(&mut self, upper: &Path) -> Result<()> {
        let setup_mount_point = |rel: &Path| {
            let p = upper.join(rel);
            match rel.to_str() {
                Some("proc" | "dev" | "sys") => {
                    fs::read_dir(&p).map(|mut d| d.next().is_none()).unwrap_or(false)
                }
                Some("etc/hosts" | "etc/hostname" | "etc/resolv.conf") => {
                    fs::metadata(&p).map(|m| m.len() == 0).unwrap_or(false)
                }
                _ => false,
            }
        };
        let options = TreeOptions { owner: None, mode: None, skip: &setup_mount_point };
        for name in sorted_names(upper)? {
            let rel = Path::new(&name);
            self.add_tree(&upper.join(rel), rel, rel, options)?;
        }
        Ok(())
    }

    /// ADD of a local tar archive (gzipped or not): its entries land below `dest`. An entry
    /// that would escape `dest` is refused as [`RuntimeError::UnsafeEntry`].
    pub(crate) fn extract_archive(&mut self, archive: &Path, dest: &Path) -> Result<()> {
        let file = File::open(archive).map_err(RuntimeError::io("open", archive))?;
        let reader: Box<dyn Read> =
            if gzipped(archive) { Box::new(flate2::read::GzDecoder::new(file)) } else { Box::new(file) };
        let read_err = || RuntimeError::io("read archive", archive);
        let mut tar = tar::Archive::new(reader);
        for entry in tar.entries().map_err(read_err())? {
            let mut entry = entry.map_err(read_err())?;
            let path = entry.path().map_err(read_err())?.into_owned();
            if path.components().any(|c| matches!(c, Component::ParentDir | Component::RootDir)) {
                return Err(RuntimeError::unsafe_entry(
                    path.display().to_string(),
                    "escapes the destination",
                ));
            }
            let rel: PathBuf = dest.join(normal_components(&path));
            if rel.as_os_str().is_empty() {
                continue;
            }
            self.parents(&rel)?;
            let mut header = entry.header().clone();
            if header.entry_type().is_dir() {
                self.dirs.insert(rel.clone());
            }
            let err = self.io();
            self.builder.append_data(&mut header, &rel, &mut entry).map_err(err)?;
        }
        Ok(())
    }

    /// Ends the tar and returns it with its digest.
    pub(crate) fn finish(self) -> Result<Layer> {
        let err = self.io();
        let path = self.path;
        let mut sink = self.builder.into_inner().map_err(RuntimeError::io("finish layer", &path))?;
        sink.flush().map_err(err)?;
        let diff_id: Digest = format!("sha256:{}", hex::encode(sink.hasher.finalize())).parse()?;
        Ok(Layer { path, diff_id, size: sink.bytes })
    }
}

/// The entries of `dir`, sorted by name.
fn sorted_names(dir: &Path) -> Result<Vec<std::ffi::OsString>> {
    let mut names: Vec<_> =
        fs::read_dir(dir).map_err(RuntimeError::io("list", dir))?.flatten().map(|e| e.file_name()).collect();
    names.sort();
    Ok(names)
}

/// `path` with everything but its normal components dropped.
pub(crate) fn normal_components(path: &Path) -> PathBuf {
    path.components().filter(|c| matches!(c, Component::Normal(_))).collect()
}

/// Whether overlayfs marked `dir` opaque (what was below it in lower layers is hidden).
fn opaque(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else { return false };
    let mut value = [0u8; 4];
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

fn gzipped(path: &Path) -> bool {
    let mut magic = [0u8; 2];
    File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && magic == [0x1f, 0x8b]
}

/// Whether `path` is a tar archive ADD extracts: gzip, or a tar with the `ustar` magic.
pub(crate) fn is_archive(path: &Path) -> bool {
    let mut magic = [0u8; 262];
    let n = File::open(path).and_then(|mut f| f.read(&mut magic)).unwrap_or(0);
    (n >= 2 && magic[..2] == [0x1f, 0x8b]) || (n >= 262 && &magic[257..262] == b"ustar")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("weft-layer-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Path → (type, mode, uid, content or link target) of every entry, in tar order.
    fn read_back(tar: &Path) -> Vec<(String, tar::EntryType, u32, u64, String)> {
        let mut archive = tar::Archive::new(File::open(tar).unwrap());
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let path = e.path().unwrap().display().to_string();
                let h = e.header().clone();
                let mut body = String::new();
                if let Some(target) = e.link_name().unwrap() {
                    body = target.display().to_string();
                } else {
                    e.read_to_string(&mut body).unwrap();
                }
                (path, h.entry_type(), h.mode().unwrap(), h.uid().unwrap(), body)
            })
            .collect()
    }

    /// A whiteout as overlayfs makes it: a 0:0 character device. Linux lets anyone make that
    /// one device (since 5.8); false when this kernel does not.
    fn make_whiteout(path: &Path) -> bool {
        nix::sys::stat::mknod(path, nix::sys::stat::SFlag::S_IFCHR, nix::sys::stat::Mode::empty(), 0).is_ok()
    }

    #[test]
    fn an_upper_dir_becomes_a_sorted_tar_with_whiteouts_and_its_digest() {
        let dir = temp_dir("upper");
        let upper = dir.join("upper");
        fs::create_dir_all(upper.join("etc")).unwrap();
        fs::create_dir_all(upper.join("app/bin")).unwrap();
        fs::create_dir_all(upper.join("proc")).unwrap(); // weft's mount point: left out
        fs::write(upper.join("etc/hosts"), "").unwrap(); // likewise
        fs::write(upper.join("etc/motd"), "hello\n").unwrap();
        fs::write(upper.join("app/bin/run"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(upper.join("app/bin/run"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("bin/run", upper.join("app/start")).unwrap();
        let device = make_whiteout(&upper.join("etc/gone"));

        let mut writer = LayerWriter::create(dir.join("layer.tar")).unwrap();
        writer.add_upper_dir(&upper).unwrap();
        if !device {
            // No whiteout device on this kernel: the marker the device path writes.
            writer.whiteout(Path::new("etc/gone"), 0).unwrap();
        }
        let layer = writer.finish().unwrap();

        let bytes = fs::read(&layer.path).unwrap();
        assert_eq!(layer.diff_id, Digest::of(&bytes));
        assert_eq!(layer.size, bytes.len() as u64);

        let entries = read_back(&layer.path);
        let paths: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(paths, ["app", "app/bin", "app/bin/run", "app/start", "etc", "etc/.wh.gone", "etc/motd"]);
        let by_path: BTreeMap<&str, _> = entries.iter().map(|e| (e.0.as_str(), e)).collect();
        assert_eq!(by_path["app/bin/run"].1, tar::EntryType::Regular);
        assert_eq!(by_path["app/bin/run"].2, 0o755);
        assert_eq!(by_path["app/bin/run"].4, "#!/bin/sh\n");
        assert_eq!(by_path["app/start"].1, tar::EntryType::Symlink);
        assert_eq!(by_path["app/start"].4, "bin/run");
        assert_eq!(by_path["etc/.wh.gone"].1, tar::EntryType::Regular);
        assert_eq!(by_path["etc/.wh.gone"].4, "");
        assert_eq!(by_path["etc/motd"].4, "hello\n");

        // The same tree gives the same tar.
        let mut again = LayerWriter::create(dir.join("again.tar")).unwrap();
        again.add_upper_dir(&upper).unwrap();
        if !device {
            again.whiteout(Path::new("etc/gone"), 0).unwrap();
        }
        assert_eq!(again.finish().unwrap().diff_id, layer.diff_id);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn copied_trees_get_parents_owner_and_skips() {
        let dir = temp_dir("copy");
        let src = dir.join("ctx/src");
        fs::create_dir_all(src.join("keep")).unwrap();
        fs::write(src.join("keep/a"), "a").unwrap();
        fs::write(src.join("skip.me"), "x").unwrap();
        fs::write(dir.join("ctx/file"), "f").unwrap();

        let skip = |rel: &Path| rel == Path::new("src/skip.me");
        let owner = Owner { uid: 1000, gid: 1000 };
        let options = TreeOptions { owner: Some(owner), mode: None, skip: &skip };
        let mut writer = LayerWriter::create(dir.join("layer.tar")).unwrap();
        // The destination directory is the caller's to write (as the image has it, or created).
        writer.dir(Path::new("opt/app"), 0o750, owner, 0).unwrap();
        writer.dir(Path::new("opt/app"), 0o700, owner, 0).unwrap();
        writer.add_dir_contents(&src, Path::new("opt/app"), Path::new("src"), options).unwrap();
        writer.add(&dir.join("ctx/file"), Path::new("opt/file"), None, Some(0o600)).unwrap();
        let layer = writer.finish().unwrap();

        let entries = read_back(&layer.path);
        let paths: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(paths, ["opt", "opt/app", "opt/app/keep", "opt/app/keep/a", "opt/file"]);
        assert_eq!((entries[0].2, entries[0].3), (0o755, 0), "made-up parents are root's, 0755");
        assert_eq!(
            (entries[1].2, entries[1].3),
            (0o750, 1000),
            "a directory is written once, as first asked"
        );
        assert_eq!(entries[3].3, 1000);
        assert_eq!(entries[4].2, 0o600, "--chmod");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn archives_extract_below_the_destination_and_may_not_escape() {
        let dir = temp_dir("archive");
        let make = |name: &str, entry: &str| {
            let path = dir.join(name);
            let mut b = tar::Builder::new(File::create(&path).unwrap());
            let mut h = tar::Header::new_gnu();
            h.set_size(2);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            // Written raw, so that `..` gets into the archive.
            h.as_old_mut().name[..entry.len()].copy_from_slice(entry.as_bytes());
            h.set_cksum();
            b.append(&h, &b"hi"[..]).unwrap();
            b.into_inner().unwrap();
            path
        };
        let good = make("good.tar", "x/y.txt");
        let bad = make("bad.tar", "../evil");
        assert!(is_archive(&good));
        fs::write(dir.join("plain.txt"), "not an archive").unwrap();
        assert!(!is_archive(&dir.join("plain.txt")));

        let mut writer = LayerWriter::create(dir.join("layer.tar")).unwrap();
        writer.extract_archive(&good, Path::new("srv")).unwrap();
        let err = writer.extract_archive(&bad, Path::new("srv")).unwrap_err();
        assert!(matches!(err, RuntimeError::UnsafeEntry { .. }), "{err}");
        let layer = writer.finish().unwrap();
        let paths: Vec<String> = read_back(&layer.path).into_iter().map(|e| e.0).collect();
        assert_eq!(paths, ["srv", "srv/x", "srv/x/y.txt"]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
