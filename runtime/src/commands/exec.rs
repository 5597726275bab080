//! `exec`: run another process in a running container, from `--process FILE` or inline args.
//! In the foreground gpu-youki waits for it and exits with its code; with `--tty` and no
//! `--console-socket` it relays the process's terminal itself.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::ContainerStatus;
use libcontainer::oci_spec::runtime::Process;
use libcontainer::syscall::syscall::SyscallType;

use super::create::load_bundle_spec;
use super::foreground::{block_signals, wait_forwarding};
use super::{absolute, container_dir, load_container, parse_json, status_name};
use crate::executor::WorkloadExecutor;
use crate::tty::{ConsoleSocket, Relay};

pub fn exec(args: liboci_cli::Exec, root: &Path) -> Result<i32> {
    let mut container = load_container(root, &args.container_id)?;
    container.refresh_status()?;
    if container.status() != ContainerStatus::Running
        && !(args.ignore_paused && container.status() == ContainerStatus::Paused)
    {
        bail!(
            "cannot exec in container {}: it is {}, not running",
            args.container_id,
            status_name(&container)
        );
    }
    let process_file = match (&args.process, args.tty) {
        (Some(path), _) => Some(absolute(path)?),
        // libcontainer builds inline processes without a terminal: write one with it.
        (None, true) => Some(write_tty_process(&args, container.bundle(), root)?),
        (None, false) => None,
    };
    let terminal = match &process_file {
        Some(path) => read_process(path)?.terminal().unwrap_or(false),
        None => false,
    };
    let console = (terminal && !args.detach && args.console_socket.is_none())
        .then(|| ConsoleSocket::listen(root, &args.container_id))
        .transpose()?;
    let console_socket = match &console {
        Some(console) => Some(console.path()),
        None => args.console_socket.as_deref().map(absolute).transpose()?,
    };
    let pid_file = args.pid_file.as_deref().map(absolute).transpose()?;
    let built = ContainerBuilder::new(args.container_id.clone(), SyscallType::default())
        .with_executor(WorkloadExecutor { keyring: None })
        .with_root_path(root)?
        .with_console_socket(console_socket)
        .with_pid_file(pid_file)?
        .with_preserved_fds(args.preserve_fds)
        .validate_id()?
        .as_tenant()
        .with_detach(args.detach || console.is_some())
        .with_cwd(args.cwd.as_ref())
        .with_env(args.env.iter().cloned().collect())
        .with_process(process_file.as_ref())
        .with_no_new_privs(args.no_new_privs)
        .with_container_args(args.command.clone())
        .with_additional_gids(args.additional_gids.clone())
        .with_user(args.user.map(|(uid, _)| uid))
        .with_group(args.user.and_then(|(_, gid)| gid))
        .with_capabilities(args.cap.clone())
        .with_ignore_paused(args.ignore_paused)
        .with_sub_cgroup(args.cgroup.clone())
        .with_apparmor(args.apparmor.clone())
        .build();
    if let (Some(path), None) = (&process_file, &args.process) {
        let _ = std::fs::remove_file(path);
    }
    let pid = match built {
        Ok(pid) => pid,
        Err(err) => {
            if let Some(console) = console {
                console.discard();
            }
            return Err(err)
                .with_context(|| format!("cannot exec in container {}", args.container_id));
        }
    };
    if args.detach {
        return Ok(0);
    }
    let master = console.map(ConsoleSocket::into_master).transpose()?;
    let blocked = block_signals()?;
    let relay = master.map(Relay::start).transpose()?;
    let status = wait_forwarding(pid, &blocked, relay.as_ref());
    if let Some(relay) = relay {
        relay.finish();
    }
    status
}

fn read_process(path: &Path) -> Result<Process> {
    let text = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_json(&text, &path.display().to_string())
}

/// The container's own process with the inline args, `-e`, `--cwd`, `--user` and a terminal,
/// as runc builds an inline `exec -t`; written into the container's state directory.
fn write_tty_process(args: &liboci_cli::Exec, bundle: &Path, root: &Path) -> Result<PathBuf> {
    if args.command.is_empty() {
        bail!("exec needs a command to run, or --process FILE");
    }
    let spec = load_bundle_spec(bundle)?;
    let mut process = spec
        .process()
        .clone()
        .context("the container's config.json has no process")?;
    process
        .set_args(Some(args.command.clone()))
        .set_terminal(Some(true));
    let mut env = process.env().clone().unwrap_or_default();
    for (key, value) in &args.env {
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(format!("{key}={value}"));
    }
    process.set_env(Some(env));
    if let Some(cwd) = &args.cwd {
        process.set_cwd(cwd.clone());
    }
    let mut user = process.user().clone();
    if let Some((uid, gid)) = args.user {
        user.set_uid(uid);
        if let Some(gid) = gid {
            user.set_gid(gid);
        }
    }
    if !args.additional_gids.is_empty() {
        user.set_additional_gids(Some(args.additional_gids.clone()));
    }
    process.set_user(user);
    if args.no_new_privs {
        process.set_no_new_privileges(Some(true));
    }
    let path = container_dir(root, &args.container_id)?
        .join(format!("exec-process-{}.json", std::process::id()));
    std::fs::write(&path, serde_json::to_vec(&process)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}
