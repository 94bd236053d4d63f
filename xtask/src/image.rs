//! `cargo xtask image`: builds the firmware for a bare-metal target and packs it as ELF (for
//! QEMU) and IGVM (for OpenHCL-style loaders).

use crate::{igvm, workspace_root};
use anyhow::{bail, Context, Result};
use mockhv::qemu::Arch;
use std::path::PathBuf;
use std::process::Command;

/// The files one `image` build produced.
pub struct Image {
    pub elf: PathBuf,
    pub igvm: PathBuf,
}

/// Where images are written: `target/images/paravisor-<arch>[-debug].{elf,igvm}`.
pub fn image_dir() -> PathBuf {
    workspace_root().join("target").join("images")
}

pub fn elf_path(arch: Arch, release: bool) -> PathBuf {
    let suffix = if release { "" } else { "-debug" };
    image_dir().join(format!("paravisor-{}{suffix}.elf", arch.name()))
}

fn igvm_arch(arch: Arch) -> igvm::IgvmArch {
    match arch {
        Arch::X86_64 => igvm::IgvmArch::X86_64,
        Arch::Aarch64 => igvm::IgvmArch::Aarch64,
    }
}

pub fn build(arch: Arch, release: bool) -> Result<Image> {
    crate::toolchain::ensure_targets(&[arch])?;
    let root = workspace_root();
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(&root)
        .args([
            "build",
            "--package",
            "paravisor",
            "--bin",
            "paravisor",
            "--target",
        ])
        .arg(arch.target_triple());
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status().context("cannot start cargo")?;
    if !status.success() {
        bail!(
            "building the {} firmware failed (see the compiler output above)",
            arch.name()
        );
    }
    let profile = if release { "release" } else { "debug" };
    let built = root
        .join("target")
        .join(arch.target_triple())
        .join(profile)
        .join("paravisor");
    let elf = elf_path(arch, release);
    std::fs::create_dir_all(image_dir())?;
    std::fs::copy(&built, &elf)
        .with_context(|| format!("cannot copy {} to {}", built.display(), elf.display()))?;
    let bytes = std::fs::read(&elf)?;
    let packed = igvm::build(&bytes, igvm_arch(arch))
        .with_context(|| format!("packing {} as IGVM", elf.display()))?;
    let igvm_path = elf.with_extension("igvm");
    std::fs::write(&igvm_path, &packed)?;
    Ok(Image {
        elf,
        igvm: igvm_path,
    })
}

/// Where the in-VM mock's host is written: `target/images/invm-<arch>[-debug].elf`.
pub fn invm_path(arch: Arch, release: bool) -> PathBuf {
    let suffix = if release { "" } else { "-debug" };
    image_dir().join(format!("invm-{}{suffix}.elf", arch.name()))
}

/// Builds the in-VM mock hypervisor (`tests/invm`) for `arch`: the host that runs the paravisor
/// image as its guest, arm64 at EL2 under stage 2, x86_64 under AMD SVM with nested paging
/// (`tests/e2e/tests/invm_arm64.rs` and `invm_x86.rs` boot them).
pub fn build_invm(arch: Arch, release: bool) -> Result<PathBuf> {
    crate::toolchain::ensure_targets(&[arch])?;
    let root = workspace_root();
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(&root)
        .args(["build", "--package", "invm", "--bin", "invm", "--target"])
        .arg(arch.target_triple());
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status().context("cannot start cargo")?;
    if !status.success() {
        bail!("building the in-VM mock hypervisor failed (see the compiler output above)");
    }
    let profile = if release { "release" } else { "debug" };
    let built = root
        .join("target")
        .join(arch.target_triple())
        .join(profile)
        .join("invm");
    let out = invm_path(arch, release);
    std::fs::create_dir_all(image_dir())?;
    std::fs::copy(&built, &out)
        .with_context(|| format!("cannot copy {} to {}", built.display(), out.display()))?;
    Ok(out)
}

/// Where the VTL0 test kernel is written: `target/images/vtl0-<arch>[-debug].elf`.
pub fn vtl0_path(arch: Arch, release: bool) -> PathBuf {
    let suffix = if release { "" } else { "-debug" };
    image_dir().join(format!("vtl0-{}{suffix}.elf", arch.name()))
}

/// Builds the VTL0 test kernel (`tests/vtl0`) for `arch`: the guest OS the paravisor runs in
/// VTL0 (`tests/e2e/tests/vtl0_standalone.rs` boots it alone).
pub fn build_vtl0(arch: Arch, release: bool) -> Result<PathBuf> {
    crate::toolchain::ensure_targets(&[arch])?;
    let root = workspace_root();
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(&root)
        .args(["build", "--package", "vtl0", "--bin", "vtl0", "--target"])
        .arg(arch.target_triple());
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status().context("cannot start cargo")?;
    if !status.success() {
        bail!("building the {} VTL0 test kernel failed", arch.name());
    }
    let profile = if release { "release" } else { "debug" };
    let built = root
        .join("target")
        .join(arch.target_triple())
        .join(profile)
        .join("vtl0");
    let out = vtl0_path(arch, release);
    std::fs::create_dir_all(image_dir())?;
    std::fs::copy(&built, &out)
        .with_context(|| format!("cannot copy {} to {}", built.display(), out.display()))?;
    Ok(out)
}

/// Builds every arch in `arches` and prints each output path and size, with the in-VM mock
/// hypervisor that boots its image and the VTL0 test kernel.
pub fn build_all(arches: &[Arch], release: bool) -> Result<Vec<Image>> {
    let mut images = Vec::new();
    for &arch in arches {
        let image = build(arch, release)?;
        let paths = [
            image.elf.clone(),
            image.igvm.clone(),
            build_invm(arch, release)?,
            build_vtl0(arch, release)?,
        ];
        for path in &paths {
            let size = std::fs::metadata(path)?.len();
            println!("{:<8} {} ({size} bytes)", arch.name(), path.display());
        }
        images.push(image);
    }
    Ok(images)
}
