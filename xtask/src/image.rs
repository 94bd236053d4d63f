//! `cargo xtask image`: builds the firmware for a bare-metal target and packs it as ELF (for
//! QEMU) and IGVM (for OpenHCL-style loaders).

use crate::{igvm, workspace_root};
use anyhow::{bail, Context, Result};
use mockhv::qemu::Arch;
use std::path::{Path, PathBuf};
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
    build_with(arch, release, None)
}

/// [`build`], with `vtl0` (an ELF) as the IGVM file's VTL0 payload if given.
pub fn build_with(arch: Arch, release: bool, vtl0: Option<&Path>) -> Result<Image> {
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
    let igvm_path = elf.with_extension("igvm");
    pack(arch, &elf, vtl0, &igvm_path)?;
    Ok(Image {
        elf,
        igvm: igvm_path,
    })
}

/// Packs the paravisor ELF `elf` (and `vtl0`, a VTL0 payload ELF, if given) as the IGVM file
/// `out`.
pub fn pack(arch: Arch, elf: &Path, vtl0: Option<&Path>, out: &Path) -> Result<()> {
    let bytes = std::fs::read(elf).with_context(|| format!("cannot read {}", elf.display()))?;
    let payload = vtl0
        .map(|p| std::fs::read(p).with_context(|| format!("cannot read {}", p.display())))
        .transpose()?;
    let packed =
        igvm::build(&bytes, igvm_arch(arch), payload.as_deref()).with_context(|| match vtl0 {
            None => format!("packing {} as IGVM", elf.display()),
            Some(p) => format!(
                "packing {} as IGVM with VTL0 payload {}",
                elf.display(),
                p.display()
            ),
        })?;
    std::fs::write(out, &packed).with_context(|| format!("cannot write {}", out.display()))
}

/// The VTL0 payload for `arch` from `--vtl0`: `{arch}` in the path is replaced by the arch name
/// (`target/images/vtl0-{arch}.elf`); a path without it names one arch's payload only.
pub fn vtl0_payload_path(template: &str, arch: Arch, arches: usize) -> Result<PathBuf> {
    if !template.contains("{arch}") && arches > 1 {
        bail!(
            "--vtl0 {template}: one payload cannot serve {arches} architectures; pick one with \
             --arch or put {{arch}} in the path"
        );
    }
    Ok(PathBuf::from(template.replace("{arch}", arch.name())))
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

/// Where the test IGVM file (the paravisor with the VTL0 test kernel as its VTL0 payload) is
/// written: `target/images/paravisor-<arch>[-debug]-vtl0.igvm`.
pub fn test_igvm_path(arch: Arch, release: bool) -> PathBuf {
    let suffix = if release { "" } else { "-debug" };
    image_dir().join(format!("paravisor-{}{suffix}-vtl0.igvm", arch.name()))
}

/// Builds (release) what a live-VTL0 bench or soak boots: the paravisor, the VTL0 test kernel,
/// the test IGVM file and the in-VM host.
pub fn build_live(arch: Arch) -> Result<()> {
    let image = build(arch, true)?;
    let kernel = build_vtl0(arch, true)?;
    pack(arch, &image.elf, Some(&kernel), &test_igvm_path(arch, true))?;
    build_invm(arch, true)?;
    Ok(())
}

/// Builds every arch in `arches` and prints each output path and size, with the in-VM mock
/// hypervisor that boots its image, the VTL0 test kernel and the test IGVM file that carries
/// it. With `vtl0` (see [`vtl0_payload_path`]) the paravisor's own IGVM file carries that VTL0
/// payload; without, none (the deliverable: on Hyper-V, VTL0's firmware is the host's).
pub fn build_all(arches: &[Arch], release: bool, vtl0: Option<&str>) -> Result<Vec<Image>> {
    let mut images = Vec::new();
    for &arch in arches {
        let payload = vtl0
            .map(|t| vtl0_payload_path(t, arch, arches.len()))
            .transpose()?;
        let image = build_with(arch, release, payload.as_deref())?;
        let kernel = build_vtl0(arch, release)?;
        let test_igvm = test_igvm_path(arch, release);
        pack(arch, &image.elf, Some(&kernel), &test_igvm)?;
        let paths = [
            image.elf.clone(),
            image.igvm.clone(),
            build_invm(arch, release)?,
            kernel,
            test_igvm,
        ];
        for path in &paths {
            let size = std::fs::metadata(path)?.len();
            println!("{:<8} {} ({size} bytes)", arch.name(), path.display());
            if path.extension().is_some_and(|e| e == "igvm") {
                // What a VBS launch measures of the file (the igvm crate's digest).
                let digest = crate::igvm::digest(&std::fs::read(path)?)?;
                println!("{:<8}   VBS measurement (SHA-256) {digest}", arch.name());
            }
        }
        images.push(image);
    }
    Ok(images)
}
