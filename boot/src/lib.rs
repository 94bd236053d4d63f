//! Boot code: entry points, early page tables, stacks, BSS, traps and the early console.
//!
//! The arch entry code (`arch/<isa>/entry.rs`) runs first, zeroes BSS, switches to the boot
//! stack and calls into the arch `*_main`, which fills a [`BootInfo`] and calls the function the
//! firmware registered with [`entry!`]. Everything outside `arch/`, `console`, `stacks`, `tables`
//! and the entry glue in this file is plain logic that also builds and tests on the host.
#![cfg_attr(target_os = "none", no_std)]

extern crate alloc;

pub mod acpi;
pub mod cmdline;
pub mod fdt;
pub mod guest;
pub mod heap;
pub mod igvm;
pub mod loader;
pub mod paging;
pub mod reloc;
pub mod vtl0_boot;

#[cfg(target_os = "none")]
pub mod arch;
#[cfg(target_os = "none")]
pub mod console;
pub mod cpu;
#[cfg(target_os = "none")]
pub mod stacks;
#[cfg(target_os = "none")]
mod tables;

pub use heap::VP_LIMIT;
/// VP 0's stack, in BSS: the boot path (the IGVM parameter copy, the VTL0 boot page) runs on
/// it. Measured high-water marks and the margin: docs/ARCHITECTURE.md, "Memory".
pub const BOOT_STACK_SIZE: usize = 64 * 1024;
/// Each AP's stack, on the heap. Measured high-water marks and the margin:
/// docs/ARCHITECTURE.md, "Memory".
pub const AP_STACK_SIZE: usize = 12 * 1024;
/// Most RAM ranges kept from the loader's memory map.
pub const RAM_RANGES_MAX: usize = 16;

/// Most VTL2 memory ranges kept from the loader's memory map (the IGVM file declares one).
pub const VTL2_RANGES_MAX: usize = 4;

/// Longest kernel command line kept; longer ones are truncated with a console warning.
pub const CMDLINE_MAX: usize = 512;

/// How the image was entered, for the banner and for decisions that depend on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryMode {
    /// x86_64: QEMU's PVH entry (32-bit protected mode, start info in `ebx`).
    Pvh,
    /// x86_64: the 64-bit entry an IGVM VP context targets (long mode, paging on).
    LongMode,
    /// aarch64: entered at EL1.
    El1,
    /// aarch64: entered at EL2 and dropped to EL1 by the boot code.
    El2DroppedToEl1,
}

impl EntryMode {
    pub fn describe(self) -> &'static str {
        match self {
            EntryMode::Pvh => "long mode, CPL0 (entered through PVH)",
            EntryMode::LongMode => "long mode, CPL0 (entered in 64-bit mode)",
            EntryMode::El1 => "EL1 (entered at EL1)",
            EntryMode::El2DroppedToEl1 => "EL1 (entered at EL2, dropped to EL1)",
        }
    }
}

/// What [`BootInfo::set_vp_count`] did with a listed count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VpCount {
    Used,
    /// 0 listed: the count stays as it was.
    Ignored,
    /// More than [`VP_LIMIT`] listed: `VP_LIMIT` used, with [`AboveLimit`]'s line.
    AboveLimit {
        listed: usize,
    },
}

/// The console line for a loader that lists more VPs than a partition can have: the count, the
/// limit, and what the paravisor does with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AboveLimit {
    /// Where the count came from ("the ACPI MADT", "the device tree", "the IGVM VpCount
    /// parameter").
    pub source: &'static str,
    pub listed: u64,
}

impl core::fmt::Display for AboveLimit {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "boot: {} lists {} VPs, more than the TLFS limit of {VP_LIMIT} \
             (HV_MAXIMUM_PROCESSORS); the paravisor serves VPs 0..{} and starts no others",
            self.source,
            self.listed,
            VP_LIMIT - 1
        )
    }
}

/// What the loader told us, copied out of loader-owned memory and validated.
#[derive(Clone, Debug)]
pub struct BootInfo {
    pub entry: EntryMode,
    /// Number of VPs the loader describes (PVH/ACPI, device tree, IGVM); at least 1.
    pub vp_count: u32,
    cmdline: [u8; CMDLINE_MAX],
    cmdline_len: usize,
    ram: [core::ops::Range<u64>; RAM_RANGES_MAX],
    ram_count: usize,
    /// VTL2's own memory as the loader reported it (IGVM memory map, VTL2_PROTECTABLE).
    vtl2: [core::ops::Range<u64>; VTL2_RANGES_MAX],
    vtl2_count: usize,
}

impl BootInfo {
    pub fn new(entry: EntryMode) -> Self {
        BootInfo {
            entry,
            vp_count: 1,
            cmdline: [0; CMDLINE_MAX],
            cmdline_len: 0,
            ram: [const { 0..0 }; RAM_RANGES_MAX],
            ram_count: 0,
            vtl2: [const { 0..0 }; VTL2_RANGES_MAX],
            vtl2_count: 0,
        }
    }

    /// Takes the VP count a loader table lists (ACPI MADT, device tree `/cpus`): 0 keeps the
    /// current count (at least 1), more than [`VP_LIMIT`] (no partition has more) is limited to
    /// it. The caller prints [`AboveLimit`]'s line for that, so the limit is never applied
    /// silently.
    pub fn set_vp_count(&mut self, listed: usize) -> VpCount {
        match listed {
            0 => VpCount::Ignored,
            n if n > VP_LIMIT => {
                self.vp_count = VP_LIMIT as u32;
                VpCount::AboveLimit { listed: n }
            }
            n => {
                self.vp_count = n as u32;
                VpCount::Used
            }
        }
    }

    /// Records a RAM range from the loader's memory map; false (and dropped) when full or empty.
    pub fn add_ram(&mut self, start: u64, size: u64) -> bool {
        let Some(end) = start.checked_add(size) else {
            return false;
        };
        if size == 0 || self.ram_count == RAM_RANGES_MAX {
            return false;
        }
        self.ram[self.ram_count] = start..end;
        self.ram_count += 1;
        true
    }

    /// The RAM the loader reported.
    pub fn ram(&self) -> &[core::ops::Range<u64>] {
        &self.ram[..self.ram_count]
    }

    /// Records a range of VTL2's own memory; false (and dropped) when full, empty or
    /// overflowing.
    pub fn add_vtl2(&mut self, start: u64, size: u64) -> bool {
        if size == 0 || start.checked_add(size).is_none() || self.vtl2_count == VTL2_RANGES_MAX {
            return false;
        }
        self.vtl2[self.vtl2_count] = start..start + size;
        self.vtl2_count += 1;
        true
    }

    /// VTL2's own memory as the loader reported it (empty on PVH and device-tree boots).
    pub fn vtl2(&self) -> &[core::ops::Range<u64>] {
        &self.vtl2[..self.vtl2_count]
    }

    /// Stores the command line, keeping the longest valid UTF-8 prefix that fits.
    /// Returns false if anything was dropped.
    pub fn set_cmdline(&mut self, bytes: &[u8]) -> bool {
        let len = bytes.len().min(CMDLINE_MAX);
        let valid = match core::str::from_utf8(&bytes[..len]) {
            Ok(s) => s.len(),
            Err(e) => e.valid_up_to(),
        };
        self.cmdline[..valid].copy_from_slice(&bytes[..valid]);
        self.cmdline_len = valid;
        valid == bytes.len()
    }

    pub fn cmdline(&self) -> &str {
        // set_cmdline only stores a valid UTF-8 prefix.
        core::str::from_utf8(&self.cmdline[..self.cmdline_len]).unwrap_or("")
    }
}

/// How the firmware ends a run. QEMU sees 33 for success and 35 for failure on both arches
/// (x86 isa-debug-exit, arm64 semihosting), so an exit code of 0 (reset, triple fault,
/// PSCI off) is never mistaken for a pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitCode {
    Success,
    Failure,
}

impl ExitCode {
    /// The process exit code QEMU reports.
    pub const fn qemu_code(self) -> i32 {
        match self {
            ExitCode::Success => 33,
            ExitCode::Failure => 35,
        }
    }
}

/// Registers the firmware's entry points: `boot::entry!(main, ap_main)` with
/// `fn main(&BootInfo) -> !` for the boot VP and `fn ap_main(vp_index: u32) -> !` for the others.
#[macro_export]
macro_rules! entry {
    ($main:path, $ap_main:path) => {
        #[cfg(target_os = "none")]
        #[unsafe(no_mangle)]
        extern "Rust" fn __boot_firmware_main(info: &$crate::BootInfo) -> ! {
            let main: fn(&$crate::BootInfo) -> ! = $main;
            main(info)
        }
        #[cfg(target_os = "none")]
        #[unsafe(no_mangle)]
        extern "Rust" fn __boot_firmware_ap_main(vp_index: u32) -> ! {
            let ap_main: fn(u32) -> ! = $ap_main;
            ap_main(vp_index)
        }
    };
}

#[cfg(target_os = "none")]
#[expect(
    unsafe_code,
    reason = "the firmware's entry points, defined by its entry! invocation"
)]
unsafe extern "Rust" {
    fn __boot_firmware_main(info: &BootInfo) -> !;
    fn __boot_firmware_ap_main(vp_index: u32) -> !;
}

/// The memory the image occupies, BSS (VP 0's stack, page tables, parameter pages) included.
#[cfg(target_os = "none")]
#[expect(unsafe_code, reason = "the image bounds are linker-script symbols")]
pub fn image_range() -> core::ops::Range<u64> {
    unsafe extern "C" {
        static __image_start: u8;
        static __image_end: u8;
    }
    (&raw const __image_start) as u64..(&raw const __image_end) as u64
}

/// The heap (see [`heap`]), fixed once by [`call_firmware_main`] before the firmware runs
/// (0..0 until then).
#[cfg(target_os = "none")]
static HEAP_START: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
#[cfg(target_os = "none")]
static HEAP_END: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Where the heap goes for this boot: the one place that decides (see [`heap::heap_range`]).
#[cfg(target_os = "none")]
fn vtl2_heap_range(info: &BootInfo) -> Result<core::ops::Range<u64>, heap::HeapError> {
    heap::heap_range(image_range().end, info.vp_count, info.ram(), info.vtl2())
}

/// All of VTL2's memory: the image and the heap right after it (the heap holds every AP's
/// stack and per-CPU record and the firmware's per-VP pages). The paravisor's own memory,
/// which it takes from VTL0 before VTL0 runs and never reads or writes on a lower VTL's behalf.
#[cfg(target_os = "none")]
pub fn vtl2_memory() -> core::ops::Range<u64> {
    image_range().start..heap_range().end
}

/// The heap's range (0..0 before the firmware runs).
#[cfg(target_os = "none")]
pub fn heap_range() -> core::ops::Range<u64> {
    use core::sync::atomic::Ordering::Relaxed;
    HEAP_START.load(Relaxed)..HEAP_END.load(Relaxed)
}

/// Sets up the heap and the APs' stacks and per-CPU records for `info.vp_count` VPs, then
/// calls the firmware. A heap that does not fit ends the run with a line saying why.
#[cfg(target_os = "none")]
#[expect(
    unsafe_code,
    reason = "hands the heap its memory and calls the firmware's entry"
)]
fn call_firmware_main(info: &BootInfo) -> ! {
    let range = vtl2_heap_range(info).unwrap_or_else(|e| {
        console::write_fmt_emergency(format_args!(
            "FATAL: no room for the VTL2 heap of {} bytes for {} VP(s): {e}\n",
            heap::heap_size(info.vp_count),
            info.vp_count
        ));
        arch::exit(ExitCode::Failure)
    });
    HEAP_START.store(range.start, core::sync::atomic::Ordering::Relaxed);
    HEAP_END.store(range.end, core::sync::atomic::Ordering::Relaxed);
    // SAFETY: RAM the loader reported, right after the image (nothing else is placed there),
    // below the static identity map's end (checked by heap_range); only the heap uses it.
    unsafe { heap::init(range.clone()) };
    println!(
        "boot: VTL2 heap {:#x}..{:#x} ({} bytes for {} VP(s))",
        range.start,
        range.end,
        range.end - range.start,
        info.vp_count
    );
    cpu::alloc_records(info.vp_count as usize);
    stacks::init(info.vp_count as usize);
    // SAFETY: defined by the firmware's entry! invocation with exactly this signature.
    unsafe { __boot_firmware_main(info) }
}

/// Where every AP lands, on its own boot stack: the index comes from the stack it was given.
#[cfg(target_os = "none")]
#[expect(
    unsafe_code,
    reason = "the entry code's AP target; calls the firmware's AP entry"
)]
#[unsafe(no_mangle)]
extern "C" fn boot_ap_main(stack_top: u64) -> ! {
    let Some(index) = stacks::index_of_top(stack_top).filter(|&i| i != 0) else {
        console::write_fmt_emergency(format_args!(
            "FATAL: AP started with stack {stack_top:#x}, which is no AP's stack\n"
        ));
        arch::exit(ExitCode::Failure)
    };
    cpu::init(index);
    arch::load_traps();
    // SAFETY: defined by the firmware's entry! invocation with exactly this signature.
    unsafe { __boot_firmware_ap_main(index as u32) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_keeps_valid_utf8_prefix() {
        let mut info = BootInfo::new(EntryMode::Pvh);
        assert!(info.set_cmdline(b"pv.test=panic"));
        assert_eq!(info.cmdline(), "pv.test=panic");
        assert!(!info.set_cmdline(b"ab\xffcd"));
        assert_eq!(info.cmdline(), "ab");
        let long = [b'a'; CMDLINE_MAX + 10];
        assert!(!info.set_cmdline(&long));
        assert_eq!(info.cmdline().len(), CMDLINE_MAX);
    }

    #[test]
    fn ram_ranges_are_bounded_and_checked() {
        let mut info = BootInfo::new(EntryMode::El1);
        assert!(info.add_ram(0x4000_0000, 0x1000_0000));
        assert!(!info.add_ram(0x1000, 0));
        assert!(!info.add_ram(u64::MAX, 2));
        for i in 1..RAM_RANGES_MAX as u64 {
            assert!(info.add_ram(i << 40, 4096));
        }
        assert!(!info.add_ram(0, 4096));
        assert_eq!(info.ram().len(), RAM_RANGES_MAX);
        assert_eq!(info.ram()[0], 0x4000_0000..0x5000_0000);
    }

    #[test]
    fn vtl2_ranges_are_bounded_and_checked() {
        let mut info = BootInfo::new(EntryMode::LongMode);
        assert!(info.add_vtl2(0x20_0000, 0x60_0000));
        assert!(!info.add_vtl2(0x1000, 0));
        assert!(!info.add_vtl2(u64::MAX, 2));
        for i in 1..VTL2_RANGES_MAX as u64 {
            assert!(info.add_vtl2(i << 32, 4096));
        }
        assert!(!info.add_vtl2(0, 4096));
        assert_eq!(info.vtl2().len(), VTL2_RANGES_MAX);
        assert_eq!(info.vtl2()[0], 0x20_0000..0x80_0000);
    }

    #[test]
    fn vp_counts_up_to_the_tlfs_limit_are_used_and_more_named() {
        let mut info = BootInfo::new(EntryMode::El1);
        assert_eq!(info.set_vp_count(0), VpCount::Ignored);
        assert_eq!(info.vp_count, 1);
        assert_eq!(info.set_vp_count(4), VpCount::Used);
        assert_eq!(info.vp_count, 4);
        assert_eq!(info.set_vp_count(65), VpCount::Used);
        assert_eq!(info.vp_count, 65);
        assert_eq!(info.set_vp_count(2048), VpCount::Used);
        assert_eq!(info.vp_count, 2048);
        assert_eq!(
            info.set_vp_count(2049),
            VpCount::AboveLimit { listed: 2049 }
        );
        assert_eq!(info.vp_count, 2048);
        assert_eq!(
            info.set_vp_count(usize::MAX),
            VpCount::AboveLimit { listed: usize::MAX }
        );
        assert_eq!(info.vp_count, 2048);
        let line = AboveLimit {
            source: "the ACPI MADT",
            listed: 3000,
        }
        .to_string();
        assert_eq!(
            line,
            "boot: the ACPI MADT lists 3000 VPs, more than the TLFS limit of 2048 \
             (HV_MAXIMUM_PROCESSORS); the paravisor serves VPs 0..2047 and starts no others"
        );
    }

    #[test]
    fn exit_codes_are_never_zero() {
        assert_eq!(ExitCode::Success.qemu_code(), 33);
        assert_eq!(ExitCode::Failure.qemu_code(), 35);
    }
}
