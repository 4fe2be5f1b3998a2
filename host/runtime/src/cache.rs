//! The cache of compiled components, keyed by the component's content hash: on disk, with
//! the engine's compatibility hash, a component is compiled once (~90 ms) and later loads
//! are a deserialize (~0.5 ms); in memory, the variants using one component at the same time
//! share one compiled copy, so its code is in memory, and in the CPU's caches, once. The map
//! of values in use ([`Live`]) also serves the cache of preloaded graphs.

use crate::error::LoadError;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use wasmtime::component::Component;
use wasmtime::Engine;

/// Values in use, by key: an entry lives while someone holds its value. Shared by the
/// compiled-component cache and the preloaded-graph cache
/// ([`GraphCache`](super::nn::GraphCache)).
#[derive(Debug)]
pub(crate) struct Live<K, V>(Mutex<HashMap<K, Weak<V>>>);

impl<K, V> Default for Live<K, V> {
    fn default() -> Self {
        Self(Mutex::default())
    }
}

impl<K: Eq + Hash, V> Live<K, V> {
    /// The value under `key`, if someone still holds it.
    pub(crate) fn get(&self, key: &K) -> Option<Arc<V>> {
        self.lock().get(key).and_then(Weak::upgrade)
    }

    /// Record `value` under `key` (it becomes the shared copy), dropping the entries no one
    /// holds any more.
    pub(crate) fn insert(&self, key: K, value: &Arc<V>) {
        let mut live = self.lock();
        live.retain(|_, held| held.strong_count() > 0);
        live.insert(key, Arc::downgrade(value));
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Weak<V>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A directory of `.cwasm` files, and the components in use.
#[derive(Debug)]
pub(crate) struct ComponentCache {
    dir: Option<PathBuf>,
    engine_key: String,
    /// The components loaded and still held by someone, by content hash.
    live: Live<String, Component>,
}

impl ComponentCache {
    pub(crate) fn new(engine: &Engine, dir: Option<PathBuf>) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = format!("{:016x}", hasher.finish());
        Self {
            dir,
            engine_key,
            live: Live::default(),
        }
    }

    /// The component in `path`: the compiled copy already in use if there is one, else its
    /// compiled form from the disk cache, else compiled now. The copy stays shared while
    /// someone holds it. The map is not locked while loading (a compile takes ~90 ms), so
    /// two first loads at once may both load it; the later becomes the shared copy.
    pub(crate) fn load(&self, engine: &Engine, path: &Path) -> Result<Arc<Component>, LoadError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|error| LoadError::ComponentUnreadable {
            path: shown.clone(),
            error,
        })?;
        if !bytes.starts_with(b"\0asm") {
            return Err(LoadError::NotAComponent {
                path: shown,
                reason: "it is not WebAssembly (the file does not start with the \\0asm magic)"
                    .into(),
            });
        }
        let digest = hex::encode(Sha256::digest(&bytes));
        if let Some(component) = self.live.get(&digest) {
            return Ok(component);
        }
        let component = Arc::new(self.load_compiled(engine, &bytes, &digest, shown)?);
        self.live.insert(digest, &component);
        Ok(component)
    }

    /// Load the component from the disk cache, or compile it (and cache it).
    fn load_compiled(
        &self,
        engine: &Engine,
        bytes: &[u8],
        digest: &str,
        shown: String,
    ) -> Result<Component, LoadError> {
        let cached = self
            .dir
            .as_ref()
            .map(|dir| dir.join(format!("{digest}-{}.cwasm", self.engine_key)));
        if let Some(cached) = cached.as_ref().filter(|p| p.exists()) {
            match deserialize(engine, cached) {
                Ok(component) => return Ok(component),
                Err(e) => {
                    tracing::warn!(cache = %cached.display(), error = %e, "discarding unreadable cache entry");
                    let _ = std::fs::remove_file(cached);
                }
            }
        }
        if wasmparser_is_core_module(bytes) {
            return Err(LoadError::NotAComponent {
                path: shown,
                reason: "it is a core WebAssembly module, not a component; build it for \
                         wasm32-wasip2"
                    .into(),
            });
        }
        let component = Component::new(engine, bytes).map_err(|e| LoadError::NotAComponent {
            path: shown,
            reason: format!("{e:#}"),
        })?;
        if let Some(cached) = cached {
            if let Err(e) = store_atomically(&component, &cached) {
                tracing::warn!(cache = %cached.display(), error = %e, "could not write the compiled-component cache");
            }
        }
        Ok(component)
    }
}

impl ComponentCache {
    /// Remove the compiled entries of components whose digest (hex SHA-256) is not in
    /// `keep`, entries of other engine settings, and files a crash left half-written; gives
    /// how many files went. Nothing happens without a cache directory.
    pub(crate) fn collect_garbage(&self, keep: &std::collections::HashSet<String>) -> usize {
        let Some(dir) = &self.dir else { return 0 };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        let suffix = format!("-{}.cwasm", self.engine_key);
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let wanted = name
                .strip_suffix(&suffix)
                .is_some_and(|digest| keep.contains(digest));
            if !wanted && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    }
}

/// A core module starts with the magic and version 1; a component with layer 1.
fn wasmparser_is_core_module(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[4..8] == [1, 0, 0, 0]
}

fn store_atomically(component: &Component, path: &Path) -> wasmtime::Result<()> {
    let dir = path.parent().expect("cache entries live in a directory");
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&component.serialize()?)?;
        // On disk before it is named: a crash never leaves a short entry under the real name.
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: the cache directory is written only by `store_atomically`, with the output of
    // `Component::serialize` from an engine with the same compatibility hash (part of the
    // file name); files are renamed into place, so none is ever read half-written.
    unsafe { Component::deserialize_file(engine, path) }
}
