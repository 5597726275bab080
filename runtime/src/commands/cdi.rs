//! `cdi generate` and `cdi list`: a CDI spec for this host's GPUs (what `nvidia-ctk cdi
//! generate` writes, so podman, CRI-O and containerd can use the GPUs too), and the device
//! names the configured spec directories define.

use anyhow::Result;
use gpu::cdi::registry::Registry;
use gpu::cdi::spec::SpecFormat;
use gpu::config::GpuConfig;
use gpu::inventory::HostInventory;

use crate::cli::{CdiCommand, CdiFormat};
use gpu::atomic_file::write_atomically;

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
                Some(path) => write_atomically(&path, text.as_bytes(), 0o644)?,
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
