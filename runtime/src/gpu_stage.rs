//! The GPU stage of `create`. A spec whose process asks for no GPU passes through untouched and
//! no GPU code runs. Otherwise, before libcontainer forks: request → inventory → plan, the
//! rootfs files written, and the effective spec (the user's plus device nodes and rules) written
//! as a shadow bundle for libcontainer to build from; config.json is never modified. After
//! libcontainer's create: the driver files and `/proc/driver/nvidia` view are mounted into the
//! container, and its recorded state points at the user's bundle again.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use gpu::apply;
use gpu::config::GpuConfig;
use gpu::fsroot::FsRoot;
use gpu::inventory::{DriverPart, HostInventory};
use gpu::plan::{GpuPlan, RootfsFacts};
use gpu::request::{GpuRequest, Version, VISIBLE_DEVICES};
use gpu::volumes;
use libcontainer::container::Container;
use libcontainer::oci_spec::runtime::Spec;

/// Where the effective spec of a GPU container is kept in its state directory (for `update`).
pub const EFFECTIVE_SPEC: &str = "gpu-config.json";

/// A GPU container being created: its plan and the shadow bundle libcontainer builds from.
pub struct GpuStage {
    plan: GpuPlan,
    bind_devices: bool,
    shadow: ShadowBundle,
}

/// Whether the spec could ask for a GPU at all; decided without reading any configuration,
/// so containers without a request pay nothing.
fn may_request(spec: &Spec) -> Result<bool> {
    let destinations = spec
        .mounts()
        .iter()
        .flatten()
        .map(|m| m.destination().as_path());
    Ok(volumes::mentions_device_list(destinations)
        || GpuRequest::from_env(&env_of(spec))?.is_some())
}

fn env_of(spec: &Spec) -> Vec<String> {
    spec.process()
        .as_ref()
        .and_then(|p| p.env().clone())
        .unwrap_or_default()
}

/// The request: the process environment, with the device list of `/dev/null` volume mounts
/// taking the place of `NVIDIA_VISIBLE_DEVICES` when the configuration accepts those.
pub fn request_of(spec: &Spec, config: &GpuConfig) -> Result<Option<GpuRequest>> {
    let mut env = env_of(spec);
    if config.request.volume_mounts {
        let mounts = spec.mounts().iter().flatten().filter_map(|m| {
            m.source()
                .as_deref()
                .map(|source| (source, m.destination().as_path()))
        });
        if let Some(list) = volumes::device_list(mounts) {
            let key = format!("{VISIBLE_DEVICES}=");
            env.retain(|e| !e.starts_with(&key));
            env.push(format!("{key}{list}"));
        }
    }
    GpuRequest::from_env(&env)
}

/// The container's rootfs directory: `root.path`, relative to the bundle unless absolute.
pub fn rootfs_of(spec: &Spec, bundle: &Path) -> Result<PathBuf> {
    let root = spec.root().as_ref().context("config.json has no root")?;
    let path = bundle.join(root.path());
    path.canonicalize()
        .with_context(|| format!("rootfs {} does not exist", path.display()))
}

/// The plan for `spec`; `None` when it asks for no NVIDIA GPU.
pub fn plan_for(
    spec: &Spec,
    bundle: &Path,
    config: &GpuConfig,
    inventory: &HostInventory,
) -> Result<Option<(GpuPlan, FsRoot)>> {
    let Some(request) = request_of(spec, config)? else {
        return Ok(None);
    };
    let rootfs = FsRoot::open(&rootfs_of(spec, bundle)?)?;
    let facts = RootfsFacts::read(&rootfs)?;
    let cuda = request
        .needed_facts()
        .cuda
        .then(|| cuda_version(inventory))
        .flatten();
    Ok(GpuPlan::new(&request, inventory, &facts, cuda)?.map(|plan| (plan, rootfs)))
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
        let inventory = HostInventory::read(&config.driver)?;
        let Some((plan, rootfs)) = plan_for(spec, bundle, &config, &inventory)? else {
            return Ok(None);
        };
        let bind_devices = apply::uses_user_namespace(spec);
        let mut effective = spec.clone();
        apply::edit_spec(&mut effective, &plan)?;
        absolutise(&mut effective, bundle, rootfs.path());
        apply::prepare_rootfs(&rootfs, &plan)?;
        apply::ensure_dev_char_links(&config.driver.dev_root, &plan)?;
        let shadow = ShadowBundle::write(state_root, id, &effective)?;
        Ok(Some(GpuStage {
            plan,
            bind_devices,
            shadow,
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
        apply::mount_into_container(pid.as_raw(), &self.plan, self.bind_devices)?;
        fs::rename(
            self.shadow.dir.join("config.json"),
            container.root.join(EFFECTIVE_SPEC),
        )
        .context("cannot keep the effective spec in the container's state")?;
        container.state.bundle = user_bundle.to_path_buf();
        container.save()?;
        Ok(())
    }
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
        let dir = state_root.join(format!(".bundle-{id}"));
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
        let _ = fs::remove_dir_all(&self.dir);
    }
}
