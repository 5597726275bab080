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
        Self::lock(root, id, true)?.context("a waiting lock was not taken")
    }

    /// The lock for `id` if no other process holds it, without waiting: `None` while a
    /// `create` of `id` runs. A lock file a killed `create` left is taken (its record lock died
    /// with it) and so removed when this is dropped.
    pub fn try_acquire(root: &Path, id: &str) -> Result<Option<Self>> {
        Self::lock(root, id, false)
    }

    fn lock(root: &Path, id: &str, wait: bool) -> Result<Option<Self>> {
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
            match lock_whole_file(&file, wait) {
                Ok(()) => {}
                Err(Errno::EAGAIN | Errno::EACCES) if !wait => return Ok(None),
                Err(err) => {
                    return Err(err).with_context(|| format!("cannot lock {}", path.display()))
                }
            }
            // A previous holder unlinks the file before unlocking; if the path no longer names
            // the file we locked, lock again so that all contenders share one inode.
            let locked = file.metadata().context("cannot stat the lock file")?;
            match fs::metadata(&path) {
                Ok(current) if current.ino() == locked.ino() && current.dev() == locked.dev() => {
                    return Ok(Some(IdLock {
                        path,
                        file: Some(file),
                    }));
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

/// Takes an exclusive POSIX record lock on the whole file, waiting for it when `wait` (else
/// failing with `EAGAIN` or `EACCES` while another process holds it).
fn lock_whole_file(file: &File, wait: bool) -> nix::Result<()> {
    let request = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    loop {
        let command = if wait {
            FcntlArg::F_SETLKW(&request)
        } else {
            FcntlArg::F_SETLK(&request)
        };
        match fcntl(file.as_raw_fd(), command) {
            Err(Errno::EINTR) => continue,
            other => return other.map(|_| ()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn try_acquire_takes_a_stale_lock_but_not_a_held_one() {
        let root = std::env::temp_dir().join(format!("gpu-youki-stale-{}", std::process::id()));
        fs::create_dir_all(root.join(LOCK_DIR)).unwrap();
        let path = root.join(LOCK_DIR).join("some-id");
        // A lock file nobody holds, as a SIGKILLed create leaves it.
        File::create(&path).unwrap();
        let lock = IdLock::try_acquire(&root, "some-id").unwrap();
        assert!(lock.is_some(), "a stale lock file was not taken");
        drop(lock);
        assert!(!path.exists());
        // One that another process holds (a record lock, as python's lockf takes it) stays.
        File::create(&path).unwrap();
        let mut holder = std::process::Command::new("python3")
            .args([
                "-c",
                "import fcntl, sys; f = open(sys.argv[1], 'w'); fcntl.lockf(f, fcntl.LOCK_EX); \
                 print('locked', flush=True); sys.stdin.read()",
            ])
            .arg(&path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line, "locked\n");
        assert!(
            IdLock::try_acquire(&root, "some-id").unwrap().is_none(),
            "a held lock was taken"
        );
        assert!(path.exists(), "a held lock file was removed");
        drop(holder.stdin.take());
        holder.wait().unwrap();
        fs::remove_dir_all(&root).unwrap();
    }

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
