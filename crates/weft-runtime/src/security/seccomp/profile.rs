//! Docker's JSON seccomp profile format, the file `docker run --security-opt seccomp=FILE` reads.
//!
//! Parsing happens in two steps: serde reads the document into plain strings and numbers
//! (`Raw*` types), then [`Profile::from_json`] checks every action, operator, architecture,
//! argument index, syscall name and kernel version and turns them into typed values. That way a
//! mistake is reported as `syscalls[3].action: unknown action "SCMP_ACT_FOO"` rather than as a
//! serde position, and a [`Profile`] in memory is always valid.
//!
//! Like Docker, fields this format does not know are ignored.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::SeccompError;

/// The highest syscall argument index: the kernel passes six arguments, numbered 0 to 5.
pub const MAX_ARG_INDEX: u32 = 5;

/// What the filter does with a system call. The JSON spelling is the libseccomp constant name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    /// `SCMP_ACT_KILL`: kill the calling thread (libseccomp's historical name for KILL_THREAD).
    #[serde(rename = "SCMP_ACT_KILL")]
    Kill,
    /// `SCMP_ACT_KILL_PROCESS`: kill the whole process.
    #[serde(rename = "SCMP_ACT_KILL_PROCESS")]
    KillProcess,
    /// `SCMP_ACT_KILL_THREAD`: kill the calling thread.
    #[serde(rename = "SCMP_ACT_KILL_THREAD")]
    KillThread,
    /// `SCMP_ACT_TRAP`: deliver SIGSYS.
    #[serde(rename = "SCMP_ACT_TRAP")]
    Trap,
    /// `SCMP_ACT_ERRNO`: fail the call with `errnoRet` (EPERM when absent).
    #[serde(rename = "SCMP_ACT_ERRNO")]
    Errno,
    /// `SCMP_ACT_TRACE`: notify a ptrace tracer, with `errnoRet` as the message.
    #[serde(rename = "SCMP_ACT_TRACE")]
    Trace,
    /// `SCMP_ACT_ALLOW`: let the call through.
    #[serde(rename = "SCMP_ACT_ALLOW")]
    Allow,
    /// `SCMP_ACT_LOG`: let the call through and log it.
    #[serde(rename = "SCMP_ACT_LOG")]
    Log,
}

impl Action {
    /// Every action with its JSON spelling, for parsing and error messages.
    const ALL: [(Action, &'static str); 8] = [
        (Action::Kill, "SCMP_ACT_KILL"),
        (Action::KillProcess, "SCMP_ACT_KILL_PROCESS"),
        (Action::KillThread, "SCMP_ACT_KILL_THREAD"),
        (Action::Trap, "SCMP_ACT_TRAP"),
        (Action::Errno, "SCMP_ACT_ERRNO"),
        (Action::Trace, "SCMP_ACT_TRACE"),
        (Action::Allow, "SCMP_ACT_ALLOW"),
        (Action::Log, "SCMP_ACT_LOG"),
    ];

    /// The libseccomp constant name, as written in profiles and in the OCI spec.
    pub fn as_str(self) -> &'static str {
        Action::ALL.iter().find(|(a, _)| *a == self).map(|(_, s)| *s).unwrap_or("SCMP_ACT_KILL")
    }

    /// Parses a JSON action name; `field` names where it was found for the error.
    fn parse(value: &str, field: &str) -> Result<Action, SeccompError> {
        if value == "SCMP_ACT_NOTIFY" {
            return Err(SeccompError::NotifyUnsupported { field: field.to_string() });
        }
        Action::ALL.iter().find(|(_, s)| *s == value).map(|(a, _)| *a).ok_or_else(|| {
            SeccompError::invalid(
                field,
                value,
                format!("unknown action; expected one of {}", names(Action::ALL.iter().map(|x| x.1))),
            )
        })
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a syscall argument is compared with a rule's value(s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    /// `SCMP_CMP_NE`: argument != value.
    #[serde(rename = "SCMP_CMP_NE")]
    NotEqual,
    /// `SCMP_CMP_LT`: argument < value.
    #[serde(rename = "SCMP_CMP_LT")]
    Less,
    /// `SCMP_CMP_LE`: argument <= value.
    #[serde(rename = "SCMP_CMP_LE")]
    LessOrEqual,
    /// `SCMP_CMP_EQ`: argument == value.
    #[serde(rename = "SCMP_CMP_EQ")]
    Equal,
    /// `SCMP_CMP_GE`: argument >= value.
    #[serde(rename = "SCMP_CMP_GE")]
    GreaterOrEqual,
    /// `SCMP_CMP_GT`: argument > value.
    #[serde(rename = "SCMP_CMP_GT")]
    Greater,
    /// `SCMP_CMP_MASKED_EQ`: (argument & value) == valueTwo.
    #[serde(rename = "SCMP_CMP_MASKED_EQ")]
    MaskedEqual,
}

impl Op {
    /// Every operator with its JSON spelling.
    const ALL: [(Op, &'static str); 7] = [
        (Op::NotEqual, "SCMP_CMP_NE"),
        (Op::Less, "SCMP_CMP_LT"),
        (Op::LessOrEqual, "SCMP_CMP_LE"),
        (Op::Equal, "SCMP_CMP_EQ"),
        (Op::GreaterOrEqual, "SCMP_CMP_GE"),
        (Op::Greater, "SCMP_CMP_GT"),
        (Op::MaskedEqual, "SCMP_CMP_MASKED_EQ"),
    ];

    /// The libseccomp constant name.
    pub fn as_str(self) -> &'static str {
        Op::ALL.iter().find(|(o, _)| *o == self).map(|(_, s)| *s).unwrap_or("SCMP_CMP_EQ")
    }

    fn parse(value: &str, field: &str) -> Result<Op, SeccompError> {
        Op::ALL.iter().find(|(_, s)| *s == value).map(|(o, _)| *o).ok_or_else(|| {
            SeccompError::invalid(
                field,
                value,
                format!("unknown operator; expected one of {}", names(Op::ALL.iter().map(|x| x.1))),
            )
        })
    }
}

/// A seccomp architecture (an ABI the kernel can be entered through), spelled `SCMP_ARCH_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(missing_docs)] // each variant is the ABI its name says
pub enum Arch {
    #[serde(rename = "SCMP_ARCH_X86")]
    X86,
    #[serde(rename = "SCMP_ARCH_X86_64")]
    X86_64,
    #[serde(rename = "SCMP_ARCH_X32")]
    X32,
    #[serde(rename = "SCMP_ARCH_ARM")]
    Arm,
    #[serde(rename = "SCMP_ARCH_AARCH64")]
    Aarch64,
    #[serde(rename = "SCMP_ARCH_LOONGARCH64")]
    Loongarch64,
    #[serde(rename = "SCMP_ARCH_M68K")]
    M68k,
    #[serde(rename = "SCMP_ARCH_MIPS")]
    Mips,
    #[serde(rename = "SCMP_ARCH_MIPS64")]
    Mips64,
    #[serde(rename = "SCMP_ARCH_MIPS64N32")]
    Mips64N32,
    #[serde(rename = "SCMP_ARCH_MIPSEL")]
    Mipsel,
    #[serde(rename = "SCMP_ARCH_MIPSEL64")]
    Mipsel64,
    #[serde(rename = "SCMP_ARCH_MIPSEL64N32")]
    Mipsel64N32,
    #[serde(rename = "SCMP_ARCH_PPC")]
    Ppc,
    #[serde(rename = "SCMP_ARCH_PPC64")]
    Ppc64,
    #[serde(rename = "SCMP_ARCH_PPC64LE")]
    Ppc64Le,
    #[serde(rename = "SCMP_ARCH_S390")]
    S390,
    #[serde(rename = "SCMP_ARCH_S390X")]
    S390X,
    #[serde(rename = "SCMP_ARCH_PARISC")]
    Parisc,
    #[serde(rename = "SCMP_ARCH_PARISC64")]
    Parisc64,
    #[serde(rename = "SCMP_ARCH_RISCV64")]
    Riscv64,
    #[serde(rename = "SCMP_ARCH_SH")]
    Sh,
    #[serde(rename = "SCMP_ARCH_SHEB")]
    Sheb,
}

impl Arch {
    /// Every architecture with its `SCMP_ARCH_*` spelling and its libseccomp/Go "native" name,
    /// the one `includes.arches` and `excludes.arches` use.
    pub(crate) const ALL: [(Arch, &'static str, &'static str); 23] = [
        (Arch::X86, "SCMP_ARCH_X86", "x86"),
        (Arch::X86_64, "SCMP_ARCH_X86_64", "amd64"),
        (Arch::X32, "SCMP_ARCH_X32", "x32"),
        (Arch::Arm, "SCMP_ARCH_ARM", "arm"),
        (Arch::Aarch64, "SCMP_ARCH_AARCH64", "arm64"),
        (Arch::Loongarch64, "SCMP_ARCH_LOONGARCH64", "loong64"),
        (Arch::M68k, "SCMP_ARCH_M68K", "m68k"),
        (Arch::Mips, "SCMP_ARCH_MIPS", "mips"),
        (Arch::Mips64, "SCMP_ARCH_MIPS64", "mips64"),
        (Arch::Mips64N32, "SCMP_ARCH_MIPS64N32", "mips64n32"),
        (Arch::Mipsel, "SCMP_ARCH_MIPSEL", "mipsel"),
        (Arch::Mipsel64, "SCMP_ARCH_MIPSEL64", "mipsel64"),
        (Arch::Mipsel64N32, "SCMP_ARCH_MIPSEL64N32", "mipsel64n32"),
        (Arch::Ppc, "SCMP_ARCH_PPC", "ppc"),
        (Arch::Ppc64, "SCMP_ARCH_PPC64", "ppc64"),
        (Arch::Ppc64Le, "SCMP_ARCH_PPC64LE", "ppc64le"),
        (Arch::S390, "SCMP_ARCH_S390", "s390"),
        (Arch::S390X, "SCMP_ARCH_S390X", "s390x"),
        (Arch::Parisc, "SCMP_ARCH_PARISC", "parisc"),
        (Arch::Parisc64, "SCMP_ARCH_PARISC64", "parisc64"),
        (Arch::Riscv64, "SCMP_ARCH_RISCV64", "riscv64"),
        (Arch::Sh, "SCMP_ARCH_SH", "sh"),
        (Arch::Sheb, "SCMP_ARCH_SHEB", "sheb"),
    ];

    /// The `SCMP_ARCH_*` spelling used by profiles and the OCI spec.
    pub fn as_str(self) -> &'static str {
        Arch::ALL.iter().find(|a| a.0 == self).map(|a| a.1).unwrap_or("SCMP_ARCH_NATIVE")
    }

    /// The short name (`amd64`, `arm64`, `s390x`...) that `includes`/`excludes` filters match.
    pub fn native_name(self) -> &'static str {
        Arch::ALL.iter().find(|a| a.0 == self).map(|a| a.2).unwrap_or("")
    }

    /// The architecture this binary was built for, from `std::env::consts::ARCH`, or `None`
    /// on one seccomp does not know.
    pub fn native() -> Option<Arch> {
        Arch::from_rust_arch(std::env::consts::ARCH)
    }

    /// Maps a Rust `target_arch` name (`x86_64`, `aarch64`, ...) to its seccomp architecture.
    /// Endianness decides between the big- and little-endian spellings of PowerPC and MIPS.
    pub fn from_rust_arch(arch: &str) -> Option<Arch> {
        let little = cfg!(target_endian = "little");
        Some(match arch {
            "x86" => Arch::X86,
            "x86_64" => Arch::X86_64,
            "arm" => Arch::Arm,
            "aarch64" => Arch::Aarch64,
            "loongarch64" => Arch::Loongarch64,
            "m68k" => Arch::M68k,
            "mips" if little => Arch::Mipsel,
            "mips" => Arch::Mips,
            "mips64" if little => Arch::Mipsel64,
            "mips64" => Arch::Mips64,
            "powerpc" => Arch::Ppc,
            "powerpc64" if little => Arch::Ppc64Le,
            "powerpc64" => Arch::Ppc64,
            "s390x" => Arch::S390X,
            "riscv64" => Arch::Riscv64,
            _ => return None,
        })
    }

    fn parse(value: &str, field: &str) -> Result<Arch, SeccompError> {
        Arch::ALL.iter().find(|a| a.1 == value).map(|a| a.0).ok_or_else(|| {
            SeccompError::invalid(
                field,
                value,
                format!("unknown architecture; expected one of {}", names(Arch::ALL.iter().map(|a| a.1))),
            )
        })
    }

    /// Checks a short architecture name as used in `includes`/`excludes`. Besides the names in
    /// [`Arch::ALL`] this accepts the spellings Docker's own table uses (`mipsle`,
    /// `mips3l64n32`) and `loongarch64`, so that profiles written for Docker keep loading.
    fn check_native_name(value: &str, field: &str) -> Result<(), SeccompError> {
        const EXTRA: [&str; 3] = ["mipsle", "mips3l64n32", "loongarch64"];
        if Arch::ALL.iter().any(|a| a.2 == value) || EXTRA.contains(&value) {
            return Ok(());
        }
        Err(SeccompError::invalid(
            field,
            value,
            format!("unknown architecture; expected one of {}", names(Arch::ALL.iter().map(|a| a.2))),
        ))
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn names<'a>(it: impl Iterator<Item = &'a str>) -> String {
    it.collect::<Vec<_>>().join(", ")
}

/// A kernel version as `minKernel` spells it, `"<kernel>.<major>"` (e.g. `"4.8"`); minor
/// revisions and distribution suffixes do not take part in comparisons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KernelVersion {
    /// The `4` of `4.8`.
    pub kernel: u32,
    /// The `8` of `4.8`.
    pub major: u32,
}

impl KernelVersion {
    /// Parses `"<kernel>.<major>"` the way Docker does: exactly two dot-separated numbers below
    /// 256, not both zero.
    fn parse(value: &str, field: &str) -> Result<KernelVersion, SeccompError> {
        let bad = |reason: &str| SeccompError::invalid(field, value, reason);
        let (k, m) =
            value.split_once('.').ok_or_else(|| bad("expected \"<kernel>.<major>\", e.g. \"4.8\""))?;
        if m.contains('.') {
            return Err(bad("expected \"<kernel>.<major>\" (no minor revision)"));
        }
        let kernel = k.parse::<u8>().map_err(|_| bad("the kernel number is not an integer below 256"))?;
        let major = m.parse::<u8>().map_err(|_| bad("the major revision is not an integer below 256"))?;
        if kernel == 0 && major == 0 {
            return Err(bad("version cannot be 0.0"));
        }
        Ok(KernelVersion { kernel: kernel.into(), major: major.into() })
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.kernel, self.major)
    }
}

impl Serialize for KernelVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One argument comparison of a rule: all of a rule's comparisons must hold for it to match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArgRule {
    /// Which argument, 0 to [`MAX_ARG_INDEX`].
    pub index: u32,
    /// The value compared with (the mask for `SCMP_CMP_MASKED_EQ`).
    pub value: u64,
    /// The second value; only `SCMP_CMP_MASKED_EQ` uses it (the masked argument must equal it).
    #[serde(skip_serializing_if = "is_zero")]
    pub value_two: u64,
    /// The comparison.
    pub op: Op,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// A condition on the host and container under which a rule is kept (`includes`) or dropped
/// (`excludes`). Every non-empty part of an `includes` must hold; any part of an `excludes`
/// that holds drops the rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Filter {
    /// Capabilities (`CAP_SYS_ADMIN`...): includes need all, excludes any, in the bounding set.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub caps: Vec<String>,
    /// Short architecture names (`amd64`, `arm64`, `s390x`...), matched against the native one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub arches: Vec<String>,
    /// The host kernel must be at least this version (includes) / drops the rule if it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_kernel: Option<KernelVersion>,
}

/// One rule of a profile: an action for a list of syscalls, possibly restricted by argument
/// comparisons and conditional on capabilities, architecture and kernel version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyscallRule {
    /// The syscalls (a legacy single `name` is read into this list).
    pub names: Vec<String>,
    /// What to do when one of them is called and the arguments match.
    pub action: Action,
    /// The errno for `SCMP_ACT_ERRNO` (or the message for `SCMP_ACT_TRACE`); EPERM when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno_ret: Option<u32>,
    /// Argument comparisons, all of which must hold.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<ArgRule>,
    /// Free text kept for people reading the profile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Conditions that must hold for the rule to be used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub includes: Option<Filter>,
    /// Conditions any of which drops the rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub excludes: Option<Filter>,
}

impl SyscallRule {
    /// An unconditional rule with no argument comparisons: the building block of profiles
    /// written in code.
    pub fn new(names: &[&str], action: Action) -> SyscallRule {
        SyscallRule {
            names: names.iter().map(|n| n.to_string()).collect(),
            action,
            errno_ret: None,
            args: Vec::new(),
            comment: None,
            includes: None,
            excludes: None,
        }
    }
}

/// A native architecture with the sub-architectures (compat ABIs) that come with it: resolving a
/// profile on `architecture` lets the filter cover all of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchMapEntry {
    /// The native architecture.
    pub architecture: Arch,
    /// The compat ABIs a process on it can also use (`null` in JSON when none).
    pub sub_architectures: Vec<Arch>,
}

/// A whole Docker seccomp profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// What happens to a syscall no rule matches.
    pub default_action: Action,
    /// The errno for a default action of `SCMP_ACT_ERRNO` (EPERM when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_errno_ret: Option<u32>,
    /// Architectures to cover, listed directly (the older style; excludes `archMap`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub architectures: Vec<Arch>,
    /// Architectures to cover, chosen by the native one (Docker's current style).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub arch_map: Vec<ArchMapEntry>,
    /// The rules, in order.
    pub syscalls: Vec<SyscallRule>,
}

impl Profile {
    /// Reads a Docker JSON profile, refusing anything that does not describe a valid filter
    /// with an error naming the field (`syscalls[3].args[0].op`) and the value found there.
    pub fn from_json(bytes: &[u8]) -> Result<Profile, SeccompError> {
        let raw: RawProfile = serde_json::from_slice(bytes)?;
        raw.validate()
    }

    /// Writes the profile as Docker JSON; [`Profile::from_json`] reads it back unchanged.
    pub fn to_json(&self) -> Result<Vec<u8>, SeccompError> {
        Ok(serde_json::to_vec_pretty(self)?)
    }
}

impl<'de> Deserialize<'de> for Profile {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        RawProfile::deserialize(d)?.validate().map_err(serde::de::Error::custom)
    }
}

/// The profile as JSON spells it, before any value is checked.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawProfile {
    default_action: Option<String>,
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Option<Vec<String>>,
    #[serde(default)]
    arch_map: Option<Vec<RawArchMap>>,
    #[serde(default)]
    syscalls: Option<Vec<RawSyscall>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawArchMap {
    architecture: String,
    #[serde(default)]
    sub_architectures: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSyscall {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    names: Option<Vec<String>>,
    action: Option<String>,
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<RawArg>>,
    #[serde(default)]
    comment: Option<String>,
    #[serde(default)]
    includes: Option<RawFilter>,
    #[serde(default)]
    excludes: Option<RawFilter>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawArg {
    index: u32,
    #[serde(default)]
    value: u64,
    #[serde(default)]
    value_two: u64,
    op: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawFilter {
    #[serde(default)]
    caps: Option<Vec<String>>,
    #[serde(default)]
    arches: Option<Vec<String>>,
    #[serde(default)]
    min_kernel: Option<String>,
}

impl RawProfile {
    fn validate(self) -> Result<Profile, SeccompError> {
        let default_action = match self.default_action.as_deref() {
            Some(a) => Action::parse(a, "defaultAction")?,
            None => return Err(SeccompError::invalid("defaultAction", "", "missing")),
        };
        let architectures = self
            .architectures
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, a)| Arch::parse(a, &format!("architectures[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let mut arch_map = Vec::new();
        for (i, m) in self.arch_map.unwrap_or_default().into_iter().enumerate() {
            let architecture = Arch::parse(&m.architecture, &format!("archMap[{i}].architecture"))?;
            let sub_architectures = m
                .sub_architectures
                .unwrap_or_default()
                .iter()
                .enumerate()
                .map(|(j, a)| Arch::parse(a, &format!("archMap[{i}].subArchitectures[{j}]")))
                .collect::<Result<Vec<_>, _>>()?;
            arch_map.push(ArchMapEntry { architecture, sub_architectures });
        }
        if !architectures.is_empty() && !arch_map.is_empty() {
            return Err(SeccompError::invalid(
                "architectures",
                architectures.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(","),
                "both 'architectures' and 'archMap' are given; use one of them",
            ));
        }
        let syscalls = self
            .syscalls
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, s)| s.validate(&format!("syscalls[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Profile {
            default_action,
            default_errno_ret: self.default_errno_ret,
            architectures,
            arch_map,
            syscalls,
        })
    }
}

impl RawSyscall {
    fn validate(self, at: &str) -> Result<SyscallRule, SeccompError> {
        let names = match (self.name, self.names) {
            (Some(name), Some(names)) if !names.is_empty() => {
                return Err(SeccompError::invalid(
                    format!("{at}.name"),
                    name,
                    "both 'name' and 'names' are given; use 'names'",
                ));
            }
            (Some(name), _) => {
                if name.is_empty() {
                    return Err(SeccompError::invalid(format!("{at}.name"), "", "empty syscall name"));
                }
                vec![name]
            }
            (None, Some(names)) => names,
            (None, None) => Vec::new(),
        };
        for (j, n) in names.iter().enumerate() {
            if n.is_empty() {
                return Err(SeccompError::invalid(format!("{at}.names[{j}]"), "", "empty syscall name"));
            }
        }
        let action = match self.action.as_deref() {
            Some(a) => Action::parse(a, &format!("{at}.action"))?,
            None => return Err(SeccompError::invalid(format!("{at}.action"), "", "missing")),
        };
        let mut args = Vec::new();
        for (j, a) in self.args.unwrap_or_default().into_iter().enumerate() {
            if a.index > MAX_ARG_INDEX {
                return Err(SeccompError::invalid(
                    format!("{at}.args[{j}].index"),
                    a.index.to_string(),
                    format!("a syscall has arguments 0 to {MAX_ARG_INDEX}"),
                ));
            }
            let op = match a.op.as_deref() {
                Some(o) => Op::parse(o, &format!("{at}.args[{j}].op"))?,
                None => return Err(SeccompError::invalid(format!("{at}.args[{j}].op"), "", "missing")),
            };
            args.push(ArgRule { index: a.index, value: a.value, value_two: a.value_two, op });
        }
        let includes = self.includes.map(|f| f.validate(&format!("{at}.includes"))).transpose()?;
        let excludes = self.excludes.map(|f| f.validate(&format!("{at}.excludes"))).transpose()?;
        Ok(SyscallRule {
            names,
            action,
            errno_ret: self.errno_ret,
            args,
            comment: self.comment.filter(|c| !c.is_empty()),
            includes,
            excludes,
        })
    }
}

impl RawFilter {
    fn validate(self, at: &str) -> Result<Filter, SeccompError> {
        let caps = self.caps.unwrap_or_default();
        for (j, c) in caps.iter().enumerate() {
            if c.is_empty() {
                return Err(SeccompError::invalid(format!("{at}.caps[{j}]"), "", "empty capability"));
            }
        }
        let arches = self.arches.unwrap_or_default();
        for (j, a) in arches.iter().enumerate() {
            Arch::check_native_name(a, &format!("{at}.arches[{j}]"))?;
        }
        let min_kernel = match self.min_kernel.as_deref() {
            None | Some("") => None,
            Some(v) => Some(KernelVersion::parse(v, &format!("{at}.minKernel"))?),
        };
        Ok(Filter { caps, arches, min_kernel })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> String {
        match Profile::from_json(json.as_bytes()) {
            Ok(p) => panic!("accepted {json}: {p:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn bad_profiles_name_the_field_and_value() {
        let e = err(r#"{"defaultAction":"SCMP_ACT_NOPE","syscalls":[]}"#);
        assert!(e.contains("defaultAction") && e.contains("SCMP_ACT_NOPE"), "{e}");

        let e = err(r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["read"],"action":"SCMP_ACT_ALLOW"},
            {"names":["write"],"action":"SCMP_ACT_BLOCK"}]}"#);
        assert!(e.contains("syscalls[1].action") && e.contains("SCMP_ACT_BLOCK"), "{e}");

        let e = err(r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["socket"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":1,"op":"SCMP_CMP_APPROX"}]}]}"#);
        assert!(e.contains("syscalls[0].args[0].op") && e.contains("SCMP_CMP_APPROX"), "{e}");

        let e = err(r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["socket"],"action":"SCMP_ACT_ERRNO","args":[{"index":6,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#);
        assert!(e.contains("syscalls[0].args[0].index") && e.contains('6'), "{e}");

        let e = err(r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_VAX"]}"#);
        assert!(e.contains("architectures[0]") && e.contains("SCMP_ARCH_VAX"), "{e}");

        let e = err(r#"{"defaultAction":"SCMP_ACT_ALLOW","archMap":[
            {"architecture":"SCMP_ARCH_X86_64","subArchitectures":["SCMP_ARCH_Z80"]}]}"#);
        assert!(e.contains("archMap[0].subArchitectures[0]") && e.contains("SCMP_ARCH_Z80"), "{e}");

        let e = err(r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["read",""],"action":"SCMP_ACT_ALLOW"}]}"#);
        assert!(e.contains("syscalls[0].names[1]") && e.contains("empty"), "{e}");

        let e =
            err(r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"name":"","action":"SCMP_ACT_ALLOW"}]}"#);
        assert!(e.contains("syscalls[0].name") && e.contains("empty"), "{e}");

        let e = err(r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["read"],"action":"SCMP_ACT_NOTIFY"}]}"#);
        assert!(e.contains("SCMP_ACT_NOTIFY") && e.contains("syscalls[0].action"), "{e}");

        let e = err(r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["read"],"action":"SCMP_ACT_ALLOW","includes":{"arches":["pdp11"]}}]}"#);
        assert!(e.contains("syscalls[0].includes.arches[0]") && e.contains("pdp11"), "{e}");

        let e = err(r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["read"],"action":"SCMP_ACT_ALLOW","excludes":{"minKernel":"4.8.1"}}]}"#);
        assert!(e.contains("syscalls[0].excludes.minKernel") && e.contains("4.8.1"), "{e}");

        let e = err(r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"]}]}"#);
        assert!(e.contains("syscalls[0].action") && e.contains("missing"), "{e}");

        let e = err(r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"name":"read","names":["write"],"action":"SCMP_ACT_ALLOW"}]}"#);
        assert!(e.contains("syscalls[0].name"), "{e}");

        let e = err(r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64"],
            "archMap":[{"architecture":"SCMP_ARCH_X86_64","subArchitectures":null}]}"#);
        assert!(e.contains("archMap"), "{e}");

        let e = err(r#"{"defaultAction": 3}"#);
        assert!(e.contains("JSON"), "{e}");
    }

    #[test]
    fn legacy_name_and_nulls_are_read() {
        let p = Profile::from_json(
            br#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64"],
                "syscalls":[{"name":"read","action":"SCMP_ACT_ALLOW","args":null,"comment":"",
                "includes":{},"excludes":{"minKernel":""}}],
                "flags":["SECCOMP_FILTER_FLAG_LOG"]}"#,
        )
        .unwrap();
        assert_eq!(p.syscalls[0].names, vec!["read".to_string()]);
        assert_eq!(p.syscalls[0].comment, None);
        assert_eq!(p.architectures, vec![Arch::X86_64]);
        let again = Profile::from_json(&p.to_json().unwrap()).unwrap();
        assert_eq!(p, again);
    }

    #[test]
    fn serde_deserialize_validates_too() {
        let e = serde_json::from_str::<Profile>(r#"{"defaultAction":"SCMP_ACT_BAD"}"#).unwrap_err();
        assert!(e.to_string().contains("defaultAction"), "{e}");
        let p: Profile = serde_json::from_str(r#"{"defaultAction":"SCMP_ACT_LOG"}"#).unwrap();
        assert_eq!(p.default_action, Action::Log);
    }
}
