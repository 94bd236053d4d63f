//! A nested host under the mock hypervisor, on both arches: the paravisor reads the TLFS's
//! nested indicator once at boot (x86 CPUID 0x40000004 EAX bit 12; arm64 bit 4 of
//! HvRegisterFeaturesInfo, TLFS feature-discovery.md "Implementation Recommendations -
//! HvRegisterFeaturesInfo"), fixes its nested table from it, and then sends exactly the calls a
//! nested host's L0 owns (PostMessage, SignalEvent) with control bit 31. A flat host gets no bit.

use e2e::{call, code, get_registers_input, layout, post_message};
use hvdef::x86_64::cpuid;
use hvdef::{Control, HvInputVtl, HvRegisterName, HvStatus, HypercallCode, Vtl};
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

/// One relayed form: what VTL0 issues, and what the host must receive for it, written from the
/// TLFS and the relay table (not from the paravisor's code).
struct Relayed {
    what: &'static str,
    call: Vtl0Call,
    /// The whole control word at the host.
    control: Control,
    /// The input bytes at the host, byte for byte.
    input: Vec<u8>,
    /// What VTL0 must find unchanged afterwards: memory (input GPA, bytes) or, for a fast call,
    /// the input registers.
    vtl0_input: Vtl0Input,
}

enum Vtl0Input {
    Memory(u64, Vec<u8>),
    Registers(Vec<(HvRegisterName, u128)>),
}

/// Every relayed call code in each form it can take, on a flat or a nested host: PostMessage
/// (memory; 272 bytes never fit a fast block), SignalEvent fast and memory-based,
/// RetargetDeviceInterrupt memory-based and fast with a 3-qword sparse VP set as its variable
/// header (x64 XMM fast input goes to the host memory-based: the paravisor is soft-float).
/// HV_HYPERCALL_NESTED (bit 31) marks exactly the calls a nested host's L0 owns (TLFS
/// nested-virtualization.md: SynIC calls to the L0), on both arches.
fn relayed_forms(arch: Arch, nested: bool) -> Vec<Relayed> {
    let l = layout(arch);
    let payload: Vec<u8> = (0..240u32).map(|i| (i * 7 + 3) as u8).collect();
    let message = e2e::post_message_with(e2e::RELAYED, &payload);
    let mut message_at_host = message.clone();
    message_at_host[..4].copy_from_slice(&e2e::HOST_CONNECTION.to_le_bytes());
    let event = |flag| e2e::signal_event_input(e2e::RELAYED_EVENT, flag);
    let event_at_host = |flag| e2e::signal_event_input(e2e::HOST_CONNECTION, flag);
    let retarget = e2e::retarget_sparse_input(e2e::OWNED_DEVICE);
    let post = code(HypercallCode::POST_MESSAGE);
    let signal = code(HypercallCode::SIGNAL_EVENT);
    let retarget_code = code(HypercallCode::RETARGET_DEVICE_INTERRUPT).with_variable_header_size(3);
    let fast_registers = |c: &Vtl0Call, n: usize| {
        let names = e2e::fast_input_registers(arch);
        names[..n]
            .iter()
            .map(|&(name, _)| {
                let value = c.registers.iter().rev().find(|r| r.0 == name).unwrap().1;
                (name, value)
            })
            .collect()
    };
    let memory = |gpa: u64, control: Control, bytes: &[u8]| {
        call(arch, control, gpa, 0).with_memory(gpa, bytes)
    };
    let fast_event = e2e::fast_call(arch, signal, &event(3));
    let fast_retarget = e2e::fast_call(arch, retarget_code, &retarget);
    vec![
        Relayed {
            what: "PostMessage, memory",
            call: memory(l.input, post, &message),
            control: post.with_nested(nested),
            input: message_at_host,
            vtl0_input: Vtl0Input::Memory(l.input, message.clone()),
        },
        Relayed {
            what: "SignalEvent, fast",
            vtl0_input: Vtl0Input::Registers(fast_registers(&fast_event, 1)),
            call: fast_event,
            control: signal.with_fast(true).with_nested(nested),
            input: event_at_host(3),
        },
        Relayed {
            what: "SignalEvent, memory",
            call: memory(l.input + 0x200, signal, &event(5)),
            control: signal.with_nested(nested),
            input: event_at_host(5),
            vtl0_input: Vtl0Input::Memory(l.input + 0x200, event(5)),
        },
        Relayed {
            what: "RetargetDeviceInterrupt, memory, sparse VP set",
            call: memory(l.input + 0x300, retarget_code, &retarget),
            control: retarget_code,
            input: retarget.clone(),
            vtl0_input: Vtl0Input::Memory(l.input + 0x300, retarget.clone()),
        },
        Relayed {
            what: "RetargetDeviceInterrupt, fast, sparse VP set",
            vtl0_input: Vtl0Input::Registers(fast_registers(
                &fast_retarget,
                match arch {
                    Arch::X86_64 => 6,
                    Arch::Aarch64 => 10,
                },
            )),
            call: fast_retarget,
            control: retarget_code.with_fast(arch == Arch::Aarch64),
            input: retarget,
        },
    ]
}

#[test]
fn every_relayed_form_reaches_the_host_byte_for_byte() {
    for arch in Arch::ALL {
        for nested in [false, true] {
            let case = format!("{arch:?}, nested host {nested}");
            let forms = relayed_forms(arch, nested);
            let script = forms
                .iter()
                .map(|f| match &f.vtl0_input {
                    Vtl0Input::Memory(gpa, bytes) => f.call.clone().with_output(*gpa, bytes.len()),
                    Vtl0Input::Registers(_) => f.call.clone(),
                })
                .collect();
            let scenario = e2e::owned_device_scenario(host(arch, nested));
            let mut report = e2e::run_vtl0(scenario, script);
            // The host: exactly one call per form, in script order per code.
            let mut seen: std::collections::BTreeMap<HypercallCode, usize> = Default::default();
            for f in &forms {
                let code = f.control.code();
                let n = seen.entry(code).or_default();
                let sent = forwarded(&report, code);
                let r = sent
                    .get(*n)
                    .unwrap_or_else(|| panic!("{case} {}: not relayed", f.what));
                *n += 1;
                assert_eq!(
                    Control::from_bits(r.control),
                    f.control,
                    "{case} {}: the control word at the host",
                    f.what
                );
                assert_eq!(r.input, f.input, "{case} {}: the input at the host", f.what);
            }
            for (code, n) in seen {
                assert_eq!(
                    forwarded(&report, code).len(),
                    n,
                    "{case} {code:?}: nothing else"
                );
            }
            // VTL0: SUCCESS with no reps (the whole result word), the IP past the call, its
            // control word and its input as it left them.
            let results = results(&mut report);
            assert_eq!(results.len(), forms.len(), "{case}");
            let control_register = match arch {
                Arch::X86_64 => hvdef::x86_64::reg::RCX,
                Arch::Aarch64 => hvdef::aarch64::reg::X1,
            };
            for (r, f) in results.iter().zip(&forms) {
                let what = format!("{case} {}", f.what);
                assert_eq!(r.result, 0, "{what}: the result word");
                assert!(r.advanced() && r.reached_vtl2, "{what}");
                let vtl0_control = f.call.registers.iter().find(|x| x.0 == control_register);
                assert_eq!(
                    r.register(control_register),
                    vtl0_control.unwrap().1,
                    "{what}: VTL0's control register"
                );
                match &f.vtl0_input {
                    Vtl0Input::Memory(_, bytes) => {
                        assert_eq!(&r.output, bytes, "{what}: VTL0's input memory untouched")
                    }
                    Vtl0Input::Registers(regs) => {
                        for &(name, value) in regs {
                            assert_eq!(r.register(name), value, "{what}: {name:?}");
                        }
                    }
                }
            }
        }
    }
}
