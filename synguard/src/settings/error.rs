//! The one error type of settings: a single line, naming the file, line and key where it can.

use std::fmt;

/// A one-line configuration error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

pub(super) fn error(message: impl Into<String>) -> ConfigError {
    ConfigError(message.into())
}
