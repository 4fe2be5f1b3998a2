//! [`Location`]: what a member such as `ModelDataUrl` or `S3Uri` names: `s3://bucket/key`, a
//! `file://` URL, or a local path.

use std::fmt;
use std::path::PathBuf;

/// A place to read or write: a local file or directory, or an S3 object or prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Location {
    /// A local path (from a path or a `file://` URL).
    Local(PathBuf),
    /// `s3://bucket/key` (the key may be empty, or a prefix).
    S3 {
        /// The bucket.
        bucket: String,
        /// The key, without the leading `/`.
        key: String,
    },
}

impl Location {
    /// Parse a location. Refused: an empty text, a scheme other than `s3://` and `file://`,
    /// and an S3 URI without a valid bucket name (3-63 characters of lower-case letters,
    /// digits, `.` and `-`, starting and ending with a letter or digit).
    ///
    /// ```
    /// use plinth_storage::Location;
    /// assert_eq!(
    ///     Location::parse("s3://models/iris/model.tar.gz").unwrap(),
    ///     Location::S3 { bucket: "models".into(), key: "iris/model.tar.gz".into() }
    /// );
    /// assert_eq!(Location::parse("file:///srv/m").unwrap(), Location::Local("/srv/m".into()));
    /// assert!(Location::parse("https://example.com/m.tar.gz").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("a location must not be empty".into());
        }
        if let Some(rest) = text.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            check_bucket(bucket).map_err(|why| format!("{text:?}: {why}"))?;
            return Ok(Self::S3 {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
            });
        }
        let path = text.strip_prefix("file://").unwrap_or(text);
        if path.contains("://") {
            return Err(format!(
                "{text:?}: only s3:// URIs, file:// URLs and local paths are supported"
            ));
        }
        if path.is_empty() {
            return Err(format!("{text:?}: no path"));
        }
        Ok(Self::Local(PathBuf::from(path)))
    }

    /// Whether this is an S3 location.
    pub fn is_remote(&self) -> bool {
        matches!(self, Self::S3 { .. })
    }

    /// The location `relative` below this one (a key or path under a prefix).
    pub fn join(&self, relative: &str) -> Self {
        match self {
            Self::Local(dir) => Self::Local(dir.join(relative)),
            Self::S3 { bucket, key } => {
                let key = if key.is_empty() || key.ends_with('/') {
                    format!("{key}{relative}")
                } else {
                    format!("{key}/{relative}")
                };
                Self::S3 {
                    bucket: bucket.clone(),
                    key,
                }
            }
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local(path) => write!(f, "{}", path.display()),
            Self::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
        }
    }
}

/// S3's bucket naming rules (the general-purpose ones).
fn check_bucket(bucket: &str) -> Result<(), &'static str> {
    let valid_chars = bucket
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    let ends = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !(3..=63).contains(&bucket.len())
        || !valid_chars
        || !ends(bucket.bytes().next())
        || !ends(bucket.bytes().last())
    {
        return Err("not a valid S3 bucket name (3-63 lower-case letters, digits, '.' and '-')");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_uris_paths_and_refusals() {
        assert_eq!(
            Location::parse("s3://my-bucket").unwrap(),
            Location::S3 {
                bucket: "my-bucket".into(),
                key: String::new()
            }
        );
        assert_eq!(
            Location::parse("model").unwrap(),
            Location::Local("model".into())
        );
        for bad in [
            "",
            "s3://",
            "s3://A_B/k",
            "s3://ab/k",
            "s3://-ab/k",
            "gs://b/k",
            "file://",
        ] {
            assert!(Location::parse(bad).is_err(), "{bad}");
        }
        let prefix = Location::parse("s3://models/iris/").unwrap();
        assert_eq!(
            prefix.join("model.onnx").to_string(),
            "s3://models/iris/model.onnx"
        );
        let prefix = Location::parse("s3://models/iris").unwrap();
        assert_eq!(prefix.join("a/b").to_string(), "s3://models/iris/a/b");
        assert!(prefix.is_remote());
    }
}
