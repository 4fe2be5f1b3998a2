//! Reading the server's `GET /metrics` (the Prometheus text exposition) in assertions.
//!
//! A sample is picked by its name and labels: every label given must be on the sample, and
//! the labels given must pick exactly one sample (Plinth gives each metric one fixed set of
//! labels, so naming them all does). A malformed value or an ambiguous pick panics, so a
//! test never compares against the wrong line.

/// The value of the sample `name{labels...}` in `text`; `None` if there is no such sample.
///
/// `name` is the whole sample name (`plinth_model_latency_seconds_sum` for a histogram's
/// sum); a sample without labels is found with `labels` empty. Panics if a matching sample's
/// value is not a number, or if more than one sample matches.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (labels_text, value) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once('}') {
                Some(split) => split,
                None => continue,
            },
            None if rest.starts_with(' ') => ("", rest),
            None => continue,
        };
        let pairs: Vec<&str> = labels_text.split(',').map(str::trim).collect();
        let all_match = labels
            .iter()
            .all(|(k, v)| pairs.contains(&format!("{k}=\"{v}\"").as_str()));
        if !all_match {
            continue;
        }
        let value: f64 = value
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("metric line {line:?}: the value is not a number: {e}"));
        assert!(
            found.is_none(),
            "more than one sample of {name} has the labels {labels:?}:\n{text}"
        );
        found = Some(value);
    }
    found
}

/// A counter's value: like [`sample`], with a counter never incremented for these labels
/// (and so absent) read as 0.
pub fn counter(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(text, name, labels).unwrap_or(0.0)
}

/// `[("endpoint", endpoint), ("variant", variant)]`: the labels of every per-variant metric.
pub fn of_variant<'a>(endpoint: &'a str, variant: &'a str) -> [(&'static str, &'a str); 2] {
    [("endpoint", endpoint), ("variant", variant)]
}
