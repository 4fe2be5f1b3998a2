//! Guest stdout/stderr: each complete line goes to the log with its endpoint, variant and the
//! inference id(s) being served, and the last few KiB are kept so that a trap can be reported
//! with the panic message.

use bytes::Bytes;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

const TAIL_BYTES: usize = 8 << 10;

#[derive(Default)]
struct Buffer {
    partial: Vec<u8>,
    tail: Vec<u8>,
}

/// The inference ids an instance is serving, shared by its stdout and stderr: what the
/// guest writes is logged with them (comma-separated for a batch; empty in `model-fn`, which
/// serves no request).
#[derive(Clone, Default)]
pub(crate) struct Serving(Arc<Mutex<String>>);

impl Serving {
    /// Set the ids of the call about to start (the buffer is reused: no allocation once warm).
    pub(crate) fn set<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let mut serving = self.0.lock().unwrap_or_else(|e| e.into_inner());
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
    buffer: Arc<Mutex<Buffer>>,
}

impl GuestOutput {
    pub(crate) fn new(
        stream: &'static str,
        endpoint: Arc<str>,
        variant: Arc<str>,
        serving: Serving,
    ) -> Self {
        Self {
            stream,
            endpoint,
            variant,
            serving,
            buffer: Arc::default(),
        }
    }

    /// The recent output, oldest first, as text.
    pub(crate) fn take_tail(&self) -> String {
        let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        let mut all = std::mem::take(&mut buffer.tail);
        all.extend_from_slice(&std::mem::take(&mut buffer.partial));
        String::from_utf8_lossy(&all).trim().to_string()
    }

    fn write_bytes(&self, bytes: &[u8]) {
        let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        buffer.tail.extend_from_slice(bytes);
        if buffer.tail.len() > TAIL_BYTES {
            let cut = buffer.tail.len() - TAIL_BYTES;
            buffer.tail.drain(..cut);
        }
        buffer.partial.extend_from_slice(bytes);
        while let Some(pos) = buffer.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.partial.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line[..line.len() - 1]);
            let serving = self.serving.0.lock().unwrap_or_else(|e| e.into_inner());
            tracing::info!(
                target: "plinth::guest",
                endpoint = %self.endpoint,
                variant = %self.variant,
                inference_id = %serving,
                stream = self.stream,
                "{line}"
            );
        }
        if buffer.partial.len() > TAIL_BYTES {
            buffer.partial.clear();
        }
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
