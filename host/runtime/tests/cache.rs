//! The compiled-component cache: the first load compiles and writes one `.cwasm` keyed by
//! the component's content hash and the engine; later loads (even by a new engine with the
//! same settings) read it; a corrupt entry is discarded and rebuilt, never trusted. In
//! memory, the loads of a component share one compiled copy while it is held, and the
//! runtime does not keep it alive.

use plinth_runtime::{Runtime, RuntimeConfig};
use std::path::Path;

fn entries(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn compiled_components_are_cached_by_content_and_engine() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("compiled");
    let config = RuntimeConfig {
        cache_dir: Some(cache.clone()),
        ..RuntimeConfig::default()
    };
    let component = Path::new(plinth_tests::ECHO_WASM);

    let runtime = Runtime::new(&config).unwrap();
    runtime.load_component(component).unwrap();
    let after_first = entries(&cache);
    assert_eq!(after_first.len(), 1, "{after_first:?}");
    let name = after_first[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    assert!(name.ends_with(".cwasm"), "{name}");
    // The key starts with the SHA-256 of the component's bytes.
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(component).unwrap()))
    };
    assert!(
        name.starts_with(&digest),
        "{name} does not start with {digest}"
    );
    let written = std::fs::metadata(&after_first[0])
        .unwrap()
        .modified()
        .unwrap();

    // A second engine with the same settings reads the entry instead of compiling again.
    let again = Runtime::new(&config).unwrap();
    again.load_component(component).unwrap();
    assert_eq!(entries(&cache), after_first);
    assert_eq!(
        std::fs::metadata(&after_first[0])
            .unwrap()
            .modified()
            .unwrap(),
        written
    );

    // A different component gets its own entry.
    again
        .load_component(Path::new(plinth_tests::FAULTS_WASM))
        .unwrap();
    assert_eq!(entries(&cache).len(), 2);

    // A corrupt entry is discarded and rebuilt.
    std::fs::write(&after_first[0], b"not a compiled component").unwrap();
    again.load_component(component).unwrap();
    let rebuilt = std::fs::read(&after_first[0]).unwrap();
    assert_ne!(rebuilt, b"not a compiled component");
}

#[test]
fn a_component_in_use_is_shared_and_released_when_unused() {
    let runtime = Runtime::new(&RuntimeConfig::default()).unwrap();
    let echo = Path::new(plinth_tests::ECHO_WASM);
    let first = runtime.load_component(echo).unwrap();
    let second = runtime.load_component(echo).unwrap();
    assert!(
        std::sync::Arc::ptr_eq(&first, &second),
        "two loads of one component while it is held must share one compiled copy"
    );
    let faults = runtime
        .load_component(Path::new(plinth_tests::FAULTS_WASM))
        .unwrap();
    assert!(!std::sync::Arc::ptr_eq(&first, &faults));

    // The runtime itself does not keep a component alive.
    let held = std::sync::Arc::downgrade(&first);
    drop((first, second));
    assert!(
        held.upgrade().is_none(),
        "the runtime kept an unused component"
    );
    let again = runtime.load_component(echo).unwrap();
    assert_eq!(std::sync::Arc::strong_count(&again), 1);
}
