//! `kill`: send a signal to a container's init process, or with `--all` to all its processes.

use std::path::Path;

use anyhow::{bail, Context, Result};
use libcontainer::container::ContainerStatus;
use nix::sys::signal::Signal;

use super::load_container;
use crate::cli::KillArgs;

pub fn kill(args: KillArgs, root: &Path) -> Result<()> {
    let mut container = load_container(root, &args.container_id)?;
    let signal = parse_signal(&args.signal)?;
    container.refresh_status()?;
    if container.status() == ContainerStatus::Stopped && !args.all {
        bail!(
            "cannot kill container {}: container not running",
            args.container_id
        );
    }
    container
        .kill(signal, args.all)
        .with_context(|| format!("cannot signal container {}", args.container_id))
}

/// A signal by number (`9`) or name, with or without the `SIG` prefix, in any case.
fn parse_signal(text: &str) -> Result<Signal> {
    let upper = text.trim().to_ascii_uppercase();
    let parsed = match upper.parse::<i32>() {
        Ok(number) => Signal::try_from(number).ok(),
        Err(_) if upper.starts_with("SIG") => upper.parse().ok(),
        Err(_) => format!("SIG{upper}").parse().ok(),
    };
    parsed
        .ok_or_else(|| anyhow::anyhow!("invalid signal {text:?}: use a name like KILL or a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_and_number() {
        let number = |text: &str| parse_signal(text).unwrap() as i32;
        assert_eq!(number("9"), 9);
        assert_eq!(number("KILL"), 9);
        assert_eq!(number("sigkill"), 9);
        assert_eq!(number("SIGTERM"), 15);
        assert!(parse_signal("NOPE")
            .unwrap_err()
            .to_string()
            .contains("\"NOPE\""));
    }
}
