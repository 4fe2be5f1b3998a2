//! What the native reference servers (`native-iris`, `native-onnx`) share: serving an
//! InvokeEndpoint-shaped route on a tokio runtime of a given number of workers.

use anyhow::Context as _;
use axum::http::StatusCode;
use axum::routing::{get, MethodRouter};
use axum::Router;
use std::net::SocketAddr;

/// Serve `invoke` at `POST /endpoints/{name}/invocations` (and `GET /ping`) on `bind` with
/// `threads` tokio workers, until the process ends. Prints `listening on http://ADDR` once
/// bound, which the benchmark scripts wait for.
pub fn serve<S: Clone + Send + Sync + 'static>(
    bind: SocketAddr,
    threads: usize,
    invoke: MethodRouter<S>,
    state: S,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .with_context(|| format!("cannot listen on {bind}"))?;
        println!("listening on http://{}", listener.local_addr()?);
        let app = Router::new()
            .route("/ping", get(|| async { StatusCode::OK }))
            .route("/endpoints/{name}/invocations", invoke)
            .with_state(state);
        axum::serve(listener, app).await?;
        Ok(())
    })
}
