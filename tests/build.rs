//! Builds the plugins workspace (`plugins/`) for `wasm32-wasip2` and exports the paths of the
//! components, and of the iris model directory, as constants in `$OUT_DIR/artifacts.rs`.
//!
//! The nested build runs with a scrubbed environment: the outer cargo exports variables
//! (RUSTFLAGS, CARGO_TARGET_DIR, a workspace wrapper, ...) that would otherwise leak into it
//! and rebuild the plugins for the wrong target or into the wrong directory (the same thing
//! wasmtime's `crates/test-programs/artifacts/build.rs` does).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The plugins and the constant each path is exported as.
const PLUGINS: &[(&str, &str)] = &[
    ("IRIS_WASM", "iris"),
    ("IRIS_SIMPLE_WASM", "iris_simple"),
    ("ECHO_WASM", "echo"),
    ("FAULTS_WASM", "faults"),
    ("HOSTILE_WASM", "hostile"),
    ("SCALER_WASM", "scaler"),
    ("LABELS_WASM", "labels"),
];

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir
        .parent()
        .expect("tests/ has a parent directory")
        .to_path_buf();
    for dir in ["plugins", "guest-sdk", "host/codec", "wit"] {
        rerun_if_changed_tree(&root.join(dir));
    }
    println!("cargo:rerun-if-changed=build.rs");

    check_target_installed();

    let plugins_dir = root.join("plugins");
    let target_dir = plugins_dir.join("target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--release")
        .arg("--target")
        .arg(TARGET)
        .arg("--manifest-path")
        .arg(plugins_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_MAKEFLAGS",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_PKG_NAME",
        "OUT_DIR",
        "TARGET",
        "HOST",
        "PROFILE",
        "OPT_LEVEL",
        "DEBUG",
        "RUSTC",
        "RUSTDOC",
        "RUSTC_LINKER",
        "CARGO_PROFILE_RELEASE_DEBUG",
    ] {
        cmd.env_remove(var);
    }
    // Remove CARGO_CFG_* / CARGO_FEATURE_* too: they describe this crate's host build.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_CFG_") || key.starts_with("CARGO_FEATURE_") {
            cmd.env_remove(key.as_ref());
        }
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("failed to run cargo for {}: {e}", plugins_dir.display()));
    assert!(
        status.success(),
        "building the plugins failed ({status}); run `cargo build --release --target {TARGET} \
         --manifest-path plugins/Cargo.toml` to see why"
    );

    let release = target_dir.join(TARGET).join("release");
    let mut out = String::new();
    for (constant, name) in PLUGINS {
        let path = release.join(format!("{name}.wasm"));
        assert!(
            path.is_file(),
            "the plugin build did not produce {}",
            path.display()
        );
        out.push_str(&format!(
            "/// Absolute path of the `{name}` plugin component (`plugins/{}`).\n\
             pub const {constant}: &str = {:?};\n",
            name.replace('_', "-"),
            path.display().to_string()
        ));
    }
    let model_dir = root.join("examples").join("iris").join("model");
    out.push_str(&format!(
        "/// Absolute path of the iris model directory (holds `model.onnx`).\n\
         pub const IRIS_MODEL_DIR: &str = {:?};\n",
        model_dir.display().to_string()
    ));
    out.push_str(&format!(
        "/// Absolute path of the repository root (the workspace).\n\
         pub const WORKSPACE_ROOT: &str = {:?};\n",
        root.display().to_string()
    ));
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    std::fs::write(out_dir.join("artifacts.rs"), out).unwrap();
}

/// Panics with the fix if the `wasm32-wasip2` standard library is not installed.
fn check_target_installed() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let output = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .expect("failed to run `rustc --print sysroot`");
    let sysroot = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let lib = Path::new(&sysroot).join("lib").join("rustlib").join(TARGET);
    if !lib.is_dir() {
        panic!(
            "the {TARGET} target is missing: run `rustup target add {TARGET}` \
             (looked for {})",
            lib.display()
        );
    }
}

/// Emits `rerun-if-changed` for every file under `dir`, skipping build output.
/// A directory is named itself (so new files count) unless it holds a `target` directory,
/// which cargo would scan too: the nested build writes there and would rerun this every time.
fn rerun_if_changed_tree(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        println!("cargo:rerun-if-changed={}", dir.display());
        return;
    };
    if !dir.join("target").exists() {
        println!("cargo:rerun-if-changed={}", dir.display());
    }
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            rerun_if_changed_tree(&path);
        } else {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
