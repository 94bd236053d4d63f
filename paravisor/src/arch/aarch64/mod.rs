//! aarch64 hypervisor interface: SMCCC `hvc #0`, the hypercall ABI over it, the VTL return
//! (`hvc #3`), and synthetic registers as VP registers. The `hvc`s are plain instructions,
//! which Hyper-V traps at EL2 (TLFS hypercall-interface.md, "Hypercall calling conventions" on
//! ARM64; vsm.md for the VTL return).

use crate::hv::{self, NoHyperV};
use crate::hypercall::{HypercallAbi, Page, Result, VpTarget};
use crate::proxy::ControlRegister;
use hvdef::aarch64::{SMCCC_HV_FUNC_ID, SMCCC_VENDOR_HYP_UID};
use hvdef::{HvError, HvPartitionPrivilegeMask, HvRegisterName, SyntheticRegister};

core::arch::global_asm!(
    r#"
    /* X0..X17 from / to the 18-word array at \base. */
    .macro load_x0_x17 base
    ldp x0, x1, [\base, #0]
    ldp x2, x3, [\base, #16]
    ldp x4, x5, [\base, #32]
    ldp x6, x7, [\base, #48]
    ldp x8, x9, [\base, #64]
    ldp x10, x11, [\base, #80]
    ldp x12, x13, [\base, #96]
    ldp x14, x15, [\base, #112]
    ldp x16, x17, [\base, #128]
    .endm
    .macro store_x0_x17 base
    stp x0, x1, [\base, #0]
    stp x2, x3, [\base, #16]
    stp x4, x5, [\base, #32]
    stp x6, x7, [\base, #48]
    stp x8, x9, [\base, #64]
    stp x10, x11, [\base, #80]
    stp x12, x13, [\base, #96]
    stp x14, x15, [\base, #112]
    stp x16, x17, [\base, #128]
    .endm

    .section .text.hvcall, "ax"
    .global pv_hvc_fast6
pv_hvc_fast6:                    /* (function id, control, words: *const [u64; 6]) -> x0 */
    ldp x4, x5, [x2, #16]
    ldp x6, x7, [x2, #32]
    ldp x2, x3, [x2]
    hvc #0
    ret

    .global pv_hvc_smccc
pv_hvc_smccc:                    /* (regs: *mut [u64; 18]): x0..x17 in and out */
    stp x19, x30, [sp, #-16]!
    mov x19, x0
    load_x0_x17 x19
    hvc #0
    store_x0_x17 x19
    ldp x19, x30, [sp], #16
    ret

    /* VTL0's X2..X17 and X19..X30 as pairs, from / to the 31-word array at \base. */
    .macro vtl0_pairs op, base
    \op x2, x3, [\base, #16]
    \op x4, x5, [\base, #32]
    \op x6, x7, [\base, #48]
    \op x8, x9, [\base, #64]
    \op x10, x11, [\base, #80]
    \op x12, x13, [\base, #96]
    \op x14, x15, [\base, #112]
    \op x16, x17, [\base, #128]
    \op x19, x20, [\base, #152]
    \op x21, x22, [\base, #168]
    \op x23, x24, [\base, #184]
    \op x25, x26, [\base, #200]
    \op x27, x28, [\base, #216]
    \op x29, x30, [\base, #232]
    .endm

    .global pv_vtl_return
pv_vtl_return:                   /* (regs: *mut [u64; 31]): VTL0's X0..X30 but X18, and back */
    /* VTL0 resumes with what X0-X17, X19-X28 (shared) and X29/X30 (carried, see
       Vtl0Registers) hold at the hvc, and VTL2 comes back with VTL0's in them. So: keep ours
       (the callee-saved X19..X30) on the private stack (SP is private), then the regs pointer
       below them, load VTL0's set with X0 as the base and X0 itself last. X18 is private. */
    stp x29, x30, [sp, #-96]!
    stp x19, x20, [sp, #16]
    stp x21, x22, [sp, #32]
    stp x23, x24, [sp, #48]
    stp x25, x26, [sp, #64]
    stp x27, x28, [sp, #80]
    str x0, [sp, #-16]!          /* [sp] = regs; [sp, #8] is free until after the switch */
    ldr x1, [x0, #8]
    vtl0_pairs ldp, x0
    ldr x0, [x0]
    hvc #3
    /* Every register but SP and X18 may hold VTL0's now: park VTL0's X0 in the free slot and
       make X0 the base again before any other is touched. */
    str x0, [sp, #8]
    ldr x0, [sp]
    str x1, [x0, #8]
    vtl0_pairs stp, x0
    ldr x1, [sp, #8]
    str x1, [x0]
    add sp, sp, #16
    ldp x19, x20, [sp, #16]
    ldp x21, x22, [sp, #32]
    ldp x23, x24, [sp, #48]
    ldp x25, x26, [sp, #64]
    ldp x27, x28, [sp, #80]
    ldp x29, x30, [sp], #96
    ret
    "#
);

unsafe extern "C" {
    fn pv_hvc_smccc(regs: *mut [u64; 18]);
    /// SMCCC `hvc #0` with X0 = `function`, X1 = `control`, X2..X7 = `words`; returns X0. The
    /// hypervisor may change X0-X17 (SMCCC), all caller-saved in AAPCS64.
    fn pv_hvc_fast6(function: u64, control: u64, words: *const [u64; 6]) -> u64;
}

/// An SMCCC call through the `hvc #0` site with x0..x17 = `regs`, returning x0..x17.
fn smccc(mut regs: [u64; 18]) -> [u64; 18] {
    smccc_in_place(&mut regs);
    regs
}

/// [`smccc`] on the caller's array, without copying it in and out.
fn smccc_in_place(regs: &mut [u64; 18]) {
    // SAFETY: the site only loads and stores the 18 words of `regs` around the hvc.
    unsafe { pv_hvc_smccc(regs) };
}

/// Finds Hyper-V through the SMCCC vendor-hypervisor UID call.
pub fn detect() -> core::result::Result<(), NoHyperV> {
    let mut regs = [0; 18];
    regs[0] = SMCCC_VENDOR_HYP_UID as u64;
    let out = smccc(regs);
    hv::check_uid([out[0] as u32, out[1] as u32, out[2] as u32, out[3] as u32])
}

/// Identity-maps the reported RAM (boot's tables; see `boot::paging`) up to the physical
/// address width ID_AA64MMFR0_EL1.PARange gives.
pub fn map_ram(ram: &[core::ops::Range<u64>]) -> &'static boot::paging::MappedRam {
    use aarch64_cpu::registers::{Readable, ID_AA64MMFR0_EL1};
    boot::arch::map_ram(ram, boot::paging::aarch64_pa_bits(ID_AA64MMFR0_EL1.get()))
}

/// Where [`nested_host`] looks, for the boot log.
pub const NESTED_INDICATOR: &str = "HvRegisterFeaturesInfo bit 4";

/// Whether the host runs us nested: bit 4 of HvRegisterFeaturesInfo (TLFS feature-discovery.md,
/// "Implementation Recommendations - HvRegisterFeaturesInfo"), read once through the shared
/// register path. The register is on the TLFS's early list (HvCallGetVpRegisters), but the boot
/// VP reads it after setting the guest OS id, as Linux's `hyperv_init` does.
pub fn nested_host() -> Result<bool> {
    let value = crate::percpu::hypercall()
        .get_vp_register(VpTarget::SELF, HvRegisterName::FEATURES_INFO)?;
    Ok(hv::nested_arm64(value))
}

/// Sets the guest OS id (through the shared register path; it fits a fast call, the only form
/// the TLFS accepts before the id is set). arm64 needs nothing else to enable hypercalls.
pub fn enable_hypercalls(guest_os_id: u64) -> core::result::Result<(), &'static str> {
    crate::percpu::hypercall()
        .set_vp_register(
            VpTarget::SELF,
            HvRegisterName::GUEST_OS_ID,
            guest_os_id.into(),
        )
        .map_err(|_| "the hypervisor refused the guest OS id (SetVpRegisters GuestOsId)")
}

/// The partition's privileges, from HvRegisterPrivilegesAndFeaturesInfo.
pub fn privileges() -> Result<HvPartitionPrivilegeMask> {
    let value = crate::percpu::hypercall()
        .get_vp_register(VpTarget::SELF, HvRegisterName::PRIVILEGES_AND_FEATURES_INFO)?;
    Ok(HvPartitionPrivilegeMask::from_bits(value.as_u64()))
}

/// The hypercall ABI over SMCCC: x0 = function id, x1 = control, x2/x3 = input/output GPAs,
/// or x2..x17 as the fast input block.
pub struct Abi;

impl HypercallAbi for Abi {
    fn call(&mut self, control: u64, input: &Page, output: &mut Page) -> u64 {
        let mut regs = [0; 18];
        regs[..4].copy_from_slice(&[SMCCC_HV_FUNC_ID as u64, control, input.gpa(), output.gpa()]);
        smccc(regs)[0]
    }

    fn call_fast6(&mut self, control: u64, words: &[u64; 6]) -> Option<u64> {
        // SAFETY: the stub reads the 6 words and issues the hvc; it touches no other memory.
        Some(unsafe { pv_hvc_fast6(SMCCC_HV_FUNC_ID.into(), control, words) })
    }

    fn call_fast(&mut self, control: u64, block: &mut [u64]) -> Option<u64> {
        if block.len() > hvdef::aarch64::SMCCC_FAST_WORDS {
            return None;
        }
        // X0..X17 built word by word (a fixed count the compiler unrolls), never zeroed then
        // copied; the block's registers are copied back for a call with fast output.
        let mut regs: [u64; 18] = core::array::from_fn(|i| match i {
            0 => SMCCC_HV_FUNC_ID as u64,
            1 => control,
            i => block.get(i - 2).copied().unwrap_or(0),
        });
        smccc_in_place(&mut regs);
        for (word, reg) in block.iter_mut().zip(&regs[2..]) {
            *word = *reg;
        }
        Some(regs[0])
    }
}

/// Writes a synthetic register: on arm64 every one is a VP register.
pub fn write_synthetic(reg: SyntheticRegister, value: u64) -> Result<()> {
    let name = reg.vp_register().ok_or(HvError::INVALID_PARAMETER)?;
    crate::percpu::hypercall().set_vp_register(VpTarget::SELF, name, value.into())
}

/// The HvCallEnableVpVtl / HvCallStartVirtualProcessor input that starts `vp` at VTL2 in
/// `boot`'s AP entry with this VP's translation and vector setup, on `vp`'s boot stack.
pub fn vp_start_input(vp: u32) -> hvdef::aarch64::HvArm64InputEnableVpVtl {
    use aarch64_cpu::registers::{
        Readable, MAIR_EL1, SCTLR_EL1, TCR_EL1, TTBR0_EL1, TTBR1_EL1, VBAR_EL1,
    };
    hvdef::aarch64::HvArm64InputEnableVpVtl {
        partition_id: hvdef::HV_PARTITION_ID_SELF,
        vp_index: vp,
        target_vtl: crate::vsm::PARAVISOR_VTL,
        reserved: [0; 3],
        context: hvdef::aarch64::HvArm64InitialVpContext {
            pc: boot::arch::ap_entry(),
            sp_elh: boot::stacks::top(vp as usize),
            sctlr_el1: SCTLR_EL1.get(),
            mair_el1: MAIR_EL1.get(),
            tcr_el1: TCR_EL1.get(),
            vbar_el1: VBAR_EL1.get(),
            ttbr0_el1: TTBR0_EL1.get(),
            ttbr1_el1: TTBR1_EL1.get(),
            x18: 0,
        },
    }
}

unsafe extern "C" {
    fn pv_vtl_return(regs: *mut [u64; 31]);
}

/// Nothing to look up: VTL return is `hvc #3` on arm64.
pub fn init_vtl_switch() -> Result<()> {
    Ok(())
}

/// VTL0's general-purpose registers by number: what VTL0 gets on the next return, and on entry
/// what it had. X0-X17 and X19-X28 are shared between the VTLs (TLFS vsm.md "Shared State"), so
/// VTL0 resumes with whatever they hold at the `hvc #3`. X29/X30 are private per the TLFS, but
/// Linux and OpenHCL (`hv_vtl_return`) load and save them as VTL0 context around `hvc #3`; so
/// does the paravisor, which is right under either reading. `x[18]` is unused: X18 is private
/// and neither loaded nor stored.
#[derive(Clone, Copy, Debug, Default)]
pub struct Vtl0Registers {
    pub x: [u64; 31],
}

impl Vtl0Registers {
    /// The registers this struct carries (X0-X17, X19-X30; X18 is private and not carried):
    /// what the paravisor reads of VTL0 before its first return, so that VTL0 resumes with its
    /// own values.
    pub const NAMES: [hvdef::HvRegisterName; 30] = {
        let mut names = [hvdef::HvRegisterName(0); 30];
        let mut i = 0;
        while i < 30 {
            let n = if i < 18 { i } else { i + 1 };
            names[i] = hvdef::HvRegisterName(hvdef::aarch64::reg::X0.0 + n as u32);
            i += 1;
        }
        names
    };

    /// From the values of [`Vtl0Registers::NAMES`], in that order.
    pub fn from_values(values: &[hvdef::HvRegisterValue; 30]) -> Vtl0Registers {
        let mut regs = Vtl0Registers::default();
        for (i, value) in values.iter().enumerate() {
            regs.x[if i < 18 { i } else { i + 1 }] = value.as_u64();
        }
        regs
    }
}

/// Returns to VTL0 and comes back when VTL2 is entered again (intercept, interrupt, VTL call).
pub fn vtl_return(_assist: &crate::percpu::AssistPage, regs: &mut Vtl0Registers) {
    // SAFETY: `hvc #3` switches to VTL0 and comes back here with our stack intact (SP is
    // private to VTL2); the asm restores VTL2's callee-saved X19..X30 from that stack and
    // touches no memory but the stack and `regs`. The rest are caller-saved in AAPCS64 (X18
    // is not reserved on this target), so the call may change them.
    unsafe { pv_vtl_return(&mut regs.x) };
}

/// VTL0's program counter, advanced past a completed hypercall.
pub const IP_REGISTER: HvRegisterName = hvdef::aarch64::reg::XPC;

/// A VP register's TLFS name (this ISA's names first), for log lines.
pub fn register_name(name: HvRegisterName) -> Option<&'static str> {
    hvdef::aarch64::reg::name(name).or(name.name())
}

/// The `HvRegisterPendingEvent0` value that makes VTL0 take an undefined-instruction exception:
/// an exception event whose syndrome (ESR_EL1) has EC 0, "unknown reason", the class the Arm ARM
/// reports undefined instructions with, and IL (bit 25) set, which the Arm ARM requires for that
/// class. No fault address, so PendingEvent1 is not needed.
pub fn undefined_instruction_event() -> hvdef::HvRegisterValue {
    const ESR_EC_UNKNOWN: u64 = 0;
    const ESR_EC_SHIFT: u32 = 26;
    const ESR_IL: u64 = 1 << 25;
    let event = hvdef::aarch64::HvArm64PendingExceptionEvent::new()
        .with_event_pending(true)
        .with_event_type(hvdef::aarch64::HvArm64PendingEventType::EXCEPTION)
        .with_syndrome(ESR_EC_UNKNOWN << ESR_EC_SHIFT | ESR_IL);
    hvdef::HvRegisterValue::from(event.into_bits())
}

/// What VTL0 takes for an access the hypervisor stopped at a page VTL2 keeps (a GPA intercept):
/// a synchronous external abort, what the Arm ARM reports for an access the memory system
/// refuses.
pub const MEMORY_FAULT_NAME: &str = "a synchronous external abort";

/// The abort's `HvRegisterPendingEvent0`: ESR_EL1 with EC 0x25 data abort / 0x21 instruction
/// abort taken without a change in exception level (VTL0's kernel), 0x24 / 0x20 from EL0; IL;
/// FnV (no fault address, so PendingEvent1 is not needed); WnR for a store; fault status 0x10,
/// synchronous external abort not on a table walk.
pub fn memory_fault_event(access: &crate::proxy::MemoryAccess) -> hvdef::HvRegisterValue {
    const ESR_EC_SHIFT: u32 = 26;
    const ESR_IL: u64 = 1 << 25;
    const ESR_FNV: u64 = 1 << 10;
    const ESR_WNR: u64 = 1 << 6;
    const FSC_SYNC_EXTERNAL: u64 = 0x10;
    let execute = access.access == hvdef::HvInterceptAccessType::EXECUTE;
    let class: u64 = match (execute, access.user) {
        (true, false) => 0x21,
        (true, true) => 0x20,
        (false, false) => 0x25,
        (false, true) => 0x24,
    };
    let wnr = if access.access == hvdef::HvInterceptAccessType::WRITE {
        ESR_WNR
    } else {
        0
    };
    let event = hvdef::aarch64::HvArm64PendingExceptionEvent::new()
        .with_event_pending(true)
        .with_event_type(hvdef::aarch64::HvArm64PendingEventType::EXCEPTION)
        .with_syndrome(class << ESR_EC_SHIFT | ESR_IL | ESR_FNV | wnr | FSC_SYNC_EXTERNAL);
    hvdef::HvRegisterValue::from(event.into_bits())
}

/// Decodes an arm64 memory intercept message (GPA intercept, unmapped GPA) in the assist page:
/// its header and the GPA, one volatile load per word.
pub fn decode_memory_intercept(assist: &crate::percpu::AssistPage) -> crate::proxy::MemoryAccess {
    use hvdef::aarch64::HvArm64MemoryInterceptMessage as Msg;
    use zerocopy::{FromBytes, IntoBytes};
    const WORDS: usize = size_of::<Msg>() / 8;
    const GPA_END: usize = core::mem::offset_of!(Msg, syndrome) / 8;
    let mut words = [0u64; WORDS];
    assist.read_payload(0, &mut words[..GPA_END]);
    let (msg, _) = Msg::ref_from_prefix(words.as_bytes()).expect("the words hold the message");
    crate::proxy::MemoryAccess {
        gpa: msg.guest_physical_address,
        access: msg.header.intercept_access_type,
        // CPSR.M[3:2] is the exception level the access came from (architectural, unlike the
        // execution state's `cpl`, whose arm64 meaning no source defines).
        user: (msg.header.cpsr >> 2) & 3 == 0,
        delivering_event: msg.header.execution_state.interruption_pending(),
    }
}

/// Where this VP's run loop decodes intercepts: a copy of the hypercall intercept message,
/// made once (zeroed) before the loop, so that decoding an intercept neither zeroes nor copies
/// a buffer. A decode reads into it only the words it uses (see [`decode_intercept`]), and the
/// request it returns borrows from it: the words another intercept left behind are never part
/// of that request.
pub struct InterceptBuffer {
    words: [u64; size_of::<hvdef::aarch64::HvArm64HypercallInterceptMessage>() / 8],
}

impl InterceptBuffer {
    pub const fn new() -> InterceptBuffer {
        InterceptBuffer {
            words: [0; size_of::<hvdef::aarch64::HvArm64HypercallInterceptMessage>() / 8],
        }
    }
}

/// Decodes the arm64 hypercall intercept message in the assist page into `buf`, reading only
/// what decoding uses: the header, the immediate and X0-X3 (8 words), and X4-X17 (14 more)
/// only for a fast call, the one case `decode_arm64` reads them (its control word is the one
/// read here: X1 under SMCCC, X0 otherwise).
#[inline(always)]
pub fn decode_intercept<'a>(
    assist: &crate::percpu::AssistPage,
    _xmm_fast_input: bool,
    buf: &'a mut InterceptBuffer,
) -> crate::proxy::Decoded<'a> {
    use hvdef::aarch64::HvArm64HypercallInterceptMessage as Msg;
    use zerocopy::{FromBytes, IntoBytes};
    const X: usize = core::mem::offset_of!(Msg, x) / 8;
    const IMMEDIATE: usize = core::mem::offset_of!(Msg, immediate) / 8;
    let words = &mut buf.words;
    assist.read_payload(0, &mut words[..X + 4]);
    let smccc = words[IMMEDIATE] as u16 == hvdef::aarch64::HVC_IMM_SMCCC;
    let control = words[X + usize::from(smccc)];
    if hvdef::Control::from_bits(control).fast() {
        assist.read_payload(X + 4, &mut words[X + 4..]);
    }
    let (msg, _) = Msg::ref_from_prefix(words.as_bytes()).expect("the words hold the message");
    crate::proxy::decode::decode_arm64(msg)
}

/// Puts a hypercall's result into VTL0's X registers. SMCCC (`hvc #0`): X0 = result, or on
/// TIMEOUT X0 keeps the function id and X1 gets the new control; `hvc #1`: X0 = result, or the
/// new control on TIMEOUT (it is re-executed).
pub fn complete_intercept(
    regs: &mut Vtl0Registers,
    result: u64,
    control: Option<(ControlRegister, u64)>,
) {
    match control {
        None => regs.x[0] = result,
        Some((ControlRegister::X1, control)) => regs.x[1] = control,
        // RCX is x64's; decode never names it for an arm64 call.
        Some((ControlRegister::X0 | ControlRegister::Rcx, control)) => regs.x[0] = control,
    }
}

/// arm64 has no XMM registers.
pub fn xmm_fast_input() -> bool {
    false
}

/// No register page on arm64: [`RegisterPage::map`] is never called.
pub const HAS_REGISTER_PAGE: bool = false;

/// arm64 has no VTL register page (Linux's `mshv_vtl` maps one on x86_64 only; see the TLFS
/// model's fact sheet, `tests/hvmodel/src/regpage.rs`): VTL0's PC moves by SetVpRegisters.
pub struct RegisterPage;

impl RegisterPage {
    /// Never mapped on arm64.
    pub fn map() -> core::result::Result<RegisterPage, crate::hypercall::Error> {
        Err(crate::hypercall::Error::Hv(HvError::INVALID_PARAMETER))
    }

    pub fn gpa(&self) -> u64 {
        0
    }

    pub fn set_vtl0_rip(&self, _pc: u64) -> bool {
        false
    }
}
