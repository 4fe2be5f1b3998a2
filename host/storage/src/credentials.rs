//! [`S3Settings`]: the credentials, region and endpoint Plinth's S3 requests use, found as the
//! AWS CLI and SDKs find them:
//!
//! 1. `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`);
//! 2. else the profile `AWS_PROFILE` (default `default`) in the shared credentials file
//!    (`AWS_SHARED_CREDENTIALS_FILE`, default `~/.aws/credentials`), then in the config file
//!    (`AWS_CONFIG_FILE`, default `~/.aws/config`, section `[profile NAME]`);
//! 3. else none: requests go unsigned (public buckets only).
//!
//! The region: `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's `region`, else `us-east-1`.
//! The endpoint (an S3-compatible store): the server's option, `AWS_ENDPOINT_URL_S3`,
//! `AWS_ENDPOINT_URL`, the profile's `endpoint_url`; requests to one use path-style URLs.

use std::fmt;
use std::path::PathBuf;

/// Static credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The access key id.
    pub access_key_id: String,
    /// The secret (never shown).
    pub secret_access_key: String,
    /// A session token, for temporary credentials.
    pub session_token: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &masked(&self.access_key_id))
            .finish_non_exhaustive()
    }
}

/// How Plinth reaches S3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// The region requests are signed for.
    pub region: String,
    /// An S3-compatible endpoint instead of AWS's.
    pub endpoint: Option<String>,
    /// The credentials; `None`: unsigned requests.
    pub credentials: Option<Credentials>,
    /// Where the credentials came from, for the log.
    pub source: String,
}

impl Default for S3Settings {
    fn default() -> Self {
        Self {
            region: "us-east-1".into(),
            endpoint: None,
            credentials: None,
            source: "none".into(),
        }
    }
}

impl fmt::Display for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.credentials {
            Some(c) => write!(
                f,
                "credentials {} from {}{}",
                masked(&c.access_key_id),
                self.source,
                if c.session_token.is_some() {
                    " (with a session token)"
                } else {
                    ""
                }
            )?,
            None => write!(f, "no credentials (unsigned requests: public buckets only)")?,
        }
        write!(f, ", region {}", self.region)?;
        if let Some(endpoint) = &self.endpoint {
            write!(f, ", endpoint {endpoint}")?;
        }
        Ok(())
    }
}

/// An access key id with all but its last four characters hidden, as `aws configure list`
/// shows it.
fn masked(id: &str) -> String {
    let keep = id.len().saturating_sub(4);
    format!("{}{}", "*".repeat(keep.min(16)), &id[keep..])
}

impl S3Settings {
    /// The settings from this process's environment and the shared files; `endpoint`
    /// overrides every other endpoint setting.
    pub fn from_env(endpoint: Option<String>) -> Result<Self, String> {
        Self::from_lookup(
            &|name| std::env::var(name).ok().filter(|v| !v.is_empty()),
            endpoint,
        )
    }

    /// The same with `var` for the environment (for tests).
    pub fn from_lookup(
        var: &dyn Fn(&str) -> Option<String>,
        endpoint: Option<String>,
    ) -> Result<Self, String> {
        let home = var("HOME").map(PathBuf::from);
        let credentials_file = var("AWS_SHARED_CREDENTIALS_FILE")
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws/credentials")));
        let config_file = var("AWS_CONFIG_FILE")
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws/config")));
        let explicit_profile = var("AWS_PROFILE");
        let profile_name = explicit_profile.clone().unwrap_or_else(|| "default".into());
        let from_credentials = read_section(credentials_file.as_ref(), &profile_name)?;
        let config_section = if profile_name == "default" {
            "default".to_owned()
        } else {
            format!("profile {profile_name}")
        };
        let from_config = read_section(config_file.as_ref(), &config_section)?;
        if explicit_profile.is_some() && from_credentials.is_none() && from_config.is_none() {
            return Err(format!(
                "AWS_PROFILE {profile_name:?}: no such profile in {} or {}",
                shown(&credentials_file),
                shown(&config_file)
            ));
        }
        let profile_value = |key: &str| {
            from_credentials
                .as_ref()
                .and_then(|s| s.get(key))
                .or_else(|| from_config.as_ref().and_then(|s| s.get(key)))
                .cloned()
        };
        let (credentials, source) = match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            (Some(id), Some(secret)) => (
                Some(Credentials {
                    access_key_id: id,
                    secret_access_key: secret,
                    session_token: var("AWS_SESSION_TOKEN"),
                }),
                "the environment (AWS_ACCESS_KEY_ID)".to_owned(),
            ),
            (Some(_), None) => {
                return Err("AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not".into())
            }
            _ => match (
                profile_value("aws_access_key_id"),
                profile_value("aws_secret_access_key"),
            ) {
                (Some(id), Some(secret)) => (
                    Some(Credentials {
                        access_key_id: id,
                        secret_access_key: secret,
                        session_token: profile_value("aws_session_token"),
                    }),
                    format!("profile {profile_name:?}"),
                ),
                (Some(_), None) => {
                    return Err(format!(
                    "profile {profile_name:?} has aws_access_key_id but no aws_secret_access_key"
                ))
                }
                _ => {
                    let unsupported = [
                        "role_arn",
                        "sso_session",
                        "sso_start_url",
                        "credential_process",
                        "web_identity_token_file",
                    ]
                    .into_iter()
                    .find(|key| profile_value(key).is_some());
                    if let Some(key) = unsupported {
                        return Err(format!(
                            "profile {profile_name:?} gets its credentials through {key}, which \
                             Plinth does not support: give it aws_access_key_id and \
                             aws_secret_access_key, or set AWS_ACCESS_KEY_ID and \
                             AWS_SECRET_ACCESS_KEY"
                        ));
                    }
                    (None, "none".to_owned())
                }
            },
        };
        let region = var("AWS_REGION")
            .or_else(|| var("AWS_DEFAULT_REGION"))
            .or_else(|| profile_value("region"))
            .unwrap_or_else(|| "us-east-1".into());
        let endpoint = endpoint
            .or_else(|| var("AWS_ENDPOINT_URL_S3"))
            .or_else(|| var("AWS_ENDPOINT_URL"))
            .or_else(|| profile_value("endpoint_url"));
        if let Some(e) = &endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(format!(
                    "the S3 endpoint {e:?} is not an http:// or https:// URL"
                ));
            }
        }
        Ok(Self {
            region,
            endpoint: endpoint.map(|e| e.trim_end_matches('/').to_owned()),
            credentials,
            source,
        })
    }
}

fn shown(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map_or_else(|| "(no file)".into(), |p| p.display().to_string())
}

/// The keys of section `name` of the INI file `path`, if the file and the section exist.
fn read_section(
    path: Option<&PathBuf>,
    name: &str,
) -> Result<Option<std::collections::HashMap<String, String>>, String> {
    let Some(path) = path.filter(|p| p.is_file()) else {
        return Ok(None);
    };
    let ini = ini::Ini::load_from_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(ini.section(Some(name)).map(|section| {
        section
            .iter()
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(env: &[(&str, &str)]) -> Result<S3Settings, String> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        S3Settings::from_lookup(&|name| env.get(name).cloned(), None)
    }

    #[test]
    fn the_environment_comes_first_and_the_secret_is_never_shown() {
        let s = settings(&[
            ("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE1234"),
            ("AWS_SECRET_ACCESS_KEY", "very-secret"),
            ("AWS_DEFAULT_REGION", "eu-west-1"),
            ("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9000/"),
        ])
        .unwrap();
        assert_eq!(s.region, "eu-west-1");
        assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        let shown = format!("{s} {s:?}");
        assert!(shown.contains("***********1234"), "{shown}");
        assert!(
            !shown.contains("very-secret") && !shown.contains("AKIAEXAMPLE"),
            "{shown}"
        );
        assert!(settings(&[("AWS_ACCESS_KEY_ID", "x")]).is_err());
        assert!(settings(&[("AWS_ENDPOINT_URL", "127.0.0.1:9000")]).is_err());
    }

    #[test]
    fn a_profile_from_the_shared_files() {
        let dir = tempfile::tempdir().unwrap();
        let credentials = dir.path().join("credentials");
        let config = dir.path().join("config");
        std::fs::write(
            &credentials,
            "[default]\naws_access_key_id = DEFAULTKEY\naws_secret_access_key = s1\n\
             [dev]\naws_access_key_id = DEVKEY0001\naws_secret_access_key = s2\n\
             aws_session_token = t\n",
        )
        .unwrap();
        std::fs::write(
            &config,
            "[profile dev]\nregion = ap-south-1\nendpoint_url = https://s3.example.com\n",
        )
        .unwrap();
        let files = [
            ("AWS_SHARED_CREDENTIALS_FILE", credentials.to_str().unwrap()),
            ("AWS_CONFIG_FILE", config.to_str().unwrap()),
        ];
        let default = settings(&files).unwrap();
        assert_eq!(default.credentials.unwrap().access_key_id, "DEFAULTKEY");
        assert_eq!(default.region, "us-east-1");
        let mut with_profile = files.to_vec();
        with_profile.push(("AWS_PROFILE", "dev"));
        let dev = settings(&with_profile).unwrap();
        let c = dev.credentials.clone().unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.session_token.as_deref()),
            ("DEVKEY0001", Some("t"))
        );
        assert_eq!(dev.region, "ap-south-1");
        assert_eq!(dev.endpoint.as_deref(), Some("https://s3.example.com"));
        assert_eq!(dev.source, "profile \"dev\"");
        let mut missing = files.to_vec();
        missing.push(("AWS_PROFILE", "prod"));
        assert!(settings(&missing).unwrap_err().contains("no such profile"));
        // Nothing at all: unsigned.
        assert_eq!(settings(&[]).unwrap().credentials, None);
        // A profile whose credentials come another way is refused, not taken as none.
        std::fs::write(
            &config,
            "[profile sso]\nsso_session = corp\nregion = eu-west-1\n",
        )
        .unwrap();
        let mut sso = files.to_vec();
        sso.push(("AWS_PROFILE", "sso"));
        assert!(settings(&sso).unwrap_err().contains("sso_session"));
        // The environment's keys come before any profile's.
        let mut both = files.to_vec();
        both.extend([
            ("AWS_ACCESS_KEY_ID", "ENVKEY0001"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
        ]);
        let s = settings(&both).unwrap();
        assert_eq!(s.credentials.unwrap().access_key_id, "ENVKEY0001");
    }
}
