//! What the runner left in the host's own memory before reset (QEMU's generic loader): the
//! configuration page and the scenario below it (`invm_abi`). Both hosts read them here.
#![expect(
    unsafe_code,
    reason = "reads the runner's pages at fixed physical addresses"
)]

use invm_abi::HostConfig;

/// The configuration page at `gpa` (all zero without one: [`HostConfig::parse`]'s default).
///
/// # Safety
///
/// `gpa` must be a page of the host's own identity-mapped memory that nothing else uses (the
/// linker scripts keep the hosts' images below it).
pub unsafe fn config(gpa: u64) -> HostConfig {
    // SAFETY: the caller's contract: a whole page, the host's, written only by the loader.
    let page = unsafe { core::slice::from_raw_parts(gpa as *const u8, 4096) };
    HostConfig::parse(page).unwrap_or_default()
}

/// The scenario's bytes at `gpa` if the configuration names one (`scenario_len`), or why not.
///
/// # Safety
///
/// As [`config`]: `gpa..gpa + SCENARIO_MAX` is the host's own memory, unused otherwise.
pub unsafe fn scenario(config: &HostConfig, gpa: u64) -> Result<Option<&'static [u8]>, u64> {
    match config.scenario_len {
        0 => Ok(None),
        // SAFETY: the caller's contract, for at most SCENARIO_MAX bytes.
        len if len <= invm_abi::SCENARIO_MAX => Ok(Some(unsafe {
            core::slice::from_raw_parts(gpa as *const u8, len as usize)
        })),
        len => Err(len),
    }
}
