//! VTL0's registers across a proxied hypercall under the mock hypervisor. The GPRs are shared
//! between the VTLs (x64 all but RSP, arm64 X0-X17), so whatever the paravisor leaves in them at
//! its VtlReturn is what VTL0 resumes with: it must hand back every one VTL0 had, the result
//! register aside (TLFS: a hypercall preserves the GPRs other than RAX / X0).

use e2e::{call, code, layout, post_message};
use hvdef::aarch64::reg as arm_reg;
use hvdef::x86_64::reg as x64_reg;
use hvdef::{HvRegisterName, HvStatus, HypercallCode, HypercallOutput};
use mockhv::model::{Scenario, Vtl0Call, Vtl0Result};
use mockhv::qemu::Arch;

/// A value no code path would produce by accident, distinct per call and register.
fn marker(call: usize, n: u32) -> u64 {
    0x5A5A_0000_0000_0000 | (call as u64) << 32 | u64::from(n) << 16 | 0xBEEF
}

/// The final attempt of each scripted call, in push order.
fn final_results(arch: Arch, script: Vec<Vtl0Call>) -> Vec<Vtl0Result> {
    let count = script.len();
    let mut report = e2e::run_vtl0(Scenario::for_arch(arch), script);
    let mut all = report.model.vtl0().results().to_vec();
    all.sort_by_key(|r| (r.index, r.attempt));
    let results: Vec<Vtl0Result> = (0..count)
        .map(|i| {
            all.iter()
                .rfind(|r| r.index == i)
                .unwrap_or_else(|| panic!("{}: call {i} never completed", arch.name()))
                .clone()
        })
        .collect();
    results
}

/// Checks one completed call: status in the result register, IP advanced, and every register
/// in `kept` as VTL0 had it.
fn check(arch: Arch, r: &Vtl0Result, status: HvStatus, kept: &[(HvRegisterName, u64)]) {
    let what = format!("{} call {}", arch.name(), r.index);
    assert!(r.advanced(), "{what}: IP advanced");
    assert_eq!(
        r.result,
        HypercallOutput::new().with_status(status).into_bits(),
        "{what}: the result register holds the status"
    );
    for &(name, value) in kept {
        assert_eq!(
            r.register(name),
            u128::from(value),
            "{what}: {name:?} is unchanged"
        );
    }
}

#[test]
fn x64_vtl0_keeps_every_gpr_but_rax() {
    let arch = Arch::X86_64;
    let l = layout(arch);
    let calls = [
        (
            call(arch, code(HypercallCode::POST_MESSAGE), l.input, 0)
                .with_memory(l.input, &post_message(1)),
            (l.input, 0),
            HvStatus::SUCCESS,
        ),
        (
            call(arch, code(HypercallCode(0x0077)), 0x77, 0x78),
            (0x77, 0x78),
            HvStatus::INVALID_HYPERCALL_CODE,
        ),
        (
            call(
                arch,
                code(HypercallCode::EXT_QUERY_CAPABILITIES),
                0,
                l.output,
            )
            .with_output(l.output, 8),
            (0, l.output),
            HvStatus::SUCCESS,
        ),
        // SignalEvent, fast: connection 1, flag 0.
        (
            call(
                arch,
                code(HypercallCode::SIGNAL_EVENT).with_fast(true),
                1,
                0,
            ),
            (1, 0),
            HvStatus::SUCCESS,
        ),
    ];
    let others = [
        x64_reg::RBX,
        x64_reg::RBP,
        x64_reg::RSI,
        x64_reg::RDI,
        x64_reg::R9,
        x64_reg::R10,
        x64_reg::R11,
        x64_reg::R12,
        x64_reg::R13,
        x64_reg::R14,
        x64_reg::R15,
    ];
    let mut script = Vec::new();
    let mut expected = Vec::new();
    for (i, (mut c, (rdx, r8), status)) in calls.into_iter().enumerate() {
        let mut kept = vec![(x64_reg::RDX, rdx), (x64_reg::R8, r8)];
        for name in others {
            let value = marker(i, name.0);
            c = c.with_register(name, value.into());
            kept.push((name, value));
        }
        script.push(c);
        expected.push((status, kept));
    }
    let results = final_results(arch, script);
    for (r, (status, kept)) in results.iter().zip(&expected) {
        check(arch, r, *status, kept);
    }
}

#[test]
fn arm64_vtl0_keeps_x1_to_x17() {
    let arch = Arch::Aarch64;
    let l = layout(arch);
    let calls = [
        (
            code(HypercallCode::POST_MESSAGE),
            (l.input, 0),
            HvStatus::SUCCESS,
        ),
        (
            code(HypercallCode(0x0077)),
            (0x77, 0x78),
            HvStatus::INVALID_HYPERCALL_CODE,
        ),
    ];
    let mut script = Vec::new();
    let mut expected = Vec::new();
    for (i, (control, (x2, x3), status)) in calls.into_iter().enumerate() {
        let mut c = call(arch, control, x2, x3).with_memory(l.input, &post_message(1));
        let mut kept = vec![
            (arm_reg::X1, control.into_bits()),
            (arm_reg::X2, x2),
            (arm_reg::X3, x3),
        ];
        for n in 4..=17 {
            let name = HvRegisterName(arm_reg::X0.0 + n);
            let value = marker(i, n);
            c = c.with_register(name, value.into());
            kept.push((name, value));
        }
        script.push(c);
        expected.push((status, kept));
    }
    let results = final_results(arch, script);
    for (r, (status, kept)) in results.iter().zip(&expected) {
        check(arch, r, *status, kept);
    }
}
