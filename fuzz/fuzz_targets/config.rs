//! gpu-youki's TOML configuration through its parser: it must never panic, and every error
//! must be one line naming what is wrong.
#![no_main]

use gpu::config::GpuConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Err(err) = GpuConfig::parse(&text) {
        let message = format!("{err:#}");
        assert!(!message.contains('\n'), "a multi-line error: {message}");
    }
});
