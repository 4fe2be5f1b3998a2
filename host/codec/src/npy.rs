//! NumPy `.npy` files. [`read_header`] reads the magic string, the format version (1, 2 or
//! 3) and the header dict; on top of it [`decode_npy`] reads SageMaker's
//! `application/x-npy` tensors as `f32` (the dtypes and the C order a model takes), and
//! [`decode_f64`] reads any little-endian boolean, integer or float array, in either order,
//! as `f64` (the host's shadow comparison, which compares values without rounding them to
//! `f32`). [`encode_npy`] writes version 1 `<f4`.

use crate::tensor::{require_body, require_values};
use crate::{HandlerError, Tensor};

/// The bytes every `.npy` file starts with.
///
/// # Examples
///
/// ```
/// use plinth_codec::{encode_npy, npy::MAGIC, Tensor};
///
/// let body = encode_npy(&Tensor::new(vec![1.0], vec![1]).unwrap());
/// assert!(body.starts_with(MAGIC));
/// ```
pub const MAGIC: &[u8] = b"\x93NUMPY";

/// An NPY error: `message` after "invalid NPY body: ".
fn invalid(message: String) -> HandlerError {
    HandlerError::bad_request(format!("invalid NPY body: {message}"))
}

/// The product of `shape`, or an error if it overflows.
fn element_count(shape: &[usize]) -> Result<usize, HandlerError> {
    shape
        .iter()
        .try_fold(1usize, |count, &d| count.checked_mul(d))
        .ok_or_else(|| invalid("shape too large".into()))
}

/// The header of a `.npy` file: the Python dict literal after the magic string, version and
/// length, e.g. `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`.
///
/// # Examples
///
/// ```
/// use plinth_codec::{encode_npy, npy::read_header, Tensor};
///
/// let body = encode_npy(&Tensor::new(vec![0.0; 6], vec![2, 3]).unwrap());
/// let (header, _) = read_header(&body).unwrap();
/// assert_eq!((header.descr.as_str(), header.fortran_order), ("<f4", false));
/// assert_eq!(header.shape, vec![2, 3]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The dtype, e.g. `<f4` (little-endian `f32`) or `|u1`.
    pub descr: String,
    /// Whether the values are stored in Fortran (column-major) order.
    pub fortran_order: bool,
    /// The size of each dimension; `[]` for a scalar.
    pub shape: Vec<usize>,
}

/// The header of a `.npy` file (format versions 1, 2 and 3) and the data bytes after it.
/// Errors are [`HandlerError::BadRequest`]s naming what is wrong (the magic string, the
/// version, a truncated header, a header field).
///
/// # Examples
///
/// ```
/// use plinth_codec::{encode_npy, npy::read_header, Tensor};
///
/// let body = encode_npy(&Tensor::new(vec![0.0; 6], vec![2, 3]).unwrap());
/// let (header, data) = read_header(&body).unwrap();
/// assert_eq!(header.shape, vec![2, 3]);
/// assert_eq!(data.len(), 6 * 4);
/// assert!(read_header(b"PK\x03\x04 not npy").is_err());
/// ```
pub fn read_header(body: &[u8]) -> Result<(Header, &[u8]), HandlerError> {
    if body.len() < 10 || !body.starts_with(MAGIC) {
        return Err(invalid(
            "it does not start with the NPY magic string \\x93NUMPY".into(),
        ));
    }
    let major = body[6];
    let (header_len, header_start): (usize, usize) = match major {
        1 => (u16::from_le_bytes([body[8], body[9]]) as usize, 10),
        2 | 3 => {
            if body.len() < 12 {
                return Err(invalid("truncated header".into()));
            }
            let len = u32::from_le_bytes([body[8], body[9], body[10], body[11]]);
            (len as usize, 12)
        }
        v => return Err(invalid(format!("unsupported format version {v}"))),
    };
    let header_end = header_start
        .checked_add(header_len)
        .filter(|&end| end <= body.len())
        .ok_or_else(|| invalid("truncated header".into()))?;
    let header = std::str::from_utf8(&body[header_start..header_end])
        .map_err(|_| invalid("the header is not text".into()))?;
    let header = Header::parse(header).map_err(invalid)?;
    Ok((header, &body[header_end..]))
}

/// Decode a NumPy `.npy` file (format versions 1, 2 and 3) holding little-endian `<f4`, `<f8`,
/// `<i4`, `<i8` or `u1` values in C order. Values are converted to `f32`; the shape is kept.
///
/// # Examples
///
/// ```
/// use plinth_codec::{decode_npy, encode_npy, Tensor};
///
/// let t = Tensor::new(vec![5.1, 3.5, 1.4, 0.2], vec![1, 4]).unwrap();
/// assert_eq!(decode_npy(&encode_npy(&t)).unwrap(), t);
/// let e = decode_npy(b"5.1,3.5,1.4,0.2").unwrap_err();
/// assert!(e.message().starts_with("invalid NPY body"));
/// ```
pub fn decode_npy(body: &[u8]) -> Result<Tensor, HandlerError> {
    require_body(body)?;
    let (header, payload) = read_header(body)?;

    if header.fortran_order {
        return Err(invalid(
            "fortran_order is True; only C-order arrays are supported (use np.ascontiguousarray)"
                .into(),
        ));
    }

    let count = element_count(&header.shape)?;
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
            return Err(invalid(format!(
                "dtype '{other}' is not supported; use one of <f4, <f8, <i4, <i8, |u1"
            )))
        }
    };
    let expected = count
        .checked_mul(size)
        .ok_or_else(|| invalid("shape too large".into()))?;
    if payload.len() != expected {
        return Err(invalid(format!(
            "shape {:?} of {} needs {expected} data bytes, got {}",
            header.shape,
            header.descr,
            payload.len()
        )));
    }
    let data = payload.chunks_exact(size).map(convert).collect();
    require_values(Tensor::new(data, header.shape)?)
}

impl Header {
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

/// A NumPy array read by [`decode_f64`]: its shape and its values as `f64`, in C order.
///
/// # Examples
///
/// ```
/// use plinth_codec::{encode_npy, npy::decode_f64, Tensor};
///
/// let body = encode_npy(&Tensor::new(vec![0.5, 0.25], vec![2]).unwrap());
/// let array = decode_f64(&body).unwrap();
/// assert_eq!((array.shape, array.data), (vec![2], vec![0.5, 0.25]));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    /// The size of each dimension; `[]` for a scalar.
    pub shape: Vec<usize>,
    /// The values, row-major (C order); `data.len()` is the product of `shape`.
    pub data: Vec<f64>,
}

/// Decode a `.npy` file (format versions 1, 2 and 3) of any little-endian boolean (`b1`),
/// integer (`i1`-`i8`, `u1`-`u8`) or float (`f4`, `f8`) dtype (`<`, or `=` for native order,
/// or `|` for one byte), in C or Fortran order, as `f64` values in C order. Unlike
/// [`decode_npy`], `f8` values keep their precision and an empty array is not an error.
///
/// # Examples
///
/// ```
/// use plinth_codec::{encode_npy, npy::decode_f64, Tensor};
///
/// let body = encode_npy(&Tensor::new(vec![], vec![0, 3]).unwrap());
/// let array = decode_f64(&body).unwrap(); // empty arrays are not an error here
/// assert_eq!((array.shape, array.data.len()), (vec![0, 3], 0));
/// ```
pub fn decode_f64(body: &[u8]) -> Result<Array, HandlerError> {
    let (header, payload) = read_header(body)?;
    let Header {
        descr,
        fortran_order,
        shape,
    } = header;
    let (size, convert) = element(&descr).ok_or_else(|| {
        invalid(format!(
            "dtype '{descr}' is not supported; use a little-endian boolean, integer or float"
        ))
    })?;
    let expected = element_count(&shape)?
        .checked_mul(size)
        .ok_or_else(|| invalid("shape too large".into()))?;
    if payload.len() != expected {
        return Err(invalid(format!(
            "shape {shape:?} of {descr} needs {expected} data bytes, got {}",
            payload.len()
        )));
    }
    let data: Vec<f64> = payload.chunks_exact(size).map(convert).collect();
    let data = if fortran_order && shape.len() > 1 {
        fortran_to_c(&shape, &data)
    } else {
        data
    };
    Ok(Array { shape, data })
}

type Convert = fn(&[u8]) -> f64;

/// The size and decoder of one element of a little-endian NPY dtype.
fn element(descr: &str) -> Option<(usize, Convert)> {
    fn le<const N: usize>(b: &[u8]) -> [u8; N] {
        let mut out = [0; N];
        out.copy_from_slice(&b[..N]);
        out
    }
    let mut chars = descr.chars();
    let order = chars.next()?;
    let kind = chars.as_str();
    let one_byte = matches!(kind, "i1" | "u1" | "b1");
    // '=' is native order; the machines NPY files come from are little-endian.
    if !(order == '<' || order == '=' || (order == '|' && one_byte)) {
        return None;
    }
    let found: (usize, Convert) = match kind {
        "f4" => (4, |b| f64::from(f32::from_le_bytes(le(b)))),
        "f8" => (8, |b| f64::from_le_bytes(le(b))),
        "i1" => (1, |b| f64::from(b[0] as i8)),
        "u1" => (1, |b| f64::from(b[0])),
        "b1" => (1, |b| f64::from(u8::from(b[0] != 0))),
        "i2" => (2, |b| f64::from(i16::from_le_bytes(le(b)))),
        "u2" => (2, |b| f64::from(u16::from_le_bytes(le(b)))),
        "i4" => (4, |b| f64::from(i32::from_le_bytes(le(b)))),
        "u4" => (4, |b| f64::from(u32::from_le_bytes(le(b)))),
        "i8" => (8, |b| i64::from_le_bytes(le(b)) as f64),
        "u8" => (8, |b| u64::from_le_bytes(le(b)) as f64),
        _ => return None,
    };
    Some(found)
}

/// Reorder values stored in Fortran (column-major) order into C (row-major) order.
fn fortran_to_c(shape: &[usize], data: &[f64]) -> Vec<f64> {
    let mut strides = vec![1usize; shape.len()];
    for j in 1..shape.len() {
        strides[j] = strides[j - 1] * shape[j - 1];
    }
    let mut index = vec![0usize; shape.len()];
    let mut out = Vec::with_capacity(data.len());
    for _ in 0..data.len() {
        out.push(
            data[index
                .iter()
                .zip(&strides)
                .map(|(i, s)| i * s)
                .sum::<usize>()],
        );
        for j in (0..shape.len()).rev() {
            index[j] += 1;
            if index[j] < shape[j] {
                break;
            }
            index[j] = 0;
        }
    }
    out
}

/// `tensor` as a version 1 `.npy` file of little-endian `f32` (`<f4`), C order.
///
/// # Examples
///
/// ```
/// use plinth_codec::{decode_npy, encode_npy, Tensor, NPY};
///
/// let t = Tensor::new(vec![0.1, 0.9], vec![1, 2]).unwrap();
/// let body = encode_npy(&t);
/// assert_eq!((body.len() - 2 * 4) % 64, 0); // the header is padded to 64 bytes
/// assert_eq!(decode_npy(&body).unwrap(), t);
/// assert_eq!(plinth_codec::encode(&t, NPY).unwrap(), body);
/// ```
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
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for value in &tensor.data {
        out.extend_from_slice(&value.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode, encode, is_bad_request, NPY};

    fn npy(descr: &str, fortran: &str, shape: &str, payload: &[u8], major: u8) -> Vec<u8> {
        let header =
            format!("{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape}, }}\n");
        let mut out = MAGIC.to_vec();
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
    fn f64_keeps_precision_and_reads_every_dtype() {
        let f8: Vec<u8> = [0.1f64, -2.5]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let a = decode_f64(&npy("<f8", "False", "(2,)", &f8, 3)).unwrap();
        assert_eq!((a.shape, a.data), (vec![2], vec![0.1, -2.5]));
        let cases: [(&str, &[u8], f64); 9] = [
            ("|i1", &[0xff], -1.0),
            ("|u1", &[0xff], 255.0),
            ("|b1", &[2], 1.0),
            ("<i2", &[0xfe, 0xff], -2.0),
            ("<u2", &[0xfe, 0xff], 65534.0),
            ("=i4", &[3, 0, 0, 0], 3.0),
            ("<u4", &[0, 0, 0, 0x80], 2_147_483_648.0),
            ("<i8", &[0xff; 8], -1.0),
            ("<u8", &[1, 0, 0, 0, 0, 0, 0, 0], 1.0),
        ];
        for (descr, payload, value) in cases {
            let a = decode_f64(&npy(descr, "False", "(1,)", payload, 1)).unwrap();
            assert_eq!(a.data, vec![value], "{descr}");
        }
        // Empty arrays are arrays.
        let a = decode_f64(&npy("<f4", "False", "(0, 3)", &[], 1)).unwrap();
        assert_eq!((a.shape, a.data), (vec![0, 3], vec![]));
    }

    #[test]
    fn f64_reorders_fortran_to_c() {
        let column_major: Vec<u8> = [1.0f32, 4.0, 2.0, 5.0, 3.0, 6.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let a = decode_f64(&npy("<f4", "True", "(2, 3)", &column_major, 1)).unwrap();
        assert_eq!(a.data, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let file = npy("<f4", "True", "(2, 3)", &column_major, 2);
        let (header, payload) = read_header(&file).unwrap();
        assert_eq!(
            header,
            Header {
                descr: "<f4".into(),
                fortran_order: true,
                shape: vec![2, 3]
            }
        );
        assert_eq!(payload, &column_major[..]);
    }

    #[test]
    fn f64_bad_files() {
        let f4 = 1.0f32.to_le_bytes();
        is_bad_request(
            decode_f64(&npy(">f4", "False", "(1,)", &f4, 1)),
            "dtype '>f4'",
        );
        is_bad_request(
            decode_f64(&npy("|f4", "False", "(1,)", &f4, 1)),
            "dtype '|f4'",
        );
        is_bad_request(
            decode_f64(&npy("<f4", "False", "(2,)", &f4, 1)),
            "needs 8 data bytes",
        );
        is_bad_request(decode_f64(b""), "magic");
        is_bad_request(decode_f64(MAGIC), "magic");
        is_bad_request(
            decode_f64(&npy("<f4", "False", "(4294967296, 4294967296, 2)", &f4, 1)),
            "shape too large",
        );
    }
}
