//! CSV and plain text. [`decode_csv`] and [`encode_csv`] read and write SageMaker's
//! `text/csv` tensors (one sample per line, numbers only), tuned for the guest's request path
//! (`BENCHMARKS.md`); [`decode_cells`] reads any comma- (or whitespace-) separated text as
//! lines of [`Cell`]s, numbers where they read as one, for comparing bodies whose shape is not
//! known in advance (the host's shadow comparison).

use std::fmt::Write as _;

use crate::tensor::require_body;
use crate::text::{split_at_byte, trim, trim_end};
use crate::{HandlerError, Tensor};

/// Decode CSV: one sample per line, numbers separated by commas, no header. Trailing blank
/// lines are ignored; every row must have the same number of values. Gives shape
/// `[rows, columns]`.
///
/// # Examples
///
/// ```
/// use plinth_codec::decode_csv;
///
/// let t = decode_csv(b"5.1,3.5,1.4,0.2\n6.2,2.9,4.3,1.3\n").unwrap();
/// assert_eq!(t.shape, vec![2, 4]);
/// let e = decode_csv(b"1,2\n3\n").unwrap_err();
/// assert!(e.message().starts_with("CSV line 2 has 1 values, but line 1 has 2"));
/// ```
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

/// One cell of a line of text: a number where the cell reads as an `f64`, else its text.
///
/// # Examples
///
/// ```
/// use plinth_codec::csv::{decode_cells, Cell};
///
/// let rows = decode_cells(b"setosa,0.97", false).unwrap();
/// assert_eq!(rows, vec![vec![Cell::Text("setosa".into()), Cell::Number(0.97)]]);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// A cell that reads as a number (`str::parse::<f64>` after trimming).
    Number(f64),
    /// Any other cell, trimmed.
    Text(String),
}

/// Decode any text as lines of cells: for CSV (`text/csv`, `application/csv`) cells are
/// separated by commas; with `whitespace_separates` (`text/plain`) by commas and whitespace,
/// empty cells then dropped. Cells are trimmed; blank lines and a leading byte order mark are
/// skipped; lines may differ in length. Unlike [`decode_csv`] numbers are `f64` and other
/// cells are kept: the only error is a body that is not UTF-8.
///
/// # Examples
///
/// ```
/// use plinth_codec::csv::{decode_cells, Cell::Number};
///
/// let rows = decode_cells(b"0.1 0.9\n\n3", true).unwrap();
/// assert_eq!(rows, vec![vec![Number(0.1), Number(0.9)], vec![Number(3.0)]]);
/// ```
pub fn decode_cells(
    body: &[u8],
    whitespace_separates: bool,
) -> Result<Vec<Vec<Cell>>, HandlerError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| HandlerError::bad_request(format!("text body is not UTF-8: {e}")))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let cell = |raw: &str| {
        let raw = trim(raw);
        match raw.parse::<f64>() {
            Ok(n) => Cell::Number(n),
            Err(_) => Cell::Text(raw.to_owned()),
        }
    };
    Ok(split_at_byte(text, b'\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .filter(|line| !trim(line).is_empty())
        .map(|line| {
            if whitespace_separates {
                line.split(|c: char| c == ',' || c.is_whitespace())
                    .filter(|raw| !raw.is_empty())
                    .map(cell)
                    .collect()
            } else {
                split_at_byte(line, b',').map(cell).collect()
            }
        })
        .collect())
}

/// `tensor` as CSV: one line per row (see [`Tensor::iter_rows`]), values separated by commas.
///
/// # Examples
///
/// ```
/// use plinth_codec::{encode_csv, Tensor};
///
/// let t = Tensor::new(vec![1.0, 0.5, 2.0, 0.25], vec![2, 2]).unwrap();
/// assert_eq!(encode_csv(&t), b"1,0.5\n2,0.25\n");
/// ```
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode, is_bad_request};

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

    /// Found by `tests/fuzz.rs`: the vertical tab is whitespace to `str::trim` but not to
    /// `trim_ascii`, so `"0\u{b}"` was refused as not a number.
    #[test]
    fn csv_vertical_tab_is_trimmed_as_str_would() {
        let t = decode_csv(b"\x0b0\x0b,1\n2,3\x0b\n\x0b").unwrap();
        assert_eq!((t.shape, t.data), (vec![2, 2], vec![0.0, 1.0, 2.0, 3.0]));
        assert_eq!(
            decode_cells(b"\x0bx\x0b", false).unwrap(),
            vec![vec![Cell::Text("x".into())]]
        );
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
    fn cells_keep_text_and_skip_blank_lines() {
        use Cell::{Number as N, Text as T};
        let rows = decode_cells(b"setosa, 0.97,0.02\r\n\n \t\nvirginica,1e-3,\n", false).unwrap();
        assert_eq!(
            rows,
            vec![
                vec![T("setosa".into()), N(0.97), N(0.02)],
                vec![T("virginica".into()), N(0.001), T(String::new())],
            ]
        );
        // Plain text also splits on whitespace, and drops the empty cells that leaves.
        let rows = decode_cells("\u{feff}0.1 0.9\t, 3\n7\r".as_bytes(), true).unwrap();
        assert_eq!(rows, vec![vec![N(0.1), N(0.9), N(3.0)], vec![N(7.0)]]);
        assert_eq!(decode_cells(b"", false).unwrap(), Vec::<Vec<Cell>>::new());
        is_bad_request(decode_cells(&[0xff, 0xfe], true), "not UTF-8");
    }
}
