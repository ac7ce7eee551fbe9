//! Seccomp system-call filtering for containers, compatible with Docker.
//!
//! The pipeline has three steps, each its own type, so that the expensive and the dangerous
//! parts can run in different processes:
//!
//! 1. [`Profile`]: a Docker JSON profile (`docker run --security-opt seccomp=FILE`), read with
//!    [`Profile::from_json`], or Docker's own default from [`Profile::docker_default`]. It still
//!    holds rules conditional on capabilities, architecture and kernel version.
//! 2. [`Resolved`]: the profile for one container on this host ([`Profile::resolve`]), a flat
//!    list of rules; [`Resolved::to_oci_json`] gives the same filter as an OCI runtime-spec
//!    `linux.seccomp` object, for crun or runc.
//! 3. [`Bpf`]: the classic-BPF program libseccomp compiles it to ([`Resolved::compile`]). weftd
//!    compiles once and stores [`Bpf::to_bytes`] next to the container; the process that execs
//!    the container reads it back with [`Bpf::from_bytes`] and calls [`Bpf::install`], which
//!    neither allocates nor touches libseccomp and so is safe between `fork` and `exec`.

mod compile;
mod default;
mod profile;

pub use compile::Bpf;
pub use profile::{
    Action, Arch, ArchMapEntry, ArgRule, Filter, KernelVersion, MAX_ARG_INDEX, Op, Profile, SyscallRule,
};

/// Everything reading, resolving, compiling or installing a filter can fail with.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The profile is not JSON, or a field has the wrong JSON type.
    #[error("seccomp profile is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A field holds a value that does not describe a valid filter.
    #[error("seccomp profile field {field}: {reason} (got {value:?})")]
    Invalid {
        /// Where, e.g. `syscalls[3].args[0].op`.
        field: String,
        /// The offending value as written.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `SCMP_ACT_NOTIFY` needs a seccomp agent listening on a socket, which weft does not have.
    #[error(
        "seccomp profile field {field}: SCMP_ACT_NOTIFY is not supported \
         (weft has no seccomp notification agent); use SCMP_ACT_ERRNO or SCMP_ACT_LOG"
    )]
    NotifyUnsupported {
        /// Where the action was found.
        field: String,
    },
    /// The architecture this binary runs on has no seccomp architecture.
    #[error("seccomp does not support the architecture {0:?}")]
    UnsupportedArch(String),
    /// libseccomp refused an operation while building the filter.
    #[error("libseccomp: {what}: {source}")]
    Libseccomp {
        /// What was being done, e.g. `add rule for socket`.
        what: String,
        /// libseccomp's error.
        #[source]
        source: libseccomp::error::SeccompError,
    },
    /// A system call needed to export or install the program failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Bytes that are not a loadable BPF program.
    #[error("invalid seccomp BPF program: {0}")]
    BadBpf(String),
    /// The kernel release could not be read or parsed.
    #[error("cannot determine the kernel version: {0}")]
    Kernel(String),
}

impl SeccompError {
    pub(crate) fn invalid(
        field: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> SeccompError {
        SeccompError::Invalid { field: field.into(), value: value.into(), reason: reason.into() }
    }
}

/// One rule of a resolved filter: a single syscall, what to do, and the argument comparisons
/// (all of which must hold) under which to do it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedRule {
    /// The syscall name (may be unknown on this architecture; compiling skips it then).
    pub name: String,
    /// The action.
    pub action: Action,
    /// The errno for `SCMP_ACT_ERRNO` / message for `SCMP_ACT_TRACE`; EPERM when `None`.
    pub errno: Option<u32>,
    /// Argument comparisons.
    pub args: Vec<ArgRule>,
}

/// A profile with its conditions applied for one container on one host: what the OCI spec calls
/// `linux.seccomp`, and what [`Resolved::compile`] turns into BPF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// What happens to syscalls no rule matches.
    pub default_action: Action,
    /// The errno for a default action of `SCMP_ACT_ERRNO`; EPERM when `None`.
    pub default_errno: Option<u32>,
    /// The ABIs the filter covers (native first); calls through any other are killed.
    pub arches: Vec<Arch>,
    /// The rules, one per syscall name, in profile order.
    pub rules: Vec<ResolvedRule>,
}

/// Reads the running kernel's `(version, major revision)`, e.g. `(6, 1)` for `6.1.0-18-amd64`,
/// the value [`Profile::resolve`] compares `minKernel` with.
pub fn host_kernel() -> Result<(u32, u32), SeccompError> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_err(|e| SeccompError::Kernel(format!("/proc/sys/kernel/osrelease: {e}")))?;
    parse_kernel_release(release.trim())
        .ok_or_else(|| SeccompError::Kernel(format!("unrecognised release {:?}", release.trim())))
}

/// The leading `<kernel>.<major>` of a release string; suffixes like `-rc5` or `-gentoo` on the
/// major revision are ignored, as Docker ignores them.
fn parse_kernel_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.splitn(3, '.');
    let kernel = parts.next()?.parse().ok()?;
    let major: String = parts.next()?.chars().take_while(|c| c.is_ascii_digit()).collect();
    Some((kernel, major.parse().ok()?))
}

use crate::security::caps::spelled as normalise_cap;

impl Profile {
    /// Applies the profile's conditions for a container with bounding capabilities `caps`
    /// (`"CAP_SYS_ADMIN"`; `"sys_admin"` is read the same) on a host running kernel `kernel`
    /// (see [`host_kernel`]), on the architecture this binary was built for.
    pub fn resolve(&self, caps: &[&str], kernel: (u32, u32)) -> Result<Resolved, SeccompError> {
        let arch = Arch::native()
            .ok_or_else(|| SeccompError::UnsupportedArch(std::env::consts::ARCH.to_string()))?;
        self.resolve_for_arch(arch, caps, kernel)
    }

    /// [`Profile::resolve`] for a given native architecture, so that a filter for another
    /// machine can be previewed (and the arch-specific rules tested).
    ///
    /// The rules follow Docker's `setupSeccomp`: a rule is dropped if an `excludes` part holds
    /// (the arch is listed, any listed capability is held, the kernel is at least `minKernel`)
    /// or an `includes` part fails (the arch is not listed, some listed capability is missing,
    /// the kernel is older than `minKernel`). The architectures are `architectures` as given, or
    /// else the `archMap` entry of the native architecture with its sub-architectures.
    pub fn resolve_for_arch(
        &self,
        arch: Arch,
        caps: &[&str],
        kernel: (u32, u32),
    ) -> Result<Resolved, SeccompError> {
        if !self.architectures.is_empty() && !self.arch_map.is_empty() {
            return Err(SeccompError::invalid(
                "architectures",
                "",
                "both 'architectures' and 'archMap' are given; use one of them",
            ));
        }
        let caps: Vec<String> = caps.iter().map(|c| normalise_cap(c)).collect();
        let has_cap = |c: &String| caps.contains(&normalise_cap(c));
        let native = arch.native_name();
        let kernel = KernelVersion { kernel: kernel.0, major: kernel.1 };

        let mut arches = self.architectures.clone();
        if let Some(entry) = self.arch_map.iter().find(|e| e.architecture == arch) {
            arches.push(entry.architecture);
            arches.extend(entry.sub_architectures.iter().copied());
        }

        let mut rules = Vec::new();
        for rule in &self.syscalls {
            let excluded = rule.excludes.as_ref().is_some_and(|ex| {
                ex.arches.iter().any(|a| a == native)
                    || ex.caps.iter().any(has_cap)
                    || ex.min_kernel.is_some_and(|min| kernel >= min)
            });
            let included = rule.includes.as_ref().is_none_or(|inc| {
                (inc.arches.is_empty() || inc.arches.iter().any(|a| a == native))
                    && inc.caps.iter().all(has_cap)
                    && inc.min_kernel.is_none_or(|min| kernel >= min)
            });
            if excluded || !included {
                continue;
            }
            for name in &rule.names {
                rules.push(ResolvedRule {
                    name: name.clone(),
                    action: rule.action,
                    errno: rule.errno_ret,
                    args: rule.args.clone(),
                });
            }
        }
        Ok(Resolved {
            default_action: self.default_action,
            default_errno: self.default_errno_ret,
            arches,
            rules,
        })
    }
}

impl Resolved {
    /// The action a call to `name` gets when no argument comparison is involved: the first
    /// unconditional rule for it, else the default. Rules with arguments are ignored, so this
    /// answers "is `name` allowed outright"; it exists for tests and diagnostics.
    pub fn unconditional_action(&self, name: &str) -> (Action, Option<u32>) {
        self.rules
            .iter()
            .find(|r| r.name == name && r.args.is_empty())
            .map(|r| (r.action, r.errno))
            .unwrap_or((self.default_action, self.default_errno))
    }

    /// The same filter as an OCI runtime-spec `linux.seccomp` object, so that crun or runc can
    /// be given exactly what weft installs. Consecutive rules with the same action, errno and
    /// arguments share one `syscalls` entry.
    pub fn to_oci_json(&self) -> serde_json::Value {
        use serde_json::{Map, Value, json};
        let mut syscalls: Vec<Map<String, Value>> = Vec::new();
        let mut last: Option<&ResolvedRule> = None;
        for rule in &self.rules {
            let same =
                last.is_some_and(|l| l.action == rule.action && l.errno == rule.errno && l.args == rule.args);
            if same {
                if let Some(Value::Array(names)) = syscalls.last_mut().and_then(|e| e.get_mut("names")) {
                    names.push(Value::from(rule.name.clone()));
                }
            } else {
                let mut entry = Map::new();
                entry.insert("names".into(), json!([rule.name]));
                entry.insert("action".into(), json!(rule.action.as_str()));
                if let Some(errno) = rule.errno {
                    entry.insert("errnoRet".into(), json!(errno));
                }
                if !rule.args.is_empty() {
                    let args: Vec<Value> = rule
                        .args
                        .iter()
                        .map(|a| json!({"index": a.index, "value": a.value, "valueTwo": a.value_two, "op": a.op.as_str()}))
                        .collect();
                    entry.insert("args".into(), Value::Array(args));
                }
                syscalls.push(entry);
            }
            last = Some(rule);
        }
        let mut out = Map::new();
        out.insert("defaultAction".into(), json!(self.default_action.as_str()));
        if let Some(errno) = self.default_errno {
            out.insert("defaultErrnoRet".into(), json!(errno));
        }
        out.insert("architectures".into(), json!(self.arches.iter().map(|a| a.as_str()).collect::<Vec<_>>()));
        out.insert("syscalls".into(), Value::Array(syscalls.into_iter().map(Value::Object).collect()));
        Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Docker's default capability set.
    pub(super) const DOCKER_CAPS: &[&str] = crate::security::caps::DOCKER_DEFAULT;

    fn allowed(r: &Resolved, name: &str) -> bool {
        r.unconditional_action(name).0 == Action::Allow
    }

    #[test]
    fn default_profile_round_trips_through_json() {
        let p = Profile::docker_default();
        let json = p.to_json().unwrap();
        let back = Profile::from_json(&json).unwrap();
        assert_eq!(back, p);
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(v["defaultErrnoRet"], 1);
        assert_eq!(v["archMap"][0]["architecture"], "SCMP_ARCH_X86_64");
        assert_eq!(v["syscalls"][16]["args"][0]["value"], 2_114_060_288u64);
        assert_eq!(v["syscalls"][16]["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
        assert_eq!(v["syscalls"][18]["errnoRet"], 38);
    }

    #[test]
    fn docker_caps_deny_the_dangerous_and_allow_the_ordinary() {
        let p = Profile::docker_default();
        let new = p.resolve_for_arch(Arch::X86_64, DOCKER_CAPS, (6, 1)).unwrap();
        for name in [
            "keyctl",
            "add_key",
            "request_key",
            "mount",
            "umount2",
            "unshare",
            "setns",
            "reboot",
            "bpf",
            "init_module",
            "open_by_handle_at",
            "clock_settime",
        ] {
            assert_eq!(new.unconditional_action(name), (Action::Errno, Some(1)), "{name}");
        }
        for name in [
            "read",
            "write",
            "execve",
            "ptrace",
            "process_vm_readv",
            "chroot",
            "arch_prctl",
            "modify_ldt",
            "getcwd",
        ] {
            assert!(allowed(&new, name), "{name}");
        }
        assert_eq!(new.unconditional_action("clone3"), (Action::Errno, Some(38)));
        // clone only without namespace flags, on x86_64 through argument 0.
        let clone: Vec<_> = new.rules.iter().filter(|r| r.name == "clone").collect();
        assert_eq!(clone.len(), 1);
        assert_eq!(
            clone[0].args,
            vec![ArgRule { index: 0, value: 0x7e02_0000, value_two: 0, op: Op::MaskedEqual }]
        );
        assert!(!new.rules.iter().any(|r| r.name == "arm_fadvise64_64" || r.name == "s390_runtime_instr"));
        assert_eq!(new.arches, vec![Arch::X86_64, Arch::X86, Arch::X32]);

        // Before 4.8 ptrace could bypass seccomp: denied.
        let old = p.resolve_for_arch(Arch::X86_64, DOCKER_CAPS, (4, 4)).unwrap();
        assert_eq!(old.unconditional_action("ptrace").0, Action::Errno);
        assert_eq!(old.unconditional_action("process_vm_writev").0, Action::Errno);
        assert!(allowed(&p.resolve_for_arch(Arch::X86_64, DOCKER_CAPS, (4, 8)).unwrap(), "ptrace"));
        assert!(allowed(&p.resolve_for_arch(Arch::X86_64, &["CAP_SYS_PTRACE"], (4, 4)).unwrap(), "ptrace"));

        // socket: every family but AF_VSOCK; personality: five values.
        let socket: Vec<_> = new.rules.iter().filter(|r| r.name == "socket").collect();
        assert_eq!(socket.len(), 1);
        assert_eq!(socket[0].args, vec![ArgRule { index: 0, value: 40, value_two: 0, op: Op::NotEqual }]);
        let persona: Vec<u64> =
            new.rules.iter().filter(|r| r.name == "personality").map(|r| r.args[0].value).collect();
        assert_eq!(persona, vec![0, 8, 0x20000, 0x20008, 0xffff_ffff]);
    }

    #[test]
    fn sys_admin_allows_mount_unshare_and_unrestricted_clone() {
        let mut caps = DOCKER_CAPS.to_vec();
        caps.push("CAP_SYS_ADMIN");
        let r = Profile::docker_default().resolve_for_arch(Arch::X86_64, &caps, (6, 1)).unwrap();
        for name in ["mount", "unshare", "setns", "clone", "clone3", "bpf", "sethostname"] {
            assert!(allowed(&r, name), "{name}");
        }
        assert!(!r.rules.iter().any(|r| r.name == "clone" && !r.args.is_empty()));
        assert!(!r.rules.iter().any(|r| r.name == "clone3" && r.action == Action::Errno));
        // Spelling without CAP_ or in lower case is read the same.
        let r2 = Profile::docker_default().resolve_for_arch(Arch::X86_64, &["sys_admin"], (6, 1)).unwrap();
        assert!(allowed(&r2, "mount"));
        assert_eq!(r2.unconditional_action("reboot").0, Action::Errno);
        let boot =
            Profile::docker_default().resolve_for_arch(Arch::X86_64, &["CAP_SYS_BOOT"], (6, 1)).unwrap();
        assert!(allowed(&boot, "reboot"));
    }

    #[test]
    fn arch_specific_rules() {
        let p = Profile::docker_default();
        let s390 = p.resolve_for_arch(Arch::S390X, &[], (6, 1)).unwrap();
        let clone: Vec<_> = s390.rules.iter().filter(|r| r.name == "clone").collect();
        assert_eq!(clone.len(), 1);
        assert_eq!(clone[0].args[0].index, 1);
        assert!(allowed(&s390, "s390_runtime_instr"));
        assert!(!s390.rules.iter().any(|r| r.name == "arch_prctl"));
        assert_eq!(s390.arches, vec![Arch::S390X, Arch::S390]);
        let arm = p.resolve_for_arch(Arch::Aarch64, &[], (6, 1)).unwrap();
        assert!(allowed(&arm, "cacheflush"));
        assert_eq!(arm.arches, vec![Arch::Aarch64, Arch::Arm]);
        let ppc = p.resolve_for_arch(Arch::Ppc64Le, &[], (6, 1)).unwrap();
        assert!(ppc.arches.is_empty(), "no archMap entry for ppc64le in Docker's profile");
        assert!(allowed(&ppc, "swapcontext"));
    }

    #[test]
    fn native_resolution_and_oci_json() {
        let r = Profile::docker_default().resolve(DOCKER_CAPS, (6, 1)).unwrap();
        let oci = r.to_oci_json();
        assert_eq!(oci["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(oci["defaultErrnoRet"], 1);
        if cfg!(target_arch = "x86_64") {
            assert_eq!(
                oci["architectures"],
                serde_json::json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
            );
        }
        let syscalls = oci["syscalls"].as_array().unwrap();
        // The allow-list stays one entry; every name of the resolved filter appears once per rule.
        assert!(syscalls[0]["names"].as_array().unwrap().len() > 300);
        let total: usize = syscalls.iter().map(|s| s["names"].as_array().unwrap().len()).sum();
        assert_eq!(total, r.rules.len());
        let clone3 = syscalls.iter().find(|s| s["names"] == serde_json::json!(["clone3"])).unwrap();
        assert_eq!(clone3["action"], "SCMP_ACT_ERRNO");
        assert_eq!(clone3["errnoRet"], 38);
        let socket = syscalls.iter().find(|s| s["names"] == serde_json::json!(["socket"])).unwrap();
        assert_eq!(
            socket["args"],
            serde_json::json!([{"index":0,"value":40,"valueTwo":0,"op":"SCMP_CMP_NE"}])
        );
    }

    #[test]
    fn kernel_release_parsing() {
        assert_eq!(parse_kernel_release("6.1.0-18-amd64"), Some((6, 1)));
        assert_eq!(parse_kernel_release("4.8-rc5"), Some((4, 8)));
        assert_eq!(parse_kernel_release("3.12.25-gentoo"), Some((3, 12)));
        assert_eq!(parse_kernel_release("garbage"), None);
        let (k, _) = host_kernel().unwrap();
        assert!(k >= 3);
    }
}
