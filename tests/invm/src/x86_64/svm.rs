//! AMD SVM: turning it on, the guest's VMCB and nested page tables, and VMRUN. Under QEMU TCG
//! (`-cpu max`) there is no next-RIP save and no decode assist: the exit glue steps over
//! instructions by their known lengths (`hv::x86_64`).
#![expect(unsafe_code, reason = "SVM: EFER, the VMCB and VMRUN")]

use super::cpu::{cpuid, rdmsr, wrmsr};
use crate::hv::x86_64::{LowerRegs, Vcpu, X64Exception, RAX, RSP};
use crate::{gpt, msrpm, npt};
use core::cell::UnsafeCell;
use core::mem::offset_of;
use core::ops::Range;
use core::sync::atomic::{AtomicBool, Ordering};
use hvdef::x86_64::{HvX64InitialVpContext, HvX64SegmentRegister, HvX64TableRegister};
use hvmodel::Fault;

const MSR_EFER: u32 = 0xc000_0080;
const EFER_SVME: u64 = 1 << 12;
const EFER_NXE: u64 = 1 << 11;
const MSR_VM_HSAVE_PA: u32 = 0xc001_0117;
pub const MSR_EFER_NUMBER: u32 = MSR_EFER;

/// Intercept vector 3 (VMCB 0x00c): CPUID, HLT, MSR accesses through the permission map
/// (`msrpm`: SVM's own MSRs, plus every MSR outside its three ranges, the hypervisor's
/// 0x4000_0000.. among them), and shutdown (a triple fault in the guest).
const INTERCEPT_CPUID: u32 = 1 << 18;
const INTERCEPT_HLT: u32 = 1 << 24;
const INTERCEPT_IOIO: u32 = 1 << 27;
const INTERCEPT_MSR_PROT: u32 = 1 << 28;
const INTERCEPT_SHUTDOWN: u32 = 1 << 31;
/// Intercept vector 4 (VMCB 0x010): VMRUN (required), VMMCALL, and the rest of SVM, so a
/// guest that tries it fails loudly instead of running nested.
const INTERCEPT_VMRUN: u32 = 1 << 0;
const INTERCEPT_VMMCALL: u32 = 1 << 1;
const INTERCEPT_VMLOAD: u32 = 1 << 2;
const INTERCEPT_VMSAVE: u32 = 1 << 3;
const INTERCEPT_STGI: u32 = 1 << 4;
const INTERCEPT_CLGI: u32 = 1 << 5;
const INTERCEPT_SKINIT: u32 = 1 << 6;

/// The guests' ASIDs (0 is the host's): VTL2, VTL0.
const ASID: u32 = 1;
const ASID_VTL0: u32 = 2;
/// The isa-debug-exit port, which VTL0's exits through the host (see `host_x86`).
pub const DEBUG_EXIT_PORT: u16 = 0xf4;
const TLB_FLUSH_ALL: u32 = 1;
const NP_ENABLE: u64 = 1;

/// EVENTINJ: vector, type 3 (exception), error code valid, valid.
const EVENT_EXCEPTION: u64 = 3 << 8;
const EVENT_ERROR_VALID: u64 = 1 << 11;
const EVENT_VALID: u64 = 1 << 31;
const VECTOR_UD: u64 = 6;
const VECTOR_GP: u64 = 13;

/// A VMCB segment register: selector, attributes (type, S, DPL, P, AVL, L, DB, G packed into
/// 12 bits), limit, base.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Segment {
    pub selector: u16,
    pub attrib: u16,
    pub limit: u32,
    pub base: u64,
}

/// Flat 32-bit segments, as the PVH ABI enters: code execute/read (0xc9b: type 0xb, S, P, DB,
/// G) and data read/write (0xc93).
const CODE32: Segment = Segment {
    selector: 0x08,
    attrib: 0xc9b,
    limit: 0xffff_ffff,
    base: 0,
};
const DATA32: Segment = Segment {
    selector: 0x10,
    attrib: 0xc93,
    limit: 0xffff_ffff,
    base: 0,
};

impl Segment {
    /// Back to Hyper-V's form.
    pub fn to_hv(self) -> HvX64SegmentRegister {
        HvX64SegmentRegister {
            base: self.base,
            limit: self.limit,
            selector: self.selector,
            attributes: (self.attrib & 0xff) | ((self.attrib & 0xf00) << 4),
        }
    }

    pub fn to_table(self) -> HvX64TableRegister {
        HvX64TableRegister {
            pad: [0; 3],
            limit: self.limit as u16,
            base: self.base,
        }
    }

    /// From Hyper-V's form (attributes as VMX packs them: type, S, DPL, P in bits 0-7, AVL,
    /// L, DB, G in bits 12-15) to the VMCB's 12 bits.
    pub fn from_hv(seg: &HvX64SegmentRegister) -> Segment {
        Segment {
            selector: seg.selector,
            attrib: (seg.attributes & 0xff) | ((seg.attributes >> 4) & 0xf00),
            limit: seg.limit,
            base: seg.base,
        }
    }

    /// A descriptor-table register (GDTR, IDTR): limit and base only.
    pub fn from_table(table: &HvX64TableRegister) -> Segment {
        Segment {
            selector: 0,
            attrib: 0,
            limit: table.limit.into(),
            base: table.base,
        }
    }
}

/// The VMCB, control area then state save area, with only the fields this host uses named.
#[repr(C, align(4096))]
pub struct Vmcb {
    intercept_cr: u32,
    intercept_dr: u32,
    intercept_exceptions: u32,
    intercept_misc1: u32,
    intercept_misc2: u32,
    _r0: [u8; 0x40 - 0x14],
    iopm_base_pa: u64,
    msrpm_base_pa: u64,
    tsc_offset: u64,
    guest_asid: u32,
    tlb_control: u32,
    vintr: u64,
    interrupt_shadow: u64,
    exit_code: u64,
    exit_info1: u64,
    exit_info2: u64,
    exit_int_info: u64,
    np_control: u64,
    _r1: [u8; 0xa8 - 0x98],
    event_inj: u64,
    n_cr3: u64,
    _r2: [u8; 0x400 - 0xb8],
    es: Segment,
    cs: Segment,
    ss: Segment,
    ds: Segment,
    fs: Segment,
    gs: Segment,
    gdtr: Segment,
    ldtr: Segment,
    idtr: Segment,
    tr: Segment,
    _r3: [u8; 0x4cb - 0x4a0],
    cpl: u8,
    _r4: [u8; 4],
    efer: u64,
    _r5: [u8; 0x548 - 0x4d8],
    cr4: u64,
    cr3: u64,
    cr0: u64,
    dr7: u64,
    dr6: u64,
    rflags: u64,
    rip: u64,
    _r6: [u8; 0x5d8 - 0x580],
    rsp: u64,
    _r7: [u8; 0x5f8 - 0x5e0],
    rax: u64,
    _r8: [u8; 0x640 - 0x600],
    cr2: u64,
    _r9: [u8; 0x668 - 0x648],
    g_pat: u64,
    _r10: [u8; 0x1000 - 0x670],
}

// AMD APM vol. 2, appendix B: the offsets QEMU's svm_helper reads.
const _: () = {
    assert!(offset_of!(Vmcb, intercept_misc1) == 0x00c);
    assert!(offset_of!(Vmcb, intercept_misc2) == 0x010);
    assert!(offset_of!(Vmcb, iopm_base_pa) == 0x040);
    assert!(offset_of!(Vmcb, msrpm_base_pa) == 0x048);
    assert!(offset_of!(Vmcb, guest_asid) == 0x058);
    assert!(offset_of!(Vmcb, tlb_control) == 0x05c);
    assert!(offset_of!(Vmcb, exit_code) == 0x070);
    assert!(offset_of!(Vmcb, exit_info2) == 0x080);
    assert!(offset_of!(Vmcb, np_control) == 0x090);
    assert!(offset_of!(Vmcb, event_inj) == 0x0a8);
    assert!(offset_of!(Vmcb, n_cr3) == 0x0b0);
    assert!(offset_of!(Vmcb, es) == 0x400);
    assert!(offset_of!(Vmcb, tr) == 0x490);
    assert!(offset_of!(Vmcb, cpl) == 0x4cb);
    assert!(offset_of!(Vmcb, efer) == 0x4d0);
    assert!(offset_of!(Vmcb, cr4) == 0x548);
    assert!(offset_of!(Vmcb, rip) == 0x578);
    assert!(offset_of!(Vmcb, rsp) == 0x5d8);
    assert!(offset_of!(Vmcb, rax) == 0x5f8);
    assert!(offset_of!(Vmcb, cr2) == 0x640);
    assert!(offset_of!(Vmcb, g_pat) == 0x668);
    assert!(size_of::<Vmcb>() == 0x1000);
};

#[repr(C, align(4096))]
struct Page([u8; 4096]);

#[repr(C, align(4096))]
struct Msrpm([u8; msrpm::SIZE]);

/// The VPs the host can run, one CPU each.
pub const MAX_VPS: usize = 96;

/// What SVM reads by physical address and every VP shares (the host is identity-mapped, so a
/// pointer is one): the permission maps (8 KiB MSR, 12 KiB I/O) and the nested tables' roots,
/// VTL2's and VTL0's (the tables on the heap, `gpt::HeapTables`). VTL0's MSR map has EFER too
/// (the host keeps SVME in it), its I/O map the trace port and isa-debug-exit, its nested
/// tables VTL2's protections at 4 KiB (larger pages split on the first change).
struct Tables {
    msrpm: Msrpm,
    iopm: [Page; 3],
    npt: u64,
    msrpm0: Msrpm,
    iopm0: [Page; 3],
    npt0: u64,
}

/// One VP's: its VTL2 and VTL0 VMCBs and its CPU's host save area.
#[repr(C, align(4096))]
struct VpArea {
    vmcb: Vmcb,
    vmcb0: Vmcb,
    hsave: Page,
}

#[repr(C, align(4096))]
struct SharedTables(UnsafeCell<Tables>);

// SAFETY: `Guest::new` hands the tables out once (TAKEN) to the `Guest`, which the host keeps
// under its lock; besides, only the CPUs' nested walks read them.
unsafe impl Sync for SharedTables {}

#[repr(C, align(4096))]
struct SharedVps(UnsafeCell<[VpArea; MAX_VPS]>);

// SAFETY: each VP's area is handed out once (VP_TAKEN) to the `Cpu` of the one CPU that runs
// that VP; the host save area is only the CPU's.
unsafe impl Sync for SharedVps {}

// SAFETY: all-zero is a valid `Tables` and `VpArea` (integers and arrays of them only).
static TABLES: SharedTables = SharedTables(UnsafeCell::new(unsafe { core::mem::zeroed() }));
// SAFETY: as above.
static VPS: SharedVps = SharedVps(UnsafeCell::new(unsafe { core::mem::zeroed() }));
static TAKEN: AtomicBool = AtomicBool::new(false);
static VP_TAKEN: [AtomicBool; MAX_VPS] = [const { AtomicBool::new(false) }; MAX_VPS];
/// VTL0's nested tables changed since the VP's VTL0 last ran: flush its TLB.
static VTL0_FLUSH: [AtomicBool; MAX_VPS] = [const { AtomicBool::new(true) }; MAX_VPS];

fn vp_area(vp: usize) -> *mut VpArea {
    // SAFETY: in bounds (callers check vp < MAX_VPS); no reference is made here.
    unsafe { (VPS.0.get() as *mut VpArea).add(vp) }
}

/// Turns SVM on for this CPU, which runs `vp`: EFER.SVME and its host save area.
pub fn enable(vp: usize) -> Result<(), &'static str> {
    if cpuid(0x8000_0001, 0)[2] & (1 << 2) == 0 {
        return Err("no SVM (CPUID 0x80000001 ECX bit 2): run QEMU with -cpu max");
    }
    if cpuid(0x8000_000a, 0)[3] & 1 == 0 {
        return Err("no nested paging (CPUID 0x8000000A EDX bit 0)");
    }
    if vp >= MAX_VPS {
        return Err("more VPs than this host has room for");
    }
    // SAFETY: in bounds; the address of the VP's save area, no reference made.
    let hsave = unsafe { core::ptr::addr_of!((*vp_area(vp)).hsave) } as u64;
    // SAFETY: setting EFER.SVME only enables the SVM instructions, EFER.NXE the NX bit (which
    // VTL0's nested tables use; the host's own tables have none); VM_HSAVE_PA gets a page of
    // the host's own, reserved for this CPU.
    unsafe {
        wrmsr(MSR_EFER, rdmsr(MSR_EFER) | EFER_SVME | EFER_NXE);
        wrmsr(MSR_VM_HSAVE_PA, hsave);
    }
    Ok(())
}

/// Why the guest stopped.
#[derive(Clone, Copy, Debug)]
pub struct Exit {
    pub code: u64,
    pub info1: u64,
    pub info2: u64,
    /// The guest's instructions from VMRUN to this exit, under QEMU's `-icount shift=0` (the
    /// TSC then advances once per instruction; otherwise a meaningless figure).
    pub instructions: u64,
}

/// The host's instructions in `invm_vmrun`'s TSC window: from its first rdtsc (exclusive) to
/// its second (inclusive), 20 before the guest runs (`vmload` and `vmrun` included) and 19
/// after (`vmsave` to the rdtsc).
const VMRUN_HOST_INSTRUCTIONS: u64 = 39;

/// The partition's side: the shared maps and nested tables (kept under the host's lock).
pub struct Guest {
    tables: &'static mut Tables,
}

/// One VP's side, owned by the CPU that runs it: its two VMCBs.
pub struct Cpu {
    area: &'static mut VpArea,
    vp: usize,
}

core::arch::global_asm!(
    r#"
    /* invm_vmrun(gprs: *mut [u64; 16], vmcb: *mut Vmcb, ticks: *mut u64): VMRUN with the
       guest's GPRs (but RAX and RSP, which are the VMCB's) loaded from and stored back to
       `gprs`, the host's callee-saved ones kept. #VMEXIT gives back the host's RAX, RSP and
       RIP only. `ticks` gets the TSC's advance from the first rdtsc to the second: under
       `-icount shift=0` one per instruction, the guest's and VMRUN_HOST_INSTRUCTIONS of the
       host's (the instructions between the two rdtscs below, the rdtsc ending the window
       included, the one starting it not). */
    .global invm_vmrun
invm_vmrun:
    push %rbx
    push %rbp
    push %r12
    push %r13
    push %r14
    push %r15
    push %rdi
    push %rdx
    mov %rsi, %r8
    rdtsc
    shl $32, %rdx
    or %rdx, %rax
    push %rax
    mov %r8, %rax
    mov 8(%rdi), %rcx
    mov 16(%rdi), %rdx
    mov 24(%rdi), %rbx
    mov 40(%rdi), %rbp
    mov 48(%rdi), %rsi
    mov 64(%rdi), %r8
    mov 72(%rdi), %r9
    mov 80(%rdi), %r10
    mov 88(%rdi), %r11
    mov 96(%rdi), %r12
    mov 104(%rdi), %r13
    mov 112(%rdi), %r14
    mov 120(%rdi), %r15
    mov 56(%rdi), %rdi
    /* FS, GS, TR, LDTR, KernelGsBase and the syscall MSRs are the VMCB's too (VMRUN does not
       switch them): loaded before, saved after, so each VTL keeps its own. */
    vmload %rax
    vmrun %rax
    vmsave %rax
    push %rdi
    mov 24(%rsp), %rdi
    mov %rcx, 8(%rdi)
    mov %rdx, 16(%rdi)
    mov %rbx, 24(%rdi)
    mov %rbp, 40(%rdi)
    mov %rsi, 48(%rdi)
    pop %rcx
    mov %rcx, 56(%rdi)
    mov %r8, 64(%rdi)
    mov %r9, 72(%rdi)
    mov %r10, 80(%rdi)
    mov %r11, 88(%rdi)
    mov %r12, 96(%rdi)
    mov %r13, 104(%rdi)
    mov %r14, 112(%rdi)
    mov %r15, 120(%rdi)
    rdtsc
    shl $32, %rdx
    or %rdx, %rax
    pop %rcx
    sub %rcx, %rax
    pop %rdx
    mov %rax, (%rdx)
    pop %rdi
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbp
    pop %rbx
    ret
"#,
    options(att_syntax)
);

/// XMM0..XMM5 from the CPU (the host enables SSE in CR4 for these moves alone).
fn read_xmm(xmm: &mut [u128; 6]) {
    // SAFETY: unaligned 16-byte stores into the six elements of `xmm`; CR4.OSFXSR is set at
    // the host's entry, and nothing else in the host uses the XMM registers.
    unsafe {
        core::arch::asm!(
            "movdqu [{p}], xmm0",
            "movdqu [{p} + 16], xmm1",
            "movdqu [{p} + 32], xmm2",
            "movdqu [{p} + 48], xmm3",
            "movdqu [{p} + 64], xmm4",
            "movdqu [{p} + 80], xmm5",
            p = in(reg) xmm.as_mut_ptr(),
            options(nostack, preserves_flags)
        )
    };
}

/// XMM0..XMM5 into the CPU.
fn write_xmm(xmm: &[u128; 6]) {
    // SAFETY: unaligned 16-byte loads from the six elements of `xmm`; see `read_xmm`.
    unsafe {
        core::arch::asm!(
            "movdqu xmm0, [{p}]",
            "movdqu xmm1, [{p} + 16]",
            "movdqu xmm2, [{p} + 32]",
            "movdqu xmm3, [{p} + 48]",
            "movdqu xmm4, [{p} + 64]",
            "movdqu xmm5, [{p} + 80]",
            p = in(reg) xmm.as_ptr(),
            options(nostack, preserves_flags, readonly)
        )
    };
}

unsafe extern "C" {
    fn invm_vmrun(gprs: *mut u64, vmcb: *mut Vmcb, ticks: *mut u64);
}

impl Guest {
    /// The shared tables, with nested tables that map `ram` only (1 GiB pages where the CPU
    /// has them).
    pub fn new(ram: &[Range<u64>]) -> Result<Guest, gpt::MapError> {
        assert!(!TAKEN.swap(true, Ordering::Relaxed), "one guest only");
        // SAFETY: the first and only hand-out of TABLES (TAKEN).
        let t = unsafe { &mut *TABLES.0.get() };
        let format = npt::Npt {
            gib_pages: gib_pages(),
        };
        t.npt = gpt::build(&format, &mut gpt::HeapTables, ram)?;
        t.npt0 = gpt::build(&format, &mut gpt::HeapTables, ram)?;
        // SVM's own MSRs, and EFER: the host keeps SVME in it (VMRUN requires it) and out of
        // the guest's view (a paravisor copying its EFER into an AP's context must not see it).
        let mut msrs = [0; msrpm::SVM_MSRS.len() + 1];
        msrs[..msrpm::SVM_MSRS.len()].copy_from_slice(&msrpm::SVM_MSRS);
        msrs[msrpm::SVM_MSRS.len()] = MSR_EFER;
        t.msrpm.0 = msrpm::intercepting(&msrs).expect("in the map's ranges");
        t.msrpm0.0 = t.msrpm.0;
        // VTL2: one I/O intercept, the host's trace port (so only the host's bytes reach the
        // trace file); the guest's COM1 output goes straight to QEMU's serial. VTL0: that and
        // isa-debug-exit, its end of the run.
        let port = usize::from(invm_abi::TRACE_PORT_X86_64);
        t.iopm[0].0[port / 8] |= 1 << (port % 8);
        for port in [invm_abi::TRACE_PORT_X86_64, DEBUG_EXIT_PORT] {
            let port = usize::from(port);
            t.iopm0[0].0[port / 8] |= 1 << (port % 8);
        }
        Ok(Guest { tables: t })
    }

    /// VP `vp`'s VMCBs (once per VP), with the controls set: VTL2's and VTL0's intercepts,
    /// maps, ASIDs (1 and 2: the same for every VP, whose CPU has its own TLB) and tables; the
    /// guest's state is the caller's to set (`pvh_entry`, `load_context`).
    pub fn cpu(&self, vp: usize) -> Option<Cpu> {
        if vp >= MAX_VPS || VP_TAKEN[vp].swap(true, Ordering::Relaxed) {
            return None;
        }
        // SAFETY: the first and only hand-out of this VP's area (VP_TAKEN).
        let area = unsafe { &mut *vp_area(vp) };
        let t = &*self.tables;
        let misc1 = INTERCEPT_CPUID
            | INTERCEPT_HLT
            | INTERCEPT_MSR_PROT
            | INTERCEPT_SHUTDOWN
            | INTERCEPT_IOIO;
        let misc2 = INTERCEPT_VMRUN
            | INTERCEPT_VMMCALL
            | INTERCEPT_VMLOAD
            | INTERCEPT_VMSAVE
            | INTERCEPT_STGI
            | INTERCEPT_CLGI
            | INTERCEPT_SKINIT;
        for (v, iopm, msrpm, n_cr3, asid) in [
            (&mut area.vmcb, &t.iopm, &t.msrpm, t.npt, ASID),
            (&mut area.vmcb0, &t.iopm0, &t.msrpm0, t.npt0, ASID_VTL0),
        ] {
            v.intercept_misc1 = misc1;
            v.intercept_misc2 = misc2;
            v.iopm_base_pa = iopm.as_ptr() as u64;
            v.msrpm_base_pa = msrpm.0.as_ptr() as u64;
            v.guest_asid = asid;
            v.tlb_control = TLB_FLUSH_ALL;
            v.np_control = NP_ENABLE;
            v.n_cr3 = n_cr3;
            v.dr6 = 0xffff_0ff0;
            v.dr7 = 0x400;
            v.rflags = 0x2;
            v.efer = EFER_SVME;
            v.g_pat = 0x0007_0406_0007_0406;
        }
        Some(Cpu { area, vp })
    }

    /// Sets what VTL0 may do with the 4 KiB page at `gpa` in its nested tables (splitting its
    /// larger pages first); it takes effect at each VP's next VTL0 run.
    pub fn set_vtl0_access(&mut self, gpa: u64, access: npt::Access) -> Result<(), gpt::MapError> {
        let format = npt::Npt { gib_pages: false };
        let leaf = npt::leaf_4k(gpa, access);
        gpt::set_page(&format, &mut gpt::HeapTables, self.tables.npt0, gpa, leaf)?;
        for flush in &VTL0_FLUSH {
            flush.store(true, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Whether the CPU maps 1 GiB pages (CPUID 0x80000001 EDX bit 26, Page1GB), in the nested
/// tables as in the host's own.
pub fn gib_pages() -> bool {
    cpuid(0x8000_0001, 0)[3] & (1 << 26) != 0
}

impl Cpu {
    /// A PVH start: 32-bit protected mode with paging off at `entry` (EBX is the caller's).
    pub fn pvh_entry(&mut self, entry: u64) {
        let v = &mut self.area.vmcb;
        (v.cs, v.ds, v.es, v.ss) = (CODE32, DATA32, DATA32, DATA32);
        v.cpl = 0;
        // SVME is required in the guest's EFER; LME is the guest's to set.
        v.efer = EFER_SVME;
        v.cr0 = 0x11; // PE | ET
        v.cr3 = 0;
        v.cr4 = 0;
        v.rip = entry;
    }

    /// Replaces the entry state with `ctx` (an IGVM file's VTL2 context or a
    /// StartVirtualProcessor context, TLFS `HV_INITIAL_VP_CONTEXT`): RIP, RSP and RFLAGS go
    /// to `cpu`, the rest to the VMCB. EFER keeps SVME, which SVM requires of every guest.
    pub fn load_context(&mut self, ctx: &HvX64InitialVpContext, cpu: &mut Vcpu) {
        let v = &mut self.area.vmcb;
        v.cs = Segment::from_hv(&ctx.cs);
        v.ds = Segment::from_hv(&ctx.ds);
        v.es = Segment::from_hv(&ctx.es);
        v.fs = Segment::from_hv(&ctx.fs);
        v.gs = Segment::from_hv(&ctx.gs);
        v.ss = Segment::from_hv(&ctx.ss);
        v.tr = Segment::from_hv(&ctx.tr);
        v.ldtr = Segment::from_hv(&ctx.ldtr);
        v.gdtr = Segment::from_table(&ctx.gdtr);
        v.idtr = Segment::from_table(&ctx.idtr);
        v.cpl = ((ctx.cs.attributes >> 5) & 3) as u8;
        v.efer = ctx.efer | EFER_SVME;
        v.cr0 = ctx.cr0;
        v.cr3 = ctx.cr3;
        v.cr4 = ctx.cr4;
        v.rflags = ctx.rflags | 0x2;
        if ctx.msr_cr_pat != 0 {
            v.g_pat = ctx.msr_cr_pat;
        }
        cpu.rip = ctx.rip;
        cpu.gprs[RSP] = ctx.rsp;
    }

    /// Runs VTL2 until its next exit, with `cpu` as its registers in and out (and its pending
    /// exception injected on the way in).
    pub fn run(&mut self, cpu: &mut Vcpu) -> Exit {
        let v = &mut self.area.vmcb;
        v.rax = cpu.gprs[RAX];
        v.rsp = cpu.gprs[RSP];
        v.rip = cpu.rip;
        v.cr2 = cpu.cr2;
        v.event_inj = match cpu.inject.take() {
            None => 0,
            Some(Fault::Ud) => VECTOR_UD | EVENT_EXCEPTION | EVENT_VALID,
            // Error code 0 (bits 63:32).
            Some(Fault::Gp) => VECTOR_GP | EVENT_EXCEPTION | EVENT_ERROR_VALID | EVENT_VALID,
        };
        let mut ticks = 0;
        // SAFETY: the VMCB is set up for a valid guest (`Guest::cpu`, then an entry state)
        // whose nested tables map only its RAM, so the guest cannot reach the host's memory;
        // VMRUN returns to the next instruction with the host's state restored from this
        // CPU's save area, and the stub keeps the host's callee-saved registers (and writes
        // `ticks`, a local, only).
        unsafe { invm_vmrun(cpu.gprs.as_mut_ptr(), v, &mut ticks) };
        cpu.gprs[RAX] = v.rax;
        cpu.gprs[RSP] = v.rsp;
        cpu.rip = v.rip;
        cpu.cr2 = v.cr2;
        v.tlb_control = 0;
        v.event_inj = 0;
        Exit {
            code: v.exit_code,
            info1: v.exit_info1,
            info2: v.exit_info2,
            instructions: ticks.saturating_sub(VMRUN_HOST_INSTRUCTIONS),
        }
    }

    /// VTL2's EFER as it sees it (without SVME).
    pub fn efer(&self) -> u64 {
        self.area.vmcb.efer & !EFER_SVME
    }

    /// VTL2's `wrmsr` of EFER: SVME stays set.
    pub fn set_efer(&mut self, efer: u64) {
        self.area.vmcb.efer = efer | EFER_SVME;
    }

    /// VTL2's CPL, RFLAGS, CR0 and CR3, for failure lines.
    pub fn control(&self) -> (u8, u64, u64, u64) {
        let v = &self.area.vmcb;
        (v.cpl, v.rflags, v.cr0, v.cr3)
    }

    /// EXITINTINFO: an event VTL2's exit interrupted.
    pub fn exit_int_info(&self) -> u64 {
        self.area.vmcb.exit_int_info
    }

    /// VTL0's CPL, RFLAGS, CR0 and CR3, and EXITINTINFO, for failure lines.
    pub fn lower_control(&self) -> (u8, u64, u64, u64, u64) {
        let v = &self.area.vmcb0;
        (v.cpl, v.rflags, v.cr0, v.cr3, v.exit_int_info)
    }

    /// Runs VTL0 until its next exit with `regs` as its whole state in and out (and its
    /// pending exception, or the one the glue left in `regs.cpu.inject`, injected on the way
    /// in).
    pub fn run_lower(&mut self, regs: &mut LowerRegs) -> Exit {
        let v = &mut self.area.vmcb0;
        let segs = &regs.segments;
        (v.es, v.cs, v.ss, v.ds, v.fs, v.gs, v.ldtr, v.tr) = (
            Segment::from_hv(&segs[0]),
            Segment::from_hv(&segs[1]),
            Segment::from_hv(&segs[2]),
            Segment::from_hv(&segs[3]),
            Segment::from_hv(&segs[4]),
            Segment::from_hv(&segs[5]),
            Segment::from_hv(&segs[6]),
            Segment::from_hv(&segs[7]),
        );
        v.gdtr = Segment::from_table(&regs.gdtr);
        v.idtr = Segment::from_table(&regs.idtr);
        v.cpl = ((segs[2].attributes >> 5) & 3) as u8;
        v.efer = regs.efer | EFER_SVME;
        v.cr0 = regs.cr0;
        v.cr3 = regs.cr3;
        v.cr4 = regs.cr4;
        v.rflags = regs.rflags | 0x2;
        v.g_pat = if regs.pat == 0 {
            0x0007_0406_0007_0406
        } else {
            regs.pat
        };
        if let Some(fault) = regs.cpu.inject.take() {
            regs.exception = Some(match fault {
                Fault::Ud => X64Exception {
                    vector: VECTOR_UD as u8,
                    error_code: None,
                },
                Fault::Gp => X64Exception {
                    vector: VECTOR_GP as u8,
                    error_code: Some(0),
                },
            });
        }
        v.event_inj = match regs.exception.take() {
            None => 0,
            Some(X64Exception { vector, error_code }) => {
                let mut e = u64::from(vector) | EVENT_EXCEPTION | EVENT_VALID;
                if let Some(code) = error_code {
                    e |= EVENT_ERROR_VALID | u64::from(code) << 32;
                }
                e
            }
        };
        if VTL0_FLUSH[self.vp].swap(false, Ordering::Relaxed) {
            v.tlb_control = TLB_FLUSH_ALL;
        }
        let cpu = &mut regs.cpu;
        v.rax = cpu.gprs[RAX];
        v.rsp = cpu.gprs[RSP];
        v.rip = cpu.rip;
        v.cr2 = cpu.cr2;
        // XMM0-5 are shared between the VTLs (TLFS vsm.md "Shared State") and neither the
        // soft-float host nor the soft-float paravisor touches them: the CPU's are VTL0's. The
        // model's copy goes in (the paravisor may have set them) and comes back out (the
        // intercept message and fast input read them).
        write_xmm(&regs.xmm);
        let mut ticks = 0;
        // SAFETY: as in `run`, for VTL0's VMCB, whose nested tables map only its RAM (less
        // what VTL2 protected).
        unsafe { invm_vmrun(cpu.gprs.as_mut_ptr(), v, &mut ticks) };
        read_xmm(&mut regs.xmm);
        cpu.gprs[RAX] = v.rax;
        cpu.gprs[RSP] = v.rsp;
        cpu.rip = v.rip;
        cpu.cr2 = v.cr2;
        v.tlb_control = 0;
        v.event_inj = 0;
        regs.segments = [
            v.es.to_hv(),
            v.cs.to_hv(),
            v.ss.to_hv(),
            v.ds.to_hv(),
            v.fs.to_hv(),
            v.gs.to_hv(),
            v.ldtr.to_hv(),
            v.tr.to_hv(),
        ];
        regs.gdtr = v.gdtr.to_table();
        regs.idtr = v.idtr.to_table();
        regs.efer = v.efer & !EFER_SVME;
        regs.cr0 = v.cr0;
        regs.cr3 = v.cr3;
        regs.cr4 = v.cr4;
        regs.rflags = v.rflags;
        regs.pat = v.g_pat;
        Exit {
            code: v.exit_code,
            info1: v.exit_info1,
            info2: v.exit_info2,
            instructions: ticks.saturating_sub(VMRUN_HOST_INSTRUCTIONS),
        }
    }
}
