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
            apply_edits(&mut plan, edit, host, &mut nvidia)
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
        gpus: Vec::new(),
        devices: Vec::new(),
        mounts: Vec::new(),
        links: Vec::new(),
        files: Vec::new(),
        removals: Vec::new(),
        proc_view: None,
        env: Vec::new(),
        additional_gids: Vec::new(),
        chmods: Vec::new(),
        library_cache: LibraryCache::default(),
        spec_edits: Default::default(),
    }
}

/// The one-line error for a spec naming a host path that is gone.
fn stale(path: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "{path} does not exist on the host (the driver changed since the spec was written?); \
         regenerate the spec: gpu-youki cdi generate --output <this spec file>"
    )
}

fn apply_edits(
    plan: &mut GpuPlan,
    edits: &ContainerEdits,
    host: &dyn HostFiles,
    nvidia: &mut Vec<NvidiaHook>,
) -> Result<()> {
    plan.env.extend(edits.env.iter().cloned());
    for node in &edits.device_nodes {
        add_device_node(plan, node, host)?;
    }
    for mount in &edits.mounts {
        add_mount(plan, mount, host)?;
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

fn add_device_node(plan: &mut GpuPlan, node: &DeviceNodeEdit, host: &dyn HostFiles) -> Result<()> {
    let host_path = node.host_path.as_deref().unwrap_or(&node.path);
    let complete = node.kind.is_some()
        && (node.kind.as_deref() == Some("p") || (node.major.is_some() && node.minor.is_some()))
        && node.file_mode.is_some();
    let stat = if complete {
        host.stat(Path::new(host_path))?
    } else {
        Some(
            host.stat(Path::new(host_path))?
                .ok_or_else(|| stale(host_path))?,
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

fn add_mount(plan: &mut GpuPlan, mount: &MountEdit, host: &dyn HostFiles) -> Result<()> {
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
        .ok_or_else(|| stale(&mount.host_path))?;
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

/// The `/proc/driver/nvidia` view listing the GPUs whose nodes the plan or config.json grant.
fn proc_view_for(
    plan: &GpuPlan,
    config_devices: &[(u32, u32)],
    driver: &HostInventory,
) -> ProcView {
    let granted = |gpu: &crate::inventory::Gpu| {
        let number = (gpu.device.major, gpu.device.minor);
        plan.devices.iter().any(|d| (d.major, d.minor) == number)
            || config_devices.contains(&number)
    };
    ProcView {
        host_dir: driver.proc_dir.clone(),
        gpus: driver
            .gpus
            .iter()
            .filter(|g| granted(g))
            .map(|g| g.bus_id.clone())
            .collect(),
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
