//! Triton's `logging` extension, for both transports: the settings by
//! Triton's names (`log_info`, `log_warning`, `log_error`,
//! `log_verbose_level`, `log_format`, `log_file`), read and changed.

use crate::error::ServeError;
use crate::logging::{self, LogSettings};

/// A setting's value, as both transports carry it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Value {
    Bool(bool),
    Uint(u32),
    Text(String),
}

/// The settings by Triton's names.
pub(crate) fn named(s: &LogSettings) -> Vec<(&'static str, Value)> {
    vec![
        ("log_file", Value::Text(String::new())),
        ("log_info", Value::Bool(s.info)),
        ("log_warning", Value::Bool(s.warning)),
        ("log_error", Value::Bool(s.error)),
        ("log_verbose_level", Value::Uint(s.verbose)),
        ("log_format", Value::Text(s.format.clone())),
    ]
}

/// The settings now.
pub(crate) fn current() -> Vec<(&'static str, Value)> {
    named(&logging::settings())
}

/// Changes the settings named in `changes` (all checked before any
/// applies); returns them all.
pub(crate) fn update(
    changes: Vec<(String, Value)>,
) -> Result<Vec<(&'static str, Value)>, ServeError> {
    let wrong = |name: &str, what: &str| {
        ServeError::InvalidArgument(format!("log setting '{name}' must be {what}"))
    };
    // Every change checked before any applies.
    let mut next = logging::settings();
    for (name, value) in changes {
        match (name.as_str(), value) {
            ("log_info", Value::Bool(b)) => next.info = b,
            ("log_warning", Value::Bool(b)) => next.warning = b,
            ("log_error", Value::Bool(b)) => next.error = b,
            ("log_info" | "log_warning" | "log_error", _) => return Err(wrong(&name, "a boolean")),
            ("log_verbose_level", Value::Uint(n)) => next.verbose = n,
            ("log_verbose_level", _) => return Err(wrong(&name, "a non-negative integer")),
            ("log_format", Value::Text(f)) if f == "default" || f == "ISO8601" => next.format = f,
            ("log_format", _) => return Err(wrong(&name, "\"default\" or \"ISO8601\"")),
            ("log_file", Value::Text(f)) if f.is_empty() => {}
            ("log_file", _) => {
                return Err(ServeError::InvalidArgument(
                    "log setting 'log_file' can only be \"\": this server logs to stderr (redirect it, or collect it with the container runtime)".into(),
                ));
            }
            _ => {
                return Err(ServeError::InvalidArgument(format!(
                    "unknown log setting '{}': the settings are log_file, log_info, log_warning, log_error, log_verbose_level and log_format",
                    serving_proto::text::quote(&name)
                )));
            }
        }
    }
    let settings = logging::update(|s| *s = next).map_err(ServeError::Internal)?;
    Ok(named(&settings))
}
