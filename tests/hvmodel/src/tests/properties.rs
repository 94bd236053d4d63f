//! Property tests: arbitrary control words, GPAs, register blocks, register names and values
//! never panic the model, and every answer is a status from the TLFS set (or #UD / #GP).

use hvdef::aarch64::{HVC_IMM_SMCCC, SMCCC_HV_FUNC_ID};
use hvdef::x86_64::HvX64Msr;
use hvdef::{
    HvInputVtl, HvRegisterName, HvStatus, HypercallCode, HypercallOutput, HV_VP_INDEX_SELF,
};
use proptest::prelude::*;

use super::*;
use crate::{Arch, Outcome};

/// Every status the model may return.
const TLFS_STATUSES: [HvStatus; 14] = [
    HvStatus::SUCCESS,
    HvStatus::INVALID_HYPERCALL_CODE,
    HvStatus::INVALID_HYPERCALL_INPUT,
    HvStatus::INVALID_ALIGNMENT,
    HvStatus::INVALID_PARAMETER,
    HvStatus::ACCESS_DENIED,
    HvStatus::INVALID_PARTITION_ID,
    HvStatus::INVALID_VP_INDEX,
    HvStatus::INVALID_VP_STATE,
    HvStatus::INVALID_VTL_STATE,
    HvStatus::INVALID_CONNECTION_ID,
    HvStatus::VTL_ALREADY_ENABLED,
    HvStatus::TIMEOUT,
    // A 64-bit register set with a high quadword (TLFS status 0x0050; OpenHCL's answer).
    HvStatus::INVALID_REGISTER_VALUE,
];

/// Codes worth hitting often: the implemented ones, VTL switches, extended and unknown.
fn code() -> impl Strategy<Value = u16> {
    prop_oneof![
        prop::sample::select(vec![
            0x0050u16, 0x0051, 0x000F, 0x0099, 0x004D, 0x005C, 0x005D, 0x0011, 0x0012, 0x8001,
            0x8002, 0x8003
        ]),
        any::<u16>(),
    ]
}

/// Control words built from a likely code plus arbitrary other fields, or fully arbitrary.
fn control() -> impl Strategy<Value = u64> {
    prop_oneof![
        (code(), any::<bool>(), 0u64..4, 0u64..8, 0u64..8).prop_map(
            |(code, fast, var, count, start)| {
                u64::from(code) | u64::from(fast) << 16 | var << 17 | count << 32 | start << 48
            }
        ),
        any::<u64>(),
    ]
}

/// GPAs inside the test memory (aligned or not) or anywhere.
fn gpa() -> impl Strategy<Value = u64> {
    prop_oneof![(0u64..MEM_SIZE as u64), Just(IN), Just(OUT), any::<u64>()]
}

fn scenario(arch: Arch) -> impl Strategy<Value = Scenario> {
    (any::<bool>(), any::<bool>(), any::<u64>(), 1u32..5).prop_map(
        move |(vsm, nested, privileges, vps)| {
            let mut s = Scenario {
                vsm,
                nested,
                vp_count: vps,
                ..Scenario::for_arch(arch)
            };
            // Half the time full privileges, half the time arbitrary ones.
            if privileges & 1 == 0 {
                s.privileges = hvdef::HvPartitionPrivilegeMask::from_bits(privileges);
            }
            s
        },
    )
}

fn check_status(rax: u64) -> Result<(), TestCaseError> {
    let status = HypercallOutput::from_bits(rax).status();
    prop_assert!(
        TLFS_STATUSES.contains(&status),
        "unexpected status {status:?}"
    );
    Ok(())
}

/// Checks the trace record of the call just made, if it made one (SMCCC UID calls and unknown
/// `hvc` immediates do not).
fn check_last(hv: &Hv, before: usize, effects: &Effects) -> Result<(), TestCaseError> {
    if hv.model.trace().hypercalls().count() > before {
        let last = hv.model.trace().last_hypercall().unwrap();
        if let Outcome::Status(out) = last.outcome {
            prop_assert!(TLFS_STATUSES.contains(&out.status()));
            prop_assert_eq!(effects.advance_ip, out.status() != HvStatus::TIMEOUT);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn x64_vmcall_never_panics(
        scenario in scenario(Arch::X86_64),
        rcx in control(),
        rax in any::<u64>(),
        rdx in gpa(),
        r8 in gpa(),
        xmm in any::<[u128; 6]>(),
        input in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut hv = Hv::new(scenario);
        hv.mem.write(IN, &input).unwrap();
        // Boot as far as the scenario's privileges allow.
        for (msr, value) in [
            (HvX64Msr::HV_X64_MSR_GUEST_OS_ID, GUEST_OS_ID),
            (HvX64Msr::HV_X64_MSR_VP_ASSIST_PAGE, ASSIST | 1),
            (HvX64Msr::HV_X64_MSR_SCONTROL, 1),
            (HvX64Msr::HV_X64_MSR_SIMP, SIMP | 1),
        ] {
            let _ = hv.model.wrmsr(0, msr.0, value, &mut hv.mem);
        }
        hv.model.vtl0().push(crate::Vtl0Call::x64(0x1000, hvdef::Control::from_bits(rcx), rdx, r8));
        let before = hv.model.trace().hypercalls().count();
        let (regs, effects) = hv.vmcall(X64HypercallRegs {
            rax,
            rcx,
            rdx,
            r8,
            xmm,
            ..Default::default()
        });
        let code = HypercallCode(rcx as u16);
        let vtl_switch = matches!(code, HypercallCode::VTL_CALL | HypercallCode::VTL_RETURN);
        if effects.fault.is_none() && !vtl_switch {
            check_status(regs.rax)?;
        }
        check_last(&hv, before, &effects)?;
    }

    #[test]
    fn arm64_hvc_never_panics(
        scenario in scenario(Arch::Aarch64),
        imm in 0u16..6,
        smccc in any::<bool>(),
        x in any::<[u64; 31]>(),
        control in control(),
        gpas in (gpa(), gpa(), gpa()),
        set_guest_os_id in any::<bool>(),
    ) {
        let mut hv = Hv::new(scenario);
        let mut x = x;
        if set_guest_os_id {
            hv.model.hvc(0, 0, &mut guest_os_id_call(), &mut hv.mem);
        }
        if smccc {
            x[0] = SMCCC_HV_FUNC_ID.into();
            (x[1], x[2], x[3]) = (control, gpas.0, gpas.1);
        } else {
            (x[0], x[1], x[2]) = (control, gpas.1, gpas.2);
        }
        hv.model.vtl0().push(crate::Vtl0Call::arm64(0x1000, hvdef::Control::from_bits(control), gpas.0, gpas.1));
        let before = hv.model.trace().hypercalls().count();
        let effects = hv.model.hvc(0, imm, &mut x, &mut hv.mem);
        let hypercall = (imm == HVC_IMM_SMCCC && smccc) || imm == 1;
        if effects.fault.is_none() && hypercall && effects.advance_ip {
            check_status(x[0])?;
        }
        check_last(&hv, before, &effects)?;
    }

    #[test]
    fn register_writes_never_panic(
        arch in prop::sample::select(vec![Arch::X86_64, Arch::Aarch64]),
        names in prop::collection::vec(prop_oneof![0x0000_0000u32..0x0000_0300, 0x0002_0000u32..0x0002_0030, 0x0009_0000u32..0x0009_0020, 0x000A_0000u32..0x000A_0020, 0x000D_0000u32..0x000D_0030, any::<u32>()], 1..6),
        values in prop::collection::vec(any::<u128>(), 6),
        vtl in any::<u8>(),
    ) {
        let mut hv = Hv::new(Scenario::for_arch(arch));
        let regs: Vec<_> = names.iter().zip(&values).map(|(&n, &v)| (HvRegisterName(n), v)).collect();
        let input = set_input(HV_VP_INDEX_SELF, HvInputVtl::from_bits(vtl), &regs);
        hv.mem.write(IN, &input).unwrap();
        let control = rep(HypercallCode::SET_VP_REGISTERS, regs.len());
        let status = match arch {
            Arch::X86_64 => hv.call(control, &input),
            Arch::Aarch64 => {
                hv.model.hvc(0, 0, &mut guest_os_id_call(), &mut hv.mem);
                let mut x = [0; 31];
                (x[0], x[1], x[2], x[3]) = (SMCCC_HV_FUNC_ID.into(), control.into_bits(), IN, OUT);
                hv.model.hvc(0, 0, &mut x, &mut hv.mem);
                HypercallOutput::from_bits(x[0])
            }
        };
        check_status(status.into_bits())?;
        prop_assert!(usize::from(status.reps_completed()) <= regs.len());
        // Reading them all back is just as safe.
        let names: Vec<_> = regs.iter().map(|r| r.0).collect();
        if arch == Arch::X86_64 {
            let (out, _) = hv.get_regs(HvInputVtl::from_bits(vtl), &names);
            check_status(out.into_bits())?;
        }
    }

    #[test]
    fn synthetic_msrs_never_panic(msr in HvX64Msr::FIRST_SYNTHETIC..0x4000_1100u32, value in any::<u64>(), nested in any::<bool>()) {
        let mut hv = Hv::new(Scenario { nested, ..Scenario::default() });
        hv.wrmsr(HvX64Msr::HV_X64_MSR_GUEST_OS_ID, GUEST_OS_ID).unwrap();
        let written = hv.model.wrmsr(0, msr, value, &mut hv.mem);
        prop_assert!(written.is_some());
        prop_assert!(hv.model.rdmsr(0, msr).is_some());
    }
}

/// The arm64 boot's fast SetVpRegisters of the guest OS id.
fn guest_os_id_call() -> [u64; 31] {
    let mut x = [0; 31];
    x[0] = SMCCC_HV_FUNC_ID.into();
    x[1] = rep(HypercallCode::SET_VP_REGISTERS, 1)
        .with_fast(true)
        .into_bits();
    x[2] = hvdef::HV_PARTITION_ID_SELF;
    x[3] = HV_VP_INDEX_SELF.into();
    x[4] = HvRegisterName::GUEST_OS_ID.0.into();
    x[6] = GUEST_OS_ID;
    x
}
