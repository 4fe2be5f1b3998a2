//! [`Server`]: what the HTTP layer holds: the fleet it serves and controls, the largest
//! InvokeEndpoint body, the body-read timeout, and the SigV4 verifier when credentials are
//! configured.

use crate::fleet::Fleet;
use crate::sigv4::Verifier;
use std::sync::Arc;
use std::time::Duration;

/// What the HTTP layer holds: the fleet it serves and controls, and its own limits.
pub struct Server {
    pub(crate) fleet: Arc<Fleet>,
    /// The largest InvokeEndpoint body (`server.max_payload_bytes`).
    pub(crate) max_payload_bytes: usize,
    /// How long a request body may take to arrive (`--body-read-timeout`).
    pub(crate) body_read_timeout: Duration,
    /// `None`: unauthenticated (loopback only).
    pub(crate) verifier: Option<Verifier>,
}

impl Server {
    /// The HTTP layer over `fleet`.
    pub(crate) fn new(
        fleet: Arc<Fleet>,
        max_payload_bytes: usize,
        body_read_timeout: Duration,
        verifier: Option<Verifier>,
    ) -> Self {
        Self {
            fleet,
            max_payload_bytes,
            body_read_timeout,
            verifier,
        }
    }
}
