//! A llama2.c tokenizer.bin; the first two bytes (little-endian) give the vocabulary size it is
//! read for.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [a, b, rest @ ..] = data else { return };
    let vocab = usize::from(u16::from_le_bytes([*a, *b]));
    let dir = spindle_fuzz::file("tokenizer.bin", rest);
    if let Ok(tok) = spindle_model::llama2c::read_tokenizer(&dir.join("tokenizer.bin"), vocab) {
        let _ = tok.to_tokenizer_json();
    }
});
