//! A CDI spec for this host, in the shape `nvidia-ctk cdi generate` writes (reference §4.3), so
//! podman, CRI-O and containerd's own CDI support can use it as well as gpu-youki: a device per
//! GPU index, per GPU UUID and `all`; the control devices, every driver file as a bind mount at
//! its host path (relative to the driver root), and NVIDIA's hooks, which gpu-youki does
//! natively and other runtimes run.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::spec::{ContainerEdits, Device, DeviceNodeEdit, HookEdit, MountEdit, Spec};
use crate::inventory::{DeviceNode, DriverPart, HostInventory};

/// The hook program the spec names (installed by the NVIDIA Container Toolkit; gpu-youki never
/// runs it).
pub const HOOK_PATH: &str = "/usr/bin/nvidia-cdi-hook";

/// The spec for `inventory`.
pub fn generate(inventory: &HostInventory) -> Result<Spec> {
    let driver_root = inventory
        .roots
        .root
        .canonicalize()
        .unwrap_or_else(|_| inventory.roots.root.clone());
    let in_container = |host: &Path| -> PathBuf {
        match host.strip_prefix(&driver_root) {
            Ok(rest) => Path::new("/").join(rest),
            Err(_) => host.to_path_buf(),
        }
    };
    let mut devices = Vec::new();
    let mut all = ContainerEdits::default();
    for gpu in &inventory.gpus {
        let edits = ContainerEdits {
            device_nodes: vec![node_edit(&gpu.device)],
            ..ContainerEdits::default()
        };
        all.device_nodes.extend(edits.device_nodes.clone());
        let names = std::iter::once(gpu.index.to_string()).chain(gpu.uuid.clone());
        for name in names {
            devices.push(Device {
                name,
                container_edits: edits.clone(),
                ..Device::default()
            });
        }
    }
    if !inventory.gpus.is_empty() {
        devices.push(Device {
            name: "all".to_string(),
            container_edits: all,
            ..Device::default()
        });
    }

    let mut mounts = Vec::new();
    let mut folders: Vec<PathBuf> = Vec::new();
    let mut links = Vec::new();
    let mut libcuda_dir = None;
    for file in &inventory.files {
        let container_path = match &file.container_path {
            Some(path) => path.clone(),
            None => in_container(&file.host_path),
        };
        let ipc = matches!(file.part, DriverPart::UtilityIpc | DriverPart::ComputeIpc);
        let options: Vec<&str> = if ipc {
            vec!["nosuid", "nodev", "rbind", "rprivate", "noexec"]
        } else {
            vec!["ro", "nosuid", "nodev", "rbind", "rprivate"]
        };
        mounts.push(MountEdit {
            host_path: file.host_path.display().to_string(),
            container_path: container_path.display().to_string(),
            options: options.into_iter().map(String::from).collect(),
            kind: None,
        });
        if !file.part.is_library() {
            continue;
        }
        let dir = container_path
            .parent()
            .unwrap_or(Path::new("/"))
            .to_path_buf();
        if file.name.starts_with("libcuda.so.") {
            libcuda_dir = Some(dir.clone());
        }
        let soname = file.soname.as_deref().unwrap_or(&file.name);
        if let Some((link, target)) = crate::plan::development_link(&file.name, soname) {
            links.push(format!(
                "{}::{}",
                target.display(),
                dir.join(link).display()
            ));
        }
        if !folders.contains(&dir) {
            folders.push(dir);
        }
    }

    let mut env = Vec::new();
    if let Some(dir) = libcuda_dir {
        env.push(format!("NVIDIA_CTK_LIBCUDA_DIR={}", dir.display()));
    }
    env.push("NVIDIA_VISIBLE_DEVICES=void".to_string());
    let mut hooks = Vec::new();
    if !links.is_empty() {
        let mut args = vec!["create-symlinks".to_string()];
        for link in links {
            args.extend(["--link".to_string(), link]);
        }
        hooks.push(hook(args));
    }
    hooks.push(hook(vec![
        "enable-cuda-compat".to_string(),
        format!("--host-driver-version={}", inventory.driver_version),
    ]));
    if !folders.is_empty() {
        let mut args = vec!["update-ldcache".to_string()];
        for folder in folders {
            args.extend(["--folder".to_string(), folder.display().to_string()]);
        }
        hooks.push(hook(args));
    }
    hooks.push(hook(vec!["disable-device-node-modification".to_string()]));

    let mut spec = Spec {
        cdi_version: String::new(),
        kind: "nvidia.com/gpu".to_string(),
        devices,
        container_edits: ContainerEdits {
            env,
            device_nodes: inventory.control_devices.iter().map(node_edit).collect(),
            hooks,
            mounts,
            ..ContainerEdits::default()
        },
        ..Spec::default()
    };
    spec.cdi_version = spec.minimum_version().to_string();
    Ok(spec)
}

/// A device node by path, with `hostPath` when the dev root is not `/`; the rest is read from
/// the host node when the spec is used, so a changed node is noticed.
fn node_edit(node: &DeviceNode) -> DeviceNodeEdit {
    DeviceNodeEdit {
        path: node.path.display().to_string(),
        host_path: (node.host_path != node.path).then(|| node.host_path.display().to_string()),
        ..DeviceNodeEdit::default()
    }
}

fn hook(args: Vec<String>) -> HookEdit {
    HookEdit {
        hook_name: "createContainer".to_string(),
        path: HOOK_PATH.to_string(),
        args: std::iter::once("nvidia-cdi-hook".to_string())
            .chain(args)
            .collect(),
        env: vec!["NVIDIA_CTK_DEBUG=false".to_string()],
        timeout: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdi::hooks::{self, NvidiaHook};
    use crate::cdi::spec::SpecFormat;
    use crate::plan::tests::inventory;

    #[test]
    fn the_spec_has_the_toolkits_shape_and_reads_back() {
        let spec = generate(&inventory(2)).unwrap();
        assert_eq!(spec.cdi_version, "0.5.0");
        let names: Vec<&str> = spec.devices.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "0",
                "GPU-00000000-0000-0000-0000-000000000000",
                "1",
                "GPU-00000001-0000-0000-0000-000000000000",
                "all"
            ]
        );
        assert_eq!(spec.devices[4].container_edits.device_nodes.len(), 2);
        let edits = &spec.container_edits;
        assert_eq!(
            edits.env,
            [
                "NVIDIA_CTK_LIBCUDA_DIR=/host/lib",
                "NVIDIA_VISIBLE_DEVICES=void"
            ]
        );
        assert_eq!(
            edits.device_nodes[0].host_path.as_deref(),
            Some("/host/dev/nvidiactl")
        );
        let parsed: Vec<NvidiaHook> = edits
            .hooks
            .iter()
            .map(|h| hooks::parse(&h.path, &h.args).unwrap().unwrap())
            .collect();
        assert!(matches!(&parsed[0], NvidiaHook::CreateSymlinks(links)
            if links.contains(&("libcuda.so.1".into(), "/host/lib/libcuda.so".into()))));
        assert_eq!(
            parsed[1],
            NvidiaHook::EnableCudaCompat {
                host_driver_version: Some("580.95.05".into()),
                host_cuda_version: None
            }
        );
        assert_eq!(
            parsed[2],
            NvidiaHook::UpdateLdcache(vec!["/host/lib".into()])
        );
        assert_eq!(parsed[3], NvidiaHook::DisableDeviceNodeModification);
        let smi = edits
            .mounts
            .iter()
            .find(|m| m.container_path == "/usr/bin/nvidia-smi")
            .unwrap();
        assert_eq!(smi.options, ["ro", "nosuid", "nodev", "rbind", "rprivate"]);
        for format in [SpecFormat::Yaml, SpecFormat::Json] {
            let text = spec.to_text(format).unwrap();
            assert_eq!(Spec::parse(text.as_bytes(), format).unwrap(), spec);
        }
    }
}
