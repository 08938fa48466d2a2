//! A zero-shot task spec (eval/tasks/*.toml).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = spindle_eval::TaskSpec::from_toml(std::path::Path::new("task.toml"), text);
    }
});
