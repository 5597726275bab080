//! `create`: set up a container from a bundle; its process waits for `start`.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::oci_spec::runtime::Spec;
use libcontainer::syscall::syscall::SyscallType;
use liboci_cli::GlobalOpts;

use super::{absolute, container_dir, parse_json};
use crate::executor::WorkloadExecutor;
use crate::fault;
use crate::gpu_stage::{remove_rootfs_overlay, GpuStage};
use crate::lock::IdLock;

/// Everything `create` and `run` need to build a container.
pub struct CreateRequest {
    pub id: String,
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub preserve_fds: i32,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
}

pub fn create(args: liboci_cli::Create, root: &Path, global: &GlobalOpts) -> Result<()> {
    let request = CreateRequest {
        id: args.container_id,
        bundle: args.bundle,
        pid_file: args.pid_file,
        console_socket: args.console_socket,
        preserve_fds: args.preserve_fds,
        no_pivot: args.no_pivot,
        no_new_keyring: args.no_new_keyring,
    };
    create_container(&request, root, global, true).map(|_| ())
}

/// Builds the container and leaves its init process waiting for `start`. On any failure,
/// nothing of the container remains: no state directory, cgroup or mount.
pub fn create_container(
    request: &CreateRequest,
    root: &Path,
    global: &GlobalOpts,
    detach: bool,
) -> Result<Container> {
    let dir = container_dir(root, &request.id)?;
    let bundle = absolute(&request.bundle)?;
    let spec = load_bundle_spec(&bundle)?;
    if global.systemd_cgroup && !Path::new("/run/systemd/system").exists() {
        bail!(
            "--systemd-cgroup needs systemd as the cgroup manager, but systemd is not running \
             on this host (/run/systemd/system is missing)"
        );
    }

    let _lock = IdLock::acquire(root, &request.id)?;
    if dir.exists() {
        bail!("container {} already exists", request.id);
    }
    let built = build(request, &spec, &bundle, root, global.systemd_cgroup, detach);
    if built.is_err() {
        remove_leftovers(&dir);
        if let Err(err) = remove_rootfs_overlay(root, &request.id) {
            tracing::warn!("after a failed create: {err:#}");
        }
    }
    built
}

fn build(
    request: &CreateRequest,
    spec: &Spec,
    bundle: &Path,
    root: &Path,
    systemd: bool,
    detach: bool,
) -> Result<Container> {
    let gpu = GpuStage::prepare(spec, bundle, root, &request.id)?;
    let executor = WorkloadExecutor {
        keyring: (!request.no_new_keyring).then(|| format!("_ses.{}", request.id)),
    };
    let pid_file = request.pid_file.as_deref().map(absolute).transpose()?;
    let console_socket = request
        .console_socket
        .as_deref()
        .map(absolute)
        .transpose()?;
    fault::point("libcontainer-create")?;
    let libcontainer_create = tracing::debug_span!("libcontainer_create").entered();
    let mut container = ContainerBuilder::new(request.id.clone(), SyscallType::default())
        .with_executor(executor)
        .with_pid_file(pid_file)?
        .with_console_socket(console_socket)
        .with_root_path(root)?
        .with_preserved_fds(request.preserve_fds)
        .validate_id()?
        .as_init(gpu.as_ref().map_or(bundle, GpuStage::bundle))
        .with_systemd(systemd)
        .with_detach(detach)
        .with_no_pivot(request.no_pivot)
        .build()?;
    drop(libcontainer_create);
    fault::point("created")?;
    if let Some(gpu) = gpu {
        gpu.finish(&mut container, bundle)?;
    }
    Ok(container)
}

/// Reads `BUNDLE/config.json` with errors that name the bundle, and the JSON path of a bad field.
pub fn load_bundle_spec(bundle: &Path) -> Result<Spec> {
    if !bundle.is_dir() {
        bail!(
            "bundle {} does not exist or is not a directory",
            bundle.display()
        );
    }
    let path = bundle.join("config.json");
    let text = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let spec: Spec = parse_json(&text, &path.display().to_string())?;
    if !spec.version().starts_with("1.") {
        bail!(
            "invalid {} at ociVersion: {:?} is not a 1.x runtime spec version",
            path.display(),
            spec.version()
        );
    }
    Ok(spec)
}

/// Removes what a failed create left: libcontainer cleans its cgroup, but not always the state
/// directory (e.g. when a console socket or pid file could not be set up).
fn remove_leftovers(dir: &Path) {
    if !dir.exists() {
        return;
    }
    if let Ok(mut container) = Container::load(dir.to_path_buf()) {
        if container.delete(true).is_ok() {
            return;
        }
    }
    if let Err(err) = fs::remove_dir_all(dir) {
        tracing::warn!(
            "cannot remove {} after a failed create: {err}",
            dir.display()
        );
    }
}
