//! Remote (`s3://`) model artifacts and components, kept in `<artifacts>/s3/`: each object
//! version (its ETag) is fetched once through `plinth-storage` (streamed to disk, its
//! SHA-256 taken, checked against the store's size and checksum), unpacked into
//! `s3/<sha256>/` (a component kept as `s3/components/<sha256>/<file name>`), and indexed
//! under `s3/index/<identity>`, where the identity is the location and its ETag: every model
//! that names the same object shares one copy, and concurrent builds wait for one fetch.
//!
//! A model pins the version it first ran (`s3/pins/`, by the model's name and creation
//! time): its later builds use that copy without asking the store.
//!
//! Restart safety: a download is a hidden `.partial-` file until it is complete and synced,
//! an unpack a hidden directory until synced and renamed, and the index entry is written
//! (synced, renamed) last: a fetch interrupted anywhere leaves nothing a later start trusts,
//! and the hidden leftovers are collected with the rest of the cache's.

use plinth_storage::{Location, ObjectInfo, Storage};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

use super::artifacts::{self, Packing};

/// The largest remote object (an artifact or a component).
const MAX_OBJECT_BYTES: u64 = 16 << 30;
/// The most objects an `S3Prefix` may hold.
const MAX_PREFIX_OBJECTS: usize = 10_000;

/// What a model fetches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Remote {
    /// An artifact object: `ModelDataUrl` (packing detected) or `S3DataSource` `S3Object`.
    Object {
        /// Where.
        location: Location,
        /// How it is laid out.
        packing: Packing,
    },
    /// An artifact prefix: `S3DataSource` `S3Prefix`; its objects are the model directory's
    /// files.
    Prefix(Location),
    /// A component: an `s3://` `Image`.
    Component(Location),
}

impl Remote {
    fn location(&self) -> &Location {
        match self {
            Self::Object { location, .. } | Self::Prefix(location) | Self::Component(location) => {
                location
            }
        }
    }
}

type Fetch = Arc<OnceCell<Result<PathBuf, String>>>;

/// The remote artifacts kept under one data directory.
pub(crate) struct RemoteArtifacts {
    storage: Arc<Storage>,
    dir: PathBuf,
    /// Fetches in progress (and done), by identity: concurrent callers wait for one.
    fetches: tokio::sync::Mutex<HashMap<String, Fetch>>,
}

impl RemoteArtifacts {
    /// Remote artifacts kept under `artifacts/s3`, read through `storage`.
    pub(crate) fn new(storage: Arc<Storage>, artifacts: &Path) -> Self {
        Self {
            storage,
            dir: artifacts.join("s3"),
            fetches: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The storage layer the artifacts are read through (asynchronous inference reads its
    /// inputs and writes its results through it too).
    pub(crate) fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }

    /// The local path of `remote` (the artifact directory, or the component file), fetched
    /// if it is not kept yet; within `timeout`. Errors name the location and the store's
    /// error code.
    ///
    /// With a `pin` (a model's name and creation time), the object version the model first
    /// ran is the one it runs for good: once fetched, that version's copy is used without
    /// asking the store again (a restart while S3 is unreachable still serves; an object
    /// replaced since is not picked up by this model, as a model's local files are kept by
    /// digest at CreateModel). Only if that copy is gone is the object fetched anew.
    pub(crate) async fn local(
        &self,
        remote: &Remote,
        timeout: Duration,
        pin: Option<&str>,
    ) -> Result<PathBuf, String> {
        let location = remote.location().clone();
        let pin = pin.map(|p| pin_name(p, remote));
        if let Some(kept) = pin.as_deref().and_then(|p| self.pinned(p, remote)) {
            return Ok(kept);
        }
        let fetched = match tokio::time::timeout(timeout, self.fetch(remote)).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "fetching {location} did not finish within ModelDataDownloadTimeoutInSeconds \
                 ({} s)",
                timeout.as_secs()
            )),
        }?;
        if let Some(pin) = pin {
            let identity = fetched.identity.clone();
            write_small(self.dir.join("pins"), pin, identity)
                .await
                .map_err(|e| format!("cannot pin {location}: {e}"))?;
        }
        Ok(fetched.path)
    }

    /// Whether the store says there is no object at `location` (a multi-model variant's
    /// `TargetModel` that does not exist, told apart from a failed fetch).
    pub(crate) async fn is_missing(&self, location: &Location) -> bool {
        matches!(
            self.storage.head(location).await,
            Err(e) if e.kind == plinth_storage::ErrorKind::NotFound
        )
    }

    /// The kept copy a pin names, if the pin and the copy are there.
    fn pinned(&self, pin: &str, remote: &Remote) -> Option<PathBuf> {
        let identity = std::fs::read_to_string(self.dir.join("pins").join(pin)).ok()?;
        self.indexed(identity.trim(), remote)
    }

    async fn fetch(&self, remote: &Remote) -> Result<Fetched, String> {
        let location = remote.location();
        // What the object (or prefix) is now: the identity it is kept under.
        let (identity, listing) = match remote {
            Remote::Prefix(prefix) => {
                let listing = self.storage.list(prefix).await.map_err(|e| e.to_string())?;
                if listing.is_empty() {
                    return Err(format!("{prefix}: no objects under this prefix"));
                }
                if listing.len() > MAX_PREFIX_OBJECTS {
                    return Err(format!(
                        "{prefix}: more than {MAX_PREFIX_OBJECTS} objects under this prefix"
                    ));
                }
                (identity("prefix", location, &listing), listing)
            }
            _ => {
                let info = self
                    .storage
                    .head(location)
                    .await
                    .map_err(|e| e.to_string())?;
                let kind = match remote {
                    Remote::Component(_) => "component".to_owned(),
                    Remote::Object { packing, .. } => format!("object {packing:?}"),
                    Remote::Prefix(_) => unreachable!("listed above"),
                };
                (
                    identity(&kind, location, std::slice::from_ref(&info)),
                    vec![info],
                )
            }
        };
        if let Some(path) = self.indexed(&identity, remote) {
            return Ok(Fetched { identity, path });
        }
        let cell = {
            let mut fetches = self.fetches.lock().await;
            fetches.entry(identity.clone()).or_default().clone()
        };
        let result = cell
            .get_or_init(|| self.fetch_now(remote, &identity, &listing))
            .await
            .clone()
            .map(|path| Fetched {
                identity: identity.clone(),
                path,
            });
        if result.is_err() {
            // A failure is not kept: the next build tries again (unless another attempt
            // has begun meanwhile: that one stays).
            let mut fetches = self.fetches.lock().await;
            if fetches
                .get(&identity)
                .is_some_and(|c| Arc::ptr_eq(c, &cell))
            {
                fetches.remove(&identity);
            }
        }
        result
    }

    /// The kept path of `identity`, if its index entry and what it points to are there.
    fn indexed(&self, identity: &str, remote: &Remote) -> Option<PathBuf> {
        let digest = std::fs::read_to_string(self.dir.join("index").join(identity)).ok()?;
        let path = self.kept_path(digest.trim(), remote);
        path.exists().then_some(path)
    }

    fn kept_path(&self, digest: &str, remote: &Remote) -> PathBuf {
        match remote {
            Remote::Component(location) => self
                .dir
                .join("components")
                .join(digest)
                .join(file_name(location, "component.wasm")),
            _ => self.dir.join(digest),
        }
    }

    async fn fetch_now(
        &self,
        remote: &Remote,
        identity: &str,
        listing: &[ObjectInfo],
    ) -> Result<PathBuf, String> {
        let started = Instant::now();
        let location = remote.location();
        for dir in [self.dir.join("objects"), self.dir.join("index")] {
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let (path, digest, bytes) = match remote {
            Remote::Prefix(prefix) => self.fetch_prefix(prefix, listing).await?,
            Remote::Object { packing, .. } => {
                let got = self.download(location, etag_of(listing)).await?;
                let (dir, file) = (self.dir.clone(), got.file);
                let name = file_name(location, "model");
                // The same bytes laid out another way (a tarball kept whole with
                // CompressionType None, or unpacked; a single file under another name) are
                // another directory.
                let digest = layout_digest(&got.sha256, *packing, &name);
                let (packing, dir_name) = (*packing, digest.clone());
                let path = tokio::task::spawn_blocking(move || {
                    artifacts::unpack_file(&dir, file.path(), &dir_name, &name, packing)
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("{location}: {e}"))?;
                (path, digest, got.size)
            }
            Remote::Component(_) => {
                let got = self.download(location, etag_of(listing)).await?;
                let path = self.kept_path(&got.sha256, remote);
                let dir = path.parent().unwrap_or(&self.dir).to_path_buf();
                let file = got.file;
                let target = path.clone();
                tokio::task::spawn_blocking(move || {
                    std::fs::create_dir_all(&dir)?;
                    file.persist(&target).map_err(|e| e.error)?;
                    artifacts::sync_dir(&dir)
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("cannot keep the component from {location}: {e}"))?;
                (path, got.sha256, got.size)
            }
        };
        self.write_index(identity, &digest).await?;
        tracing::info!(
            location = %location,
            bytes,
            sha256 = %digest,
            ms = started.elapsed().as_millis() as u64,
            "fetched"
        );
        Ok(path)
    }

    /// The object at `location` in the version `etag` names (what its identity was made
    /// of): one replaced meanwhile fails, to be fetched again by the next build.
    async fn download(
        &self,
        location: &Location,
        etag: Option<&str>,
    ) -> Result<plinth_storage::Downloaded, String> {
        self.storage
            .download_version(location, &self.dir.join("objects"), MAX_OBJECT_BYTES, etag)
            .await
            .map_err(|e| match e.kind {
                plinth_storage::ErrorKind::Changed => {
                    format!("{location} was replaced while it was fetched; try again")
                }
                _ => e.to_string(),
            })
    }

    /// Every object under `prefix` into one directory, by its key below the prefix; the
    /// directory's digest is over each file's relative path and SHA-256.
    async fn fetch_prefix(
        &self,
        prefix: &Location,
        listing: &[ObjectInfo],
    ) -> Result<(PathBuf, String, u64), String> {
        let staging = tempfile::Builder::new()
            .prefix(".fetching-")
            .tempdir_in(&self.dir)
            .map_err(|e| format!("cannot create a directory in {}: {e}", self.dir.display()))?;
        let mut tree = Sha256::new();
        let mut bytes = 0;
        for object in listing {
            let relative = safe_relative(&object.key)
                .ok_or_else(|| format!("{prefix}: the key {:?} cannot name a file", object.key))?;
            let got = self
                .download(&prefix.join(&object.key), object.etag.as_deref())
                .await?;
            tree.update(relative.to_string_lossy().as_bytes());
            tree.update([0]);
            tree.update(got.sha256.as_bytes());
            bytes += got.size;
            let target = staging.path().join(&relative);
            if let Some(parent) = target.parent() {
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
            }
            got.file
                .persist(&target)
                .map_err(|e| format!("cannot keep {}: {}", target.display(), e.error))?;
        }
        let digest = hex::encode(tree.finalize());
        let target = self.dir.join(&digest);
        let staged = staging.keep();
        let placed = tokio::task::spawn_blocking({
            let (staged, target, dir) = (staged.clone(), target.clone(), self.dir.clone());
            move || -> std::io::Result<()> {
                artifacts::sync_tree(&staged)?;
                if std::fs::rename(&staged, &target).is_err() {
                    std::fs::remove_dir_all(&staged)?;
                }
                artifacts::sync_dir(&dir)
            }
        })
        .await
        .map_err(|e| e.to_string())?;
        placed.map_err(|e| format!("cannot keep the files of {prefix}: {e}"))?;
        if !target.is_dir() {
            return Err(format!("cannot keep the files of {prefix}"));
        }
        Ok((target, digest, bytes))
    }

    /// Record that `identity` is kept as `digest`.
    async fn write_index(&self, identity: &str, digest: &str) -> Result<(), String> {
        write_small(
            self.dir.join("index"),
            identity.to_owned(),
            digest.to_owned(),
        )
        .await
        .map_err(|e| format!("cannot write the artifact index: {e}"))
    }
}

/// What a fetch found: the identity of the version kept, and its local path.
struct Fetched {
    identity: String,
    path: PathBuf,
}

/// Write `content` as `dir/name`: to a hidden file first, synced, then renamed.
async fn write_small(dir: PathBuf, name: String, content: String) -> Result<(), String> {
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        std::fs::create_dir_all(&dir)?;
        let mut staged = tempfile::Builder::new()
            .prefix(".write-")
            .tempfile_in(&dir)?;
        std::io::Write::write_all(&mut staged, content.as_bytes())?;
        staged.as_file().sync_all()?;
        staged.persist(dir.join(name)).map_err(|e| e.error)?;
        artifacts::sync_dir(&dir)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())
}

/// What `location` holds now, as the name its kept copy is indexed under: the kind, the
/// location, and each object's key, size and ETag.
fn identity(kind: &str, location: &Location, objects: &[ObjectInfo]) -> String {
    let mut parts = vec![kind.to_owned(), location.to_string()];
    for o in objects {
        parts.extend([
            o.key.clone(),
            o.size.to_string(),
            o.etag.clone().unwrap_or_default(),
        ]);
    }
    digest_of(&parts)
}

/// The directory name of an object's bytes (SHA-256 `sha`) laid out as `packing` with
/// `name` for a single file.
fn layout_digest(sha: &str, packing: Packing, name: &str) -> String {
    digest_of(&[sha.to_owned(), format!("{packing:?}"), name.to_owned()])
}

/// The file name of a model's pin of `remote`.
fn pin_name(pin: &str, remote: &Remote) -> String {
    digest_of(&[pin.to_owned(), format!("{remote:?}")])
}

/// SHA-256 (hex) of `parts`, each followed by a NUL so that no two lists hash alike.
fn digest_of(parts: &[String]) -> String {
    let mut sha = Sha256::new();
    for part in parts {
        sha.update(part.as_bytes());
        sha.update([0]);
    }
    hex::encode(sha.finalize())
}

/// The entity tag of a single object's listing.
fn etag_of(listing: &[ObjectInfo]) -> Option<&str> {
    listing.first().and_then(|o| o.etag.as_deref())
}

/// The last part of `location`'s key, for a single file's name.
fn file_name(location: &Location, default: &str) -> String {
    let text = location.to_string();
    let name = text.rsplit('/').next().unwrap_or_default();
    if name.is_empty() || name == "." || name == ".." {
        default.to_owned()
    } else {
        name.to_owned()
    }
}

/// A key below a prefix as a relative path, if it names a file inside the directory (no
/// `..`, no absolute path, no empty part: a "directory marker" key ending in `/` is none).
fn safe_relative(key: &str) -> Option<PathBuf> {
    if key.is_empty() || key.ends_with('/') || key.starts_with('/') {
        return None;
    }
    let parts: Vec<&str> = key.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return None;
    }
    Some(parts.iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_keys_that_leave_the_directory_are_refused() {
        assert_eq!(
            safe_relative("model.onnx"),
            Some(PathBuf::from("model.onnx"))
        );
        assert_eq!(safe_relative("a/b.onnx"), Some(PathBuf::from("a/b.onnx")));
        for bad in [
            "",
            "dir/",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
        ] {
            assert_eq!(safe_relative(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_new_etag_is_a_new_identity() {
        let location = Location::parse("s3://models/iris.tar.gz").unwrap();
        let object = |etag: &str| ObjectInfo {
            key: "iris.tar.gz".into(),
            size: 10,
            etag: Some(etag.into()),
        };
        let a = identity("object", &location, &[object("1")]);
        assert_eq!(a, identity("object", &location, &[object("1")]));
        assert_ne!(a, identity("object", &location, &[object("2")]));
        assert_ne!(a, identity("component", &location, &[object("1")]));
        assert_eq!(file_name(&location, "model"), "iris.tar.gz");
        assert_eq!(
            file_name(&Location::parse("s3://models/").unwrap(), "model"),
            "model"
        );
    }

    /// The same bytes as a tarball kept whole and as one unpacked are two directories.
    #[tokio::test]
    async fn one_object_in_two_layouts_is_two_copies() {
        let dir = tempfile::tempdir().unwrap();
        let artifacts = dir.path().join("artifacts");
        std::fs::create_dir_all(&artifacts).unwrap();
        let source = dir.path().join("model.tar");
        {
            let mut archive = tar::Builder::new(std::fs::File::create(&source).unwrap());
            let mut header = tar::Header::new_gnu();
            header.set_size(5);
            header.set_mode(0o644);
            header.set_cksum();
            archive
                .append_data(&mut header, "model.onnx", &b"graph"[..])
                .unwrap();
            archive.finish().unwrap();
        }
        let remote = RemoteArtifacts::new(
            Arc::new(Storage::new(plinth_storage::S3Settings::default())),
            &artifacts,
        );
        let as_is = Remote::Object {
            location: Location::Local(source.clone()),
            packing: Packing::Plain,
        };
        let unpacked = Remote::Object {
            location: Location::Local(source.clone()),
            packing: Packing::Auto,
        };
        let a = remote
            .local(&as_is, Duration::from_secs(10), None)
            .await
            .unwrap();
        let b = remote
            .local(&unpacked, Duration::from_secs(10), None)
            .await
            .unwrap();
        assert_ne!(a, b);
        assert!(a.join("model.tar").is_file(), "kept whole");
        assert_eq!(std::fs::read(b.join("model.onnx")).unwrap(), b"graph");
    }

    /// A fetch of a local object (the same path as an S3 one, below the store) unpacks once,
    /// indexes it, and is found again without a second fetch.
    #[tokio::test]
    async fn an_object_is_fetched_once_and_found_in_the_index_after() {
        let dir = tempfile::tempdir().unwrap();
        let artifacts = dir.path().join("artifacts");
        std::fs::create_dir_all(&artifacts).unwrap();
        let source = dir.path().join("model.onnx");
        std::fs::write(&source, b"graph").unwrap();
        let remote = RemoteArtifacts::new(
            Arc::new(Storage::new(plinth_storage::S3Settings::default())),
            &artifacts,
        );
        let object = Remote::Object {
            location: Location::Local(source.clone()),
            packing: Packing::Auto,
        };
        let first = remote
            .local(&object, Duration::from_secs(10), None)
            .await
            .unwrap();
        assert_eq!(std::fs::read(first.join("model.onnx")).unwrap(), b"graph");
        // Nothing hidden is left behind, and the index names it.
        let leftovers: Vec<_> = std::fs::read_dir(artifacts.join("s3/objects"))
            .unwrap()
            .flatten()
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        remote.fetches.lock().await.clear();
        std::fs::remove_dir_all(artifacts.join("s3/objects")).unwrap();
        let again = remote
            .local(&object, Duration::from_secs(10), None)
            .await
            .unwrap();
        assert_eq!(again, first);
        assert!(
            !artifacts.join("s3/objects").exists(),
            "fetched a second time"
        );
    }
}
