//! Model quality as SageMaker's Model Monitor computes it: predictions read from captured
//! responses (`InferenceAttribute`, `ProbabilityAttribute`, `ProbabilityThresholdAttribute`),
//! joined with ground-truth labels by inference id, and SageMaker's `statistics.json`
//! metrics for a `ProblemType` (binary, multiclass, regression), checked against a
//! baseline's `constraints.json` into `constraint_violations.json`.
//!
//! Every metric is defined as scikit-learn defines it (a test in the repository compares the
//! values with scikit-learn's on the same data to 1e-9). Standard deviations are SageMaker's:
//! with at least [`MIN_FOR_DEVIATION`] rows, the sample standard deviation of the metric over
//! five random 80 % subsets (seeded, so an execution is repeatable); with fewer, `"NaN"`.
//! [`significant`] compares two variants' values with the standard errors those give.

use rand::seq::index::sample;
use rand::SeedableRng;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// Rows needed for a standard deviation (SageMaker's rule).
pub const MIN_FOR_DEVIATION: usize = 200;
/// Subsets the standard deviation is taken over, and their share of the rows.
const SUBSETS: usize = 5;
const SUBSET_SHARE: f64 = 0.8;
/// Points kept on each curve of `statistics.json`.
const CURVE_POINTS: usize = 101;

/// `ProblemType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemType {
    /// Labels 0 and 1 (1 positive), or a probability and a threshold.
    BinaryClassification,
    /// Labels as text.
    MulticlassClassification,
    /// Numbers.
    Regression,
}

impl ProblemType {
    /// From SageMaker's name.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "BinaryClassification" => Ok(Self::BinaryClassification),
            "MulticlassClassification" => Ok(Self::MulticlassClassification),
            "Regression" => Ok(Self::Regression),
            other => Err(format!(
                "ProblemType {other:?} is not one of BinaryClassification, \
                 MulticlassClassification, Regression"
            )),
        }
    }

    /// SageMaker's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BinaryClassification => "BinaryClassification",
            Self::MulticlassClassification => "MulticlassClassification",
            Self::Regression => "Regression",
        }
    }

    /// The key of its metrics in `statistics.json` (`binary_classification_metrics`...).
    pub fn metrics_key(self) -> &'static str {
        match self {
            Self::BinaryClassification => "binary_classification_metrics",
            Self::MulticlassClassification => "multiclass_classification_metrics",
            Self::Regression => "regression_metrics",
        }
    }

    /// The key of its constraints in `constraints.json`.
    pub fn constraints_key(self) -> &'static str {
        match self {
            Self::BinaryClassification => "binary_classification_constraints",
            Self::MulticlassClassification => "multiclass_classification_constraints",
            Self::Regression => "regression_constraints",
        }
    }
}

/// How predictions are read from a captured response.
#[derive(Debug, Clone, PartialEq)]
pub struct Attributes {
    /// The problem.
    pub problem: ProblemType,
    /// `InferenceAttribute`: the predicted label (or value): a column index for CSV, a
    /// JSONPath for JSON.
    pub inference: Option<String>,
    /// `ProbabilityAttribute`: the positive class's probability (binary).
    pub probability: Option<String>,
    /// `ProbabilityThresholdAttribute`: a probability at or above it predicts 1 (default
    /// 0.5).
    pub threshold: Option<f64>,
}

impl Attributes {
    /// Check the attributes for the problem; the error names the member.
    pub fn check(&self) -> Result<(), String> {
        if self.inference.is_none() && self.probability.is_none() {
            return Err(
                "ModelQualityJobInput.EndpointInput needs an InferenceAttribute (or, for \
                 BinaryClassification, a ProbabilityAttribute)"
                    .into(),
            );
        }
        if self.problem != ProblemType::BinaryClassification && self.inference.is_none() {
            return Err(format!(
                "ModelQualityJobInput.EndpointInput.InferenceAttribute is required for {}",
                self.problem.as_str()
            ));
        }
        for (member, attribute) in [
            ("InferenceAttribute", &self.inference),
            ("ProbabilityAttribute", &self.probability),
        ] {
            if let Some(a) = attribute {
                Locator::parse(a).map_err(|e| {
                    format!("ModelQualityJobInput.EndpointInput.{member} {a:?}: {e}")
                })?;
            }
        }
        if let Some(t) = self.threshold {
            if !(0.0..=1.0).contains(&t) {
                return Err(format!(
                    "ModelQualityJobInput.EndpointInput.ProbabilityThresholdAttribute {t} is \
                     not 0 to 1"
                ));
            }
        }
        Ok(())
    }
}

/// Where an attribute is: a CSV column, or a JSONPath.
enum Locator {
    Column(usize),
    Path(serde_json_path::JsonPath),
}

impl Locator {
    fn parse(text: &str) -> Result<Self, String> {
        if let Ok(column) = text.trim().parse::<usize>() {
            return Ok(Self::Column(column));
        }
        let path = if text.starts_with('$') {
            text.to_owned()
        } else {
            format!("$.{text}")
        };
        serde_json_path::JsonPath::parse(&path)
            .map(Self::Path)
            .map_err(|e| format!("neither a column index nor a JSONPath: {e}"))
    }

    /// The attribute in `data` (a response as text, CSV or JSON), as text.
    fn find(&self, data: &str) -> Result<String, String> {
        match self {
            Self::Column(i) => {
                let line = data.lines().next().unwrap_or("");
                line.split(',')
                    .nth(*i)
                    .map(|f| f.trim().trim_matches('"').to_owned())
                    .ok_or_else(|| format!("the response has no column {i}: {line:?}"))
            }
            Self::Path(path) => {
                let value: Value = serde_json::from_str(data)
                    .map_err(|e| format!("the response is not JSON: {e}"))?;
                let found = path.query(&value).all();
                match found.as_slice() {
                    [Value::String(s)] => Ok(s.clone()),
                    [v @ (Value::Number(_) | Value::Bool(_))] => Ok(v.to_string()),
                    [] => Err("the path finds nothing in the response".into()),
                    [_] => Err("the path finds an array or object, not a value".into()),
                    _ => Err("the path finds more than one value".into()),
                }
            }
        }
    }
}

/// The text of a captured body: as stored, or base64 decoded.
pub fn body_text(data: &str, encoding: &str) -> Result<String, String> {
    match encoding {
        "CSV" | "JSON" => Ok(data.to_owned()),
        "BASE64" => {
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data)
                .map_err(|e| format!("the BASE64 body does not decode: {e}"))?;
            String::from_utf8(bytes).map_err(|_| "the body is not UTF-8 text".into())
        }
        other => Err(format!("encoding {other:?} is not CSV, JSON or BASE64")),
    }
}

/// A prediction read from a response.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// The label (or, for regression, the value) as text.
    pub label: String,
    /// The positive class's probability, when `ProbabilityAttribute` is given.
    pub probability: Option<f64>,
}

/// The prediction in `response` (its text) by `attributes` (checked).
pub fn prediction(attributes: &Attributes, response: &str) -> Result<Prediction, String> {
    let probability = match &attributes.probability {
        Some(a) => {
            let text = Locator::parse(a)?.find(response)?;
            let p: f64 = text
                .parse()
                .ok()
                .filter(|p: &f64| p.is_finite())
                .ok_or_else(|| {
                    format!("the probability {text:?} (ProbabilityAttribute) is not a number")
                })?;
            Some(p)
        }
        None => None,
    };
    let label = match (&attributes.inference, probability) {
        (Some(a), _) => Locator::parse(a)?.find(response)?,
        (None, Some(p)) => {
            let threshold = attributes.threshold.unwrap_or(0.5);
            if p >= threshold { "1" } else { "0" }.to_owned()
        }
        (None, None) => return Err("no attribute to read".into()),
    };
    Ok(Prediction { label, probability })
}

/// One ground-truth record: `{"groundTruthData": {"data", "encoding"}, "eventMetadata":
/// {"eventId"}, "eventVersion"}`; its event id and label.
pub fn ground_truth(line: &str) -> Result<(String, String), String> {
    let record: Value =
        serde_json::from_str(line).map_err(|e| format!("not a JSON record: {e}"))?;
    let data = &record["groundTruthData"];
    let encoding = data["encoding"].as_str().unwrap_or("CSV");
    let label = match (&data["data"], encoding) {
        (Value::String(s), "CSV") => s.trim().to_owned(),
        (Value::String(s), "JSON") => match serde_json::from_str::<Value>(s) {
            Ok(Value::String(s)) => s,
            Ok(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
            _ => return Err("groundTruthData.data is not a JSON label".into()),
        },
        (Value::Number(n), _) => n.to_string(),
        (Value::Null, _) => return Err("groundTruthData.data is missing".into()),
        (_, other) => {
            return Err(format!(
                "groundTruthData.encoding {other:?} is not CSV or JSON, or data is not a string"
            ))
        }
    };
    let id = record["eventMetadata"]["eventId"]
        .as_str()
        .filter(|id| !id.is_empty())
        .ok_or("eventMetadata.eventId is missing")?;
    Ok((id.to_owned(), label))
}

/// Whether `label` (a `side`: "ground truth" or "predicted") fits `problem`: 0 or 1 for a
/// binary problem, a number for regression; the error says why not.
pub fn check_label(problem: ProblemType, label: &str, side: &str) -> Result<(), String> {
    match problem {
        ProblemType::BinaryClassification => binary_label(label, side).map(|_| ()),
        ProblemType::Regression => number(label, side).map(|_| ()),
        ProblemType::MulticlassClassification => Ok(()),
    }
}

/// A ground-truth record as SageMaker takes it, for `event_id` labelled `label`.
pub fn ground_truth_record(event_id: &str, label: &str) -> String {
    json!({
        "groundTruthData": {"data": label, "encoding": "CSV"},
        "eventMetadata": {"eventId": event_id},
        "eventVersion": "0",
    })
    .to_string()
}

/// A label as text from an outcome's number: whole numbers without a fraction (`1`, not
/// `1.0`), so that a binary outcome reads as SageMaker's `0`/`1` labels.
pub fn label_of_number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        value.to_string()
    }
}

/// Predictions joined with their labels, ready for metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Joined {
    /// Ground truth labels.
    pub actual: Vec<String>,
    /// Predicted labels.
    pub predicted: Vec<String>,
    /// The positive class's probability of each, when known for all.
    pub probabilities: Vec<Option<f64>>,
}

impl Joined {
    /// Add one pair.
    pub fn push(&mut self, actual: String, prediction: Prediction) {
        self.actual.push(actual);
        self.predicted.push(prediction.label);
        self.probabilities.push(prediction.probability);
    }

    /// Pairs.
    pub fn len(&self) -> usize {
        self.actual.len()
    }

    /// No pairs.
    pub fn is_empty(&self) -> bool {
        self.actual.is_empty()
    }
}

/// The rows in the form a problem's metrics take.
enum Data {
    Binary {
        actual: Vec<bool>,
        predicted: Vec<bool>,
        scores: Option<Vec<f64>>,
    },
    Multiclass {
        actual: Vec<String>,
        predicted: Vec<String>,
    },
    Regression {
        actual: Vec<f64>,
        predicted: Vec<f64>,
    },
}

fn binary_label(text: &str, side: &str) -> Result<bool, String> {
    match text.trim().parse::<f64>() {
        Ok(0.0) => Ok(false),
        Ok(1.0) => Ok(true),
        _ => match text.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(format!(
                "a {side} label {text:?} is not 0 or 1, as BinaryClassification needs"
            )),
        },
    }
}

fn number(text: &str, side: &str) -> Result<f64, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| format!("a {side} value {text:?} is not a number, as Regression needs"))
}

impl Data {
    fn of(problem: ProblemType, joined: &Joined) -> Result<Self, String> {
        Ok(match problem {
            ProblemType::BinaryClassification => Data::Binary {
                actual: joined
                    .actual
                    .iter()
                    .map(|l| binary_label(l, "ground truth"))
                    .collect::<Result<_, _>>()?,
                predicted: joined
                    .predicted
                    .iter()
                    .map(|l| binary_label(l, "predicted"))
                    .collect::<Result<_, _>>()?,
                scores: joined.probabilities.iter().copied().collect(),
            },
            ProblemType::MulticlassClassification => Data::Multiclass {
                actual: joined.actual.clone(),
                predicted: joined.predicted.clone(),
            },
            ProblemType::Regression => Data::Regression {
                actual: joined
                    .actual
                    .iter()
                    .map(|v| number(v, "ground truth"))
                    .collect::<Result<_, _>>()?,
                predicted: joined
                    .predicted
                    .iter()
                    .map(|v| number(v, "predicted"))
                    .collect::<Result<_, _>>()?,
            },
        })
    }

    /// The scalar metrics over the rows `rows`, in SageMaker's order.
    fn scalars(&self, rows: &[usize]) -> Vec<(&'static str, f64)> {
        match self {
            Data::Binary {
                actual,
                predicted,
                scores,
            } => {
                let a: Vec<bool> = rows.iter().map(|&i| actual[i]).collect();
                let p: Vec<bool> = rows.iter().map(|&i| predicted[i]).collect();
                let s: Option<Vec<f64>> = scores
                    .as_ref()
                    .map(|s| rows.iter().map(|&i| s[i]).collect());
                binary_scalars(&a, &p, s.as_deref())
            }
            Data::Multiclass { actual, predicted } => {
                let a: Vec<&str> = rows.iter().map(|&i| actual[i].as_str()).collect();
                let p: Vec<&str> = rows.iter().map(|&i| predicted[i].as_str()).collect();
                multiclass_scalars(&a, &p)
            }
            Data::Regression { actual, predicted } => {
                let a: Vec<f64> = rows.iter().map(|&i| actual[i]).collect();
                let p: Vec<f64> = rows.iter().map(|&i| predicted[i]).collect();
                regression_scalars(&a, &p)
            }
        }
    }
}

/// `num / den`, 0 when `den` is 0 (scikit-learn's `zero_division=0`).
fn ratio(num: f64, den: f64) -> f64 {
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

/// F-beta from precision and recall (0 when both are 0).
fn f_beta(beta: f64, precision: f64, recall: f64) -> f64 {
    let b2 = beta * beta;
    ratio((1.0 + b2) * precision * recall, b2 * precision + recall)
}

fn binary_scalars(
    actual: &[bool],
    predicted: &[bool],
    scores: Option<&[f64]>,
) -> Vec<(&'static str, f64)> {
    let [[tn, fp], [fn_, tp]] = confusion(actual, predicted).map(|r| r.map(|c| c as f64));
    let n = tn + fp + fn_ + tp;
    let (positives, negatives) = (tp + fn_, tn + fp);
    let precision = ratio(tp, tp + fp);
    let recall = ratio(tp, positives);
    // The best constant classifier predicts the positive class for every row.
    let (precision_c, recall_c) = (ratio(positives, n), if positives > 0.0 { 1.0 } else { 0.0 });
    let mut out = vec![
        ("recall", recall),
        ("precision", precision),
        ("accuracy", ratio(tp + tn, n)),
        ("recall_best_constant_classifier", recall_c),
        ("precision_best_constant_classifier", precision_c),
        ("accuracy_best_constant_classifier", ratio(positives, n)),
        ("true_positive_rate", recall),
        ("true_negative_rate", ratio(tn, negatives)),
        ("false_positive_rate", ratio(fp, negatives)),
        ("false_negative_rate", ratio(fn_, positives)),
    ];
    if let Some(scores) = scores {
        if positives > 0.0 && negatives > 0.0 {
            out.push(("auc", roc_auc(actual, scores)));
        }
    }
    out.extend([
        ("f0_5", f_beta(0.5, precision, recall)),
        ("f1", f_beta(1.0, precision, recall)),
        ("f2", f_beta(2.0, precision, recall)),
        (
            "f0_5_best_constant_classifier",
            f_beta(0.5, precision_c, recall_c),
        ),
        (
            "f1_best_constant_classifier",
            f_beta(1.0, precision_c, recall_c),
        ),
        (
            "f2_best_constant_classifier",
            f_beta(2.0, precision_c, recall_c),
        ),
    ]);
    if let Some(scores) = scores {
        if positives > 0.0 {
            out.push(("au_prc", average_precision(actual, scores)));
        }
    }
    out
}

/// `[actual][predicted]` counts.
fn confusion(actual: &[bool], predicted: &[bool]) -> [[u64; 2]; 2] {
    let mut m = [[0u64; 2]; 2];
    for (&a, &p) in actual.iter().zip(predicted) {
        m[usize::from(a)][usize::from(p)] += 1;
    }
    m
}

/// Indices sorted by score, highest first.
fn descending(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order
}

/// Groups of tied scores, highest first: each group's positives and negatives.
fn tie_groups(actual: &[bool], scores: &[f64]) -> Vec<(f64, u64, u64)> {
    let order = descending(scores);
    let mut groups: Vec<(f64, u64, u64)> = Vec::new();
    for i in order {
        match groups.last_mut() {
            Some(g) if g.0 == scores[i] => {
                if actual[i] {
                    g.1 += 1
                } else {
                    g.2 += 1
                }
            }
            _ => groups.push((scores[i], u64::from(actual[i]), u64::from(!actual[i]))),
        }
    }
    groups
}

/// The ROC AUC: the trapezoids under scikit-learn's `roc_curve` (the Mann-Whitney
/// statistic, ties counting a half).
fn roc_auc(actual: &[bool], scores: &[f64]) -> f64 {
    let (mut above, mut wins, mut pos, mut neg) = (0u64, 0.0f64, 0u64, 0u64);
    for (_, p, n) in tie_groups(actual, scores) {
        wins += n as f64 * (above as f64 + 0.5 * p as f64);
        above += p;
        pos += p;
        neg += n;
    }
    wins / (pos as f64 * neg as f64)
}

/// scikit-learn's `average_precision_score`: over the distinct thresholds, highest first,
/// the recall gained times the precision there.
fn average_precision(actual: &[bool], scores: &[f64]) -> f64 {
    let positives = actual.iter().filter(|a| **a).count() as f64;
    let (mut tp, mut seen, mut last_recall, mut sum) = (0u64, 0u64, 0.0f64, 0.0f64);
    for (_, p, n) in tie_groups(actual, scores) {
        tp += p;
        seen += p + n;
        let recall = tp as f64 / positives;
        sum += (recall - last_recall) * (tp as f64 / seen as f64);
        last_recall = recall;
    }
    sum
}

/// The ROC and precision-recall curves at each distinct threshold (at most
/// [`CURVE_POINTS`] of them, evenly spread).
fn curves(actual: &[bool], scores: &[f64]) -> (Value, Value) {
    let groups = tie_groups(actual, scores);
    let positives = actual.iter().filter(|a| **a).count() as f64;
    let negatives = actual.len() as f64 - positives;
    let (mut tp, mut fp) = (0u64, 0u64);
    let mut points = vec![(0.0, 0.0, 1.0, 0.0)];
    for (_, p, n) in &groups {
        tp += p;
        fp += n;
        points.push((
            ratio(fp as f64, negatives),
            ratio(tp as f64, positives),
            ratio(tp as f64, (tp + fp) as f64),
            ratio(tp as f64, positives),
        ));
    }
    let keep: Vec<usize> = if points.len() <= CURVE_POINTS {
        (0..points.len()).collect()
    } else {
        (0..CURVE_POINTS)
            .map(|k| k * (points.len() - 1) / (CURVE_POINTS - 1))
            .collect()
    };
    let pick = |f: fn(&(f64, f64, f64, f64)) -> f64| -> Vec<f64> {
        keep.iter().map(|&k| f(&points[k])).collect()
    };
    (
        json!({"false_positive_rates": pick(|p| p.0), "true_positive_rates": pick(|p| p.1)}),
        json!({"precisions": pick(|p| p.2), "recalls": pick(|p| p.3)}),
    )
}

fn multiclass_scalars(actual: &[&str], predicted: &[&str]) -> Vec<(&'static str, f64)> {
    let labels: BTreeSet<&str> = actual.iter().chain(predicted).copied().collect();
    let mut support: BTreeMap<&str, f64> = BTreeMap::new();
    let mut predicted_as: BTreeMap<&str, f64> = BTreeMap::new();
    let mut correct: BTreeMap<&str, f64> = BTreeMap::new();
    for (&a, &p) in actual.iter().zip(predicted) {
        *support.entry(a).or_default() += 1.0;
        *predicted_as.entry(p).or_default() += 1.0;
        if a == p {
            *correct.entry(a).or_default() += 1.0;
        }
    }
    let n = actual.len() as f64;
    let get = |m: &BTreeMap<&str, f64>, l: &str| m.get(l).copied().unwrap_or(0.0);
    let (mut precision, mut recall, mut f05, mut f1, mut f2) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for &l in &labels {
        let (s, tp) = (get(&support, l), get(&correct, l));
        let p = ratio(tp, get(&predicted_as, l));
        let r = ratio(tp, s);
        precision += s * p;
        recall += s * r;
        f05 += s * f_beta(0.5, p, r);
        f1 += s * f_beta(1.0, p, r);
        f2 += s * f_beta(2.0, p, r);
    }
    // The best constant classifier predicts the most frequent true label (the first by
    // name on ties) for every row: its precision there is that label's share, 0 elsewhere.
    let share = ratio(support.values().copied().fold(0.0, f64::max), n);
    let weighted = |v: f64| ratio(v, n);
    vec![
        ("accuracy", ratio(correct.values().sum(), n)),
        ("weighted_recall", weighted(recall)),
        ("weighted_precision", weighted(precision)),
        ("weighted_f0_5", weighted(f05)),
        ("weighted_f1", weighted(f1)),
        ("weighted_f2", weighted(f2)),
        ("accuracy_best_constant_classifier", share),
        ("weighted_recall_best_constant_classifier", share),
        ("weighted_precision_best_constant_classifier", share * share),
        (
            "weighted_f0_5_best_constant_classifier",
            share * f_beta(0.5, share, 1.0),
        ),
        (
            "weighted_f1_best_constant_classifier",
            share * f_beta(1.0, share, 1.0),
        ),
        (
            "weighted_f2_best_constant_classifier",
            share * f_beta(2.0, share, 1.0),
        ),
    ]
}

fn regression_scalars(actual: &[f64], predicted: &[f64]) -> Vec<(&'static str, f64)> {
    let n = actual.len() as f64;
    let errors: Vec<f64> = actual.iter().zip(predicted).map(|(a, p)| a - p).collect();
    let mae = errors.iter().map(|e| e.abs()).sum::<f64>() / n;
    let residual: f64 = errors.iter().map(|e| e * e).sum();
    let mse = residual / n;
    let mean = actual.iter().sum::<f64>() / n;
    let total: f64 = actual.iter().map(|a| (a - mean) * (a - mean)).sum();
    // scikit-learn's r2_score: a constant truth scores 1 if fitted exactly, else 0.
    let r2 = match (total == 0.0, residual == 0.0) {
        (true, true) => 1.0,
        (true, false) => 0.0,
        _ => 1.0 - residual / total,
    };
    // scikit-learn leaves R² undefined for a single row.
    let mut out = vec![("mae", mae), ("mse", mse), ("rmse", mse.sqrt())];
    if actual.len() >= 2 {
        out.push(("r2", r2));
    }
    out
}

/// SageMaker's `statistics.json` for `joined` (at least one row): `version`, `dataset`
/// (`item_count`) and the problem's metrics, each `{"value", "standard_deviation"}`, with
/// the confusion matrix (actual label -> predicted label -> count) and, for a binary problem
/// with probabilities, the curves. The error names a row that does not fit the problem.
pub fn statistics(problem: ProblemType, joined: &Joined) -> Result<Value, String> {
    if joined.is_empty() {
        return Err("no prediction has ground truth to compare with".into());
    }
    let data = Data::of(problem, joined)?;
    let n = joined.len();
    let all: Vec<usize> = (0..n).collect();
    let values = data.scalars(&all);
    let deviations: Option<Vec<Vec<f64>>> = (n >= MIN_FOR_DEVIATION).then(|| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5ea9_e0a1 ^ n as u64);
        let size = ((n as f64) * SUBSET_SHARE).round() as usize;
        (0..SUBSETS)
            .map(|_| {
                let rows = sample(&mut rng, n, size).into_vec();
                let got = data.scalars(&rows);
                // A subset may lack a metric (AUC with one class): NaN then.
                values
                    .iter()
                    .map(|(k, _)| {
                        got.iter()
                            .find(|(g, _)| g == k)
                            .map_or(f64::NAN, |(_, v)| *v)
                    })
                    .collect()
            })
            .collect()
    });
    let mut metrics = Map::new();
    match &data {
        Data::Binary {
            actual, predicted, ..
        } => {
            let m = confusion(actual, predicted);
            metrics.insert(
                "confusion_matrix".into(),
                json!({"0": {"0": m[0][0], "1": m[0][1]}, "1": {"0": m[1][0], "1": m[1][1]}}),
            );
        }
        Data::Multiclass { actual, predicted } => {
            let labels: BTreeSet<&str> =
                actual.iter().chain(predicted).map(String::as_str).collect();
            let mut m: BTreeMap<&str, BTreeMap<&str, u64>> = labels
                .iter()
                .map(|a| (*a, labels.iter().map(|p| (*p, 0)).collect()))
                .collect();
            for (a, p) in actual.iter().zip(predicted) {
                *m.get_mut(a.as_str())
                    .and_then(|r| r.get_mut(p.as_str()))
                    .expect("every label has a cell") += 1;
            }
            metrics.insert("confusion_matrix".into(), json!(m));
        }
        Data::Regression { .. } => {}
    }
    for (j, (name, value)) in values.iter().enumerate() {
        let deviation = deviations.as_ref().and_then(|d| {
            let v: Vec<f64> = d
                .iter()
                .map(|row| row[j])
                .filter(|v| v.is_finite())
                .collect();
            (v.len() >= 2).then(|| {
                let mean = v.iter().sum::<f64>() / v.len() as f64;
                (v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (v.len() - 1) as f64)
                    .sqrt()
            })
        });
        metrics.insert(
            (*name).into(),
            json!({
                "value": value,
                "standard_deviation": deviation.map_or(json!("NaN"), |d| json!(d)),
            }),
        );
    }
    if let Data::Binary {
        actual,
        scores: Some(scores),
        ..
    } = &data
    {
        let (roc, pr) = curves(actual, scores);
        metrics.insert("receiver_operating_characteristic_curve".into(), roc);
        metrics.insert("precision_recall_curve".into(), pr);
    }
    Ok(json!({
        "version": 0.0,
        "dataset": {"item_count": n},
        problem.metrics_key(): metrics,
    }))
}

/// The standard error of a metric over all its rows, from SageMaker's `standard_deviation`
/// (over 80 % subsets drawn without replacement, whose variance is the whole set's times
/// (1 − 0.8) / 0.8: a quarter): twice the deviation.
pub fn standard_error(standard_deviation: f64) -> f64 {
    standard_deviation * (SUBSET_SHARE / (1.0 - SUBSET_SHARE)).sqrt()
}

/// The 95 % interval's half-width of a metric with this `standard_deviation`.
pub fn interval(standard_deviation: f64) -> f64 {
    Z_95 * standard_error(standard_deviation)
}

/// The normal quantile of a two-sided 95 % interval.
const Z_95: f64 = 1.959_963_984_540_054;
/// Student's t quantile of a two-sided 95 % test with 4 degrees of freedom: each standard
/// deviation comes from five subsets.
const T_95_4: f64 = 2.776_445_105_197_793;

/// Whether two variants' values of a metric differ beyond chance (a two-sided 95 % test on
/// the difference, the two independent, with Student's t for the five subsets each
/// deviation comes from): `None` when either lacks a standard deviation (fewer than
/// [`MIN_FOR_DEVIATION`] rows).
pub fn significant(a: (f64, Option<f64>), b: (f64, Option<f64>)) -> Option<bool> {
    let (sa, sb) = (standard_error(a.1?), standard_error(b.1?));
    let se = (sa * sa + sb * sb).sqrt();
    Some(if se == 0.0 {
        a.0 != b.0
    } else {
        (a.0 - b.0).abs() / se > T_95_4
    })
}

/// The scalar metrics of a `statistics.json` by name (what alarms and the metrics page
/// read).
pub fn scalar_metrics(problem: ProblemType, statistics: &Value) -> BTreeMap<String, f64> {
    statistics[problem.metrics_key()]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| v["value"].as_f64().map(|v| (k.clone(), v)))
        .collect()
}

/// Check a baseline's `constraints.json` for `problem`: each constraint names a scalar
/// metric of the problem and has a numeric `threshold` and a `comparison_operator` of
/// `LessThanThreshold` or `GreaterThanThreshold`.
pub fn check_constraints(problem: ProblemType, constraints: &Value) -> Result<(), String> {
    let key = problem.constraints_key();
    let section = constraints[key]
        .as_object()
        .ok_or_else(|| format!("the constraints have no {key:?} object"))?;
    for (metric, c) in section {
        if c["threshold"].as_f64().is_none() {
            return Err(format!("{key}.{metric}.threshold is not a number"));
        }
        match c["comparison_operator"].as_str() {
            Some("LessThanThreshold" | "GreaterThanThreshold") => {}
            other => {
                return Err(format!(
                    "{key}.{metric}.comparison_operator {other:?} is not LessThanThreshold or \
                     GreaterThanThreshold"
                ))
            }
        }
    }
    Ok(())
}

/// SageMaker's `constraint_violations.json`: each constraint of `constraints` (checked) that
/// `statistics` breaks. A constraint on a metric the statistics lack is not a violation.
pub fn violations(problem: ProblemType, statistics: &Value, constraints: &Value) -> Value {
    let values = scalar_metrics(problem, statistics);
    let mut out = Vec::new();
    for (metric, c) in constraints[problem.constraints_key()]
        .as_object()
        .into_iter()
        .flatten()
    {
        let (Some(threshold), Some(op), Some(&value)) = (
            c["threshold"].as_f64(),
            c["comparison_operator"].as_str(),
            values.get(metric),
        ) else {
            continue;
        };
        let broken = match op {
            "LessThanThreshold" => value < threshold,
            "GreaterThanThreshold" => value > threshold,
            _ => false,
        };
        if broken {
            out.push(json!({
                "metric_name": metric,
                "constraint_check_type": op,
                "description": format!("Metric {metric} with {value} was {op} {threshold}"),
            }));
        }
    }
    json!({ "violations": out })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    fn joined(actual: &[&str], predicted: &[&str], probabilities: Option<&[f64]>) -> Joined {
        let mut j = Joined::default();
        for (i, (a, p)) in actual.iter().zip(predicted).enumerate() {
            j.push(
                (*a).into(),
                Prediction {
                    label: (*p).into(),
                    probability: probabilities.map(|s| s[i]),
                },
            );
        }
        j
    }

    fn value(stats: &Value, problem: ProblemType, metric: &str) -> f64 {
        stats[problem.metrics_key()][metric]["value"]
            .as_f64()
            .unwrap()
    }

    #[test]
    fn binary_metrics_by_hand() {
        use ProblemType::BinaryClassification as B;
        // TP 3, FN 1, FP 1, TN 3.
        let j = joined(
            &["1", "1", "1", "1", "0", "0", "0", "0"],
            &["1", "1", "1", "0", "1", "0", "0", "0"],
            Some(&[0.9, 0.8, 0.7, 0.3, 0.6, 0.2, 0.1, 0.4]),
        );
        let s = statistics(B, &j).unwrap();
        assert_eq!(s["dataset"]["item_count"], 8);
        assert_eq!(
            s[B.metrics_key()]["confusion_matrix"],
            json!({"0": {"0": 3, "1": 1}, "1": {"0": 1, "1": 3}})
        );
        for m in ["accuracy", "precision", "recall", "f1", "f2", "f0_5"] {
            close(value(&s, B, m), 0.75);
        }
        // Fewer than 200 rows: no deviation.
        assert_eq!(s[B.metrics_key()]["accuracy"]["standard_deviation"], "NaN");
        // Pairs with the positive above: 14 of 16.
        close(value(&s, B, "auc"), 14.0 / 16.0);
        // Precision 1 at 0.9, 0.8, 0.7 (recall 3/4), then 4/6 at 0.3 (recall 1).
        close(value(&s, B, "au_prc"), 0.75 + 0.25 * 4.0 / 6.0);
        close(value(&s, B, "false_positive_rate"), 0.25);
        close(value(&s, B, "precision_best_constant_classifier"), 0.5);
        close(value(&s, B, "f1_best_constant_classifier"), 2.0 / 3.0);
        let roc = &s[B.metrics_key()]["receiver_operating_characteristic_curve"];
        assert_eq!(roc["true_positive_rates"][0], 0.0);
        assert_eq!(
            roc["false_positive_rates"].as_array().unwrap().last(),
            Some(&json!(1.0))
        );
        // Ties count a half.
        let tied = statistics(B, &joined(&["1", "0"], &["1", "1"], Some(&[0.5, 0.5]))).unwrap();
        close(value(&tied, B, "auc"), 0.5);
        // One class: no AUC; nothing predicted positive: precision 0.
        let one = statistics(B, &joined(&["0", "0"], &["0", "0"], Some(&[0.1, 0.2]))).unwrap();
        assert!(one[B.metrics_key()].get("auc").is_none());
        close(value(&one, B, "precision"), 0.0);
        // Labels that are not 0 or 1.
        let e = statistics(B, &joined(&["yes"], &["1"], None)).unwrap_err();
        assert!(e.contains("ground truth label \"yes\""), "{e}");
    }

    #[test]
    fn multiclass_metrics_weight_by_support() {
        use ProblemType::MulticlassClassification as M;
        let s = statistics(
            M,
            &joined(
                &["a", "a", "a", "b", "b", "c"],
                &["a", "a", "b", "b", "c", "c"],
                None,
            ),
        )
        .unwrap();
        close(value(&s, M, "accuracy"), 4.0 / 6.0);
        // a: p 1, r 2/3; b: p 1/2, r 1/2; c: p 1/2, r 1.
        close(
            value(&s, M, "weighted_precision"),
            (3.0 + 0.5 * 2.0 + 0.5) / 6.0,
        );
        close(value(&s, M, "weighted_recall"), 4.0 / 6.0);
        let f1 = |p: f64, r: f64| 2.0 * p * r / (p + r);
        close(
            value(&s, M, "weighted_f1"),
            (3.0 * f1(1.0, 2.0 / 3.0) + 2.0 * f1(0.5, 0.5) + f1(0.5, 1.0)) / 6.0,
        );
        close(value(&s, M, "accuracy_best_constant_classifier"), 0.5);
        close(
            value(&s, M, "weighted_precision_best_constant_classifier"),
            0.25,
        );
        assert_eq!(s[M.metrics_key()]["confusion_matrix"]["a"]["b"], 1);
        assert_eq!(s[M.metrics_key()]["confusion_matrix"]["c"]["a"], 0);
    }

    #[test]
    fn regression_metrics_and_r2_edges() {
        use ProblemType::Regression as R;
        let s = statistics(R, &joined(&["1", "2", "3"], &["1", "2", "5"], None)).unwrap();
        close(value(&s, R, "mae"), 2.0 / 3.0);
        close(value(&s, R, "mse"), 4.0 / 3.0);
        close(value(&s, R, "rmse"), (4.0f64 / 3.0).sqrt());
        close(value(&s, R, "r2"), 1.0 - 4.0 / 2.0);
        let flat = |p: &str| statistics(R, &joined(&["2", "2"], &["2", p], None)).unwrap();
        close(value(&flat("2"), R, "r2"), 1.0);
        close(value(&flat("3"), R, "r2"), 0.0);
        let one = statistics(R, &joined(&["2"], &["3"], None)).unwrap();
        assert!(one[R.metrics_key()].get("r2").is_none(), "{one}");
        assert!(check_label(R, "x", "ground truth")
            .unwrap_err()
            .contains("not a number"));
        assert!(check_label(ProblemType::BinaryClassification, "2", "predicted").is_err());
        check_label(ProblemType::MulticlassClassification, "setosa", "predicted").unwrap();
        assert!(statistics(R, &joined(&["x"], &["1"], None))
            .unwrap_err()
            .contains("not a number"));
        assert!(statistics(R, &Joined::default()).is_err());
    }

    #[test]
    fn deviations_from_five_subsets_of_enough_rows() {
        use ProblemType::BinaryClassification as B;
        let actual: Vec<String> = (0..1000)
            .map(|i| ((i % 3 == 0) as u8).to_string())
            .collect();
        let predicted: Vec<String> = (0..1000)
            .map(|i| ((i % 4 == 0) as u8).to_string())
            .collect();
        let a: Vec<&str> = actual.iter().map(String::as_str).collect();
        let p: Vec<&str> = predicted.iter().map(String::as_str).collect();
        let s = statistics(B, &joined(&a, &p, None)).unwrap();
        let sd = s[B.metrics_key()]["accuracy"]["standard_deviation"]
            .as_f64()
            .unwrap();
        // About sqrt(p (1 - p) / n) for the subsets' overlap: small, not zero.
        assert!(sd > 0.0 && sd < 0.05, "{sd}");
        // Repeatable.
        assert_eq!(s, statistics(B, &joined(&a, &p, None)).unwrap());
    }

    #[test]
    fn predictions_by_column_or_path_and_threshold() {
        let attributes = |inference: Option<&str>, probability: Option<&str>| Attributes {
            problem: ProblemType::BinaryClassification,
            inference: inference.map(Into::into),
            probability: probability.map(Into::into),
            threshold: Some(0.7),
        };
        let csv = attributes(Some("0"), Some("2"));
        assert_eq!(
            prediction(&csv, "1,0.1,0.9\n").unwrap(),
            Prediction {
                label: "1".into(),
                probability: Some(0.9)
            }
        );
        let json = attributes(Some("predictions[0].label"), None);
        assert_eq!(
            prediction(&json, r#"{"predictions":[{"label":"setosa"}]}"#)
                .unwrap()
                .label,
            "setosa"
        );
        let thresholded = attributes(None, Some("$.p"));
        assert_eq!(prediction(&thresholded, r#"{"p":0.7}"#).unwrap().label, "1");
        assert_eq!(
            prediction(&thresholded, r#"{"p":0.69}"#).unwrap().label,
            "0"
        );
        assert!(prediction(&thresholded, "not json").is_err());
        assert!(prediction(&thresholded, r#"{"p":"NaN"}"#)
            .unwrap_err()
            .contains("ProbabilityAttribute"));
        assert!(prediction(&csv, "1").unwrap_err().contains("no column 2"));
        assert!(attributes(None, None).check().is_err());
        assert!(Attributes {
            problem: ProblemType::Regression,
            inference: None,
            probability: Some("0".into()),
            threshold: None
        }
        .check()
        .unwrap_err()
        .contains("InferenceAttribute is required for Regression"));
        assert!(attributes(Some("[[["), None).check().is_err());
    }

    #[test]
    fn outcomes_become_ground_truth_records() {
        let line = ground_truth_record("id-7", &label_of_number(1.0));
        assert_eq!(ground_truth(&line).unwrap(), ("id-7".into(), "1".into()));
        assert_eq!(label_of_number(0.0), "0");
        assert_eq!(label_of_number(2.5), "2.5");
        assert_eq!(label_of_number(-3.0), "-3");
    }

    #[test]
    fn ground_truth_records_as_sagemaker_writes_them() {
        let line = r#"{"groundTruthData":{"data":"1","encoding":"CSV"},"eventMetadata":{"eventId":"e-1"},"eventVersion":"0"}"#;
        assert_eq!(ground_truth(line).unwrap(), ("e-1".into(), "1".into()));
        let json = r#"{"groundTruthData":{"data":"\"setosa\"","encoding":"JSON"},"eventMetadata":{"eventId":"e"}}"#;
        assert_eq!(ground_truth(json).unwrap().1, "setosa");
        for (bad, fragment) in [
            ("{", "not a JSON record"),
            (r#"{"groundTruthData":{"data":"1"}}"#, "eventId is missing"),
            (r#"{"eventMetadata":{"eventId":"e"}}"#, "data is missing"),
            (
                r#"{"groundTruthData":{"data":"1","encoding":"XML"},"eventMetadata":{"eventId":"e"}}"#,
                "not CSV or JSON",
            ),
        ] {
            let e = ground_truth(bad).unwrap_err();
            assert!(e.contains(fragment), "{bad}: {e}");
        }
    }

    #[test]
    fn constraints_are_checked_and_violations_named() {
        use ProblemType::BinaryClassification as B;
        let s = statistics(
            B,
            &joined(&["1", "0", "1", "0"], &["1", "1", "1", "0"], None),
        )
        .unwrap();
        let constraints = json!({"version": 0.0, "binary_classification_constraints": {
            "accuracy": {"threshold": 0.9, "comparison_operator": "LessThanThreshold"},
            "recall": {"threshold": 0.5, "comparison_operator": "LessThanThreshold"},
            "false_positive_rate": {"threshold": 0.1, "comparison_operator": "GreaterThanThreshold"},
            "auc": {"threshold": 0.9, "comparison_operator": "LessThanThreshold"}}});
        check_constraints(B, &constraints).unwrap();
        let v = violations(B, &s, &constraints);
        let names: Vec<&str> = v["violations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["metric_name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["accuracy", "false_positive_rate"]);
        assert_eq!(
            v["violations"][0]["description"],
            "Metric accuracy with 0.75 was LessThanThreshold 0.9"
        );
        assert!(check_constraints(B, &json!({"regression_constraints": {}})).is_err());
        assert!(check_constraints(
            B,
            &json!({"binary_classification_constraints": {"f1": {"threshold": 1, "comparison_operator": "Equal"}}})
        )
        .unwrap_err()
        .contains("comparison_operator"));
    }

    #[test]
    fn differences_are_significant_beyond_their_intervals() {
        // A subset's deviation is half the whole set's standard error.
        assert!((standard_error(0.01) - 0.02).abs() < 1e-12);
        assert!((interval(0.01) - 1.959_963_984_540_054 * 0.02).abs() < 1e-12);
        // 0.95 and 0.80, standard errors 0.02 each: z = 0.15 / 0.0283 = 5.3.
        assert_eq!(
            significant((0.95, Some(0.01)), (0.80, Some(0.01))),
            Some(true)
        );
        // 0.95 and 0.88: 2.47, above the normal's 1.96 and below Student's 2.78 with 4
        // degrees of freedom.
        assert_eq!(
            significant((0.95, Some(0.01)), (0.88, Some(0.01))),
            Some(false)
        );
        // 0.95 and 0.92: z = 1.06.
        assert_eq!(
            significant((0.95, Some(0.01)), (0.92, Some(0.01))),
            Some(false)
        );
        assert_eq!(significant((0.95, None), (0.80, Some(0.01))), None);
        assert_eq!(significant((0.9, Some(0.0)), (0.9, Some(0.0))), Some(false));
    }
}
