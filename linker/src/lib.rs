//! Passes this folder's linker script for the bare-metal target being built to rustc.
//!
//! Called from a firmware crate's `build.rs`. Host builds (unit tests) get no script, so the same
//! crate builds and tests on the host.

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
    // The images load at fixed addresses and the entry code uses absolute addresses.
    println!("cargo:rustc-link-arg=--no-pie");
    println!("cargo:rustc-link-arg=-static");
    println!("cargo:rustc-link-arg=--no-dynamic-linker");
}
