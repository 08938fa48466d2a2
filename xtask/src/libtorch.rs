//! libtorch, installed by the project itself.
//!
//! `tch` 0.26 needs PyTorch 2.13.0 exactly. torch-sys's own download cannot reach its site from
//! the machines we build on, but PyPI can: the `torch==2.13.0` wheel carries libtorch (headers,
//! `lib/*.so`). On CPU only two of its CUDA dependencies are needed (libtorch_cpu.so links
//! libcudart.so.13 and libcupti.so.13), so the default install is ONE pip command with `--no-deps`
//! (~540 MB). Two pip installs into one `--target` would silently lose the shared `nvidia/`
//! folder, hence one command. `--cuda` installs the full wheel with all its CUDA dependencies.
//!
//! The install lives outside the checkout, in `$SPINDLE_CACHE/libtorch` (default
//! `~/.cache/spindle/libtorch`), is written to a temporary folder and renamed when complete (an
//! interrupted install is never mistaken for a finished one), and is linked into the checkout as
//! `.libtorch`, which `.cargo/config.toml` names as `LIBTORCH` and the binaries' rpath points at.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::project_root;

/// The PyTorch release `tch` 0.26 is built against.
pub(crate) const TORCH_VERSION: &str = "2.13.0";

/// Marker written last into a finished install; its content is the pip specification.
const COMPLETE_MARKER: &str = ".spindle-complete";

#[derive(Debug, clap::Args)]
pub(crate) struct SetupArgs {
    /// Install the full CUDA wheel (all NVIDIA runtime libraries, several GB) and link it, for
    /// `cargo build --features cuda` on a GPU machine.
    #[arg(long)]
    cuda: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Cpu,
    Cuda,
}

impl Variant {
    fn dir_name(self) -> String {
        match self {
            Variant::Cpu => format!("torch-{TORCH_VERSION}-cpu"),
            Variant::Cuda => format!("torch-{TORCH_VERSION}-cuda"),
        }
    }

    /// The pip arguments after `install`.
    fn pip_args(self) -> Vec<String> {
        match self {
            Variant::Cpu => vec![
                "--no-deps".into(),
                format!("torch=={TORCH_VERSION}"),
                "nvidia-cuda-runtime==13.0.96".into(),
                "nvidia-cuda-cupti==13.0.85".into(),
            ],
            Variant::Cuda => vec![format!("torch=={TORCH_VERSION}")],
        }
    }

    /// Files whose presence shows the install is usable for linking and running.
    fn required_files(self) -> &'static [&'static str] {
        match self {
            Variant::Cpu => &[
                "torch/lib/libtorch_cpu.so",
                "torch/lib/libc10.so",
                "torch/include/torch/csrc/api/include/torch/torch.h",
                "nvidia/cu13/lib/libcudart.so.13",
                "nvidia/cu13/lib/libcupti.so.13",
            ],
            Variant::Cuda => {
                &["torch/lib/libtorch_cpu.so", "torch/lib/libtorch_cuda.so", "torch/include/torch/csrc/api/include/torch/torch.h"]
            }
        }
    }
}

/// `$SPINDLE_CACHE`, else `$XDG_CACHE_HOME/spindle`, else `~/.cache/spindle`.
pub(crate) fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("SPINDLE_CACHE").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("spindle"));
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".cache").join("spindle")),
        None => bail!("cannot place the cache: neither SPINDLE_CACHE nor HOME is set"),
    }
}

/// The link in the checkout that `.cargo/config.toml` names as `LIBTORCH`.
pub(crate) fn link_path() -> PathBuf {
    project_root().join(".libtorch")
}

/// A libtorch directory (the one holding `include/` and `lib/`) that a user pointed `LIBTORCH`
/// at themselves, if any. Cargo's `[env]` sets `LIBTORCH` to our own link for every process it
/// starts, xtask included; that value is not a user choice.
fn user_libtorch() -> Option<PathBuf> {
    let value = PathBuf::from(std::env::var_os("LIBTORCH").filter(|v| !v.is_empty())?);
    (value != link_path()).then_some(value)
}

/// The `lib/` folder the tests and binaries load libtorch from.
pub(crate) fn lib_dir() -> PathBuf {
    user_libtorch().unwrap_or_else(link_path).join("lib")
}

/// Makes sure a usable libtorch is linked, installing the CPU variant when nothing is there;
/// returns the libtorch directory.
pub(crate) fn ensure() -> Result<PathBuf> {
    setup(&SetupArgs { cuda: false })
}

pub(crate) fn setup(args: &SetupArgs) -> Result<PathBuf> {
    if let Some(dir) = user_libtorch() {
        if !dir.join("lib").join("libtorch_cpu.so").is_file() {
            bail!(
                "LIBTORCH is set to {} but {}/lib/libtorch_cpu.so does not exist; unset LIBTORCH to let \
                 `cargo xtask setup` install libtorch {TORCH_VERSION} itself",
                dir.display(),
                dir.display()
            );
        }
        eprintln!("using LIBTORCH={} from the environment", dir.display());
        return Ok(dir);
    }
    let link = link_path();
    if !args.cuda && link_is_usable(&link) {
        return Ok(link);
    }
    let variant = if args.cuda { Variant::Cuda } else { Variant::Cpu };
    let install = install(variant)?;
    relink(&link, &install.join("torch"))?;
    Ok(link)
}

fn link_is_usable(link: &Path) -> bool {
    link.join("lib").join("libtorch_cpu.so").is_file() && link.join("include").join("torch").is_dir()
}

fn is_complete(dir: &Path, variant: Variant) -> bool {
    dir.join(COMPLETE_MARKER).is_file() && variant.required_files().iter().all(|f| dir.join(f).exists())
}

/// Installs `variant` into the cache unless a complete install is already there.
fn install(variant: Variant) -> Result<PathBuf> {
    let root = cache_dir()?.join("libtorch");
    let target = root.join(variant.dir_name());
    if is_complete(&target, variant) {
        return Ok(target);
    }
    fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let tmp = root.join(format!(".tmp-{}-{}", variant.dir_name(), std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).with_context(|| format!("cannot remove {}", tmp.display()))?;
    }
    eprintln!(
        "installing libtorch {TORCH_VERSION} ({}) from PyPI into {} (once; ~540 MB for CPU)",
        if variant == Variant::Cuda { "CUDA, full wheel" } else { "CPU" },
        target.display()
    );
    let python = std::env::var_os("PYTHON").unwrap_or_else(|| "python3".into());
    let mut pip = Command::new(&python);
    pip.args(["-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--target"]).arg(&tmp).args(variant.pip_args());
    let status = pip.status().with_context(|| {
        format!(
            "could not run `{} -m pip`: spindle installs libtorch from PyPI with pip; install Python 3 \
             with pip, or set PYTHON to one that has it, or set LIBTORCH to an existing libtorch {TORCH_VERSION}",
            python.to_string_lossy()
        )
    })?;
    if !status.success() {
        // Leave nothing half-written behind.
        let _ = fs::remove_dir_all(&tmp);
        bail!("pip install of libtorch {TORCH_VERSION} failed ({status}); nothing was installed");
    }
    let missing: Vec<_> = variant.required_files().iter().filter(|f| !tmp.join(f).exists()).collect();
    if !missing.is_empty() {
        let _ = fs::remove_dir_all(&tmp);
        bail!("pip finished but the install lacks {missing:?}; nothing was installed");
    }
    fs::write(tmp.join(COMPLETE_MARKER), variant.pip_args().join(" "))
        .with_context(|| format!("cannot write the completion marker in {}", tmp.display()))?;
    if target.exists() {
        fs::remove_dir_all(&target).with_context(|| format!("cannot remove the incomplete install {}", target.display()))?;
    }
    fs::rename(&tmp, &target).with_context(|| format!("cannot move {} to {}", tmp.display(), target.display()))?;
    Ok(target)
}

/// Points `link` at `target`, replacing an older link atomically. A real directory at `link`
/// (a user's own libtorch) is never removed.
fn relink(link: &Path, target: &Path) -> Result<()> {
    match fs::symlink_metadata(link) {
        Ok(meta) if !meta.file_type().is_symlink() => bail!(
            "{} exists and is not a link; it is not a usable libtorch (no lib/libtorch_cpu.so). \
             Move it away and rerun `cargo xtask setup`",
            link.display()
        ),
        _ => {}
    }
    let tmp = link.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).with_context(|| format!("cannot create the link {}", tmp.display()))?;
    fs::rename(&tmp, link).with_context(|| format!("cannot move the link into {}", link.display()))?;
    eprintln!("linked {} -> {}", link.display(), target.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_install_is_one_pip_command_without_deps() {
        let args = Variant::Cpu.pip_args();
        assert_eq!(args[0], "--no-deps");
        assert!(args.contains(&format!("torch=={TORCH_VERSION}")));
        assert!(args.iter().any(|a| a.starts_with("nvidia-cuda-runtime==")));
        assert!(args.iter().any(|a| a.starts_with("nvidia-cuda-cupti==")));
    }

    #[test]
    fn an_install_without_marker_is_incomplete() {
        let dir = std::env::temp_dir().join(format!("xtask-marker-{}", std::process::id()));
        for f in Variant::Cpu.required_files() {
            let p = dir.join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, b"").unwrap();
        }
        assert!(!is_complete(&dir, Variant::Cpu));
        fs::write(dir.join(COMPLETE_MARKER), b"x").unwrap();
        assert!(is_complete(&dir, Variant::Cpu));
        fs::remove_file(dir.join(Variant::Cpu.required_files()[0])).unwrap();
        assert!(!is_complete(&dir, Variant::Cpu));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tch_and_the_installed_version_agree() {
        // tch's version must match TORCH_VERSION; Cargo.lock records the tch we build with.
        let lock = fs::read_to_string(project_root().join("Cargo.lock")).unwrap();
        let tch = lock.split("[[package]]").find(|p| p.contains("name = \"tch\"")).unwrap();
        assert!(tch.contains("version = \"0.26."), "tch 0.26 expects PyTorch {TORCH_VERSION}: {tch}");
    }
}
