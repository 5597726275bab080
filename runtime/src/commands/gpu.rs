//! `gpu inventory` and `gpu plan`: what the host's driver offers (like `nvidia-container-cli
//! info` and `list`), and what a bundle's container would get, before starting anything.

use std::fmt::Write as _;

use anyhow::{bail, Result};
use gpu::config::GpuConfig;
use gpu::inventory::HostInventory;
use gpu::plan::GpuPlan;

use super::absolute;
use super::create::load_bundle_spec;
use crate::cli::{GpuCommand, OutputFormat};
use crate::gpu_stage::{identify_mig_devices, plan_for};

pub fn gpu(command: GpuCommand) -> Result<()> {
    let config = GpuConfig::load()?;
    let inventory = HostInventory::read(&config.driver)?;
    match command {
        GpuCommand::Inventory { format } => {
            let mut inventory = inventory;
            // A diagnostic: MIG devices are shown without NVML identities if it cannot be asked.
            if let Err(err) = identify_mig_devices(&mut inventory) {
                tracing::warn!("{err:#}");
            }
            match format {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&inventory)?),
                OutputFormat::Table => print!("{}", inventory_table(&inventory)),
            }
        }
        GpuCommand::Plan { bundle, format } => {
            let bundle = absolute(&bundle)?;
            let spec = load_bundle_spec(&bundle)?;
            let Some((plan, _)) = plan_for(&spec, &bundle, &config, Some(&inventory))? else {
                bail!(
                    "{}/config.json asks for no GPU and no CDI device: the container gets nothing",
                    bundle.display()
                );
            };
            match format {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&plan)?),
                OutputFormat::Table => print!("{}", plan_table(&plan)),
            }
        }
    }
    Ok(())
}

fn inventory_table(inventory: &HostInventory) -> String {
    let mut out = String::new();
    let roots = &inventory.roots;
    let _ = writeln!(
        out,
        "NVIDIA driver {} (root {}, dev-root {}, proc-root {})",
        inventory.driver_version,
        roots.root.display(),
        roots.dev_root.display(),
        roots.proc_root.display()
    );
    let _ = writeln!(
        out,
        "\n{:<6} {:<41} {:<13} MODEL",
        "INDEX", "UUID", "BUS ID"
    );
    for gpu in &inventory.gpus {
        let _ = writeln!(
            out,
            "{:<6} {:<41} {:<13} {}",
            gpu.index,
            gpu.uuid.as_deref().unwrap_or("-"),
            gpu.bus_id,
            gpu.model.as_deref().unwrap_or("-")
        );
    }
    let _ = writeln!(out, "\nDEVICES");
    for device in inventory
        .control_devices
        .iter()
        .chain(inventory.gpus.iter().map(|g| &g.device))
    {
        let _ = writeln!(
            out,
            "  {} {}:{}",
            device.path.display(),
            device.major,
            device.minor
        );
    }
    if !inventory.mig_capabilities.is_empty() {
        let _ = writeln!(out, "\nMIG CAPABILITIES");
        for cap in &inventory.mig_capabilities {
            let node = cap
                .device
                .as_ref()
                .map_or("no node".to_string(), |d| d.path.display().to_string());
            let _ = writeln!(out, "  {} (minor {}): {node}", cap.capability, cap.minor);
        }
    }
    if !inventory.mig_devices.is_empty() {
        let _ = writeln!(out, "\nMIG DEVICES");
        for mig in &inventory.mig_devices {
            let index = mig
                .index
                .map_or("-".to_string(), |i| format!("{}:{i}", mig.gpu));
            let _ = writeln!(
                out,
                "  {index:<6} gpu {} gi {} ci {} (caps {}, {}) {}",
                mig.gpu,
                mig.gpu_instance,
                mig.compute_instance,
                mig.gpu_instance_access.minor,
                mig.compute_instance_access.minor,
                mig.uuid.as_deref().unwrap_or("-")
            );
        }
    }
    let others = inventory
        .imex_channels
        .iter()
        .chain(inventory.feature_devices.iter().map(|f| &f.device))
        .chain(inventory.gpus.iter().flat_map(|g| &g.drm));
    let mut others = others.peekable();
    if others.peek().is_some() {
        let _ = writeln!(
            out,
            "\nOTHER DEVICES (IMEX, GDS, MOFED, NVSwitch, GDRCopy, DRM)"
        );
        for device in others {
            let _ = writeln!(
                out,
                "  {} {}:{} gid {}",
                device.path.display(),
                device.major,
                device.minor,
                device.gid
            );
        }
    }
    let mut part = None;
    for file in &inventory.files {
        if part != Some(file.part) {
            part = Some(file.part);
            let _ = writeln!(
                out,
                "\n{}",
                serde_json::to_value(file.part)
                    .unwrap_or_default()
                    .as_str()
                    .unwrap_or_default()
                    .to_uppercase()
            );
        }
        let soname = file
            .soname
            .as_deref()
            .map(|s| format!(" ({s})"))
            .unwrap_or_default();
        let _ = writeln!(out, "  {}{soname}  {}", file.name, file.host_path.display());
    }
    out
}

fn plan_table(plan: &GpuPlan) -> String {
    let mut out = String::new();
    let gpus: Vec<String> = plan.gpus.iter().map(u32::to_string).collect();
    let _ = writeln!(
        out,
        "driver {}; GPUs: {}",
        plan.driver_version,
        if gpus.is_empty() {
            "none".into()
        } else {
            gpus.join(", ")
        }
    );
    for mig in &plan.mig_devices {
        let _ = writeln!(
            out,
            "MIG device: GPU {} gi {} ci {} {}",
            mig.gpu,
            mig.gpu_instance,
            mig.compute_instance,
            mig.uuid.as_deref().unwrap_or("")
        );
    }
    if !plan.additional_gids.is_empty() {
        let gids: Vec<String> = plan.additional_gids.iter().map(u32::to_string).collect();
        let _ = writeln!(out, "additional groups: {}", gids.join(", "));
    }
    let _ = writeln!(out, "\nDEVICES (node and cgroup rule rwm)");
    for device in &plan.devices {
        let _ = writeln!(
            out,
            "  {} c {}:{}",
            device.path.display(),
            device.major,
            device.minor
        );
    }
    let _ = writeln!(out, "\nMOUNTS");
    for mount in &plan.mounts {
        let flags = if mount.writable {
            "rw,nosuid,nodev,noexec"
        } else {
            "ro,nosuid,nodev"
        };
        let _ = writeln!(
            out,
            "  {} <- {} ({flags})",
            mount.destination.display(),
            mount.source.display()
        );
    }
    let _ = writeln!(out, "\nLINKS");
    for link in &plan.links {
        let _ = writeln!(
            out,
            "  {} -> {}",
            link.path.display(),
            link.target.display()
        );
    }
    let _ = writeln!(out, "\nFILES");
    for file in &plan.files {
        let _ = writeln!(
            out,
            "  {} ({} bytes)",
            file.path.display(),
            file.content.len()
        );
    }
    let _ = writeln!(
        out,
        "\n/proc/driver/nvidia/gpus: {}",
        plan.proc_view
            .as_ref()
            .map_or("-".to_string(), |v| v.gpus.join(", "))
    );
    if let Some(view) = &plan.proc_view {
        if view.all_capabilities {
            let _ = writeln!(out, "/proc/driver/nvidia/capabilities: all");
        } else if !view.capabilities.is_empty() {
            let _ = writeln!(
                out,
                "/proc/driver/nvidia/capabilities: {}",
                view.capabilities.join(", ")
            );
        }
    }
    out
}
