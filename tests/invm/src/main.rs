//! The in-VM mock Hyper-V, first slice (arm64): a bare-metal EL2 host inside QEMU
//! (`-machine virt,virtualization=on`) that runs the real paravisor image at EL1 under stage-2
//! translation and answers every `hvc` from it with the TLFS model (`hvmodel`), until the
//! paravisor's first VtlReturn finishes the (empty) VTL0 script. Anything else the guest does
//! that exits to EL2, and any exception in the host itself, is one console line and a failing
//! QEMU exit.
//!
//! Build: `cargo build -p invm --target aarch64-unknown-none-softfloat --release` (or `cargo
//! xtask image --arch aarch64 --release`, which copies it to `target/images/invm-aarch64.elf`).
//! Run: `qemu-system-aarch64 -machine virt,virtualization=on -cpu max -m 256M -smp 1
//! -nographic -semihosting -kernel invm-aarch64.elf -device
//! loader,file=target/images/paravisor-aarch64.elf`.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(any(test, target_os = "none"))]
extern crate alloc;

#[cfg(target_os = "none")]
mod aarch64;
#[cfg(any(test, target_os = "none"))]
mod fdt;
#[cfg(any(test, target_os = "none"))]
mod hv;
#[cfg(any(test, target_os = "none"))]
mod memory;
#[cfg(any(test, target_os = "none"))]
mod stage2;

#[cfg(target_os = "none")]
mod host;

/// On the host this binary is only a placeholder, so that the workspace builds and tests there.
#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "invm is bare-metal: build it with `cargo build -p invm --target \
         aarch64-unknown-none-softfloat --release`"
    );
    std::process::exit(2);
}
