//! The builder's seccomp filter, as a hand-assembled classic BPF program.
//!
//! Two rules, as in Nix: `chmod`/`fchmod`/`fchmodat`/`fchmodat2` with
//! `S_ISUID` or `S_ISGID` in the mode fail with EPERM (no setuid/setgid
//! files can appear in the store), and the `set*xattr` calls fail with
//! ENOTSUP (NARs cannot represent extended attributes). Everything else is
//! allowed. Each architecture the CPU can run is filtered with its own
//! syscall numbers (x86_64 also covers x32 and i386, aarch64 covers arm), so
//! 32-bit builders are filtered rather than killed; any other architecture
//! gets ENOSYS for every call.

use libc::sock_filter;

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_ALU_AND_K: u16 = 0x54;
const BPF_JEQ_K: u16 = 0x15;
const BPF_JSET_K: u16 = 0x45;
const BPF_RET_K: u16 = 0x06;

const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;

// Offsets in `struct seccomp_data`.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const fn off_arg_low(i: u32) -> u32 {
    // Little-endian: the low 32 bits of args[i] come first.
    16 + 8 * i
}

/// `S_ISUID | S_ISGID`.
const SETID_BITS: u32 = 0o6000;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Syscall numbers of one architecture (`None`: the call does not exist).
struct ArchCalls {
    audit_arch: u32,
    /// Mask the x32 bit off the syscall number before comparing.
    strip_x32: bool,
    chmod: Option<u32>,
    fchmod: u32,
    fchmodat: u32,
    fchmodat2: u32,
    setxattrs: [u32; 4],
}

#[cfg(target_arch = "x86_64")]
const ARCHES: &[ArchCalls] = &[
    ArchCalls {
        audit_arch: 0xc000_003e, // AUDIT_ARCH_X86_64
        strip_x32: true,
        chmod: Some(90),
        fchmod: 91,
        fchmodat: 268,
        fchmodat2: 452,
        setxattrs: [188, 189, 190, 463],
    },
    ArchCalls {
        audit_arch: 0x4000_0003, // AUDIT_ARCH_I386
        strip_x32: false,
        chmod: Some(15),
        fchmod: 94,
        fchmodat: 306,
        fchmodat2: 452,
        setxattrs: [226, 227, 228, 463],
    },
];

#[cfg(target_arch = "aarch64")]
const ARCHES: &[ArchCalls] = &[
    ArchCalls {
        audit_arch: 0xc000_00b7, // AUDIT_ARCH_AARCH64
        strip_x32: false,
        chmod: None,
        fchmod: 52,
        fchmodat: 53,
        fchmodat2: 452,
        setxattrs: [5, 6, 7, 463],
    },
    ArchCalls {
        audit_arch: 0x4000_0028, // AUDIT_ARCH_ARM
        strip_x32: false,
        chmod: Some(15),
        fchmod: 94,
        fchmodat: 333,
        fchmodat2: 452,
        setxattrs: [226, 227, 228, 463],
    },
];

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ARCHES: &[ArchCalls] = &[];

/// A tiny assembler: jumps name labels, resolved when the program is done.
#[derive(Clone, Copy)]
enum Target {
    Next,
    Label(usize),
}

enum Insn {
    Stmt(u16, u32),
    Jump {
        code: u16,
        k: u32,
        jt: Target,
        jf: Target,
    },
    Label(usize),
}

struct Asm {
    insns: Vec<Insn>,
    labels: usize,
}

impl Asm {
    fn new() -> Asm {
        Asm {
            insns: Vec::new(),
            labels: 0,
        }
    }

    fn label(&mut self) -> usize {
        self.labels += 1;
        self.labels - 1
    }

    fn place(&mut self, l: usize) {
        self.insns.push(Insn::Label(l));
    }

    fn stmt(&mut self, code: u16, k: u32) {
        self.insns.push(Insn::Stmt(code, k));
    }

    fn jump(&mut self, code: u16, k: u32, jt: Target, jf: Target) {
        self.insns.push(Insn::Jump { code, k, jt, jf });
    }

    fn finish(self) -> Result<Vec<sock_filter>, &'static str> {
        let mut at = vec![0usize; self.labels];
        let mut pc = 0;
        for insn in &self.insns {
            match insn {
                Insn::Label(l) => at[*l] = pc,
                _ => pc += 1,
            }
        }
        let mut out = Vec::with_capacity(pc);
        for insn in &self.insns {
            match *insn {
                Insn::Label(_) => {}
                Insn::Stmt(code, k) => out.push(sock_filter {
                    code,
                    jt: 0,
                    jf: 0,
                    k,
                }),
                Insn::Jump { code, k, jt, jf } => {
                    let here = out.len() + 1;
                    let rel = |t: Target| -> Result<u8, &'static str> {
                        match t {
                            Target::Next => Ok(0),
                            Target::Label(l) => at[l]
                                .checked_sub(here)
                                .and_then(|d| u8::try_from(d).ok())
                                .ok_or("seccomp jump out of range"),
                        }
                    };
                    out.push(sock_filter {
                        code,
                        jt: rel(jt)?,
                        jf: rel(jf)?,
                        k,
                    });
                }
            }
        }
        Ok(out)
    }
}

/// Builds the filter program for this CPU.
pub(crate) fn filter() -> Result<Vec<sock_filter>, &'static str> {
    let mut a = Asm::new();
    let allow = a.label();
    let eperm = a.label();
    let enotsup = a.label();

    a.stmt(BPF_LD_W_ABS, OFF_ARCH);
    let arch_labels: Vec<usize> = ARCHES.iter().map(|_| a.label()).collect();
    for (arch, l) in ARCHES.iter().zip(&arch_labels) {
        a.jump(BPF_JEQ_K, arch.audit_arch, Target::Label(*l), Target::Next);
    }
    a.stmt(BPF_RET_K, RET_ERRNO | libc::ENOSYS as u32);

    for (arch, l) in ARCHES.iter().zip(&arch_labels) {
        a.place(*l);
        let mode_arg1 = a.label();
        let mode_arg2 = a.label();
        a.stmt(BPF_LD_W_ABS, OFF_NR);
        if arch.strip_x32 {
            a.stmt(BPF_ALU_AND_K, !X32_SYSCALL_BIT);
        }
        if let Some(chmod) = arch.chmod {
            a.jump(BPF_JEQ_K, chmod, Target::Label(mode_arg1), Target::Next);
        }
        a.jump(
            BPF_JEQ_K,
            arch.fchmod,
            Target::Label(mode_arg1),
            Target::Next,
        );
        a.jump(
            BPF_JEQ_K,
            arch.fchmodat,
            Target::Label(mode_arg2),
            Target::Next,
        );
        a.jump(
            BPF_JEQ_K,
            arch.fchmodat2,
            Target::Label(mode_arg2),
            Target::Next,
        );
        for nr in arch.setxattrs {
            a.jump(BPF_JEQ_K, nr, Target::Label(enotsup), Target::Next);
        }
        a.stmt(BPF_RET_K, RET_ALLOW);
        a.place(mode_arg1);
        a.stmt(BPF_LD_W_ABS, off_arg_low(1));
        a.jump(
            BPF_JSET_K,
            SETID_BITS,
            Target::Label(eperm),
            Target::Label(allow),
        );
        a.place(mode_arg2);
        a.stmt(BPF_LD_W_ABS, off_arg_low(2));
        a.jump(
            BPF_JSET_K,
            SETID_BITS,
            Target::Label(eperm),
            Target::Label(allow),
        );
    }

    a.place(allow);
    a.stmt(BPF_RET_K, RET_ALLOW);
    a.place(eperm);
    a.stmt(BPF_RET_K, RET_ERRNO | libc::EPERM as u32);
    a.place(enotsup);
    a.stmt(BPF_RET_K, RET_ERRNO | libc::ENOTSUP as u32);
    a.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_assembles_with_in_range_jumps() {
        let prog = filter().expect("assembles");
        assert!(prog.len() > 10);
        assert!(prog.len() < 200);
        // The last instruction of the program must be a return.
        assert_eq!(prog.last().map(|i| i.code), Some(BPF_RET_K));
    }
}
