//! Where Plinth reads and writes what lives outside it: a [`Location`] is a local path (or a
//! `file://` URL) or an S3 object or prefix (`s3://bucket/key`), and [`Storage`] moves bytes
//! between a location and a local file as a stream (never holding an object whole in
//! memory), with SHA-256 computed on the way, multipart uploads for large objects, and
//! retries with backoff on transient errors (`object_store`'s S3 client; no AWS SDK).
//!
//! - [`location`]: parsing `s3://`, `file://` and paths;
//! - [`credentials`]: the AWS settings as AWS's own tools take them (environment, then
//!   `AWS_PROFILE` in the shared credentials and config files; region; endpoint override);
//! - [`error`]: [`StorageError`], with the S3 error code (`NoSuchKey`, `AccessDenied`, ...)
//!   when the store gave one.

pub mod credentials;
pub mod error;
pub mod location;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

pub use credentials::S3Settings;
pub use error::{ErrorKind, StorageError};
pub use location::Location;

/// An object's size and entity tag, as the store reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The key (for a local file, its path).
    pub key: String,
    /// Bytes.
    pub size: u64,
    /// The store's entity tag (S3's `ETag`, quotes removed); `None` for a local file.
    pub etag: Option<String>,
}

/// A file read from a location into a local directory, verified.
#[derive(Debug)]
pub struct Downloaded {
    /// The file, still temporary: persist it (rename) to keep it, or drop it.
    pub file: tempfile::NamedTempFile,
    /// Bytes read.
    pub size: u64,
    /// SHA-256 of the bytes read, hex.
    pub sha256: String,
    /// The object's entity tag.
    pub etag: Option<String>,
}

/// Reads and writes [`Location`]s. One per server; cheap to share.
pub struct Storage {
    s3: S3Settings,
    /// One client per bucket, made on first use.
    buckets: Mutex<HashMap<String, Arc<AmazonS3>>>,
}

/// How long a connection to the store may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the store may leave a request, or a download's stream, without an answer.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// `step`, or an error if the store gives nothing for [`IDLE_TIMEOUT`].
async fn timeout<T>(
    location: &Location,
    step: impl std::future::Future<Output = T>,
) -> Result<T, StorageError> {
    tokio::time::timeout(IDLE_TIMEOUT, step).await.map_err(|_| {
        StorageError::new(
            location,
            ErrorKind::Other,
            format!("the store sent nothing for {} s", IDLE_TIMEOUT.as_secs()),
        )
    })
}

/// A listing without the empty "folder" objects consoles create (`models/iris/`, listed as
/// an empty key or as an empty object whose name is a directory of other keys).
fn without_folder_markers(objects: Vec<ObjectInfo>) -> Vec<ObjectInfo> {
    let directories: std::collections::HashSet<String> = objects
        .iter()
        .flat_map(|o| {
            let parts: Vec<&str> = o.key.split('/').collect();
            (1..parts.len()).map(move |n| parts[..n].join("/"))
        })
        .collect();
    objects
        .into_iter()
        .filter(|o| {
            let marker = o.key.is_empty() || (o.size == 0 && directories.contains(&o.key));
            !marker
        })
        .collect()
}

/// The part size of multipart uploads (S3's least is 5 MiB).
const PART_BYTES: usize = 8 << 20;

impl Storage {
    /// Storage with these S3 settings.
    pub fn new(s3: S3Settings) -> Self {
        Self {
            s3,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The S3 settings in use (for logging; [`S3Settings`]'s `Display` never shows a secret).
    pub fn s3(&self) -> &S3Settings {
        &self.s3
    }

    fn bucket(&self, bucket: &str) -> Result<Arc<AmazonS3>, StorageError> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(store) = buckets.get(bucket) {
            return Ok(store.clone());
        }
        let s3 = &self.s3;
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(&s3.region)
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(5),
                    base: 2.0,
                },
                max_retries: 5,
                retry_timeout: Duration::from_secs(120),
            })
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(CONNECT_TIMEOUT)
                    // A large object takes as long as it takes: the caller bounds the whole
                    // transfer (e.g. ModelDataDownloadTimeoutInSeconds).
                    .with_timeout_disabled()
                    .with_allow_http(
                        s3.endpoint
                            .as_deref()
                            .is_some_and(|e| e.starts_with("http://")),
                    ),
            );
        if let Some(endpoint) = &s3.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false);
        }
        builder = match &s3.credentials {
            Some(c) => {
                let mut b = builder
                    .with_access_key_id(&c.access_key_id)
                    .with_secret_access_key(&c.secret_access_key);
                if let Some(token) = &c.session_token {
                    b = b.with_token(token);
                }
                b
            }
            None => builder.with_skip_signature(true),
        };
        let store = Arc::new(
            builder
                .build()
                .map_err(|e| StorageError::from_store(&format!("s3://{bucket}"), e))?,
        );
        buckets.insert(bucket.to_owned(), store.clone());
        Ok(store)
    }

    /// The object at `location`: its size and entity tag.
    pub async fn head(&self, location: &Location) -> Result<ObjectInfo, StorageError> {
        match location {
            Location::Local(path) => {
                let meta = tokio::fs::metadata(path)
                    .await
                    .map_err(|e| StorageError::io(location, e))?;
                if !meta.is_file() {
                    return Err(StorageError::new(
                        location,
                        ErrorKind::NotAFile,
                        "not a regular file",
                    ));
                }
                Ok(ObjectInfo {
                    key: path.display().to_string(),
                    size: meta.len(),
                    etag: None,
                })
            }
            Location::S3 { bucket, key } => {
                let store = self.bucket(bucket)?;
                let head = timeout(location, store.head(&object_path(location, key)?)).await?;
                match head {
                    Ok(meta) => Ok(ObjectInfo {
                        key: key.clone(),
                        size: meta.size,
                        etag: meta.e_tag.map(|t| t.trim_matches('"').to_owned()),
                    }),
                    // A HEAD answer has no body, so no error code: ask again with a GET,
                    // whose error names it (NoSuchKey or NoSuchBucket, AccessDenied...).
                    Err(e) => match store.get(&object_path(location, key)?).await {
                        Err(e) => Err(StorageError::from_store(&location.to_string(), e)),
                        Ok(_) => Err(StorageError::from_store(&location.to_string(), e)),
                    },
                }
            }
        }
    }

    /// The objects under the prefix `location` (an S3 prefix; a local directory's files,
    /// recursively), keys relative to the prefix, in key order.
    pub async fn list(&self, location: &Location) -> Result<Vec<ObjectInfo>, StorageError> {
        match location {
            Location::Local(dir) => {
                let dir = dir.clone();
                let shown = location.clone();
                tokio::task::spawn_blocking(move || list_local(&dir))
                    .await
                    .map_err(|e| StorageError::new(&shown, ErrorKind::Other, e.to_string()))?
                    .map_err(|e| StorageError::io(&shown, e))
            }
            Location::S3 { bucket, key } => {
                let store = self.bucket(bucket)?;
                let prefix = key.trim_end_matches('/');
                let listed = if prefix.is_empty() {
                    None
                } else {
                    Some(object_path(location, prefix)?)
                };
                let mut stream = store.list(listed.as_ref());
                let mut objects = Vec::new();
                while let Some(meta) = timeout(location, stream.next()).await? {
                    let meta =
                        meta.map_err(|e| StorageError::from_store(&location.to_string(), e))?;
                    let full = meta.location.to_string();
                    let relative = full
                        .strip_prefix(prefix)
                        .unwrap_or(&full)
                        .trim_start_matches('/')
                        .to_owned();
                    objects.push(ObjectInfo {
                        key: relative,
                        size: meta.size,
                        etag: meta.e_tag.map(|t| t.trim_matches('"').to_owned()),
                    });
                }
                objects.sort_by(|a, b| a.key.cmp(&b.key));
                Ok(without_folder_markers(objects))
            }
        }
    }

    /// Read the object at `location` into a new temporary file in `dir`, as a stream, with
    /// its SHA-256; at most `max_bytes`, and no more than [`IDLE_TIMEOUT`] without a byte.
    /// The size read must be the size the store announced. (An ETag is not compared with
    /// the bytes' MD5: with SSE-KMS or SSE-C it is not one.) The file is synced to disk
    /// before it is returned.
    pub async fn download(
        &self,
        location: &Location,
        dir: &Path,
        max_bytes: u64,
    ) -> Result<Downloaded, StorageError> {
        self.download_version(location, dir, max_bytes, None).await
    }

    /// [`Storage::download`] of the object version whose entity tag is `etag` (as
    /// [`Storage::head`] or [`Storage::list`] gave it): an object replaced since is a
    /// `Changed` error (S3's `PreconditionFailed`), not other bytes under the old tag.
    pub async fn download_version(
        &self,
        location: &Location,
        dir: &Path,
        max_bytes: u64,
        etag: Option<&str>,
    ) -> Result<Downloaded, StorageError> {
        let staged = tempfile::Builder::new()
            .prefix(".partial-")
            .tempfile_in(dir)
            .map_err(|e| StorageError::io(location, e))?;
        // Written in 1 MiB pieces: each write of a tokio file is a trip to a blocking thread.
        let mut out = tokio::io::BufWriter::with_capacity(
            1 << 20,
            tokio::fs::File::from_std(staged.reopen().map_err(|e| StorageError::io(location, e))?),
        );
        let mut sha = Sha256::new();
        let mut size = 0u64;
        let (expected, etag) = match location {
            Location::Local(path) => {
                let mut file = tokio::fs::File::open(path)
                    .await
                    .map_err(|e| StorageError::io(location, e))?;
                let expected = file
                    .metadata()
                    .await
                    .map_err(|e| StorageError::io(location, e))?
                    .len();
                let mut buffer = vec![0u8; 1 << 20];
                loop {
                    let n = tokio::io::AsyncReadExt::read(&mut file, &mut buffer)
                        .await
                        .map_err(|e| StorageError::io(location, e))?;
                    if n == 0 {
                        break;
                    }
                    size += n as u64;
                    check_size(location, size, max_bytes)?;
                    sha.update(&buffer[..n]);
                    out.write_all(&buffer[..n])
                        .await
                        .map_err(|e| StorageError::io(location, e))?;
                }
                (expected, None)
            }
            Location::S3 { bucket, key } => {
                let store = self.bucket(bucket)?;
                let options = object_store::GetOptions {
                    if_match: etag.map(|t| format!("\"{t}\"")),
                    ..Default::default()
                };
                let got = store
                    .get_opts(&object_path(location, key)?, options)
                    .await
                    .map_err(|e| StorageError::from_store(&location.to_string(), e))?;
                let expected = got.meta.size;
                check_size(location, expected, max_bytes)?;
                let etag = got
                    .meta
                    .e_tag
                    .clone()
                    .map(|t| t.trim_matches('"').to_owned());
                let mut stream = got.into_stream();
                while let Some(chunk) = timeout(location, stream.next()).await? {
                    let chunk =
                        chunk.map_err(|e| StorageError::from_store(&location.to_string(), e))?;
                    size += chunk.len() as u64;
                    check_size(location, size, max_bytes)?;
                    sha.update(&chunk);
                    out.write_all(&chunk)
                        .await
                        .map_err(|e| StorageError::io(location, e))?;
                }
                (expected, etag)
            }
        };
        if size != expected {
            return Err(StorageError::new(
                location,
                ErrorKind::Truncated,
                format!("read {size} bytes of the {expected} the store announced"),
            ));
        }
        out.flush()
            .await
            .map_err(|e| StorageError::io(location, e))?;
        out.get_ref()
            .sync_all()
            .await
            .map_err(|e| StorageError::io(location, e))?;
        Ok(Downloaded {
            file: staged,
            size,
            sha256: hex::encode(sha.finalize()),
            etag,
        })
    }

    /// Write the local file `from` to `location` as a stream (a multipart upload in parts
    /// of 8 MiB for anything larger); the bytes written.
    pub async fn upload(&self, from: &Path, location: &Location) -> Result<u64, StorageError> {
        let mut file = tokio::fs::File::open(from)
            .await
            .map_err(|e| StorageError::io(&Location::Local(from.to_path_buf()), e))?;
        match location {
            Location::Local(path) => write_local(&mut file, path, location).await,
            Location::S3 { bucket, key } => {
                let store: Arc<dyn ObjectStore> = self.bucket(bucket)?;
                let mut writer = object_store::buffered::BufWriter::with_capacity(
                    store,
                    object_path(location, key)?,
                    PART_BYTES,
                );
                let written = match tokio::io::copy(&mut file, &mut writer).await {
                    Ok(n) => writer.shutdown().await.map(|()| n),
                    Err(e) => Err(e),
                };
                if written.is_err() {
                    // The parts uploaded so far would otherwise stay (and be billed).
                    let _ = writer.abort().await;
                }
                written.map_err(|e| StorageError::io(location, e))
            }
        }
    }
}

impl Storage {
    /// The whole object at `location` in memory, if it is at most `max_bytes` long (larger:
    /// `TooLarge`, before it is read).
    pub async fn get(
        &self,
        location: &Location,
        max_bytes: u64,
    ) -> Result<bytes::Bytes, StorageError> {
        match location {
            Location::Local(path) => {
                let size = tokio::fs::metadata(path)
                    .await
                    .map_err(|e| StorageError::io(location, e))?
                    .len();
                check_size(location, size, max_bytes)?;
                tokio::fs::read(path)
                    .await
                    .map(bytes::Bytes::from)
                    .map_err(|e| StorageError::io(location, e))
            }
            Location::S3 { bucket, key } => {
                let store = self.bucket(bucket)?;
                let shown = location.to_string();
                let got = store
                    .get(&object_path(location, key)?)
                    .await
                    .map_err(|e| StorageError::from_store(&shown, e))?;
                check_size(location, got.meta.size, max_bytes)?;
                got.bytes()
                    .await
                    .map_err(|e| StorageError::from_store(&shown, e))
            }
        }
    }

    /// Write `data` to `location` as one object: in one request to S3, or for a local path
    /// into a file beside it that is synced and renamed into place. A reader never sees part
    /// of it. The bytes written.
    pub async fn put(&self, data: bytes::Bytes, location: &Location) -> Result<u64, StorageError> {
        match location {
            // Every step on the blocking pool: the file calls would otherwise hold a worker
            // thread of the caller's runtime (on a slow file system, for long).
            Location::Local(path) => {
                let (path, shown) = (path.clone(), location.clone());
                tokio::task::spawn_blocking(move || put_local(&data, &path, &shown))
                    .await
                    .map_err(|e| StorageError::new(location, ErrorKind::Other, e.to_string()))?
            }
            Location::S3 { bucket, key } => {
                let store = self.bucket(bucket)?;
                let n = data.len() as u64;
                store
                    .put(&object_path(location, key)?, data.into())
                    .await
                    .map_err(|e| StorageError::from_store(&location.to_string(), e))?;
                Ok(n)
            }
        }
    }
}

/// `data` into a file beside `path`, synced, renamed to `path`, the directory synced.
fn put_local(data: &[u8], path: &Path, location: &Location) -> Result<u64, StorageError> {
    use std::io::Write as _;
    let io = |e: std::io::Error| StorageError::io(location, e);
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut staged = tempfile::Builder::new()
        .prefix(".partial-")
        .tempfile_in(dir)
        .map_err(io)?;
    staged.write_all(data).map_err(io)?;
    staged.as_file().sync_all().map_err(io)?;
    staged.persist(path).map_err(|e| io(e.error))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    Ok(data.len() as u64)
}

/// Copy `from` into a file beside `path`, sync it, rename it to `path` and sync the
/// directory (so that the name lasts before the caller records the object as written).
async fn write_local(
    from: &mut (impl tokio::io::AsyncRead + Unpin),
    path: &Path,
    location: &Location,
) -> Result<u64, StorageError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| StorageError::io(location, e))?;
    let staged = tempfile::Builder::new()
        .prefix(".partial-")
        .tempfile_in(dir)
        .map_err(|e| StorageError::io(location, e))?;
    let mut out =
        tokio::fs::File::from_std(staged.reopen().map_err(|e| StorageError::io(location, e))?);
    let n = tokio::io::copy(from, &mut out)
        .await
        .map_err(|e| StorageError::io(location, e))?;
    out.sync_all()
        .await
        .map_err(|e| StorageError::io(location, e))?;
    staged
        .persist(path)
        .map_err(|e| StorageError::io(location, e.error))?;
    tokio::fs::File::open(dir)
        .await
        .map_err(|e| StorageError::io(location, e))?
        .sync_all()
        .await
        .map_err(|e| StorageError::io(location, e))?;
    Ok(n)
}

/// The key as `object_store` names it: as it is (`Path::from` would percent-encode
/// characters such as `~`, and read another key). A key with an empty, `.` or `..` segment
/// is refused.
fn object_path(location: &Location, key: &str) -> Result<object_store::path::Path, StorageError> {
    object_store::path::Path::parse(key.trim_end_matches('/')).map_err(|e| {
        StorageError::new(
            location,
            ErrorKind::Other,
            format!("the key {key:?} cannot be read: {e}"),
        )
    })
}

fn check_size(location: &Location, size: u64, max: u64) -> Result<(), StorageError> {
    if size > max {
        return Err(StorageError::new(
            location,
            ErrorKind::TooLarge,
            format!("larger than the {max} bytes allowed"),
        ));
    }
    Ok(())
}

fn list_local(dir: &Path) -> std::io::Result<Vec<ObjectInfo>> {
    let mut files = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(relative) = stack.pop() {
        for entry in std::fs::read_dir(dir.join(&relative))? {
            let entry = entry?;
            let path = relative.join(entry.file_name());
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                files.push(ObjectInfo {
                    key: path.to_string_lossy().into_owned(),
                    size: entry.metadata()?.len(),
                    etag: None,
                });
            }
        }
    }
    files.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_markers_are_not_files() {
        let o = |key: &str, size| ObjectInfo {
            key: key.into(),
            size,
            etag: None,
        };
        let listed = without_folder_markers(vec![
            o("", 0),
            o("model.onnx", 10),
            o("sub", 0),
            o("sub/tokenizer.json", 5),
            o("empty.txt", 0),
        ]);
        let keys: Vec<&str> = listed.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, ["model.onnx", "sub/tokenizer.json", "empty.txt"]);
    }

    #[test]
    fn keys_are_read_as_they_are() {
        let at = Location::parse("s3://bucket/k").unwrap();
        assert_eq!(
            object_path(&at, "models/v1~rc/m.tar.gz").unwrap().as_ref(),
            "models/v1~rc/m.tar.gz"
        );
        assert_eq!(object_path(&at, "iris/").unwrap().as_ref(), "iris");
        assert!(object_path(&at, "a/../b").is_err());
    }

    #[tokio::test]
    async fn a_local_file_is_read_as_a_stream_with_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("model.bin");
        std::fs::write(&source, b"weights").unwrap();
        let storage = Storage::new(S3Settings::default());
        let location = Location::parse(source.to_str().unwrap()).unwrap();
        let got = storage
            .download(&location, dir.path(), 1 << 20)
            .await
            .unwrap();
        assert_eq!(got.size, 7);
        assert_eq!(got.sha256, hex::encode(Sha256::digest(b"weights")));
        assert_eq!(std::fs::read(got.file.path()).unwrap(), b"weights");
        // The staged file is hidden until it is persisted.
        let name = got
            .file
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(name.starts_with(".partial-"), "{name}");
        let e = storage
            .download(&location, dir.path(), 3)
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::TooLarge);
    }

    #[tokio::test]
    async fn a_local_upload_lands_whole_and_a_prefix_lists_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("in.bin");
        std::fs::write(&source, vec![7u8; 100_000]).unwrap();
        let storage = Storage::new(S3Settings::default());
        let target =
            Location::parse(&format!("file://{}/out/a/b.bin", dir.path().display())).unwrap();
        assert_eq!(storage.upload(&source, &target).await.unwrap(), 100_000);
        let listed = storage
            .list(&Location::parse(&dir.path().join("out").display().to_string()).unwrap())
            .await
            .unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (listed[0].key.as_str(), listed[0].size),
            ("a/b.bin", 100_000)
        );
        let missing = storage
            .head(&Location::parse(&dir.path().join("nope").display().to_string()).unwrap())
            .await
            .unwrap_err();
        assert_eq!(missing.kind, ErrorKind::NotFound);
    }
}
