//! The driver's procfs files (`/proc/devices`, `version`, `gpus/*/information`, `mig-minors`,
//! `params`) through their parsers: none may panic, and every error must be one line. The
//! first byte picks the parser, so one corpus covers all.
#![no_main]

use gpu::procfs;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let error = match which % 5 {
        0 => procfs::parse_device_majors(&text).err(),
        1 => procfs::parse_driver_version(&text).err(),
        2 => procfs::parse_gpu_information(&text).err(),
        3 => procfs::parse_mig_minors(&text).err(),
        _ => match procfs::params_without_device_file_modification(&text) {
            Ok(Some(rewritten)) => {
                assert_eq!(
                    procfs::params_without_device_file_modification(&rewritten).ok(),
                    Some(None),
                    "rewritten params still modify device files"
                );
                None
            }
            Ok(None) => None,
            Err(err) => Some(err),
        },
    };
    if let Some(err) = error {
        let message = format!("{err:#}");
        assert!(!message.contains('\n'), "a multi-line error: {message}");
    }
});
