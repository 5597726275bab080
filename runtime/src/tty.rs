//! Terminals for foreground `run` and `exec` without `--console-socket`: as runc does, gpu-youki
//! receives the container's pty master on a private console socket and relays it to its own
//! stdin and stdout. (With `--console-socket` the caller gets the master and no relay runs.)

use std::fs;
use std::io::{IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use anyhow::{anyhow, Context, Result};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use nix::sys::termios::{self, SetArg, Termios};

/// A console socket gpu-youki listens on itself; libcontainer sends the pty master to it.
pub struct ConsoleSocket {
    dir: PathBuf,
    receiver: JoinHandle<Result<OwnedFd>>,
}

impl ConsoleSocket {
    /// Creates the socket in a fresh private directory under the state root and starts waiting
    /// for the master in a thread (libcontainer's create blocks until the init process sent it).
    pub fn listen(state_root: &Path, id: &str) -> Result<Self> {
        let dir = state_root.join(format!(".console-{id}-{}", std::process::id()));
        fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create console directory {}", dir.display()))?;
        let path = dir.join("sock");
        let listener = UnixListener::bind(&path)
            .with_context(|| format!("cannot listen on console socket {}", path.display()))?;
        let receiver = std::thread::spawn(move || receive_master(&listener));
        Ok(ConsoleSocket { dir, receiver })
    }

    /// The path to hand to libcontainer as the console socket.
    pub fn path(&self) -> PathBuf {
        self.dir.join("sock")
    }

    /// The pty master, once libcontainer's create has returned successfully.
    pub fn into_master(self) -> Result<OwnedFd> {
        let master = self
            .receiver
            .join()
            .map_err(|_| anyhow!("console receiver thread panicked"))?;
        let _ = fs::remove_dir_all(&self.dir);
        master
    }

    /// Removes the socket directory when create failed and no master will come.
    pub fn discard(self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn receive_master(listener: &UnixListener) -> Result<OwnedFd> {
    let (stream, _) = listener.accept().context("console socket accept failed")?;
    let mut buf = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .context("cannot receive the pty master")?;
    for cmsg in msg
        .cmsgs()
        .context("bad control message on the console socket")?
    {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel just installed this descriptor for us via SCM_RIGHTS.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err(anyhow!(
        "the console socket message carried no file descriptor"
    ))
}

/// Copies between our stdio and a pty master until the container side closes it.
pub struct Relay {
    master: OwnedFd,
    output: Option<JoinHandle<()>>,
    saved: Option<Termios>,
}

impl Relay {
    /// Starts relaying. When our stdin is a terminal it is put in raw mode (restored on drop)
    /// and its window size is given to the container's terminal.
    pub fn start(master: OwnedFd) -> Result<Self> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).ok();
        if let Some(saved) = &saved {
            let mut raw = saved.clone();
            termios::cfmakeraw(&mut raw);
            termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)
                .context("cannot put the terminal in raw mode")?;
        }
        resize(&master);
        let mut to_stdout = fs::File::from(master.try_clone()?);
        let output = std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            let mut stdout = std::io::stdout();
            // EIO means every slave descriptor is closed: the container's terminal is gone.
            while let Ok(n @ 1..) = to_stdout.read(&mut buf) {
                if stdout
                    .write_all(&buf[..n])
                    .and_then(|_| stdout.flush())
                    .is_err()
                {
                    break;
                }
            }
        });
        let mut from_stdin = fs::File::from(master.try_clone()?);
        // Not joined: it stays blocked on our stdin until the process exits.
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut from_stdin);
        });
        Ok(Relay {
            master,
            output: Some(output),
            saved,
        })
    }

    /// Gives the container's terminal our window size again (on SIGWINCH).
    pub fn resize(&self) {
        resize(&self.master);
    }

    /// Waits until all of the container's output has been copied out.
    pub fn finish(mut self) {
        if let Some(output) = self.output.take() {
            let _ = output.join();
        }
    }
}

/// Gives the terminal behind `master` the window size of our stdin's terminal, if any.
fn resize(master: &OwnedFd) {
    // SAFETY: TIOCGWINSZ/TIOCSWINSZ read or write one winsize struct we own.
    unsafe {
        let mut size: libc::winsize = std::mem::zeroed();
        if libc::ioctl(libc::STDIN_FILENO, libc::TIOCGWINSZ, &mut size) == 0 {
            libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, saved);
        }
    }
}
