//! Makes sure the pinned toolchain (rust-toolchain.toml) has the bare-metal targets before
//! anything builds firmware: rustup normally adds them from the toolchain file, but a machine
//! set up with auto-install turned off may not have them.

use crate::workspace_root;
use anyhow::{bail, Context, Result};
use mockhv::qemu::Arch;
use std::path::PathBuf;
use std::process::Command;

fn sysroot() -> Result<PathBuf> {
    let out = Command::new("rustc")
        .current_dir(workspace_root())
        .args(["--print", "sysroot"])
        .output()
        .context("cannot run rustc")?;
    if !out.status.success() {
        bail!(
            "rustc --print sysroot failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// Installs any missing firmware target with rustup, saying so; fails with the command to run.
pub fn ensure_targets(arches: &[Arch]) -> Result<()> {
    let sysroot = sysroot()?;
    for arch in arches {
        let triple = arch.target_triple();
        if sysroot.join("lib/rustlib").join(triple).is_dir() {
            continue;
        }
        println!("installing the Rust target: rustup target add {triple}");
        let status = Command::new("rustup")
            .current_dir(workspace_root())
            .args(["target", "add", triple])
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            bail!(
                "the Rust target {triple} is missing and could not be installed; run: \
                 rustup target add {triple}  (in {})",
                workspace_root().display()
            );
        }
    }
    Ok(())
}
