//! Which device nodes a container may read, write or create, enforced by its cgroup.
//!
//! A container runs as root with `CAP_MKNOD`, so file permissions do not keep it away from the
//! host's disks: the cgroup does. The rules are Docker's: deny everything, then allow the few
//! character devices every program expects (`/dev/null`, `/dev/zero`, ttys, ...) and `mknod` of
//! any node, so an image may ship device nodes it can never open.
//!
//! The same rule list drives both cgroup versions:
//! - v1 ([`apply_v1`]): written to `devices.deny` / `devices.allow`, and read back from
//!   `devices.list` to check that the kernel holds what was asked;
//! - v2 ([`attach_v2`]): compiled by [`program`] to a `BPF_PROG_TYPE_CGROUP_DEVICE` program that
//!   is attached to the group's directory.
//!
//! [`allows`] is the reference decision (the v1 kernel's semantics, as runc's devices emulator
//! models them); the generated program is tested against it.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::str::FromStr;

use crate::{Result, RuntimeError};

/// Access to a device node, as the cgroup v1 `rwm` letters. The bit values are the kernel's
/// (`DEVCG_ACC_*` in v1, `BPF_DEVCG_ACC_*` in the BPF context), so they pass through unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Access(u8);

impl Access {
    /// No access at all (refused in rules; useful to build sets).
    pub const NONE: Access = Access(0);
    /// `m`: create the node with mknod(2).
    pub const MKNOD: Access = Access(1);
    /// `r`: open for reading.
    pub const READ: Access = Access(2);
    /// `w`: open for writing.
    pub const WRITE: Access = Access(4);
    /// `rwm`: everything.
    pub const ALL: Access = Access(7);

    /// The kernel's bit mask (mknod 1, read 2, write 4).
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// The access with the kernel's bit mask `bits`, if it has no unknown bit.
    pub const fn from_bits(bits: u8) -> Option<Access> {
        if bits & !Access::ALL.0 == 0 { Some(Access(bits)) } else { None }
    }

    /// Whether every access in `other` is in `self`.
    pub const fn contains(self, other: Access) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether `self` and `other` share an access.
    pub const fn intersects(self, other: Access) -> bool {
        self.0 & other.0 != 0
    }

    /// Whether no access is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The accesses of `self` that are not in `other`.
    pub const fn difference(self, other: Access) -> Access {
        Access(self.0 & !other.0)
    }

    /// Parses `rwm` letters in any order; at least one, no other character.
    pub fn parse(s: &str) -> Result<Access> {
        let mut access = Access::NONE;
        for c in s.chars() {
            access = access
                | match c {
                    'r' => Access::READ,
                    'w' => Access::WRITE,
                    'm' => Access::MKNOD,
                    _ => {
                        return Err(RuntimeError::invalid("device access", s, "only the letters r, w and m"));
                    }
                };
        }
        if access.is_empty() {
            return Err(RuntimeError::invalid("device access", s, "at least one of r, w and m"));
        }
        Ok(access)
    }
}

impl std::ops::BitOr for Access {
    type Output = Access;
    fn bitor(self, rhs: Access) -> Access {
        Access(self.0 | rhs.0)
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (flag, letter) in [(Access::READ, 'r'), (Access::WRITE, 'w'), (Access::MKNOD, 'm')] {
            if self.contains(flag) {
                write!(f, "{letter}")?;
            }
        }
        Ok(())
    }
}

/// The kind of device node a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeviceKind {
    /// `a`: every device. A rule of this kind resets the list (the kernel ignores its numbers).
    All,
    /// `c`: character devices.
    Char,
    /// `b`: block devices.
    Block,
}

impl DeviceKind {
    /// The cgroup v1 letter.
    pub const fn letter(self) -> char {
        match self {
            DeviceKind::All => 'a',
            DeviceKind::Char => 'c',
            DeviceKind::Block => 'b',
        }
    }

    /// The type in the low 16 bits of `bpf_cgroup_dev_ctx.access_type` (`BPF_DEVCG_DEV_*`).
    const fn bpf_type(self) -> Option<i32> {
        match self {
            DeviceKind::All => None,
            DeviceKind::Block => Some(1),
            DeviceKind::Char => Some(2),
        }
    }
}

/// One line of a device allow/deny list: `c 1:3 rwm` allowed or denied. Kept in order, the list
/// means what the cgroup v1 kernel makes of the same lines written one after the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceRule {
    /// Allow (written to `devices.allow`) or deny (`devices.deny`).
    pub allow: bool,
    /// Which nodes.
    pub kind: DeviceKind,
    /// Major number; `None` is `*`.
    pub major: Option<u32>,
    /// Minor number; `None` is `*`.
    pub minor: Option<u32>,
    /// What the rule allows or denies.
    pub access: Access,
}

/// Parses a major or minor number (`*` is any). `u32::MAX` is refused: the v1 kernel would read
/// it as `*`.
fn parse_number(s: &str, line: &str) -> Result<Option<u32>> {
    if s == "*" {
        return Ok(None);
    }
    match s.parse::<u32>() {
        Ok(n) if n != u32::MAX => Ok(Some(n)),
        _ => Err(RuntimeError::invalid("device rule", line, "major and minor are numbers below 2^32-1 or *")),
    }
}

impl DeviceRule {
    /// An allow rule (Docker's `--device-cgroup-rule` adds these).
    pub const fn allow(
        kind: DeviceKind,
        major: Option<u32>,
        minor: Option<u32>,
        access: Access,
    ) -> DeviceRule {
        DeviceRule { allow: true, kind, major, minor, access }
    }

    /// A deny rule.
    pub const fn deny(
        kind: DeviceKind,
        major: Option<u32>,
        minor: Option<u32>,
        access: Access,
    ) -> DeviceRule {
        DeviceRule { allow: false, kind, major, minor, access }
    }

    /// Parses the cgroup v1 syntax `type major:minor access` (`c 1:3 rwm`, `b *:* m`, or `a`
    /// alone) into an allow rule, as Docker's `--device-cgroup-rule` takes it. Use
    /// [`DeviceRule::denied`] for a deny rule.
    pub fn parse(line: &str) -> Result<DeviceRule> {
        let bad = |reason: &str| RuntimeError::invalid("device rule", line, reason.to_string());
        let fields: Vec<&str> = line.split_whitespace().collect();
        let kind = match fields.first().copied() {
            Some("a") => DeviceKind::All,
            Some("c") => DeviceKind::Char,
            Some("b") => DeviceKind::Block,
            _ => return Err(bad("the type is a, c or b")),
        };
        match fields.len() {
            1 if kind == DeviceKind::All => {
                return Ok(DeviceRule::allow(DeviceKind::All, None, None, Access::ALL));
            }
            3 => {}
            _ => return Err(bad("expected `type major:minor access`")),
        }
        let (major, minor) = fields[1].split_once(':').ok_or_else(|| bad("expected major:minor"))?;
        Ok(DeviceRule::allow(
            kind,
            parse_number(major, line)?,
            parse_number(minor, line)?,
            Access::parse(fields[2])?,
        ))
    }

    /// The same rule, denying instead of allowing.
    pub const fn denied(self) -> DeviceRule {
        DeviceRule { allow: false, ..self }
    }

    /// Docker's default list for a non-privileged container: moby's (`oci/defaults.go`: deny
    /// all, allow null, zero, urandom, random, tty, console, deny fuse) followed by the rules runc
    /// appends to every container (`specconv.AllowedDevices`: mknod of any node, null, random,
    /// full, tty, zero, urandom, the pts and ptmx of devpts, and tun). The fuse deny only takes
    /// rw away: `c *:* m` after it gives mknod back, as under Docker.
    pub fn docker_default() -> Vec<DeviceRule> {
        use DeviceKind::{All, Block, Char};
        let c = |major, minor| DeviceRule::allow(Char, Some(major), Some(minor), Access::ALL);
        vec![
            // moby
            DeviceRule::deny(All, None, None, Access::ALL),
            c(1, 5),                                                  // /dev/zero
            c(1, 3),                                                  // /dev/null
            c(1, 9),                                                  // /dev/urandom
            c(1, 8),                                                  // /dev/random
            c(5, 0),                                                  // /dev/tty
            c(5, 1),                                                  // /dev/console
            DeviceRule::deny(Char, Some(10), Some(229), Access::ALL), // /dev/fuse
            // runc
            DeviceRule::allow(Char, None, None, Access::MKNOD),
            DeviceRule::allow(Block, None, None, Access::MKNOD),
            c(1, 3),                                               // /dev/null
            c(1, 8),                                               // /dev/random
            c(1, 7),                                               // /dev/full
            c(5, 0),                                               // /dev/tty
            c(1, 5),                                               // /dev/zero
            c(1, 9),                                               // /dev/urandom
            DeviceRule::allow(Char, Some(136), None, Access::ALL), // /dev/pts/*
            c(5, 2),                                               // /dev/ptmx
            c(10, 200),                                            // /dev/net/tun
        ]
    }
}

impl FromStr for DeviceRule {
    type Err = RuntimeError;
    fn from_str(s: &str) -> Result<DeviceRule> {
        DeviceRule::parse(s)
    }
}

impl fmt::Display for DeviceRule {
    /// The cgroup v1 line (`c 136:* rwm`); whether it allows or denies is the file it goes to.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let num = |n: Option<u32>| n.map_or_else(|| "*".to_string(), |n| n.to_string());
        write!(f, "{} {}:{} {}", self.kind.letter(), num(self.major), num(self.minor), self.access)
    }
}

/// Which nodes an exception is about: kind (never `All`), major, minor.
type Key = (DeviceKind, Option<u32>, Option<u32>);

/// What the v1 kernel holds after a list of rules: a default and exceptions to it, each merged
/// with any earlier exception for exactly the same nodes (`dev_exception_add`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    default_allow: bool,
    exceptions: BTreeMap<Key, Access>,
}

/// Replays `rules` the way the v1 kernel does (a fresh group starts allowing everything):
/// `a` resets the default, a rule of the other action than the default adds an exception, a
/// rule of the same action takes its access away from the exception for exactly those nodes.
/// Also returns why the list should be refused, if it should: a rule that only seems to punch a
/// hole in a wildcard exception (`c *:* m` then deny `c 1:3 m` leaves mknod of 1:3 allowed),
/// which runc refuses too.
fn emulate(rules: &[DeviceRule]) -> (State, Option<String>) {
    let mut state = State { default_allow: true, exceptions: BTreeMap::new() };
    let mut refusal = None;
    for rule in rules {
        if rule.kind == DeviceKind::All {
            state = State { default_allow: rule.allow, exceptions: BTreeMap::new() };
            continue;
        }
        if refusal.is_none() && rule.access.is_empty() {
            refusal = Some(format!("{rule}: no access"));
        }
        let key = (rule.kind, rule.major, rule.minor);
        if rule.allow != state.default_allow {
            let entry = state.exceptions.entry(key).or_insert(Access::NONE);
            *entry = *entry | rule.access;
            continue;
        }
        for wider in [(rule.kind, None, rule.minor), (rule.kind, rule.major, None), (rule.kind, None, None)] {
            if wider != key
                && refusal.is_none()
                && let Some(held) = state.exceptions.get(&wider)
                && held.intersects(rule.access)
            {
                let wider = DeviceRule {
                    allow: !rule.allow,
                    kind: wider.0,
                    major: wider.1,
                    minor: wider.2,
                    access: *held,
                };
                refusal = Some(format!("{rule} cannot take access away from the wider rule {wider}"));
            }
        }
        if let Some(held) = state.exceptions.get_mut(&key) {
            *held = held.difference(rule.access);
            if held.is_empty() {
                state.exceptions.remove(&key);
            }
        }
    }
    (state, refusal)
}

fn matches(key: &Key, kind: DeviceKind, major: u32, minor: u32) -> bool {
    key.0 == kind && key.1.is_none_or(|m| m == major) && key.2.is_none_or(|m| m == minor)
}

/// Refuses a list the kernel would not enforce as it reads: a rule with no access, or one that
/// takes access away from part of a wider exception (the kernel only removes exact matches, so
/// the access would stay granted). [`apply_v1`] and [`attach_v2`] call it first.
pub fn check(rules: &[DeviceRule]) -> Result<()> {
    match emulate(rules).1 {
        None => Ok(()),
        Some(reason) => Err(RuntimeError::invalid(
            "device rules",
            rules
                .iter()
                .map(|r| format!("{} {r}", if r.allow { "allow" } else { "deny" }))
                .collect::<Vec<_>>()
                .join(", "),
            reason,
        )),
    }
}

/// Whether `rules` let a process do `access` on the node `kind major:minor`: the reference
/// decision, with the v1 kernel's semantics. Under a deny default one exception must grant all of
/// `access`; under an allow default no exception may deny any of it. `kind` is `Char` or `Block`
/// (nodes have no other kind; `All` is never allowed).
pub fn allows(rules: &[DeviceRule], kind: DeviceKind, major: u32, minor: u32, access: Access) -> bool {
    if kind == DeviceKind::All {
        return false;
    }
    let state = emulate(rules).0;
    let mut hits = state.exceptions.iter().filter(|(key, _)| matches(key, kind, major, minor));
    if state.default_allow {
        !hits.any(|(_, held)| held.intersects(access))
    } else {
        hits.any(|(_, held)| held.contains(access))
    }
}

/// One eBPF instruction (`struct bpf_insn`), as the kernel reads it from `BPF_PROG_LOAD`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BpfInsn {
    code: u8,
    /// dst register in the low nibble, src in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

/// Opcodes of the instructions [`program`] emits (`linux/bpf.h`, `linux/bpf_common.h`).
pub mod opcode {
    /// `dst = *(u32 *)(src + off)`: BPF_LDX | BPF_MEM | BPF_W.
    pub const LDX_W: u8 = 0x61;
    /// `dst32 &= imm`: BPF_ALU | BPF_AND | BPF_K.
    pub const AND32_K: u8 = 0x54;
    /// `dst32 >>= imm`: BPF_ALU | BPF_RSH | BPF_K.
    pub const RSH32_K: u8 = 0x74;
    /// `dst32 = imm`: BPF_ALU | BPF_MOV | BPF_K.
    pub const MOV32_K: u8 = 0xb4;
    /// `dst32 = src32`: BPF_ALU | BPF_MOV | BPF_X.
    pub const MOV32_X: u8 = 0xbc;
    /// `if dst32 != imm goto +off`: BPF_JMP32 | BPF_JNE | BPF_K.
    pub const JNE32_K: u8 = 0x56;
    /// `if dst32 != src32 goto +off`: BPF_JMP32 | BPF_JNE | BPF_X.
    pub const JNE32_X: u8 = 0x5e;
    /// `if dst32 == imm goto +off`: BPF_JMP32 | BPF_JEQ | BPF_K.
    pub const JEQ32_K: u8 = 0x16;
    /// `return r0`: BPF_JMP | BPF_EXIT.
    pub const EXIT: u8 = 0x95;
}

impl BpfInsn {
    const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> BpfInsn {
        BpfInsn { code, regs: (src << 4) | (dst & 0x0f), off, imm }
    }

    /// The opcode (one of [`opcode`]).
    pub const fn code(&self) -> u8 {
        self.code
    }

    /// The destination register.
    pub const fn dst(&self) -> u8 {
        self.regs & 0x0f
    }

    /// The source register.
    pub const fn src(&self) -> u8 {
        self.regs >> 4
    }

    /// The memory or jump offset (a jump lands at the next instruction + `off`).
    pub const fn off(&self) -> i16 {
        self.off
    }

    /// The immediate operand.
    pub const fn imm(&self) -> i32 {
        self.imm
    }

    fn is_jump(&self) -> bool {
        matches!(self.code, opcode::JNE32_K | opcode::JNE32_X | opcode::JEQ32_K)
    }
}

// Registers: r1 holds the context on entry; the program keeps the type in r2, the access in r3,
// major in r4 and minor in r5, and uses r1 as scratch once they are loaded.
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;

/// Compiles `rules` to a `BPF_PROG_TYPE_CGROUP_DEVICE` program that decides as [`allows`] does.
///
/// The rules are first reduced to the v1 kernel's state (a default and exceptions, see
/// [`allows`]), so the program and a v1 group agree. It reads `bpf_cgroup_dev_ctx` (type in the
/// low 16 bits of `access_type`, access in the high 16, then major and minor), tests each
/// exception in turn and returns its verdict on the first match (1 allow, 0 deny), or the
/// default. An allow exception matches when it grants every requested access, a deny exception
/// when it denies any of them. Comparisons are 32-bit (`BPF_JMP32`, Linux 5.1) so numbers of
/// 2^31 and above compare as they are.
pub fn program(rules: &[DeviceRule]) -> Vec<BpfInsn> {
    let state = emulate(rules).0;
    let mut insns = vec![
        BpfInsn::new(opcode::LDX_W, R2, R1, 0, 0),
        BpfInsn::new(opcode::AND32_K, R2, 0, 0, 0xffff),
        BpfInsn::new(opcode::LDX_W, R3, R1, 0, 0),
        BpfInsn::new(opcode::RSH32_K, R3, 0, 0, 16),
        BpfInsn::new(opcode::LDX_W, R4, R1, 4, 0),
        BpfInsn::new(opcode::LDX_W, R5, R1, 8, 0),
    ];
    let verdict = |allow: bool| i32::from(allow);
    for (&(kind, major, minor), &access) in &state.exceptions {
        let Some(bpf_type) = kind.bpf_type() else { continue };
        let allow = !state.default_allow;
        // Every jump in a block goes to the next block; offsets are patched once it is complete.
        let mut block = vec![BpfInsn::new(opcode::JNE32_K, R2, 0, 0, bpf_type)];
        if allow && access != Access::ALL {
            // Not every requested access granted: (access & granted) != access.
            block.push(BpfInsn::new(opcode::MOV32_X, R1, R3, 0, 0));
            block.push(BpfInsn::new(opcode::AND32_K, R1, 0, 0, i32::from(access.bits())));
            block.push(BpfInsn::new(opcode::JNE32_X, R1, R3, 0, 0));
        } else if !allow {
            // No requested access denied: (access & denied) == 0.
            block.push(BpfInsn::new(opcode::MOV32_X, R1, R3, 0, 0));
            block.push(BpfInsn::new(opcode::AND32_K, R1, 0, 0, i32::from(access.bits())));
            block.push(BpfInsn::new(opcode::JEQ32_K, R1, 0, 0, 0));
        }
        if let Some(major) = major {
            // Reinterpreted, not converted: JMP32 compares the 32 bits.
            block.push(BpfInsn::new(opcode::JNE32_K, R4, 0, 0, major as i32));
        }
        if let Some(minor) = minor {
            block.push(BpfInsn::new(opcode::JNE32_K, R5, 0, 0, minor as i32));
        }
        block.push(BpfInsn::new(opcode::MOV32_K, R0, 0, 0, verdict(allow)));
        block.push(BpfInsn::new(opcode::EXIT, 0, 0, 0, 0));
        let len = block.len();
        for (i, insn) in block.iter_mut().enumerate() {
            if insn.is_jump() {
                // A block is at most 9 instructions long.
                insn.off = (len - i - 1) as i16;
            }
        }
        insns.extend(block);
    }
    insns.push(BpfInsn::new(opcode::MOV32_K, R0, 0, 0, verdict(state.default_allow)));
    insns.push(BpfInsn::new(opcode::EXIT, 0, 0, 0, 0));
    insns
}

fn write(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).map_err(RuntimeError::io("write", path))
}

/// Parses `devices.list` back into the kernel's state (`a *:* rwm` alone is an allow default).
fn read_list(dir: &Path) -> Result<State> {
    let path = dir.join("devices.list");
    let text = fs::read_to_string(&path).map_err(RuntimeError::io("read", &path))?;
    let mut state = State { default_allow: false, exceptions: BTreeMap::new() };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let rule = DeviceRule::parse(line)?;
        if rule.kind == DeviceKind::All {
            state.default_allow = true;
        } else {
            let entry = state.exceptions.entry((rule.kind, rule.major, rule.minor)).or_insert(Access::NONE);
            *entry = *entry | rule.access;
        }
    }
    Ok(state)
}

/// Sets the device rules of the v1 group at `dir` (under the `devices` hierarchy): `a` to
/// `devices.deny` (or `devices.allow` for an allow default), then each exception of the reduced
/// list to the other file, as runc does for a fresh group; then reads `devices.list` back and
/// fails if the kernel holds anything else. Between the reset and the last exception a process
/// already in the group may be refused a device: set the rules before anything joins.
pub fn apply_v1(dir: &Path, rules: &[DeviceRule]) -> Result<()> {
    check(rules)?;
    let (want, _) = emulate(rules);
    let (reset, exceptions) = if want.default_allow {
        ("devices.allow", "devices.deny")
    } else {
        ("devices.deny", "devices.allow")
    };
    write(&dir.join(reset), "a")?;
    for (&(kind, major, minor), &access) in &want.exceptions {
        let rule = DeviceRule { allow: !want.default_allow, kind, major, minor, access };
        write(&dir.join(exceptions), &rule.to_string())?;
    }
    let got = read_list(dir)?;
    // In allow mode the kernel lists only `a *:* rwm`, whatever its exceptions.
    let same = if want.default_allow { got.default_allow } else { got == want };
    if !same {
        return Err(RuntimeError::Devices {
            path: dir.to_path_buf(),
            reason: format!("devices.list holds {got:?} after writing {want:?}"),
        });
    }
    Ok(())
}

// bpf(2) commands, program and attach types, flags (linux/bpf.h).
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The `BPF_PROG_LOAD` part of `union bpf_attr`, up to `expected_attach_type`.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `BPF_PROG_ATTACH` / `BPF_PROG_DETACH` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

/// The `BPF_PROG_QUERY` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    /// The kernel's unnamed `__u32 :32` before `prog_attach_flags`: explicit, so it is zero.
    _pad: u32,
}

// The sizes handed to bpf(2) are the kernel's offsets of the fields after the last one used.
const _: () = assert!(std::mem::size_of::<ProgLoadAttr>() == 72);
const _: () = assert!(std::mem::size_of::<AttachAttr>() == 16);
const _: () = assert!(std::mem::size_of::<QueryAttr>() == 32);
const _: () = assert!(std::mem::size_of::<GetFdAttr>() == 12);
const _: () = assert!(std::mem::size_of::<BpfInsn>() == 8);

/// The `BPF_PROG_GET_FD_BY_ID` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct GetFdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

/// Calls bpf(2) with `attr`; returns its non-negative result.
///
/// # Safety
/// `T` must be the `union bpf_attr` layout `cmd` reads, and every pointer in it valid for what
/// the kernel does with it during the call.
unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: the caller vouches for the layout and the pointers; the size passed is `T`'s, so
    // the kernel reads (and for some commands writes) only within `attr`.
    let ret = unsafe {
        libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>() as libc::c_uint)
    };
    if ret < 0 { Err(std::io::Error::last_os_error()) } else { Ok(ret) }
}

fn bpf_error(op: &'static str, path: &Path, log: String) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let path = path.to_path_buf();
    move |source| RuntimeError::Bpf { op, path, source, log }
}

/// Loads `insns` as a cgroup device program; on failure loads again with the verifier's log.
fn load(insns: &[BpfInsn], path: &Path) -> Result<OwnedFd> {
    let license = c"Apache";
    let attempt = |log: &mut [u8]| {
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: u32::from(!log.is_empty()),
            log_size: log.len() as u32,
            log_buf: if log.is_empty() { 0 } else { log.as_mut_ptr() as u64 },
            expected_attach_type: BPF_CGROUP_DEVICE,
            ..ProgLoadAttr::default()
        };
        attr.prog_name[..8].copy_from_slice(b"weft_dev");
        // SAFETY: the BPF_PROG_LOAD layout; `insns`, `license` and `log` outlive the call and
        // the kernel writes at most `log_size` bytes of log.
        let fd = unsafe { bpf(BPF_PROG_LOAD, &mut attr) }?;
        // SAFETY: a fresh descriptor the kernel just returned, owned by nobody else.
        Ok::<_, std::io::Error>(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
    };
    attempt(&mut []).or_else(|first| {
        let mut log = vec![0u8; 64 * 1024];
        match attempt(&mut log) {
            Ok(fd) => Ok(fd),
            Err(_) => {
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                let text = String::from_utf8_lossy(&log[..end]).trim().to_string();
                Err(bpf_error("load device program", path, text)(first))
            }
        }
    })
}

/// The ids of the device programs attached to the cgroup `dir` directly (not inherited).
fn attached(dir: &fs::File, path: &Path) -> Result<Vec<u32>> {
    let mut ids = vec![0u32; 64];
    loop {
        let mut attr = QueryAttr {
            target_fd: dir.as_raw_fd() as u32,
            attach_type: BPF_CGROUP_DEVICE,
            prog_ids: ids.as_mut_ptr() as u64,
            prog_cnt: ids.len() as u32,
            ..QueryAttr::default()
        };
        // SAFETY: the BPF_PROG_QUERY layout; the kernel writes at most `prog_cnt` ids to `ids`.
        match unsafe { bpf(BPF_PROG_QUERY, &mut attr) } {
            Ok(_) => {
                ids.truncate(attr.prog_cnt as usize);
                return Ok(ids);
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && attr.prog_cnt as usize > ids.len() => {
                ids = vec![0; attr.prog_cnt as usize];
            }
            Err(e) => return Err(bpf_error("query device programs", path, String::new())(e)),
        }
    }
}

/// Detaches the program `id` from the cgroup `dir`; one already gone is not an error.
fn detach(dir: &fs::File, id: u32, path: &Path) -> Result<()> {
    let mut get = GetFdAttr { prog_id: id, ..GetFdAttr::default() };
    // SAFETY: the BPF_PROG_GET_FD_BY_ID layout, no pointers.
    let prog = match unsafe { bpf(BPF_PROG_GET_FD_BY_ID, &mut get) } {
        // SAFETY: a fresh descriptor the kernel just returned, owned by nobody else.
        Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd as RawFd) },
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
        Err(e) => return Err(bpf_error("open old device program", path, String::new())(e)),
    };
    let mut attr = AttachAttr {
        target_fd: dir.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        ..AttachAttr::default()
    };
    // SAFETY: the BPF_PROG_DETACH layout, no pointers; both descriptors are open.
    match unsafe { bpf(BPF_PROG_DETACH, &mut attr) } {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(bpf_error("detach old device program", path, String::new())(e)),
    }
}

/// Enforces `rules` on the cgroup v2 group at `cgroup_dir`: loads [`program`] and attaches it
/// (`BPF_F_ALLOW_MULTI`), then detaches the device programs attached there before, so calling it
/// again replaces the rules with no moment where none apply. The attached program is held by
/// the cgroup; the descriptors are closed on return. Needs `CAP_SYS_ADMIN` (and `CAP_BPF`); no
/// controller needs enabling.
pub fn attach_v2(cgroup_dir: &Path, rules: &[DeviceRule]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    check(rules)?;
    let dir = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(cgroup_dir)
        .map_err(RuntimeError::io("open cgroup", cgroup_dir))?;
    let old = attached(&dir, cgroup_dir)?;
    let prog = load(&program(rules), cgroup_dir)?;
    let mut attr = AttachAttr {
        target_fd: dir.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
    };
    // SAFETY: the BPF_PROG_ATTACH layout, no pointers; both descriptors are open.
    unsafe { bpf(BPF_PROG_ATTACH, &mut attr) }.map_err(bpf_error(
        "attach device program",
        cgroup_dir,
        String::new(),
    ))?;
    for id in old {
        detach(&dir, id, cgroup_dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use DeviceKind::{All, Block, Char};
    use proptest::prelude::*;

    /// Runs a program of the instructions [`program`] emits on a `bpf_cgroup_dev_ctx`, as the
    /// kernel would (32-bit ALU results are zero-extended, JMP32 compares the low halves).
    fn run(insns: &[BpfInsn], kind: DeviceKind, major: u32, minor: u32, access: Access) -> u32 {
        let bpf_type = kind.bpf_type().unwrap() as u32;
        let ctx = [bpf_type | (u32::from(access.bits()) << 16), major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        for _ in 0..10_000 {
            let i = insns[pc];
            let (dst, src) = (usize::from(i.dst()), usize::from(i.src()));
            pc += 1;
            let jump = |taken: bool, pc: &mut usize| {
                if taken {
                    *pc = (*pc as i64 + i64::from(i.off())) as usize;
                }
            };
            match i.code() {
                opcode::LDX_W => {
                    assert_eq!(src, 1, "loads only from the context");
                    let off = i.off() as usize;
                    assert_eq!(off % 4, 0);
                    r[dst] = u64::from(ctx[off / 4]);
                }
                opcode::AND32_K => r[dst] = u64::from(r[dst] as u32 & i.imm() as u32),
                opcode::RSH32_K => r[dst] = u64::from((r[dst] as u32) >> i.imm()),
                opcode::MOV32_K => r[dst] = u64::from(i.imm() as u32),
                opcode::MOV32_X => r[dst] = u64::from(r[src] as u32),
                opcode::JNE32_K => jump(r[dst] as u32 != i.imm() as u32, &mut pc),
                opcode::JNE32_X => jump(r[dst] as u32 != r[src] as u32, &mut pc),
                opcode::JEQ32_K => jump(r[dst] as u32 == i.imm() as u32, &mut pc),
                opcode::EXIT => return r[0] as u32,
                other => panic!("unexpected opcode {other:#x}"),
            }
            assert!(pc < insns.len(), "jumped out of the program");
        }
        panic!("no exit");
    }

    fn rule(s: &str) -> DeviceRule {
        DeviceRule::parse(s).unwrap()
    }

    #[test]
    fn parse_and_display_round_trip() {
        for line in ["c 1:3 rwm", "b *:* m", "c 136:* rwm", "c *:5 r", "b 8:0 rw", "a *:* rwm"] {
            assert_eq!(rule(line).to_string(), line);
        }
        assert_eq!(rule("c 1:3 mwr").to_string(), "c 1:3 rwm", "canonical letter order");
        assert_eq!(rule("a"), DeviceRule::allow(All, None, None, Access::ALL));
        let r = rule("c 10:200 rw");
        assert_eq!((r.allow, r.kind, r.major, r.minor), (true, Char, Some(10), Some(200)));
        assert_eq!(r.access, Access::READ | Access::WRITE);
        assert!(!r.denied().allow);
        assert_eq!(
            "b 8:1 r".parse::<DeviceRule>().unwrap(),
            DeviceRule::allow(Block, Some(8), Some(1), Access::READ)
        );
        for bad in [
            "",
            "x 1:3 rwm",
            "c 1:3",
            "c 1-3 rwm",
            "c 1:3 rwx",
            "c 1:3 ",
            "c -1:3 r",
            "c 1:4294967295 r",
            "c a:3 r",
        ] {
            assert!(DeviceRule::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn docker_defaults_decide_as_docker() {
        let rules = DeviceRule::docker_default();
        check(&rules).unwrap();
        let rw = Access::READ | Access::WRITE;
        for (major, minor) in
            [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2), (136, 0), (136, 7), (10, 200)]
        {
            assert!(allows(&rules, Char, major, minor, Access::ALL), "c {major}:{minor}");
        }
        // The host's disk: mknod yes, read or write no.
        assert!(allows(&rules, Block, 254, 0, Access::MKNOD));
        assert!(!allows(&rules, Block, 254, 0, Access::READ));
        assert!(!allows(&rules, Block, 8, 0, rw));
        assert!(!allows(&rules, Block, 1, 3, Access::READ), "the type matters");
        // fuse: denied by moby, only mknod given back by runc's wildcard.
        assert!(!allows(&rules, Char, 10, 229, Access::READ));
        assert!(allows(&rules, Char, 10, 229, Access::MKNOD));
        // kmsg, mem, a random tty.
        assert!(!allows(&rules, Char, 1, 11, Access::WRITE));
        assert!(!allows(&rules, Char, 1, 1, Access::READ));
        assert!(!allows(&rules, Char, 4, 1, rw));
        // One exception must grant everything asked at once.
        assert!(!allows(&rules, Char, 1, 1, Access::READ | Access::MKNOD));
        assert!(!allows(&rules, All, 1, 3, Access::READ));
    }

    #[test]
    fn v1_semantics_of_the_emulated_list() {
        // Nothing: allow everything (a fresh group inherits its parent's allow-all).
        assert!(allows(&[], Block, 8, 0, Access::ALL));
        // Allow default with a deny exception: any overlap is denied.
        let rules = [rule("c 1:3 w").denied()];
        assert!(!allows(&rules, Char, 1, 3, Access::READ | Access::WRITE));
        assert!(allows(&rules, Char, 1, 3, Access::READ));
        // Same-action rules take access away from exactly that exception.
        let rules = [rule("a").denied(), rule("c 1:3 rwm"), rule("c 1:3 w").denied()];
        assert!(allows(&rules, Char, 1, 3, Access::READ | Access::MKNOD));
        assert!(!allows(&rules, Char, 1, 3, Access::WRITE));
        // Exceptions for the same nodes merge.
        let rules = [rule("a").denied(), rule("c 1:3 r"), rule("c 1:3 w")];
        assert!(allows(&rules, Char, 1, 3, Access::READ | Access::WRITE));
        // `a` resets whatever came before.
        let rules = [rule("a").denied(), rule("c 1:3 r"), rule("a")];
        assert!(allows(&rules, Block, 8, 0, Access::ALL));
        let rules = [rule("c 1:3 r").denied(), rule("a").denied()];
        assert!(!allows(&rules, Char, 1, 4, Access::READ));
    }

    #[test]
    fn holes_in_wildcards_are_refused() {
        let rules = [rule("a").denied(), rule("c *:* m"), rule("c 1:3 m").denied()];
        assert!(check(&rules).is_err());
        assert!(allows(&rules, Char, 1, 3, Access::MKNOD), "the kernel keeps the wildcard's access");
        let rules = [rule("c 1:* rw").denied(), rule("c 1:3 r")];
        assert!(check(&rules).is_err());
        // A hole of other access, or in a narrower exception, is fine.
        check(&[rule("a").denied(), rule("c *:* m"), rule("c 1:3 r").denied()]).unwrap();
        check(&[rule("a").denied(), rule("c 1:3 rw"), rule("c 1:3 w").denied()]).unwrap();
        assert!(check(&[DeviceRule::allow(Char, Some(1), Some(3), Access::NONE)]).is_err());
    }

    #[test]
    fn program_layout() {
        let insns = program(&DeviceRule::docker_default());
        // Six loads/shifts, then per exception a block ending in `mov r0; exit`, then the default.
        assert_eq!(insns[0], BpfInsn::new(opcode::LDX_W, R2, R1, 0, 0));
        assert_eq!(insns.last().unwrap().code(), opcode::EXIT);
        let tail = insns[insns.len() - 2];
        assert_eq!((tail.code(), tail.dst(), tail.imm()), (opcode::MOV32_K, R0, 0), "default deny");
        let exits = insns.iter().filter(|i| i.code() == opcode::EXIT).count();
        let (state, _) = emulate(&DeviceRule::docker_default());
        assert_eq!(exits, state.exceptions.len() + 1);
        assert_eq!(std::mem::size_of::<BpfInsn>(), 8);
        let jump = BpfInsn::new(opcode::JNE32_X, R1, R3, 2, 0);
        assert_eq!((jump.dst(), jump.src(), jump.off()), (1, 3, 2));
        // An allow-all list compiles to `return 1`.
        let all = program(&[]);
        assert_eq!(all.len(), 8);
        assert_eq!(run(&all, Block, 8, 0, Access::ALL), 1);
    }

    #[test]
    fn program_decides_the_docker_defaults_as_allows() {
        let rules = DeviceRule::docker_default();
        let insns = program(&rules);
        for kind in [Char, Block] {
            for major in [0, 1, 4, 5, 10, 136, 254, 0x8000_0000, u32::MAX] {
                for minor in [0, 1, 3, 5, 7, 8, 9, 200, 229, 0xffff_ffff] {
                    for bits in 0..8 {
                        let access = Access::from_bits(bits).unwrap();
                        let want = allows(&rules, kind, major, minor, access);
                        assert_eq!(
                            run(&insns, kind, major, minor, access) == 1,
                            want,
                            "{kind:?} {major}:{minor} {access}"
                        );
                    }
                }
            }
        }
    }

    /// Numbers from a small pool (so rules and requests meet) plus large ones.
    fn number() -> impl Strategy<Value = u32> {
        prop_oneof![0u32..4, Just(136), Just(0x8000_0001), Just(u32::MAX - 1)]
    }

    fn any_rule() -> impl Strategy<Value = DeviceRule> {
        (
            any::<bool>(),
            prop_oneof![1 => Just(All), 4 => Just(Char), 4 => Just(Block)],
            proptest::option::of(number()),
            proptest::option::of(number()),
            1u8..8,
        )
            .prop_map(|(allow, kind, major, minor, bits)| DeviceRule {
                allow,
                kind,
                major,
                minor,
                access: Access::from_bits(bits).unwrap(),
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn program_agrees_with_allows(
            rules in proptest::collection::vec(any_rule(), 0..10),
            requests in proptest::collection::vec(
                (prop_oneof![Just(Char), Just(Block)], number(), number(), 0u8..8), 1..40),
        ) {
            let insns = program(&rules);
            for (kind, major, minor, bits) in requests {
                let access = Access::from_bits(bits).unwrap();
                let want = allows(&rules, kind, major, minor, access);
                prop_assert_eq!(run(&insns, kind, major, minor, access) == 1, want,
                    "{:?} {}:{} {}", kind, major, minor, access);
            }
        }

        #[test]
        fn display_parses_back(r in any_rule()) {
            let line = r.to_string();
            let back = DeviceRule::parse(&line).unwrap();
            if r.kind == All {
                prop_assert_eq!(back.kind, All);
            } else {
                prop_assert_eq!(back, DeviceRule { allow: true, ..r });
            }
        }
    }
}
