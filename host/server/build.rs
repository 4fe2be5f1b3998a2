//! Lists the integration suites (`tests/suites/*.rs` at the repository root) as modules of
//! one test binary, `tests/integration.rs`, in `$OUT_DIR/suites.rs`: a new suite file is
//! picked up without editing a manifest, and the suites link once instead of once each.

use std::path::PathBuf;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let suites = manifest_dir.join("../../tests/suites");
    println!("cargo:rerun-if-changed={}", suites.display());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&suites)
        .map(|dir| {
            dir.filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|path| path.extension().is_some_and(|e| e == "rs"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let mut out = String::new();
    for file in files {
        let name = file.file_stem().unwrap().to_string_lossy().into_owned();
        let path = file.canonicalize().unwrap_or(file);
        out.push_str(&format!(
            "#[path = {:?}]\nmod {name};\n",
            path.display().to_string()
        ));
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    std::fs::write(out_dir.join("suites.rs"), out).expect("writing suites.rs");
}
