//! A GGUF file: header, metadata, tensor infos, then every tensor dequantized.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = spindle_fuzz::file("m.gguf", data);
    if let Ok(g) = spindle_model::gguf::GgufFile::open(&dir.join("m.gguf")) {
        let names: Vec<String> = g.tensors().iter().map(|t| t.name.clone()).collect();
        for n in names {
            let _ = g.dequantize(&n);
        }
    }
});
