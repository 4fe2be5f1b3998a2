//! Guest stdout/stderr: each complete line goes to the log with its endpoint, variant and the
//! inference id(s) being served, and the last few KiB are kept so that a trap can be reported
//! with the panic message.
//!
//! What a guest writes costs the host linear time (each byte is looked at once; a line is
//! cut at [`MAX_LINE`] bytes), and what it logs is rate limited per instance
//! ([`Limits::LOG_LINES_PER_SECOND`], [`Limits::LOG_BYTES_PER_SECOND`]): lines over the rate
//! are dropped, counted for the variant's metric ([`Dropped`]) and summarised in one
//! warning when the second ends.

use crate::limits::Limits;
use bytes::Bytes;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// How much recent output is kept for trap reports.
const TAIL_BYTES: usize = 8 << 10;
/// The longest line logged as one; a longer one is logged in pieces of this size.
pub(crate) const MAX_LINE: usize = 8 << 10;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Default)]
struct Buffer {
    partial: Vec<u8>,
    tail: Vec<u8>,
}

/// Guest output a variant's instances dropped over their rate, since the variant started.
#[derive(Debug, Default)]
pub(crate) struct Dropped {
    pub(crate) lines: AtomicU64,
    pub(crate) bytes: AtomicU64,
}

/// One instance's logging rate: what it logged in the current second, and what it dropped.
#[derive(Clone)]
pub(crate) struct LogBudget(Arc<Mutex<Window>>);

struct Window {
    started: Instant,
    lines: u32,
    bytes: usize,
    dropped_lines: u64,
    dropped_bytes: u64,
    variant_dropped: Arc<Dropped>,
}

impl Window {
    /// Warn once about what this window dropped, if anything.
    fn summarise(&mut self, endpoint: &str, variant: &str) {
        if self.dropped_lines > 0 {
            tracing::warn!(
                target: "plinth::guest",
                endpoint = %endpoint,
                variant = %variant,
                dropped_lines = self.dropped_lines,
                dropped_bytes = self.dropped_bytes,
                "guest output over the rate limit of {} lines and {} bytes per second per \
                 instance: {} lines ({} bytes) were not logged",
                Limits::LOG_LINES_PER_SECOND,
                Limits::LOG_BYTES_PER_SECOND,
                self.dropped_lines,
                self.dropped_bytes
            );
        }
        self.dropped_lines = 0;
        self.dropped_bytes = 0;
    }
}

impl LogBudget {
    pub(crate) fn new(variant_dropped: Arc<Dropped>) -> Self {
        Self(Arc::new(Mutex::new(Window {
            started: Instant::now(),
            lines: 0,
            bytes: 0,
            dropped_lines: 0,
            dropped_bytes: 0,
            variant_dropped,
        })))
    }

    /// Whether a line of `len` bytes may be logged now; if not, it is counted as dropped.
    fn admit(&self, len: usize, endpoint: &str, variant: &str) -> bool {
        let mut window = lock(&self.0);
        let now = Instant::now();
        if now.duration_since(window.started) >= Duration::from_secs(1) {
            window.summarise(endpoint, variant);
            window.started = now;
            window.lines = 0;
            window.bytes = 0;
        }
        if window.lines < Limits::LOG_LINES_PER_SECOND
            && window.bytes + len <= Limits::LOG_BYTES_PER_SECOND
        {
            window.lines += 1;
            window.bytes += len;
            return true;
        }
        window.dropped_lines += 1;
        window.dropped_bytes += len as u64;
        window.variant_dropped.lines.fetch_add(1, Ordering::Relaxed);
        window
            .variant_dropped
            .bytes
            .fetch_add(len as u64, Ordering::Relaxed);
        false
    }
}

/// The inference ids an instance is serving, shared by its stdout and stderr: what the
/// guest writes is logged with them (comma-separated for a batch; empty in `model-fn`, which
/// serves no request).
#[derive(Clone, Default)]
pub(crate) struct Serving(Arc<Mutex<String>>);

impl Serving {
    /// Set the ids of the call about to start (the buffer is reused: no allocation once warm).
    pub(crate) fn set<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let mut serving = lock(&self.0);
        serving.clear();
        for (i, id) in ids.into_iter().enumerate() {
            if i > 0 {
                serving.push(',');
            }
            serving.push_str(id);
        }
    }
}

/// One guest output stream (stdout or stderr) of one instance.
#[derive(Clone)]
pub(crate) struct GuestOutput {
    stream: &'static str,
    endpoint: Arc<str>,
    variant: Arc<str>,
    serving: Serving,
    budget: LogBudget,
    buffer: Arc<Mutex<Buffer>>,
}

impl GuestOutput {
    pub(crate) fn new(
        stream: &'static str,
        endpoint: Arc<str>,
        variant: Arc<str>,
        serving: Serving,
        budget: LogBudget,
    ) -> Self {
        Self {
            stream,
            endpoint,
            variant,
            serving,
            budget,
            buffer: Arc::default(),
        }
    }

    /// The recent output, oldest first, as text.
    pub(crate) fn take_tail(&self) -> String {
        let mut buffer = lock(&self.buffer);
        let mut all = std::mem::take(&mut buffer.tail);
        all.extend_from_slice(&std::mem::take(&mut buffer.partial));
        String::from_utf8_lossy(&all).trim().to_string()
    }

    /// Say what the instance dropped in its last second, if anything (when it is let go).
    pub(crate) fn summarise_dropped(&self) {
        lock(&self.budget.0).summarise(&self.endpoint, &self.variant);
    }

    fn write_bytes(&self, bytes: &[u8]) {
        let mut buffer = lock(&self.buffer);
        let buffer = &mut *buffer;
        if bytes.len() >= TAIL_BYTES {
            buffer.tail.clear();
            buffer
                .tail
                .extend_from_slice(&bytes[bytes.len() - TAIL_BYTES..]);
        } else {
            buffer.tail.extend_from_slice(bytes);
            if buffer.tail.len() > TAIL_BYTES {
                let cut = buffer.tail.len() - TAIL_BYTES;
                buffer.tail.drain(..cut);
            }
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            let room = MAX_LINE - buffer.partial.len();
            match rest[..rest.len().min(room)]
                .iter()
                .position(|b| *b == b'\n')
            {
                Some(end) => {
                    if buffer.partial.is_empty() {
                        self.log(&rest[..end]);
                    } else {
                        buffer.partial.extend_from_slice(&rest[..end]);
                        self.log(&buffer.partial);
                        buffer.partial.clear();
                    }
                    rest = &rest[end + 1..];
                }
                None if rest.len() >= room => {
                    // A line as long as the longest logged: log what there is.
                    buffer.partial.extend_from_slice(&rest[..room]);
                    self.log(&buffer.partial);
                    buffer.partial.clear();
                    rest = &rest[room..];
                }
                None => {
                    buffer.partial.extend_from_slice(rest);
                    rest = &[];
                }
            }
        }
    }

    /// Log one line, if the instance's rate allows.
    fn log(&self, line: &[u8]) {
        if !self.budget.admit(line.len(), &self.endpoint, &self.variant) {
            return;
        }
        let line = String::from_utf8_lossy(line);
        let serving = lock(&self.serving.0);
        tracing::info!(
            target: "plinth::guest",
            endpoint = %self.endpoint,
            variant = %self.variant,
            inference_id = %serving,
            stream = self.stream,
            "{line}"
        );
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 << 10)
    }
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output() -> (GuestOutput, Arc<Dropped>) {
        let dropped = Arc::new(Dropped::default());
        let out = GuestOutput::new(
            "stdout",
            "e".into(),
            "v".into(),
            Serving::default(),
            LogBudget::new(dropped.clone()),
        );
        (out, dropped)
    }

    /// Within one second, the first LOG_LINES_PER_SECOND lines are logged and the rest are
    /// counted as dropped, with their bytes; a line split over writes is one line.
    #[test]
    fn lines_over_the_rate_are_counted_not_logged() {
        let (out, dropped) = output();
        let extra = 250u64;
        let lines = Limits::LOG_LINES_PER_SECOND as u64 + extra;
        let text = "0123456789\n".repeat(lines as usize);
        // Cut mid-line, so that one line arrives in two writes.
        let (a, b) = text.as_bytes().split_at(text.len() / 2 + 3);
        out.write_bytes(a);
        out.write_bytes(b);
        assert_eq!(dropped.lines.load(Ordering::Relaxed), extra);
        assert_eq!(dropped.bytes.load(Ordering::Relaxed), extra * 10);
        assert!(out.take_tail().ends_with("0123456789"));
    }

    /// Bytes are limited as well as lines, and a line without a newline is logged in pieces
    /// of at most MAX_LINE bytes (so that a writer cannot make one line grow without bound).
    #[test]
    fn long_lines_are_cut_and_count_against_the_byte_rate() {
        let (out, dropped) = output();
        let total = Limits::LOG_BYTES_PER_SECOND + 10 * MAX_LINE;
        out.write_bytes(&vec![b'x'; total]);
        let lines = dropped.lines.load(Ordering::Relaxed);
        let bytes = dropped.bytes.load(Ordering::Relaxed);
        assert_eq!(lines, 10, "pieces over the byte rate");
        assert_eq!(bytes, 10 * MAX_LINE as u64);
        assert!(out.buffer.lock().unwrap().partial.is_empty());
    }
}
