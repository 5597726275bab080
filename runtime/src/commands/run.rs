//! `run`: create and start a container. In the foreground (the default) gpu-youki waits for the
//! workload, forwards signals to it, relays its terminal, deletes the container afterwards and
//! exits with the workload's code; with `--detach` it returns once the workload runs.

use std::path::Path;

use anyhow::{Context, Result};
use liboci_cli::GlobalOpts;

use super::absolute;
use super::create::{create_container, load_bundle_spec, CreateRequest};
use super::delete::delete_container;
use super::foreground::{block_signals, wait_forwarding};
use crate::tty::{ConsoleSocket, Relay};

pub fn run(args: liboci_cli::Run, root: &Path, global: &GlobalOpts) -> Result<i32> {
    let bundle = absolute(&args.bundle)?;
    let terminal = load_bundle_spec(&bundle)?
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    // A foreground terminal without --console-socket: receive the pty master ourselves.
    let console = (terminal && !args.detach && args.console_socket.is_none())
        .then(|| ConsoleSocket::listen(root, &args.container_id))
        .transpose()?;
    let request = CreateRequest {
        id: args.container_id.clone(),
        bundle,
        pid_file: args.pid_file,
        console_socket: console.as_ref().map(|c| c.path()).or(args.console_socket),
        preserve_fds: args.preserve_fds,
        no_pivot: args.no_pivot,
        no_new_keyring: args.no_new_keyring,
    };
    // libcontainer's `detached` only decides whether a console socket is required.
    let created = create_container(&request, root, global, args.detach || console.is_some());
    let mut container = match created {
        Ok(container) => container,
        Err(err) => {
            if let Some(console) = console {
                console.discard();
            }
            return Err(err);
        }
    };
    let master = console.map(ConsoleSocket::into_master).transpose()?;

    let blocked = (!args.detach).then(block_signals).transpose()?;
    let relay = master.map(Relay::start).transpose()?;
    if let Err(err) = container.start() {
        // As runc: a container that cannot start is not left behind.
        let _ = delete_container(&mut container, root, true);
        return Err(err).with_context(|| format!("cannot start container {}", args.container_id));
    }
    let Some(blocked) = blocked else {
        return Ok(0);
    };
    let pid = container
        .pid()
        .context("the started container has no init pid")?;
    let status = wait_forwarding(pid, &blocked, relay.as_ref());
    if let Some(relay) = relay {
        relay.finish();
    }
    if !args.keep {
        delete_container(&mut container, root, true)?;
    }
    status
}
