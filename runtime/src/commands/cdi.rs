//! `cdi generate` and `cdi list`: a CDI spec for this host's GPUs (what `nvidia-ctk cdi
//! generate` writes, so podman, CRI-O and containerd can use the GPUs too), and the device
//! names the configured spec directories define.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result};
use gpu::cdi::registry::Registry;
use gpu::cdi::spec::SpecFormat;
use gpu::config::GpuConfig;
use gpu::inventory::HostInventory;

use crate::cli::{CdiCommand, CdiFormat};

pub fn cdi(command: CdiCommand) -> Result<()> {
    let config = GpuConfig::load()?;
    match command {
        CdiCommand::Generate { output, format } => {
            let inventory = HostInventory::read(&config.driver)?;
            let spec = gpu::cdi::generate::generate(&inventory)?;
            let format = match (format, output.as_deref().and_then(SpecFormat::of)) {
                (Some(CdiFormat::Json), _) => SpecFormat::Json,
                (Some(CdiFormat::Yaml), _) => SpecFormat::Yaml,
                (None, Some(format)) => format,
                (None, None) => SpecFormat::Yaml,
            };
            let text = spec.to_text(format)?;
            match output {
                Some(path) => write_atomically(&path, text.as_bytes())?,
                None => print!("{text}"),
            }
        }
        CdiCommand::List => {
            let registry = Registry::read(&config.cdi.spec_dirs);
            for name in registry.device_names() {
                println!("{name}");
            }
            for (path, err) in &registry.errors {
                eprintln!("skipped {}: {err}", path.display());
            }
        }
    }
    Ok(())
}

/// Writes `data` to a temporary file next to `path` (mode 0644) and renames it over `path`, so
/// a runtime reading the directory never sees half a spec.
fn write_atomically(path: &Path, data: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = path
        .file_name()
        .with_context(|| format!("{} names no file", path.display()))?;
    // A dot name with another extension, so CDI readers skip it while it is written.
    let temp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&temp)
        .with_context(|| format!("cannot create {}", temp.display()))?;
    file.write_all(data)
        .and_then(|()| file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644)))
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", temp.display()))?;
    std::fs::rename(&temp, path).with_context(|| format!("cannot replace {}", path.display()))
}
