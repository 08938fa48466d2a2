//! config.json resolution (every architecture), then the block-count check against no weights.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = spindle_model::ModelConfig::from_json(std::path::Path::new("config.json"), text);
    }
});
