//! What the build script tells a newcomer whose toolchain lacks the Wasm
//! target: shared by `build.rs` and a unit test of the host.

/// One clear line when the guest build failed for want of `wasm32-wasip2`.
pub fn missing_target_message(stderr: &str) -> Option<&'static str> {
    (stderr.contains("wasm32-wasip2") && stderr.contains("target may not be installed"))
        .then_some("the Wasm plugins need the wasm32-wasip2 target: run `rustup target add wasm32-wasip2`")
}
