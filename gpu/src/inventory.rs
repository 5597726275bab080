//! What the host's NVIDIA driver offers, read without NVML and without running anything: the
//! driver version and GPUs from `/proc/driver/nvidia`, device majors from `/proc/devices`, device
//! nodes from `/dev`, and the driver's libraries (with their SONAMEs), binaries, IPC sockets and
//! GSP firmware from the driver root. Read at every GPU container start: it is a handful of
//! small files and directory listings, except for the installed files, which a container start
//! takes from [`crate::file_cache`] while the driver is unchanged.

use std::collections::{BTreeMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::DriverConfig;
use crate::file_cache::DriverFileCache;
use crate::fsroot::FsRoot;
use crate::ldcache::LdCache;
use crate::pci::PciBusId;
use crate::procfs;
use crate::request::DeviceFeature;

/// Everything a plan is made from about the host.
#[derive(Debug, Clone, Serialize)]
pub struct HostInventory {
    /// The roots the driver was read under.
    pub roots: DriverConfig,
    /// The RM version, e.g. `580.95.05`; driver library files end with it.
    pub driver_version: String,
    /// GPUs the driver uses, in NVML index order (PCI bus order).
    pub gpus: Vec<Gpu>,
    /// The driver's character device majors.
    pub majors: procfs::NvidiaDeviceMajors,
    /// `nvidiactl`, `nvidia-uvm`, `nvidia-uvm-tools` and `nvidia-modeset`, those that exist.
    pub control_devices: Vec<DeviceNode>,
    /// Driver libraries, binaries, IPC sockets and firmware, each with what selects it.
    pub files: Vec<DriverFile>,
    /// The host's `<proc-root>/proc/driver/nvidia` directory.
    pub proc_dir: PathBuf,
    /// MIG capabilities (`config`, `monitor`, per-GPU-instance and compute-instance `access`)
    /// with their `/dev/nvidia-caps/nvidia-cap<minor>` nodes, from
    /// `<proc-root>/proc/driver/nvidia-caps/mig-minors`; empty without MIG support.
    pub mig_capabilities: Vec<MigCapabilityNode>,
    /// MIG devices (compute instances) that exist, from the `access` files under
    /// `<proc-root>/proc/driver/nvidia/capabilities/gpu<minor>/mig/`; their NVML identities
    /// only after [`HostInventory::identify_mig_devices`].
    pub mig_devices: Vec<MigDevice>,
    /// IMEX channel nodes, `/dev/nvidia-caps-imex-channels/channel<N>` (minor N).
    pub imex_channels: Vec<DeviceNode>,
    /// Device nodes of the feature-gated families (GDS, MOFED, NVSwitch, GDRCopy).
    pub feature_devices: Vec<FeatureDevice>,
}

/// One MIG device: a compute instance of a GPU instance of a GPU in MIG mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigDevice {
    /// Index of the parent GPU.
    pub gpu: u32,
    /// GPU instance id.
    pub gpu_instance: u32,
    /// Compute instance id.
    pub compute_instance: u32,
    /// The GPU instance's `access` capability.
    pub gpu_instance_access: MigCapabilityNode,
    /// The compute instance's `access` capability.
    pub compute_instance_access: MigCapabilityNode,
    /// NVML's index of the device on its parent (the `M` of `N:M`), when NVML was asked.
    pub index: Option<u32>,
    /// `MIG-<uuid>`, lower-case, when NVML was asked.
    pub uuid: Option<String>,
}

/// What NVML says about one MIG device, matched to the procfs inventory by parent UUID and
/// instance ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigIdentity {
    /// The parent GPU's `GPU-…` UUID.
    pub parent_uuid: String,
    /// The device's index on its parent.
    pub index: u32,
    /// The device's `MIG-…` UUID.
    pub uuid: String,
    /// GPU instance id.
    pub gpu_instance: u32,
    /// Compute instance id.
    pub compute_instance: u32,
}

/// A device node of a feature-gated family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FeatureDevice {
    /// The family that grants it.
    pub feature: DeviceFeature,
    /// The node.
    pub device: DeviceNode,
}

/// One MIG capability and its device node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigCapabilityNode {
    /// Its path under `/proc/driver/nvidia/capabilities`, e.g. `gpu0/mig/gi1/access`.
    pub capability: String,
    /// Its node, `/dev/nvidia-caps/nvidia-cap<minor>`, when the host has it.
    pub device: Option<DeviceNode>,
    /// Its minor under the `nvidia-caps` major.
    pub minor: u32,
}

/// One GPU.
#[derive(Debug, Clone, Serialize)]
pub struct Gpu {
    /// NVML index: position in PCI bus order.
    pub index: u32,
    /// `GPU-…` UUID, lower-case.
    pub uuid: Option<String>,
    /// PCI bus id as the host's procfs spells it (the name of its proc directory).
    pub bus_id: String,
    /// The same bus id, parsed, for comparisons.
    #[serde(skip)]
    pub pci: PciBusId,
    /// Model name, e.g. `NVIDIA H100 80GB HBM3`.
    pub model: Option<String>,
    /// Its device node, `/dev/nvidia<minor>`.
    pub device: DeviceNode,
    /// Its DRM nodes (`/dev/dri/card*`, `/dev/dri/renderD*`), found through udev's
    /// `/dev/dri/by-path/pci-<bus id>-{card,render}` links.
    pub drm: Vec<DeviceNode>,
}

/// A character device node of the driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceNode {
    /// Path inside a container, e.g. `/dev/nvidia0`.
    pub path: PathBuf,
    /// Path on the host, under the dev root.
    pub host_path: PathBuf,
    /// Device major.
    pub major: u32,
    /// Device minor.
    pub minor: u32,
    /// Permission bits of the host node.
    pub mode: u32,
    /// Owner group of the host node.
    pub gid: u32,
}

/// Which part of the driver a file belongs to; capabilities select parts (reference §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DriverPart {
    /// NVML and other utility libraries.
    UtilityLibrary,
    /// libcuda and the other compute libraries.
    ComputeLibrary,
    /// Video encode/decode libraries.
    VideoLibrary,
    /// OpenGL/EGL/Vulkan libraries.
    GraphicsLibrary,
    /// The NGX library.
    NgxLibrary,
    /// nvidia-smi and the other utility binaries.
    UtilityBinary,
    /// The CUDA MPS binaries.
    ComputeBinary,
    /// persistenced and fabric manager sockets.
    UtilityIpc,
    /// The CUDA MPS pipe directory.
    ComputeIpc,
    /// GSP firmware, needed by every container.
    Firmware,
    /// GPUDirect Storage's `/etc/cufile.json`.
    GdsConfig,
    /// The udev database directory `/run/udev`, which GPUDirect Storage reads.
    UdevDatabase,
}

impl DriverPart {
    /// The part's name as JSON spells it (`compute-library`).
    pub fn name(self) -> &'static str {
        match self {
            DriverPart::UtilityLibrary => "utility-library",
            DriverPart::ComputeLibrary => "compute-library",
            DriverPart::VideoLibrary => "video-library",
            DriverPart::GraphicsLibrary => "graphics-library",
            DriverPart::NgxLibrary => "ngx-library",
            DriverPart::UtilityBinary => "utility-binary",
            DriverPart::ComputeBinary => "compute-binary",
            DriverPart::UtilityIpc => "utility-ipc",
            DriverPart::ComputeIpc => "compute-ipc",
            DriverPart::Firmware => "firmware",
            DriverPart::GdsConfig => "gds-config",
            DriverPart::UdevDatabase => "udev-database",
        }
    }

    /// Whether the part is a shared library (placed in the image's library directory).
    pub fn is_library(self) -> bool {
        matches!(
            self,
            DriverPart::UtilityLibrary
                | DriverPart::ComputeLibrary
                | DriverPart::VideoLibrary
                | DriverPart::GraphicsLibrary
                | DriverPart::NgxLibrary
        )
    }
}

/// One file (or the MPS directory) of the driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverFile {
    /// Which part it belongs to.
    pub part: DriverPart,
    /// The real host path (links resolved inside the driver root).
    pub host_path: PathBuf,
    /// Its file name, e.g. `libcuda.so.580.95.05`.
    pub name: String,
    /// Where it goes in a container when that is fixed (binaries, sockets, firmware); libraries
    /// go to the image's library directory, which the plan picks.
    pub container_path: Option<PathBuf>,
    /// DT_SONAME of a library, e.g. `libcuda.so.1`.
    pub soname: Option<String>,
    /// A library found in a subdirectory of the library directory (`vdpau`) goes to the same
    /// subdirectory of the image's library directory.
    pub library_subdir: Option<String>,
}

/// Whether `name` is a file name gpu-youki places in an image's library directory (a driver
/// library, its SONAME or development link): what it may clean up when a later plan for the
/// same rootfs no longer includes it.
pub fn is_driver_library_name(name: &str) -> bool {
    name.starts_with("libGLX_indirect.so")
        || LIBRARIES.iter().any(|(prefix, _)| {
            name.strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with(".so"))
        })
}

/// Library name prefixes per driver part (libnvidia-container's lists, reference §2.1).
const LIBRARIES: &[(&str, DriverPart)] = &[
    ("libnvidia-ml", DriverPart::UtilityLibrary),
    ("libnvidia-cfg", DriverPart::UtilityLibrary),
    ("libnvidia-nscq", DriverPart::UtilityLibrary),
    ("libcuda", DriverPart::ComputeLibrary),
    ("libcudadebugger", DriverPart::ComputeLibrary),
    ("libnvidia-opencl", DriverPart::ComputeLibrary),
    ("libnvidia-gpucomp", DriverPart::ComputeLibrary),
    ("libnvidia-ptxjitcompiler", DriverPart::ComputeLibrary),
    ("libnvidia-fatbinaryloader", DriverPart::ComputeLibrary),
    ("libnvidia-allocator", DriverPart::ComputeLibrary),
    ("libnvidia-compiler", DriverPart::ComputeLibrary),
    ("libnvidia-pkcs11", DriverPart::ComputeLibrary),
    ("libnvidia-pkcs11-openssl3", DriverPart::ComputeLibrary),
    ("libnvidia-nvvm", DriverPart::ComputeLibrary),
    ("libnvidia-tileiras", DriverPart::ComputeLibrary),
    ("libvdpau_nvidia", DriverPart::VideoLibrary),
    ("libnvidia-encode", DriverPart::VideoLibrary),
    ("libnvidia-opticalflow", DriverPart::VideoLibrary),
    ("libnvcuvid", DriverPart::VideoLibrary),
    ("libnvidia-eglcore", DriverPart::GraphicsLibrary),
    ("libnvidia-glcore", DriverPart::GraphicsLibrary),
    ("libnvidia-tls", DriverPart::GraphicsLibrary),
    ("libnvidia-glsi", DriverPart::GraphicsLibrary),
    ("libnvidia-fbc", DriverPart::GraphicsLibrary),
    ("libnvidia-ifr", DriverPart::GraphicsLibrary),
    ("libnvidia-rtcore", DriverPart::GraphicsLibrary),
    ("libnvoptix", DriverPart::GraphicsLibrary),
    ("libGLX_nvidia", DriverPart::GraphicsLibrary),
    ("libEGL_nvidia", DriverPart::GraphicsLibrary),
    ("libGLESv2_nvidia", DriverPart::GraphicsLibrary),
    ("libGLESv1_CM_nvidia", DriverPart::GraphicsLibrary),
    ("libnvidia-glvkspirv", DriverPart::GraphicsLibrary),
    ("libnvidia-cbl", DriverPart::GraphicsLibrary),
    ("libnvidia-ngx", DriverPart::NgxLibrary),
];

/// Binaries per driver part.
const BINARIES: &[(&str, DriverPart)] = &[
    ("nvidia-smi", DriverPart::UtilityBinary),
    ("nvidia-debugdump", DriverPart::UtilityBinary),
    ("nvidia-persistenced", DriverPart::UtilityBinary),
    ("nv-fabricmanager", DriverPart::UtilityBinary),
    ("nvidia-cuda-mps-control", DriverPart::ComputeBinary),
    ("nvidia-cuda-mps-server", DriverPart::ComputeBinary),
];

/// IPC endpoints per driver part, at their host paths (under the driver root).
const IPC: &[(&str, DriverPart)] = &[
    ("/run/nvidia-persistenced/socket", DriverPart::UtilityIpc),
    ("/run/nvidia-fabricmanager/socket", DriverPart::UtilityIpc),
    ("/tmp/nvidia-mps", DriverPart::ComputeIpc),
    ("/etc/cufile.json", DriverPart::GdsConfig),
    ("/run/udev", DriverPart::UdevDatabase),
];

/// Where libraries are looked for when neither `library-dirs` nor the driver root's
/// ld.so.cache names them (reference §3.3).
const STANDARD_LIBRARY_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib64",
    "/usr/lib/x86_64-linux-gnu/nvidia/current",
    "/lib64",
    "/lib/x86_64-linux-gnu",
    "/lib/x86_64-linux-gnu/nvidia/current",
    "/usr/lib",
    "/lib",
];

/// Where binaries are looked for, under the driver root.
const BINARY_DIRS: &[&str] = &[
    "/usr/bin",
    "/usr/sbin",
    "/bin",
    "/sbin",
    "/usr/local/bin",
    "/usr/local/sbin",
];

impl HostInventory {
    /// Reads the inventory under the configured roots, every file found anew: what `gpu
    /// inventory` shows.
    pub fn read(roots: &DriverConfig) -> Result<Self> {
        Self::read_with(roots, None)
    }

    /// Reads the inventory, the driver's installed files from `cache` while they are unchanged
    /// (IPC endpoints, GPUs and device nodes are always read): what a container start uses.
    pub fn read_cached(roots: &DriverConfig, cache: &DriverFileCache) -> Result<Self> {
        Self::read_with(roots, Some(cache))
    }

    #[tracing::instrument(level = "debug", name = "inventory", skip_all)]
    fn read_with(roots: &DriverConfig, cache: Option<&DriverFileCache>) -> Result<Self> {
        let proc_dir = roots.proc_root.join("proc/driver/nvidia");
        let version_path = proc_dir.join("version");
        let version_text = procfs::read_file(&version_path).with_context(|| {
            format!(
                "no NVIDIA driver: cannot read {} (set [driver] proc-root in the gpu-youki config \
                 if the driver's procfs lives elsewhere)",
                version_path.display()
            )
        })?;
        let driver_version = procfs::parse_driver_version(&version_text)
            .with_context(|| format!("invalid {}", version_path.display()))?
            .rm_version;
        let devices_path = roots.proc_root.join("proc/devices");
        let devices_text = procfs::read_file(&devices_path)
            .with_context(|| format!("cannot read {}", devices_path.display()))?;
        let majors = procfs::parse_device_majors(&devices_text)
            .with_context(|| format!("invalid {}", devices_path.display()))?;

        let dev = roots.dev_root.join("dev");
        let gpus = read_gpus(&proc_dir, &dev, majors.nvidia)?;
        let mig_devices = read_mig_devices(&proc_dir, &dev, &gpus, majors.caps)?;
        let imex_channels = read_imex_channels(&dev, majors.caps_imex_channels)?;
        let feature_devices = read_feature_devices(&dev)?;
        let mut control_devices = Vec::new();
        for (name, major, minor) in [
            ("nvidiactl", Some(majors.nvidia), 255),
            ("nvidia-uvm", majors.uvm, 0),
            ("nvidia-uvm-tools", majors.uvm, 1),
            ("nvidia-modeset", Some(majors.nvidia), 254),
        ] {
            let Some(major) = major else { continue };
            if let Some(node) = device_node(&dev, name, major, minor)? {
                control_devices.push(node);
            }
        }

        let driver_root = FsRoot::open(&roots.root)
            .with_context(|| format!("cannot open the driver root {}", roots.root.display()))?;
        let find = || {
            let mut searched = Vec::new();
            let mut files = find_libraries(
                &driver_root,
                &roots.library_dirs,
                &driver_version,
                &mut searched,
            )?;
            files.extend(find_installed_files(
                &driver_root,
                &roots.binary_dirs,
                &driver_version,
                &mut searched,
            )?);
            Ok((files, searched))
        };
        let mut files = match cache {
            Some(cache) => cache.driver_files(roots, &driver_version, find)?,
            None => find()?.0,
        };
        files.extend(find_ipc(&driver_root)?);
        files.sort_by(|a, b| (a.part, &a.name).cmp(&(b.part, &b.name)));
        let mig_capabilities = read_mig_capabilities(roots, majors.caps)?;
        Ok(HostInventory {
            roots: roots.clone(),
            driver_version,
            gpus,
            majors,
            control_devices,
            files,
            proc_dir,
            mig_capabilities,
            mig_devices,
            imex_channels,
            feature_devices,
        })
    }

    /// Adds NVML's index and UUID to the MIG devices it reports (matched by parent GPU UUID
    /// and instance ids); devices NVML does not report keep none.
    pub fn identify_mig_devices(&mut self, identities: &[MigIdentity]) {
        for device in &mut self.mig_devices {
            let Some(parent) = self.gpus.iter().find(|g| g.index == device.gpu) else {
                continue;
            };
            let found = identities.iter().find(|identity| {
                parent
                    .uuid
                    .as_deref()
                    .is_some_and(|u| u.eq_ignore_ascii_case(&identity.parent_uuid))
                    && identity.gpu_instance == device.gpu_instance
                    && identity.compute_instance == device.compute_instance
            });
            if let Some(identity) = found {
                device.index = Some(identity.index);
                device.uuid = Some(
                    identity
                        .uuid
                        .to_ascii_lowercase()
                        .replacen("mig-", "MIG-", 1),
                );
            }
        }
    }

    /// The driver files of one part.
    pub fn files_of(&self, part: DriverPart) -> impl Iterator<Item = &DriverFile> {
        self.files.iter().filter(move |f| f.part == part)
    }

    /// The control device called `name` (`nvidiactl`, …), if the host has it.
    pub fn control_device(&self, name: &str) -> Option<&DeviceNode> {
        self.control_devices
            .iter()
            .find(|d| d.path.file_name().is_some_and(|n| n == name))
    }
}

/// GPUs from `gpus/*/information`, in bus order, excluded GPUs left out as NVML does.
fn read_gpus(proc_dir: &Path, dev: &Path, nvidia_major: u32) -> Result<Vec<Gpu>> {
    let gpus_dir = proc_dir.join("gpus");
    let mut found = Vec::new();
    for name in entry_names(&gpus_dir)? {
        let bus_id = name.to_string_lossy().into_owned();
        let info_path = gpus_dir.join(&name).join("information");
        let text = procfs::read_file(&info_path)
            .with_context(|| format!("cannot read {}", info_path.display()))?;
        let info = procfs::parse_gpu_information(&text)
            .with_context(|| format!("invalid {}", info_path.display()))?;
        if !info.excluded {
            found.push((bus_id, info));
        }
    }
    found.sort_by_key(|(_, info)| info.bus_location);
    // The udev by-path links, listed once rather than probed twice per GPU.
    let drm_links = entry_name_set(&dev.join("dri/by-path"))?;
    found
        .into_iter()
        .enumerate()
        .map(|(index, (bus_id, info))| {
            let name = format!("nvidia{}", info.device_minor);
            let device =
                device_node(dev, &name, nvidia_major, info.device_minor)?.with_context(|| {
                    format!("GPU {bus_id} has no device node {}/{name}", dev.display())
                })?;
            Ok(Gpu {
                index: index as u32,
                uuid: info
                    .uuid
                    .map(|u| u.to_ascii_lowercase().replacen("gpu-", "GPU-", 1)),
                bus_id,
                pci: info.bus_location,
                drm: read_drm_nodes(dev, &info.bus_location, &drm_links)?,
                model: info.model,
                device,
            })
        })
        .collect()
}

/// MIG capabilities from `mig-minors`, with their `/dev/nvidia-caps` nodes where they exist.
fn read_mig_capabilities(
    roots: &DriverConfig,
    caps_major: Option<u32>,
) -> Result<Vec<MigCapabilityNode>> {
    let path = roots.proc_root.join("proc/driver/nvidia-caps/mig-minors");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
    };
    let minors =
        procfs::parse_mig_minors(&text).with_context(|| format!("invalid {}", path.display()))?;
    let dev = roots.dev_root.join("dev");
    minors
        .iter()
        .map(|(capability, &minor)| {
            mig_capability_node(&dev, caps_major, capability.proc_path(), minor)
        })
        .collect()
}

/// A MIG capability with its `/dev/nvidia-caps/nvidia-cap<minor>` node, if the host has it.
fn mig_capability_node(
    dev: &Path,
    caps_major: Option<u32>,
    capability: String,
    minor: u32,
) -> Result<MigCapabilityNode> {
    let device = match caps_major {
        Some(major) => device_node(dev, &format!("nvidia-caps/nvidia-cap{minor}"), major, minor)?,
        None => None,
    };
    Ok(MigCapabilityNode {
        capability,
        device,
        minor,
    })
}

/// The numbered entries `<prefix><N>` of a directory, by number; none if it does not exist.
fn numbered_entries(dir: &Path, prefix: &str) -> Result<Vec<u32>> {
    let mut numbers = Vec::new();
    for name in entry_names(dir)? {
        let number = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|digits| digits.parse::<u32>().ok());
        numbers.extend(number);
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// The MIG devices of GPUs in MIG mode: every `gi<I>/ci<C>/access` under
/// `capabilities/gpu<minor>/mig/`, with the cap minor its `access` files hold.
fn read_mig_devices(
    proc_dir: &Path,
    dev: &Path,
    gpus: &[Gpu],
    caps_major: Option<u32>,
) -> Result<Vec<MigDevice>> {
    let access = |relative: String| -> Result<MigCapabilityNode> {
        let path = proc_dir.join("capabilities").join(&relative);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let minor = procfs::parse_capability_access(&text)
            .with_context(|| format!("invalid {}", path.display()))?;
        mig_capability_node(dev, caps_major, relative, minor)
    };
    // Listed once: most GPUs have no `gpu<minor>` entry there (no MIG), and are not probed.
    let with_capabilities = entry_name_set(&proc_dir.join("capabilities"))?;
    let mut devices = Vec::new();
    for gpu in gpus {
        if !with_capabilities.contains(OsStr::new(&format!("gpu{}", gpu.device.minor))) {
            continue;
        }
        let mig = format!("gpu{}/mig", gpu.device.minor);
        for gi in numbered_entries(&proc_dir.join("capabilities").join(&mig), "gi")? {
            let gi_dir = format!("{mig}/gi{gi}");
            let cis = numbered_entries(&proc_dir.join("capabilities").join(&gi_dir), "ci")?;
            if cis.is_empty() {
                continue; // a GPU instance without compute instances is no usable device
            }
            let gpu_instance_access = access(format!("{gi_dir}/access"))?;
            for ci in cis {
                devices.push(MigDevice {
                    gpu: gpu.index,
                    gpu_instance: gi,
                    compute_instance: ci,
                    gpu_instance_access: gpu_instance_access.clone(),
                    compute_instance_access: access(format!("{gi_dir}/ci{ci}/access"))?,
                    index: None,
                    uuid: None,
                });
            }
        }
    }
    Ok(devices)
}

/// `/dev/nvidia-caps-imex-channels/channel<N>` nodes (major `nvidia-caps-imex-channels`,
/// minor N); none when `/proc/devices` lists no such major.
fn read_imex_channels(dev: &Path, major: Option<u32>) -> Result<Vec<DeviceNode>> {
    let Some(major) = major else {
        return Ok(Vec::new());
    };
    let mut nodes = Vec::new();
    for channel in numbered_entries(&dev.join("nvidia-caps-imex-channels"), "channel")? {
        let name = format!("nvidia-caps-imex-channels/channel{channel}");
        nodes.extend(device_node(dev, &name, major, channel)?);
    }
    Ok(nodes)
}

/// The GPU's DRM nodes through udev's by-path links (`../card1`, `../renderD129`).
fn read_drm_nodes(
    dev: &Path,
    bus: &PciBusId,
    link_names: &HashSet<OsString>,
) -> Result<Vec<DeviceNode>> {
    let mut nodes = Vec::new();
    for kind in ["card", "render"] {
        let name = format!("pci-{}-{kind}", bus.proc_dir_name());
        if !link_names.contains(OsStr::new(&name)) {
            continue;
        }
        let link = dev.join("dri/by-path").join(name);
        let target = match std::fs::read_link(&link) {
            Ok(target) => target,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => {
                return Err(err).with_context(|| format!("cannot read the link {}", link.display()))
            }
        };
        let name = target
            .file_name()
            .with_context(|| format!("{} points nowhere", link.display()))?;
        let name = format!("dri/{}", name.to_string_lossy());
        let node = char_device(dev, &name)?
            .with_context(|| format!("{} points to a missing node", link.display()))?;
        nodes.push(node);
    }
    Ok(nodes)
}

/// The names in the host directory `dir`, as a set to look names up in: one listing instead
/// of a probe per name (none if it does not exist).
pub(crate) fn entry_name_set(dir: &Path) -> Result<HashSet<OsString>> {
    Ok(entry_names(dir)?.into_iter().collect())
}

/// The names in the host directory `dir`, in directory order; none if it does not exist.
pub(crate) fn entry_names(dir: &Path) -> Result<Vec<OsString>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|entry| Ok(entry?.file_name()))
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("cannot list {}", dir.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(err) => Err(err).with_context(|| format!("cannot list {}", dir.display())),
    }
}

/// The nodes of the feature-gated families under `<dev>` (reference §1.7). `/dev` and
/// `/dev/infiniband` are each listed once (a host's `/dev` holds hundreds of entries), and
/// each family picks its names from the listing.
fn read_feature_devices(dev: &Path) -> Result<Vec<FeatureDevice>> {
    let sorted_names = |dir: &str| -> Result<Vec<String>> {
        let mut names: Vec<String> = entry_names(&dev.join(dir))?
            .into_iter()
            .filter_map(|name| name.into_string().ok())
            .collect();
        names.sort();
        Ok(names)
    };
    let (top, infiniband) = (sorted_names("")?, sorted_names("infiniband")?);
    let nvswitch = |n: &str| {
        n == "nvidia-nvswitchctl"
            || n.strip_prefix("nvidia-nvswitch")
                .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
    };
    // A family, the directory its nodes are in, that directory's names, and its pick.
    type Family<'a> = (
        DeviceFeature,
        &'a str,
        &'a [String],
        &'a dyn Fn(&str) -> bool,
    );
    let families: [Family; 4] = [
        (DeviceFeature::Gds, "", &top, &|n| {
            n.starts_with("nvidia-fs")
        }),
        (DeviceFeature::Mofed, "infiniband", &infiniband, &|n| {
            n.starts_with("uverbs") || n == "rdma_cm"
        }),
        (DeviceFeature::Nvswitch, "", &top, &nvswitch),
        (DeviceFeature::Gdrcopy, "", &top, &|n| n == "gdrdrv"),
    ];
    let mut found = Vec::new();
    for (feature, dir, names, wanted) in families {
        for name in names.iter().filter(|n| wanted(n)) {
            let name = Path::new(dir).join(name).to_string_lossy().into_owned();
            found.extend(char_device(dev, &name)?.map(|device| FeatureDevice { feature, device }));
        }
    }
    Ok(found)
}

/// The node `<dev>/<name>` if it exists; it must be the expected character device.
fn device_node(dev: &Path, name: &str, major: u32, minor: u32) -> Result<Option<DeviceNode>> {
    let node = char_device(dev, name).or_else(|_| {
        bail!(
            "{} is not the character device {major}:{minor} the driver reports",
            dev.join(name).display()
        )
    })?;
    match node {
        Some(node) if (node.major, node.minor) != (major, minor) => bail!(
            "{} is not the character device {major}:{minor} the driver reports",
            node.host_path.display()
        ),
        node => Ok(node),
    }
}

/// The character device `<dev>/<name>` (`name` may hold directories) with the numbers it
/// has, if it exists; `/dev/<name>` in a container.
fn char_device(dev: &Path, name: &str) -> Result<Option<DeviceNode>> {
    let host_path = dev.join(name);
    let meta = match std::fs::metadata(&host_path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => {
            return Err(err).with_context(|| format!("cannot stat {}", host_path.display()))
        }
    };
    if !meta.file_type().is_char_device() {
        bail!("{} is not a character device", host_path.display());
    }
    let rdev = meta.rdev();
    Ok(Some(DeviceNode {
        path: Path::new("/dev").join(name),
        host_path,
        major: libc::major(rdev),
        minor: libc::minor(rdev),
        mode: meta.mode() & 0o7777,
        gid: meta.gid(),
    }))
}

/// Driver libraries: for each known name, the first `<name>.so.<version>` in the search
/// directories (and their `vdpau/` subdirectory), with its SONAME.
fn find_libraries(
    root: &FsRoot,
    configured: &[PathBuf],
    version: &str,
    searched: &mut Vec<PathBuf>,
) -> Result<Vec<DriverFile>> {
    let mut dirs: Vec<PathBuf> = configured.to_vec();
    if dirs.is_empty() {
        dirs.extend(cached_library_dirs(root)?);
        dirs.extend(STANDARD_LIBRARY_DIRS.iter().map(PathBuf::from));
    }
    let mut found: BTreeMap<&str, DriverFile> = BTreeMap::new();
    let candidates = dirs.iter().flat_map(|d| {
        [
            (d.clone(), None),
            (d.join("vdpau"), Some("vdpau".to_string())),
        ]
    });
    for (dir, library_subdir) in candidates {
        let Some(real) = root.resolve(&dir)? else {
            continue;
        };
        if searched.contains(&real) {
            continue;
        }
        searched.push(real.clone());
        for name in root.read_dir(&dir)? {
            let name = name.to_string_lossy().into_owned();
            let Some(prefix) = name.strip_suffix(&format!(".so.{version}")) else {
                continue;
            };
            let Some(&(known, part)) = LIBRARIES.iter().find(|(p, _)| *p == prefix) else {
                continue;
            };
            if found.contains_key(known) {
                continue;
            }
            let host_path = real.join(&name);
            let soname = crate::elf::soname(&host_path)?;
            found.insert(
                known,
                DriverFile {
                    part,
                    host_path,
                    name,
                    container_path: None,
                    soname,
                    library_subdir: library_subdir.clone(),
                },
            );
        }
    }
    Ok(found.into_values().collect())
}

/// Directories of NVIDIA libraries named in the driver root's ld.so.cache.
fn cached_library_dirs(root: &FsRoot) -> Result<Vec<PathBuf>> {
    let Some(data) = root.read(Path::new("/etc/ld.so.cache"))? else {
        return Ok(Vec::new());
    };
    let cache = LdCache::parse(&data)
        .with_context(|| format!("invalid {}/etc/ld.so.cache", root.path().display()))?;
    let mut dirs: Vec<PathBuf> = Vec::new();
    for entry in &cache.entries {
        let soname = entry.soname.to_string_lossy();
        let known = LIBRARIES
            .iter()
            .any(|(prefix, _)| soname.starts_with(&format!("{prefix}.so")));
        if let (true, Some(parent)) = (known, entry.path.parent()) {
            if !dirs.iter().any(|d| d == parent) {
                dirs.push(parent.to_path_buf());
            }
        }
    }
    Ok(dirs)
}

/// Binaries and GSP firmware, at fixed places under the driver root: installed with the
/// driver, so they are cached with the libraries. The directories looked in are added to
/// `searched`.
fn find_installed_files(
    root: &FsRoot,
    configured: &[PathBuf],
    version: &str,
    searched: &mut Vec<PathBuf>,
) -> Result<Vec<DriverFile>> {
    let binary_dirs: Vec<PathBuf> = if configured.is_empty() {
        BINARY_DIRS.iter().map(PathBuf::from).collect()
    } else {
        configured.to_vec()
    };
    let firmware_dir = Path::new("/lib/firmware/nvidia").join(version);
    for dir in binary_dirs.iter().chain([&firmware_dir]) {
        if let Some(real) = root.resolve(dir)? {
            if !searched.contains(&real) {
                searched.push(real);
            }
        }
    }
    let mut files = Vec::new();
    for &(name, part) in BINARIES {
        for dir in &binary_dirs {
            let path = dir.join(name);
            if let Some(host_path) = root.resolve(&path)? {
                files.push(fixed_file(
                    part,
                    host_path,
                    &Path::new("/usr/bin").join(name),
                ));
                break;
            }
        }
    }
    let mut firmware: Vec<String> = root
        .read_dir(&firmware_dir)?
        .into_iter()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| n.starts_with("gsp") && n.ends_with(".bin"))
        .collect();
    firmware.sort();
    for name in firmware {
        let path = firmware_dir.join(&name);
        if let Some(host_path) = root.resolve(&path)? {
            files.push(fixed_file(DriverPart::Firmware, host_path, &path));
        }
    }
    Ok(files)
}

/// IPC endpoints (sockets, the MPS pipe directory, configuration the daemons read): they come
/// and go with their daemons, so they are looked for at every start.
fn find_ipc(root: &FsRoot) -> Result<Vec<DriverFile>> {
    let mut files = Vec::new();
    for &(path, part) in IPC {
        if let Some(host_path) = root.resolve(Path::new(path))? {
            files.push(fixed_file(part, host_path, Path::new(path)));
        }
    }
    Ok(files)
}

/// A file that goes to the same path in every container.
fn fixed_file(part: DriverPart, host_path: PathBuf, container_path: &Path) -> DriverFile {
    DriverFile {
        part,
        host_path,
        name: container_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        container_path: Some(container_path.to_path_buf()),
        soname: None,
        library_subdir: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A minimal driver tree: one GPU, its nodes (mknod needs root, as the tests run), a
    /// library that is not an ELF file, and MIG minors.
    fn tree(name: &str) -> PathBuf {
        let root =
            std::env::temp_dir().join(format!("gpu-youki-inventory-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let write = |path: &str, text: &str| {
            let path = root.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        };
        write(
            "proc/driver/nvidia/version",
            "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.95.05  Tue Sep 23 2025\n",
        );
        write(
            "proc/devices",
            "Character devices:\n195 nvidia\n508 nvidia-caps-imex-channels\n509 nvidia-caps\n\nBlock devices:\n",
        );
        write(
            "proc/driver/nvidia/gpus/0000:3b:00.0/information",
            "Model: \t\t NVIDIA H200\nGPU UUID: \t GPU-AB-cd\nBus Location: \t 0000:3b:00.0\nDevice Minor: \t 0\n",
        );
        write(
            "proc/driver/nvidia-caps/mig-minors",
            "config 1\ngpu0/gi2/access 21\n",
        );
        write("usr/bin/nvidia-smi", "");
        write(
            "proc/driver/nvidia/capabilities/gpu0/mig/gi2/access",
            "DeviceFileMinor: 21\nDeviceFileMode: 292\nDeviceFileModify: 1\n",
        );
        write(
            "proc/driver/nvidia/capabilities/gpu0/mig/gi2/ci0/access",
            "DeviceFileMinor: 22\nDeviceFileMode: 292\nDeviceFileModify: 1\n",
        );
        // A GPU instance without compute instances is no MIG device.
        write(
            "proc/driver/nvidia/capabilities/gpu0/mig/gi3/access",
            "DeviceFileMinor: 30\n",
        );
        fs::create_dir_all(root.join("dev/dri/by-path")).unwrap();
        std::os::unix::fs::symlink(
            "../card1",
            root.join("dev/dri/by-path/pci-0000:3b:00.0-card"),
        )
        .unwrap();
        for (node, major, minor) in [
            ("dev/nvidia0", 195, 0),
            ("dev/nvidiactl", 195, 255),
            ("dev/nvidia-caps/nvidia-cap21", 509, 21),
            ("dev/nvidia-caps/nvidia-cap22", 509, 22),
            ("dev/nvidia-caps-imex-channels/channel3", 508, 3),
            ("dev/dri/card1", 226, 1),
            ("dev/gdrdrv", 235, 0),
            ("dev/infiniband/uverbs0", 231, 192),
        ] {
            let path = root.join(node);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: mknod with a valid path; the tests run as root.
            let rc = unsafe {
                libc::mknod(
                    path.as_ptr(),
                    libc::S_IFCHR | 0o666,
                    libc::makedev(major, minor),
                )
            };
            assert_eq!(
                rc,
                0,
                "mknod needs root: {}",
                std::io::Error::last_os_error()
            );
        }
        root
    }

    fn roots(root: &Path) -> DriverConfig {
        DriverConfig {
            root: root.to_path_buf(),
            dev_root: root.to_path_buf(),
            proc_root: root.to_path_buf(),
            ..DriverConfig::default()
        }
    }

    #[test]
    fn reads_gpus_devices_binaries_and_mig_capabilities() {
        let root = tree("read");
        let inventory = HostInventory::read(&roots(&root)).unwrap();
        assert_eq!(inventory.driver_version, "580.95.05");
        assert_eq!(inventory.gpus.len(), 1);
        let gpu = &inventory.gpus[0];
        assert_eq!((gpu.index, gpu.bus_id.as_str()), (0, "0000:3b:00.0"));
        assert_eq!(gpu.uuid.as_deref(), Some("GPU-ab-cd"));
        assert_eq!(gpu.device.path, PathBuf::from("/dev/nvidia0"));
        assert_eq!(inventory.control_device("nvidiactl").unwrap().minor, 255);
        assert!(inventory.control_device("nvidia-uvm").is_none());
        assert!(inventory
            .files_of(DriverPart::UtilityBinary)
            .any(|f| f.name == "nvidia-smi"));
        let caps: Vec<(&str, u32, bool)> = inventory
            .mig_capabilities
            .iter()
            .map(|c| (c.capability.as_str(), c.minor, c.device.is_some()))
            .collect();
        assert_eq!(
            caps,
            [("mig/config", 1, false), ("gpu0/mig/gi2/access", 21, true)]
        );
        let migs: Vec<(u32, u32, u32, u32, u32)> = inventory
            .mig_devices
            .iter()
            .map(|m| {
                (
                    m.gpu,
                    m.gpu_instance,
                    m.compute_instance,
                    m.gpu_instance_access.minor,
                    m.compute_instance_access.minor,
                )
            })
            .collect();
        assert_eq!(migs, [(0, 2, 0, 21, 22)]);
        assert_eq!(
            inventory.mig_devices[0]
                .compute_instance_access
                .device
                .as_ref()
                .unwrap()
                .path,
            PathBuf::from("/dev/nvidia-caps/nvidia-cap22")
        );
        let channels: Vec<&Path> = inventory
            .imex_channels
            .iter()
            .map(|d| d.path.as_path())
            .collect();
        assert_eq!(
            channels,
            [Path::new("/dev/nvidia-caps-imex-channels/channel3")]
        );
        let drm: Vec<(&Path, u32)> = gpu
            .drm
            .iter()
            .map(|d| (d.path.as_path(), d.minor))
            .collect();
        assert_eq!(drm, [(Path::new("/dev/dri/card1"), 1)]);
        let features: Vec<(DeviceFeature, &Path)> = inventory
            .feature_devices
            .iter()
            .map(|f| (f.feature, f.device.path.as_path()))
            .collect();
        assert_eq!(
            features,
            [
                (DeviceFeature::Mofed, Path::new("/dev/infiniband/uverbs0")),
                (DeviceFeature::Gdrcopy, Path::new("/dev/gdrdrv"))
            ]
        );
        let mut inventory = inventory;
        inventory.identify_mig_devices(&[MigIdentity {
            parent_uuid: "GPU-AB-CD".into(),
            index: 4,
            uuid: "MIG-AB".into(),
            gpu_instance: 2,
            compute_instance: 0,
        }]);
        assert_eq!(
            (
                inventory.mig_devices[0].index,
                inventory.mig_devices[0].uuid.as_deref()
            ),
            (Some(4), Some("MIG-ab"))
        );
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_wrong_node_or_a_missing_driver_is_reported_by_path() {
        let root = tree("wrong");
        fs::remove_file(root.join("dev/nvidia0")).unwrap();
        fs::write(root.join("dev/nvidia0"), "").unwrap();
        let err = format!("{:#}", HostInventory::read(&roots(&root)).unwrap_err());
        assert!(
            err.contains("dev/nvidia0 is not the character device 195:0"),
            "{err}"
        );
        fs::remove_file(root.join("proc/driver/nvidia/version")).unwrap();
        let err = format!("{:#}", HostInventory::read(&roots(&root)).unwrap_err());
        assert!(
            err.contains("no NVIDIA driver") && err.contains("proc/driver/nvidia/version"),
            "{err}"
        );
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn driver_library_names() {
        assert!(is_driver_library_name("libcuda.so.1"));
        assert!(is_driver_library_name("libcuda.so"));
        assert!(is_driver_library_name("libGLX_indirect.so.0"));
        assert!(!is_driver_library_name("libcudart.so.12"));
        assert!(!is_driver_library_name("libc.so.6"));
    }
}
