//! VTL protection (protection.rs): HvCallModifyVtlProtectionMask's rules, and what a lower VTL's
//! access to a protected page becomes: not carried out, a GPA intercept for VTL2.

use hvdef::x86_64::HvX64MemoryInterceptMessage;
use hvdef::{
    HvInputModifyVtlProtectionMask, HvInputVtl, HvInterceptAccessType, HvMapGpaFlags, HvMessage,
    HvMessageType, HvRegisterName, HvRegisterVsmPartitionConfig, HvStatus, HvVpAssistPage,
    HvVtlEntryReason, HypercallCode, Vtl, HV_PARTITION_ID_SELF,
};
use zerocopy::{FromBytes, IntoBytes};

use super::*;
use crate::{Event, Outcome, Vtl0Access, Vtl0Call};

const VTL0_RIP: u64 = 0x40_1000;
/// A page VTL2 keeps for itself in these tests.
const SECRET: u64 = 0x8_0000;
/// VTL0's own page.
const OPEN: u64 = 0x9_0000;

fn protect_input(flags: HvMapGpaFlags, target: HvInputVtl, pages: &[u64]) -> Vec<u8> {
    let mut input = HvInputModifyVtlProtectionMask {
        partition_id: HV_PARTITION_ID_SELF,
        map_flags: flags,
        target_vtl: target,
        reserved: [0; 3],
    }
    .as_bytes()
    .to_vec();
    for page in pages {
        input.extend_from_slice(&page.to_le_bytes());
    }
    input
}

fn protect(hv: &mut Hv, flags: HvMapGpaFlags, pages: &[u64]) -> HypercallOutput {
    hv.call(
        rep(HypercallCode::MODIFY_VTL_PROTECTION_MASK, pages.len()),
        &protect_input(flags, HvInputVtl::CURRENT, pages),
    )
}

fn set_config(hv: &mut Hv, config: HvRegisterVsmPartitionConfig) {
    let name = HvRegisterName::VSM_PARTITION_CONFIG;
    let out = hv.set_regs(HvInputVtl::CURRENT, &[(name, config.into_bits().into())]);
    assert_eq!(out.status(), HvStatus::SUCCESS);
}

/// Booted, intercept page on, protection enabled, `SECRET` protected (no access).
fn protected() -> Hv {
    let mut hv = Hv::x64();
    hv.boot_x64();
    set_config(
        &mut hv,
        HvRegisterVsmPartitionConfig::new()
            .with_enable_vtl_protection(true)
            .with_default_vtl_protection_mask(0xF)
            .with_intercept_page(true),
    );
    let out = protect(&mut hv, HvMapGpaFlags::NO_ACCESS, &[SECRET >> 12]);
    assert_eq!((out.status(), out.reps_completed()), (HvStatus::SUCCESS, 1));
    hv
}

fn vtl_return(hv: &mut Hv) -> Effects {
    hv.vmcall(X64HypercallRegs {
        rcx: HypercallCode::VTL_RETURN.0.into(),
        ..Default::default()
    })
    .1
}

fn intercept(hv: &Hv) -> HvMessage {
    HvVpAssistPage::read_from_prefix(hv.mem.slice(ASSIST, 0x1000))
        .unwrap()
        .0
        .intercept_message
}

fn memory_intercept(message: &HvMessage) -> HvX64MemoryInterceptMessage {
    assert_eq!(message.header.message_type, HvMessageType::GPA_INTERCEPT);
    assert_eq!(message.header.payload_size, 0x50);
    HvX64MemoryInterceptMessage::read_from_prefix(message.payload_bytes())
        .unwrap()
        .0
}

#[test]
fn protection_needs_vtl2_with_enable_vtl_protection() {
    let mut hv = Hv::x64();
    hv.boot_x64();
    // OpenVMM virt_whp: enable_vtl_protection clear → ACCESS_DENIED.
    let out = protect(&mut hv, HvMapGpaFlags::NO_ACCESS, &[SECRET >> 12]);
    assert_eq!(
        (out.status(), out.reps_completed()),
        (HvStatus::ACCESS_DENIED, 0)
    );
    set_config(
        &mut hv,
        HvRegisterVsmPartitionConfig::new().with_enable_vtl_protection(true),
    );
    let mut other = protect_input(HvMapGpaFlags::NO_ACCESS, HvInputVtl::CURRENT, &[8]);
    other[0] = 1; // another partition
    let out = hv.call(rep(HypercallCode::MODIFY_VTL_PROTECTION_MASK, 1), &other);
    assert_eq!(out.status(), HvStatus::ACCESS_DENIED);
    for (flags, target) in [
        (HvMapGpaFlags::NO_ACCESS, HvInputVtl::target(Vtl::VTL0)),
        (HvMapGpaFlags::NO_ACCESS, HvInputVtl::target(Vtl::VTL1)),
        (HvMapGpaFlags::from_bits(0x10), HvInputVtl::CURRENT),
    ] {
        let out = hv.call(
            rep(HypercallCode::MODIFY_VTL_PROTECTION_MASK, 1),
            &protect_input(flags, target, &[SECRET >> 12]),
        );
        assert_eq!(
            out.status(),
            HvStatus::INVALID_PARAMETER,
            "{flags:?} {target:?}"
        );
    }
    assert_eq!(hv.model.lower_vtl_access(SECRET), HvMapGpaFlags::ALL_ACCESS);
    // Explicit target VTL2 is "the calling VTL's protections" too.
    let out = hv.call(
        rep(HypercallCode::MODIFY_VTL_PROTECTION_MASK, 1),
        &protect_input(
            HvMapGpaFlags::new().with_readable(true),
            HvInputVtl::target(Vtl::VTL2),
            &[SECRET >> 12],
        ),
    );
    assert_eq!(out.status(), HvStatus::SUCCESS);
    assert_eq!(
        hv.model.lower_vtl_access(SECRET + 0xFFF),
        HvMapGpaFlags::new().with_readable(true)
    );
}

/// TLFS: protecting non-RAM fails with INVALID_PARAMETER; the pages before it are done.
#[test]
fn a_page_without_ram_stops_the_list() {
    let mut hv = protected();
    let beyond = (MEM_SIZE as u64) >> 12;
    let out = protect(&mut hv, HvMapGpaFlags::NO_ACCESS, &[OPEN >> 12, beyond, 3]);
    assert_eq!(
        (out.status(), out.reps_completed()),
        (HvStatus::INVALID_PARAMETER, 1)
    );
    assert_eq!(hv.model.lower_vtl_access(OPEN), HvMapGpaFlags::NO_ACCESS);
    assert_eq!(hv.model.lower_vtl_access(0x3000), HvMapGpaFlags::ALL_ACCESS);
    // ALL_ACCESS gives the page back.
    let out = protect(&mut hv, HvMapGpaFlags::ALL_ACCESS, &[OPEN >> 12]);
    assert_eq!(out.status(), HvStatus::SUCCESS);
    assert_eq!(hv.model.lower_vtl_access(OPEN), HvMapGpaFlags::ALL_ACCESS);
}

/// VTL0's load from VTL2's page is not carried out: VTL2 gets a GPA intercept (assist page,
/// entry reason INTERCEPT) naming VP, GPA, access and VTL0's RIP; VTL0 gets no byte. With the
/// paravisor's exception pending VTL0 takes it and moves on; a load from its own page works.
#[test]
fn a_protected_load_becomes_a_gpa_intercept() {
    let mut hv = protected();
    hv.mem.write(SECRET + 0x10, b"vtl2 secret").unwrap();
    hv.mem.write(OPEN, b"vtl0 data").unwrap();
    let read =
        |gpa, len| Vtl0Call::access(crate::Arch::X86_64, VTL0_RIP, Vtl0Access::Read { gpa, len });
    hv.model.vtl0().push(read(SECRET + 0x10, 11));
    hv.model.vtl0().push(read(OPEN, 9));
    let effects = vtl_return(&mut hv);
    assert!(effects.advance_ip && !effects.finished);
    let entry = HvVpAssistPage::read_from_prefix(hv.mem.slice(ASSIST, 0x1000))
        .unwrap()
        .0
        .vtl_control
        .entry_reason;
    assert_eq!(entry, HvVtlEntryReason::INTERCEPT);
    let m = memory_intercept(&intercept(&hv));
    assert_eq!(m.guest_physical_address, SECRET + 0x10);
    assert_eq!(m.header.intercept_access_type, HvInterceptAccessType::READ);
    assert_eq!((m.header.vp_index, m.header.rip), (0, VTL0_RIP));
    assert_eq!(m.header.execution_state.vtl(), 0);
    assert!(hv.model.trace().events().contains(&Event::Vtl0Access {
        vp: 0,
        gpa: SECRET + 0x10,
        access: HvInterceptAccessType::READ,
        allowed: false,
    }));

    // The paravisor injects #GP(0) and returns.
    let gp: u128 = 0x0000_0000_000D_0101;
    hv.set_regs(vtl0(), &[(HvRegisterName::PENDING_EVENT0, gp)])
        .result()
        .unwrap();
    let effects = vtl_return(&mut hv);
    assert!(effects.finished, "the load from VTL0's page needs no VTL2");
    let results = hv.model.vtl0().results();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].pending_event(), Some(gp));
    assert!(results[0].output.is_empty(), "no VTL2 byte reached VTL0");
    assert_eq!(results[0].ip_after, VTL0_RIP);
    assert_eq!(results[1].output, b"vtl0 data");
    assert!(results[1].advanced());
}

/// A store to VTL2's page changes nothing; an instruction fetch from it is an EXECUTE intercept.
#[test]
fn protected_stores_and_fetches_are_stopped() {
    let mut hv = protected();
    hv.mem.write(SECRET, &[0x90; 16]).unwrap();
    let arch = crate::Arch::X86_64;
    hv.model.vtl0().push(Vtl0Call::access(
        arch,
        VTL0_RIP,
        Vtl0Access::Write {
            gpa: SECRET + 8,
            bytes: vec![0xCC; 8],
        },
    ));
    vtl_return(&mut hv);
    let m = memory_intercept(&intercept(&hv));
    assert_eq!(m.guest_physical_address, SECRET + 8);
    assert_eq!(m.header.intercept_access_type, HvInterceptAccessType::WRITE);
    assert_eq!(hv.mem.slice(SECRET, 16), &[0x90; 16]);

    hv.model.vtl0().push(Vtl0Call::access(
        arch,
        0,
        Vtl0Access::Execute { gpa: SECRET + 4 },
    ));
    hv.set_regs(vtl0(), &[(HvRegisterName::PENDING_EVENT0, 0x000D_0101)])
        .result()
        .unwrap();
    vtl_return(&mut hv);
    let m = memory_intercept(&intercept(&hv));
    assert_eq!(m.guest_physical_address, SECRET + 4);
    assert_eq!(m.header.rip, SECRET + 4);
    assert_eq!(
        m.header.intercept_access_type,
        HvInterceptAccessType::EXECUTE
    );
}

/// A VTL0 hypercall the hypervisor serves itself, with its input list on VTL2's page: the
/// hypervisor does not read it; VTL2 gets a READ intercept, not a hypercall intercept, and
/// nothing is written back to VTL0. Output lists are WRITE intercepts.
#[test]
fn a_hypercall_naming_a_protected_page_is_intercepted() {
    let mut hv = protected();
    hv.mem
        .write(
            SECRET,
            &super::hypercalls::post_message_input(UNKNOWN_CONNECTION),
        )
        .unwrap();
    let post = Vtl0Call::x64(VTL0_RIP, simple(HypercallCode::POST_MESSAGE), SECRET, 0)
        .with_register(x64_reg::RAX, 0x1234);
    hv.model.vtl0().push(post);
    vtl_return(&mut hv);
    let m = memory_intercept(&intercept(&hv));
    assert_eq!(m.guest_physical_address, SECRET);
    assert_eq!(m.header.intercept_access_type, HvInterceptAccessType::READ);
    let record = hv
        .model
        .trace()
        .hypercalls_with_code(HypercallCode::POST_MESSAGE)
        .last()
        .copied()
        .unwrap()
        .clone();
    assert_eq!(record.vtl, Vtl::VTL0);
    assert_eq!(record.outcome, Outcome::MemoryIntercept { gpa: SECRET });
    assert!(record.input.is_empty(), "the hypervisor read nothing");
    assert_eq!(
        hv.model.register(0, Vtl::VTL0, x64_reg::RAX),
        Ok(0x1234),
        "no result written"
    );

    hv.set_regs(vtl0(), &[(HvRegisterName::PENDING_EVENT0, 0x000D_0101)])
        .result()
        .unwrap();
    hv.model.vtl0().push(Vtl0Call::x64(
        VTL0_RIP,
        simple(HypercallCode::EXT_QUERY_CAPABILITIES),
        0,
        SECRET + 0x800,
    ));
    vtl_return(&mut hv);
    let m = memory_intercept(&intercept(&hv));
    assert_eq!(m.guest_physical_address, SECRET + 0x800);
    assert_eq!(m.header.intercept_access_type, HvInterceptAccessType::WRITE);
}

/// Protections bind the lower VTLs only: VTL2's own calls use its pages as before.
#[test]
fn vtl2_is_not_bound_by_its_own_protections() {
    let mut hv = protected();
    let names = [HvRegisterName::VSM_PARTITION_CONFIG];
    let out = hv.call_at(
        rep(HypercallCode::GET_VP_REGISTERS, 1),
        SECRET,
        SECRET + 0x800,
        &get_input(HV_VP_INDEX_SELF, HvInputVtl::CURRENT, &names),
    );
    assert_eq!(out.status(), HvStatus::SUCCESS);
}

/// VTL0's overlay pages (hypercall page, SIM, SIEF) over VTL2's page are VTL0's view only
/// (TLFS vsm.md): setting them changes no byte of VTL2's memory and sets no breakpoint there.
#[test]
fn a_lower_vtls_overlay_over_vtl2_memory_leaves_it_alone() {
    let mut hv = protected();
    hv.mem.write(SECRET, &[0x5A; 0x1000]).unwrap();
    let enabled = u128::from(SECRET | 1);
    for name in [
        x64_reg::HYPERCALL,
        HvRegisterName::SIMP,
        HvRegisterName::SIEFP,
    ] {
        let out = hv.set_regs(vtl0(), &[(name, enabled)]);
        assert_eq!(out.status(), HvStatus::SUCCESS, "{name:?}");
        assert_eq!(hv.model.register(0, Vtl::VTL0, name), Ok(enabled));
        assert!(
            hv.mem.slice(SECRET, 0x1000).iter().all(|&b| b == 0x5A),
            "{name:?} wrote VTL2's page"
        );
    }
    // On VTL0's own page the overlay is put in memory as before.
    let out = hv.set_regs(vtl0(), &[(HvRegisterName::SIMP, u128::from(OPEN | 1))]);
    assert_eq!(out.status(), HvStatus::SUCCESS);
    hv.mem.write(OPEN, &[0x5A; 16]).unwrap();
    let out = hv.set_regs(vtl0(), &[(HvRegisterName::SIEFP, u128::from(OPEN | 1))]);
    assert_eq!(out.status(), HvStatus::SUCCESS);
    assert_eq!(hv.mem.slice(OPEN, 16), &[0; 16], "zeroed overlay");
}

/// Read-only for the lower VTLs: loads work, stores and instruction fetches are intercepted.
#[test]
fn read_only_pages_allow_loads_only() {
    let mut hv = protected();
    let out = protect(
        &mut hv,
        HvMapGpaFlags::new().with_readable(true),
        &[OPEN >> 12],
    );
    assert_eq!(out.status(), HvStatus::SUCCESS);
    hv.mem.write(OPEN, b"readable").unwrap();
    let arch = crate::Arch::X86_64;
    hv.model.vtl0().push(Vtl0Call::access(
        arch,
        VTL0_RIP,
        Vtl0Access::Read { gpa: OPEN, len: 8 },
    ));
    hv.model.vtl0().push(Vtl0Call::access(
        arch,
        0,
        Vtl0Access::Execute { gpa: OPEN + 0x10 },
    ));
    vtl_return(&mut hv);
    let m = memory_intercept(&intercept(&hv));
    assert_eq!(
        (m.guest_physical_address, m.header.intercept_access_type),
        (OPEN + 0x10, HvInterceptAccessType::EXECUTE)
    );
    assert_eq!(hv.model.vtl0().results()[0].output, b"readable");
}

/// OpenVMM decodes the target VTL before anything else: reserved bits or a VTL above 2 are
/// INVALID_PARAMETER even where the caller would be refused; a lower VTL's call is
/// ACCESS_DENIED (only VTL2 protects, OpenVMM virt_whp).
#[test]
fn the_target_vtl_is_checked_first_and_only_vtl2_may_protect() {
    let mut hv = Hv::x64();
    hv.boot_x64();
    for target in [
        HvInputVtl::from_bits(0x20),
        HvInputVtl::new()
            .with_target_vtl(3)
            .with_use_target_vtl(true),
    ] {
        let out = hv.call(
            rep(HypercallCode::MODIFY_VTL_PROTECTION_MASK, 1),
            &protect_input(HvMapGpaFlags::NO_ACCESS, target, &[SECRET >> 12]),
        );
        assert_eq!(out.status(), HvStatus::INVALID_PARAMETER, "{target:?}");
    }
    let mut hv = protected();
    let unprotect = protect_input(
        HvMapGpaFlags::ALL_ACCESS,
        HvInputVtl::CURRENT,
        &[SECRET >> 12],
    );
    hv.model.vtl0().push(
        Vtl0Call::x64(
            VTL0_RIP,
            rep(HypercallCode::MODIFY_VTL_PROTECTION_MASK, 1),
            OPEN,
            0,
        )
        .with_memory(OPEN, &unprotect),
    );
    let effects = vtl_return(&mut hv);
    assert!(effects.finished, "served by the hypervisor");
    assert_eq!(
        hv.model.vtl0().results()[0].status(),
        HvStatus::ACCESS_DENIED
    );
    assert_eq!(hv.model.lower_vtl_access(SECRET), HvMapGpaFlags::NO_ACCESS);
}
