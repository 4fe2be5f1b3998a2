//! Batch transform, its decisions: a transform job's settings as SageMaker takes them (the
//! defaults, the ranges, the combinations it refuses), how an input object is split into
//! records and the records packed into the requests sent to the model (`BatchStrategy`,
//! `MaxPayloadInMB`), how the responses are assembled into the input's `.out` object
//! (`AssembleWith`), and where that object goes.

use std::fmt;

/// `MaxPayloadInMB` when none is given, and the most it may be.
pub const MAX_PAYLOAD_MB: (u64, u64) = (6, 100);
/// `MaxConcurrentTransforms`: when none (or 0) is given; the most it may be.
pub const MAX_CONCURRENT_TRANSFORMS: (u64, u64) = (1, 100);
/// `MaxConcurrentTransforms` × `MaxPayloadInMB` may not be more than this (SageMaker's rule).
pub const MAX_CONCURRENT_PAYLOAD_MB: u64 = 100;
/// `ModelClientConfig.InvocationsTimeoutInSeconds`: the least, the most, the default.
pub const INVOCATIONS_TIMEOUT_SECONDS: (u64, u64, u64) = (1, 3_600, 600);
/// `ModelClientConfig.InvocationsMaxRetries`: the most, the default.
pub const INVOCATIONS_MAX_RETRIES: (u64, u64) = (3, 3);
/// `TransformResources.InstanceCount`: the most.
pub const MAX_INSTANCE_COUNT: u64 = 100;

/// What SageMaker says of a record larger than `MaxPayloadInMB`.
pub const TOO_LARGE: &str = "Too much data for max payload size";

/// Why a job's settings are refused (the message names the field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How an input object is cut into records (`SplitType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The whole object is one record.
    None,
    /// Each line is a record.
    Line,
}

/// How records are packed into requests (`BatchStrategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// One record per request.
    SingleRecord,
    /// As many whole records per request as `MaxPayloadInMB` allows.
    MultiRecord,
}

/// How the responses of one input are put together (`AssembleWith`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assemble {
    /// The responses one after the other, as they are.
    None,
    /// Each response followed by a newline (one added only where it does not end with one).
    Line,
}

/// A transform job's settings, as given (`None` where a member is absent).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Given<'a> {
    pub max_concurrent_transforms: Option<i64>,
    pub max_payload_mb: Option<i64>,
    pub batch_strategy: Option<&'a str>,
    pub split_type: Option<&'a str>,
    pub assemble_with: Option<&'a str>,
    pub invocations_timeout_seconds: Option<i64>,
    pub invocations_max_retries: Option<i64>,
    pub instance_count: i64,
}

/// A transform job's settings, with SageMaker's defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Requests in flight to each instance at once.
    pub max_concurrent_transforms: usize,
    /// The most bytes one request may carry.
    pub max_payload_bytes: usize,
    pub strategy: Strategy,
    pub split: Split,
    pub assemble: Assemble,
    /// How long one request may take.
    pub timeout_seconds: u64,
    /// How many times a failed request is tried again.
    pub max_retries: u32,
    /// Instances of the model running the job.
    pub instances: usize,
}

impl Settings {
    /// The requests in flight at once over all the instances.
    pub fn concurrency(&self) -> usize {
        self.max_concurrent_transforms * self.instances
    }
}

/// The settings of a CreateTransformJob, or why they are refused. `MaxPayloadInMB` 0 (an
/// unbounded request sent in chunks) is refused: Plinth sends whole requests.
pub fn settings(given: &Given<'_>) -> Result<Settings, Invalid> {
    let concurrent = match given.max_concurrent_transforms {
        None | Some(0) => MAX_CONCURRENT_TRANSFORMS.0,
        Some(n) if n > 0 && n as u64 <= MAX_CONCURRENT_TRANSFORMS.1 => n as u64,
        Some(n) => {
            return Err(Invalid(format!(
                "MaxConcurrentTransforms {n} is not between 0 and {}",
                MAX_CONCURRENT_TRANSFORMS.1
            )))
        }
    };
    let payload = match given.max_payload_mb {
        None => MAX_PAYLOAD_MB.0,
        Some(0) => {
            return Err(Invalid(
                "MaxPayloadInMB 0 (requests sent in chunks, without a size) is not supported \
                 by Plinth: give a size from 1 to 100"
                    .into(),
            ))
        }
        Some(n) if n > 0 && n as u64 <= MAX_PAYLOAD_MB.1 => n as u64,
        Some(n) => {
            return Err(Invalid(format!(
                "MaxPayloadInMB {n} is not between 1 and {}",
                MAX_PAYLOAD_MB.1
            )))
        }
    };
    if concurrent * payload > MAX_CONCURRENT_PAYLOAD_MB {
        return Err(Invalid(format!(
            "MaxConcurrentTransforms ({concurrent}) times MaxPayloadInMB ({payload}) is \
             {}; it may not be more than {MAX_CONCURRENT_PAYLOAD_MB}",
            concurrent * payload
        )));
    }
    let strategy = match given.batch_strategy {
        None | Some("MultiRecord") => Strategy::MultiRecord,
        Some("SingleRecord") => Strategy::SingleRecord,
        Some(other) => {
            return Err(Invalid(format!(
                "BatchStrategy {other:?} is not one of MultiRecord, SingleRecord"
            )))
        }
    };
    let split = match given.split_type {
        None | Some("None") => Split::None,
        Some("Line") => Split::Line,
        Some(other) => {
            return Err(Invalid(format!(
                "TransformInput.SplitType {other:?} is not supported by Plinth (None, Line)"
            )))
        }
    };
    let assemble = match given.assemble_with {
        None | Some("None") => Assemble::None,
        Some("Line") => Assemble::Line,
        Some(other) => {
            return Err(Invalid(format!(
                "TransformOutput.AssembleWith {other:?} is not one of None, Line"
            )))
        }
    };
    let (least, most, default) = INVOCATIONS_TIMEOUT_SECONDS;
    let timeout_seconds = match given.invocations_timeout_seconds {
        None => default,
        Some(n) if n >= least as i64 && n <= most as i64 => n as u64,
        Some(n) => {
            return Err(Invalid(format!(
                "ModelClientConfig.InvocationsTimeoutInSeconds {n} is not between {least} and \
                 {most}"
            )))
        }
    };
    let max_retries = match given.invocations_max_retries {
        None => INVOCATIONS_MAX_RETRIES.1 as u32,
        Some(n) if (0..=INVOCATIONS_MAX_RETRIES.0 as i64).contains(&n) => n as u32,
        Some(n) => {
            return Err(Invalid(format!(
                "ModelClientConfig.InvocationsMaxRetries {n} is not between 0 and {}",
                INVOCATIONS_MAX_RETRIES.0
            )))
        }
    };
    let instances = match given.instance_count {
        n if n >= 1 && n as u64 <= MAX_INSTANCE_COUNT => n as usize,
        n => {
            return Err(Invalid(format!(
                "TransformResources.InstanceCount {n} is not between 1 and {MAX_INSTANCE_COUNT}"
            )))
        }
    };
    Ok(Settings {
        max_concurrent_transforms: concurrent as usize,
        max_payload_bytes: (payload as usize) << 20,
        strategy,
        split,
        assemble,
        timeout_seconds,
        max_retries,
        instances,
    })
}

/// Packs records, in order, into request bodies: one record each (`SingleRecord`), or as
/// many whole records as fit in the payload limit, one per line (`MultiRecord`). A record
/// larger than the limit is refused with SageMaker's message.
#[derive(Debug)]
pub struct Packer {
    strategy: Strategy,
    max_bytes: usize,
    body: Vec<u8>,
    records: usize,
}

/// A request body and the number of records in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    pub body: Vec<u8>,
    pub records: usize,
}

impl Packer {
    pub fn new(settings: &Settings) -> Self {
        Self {
            strategy: settings.strategy,
            max_bytes: settings.max_payload_bytes,
            body: Vec::new(),
            records: 0,
        }
    }

    /// Add one record (without its line ending); a body that is full is handed back.
    pub fn push(&mut self, record: &[u8]) -> Result<Option<Packed>, Invalid> {
        if record.len() > self.max_bytes {
            return Err(Invalid(format!(
                "{TOO_LARGE}: a record of {} bytes, MaxPayloadInMB {}",
                record.len(),
                self.max_bytes >> 20
            )));
        }
        let full = match self.strategy {
            Strategy::SingleRecord => self.records > 0,
            // The record and the newline before it.
            Strategy::MultiRecord => {
                self.records > 0 && self.body.len() + 1 + record.len() > self.max_bytes
            }
        };
        let handed = if full { self.take() } else { None };
        if self.records > 0 {
            self.body.push(b'\n');
        }
        self.body.extend_from_slice(record);
        self.records += 1;
        if self.strategy == Strategy::SingleRecord {
            return Ok(handed.or_else(|| self.take()));
        }
        Ok(handed)
    }

    /// What is left once every record was pushed.
    pub fn take(&mut self) -> Option<Packed> {
        (self.records > 0).then(|| Packed {
            body: std::mem::take(&mut self.body),
            records: std::mem::replace(&mut self.records, 0),
        })
    }
}

/// The records of a `Line` split: each line without its ending (`\n` or `\r\n`), empty lines
/// left out. `data` holds whole lines only (the last one may lack its ending).
pub fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .filter(|line| !line.is_empty())
}

/// Append one response to an input's output, as `assemble` says.
pub fn assemble(output: &mut Vec<u8>, response: &[u8], assemble: Assemble) {
    output.extend_from_slice(response);
    if assemble == Assemble::Line && !response.ends_with(b"\n") {
        output.push(b'\n');
    }
}

/// The name of an input's output object, relative to the output path: the input's name
/// relative to its prefix (or manifest prefix), with `.out` added.
pub fn output_name(relative_input: &str) -> String {
    format!("{}.out", relative_input.trim_start_matches('/'))
}

/// A manifest file's inputs: `[{"prefix": P}, "key", ...]`, each key relative to P. The
/// prefix and each input's name relative to it, or why the manifest is refused.
pub fn manifest(text: &str) -> Result<(String, Vec<String>), Invalid> {
    let bad = |why: &str| {
        Invalid(format!(
            "the manifest file is not [{{\"prefix\": \"s3://...\"}}, \"key\", ...]: {why}"
        ))
    };
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(&format!("{e}")))?;
    let items = value.as_array().ok_or_else(|| bad("not a list"))?;
    let prefix = items
        .first()
        .and_then(|p| p["prefix"].as_str())
        .ok_or_else(|| bad("its first item has no \"prefix\""))?;
    let keys = items[1..]
        .iter()
        .map(|k| {
            k.as_str()
                .filter(|k| !k.is_empty() && !k.split('/').any(|p| p == ".."))
                .map(str::to_owned)
                .ok_or_else(|| bad(&format!("{k} is not a relative key")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((prefix.to_owned(), keys))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn given() -> Given<'static> {
        Given {
            instance_count: 1,
            ..Given::default()
        }
    }

    #[test]
    fn defaults_are_sagemaker_s() {
        let s = settings(&given()).unwrap();
        assert_eq!(s.max_concurrent_transforms, 1);
        assert_eq!(s.max_payload_bytes, 6 << 20);
        assert_eq!(s.strategy, Strategy::MultiRecord);
        assert_eq!((s.split, s.assemble), (Split::None, Assemble::None));
        assert_eq!((s.timeout_seconds, s.max_retries), (600, 3));
        let zero = Given {
            max_concurrent_transforms: Some(0),
            ..given()
        };
        assert_eq!(settings(&zero).unwrap().max_concurrent_transforms, 1);
    }

    #[test]
    fn out_of_range_and_unsupported_settings_are_refused_by_name() {
        let refused = |g: Given<'static>, field: &str| {
            let e = settings(&g).unwrap_err().0;
            assert!(e.contains(field), "{e}");
        };
        refused(
            Given {
                max_payload_mb: Some(101),
                ..given()
            },
            "MaxPayloadInMB 101",
        );
        refused(
            Given {
                max_payload_mb: Some(0),
                ..given()
            },
            "MaxPayloadInMB 0",
        );
        refused(
            Given {
                max_concurrent_transforms: Some(20),
                max_payload_mb: Some(6),
                ..given()
            },
            "times MaxPayloadInMB (6) is 120",
        );
        refused(
            Given {
                split_type: Some("RecordIO"),
                ..given()
            },
            "SplitType \"RecordIO\"",
        );
        refused(
            Given {
                invocations_timeout_seconds: Some(3601),
                ..given()
            },
            "InvocationsTimeoutInSeconds 3601",
        );
        refused(
            Given {
                invocations_max_retries: Some(4),
                ..given()
            },
            "InvocationsMaxRetries 4",
        );
        refused(
            Given {
                instance_count: 0,
                ..given()
            },
            "InstanceCount 0",
        );
        let ok = Given {
            max_concurrent_transforms: Some(10),
            max_payload_mb: Some(10),
            instance_count: 3,
            ..given()
        };
        assert_eq!(settings(&ok).unwrap().concurrency(), 30);
    }

    fn packer(strategy: Strategy, max_bytes: usize) -> Packer {
        Packer {
            strategy,
            max_bytes,
            body: Vec::new(),
            records: 0,
        }
    }

    fn pack(p: &mut Packer, records: &[&str]) -> Vec<(String, usize)> {
        let mut out: Vec<Packed> = Vec::new();
        for r in records {
            out.extend(p.push(r.as_bytes()).unwrap());
        }
        out.extend(p.take());
        out.into_iter()
            .map(|b| (String::from_utf8(b.body).unwrap(), b.records))
            .collect()
    }

    #[test]
    fn multi_record_packs_whole_records_up_to_the_limit() {
        // "aaaa\nbbbb" is 9 bytes; adding "\ncc" would make 12 > 10.
        let mut p = packer(Strategy::MultiRecord, 10);
        assert_eq!(
            pack(&mut p, &["aaaa", "bbbb", "cc", "dddddddddd", "e"]),
            vec![
                ("aaaa\nbbbb".to_string(), 2),
                ("cc".to_string(), 1),
                ("dddddddddd".to_string(), 1),
                ("e".to_string(), 1)
            ]
        );
    }

    #[test]
    fn single_record_sends_each_record_alone() {
        let mut p = packer(Strategy::SingleRecord, 10);
        assert_eq!(
            pack(&mut p, &["a", "b", "c"]),
            vec![
                ("a".to_string(), 1),
                ("b".to_string(), 1),
                ("c".to_string(), 1)
            ]
        );
    }

    #[test]
    fn a_record_over_the_limit_fails_with_sagemaker_s_message() {
        let mut p = packer(Strategy::MultiRecord, 4);
        p.push(b"abc").unwrap();
        let e = p.push(b"abcde").unwrap_err().0;
        assert!(e.starts_with(TOO_LARGE), "{e}");
    }

    #[test]
    fn lines_drop_endings_and_empty_lines() {
        let got: Vec<&[u8]> = lines(b"a,1\r\nb,2\n\n c \nlast").collect();
        assert_eq!(got, vec![&b"a,1"[..], b"b,2", b" c ", b"last"]);
    }

    #[test]
    fn assembling_by_line_ends_each_response_once() {
        let mut out = Vec::new();
        assemble(&mut out, b"1\n2", Assemble::Line);
        assemble(&mut out, b"3\n", Assemble::Line);
        assert_eq!(out, b"1\n2\n3\n");
        let mut out = Vec::new();
        assemble(&mut out, b"[1]", Assemble::None);
        assemble(&mut out, b"[2]", Assemble::None);
        assert_eq!(out, b"[1][2]");
    }

    #[test]
    fn manifests_name_a_prefix_and_relative_keys() {
        let (prefix, keys) =
            manifest(r#"[{"prefix": "s3://b/in/"}, "a.csv", "sub/b.csv"]"#).unwrap();
        assert_eq!(prefix, "s3://b/in/");
        assert_eq!(keys, vec!["a.csv", "sub/b.csv"]);
        assert!(manifest(r#"["a.csv"]"#).unwrap_err().0.contains("prefix"));
        assert!(manifest(r#"[{"prefix": "s3://b/"}, "../x"]"#).is_err());
        assert!(manifest("{").is_err());
        assert_eq!(output_name("sub/b.csv"), "sub/b.csv.out");
    }
}
