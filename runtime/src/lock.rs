//! A per-container-id lock held for the whole of `create`/`run`, because libcontainer's check that
//! a container does not exist yet is not atomic: two concurrent creates of one id would both
//! proceed. With the lock, the second waits for the first and then finds the container there.
//!
//! It is a POSIX record lock (`F_SETLKW`), not `flock`: libcontainer forks the container's init
//! process while the lock is held, and an init waiting for `start` would keep an inherited
//! `flock` (which belongs to the open file) held; record locks belong to the process and are
//! not inherited across fork.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};

/// Directory under the state root that holds the lock files; it holds no container state.
pub const LOCK_DIR: &str = ".locks";

/// An exclusive lock on one container id; the lock file is removed when it is dropped.
pub struct IdLock {
    path: PathBuf,
    file: Option<File>,
}

impl IdLock {
    /// Blocks until this process holds the lock for `id` under the state root `root`.
    pub fn acquire(root: &Path, id: &str) -> Result<Self> {
        let dir = root.join(LOCK_DIR);
        fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create lock directory {}", dir.display()))?;
        let path = dir.join(id);
        loop {
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .with_context(|| format!("cannot open lock file {}", path.display()))?;
            lock_whole_file(&file).with_context(|| format!("cannot lock {}", path.display()))?;
            // A previous holder unlinks the file before unlocking; if the path no longer names
            // the file we locked, lock again so that all contenders share one inode.
            let locked = file.metadata().context("cannot stat the lock file")?;
            match fs::metadata(&path) {
                Ok(current) if current.ino() == locked.ino() && current.dev() == locked.dev() => {
                    return Ok(IdLock {
                        path,
                        file: Some(file),
                    });
                }
                _ => continue,
            }
        }
    }
}

impl Drop for IdLock {
    fn drop(&mut self) {
        // Unlink while still holding the lock, then unlock: waiters notice the unlink and retry.
        let _ = fs::remove_file(&self.path);
        drop(self.file.take());
    }
}

/// Waits for an exclusive POSIX record lock on the whole file.
fn lock_whole_file(file: &File) -> nix::Result<()> {
    let request = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    loop {
        match fcntl(file.as_raw_fd(), FcntlArg::F_SETLKW(&request)) {
            Err(Errno::EINTR) => continue,
            other => return other.map(|_| ()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_file_is_removed_on_drop() {
        let root = std::env::temp_dir().join(format!("gpu-youki-lock-{}", std::process::id()));
        fs::create_dir_all(&root).unwrap();
        let lock = IdLock::acquire(&root, "some-id").unwrap();
        assert!(root.join(LOCK_DIR).join("some-id").exists());
        drop(lock);
        assert!(!root.join(LOCK_DIR).join("some-id").exists());
        // A second acquisition after release works (no stale lock).
        drop(IdLock::acquire(&root, "some-id").unwrap());
        fs::remove_dir_all(&root).unwrap();
    }
}
