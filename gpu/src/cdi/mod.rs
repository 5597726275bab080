//! CDI (Container Device Interface), done natively: spec files are read from the configured
//! directories only when a container names a CDI device, the names are resolved, and each
//! device's edits are compiled into the same [`GpuPlan`](crate::plan::GpuPlan) parts the rest of
//! the stage applies. NVIDIA's CDI hooks (`nvidia-cdi-hook <name>`, `nvidia-ctk hook <name>`) are
//! not run: what they would do is part of the plan, whether they come from a spec or are
//! already in config.json.
//!
//! * [`spec`]: the file format;
//! * [`registry`]: the spec directories and name resolution;
//! * [`hooks`]: NVIDIA's hooks, recognised and parsed;
//! * [`compile`]: resolved devices → plan parts;
//! * [`generate`]: a spec for this host (`gpu-youki cdi generate`).

pub mod compile;
pub mod generate;
pub mod hooks;
pub mod registry;
pub mod spec;

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use oci_spec::runtime::{LinuxDeviceType, Spec};

use crate::request::CdiDeviceName;
use compile::{nvidia_hooks, CdiRequest};

/// Annotations whose key starts with this name CDI devices (values: comma-separated qualified
/// names), as containerd, CRI-O and the NVIDIA runtime read them.
pub const ANNOTATION_PREFIX: &str = "cdi.k8s.io/";

/// Whether any annotation could name CDI devices (cheap; no parsing).
pub fn has_device_annotations(
    annotations: Option<&std::collections::HashMap<String, String>>,
) -> bool {
    annotations.is_some_and(|a| a.keys().any(|k| k.starts_with(ANNOTATION_PREFIX)))
}

/// The CDI device names in `cdi.k8s.io/*` annotations, in key order, without duplicates.
pub fn annotation_devices(
    annotations: Option<&std::collections::HashMap<String, String>>,
) -> Result<Vec<CdiDeviceName>> {
    let sorted: BTreeMap<&String, &String> = annotations.into_iter().flatten().collect();
    let mut names = Vec::new();
    for (key, value) in sorted {
        if !key.starts_with(ANNOTATION_PREFIX) {
            continue;
        }
        for token in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let name: CdiDeviceName = token.parse().with_context(|| format!("annotation {key}"))?;
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    Ok(names)
}

/// `(path, args)` of every hook in the spec.
fn spec_hooks(spec: &Spec) -> impl Iterator<Item = (String, Vec<String>)> + '_ {
    let hooks = spec.hooks().as_ref();
    #[allow(deprecated)]
    let lists = hooks.into_iter().flat_map(|h| {
        [
            h.prestart(),
            h.create_runtime(),
            h.create_container(),
            h.start_container(),
            h.poststart(),
            h.poststop(),
        ]
    });
    lists.flatten().flatten().map(|hook| {
        (
            hook.path().to_string_lossy().into_owned(),
            hook.args().clone().unwrap_or_default(),
        )
    })
}

/// The CDI part of the request in config.json: the NVIDIA hooks and the bind mounts and
/// character devices an engine that applies CDI edits itself already put there (the devices
/// it names are resolved by the caller).
pub fn config_request(spec: &Spec) -> Result<CdiRequest<'static>> {
    let hooks: Vec<(String, Vec<String>)> = spec_hooks(spec).collect();
    let config_hooks = nvidia_hooks(hooks.iter().map(|(p, a)| (p.as_str(), a.as_slice())))?;
    let config_binds = spec
        .mounts()
        .iter()
        .flatten()
        .filter(|m| {
            spec::is_bind_mount(
                m.typ().as_deref(),
                m.options().as_deref().unwrap_or_default(),
            )
        })
        .filter_map(|m| Some((m.source().clone()?, m.destination().clone())))
        .collect();
    let config_devices = spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().as_ref())
        .into_iter()
        .flatten()
        .filter(|d| d.typ() == LinuxDeviceType::C)
        .filter_map(|d| {
            Some((
                u32::try_from(d.major()).ok()?,
                u32::try_from(d.minor()).ok()?,
            ))
        })
        .collect();
    Ok(CdiRequest {
        devices: Vec::new(),
        config_hooks,
        config_binds,
        config_devices,
    })
}

/// Whether config.json holds NVIDIA CDI hooks (cheap; nothing is parsed).
pub fn has_nvidia_hooks(spec: &Spec) -> bool {
    spec_hooks(spec).any(|(path, args)| hooks::is_nvidia_hook(&path, &args))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn annotations_name_devices_in_key_order() {
        let annotations: HashMap<String, String> = [
            ("cdi.k8s.io/b", "vendor.com/dev=x, nvidia.com/gpu=0"),
            ("cdi.k8s.io/a", "nvidia.com/gpu=all,vendor.com/dev=x"),
            ("other.io/c", "not=a,name"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert!(has_device_annotations(Some(&annotations)));
        let names: Vec<String> = annotation_devices(Some(&annotations))
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            names,
            ["nvidia.com/gpu=all", "vendor.com/dev=x", "nvidia.com/gpu=0"]
        );
        let bad: HashMap<String, String> =
            [("cdi.k8s.io/x".to_string(), "gpu0".to_string())].into();
        let err = format!("{:#}", annotation_devices(Some(&bad)).unwrap_err());
        assert!(
            err.contains("cdi.k8s.io/x") && err.contains("gpu0"),
            "{err}"
        );
        assert!(!has_device_annotations(None));
    }
}
