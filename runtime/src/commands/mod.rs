//! One file per subcommand, as in youki; this module holds what they share: the state root,
//! loading a container by id, and turning CLI paths into absolute ones.

mod cdi;
mod create;
mod delete;
mod events;
mod exec;
mod features;
mod foreground;
mod gpu;
mod kill;
mod list;
mod pause;
mod ps;
mod resume;
mod run;
mod setup;
mod spec;
mod start;
mod state;
mod update;

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use libcontainer::container::Container;
use liboci_cli::GlobalOpts;

use crate::cli::Command;

/// Where container state lives when `--root` is not given (runc uses /run/runc).
pub const DEFAULT_STATE_ROOT: &str = "/run/gpu-youki";

/// Runs one subcommand; the exit code is the workload's for foreground `run` and `exec`.
pub fn dispatch(command: Command, global: &GlobalOpts) -> Result<ExitCode> {
    let root = || state_root(global.root.as_deref());
    let ok = |()| ExitCode::SUCCESS;
    match command {
        Command::Create(args) => create::create(args, &root()?, global).map(ok),
        Command::Start(args) => start::start(args, &root()?).map(ok),
        Command::State(args) => state::state(args, &root()?).map(ok),
        Command::Kill(args) => kill::kill(args, &root()?).map(ok),
        Command::Delete(args) => delete::delete(args, &root()?).map(ok),
        Command::Run(args) => run::run(args, &root()?, global).map(exit_code),
        Command::Exec(args) => exec::exec(args, &root()?).map(exit_code),
        Command::Ps(args) => ps::ps(args, &root()?).map(ok),
        Command::Pause(args) => pause::pause(args, &root()?).map(ok),
        Command::Resume(args) => resume::resume(args, &root()?).map(ok),
        Command::Update(args) => update::update(args, &root()?).map(ok),
        Command::Features(_) => features::features().map(ok),
        Command::Spec(args) => spec::spec(args).map(ok),
        Command::List(args) => list::list(args, &root()?).map(ok),
        Command::Events(args) => events::events(args, &root()?).map(ok),
        Command::Gpu(command) => gpu::gpu(command).map(ok),
        Command::Cdi(command) => cdi::cdi(command).map(ok),
        Command::Setup(command) => setup::setup(command).map(ok),
    }
}

/// A workload's exit status as our own: its code, or 128+N when killed by signal N.
fn exit_code(status: i32) -> ExitCode {
    ExitCode::from(u8::try_from(status).unwrap_or(255))
}

/// The state root from `--root` (created 0700 when missing), canonicalised.
fn state_root(root: Option<&Path>) -> Result<PathBuf> {
    let root = root.unwrap_or(Path::new(DEFAULT_STATE_ROOT));
    if !root.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .with_context(|| format!("cannot create state root {}", root.display()))?;
    }
    root.canonicalize()
        .with_context(|| format!("cannot resolve state root {}", root.display()))
}

/// Loads the container `id` from the state root, with runc's wording when it is not there.
fn load_container(root: &Path, id: &str) -> Result<Container> {
    let dir = container_dir(root, id)?;
    if !dir.join("state.json").exists() {
        bail!("container {id} does not exist");
    }
    Container::load(dir).with_context(|| format!("cannot load the state of container {id}"))
}

/// The state directory of container `id`; ids that could name another path are refused.
fn container_dir(root: &Path, id: &str) -> Result<PathBuf> {
    if id.is_empty()
        || id == "."
        || id == ".."
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+-.".contains(c))
    {
        bail!("invalid container id {id:?}: use letters, digits, '_', '+', '-' and '.'");
    }
    Ok(root.join(id))
}

/// The cgroup manager of a container, as recorded when it was created.
fn cgroup_manager(container: &Container) -> Result<libcgroups::common::AnyCgroupManager> {
    libcgroups::common::create_cgroup_manager(libcgroups::common::CgroupConfig {
        cgroup_path: container.spec()?.cgroup_path,
        systemd_cgroup: container.systemd(),
        container_name: container.id().to_string(),
    })
    .with_context(|| format!("cannot open the cgroup of container {}", container.id()))
}

/// The spec a container was created from: the effective one (with its GPU devices) for GPU
/// containers, else the bundle's config.json.
fn effective_spec(container: &Container) -> Result<libcontainer::oci_spec::runtime::Spec> {
    let effective = container.root.join(crate::gpu_stage::EFFECTIVE_SPEC);
    if effective.exists() {
        return libcontainer::oci_spec::runtime::Spec::load(&effective)
            .with_context(|| format!("cannot read {}", effective.display()));
    }
    create::load_bundle_spec(container.bundle())
}

/// The OCI name of a container status (`created`, `running`, …); libcontainer capitalises them.
fn status_name(container: &Container) -> String {
    container.status().to_string().to_ascii_lowercase()
}

/// Parses JSON read from `origin` (a file, stdin), naming the JSON path of a bad field:
/// `invalid ORIGIN at process.args: invalid type: …`.
fn parse_json<T: serde::de::DeserializeOwned>(data: &[u8], origin: &str) -> Result<T> {
    let mut json = serde_json::Deserializer::from_slice(data);
    serde_path_to_error::deserialize(&mut json).map_err(|err| {
        let at = err.path().to_string();
        let inner = err.into_inner();
        if at == "." {
            anyhow::anyhow!("invalid {origin}: {inner}")
        } else {
            anyhow::anyhow!("invalid {origin} at {at}: {inner}")
        }
    })
}

/// A CLI path made absolute against the current directory (libcontainer changes directories).
fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("cannot resolve path {}", path.display()))
}
