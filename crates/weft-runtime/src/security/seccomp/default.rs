//! Docker Engine 28's default seccomp profile, written out in Rust.
//!
//! This reproduces moby's `DefaultProfile()` (`profiles/seccomp/default_linux.go`, as vendored
//! from `github.com/moby/profiles/seccomp` v0.1.0 by Docker Engine v28.5.2) rule for rule and in
//! the same order, so that `docker_default().to_json()` is the same document as moby's
//! `default.json`:
//!
//! * everything not listed fails with EPERM (`SCMP_ACT_ERRNO`, `defaultErrnoRet` 1);
//! * the architecture map (x86_64 with x86 and x32, aarch64 with arm, the four MIPS64 flavours,
//!   s390x with s390, riscv64);
//! * the big unconditional allow-list (io_uring is not in it since Engine 25);
//! * `ptrace`, `process_vm_readv` and `process_vm_writev` from kernel 4.8 on (earlier kernels let
//!   ptrace bypass seccomp);
//! * `socket` for every family but AF_VSOCK (40);
//! * `personality` only for PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32 and the
//!   0xffffffff query;
//! * per-architecture extras (ppc64le, arm/arm64, amd64/x32, x86, s390/s390x, riscv64);
//! * per-capability extras (CAP_DAC_READ_SEARCH, CAP_SYS_ADMIN, CAP_SYS_BOOT, CAP_SYS_CHROOT,
//!   CAP_SYS_MODULE, CAP_SYS_PACCT, CAP_SYS_PTRACE, CAP_SYS_RAWIO, CAP_SYS_TIME,
//!   CAP_SYS_TTY_CONFIG, CAP_SYS_NICE, CAP_SYSLOG, CAP_BPF, CAP_PERFMON);
//! * without CAP_SYS_ADMIN, `clone` only when no namespace flag is set (MASKED_EQ of the flags
//!   argument, index 0, or index 1 on s390/s390x) and `clone3` answered with ENOSYS so that libc
//!   falls back to `clone`, whose flags the filter can see.
//!
//! Left out: nothing of the rules. What differs lies outside the profile: moby's Go code only
//! runs on Linux architectures Go supports, and runc's extra BPF stub (which turns syscalls newer
//! than libseccomp's table into ENOSYS instead of the default EPERM) is not part of the profile
//! and is not reproduced by [`Resolved::compile`](super::Resolved::compile). Names libseccomp
//! 2.5.4 does not know (`cachestat`, `fchmodat2`, `map_shadow_stack`, `futex_wake`/`wait`/
//! `requeue`, `listmount`, `statmount`, `mseal`, the `*xattrat` family, `lsm_*`, `uretprobe`,
//! `riscv_hwprobe`) stay in the profile and are skipped at compile time, as runc skips them.

use super::profile::{Action, Arch, ArchMapEntry, ArgRule, Filter, KernelVersion, Op, Profile, SyscallRule};

/// EPERM: what every syscall the profile does not list fails with.
const EPERM: u32 = 1;
/// ENOSYS: what `clone3` fails with without CAP_SYS_ADMIN, so that libc falls back to `clone`.
const ENOSYS: u32 = 38;
/// AF_VSOCK: the socket family containers may not open (host/guest communication).
const AF_VSOCK: u64 = 40;
/// The namespace flags of `clone`: CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC |
/// CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET (0x7e020000).
const CLONE_NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u64;
/// The `personality` values a container may set: PER_LINUX (0), PER_LINUX32 (8), UNAME26
/// (0x20000), UNAME26|PER_LINUX32, and 0xffffffff, which only queries the persona.
const PERSONALITIES: [u64; 5] = [0x0, 0x0008, 0x20000, 0x20008, 0xffff_ffff];

/// Syscalls every container may make, whatever its capabilities, kernel or architecture
/// (names absent on the running architecture are skipped when compiling).
#[rustfmt::skip]
const ALLOWED: &[&str] = &[
    "accept", "accept4", "access", "adjtimex", "alarm", "bind", "brk", "cachestat", "capget", "capset",
    "chdir", "chmod", "chown", "chown32", "clock_adjtime", "clock_adjtime64", "clock_getres",
    "clock_getres_time64", "clock_gettime", "clock_gettime64", "clock_nanosleep", "clock_nanosleep_time64",
    "close", "close_range", "connect", "copy_file_range", "creat", "dup", "dup2", "dup3", "epoll_create",
    "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait", "epoll_pwait2", "epoll_wait",
    "epoll_wait_old", "eventfd", "eventfd2", "execve", "execveat", "exit", "exit_group", "faccessat",
    "faccessat2", "fadvise64", "fadvise64_64", "fallocate", "fanotify_mark", "fchdir", "fchmod", "fchmodat",
    "fchmodat2", "fchown", "fchown32", "fchownat", "fcntl", "fcntl64", "fdatasync", "fgetxattr",
    "flistxattr", "flock", "fork", "fremovexattr", "fsetxattr", "fstat", "fstat64", "fstatat64", "fstatfs",
    "fstatfs64", "fsync", "ftruncate", "ftruncate64", "futex", "futex_requeue", "futex_time64",
    "futex_wait", "futex_waitv", "futex_wake", "futimesat", "getcpu", "getcwd", "getdents", "getdents64",
    "getegid", "getegid32", "geteuid", "geteuid32", "getgid", "getgid32", "getgroups", "getgroups32",
    "getitimer", "getpeername", "getpgid", "getpgrp", "getpid", "getppid", "getpriority", "getrandom",
    "getresgid", "getresgid32", "getresuid", "getresuid32", "getrlimit", "get_robust_list", "getrusage",
    "getsid", "getsockname", "getsockopt", "get_thread_area", "gettid", "gettimeofday", "getuid",
    "getuid32", "getxattr", "getxattrat", "inotify_add_watch", "inotify_init", "inotify_init1",
    "inotify_rm_watch", "io_cancel", "ioctl", "io_destroy", "io_getevents", "io_pgetevents",
    "io_pgetevents_time64", "ioprio_get", "ioprio_set", "io_setup", "io_submit", "ipc", "kill",
    "landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self", "lchown", "lchown32",
    "lgetxattr", "link", "linkat", "listen", "listmount", "listxattr", "listxattrat", "llistxattr",
    "_llseek", "lremovexattr", "lseek", "lsetxattr", "lstat", "lstat64", "madvise", "map_shadow_stack",
    "membarrier", "memfd_create", "memfd_secret", "mincore", "mkdir", "mkdirat", "mknod", "mknodat",
    "mlock", "mlock2", "mlockall", "mmap", "mmap2", "mprotect", "mq_getsetattr", "mq_notify", "mq_open",
    "mq_timedreceive", "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64", "mq_unlink",
    "mremap", "mseal", "msgctl", "msgget", "msgrcv", "msgsnd", "msync", "munlock", "munlockall", "munmap",
    "name_to_handle_at", "nanosleep", "newfstatat", "_newselect", "open", "openat", "openat2", "pause",
    "pidfd_open", "pidfd_send_signal", "pipe", "pipe2", "pkey_alloc", "pkey_free", "pkey_mprotect", "poll",
    "ppoll", "ppoll_time64", "prctl", "pread64", "preadv", "preadv2", "prlimit64", "process_mrelease",
    "pselect6", "pselect6_time64", "pwrite64", "pwritev", "pwritev2", "read", "readahead", "readlink",
    "readlinkat", "readv", "recv", "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg", "remap_file_pages",
    "removexattr", "removexattrat", "rename", "renameat", "renameat2", "restart_syscall", "riscv_hwprobe",
    "rmdir", "rseq", "rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn",
    "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_tgsigqueueinfo", "sched_getaffinity",
    "sched_getattr", "sched_getparam", "sched_get_priority_max", "sched_get_priority_min",
    "sched_getscheduler", "sched_rr_get_interval", "sched_rr_get_interval_time64", "sched_setaffinity",
    "sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield", "seccomp", "select", "semctl",
    "semget", "semop", "semtimedop", "semtimedop_time64", "send", "sendfile", "sendfile64", "sendmmsg",
    "sendmsg", "sendto", "setfsgid", "setfsgid32", "setfsuid", "setfsuid32", "setgid", "setgid32",
    "setgroups", "setgroups32", "setitimer", "setpgid", "setpriority", "setregid", "setregid32",
    "setresgid", "setresgid32", "setresuid", "setresuid32", "setreuid", "setreuid32", "setrlimit",
    "set_robust_list", "setsid", "setsockopt", "set_thread_area", "set_tid_address", "setuid", "setuid32",
    "setxattr", "setxattrat", "shmat", "shmctl", "shmdt", "shmget", "shutdown", "sigaltstack", "signalfd",
    "signalfd4", "sigprocmask", "sigreturn", "socketcall", "socketpair", "splice", "stat", "stat64",
    "statfs", "statfs64", "statmount", "statx", "symlink", "symlinkat", "sync", "sync_file_range", "syncfs",
    "sysinfo", "tee", "tgkill", "time", "timer_create", "timer_delete", "timer_getoverrun", "timer_gettime",
    "timer_gettime64", "timer_settime", "timer_settime64", "timerfd_create", "timerfd_gettime",
    "timerfd_gettime64", "timerfd_settime", "timerfd_settime64", "times", "tkill", "truncate", "truncate64",
    "ugetrlimit", "umask", "uname", "unlink", "unlinkat", "uretprobe", "utime", "utimensat",
    "utimensat_time64", "utimes", "vfork", "vmsplice", "wait4", "waitid", "waitpid", "write", "writev",
];

fn allow(names: &[&str]) -> SyscallRule {
    SyscallRule::new(names, Action::Allow)
}

fn with_caps(mut rule: SyscallRule, caps: &[&str]) -> SyscallRule {
    rule.includes = Some(Filter { caps: strings(caps), ..Filter::default() });
    rule
}

fn with_arches(mut rule: SyscallRule, arches: &[&str]) -> SyscallRule {
    rule.includes = Some(Filter { arches: strings(arches), ..Filter::default() });
    rule
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn arg(index: u32, value: u64, op: Op) -> ArgRule {
    ArgRule { index, value, value_two: 0, op }
}

impl Profile {
    /// Docker Engine 28's default profile (see the module documentation for what it contains);
    /// what weft applies to a container unless told `seccomp=unconfined` or given a profile.
    pub fn docker_default() -> Profile {
        let mut rules = vec![allow(ALLOWED)];

        let mut ptrace = allow(&["process_vm_readv", "process_vm_writev", "ptrace"]);
        ptrace.includes =
            Some(Filter { min_kernel: Some(KernelVersion { kernel: 4, major: 8 }), ..Filter::default() });
        rules.push(ptrace);

        let mut socket = allow(&["socket"]);
        socket.args = vec![arg(0, AF_VSOCK, Op::NotEqual)];
        rules.push(socket);

        for persona in PERSONALITIES {
            let mut personality = allow(&["personality"]);
            personality.args = vec![arg(0, persona, Op::Equal)];
            rules.push(personality);
        }

        rules.push(with_arches(allow(&["sync_file_range2", "swapcontext"]), &["ppc64le"]));
        rules.push(with_arches(
            allow(&[
                "arm_fadvise64_64",
                "arm_sync_file_range",
                "sync_file_range2",
                "breakpoint",
                "cacheflush",
                "set_tls",
            ]),
            &["arm", "arm64"],
        ));
        rules.push(with_arches(allow(&["arch_prctl"]), &["amd64", "x32"]));
        rules.push(with_arches(allow(&["modify_ldt"]), &["amd64", "x32", "x86"]));
        rules.push(with_arches(
            allow(&["s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr"]),
            &["s390", "s390x"],
        ));
        rules.push(with_arches(allow(&["riscv_flush_icache"]), &["riscv64"]));

        rules.push(with_caps(allow(&["open_by_handle_at"]), &["CAP_DAC_READ_SEARCH"]));
        rules.push(with_caps(
            allow(&[
                "bpf",
                "clone",
                "clone3",
                "fanotify_init",
                "fsconfig",
                "fsmount",
                "fsopen",
                "fspick",
                "lookup_dcookie",
                "lsm_get_self_attr",
                "lsm_list_modules",
                "lsm_set_self_attr",
                "mount",
                "mount_setattr",
                "move_mount",
                "open_tree",
                "perf_event_open",
                "quotactl",
                "quotactl_fd",
                "setdomainname",
                "sethostname",
                "setns",
                "syslog",
                "umount",
                "umount2",
                "unshare",
            ]),
            &["CAP_SYS_ADMIN"],
        ));

        // Without CAP_SYS_ADMIN, clone may not create namespaces. s390 passes the flags as the
        // second argument, hence two rules.
        let mut clone = allow(&["clone"]);
        clone.args = vec![arg(0, CLONE_NAMESPACE_FLAGS, Op::MaskedEqual)];
        clone.excludes = Some(Filter {
            caps: strings(&["CAP_SYS_ADMIN"]),
            arches: strings(&["s390", "s390x"]),
            min_kernel: None,
        });
        rules.push(clone);
        let mut clone_s390 = allow(&["clone"]);
        clone_s390.args = vec![arg(1, CLONE_NAMESPACE_FLAGS, Op::MaskedEqual)];
        clone_s390.comment = Some("s390 parameter ordering for clone is different".to_string());
        clone_s390.includes = Some(Filter { arches: strings(&["s390", "s390x"]), ..Filter::default() });
        clone_s390.excludes = Some(Filter { caps: strings(&["CAP_SYS_ADMIN"]), ..Filter::default() });
        rules.push(clone_s390);

        // clone3 passes its flags in memory the filter cannot read: ENOSYS makes libc use clone.
        let mut clone3 = SyscallRule::new(&["clone3"], Action::Errno);
        clone3.errno_ret = Some(ENOSYS);
        clone3.excludes = Some(Filter { caps: strings(&["CAP_SYS_ADMIN"]), ..Filter::default() });
        rules.push(clone3);

        let by_cap: [(&[&str], &str); 12] = [
            (&["reboot"], "CAP_SYS_BOOT"),
            (&["chroot"], "CAP_SYS_CHROOT"),
            (&["delete_module", "init_module", "finit_module"], "CAP_SYS_MODULE"),
            (&["acct"], "CAP_SYS_PACCT"),
            (
                &[
                    "kcmp",
                    "pidfd_getfd",
                    "process_madvise",
                    "process_vm_readv",
                    "process_vm_writev",
                    "ptrace",
                ],
                "CAP_SYS_PTRACE",
            ),
            (&["iopl", "ioperm"], "CAP_SYS_RAWIO"),
            (&["settimeofday", "stime", "clock_settime", "clock_settime64"], "CAP_SYS_TIME"),
            (&["vhangup"], "CAP_SYS_TTY_CONFIG"),
            (&["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"], "CAP_SYS_NICE"),
            (&["syslog"], "CAP_SYSLOG"),
            (&["bpf"], "CAP_BPF"),
            (&["perf_event_open"], "CAP_PERFMON"),
        ];
        for (names, cap) in by_cap {
            rules.push(with_caps(allow(names), &[cap]));
        }

        Profile {
            default_action: Action::Errno,
            default_errno_ret: Some(EPERM),
            architectures: Vec::new(),
            arch_map: default_arch_map(),
            syscalls: rules,
        }
    }
}

/// Which compat ABIs come with each native architecture, as in moby's `arches()`.
fn default_arch_map() -> Vec<ArchMapEntry> {
    let entry = |architecture, subs: &[Arch]| ArchMapEntry { architecture, sub_architectures: subs.to_vec() };
    vec![
        entry(Arch::X86_64, &[Arch::X86, Arch::X32]),
        entry(Arch::Aarch64, &[Arch::Arm]),
        entry(Arch::Mips64, &[Arch::Mips, Arch::Mips64N32]),
        entry(Arch::Mips64N32, &[Arch::Mips, Arch::Mips64]),
        entry(Arch::Mipsel64, &[Arch::Mipsel, Arch::Mipsel64N32]),
        entry(Arch::Mipsel64N32, &[Arch::Mipsel, Arch::Mipsel64]),
        entry(Arch::S390X, &[Arch::S390]),
        entry(Arch::Riscv64, &[]),
    ]
}
