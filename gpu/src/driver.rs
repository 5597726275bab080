//! Facts only the driver itself knows, asked in process through `dlopen` of the host's driver
//! libraries (never by running a program), and only when a request needs them: the CUDA
//! version from libcuda (for requirements), the MIG devices' indices and UUIDs from NVML (for
//! `GPU:MIG` and `MIG-<uuid>` selectors).

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use crate::inventory::MigIdentity;
use crate::request::Version;

/// A driver library opened with `dlopen`, closed when dropped.
struct Library {
    handle: *mut c_void,
    path: PathBuf,
}

impl Library {
    fn open(path: &Path) -> Result<Self> {
        let c_path = CString::new(path.as_os_str().as_bytes())?;
        // SAFETY: dlopen with a valid C string.
        let handle = unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            bail!("cannot load {}: {}", path.display(), dl_error());
        }
        Ok(Library {
            handle,
            path: path.to_path_buf(),
        })
    }

    /// The address of symbol `name`.
    fn symbol(&self, name: &CStr) -> Result<*mut c_void> {
        // SAFETY: the handle is open; name is a valid C string.
        let symbol = unsafe { libc::dlsym(self.handle, name.as_ptr()) };
        if symbol.is_null() {
            bail!("{} has no {}", self.path.display(), name.to_string_lossy());
        }
        Ok(symbol)
    }
}

impl Drop for Library {
    fn drop(&mut self) {
        // SAFETY: the handle came from dlopen and is closed once.
        unsafe { libc::dlclose(self.handle) };
    }
}

/// Casts a symbol address to the function type the caller declares.
macro_rules! function {
    ($library:expr, $name:literal, $type:ty) => {{
        let symbol = $library.symbol($name)?;
        // SAFETY: the caller gives the symbol's documented C signature.
        unsafe { std::mem::transmute::<*mut c_void, $type>(symbol) }
    }};
}

/// The CUDA version the driver supports (`cuDriverGetVersion`, which needs no GPU access and no
/// `cuInit`), e.g. `13.0` for 13000.
pub fn cuda_driver_version(libcuda: &Path) -> Result<Version> {
    let library = Library::open(libcuda)?;
    let get = function!(
        library,
        c"cuDriverGetVersion",
        extern "C" fn(*mut c_int) -> c_int
    );
    let mut version: c_int = 0;
    let version = match get(&mut version) {
        0 if version > 0 => version,
        code => bail!(
            "cuDriverGetVersion in {} failed with CUDA error {code}",
            libcuda.display()
        ),
    };
    format!("{}.{}", version / 1000, (version % 1000) / 10)
        .parse()
        .context("cuDriverGetVersion returned an unreadable version")
}

/// NVML's `nvmlDevice_t`.
type NvmlDevice = *mut c_void;

/// `NVML_ERROR_NOT_FOUND`: no MIG device at that index.
const NVML_ERROR_NOT_FOUND: c_int = 6;
/// `NVML_DEVICE_MIG_ENABLE`: the current MIG mode of a GPU in MIG mode.
const NVML_DEVICE_MIG_ENABLE: c_uint = 1;
/// `NVML_DEVICE_UUID_V2_BUFFER_SIZE`.
const UUID_BUFFER: usize = 96;

/// Every MIG device NVML reports (`nvmlInit_v2` … `nvmlShutdown`): its parent's UUID, its
/// index on the parent, its UUID and its GPU and compute instance ids.
pub fn nvml_mig_identities(libnvml: &Path) -> Result<Vec<MigIdentity>> {
    let library = Library::open(libnvml)?;
    let init = function!(library, c"nvmlInit_v2", extern "C" fn() -> c_int);
    let shutdown = function!(library, c"nvmlShutdown", extern "C" fn() -> c_int);
    let error_string = function!(
        library,
        c"nvmlErrorString",
        extern "C" fn(c_int) -> *const c_char
    );
    let check = |call: &str, code: c_int| -> Result<()> {
        if code == 0 {
            return Ok(());
        }
        let text = error_string(code);
        let text = if text.is_null() {
            "unknown error".into()
        } else {
            // SAFETY: nvmlErrorString returns a static C string.
            unsafe { CStr::from_ptr(text) }.to_string_lossy()
        };
        Err(anyhow!(
            "{call} in {} failed: {text} (NVML error {code})",
            libnvml.display()
        ))
    };
    check("nvmlInit_v2", init())?;
    let identities = list_mig_devices(&library, &check);
    shutdown();
    identities
}

fn list_mig_devices(
    library: &Library,
    check: &dyn Fn(&str, c_int) -> Result<()>,
) -> Result<Vec<MigIdentity>> {
    let count = function!(
        library,
        c"nvmlDeviceGetCount_v2",
        extern "C" fn(*mut c_uint) -> c_int
    );
    let by_index = function!(
        library,
        c"nvmlDeviceGetHandleByIndex_v2",
        extern "C" fn(c_uint, *mut NvmlDevice) -> c_int
    );
    let mig_mode = function!(
        library,
        c"nvmlDeviceGetMigMode",
        extern "C" fn(NvmlDevice, *mut c_uint, *mut c_uint) -> c_int
    );
    let max_mig = function!(
        library,
        c"nvmlDeviceGetMaxMigDeviceCount",
        extern "C" fn(NvmlDevice, *mut c_uint) -> c_int
    );
    let mig_by_index = function!(
        library,
        c"nvmlDeviceGetMigDeviceHandleByIndex",
        extern "C" fn(NvmlDevice, c_uint, *mut NvmlDevice) -> c_int
    );
    let get_uuid = function!(
        library,
        c"nvmlDeviceGetUUID",
        extern "C" fn(NvmlDevice, *mut c_char, c_uint) -> c_int
    );
    let gi_id = function!(
        library,
        c"nvmlDeviceGetGpuInstanceId",
        extern "C" fn(NvmlDevice, *mut c_uint) -> c_int
    );
    let ci_id = function!(
        library,
        c"nvmlDeviceGetComputeInstanceId",
        extern "C" fn(NvmlDevice, *mut c_uint) -> c_int
    );
    let uuid_of = |device: NvmlDevice| -> Result<String> {
        let mut buffer = [0 as c_char; UUID_BUFFER];
        check(
            "nvmlDeviceGetUUID",
            get_uuid(device, buffer.as_mut_ptr(), UUID_BUFFER as c_uint),
        )?;
        // SAFETY: NVML wrote a NUL-terminated string into the buffer.
        Ok(unsafe { CStr::from_ptr(buffer.as_ptr()) }
            .to_string_lossy()
            .into_owned())
    };
    let mut gpus: c_uint = 0;
    check("nvmlDeviceGetCount_v2", count(&mut gpus))?;
    let mut identities = Vec::new();
    for gpu in 0..gpus {
        let mut parent: NvmlDevice = std::ptr::null_mut();
        check("nvmlDeviceGetHandleByIndex_v2", by_index(gpu, &mut parent))?;
        let (mut current, mut pending): (c_uint, c_uint) = (0, 0);
        if mig_mode(parent, &mut current, &mut pending) != 0 || current != NVML_DEVICE_MIG_ENABLE {
            continue; // not MIG capable, or not in MIG mode
        }
        let mut slots: c_uint = 0;
        check(
            "nvmlDeviceGetMaxMigDeviceCount",
            max_mig(parent, &mut slots),
        )?;
        let parent_uuid = uuid_of(parent)?;
        for index in 0..slots {
            let mut device: NvmlDevice = std::ptr::null_mut();
            match mig_by_index(parent, index, &mut device) {
                NVML_ERROR_NOT_FOUND => continue,
                code => check("nvmlDeviceGetMigDeviceHandleByIndex", code)?,
            }
            let (mut gpu_instance, mut compute_instance) = (0, 0);
            check(
                "nvmlDeviceGetGpuInstanceId",
                gi_id(device, &mut gpu_instance),
            )?;
            check(
                "nvmlDeviceGetComputeInstanceId",
                ci_id(device, &mut compute_instance),
            )?;
            identities.push(MigIdentity {
                parent_uuid: parent_uuid.clone(),
                index,
                uuid: uuid_of(device)?,
                gpu_instance,
                compute_instance,
            });
        }
    }
    Ok(identities)
}

fn dl_error() -> String {
    // SAFETY: dlerror returns a thread-local C string or null.
    unsafe {
        let text = libc::dlerror();
        if text.is_null() {
            "unknown error".to_string()
        } else {
            CStr::from_ptr(text).to_string_lossy().into_owned()
        }
    }
}
