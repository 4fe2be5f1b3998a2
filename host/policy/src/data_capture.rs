//! Data capture as SageMaker's (`DataCaptureConfig`): what a config may be, which requests
//! are captured (`InitialSamplingPercentage`), how a body is stored (`CaptureContentTypeHeader`:
//! listed CSV and JSON types as text, anything else base64), the JSON Lines record SageMaker
//! writes for each captured invocation, where its file goes
//! (`<destination>/<endpoint>/<variant>/yyyy/mm/dd/hh/<MM>-<SS>-<mmm>-<uuid>-<config>.jsonl`), and
//! when a file is rolled. Pure: the server's capture writer does the I/O.

use base64::Engine as _;
use std::time::Duration;

/// The most content types each of `CsvContentTypes` and `JsonContentTypes` may list.
pub const MAX_CONTENT_TYPES: usize = 10;
/// The most `CaptureOptions`.
pub const MAX_CAPTURE_OPTIONS: usize = 32;
/// A capture file is closed once it holds this many bytes...
pub const ROLL_BYTES: u64 = 16 << 20;
/// ...or has been open this long (SageMaker's files hold about a minute each): the default
/// of the server's `--data-capture-roll-seconds`.
pub const ROLL_AFTER: Duration = Duration::from_secs(60);

/// `DataCaptureConfig` as given (the member table has checked types and ranges).
#[derive(Debug, Clone, Default)]
pub struct Given<'a> {
    /// `EnableCapture` (default true).
    pub enable_capture: Option<bool>,
    /// `InitialSamplingPercentage`.
    pub initial_sampling_percentage: Option<i64>,
    /// `DestinationS3Uri`.
    pub destination: Option<&'a str>,
    /// `CaptureOptions[].CaptureMode`.
    pub capture_modes: Vec<&'a str>,
    /// `CaptureContentTypeHeader.CsvContentTypes`, if given.
    pub csv_content_types: Option<Vec<&'a str>>,
    /// `CaptureContentTypeHeader.JsonContentTypes`, if given.
    pub json_content_types: Option<Vec<&'a str>>,
}

/// A checked `DataCaptureConfig`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Whether capture is on.
    pub enabled: bool,
    /// Percentage of requests captured, 0-100.
    pub sampling_percentage: u8,
    /// Where files go: an `s3://` prefix, or (Plinth's extension, as for asynchronous
    /// results) a local directory, which the server checks against its artifact roots.
    pub destination: String,
    /// Whether request bodies are captured.
    pub input: bool,
    /// Whether response bodies are captured.
    pub output: bool,
    /// Media types stored as CSV text (lower case).
    pub csv_types: Vec<String>,
    /// Media types stored as JSON text (lower case).
    pub json_types: Vec<String>,
}

/// Check `given` as SageMaker does; the error names the member.
pub fn settings(given: &Given<'_>) -> Result<Settings, String> {
    let percentage = given
        .initial_sampling_percentage
        .ok_or("DataCaptureConfig.InitialSamplingPercentage is required (0 to 100)".to_owned())?;
    let sampling_percentage = u8::try_from(percentage)
        .ok()
        .filter(|p| *p <= 100)
        .ok_or_else(|| {
            format!("DataCaptureConfig.InitialSamplingPercentage {percentage} is not 0 to 100")
        })?;
    let destination = given
        .destination
        .filter(|d| !d.is_empty())
        .ok_or("DataCaptureConfig.DestinationS3Uri is required".to_owned())?;
    if destination.chars().count() > 512 {
        return Err("DataCaptureConfig.DestinationS3Uri is longer than 512 characters".into());
    }
    if given.capture_modes.is_empty() || given.capture_modes.len() > MAX_CAPTURE_OPTIONS {
        return Err(format!(
            "DataCaptureConfig.CaptureOptions must list 1 to {MAX_CAPTURE_OPTIONS} options"
        ));
    }
    let (mut input, mut output) = (false, false);
    for (i, mode) in given.capture_modes.iter().enumerate() {
        match *mode {
            "Input" => input = true,
            "Output" => output = true,
            "InputAndOutput" => (input, output) = (true, true),
            other => {
                return Err(format!(
                    "DataCaptureConfig.CaptureOptions[{i}].CaptureMode {other:?} is not one of \
                     Input, Output, InputAndOutput"
                ))
            }
        }
    }
    let types = |list: &Option<Vec<&str>>, member: &str| -> Result<Vec<String>, String> {
        let Some(list) = list else {
            return Ok(Vec::new());
        };
        if list.is_empty() || list.len() > MAX_CONTENT_TYPES {
            return Err(format!(
                "DataCaptureConfig.CaptureContentTypeHeader.{member} lists {} types; give 1 \
                 to {MAX_CONTENT_TYPES}",
                list.len()
            ));
        }
        list.iter()
            .enumerate()
            .map(|(i, t)| {
                if valid_media_type(t) {
                    Ok(t.to_ascii_lowercase())
                } else {
                    Err(format!(
                        "DataCaptureConfig.CaptureContentTypeHeader.{member}[{i}] {t:?} is not \
                         a media type (type/subtype, at most 256 characters)"
                    ))
                }
            })
            .collect()
    };
    Ok(Settings {
        enabled: given.enable_capture.unwrap_or(true),
        sampling_percentage,
        destination: destination.to_owned(),
        input,
        output,
        csv_types: types(&given.csv_content_types, "CsvContentTypes")?,
        json_types: types(&given.json_content_types, "JsonContentTypes")?,
    })
}

/// SageMaker's pattern for a listed content type: a bare `type/subtype`.
fn valid_media_type(t: &str) -> bool {
    let part = |p: &str, dots: bool| {
        let b = p.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || (dots && *c == b'.'))
            && !p.ends_with('-')
    };
    t.len() <= 256
        && t.split_once('/')
            .is_some_and(|(a, b)| part(a, false) && part(b, true))
}

/// DescribeEndpoint's `CaptureStatus`: `Started` while capture is on, `Stopped` when the
/// config turns it off (`EnableCapture` false).
pub fn capture_status(settings: &Settings) -> &'static str {
    if settings.enabled {
        "Started"
    } else {
        "Stopped"
    }
}

/// Whether a request is captured, `draw` uniform in [0, 1).
pub fn sampled(settings: &Settings, draw: f64) -> bool {
    settings.enabled && draw * 100.0 < f64::from(settings.sampling_percentage)
}

/// How a captured body is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// As text: its media type is one of `CsvContentTypes`.
    Csv,
    /// As text: one of `JsonContentTypes`.
    Json,
    /// Anything else, or a body that is not UTF-8: base64.
    Base64,
}

impl Encoding {
    /// The record's `encoding` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Csv => "CSV",
            Encoding::Json => "JSON",
            Encoding::Base64 => "BASE64",
        }
    }
}

/// How a body of `content_type` is stored (its media type matched without parameters,
/// ignoring case).
pub fn encoding(settings: &Settings, content_type: &str) -> Encoding {
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if settings.csv_types.contains(&media) {
        Encoding::Csv
    } else if settings.json_types.contains(&media) {
        Encoding::Json
    } else {
        Encoding::Base64
    }
}

/// One captured body: its content type as observed, and its bytes.
#[derive(Debug, Clone, Copy)]
pub struct Body<'a> {
    /// `Content-Type` as sent (request) or answered (response), parameters included.
    pub content_type: &'a str,
    /// The bytes.
    pub data: &'a [u8],
}

/// A captured invocation.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    /// The request, when `Input` is captured.
    pub input: Option<Body<'a>>,
    /// The response, when `Output` is captured.
    pub output: Option<Body<'a>>,
    /// `eventId`: a UUID made for the record.
    pub event_id: &'a str,
    /// `inferenceId`: only when the caller gave `X-Amzn-SageMaker-Inference-Id`.
    pub inference_id: Option<&'a str>,
    /// When the request arrived, milliseconds since the Unix epoch (UTC).
    pub time_ms: i64,
}

/// The record SageMaker writes for `event`: one line of JSON (no newline), its keys in
/// SageMaker's order.
pub fn record(settings: &Settings, event: &Event<'_>) -> String {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Record<'a> {
        capture_data: CaptureData,
        event_metadata: Metadata<'a>,
        event_version: &'static str,
    }
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct CaptureData {
        #[serde(skip_serializing_if = "Option::is_none")]
        endpoint_input: Option<Data>,
        #[serde(skip_serializing_if = "Option::is_none")]
        endpoint_output: Option<Data>,
    }
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Data {
        observed_content_type: String,
        mode: &'static str,
        data: String,
        encoding: &'static str,
    }
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Metadata<'a> {
        event_id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        inference_id: Option<&'a str>,
        inference_time: String,
    }
    let body = |b: &Body<'_>, mode: &'static str| {
        let mut encoding = encoding(settings, b.content_type);
        let data = match (encoding, std::str::from_utf8(b.data)) {
            (Encoding::Csv | Encoding::Json, Ok(text)) => text.to_owned(),
            _ => {
                encoding = Encoding::Base64;
                base64::engine::general_purpose::STANDARD.encode(b.data)
            }
        };
        Data {
            observed_content_type: b.content_type.to_owned(),
            mode,
            data,
            encoding: encoding.as_str(),
        }
    };
    let record = Record {
        capture_data: CaptureData {
            endpoint_input: event.input.as_ref().map(|b| body(b, "INPUT")),
            endpoint_output: event.output.as_ref().map(|b| body(b, "OUTPUT")),
        },
        event_metadata: Metadata {
            event_id: event.event_id,
            inference_id: event.inference_id,
            inference_time: utc(event.time_ms).iso(),
        },
        event_version: "0",
    };
    serde_json::to_string(&record).expect("a record serializes")
}

/// Where a file opened at `time_ms` (its first record's, milliseconds since the epoch)
/// goes under `destination`, for `variant` of `endpoint` served by endpoint config
/// `config`: SageMaker's layout; the name is the time within the hour, `uuid`, and the
/// config (which [`config_of_file`] reads back: monitoring tells a deployment's fleets
/// apart by it).
pub fn object_key(
    destination: &str,
    endpoint: &str,
    variant: &str,
    time_ms: i64,
    uuid: &str,
    config: &str,
) -> String {
    let t = utc(time_ms);
    format!(
        "{}/{endpoint}/{variant}/{:04}/{:02}/{:02}/{:02}/{:02}-{:02}-{:03}-{uuid}-{config}.jsonl",
        destination.trim_end_matches('/'),
        t.year,
        t.month,
        t.day,
        t.hour,
        t.minute,
        t.second,
        t.millisecond
    )
}

/// The endpoint config a capture file's name (`MM-SS-mmm-<uuid>-<config>.jsonl`) says
/// served its records; `None` for a name of another form.
pub fn config_of_file(name: &str) -> Option<&str> {
    let stem = name.strip_suffix(".jsonl")?;
    // MM, SS, mmm and the UUID's five groups, then the config (which may hold hyphens).
    let config = stem.splitn(9, '-').nth(8)?;
    (!config.is_empty()).then_some(config)
}

/// Whether a file holding `bytes`, open for `age`, is closed before another record: past
/// [`ROLL_BYTES`], open `after` (by default [`ROLL_AFTER`]) or longer, or its hour (its
/// directory) is over (`same_hour`).
pub fn roll(bytes: u64, age: Duration, after: Duration, same_hour: bool) -> bool {
    bytes >= ROLL_BYTES || age >= after || !same_hour
}

/// Whether two times (milliseconds since the epoch) fall in the same UTC hour (the same
/// capture directory).
pub fn same_hour(a_ms: i64, b_ms: i64) -> bool {
    a_ms.div_euclid(3_600_000) == b_ms.div_euclid(3_600_000)
}

/// A UTC date and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utc {
    /// Year.
    pub year: i64,
    /// Month, 1-12.
    pub month: u32,
    /// Day, 1-31.
    pub day: u32,
    /// Hour.
    pub hour: u32,
    /// Minute.
    pub minute: u32,
    /// Second.
    pub second: u32,
    /// Millisecond.
    pub millisecond: u32,
}

impl Utc {
    /// `2022-04-18T00:21:48Z`: SageMaker's `inferenceTime`, to the second.
    pub fn iso(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

/// `millis` (milliseconds since the Unix epoch) in UTC: the civil calendar from days
/// (Howard Hinnant's `civil_from_days`).
pub fn utc(millis: i64) -> Utc {
    let (days, ms_of_day) = (millis.div_euclid(86_400_000), millis.rem_euclid(86_400_000));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    let s = ms_of_day / 1000;
    Utc {
        year,
        month,
        day,
        hour: (s / 3600) as u32,
        minute: (s / 60 % 60) as u32,
        second: (s % 60) as u32,
        millisecond: (ms_of_day % 1000) as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn given() -> Given<'static> {
        Given {
            enable_capture: None,
            initial_sampling_percentage: Some(50),
            destination: Some("s3://bucket/capture"),
            capture_modes: vec!["Input", "Output"],
            csv_content_types: Some(vec!["text/csv"]),
            json_content_types: Some(vec!["application/json"]),
        }
    }

    #[test]
    fn a_config_is_checked_as_sagemaker_checks_it() {
        let s = settings(&given()).unwrap();
        assert!(s.enabled && s.input && s.output);
        assert_eq!(s.sampling_percentage, 50);
        let both = settings(&Given {
            capture_modes: vec!["InputAndOutput"],
            ..given()
        })
        .unwrap();
        assert!(both.input && both.output);
        let only_input = settings(&Given {
            capture_modes: vec!["Input"],
            ..given()
        })
        .unwrap();
        assert!(only_input.input && !only_input.output);
        for (bad, fragment) in [
            (
                Given {
                    initial_sampling_percentage: Some(101),
                    ..given()
                },
                "InitialSamplingPercentage 101",
            ),
            (
                Given {
                    initial_sampling_percentage: None,
                    ..given()
                },
                "InitialSamplingPercentage is required",
            ),
            (
                Given {
                    destination: None,
                    ..given()
                },
                "DestinationS3Uri is required",
            ),
            (
                Given {
                    capture_modes: vec![],
                    ..given()
                },
                "CaptureOptions must list",
            ),
            (
                Given {
                    capture_modes: vec!["Both"],
                    ..given()
                },
                "CaptureOptions[0].CaptureMode \"Both\"",
            ),
            (
                Given {
                    csv_content_types: Some(vec!["text/csv; charset=utf-8"]),
                    ..given()
                },
                "CsvContentTypes[0]",
            ),
            (
                Given {
                    json_content_types: Some(vec!["application/json"; 11]),
                    ..given()
                },
                "JsonContentTypes lists 11",
            ),
            (
                Given {
                    csv_content_types: Some(vec![]),
                    ..given()
                },
                "CsvContentTypes lists 0",
            ),
        ] {
            let e = settings(&bad).unwrap_err();
            assert!(e.contains(fragment), "{fragment}: {e}");
        }
    }

    #[test]
    fn sampling_takes_its_percentage_of_draws() {
        let s = settings(&given()).unwrap();
        let draws = (0..10_000).map(|i| f64::from(i) / 10_000.0);
        assert_eq!(draws.filter(|d| sampled(&s, *d)).count(), 5_000);
        let off = Settings {
            enabled: false,
            ..s.clone()
        };
        assert!(!sampled(&off, 0.0));
        assert_eq!(capture_status(&off), "Stopped");
        assert_eq!(capture_status(&s), "Started");
        let none = Settings {
            sampling_percentage: 0,
            ..s
        };
        assert!(!sampled(&none, 0.0));
    }

    #[test]
    fn listed_types_are_text_and_the_rest_base64() {
        let s = settings(&given()).unwrap();
        assert_eq!(encoding(&s, "text/csv"), Encoding::Csv);
        assert_eq!(encoding(&s, "Text/CSV; charset=utf-8"), Encoding::Csv);
        assert_eq!(encoding(&s, "application/json"), Encoding::Json);
        assert_eq!(encoding(&s, "application/x-npy"), Encoding::Base64);
        assert_eq!(encoding(&s, ""), Encoding::Base64);
    }

    #[test]
    fn records_are_sagemakers_lines() {
        let s = settings(&given()).unwrap();
        let event = Event {
            input: Some(Body {
                content_type: "text/csv",
                data: b"5.1,3.5,1.4,0.2",
            }),
            output: Some(Body {
                content_type: "text/csv; charset=utf-8",
                data: b"0.0254181120544672",
            }),
            event_id: "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
            inference_id: None,
            // 2022-02-14T17:25:49Z
            time_ms: 1_644_859_549_250,
        };
        assert_eq!(
            record(&s, &event),
            r#"{"captureData":{"endpointInput":{"observedContentType":"text/csv","mode":"INPUT","data":"5.1,3.5,1.4,0.2","encoding":"CSV"},"endpointOutput":{"observedContentType":"text/csv; charset=utf-8","mode":"OUTPUT","data":"0.0254181120544672","encoding":"CSV"}},"eventMetadata":{"eventId":"aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee","inferenceTime":"2022-02-14T17:25:49Z"},"eventVersion":"0"}"#
        );
        // Output only, an inference id, a binary body.
        let binary = Event {
            input: None,
            output: Some(Body {
                content_type: "application/x-npy",
                data: &[0x93, b'N', b'U'],
            }),
            inference_id: Some("id-1"),
            ..event.clone()
        };
        assert_eq!(
            record(&s, &binary),
            r#"{"captureData":{"endpointOutput":{"observedContentType":"application/x-npy","mode":"OUTPUT","data":"k05V","encoding":"BASE64"}},"eventMetadata":{"eventId":"aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee","inferenceId":"id-1","inferenceTime":"2022-02-14T17:25:49Z"},"eventVersion":"0"}"#
        );
        // A "CSV" body that is not UTF-8 is stored as base64.
        let invalid = Event {
            input: Some(Body {
                content_type: "text/csv",
                data: &[0xff, 0xfe],
            }),
            output: None,
            ..event
        };
        assert!(record(&s, &invalid).contains(r#""data":"//4=","encoding":"BASE64""#));
    }

    #[test]
    fn files_go_where_sagemaker_puts_them_and_roll() {
        // 2022-04-18T00:21:48.903Z
        let t = 1_650_241_308_903;
        assert_eq!(
            object_key(
                "s3://b/capture/",
                "ep",
                "AllTraffic",
                t,
                "0b6a4a5e-8c1d-4b8e-9f6e-2d3c4b5a6978",
                "ep-config-2"
            ),
            "s3://b/capture/ep/AllTraffic/2022/04/18/00/\
             21-48-903-0b6a4a5e-8c1d-4b8e-9f6e-2d3c4b5a6978-ep-config-2.jsonl"
        );
        assert_eq!(
            config_of_file("21-48-903-0b6a4a5e-8c1d-4b8e-9f6e-2d3c4b5a6978-ep-config-2.jsonl"),
            Some("ep-config-2")
        );
        assert_eq!(
            config_of_file("21-48-903-0b6a4a5e-8c1d-4b8e-9f6e-2d3c4b5a6978.jsonl"),
            None
        );
        assert_eq!(config_of_file("labels.csv"), None);
        let second = Duration::from_secs(1);
        assert!(!roll(10, second, ROLL_AFTER, true));
        assert!(roll(ROLL_BYTES, second, ROLL_AFTER, true));
        assert!(roll(10, ROLL_AFTER, ROLL_AFTER, true));
        assert!(roll(10, second, second, true));
        assert!(!roll(10, second, 2 * second, true));
        assert!(roll(10, second, ROLL_AFTER, false));
        assert!(same_hour(t, t + 60_000));
        assert!(!same_hour(1_650_243_599_999, 1_650_243_600_000));
        // The key and the hour agree at the hour's last millisecond.
        assert!(object_key("d", "e", "v", 1_650_243_599_999, "u", "c").contains("/00/59-59-999-"));
    }

    #[test]
    fn utc_matches_the_calendar() {
        assert_eq!(utc(0).iso(), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400_000).iso(), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_709_251_199_999).iso(), "2024-02-29T23:59:59Z");
        assert_eq!(utc(1_709_251_199_999).millisecond, 999);
        assert_eq!(utc(4_102_444_800_000).iso(), "2100-01-01T00:00:00Z");
        assert_eq!(utc(-1).iso(), "1969-12-31T23:59:59Z");
    }
}
