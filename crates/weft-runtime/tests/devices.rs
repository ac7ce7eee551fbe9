//! Device rules enforced by the kernel: Docker's default list applied to a real v1 devices group
//! and, as a BPF program, to a real cgroup2 group; a forked child inside may write /dev/null and
//! create a node for the machine's disk, but not open that node. Needs root (skips otherwise).

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use weft_runtime::cgroup::{Cgroup, Hierarchy, Limits};
use weft_runtime::devices::{self, Access, DeviceKind, DeviceRule};

static N: AtomicU32 = AtomicU32::new(0);

fn unique() -> u32 {
    N.fetch_add(1, Ordering::SeqCst)
}

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    eprintln!("skipped: the device cgroup tests need root");
    false
}

/// A real block device of this machine, `(name, major, minor)` from `/sys/block/*/dev`, that
/// the test process itself may open for reading (disks first, then loop, ram and zram devices):
/// so that a refusal inside the group comes from the group's rules. Probed with a node made in
/// `scratch`; `None` when there is none (a sandbox may refuse the disk to everyone).
fn block_device(scratch: &Path) -> Option<(String, u32, u32)> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/sys/block").unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(dev) = fs::read_to_string(entry.path().join("dev")) else { continue };
        let (major, minor) = dev.trim().split_once(':').unwrap();
        let virtual_ = ["loop", "ram", "zram"].iter().any(|p| name.starts_with(p));
        found.push((virtual_, name, major.parse::<u32>().unwrap(), minor.parse::<u32>().unwrap()));
    }
    found.sort();
    for (_, name, major, minor) in found {
        let node = scratch.join(format!("probe-{name}"));
        let path = cstring(&node);
        // SAFETY: a valid NUL-terminated path.
        let made = unsafe { libc::mknod(path.as_ptr(), libc::S_IFBLK | 0o600, libc::makedev(major, minor)) };
        let readable = made == 0 && fs::File::open(&node).is_ok();
        let _ = fs::remove_file(&node);
        if readable {
            return Some((name, major, minor));
        }
        eprintln!("{name} {major}:{minor} is not readable outside the group either; trying the next");
    }
    None
}

/// A cgroup directory (or a Cgroup) removed on drop, after killing what is left in it.
struct Guard {
    dirs: Vec<PathBuf>,
    scratch: PathBuf,
}

impl Guard {
    fn new(dirs: Vec<PathBuf>) -> Guard {
        let scratch =
            std::env::temp_dir().join(format!("weft-test-devnodes-{}-{}", std::process::id(), unique()));
        fs::create_dir_all(&scratch).unwrap();
        Guard { dirs, scratch }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        for dir in &self.dirs {
            if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
                for pid in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    // SAFETY: kill has no memory preconditions; the pids are the test's children.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        for dir in &self.dirs {
            let _ = fs::remove_dir(dir);
        }
        let _ = fs::remove_dir_all(&self.scratch);
    }
}

/// What a child inside the group got: 0 for success, the errno otherwise.
#[derive(Debug, PartialEq, Eq)]
struct Outcomes {
    write_null: i32,
    mknod_disk: i32,
    read_disk: i32,
}

fn cstring(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// Forks a child that joins the groups (writes "0" to each `cgroup.procs`), then opens
/// /dev/null for writing, creates a block node `major:minor` at `node` and opens it for reading.
/// Only async-signal-safe calls in the child; everything is prepared before the fork.
fn probe(procs: &[PathBuf], node: &Path, major: u32, minor: u32) -> Outcomes {
    let procs: Vec<CString> = procs.iter().map(|p| cstring(p)).collect();
    let node = cstring(node);
    let null = c"/dev/null";
    let mut pipe = [0i32; 2];
    // SAFETY: a valid two-int array.
    assert_eq!(unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: the child only makes async-signal-safe calls on memory prepared above, then _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: in the child; raw calls on NUL-terminated strings and a stack buffer.
        unsafe {
            let errno = || *libc::__errno_location();
            let mut out = [0i32; 3];
            for file in &procs {
                let fd = libc::open(file.as_ptr(), libc::O_WRONLY);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    out = [-1, -1, errno()];
                    libc::write(pipe[1], out.as_ptr().cast(), 12);
                    libc::_exit(1);
                }
                libc::close(fd);
            }
            let fd = libc::open(null.as_ptr(), libc::O_WRONLY);
            out[0] = if fd < 0 { errno() } else { 0 };
            libc::close(fd);
            let made = libc::mknod(node.as_ptr(), libc::S_IFBLK | 0o600, libc::makedev(major, minor));
            out[1] = if made < 0 { errno() } else { 0 };
            let fd = libc::open(node.as_ptr(), libc::O_RDONLY);
            out[2] = if fd < 0 { errno() } else { 0 };
            libc::close(fd);
            libc::write(pipe[1], out.as_ptr().cast(), 12);
            libc::_exit(0);
        }
    }
    // SAFETY: closing our copy of the write end, reading into a 12-byte buffer, reaping the child.
    unsafe {
        libc::close(pipe[1]);
        let mut out = [0i32; 3];
        let n = libc::read(pipe[0], out.as_mut_ptr().cast(), 12);
        libc::close(pipe[0]);
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        assert_eq!(n, 12, "the child reported");
        assert!(out[0] != -1, "the child could not join its group: errno {}", out[2]);
        Outcomes { write_null: out[0], mknod_disk: out[1], read_disk: out[2] }
    }
}

const EXPECTED: Outcomes = Outcomes { write_null: 0, mknod_disk: 0, read_disk: libc::EPERM };

/// The node the child made is a working device outside the group: its refusal came from the
/// group's rules.
fn assert_readable_outside(node: &Path) {
    fs::File::open(node)
        .unwrap_or_else(|e| panic!("the test process itself cannot read {}: {e}", node.display()));
}

#[test]
fn v1_docker_defaults_are_enforced() {
    if !root() {
        return;
    }
    let devices_root = Path::new("/sys/fs/cgroup/devices");
    if !devices_root.join("devices.allow").is_file() {
        eprintln!("skipped: no cgroup v1 devices controller at {}", devices_root.display());
        return;
    }
    let dir = devices_root.join(format!("weft-test-devices-{}-{}", std::process::id(), unique()));
    fs::create_dir(&dir).unwrap();
    let guard = Guard::new(vec![dir.clone()]);
    devices::apply_v1(&dir, &DeviceRule::docker_default()).unwrap();
    let list = fs::read_to_string(dir.join("devices.list")).unwrap();
    for line in ["c 1:3 rwm", "c *:* m", "b *:* m", "c 136:* rwm", "c 10:200 rwm", "c 5:1 rwm"] {
        assert!(list.lines().any(|l| l == line), "{line} in {list}");
    }
    assert!(!list.contains("a *:* rwm"), "{list}");
    let Some((name, major, minor)) = block_device(&guard.scratch) else {
        eprintln!("skipped: no block device this process may read, so a refusal would prove nothing");
        return;
    };
    let node = guard.scratch.join(&name);
    assert_eq!(probe(&[dir.join("cgroup.procs")], &node, major, minor), EXPECTED, "{name} {major}:{minor}");
    assert_readable_outside(&node);
}

#[test]
fn v1_cgroup_joins_and_removes_the_devices_controller() {
    if !root() {
        return;
    }
    let h = Hierarchy::detect("/sys/fs/cgroup");
    if !matches!(h, Hierarchy::V1(_)) || !Path::new("/sys/fs/cgroup/devices/devices.allow").is_file() {
        eprintln!("skipped: no cgroup v1 devices controller");
        return;
    }
    let rel = format!("weft-test-devcg-{}-{}", std::process::id(), unique());
    let group = Cgroup::create(&h, &rel, &Limits::default()).unwrap();
    let guard = Guard::new(group.dirs());
    let dir = PathBuf::from("/sys/fs/cgroup/devices").join(&rel);
    assert!(group.dirs().contains(&dir), "{:?}", group.dirs());
    assert!(group.procs_files().contains(&dir.join("cgroup.procs")));
    assert!(dir.is_dir());
    group.set_devices(&DeviceRule::docker_default()).unwrap();
    let Some((name, major, minor)) = block_device(&guard.scratch) else {
        eprintln!("skipped: no block device this process may read, so a refusal would prove nothing");
        return;
    };
    let node = guard.scratch.join(&name);
    assert_eq!(probe(&group.procs_files(), &node, major, minor), EXPECTED);
    // Rules that give the disk back, set again on the same group.
    let mut rules = DeviceRule::docker_default();
    rules.push(DeviceRule::allow(DeviceKind::Block, Some(major), Some(minor), Access::READ));
    group.set_devices(&rules).unwrap();
    let again = guard.scratch.join(format!("{name}-again"));
    assert_eq!(probe(&group.procs_files(), &again, major, minor), Outcomes { read_disk: 0, ..EXPECTED });
    group.remove().unwrap();
    assert!(!dir.exists(), "the devices directory is removed with the group");
}

/// A cgroup2 mount to attach device programs to: the hybrid layout's `unified`, or the root.
fn cgroup2_mount() -> Option<PathBuf> {
    const CGROUP2_SUPER_MAGIC: libc::c_long = 0x6367_7270;
    for dir in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
        let path = cstring(Path::new(dir));
        // SAFETY: a valid path and a zeroed statfs buffer.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::statfs(path.as_ptr(), &mut st) } == 0
            && st.f_type as libc::c_long == CGROUP2_SUPER_MAGIC
        {
            return Some(PathBuf::from(dir));
        }
    }
    None
}

#[test]
fn v2_device_program_is_enforced_and_replaced() {
    if !root() {
        return;
    }
    let Some(mount) = cgroup2_mount() else {
        eprintln!("skipped: no cgroup2 mount at /sys/fs/cgroup/unified or /sys/fs/cgroup");
        return;
    };
    let dir = mount.join(format!("weft-test-dev2-{}-{}", std::process::id(), unique()));
    fs::create_dir(&dir).unwrap();
    let guard = Guard::new(vec![dir.clone()]);
    devices::attach_v2(&dir, &DeviceRule::docker_default()).unwrap();
    let Some((name, major, minor)) = block_device(&guard.scratch) else {
        eprintln!("skipped: no block device this process may read, so a refusal would prove nothing");
        return;
    };
    let node = guard.scratch.join(&name);
    assert_eq!(probe(&[dir.join("cgroup.procs")], &node, major, minor), EXPECTED, "{name} {major}:{minor}");
    assert_readable_outside(&node);

    // Attached again with the disk readable: the old program is gone (with both attached, the
    // stricter one would still refuse).
    let mut rules = DeviceRule::docker_default();
    rules.push(DeviceRule::allow(DeviceKind::Block, Some(major), Some(minor), Access::READ));
    devices::attach_v2(&dir, &rules).unwrap();
    let again = guard.scratch.join(format!("{name}-again"));
    assert_eq!(
        probe(&[dir.join("cgroup.procs")], &again, major, minor),
        Outcomes { read_disk: 0, ..EXPECTED }
    );

    // A list the kernel would not enforce as written is refused before anything is loaded.
    let holes = [
        DeviceRule::parse("a").unwrap().denied(),
        DeviceRule::parse("c *:* m").unwrap(),
        DeviceRule::parse("c 1:3 m").unwrap().denied(),
    ];
    assert!(devices::attach_v2(&dir, &holes).is_err());
}
