//! Request and response bodies, parsed and written once for all of Plinth: `text/csv`,
//! `application/json` and `application/x-npy` into a [`Tensor`] and back, and `Accept`
//! negotiation, following the SageMaker inference toolkit's defaults. Plain Rust with no WIT
//! and no Wasm engine; it builds for `wasm32-wasip2`.
//!
//! - The guest SDK re-exports this crate as `plinth_guest_sdk::codec`: a model's `input_fn`
//!   calls [`decode`] (or [`require_content_type`] and a per-format function), its
//!   `output_fn` [`negotiate`] and [`encode`], and both return the crate's [`HandlerError`].
//! - The host's shadow comparison (`plinth-policy`) reads bodies of any shape with
//!   [`json::decode_value`], [`json::decode_lines`], [`csv::decode_cells`] and
//!   [`npy::decode_f64`].
//! - The integration tests write and read NPY bodies with [`encode_npy`] and [`decode_npy`].
//!
//! Modules, each owning one format: [`csv`], [`json`], [`npy`]; the media types, the
//! dispatch by content type, the `Content-Type` check and `Accept` negotiation are in
//! `media`, the tensor in `tensor`, the error in `error`, all re-exported here. The decoders
//! on the guest's request path are tuned for instruction counts (`BENCHMARKS.md`); the small
//! functions a handler calls per value or per request are `#[inline]` so that they inline
//! across the crate boundary in builds without LTO.

#![warn(missing_docs)]

pub mod csv;
mod error;
pub mod json;
mod media;
pub mod npy;
mod tensor;
mod text;

pub use csv::{decode_csv, encode_csv};
pub use error::HandlerError;
pub use json::{
    decode_json, encode_json, encode_json_value, json_number, json_to_tensor, push_json_number,
    write_json_number,
};
pub use media::{
    decode, encode, media_type, negotiate, require_content_type, CSV, JSON, NPY, TENSOR_TYPES,
};
pub use npy::{decode_npy, encode_npy};
pub use tensor::Tensor;

/// Asserts that `r` is a [`HandlerError::BadRequest`] whose message contains `needle`.
#[cfg(test)]
fn is_bad_request<T: std::fmt::Debug>(r: Result<T, HandlerError>, needle: &str) {
    match r {
        Err(HandlerError::BadRequest(m)) => {
            assert!(
                m.contains(needle),
                "message {m:?} does not contain {needle:?}"
            )
        }
        other => panic!("expected BadRequest containing {needle:?}, got {other:?}"),
    }
}
