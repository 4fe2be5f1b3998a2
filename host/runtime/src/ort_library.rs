//! Finding, checking and loading the ONNX Runtime library (`libonnxruntime.so*`, e.g. from the
//! `onnxruntime` PyPI wheel) for the ONNX Runtime wasi-nn backend.
//!
//! The library is loaded at run time (`ort`'s `load-dynamic`): nothing is linked or
//! downloaded at build time. `ort` itself panics on a missing or incompatible library, so
//! [`OnnxRuntime::load`] opens the file first and checks its entry point and version, and
//! only then hands it to `ort`: every problem is an [`OnnxRuntimeError`] naming the path and
//! what was wrong.
//!
//! The library is process-wide (one per process, loaded once); whether a [`crate::Runtime`]
//! uses it is up to its [`crate::RuntimeConfig::onnxruntime`].

#[cfg(feature = "onnxruntime")]
use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use thiserror::Error;

/// The oldest ONNX Runtime Plinth can use: `ort` 2.0.0-rc.10 targets the C API of ONNX
/// Runtime 1.22 (API version 22); later releases keep that API.
pub const MIN_VERSION: (u32, u32) = (1, 22);

/// ONNX Runtime, loaded into this process. Give it to [`crate::RuntimeConfig::onnxruntime`]
/// so that the runtime's variants can use it.
#[derive(Debug, Clone)]
pub struct OnnxRuntime(Arc<Loaded>);

#[derive(Debug)]
struct Loaded {
    path: PathBuf,
    version: String,
}

impl OnnxRuntime {
    /// Load the library at `library` (a file, or a directory holding `libonnxruntime.so*`,
    /// such as the wheel's `site-packages/onnxruntime/capi`), check that it is an ONNX
    /// Runtime Plinth can use, and create `ort`'s environment on it. Loading the same file
    /// again returns the same handle; another file once one is loaded is an error.
    pub fn load(library: &Path) -> Result<Self, OnnxRuntimeError> {
        let path = library_file(library)?;
        static LOADED: Mutex<Option<OnnxRuntime>> = Mutex::new(None);
        let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(current) = loaded.as_ref().filter(|c| c.0.path == path) {
            return Ok(current.clone());
        }
        let version = probe(&path)?;
        if let Some(current) = &*loaded {
            return Err(OnnxRuntimeError::AlreadyLoaded {
                loaded: current.0.path.clone(),
                requested: path,
            });
        }
        create_environment(&path)?;
        tracing::info!(target: "plinth::nn", path = %path.display(), %version, "ONNX Runtime loaded");
        let runtime = Self(Arc::new(Loaded { path, version }));
        *loaded = Some(runtime.clone());
        Ok(runtime)
    }

    /// The library file.
    pub fn path(&self) -> &Path {
        &self.0.path
    }

    /// The library's version, e.g. `1.22.1`.
    pub fn version(&self) -> &str {
        &self.0.version
    }
}

/// Open the library and check that it is an ONNX Runtime `ort` can use; returns its
/// version. The library stays loaded.
///
/// `ort` would panic on a missing symbol or an old version; this checks both first, with
/// the same calls, so that `ort`'s own loading of the same file ([`create_environment`])
/// cannot fail.
#[cfg(feature = "onnxruntime")]
#[allow(unsafe_code)]
fn probe(path: &Path) -> Result<String, OnnxRuntimeError> {
    let owned = || path.to_path_buf();
    // SAFETY: loading a shared library runs its initialisers; the operator chose this file
    // as an ONNX Runtime build, whose initialisers are sound.
    let library =
        unsafe { libloading::Library::new(path) }.map_err(|e| OnnxRuntimeError::Load {
            path: owned(),
            reason: e.to_string(),
        })?;
    type GetApiBase = unsafe extern "system" fn() -> *const ort::sys::OrtApiBase;
    // SAFETY: `OrtGetApiBase` has this signature in every ONNX Runtime release: it is the C
    // API's entry point.
    let get_api_base = unsafe { library.get::<GetApiBase>(b"OrtGetApiBase\0") }
        .map_err(|_| OnnxRuntimeError::NotOnnxRuntime { path: owned() })?;
    // SAFETY: the entry point takes no arguments and returns a pointer to a static struct.
    let base = unsafe { get_api_base() };
    if base.is_null() {
        return Err(OnnxRuntimeError::NotOnnxRuntime { path: owned() });
    }
    // SAFETY: `base` points to the library's static `OrtApiBase`, whose `GetVersionString`
    // returns a static NUL-terminated string.
    let version = unsafe { CStr::from_ptr(((*base).GetVersionString)()) }
        .to_string_lossy()
        .into_owned();
    let incompatible = |reason: String| OnnxRuntimeError::Incompatible {
        path: owned(),
        version: version.clone(),
        reason,
    };
    check_version(&version).map_err(incompatible)?;
    // SAFETY: as above; `GetApi` returns null for an API version the library lacks.
    let api = unsafe { ((*base).GetApi)(ort::sys::ORT_API_VERSION) };
    if api.is_null() {
        return Err(incompatible(format!(
            "it does not provide C API version {}",
            ort::sys::ORT_API_VERSION
        )));
    }
    // `ort` opens the same file again (the loader hands back this copy); keep ours loaded
    // for the life of the process, as `ort` keeps its own.
    std::mem::forget(library);
    Ok(version)
}

/// Point `ort` at the library (which [`probe`] accepted) and create its environment. Once
/// per process.
#[cfg(feature = "onnxruntime")]
fn create_environment(path: &Path) -> Result<(), OnnxRuntimeError> {
    let owned = || path.to_path_buf();
    ort::init_from(path.to_string_lossy())
        .with_name("plinth")
        .with_telemetry(false)
        .commit()
        .map_err(|e| OnnxRuntimeError::Environment {
            path: owned(),
            reason: e.to_string(),
        })?;
    Ok(())
}

#[cfg(not(feature = "onnxruntime"))]
fn probe(_path: &Path) -> Result<String, OnnxRuntimeError> {
    Err(OnnxRuntimeError::NotBuilt)
}

#[cfg(not(feature = "onnxruntime"))]
fn create_environment(_path: &Path) -> Result<(), OnnxRuntimeError> {
    Err(OnnxRuntimeError::NotBuilt)
}

/// Why ONNX Runtime could not be loaded.
#[derive(Debug, Error)]
pub enum OnnxRuntimeError {
    /// This build has no ONNX Runtime backend.
    #[error(
        "this Plinth was built without ONNX Runtime support (the `onnxruntime` cargo feature of \
         plinth-server)"
    )]
    NotBuilt,
    /// The path does not exist.
    #[error("ONNX Runtime library {}: no such file or directory", path.display())]
    NotFound {
        /// The path given.
        path: PathBuf,
    },
    /// The path is a directory without the library.
    #[error("ONNX Runtime library: the directory {} holds no {LIBRARY_NAME}*", dir.display())]
    NoLibraryInDirectory {
        /// The directory given.
        dir: PathBuf,
    },
    /// The file could not be loaded as a shared library.
    #[error("ONNX Runtime library {}: cannot load it: {reason}", path.display())]
    Load {
        /// The file.
        path: PathBuf,
        /// The loader's explanation.
        reason: String,
    },
    /// The file is a shared library, but not ONNX Runtime.
    #[error(
        "ONNX Runtime library {}: not ONNX Runtime (it has no `OrtGetApiBase` entry point)",
        path.display()
    )]
    NotOnnxRuntime {
        /// The file.
        path: PathBuf,
    },
    /// An ONNX Runtime Plinth cannot use.
    #[error(
        "ONNX Runtime library {}: version {version} is not compatible: {reason}; use ONNX \
         Runtime {}.{} or newer (`pip install onnxruntime=={}.{}.*`)",
        path.display(), MIN_VERSION.0, MIN_VERSION.1, MIN_VERSION.0, MIN_VERSION.1
    )]
    Incompatible {
        /// The file.
        path: PathBuf,
        /// The version it reports.
        version: String,
        /// What is wrong with it.
        reason: String,
    },
    /// ONNX Runtime refused to create its environment.
    #[error("ONNX Runtime library {}: cannot create its environment: {reason}", path.display())]
    Environment {
        /// The file.
        path: PathBuf,
        /// ONNX Runtime's message.
        reason: String,
    },
    /// Another library was loaded before.
    #[error(
        "ONNX Runtime is already loaded from {}; one process cannot also load {}",
        loaded.display(), requested.display()
    )]
    AlreadyLoaded {
        /// The library in use.
        loaded: PathBuf,
        /// The one asked for.
        requested: PathBuf,
    },
}

/// The library's file name, without the version suffix the wheel adds.
#[cfg(target_os = "macos")]
const LIBRARY_NAME: &str = "libonnxruntime.dylib";
#[cfg(windows)]
const LIBRARY_NAME: &str = "onnxruntime.dll";
#[cfg(not(any(target_os = "macos", windows)))]
const LIBRARY_NAME: &str = "libonnxruntime.so";

/// The library file `path` stands for, absolute: `path` itself if it is a file; in a
/// directory, `libonnxruntime.so` or else the highest-named `libonnxruntime.so.*` (the
/// wheel ships `onnxruntime/capi/libonnxruntime.so.<version>`).
pub fn library_file(path: &Path) -> Result<PathBuf, OnnxRuntimeError> {
    let not_found = || OnnxRuntimeError::NotFound {
        path: path.to_path_buf(),
    };
    let absolute = std::path::absolute(path).map_err(|_| not_found())?;
    let metadata = std::fs::metadata(&absolute).map_err(|_| not_found())?;
    if !metadata.is_dir() {
        return Ok(absolute);
    }
    let exact = absolute.join(LIBRARY_NAME);
    if exact.is_file() {
        return Ok(exact);
    }
    let stem = LIBRARY_NAME.split('.').next().unwrap_or(LIBRARY_NAME);
    let extension = &LIBRARY_NAME[stem.len()..];
    let mut versioned: Vec<PathBuf> = std::fs::read_dir(&absolute)
        .map_err(|_| not_found())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    // libonnxruntime.so.1.22.1 (Linux), libonnxruntime.1.22.1.dylib (macOS)
                    n.strip_prefix(stem)
                        .is_some_and(|rest| rest.starts_with('.') && rest.contains(extension))
                })
        })
        .collect();
    versioned.sort();
    versioned
        .pop()
        .ok_or(OnnxRuntimeError::NoLibraryInDirectory { dir: absolute })
}

/// Whether a library reporting `version` (e.g. `1.22.1`) can serve Plinth's `ort`.
#[cfg_attr(not(feature = "onnxruntime"), allow(dead_code))]
pub(crate) fn check_version(version: &str) -> Result<(), String> {
    let mut parts = version.trim().split('.');
    let mut number = || parts.next().and_then(|p| p.parse::<u32>().ok());
    let (Some(major), Some(minor)) = (number(), number()) else {
        return Err(format!("{version:?} is not a version number"));
    };
    if (major, minor) < MIN_VERSION {
        return Err(format!(
            "it is older than {}.{}, whose C API Plinth uses",
            MIN_VERSION.0, MIN_VERSION.1
        ));
    }
    if major > MIN_VERSION.0 {
        return Err(format!(
            "Plinth knows the C API of ONNX Runtime {} only",
            MIN_VERSION.0
        ));
    }
    Ok(())
}

/// Intra-op threads for a session shared by `instances` instances when none is configured:
/// the cores available to the process divided among the instances, at least 1. An instance
/// runs one request at a time, so `instances` concurrent runs then fill the cores without
/// oversubscribing them.
pub fn default_intra_op_threads(instances: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / instances.max(1)).max(1)
}

/// For tests: ONNX Runtime from the library [`plinth_tests::onnxruntime_library`] names
/// (`None` when the test is skipped).
#[cfg(test)]
#[cfg_attr(not(feature = "onnxruntime"), allow(dead_code))]
pub(crate) fn for_tests(test: &str) -> Option<OnnxRuntime> {
    plinth_tests::onnxruntime_library(test)
        .map(|path| OnnxRuntime::load(&path).unwrap_or_else(|e| panic!("ORT_DYLIB_PATH: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_the_minimum_on_are_accepted() {
        for good in ["1.22.0", "1.22.1", "1.23.2", "1.30.0-dev"] {
            assert_eq!(check_version(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("1.21.1", "older than 1.22"),
            ("1.16.3", "older than 1.22"),
            ("2.0.0", "knows the C API of ONNX Runtime 1 only"),
            ("", "not a version number"),
            ("banana", "not a version number"),
        ] {
            let e = check_version(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn a_directory_stands_for_the_library_it_holds() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            library_file(&dir.path().join("missing.so")),
            Err(OnnxRuntimeError::NotFound { .. })
        ));
        let e = library_file(dir.path()).unwrap_err();
        assert!(matches!(e, OnnxRuntimeError::NoLibraryInDirectory { .. }));
        assert!(e.to_string().contains(LIBRARY_NAME), "{e}");
        // The wheel's layout: a versioned library next to other libonnxruntime_* files.
        std::fs::write(dir.path().join("libonnxruntime_providers_shared.so"), b"").unwrap();
        #[cfg(not(any(target_os = "macos", windows)))]
        {
            std::fs::write(dir.path().join("libonnxruntime.so.1.22.1"), b"").unwrap();
            assert_eq!(
                library_file(dir.path()).unwrap(),
                dir.path().join("libonnxruntime.so.1.22.1")
            );
        }
        std::fs::write(dir.path().join(LIBRARY_NAME), b"").unwrap();
        assert_eq!(
            library_file(dir.path()).unwrap(),
            dir.path().join(LIBRARY_NAME)
        );
        let file = dir.path().join("anything.so");
        std::fs::write(&file, b"").unwrap();
        assert_eq!(library_file(&file).unwrap(), file);
    }

    #[cfg(not(feature = "onnxruntime"))]
    #[test]
    fn without_the_feature_loading_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(LIBRARY_NAME);
        std::fs::write(&file, b"").unwrap();
        assert!(matches!(
            OnnxRuntime::load(&file),
            Err(OnnxRuntimeError::NotBuilt)
        ));
    }
}
