//! Request and response bodies: `text/csv`, `application/json` and `application/x-npy` into a
//! [`Tensor`] and back, and `Accept` negotiation. These follow the SageMaker inference
//! toolkit's defaults.
//!
//! Everything here is plain Rust with no WIT in sight, so it is unit-tested on the host target.

use std::fmt::Write as _;

use crate::HandlerError;

/// `text/csv`: rows of numbers, no header, one sample per row.
pub const CSV: &str = "text/csv";
/// `application/json`: a nested array of numbers, or `{"instances": [...]}` / `{"inputs": [...]}`.
pub const JSON: &str = "application/json";
/// `application/x-npy`: a NumPy `.npy` file.
pub const NPY: &str = "application/x-npy";
/// The types [`decode`] reads and [`encode`] writes; JSON first, so it is the default.
pub const TENSOR_TYPES: &[&str] = &[JSON, CSV, NPY];

/// A dense row-major `f32` tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// The values, row-major; `data.len()` is the product of `shape`.
    pub data: Vec<f32>,
    /// The size of each dimension; `[]` for a scalar.
    pub shape: Vec<usize>,
}

impl Tensor {
    /// A tensor of `shape` holding `data`; fails if the sizes disagree.
    pub fn new(data: Vec<f32>, shape: Vec<usize>) -> Result<Self, HandlerError> {
        let expected: usize = shape.iter().product();
        if data.len() != expected {
            return Err(HandlerError::bad_request(format!(
                "a tensor of shape {shape:?} holds {expected} values, got {}",
                data.len()
            )));
        }
        Ok(Self { data, shape })
    }

    /// The tensor viewed as a matrix: a vector becomes one row, a matrix stays as it is.
    /// Anything else is a [`HandlerError::BadRequest`].
    pub fn into_matrix(self) -> Result<Self, HandlerError> {
        match self.shape.len() {
            1 => Ok(Self {
                shape: vec![1, self.shape[0]],
                data: self.data,
            }),
            2 => Ok(self),
            n => Err(HandlerError::bad_request(format!(
                "expected a vector or a matrix, got {n} dimensions (shape {:?})",
                self.shape
            ))),
        }
    }

    /// The size of the first dimension (1 for a scalar).
    pub fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }

    /// The number of values per row: the product of all dimensions but the first.
    pub fn row_len(&self) -> usize {
        self.shape.iter().skip(1).product()
    }

    /// The values of each row (see [`Tensor::rows`]).
    pub fn iter_rows(&self) -> impl Iterator<Item = &[f32]> + '_ {
        let len = self.row_len().max(1);
        let rows = if self.shape.is_empty() {
            1
        } else {
            self.rows()
        };
        self.data.chunks(len).take(rows)
    }
}

/// The media type of a `Content-Type` or `Accept` entry: parameters dropped, lower case.
///
/// `"Text/CSV; charset=utf-8"` -> `"text/csv"`.
pub fn media_type(content_type: &str) -> String {
    media_range(content_type).to_ascii_lowercase()
}

/// The part of a `Content-Type` or `Accept` entry before its parameters, trimmed, case kept.
fn media_range(value: &str) -> &str {
    // Found by byte: `str::split` and `str::trim` decode characters, a few hundred
    // instructions a request in the guest.
    let end = value.bytes().position(|b| b == b';').unwrap_or(value.len());
    trim(&value[..end])
}

fn supported_list(types: &[&str]) -> String {
    types.join(", ")
}

/// Decode a request body as `content_type` (one of [`TENSOR_TYPES`]; parameters and case are
/// ignored). Any other type is a [`HandlerError::UnsupportedMediaType`].
pub fn decode(body: &[u8], content_type: &str) -> Result<Tensor, HandlerError> {
    let media = media_range(content_type);
    match media {
        _ if media.eq_ignore_ascii_case(CSV) => decode_csv(body),
        _ if media.eq_ignore_ascii_case(JSON) => decode_json(body),
        _ if media.eq_ignore_ascii_case(NPY) => decode_npy(body),
        _ => Err(HandlerError::unsupported_media_type(format!(
            "content type '{content_type}' is not supported; send one of: {}",
            supported_list(TENSOR_TYPES)
        ))),
    }
}

fn require_body(body: &[u8]) -> Result<(), HandlerError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(HandlerError::bad_request("the request body is empty"));
    }
    Ok(())
}

fn require_values(tensor: Tensor) -> Result<Tensor, HandlerError> {
    if tensor.data.is_empty() {
        return Err(HandlerError::bad_request(format!(
            "the request holds no values (shape {:?})",
            tensor.shape
        )));
    }
    Ok(tensor)
}

/// Decode CSV: one sample per line, numbers separated by commas, no header. Trailing blank
/// lines are ignored; every row must have the same number of values. Gives shape
/// `[rows, columns]`.
pub fn decode_csv(body: &[u8]) -> Result<Tensor, HandlerError> {
    require_body(body)?;
    let text = std::str::from_utf8(body)
        .map_err(|e| HandlerError::bad_request(format!("CSV body is not UTF-8: {e}")))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // Trailing blank lines (and whitespace) are ignored.
    let text = trim_end(text);

    let mut data = Vec::new();
    let (mut rows, mut columns) = (0, 0);
    // Split at bytes and trim ASCII first: on a small request, `str::lines`, `str::split` and
    // `str::trim` (which decode characters) cost more than parsing the numbers.
    for (i, line) in split_at_byte(text, b'\n').enumerate() {
        let line_no = i + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if trim(line).is_empty() {
            return Err(HandlerError::bad_request(format!(
                "CSV line {line_no} is empty"
            )));
        }
        let before = data.len();
        for (j, field) in split_at_byte(line, b',').enumerate() {
            let field = trim(field);
            let value = parse_f32(field).ok_or_else(|| {
                HandlerError::bad_request(format!(
                    "CSV line {line_no}, column {}: '{field}' is not a number",
                    j + 1
                ))
            })?;
            data.push(value);
        }
        let count = data.len() - before;
        if i == 0 {
            columns = count;
        } else if count != columns {
            return Err(HandlerError::bad_request(format!(
                "CSV line {line_no} has {count} values, but line 1 has {columns}; \
                 every row must have the same number of values"
            )));
        }
        rows += 1;
    }
    Tensor::new(data, vec![rows, columns])
}

/// The pieces of `text` between occurrences of the ASCII byte `separator`, as `str::split`
/// would give them.
fn split_at_byte(text: &str, separator: u8) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let text = rest?;
        match text.bytes().position(|b| b == separator) {
            Some(at) => {
                rest = Some(&text[at + 1..]);
                Some(&text[..at])
            }
            None => {
                rest = None;
                Some(text)
            }
        }
    })
}

/// `text` without leading and trailing whitespace, as `str::trim` (Unicode whitespace), with
/// ASCII handled first.
fn trim(text: &str) -> &str {
    let text = text.trim_ascii();
    match (text.as_bytes().first(), text.as_bytes().last()) {
        (Some(first), Some(last)) if !first.is_ascii() || !last.is_ascii() => text.trim(),
        _ => text,
    }
}

/// `text` without trailing whitespace, as `str::trim_end` (Unicode whitespace), with ASCII
/// handled first.
fn trim_end(text: &str) -> &str {
    let text = text.trim_ascii_end();
    match text.as_bytes().last() {
        Some(last) if !last.is_ascii() => text.trim_end(),
        _ => text,
    }
}

/// `10^k` for the digits after the point that [`parse_f32`] reads directly.
const POWERS_OF_TEN: [f32; 8] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7];

/// `field` as an `f32`, exactly as `str::parse` reads it (`None` where that fails).
///
/// A plain decimal of at most seven digits, with an optional sign and point (`5.1`, `-0.25`,
/// `3`, `.5`), is read directly. Its digits as an integer (below 10^7, so under 2^24) and the
/// power of ten it is divided by are both exact in `f32`, so the division's one rounding
/// gives the correctly rounded value (Clinger's fast path): the same bits as `str::parse`,
/// at a fraction of its cost (`str::parse` was about 40% of decoding a four-number row in
/// the guest). Anything else (more digits, exponents, `inf`, `NaN`) goes to `str::parse`.
fn parse_f32(field: &str) -> Option<f32> {
    let bytes = field.as_bytes();
    let (negative, digits) = match bytes.first() {
        Some(b'-') => (true, &bytes[1..]),
        Some(b'+') => (false, &bytes[1..]),
        _ => (false, bytes),
    };
    let (mut mantissa, mut count, mut decimals, mut point) = (0u32, 0usize, 0usize, false);
    for &b in digits {
        match b {
            b'0'..=b'9' if count < 7 => {
                mantissa = mantissa * 10 + u32::from(b - b'0');
                count += 1;
                decimals += usize::from(point);
            }
            b'.' if !point => point = true,
            _ => return field.parse().ok(),
        }
    }
    if count == 0 {
        return field.parse().ok();
    }
    let value = mantissa as f32 / POWERS_OF_TEN[decimals];
    Some(if negative { -value } else { value })
}

/// Decode JSON: a nested array of numbers (a flat array is one row, shape `[1, n]`), or an
/// object whose `"instances"` or `"inputs"` member is such an array. Ragged arrays are
/// rejected.
pub fn decode_json(body: &[u8]) -> Result<Tensor, HandlerError> {
    require_body(body)?;
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| HandlerError::bad_request(format!("invalid JSON: {e}")))?;
    let array = match &value {
        serde_json::Value::Array(_) => &value,
        serde_json::Value::Object(map) => map
            .get("instances")
            .or_else(|| map.get("inputs"))
            .ok_or_else(|| {
                HandlerError::bad_request(
                    "expected a JSON array of numbers or an object with an \"instances\" or \
                     \"inputs\" array",
                )
            })?,
        _ => {
            return Err(HandlerError::bad_request(
                "expected a JSON array of numbers or an object with an \"instances\" or \
                 \"inputs\" array",
            ))
        }
    };
    let tensor = json_to_tensor(array)?;
    let tensor = if tensor.shape.len() == 1 {
        tensor.into_matrix()?
    } else {
        tensor
    };
    require_values(tensor)
}

/// Convert a JSON value (a number or a nested array of numbers) into a tensor of its shape.
pub fn json_to_tensor(value: &serde_json::Value) -> Result<Tensor, HandlerError> {
    let mut shape = Vec::new();
    let mut probe = value;
    while let serde_json::Value::Array(items) = probe {
        shape.push(items.len());
        match items.first() {
            Some(first) => probe = first,
            None => break,
        }
    }
    let mut data = Vec::with_capacity(shape.iter().product());
    let mut path = String::new();
    collect_json(value, &shape, &mut path, &mut data)?;
    Tensor::new(data, shape)
}

fn collect_json(
    value: &serde_json::Value,
    shape: &[usize],
    path: &mut String,
    out: &mut Vec<f32>,
) -> Result<(), HandlerError> {
    match (value, shape.split_first()) {
        (serde_json::Value::Array(items), Some((&len, rest))) => {
            if items.len() != len {
                return Err(HandlerError::bad_request(format!(
                    "ragged JSON array: {} has {} elements, expected {len}",
                    display_path(path),
                    items.len()
                )));
            }
            for (i, item) in items.iter().enumerate() {
                let mark = path.len();
                let _ = write!(path, "[{i}]");
                collect_json(item, rest, path, out)?;
                path.truncate(mark);
            }
            Ok(())
        }
        (serde_json::Value::Number(n), None) => {
            out.push(n.as_f64().unwrap_or(f64::NAN) as f32);
            Ok(())
        }
        (serde_json::Value::Array(_), None) | (serde_json::Value::Number(_), Some(_)) => {
            Err(HandlerError::bad_request(format!(
                "ragged JSON array: {} does not match the shape of the first element",
                display_path(path)
            )))
        }
        (other, _) => Err(HandlerError::bad_request(format!(
            "expected a number at {}, found {}",
            display_path(path),
            json_kind(other)
        ))),
    }
}

fn display_path(path: &str) -> String {
    if path.is_empty() {
        "the top level".to_owned()
    } else {
        format!("element {path}")
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

const NPY_MAGIC: &[u8] = b"\x93NUMPY";

/// Decode a NumPy `.npy` file (format versions 1, 2 and 3) holding little-endian `<f4`, `<f8`,
/// `<i4`, `<i8` or `u1` values in C order. Values are converted to `f32`; the shape is kept.
pub fn decode_npy(body: &[u8]) -> Result<Tensor, HandlerError> {
    require_body(body)?;
    let bad = |m: String| HandlerError::bad_request(format!("invalid NPY body: {m}"));
    if body.len() < 10 || !body.starts_with(NPY_MAGIC) {
        return Err(bad(
            "it does not start with the NPY magic string \\x93NUMPY".into(),
        ));
    }
    let major = body[6];
    let (header_len, header_start): (usize, usize) = match major {
        1 => (u16::from_le_bytes([body[8], body[9]]) as usize, 10),
        2 | 3 => {
            if body.len() < 12 {
                return Err(bad("truncated header".into()));
            }
            let len = u32::from_le_bytes([body[8], body[9], body[10], body[11]]);
            (len as usize, 12)
        }
        v => return Err(bad(format!("unsupported format version {v}"))),
    };
    let header_end = header_start
        .checked_add(header_len)
        .filter(|&end| end <= body.len())
        .ok_or_else(|| bad("truncated header".into()))?;
    let header = std::str::from_utf8(&body[header_start..header_end])
        .map_err(|_| bad("the header is not text".into()))?;
    let header = NpyHeader::parse(header).map_err(bad)?;
    if header.fortran_order {
        return Err(bad(
            "fortran_order is True; only C-order arrays are supported (use np.ascontiguousarray)"
                .into(),
        ));
    }

    let count: usize = header.shape.iter().product();
    let (size, convert): (usize, fn(&[u8]) -> f32) = match header.descr.as_str() {
        "<f4" => (4, |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        "<f8" => (8, |b| {
            f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
        }),
        "<i4" => (4, |b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32),
        "<i8" => (8, |b| {
            i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
        }),
        "|u1" | "<u1" => (1, |b| f32::from(b[0])),
        other => {
            return Err(bad(format!(
                "dtype '{other}' is not supported; use one of <f4, <f8, <i4, <i8, |u1"
            )))
        }
    };
    let payload = &body[header_end..];
    let expected = count
        .checked_mul(size)
        .ok_or_else(|| bad("shape too large".into()))?;
    if payload.len() != expected {
        return Err(bad(format!(
            "shape {:?} of {} needs {expected} data bytes, got {}",
            header.shape,
            header.descr,
            payload.len()
        )));
    }
    let data = payload.chunks_exact(size).map(convert).collect();
    require_values(Tensor::new(data, header.shape)?)
}

struct NpyHeader {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

impl NpyHeader {
    /// Parse the Python dict literal of an NPY header, e.g.
    /// `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`.
    fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let inner = text
            .strip_prefix('{')
            .and_then(|t| t.strip_suffix('}'))
            .ok_or("the header is not a dictionary")?;
        let descr = Self::string_value(inner, "descr")?;
        let fortran_order = match Self::raw_value(inner, "fortran_order")?
            .split([',', '}'])
            .next()
            .unwrap_or("")
            .trim()
        {
            "True" => true,
            "False" => false,
            other => {
                return Err(format!(
                    "fortran_order is '{other}', expected True or False"
                ))
            }
        };
        let shape_text = Self::raw_value(inner, "shape")?;
        let shape_text = shape_text
            .strip_prefix('(')
            .and_then(|t| t.split_once(')'))
            .map(|(t, _)| t)
            .ok_or("shape is not a tuple")?;
        let shape = shape_text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.trim_end_matches('L')
                    .parse::<usize>()
                    .map_err(|_| format!("shape entry '{s}' is not a size"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            descr,
            fortran_order,
            shape,
        })
    }

    /// The text after `'key':`, trimmed at the start.
    fn raw_value<'t>(inner: &'t str, key: &str) -> Result<&'t str, String> {
        for quote in ['\'', '"'] {
            let pattern = format!("{quote}{key}{quote}");
            if let Some(at) = inner.find(&pattern) {
                let rest = inner[at + pattern.len()..].trim_start();
                return rest
                    .strip_prefix(':')
                    .map(str::trim_start)
                    .ok_or_else(|| format!("no ':' after '{key}'"));
            }
        }
        Err(format!("the header has no '{key}'"))
    }

    fn string_value(inner: &str, key: &str) -> Result<String, String> {
        let rest = Self::raw_value(inner, key)?;
        let quote = rest
            .chars()
            .next()
            .filter(|c| *c == '\'' || *c == '"')
            .ok_or_else(|| format!("'{key}' is not a string"))?;
        rest[1..]
            .split_once(quote)
            .map(|(value, _)| value.to_owned())
            .ok_or_else(|| format!("'{key}' is not a closed string"))
    }
}

/// Encode `tensor` as `content_type` (one of [`TENSOR_TYPES`]; parameters and case ignored).
pub fn encode(tensor: &Tensor, content_type: &str) -> Result<Vec<u8>, HandlerError> {
    match media_type(content_type).as_str() {
        JSON => Ok(encode_json(tensor)),
        CSV => Ok(encode_csv(tensor)),
        NPY => Ok(encode_npy(tensor)),
        _ => Err(HandlerError::not_acceptable(format!(
            "cannot write '{content_type}'; this model writes: {}",
            supported_list(TENSOR_TYPES)
        ))),
    }
}

/// `tensor` as JSON nested arrays of its shape (a scalar is a bare number). NaN and
/// infinities become `null`.
pub fn encode_json(tensor: &Tensor) -> Vec<u8> {
    fn write(out: &mut String, data: &[f32], shape: &[usize]) {
        match shape.split_first() {
            None => write_json_number(out, data.first().copied().unwrap_or(f32::NAN)),
            Some((&len, rest)) => {
                let step: usize = rest.iter().product();
                out.push('[');
                for i in 0..len {
                    if i > 0 {
                        out.push(',');
                    }
                    write(out, &data[i * step..(i + 1) * step], rest);
                }
                out.push(']');
            }
        }
    }
    let mut out = String::with_capacity(tensor.data.len() * 8 + 2);
    write(&mut out, &tensor.data, &tensor.shape);
    out.into_bytes()
}

/// Append `value` to `out` as a JSON number (shortest round-trip form), or `null` if it is not
/// finite.
pub fn write_json_number(out: &mut String, value: f32) {
    if value.is_finite() {
        let _ = write!(out, "{value}");
    } else {
        out.push_str("null");
    }
}

/// `value` as a JSON number that prints the way the `f32` does (`0.97`, not
/// `0.9700000286102295`); `null` if it is not finite.
pub fn json_number(value: f32) -> serde_json::Value {
    value
        .to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(serde_json::Value::Null, serde_json::Value::Number)
}

/// Append `value` to JSON text being written by hand, as [`json_number`] would write it (the
/// shortest decimal that reads back as the `f32`; `null` if it is not finite), without
/// building a `serde_json::Value` — for handlers on a hot path. Two details may differ, never
/// the `f32` read back: below 10^-5 and from 10^13 up, whether the number is written out or
/// with an exponent (`0.0000012` against `1.2e-6`); and where two shortest decimals are
/// equally close (`2017.7812` and `2017.7813` for 2017.78125), which one is written.
pub fn push_json_number(out: &mut String, value: f32) {
    if value.is_finite() {
        // The shortest round-trip digits, by the formatter serde_json itself uses.
        out.push_str(zmij::Buffer::new().format_finite(value));
    } else {
        out.push_str("null");
    }
}

/// Any JSON value as an `application/json` body.
pub fn encode_json_value(value: &serde_json::Value) -> Vec<u8> {
    // Serialising a `Value` to memory cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

/// `tensor` as CSV: one line per row (see [`Tensor::iter_rows`]), values separated by commas.
pub fn encode_csv(tensor: &Tensor) -> Vec<u8> {
    let mut out = String::with_capacity(tensor.data.len() * 8);
    for row in tensor.iter_rows() {
        for (i, value) in row.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{value}");
        }
        out.push('\n');
    }
    out.into_bytes()
}

/// `tensor` as a version 1 `.npy` file of little-endian `f32` (`<f4`), C order.
pub fn encode_npy(tensor: &Tensor) -> Vec<u8> {
    let shape = match tensor.shape.as_slice() {
        [] => "()".to_owned(),
        [n] => format!("({n},)"),
        dims => format!(
            "({})",
            dims.iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    // Magic (6) + version (2) + length (2) + header + '\n' is padded to a multiple of 64.
    let unpadded = 10 + header.len() + 1;
    header.extend(std::iter::repeat_n(' ', (64 - unpadded % 64) % 64));
    header.push('\n');

    let mut out = Vec::with_capacity(10 + header.len() + tensor.data.len() * 4);
    out.extend_from_slice(NPY_MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for value in &tensor.data {
        out.extend_from_slice(&value.to_le_bytes());
    }
    out
}

/// Pick the response type from an `Accept` header and the types a handler writes, the first
/// of `available` being its default.
///
/// An empty header or `*/*` gives the default. Comma lists, `type/*` ranges and `q` values
/// are honoured (`q=0` means "not this one"); among equally preferred entries the client's
/// order wins. If nothing is acceptable the error is [`HandlerError::NotAcceptable`], naming
/// what the handler can write.
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

    fn is_bad_request(r: Result<Tensor, HandlerError>, needle: &str) {
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

    fn npy(descr: &str, fortran: &str, shape: &str, payload: &[u8], major: u8) -> Vec<u8> {
        let header =
            format!("{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape}, }}\n");
        let mut out = NPY_MAGIC.to_vec();
        out.extend_from_slice(&[major, 0]);
        if major == 1 {
            out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        } else {
            out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn csv_good() {
        let t = decode(b"5.1,3.5,1.4,0.2\n6.2, 2.9 ,4.3,1.3\r\n\n", "text/csv").unwrap();
        assert_eq!(t.shape, vec![2, 4]);
        assert_eq!(t.data, vec![5.1, 3.5, 1.4, 0.2, 6.2, 2.9, 4.3, 1.3]);
        let t = decode(b"1,2", "Text/CSV; charset=utf-8").unwrap();
        assert_eq!(t.shape, vec![1, 2]);
    }

    #[test]
    fn csv_malformed_names_line_and_column() {
        is_bad_request(decode_csv(b"1,2,3\n4,abc,6\n"), "line 2, column 2: 'abc'");
        is_bad_request(decode_csv(b"1,2,3\n\n4,5,6\n"), "line 2 is empty");
        is_bad_request(decode_csv(b"1,,3\n"), "line 1, column 2");
    }

    #[test]
    fn csv_splits_and_trims_as_str_would() {
        // Unicode whitespace around a value is trimmed, as `str::trim` does; a lone "\r"
        // ends a line only before "\n".
        let t = decode_csv("\u{a0}1.5\u{2003},\t2 \r\n3,4\u{3000}\n".as_bytes()).unwrap();
        assert_eq!((t.shape, t.data), (vec![2, 2], vec![1.5, 2.0, 3.0, 4.0]));
        is_bad_request(decode_csv(b"1,2\r3,4\n"), "line 1, column 2: '2\r3'");
        let t = decode_csv("\u{feff}7".as_bytes()).unwrap();
        assert_eq!((t.shape, t.data), (vec![1, 1], vec![7.0]));
        is_bad_request(decode_csv(b"1,2\n \t\r\n3,4"), "line 2 is empty");
        is_bad_request(decode_csv(b"1,2,"), "line 1, column 3: ''");
        let pieces: Vec<&str> = split_at_byte("a,,b,", b',').collect();
        assert_eq!(pieces, "a,,b,".split(',').collect::<Vec<_>>());
    }

    #[test]
    fn csv_trailing_whitespace_is_trimmed_as_str_would() {
        let t = decode_csv("1,2\n\t \n".as_bytes()).unwrap();
        assert_eq!((t.shape, t.data), (vec![1, 2], vec![1.0, 2.0]));
        let t = decode_csv("1,2\n\u{2003}\n\u{a0}".as_bytes()).unwrap();
        assert_eq!((t.shape, t.data), (vec![1, 2], vec![1.0, 2.0]));
    }

    /// `parse_f32` against `str::parse`, bit for bit: every value of up to five digits with
    /// the point in every place, pseudo-random values of six and seven digits, signs, and
    /// what the direct path must leave to `str::parse`.
    #[test]
    fn parse_f32_reads_exactly_as_str_parse() {
        fn check(text: &str) {
            assert_eq!(
                parse_f32(text).map(f32::to_bits),
                text.parse::<f32>().ok().map(f32::to_bits),
                "{text:?}"
            );
        }
        let with_point = |digits: &str, at: usize| format!("{}.{}", &digits[..at], &digits[at..]);
        for n in 0..100_000u32 {
            let digits = n.to_string();
            check(&digits);
            for at in 0..=digits.len() {
                check(&with_point(&digits, at));
            }
        }
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..100_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let digits = format!("{:07}", state % 10_000_000);
            let digits = &digits[(state >> 60) as usize % 2..];
            for at in 0..=digits.len() {
                for sign in ["", "-", "+"] {
                    check(&format!("{sign}{}", with_point(digits, at)));
                }
            }
        }
        for text in [
            "",
            "-",
            "+",
            ".",
            "-.",
            "..5",
            "5..",
            "5.1.2",
            "1e5",
            "1E-3",
            "2.5e1",
            "inf",
            "-inf",
            "NaN",
            "nan",
            "infinity",
            "-0",
            "+0",
            "-0.0",
            "0.0000001",
            "0.00000001",
            "12345678",
            "1234567.8",
            "9999999",
            "99999999",
            "16777217",
            "000000001",
            "0000000.1",
            "+.5",
            "-.5",
            "5.",
            "-5.",
            " 5",
            "5 ",
            "--5",
            "+-5",
            "0x10",
            "1_000",
            "٣",
        ] {
            check(text);
        }
    }

    #[test]
    fn csv_ragged() {
        is_bad_request(
            decode_csv(b"1,2,3\n4,5\n"),
            "line 2 has 2 values, but line 1 has 3",
        );
    }

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
    fn json_good() {
        let t = decode(b"[[1, 2.5], [3, 4]]", "application/json").unwrap();
        assert_eq!((t.shape, t.data), (vec![2, 2], vec![1.0, 2.5, 3.0, 4.0]));
        let t = decode_json(b"[1, 2, 3]").unwrap();
        assert_eq!(t.shape, vec![1, 3]);
        let t = decode_json(br#"{"instances": [[1, 2], [3, 4], [5, 6]]}"#).unwrap();
        assert_eq!(t.shape, vec![3, 2]);
        let t = decode_json(br#"{"inputs": [7, 8]}"#).unwrap();
        assert_eq!((t.shape, t.data), (vec![1, 2], vec![7.0, 8.0]));
        let t = decode_json(b"[[[1],[2]],[[3],[4]]]").unwrap();
        assert_eq!(t.shape, vec![2, 2, 1]);
    }

    #[test]
    fn json_malformed() {
        is_bad_request(decode_json(b"[[1, 2], [3"), "invalid JSON");
        is_bad_request(
            decode_json(b"[1, \"x\"]"),
            "expected a number at element [1], found a string",
        );
        is_bad_request(decode_json(b"{\"data\": [1]}"), "\"instances\"");
        is_bad_request(decode_json(b"42"), "expected a JSON array");
    }

    #[test]
    fn json_ragged() {
        is_bad_request(
            decode_json(b"[[1, 2], [3]]"),
            "element [1] has 1 elements, expected 2",
        );
        is_bad_request(decode_json(b"[[1, 2], 3]"), "element [1] does not match");
        is_bad_request(decode_json(b"[1, [2]]"), "element [1] does not match");
    }

    #[test]
    fn npy_good_dtypes_and_versions() {
        let f4: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let t = decode(&npy("<f4", "False", "(2, 3)", &f4, 1), "application/x-npy").unwrap();
        assert_eq!(
            (t.shape, t.data),
            (vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
        );

        let f8: Vec<u8> = [1.5f64, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let t = decode_npy(&npy("<f8", "False", "(2,)", &f8, 2)).unwrap();
        assert_eq!((t.shape, t.data), (vec![2], vec![1.5, -2.0]));

        let i4: Vec<u8> = [7i32, -1].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(
            decode_npy(&npy("<i4", "False", "(1, 2)", &i4, 3))
                .unwrap()
                .data,
            vec![7.0, -1.0]
        );
        let i8: Vec<u8> = [9i64].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(
            decode_npy(&npy("<i8", "False", "(1, 1)", &i8, 1))
                .unwrap()
                .data,
            vec![9.0]
        );
        let t = decode_npy(&npy("|u1", "False", "(3,)", &[0, 128, 255], 1)).unwrap();
        assert_eq!(t.data, vec![0.0, 128.0, 255.0]);
    }

    #[test]
    fn npy_round_trip() {
        let t = Tensor::new(vec![0.25, -1.0, 3.5, 4.0, 5.0, 6.0], vec![3, 2]).unwrap();
        let bytes = encode(&t, NPY).unwrap();
        assert_eq!(
            (bytes.len() - t.data.len() * 4) % 64,
            0,
            "header is 64-byte aligned"
        );
        assert_eq!(decode_npy(&bytes).unwrap(), t);
        let v = Tensor::new(vec![1.0, 2.0], vec![2]).unwrap();
        assert_eq!(decode_npy(&encode_npy(&v)).unwrap(), v);
    }

    #[test]
    fn npy_bad_header() {
        is_bad_request(decode_npy(b"not an npy file"), "magic");
        let f4 = 1.0f32.to_le_bytes();
        is_bad_request(
            decode_npy(&npy("<f4", "True", "(1, 1)", &f4, 1)),
            "fortran_order is True",
        );
        is_bad_request(
            decode_npy(&npy(">f4", "False", "(1, 1)", &f4, 1)),
            "dtype '>f4'",
        );
        is_bad_request(
            decode_npy(&npy("<f4", "False", "(2, 1)", &f4, 1)),
            "needs 8 data bytes, got 4",
        );
        is_bad_request(
            decode_npy(&npy("<f4", "False", "[1, 1]", &f4, 1)),
            "shape is not a tuple",
        );
        is_bad_request(
            decode_npy(&npy("<f4", "False", "(1, 1)", &f4, 9)),
            "version 9",
        );
        let mut truncated = npy("<f4", "False", "(1, 1)", &f4, 1);
        truncated.truncate(20);
        is_bad_request(decode_npy(&truncated), "truncated header");
        let garbage = npy("<f4", "False", "(1, 1)", &f4, 1);
        let text =
            String::from_utf8_lossy(&garbage[10..garbage.len() - 4]).replace("descr", "dtype");
        let mut renamed = garbage[..10].to_vec();
        renamed.extend_from_slice(text.as_bytes());
        renamed.extend_from_slice(&f4);
        is_bad_request(decode_npy(&renamed), "no 'descr'");
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
    fn hand_written_json_numbers_match_serde_json() {
        let values = [
            0.0f32,
            -0.0,
            1.0,
            0.97,
            0.02,
            0.1,
            1e-7,
            3.4028235e38,
            -1.5e-45,
            123456.79,
            0.3333333,
        ];
        for value in values {
            let mut out = String::new();
            push_json_number(&mut out, value);
            let expected = serde_json::to_string(&json_number(value)).unwrap();
            assert_eq!(out, expected, "{value}");
            assert_eq!(out.parse::<f32>().unwrap(), value);
        }
        let mut out = String::new();
        push_json_number(&mut out, f32::NAN);
        assert_eq!(out, "null");
    }

    /// `push_json_number` against `json_number` written by serde_json, over f32 bit patterns
    /// spread across the whole range (subnormals and both signs included) and pseudo-random
    /// values in [0, 1), where probabilities live: it reads back as the same `f32`, and is
    /// exactly serde_json's text outside the two cases `push_json_number` documents.
    #[test]
    fn hand_written_json_numbers_match_serde_json_across_the_range() {
        let check = |value: f32| {
            if !value.is_finite() {
                return;
            }
            let mut out = String::new();
            push_json_number(&mut out, value);
            let expected = serde_json::to_string(&json_number(value)).unwrap();
            let shown = format!("{value:e} ({:#x})", value.to_bits());
            assert_eq!(out.parse::<f32>().ok(), Some(value), "{shown}");
            // Where the two differ in more than notation, it is a tie between two shortest
            // decimals, which both read back as `value` (checked above).
            let same_number = out.parse::<f64>().ok() == expected.parse::<f64>().ok();
            if same_number && (1e-5..1e13).contains(&value.abs()) {
                assert_eq!(out, expected, "{shown}");
            }
        };
        for bits in (0..=u32::MAX).step_by(40_009) {
            check(f32::from_bits(bits));
        }
        let mut state = 0x9e37_79b9u32;
        for _ in 0..50_000 {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            check((state >> 8) as f32 / (1u32 << 24) as f32);
        }
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

    #[test]
    fn matrix_views() {
        let t = Tensor::new(vec![1.0, 2.0], vec![2])
            .unwrap()
            .into_matrix()
            .unwrap();
        assert_eq!(t.shape, vec![1, 2]);
        assert_eq!(t.iter_rows().collect::<Vec<_>>(), vec![&[1.0, 2.0][..]]);
        assert!(Tensor::new(vec![1.0; 8], vec![2, 2, 2])
            .unwrap()
            .into_matrix()
            .is_err());
        assert!(Tensor::new(vec![1.0; 3], vec![2, 2]).is_err());
    }
}
