//! A model.safetensors: header, offsets, then every tensor it lists loaded as spindle loads it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = spindle_fuzz::file("model.safetensors", data);
    if let Ok(w) = spindle_model::Weights::open(&dir) {
        let names: Vec<String> = w.names().map(str::to_owned).collect();
        for n in names {
            if let Some(shape) = w.shape(&n).map(<[usize]>::to_vec) {
                let _ = w.load(&n, &shape, tch::Kind::Float, tch::Device::Cpu);
            }
        }
    }
});
