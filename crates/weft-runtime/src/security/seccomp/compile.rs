//! Turning a [`Resolved`] filter into a classic-BPF program with libseccomp, and installing it.
//!
//! Compiling follows runc: every architecture of the filter is added; a syscall name libseccomp
//! does not know (or that does not exist on any of the filter's architectures) is skipped; a rule
//! whose action is the default action is skipped (libseccomp refuses those, and they change
//! nothing); a rule comparing one argument more than once is split into one rule per comparison,
//! because libseccomp accepts a single comparison per argument in a rule.
//!
//! The program is exported with `seccomp_export_bpf` into a memfd and read back, so that it can
//! be stored and later installed by a process that never links libseccomp state in.

use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};

use super::{Action, Arch, ArgRule, MAX_ARG_INDEX, Op, Resolved, SeccompError};

/// The size of one BPF instruction (`struct sock_filter`): code u16, jt u8, jf u8, k u32.
const INSN_LEN: usize = 8;
/// The kernel's limit on the length of a seccomp program (BPF_MAXINSNS).
const MAX_INSNS: usize = 4096;
/// EPERM, what ERRNO and TRACE rules without `errnoRet` use (as the runtime-spec says).
const EPERM: u32 = 1;

/// A compiled seccomp program: the instructions the kernel runs on every system call.
///
/// It exists separately from [`Resolved`] so that compiling (libseccomp, allocation) happens in
/// weftd while installing happens in the container's process just before `exec`.
#[derive(Clone)]
pub struct Bpf(Vec<libc::sock_filter>);

impl fmt::Debug for Bpf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bpf({} instructions)", self.0.len())
    }
}

impl PartialEq for Bpf {
    fn eq(&self, other: &Bpf) -> bool {
        self.to_bytes() == other.to_bytes()
    }
}

impl Eq for Bpf {}

impl Bpf {
    /// The number of instructions.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the program has no instruction (never true of a program from
    /// [`Resolved::compile`] or [`Bpf::from_bytes`]).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The instructions, for inspection.
    pub fn instructions(&self) -> &[libc::sock_filter] {
        &self.0
    }

    /// The program as the kernel reads it (8 bytes per instruction, native byte order), e.g. to
    /// store as `seccomp.bpf` in a container directory.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.0.len() * INSN_LEN);
        for insn in &self.0 {
            out.extend_from_slice(&insn.code.to_ne_bytes());
            out.push(insn.jt);
            out.push(insn.jf);
            out.extend_from_slice(&insn.k.to_ne_bytes());
        }
        out
    }

    /// Reads back what [`Bpf::to_bytes`] (or `seccomp_export_bpf`) wrote; refuses an empty
    /// program, a length that is not a whole number of instructions, or more instructions than
    /// the kernel accepts.
    pub fn from_bytes(bytes: &[u8]) -> Result<Bpf, SeccompError> {
        if bytes.is_empty() {
            return Err(SeccompError::BadBpf("empty program".into()));
        }
        if !bytes.len().is_multiple_of(INSN_LEN) {
            return Err(SeccompError::BadBpf(format!(
                "{} bytes is not a whole number of {INSN_LEN}-byte instructions",
                bytes.len()
            )));
        }
        let count = bytes.len() / INSN_LEN;
        if count > MAX_INSNS {
            return Err(SeccompError::BadBpf(format!(
                "{count} instructions, the kernel accepts at most {MAX_INSNS}"
            )));
        }
        let insns = bytes
            .chunks_exact(INSN_LEN)
            .map(|c| libc::sock_filter {
                code: u16::from_ne_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect();
        Ok(Bpf(insns))
    }

    /// Installs the program as a seccomp filter on the calling thread with
    /// `seccomp(SECCOMP_SET_MODE_FILTER, 0, &prog)` (or `prctl(PR_SET_SECCOMP,
    /// SECCOMP_MODE_FILTER, &prog)` on kernels without the seccomp syscall). It allocates
    /// nothing and takes no lock, so it may be called between `fork` and `exec`.
    ///
    /// The kernel only accepts it from a thread with no_new_privs set
    /// (`prctl(PR_SET_NO_NEW_PRIVS, 1)`) or with CAP_SYS_ADMIN in its user namespace; otherwise
    /// it fails with EACCES.
    ///
    /// # Safety
    ///
    /// From its return on, every system call of this thread and of everything it execs is
    /// filtered, irrevocably: a filter that denies what the caller still needs to do (write an
    /// error to a pipe, `execve`) makes those fail. Call it last, just before `exec`. Only the
    /// calling thread is filtered (no TSYNC), so a multi-threaded process stays partly
    /// unfiltered.
    pub unsafe fn install(&self) -> std::io::Result<()> {
        let prog = libc::sock_fprog {
            len: self.0.len() as libc::c_ushort,
            filter: self.0.as_ptr() as *mut libc::sock_filter,
        };
        let prog_ptr = &prog as *const libc::sock_fprog;
        // SAFETY: `prog` points at `self.0`, which outlives the call; the kernel copies it.
        let rc = unsafe { libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0, prog_ptr) };
        if rc == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ENOSYS) {
            return Err(err);
        }
        // SAFETY: as above; prctl reads the same structure.
        let rc = unsafe { libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, prog_ptr, 0, 0) };
        if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
    }
}

fn lib_err(what: impl Into<String>) -> impl FnOnce(libseccomp::error::SeccompError) -> SeccompError {
    let what = what.into();
    move |source| SeccompError::Libseccomp { what, source }
}

/// libseccomp's action for a profile action; ERRNO and TRACE carry `errno` (EPERM when absent).
fn scmp_action(action: Action, errno: Option<u32>) -> Result<ScmpAction, SeccompError> {
    let data = errno.unwrap_or(EPERM);
    let data16 = || {
        u16::try_from(data)
            .map_err(|_| SeccompError::invalid("errnoRet", data.to_string(), "must fit in 16 bits"))
    };
    Ok(match action {
        Action::Kill | Action::KillThread => ScmpAction::KillThread,
        Action::KillProcess => ScmpAction::KillProcess,
        Action::Trap => ScmpAction::Trap,
        Action::Errno => ScmpAction::Errno(i32::from(data16()?)),
        Action::Trace => ScmpAction::Trace(data16()?),
        Action::Allow => ScmpAction::Allow,
        Action::Log => ScmpAction::Log,
    })
}

fn scmp_arch(arch: Arch) -> ScmpArch {
    match arch {
        Arch::X86 => ScmpArch::X86,
        Arch::X86_64 => ScmpArch::X8664,
        Arch::X32 => ScmpArch::X32,
        Arch::Arm => ScmpArch::Arm,
        Arch::Aarch64 => ScmpArch::Aarch64,
        Arch::Loongarch64 => ScmpArch::Loongarch64,
        Arch::M68k => ScmpArch::M68k,
        Arch::Mips => ScmpArch::Mips,
        Arch::Mips64 => ScmpArch::Mips64,
        Arch::Mips64N32 => ScmpArch::Mips64N32,
        Arch::Mipsel => ScmpArch::Mipsel,
        Arch::Mipsel64 => ScmpArch::Mipsel64,
        Arch::Mipsel64N32 => ScmpArch::Mipsel64N32,
        Arch::Ppc => ScmpArch::Ppc,
        Arch::Ppc64 => ScmpArch::Ppc64,
        Arch::Ppc64Le => ScmpArch::Ppc64Le,
        Arch::S390 => ScmpArch::S390,
        Arch::S390X => ScmpArch::S390X,
        Arch::Parisc => ScmpArch::Parisc,
        Arch::Parisc64 => ScmpArch::Parisc64,
        Arch::Riscv64 => ScmpArch::Riscv64,
        Arch::Sh => ScmpArch::Sh,
        Arch::Sheb => ScmpArch::Sheb,
    }
}

fn comparison(arg: &ArgRule) -> ScmpArgCompare {
    let op = match arg.op {
        Op::NotEqual => ScmpCompareOp::NotEqual,
        Op::Less => ScmpCompareOp::Less,
        Op::LessOrEqual => ScmpCompareOp::LessOrEqual,
        Op::Equal => ScmpCompareOp::Equal,
        Op::GreaterOrEqual => ScmpCompareOp::GreaterEqual,
        Op::Greater => ScmpCompareOp::Greater,
        // OCI/Docker: (arg & value) == valueTwo; libseccomp: MaskedEqual(mask), datum.
        Op::MaskedEqual => {
            return ScmpArgCompare::new(arg.index, ScmpCompareOp::MaskedEqual(arg.value), arg.value_two);
        }
    };
    ScmpArgCompare::new(arg.index, op, arg.value)
}

impl Resolved {
    /// Compiles the filter to BPF with libseccomp (see the module documentation for what is
    /// skipped). The result can be stored with [`Bpf::to_bytes`] and installed with
    /// [`Bpf::install`].
    pub fn compile(&self) -> Result<Bpf, SeccompError> {
        let default = scmp_action(self.default_action, self.default_errno)?;
        let mut ctx = ScmpFilterContext::new(default).map_err(lib_err("create filter"))?;
        // A binary tree over syscall numbers instead of a linear scan: every system call of the
        // container, and the kernel's per-syscall cache built when the filter is attached, walk
        // O(log n) instructions of Docker's ~370-name allow-list instead of all of them.
        ctx.set_filter_attr(libseccomp::ScmpFilterAttr::CtlOptimize, 2)
            .map_err(lib_err("optimize the filter as a binary tree"))?;
        for arch in &self.arches {
            ctx.add_arch(scmp_arch(*arch)).map_err(lib_err(format!("add architecture {arch}")))?;
        }
        for rule in &self.rules {
            let Ok(syscall) = ScmpSyscall::from_name(&rule.name) else {
                continue; // unknown to libseccomp: runc skips these too
            };
            let action = scmp_action(rule.action, rule.errno)?;
            if action == default {
                continue;
            }
            let mut cmps = Vec::with_capacity(rule.args.len());
            for arg in &rule.args {
                if arg.index > MAX_ARG_INDEX {
                    return Err(SeccompError::invalid(
                        format!("{}.args.index", rule.name),
                        arg.index.to_string(),
                        format!("a syscall has arguments 0 to {MAX_ARG_INDEX}"),
                    ));
                }
                cmps.push(comparison(arg));
            }
            let what = || format!("add rule for {}", rule.name);
            let repeats_an_arg =
                rule.args.iter().enumerate().any(|(i, a)| rule.args[..i].iter().any(|b| b.index == a.index));
            if repeats_an_arg {
                for cmp in &cmps {
                    ctx.add_rule_conditional(action, syscall, std::slice::from_ref(cmp))
                        .map_err(lib_err(what()))?;
                }
            } else {
                ctx.add_rule_conditional(action, syscall, &cmps).map_err(lib_err(what()))?;
            }
        }
        let fd = nix::sys::memfd::memfd_create(c"weft-seccomp", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .map_err(|e| SeccompError::Io { what: "memfd_create", source: e.into() })?;
        let mut file = File::from(fd);
        ctx.export_bpf(&file).map_err(lib_err("export BPF"))?;
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(0))
            .and_then(|_| file.read_to_end(&mut bytes))
            .map_err(|source| SeccompError::Io { what: "read exported BPF", source })?;
        Bpf::from_bytes(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::DOCKER_CAPS;
    use super::super::{Profile, host_kernel};
    use super::*;

    const PROBES: usize = 6;
    /// What a probe reports for a call that succeeded.
    const OK: i64 = 0;
    /// What the child reports in slot 0 when installing the filter failed.
    const INSTALL_FAILED: i64 = -1;

    fn errno() -> i64 {
        // SAFETY: reading this thread's errno.
        i64::from(unsafe { *libc::__errno_location() })
    }

    /// Forks; the child sets no_new_privs, installs `bpf`, runs `probe` (which must only make
    /// async-signal-safe calls and allocate nothing) and writes its results to a pipe.
    fn in_filtered_child(bpf: &Bpf, probe: fn() -> [i64; PROBES]) -> [i64; PROBES] {
        let mut fds = [0; 2];
        // SAFETY: plain pipe(2).
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        let (rd, wr) = (fds[0], fds[1]);
        // SAFETY: the child only makes raw system calls and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let mut out = [INSTALL_FAILED; PROBES];
            // SAFETY: prctl and the filter install are plain system calls.
            let installed =
                unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 && bpf.install().is_ok() };
            if installed {
                out = probe();
            }
            // SAFETY: writing a stack buffer to our pipe, then leaving without running any
            // destructor or atexit handler of the parent's state.
            unsafe {
                libc::write(wr, out.as_ptr().cast(), std::mem::size_of_val(&out));
                libc::_exit(0);
            }
        }
        // SAFETY: closing our copy of the write end, reading into a stack buffer, reaping.
        unsafe {
            libc::close(wr);
            let mut out = [i64::MIN; PROBES];
            let n = libc::read(rd, out.as_mut_ptr().cast(), std::mem::size_of_val(&out));
            libc::close(rd);
            let mut status = 0;
            assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
            assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child status {status:#x}");
            assert_eq!(n as usize, std::mem::size_of_val(&out), "child wrote {n} bytes");
            out
        }
    }

    /// 0 when `rc` is not -1, else errno.
    fn outcome(rc: i64) -> i64 {
        if rc == -1 { errno() } else { OK }
    }

    fn default_probe() -> [i64; PROBES] {
        // SAFETY: raw system calls with valid (or deliberately invalid but harmless) arguments.
        unsafe {
            let keyctl = outcome(libc::syscall(
                libc::SYS_keyctl,
                0,  /* KEYCTL_GET_KEYRING_ID */
                -3, /* KEY_SPEC_SESSION_KEYRING */
                0,
            ));
            let unshare = outcome(libc::unshare(libc::CLONE_NEWUSER).into());
            let mount = outcome(
                libc::mount(
                    c"none".as_ptr(),
                    c"/nonexistent-weft-seccomp-test".as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    std::ptr::null(),
                )
                .into(),
            );
            // Unfiltered, a NULL clone_args of size 0 is EINVAL; the filter answers first.
            let clone3 = outcome(libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0usize));
            let getpid = outcome(libc::getpid().into());
            let mut buf = [0u8; 64];
            let getcwd = outcome(libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()));
            [keyctl, unshare, mount, clone3, getpid, getcwd]
        }
    }

    #[test]
    fn default_filter_denies_in_a_real_child() {
        let kernel = host_kernel().unwrap();
        let bpf = Profile::docker_default().resolve(DOCKER_CAPS, kernel).unwrap().compile().unwrap();
        assert!(bpf.len() > 100, "{bpf:?}");
        let [keyctl, unshare, mount, clone3, getpid, getcwd] = in_filtered_child(&bpf, default_probe);
        assert_ne!(keyctl, INSTALL_FAILED, "installing the filter failed");
        assert_eq!(keyctl, i64::from(libc::EPERM), "keyctl");
        assert_eq!(unshare, i64::from(libc::EPERM), "unshare(CLONE_NEWUSER)");
        assert_eq!(mount, i64::from(libc::EPERM), "mount");
        assert_eq!(clone3, i64::from(libc::ENOSYS), "clone3");
        assert_eq!(getpid, OK, "getpid");
        assert_eq!(getcwd, OK, "getcwd");
    }

    #[test]
    fn custom_profile_denies_getcwd_with_its_errno() {
        let profile = Profile::from_json(
            br#"{"defaultAction":"SCMP_ACT_ALLOW",
                 "syscalls":[{"names":["getcwd"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#,
        )
        .unwrap();
        let bpf = profile.resolve(&[], (5, 10)).unwrap().compile().unwrap();
        let [keyctl, _, _, _, getpid, getcwd] = in_filtered_child(&bpf, default_probe);
        assert_ne!(keyctl, INSTALL_FAILED, "installing the filter failed");
        assert_eq!(getcwd, i64::from(libc::EACCES), "getcwd");
        assert_eq!(getpid, OK, "getpid");
    }

    #[test]
    fn bpf_bytes_round_trip_and_bad_bytes_are_refused() {
        let bpf = Profile::docker_default().resolve(DOCKER_CAPS, (6, 1)).unwrap().compile().unwrap();
        let bytes = bpf.to_bytes();
        assert_eq!(bytes.len(), bpf.len() * 8);
        assert_eq!(Bpf::from_bytes(&bytes).unwrap(), bpf);
        assert!(Bpf::from_bytes(&[]).is_err());
        assert!(Bpf::from_bytes(&bytes[..bytes.len() - 3]).is_err());
        assert!(Bpf::from_bytes(&vec![0; 8 * (MAX_INSNS + 1)]).is_err());
        // Capabilities change the program.
        let admin = Profile::docker_default().resolve(&["CAP_SYS_ADMIN"], (6, 1)).unwrap().compile().unwrap();
        assert_ne!(admin, bpf);
    }

    #[test]
    fn unknown_names_are_skipped_and_repeated_args_split() {
        let profile = Profile::from_json(
            br#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86"],
                 "syscalls":[{"names":["no_such_syscall_weft","read"],"action":"SCMP_ACT_ALLOW"},
                   {"names":["write"],"action":"SCMP_ACT_ERRNO"},
                   {"names":["socket"],"action":"SCMP_ACT_ALLOW","args":[
                     {"index":0,"value":1,"op":"SCMP_CMP_EQ"},{"index":0,"value":2,"op":"SCMP_CMP_EQ"}]},
                   {"names":["ioctl"],"action":"SCMP_ACT_TRACE","errnoRet":7},
                   {"names":["clone"],"action":"SCMP_ACT_LOG","args":[
                     {"index":0,"value":255,"valueTwo":17,"op":"SCMP_CMP_MASKED_EQ"}]}]}"#,
        )
        .unwrap();
        let resolved = profile.resolve(&[], (6, 1)).unwrap();
        resolved.compile().unwrap();
        let mut bad = resolved.clone();
        bad.rules[2].errno = Some(70_000);
        assert!(bad.compile().unwrap_err().to_string().contains("errnoRet"));
    }
}
