//! The workload executor: libcontainer's default `execvp`, with runc's error messages and runc's
//! session keyring. Engines show these messages to their users verbatim, so a missing binary
//! reads `exec: "/nonexistent": stat /nonexistent: no such file or directory` as it does with runc.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use libcontainer::oci_spec::runtime::Spec;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};

/// Runs the container's process. Cloned into the container's init process by libcontainer.
#[derive(Clone)]
pub struct WorkloadExecutor {
    /// Join a fresh session keyring named after the container, as runc does unless
    /// `--no-new-keyring` is given; `None` keeps the inherited one.
    pub keyring: Option<String>,
}

impl Executor for WorkloadExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        if let Some(name) = &self.keyring {
            join_session_keyring(name);
        }
        libcontainer::workload::default::get_executor().exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        let process = spec.process().as_ref().ok_or_else(|| {
            ExecutorValidationError::ArgValidationError("config.json has no process".into())
        })?;
        let program = process
            .args()
            .as_ref()
            .and_then(|args| args.first())
            .ok_or_else(|| {
                ExecutorValidationError::ArgValidationError(
                    "process.args must name the program to run".into(),
                )
            })?;
        let path_var = process
            .env()
            .iter()
            .flatten()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or("");
        find_executable(program, path_var)
            .map(|_| ())
            .map_err(ExecutorValidationError::ArgValidationError)
    }
}

/// Resolves `program` the way `execvp` will, returning runc's wording when it cannot run.
fn find_executable(program: &str, path_var: &str) -> Result<PathBuf, String> {
    if program.contains('/') {
        let path = PathBuf::from(program);
        return match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => Ok(path),
            Ok(_) => Err(format!("exec: {program:?}: permission denied")),
            Err(err) => Err(format!(
                "exec: {program:?}: stat {program}: {}",
                io_error_text(&err)
            )),
        };
    }
    path_var
        .split(':')
        .map(|dir| Path::new(if dir.is_empty() { "." } else { dir }).join(program))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
        .ok_or_else(|| format!("exec: {program:?}: executable file not found in $PATH"))
}

/// The lower-case strerror text Go (and so runc) prints for an I/O error.
fn io_error_text(err: &std::io::Error) -> String {
    match err.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code)
            .desc()
            .to_ascii_lowercase(),
        None => err.to_string(),
    }
}

/// `keyctl(KEYCTL_JOIN_SESSION_KEYRING, name)`. Best effort, as in runc: a seccomp profile or
/// kernel without keyrings makes it fail, and the container then keeps the inherited keyring.
fn join_session_keyring(name: &str) {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    let Ok(name) = std::ffi::CString::new(name) else {
        return;
    };
    // SAFETY: keyctl with a valid NUL-terminated string reads nothing else from our memory.
    let rc = unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name.as_ptr()) };
    if rc < 0 {
        tracing::debug!(
            "session keyring not joined: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_absolute_program_reads_like_runc() {
        let err = find_executable("/nonexistent", "/bin").unwrap_err();
        assert_eq!(
            err,
            "exec: \"/nonexistent\": stat /nonexistent: no such file or directory"
        );
    }

    #[test]
    fn program_is_looked_up_in_path() {
        assert_eq!(
            find_executable("sh", "/nowhere:/bin").unwrap(),
            PathBuf::from("/bin/sh")
        );
        let err = find_executable("no-such-program", "/bin").unwrap_err();
        assert_eq!(
            err,
            "exec: \"no-such-program\": executable file not found in $PATH"
        );
    }

    #[test]
    fn directory_is_not_executable() {
        let err = find_executable("/tmp", "").unwrap_err();
        assert_eq!(err, "exec: \"/tmp\": permission denied");
    }
}
