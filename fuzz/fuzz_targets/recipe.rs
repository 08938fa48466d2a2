//! A recipe file (`spindle prune --recipe`, `spindle_recipe.toml`): parsed, resolved, and, when
//! it resolves, written and read back to the same recipe.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(recipe) = spindle_recipe::Recipe::from_toml_str(text)
        && let Ok(resolved) = recipe.resolve()
    {
        let written = resolved.to_toml().expect("a resolved recipe is writable");
        let again = spindle_recipe::Recipe::from_toml_str(&written).and_then(|r| r.resolve()).expect("it reads back");
        assert_eq!(again, resolved, "the written recipe resolves to itself");
    }
});
