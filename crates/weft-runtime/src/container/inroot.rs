//! Paths inside a container's root, resolved as the container would resolve them: every symlink
//! of the image (absolute or with `..`) stays inside the root (openat2 `RESOLVE_IN_ROOT`), so an
//! image whose `/etc` points at a host directory cannot make weft write or mount there. Mounts
//! are made onto the descriptors so found (the new mount API: `open_tree`, `move_mount`,
//! `mount_setattr`), never onto a host path built by string joining.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

/// `AT_RECURSIVE` of mount_setattr and open_tree (not exported by every libc version).
const AT_RECURSIVE: libc::c_uint = 0x8000;

/// What to create when the path does not exist yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Create {
    /// Nothing: it must exist.
    Nothing,
    /// A directory (and every missing parent).
    Dir,
    /// An empty regular file (and every missing parent directory).
    File,
}

fn cstr(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(rc: libc::c_long) -> io::Result<libc::c_long> {
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

/// openat2 below `dir` with `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`.
fn openat2(dir: &OwnedFd, path: &Path, flags: libc::c_int, mode: libc::mode_t) -> io::Result<OwnedFd> {
    let path = cstr(if path.as_os_str().is_empty() { Path::new(".") } else { path })?;
    // SAFETY: open_how is a plain struct of integers; zeroed is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.mode = if flags & libc::O_CREAT != 0 { mode as u64 } else { 0 };
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: openat2 with a valid dir fd, a NUL-terminated path and a properly sized open_how.
    let fd = check(unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    })?;
    // SAFETY: the kernel returned a new descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// Opens the directory `root` itself (an O_PATH descriptor that later lookups are relative to).
pub(crate) fn open_root(root: &Path) -> io::Result<OwnedFd> {
    let path = cstr(root)?;
    // SAFETY: open with a NUL-terminated path.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An O_PATH descriptor of `path` resolved inside `root`, creating it as `create` says. Parent
/// directories are made one component at a time, each looked up inside the root again, so no
/// symlink can take the walk outside.
pub(crate) fn open_in_root(root: &OwnedFd, path: &Path, create: Create) -> io::Result<OwnedFd> {
    open_in_root_depth(root, path, create, 0)
}

/// Symlinks followed by hand (dangling ones whose target must be created) before giving up, as
/// the kernel's own limit.
const MAX_LINKS: u32 = 40;

fn open_in_root_depth(root: &OwnedFd, path: &Path, create: Create, depth: u32) -> io::Result<OwnedFd> {
    if depth > MAX_LINKS {
        return Err(io::Error::from_raw_os_error(libc::ELOOP));
    }
    let rel: std::path::PathBuf =
        path.components().filter(|c| !matches!(c, Component::RootDir | Component::CurDir)).collect();
    match openat2(root, &rel, libc::O_PATH, 0) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) && create != Create::Nothing => {}
        other => return other,
    }
    let parent = rel.parent().unwrap_or(Path::new(""));
    let name = rel.file_name().ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    let parent_fd = if parent.as_os_str().is_empty() {
        openat2(root, Path::new("."), libc::O_PATH | libc::O_DIRECTORY, 0)?
    } else {
        open_in_root_depth(root, parent, Create::Dir, depth)?
    };
    // The parent is a real directory inside the root; create the last component in it.
    let name_c = cstr(Path::new(name))?;
    let dir_fd = openat2(&parent_fd, Path::new("."), libc::O_DIRECTORY | libc::O_RDONLY, 0)?;
    // A dangling symlink: create what it points at, resolved inside the root as the container
    // will resolve it (relative targets from the link's directory).
    if let Some(target) = read_link_at(&dir_fd, &name_c) {
        let next = if target.is_absolute() { target } else { parent.join(target) };
        return open_in_root_depth(root, &next, create, depth + 1);
    }
    match create {
        Create::Dir => {
            // SAFETY: mkdirat on a directory fd we own with a NUL-terminated name.
            let rc = unsafe { libc::mkdirat(dir_fd.as_raw_fd(), name_c.as_ptr(), 0o755) };
            if rc != 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST) {
                return Err(io::Error::last_os_error());
            }
        }
        Create::File => {
            // SAFETY: openat with O_NOFOLLOW on a directory fd we own.
            let fd = unsafe {
                libc::openat(
                    dir_fd.as_raw_fd(),
                    name_c.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                    0o644,
                )
            };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: closing the descriptor we just opened.
            unsafe { libc::close(fd) };
        }
        Create::Nothing => unreachable!("returned above"),
    }
    openat2(&parent_fd, Path::new(name), libc::O_PATH, 0)
}

/// The target of `name` in `dir` when it is a symlink.
fn read_link_at(dir: &OwnedFd, name: &CString) -> Option<std::path::PathBuf> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: readlinkat into a buffer of the given size.
    let n = unsafe { libc::readlinkat(dir.as_raw_fd(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n <= 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(std::path::PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(buf)))
}

/// Removes `name` in the directory `dir` (resolved inside `root`) when it is a symlink, so a file
/// can be put there instead (an image's `/etc/hosts -> /somewhere`).
pub(crate) fn unlink_symlink(root: &OwnedFd, dir: &Path, name: &str) -> io::Result<()> {
    let dir_fd = open_in_root(root, dir, Create::Dir)?;
    let dir_fd = openat2(&dir_fd, Path::new("."), libc::O_DIRECTORY | libc::O_RDONLY, 0)?;
    let name = cstr(Path::new(name))?;
    // SAFETY: fstatat/unlinkat on a directory fd we own, with AT_SYMLINK_NOFOLLOW.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstatat(dir_fd.as_raw_fd(), name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) == 0
            && st.st_mode & libc::S_IFMT == libc::S_IFLNK
            && libc::unlinkat(dir_fd.as_raw_fd(), name.as_ptr(), 0) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The `/proc/self/fd/N` path of a descriptor: what mount(2) takes as a target so that the
/// mount lands on exactly the object the descriptor names.
pub(crate) fn fd_path(fd: &OwnedFd) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// A detached copy of the mount tree at `source` (a host path), recursive when `recursive`.
pub(crate) fn clone_tree(source: &Path, recursive: bool) -> io::Result<OwnedFd> {
    let path = cstr(source)?;
    let mut flags = libc::OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    // SAFETY: open_tree with a NUL-terminated path and integer flags.
    let fd = check(unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) })?;
    // SAFETY: a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// Makes a detached tree (from [`clone_tree`]) read-only, every mount of it when `recursive`.
pub(crate) fn set_readonly(tree: &OwnedFd, recursive: bool) -> io::Result<()> {
    // SAFETY: mount_attr is plain integers.
    let mut attr: libc::mount_attr = unsafe { std::mem::zeroed() };
    attr.attr_set = libc::MOUNT_ATTR_RDONLY;
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    // SAFETY: mount_setattr on a tree fd we own with a correctly sized mount_attr.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    })?;
    Ok(())
}

/// Attaches a detached tree onto the object `target` names.
pub(crate) fn attach(tree: &OwnedFd, target: &OwnedFd) -> io::Result<()> {
    // SAFETY: move_mount between two descriptors we own, both by empty path.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH,
        )
    })?;
    Ok(())
}

/// Binds host path `source` onto `target` (a descriptor from [`open_in_root`]), read-only
/// (recursively) when asked.
pub(crate) fn bind(source: &Path, target: &OwnedFd, recursive: bool, readonly: bool) -> io::Result<()> {
    let tree = clone_tree(source, recursive)?;
    if readonly {
        set_readonly(&tree, recursive)?;
    }
    attach(&tree, target)
}

/// Binds the mount at `path` (inside the root) onto itself read-only, recursively: Docker's
/// read-only paths.
pub(crate) fn freeze(root: &OwnedFd, path: &Path) -> io::Result<()> {
    let target = open_in_root(root, path, Create::Nothing)?;
    let tree = clone_tree(&fd_path(&target), true)?;
    set_readonly(&tree, true)?;
    attach(&tree, &target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("weft-inroot-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn symlinks_resolve_inside_the_root_and_dangling_ones_are_created_there() {
        let base = scratch("links");
        let (root_dir, outside) = (base.join("root"), base.join("outside"));
        std::fs::create_dir_all(&root_dir).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        // /etc -> the host directory (absolute), /var -> ../../outside (relative, climbing).
        std::os::unix::fs::symlink(&outside, root_dir.join("etc")).unwrap();
        std::os::unix::fs::symlink("../../outside", root_dir.join("var")).unwrap();
        let root = open_root(&root_dir).unwrap();
        unlink_symlink(&root, Path::new("/etc"), "hosts").unwrap();
        open_in_root(&root, Path::new("/etc/hosts"), Create::File).unwrap();
        open_in_root(&root, Path::new("/var/lib/x"), Create::Dir).unwrap();
        let inner = root_dir.join(outside.strip_prefix("/").unwrap());
        assert!(inner.join("hosts").is_file(), "created inside the root");
        assert!(root_dir.join("outside/lib/x").is_dir(), "relative links are clamped at the root");
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "nothing outside the root");
        // A symlink in the last component is replaced, never written through.
        std::os::unix::fs::symlink("/proc/self/environ", inner.join("resolv.conf")).unwrap();
        unlink_symlink(&root, Path::new("/etc"), "resolv.conf").unwrap();
        assert!(std::fs::symlink_metadata(inner.join("resolv.conf")).is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
