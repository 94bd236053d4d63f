//! Passes this folder's linker script for the bare-metal target being built to rustc.
//!
//! Called from a firmware crate's `build.rs`. Host builds (unit tests) get no script, so the same
//! crate builds and tests on the host.
#![forbid(unsafe_code)]

use std::path::Path;

/// Emits the `cargo:` lines that link the current bare-metal target with its script.
pub fn emit() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    for script in ["x86_64.ld", "aarch64.ld"] {
        println!("cargo:rerun-if-changed={}", dir.join(script).display());
    }
    if os != "none" {
        return;
    }
    let script = match arch.as_str() {
        "x86_64" => "x86_64.ld",
        "aarch64" => "aarch64.ld",
        other => panic!("no linker script for target arch {other}"),
    };
    println!("cargo:rustc-link-arg=-T{}", dir.join(script).display());
    // A static PIE: linked at the script's base, where QEMU's ELF loader puts it, and run
    // wherever an IGVM loader relocated it: the entry applies its base-relative relocations
    // (boot::reloc). `-z notext`: arm64's static relocation model puts absolute pointers in
    // .rodata, which the entry patches before anything reads them. `--apply-dynamic-relocs`:
    // the file holds the link-base values too, so an unrelocated boot needs no fix-up at all.
    println!("cargo:rustc-link-arg=-pie");
    println!("cargo:rustc-link-arg=-static");
    println!("cargo:rustc-link-arg=--no-dynamic-linker");
    println!("cargo:rustc-link-arg=-z");
    println!("cargo:rustc-link-arg=notext");
    println!("cargo:rustc-link-arg=--apply-dynamic-relocs");
}
