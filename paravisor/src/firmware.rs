//! Firmware start-up on bare metal: console logger, banner, options, panic, exit.

use crate::hypercall::NestedTable;
use crate::options::{Options, TestFailure};
use crate::{arch, hv, percpu, vsm};
use boot::{BootInfo, ExitCode};
use core::fmt::Write;
use hvdef::{HvRegisterVpAssistPage, SyntheticRegister};

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
            log::error!(
                "bad option {}={:?}: expected {}",
                bad.key,
                bad.value,
                bad.expected
            );
            exit(ExitCode::Failure)
        }
    };
    log::set_max_level(options.log_level);
    log::info!("command line {:?}, {} VP(s)", info.cmdline(), info.vp_count);
    match options.test_failure {
        Some(TestFailure::Panic) => panic!("pv.test=panic asked for a panic"),
        Some(TestFailure::Fault) => {
            // Far outside the identity map on both arches, so the load faults.
            let unmapped = 0x10_0000_0000usize as *const u64;
            // SAFETY: deliberately faults; the exception handler ends the run.
            let _ = unsafe { core::ptr::read_volatile(unmapped) };
            log::error!("pv.test=fault: the load from {unmapped:p} did not fault");
            exit(ExitCode::Failure)
        }
        None => {}
    }
    bring_up()
}

/// Logs `what` as the reason the boot cannot go on, and fails the run.
fn fail(what: core::fmt::Arguments<'_>) -> ! {
    log::error!("{what}");
    exit(ExitCode::Failure)
}

/// Finds the hypervisor, enables hypercalls and checks we run at VTL2.
fn bring_up() -> ! {
    let nested =
        arch::detect().unwrap_or_else(|e| fail(format_args!("no Hyper-V interface found: {e}")));
    let table = percpu::set_nested_table(NestedTable::for_host(nested));
    percpu::init(0);
    arch::enable_hypercalls(hv::guest_os_id()).unwrap_or_else(|e| fail(format_args!("{e}")));
    let privileges = arch::privileges()
        .unwrap_or_else(|e| fail(format_args!("reading the partition privileges failed: {e}")));
    log::info!(
        "Hyper-V found: privileges {:#x}, nested host: {nested} ({} call codes get the nested bit)",
        privileges.into_bits(),
        table.count()
    );
    let status = {
        let mut hv = percpu::hypercall();
        let (input, output) = hv.page_gpas();
        log::info!("hypercall pages: input {input:#x}, output {output:#x}");
        vsm::check_vp(&mut hv, privileges).unwrap_or_else(|e| fail(format_args!("{e}")))
    };
    log::info!(
        "running at VTL{} (enabled VTL set {:#x})",
        status.active_vtl(),
        status.enabled_vtl_set()
    );
    let vp_index = arch::read_synthetic(SyntheticRegister::VpIndex)
        .unwrap_or_else(|e| fail(format_args!("reading the VP index failed: {e}")));
    if vp_index != boot::cpu::index() as u64 {
        fail(format_args!(
            "the hypervisor says this is VP {vp_index}, boot started it as VP {}",
            boot::cpu::index()
        ));
    }
    let assist = HvRegisterVpAssistPage::new()
        .with_enable(true)
        .with_gpa_page_number(percpu::assist_page_gpa() >> 12);
    arch::write_synthetic(SyntheticRegister::VpAssistPage, assist.into_bits())
        .unwrap_or_else(|e| fail(format_args!("enabling the VP assist page failed: {e}")));
    exit(ExitCode::Success)
}

/// Entry of every other VP from `boot`.
pub fn start_ap(vp_index: u32) -> ! {
    log::info!("VP {vp_index} started");
    boot::arch::halt()
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
        boot::cpu::index(),
        info.message()
    );
    if let Some(loc) = info.location() {
        let _ = write!(Emergency, " at {}:{}", loc.file(), loc.line());
    }
    let _ = writeln!(Emergency);
    boot::arch::exit(ExitCode::Failure)
}
