//! Carries a plan out, in three places and without running any program:
//! 1. the spec: allow rules in `linux.resources.devices`, so libcontainer (and any cgroup
//!    manager) knows every device the container may use (and the nodes in `linux.devices`
//!    only where the container has no `/dev` tmpfs: [`DeviceNodes`]);
//! 2. the rootfs, before the container is created: the ld.so.cache, the ld.so.conf.d drop-in,
//!    SONAME links and empty mount targets, all through in-root path resolution;
//! 3. the container's mount namespace, after libcontainer created the container and before it
//!    starts: the device nodes, the driver files bound in (read-only, nosuid, nodev) and the
//!    `/proc/driver/nvidia` view, from the runtime's thread, which `setns`es into that namespace
//!    and back ([`InMountNamespace`]). Mounts are attached with `open_tree`/`move_mount` onto
//!    targets resolved inside the container's root, so an image's symlinks can never redirect
//!    them onto host paths.

use std::ffi::{CStr, OsStr, OsString};
use std::io::Write as _;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use oci_spec::runtime::{
    LinuxDeviceBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxNamespaceType, Spec,
};
use rustix::fs::{Mode, OFlags, CWD};
use rustix::mount::{
    fsconfig_create, fsconfig_set_string, fsmount, fsopen, move_mount, open_tree, FsMountFlags,
    FsOpenFlags, MountAttrFlags, MoveMountFlags, OpenTreeFlags,
};

use crate::fsroot::{CharDevice, FsRoot, InDirs};
use crate::inventory::{entry_name_set, entry_names, DeviceNode};
use crate::plan::{GpuPlan, PlannedMount};
use crate::procfs;

/// How the plan's device nodes get into the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceNodes {
    /// Made by [`mount_into_container`] in the container's `/dev` tmpfs: a `mknodat` and a
    /// `chownat` a node, where libcontainer walks the whole rootfs path several times (measured
    /// on a 64-GPU container: about 32 µs a node there, 18 µs here).
    Made,
    /// Bound from the host by [`mount_into_container`]: nodes cannot be made in a user
    /// namespace.
    Bound,
    /// Left to libcontainer in `linux.devices`: without a `/dev` tmpfs of its own, the
    /// container's `/dev` is the image's, which a read-only rootfs closes before the mounts.
    InSpec,
}

impl DeviceNodes {
    /// The way for `spec`: bound with a user namespace, made where `/dev` is a tmpfs.
    pub fn for_spec(spec: &Spec) -> Self {
        let user_namespace = spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_ref())
            .is_some_and(|ns| ns.iter().any(|n| n.typ() == LinuxNamespaceType::User));
        let dev_tmpfs = spec.mounts().iter().flatten().any(|m| {
            m.destination()
                .components()
                .eq(Path::new("/dev").components())
                && m.typ().as_deref() == Some("tmpfs")
        });
        match (user_namespace, dev_tmpfs) {
            (true, _) => DeviceNodes::Bound,
            (false, true) => DeviceNodes::Made,
            (false, false) => DeviceNodes::InSpec,
        }
    }
}

/// Adds the plan's devices to the spec: an allow rule each, and a node each when `nodes` says
/// libcontainer makes them (else a spec node at the same path is dropped, as
/// [`mount_into_container`] makes it); and the plan's environment and additional groups to the
/// process.
pub fn edit_spec(spec: &mut Spec, plan: &GpuPlan, nodes: DeviceNodes) -> Result<()> {
    edit_process(spec, plan);
    remove_nvidia_cdi_hooks(spec);
    pass_on_cdi_edits(spec, &plan.spec_edits)?;
    let linux = spec
        .linux_mut()
        .as_mut()
        .context("config.json has no linux section")?;
    let mut rules = linux
        .resources()
        .as_ref()
        .and_then(|r| r.devices().clone())
        .unwrap_or_default();
    let mut spec_nodes = linux.devices().clone().unwrap_or_default();
    for device in &plan.devices {
        rules.push(
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(LinuxDeviceType::C)
                .major(i64::from(device.major))
                .minor(i64::from(device.minor))
                .access("rwm")
                .build()?,
        );
        spec_nodes.retain(|n| n.path() != &device.path);
        if nodes != DeviceNodes::InSpec {
            continue;
        }
        spec_nodes.push(
            LinuxDeviceBuilder::default()
                .path(device.path.clone())
                .typ(LinuxDeviceType::C)
                .major(i64::from(device.major))
                .minor(i64::from(device.minor))
                .file_mode(device.mode)
                .uid(0u32)
                .gid(device.gid)
                .build()?,
        );
    }
    let mut resources = linux.resources().clone().unwrap_or_default();
    resources.set_devices(Some(rules));
    linux.set_resources(Some(resources));
    linux.set_devices(Some(spec_nodes));
    Ok(())
}

/// Removes NVIDIA's CDI hooks (`nvidia-cdi-hook …`, `nvidia-ctk hook …`) from the spec: the
/// plan does their work ([`crate::cdi::compile`]), so they never run.
fn remove_nvidia_cdi_hooks(spec: &mut Spec) {
    let Some(hooks) = spec.hooks_mut() else {
        return;
    };
    let keep = |list: &Option<Vec<oci_spec::runtime::Hook>>| {
        list.as_ref().map(|list| {
            list.iter()
                .filter(|hook| {
                    let path = hook.path().to_string_lossy();
                    let args = hook.args().clone().unwrap_or_default();
                    !crate::cdi::hooks::is_nvidia_hook(&path, &args)
                })
                .cloned()
                .collect::<Vec<_>>()
        })
    };
    let (prestart, create_runtime, create_container) = (
        keep(hooks.prestart()),
        keep(hooks.create_runtime()),
        keep(hooks.create_container()),
    );
    let (start_container, poststart, poststop) = (
        keep(hooks.start_container()),
        keep(hooks.poststart()),
        keep(hooks.poststop()),
    );
    #[allow(deprecated)]
    hooks.set_prestart(prestart);
    hooks.set_create_runtime(create_runtime);
    hooks.set_create_container(create_container);
    hooks.set_start_container(start_container);
    hooks.set_poststart(poststart);
    hooks.set_poststop(poststop);
}

/// Adds the CDI edits gpu-youki does not do itself, as the CDI library would: mounts replacing
/// same-destination ones and the list sorted parents first, hooks appended to their lists,
/// device nodes with their cgroup rules.
fn pass_on_cdi_edits(spec: &mut Spec, edits: &crate::plan::SpecEdits) -> Result<()> {
    if edits.is_empty() {
        return Ok(());
    }
    if !edits.mounts.is_empty() {
        let mut mounts = spec.mounts().clone().unwrap_or_default();
        for mount in &edits.mounts {
            mounts.retain(|m| m.destination() != mount.destination());
            mounts.push(mount.clone());
        }
        mounts.sort_by_key(|m| m.destination().components().count());
        spec.set_mounts(Some(mounts));
    }
    if !edits.hooks.is_empty() {
        let mut hooks = spec.hooks().clone().unwrap_or_default();
        for (name, hook) in &edits.hooks {
            let list = match name.as_str() {
                #[allow(deprecated)]
                "prestart" => hooks.prestart().clone(),
                "createRuntime" => hooks.create_runtime().clone(),
                "createContainer" => hooks.create_container().clone(),
                "startContainer" => hooks.start_container().clone(),
                "poststart" => hooks.poststart().clone(),
                "poststop" => hooks.poststop().clone(),
                other => anyhow::bail!("unknown CDI hook name {other}"),
            };
            let mut list = list.unwrap_or_default();
            list.push(hook.clone());
            match name.as_str() {
                #[allow(deprecated)]
                "prestart" => hooks.set_prestart(Some(list)),
                "createRuntime" => hooks.set_create_runtime(Some(list)),
                "createContainer" => hooks.set_create_container(Some(list)),
                "startContainer" => hooks.set_start_container(Some(list)),
                "poststart" => hooks.set_poststart(Some(list)),
                _ => hooks.set_poststop(Some(list)),
            };
        }
        spec.set_hooks(Some(hooks));
    }
    if !edits.devices.is_empty() {
        let linux = spec
            .linux_mut()
            .as_mut()
            .context("config.json has no linux section")?;
        let mut nodes = linux.devices().clone().unwrap_or_default();
        let mut resources = linux.resources().clone().unwrap_or_default();
        let mut rules = resources.devices().clone().unwrap_or_default();
        for (node, rule) in &edits.devices {
            nodes.retain(|n| n.path() != node.path());
            nodes.push(node.clone());
            rules.push(rule.clone());
        }
        resources.set_devices(Some(rules));
        linux.set_resources(Some(resources));
        linux.set_devices(Some(nodes));
    }
    Ok(())
}

/// Sets `KEY=VALUE` in a process environment (`KEY=VALUE` items), in place of any value `KEY`
/// had: a variable set twice would be ambiguous to the request parser and to the process.
pub fn set_env_item(env: &mut Vec<String>, item: &str) {
    let key = item.split_once('=').map_or(item, |(key, _)| key);
    env.retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
    env.push(item.to_string());
}

/// Sets the plan's environment items (replacing same-named ones) and adds its groups.
fn edit_process(spec: &mut Spec, plan: &GpuPlan) {
    if plan.env.is_empty() && plan.additional_gids.is_empty() {
        return;
    }
    let Some(process) = spec.process_mut() else {
        return;
    };
    let mut env = process.env().clone().unwrap_or_default();
    for item in &plan.env {
        set_env_item(&mut env, item);
    }
    process.set_env(Some(env));
    let user = process.user_mut();
    let mut gids = user.additional_gids().clone().unwrap_or_default();
    for gid in &plan.additional_gids {
        if !gids.contains(gid) && *gid != user.gid() {
            gids.push(*gid);
        }
    }
    user.set_additional_gids(Some(gids));
}

/// Writes the plan's files and links into the rootfs and creates the mount targets, all
/// resolved inside the rootfs. Idempotent: a second run leaves the same files.
pub fn prepare_rootfs(rootfs: &FsRoot, plan: &GpuPlan) -> Result<()> {
    for path in &plan.removals {
        rootfs.remove_file(path)?;
    }
    for file in &plan.files {
        rootfs.write_file(&file.path, &file.content)?;
    }
    let mut dirs = rootfs.dirs();
    for link in plan.links.iter().filter(|l| !in_container_dev(&l.path)) {
        dirs.symlink(&link.target, &link.path)?;
    }
    for mount in &plan.mounts {
        create_target(
            &mut dirs,
            &mount.destination,
            mount.directory,
            target_mode(mount),
        )?;
    }
    Ok(())
}

/// Links under `/dev` go to the container's `/dev` (a tmpfs libcontainer mounts over the
/// rootfs's), so [`mount_into_container`] makes them after create.
fn in_container_dev(path: &Path) -> bool {
    path.starts_with("/dev")
}

fn target_mode(mount: &PlannedMount) -> u32 {
    if mount.executable {
        0o755
    } else {
        0o644
    }
}

fn create_target(dirs: &mut InDirs, path: &Path, directory: bool, mode: u32) -> Result<()> {
    if directory {
        dirs.root().create_dir_all(path).map(drop)
    } else {
        dirs.create_file(path, mode)
    }
}

/// The plan's files that a spec mount covers (a volume on `/etc`, say): the container would not
/// see what [`prepare_rootfs`] wrote, so they are bound from runtime-owned copies instead.
pub fn covered_files<'a>(
    plan: &'a GpuPlan,
    mount_destinations: &[&Path],
) -> Vec<&'a crate::plan::PlannedFile> {
    plan.files
        .iter()
        .filter(|file| {
            mount_destinations
                .iter()
                .any(|d| file.path.starts_with(d) && *d != Path::new("/"))
        })
        .collect()
}

/// Creates the host's `<dev-root>/dev/char/MAJ:MIN` links for the plan's devices when missing
/// (systemd and runc resolve device rules through them); they are host facts, never removed.
pub fn ensure_dev_char_links(dev_root: &Path, plan: &GpuPlan) -> Result<()> {
    let dir = dev_root.join("dev/char");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dev = dev_root.join("dev");
    // Listed once rather than probed once per device: most links are there already.
    let present = entry_name_set(&dir)?;
    for device in &plan.devices {
        let name = format!("{}:{}", device.major, device.minor);
        if present.contains(OsStr::new(&name)) {
            continue;
        }
        let link = dir.join(name);
        // Only nodes under the dev root (a CDI spec may name a node anywhere).
        let Ok(name) = device.host_path.strip_prefix(&dev) else {
            continue;
        };
        let target = Path::new("..").join(name);
        match std::os::unix::fs::symlink(&target, &link) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(err) => {
                return Err(err).with_context(|| format!("cannot create {}", link.display()))
            }
        }
    }
    Ok(())
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;

/// A detached mount (an `open_tree` clone or a new tmpfs) and where it goes in the container.
struct Attachment {
    tree: OwnedFd,
    destination: PathBuf,
    /// A missing target is created inside the container (a spec mount such as a tmpfs on
    /// `/run` or `/dev` may hide the one made in the rootfs): a directory, or a file with
    /// these permission bits.
    directory: bool,
    mode: u32,
}

/// Binds the plan's driver files, `extra` mounts (runtime-owned copies of covered files) and
/// the `/proc/driver/nvidia` view into the mount namespace of the container whose init is
/// `pid`, makes or binds the plan's device nodes there as `nodes` says, and its `/dev` links.
#[tracing::instrument(level = "debug", name = "mount_into_container", skip_all)]
pub fn mount_into_container(
    pid: i32,
    plan: &GpuPlan,
    extra: &[PlannedMount],
    nodes: DeviceNodes,
) -> Result<()> {
    let mut attachments = Vec::new();
    for mount in plan.mounts.iter().chain(extra) {
        let options = mount.bind_options();
        let attrs = [
            (options.read_only, MOUNT_ATTR_RDONLY),
            (options.nosuid, MOUNT_ATTR_NOSUID),
            (options.nodev, MOUNT_ATTR_NODEV),
            (options.noexec, MOUNT_ATTR_NOEXEC),
        ]
        .iter()
        .filter(|(set, _)| *set)
        .fold(0, |attrs, (_, flag)| attrs | flag);
        attachments.push(Attachment {
            tree: clone_tree(&mount.source, attrs)?,
            destination: mount.destination.clone(),
            directory: mount.directory,
            mode: target_mode(mount),
        });
    }
    if nodes == DeviceNodes::Bound {
        for device in &plan.devices {
            attachments.push(device_attachment(device)?);
        }
    }
    let proc_view = plan
        .proc_view
        .as_ref()
        .map(ProcViewMount::prepare)
        .transpose()?;

    let namespace = std::fs::File::open(format!("/proc/{pid}/ns/mnt"))
        .with_context(|| format!("cannot open the mount namespace of process {pid}"))?;
    let _inside = InMountNamespace::enter(namespace.as_fd())?;
    let root = FsRoot::open(Path::new("/"))?;
    if nodes == DeviceNodes::Made {
        root.make_char_devices(plan.devices.iter().map(|device| CharDevice {
            path: &device.path,
            numbers: (device.major, device.minor),
            mode: device.mode,
            gid: device.gid,
        }))?;
    }
    for attachment in &attachments {
        attach(&root, attachment)?;
    }
    make_dev_links_and_modes(&root, plan)?;
    // Back in the runtime's own namespace when `_inside` drops, on error too.
    proc_view.map_or(Ok(()), |view| view.attach(&root))
}

/// The calling thread inside another mount namespace, with umask 0 (nodes get exactly the
/// host's permission bits), until dropped: then back in its own namespace, with its root,
/// working directory and umask as they were. Done on the calling thread rather than a new
/// one: handing the work to a thread and back cost two cross-CPU wake-ups, 0.3 ms of wall
/// time per create on the project's 2-vCPU VMs.
struct InMountNamespace {
    own: OwnedFd,
    root: OwnedFd,
    cwd: OwnedFd,
    umask: Mode,
}

impl InMountNamespace {
    fn enter(namespace: BorrowedFd<'_>) -> Result<Self> {
        let open_dir = |path: &str| {
            rustix::fs::open(
                path,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .with_context(|| format!("cannot open {path}"))
        };
        let own = rustix::fs::open(
            "/proc/thread-self/ns/mnt",
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .context("cannot open /proc/thread-self/ns/mnt")?;
        let (root, cwd) = (open_dir("/")?, open_dir(".")?);
        // setns into a mount namespace needs a filesystem context of the thread's own.
        // SAFETY: CLONE_FS only detaches this thread's root, cwd and umask from the process's
        // other threads (a `run` with a terminal has some), which keep theirs; this thread's
        // are restored when `InMountNamespace` drops.
        unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FS) }
            .context("unshare(CLONE_FS)")?;
        rustix::thread::move_into_link_name_space(
            namespace,
            Some(rustix::thread::LinkNameSpaceType::Mount),
        )
        .context("cannot enter the container's mount namespace")?;
        let umask = rustix::process::umask(Mode::empty());
        Ok(InMountNamespace {
            own,
            root,
            cwd,
            umask,
        })
    }
}

impl Drop for InMountNamespace {
    fn drop(&mut self) {
        rustix::process::umask(self.umask);
        let back = rustix::thread::move_into_link_name_space(
            self.own.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Mount),
        )
        .and_then(|()| rustix::process::fchdir(&self.root))
        .and_then(|()| rustix::process::chroot("."))
        .and_then(|()| rustix::process::fchdir(&self.cwd));
        if let Err(err) = back {
            // Host-side code must never go on with the container's files as its filesystem.
            eprintln!("gpu-youki: cannot return from the container's mount namespace: {err}");
            std::process::abort();
        }
    }
}

/// The plan's links under `/dev` (DRM by-path links) and the modes of its `chmod` hooks, made
/// in the container's `/dev` now that it exists. A failed chmod is not an error (the toolkit
/// ignores it too).
fn make_dev_links_and_modes(root: &FsRoot, plan: &GpuPlan) -> Result<()> {
    for link in plan.links.iter().filter(|l| in_container_dev(&l.path)) {
        root.symlink(&link.target, &link.path)?;
    }
    for chmod in &plan.chmods {
        let Some(fd) = root.open_at(&chmod.path, OFlags::RDONLY, Mode::empty())? else {
            continue;
        };
        if let Err(err) = rustix::fs::fchmod(&fd, Mode::from_raw_mode(chmod.mode)) {
            tracing::warn!("cannot chmod {}: {err}", chmod.path.display());
        }
    }
    Ok(())
}

fn device_attachment(device: &DeviceNode) -> Result<Attachment> {
    Ok(Attachment {
        tree: clone_tree(&device.host_path, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC)?,
        destination: device.path.clone(),
        directory: false,
        mode: 0o644,
    })
}

/// A detached bind mount of the host path `source`, with mount attributes set.
fn clone_tree(source: &Path, attrs: u64) -> Result<OwnedFd> {
    let tree = open_tree(
        CWD,
        source,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )
    .with_context(|| {
        format!(
            "cannot open {} to bind it into the container",
            source.display()
        )
    })?;
    if attrs != 0 {
        set_mount_attrs(&tree, attrs, false)
            .with_context(|| format!("cannot set mount flags on {}", source.display()))?;
    }
    Ok(tree)
}

/// `mount_setattr(fd, "", AT_EMPTY_PATH, {attr_set})`, which rustix does not wrap; with
/// `recursive`, on every mount below too.
fn set_mount_attrs(fd: &OwnedFd, attrs: u64, recursive: bool) -> Result<()> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let attr = MountAttr {
        attr_set: attrs,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    const EMPTY: &CStr = c"";
    // SAFETY: the kernel reads `attr` (of the size passed) and the empty path; fd is open.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            EMPTY.as_ptr(),
            libc::AT_EMPTY_PATH | if recursive { libc::AT_RECURSIVE } else { 0 },
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

/// Attaches a detached mount at its destination, resolved inside the container's root.
fn attach(root: &FsRoot, attachment: &Attachment) -> Result<()> {
    let open_target = || root.open_at(&attachment.destination, OFlags::PATH, Mode::empty());
    // The target is usually there already (made in the rootfs before create).
    let target = match open_target()? {
        Some(target) => target,
        None => {
            create_target(
                &mut root.dirs(),
                &attachment.destination,
                attachment.directory,
                attachment.mode,
            )?;
            open_target()?.with_context(|| {
                format!(
                    "mount target {} is missing",
                    attachment.destination.display()
                )
            })?
        }
    };
    move_mount(
        &attachment.tree,
        "",
        &target,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .with_context(|| {
        format!(
            "cannot mount onto {} in the container",
            attachment.destination.display()
        )
    })
}

/// The per-container `/proc/driver/nvidia`: a tmpfs holding copies of `version`, `registry` and
/// `params` (with `ModifyDeviceFiles: 0`, so NVML in the container never creates device nodes),
/// the granted GPUs' directories and MIG capability files (or the whole `capabilities` tree)
/// bound from the host. libcontainer refuses spec mounts
/// under `/proc`, hence this step.
struct ProcViewMount {
    tmpfs: OwnedFd,
    /// `/proc/driver/nvidia` when the kernel has it, else `/proc/driver` (with `nvidia/` inside).
    destination: PathBuf,
    /// The tmpfs-relative directory that stands for `/proc/driver/nvidia`.
    nvidia_dir: PathBuf,
    /// Host trees bound into the view: path relative to `nvidia_dir`, the tree, a directory.
    binds: Vec<(PathBuf, OwnedFd, bool)>,
}

impl ProcViewMount {
    fn prepare(view: &crate::plan::ProcView) -> Result<Self> {
        let fs = fsopen("tmpfs", FsOpenFlags::FSOPEN_CLOEXEC).context("cannot create a tmpfs")?;
        fsconfig_set_string(fs.as_fd(), "mode", "0755")?;
        fsconfig_set_string(fs.as_fd(), "size", "1m")?;
        fsconfig_create(fs.as_fd()).context("cannot create a tmpfs")?;
        let tmpfs = fsmount(
            fs.as_fd(),
            FsMountFlags::FSMOUNT_CLOEXEC,
            MountAttrFlags::MOUNT_ATTR_NOSUID
                | MountAttrFlags::MOUNT_ATTR_NODEV
                | MountAttrFlags::MOUNT_ATTR_NOEXEC,
        )
        .context("cannot mount a tmpfs")?;
        let (destination, nvidia_dir) = if Path::new("/proc/driver/nvidia").exists() {
            (PathBuf::from("/proc/driver/nvidia"), PathBuf::new())
        } else {
            (PathBuf::from("/proc/driver"), PathBuf::from("nvidia"))
        };
        let content = FsRoot::from_fd(tmpfs.try_clone()?, Path::new("<proc view tmpfs>"));
        let nvidia = content.create_dir_all(&Path::new("/").join(&nvidia_dir))?;
        // Straight into the new, empty tmpfs: nothing there to replace or to race with.
        let create = |name: &str, bytes: &[u8]| -> Result<()> {
            let fd = rustix::fs::openat(
                &nvidia,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )?;
            std::fs::File::from(fd).write_all(bytes)?;
            Ok(())
        };
        for name in ["version", "registry", "params"] {
            let host = view.host_dir.join(name);
            let Ok(text) = procfs::read_file(&host) else {
                continue;
            };
            let text = if name == "params" {
                procfs::params_without_device_file_modification(&text)?.unwrap_or(text)
            } else {
                text
            };
            create(name, text.as_bytes())
                .with_context(|| format!("cannot write {name} in the proc view"))?;
        }
        // `gpus/` exists even when no GPU is granted (`none`), as on a host with no GPU.
        rustix::fs::mkdirat(&nvidia, "gpus", Mode::from_raw_mode(0o755))
            .context("cannot create gpus in the proc view")?;
        let gpus = rustix::fs::openat(
            &nvidia,
            "gpus",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .context("cannot open gpus in the proc view")?;
        // The binds get their flags from one recursive `mount_setattr` once attached.
        let mut binds = Vec::new();
        let host_gpus = view.host_dir.join("gpus");
        let per_gpu = if grants_every_entry(&view.gpus, entry_names(&host_gpus)?) {
            binds.push((PathBuf::from("gpus"), clone_tree(&host_gpus, 0)?, true));
            &[][..]
        } else {
            &view.gpus[..]
        };
        for bus_id in per_gpu {
            anyhow::ensure!(
                !bus_id.contains('/') && bus_id != "." && bus_id != "..",
                "{bus_id:?} is not a GPU directory name"
            );
            let relative = Path::new("gpus").join(bus_id);
            let tree = clone_tree(&view.host_dir.join(&relative), 0)?;
            rustix::fs::mkdirat(&gpus, bus_id.as_str(), Mode::from_raw_mode(0o755)).with_context(
                || format!("cannot create {} in the proc view", relative.display()),
            )?;
            binds.push((relative, tree, true));
        }
        let whole_tree = view
            .all_capabilities
            .then(|| (PathBuf::from("capabilities"), true));
        let files = view
            .capabilities
            .iter()
            .map(|file| (Path::new("capabilities").join(file), false));
        let mut dirs = content.dirs();
        for (relative, directory) in whole_tree.into_iter().chain(files) {
            let tree = clone_tree(&view.host_dir.join(&relative), 0)?;
            create_target(
                &mut dirs,
                &Path::new("/").join(&nvidia_dir).join(&relative),
                directory,
                0o444,
            )?;
            binds.push((relative, tree, directory));
        }
        Ok(ProcViewMount {
            tmpfs,
            destination,
            nvidia_dir,
            binds,
        })
    }

    /// Attaches the tmpfs, binds the GPU directories into it, then makes it read-only.
    fn attach(self, root: &FsRoot) -> Result<()> {
        if !root.exists(&self.destination)? {
            // Procfs without it (gVisor, say): there is nothing of other GPUs to hide.
            tracing::warn!(
                "{} does not exist in the container: no /proc/driver/nvidia view",
                self.destination.display()
            );
            return Ok(());
        }
        let tmpfs_root = self.tmpfs.try_clone()?;
        attach(
            root,
            &Attachment {
                tree: self.tmpfs,
                destination: self.destination.clone(),
                directory: true,
                mode: 0o755,
            },
        )?;
        for (relative, tree, directory) in self.binds {
            let destination = self.destination.join(&self.nvidia_dir).join(relative);
            attach(
                root,
                &Attachment {
                    tree,
                    destination,
                    directory,
                    mode: 0o444,
                },
            )?;
        }
        set_mount_attrs(
            &tmpfs_root,
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
            true,
        )
        .context("cannot make the /proc/driver/nvidia view read-only")
    }
}

/// Whether the granted GPU directories are every entry of the host's `gpus/` (and there is
/// one): the view then binds that directory once, one mount instead of one per GPU, with the
/// same entries. A GPU the driver adds later shows up in the view too, as it would in the
/// toolkit's (which hides only the GPUs not granted); its node and cgroup rule stay out.
fn grants_every_entry(granted: &[String], mut host_entries: Vec<OsString>) -> bool {
    let mut granted: Vec<&str> = granted.iter().map(String::as_str).collect();
    granted.sort_unstable();
    host_entries.sort_unstable();
    !granted.is_empty()
        && granted.len() == host_entries.len()
        && granted.iter().zip(&host_entries).all(|(g, h)| h == g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{ProcessBuilder, SpecBuilder, UserBuilder};
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn plan_env_replaces_same_keys_and_gids_are_added_once() {
        let process = ProcessBuilder::default()
            .env(vec!["PATH=/bin".to_string(), "A=old".to_string()])
            .user(
                UserBuilder::default()
                    .uid(0u32)
                    .gid(5u32)
                    .additional_gids(vec![44u32])
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let mut spec = SpecBuilder::default().process(process).build().unwrap();
        let plan = GpuPlan {
            env: vec!["A=new".to_string(), "B=1".to_string()],
            additional_gids: vec![44, 5, 109],
            ..GpuPlan::default()
        };
        edit_process(&mut spec, &plan);
        let process = spec.process().as_ref().unwrap();
        assert_eq!(
            process.env().as_deref().unwrap(),
            ["PATH=/bin", "A=new", "B=1"]
        );
        assert_eq!(
            process.user().additional_gids().as_deref().unwrap(),
            [44, 109]
        );
    }

    fn node(path: &str, minor: u32) -> DeviceNode {
        DeviceNode {
            path: PathBuf::from(path),
            host_path: PathBuf::from(path),
            major: 195,
            minor,
            mode: 0o666,
            gid: 0,
        }
    }

    /// The default spec (`/dev` a tmpfs) with `/dev/nvidia0` already among its nodes.
    fn spec_with_nvidia0() -> Spec {
        let mut spec = Spec::default();
        let linux = spec.linux_mut().as_mut().unwrap();
        linux.set_devices(Some(vec![LinuxDeviceBuilder::default()
            .path("/dev/nvidia0")
            .typ(LinuxDeviceType::C)
            .major(195)
            .minor(0)
            .build()
            .unwrap()]));
        spec
    }

    #[test]
    fn device_nodes_are_made_bound_or_left_to_libcontainer_by_the_spec() {
        let mut spec = Spec::default();
        assert_eq!(DeviceNodes::for_spec(&spec), DeviceNodes::Made);
        let mut namespaces = spec.linux().as_ref().unwrap().namespaces().clone().unwrap();
        namespaces.push(
            oci_spec::runtime::LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::User)
                .build()
                .unwrap(),
        );
        spec.linux_mut()
            .as_mut()
            .unwrap()
            .set_namespaces(Some(namespaces));
        assert_eq!(DeviceNodes::for_spec(&spec), DeviceNodes::Bound);
        let mut spec = Spec::default();
        let mut mounts = spec.mounts().clone().unwrap();
        mounts.retain(|m| m.destination() != Path::new("/dev"));
        spec.set_mounts(Some(mounts));
        assert_eq!(DeviceNodes::for_spec(&spec), DeviceNodes::InSpec);
    }

    #[test]
    fn every_device_gets_a_rule_and_a_spec_node_only_when_libcontainer_makes_it() {
        let plan = GpuPlan {
            devices: vec![node("/dev/nvidiactl", 255), node("/dev/nvidia0", 0)],
            ..GpuPlan::default()
        };
        for (nodes, in_spec) in [
            (DeviceNodes::Made, false),
            (DeviceNodes::Bound, false),
            (DeviceNodes::InSpec, true),
        ] {
            let mut spec = spec_with_nvidia0();
            edit_spec(&mut spec, &plan, nodes).unwrap();
            let linux = spec.linux().as_ref().unwrap();
            let rules = linux
                .resources()
                .as_ref()
                .unwrap()
                .devices()
                .clone()
                .unwrap();
            let allowed: Vec<_> = rules
                .iter()
                .filter(|r| r.allow())
                .map(|r| (r.major(), r.minor()))
                .collect();
            assert!(
                allowed.ends_with(&[(Some(195), Some(255)), (Some(195), Some(0))]),
                "{nodes:?}: {allowed:?}"
            );
            let paths: Vec<_> = linux
                .devices()
                .iter()
                .flatten()
                .map(|d| d.path().clone())
                .collect();
            // The spec's own `/dev/nvidia0` goes either way: the plan's node replaces it.
            let expected: Vec<PathBuf> = if in_spec {
                vec!["/dev/nvidiactl".into(), "/dev/nvidia0".into()]
            } else {
                Vec::new()
            };
            assert_eq!(paths, expected, "{nodes:?}");
        }
    }

    #[test]
    fn the_gpus_directory_is_bound_whole_only_when_every_entry_is_granted() {
        let host = |names: &[&str]| names.iter().map(Into::into).collect::<Vec<_>>();
        let granted = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let two = ["0000:01:00.0", "0000:02:00.0"];
        // Every GPU, in either order.
        assert!(grants_every_entry(&granted(&two), host(&two)));
        assert!(grants_every_entry(
            &granted(&["0000:02:00.0", "0000:01:00.0"]),
            host(&two)
        ));
        // A subset, another GPU of the same count, none, and a host without GPUs.
        assert!(!grants_every_entry(&granted(&two[..1]), host(&two)));
        assert!(!grants_every_entry(
            &granted(&["0000:01:00.0", "0000:03:00.0"]),
            host(&two)
        ));
        assert!(!grants_every_entry(&[], host(&two)));
        assert!(!grants_every_entry(&[], host(&[])));
    }

    /// The runtime's thread enters another mount namespace and comes back with its namespace,
    /// root, working directory and umask as they were. Needs root (CI runs the tests as root).
    #[test]
    fn the_thread_returns_from_a_mount_namespace_as_it_was() {
        let ns = |path: &str| std::fs::metadata(path).unwrap().ino();
        let mut other = std::process::Command::new("unshare")
            .args(["--mount", "sleep", "60"])
            .spawn()
            .unwrap();
        let other_ns = format!("/proc/{}/ns/mnt", other.id());
        // unshare has made its namespace once the link names another one.
        let own = ns("/proc/thread-self/ns/mnt");
        while ns(&other_ns) == own {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // Umask and cwd of this test's thread only, not of the other tests running beside it.
        // SAFETY: detaches this thread's root, cwd and umask; no other thread relies on them.
        unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FS) }.unwrap();
        let cwd = std::env::current_dir().unwrap();
        let umask = rustix::process::umask(Mode::from_raw_mode(0o027));
        let namespace = std::fs::File::open(&other_ns).unwrap();
        {
            let _inside = InMountNamespace::enter(namespace.as_fd()).unwrap();
            assert_eq!(ns("/proc/thread-self/ns/mnt"), ns(&other_ns));
            assert_eq!(rustix::process::umask(Mode::empty()), Mode::empty());
            std::env::set_current_dir("/proc").unwrap();
        }
        other.kill().unwrap();
        other.wait().unwrap();
        assert_eq!(ns("/proc/thread-self/ns/mnt"), own);
        assert_eq!(std::env::current_dir().unwrap(), cwd);
        assert_eq!(
            std::fs::read_link("/proc/thread-self/root").unwrap(),
            Path::new("/")
        );
        assert_eq!(rustix::process::umask(umask), Mode::from_raw_mode(0o027));
    }
}
