//! Configuration as read: the file, `conf.d/*.toml` beside it and FACILITYD_* environment
//! variables, deserialized with exact key paths ([`schema`]), the units it is written in
//! ([`units`]), the plain sections resolved ([`sections`]), and the problems found, each
//! located by file and key path ([`ConfigIssue`]). It imports nothing but the profile and value
//! vocabulary: devices, rules, MQTT and notifiers validate their own parts, and
//! `crate::settings` assembles them into what `check` prints and `run` runs.

mod load;
pub mod schema;
pub mod sections;
pub mod units;

pub use load::clean_message;
pub(crate) use load::{Loaded, Sourced, read_all};
pub use schema::Secret;
pub use sections::{
    FileError, GatewaySettings, InfluxApi, InfluxSettings, MIN_DEAD_LETTER_BYTES, MIN_LOG_BYTES,
    StorageSettings, read_nonempty_file, read_secret_file,
};

use std::fmt;

/// One configuration problem, located by file and key path (`devices[1].modbus.unit`).
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigIssue {
    /// The file, or `environment` for FACILITYD_* variables.
    pub file: String,
    /// Key path with 0-based indexes within that file.
    pub path: String,
    pub message: String,
}

/// Errors and warnings gathered while checking configuration, each naming file and key path.
#[derive(Debug, Default)]
pub(crate) struct Issues {
    pub errors: Vec<ConfigIssue>,
    /// Formatted like errors.
    pub warnings: Vec<String>,
}

impl Issues {
    pub fn err(&mut self, file: &str, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigIssue {
            file: file.to_string(),
            path: path.into(),
            message: message.into(),
        });
    }

    pub fn warn(&mut self, file: &str, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(
            ConfigIssue {
                file: file.to_string(),
                path: path.into(),
                message: message.into(),
            }
            .to_string(),
        );
    }
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file, self.path, self.message)
        }
    }
}

/// Every error found in a configuration (loading stops collecting at the first file that
/// cannot be parsed at all; validation collects all).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ConfigError(pub Vec<ConfigIssue>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error: {issue}")?;
        }
        Ok(())
    }
}
