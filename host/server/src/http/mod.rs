//! The wire: the router, the SageMaker runtime API (InvokeEndpoint, InvokeEndpointAsync), the control plane's
//! awsJson1.1 protocol, CloudWatch's awsJson1.0 and `query` protocols, SigV4 authentication, `/ping` and `/metrics`, and the accept loop
//! with its connection limits and graceful shutdown (`listen`). Requests are taken
//! apart here and handed to the operations (`ops`) or to the live fleet (`fleet`); nothing
//! below this layer knows about HTTP requests.

pub(crate) mod auth;
pub(crate) mod body;
pub(crate) mod cloudwatch;
pub(crate) mod control;
pub(crate) mod invoke;
pub(crate) mod invoke_async;
pub mod listen;
pub(crate) mod router;
pub(crate) mod server;

pub use router::app;
pub use server::Server;
