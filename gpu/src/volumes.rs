//! The device plugin's `volume-mounts` device list strategy: a mount of `/dev/null` at
//! `/var/run/nvidia-container-devices/<id>` names device `<id>`. Unprivileged pods cannot forge
//! such mounts through the kubelet, so with this strategy enabled (and env requests refused)
//! the device plugin is the only authority on a container's GPUs.

use std::path::{Component, Path, PathBuf};

/// The directory under which the device plugin mounts `/dev/null` once per device.
pub const VOLUME_LIST_DIR: &str = "/var/run/nvidia-container-devices";

/// Whether any mount destination lies under [`VOLUME_LIST_DIR`] (a cheap test done before
/// any configuration is read).
pub fn mentions_device_list<'a>(destinations: impl IntoIterator<Item = &'a Path>) -> bool {
    destinations
        .into_iter()
        .any(|d| clean(d).starts_with(VOLUME_LIST_DIR))
}

/// The device list the mounts carry, as a `NVIDIA_VISIBLE_DEVICES` value, or `None` when there
/// is none. Only `/dev/null` sources count; `cdi/<vendor>/<class>/<name>` and
/// `cdi/<vendor>/<class>=<name>` become CDI names; `imex/<channel>` entries are read by
/// [`imex_channels`]; duplicates are dropped.
pub fn device_list<'a>(mounts: impl IntoIterator<Item = (&'a Path, &'a Path)>) -> Option<String> {
    let mut ids: Vec<String> = Vec::new();
    for parts in list_entries(mounts) {
        let id = match parts.as_slice() {
            [id] => id.clone(),
            [cdi, vendor, class_and_name] if cdi == "cdi" && class_and_name.contains('=') => {
                format!("{vendor}/{class_and_name}")
            }
            [cdi, vendor, class, name] if cdi == "cdi" => format!("{vendor}/{class}={name}"),
            _ => continue,
        };
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    (!ids.is_empty()).then(|| ids.join(","))
}

/// The IMEX channels the mounts carry (`imex/<channel>` entries), as a
/// `NVIDIA_IMEX_CHANNELS` value, or `None` when there are none.
pub fn imex_channels<'a>(mounts: impl IntoIterator<Item = (&'a Path, &'a Path)>) -> Option<String> {
    let mut channels: Vec<String> = Vec::new();
    for parts in list_entries(mounts) {
        if let [imex, channel] = parts.as_slice() {
            if imex == "imex" && !channels.contains(channel) {
                channels.push(channel.clone());
            }
        }
    }
    (!channels.is_empty()).then(|| channels.join(","))
}

/// The path components below [`VOLUME_LIST_DIR`] of each `/dev/null` mount there.
fn list_entries<'a>(mounts: impl IntoIterator<Item = (&'a Path, &'a Path)>) -> Vec<Vec<String>> {
    mounts
        .into_iter()
        .filter_map(|(source, destination)| {
            if source != Path::new("/dev/null") {
                return None;
            }
            let destination = clean(destination);
            let rest = destination.strip_prefix(VOLUME_LIST_DIR).ok()?;
            Some(
                rest.components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect(),
            )
        })
        .collect()
}

/// The path with `.` and `..` resolved lexically, as the toolkit cleans destinations.
fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::Normal(name) => out.push(name),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(mounts: &[(&str, &str)]) -> Option<String> {
        device_list(mounts.iter().map(|(s, d)| (Path::new(*s), Path::new(*d))))
    }

    #[test]
    fn device_plugin_mounts_name_devices() {
        let mounts = [
            ("/dev/null", "/var/run/nvidia-container-devices/GPU-abc"),
            ("/dev/null", "/var/run/nvidia-container-devices/1"),
            (
                "/dev/null",
                "/var/run/nvidia-container-devices/../nvidia-container-devices/1",
            ),
            (
                "/dev/null",
                "/var/run/nvidia-container-devices/cdi/nvidia.com/gpu/0",
            ),
            (
                "/dev/null",
                "/var/run/nvidia-container-devices/cdi/nvidia.com/gpu=all",
            ),
            ("/dev/null", "/var/run/nvidia-container-devices/imex/3"),
            ("/host/file", "/var/run/nvidia-container-devices/7"),
            ("/dev/null", "/var/run/other/8"),
        ];
        assert_eq!(
            list(&mounts).as_deref(),
            Some("GPU-abc,1,nvidia.com/gpu=0,nvidia.com/gpu=all")
        );
        assert!(mentions_device_list(
            mounts.iter().map(|(_, d)| Path::new(*d))
        ));
        let imex = imex_channels(mounts.iter().map(|(s, d)| (Path::new(*s), Path::new(*d))));
        assert_eq!(imex.as_deref(), Some("3"));
    }

    #[test]
    fn no_list_without_dev_null_mounts() {
        assert_eq!(list(&[("/dev/null", "/etc/foo")]), None);
        assert_eq!(list(&[]), None);
        assert_eq!(
            imex_channels([(Path::new("/dev/null"), Path::new("/etc/imex/1"))]),
            None
        );
        assert!(!mentions_device_list([Path::new("/proc")]));
    }
}
