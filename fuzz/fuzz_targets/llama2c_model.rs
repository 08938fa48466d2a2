//! A llama2.c checkpoint (`run.c`'s format, legacy and v1/v2 headers).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = spindle_fuzz::file("model.bin", data);
    let _ = spindle_model::llama2c::read_checkpoint(&dir.join("model.bin"));
});
