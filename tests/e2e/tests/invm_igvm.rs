//! The IGVM file as OpenVMM's loader takes it (issue 11, "IGVM like OpenHCL's"): VTL2 memory
//! declared, the file relocatable, the command line an IGVM parameter. Under the in-VM mock,
//! whose loader (`mockhv::igvm_load`) enforces OpenVMM's rules, the paravisor and the real VTL0
//! kernel boot with VTL2 loaded at a base the test picks, not the one it was linked at.
#![forbid(unsafe_code)]

use e2e::kernel;
use hvdef::HypercallCode;
use mockhv::image::Image;
use mockhv::qemu::Arch;
use std::collections::BTreeSet;
use vtl0::{Record, Table};

/// A 2 MiB-aligned base in the guest's RAM away from the link base, VTL0's kernel and the
/// host's own memory (x86: the kernel at 64 MiB, the host at 240 MiB; arm64: the kernel at
/// 0x4800_0000, the host at 0x4f00_0000).
fn relocated_base(arch: Arch) -> u64 {
    match arch {
        Arch::X86_64 => 0x0a00_0000,
        Arch::Aarch64 => 0x4a00_0000,
    }
}

/// Relocated, the paravisor runs at the new base: it says so, protects its image there (and no
/// page of the old place), refuses VTL0's store into it there, relays and answers VTL0's calls
/// as ever, and the link base is plain VTL0 memory a store to which goes through. Far away, and
/// 2 MiB up (the new place overlapping the old: the loader's page-table fix-up moves entries
/// onto ones it moves later).
#[test]
fn a_relocated_boot_runs_the_paravisor_and_vtl0() {
    for arch in kernel::arches() {
        let image = Image::load(&e2e::image(arch)).expect("the image parses");
        for base in [relocated_base(arch), image.extent.start + (2 << 20)] {
            relocated_boot(arch, &image, base);
        }
    }
}

fn relocated_boot(arch: Arch, image: &Image, base: u64) {
    let link = image.extent.clone();
    let offset = base - link.start;
    let moved = link.start + offset..link.end + offset;
    let table = Table::new()
        .hypercall(
            u64::from(HypercallCode::POST_MESSAGE.0),
            &e2e::post_message(0x77),
            0,
        )
        .write(base + 0x40, 8, 0x1234)
        .write(link.start + 0x40, 8, 0x5678)
        .read(link.start + 0x40, 8)
        // A call whose input VTL0 keeps at the old place, which the paravisor reads
        // through its identity map (x86: the loader's page-table fix-up moved the old
        // place's 2 MiB pages away; the entry maps them again).
        .place(link.start + 0x1000, &e2e::post_message(0x77))
        .hypercall_at(
            u64::from(HypercallCode::POST_MESSAGE.0),
            link.start + 0x1000,
            0,
            &[],
            0,
        );
    let run = kernel::boot_with(arch, None, None, &table, |boot| boot.vtl2_base = Some(base));
    let console = &run.run.run.console;
    assert!(
        run.run.run.passed() && run.results.done == Some(table.len()),
        "{arch:?}: {}\nconsole:\n{console}",
        run.run.summary()
    );
    e2e::assert_lines_in_order(
        console,
        &[
            &format!("boot: relocated from {:#x} to {base:#x}", link.start),
            "running at VTL2",
            "vtl0: 0 hypercall control=0x5c result=0x12 out= canaries=ok",
            &format!("VTL0 write at GPA {:#x} refused (VTL2 memory)", base + 0x40),
            &format!(
                "vtl0: 1 write gpa={:#x} width=8 value=0x1234 fault ",
                base + 0x40
            ),
            &format!(
                "vtl0: 2 write gpa={:#x} width=8 value=0x5678 ok",
                link.start + 0x40
            ),
            "vtl0: 5 hypercall control=0x5c result=0x12 out= canaries=ok",
        ],
    );
    let records: Vec<&Record> = run.results.entries.iter().map(|(_, r)| r).collect();
    assert!(
        matches!(
            records[3],
            Record::Read {
                outcome: Ok(0x5678),
                ..
            }
        ),
        "{arch:?}: {:?}",
        records[3]
    );
    // Exactly the moved VTL2 memory's pages were protected: the image and its heap, which is
    // the rest of the declared memory.
    let mut pages = BTreeSet::new();
    for r in run.vtl2_calls(HypercallCode::MODIFY_VTL_PROTECTION_MASK) {
        pages.extend(e2e::protection_list(r));
    }
    let declared_end = e2e::igvm_vtl2_heap(image).end + offset;
    let want: BTreeSet<u64> = (moved.start >> 12..declared_end >> 12).collect();
    assert_eq!(pages, want, "{arch:?}: the relocated VTL2 memory's pages");
}

/// The command line reaches the paravisor as the file's CommandLine parameter: a `pv.*` option
/// given to an IGVM boot takes effect (`pv.test=panic` ends the boot in the panic it asks for).
#[test]
fn the_command_line_is_an_igvm_parameter() {
    for arch in kernel::arches() {
        let table = Table::new().read(kernel::proto(arch).scratch_page(), 8);
        let run = kernel::boot_with(arch, None, None, &table, |boot| {
            boot.append = Some("pv.test=panic".into())
        });
        let console = &run.run.run.console;
        assert!(
            !run.run.run.passed(),
            "{arch:?}: the boot must fail\n{console}"
        );
        e2e::assert_lines_in_order(
            console,
            &[
                "command line \"pv.test=panic\"",
                "pv.test=panic asked for a panic",
            ],
        );
        assert_eq!(run.results.done, None, "{arch:?}: VTL0 never ran");
    }
}

/// The built file meets OpenVMM's loader rules as `mockhv::igvm_load` enforces them: it
/// declares VTL2 memory (2 MiB aligned, from the image's base), loads where it was linked and
/// at any 2 MiB-aligned base above it that keeps VTL2 memory below 4 GiB, and nowhere else,
/// each refusal naming OpenVMM's error.
#[test]
fn the_file_is_relocatable_by_openvmms_rules() {
    use mockhv::igvm_load::{load_with, LoadOptions};
    for arch in kernel::arches() {
        let image = Image::load(&e2e::image(arch)).expect("the image parses");
        let bytes = std::fs::read(e2e::igvm(arch)).expect("the IGVM file");
        let link = image.extent.start;
        // One RAM range from the GiB the image is in up to 5 GiB.
        let ram_start = link & !0x3fff_ffff;
        let ram: Vec<std::ops::Range<u64>> = std::iter::once(ram_start..5 << 30).collect();
        let at = |base: Option<u64>| {
            let options = LoadOptions {
                vtl2_base: base,
                cmdline: String::new(),
            };
            load_with(&bytes, arch, 1, &ram, &options).map_err(|e| format!("{e:#}"))
        };
        let here = at(None).expect("loads where it was linked");
        assert_eq!(here.relocation_offset, 0);
        assert_eq!(here.vtl2_memory.start, link, "{arch:?}");
        let size = here.vtl2_memory.end - link;
        assert!(size.is_multiple_of(2 << 20) && here.vtl2_memory.end >= image.extent.end);
        let moved = at(Some(link + (64 << 20))).expect("relocates 64 MiB up");
        assert_eq!(
            moved.vtl2_memory,
            link + (64 << 20)..link + (64 << 20) + size
        );
        // The highest base that keeps VTL2 memory below 4 GiB, and one 2 MiB above it.
        let top = (4 << 30) - size;
        assert!(at(Some(top)).is_ok(), "{arch:?}: {:?}", at(Some(top)).err());
        for base in [link + 0x1000, link + (1 << 20), top + (2 << 20)] {
            let e = at(Some(base)).unwrap_err();
            assert!(
                e.contains("(RelocationBaseInvalid)"),
                "{arch:?} {base:#x}: {e}"
            );
        }
        let e = at(Some(link - (2 << 20))).unwrap_err();
        assert!(e.contains("(RelocationBaseInvalid)"), "{arch:?}: {e}");
    }
}

/// Relocated with four VPs: the boot VP starts the APs at the moved image (their entry, page
/// tables, GDT and stacks are where it runs), each enables VTL2, runs its bring-up and returns
/// to its VTL0.
#[test]
fn a_relocated_boot_starts_every_vp_there() {
    use mockhv::invm::{InvmBoot, Paravisor};
    use mockhv::model::Event;
    use mockhv::qemu::Outcome;
    for arch in kernel::arches() {
        let mut boot = InvmBoot::new(
            arch,
            e2e::invm_image(arch),
            Paravisor::Igvm(e2e::igvm(arch)),
        );
        boot.trace = true;
        boot.vps = 4;
        boot.vtl2_base = Some(relocated_base(arch));
        let run = boot.run().expect("QEMU runs");
        assert_eq!(
            run.run.outcome,
            Outcome::Pass,
            "{arch:?}: {}",
            run.summary()
        );
        e2e::assert_lines_in_order(
            &run.run.console,
            &[
                "boot: relocated from ",
                "boot: from IGVM parameters: 4 VP(s)",
                "all 4 VP(s) run at VTL2",
                "invm: the paravisor returned to VTL0 with an empty VTL0 script: done after",
            ],
        );
        for vp in 1..4 {
            let last = run.events.iter().rev().find_map(|e| match e {
                Event::Hypercall(r) if r.vp == vp => Some(r.code),
                _ => None,
            });
            assert_eq!(last, Some(HypercallCode::VTL_RETURN), "{arch:?} VP {vp}");
        }
    }
}
