//! What one container gets: a pure function of the request, the host inventory and a few facts
//! read from the container's rootfs. Printable (`gpu-youki gpu plan`) so a person can see what a
//! container will get before it starts.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::compat::CudaCompat;
use crate::fsroot::FsRoot;
use crate::inventory::{
    is_driver_library_name, DeviceNode, DriverPart, Gpu, HostInventory, MigCapabilityNode,
    MigDevice,
};
use crate::ldcache::{LdCache, LdCacheEntry, NATIVE_FLAGS};
use crate::request::{
    DeviceFeature, DeviceSelector, DriverCapability, GpuFacts, GpuRequest, HostFacts, Version,
    VisibleDevices, IMEX_CHANNELS, MIG_CONFIG_DEVICES, MIG_MONITOR_DEVICES,
};

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
            placed_before.extend(
                rootfs
                    .placeholders(&dir, |name| is_driver_library_name(&name.to_string_lossy()))?,
            );
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
    /// The granted GPUs' directory names under `gpus/` (MIG devices' parents included).
    pub gpus: Vec<String>,
    /// The granted MIG capabilities' files under `capabilities/` (`gpu0/mig/gi1/access`, …).
    pub capabilities: Vec<String>,
    /// The whole `capabilities/` tree (MIG config or monitor), instead of single files.
    pub all_capabilities: bool,
}

/// Everything one container gets. The default is an empty plan, which CDI edits fill.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GpuPlan {
    /// The driver version the plan was made for.
    pub driver_version: String,
    /// The granted GPUs' indices.
    pub gpus: Vec<u32>,
    /// The granted MIG devices (their parents' nodes are in `devices`, not in `gpus`).
    pub mig_devices: Vec<MigDevice>,
    /// Device nodes and their cgroup allow rules.
    pub devices: Vec<DeviceNode>,
    /// Driver files bound into the container.
    pub mounts: Vec<PlannedMount>,
    /// SONAME and development links next to the libraries; links under `/dev` (DRM by-path
    /// links, CDI's) are made in the container's `/dev` once it exists.
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
        let (gpus, migs) = select_devices(visible, inventory)?;
        let parents: Vec<&Gpu> = migs
            .iter()
            .filter_map(|m| inventory.gpus.iter().find(|g| g.index == m.gpu))
            .collect();
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
        let mut parts: Vec<DriverPart> = [
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
        let any_gpu = !gpus.is_empty() || !migs.is_empty();
        let features: Vec<_> = request
            .features
            .iter()
            .filter(|_| any_gpu)
            .flat_map(|feature| {
                inventory
                    .feature_devices
                    .iter()
                    .filter(move |d| d.feature == *feature)
            })
            .collect();
        if features.iter().any(|d| d.feature == DeviceFeature::Gds) {
            parts.extend([DriverPart::GdsConfig, DriverPart::UdevDatabase]);
        }

        let mut devices: Vec<DeviceNode> = Vec::new();
        let mut add = |node: &DeviceNode| {
            if !devices.iter().any(|d| d.path == node.path) {
                devices.push(node.clone());
            }
        };
        let control = |name| inventory.control_device(name);
        control("nvidiactl").into_iter().for_each(&mut add);
        gpus.iter().chain(&parents).for_each(|g| add(&g.device));
        let mut capabilities = Vec::new();
        for mig in &migs {
            for access in [&mig.gpu_instance_access, &mig.compute_instance_access] {
                add(capability_node(access, "MIG device")?);
                if !capabilities.contains(&access.capability) {
                    capabilities.push(access.capability.clone());
                }
            }
        }
        if components.compute_libraries {
            control("nvidia-uvm").into_iter().for_each(&mut add);
            control("nvidia-uvm-tools").into_iter().for_each(&mut add);
        }
        if components.modeset_device {
            control("nvidia-modeset").into_iter().for_each(&mut add);
        }
        let all_capabilities = request.mig_config || request.mig_monitor;
        for node in mig_management_nodes(request, inventory, &gpus, &migs)? {
            add(node);
        }
        for channel in &request.imex_channels {
            add(imex_channel(inventory, *channel)?);
        }
        features.iter().for_each(|d| add(&d.device));
        let graphics = request.capabilities.contains(DriverCapability::Graphics)
            || request.capabilities.contains(DriverCapability::Display);
        let mut drm_links = Vec::new();
        if graphics {
            gpus.iter().flat_map(|g| &g.drm).for_each(&mut add);
            drm_links = gpus.iter().flat_map(|g| drm_by_path_links(g)).collect();
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
                directory: matches!(file.part, DriverPart::ComputeIpc | DriverPart::UdevDatabase),
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

        links.extend(drm_links);
        // The groups of nodes not open to everyone, as CDI adds them (reference §2.13).
        let mut additional_gids: Vec<u32> = Vec::new();
        for device in &devices {
            let restricted = device.gid != 0 && device.mode & 0o006 != 0o006;
            if restricted && !additional_gids.contains(&device.gid) {
                additional_gids.push(device.gid);
            }
        }
        let mut proc_gpus: Vec<String> = Vec::new();
        for gpu in gpus.iter().chain(&parents) {
            if !proc_gpus.contains(&gpu.bus_id) {
                proc_gpus.push(gpu.bus_id.clone());
            }
        }
        let mut plan = GpuPlan {
            driver_version: inventory.driver_version.clone(),
            gpus: gpus.iter().map(|g| g.index).collect(),
            mig_devices: migs.into_iter().cloned().collect(),
            devices,
            mounts,
            links,
            files: Vec::new(),
            removals: Vec::new(),
            proc_view: Some(ProcView {
                host_dir: inventory.proc_dir.clone(),
                gpus: proc_gpus,
                capabilities: if all_capabilities {
                    Vec::new()
                } else {
                    capabilities
                },
                all_capabilities,
            }),
            env: Vec::new(),
            additional_gids,
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

/// `/dev/dri/by-path/pci-<bus id>-card → ../card1` (and `-render`) for the GPU's DRM nodes,
/// as udev names them on the host.
fn drm_by_path_links(gpu: &Gpu) -> Vec<PlannedLink> {
    gpu.drm
        .iter()
        .filter_map(|node| {
            let name = node.path.file_name()?.to_string_lossy();
            let kind = if name.starts_with("renderD") {
                "render"
            } else {
                "card"
            };
            Some(PlannedLink {
                path: PathBuf::from(format!(
                    "/dev/dri/by-path/pci-{}-{kind}",
                    gpu.pci.proc_dir_name()
                )),
                target: Path::new("..").join(&*name),
            })
        })
        .collect()
}

/// The capability's node; a capability without one cannot be granted.
fn capability_node<'a>(capability: &'a MigCapabilityNode, what: &str) -> Result<&'a DeviceNode> {
    capability.device.as_ref().with_context(|| {
        format!(
            "{what} capability {}: its node /dev/nvidia-caps/nvidia-cap{} is missing on the host",
            capability.capability, capability.minor
        )
    })
}

/// The nodes `NVIDIA_MIG_CONFIG_DEVICES` / `NVIDIA_MIG_MONITOR_DEVICES` grant (reference §1.5):
/// the `config` or `monitor` capability, and for config every MIG capability of the visible
/// GPUs. Only for privileged containers, and only with full GPUs visible.
fn mig_management_nodes<'a>(
    request: &GpuRequest,
    inventory: &'a HostInventory,
    gpus: &[&Gpu],
    migs: &[&MigDevice],
) -> Result<Vec<&'a DeviceNode>> {
    let mut nodes = Vec::new();
    for (wanted, variable, name) in [
        (request.mig_config, MIG_CONFIG_DEVICES, "mig/config"),
        (request.mig_monitor, MIG_MONITOR_DEVICES, "mig/monitor"),
    ] {
        if !wanted {
            continue;
        }
        if !request.privileged {
            bail!(
                "{variable} is allowed only in privileged containers (CAP_SYS_ADMIN in the \
                 bounding set)"
            );
        }
        if !migs.is_empty() {
            bail!("{variable} needs full GPUs visible, not MIG devices");
        }
        let capability = inventory
            .mig_capabilities
            .iter()
            .find(|c| c.capability == name)
            .with_context(|| {
                format!(
                    "{variable}: the host has no MIG {name} capability (no MIG support in {})",
                    inventory
                        .roots
                        .proc_root
                        .join("proc/driver/nvidia-caps/mig-minors")
                        .display()
                )
            })?;
        nodes.push(capability_node(capability, variable)?);
        if name == "mig/config" {
            for gpu in gpus {
                let prefix = format!("gpu{}/", gpu.device.minor);
                nodes.extend(
                    inventory
                        .mig_capabilities
                        .iter()
                        .filter(|c| c.capability.starts_with(&prefix))
                        .filter_map(|c| c.device.as_ref()),
                );
            }
        }
    }
    Ok(nodes)
}

/// The node of IMEX channel `channel`, which must exist on the host.
fn imex_channel(inventory: &HostInventory, channel: u32) -> Result<&DeviceNode> {
    if inventory.majors.caps_imex_channels.is_none() {
        bail!(
            "{IMEX_CHANNELS}: the host's {} lists no nvidia-caps-imex-channels (this driver \
             has no IMEX support)",
            inventory.roots.proc_root.join("proc/devices").display()
        );
    }
    inventory
        .imex_channels
        .iter()
        .find(|node| node.minor == channel)
        .with_context(|| {
            format!(
                "{IMEX_CHANNELS}: IMEX channel {channel} has no node {} on the host \
                 (gpu-youki never creates host device nodes: create it, e.g. with the driver's \
                 NVreg_CreateImexChannel0 or nvidia-modprobe)",
                inventory
                    .roots
                    .dev_root
                    .join(format!("dev/nvidia-caps-imex-channels/channel{channel}"))
                    .display()
            )
        })
}

/// The full GPUs and the MIG devices a request names, resolved against the inventory.
fn select_devices<'a>(
    visible: &VisibleDevices,
    inventory: &'a HostInventory,
) -> Result<(Vec<&'a Gpu>, Vec<&'a MigDevice>)> {
    let gpus = &inventory.gpus;
    let selectors = match visible {
        VisibleDevices::DriverOnly => return Ok((Vec::new(), Vec::new())),
        VisibleDevices::All => {
            return Ok((
                gpus.iter().collect(),
                inventory.mig_devices.iter().collect(),
            ))
        }
        VisibleDevices::Selected(selectors) => selectors,
    };
    let mut selected: Vec<&Gpu> = Vec::new();
    let mut migs: Vec<&MigDevice> = Vec::new();
    let gpu_by_uuid = |uuid: &str| {
        gpus.iter().find(|g| {
            g.uuid
                .as_deref()
                .is_some_and(|u| u.eq_ignore_ascii_case(uuid))
        })
    };
    for selector in selectors {
        let unknown = || {
            anyhow::anyhow!(
                "NVIDIA_VISIBLE_DEVICES: unknown device {} (this host has {})",
                describe(selector),
                host_summary(gpus, inventory.mig_devices.len())
            )
        };
        let gpu = match selector {
            DeviceSelector::Index(index) => gpus.iter().find(|g| g.index == *index),
            DeviceSelector::GpuUuid(uuid) => gpu_by_uuid(uuid),
            DeviceSelector::PciBusId(bus) => gpus.iter().find(|g| g.pci == *bus),
            DeviceSelector::MigIndex { gpu, mig } => {
                let device = inventory
                    .mig_devices
                    .iter()
                    .find(|m| m.gpu == *gpu && m.index == Some(*mig))
                    .ok_or_else(unknown)?;
                if !migs.contains(&device) {
                    migs.push(device);
                }
                continue;
            }
            DeviceSelector::MigUuid(uuid) => {
                let device = match legacy_mig_uuid(uuid) {
                    Some((parent, gi, ci)) => gpu_by_uuid(parent).and_then(|parent| {
                        inventory.mig_devices.iter().find(|m| {
                            (m.gpu, m.gpu_instance, m.compute_instance) == (parent.index, gi, ci)
                        })
                    }),
                    None => inventory.mig_devices.iter().find(|m| {
                        m.uuid
                            .as_deref()
                            .is_some_and(|u| u.eq_ignore_ascii_case(uuid))
                    }),
                };
                let device = device.ok_or_else(unknown)?;
                if !migs.contains(&device) {
                    migs.push(device);
                }
                continue;
            }
        };
        let gpu = gpu.ok_or_else(unknown)?;
        if !selected.iter().any(|g| g.index == gpu.index) {
            selected.push(gpu);
        }
    }
    Ok((selected, migs))
}

/// `MIG-GPU-<uuid>/<gi>/<ci>` (drivers before 470): the parent's `GPU-<uuid>` and the ids.
fn legacy_mig_uuid(uuid: &str) -> Option<(&str, u32, u32)> {
    let rest = uuid.strip_prefix("MIG-")?;
    if !rest.starts_with("GPU-") {
        return None;
    }
    let mut parts = rest.split('/');
    let (parent, gi, ci) = (parts.next()?, parts.next()?, parts.next()?);
    Some((parent, gi.parse().ok()?, ci.parse().ok()?))
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

fn host_summary(gpus: &[Gpu], migs: usize) -> String {
    let migs = match migs {
        0 => "no MIG devices".to_string(),
        1 => "1 MIG device".to_string(),
        n => format!("{n} MIG devices"),
    };
    match gpus.len() {
        0 => format!("no GPUs and {migs}"),
        1 => format!("1 GPU, index 0, and {migs}"),
        n => format!("{n} GPUs, indices 0-{}, and {migs}", n - 1),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::DriverConfig;
    use crate::inventory::{DriverFile, FeatureDevice};

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
            "Character devices:\n195 nvidia\n508 nvidia-caps-imex-channels\n509 nvidia-caps\n510 nvidia-uvm\n\nBlock devices:\n",
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
                    drm: vec![
                        DeviceNode {
                            gid: 44,
                            mode: 0o660,
                            ..node(&format!("dri/card{}", i + 1), 226, i + 1)
                        },
                        DeviceNode {
                            gid: 109,
                            mode: 0o660,
                            ..node(&format!("dri/renderD{}", 129 + i), 226, 129 + i)
                        },
                    ],
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
            mig_devices: Vec::new(),
            imex_channels: vec![node("nvidia-caps-imex-channels/channel3", 508, 3)],
            feature_devices: vec![
                FeatureDevice {
                    feature: DeviceFeature::Gds,
                    device: node("nvidia-fs0", 240, 0),
                },
                FeatureDevice {
                    feature: DeviceFeature::Gdrcopy,
                    device: node("gdrdrv", 235, 0),
                },
            ],
        }
    }

    fn cap(capability: &str, minor: u32) -> MigCapabilityNode {
        MigCapabilityNode {
            capability: capability.to_string(),
            device: Some(node(&format!("nvidia-caps/nvidia-cap{minor}"), 509, minor)),
            minor,
        }
    }

    /// [`inventory`] with GPU 0 in MIG mode: GPU instance 1 (compute instance 0) and GPU
    /// instance 2 (compute instances 0 and 1), NVML listing GPU instance 2 first.
    fn mig_inventory(gpus: u32) -> HostInventory {
        let mut inv = inventory(gpus);
        inv.mig_capabilities = vec![
            cap("mig/config", 1),
            cap("mig/monitor", 2),
            cap("gpu0/mig/gi1/access", 12),
            cap("gpu0/mig/gi1/ci0/access", 13),
            cap("gpu0/mig/gi2/access", 21),
            cap("gpu0/mig/gi2/ci0/access", 22),
            cap("gpu0/mig/gi2/ci1/access", 23),
            cap("gpu1/mig/gi1/access", 147),
        ];
        let find = |name: &str| {
            inv.mig_capabilities
                .iter()
                .find(|c| c.capability == name)
                .unwrap()
                .clone()
        };
        inv.mig_devices = [(1, 0, 2), (2, 0, 0), (2, 1, 1)]
            .into_iter()
            .map(|(gi, ci, index)| MigDevice {
                gpu: 0,
                gpu_instance: gi,
                compute_instance: ci,
                gpu_instance_access: find(&format!("gpu0/mig/gi{gi}/access")),
                compute_instance_access: find(&format!("gpu0/mig/gi{gi}/ci{ci}/access")),
                index: Some(index),
                uuid: Some(format!("MIG-00000000-0000-0000-0000-0000000000{gi}{ci}")),
            })
            .collect();
        inv
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
    fn mig_devices_by_index_and_uuid_get_their_parent_and_capabilities() {
        let inv = mig_inventory(2);
        // 0:0 is NVML's first MIG device of GPU 0: GPU instance 2, compute instance 0.
        let by_index = plan(&["NVIDIA_VISIBLE_DEVICES=0:0"], &inv, &debian())
            .unwrap()
            .unwrap();
        assert!(by_index.gpus.is_empty());
        assert_eq!(
            device_names(&by_index),
            [
                "/dev/nvidiactl",
                "/dev/nvidia0",
                "/dev/nvidia-caps/nvidia-cap21",
                "/dev/nvidia-caps/nvidia-cap22",
                "/dev/nvidia-uvm",
                "/dev/nvidia-uvm-tools"
            ]
        );
        assert_eq!(by_index.proc_view.as_ref().unwrap().gpus, ["0000:10:00.0"]);
        assert_eq!(
            by_index.proc_view.as_ref().unwrap().capabilities,
            ["gpu0/mig/gi2/access", "gpu0/mig/gi2/ci0/access"]
        );
        assert!(!by_index.proc_view.as_ref().unwrap().all_capabilities);
        let by_uuid = plan(
            &["NVIDIA_VISIBLE_DEVICES=MIG-00000000-0000-0000-0000-000000000021"],
            &inv,
            &debian(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            by_uuid.proc_view.as_ref().unwrap().capabilities,
            ["gpu0/mig/gi2/access", "gpu0/mig/gi2/ci1/access"]
        );
        let legacy = plan(
            &["NVIDIA_VISIBLE_DEVICES=MIG-GPU-00000000-0000-0000-0000-000000000000/1/0"],
            &inv,
            &debian(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            legacy.proc_view.as_ref().unwrap().capabilities,
            ["gpu0/mig/gi1/access", "gpu0/mig/gi1/ci0/access"]
        );
        // A full GPU and a MIG device of it: one parent node, one proc directory.
        let both = plan(&["NVIDIA_VISIBLE_DEVICES=0,0:2"], &inv, &debian())
            .unwrap()
            .unwrap();
        assert_eq!(both.gpus, [0]);
        assert_eq!(both.proc_view.as_ref().unwrap().gpus, ["0000:10:00.0"]);
        assert_eq!(
            device_names(&both)
                .iter()
                .filter(|d| *d == "/dev/nvidia0")
                .count(),
            1
        );
        let all = plan(&["NVIDIA_VISIBLE_DEVICES=all"], &inv, &debian())
            .unwrap()
            .unwrap();
        assert_eq!((all.gpus.len(), all.mig_devices.len()), (2, 3));
        let err = plan(&["NVIDIA_VISIBLE_DEVICES=0:3"], &inv, &debian())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "NVIDIA_VISIBLE_DEVICES: unknown device MIG device 0:3 (this host has 2 GPUs, indices 0-1, and 3 MIG devices)"
        );
    }

    #[test]
    fn mig_management_needs_privilege_and_full_gpus() {
        let inv = mig_inventory(2);
        let request = |env: &[&str], privileged: bool| {
            let env: Vec<String> = env.iter().map(|e| e.to_string()).collect();
            let mut request = GpuRequest::from_env(&env).unwrap().unwrap();
            request.privileged = privileged;
            GpuPlan::new(&request, &inv, &debian(), None)
        };
        let config = ["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_MIG_CONFIG_DEVICES=all"];
        let err = request(&config, false).unwrap_err().to_string();
        assert_eq!(
            err,
            "NVIDIA_MIG_CONFIG_DEVICES is allowed only in privileged containers (CAP_SYS_ADMIN in the bounding set)"
        );
        let plan = request(&config, true).unwrap().unwrap();
        let names = device_names(&plan);
        for minor in [1, 12, 13, 21, 22, 23] {
            let node = format!("/dev/nvidia-caps/nvidia-cap{minor}");
            assert!(names.contains(&node), "{node} in {names:?}");
        }
        assert!(!names.contains(&"/dev/nvidia-caps/nvidia-cap147".to_string()));
        assert!(plan.proc_view.as_ref().unwrap().all_capabilities);
        let monitor = request(
            &["NVIDIA_VISIBLE_DEVICES=1", "NVIDIA_MIG_MONITOR_DEVICES=all"],
            true,
        )
        .unwrap()
        .unwrap();
        let names = device_names(&monitor);
        assert!(names.contains(&"/dev/nvidia-caps/nvidia-cap2".to_string()));
        assert!(!names.iter().any(|n| n.ends_with("nvidia-cap1")));
        let err = request(
            &[
                "NVIDIA_VISIBLE_DEVICES=0:0",
                "NVIDIA_MIG_MONITOR_DEVICES=all",
            ],
            true,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "NVIDIA_MIG_MONITOR_DEVICES needs full GPUs visible, not MIG devices"
        );
    }

    #[test]
    fn imex_channels_and_gated_families_need_their_nodes_and_a_gpu() {
        let inv = inventory(1);
        let plan_of = |env: &[&str]| plan(env, &inv, &debian());
        let with = plan_of(&[
            "NVIDIA_VISIBLE_DEVICES=0",
            "NVIDIA_IMEX_CHANNELS=3",
            "NVIDIA_GDS=enabled",
            "NVIDIA_GDRCOPY=enabled",
            "NVIDIA_MOFED=enabled",
        ])
        .unwrap()
        .unwrap();
        let names = device_names(&with);
        for node in [
            "/dev/nvidia-caps-imex-channels/channel3",
            "/dev/nvidia-fs0",
            "/dev/gdrdrv",
        ] {
            assert!(names.contains(&node.to_string()), "{node} in {names:?}");
        }
        let err = plan_of(&["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_IMEX_CHANNELS=4"])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("NVIDIA_IMEX_CHANNELS: IMEX channel 4 has no node /dev/nvidia-caps-imex-channels/channel4 on the host"),
            "{err}"
        );
        // Gated families only come with a GPU.
        let none = plan_of(&["NVIDIA_VISIBLE_DEVICES=none", "NVIDIA_GDS=enabled"])
            .unwrap()
            .unwrap();
        assert!(!device_names(&none).iter().any(|n| n.contains("nvidia-fs")));
    }

    #[test]
    fn graphics_gets_drm_nodes_and_their_groups() {
        let inv = inventory(2);
        let graphics = plan(
            &[
                "NVIDIA_VISIBLE_DEVICES=1",
                "NVIDIA_DRIVER_CAPABILITIES=graphics",
            ],
            &inv,
            &debian(),
        )
        .unwrap()
        .unwrap();
        let names = device_names(&graphics);
        assert!(names.contains(&"/dev/dri/card2".to_string()), "{names:?}");
        assert!(
            names.contains(&"/dev/dri/renderD130".to_string()),
            "{names:?}"
        );
        assert!(!names.contains(&"/dev/dri/card1".to_string()), "{names:?}");
        assert_eq!(graphics.additional_gids, [44, 109]);
        let links: Vec<(String, String)> = graphics
            .links
            .iter()
            .filter(|l| l.path.starts_with("/dev"))
            .map(|l| (l.path.display().to_string(), l.target.display().to_string()))
            .collect();
        assert_eq!(
            links,
            [
                (
                    "/dev/dri/by-path/pci-0000:11:00.0-card".to_string(),
                    "../card2".to_string()
                ),
                (
                    "/dev/dri/by-path/pci-0000:11:00.0-render".to_string(),
                    "../renderD130".to_string()
                )
            ]
        );
        let compute = plan(&["NVIDIA_VISIBLE_DEVICES=1"], &inv, &debian())
            .unwrap()
            .unwrap();
        assert!(!device_names(&compute).iter().any(|n| n.contains("dri")));
        assert!(compute.additional_gids.is_empty());
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
