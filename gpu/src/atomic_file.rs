//! Host files gpu-youki owns as a whole (engine configurations, CDI specs, its driver file
//! cache): replaced by rename, so that a reader sees the old content or the new, never a part.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};

/// Writes `path` atomically with permission bits `mode`, creating its directory: a temporary
/// dot file beside it (another extension, so readers of the directory such as CDI skip it),
/// synced and renamed over it. Nothing is left behind on failure.
pub fn write_atomically(path: &Path, content: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = path
        .file_name()
        .with_context(|| format!("{} names no file", path.display()))?;
    let temp = dir.join(format!(".{}.gpu-youki-new", name.to_string_lossy()));
    let write = || -> std::io::Result<()> {
        let mut file = fs::File::create(&temp)?;
        file.write_all(content)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        fs::rename(&temp, path)
    };
    write().map_err(|err| {
        let _ = fs::remove_file(&temp);
        anyhow::Error::new(err).context(format!("cannot write {}", path.display()))
    })
}
