//! Batch transform, its decisions: a transform job's settings as SageMaker takes them (the
//! defaults, the ranges, the combinations it refuses), how an input object is split into
//! records and the records packed into the requests sent to the model (`BatchStrategy`,
//! `MaxPayloadInMB`), how the responses are assembled into the input's `.out` object
//! (`AssembleWith`), where that object goes, and `DataProcessing`: the JSONPath filters on
//! each record going in and coming out, and the join of each output with its input.

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
    /// The records as read, for a join (the body holds them filtered).
    originals: Vec<Vec<u8>>,
}

/// A request body, the number of records in it, and (for a join) the records as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    pub body: Vec<u8>,
    pub records: usize,
    pub originals: Vec<Vec<u8>>,
}

impl Packer {
    pub fn new(settings: &Settings) -> Self {
        Self {
            strategy: settings.strategy,
            max_bytes: settings.max_payload_bytes,
            body: Vec::new(),
            records: 0,
            originals: Vec::new(),
        }
    }

    /// Add one record (without its line ending), and the record as read when it is to be
    /// joined; a body that is full is handed back.
    pub fn push(
        &mut self,
        record: &[u8],
        original: Option<&[u8]>,
    ) -> Result<Option<Packed>, Invalid> {
        if record.len() > self.max_bytes {
            return Err(Invalid(format!(
                "{TOO_LARGE}: a record is larger than MaxPayloadInMB ({} MB)",
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
        if let Some(original) = original {
            self.originals.push(original.to_vec());
        }
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
            originals: std::mem::take(&mut self.originals),
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
                .filter(|k| {
                    !k.is_empty() && !k.starts_with('/') && !k.split('/').any(|p| p == "..")
                })
                .map(str::to_owned)
                .ok_or_else(|| bad(&format!("{k} is not a relative key")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((prefix.to_owned(), keys))
}

/// How a record reads as JSON for filtering and joining: a CSV row as an array of its
/// fields (text), or a JSON value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordFormat {
    Csv,
    Json,
}

impl RecordFormat {
    /// The format of a media type: `text/csv`, or JSON (`application/json`,
    /// `application/jsonlines`); `None` for any other.
    pub fn of(media_type: &str) -> Option<Self> {
        let essence = media_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "text/csv" => Some(Self::Csv),
            "application/json" | "application/jsonlines" | "application/x-jsonlines" => {
                Some(Self::Json)
            }
            _ => None,
        }
    }

    /// `record` as a JSON value.
    pub fn parse(self, record: &[u8]) -> Result<serde_json::Value, String> {
        match self {
            Self::Json => {
                serde_json::from_slice(record).map_err(|e| format!("a record is not JSON ({e})"))
            }
            Self::Csv => {
                let mut reader = csv::ReaderBuilder::new()
                    .has_headers(false)
                    .flexible(true)
                    .from_reader(record);
                let mut rows = reader.records();
                let row = rows
                    .next()
                    .transpose()
                    .map_err(|e| format!("a record is not a CSV row ({e})"))?
                    .unwrap_or_default();
                if rows.next().is_some() {
                    return Err(
                        "a CSV record holds more than one row: filtering and joining \
                                CSV read one row per record (SplitType Line)"
                            .into(),
                    );
                }
                Ok(serde_json::Value::Array(
                    row.iter()
                        .map(|f| serde_json::Value::String(f.to_owned()))
                        .collect(),
                ))
            }
        }
    }

    /// `value` written as one record: compact JSON, or a CSV row (an array's items as its
    /// fields, text as it is and anything else as JSON).
    pub fn write(self, value: &serde_json::Value) -> Vec<u8> {
        match self {
            Self::Json => serde_json::to_vec(value).unwrap_or_default(),
            Self::Csv => {
                let field = |v: &serde_json::Value| match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let fields: Vec<String> = match value {
                    serde_json::Value::Array(items) => items.iter().map(field).collect(),
                    other => vec![field(other)],
                };
                let mut writer = csv::WriterBuilder::new()
                    .has_headers(false)
                    .terminator(csv::Terminator::Any(b'\n'))
                    .from_writer(Vec::new());
                let _ = writer.write_record(&fields);
                let mut row = writer.into_inner().unwrap_or_default();
                if row.last() == Some(&b'\n') {
                    row.pop();
                }
                row
            }
        }
    }
}

/// A JSONPath filter (`InputFilter`, `OutputFilter`).
#[derive(Debug, Clone)]
pub struct Filter {
    path: serde_json_path::JsonPath,
    text: String,
    field: &'static str,
    /// Selects at most one node by names and indexes alone: its result is that node, not
    /// a list of one.
    singular: bool,
}

impl Filter {
    /// `text` parsed, for `field`; `None` for `$` (everything).
    fn parse(field: &'static str, text: &str) -> Result<Option<Self>, Invalid> {
        if text.chars().count() > 63 {
            return Err(Invalid(format!(
                "{field} {text:?} is longer than 63 characters"
            )));
        }
        if text.is_empty() || text == "$" {
            return Ok(None);
        }
        let path = serde_json_path::JsonPath::parse(text).map_err(|e| {
            Invalid(format!(
                "{field} {text:?} is not a JSONPath expression: {e}"
            ))
        })?;
        let singular = !text.contains([',', ':', '*', '?']) && !text.contains("..");
        Ok(Some(Self {
            path,
            text: text.to_owned(),
            field,
            singular,
        }))
    }

    /// What the filter selects of `value`: the node a singular path names; the members a
    /// path names of an object at its top (an object of them, as SageMaker keeps
    /// `$['id','SageMakerOutput']`); otherwise the nodes, in a list. Selecting nothing is an
    /// error (an index past the record's end, a member it lacks).
    pub fn apply(&self, value: &serde_json::Value) -> Result<serde_json::Value, String> {
        use serde_json_path::PathElement;
        let located = self.path.query_located(value);
        let nodes: Vec<_> = located.into_iter().collect();
        if nodes.is_empty() {
            return Err(format!(
                "{} {:?} selects nothing of the record {}",
                self.field,
                self.text,
                shorten(value)
            ));
        }
        if self.singular && nodes.len() == 1 {
            return Ok(nodes[0].node().clone());
        }
        let top_names: Option<serde_json::Map<String, serde_json::Value>> = nodes
            .iter()
            .map(|n| {
                let location = n.location();
                match (location.len(), location.first()) {
                    (1, Some(PathElement::Name(name))) => {
                        Some((name.to_string(), n.node().clone()))
                    }
                    _ => None,
                }
            })
            .collect();
        match top_names {
            Some(members) if value.is_object() => Ok(serde_json::Value::Object(members)),
            _ => Ok(serde_json::Value::Array(
                nodes.iter().map(|n| n.node().clone()).collect(),
            )),
        }
    }
}

/// A record's text for a message: at most 100 characters.
fn shorten(value: &serde_json::Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(100) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text,
    }
}

/// `DataProcessing`: what of each record goes to the model (`InputFilter`), whether the
/// output is joined with the input (`JoinSource: Input`), and what of that is kept
/// (`OutputFilter`).
#[derive(Debug, Clone)]
pub struct DataProcessing {
    input_filter: Option<Filter>,
    output_filter: Option<Filter>,
    join: bool,
    input: RecordFormat,
    /// What the answers are read as when the model does not say (`None`: they are not
    /// read: only the input is filtered).
    output: Option<RecordFormat>,
}

/// `DataProcessing` as given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GivenProcessing<'a> {
    pub input_filter: Option<&'a str>,
    pub output_filter: Option<&'a str>,
    pub join_source: Option<&'a str>,
    /// `TransformInput.ContentType`.
    pub content_type: Option<&'a str>,
    /// `TransformOutput.Accept`.
    pub accept: Option<&'a str>,
    /// `TransformInput.SplitType`.
    pub split_type: Option<&'a str>,
}

/// The job's `DataProcessing`, or `None` when it does nothing (no filter but `$`, no
/// join). Filters and joins read records as CSV or JSON only: the content types must say
/// which.
pub fn data_processing(given: &GivenProcessing<'_>) -> Result<Option<DataProcessing>, Invalid> {
    let input_filter = given
        .input_filter
        .map(|t| Filter::parse("DataProcessing.InputFilter", t))
        .transpose()?
        .flatten();
    let output_filter = given
        .output_filter
        .map(|t| Filter::parse("DataProcessing.OutputFilter", t))
        .transpose()?
        .flatten();
    let join = match given.join_source {
        None | Some("None") => false,
        Some("Input") => true,
        Some(other) => {
            return Err(Invalid(format!(
                "DataProcessing.JoinSource {other:?} is not one of Input, None"
            )))
        }
    };
    if input_filter.is_none() && output_filter.is_none() && !join {
        return Ok(None);
    }
    let format = |field: &str, media: Option<&str>, why: &str| {
        media.and_then(RecordFormat::of).ok_or_else(|| {
            Invalid(format!(
                "{field} {:?}: {why} reads records as CSV (text/csv) or JSON \
                 (application/json, application/jsonlines) only",
                media.unwrap_or_default()
            ))
        })
    };
    let input = if input_filter.is_some() || join {
        format(
            "TransformInput.ContentType",
            given.content_type,
            "DataProcessing's InputFilter and JoinSource",
        )?
    } else {
        RecordFormat::of(given.content_type.unwrap_or_default()).unwrap_or(RecordFormat::Json)
    };
    // The answers are read in the type the model says they are in; Accept (or the input's
    // type) when it says none.
    let output = if output_filter.is_some() || join {
        Some(format(
            "TransformOutput.Accept",
            given.accept.or(given.content_type),
            "DataProcessing's OutputFilter and JoinSource",
        )?)
    } else {
        None
    };
    if (input_filter.is_some() || join)
        && input == RecordFormat::Csv
        && given.split_type != Some("Line")
    {
        return Err(Invalid(
            "DataProcessing on text/csv records needs TransformInput.SplitType Line: a CSV \
             record is one row"
                .into(),
        ));
    }
    Ok(Some(DataProcessing {
        input_filter,
        output_filter,
        join,
        input,
        output,
    }))
}

impl DataProcessing {
    /// Whether each request's records must be kept to be joined with their outputs.
    pub fn joins(&self) -> bool {
        self.join
    }

    /// Whether the answers are cut into records, joined or filtered (an `InputFilter`
    /// alone leaves them as the model wrote them).
    pub fn processes_outputs(&self) -> bool {
        self.output.is_some()
    }

    /// What of `record` goes to the model.
    pub fn filter_input(&self, record: &[u8]) -> Result<Vec<u8>, String> {
        match &self.input_filter {
            None => Ok(record.to_vec()),
            Some(filter) => {
                let value = self.input.parse(record)?;
                Ok(self.input.write(&filter.apply(&value)?))
            }
        }
    }

    /// The output records of one request: `response` (of media type `response_type`, or
    /// Accept's when empty) cut into one output per record (one line each; a request of one
    /// record may answer with several lines of JSON or one value), each joined with its
    /// input record (from `inputs`, as read, when joining), then filtered, each written as
    /// one line. `response` as it is when only the input is filtered.
    pub fn finish(
        &self,
        inputs: &[Vec<u8>],
        records: usize,
        response: Vec<u8>,
        response_type: &str,
    ) -> Result<Vec<u8>, String> {
        let Some(declared) = self.output else {
            return Ok(response);
        };
        let output_format = if response_type.trim().is_empty() {
            declared
        } else {
            RecordFormat::of(response_type).ok_or_else(|| {
                format!(
                    "the model answered {response_type}: joining and filtering read answers \
                     as CSV or JSON only"
                )
            })?
        };
        let response = &response;
        let text = String::from_utf8_lossy(response);
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let outputs: Vec<&str> = if lines.len() == records {
            lines
        } else if records == 1 {
            vec![text.trim_end()]
        } else {
            return Err(format!(
                "the model answered {} lines for a request of {records} records: to join \
                 or filter outputs, each record needs one line",
                lines.len()
            ));
        };
        let mut written = Vec::new();
        for (i, output) in outputs.iter().enumerate() {
            let output = output_format
                .parse(output.as_bytes())
                .map_err(|e| format!("in the model's answer, {e}"))?;
            let (value, format) = if self.join {
                let input = inputs
                    .get(i)
                    .ok_or("a joined record has no input".to_string())?;
                (
                    join(self.input, self.input.parse(input)?, output),
                    self.input,
                )
            } else {
                (output, output_format)
            };
            let value = match &self.output_filter {
                Some(filter) => filter.apply(&value)?,
                None => value,
            };
            written.extend(format.write(&value));
            written.push(b'\n');
        }
        Ok(written)
    }
}

/// How one compared model's answers agree with the job's model's, record by record, as the
/// shadow variants' comparison ([`crate::shadow::compare`]) judges them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Agreement {
    /// Records compared.
    pub records: u64,
    /// Records whose answers are byte for byte equal.
    pub exact: u64,
    /// Records whose numbers are all within the shadow comparison's tolerance.
    pub close: u64,
    /// Records whose scores pick the same class.
    pub argmax: u64,
}

impl Agreement {
    pub fn add(&mut self, other: Agreement) {
        self.records += other.records;
        self.exact += other.exact;
        self.close += other.close;
        self.argmax += other.argmax;
    }
}

/// How `other`'s answer to a request of `records` records agrees with `first`'s (both of
/// `content_type`): line by line when each has a line per record, else as one answer
/// whose verdict counts for every record.
pub fn compare_outputs(
    first: &[u8],
    other: &[u8],
    content_type: &str,
    records: usize,
) -> Agreement {
    let lines = |body: &[u8]| -> Vec<Vec<u8>> {
        body.split(|&b| b == b'\n')
            .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
            .map(<[u8]>::to_vec)
            .collect()
    };
    let (a, b) = (lines(first), lines(other));
    let pairs: Vec<(&[u8], &[u8], u64)> = if records > 1 && a.len() == records && b.len() == records
    {
        a.iter()
            .zip(&b)
            .map(|(x, y)| (x.as_slice(), y.as_slice(), 1))
            .collect()
    } else {
        vec![(first, other, records as u64)]
    };
    let mut agreement = Agreement::default();
    for (x, y, n) in pairs {
        let c = crate::shadow::compare(x, content_type, y, content_type, Default::default());
        let close = c.exact || c.close == Some(true);
        // Scores pick a class by their largest; a single value (a label, a class index, a
        // number) is its own class.
        let same_class = if numbers(x) > 1 {
            c.argmax == Some(true)
        } else {
            close
        };
        agreement.records += n;
        agreement.exact += n * u64::from(c.exact);
        agreement.close += n * u64::from(close);
        agreement.argmax += n * u64::from(same_class);
    }
    agreement
}

/// How many numbers a line holds (cells or JSON values that read as numbers).
fn numbers(line: &[u8]) -> usize {
    String::from_utf8_lossy(line)
        .split(|c: char| c == ',' || c.is_whitespace() || "[]{}:\"".contains(c))
        .filter(|t| !t.is_empty() && t.parse::<f64>().is_ok())
        .count()
}

/// An input record joined with its output as SageMaker joins them: a CSV row with the
/// output's fields appended; a JSON object with the output as its `SageMakerOutput`; any
/// other JSON value as `{"SageMakerInput": ..., "SageMakerOutput": ...}`.
fn join(
    format: RecordFormat,
    input: serde_json::Value,
    output: serde_json::Value,
) -> serde_json::Value {
    use serde_json::Value;
    match (format, input) {
        (RecordFormat::Csv, Value::Array(mut fields)) => {
            match output {
                Value::Array(more) => fields.extend(more),
                other => fields.push(other),
            }
            Value::Array(fields)
        }
        (_, Value::Object(mut members)) => {
            members.insert("SageMakerOutput".into(), output);
            Value::Object(members)
        }
        (_, other) => serde_json::json!({ "SageMakerInput": other, "SageMakerOutput": output }),
    }
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
            originals: Vec::new(),
        }
    }

    fn pack(p: &mut Packer, records: &[&str]) -> Vec<(String, usize)> {
        let mut out: Vec<Packed> = Vec::new();
        for r in records {
            out.extend(p.push(r.as_bytes(), None).unwrap());
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
        p.push(b"abc", None).unwrap();
        let e = p.push(b"abcde", None).unwrap_err().0;
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

    fn processing(
        input: Option<&'static str>,
        output: Option<&'static str>,
        join: Option<&'static str>,
        content_type: &'static str,
    ) -> Result<Option<DataProcessing>, Invalid> {
        data_processing(&GivenProcessing {
            input_filter: input,
            output_filter: output,
            join_source: join,
            content_type: Some(content_type),
            accept: None,
            split_type: Some("Line"),
        })
    }

    #[test]
    fn csv_rows_are_filtered_joined_and_filtered_again() {
        let dp = processing(Some("$[1:]"), Some("$[0,-1]"), Some("Input"), "text/csv")
            .unwrap()
            .unwrap();
        assert!(dp.joins());
        assert_eq!(dp.filter_input(b"id-7,5.1,3.5").unwrap(), b"5.1,3.5");
        // A quoted field keeps its comma.
        assert_eq!(dp.filter_input(b"\"a,b\",1,2").unwrap(), b"1,2".to_vec());
        let inputs = vec![b"id-1,5.1,3.5".to_vec(), b"id-2,6.0,2.9".to_vec()];
        let out = dp
            .finish(
                &inputs,
                2,
                b"setosa,0.9\nvirginica,0.8\n".to_vec(),
                "text/csv",
            )
            .unwrap();
        assert_eq!(out, b"id-1,0.9\nid-2,0.8\n");
        // One line per record, or nothing to join with.
        let e = dp
            .finish(&inputs, 2, b"setosa,0.9\n".to_vec(), "")
            .unwrap_err();
        assert!(e.contains("1 lines for a request of 2 records"), "{e}");
        // The answer is read in the type the model gave: JSON appended as one field.
        let out = dp
            .finish(
                &inputs[..1],
                1,
                br#"{"p": 0.9}"#.to_vec(),
                "application/json",
            )
            .unwrap();
        assert_eq!(out, b"id-1,\"{\"\"p\"\":0.9}\"\n".to_vec());
        // A CSV record is one row; one that holds two is refused.
        let e = dp.filter_input(b"a,1\nb,2").unwrap_err();
        assert!(e.contains("more than one row"), "{e}");
        let whole = data_processing(&GivenProcessing {
            input_filter: Some("$[1:]"),
            content_type: Some("text/csv"),
            split_type: None,
            ..GivenProcessing::default()
        })
        .unwrap_err()
        .0;
        assert!(
            whole.contains("needs TransformInput.SplitType Line"),
            "{whole}"
        );
    }

    #[test]
    fn an_input_filter_alone_leaves_the_answers_as_they_are() {
        let dp = processing(Some("$[1:]"), None, None, "text/csv")
            .unwrap()
            .unwrap();
        assert!(!dp.processes_outputs());
        let answer = br#"{"predictions": [1, 2]}"#.to_vec();
        assert_eq!(
            dp.finish(&[], 2, answer.clone(), "application/json")
                .unwrap(),
            answer
        );
    }

    #[test]
    fn json_records_join_as_sagemaker_joins_them() {
        let dp = processing(
            Some("$.features"),
            Some("$['id','SageMakerOutput']"),
            Some("Input"),
            "application/jsonlines",
        )
        .unwrap()
        .unwrap();
        let record = br#"{"id": 3, "features": [1, 2], "note": "x"}"#;
        assert_eq!(dp.filter_input(record).unwrap(), b"[1,2]");
        let out = dp
            .finish(&[record.to_vec()], 1, br#"{"label": "b"}"#.to_vec(), "")
            .unwrap();
        assert_eq!(
            out,
            b"{\"SageMakerOutput\":{\"label\":\"b\"},\"id\":3}\n".to_vec()
        );
        // A record that is not an object is wrapped.
        let dp = processing(None, None, Some("Input"), "application/json")
            .unwrap()
            .unwrap();
        let out = dp
            .finish(&[b"[1,2]".to_vec()], 1, b"0.5".to_vec(), "")
            .unwrap();
        assert_eq!(
            out,
            b"{\"SageMakerInput\":[1,2],\"SageMakerOutput\":0.5}\n".to_vec()
        );
    }

    #[test]
    fn filters_that_select_nothing_or_do_not_parse_are_errors() {
        let dp = processing(Some("$[7]"), None, None, "text/csv")
            .unwrap()
            .unwrap();
        let e = dp.filter_input(b"a,b").unwrap_err();
        assert!(e.contains("InputFilter \"$[7]\" selects nothing"), "{e}");
        let e = processing(Some("$[1:"), None, None, "text/csv")
            .unwrap_err()
            .0;
        assert!(
            e.contains("DataProcessing.InputFilter \"$[1:\" is not a JSONPath"),
            "{e}"
        );
        let e = processing(None, None, Some("Input"), "application/x-npy")
            .unwrap_err()
            .0;
        assert!(
            e.contains("TransformInput.ContentType \"application/x-npy\""),
            "{e}"
        );
        // `$` and no join: nothing to do.
        assert!(processing(Some("$"), Some("$"), Some("None"), "text/csv")
            .unwrap()
            .is_none());
    }

    #[test]
    fn answers_are_compared_record_by_record() {
        let first = b"setosa,0.9,0.05,0.05\nvirginica,0.1,0.2,0.7\nversicolor,0.2,0.6,0.2\n";
        // The same first row; the second close (within 1e-4); the third another class.
        let other = b"setosa,0.9,0.05,0.05\nvirginica,0.10000001,0.2,0.7\nsetosa,0.5,0.3,0.2\n";
        let a = compare_outputs(first, other, "text/csv", 3);
        assert_eq!(
            a,
            Agreement {
                records: 3,
                exact: 1,
                close: 2,
                argmax: 2
            }
        );
        // A single value per record is its own class: "2" and "0" are not the same one.
        let a = compare_outputs(b"2\n0\n", b"0\n0\n", "text/csv", 2);
        assert_eq!((a.exact, a.argmax), (1, 1));
        let a = compare_outputs(b"setosa\nsetosa\n", b"setosa\nvirginica\n", "text/csv", 2);
        assert_eq!((a.exact, a.argmax), (1, 1));
        // Not a line per record: one verdict for all of them.
        let a = compare_outputs(b"[1,2]", b"[1,2]", "application/json", 5);
        assert_eq!((a.records, a.exact), (5, 5));
    }

    #[test]
    fn manifests_name_a_prefix_and_relative_keys() {
        let (prefix, keys) =
            manifest(r#"[{"prefix": "s3://b/in/"}, "a.csv", "sub/b.csv"]"#).unwrap();
        assert_eq!(prefix, "s3://b/in/");
        assert_eq!(keys, vec!["a.csv", "sub/b.csv"]);
        assert!(manifest(r#"["a.csv"]"#).unwrap_err().0.contains("prefix"));
        assert!(manifest(r#"[{"prefix": "s3://b/"}, "../x"]"#).is_err());
        assert!(manifest(r#"[{"prefix": "/data/in/"}, "/etc/passwd"]"#).is_err());
        assert!(manifest("{").is_err());
        assert_eq!(output_name("sub/b.csv"), "sub/b.csv.out");
    }
}
