//! Links the bare-metal kernel with its per-arch linker script (`vtl0-<arch>.ld`); host builds
//! (the placeholder binary and the unit tests) get no script.
use std::path::Path;

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    for script in ["vtl0-x86_64.ld", "vtl0-aarch64.ld"] {
        println!("cargo:rerun-if-changed={}", dir.join(script).display());
    }
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if os != "none" {
        return;
    }
    let script = match arch.as_str() {
        "x86_64" => "vtl0-x86_64.ld",
        "aarch64" => "vtl0-aarch64.ld",
        other => panic!("no linker script for target arch {other}"),
    };
    println!("cargo:rustc-link-arg-bins=-T{}", dir.join(script).display());
    // Loaded at a fixed address; the entry code uses absolute addresses.
    println!("cargo:rustc-link-arg-bins=--no-pie");
    println!("cargo:rustc-link-arg-bins=-static");
    println!("cargo:rustc-link-arg-bins=--no-dynamic-linker");
}
