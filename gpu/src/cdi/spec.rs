//! The CDI spec file format (CDI specification 1.1.0): the serde types, reading a `.json` or
//! `.yaml` file, the checks the CDI library makes on load, and the minimum `cdiVersion` a spec
//! needs for the features it uses.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

use crate::request::CdiDeviceName;

/// The spec versions the CDI library knows, oldest first; 0.3.0 is the oldest it reads.
pub const KNOWN_VERSIONS: &[&str] = &[
    "0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "1.0.0", "1.1.0",
];

/// The OCI lifecycle hook names (what a CDI hook may name, and `features` reports).
pub const HOOK_NAMES: [&str; 6] = [
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

/// One spec file: a vendor's devices of one class and the edits they share.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Spec {
    /// e.g. `0.5.0`.
    pub cdi_version: String,
    /// `vendor/class`, e.g. `nvidia.com/gpu`.
    pub kind: String,
    /// Free-form annotations (≥ 0.6.0).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The devices.
    #[serde(default)]
    pub devices: Vec<Device>,
    /// Edits applied once for any device of this spec that is requested.
    #[serde(default, skip_serializing_if = "ContainerEdits::is_empty")]
    pub container_edits: ContainerEdits,
}

/// One device of a spec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Device {
    /// The name after `=` in `vendor/class=name`.
    pub name: String,
    /// Free-form annotations (≥ 0.6.0).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The device's own edits.
    #[serde(default)]
    pub container_edits: ContainerEdits,
}

/// What a device (or a whole spec) adds to a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerEdits {
    /// `KEY=VALUE` items appended to the process environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Device nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_nodes: Vec<DeviceNodeEdit>,
    /// OCI hooks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<HookEdit>,
    /// Mounts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<MountEdit>,
    /// Intel RDT settings (≥ 0.7.0); gpu-youki refuses specs that use them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intel_rdt: Option<serde_json::Value>,
    /// Groups added to the process (≥ 0.7.0).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_gids: Vec<u32>,
    /// Network devices moved into the container (≥ 1.1.0); gpu-youki refuses them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub net_devices: Vec<serde_json::Value>,
}

impl ContainerEdits {
    /// Whether there is nothing to apply.
    pub fn is_empty(&self) -> bool {
        self == &ContainerEdits::default()
    }
}

/// A device node edit; missing fields come from the host node (`stat`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceNodeEdit {
    /// Path inside the container.
    pub path: String,
    /// Path on the host (≥ 0.5.0); `path` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    /// `c`, `b`, `u` or `p`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Device major.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major: Option<i64>,
    /// Device minor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minor: Option<i64>,
    /// Go's `os.FileMode` (type bits above the permission bits are ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_mode: Option<u32>,
    /// Cgroup access, some of `rwm`; `rwm` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<String>,
    /// Owner inside the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Group inside the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
}

/// A mount edit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MountEdit {
    /// Source on the host (or the filesystem's source for non-bind mounts).
    pub host_path: String,
    /// Destination inside the container.
    pub container_path: String,
    /// Mount options as in the OCI spec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    /// Filesystem type (≥ 0.4.0); a bind mount when absent.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

impl MountEdit {
    /// Whether this binds a host path (type `bind`/none with a bind option, or type `bind`).
    pub fn is_bind(&self) -> bool {
        is_bind_mount(self.kind.as_deref(), &self.options)
    }
}

/// Whether a mount of type `kind` with `options` binds a host path (OCI: type `bind`, or no
/// type and a `bind`/`rbind` option).
pub fn is_bind_mount(kind: Option<&str>, options: &[String]) -> bool {
    match kind {
        Some("bind") => true,
        None | Some("") => options.iter().any(|o| o == "bind" || o == "rbind"),
        Some(_) => false,
    }
}

/// An OCI hook edit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HookEdit {
    /// The lifecycle list it goes to (one of [`HOOK_NAMES`]).
    pub hook_name: String,
    /// The program.
    pub path: String,
    /// Its argv, `args[0]` included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Its environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
}

/// A spec file's format, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecFormat {
    /// `.json`.
    Json,
    /// `.yaml` (also `.yml` for output).
    Yaml,
}

impl SpecFormat {
    /// The format of a file named `path`, `None` for other extensions (not a spec file).
    pub fn of(path: &Path) -> Option<SpecFormat> {
        match path.extension()?.to_str()? {
            "json" => Some(SpecFormat::Json),
            "yaml" | "yml" => Some(SpecFormat::Yaml),
            _ => None,
        }
    }
}

impl Spec {
    /// Reads and checks the spec file at `path`.
    pub fn read(path: &Path) -> Result<Spec> {
        let format = SpecFormat::of(path)
            .with_context(|| format!("{} is not a .json or .yaml file", path.display()))?;
        let text = std::fs::read(path)
            .with_context(|| format!("cannot read CDI spec {}", path.display()))?;
        Spec::parse(&text, format).with_context(|| format!("invalid CDI spec {}", path.display()))
    }

    /// Parses and checks spec text.
    pub fn parse(text: &[u8], format: SpecFormat) -> Result<Spec> {
        // The parsers quote the file's own text (an unknown field's name, say): kept on one line.
        let one_line = |err: &dyn std::fmt::Display| {
            anyhow::anyhow!("{}", err.to_string().replace(['\n', '\r'], " "))
        };
        let spec: Spec = match format {
            SpecFormat::Json => serde_json::from_slice(text).map_err(|err| one_line(&err))?,
            SpecFormat::Yaml => serde_norway::from_slice(text).map_err(|err| one_line(&err))?,
        };
        spec.validate()?;
        Ok(spec)
    }

    /// The text of the spec in `format`.
    pub fn to_text(&self, format: SpecFormat) -> Result<String> {
        Ok(match format {
            SpecFormat::Json => serde_json::to_string_pretty(self)? + "\n",
            SpecFormat::Yaml => format!("---\n{}", serde_norway::to_string(self)?),
        })
    }

    /// `(vendor, class)` of the kind.
    pub fn vendor_class(&self) -> Result<(String, String)> {
        let name: CdiDeviceName = format!("{}=x", self.kind)
            .parse()
            .with_context(|| format!("kind {:?} is not vendor/class", self.kind))?;
        Ok((name.vendor, name.class))
    }

    /// The checks the CDI library makes when it loads a spec.
    fn validate(&self) -> Result<()> {
        ensure!(
            KNOWN_VERSIONS.contains(&self.cdi_version.as_str()),
            "cdiVersion {:?} is not one gpu-youki knows ({})",
            self.cdi_version,
            KNOWN_VERSIONS.join(", ")
        );
        let (vendor, class) = self.vendor_class()?;
        ensure!(!self.devices.is_empty(), "no devices");
        let mut seen = std::collections::BTreeSet::new();
        for device in &self.devices {
            let qualified = format!("{vendor}/{class}={}", device.name);
            qualified
                .parse::<CdiDeviceName>()
                .with_context(|| format!("device name {:?}", device.name))?;
            ensure!(
                seen.insert(&device.name),
                "device {:?} is defined twice",
                device.name
            );
            ensure!(
                !device.container_edits.is_empty(),
                "device {:?} has no container edits",
                device.name
            );
            device
                .container_edits
                .validate()
                .with_context(|| format!("device {:?}", device.name))?;
        }
        self.container_edits.validate()
    }

    /// The oldest `cdiVersion` that has every feature this spec uses (what the toolkit writes).
    pub fn minimum_version(&self) -> &'static str {
        let edits = std::iter::once(&self.container_edits)
            .chain(self.devices.iter().map(|d| &d.container_edits));
        let mut version = "0.3.0";
        let mut raise = |to: &'static str| {
            let rank = |v: &str| KNOWN_VERSIONS.iter().position(|k| *k == v);
            if rank(to) > rank(version) {
                version = to;
            }
        };
        for edit in edits {
            if !edit.net_devices.is_empty() {
                raise("1.1.0");
            }
            if edit.intel_rdt.is_some() || !edit.additional_gids.is_empty() {
                raise("0.7.0");
            }
            if edit.device_nodes.iter().any(|d| d.host_path.is_some()) {
                raise("0.5.0");
            }
            if edit.mounts.iter().any(|m| m.kind.is_some()) {
                raise("0.4.0");
            }
        }
        if self
            .devices
            .iter()
            .any(|d| d.name.starts_with(|c: char| c.is_ascii_digit()))
        {
            raise("0.5.0");
        }
        let class_has_dot = self
            .vendor_class()
            .is_ok_and(|(_, class)| class.contains('.'));
        if !self.annotations.is_empty()
            || self.devices.iter().any(|d| !d.annotations.is_empty())
            || class_has_dot
        {
            raise("0.6.0");
        }
        version
    }
}

impl ContainerEdits {
    fn validate(&self) -> Result<()> {
        for item in &self.env {
            ensure!(
                item.split_once('=').is_some_and(|(key, _)| !key.is_empty()),
                "env item {item:?} is not KEY=VALUE"
            );
        }
        for node in &self.device_nodes {
            ensure!(
                node.path.starts_with('/'),
                "device node path {:?} is not absolute",
                node.path
            );
            if let Some(kind) = &node.kind {
                ensure!(
                    matches!(kind.as_str(), "c" | "b" | "u" | "p"),
                    "device node {} has type {kind:?} (expected c, b, u or p)",
                    node.path
                );
            }
            if let Some(permissions) = &node.permissions {
                ensure!(
                    !permissions.is_empty() && permissions.chars().all(|c| "rwm".contains(c)),
                    "device node {} has permissions {permissions:?} (expected some of rwm)",
                    node.path
                );
            }
        }
        for hook in &self.hooks {
            ensure!(
                HOOK_NAMES.contains(&hook.hook_name.as_str()),
                "hook {} has the unknown hookName {:?}",
                hook.path,
                hook.hook_name
            );
        }
        for mount in &self.mounts {
            ensure!(
                mount.container_path.starts_with('/'),
                "mount destination {:?} is not absolute",
                mount.container_path
            );
        }
        if self.intel_rdt.is_some() {
            bail!("intelRdt edits are not supported by gpu-youki");
        }
        if !self.net_devices.is_empty() {
            bail!("netDevices edits are not supported by gpu-youki");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = r#"---
cdiVersion: 0.5.0
kind: nvidia.com/gpu
containerEdits:
  env:
  - NVIDIA_VISIBLE_DEVICES=void
  deviceNodes:
  - path: /dev/nvidiactl
  hooks:
  - args:
    - nvidia-cdi-hook
    - update-ldcache
    - --folder
    - /usr/lib/x86_64-linux-gnu
    env:
    - NVIDIA_CTK_DEBUG=false
    hookName: createContainer
    path: /usr/bin/nvidia-cdi-hook
  mounts:
  - containerPath: /usr/bin/nvidia-smi
    hostPath: /usr/bin/nvidia-smi
    options:
    - ro
    - nosuid
    - nodev
    - bind
devices:
- containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
  name: "0"
"#;

    #[test]
    fn errors_quoting_the_file_stay_on_one_line() {
        let json = b"{\"cdiVersion\": \"0.5.0\", \"ki\\nd\": \"x/y\"}";
        let err = format!("{:#}", Spec::parse(json, SpecFormat::Json).unwrap_err());
        assert!(
            err.contains("unknown field") && !err.contains('\n'),
            "{err}"
        );
        let yaml = b"cdiVersion: 0.5.0\n\"ki\\nd\": x/y\n";
        let err = format!("{:#}", Spec::parse(yaml, SpecFormat::Yaml).unwrap_err());
        assert!(
            err.contains("unknown field") && !err.contains('\n'),
            "{err}"
        );
    }

    #[test]
    fn yaml_and_json_read_the_same_spec() {
        let yaml = Spec::parse(YAML.as_bytes(), SpecFormat::Yaml).unwrap();
        assert_eq!(yaml.kind, "nvidia.com/gpu");
        assert_eq!(yaml.devices[0].name, "0");
        assert!(yaml.container_edits.mounts[0].is_bind());
        let json = yaml.to_text(SpecFormat::Json).unwrap();
        let again = Spec::parse(json.as_bytes(), SpecFormat::Json).unwrap();
        assert_eq!(again, yaml);
        let yaml_text = yaml.to_text(SpecFormat::Yaml).unwrap();
        assert_eq!(
            Spec::parse(yaml_text.as_bytes(), SpecFormat::Yaml).unwrap(),
            yaml
        );
    }

    #[test]
    fn invalid_specs_are_refused_with_the_reason() {
        let cases = [
            (YAML.replace("0.5.0", "9.9.9"), "cdiVersion"),
            (YAML.replace("nvidia.com/gpu", "nvidia.com"), "kind"),
            (YAML.replace("createContainer", "preStart"), "hookName"),
            (YAML.replace("name: \"0\"", "name: \"-x\""), "device name"),
            (YAML.replace("hookName", "hookNam"), "hookNam"),
        ];
        for (text, expected) in cases {
            let err = format!(
                "{:#}",
                Spec::parse(text.as_bytes(), SpecFormat::Yaml).unwrap_err()
            );
            assert!(err.contains(expected), "{expected}: {err}");
        }
    }

    #[test]
    fn minimum_version_follows_the_features_used() {
        let mut spec = Spec::parse(YAML.as_bytes(), SpecFormat::Yaml).unwrap();
        assert_eq!(
            spec.minimum_version(),
            "0.5.0",
            "a name starting with a digit"
        );
        spec.devices[0].name = "gpu0".into();
        assert_eq!(spec.minimum_version(), "0.3.0");
        spec.container_edits.device_nodes[0].host_path = Some("/dev/nvidiactl".into());
        assert_eq!(spec.minimum_version(), "0.5.0");
        spec.kind = "nvidia.com/gpu.coherent".into();
        assert_eq!(spec.minimum_version(), "0.6.0");
        spec.container_edits.additional_gids = vec![44];
        assert_eq!(spec.minimum_version(), "0.7.0");
    }
}
