//! The driver's installed files (libraries with their SONAMEs, binaries, firmware) change only
//! when a driver is installed, yet finding them means listing library directories and reading
//! every library's ELF headers, the largest part of reading the inventory. [`DriverFileCache`]
//! keeps what was found in one file per driver configuration, shared by all container starts,
//! and uses it only while every file it names, every directory they are in and every directory
//! that was searched still has the identity (device, inode, size, times) it had when the files
//! were found: installing or removing a driver changes them, and the next start finds the files again and replaces the cache once,
//! atomically, however many starts race for it.

use std::fs::{self, File};
use std::hash::{Hash, Hasher};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::atomic_file::write_atomically;
use crate::config::DriverConfig;
use crate::inventory::DriverFile;

/// Bumped whenever what is cached, or how it is found, changes.
const FORMAT: u32 = 1;

/// Where the cache files live; `None` makes every read find the files again.
#[derive(Debug, Clone)]
pub struct DriverFileCache {
    dir: PathBuf,
}

/// One cache file: the configuration it is for, the identities it was found with, the files.
#[derive(Serialize, Deserialize)]
struct CachedFiles {
    key: String,
    identities: Vec<FileIdentity>,
    files: Vec<DriverFile>,
}

/// What changes when a file is replaced, rewritten or removed, or a directory's entries change.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct FileIdentity {
    path: PathBuf,
    /// `None` for a path that did not exist.
    stat: Option<[i64; 7]>,
}

impl FileIdentity {
    fn of(path: &Path) -> Self {
        let stat = fs::metadata(path).ok().map(|m| {
            [
                m.dev() as i64,
                m.ino() as i64,
                m.size() as i64,
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec(),
            ]
        });
        FileIdentity {
            path: path.to_path_buf(),
            stat,
        }
    }
}

impl DriverFileCache {
    /// A cache in `dir`, created (mode 0700) when first written.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DriverFileCache { dir: dir.into() }
    }

    /// The installed files of the driver `version` under `roots`: from the cache while it is
    /// current, else from `find`, whose result replaces the cache. `find` returns the files
    /// and the host directories it searched, which are then watched for new files. Concurrent
    /// callers that find the cache stale run `find` once between them: the others wait and read
    /// its result. A cache that cannot be read or written is only a warning; the files are then
    /// found anew.
    pub fn driver_files(
        &self,
        roots: &DriverConfig,
        version: &str,
        find: impl FnOnce() -> Result<(Vec<DriverFile>, Vec<PathBuf>)>,
    ) -> Result<Vec<DriverFile>> {
        let key = format!("format {FORMAT}\nversion {version}\n{roots:?}");
        let mut hasher = std::hash::DefaultHasher::new();
        key.hash(&mut hasher);
        let path = self
            .dir
            .join(format!("driver-files-{:016x}.json", hasher.finish()));
        if let Some(files) = current(&path, &key) {
            return Ok(files);
        }
        let lock = match self.lock(&path) {
            Ok(lock) => lock,
            Err(err) => {
                tracing::warn!("driver file cache not used: {err:#}");
                return Ok(find()?.0);
            }
        };
        if let Some(files) = current(&path, &key) {
            return Ok(files);
        }
        let (files, searched) = find()?;
        let cached = CachedFiles {
            identities: identities(&files, &roots.root, &searched),
            key,
            files,
        };
        let written = serde_json::to_vec(&cached)
            .map_err(anyhow::Error::from)
            .and_then(|json| write_atomically(&path, &json, 0o600));
        match written {
            Ok(()) => tracing::debug!("rebuilt the driver file cache {}", path.display()),
            Err(err) => tracing::warn!("driver file cache not written: {err:#}"),
        }
        drop(lock);
        Ok(cached.files)
    }

    /// An exclusive lock on `<cache file>.lock`, held until the returned file is dropped.
    fn lock(&self, path: &Path) -> Result<File> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        let lock_path = path.with_extension("lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .with_context(|| format!("cannot open {}", lock_path.display()))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .with_context(|| format!("cannot lock {}", lock_path.display()))?;
        Ok(lock)
    }
}

/// The cached files at `path` if the file is for `key` and every identity still holds.
fn current(path: &Path, key: &str) -> Option<Vec<DriverFile>> {
    let text = fs::read(path).ok()?;
    let cached: CachedFiles = serde_json::from_slice(&text).ok()?;
    let holds = cached.key == key
        && (cached.identities.iter()).all(|identity| FileIdentity::of(&identity.path) == *identity);
    holds.then_some(cached.files)
}

/// The identities found files depend on: the driver root's ld.so.cache (which names the library
/// directories), the searched directories, each file and each directory holding one.
fn identities(files: &[DriverFile], driver_root: &Path, searched: &[PathBuf]) -> Vec<FileIdentity> {
    let mut paths = vec![driver_root.join("etc/ld.so.cache")];
    paths.extend(searched.iter().cloned());
    for file in files {
        for path in [Some(file.host_path.as_path()), file.host_path.parent()]
            .into_iter()
            .flatten()
        {
            if !paths.iter().any(|p| p == path) {
                paths.push(path.to_path_buf());
            }
        }
    }
    paths.iter().map(|p| FileIdentity::of(p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::DriverPart;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn library(dir: &Path, name: &str) -> DriverFile {
        DriverFile {
            part: DriverPart::ComputeLibrary,
            host_path: dir.join(name),
            name: name.to_string(),
            container_path: None,
            soname: Some("libcuda.so.1".to_string()),
            library_subdir: None,
        }
    }

    /// A driver root with `<lib>/libcuda.so.1.0`, and a cache beside it.
    fn driver_tree(temp: &Path, lib: &str) -> (PathBuf, DriverFileCache) {
        let lib = temp.join(lib);
        fs::create_dir_all(&lib).unwrap();
        fs::write(lib.join("libcuda.so.1.0"), "one").unwrap();
        (lib, DriverFileCache::new(temp.join("cache")))
    }

    fn driver(root: &Path) -> DriverConfig {
        DriverConfig {
            root: root.to_path_buf(),
            ..DriverConfig::default()
        }
    }

    #[test]
    fn finds_once_then_again_after_the_driver_changes() {
        let temp = tempfile::tempdir().unwrap();
        let (lib, cache) = driver_tree(temp.path(), "usr/lib");
        let finds = AtomicUsize::new(0);
        let read = || {
            cache
                .driver_files(&driver(temp.path()), "1.0", || {
                    finds.fetch_add(1, Ordering::SeqCst);
                    let searched = vec![lib.clone(), temp.path().join("usr/bin")];
                    Ok((vec![library(&lib, "libcuda.so.1.0")], searched))
                })
                .unwrap()
        };
        assert_eq!(read(), vec![library(&lib, "libcuda.so.1.0")]);
        assert_eq!(read(), vec![library(&lib, "libcuda.so.1.0")]);
        assert_eq!(finds.load(Ordering::SeqCst), 1, "the second read must hit");

        // A driver install replaces the library (new inode).
        fs::remove_file(lib.join("libcuda.so.1.0")).unwrap();
        fs::write(lib.join("libcuda.so.1.0"), "two").unwrap();
        read();
        assert_eq!(
            finds.load(Ordering::SeqCst),
            2,
            "a replaced library must be found again"
        );
        // A new file in a directory that holds driver files.
        fs::write(lib.join("libnvidia-ml.so.1.0"), "new").unwrap();
        read();
        assert_eq!(finds.load(Ordering::SeqCst), 3, "a new file must be found");
        // A searched directory that appears.
        fs::create_dir_all(temp.path().join("usr/bin")).unwrap();
        read();
        assert_eq!(
            finds.load(Ordering::SeqCst),
            4,
            "a new searched directory must be read"
        );
        read();
        assert_eq!(finds.load(Ordering::SeqCst), 4);
        // Another version, or another configuration, is another cache.
        cache
            .driver_files(&driver(temp.path()), "2.0", || {
                finds.fetch_add(1, Ordering::SeqCst);
                Ok((Vec::new(), Vec::new()))
            })
            .unwrap();
        assert_eq!(finds.load(Ordering::SeqCst), 5);
        read();
        assert_eq!(finds.load(Ordering::SeqCst), 5, "both caches stay");
    }

    #[test]
    fn concurrent_stale_reads_find_the_files_once() {
        let temp = tempfile::tempdir().unwrap();
        let (lib, cache) = driver_tree(temp.path(), "lib");
        let finds = AtomicUsize::new(0);
        let barrier = std::sync::Barrier::new(8);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    barrier.wait();
                    let files = cache
                        .driver_files(&driver(temp.path()), "1.0", || {
                            finds.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(50));
                            Ok((vec![library(&lib, "libcuda.so.1.0")], Vec::new()))
                        })
                        .unwrap();
                    assert_eq!(files, vec![library(&lib, "libcuda.so.1.0")]);
                });
            }
        });
        assert_eq!(finds.load(Ordering::SeqCst), 1);
        let names: Vec<_> = fs::read_dir(temp.path().join("cache"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !n.ends_with(".lock"))
            .collect();
        assert_eq!(
            names.len(),
            1,
            "one cache file and no temporary ones: {names:?}"
        );
    }

    #[test]
    fn a_damaged_or_unwritable_cache_only_costs_a_new_search() {
        let temp = tempfile::tempdir().unwrap();
        let cache_dir = temp.path().join("cache");
        let cache = DriverFileCache::new(&cache_dir);
        cache
            .driver_files(&driver(temp.path()), "1.0", || Ok((Vec::new(), Vec::new())))
            .unwrap();
        for entry in fs::read_dir(&cache_dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                fs::write(&path, "{ not json").unwrap();
            }
        }
        let found = cache
            .driver_files(&driver(temp.path()), "1.0", || {
                Ok((vec![library(temp.path(), "x")], Vec::new()))
            })
            .unwrap();
        assert_eq!(found.len(), 1);

        let blocked = DriverFileCache::new(temp.path().join("a-file/cache"));
        fs::write(temp.path().join("a-file"), "").unwrap();
        let found = blocked
            .driver_files(&driver(temp.path()), "1.0", || Ok((Vec::new(), Vec::new())))
            .unwrap();
        assert!(found.is_empty());
    }
}
