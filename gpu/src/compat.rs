//! CUDA forward compatibility: a CUDA image may ship a newer libcuda (and its companions) in
//! `/usr/local/cuda/compat`, to run on an older host driver. Those libraries are image files:
//! they are read inside the rootfs (never mounted from it, never trusted beyond their names and
//! ELF headers) and, when the toolkit's rules say they are usable with the host's driver, put
//! first in the container's ld.so.cache so `libcuda.so.1` resolves to them.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rustix::fs::{Mode, OFlags};
use serde::{Deserialize, Serialize};

use crate::fsroot::FsRoot;
use crate::ldcache::{LdCacheEntry, NATIVE_FLAGS};
use crate::plan::{LibraryCache, PlannedLink};
use crate::request::Version;

/// Where CUDA images put the forward-compatibility libraries.
pub const COMPAT_DIR: &str = "/usr/local/cuda/compat";

/// The ELF section of a compat libcuda that says which drivers it supports.
pub const NOTE_SECTION: &str = ".note.cuda.fwd_compatibility";

/// The forward-compatibility libraries an image ships.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CudaCompat {
    /// Their directory inside the rootfs.
    pub dir: PathBuf,
    /// The compat libcuda's version, from its file name (`libcuda.so.575.51.03`).
    pub libcuda_version: String,
    /// The drivers its ELF note lists, when it has the note.
    pub note: Option<ForwardCompatNote>,
    /// Every `lib*.so.*` regular file of the directory.
    pub libraries: Vec<CompatLibrary>,
}

/// The JSON payload of [`NOTE_SECTION`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardCompatNote {
    /// The CUDA version of the compat libcuda.
    #[serde(rename = "CUDA version")]
    pub cuda_version: String,
    /// The driver branches (majors) it runs on.
    #[serde(rename = "driver", default)]
    pub drivers: Vec<u64>,
}

/// One library of the compat directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CompatLibrary {
    /// Its file name.
    pub file: String,
    /// Its SONAME (the file name when it has none).
    pub soname: String,
    /// Whether the directory has an entry named like the SONAME (the image's link).
    pub soname_present: bool,
}

impl CudaCompat {
    /// Reads the compat directory inside `rootfs`; `None` unless it holds exactly one
    /// `libcuda.so.X.Y[.Z]` regular file (the toolkit's condition).
    pub fn read(rootfs: &FsRoot) -> Result<Option<CudaCompat>> {
        let dir = Path::new(COMPAT_DIR);
        let names: Vec<String> = rootfs
            .read_dir(dir)?
            .into_iter()
            .filter_map(|n| n.into_string().ok())
            .collect();
        let mut libraries = Vec::new();
        let mut libcuda = Vec::new();
        for name in &names {
            if !name.starts_with("lib") || !name.contains(".so.") {
                continue;
            }
            let path = dir.join(name);
            // Only regular files are candidates, not links (the image's SONAME links).
            let Some(entry) =
                rootfs.open_at(&path, OFlags::PATH | OFlags::NOFOLLOW, Mode::empty())?
            else {
                continue;
            };
            if rustix::fs::fstat(&entry)?.st_mode & libc::S_IFMT != libc::S_IFREG {
                continue;
            }
            let Some(fd) =
                rootfs.open_at(&path, OFlags::RDONLY | OFlags::NOFOLLOW, Mode::empty())?
            else {
                continue;
            };
            let file = std::fs::File::from(fd);
            let label = rootfs.path().join(path.strip_prefix("/").unwrap_or(&path));
            let soname = crate::elf::soname_of_file(file.try_clone()?, &label)?
                .unwrap_or_else(|| name.clone());
            if let Some(version) = name.strip_prefix("libcuda.so.") {
                if version.parse::<Version>().is_ok() && version.contains('.') {
                    let note = crate::elf::nvidia_note(file, NOTE_SECTION, &label)?;
                    libcuda.push((version.to_string(), note, label.clone()));
                }
            }
            libraries.push(CompatLibrary {
                file: name.clone(),
                soname_present: names.contains(&soname),
                soname,
            });
        }
        let Ok([(version, note, label)]) = <[_; 1]>::try_from(libcuda) else {
            return Ok(None);
        };
        let note = note
            .map(|payload| {
                let text = payload.split(|&b| b == 0).next().unwrap_or_default();
                serde_json::from_slice::<ForwardCompatNote>(text)
                    .with_context(|| format!("invalid {NOTE_SECTION} in {}", label.display()))
            })
            .transpose()?;
        libraries.sort_by(|a, b| a.file.cmp(&b.file));
        Ok(Some(CudaCompat {
            dir: dir.to_path_buf(),
            libcuda_version: version,
            note,
            libraries,
        }))
    }

    /// Whether the libraries are used with host driver `host_version` (the toolkit's
    /// `enable-cuda-compat` rules): with the ELF note, iff the host driver's major is listed and
    /// the compat libcuda is newer than the host driver; without it, iff its major is greater.
    pub fn usable_with(&self, host_version: &str) -> bool {
        let (Ok(host), Ok(compat)) = (
            host_version.parse::<Version>(),
            self.libcuda_version.parse::<Version>(),
        ) else {
            return false;
        };
        let major = |v: &Version| v.components().first().copied().unwrap_or(0);
        match &self.note {
            Some(note) => note.drivers.contains(&major(&host)) && compat > host,
            None => major(&host) < major(&compat),
        }
    }

    /// The compat directory first in the drop-in, and a cache entry per library.
    pub fn library_cache(&self) -> LibraryCache {
        LibraryCache {
            dirs: vec![self.dir.clone()],
            entries: self
                .libraries
                .iter()
                .map(|lib| LdCacheEntry::new(&lib.soname, self.dir.join(&lib.soname), NATIVE_FLAGS))
                .collect(),
        }
    }

    /// SONAME links the directory lacks (ldconfig would create them).
    pub fn missing_links(&self) -> Vec<PlannedLink> {
        self.libraries
            .iter()
            .filter(|lib| !lib.soname_present)
            .map(|lib| PlannedLink {
                path: self.dir.join(&lib.soname),
                target: PathBuf::from(&lib.file),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compat(version: &str, note: Option<&[u64]>) -> CudaCompat {
        CudaCompat {
            dir: PathBuf::from(COMPAT_DIR),
            libcuda_version: version.to_string(),
            note: note.map(|drivers| ForwardCompatNote {
                cuda_version: "12.9".to_string(),
                drivers: drivers.to_vec(),
            }),
            libraries: Vec::new(),
        }
    }

    #[test]
    fn the_toolkits_rules_decide_use() {
        // Without the note: a greater major only.
        assert!(compat("575.51.03", None).usable_with("550.54.15"));
        assert!(!compat("575.51.03", None).usable_with("575.10.01"));
        assert!(!compat("550.54.15", None).usable_with("575.51.03"));
        // With it: the host branch must be listed and the compat library newer.
        assert!(compat("575.51.03", Some(&[535, 550])).usable_with("550.54.15"));
        assert!(!compat("575.51.03", Some(&[535])).usable_with("550.54.15"));
        assert!(compat("575.51.03", Some(&[575])).usable_with("575.10.01"));
        assert!(!compat("575.51.03", Some(&[575])).usable_with("575.64.03"));
        assert!(!compat("575.51.03", None).usable_with("not-a-version"));
    }
}
