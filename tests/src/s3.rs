//! An S3-compatible server for the tests of `s3://` locations: moto's, from `.venv`
//! (`tests/run` and `.ci/run` install `moto[server]` there), one per test binary.
//!
//! [`S3::shared`] starts it on first use, through `tests/python/s3_setup.py serve`, on
//! `127.0.0.1` at a port the OS picks, and waits for it (up to [`S3_START_TIMEOUT`]). The
//! server serves until its stdin closes; the harness holds the other end of that pipe for
//! the life of the test process and never writes to it, so the server exits with the test
//! binary however that ends (normal exit, panic, SIGKILL) and never outlives the run.
//!
//! Authentication is enforced the way moto offers it: the server starts with
//! `INITIAL_NO_AUTH_ACTION_COUNT` set to the number of requests `s3_setup.py setup` makes
//! unsigned (create an IAM user, give it an inline policy allowing `s3:*` on `*`, create its
//! access key); from then on moto checks every request's SigV4 signature against the keys
//! in its IAM and the action against their policies. `setup` checks that the new key is
//! accepted and a wrong secret refused (`SignatureDoesNotMatch`) before the harness hands
//! the key out as [`S3::access_key_id`] / [`S3::secret_access_key`]. Requests that are not
//! signed at all are answered with a 500, not a 403 (a moto quirk), and every request must
//! carry `x-amz-content-sha256`, as on AWS.
//!
//! Objects are put with boto3 (`s3_setup.py`, path-style addressing), signed with that key;
//! [`S3::server_env`] is the environment that points `plinth serve` at the server.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::WORKSPACE_ROOT;

/// How long moto may take to start and print its address (it takes about half a second).
pub const S3_START_TIMEOUT: Duration = Duration::from_secs(30);

/// The region the server and its clients use.
pub const S3_REGION: &str = "us-east-1";

/// An S3-compatible server (moto's, from `.venv`) with authentication enforced, and the
/// one key it accepts.
pub struct S3 {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The access key id of the IAM user allowed `s3:*` on everything.
    pub access_key_id: String,
    /// Its secret access key.
    pub secret_access_key: String,
    /// [`S3_REGION`].
    pub region: String,
    python: PathBuf,
    log: Arc<Mutex<String>>,
    /// The server's stdin: it exits when this closes, that is, with the test process.
    _lifeline: ChildStdin,
}

/// Why there is no shared server.
enum Unavailable {
    /// Something optional is not installed: the tests that need it are [`crate::skipped`].
    Missing(String),
    /// It is installed but did not work: the tests that need it fail.
    Failed(String),
}

/// The exit status of `s3_setup.py serve` when moto is not installed.
const MOTO_MISSING: i32 = 3;

static SHARED: OnceLock<Result<S3, Unavailable>> = OnceLock::new();

impl S3 {
    /// The server shared by every test of this binary, started on first use (in about a
    /// second, with the key made and checked); without `.venv` or moto in it,
    /// [`crate::skipped`] (`None` locally, a panic with `CI=true`). Panics if moto is
    /// installed but does not start, with its stderr.
    pub fn shared(test: &str) -> Option<&'static S3> {
        match SHARED.get_or_init(S3::start) {
            Ok(s3) => Some(s3),
            Err(Unavailable::Missing(missing)) => crate::skipped(
                test,
                missing,
                "run `tests/run` (or `.ci/run`), which installs moto[server] into .venv",
            ),
            Err(Unavailable::Failed(why)) => panic!("{test}: the S3 server (moto) {why}"),
        }
    }

    fn start() -> Result<S3, Unavailable> {
        let python = Path::new(WORKSPACE_ROOT).join(".venv/bin/python");
        if !python.exists() {
            return Err(Unavailable::Missing(format!(
                "{} is missing",
                python.display()
            )));
        }

        let started = Instant::now();
        let mut child = Command::new(&python)
            .arg(script())
            .arg("serve")
            .env_remove("INITIAL_NO_AUTH_ACTION_COUNT")
            .env_remove("MOTO_PORT")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Unavailable::Failed(format!("could not run {}: {e}", python.display())))?;

        let log = crate::collect_output(child.stderr.take().expect("piped stderr"));
        let (tx, rx) = mpsc::channel();
        let out_pipe = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            let mut lines = BufReader::new(out_pipe).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so that the server never blocks on a full pipe.
            for _ in lines {}
        });

        let line = rx.recv_timeout(S3_START_TIMEOUT);
        let endpoint = line
            .as_deref()
            .ok()
            .and_then(|l| l.trim().strip_prefix("listening on "))
            .map(|url| url.trim().to_owned());
        let Some(endpoint) = endpoint else {
            let _ = child.kill();
            let status = child.wait().ok();
            if status.and_then(|s| s.code()) == Some(MOTO_MISSING) {
                return Err(Unavailable::Missing(
                    "moto (moto[server]) is not installed in .venv".into(),
                ));
            }
            // Let the stderr thread take what is left.
            std::thread::sleep(Duration::from_millis(100));
            return Err(Unavailable::Failed(format!(
                "did not come up (waited up to {S3_START_TIMEOUT:?}; first line {line:?}, exit \
                 {status:?}); stderr:\n{}",
                log.lock().unwrap()
            )));
        };
        // moto binds before it prints; a TCP connection (not a request, which would use up
        // one of the unsigned setup requests) confirms it.
        let address = endpoint.trim_start_matches("http://");
        if let Err(e) = TcpStream::connect(address) {
            let _ = child.kill();
            return Err(Unavailable::Failed(format!(
                "printed {endpoint} but refuses connections ({e}); stderr:\n{}",
                log.lock().unwrap()
            )));
        }
        let lifeline = child.stdin.take().expect("piped stdin");
        // The child is not waited for: it exits when the lifeline closes, with this process.
        drop(child);

        let mut s3 = S3 {
            endpoint,
            access_key_id: String::new(),
            secret_access_key: String::new(),
            region: S3_REGION.to_owned(),
            python,
            log,
            _lifeline: lifeline,
        };
        let keys = s3
            .run(&["setup", &s3.endpoint.clone()], None, None)
            .map_err(Unavailable::Failed)?;
        let parsed: serde_json::Value = serde_json::from_str(&keys).unwrap_or_default();
        let (Some(id), Some(secret)) = (
            parsed["access_key_id"].as_str(),
            parsed["secret_access_key"].as_str(),
        ) else {
            return Err(Unavailable::Failed(format!(
                "setup printed {keys:?}, not the key as JSON"
            )));
        };
        s3.access_key_id = id.to_owned();
        s3.secret_access_key = secret.to_owned();
        eprintln!(
            "S3 (moto) at {} with authentication, ready in {:.1?}",
            s3.endpoint,
            started.elapsed()
        );
        Ok(s3)
    }

    /// The environment for `plinth serve` (as [`crate::Options::env`]) that makes it reach
    /// this server with the valid key: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_REGION`, `AWS_ENDPOINT_URL_S3` set, `AWS_SESSION_TOKEN` and `AWS_PROFILE` removed.
    pub fn server_env(&self) -> Vec<(String, Option<String>)> {
        self.env_with(&self.access_key_id, &self.secret_access_key)
    }

    /// [`S3::server_env`] with a wrong secret key: every request is refused with a 403
    /// `SignatureDoesNotMatch`.
    pub fn server_env_with_wrong_secret(&self) -> Vec<(String, Option<String>)> {
        self.env_with(&self.access_key_id, &format!("{}x", self.secret_access_key))
    }

    /// The environment a boto3 test script (`tests/python/plinth_clients.py` `s3_client`)
    /// reaches this server with, and its `bucket`: `BUCKET`, `S3_ENDPOINT`,
    /// `S3_ACCESS_KEY_ID`, `S3_SECRET_ACCESS_KEY`.
    pub fn python_env<'a>(&'a self, bucket: &'a str) -> [(&'static str, &'a str); 4] {
        [
            ("BUCKET", bucket),
            ("S3_ENDPOINT", &self.endpoint),
            ("S3_ACCESS_KEY_ID", &self.access_key_id),
            ("S3_SECRET_ACCESS_KEY", &self.secret_access_key),
        ]
    }

    fn env_with(&self, access_key_id: &str, secret: &str) -> Vec<(String, Option<String>)> {
        let set = |name: &str, value: &str| (name.to_owned(), Some(value.to_owned()));
        vec![
            set("AWS_ACCESS_KEY_ID", access_key_id),
            set("AWS_SECRET_ACCESS_KEY", secret),
            set("AWS_REGION", &self.region),
            set("AWS_ENDPOINT_URL_S3", &self.endpoint),
            ("AWS_SESSION_TOKEN".to_owned(), None),
            ("AWS_PROFILE".to_owned(), None),
        ]
    }

    /// Creates `bucket` (boto3 `create_bucket`); panics if S3 refuses. Creating one that
    /// exists already succeeds, as on AWS in us-east-1: tests sharing the server should
    /// still use buckets (or keys) of their own.
    #[track_caller]
    pub fn create_bucket(&self, bucket: &str) {
        self.client(&["create-bucket", &self.endpoint, bucket], None);
    }

    /// Uploads the file at `path` as `bucket/key` with boto3 `upload_file` (multipart above
    /// its 8 MiB threshold); panics if that fails.
    #[track_caller]
    pub fn put_file(&self, bucket: &str, key: &str, path: &Path) {
        let path = path.to_str().expect("a path that is text");
        self.client(&["put-file", &self.endpoint, bucket, key, path], None);
    }

    /// Puts `bytes` as `bucket/key` (boto3 `put_object`); panics if that fails.
    #[track_caller]
    pub fn put_bytes(&self, bucket: &str, key: &str, bytes: &[u8]) {
        self.client(&["put-bytes", &self.endpoint, bucket, key], Some(bytes));
    }

    /// `s3://bucket/key`.
    pub fn url(&self, bucket: &str, key: &str) -> String {
        format!("s3://{bucket}/{key}")
    }

    /// Everything the server has written to stderr so far: one line per request, with its
    /// method, path and status (e.g. `"GET /models/model.tar.gz HTTP/1.1" 200`).
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    #[track_caller]
    fn client(&self, args: &[&str], stdin: Option<&[u8]>) -> String {
        let keys = (self.access_key_id.as_str(), self.secret_access_key.as_str());
        self.run(args, stdin, Some(keys))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs `s3_setup.py ARGS` with `stdin`, signing with `keys` (none: no AWS keys at all),
    /// with none of the developer's own AWS settings; its stdout, or why it failed.
    fn run(
        &self,
        args: &[&str],
        stdin: Option<&[u8]>,
        keys: Option<(&str, &str)>,
    ) -> Result<String, String> {
        let mut command = Command::new(&self.python);
        command.arg(script()).args(args);
        for var in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_S3",
        ] {
            command.env_remove(var);
        }
        command
            .env("AWS_REGION", &self.region)
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
        if let Some((id, secret)) = keys {
            command
                .env("AWS_ACCESS_KEY_ID", id)
                .env("AWS_SECRET_ACCESS_KEY", secret);
        }
        let mut child = command
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("could not run {}: {e}", self.python.display()))?;
        if let Some(bytes) = stdin {
            let mut pipe = child.stdin.take().expect("piped stdin");
            let bytes = bytes.to_vec();
            // Written from a thread so that a large body cannot deadlock against the output.
            std::thread::spawn(move || {
                let _ = pipe.write_all(&bytes);
            });
        }
        let output = child
            .wait_with_output()
            .map_err(|e| format!("waiting for s3_setup.py: {e}"))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            return Ok(stdout);
        }
        Err(format!(
            "s3_setup.py {args:?} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}\nmoto's stderr \
             (last 4000 bytes):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            tail(&self.log(), 4000)
        ))
    }
}

/// `tests/python/s3_setup.py`.
fn script() -> PathBuf {
    Path::new(WORKSPACE_ROOT).join("tests/python/s3_setup.py")
}

/// The last `n` bytes of `text` (or a little more, to stay on a character boundary).
fn tail(text: &str, n: usize) -> &str {
    let mut start = text.len().saturating_sub(n);
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    &text[start..]
}
