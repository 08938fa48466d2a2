// Build-script logic shared by every crate that links libtorch and produces executables
// (included with `include!` by their build.rs).
//
// With the `cuda` feature, libtorch_cuda must stay linked: rustc passes `--as-needed`, and since
// no symbol of libtorch_cuda is referenced directly, the linker would drop it and the binary would
// never see a GPU. `rustc-link-arg` applies to this package's own binaries and tests only, hence a
// build script in each such package. (A missing libtorch is caught earlier, by
// build/rustc-guard.)
fn main() {
    println!("cargo:rerun-if-changed=../../build/libtorch.rs");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        let libtorch = std::env::var("LIBTORCH").unwrap_or_default();
        let lib = std::path::Path::new(&libtorch).join("lib");
        println!("cargo:rustc-link-search=native={}", lib.display());
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
