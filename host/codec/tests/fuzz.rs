//! Property-based fuzzing of the codecs, which read bytes a client (or a model) sent: no
//! input makes a decoder panic, every decoder agrees with a plain reading of its format, and
//! what an encoder writes its decoder reads back as the same tensor.
//!
//! Inputs are arbitrary bytes and, to get past the first check of each format, hostile
//! generators: CSV from numbers in every notation, separators, quotes and line ends; JSON from
//! arbitrary `serde_json::Value` trees and from nested arrays of skewed shapes; NPY files from
//! a real magic string and version with a header of random fields, shapes and payloads.
//!
//! Each property runs `PLINTH_FUZZ_CASES` cases (100,000 unless set):
//! `PLINTH_FUZZ_CASES=1000000 cargo test -p plinth-codec --test fuzz`. Failures are not
//! persisted to files; proptest prints the minimal input.

use plinth_codec::csv::decode_cells;
use plinth_codec::json::{decode_lines, decode_value};
use plinth_codec::npy::{decode_f64, read_header};
use plinth_codec::{
    decode, decode_csv, decode_json, decode_npy, encode_csv, encode_json, encode_npy, json_number,
    json_to_tensor, media_type, negotiate, push_json_number, Tensor, CSV, JSON, NPY, TENSOR_TYPES,
};
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use serde_json::Value;

/// `PLINTH_FUZZ_CASES` cases (100,000 by default), no failure files in the source tree.
fn config() -> ProptestConfig {
    let cases = std::env::var("PLINTH_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Two `f32`s are the same value: equal bits, or both NaN (text keeps no NaN payload or
/// sign).
fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

fn same_values(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(*x, *y))
}

/// Any `f32`, NaNs, infinities, subnormals and both zeros included.
fn any_f32() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => any::<u32>().prop_map(f32::from_bits),
        2 => -1000.0f32..1000.0,
        1 => Just(0.0f32),
        1 => Just(-0.0f32),
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
        1 => Just(f32::MIN_POSITIVE / 2.0),
    ]
}

/// A tensor of `dims` dimensions, each 1 to `max` long.
fn tensor(
    dims: std::ops::Range<usize>,
    max: usize,
    value: BoxedStrategy<f32>,
) -> impl Strategy<Value = Tensor> {
    prop::collection::vec(1..=max, dims).prop_flat_map(move |shape| {
        let count: usize = shape.iter().product();
        prop::collection::vec(value.clone(), count)
            .prop_map(move |data| Tensor::new(data, shape.clone()).expect("sizes agree"))
    })
}

// ---------------------------------------------------------------------------------------
// CSV
// ---------------------------------------------------------------------------------------

/// A number as clients write them.
fn csv_valid_number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<f32>().prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| format!("{v:e}")),
        any::<i64>().prop_map(|v| v.to_string()),
        (
            0u32..10_000_000,
            0usize..9,
            prop::sample::select(vec!["", "-", "+"])
        )
            .prop_map(|(digits, point, sign)| {
                let digits = digits.to_string();
                let at = point.min(digits.len());
                format!("{sign}{}.{}", &digits[..at], &digits[at..])
            }),
    ]
}

/// A number as clients write them, and text that almost is one.
fn csv_number() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => csv_valid_number(),
        1 => prop::sample::select(vec![
            "inf", "-inf", "NaN", "nan", "infinity", "1e5", "1E-3", "1e400", "-0", ".", "-.",
            "+", "..5", "5..", "0x10", "1_000", "٣", "", "\u{a0}1\u{3000}", "\"1\"", "'2'",
        ])
        .prop_map(str::to_owned),
    ]
}

/// One token of hostile CSV: numbers, separators, quotes, line ends, whitespace, a BOM.
fn csv_token() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => csv_number(),
        4 => prop::sample::select(vec![",", ",", ";", "\t", " ", "\"", "'", "\n", "\r\n", "\r"])
            .prop_map(str::to_owned),
        1 => prop::sample::select(vec!["\u{feff}", "\u{2003}", "\u{a0}", "\u{0}", "é", "\u{10ffff}"])
            .prop_map(str::to_owned),
        1 => any::<char>().prop_map(String::from),
    ]
}

fn hostile_csv() -> impl Strategy<Value = String> {
    prop::collection::vec(csv_token(), 0..24).prop_map(|tokens| tokens.concat())
}

/// A regular CSV body (rows of numbers, the same count each) written with random
/// whitespace, line ends and trailing blank lines, which `decode_csv` must accept.
fn regular_csv() -> impl Strategy<Value = (String, usize, usize)> {
    (1usize..5, 1usize..5).prop_flat_map(|(rows, columns)| {
        let cell = (
            prop::sample::select(vec!["", " ", "\t", "\u{a0}"]),
            csv_valid_number(),
            prop::sample::select(vec!["", " ", "\u{2003}"]),
        )
            .prop_map(|(a, n, b)| format!("{a}{n}{b}"));
        (
            prop::collection::vec(prop::collection::vec(cell, columns), rows),
            prop::sample::select(vec!["\n", "\r\n"]),
            prop::sample::select(vec!["", "\n", "\n\n \t", "\r\n\u{2003}"]),
            any::<bool>(),
        )
            .prop_map(move |(cells, end, tail, bom)| {
                let lines: Vec<String> = cells.iter().map(|row| row.join(",")).collect();
                let bom = if bom { "\u{feff}" } else { "" };
                (format!("{bom}{}{tail}", lines.join(end)), rows, columns)
            })
    })
}

/// What `decode_csv` documents, written with `str`'s own methods: one line per sample (a
/// trailing "\r" dropped), fields split at commas and trimmed, each read by `str::parse`,
/// trailing blank lines ignored, every row as long as the first.
fn reference_csv(body: &[u8]) -> Option<(Vec<f32>, Vec<usize>)> {
    let text = std::str::from_utf8(body).ok()?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text).trim_end();
    let mut data = Vec::new();
    let mut columns = None;
    let mut rows = 0;
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            return None;
        }
        let row: Vec<f32> = line
            .split(',')
            .map(|f| f.trim().parse::<f32>().ok())
            .collect::<Option<_>>()?;
        if *columns.get_or_insert(row.len()) != row.len() {
            return None;
        }
        data.extend(row);
        rows += 1;
    }
    Some((data, vec![rows, columns.unwrap_or(0)]))
}

/// `decode_csv` against [`reference_csv`]: both fail, or both give the same tensor.
fn check_csv(body: &[u8]) -> Result<(), TestCaseError> {
    let got = decode_csv(body);
    let want = reference_csv(body);
    match (&got, &want) {
        (Ok(t), Some((data, shape))) => {
            prop_assert_eq!(&t.shape, shape);
            prop_assert!(same_values(&t.data, data), "{:?} != {:?}", t.data, data);
        }
        (Err(_), None) => {}
        _ => prop_assert!(false, "decode_csv gave {got:?}, the reference {want:?}"),
    }
    let _ = decode_cells(body, false);
    let _ = decode_cells(body, true);
    Ok(())
}

/// Any bytes, up to 96 of them: drawn as words, which is several times cheaper than byte by
/// byte in a debug build.
fn bytes() -> impl Strategy<Value = Vec<u8>> {
    (prop::collection::vec(any::<u64>(), 0..12), 0usize..8).prop_map(|(words, cut)| {
        let mut bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        bytes.truncate(bytes.len().saturating_sub(cut));
        bytes
    })
}

proptest! {
    #![proptest_config(config())]

    /// Any bytes, as every format and every other reader of outside text here.
    #[test]
    fn arbitrary_bytes_never_panic(
        body in bytes(),
        content_type in prop::sample::select(vec![CSV, JSON, NPY, "Text/CSV; charset=utf-8", "text/plain", ""]),
    ) {
        let _ = decode(&body, content_type);
        let _ = decode_csv(&body);
        let _ = decode_json(&body);
        let _ = decode_npy(&body);
        let _ = decode_f64(&body);
        let _ = read_header(&body);
        let _ = decode_value(&body);
        let _ = decode_lines(&body);
        check_csv(&body)?;
        if let Ok(text) = std::str::from_utf8(&body) {
            let _ = media_type(text);
            let _ = negotiate(text, TENSOR_TYPES);
            let _ = decode(b"1", text);
        }
    }

    /// Hostile CSV: `decode_csv` agrees with the plain reading of the format.
    #[test]
    fn hostile_csv_reads_as_documented(text in hostile_csv()) {
        check_csv(text.as_bytes())?;
    }

    /// Regular CSV with the whitespace, line ends and BOM clients send is accepted as a
    /// `[rows, columns]` tensor wherever every field is a number.
    #[test]
    fn regular_csv_reads_as_documented((text, rows, columns) in regular_csv()) {
        check_csv(text.as_bytes())?;
        let t = decode_csv(text.as_bytes()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(t.shape, vec![rows, columns]);
    }

    /// `encode_csv` then `decode_csv` gives the matrix back (a vector as one row).
    #[test]
    fn csv_round_trip(t in tensor(1..3, 6, any_f32().boxed())) {
        let body = encode_csv(&t);
        let back = decode_csv(&body).map_err(|e| TestCaseError::fail(format!("{e}: {:?}", String::from_utf8_lossy(&body))))?;
        // A vector is written one value per line (`Tensor::iter_rows`): a column.
        let t = if t.shape.len() == 1 { Tensor::new(t.data, vec![t.shape[0], 1]).expect("sizes agree") } else { t };
        prop_assert_eq!(&back.shape, &t.shape);
        prop_assert!(same_values(&back.data, &t.data), "{:?} != {:?}", back.data, t.data);
    }
}

// ---------------------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------------------

/// Any JSON value: numbers of every kind, strings, and arrays and objects nested a few deep,
/// with the keys `decode_json` looks for among others.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any_f32().prop_map(json_number),
        "[a-z\u{0}-\u{7f}\u{a0}\u{10ffff}]{0,6}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("instances".to_owned()),
                        Just("inputs".to_owned()),
                        "[a-z]{0,4}"
                    ],
                    inner
                ),
                0..4
            )
            .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

/// Nested arrays along a spine: at each depth an array whose first element is the next
/// depth and whose other elements are numbers or small arrays. The shape `decode_json`
/// probes from the first elements can then be far larger than the values present.
fn skewed_array() -> impl Strategy<Value = Value> {
    let other = prop_oneof![
        any::<i32>().prop_map(Value::from),
        Just(Value::Array(vec![])),
        Just(serde_json::json!([1, 2])),
        Just(Value::Null),
    ];
    (
        prop::collection::vec(prop::collection::vec(other, 0..5), 1..64),
        prop_oneof![Just(Value::from(1)), Just(Value::Array(vec![]))],
    )
        .prop_map(|(levels, core)| {
            levels.into_iter().fold(core, |inner, rest| {
                let mut items = vec![inner];
                items.extend(rest);
                Value::Array(items)
            })
        })
}

fn check_json_tensor(value: &Value) -> Result<(), TestCaseError> {
    if let Ok(t) = json_to_tensor(value) {
        prop_assert_eq!(t.data.len(), t.shape.iter().product::<usize>());
    }
    let body = serde_json::to_vec(value).expect("a Value serialises");
    for body in [
        body.clone(),
        serde_json::to_vec(&serde_json::json!({"instances": value})).expect("serialises"),
    ] {
        if let Ok(t) = decode_json(&body) {
            // A vector is one row; a bare number under "instances" stays a scalar.
            prop_assert!(t.shape.len() != 1, "{:?}", t.shape);
            prop_assert!(!t.data.is_empty());
            prop_assert_eq!(t.data.len(), t.shape.iter().product::<usize>());
        }
        let parsed: Value = serde_json::from_slice(&body).expect("parses");
        prop_assert_eq!(decode_value(&body).ok(), Some(parsed));
    }
    let mut lines = body.clone();
    lines.extend_from_slice(b"\n\n");
    lines.extend_from_slice(&body);
    if let Ok(Value::Array(items)) = decode_lines(&lines) {
        prop_assert_eq!(items.len(), 2);
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// Arbitrary JSON values, as a body, under `"instances"`, as JSON Lines and as a value.
    #[test]
    fn json_values_never_panic(value in json_value()) {
        check_json_tensor(&value)?;
    }

    /// Arrays whose first elements promise a shape the rest does not keep.
    #[test]
    fn skewed_json_arrays_are_refused_or_read(value in skewed_array()) {
        if let Ok(t) = json_to_tensor(&value) {
            prop_assert_eq!(t.data.len(), t.shape.iter().product::<usize>());
        }
        let body = serde_json::to_vec(&value).expect("a Value serialises");
        if let Ok(t) = decode_json(&body) {
            prop_assert_eq!(t.data.len(), t.shape.iter().product::<usize>());
        }
    }

    /// `encode_json` then `decode_json` gives the tensor back (a vector as one row) for
    /// finite values; every number the crate writes reads back as its `f32`.
    #[test]
    fn json_round_trip(
        t in tensor(1..4, 5, any_f32().prop_map(|v| if v.is_finite() { v } else { 1.5 }).boxed()),
        extra in any_f32(),
    ) {
        let body = encode_json(&t);
        let back = decode_json(&body).map_err(|e| TestCaseError::fail(format!("{e}: {:?}", String::from_utf8_lossy(&body))))?;
        let want = if t.shape.len() == 1 { t.clone().into_matrix().expect("a vector") } else { t.clone() };
        prop_assert_eq!(&back.shape, &want.shape);
        prop_assert!(same_values(&back.data, &want.data), "{:?} != {:?} from {}", back.data, want.data, String::from_utf8_lossy(&body));
        let mut text = String::new();
        push_json_number(&mut text, extra);
        if extra.is_finite() {
            prop_assert_eq!(text.parse::<f32>().ok(), Some(extra));
            prop_assert_eq!(json_number(extra).as_f64().map(|v| v as f32), Some(extra));
        } else {
            prop_assert_eq!(text, "null");
            prop_assert_eq!(json_number(extra), Value::Null);
        }
    }
}

// ---------------------------------------------------------------------------------------
// NPY
// ---------------------------------------------------------------------------------------

/// A `.npy` file with a real magic string and a header of random fields: dtypes real and
/// not, orders, shapes small, empty and overflowing, quoting and spacing variants, and a
/// payload of the right length or not.
fn hostile_npy() -> impl Strategy<Value = Vec<u8>> {
    let descr = prop::sample::select(vec![
        "<f4", "<f8", "<i4", "<i8", "|u1", "<u1", "|i1", "|b1", "<i2", "<u2", "<u4", "<u8", "=f4",
        "=i8", ">f4", "|f4", "<c8", "O", "", "<", "'", "<f4'",
    ]);
    let dim = prop_oneof![
        4 => (0usize..5).prop_map(|d| d.to_string()),
        1 => Just(u64::MAX.to_string()),
        1 => Just((1u64 << 32).to_string()),
        1 => Just(usize::MAX.to_string()),
        1 => Just("3L".to_owned()),
        1 => Just("-1".to_owned()),
        1 => Just("x".to_owned()),
        1 => Just(String::new()),
    ];
    let shape = prop::collection::vec(dim, 0..5).prop_map(|dims| match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    });
    let shape = prop_oneof![8 => shape, 1 => Just("[1, 2]".to_owned()), 1 => Just("(".to_owned())];
    let order = prop::sample::select(vec!["False", "True", "0", "", "False}"]);
    let quote = prop::sample::select(vec!['\'', '"']);
    (
        prop::sample::select(vec![1u8, 2, 3, 0, 4, 255]),
        descr,
        order,
        shape,
        quote,
        any::<bool>(),
        prop_oneof![1 => Just(vec![]), 3 => prop::collection::vec(any::<u8>(), 0..48)],
        any::<u16>(),
        any::<bool>(),
    )
        .prop_map(
            |(major, descr, order, shape, q, reorder, payload, junk_len, true_len)| {
                let fields = [
                    format!("{q}descr{q}: {q}{descr}{q}"),
                    format!("{q}fortran_order{q}: {order}"),
                    format!("{q}shape{q}: {shape}"),
                ];
                let body = if reorder {
                    format!("{}, {}, {}", fields[2], fields[0], fields[1])
                } else {
                    fields.join(", ")
                };
                let header = format!("{{{body}, }}\n");
                let mut out = b"\x93NUMPY".to_vec();
                out.extend_from_slice(&[major, 0]);
                let len = if true_len {
                    header.len()
                } else {
                    usize::from(junk_len)
                };
                if major == 1 {
                    out.extend_from_slice(&(len as u16).to_le_bytes());
                } else {
                    out.extend_from_slice(&(len as u32).to_le_bytes());
                }
                out.extend_from_slice(header.as_bytes());
                out.extend_from_slice(&payload);
                out
            },
        )
}

fn check_npy(body: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(t) = decode_npy(body) {
        prop_assert!(!t.data.is_empty());
        prop_assert_eq!(t.data.len(), t.shape.iter().product::<usize>());
    }
    if let Ok(a) = decode_f64(body) {
        prop_assert_eq!(a.data.len(), a.shape.iter().product::<usize>());
    }
    let _ = decode(body, NPY);
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// NPY files with a real magic string and a hostile header and payload.
    #[test]
    fn hostile_npy_never_panics(body in hostile_npy()) {
        check_npy(&body)?;
        // And cut short.
        let cut = body.len() / 2;
        check_npy(&body[..cut])?;
    }

    /// `encode_npy` then `decode_npy` gives the tensor back bit for bit, any values and any
    /// shape (a scalar too); `decode_f64` gives the same values, empty arrays included.
    #[test]
    fn npy_round_trip(
        shape in prop::collection::vec(0usize..5, 0..4),
        values in prop::collection::vec(any::<u32>(), 64),
    ) {
        let count: usize = shape.iter().product();
        let data: Vec<f32> = values.iter().cycle().take(count).map(|b| f32::from_bits(*b)).collect();
        let t = Tensor::new(data, shape).expect("sizes agree");
        let body = encode_npy(&t);
        match decode_npy(&body) {
            Ok(back) => {
                prop_assert_eq!(&back.shape, &t.shape);
                prop_assert!(back.data.iter().zip(&t.data).all(|(a, b)| a.to_bits() == b.to_bits()));
            }
            Err(e) => prop_assert!(count == 0, "{e}"),
        }
        let a = decode_f64(&body).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&a.shape, &t.shape);
        prop_assert!(a.data.len() == count && a.data.iter().zip(&t.data).all(|(x, y)| same(*x as f32, *y)));
    }
}
