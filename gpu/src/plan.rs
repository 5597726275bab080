//! What one container gets: a pure function of the request, the host inventory and a few facts
//! read from the container's rootfs. Printable (`gpu-youki gpu plan`) so a person can see what a
//! container will get before it starts.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::compat::CudaCompat;
use crate::fsroot::FsRoot;
use crate::inventory::{is_driver_library_name, DeviceNode, DriverPart, Gpu, HostInventory};
use crate::ldcache::{LdCache, LdCacheEntry, NATIVE_FLAGS};
use crate::request::{DeviceSelector, GpuFacts, GpuRequest, HostFacts, Version, VisibleDevices};

/// The image's ld.so.cache, replaced by one holding the driver's libraries too.
const LD_CACHE: &str = "/etc/ld.so.cache";

/// The ld.so.conf.d drop-in that keeps the driver libraries when the container runs ldconfig.
pub const LDCONF_DROPIN: &str = "/etc/ld.so.conf.d/00-gpu-youki.conf";

/// Facts about the container's rootfs that change what it gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RootfsFacts {
    /// The image's library directory: `/usr/lib/x86_64-linux-gnu` on Debian-family images
    /// (`/etc/debian_version` exists), `/usr/lib64` otherwise, as the legacy toolkit chooses.
    pub library_dir: PathBuf,
    /// The image's own `/etc/ld.so.cache`, merged with the driver's entries.
    pub ld_cache: Option<Vec<u8>>,
    /// Entries of the library directory with driver library names that gpu-youki may have
    /// placed there before (empty mount targets and links), so a narrower or newer plan for a
    /// reused rootfs removes what it no longer gives.
    pub placed_before: Vec<PathBuf>,
    /// The image's CUDA forward-compatibility libraries (`/usr/local/cuda/compat`).
    pub cuda_compat: Option<CudaCompat>,
}

impl RootfsFacts {
    /// Reads the facts inside `rootfs` (links resolved inside it).
    pub fn read(rootfs: &FsRoot) -> Result<Self> {
        let debian = rootfs.exists(Path::new("/etc/debian_version"))?;
        let library_dir = PathBuf::from(if debian {
            "/usr/lib/x86_64-linux-gnu"
        } else {
            "/usr/lib64"
        });
        let mut placed_before = Vec::new();
        for dir in [library_dir.clone(), library_dir.join("vdpau")] {
            for name in rootfs.read_dir(&dir)? {
                let path = dir.join(&name);
                if is_driver_library_name(&name.to_string_lossy())
                    && rootfs.is_placeholder(&path)?
                {
                    placed_before.push(path);
                }
            }
        }
        Ok(RootfsFacts {
            library_dir,
            ld_cache: rootfs.read(Path::new("/etc/ld.so.cache"))?,
            placed_before,
            cuda_compat: CudaCompat::read(rootfs)?,
        })
    }
}

/// A bind mount from the host into the container (read-only, nosuid, nodev unless noted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedMount {
    /// Host path.
    pub source: PathBuf,
    /// Path inside the container.
    pub destination: PathBuf,
    /// A directory (the MPS pipe dir) rather than a file.
    pub directory: bool,
    /// Writable (IPC endpoints); everything else is read-only.
    pub writable: bool,
    /// A program: its mount target is created executable, so a container whose process is the
    /// binary (`docker run --gpus all IMAGE nvidia-smi`) passes the executable check made
    /// before the mounts exist.
    pub executable: bool,
    /// Mount flags a CDI spec chose; `None` for the driver-file defaults (read-only unless
    /// writable, always nosuid and nodev, noexec when writable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<BindOptions>,
}

/// The flags of a bind mount, as a CDI spec's mount options give them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BindOptions {
    /// `ro`.
    pub read_only: bool,
    /// `nosuid`.
    pub nosuid: bool,
    /// `nodev`.
    pub nodev: bool,
    /// `noexec`.
    pub noexec: bool,
}

impl PlannedMount {
    /// The flags the mount gets: its own options, or the driver-file defaults.
    pub fn bind_options(&self) -> BindOptions {
        self.options.unwrap_or(BindOptions {
            read_only: !self.writable,
            nosuid: true,
            nodev: true,
            noexec: self.writable,
        })
    }
}

/// A mode set on a path inside the container once its `/dev` exists (the toolkit's `chmod`
/// hook, for device directories such as `/dev/dri`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedChmod {
    /// The path inside the container.
    pub path: PathBuf,
    /// Permission bits.
    pub mode: u32,
}

/// What the plan adds to the image's ld.so.cache, and the directories its drop-in lists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LibraryCache {
    /// Directories for the drop-in, in search order (CUDA forward-compat libraries first).
    pub dirs: Vec<PathBuf>,
    /// Entries added ahead of the image's own; of two with the same SONAME the earlier wins.
    #[serde(skip)]
    pub entries: Vec<LdCacheEntry>,
}

impl LibraryCache {
    /// Appends `other` (lower priority) to this one.
    pub fn extend(&mut self, other: LibraryCache) {
        for dir in other.dirs {
            if !self.dirs.contains(&dir) {
                self.dirs.push(dir);
            }
        }
        self.entries.extend(other.entries);
    }
}

/// Edits of the effective spec that gpu-youki passes on as they are, as the CDI library would:
/// non-bind mounts, hooks other than NVIDIA's, device nodes that are not character devices.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SpecEdits {
    /// OCI mounts (tmpfs and the like), replacing spec mounts at the same destination.
    pub mounts: Vec<oci_spec::runtime::Mount>,
    /// OCI hooks: (lifecycle name, hook).
    pub hooks: Vec<(String, oci_spec::runtime::Hook)>,
    /// OCI device nodes with their cgroup rules.
    pub devices: Vec<(
        oci_spec::runtime::LinuxDevice,
        oci_spec::runtime::LinuxDeviceCgroup,
    )>,
}

impl SpecEdits {
    /// Whether there is nothing to pass on.
    pub fn is_empty(&self) -> bool {
        self == &SpecEdits::default()
    }
}

/// A symlink written into the rootfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedLink {
    /// The link's path inside the rootfs.
    pub path: PathBuf,
    /// What it points to (relative to its directory).
    pub target: PathBuf,
}

/// A file written into the rootfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedFile {
    /// Its path inside the rootfs.
    pub path: PathBuf,
    /// Its content.
    #[serde(serialize_with = "summarise")]
    pub content: Vec<u8>,
}

fn summarise<S: serde::Serializer>(content: &[u8], s: S) -> Result<S::Ok, S::Error> {
    match std::str::from_utf8(content) {
        Ok(text) if !text.contains('\0') => s.serialize_str(text),
        _ => s.serialize_str(&format!("<{} bytes>", content.len())),
    }
}

/// The container's `/proc/driver/nvidia`: a fresh tmpfs with copies of the driver's files and
/// the granted GPUs' directories bound from the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcView {
    /// Host `<proc-root>/proc/driver/nvidia`.
    pub host_dir: PathBuf,
    /// The granted GPUs' directory names under `gpus/`.
    pub gpus: Vec<String>,
}

/// Everything one container gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GpuPlan {
    /// The driver version the plan was made for.
    pub driver_version: String,
    /// The granted GPUs' indices.
    pub gpus: Vec<u32>,
    /// Device nodes and their cgroup allow rules.
    pub devices: Vec<DeviceNode>,
    /// Driver files bound into the container.
    pub mounts: Vec<PlannedMount>,
    /// SONAME and development links next to the libraries.
    pub links: Vec<PlannedLink>,
    /// `/etc/ld.so.cache` and the ld.so.conf.d drop-in.
    pub files: Vec<PlannedFile>,
    /// Driver files and links an earlier plan placed in this rootfs that this one does not give.
    pub removals: Vec<PathBuf>,
    /// The container's `/proc/driver/nvidia`; `None` when only other vendors' CDI devices were
    /// asked for.
    pub proc_view: Option<ProcView>,
    /// `KEY=VALUE` items set in the process environment, replacing the same keys.
    pub env: Vec<String>,
    /// Groups added to the process's additional GIDs (device nodes owned by a group).
    pub additional_gids: Vec<u32>,
    /// Modes set in the container's `/dev` after create.
    pub chmods: Vec<PlannedChmod>,
    /// What `files` holds in `/etc/ld.so.cache` and the drop-in, kept to merge plans.
    pub library_cache: LibraryCache,
    /// CDI edits passed on to the effective spec unchanged.
    #[serde(skip_serializing_if = "SpecEdits::is_empty")]
    pub spec_edits: SpecEdits,
}

impl GpuPlan {
    /// Makes the plan; `None` when the request names no NVIDIA device (only other vendors' CDI
    /// devices). Fails on unknown devices and on unmet requirements. `cuda` is the CUDA version
    /// the driver supports, asked of the driver only when a requirement needs it.
    #[tracing::instrument(level = "debug", name = "plan", skip_all)]
    pub fn new(
        request: &GpuRequest,
        inventory: &HostInventory,
        rootfs: &RootfsFacts,
        cuda: Option<Version>,
    ) -> Result<Option<Self>> {
        let Some(visible) = &request.devices else {
            return Ok(None);
        };
        let gpus = select_gpus(visible, &inventory.gpus)?;
        // arch and brand would need NVML; without it they are unknown, which fails closed.
        let facts = HostFacts {
            cuda,
            driver: inventory.driver_version.parse().ok(),
            gpus: gpus
                .iter()
                .map(|g| GpuFacts {
                    name: format!("GPU {} ({})", g.index, g.bus_id),
                    arch: None,
                    brand: None,
                })
                .collect(),
        };
        request.check_requirements(&facts)?;
        let components = request.capabilities.components();
        let parts: Vec<DriverPart> = [
            (components.utility_libraries, DriverPart::UtilityLibrary),
            (components.compute_libraries, DriverPart::ComputeLibrary),
            (components.video_libraries, DriverPart::VideoLibrary),
            (components.graphics_libraries, DriverPart::GraphicsLibrary),
            (components.ngx_libraries, DriverPart::NgxLibrary),
            (components.utility_binaries, DriverPart::UtilityBinary),
            (components.utility_binaries, DriverPart::UtilityIpc),
            (components.compute_binaries, DriverPart::ComputeBinary),
            (components.compute_libraries, DriverPart::ComputeIpc),
            (true, DriverPart::Firmware),
        ]
        .into_iter()
        .filter_map(|(wanted, part)| wanted.then_some(part))
        .collect();

        let mut devices = Vec::new();
        let control = |name| inventory.control_device(name).cloned();
        devices.extend(control("nvidiactl"));
        devices.extend(gpus.iter().map(|g| g.device.clone()));
        if components.compute_libraries {
            devices.extend(control("nvidia-uvm"));
            devices.extend(control("nvidia-uvm-tools"));
        }
        if components.modeset_device {
            devices.extend(control("nvidia-modeset"));
        }
        if control("nvidiactl").is_none() {
            bail!(
                "the NVIDIA control device {}/dev/nvidiactl is missing",
                inventory.roots.dev_root.display()
            );
        }

        let library_dir = &rootfs.library_dir;
        let mut mounts = Vec::new();
        let mut links = Vec::new();
        let mut cache_entries = Vec::new();
        for file in inventory.files.iter().filter(|f| parts.contains(&f.part)) {
            let file_dir = match &file.library_subdir {
                Some(subdir) => library_dir.join(subdir),
                None => library_dir.clone(),
            };
            let destination = match &file.container_path {
                Some(path) => path.clone(),
                None => file_dir.join(&file.name),
            };
            mounts.push(PlannedMount {
                source: file.host_path.clone(),
                destination,
                directory: file.part == DriverPart::ComputeIpc,
                writable: matches!(file.part, DriverPart::UtilityIpc | DriverPart::ComputeIpc),
                executable: matches!(
                    file.part,
                    DriverPart::UtilityBinary | DriverPart::ComputeBinary
                ),
                options: None,
            });
            if !file.part.is_library() {
                continue;
            }
            let soname = file.soname.clone().unwrap_or_else(|| file.name.clone());
            if soname != file.name {
                links.push(PlannedLink {
                    path: file_dir.join(&soname),
                    target: PathBuf::from(&file.name),
                });
            }
            if file.library_subdir.is_some() {
                continue; // loaded by path (e.g. libvdpau's driver dir), not through the cache
            }
            cache_entries.push(LdCacheEntry::new(
                soname.clone(),
                library_dir.join(&soname),
                NATIVE_FLAGS,
            ));
            // The development links the legacy toolkit creates (reference §2.6).
            if let Some(dev_link) = development_link(&file.name, &soname) {
                cache_entries.push(LdCacheEntry::new(
                    dev_link.0.clone(),
                    library_dir.join(&dev_link.0),
                    NATIVE_FLAGS,
                ));
                links.push(PlannedLink {
                    path: library_dir.join(dev_link.0),
                    target: dev_link.1,
                });
            }
        }

        let mut plan = GpuPlan {
            driver_version: inventory.driver_version.clone(),
            gpus: gpus.iter().map(|g| g.index).collect(),
            devices,
            mounts,
            links,
            files: Vec::new(),
            removals: Vec::new(),
            proc_view: Some(ProcView {
                host_dir: inventory.proc_dir.clone(),
                gpus: gpus.iter().map(|g| g.bus_id.clone()).collect(),
            }),
            env: Vec::new(),
            additional_gids: Vec::new(),
            chmods: Vec::new(),
            library_cache: LibraryCache {
                dirs: vec![library_dir.clone()],
                entries: cache_entries,
            },
            spec_edits: SpecEdits::default(),
        };
        if components.compute_libraries {
            if let Some(compat) = &rootfs.cuda_compat {
                if compat.usable_with(&inventory.driver_version) {
                    plan.add_cuda_compat(compat);
                }
            }
        }
        plan.write_library_files(rootfs)?;
        Ok(Some(plan))
    }

    /// Puts the image's CUDA forward-compatibility libraries ahead of the driver's in the
    /// ld.so.cache (and the drop-in), with their SONAME links where the image lacks them.
    pub fn add_cuda_compat(&mut self, compat: &CudaCompat) {
        let mut first = compat.library_cache();
        first.extend(std::mem::take(&mut self.library_cache));
        self.library_cache = first;
        for link in compat.missing_links() {
            if !self.links.contains(&link) {
                self.links.push(link);
            }
        }
    }

    /// Computes `files` (the ld.so.cache: the image's merged with [`GpuPlan::library_cache`],
    /// and the drop-in) and `removals` from the rest of the plan.
    pub fn write_library_files(&mut self, rootfs: &RootfsFacts) -> Result<()> {
        let mut cache = match &rootfs.ld_cache {
            Some(data) => LdCache::parse(data).context("invalid /etc/ld.so.cache in the image")?,
            None => LdCache::default(),
        };
        // Entries an earlier plan added for the library directories are replaced, not kept: a
        // real ldconfig over the directories after this plan would not list them either.
        let dirs = &self.library_cache.dirs;
        cache.entries.retain(|entry| {
            !entry
                .path
                .parent()
                .is_some_and(|p| dirs.iter().any(|d| d == p))
                || !is_driver_library_name(&entry.soname.to_string_lossy())
        });
        cache.merge_scanned_first(self.library_cache.entries.iter().cloned());
        let given: Vec<&Path> = self
            .mounts
            .iter()
            .map(|m| m.destination.as_path())
            .chain(self.links.iter().map(|l| l.path.as_path()))
            .collect();
        self.removals = rootfs
            .placed_before
            .iter()
            .filter(|path| !given.contains(&path.as_path()))
            .cloned()
            .collect();
        let mut dropin =
            "# Written by gpu-youki: the NVIDIA driver libraries of this container.\n".to_string();
        for dir in dirs {
            dropin.push_str(&format!("{}\n", dir.display()));
        }
        let owned = [Path::new(LD_CACHE), Path::new(LDCONF_DROPIN)];
        self.files.retain(|f| !owned.contains(&f.path.as_path()));
        if self.library_cache == LibraryCache::default() {
            return Ok(()); // only other vendors' CDI devices: the image's cache is left alone
        }
        let library_files = [
            PlannedFile {
                path: PathBuf::from(LD_CACHE),
                content: cache.to_bytes()?,
            },
            PlannedFile {
                path: PathBuf::from(LDCONF_DROPIN),
                content: dropin.into_bytes(),
            },
        ];
        self.files.splice(0..0, library_files);
        Ok(())
    }
}

/// `libcuda.so → libcuda.so.1`, `libnvidia-opticalflow.so → …so.1` and
/// `libGLX_indirect.so.0 → libGLX_nvidia.so.<version>`: (link name, target).
pub(crate) fn development_link(file: &str, soname: &str) -> Option<(String, PathBuf)> {
    if soname == "libcuda.so.1" || soname == "libnvidia-opticalflow.so.1" {
        let name = soname.trim_end_matches(".1").to_string();
        return Some((name, PathBuf::from(soname)));
    }
    if file.starts_with("libGLX_nvidia.so.") {
        return Some(("libGLX_indirect.so.0".to_string(), PathBuf::from(file)));
    }
    None
}

/// The GPUs a request names, resolved against the inventory.
fn select_gpus<'a>(visible: &VisibleDevices, gpus: &'a [Gpu]) -> Result<Vec<&'a Gpu>> {
    let selectors = match visible {
        VisibleDevices::DriverOnly => return Ok(Vec::new()),
        VisibleDevices::All => return Ok(gpus.iter().collect()),
        VisibleDevices::Selected(selectors) => selectors,
    };
    let mut selected: Vec<&Gpu> = Vec::new();
    for selector in selectors {
        let gpu = match selector {
            DeviceSelector::Index(index) => gpus.iter().find(|g| g.index == *index),
            DeviceSelector::GpuUuid(uuid) => gpus.iter().find(|g| {
                g.uuid
                    .as_deref()
                    .is_some_and(|u| u.eq_ignore_ascii_case(uuid))
            }),
            DeviceSelector::PciBusId(bus) => gpus.iter().find(|g| g.pci == *bus),
            DeviceSelector::MigIndex { .. } | DeviceSelector::MigUuid(_) => None,
        };
        let Some(gpu) = gpu else {
            bail!(
                "NVIDIA_VISIBLE_DEVICES: unknown device {} (this host has {})",
                describe(selector),
                host_summary(gpus)
            );
        };
        if !selected.iter().any(|g| g.index == gpu.index) {
            selected.push(gpu);
        }
    }
    Ok(selected)
}

fn describe(selector: &DeviceSelector) -> String {
    match selector {
        DeviceSelector::Index(i) => format!("GPU index {i}"),
        DeviceSelector::GpuUuid(u) => format!("GPU {u}"),
        DeviceSelector::PciBusId(b) => format!("GPU at PCI bus id {b}"),
        DeviceSelector::MigIndex { gpu, mig } => format!("MIG device {gpu}:{mig}"),
        DeviceSelector::MigUuid(u) => format!("MIG device {u}"),
    }
}

fn host_summary(gpus: &[Gpu]) -> String {
    match gpus.len() {
        0 => "no GPUs".to_string(),
        1 => "1 GPU, index 0, and no MIG devices".to_string(),
        n => format!("{n} GPUs, indices 0-{}, and no MIG devices", n - 1),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::DriverConfig;
    use crate::inventory::DriverFile;

    const VERSION: &str = "580.95.05";

    fn node(name: &str, major: u32, minor: u32) -> DeviceNode {
        DeviceNode {
            path: Path::new("/dev").join(name),
            host_path: Path::new("/host/dev").join(name),
            major,
            minor,
            mode: 0o666,
            gid: 0,
        }
    }

    fn library(prefix: &str, part: DriverPart, soname: &str) -> DriverFile {
        let name = format!("{prefix}.so.{VERSION}");
        DriverFile {
            part,
            host_path: Path::new("/host/lib").join(&name),
            name,
            container_path: None,
            soname: Some(soname.to_string()),
            library_subdir: None,
        }
    }

    fn fixed(name: &str, part: DriverPart, container: &str) -> DriverFile {
        DriverFile {
            part,
            host_path: Path::new("/host").join(name),
            name: name.to_string(),
            container_path: Some(PathBuf::from(container)),
            soname: None,
            library_subdir: None,
        }
    }

    /// A host with `gpus` GPUs and one file of each interesting part.
    pub(crate) fn inventory(gpus: u32) -> HostInventory {
        let majors = crate::procfs::parse_device_majors(
            "Character devices:\n195 nvidia\n510 nvidia-uvm\n\nBlock devices:\n",
        )
        .unwrap();
        HostInventory {
            roots: DriverConfig::default(),
            driver_version: VERSION.to_string(),
            gpus: (0..gpus)
                .map(|i| Gpu {
                    index: i,
                    uuid: Some(format!("GPU-{i:08x}-0000-0000-0000-000000000000")),
                    bus_id: format!("0000:{:02x}:00.0", 0x10 + i),
                    pci: format!("0000:{:02x}:00.0", 0x10 + i).parse().unwrap(),
                    model: Some("NVIDIA H100".to_string()),
                    device: node(&format!("nvidia{i}"), 195, i),
                })
                .collect(),
            majors,
            control_devices: vec![
                node("nvidiactl", 195, 255),
                node("nvidia-uvm", 510, 0),
                node("nvidia-uvm-tools", 510, 1),
                node("nvidia-modeset", 195, 254),
            ],
            files: vec![
                library(
                    "libnvidia-ml",
                    DriverPart::UtilityLibrary,
                    "libnvidia-ml.so.1",
                ),
                library("libcuda", DriverPart::ComputeLibrary, "libcuda.so.1"),
                library("libnvcuvid", DriverPart::VideoLibrary, "libnvcuvid.so.1"),
                library(
                    "libGLX_nvidia",
                    DriverPart::GraphicsLibrary,
                    "libGLX_nvidia.so.0",
                ),
                fixed(
                    "nvidia-smi",
                    DriverPart::UtilityBinary,
                    "/usr/bin/nvidia-smi",
                ),
                fixed(
                    "gsp_ga10x.bin",
                    DriverPart::Firmware,
                    "/lib/firmware/nvidia/580.95.05/gsp_ga10x.bin",
                ),
            ],
            proc_dir: PathBuf::from("/host/proc/driver/nvidia"),
            mig_capabilities: Vec::new(),
        }
    }

    pub(crate) fn debian() -> RootfsFacts {
        RootfsFacts {
            library_dir: PathBuf::from("/usr/lib/x86_64-linux-gnu"),
            ld_cache: None,
            placed_before: Vec::new(),
            cuda_compat: None,
        }
    }

    fn plan(
        env: &[&str],
        inventory: &HostInventory,
        rootfs: &RootfsFacts,
    ) -> Result<Option<GpuPlan>> {
        let env: Vec<String> = env.iter().map(|e| e.to_string()).collect();
        let request = GpuRequest::from_env(&env)?.expect("a request");
        GpuPlan::new(&request, inventory, rootfs, "13.0".parse().ok())
    }

    fn device_names(plan: &GpuPlan) -> Vec<String> {
        plan.devices
            .iter()
            .map(|d| d.path.display().to_string())
            .collect()
    }

    fn destinations(plan: &GpuPlan) -> Vec<String> {
        plan.mounts
            .iter()
            .map(|m| m.destination.display().to_string())
            .collect()
    }

    #[test]
    fn compute_utility_gets_its_devices_libraries_links_and_cache() {
        let plan = plan(&["NVIDIA_VISIBLE_DEVICES=1"], &inventory(2), &debian())
            .unwrap()
            .unwrap();
        assert_eq!(plan.gpus, vec![1]);
        assert_eq!(
            device_names(&plan),
            [
                "/dev/nvidiactl",
                "/dev/nvidia1",
                "/dev/nvidia-uvm",
                "/dev/nvidia-uvm-tools"
            ]
        );
        assert_eq!(
            destinations(&plan),
            [
                "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.580.95.05",
                "/usr/lib/x86_64-linux-gnu/libcuda.so.580.95.05",
                "/usr/bin/nvidia-smi",
                "/lib/firmware/nvidia/580.95.05/gsp_ga10x.bin",
            ]
        );
        let smi = plan
            .mounts
            .iter()
            .find(|m| m.destination.ends_with("nvidia-smi"))
            .unwrap();
        assert!(smi.executable && !smi.writable);
        let links: Vec<(String, String)> = plan
            .links
            .iter()
            .map(|l| (l.path.display().to_string(), l.target.display().to_string()))
            .collect();
        assert!(links.contains(&(
            "/usr/lib/x86_64-linux-gnu/libcuda.so".into(),
            "libcuda.so.1".into()
        )));
        assert!(links.contains(&(
            "/usr/lib/x86_64-linux-gnu/libcuda.so.1".into(),
            "libcuda.so.580.95.05".into()
        )));
        let cache = LdCache::parse(&plan.files[0].content).unwrap();
        let keys: Vec<String> = cache
            .entries
            .iter()
            .map(|e| e.soname.to_string_lossy().into_owned())
            .collect();
        assert_eq!(keys, ["libnvidia-ml.so.1", "libcuda.so.1", "libcuda.so"]);
        assert_eq!(plan.proc_view.unwrap().gpus, ["0000:11:00.0"]);
    }

    #[test]
    fn capabilities_filter_parts_and_devices() {
        let inv = inventory(1);
        let utility = plan(
            &[
                "NVIDIA_VISIBLE_DEVICES=all",
                "NVIDIA_DRIVER_CAPABILITIES=utility",
            ],
            &inv,
            &debian(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(device_names(&utility), ["/dev/nvidiactl", "/dev/nvidia0"]);
        assert!(!destinations(&utility).iter().any(|d| d.contains("libcuda")));
        let display = plan(
            &[
                "NVIDIA_VISIBLE_DEVICES=none",
                "NVIDIA_DRIVER_CAPABILITIES=display",
            ],
            &inv,
            &debian(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            device_names(&display),
            ["/dev/nvidiactl", "/dev/nvidia-modeset"]
        );
        assert!(destinations(&display)
            .iter()
            .any(|d| d.contains("libGLX_nvidia")));
        assert!(display
            .links
            .iter()
            .any(|l| l.path.ends_with("libGLX_indirect.so.0")));
        let video = plan(
            &[
                "NVIDIA_VISIBLE_DEVICES=0",
                "NVIDIA_DRIVER_CAPABILITIES=video",
            ],
            &inv,
            &debian(),
        )
        .unwrap()
        .unwrap();
        let video_mounts = destinations(&video);
        assert!(video_mounts.iter().any(|d| d.contains("libnvcuvid")));
        assert!(
            video_mounts.iter().any(|d| d.contains("libcuda")),
            "video brings compute libraries"
        );
    }

    #[test]
    fn rpm_images_get_lib64_and_stale_placements_are_removed() {
        let mut rootfs = RootfsFacts {
            library_dir: PathBuf::from("/usr/lib64"),
            ..debian()
        };
        rootfs.placed_before = vec![
            PathBuf::from("/usr/lib64/libcuda.so.1"),
            PathBuf::from("/usr/lib64/libnvidia-ml.so.1"),
        ];
        let plan = plan(
            &[
                "NVIDIA_VISIBLE_DEVICES=0",
                "NVIDIA_DRIVER_CAPABILITIES=utility",
            ],
            &inventory(1),
            &rootfs,
        )
        .unwrap()
        .unwrap();
        assert!(destinations(&plan).contains(&"/usr/lib64/libnvidia-ml.so.580.95.05".to_string()));
        assert_eq!(plan.removals, [PathBuf::from("/usr/lib64/libcuda.so.1")]);
    }

    #[test]
    fn unknown_devices_and_unmet_requirements_are_refused() {
        let inv = inventory(2);
        let err = plan(&["NVIDIA_VISIBLE_DEVICES=5"], &inv, &debian())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "NVIDIA_VISIBLE_DEVICES: unknown device GPU index 5 (this host has 2 GPUs, indices 0-1, and no MIG devices)"
        );
        let err = plan(&["NVIDIA_VISIBLE_DEVICES=0:1"], &inv, &debian())
            .unwrap_err()
            .to_string();
        assert!(err.contains("MIG device 0:1"), "{err}");
        let err = plan(
            &[
                "NVIDIA_VISIBLE_DEVICES=all",
                "NVIDIA_REQUIRE_CUDA=cuda>=14.0",
            ],
            &inv,
            &debian(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("cuda>=14.0") && err.contains("13.0"), "{err}");
        let err = plan(
            &[
                "NVIDIA_VISIBLE_DEVICES=all",
                "NVIDIA_REQUIRE_ARCH=arch>=8.0",
            ],
            &inv,
            &debian(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown"), "{err}");
    }

    #[test]
    fn the_plan_merges_into_the_image_cache_and_is_stable() {
        let image = LdCache {
            entries: vec![LdCacheEntry::new(
                "libc.so.6",
                "/lib/x86_64-linux-gnu/libc.so.6",
                NATIVE_FLAGS,
            )],
            generator: None,
        };
        let mut rootfs = debian();
        rootfs.ld_cache = Some(image.to_bytes().unwrap());
        let first = plan(&["NVIDIA_VISIBLE_DEVICES=all"], &inventory(1), &rootfs)
            .unwrap()
            .unwrap();
        let cache = LdCache::parse(&first.files[0].content).unwrap();
        assert!(cache.entries.iter().any(|e| e.soname == "libc.so.6"));
        // Planning again over the cache the first plan wrote gives the same bytes.
        rootfs.ld_cache = Some(first.files[0].content.clone());
        let second = plan(&["NVIDIA_VISIBLE_DEVICES=all"], &inventory(1), &rootfs)
            .unwrap()
            .unwrap();
        assert_eq!(first.files, second.files);
    }

    #[test]
    fn the_legacy_path_puts_newer_compat_libraries_first_for_compute_only() {
        let mut rootfs = debian();
        rootfs.cuda_compat = Some(CudaCompat {
            dir: PathBuf::from(crate::compat::COMPAT_DIR),
            libcuda_version: "590.10.01".to_string(),
            note: None,
            libraries: vec![crate::compat::CompatLibrary {
                file: "libcuda.so.590.10.01".to_string(),
                soname: "libcuda.so.1".to_string(),
                soname_present: true,
            }],
        });
        let target = |env: &[&str]| {
            let plan = plan(env, &inventory(1), &rootfs).unwrap().unwrap();
            let cache = LdCache::parse(&plan.files[0].content).unwrap();
            cache
                .entries
                .iter()
                .find(|e| e.soname == "libcuda.so.1")
                .map(|e| e.path.display().to_string())
        };
        assert_eq!(
            target(&["NVIDIA_VISIBLE_DEVICES=0"]).as_deref(),
            Some("/usr/local/cuda/compat/libcuda.so.1")
        );
        assert_eq!(
            target(&[
                "NVIDIA_VISIBLE_DEVICES=0",
                "NVIDIA_DRIVER_CAPABILITIES=utility"
            ]),
            None
        );
    }
}
