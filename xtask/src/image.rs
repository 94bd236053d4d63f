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
pub fn vtl0_path(template: &str, arch: Arch, arches: usize) -> Result<PathBuf> {
    if !template.contains("{arch}") && arches > 1 {
        bail!(
            "--vtl0 {template}: one payload cannot serve {arches} architectures; pick one with \
             --arch or put {{arch}} in the path"
        );
    }
    Ok(PathBuf::from(template.replace("{arch}", arch.name())))
}

/// Where the in-VM mock's EL2 host is written: `target/images/invm-aarch64[-debug].elf`.
pub fn invm_path(release: bool) -> PathBuf {
    let suffix = if release { "" } else { "-debug" };
    image_dir().join(format!("invm-aarch64{suffix}.elf"))
}

/// Builds the in-VM mock hypervisor (`tests/invm`, arm64 only so far): the EL2 host that runs
/// the paravisor image under stage 2 (`tests/e2e/tests/invm_arm64.rs` boots it).
pub fn build_invm(release: bool) -> Result<PathBuf> {
    let arch = Arch::Aarch64;
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
    let out = invm_path(release);
    std::fs::create_dir_all(image_dir())?;
    std::fs::copy(&built, &out)
        .with_context(|| format!("cannot copy {} to {}", built.display(), out.display()))?;
    Ok(out)
}

/// Builds every arch in `arches` and prints each output path and size; with aarch64, also the
/// in-VM mock hypervisor that boots its image.
/// With `vtl0` (see [`vtl0_path`]) the IGVM files carry that VTL0 payload; without, none.
pub fn build_all(arches: &[Arch], release: bool, vtl0: Option<&str>) -> Result<Vec<Image>> {
    let mut images = Vec::new();
    for &arch in arches {
        let payload = vtl0.map(|t| vtl0_path(t, arch, arches.len())).transpose()?;
        let image = build_with(arch, release, payload.as_deref())?;
        let mut paths = vec![image.elf.clone(), image.igvm.clone()];
        if arch == Arch::Aarch64 {
            paths.push(build_invm(release)?);
        }
        for path in &paths {
            let size = std::fs::metadata(path)?.len();
            println!("{:<8} {} ({size} bytes)", arch.name(), path.display());
        }
        images.push(image);
    }
    Ok(images)
}
