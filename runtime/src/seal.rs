//! The CVE-2019-5736 defence: commands that put a process into a container re-execute
//! themselves from a copy of the binary that cannot be written. A container process that opens
//! `/proc/<pid>/exe` of a gpu-youki process then reaches that copy, never the binary on the host.
//!
//! The copy costs no copying: the binary is re-executed through a private overlayfs mount (never
//! attached anywhere) whose layers are all lower layers, so nothing in it can be written and,
//! unlike a read-only bind mount, no one can remount it writable (runc 1.2 does the same). Where
//! overlayfs cannot be used (no privilege, an old kernel), a sealed memfd copy is made instead.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rustix::fs::{Mode, OFlags};
use rustix::mount::{
    fsconfig_create, fsconfig_set_string, fsmount, fsopen, FsMountFlags, FsOpenFlags,
    MountAttrFlags,
};

/// Set in the environment of the re-executed process, and removed by it at once.
const SEALED_ENV: &str = "_GPU_YOUKI_SEALED";

/// An empty directory: overlayfs is read-only only with two lower layers, and this is the one
/// under the binary's own directory.
const EMPTY_LOWER_DIR: &str = "/run/gpu-youki-seal";

/// `statfs` magic of overlayfs.
const OVERLAYFS_SUPER_MAGIC: i64 = 0x794c_7630;

/// Re-executes the current command from a copy of the binary that cannot be written, unless
/// it already runs from one. Returns only when it does.
pub fn ensure_sealed() -> Result<()> {
    if std::env::var_os(SEALED_ENV).is_some() {
        std::env::remove_var(SEALED_ENV);
        if runs_from_sealed_overlay()? {
            return Ok(());
        }
    }
    match sealed_overlay_exe() {
        Ok(exe) => Err(exec_from(exe)).context("cannot re-execute through a sealed overlay"),
        Err(_) => pentacle::ensure_sealed()
            .context("cannot re-execute from a sealed copy of /proc/self/exe"),
    }
}

/// Whether the running image is on a read-only overlayfs, as it is after [`exec_from`].
fn runs_from_sealed_overlay() -> Result<bool> {
    let exe = rustix::fs::open(
        "/proc/self/exe",
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .context("cannot open /proc/self/exe")?;
    let fs = rustix::fs::fstatfs(&exe).context("cannot statfs /proc/self/exe")?;
    let flags = rustix::fs::fstatvfs(&exe).context("cannot statvfs /proc/self/exe")?;
    #[allow(clippy::unnecessary_cast)] // f_type's integer type differs between libcs
    let overlay = fs.f_type as i64 == OVERLAYFS_SUPER_MAGIC;
    Ok(overlay && flags.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY))
}

/// An `O_PATH` descriptor of this binary through a new, detached, read-only overlayfs whose
/// layers are the binary's directory and an empty one.
fn sealed_overlay_exe() -> Result<OwnedFd> {
    let binary: PathBuf =
        std::fs::read_link("/proc/self/exe").context("readlink /proc/self/exe")?;
    let (Some(dir), Some(name)) = (binary.parent(), binary.file_name()) else {
        bail!("the binary {} has no directory", binary.display());
    };
    match std::fs::create_dir(EMPTY_LOWER_DIR) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(err).with_context(|| format!("cannot create {EMPTY_LOWER_DIR}")),
    }
    let context = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).context("fsopen overlay")?;
    let lower = format!(
        "{}:{}",
        escape_lower_dir(dir),
        escape_lower_dir(Path::new(EMPTY_LOWER_DIR))
    );
    fsconfig_set_string(context.as_fd(), "lowerdir", lower.as_str())
        .with_context(|| format!("overlay lowerdir={lower}"))?;
    // xino only matters for inode numbers, and would log noise when the layers differ in fs.
    let _ = fsconfig_set_string(context.as_fd(), "xino", "off");
    fsconfig_create(context.as_fd()).context("cannot create the overlay")?;
    let mount = fsmount(
        context.as_fd(),
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_RDONLY
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOSUID,
    )
    .context("cannot mount the overlay")?;
    rustix::fs::openat(
        &mount,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("cannot open {} in the overlay", name.to_string_lossy()))
}

/// A lowerdir path with overlayfs's separators escaped.
fn escape_lower_dir(path: &Path) -> String {
    path.to_string_lossy()
        .replace('\\', "\\\\")
        .replace(':', "\\:")
}

/// Executes `exe` with this process's arguments and environment plus [`SEALED_ENV`]; returns
/// only the error.
fn exec_from(exe: OwnedFd) -> anyhow::Error {
    let to_c = |bytes: &[u8]| CString::new(bytes).ok();
    let args: Option<Vec<CString>> = std::env::args_os()
        .map(|a| to_c(OsStr::as_bytes(&a)))
        .collect();
    let mut env: Option<Vec<CString>> = std::env::vars_os()
        .map(|(k, v)| to_c(&[k.as_bytes(), b"=", v.as_bytes()].concat()))
        .collect();
    if let Some(env) = env.as_mut() {
        env.push(CString::new(format!("{SEALED_ENV}=1")).expect("no NUL"));
    }
    let (Some(args), Some(env)) = (args, env) else {
        return anyhow::anyhow!("an argument or environment variable holds a NUL byte");
    };
    let err = nix::unistd::execveat(
        Some(exe.as_raw_fd()),
        c"",
        &args,
        &env,
        nix::fcntl::AtFlags::AT_EMPTY_PATH,
    )
    .unwrap_err();
    anyhow::Error::new(err).context("execveat")
}
