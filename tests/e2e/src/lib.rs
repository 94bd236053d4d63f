//! Shared helpers of the end-to-end suites in `tests/`: where the images are, how to boot them.

use mockhv::qemu::Arch;
use std::path::PathBuf;

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
