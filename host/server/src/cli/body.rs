//! The request-body flags that `invoke`, `local` and `bench` share: `--body` or
//! `--body-file`.

use anyhow::{bail, Context};
use clap::Args;
use std::path::PathBuf;

/// A request body given on the command line (`--body` or `--body-file`).
#[derive(Args)]
pub(crate) struct BodyArgs {
    /// The body, as text.
    #[arg(
        long,
        conflicts_with = "body_file",
        required_unless_present = "body_file"
    )]
    body: Option<String>,
    /// The body, from a file.
    #[arg(long)]
    body_file: Option<PathBuf>,
}

impl BodyArgs {
    pub(crate) fn read(&self) -> anyhow::Result<Vec<u8>> {
        match (&self.body, &self.body_file) {
            (Some(text), _) => Ok(text.clone().into_bytes()),
            (None, Some(path)) => {
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
            }
            (None, None) => bail!("give --body or --body-file"),
        }
    }
}
