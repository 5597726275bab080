//! Paths inside a root directory (a container's rootfs, a driver root), resolved the way a
//! process chrooted there would see them: every component, absolute symlinks and `..` included,
//! stays inside the root (`openat2` with `RESOLVE_IN_ROOT`). A hostile image can therefore never
//! make gpu-youki read, create or write a host path through a symlink; link loops are refused.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Links followed before a path counts as a loop: the kernel's own limit.
const MAX_LINK_HOPS: u32 = 40;

/// An open root directory and the host path it was opened at (for messages).
#[derive(Debug)]
pub struct FsRoot {
    fd: OwnedFd,
    path: PathBuf,
}

/// A path inside a root, made relative (`/usr/lib` → `usr/lib`) for `openat2`.
fn inside(path: &Path) -> &Path {
    match path.strip_prefix("/").unwrap_or(path) {
        p if p.as_os_str().is_empty() => Path::new("."),
        p => p,
    }
}

fn resolve_flags() -> ResolveFlags {
    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS
}

impl FsRoot {
    /// Opens `path` (a host directory) as a root.
    pub fn open(path: &Path) -> Result<Self> {
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(FsRoot {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// A root from an already open directory (e.g. a new tmpfs); `label` names it in messages.
    pub fn from_fd(fd: OwnedFd, label: &Path) -> Self {
        FsRoot {
            fd,
            path: label.to_path_buf(),
        }
    }

    /// The host path the root was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens `path` inside the root with `flags`; `Ok(None)` when it does not exist.
    pub fn open_at(&self, path: &Path, flags: OFlags, mode: Mode) -> Result<Option<OwnedFd>> {
        match rustix::fs::openat2(
            &self.fd,
            inside(path),
            flags | OFlags::CLOEXEC,
            mode,
            resolve_flags(),
        ) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::NOENT) => Ok(None),
            Err(Errno::LOOP) => bail!(
                "{} in {} is a symlink loop",
                path.display(),
                self.path.display()
            ),
            Err(err) => Err(err).with_context(|| {
                format!("cannot open {} in {}", path.display(), self.path.display())
            }),
        }
    }

    /// Whether `path` exists inside the root (following links inside the root).
    pub fn exists(&self, path: &Path) -> Result<bool> {
        Ok(self.open_at(path, OFlags::PATH, Mode::empty())?.is_some())
    }

    /// The contents of the regular file at `path`, or `None` when there is none.
    pub fn read(&self, path: &Path) -> Result<Option<Vec<u8>>> {
        let Some(fd) = self.open_at(path, OFlags::RDONLY, Mode::empty())? else {
            return Ok(None);
        };
        let file = std::fs::File::from(fd);
        let metadata = file.metadata()?;
        anyhow::ensure!(
            metadata.is_file(),
            "{} in {} is not a regular file",
            path.display(),
            self.path.display()
        );
        let mut data = Vec::with_capacity(metadata.len() as usize);
        // Through `Take`, which skips the size probe (`statx`, `lseek`) of `File`'s own.
        std::io::Read::read_to_end(&mut std::io::Read::take(&file, u64::MAX), &mut data)
            .with_context(|| {
                format!("cannot read {} in {}", path.display(), self.path.display())
            })?;
        Ok(Some(data))
    }

    /// The host path that `path` inside the root resolves to, `None` when it does not exist.
    /// For reading trusted trees (driver roots) through ordinary host paths.
    pub fn resolve(&self, path: &Path) -> Result<Option<PathBuf>> {
        let Some(fd) = self.open_at(path, OFlags::PATH, Mode::empty())? else {
            return Ok(None);
        };
        let link = std::fs::read_link(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&fd)
        ))
        .context("cannot read /proc/self/fd")?;
        Ok(Some(link))
    }

    /// The names in the directory at `path` (empty when it does not exist).
    pub fn read_dir(&self, path: &Path) -> Result<Vec<OsString>> {
        let entries = self.list(path)?.map(|(_, entries)| entries);
        Ok(entries
            .into_iter()
            .flatten()
            .map(|(name, _)| name)
            .collect())
    }

    /// The open directory at `path` and the names in it with their types as the directory
    /// reports them, `None` when it does not exist.
    fn list(&self, path: &Path) -> Result<Option<Listing>> {
        let Some(fd) = self.open_at(path, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())?
        else {
            return Ok(None);
        };
        let mut entries = Vec::new();
        let dir = rustix::fs::Dir::read_from(&fd).with_context(|| {
            format!("cannot list {} in {}", path.display(), self.path.display())
        })?;
        for entry in dir {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                entries.push((OsStr::from_bytes(name).to_os_string(), entry.file_type()));
            }
        }
        Ok(Some((fd, entries)))
    }

    /// Opens the directory at `path`, creating it and missing parents (0755) inside the root.
    /// A dangling symlink on the way is followed as the container would: its target is created
    /// inside the root.
    pub fn create_dir_all(&self, path: &Path) -> Result<OwnedFd> {
        // Most directories exist: one `openat2` then, instead of two per component.
        if let Some(dir) = self.open_at(path, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())? {
            return Ok(dir);
        }
        let mut wanted = Path::new("/").join(inside(path));
        let mut hops = 0;
        'restart: loop {
            let mut current = PathBuf::from("/");
            // The directory at `current`, for the `*at` calls on its entries.
            let mut parent = self.dir(&current)?;
            let components: Vec<_> = wanted.components().skip(1).collect();
            for (i, component) in components.iter().enumerate() {
                let name = match component {
                    Component::Normal(name) => name,
                    Component::ParentDir => {
                        current.pop(); // never above the root: "/" has no parent to pop to
                        parent = self.dir(&current)?;
                        continue;
                    }
                    _ => continue,
                };
                current.push(name);
                // Resolved from the root each time: a link on the way is followed inside it.
                if let Some(dir) =
                    self.open_at(&current, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())?
                {
                    parent = dir;
                    continue;
                }
                match rustix::fs::mkdirat(&parent, *name, Mode::from_raw_mode(0o755)) {
                    Ok(()) => {
                        parent = self.dir(&current)?;
                        continue;
                    }
                    Err(Errno::EXIST) => {}
                    Err(err) => {
                        return Err(err).with_context(|| {
                            format!(
                                "cannot create {} in {}",
                                current.display(),
                                self.path.display()
                            )
                        })
                    }
                }
                // Something is there but does not open as a directory: a dangling link.
                let target =
                    rustix::fs::readlinkat(&parent, *name, Vec::new()).with_context(|| {
                        format!(
                            "{} in {} is not a directory",
                            current.display(),
                            self.path.display()
                        )
                    })?;
                hops += 1;
                anyhow::ensure!(
                    hops <= MAX_LINK_HOPS,
                    "{} in {} is a symlink loop",
                    path.display(),
                    self.path.display()
                );
                let base = current.parent().unwrap_or(Path::new("/"));
                let mut next = base.join(OsStr::from_bytes(target.as_bytes()));
                next.extend(&components[i + 1..]);
                wanted = next;
                continue 'restart;
            }
            return Ok(parent);
        }
    }

    /// Opens an existing directory (an `O_PATH` fd usable with the `*at` calls).
    fn dir(&self, path: &Path) -> Result<OwnedFd> {
        self.open_at(path, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())?
            .with_context(|| {
                format!(
                    "{} does not exist in {}",
                    path.display(),
                    self.path.display()
                )
            })
    }

    /// Makes `path` a symlink to `target`, replacing what is there unless it is the same link;
    /// the parent directory is resolved inside the root and created when missing.
    pub fn symlink(&self, target: &Path, path: &Path) -> Result<()> {
        self.dirs().symlink(target, path)
    }

    /// Opens directories of this root for a run of paths (see [`InDirs`]).
    pub fn dirs(&self) -> InDirs<'_> {
        InDirs {
            root: self,
            open: None,
        }
    }

    /// Writes `data` to `path` atomically (a temporary file renamed over it), mode 0644, unless
    /// it already holds exactly that. Returns whether anything was written.
    pub fn write_file(&self, path: &Path, data: &[u8]) -> Result<bool> {
        if self.read(path).ok().flatten().as_deref() == Some(data) {
            return Ok(false);
        }
        let (parent, name) = split(path)?;
        let dir = self.create_dir_all(parent)?;
        let temp = temp_name(name);
        let fd = rustix::fs::openat(
            &dir,
            &temp,
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .with_context(|| {
            format!(
                "cannot create {} in {}",
                path.display(),
                self.path.display()
            )
        })?;
        let mut file = std::fs::File::from(fd);
        let written = file
            .write_all(data)
            .with_context(|| format!("cannot write {} in {}", path.display(), self.path.display()))
            .and_then(|()| {
                Ok(rustix::fs::fchmod(
                    file.as_fd(),
                    Mode::from_raw_mode(0o644),
                )?)
            })
            .and_then(|()| {
                rustix::fs::renameat(&dir, &temp, &dir, name).with_context(|| {
                    format!(
                        "cannot replace {} in {}",
                        path.display(),
                        self.path.display()
                    )
                })
            });
        without_temp_on_error(&dir, &temp, written)?;
        Ok(true)
    }

    /// The entries of the directory at `path` that `wanted` picks and that are symlinks or empty
    /// regular files (what gpu-youki places as links and mount targets; an image's real files
    /// are never empty), as paths inside the root. Empty when the directory does not exist.
    pub fn placeholders(
        &self,
        path: &Path,
        wanted: impl Fn(&OsStr) -> bool,
    ) -> Result<Vec<PathBuf>> {
        let Some((fd, entries)) = self.list(path)? else {
            return Ok(Vec::new());
        };
        let mut found = Vec::new();
        for (name, kind) in entries.iter().filter(|(name, _)| wanted(name)) {
            // A link needs no stat; a file's size and an unknown type do.
            if *kind == FileType::Symlink {
                found.push(path.join(name));
                continue;
            }
            let stat = match rustix::fs::statat(&fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) => stat,
                Err(Errno::NOENT) => continue,
                Err(err) => {
                    return Err(err).with_context(|| {
                        format!(
                            "cannot stat {} in {}",
                            path.join(name).display(),
                            self.path.display()
                        )
                    })
                }
            };
            let kind = FileType::from_raw_mode(stat.st_mode);
            if kind == FileType::Symlink || (kind == FileType::RegularFile && stat.st_size == 0) {
                found.push(path.join(name));
            }
        }
        Ok(found)
    }

    /// Removes the file or link at `path` (its parent resolved inside the root); a missing one
    /// is not an error.
    pub fn remove_file(&self, path: &Path) -> Result<()> {
        let (parent, name) = split(path)?;
        let Some(dir) = self.open_at(parent, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())?
        else {
            return Ok(());
        };
        match rustix::fs::unlinkat(&dir, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(err) => Err(err).with_context(|| {
                format!(
                    "cannot remove {} in {}",
                    path.display(),
                    self.path.display()
                )
            }),
        }
    }

    /// Makes character device nodes, each owned by root and its group, with its permission
    /// bits (less the umask); parent directories are resolved inside the root and created when
    /// missing, each opened once for a run of nodes in it. A node already there is kept if it
    /// is the same device, and refused otherwise.
    pub fn make_char_devices<'a>(
        &self,
        devices: impl IntoIterator<Item = CharDevice<'a>>,
    ) -> Result<()> {
        let mut dirs = self.dirs();
        for device in devices {
            let (dir, name) = dirs.parent_of(device.path)?;
            self.make_char_device(dir, name, &device)?;
        }
        Ok(())
    }

    fn make_char_device(&self, dir: &OwnedFd, name: &OsStr, node: &CharDevice) -> Result<()> {
        let (major, minor) = node.numbers;
        let device = rustix::fs::makedev(major, minor);
        match rustix::fs::mknodat(
            dir,
            name,
            FileType::CharacterDevice,
            Mode::from_raw_mode(node.mode),
            device,
        ) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                let existing = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
                let is_char =
                    FileType::from_raw_mode(existing.st_mode) == FileType::CharacterDevice;
                anyhow::ensure!(
                    is_char && existing.st_rdev == device,
                    "{} in {} exists and is not device {major}:{minor}",
                    node.path.display(),
                    self.path.display()
                );
                return Ok(());
            }
            Err(err) => {
                return Err(err).with_context(|| {
                    format!(
                        "cannot make device node {} in {}",
                        node.path.display(),
                        self.path.display()
                    )
                })
            }
        }
        rustix::fs::chownat(
            dir,
            name,
            Some(rustix::fs::Uid::ROOT),
            Some(rustix::fs::Gid::from_raw(node.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .with_context(|| {
            format!(
                "cannot chown {} in {}",
                node.path.display(),
                self.path.display()
            )
        })
    }

    /// Creates an empty regular file with permission bits `mode` at `path` (a mount target)
    /// unless something is there. A dangling symlink at `path` is followed as the container
    /// would: its target is created inside the root.
    pub fn create_file(&self, path: &Path, mode: u32) -> Result<()> {
        self.dirs().create_file(path, mode)
    }
}

/// A character device node for [`FsRoot::make_char_devices`]: where it goes inside the root,
/// its `major:minor`, permission bits and group.
pub struct CharDevice<'a> {
    pub path: &'a Path,
    pub numbers: (u32, u32),
    pub mode: u32,
    pub gid: u32,
}

/// An open directory and its entries' names and types.
type Listing = (OwnedFd, Vec<(OsString, FileType)>);

/// Splits `path` into its parent directory and last component.
fn split(path: &Path) -> Result<(&Path, &OsStr)> {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => Ok((parent, name)),
        _ => bail!("{} has no file name", path.display()),
    }
}

/// Directories of one root, opened (and created when missing) for the `*at` calls on their
/// entries; the last one stays open while the next path is in it too, since a plan lists
/// runs of files, links and nodes per directory.
pub struct InDirs<'a> {
    root: &'a FsRoot,
    open: Option<(PathBuf, OwnedFd)>,
}

impl<'a> InDirs<'a> {
    /// The root these directories are in.
    pub fn root(&self) -> &'a FsRoot {
        self.root
    }

    /// The directory holding `path`, resolved inside the root (created when missing), and
    /// the name in it.
    fn parent_of<'p>(&mut self, path: &'p Path) -> Result<(&OwnedFd, &'p OsStr)> {
        let (parent, name) = split(path)?;
        let dir = match self.open.take() {
            Some((open, dir)) if open == parent => dir,
            _ => self.root.create_dir_all(parent)?,
        };
        let (_, dir) = self.open.insert((parent.to_path_buf(), dir));
        Ok((dir, name))
    }

    /// [`FsRoot::symlink`].
    pub fn symlink(&mut self, target: &Path, path: &Path) -> Result<()> {
        let root = self.root;
        let (dir, name) = self.parent_of(path)?;
        if let Ok(existing) = rustix::fs::readlinkat(dir, name, Vec::new()) {
            if existing.as_bytes() == target.as_os_str().as_bytes() {
                return Ok(());
            }
        }
        let temp = temp_name(name);
        let _ = rustix::fs::unlinkat(dir, &temp, AtFlags::empty());
        rustix::fs::symlinkat(target, dir, &temp).with_context(|| {
            format!(
                "cannot create a link at {} in {}",
                path.display(),
                root.path.display()
            )
        })?;
        let renamed = rustix::fs::renameat(dir, &temp, dir, name).with_context(|| {
            format!(
                "cannot replace {} in {}",
                path.display(),
                root.path.display()
            )
        });
        without_temp_on_error(dir, &temp, renamed)
    }

    /// [`FsRoot::create_file`].
    pub fn create_file(&mut self, path: &Path, mode: u32) -> Result<()> {
        let root = self.root;
        // One stat in the open directory: something other than a link is there (from the
        // image or an earlier start), or nothing is, and the file is made at once (a fresh
        // rootfs). A link, followed inside the root, takes the long way.
        let (dir, name) = self.parent_of(path)?;
        let mut missing = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) if FileType::from_raw_mode(stat.st_mode) != FileType::Symlink => return Ok(()),
            Err(Errno::NOENT) => true,
            _ => false,
        };
        let mut wanted = path.to_path_buf();
        for _ in 0..=MAX_LINK_HOPS {
            if !std::mem::take(&mut missing) && root.exists(&wanted)? {
                return Ok(());
            }
            let (dir, name) = self.parent_of(&wanted)?;
            match rustix::fs::openat(
                dir,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(mode),
            ) {
                Ok(_) => return Ok(()),
                Err(Errno::EXIST) => {}
                Err(err) => {
                    return Err(err).with_context(|| {
                        format!(
                            "cannot create {} in {}",
                            wanted.display(),
                            root.path.display()
                        )
                    })
                }
            }
            // Something is there but does not resolve: a dangling link, or a racing creator.
            let Ok(target) = rustix::fs::readlinkat(dir, name, Vec::new()) else {
                return Ok(());
            };
            wanted = split(&wanted)?.0.join(OsStr::from_bytes(target.as_bytes()));
        }
        bail!(
            "{} in {} is a symlink loop",
            path.display(),
            root.path.display()
        )
    }
}

/// `result`, after removing the temporary `temp` in `dir` if it is an error: a failed write
/// (a full disk) leaves no half-written file behind.
fn without_temp_on_error<T>(dir: &OwnedFd, temp: &Path, result: Result<T>) -> Result<T> {
    if result.is_err() {
        let _ = rustix::fs::unlinkat(dir, temp, AtFlags::empty());
    }
    result
}

fn temp_name(name: &OsStr) -> PathBuf {
    let mut temp = OsString::from(".");
    temp.push(name);
    temp.push(format!(".gpu-youki-{}", std::process::id()));
    PathBuf::from(temp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("gpu-youki-fsroot-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A scratch `base` holding `root/<inside>` and an `outside` directory beside the root.
    fn root_beside_outside(name: &str, inside: &str) -> (PathBuf, PathBuf, PathBuf) {
        let base = scratch(name);
        let (root_dir, outside) = (base.join("root"), base.join("outside"));
        std::fs::create_dir_all(root_dir.join(inside)).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        (base, root_dir, outside)
    }

    #[test]
    fn absolute_and_dotdot_links_stay_inside_the_root() {
        let (base, root_dir, outside) = root_beside_outside("escape", "usr/lib");
        // /etc -> <host path outside>, /lib -> ../../../../outside
        std::os::unix::fs::symlink(&outside, root_dir.join("etc")).unwrap();
        std::os::unix::fs::symlink("../../../../../../outside", root_dir.join("lib")).unwrap();
        let root = FsRoot::open(&root_dir).unwrap();
        root.write_file(Path::new("/etc/ld.so.cache"), b"cache")
            .unwrap();
        root.symlink(Path::new("libx.so.1.0"), Path::new("/lib/libx.so.1"))
            .unwrap();
        root.create_file(Path::new("/etc/target"), 0o644).unwrap();
        assert_eq!(
            std::fs::read_dir(&outside).unwrap().count(),
            0,
            "wrote outside the root"
        );
        // They landed inside, where the container sees them.
        assert_eq!(
            std::fs::read(
                root_dir
                    .join(outside.strip_prefix("/").unwrap())
                    .join("ld.so.cache")
            )
            .unwrap(),
            b"cache"
        );
        assert_eq!(
            root.read(Path::new("/etc/ld.so.cache")).unwrap().unwrap(),
            b"cache"
        );
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn writes_are_idempotent_and_links_replaced() {
        let base = scratch("idem");
        let root = FsRoot::open(&base).unwrap();
        assert!(root.write_file(Path::new("/a/b/file"), b"x").unwrap());
        assert!(!root.write_file(Path::new("/a/b/file"), b"x").unwrap());
        root.symlink(Path::new("one"), Path::new("/a/link"))
            .unwrap();
        root.symlink(Path::new("two"), Path::new("/a/link"))
            .unwrap();
        assert_eq!(
            std::fs::read_link(base.join("a/link")).unwrap(),
            PathBuf::from("two")
        );
        assert_eq!(
            std::fs::read_dir(base.join("a")).unwrap().count(),
            2,
            "temp files left"
        );
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn link_loops_are_refused() {
        let base = scratch("loop");
        std::os::unix::fs::symlink("b", base.join("a")).unwrap();
        std::os::unix::fs::symlink("a", base.join("b")).unwrap();
        let root = FsRoot::open(&base).unwrap();
        let err = root.read(Path::new("/a/x")).unwrap_err().to_string();
        assert!(err.contains("symlink loop"), "{err}");
        let err = root.create_file(Path::new("/a"), 0o644).unwrap_err();
        assert!(err.to_string().contains("symlink loop"), "{err}");
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_dangling_link_as_mount_target_is_created_inside_the_root() {
        let (base, root_dir, outside) = root_beside_outside("dangling", "lib");
        std::os::unix::fs::symlink(outside.join("victim"), root_dir.join("lib/abs")).unwrap();
        std::os::unix::fs::symlink("../../../../outside/victim2", root_dir.join("lib/rel"))
            .unwrap();
        let root = FsRoot::open(&root_dir).unwrap();
        root.create_file(Path::new("/lib/abs"), 0o644).unwrap();
        root.create_file(Path::new("/lib/rel"), 0o644).unwrap();
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        assert!(root_dir
            .join(outside.strip_prefix("/").unwrap())
            .join("victim")
            .is_file());
        assert!(root_dir.join("outside/victim2").is_file());
        assert!(root.exists(Path::new("/lib/abs")).unwrap());
        std::fs::remove_dir_all(&base).unwrap();
    }

    /// One `InDirs` for a run of links and mount targets across directories, as
    /// `prepare_rootfs` uses it: each lands in its own directory, whether the open one is
    /// kept or another is opened; a link to a directory outside is followed inside the root.
    #[test]
    fn a_run_of_paths_lands_in_the_right_directories() {
        let (base, root_dir, outside) = root_beside_outside("run", "a");
        std::os::unix::fs::symlink(&outside, root_dir.join("out")).unwrap();
        let root = FsRoot::open(&root_dir).unwrap();
        let mut dirs = root.dirs();
        dirs.symlink(Path::new("f1"), Path::new("/a/l1")).unwrap();
        dirs.create_file(Path::new("/a/f1"), 0o644).unwrap();
        dirs.create_file(Path::new("/b/c/f2"), 0o755).unwrap();
        dirs.symlink(Path::new("f2"), Path::new("/b/c/l2")).unwrap();
        dirs.create_file(Path::new("/a/f3"), 0o644).unwrap();
        dirs.create_file(Path::new("/out/f4"), 0o644).unwrap();
        let link = |p: &str| std::fs::read_link(root_dir.join(p)).unwrap();
        assert_eq!(link("a/l1"), Path::new("f1"));
        assert_eq!(link("b/c/l2"), Path::new("f2"));
        for file in ["a/f1", "b/c/f2", "a/f3"] {
            assert!(root_dir.join(file).is_file(), "{file}");
        }
        let mode = std::fs::metadata(root_dir.join("b/c/f2"))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o755
        );
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        assert!(root_dir
            .join(outside.strip_prefix("/").unwrap())
            .join("f4")
            .is_file());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
