//! A plugin author's first hour: `plinth new` writes a crate that tests, builds and serves
//! as it is, and `plinth dev` serves it (or a component file), rebuilding and swapping on
//! every change through UpdateEndpoint without failing a request, and keeping the last good
//! version when a build or a component fails.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use plinth_tests::{
    expect_success, run_cli, text, IRIS_MODEL_DIR, IRIS_SIMPLE_WASM, IRIS_WASM, SETOSA_ROW,
    WORKSPACE_ROOT,
};

const BIN: &str = env!("CARGO_BIN_EXE_plinth");

/// How long a first build of the template may take (its dependencies are mostly built
/// already, in the plugins' target directory it shares).
const BUILD_TIMEOUT: Duration = Duration::from_secs(600);

/// Variables of the outer `cargo test` that must not reach a nested cargo.
const CARGO_ENV: &[&str] = &[
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_MAKEFLAGS",
];

/// Points a nested cargo at the plugins' target directory (its dependencies are built
/// there already) with none of the outer cargo's settings.
fn nested_cargo(command: &mut Command) -> &mut Command {
    for var in CARGO_ENV {
        command.env_remove(var);
    }
    command.env(
        "CARGO_TARGET_DIR",
        Path::new(WORKSPACE_ROOT).join("plugins/target"),
    )
}

/// `plinth dev` running, its standard output collected line by line.
struct Dev {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    url: String,
    client: reqwest::blocking::Client,
}

impl Dev {
    fn start(args: &[&str], dir: &Path) -> Dev {
        let mut command = Command::new(BIN);
        command
            .arg("dev")
            .args(args)
            .args(["--bind", "127.0.0.1:0", "--poll-ms", "100"])
            .current_dir(dir)
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        nested_cargo(&mut command);
        let mut child = command.spawn().expect("plinth dev starts");
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut dev = Dev {
            child,
            lines,
            url: String::new(),
            client: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        };
        let listening = dev.wait_after(0, BUILD_TIMEOUT, |l| l.starts_with("listening on "));
        dev.url = listening["listening on ".len()..].to_owned();
        dev
    }

    /// The first output line after the first `mark` lines that `matches`; fails the test
    /// after `timeout` or if plinth dev exits.
    fn wait_after(
        &mut self,
        mark: usize,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.lines.lock().unwrap()[mark..].iter().find(|l| matches(l)) {
                return line.clone();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("plinth dev exited ({status}); it printed {:?}", self.output());
            }
            assert!(
                Instant::now() < deadline,
                "plinth dev did not print the line expected; it printed {:?}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn output(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Lines printed so far: [`Dev::wait_after`] looks at the lines after them.
    fn mark(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    /// InvokeEndpoint with one setosa row: status, content type, body.
    fn invoke(&self, endpoint: &str) -> (u16, String, String) {
        invoke(&self.client, &self.url, endpoint)
    }

    /// Invokes `endpoint` without pause from another thread until [`Load::stop`].
    fn load(&self, endpoint: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (client, url, endpoint) = (
            self.client.clone(),
            self.url.clone(),
            endpoint.to_owned(),
        );
        let running = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut answers = Vec::new();
            while !running.load(Ordering::Relaxed) {
                answers.push(invoke(&client, &url, &endpoint));
            }
            answers
        });
        Load { stop, thread }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn invoke(client: &reqwest::blocking::Client, url: &str, endpoint: &str) -> (u16, String, String) {
    let response = client
        .post(format!("{url}/endpoints/{endpoint}/invocations"))
        .header("Content-Type", "text/csv")
        .body(SETOSA_ROW)
        .send()
        .expect("plinth dev answers");
    let status = response.status().as_u16();
    let content_type = plinth_tests::header(&response, "content-type").unwrap_or_default();
    (status, content_type, response.text().unwrap_or_default())
}

/// Requests sent in the background, and what came back.
struct Load {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<(u16, String, String)>>,
}

impl Load {
    fn stop(self) -> Vec<(u16, String, String)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// Every answer was a 200; returns the content types in the order they came.
fn all_succeeded(answers: &[(u16, String, String)], what: &str) -> Vec<String> {
    let failed: Vec<_> = answers.iter().filter(|(status, ..)| *status != 200).collect();
    assert!(
        failed.is_empty(),
        "{what}: {} of {} requests failed, e.g. {:?}",
        failed.len(),
        answers.len(),
        failed.first()
    );
    answers.iter().map(|(_, t, _)| t.clone()).collect()
}

/// `plinth new` writes a crate whose tests pass and which `plinth dev` builds and serves as
/// it is; an edit is rebuilt and swapped in with no failed request, and an edit that does
/// not compile leaves the last version serving.
#[test]
fn a_new_crate_tests_serves_and_is_swapped_on_each_edit() {
    let dir = tempfile::tempdir().unwrap();
    let made = run_cli(BIN, &["new", "my-model", "--dir", dir.path().to_str().unwrap()], None);
    let made = expect_success(&made, "plinth new my-model");
    assert!(made.contains("plinth dev"), "{made}");
    let crate_dir = dir.path().join("my-model");
    // The plugins' lock file: the same dependency versions, so their builds are reused.
    std::fs::copy(
        Path::new(WORKSPACE_ROOT).join("plugins/Cargo.lock"),
        crate_dir.join("Cargo.lock"),
    )
    .unwrap();

    let tested = nested_cargo(Command::new("cargo").arg("test").current_dir(&crate_dir))
        .output()
        .unwrap();
    assert!(
        tested.status.success() && text(&tested.stdout).contains("2 passed"),
        "the template's own tests: {}\n{}",
        text(&tested.stdout),
        text(&tested.stderr)
    );

    let mut dev = Dev::start(&[crate_dir.to_str().unwrap()], dir.path());
    let (status, content_type, body) = dev.invoke("my-model");
    assert_eq!((status, content_type.as_str()), (200, "application/json"), "{body}");
    let probabilities: Vec<Vec<f64>> = serde_json::from_str(&body).unwrap();
    assert_eq!(probabilities.len(), 1);
    assert!(probabilities[0][0] > 0.9, "setosa: {body}");

    // Answer in CSV by default from now on.
    let source = crate_dir.join("src/lib.rs");
    let code = std::fs::read_to_string(&source).unwrap();
    let edited = code.replace(
        "impl TensorModel for Model {",
        "impl TensorModel for Model {\n    const OUTPUT_TYPES: &'static [&'static str] = &[codec::CSV, codec::JSON];",
    );
    assert_ne!(edited, code);
    let load = dev.load("my-model");
    let mark = dev.mark();
    std::fs::write(&source, &edited).unwrap();
    dev.wait_after(mark, BUILD_TIMEOUT, |l| l.starts_with("serving version 2"));
    std::thread::sleep(Duration::from_millis(300));
    let answers = load.stop();
    let types = all_succeeded(&answers, "during the swap");
    assert_eq!(types.first().map(String::as_str), Some("application/json"));
    assert_eq!(types.last().map(String::as_str), Some("text/csv"));
    // Traffic moved once, from the old version to the new.
    let switches = types.windows(2).filter(|w| w[0] != w[1]).count();
    assert_eq!(switches, 1, "{types:?}");

    // A change that does not compile: the build's failure is reported, version 2 serves on.
    let mark = dev.mark();
    std::fs::write(&source, format!("{edited}\nnot rust")).unwrap();
    dev.wait_after(mark, BUILD_TIMEOUT, |l| {
        l.contains("cargo build failed") && l.contains("version 2 keeps serving")
    });
    let (status, content_type, body) = dev.invoke("my-model");
    assert_eq!((status, content_type.as_str()), (200, "text/csv"), "{body}");
    assert!(body.starts_with("1,"), "{body}");
}

/// `plinth dev --component FILE`: a new file is swapped in under load; a file that is not a
/// component is refused and the last good version keeps serving.
#[test]
fn a_component_file_is_swapped_when_it_changes_and_a_broken_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let component = dir.path().join("classifier.wasm");
    std::fs::copy(IRIS_WASM, &component).unwrap();
    let mut dev = Dev::start(
        &[
            "--component",
            component.to_str().unwrap(),
            "--model-data",
            IRIS_MODEL_DIR,
        ],
        dir.path(),
    );
    let (status, _, body) = dev.invoke("classifier");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""label":"setosa""#), "{body}");

    // Replaced the way a build does: written beside it, then renamed over it.
    let replace = |from: &Path| {
        let staged = dir.path().join("staged.wasm");
        std::fs::copy(from, &staged).unwrap();
        std::fs::rename(&staged, &component).unwrap();
    };
    let load = dev.load("classifier");
    let mark = dev.mark();
    replace(Path::new(IRIS_SIMPLE_WASM));
    dev.wait_after(mark, Duration::from_secs(120), |l| {
        l.starts_with("serving version 2")
    });
    std::thread::sleep(Duration::from_millis(300));
    let answers = load.stop();
    all_succeeded(&answers, "during the swap");
    let bodies: Vec<&str> = answers.iter().map(|(_, _, b)| b.as_str()).collect();
    assert!(bodies.first().unwrap().contains("setosa"), "{bodies:?}");
    assert!(bodies.last().unwrap().starts_with("[["), "{bodies:?}");

    let mark = dev.mark();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"\0asm not really").unwrap();
    replace(&garbage);
    dev.wait_after(mark, Duration::from_secs(120), |l| {
        l.contains("version 2 keeps serving")
    });
    let (status, _, body) = dev.invoke("classifier");
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("[["), "{body}");
}
