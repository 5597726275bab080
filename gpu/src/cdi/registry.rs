//! The CDI spec directories and name resolution, with the CDI library's rules: specs are the
//! `*.json` and `*.yaml` files of each directory; a device defined in a later directory
//! overrides an earlier one; the same device defined twice at the same priority is a conflict
//! and resolves to nothing; a file that cannot be read or is invalid is skipped, and its error
//! is given when a device it may have defined is asked for.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::spec::{ContainerEdits, Device, Spec, SpecFormat};
use crate::request::CdiDeviceName;

/// The specs of all directories.
#[derive(Debug, Default)]
pub struct Registry {
    /// The directories read, lowest priority first.
    pub dirs: Vec<PathBuf>,
    /// The valid specs, in reading order.
    pub specs: Vec<LoadedSpec>,
    /// Files that were skipped, with why.
    pub errors: Vec<(PathBuf, String)>,
    devices: BTreeMap<String, Entry>,
}

/// A valid spec and where it came from.
#[derive(Debug)]
pub struct LoadedSpec {
    /// Its file.
    pub path: PathBuf,
    /// The index of its directory.
    pub priority: usize,
    /// Its content.
    pub spec: Spec,
}

#[derive(Debug)]
enum Entry {
    Device { spec: usize, device: usize },
    Conflict(Vec<PathBuf>),
}

/// A requested device found in a spec.
#[derive(Debug, Clone, Copy)]
pub struct ResolvedDevice<'a> {
    /// The spec file that defines it.
    pub path: &'a Path,
    /// The spec's shared edits.
    pub spec_edits: &'a ContainerEdits,
    /// The device.
    pub device: &'a Device,
    /// The index of the spec in [`Registry::specs`] (its shared edits are applied once).
    pub spec_index: usize,
}

impl Registry {
    /// Reads every spec file of `dirs` (missing directories are empty).
    pub fn read(dirs: &[PathBuf]) -> Registry {
        let mut registry = Registry {
            dirs: dirs.to_vec(),
            ..Registry::default()
        };
        for (priority, dir) in dirs.iter().enumerate() {
            let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
                Ok(entries) => entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| SpecFormat::of(p).is_some() && p.is_file())
                    .collect(),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(err) => {
                    registry
                        .errors
                        .push((dir.clone(), format!("cannot list: {err}")));
                    continue;
                }
            };
            files.sort();
            for path in files {
                match Spec::read(&path) {
                    Ok(spec) => registry.add(path, priority, spec),
                    Err(err) => registry
                        .errors
                        .push((path, format!("{:#}", err).replace('\n', " "))),
                }
            }
        }
        registry
    }

    fn add(&mut self, path: PathBuf, priority: usize, spec: Spec) {
        let index = self.specs.len();
        for (device_index, device) in spec.devices.iter().enumerate() {
            let name = format!("{}={}", spec.kind, device.name);
            let entry = Entry::Device {
                spec: index,
                device: device_index,
            };
            match self.devices.get_mut(&name) {
                None => {
                    self.devices.insert(name, entry);
                }
                Some(Entry::Device { spec: other, .. }) => {
                    let other_spec = &self.specs[*other];
                    if other_spec.priority < priority {
                        self.devices.insert(name, entry);
                    } else if other_spec.priority == priority {
                        let paths = vec![other_spec.path.clone(), path.clone()];
                        self.devices.insert(name, Entry::Conflict(paths));
                    }
                }
                Some(Entry::Conflict(paths)) => {
                    let first = paths
                        .first()
                        .and_then(|p| self.specs.iter().find(|s| &s.path == p).map(|s| s.priority));
                    if first.is_some_and(|p| p < priority) {
                        self.devices.insert(name, entry);
                    } else {
                        paths.push(path.clone());
                    }
                }
            }
        }
        self.specs.push(LoadedSpec {
            path,
            priority,
            spec,
        });
    }

    /// Every device name that resolves, sorted.
    pub fn device_names(&self) -> Vec<String> {
        self.devices
            .iter()
            .filter(|(_, e)| matches!(e, Entry::Device { .. }))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The device called `name`; an error naming it, the directories searched and any spec
    /// that was skipped or conflicts.
    pub fn resolve(&self, name: &CdiDeviceName) -> Result<ResolvedDevice<'_>> {
        match self.devices.get(&name.to_string()) {
            Some(Entry::Device { spec, device }) => {
                let loaded = &self.specs[*spec];
                Ok(ResolvedDevice {
                    path: &loaded.path,
                    spec_edits: &loaded.spec.container_edits,
                    device: &loaded.spec.devices[*device],
                    spec_index: *spec,
                })
            }
            Some(Entry::Conflict(paths)) => bail!(
                "CDI device {name} is defined at the same priority by {}; remove one",
                join(paths)
            ),
            None => {
                let mut message = format!(
                    "unresolvable CDI device {name}: no spec in {} defines it",
                    join(&self.dirs)
                );
                if !self.errors.is_empty() {
                    let skipped: Vec<String> = self
                        .errors
                        .iter()
                        .map(|(path, err)| format!("{}: {err}", path.display()))
                        .collect();
                    message.push_str(&format!(" (skipped: {})", skipped.join("; ")));
                }
                bail!(message)
            }
        }
    }
}

fn join(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: &str, device: &str, env: &str) -> String {
        format!(
            "{{\"cdiVersion\":\"0.5.0\",\"kind\":\"{kind}\",\"devices\":[{{\"name\":\"{device}\",\
             \"containerEdits\":{{\"env\":[\"{env}\"]}}}}]}}"
        )
    }

    fn env_of(resolved: ResolvedDevice<'_>) -> String {
        resolved.device.container_edits.env[0].clone()
    }

    #[test]
    fn later_dirs_win_and_equal_priority_conflicts() {
        let tmp = std::env::temp_dir().join(format!("cdi-registry-{}", std::process::id()));
        let (low, high) = (tmp.join("etc"), tmp.join("run"));
        std::fs::create_dir_all(&low).unwrap();
        std::fs::create_dir_all(&high).unwrap();
        let write = |dir: &Path, name: &str, text: String| {
            std::fs::write(dir.join(name), text).unwrap();
        };
        write(&low, "a.json", spec("vendor.com/dev", "x", "FROM=etc"));
        write(&high, "a.json", spec("vendor.com/dev", "x", "FROM=run"));
        write(&low, "b.json", spec("vendor.com/dev", "y", "FROM=b"));
        write(&low, "c.yaml", spec("vendor.com/dev", "y", "FROM=c"));
        write(&low, "broken.yaml", "cdiVersion: [".to_string());
        write(&low, "ignored.txt", "not a spec".to_string());
        let registry = Registry::read(&[low.clone(), high.clone(), tmp.join("missing")]);
        let x: CdiDeviceName = "vendor.com/dev=x".parse().unwrap();
        assert_eq!(env_of(registry.resolve(&x).unwrap()), "FROM=run");
        let y: CdiDeviceName = "vendor.com/dev=y".parse().unwrap();
        let err = registry.resolve(&y).unwrap_err().to_string();
        assert!(
            err.contains("same priority") && err.contains("b.json"),
            "{err}"
        );
        let z: CdiDeviceName = "vendor.com/dev=z".parse().unwrap();
        let err = registry.resolve(&z).unwrap_err().to_string();
        assert!(
            err.starts_with("unresolvable CDI device vendor.com/dev=z: no spec in ")
                && err.contains(&low.display().to_string())
                && err.contains("broken.yaml"),
            "{err}"
        );
        assert_eq!(registry.device_names(), ["vendor.com/dev=x"]);
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
