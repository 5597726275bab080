//! A container's environment (one `KEY=VALUE` item per line) through the request parser: it
//! must never panic, and every refusal must be one line.
#![no_main]

use gpu::request::GpuRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let env: Vec<String> = text.split('\n').map(str::to_string).collect();
    if let Err(err) = GpuRequest::from_env(&env) {
        let message = format!("{err:#}");
        assert!(!message.contains('\n'), "a multi-line error: {message}");
    }
});
