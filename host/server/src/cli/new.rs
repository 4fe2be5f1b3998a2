//! `plinth new NAME`: a ready plugin crate (its Cargo.toml for `wasm32-wasip2`, a
//! `TensorModel` handler with its tests, a README, and a small ONNX model so that it builds
//! and serves as it is) from the templates in `template/`.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};

/// The SDK this binary was built with, as the template's path dependency when it is still
/// there.
const BUILT_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../guest-sdk");

/// The template's files: the path under the new crate, and its text with `{{name}}` (the
/// package), `{{crate}}` (its library name) and `{{sdk}}` (the SDK's path) to fill in.
const TEMPLATE: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("template/Cargo.toml.in")),
    ("src/lib.rs", include_str!("template/lib.rs.in")),
    ("README.md", include_str!("template/README.md.in")),
    (".gitignore", include_str!("template/gitignore.in")),
];

/// The graph the template serves: the iris classifier (4 features in, 3 probabilities out).
const MODEL: &[u8] = include_bytes!("../../../../examples/iris/model/model.onnx");

/// Write the crate `name` into `dir/name` (which must not exist yet), depending on the SDK
/// at `sdk` (by default the one this binary was built from). Returns the crate's directory.
pub(crate) fn create(name: &str, dir: &Path, sdk: Option<&Path>) -> anyhow::Result<PathBuf> {
    check_name(name)?;
    let sdk = match sdk {
        Some(path) => path.to_path_buf(),
        None => PathBuf::from(BUILT_SDK),
    };
    let sdk = std::fs::canonicalize(&sdk)
        .ok()
        .filter(|p| p.join("Cargo.toml").is_file())
        .with_context(|| {
            format!(
                "no guest SDK at {} (give the path of Plinth's guest-sdk directory with --sdk)",
                sdk.display()
            )
        })?;
    let root = dir.join(name);
    if root.exists() {
        bail!(
            "{} exists already; choose another name or directory",
            root.display()
        );
    }
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{crate}}", &name.replace('-', "_"))
            .replace("{{sdk}}", &sdk.display().to_string().replace('\\', "/"))
    };
    for (path, text) in TEMPLATE {
        write(&root.join(path), fill(text).as_bytes())?;
    }
    write(&root.join("model/model.onnx"), MODEL)?;
    Ok(root)
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// A name cargo takes as a package name and Plinth as an endpoint's: ASCII letters and
/// digits and `-`, starting with a letter, at most 63 characters.
fn check_name(name: &str) -> anyhow::Result<()> {
    let valid = name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !name.ends_with('-');
    if !valid {
        bail!(
            "{name:?} cannot name a plugin: use ASCII letters, digits and '-', starting with a \
             letter and not ending with '-', at most 63 characters (it names the crate and \
             the endpoint `plinth dev` serves)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cargo_and_sagemaker_both_take() {
        for good in ["iris", "my-model", "m2"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "2fast", "my_model", "a b", "-x", "x-", &"a".repeat(64)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_crate_is_written_whole_and_never_over_another() {
        let dir = tempfile::tempdir().unwrap();
        let root = create("my-model", dir.path(), None).unwrap();
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("name = \"my-model\""), "{manifest}");
        let sdk = std::fs::canonicalize(BUILT_SDK).unwrap();
        assert!(
            manifest.contains(&format!("path = \"{}\"", sdk.display())),
            "{manifest}"
        );
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        assert!(readme.contains("release/my_model.wasm"), "{readme}");
        assert!(!readme.contains("{{"), "{readme}");
        assert_eq!(std::fs::read(root.join("model/model.onnx")).unwrap(), MODEL);
        assert!(root.join("src/lib.rs").is_file());
        let again = create("my-model", dir.path(), None).unwrap_err();
        assert!(again.to_string().contains("exists already"), "{again}");
        let nowhere = create("other", dir.path(), Some(&dir.path().join("nope"))).unwrap_err();
        assert!(nowhere.to_string().contains("--sdk"), "{nowhere}");
    }
}
