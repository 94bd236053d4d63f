//! Shared helpers of the end-to-end suites in `tests/` (and of the harness's bench and soak):
//! where the images are, the hypercall inputs VTL0 makes, and what VTL0 must get back.
#![forbid(unsafe_code)]

pub mod kernel;

use hvdef::{
    Control, HvInputGetVpRegisters, HvInputPostMessage, HvInputVtl, HvRegisterName, HypercallCode,
    HV_PARTITION_ID_SELF, HV_VP_INDEX_SELF,
};
use mockhv::qemu::Arch;
use std::path::PathBuf;
use zerocopy::{FromZeros, IntoBytes};

/// The release ELF image for `arch`, built by `cargo xtask image --release` (which
/// `cargo xtask test` runs before these suites and points `PARAVISOR_IMAGE_DIR` at).
pub fn image(arch: Arch) -> PathBuf {
    let dir = std::env::var_os("PARAVISOR_IMAGE_DIR").unwrap_or_else(|| {
        panic!(
            "PARAVISOR_IMAGE_DIR is not set: run these suites through `cargo xtask test`, or run \
             `cargo xtask image --release` and set PARAVISOR_IMAGE_DIR=target/images"
        )
    });
    let path = PathBuf::from(dir).join(format!("paravisor-{}.elf", arch.name()));
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask image --release`",
        path.display()
    );
    path
}

/// Addresses per arch the suites name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Inside the paravisor's own image (its first page): VTL0 must never get it read or
    /// written.
    pub vtl2: u64,
}

pub fn layout(arch: Arch) -> Layout {
    match arch {
        Arch::X86_64 => Layout { vtl2: 0x20_0000 },
        Arch::Aarch64 => Layout { vtl2: 0x4020_0000 },
    }
}

/// A control word with only the call code set.
pub fn code(c: HypercallCode) -> Control {
    Control::new().with_code(c)
}

/// An HvCallPostMessage input: message type 1, 16 payload bytes (zero).
pub fn post_message(connection_id: u32) -> Vec<u8> {
    let mut m = HvInputPostMessage::new_zeroed();
    m.connection_id = connection_id;
    m.message_type = hvdef::HvMessageType(1);
    m.payload_size = 16;
    m.as_bytes().to_vec()
}

/// An HvCallRetargetDeviceInterrupt input: MSI source, vector 0x40, VP mask 1.
pub fn retarget_input(partition: u64, device: u64) -> Vec<u8> {
    hvdef::HvInputRetargetDeviceInterrupt {
        partition_id: partition,
        device_id: device,
        interrupt_source: 1,
        reserved1: 0,
        interrupt_data: 0xFEE0_0000_0000_0041,
        reserved2: 0,
        vector: 0x40,
        target_flags: 0,
        vp_mask_or_format: 1,
    }
    .as_bytes()
    .to_vec()
}

/// An HvCallPostMessage input with `payload` (at most 240 bytes) as the message: message type
/// 1, payload size its length, the rest of the payload area zero.
pub fn post_message_with(connection_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut m = HvInputPostMessage::new_zeroed();
    m.connection_id = connection_id;
    m.message_type = hvdef::HvMessageType(1);
    m.payload_size = payload.len() as u32;
    let mut bytes = m.as_bytes().to_vec();
    let at = core::mem::offset_of!(HvInputPostMessage, payload);
    bytes[at..at + payload.len()].copy_from_slice(payload);
    bytes
}

/// A memory-based HvCallSignalEvent input (`HV_INPUT_SIGNAL_EVENT`: connection id, flag
/// number, 2 reserved bytes): the same 8 bytes as the fast word.
pub fn signal_event_input(connection: u32, flag: u16) -> Vec<u8> {
    signal_event_word(connection, flag).to_le_bytes().to_vec()
}

/// An HvCallRetargetDeviceInterrupt input targeting a sparse processor set (TLFS
/// HV_DEVICE_INTERRUPT_TARGET_PROCESSOR_SET, generic set format 0 = sparse 4K banks) whose
/// valid-bank mask and two banks follow as the variable header (3 qwords): 80 bytes, sent with
/// a variable header size of 3.
pub fn retarget_sparse_input(device: u64) -> Vec<u8> {
    let mut bytes = hvdef::HvInputRetargetDeviceInterrupt {
        partition_id: HV_PARTITION_ID_SELF,
        device_id: device,
        interrupt_source: 1,
        reserved1: 0,
        interrupt_data: 0xFEE0_1000_0000_0052,
        reserved2: 0,
        vector: 0x52,
        target_flags: hvdef::HV_DEVICE_INTERRUPT_TARGET_PROCESSOR_SET,
        vp_mask_or_format: 0,
    }
    .as_bytes()
    .to_vec();
    for qword in [0b101u64, 0x8000_0000_0000_0003, 0x0000_0000_0001_0000] {
        bytes.extend(qword.to_le_bytes());
    }
    bytes
}

/// A fast HvCallSignalEvent's input word: `connection`, flag `flag`.
pub fn signal_event_word(connection: u32, flag: u16) -> u64 {
    u64::from(connection) | u64::from(flag) << 32
}

/// An HvCallGetVpRegisters input for this partition and VP: the header, then `names`.
pub fn get_registers_input(vtl: HvInputVtl, names: &[HvRegisterName]) -> Vec<u8> {
    let header = HvInputGetVpRegisters {
        partition_id: HV_PARTITION_ID_SELF,
        vp_index: HV_VP_INDEX_SELF,
        target_vtl: vtl,
        reserved: [0; 3],
    };
    let mut bytes = header.as_bytes().to_vec();
    for name in names {
        bytes.extend(name.0.to_le_bytes());
    }
    bytes
}

/// The relay table the suites boot with (`pv.relay` / `pv.devices`): VTL0's connections
/// [`RELAYED`] and [`RELAYED_EVENT`] go to host connection 1, VTL0 owns device
/// [`OWNED_DEVICE`].
pub const RELAY: &str = "pv.relay=0x20:1,0x21:1 pv.devices=0x30";
/// A VTL0 connection id the host does not know and the relay maps to host connection 1.
pub const RELAYED: u32 = 0x20;
pub const RELAYED_EVENT: u32 = 0x21;
/// A VTL0 connection id neither the host nor the relay knows.
pub const UNMAPPED: u32 = 0x2F;
/// The host connection the relay maps [`RELAYED`] to (a VTL0 port of the default scenario).
pub const HOST_CONNECTION: u32 = 1;
/// A device VTL0 owns: the host knows it only for VTL2 (see [`owned_device_scenario`]).
pub const OWNED_DEVICE: u64 = 0x30;

/// `scenario` with [`OWNED_DEVICE`] known to the host for VTL2's calls only, as a device VTL2
/// manages for VTL0 (so VTL0's own RetargetDeviceInterrupt for it is reflected).
pub fn owned_device_scenario(mut scenario: mockhv::model::Scenario) -> mockhv::model::Scenario {
    scenario.devices.insert(OWNED_DEVICE, hvdef::Vtl::VTL2);
    scenario
}

/// VTL0's instruction pointer as a VP register name: what the paravisor sets to complete a
/// call.
pub fn ip_register(arch: Arch) -> HvRegisterName {
    match arch {
        Arch::X86_64 => hvdef::x86_64::reg::RIP,
        Arch::Aarch64 => hvdef::aarch64::reg::PC,
    }
}

/// The release IGVM file for `arch`, built next to the ELF by `cargo xtask image --release`.
pub fn igvm(arch: Arch) -> PathBuf {
    let path = image(arch).with_extension("igvm");
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask image --release`",
        path.display()
    );
    path
}

/// The exception VTL0 must take for an access VTL2's protection stopped, as
/// `HvRegisterPendingEvent0` (OpenVMM's layouts, see hvdef), written from the architectures,
/// not from the paravisor. x64: #GP (vector 13) with error code 0: bit 0 pending, type 0
/// exception, bit 8 deliver the error code, vector at bits 31:16. arm64: a synchronous external
/// abort (Arm ARM ESR_ELx): EC 0x25 data abort / 0x21 instruction abort taken without a change
/// in exception level (VTL0's kernel), 0x24 / 0x20 from EL0 (`from_el0`), IL (bit 25), FnV
/// (bit 10: no fault address), WnR (bit 6) for a store, fault status 0x10 (synchronous external
/// abort); the syndrome is the register's second quadword.
pub fn memory_fault(arch: Arch, access: &mockhv::model::Vtl0Access, from_el0: bool) -> u128 {
    use mockhv::model::Vtl0Access;
    match arch {
        Arch::X86_64 => 1 | 1 << 8 | 13 << 16,
        Arch::Aarch64 => {
            let class: u64 = match access {
                Vtl0Access::Execute { .. } => 0x21,
                _ => 0x25,
            } - u64::from(from_el0);
            let wnr = match access {
                Vtl0Access::Write { .. } => 1 << 6,
                _ => 0,
            };
            let esr = class << 26 | 1 << 25 | 1 << 10 | wnr | 0x10;
            1 | u128::from(esr) << 64
        }
    }
}

/// The page numbers a ModifyVtlProtectionMask record lists from its rep start (the 16-byte
/// header, then one u64 page number per rep).
pub fn protection_list(record: &mockhv::model::HypercallRecord) -> Vec<u64> {
    let from = 16 + usize::from(Control::from_bits(record.control).rep_start()) * 8;
    record
        .input
        .get(from..)
        .unwrap_or_default()
        .chunks_exact(8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect()
}

/// VTL2's heap for `vps` VPs as docs/ARCHITECTURE.md ("Memory") lays it out: from the first
/// page after the image, 64 KiB and 32 KiB per VP. It holds every AP's stack and per-CPU record
/// and every VP's hypercall and VP assist pages. (The paravisor names it in its `boot: VTL2
/// heap` line, which the protection suite checks against this.)
pub fn vtl2_heap(image: &mockhv::image::Image, vps: u32) -> std::ops::Range<u64> {
    let start = image.extent.end.div_ceil(0x1000) * 0x1000;
    start..start + 0x1_0000 + u64::from(vps) * 0x8000
}

/// VTL2's heap on an IGVM boot at the link base: from the first page after the image to the
/// end of the VTL2 memory the IGVM file declares (its RequiredMemory, as the mock's loader
/// reads it from the file): the paravisor's heap is all the declared memory after the image.
pub fn igvm_vtl2_heap(image: &mockhv::image::Image) -> std::ops::Range<u64> {
    let bytes = std::fs::read(igvm(image.arch)).expect("the IGVM file");
    let ram: Vec<std::ops::Range<u64>> = std::iter::once(0..1u64 << 40).collect();
    let loaded = mockhv::igvm_load::load(&bytes, image.arch, 1, &ram).expect("the file loads");
    image.extent.end.div_ceil(0x1000) * 0x1000..loaded.vtl2_memory.end
}

/// The VTL2 pages a VTL0 attack tries, by kind, from the image's symbols (an address inside
/// each): code, page tables, VP 0's boot stack, the heap (per-VP pages and AP stacks, with one
/// VP: its first page), IGVM parameters, the image's last page, the heap's last page, and on
/// x86 the hypercall page.
pub fn vtl2_targets(image: &mockhv::image::Image) -> Vec<(&'static str, u64)> {
    let sym = |name: &str| {
        image
            .symbol_containing(name)
            .unwrap_or_else(|| panic!("no symbol {name}"))
    };
    let heap = vtl2_heap(image, 1);
    let mut t = vec![
        ("code", image.extent.start + 0x40),
        (
            "page tables",
            sym(match image.arch {
                Arch::X86_64 => "boot_pml4",
                Arch::Aarch64 => "boot_l1",
            }),
        ),
        ("boot stack", sym("6stacks10BOOT_STACK") + 0x100),
        ("heap", heap.start + 0x10),
        ("IGVM parameters", sym("boot_igvm_params_start")),
        ("last page", image.extent.end - 0x10),
        ("heap's last page", heap.end - 0x10),
    ];
    if image.arch == Arch::X86_64 {
        t.push(("hypercall page", sym("pv_hypercall_page") + 0x20));
    }
    t
}

/// `igvm` with bytes `at` its VTL0 boot page (the page data starting with `PVVTL0IC`)
/// replaced, written to `out`; returns the page's GPA.
pub fn spoil_vtl0_boot_page(
    arch: Arch,
    igvm: &std::path::Path,
    at: usize,
    bytes: &[u8],
    out: &std::path::Path,
) -> u64 {
    use igvm::{IgvmDirectiveHeader, IgvmFile};
    let file = IgvmFile::new_from_binary(&std::fs::read(igvm).unwrap(), None).unwrap();
    let mut directives = file.directives().to_vec();
    let mut boot_page = None;
    for d in &mut directives {
        if let IgvmDirectiveHeader::PageData { gpa, data, .. } = d {
            if data.starts_with(b"PVVTL0IC") {
                data[at..at + bytes.len()].copy_from_slice(bytes);
                boot_page = Some(*gpa);
            }
        }
    }
    let revision = match arch {
        Arch::X86_64 => igvm::IgvmRevision::V1,
        Arch::Aarch64 => igvm::IgvmRevision::V2 {
            arch: igvm::Arch::AArch64,
            page_size: 4096,
        },
    };
    let spoiled = IgvmFile::new(
        revision,
        file.platforms().to_vec(),
        file.initializations().to_vec(),
        directives,
    )
    .unwrap();
    let mut bytes = Vec::new();
    spoiled.serialize(&mut bytes).unwrap();
    std::fs::write(out, bytes).unwrap();
    boot_page.expect("the file has a VTL0 boot page")
}

/// Panics unless `console` holds every needle, in this order.
pub fn assert_lines_in_order(console: &str, needles: &[&str]) {
    let mut rest = console;
    for needle in needles {
        match rest.find(needle) {
            Some(at) => rest = &rest[at + needle.len()..],
            None => panic!("console lacks {needle:?} (in this order):\n{console}"),
        }
    }
}

/// The in-VM mock's host image for `arch`, next to the paravisor images.
pub fn invm_image(arch: Arch) -> PathBuf {
    let path = image(arch).with_file_name(format!("invm-{}.elf", arch.name()));
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask image --release`",
        path.display()
    );
    path
}
