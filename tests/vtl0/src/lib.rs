//! The protocol between the VTL0 test kernel (`src/main.rs`) and whoever drives it: fixed
//! addresses, the test table it reads at boot, and the result lines it prints on the serial
//! console. no_std and without `unsafe`; the table encoder and the result-line parser (which
//! allocate) are behind the `std` feature for host-side tests and runners.
//!
//! # Table (little-endian, at [`Arch::table_gpa`], at most [`TABLE_MAX`] bytes)
//! A [`TableHeader`] (magic `"VTL0"`, version 1, header size 16, entry count, total size in
//! bytes), then `count` entries, back to back, each an [`EntryHeader`] (kind, size of the whole
//! entry, a multiple of 8) and a kind-specific body:
//! - [`KIND_HYPERCALL`]: [`HypercallBody`] (control word, input length, output length), then
//!   the input bytes padded to 8. The fast flag is the control word's bit 16. Not fast: the input
//!   is copied to [`Arch::input_page`] (the rest of the page zeroed), the output page is zeroed,
//!   and `output_len` bytes of [`Arch::output_page`] are reported. Fast: the input fills the
//!   arch's fast-register pool ([`Arch::fast_pool`]) from its start, the rest of the pool is zero,
//!   and `output_len` pool bytes from [`Arch::fast_output_offset`] are reported. With
//!   [`FLAG_GPAS`] (not fast) a [`GpasBody`] follows the body: the call names those input and
//!   output GPAs instead of the kernel's pages (anything: VTL2's memory, an unaligned list), the
//!   input bytes still go to the input page, and `output_len` must be 0 unless the output GPA is
//!   the output page.
//! - [`KIND_READ`]: [`ReadBody`] (GPA, width 1/2/4/8): one load of that width.
//! - [`KIND_WRITE`]: [`WriteBody`] (GPA, value, width): one store of that width.
//! - [`KIND_EXEC`]: [`ExecBody`] (GPA): a call to the GPA, expected to return (e.g. to a `ret`
//!   a write probe put there).
//! - [`KIND_IDT`] (x86_64 only; a bad table on aarch64): [`IdtBody`] (base, limit): the kernel
//!   loads that IDT and raises #UD (`ud2`), after printing its line. Nothing comes back to the
//!   kernel: with an empty IDT (limit below vector 6's gate) the #UD escalates to #GP, #DF and a
//!   triple fault; with the IDT on memory the CPU may not read, the access is made while the
//!   CPU delivers #UD; an IDT the CPU can read delivers #UD to whatever gate is there (the
//!   kernel's own: an unexpected exception).
//! - [`KIND_REPEAT`]: [`RepeatBody`] (count, 1..=[`MAX_REPEAT`]): the next entry, which must be
//!   a hypercall, is made `count` times in a row (see the repeat line below). Its input page or
//!   register pool is set up once, its output page zeroed once, before the first call.
//! - [`KIND_PLACE`]: [`PlaceBody`] (GPA, length), then the bytes padded to 8: the bytes are
//!   stored at that GPA (any GPA, above 4 GiB too, within one page: `gpa % 4096 + len <=
//!   4096`), through a window the kernel maps onto that page for the copy, one probe-like
//!   store at a time (8 bytes where aligned, else 1): e.g. a hypercall input that
//!   [`FLAG_GPAS`] then names.
//!
//! With [`FLAG_VP`] (any kind) a [`VpBody`] follows the entry header, before the kind's body:
//! VP `vp` (below [`MAX_VPS`]) runs the entry instead of VP 0. Each VP runs its own entries in
//! table order, on its own stack and its own input and output pages ([`Arch::vp_input_page`],
//! [`Arch::vp_output_page`]); a repeat and its hypercall run on the same VP. The kernel (on VP 0)
//! starts every other VP the table names with HvCallStartVirtualProcessor of its VTL0 (TLFS
//! vsm.md: INIT/SIPI and PSCI CPU_ON for a lower VTL are dropped once a higher VTL is enabled,
//! and this call is the way), each from its own context (the kernel's page tables, the VP's
//! stack); a started VP learns its index from the hypervisor (x86_64 `HV_X64_MSR_VP_INDEX`;
//! aarch64 HvRegisterVpIndex, as Linux's `hv_common_cpu_init` reads it) and checks it. The VPs
//! run their entries at the same time, each with its own fault recovery record.
//!
//! A hypercall or probe can be made in a mode of its own ([`Mode`], from the entry's flags):
//! [`FLAG_EL0`] (aarch64: from EL0), [`FLAG_32BIT`] (x86_64: from 32-bit compatibility mode,
//! TLFS 32-bit convention), and a VTL entry in the flag bits [`FLAG_VTL_ENTRY_MASK`]
//! ([`VtlEntry`]: arm64 the `hvc` immediate, x86_64 the hypercall page's VTL stub). A hypercall
//! made in such a mode that faults prints a [`FaultSite`] line after its fault line.
//!
//! The kernel validates the whole table before running any entry; a bad table is one
//! `vtl0: bad table: ...` line and a failing power-off.
//!
//! # Result lines
//! Every console line starts with `vtl0: `. First `vtl0: start ...`, then
//! `vtl0: entry name=0x.. ...`: the general-purpose registers and the stack pointer as the
//! kernel found them at its entry point, before it touched them ([`Arch::entry_registers`]
//! names them in order; [`EntryRegisters`] prints the line), then either
//! `vtl0: Hyper-V interface guest_os_id=0x..` or `vtl0: no Hyper-V interface (reason)`, or
//! `vtl0: bad table: reason` (and a failing power-off). Per entry, in order (`i` from 0):
//! - `vtl0: i hypercall control=0x.. skipped` (no Hyper-V interface)
//! - `vtl0: i hypercall control=0x.. result=0x.. out=<hex bytes> canaries=ok` (or
//!   `canaries=bad:rbx,xmm7`: the registers that did not come back unchanged)
//! - `vtl0: i read gpa=0x.. width=N value=0x..`
//! - `vtl0: i write gpa=0x.. width=N value=0x.. ok`
//! - `vtl0: i exec gpa=0x.. returned`
//! - `vtl0: i idt base=0x.. limit=0x.. raising #UD` (the line comes before the `lidt`; see
//!   [`KIND_IDT`] for what follows)
//! - `vtl0: i place gpa=0x.. len=N ok` (a fault's line names the window's address, not the GPA)
//! - `vtl0: i repeat count=N calls=K first=0x.. last=0x.. differed=D canaries_bad=C ticks=T
//!   hz=F` (one line), then the repeated entry's own line for its last call: K calls were made
//!   (K < N only when call K faulted, which ends the run; its line is then the fault), `first` /
//!   `last` are the first and last completed call's result values (0 if none), D completed calls
//!   returned a value other than `first`, C completed calls came back with a broken canary, and
//!   the calls took T ticks of the kernel's counter (aarch64 CNTVCT_EL0; x86_64 the TSC), which
//!   runs at F Hz (aarch64 CNTFRQ_EL0; 0 on x86_64: unknown). Without a Hyper-V interface and
//!   without [`FLAG_FORCE`] nothing is made: `calls=0`, then the entry's `skipped` line.
//! - any of them ending in `fault vector=0x.. code=0x.. cr2=0x..` (x86_64) or
//!   `fault esr=0x.. far=0x..` (aarch64) instead of the outcome.
//! - `vtl0: i fault-site ip=0x.. result=0x..` after the fault line of a hypercall made in a
//!   mode of its own ([`FaultSite`]).
//!
//! then `vtl0: done N entries` and a passing power-off. An exception outside a probe is
//! `vtl0: unexpected exception ...` and a failing power-off. See [`Arch`] for the canaries.
//!
//! Lines a VP other than 0 prints carry its index: `vtl0: vp N: ` and then the line (e.g.
//! `vtl0: vp 2: 5 hypercall ...`); VP 0's lines have none. Lines never interleave (one lock).
//! Before any entry runs, VP 0 prints `vtl0: started vp N` per VP it started (or
//! `vtl0: starting vp N failed: ...` and fails), and each started VP `vtl0: vp N: up`.
//! `done` comes once every VP has run its entries.
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![forbid(unsafe_code)]

use core::fmt;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

#[cfg(any(test, feature = "std"))]
mod encode;
#[cfg(any(test, feature = "std"))]
mod parse;
#[cfg(test)]
mod proptests;
#[cfg(any(test, feature = "std"))]
pub use encode::Table;
#[cfg(any(test, feature = "std"))]
pub use parse::{parse_line, parse_results, CallOutcome, Line, ParseError, Record, Results};

/// `"VTL0"` as a little-endian u32.
pub const TABLE_MAGIC: u32 = u32::from_le_bytes(*b"VTL0");
pub const TABLE_VERSION: u16 = 1;
/// The table window: the kernel never reads past this many bytes from the table GPA.
pub const TABLE_MAX: usize = 1 << 20;
/// More entries than this is a bad table (each prints a line; keeps a run bounded).
pub const MAX_ENTRIES: u32 = 4096;
/// A hypercall's input or output page.
pub const PAGE_SIZE: usize = 4096;

pub const KIND_HYPERCALL: u16 = 1;
pub const KIND_READ: u16 = 2;
pub const KIND_WRITE: u16 = 3;
pub const KIND_EXEC: u16 = 4;
pub const KIND_REPEAT: u16 = 5;
/// x86_64: load an IDT and raise #UD ([`IdtBody`]; see the crate docs).
pub const KIND_IDT: u16 = 6;
pub const KIND_PLACE: u16 = 8;

/// The most calls one repeat entry makes.
pub const MAX_REPEAT: u32 = 100_000_000;

/// Entry flag (hypercalls only): make the call even without a Hyper-V interface. For testing
/// the kernel itself in plain QEMU: on x86_64 a write probe first puts code in
/// [`Arch::hypercall_page`] (e.g. a `ret`); on aarch64 QEMU's PSCI answers the `hvc` (x0 = -1,
/// every other register kept).
pub const FLAG_FORCE: u16 = 1;
/// [`EntryHeader::flags`], hypercalls that are not fast: a [`GpasBody`] names the call's input
/// and output GPAs.
pub const FLAG_GPAS: u16 = 2;
/// Entry flag (aarch64 only; hypercalls and read/write/exec probes): made from EL0. The kernel
/// drops to EL0t at a stub of its own (an EL0-executable page) and comes back to EL1 through
/// that stub's `svc #0` or through the exception the access or call raised (from a lower EL:
/// vector offset 0x400). A probe's GPA must lie in 0x4000_0000..0x8000_0000 (the RAM the
/// kernel maps) outside the 2 MiB block of the kernel's image: for a read or write the kernel
/// opens that GPA's 2 MiB block to EL0 data access (EL0 read-write) and closes it again after
/// (with [`FLAG_VP`], once no VP's EL0 probe needs it any more); an exec needs nothing opened
/// (EL0 may fetch from all of that RAM: UXN is clear).
pub const FLAG_EL0: u16 = 1 << 2;
/// Entry flag (x86_64 only; hypercalls that are not fast, through the ordinary entry): made from
/// 32-bit compatibility mode (a 32-bit code segment, selector 0x18, in the kernel's GDT) with the
/// TLFS 32-bit convention: control EDX:EAX, input GPA EBX:ECX, output GPA EDI:ESI, result
/// EDX:EAX. Only XMM6-XMM15 carry canaries (the architecture leaves the upper halves of the
/// GPRs, and R8-R15, undefined across compatibility mode).
pub const FLAG_32BIT: u16 = 1 << 3;
/// [`EntryHeader::flags`], any kind: a [`VpBody`] right after the entry header names the VP
/// that runs the entry (without it, VP 0).
pub const FLAG_VP: u16 = 1 << 5;
/// Entry flag bits 12-13 (hypercalls only): the [`VtlEntry`] the call goes through, 0 the
/// ordinary one. aarch64: the `hvc` immediate (the registers are loaded as for `hvc #0`);
/// x86_64: the hypercall page's 64-bit VTL call / return stub at the offset
/// HvRegisterVsmCodePageOffsets names (read with a memory-form HvCallGetVpRegisters on the
/// VP's own pages the first time one is needed), with the control word in RCX, the stub's VTL
/// control. 1 is refused.
pub const FLAG_VTL_ENTRY_MASK: u16 = 3 << FLAG_VTL_ENTRY_SHIFT;
pub const FLAG_VTL_ENTRY_SHIFT: u16 = 12;

// The entry flags are distinct bits (bits 12-13 are one field).
const _: () = {
    let flags = [
        FLAG_FORCE,
        FLAG_GPAS,
        FLAG_EL0,
        FLAG_32BIT,
        FLAG_VP,
        FLAG_VTL_ENTRY_MASK,
    ];
    let mut seen = 0u16;
    let mut i = 0;
    while i < flags.len() {
        assert!(seen & flags[i] == 0);
        seen |= flags[i];
        i += 1;
    }
};

/// VPs a table may name (VP indices 0..MAX_VPS).
pub const MAX_VPS: u32 = 16;

/// How a hypercall reaches the hypervisor ([`FLAG_VTL_ENTRY_MASK`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VtlEntry {
    /// `hvc #0` (SMCCC) / the hypercall page's ordinary entry.
    #[default]
    Hypercall,
    /// `hvc #2` / the VTL call stub (TLFS HvCallVtlCall).
    VtlCall,
    /// `hvc #3` / the VTL return stub (TLFS HvCallVtlReturn).
    VtlReturn,
}

impl VtlEntry {
    /// Its value in the flag bits (arm64: the `hvc` immediate).
    pub const fn value(self) -> u16 {
        match self {
            VtlEntry::Hypercall => 0,
            VtlEntry::VtlCall => 2,
            VtlEntry::VtlReturn => 3,
        }
    }

    /// Its bits in [`EntryHeader::flags`].
    pub const fn flags(self) -> u16 {
        self.value() << FLAG_VTL_ENTRY_SHIFT
    }

    fn from_flags(flags: u16) -> Option<VtlEntry> {
        match (flags & FLAG_VTL_ENTRY_MASK) >> FLAG_VTL_ENTRY_SHIFT {
            0 => Some(VtlEntry::Hypercall),
            2 => Some(VtlEntry::VtlCall),
            3 => Some(VtlEntry::VtlReturn),
            _ => None,
        }
    }
}

/// The mode a hypercall entry is made in (its flags).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mode {
    /// [`FLAG_EL0`].
    pub el0: bool,
    /// [`FLAG_32BIT`].
    pub compat32: bool,
    /// [`FLAG_VTL_ENTRY_MASK`].
    pub vtl_entry: VtlEntry,
}

impl Mode {
    /// Anything but a plain 64-bit / EL1 call through the ordinary entry.
    pub fn is_special(&self) -> bool {
        *self != Mode::default()
    }

    /// Its bits in [`EntryHeader::flags`].
    pub const fn flags(&self) -> u16 {
        (if self.el0 { FLAG_EL0 } else { 0 })
            | (if self.compat32 { FLAG_32BIT } else { 0 })
            | self.vtl_entry.flags()
    }
}

/// The RAM the aarch64 kernel maps normal memory (where an EL0 probe must lie).
const ARM64_RAM: core::ops::Range<u64> = 0x4000_0000..0x8000_0000;
/// The aarch64 kernel's level-2 blocks.
pub const ARM64_BLOCK: u64 = 0x20_0000;

/// The guest OS id the kernel registers (TLFS `HV_GUEST_OS_ID`, open-source format): bit 63
/// (open source), OS type 0 (none of the registered ones), OS id 0, version 1 (this protocol's),
/// build 0. Written to `HV_X64_MSR_GUEST_OS_ID` on x86_64 and `HvRegisterGuestOsId` on aarch64.
pub const GUEST_OS_ID: u64 = hvdef::HvGuestOsIdOpenSource::new()
    .with_is_open_source(true)
    .with_version(1)
    .into_bits();

/// Every console line starts with this.
pub const LINE_PREFIX: &str = "vtl0: ";

/// The architecture the kernel runs on: where it lives and what its hypercall ABI uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

/// The kernel's own pages sit at this offset from its load address, after the image (the linker
/// scripts assert the image ends before it): hypercall input, output, the x86 hypercall page,
/// and a scratch page the kernel never touches (for write/read/exec probes of its own memory).
const PAGES_OFFSET: u64 = 0x20_0000;

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    pub const fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// Where the kernel is linked and loaded (physical = virtual).
    pub const fn load_gpa(self) -> u64 {
        match self {
            Arch::X86_64 => 0x0400_0000,
            Arch::Aarch64 => 0x4800_0000,
        }
    }

    /// Where the test table is placed before boot.
    pub const fn table_gpa(self) -> u64 {
        match self {
            Arch::X86_64 => 0x0500_0000,
            Arch::Aarch64 => 0x4900_0000,
        }
    }

    /// A memory-based hypercall's input page (VP 0's: [`Arch::vp_input_page`]).
    pub const fn input_page(self) -> u64 {
        self.load_gpa() + PAGES_OFFSET
    }

    /// A memory-based hypercall's output page (VP 0's).
    pub const fn output_page(self) -> u64 {
        self.load_gpa() + PAGES_OFFSET + 0x1000
    }

    /// VP `vp`'s input page: VP 0's is [`Arch::input_page`], the others' follow the scratch
    /// page, an input and an output page per VP.
    pub const fn vp_input_page(self, vp: u32) -> u64 {
        if vp == 0 {
            return self.input_page();
        }
        self.load_gpa() + PAGES_OFFSET + 0x4000 + (vp as u64 - 1) * 0x2000
    }

    /// VP `vp`'s output page.
    pub const fn vp_output_page(self, vp: u32) -> u64 {
        if vp == 0 {
            return self.output_page();
        }
        self.vp_input_page(vp) + 0x1000
    }

    /// The page given to `HV_X64_MSR_HYPERCALL` (x86_64; unused on aarch64).
    pub const fn hypercall_page(self) -> u64 {
        self.load_gpa() + PAGES_OFFSET + 0x2000
    }

    /// A page of the kernel's own memory that it never uses itself: probes may write, read and
    /// execute it.
    pub const fn scratch_page(self) -> u64 {
        self.load_gpa() + PAGES_OFFSET + 0x3000
    }

    /// The first address past the kernel's memory.
    pub const fn end_gpa(self) -> u64 {
        self.vp_input_page(MAX_VPS)
    }

    /// A GPA outside the kernel's page tables (x86_64 maps the first 4 GiB; aarch64 maps
    /// 0..2 GiB): a read faults (x86 #PF, aarch64 level-1 translation fault).
    pub const fn unmapped_gpa(self) -> u64 {
        match self {
            Arch::X86_64 => 0x1_0000_0000,
            Arch::Aarch64 => 0x8000_0000,
        }
    }

    /// The fast-call register pool, in order, with each register's width in bytes: x86_64 RDX,
    /// R8, XMM0..XMM5; aarch64 X2..X17.
    pub const fn fast_pool(self) -> &'static [(&'static str, usize)] {
        match self {
            Arch::X86_64 => &[
                ("rdx", 8),
                ("r8", 8),
                ("xmm0", 16),
                ("xmm1", 16),
                ("xmm2", 16),
                ("xmm3", 16),
                ("xmm4", 16),
                ("xmm5", 16),
            ],
            Arch::Aarch64 => &[
                ("x2", 8),
                ("x3", 8),
                ("x4", 8),
                ("x5", 8),
                ("x6", 8),
                ("x7", 8),
                ("x8", 8),
                ("x9", 8),
                ("x10", 8),
                ("x11", 8),
                ("x12", 8),
                ("x13", 8),
                ("x14", 8),
                ("x15", 8),
                ("x16", 8),
                ("x17", 8),
            ],
        }
    }

    /// Bytes in the fast-call register pool.
    pub const fn fast_pool_bytes(self) -> usize {
        match self {
            Arch::X86_64 => 16 + 6 * 16,
            Arch::Aarch64 => 16 * 8,
        }
    }

    /// Where a fast call's output starts in the pool: after the input, at the next register
    /// (x86_64: the next 16-byte unit, RDX:R8 counting as one; aarch64: the next X register).
    pub const fn fast_output_offset(self, input_len: usize) -> usize {
        let unit = match self {
            Arch::X86_64 => 16,
            Arch::Aarch64 => 8,
        };
        input_len.div_ceil(unit) * unit
    }

    /// The registers whose values must survive every hypercall (filled with [`canary`] values
    /// before the call, compared after). x86_64: RBX, RSI, RDI, RBP, R9-R15 and XMM6-XMM15
    /// (RAX is the result and holds the hypercall page's address at the `call`, RCX/RDX/R8 the
    /// inputs, RSP cannot be checked); aarch64: X18-X30 (the
    /// kernel saves its frame pointer and link register on the stack around the call, so both
    /// carry canaries too).
    pub const fn canaries(self) -> &'static [&'static str] {
        match self {
            Arch::X86_64 => &[
                "rbx", "rsi", "rdi", "rbp", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "xmm6",
                "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15",
            ],
            Arch::Aarch64 => &[
                "x18", "x19", "x20", "x21", "x22", "x23", "x24", "x25", "x26", "x27", "x28", "x29",
                "x30",
            ],
        }
    }

    /// The registers the `vtl0: entry` line reports, in order: what the kernel's first
    /// instructions store before anything else runs. x86_64: the eight legacy GPRs as 32-bit
    /// values (the PVH entry is 32-bit protected mode, where only their low halves exist),
    /// then R8-R15 as 64-bit values stored by the first instructions in long mode (the kernel
    /// touches none of them before; the architecture leaves R8-R15 undefined across a switch
    /// from legacy mode, and SVM and QEMU keep them). aarch64: X0-X30 and SP (SP_EL1; the
    /// kernel enters at EL1h).
    pub const fn entry_registers(self) -> &'static [&'static str] {
        match self {
            Arch::X86_64 => &[
                "eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi", "r8", "r9", "r10", "r11",
                "r12", "r13", "r14", "r15",
            ],
            Arch::Aarch64 => &[
                "x0", "x1", "x2", "x3", "x4", "x5", "x6", "x7", "x8", "x9", "x10", "x11", "x12",
                "x13", "x14", "x15", "x16", "x17", "x18", "x19", "x20", "x21", "x22", "x23", "x24",
                "x25", "x26", "x27", "x28", "x29", "x30", "sp",
            ],
        }
    }

    /// The registers that carry canaries only in a memory-based (not fast) call, where the
    /// ABI does not use them: x86_64 XMM0-XMM5; aarch64 X4-X17.
    pub const fn slow_only_canaries(self) -> &'static [&'static str] {
        match self {
            Arch::X86_64 => &["xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5"],
            Arch::Aarch64 => &[
                "x4", "x5", "x6", "x7", "x8", "x9", "x10", "x11", "x12", "x13", "x14", "x15",
                "x16", "x17",
            ],
        }
    }
}

/// The distinct pattern register number `n` carries into a hypercall (n: x86_64 GPRs 0-15 in
/// encoding order, XMMn 16+2n and 17+2n for its low and high halves; aarch64 Xn).
pub const fn canary(n: u32) -> u64 {
    0xCA7A_0000_0000_0000 | ((n as u64) << 40) | (0x0101_0101 * (n as u64 + 1))
}

/// The table's first 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct TableHeader {
    /// [`TABLE_MAGIC`].
    pub magic: u32,
    /// [`TABLE_VERSION`].
    pub version: u16,
    /// `size_of::<TableHeader>()` (16).
    pub header_size: u16,
    pub count: u32,
    /// Bytes of the whole table, header included.
    pub total_size: u32,
}

/// Precedes every entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct EntryHeader {
    /// One of the `KIND_*` constants.
    pub kind: u16,
    /// `FLAG_*` bits: [`FLAG_FORCE`], [`FLAG_GPAS`], [`FLAG_EL0`], [`FLAG_32BIT`], [`FLAG_VP`],
    /// [`FLAG_VTL_ENTRY_MASK`]; 0 for none.
    pub flags: u16,
    /// Bytes of the whole entry, this header included; a multiple of 8.
    pub size: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HypercallBody {
    pub control: u64,
    /// Input bytes following this body (padded to 8 in the table).
    pub input_len: u32,
    /// Output bytes to report.
    pub output_len: u32,
}

/// After a [`HypercallBody`] with [`FLAG_GPAS`]: the GPAs the call names.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct GpasBody {
    pub input_gpa: u64,
    pub output_gpa: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ReadBody {
    pub gpa: u64,
    /// 1, 2, 4 or 8.
    pub width: u32,
    pub reserved: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct WriteBody {
    pub gpa: u64,
    /// Only the low `width` bytes are stored.
    pub value: u64,
    /// 1, 2, 4 or 8.
    pub width: u32,
    pub reserved: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ExecBody {
    pub gpa: u64,
}

/// After an [`EntryHeader`] with [`FLAG_VP`]: the VP that runs the entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct VpBody {
    /// Below [`MAX_VPS`].
    pub vp: u32,
    pub reserved: u32,
}

/// An IDT entry ([`KIND_IDT`]): what `lidt` loads.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IdtBody {
    pub base: u64,
    /// 0..=0xFFFF (the IDTR limit is 16 bits).
    pub limit: u32,
    pub reserved: u32,
}

/// A place entry: `len` bytes (following, padded to 8) to store at `gpa`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct PlaceBody {
    pub gpa: u64,
    /// 1..=4096, and the bytes stay in `gpa`'s page.
    pub len: u32,
    pub reserved: u32,
}

/// A repeat entry: the next entry (a hypercall) is made `count` times.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct RepeatBody {
    /// 1..=[`MAX_REPEAT`].
    pub count: u32,
    pub reserved: u32,
}

const _: () = {
    assert!(size_of::<RepeatBody>() == 8);
    assert!(size_of::<VpBody>() == 8);
    assert!(size_of::<TableHeader>() == 16);
    assert!(size_of::<EntryHeader>() == 8);
    assert!(size_of::<HypercallBody>() == 16);
    assert!(size_of::<GpasBody>() == 16);
    assert!(size_of::<ReadBody>() == 16);
    assert!(size_of::<WriteBody>() == 24);
    assert!(size_of::<ExecBody>() == 8);
    assert!(size_of::<IdtBody>() == 16);
    assert!(size_of::<PlaceBody>() == 16);
};

/// One validated table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry<'a> {
    Hypercall {
        control: u64,
        input: &'a [u8],
        output_len: usize,
        /// [`FLAG_FORCE`]: made even without a Hyper-V interface.
        force: bool,
        /// [`FLAG_GPAS`]: the input and output GPAs the call names.
        gpas: Option<(u64, u64)>,
        /// [`FLAG_EL0`], [`FLAG_32BIT`], [`FLAG_VTL_ENTRY_MASK`].
        mode: Mode,
    },
    Read {
        gpa: u64,
        width: u8,
        /// [`FLAG_EL0`].
        el0: bool,
    },
    Write {
        gpa: u64,
        width: u8,
        value: u64,
        /// [`FLAG_EL0`].
        el0: bool,
    },
    Exec {
        gpa: u64,
        /// [`FLAG_EL0`].
        el0: bool,
    },
    /// Make the next entry, a hypercall, `count` times.
    Repeat { count: u32 },
    /// Load this IDT and raise #UD (x86_64).
    Idt { base: u64, limit: u16 },
    /// Store `bytes` at `gpa` (inside one page).
    Place { gpa: u64, bytes: &'a [u8] },
}

/// Whether a hypercall control word asks for a fast (register) call: bit 16.
pub fn is_fast(control: u64) -> bool {
    hvdef::Control::from_bits(control).fast()
}

/// Why a table was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableError {
    TooShort {
        len: usize,
    },
    BadMagic {
        magic: u32,
    },
    BadVersion {
        version: u16,
    },
    BadHeaderSize {
        size: u16,
    },
    TooLarge {
        total_size: u32,
    },
    Truncated {
        total_size: u32,
        available: usize,
    },
    TooManyEntries {
        count: u32,
    },
    /// Entry `index`'s header or body does not fit in the table.
    EntryPastEnd {
        index: u32,
        offset: usize,
    },
    BadEntrySize {
        index: u32,
        size: u32,
    },
    UnknownKind {
        index: u32,
        kind: u16,
    },
    /// Flags other than [`FLAG_FORCE`], or that flag on an entry other than a hypercall.
    BadFlags {
        index: u32,
        flags: u16,
    },
    BadWidth {
        index: u32,
        width: u32,
    },
    /// A hypercall's input or output does not fit its page or the fast register pool.
    BadLength {
        index: u32,
        input_len: u32,
        output_len: u32,
    },
    /// A repeat count of 0 or over [`MAX_REPEAT`].
    BadRepeatCount {
        index: u32,
        count: u32,
    },
    /// The repeat entry `index` is the last entry or is followed by something other than a
    /// hypercall.
    BadRepeatTarget {
        index: u32,
    },
    /// A [`VpBody`] naming a VP at or past [`MAX_VPS`], or with its reserved field set.
    BadVp {
        index: u32,
        vp: u32,
    },
    /// The repeat entry `index` and its hypercall name different VPs.
    RepeatOnOtherVp {
        index: u32,
    },
    /// An entry kind this arch has no use for ([`KIND_IDT`] on aarch64).
    NotOnThisArch {
        index: u32,
        kind: u16,
    },
    /// An IDT limit over 0xFFFF or a nonzero reserved word.
    BadIdt {
        index: u32,
        limit: u32,
    },
    /// A place entry's bytes are empty or leave their page.
    BadPlace {
        index: u32,
        gpa: u64,
        len: u32,
    },
    /// Bytes after the last entry (total size larger than the entries).
    TrailingBytes {
        offset: usize,
        total_size: u32,
    },
    /// An EL0 probe of a GPA the kernel cannot open to EL0 (see [`FLAG_EL0`]).
    BadEl0Gpa {
        index: u32,
        gpa: u64,
    },
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            TableError::TooShort { len } => write!(f, "{len} bytes is shorter than the header"),
            TableError::BadMagic { magic } => {
                write!(f, "magic {magic:#x}, expected {TABLE_MAGIC:#x}")
            }
            TableError::BadVersion { version } => {
                write!(f, "version {version}, expected {TABLE_VERSION}")
            }
            TableError::BadHeaderSize { size } => write!(f, "header size {size}, expected 16"),
            TableError::TooLarge { total_size } => write!(
                f,
                "total size {total_size:#x} exceeds the {TABLE_MAX:#x}-byte window"
            ),
            TableError::Truncated {
                total_size,
                available,
            } => write!(
                f,
                "total size {total_size:#x} but only {available:#x} bytes"
            ),
            TableError::TooManyEntries { count } => {
                write!(f, "count {count} exceeds {MAX_ENTRIES}")
            }
            TableError::EntryPastEnd { index, offset } => {
                write!(
                    f,
                    "entry {index} at offset {offset:#x} runs past the table end"
                )
            }
            TableError::BadEntrySize { index, size } => {
                write!(f, "entry {index} has size {size}")
            }
            TableError::UnknownKind { index, kind } => {
                write!(f, "entry {index} has unknown kind {kind}")
            }
            TableError::BadFlags { index, flags } => {
                write!(f, "entry {index} has flags {flags:#x}")
            }
            TableError::BadWidth { index, width } => {
                write!(f, "entry {index} has width {width}")
            }
            TableError::BadLength {
                index,
                input_len,
                output_len,
            } => write!(
                f,
                "entry {index}: input {input_len} / output {output_len} bytes do not fit"
            ),
            TableError::BadRepeatCount { index, count } => {
                write!(f, "entry {index} repeats {count} times (1..={MAX_REPEAT})")
            }
            TableError::BadRepeatTarget { index } => {
                write!(f, "repeat entry {index} is not followed by a hypercall")
            }
            TableError::BadVp { index, vp } => {
                write!(f, "entry {index} names vp {vp} (0..{MAX_VPS}, reserved 0)")
            }
            TableError::RepeatOnOtherVp { index } => {
                write!(
                    f,
                    "repeat entry {index} and its hypercall name different VPs"
                )
            }
            TableError::NotOnThisArch { index, kind } => {
                write!(
                    f,
                    "entry {index} has kind {kind}, which this arch does not run"
                )
            }
            TableError::BadIdt { index, limit } => {
                write!(
                    f,
                    "entry {index} has IDT limit {limit:#x} (at most 0xffff, reserved 0)"
                )
            }
            TableError::BadPlace { index, gpa, len } => write!(
                f,
                "entry {index} places {len} bytes at {gpa:#x}: not 1..=4096 inside one page"
            ),
            TableError::TrailingBytes { offset, total_size } => write!(
                f,
                "entries end at {offset:#x} but total size is {total_size:#x}"
            ),
            TableError::BadEl0Gpa { index, gpa } => write!(
                f,
                "entry {index}: an EL0 probe of GPA {gpa:#x} (not RAM the kernel maps, or its \
                 own image's block)"
            ),
        }
    }
}

/// Reads the header and checks it: the number of bytes the whole table takes (at most
/// [`TABLE_MAX`]), so the kernel knows how much to copy in before [`parse_table`].
pub fn table_size(header: &[u8]) -> Result<usize, TableError> {
    let (h, _) = TableHeader::read_from_prefix(header)
        .map_err(|_| TableError::TooShort { len: header.len() })?;
    if h.magic != TABLE_MAGIC {
        return Err(TableError::BadMagic { magic: h.magic });
    }
    if h.version != TABLE_VERSION {
        return Err(TableError::BadVersion { version: h.version });
    }
    if usize::from(h.header_size) != size_of::<TableHeader>() {
        return Err(TableError::BadHeaderSize {
            size: h.header_size,
        });
    }
    let total = h.total_size as usize;
    if total > TABLE_MAX {
        return Err(TableError::TooLarge {
            total_size: h.total_size,
        });
    }
    if total < size_of::<TableHeader>() {
        return Err(TableError::Truncated {
            total_size: h.total_size,
            available: size_of::<TableHeader>(),
        });
    }
    if h.count > MAX_ENTRIES {
        return Err(TableError::TooManyEntries { count: h.count });
    }
    Ok(total)
}

/// A table that passed [`parse_table`]: every entry is known to be well formed.
#[derive(Clone, Copy, Debug)]
pub struct ParsedTable<'a> {
    bytes: &'a [u8],
    count: u32,
    arch: Arch,
    /// The VPs the entries name, bit per VP (VP 0's bit set when any entry runs there).
    vps: u32,
}

impl<'a> ParsedTable<'a> {
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Bytes of the whole table, header included.
    pub fn total_size(&self) -> usize {
        self.bytes.len()
    }

    /// The VPs the entries name ([`FLAG_VP`]; VP 0 for the rest), bit per VP.
    pub fn vps(&self) -> u32 {
        self.vps
    }

    /// The entries in order, each with the VP that runs it.
    pub fn placed_entries(&self) -> impl Iterator<Item = Result<(u32, Entry<'a>), TableError>> {
        let mut entries = self.entries();
        core::iter::from_fn(move || {
            let entry = entries.next()?;
            Some(entry.map(|e| (entries.vp, e)))
        })
    }

    /// The entries in order.
    pub fn entries(&self) -> Entries<'a> {
        Entries {
            rest: &self.bytes[size_of::<TableHeader>()..],
            offset: size_of::<TableHeader>(),
            index: 0,
            count: self.count,
            arch: self.arch,
            after_repeat: false,
            vp: 0,
        }
    }
}

/// Checks the whole table (header, every entry, exact total size) for `arch`.
pub fn parse_table(bytes: &[u8], arch: Arch) -> Result<ParsedTable<'_>, TableError> {
    let total = table_size(bytes)?;
    let bytes = bytes.get(..total).ok_or(TableError::Truncated {
        total_size: total as u32,
        available: bytes.len(),
    })?;
    let count = TableHeader::read_from_prefix(bytes)
        .map_err(|_| TableError::TooShort { len: bytes.len() })?
        .0
        .count;
    let mut table = ParsedTable {
        bytes,
        count,
        arch,
        vps: 0,
    };
    let mut entries = table.entries();
    let mut vps = 0;
    for _ in 0..count {
        entries
            .next()
            .unwrap_or(Err(TableError::TooShort { len: 0 }))?;
        vps |= 1 << entries.vp;
    }
    table.vps = vps;
    if entries.after_repeat {
        return Err(TableError::BadRepeatTarget { index: count - 1 });
    }
    if entries.offset != total {
        return Err(TableError::TrailingBytes {
            offset: entries.offset,
            total_size: total as u32,
        });
    }
    Ok(table)
}

/// Iterator over a table's entries (each checked as it is read).
#[derive(Clone, Debug)]
pub struct Entries<'a> {
    rest: &'a [u8],
    offset: usize,
    index: u32,
    count: u32,
    arch: Arch,
    /// The previous entry was a repeat: this one must be a hypercall.
    after_repeat: bool,
    /// The VP of the entry read last ([`FLAG_VP`], else 0).
    vp: u32,
}

fn width(index: u32, width: u32) -> Result<u8, TableError> {
    match width {
        1 | 2 | 4 | 8 => Ok(width as u8),
        _ => Err(TableError::BadWidth { index, width }),
    }
}

impl<'a> Entries<'a> {
    fn entry(&mut self) -> Result<Entry<'a>, TableError> {
        let index = self.index;
        let past_end = TableError::EntryPastEnd {
            index,
            offset: self.offset,
        };
        let (header, _) = EntryHeader::read_from_prefix(self.rest).map_err(|_| past_end)?;
        let size = header.size as usize;
        if size < size_of::<EntryHeader>() || !size.is_multiple_of(8) {
            return Err(TableError::BadEntrySize {
                index,
                size: header.size,
            });
        }
        let whole = self.rest.get(..size).ok_or(past_end)?;
        let mut body = &whole[size_of::<EntryHeader>()..];
        let bad_size = TableError::BadEntrySize {
            index,
            size: header.size,
        };
        let el0_flag = if self.arch == Arch::Aarch64 {
            FLAG_EL0
        } else {
            0
        };
        let allowed_flags = FLAG_VP
            | match header.kind {
                KIND_HYPERCALL => {
                    let compat32 = if self.arch == Arch::X86_64 {
                        FLAG_32BIT
                    } else {
                        0
                    };
                    FLAG_FORCE | FLAG_GPAS | el0_flag | compat32 | FLAG_VTL_ENTRY_MASK
                }
                KIND_READ | KIND_WRITE | KIND_EXEC => el0_flag,
                _ => 0,
            };
        let bad_flags = TableError::BadFlags {
            index,
            flags: header.flags,
        };
        if header.flags & !allowed_flags != 0 {
            return Err(bad_flags);
        }
        let vp = if header.flags & FLAG_VP != 0 {
            let (v, rest) = VpBody::read_from_prefix(body).map_err(|_| bad_size)?;
            if v.vp >= MAX_VPS || v.reserved != 0 {
                return Err(TableError::BadVp { index, vp: v.vp });
            }
            body = rest;
            v.vp
        } else {
            0
        };
        if self.after_repeat && vp != self.vp {
            return Err(TableError::RepeatOnOtherVp { index: index - 1 });
        }
        let el0 = header.flags & FLAG_EL0 != 0;
        let el0_gpa = |gpa: u64| {
            let image_block = self.arch.load_gpa() & !(ARM64_BLOCK - 1);
            if !el0 || (ARM64_RAM.contains(&gpa) && gpa & !(ARM64_BLOCK - 1) != image_block) {
                Ok(())
            } else {
                Err(TableError::BadEl0Gpa { index, gpa })
            }
        };
        let entry = match header.kind {
            KIND_HYPERCALL => {
                let (h, rest) = HypercallBody::read_from_prefix(body).map_err(|_| bad_size)?;
                let (gpas, input) = if header.flags & FLAG_GPAS != 0 {
                    if is_fast(h.control) {
                        return Err(TableError::BadFlags {
                            index,
                            flags: header.flags,
                        });
                    }
                    let (g, input) = GpasBody::read_from_prefix(rest).map_err(|_| bad_size)?;
                    (Some((g.input_gpa, g.output_gpa)), input)
                } else {
                    (None, rest)
                };
                let (input_len, output_len) = (h.input_len as usize, h.output_len as usize);
                let bad_len = TableError::BadLength {
                    index,
                    input_len: h.input_len,
                    output_len: h.output_len,
                };
                let fits = if is_fast(h.control) {
                    let pool = self.arch.fast_pool_bytes();
                    input_len <= pool
                        && output_len <= pool - self.arch.fast_output_offset(input_len).min(pool)
                } else {
                    input_len <= PAGE_SIZE && output_len <= PAGE_SIZE
                };
                // Output is read back from the kernel's own page only.
                let own_output = gpas.is_none_or(|(_, out)| out == self.arch.output_page());
                if !fits || (output_len != 0 && !own_output) {
                    return Err(bad_len);
                }
                if input.len() != input_len.div_ceil(8) * 8 {
                    return Err(bad_size);
                }
                let mode = Mode {
                    el0,
                    compat32: header.flags & FLAG_32BIT != 0,
                    vtl_entry: VtlEntry::from_flags(header.flags).ok_or(bad_flags)?,
                };
                // 32-bit: the ordinary entry, memory form only (the 32-bit convention has no
                // register pool here).
                if mode.compat32 && (is_fast(h.control) || mode.vtl_entry != VtlEntry::Hypercall) {
                    return Err(bad_flags);
                }
                Entry::Hypercall {
                    control: h.control,
                    input: &input[..input_len],
                    output_len,
                    force: header.flags & FLAG_FORCE != 0,
                    gpas,
                    mode,
                }
            }
            KIND_READ => {
                let b = ReadBody::read_from_bytes(body).map_err(|_| bad_size)?;
                el0_gpa(b.gpa)?;
                Entry::Read {
                    gpa: b.gpa,
                    width: width(index, b.width)?,
                    el0,
                }
            }
            KIND_WRITE => {
                let b = WriteBody::read_from_bytes(body).map_err(|_| bad_size)?;
                el0_gpa(b.gpa)?;
                Entry::Write {
                    gpa: b.gpa,
                    width: width(index, b.width)?,
                    value: b.value,
                    el0,
                }
            }
            KIND_EXEC => {
                let b = ExecBody::read_from_bytes(body).map_err(|_| bad_size)?;
                el0_gpa(b.gpa)?;
                Entry::Exec { gpa: b.gpa, el0 }
            }
            KIND_REPEAT => {
                let b = RepeatBody::read_from_bytes(body).map_err(|_| bad_size)?;
                if b.count == 0 || b.count > MAX_REPEAT {
                    return Err(TableError::BadRepeatCount {
                        index,
                        count: b.count,
                    });
                }
                Entry::Repeat { count: b.count }
            }
            KIND_IDT if self.arch != Arch::X86_64 => {
                return Err(TableError::NotOnThisArch {
                    index,
                    kind: header.kind,
                })
            }
            KIND_IDT => {
                let b = IdtBody::read_from_bytes(body).map_err(|_| bad_size)?;
                let limit = u16::try_from(b.limit)
                    .ok()
                    .filter(|_| b.reserved == 0)
                    .ok_or(TableError::BadIdt {
                        index,
                        limit: b.limit,
                    })?;
                Entry::Idt {
                    base: b.base,
                    limit,
                }
            }
            KIND_PLACE => {
                let (b, rest) = PlaceBody::read_from_prefix(body).map_err(|_| bad_size)?;
                let len = b.len as usize;
                let in_page = (b.gpa % PAGE_SIZE as u64) as usize + len <= PAGE_SIZE;
                if len == 0 || !in_page {
                    return Err(TableError::BadPlace {
                        index,
                        gpa: b.gpa,
                        len: b.len,
                    });
                }
                if rest.len() != len.div_ceil(8) * 8 {
                    return Err(bad_size);
                }
                Entry::Place {
                    gpa: b.gpa,
                    bytes: &rest[..len],
                }
            }
            kind => return Err(TableError::UnknownKind { index, kind }),
        };
        let is_hypercall = matches!(entry, Entry::Hypercall { .. });
        if self.after_repeat && !is_hypercall {
            return Err(TableError::BadRepeatTarget { index: index - 1 });
        }
        self.after_repeat = matches!(entry, Entry::Repeat { .. });
        self.vp = vp;
        self.rest = &self.rest[size..];
        self.offset += size;
        self.index += 1;
        Ok(entry)
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<Entry<'a>, TableError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.index >= self.count {
            return None;
        }
        let r = self.entry();
        if r.is_err() {
            // One error ends the walk.
            self.count = self.index;
        }
        Some(r)
    }
}

/// What an exception during a probe recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    X86 { vector: u8, code: u64, cr2: u64 },
    Arm64 { esr: u64, far: u64 },
}

impl Fault {
    /// The ESR exception class (aarch64) or the vector (x86_64).
    pub fn class(&self) -> u64 {
        match *self {
            Fault::X86 { vector, .. } => u64::from(vector),
            Fault::Arm64 { esr, .. } => esr >> 26,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Fault::X86 { vector, code, cr2 } => {
                write!(f, "fault vector={vector:#x} code={code:#x} cr2={cr2:#x}")
            }
            Fault::Arm64 { esr, far } => write!(f, "fault esr={esr:#x} far={far:#x}"),
        }
    }
}

/// Where a hypercall made in a mode of its own ([`Mode::is_special`]) faulted, as its
/// exception recorded it: the line `vtl0: i fault-site ip=0x.. result=0x..` right after its
/// fault line. `ip` is the faulting PC (x86_64 the stacked RIP, aarch64 ELR_EL1) and `result`
/// the call's result register at the exception (x86_64 RAX, or EDX:EAX for a 32-bit call;
/// aarch64 X0): a call that faults leaves the IP on its instruction and the register as the
/// call had it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultSite {
    pub ip: u64,
    pub result: u64,
}

impl fmt::Display for FaultSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fault-site ip={:#x} result={:#x}", self.ip, self.result)
    }
}

/// Hex digits of `bytes`, two per byte, no separator (the `out=` field).
pub struct Hex<'a>(pub &'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The registers in `bad` joined with commas, or `ok` (the `canaries=` field).
pub struct Canaries<'a>(pub &'a [&'a str]);

impl fmt::Display for Canaries<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("ok");
        }
        f.write_str("bad:")?;
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(r)?;
        }
        Ok(())
    }
}

/// What one entry did, as the kernel prints it (no allocation): [`fmt::Display`] writes the
/// result line without the `vtl0: ` prefix and newline.
#[derive(Clone, Copy, Debug)]
pub enum EntryLine<'a> {
    HypercallSkipped {
        control: u64,
    },
    Hypercall {
        control: u64,
        result: u64,
        out: &'a [u8],
        bad_canaries: &'a [&'a str],
    },
    HypercallFault {
        control: u64,
        fault: Fault,
    },
    Read {
        gpa: u64,
        width: u8,
        outcome: Result<u64, Fault>,
    },
    Write {
        gpa: u64,
        width: u8,
        value: u64,
        outcome: Result<(), Fault>,
    },
    Exec {
        gpa: u64,
        outcome: Result<(), Fault>,
    },
    Repeat(RepeatStats),
    /// Printed before the `lidt` (nothing comes back).
    Idt {
        base: u64,
        limit: u16,
    },
    Place {
        gpa: u64,
        len: usize,
        outcome: Result<(), Fault>,
    },
}

/// What a repeat entry's calls did (its line; see the crate docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RepeatStats {
    /// Calls asked for.
    pub count: u32,
    /// Calls made (fewer than `count` only if the last one faulted).
    pub calls: u32,
    /// The first and last completed call's result value (0 if none completed).
    pub first: u64,
    pub last: u64,
    /// Completed calls whose result differed from `first`.
    pub differed: u32,
    /// Completed calls with at least one broken canary.
    pub canaries_bad: u32,
    /// Counter ticks the calls took, and the counter's frequency (0: unknown).
    pub ticks: u64,
    pub hz: u64,
}

impl RepeatStats {
    /// Calls per second by the kernel's counter, if its frequency is known.
    pub fn calls_per_second(&self) -> Option<f64> {
        (self.hz != 0 && self.ticks != 0)
            .then(|| f64::from(self.calls) * self.hz as f64 / self.ticks as f64)
    }
}

impl fmt::Display for RepeatStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "repeat count={} calls={} first={:#x} last={:#x} differed={} canaries_bad={} ticks={} hz={}",
            self.count,
            self.calls,
            self.first,
            self.last,
            self.differed,
            self.canaries_bad,
            self.ticks,
            self.hz
        )
    }
}

/// The `entry` line's text (after the prefix): each of [`Arch::entry_registers`] with its value
/// (`values` in that order; a missing value is not printed).
pub struct EntryRegisters<'a> {
    pub arch: Arch,
    pub values: &'a [u64],
}

impl fmt::Display for EntryRegisters<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("entry")?;
        for (name, value) in self.arch.entry_registers().iter().zip(self.values) {
            write!(f, " {name}={value:#x}")?;
        }
        Ok(())
    }
}

/// `i <entry line>`.
pub struct Numbered<'a>(pub u32, pub EntryLine<'a>);

impl fmt::Display for Numbered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.0, self.1)
    }
}

impl fmt::Display for EntryLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            EntryLine::HypercallSkipped { control } => {
                write!(f, "hypercall control={control:#x} skipped")
            }
            EntryLine::Hypercall {
                control,
                result,
                out,
                bad_canaries,
            } => write!(
                f,
                "hypercall control={control:#x} result={result:#x} out={} canaries={}",
                Hex(out),
                Canaries(bad_canaries)
            ),
            EntryLine::HypercallFault { control, fault } => {
                write!(f, "hypercall control={control:#x} {fault}")
            }
            EntryLine::Read {
                gpa,
                width,
                outcome,
            } => {
                write!(f, "read gpa={gpa:#x} width={width} ")?;
                match outcome {
                    Ok(value) => write!(f, "value={value:#x}"),
                    Err(fault) => write!(f, "{fault}"),
                }
            }
            EntryLine::Write {
                gpa,
                width,
                value,
                outcome,
            } => {
                write!(f, "write gpa={gpa:#x} width={width} value={value:#x} ")?;
                match outcome {
                    Ok(()) => f.write_str("ok"),
                    Err(fault) => write!(f, "{fault}"),
                }
            }
            EntryLine::Exec { gpa, outcome } => {
                write!(f, "exec gpa={gpa:#x} ")?;
                match outcome {
                    Ok(()) => f.write_str("returned"),
                    Err(fault) => write!(f, "{fault}"),
                }
            }
            EntryLine::Repeat(stats) => write!(f, "{stats}"),
            EntryLine::Idt { base, limit } => {
                write!(f, "idt base={base:#x} limit={limit:#x} raising #UD")
            }
            EntryLine::Place { gpa, len, outcome } => {
                write!(f, "place gpa={gpa:#x} len={len} ")?;
                match outcome {
                    Ok(()) => f.write_str("ok"),
                    Err(fault) => write!(f, "{fault}"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants() {
        assert_eq!(TABLE_MAGIC.to_le_bytes(), *b"VTL0");
        assert_eq!(GUEST_OS_ID, 0x8000_0000_0001_0000);
        for arch in Arch::ALL {
            let pool: usize = arch.fast_pool().iter().map(|(_, w)| w).sum();
            assert_eq!(pool, arch.fast_pool_bytes());
            assert!(arch.table_gpa() >= arch.end_gpa());
            assert!(arch.end_gpa() <= arch.table_gpa());
            assert_eq!(arch.vp_input_page(0), arch.input_page());
            assert_eq!(arch.vp_output_page(0), arch.output_page());
            assert_eq!(arch.vp_input_page(1), arch.scratch_page() + 0x1000);
            let mut pages: Vec<u64> = (0..MAX_VPS)
                .flat_map(|vp| [arch.vp_input_page(vp), arch.vp_output_page(vp)])
                .chain([arch.hypercall_page(), arch.scratch_page()])
                .collect();
            assert!(pages.iter().all(|p| p % 0x1000 == 0 && *p < arch.end_gpa()));
            pages.sort();
            pages.dedup();
            assert_eq!(pages.len(), 2 * MAX_VPS as usize + 2, "every page its own");
        }
        assert_eq!(Arch::X86_64.fast_output_offset(8), 16);
        assert_eq!(Arch::X86_64.fast_output_offset(17), 32);
        assert_eq!(Arch::Aarch64.fast_output_offset(9), 16);
        assert_eq!(Arch::Aarch64.fast_output_offset(0), 0);
        let c: Vec<u64> = (0..48).map(canary).collect();
        let mut d = c.clone();
        d.sort();
        d.dedup();
        assert_eq!(d.len(), c.len(), "canaries are distinct");
    }
}
