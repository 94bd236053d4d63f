//! Host tests of the hypercall layer against the mock hypervisor model.
//!
//! The real [`Hypercall`] layer runs against the real TLFS model of `mockhv`: [`ModelAbi`] hands
//! the control word to `Model::vmcall` (x64) or `Model::hvc` (arm64 SMCCC) and exposes exactly
//! the layer's two pages, at their host addresses, as guest memory. Every assertion reads what
//! the model recorded in its trace or returned.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use hvdef::aarch64::{HVC_IMM_SMCCC, SMCCC_HV_FUNC_ID};
use hvdef::x86_64::{reg as x64_reg, HvX64Msr};
use hvdef::{
    HvExtendedCapabilities, HvInputPostMessage, HvInputSignalEvent, HvMessageType,
    HvPartitionPrivilegeMask, SyntheticRegister, Vtl, HV_MESSAGE_PAYLOAD_SIZE, HV_SYNIC_VERSION_1,
};
use mockhv::model::{
    Abi, Arch, BudgetEnd, FaultAction, GuestMemory, HypercallRecord, InjectedFault, MemoryError,
    Model, Outcome, Scenario, TestMemory, X64HypercallRegs,
};

use super::*;
use crate::hv::guest_os_id;
use crate::vsm::{self, VsmError};

// ---- The ABI adapter ---------------------------------------------------------------------------

/// Guest memory that is exactly the pages handed to one call, at their host addresses.
struct PageMemory<'p> {
    pages: Vec<(u64, &'p mut [u8])>,
}

impl PageMemory<'_> {
    fn bytes(&mut self, gpa: u64, len: usize) -> core::result::Result<&mut [u8], MemoryError> {
        for (base, page) in self.pages.iter_mut() {
            let Some(at) = gpa.checked_sub(*base) else {
                continue;
            };
            if at
                .checked_add(len as u64)
                .is_some_and(|end| end <= page.len() as u64)
            {
                return Ok(&mut page[at as usize..at as usize + len]);
            }
        }
        Err(MemoryError { gpa, len })
    }
}

impl GuestMemory for PageMemory<'_> {
    fn read(&mut self, gpa: u64, buf: &mut [u8]) -> core::result::Result<(), MemoryError> {
        buf.copy_from_slice(self.bytes(gpa, buf.len())?);
        Ok(())
    }

    fn write(&mut self, gpa: u64, data: &[u8]) -> core::result::Result<(), MemoryError> {
        self.bytes(gpa, data.len())?.copy_from_slice(data);
        Ok(())
    }
}

/// Words of the fast block after the control word: x64 RDX and R8 (no XMM), arm64 X2..X17.
fn fast_words(arch: Arch) -> usize {
    match arch {
        Arch::X86_64 => hvdef::x86_64::FAST_GPR_WORDS,
        Arch::Aarch64 => hvdef::aarch64::SMCCC_FAST_WORDS,
    }
}

/// The hypercall instruction of `arch`, executed by the model for VP `vp`.
struct ModelAbi {
    model: Rc<RefCell<Model>>,
    vp: u32,
    arch: Arch,
    /// What happens when the model leaves the IP on the instruction (TIMEOUT): `false` returns
    /// the TIMEOUT to the layer, which must re-issue the call; `true` re-executes the
    /// instruction with the registers as the model left them, as the CPU does.
    reexecute: bool,
    /// Instructions executed, against a runaway layer (re-issuing forever would hang the test).
    executed: u32,
}

/// More than the all-codes sweep needs.
const MAX_INSTRUCTIONS: u32 = 0x11000;

impl ModelAbi {
    /// Runs the instruction with `control` and `block` (GPAs or fast input) in the registers
    /// after it; `block` gets the registers' values afterwards. Returns the result word.
    fn instruction(&mut self, control: u64, block: &mut [u64; 16], mem: &mut PageMemory) -> u64 {
        let mut model = self.model.borrow_mut();
        let mut x64 = X64HypercallRegs {
            rcx: control,
            rdx: block[0],
            r8: block[1],
            ..Default::default()
        };
        let mut x = [0; mockhv::model::ARM64_GPRS];
        (x[0], x[1]) = (SMCCC_HV_FUNC_ID.into(), control);
        x[2..18].copy_from_slice(block);
        loop {
            self.executed += 1;
            assert!(
                self.executed <= MAX_INSTRUCTIONS,
                "runaway: {control:#x} re-issued"
            );
            let (effects, result) = match self.arch {
                Arch::X86_64 => (model.vmcall(self.vp, &mut x64, mem), x64.rax),
                Arch::Aarch64 => (model.hvc(self.vp, HVC_IMM_SMCCC, &mut x, mem), x[0]),
            };
            assert_eq!(effects.fault, None, "control {control:#x} faulted");
            if effects.advance_ip {
                match self.arch {
                    Arch::X86_64 => (block[0], block[1]) = (x64.rdx, x64.r8),
                    Arch::Aarch64 => block.copy_from_slice(&x[2..18]),
                }
                return result;
            }
            // Left on the instruction: a TIMEOUT, with the control register moved on to the
            // reps completed (RCX; X1 under SMCCC, where X0 keeps the function id).
            let recorded = model.trace().last_hypercall().map(|r| r.outcome);
            let Some(Outcome::Status(out)) = recorded else {
                panic!("control {control:#x}: IP not advanced after {recorded:?}");
            };
            assert_eq!(out.status(), HvStatus::TIMEOUT, "control {control:#x}");
            if !self.reexecute {
                // What RAX holds on x64; arm64 keeps it out of X0, so take the model's record.
                return out.into_bits();
            }
        }
    }
}

impl HypercallAbi for ModelAbi {
    fn call(&mut self, control: u64, input: &Page, output: &mut Page) -> u64 {
        let (input_gpa, output_gpa) = (input.gpa(), output.gpa());
        // The layer hands its input page over read-only: the model gets a copy, which must
        // come back unchanged.
        let mut input_copy = input.0;
        let mut block = [0; 16];
        (block[0], block[1]) = (input_gpa, output_gpa);
        let mut mem = PageMemory {
            pages: vec![
                (input_gpa, &mut input_copy[..]),
                (output_gpa, &mut output.0[..]),
            ],
        };
        let result = self.instruction(control, &mut block, &mut mem);
        assert!(input_copy == input.0, "the hypervisor wrote the input page");
        result
    }

    fn call_fast(&mut self, control: u64, regs: &mut [u64]) -> Option<u64> {
        if regs.len() > fast_words(self.arch) {
            return None;
        }
        let mut block = [0; 16];
        block[..regs.len()].copy_from_slice(regs);
        let result = self.instruction(control, &mut block, &mut PageMemory { pages: Vec::new() });
        regs.copy_from_slice(&block[..regs.len()]);
        Some(result)
    }
}

/// Records every control word the layer issues and forwards the call, except the VTL switch
/// codes: the model runs those as VtlCall/VtlReturn (a #UD or a switch to VTL0 from here),
/// so they are answered INVALID_HYPERCALL_CODE without reaching it.
struct Recording {
    inner: ModelAbi,
    controls: Rc<RefCell<Vec<u64>>>,
}

fn is_vtl_switch(control: u64) -> bool {
    matches!(
        Control::from_bits(control).code(),
        HypercallCode::VTL_CALL | HypercallCode::VTL_RETURN
    )
}

impl HypercallAbi for Recording {
    fn call(&mut self, control: u64, input: &Page, output: &mut Page) -> u64 {
        self.controls.borrow_mut().push(control);
        if is_vtl_switch(control) {
            let status = HvStatus::INVALID_HYPERCALL_CODE;
            return HypercallOutput::new().with_status(status).into_bits();
        }
        self.inner.call(control, input, output)
    }

    fn call_fast(&mut self, control: u64, regs: &mut [u64]) -> Option<u64> {
        self.controls.borrow_mut().push(control);
        self.inner.call_fast(control, regs)
    }
}

// ---- Harness -----------------------------------------------------------------------------------

/// What a test sees of the model besides the layer.
struct Env {
    model: Rc<RefCell<Model>>,
    /// Hypercalls the harness made while booting, before the test.
    since: usize,
}

impl Env {
    /// The test's hypercalls, in order.
    fn calls(&self) -> Vec<HypercallRecord> {
        let model = self.model.borrow();
        model
            .trace()
            .hypercalls()
            .skip(self.since)
            .cloned()
            .collect()
    }

    fn calls_of(&self, code: HypercallCode) -> Vec<HypercallRecord> {
        self.calls()
            .into_iter()
            .filter(|r| r.code == code)
            .collect()
    }
}

/// A layer on VP 0 of a fresh model for `scenario`, booted far enough that every call is
/// allowed; afterwards every memory-based call must have used the layer's two pages.
fn run_with<A: HypercallAbi, R>(
    scenario: Scenario,
    nested: &NestedTable,
    wrap: impl FnOnce(ModelAbi) -> A,
    test: impl FnOnce(&mut Hypercall<'_, A>, &Env) -> R,
) -> R {
    run_inner(scenario, Some(nested), wrap, test)
}

/// Like [`run_with`], with the table the firmware decides for this host: the arch's nested
/// indicator read from the model after the boot calls (see [`nested_host`]).
fn run_decided<A: HypercallAbi, R>(
    scenario: Scenario,
    wrap: impl FnOnce(ModelAbi) -> A,
    test: impl FnOnce(&mut Hypercall<'_, A>, &Env) -> R,
) -> R {
    run_inner(scenario, None, wrap, test)
}

fn run_inner<A: HypercallAbi, R>(
    mut scenario: Scenario,
    nested: Option<&NestedTable>,
    wrap: impl FnOnce(ModelAbi) -> A,
    test: impl FnOnce(&mut Hypercall<'_, A>, &Env) -> R,
) -> R {
    let (mut input, mut output) = (Box::new(Page::zeroed()), Box::new(Page::zeroed()));
    let pages = (input.gpa(), output.gpa());
    // GPAs are host addresses here: widen the model's GPA space if the heap lies beyond it.
    let top = pages.0.max(pages.1) + PAGE_SIZE as u64 - 1;
    let bits = (u64::BITS - top.leading_zeros()) as u8;
    scenario.limits.gpa_bits = scenario.limits.gpa_bits.max(bits);
    let arch = scenario.arch;
    let model = Rc::new(RefCell::new(Model::new(scenario)));
    let abi = || ModelAbi {
        model: model.clone(),
        vp: 0,
        arch,
        reexecute: false,
        executed: 0,
    };
    // As the firmware does: the calls before the table go through a layer without one.
    let decided = {
        let mut hv = Hypercall::before_nested_table(abi(), &mut input, &mut output);
        boot(&mut hv, &model, arch);
        match nested {
            Some(_) => None,
            None => Some(NestedTable::for_host(nested_host(&mut hv, &model, arch))),
        }
    };
    let table = nested.or(decided.as_ref()).expect("a table");
    let mut hv = Hypercall::new(wrap(abi()), &mut input, &mut output, table);
    assert_eq!(hv.page_gpas(), pages);
    let since = model.borrow().trace().hypercalls().count();
    let env = Env { model, since };
    let result = test(&mut hv, &env);
    let all: Vec<_> = env.model.borrow().trace().hypercalls().cloned().collect();
    assert_page_discipline(&all, pages);
    result
}

fn run<R>(
    scenario: Scenario,
    nested: &NestedTable,
    test: impl FnOnce(&mut Hypercall<'_, ModelAbi>, &Env) -> R,
) -> R {
    run_with(scenario, nested, |abi| abi, test)
}

/// The model takes hypercalls only once the guest OS id is set: on x64 the paravisor writes
/// the MSR and enables the hypercall page, on arm64 it sets the register with a fast
/// SetVpRegisters (the only way there).
fn boot<A: HypercallAbi>(hv: &mut Hypercall<'_, A>, model: &RefCell<Model>, arch: Arch) {
    match arch {
        Arch::X86_64 => {
            // The model writes the hypercall page into memory of its own at 0x1000.
            let mut mem = TestMemory::new(2 * PAGE_SIZE);
            let mut model = model.borrow_mut();
            for (msr, value) in [
                (HvX64Msr::HV_X64_MSR_GUEST_OS_ID, guest_os_id()),
                (HvX64Msr::HV_X64_MSR_HYPERCALL, PAGE_SIZE as u64 | 1),
            ] {
                let written = model.wrmsr(0, msr.0, value, &mut mem);
                assert!(matches!(written, Some(Ok(_))), "{msr:?}: {written:?}");
            }
            let hypercall = model.rdmsr(0, HvX64Msr::HV_X64_MSR_HYPERCALL.0);
            assert_eq!(
                hypercall,
                Some(Ok(PAGE_SIZE as u64 | 1)),
                "hypercall page enabled"
            );
        }
        Arch::Aarch64 => hv
            .set_vp_register(
                VpTarget::SELF,
                HvRegisterName::GUEST_OS_ID,
                guest_os_id().into(),
            )
            .expect("arm64 guest OS id"),
    }
}

/// The firmware's nested indicator, read from the model the way the arch layer reads it and
/// decoded by `hv`: x86 CPUID 0x40000004, arm64 HvRegisterFeaturesInfo through the shared
/// register path.
fn nested_host<A: HypercallAbi>(
    hv: &mut Hypercall<'_, A>,
    model: &RefCell<Model>,
    arch: Arch,
) -> bool {
    match arch {
        Arch::X86_64 => {
            let mut model = model.borrow_mut();
            crate::hv::nested_x86(&mut |leaf, subleaf| {
                model.cpuid(0, leaf, subleaf).expect("a Hyper-V leaf")
            })
        }
        Arch::Aarch64 => {
            let value = hv
                .get_vp_register(VpTarget::SELF, HvRegisterName::FEATURES_INFO)
                .expect("HvRegisterFeaturesInfo");
            crate::hv::nested_arm64(value)
        }
    }
}

fn assert_page_discipline(calls: &[HypercallRecord], (input, output): (u64, u64)) {
    assert_ne!(input, output);
    assert_eq!(
        (input % PAGE_SIZE as u64, output % PAGE_SIZE as u64),
        (0, 0)
    );
    for r in calls
        .iter()
        .filter(|r| !Control::from_bits(r.control).fast())
    {
        assert_eq!(
            (r.input_gpa, r.output_gpa),
            (input, output),
            "{:?} control {:#x}",
            r.code,
            r.control
        );
    }
}

/// Rep count, rep start, status and reps completed of a recorded call.
fn shape(r: &HypercallRecord) -> (u16, u16, HvStatus, u16) {
    let control = Control::from_bits(r.control);
    let Outcome::Status(out) = r.outcome else {
        panic!("{:?} did not complete: {:?}", r.code, r.outcome);
    };
    (
        control.rep_count(),
        control.rep_start(),
        out.status(),
        out.reps_completed(),
    )
}

/// The Get/SetVpRegisters header the layer must send for `VpTarget::SELF`.
fn self_header() -> Vec<u8> {
    HvInputGetVpRegisters {
        partition_id: u64::MAX,
        vp_index: 0xFFFF_FFFE,
        target_vtl: HvInputVtl::CURRENT,
        reserved: [0; 3],
    }
    .as_bytes()
    .to_vec()
}

// ---- Register fixtures -------------------------------------------------------------------------

/// Registers the model stores as written on both arches, without side effects (values keep a
/// SINT vector >= 16): crash parameters, reference TSC, assist page, VINA, VTL0/1 secure config,
/// SINT0..15.
fn writable() -> Vec<HvRegisterName> {
    type N = HvRegisterName;
    let crash = (0..6).map(|i| HvRegisterName(N::GUEST_CRASH_P0.0 + i));
    let sints = (0..16).map(|n| N::sint(n).unwrap());
    crash
        .chain([
            N::REFERENCE_TSC,
            N::VP_ASSIST_PAGE,
            N::VSM_VINA,
            N::VSM_VP_SECURE_CONFIG_VTL0,
            N::VSM_VP_SECURE_CONFIG_VTL1,
        ])
        .chain(sints)
        .collect()
}

/// `count` writes cycling over [`writable`], value distinct per write.
fn assocs(count: usize) -> Vec<HvRegisterAssoc> {
    let names = writable();
    (0..count as u64)
        .map(|i| {
            let value = 0xAB_0000_0000 | (i << 8) | 0x20;
            HvRegisterAssoc::new(names[i as usize % names.len()], value.into())
        })
        .collect()
}

/// Writes `count` assocs, then returns names cycling over every register with a known value
/// (the writable ones, VP index, guest OS id) and what each should read.
fn known_registers<A: HypercallAbi>(
    hv: &mut Hypercall<'_, A>,
    count: usize,
) -> (
    Vec<HvRegisterName>,
    BTreeMap<HvRegisterName, HvRegisterValue>,
) {
    let written = assocs(writable().len());
    hv.set_vp_registers(VpTarget::SELF, &written).unwrap();
    let mut expect: BTreeMap<_, _> = written.iter().map(|a| (a.name, a.value)).collect();
    expect.insert(HvRegisterName::VP_INDEX, 0u64.into());
    expect.insert(HvRegisterName::GUEST_OS_ID, guest_os_id().into());
    let keys: Vec<_> = expect.keys().copied().collect();
    let names = (0..count).map(|i| keys[i % keys.len()]).collect();
    (names, expect)
}

fn get_all<A: HypercallAbi>(
    hv: &mut Hypercall<'_, A>,
    names: &[HvRegisterName],
) -> Result<Vec<HvRegisterValue>> {
    let mut values = vec![HvRegisterValue::default(); names.len()];
    hv.get_vp_registers(VpTarget::SELF, names, &mut values)?;
    Ok(values)
}

fn expected(
    names: &[HvRegisterName],
    expect: &BTreeMap<HvRegisterName, HvRegisterValue>,
) -> Vec<HvRegisterValue> {
    names.iter().map(|n| expect[n]).collect()
}

// ---- 1. Chunking -------------------------------------------------------------------------------

#[test]
fn get_vp_registers_is_split_into_page_sized_chunks() {
    for arch in Arch::ALL {
        run(Scenario::for_arch(arch), &NestedTable::NONE, |hv, env| {
            let (names, expect) = known_registers(hv, 600);
            let values = get_all(hv, &names).unwrap();
            assert_eq!(values, expected(&names, &expect), "{arch:?}");

            let gets = env.calls_of(HypercallCode::GET_VP_REGISTERS);
            let shapes: Vec<_> = gets.iter().map(shape).collect();
            let ok = HvStatus::SUCCESS;
            assert_eq!(
                shapes,
                [(256, 0, ok, 256), (256, 0, ok, 256), (88, 0, ok, 88)]
            );
            let chunks = names.chunks(256).zip(values.chunks(256));
            for (record, (names, values)) in gets.iter().zip(chunks) {
                assert_eq!(
                    record.input,
                    [self_header(), names.as_bytes().to_vec()].concat()
                );
                assert_eq!(record.output, values.as_bytes());
            }
        });
    }
}

#[test]
fn set_vp_registers_is_split_into_page_sized_chunks() {
    for arch in Arch::ALL {
        run(Scenario::for_arch(arch), &NestedTable::NONE, |hv, env| {
            let writes = assocs(300);
            hv.set_vp_registers(VpTarget::SELF, &writes).unwrap();

            let sets = env.calls_of(HypercallCode::SET_VP_REGISTERS);
            let shapes: Vec<_> = sets.iter().map(shape).collect();
            let ok = HvStatus::SUCCESS;
            assert_eq!(
                shapes,
                [(127, 0, ok, 127), (127, 0, ok, 127), (46, 0, ok, 46)]
            );
            for (record, chunk) in sets.iter().zip(writes.chunks(127)) {
                assert!(!Control::from_bits(record.control).fast());
                assert_eq!(
                    record.input,
                    [self_header(), chunk.as_bytes().to_vec()].concat()
                );
            }
            // The last write of each register is what the model holds.
            let last: BTreeMap<_, _> = writes.iter().map(|a| (a.name, a.value)).collect();
            let names: Vec<_> = last.keys().copied().collect();
            assert_eq!(get_all(hv, &names).unwrap(), expected(&names, &last));
        });
    }
}

#[test]
fn set_vp_registers_goes_fast_only_where_the_block_fits() {
    for arch in Arch::ALL {
        run(Scenario::for_arch(arch), &NestedTable::NONE, |hv, env| {
            for n in 1..=4 {
                let before = env.calls().len();
                let writes: Vec<_> = assocs(n + 7)[7..].to_vec();
                hv.set_vp_registers(VpTarget::SELF, &writes).unwrap();
                let calls = env.calls()[before..].to_vec();
                assert_eq!(calls.len(), 1, "{arch:?} n={n}");
                let control = Control::from_bits(calls[0].control);
                // arm64 fits header + 3 assocs in X2..X17; x64 has only RDX/R8.
                assert_eq!(
                    control.fast(),
                    arch == Arch::Aarch64 && n <= 3,
                    "{arch:?} n={n}"
                );
                assert_eq!(shape(&calls[0]), (n as u16, 0, HvStatus::SUCCESS, n as u16));
                assert_eq!(
                    calls[0].input,
                    [self_header(), writes.as_bytes().to_vec()].concat()
                );
                let names: Vec<_> = writes.iter().map(|a| a.name).collect();
                let values: Vec<_> = writes.iter().map(|a| a.value).collect();
                assert_eq!(get_all(hv, &names).unwrap(), values);
            }
        });
    }
}

#[test]
fn empty_register_lists_make_no_call() {
    for arch in Arch::ALL {
        run(Scenario::for_arch(arch), &NestedTable::NONE, |hv, env| {
            assert_eq!(get_all(hv, &[]), Ok(Vec::new()), "{arch:?}");
            assert_eq!(hv.set_vp_registers(VpTarget::SELF, &[]), Ok(()), "{arch:?}");
            assert_eq!(env.calls(), [], "{arch:?}");
        });
    }
}

// ---- 2. Timeout resume -------------------------------------------------------------------------

fn get_faults(faults: impl IntoIterator<Item = (u32, FaultAction)>) -> Vec<InjectedFault> {
    faults
        .into_iter()
        .map(|(nth, action)| InjectedFault {
            code: HypercallCode::GET_VP_REGISTERS,
            nth,
            action,
            filter: Default::default(),
        })
        .collect()
}

#[test]
fn a_timed_out_chunk_resumes_from_reps_completed() {
    // Resumed by the layer (the TIMEOUT returned to it), or by the CPU re-executing the
    // instruction the model left the IP on: the same calls either way.
    for (arch, reexecute) in Arch::ALL.into_iter().flat_map(|a| [(a, false), (a, true)]) {
        let scenario = Scenario {
            faults: get_faults([(1, FaultAction::Timeout { reps: 5 })]),
            ..Scenario::for_arch(arch)
        };
        let wrap = |abi| ModelAbi { reexecute, ..abi };
        run_with(scenario, &NestedTable::NONE, wrap, |hv, env| {
            let (names, expect) = known_registers(hv, 20);
            assert_eq!(get_all(hv, &names).unwrap(), expected(&names, &expect));
            let gets = env.calls_of(HypercallCode::GET_VP_REGISTERS);
            let shapes: Vec<_> = gets.iter().map(shape).collect();
            assert_eq!(
                shapes,
                [
                    (20, 0, HvStatus::TIMEOUT, 5),
                    (20, 5, HvStatus::SUCCESS, 20)
                ],
                "{arch:?} re-executed {reexecute}"
            );
            // The re-issue sends the same list; the model writes the output from rep start on.
            assert_eq!(gets[0].input, gets[1].input);
            assert_eq!(
                (gets[0].output.len(), gets[1].output.len()),
                (5 * 16, 15 * 16)
            );
        });
    }
}

#[test]
fn progress_is_not_a_stall() {
    // A host that completes one rep per call: 20 calls, each resumed one further.
    for arch in Arch::ALL {
        let mut scenario = Scenario::for_arch(arch);
        scenario.limits.max_reps_per_call = 1;
        run(scenario, &NestedTable::NONE, |hv, env| {
            let (names, expect) = known_registers(hv, 20);
            assert_eq!(get_all(hv, &names).unwrap(), expected(&names, &expect));
            let starts: Vec<_> = env
                .calls_of(HypercallCode::GET_VP_REGISTERS)
                .iter()
                .map(|r| shape(r).1)
                .collect();
            assert_eq!(starts, (0..20).collect::<Vec<_>>(), "{arch:?}");
        });
    }
}

#[test]
fn a_timeout_without_progress_gives_up() {
    for arch in Arch::ALL {
        let stall = (1..=100).map(|nth| (nth, FaultAction::Timeout { reps: 0 }));
        let scenario = Scenario {
            faults: get_faults(stall),
            ..Scenario::for_arch(arch)
        };
        run(scenario.clone(), &NestedTable::NONE, |hv, env| {
            let (names, _) = known_registers(hv, 20);
            assert_eq!(get_all(hv, &names), Err(Error::Hv(HvError::TIMEOUT)));
            let gets = env.calls_of(HypercallCode::GET_VP_REGISTERS);
            assert_eq!(gets.len(), MAX_STALLED_RETRIES as usize + 1, "{arch:?}");
            for r in &gets {
                assert_eq!(shape(r), (20, 0, HvStatus::TIMEOUT, 0));
            }
        });
        // The bound is the layer's: a CPU re-executing the instruction waits for the host
        // (here, until the 101st call succeeds).
        let wrap = |abi| ModelAbi {
            reexecute: true,
            ..abi
        };
        run_with(scenario, &NestedTable::NONE, wrap, |hv, env| {
            let (names, expect) = known_registers(hv, 20);
            assert_eq!(get_all(hv, &names).unwrap(), expected(&names, &expect));
            let gets = env.calls_of(HypercallCode::GET_VP_REGISTERS);
            assert_eq!(gets.len(), 101, "{arch:?}");
        });
    }
}

// ---- 2b. Short SUCCESS -------------------------------------------------------------------------

fn faults_of(
    code: HypercallCode,
    faults: impl IntoIterator<Item = (u32, FaultAction)>,
) -> Vec<InjectedFault> {
    faults
        .into_iter()
        .map(|(nth, action)| InjectedFault {
            code,
            nth,
            action,
            filter: Default::default(),
        })
        .collect()
}

/// SetVpRegisters calls the harness's boot makes before the test (arm64 sets the guest OS id).
fn boot_sets(arch: Arch) -> u32 {
    match arch {
        Arch::X86_64 => 0,
        Arch::Aarch64 => 1,
    }
}

/// TLFS hypercall-interface.md §"Simple and Rep hypercalls": the host "is not required to
/// process the entire list" before returning; Linux `hv_do_rep_hypercall` continues a SUCCESS
/// with fewer reps completed from reps completed. The layer must too, for every chunk.
#[test]
fn a_short_success_chunk_continues_from_reps_completed() {
    let ok = HvStatus::SUCCESS;
    for arch in Arch::ALL {
        // The second GetVpRegisters chunk (256 names) stops after 100.
        let scenario = Scenario {
            faults: get_faults([(2, FaultAction::ShortSuccess { reps: 100 })]),
            ..Scenario::for_arch(arch)
        };
        run(scenario, &NestedTable::NONE, |hv, env| {
            let (names, expect) = known_registers(hv, 600);
            let values = get_all(hv, &names);
            assert_eq!(values, Ok(expected(&names, &expect)), "{arch:?}");
            let gets = env.calls_of(HypercallCode::GET_VP_REGISTERS);
            let shapes: Vec<_> = gets.iter().map(shape).collect();
            assert_eq!(
                shapes,
                [
                    (256, 0, ok, 256),
                    (256, 0, ok, 100),
                    (256, 100, ok, 256),
                    (88, 0, ok, 88)
                ],
                "{arch:?}"
            );
            // The continuation re-sends the same chunk; the host writes from rep start on.
            assert_eq!(gets[1].input, gets[2].input);
            let written: Vec<_> = gets.iter().map(|r| r.output.len() / 16).collect();
            assert_eq!(written, [256, 100, 156, 88], "{arch:?}");
        });

        // The second SetVpRegisters chunk (127 writes) stops after 50.
        let nth = boot_sets(arch) + 2;
        let scenario = Scenario {
            faults: faults_of(
                HypercallCode::SET_VP_REGISTERS,
                [(nth, FaultAction::ShortSuccess { reps: 50 })],
            ),
            ..Scenario::for_arch(arch)
        };
        run(scenario, &NestedTable::NONE, |hv, env| {
            let writes = assocs(300);
            assert_eq!(hv.set_vp_registers(VpTarget::SELF, &writes), Ok(()));
            let sets = env.calls_of(HypercallCode::SET_VP_REGISTERS);
            let shapes: Vec<_> = sets.iter().map(shape).collect();
            assert_eq!(
                shapes,
                [
                    (127, 0, ok, 127),
                    (127, 0, ok, 50),
                    (127, 50, ok, 127),
                    (46, 0, ok, 46)
                ],
                "{arch:?}"
            );
            assert_eq!(sets[1].input, sets[2].input);
            assert_eq!(
                sets[2].input,
                [self_header(), writes[127..254].as_bytes().to_vec()].concat()
            );
            let last: BTreeMap<_, _> = writes.iter().map(|a| (a.name, a.value)).collect();
            let names: Vec<_> = last.keys().copied().collect();
            assert_eq!(get_all(hv, &names).unwrap(), expected(&names, &last));
        });
    }
}

/// A fast SetVpRegisters (arm64: header and up to 3 writes fit X2..X17) that comes back short
/// is continued fast, with the same register block.
#[test]
fn a_short_success_of_a_fast_set_is_continued() {
    let ok = HvStatus::SUCCESS;
    for arch in Arch::ALL {
        let scenario = Scenario {
            faults: faults_of(
                HypercallCode::SET_VP_REGISTERS,
                [(boot_sets(arch) + 1, FaultAction::ShortSuccess { reps: 1 })],
            ),
            ..Scenario::for_arch(arch)
        };
        run(scenario, &NestedTable::NONE, |hv, env| {
            let writes = assocs(3);
            assert_eq!(hv.set_vp_registers(VpTarget::SELF, &writes), Ok(()));
            let sets = env.calls_of(HypercallCode::SET_VP_REGISTERS);
            let shapes: Vec<_> = sets.iter().map(shape).collect();
            assert_eq!(shapes, [(3, 0, ok, 1), (3, 1, ok, 3)], "{arch:?}");
            for r in &sets {
                let fast = Control::from_bits(r.control).fast();
                assert_eq!(fast, arch == Arch::Aarch64, "{arch:?}");
                assert_eq!(
                    r.input,
                    [self_header(), writes.as_bytes().to_vec()].concat()
                );
            }
            let names: Vec<_> = writes.iter().map(|a| a.name).collect();
            let values: Vec<_> = writes.iter().map(|a| a.value).collect();
            assert_eq!(get_all(hv, &names).unwrap(), values);
        });
    }
}

/// A host whose per-call budget ends in SUCCESS rather than TIMEOUT: one rep per call.
#[test]
fn a_budget_ending_in_short_success_is_continued() {
    for arch in Arch::ALL {
        let mut scenario = Scenario::for_arch(arch);
        scenario.limits.max_reps_per_call = 1;
        scenario.limits.budget_end = BudgetEnd::ShortSuccess;
        run(scenario, &NestedTable::NONE, |hv, env| {
            let (names, expect) = known_registers(hv, 20);
            assert_eq!(get_all(hv, &names), Ok(expected(&names, &expect)));
            let gets = env.calls_of(HypercallCode::GET_VP_REGISTERS);
            let shapes: Vec<_> = gets.iter().map(shape).collect();
            let expect: Vec<_> = (0..20).map(|i| (20, i, HvStatus::SUCCESS, i + 1)).collect();
            assert_eq!(shapes, expect, "{arch:?}");

            let before = env.calls_of(HypercallCode::SET_VP_REGISTERS).len();
            hv.set_vp_registers(VpTarget::SELF, &assocs(3)).unwrap();
            let sets = env.calls_of(HypercallCode::SET_VP_REGISTERS)[before..].to_vec();
            let starts: Vec<_> = sets.iter().map(|r| shape(r).1).collect();
            assert_eq!(starts, [0, 1, 2], "{arch:?}");
        });
    }
}

/// A SUCCESS without progress is a broken host: a clear error naming the call, never a loop.
#[test]
fn a_short_success_without_progress_is_an_error_naming_the_call() {
    for arch in Arch::ALL {
        let never = (1..=100).map(|nth| (nth, FaultAction::ShortSuccess { reps: 0 }));
        let scenario = Scenario {
            faults: get_faults(never),
            ..Scenario::for_arch(arch)
        };
        run(scenario, &NestedTable::NONE, |hv, env| {
            let (names, _) = known_registers(hv, 20);
            let err = get_all(hv, &names).unwrap_err();
            let bad = Error::BadRepSuccess {
                code: HypercallCode::GET_VP_REGISTERS,
                start: 0,
                completed: 0,
                count: 20,
            };
            assert_eq!(err, bad, "{arch:?}");
            assert_eq!(
                err.to_string(),
                "GET_VP_REGISTERS: SUCCESS with reps completed 0 for reps 0..20"
            );
            let gets = env.calls_of(HypercallCode::GET_VP_REGISTERS);
            assert_eq!(gets.len(), 1, "{arch:?}: not re-issued");
        });

        // Progress first, then none: the error names where it stuck.
        let scenario = Scenario {
            faults: get_faults([
                (1, FaultAction::ShortSuccess { reps: 5 }),
                (2, FaultAction::ShortSuccess { reps: 0 }),
            ]),
            ..Scenario::for_arch(arch)
        };
        run(scenario, &NestedTable::NONE, |hv, env| {
            let (names, _) = known_registers(hv, 20);
            let bad = Error::BadRepSuccess {
                code: HypercallCode::GET_VP_REGISTERS,
                start: 5,
                completed: 5,
                count: 20,
            };
            assert_eq!(get_all(hv, &names), Err(bad), "{arch:?}");
            assert_eq!(env.calls_of(HypercallCode::GET_VP_REGISTERS).len(), 2);
        });
    }
}

/// Rewrites the reps completed of the `nth` (1-based) memory-based result the layer sees.
struct Rewrite {
    inner: ModelAbi,
    nth: u32,
    seen: u32,
    reps_completed: u16,
}

impl HypercallAbi for Rewrite {
    fn call(&mut self, control: u64, input: &Page, output: &mut Page) -> u64 {
        let result = self.inner.call(control, input, output);
        self.seen += 1;
        if self.seen != self.nth {
            return result;
        }
        HypercallOutput::from_bits(result)
            .with_reps_completed(self.reps_completed)
            .into_bits()
    }

    fn call_fast(&mut self, control: u64, regs: &mut [u64]) -> Option<u64> {
        self.inner.call_fast(control, regs)
    }
}

/// SUCCESS with reps completed beyond the count, or behind the rep start, is not a result the
/// layer can continue from: an error, with nothing re-issued.
#[test]
fn a_success_with_reps_completed_out_of_range_is_an_error() {
    // Memory-based calls before the test's GetVpRegisters: known_registers' one Set (arm64's
    // boot Set is fast).
    const BEFORE: u32 = 1;
    for arch in Arch::ALL {
        let cases = [
            // 21 of 20.
            (BEFORE + 1, 21, Vec::new(), 0),
            // The first call stops at 5, the second claims 3.
            (
                BEFORE + 2,
                3,
                get_faults([(1, FaultAction::ShortSuccess { reps: 5 })]),
                5,
            ),
        ];
        for (nth, reps_completed, faults, start) in cases {
            let scenario = Scenario {
                faults,
                ..Scenario::for_arch(arch)
            };
            let wrap = |inner| Rewrite {
                inner,
                nth,
                seen: 0,
                reps_completed,
            };
            run_with(scenario, &NestedTable::NONE, wrap, |hv, env| {
                let (names, _) = known_registers(hv, 20);
                let bad = Error::BadRepSuccess {
                    code: HypercallCode::GET_VP_REGISTERS,
                    start,
                    completed: reps_completed,
                    count: 20,
                };
                assert_eq!(get_all(hv, &names), Err(bad), "{arch:?}");
                let calls = env.calls_of(HypercallCode::GET_VP_REGISTERS).len() as u32;
                assert_eq!(calls, nth - BEFORE, "{arch:?}: nothing re-issued");
            });
        }
    }
}

/// TIMEOUT and short SUCCESS in one call: each resumes from reps completed, and progress by
/// either resets the no-progress bound.
#[test]
fn timeouts_and_short_successes_mix() {
    for (arch, reexecute) in Arch::ALL.into_iter().flat_map(|a| [(a, false), (a, true)]) {
        let scenario = Scenario {
            faults: get_faults([
                (1, FaultAction::Timeout { reps: 5 }),
                (2, FaultAction::ShortSuccess { reps: 5 }),
            ]),
            ..Scenario::for_arch(arch)
        };
        let wrap = |abi| ModelAbi { reexecute, ..abi };
        run_with(scenario, &NestedTable::NONE, wrap, |hv, env| {
            let (names, expect) = known_registers(hv, 20);
            assert_eq!(get_all(hv, &names), Ok(expected(&names, &expect)));
            let gets = env.calls_of(HypercallCode::GET_VP_REGISTERS);
            let shapes: Vec<_> = gets.iter().map(shape).collect();
            assert_eq!(
                shapes,
                [
                    (20, 0, HvStatus::TIMEOUT, 5),
                    (20, 5, HvStatus::SUCCESS, 10),
                    (20, 10, HvStatus::SUCCESS, 20)
                ],
                "{arch:?} re-executed {reexecute}"
            );
        });
    }
    // Stalled TIMEOUTs up to the bound, one short SUCCESS with progress, up to the bound again:
    // never more than MAX_STALLED_RETRIES in a row, so the call completes.
    let bound = MAX_STALLED_RETRIES;
    let stall = FaultAction::Timeout { reps: 0 };
    let faults = (1..=bound)
        .map(|nth| (nth, stall))
        .chain([(bound + 1, FaultAction::ShortSuccess { reps: 3 })])
        .chain((bound + 2..=2 * bound + 1).map(|nth| (nth, stall)));
    for arch in Arch::ALL {
        let scenario = Scenario {
            faults: get_faults(faults.clone()),
            ..Scenario::for_arch(arch)
        };
        run(scenario, &NestedTable::NONE, |hv, env| {
            let (names, expect) = known_registers(hv, 20);
            assert_eq!(get_all(hv, &names), Ok(expected(&names, &expect)));
            let gets = env.calls_of(HypercallCode::GET_VP_REGISTERS);
            assert_eq!(gets.len() as u32, 2 * bound + 2, "{arch:?}");
            assert_eq!(shape(&gets[bound as usize]), (20, 0, HvStatus::SUCCESS, 3));
            assert_eq!(shape(gets.last().unwrap()), (20, 3, HvStatus::SUCCESS, 20));
        });
    }
}

// ---- 3. Errors ---------------------------------------------------------------------------------

#[test]
fn hypervisor_errors_surface_and_oversized_calls_are_never_sent() {
    for arch in Arch::ALL {
        let scenario = Scenario {
            faults: get_faults([(2, FaultAction::Status(HvError::ACCESS_DENIED))]),
            ..Scenario::for_arch(arch)
        };
        run(scenario, &NestedTable::NONE, |hv, env| {
            // The second chunk fails: no third is sent.
            let (names, _) = known_registers(hv, 600);
            assert_eq!(get_all(hv, &names), Err(Error::Hv(HvError::ACCESS_DENIED)));
            let shapes: Vec<_> = env
                .calls_of(HypercallCode::GET_VP_REGISTERS)
                .iter()
                .map(shape)
                .collect();
            let denied = HvStatus::ACCESS_DENIED;
            assert_eq!(
                shapes,
                [(256, 0, HvStatus::SUCCESS, 256), (256, 0, denied, 0)]
            );

            let before = env.calls().len();
            let code = HypercallCode::POST_MESSAGE;
            let big = [0u8; PAGE_SIZE + 1];
            assert_eq!(
                hv.call(code, &big, &mut []),
                Err(Error::TooLarge { bytes: 4097 })
            );
            assert_eq!(
                hv.call(code, &[], &mut [0; PAGE_SIZE + 1]),
                Err(Error::TooLarge { bytes: 4097 })
            );
            let mut regs = vec![0; fast_words(arch) + 1];
            let bytes = regs.len() * 8;
            assert_eq!(
                hv.call_fast(HypercallCode::SIGNAL_EVENT, &mut regs),
                Err(Error::TooLarge { bytes })
            );
            assert_eq!(
                env.calls().len(),
                before,
                "refused calls reached the hypervisor"
            );
        });
    }
}

// ---- 4. The nested bit -------------------------------------------------------------------------

/// The calls a nested host's L0 owns: PostMessage and SignalEvent.
const NESTED_CODES: [u16; 2] = [0x5C, 0x5D];

fn host(arch: Arch, nested: bool) -> Scenario {
    Scenario {
        nested,
        ..Scenario::for_arch(arch)
    }
}

#[test]
fn nested_bit_on_exactly_the_tables_codes_of_all_64k() {
    for arch in Arch::ALL {
        for host_nested in [true, false] {
            let controls = Rc::new(RefCell::new(Vec::new()));
            let wrap = |inner| Recording {
                inner,
                controls: controls.clone(),
            };
            // The table is the firmware's decision from the model's indicator; the oracle
            // below is the scenario.
            run_decided(host(arch, host_nested), wrap, |hv, env| {
                let case = format!("{arch:?}, nested host {host_nested}");
                for code in 0..=u16::MAX {
                    let _ = hv.call(HypercallCode(code), &[], &mut []);
                }
                let controls = controls.borrow();
                assert_eq!(controls.len(), 0x10000);
                for (code, &control) in (0..=u16::MAX).zip(controls.iter()) {
                    let nested = host_nested && NESTED_CODES.contains(&code);
                    assert!(code < 0x8000 || !Control::from_bits(control).nested());
                    // Nothing but the code and, where the table says so, bit 31.
                    let expect = u64::from(code) | if nested { 1 << 31 } else { 0 };
                    assert_eq!(control, expect, "code {code:#x}, {case}");
                }
                // The model received exactly these control words.
                let forwarded: Vec<u64> = controls
                    .iter()
                    .copied()
                    .filter(|&c| !is_vtl_switch(c))
                    .collect();
                let seen: Vec<u64> = env.calls().iter().map(|r| r.control).collect();
                assert!(
                    seen == forwarded,
                    "{case}: the model saw other control words"
                );
            });
        }
    }
}

#[test]
fn the_indicator_is_read_once_after_the_guest_os_id() {
    for arch in Arch::ALL {
        for nested in [false, true] {
            let case = format!("{arch:?}, nested host {nested}");
            run_decided(
                host(arch, nested),
                |abi| abi,
                |_, env| {
                    let model = env.model.borrow();
                    let before: Vec<_> = model.trace().hypercalls().take(env.since).collect();
                    let leaf4 = model
                        .trace()
                        .cpuid_leaves()
                        .into_iter()
                        .filter(|&l| l == 0x4000_0004)
                        .count();
                    match arch {
                        Arch::X86_64 => {
                            assert!(before.is_empty(), "{case}: x86 needs no call for it");
                            assert_eq!(leaf4, 1, "{case}: CPUID 0x40000004 once");
                        }
                        Arch::Aarch64 => {
                            assert_eq!(leaf4, 0, "{case}");
                            let [os_id, read] = before[..] else {
                                panic!("{case}: {before:?}");
                            };
                            // Fast one-rep SetVpRegisters of HvRegisterGuestOsId, then a one-rep
                            // GetVpRegisters of HvRegisterFeaturesInfo; neither nested.
                            assert_eq!(os_id.control, 0x0000_0001_0001_0051, "{case}");
                            assert_eq!(os_id.input[16..20], 0x0009_0002u32.to_le_bytes());
                            assert_eq!(read.control, 0x0000_0001_0000_0050, "{case}");
                            assert_eq!(read.input[16..20], 0x0000_0201u32.to_le_bytes());
                            let value: u128 =
                                0xFFFF_FFFF_0000_0000 | if nested { 1 << 4 } else { 0 };
                            assert_eq!(read.output, value.to_le_bytes(), "{case}");
                        }
                    }
                },
            );
        }
    }
}

#[test]
fn an_l0_call_before_the_table_is_refused_not_sent_unmarked() {
    for arch in Arch::ALL {
        for code in [HypercallCode::POST_MESSAGE, HypercallCode::SIGNAL_EVENT] {
            let model = Rc::new(RefCell::new(Model::new(host(arch, true))));
            let abi = ModelAbi {
                model: model.clone(),
                vp: 0,
                arch,
                reexecute: false,
                executed: 0,
            };
            let (mut input, mut output) = (Box::new(Page::zeroed()), Box::new(Page::zeroed()));
            let mut hv = Hypercall::before_nested_table(abi, &mut input, &mut output);
            let sent = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let _ = hv.call(code, &[], &mut []);
            }));
            let message = sent.expect_err("refused with a panic");
            let text = message
                .downcast_ref::<String>()
                .map(String::as_str)
                .unwrap_or_default();
            assert!(
                text.contains("issued before the nested table was fixed"),
                "{arch:?} {code:?}: {text}"
            );
            let calls = model.borrow().trace().hypercalls().count();
            assert_eq!(
                calls, 0,
                "{arch:?} {code:?}: nothing reached the hypervisor"
            );
        }
    }
}

const CONNECTION: u32 = 1; // a port of the default scenario

fn post_message<A: HypercallAbi>(hv: &mut Hypercall<'_, A>, connection_id: u32) -> Result<()> {
    let mut payload = [0; HV_MESSAGE_PAYLOAD_SIZE];
    payload[..8].copy_from_slice(b"vmbus!!!");
    let message = HvInputPostMessage {
        connection_id,
        reserved: 0,
        message_type: HvMessageType(1),
        payload_size: 8,
        payload,
    };
    hv.call(HypercallCode::POST_MESSAGE, message.as_bytes(), &mut [])
}

fn signal_event<A: HypercallAbi>(hv: &mut Hypercall<'_, A>, connection_id: u32) -> Result<()> {
    let event = HvInputSignalEvent {
        connection_id,
        flag_number: 3,
        reserved: 0,
    };
    hv.call(HypercallCode::SIGNAL_EVENT, event.as_bytes(), &mut [])
}

#[test]
fn vmbus_calls_reach_the_host_only_with_the_right_nested_bit() {
    for arch in Arch::ALL {
        vmbus_calls_on(arch);
    }
}

fn vmbus_calls_on(arch: Arch) {
    let host = |nested| Scenario {
        nested,
        ports: BTreeMap::from([(CONNECTION, hvdef::Vtl::VTL0)]),
        ..Scenario::for_arch(arch)
    };
    let cases = [
        // Nested host, bit set: L0 takes them.
        (true, true, Ok(())),
        // Nested host, no bit: L1 does not know the connection.
        (true, false, Err(Error::Hv(HvError::INVALID_CONNECTION_ID))),
        // Flat host: the bit is invalid, the plain call works.
        (
            false,
            true,
            Err(Error::Hv(HvError::INVALID_HYPERCALL_INPUT)),
        ),
        (false, false, Ok(())),
    ];
    for (host_nested, table_nested, expect) in cases {
        let table = NestedTable::for_host(table_nested);
        run(host(host_nested), &table, |hv, env| {
            let case = format!("{arch:?}: host nested {host_nested}, table nested {table_nested}");
            assert_eq!(post_message(hv, CONNECTION), expect, "{case}");
            assert_eq!(signal_event(hv, CONNECTION), expect, "{case}");
            let calls = env.calls();
            assert_eq!(calls.len(), 2);
            for r in &calls {
                assert_eq!(
                    Control::from_bits(r.control).nested(),
                    table_nested,
                    "{case}"
                );
            }
            if expect.is_ok() {
                // The host checks the connection: success above is not unconditional.
                let unknown = Err(Error::Hv(HvError::INVALID_CONNECTION_ID));
                assert_eq!(post_message(hv, CONNECTION + 1), unknown, "{case}");
                assert_eq!(signal_event(hv, CONNECTION + 1), unknown, "{case}");
            }
        });
    }
}

// ---- 5. Extended capabilities ------------------------------------------------------------------

#[test]
fn extended_capabilities_come_from_the_host_and_are_never_nested() {
    let mask = HvExtendedCapabilities::new()
        .with_epf_setup(true)
        .with_memory_heat_hint_async(true);
    for arch in Arch::ALL {
        let scenario = Scenario {
            nested: true,
            extended_capabilities: mask,
            ..Scenario::for_arch(arch)
        };
        run_decided(
            scenario.clone(),
            |abi| abi,
            |hv, env| {
                assert_eq!(hv.query_extended_capabilities(), Ok(mask.into_bits()));
                let calls = env.calls_of(HypercallCode::EXT_QUERY_CAPABILITIES);
                assert_eq!(calls.len(), 1);
                assert_eq!(calls[0].control, 0x8001, "{arch:?}: plain control word");
                assert_eq!(calls[0].output, mask.into_bits().to_le_bytes());
            },
        );

        let mut unprivileged = scenario;
        unprivileged
            .privileges
            .set_enable_extended_hypercalls(false);
        run_decided(
            unprivileged,
            |abi| abi,
            |hv, _| {
                let denied = Err(Error::Hv(HvError::ACCESS_DENIED));
                assert_eq!(hv.query_extended_capabilities(), denied, "{arch:?}");
            },
        );
    }
}

// ---- 6. VSM ------------------------------------------------------------------------------------

#[test]
fn vsm_check_reads_the_models_status() {
    for arch in Arch::ALL {
        let at_vtl1 = Scenario {
            active_vtl: Vtl::VTL1,
            ..Scenario::for_arch(arch)
        };
        let no_vsm = Scenario {
            vsm: false,
            ..Scenario::for_arch(arch)
        };
        let cases = [
            (Scenario::for_arch(arch), Some((2, 0b101))),
            (at_vtl1, Some((1, 0b111))),
            (no_vsm, None),
        ];
        for (scenario, status) in cases {
            run(scenario, &NestedTable::NONE, |hv, env| {
                // What the partition holds, as the paravisor learns it on arm64.
                let info = hv
                    .get_vp_register(VpTarget::SELF, HvRegisterName::PRIVILEGES_AND_FEATURES_INFO);
                let privileges = HvPartitionPrivilegeMask::from_bits(info.unwrap().as_u64());
                let result = vsm::check_vp(hv, privileges, VpTarget::SELF, &[], &mut []);
                let reads = env.calls_of(HypercallCode::GET_VP_REGISTERS).len();
                match status {
                    None => {
                        assert_eq!(result, Err(VsmError::NoAccessVsm), "{arch:?}");
                        assert_eq!(reads, 1, "refused without reading the status");
                        // The model would indeed refuse the register.
                        let denied = Err(Error::Hv(HvError::ACCESS_DENIED));
                        let status =
                            hv.get_vp_register(VpTarget::SELF, HvRegisterName::VSM_VP_STATUS);
                        assert_eq!(status, denied);
                    }
                    Some((vtl, enabled)) => {
                        let status = match result {
                            Ok(me) => {
                                assert_eq!(vtl, 2, "{arch:?}");
                                assert_eq!(me.vp_index, 0, "{arch:?}: the VP index, same call");
                                me.status
                            }
                            Err(VsmError::WrongVtl { status }) => status,
                            Err(e) => panic!("{arch:?}: {e}"),
                        };
                        assert_eq!(status.active_vtl(), vtl, "{arch:?}");
                        assert_eq!(status.enabled_vtl_set(), enabled, "{arch:?}");
                        assert_eq!(reads, 2);
                    }
                }
            });
        }
    }
}

// ---- 7. Synthetic register mapping -------------------------------------------------------------

/// Every synthetic register with its x64 MSR and arm64 VP register (TLFS numbers).
fn synthetic_registers() -> Vec<(SyntheticRegister, HvX64Msr, Option<HvRegisterName>)> {
    use SyntheticRegister as S;
    type M = HvX64Msr;
    type N = HvRegisterName;
    let mut all = vec![
        (
            S::GuestOsId,
            M::HV_X64_MSR_GUEST_OS_ID,
            Some(N::GUEST_OS_ID),
        ),
        (S::Hypercall, M::HV_X64_MSR_HYPERCALL, None),
        (S::VpIndex, M::HV_X64_MSR_VP_INDEX, Some(N::VP_INDEX)),
        (S::VpRuntime, M::HV_X64_MSR_VP_RUNTIME, Some(N::VP_RUNTIME)),
        (
            S::TimeRefCount,
            M::HV_X64_MSR_TIME_REF_COUNT,
            Some(N::TIME_REF_COUNT),
        ),
        (
            S::ReferenceTsc,
            M::HV_X64_MSR_REFERENCE_TSC,
            Some(N::REFERENCE_TSC),
        ),
        (
            S::VpAssistPage,
            M::HV_X64_MSR_VP_ASSIST_PAGE,
            Some(N::VP_ASSIST_PAGE),
        ),
        (S::Scontrol, M::HV_X64_MSR_SCONTROL, Some(N::SCONTROL)),
        (S::Sversion, M::HV_X64_MSR_SVERSION, Some(N::SVERSION)),
        (S::Siefp, M::HV_X64_MSR_SIEFP, Some(N::SIEFP)),
        (S::Simp, M::HV_X64_MSR_SIMP, Some(N::SIMP)),
        (S::Eom, M::HV_X64_MSR_EOM, Some(N::EOM)),
    ];
    all.extend((0..16u8).map(|n| {
        let msr = HvX64Msr(M::HV_X64_MSR_SINT0.0 + u32::from(n));
        (
            S::Sint(n),
            msr,
            Some(HvRegisterName(N::SINT0.0 + u32::from(n))),
        )
    }));
    // A new variant must be added above: this match stops compiling until it is.
    for (reg, ..) in &all {
        match reg {
            S::GuestOsId
            | S::Hypercall
            | S::VpIndex
            | S::VpRuntime
            | S::TimeRefCount
            | S::ReferenceTsc
            | S::VpAssistPage
            | S::Scontrol
            | S::Sversion
            | S::Siefp
            | S::Simp
            | S::Eom
            | S::Sint(_) => {}
        }
    }
    all
}

#[test]
fn synthetic_registers_map_per_arch_and_exist_in_the_model() {
    for arch in Arch::ALL {
        run(Scenario::for_arch(arch), &NestedTable::NONE, |hv, env| {
            for (reg, msr, name) in synthetic_registers() {
                match arch {
                    Arch::X86_64 => {
                        assert_eq!(reg.msr(), Some(msr), "{reg:?}");
                        // The MSR and the VP register are one register in the model.
                        let by_msr = env.model.borrow_mut().rdmsr(0, msr.0);
                        let by_msr = by_msr.expect("synthetic").expect("readable");
                        let name = name.unwrap_or(x64_reg::HYPERCALL);
                        let by_call = hv.get_vp_register(VpTarget::SELF, name).unwrap();
                        let ticking = matches!(
                            reg,
                            SyntheticRegister::TimeRefCount | SyntheticRegister::VpRuntime
                        );
                        if !ticking {
                            assert_eq!(by_call.as_u64(), by_msr, "{reg:?}");
                        }
                    }
                    Arch::Aarch64 => {
                        assert_eq!(reg.vp_register(), name, "{reg:?}");
                        if let Some(name) = name {
                            let value = hv.get_vp_register(VpTarget::SELF, name);
                            assert!(value.is_ok(), "{reg:?}: {value:?}");
                        }
                    }
                }
            }
            assert_eq!(
                (
                    SyntheticRegister::Sint(16).msr(),
                    SyntheticRegister::Sint(16).vp_register()
                ),
                (None, None)
            );
            let read = |hv: &mut Hypercall<'_, ModelAbi>, reg: SyntheticRegister| {
                let name = reg.vp_register().unwrap();
                hv.get_vp_register(VpTarget::SELF, name).unwrap().as_u64()
            };
            assert_eq!(read(hv, SyntheticRegister::VpIndex), 0);
            assert_eq!(read(hv, SyntheticRegister::GuestOsId), guest_os_id());
            assert_eq!(
                read(hv, SyntheticRegister::Sversion),
                HV_SYNIC_VERSION_1.into()
            );
            if arch == Arch::Aarch64 {
                // No hypercall page on arm64: the model does not know the x64 register.
                let missing = hv.get_vp_register(VpTarget::SELF, x64_reg::HYPERCALL);
                assert_eq!(missing, Err(Error::Hv(HvError::INVALID_PARAMETER)));
            }
        });
    }
}

// ---- 8. Page discipline ------------------------------------------------------------------------

#[test]
fn every_memory_call_uses_the_two_pages() {
    for arch in Arch::ALL {
        let scenario = Scenario {
            faults: get_faults([(2, FaultAction::Timeout { reps: 3 })]),
            ..Scenario::for_arch(arch)
        };
        let (pages, calls) = run(scenario, &NestedTable::NONE, |hv, env| {
            let (names, _) = known_registers(hv, 600);
            get_all(hv, &names).unwrap();
            hv.set_vp_registers(VpTarget::SELF, &assocs(300)).unwrap();
            hv.query_extended_capabilities().unwrap();
            post_message(hv, CONNECTION).unwrap();
            (hv.page_gpas(), env.calls())
        });
        let memory = calls
            .iter()
            .filter(|r| !Control::from_bits(r.control).fast())
            .count();
        // 1 set + 4 gets (one re-issued) + 3 sets + caps + post.
        assert_eq!(memory, 10, "{arch:?}");
        assert_page_discipline(&calls, pages);
        let abi = match arch {
            Arch::X86_64 => Abi::X64,
            Arch::Aarch64 => Abi::Smccc,
        };
        assert!(calls.iter().all(|r| r.abi == abi), "{arch:?}");
    }
}

/// The proxy's relay paths: `relay` issues exactly the page `fill` wrote (and nothing when
/// `fill` refuses), `relay_fast` exactly the register block; both through the one issue path,
/// so a nested host's table still marks them.
#[test]
fn relays_send_exactly_what_was_filled() {
    for arch in Arch::ALL {
        for nested in [false, true] {
            let scenario = Scenario {
                nested,
                ..Scenario::for_arch(arch)
            };
            run(scenario, &NestedTable::for_host(nested), |hv, env| {
                let mut message = HvInputPostMessage::new_zeroed();
                (
                    message.connection_id,
                    message.message_type,
                    message.payload_size,
                ) = (CONNECTION, HvMessageType(1), 8);
                message.payload[..8].copy_from_slice(b"relayed!");
                let post = Control::new().with_code(HypercallCode::POST_MESSAGE);
                let out = hv.relay(post, |page| {
                    page[..256].copy_from_slice(message.as_bytes());
                    Ok::<(), HvStatus>(())
                });
                assert_eq!(out.map(|o| o.status()), Ok(HvStatus::SUCCESS), "{arch:?}");
                let refused = hv.relay(post, |_| Err(HvStatus::INVALID_CONNECTION_ID));
                assert_eq!(refused, Err(HvStatus::INVALID_CONNECTION_ID));
                let signal = Control::new()
                    .with_code(HypercallCode::SIGNAL_EVENT)
                    .with_fast(true);
                let mut block = [u64::from(CONNECTION) | 3 << 32];
                let out = hv.relay_fast(signal, &mut block).map(|o| o.status());
                assert_eq!(out, Some(HvStatus::SUCCESS), "{arch:?}");
                assert_eq!(
                    hv.relay_fast(signal, &mut [0; 17]),
                    None,
                    "beyond any ABI's block"
                );

                let posts = env.calls_of(HypercallCode::POST_MESSAGE);
                assert_eq!(posts.len(), 1, "{arch:?}: the refused fill issued nothing");
                assert_eq!(posts[0].input, message.as_bytes());
                let events = env.calls_of(HypercallCode::SIGNAL_EVENT);
                assert_eq!(events.len(), 1);
                assert_eq!(events[0].input, block[0].to_le_bytes());
                for call in [&posts[0], &events[0]] {
                    assert_eq!(
                        Control::from_bits(call.control).nested(),
                        nested,
                        "{arch:?}"
                    );
                }
            });
        }
    }
}

/// A simple call's input may fill the page exactly; one byte more is refused before anything is
/// issued, naming the size.
#[test]
fn a_simple_call_may_fill_exactly_one_page() {
    run(Scenario::default(), &NestedTable::NONE, |hv, env| {
        let unknown = HypercallCode(0x0077);
        assert_eq!(
            hv.call(unknown, &[0; PAGE_SIZE], &mut []),
            Err(Error::Hv(HvError::INVALID_HYPERCALL_CODE)),
            "issued: the host answered"
        );
        assert_eq!(
            hv.call(unknown, &[0; PAGE_SIZE + 1], &mut []),
            Err(Error::TooLarge {
                bytes: PAGE_SIZE + 1
            })
        );
        assert_eq!(
            env.calls_of(unknown).len(),
            1,
            "the oversized one was never sent"
        );
    });
}

/// VTL2's protection of its own pages: chunks of one input page (510 page numbers), every page
/// sent once in order, a host TIMEOUT continued from reps completed; the model then denies the
/// lower VTLs every page. A page the host refuses is named.
#[test]
fn protection_is_chunked_continued_and_names_the_refused_page() {
    for arch in Arch::ALL {
        let scenario = Scenario {
            ram: std::iter::once(0..1 << 40).collect(),
            faults: vec![InjectedFault {
                code: HypercallCode::MODIFY_VTL_PROTECTION_MASK,
                nth: 2,
                action: FaultAction::ReturnedTimeout { reps: 100 },
                filter: Default::default(),
            }],
            ..Scenario::for_arch(arch)
        };
        run(scenario, &NestedTable::for_host(false), |hv, env| {
            let config =
                hvdef::HvRegisterVsmPartitionConfig::new().with_enable_vtl_protection(true);
            hv.set_vp_register(
                VpTarget::SELF,
                HvRegisterName::VSM_PARTITION_CONFIG,
                config.into_bits().into(),
            )
            .unwrap();
            let pages = 0x100..0x100 + 1100;
            hv.modify_vtl_protection_mask(hvdef::HvMapGpaFlags::NO_ACCESS, pages.clone())
                .unwrap();
            let calls = env.calls_of(HypercallCode::MODIFY_VTL_PROTECTION_MASK);
            let shape: Vec<(u16, u16)> = calls
                .iter()
                .map(|c| {
                    let c = Control::from_bits(c.control);
                    (c.rep_start(), c.rep_count())
                })
                .collect();
            assert_eq!(shape, [(0, 510), (0, 510), (100, 510), (0, 80)], "{arch:?}");
            // The pages each issue completed, from its rep start: every page once, in order.
            let mut sent = Vec::new();
            for c in &calls {
                assert_eq!(c.input[..8], hvdef::HV_PARTITION_ID_SELF.to_le_bytes());
                assert_eq!(c.input[8..16], [0; 8], "no access, target current");
                let Outcome::Status(out) = c.outcome else {
                    panic!("{c:?}")
                };
                let from = usize::from(Control::from_bits(c.control).rep_start());
                let done = usize::from(out.reps_completed());
                sent.extend(
                    c.input[16 + from * 8..16 + done * 8]
                        .chunks_exact(8)
                        .map(|b| u64::from_le_bytes(b.try_into().unwrap())),
                );
            }
            assert_eq!(sent, pages.clone().collect::<Vec<_>>(), "{arch:?}");
            let model = env.model.borrow();
            for page in pages.clone() {
                assert_eq!(
                    model.lower_vtl_access(page << 12),
                    hvdef::HvMapGpaFlags::NO_ACCESS,
                    "{arch:?}: page {page:#x}"
                );
            }
            assert_eq!(
                model.lower_vtl_access(pages.end << 12),
                hvdef::HvMapGpaFlags::ALL_ACCESS
            );
            drop(model);
            let beyond = (1u64 << 40 >> 12) - 2..(1u64 << 40 >> 12) + 3;
            assert_eq!(
                hv.modify_vtl_protection_mask(hvdef::HvMapGpaFlags::NO_ACCESS, beyond.clone()),
                Err((beyond.start + 2, Error::Hv(HvError::INVALID_PARAMETER))),
                "{arch:?}: the first page without RAM"
            );
        });
    }
}
