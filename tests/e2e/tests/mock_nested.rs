//! A nested host under the mock hypervisor, on both arches: the paravisor reads the TLFS's
//! nested indicator once at boot (x86 CPUID 0x40000004 EAX bit 12; arm64 bit 4 of
//! HvRegisterFeaturesInfo, TLFS feature-discovery.md "Implementation Recommendations -
//! HvRegisterFeaturesInfo"), fixes its nested table from it, and then sends exactly the calls a
//! nested host's L0 owns (PostMessage, SignalEvent) with control bit 31. A flat host gets no bit.

use e2e::{call, code, get_registers_input, layout, post_message};
use hvdef::x86_64::cpuid;
use hvdef::{HvInputVtl, HvRegisterName, HvStatus, HypercallCode, Vtl};
use mockhv::model::{Event, HypercallRecord, Scenario, Vtl0Call};
use mockhv::qemu::Arch;
use mockhv::session::Report;

use e2e::{results, vtl2_calls as forwarded};

/// VTL0's PostMessage (memory) and SignalEvent (fast) on connections the host does not know
/// and the relay maps to host connection 1: reflected to VTL2 and relayed.
fn vmbus_calls(arch: Arch) -> Vec<Vtl0Call> {
    let l = layout(arch);
    vec![
        call(arch, code(HypercallCode::POST_MESSAGE), l.input, 0)
            .with_memory(l.input, &post_message(e2e::RELAYED)),
        call(
            arch,
            code(HypercallCode::SIGNAL_EVENT).with_fast(true),
            e2e::signal_event_word(e2e::RELAYED_EVENT, 0),
            0,
        ),
    ]
}

fn host(arch: Arch, nested: bool) -> Scenario {
    Scenario {
        nested,
        ..Scenario::for_arch(arch)
    }
}

#[test]
fn a_nested_host_gets_the_l0_calls_with_bit_31() {
    for arch in Arch::ALL {
        let l = layout(arch);
        let mut script = vmbus_calls(arch);
        script.push(
            call(
                arch,
                code(HypercallCode::GET_VP_REGISTERS).with_rep_count(1),
                l.input + 0x800,
                l.output,
            )
            .with_memory(
                l.input + 0x800,
                &get_registers_input(HvInputVtl::CURRENT, &[HvRegisterName::VP_INDEX]),
            ),
        );
        let mut report = e2e::run_vtl0(host(arch, true), script);
        for r in results(&mut report) {
            assert_eq!(r.status(), HvStatus::SUCCESS, "{arch:?} call {}", r.index);
        }
        for code in [HypercallCode::POST_MESSAGE, HypercallCode::SIGNAL_EVENT] {
            let sent = forwarded(&report, code);
            assert_eq!(sent.len(), 1, "{arch:?} {code:?} forwarded once");
            assert_ne!(
                sent[0].control & (1 << 31),
                0,
                "{arch:?} {code:?} carries HV_HYPERCALL_NESTED"
            );
        }
        let gets = forwarded(&report, HypercallCode::GET_VP_REGISTERS);
        assert!(!gets.is_empty());
        assert!(
            gets.iter().all(|r| r.control & (1 << 31) == 0),
            "{arch:?}: GetVpRegisters is never nested"
        );
    }
}

/// The paravisor's GetVpRegisters calls that read HvRegisterFeaturesInfo (the first name in
/// the list, after the 16-byte header).
fn features_info_reads(report: &Report) -> Vec<HypercallRecord> {
    forwarded(report, HypercallCode::GET_VP_REGISTERS)
        .into_iter()
        .filter(|r| r.input.get(16..20) == Some(&HvRegisterName::FEATURES_INFO.0.to_le_bytes()))
        .collect()
}

#[test]
fn the_table_follows_the_arch_s_nested_indicator_read_once_at_boot() {
    for arch in Arch::ALL {
        for nested in [false, true] {
            let case = format!("{arch:?}, nested host {nested}");
            let mut report = e2e::run_vtl0(host(arch, nested), vmbus_calls(arch));
            let reads = features_info_reads(&report);
            let leaf4 = report
                .trace()
                .cpuid_leaves()
                .into_iter()
                .filter(|&l| l == cpuid::HV_CPUID_ENLIGHTENMENT_INFO)
                .count();
            match arch {
                Arch::X86_64 => {
                    assert_eq!(leaf4, 1, "{case}: CPUID 0x40000004 read once");
                    assert!(reads.is_empty(), "{case}: x86 reads no register for it");
                }
                Arch::Aarch64 => {
                    assert_eq!(leaf4, 0, "{case}: no CPUID on arm64");
                    assert_eq!(reads.len(), 1, "{case}: HvRegisterFeaturesInfo read once");
                    let read = &reads[0];
                    assert_eq!(read.vp, 0, "{case}: by the boot VP");
                    assert_eq!(
                        read.control, 0x0000_0001_0000_0050,
                        "{case}: one-rep GetVpRegisters"
                    );
                    assert_eq!(read.status(), Some(HvStatus::SUCCESS), "{case}");
                    // Bit 4 nested, bits 63:32 the spinlock retries (all ones: never notify).
                    let value: u128 = 0xFFFF_FFFF_0000_0000 | if nested { 1 << 4 } else { 0 };
                    assert_eq!(read.output, value.to_le_bytes(), "{case}");
                    // After the guest OS id (the boot's first call), before any call that
                    // could carry the bit.
                    let order: Vec<_> = report
                        .trace()
                        .events()
                        .iter()
                        .filter_map(|e| match e {
                            Event::Hypercall(h) if h.vtl == Vtl::VTL2 => Some(h),
                            _ => None,
                        })
                        .collect();
                    assert_eq!(order[0].code, HypercallCode::SET_VP_REGISTERS, "{case}");
                    assert_eq!(order[1], read, "{case}: read right after the guest OS id");
                }
            }
            let indicator = match arch {
                Arch::X86_64 => "CPUID 0x40000004 EAX bit 12",
                Arch::Aarch64 => "HvRegisterFeaturesInfo bit 4",
            };
            let codes = if nested { 2 } else { 0 };
            let want = format!(
                "nested host: {nested} ({indicator}; {codes} call codes get the nested bit)"
            );
            assert!(
                report.run.console.contains(&want),
                "{case}: console lacks {want:?}:\n{}",
                report.run.console
            );
            for r in results(&mut report) {
                assert_eq!(r.status(), HvStatus::SUCCESS, "{case}: call {}", r.index);
            }
            for code in [HypercallCode::POST_MESSAGE, HypercallCode::SIGNAL_EVENT] {
                let sent = forwarded(&report, code);
                assert_eq!(sent.len(), 1, "{case}: {code:?} forwarded once");
                assert_eq!(
                    sent[0].control & (1 << 31) != 0,
                    nested,
                    "{case}: {code:?} nested bit"
                );
                assert_eq!(sent[0].status(), Some(HvStatus::SUCCESS), "{case}");
            }
        }
    }
}
