//! Bytes an image offers as `/etc/ld.so.cache`: the reader must never panic, and whatever it
//! accepts must be written as a cache that reads back as the same entries in ldconfig's order,
//! and is written again byte for byte the same.
#![no_main]

use gpu::ldcache::{ldconfig_order, LdCache};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(cache) = LdCache::parse(data) else {
        return;
    };
    let Ok(bytes) = cache.to_bytes() else {
        return;
    };
    let again = LdCache::parse(&bytes).expect("a cache gpu-youki wrote must read back");
    let mut expected = cache.entries.clone();
    expected.sort_by(ldconfig_order);
    assert_eq!(
        again.entries, expected,
        "the written cache reads back differently"
    );
    assert_eq!(
        again.generator, cache.generator,
        "the generator text changed"
    );
    assert_eq!(again.to_bytes().unwrap(), bytes, "writing is not stable");
});
