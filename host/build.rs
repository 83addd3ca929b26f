//! Compiles the bundled Wasm plugins and the test guests for `wasm32-wasip2`,
//! so `cargo run` and `cargo test` always use plugins built from this tree.
//!
//! The guests are built by a nested cargo into their own target folder (as
//! wasmtime builds its test programs), and embedded with `include_bytes!`.

#[path = "build_support.rs"]
mod build_support;

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// (kind, plugin name, cargo package) of every plugin bundled into the binary.
const BUNDLED: &[(&str, &str, &str)] = &[
    ("adapter", "openai", "switchboard-adapter-openai"),
    ("adapter", "anthropic", "switchboard-adapter-anthropic"),
    ("adapter", "gemini", "switchboard-adapter-gemini"),
    ("policy", "priority", "switchboard-policy-priority"),
    ("policy", "weighted", "switchboard-policy-weighted"),
    ("policy", "cost", "switchboard-policy-cost"),
    ("policy", "latency", "switchboard-policy-latency"),
];

/// Guests used only by the tests.
const TEST_GUESTS: &[&str] = &[
    "switchboard-test-misbehave",
    "switchboard-test-future",
    "switchboard-test-forbidden",
    "switchboard-test-legacy",
    "switchboard-example-cheapest",
];

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap();
    println!(
        "cargo:rerun-if-changed={}",
        manifest.join("build_support.rs").display()
    );
    for watched in [
        "wit",
        "guest",
        "plugins",
        "policies",
        "tests/guests",
        "examples/cheapest-policy",
        "Cargo.lock",
        // The plugins' build profile.
        "Cargo.toml",
        // The plugins' build flags (Wasm SIMD).
        ".cargo/config.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let wasm_target = out.join("wasm");
    build_guests(root, &wasm_target);

    let dist = wasm_target.join("wasm32-wasip2").join("plugin");
    let mut code = String::new();
    for kind in ["adapter", "policy"] {
        writeln!(code, "pub const {}: &[(&str, &[u8])] = &[", kind.to_uppercase()).unwrap();
        for (_, name, package) in BUNDLED.iter().filter(|(k, _, _)| *k == kind) {
            let file = dist.join(format!("{}.wasm", package.replace('-', "_")));
            writeln!(
                code,
                "    ({name:?}, include_bytes!({:?})),",
                file.display().to_string()
            )
            .unwrap();
        }
        writeln!(code, "];").unwrap();
    }
    std::fs::write(out.join("bundled.rs"), code).unwrap();
    // Tests copy built guests into plugin folders to exercise hot reload.
    println!("cargo:rustc-env=SWITCHBOARD_WASM_DIR={}", dist.display());
}

fn build_guests(root: &Path, target_dir: &Path) {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args([
            "build",
            "--target",
            "wasm32-wasip2",
            "--profile",
            "plugin",
            "--target-dir",
        ])
        .arg(target_dir);
    for package in BUNDLED
        .iter()
        .map(|(_, _, p)| *p)
        .chain(TEST_GUESTS.iter().copied())
    {
        cmd.args(["-p", package]);
    }
    // Flags meant for the host build must not leak into the guest build.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
    ] {
        cmd.env_remove(var);
    }
    let output = cmd.output().expect("failed to run cargo for the Wasm plugins");
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        if let Some(message) = build_support::missing_target_message(&stderr) {
            // One clear line, not a panic's stack trace.
            println!("cargo::error={message}");
            std::process::exit(1);
        }
        panic!("building the Wasm plugins failed:\n{stderr}");
    }
}
