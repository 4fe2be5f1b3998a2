//! The server's edge against abusive clients, over raw sockets: a client that sends its
//! headers slowly (slowloris), one that sends its body slowly, an idle keep-alive connection
//! and more connections than the cap each meet their limit (set small through the
//! `plinth serve` flags) while the server keeps answering other clients; without
//! credentials, a `Host` that is not loopback (DNS rebinding) is refused everywhere but
//! `/ping`; and SIGTERM stops accepting, finishes the request in flight and exits 0.
//!
//! Each test starts its own server on `127.0.0.1:0` (see `plinth_tests::Server`).

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use plinth_tests::{Config, Model, Options, Server, StatusCode, FAULTS_WASM};

const BIN: &str = env!("CARGO_BIN_EXE_plinth");

/// A server with no endpoints, started with `flags`.
fn server_with(flags: &[&str]) -> Server {
    Server::start_with(
        BIN,
        Options {
            args: flags.iter().map(|f| f.to_string()).collect(),
            ..Options::default()
        },
    )
}

fn connect(server: &Server) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", server.port())).expect("connect");
    stream.set_nodelay(true).unwrap();
    stream
}

/// Reads one answer to a `GET /ping` (no body) from a keep-alive connection: its head.
fn read_head(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte)? {
            0 => return Err(ErrorKind::UnexpectedEof.into()),
            _ => head.push(byte[0]),
        }
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// `GET /ping` on an open connection, kept alive.
fn ping_on(stream: &mut TcpStream) -> std::io::Result<String> {
    stream.write_all(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")?;
    read_head(stream)
}

/// Sends `request` (a whole HTTP/1.1 request, which should say `Connection: close`) on a new
/// connection and reads the answer to its end.
fn exchange(server: &Server, request: &str) -> String {
    let mut stream = connect(server);
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read the answer");
    String::from_utf8_lossy(&answer).into_owned()
}

/// Waits up to `timeout` for the server to close `stream` (EOF or a reset); how long it took.
fn closed_within(stream: &mut TcpStream, timeout: Duration) -> Option<Duration> {
    let start = Instant::now();
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return None
            }
            Err(_) => return Some(start.elapsed()),
        }
    }
}

/// Other clients are answered at once while an abusive one holds its connection.
fn serves_others(server: &Server) {
    let start = Instant::now();
    assert_eq!(server.ping().status(), StatusCode::OK);
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "a ping took {:?}",
        start.elapsed()
    );
}

#[test]
fn slow_headers_are_cut_off_at_the_header_read_timeout() {
    let server = server_with(&["--header-read-timeout", "1", "--idle-timeout", "30"]);
    let mut keep_alive = connect(&server);
    let head = ping_on(&mut keep_alive).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut slow = connect(&server);
    slow.write_all(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    // Slowloris: one header byte every 100 ms, never the blank line.
    let mut trickle = slow.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        for _ in 0..100 {
            if trickle.write_all(b"X").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    serves_others(&server);
    let closed = closed_within(&mut slow, Duration::from_secs(5))
        .expect("a client sending its headers for 5 s was not disconnected");
    assert!(
        closed < Duration::from_secs(3),
        "disconnected only after {closed:?}"
    );
    serves_others(&server);
    // An idle keep-alive connection is not held to the header timeout.
    std::thread::sleep(Duration::from_millis(500));
    let head = ping_on(&mut keep_alive).expect("the keep-alive connection was closed");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    writer.join().unwrap();
}

#[test]
fn a_slow_body_is_answered_408_at_the_body_read_timeout() {
    let server = server_with(&["--body-read-timeout", "1"]);
    let mut slow = connect(&server);
    slow.write_all(
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Amz-Target: SageMaker.ListEndpoints\r\n\
          Content-Type: application/x-amz-json-1.1\r\nContent-Length: 100\r\n\r\n{",
    )
    .unwrap();
    let mut trickle = slow.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        for _ in 0..50 {
            if trickle.write_all(b" ").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    serves_others(&server);
    let start = Instant::now();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let head = read_head(&mut slow).expect("no answer to a slow body within 5 s");
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "answered after {:?}",
        start.elapsed()
    );
    assert!(
        closed_within(&mut slow, Duration::from_secs(2)).is_some(),
        "the connection stayed open after the 408"
    );
    serves_others(&server);
    writer.join().unwrap();
    // A body sent at once is unaffected.
    let answer = exchange(
        &server,
        "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Amz-Target: SageMaker.ListEndpoints\r\n\
         Content-Type: application/x-amz-json-1.1\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn an_idle_connection_is_closed_at_the_idle_timeout() {
    let server = server_with(&["--idle-timeout", "1", "--header-read-timeout", "30"]);
    let mut idle = connect(&server);
    let head = ping_on(&mut idle).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // Still open just after the answer: keep-alive works.
    let head = ping_on(&mut idle).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    serves_others(&server);
    let closed = closed_within(&mut idle, Duration::from_secs(5))
        .expect("an idle connection was still open after 5 s");
    assert!(
        closed > Duration::from_millis(700) && closed < Duration::from_secs(3),
        "closed after {closed:?}"
    );
    // A connection that never sends anything is idle too.
    let mut silent = connect(&server);
    assert!(
        closed_within(&mut silent, Duration::from_secs(5)).is_some(),
        "a silent connection was still open after 5 s"
    );
    serves_others(&server);
}

#[test]
fn connections_beyond_the_cap_wait_without_disturbing_the_open_ones() {
    let server = server_with(&["--max-connections", "2", "--idle-timeout", "30"]);
    let mut first = connect(&server);
    let mut second = connect(&server);
    for stream in [&mut first, &mut second] {
        let head = ping_on(stream).unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    // A third connection is not served while two are open...
    let mut third = connect(&server);
    third
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let waited = ping_on(&mut third);
    assert!(
        waited
            .as_ref()
            .is_err_and(|e| matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "a connection over the cap was answered: {waited:?}"
    );
    // ...the open ones are...
    for stream in [&mut first, &mut second] {
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let head = ping_on(stream).unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    // ...and once one closes, the waiting one is answered.
    drop(first);
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let head = read_head(&mut third).expect("the waiting connection was not served");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[test]
fn without_credentials_only_loopback_hosts_are_served() {
    let server = server_with(&[]);
    let request = |method: &str, path: &str, host: &str| {
        exchange(
            &server,
            &format!(
                "{method} {path} HTTP/1.1\r\nHost: {host}\r\nX-Amz-Target: SageMaker.ListEndpoints\r\n\
                 Content-Type: application/x-amz-json-1.1\r\nContent-Length: 2\r\n\
                 Connection: close\r\n\r\n{{}}"
            ),
        )
    };
    let port = server.port();
    for host in [
        "rebound.example",
        "rebound.example:8080",
        "127.0.0.1.nip.io",
    ] {
        for (method, path) in [
            ("POST", "/"),
            ("POST", "/endpoints/any/invocations"),
            ("GET", "/metrics"),
        ] {
            let answer = request(method, path, host);
            assert!(
                answer.starts_with("HTTP/1.1 403"),
                "{host} {path}: {answer}"
            );
            assert!(
                answer.contains("AccessDeniedException")
                    && answer.contains("is not loopback")
                    && answer.contains("DNS rebinding"),
                "{host} {path}: {answer}"
            );
        }
        let answer = request("GET", "/ping", host);
        assert!(answer.starts_with("HTTP/1.1 200"), "{host} /ping: {answer}");
    }
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "localhost".to_string(),
        format!("[::1]:{port}"),
    ] {
        let answer = request("POST", "/", &host);
        assert!(answer.starts_with("HTTP/1.1 200"), "{host}: {answer}");
        let answer = request("GET", "/metrics", &host);
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "{host} /metrics: {answer}"
        );
    }
}

#[test]
fn sigterm_finishes_the_request_in_flight_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::new()
        .endpoint(
            Model::new("faults", FAULTS_WASM).env("FAULT_DELAY_MS", "3000"),
            1,
        )
        .to_toml();
    std::fs::write(dir.path().join("plinth.toml"), config).unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--bind", "127.0.0.1:0", "--drain-timeout", "20"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(dir.path().join("plinth.toml"))
        .arg("--artifact-root")
        .arg(plinth_tests::WORKSPACE_ROOT)
        .current_dir(dir.path())
        .env_remove("PLINTH_CONFIG")
        .env_remove("PLINTH_CREDENTIALS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run plinth serve");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let url = loop {
        line.clear();
        if stdout.read_line(&mut line).unwrap() == 0 {
            let _ = child.kill();
            panic!("plinth serve exited before listening: {:?}", child.wait());
        }
        if let Some(url) = line.trim().strip_prefix("listening on ") {
            break url.trim_end_matches('/').to_string();
        }
    };
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();

    let invoke_url = format!("{url}/endpoints/faults/invocations");
    let in_flight = std::thread::spawn(move || {
        let response = reqwest::blocking::Client::new()
            .post(invoke_url)
            .header("content-type", "text/plain")
            .body("fine")
            .timeout(Duration::from_secs(30))
            .send();
        response.map(|r| (r.status(), r.text().unwrap_or_default()))
    });
    // Well inside the 3 s the guest sleeps.
    std::thread::sleep(Duration::from_millis(1000));
    let sent = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());

    // New connections are refused soon after, while the request is still in flight.
    let refused = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => break sent.elapsed(),
            _ if sent.elapsed() > Duration::from_secs(2) => {
                panic!("still accepting connections 2 s after SIGTERM")
            }
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    assert!(
        !in_flight.is_finished(),
        "the request ended before the listener closed ({refused:?})"
    );

    let (status, body) = in_flight
        .join()
        .unwrap()
        .expect("the request in flight at SIGTERM got no answer");
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    assert_eq!(body, "ok");

    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("plinth serve still running 10 s after the request in flight ended");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "plinth serve exited with {exit}");
}
