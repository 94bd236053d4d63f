//! x86_64 hypervisor interface: CPUID and the synthetic MSRs, the hypercall page and the
//! hypercall ABI.
//!
//! The instructions that talk to the hypervisor are plain `cpuid`, `rdmsr` and `wrmsr`, which
//! Hyper-V intercepts, and the calls through the hypercall page it overlays on
//! `pv_hypercall_page` once HV_X64_MSR_HYPERCALL is enabled (TLFS hypercall-interface.md).

use crate::hv::{self, NoHyperV};
use crate::hypercall::{HypercallAbi, Page, Result};
use crate::proxy::ControlRegister;
use hvdef::x86_64::{cpuid::HV_CPUID_FEATURES, HvX64HypercallMsr, HvX64Msr};
use hvdef::{HvError, HvPartitionPrivilegeMask, SyntheticRegister};

core::arch::global_asm!(
    r#"
    .section .text.hvcall, "ax"
    .global pv_hypercall
pv_hypercall:                    /* (control, input, output) -> result, via the page */
    mov %rdi, %rcx
    mov %rdx, %r8
    mov %rsi, %rdx
    call pv_hypercall_page
    ret

    /* The page the hypervisor overlays with its hypercall code once HV_X64_MSR_HYPERCALL is
       enabled. Until then it holds int3s, so a call through a disabled page traps loudly. */
    .section .text.hvpage, "ax"
    .balign 4096
    .global pv_hypercall_page
pv_hypercall_page:
    .fill 4096, 1, 0xcc
    "#,
    options(att_syntax)
);

unsafe extern "C" {
    fn pv_hypercall(control: u64, input: u64, output: u64) -> u64;
    static pv_hypercall_page: [u8; 4096];
}

pub fn cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    [r.eax, r.ebx, r.ecx, r.edx]
}

fn rdmsr(msr: HvX64Msr) -> u64 {
    rdmsr_raw(msr.0)
}

/// Any MSR by number (the architectural ones the paravisor reads: EFER).
fn rdmsr_raw(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the MSRs read here have no memory effects; a missing one faults, which is fatal.
    unsafe {
        core::arch::asm!(
            "rdmsr",
            in("ecx") msr,
            out("eax") lo,
            out("edx") hi,
            options(nostack, preserves_flags)
        )
    };
    u64::from(hi) << 32 | u64::from(lo)
}

fn wrmsr(msr: HvX64Msr, value: u64) {
    // SAFETY: as for rdmsr; the MSRs written here only configure the hypervisor interface.
    unsafe {
        core::arch::asm!(
            "wrmsr",
            in("ecx") msr.0,
            in("eax") value as u32,
            in("edx") (value >> 32) as u32,
            options(nostack, preserves_flags)
        )
    };
}

/// Finds Hyper-V through its CPUID leaves.
pub fn detect() -> core::result::Result<(), NoHyperV> {
    hv::detect_x86(&mut |leaf, subleaf| cpuid(leaf, subleaf)).map(|_| ())
}

/// Where [`nested_host`] looks, for the boot log.
pub const NESTED_INDICATOR: &str = "CPUID 0x40000004 EAX bit 12";

/// Whether the host runs us nested: CPUID 0x40000004 EAX bit 12, read once.
pub fn nested_host() -> Result<bool> {
    Ok(hv::nested_x86(&mut |leaf, subleaf| cpuid(leaf, subleaf)))
}

/// The partition's privileges, from CPUID 0x40000003 EAX/EBX.
pub fn privileges() -> Result<HvPartitionPrivilegeMask> {
    let [low, high, _, _] = cpuid(HV_CPUID_FEATURES, 0);
    Ok(HvPartitionPrivilegeMask::from_halves(low, high))
}

/// Architectural CPUID leaves for the identity map (read through the one CPUID site).
const CPUID_EXT_MAX: u32 = 0x8000_0000;
const CPUID_EXT_FEATURES: u32 = 0x8000_0001;
const CPUID_EXT_ADDRESS_SIZES: u32 = 0x8000_0008;
/// CPUID 0x80000001 EDX bit 26: 1 GiB pages.
const PAGE_1GB: u32 = 1 << 26;
/// The physical address width to assume without leaf 0x80000008 (Intel SDM: 36 bits).
const DEFAULT_PA_BITS: u32 = 36;

/// Identity-maps the reported RAM (boot's tables; see `boot::paging`) with 1 GiB pages if
/// CPUID 0x80000001 EDX bit 26 offers them, up to the CPUID 0x80000008 EAX bits 7:0 address width.
pub fn map_ram(ram: &[core::ops::Range<u64>]) -> &'static boot::paging::MappedRam {
    let max = cpuid(CPUID_EXT_MAX, 0)[0];
    let one_gib_pages =
        max >= CPUID_EXT_FEATURES && cpuid(CPUID_EXT_FEATURES, 0)[3] & PAGE_1GB != 0;
    let pa_bits = if max >= CPUID_EXT_ADDRESS_SIZES {
        cpuid(CPUID_EXT_ADDRESS_SIZES, 0)[0] & 0xff
    } else {
        DEFAULT_PA_BITS
    };
    boot::arch::map_ram(ram, pa_bits, one_gib_pages)
}

/// Sets the guest OS id, then enables the hypercall page; the TLFS requires that order.
pub fn enable_hypercalls(guest_os_id: u64) -> core::result::Result<(), &'static str> {
    wrmsr(HvX64Msr::HV_X64_MSR_GUEST_OS_ID, guest_os_id);
    let page = core::ptr::addr_of!(pv_hypercall_page) as u64;
    let value = HvX64HypercallMsr::new()
        .with_enable(true)
        .with_gpn(page >> 12);
    wrmsr(HvX64Msr::HV_X64_MSR_HYPERCALL, value.into_bits());
    let read = HvX64HypercallMsr::from_bits(rdmsr(HvX64Msr::HV_X64_MSR_HYPERCALL));
    if !read.enable() || read.gpn() != page >> 12 {
        return Err("the hypervisor did not enable the hypercall page (HV_X64_MSR_HYPERCALL)");
    }
    Ok(())
}

/// The hypercall ABI through the hypercall page; input and output are identity-mapped pages.
pub struct Abi;

impl HypercallAbi for Abi {
    /// RDX and R8 carry 16 bytes: a one-register SetVpRegisters (48) goes memory-based.
    const FAST6: bool = false;

    fn call(&mut self, control: u64, input: &Page, output: &mut Page) -> u64 {
        // SAFETY: both pages are this CPU's, page-aligned and identity-mapped (GPA = address);
        // the hypervisor reads `input` and writes `output`, which we hold exclusively.
        unsafe { pv_hypercall(control, input.gpa(), output.gpa()) }
    }

    fn call_fast(&mut self, control: u64, regs: &mut [u64]) -> Option<u64> {
        // Without XMM fast input, x64 carries 16 bytes in RDX and R8.
        let (a, b) = match *regs {
            [] => (0, 0),
            [a] => (a, 0),
            [a, b] => (a, b),
            _ => return None,
        };
        // SAFETY: a register-only call; no memory is named.
        Some(unsafe { pv_hypercall(control, a, b) })
    }
}

/// Writes a synthetic register: on x86 every one is an MSR.
pub fn write_synthetic(reg: SyntheticRegister, value: u64) -> Result<()> {
    wrmsr(reg.msr().ok_or(HvError::INVALID_PARAMETER)?, value);
    Ok(())
}

/// EFER (architectural MSR 0xC000_0080).
fn read_efer() -> u64 {
    rdmsr_raw(0xC000_0080)
}

/// The HvCallEnableVpVtl / HvCallStartVirtualProcessor input that starts `vp` at VTL2 in
/// `boot`'s AP entry: long mode on this VP's page tables and GDT, on `vp`'s boot stack.
pub fn vp_start_input(vp: u32) -> hvdef::x86_64::HvX64InputEnableVpVtl {
    use hvdef::x86_64::{HvX64InitialVpContext, HvX64SegmentRegister, HvX64TableRegister};
    use x86_64::registers::control::{Cr0, Cr3, Cr4};
    let segment = |selector, attributes| HvX64SegmentRegister {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        attributes,
    };
    let gdt = x86_64::instructions::tables::sgdt();
    let (code, data) = (segment(0x08, 0xa09b), segment(0x10, 0xc093));
    hvdef::x86_64::HvX64InputEnableVpVtl {
        partition_id: hvdef::HV_PARTITION_ID_SELF,
        vp_index: vp,
        target_vtl: crate::vsm::PARAVISOR_VTL,
        reserved: [0; 3],
        context: HvX64InitialVpContext {
            rip: boot::arch::ap_entry(),
            rsp: boot::stacks::top(vp as usize),
            rflags: 0x2,
            cs: code,
            ds: data,
            es: data,
            fs: data,
            gs: data,
            ss: data,
            // A busy 64-bit TSS type: hypervisors reject a null TR in long mode.
            tr: HvX64SegmentRegister {
                base: 0,
                limit: 0xffff,
                selector: 0,
                attributes: 0x8b,
            },
            ldtr: HvX64SegmentRegister::default(),
            idtr: HvX64TableRegister::default(),
            gdtr: HvX64TableRegister {
                pad: [0; 3],
                limit: gdt.limit,
                base: gdt.base.as_u64(),
            },
            efer: read_efer(),
            cr0: Cr0::read_raw(),
            cr3: Cr3::read_raw().0.start_address().as_u64(),
            cr4: Cr4::read_raw(),
            msr_cr_pat: 0x0007_0406_0007_0406,
        },
    }
}

core::arch::global_asm!(
    r#"
    .section .text.hvcall, "ax"
    .global pv_vtl_return
pv_vtl_return:                   /* (stub: the VTL-return code, regs: *mut Vtl0Registers) */
    /* GPRs (all but RSP) are shared with VTL0: VTL0 resumes with whatever they hold at the
       switch, and VTL2 comes back with VTL0's. So: keep ours on the private stack, load VTL0's
       (RAX/RCX travel through vtl_control), switch, and save VTL0's before touching any. The
       rest of the TLFS shared set stays VTL0's untouched: CR2 (VTL2 takes no page fault, a trap
       is fatal, and never writes it), x87/XMM/AVX (the firmware is soft-float), DR0-DR3. */
    push %rbx
    push %rbp
    push %r12
    push %r13
    push %r14
    push %r15
    push %rsi
    push %rdi
    mov 0x10(%rsi), %rdx
    mov 0x18(%rsi), %rbx
    mov 0x20(%rsi), %rbp
    mov 0x30(%rsi), %rdi
    mov 0x38(%rsi), %r8
    mov 0x40(%rsi), %r9
    mov 0x48(%rsi), %r10
    mov 0x50(%rsi), %r11
    mov 0x58(%rsi), %r12
    mov 0x60(%rsi), %r13
    mov 0x68(%rsi), %r14
    mov 0x70(%rsi), %r15
    mov 0x28(%rsi), %rsi
    xor %ecx, %ecx               /* control: not fast, so VTL0's RAX/RCX come from vtl_control */
    call *(%rsp)
    xchg %rsi, 8(%rsp)           /* rsi = regs, the slot = VTL0's RSI */
    mov %rax, 0x00(%rsi)
    mov %rcx, 0x08(%rsi)
    mov %rdx, 0x10(%rsi)
    mov %rbx, 0x18(%rsi)
    mov %rbp, 0x20(%rsi)
    mov %rdi, 0x30(%rsi)
    mov %r8, 0x38(%rsi)
    mov %r9, 0x40(%rsi)
    mov %r10, 0x48(%rsi)
    mov %r11, 0x50(%rsi)
    mov %r12, 0x58(%rsi)
    mov %r13, 0x60(%rsi)
    mov %r14, 0x68(%rsi)
    mov %r15, 0x70(%rsi)
    mov 8(%rsp), %rax
    mov %rax, 0x28(%rsi)
    add $16, %rsp
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

unsafe extern "C" {
    fn pv_vtl_return(stub: u64, regs: *mut Vtl0Registers);
}

/// The VTL-return offset in the hypercall page, from HvRegisterVsmCodePageOffsets.
static VTL_RETURN_OFFSET: spin::Once<u64> = spin::Once::new();

/// Reads where the hypercall page's VTL-return code is; once, before the first return.
pub fn init_vtl_switch() -> Result<()> {
    let value = crate::percpu::hypercall().get_vp_register(
        crate::hypercall::VpTarget::SELF,
        hvdef::HvRegisterName::VSM_CODE_PAGE_OFFSETS,
    )?;
    let offsets = hvdef::HvRegisterVsmCodePageOffsets::from_bits(value.as_u64());
    VTL_RETURN_OFFSET.call_once(|| u64::from(offsets.vtl_return_offset()));
    Ok(())
}

/// VTL0's shared general-purpose registers (all but RSP), in the order the asm uses.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Vtl0Registers {
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rbx: u64,
    pub rbp: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub r8_r15: [u64; 8],
}

impl Vtl0Registers {
    /// The registers this struct carries, in field order: what the paravisor reads of VTL0
    /// before its first return, so that VTL0 resumes with its own values.
    pub const NAMES: [hvdef::HvRegisterName; 15] = {
        use hvdef::x86_64::reg::*;
        [
            RAX, RCX, RDX, RBX, RBP, RSI, RDI, R8, R9, R10, R11, R12, R13, R14, R15,
        ]
    };

    /// From the values of [`Vtl0Registers::NAMES`], in that order.
    pub fn from_values(values: &[hvdef::HvRegisterValue; 15]) -> Vtl0Registers {
        let v: [u64; 15] = core::array::from_fn(|i| values[i].as_u64());
        Vtl0Registers {
            rax: v[0],
            rcx: v[1],
            rdx: v[2],
            rbx: v[3],
            rbp: v[4],
            rsi: v[5],
            rdi: v[6],
            r8_r15: core::array::from_fn(|i| v[7 + i]),
        }
    }
}

/// Returns to VTL0 with `regs` in its shared registers and comes back when VTL2 is entered
/// again (intercept, interrupt, VTL call), with VTL0's registers in `regs`.
pub fn vtl_return(assist: &crate::percpu::AssistPage, regs: &mut Vtl0Registers) {
    assist.set_return_registers(regs.rax, regs.rcx);
    let page = core::ptr::addr_of!(pv_hypercall_page) as u64;
    let offset = *VTL_RETURN_OFFSET.get().expect("init_vtl_switch ran");
    // SAFETY: the hypercall page's VTL-return code switches to VTL0 and comes back here with
    // our stack intact (RSP is private to VTL2); the asm keeps the callee-saved registers and
    // only touches `regs`.
    unsafe { pv_vtl_return(page + offset, regs) };
}

/// VTL0's instruction pointer, advanced past a completed hypercall.
pub const IP_REGISTER: hvdef::HvRegisterName = hvdef::x86_64::reg::RIP;

/// A VP register's TLFS name (this ISA's names first), for log lines.
pub fn register_name(name: hvdef::HvRegisterName) -> Option<&'static str> {
    hvdef::x86_64::reg::name(name).or(name.name())
}

/// The `HvRegisterPendingEvent0` value that makes VTL0 take #UD: an exception event with vector
/// 6 (#UD, an x86 architectural number) and no error code, as #UD pushes none.
pub fn undefined_instruction_event() -> hvdef::HvRegisterValue {
    const UD_VECTOR: u16 = 6;
    let event = hvdef::x86_64::HvX64PendingExceptionEvent::new()
        .with_event_pending(true)
        .with_event_type(hvdef::x86_64::HvX64PendingEventType::EXCEPTION)
        .with_vector(UD_VECTOR);
    hvdef::HvRegisterValue::from(event.into_bits())
}

/// What VTL0 takes for an access the hypervisor stopped at a page VTL2 keeps (a GPA intercept):
/// #GP with error code 0, the fault x86 raises for an access the platform refuses without a
/// page-table cause (vector 13, error code pushed).
pub const MEMORY_FAULT_NAME: &str = "#GP(0)";

pub fn memory_fault_event(_access: &crate::proxy::MemoryAccess) -> hvdef::HvRegisterValue {
    const GP_VECTOR: u16 = 13;
    let event = hvdef::x86_64::HvX64PendingExceptionEvent::new()
        .with_event_pending(true)
        .with_event_type(hvdef::x86_64::HvX64PendingEventType::EXCEPTION)
        .with_deliver_error_code(true)
        .with_vector(GP_VECTOR)
        .with_error_code(0);
    hvdef::HvRegisterValue::from(event.into_bits())
}

/// Decodes an x64 memory intercept message (GPA intercept, unmapped GPA) in the assist page:
/// its header and the GPA, one volatile load per word.
pub fn decode_memory_intercept(assist: &crate::percpu::AssistPage) -> crate::proxy::MemoryAccess {
    use hvdef::x86_64::HvX64MemoryInterceptMessage;
    use zerocopy::{FromBytes, IntoBytes};
    const WORDS: usize = size_of::<HvX64MemoryInterceptMessage>() / 8;
    const GPA_END: usize =
        core::mem::offset_of!(HvX64MemoryInterceptMessage, instruction_bytes) / 8;
    let mut words = [0u64; WORDS];
    assist.read_payload(0, &mut words[..GPA_END]);
    let (msg, _) = HvX64MemoryInterceptMessage::ref_from_prefix(words.as_bytes())
        .expect("the words hold the whole message");
    crate::proxy::MemoryAccess {
        gpa: msg.guest_physical_address,
        access: msg.header.intercept_access_type,
        user: msg.header.execution_state.cpl() != 0,
        delivering_event: msg.header.execution_state.interruption_pending(),
    }
}

/// Where this VP's run loop decodes intercepts: a copy of the hypercall intercept message and
/// the fast block assembled from it, made once (zeroed) before the loop, so that decoding an
/// intercept neither zeroes nor copies a buffer. A decode reads into it only the words it uses
/// (see [`decode_intercept`]), and the request it returns borrows from it: the words another
/// intercept left behind are never part of that request.
pub struct InterceptBuffer {
    words: [u64; size_of::<hvdef::x86_64::HvX64HypercallInterceptMessage>() / 8],
    block: [u64; hvdef::x86_64::FAST_XMM_WORDS],
}

impl InterceptBuffer {
    pub const fn new() -> InterceptBuffer {
        InterceptBuffer {
            words: [0; size_of::<hvdef::x86_64::HvX64HypercallInterceptMessage>() / 8],
            block: [0; hvdef::x86_64::FAST_XMM_WORDS],
        }
    }
}

/// Decodes the x64 hypercall intercept message in the assist page into `buf`, reading only
/// what decoding uses: the header and RAX..R8 (10 words), and XMM0-5 (12 more) only for a fast
/// call on a host with XMM fast input, the one case `decode_x64` reads them.
#[inline(always)]
pub fn decode_intercept<'a>(
    assist: &crate::percpu::AssistPage,
    xmm_fast_input: bool,
    buf: &'a mut InterceptBuffer,
) -> crate::proxy::Decoded<'a> {
    use hvdef::x86_64::HvX64HypercallInterceptMessage as Msg;
    use zerocopy::{FromBytes, IntoBytes};
    const GPRS_END: usize = core::mem::offset_of!(Msg, rsi) / 8;
    const RCX: usize = core::mem::offset_of!(Msg, rcx) / 8;
    const XMM: usize = core::mem::offset_of!(Msg, xmm_registers) / 8;
    let words = &mut buf.words;
    assist.read_payload(0, &mut words[..GPRS_END]);
    if xmm_fast_input && hvdef::Control::from_bits(words[RCX]).fast() {
        assist.read_payload(XMM, &mut words[XMM..XMM + 12]);
    }
    let (msg, _) = Msg::ref_from_prefix(words.as_bytes()).expect("the words hold the message");
    crate::proxy::decode::decode_x64(msg, xmm_fast_input, &mut buf.block)
}

/// Puts a hypercall's result into VTL0's RAX, or, for a call VTL0 re-executes (TIMEOUT), the
/// new control word into RCX.
pub fn complete_intercept(
    regs: &mut Vtl0Registers,
    result: u64,
    control: Option<(ControlRegister, u64)>,
) {
    // A call left for re-execution (TLFS continuation) changes only the control register, as
    // OpenVMM's `hv1_hypercall` retry does; RAX keeps what VTL0 had.
    match control {
        Some((_, control)) => regs.rcx = control,
        None => regs.rax = result,
    }
}

/// Whether the host offers XMM fast hypercall input (CPUID 0x40000003 EDX bit 4).
pub fn xmm_fast_input() -> bool {
    cpuid(hvdef::x86_64::cpuid::HV_CPUID_FEATURES, 0)[3]
        & hvdef::x86_64::cpuid::HV_FEATURES_EDX_XMM_FAST_INPUT
        != 0
}

// ---- The VTL register page ----------------------------------------------------------------
//
// The frame is part of the VP's per-VP state (`percpu`, allocated on the VTL2 heap at boot for
// the VP count), so every VP up to the TLFS limit has its own.

/// x64 hosts may offer the register page.
pub const HAS_REGISTER_PAGE: bool = true;

/// This VP's register page frame (identity-mapped: address = GPA).
fn register_page_frame() -> *mut hvdef::x86_64::HvX64RegisterPage {
    crate::percpu::register_page_frame().cast()
}

/// This VP's VTL register page, mapped (NON-TLFS; the facts are in the TLFS model,
/// `tests/hvmodel/src/regpage.rs`). While VTL2 handles an intercept of VTL0 it holds VTL0's
/// registers, and a RIP written there with its dirty bit is loaded into VTL0 by the VtlReturn:
/// the IP advance of a completed call costs no hypercall.
pub struct RegisterPage(*mut hvdef::x86_64::HvX64RegisterPage);

impl RegisterPage {
    /// Maps this VP's page: SetVpRegisters of `HvX64RegisterName::RegisterPage` on itself, as
    /// Linux's `mshv_vtl_configure_reg_page` and OpenHCL's sidecar do. `Err` with the status of
    /// a host that has none (INVALID_PARAMETER: a hypervisor that predates it; ACCESS_DENIED:
    /// not offered): the IP then moves by SetVpRegisters.
    pub fn map() -> core::result::Result<RegisterPage, crate::hypercall::Error> {
        let frame = register_page_frame();
        let value = hvdef::HvPageRegister::new()
            .with_enable(true)
            .with_gpa_page_number(frame as u64 >> 12);
        crate::percpu::hypercall().set_vp_register(
            crate::hypercall::VpTarget::SELF,
            hvdef::x86_64::reg::REGISTER_PAGE,
            value.into_bits().into(),
        )?;
        Ok(RegisterPage(frame))
    }

    /// The page's GPA, for the log.
    pub fn gpa(&self) -> u64 {
        self.0 as u64
    }

    /// Writes VTL0's RIP through the page, if it holds VTL0's state now (`is_valid`, `vtl` 0:
    /// VTL2 is handling an intercept of VTL0). False otherwise: the caller falls back to
    /// SetVpRegisters.
    pub fn set_vtl0_rip(&self, rip: u64) -> bool {
        let page = self.0;
        // SAFETY: this VP's own page, in VTL2, so the hypervisor is not using it; volatile
        // accesses of single fields.
        unsafe {
            let valid = core::ptr::read_volatile(&raw const (*page).is_valid);
            let vtl = core::ptr::read_volatile(&raw const (*page).vtl);
            if valid == 0 || vtl != 0 {
                return false;
            }
            core::ptr::write_volatile(&raw mut (*page).rip, rip);
            let dirty = core::ptr::read_volatile(&raw const (*page).dirty);
            core::ptr::write_volatile(&raw mut (*page).dirty, dirty.with_instruction_pointer(true));
        }
        true
    }
}
