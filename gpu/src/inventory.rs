//! What the host's NVIDIA driver offers, read without NVML and without running anything: the
//! driver version and GPUs from `/proc/driver/nvidia`, device majors from `/proc/devices`, device
//! nodes from `/dev`, and the driver's libraries (with their SONAMEs), binaries, IPC sockets and
//! GSP firmware from the driver root. Re-read at every GPU container start: it is a handful of
//! small files and directory listings.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::config::DriverConfig;
use crate::fsroot::FsRoot;
use crate::ldcache::LdCache;
use crate::pci::PciBusId;
use crate::procfs;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
    /// Reads the inventory under the configured roots.
    #[tracing::instrument(level = "debug", name = "inventory", skip_all)]
    pub fn read(roots: &DriverConfig) -> Result<Self> {
        let proc_dir = roots.proc_root.join("proc/driver/nvidia");
        let version_path = proc_dir.join("version");
        let version_text = std::fs::read_to_string(&version_path).with_context(|| {
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
        let devices_text = std::fs::read_to_string(&devices_path)
            .with_context(|| format!("cannot read {}", devices_path.display()))?;
        let majors = procfs::parse_device_majors(&devices_text)
            .with_context(|| format!("invalid {}", devices_path.display()))?;

        let dev = roots.dev_root.join("dev");
        let gpus = read_gpus(&proc_dir, &dev, majors.nvidia)?;
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
        let mut files = find_libraries(&driver_root, &roots.library_dirs, &driver_version)?;
        files.extend(find_fixed_files(
            &driver_root,
            &roots.binary_dirs,
            &driver_version,
        )?);
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
        })
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
    let entries = match std::fs::read_dir(&gpus_dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err).with_context(|| format!("cannot list {}", gpus_dir.display())),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry?;
        let bus_id = entry.file_name().to_string_lossy().into_owned();
        let info_path = entry.path().join("information");
        let text = std::fs::read_to_string(&info_path)
            .with_context(|| format!("cannot read {}", info_path.display()))?;
        let info = procfs::parse_gpu_information(&text)
            .with_context(|| format!("invalid {}", info_path.display()))?;
        if !info.excluded {
            found.push((bus_id, info));
        }
    }
    found.sort_by_key(|(_, info)| info.bus_location);
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
    let caps_dir = roots.dev_root.join("dev/nvidia-caps");
    minors
        .iter()
        .map(|(capability, &minor)| {
            let device = match caps_major {
                Some(major) => device_node(&caps_dir, &format!("nvidia-cap{minor}"), major, minor)?
                    .map(|mut node| {
                        node.path =
                            Path::new("/dev/nvidia-caps").join(format!("nvidia-cap{minor}"));
                        node
                    }),
                None => None,
            };
            Ok(MigCapabilityNode {
                capability: capability.proc_path(),
                device,
                minor,
            })
        })
        .collect()
}

/// The node `<dev>/<name>` if it exists; it must be the expected character device.
fn device_node(dev: &Path, name: &str, major: u32, minor: u32) -> Result<Option<DeviceNode>> {
    let host_path = dev.join(name);
    let meta = match std::fs::metadata(&host_path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => {
            return Err(err).with_context(|| format!("cannot stat {}", host_path.display()))
        }
    };
    let rdev = meta.rdev();
    let (found_major, found_minor) = (libc::major(rdev), libc::minor(rdev));
    if !meta.file_type().is_char_device() || (found_major, found_minor) != (major, minor) {
        bail!(
            "{} is not the character device {major}:{minor} the driver reports",
            host_path.display()
        );
    }
    Ok(Some(DeviceNode {
        path: Path::new("/dev").join(name),
        host_path,
        major,
        minor,
        mode: meta.mode() & 0o7777,
        gid: meta.gid(),
    }))
}

/// Driver libraries: for each known name, the first `<name>.so.<version>` in the search
/// directories (and their `vdpau/` subdirectory), with its SONAME.
fn find_libraries(root: &FsRoot, configured: &[PathBuf], version: &str) -> Result<Vec<DriverFile>> {
    let mut dirs: Vec<PathBuf> = configured.to_vec();
    if dirs.is_empty() {
        dirs.extend(cached_library_dirs(root)?);
        dirs.extend(STANDARD_LIBRARY_DIRS.iter().map(PathBuf::from));
    }
    let mut found: BTreeMap<&str, DriverFile> = BTreeMap::new();
    let mut seen_dirs = Vec::new();
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
        if seen_dirs.contains(&real) {
            continue;
        }
        seen_dirs.push(real.clone());
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

/// Binaries, IPC endpoints and GSP firmware, at fixed places under the driver root.
fn find_fixed_files(
    root: &FsRoot,
    configured: &[PathBuf],
    version: &str,
) -> Result<Vec<DriverFile>> {
    let binary_dirs: Vec<PathBuf> = if configured.is_empty() {
        BINARY_DIRS.iter().map(PathBuf::from).collect()
    } else {
        configured.to_vec()
    };
    let mut files = Vec::new();
    for &(name, part) in BINARIES {
        for dir in &binary_dirs {
            let path = dir.join(name);
            if let Some(host_path) = root.resolve(&path)? {
                files.push(DriverFile {
                    part,
                    host_path,
                    name: name.to_string(),
                    container_path: Some(Path::new("/usr/bin").join(name)),
                    soname: None,
                    library_subdir: None,
                });
                break;
            }
        }
    }
    for &(path, part) in IPC {
        if let Some(host_path) = root.resolve(Path::new(path))? {
            files.push(DriverFile {
                part,
                host_path,
                name: Path::new(path)
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                container_path: Some(PathBuf::from(path)),
                soname: None,
                library_subdir: None,
            });
        }
    }
    let firmware_dir = Path::new("/lib/firmware/nvidia").join(version);
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
            files.push(DriverFile {
                part: DriverPart::Firmware,
                host_path,
                name,
                container_path: Some(path),
                soname: None,
                library_subdir: None,
            });
        }
    }
    Ok(files)
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
            "Character devices:\n195 nvidia\n509 nvidia-caps\n\nBlock devices:\n",
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
        for (node, major, minor) in [
            ("dev/nvidia0", 195, 0),
            ("dev/nvidiactl", 195, 255),
            ("dev/nvidia-caps/nvidia-cap21", 509, 21),
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
