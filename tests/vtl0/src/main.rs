//! The VTL0 test kernel: a bare-metal guest OS for x86_64 and aarch64 that sets up the Hyper-V
//! hypercall interface as a guest does, runs the test table (hypercalls with register canaries,
//! read/write/execute probes whose faults it catches) and prints one result line per entry
//! (the protocol is the library, `src/lib.rs`).
//!
//! Build: `cargo xtask image --release` (copies `target/images/vtl0-<arch>.elf`), or
//! `cargo build -p vtl0 --bin vtl0 --target x86_64-unknown-none --release`.
//! Run standalone: `qemu-system-x86_64 -machine q35 -cpu max -m 256M -nographic -no-reboot
//! -serial stdio -monitor none -display none -device isa-debug-exit,iobase=0xf4,iosize=0x04
//! -kernel vtl0-x86_64.elf -device loader,file=TABLE.bin,addr=0x5000000,force-raw=on`, or
//! `qemu-system-aarch64 -machine virt -cpu max -m 256M -nographic -no-reboot -serial stdio
//! -monitor none -display none -kernel vtl0-aarch64.elf -device
//! loader,file=TABLE.bin,addr=0x49000000,force-raw=on`.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod arch;
#[cfg(target_os = "none")]
mod console;
#[cfg(target_os = "none")]
mod kernel;
#[cfg(target_os = "none")]
mod mem;
#[cfg(target_os = "none")]
mod recovery;
#[cfg(target_os = "none")]
mod smp;

/// On the host this binary is only a placeholder, so that the workspace builds and tests there.
#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "vtl0 is bare-metal: build it with `cargo xtask image --release` (or `cargo build -p \
         vtl0 --bin vtl0 --target x86_64-unknown-none --release`)"
    );
    std::process::exit(2);
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    say!("panic: {}", info);
    arch::power_off(false)
}
