//! `plinth dev`: a plugin author's loop. One component (a crate it builds for
//! `wasm32-wasip2`, or a `.wasm` file) and a model directory are served as one endpoint on
//! loopback, with no deployment file and no state kept; each time the crate's sources, the
//! component file or the model directory change, the component is rebuilt and the endpoint
//! moved to it through the same operations as any change (CreateModel,
//! CreateEndpointConfig, UpdateEndpoint: the new instances are started and warmed before
//! traffic moves, so no request fails). A build or a version that fails leaves the last good
//! one serving.

use crate::apply::Control;
use crate::http::listen::Limits;
use crate::serve::{start, InProcess, OnnxRuntimeArgs, Settings, StateLocation};
use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// What `plinth dev` serves.
#[derive(Debug, Clone)]
pub enum Source {
    /// A crate to build with `cargo build --release --target wasm32-wasip2`.
    Crate(PathBuf),
    /// A component file, served as it is (and again each time it changes).
    Component(PathBuf),
}

/// What `plinth dev` is told.
pub struct DevOptions {
    /// The crate or the component.
    pub source: Source,
    /// The model directory, mounted at `/opt/ml/model` (default: the crate's `model/`).
    pub model_data: Option<PathBuf>,
    /// The endpoint's name (default: the component's, `_` as `-`).
    pub endpoint: Option<String>,
    /// Where to listen (loopback only).
    pub bind: SocketAddr,
    /// The variant's instance count.
    pub instances: u32,
    /// Rebuild and swap on changes.
    pub watch: bool,
    /// How often the files are looked at.
    pub poll: Duration,
    /// Where ONNX Runtime is.
    pub onnxruntime: OnnxRuntimeArgs,
}

/// The most files under the watched paths that are looked at (a model directory may be
/// large; past this, later files' changes go unseen).
const MAX_WATCHED_FILES: usize = 10_000;

/// Run `plinth dev` until Ctrl-C or SIGTERM.
pub fn run(options: DevOptions) -> anyhow::Result<()> {
    if !options.bind.ip().is_loopback() {
        bail!("plinth dev serves loopback only (it has no credentials): use --bind 127.0.0.1:PORT");
    }
    let model_data = match (&options.model_data, &options.source) {
        (Some(dir), _) => Some(absolute(dir)?),
        (None, Source::Crate(dir)) if dir.join("model").is_dir() => {
            Some(absolute(&dir.join("model"))?)
        }
        (None, _) => None,
    };
    if let Some(dir) = model_data.as_deref().filter(|d| !d.is_dir()) {
        bail!("--model-data {}: not a directory", dir.display());
    }
    let source = match options.source {
        Source::Crate(dir) => Source::Crate(absolute(&dir)?),
        Source::Component(file) => Source::Component(absolute(&file)?),
    };
    let component = build(&source)?;
    let endpoint = match options.endpoint {
        Some(name) => name,
        None => default_endpoint_name(&component),
    };
    let settings = Settings {
        runtime: options.onnxruntime.load()?.runtime_config(),
        ..Settings::default()
    };
    let work = tempfile::tempdir().context("cannot create a temporary directory")?;
    let tokio = tokio::runtime::Runtime::new()?;
    let server = tokio.block_on(start(
        StateLocation::InMemory {
            artifacts: work.path().to_path_buf(),
        },
        settings,
    ))?;
    let mut dev = Dev {
        fleet: server.fleet.clone(),
        runtime: tokio.handle().clone(),
        endpoint,
        model_data,
        instances: options.instances,
        version: 0,
        serving: None,
    };
    dev.first(&component)?;
    let listener = tokio
        .block_on(tokio::net::TcpListener::bind(options.bind))
        .with_context(|| format!("cannot listen on {}", options.bind))?;
    let address = listener.local_addr()?;
    println!("listening on http://{address}");
    println!(
        "endpoint {0}: curl -X POST http://{address}/endpoints/{0}/invocations -H 'Content-Type: text/csv' -d '...'",
        dev.endpoint
    );
    if options.watch {
        let watched = watched(&source, dev.model_data.as_deref());
        let poll = options.poll;
        std::thread::Builder::new()
            .name("plinth-dev-watch".into())
            .spawn(move || dev.watch(&source, &watched, poll))?;
        println!("watching for changes (Ctrl-C stops)");
    }
    tokio.block_on(crate::http::listen::serve(
        listener,
        crate::http::app(server),
        Limits::default(),
        None,
        crate::serve::shutdown_signal(),
    ));
    tokio.shutdown_background();
    drop(work);
    Ok(())
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))
}

/// The component's file stem as an endpoint name (`my_model.wasm` -> `my-model`).
fn default_endpoint_name(component: &Path) -> String {
    let stem = component
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(63)
        .collect();
    let name = name.trim_matches('-');
    if name.is_empty() {
        "dev".to_owned()
    } else {
        name.to_owned()
    }
}

/// The component to serve: the crate built (its `cdylib`'s `.wasm`), or the file.
fn build(source: &Source) -> anyhow::Result<PathBuf> {
    let dir = match source {
        Source::Component(file) if file.is_file() => return Ok(file.clone()),
        Source::Component(file) => bail!("--component {}: no such file", file.display()),
        Source::Crate(dir) => dir,
    };
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        bail!(
            "{} has no Cargo.toml: run plinth dev in a plugin crate (plinth new NAME makes \
             one), or give --component FILE.wasm",
            dir.display()
        );
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    println!(
        "building {} (cargo build --release --target wasm32-wasip2)",
        dir.display()
    );
    let output = Command::new(cargo)
        .current_dir(dir)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--message-format=json-render-diagnostics",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo")?;
    if !output.status.success() {
        bail!(
            "cargo build failed ({}): its errors are above",
            output.status
        );
    }
    let manifest = std::fs::canonicalize(&manifest)?;
    let wasm = built_component(&String::from_utf8_lossy(&output.stdout), &manifest)?;
    Ok(wasm)
}

/// The `.wasm` of the `cdylib` of the package at `manifest`, from cargo's JSON messages.
fn built_component(messages: &str, manifest: &Path) -> anyhow::Result<PathBuf> {
    let mut found = Vec::new();
    for line in messages.lines() {
        let Ok(message) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let is_ours = message["manifest_path"]
            .as_str()
            .is_some_and(|p| Path::new(p) == manifest);
        let is_cdylib = message["target"]["kind"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|k| k == "cdylib"));
        if message["reason"] != "compiler-artifact" || !is_ours || !is_cdylib {
            continue;
        }
        for file in message["filenames"].as_array().into_iter().flatten() {
            if let Some(file) = file.as_str().filter(|f| f.ends_with(".wasm")) {
                found.push(PathBuf::from(file));
            }
        }
    }
    match <[PathBuf; 1]>::try_from(found) {
        Ok([wasm]) => Ok(wasm),
        Err(found) if found.is_empty() => Err(anyhow!(
            "cargo built no component for {}: its [lib] needs crate-type = [\"cdylib\"]",
            manifest.display()
        )),
        Err(found) => Err(anyhow!(
            "cargo built several components ({found:?}); give the one to serve with --component"
        )),
    }
}

/// The files whose changes cause a rebuild and a swap.
fn watched(source: &Source, model_data: Option<&Path>) -> Vec<PathBuf> {
    let mut paths = match source {
        Source::Crate(dir) => ["src", "Cargo.toml", "build.rs"]
            .iter()
            .map(|p| dir.join(p))
            .collect(),
        Source::Component(file) => vec![file.clone()],
    };
    paths.extend(model_data.map(Path::to_path_buf));
    paths
}

/// Every file under `paths` with its modification time and size, in order (hidden entries
/// and `target` directories left out).
fn fingerprint(paths: &[PathBuf]) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
    let mut files = Vec::new();
    let mut stack: Vec<PathBuf> = paths.to_vec();
    while let Some(path) = stack.pop() {
        if files.len() >= MAX_WATCHED_FILES {
            break;
        }
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                for entry in entries.flatten() {
                    let name = entry.file_name();
                    let name = name.to_string_lossy();
                    if !name.starts_with('.') && name != "target" {
                        stack.push(entry.path());
                    }
                }
            }
        } else {
            files.push((path, meta.modified().ok(), meta.len()));
        }
    }
    files.sort();
    files
}

/// The endpoint and the version serving it.
struct Dev {
    fleet: Arc<crate::fleet::Fleet>,
    runtime: tokio::runtime::Handle,
    endpoint: String,
    model_data: Option<PathBuf>,
    instances: u32,
    /// The versions made so far.
    version: u32,
    /// The version serving: its number and its component's bytes.
    serving: Option<(u32, Vec<u8>)>,
}

impl Dev {
    fn call(&self, operation: &str, input: Value) -> anyhow::Result<Value> {
        let mut control = InProcess {
            fleet: &self.fleet,
            runtime: &self.runtime,
        };
        control
            .call(operation, input)
            .map_err(|e| anyhow!("{operation}: {}: {}", e.code, e.message))
    }

    /// The names of version `n`'s model and endpoint config.
    fn names(&self, n: u32) -> String {
        let prefix: String = self.endpoint.chars().take(50).collect();
        format!("{prefix}-v{n}")
    }

    /// CreateModel and CreateEndpointConfig for a new version of `component`; its number.
    fn create_version(&mut self, component: &Path) -> anyhow::Result<u32> {
        self.version += 1;
        let n = self.version;
        let name = self.names(n);
        let mut container = json!({ "Image": component.display().to_string() });
        if let Some(dir) = &self.model_data {
            container["ModelDataUrl"] = json!(dir.display().to_string());
        }
        self.call(
            "CreateModel",
            json!({ "ModelName": name, "PrimaryContainer": container }),
        )?;
        let config = json!({
            "EndpointConfigName": name,
            "ProductionVariants": [{
                "VariantName": "AllTraffic",
                "ModelName": name,
                "InitialInstanceCount": self.instances,
            }],
        });
        if let Err(e) = self.call("CreateEndpointConfig", config) {
            self.delete_version(n);
            return Err(e);
        }
        Ok(n)
    }

    /// Remove version `n`'s endpoint config and model (best effort: the state is in memory).
    fn delete_version(&self, n: u32) {
        let name = self.names(n);
        let _ = self.call(
            "DeleteEndpointConfig",
            json!({ "EndpointConfigName": name }),
        );
        let _ = self.call("DeleteModel", json!({ "ModelName": name }));
    }

    /// Wait for the endpoint to settle; DescribeEndpoint's output.
    fn settled(&self) -> anyhow::Result<Value> {
        self.runtime.block_on(crate::fleet::deploy::settled(
            &self.fleet,
            &[self.endpoint.as_str()],
        ));
        self.call("DescribeEndpoint", json!({ "EndpointName": self.endpoint }))
    }

    /// The first version: the endpoint created and in service, or an error saying why not.
    fn first(&mut self, component: &Path) -> anyhow::Result<()> {
        let bytes = std::fs::read(component)
            .with_context(|| format!("cannot read {}", component.display()))?;
        let n = self.create_version(component)?;
        self.call(
            "CreateEndpoint",
            json!({ "EndpointName": self.endpoint, "EndpointConfigName": self.names(n) }),
        )?;
        let described = self.settled()?;
        if described["EndpointStatus"] != "InService" {
            bail!(
                "endpoint {} did not start: {}",
                self.endpoint,
                described["FailureReason"]
                    .as_str()
                    .unwrap_or("no reason given")
            );
        }
        println!("serving version {n} of {}", component.display());
        self.serving = Some((n, bytes));
        Ok(())
    }

    /// Move the endpoint to `component` (unless it is the one serving and the model
    /// directory did not change): a new version, UpdateEndpoint, and the old version's
    /// resources removed; or, if the new version fails, it removed and the old one kept.
    fn swap(&mut self, component: &Path, model_changed: bool) -> anyhow::Result<()> {
        let bytes = std::fs::read(component)
            .with_context(|| format!("cannot read {}", component.display()))?;
        let Some((old, old_bytes)) = &self.serving else {
            return self.first(component);
        };
        let old = *old;
        if *old_bytes == bytes && !model_changed {
            println!("the component did not change; version {old} keeps serving");
            return Ok(());
        }
        let started = Instant::now();
        let n = self.create_version(component)?;
        let updated = self.call(
            "UpdateEndpoint",
            json!({ "EndpointName": self.endpoint, "EndpointConfigName": self.names(n) }),
        );
        let described = updated.and_then(|_| self.settled());
        match described {
            Ok(d) if d["EndpointConfigName"] == self.names(n).as_str() => {
                self.delete_version(old);
                self.serving = Some((n, bytes));
                println!(
                    "serving version {n} (swapped in {} ms)",
                    started.elapsed().as_millis()
                );
                Ok(())
            }
            other => {
                self.delete_version(n);
                let reason = match other {
                    Ok(d) => d["FailureReason"]
                        .as_str()
                        .unwrap_or("no reason given")
                        .to_owned(),
                    Err(e) => e.to_string(),
                };
                bail!("version {n} failed, version {old} keeps serving: {reason}")
            }
        }
    }

    /// Look at the watched files every `poll`; on a change (once they stop changing),
    /// rebuild and swap.
    fn watch(mut self, source: &Source, paths: &[PathBuf], poll: Duration) {
        let model: Vec<PathBuf> = self.model_data.iter().cloned().collect();
        let mut seen = fingerprint(paths);
        let mut seen_model = fingerprint(&model);
        loop {
            std::thread::sleep(poll);
            let mut now = fingerprint(paths);
            if now == seen {
                continue;
            }
            // Editors and compilers write in several steps: wait until the files hold still.
            loop {
                std::thread::sleep(poll);
                let again = fingerprint(paths);
                if again == now {
                    break;
                }
                now = again;
            }
            seen = now;
            // The model directory counts as seen only once a version serves it: a change
            // to it that came with a failed build is still a change next time.
            let model_now = fingerprint(&model);
            let model_changed = model_now != seen_model;
            println!("change seen: rebuilding");
            let swapped = build(source).and_then(|component| self.swap(&component, model_changed));
            if swapped.is_ok() {
                seen_model = model_now;
            }
            if let Err(e) = swapped {
                let serving = self.serving.as_ref().map_or(0, |(n, _)| *n);
                println!("plinth dev: {e:#} (version {serving} keeps serving)");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_is_named_after_the_component() {
        assert_eq!(
            default_endpoint_name(Path::new("/x/my_model.wasm")),
            "my-model"
        );
        assert_eq!(default_endpoint_name(Path::new("iris.wasm")), "iris");
        assert_eq!(default_endpoint_name(Path::new("_.wasm")), "dev");
    }

    #[test]
    fn the_component_is_the_crates_cdylib() {
        let manifest = Path::new("/c/Cargo.toml");
        let artifact = |manifest: &str, kind: &str, file: &str| {
            json!({ "reason": "compiler-artifact", "manifest_path": manifest,
                    "target": { "kind": [kind] }, "filenames": [file] })
            .to_string()
        };
        let messages = [
            artifact("/sdk/Cargo.toml", "lib", "/t/libsdk.rlib"),
            "not json".to_owned(),
            artifact("/c/Cargo.toml", "cdylib", "/t/c.wasm"),
            json!({ "reason": "build-finished", "success": true }).to_string(),
        ]
        .join("\n");
        assert_eq!(
            built_component(&messages, manifest).unwrap(),
            Path::new("/t/c.wasm")
        );
        let none = built_component(&artifact("/c/Cargo.toml", "lib", "/t/c.rlib"), manifest);
        assert!(none.unwrap_err().to_string().contains("cdylib"));
    }

    #[test]
    fn a_change_to_a_watched_file_changes_the_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        std::fs::create_dir_all(dir.path().join("target")).unwrap();
        std::fs::write(dir.path().join("src/lib.rs"), "a").unwrap();
        let paths = [dir.path().to_path_buf()];
        let before = fingerprint(&paths);
        assert_eq!(before.len(), 1);
        // Build output and hidden files are not watched.
        std::fs::write(dir.path().join("target/x"), "b").unwrap();
        std::fs::write(dir.path().join(".swp"), "b").unwrap();
        assert_eq!(fingerprint(&paths), before);
        std::fs::write(dir.path().join("src/lib.rs"), "ab").unwrap();
        assert_ne!(fingerprint(&paths), before);
    }
}
