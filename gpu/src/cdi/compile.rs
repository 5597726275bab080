//! Resolved CDI devices → plan parts: the CDI library's `ContainerEdits.Apply` semantics
//! (reference §4.2), compiled into what the stage already applies instead of written into the
//! spec, and NVIDIA's hooks done natively. A pure step: host files are looked at only through
//! [`HostFiles`], so it is unit-tested without root or a driver.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use oci_spec::runtime::{
    HookBuilder, LinuxDeviceBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType, MountBuilder,
};

use super::hooks::{self, NvidiaHook};
use super::registry::ResolvedDevice;
use super::spec::{ContainerEdits, DeviceNodeEdit, MountEdit};
use crate::inventory::{DeviceNode, HostInventory};
use crate::ldcache::{LdCacheEntry, NATIVE_FLAGS};
use crate::plan::{
    BindOptions, GpuPlan, LibraryCache, PlannedChmod, PlannedFile, PlannedLink, PlannedMount,
    ProcView, RootfsFacts,
};

/// Where the EGL application profile naming the container's GPUs is written.
pub const APPLICATION_PROFILE: &str =
    "/etc/nvidia/nvidia-application-profiles-rc.d/10-container.conf";

/// What a host path is, as far as compiling needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostStat {
    /// `c`, `b`, `p`, `d` (directory), `f` (regular file) or `o` (other).
    pub kind: char,
    /// Permission bits.
    pub mode: u32,
    /// Device major and minor (devices only).
    pub major: u32,
    /// Device minor.
    pub minor: u32,
    /// Owner group.
    pub gid: u32,
}

/// The host facts compiling reads: file types of device nodes and mount sources, and the
/// SONAMEs of libraries bound into the ld cache folders.
pub trait HostFiles {
    /// `stat` of a host path (links followed); `None` when it does not exist.
    fn stat(&self, path: &Path) -> Result<Option<HostStat>>;
    /// The SONAME of a host library.
    fn soname(&self, path: &Path) -> Result<Option<String>>;
}

/// The real host.
pub struct Host;

impl HostFiles for Host {
    fn stat(&self, path: &Path) -> Result<Option<HostStat>> {
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err).with_context(|| format!("cannot stat {}", path.display())),
        };
        let kind = meta.file_type();
        let kind = if kind.is_char_device() {
            'c'
        } else if kind.is_block_device() {
            'b'
        } else if kind.is_fifo() {
            'p'
        } else if kind.is_dir() {
            'd'
        } else if kind.is_file() {
            'f'
        } else {
            'o'
        };
        let rdev = meta.rdev();
        Ok(Some(HostStat {
            kind,
            mode: meta.permissions().mode() & 0o7777,
            major: libc::major(rdev),
            minor: libc::minor(rdev),
            gid: meta.gid(),
        }))
    }

    fn soname(&self, path: &Path) -> Result<Option<String>> {
        crate::elf::soname(path)
    }
}

/// The NVIDIA hooks among `hooks` (`(path, args)` of an OCI spec's hooks), parsed; an error
/// for one gpu-youki does not know.
pub fn nvidia_hooks<'a>(
    hooks: impl IntoIterator<Item = (&'a str, &'a [String])>,
) -> Result<Vec<NvidiaHook>> {
    hooks
        .into_iter()
        .filter_map(|(path, args)| hooks::parse(path, args))
        .collect()
}

/// What a container asks of CDI: the devices it names, and what an engine that applies CDI
/// edits itself (newer containerd, CRI-O) already put into config.json.
#[derive(Debug, Default)]
pub struct CdiRequest<'a> {
    /// The requested devices, in request order.
    pub devices: Vec<ResolvedDevice<'a>>,
    /// NVIDIA hooks found in config.json.
    pub config_hooks: Vec<NvidiaHook>,
    /// Bind mounts of config.json, `(host source, container destination)`, whose libraries
    /// `update-ldcache` puts into the cache too.
    pub config_binds: Vec<(PathBuf, PathBuf)>,
    /// `(major, minor)` of the character devices config.json grants.
    pub config_devices: Vec<(u32, u32)>,
}

impl CdiRequest<'_> {
    /// Whether there is nothing to compile.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty() && self.config_hooks.is_empty()
    }
}

/// Compiles a CDI request into `base` (the NVIDIA plan from the environment, if any; otherwise
/// an empty plan). `driver` is the host inventory when one was read (needed for the
/// `/proc/driver/nvidia` view of `disable-device-node-modification`).
pub fn compile(
    base: Option<GpuPlan>,
    request: &CdiRequest<'_>,
    rootfs: &RootfsFacts,
    host: &dyn HostFiles,
    driver: Option<&HostInventory>,
) -> Result<GpuPlan> {
    let mut plan = base.unwrap_or_else(|| empty_plan(driver));
    let mut nvidia = request.config_hooks.clone();
    let mut specs_applied = Vec::new();
    for device in &request.devices {
        let mut edits: Vec<&ContainerEdits> = vec![&device.device.container_edits];
        if !specs_applied.contains(&device.spec_index) {
            specs_applied.push(device.spec_index);
            edits.push(device.spec_edits);
        }
        for edit in edits {
            apply_edits(&mut plan, edit, device.path, host, &mut nvidia)
                .map_err(|err| anyhow::anyhow!("CDI spec {}: {err:#}", device.path.display()))?;
        }
    }
    do_nvidia_hooks(&mut plan, &nvidia, request, rootfs, host, driver)?;
    plan.write_library_files(rootfs)?;
    Ok(plan)
}

fn empty_plan(driver: Option<&HostInventory>) -> GpuPlan {
    GpuPlan {
        driver_version: driver.map(|d| d.driver_version.clone()).unwrap_or_default(),
        ..GpuPlan::default()
    }
}

/// The one-line error for a spec naming a host path that is gone (a driver upgrade since the
/// spec was generated, typically).
fn stale(spec: &Path, path: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "{path} does not exist on the host (a stale spec); regenerate it: \
         gpu-youki cdi generate --output {}",
        spec.display()
    )
}

fn apply_edits(
    plan: &mut GpuPlan,
    edits: &ContainerEdits,
    spec_path: &Path,
    host: &dyn HostFiles,
    nvidia: &mut Vec<NvidiaHook>,
) -> Result<()> {
    plan.env.extend(edits.env.iter().cloned());
    for node in &edits.device_nodes {
        add_device_node(plan, node, spec_path, host)?;
    }
    for mount in &edits.mounts {
        add_mount(plan, mount, spec_path, host)?;
    }
    for hook in &edits.hooks {
        if let Some(parsed) = hooks::parse(&hook.path, &hook.args) {
            nvidia.push(parsed?);
            continue;
        }
        let mut built = HookBuilder::default().path(&hook.path);
        if !hook.args.is_empty() {
            built = built.args(hook.args.clone());
        }
        if !hook.env.is_empty() {
            built = built.env(hook.env.clone());
        }
        if let Some(timeout) = hook.timeout {
            built = built.timeout(timeout);
        }
        plan.spec_edits
            .hooks
            .push((hook.hook_name.clone(), built.build()?));
    }
    for gid in &edits.additional_gids {
        if *gid != 0 && !plan.additional_gids.contains(gid) {
            plan.additional_gids.push(*gid);
        }
    }
    Ok(())
}

fn add_device_node(
    plan: &mut GpuPlan,
    node: &DeviceNodeEdit,
    spec_path: &Path,
    host: &dyn HostFiles,
) -> Result<()> {
    let host_path = node.host_path.as_deref().unwrap_or(&node.path);
    let complete = node.kind.is_some()
        && (node.kind.as_deref() == Some("p") || (node.major.is_some() && node.minor.is_some()))
        && node.file_mode.is_some();
    let stat = if complete {
        host.stat(Path::new(host_path))?
    } else {
        Some(
            host.stat(Path::new(host_path))?
                .ok_or_else(|| stale(spec_path, host_path))?,
        )
    };
    let kind = match (&node.kind, stat) {
        (Some(kind), _) => kind.chars().next().unwrap_or('c'),
        (None, Some(stat)) if matches!(stat.kind, 'c' | 'b' | 'p') => stat.kind,
        (None, _) => bail!("{host_path} is not a device node"),
    };
    let number = |given: Option<i64>, found: Option<u32>, what: &str| -> Result<u32> {
        match given {
            Some(n) => u32::try_from(n).with_context(|| format!("{} has {what} {n}", node.path)),
            None => found.with_context(|| format!("{} has no {what}", node.path)),
        }
    };
    let major = number(node.major, stat.map(|s| s.major), "major")?;
    let minor = number(node.minor, stat.map(|s| s.minor), "minor")?;
    let mode = node
        .file_mode
        .map(|m| m & 0o7777)
        .or(stat.map(|s| s.mode))
        .unwrap_or(0o666);
    let gid = node.gid.or(stat.map(|s| s.gid)).unwrap_or(0);
    let path = PathBuf::from(&node.path);
    plan.devices.retain(|d| d.path != path);
    plan.spec_edits.devices.retain(|(d, _)| d.path() != &path);
    let access = node
        .permissions
        .clone()
        .unwrap_or_else(|| "rwm".to_string());
    if kind == 'c' && access == "rwm" && node.uid.is_none() {
        plan.devices.push(DeviceNode {
            path,
            host_path: PathBuf::from(host_path),
            major,
            minor,
            mode,
            gid,
        });
        return Ok(());
    }
    let typ = match kind {
        'c' => LinuxDeviceType::C,
        'b' => LinuxDeviceType::B,
        'p' => LinuxDeviceType::P,
        _ => LinuxDeviceType::U,
    };
    let mut device = LinuxDeviceBuilder::default()
        .path(path)
        .typ(typ)
        .major(i64::from(major))
        .minor(i64::from(minor))
        .file_mode(mode)
        .gid(gid);
    if let Some(uid) = node.uid {
        device = device.uid(uid);
    }
    let rule = LinuxDeviceCgroupBuilder::default()
        .allow(true)
        .typ(typ)
        .major(i64::from(major))
        .minor(i64::from(minor))
        .access(access)
        .build()?;
    plan.spec_edits.devices.push((device.build()?, rule));
    Ok(())
}

fn add_mount(
    plan: &mut GpuPlan,
    mount: &MountEdit,
    spec_path: &Path,
    host: &dyn HostFiles,
) -> Result<()> {
    let destination = PathBuf::from(&mount.container_path);
    plan.mounts.retain(|m| m.destination != destination);
    plan.spec_edits
        .mounts
        .retain(|m| m.destination() != &destination);
    if !mount.is_bind() {
        let mut built = MountBuilder::default()
            .destination(destination)
            .source(&mount.host_path);
        if let Some(kind) = &mount.kind {
            built = built.typ(kind);
        }
        if !mount.options.is_empty() {
            built = built.options(mount.options.clone());
        }
        plan.spec_edits.mounts.push(built.build()?);
        return Ok(());
    }
    let stat = host
        .stat(Path::new(&mount.host_path))?
        .ok_or_else(|| stale(spec_path, &mount.host_path))?;
    let has = |option: &str| mount.options.iter().any(|o| o == option);
    plan.mounts.push(PlannedMount {
        source: PathBuf::from(&mount.host_path),
        destination,
        directory: stat.kind == 'd',
        writable: !has("ro"),
        executable: stat.kind == 'f' && stat.mode & 0o111 != 0,
        options: Some(BindOptions {
            read_only: has("ro"),
            nosuid: has("nosuid"),
            nodev: has("nodev"),
            noexec: has("noexec"),
        }),
    });
    Ok(())
}

fn add_link(plan: &mut GpuPlan, path: PathBuf, target: PathBuf) {
    plan.links.retain(|l| l.path != path);
    plan.links.push(PlannedLink { path, target });
}

fn do_nvidia_hooks(
    plan: &mut GpuPlan,
    hooks: &[NvidiaHook],
    request: &CdiRequest<'_>,
    rootfs: &RootfsFacts,
    host: &dyn HostFiles,
    driver: Option<&HostInventory>,
) -> Result<()> {
    let mut compat_for = None;
    for hook in hooks {
        match hook {
            NvidiaHook::CreateSymlinks(links) => {
                for (target, link) in links {
                    add_link(plan, link.clone(), target.clone());
                }
            }
            NvidiaHook::UpdateLdcache(folders) => {
                update_ldcache(plan, folders, &request.config_binds, host)?
            }
            NvidiaHook::Chmod { mode, paths } => {
                for path in paths {
                    plan.chmods.push(PlannedChmod {
                        path: path.clone(),
                        mode: *mode,
                    });
                }
            }
            NvidiaHook::EnableCudaCompat {
                host_driver_version,
                host_cuda_version,
            } => {
                // With only a host CUDA version (Orin), the toolkit compares the note's CUDA
                // version; gpu-youki's images there have no compat libraries to compare.
                if host_cuda_version.is_none() {
                    compat_for = host_driver_version.clone();
                }
            }
            NvidiaHook::DisableDeviceNodeModification => {
                let driver = driver
                    .context("disable-device-node-modification needs the NVIDIA driver's procfs")?;
                let granted = proc_view_for(plan, &request.config_devices, driver);
                match &mut plan.proc_view {
                    None => plan.proc_view = Some(granted),
                    Some(view) => {
                        for gpu in granted.gpus {
                            if !view.gpus.contains(&gpu) {
                                view.gpus.push(gpu);
                            }
                        }
                    }
                }
            }
            NvidiaHook::UpdateApplicationProfile => {
                plan.files
                    .retain(|f| f.path != Path::new(APPLICATION_PROFILE));
                plan.files.push(application_profile(plan));
            }
        }
    }
    if let (Some(version), Some(compat)) = (compat_for, &rootfs.cuda_compat) {
        if compat.usable_with(&version) {
            plan.add_cuda_compat(compat);
        }
    }
    Ok(())
}

/// The `/proc/driver/nvidia` view listing the GPUs, and the MIG capabilities, whose nodes the
/// plan or config.json grant.
fn proc_view_for(
    plan: &GpuPlan,
    config_devices: &[(u32, u32)],
    driver: &HostInventory,
) -> ProcView {
    let granted = |node: &crate::inventory::DeviceNode| {
        let number = (node.major, node.minor);
        plan.devices.iter().any(|d| (d.major, d.minor) == number)
            || config_devices.contains(&number)
    };
    ProcView {
        host_dir: driver.proc_dir.clone(),
        gpus: driver
            .gpus
            .iter()
            .filter(|g| granted(&g.device))
            .map(|g| g.bus_id.clone())
            .collect(),
        capabilities: driver
            .mig_capabilities
            .iter()
            .filter(|c| c.device.as_ref().is_some_and(granted))
            .map(|c| c.capability.clone())
            .collect(),
        all_capabilities: false,
    }
}

/// ldconfig over `folders`: a cache entry per library bound into them (SONAME from its ELF
/// header) and the SONAME link ldconfig would create.
fn update_ldcache(
    plan: &mut GpuPlan,
    folders: &[PathBuf],
    config_binds: &[(PathBuf, PathBuf)],
    host: &dyn HostFiles,
) -> Result<()> {
    let mut entries = Vec::new();
    let mut links = Vec::new();
    let binds = plan
        .mounts
        .iter()
        .filter(|m| !m.directory)
        .map(|m| (&m.source, &m.destination))
        .chain(config_binds.iter().map(|(s, d)| (s, d)));
    for (source, destination) in binds {
        let (Some(dir), Some(name)) = (destination.parent(), destination.file_name()) else {
            continue;
        };
        let name = name.to_string_lossy();
        if !folders.iter().any(|f| f == dir) || !name.contains(".so") {
            continue;
        }
        // Only regular files are read (a config.json bind could name a FIFO or a device).
        if host.stat(source)?.is_none_or(|s| s.kind != 'f') {
            continue;
        }
        let soname = host.soname(source)?.unwrap_or_else(|| name.to_string());
        if soname != name {
            links.push((dir.join(&soname), PathBuf::from(name.as_ref())));
        }
        entries.push(LdCacheEntry::new(&soname, dir.join(&soname), NATIVE_FLAGS));
    }
    for (path, target) in links {
        if !plan.links.iter().any(|l| l.path == path) {
            plan.links.push(PlannedLink { path, target });
        }
    }
    plan.library_cache.extend(LibraryCache {
        dirs: folders.to_vec(),
        entries,
    });
    Ok(())
}

/// The EGL profile restricting EGL/Vulkan to the granted GPUs (`nvidia<minor>` nodes).
fn application_profile(plan: &GpuPlan) -> PlannedFile {
    let mask = plan
        .devices
        .iter()
        .filter(|d| {
            d.path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("nvidia"))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                && d.minor < 64
        })
        .fold(0u64, |mask, d| mask | (1 << d.minor));
    PlannedFile {
        path: PathBuf::from(APPLICATION_PROFILE),
        content: format!(
            "{{\"profiles\": [{{\"name\": \"_container_\", \"settings\": \
             [\"EGLVisibleDGPUDevices\", 0x{mask:x}]}}], \
             \"rules\": [{{\"pattern\": [], \"profile\": \"_container_\"}}]}}\n"
        )
        .into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdi::spec::{Spec, SpecFormat};
    use crate::compat::{CompatLibrary, CudaCompat};
    use crate::ldcache::LdCache;
    use crate::plan::tests::{debian, inventory};

    /// A host whose nodes and files are listed: `/host/dev/nvidia*` (195:minor), the block
    /// device `/host/dev/sda` (8:0), and files under `/host/lib` and `/host/bin`.
    struct FakeHost;

    impl HostFiles for FakeHost {
        fn stat(&self, path: &Path) -> Result<Option<HostStat>> {
            let text = path.to_str().unwrap();
            let device = |kind, major, minor| HostStat {
                kind,
                mode: 0o666,
                major,
                minor,
                gid: 0,
            };
            Ok(match text {
                "/host/dev/nvidiactl" => Some(device('c', 195, 255)),
                "/host/dev/sda" => Some(device('b', 8, 0)),
                _ if text.starts_with("/host/dev/nvidia") => {
                    Some(device('c', 195, text[16..].parse().unwrap()))
                }
                _ if text.starts_with("/host/lib/") || text.starts_with("/host/bin/") => {
                    Some(HostStat {
                        kind: 'f',
                        mode: 0o755,
                        ..device('f', 0, 0)
                    })
                }
                _ => None,
            })
        }

        fn soname(&self, path: &Path) -> Result<Option<String>> {
            let name = path.file_name().unwrap().to_str().unwrap();
            Ok(name
                .split_once(".so.")
                .map(|(base, _)| format!("{base}.so.1")))
        }
    }

    /// The shape `nvidia-ctk cdi generate --driver-root /host --dev-root /host` writes.
    const NVIDIA: &str = r#"---
cdiVersion: 0.5.0
kind: nvidia.com/gpu
devices:
- name: "0"
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
      hostPath: /host/dev/nvidia0
containerEdits:
  env:
  - NVIDIA_VISIBLE_DEVICES=void
  deviceNodes:
  - path: /dev/nvidiactl
    hostPath: /host/dev/nvidiactl
  hooks:
  - hookName: createContainer
    path: /usr/bin/nvidia-cdi-hook
    args: [nvidia-cdi-hook, create-symlinks, --link, libcuda.so.1::/usr/lib/x86_64-linux-gnu/libcuda.so]
  - hookName: createContainer
    path: /usr/bin/nvidia-cdi-hook
    args: [nvidia-cdi-hook, enable-cuda-compat, --host-driver-version=580.95.05]
  - hookName: createContainer
    path: /usr/bin/nvidia-cdi-hook
    args: [nvidia-cdi-hook, update-ldcache, --folder, /usr/lib/x86_64-linux-gnu]
  - hookName: createContainer
    path: /usr/bin/nvidia-cdi-hook
    args: [nvidia-cdi-hook, disable-device-node-modification]
  - hookName: createContainer
    path: /usr/bin/nvidia-cdi-hook
    args: [nvidia-cdi-hook, update-application-profile]
  mounts:
  - hostPath: /host/lib/libcuda.so.580.95.05
    containerPath: /usr/lib/x86_64-linux-gnu/libcuda.so.580.95.05
    options: [ro, nosuid, nodev, bind]
  - hostPath: /host/bin/nvidia-smi
    containerPath: /usr/bin/nvidia-smi
    options: [ro, nosuid, nodev, bind]
"#;

    fn compile_spec(
        text: &str,
        device: &str,
        rootfs: &RootfsFacts,
        base: Option<GpuPlan>,
    ) -> Result<GpuPlan> {
        let spec = Spec::parse(text.as_bytes(), SpecFormat::Yaml)?;
        let request = CdiRequest {
            devices: vec![ResolvedDevice {
                path: Path::new("/etc/cdi/test.yaml"),
                spec_edits: &spec.container_edits,
                device: spec.devices.iter().find(|d| d.name == device).unwrap(),
                spec_index: 0,
            }],
            ..CdiRequest::default()
        };
        compile(base, &request, rootfs, &FakeHost, Some(&inventory(2)))
    }

    fn cache_target(plan: &GpuPlan, soname: &str) -> Option<PathBuf> {
        let cache = LdCache::parse(&plan.files[0].content).unwrap();
        cache
            .entries
            .iter()
            .find(|e| e.soname == soname)
            .map(|e| e.path.clone())
    }

    #[test]
    fn an_nvidia_ctk_spec_becomes_plan_parts_and_no_hook_remains() {
        let plan = compile_spec(NVIDIA, "0", &debian(), None).unwrap();
        let devices: Vec<(String, u32, u32)> = plan
            .devices
            .iter()
            .map(|d| (d.path.display().to_string(), d.major, d.minor))
            .collect();
        assert_eq!(
            devices,
            [
                ("/dev/nvidia0".into(), 195, 0),
                ("/dev/nvidiactl".into(), 195, 255)
            ]
        );
        assert_eq!(plan.devices[0].host_path, Path::new("/host/dev/nvidia0"));
        let smi = plan
            .mounts
            .iter()
            .find(|m| m.destination == Path::new("/usr/bin/nvidia-smi"))
            .unwrap();
        assert!(smi.executable && !smi.writable);
        let options = smi.bind_options();
        assert!(options.read_only && options.nosuid && options.nodev && !options.noexec);
        let link = |path: &str| {
            plan.links
                .iter()
                .find(|l| l.path == Path::new(path))
                .map(|l| l.target.display().to_string())
        };
        assert_eq!(
            link("/usr/lib/x86_64-linux-gnu/libcuda.so").as_deref(),
            Some("libcuda.so.1")
        );
        assert_eq!(
            link("/usr/lib/x86_64-linux-gnu/libcuda.so.1").as_deref(),
            Some("libcuda.so.580.95.05")
        );
        assert_eq!(
            cache_target(&plan, "libcuda.so.1").unwrap(),
            Path::new("/usr/lib/x86_64-linux-gnu/libcuda.so.1")
        );
        assert_eq!(plan.env, ["NVIDIA_VISIBLE_DEVICES=void"]);
        assert!(plan.spec_edits.is_empty(), "{:?}", plan.spec_edits);
        assert_eq!(plan.proc_view.as_ref().unwrap().gpus, ["0000:10:00.0"]);
        let profile = plan
            .files
            .iter()
            .find(|f| f.path == Path::new(APPLICATION_PROFILE))
            .unwrap();
        assert!(
            String::from_utf8_lossy(&profile.content).contains("\"EGLVisibleDGPUDevices\", 0x1]")
        );
    }

    #[test]
    fn newer_compat_libraries_come_first_and_older_ones_are_ignored() {
        let compat = |version: &str| CudaCompat {
            dir: PathBuf::from(crate::compat::COMPAT_DIR),
            libcuda_version: version.to_string(),
            note: None,
            libraries: vec![CompatLibrary {
                file: format!("libcuda.so.{version}"),
                soname: "libcuda.so.1".to_string(),
                soname_present: false,
            }],
        };
        let mut rootfs = debian();
        rootfs.cuda_compat = Some(compat("590.10.01"));
        let plan = compile_spec(NVIDIA, "0", &rootfs, None).unwrap();
        assert_eq!(
            cache_target(&plan, "libcuda.so.1").unwrap(),
            Path::new("/usr/local/cuda/compat/libcuda.so.1")
        );
        assert!(plan
            .links
            .iter()
            .any(|l| l.path == Path::new("/usr/local/cuda/compat/libcuda.so.1")));
        let dropin = String::from_utf8_lossy(&plan.files[1].content).into_owned();
        assert!(
            dropin.find("/usr/local/cuda/compat") < dropin.find("/usr/lib/x86_64-linux-gnu"),
            "{dropin}"
        );
        rootfs.cuda_compat = Some(compat("575.51.03"));
        let plan = compile_spec(NVIDIA, "0", &rootfs, None).unwrap();
        assert_eq!(
            cache_target(&plan, "libcuda.so.1").unwrap(),
            Path::new("/usr/lib/x86_64-linux-gnu/libcuda.so.1")
        );
    }

    #[test]
    fn other_vendors_edits_pass_on_and_leave_the_cache_alone() {
        let spec = r#"
cdiVersion: 0.7.0
kind: vendor.com/device
devices:
- name: x
  containerEdits:
    env: [VENDOR_DEVICE=x]
    deviceNodes:
    - {path: /dev/vendor-x, hostPath: /host/dev/nvidia9, permissions: rw}
    - {path: /dev/disk-x, hostPath: /host/dev/sda}
    mounts:
    - {hostPath: tmpfs, containerPath: /run/vendor, type: tmpfs, options: [nosuid]}
    - {hostPath: /host/lib/libvendor.so.1.0, containerPath: /opt/vendor/libvendor.so.1.0, options: [rbind, noexec]}
    hooks:
    - {hookName: poststop, path: /usr/bin/vendor-cleanup, args: [vendor-cleanup, x]}
    additionalGids: [0, 44]
"#;
        let plan = compile_spec(spec, "x", &debian(), None).unwrap();
        assert!(plan.devices.is_empty());
        let devices: Vec<String> = plan
            .spec_edits
            .devices
            .iter()
            .map(|(d, r)| {
                format!(
                    "{} {:?} {}:{} {}",
                    d.path().display(),
                    d.typ(),
                    d.major(),
                    d.minor(),
                    r.access().as_deref().unwrap()
                )
            })
            .collect();
        assert_eq!(
            devices,
            ["/dev/vendor-x C 195:9 rw", "/dev/disk-x B 8:0 rwm"]
        );
        assert_eq!(plan.spec_edits.mounts[0].typ().as_deref(), Some("tmpfs"));
        let bind = &plan.mounts[0];
        assert!(bind.writable && bind.bind_options().noexec && !bind.bind_options().nosuid);
        assert_eq!(plan.spec_edits.hooks[0].0, "poststop");
        assert_eq!(plan.additional_gids, [44]);
        assert_eq!(plan.env, ["VENDOR_DEVICE=x"]);
        assert!(plan.files.is_empty() && plan.proc_view.is_none());
    }

    #[test]
    fn stale_specs_and_unknown_nvidia_hooks_are_refused_in_one_line() {
        let stale = NVIDIA.replace("/host/bin/nvidia-smi", "/host/gone/nvidia-smi");
        let err = compile_spec(&stale, "0", &debian(), None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "CDI spec /etc/cdi/test.yaml: /host/gone/nvidia-smi does not exist on the host (a \
             stale spec); regenerate it: gpu-youki cdi generate --output /etc/cdi/test.yaml"
        );
        let unknown = NVIDIA.replace("update-application-profile", "reticulate-splines");
        let err = format!(
            "{:#}",
            compile_spec(&unknown, "0", &debian(), None).unwrap_err()
        );
        assert!(
            err.contains("reticulate-splines") && err.contains("test.yaml"),
            "{err}"
        );
    }

    #[test]
    fn a_legacy_plan_and_cdi_devices_merge() {
        let env = vec!["NVIDIA_VISIBLE_DEVICES=1".to_string()];
        let request = crate::request::GpuRequest::from_env(&env).unwrap().unwrap();
        let base = GpuPlan::new(&request, &inventory(2), &debian(), None)
            .unwrap()
            .unwrap();
        let plan = compile_spec(NVIDIA, "0", &debian(), Some(base)).unwrap();
        let mut nodes: Vec<String> = plan
            .devices
            .iter()
            .map(|d| d.path.display().to_string())
            .collect();
        nodes.sort();
        assert_eq!(
            nodes,
            [
                "/dev/nvidia-uvm",
                "/dev/nvidia-uvm-tools",
                "/dev/nvidia0",
                "/dev/nvidia1",
                "/dev/nvidiactl"
            ]
        );
        let mut gpus = plan.proc_view.unwrap().gpus;
        gpus.sort();
        assert_eq!(gpus, ["0000:10:00.0", "0000:11:00.0"]);
        let cache = LdCache::parse(&plan.files[0].content).unwrap();
        assert!(cache
            .entries
            .iter()
            .any(|e| e.soname == "libnvidia-ml.so.1"));
        assert!(cache.entries.iter().any(|e| e.soname == "libcuda.so.1"));
    }
}
