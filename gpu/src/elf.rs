//! The DT_SONAME of a shared library, read from its ELF dynamic section. Only the headers, the
//! dynamic section and its string table are read, not the whole (often 50 MB) library.

use std::fs::File;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use object::elf;
use object::read::elf::{Dyn, FileHeader, SectionHeader};
use object::read::ReadCache;
use object::Endianness;

/// The SONAME of the ELF shared library at `path`, `None` when it has none.
pub fn soname(path: &Path) -> Result<Option<String>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    soname_of_file(file, path)
}

/// The SONAME of an open ELF file (opened inside a rootfs, say); `label` names it in errors.
pub fn soname_of_file(file: File, label: &Path) -> Result<Option<String>> {
    let data = ReadCache::new(file);
    soname_from(&data)
        .with_context(|| format!("cannot read the ELF dynamic section of {}", label.display()))
}

/// The payload of the ELF note `NVIDIA Corporation` in section `section` of an open file (the
/// CUDA forward-compatibility note of a compat libcuda), `None` when there is none.
pub fn nvidia_note(file: File, section: &str, label: &Path) -> Result<Option<Vec<u8>>> {
    let data = ReadCache::new(file);
    let note = match object::FileKind::parse(&data)? {
        object::FileKind::Elf64 => note_of::<elf::FileHeader64<Endianness>>(&data, section),
        object::FileKind::Elf32 => note_of::<elf::FileHeader32<Endianness>>(&data, section),
        other => Err(anyhow!("not an ELF file ({other:?})")),
    };
    note.with_context(|| format!("cannot read ELF section {section} of {}", label.display()))
}

fn note_of<H: FileHeader<Endian = Endianness>>(
    data: &ReadCache<File>,
    section: &str,
) -> Result<Option<Vec<u8>>> {
    let header = H::parse(data)?;
    let endian = header.endian()?;
    let sections = header.sections(endian, data)?;
    let Some((_, found)) = sections.section_by_name(endian, section.as_bytes()) else {
        return Ok(None);
    };
    let Some(mut notes) = found.notes(endian, data)? else {
        return Ok(None);
    };
    while let Some(note) = notes.next()? {
        if note.name() == b"NVIDIA Corporation" {
            return Ok(Some(note.desc().to_vec()));
        }
    }
    Ok(None)
}

fn soname_from(data: &ReadCache<File>) -> Result<Option<String>> {
    let kind = object::FileKind::parse(data)?;
    match kind {
        object::FileKind::Elf64 => soname_of::<elf::FileHeader64<Endianness>>(data),
        object::FileKind::Elf32 => soname_of::<elf::FileHeader32<Endianness>>(data),
        other => Err(anyhow!("not an ELF file ({other:?})")),
    }
}

fn soname_of<H: FileHeader<Endian = Endianness>>(data: &ReadCache<File>) -> Result<Option<String>> {
    let header = H::parse(data)?;
    let endian = header.endian()?;
    let sections = header.sections(endian, data)?;
    for section in sections.iter() {
        let Some((entries, link)) = section.dynamic(endian, data)? else {
            continue;
        };
        let strings = sections.strings(endian, data, link)?;
        for entry in entries {
            if entry.tag32(endian) == Some(elf::DT_SONAME) {
                let offset: u64 = entry.d_val(endian).into();
                let name = u32::try_from(offset)
                    .ok()
                    .and_then(|offset| strings.get(offset).ok())
                    .ok_or_else(|| anyhow!("DT_SONAME points outside the string table"))?;
                return Ok(Some(String::from_utf8_lossy(name).into_owned()));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_soname_of_the_host_libc() {
        // Debian 12's libc: a real, large ELF with a SONAME.
        let libc = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
        assert_eq!(soname(libc).unwrap().as_deref(), Some("libc.so.6"));
    }

    #[test]
    fn executables_have_no_soname_and_text_is_refused() {
        assert_eq!(soname(Path::new("/bin/busybox")).unwrap(), None);
        let err = soname(Path::new("/etc/passwd")).unwrap_err();
        assert!(format!("{err:#}").contains("/etc/passwd"));
    }
}
