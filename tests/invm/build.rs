//! Links the bare-metal host with its own linker script (`invm-aarch64.ld`, `invm-x86_64.ld`);
//! host builds (the placeholder binary and the unit tests) get no script.
use std::path::Path;

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    for script in ["invm-aarch64.ld", "invm-x86_64.ld"] {
        println!("cargo:rerun-if-changed={}", dir.join(script).display());
    }
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if os != "none" {
        return;
    }
    let script = match arch.as_str() {
        "aarch64" => dir.join("invm-aarch64.ld"),
        "x86_64" => dir.join("invm-x86_64.ld"),
        other => panic!("the in-VM mock has no host for {other}"),
    };
    println!("cargo:rustc-link-arg=-T{}", script.display());
    println!("cargo:rustc-link-arg=--no-pie");
    println!("cargo:rustc-link-arg=-static");
    println!("cargo:rustc-link-arg=--no-dynamic-linker");
}
