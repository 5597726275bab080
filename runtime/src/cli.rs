//! The command line: runc's global flags and subcommands, parsed with liboci-cli's argument types.

use clap::{Args, Parser, Subcommand};
use liboci_cli::GlobalOpts;

/// Version of the libcontainer crate gpu-youki is built on (read from Cargo.lock by build.rs).
pub const LIBCONTAINER_VERSION: &str = env!("GPU_YOUKI_LIBCONTAINER_VERSION");

/// gpu-youki: a runc-compatible OCI runtime for NVIDIA GPU hosts.
///
/// Global flags go before the subcommand, as with runc:
/// `gpu-youki --root /run/gpu-youki --log log.json --log-format json create -b BUNDLE ID`.
#[derive(Parser, Debug)]
#[command(name = "gpu-youki", disable_version_flag = true, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,

    /// Print the version of gpu-youki, of libcontainer and of the OCI runtime spec.
    #[arg(short = 'v', long)]
    pub version: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Every subcommand gpu-youki takes: the OCI ones, runc's common ones, and its own.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a container from a bundle; its process waits for `start`.
    Create(liboci_cli::Create),
    /// Start the process of a created container.
    Start(liboci_cli::Start),
    /// Print the state of a container as OCI state JSON.
    State(liboci_cli::State),
    /// Send a signal (name or number, default SIGTERM) to a container's init or all processes.
    Kill(KillArgs),
    /// Delete a stopped container (`--force` also kills a running one; a gone one is not an error).
    Delete(liboci_cli::Delete),
    /// Create and start a container; without --detach, wait and exit with the workload's code.
    Run(liboci_cli::Run),
    /// Run a new process inside a running container.
    Exec(liboci_cli::Exec),
    /// List the processes of a container (`--format table|json`).
    Ps(liboci_cli::Ps),
    /// Suspend all processes of a container (freezer cgroup).
    Pause(liboci_cli::Pause),
    /// Resume the processes of a paused container.
    Resume(liboci_cli::Resume),
    /// Update the resource limits of a container (`--resources -|FILE` takes LinuxResources JSON).
    Update(liboci_cli::Update),
    /// Print the features this runtime supports, as OCI features JSON.
    Features(liboci_cli::Features),
    /// Write a default config.json into a bundle directory.
    Spec(liboci_cli::Spec),
    /// List the containers under --root.
    List(liboci_cli::List),
    /// Print a container's resource usage statistics and events.
    Events(liboci_cli::Events),
    /// Show the host's NVIDIA GPUs and driver files, or what a bundle's container would get.
    #[command(subcommand)]
    Gpu(GpuCommand),
    /// Write a CDI spec for this host's GPUs, or list the CDI devices of the spec directories.
    #[command(subcommand)]
    Cdi(CdiCommand),
    /// Register gpu-youki as a runtime of containerd or docker, and install the placeholder
    /// programs their `--gpus` flags look for.
    #[command(subcommand)]
    Setup(SetupCommand),
}

/// `gpu-youki cdi …`.
#[derive(Subcommand, Debug)]
pub enum CdiCommand {
    /// A CDI spec for this host (kind nvidia.com/gpu: a device per GPU index and UUID, and
    /// `all`), in the shape `nvidia-ctk cdi generate` writes, so other runtimes can use it too.
    Generate {
        /// Write it to this file (atomically, mode 0644) instead of stdout.
        #[arg(long)]
        output: Option<std::path::PathBuf>,
        /// yaml or json; from the extension of --output when not given, else yaml.
        #[arg(long, value_enum)]
        format: Option<CdiFormat>,
    },
    /// The CDI device names the spec directories define (and the spec files that were skipped).
    List,
}

/// A CDI spec file format.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum CdiFormat {
    /// YAML.
    Yaml,
    /// JSON.
    Json,
}

/// `gpu-youki setup …`: engine configuration, kept as it was but for gpu-youki's entries.
///
/// The old file is kept as `FILE.YYYYMMDD-HHMMSS.bak` (UTC) next to it; a run that changes
/// nothing writes nothing and makes no backup. Restart the engine afterwards.
#[derive(Subcommand, Debug)]
pub enum SetupCommand {
    /// Add a runtime handler to containerd's CRI plugin (config version 2):
    /// `[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.NAME]` with
    /// `runtime_type = "io.containerd.runc.v2"`, `container_annotations = ["cdi.k8s.io/*"]`
    /// and `options.BinaryName` = this gpu-youki binary; the runc runtime's
    /// `options.SystemdCgroup` is copied when the handler is new. Installs the placeholder
    /// `nvidia-container-cli`, without which `ctr run --gpus` refuses to start.
    Containerd(SetupArgs),
    /// Add `runtimes.NAME.path` = this gpu-youki binary to dockerd's daemon.json (keys come
    /// out sorted, indented by 4 spaces). Installs the placeholder
    /// `nvidia-container-runtime-hook`: dockerd offers `docker run --gpus` only when a program
    /// of that name is on its PATH when it starts.
    Docker(SetupArgs),
}

/// What `setup containerd` and `setup docker` take.
#[derive(Args, Debug)]
pub struct SetupArgs {
    /// The engine's configuration file [default: /etc/containerd/config.toml,
    /// /etc/docker/daemon.json]; created when missing.
    #[arg(long, value_name = "PATH")]
    pub config: Option<std::path::PathBuf>,
    /// The name the engine knows gpu-youki by (CRI runtime handler, `docker run --runtime`).
    #[arg(long, value_name = "NAME", default_value = "gpu-youki")]
    pub runtime_name: String,
    /// Also make gpu-youki the engine's default runtime.
    #[arg(long)]
    pub set_as_default: bool,
    /// Print the new configuration to stdout instead of writing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Where the placeholder program goes; it must be on the engine's PATH (dockerd's) or the
    /// client's (ctr's). A file of that name that is not a gpu-youki placeholder (the NVIDIA
    /// Container Toolkit's) is never replaced: setup fails instead.
    #[arg(long, value_name = "DIR", default_value = "/usr/local/bin")]
    pub placeholder_dir: std::path::PathBuf,
    /// The file a placeholder appends a line to whenever it is run (it then fails loudly: a
    /// run means a container asked for GPUs through another runtime than gpu-youki).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/var/log/gpu-youki-placeholder.log"
    )]
    pub placeholder_log: std::path::PathBuf,
    /// Install no placeholder (`--gpus` then needs the NVIDIA Container Toolkit's program).
    #[arg(long)]
    pub no_placeholder: bool,
}

/// `gpu-youki gpu …`: read-only views of the GPU stage.
#[derive(Subcommand, Debug)]
pub enum GpuCommand {
    /// The host inventory: GPUs (index, UUID, bus id, model), devices, and the driver's
    /// libraries, binaries, IPC sockets and firmware by part. Set GPU_YOUKI_CONFIG to use
    /// another config file than /etc/gpu-youki/config.toml.
    Inventory {
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
    /// What the container of a bundle would get: devices, mounts, links, files, /proc view.
    Plan {
        /// The bundle whose config.json asks for GPUs.
        #[arg(short, long, default_value = ".")]
        bundle: std::path::PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
}

/// Table for people, JSON for programs.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum OutputFormat {
    /// Aligned text.
    Table,
    /// Pretty-printed JSON.
    Json,
}

/// `kill` as runc takes it: the signal is optional and defaults to SIGTERM.
#[derive(Args, Debug)]
pub struct KillArgs {
    /// Send the signal to all processes of the container, not only its init.
    #[arg(short, long)]
    pub all: bool,
    /// The container to signal.
    #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new(), required = true)]
    pub container_id: String,
    /// Signal name (`KILL`, `SIGKILL`) or number (`9`).
    #[arg(default_value = "SIGTERM")]
    pub signal: String,
}

/// The text of `gpu-youki --version`: our version, libcontainer's and the OCI spec version.
pub fn version_text() -> String {
    format!(
        "gpu-youki version {}\nlibcontainer: {}\nspec: {}\n",
        env!("CARGO_PKG_VERSION"),
        LIBCONTAINER_VERSION,
        oci_spec::runtime::VERSION,
    )
}
