//! gpu-youki: a runc-compatible OCI runtime for NVIDIA GPU hosts, built on youki's libcontainer.
//!
//! The command line follows runc: global flags come before the subcommand, so containerd's
//! `io.containerd.runc.v2` shim, dockerd and people can all drive it.

mod cli;
mod commands;
mod executor;
mod fault;
mod gpu_stage;
mod lock;
mod logging;
mod seal;
mod tty;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.version {
        print!("{}", cli::version_text());
        return ExitCode::SUCCESS;
    }
    let Some(command) = cli.command else {
        // clap prints the help text itself when asked; a bare invocation gets it too.
        let _ = <Cli as clap::CommandFactory>::command().print_help();
        return ExitCode::from(2);
    };

    // Only commands whose processes enter a container pay for the sealed copy of the binary.
    if command.enters_container() {
        if let Err(err) = seal::ensure_sealed() {
            eprintln!("gpu-youki: {err:#}");
            return ExitCode::FAILURE;
        }
    }

    let log = match logging::init(&cli.global) {
        Ok(log) => log,
        Err(err) => {
            eprintln!("gpu-youki: {err:#}");
            return ExitCode::FAILURE;
        }
    };

    match commands::dispatch(command, &cli.global) {
        Ok(code) => code,
        Err(err) => {
            log.report_error(&err);
            ExitCode::FAILURE
        }
    }
}

impl Command {
    /// Commands that fork a process into a container (create, run, exec) run from a sealed
    /// in-memory copy of the binary, so no container process can reach the host binary through
    /// `/proc/<pid>/exe` (runc's CVE-2019-5736).
    fn enters_container(&self) -> bool {
        matches!(
            self,
            Command::Create(_) | Command::Run(_) | Command::Exec(_)
        )
    }
}
