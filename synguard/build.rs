//! Builds the XDP object (crate `synguard-ebpf`) with aya-build so that the daemon can embed it
//! with `include_bytes_aligned!`: `cargo build --release` yields one self-contained binary.
use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

/// The dated nightly (LLVM 22, as bpf-linker 0.13 is built against) that builds the object;
/// `cargo xtask setup` installs it from the same file, which also makes it rustup's toolchain
/// inside `synguard-ebpf/`.
const EBPF_TOOLCHAIN: &str = include_str!("../synguard-ebpf/rust-toolchain");

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "synguard-ebpf")
        .ok_or_else(|| anyhow!("synguard-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("synguard-ebpf manifest has no parent"))?;
    aya_build::build_ebpf(
        [Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::Custom(EBPF_TOOLCHAIN.trim()),
    )
}
