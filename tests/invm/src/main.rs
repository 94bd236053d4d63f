//! The in-VM mock Hyper-V: a bare-metal host inside QEMU that runs the real paravisor image as
//! its guest, every VP on its own CPU, and answers every hypervisor-facing instruction of it
//! with the TLFS model (`hvmodel`), until the paravisor's VtlReturns finish the (empty) VTL0
//! script, or, with a live VTL0 (the runner's configuration page, `invm_abi`), until VTL0 ends
//! the run. Anything else the guest does that exits to the host, and any exception in the host
//! itself, is one console line and a failing QEMU exit.
//!
//! - arm64: an EL2 host (`-machine virt,virtualization=on`), the paravisor at EL1 under stage 2,
//!   every `hvc` answered (`host.rs`, `aarch64/`). Build: `cargo build -p invm --target
//!   aarch64-unknown-none-softfloat --release` (or `cargo xtask image --arch aarch64
//!   --release`, which copies it to `target/images/invm-aarch64.elf`). Run:
//!   `qemu-system-aarch64 -machine virt,virtualization=on -cpu max -m 256M -smp 1 -nographic
//!   -semihosting -kernel invm-aarch64.elf -device loader,file=target/images/paravisor-aarch64.elf`.
//! - x86_64: an AMD SVM host with nested paging (`-cpu max`), the paravisor entered as a PVH
//!   start, CPUID, RDMSR/WRMSR of the hypervisor's MSRs and VMMCALL answered (`host_x86.rs`,
//!   `x86_64/`; a second VMCB per VP for a live VTL0, INIT-SIPI-SIPI for more VPs). Build: `cargo build -p invm --target x86_64-unknown-none --release` (or
//!   `cargo xtask image --arch x86_64 --release` → `target/images/invm-x86_64.elf`). Run:
//!   `qemu-system-x86_64 -machine q35 -cpu max -m 256M -smp 1 -nographic -no-reboot -serial
//!   stdio -monitor none -display none -device isa-debug-exit,iobase=0xf4,iosize=0x04 -kernel
//!   invm-x86_64.elf -device loader,file=target/images/paravisor-x86_64.elf`.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(any(test, target_os = "none"))]
extern crate alloc;

#[cfg(all(target_os = "none", target_arch = "aarch64"))]
mod aarch64;
#[cfg(any(test, all(target_os = "none", target_arch = "aarch64")))]
mod fdt;
#[cfg(any(test, target_os = "none"))]
mod gpt;
#[cfg(target_os = "none")]
mod heap;
#[cfg(any(test, target_os = "none"))]
mod hv;
#[cfg(any(test, target_os = "none"))]
mod memory;
#[cfg(any(test, all(target_os = "none", target_arch = "x86_64")))]
mod msrpm;
#[cfg(any(test, all(target_os = "none", target_arch = "x86_64")))]
mod npt;
#[cfg(any(test, all(target_os = "none", target_arch = "x86_64")))]
mod pvh;
#[cfg(target_os = "none")]
mod runner;
#[cfg(any(test, all(target_os = "none", target_arch = "aarch64")))]
mod stage2;
#[cfg(all(target_os = "none", target_arch = "x86_64"))]
mod x86_64;

#[cfg(all(target_os = "none", target_arch = "aarch64"))]
mod host;
#[cfg(all(target_os = "none", target_arch = "x86_64"))]
mod host_x86;

/// On the host this binary is only a placeholder, so that the workspace builds and tests there.
#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "invm is bare-metal: build it with `cargo build -p invm --target \
         aarch64-unknown-none-softfloat --release` or `--target x86_64-unknown-none`"
    );
    std::process::exit(2);
}
