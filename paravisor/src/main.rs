//! The paravisor firmware image: the boot crate's entry points lead into the paravisor.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
boot::entry!(paravisor::start, paravisor::start_ap);

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    paravisor::panic(info)
}

/// On the host this binary is only a placeholder, so that the workspace builds and tests there.
#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("the paravisor is bare-metal firmware: build it with `cargo xtask image`");
    std::process::exit(2);
}
