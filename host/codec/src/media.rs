//! Media types: the three this crate reads and writes, [`decode`] and [`encode`] by
//! `Content-Type`, [`require_content_type`], which checks a request's `Content-Type` against
//! the types a handler reads, and [`negotiate`], which picks a response type from `Accept` the
//! way the SageMaker inference toolkit does.

use crate::text::trim;
use crate::{csv, json, npy, HandlerError, Tensor};

/// `text/csv`: rows of numbers, no header, one sample per row.
///
/// # Examples
///
/// ```
/// let t = plinth_codec::decode(b"1,2\n3,4\n", plinth_codec::CSV).unwrap();
/// assert_eq!(t.shape, vec![2, 2]);
/// ```
pub const CSV: &str = "text/csv";
/// `application/json`: a nested array of numbers, or `{"instances": [...]}` / `{"inputs": [...]}`.
///
/// # Examples
///
/// ```
/// let t = plinth_codec::decode(br#"{"instances": [[1, 2]]}"#, plinth_codec::JSON).unwrap();
/// assert_eq!(t.data, vec![1.0, 2.0]);
/// ```
pub const JSON: &str = "application/json";
/// `application/x-npy`: a NumPy `.npy` file.
///
/// # Examples
///
/// ```
/// use plinth_codec::{decode, encode, Tensor, NPY};
///
/// let t = Tensor::new(vec![0.5, 1.5], vec![2]).unwrap();
/// let body = encode(&t, NPY).unwrap();
/// assert_eq!(decode(&body, NPY).unwrap(), t);
/// ```
pub const NPY: &str = "application/x-npy";
/// The types [`decode`] reads and [`encode`] writes; JSON first, so it is the default.
///
/// # Examples
///
/// ```
/// use plinth_codec::{negotiate, JSON, TENSOR_TYPES};
///
/// // No preference in `Accept`: the first type, JSON.
/// assert_eq!(negotiate("*/*", TENSOR_TYPES).unwrap(), JSON);
/// ```
pub const TENSOR_TYPES: &[&str] = &[JSON, CSV, NPY];

/// The media type of a `Content-Type` or `Accept` entry: parameters dropped, lower case.
///
/// `"Text/CSV; charset=utf-8"` -> `"text/csv"`.
///
/// # Examples
///
/// ```
/// assert_eq!(plinth_codec::media_type("Text/CSV; charset=utf-8"), "text/csv");
/// assert_eq!(plinth_codec::media_type(" application/json "), "application/json");
/// ```
#[inline]
pub fn media_type(content_type: &str) -> String {
    media_range(content_type).to_ascii_lowercase()
}

/// The part of a `Content-Type` or `Accept` entry before its parameters, trimmed, case kept.
#[inline]
fn media_range(value: &str) -> &str {
    // Found by byte: `str::split` and `str::trim` decode characters, a few hundred
    // instructions a request in the guest.
    let end = value.bytes().position(|b| b == b';').unwrap_or(value.len());
    trim(&value[..end])
}

fn supported_list(types: &[&str]) -> String {
    types.join(", ")
}

/// The [`HandlerError::UnsupportedMediaType`] for a request whose `content_type` is not one of
/// `supported`: it names the type received (or says none was sent) and what to send instead.
fn unsupported_content_type(content_type: &str, supported: &[&str]) -> HandlerError {
    let instead = if supported.is_empty() {
        "this model reads no content types".to_owned()
    } else {
        format!("send one of: {}", supported_list(supported))
    };
    if media_range(content_type).is_empty() {
        HandlerError::unsupported_media_type(format!("the request has no Content-Type; {instead}"))
    } else {
        HandlerError::unsupported_media_type(format!(
            "content type '{content_type}' is not supported; {instead}"
        ))
    }
}

/// Check a request's `Content-Type` against the types a handler reads, and return the entry of
/// `supported` it matches, for an `input_fn` to `match` on.
///
/// Types are compared as [`decode`] compares them: parameters (`; charset=utf-8`) dropped,
/// whitespace trimmed, ASCII case ignored. Any other type, or an empty `content_type` (the
/// client sent none), is a [`HandlerError::UnsupportedMediaType`] naming the type received
/// and listing `supported`.
///
/// # Examples
///
/// ```
/// use plinth_codec::{require_content_type, HandlerError, CSV, JSON};
///
/// let reads = &[JSON, CSV, "text/plain"];
/// assert_eq!(require_content_type("Text/CSV; charset=utf-8", reads).unwrap(), CSV);
/// let e = require_content_type("application/xml", reads).unwrap_err();
/// assert!(matches!(e, HandlerError::UnsupportedMediaType(_)));
/// assert!(e.message().contains("send one of: application/json, text/csv, text/plain"));
/// ```
#[inline]
pub fn require_content_type<'a>(
    content_type: &str,
    supported: &[&'a str],
) -> Result<&'a str, HandlerError> {
    let media = media_range(content_type);
    if !media.is_empty() {
        if let Some(found) = supported
            .iter()
            .find(|t| media_range(t).eq_ignore_ascii_case(media))
        {
            return Ok(found);
        }
    }
    Err(unsupported_content_type(content_type, supported))
}

/// Decode a request body as `content_type` (one of [`TENSOR_TYPES`]; parameters and case are
/// ignored). Any other type is a [`HandlerError::UnsupportedMediaType`].
///
/// # Examples
///
/// ```
/// let t = plinth_codec::decode(b"5.1,3.5\n6.2,2.9\n", "text/csv; charset=utf-8").unwrap();
/// assert_eq!(t.shape, vec![2, 2]);
/// assert_eq!(t.data, vec![5.1, 3.5, 6.2, 2.9]);
/// assert!(plinth_codec::decode(b"<x/>", "application/xml").is_err());
/// ```
pub fn decode(body: &[u8], content_type: &str) -> Result<Tensor, HandlerError> {
    let media = media_range(content_type);
    match media {
        _ if media.eq_ignore_ascii_case(CSV) => csv::decode_csv(body),
        _ if media.eq_ignore_ascii_case(JSON) => json::decode_json(body),
        _ if media.eq_ignore_ascii_case(NPY) => npy::decode_npy(body),
        _ => Err(unsupported_content_type(content_type, TENSOR_TYPES)),
    }
}

/// Encode `tensor` as `content_type` (one of [`TENSOR_TYPES`]; parameters and case ignored).
/// Any other type is a [`HandlerError::NotAcceptable`].
///
/// # Examples
///
/// ```
/// use plinth_codec::{encode, Tensor, CSV, JSON};
///
/// let t = Tensor::new(vec![0.25, 0.75], vec![1, 2]).unwrap();
/// assert_eq!(encode(&t, JSON).unwrap(), b"[[0.25,0.75]]");
/// assert_eq!(encode(&t, CSV).unwrap(), b"0.25,0.75\n");
/// ```
pub fn encode(tensor: &Tensor, content_type: &str) -> Result<Vec<u8>, HandlerError> {
    match media_type(content_type).as_str() {
        JSON => Ok(json::encode_json(tensor)),
        CSV => Ok(csv::encode_csv(tensor)),
        NPY => Ok(npy::encode_npy(tensor)),
        _ => Err(HandlerError::not_acceptable(format!(
            "cannot write '{content_type}'; this model writes: {}",
            supported_list(TENSOR_TYPES)
        ))),
    }
}

/// Pick the response type from an `Accept` header and the types a handler writes, the first
/// of `available` being its default.
///
/// An empty header or `*/*` gives the default. Comma lists, `type/*` ranges and `q` values
/// are honoured (`q=0` means "not this one"); among equally preferred entries the client's
/// order wins. If nothing is acceptable the error is [`HandlerError::NotAcceptable`], naming
/// what the handler can write.
///
/// # Examples
///
/// ```
/// use plinth_codec::{negotiate, CSV, JSON, NPY, TENSOR_TYPES};
///
/// assert_eq!(negotiate("", TENSOR_TYPES).unwrap(), JSON);
/// assert_eq!(negotiate("text/csv;q=0.5, application/x-npy", TENSOR_TYPES).unwrap(), NPY);
/// assert_eq!(negotiate("text/*", TENSOR_TYPES).unwrap(), CSV);
/// assert!(negotiate("image/png", TENSOR_TYPES).is_err());
/// ```
pub fn negotiate<'a>(accept: &str, available: &[&'a str]) -> Result<&'a str, HandlerError> {
    let default = *available
        .first()
        .ok_or_else(|| HandlerError::not_acceptable("the handler writes no media types"))?;
    // The usual headers, answered without parsing: none, `*/*`, or exactly one of the types.
    let single = trim(accept);
    if single.is_empty() || single == "*/*" {
        return Ok(default);
    }
    if !single.bytes().any(|b| b == b',' || b == b';') {
        if let Some(found) = available.iter().find(|t| t.eq_ignore_ascii_case(single)) {
            return Ok(found);
        }
    }
    let mut ranges: Vec<(String, f32)> = accept
        .split(',')
        .filter_map(|entry| {
            let mut parts = entry.split(';');
            let range = parts.next()?.trim().to_ascii_lowercase();
            if range.is_empty() {
                return None;
            }
            let q = parts
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .map_or(1.0, |(_, v)| v.trim().parse::<f32>().unwrap_or(0.0));
            Some((range, q))
        })
        .collect();
    if ranges.is_empty() {
        return Ok(default);
    }
    ranges.sort_by(|a, b| b.1.total_cmp(&a.1));

    // The q a type gets from its most specific matching range (RFC 9110 section 12.5.1).
    let quality = |candidate: &str| -> f32 {
        let candidate = media_type(candidate);
        let (kind, _) = candidate.split_once('/').unwrap_or((&candidate, ""));
        let mut best: Option<(u8, f32)> = None;
        for (range, q) in &ranges {
            let specificity = if *range == candidate {
                2
            } else if range.strip_suffix("/*") == Some(kind) {
                1
            } else if range == "*/*" || range == "*" {
                0
            } else {
                continue;
            };
            if best.is_none_or(|(s, _)| specificity > s) {
                best = Some((specificity, *q));
            }
        }
        best.map_or(0.0, |(_, q)| q)
    };

    for (range, q) in &ranges {
        if *q <= 0.0 {
            break;
        }
        let found = available.iter().copied().find(|t| {
            let t_media = media_type(t);
            let matches = *range == t_media
                || range == "*/*"
                || range == "*"
                || range
                    .strip_suffix("/*")
                    .is_some_and(|kind| t_media.split('/').next() == Some(kind));
            matches && quality(t) > 0.0
        });
        if let Some(found) = found {
            return Ok(found);
        }
    }
    Err(HandlerError::not_acceptable(format!(
        "none of the types in Accept '{accept}' can be produced; this model writes: {}",
        supported_list(available)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::is_bad_request;
    use crate::json::{decode_json, encode_json, encode_json_value, json_number};
    use crate::{csv::encode_csv, Tensor};

    #[test]
    fn empty_bodies() {
        for ct in TENSOR_TYPES {
            is_bad_request(decode(b"", ct), "empty");
            is_bad_request(decode(b" \n", ct), "empty");
        }
        is_bad_request(decode_json(b"[]"), "no values");
        is_bad_request(decode_json(b"{\"instances\": [[]]}"), "no values");
    }

    #[test]
    fn unsupported_content_type() {
        match decode(b"1,2", "application/xml") {
            Err(HandlerError::UnsupportedMediaType(m)) => {
                assert!(
                    m.contains("text/csv") && m.contains("application/x-npy"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn encoders() {
        let t = Tensor::new(vec![1.0, 0.5, 2.0, 0.25], vec![2, 2]).unwrap();
        assert_eq!(encode_json(&t), b"[[1,0.5],[2,0.25]]");
        assert_eq!(encode_csv(&t), b"1,0.5\n2,0.25\n");
        let scalar = Tensor::new(vec![f32::NAN], vec![]).unwrap();
        assert_eq!(encode_json(&scalar), b"null");
        assert_eq!(
            encode(&t, "application/JSON; charset=utf-8").unwrap(),
            b"[[1,0.5],[2,0.25]]"
        );
        assert!(matches!(
            encode(&t, "text/html"),
            Err(HandlerError::NotAcceptable(_))
        ));
        assert_eq!(
            encode_json_value(&serde_json::json!({"a": [1]})),
            br#"{"a":[1]}"#
        );
        let numbers = serde_json::json!([json_number(0.97), json_number(f32::INFINITY)]);
        assert_eq!(encode_json_value(&numbers), b"[0.97,null]");
    }

    #[test]
    fn accept_negotiation() {
        let types = TENSOR_TYPES;
        assert_eq!(negotiate("", types).unwrap(), JSON);
        assert_eq!(negotiate("  ", types).unwrap(), JSON);
        assert_eq!(negotiate("*/*", types).unwrap(), JSON);
        assert_eq!(negotiate("text/csv", types).unwrap(), CSV);
        assert_eq!(negotiate(" Application/X-NPY ", types).unwrap(), NPY);
        assert_eq!(negotiate("Text/CSV; charset=utf-8", types).unwrap(), CSV);
        assert_eq!(
            negotiate("text/html, application/x-npy", types).unwrap(),
            NPY
        );
        assert_eq!(negotiate("text/*", types).unwrap(), CSV);
        assert_eq!(negotiate("application/*", types).unwrap(), JSON);
        assert_eq!(
            negotiate("text/csv, application/x-npy", types).unwrap(),
            CSV
        );
        assert_eq!(
            negotiate("text/csv;q=0.5, application/x-npy", types).unwrap(),
            NPY
        );
        assert_eq!(
            negotiate("application/json;q=0, */*;q=0.1", types).unwrap(),
            CSV
        );
        assert_eq!(negotiate("text/html, */*;q=0.8", types).unwrap(), JSON);
        match negotiate("text/html, image/png;q=0.9, text/csv;q=0", types) {
            Err(HandlerError::NotAcceptable(m)) => {
                assert!(
                    m.contains("application/json, text/csv, application/x-npy"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(negotiate("*/*", &[]).is_err());
    }

    /// The message of an `UnsupportedMediaType`; anything else fails the test.
    fn unsupported(r: Result<&str, HandlerError>) -> String {
        match r {
            Err(HandlerError::UnsupportedMediaType(m)) => m,
            other => panic!("expected UnsupportedMediaType, got {other:?}"),
        }
    }

    #[test]
    fn required_content_type_ignores_parameters_case_and_whitespace() {
        let reads = &[JSON, CSV, "text/plain"];
        assert_eq!(require_content_type("text/csv", reads).unwrap(), CSV);
        assert_eq!(
            require_content_type("Text/CSV; charset=utf-8", reads).unwrap(),
            CSV
        );
        assert_eq!(
            require_content_type(" APPLICATION/json ;charset=UTF-8", reads).unwrap(),
            JSON
        );
        assert_eq!(
            require_content_type("text/plain;", reads).unwrap(),
            "text/plain"
        );
        // The entry is returned as the handler spelled it, parameters and case included.
        let spelled = &["Application/JSON; charset=utf-8"];
        assert_eq!(
            require_content_type("application/json", spelled).unwrap(),
            spelled[0]
        );
        // Only the whole media type matches: no prefixes, no ranges.
        unsupported(require_content_type("text/csvx", reads));
        unsupported(require_content_type("text/*", reads));
        unsupported(require_content_type("application/jsonlines", reads));
    }

    #[test]
    fn required_content_type_names_what_was_sent_and_what_to_send() {
        let reads = &[JSON, CSV];
        let m = unsupported(require_content_type(
            "application/xml; charset=utf-8",
            reads,
        ));
        assert_eq!(
            m,
            "content type 'application/xml; charset=utf-8' is not supported; \
             send one of: application/json, text/csv"
        );
        // The same words as `decode` uses.
        let m = unsupported(decode(b"1", "application/xml").map(|_| ""));
        assert_eq!(
            m,
            "content type 'application/xml' is not supported; \
             send one of: application/json, text/csv, application/x-npy"
        );
        for none in ["", "  ", "; charset=utf-8"] {
            let m = unsupported(require_content_type(none, reads));
            assert_eq!(
                m,
                "the request has no Content-Type; send one of: application/json, text/csv"
            );
        }
        let m = unsupported(require_content_type(CSV, &[]));
        assert_eq!(
            m,
            "content type 'text/csv' is not supported; this model reads no content types"
        );
    }
}
