//! Facts only the driver itself knows, asked in process through `dlopen` of the host's libcuda
//! (never by running a program), and only when a requirement needs them.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::request::Version;

/// The CUDA version the driver supports (`cuDriverGetVersion`, which needs no GPU access and no
/// `cuInit`), e.g. `13.0` for 13000.
pub fn cuda_driver_version(libcuda: &Path) -> Result<Version> {
    let path = CString::new(libcuda.as_os_str().as_bytes())?;
    // SAFETY: dlopen/dlsym with valid C strings; the symbol is called with its documented
    // signature `CUresult cuDriverGetVersion(int *)`, and the handle stays open meanwhile.
    unsafe {
        let handle = libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        if handle.is_null() {
            bail!("cannot load {}: {}", libcuda.display(), dl_error());
        }
        let symbol = libc::dlsym(handle, c"cuDriverGetVersion".as_ptr());
        let result = if symbol.is_null() {
            Err(anyhow::anyhow!(
                "{} has no cuDriverGetVersion",
                libcuda.display()
            ))
        } else {
            let get: extern "C" fn(*mut libc::c_int) -> libc::c_int = std::mem::transmute(symbol);
            let mut version: libc::c_int = 0;
            match get(&mut version) {
                0 if version > 0 => Ok(version),
                code => Err(anyhow::anyhow!(
                    "cuDriverGetVersion in {} failed with CUDA error {code}",
                    libcuda.display()
                )),
            }
        };
        libc::dlclose(handle);
        let version = result?;
        format!("{}.{}", version / 1000, (version % 1000) / 10)
            .parse()
            .context("cuDriverGetVersion returned an unreadable version")
    }
}

fn dl_error() -> String {
    // SAFETY: dlerror returns a thread-local C string or null.
    unsafe {
        let text = libc::dlerror();
        if text.is_null() {
            "unknown error".to_string()
        } else {
            std::ffi::CStr::from_ptr(text)
                .to_string_lossy()
                .into_owned()
        }
    }
}
