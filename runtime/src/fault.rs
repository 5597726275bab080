//! Fault injection for the tests of `create`'s cleanup. Only a build with the `fault-injection`
//! feature (the test build, `target/release/gpu-youki-faults`) reads
//! `GPU_YOUKI_FAULT=<point>[:<action>]`: at the [`point`] named `<point>`, `fail` (the default)
//! returns an error naming it, `kill` SIGKILLs the runtime, and `remove=<path>` removes a file
//! and goes on (a driver file vanishing mid-create). The points are the `fault::point` calls in
//! `create` and the GPU stage; integration/tests/faults.rs lists and tests every one. Without
//! the feature, [`point`] is an empty inline function: the release binary has no fault points
//! and never reads the variable.

use anyhow::Result;

/// A step boundary of `create` where a test can inject a fault; nothing without the feature.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn point(_name: &str) -> Result<()> {
    Ok(())
}

/// A step boundary of `create` where a test can inject a fault (see the module comment).
#[cfg(feature = "fault-injection")]
pub fn point(name: &str) -> Result<()> {
    use anyhow::{bail, Context};

    const FAULT_ENV: &str = "GPU_YOUKI_FAULT";
    let Some(fault) = std::env::var_os(FAULT_ENV) else {
        return Ok(());
    };
    let fault = fault
        .to_str()
        .with_context(|| format!("{FAULT_ENV} is not UTF-8"))?;
    let (at, action) = fault.split_once(':').unwrap_or((fault, "fail"));
    if at != name {
        return Ok(());
    }
    match action {
        "fail" => bail!("injected fault at {name} ({FAULT_ENV}={fault})"),
        "kill" => {
            nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGKILL)
                .context("cannot SIGKILL the runtime")?;
            unreachable!("the runtime survived its own SIGKILL")
        }
        _ => match action.strip_prefix("remove=") {
            Some(path) => std::fs::remove_file(path)
                .with_context(|| format!("{FAULT_ENV}: cannot remove {path}")),
            None => bail!("{FAULT_ENV}: unknown action {action:?}; use fail, kill or remove=PATH"),
        },
    }
}
