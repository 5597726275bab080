//! Waiting for a foreground process (`run`, `exec` without --detach) the way runc does: signals
//! sent to gpu-youki are forwarded to it, and its exit status becomes gpu-youki's.
//!
//! Signals are blocked before the first check for an exit, so a SIGCHLD that arrives before the
//! wait starts stays pending instead of being lost (youki 0.7's `run` can hang forever on a
//! workload that exits at once, because it blocks signals only after starting it).

use anyhow::{Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::sys::signalfd::SigSet;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::tty::Relay;

/// Blocks every signal in the calling thread (and in threads it spawns afterwards), so they
/// queue up for [`wait_forwarding`]. Call it after the container process was forked, since a
/// forked child would inherit the mask.
pub fn block_signals() -> Result<SigSet> {
    let all = SigSet::all();
    all.thread_block().context("cannot block signals")?;
    Ok(all)
}

/// Waits for `pid` to exit, forwarding signals to it; returns its code, or 128+N if signal N
/// killed it. Other children that exit meanwhile are reaped and ignored.
pub fn wait_forwarding(pid: Pid, blocked: &SigSet, relay: Option<&Relay>) -> Result<i32> {
    loop {
        if let Some(status) = reap(pid)? {
            return Ok(status);
        }
        match blocked.wait().context("cannot wait for signals")? {
            Signal::SIGCHLD => {}
            Signal::SIGWINCH => {
                if let Some(relay) = relay {
                    relay.resize();
                }
            }
            // Go runtimes use SIGURG internally; runc does not forward it either.
            Signal::SIGURG => {}
            signal => {
                if let Err(err) = kill(pid, signal) {
                    tracing::warn!("cannot forward {signal} to {pid}: {err}");
                }
            }
        }
    }
}

/// Reaps every exited child without blocking; returns the status of `pid` once it exited.
fn reap(pid: Pid) -> Result<Option<i32>> {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(child, code)) if child == pid => return Ok(Some(code)),
            Ok(WaitStatus::Signaled(child, signal, _)) if child == pid => {
                return Ok(Some(128 + signal as i32))
            }
            Ok(WaitStatus::StillAlive) => return Ok(None),
            Ok(_) => continue,
            Err(nix::errno::Errno::ECHILD) => {
                anyhow::bail!("process {pid} is not a child of gpu-youki any more")
            }
            Err(err) => return Err(err).context("waitpid failed"),
        }
    }
}
