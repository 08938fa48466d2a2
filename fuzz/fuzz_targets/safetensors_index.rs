//! A model.safetensors.index.json beside one valid shard.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = spindle_fuzz::file("model.safetensors.index.json", data);
    let t = tch::Tensor::from_slice(&[1.0f32, 2.0]);
    if spindle_model::write_safetensors(&dir.join("model-00001-of-00001.safetensors"), &[("a.weight".into(), t)]).is_ok() {
        if let Ok(w) = spindle_model::Weights::open(&dir) {
            let _ = w.load("a.weight", &[2], tch::Kind::Float, tch::Device::Cpu);
        }
    }
});
