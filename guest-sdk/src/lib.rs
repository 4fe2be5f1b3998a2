//! Write Plinth model components in plain Rust.
//!
//! A Plinth model is a WebAssembly component that implements SageMaker's four handler
//! functions (`model_fn`, `input_fn`, `predict_fn`, `output_fn`) through the
//! `plinth:model/handler` WIT interface. This crate owns everything between that contract
//! and an author's code:
//!
//! - [`TensorModel`]: the common case (one ONNX graph from the model directory, a tensor in
//!   and a tensor out) in a few lines, every function defaulted and overridable;
//!   [`export_tensor_model!`] exports it;
//! - [`Handler`]: the four functions as a Rust trait, with the crate's own [`HandlerError`],
//!   [`Context`] and [`Response`] types, for everything else; [`export_handler!`] exports it;
//! - [`codec`]: request bodies (`text/csv`, `application/json`, `application/x-npy`) into a
//!   [`codec::Tensor`] and back, plus `Accept` negotiation with SageMaker's defaults (the
//!   `plinth-codec` crate, re-exported; [`HandlerError`] is defined there);
//! - [`nn`]: tensor work on the host's native backend through `wasi:nn`.
//!
//! The WIT bindings are generated once, here, and never appear in an author's code.
//!
//! # Examples
//!
//! A classifier over `model_dir/model.onnx` (the graph's inputs and outputs:
//! `plinth inspect MODEL_DIR`), answering with its probabilities as JSON, CSV or NPY:
//!
//! ```
//! use plinth_guest_sdk::codec::{self, Tensor};
//! use plinth_guest_sdk::{Context, HandlerError, TensorModel};
//!
//! struct Iris;
//!
//! impl TensorModel for Iris {
//!     fn input_fn(body: Vec<u8>, content_type: &str, _: &Context) -> Result<Tensor, HandlerError> {
//!         let rows = codec::decode(&body, content_type)?.into_matrix()?;
//!         match rows.shape[1] {
//!             4 => Ok(rows),
//!             n => Err(HandlerError::bad_request(format!("expected 4 features per row, got {n}"))),
//!         }
//!     }
//! }
//!
//! plinth_guest_sdk::export_tensor_model!(Iris);
//! ```
//!
//! The same shape of component with every function written out, as a [`Handler`]:
//!
//! ```
//! use plinth_guest_sdk::{codec, Context, Handler, HandlerError, Response};
//!
//! struct Doubler;
//!
//! impl Handler for Doubler {
//!     type Model = ();
//!     type Payload = codec::Tensor;
//!     type Prediction = codec::Tensor;
//!
//!     fn model_fn(_model_dir: &str) -> Result<(), HandlerError> {
//!         Ok(())
//!     }
//!     fn input_fn(body: Vec<u8>, content_type: &str, _: &Context) -> Result<codec::Tensor, HandlerError> {
//!         codec::decode(&body, content_type)
//!     }
//!     fn predict_fn(mut t: codec::Tensor, _: &(), _: &Context) -> Result<codec::Tensor, HandlerError> {
//!         t.data.iter_mut().for_each(|x| *x *= 2.0);
//!         Ok(t)
//!     }
//!     fn output_fn(t: codec::Tensor, accept: &str, _: &Context) -> Result<Response, HandlerError> {
//!         let content_type = codec::negotiate(accept, codec::TENSOR_TYPES)?;
//!         Response::tensor(&t, content_type)
//!     }
//! }
//!
//! plinth_guest_sdk::export_handler!(Doubler);
//! # let ctx = Context::default();
//! # let t = Doubler::input_fn(b"1,2".to_vec(), "text/csv", &ctx).unwrap();
//! # let y = Doubler::predict_fn(t, &(), &ctx).unwrap();
//! # assert_eq!(Doubler::output_fn(y, "", &ctx).unwrap().body, b"[[2,4]]");
//! ```

// The generated bindings and the export macro name this crate by its external path.
extern crate self as plinth_guest_sdk;

#[cfg(any(test, all(feature = "allocator", target_family = "wasm")))]
mod alloc;
mod handler;
pub mod nn;
pub mod tensor_model;

/// Request and response bodies: `text/csv`, `application/json` and `application/x-npy` into a
/// [`codec::Tensor`] and back, and `Accept` negotiation. This is the `plinth-codec` crate, the
/// one copy of these formats in Plinth (the host's shadow comparison reads bodies with it too).
#[doc(inline)]
pub use plinth_codec as codec;

pub use handler::{Context, Handler, Response};
/// The error a handler returns; the codecs give it too (defined in [`codec`]).
pub use plinth_codec::HandlerError;
/// The `serde_json` this crate encodes JSON with, for building response values.
pub use serde_json;
pub use tensor_model::TensorModel;

/// Bindings generated from `wit/plinth-model.wit`. Authors use [`Handler`] instead.
#[doc(hidden)]
#[allow(unsafe_code, missing_docs, unreachable_pub, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "model",
        generate_all,
        pub_export_macro: true,
        export_macro_name: "__plinth_export_bindings",
        default_bindings_module: "plinth_guest_sdk::bindings",
        runtime_path: "plinth_guest_sdk::__private::wit_bindgen::rt",
    });
}

#[cfg(all(feature = "allocator", target_family = "wasm"))]
#[global_allocator]
static ALLOCATOR: alloc::Allocator<talc::wasm::WasmDynamicTalc> =
    alloc::Allocator::new(talc::wasm::new_wasm_dynamic_allocator());

/// Support for [`export_handler!`]; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::handler::Adapter;
    pub use wit_bindgen;
}

/// Export a [`Handler`] implementation as this component's `plinth:model/handler` interface.
///
/// Use it once, in the crate that builds the component (a `cdylib` for `wasm32-wasip2`):
///
/// # Examples
///
/// ```
/// use plinth_guest_sdk::{Context, Handler, HandlerError, Response};
///
/// struct Hello;
///
/// impl Handler for Hello {
///     type Model = ();
///     type Payload = String;
///     type Prediction = String;
///
///     fn model_fn(_: &str) -> Result<(), HandlerError> {
///         Ok(())
///     }
///     fn input_fn(body: Vec<u8>, _: &str, _: &Context) -> Result<String, HandlerError> {
///         String::from_utf8(body).map_err(|_| HandlerError::bad_request("send UTF-8 text"))
///     }
///     fn predict_fn(name: String, _: &(), _: &Context) -> Result<String, HandlerError> {
///         Ok(format!("hello, {name}"))
///     }
///     fn output_fn(text: String, _: &str, _: &Context) -> Result<Response, HandlerError> {
///         Ok(Response::text(text))
///     }
/// }
///
/// plinth_guest_sdk::export_handler!(Hello);
/// ```
#[macro_export]
macro_rules! export_handler {
    ($handler:ty) => {
        const _: () = {
            type __PlinthExportedHandler = $crate::__private::Adapter<$handler>;
            $crate::bindings::__plinth_export_bindings!(
                __PlinthExportedHandler with_types_in $crate::bindings
            );
        };
    };
}
