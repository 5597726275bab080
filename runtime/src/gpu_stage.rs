//! The GPU stage of `create`. A spec whose process asks for no GPU passes through untouched and
//! no GPU code runs. Otherwise, before libcontainer forks: request → inventory → plan, the
//! rootfs files written, and the effective spec (the user's plus device nodes and rules) written
//! as a shadow bundle for libcontainer to build from; config.json is never modified. After
//! libcontainer's create: the driver files and `/proc/driver/nvidia` view are mounted into the
//! container, and its recorded state points at the user's bundle again.
//! The GPU hooks engines add for `--gpus` ([`gpu::engine_hooks`]) are read as a request and left
//! out of the effective spec, so that they never run, whether or not a GPU is asked for.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use gpu::apply::{self, DeviceNodes};
use gpu::cdi::compile;
use gpu::cdi::hooks::is_nvidia_hook;
use gpu::cdi::registry::Registry;
use gpu::config::{GpuConfig, UnprivilegedEnv};
use gpu::engine_hooks;
use gpu::file_cache::DriverFileCache;
use gpu::fsroot::FsRoot;
use gpu::inventory::{DriverPart, HostInventory};
use gpu::plan::{GpuPlan, PlannedFile, PlannedMount, RootfsFacts};
use gpu::privilege::is_privileged;
use gpu::request::{CdiDeviceName, GpuRequest, Version, IMEX_CHANNELS, VISIBLE_DEVICES};
use gpu::volumes;
use libcontainer::container::Container;
use libcontainer::oci_spec::runtime::Spec;

use crate::fault;

/// Where the effective spec of a GPU container is kept in its state directory (for `update`).
pub const EFFECTIVE_SPEC: &str = "gpu-config.json";

/// Where the driver's installed files, found once per driver install, are cached for all
/// container starts ([`gpu::file_cache`]); on tmpfs, so that a reboot starts afresh.
pub const DRIVER_FILE_CACHE: &str = "/run/gpu-youki-cache";

/// A GPU container being created: its plan and the shadow bundle libcontainer builds from.
pub struct GpuStage {
    /// The plan, and how its device nodes get into the container; `None` when the container
    /// asks for no GPU but an engine's GPU hook had to be left out.
    plan: Option<(GpuPlan, DeviceNodes)>,
    /// Plan files a spec mount covers, bound from runtime-owned copies after create.
    covered: Vec<PlannedFile>,
    shadow: ShadowBundle,
}

/// Whether the spec could ask for a GPU at all (or holds an engine's GPU hook to leave out);
/// decided without reading any configuration, so containers without a request pay nothing.
fn may_request(spec: &Spec) -> Result<bool> {
    if engine_hooks::has_engine_hook(spec.hooks().as_ref()) {
        return Ok(true);
    }
    let destinations = spec
        .mounts()
        .iter()
        .flatten()
        .map(|m| m.destination().as_path());
    Ok(volumes::mentions_device_list(destinations)
        || gpu::cdi::has_device_annotations(spec.annotations().as_ref())
        || gpu::cdi::has_nvidia_hooks(spec)
        || GpuRequest::from_env(&env_of(spec))?.is_some())
}

fn env_of(spec: &Spec) -> Vec<String> {
    spec.process()
        .as_ref()
        .and_then(|p| p.env().clone())
        .unwrap_or_default()
}

/// The request: the process environment, with the request variables of an engine's GPU hook
/// (`ctr run --gpus`) in place of the same variables, and the device list and IMEX channels of
/// `/dev/null` volume mounts taking the place of `NVIDIA_VISIBLE_DEVICES` and
/// `NVIDIA_IMEX_CHANNELS` when the configuration accepts those; marked privileged or not. An
/// unprivileged container's own lists are dropped when the configuration ignores them, unless
/// docker's GPU hook vouches that dockerd set them from `--gpus`. `annotated` are
/// `nvidia.com/gpu` names from CDI annotations that no CDI spec defines: they are added to
/// the device list, as the native selectors they also are.
fn request_of(
    spec: &Spec,
    config: &GpuConfig,
    annotated: &[CdiDeviceName],
) -> Result<Option<GpuRequest>> {
    let mut env = env_of(spec);
    let privileged = is_privileged(spec);
    let hooks = spec.hooks().as_ref();
    if config.request.unprivileged_env == UnprivilegedEnv::Ignore
        && !privileged
        && !engine_hooks::has_engine_hook(hooks)
    {
        ignore_device_lists(&mut env);
    }
    for item in engine_hooks::request_env(hooks)? {
        apply::set_env_item(&mut env, &item);
    }
    if config.request.volume_mounts {
        let mounts: Vec<(&Path, &Path)> = spec
            .mounts()
            .iter()
            .flatten()
            .filter_map(|m| {
                m.source()
                    .as_deref()
                    .map(|source| (source, m.destination().as_path()))
            })
            .collect();
        let lists = [
            (
                VISIBLE_DEVICES,
                volumes::device_list(mounts.iter().copied()),
            ),
            (
                IMEX_CHANNELS,
                volumes::imex_channels(mounts.iter().copied()),
            ),
        ];
        for (variable, list) in lists {
            if let Some(list) = list {
                apply::set_env_item(&mut env, &format!("{variable}={list}"));
            }
        }
    }
    if !annotated.is_empty() {
        let key = format!("{VISIBLE_DEVICES}=");
        let mut list: Vec<String> = env
            .iter()
            .filter_map(|e| e.strip_prefix(&key))
            .flat_map(|value| value.split(','))
            .filter(|token| !matches!(token.trim(), "" | "void" | "none"))
            .map(str::to_string)
            .collect();
        list.extend(annotated.iter().map(ToString::to_string));
        apply::set_env_item(&mut env, &format!("{key}{}", list.join(",")));
    }
    let mut request = GpuRequest::from_env(&env)?;
    if let Some(request) = request.as_mut() {
        request.privileged = privileged;
    }
    Ok(request)
}

/// Drops the environment's device lists: `NVIDIA_VISIBLE_DEVICES` becomes `void` (which also
/// stops a legacy CUDA image from meaning all GPUs) and `NVIDIA_IMEX_CHANNELS` goes, with a
/// warning for each that asked for something.
fn ignore_device_lists(env: &mut Vec<String>) {
    for variable in [VISIBLE_DEVICES, IMEX_CHANNELS] {
        let key = format!("{variable}=");
        let asked: Vec<&str> = env
            .iter()
            .filter_map(|e| e.strip_prefix(&key))
            .filter(|value| !value.is_empty() && *value != "void")
            .collect();
        if !asked.is_empty() {
            tracing::warn!(
                "ignoring {variable}={} of an unprivileged container \
                 ([request] unprivileged-env = \"ignore\")",
                asked.join(",")
            );
        }
        env.retain(|e| !e.starts_with(&key));
    }
    env.push(format!("{VISIBLE_DEVICES}=void"));
}

/// The container's rootfs directory: `root.path`, relative to the bundle unless absolute.
pub fn rootfs_of(spec: &Spec, bundle: &Path) -> Result<PathBuf> {
    let root = spec.root().as_ref().context("config.json has no root")?;
    let path = bundle.join(root.path());
    path.canonicalize()
        .with_context(|| format!("rootfs {} does not exist", path.display()))
}

/// The plan for `spec`; `None` when it asks for no GPU and no CDI device. The NVIDIA request
/// of the environment gives the base plan; CDI devices (named in `cdi.k8s.io/*` annotations or
/// as `vendor/class=name` in `NVIDIA_VISIBLE_DEVICES`, resolved through the spec directories,
/// read only then) and NVIDIA's hooks in config.json are compiled into it. `inventory` is read
/// here when not given and something needs it (an NVIDIA request or NVIDIA hooks).
pub fn plan_for(
    spec: &Spec,
    bundle: &Path,
    config: &GpuConfig,
    inventory: Option<&HostInventory>,
) -> Result<Option<(GpuPlan, FsRoot)>> {
    let request = request_of(spec, config, &[])?;
    fault::point("request")?;
    let mut names = request
        .as_ref()
        .map(|r| r.cdi_devices.clone())
        .unwrap_or_default();
    for name in gpu::cdi::annotation_devices(spec.annotations().as_ref())? {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let mut cdi = gpu::cdi::config_request(spec)?;
    if request.as_ref().is_none_or(|r| r.devices.is_none()) && names.is_empty() && cdi.is_empty() {
        return Ok(None);
    }
    let rootfs = FsRoot::open(&rootfs_of(spec, bundle)?)?;
    let facts = RootfsFacts::read(&rootfs)?;
    let registry = Registry::read(if names.is_empty() {
        &[]
    } else {
        &config.cdi.spec_dirs
    });
    // An `nvidia.com/gpu` name no spec defines is a GPU gpu-youki gives natively.
    let mut annotated = Vec::new();
    for name in &names {
        match registry.resolve(name) {
            Ok(device) => cdi.devices.push(device),
            Err(_) if (name.vendor.as_str(), name.class.as_str()) == ("nvidia.com", "gpu") => {
                annotated.push(name.clone());
            }
            Err(err) => return Err(err),
        }
    }
    let request = if annotated.is_empty() {
        request
    } else {
        request_of(spec, config, &annotated)?
    };
    let wants_nvidia = request.as_ref().is_some_and(|r| r.devices.is_some());
    let nvidia_hooks = !cdi.config_hooks.is_empty()
        || cdi.devices.iter().any(|d| {
            [&d.device.container_edits, d.spec_edits]
                .iter()
                .flat_map(|e| &e.hooks)
                .any(|h| is_nvidia_hook(&h.path, &h.args))
        });
    let read;
    let inventory = match inventory {
        Some(inventory) => Some(inventory),
        None if wants_nvidia || nvidia_hooks => {
            read = HostInventory::read_cached(
                &config.driver,
                &DriverFileCache::new(DRIVER_FILE_CACHE),
            )?;
            fault::point("inventory")?;
            Some(&read)
        }
        None => None,
    };
    let base = match (&request, inventory) {
        (Some(request), Some(inventory)) if wants_nvidia => {
            let cuda = request
                .needed_facts()
                .cuda
                .then(|| cuda_version(inventory))
                .flatten();
            let identified;
            let inventory = if request.needs_mig_identities() {
                let mut copy = inventory.clone();
                identify_mig_devices(&mut copy)?;
                identified = copy;
                &identified
            } else {
                inventory
            };
            GpuPlan::new(request, inventory, &facts, cuda)?
        }
        _ => None,
    };
    if cdi.is_empty() {
        return Ok(base.map(|plan| (plan, rootfs)));
    }
    let plan = compile::compile(base, &cdi, &facts, &compile::Host, inventory)?;
    Ok(Some((plan, rootfs)))
}

/// Asks the host's NVML (in process) for the MIG devices' indices and UUIDs; a no-op on a
/// host without MIG devices.
pub fn identify_mig_devices(inventory: &mut HostInventory) -> Result<()> {
    if inventory.mig_devices.is_empty() {
        return Ok(());
    }
    let libnvml = inventory
        .files_of(DriverPart::UtilityLibrary)
        .find(|f| f.name.starts_with("libnvidia-ml.so."))
        .context(
            "MIG devices named by index or UUID need NVML, but the driver has no libnvidia-ml",
        )?;
    let identities = gpu::driver::nvml_mig_identities(&libnvml.host_path)
        .context("cannot ask NVML for the MIG devices' indices and UUIDs")?;
    inventory.identify_mig_devices(&identities);
    Ok(())
}

/// The driver's CUDA version through libcuda, `None` (unknown: requirements fail closed) when
/// it cannot be asked.
fn cuda_version(inventory: &HostInventory) -> Option<Version> {
    let libcuda = inventory
        .files_of(DriverPart::ComputeLibrary)
        .find(|f| f.name.starts_with("libcuda.so."))?;
    gpu::driver::cuda_driver_version(&libcuda.host_path)
        .map_err(|err| tracing::warn!("CUDA version unknown: {err:#}"))
        .ok()
}

impl GpuStage {
    /// Runs the stage up to libcontainer's create; `None` for a container without a GPU request.
    #[tracing::instrument(level = "debug", name = "gpu_stage", skip_all)]
    pub fn prepare(
        spec: &Spec,
        bundle: &Path,
        state_root: &Path,
        id: &str,
    ) -> Result<Option<Self>> {
        if !may_request(spec)? {
            return Ok(None);
        }
        let config = GpuConfig::load()?;
        let mut effective = spec.clone();
        if let Some(hooks) = effective.hooks_mut() {
            engine_hooks::remove_engine_hooks(hooks);
        }
        let Some((plan, rootfs)) = plan_for(spec, bundle, &config, None)? else {
            return Self::without_gpu(spec, effective, bundle, state_root, id);
        };
        fault::point("plan")?;
        let nodes = DeviceNodes::for_spec(spec);
        // A rootfs that cannot be written gets a writable overlay owned by gpu-youki.
        let rootfs = if read_only_filesystem(rootfs.path())? {
            FsRoot::open(&mount_rootfs_overlay(state_root, id, rootfs.path())?)?
        } else {
            rootfs
        };
        fault::point("rootfs-overlay")?;
        apply::edit_spec(&mut effective, &plan, nodes)?;
        fault::point("edit-spec")?;
        absolutise(&mut effective, bundle, rootfs.path());
        apply::prepare_rootfs(&rootfs, &plan)?;
        fault::point("prepare-rootfs")?;
        apply::ensure_dev_char_links(&config.driver.dev_root, &plan)?;
        fault::point("dev-char-links")?;
        let shadow = ShadowBundle::write(state_root, id, &effective)?;
        fault::point("shadow-bundle")?;
        let destinations: Vec<&Path> = spec
            .mounts()
            .iter()
            .flatten()
            .map(|m| m.destination().as_path())
            .collect();
        let covered = apply::covered_files(&plan, &destinations)
            .into_iter()
            .cloned()
            .collect();
        Ok(Some(GpuStage {
            plan: Some((plan, nodes)),
            covered,
            shadow,
        }))
    }

    /// A container without a GPU request: when an engine's GPU hook was left out of
    /// `effective`, libcontainer builds from it (the hook must not run); else nothing to do.
    fn without_gpu(
        spec: &Spec,
        mut effective: Spec,
        bundle: &Path,
        state_root: &Path,
        id: &str,
    ) -> Result<Option<Self>> {
        if effective.hooks() == spec.hooks() {
            return Ok(None);
        }
        absolutise(&mut effective, bundle, &rootfs_of(spec, bundle)?);
        Ok(Some(GpuStage {
            plan: None,
            covered: Vec::new(),
            shadow: ShadowBundle::write(state_root, id, &effective)?,
        }))
    }

    /// The bundle libcontainer builds the container from.
    pub fn bundle(&self) -> &Path {
        &self.shadow.dir
    }

    /// After libcontainer's create: mounts into the container, keeps the effective spec in the
    /// state directory, and records the user's bundle in the state again.
    pub fn finish(self, container: &mut Container, user_bundle: &Path) -> Result<()> {
        let pid = container
            .pid()
            .context("the created container has no pid")?;
        let mut extra = Vec::new();
        for file in &self.covered {
            let name = file
                .path
                .file_name()
                .context("a planned file without a name")?;
            let owned = container.root.join(name);
            fs::write(&owned, &file.content)
                .with_context(|| format!("cannot write {}", owned.display()))?;
            extra.push(PlannedMount {
                source: owned,
                destination: file.path.clone(),
                directory: false,
                writable: false,
                executable: false,
                options: None,
            });
        }
        if let Some((plan, nodes)) = &self.plan {
            apply::mount_into_container(pid.as_raw(), plan, &extra, *nodes)?;
            fault::point("mount")?;
        }
        fs::rename(
            self.shadow.dir.join("config.json"),
            container.root.join(EFFECTIVE_SPEC),
        )
        .context("cannot keep the effective spec in the container's state")?;
        container.state.bundle = user_bundle.to_path_buf();
        fault::point("state-save")?;
        rewrite_state(container)
    }
}

/// Writes the container's state over its state file, in place. libcontainer's `save` truncates
/// the file to nothing first, which on a disk-backed `/run` (ext4 mounted with `discard`, as on
/// this project's VMs) frees and reallocates its block: 0.1–0.3 ms of every GPU create there.
fn rewrite_state(container: &Container) -> Result<()> {
    let path = libcontainer::container::State::file_path(&container.root);
    let json = serde_json::to_vec(&container.state)?;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    file.write_all(&json)
        .and_then(|()| file.set_len(json.len() as u64))
        .with_context(|| format!("cannot write {}", path.display()))
}

fn read_only_filesystem(path: &Path) -> Result<bool> {
    let stat =
        rustix::fs::statvfs(path).with_context(|| format!("cannot statvfs {}", path.display()))?;
    Ok(stat.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY))
}

/// `<state root>/.rootfs-<id>`: upper, work and merged directories of the rootfs overlay.
fn overlay_dir(state_root: &Path, id: &str) -> PathBuf {
    state_root.join(format!(".rootfs-{id}"))
}

/// Mounts `lower` with a writable upper layer in the state root (on /run, a tmpfs) and returns
/// the merged directory, which becomes the container's rootfs. The image stays untouched; what
/// gpu-youki writes lives as long as the container ([`remove_rootfs_overlay`] at delete).
fn mount_rootfs_overlay(state_root: &Path, id: &str, lower: &Path) -> Result<PathBuf> {
    let dir = overlay_dir(state_root, id);
    let lower_text = lower.to_string_lossy();
    anyhow::ensure!(
        !lower_text.contains([',', ':']),
        "the read-only rootfs {} has a ',' or ':' in its path, which overlayfs cannot take",
        lower.display()
    );
    for sub in ["upper", "work", "merged"] {
        fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("cannot create {}", dir.join(sub).display()))?;
    }
    let options = format!(
        "lowerdir={lower_text},upperdir={},workdir={}",
        dir.join("upper").display(),
        dir.join("work").display()
    );
    let merged = dir.join("merged");
    nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(options.as_str()),
    )
    .with_context(|| {
        format!(
            "cannot mount a writable overlay over the read-only rootfs {}",
            lower.display()
        )
    })?;
    Ok(merged)
}

/// Unmounts and removes the rootfs overlay of container `id`, if it has one.
pub fn remove_rootfs_overlay(state_root: &Path, id: &str) -> Result<()> {
    let dir = overlay_dir(state_root, id);
    if !dir.exists() {
        return Ok(());
    }
    let merged = dir.join("merged");
    match nix::mount::umount2(&merged, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(err) => {
            return Err(err).with_context(|| format!("cannot unmount {}", merged.display()))
        }
    }
    fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))
}

/// Paths libcontainer would resolve against the bundle are made absolute, since it builds from
/// the shadow bundle.
fn absolutise(spec: &mut Spec, bundle: &Path, rootfs: &Path) {
    if let Some(root) = spec.root_mut() {
        root.set_path(rootfs.to_path_buf());
    }
    if let Some(mounts) = spec.mounts_mut() {
        for mount in mounts.iter_mut() {
            if let Some(source) = mount.source().clone().filter(|s| s.is_relative()) {
                let is_bind = mount.typ().as_deref() == Some("bind")
                    || mount
                        .options()
                        .iter()
                        .flatten()
                        .any(|o| o == "bind" || o == "rbind");
                if is_bind {
                    mount.set_source(Some(bundle.join(source)));
                }
            }
        }
    }
}

/// `<state root>/.bundle-<id>/config.json`, removed when dropped.
struct ShadowBundle {
    dir: PathBuf,
}

impl ShadowBundle {
    fn write(state_root: &Path, id: &str, spec: &Spec) -> Result<Self> {
        let dir = shadow_dir(state_root, id);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let shadow = ShadowBundle { dir };
        let path = shadow.dir.join("config.json");
        fs::write(&path, serde_json::to_vec(spec)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(shadow)
    }
}

impl Drop for ShadowBundle {
    fn drop(&mut self) {
        // Empty once `finish` has moved config.json out: one rmdir instead of a tree walk.
        if fs::remove_dir(&self.dir).is_err() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn shadow_dir(state_root: &Path, id: &str) -> PathBuf {
    state_root.join(format!(".bundle-{id}"))
}

/// Removes the shadow bundle of container `id` that a killed `create` left behind (a `create`
/// that returns removes its own); a missing one is not an error.
pub fn remove_shadow_bundle(state_root: &Path, id: &str) -> Result<()> {
    let dir = shadow_dir(state_root, id);
    match fs::remove_dir_all(&dir) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            Err(err).with_context(|| format!("cannot remove {}", dir.display()))
        }
        _ => Ok(()),
    }
}
