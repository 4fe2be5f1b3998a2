//! [`Server`]: what the HTTP layer holds: the fleet it serves and controls, the largest
//! InvokeEndpoint body, and the SigV4 verifier when credentials are configured.

use crate::fleet::Fleet;
use crate::sigv4::Verifier;
use std::sync::Arc;

/// What the HTTP layer holds: the fleet it serves and controls, and its own limits.
pub struct Server {
    pub(crate) fleet: Arc<Fleet>,
    /// The largest InvokeEndpoint body (`server.max_payload_bytes`).
    pub(crate) max_payload_bytes: usize,
    /// `None`: unauthenticated (loopback only).
    pub(crate) verifier: Option<Verifier>,
}

impl Server {
    /// The HTTP layer over `fleet`.
    pub(crate) fn new(
        fleet: Arc<Fleet>,
        max_payload_bytes: usize,
        verifier: Option<Verifier>,
    ) -> Self {
        Self {
            fleet,
            max_payload_bytes,
            verifier,
        }
    }
}
