//! The data folder's SHA256SUMS list.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = spindle_data::parse_sums(std::path::Path::new("SHA256SUMS"), text);
    }
});
