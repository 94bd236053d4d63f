//! The arm64 exits: an `hvc #imm` trapped to EL2 (from VTL2, or from a live VTL0), on the
//! registers the EL2 vector saved; VTL0's entry and exception delivery; a started VP's state.

use super::Next;
use hvdef::aarch64::{
    reg, HvArm64InitialVpContext, HvArm64PendingEventType, HvArm64PendingExceptionEvent,
    HVC_IMM_VTL_RETURN,
};
use hvdef::{HvRegisterName, Vtl};
use hvmodel::{Effects, Fault, GuestMemory, LiveError, LowerExit, Model, SwitchRegs, ARM64_GPRS};

/// The guest's registers as the EL2 vector saved them: X0..X30, ELR_EL2, SPSR_EL2. The vector
/// code (`aarch64::entry`) uses this layout; its offsets are asserted there.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Frame {
    pub x: [u64; ARM64_GPRS],
    pub elr: u64,
    pub spsr: u64,
    /// Keeps the frame a multiple of 16 bytes (SP alignment).
    pub pad: u64,
}

/// Length of `hvc` in bytes: an HVC exit's ELR_EL2 already points past it.
pub const HVC_LEN: u64 = 4;

/// The arm64 partition (see [`partition`](super::partition)), for the tests.
#[cfg(test)]
pub fn model(ram: core::ops::Range<u64>, vp_count: u32) -> Model {
    super::partition(
        hvmodel::Arch::Aarch64,
        core::slice::from_ref(&ram),
        vp_count,
    )
}

/// An `hvc #imm` exit of `vp` in VTL2: the model answers, its results go into `frame`. An
/// ordinary call moves X0..X17, a VTL return X0..X30 (the model keeps the private ones per
/// VTL). A call the model leaves on its instruction (TIMEOUT) gets ELR moved back onto the
/// `hvc`.
pub fn hvc(
    model: &mut Model,
    vp: u32,
    imm: u16,
    frame: &mut Frame,
    mem: &mut dyn GuestMemory,
) -> Next {
    let mut regs = frame.x;
    let effects: Effects = model.hvc(vp, imm, &mut regs, mem);
    match effects.fault {
        Some(Fault::Ud) => {
            frame.elr = frame.elr.wrapping_sub(HVC_LEN);
            return Next::Undefined;
        }
        Some(Fault::Gp) => return Next::Unsupported("the model raised #GP on arm64"),
        None => {}
    }
    if effects.finished {
        return Next::Finished;
    }
    if effects.lower_runs {
        return Next::RunLower;
    }
    let moved = if imm == HVC_IMM_VTL_RETURN {
        ARM64_GPRS
    } else {
        18
    };
    frame.x[..moved].copy_from_slice(&regs[..moved]);
    if !effects.advance_ip {
        frame.elr -= HVC_LEN;
    }
    match effects.start_vp {
        Some(start) => Next::Start(alloc::boxed::Box::new(start)),
        None => Next::Resume,
    }
}

/// ESR of an undefined instruction: EC 0, IL (Arm ARM ESR_ELx).
pub const ESR_UNDEFINED: u64 = 1 << 25;

/// The frame and EL1 registers a VP started with HvCallStartVirtualProcessor begins with
/// (TLFS `HV_INITIAL_VP_CONTEXT` for arm64): PC, SP_EL1, X18 and the translation and vector
/// registers from the context, EL1h with DAIF masked, everything else zero.
pub fn initial_state(ctx: &HvArm64InitialVpContext) -> (Frame, El1Regs) {
    let mut frame = Frame {
        elr: ctx.pc,
        spsr: 0x3c5,
        ..Frame::default()
    };
    frame.x[18] = ctx.x18;
    let el1 = El1Regs {
        sctlr: ctx.sctlr_el1,
        mair: ctx.mair_el1,
        tcr: ctx.tcr_el1,
        vbar: ctx.vbar_el1,
        ttbr0: ctx.ttbr0_el1,
        ttbr1: ctx.ttbr1_el1,
        sp_el1: ctx.sp_elh,
        ..El1Regs::default()
    };
    (frame, el1)
}

/// The EL1 system registers a VTL owns (TLFS vsm.md "Private State": each VTL has its own
/// translation, exception and thread registers), which the host swaps at a VTL switch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct El1Regs {
    pub sctlr: u64,
    pub ttbr0: u64,
    pub ttbr1: u64,
    pub tcr: u64,
    pub mair: u64,
    pub vbar: u64,
    pub elr: u64,
    pub esr: u64,
    pub far: u64,
    pub sp_el0: u64,
    pub sp_el1: u64,
    pub spsr: u64,
    pub tpidr_el1: u64,
    pub tpidr_el0: u64,
    pub tpidrro_el0: u64,
    pub contextidr: u64,
    pub cpacr: u64,
    pub amair: u64,
    pub par: u64,
    pub cntkctl: u64,
    pub afsr0: u64,
    pub afsr1: u64,
}

impl El1Regs {
    /// The ones the model holds under a TLFS name (VTL2 reads and sets a lower VTL's with
    /// Get/SetVpRegisters, so the model's copy is the lower VTL's state while it is not
    /// running); the rest only the host keeps.
    fn named(&mut self) -> [(HvRegisterName, &mut u64); 11] {
        [
            (reg::SCTLR_EL1, &mut self.sctlr),
            (reg::TTBR0_EL1, &mut self.ttbr0),
            (reg::TTBR1_EL1, &mut self.ttbr1),
            (reg::TCR_EL1, &mut self.tcr),
            (reg::MAIR_EL1, &mut self.mair),
            (reg::VBAR_EL1, &mut self.vbar),
            (reg::ELR_EL1, &mut self.elr),
            (reg::ESR_EL1, &mut self.esr),
            (reg::FAR_EL1, &mut self.far),
            (reg::XSP_EL0, &mut self.sp_el0),
            (reg::XSP_ELX, &mut self.sp_el1),
        ]
    }
}

fn x_name(n: usize) -> HvRegisterName {
    HvRegisterName(reg::X0.0 + n as u32)
}

/// The VTL the host runs a VP's live lower VTL as.
const LOWER: Vtl = Vtl::VTL0;

/// Loads the live VTL0 as the model holds it into `frame` and `el1` (X0..X30, PC, CPSR, the
/// named EL1 registers; the host's own in `el1` stay), then has it take the exception the
/// paravisor left it, if any: what the host runs next. Unsupported: a pending event that is
/// not an exception.
pub fn enter_lower(
    model: &mut Model,
    vp: u32,
    frame: &mut Frame,
    el1: &mut El1Regs,
) -> Result<(), &'static str> {
    let state = |model: &Model, name| model.vp_state(vp, LOWER, name).unwrap_or(0) as u64;
    for (n, x) in frame.x.iter_mut().enumerate() {
        *x = state(model, x_name(n));
    }
    frame.elr = state(model, reg::XPC);
    frame.spsr = state(model, reg::CPSR);
    // SPSR_EL2 is what `eret` returns to: a mode other than EL0t, EL1t or EL1h (AArch64) would
    // run VTL0 at EL2, on the host's own translation. Whoever set it (VTL2, a VTL0 context, a
    // scenario), the host does not run it.
    if !matches!(frame.spsr & 0x1f, 0b0_0000 | 0b0_0100 | 0b0_0101) {
        return Err("VTL0's CPSR names a mode VTL0 cannot run in (not EL0t, EL1t or EL1h)");
    }
    for (name, value) in el1.named() {
        *value = state(model, name);
    }
    let Some(result) = model.vtl0().take_live_result(vp) else {
        return Ok(());
    };
    if let Some(Fault::Ud) = result.hypervisor_fault {
        take_exception(frame, el1, ESR_UNDEFINED, 0);
    } else if let Some(event) = result.pending_event() {
        let event = HvArm64PendingExceptionEvent::from_bits(event);
        if event.event_type() != HvArm64PendingEventType::EXCEPTION {
            return Err("a pending event other than an exception (not delivered yet)");
        }
        let far = result.register(HvRegisterName::PENDING_EVENT1) as u64;
        take_exception(frame, el1, event.syndrome(), far);
    }
    Ok(())
}

/// A synchronous exception taken to EL1 as the CPU takes it (Arm ARM D1.10): ESR_EL1 and
/// FAR_EL1 from the event, ELR_EL1/SPSR_EL1 the interrupted PC and PSTATE, then the vector for
/// where it came from (EL1 on SP_EL0 +0x000, EL1 on SP_EL1 +0x200, EL0 +0x400) in EL1h with
/// D, A, I and F masked.
pub fn take_exception(frame: &mut Frame, el1: &mut El1Regs, esr: u64, far: u64) {
    el1.esr = esr;
    el1.far = far;
    el1.elr = frame.elr;
    el1.spsr = frame.spsr;
    let offset = match frame.spsr & 0xf {
        0b0100 => 0x000,
        0b0101 => 0x200,
        _ => 0x400,
    };
    frame.elr = el1.vbar + offset;
    frame.spsr = 0x3c5;
}

/// What the host does after a live VTL0 exit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LowerNext {
    /// VTL0 runs on with the updated `frame` and `el1`.
    Resume,
    /// VTL2 runs: `frame.x` holds its X0..X30; the caller restores its PC, PSTATE and EL1
    /// registers from when it returned to VTL0.
    Vtl2,
    /// The partition is done (a reset: the model ended the run).
    Finished,
    /// Something this host cannot carry out; the run fails with this reason.
    Unsupported(alloc::string::String),
}

/// VTL0 exited (at `ip`: the `hvc` or the faulting instruction, `frame` and `el1` as it left
/// them): its state goes into the model, which serves the exit. VTL0 resuming gets its state
/// back from the model (see [`enter_lower`]).
pub fn lower_exit(
    model: &mut Model,
    vp: u32,
    exit: LowerExit,
    ip: u64,
    frame: &mut Frame,
    el1: &mut El1Regs,
    mem: &mut dyn GuestMemory,
) -> LowerNext {
    for (n, x) in frame.x.iter().enumerate() {
        model.set_vp_state(vp, LOWER, x_name(n), (*x).into());
    }
    model.set_vp_state(vp, LOWER, reg::XPC, ip.into());
    model.set_vp_state(vp, LOWER, reg::CPSR, frame.spsr.into());
    for (name, value) in el1.named() {
        model.set_vp_state(vp, LOWER, name, (*value).into());
    }
    let mut regs = [0; ARM64_GPRS];
    let effects = match model.lower_exit(vp, exit, SwitchRegs::Aarch64(&mut regs), mem) {
        Ok(effects) => effects,
        Err(e) => {
            return LowerNext::Unsupported(alloc::format!(
                "VTL0 exit at {ip:#x}: {}",
                live_error(e)
            ))
        }
    };
    if effects.finished {
        return LowerNext::Finished;
    }
    if effects.lower_runs {
        return match enter_lower(model, vp, frame, el1) {
            Ok(()) => LowerNext::Resume,
            Err(why) => LowerNext::Unsupported(why.into()),
        };
    }
    if effects.start_vp.is_some() || effects.fault.is_some() {
        return LowerNext::Unsupported(
            "VTL0's exit asked for a VP start or a fault in VTL2".into(),
        );
    }
    frame.x = regs;
    LowerNext::Vtl2
}

fn live_error(e: LiveError) -> alloc::string::String {
    match e {
        LiveError::AccessAllowed { gpa, access } => alloc::format!(
            "stage 2 stopped a {access:?} of GPA {gpa:#x} that the model allows (not RAM the \
             model knows, or the tables and the model disagree)"
        ),
        other => alloc::format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hvdef::aarch64::{HV_VENDOR_HYP_UID, SMCCC_VENDOR_HYP_UID};
    use hvmodel::TestMemory;

    const VP: u32 = 0;

    #[test]
    fn vendor_uid_is_answered_in_x0_to_x3_and_nothing_else_moves() {
        let mut model = model(0..0x10000, 1);
        let mut mem = TestMemory::new(0x10000);
        let mut frame = Frame {
            elr: 0x4020_1004,
            spsr: 0x3c5,
            ..Frame::default()
        };
        frame.x[0] = SMCCC_VENDOR_HYP_UID.into();
        for (i, x) in frame.x.iter_mut().enumerate().skip(18) {
            *x = 0x1000 + i as u64;
        }
        let before = frame;
        assert_eq!(hvc(&mut model, VP, 0, &mut frame, &mut mem), Next::Resume);
        for (reg, word) in frame.x.iter().zip(HV_VENDOR_HYP_UID) {
            assert_eq!(*reg, u64::from(word));
        }
        assert_eq!(frame.x[18..], before.x[18..]);
        assert_eq!((frame.elr, frame.spsr), (before.elr, before.spsr));
    }

    /// A fast GetVpRegisters answers in the output pair after its input (X6/X7 for one name):
    /// the glue must carry the model's X2..X17 back, not only X0..X3.
    #[test]
    fn fast_output_registers_reach_the_guest() {
        use hvdef::aarch64::SMCCC_HV_FUNC_ID;
        use hvdef::{
            Control, HvRegisterName, HypercallCode, Vtl, HV_PARTITION_ID_SELF, HV_VP_INDEX_SELF,
        };
        let name = HvRegisterName::PRIVILEGES_AND_FEATURES_INFO;
        let mut model = model(0..0x10000, 1);
        let mut mem = TestMemory::new(0x10000);
        let mut frame = Frame::default();
        frame.x[0] = SMCCC_HV_FUNC_ID.into();
        frame.x[1] = Control::new()
            .with_code(HypercallCode::GET_VP_REGISTERS)
            .with_fast(true)
            .with_rep_count(1)
            .into_bits();
        frame.x[2] = HV_PARTITION_ID_SELF;
        frame.x[3] = HV_VP_INDEX_SELF.into();
        frame.x[4] = name.0.into();
        for x in &mut frame.x[5..18] {
            *x = 0xdead_beef;
        }
        assert_eq!(hvc(&mut model, VP, 0, &mut frame, &mut mem), Next::Resume);
        let want = model.register(VP, Vtl::VTL2, name).expect("readable");
        assert_ne!(want, 0, "a register that has a value");
        assert_eq!(frame.x[0] & 0xffff, 0, "HV_STATUS_SUCCESS");
        assert_eq!(frame.x[6], want as u64);
        assert_eq!(frame.x[7], (want >> 64) as u64);
    }

    /// VTL0's `hvc #0` at `pc` exits to the host.
    fn vtl0_hvc(
        model: &mut Model,
        pc: u64,
        frame: &mut Frame,
        el1: &mut El1Regs,
        mem: &mut TestMemory,
    ) -> LowerNext {
        let exit = LowerExit::Hypercall { immediate: 0 };
        lower_exit(model, VP, exit, pc, frame, el1, mem)
    }

    /// A model in live mode whose VP 0 has returned to VTL0 (the paravisor's first VtlReturn).
    fn live_model() -> (Model, TestMemory) {
        let mut model = model(0..0x10_0000, 1);
        let mut mem = TestMemory::new(0x10_0000);
        model.vtl0().set_live(true);
        let mut frame = Frame::default();
        assert_eq!(
            hvc(&mut model, VP, HVC_IMM_VTL_RETURN, &mut frame, &mut mem),
            Next::RunLower
        );
        (model, mem)
    }

    #[test]
    fn vtl0_runs_from_the_state_the_model_holds_and_its_hypercall_comes_back_completed() {
        let (mut model, mut mem) = live_model();
        let vbar = 0x4_8000;
        model.set_vp_state(VP, LOWER, reg::XPC, 0x4_0000);
        model.set_vp_state(VP, LOWER, reg::VBAR_EL1, vbar.into());
        let mut frame = Frame::default();
        let mut el1 = El1Regs {
            tpidr_el1: 0x7777,
            ..El1Regs::default()
        };
        enter_lower(&mut model, VP, &mut frame, &mut el1).expect("entered");
        assert_eq!((frame.elr, frame.spsr), (0x4_0000, 0x3c5));
        assert_eq!(el1.vbar, vbar);
        assert_eq!(el1.tpidr_el1, 0x7777, "the host's own are left alone");

        // VTL0 asks for the vendor UID: served by the hypervisor, PC past the hvc, X0..X3 set.
        frame.x[0] = SMCCC_VENDOR_HYP_UID.into();
        for (i, x) in frame.x.iter_mut().enumerate().skip(4) {
            *x = 0x0a00 + i as u64;
        }
        let before = frame;
        let next = vtl0_hvc(&mut model, 0x4_0000, &mut frame, &mut el1, &mut mem);
        assert_eq!(next, LowerNext::Resume);
        assert_eq!(frame.elr, 0x4_0004);
        for (reg, word) in frame.x.iter().zip(HV_VENDOR_HYP_UID) {
            assert_eq!(*reg, u64::from(word));
        }
        assert_eq!(frame.x[4..], before.x[4..], "nothing else moved");
    }

    /// A CPSR naming EL2 (or AArch32, or a reserved mode) would have `eret` run VTL0 on the
    /// host's own level: refused, whatever set it.
    #[test]
    fn vtl0_never_runs_in_a_mode_above_el1() {
        for (cpsr, ok) in [
            (0x3c5, true),
            (0x3c4, true),
            (0x3c0, true),
            (0x3c9, false),
            (0x3c8, false),
            (0x3d0, false),
            (0x3c1, false),
        ] {
            let (mut model, _) = live_model();
            model.set_vp_state(VP, LOWER, reg::XPC, 0x4_0000);
            model.set_vp_state(VP, LOWER, reg::CPSR, cpsr);
            let mut frame = Frame::default();
            let mut el1 = El1Regs::default();
            let entered = enter_lower(&mut model, VP, &mut frame, &mut el1);
            assert_eq!(entered.is_ok(), ok, "CPSR {cpsr:#x}: {entered:?}");
        }
    }

    #[test]
    fn an_exception_is_taken_at_the_vector_for_where_vtl0_was() {
        for (spsr, offset) in [(0x3c5, 0x200), (0x3c4, 0x000), (0x3c0, 0x400)] {
            let mut frame = Frame {
                elr: 0x4_1230,
                spsr,
                ..Frame::default()
            };
            let mut el1 = El1Regs {
                vbar: 0x4_8000,
                ..El1Regs::default()
            };
            take_exception(&mut frame, &mut el1, 0x9600_0010, 0x4_0200_0000);
            assert_eq!((frame.elr, frame.spsr), (0x4_8000 + offset, 0x3c5));
            assert_eq!(
                (el1.esr, el1.far, el1.elr, el1.spsr),
                (0x9600_0010, 0x4_0200_0000, 0x4_1230, spsr)
            );
        }
    }

    #[test]
    fn a_fault_the_hypervisor_raises_for_vtl0_is_delivered_once() {
        let (mut model, mut mem) = live_model();
        model.set_vp_state(VP, LOWER, reg::XPC, 0x4_0000);
        model.set_vp_state(VP, LOWER, reg::VBAR_EL1, 0x4_8000);
        let mut frame = Frame::default();
        let mut el1 = El1Regs::default();
        enter_lower(&mut model, VP, &mut frame, &mut el1).unwrap();
        frame.spsr = 0x3c0;
        // From EL0 the hypercall is an undefined instruction (TLFS): taken at VBAR + 0x400.
        frame.x[0] = hvdef::aarch64::SMCCC_HV_FUNC_ID.into();
        let next = vtl0_hvc(&mut model, 0x4_0000, &mut frame, &mut el1, &mut mem);
        assert_eq!(next, LowerNext::Resume);
        assert_eq!((frame.elr, frame.spsr), (0x4_8400, 0x3c5));
        assert_eq!((el1.esr, el1.elr, el1.spsr), (1 << 25, 0x4_0000, 0x3c0));
        // Taken once: entering again delivers nothing more.
        let mut again = Frame::default();
        enter_lower(&mut model, VP, &mut again, &mut el1).unwrap();
        assert_eq!(again.elr, 0x4_0000);
    }

    #[test]
    fn an_access_the_model_allows_is_a_named_failure() {
        let (mut model, mut mem) = live_model();
        let mut frame = Frame::default();
        let mut el1 = El1Regs::default();
        let next = lower_exit(
            &mut model,
            VP,
            LowerExit::Access {
                gpa: 0x5000,
                len: 8,
                access: hvdef::HvInterceptAccessType::WRITE,
                delivering_event: false,
            },
            0x4_0000,
            &mut frame,
            &mut el1,
            &mut mem,
        );
        let LowerNext::Unsupported(why) = next else {
            panic!("{next:?}")
        };
        assert!(
            why.contains("VTL0 exit at 0x40000") && why.contains("GPA 0x5000"),
            "{why}"
        );
    }

    #[test]
    fn a_started_vp_begins_with_its_context() {
        let ctx = HvArm64InitialVpContext {
            pc: 0x4020_1000,
            sp_elh: 0x4030_0000,
            sctlr_el1: 0x30d0_1805,
            mair_el1: 0xff00,
            tcr_el1: 0x5_b519_3519,
            vbar_el1: 0x4020_2000,
            ttbr0_el1: 0x4040_0000,
            ttbr1_el1: 0x4041_0000,
            x18: 0x18,
        };
        let (frame, el1) = initial_state(&ctx);
        let mut x = [0; ARM64_GPRS];
        x[18] = 0x18;
        assert_eq!((frame.elr, frame.spsr, frame.x), (0x4020_1000, 0x3c5, x));
        assert_eq!(
            el1,
            El1Regs {
                sctlr: ctx.sctlr_el1,
                mair: ctx.mair_el1,
                tcr: ctx.tcr_el1,
                vbar: ctx.vbar_el1,
                ttbr0: ctx.ttbr0_el1,
                ttbr1: ctx.ttbr1_el1,
                sp_el1: ctx.sp_elh,
                ..El1Regs::default()
            }
        );
    }

    #[test]
    fn first_vtl_return_with_an_empty_script_finishes() {
        let mut model = model(0..0x10000, 1);
        let mut mem = TestMemory::new(0x10000);
        let mut frame = Frame::default();
        assert_eq!(
            hvc(&mut model, VP, HVC_IMM_VTL_RETURN, &mut frame, &mut mem),
            Next::Finished
        );
    }

    #[test]
    fn an_unknown_immediate_is_an_undefined_instruction_at_the_hvc() {
        let mut model = model(0..0x10000, 1);
        let mut mem = TestMemory::new(0x10000);
        let mut frame = Frame {
            elr: 0x4020_1004,
            ..Frame::default()
        };
        frame.x[0] = 0x55;
        assert_eq!(
            hvc(&mut model, VP, 0x77, &mut frame, &mut mem),
            Next::Undefined
        );
        assert_eq!(frame.elr, 0x4020_1000, "the exception is taken at the hvc");
        assert_eq!(frame.x[0], 0x55, "nothing written back");
    }
}
