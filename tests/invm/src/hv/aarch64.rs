//! The arm64 exit: an `hvc #imm` trapped to EL2, on the registers the EL2 vector saved.

use super::{partition, Next, VP};
use hvdef::aarch64::HVC_IMM_VTL_RETURN;
use hvmodel::{Arch, Effects, Fault, GuestMemory, Model, ARM64_GPRS};

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

/// The arm64 partition (see [`partition`]).
pub fn model(ram: core::ops::Range<u64>) -> Model {
    partition(Arch::Aarch64, ram)
}

/// An `hvc #imm` exit of VP 0: the model answers, its results go into `frame`. An ordinary
/// call moves X0..X17, a VTL return X0..X30 (the model keeps the private ones per VTL). A call
/// the model leaves on its instruction (TIMEOUT) gets ELR moved back onto the `hvc`.
pub fn hvc(model: &mut Model, imm: u16, frame: &mut Frame, mem: &mut dyn GuestMemory) -> Next {
    let mut regs = frame.x;
    let effects: Effects = model.hvc(VP, imm, &mut regs, mem);
    if let Some(fault) = effects.fault {
        return Next::Unsupported(match fault {
            Fault::Ud => "the model raised an undefined-instruction fault (not injected yet)",
            Fault::Gp => "the model raised #GP on arm64",
        });
    }
    if effects.start_vp.is_some() {
        return Next::Unsupported("HvCallStartVirtualProcessor: this host runs one VP");
    }
    if effects.finished {
        return Next::Finished;
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
    Next::Resume
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hv::TraceLine;
    use hvdef::aarch64::{HV_VENDOR_HYP_UID, SMCCC_VENDOR_HYP_UID};
    use hvmodel::TestMemory;

    #[test]
    fn vendor_uid_is_answered_in_x0_to_x3_and_nothing_else_moves() {
        let mut model = model(0..0x10000);
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
        assert_eq!(hvc(&mut model, 0, &mut frame, &mut mem), Next::Resume);
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
        let mut model = model(0..0x10000);
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
        assert_eq!(hvc(&mut model, 0, &mut frame, &mut mem), Next::Resume);
        let want = model.register(VP, Vtl::VTL2, name).expect("readable");
        assert_ne!(want, 0, "a register that has a value");
        assert_eq!(frame.x[0] & 0xffff, 0, "HV_STATUS_SUCCESS");
        assert_eq!(frame.x[6], want as u64);
        assert_eq!(frame.x[7], (want >> 64) as u64);
    }

    #[test]
    fn trace_line_names_each_event() {
        let mut model = model(0..0x10000);
        let mut mem = TestMemory::new(0x10000);
        let mut frame = Frame::default();
        frame.x[0] = SMCCC_VENDOR_HYP_UID.into();
        hvc(&mut model, 0, &mut frame, &mut mem);
        hvc(
            &mut model,
            HVC_IMM_VTL_RETURN,
            &mut Frame::default(),
            &mut mem,
        );
        // 0x12: HvCallVtlReturn, as the model records it.
        let line = alloc::format!("{}", TraceLine(model.trace().events()));
        assert_eq!(
            line,
            "smccc/8600ff01/4d32ba58 12/0/0/0/cbf29ce484222325/cbf29ce484222325/vtl"
        );
    }

    #[test]
    fn first_vtl_return_with_an_empty_script_finishes() {
        let mut model = model(0..0x10000);
        let mut mem = TestMemory::new(0x10000);
        let mut frame = Frame::default();
        assert_eq!(
            hvc(&mut model, HVC_IMM_VTL_RETURN, &mut frame, &mut mem),
            Next::Finished
        );
    }

    #[test]
    fn unknown_immediate_is_unsupported_not_ignored() {
        let mut model = model(0..0x10000);
        let mut mem = TestMemory::new(0x10000);
        let mut frame = Frame::default();
        assert!(matches!(
            hvc(&mut model, 0x77, &mut frame, &mut mem),
            Next::Unsupported(_)
        ));
    }
}
