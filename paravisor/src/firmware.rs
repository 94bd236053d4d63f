//! Firmware start-up on bare metal: console logger, banner, options, panic, exit.
#![expect(unsafe_code, reason = "pv.test=fault makes its fault with a raw load")]

use crate::hypercall::NestedTable;
use crate::hypercall::{self, VpTarget};
use crate::options::{Options, TestFailure};
use crate::proxy::Vtl0Memory;
use crate::{arch, detect, percpu, runloop, synthetic, vsm};
use boot::{BootInfo, ExitCode};
use core::fmt::Write;
use core::sync::atomic::{AtomicU32, Ordering};
use hvdef::{
    HvError, HvInputInstallIntercept, HvInterceptAccessMask, HvInterceptType,
    HvPartitionPrivilegeMask, HvRegisterName, HvRegisterValue, HvRegisterVpAssistPage,
    HvRegisterVsmPartitionConfig, HypercallCode, SyntheticRegister, HV_PARTITION_ID_SELF,
};
use spin::Once;
use zerocopy::IntoBytes;

const ARCH: &str = if cfg!(target_arch = "x86_64") {
    "x86_64"
} else {
    "aarch64"
};

struct ConsoleLogger;

impl log::Log for ConsoleLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        boot::console::write_fmt(format_args!(
            "[vp{}] {:<5} {}\n",
            boot::cpu::index(),
            record.level(),
            record.args()
        ));
    }

    fn flush(&self) {}
}

static LOGGER: ConsoleLogger = ConsoleLogger;

/// Ends the run with a console line saying how.
pub fn exit(code: ExitCode) -> ! {
    match code {
        ExitCode::Success => log::info!("exiting: success"),
        ExitCode::Failure => log::error!("exiting: failure"),
    }
    boot::arch::exit(code)
}

/// The boot VP's entry from `boot`.
pub fn start(info: &BootInfo) -> ! {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Info);
    boot::println!(
        "paravisor {} ({ARCH}, {})",
        env!("CARGO_PKG_VERSION"),
        info.entry.describe()
    );
    let options = match Options::parse(info.cmdline()) {
        Ok(options) => options,
        Err(bad) => {
            log::error!("{bad}");
            exit(ExitCode::Failure)
        }
    };
    log::set_max_level(options.log_level);
    log::info!("command line {:?}, {} VP(s)", info.cmdline(), info.vp_count);
    match options.test_failure {
        Some(TestFailure::Panic) => panic!("pv.test=panic asked for a panic"),
        Some(TestFailure::Fault) => {
            // Outside the static identity map (the low 4 GiB; RAM above is mapped later, in
            // bring_up), so the load faults on both arches whatever the RAM size.
            let unmapped = 0x10_0000_0000usize as *const u64;
            // SAFETY: deliberately faults; the exception handler ends the run.
            let _ = unsafe { core::ptr::read_volatile(unmapped) };
            log::error!("pv.test=fault: the load from {unmapped:p} did not fault");
            exit(ExitCode::Failure)
        }
        None => {}
    }
    bring_up(info, &options)
}

/// Logs `what` as the reason the boot cannot go on, and fails the run.
fn fail(what: core::fmt::Arguments<'_>) -> ! {
    log::error!("{what}");
    exit(ExitCode::Failure)
}

/// The partition's privileges, read once by the boot VP.
static PRIVILEGES: Once<HvPartitionPrivilegeMask> = Once::new();
/// How many VPs finished their bring-up (each also sets its `online` flag).
static ONLINE: AtomicU32 = AtomicU32::new(0);
/// How long the boot VP waits for the next of the others to come up, in seconds (at least;
/// see `ticks_per_second`): a wait for progress, so that it holds for any VP count.
const VP_START_TIMEOUT_S: u64 = 10;

/// Finds the hypervisor, enables hypercalls, checks every VP runs at VTL2.
fn bring_up(info: &BootInfo, options: &Options) -> ! {
    let bench_hypercalls = options.bench_hypercalls;
    let vp_count = info.vp_count;
    synthetic::detect().unwrap_or_else(|e| fail(format_args!("no Hyper-V interface found: {e}")));
    percpu::alloc(vp_count);
    percpu::init(0);
    synthetic::enable_hypercalls(detect::guest_os_id())
        .unwrap_or_else(|e| fail(format_args!("{e}")));
    // The nested table, once, from the arch's indicator; fixed before any call it could mark
    // (arm64's guest OS id and indicator read go out before it, and no table marks them).
    let nested = synthetic::nested_host().unwrap_or_else(|e| {
        fail(format_args!(
            "reading the nested-host indicator ({}) failed: {e}",
            arch::NESTED_INDICATOR
        ))
    });
    let table = percpu::set_nested_table(NestedTable::for_host(nested));
    let privileges = *PRIVILEGES.call_once(|| {
        synthetic::privileges()
            .unwrap_or_else(|e| fail(format_args!("reading the partition privileges failed: {e}")))
    });
    log::info!(
        "Hyper-V found: privileges {:#x}, nested host: {nested} ({}; {} call codes get the nested bit)",
        privileges.into_bits(),
        arch::NESTED_INDICATOR,
        table.count()
    );
    vp_init(0, &mut []);
    let vsm = vsm::partition(&mut percpu::hypercall()).unwrap_or_else(|e| {
        fail(format_args!(
            "reading the VSM partition registers failed: {e}"
        ))
    });
    log::info!(
        "VSM: maximum VTL {}, enabled VTL set {:#x}, intercept page available: {}",
        vsm.status.maximum_vtl(),
        vsm.status.enabled_vtl_set(),
        vsm.capabilities.intercept_page_available()
    );
    // Before the other VPs start: they run on the same tables.
    let ram = arch::map_ram(info.ram());
    log::info!(
        "identity map: RAM below {:#x} is mappable (address width), {} table page(s) added",
        ram.limit,
        ram.tables_used
    );
    start_aps(vp_count);
    let timeout = VP_START_TIMEOUT_S * boot::arch::ticks_per_second();
    let mut deadline = boot::arch::now_ticks() + timeout;
    let mut online = ONLINE.load(Ordering::Acquire);
    while online != vp_count {
        let now_online = ONLINE.load(Ordering::Acquire);
        if now_online != online {
            online = now_online;
            deadline = boot::arch::now_ticks() + timeout;
        } else if boot::arch::now_ticks() > deadline {
            let missing = (0..vp_count)
                .filter(|&vp| percpu::flags(vp).is_some_and(|f| !f.online.load(Ordering::Acquire)));
            let count = missing.clone().count();
            fail(format_args!(
                "{count} VP(s) did not come up, none for {VP_START_TIMEOUT_S} s, the first: {}",
                FirstFew(missing)
            ));
        }
        core::hint::spin_loop();
    }
    log::info!("all {vp_count} VP(s) run at VTL2");
    let (used, free) = boot::heap::usage();
    log::info!(
        "VTL2 heap: {used} bytes used, {free} free ({} bytes of per-VP state each)",
        percpu::BYTES_PER_VP + boot::AP_STACK_SIZE
    );
    if bench_hypercalls > 0 {
        let mut hv = percpu::hypercall();
        for _ in 0..bench_hypercalls {
            hv.get_vp_register(VpTarget::SELF, HvRegisterName::VP_INDEX)
                .unwrap_or_else(|e| fail(format_args!("benchmark hypercall failed: {e}")));
        }
        log::info!("benchmark: {bench_hypercalls} hypercalls issued");
        exit(ExitCode::Success)
    }
    start_proxy(ram, options, privileges, &vsm);
    runloop::run(None)
}

/// Up to eight VP indices, comma-separated.
struct FirstFew<I>(I);

impl<I: Iterator<Item = u32> + Clone> core::fmt::Display for FirstFew<I> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (n, vp) in self.0.clone().take(8).enumerate() {
            if n != 0 {
                f.write_str(", ")?;
            }
            write!(f, "VP {vp}")?;
        }
        Ok(())
    }
}

/// The intercepts the proxy relies on, as OpenHCL installs them for a hypervisor-backed VM
/// (execute access, no parameter): Hyper-V then reflects VTL0's PostMessage / SignalEvent to a
/// connection it does not know, and RetargetDeviceInterrupt for a device it does not know, to
/// VTL2 (fact sheet §2.1; OpenVMM `vmm_core/virt_whp/src/hypercalls.rs`). Never
/// HvInterceptTypeHypercall: OpenHCL does not install it and OpenVMM refuses it.
///
/// OpenHCL installs RetargetInterruptWithUnknownDeviceId on x64 only; asking for it on arm64 too
/// is this paravisor's choice (OpenHCL's arm64 dispatcher does serve RetargetDeviceInterrupt, so
/// the call reaches VTL2 there somehow); a host that refuses it costs one line.
const PROXY_INTERCEPTS: [(HvInterceptType, &str); 2] = [
    (
        HvInterceptType::UNKNOWN_SYNIC_CONNECTION,
        "UnknownSynicConnection: VTL0's PostMessage/SignalEvent to unknown connections",
    ),
    (
        HvInterceptType::RETARGET_INTERRUPT_WITH_UNKNOWN_DEVICE_ID,
        "RetargetInterruptWithUnknownDeviceId: VTL0's RetargetDeviceInterrupt for unknown devices",
    ),
];

/// Asks for the VTL0 hypercalls the proxy relays, fixes what every VP's run loop needs, and
/// lets the other VPs into theirs.
fn start_proxy(
    ram: &boot::paging::MappedRam,
    options: &Options,
    privileges: HvPartitionPrivilegeMask,
    vsm: &vsm::VsmPartition,
) {
    synthetic::init_vtl_switch()
        .unwrap_or_else(|e| fail(format_args!("reading the VTL switch code failed: {e}")));
    if !vsm.capabilities.intercept_page_available() {
        // Intercepts would then arrive in SINT0 with an interrupt the paravisor cannot take
        // (it has no interrupt handling), and a VtlReturn with that interrupt pending comes
        // straight back (TLFS vsm.md): VTL0 would never run. Refuse instead of spinning.
        fail(format_args!(
            "VsmCapabilities.intercept_page_available is clear: this paravisor takes VTL0's \
             intercepts only through the VP assist page's intercept page (SINT0 delivery needs \
             interrupt handling it does not have)"
        ));
    }
    let mut hv = percpu::hypercall();
    for (intercept_type, what) in PROXY_INTERCEPTS {
        let intercept = HvInputInstallIntercept {
            partition_id: HV_PARTITION_ID_SELF,
            access_type: HvInterceptAccessMask::new().with_execute(true),
            intercept_type,
            intercept_parameter: 0,
        };
        // A host without it keeps those calls to itself: VTL0 gets the hypervisor's own
        // answer, which is what the relay would have given for ids it does not map.
        match hv.call(
            HypercallCode::INSTALL_INTERCEPT,
            intercept.as_bytes(),
            &mut [],
        ) {
            Ok(()) => log::info!("intercept installed: {what}"),
            Err(e) => log::warn!("the host refused the {what} intercept ({e}); not relayed"),
        }
    }
    let config = VSM_PARTITION_CONFIG.into_bits();
    hv.set_vp_register(
        VpTarget::SELF,
        HvRegisterName::VSM_PARTITION_CONFIG,
        config.into(),
    )
    .unwrap_or_else(|e| {
        fail(format_args!(
            "writing VsmPartitionConfig {config:#x} failed: {e}"
        ))
    });
    log::info!("VsmPartitionConfig {config:#x}");
    protect_vtl2_memory(&mut hv);
    start_vtl0_from_igvm(&mut hv, ram);
    let host_ext_mask = if privileges.enable_extended_hypercalls() {
        hv.query_extended_capabilities().unwrap_or_else(|e| {
            fail(format_args!(
                "querying the extended capabilities failed: {e}"
            ))
        })
    } else {
        0
    };
    drop(hv);
    // SAFETY: `ram.mapped()` is exactly the RAM boot's tables identity-map as Normal memory,
    // and VTL2's memory (the image, its heap, every Rust object) is excluded: what remains is
    // VTL0's, which no Rust reference points into.
    let vtl0 = unsafe { Vtl0Memory::mapped(ram.mapped(), boot::vtl2_memory()) };
    for range in vtl0.ranges() {
        log::info!("VTL0 memory {:#x}..{:#x}", range.start, range.end);
    }
    for (part, why) in ram.unmapped() {
        log::warn!(
            "RAM {:#x}..{:#x} is not mapped by the paravisor ({why}): VTL0 buffers there are \
             refused (ACCESS_DENIED)",
            part.start,
            part.end
        );
    }
    log::info!("host extended capabilities {host_ext_mask:#x}; proxying VTL0 hypercalls");
    for (vtl0_id, host_id) in options.relay.connections() {
        log::info!("relay: VTL0 connection {vtl0_id:#x} -> host connection {host_id:#x}");
    }
    for device in options.relay.devices() {
        log::info!("relay: VTL0 owns device {device:#x}");
    }
    runloop::configure(runloop::Config {
        vtl0,
        xmm_fast_input: arch::xmm_fast_input(),
        relay: options.relay,
        privileges,
        register_page: options.register_page && arch::HAS_REGISTER_PAGE,
    });
}

/// Takes every page of VTL2's memory (the image: code, data, BSS with VP 0's stack and the
/// page tables, the IGVM parameter pages, the VTL0 boot page; and the heap after it: every AP's
/// stack and per-CPU record, every VP's hypercall and assist pages) from VTL0 before VTL0 first
/// runs, as OpenHCL's `underhill_mem` `apply_vtl2_protections` does for its VTL2 ranges on a
/// hypervisor-backed VM: no access, target VTL "current" (VTL2's protections on the lower
/// VTLs). EnableVtlProtection is set just before. Failing is fatal: VTL0 must never run with
/// VTL2's memory open to it.
fn protect_vtl2_memory<A: hypercall::HypercallAbi>(hv: &mut hypercall::Hypercall<'_, A>) {
    let image = boot::vtl2_memory();
    let pages = image.start >> 12..image.end.div_ceil(4096);
    let count = pages.end - pages.start;
    hv.modify_vtl_protection_mask(hvdef::HvMapGpaFlags::NO_ACCESS, pages)
        .unwrap_or_else(|(page, e)| {
            fail(format_args!(
                "protecting VTL2's memory {:#x}..{:#x} from VTL0 failed at GPA {:#x}: {e}",
                image.start,
                image.end,
                page << 12
            ))
        });
    log::info!(
        "VTL2 memory {:#x}..{:#x} ({count} pages) protected from VTL0",
        image.start,
        image.end
    );
}

/// Sets VTL0's initial registers on the boot VP from the IGVM file's VTL0 context (the VTL0
/// boot page, `paravisor::vtl0_boot`) before VTL0 first runs, as OpenHCL starts VTL0 from its
/// file's VTL0 context: one SetVpRegisters, target VTL0, through the shared register path. An
/// empty page is no payload: VTL0 then runs with the state the host gave it. A malformed page,
/// or a host that refuses the registers, fails the boot: VTL0 must not start from a state
/// nobody chose. The page is in the image, so VTL0 (which has not run yet) cannot have
/// written it, and it is protected from VTL0 by now.
fn start_vtl0_from_igvm<A: hypercall::HypercallAbi>(
    hv: &mut hypercall::Hypercall<'_, A>,
    ram: &boot::paging::MappedRam,
) {
    let page = boot::vtl0_boot::read_page();
    let gpa = boot::vtl0_boot::page_gpa();
    // Reported RAM, mapped by the paravisor or not: VTL0 runs on the hypervisor's mappings.
    let in_ram = |a: u64| {
        ram.mapped().iter().any(|r| r.contains(&a))
            || ram.unmapped().iter().any(|(r, _)| r.contains(&a))
    };
    let arch = crate::vtl0_boot::Arch::NATIVE;
    match crate::vtl0_boot::parse(&page, arch, boot::vtl2_memory(), in_ram) {
        Ok(None) => log::info!(
            "VTL0 has no payload (the IGVM file's VTL0 boot page is empty): VTL0 runs with \
             whatever state the host gave it"
        ),
        Err(e) => fail(format_args!(
            "the VTL0 boot page at {gpa:#x} is malformed: {e}; not starting VTL0"
        )),
        Ok(Some(context)) => {
            let (registers, n) = context.registers();
            hv.set_vp_registers(VpTarget::VTL0, &registers[..n])
                .unwrap_or_else(|e| {
                    fail(format_args!(
                        "setting VTL0's {n} initial registers from the IGVM's VTL0 context \
                         failed: {e}"
                    ))
                });
            log::info!(
                "VTL0 starts at {:#x} from the IGVM's VTL0 context",
                context.entry()
            );
        }
    }
}

/// VTL2's VsmPartitionConfig, after what OpenHCL writes for a hypervisor-backed VM
/// (`openhcl/virt_mshv_vtl` `set_vtl2_vsm_partition_config`; fact sheet §5.2):
/// - EnableVtlProtection with DefaultVtlProtectionMask RWX (0xF): VTL2 may protect its own
///   memory from VTL0 (write-once, so the value is final);
/// - ZeroMemoryOnReset: a partition reset cannot hand VTL2's memory to a lower VTL (the TLFS
///   default, which writing only other bits would clear);
/// - the intercept page (required, see `start_proxy`).
///
/// Left clear, each on purpose: InterceptUnrecoverableException (OpenHCL sets it and resets or
/// crashes the VM through its host channel; this paravisor has no way to reset the partition
/// yet, and stopping one VP while the others keep running VTL0 is worse than the partition reset
/// the hypervisor does without it), InterceptVpStartup (OpenHCL never sets it; VTL0's own SIPIs
/// are the hypervisor's), InterceptCpuidUnimplemented, InterceptNotPresent, InterceptSystemReset
/// and InterceptRestorePartitionTime (OpenHCL sets them because it emulates CPUID, MMIO, reset
/// and time; this paravisor has no handler, so VTL0 would hang on the intercept),
/// DenyLowerVtlStartup (neither OpenHCL nor Linux sets it).
const VSM_PARTITION_CONFIG: HvRegisterVsmPartitionConfig = HvRegisterVsmPartitionConfig::new()
    .with_enable_vtl_protection(true)
    .with_default_vtl_protection_mask(hvdef::HvMapGpaFlags::ALL_ACCESS.into_bits() as u8)
    .with_zero_memory_on_reset(true)
    .with_intercept_page(true);

/// Starts VPs 1.. at VTL2 in boot's AP entry: VTL2 must first be enabled on each (HvCallEnableVpVtl),
/// then the VP started (HvCallStartVirtualProcessor), as the TLFS requires once a higher VTL is
/// enabled.
fn start_aps(vp_count: u32) {
    let mut hv = percpu::hypercall();
    for vp in 1..vp_count {
        let input = arch::vp_start_input(vp, vsm::PARAVISOR_VTL);
        match hv.call(HypercallCode::ENABLE_VP_VTL, input.as_bytes(), &mut []) {
            Ok(()) | Err(hypercall::Error::Hv(HvError::VTL_ALREADY_ENABLED)) => {}
            Err(e) => fail(format_args!("enabling VTL2 on VP {vp} failed: {e}")),
        }
        hv.call(
            HypercallCode::START_VIRTUAL_PROCESSOR,
            input.as_bytes(),
            &mut [],
        )
        .unwrap_or_else(|e| fail(format_args!("starting VP {vp} failed: {e}")));
    }
}

/// What every VP does for itself once hypercalls work: prove VTL2 through its own hypercall
/// pages and check its VP index, reading both (and, for an AP, VTL0's entry registers into
/// `vtl0_values`) in one GetVpRegisters; enable its VP assist page.
fn vp_init(vp: u32, vtl0_values: &mut [HvRegisterValue]) {
    let privileges = *PRIVILEGES.get().expect("the boot VP read the privileges");
    let (target, names) = if vtl0_values.is_empty() {
        (VpTarget::SELF, &[][..])
    } else {
        (VpTarget::VTL0, &arch::Vtl0Registers::NAMES[..])
    };
    let me = {
        let mut hv = percpu::hypercall();
        let (input, output) = hv.page_gpas();
        log::info!("hypercall pages: input {input:#x}, output {output:#x}");
        vsm::check_vp(&mut hv, privileges, target, names, vtl0_values)
            .unwrap_or_else(|e| fail(format_args!("{e}")))
    };
    log::info!(
        "running at VTL{} (enabled VTL set {:#x})",
        me.status.active_vtl(),
        me.status.enabled_vtl_set()
    );
    if me.vp_index != u64::from(vp) {
        fail(format_args!(
            "the hypervisor says this is VP {}, boot started it as VP {vp}",
            me.vp_index
        ));
    }
    let assist = HvRegisterVpAssistPage::new()
        .with_enable(true)
        .with_gpa_page_number(percpu::assist_page_gpa() >> 12);
    synthetic::write(SyntheticRegister::VpAssistPage, assist.into_bits())
        .unwrap_or_else(|e| fail(format_args!("enabling the VP assist page failed: {e}")));
    if let Some(flags) = percpu::flags(vp) {
        flags.online.store(true, Ordering::Release);
    }
    runloop::report_stack(log::Level::Info);
    ONLINE.fetch_add(1, Ordering::Release);
}

/// Entry of every other VP from `boot`. VTL0's entry registers come with the bring-up's one
/// GetVpRegisters: nothing sets an AP's VTL0 state before its first return to VTL0.
pub fn start_ap(vp_index: u32) -> ! {
    percpu::init(vp_index);
    let mut vtl0 = [HvRegisterValue::from(0u64); arch::Vtl0Registers::NAMES.len()];
    vp_init(vp_index, &mut vtl0);
    runloop::wait_configured();
    runloop::run(Some(arch::Vtl0Registers::from_values(&vtl0)))
}

/// The panic handler's body: CPU, message and location, then a failure exit.
pub fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    struct Emergency;
    impl Write for Emergency {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            boot::console::write_fmt_emergency(format_args!("{s}"));
            Ok(())
        }
    }
    let _ = write!(
        Emergency,
        "\nPANIC on cpu {}: {}",
        boot::cpu::index_for_report(),
        info.message()
    );
    if let Some(loc) = info.location() {
        let _ = write!(Emergency, " at {}:{}", loc.file(), loc.line());
    }
    let _ = writeln!(Emergency);
    boot::arch::exit(ExitCode::Failure)
}
