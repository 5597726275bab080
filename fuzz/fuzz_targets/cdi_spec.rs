//! A CDI spec file (any host user with write access to a spec directory, or a generator with a
//! bug, can put one there) through the reader: it must never panic, every refusal must be one
//! line, and whatever it accepts must be written back as text that reads back the same. The
//! first byte picks YAML or JSON.
#![no_main]

use gpu::cdi::spec::{Spec, SpecFormat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, text)) = data.split_first() else {
        return;
    };
    let format = if which % 2 == 0 {
        SpecFormat::Yaml
    } else {
        SpecFormat::Json
    };
    match Spec::parse(text, format) {
        Ok(spec) => {
            let written = spec
                .to_text(format)
                .expect("an accepted spec must be writable");
            let again = Spec::parse(written.as_bytes(), format)
                .expect("a spec gpu-youki wrote must read back");
            assert_eq!(again, spec, "the written spec reads back differently");
        }
        Err(err) => {
            let message = format!("{err:#}");
            assert!(!message.contains('\n'), "a multi-line error: {message}");
        }
    }
});
