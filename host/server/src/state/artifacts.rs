//! Model artifacts (`ModelDataUrl`, and a component's `Image`) as local paths: a path or a
//! `file://` URL. The artifact becomes the directory a guest sees as `/opt/ml/model`: a
//! directory is used in place; a `.tar.gz` (or plain `.tar`), SageMaker's `model.tar.gz`, is
//! unpacked once into `<data-dir>/artifacts/<sha256>/`; any other single file is placed there
//! alone. Unpacking goes to a temporary directory first, is synced to disk and renamed into
//! place, so a crash never leaves a half-unpacked artifact that looks complete.
//!
//! Only a directory or a regular file is an artifact: a FIFO or a device (`/dev/zero`) is
//! refused before anything is read. A file is read within [`MAX_ARTIFACT_BYTES`]; an archive
//! unpacks to at most [`MAX_UNPACKED_BYTES`] (entry sizes as the archive declares them,
//! PAX headers included) in at most [`MAX_ENTRIES`] entries.

use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The most an archive may unpack to.
const MAX_UNPACKED_BYTES: u64 = 16 << 30;
/// The largest artifact file (an archive, or a single file).
const MAX_ARTIFACT_BYTES: u64 = 16 << 30;
/// The most entries an archive may hold.
const MAX_ENTRIES: u64 = 10_000;

/// A local path from a field that holds a path or a `file://` URL.
pub(crate) fn local_path(field: &str, value: &str) -> Result<PathBuf, String> {
    let path = value.strip_prefix("file://").unwrap_or(value);
    if path.contains("://") {
        return Err(format!(
            "{field} {value:?}: only s3:// URIs, local paths and file:// URLs are supported"
        ));
    }
    if path.is_empty() {
        return Err(format!("{field} must not be empty"));
    }
    Ok(PathBuf::from(path))
}

/// The directories a model's `Image` and `ModelDataUrl` may name paths under (`plinth serve
/// --artifact-root`, and a deployment file's own directory for the file). `None` inside: no
/// restriction (embedding, the in-process tests).
#[derive(Debug, Clone, Default)]
pub(crate) struct Roots(Option<Vec<PathBuf>>);

impl Roots {
    /// Only paths under `dirs` (each must exist; symlinks in them are resolved).
    pub(crate) fn under(dirs: &[PathBuf]) -> Result<Self, String> {
        dirs.iter()
            .map(|d| {
                d.canonicalize()
                    .map_err(|e| format!("artifact root {}: {e}", d.display()))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|dirs| Self(Some(dirs)))
    }

    /// No restriction.
    pub(crate) fn anywhere() -> Self {
        Self(None)
    }

    /// `value` (the member `member`: a path or `file://` URL) as a path under a root, or a
    /// refusal that names the member and says nothing of the host: whether a path outside
    /// the roots exists is never looked at, and a path inside that leads outside (a link) is
    /// refused alike.
    pub(crate) fn check(&self, member: &str, value: &str) -> Result<String, String> {
        let path = local_path(member, value)?;
        let Some(roots) = &self.0 else {
            return Ok(value.to_string());
        };
        let outside = || outside(member, value);
        let lexical = lexically_under(roots, path).ok_or_else(outside)?;
        let real = lexical
            .canonicalize()
            .map_err(|_| format!("{member} {value:?}: nothing there"))?;
        if !roots.iter().any(|r| real.starts_with(r)) {
            return Err(outside());
        }
        Ok(real.display().to_string())
    }
}

impl Roots {
    /// `value` (as [`Roots::check`] takes it) opened (a file or a directory), with the path
    /// [`Roots::check`] would give: the real path checked against the roots after opening,
    /// by the open file's own name, so that a link swapped in meanwhile cannot lead outside,
    /// in a few system calls where resolving the path walks it. Opened to `read`, or only
    /// to look at (`O_PATH`); never blocking (a FIFO) or taking a terminal.
    pub(crate) fn open(
        &self,
        member: &str,
        value: &str,
        read: bool,
    ) -> Result<(std::fs::File, String), String> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = local_path(member, value)?;
        let nothing = || format!("{member} {value:?}: nothing there");
        let flags = if read {
            libc::O_NONBLOCK | libc::O_NOCTTY
        } else {
            libc::O_PATH
        };
        let open = |path: &Path| {
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(flags)
                .open(path)
        };
        let Some(roots) = &self.0 else {
            let file = open(&path).map_err(|_| nothing())?;
            return Ok((file, value.to_string()));
        };
        let outside = || outside(member, value);
        let lexical = lexically_under(roots, path).ok_or_else(outside)?;
        let file = open(&lexical).map_err(|_| nothing())?;
        let real = {
            use std::os::fd::AsRawFd;
            std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
                .or_else(|_| lexical.canonicalize())
                .map_err(|_| nothing())?
        };
        if !roots.iter().any(|r| real.starts_with(r)) {
            return Err(outside());
        }
        Ok((file, real.display().to_string()))
    }
}

/// The refusal of a path outside the roots: it names the member and says nothing of the host.
fn outside(member: &str, value: &str) -> String {
    format!(
        "{member} {value:?} is not under an artifact root of this server (plinth serve \
         --artifact-root DIR names the directories models may come from)"
    )
}

/// `path` made absolute with `.` and `..` resolved by name, if that is under one of
/// `roots` (nothing on disk looked at).
fn lexically_under(roots: &[PathBuf], path: PathBuf) -> Option<PathBuf> {
    let absolute = if path.is_absolute() {
        path
    } else {
        std::env::current_dir().ok()?.join(path)
    };
    let lexical = normalise(&absolute);
    roots
        .iter()
        .any(|r| lexical.starts_with(r))
        .then_some(lexical)
}

/// `path` with `.` and `..` resolved by name alone (no symlink followed).
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The largest component file.
const MAX_COMPONENT_BYTES: u64 = 1 << 30;

/// Keep a copy of the component `image` names (read from `path`: where it resolved, under
/// the artifact roots) in `cache`, under its content digest, and give the digest
/// (`sha256:<hex>`): what a model runs from then on, whatever happens to the file it came
/// from.
pub(crate) fn keep_component(cache: &Path, image: &str, path: &str) -> Result<String, String> {
    let bytes = read_component(path)?;
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    let kept = kept_component(cache, &digest, image);
    if !kept.is_file() {
        let dir = kept.parent().unwrap_or(cache);
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create the artifact cache {}: {e}", dir.display()))?;
        let mut staged = tempfile::NamedTempFile::new_in(dir)
            .map_err(|e| format!("cannot create a file in {}: {e}", dir.display()))?;
        std::io::Write::write_all(&mut staged, &bytes)
            .and_then(|()| staged.as_file().sync_all())
            .map_err(|e| format!("cannot keep the component: {e}"))?;
        staged
            .persist(&kept)
            .map_err(|e| format!("cannot keep the component: {e}"))?;
        sync_dir(dir).map_err(|e| format!("cannot sync the artifact cache: {e}"))?;
    }
    Ok(digest)
}

/// The digest of the component `image` names now.
pub(crate) fn component_digest(image: &str) -> Result<String, String> {
    Ok(format!(
        "sha256:{}",
        hex::encode(Sha256::digest(read_component(image)?))
    ))
}

/// The kept component of digest `digest` that `image` named: `components/<hex>/<its file
/// name>` in the cache (the file name kept, so that messages about the component name it).
pub(crate) fn kept_component(cache: &Path, digest: &str, image: &str) -> PathBuf {
    let file_name = local_path("Image", image)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_owned()))
        .unwrap_or_else(|| "component.wasm".into());
    cache
        .join("components")
        .join(digest.trim_start_matches("sha256:"))
        .join(file_name)
}

/// The bytes of a component: a regular file within [`MAX_COMPONENT_BYTES`].
fn read_component(image: &str) -> Result<Vec<u8>, String> {
    let path = local_path("Image", image)?;
    let metadata = std::fs::metadata(&path).map_err(|e| format!("Image {image:?}: {e}"))?;
    if !metadata.is_file() {
        return Err(format!("Image {image:?} is not a regular file"));
    }
    if metadata.len() > MAX_COMPONENT_BYTES {
        return Err(format!(
            "Image {image:?} is {} bytes; the largest component is {MAX_COMPONENT_BYTES} bytes",
            metadata.len()
        ));
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    std::fs::File::open(&path)
        .and_then(|f| f.take(MAX_COMPONENT_BYTES).read_to_end(&mut bytes))
        .map_err(|e| format!("Image {image:?}: {e}"))?;
    Ok(bytes)
}

/// Keep the artifact `url` names in `cache` under its content digest (an archive unpacked,
/// a single file alone in its directory, a directory copied), and give the digest
/// (`sha256:<hex>`: of the file's bytes, or of a directory's tree, [`tree_digest`]).
pub(crate) fn keep(cache: &Path, url: &str) -> Result<String, String> {
    let path = local_path("ModelDataUrl", url)?;
    let metadata = std::fs::metadata(&path)
        .map_err(|e| format!("ModelDataUrl {url:?}: cannot read {}: {e}", path.display()))?;
    if !metadata.is_dir() {
        let dir = resolve(cache, url)?;
        let hex = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        return Ok(format!("sha256:{hex}"));
    }
    let hex = tree_digest(&path, url)?;
    let target = cache.join(&hex);
    if target.is_dir() {
        return Ok(format!("sha256:{hex}"));
    }
    std::fs::create_dir_all(cache)
        .map_err(|e| format!("cannot create the artifact cache {}: {e}", cache.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".copying-")
        .tempdir_in(cache)
        .map_err(|e| format!("cannot create a directory in {}: {e}", cache.display()))?;
    copy_tree(&path, staging.path()).map_err(|e| format!("ModelDataUrl {url:?}: {e}"))?;
    // The copy must be what was digested: a directory that changed meanwhile is refused.
    if tree_digest(staging.path(), url)? != hex {
        return Err(format!("ModelDataUrl {url:?} changed while it was copied"));
    }
    sync_tree(staging.path()).map_err(|e| format!("cannot sync the kept artifact: {e}"))?;
    let staged = staging.keep();
    if std::fs::rename(&staged, &target).is_err() {
        let _ = std::fs::remove_dir_all(&staged);
    }
    sync_dir(cache).map_err(|e| format!("cannot sync the artifact cache: {e}"))?;
    Ok(format!("sha256:{hex}"))
}

/// The digest the artifact `url` names has now (what [`keep`] would record), without keeping
/// it.
pub(crate) fn digest(url: &str) -> Result<String, String> {
    let path = local_path("ModelDataUrl", url)?;
    let metadata = std::fs::metadata(&path).map_err(|e| format!("ModelDataUrl {url:?}: {e}"))?;
    if metadata.is_dir() {
        return Ok(format!("sha256:{}", tree_digest(&path, url)?));
    }
    let bytes = std::fs::read(&path).map_err(|e| format!("ModelDataUrl {url:?}: {e}"))?;
    Ok(format!("sha256:{}", hex::encode(Sha256::digest(&bytes))))
}

/// The kept artifact directory of digest `digest`.
pub(crate) fn kept(cache: &Path, digest: &str) -> Result<PathBuf, String> {
    let dir = cache.join(digest.trim_start_matches("sha256:"));
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(format!(
            "the model's artifact {digest} is missing from the data directory"
        ))
    }
}

/// A model directory used where it lies (a multi-model variant's): only regular files and
/// directories (a link could lead the host's graph loading outside it), at most
/// [`MAX_ARTIFACT_BYTES`] in all.
pub(crate) fn check_model_dir(dir: &Path) -> Result<(), String> {
    let mut files = Vec::new();
    list_files(dir, Path::new(""), &mut files)?;
    let mut total = 0u64;
    for file in &files {
        total += std::fs::metadata(dir.join(file))
            .map_err(|e| e.to_string())?
            .len();
        if total > MAX_ARTIFACT_BYTES {
            return Err(format!(
                "{} holds more than {MAX_ARTIFACT_BYTES} bytes, the largest artifact",
                dir.display()
            ));
        }
    }
    Ok(())
}

/// A directory's digest: SHA-256 over its regular files in path order, each as its path
/// relative to `dir`, a NUL, its length (8 bytes, little-endian) and its bytes. A link or a
/// special file inside is refused.
fn tree_digest(dir: &Path, url: &str) -> Result<String, String> {
    let mut files = Vec::new();
    list_files(dir, Path::new(""), &mut files).map_err(|e| format!("ModelDataUrl {url:?}: {e}"))?;
    files.sort();
    let mut hasher = Sha256::new();
    for relative in files {
        let bytes =
            std::fs::read(dir.join(&relative)).map_err(|e| format!("ModelDataUrl {url:?}: {e}"))?;
        hasher.update(relative.to_string_lossy().as_bytes());
        hasher.update([0]);
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The regular files under `dir/relative`, by path relative to `dir`.
fn list_files(dir: &Path, relative: &Path, files: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir.join(relative)).map_err(|e| e.to_string())?;
    for entry in entries {
        let entry = entry.map_err(|e| e.to_string())?;
        let kind = entry.file_type().map_err(|e| e.to_string())?;
        let path = relative.join(entry.file_name());
        if kind.is_dir() {
            list_files(dir, &path, files)?;
        } else if kind.is_file() {
            files.push(path);
        } else {
            return Err(format!(
                "{} is a link or special file; an artifact directory may hold only regular \
                 files and directories",
                path.display()
            ));
        }
    }
    Ok(())
}

/// Copy the regular files and directories under `from` into `to`.
fn copy_tree(from: &Path, to: &Path) -> Result<(), String> {
    let mut files = Vec::new();
    list_files(from, Path::new(""), &mut files)?;
    for relative in files {
        let target = to.join(&relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        std::fs::copy(from.join(&relative), &target).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Remove from `cache` what no model keeps: artifact directories and components whose
/// digest (hex) is not in `keep`, and what an interrupted unpack or copy left behind (over an
/// hour old: a younger one may be in progress). Gives how many entries went. (The policy: what a model keeps lives as long as a model keeps it;
/// CreateModel of the same bytes again keeps them again.)
pub(crate) fn collect_garbage(cache: &Path, keep: &std::collections::HashSet<String>) -> usize {
    fn remove(path: &Path) -> bool {
        if path.is_dir() {
            std::fs::remove_dir_all(path).is_ok()
        } else {
            std::fs::remove_file(path).is_ok()
        }
    }
    let is_digest = |name: &str| name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
    let mut removed = 0;
    // The remote artifacts' directories (`s3/`, `state::remote`) are shared by object
    // version, and multi-model archives by digest, not kept by model: only what an
    // interrupted fetch or unpack left there goes.
    let s3 = cache.join("s3");
    let dirs = [
        (cache.to_path_buf(), true),
        (cache.join("components"), true),
        (s3.clone(), false),
        (s3.join("objects"), false),
        (s3.join("index"), false),
        (s3.join("pins"), false),
        (s3.join("components"), false),
        (cache.join(MULTI_MODEL_DIR), false),
    ];
    for (dir, by_digest) in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let unused = by_digest && is_digest(&name) && !keep.contains(&name);
            let stale = || {
                entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > std::time::Duration::from_secs(3600))
            };
            let leftover = name.starts_with('.') && stale();
            if (unused || leftover) && remove(&entry.path()) {
                removed += 1;
            }
        }
    }
    removed
}

/// Where multi-model variants unpack the archives of the models they load
/// (`fleet::multi_model`), by content digest: shared by every variant, not kept by any model,
/// so garbage collection takes only what an interrupted unpack left there.
pub(crate) const MULTI_MODEL_DIR: &str = "multi-model";

/// The directory to mount for `url`, unpacking into `cache` if needed. A file is first
/// copied into the cache as a stream, its SHA-256 taken on the way, and unpacked from that
/// copy ([`unpack_file`]): what is unpacked is what was digested, and no artifact is held
/// in memory whole.
pub(crate) fn resolve(cache: &Path, url: &str) -> Result<PathBuf, String> {
    let path = local_path("ModelDataUrl", url)?;
    let metadata = std::fs::metadata(&path)
        .map_err(|e| format!("ModelDataUrl {url:?}: cannot read {}: {e}", path.display()))?;
    if metadata.is_dir() {
        return Ok(path);
    }
    if !metadata.is_file() {
        return Err(format!(
            "ModelDataUrl {url:?} is neither a directory nor a regular file (a device, FIFO or \
             socket is not an artifact)"
        ));
    }
    if metadata.len() > MAX_ARTIFACT_BYTES {
        return Err(format!(
            "ModelDataUrl {url:?} is {} bytes; the largest artifact is {MAX_ARTIFACT_BYTES} bytes",
            metadata.len()
        ));
    }
    std::fs::create_dir_all(cache)
        .map_err(|e| format!("cannot create the artifact cache {}: {e}", cache.display()))?;
    let mut staged = tempfile::Builder::new()
        .prefix(".copying-")
        .tempfile_in(cache)
        .map_err(|e| format!("cannot create a file in {}: {e}", cache.display()))?;
    let mut hashing = HashingWriter {
        inner: staged.as_file_mut(),
        sha: Sha256::new(),
    };
    let copied = std::fs::File::open(&path)
        .and_then(|f| std::io::copy(&mut f.take(MAX_ARTIFACT_BYTES + 1), &mut hashing))
        .map_err(|e| format!("ModelDataUrl {url:?}: cannot read {}: {e}", path.display()))?;
    if copied > MAX_ARTIFACT_BYTES {
        return Err(format!(
            "ModelDataUrl {url:?} grew past {MAX_ARTIFACT_BYTES} bytes while it was read"
        ));
    }
    let digest = hex::encode(hashing.sha.finalize());
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    unpack_file(cache, staged.path(), &digest, &file_name, Packing::Auto)
        .map_err(|e| format!("ModelDataUrl {url:?}: {e}"))
}

/// A writer that hashes what passes through it.
struct HashingWriter<'a> {
    inner: &'a mut std::fs::File,
    sha: Sha256,
}

impl std::io::Write for HashingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// How an artifact file is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Packing {
    /// A gzipped tar, a tar, or else a single file (SageMaker's `ModelDataUrl`).
    Auto,
    /// A gzipped tar and nothing else (`CompressionType` `Gzip`).
    Gzip,
    /// A single file, as it is (`CompressionType` `None`).
    Plain,
}

/// The artifact directory `cache/<digest>` for the file `file` (whose SHA-256 is `digest`),
/// unpacked as `packing` says (a single file is placed there as `file_name`) if it is not
/// there yet. Streams from the file; unpacks into a hidden directory first, synced to disk,
/// then renamed into place, so that a crash leaves nothing that looks complete.
pub(crate) fn unpack_file(
    cache: &Path,
    file: &Path,
    digest: &str,
    file_name: &str,
    packing: Packing,
) -> Result<PathBuf, String> {
    let target = cache.join(digest);
    if target.is_dir() {
        return Ok(target);
    }
    let mut head = [0u8; 262];
    let read = std::fs::File::open(file)
        .and_then(|mut f| read_up_to(&mut f, &mut head))
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let head = &head[..read];
    let gzip = head.starts_with(&[0x1f, 0x8b]);
    if packing == Packing::Gzip && !gzip {
        return Err("CompressionType is Gzip, but the object is not gzip-compressed".into());
    }
    let staging = tempfile::Builder::new()
        .prefix(".unpacking-")
        .tempdir_in(cache)
        .map_err(|e| format!("cannot create a directory in {}: {e}", cache.display()))?;
    let open = || {
        std::fs::File::open(file)
            .map(std::io::BufReader::new)
            .map_err(|e| e.to_string())
    };
    match packing {
        Packing::Auto | Packing::Gzip if gzip => {
            unpack(flate2::read::GzDecoder::new(open()?), staging.path())
        }
        Packing::Auto if is_tar(head) => unpack(open()?, staging.path()),
        _ => std::fs::copy(file, staging.path().join(file_name))
            .map(|_| ())
            .map_err(|e| e.to_string()),
    }?;
    sync_tree(staging.path()).map_err(|e| format!("cannot sync the unpacked artifact: {e}"))?;
    let staged = staging.keep();
    if let Err(e) = std::fs::rename(&staged, &target) {
        // Another unpack of the same bytes won the race; use it.
        let _ = std::fs::remove_dir_all(&staged);
        if !target.is_dir() {
            return Err(format!("cannot move the unpacked artifact into place: {e}"));
        }
    }
    sync_dir(cache).map_err(|e| format!("cannot sync the artifact cache: {e}"))?;
    Ok(target)
}

/// Read into `buf` until it is full or the reader ends; the bytes read.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Sync every file and directory under `dir` (and `dir` itself) to disk.
pub(crate) fn sync_tree(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            sync_tree(&entry.path())?;
        } else if kind.is_file() {
            std::fs::File::open(entry.path())?.sync_all()?;
        }
    }
    sync_dir(dir)
}

/// Sync a directory's entries (a rename into it, a file created in it) to disk.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// A tar archive has "ustar" at offset 257.
fn is_tar(bytes: &[u8]) -> bool {
    bytes.get(257..262) == Some(b"ustar")
}

/// Unpack regular files and directories only, inside `into`, within the size limit.
fn unpack(reader: impl Read, into: &Path) -> Result<(), String> {
    let mut archive = tar::Archive::new(reader);
    let mut total = 0u64;
    let mut count = 0u64;
    let entries = archive
        .entries()
        .map_err(|e| format!("not a valid tar archive: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("not a valid tar archive: {e}"))?;
        let kind = entry.header().entry_type();
        let name = entry
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if !(kind.is_file() || kind.is_dir()) {
            if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
                continue;
            }
            return Err(format!(
                "the archive entry {name:?} is a link or special file; only regular files and \
                 directories are allowed"
            ));
        }
        count += 1;
        if count > MAX_ENTRIES {
            return Err(format!("the archive holds more than {MAX_ENTRIES} entries"));
        }
        // The size as the archive declares it, a PAX `size` record included (the header's
        // own field may say otherwise).
        total = total.saturating_add(entry.size());
        if total > MAX_UNPACKED_BYTES {
            return Err(format!(
                "the archive unpacks to more than {MAX_UNPACKED_BYTES} bytes"
            ));
        }
        let inside = entry
            .unpack_in(into)
            .map_err(|e| format!("cannot unpack {name:?}: {e}"))?;
        if !inside {
            return Err(format!(
                "the archive entry {name:?} would unpack outside the model directory"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What no model keeps goes; the shared remote copies stay; what an interrupted fetch
    /// left goes once it is an hour old.
    #[test]
    fn garbage_is_what_no_model_keeps_and_old_leftovers() {
        let cache = tempfile::tempdir().unwrap();
        let digest = |c: char| c.to_string().repeat(64);
        let path = |p: &str| cache.path().join(p);
        for dir in [
            digest('a'),
            digest('b'),
            format!("s3/{}", digest('c')),
            "s3/objects".into(),
            "s3/index".into(),
        ] {
            std::fs::create_dir_all(path(&dir)).unwrap();
        }
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        for (file, old) in [
            ("s3/objects/.partial-old", true),
            ("s3/objects/.partial-new", false),
            ("s3/index/.index-old", true),
            ("s3/index/cafe", true),
        ] {
            let f = std::fs::File::create(path(file)).unwrap();
            if old {
                f.set_modified(hour_ago).unwrap();
            }
        }
        let keep = std::collections::HashSet::from([digest('a')]);
        assert_eq!(collect_garbage(cache.path(), &keep), 3);
        assert!(path(&digest('a')).is_dir() && !path(&digest('b')).exists());
        assert!(path(&format!("s3/{}", digest('c'))).is_dir());
        assert!(!path("s3/objects/.partial-old").exists());
        assert!(path("s3/objects/.partial-new").exists());
        assert!(!path("s3/index/.index-old").exists());
        assert!(
            path("s3/index/cafe").exists(),
            "an index entry is not a leftover"
        );
    }

    fn tar_gz(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut builder = tar::Builder::new(encoder);
        for (name, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, name, *data).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn a_tar_gz_is_unpacked_once_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("model.tar.gz");
        std::fs::write(
            &archive,
            tar_gz(&[("model.onnx", b"onnx"), ("sub/vocab.txt", b"a b")]),
        )
        .unwrap();
        let cache = dir.path().join("cache");
        let url = format!("file://{}", archive.display());
        let unpacked = resolve(&cache, &url).unwrap();
        assert_eq!(std::fs::read(unpacked.join("model.onnx")).unwrap(), b"onnx");
        assert_eq!(
            std::fs::read(unpacked.join("sub/vocab.txt")).unwrap(),
            b"a b"
        );
        // Again: the same directory, no staging left behind.
        assert_eq!(resolve(&cache, &url).unwrap(), unpacked);
        let names: Vec<_> = std::fs::read_dir(&cache).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn a_directory_is_used_in_place_and_a_file_gets_one() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        assert_eq!(
            resolve(&cache, dir.path().to_str().unwrap()).unwrap(),
            dir.path()
        );
        let file = dir.path().join("weights.bin");
        std::fs::write(&file, b"123").unwrap();
        let mounted = resolve(&cache, file.to_str().unwrap()).unwrap();
        assert_eq!(std::fs::read(mounted.join("weights.bin")).unwrap(), b"123");
    }

    #[test]
    fn bad_artifacts_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        // An s3:// artifact is fetched by `state::remote`, never read as a local path.
        let e = resolve(&cache, "s3://bucket/model.tar.gz").unwrap_err();
        assert!(e.contains("only s3:// URIs, local paths"), "{e}");
        let e = resolve(&cache, "/no/such/model.tar.gz").unwrap_err();
        assert!(e.contains("cannot read"), "{e}");
        let broken = dir.path().join("broken.tar.gz");
        std::fs::write(&broken, [0x1f, 0x8b, 0, 1, 2, 3]).unwrap();
        assert!(resolve(&cache, broken.to_str().unwrap()).is_err());

        // A symlink entry is refused.
        let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut builder = tar::Builder::new(encoder);
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        builder
            .append_link(&mut header, "passwd.onnx", "/etc/passwd")
            .unwrap();
        let linked = dir.path().join("linked.tar.gz");
        std::fs::write(&linked, builder.into_inner().unwrap().finish().unwrap()).unwrap();
        let e = resolve(&cache, linked.to_str().unwrap()).unwrap_err();
        assert!(e.contains("link"), "{e}");
        // Nothing half-unpacked is left behind.
        assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 0);
    }

    /// Under roots, only paths inside them are artifacts: outside (also through `..` or a
    /// link) is refused with the same message whether the path exists or not.
    #[test]
    fn only_paths_under_the_roots_are_artifacts() {
        let root = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("model.wasm"), b"x").unwrap();
        std::fs::write(elsewhere.path().join("secret"), b"x").unwrap();
        std::os::unix::fs::symlink(elsewhere.path().join("secret"), root.path().join("link"))
            .unwrap();
        let roots = Roots::under(&[root.path().to_path_buf()]).unwrap();
        let inside = root.path().join("model.wasm");
        let kept = roots.check("Image", inside.to_str().unwrap()).unwrap();
        assert_eq!(PathBuf::from(kept), inside.canonicalize().unwrap());
        let url = format!("file://{}", inside.display());
        assert!(roots.check("Image", &url).is_ok());
        let refused = |value: String| {
            let e = roots.check("ModelDataUrl", &value).unwrap_err();
            assert!(e.contains("not under an artifact root"), "{value}: {e}");
            assert!(e.starts_with("ModelDataUrl"), "{e}");
            e
        };
        refused("/etc/passwd".into());
        refused("/".into());
        refused("/dev/zero".into());
        refused(elsewhere.path().join("secret").display().to_string());
        refused(elsewhere.path().join("missing").display().to_string());
        refused(format!("{}/../{}", root.path().display(), "etc/passwd"));
        refused(root.path().join("link").display().to_string());
        let e = roots
            .check("Image", root.path().join("missing").to_str().unwrap())
            .unwrap_err();
        assert!(e.contains("nothing there"), "{e}");
        assert!(Roots::anywhere().check("Image", "/etc/passwd").is_ok());
        // Opening gives the same answers, the link judged by where it was opened.
        for read in [false, true] {
            let (file, real) = roots.open("Image", &url, read).unwrap();
            assert_eq!(PathBuf::from(real), inside.canonicalize().unwrap());
            assert!(file.metadata().unwrap().is_file());
            let link = root.path().join("link").display().to_string();
            let e = roots.open("InputLocation", &link, read).unwrap_err();
            assert!(e.contains("not under an artifact root"), "{e}");
            let e = roots
                .open("InputLocation", "/etc/passwd", read)
                .unwrap_err();
            assert!(e.contains("not under an artifact root"), "{e}");
            let missing = root.path().join("missing").display().to_string();
            let e = roots.open("InputLocation", &missing, read).unwrap_err();
            assert!(e.contains("nothing there"), "{e}");
        }
        // A FIFO is opened without waiting for a writer.
        let fifo = root.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let (file, _) = roots
            .open("InputLocation", fifo.to_str().unwrap(), true)
            .unwrap();
        assert!(!file.metadata().unwrap().is_file());
    }

    /// A device is no artifact: refused before anything is read (reading `/dev/zero` would
    /// never end).
    #[test]
    fn devices_are_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        for device in ["/dev/zero", "/dev/null"] {
            let e = resolve(&dir.path().join("cache"), device).unwrap_err();
            assert!(e.contains("neither a directory nor a regular file"), "{e}");
        }
    }

    /// The size limit counts the size an entry's PAX header declares, not only the header's
    /// own size field, and the entry count is capped.
    #[test]
    fn pax_sizes_and_entry_counts_are_capped() {
        fn entry(
            builder: &mut tar::Builder<Vec<u8>>,
            kind: tar::EntryType,
            name: &str,
            data: &[u8],
        ) {
            let mut header = tar::Header::new_ustar();
            header.set_entry_type(kind);
            header.set_path(name).unwrap();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append(&header, data).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let declared = MAX_UNPACKED_BYTES + 1;
        let record = format!("size={declared}\n");
        let record = format!(
            "{} {record}",
            record.len() + 1 + (record.len() + 1).to_string().len()
        );
        let mut builder = tar::Builder::new(Vec::new());
        entry(
            &mut builder,
            tar::EntryType::XHeader,
            "pax",
            record.as_bytes(),
        );
        entry(
            &mut builder,
            tar::EntryType::Regular,
            "model.onnx",
            b"small",
        );
        let archive = dir.path().join("pax.tar");
        std::fs::write(&archive, builder.into_inner().unwrap()).unwrap();
        let e = resolve(&cache, archive.to_str().unwrap()).unwrap_err();
        assert!(e.contains("unpacks to more than"), "{e}");

        let mut builder = tar::Builder::new(Vec::new());
        for i in 0..=MAX_ENTRIES {
            entry(
                &mut builder,
                tar::EntryType::Directory,
                &format!("d{i}/"),
                b"",
            );
        }
        let many = dir.path().join("many.tar");
        std::fs::write(&many, builder.into_inner().unwrap()).unwrap();
        let e = resolve(&cache, many.to_str().unwrap()).unwrap_err();
        assert!(e.contains("more than"), "{e}");
    }
}

/// The archive reader against hostile bytes: whatever an archive holds, unpacking returns
/// (an error or the files) and never panics, and nothing lands outside its directory.
/// `PLINTH_FUZZ_CASES` cases (100,000 by default).
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::Config as ProptestConfig;

    fn config() -> ProptestConfig {
        let cases = std::env::var("PLINTH_FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100_000);
        ProptestConfig {
            cases,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    /// A small valid archive: a directory, two files, a PAX record.
    fn seed() -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::XHeader);
        header.set_path("pax").unwrap();
        let record = b"20 path=d/model.onnx\n";
        header.set_size(record.len() as u64);
        header.set_cksum();
        builder.append(&header, &record[..]).unwrap();
        for (name, data) in [("d/model.onnx", &b"onnx bytes"[..]), ("w.bin", b"weights")] {
            let mut header = tar::Header::new_ustar();
            header.set_path(name).unwrap();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append(&header, data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn mutated_archives_never_panic_nor_escape(
            edits in proptest::collection::vec((0usize..2048, any::<u8>()), 0..8),
            cut in 0usize..2600,
        ) {
            let mut bytes = seed();
            for (at, value) in edits {
                if let Some(b) = bytes.get_mut(at) {
                    *b = value;
                }
            }
            bytes.truncate(cut.max(1));
            let root = tempfile::tempdir().unwrap();
            let into = root.path().join("into");
            std::fs::create_dir(&into).unwrap();
            let _ = unpack(&bytes[..], &into);
            // Nothing beside `into`.
            let beside: Vec<_> = std::fs::read_dir(root.path()).unwrap().flatten().collect();
            prop_assert_eq!(beside.len(), 1);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
            let root = tempfile::tempdir().unwrap();
            let _ = unpack(&bytes[..], root.path());
        }
    }
}
