//! The x64 VTL register page (NON-TLFS; the model's fact sheet is `crate::regpage`): VTL2 maps it
//! with SetVpRegisters of `HvX64RegisterName::RegisterPage`; an intercept fills it with VTL0's
//! registers (`is_valid` 1, `vtl` 0); what VTL2 marks dirty the VtlReturn loads into VTL0.
//!
//! The oracles are raw offsets of OpenVMM's `HvX64RegisterPage` (vm/hv1/hvdef), written out here
//! rather than taken from the model's own structure.

use hvdef::{
    HvError, HvInputVtl, HvRegisterName, HvRegisterVsmPartitionConfig, HvStatus, HypercallCode,
    HypercallOutput,
};

use super::*;
use crate::{Event, Vtl0Call};

const REGPAGE: u64 = 0x3_2000;
const REGISTER_PAGE: HvRegisterName = HvRegisterName(0x0009_001C);
const VTL0_RIP: u64 = 0x40_1000;
const VTL0_RSP: u64 = 0x7f00;

// Offsets in the page (OpenVMM `HvX64RegisterPage`).
const IS_VALID: u64 = 2;
const DIRTY: u64 = 4;
const GP: u64 = 8;
const RIP_AT: u64 = 136;
const RFLAGS_AT: u64 = 144;
const SEGMENTS: u64 = 256;
const CR0_AT: u64 = 352;
const EFER_AT: u64 = 384;
// Dirty bits.
const DIRTY_GP: u32 = 1 << 0;
const DIRTY_IP: u32 = 1 << 1;
const DIRTY_FLAGS: u32 = 1 << 4;

fn u64_at(hv: &Hv, gpa: u64) -> u64 {
    u64::from_le_bytes(hv.mem.slice(gpa, 8).try_into().unwrap())
}

fn put_u64(hv: &mut Hv, gpa: u64, value: u64) {
    hv.mem.write(gpa, &value.to_le_bytes()).unwrap();
}

fn set_dirty(hv: &mut Hv, bits: u32) {
    hv.mem.write(REGPAGE + DIRTY, &bits.to_le_bytes()).unwrap();
}

fn vtl_return(hv: &mut Hv) -> Effects {
    hv.vmcall(X64HypercallRegs {
        rcx: HypercallCode::VTL_RETURN.0.into(),
        ..Default::default()
    })
    .1
}

/// A booted paravisor with the intercept page on and, if `map`, its register page mapped.
fn booted(register_page: bool, map: bool) -> (Hv, HvStatus) {
    let mut hv = Hv::new(Scenario {
        register_page,
        ..Scenario::default()
    });
    hv.boot_x64();
    let config = HvRegisterVsmPartitionConfig::new().with_intercept_page(true);
    let out = hv.set_regs(
        HvInputVtl::CURRENT,
        &[(
            HvRegisterName::VSM_PARTITION_CONFIG,
            config.into_bits().into(),
        )],
    );
    assert_eq!(out.status(), HvStatus::SUCCESS);
    hv.mem.write(REGPAGE, &[0xAA; 0x1000]).unwrap();
    let status = if map {
        hv.set_regs(
            HvInputVtl::CURRENT,
            &[(REGISTER_PAGE, u128::from(REGPAGE | 1))],
        )
        .status()
    } else {
        HvStatus::SUCCESS
    };
    (hv, status)
}

fn call() -> Vtl0Call {
    Vtl0Call::x64(VTL0_RIP, simple(HypercallCode::POST_MESSAGE), 0x5000, 0)
        .with_register(x64_reg::RAX, 0xDEAD)
        .with_register(x64_reg::RSP, VTL0_RSP.into())
        .with_memory(
            0x5000,
            &super::hypercalls::post_message_input(UNKNOWN_CONNECTION),
        )
}

/// VTL2's SetVpRegisters calls after VTL0 first ran (its own setup aside).
fn vtl0_register_sets(hv: &Hv) -> usize {
    hv.model
        .trace()
        .events()
        .iter()
        .filter(|e| {
            matches!(e, Event::Hypercall(h) if h.code == HypercallCode::SET_VP_REGISTERS
                && h.input.get(12) == Some(&vtl0().into_bits()))
        })
        .count()
}

#[test]
fn an_intercept_fills_the_page_with_vtl0s_registers() {
    let (mut hv, status) = booted(true, true);
    assert_eq!(status, HvStatus::SUCCESS);
    assert_eq!(
        hv.mem.slice(REGPAGE, 0x1000),
        [0; 0x1000],
        "an overlay starts out zeroed"
    );
    assert_eq!(hv.get_reg(REGISTER_PAGE), u128::from(REGPAGE | 1));
    hv.model.vtl0().push(call());
    vtl_return(&mut hv);
    assert_eq!(
        hv.mem.slice(REGPAGE, 4),
        [1, 0, 1, 0],
        "version 1, valid, VTL0"
    );
    assert_eq!(hv.mem.slice(REGPAGE + DIRTY, 4), [0; 4], "nothing dirty");
    assert_eq!(u64_at(&hv, REGPAGE + GP), 0xDEAD, "RAX");
    assert_eq!(
        u64_at(&hv, REGPAGE + GP + 8),
        simple(HypercallCode::POST_MESSAGE).into_bits(),
        "RCX"
    );
    assert_eq!(u64_at(&hv, REGPAGE + GP + 2 * 8), 0x5000, "RDX");
    assert_eq!(u64_at(&hv, REGPAGE + GP + 4 * 8), VTL0_RSP, "RSP");
    assert_eq!(u64_at(&hv, REGPAGE + RIP_AT), VTL0_RIP);
    assert_eq!(u64_at(&hv, REGPAGE + RFLAGS_AT), 0x2);
    assert_eq!(u64_at(&hv, REGPAGE + CR0_AT), 0x8000_0031);
    assert_eq!(u64_at(&hv, REGPAGE + EFER_AT) & (1 << 10), 1 << 10, "LMA");
    // CS (the second segment) at +16: selector at +12 of it.
    assert_eq!(hv.mem.slice(REGPAGE + SEGMENTS + 16 + 12, 2), [0x8, 0]);
}

#[test]
fn a_dirty_rip_moves_vtl0_without_a_hypercall() {
    let (mut hv, _) = booted(true, true);
    hv.model.vtl0().push(call());
    vtl_return(&mut hv);
    put_u64(&mut hv, REGPAGE + RIP_AT, VTL0_RIP + 3);
    set_dirty(&mut hv, DIRTY_IP);
    let result = HypercallOutput::new().with_status(HvError::INVALID_CONNECTION_ID.status());
    hv.mem
        .write(ASSIST + 0x10, &result.into_bits().to_le_bytes())
        .unwrap();
    let effects = vtl_return(&mut hv);
    assert!(effects.finished, "the one call completed");
    let r = &hv.model.vtl0().results()[0];
    assert_eq!((r.ip_before, r.ip_after), (VTL0_RIP, VTL0_RIP + 3));
    assert_eq!(r.status(), HvStatus::INVALID_CONNECTION_ID);
    assert_eq!(vtl0_register_sets(&hv), 0);
    assert_eq!(
        hv.mem.slice(REGPAGE + IS_VALID, 1),
        [0],
        "no longer valid once VTL0 runs"
    );
    assert_eq!(hv.mem.slice(REGPAGE + DIRTY, 4), [0; 4], "dirty bits taken");
}

#[test]
fn what_is_not_dirty_is_not_loaded() {
    let (mut hv, _) = booted(true, true);
    hv.model.vtl0().push(call());
    vtl_return(&mut hv);
    put_u64(&mut hv, REGPAGE + RIP_AT, VTL0_RIP + 3);
    put_u64(&mut hv, REGPAGE + RFLAGS_AT, 0x202);
    set_dirty(&mut hv, DIRTY_FLAGS);
    vtl_return(&mut hv);
    // The IP stayed on the call (VTL0 re-executes it); the flags were dirty and taken.
    let first = &hv.model.vtl0().results()[0];
    assert_eq!((first.ip_before, first.ip_after), (VTL0_RIP, VTL0_RIP));
    assert!(first.reached_vtl2);
    assert_eq!(first.register(x64_reg::RFLAGS), 0x202);
}

/// General purpose: of the sixteen only RSP is VTL0's own; the others are shared and travel
/// with the VTL switch (RAX/RCX through the assist page), so the page's copies of them are not
/// loaded.
#[test]
fn dirty_general_purpose_registers_load_rsp_only() {
    let (mut hv, _) = booted(true, true);
    hv.model.vtl0().push(call());
    vtl_return(&mut hv);
    put_u64(&mut hv, REGPAGE + RIP_AT, VTL0_RIP + 3);
    put_u64(&mut hv, REGPAGE + GP, 0x1111);
    put_u64(&mut hv, REGPAGE + GP + 4 * 8, 0x6000);
    set_dirty(&mut hv, DIRTY_GP | DIRTY_IP);
    hv.mem.write(ASSIST + 0x10, &7u64.to_le_bytes()).unwrap();
    vtl_return(&mut hv);
    let r = &hv.model.vtl0().results()[0];
    assert_eq!(r.register(x64_reg::RSP), 0x6000);
    assert_eq!(r.register(x64_reg::RAX), 7, "RAX from the assist page");
}

#[test]
fn a_host_without_the_page_refuses_it_and_vtl0_gets_none() {
    let (mut hv, status) = booted(false, true);
    assert_eq!(status, HvStatus::INVALID_PARAMETER, "Linux mshv_vtl");
    hv.model.vtl0().push(call());
    vtl_return(&mut hv);
    assert_eq!(hv.mem.slice(REGPAGE, 8), [0xAA; 8], "nothing written");

    let (mut hv, _) = booted(true, false);
    let out = hv.set_regs(vtl0(), &[(REGISTER_PAGE, u128::from(REGPAGE | 1))]);
    assert_eq!(
        out.status(),
        HvStatus::INVALID_PARAMETER,
        "VTL2's own page only"
    );
}
